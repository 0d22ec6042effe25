//! PostgreSQL implementation of [`Store`]: one database shared by any number of servers.
//!
//! Every rule that must hold across servers is enforced by the database, never by a lock in
//! this process. Transactions run at READ COMMITTED, where a statement that waits for another
//! transaction's row lock re-reads that row once it commits; each rule is one such statement:
//!
//! - the quota: one upsert of the holder's counter row for the month that increments it only
//!   below the limit (`quota_counts`); its row lock makes concurrent issues take turns;
//! - one entry: one conditional update, used only if unused and unrevoked; a loser re-reads the
//!   pass and is refused with the winner's entry;
//! - idempotency: unique (caller, request_id) and (caller, scan_id); the loser of a race for a
//!   key inserts nothing, rolls back and asks again, and is answered as a replay;
//! - the status journal: numbered from a single counter row locked to commit, so numbers are
//!   gap-free and commit in order (the migration explains why a reader needs that).
//!
//! Serialization failures and deadlocks, which these statements should not cause but the
//! database may report, are retried a bounded number of times ([`ATTEMPTS`]) before the call
//! fails with [`StoreError::Unavailable`]. A transaction that failed otherwise is never
//! retried: a lost connection at commit leaves it unknown whether the commit happened.
//!
//! Writes and reads use separate pools, so a read (verification) never waits for a pooled
//! connection held by writes that may stall.
//!
//! This file opens the store (pools, migrations, the schema version check), classifies errors,
//! retries, and implements [`Store`] by delegating to the transaction bodies in `queries.rs`;
//! `rows.rs` reads rows back. The behaviour every backend shares is tested in
//! `store::behaviour`, from `tests.rs`, next to the tests that only PostgreSQL has.

mod prune;
mod queries;
#[doc(hidden)]
pub mod test_support;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rand::Rng;
use sqlx::migrate::{MigrateError, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use super::{
    Actor, AuditEntry, AuditRecord, EntryAttempt, EntryOutcome, IssueOutcome, NewPass, OfflineBatch, PassRecord,
    PruneKind, RequestLookup, RevokeOutcome, StatusEvents, Store, StoreError, SyncRefusal, SyncedEntry,
};
use epass_core::ids::PassId;
use queries::{fetch_pass, fetch_request, quota_count};

static MIGRATOR: Migrator = sqlx::migrate!("migrations/postgres");

/// How many times a transaction is tried when the database reports a serialization failure or
/// a deadlock (which roll it back whole), or when it lost a race for an idempotency key and
/// must read the winner's row.
const ATTEMPTS: u32 = 5;

/// How a [`PostgresStore`] connects: pool sizes and how long to wait.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresSettings {
    /// Connections for writes (issue, revoke, entries, audit rows, the probe).
    pub max_connections: u32,
    /// Connections for reads (lookups, verification, status lists, the audit trail), apart
    /// from the writes' so that a read never waits for a write's connection.
    pub read_connections: u32,
    /// How long a call waits for a pooled connection (or a new one) before it fails with
    /// [`StoreError::Unavailable`].
    pub acquire_timeout: Duration,
    /// How long one statement may run, lock waits included, before the database cancels it
    /// and the call fails with [`StoreError::Unavailable`]. Whole milliseconds; zero: no limit.
    /// Migrations are not limited.
    pub statement_timeout: Duration,
}

impl Default for PostgresSettings {
    fn default() -> Self {
        Self {
            max_connections: 10,
            read_connections: 4,
            acquire_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(5),
        }
    }
}

/// The database's schema was migrated by a newer build: this one refuses to run on it (it
/// could not read or write it correctly) and never migrates it down. Reported as
/// [`StoreError::Migration`] with [`MigrateError::Source`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "the database schema is at version {database}, newer than version {known}, the newest this build of epass \
     knows: run a newer epass against this database"
)]
pub struct SchemaTooNew {
    /// The newest migration applied to the database.
    pub database: i64,
    /// The newest migration this build has.
    pub known: i64,
}

/// The PostgreSQL store. Cloning is cheap and shares the pools.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    /// Connections for write transactions.
    writer: PgPool,
    /// Connections for reads outside write transactions; read-only sessions.
    reader: PgPool,
}

/// What one try of a transaction came to.
enum Attempt<T> {
    /// Committed (or rolled back with nothing to change): the answer.
    Done(T),
    /// Another transaction holds the idempotency key this one tried to insert; this one rolled
    /// back and must ask again to read the other's row.
    LostRace,
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://user@host:port/database`), brings its
    /// schema up to date (under the migrator's advisory lock, so servers starting together
    /// take turns), and opens the pools. Fails with a [`SchemaTooNew`] migration error if a
    /// newer build has migrated the database.
    pub async fn connect(url: &str, settings: PostgresSettings) -> Result<Self, StoreError> {
        Self::connect_inner(url, &settings).await.map_err(classify)
    }

