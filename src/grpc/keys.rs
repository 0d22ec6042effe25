//! `KeyService`: the public keys that verify passes.

use tonic::{Request, Response, Status};

use super::convert::timestamp;
use super::pb::{self, key_service_server::KeyService};
use crate::keys::{KeyRing, KeyStatus};

/// Serves `KeyService`.
#[derive(Debug, Clone)]
pub struct KeyHandler {
    keys: pb::ListVerificationKeysResponse,
}

impl KeyHandler {
    /// A handler listing the ring's keys (fixed for the life of the server).
    pub fn new(ring: &KeyRing) -> Self {
        let keys = ring
            .keys()
            .iter()
            .map(|key| pb::VerificationKey {
                key_id: key.key_id().to_string(),
                public_key: key.public_key().to_vec(),
                status: match key.status {
                    KeyStatus::Active => pb::KeyStatus::Active,
                    KeyStatus::Retired => pb::KeyStatus::Retired,
                } as i32,
                valid_from: key.validity.from.map(timestamp),
                valid_until: key.validity.until.map(timestamp),
            })
            .collect();
        Self { keys: pb::ListVerificationKeysResponse { keys } }
    }
}

#[tonic::async_trait]
impl KeyService for KeyHandler {
    async fn list_verification_keys(
        &self,
        request: Request<pb::ListVerificationKeysRequest>,
    ) -> Result<Response<pb::ListVerificationKeysResponse>, Status> {
        let pb::ListVerificationKeysRequest {} = request.into_inner();
        Ok(Response::new(self.keys.clone()))
    }
}
