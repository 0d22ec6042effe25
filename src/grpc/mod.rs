//! The gRPC edge: generated types, conversions, status mapping and the three services.

mod checkpoint;
mod convert;
mod issuance;
mod keys;
mod status;

use std::sync::Arc;

use crate::clock::Clock;
use crate::keys::{HashingSecret, KeyRing, PassSigner};
use crate::policy::IssuancePolicy;
use crate::store::Store;

pub use checkpoint::CheckpointHandler;
pub use convert::{datetime as datetime_of, summary_message as summary_of, timestamp as timestamp_of};
pub use issuance::IssuanceHandler;
pub use keys::KeyHandler;
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