    /// Brings the schema of the database at `url` up to date without opening a store, for an
    /// operator who migrates before rolling out servers; returns the schema version now in
    /// force. Refuses a database migrated by a newer build, as [`PostgresStore::connect`] does.
    pub async fn migrate(url: &str) -> Result<i64, StoreError> {
        async {
            let options: PgConnectOptions = url.parse()?;
            migrate_with(options, PostgresSettings::default().acquire_timeout).await
        }
        .await
        .map_err(classify)
    }

    async fn connect_inner(url: &str, settings: &PostgresSettings) -> Result<Self, StoreError> {
        let options: PgConnectOptions = url.parse()?;
        let options = options.application_name("epass");
        migrate_with(options.clone(), settings.acquire_timeout).await?;
        let statement_timeout = ("statement_timeout", settings.statement_timeout.as_millis());
        let writer = PgPoolOptions::new()
            .max_connections(settings.max_connections)
            .acquire_timeout(settings.acquire_timeout)
            .connect_with(options.clone().options([statement_timeout]))
            .await?;
        // A write through the reader fails instead of escaping the transactions written here.
        let reader = PgPoolOptions::new()
            .max_connections(settings.read_connections)
            .acquire_timeout(settings.acquire_timeout)
            .connect_with(options.options([statement_timeout]).options([("default_transaction_read_only", "on")]))
            .await?;
        Ok(Self { writer, reader })
    }

    /// Closes every connection, waiting for those in use to be returned. Calls made after
    /// this fail with [`StoreError::Unavailable`].
    pub async fn close(&self) {
        self.reader.close().await;
        self.writer.close().await;
    }

    /// How many passes count against the holder's quota in the month (what `issue` counts).
    pub async fn passes_in_month(&self, holder_key: &[u8; 32], quota_month: &str) -> Result<u32, StoreError> {
        let count = quota_count(&self.reader, holder_key, quota_month).await.map_err(classify)?;
        u32::try_from(count).map_err(|_| StoreError::Corrupt(format!("pass count {count} out of range")))
    }
}

/// Checks the schema version and migrates, on a connection of its own without the statement
/// timeout (a migration may take long); returns the version now in force.
async fn migrate_with(options: PgConnectOptions, acquire_timeout: Duration) -> Result<i64, StoreError> {
    let pool = PgPoolOptions::new().max_connections(1).acquire_timeout(acquire_timeout).connect_with(options).await?;
    let result = async {
        let known = newest_known();
        if let Some(database) = applied_version(&pool).await? {
            if database > known {
                return Err(schema_too_new(database, known));
            }
        }
        // Another server may have migrated past this build since the check above: the migrator
        // then finds an applied version it does not have.
        MIGRATOR.run(&pool).await.map_err(|err| refuse_newer(err, known))?;
        Ok(applied_version(&pool).await?.unwrap_or(0))
    }
    .await;
    pool.close().await;
    result
}

/// The newest migration this build has.
fn newest_known() -> i64 {
    MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0)
}

