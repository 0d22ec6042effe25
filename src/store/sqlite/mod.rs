//! SQLite implementation of [`Store`]: one file, WAL, every commit synced.
//!
//! Writes go through exactly one connection, owned by the group-commit thread (`group.rs`),
//! and each transaction opens with `BEGIN IMMEDIATE`, so writes run one after another: the quota count and its insert, or the use check and its conditional update, can
//! never interleave with another writer. The writes that arrive while a commit is being synced
//! share the next transaction, each in its own savepoint, and so share its fsync. (A deferred
//! transaction that reads and then writes can also fail with `SQLITE_BUSY` when two of them
//! try to upgrade at once; taking the write lock up front rules that out, including against
//! another process on the same file.) Reads use connections of their own and, in WAL mode,
//! never wait for the writer.
//!
//! The writer and the reads of one pass or one request (the hot paths) use rusqlite
//! connections called directly (`direct.rs`); sqlx opens and migrates the file, reads status
//! events and the audit trail, and checkpoints the write-ahead log.
//!
//! The audit row of an issue, a revocation or a scan is inserted in the transaction of the
//! change it records, so an acknowledged change always has its row and a rolled-back one never
//! has.
//!
//! This file opens the store (connections, pragmas, migrations), classifies errors and implements
//! [`Store`] by delegating to the transaction bodies in `queries.rs`; `rows.rs` reads rows
//! back. The behaviour every backend shares is tested in `store::behaviour`, from
//! `tests.rs`, next to the tests that only SQLite has.

mod direct;
mod group;
mod prune;
mod queries;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::migrate::Migrator;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};

use super::{
    Actor, AuditEntry, AuditRecord, EntryAttempt, EntryOutcome, IssueOutcome, NewPass, OfflineBatch, PassRecord,
    PruneKind, RequestLookup, RevokeOutcome, StatusEvents, Store, StoreError, SyncRefusal, SyncedEntry,
};
use direct::{Access, Readers};
use epass_core::ids::PassId;
use group::GroupWriter;
use queries::{count_in_month, fetch_pass, fetch_request};

static MIGRATOR: Migrator = sqlx::migrate!("migrations/sqlite");

/// How long a statement waits for a lock held by another connection, and a request waits for
/// a pooled connection, before the store reports itself unavailable (unless opened with
/// [`SqliteStore::open_with`]).
pub const DEFAULT_WAIT: Duration = Duration::from_secs(5);

/// sqlx read connections (status events, the audit trail). Readers do not block each other or
/// the writer in WAL mode.
const READERS: u32 = 4;

/// How often the write-ahead log is copied into the database file beside the writes.
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(250);

/// Copies the write-ahead log into the database file every [`CHECKPOINT_INTERVAL`] with a
/// passive checkpoint on a connection of its own (it blocks neither the writer nor the
/// readers, and takes no connection from them).
/// The writer's own automatic checkpoint (every 1,000 pages, SQLite's default) stays on: it is
/// what restarts the log, so the log stays bounded, and it finds almost every page already
/// copied, so the commit that runs it no longer stalls the writes behind it for the whole copy.
async fn checkpoint_beside_writes(checkpointer: SqlitePool, alive: Weak<()>) {
    loop {
        tokio::time::sleep(CHECKPOINT_INTERVAL).await;
        if alive.strong_count() == 0 || checkpointer.is_closed() {
            return;
        }
        if let Err(error) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").execute(&checkpointer).await {
            tracing::debug!(%error, "write-ahead log checkpoint failed");
        }
    }
}

/// Room the write probe asks for on the database's disk before it calls the store writable:
/// enough for the write-ahead log of a full batch of writes and for the checkpoint that copies
/// it into the database file, so that health does not report `SERVING` on a disk about to
/// refuse the next commit again.
const PROBE_SPACE: usize = 4 << 20;

/// Writes [`PROBE_SPACE`] bytes to `scratch` (beside the database), syncs and removes it: the
/// same allocation a commit needs, including blocks reserved for root and quotas, which a free
/// space count would not tell. The bytes are random, so that a compressing file system
/// allocates them too.
fn probe_space(scratch: &Path) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let written = (|| {
        let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(scratch)?;
        let mut chunk = vec![0u8; 64 << 10];
        rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut chunk);
        for _ in 0..PROBE_SPACE / chunk.len() {
            file.write_all(&chunk)?;
        }
        file.sync_data()
    })();
    let removed = match std::fs::remove_file(scratch) {
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    };
    written.and(removed)
}

/// Starts a write transaction holding the write lock from its first statement.
const BEGIN_WRITE: &str = "BEGIN IMMEDIATE";

