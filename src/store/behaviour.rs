//! The behaviour every [`Store`] backend must show, written against the trait alone, with the
//! fixtures it needs: the quota, idempotent replays, request and scan id conflicts scoped to
//! the caller, one entry per pass under concurrency, revocation, status events, the audit
//! trail, and failures that change nothing.
//!
//! A backend runs the whole suite with one macro call in its test module, given an expression
//! whose value is a future of `(guard, store)`; the guard (a temporary directory, a scratch
//! database) is kept until the test ends:
//!
//! ```ignore
//! crate::store::behaviour::store_behaviour_tests!(open());
//! ```
//!
//! The store must also implement [`TestBackend`]: the few things the suite checks that the
//! trait does not expose (all audit rows, the audit columns, the scan count, the quota count,
//! closing), each a short query of the backend's own.

use std::collections::HashSet;

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};

use super::{
    Actor, AuditAction, AuditEntry, AuditOutcome, AuditRecord, EntryAttempt, EntryOutcome, IssueOutcome, NewPass,
    OfflineBatch, OfflineEntry, PassRecord, PruneKind, RequestLookup, Revocation, RevokeOutcome, Store, StoreError,
    StoredPass, SyncKind, SyncRefusal, SyncedEntry,
};
use crate::access::{Caller, Role};
use epass_core::ids::{KeyId, PassId};
use epass_core::journal::{EntryHash, GENESIS};
use epass_core::pass::{Modes, TransportMode};
use epass_core::status::PassEvent;
use epass_core::verify::{EntryRecord, Reason};

/// What the suite needs of a backend besides [`Store`]: reads of what the trait does not
/// expose, and closing. Test code only, so failures panic.
#[async_trait]
pub trait TestBackend: Store + Clone {
    /// Closes every connection; later calls fail with [`StoreError::Unavailable`].
    async fn close(&self);

    /// How many passes count against the holder's quota in the month (what `issue` counts).
    async fn passes_in_month(&self, holder_key: &[u8; 32], quota_month: &str) -> Result<u32, StoreError>;

    /// Every audit row, with a pass or without, in the order written.
    async fn all_audit_entries(&self) -> Vec<AuditEntry>;

    /// The names of the columns of the audit table.
    async fn audit_columns(&self) -> Vec<String>;

    /// How many scans are recorded (a resent scan is not recorded again).
    async fn scan_count(&self) -> u64;

    /// A time this backend cannot store: a change at that time must fail with
    /// [`StoreError::Database`] rather than store another time.
    fn unstorable_time() -> DateTime<Utc>;
}

/// Expands to one `#[tokio::test]` per behaviour, in a module `behaviour`, each opening a store
/// with `$open` (a future of `(guard, store)`, evaluated in the calling module).
macro_rules! store_behaviour_tests {
    ($open:expr) => {
        /// The behaviour every backend shares ([`crate::store::behaviour`]).
        mod behaviour {
            #[allow(unused_imports)] // for `$open`, whatever it names
            use super::*;

            $crate::store::behaviour::store_behaviour_tests!(@tests $open;
                issued_pass_reads_back_equal,
                replay_returns_the_same_pass_and_counts_once,
                conflicting_request_id_changes_nothing,
                third_pass_in_a_month_is_refused,
                revoked_passes_still_count,
                first_revocation_stands,
                a_pass_admits_once,
                scan_id_reused_for_another_pass_conflicts,
                unknown_pass_is_rejected_and_recorded,
                revoked_pass_is_rejected,
                a_used_pass_can_be_revoked,
                offline_verdict_is_passed_through_and_stored,
                time_out_of_range_is_an_error_not_a_wrong_value,
                closed_store_is_unavailable,
                request_ids_are_scoped_to_the_caller,
                scan_ids_are_scoped_to_the_caller,
                audit_trail_records_who_did_what_from_where,
                the_trail_is_in_time_order_even_when_a_row_is_written_late,
                refusals_are_audited_replays_are_not,
                audit_rows_hold_no_permit_or_phone_number,
                a_change_that_fails_leaves_no_audit_row,
                offline_entries_keep_the_earliest_as_the_entry,
                a_synced_journal_is_idempotent,
                offline_batches_are_all_or_nothing,
                a_revoked_pass_keeps_its_offline_entry,
                pruning_removes_rows_past_their_period_and_keeps_the_rest,
                names_are_removed_from_ended_passes_only,
                the_quota_counts_a_pruned_month,
                retries_answer_after_pruning_within_their_window,
                status_lists_and_deltas_are_unchanged_by_pruning,
            );
            // Several worker threads, so that pruning really runs beside the issues.
            $crate::store::behaviour::store_behaviour_tests!(@racing $open;
                pruning_beside_issuance_fails_no_issue,
            );
            // Several worker threads, so that the syncs really race.
            $crate::store::behaviour::store_behaviour_tests!(@racing $open;
                concurrent_syncs_of_one_pass_keep_one_entry,
            );
            // Several worker threads, so that the calls really race.
            $crate::store::behaviour::store_behaviour_tests!(@racing $open;
                concurrent_issues_never_exceed_the_quota,
                concurrent_scans_admit_once,
            );
        }
    };
    (@tests $open:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                let (_guard, store) = $open.await;
                $crate::store::behaviour::$name(&store).await;
            }
        )*
    };
    (@racing $open:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                let (_guard, store) = $open.await;
                $crate::store::behaviour::$name(&store).await;
            }
        )*
    };
}
pub(crate) use store_behaviour_tests;

/// The monthly limit the tests issue under.
pub const LIMIT: u32 = 2;
/// The caller of [`new_pass`].
pub const ISSUER: &str = "issuer-1";
/// The caller of [`attempt`].
pub const CHECKPOINT: &str = "checkpoint-1";

pub fn actor(name: &str, role: Role, peer: &str) -> Actor {
    Actor { caller: Caller { name: name.into(), role }, peer: Some(peer.parse().unwrap()) }
}

pub fn issuer() -> Actor {
    actor(ISSUER, Role::Issuer, "192.0.2.1:40001")
}

pub fn checkpoint() -> Actor {
    actor(CHECKPOINT, Role::Checkpoint, "[2001:db8::7]:40002")
}

pub fn admin() -> Actor {
    actor("admin-1", Role::Admin, "192.0.2.9:40003")
}

