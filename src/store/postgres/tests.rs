//! The PostgreSQL store's tests, each on a scratch database of its own
//! ([`super::test_support`]): the shared behaviour suite ([`crate::store::behaviour`]), and
//! what only PostgreSQL has: two stores on one database standing in for two servers racing
//! for the quota, one entry, one idempotency key and the journal's numbers; the schema version
//! check; retries; timeouts, a read-only database and an unreachable server; the
//! classification of PostgreSQL error codes.
//!
//! Without a server (and without `EPASS_TEST_POSTGRES`) each test prints that it is skipped and
//! passes.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashSet};
use std::error::Error as StdError;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::error::{DatabaseError, ErrorKind};
use sqlx::migrate::MigrateError;
use tokio::sync::Barrier;

use super::test_support::ScratchDatabase;
use super::{
    classify, newest_known, refuse_newer, retrying, Attempt, PostgresSettings, PostgresStore, SchemaTooNew, ATTEMPTS,
};
use crate::store::behaviour::{
    admin, at, attempt, audit_rows, checkpoint, decided, issued, new_pass, pass_id, scan_time, TestBackend, LIMIT,
};
use crate::store::rows::AuditEntryRow;
use crate::store::{
    AuditAction, AuditEntry, AuditOutcome, AuditRecord, EntryOutcome, IssueOutcome, RevokeOutcome, Store, StoreError,
};
use epass_core::status::PassEvent;
use epass_core::verify::Reason;

/// A scratch database and a store on it; `None` when the test is skipped.
async fn open() -> Option<(ScratchDatabase, PostgresStore)> {
    open_with(PostgresSettings::default()).await
}

async fn open_with(settings: PostgresSettings) -> Option<(ScratchDatabase, PostgresStore)> {
    let database = ScratchDatabase::create().await?;
    let store = PostgresStore::connect(database.url(), settings).await.unwrap();
    Some((database, store))
}

/// Another server's store on the same database: pools of its own.
async fn replica(database: &ScratchDatabase) -> PostgresStore {
    PostgresStore::connect(database.url(), PostgresSettings::default()).await.unwrap()
}

// The macro awaits this block's value in each test's body, so the `return` of a skipped test
// leaves the test itself.
crate::store::behaviour::store_behaviour_tests!({
    let Some(opened) = open().await else { return };
    std::future::ready(opened)
});

#[async_trait]
impl TestBackend for PostgresStore {
    async fn close(&self) {
        PostgresStore::close(self).await;
    }

    async fn passes_in_month(&self, holder_key: &[u8; 32], quota_month: &str) -> Result<u32, StoreError> {
        PostgresStore::passes_in_month(self, holder_key, quota_month).await
    }

    async fn all_audit_entries(&self) -> Vec<AuditEntry> {
        let rows: Vec<AuditEntryRow> = sqlx::query_as(
            "SELECT seq, at, action, outcome, reason, pass_id, caller, role, peer, request_key, checkpoint_id, \
             mode, permit_masked FROM audit ORDER BY seq",
        )
        .fetch_all(&self.reader)
        .await
        .unwrap();
        rows.into_iter().map(|row| row.into_entry().unwrap()).collect()
    }

    async fn audit_columns(&self) -> Vec<String> {
        sqlx::query_scalar(
            "SELECT column_name::TEXT FROM information_schema.columns \
             WHERE table_schema = current_schema() AND table_name = 'audit' ORDER BY ordinal_position",
        )
        .fetch_all(&self.reader)
        .await
        .unwrap()
    }

    async fn scan_count(&self) -> u64 {
        let scans: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM scans").fetch_one(&self.reader).await.unwrap();
        u64::try_from(scans).unwrap()
    }

    /// Past 2262, the last year that Unix nanoseconds in a BIGINT reach.
    fn unstorable_time() -> DateTime<Utc> {
        at("2300-01-01T00:00:00Z")
    }
}

