//! SQLite implementation of [`Store`]: one file, WAL, every commit synced.
//!
//! Writes go through a pool of exactly one connection and each opens with `BEGIN IMMEDIATE`,
//! so write transactions run one after another: the quota count and its insert, or the use
//! check and its conditional update, can never interleave with another writer. (A deferred
//! transaction that reads and then writes can also fail with `SQLITE_BUSY` when two of them
//! try to upgrade at once; taking the write lock up front rules that out, including against
//! another process on the same file.) Reads use a separate pool and, in WAL mode, never wait
//! for the writer.
//!
//! The audit row of an issue, a revocation or a scan is inserted in the transaction of the
//! change it records, so an acknowledged change always has its row and a rolled-back one never
//! has.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::migrate::Migrator;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Executor, FromRow, Sqlite};

use super::{
    Actor, AuditAction, AuditEntry, AuditOutcome, AuditRecord, EntryAttempt, EntryOutcome, IssueOutcome, NewPass,
    PassRecord, RequestLookup, Revocation, RevokeOutcome, StatusEvents, Store, StoreError, StoredPass,
};
use crate::access::Role;
use epass_core::ids::{KeyId, PassId};
use epass_core::pass::{Modes, TransportMode};
use epass_core::status::{PassEvent, StatusEntry};
use epass_core::verify::{EntryRecord, Reason};

static MIGRATOR: Migrator = sqlx::migrate!("migrations/sqlite");

/// How long a statement waits for a lock held by another connection, and a request waits for
/// a pooled connection, before the store reports itself unavailable (unless opened with
/// [`SqliteStore::open_with`]).
pub const DEFAULT_WAIT: Duration = Duration::from_secs(5);

/// Read connections. Readers do not block each other or the writer in WAL mode.
const READERS: u32 = 4;

/// Starts a write transaction holding the write lock from its first statement.
const BEGIN_WRITE: &str = "BEGIN IMMEDIATE";

/// The `scans.verdict` of a scan that admitted the holder; other verdicts are
/// [`Reason::as_str`] names.
const ADMITTED: &str = "admitted";

/// The columns [`PassRow`] reads, as a macro so that queries stay `&'static str`.
macro_rules! pass_columns {
    () => {
        "pass_id, key_id, signature, name_latin, name_chinese, permit_masked, issued_at, \
         valid_from, valid_until, modes, entries_allowed, revoked_at, revoke_reason, used_at, \
         used_checkpoint, used_mode, used_scan_id"
    };
}