/// The SQLite store. Cloning is cheap and shares the connections.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    /// Queues writes to the thread that commits them in groups on the one write connection.
    writer: GroupWriter,
    /// Direct connections for the reads of one pass or one request.
    direct: Arc<Readers>,
    /// sqlx connections for the other reads.
    reader: SqlitePool,
    /// The connection the write-ahead log is checkpointed on, beside the writes.
    checkpointer: SqlitePool,
    /// Held while any clone of the store lives: the checkpoint task stops when it is gone.
    _alive: Arc<()>,
    /// The scratch file the write probe checks the disk's room with; `None` for a read-only
    /// store, which writes nothing.
    space_probe: Option<PathBuf>,
}

impl SqliteStore {
    /// Opens the database file, creating it if missing, and brings its schema up to date.
    ///
    /// Every commit is synced to disk before it returns (`synchronous = FULL`), so a pass or an
    /// entry once acknowledged survives a crash or power loss.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with(path, DEFAULT_WAIT).await
    }

    /// [`SqliteStore::open`], waiting at most `wait` for a lock held by another connection (the
    /// busy timeout) or for a pooled connection before a call fails with
    /// [`StoreError::Unavailable`].
    pub async fn open_with(path: &Path, wait: Duration) -> Result<Self, StoreError> {
        Self::open_inner(path, wait).await.map_err(classify)
    }

    /// Opens an existing database for reading only (the `audit` command, say, next to a running
    /// server): never creates or migrates it, and fails unless its schema is the one this code
    /// reads. Writes through it fail with [`StoreError::Unavailable`].
    pub async fn open_read_only(path: &Path) -> Result<Self, StoreError> {
        Self::open_read_only_inner(path).await.map_err(classify)
    }

    async fn open_inner(path: &Path, wait: Duration) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(wait);
        // sqlx creates and migrates the file, then hands writing over to the direct writer.
        let migrating =
            SqlitePoolOptions::new().max_connections(1).acquire_timeout(wait).connect_with(options.clone()).await?;
        MIGRATOR.run(&migrating).await?;
        let writer = GroupWriter::start(direct::connect(path, Access::Write, wait)?)?;
        migrating.close().await;
        // The writer has created the file; a reader must never create an empty one.
        let existing = options.create_if_missing(false);
        let reader = SqlitePoolOptions::new()
            .max_connections(READERS)
            .acquire_timeout(wait)
            .connect_with(existing.clone())
            .await?;
        let checkpointer = SqlitePoolOptions::new().max_connections(1).connect_with(existing).await?;
        let alive = Arc::new(());
        tokio::spawn(checkpoint_beside_writes(checkpointer.clone(), Arc::downgrade(&alive)));
        let mut space_probe = path.as_os_str().to_owned();
        space_probe.push("-space-probe");
        Ok(Self {
            writer,
            direct: Readers::new(path, wait),
            reader,
            checkpointer,
            _alive: alive,
            space_probe: Some(space_probe.into()),
        })
    }

    async fn open_read_only_inner(path: &Path) -> Result<Self, StoreError> {
        // No journal mode or synchronous setting: changing either needs to write.
        let options = SqliteConnectOptions::new()
            .filename(path)
            .read_only(true)
            .create_if_missing(false)
            .foreign_keys(true)
            .busy_timeout(DEFAULT_WAIT);
        let reader =
            SqlitePoolOptions::new().max_connections(1).acquire_timeout(DEFAULT_WAIT).connect_with(options).await?;
        let needed = MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
        let applied: Option<i64> =
            sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations WHERE success").fetch_one(&reader).await?;
        let applied = applied.unwrap_or(0);
        if applied < needed {
            return Err(StoreError::Migration(sqlx::migrate::MigrateError::VersionTooNew(needed, applied)));
        }
        Ok(Self {
            writer: GroupWriter::start(direct::connect(path, Access::ReadOnly, DEFAULT_WAIT)?)?,
            direct: Readers::new(path, DEFAULT_WAIT),
            checkpointer: reader.clone(),
            reader,
            _alive: Arc::new(()),
            space_probe: None,
        })
    }

    /// Closes every connection, waiting for those in use to be returned. Calls made after
    /// this fail with [`StoreError::Unavailable`].
    pub async fn close(&self) {
        self.checkpointer.close().await;
        self.reader.close().await;
        self.direct.close();
        // The last connection to close checkpoints the write-ahead log into the file.
        self.writer.close().await;
    }

    /// How many passes count against the holder's quota in the month (what `issue` counts).
    pub async fn passes_in_month(&self, holder_key: &[u8; 32], quota_month: &str) -> Result<u32, StoreError> {
        let (holder_key, quota_month) = (*holder_key, quota_month.to_owned());
        let count = self
            .direct
            .read(move |connection| count_in_month(connection, &holder_key, &quota_month))
            .await
            .map_err(classify)?;
        u32::try_from(count).map_err(|_| StoreError::Corrupt(format!("pass count {count} out of range")))
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn lookup_request(
        &self,
        caller: &str,
        request_id: &str,
        fingerprint: &[u8; 32],
    ) -> Result<RequestLookup, StoreError> {
        let (caller, request_id) = (caller.to_owned(), request_id.to_owned());
        let earlier = self
            .direct
            .read(move |connection| fetch_request(connection, &caller, &request_id))
            .await
            .map_err(classify)?;
        Ok(match earlier {
            None => RequestLookup::New,
            Some((stored, record)) if stored == fingerprint => RequestLookup::Replay(record),
            Some(_) => RequestLookup::Conflict,
        })
    }

    async fn issue(&self, new: NewPass, monthly_limit: u32) -> Result<IssueOutcome, StoreError> {
        self.issue_inner(new, monthly_limit).await.map_err(classify)
    }

    async fn pass(&self, pass_id: PassId) -> Result<Option<PassRecord>, StoreError> {
        self.direct.read(move |connection| fetch_pass(connection, pass_id)).await.map_err(classify)
    }

    async fn revoke(
        &self,
        pass_id: PassId,
        reason: &str,
        at: DateTime<Utc>,
        actor: &Actor,
    ) -> Result<RevokeOutcome, StoreError> {
        self.revoke_inner(pass_id, reason, at, actor).await.map_err(classify)
    }

    async fn record_entry(&self, attempt: EntryAttempt) -> Result<EntryOutcome, StoreError> {
        self.record_entry_inner(attempt).await.map_err(classify)
    }

    async fn sync_offline_entries(
        &self,
        batch: OfflineBatch,
    ) -> Result<Result<Vec<SyncedEntry>, SyncRefusal>, StoreError> {
        self.sync_offline_entries_inner(batch).await.map_err(classify)
    }

    async fn status_events(&self, after: u64, now: DateTime<Utc>) -> Result<StatusEvents, StoreError> {
        self.status_events_inner(after, now).await.map_err(classify)
    }

    async fn record_audits(&self, records: Vec<AuditRecord>) -> Result<(), StoreError> {
        self.record_audits_inner(records).await.map_err(classify)
    }

    async fn audit_trail(&self, pass_id: PassId) -> Result<Vec<AuditEntry>, StoreError> {
        self.audit_trail_inner(pass_id).await.map_err(classify)
    }

    async fn probe_writable(&self) -> Result<(), StoreError> {
        self.probe_writable_inner().await.map_err(classify)
    }

    async fn prune(&self, kind: PruneKind, cutoff: DateTime<Utc>, limit: u32) -> Result<u64, StoreError> {
        self.prune_inner(kind, cutoff, limit).await.map_err(classify)
    }
}

