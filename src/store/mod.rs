//! Persistence behind one trait: passes, the monthly quota, revocations, entries, scans, the
//! journals of offline checkpoints with the double entries they reveal, and the audit trail.
//! `retention` prunes, in small batches through [`Store::prune`], what is past its retention
//! period.
//!
//! The rules that need atomicity live here: counting the quota and inserting the pass is one
//! transaction, and using up a pass is one conditional update; the audit row of an issue, a
//! revocation or an entry is written in the transaction of the change it records. Permit and
//! phone numbers are never stored: the quota is keyed on a keyed hash of the permit number.
//!
//! Idempotency keys (`request_id`, `scan_id`) are scoped to the calling identity: the same key
//! from two callers is two requests.

mod metered;
mod postgres;
pub mod retention;
mod rows;
mod rules;
mod sqlite;

#[cfg(test)]
mod behaviour;

use std::net::SocketAddr;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::access::{Caller, Role};
use epass_core::ids::{KeyId, PassId};
use epass_core::journal::EntryHash;
use epass_core::pass::{Modes, TransportMode, SIGNATURE_LEN};
use epass_core::verify::{EntryRecord, Reason};

pub use metered::MeteredStore;
pub use postgres::{PostgresSettings, PostgresStore, SchemaTooNew};
pub use sqlite::SqliteStore;

/// Scratch PostgreSQL databases for tests, the library's and those in `tests/`.
#[doc(hidden)]
pub use postgres::test_support as postgres_test_support;

/// The caller of the rows written before callers existed (migration 0003): nobody knows who
/// sent them. No configured caller can have this name (it has spaces), so none inherits their
/// idempotency keys.
pub const LEGACY_CALLER: &str = "legacy (unauthenticated)";

/// Who makes a call and from where: what scopes idempotency keys and signs the audit rows.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Actor {
    /// The authenticated caller.
    pub caller: Caller,
    /// The remote address of its connection, when the transport knows it.
    pub peer: Option<SocketAddr>,
}

/// A signed pass to insert, with what the quota and idempotency need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPass {
    /// The pass as stored.
    pub pass: StoredPass,
    /// Keyed hash of the permit number: the quota is counted on it.
    pub holder_key: [u8; 32],
    /// The quota month, `YYYY-MM` in China Standard Time, of the issue time.
    pub quota_month: String,
    /// Who asks: `request_id` is unique among this caller's requests, and the audit row names it.
    pub actor: Actor,
    /// The caller's idempotency key.
    pub request_id: String,
    /// Keyed digest of the whole application, to tell a retry from a different request.
    pub fingerprint: [u8; 32],
}

/// What the store keeps of a pass: everything but the permit number in clear.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPass {
    /// The pass id.
    pub pass_id: PassId,
    /// The signing key.
    pub key_id: KeyId,
    /// The signature: with the application it rebuilds the exact envelope for a retry.
    pub signature: [u8; SIGNATURE_LEN],
    /// Latin name, if any.
    pub name_latin: Option<String>,
    /// Chinese name, if any.
    pub name_chinese: Option<String>,
    /// The masked permit number, for display.
    pub permit_masked: String,
    /// Issue time.
    pub issued_at: DateTime<Utc>,
    /// Start of validity.
    pub valid_from: DateTime<Utc>,
    /// End of validity (exclusive).
    pub valid_until: DateTime<Utc>,
    /// Allowed modes.
    pub modes: Modes,
    /// Entries allowed (1).
    pub entries_allowed: u32,
}

/// A pass with its current state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PassRecord {
    /// The pass.
    pub pass: StoredPass,
    /// Set once revoked.
    pub revocation: Option<Revocation>,
    /// Set once used: the first entry by recorded time.
    pub entry: Option<EntryRecord>,
    /// The pass's other entries, oldest first: admissions by checkpoints that were offline
    /// ([`Store::sync_offline_entries`]) of a pass that had an entry already, or that one of
    /// them replaced as the entry.
    pub double_entries: Vec<EntryRecord>,
}

/// When and why a pass was revoked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    /// When.
    pub revoked_at: DateTime<Utc>,
    /// Why, as the revoker wrote it.
    pub reason: String,
}

/// What became of an issuance.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)] // one per call; boxing would buy nothing
pub enum IssueOutcome {
    /// Inserted.
    Issued(PassRecord),
    /// The request id was seen before with the same fingerprint: the earlier pass.
    Replayed(PassRecord),
    /// The request id was seen before with a different fingerprint. Nothing changed.
    RequestIdConflict,
    /// The person already has `limit` passes this month. Nothing changed.
    QuotaExhausted,
}

