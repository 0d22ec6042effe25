//! The SQLite store's tests: the shared behaviour suite ([`crate::store::behaviour`]) on a
//! store in a temporary directory, and what only SQLite has: pragmas, migrating old files,
//! restarting from the file, the read-only opening, a write lock held by another connection,
//! rows edited behind the store's back, and the classification of SQLite error codes.

use std::borrow::Cow;
use std::error::Error as StdError;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use sqlx::error::{DatabaseError, ErrorKind};
use sqlx::migrate::Migrator;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use tempfile::TempDir;

use super::{classify, SqliteStore, MIGRATOR};
use crate::access::Role;
use crate::store::behaviour::{
    admin, at, attempt, audit_rows, checkpoint, decided, issued, new_pass, pass_id, scan_time, trail, TestBackend,
    CHECKPOINT, ISSUER, LIMIT,
};
use crate::store::rows::{nanos, AuditEntryRow};
use crate::store::{AuditAction, AuditEntry, AuditOutcome, RequestLookup, RevokeOutcome, Store, StoreError};
use epass_core::verify::Reason;

async fn open() -> (TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("epass.db")).await.unwrap();
    (dir, store)
}

crate::store::behaviour::store_behaviour_tests!(open());

#[async_trait]
impl TestBackend for SqliteStore {
    async fn close(&self) {
        SqliteStore::close(self).await;
    }

    async fn passes_in_month(&self, holder_key: &[u8; 32], quota_month: &str) -> Result<u32, StoreError> {
        SqliteStore::passes_in_month(self, holder_key, quota_month).await
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
        sqlx::query_scalar("SELECT name FROM pragma_table_info('audit')").fetch_all(&self.reader).await.unwrap()
    }

    async fn scan_count(&self) -> u64 {
        let scans: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM scans").fetch_one(&self.reader).await.unwrap();
        u64::try_from(scans).unwrap()
    }

    /// Past 2262, the last year that Unix nanoseconds in an `i64` reach.
    fn unstorable_time() -> DateTime<Utc> {
        at("2300-01-01T00:00:00Z")
    }
}

#[tokio::test]
async fn connections_are_durable() {
    let (_dir, store) = open().await;
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode").fetch_one(&store.reader).await.unwrap();
    assert_eq!(mode, "wal");
    let pragma = |name: &'static str| {
        store.writer.run(move |connection| Ok(connection.pragma_query_value(None, name, |row| row.get::<_, i64>(0))?))
    };
    assert_eq!(pragma("synchronous").await.unwrap(), 2, "synchronous = FULL on the writer");
    assert_eq!(pragma("foreign_keys").await.unwrap(), 1);
    let synchronous: i64 = sqlx::query_scalar("PRAGMA synchronous").fetch_one(&store.reader).await.unwrap();
    assert_eq!(synchronous, 2, "synchronous = FULL");
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
    let RevokeOutcome::Revoked(revoked) = store.revoke(pass_id(2), "lost", scan_time(), &admin()).await.unwrap() else {
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

#[tokio::test]
async fn unreadable_row_is_reported_as_corrupt() {
    let (_dir, store) = open().await;
    issued(&store, new_pass(1, 1, "2026-11")).await;
    store.writer.run(|connection| Ok(connection.execute("UPDATE passes SET modes = 4", [])?)).await.unwrap();
    assert!(matches!(store.pass(pass_id(1)).await, Err(StoreError::Corrupt(_))));
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
    let summary: Vec<_> = entries.iter().map(|e| (e.action, e.outcome, e.caller.as_str(), e.role, e.peer)).collect();
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
    assert_eq!(trail(&store, pass_id(2)).await, vec![(AuditAction::Issue, AuditOutcome::Issued, legacy.to_owned())]);
}

#[tokio::test]
async fn probe_reports_a_held_write_lock_and_its_release() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("epass.db");
    // The wait is what the probe and the issue give the held lock below; opening the store
    // (migrations beside its own connections) must fit in it on a loaded machine too.
    let store = SqliteStore::open_with(&path, Duration::from_secs(1)).await.unwrap();
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
    let newest = MIGRATOR.iter().map(|m| m.version).max().unwrap();
    assert!(
        matches!(error, StoreError::Migration(sqlx::migrate::MigrateError::VersionTooNew(needed, 2)) if needed == newest),
        "{error:?}"
    );
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
    // SQLITE_CANTOPEN.
    for code in [5, 517, 6, 8, 1034, 14] {
        assert!(matches!(class(code), StoreError::Unavailable(_)), "code {code}");
    }
    // SQLITE_FULL (issue 12: it was a plain "unavailable", which hid what the operator must do).
    assert!(matches!(class(13), StoreError::DiskFull(_)));
    let io = |kind| classify(StoreError::Database(sqlx::Error::Io(std::io::Error::from(kind))));
    assert!(matches!(io(std::io::ErrorKind::StorageFull), StoreError::DiskFull(_)));
    assert!(matches!(io(std::io::ErrorKind::QuotaExceeded), StoreError::DiskFull(_)));
    assert!(matches!(io(std::io::ErrorKind::PermissionDenied), StoreError::Unavailable(_)));
    // SQLITE_ERROR, SQLITE_CORRUPT, SQLITE_CONSTRAINT_UNIQUE.
    for code in [1, 11, 2067] {
        assert!(matches!(class(code), StoreError::Database(_)), "code {code}");
    }
    assert!(matches!(classify(StoreError::Database(sqlx::Error::PoolTimedOut)), StoreError::Unavailable(_)));
    assert!(matches!(classify(StoreError::Database(sqlx::Error::RowNotFound)), StoreError::Database(_)));
    assert!(matches!(classify(StoreError::Corrupt("x".into())), StoreError::Corrupt(_)));
}