/// `?` turns every sqlx error into [`StoreError::Database`]; this picks out those that mean the
/// database cannot be reached or written for now, which callers answer with `unavailable`, and
/// among them a full disk, which an operator must act on.
fn classify(err: StoreError) -> StoreError {
    // SQLite primary result codes (https://www.sqlite.org/rescode.html); an extended code
    // carries its primary code in the low byte.
    const BUSY: i32 = 5;
    const LOCKED: i32 = 6;
    const READONLY: i32 = 8;
    const IOERR: i32 = 10;
    const FULL: i32 = 13;
    const CANTOPEN: i32 = 14;

    let StoreError::Database(err) = err else {
        return err;
    };
    let primary_code = match &err {
        sqlx::Error::Database(db) => db.code().and_then(|code| code.parse::<i32>().ok()).map(|code| code & 0xff),
        _ => None,
    };
    // SQLITE_FULL is what SQLite makes of ENOSPC on a write; the space probe's own I/O says it
    // as the operating system does.
    let disk_full = primary_code == Some(FULL)
        || matches!(&err, sqlx::Error::Io(io) if matches!(io.kind(), std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded));
    let unavailable = match &err {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => true,
        sqlx::Error::Database(_) => {
            primary_code.is_some_and(|code| matches!(code, BUSY | LOCKED | READONLY | IOERR | CANTOPEN))
        }
        _ => false,
    };
    if disk_full {
        StoreError::DiskFull(err)
    } else if unavailable {
        StoreError::Unavailable(err)
    } else {
        StoreError::Database(err)
    }
}
