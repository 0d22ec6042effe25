//! Persistence behind one trait: passes, the monthly quota, revocations, entries, scans and
//! the audit trail.
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
    /// Set once used.
    pub entry: Option<EntryRecord>,
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
}

impl AuditAction {
    /// Every action.
    pub const ALL: [Self; 4] = [Self::Issue, Self::Revoke, Self::Verify, Self::Admit];

    /// Lower-case name, as stored and printed.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Issue => "issue",
            Self::Revoke => "revoke",
            Self::Verify => "verify",
            Self::Admit => "admit",
        }
    }

    /// The action named by [`AuditAction::as_str`].
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == name)
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
            | Self::ScanIdConflict => None,
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

/// A storage fault. Callers log it and answer `internal` or `unavailable`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database could not be reached or written (busy, disk full, read-only, gone).
    #[error("database unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
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
    /// takes the write lock, tries a write that matches nothing, and rolls back.
    async fn probe_writable(&self) -> Result<(), StoreError>;
}