fn insert_event(connection: &rusqlite::Connection, key: &'static str) -> Result<(), StoreError> {
    connection.execute(
        "INSERT INTO status_events (pass_id, event, at, checkpoint_id, mode, valid_until) \
         VALUES (?, 'revoked', 0, '', '', 1)",
        [format!("{key:<16}").as_bytes()],
    )?;
    Ok(())
}

/// Group commit: writes queued behind a running batch share the next transaction; one that
/// fails is rolled back to its savepoint alone, and the others commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_write_in_a_group_is_rolled_back_alone() {
    let (_dir, store) = open().await;
    // A first write holds its batch open until the test lets it finish.
    let (started, running) = tokio::sync::oneshot::channel::<()>();
    let (finish, finished) = tokio::sync::oneshot::channel::<()>();
    let first = tokio::spawn({
        let writer = store.writer.clone();
        async move {
            writer
                .run(move |connection| {
                    let _ = started.send(());
                    let _ = finished.blocking_recv();
                    insert_event(connection, "first")
                })
                .await
        }
    });
    running.await.unwrap();
    // Two writes queue behind it: the second fails after writing.
    let failing = tokio::spawn({
        let writer = store.writer.clone();
        async move {
            writer
                .run(move |connection| {
                    insert_event(connection, "failing")?;
                    Err::<(), _>(StoreError::Corrupt("refused on purpose".into()))
                })
                .await
        }
    });
    let succeeding = tokio::spawn({
        let writer = store.writer.clone();
        async move { writer.run(|connection| insert_event(connection, "succeeding")).await }
    });
    while store.writer.queued() < 2 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    finish.send(()).unwrap();
    first.await.unwrap().unwrap();
    assert!(matches!(failing.await.unwrap(), Err(StoreError::Corrupt(_))));
    succeeding.await.unwrap().unwrap();
    let kept: Vec<Vec<u8>> =
        sqlx::query_scalar("SELECT pass_id FROM status_events ORDER BY seq").fetch_all(&store.reader).await.unwrap();
    assert_eq!(kept, vec![b"first           ".to_vec(), b"succeeding      ".to_vec()]);
}

/// A write that panics is answered with an error; the writer goes on with the next.
#[tokio::test]
async fn a_panicking_write_leaves_the_writer_running() {
    let (_dir, store) = open().await;
    let panicked = store.writer.run(|_| -> Result<(), StoreError> { panic!("a write that panics") }).await;
    assert!(matches!(panicked, Err(StoreError::Database(_))), "{panicked:?}");
    issued(&store, new_pass(1, 1, "2026-11")).await;
    assert!(store.pass(pass_id(1)).await.unwrap().is_some());
}

/// A rusqlite error reaches callers as the store reports sqlx's: classified by its code.
#[tokio::test]
async fn direct_errors_are_classified_by_their_code() {
    let (_dir, store) = open().await;
    let duplicate = store
        .writer
        .run(|connection| {
            insert_event(connection, "twice")?;
            connection.execute("INSERT INTO passes (pass_id) VALUES (x'00')", [])?;
            Ok(())
        })
        .await
        .unwrap_err();
    let StoreError::Database(sqlx::Error::Database(failure)) = &duplicate else {
        panic!("expected a database error, got {duplicate:?}");
    };
    // SQLITE_CONSTRAINT_NOTNULL (1299): a constraint, not an outage.
    assert_eq!(failure.code().as_deref(), Some("1299"), "{duplicate}");
    assert!(matches!(classify(duplicate), StoreError::Database(_)));
}
