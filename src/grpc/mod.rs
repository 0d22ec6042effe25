//! The gRPC edge: generated types, conversions, status mapping and the three services.

mod audit;
mod checkpoint;
mod convert;
mod health;
mod issuance;
mod keys;
mod status;

use std::sync::Arc;

use crate::clock::Clock;
use crate::store::Store;
use epass_core::keys::{HashingSecret, KeyRing, PassSigner};
use epass_core::policy::IssuancePolicy;

pub use audit::{AuditQueue, DEFAULT_AUDIT_QUEUE_CAPACITY};
pub use checkpoint::CheckpointHandler;
pub use convert::{
    datetime as datetime_of, entry_message as entry_of, summary_message as summary_of, timestamp as timestamp_of,
};
pub use health::{watch_store_health, ClosingHealth, HealthWatchStream, PROBE_INTERVAL};
pub use issuance::IssuanceHandler;
pub use keys::{poll_journal, KeyHandler, JOURNAL_POLL};
pub use status::{ApiError, FieldViolation};

/// Types generated from `proto/epass/v1/epass.proto`. The core never names them; `convert`
/// is the one place that translates.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/epass.v1.rs"));

    /// The encoded file descriptor set, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/epass_descriptor.bin"));
}

/// What every handler shares.
pub struct ServiceState {
    /// Passes, quota, entries.
    pub store: Arc<dyn Store>,
    /// The active signing key.
    pub signer: PassSigner,
    /// Every key that verifies (the active one included).
    pub keys: KeyRing,
    /// Secret for keyed hashes of permit numbers and requests.
    pub secret: HashingSecret,
    /// The time source.
    pub clock: Arc<dyn Clock>,
    /// Issuance settings.
    pub policy: IssuancePolicy,
    /// The trust list the server signs under, as signed by the root.
    pub trust: SignedTrustList,
    /// How long a status list is good for after it is signed.
    pub status_list_lifetime: chrono::TimeDelta,
    /// Bumped after every revocation or entry, for status list watchers.
    pub status_changes: tokio::sync::watch::Sender<u64>,
    /// Set when the server starts shutting down, to end streams.
    pub closing: tokio::sync::watch::Sender<bool>,
    /// Audit rows of calls that changed nothing, written in batches.
    pub audit: audit::AuditQueue,
}

/// A trust list with the exact bytes the root signed.
#[derive(Debug, Clone)]
pub struct SignedTrustList {
    /// The signed bytes, served as they are.
    pub bytes: Vec<u8>,
    /// What they say.
    pub list: epass_core::trust::TrustList,
}

impl ServiceState {
    /// Tells status list watchers that something changed.
    pub fn status_changed(&self) {
        self.status_changes.send_modify(|n| *n = n.wrapping_add(1));
    }
}

impl std::fmt::Debug for ServiceState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceState")
            .field("signer", &self.signer)
            .field("keys", &self.keys)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}