/// The SQLite store. Cloning is cheap and shares the connections.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    /// Exactly one connection: write transactions are serialized.
    writer: SqlitePool,
    /// Connections for reads outside write transactions.
    reader: SqlitePool,
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
        let writer =
            SqlitePoolOptions::new().max_connections(1).acquire_timeout(wait).connect_with(options.clone()).await?;
        MIGRATOR.run(&writer).await?;
        // The writer has created the file; a reader must never create an empty one.
        let reader = SqlitePoolOptions::new()
            .max_connections(READERS)
            .acquire_timeout(wait)
            .connect_with(options.create_if_missing(false))
            .await?;
        Ok(Self { writer, reader })
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
        Ok(Self { writer: reader.clone(), reader })
    }

    /// Closes every connection, waiting for those in use to be returned. Calls made after
    /// this fail with [`StoreError::Unavailable`].
    pub async fn close(&self) {
        self.reader.close().await;
        // The last connection to close checkpoints the write-ahead log into the file.
        self.writer.close().await;
    }

    async fn issue_inner(&self, new: NewPass, monthly_limit: u32) -> Result<IssueOutcome, StoreError> {
        let mut tx = self.writer.begin_with(BEGIN_WRITE).await?;
        let earlier = fetch_request(&mut *tx, &new.actor.caller.name, &new.request_id).await?;
        let audit = |outcome: AuditOutcome, pass_id: Option<PassId>| AuditRow {
            at: new.pass.issued_at,
            action: AuditAction::Issue,
            outcome,
            pass_id,
            actor: &new.actor,
            request_key: Some(&new.request_id),
            checkpoint_id: None,
            mode: None,
            permit_masked: Some(&new.pass.permit_masked),
        };
        if let Some((fingerprint, record)) = earlier {
            if fingerprint == new.fingerprint {
                tx.rollback().await?;
                return Ok(IssueOutcome::Replayed(record));
            }
            insert_audit(&mut *tx, &audit(AuditOutcome::RequestIdConflict, None)).await?;
            tx.commit().await?;
            return Ok(IssueOutcome::RequestIdConflict);
        }
        let count = count_in_month(&mut *tx, &new.holder_key, &new.quota_month).await?;
        if count >= i64::from(monthly_limit) {
            insert_audit(&mut *tx, &audit(AuditOutcome::QuotaExhausted, None)).await?;
            tx.commit().await?;
            return Ok(IssueOutcome::QuotaExhausted);
        }
        let pass = &new.pass;
        sqlx::query(
            "INSERT INTO passes (pass_id, key_id, signature, name_latin, name_chinese, permit_masked, \
             issued_at, valid_from, valid_until, modes, entries_allowed, holder_key, quota_month, \
             caller, request_id, fingerprint) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(pass.pass_id.as_bytes().as_slice())
        .bind(pass.key_id.as_bytes().as_slice())
        .bind(pass.signature.as_slice())
        .bind(pass.name_latin.as_deref())
        .bind(pass.name_chinese.as_deref())
        .bind(&pass.permit_masked)
        .bind(nanos(pass.issued_at)?)
        .bind(nanos(pass.valid_from)?)
        .bind(nanos(pass.valid_until)?)
        .bind(i64::from(pass.modes.bits()))
        .bind(i64::from(pass.entries_allowed))
        .bind(new.holder_key.as_slice())
        .bind(&new.quota_month)
        .bind(&new.actor.caller.name)
        .bind(&new.request_id)
        .bind(new.fingerprint.as_slice())
        .execute(&mut *tx)
        .await?;
        insert_audit(&mut *tx, &audit(AuditOutcome::Issued, Some(pass.pass_id))).await?;
        tx.commit().await?;
        Ok(IssueOutcome::Issued(PassRecord { pass: new.pass, revocation: None, entry: None }))
    }

    async fn revoke_inner(
        &self,
        pass_id: PassId,
        reason: &str,
        at: DateTime<Utc>,
        actor: &Actor,
    ) -> Result<RevokeOutcome, StoreError> {
        let audit = |outcome: AuditOutcome| AuditRow {
            at,
            action: AuditAction::Revoke,
            outcome,
            pass_id: Some(pass_id),
            actor,
            request_key: None,
            checkpoint_id: None,
            mode: None,
            permit_masked: None,
        };
        let mut tx = self.writer.begin_with(BEGIN_WRITE).await?;
        let Some(record) = fetch_pass(&mut *tx, pass_id).await? else {
            insert_audit(&mut *tx, &audit(AuditOutcome::NotFound)).await?;
            tx.commit().await?;
            return Ok(RevokeOutcome::NotFound);
        };
        if record.revocation.is_some() {
            insert_audit(&mut *tx, &audit(AuditOutcome::AlreadyRevoked)).await?;
            tx.commit().await?;
            return Ok(RevokeOutcome::Revoked(record));
        }
        sqlx::query("UPDATE passes SET revoked_at = ?, revoke_reason = ? WHERE pass_id = ? AND revoked_at IS NULL")
            .bind(nanos(at)?)
            .bind(reason)
            .bind(pass_id.as_bytes().as_slice())
            .execute(&mut *tx)
            .await?;
        let record = fetch_pass(&mut *tx, pass_id)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("pass {pass_id} vanished while being revoked")))?;
        sqlx::query(
            "INSERT INTO status_events (pass_id, event, at, checkpoint_id, mode, valid_until) \
             VALUES (?, 'revoked', ?, '', '', ?)",
        )
        .bind(pass_id.as_bytes().as_slice())
        .bind(nanos(at)?)
        .bind(nanos(record.pass.valid_until)?)
        .execute(&mut *tx)
        .await?;
        insert_audit(&mut *tx, &audit(AuditOutcome::Revoked)).await?;
        tx.commit().await?;
        Ok(RevokeOutcome::Revoked(record))
    }

    async fn record_entry_inner(&self, attempt: EntryAttempt) -> Result<EntryOutcome, StoreError> {
        let pass_id = attempt.pass_id;
        let audit = |outcome: AuditOutcome| AuditRow {
            at: attempt.at,
            action: AuditAction::Admit,
            outcome,
            pass_id: Some(pass_id),
            actor: &attempt.actor,
            request_key: Some(&attempt.scan_id),
            checkpoint_id: Some(&attempt.checkpoint_id),
            mode: Some(attempt.mode),
            permit_masked: None,
        };
        let mut tx = self.writer.begin_with(BEGIN_WRITE).await?;

        let earlier: Option<(Vec<u8>, String, String, String)> =
            sqlx::query_as("SELECT pass_id, verdict, checkpoint_id, mode FROM scans WHERE caller = ? AND scan_id = ?")
                .bind(&attempt.actor.caller.name)
                .bind(&attempt.scan_id)
                .fetch_optional(&mut *tx)
                .await?;
        if let Some((scanned, verdict, checkpoint_id, mode)) = earlier {
            // Only the same scan resent gets the first answer: the same id for another pass, at
            // another checkpoint or of another mode would open a second gate on one admission.
            let same_scan = scanned.as_slice() == pass_id.as_bytes()
                && checkpoint_id == attempt.checkpoint_id
                && mode == attempt.mode.name();
            if !same_scan {
                insert_audit(&mut *tx, &audit(AuditOutcome::ScanIdConflict)).await?;
                tx.commit().await?;
                return Ok(EntryOutcome::ScanIdConflict);
            }
            let verdict = parse_verdict(&verdict).ok_or_else(|| {
                StoreError::Corrupt(format!("scan {:?}: unknown verdict {verdict:?}", attempt.scan_id))
            })?;
            let record = fetch_pass(&mut *tx, pass_id).await?;
            tx.rollback().await?;
            return Ok(EntryOutcome::Decided { verdict, record, replayed: true });
        }

        let mut record = fetch_pass(&mut *tx, pass_id).await?;
        let mut verdict = decide(&attempt.offline_verdict, record.as_ref());
        if verdict.is_ok() {
            let updated = sqlx::query(
                "UPDATE passes SET used_at = ?, used_checkpoint = ?, used_mode = ?, used_scan_id = ? \
                 WHERE pass_id = ? AND used_at IS NULL AND revoked_at IS NULL",
            )
            .bind(nanos(attempt.at)?)
            .bind(&attempt.checkpoint_id)
            .bind(attempt.mode.name())
            .bind(&attempt.scan_id)
            .bind(pass_id.as_bytes().as_slice())
            .execute(&mut *tx)
            .await?
            .rows_affected();
            record = fetch_pass(&mut *tx, pass_id).await?;
            if let (1, Some(used)) = (updated, &record) {
                sqlx::query(
                    "INSERT INTO status_events (pass_id, event, at, checkpoint_id, mode, valid_until) \
                     VALUES (?, 'used', ?, ?, ?, ?)",
                )
                .bind(pass_id.as_bytes().as_slice())
                .bind(nanos(attempt.at)?)
                .bind(&attempt.checkpoint_id)
                .bind(attempt.mode.name())
                .bind(nanos(used.pass.valid_until)?)
                .execute(&mut *tx)
                .await?;
            }
            if updated != 1 {
                // Cannot happen while the write lock is held from the read on; should it ever,
                // the row as it now stands decides, and the update alone can admit.
                verdict = decide(&attempt.offline_verdict, record.as_ref());
                if verdict.is_ok() {
                    return Err(StoreError::Corrupt(format!(
                        "pass {pass_id} is unused and unrevoked, yet using it up changed nothing"
                    )));
                }
            }
        }

        sqlx::query(
            "INSERT INTO scans (caller, scan_id, pass_id, verdict, checkpoint_id, mode, scanned_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&attempt.actor.caller.name)
        .bind(&attempt.scan_id)
        .bind(pass_id.as_bytes().as_slice())
        .bind(verdict_name(verdict))
        .bind(&attempt.checkpoint_id)
        .bind(attempt.mode.name())
        .bind(nanos(attempt.at)?)
        .execute(&mut *tx)
        .await?;
        let outcome = match verdict {
            Ok(()) => AuditOutcome::Accepted,
            Err(reason) => AuditOutcome::Rejected(reason),
        };
        insert_audit(&mut *tx, &audit(outcome)).await?;
        tx.commit().await?;
        Ok(EntryOutcome::Decided { verdict, record, replayed: false })
    }

    async fn status_events_inner(&self, after: u64, now: DateTime<Utc>) -> Result<StatusEvents, StoreError> {
        // One read transaction: the sequence and the rows come from the same snapshot.
        let mut tx = self.reader.begin().await?;
        let sequence: i64 =
            sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM status_events").fetch_one(&mut *tx).await?;
        let rows: Vec<(Vec<u8>, String, i64, String, String, i64)> = sqlx::query_as(
            "SELECT pass_id, event, at, checkpoint_id, mode, valid_until FROM status_events \
             WHERE seq > ? AND valid_until > ? ORDER BY seq",
        )
        // A caller's sequence past any stored one simply has no events after it.
        .bind(i64::try_from(after).unwrap_or(i64::MAX))
        .bind(nanos(now)?)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let entries = rows
            .into_iter()
            .map(|(pass_id, event, at, checkpoint_id, mode, valid_until)| {
                let pass_id = PassId::from_slice(&pass_id)
                    .ok_or_else(|| StoreError::Corrupt("status event pass id is not 16 bytes".into()))?;
                let event = match event.as_str() {
                    "revoked" => PassEvent::Revoked,
                    "used" => PassEvent::Used {
                        checkpoint_id,
                        mode: parse_mode(&mode)
                            .ok_or_else(|| StoreError::Corrupt(format!("status event: unknown mode {mode:?}")))?,
                    },
                    other => return Err(StoreError::Corrupt(format!("status event: unknown event {other:?}"))),
                };
                Ok(StatusEntry { pass_id, event, at: time(at), valid_until: time(valid_until) })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(StatusEvents { sequence: u64::try_from(sequence).unwrap_or(0), entries })
    }

    /// How many passes count against the holder's quota in the month (what `issue` counts).
    pub async fn passes_in_month(&self, holder_key: &[u8; 32], quota_month: &str) -> Result<u32, StoreError> {
        let count = count_in_month(&self.reader, holder_key, quota_month).await.map_err(classify)?;
        u32::try_from(count).map_err(|_| StoreError::Corrupt(format!("pass count {count} out of range")))
    }

    async fn record_audit_inner(&self, record: &AuditRecord) -> Result<(), StoreError> {
        let row = AuditRow {
            at: record.at,
            action: record.action,
            outcome: record.outcome,
            pass_id: record.pass_id,
            actor: &record.actor,
            request_key: record.request_key.as_deref(),
            checkpoint_id: record.checkpoint_id.as_deref(),
            mode: record.mode,
            permit_masked: record.permit_masked.as_deref(),
        };
        // One statement: it takes the write lock and commits on its own.
        insert_audit(&self.writer, &row).await
    }

    async fn audit_trail_inner(&self, pass_id: PassId) -> Result<Vec<AuditEntry>, StoreError> {
        let rows: Vec<AuditEntryRow> = sqlx::query_as(
            "SELECT seq, at, action, outcome, reason, pass_id, caller, role, peer, request_key, checkpoint_id, \
             mode, permit_masked FROM audit WHERE pass_id = ? ORDER BY at, seq",
        )
        .bind(pass_id.as_bytes().as_slice())
        .fetch_all(&self.reader)
        .await?;
        rows.into_iter().map(AuditEntryRow::into_entry).collect()
    }

    async fn probe_writable_inner(&self) -> Result<(), StoreError> {
        // The write lock (busy, locked), then a write statement that matches no row: SQLite
        // grants the lock on a read-only connection and refuses only the write. Nothing reaches
        // the disk, so a full disk or an I/O error shows only at the next real write, which
        // reports the store unavailable again.
        let mut tx = self.writer.begin_with(BEGIN_WRITE).await?;
        sqlx::query("DELETE FROM audit WHERE 0").execute(&mut *tx).await?;
        tx.rollback().await?;
        Ok(())
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
        let earlier = fetch_request(&self.reader, caller, request_id).await.map_err(classify)?;
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
        fetch_pass(&self.reader, pass_id).await.map_err(classify)
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

    async fn status_events(&self, after: u64, now: DateTime<Utc>) -> Result<StatusEvents, StoreError> {
        self.status_events_inner(after, now).await.map_err(classify)
    }

    async fn record_audit(&self, record: AuditRecord) -> Result<(), StoreError> {
        self.record_audit_inner(&record).await.map_err(classify)
    }

    async fn audit_trail(&self, pass_id: PassId) -> Result<Vec<AuditEntry>, StoreError> {
        self.audit_trail_inner(pass_id).await.map_err(classify)
    }

    async fn probe_writable(&self) -> Result<(), StoreError> {
        self.probe_writable_inner().await.map_err(classify)
    }
}

/// The verdict on a scan that is not a replay, in the order the checks are documented:
/// the pass must exist, pass offline verification, be unrevoked and be unused.
/// The same order as `VerifyPass`: what the pass says (window, mode) first, then what the
/// server knows of it.
fn decide(offline: &Result<(), Reason>, record: Option<&PassRecord>) -> Result<(), Reason> {
    (*offline)?;
    let record = record.ok_or(Reason::UnknownPass)?;
    if record.revocation.is_some() {
        return Err(Reason::Revoked);
    }
    if record.entry.is_some() {
        return Err(Reason::AlreadyUsed);
    }
    Ok(())
}

/// The passes of a holder in a quota month: issued and revoked ones alike.
async fn count_in_month<'e, E>(executor: E, holder_key: &[u8; 32], quota_month: &str) -> Result<i64, StoreError>
where
    E: Executor<'e, Database = Sqlite>,
{
    let count = sqlx::query_scalar("SELECT COUNT(*) FROM passes WHERE holder_key = ? AND quota_month = ?")
        .bind(holder_key.as_slice())
        .bind(quota_month)
        .fetch_one(executor)
        .await?;
    Ok(count)
}

async fn fetch_pass<'e, E>(executor: E, pass_id: PassId) -> Result<Option<PassRecord>, StoreError>
where
    E: Executor<'e, Database = Sqlite>,
{
    let row: Option<PassRow> = sqlx::query_as(concat!("SELECT ", pass_columns!(), " FROM passes WHERE pass_id = ?"))
        .bind(pass_id.as_bytes().as_slice())
        .fetch_optional(executor)
        .await?;
    row.map(PassRow::into_record).transpose()
}

/// The fingerprint and pass of an earlier request of `caller` with this id.
async fn fetch_request<'e, E>(
    executor: E,
    caller: &str,
    request_id: &str,
) -> Result<Option<(Vec<u8>, PassRecord)>, StoreError>
where
    E: Executor<'e, Database = Sqlite>,
{
    let row: Option<RequestRow> = sqlx::query_as(concat!(
        "SELECT fingerprint, ",
        pass_columns!(),
        " FROM passes WHERE caller = ? AND request_id = ?"
    ))
    .bind(caller)
    .bind(request_id)
    .fetch_optional(executor)
    .await?;
    row.map(|row| Ok((row.fingerprint, row.pass.into_record()?))).transpose()
}

/// An audit row to insert.
struct AuditRow<'a> {
    at: DateTime<Utc>,
    action: AuditAction,
    outcome: AuditOutcome,
    pass_id: Option<PassId>,
    actor: &'a Actor,
    request_key: Option<&'a str>,
    checkpoint_id: Option<&'a str>,
    mode: Option<TransportMode>,
    permit_masked: Option<&'a str>,
}

async fn insert_audit<'e, E>(executor: E, row: &AuditRow<'_>) -> Result<(), StoreError>
where
    E: Executor<'e, Database = Sqlite>,
{
    sqlx::query(
        "INSERT INTO audit (at, action, outcome, reason, pass_id, caller, role, peer, request_key, checkpoint_id, \
         mode, permit_masked) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(nanos(row.at)?)
    .bind(row.action.as_str())
    .bind(row.outcome.as_str())
    .bind(row.outcome.reason().map(Reason::as_str))
    .bind(row.pass_id.as_ref().map(|id| id.as_bytes().to_vec()))
    .bind(&row.actor.caller.name)
    .bind(row.actor.caller.role.name())
    .bind(row.actor.peer.map(|peer| peer.to_string()))
    .bind(row.request_key)
    .bind(row.checkpoint_id)
    .bind(row.mode.map(TransportMode::name))
    .bind(row.permit_masked)
    .execute(executor)
    .await?;
    Ok(())
}

/// An `audit` row as SQLite returns it, before its values are checked.
#[derive(FromRow)]
struct AuditEntryRow {
    seq: i64,
    at: i64,
    action: String,
    outcome: String,
    reason: Option<String>,
    pass_id: Option<Vec<u8>>,
    caller: String,
    role: Option<String>,
    peer: Option<String>,
    request_key: Option<String>,
    checkpoint_id: Option<String>,
    mode: Option<String>,
    permit_masked: Option<String>,
}

impl AuditEntryRow {
    fn into_entry(self) -> Result<AuditEntry, StoreError> {
        let seq = self.seq;
        let corrupt = |what: String| StoreError::Corrupt(format!("audit row {seq}: {what}"));
        let reason = self
            .reason
            .map(|name| Reason::from_name(&name).ok_or_else(|| corrupt(format!("unknown reason {name:?}"))))
            .transpose()?;
        Ok(AuditEntry {
            seq: u64::try_from(seq).map_err(|_| corrupt("negative sequence".into()))?,
            at: time(self.at),
            action: AuditAction::from_name(&self.action)
                .ok_or_else(|| corrupt(format!("unknown action {:?}", self.action)))?,
            outcome: AuditOutcome::from_name(&self.outcome, reason)
                .ok_or_else(|| corrupt(format!("unknown outcome {:?} (reason {reason:?})", self.outcome)))?,
            pass_id: self
                .pass_id
                .map(|id| PassId::from_slice(&id).ok_or_else(|| corrupt("pass_id is not 16 bytes".into())))
                .transpose()?,
            caller: self.caller,
            role: self
                .role
                .map(|name| {
                    Role::ALL
                        .into_iter()
                        .find(|r| r.name() == name)
                        .ok_or_else(|| corrupt(format!("unknown role {name:?}")))
                })
                .transpose()?,
            peer: self
                .peer
                .map(|peer| peer.parse::<SocketAddr>().map_err(|_| corrupt(format!("peer {peer:?} is not an address"))))
                .transpose()?,
            request_key: self.request_key,
            checkpoint_id: self.checkpoint_id,
            mode: self
                .mode
                .map(|mode| parse_mode(&mode).ok_or_else(|| corrupt(format!("unknown mode {mode:?}"))))
                .transpose()?,
            permit_masked: self.permit_masked,
        })
    }
}

/// A `passes` row as SQLite returns it, before its values are checked.
#[derive(FromRow)]
struct PassRow {
    pass_id: Vec<u8>,
    key_id: Vec<u8>,
    signature: Vec<u8>,
    name_latin: Option<String>,
    name_chinese: Option<String>,
    permit_masked: String,
    issued_at: i64,
    valid_from: i64,
    valid_until: i64,
    modes: i64,
    entries_allowed: i64,
    revoked_at: Option<i64>,
    revoke_reason: Option<String>,
    used_at: Option<i64>,
    used_checkpoint: Option<String>,
    used_mode: Option<String>,
    used_scan_id: Option<String>,
}

/// A `passes` row with the fingerprint of its request.
#[derive(FromRow)]
struct RequestRow {
    fingerprint: Vec<u8>,
    #[sqlx(flatten)]
    pass: PassRow,
}

impl PassRow {
    fn into_record(self) -> Result<PassRecord, StoreError> {
        let id = hex::encode(&self.pass_id);
        let corrupt = |what: &str| StoreError::Corrupt(format!("pass {id}: {what}"));
        let pass_id = PassId::from_slice(&self.pass_id).ok_or_else(|| corrupt("pass_id is not 16 bytes"))?;
        let key_id = self.key_id.try_into().map(KeyId::from_bytes).map_err(|_| corrupt("key_id is not 8 bytes"))?;
        let signature = self.signature.try_into().map_err(|_| corrupt("signature is not 64 bytes"))?;
        let modes = u32::try_from(self.modes)
            .ok()
            .and_then(Modes::from_bits)
            .ok_or_else(|| corrupt("modes is not a valid bit set"))?;
        let entries_allowed =
            u32::try_from(self.entries_allowed).map_err(|_| corrupt("entries_allowed out of range"))?;
        let revocation = match (self.revoked_at, self.revoke_reason) {
            (None, None) => None,
            (Some(revoked_at), Some(reason)) => Some(Revocation { revoked_at: time(revoked_at), reason }),
            _ => return Err(corrupt("revocation is half recorded")),
        };
        let entry = match (self.used_at, self.used_checkpoint, self.used_mode, self.used_scan_id) {
            (None, None, None, None) => None,
            (Some(used_at), Some(checkpoint_id), Some(mode), Some(scan_id)) => Some(EntryRecord {
                recorded_at: time(used_at),
                checkpoint_id,
                mode: parse_mode(&mode).ok_or_else(|| corrupt("used_mode is not a transport mode"))?,
                scan_id,
            }),
            _ => return Err(corrupt("entry is half recorded")),
        };
        Ok(PassRecord {
            pass: StoredPass {
                pass_id,
                key_id,
                signature,
                name_latin: self.name_latin,
                name_chinese: self.name_chinese,
                permit_masked: self.permit_masked,
                issued_at: time(self.issued_at),
                valid_from: time(self.valid_from),
                valid_until: time(self.valid_until),
                modes,
                entries_allowed,
            },
            revocation,
            entry,
        })
    }
}

/// Unix nanoseconds: the clock's readings round-trip exactly.
fn nanos(at: DateTime<Utc>) -> Result<i64, StoreError> {
    at.timestamp_nanos_opt().ok_or_else(|| {
        StoreError::Database(sqlx::Error::Encode(
            format!("time {at} is outside the storable years 1677 to 2262").into(),
        ))
    })
}

fn time(nanos: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_nanos(nanos)
}

/// The mode named by [`TransportMode::name`].
fn parse_mode(name: &str) -> Option<TransportMode> {
    use TransportMode::{Air, Foot, Rail, Road, Sea};
    // Naming every variant in a match makes a new mode a compile error here, not a row that
    // cannot be read back.
    let every = |mode: TransportMode| match mode {
        Air | Rail | Road | Sea | Foot => mode,
    };
    [Air, Rail, Road, Sea, Foot].into_iter().map(every).find(|mode| mode.name() == name)
}

fn verdict_name(verdict: Result<(), Reason>) -> &'static str {
    match verdict {
        Ok(()) => ADMITTED,
        Err(reason) => reason.as_str(),
    }
}