/// What a retry lookup found.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)] // one per call; boxing would buy nothing
pub enum RequestLookup {
    /// No request with this id.
    New,
    /// Same id, same fingerprint: the pass issued then.
    Replay(PassRecord),
    /// Same id, different fingerprint.
    Conflict,
}

/// A scan to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryAttempt {
    /// Who scans: `scan_id` is unique among this caller's scans, and the audit row names it.
    pub actor: Actor,
    /// The scanner's idempotency key.
    pub scan_id: String,
    /// The authentic pass scanned.
    pub pass_id: PassId,
    /// Where.
    pub checkpoint_id: String,
    /// The checkpoint's mode.
    pub mode: TransportMode,
    /// When.
    pub at: DateTime<Utc>,
    /// What offline verification (window, mode) concluded; the store adds revocation and use.
    pub offline_verdict: Result<(), Reason>,
}

/// What became of a scan.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)] // one per call; boxing would buy nothing
pub enum EntryOutcome {
    /// The scan was decided now, or earlier for a resent scan (`replayed`).
    Decided {
        /// `Ok` when the holder was admitted by this scan.
        verdict: Result<(), Reason>,
        /// The pass after the scan; `None` only with [`Reason::UnknownPass`].
        record: Option<PassRecord>,
        /// Whether this answers a scan id recorded before.
        replayed: bool,
    },
    /// The scan id was recorded before for another pass, checkpoint or mode. Nothing changed.
    ScanIdConflict,
}

/// An admission an offline checkpoint recorded in its journal, its pass verified by the
/// server and its hash checked against its fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfflineEntry {
    /// Position in the journal, from 1.
    pub seq: u64,
    /// The entry's hash (`epass_core::journal`).
    pub hash: EntryHash,
    /// The hash of the entry before it.
    pub prev_hash: EntryHash,
    /// The checkpoint's idempotency key.
    pub scan_id: String,
    /// The authentic pass admitted.
    pub pass_id: PassId,
    /// Where.
    pub checkpoint_id: String,
    /// The checkpoint's mode.
    pub mode: TransportMode,
    /// When the holder was admitted, by the checkpoint's clock.
    pub recorded_at: DateTime<Utc>,
}

impl OfflineEntry {
    /// The entry as a pass's entry.
    pub fn entry_record(&self) -> EntryRecord {
        EntryRecord {
            recorded_at: self.recorded_at,
            checkpoint_id: self.checkpoint_id.clone(),
            mode: self.mode,
            scan_id: self.scan_id.clone(),
        }
    }
}

/// A batch of a journal to sync, its chain already checked within the batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfflineBatch {
    /// Who uploads: journals and scan ids are scoped to this caller.
    pub actor: Actor,
    /// The journal's id.
    pub journal_id: String,
    /// Consecutive entries of the journal, in order.
    pub entries: Vec<OfflineEntry>,
    /// The server time of the sync.
    pub at: DateTime<Utc>,
}

/// What became of one synced entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncKind {
    /// The entry used its pass up.
    Recorded,
    /// Synced before: nothing changed.
    AlreadyRecorded,
    /// The pass had another entry; both are kept, the earlier by recorded time as the entry.
    Conflict,
}

/// One synced entry's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncedEntry {
    /// The entry's sequence.
    pub seq: u64,
    /// What became of it.
    pub kind: SyncKind,
    /// The pass's entry, after this one was synced.
    pub entry: EntryRecord,
    /// The other entry of a conflict: this one, or the entry this one replaced; for a
    /// re-upload, this one when it is a double entry.
    pub double_entry: Option<EntryRecord>,
}

/// Why the store refused a whole batch; nothing of it was recorded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SyncRefusal {
    /// An entry synced before comes back different.
    #[error("entry {seq} differs from the entry {seq} acknowledged before: the journal was changed after upload")]
    Altered {
        /// The entry.
        seq: u64,
    },
    /// The first new entry does not continue the entries acknowledged before.
    #[error("entry {seq} does not continue the journal, acknowledged up to entry {acknowledged}: an entry was removed or changed")]
    BrokenChain {
        /// The entry.
        seq: u64,
        /// The last entry acknowledged.
        acknowledged: u64,
    },
    /// A new entry's scan id was used before by the caller.
    #[error("entry {seq}: scan id {scan_id:?} was used before")]
    ScanIdReused {
        /// The entry.
        seq: u64,
        /// The scan id.
        scan_id: String,
    },
    /// The pass is authentic, but the server has no record of it.
    #[error("entry {seq}: the server has no record of pass {pass_id}")]
    UnknownPass {
        /// The entry.
        seq: u64,
        /// The pass.
        pass_id: PassId,
    },
}

