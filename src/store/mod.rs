//! Persistence behind one trait: passes, the monthly quota, revocations, entries and scans.
//!
//! The rules that need atomicity live here: counting the quota and inserting the pass is one
//! transaction, and using up a pass is one conditional update. Permit and phone numbers are
//! never stored: the quota is keyed on a keyed hash of the permit number.

mod sqlite;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::ids::{KeyId, PassId};
use crate::pass::{Modes, TransportMode, SIGNATURE_LEN};
use crate::verify::{EntryRecord, Reason};

pub use sqlite::SqliteStore;

/// A signed pass to insert, with what the quota and idempotency need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPass {
    /// The pass as stored.
    pub pass: StoredPass,
    /// Keyed hash of the permit number: the quota is counted on it.
    pub holder_key: [u8; 32],
    /// The quota month, `YYYY-MM` in China Standard Time, of the issue time.
    pub quota_month: String,
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
    /// The scan id was recorded before for another pass. Nothing changed.
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
    pub entries: Vec<crate::status::StatusEntry>,
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
    /// Finds an earlier request with this id.
    async fn lookup_request(&self, request_id: &str, fingerprint: &[u8; 32]) -> Result<RequestLookup, StoreError>;

    /// In one transaction: answers a replayed request id, or counts the holder's passes in the
    /// month and inserts the new one only if fewer than `monthly_limit` exist.
    async fn issue(&self, new: NewPass, monthly_limit: u32) -> Result<IssueOutcome, StoreError>;

    /// The pass with this id.
    async fn pass(&self, pass_id: PassId) -> Result<Option<PassRecord>, StoreError>;

    /// Revokes a pass; the first revocation stands.
    async fn revoke(&self, pass_id: PassId, reason: &str, at: DateTime<Utc>) -> Result<RevokeOutcome, StoreError>;

    /// In one transaction: answers a resent scan, or decides the scan (offline verdict,
    /// revocation, use), uses the pass up with one conditional update if admitted, and records
    /// the scan.
    async fn record_entry(&self, attempt: EntryAttempt) -> Result<EntryOutcome, StoreError>;

    /// The revocations and uses recorded after sequence `after` (0: all) of passes still valid
    /// at `now`, and the current sequence: the content of a status list or delta.
    async fn status_events(&self, after: u64, now: DateTime<Utc>) -> Result<StatusEvents, StoreError>;

    /// How many passes count against the holder's quota in the month.
    async fn passes_in_month(&self, holder_key: &[u8; 32], quota_month: &str) -> Result<u32, StoreError>;
}