/// The newest migration applied to the database, failed or not; `None` before the first.
async fn applied_version(pool: &PgPool) -> Result<Option<i64>, StoreError> {
    let migrated: bool =
        sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL").fetch_one(pool).await?;
    if !migrated {
        return Ok(None);
    }
    Ok(sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations").fetch_one(pool).await?)
}

/// A migration error, or [`SchemaTooNew`] if it says that the database has a migration newer
/// than `known`.
fn refuse_newer(err: MigrateError, known: i64) -> StoreError {
    match err {
        MigrateError::VersionMissing(database) if database > known => schema_too_new(database, known),
        err => StoreError::Migration(err),
    }
}

fn schema_too_new(database: i64, known: i64) -> StoreError {
    StoreError::Migration(MigrateError::Source(Box::new(SchemaTooNew { database, known })))
}

/// Runs a transaction until it is done: again after a serialization failure or a deadlock
/// (the database rolled it back whole), after a short random pause so that the transactions
/// that collided do not collide again; again at once after it lost the race for an idempotency
/// key. At most [`ATTEMPTS`] tries; errors come back classified.
async fn retrying<T, F, Fut>(mut attempt: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Attempt<T>, StoreError>>,
{
    let mut tries = 0;
    loop {
        tries += 1;
        match attempt().await {
            Ok(Attempt::Done(value)) => return Ok(value),
            Ok(Attempt::LostRace) if tries < ATTEMPTS => {}
            Ok(Attempt::LostRace) => {
                // The winner's row is committed before the loser gives up its insert, and
                // never deleted: the next try reads it. Not finding it is not a race.
                return Err(StoreError::Corrupt(format!(
                    "an idempotency key was taken by another transaction {ATTEMPTS} times and never read back"
                )));
            }
            Err(StoreError::Database(err)) if must_retry(&err) && tries < ATTEMPTS => {
                let pause = rand::thread_rng().gen_range(1..=10 * u64::from(tries));
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
            Err(err) => return Err(classify(err)),
        }
    }
}

#[async_trait]
impl Store for PostgresStore {
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
        retrying(|| self.issue_once(&new, monthly_limit)).await
    }

    async fn pass(&self, pass_id: PassId) -> Result<Option<PassRecord>, StoreError> {
        async { fetch_pass(&mut *self.reader.acquire().await?, pass_id).await }.await.map_err(classify)
    }

    async fn revoke(
        &self,
        pass_id: PassId,
        reason: &str,
        at: DateTime<Utc>,
        actor: &Actor,
    ) -> Result<RevokeOutcome, StoreError> {
        retrying(|| self.revoke_once(pass_id, reason, at, actor)).await
    }

    async fn record_entry(&self, attempt: EntryAttempt) -> Result<EntryOutcome, StoreError> {
        retrying(|| self.record_entry_once(&attempt)).await
    }

    async fn sync_offline_entries(
        &self,
        batch: OfflineBatch,
    ) -> Result<Result<Vec<SyncedEntry>, SyncRefusal>, StoreError> {
        retrying(|| self.sync_offline_entries_once(&batch)).await
    }

    async fn status_events(&self, after: u64, now: DateTime<Utc>) -> Result<StatusEvents, StoreError> {
        retrying(|| self.status_events_once(after, now)).await
    }

    async fn record_audits(&self, records: Vec<AuditRecord>) -> Result<(), StoreError> {
        retrying(|| self.record_audits_once(&records)).await
    }

    async fn audit_trail(&self, pass_id: PassId) -> Result<Vec<AuditEntry>, StoreError> {
        self.audit_trail_inner(pass_id).await.map_err(classify)
    }

    async fn probe_writable(&self) -> Result<(), StoreError> {
        self.probe_writable_inner().await.map_err(classify)
    }

    async fn prune(&self, kind: PruneKind, cutoff: DateTime<Utc>, limit: u32) -> Result<u64, StoreError> {
        retrying(|| self.prune_once(kind, cutoff, limit)).await
    }
}

/// The SQLSTATE of an error the database reported, if it is one.
fn sqlstate(err: &sqlx::Error) -> Option<String> {
    match err {
        sqlx::Error::Database(db) => db.code().map(|code| code.into_owned()),
        _ => None,
    }
}

/// A serialization failure or a deadlock: the database rolled the transaction back whole, and
/// trying it again is safe and may succeed.
fn must_retry(err: &sqlx::Error) -> bool {
    sqlstate(err).is_some_and(|code| matches!(code.as_str(), SERIALIZATION_FAILURE | DEADLOCK_DETECTED))
}

/// `40001`: a concurrent transaction changed what this one read or wrote.
const SERIALIZATION_FAILURE: &str = "40001";
/// `40P01`: this transaction was chosen to break a deadlock.
const DEADLOCK_DETECTED: &str = "40P01";

/// `?` turns every sqlx error into [`StoreError::Database`]; this picks out those that mean the
/// database cannot be reached or written for now, which callers answer with `unavailable`.
fn classify(err: StoreError) -> StoreError {
    match err {
        // disk_full: said apart, as SQLite's SQLITE_FULL is.
        StoreError::Database(err) if sqlstate(&err).as_deref() == Some("53100") => StoreError::DiskFull(err),
        StoreError::Database(err) if unavailable(&err) => StoreError::Unavailable(err),
        // Migrations run on a connection too: losing it, or finding the database read-only, is
        // no fault of the migration.
        StoreError::Migration(MigrateError::Execute(err)) if unavailable(&err) => StoreError::Unavailable(err),
        err => err,
    }
}

fn unavailable(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_) => true,
        // PostgreSQL error codes (https://www.postgresql.org/docs/current/errcodes-appendix.html).
        sqlx::Error::Database(_) => sqlstate(err).is_some_and(|code| {
            let class = code.get(..2).unwrap_or_default();
            // 08: connection exception; 53: insufficient resources (disk full, out of memory,
            // too many connections); 58: system error (I/O).
            matches!(class, "08" | "53" | "58")
                || matches!(
                    code.as_str(),
                    // Retried until the attempts ran out.
                    SERIALIZATION_FAILURE
                        | DEADLOCK_DETECTED
                        // query_canceled: the statement timeout, usually waiting for a lock.
                        | "57014"
                        // admin_shutdown, crash_shutdown, cannot_connect_now, database_dropped.
                        | "57P01"
                        | "57P02"
                        | "57P03"
                        | "57P04"
                        // lock_not_available (lock_timeout, NOWAIT).
                        | "55P03"
                        // read_only_sql_transaction: a standby, or the database set read-only.
                        | "25006"
                        // invalid_catalog_name: the database is gone.
                        | "3D000"
                        // object_not_in_prerequisite_state: what a connection gets from a
                        // database that accepts none now (ALTER DATABASE ... ALLOW_CONNECTIONS
                        // false); epass runs no statement that raises it otherwise.
                        | "55000"
                )
        }),
        _ => false,
    }
}