impl SyncRefusal {
    /// The entry refused.
    pub const fn seq(&self) -> u64 {
        match self {
            Self::Altered { seq }
            | Self::BrokenChain { seq, .. }
            | Self::ScanIdReused { seq, .. }
            | Self::UnknownPass { seq, .. } => *seq,
        }
    }
}

/// What became of a revocation.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)] // one per call; boxing would buy nothing
pub enum RevokeOutcome {
    /// No such pass.
    NotFound,
    /// Revoked now, or already revoked before (the first revocation stands).
    Revoked(PassRecord),
}

/// Status list content read from the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusEvents {
    /// The sequence of the latest event recorded (0 when none).
    pub sequence: u64,
    /// The events after the sequence asked for, of passes still valid, oldest first.
    pub entries: Vec<epass_core::status::StatusEntry>,
}

/// What a call did, as the audit trail names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuditAction {
    /// `IssuePass`.
    Issue,
    /// `RevokePass`.
    Revoke,
    /// `VerifyPass` (no side effect).
    Verify,
    /// `RecordEntry`.
    Admit,
    /// `SyncEntries`: an admission an offline checkpoint recorded, synced.
    AdmitOffline,
}

impl AuditAction {
    /// Every action.
    pub const ALL: [Self; 5] = [Self::Issue, Self::Revoke, Self::Verify, Self::Admit, Self::AdmitOffline];

    /// Lower-case name, as stored and printed.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Issue => "issue",
            Self::Revoke => "revoke",
            Self::Verify => "verify",
            Self::Admit => "admit",
            Self::AdmitOffline => "admit_offline",
        }
    }

    /// The action named by [`AuditAction::as_str`].
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == name)
    }

    /// Whether the call changes nothing, so that its rows are kept for the shorter period of
    /// verifications ([`PruneKind::VerificationAudit`]) rather than that of changes.
    pub const fn is_read_only(self) -> bool {
        match self {
            Self::Verify => true,
            Self::Issue | Self::Revoke | Self::Admit | Self::AdmitOffline => false,
        }
    }
}

/// How a call ended, as the audit trail names it. Refusals are recorded too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuditOutcome {
    /// Issue: a pass was issued.
    Issued,
    /// Issue: refused, the holder's monthly applications are used up.
    QuotaExhausted,
    /// Issue: refused, the request id was used before for a different application.
    RequestIdConflict,
    /// Revoke: the pass was revoked by this call.
    Revoked,
    /// Revoke: the pass was revoked before; the first revocation stands.
    AlreadyRevoked,
    /// Revoke: no pass with this id.
    NotFound,
    /// Verify or admit: the pass was accepted (for admit: the holder was admitted).
    Accepted,
    /// Verify or admit: the pass was rejected.
    Rejected(Reason),
    /// Admit: refused, the scan id was used before for another pass.
    ScanIdConflict,
    /// Offline admission: the pass had another entry earlier by recorded time, so this one is
    /// kept as a double entry; or (on the row of the entry it displaced) a later entry that an
    /// earlier offline one replaced as the pass's entry.
    DoubleEntry,
}

impl AuditOutcome {
    /// Lower-case name, as stored and printed; a rejection's reason is apart
    /// ([`AuditOutcome::reason`]).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Issued => "issued",
            Self::QuotaExhausted => "quota_exhausted",
            Self::RequestIdConflict => "request_id_conflict",
            Self::Revoked => "revoked",
            Self::AlreadyRevoked => "already_revoked",
            Self::NotFound => "not_found",
            Self::Accepted => "accepted",
            Self::Rejected(_) => "rejected",
            Self::ScanIdConflict => "scan_id_conflict",
            Self::DoubleEntry => "double_entry",
        }
    }

    /// The reason of a rejection.
    pub const fn reason(self) -> Option<Reason> {
        match self {
            Self::Rejected(reason) => Some(reason),
            Self::Issued
            | Self::QuotaExhausted
            | Self::RequestIdConflict
            | Self::Revoked
            | Self::AlreadyRevoked
            | Self::NotFound
            | Self::Accepted
            | Self::ScanIdConflict
            | Self::DoubleEntry => None,
        }
    }

    /// The outcome named by [`AuditOutcome::as_str`], with the reason of a rejection.
    pub fn from_name(name: &str, reason: Option<Reason>) -> Option<Self> {
        let outcome = match (name, reason) {
            ("rejected", Some(reason)) => Self::Rejected(reason),
            (_, Some(_)) => return None,
            ("issued", None) => Self::Issued,
            ("quota_exhausted", None) => Self::QuotaExhausted,
            ("request_id_conflict", None) => Self::RequestIdConflict,
            ("revoked", None) => Self::Revoked,
            ("already_revoked", None) => Self::AlreadyRevoked,
            ("not_found", None) => Self::NotFound,
            ("accepted", None) => Self::Accepted,
            ("scan_id_conflict", None) => Self::ScanIdConflict,
            ("double_entry", None) => Self::DoubleEntry,
            _ => return None,
        };
        Some(outcome)
    }
}