/// One count of the database, for the assertions.
async fn count(store: &PostgresStore, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(&store.reader).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_servers_never_exceed_the_quota() {
    let Some((database, first)) = open().await else { return };
    let second = replica(&database).await;
    let start = Arc::new(Barrier::new(40));
    let tasks: Vec<_> = (0..40)
        .map(|n| {
            let store = if n % 2 == 0 { first.clone() } else { second.clone() };
            let start = Arc::clone(&start);
            tokio::spawn(async move {
                start.wait().await;
                store.issue(new_pass(n, 1, "2026-11"), LIMIT).await.unwrap()
            })
        })
        .collect();
    let (mut issued_count, mut exhausted) = (0, 0);
    for task in tasks {
        match task.await.unwrap() {
            IssueOutcome::Issued(_) => issued_count += 1,
            IssueOutcome::QuotaExhausted => exhausted += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((issued_count, exhausted), (2, 38));
    // The counter and the passes agree.
    assert_eq!(first.passes_in_month(&[1; 32], "2026-11").await.unwrap(), 2);
    assert_eq!(count(&first, "SELECT COUNT(*) FROM passes").await, 2);
    assert_eq!(count(&first, "SELECT COUNT(*) FROM audit WHERE outcome = 'issued'").await, 2);
    assert_eq!(count(&first, "SELECT COUNT(*) FROM audit WHERE outcome = 'quota_exhausted'").await, 38);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_servers_admit_a_pass_once() {
    let Some((database, first)) = open().await else { return };
    let second = replica(&database).await;
    issued(&first, new_pass(1, 1, "2026-11")).await;
    let start = Arc::new(Barrier::new(30));
    let tasks: Vec<_> = (0..30)
        .map(|n| {
            let store = if n % 2 == 0 { first.clone() } else { second.clone() };
            let start = Arc::clone(&start);
            tokio::spawn(async move {
                start.wait().await;
                store.record_entry(attempt(&format!("scan-{n}"), pass_id(1))).await.unwrap()
            })
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
    assert_eq!(first.scan_count().await, 30);
    let events = second.status_events(0, scan_time()).await.unwrap();
    assert_eq!((events.sequence, events.entries.len()), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_request_id_sent_to_two_servers_is_one_pass() {
    let Some((database, first)) = open().await else { return };
    let second = replica(&database).await;
    for n in 0..10u32 {
        let new = new_pass(n, n as u8, "2026-11");
        // A retry signs a fresh pass id.
        let mut retry = new.clone();
        retry.pass.pass_id = pass_id(1000 + n);
        let start = Arc::new(Barrier::new(2));
        let tasks: Vec<_> = [(first.clone(), new), (second.clone(), retry)]
            .into_iter()
            .map(|(store, new)| {
                let start = Arc::clone(&start);
                tokio::spawn(async move {
                    start.wait().await;
                    store.issue(new, LIMIT).await.unwrap()
                })
            })
            .collect();
        let mut outcomes = Vec::new();
        for task in tasks {
            outcomes.push(task.await.unwrap());
        }
        let (issued_record, replayed_record) = match (&outcomes[0], &outcomes[1]) {
            (IssueOutcome::Issued(a), IssueOutcome::Replayed(b))
            | (IssueOutcome::Replayed(b), IssueOutcome::Issued(a)) => (a, b),
            other => panic!("round {n}: expected one issued and one replayed, got {other:?}"),
        };
        assert_eq!(issued_record, replayed_record, "round {n}");
        assert_eq!(first.passes_in_month(&[n as u8; 32], "2026-11").await.unwrap(), 1, "round {n}");
    }
    assert_eq!(count(&first, "SELECT COUNT(*) FROM passes").await, 10);
    // A replay writes no audit row.
    assert_eq!(count(&first, "SELECT COUNT(*) FROM audit").await, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_scan_id_sent_to_two_servers_is_one_entry() {
    let Some((database, first)) = open().await else { return };
    let second = replica(&database).await;
    for n in 0..10u32 {
        issued(&first, new_pass(n, n as u8, "2026-11")).await;
        let start = Arc::new(Barrier::new(2));
        let tasks: Vec<_> = [first.clone(), second.clone()]
            .into_iter()
            .map(|store| {
                let start = Arc::clone(&start);
                tokio::spawn(async move {
                    start.wait().await;
                    store.record_entry(attempt(&format!("scan-{n}"), pass_id(n))).await.unwrap()
                })
            })
            .collect();
        let mut answers = Vec::new();
        for task in tasks {
            answers.push(decided(task.await.unwrap()));
        }
        let replays: Vec<bool> = answers.iter().map(|(_, _, replayed)| *replayed).collect();
        assert!(replays.contains(&true) && replays.contains(&false), "round {n}: {replays:?}");
        for (verdict, record, _) in &answers {
            assert_eq!(*verdict, Ok(()), "round {n}");
            assert_eq!(record, &answers[0].1, "round {n}");
        }
    }
    assert_eq!(first.scan_count().await, 10);
    assert_eq!(count(&first, "SELECT COUNT(*) FROM audit WHERE action = 'admit'").await, 10);
    assert_eq!(first.status_events(0, scan_time()).await.unwrap().sequence, 10);
}

/// The journal's numbers as readers see them while revocations and entries commit on two
/// servers: a reader that asks for the events after the last sequence it saw must never be
/// handed n + 1 while n is still uncommitted, or it would never ask for n again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn journal_readers_never_see_a_gap() {
    const EVENTS: u32 = 120;
    let Some((database, first)) = open().await else { return };
    let second = replica(&database).await;
    let reader = replica(&database).await;
    for n in 0..EVENTS {
        // A holder each, so that no application is refused.
        let mut new = new_pass(n, 1, "2026-11");
        new.holder_key[..4].copy_from_slice(&n.to_be_bytes());
        issued(&first, new).await;
    }
    let writing = Arc::new(AtomicBool::new(true));
    let polling = {
        let writing = Arc::clone(&writing);
        tokio::spawn(async move {
            let (mut after, mut seen, mut polls) = (0u64, Vec::new(), 0u32);
            loop {
                let done = !writing.load(Ordering::SeqCst);
                // Through the store: as many events as the sequence moved on.
                let events = reader.status_events(after, scan_time()).await.unwrap();
                assert!(events.sequence >= after);
                assert_eq!(events.entries.len() as u64, events.sequence - after, "after {after}");
                // And the numbers themselves, as any one statement sees them.
                let seqs: Vec<i64> = sqlx::query_scalar("SELECT seq FROM status_events WHERE seq > $1 ORDER BY seq")
                    .bind(after as i64)
                    .fetch_all(&reader.reader)
                    .await
                    .unwrap();
                let expected: Vec<i64> = (after as i64 + 1..).take(seqs.len()).collect();
                assert_eq!(seqs, expected, "after {after}");
                seen.extend(events.entries.into_iter().map(|e| (e.pass_id, e.event)));
                after = events.sequence;
                polls += 1;
                if done {
                    return (after, seen, polls);
                }
            }
        })
    };
    let start = Arc::new(Barrier::new(EVENTS as usize));
    let tasks: Vec<_> = (0..EVENTS)
        .map(|n| {
            let store = if n % 2 == 0 { first.clone() } else { second.clone() };
            let start = Arc::clone(&start);
            tokio::spawn(async move {
                start.wait().await;
                if n % 3 == 0 {
                    let outcome = store.revoke(pass_id(n), "lost", scan_time(), &admin()).await.unwrap();
                    assert!(matches!(outcome, RevokeOutcome::Revoked(_)));
                } else {
                    let (verdict, _, _) =
                        decided(store.record_entry(attempt(&format!("scan-{n}"), pass_id(n))).await.unwrap());
                    assert_eq!(verdict, Ok(()));
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    writing.store(false, Ordering::SeqCst);
    let (sequence, seen, polls) = polling.await.unwrap();
    assert_eq!(sequence, u64::from(EVENTS));
    assert!(polls > 1, "the reader polled while the writers wrote");
    let ids: BTreeSet<_> = seen.iter().map(|(id, _)| *id).collect();
    assert_eq!((seen.len(), ids.len()), (EVENTS as usize, EVENTS as usize), "every event once");
    let revoked = seen.iter().filter(|(_, event)| *event == PassEvent::Revoked).count();
    assert_eq!(revoked, (0..EVENTS).filter(|n| n % 3 == 0).count());
}

#[tokio::test]
async fn a_newer_schema_is_refused() {
    let Some((database, store)) = open().await else { return };
    let known = newest_known();
    // A later build's migration.
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES ($1, 'from a later build', TRUE, '\\x00', 0)",
    )
    .bind(known + 1)
    .execute(&store.writer)
    .await
    .unwrap();
    let expected = SchemaTooNew { database: known + 1, known };
    for error in [
        PostgresStore::connect(database.url(), PostgresSettings::default()).await.unwrap_err(),
        PostgresStore::migrate(database.url()).await.unwrap_err(),
    ] {
        let StoreError::Migration(MigrateError::Source(source)) = &error else {
            panic!("expected a migration error, got {error:?}");
        };
        assert_eq!(source.downcast_ref::<SchemaTooNew>(), Some(&expected));
        let message = error.to_string();
        assert!(message.contains(&format!("version {}", known + 1)) && message.contains(&format!("version {known}")));
    }
    // What another server's migrator reports after it passed the check: the same refusal.
    let error = refuse_newer(MigrateError::VersionMissing(known + 1), known);
    assert!(matches!(&error, StoreError::Migration(MigrateError::Source(s)) if s.is::<SchemaTooNew>()), "{error:?}");
    assert!(matches!(
        refuse_newer(MigrateError::VersionMissing(known), known),
        StoreError::Migration(MigrateError::VersionMissing(_))
    ));
}

#[tokio::test]
async fn migrate_brings_an_empty_database_up_to_date_once() {
    let Some(database) = ScratchDatabase::create().await else { return };
    assert_eq!(PostgresStore::migrate(database.url()).await.unwrap(), newest_known());
    assert_eq!(PostgresStore::migrate(database.url()).await.unwrap(), newest_known());
    let store = PostgresStore::connect(database.url(), PostgresSettings::default()).await.unwrap();
    issued(&store, new_pass(1, 1, "2026-11")).await;
    store.close().await;
    database.drop_database().await;
}

/// A real serialization failure: a REPEATABLE READ transaction updates a row that another
/// transaction changed and committed after its snapshot.
async fn serialization_failure(store: &PostgresStore) -> Result<Attempt<u32>, StoreError> {
    let mut tx = store.writer.begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ").await?;
    sqlx::query("SELECT last FROM status_sequence").fetch_one(&mut *tx).await?;
    sqlx::query("UPDATE status_sequence SET last = last").execute(&store.writer).await?;
    sqlx::query("UPDATE status_sequence SET last = last").execute(&mut *tx).await?;
    unreachable!("the update of a row changed since the snapshot must fail");
}

#[tokio::test]
async fn serialization_failures_are_retried_then_unavailable() {
    let Some((_database, store)) = open().await else { return };
    let store = &store;
    let tries = &AtomicU32::new(0);
    let answer = retrying(move || async move {
        let n = tries.fetch_add(1, Ordering::SeqCst) + 1;
        if n < 3 {
            serialization_failure(store).await
        } else {
            Ok(Attempt::Done(n))
        }
    })
    .await
    .unwrap();
    assert_eq!(answer, 3);

    let tries = &AtomicU32::new(0);
    let error = retrying(move || async move {
        tries.fetch_add(1, Ordering::SeqCst);
        serialization_failure(store).await
    })
    .await
    .unwrap_err();
    assert_eq!(tries.load(Ordering::SeqCst), ATTEMPTS);
    let StoreError::Unavailable(sqlx::Error::Database(db)) = &error else {
        panic!("expected unavailable, got {error:?}");
    };
    assert_eq!(db.code().as_deref(), Some("40001"));
}

#[tokio::test]
async fn a_stalled_write_times_out_as_unavailable_and_changes_nothing() {
    let settings = PostgresSettings { statement_timeout: Duration::from_millis(300), ..PostgresSettings::default() };
    let Some((_database, store)) = open_with(settings).await else { return };
    issued(&store, new_pass(1, 1, "2026-11")).await;
    // Another connection holds the journal's counter row.
    let mut holder = store.writer.begin().await.unwrap();
    sqlx::query("SELECT last FROM status_sequence FOR UPDATE").fetch_one(&mut *holder).await.unwrap();
    let error = store.revoke(pass_id(1), "lost", scan_time(), &admin()).await.unwrap_err();
    assert!(
        matches!(&error, StoreError::Unavailable(sqlx::Error::Database(db)) if db.code().as_deref() == Some("57014")),
        "{error:?}"
    );
    // Reads go on.
    assert_eq!(store.pass(pass_id(1)).await.unwrap().unwrap().revocation, None);
    holder.rollback().await.unwrap();
    assert_eq!(audit_rows(&store).await.len(), 1);
    assert!(matches!(
        store.revoke(pass_id(1), "lost", scan_time(), &admin()).await.unwrap(),
        RevokeOutcome::Revoked(_)
    ));
    assert_eq!(store.status_events(0, scan_time()).await.unwrap().sequence, 1);
}

async fn execute(conn: &mut sqlx::PgConnection, sql: &str) {
    sqlx::query(sql).execute(conn).await.unwrap();
}

#[tokio::test]
async fn probe_follows_a_database_set_read_only() {
    let Some((database, store)) = open().await else { return };
    store.probe_writable().await.unwrap();
    // The administrator's session, read-write to the end.
    let mut admin: sqlx::PgConnection = sqlx::Connection::connect(database.url()).await.unwrap();
    // New sessions are read-only, and the store's sessions are ended: it opens new ones.
    let terminate = format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{}' AND pid <> pg_backend_pid()",
        database.name()
    );
    execute(&mut admin, &format!("ALTER DATABASE {} SET default_transaction_read_only = on", database.name())).await;
    execute(&mut admin, &terminate).await;
    let error = store.probe_writable().await.unwrap_err();
    assert!(matches!(error, StoreError::Unavailable(_)), "{error:?}");
    let error = store.issue(new_pass(1, 1, "2026-11"), LIMIT).await.unwrap_err();
    assert!(matches!(error, StoreError::Unavailable(_)), "{error:?}");
    // Reads go on.
    assert_eq!(store.pass(pass_id(1)).await.unwrap(), None);
    execute(&mut admin, &format!("ALTER DATABASE {} RESET default_transaction_read_only", database.name())).await;
    execute(&mut admin, &terminate).await;
    store.probe_writable().await.unwrap();
    issued(&store, new_pass(1, 1, "2026-11")).await;
    // The probes changed nothing.
    assert_eq!(count(&store, "SELECT COUNT(*) FROM write_probe").await, 0);
    assert_eq!(audit_rows(&store).await.len(), 1);
}

#[tokio::test]
async fn unreachable_server_is_unavailable() {
    let settings = PostgresSettings { acquire_timeout: Duration::from_millis(500), ..PostgresSettings::default() };
    // Port 1: nothing listens there.
    let error = PostgresStore::connect("postgres://postgres@127.0.0.1:1/epass", settings.clone()).await.unwrap_err();
    assert!(matches!(error, StoreError::Unavailable(_)), "{error:?}");
    // A setting that cannot work is no outage.
    let error =
        PostgresStore::connect("postgres://postgres@127.0.0.1:1/epass?sslmode=sometimes", settings).await.unwrap_err();
    assert!(matches!(error, StoreError::Database(_)), "{error:?}");
}

#[tokio::test]
async fn unreadable_row_is_reported_as_corrupt() {
    let Some((_database, store)) = open().await else { return };
    issued(&store, new_pass(1, 1, "2026-11")).await;
    sqlx::query("UPDATE passes SET modes = 4").execute(&store.writer).await.unwrap();
    assert!(matches!(store.pass(pass_id(1)).await, Err(StoreError::Corrupt(_))));
}

#[tokio::test]
async fn a_batch_of_audit_rows_is_written_whole_and_in_order() {
    let Some((_database, store)) = open().await else { return };
    let record = |n: u32, outcome| AuditRecord {
        at: scan_time(),
        action: AuditAction::Verify,
        outcome,
        pass_id: (n % 2 == 0).then(|| pass_id(n)),
        actor: checkpoint(),
        request_key: None,
        checkpoint_id: Some(format!("gate-{n}")),
        mode: None,
        permit_masked: None,
    };
    let records: Vec<_> = (0..300)
        .map(|n| record(n, if n % 3 == 0 { AuditOutcome::Accepted } else { AuditOutcome::Rejected(Reason::Expired) }))
        .collect();
    store.record_audits(records.clone()).await.unwrap();
    let entries = store.all_audit_entries().await;
    assert_eq!(entries.len(), 300);
    for (entry, record) in entries.iter().zip(&records) {
        assert_eq!(
            (entry.outcome, entry.pass_id, &entry.checkpoint_id, entry.peer),
            (record.outcome, record.pass_id, &record.checkpoint_id, record.actor.peer)
        );
    }
    // A row that cannot be stored fails the batch, and none of it is written.
    let mut bad = records;
    bad[7].at = <PostgresStore as TestBackend>::unstorable_time();
    assert!(matches!(store.record_audits(bad).await, Err(StoreError::Database(_))));
    assert_eq!(store.all_audit_entries().await.len(), 300);
}

#[derive(Debug)]
struct FakePgError(&'static str);

impl std::fmt::Display for FakePgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "postgres error {}", self.0)
    }
}

impl StdError for FakePgError {}

impl DatabaseError for FakePgError {
    fn message(&self) -> &str {
        "fake"
    }
    fn code(&self) -> Option<Cow<'_, str>> {
        Some(self.0.into())
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
fn lost_connections_timeouts_and_read_only_are_unavailable_constraints_are_not() {
    let fake = |code| sqlx::Error::Database(Box::new(FakePgError(code)));
    let class = |code| classify(StoreError::Database(fake(code)));
    // Serialization failure and deadlock (once retries ran out), connection failure, too many
    // connections, I/O error, statement timeout, administrator shutdown, cannot connect now,
    // lock not available, read-only transaction, database gone, database accepting no
    // connections.
    for code in [
        "40001", "40P01", "08006", "08001", "53300", "58030", "57014", "57P01", "57P03", "55P03", "25006", "3D000",
        "55000",
    ] {
        assert!(matches!(class(code), StoreError::Unavailable(_)), "code {code}");
    }
    // Disk full: said apart (issue 12).
    assert!(matches!(class("53100"), StoreError::DiskFull(_)));
    // Unique violation, check violation, numeric out of range, syntax error, undefined table.
    for code in ["23505", "23514", "22003", "42601", "42P01"] {
        assert!(matches!(class(code), StoreError::Database(_)), "code {code}");
    }
    for err in [sqlx::Error::PoolTimedOut, sqlx::Error::PoolClosed] {
        assert!(matches!(classify(StoreError::Database(err)), StoreError::Unavailable(_)));
    }
    assert!(matches!(classify(StoreError::Database(sqlx::Error::RowNotFound)), StoreError::Database(_)));
    assert!(matches!(classify(StoreError::Corrupt("x".into())), StoreError::Corrupt(_)));
    // A migration that lost its connection is unavailable; one that failed is not.
    let lost = StoreError::Migration(MigrateError::Execute(fake("08006")));
    assert!(matches!(classify(lost), StoreError::Unavailable(_)));
    let failed = StoreError::Migration(MigrateError::Execute(fake("42601")));
    assert!(matches!(classify(failed), StoreError::Migration(_)));
    // Only serialization failures and deadlocks are tried again.
    assert!(super::must_retry(&fake("40001")) && super::must_retry(&fake("40P01")));
    assert!(!super::must_retry(&fake("23505")) && !super::must_retry(&sqlx::Error::PoolTimedOut));
}

#[tokio::test]
async fn lost_race_for_a_key_is_asked_again_and_bounded() {
    let tries = &AtomicU32::new(0);
    let answer = retrying(move || async move {
        let n = tries.fetch_add(1, Ordering::SeqCst) + 1;
        Ok(if n < 2 { Attempt::LostRace } else { Attempt::Done(EntryOutcome::ScanIdConflict) })
    })
    .await
    .unwrap();
    assert_eq!((answer, tries.load(Ordering::SeqCst)), (EntryOutcome::ScanIdConflict, 2));
    let error = retrying(|| async { Ok::<Attempt<()>, StoreError>(Attempt::LostRace) }).await.unwrap_err();
    assert!(matches!(error, StoreError::Corrupt(_)), "{error:?}");
}