fn parse_verdict(name: &str) -> Option<Result<(), Reason>> {
    if name == ADMITTED {
        Some(Ok(()))
    } else {
        Reason::from_name(name).map(Err)
    }
}

/// `?` turns every sqlx error into [`StoreError::Database`]; this picks out those that mean the
/// database cannot be reached or written for now, which callers answer with `unavailable`.
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
    let unavailable = match &err {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => true,
        sqlx::Error::Database(db) => db
            .code()
            .and_then(|code| code.parse::<i32>().ok())
            .is_some_and(|code| matches!(code & 0xff, BUSY | LOCKED | READONLY | IOERR | FULL | CANTOPEN)),
        _ => false,
    };
    if unavailable {
        StoreError::Unavailable(err)
    } else {
        StoreError::Database(err)
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;
    use std::collections::HashSet;
    use std::error::Error as StdError;

    use chrono::TimeDelta;
    use sqlx::error::{DatabaseError, ErrorKind};
    use tempfile::TempDir;

    use super::*;
    use crate::access::Caller;

    const LIMIT: u32 = 2;
    /// The caller of [`new_pass`].
    const ISSUER: &str = "issuer-1";
    /// The caller of [`attempt`].
    const CHECKPOINT: &str = "checkpoint-1";

    fn actor(name: &str, role: Role, peer: &str) -> Actor {
        Actor { caller: Caller { name: name.into(), role }, peer: Some(peer.parse().unwrap()) }
    }

    fn issuer() -> Actor {
        actor(ISSUER, Role::Issuer, "192.0.2.1:40001")
    }

    fn checkpoint() -> Actor {
        actor(CHECKPOINT, Role::Checkpoint, "[2001:db8::7]:40002")
    }

    fn admin() -> Actor {
        actor("admin-1", Role::Admin, "192.0.2.9:40003")
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    /// The scan time, with nanoseconds as the system clock gives them.
    fn scan_time() -> DateTime<Utc> {
        at("2026-11-27T09:15:02.123456789+08:00")
    }

    fn pass_id(n: u32) -> PassId {
        let mut bytes = [0x5a; 16];
        bytes[..4].copy_from_slice(&n.to_be_bytes());
        bytes[12..].copy_from_slice(&n.wrapping_mul(0x9e37_79b9).to_le_bytes());
        PassId::from_bytes(bytes)
    }

    fn stored_pass(n: u32) -> StoredPass {
        let issued_at = at("2026-11-26T10:00:00Z");
        StoredPass {
            pass_id: pass_id(n),
            key_id: KeyId::from_bytes([7; 8]),
            signature: [0; 64],
            name_latin: Some("CHAN TAI MAN".into()),
            name_chinese: if n % 2 == 0 { Some("陳大文".into()) } else { None },
            permit_masked: "H1234****".into(),
            issued_at,
            valid_from: issued_at,
            valid_until: issued_at + TimeDelta::days(7),
            modes: Modes::AIR_AND_RAIL,
            entries_allowed: 1,
        }
    }

    /// Pass `n` for holder `holder` in `month`, with its own request id and fingerprint.
    fn new_pass(n: u32, holder: u8, month: &str) -> NewPass {
        NewPass {
            pass: stored_pass(n),
            holder_key: [holder; 32],
            quota_month: month.into(),
            actor: issuer(),
            request_id: format!("request-{n}"),
            fingerprint: [n as u8; 32],
        }
    }

    fn attempt(scan_id: &str, pass_id: PassId) -> EntryAttempt {
        EntryAttempt {
            actor: checkpoint(),
            scan_id: scan_id.into(),
            pass_id,
            checkpoint_id: "SZ-LOWU-01".into(),
            mode: TransportMode::Rail,
            at: scan_time(),
            offline_verdict: Ok(()),
        }
    }

    async fn open() -> (TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("epass.db")).await.unwrap();
        (dir, store)
    }

    async fn issued(store: &SqliteStore, new: NewPass) -> PassRecord {
        match store.issue(new, LIMIT).await.unwrap() {
            IssueOutcome::Issued(record) => record,
            other => panic!("expected Issued, got {other:?}"),
        }
    }

    fn decided(outcome: EntryOutcome) -> (Result<(), Reason>, Option<PassRecord>, bool) {
        match outcome {
            EntryOutcome::Decided { verdict, record, replayed } => (verdict, record, replayed),
            EntryOutcome::ScanIdConflict => panic!("expected Decided, got ScanIdConflict"),
        }
    }

    #[tokio::test]
    async fn connections_are_durable() {
        let (_dir, store) = open().await;
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode").fetch_one(&store.writer).await.unwrap();
        assert_eq!(mode, "wal");
        for pool in [&store.writer, &store.reader] {
            let synchronous: i64 = sqlx::query_scalar("PRAGMA synchronous").fetch_one(pool).await.unwrap();
            assert_eq!(synchronous, 2, "synchronous = FULL");
            let foreign_keys: i64 = sqlx::query_scalar("PRAGMA foreign_keys").fetch_one(pool).await.unwrap();
            assert_eq!(foreign_keys, 1);
        }
    }

    #[tokio::test]
    async fn issued_pass_reads_back_equal() {
        let (_dir, store) = open().await;
        for n in [1, 2] {
            let new = new_pass(n, 1, "2026-11");
            let record = issued(&store, new.clone()).await;
            assert_eq!(record, PassRecord { pass: new.pass.clone(), revocation: None, entry: None });
            assert_eq!(store.pass(new.pass.pass_id).await.unwrap(), Some(record.clone()));
            assert_eq!(
                store.lookup_request(ISSUER, &new.request_id, &new.fingerprint).await.unwrap(),
                RequestLookup::Replay(record)
            );
            assert_eq!(
                store.lookup_request(ISSUER, &new.request_id, &[0xee; 32]).await.unwrap(),
                RequestLookup::Conflict
            );
        }
        assert_eq!(store.lookup_request(ISSUER, "request-9", &[9; 32]).await.unwrap(), RequestLookup::New);
        assert_eq!(store.pass(pass_id(9)).await.unwrap(), None);
    }

    #[tokio::test]
    async fn replay_returns_the_same_pass_and_counts_once() {
        let (_dir, store) = open().await;
        let new = new_pass(1, 1, "2026-11");
        let record = issued(&store, new.clone()).await;
        let mut retry = new.clone();
        // A retry signs a fresh pass id; the earlier pass must come back regardless.
        retry.pass.pass_id = pass_id(2);
        assert_eq!(store.issue(retry, LIMIT).await.unwrap(), IssueOutcome::Replayed(record.clone()));
        assert_eq!(store.passes_in_month(&new.holder_key, "2026-11").await.unwrap(), 1);
        assert_eq!(store.pass(pass_id(2)).await.unwrap(), None);
        // The replay is answered before the quota is counted.
        assert_eq!(store.issue(new, 1).await.unwrap(), IssueOutcome::Replayed(record));
    }

    #[tokio::test]
    async fn conflicting_request_id_changes_nothing() {
        let (_dir, store) = open().await;
        let first = new_pass(1, 1, "2026-11");
        let record = issued(&store, first.clone()).await;
        let mut other = new_pass(2, 1, "2026-11");
        other.request_id = first.request_id.clone();
        assert_eq!(store.issue(other, LIMIT).await.unwrap(), IssueOutcome::RequestIdConflict);
        assert_eq!(store.pass(pass_id(2)).await.unwrap(), None);
        assert_eq!(store.pass(pass_id(1)).await.unwrap(), Some(record));
        assert_eq!(store.passes_in_month(&first.holder_key, "2026-11").await.unwrap(), 1);
    }

    #[tokio::test]
    async fn third_pass_in_a_month_is_refused() {
        let (_dir, store) = open().await;
        issued(&store, new_pass(1, 1, "2026-11")).await;
        issued(&store, new_pass(2, 1, "2026-11")).await;
        assert_eq!(store.issue(new_pass(3, 1, "2026-11"), LIMIT).await.unwrap(), IssueOutcome::QuotaExhausted);
        assert_eq!(store.pass(pass_id(3)).await.unwrap(), None);
        assert_eq!(store.passes_in_month(&[1; 32], "2026-11").await.unwrap(), 2);
        // Another month, another holder: their own quotas.
        issued(&store, new_pass(4, 1, "2026-12")).await;
        issued(&store, new_pass(5, 2, "2026-11")).await;
        assert_eq!(store.passes_in_month(&[1; 32], "2026-12").await.unwrap(), 1);
        assert_eq!(store.passes_in_month(&[2; 32], "2026-11").await.unwrap(), 1);
    }

    #[tokio::test]
    async fn revoked_passes_still_count() {
        let (_dir, store) = open().await;
        issued(&store, new_pass(1, 1, "2026-11")).await;
        assert!(matches!(
            store.revoke(pass_id(1), "lost phone", scan_time(), &admin()).await.unwrap(),
            RevokeOutcome::Revoked(_)
        ));
        issued(&store, new_pass(2, 1, "2026-11")).await;
        assert_eq!(store.issue(new_pass(3, 1, "2026-11"), LIMIT).await.unwrap(), IssueOutcome::QuotaExhausted);
    }

    #[tokio::test]
    async fn first_revocation_stands() {
        let (_dir, store) = open().await;
        assert_eq!(store.revoke(pass_id(1), "lost", scan_time(), &admin()).await.unwrap(), RevokeOutcome::NotFound);
        let record = issued(&store, new_pass(1, 1, "2026-11")).await;
        let RevokeOutcome::Revoked(revoked) = store.revoke(pass_id(1), "lost", scan_time(), &admin()).await.unwrap()
        else {
            panic!("expected Revoked");
        };
        let revocation = Revocation { revoked_at: scan_time(), reason: "lost".into() };
        assert_eq!(revoked, PassRecord { revocation: Some(revocation), ..record });
        let later = scan_time() + TimeDelta::hours(1);
        assert_eq!(
            store.revoke(pass_id(1), "fraud", later, &admin()).await.unwrap(),
            RevokeOutcome::Revoked(revoked.clone())
        );
        assert_eq!(store.pass(pass_id(1)).await.unwrap(), Some(revoked));
    }

    #[tokio::test]
    async fn a_pass_admits_once() {
        let (_dir, store) = open().await;
        issued(&store, new_pass(1, 1, "2026-11")).await;

        let (verdict, record, replayed) = decided(store.record_entry(attempt("scan-1", pass_id(1))).await.unwrap());
        let entry = EntryRecord {
            recorded_at: scan_time(),
            checkpoint_id: "SZ-LOWU-01".into(),
            mode: TransportMode::Rail,
            scan_id: "scan-1".into(),
        };
        assert_eq!((verdict, replayed), (Ok(()), false));
        let record = record.unwrap();
        assert_eq!(record.entry, Some(entry));
        assert_eq!(store.pass(pass_id(1)).await.unwrap(), Some(record.clone()));

        // The scanner resends: the same answer, marked as a replay.
        let resent = store.record_entry(attempt("scan-1", pass_id(1))).await.unwrap();
        assert_eq!(resent, EntryOutcome::Decided { verdict: Ok(()), record: Some(record.clone()), replayed: true });

        // Another scan: refused, and it sees the first entry.
        let mut second = attempt("scan-2", pass_id(1));
        second.at += TimeDelta::minutes(3);
        second.mode = TransportMode::Air;
        let outcome = store.record_entry(second.clone()).await.unwrap();
        let refused =
            EntryOutcome::Decided { verdict: Err(Reason::AlreadyUsed), record: Some(record.clone()), replayed: false };
        assert_eq!(outcome, refused);
        let resent = store.record_entry(second).await.unwrap();
        assert_eq!(
            resent,
            EntryOutcome::Decided { verdict: Err(Reason::AlreadyUsed), record: Some(record), replayed: true }
        );
    }

    #[tokio::test]
    async fn scan_id_reused_for_another_pass_conflicts() {
        let (_dir, store) = open().await;
        issued(&store, new_pass(1, 1, "2026-11")).await;
        let other = issued(&store, new_pass(2, 2, "2026-11")).await;
        let (verdict, _, _) = decided(store.record_entry(attempt("scan-1", pass_id(1))).await.unwrap());
        assert_eq!(verdict, Ok(()));
        assert_eq!(store.record_entry(attempt("scan-1", pass_id(2))).await.unwrap(), EntryOutcome::ScanIdConflict);
        assert_eq!(store.pass(pass_id(2)).await.unwrap(), Some(other));
    }

    #[tokio::test]
    async fn unknown_pass_is_rejected_and_recorded() {
        let (_dir, store) = open().await;
        let outcome = store.record_entry(attempt("scan-1", pass_id(1))).await.unwrap();
        assert_eq!(outcome, EntryOutcome::Decided { verdict: Err(Reason::UnknownPass), record: None, replayed: false });
        let resent = store.record_entry(attempt("scan-1", pass_id(1))).await.unwrap();
        assert_eq!(resent, EntryOutcome::Decided { verdict: Err(Reason::UnknownPass), record: None, replayed: true });
    }

    #[tokio::test]
    async fn revoked_pass_is_rejected() {
        let (_dir, store) = open().await;
        issued(&store, new_pass(1, 1, "2026-11")).await;
        let RevokeOutcome::Revoked(revoked) = store.revoke(pass_id(1), "lost", scan_time(), &admin()).await.unwrap()
        else {
            panic!("expected Revoked");
        };
        let outcome = store.record_entry(attempt("scan-1", pass_id(1))).await.unwrap();
        assert_eq!(
            outcome,
            EntryOutcome::Decided { verdict: Err(Reason::Revoked), record: Some(revoked.clone()), replayed: false }
        );
        assert_eq!(store.pass(pass_id(1)).await.unwrap(), Some(revoked));
    }

    #[tokio::test]
    async fn a_used_pass_can_be_revoked() {
        let (_dir, store) = open().await;
        issued(&store, new_pass(1, 1, "2026-11")).await;
        let (_, used, _) = decided(store.record_entry(attempt("scan-1", pass_id(1))).await.unwrap());
        let used = used.unwrap();
        let RevokeOutcome::Revoked(revoked) = store.revoke(pass_id(1), "fraud", scan_time(), &admin()).await.unwrap()
        else {
            panic!("expected Revoked");
        };
        assert_eq!(revoked.entry, used.entry);
        assert!(revoked.revocation.is_some());
    }

    #[tokio::test]
    async fn offline_verdict_is_passed_through_and_stored() {
        let (_dir, store) = open().await;
        let record = issued(&store, new_pass(1, 1, "2026-11")).await;
        let mut expired = attempt("scan-1", pass_id(1));
        expired.offline_verdict = Err(Reason::Expired);
        let outcome = store.record_entry(expired.clone()).await.unwrap();
        assert_eq!(
            outcome,
            EntryOutcome::Decided { verdict: Err(Reason::Expired), record: Some(record.clone()), replayed: false }
        );
        // Stored: the resent scan gets it back even though it now claims to be fine.
        expired.offline_verdict = Ok(());
        let resent = store.record_entry(expired).await.unwrap();
        assert_eq!(
            resent,
            EntryOutcome::Decided { verdict: Err(Reason::Expired), record: Some(record), replayed: true }
        );
        // The pass was not used up.
        let (verdict, _, _) = decided(store.record_entry(attempt("scan-2", pass_id(1))).await.unwrap());
        assert_eq!(verdict, Ok(()));
        // The offline verdict comes before revocation and use.
        store.revoke(pass_id(1), "lost", scan_time(), &admin()).await.unwrap();
        let mut wrong_mode = attempt("scan-3", pass_id(1));
        wrong_mode.offline_verdict = Err(Reason::ModeNotAllowed);
        let (verdict, _, _) = decided(store.record_entry(wrong_mode).await.unwrap());
        assert_eq!(verdict, Err(Reason::ModeNotAllowed));
    }

    #[tokio::test]
    async fn everything_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("epass.db");
        let store = SqliteStore::open(&path).await.unwrap();
        let used = new_pass(1, 1, "2026-11");
        issued(&store, used.clone()).await;
        issued(&store, new_pass(2, 1, "2026-11")).await;
        let (_, used_record, _) = decided(store.record_entry(attempt("scan-1", pass_id(1))).await.unwrap());
        let RevokeOutcome::Revoked(revoked) = store.revoke(pass_id(2), "lost", scan_time(), &admin()).await.unwrap()
        else {
            panic!("expected Revoked");
        };
        store.close().await;
        drop(store);

        let store = SqliteStore::open(&path).await.unwrap();
        assert_eq!(store.pass(pass_id(1)).await.unwrap(), used_record);
        assert_eq!(store.pass(pass_id(2)).await.unwrap(), Some(revoked));
        assert!(matches!(
            store.lookup_request(ISSUER, &used.request_id, &used.fingerprint).await.unwrap(),
            RequestLookup::Replay(_)
        ));
        assert_eq!(store.passes_in_month(&[1; 32], "2026-11").await.unwrap(), 2);
        let (verdict, _, replayed) = decided(store.record_entry(attempt("scan-1", pass_id(1))).await.unwrap());
        assert_eq!((verdict, replayed), (Ok(()), true));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_issues_never_exceed_the_quota() {
        let (_dir, store) = open().await;
        issued(&store, new_pass(100, 1, "2026-11")).await;
        let tasks: Vec<_> = (0..10)
            .map(|n| {
                let store = store.clone();
                tokio::spawn(async move { store.issue(new_pass(n, 1, "2026-11"), LIMIT).await.unwrap() })
            })
            .collect();
        let mut issued_count = 0;
        let mut exhausted = 0;
        for task in tasks {
            match task.await.unwrap() {
                IssueOutcome::Issued(_) => issued_count += 1,
                IssueOutcome::QuotaExhausted => exhausted += 1,
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!((issued_count, exhausted), (1, 9));
        assert_eq!(store.passes_in_month(&[1; 32], "2026-11").await.unwrap(), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_scans_admit_once() {
        let (_dir, store) = open().await;
        issued(&store, new_pass(1, 1, "2026-11")).await;
        let tasks: Vec<_> = (0..8)
            .map(|n| {
                let store = store.clone();
                tokio::spawn(
                    async move { store.record_entry(attempt(&format!("scan-{n}"), pass_id(1))).await.unwrap() },
                )
            })
            .collect();
        let mut admitted = Vec::new();
        let mut entries = HashSet::new();
        for task in tasks {
            let (verdict, record, replayed) = decided(task.await.unwrap());
            assert!(!replayed);
            let entry = record.unwrap().entry.unwrap();
            match verdict {
                Ok(()) => admitted.push(entry.scan_id.clone()),
                Err(reason) => assert_eq!(reason, Reason::AlreadyUsed),
            }
            entries.insert(entry.scan_id);
        }
        assert_eq!(admitted.len(), 1);
        // Every refusal names the one admitting scan.
        assert_eq!(entries, HashSet::from([admitted[0].clone()]));
    }

    #[tokio::test]
    async fn unreadable_row_is_reported_as_corrupt() {
        let (_dir, store) = open().await;
        issued(&store, new_pass(1, 1, "2026-11")).await;
        sqlx::query("UPDATE passes SET modes = 4").execute(&store.writer).await.unwrap();
        assert!(matches!(store.pass(pass_id(1)).await, Err(StoreError::Corrupt(_))));
    }

    #[tokio::test]
    async fn time_out_of_range_is_an_error_not_a_wrong_value() {
        let (_dir, store) = open().await;
        issued(&store, new_pass(1, 1, "2026-11")).await;
        let far = at("2300-01-01T00:00:00Z");
        assert!(matches!(store.revoke(pass_id(1), "lost", far, &admin()).await, Err(StoreError::Database(_))));
        assert_eq!(store.pass(pass_id(1)).await.unwrap().unwrap().revocation, None);
    }

    #[tokio::test]
    async fn closed_store_is_unavailable() {
        let (_dir, store) = open().await;
        store.close().await;
        assert!(matches!(store.pass(pass_id(1)).await, Err(StoreError::Unavailable(_))));
        assert!(matches!(store.issue(new_pass(1, 1, "2026-11"), LIMIT).await, Err(StoreError::Unavailable(_))));
    }

    #[tokio::test]
    async fn request_ids_are_scoped_to_the_caller() {
        let (_dir, store) = open().await;
        let first = new_pass(1, 1, "2026-11");
        let first_record = issued(&store, first.clone()).await;
        // Another issuer sends the same request id (and even the same application): a new request.
        let mut second = new_pass(2, 2, "2026-11");
        second.request_id = first.request_id.clone();
        second.fingerprint = first.fingerprint;
        second.actor = actor("issuer-2", Role::Issuer, "192.0.2.2:40001");
        let second_record = issued(&store, second.clone()).await;
        assert_ne!(first_record.pass.pass_id, second_record.pass.pass_id);
        assert_eq!(
            store.lookup_request(ISSUER, &first.request_id, &first.fingerprint).await.unwrap(),
            RequestLookup::Replay(first_record.clone())
        );
        assert_eq!(
            store.lookup_request("issuer-2", &first.request_id, &first.fingerprint).await.unwrap(),
            RequestLookup::Replay(second_record.clone())
        );
        assert_eq!(
            store.lookup_request("issuer-3", &first.request_id, &first.fingerprint).await.unwrap(),
            RequestLookup::New
        );
        // Each caller's retry gets its own pass back.
        let mut retry = second.clone();
        retry.pass.pass_id = pass_id(3);
        assert_eq!(store.issue(retry, LIMIT).await.unwrap(), IssueOutcome::Replayed(second_record));
        let mut retry = first.clone();
        retry.pass.pass_id = pass_id(3);
        assert_eq!(store.issue(retry, LIMIT).await.unwrap(), IssueOutcome::Replayed(first_record));
        assert_eq!(store.pass(pass_id(3)).await.unwrap(), None);
    }

    #[tokio::test]
    async fn scan_ids_are_scoped_to_the_caller() {
        let (_dir, store) = open().await;
        issued(&store, new_pass(1, 1, "2026-11")).await;
        let (verdict, admitted, _) = decided(store.record_entry(attempt("scan-1", pass_id(1))).await.unwrap());
        assert_eq!(verdict, Ok(()));
        // Another checkpoint's scanner also numbers its scans from 1: a new scan, not a resend.
        let mut other = attempt("scan-1", pass_id(1));
        other.actor = actor("checkpoint-2", Role::Checkpoint, "192.0.2.3:40002");
        other.checkpoint_id = "PEK-T3-07".into();
        let outcome = store.record_entry(other.clone()).await.unwrap();
        assert_eq!(
            outcome,
            EntryOutcome::Decided { verdict: Err(Reason::AlreadyUsed), record: admitted.clone(), replayed: false }
        );
        // Each resends and gets its own first answer.
        let (verdict, _, replayed) = decided(store.record_entry(attempt("scan-1", pass_id(1))).await.unwrap());
        assert_eq!((verdict, replayed), (Ok(()), true));
        let (verdict, _, replayed) = decided(store.record_entry(other.clone()).await.unwrap());
        assert_eq!((verdict, replayed), (Err(Reason::AlreadyUsed), true));
        // A scan id reused for another pass still conflicts, per caller.
        issued(&store, new_pass(2, 2, "2026-11")).await;
        other.pass_id = pass_id(2);
        assert_eq!(store.record_entry(other).await.unwrap(), EntryOutcome::ScanIdConflict);
        let scans: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM scans").fetch_one(&store.reader).await.unwrap();
        assert_eq!(scans, 2);
    }

    /// The trail of a pass as (action, outcome, caller) triples.
    async fn trail(store: &SqliteStore, pass_id: PassId) -> Vec<(AuditAction, AuditOutcome, String)> {
        store.audit_trail(pass_id).await.unwrap().into_iter().map(|e| (e.action, e.outcome, e.caller)).collect()
    }

    /// Every audit row, pass or not, as (action, outcome, pass id).
    async fn audit_rows(store: &SqliteStore) -> Vec<(String, String, Option<Vec<u8>>)> {
        sqlx::query_as("SELECT action, outcome, pass_id FROM audit ORDER BY seq")
            .fetch_all(&store.reader)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn audit_trail_records_who_did_what_from_where() {
        let (_dir, store) = open().await;
        let new = new_pass(1, 1, "2026-11");
        issued(&store, new.clone()).await;
        let (verdict, _, _) = decided(store.record_entry(attempt("scan-1", pass_id(1))).await.unwrap());
        assert_eq!(verdict, Ok(()));
        let mut second = attempt("scan-2", pass_id(1));
        second.at += TimeDelta::minutes(1);
        let (verdict, _, _) = decided(store.record_entry(second).await.unwrap());
        assert_eq!(verdict, Err(Reason::AlreadyUsed));
        let verify_at = scan_time() + TimeDelta::minutes(2);
        store
            .record_audit(AuditRecord {
                at: verify_at,
                action: AuditAction::Verify,
                outcome: AuditOutcome::Rejected(Reason::AlreadyUsed),
                pass_id: Some(pass_id(1)),
                actor: actor("checkpoint-2", Role::Checkpoint, "192.0.2.3:40002"),
                request_key: None,
                checkpoint_id: Some("SZX-AIR-01".into()),
                mode: Some(TransportMode::Air),
                permit_masked: None,
            })
            .await
            .unwrap();
        store.revoke(pass_id(1), "fraud", verify_at, &admin()).await.unwrap();

        let entries = store.audit_trail(pass_id(1)).await.unwrap();
        let expected = vec![
            AuditEntry {
                seq: 1,
                at: new.pass.issued_at,
                action: AuditAction::Issue,
                outcome: AuditOutcome::Issued,
                pass_id: Some(pass_id(1)),
                caller: ISSUER.into(),
                role: Some(Role::Issuer),
                peer: Some("192.0.2.1:40001".parse().unwrap()),
                request_key: Some("request-1".into()),
                checkpoint_id: None,
                mode: None,
                permit_masked: Some("H1234****".into()),
            },
            AuditEntry {
                seq: 2,
                at: scan_time(),
                action: AuditAction::Admit,
                outcome: AuditOutcome::Accepted,
                pass_id: Some(pass_id(1)),
                caller: CHECKPOINT.into(),
                role: Some(Role::Checkpoint),
                peer: Some("[2001:db8::7]:40002".parse().unwrap()),
                request_key: Some("scan-1".into()),
                checkpoint_id: Some("SZ-LOWU-01".into()),
                mode: Some(TransportMode::Rail),
                permit_masked: None,
            },
            AuditEntry {
                seq: 3,
                at: scan_time() + TimeDelta::minutes(1),
                outcome: AuditOutcome::Rejected(Reason::AlreadyUsed),
                request_key: Some("scan-2".into()),
                ..entries[1].clone()
            },
            AuditEntry {
                seq: 4,
                at: verify_at,
                action: AuditAction::Verify,
                outcome: AuditOutcome::Rejected(Reason::AlreadyUsed),
                pass_id: Some(pass_id(1)),
                caller: "checkpoint-2".into(),
                role: Some(Role::Checkpoint),
                peer: Some("192.0.2.3:40002".parse().unwrap()),
                request_key: None,
                checkpoint_id: Some("SZX-AIR-01".into()),
                mode: Some(TransportMode::Air),
                permit_masked: None,
            },
            AuditEntry {
                seq: 5,
                at: verify_at,
                action: AuditAction::Revoke,
                outcome: AuditOutcome::Revoked,
                pass_id: Some(pass_id(1)),
                caller: "admin-1".into(),
                role: Some(Role::Admin),
                peer: Some("192.0.2.9:40003".parse().unwrap()),
                request_key: None,
                checkpoint_id: None,
                mode: None,
                permit_masked: None,
            },
        ];
        assert_eq!(entries, expected);
        assert_eq!(store.audit_trail(pass_id(2)).await.unwrap(), Vec::new());
    }

    #[tokio::test]
    async fn the_trail_is_in_time_order_even_when_a_row_is_written_late() {
        let (_dir, store) = open().await;
        issued(&store, new_pass(1, 1, "2026-11")).await;
        let (verdict, _, _) = decided(store.record_entry(attempt("scan-1", pass_id(1))).await.unwrap());
        assert_eq!(verdict, Ok(()));
        // A verification decided a minute before that entry, its row written only now.
        let verify = AuditRecord {
            at: scan_time() - TimeDelta::minutes(1),
            action: AuditAction::Verify,
            outcome: AuditOutcome::Accepted,
            pass_id: Some(pass_id(1)),
            actor: checkpoint(),
            request_key: None,
            checkpoint_id: Some("SZ-LOWU-01".into()),
            mode: Some(TransportMode::Rail),
            permit_masked: None,
        };
        store.record_audit(verify).await.unwrap();
        let actions: Vec<_> =
            store.audit_trail(pass_id(1)).await.unwrap().into_iter().map(|e| (e.action, e.seq)).collect();
        assert_eq!(actions, vec![(AuditAction::Issue, 1), (AuditAction::Verify, 3), (AuditAction::Admit, 2)]);
    }

    #[tokio::test]
    async fn refusals_are_audited_replays_are_not() {
        let (_dir, store) = open().await;
        let first = new_pass(1, 1, "2026-11");
        issued(&store, first.clone()).await;
        // A replay: no row.
        assert!(matches!(store.issue(first.clone(), LIMIT).await.unwrap(), IssueOutcome::Replayed(_)));
        // A request id reused for another application: a row, with no pass.
        let mut conflict = new_pass(2, 1, "2026-11");
        conflict.request_id = first.request_id.clone();
        assert_eq!(store.issue(conflict, LIMIT).await.unwrap(), IssueOutcome::RequestIdConflict);
        // The monthly limit: a row, with no pass.
        issued(&store, new_pass(3, 1, "2026-11")).await;
        assert_eq!(store.issue(new_pass(4, 1, "2026-11"), LIMIT).await.unwrap(), IssueOutcome::QuotaExhausted);
        // Revocations: not found, revoked, already revoked.
        store.revoke(pass_id(9), "lost", scan_time(), &admin()).await.unwrap();
        store.revoke(pass_id(1), "lost", scan_time(), &admin()).await.unwrap();
        store.revoke(pass_id(1), "lost", scan_time(), &admin()).await.unwrap();
        // Scans: rejected, resent (no row), scan id reused for another pass.
        let (verdict, _, _) = decided(store.record_entry(attempt("scan-1", pass_id(1))).await.unwrap());
        assert_eq!(verdict, Err(Reason::Revoked));
        let (_, _, replayed) = decided(store.record_entry(attempt("scan-1", pass_id(1))).await.unwrap());
        assert!(replayed);
        assert_eq!(store.record_entry(attempt("scan-1", pass_id(3))).await.unwrap(), EntryOutcome::ScanIdConflict);

        let id = |n| Some(pass_id(n).as_bytes().to_vec());
        let row = |action: &str, outcome: &str, pass| (action.to_owned(), outcome.to_owned(), pass);
        assert_eq!(
            audit_rows(&store).await,
            vec![
                row("issue", "issued", id(1)),
                row("issue", "request_id_conflict", None),
                row("issue", "issued", id(3)),
                row("issue", "quota_exhausted", None),
                row("revoke", "not_found", id(9)),
                row("revoke", "revoked", id(1)),
                row("revoke", "already_revoked", id(1)),
                row("admit", "rejected", id(1)),
                row("admit", "scan_id_conflict", id(3)),
            ]
        );
        let reason: Option<String> = sqlx::query_scalar("SELECT reason FROM audit WHERE outcome = 'rejected'")
            .fetch_one(&store.reader)
            .await
            .unwrap();
        assert_eq!(reason.as_deref(), Some("revoked"));
        assert_eq!(
            trail(&store, pass_id(1)).await,
            vec![
                (AuditAction::Issue, AuditOutcome::Issued, ISSUER.to_owned()),
                (AuditAction::Revoke, AuditOutcome::Revoked, "admin-1".to_owned()),
                (AuditAction::Revoke, AuditOutcome::AlreadyRevoked, "admin-1".to_owned()),
                (AuditAction::Admit, AuditOutcome::Rejected(Reason::Revoked), CHECKPOINT.to_owned()),
            ]
        );
    }

    #[tokio::test]
    async fn audit_rows_hold_no_permit_or_phone_number() {
        let (_dir, store) = open().await;
        issued(&store, new_pass(1, 1, "2026-11")).await;
        let (verdict, _, _) = decided(store.record_entry(attempt("scan-1", pass_id(1))).await.unwrap());
        assert_eq!(verdict, Ok(()));
        let columns: Vec<String> =
            sqlx::query_scalar("SELECT name FROM pragma_table_info('audit')").fetch_all(&store.reader).await.unwrap();
        assert!(columns.iter().all(|c| !c.contains("phone") && !c.contains("mobile")), "{columns:?}");
        assert!(columns.iter().filter(|c| c.contains("permit")).all(|c| c == "permit_masked"), "{columns:?}");
    }

    #[tokio::test]
    async fn a_change_that_fails_leaves_no_audit_row() {
        let (_dir, store) = open().await;
        issued(&store, new_pass(1, 1, "2026-11")).await;
        let far = at("2300-01-01T00:00:00Z");
        assert!(store.revoke(pass_id(1), "lost", far, &admin()).await.is_err());
        let mut late = attempt("scan-1", pass_id(1));
        late.at = far;
        assert!(store.record_entry(late).await.is_err());
        assert_eq!(audit_rows(&store).await.len(), 1);
    }

    #[tokio::test]
    async fn migration_keeps_earlier_rows_under_the_legacy_caller() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("epass.db");
        {
            // A database as the previous version left it: migrations 1 and 2, a pass used and
            // revoked, another scanned after the first entry.
            let options = SqliteConnectOptions::new().filename(&path).create_if_missing(true);
            let pool = SqlitePoolOptions::new().max_connections(1).connect_with(options).await.unwrap();
            let mut old = Migrator::DEFAULT;
            old.migrations = std::borrow::Cow::Owned(MIGRATOR.iter().filter(|m| m.version <= 2).cloned().collect());
            old.run(&pool).await.unwrap();
            let issued_at = nanos(at("2026-11-26T10:00:00Z")).unwrap();
            let used_at = nanos(scan_time()).unwrap();
            for n in [1u32, 2] {
                sqlx::query(
                    "INSERT INTO passes (pass_id, key_id, signature, permit_masked, issued_at, valid_from, \
                     valid_until, modes, entries_allowed, holder_key, quota_month, request_id, fingerprint) \
                     VALUES (?, ?, ?, 'H1234****', ?, ?, ?, 3, 1, ?, '2026-11', ?, ?)",
                )
                .bind(pass_id(n).as_bytes().to_vec())
                .bind(vec![7u8; 8])
                .bind(vec![0u8; 64])
                .bind(issued_at + i64::from(n))
                .bind(issued_at)
                .bind(issued_at + 7 * 86_400_000_000_000)
                .bind(vec![1u8; 32])
                .bind(format!("request-{n}"))
                .bind(vec![n as u8; 32])
                .execute(&pool)
                .await
                .unwrap();
            }
            sqlx::query(
                "UPDATE passes SET used_at = ?, used_checkpoint = 'SZ-LOWU-01', used_mode = 'rail', \
                 used_scan_id = 'scan-1', revoked_at = ?, revoke_reason = 'fraud' WHERE pass_id = ?",
            )
            .bind(used_at)
            .bind(used_at + 2)
            .bind(pass_id(1).as_bytes().to_vec())
            .execute(&pool)
            .await
            .unwrap();
            for (scan_id, verdict, offset) in [("scan-1", "admitted", 0), ("scan-2", "already_used", 1)] {
                sqlx::query(
                    "INSERT INTO scans (scan_id, pass_id, verdict, checkpoint_id, mode, scanned_at) \
                     VALUES (?, ?, ?, 'SZ-LOWU-01', 'rail', ?)",
                )
                .bind(scan_id)
                .bind(pass_id(1).as_bytes().to_vec())
                .bind(verdict)
                .bind(used_at + offset)
                .execute(&pool)
                .await
                .unwrap();
            }
            pool.close().await;
        }

        let store = SqliteStore::open(&path).await.unwrap();
        let record = store.pass(pass_id(1)).await.unwrap().unwrap();
        assert_eq!(record.entry.unwrap().scan_id, "scan-1");
        assert_eq!(record.revocation.unwrap().reason, "fraud");
        assert!(store.pass(pass_id(2)).await.unwrap().is_some());
        // The old idempotency keys belong to the legacy caller, and to nobody else.
        assert!(matches!(
            store.lookup_request(crate::store::LEGACY_CALLER, "request-1", &[1; 32]).await.unwrap(),
            RequestLookup::Replay(_)
        ));
        assert_eq!(store.lookup_request(ISSUER, "request-1", &[1; 32]).await.unwrap(), RequestLookup::New);
        let mut resent = attempt("scan-1", pass_id(1));
        resent.actor.caller.name = crate::store::LEGACY_CALLER.into();
        let (verdict, _, replayed) = decided(store.record_entry(resent).await.unwrap());
        assert_eq!((verdict, replayed), (Ok(()), true));
        let mut later = attempt("scan-1", pass_id(1));
        later.at += TimeDelta::hours(1);
        let (verdict, _, replayed) = decided(store.record_entry(later).await.unwrap());
        assert_eq!((verdict, replayed), (Err(Reason::Revoked), false));
        // The earlier history is in the trail, oldest first, from nobody known.
        let entries = store.audit_trail(pass_id(1)).await.unwrap();
        let summary: Vec<_> =
            entries.iter().map(|e| (e.action, e.outcome, e.caller.as_str(), e.role, e.peer)).collect();
        let legacy = crate::store::LEGACY_CALLER;
        assert_eq!(
            summary,
            vec![
                (AuditAction::Issue, AuditOutcome::Issued, legacy, None, None),
                (AuditAction::Admit, AuditOutcome::Accepted, legacy, None, None),
                (AuditAction::Admit, AuditOutcome::Rejected(Reason::AlreadyUsed), legacy, None, None),
                (AuditAction::Revoke, AuditOutcome::Revoked, legacy, None, None),
                (
                    AuditAction::Admit,
                    AuditOutcome::Rejected(Reason::Revoked),
                    CHECKPOINT,
                    Some(Role::Checkpoint),
                    checkpoint().peer
                ),
            ]
        );
        assert_eq!(entries[0].request_key.as_deref(), Some("request-1"));
        assert_eq!(entries[0].permit_masked.as_deref(), Some("H1234****"));
        assert_eq!(
            trail(&store, pass_id(2)).await,
            vec![(AuditAction::Issue, AuditOutcome::Issued, legacy.to_owned())]
        );
    }

    #[tokio::test]
    async fn probe_reports_a_held_write_lock_and_its_release() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("epass.db");
        let store = SqliteStore::open_with(&path, Duration::from_millis(100)).await.unwrap();
        store.probe_writable().await.unwrap();
        // Another connection, as another process would, holds the write lock.
        let mut holder =
            <sqlx::SqliteConnection as sqlx::Connection>::connect_with(&SqliteConnectOptions::new().filename(&path))
                .await
                .unwrap();
        sqlx::query("BEGIN EXCLUSIVE").execute(&mut holder).await.unwrap();
        assert!(matches!(store.probe_writable().await, Err(StoreError::Unavailable(_))));
        assert!(matches!(store.issue(new_pass(1, 1, "2026-11"), LIMIT).await, Err(StoreError::Unavailable(_))));
        // Reads go on (WAL).
        assert_eq!(store.pass(pass_id(1)).await.unwrap(), None);
        sqlx::query("ROLLBACK").execute(&mut holder).await.unwrap();
        store.probe_writable().await.unwrap();
        issued(&store, new_pass(1, 1, "2026-11")).await;
        // The probe changed nothing.
        assert_eq!(audit_rows(&store).await.len(), 1);
    }

    #[tokio::test]
    async fn read_only_store_reads_the_trail_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("epass.db");
        let store = SqliteStore::open(&path).await.unwrap();
        issued(&store, new_pass(1, 1, "2026-11")).await;
        // Next to the open server store.
        let reader = SqliteStore::open_read_only(&path).await.unwrap();
        assert_eq!(trail(&reader, pass_id(1)).await, trail(&store, pass_id(1)).await);
        assert!(matches!(reader.probe_writable().await, Err(StoreError::Unavailable(_))));
        assert!(matches!(reader.issue(new_pass(2, 2, "2026-11"), LIMIT).await, Err(StoreError::Unavailable(_))));
        reader.close().await;
        store.close().await;
        // No file: nothing is created.
        let missing = dir.path().join("missing.db");
        assert!(matches!(SqliteStore::open_read_only(&missing).await, Err(StoreError::Unavailable(_))));
        assert!(!missing.exists());
    }

    #[tokio::test]
    async fn read_only_store_refuses_an_outdated_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("epass.db");
        let options = SqliteConnectOptions::new().filename(&path).create_if_missing(true);
        let pool = SqlitePoolOptions::new().max_connections(1).connect_with(options).await.unwrap();
        let mut old = Migrator::DEFAULT;
        old.migrations = std::borrow::Cow::Owned(MIGRATOR.iter().filter(|m| m.version <= 2).cloned().collect());
        old.run(&pool).await.unwrap();
        pool.close().await;
        let error = SqliteStore::open_read_only(&path).await.unwrap_err();
        assert!(matches!(error, StoreError::Migration(sqlx::migrate::MigrateError::VersionTooNew(3, 2))), "{error:?}");
    }

    #[derive(Debug)]
    struct FakeSqliteError(i32);

    impl std::fmt::Display for FakeSqliteError {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "sqlite error {}", self.0)
        }
    }

    impl StdError for FakeSqliteError {}

    impl DatabaseError for FakeSqliteError {
        fn message(&self) -> &str {
            "fake"
        }
        fn code(&self) -> Option<Cow<'_, str>> {
            Some(self.0.to_string().into())
        }
        fn as_error(&self) -> &(dyn StdError + Send + Sync + 'static) {
            self
        }
        fn as_error_mut(&mut self) -> &mut (dyn StdError + Send + Sync + 'static) {
            self
        }
        fn into_error(self: Box<Self>) -> Box<dyn StdError + Send + Sync + 'static> {
            self
        }
        fn kind(&self) -> ErrorKind {
            ErrorKind::Other
        }
    }

    #[test]
    fn busy_full_and_readonly_are_unavailable_constraints_are_not() {
        let class = |code| classify(StoreError::Database(sqlx::Error::Database(Box::new(FakeSqliteError(code)))));
        // SQLITE_BUSY, SQLITE_BUSY_SNAPSHOT, SQLITE_LOCKED, SQLITE_READONLY, SQLITE_IOERR_FSYNC,
        // SQLITE_FULL, SQLITE_CANTOPEN.
        for code in [5, 517, 6, 8, 1034, 13, 14] {
            assert!(matches!(class(code), StoreError::Unavailable(_)), "code {code}");
        }
        // SQLITE_ERROR, SQLITE_CORRUPT, SQLITE_CONSTRAINT_UNIQUE.
        for code in [1, 11, 2067] {
            assert!(matches!(class(code), StoreError::Database(_)), "code {code}");
        }
        assert!(matches!(classify(StoreError::Database(sqlx::Error::PoolTimedOut)), StoreError::Unavailable(_)));
        assert!(matches!(classify(StoreError::Database(sqlx::Error::RowNotFound)), StoreError::Database(_)));
        assert!(matches!(classify(StoreError::Corrupt("x".into())), StoreError::Corrupt(_)));
    }

    #[test]
    fn names_round_trip() {
        for mode in
            [TransportMode::Air, TransportMode::Rail, TransportMode::Road, TransportMode::Sea, TransportMode::Foot]
        {
            assert_eq!(parse_mode(mode.name()), Some(mode));
        }
        assert_eq!(parse_mode("boat"), None);
        for verdict in Reason::ALL.map(Err).into_iter().chain([Ok(())]) {
            assert_eq!(parse_verdict(verdict_name(verdict)), Some(verdict));
        }
    }
}