/// An audit row to write on its own, for a call that changes nothing (a verification, a scan
/// of a QR that is not an authentic pass, a retry refused before the store is asked to change
/// anything). Calls that change something write theirs in their own transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// When the call was decided.
    pub at: DateTime<Utc>,
    /// What was asked.
    pub action: AuditAction,
    /// How it ended.
    pub outcome: AuditOutcome,
    /// The authentic pass concerned, if any.
    pub pass_id: Option<PassId>,
    /// Who asked, from where.
    pub actor: Actor,
    /// The caller's `request_id` or `scan_id`.
    pub request_key: Option<String>,
    /// The checkpoint, for verify and admit.
    pub checkpoint_id: Option<String>,
    /// The checkpoint's mode, for verify and admit.
    pub mode: Option<TransportMode>,
    /// The masked permit number, for issue.
    pub permit_masked: Option<String>,
}

/// One row of the audit trail as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// Position in the order rows were written: commit order on SQLite (one writer); on
    /// PostgreSQL the order of insertion, which concurrent transactions on several replicas
    /// may commit out of, and which may skip numbers after a rollback. Only ties of `at`
    /// are broken by it.
    pub seq: u64,
    /// When the call was decided (server clock).
    pub at: DateTime<Utc>,
    /// What was asked.
    pub action: AuditAction,
    /// How it ended.
    pub outcome: AuditOutcome,
    /// The pass concerned; `None` for a refused application or a QR that was not authentic.
    pub pass_id: Option<PassId>,
    /// The caller's name ([`LEGACY_CALLER`] for rows from before callers existed).
    pub caller: String,
    /// The caller's role; `None` for rows from before callers existed.
    pub role: Option<Role>,
    /// The remote address of the caller's connection, when known.
    pub peer: Option<SocketAddr>,
    /// The caller's `request_id` or `scan_id`.
    pub request_key: Option<String>,
    /// The checkpoint, for verify and admit.
    pub checkpoint_id: Option<String>,
    /// The checkpoint's mode, for verify and admit.
    pub mode: Option<TransportMode>,
    /// The masked permit number, on issue rows.
    pub permit_masked: Option<String>,
}

/// What one pruning batch removes ([`Store::prune`]), each past its own retention period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PruneKind {
    /// Audit rows of read-only calls ([`AuditAction::is_read_only`]) decided before the cutoff.
    VerificationAudit,
    /// Every other audit row (issues, revocations, entries, refusals among them) decided
    /// before the cutoff.
    ChangeAudit,
    /// Scans recorded before the cutoff: a scan resent after that is decided again (and
    /// refused as `ALREADY_USED` if it had admitted), and its scan id may be used again.
    Scans,
    /// Status events of passes whose validity ended before the cutoff. A status list lists
    /// only passes still valid, so none of these is in any list, full or delta; on SQLite the
    /// newest event is kept, since it carries the list's sequence.
    StatusEvents,
    /// The holder's names on passes that ended (expired, used or revoked, whichever came
    /// first) before the cutoff: set to none. The pass keeps everything else.
    HolderNames,
}

impl PruneKind {
    /// Every kind, in the order the pruning task runs them.
    pub const ALL: [Self; 5] =
        [Self::VerificationAudit, Self::ChangeAudit, Self::Scans, Self::StatusEvents, Self::HolderNames];

    /// Lower-case name, for logs and metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::VerificationAudit => "verification_audit",
            Self::ChangeAudit => "change_audit",
            Self::Scans => "scans",
            Self::StatusEvents => "status_events",
            Self::HolderNames => "holder_names",
        }
    }
}