pub fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// The scan time, with nanoseconds as the system clock gives them.
pub fn scan_time() -> DateTime<Utc> {
    at("2026-11-27T09:15:02.123456789+08:00")
}

pub fn pass_id(n: u32) -> PassId {
    let mut bytes = [0x5a; 16];
    bytes[..4].copy_from_slice(&n.to_be_bytes());
    bytes[12..].copy_from_slice(&n.wrapping_mul(0x9e37_79b9).to_le_bytes());
    PassId::from_bytes(bytes)
}

pub fn stored_pass(n: u32) -> StoredPass {
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
pub fn new_pass(n: u32, holder: u8, month: &str) -> NewPass {
    NewPass {
        pass: stored_pass(n),
        holder_key: [holder; 32],
        quota_month: month.into(),
        actor: issuer(),
        request_id: format!("request-{n}"),
        fingerprint: [n as u8; 32],
    }
}

pub fn attempt(scan_id: &str, pass_id: PassId) -> EntryAttempt {
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

pub async fn issued<S: Store + ?Sized>(store: &S, new: NewPass) -> PassRecord {
    match store.issue(new, LIMIT).await.unwrap() {
        IssueOutcome::Issued(record) => record,
        other => panic!("expected Issued, got {other:?}"),
    }
}

pub fn decided(outcome: EntryOutcome) -> (Result<(), Reason>, Option<PassRecord>, bool) {
    match outcome {
        EntryOutcome::Decided { verdict, record, replayed } => (verdict, record, replayed),
        EntryOutcome::ScanIdConflict => panic!("expected Decided, got ScanIdConflict"),
    }
}

/// The trail of a pass as (action, outcome, caller) triples.
pub async fn trail<S: Store + ?Sized>(store: &S, pass_id: PassId) -> Vec<(AuditAction, AuditOutcome, String)> {
    store.audit_trail(pass_id).await.unwrap().into_iter().map(|e| (e.action, e.outcome, e.caller)).collect()
}

/// Every audit row, pass or not, as (action, outcome, pass id).
pub async fn audit_rows<S: TestBackend>(store: &S) -> Vec<(String, String, Option<Vec<u8>>)> {
    store
        .all_audit_entries()
        .await
        .into_iter()
        .map(|e| {
            (e.action.as_str().to_owned(), e.outcome.as_str().to_owned(), e.pass_id.map(|id| id.as_bytes().to_vec()))
        })
        .collect()
}

pub async fn issued_pass_reads_back_equal<S: TestBackend>(store: &S) {
    for n in [1, 2] {
        let new = new_pass(n, 1, "2026-11");
        let record = issued(store, new.clone()).await;
        assert_eq!(
            record,
            PassRecord { pass: new.pass.clone(), revocation: None, entry: None, double_entries: Vec::new() }
        );
        assert_eq!(store.pass(new.pass.pass_id).await.unwrap(), Some(record.clone()));
        assert_eq!(
            store.lookup_request(ISSUER, &new.request_id, &new.fingerprint).await.unwrap(),
            RequestLookup::Replay(record)
        );
        assert_eq!(store.lookup_request(ISSUER, &new.request_id, &[0xee; 32]).await.unwrap(), RequestLookup::Conflict);
    }
    assert_eq!(store.lookup_request(ISSUER, "request-9", &[9; 32]).await.unwrap(), RequestLookup::New);
    assert_eq!(store.pass(pass_id(9)).await.unwrap(), None);
}

pub async fn replay_returns_the_same_pass_and_counts_once<S: TestBackend>(store: &S) {
    let new = new_pass(1, 1, "2026-11");
    let record = issued(store, new.clone()).await;
    let mut retry = new.clone();
    // A retry signs a fresh pass id; the earlier pass must come back regardless.
    retry.pass.pass_id = pass_id(2);
    assert_eq!(store.issue(retry, LIMIT).await.unwrap(), IssueOutcome::Replayed(record.clone()));
    assert_eq!(store.passes_in_month(&new.holder_key, "2026-11").await.unwrap(), 1);
    assert_eq!(store.pass(pass_id(2)).await.unwrap(), None);
    // The replay is answered before the quota is counted.
    assert_eq!(store.issue(new, 1).await.unwrap(), IssueOutcome::Replayed(record));
}

pub async fn conflicting_request_id_changes_nothing<S: TestBackend>(store: &S) {
    let first = new_pass(1, 1, "2026-11");
    let record = issued(store, first.clone()).await;
    let mut other = new_pass(2, 1, "2026-11");
    other.request_id = first.request_id.clone();
    assert_eq!(store.issue(other, LIMIT).await.unwrap(), IssueOutcome::RequestIdConflict);
    assert_eq!(store.pass(pass_id(2)).await.unwrap(), None);
    assert_eq!(store.pass(pass_id(1)).await.unwrap(), Some(record));
    assert_eq!(store.passes_in_month(&first.holder_key, "2026-11").await.unwrap(), 1);
}

pub async fn third_pass_in_a_month_is_refused<S: TestBackend>(store: &S) {
    issued(store, new_pass(1, 1, "2026-11")).await;
    issued(store, new_pass(2, 1, "2026-11")).await;
    assert_eq!(store.issue(new_pass(3, 1, "2026-11"), LIMIT).await.unwrap(), IssueOutcome::QuotaExhausted);
    assert_eq!(store.pass(pass_id(3)).await.unwrap(), None);
    assert_eq!(store.passes_in_month(&[1; 32], "2026-11").await.unwrap(), 2);
    // Another month, another holder: their own quotas.
    issued(store, new_pass(4, 1, "2026-12")).await;
    issued(store, new_pass(5, 2, "2026-11")).await;
    assert_eq!(store.passes_in_month(&[1; 32], "2026-12").await.unwrap(), 1);
    assert_eq!(store.passes_in_month(&[2; 32], "2026-11").await.unwrap(), 1);
}

pub async fn revoked_passes_still_count<S: TestBackend>(store: &S) {
    issued(store, new_pass(1, 1, "2026-11")).await;
    assert!(matches!(
        store.revoke(pass_id(1), "lost phone", scan_time(), &admin()).await.unwrap(),
        RevokeOutcome::Revoked(_)
    ));
    issued(store, new_pass(2, 1, "2026-11")).await;
    assert_eq!(store.issue(new_pass(3, 1, "2026-11"), LIMIT).await.unwrap(), IssueOutcome::QuotaExhausted);
}

pub async fn first_revocation_stands<S: TestBackend>(store: &S) {
    assert_eq!(store.revoke(pass_id(1), "lost", scan_time(), &admin()).await.unwrap(), RevokeOutcome::NotFound);
    let record = issued(store, new_pass(1, 1, "2026-11")).await;
    let RevokeOutcome::Revoked(revoked) = store.revoke(pass_id(1), "lost", scan_time(), &admin()).await.unwrap() else {
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

pub async fn a_pass_admits_once<S: TestBackend>(store: &S) {
    issued(store, new_pass(1, 1, "2026-11")).await;

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

pub async fn scan_id_reused_for_another_pass_conflicts<S: TestBackend>(store: &S) {
    issued(store, new_pass(1, 1, "2026-11")).await;
    let other = issued(store, new_pass(2, 2, "2026-11")).await;
    let (verdict, _, _) = decided(store.record_entry(attempt("scan-1", pass_id(1))).await.unwrap());
    assert_eq!(verdict, Ok(()));
    assert_eq!(store.record_entry(attempt("scan-1", pass_id(2))).await.unwrap(), EntryOutcome::ScanIdConflict);
    assert_eq!(store.pass(pass_id(2)).await.unwrap(), Some(other));
}

pub async fn unknown_pass_is_rejected_and_recorded<S: TestBackend>(store: &S) {
    let outcome = store.record_entry(attempt("scan-1", pass_id(1))).await.unwrap();
    assert_eq!(outcome, EntryOutcome::Decided { verdict: Err(Reason::UnknownPass), record: None, replayed: false });
    let resent = store.record_entry(attempt("scan-1", pass_id(1))).await.unwrap();
    assert_eq!(resent, EntryOutcome::Decided { verdict: Err(Reason::UnknownPass), record: None, replayed: true });
}

pub async fn revoked_pass_is_rejected<S: TestBackend>(store: &S) {
    issued(store, new_pass(1, 1, "2026-11")).await;
    let RevokeOutcome::Revoked(revoked) = store.revoke(pass_id(1), "lost", scan_time(), &admin()).await.unwrap() else {
        panic!("expected Revoked");
    };
    let outcome = store.record_entry(attempt("scan-1", pass_id(1))).await.unwrap();
    assert_eq!(
        outcome,
        EntryOutcome::Decided { verdict: Err(Reason::Revoked), record: Some(revoked.clone()), replayed: false }
    );
    assert_eq!(store.pass(pass_id(1)).await.unwrap(), Some(revoked));
}

pub async fn a_used_pass_can_be_revoked<S: TestBackend>(store: &S) {
    issued(store, new_pass(1, 1, "2026-11")).await;
    let (_, used, _) = decided(store.record_entry(attempt("scan-1", pass_id(1))).await.unwrap());
    let used = used.unwrap();
    let RevokeOutcome::Revoked(revoked) = store.revoke(pass_id(1), "fraud", scan_time(), &admin()).await.unwrap()
    else {
        panic!("expected Revoked");
    };
    assert_eq!(revoked.entry, used.entry);
    assert!(revoked.revocation.is_some());
}

pub async fn offline_verdict_is_passed_through_and_stored<S: TestBackend>(store: &S) {
    let record = issued(store, new_pass(1, 1, "2026-11")).await;
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
    assert_eq!(resent, EntryOutcome::Decided { verdict: Err(Reason::Expired), record: Some(record), replayed: true });
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

pub async fn concurrent_issues_never_exceed_the_quota<S: TestBackend>(store: &S) {
    issued(store, new_pass(100, 1, "2026-11")).await;
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

pub async fn concurrent_scans_admit_once<S: TestBackend>(store: &S) {
    issued(store, new_pass(1, 1, "2026-11")).await;
    let tasks: Vec<_> = (0..8)
        .map(|n| {
            let store = store.clone();
            tokio::spawn(async move { store.record_entry(attempt(&format!("scan-{n}"), pass_id(1))).await.unwrap() })
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

pub async fn time_out_of_range_is_an_error_not_a_wrong_value<S: TestBackend>(store: &S) {
    issued(store, new_pass(1, 1, "2026-11")).await;
    let far = S::unstorable_time();
    assert!(matches!(store.revoke(pass_id(1), "lost", far, &admin()).await, Err(StoreError::Database(_))));
    assert_eq!(store.pass(pass_id(1)).await.unwrap().unwrap().revocation, None);
}

pub async fn closed_store_is_unavailable<S: TestBackend>(store: &S) {
    store.close().await;
    assert!(matches!(store.pass(pass_id(1)).await, Err(StoreError::Unavailable(_))));
    assert!(matches!(store.issue(new_pass(1, 1, "2026-11"), LIMIT).await, Err(StoreError::Unavailable(_))));
}

pub async fn request_ids_are_scoped_to_the_caller<S: TestBackend>(store: &S) {
    let first = new_pass(1, 1, "2026-11");
    let first_record = issued(store, first.clone()).await;
    // Another issuer sends the same request id (and even the same application): a new request.
    let mut second = new_pass(2, 2, "2026-11");
    second.request_id = first.request_id.clone();
    second.fingerprint = first.fingerprint;
    second.actor = actor("issuer-2", Role::Issuer, "192.0.2.2:40001");
    let second_record = issued(store, second.clone()).await;
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

pub async fn scan_ids_are_scoped_to_the_caller<S: TestBackend>(store: &S) {
    issued(store, new_pass(1, 1, "2026-11")).await;
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
    issued(store, new_pass(2, 2, "2026-11")).await;
    other.pass_id = pass_id(2);
    assert_eq!(store.record_entry(other).await.unwrap(), EntryOutcome::ScanIdConflict);
    assert_eq!(store.scan_count().await, 2);
}

pub async fn audit_trail_records_who_did_what_from_where<S: TestBackend>(store: &S) {
    let new = new_pass(1, 1, "2026-11");
    issued(store, new.clone()).await;
    let (verdict, _, _) = decided(store.record_entry(attempt("scan-1", pass_id(1))).await.unwrap());
    assert_eq!(verdict, Ok(()));
    let mut second = attempt("scan-2", pass_id(1));
    second.at += TimeDelta::minutes(1);
    let (verdict, _, _) = decided(store.record_entry(second).await.unwrap());
    assert_eq!(verdict, Err(Reason::AlreadyUsed));
    let verify_at = scan_time() + TimeDelta::minutes(2);
    store
        .record_audits(vec![AuditRecord {
            at: verify_at,
            action: AuditAction::Verify,
            outcome: AuditOutcome::Rejected(Reason::AlreadyUsed),
            pass_id: Some(pass_id(1)),
            actor: actor("checkpoint-2", Role::Checkpoint, "192.0.2.3:40002"),
            request_key: None,
            checkpoint_id: Some("SZX-AIR-01".into()),
            mode: Some(TransportMode::Air),
            permit_masked: None,
        }])
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

pub async fn the_trail_is_in_time_order_even_when_a_row_is_written_late<S: TestBackend>(store: &S) {
    issued(store, new_pass(1, 1, "2026-11")).await;
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
    store.record_audits(vec![verify]).await.unwrap();
    let actions: Vec<_> = store.audit_trail(pass_id(1)).await.unwrap().into_iter().map(|e| (e.action, e.seq)).collect();
    assert_eq!(actions, vec![(AuditAction::Issue, 1), (AuditAction::Verify, 3), (AuditAction::Admit, 2)]);
}

pub async fn refusals_are_audited_replays_are_not<S: TestBackend>(store: &S) {
    let first = new_pass(1, 1, "2026-11");
    issued(store, first.clone()).await;
    // A replay: no row.
    assert!(matches!(store.issue(first.clone(), LIMIT).await.unwrap(), IssueOutcome::Replayed(_)));
    // A request id reused for another application: a row, with no pass.
    let mut conflict = new_pass(2, 1, "2026-11");
    conflict.request_id = first.request_id.clone();
    assert_eq!(store.issue(conflict, LIMIT).await.unwrap(), IssueOutcome::RequestIdConflict);
    // The monthly limit: a row, with no pass.
    issued(store, new_pass(3, 1, "2026-11")).await;
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
        audit_rows(store).await,
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
    let reasons: Vec<_> = store
        .all_audit_entries()
        .await
        .into_iter()
        .filter(|e| e.outcome.as_str() == "rejected")
        .map(|e| e.outcome.reason().map(Reason::as_str))
        .collect();
    assert_eq!(reasons, vec![Some("revoked")]);
    assert_eq!(
        trail(store, pass_id(1)).await,
        vec![
            (AuditAction::Issue, AuditOutcome::Issued, ISSUER.to_owned()),
            (AuditAction::Revoke, AuditOutcome::Revoked, "admin-1".to_owned()),
            (AuditAction::Revoke, AuditOutcome::AlreadyRevoked, "admin-1".to_owned()),
            (AuditAction::Admit, AuditOutcome::Rejected(Reason::Revoked), CHECKPOINT.to_owned()),
        ]
    );
}

pub async fn audit_rows_hold_no_permit_or_phone_number<S: TestBackend>(store: &S) {
    issued(store, new_pass(1, 1, "2026-11")).await;
    let (verdict, _, _) = decided(store.record_entry(attempt("scan-1", pass_id(1))).await.unwrap());
    assert_eq!(verdict, Ok(()));
    let columns = store.audit_columns().await;
    assert!(columns.iter().all(|c| !c.contains("phone") && !c.contains("mobile")), "{columns:?}");
    assert!(columns.iter().filter(|c| c.contains("permit")).all(|c| c == "permit_masked"), "{columns:?}");
}

pub async fn a_change_that_fails_leaves_no_audit_row<S: TestBackend>(store: &S) {
    issued(store, new_pass(1, 1, "2026-11")).await;
    let far = S::unstorable_time();
    assert!(store.revoke(pass_id(1), "lost", far, &admin()).await.is_err());
    let mut late = attempt("scan-1", pass_id(1));
    late.at = far;
    assert!(store.record_entry(late).await.is_err());
    assert_eq!(audit_rows(store).await.len(), 1);
}

/// Entries of one journal, as a checkpoint at `checkpoint_id` recorded them: `(scan id, pass,
/// minutes after the scan time)` each, chained by made-up hashes (the store checks links, the
/// handler checks hashes against fields).
pub struct Journal {
    pub id: String,
    pub checkpoint_id: String,
    pub entries: Vec<OfflineEntry>,
}

impl Journal {
    pub fn new(id: &str, checkpoint_id: &str) -> Self {
        Self { id: id.into(), checkpoint_id: checkpoint_id.into(), entries: Vec::new() }
    }

    /// Appends an entry and returns it.
    pub fn admit(&mut self, scan_id: &str, pass: PassId, minutes: i64) -> OfflineEntry {
        let seq = self.entries.len() as u64 + 1;
        let prev_hash = self.entries.last().map_or(GENESIS, |e| e.hash);
        let mut hash = [0; 32];
        hash[..8].copy_from_slice(&seq.to_be_bytes());
        hash[8..8 + self.id.len().min(24)].copy_from_slice(&self.id.as_bytes()[..self.id.len().min(24)]);
        let entry = OfflineEntry {
            seq,
            hash: EntryHash(hash),
            prev_hash,
            scan_id: scan_id.into(),
            pass_id: pass,
            checkpoint_id: self.checkpoint_id.clone(),
            mode: TransportMode::Rail,
            recorded_at: scan_time() + TimeDelta::minutes(minutes),
        };
        self.entries.push(entry.clone());
        entry
    }

    /// A batch of entries `from..=to` (1-based).
    pub fn batch(&self, from: u64, to: u64) -> OfflineBatch {
        OfflineBatch {
            actor: checkpoint(),
            journal_id: self.id.clone(),
            entries: self.entries[(from - 1) as usize..to as usize].to_vec(),
            at: scan_time() + TimeDelta::hours(2),
        }
    }
}

pub async fn synced<S: Store + ?Sized>(store: &S, batch: OfflineBatch) -> Vec<SyncedEntry> {
    store.sync_offline_entries(batch).await.unwrap().unwrap_or_else(|refusal| panic!("refused: {refusal}"))
}

pub async fn used_events<S: Store + ?Sized>(store: &S, pass: PassId) -> usize {
    let events = store.status_events(0, scan_time()).await.unwrap();
    events.entries.iter().filter(|e| e.pass_id == pass && matches!(e.event, PassEvent::Used { .. })).count()
}

pub async fn offline_entries_keep_the_earliest_as_the_entry<S: TestBackend>(store: &S) {
    issued(store, new_pass(1, 1, "2026-11")).await;
    let (mut a, mut b, mut c) =
        (Journal::new("ja", "GATE-A"), Journal::new("jb", "GATE-B"), Journal::new("jc", "GATE-C"));
    let a1 = a.admit("a-1", pass_id(1), 10).entry_record();
    let b1 = b.admit("b-1", pass_id(1), 5).entry_record();
    let c1 = c.admit("c-1", pass_id(1), 20).entry_record();

    // Gate A syncs first: its entry uses the pass up, and the status list carries the use.
    let answer = synced(store, a.batch(1, 1)).await;
    assert_eq!(answer, vec![SyncedEntry { seq: 1, kind: SyncKind::Recorded, entry: a1.clone(), double_entry: None }]);
    let record = store.pass(pass_id(1)).await.unwrap().unwrap();
    assert_eq!((record.entry, record.double_entries), (Some(a1.clone()), vec![]));
    assert_eq!(used_events(store, pass_id(1)).await, 1);

    // Gate B admitted the same pass earlier: its entry becomes the entry, A's a double entry.
    let answer = synced(store, b.batch(1, 1)).await;
    let conflict = SyncedEntry { seq: 1, kind: SyncKind::Conflict, entry: b1.clone(), double_entry: Some(a1.clone()) };
    assert_eq!(answer, vec![conflict]);
    // Gate C admitted it later: a double entry, the entry stays B's.
    let answer = synced(store, c.batch(1, 1)).await;
    let conflict = SyncedEntry { seq: 1, kind: SyncKind::Conflict, entry: b1.clone(), double_entry: Some(c1.clone()) };
    assert_eq!(answer, vec![conflict]);

    let record = store.pass(pass_id(1)).await.unwrap().unwrap();
    assert_eq!(record.entry, Some(b1.clone()));
    assert_eq!(record.double_entries, vec![a1.clone(), c1.clone()]);
    // One use in the status list, whatever the order of the syncs.
    assert_eq!(used_events(store, pass_id(1)).await, 1);
    // An online scan now finds the entry.
    let (verdict, seen, _) = decided(store.record_entry(attempt("online-1", pass_id(1))).await.unwrap());
    assert_eq!((verdict, seen.unwrap().entry), (Err(Reason::AlreadyUsed), Some(b1.clone())));

    // The trail: every offline entry, and the entry B displaced.
    let offline: Vec<(AuditOutcome, Option<String>)> = store
        .audit_trail(pass_id(1))
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.action == AuditAction::AdmitOffline)
        .map(|e| (e.outcome, e.request_key))
        .collect();
    let mut offline_sorted = offline.clone();
    offline_sorted.sort_by(|x, y| x.1.cmp(&y.1).then(x.0.as_str().cmp(y.0.as_str())));
    assert_eq!(
        offline_sorted,
        vec![
            (AuditOutcome::Accepted, Some("a-1".into())),
            (AuditOutcome::DoubleEntry, Some("a-1".into())),
            (AuditOutcome::Accepted, Some("b-1".into())),
            (AuditOutcome::DoubleEntry, Some("c-1".into())),
        ],
        "{offline:?}"
    );
}

pub async fn a_synced_journal_is_idempotent<S: TestBackend>(store: &S) {
    issued(store, new_pass(1, 1, "2026-11")).await;
    issued(store, new_pass(2, 2, "2026-11")).await;
    let mut a = Journal::new("ja", "GATE-A");
    let a1 = a.admit("a-1", pass_id(1), 0).entry_record();
    let a2 = a.admit("a-2", pass_id(2), 1).entry_record();
    synced(store, a.batch(1, 1)).await;
    let (scans, rows) = (store.scan_count().await, audit_rows(store).await.len());

    // The whole journal again (an interrupted sync resumed from the start): entry 1 is a
    // re-upload, entry 2 is new.
    let answer = synced(store, a.batch(1, 2)).await;
    assert_eq!(
        answer,
        vec![
            SyncedEntry { seq: 1, kind: SyncKind::AlreadyRecorded, entry: a1.clone(), double_entry: None },
            SyncedEntry { seq: 2, kind: SyncKind::Recorded, entry: a2.clone(), double_entry: None },
        ]
    );
    assert_eq!((store.scan_count().await, audit_rows(store).await.len()), (scans + 1, rows + 1));
    // And again: nothing changes at all.
    let (scans, rows) = (store.scan_count().await, audit_rows(store).await.len());
    let answer = synced(store, a.batch(1, 2)).await;
    assert!(answer.iter().all(|s| s.kind == SyncKind::AlreadyRecorded), "{answer:?}");
    assert_eq!((store.scan_count().await, audit_rows(store).await.len()), (scans, rows));
    assert_eq!(used_events(store, pass_id(1)).await + used_events(store, pass_id(2)).await, 2);

    // A re-uploaded entry that became a double entry since says so.
    let mut b = Journal::new("jb", "GATE-B");
    let b1 = b.admit("b-1", pass_id(1), -5).entry_record();
    synced(store, b.batch(1, 1)).await;
    let answer = synced(store, a.batch(1, 1)).await;
    assert_eq!(
        answer,
        vec![SyncedEntry { seq: 1, kind: SyncKind::AlreadyRecorded, entry: b1, double_entry: Some(a1) }]
    );
}

pub async fn offline_batches_are_all_or_nothing<S: TestBackend>(store: &S) {
    let before = issued(store, new_pass(1, 1, "2026-11")).await;
    let mut a = Journal::new("ja", "GATE-A");
    a.admit("a-1", pass_id(1), 0);
    a.admit("a-2", pass_id(9), 1);
    // Pass 9 was never issued: nothing of the batch is recorded, pass 1 stays unused.
    let refused = store.sync_offline_entries(a.batch(1, 2)).await.unwrap();
    assert_eq!(refused, Err(SyncRefusal::UnknownPass { seq: 2, pass_id: pass_id(9) }));
    assert_eq!(store.pass(pass_id(1)).await.unwrap(), Some(before));
    assert_eq!((store.scan_count().await, used_events(store, pass_id(1)).await), (0, 0));

    synced(store, a.batch(1, 1)).await;
    // Entry 2 removed before upload: entry 3 does not continue entry 1.
    issued(store, new_pass(3, 3, "2026-11")).await;
    a.entries.pop();
    a.admit("a-2", pass_id(3), 2);
    a.admit("a-3", pass_id(3), 3);
    let refused = store.sync_offline_entries(a.batch(3, 3)).await.unwrap();
    assert_eq!(refused, Err(SyncRefusal::BrokenChain { seq: 3, acknowledged: 1 }));
    // Entry 1 changed after it was acknowledged.
    let mut altered = a.batch(1, 2);
    altered.entries[0].hash = EntryHash([0xee; 32]);
    altered.entries[1].prev_hash = EntryHash([0xee; 32]);
    assert_eq!(store.sync_offline_entries(altered).await.unwrap(), Err(SyncRefusal::Altered { seq: 1 }));
    // A scan id used before (here by an online scan).
    store.record_entry(attempt("a-2", pass_id(3))).await.unwrap();
    let refused = store.sync_offline_entries(a.batch(2, 2)).await.unwrap();
    assert_eq!(refused, Err(SyncRefusal::ScanIdReused { seq: 2, scan_id: "a-2".into() }));
    assert_eq!(store.scan_count().await, 2);
}

pub async fn a_revoked_pass_keeps_its_offline_entry<S: TestBackend>(store: &S) {
    issued(store, new_pass(1, 1, "2026-11")).await;
    store.revoke(pass_id(1), "lost", scan_time(), &admin()).await.unwrap();
    let mut a = Journal::new("ja", "GATE-A");
    let a1 = a.admit("a-1", pass_id(1), 30).entry_record();
    let answer = synced(store, a.batch(1, 1)).await;
    assert_eq!(answer[0].kind, SyncKind::Recorded);
    let record = store.pass(pass_id(1)).await.unwrap().unwrap();
    assert!(record.revocation.is_some());
    assert_eq!(record.entry, Some(a1));
    // Revoking it again reads the double entries too.
    let mut b = Journal::new("jb", "GATE-B");
    b.admit("b-1", pass_id(1), 40);
    synced(store, b.batch(1, 1)).await;
    match store.revoke(pass_id(1), "again", scan_time(), &admin()).await.unwrap() {
        RevokeOutcome::Revoked(record) => assert_eq!(record.double_entries.len(), 1),
        RevokeOutcome::NotFound => panic!("not found"),
    }
}

pub async fn concurrent_syncs_of_one_pass_keep_one_entry<S: TestBackend>(store: &S) {
    issued(store, new_pass(1, 1, "2026-11")).await;
    let mut tasks = Vec::new();
    for gate in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut journal = Journal::new(&format!("j{gate}"), &format!("GATE-{gate}"));
            journal.admit(&format!("scan-{gate}"), pass_id(1), 10 - gate);
            synced(&store, journal.batch(1, 1)).await
        }));
    }
    let mut recorded = 0;
    for task in tasks {
        let answer = task.await.unwrap();
        recorded += answer.iter().filter(|s| s.kind == SyncKind::Recorded).count();
    }
    assert_eq!(recorded, 1);
    let record = store.pass(pass_id(1)).await.unwrap().unwrap();
    // Gate 7 admitted first.
    assert_eq!(record.entry.unwrap().scan_id, "scan-7");
    assert_eq!(record.double_entries.len(), 7);
    assert_eq!(used_events(store, pass_id(1)).await, 1);
}

/// Pass `n` for holder `holder` in November 2026, whose validity ends at `until`.
pub fn pass_ending(n: u32, holder: u8, until: &str) -> NewPass {
    let mut new = new_pass(n, holder, "2026-11");
    new.pass.valid_until = at(until);
    new
}

/// A verification's audit row of pass `n` at `when`.
pub fn verification(n: u32, when: DateTime<Utc>) -> AuditRecord {
    AuditRecord {
        at: when,
        action: AuditAction::Verify,
        outcome: AuditOutcome::Accepted,
        pass_id: Some(pass_id(n)),
        actor: checkpoint(),
        request_key: None,
        checkpoint_id: Some("SZX-AIR-01".into()),
        mode: Some(TransportMode::Air),
        permit_masked: None,
    }
}

/// Prunes `kind` at `cutoff` in batches of `limit` until a batch comes back short; the rows
/// removed.
pub async fn prune_all<S: Store + ?Sized>(store: &S, kind: PruneKind, cutoff: DateTime<Utc>, limit: u32) -> u64 {
    let mut total = 0;
    loop {
        let removed = store.prune(kind, cutoff, limit).await.unwrap();
        assert!(removed <= u64::from(limit), "{kind:?}: {removed} rows in a batch of {limit}");
        total += removed;
        if removed < u64::from(limit) {
            return total;
        }
    }
}

/// Every audit row as (action, outcome, time).
async fn audit_times<S: TestBackend>(store: &S) -> Vec<(AuditAction, AuditOutcome, DateTime<Utc>)> {
    store.all_audit_entries().await.into_iter().map(|e| (e.action, e.outcome, e.at)).collect()
}

pub async fn pruning_removes_rows_past_their_period_and_keeps_the_rest<S: TestBackend>(store: &S) {
    let (old, cutoff, young) = (at("2026-01-01T00:00:00Z"), at("2026-06-01T00:00:00Z"), scan_time());
    issued(store, new_pass(1, 1, "2026-11")).await;
    let verifications = [old, old, old + TimeDelta::days(1), young, young + TimeDelta::minutes(1)];
    store.record_audits(verifications.iter().map(|when| verification(1, *when)).collect()).await.unwrap();
    let (verdict, _, _) = decided(store.record_entry(attempt("scan-1", pass_id(1))).await.unwrap());
    assert_eq!(verdict, Ok(()));
    // An old scan of a pass the service does not know: a scan row and an admit row, both old.
    let mut stale = attempt("scan-old", pass_id(9));
    stale.at = old;
    assert_eq!(decided(store.record_entry(stale).await.unwrap()).0, Err(Reason::UnknownPass));
    assert_eq!(store.scan_count().await, 2);
    // A cutoff is exclusive: a row at the cutoff itself stays.
    store.record_audits(vec![verification(1, cutoff)]).await.unwrap();

    // Batches of 2: three old verification rows take two batches, the second one short.
    assert_eq!(store.prune(PruneKind::VerificationAudit, cutoff, 2).await.unwrap(), 2);
    assert_eq!(store.prune(PruneKind::VerificationAudit, cutoff, 2).await.unwrap(), 1);
    assert_eq!(store.prune(PruneKind::VerificationAudit, cutoff, 2).await.unwrap(), 0);
    let rows = audit_times(store).await;
    let verify_times: Vec<_> = rows.iter().filter(|r| r.0 == AuditAction::Verify).map(|r| r.2).collect();
    assert_eq!(verify_times, vec![young, young + TimeDelta::minutes(1), cutoff]);
    // Changes are kept for their own period: the old admit row is still there.
    assert!(rows.contains(&(AuditAction::Admit, AuditOutcome::Rejected(Reason::UnknownPass), old)), "{rows:?}");

    assert_eq!(prune_all(store, PruneKind::ChangeAudit, cutoff, 10).await, 1);
    let rows = audit_times(store).await;
    assert!(rows.iter().all(|r| r.2 >= cutoff), "{rows:?}");
    assert_eq!(
        trail(store, pass_id(1)).await,
        // By time: the row at the cutoff (June), the issue, then the young verification
        // written before the entry at the same time, the entry, the last verification.
        vec![
            (AuditAction::Verify, AuditOutcome::Accepted, CHECKPOINT.to_owned()),
            (AuditAction::Issue, AuditOutcome::Issued, ISSUER.to_owned()),
            (AuditAction::Verify, AuditOutcome::Accepted, CHECKPOINT.to_owned()),
            (AuditAction::Admit, AuditOutcome::Accepted, CHECKPOINT.to_owned()),
            (AuditAction::Verify, AuditOutcome::Accepted, CHECKPOINT.to_owned()),
        ]
    );

    assert_eq!(prune_all(store, PruneKind::Scans, cutoff, 10).await, 1);
    assert_eq!(store.scan_count().await, 1);
    // Nothing is left to prune at these cutoffs.
    for kind in PruneKind::ALL {
        assert_eq!(store.prune(kind, cutoff, 10).await.unwrap(), 0, "{kind:?}");
    }
}

pub async fn names_are_removed_from_ended_passes_only<S: TestBackend>(store: &S) {
    // Every pass is valid until 2026-12-03T10:00Z, but for pass 5, which expired on the 27th.
    for n in 1..=4 {
        issued(store, new_pass(n, n as u8, "2026-11")).await;
    }
    issued(store, pass_ending(5, 5, "2026-11-27T00:00:00Z")).await;
    let (verdict, _, _) = decided(store.record_entry(attempt("scan-2", pass_id(2))).await.unwrap());
    assert_eq!(verdict, Ok(()));
    store.revoke(pass_id(3), "lost", scan_time() + TimeDelta::hours(1), &admin()).await.unwrap();
    let before: Vec<PassRecord> = {
        let mut records = Vec::new();
        for n in 1..=5 {
            records.push(store.pass(pass_id(n)).await.unwrap().unwrap());
        }
        records
    };
    let nameless = |record: &PassRecord| {
        let mut record = record.clone();
        record.pass.name_latin = None;
        record.pass.name_chinese = None;
        record
    };

    // On the 28th: pass 2 (used on the 27th), 3 (revoked on the 27th) and 5 (expired on the
    // 27th) have ended; 1 and 4 are still valid and keep their names.
    let cutoff = at("2026-11-28T00:00:00Z");
    assert_eq!(prune_all(store, PruneKind::HolderNames, cutoff, 2).await, 3);
    for (n, record) in (1..=5).zip(&before) {
        let now = store.pass(pass_id(n)).await.unwrap().unwrap();
        let expected = if matches!(n, 2 | 3 | 5) { nameless(record) } else { record.clone() };
        assert_eq!(now, expected, "pass {n}");
    }
    // Pass 4 had a Chinese name too: a live pass keeps both.
    assert_eq!(store.pass(pass_id(4)).await.unwrap().unwrap().pass.name_chinese.as_deref(), Some("陳大文"));
    assert_eq!(store.prune(PruneKind::HolderNames, cutoff, 10).await.unwrap(), 0);

    // Once they expire, the others lose theirs too.
    assert_eq!(prune_all(store, PruneKind::HolderNames, at("2026-12-04T00:00:00Z"), 10).await, 2);
    for (n, record) in (1..=5).zip(&before) {
        assert_eq!(store.pass(pass_id(n)).await.unwrap().unwrap(), nameless(record), "pass {n}");
    }
}

/// Prunes every kind at `cutoff`.
async fn prune_everything<S: Store + ?Sized>(store: &S, cutoff: DateTime<Utc>) {
    for kind in PruneKind::ALL {
        prune_all(store, kind, cutoff, 3).await;
    }
}

pub async fn the_quota_counts_a_pruned_month<S: TestBackend>(store: &S) {
    issued(store, new_pass(1, 1, "2026-11")).await;
    issued(store, new_pass(2, 1, "2026-11")).await;
    assert_eq!(decided(store.record_entry(attempt("scan-1", pass_id(1))).await.unwrap()).0, Ok(()));
    store.revoke(pass_id(2), "lost", scan_time(), &admin()).await.unwrap();
    store.record_audits(vec![verification(1, scan_time())]).await.unwrap();
    // Years later, everything that can go has gone.
    prune_everything(store, at("2031-01-01T00:00:00Z")).await;
    assert!(store.all_audit_entries().await.is_empty());
    assert_eq!(store.scan_count().await, 0);

    assert_eq!(store.passes_in_month(&[1; 32], "2026-11").await.unwrap(), 2);
    assert_eq!(store.issue(new_pass(3, 1, "2026-11"), LIMIT).await.unwrap(), IssueOutcome::QuotaExhausted);
    assert_eq!(store.pass(pass_id(3)).await.unwrap(), None);
    // Other holders and months are as they were.
    issued(store, new_pass(4, 2, "2026-11")).await;
    issued(store, new_pass(5, 1, "2026-12")).await;
}

pub async fn retries_answer_after_pruning_within_their_window<S: TestBackend>(store: &S) {
    let new = new_pass(1, 1, "2026-11");
    issued(store, new.clone()).await;
    let (verdict, _, _) = decided(store.record_entry(attempt("scan-1", pass_id(1))).await.unwrap());
    assert_eq!(verdict, Ok(()));
    let used = store.pass(pass_id(1)).await.unwrap().unwrap();

    // A day after the entry: audit rows, status events and the names are gone; the scan is
    // within its window (its cutoff is before it).
    let day_after = scan_time() + TimeDelta::days(1);
    for kind in [PruneKind::VerificationAudit, PruneKind::ChangeAudit, PruneKind::StatusEvents, PruneKind::HolderNames]
    {
        prune_all(store, kind, day_after, 10).await;
    }
    assert_eq!(prune_all(store, PruneKind::Scans, scan_time() - TimeDelta::days(1), 10).await, 0);
    let mut nameless = used.clone();
    (nameless.pass.name_latin, nameless.pass.name_chinese) = (None, None);
    assert_eq!(store.pass(pass_id(1)).await.unwrap(), Some(nameless.clone()));

    // The issue retried: the first pass, which the handler rebuilds from the retried
    // application (names included) and the stored signature.
    let mut retry = new.clone();
    retry.pass.pass_id = pass_id(2);
    assert_eq!(store.issue(retry, LIMIT).await.unwrap(), IssueOutcome::Replayed(nameless.clone()));
    assert_eq!(
        store.lookup_request(ISSUER, &new.request_id, &new.fingerprint).await.unwrap(),
        RequestLookup::Replay(nameless.clone())
    );
    assert_eq!(store.lookup_request(ISSUER, &new.request_id, &[0xee; 32]).await.unwrap(), RequestLookup::Conflict);
    // The scan resent: its first answer.
    let resent = store.record_entry(attempt("scan-1", pass_id(1))).await.unwrap();
    assert_eq!(resent, EntryOutcome::Decided { verdict: Ok(()), record: Some(nameless.clone()), replayed: true });
    // Replays write no audit rows, and nothing was issued.
    assert!(store.all_audit_entries().await.is_empty());
    assert_eq!(store.passes_in_month(&[1; 32], "2026-11").await.unwrap(), 1);

    // Past the scan's window, a resent scan is decided again: the pass is used, by itself.
    assert_eq!(prune_all(store, PruneKind::Scans, day_after, 10).await, 1);
    let resent = store.record_entry(attempt("scan-1", pass_id(1))).await.unwrap();
    assert_eq!(
        resent,
        EntryOutcome::Decided { verdict: Err(Reason::AlreadyUsed), record: Some(nameless), replayed: false }
    );
}

pub async fn status_lists_and_deltas_are_unchanged_by_pruning<S: TestBackend>(store: &S) {
    // Event 1: pass 1 revoked, expired on the 27th. Event 2: pass 2 used, valid to December.
    // Event 3, the newest: pass 3 revoked, expired on the 27th.
    issued(store, pass_ending(1, 1, "2026-11-27T00:00:00Z")).await;
    issued(store, new_pass(2, 2, "2026-11")).await;
    issued(store, pass_ending(3, 3, "2026-11-27T00:00:00Z")).await;
    let revoked_at = at("2026-11-26T12:00:00Z");
    store.revoke(pass_id(1), "lost", revoked_at, &admin()).await.unwrap();
    assert_eq!(decided(store.record_entry(attempt("scan-1", pass_id(2))).await.unwrap()).0, Ok(()));
    store.revoke(pass_id(3), "lost", revoked_at, &admin()).await.unwrap();

    let now = at("2026-11-28T00:00:00Z");
    let lists = |store: &S| {
        let store = store.clone();
        async move {
            let mut lists = Vec::new();
            for after in 0..=4 {
                lists.push(store.status_events(after, now).await.unwrap());
            }
            lists
        }
    };
    let before = lists(store).await;
    assert_eq!(before[0].sequence, 3);
    assert_eq!(before[0].entries.iter().map(|e| e.pass_id).collect::<Vec<_>>(), vec![pass_id(2)]);

    // The events of the expired passes go (on SQLite, all but the newest, which carries the
    // sequence); a full list, and a delta from before, within or after the pruned range, are
    // what they were.
    assert!(prune_all(store, PruneKind::StatusEvents, now - TimeDelta::hours(12), 1).await >= 1);
    assert_eq!(lists(store).await, before);

    // Numbering goes on from where it was.
    store.revoke(pass_id(2), "fraud", now, &admin()).await.unwrap();
    let full = store.status_events(0, now).await.unwrap();
    assert_eq!(full.sequence, 4);
    let delta = store.status_events(3, now).await.unwrap();
    assert_eq!(delta.entries.len(), 1);
    assert_eq!((delta.entries[0].pass_id, &delta.entries[0].event), (pass_id(2), &PassEvent::Revoked));
    assert_eq!(store.status_events(1, now).await.unwrap(), full);
}

pub async fn pruning_beside_issuance_fails_no_issue<S: TestBackend>(store: &S) {
    let old = at("2026-01-01T00:00:00Z");
    store.record_audits((0..300).map(|n| verification(n, old + TimeDelta::seconds(n.into()))).collect()).await.unwrap();
    let cutoff = at("2026-06-01T00:00:00Z");
    let pruner = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut audit = 0;
            // Names too, with a cutoff every pass has ended by: it updates the rows the issues
            // insert, while they insert them.
            loop {
                let removed = store.prune(PruneKind::VerificationAudit, cutoff, 7).await.unwrap();
                audit += removed;
                store.prune(PruneKind::HolderNames, at("2031-01-01T00:00:00Z"), 3).await.unwrap();
                if removed == 0 {
                    return audit;
                }
            }
        })
    };
    let issues: Vec<_> = (0..40u32)
        .map(|n| {
            let store = store.clone();
            tokio::spawn(async move { store.issue(new_pass(n, n as u8, "2026-11"), LIMIT).await })
        })
        .collect();
    for (n, issue) in issues.into_iter().enumerate() {
        match issue.await.unwrap() {
            Ok(IssueOutcome::Issued(_)) => {}
            other => panic!("issue {n}: {other:?}"),
        }
    }
    assert_eq!(pruner.await.unwrap(), 300);
    let rows = audit_times(store).await;
    assert_eq!(rows.len(), 40);
    assert!(rows.iter().all(|r| r.0 == AuditAction::Issue && r.1 == AuditOutcome::Issued), "{rows:?}");
    for n in 0..40 {
        assert!(store.pass(pass_id(n)).await.unwrap().is_some(), "pass {n}");
    }
}