/// The audit actions of [`PruneKind::VerificationAudit`] (`true`) or of
/// [`PruneKind::ChangeAudit`] (`false`), as an SQL list of string literals: `'verify'`.
fn audit_actions_sql(read_only: bool) -> String {
    AuditAction::ALL
        .into_iter()
        .filter(|action| action.is_read_only() == read_only)
        .map(|action| format!("'{}'", action.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A storage fault. Callers log it and answer `internal` or `unavailable`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database could not be reached or written (busy, read-only, gone).
    #[error("database unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    /// The database could not be written because its disk is full; nothing of the write was
    /// kept. Like [`StoreError::Unavailable`] it passes once space is freed, but an operator
    /// must free it: callers say so.
    #[error("database disk full: {0}")]
    DiskFull(#[source] sqlx::Error),
    /// Any other database error.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// A migration failed.
    #[error("database migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    /// A stored row that this code cannot read back.
    #[error("corrupt row: {0}")]
    Corrupt(String),
}

/// The storage the server needs.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Finds an earlier request of `caller` with this id.
    async fn lookup_request(
        &self,
        caller: &str,
        request_id: &str,
        fingerprint: &[u8; 32],
    ) -> Result<RequestLookup, StoreError>;

    /// In one transaction: answers a replayed request id (of the same caller), or counts the
    /// holder's passes in the month and inserts the new one only if fewer than `monthly_limit`
    /// exist. Writes the audit row of an issue or a refusal in the same transaction; a replay
    /// writes none.
    async fn issue(&self, new: NewPass, monthly_limit: u32) -> Result<IssueOutcome, StoreError>;

    /// The pass with this id.
    async fn pass(&self, pass_id: PassId) -> Result<Option<PassRecord>, StoreError>;

    /// Revokes a pass; the first revocation stands. Writes the audit row (revoked, already
    /// revoked, not found) in the same transaction.
    async fn revoke(
        &self,
        pass_id: PassId,
        reason: &str,
        at: DateTime<Utc>,
        actor: &Actor,
    ) -> Result<RevokeOutcome, StoreError>;

    /// In one transaction: answers a resent scan (same caller, same scan id), or decides the
    /// scan (offline verdict, revocation, use), uses the pass up with one conditional update if
    /// admitted, records the scan and writes its audit row. A resent scan writes none; a scan id
    /// reused for another pass writes a `scan_id_conflict` row.
    async fn record_entry(&self, attempt: EntryAttempt) -> Result<EntryOutcome, StoreError>;

    /// In one transaction, all or nothing: checks that the batch continues the caller's journal
    /// (each entry acknowledged before unchanged, the first new one following the last
    /// acknowledged), that no new entry reuses a scan id and that every pass is known, and
    /// refuses the batch otherwise; then records each new entry as the pass's entry (a new
    /// use, with its status event) or as a double entry, keeping the earlier by recorded time
    /// as the entry, with its scan and its audit rows, and moves the journal on.
    async fn sync_offline_entries(
        &self,
        batch: OfflineBatch,
    ) -> Result<Result<Vec<SyncedEntry>, SyncRefusal>, StoreError>;

    /// The revocations and uses recorded after sequence `after` (0: all) of passes whose
    /// validity ends after `now`, and the current sequence: the content of a status list or
    /// delta.
    async fn status_events(&self, after: u64, now: DateTime<Utc>) -> Result<StatusEvents, StoreError>;

    /// Writes the audit rows of calls that changed nothing (verifications, refusals decided
    /// before the store), all in one transaction: one commit for the batch.
    async fn record_audits(&self, records: Vec<AuditRecord>) -> Result<(), StoreError>;

    /// The audit rows of a pass, oldest first: by the time each call was decided, ties by
    /// [`AuditEntry::seq`] (a verification's row is written after its answer, so it may be
    /// written after a later call's).
    async fn audit_trail(&self, pass_id: PassId) -> Result<Vec<AuditEntry>, StoreError>;

    /// Checks, cheaply and without changing anything, that the database can be written now:
    /// takes the write lock, tries a write that matches nothing, and rolls back. SQLite also
    /// checks that its disk has room for the next writes ([`StoreError::DiskFull`] if not).
    async fn probe_writable(&self) -> Result<(), StoreError>;

    /// In one short transaction, removes at most `limit` rows of `kind` older than `cutoff`
    /// ([`PruneKind`] says what each kind's time is) and returns how many it removed (for
    /// [`PruneKind::HolderNames`], how many passes lost their names). Never removes a pass,
    /// so the quota and idempotent retries of issues are unaffected. The caller computes the
    /// cutoff from its clock and repeats until fewer than `limit` come back.
    async fn prune(&self, kind: PruneKind, cutoff: DateTime<Utc>, limit: u32) -> Result<u64, StoreError>;
}
