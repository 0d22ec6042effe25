//! `KeyService`: what offline verifiers need, with no credentials: the keys, the trust list
//! and the status list (in full, as deltas, or streamed).

use std::pin::Pin;
use std::sync::Arc;

use futures_util::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::convert::timestamp;
use super::pb::{self, key_service_server::KeyService};
use super::{ApiError, ServiceState};
use epass_core::keys::{KeyRing, KeyStatus};
use epass_core::status::StatusList;

/// Serves `KeyService`.
#[derive(Debug, Clone)]
pub struct KeyHandler {
    state: Arc<ServiceState>,
    keys: pb::ListVerificationKeysResponse,
}

fn keys_message(ring: &KeyRing) -> pb::ListVerificationKeysResponse {
    let keys = ring
        .keys()
        .iter()
        .map(|key| pb::VerificationKey {
            key_id: key.key_id().to_string(),
            public_key: key.public_key().to_vec(),
            status: match key.status {
                KeyStatus::Active => pb::KeyStatus::Active,
                KeyStatus::Retired => pb::KeyStatus::Retired,
                KeyStatus::Revoked => pb::KeyStatus::Revoked,
            } as i32,
            valid_from: key.validity.from.map(timestamp),
            valid_until: key.validity.until.map(timestamp),
        })
        .collect();
    pb::ListVerificationKeysResponse { keys }
}

/// A signed status list: everything after `since` (0: everything), signed now.
///
/// The journal numbers its first event 1, so sequence 0 is the empty journal and a list on base
/// 0 is both the full list and the delta on the empty list: a caller holding sequence 0 (a fresh
/// server's first list) asks with 0, and a watcher that sent sequence 0 sends the next events on
/// base 0 (docs/FORMAT.md, *Full lists and deltas*; `tests/status_sequence_zero.rs`).
pub(crate) async fn signed_status_list(
    state: &ServiceState,
    since: u64,
) -> Result<pb::GetStatusListResponse, ApiError> {
    let now = state.clock.now();
    // Entries stay listed a while past their pass's end: a checkpoint may accept a pass up to
    // its clock tolerance late, and must still see it used.
    let listed_after = now - epass_core::verify::MAX_CLOCK_TOLERANCE;
    let mut events = state.store.status_events(since, listed_after).await?;
    let mut base_sequence = since;
    if since > events.sequence {
        // The caller holds a sequence this server never reached (a restored database): start
        // it over with the full list.
        events = state.store.status_events(0, listed_after).await?;
        base_sequence = 0;
    }
    let issued_at = chrono::DateTime::from_timestamp(now.timestamp(), 0).unwrap_or(now);
    let list = StatusList {
        sequence: events.sequence,
        issued_at,
        stale_after: issued_at + state.status_list_lifetime,
        base_sequence,
        entries: events.entries,
    };
    Ok(pb::GetStatusListResponse {
        status_list: list.sign(&state.signer),
        sequence: list.sequence,
        base_sequence,
        stale_after: Some(timestamp(list.stale_after)),
    })
}

impl KeyHandler {
    /// A handler over the shared state.
    pub fn new(state: Arc<ServiceState>) -> Self {
        let keys = keys_message(&state.keys);
        Self { state, keys }
    }
}

type StatusStream = Pin<Box<dyn Stream<Item = Result<pb::GetStatusListResponse, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl KeyService for KeyHandler {
    async fn list_verification_keys(
        &self,
        request: Request<pb::ListVerificationKeysRequest>,
    ) -> Result<Response<pb::ListVerificationKeysResponse>, Status> {
        let pb::ListVerificationKeysRequest {} = request.into_inner();
        Ok(Response::new(self.keys.clone()))
    }

    async fn get_trust_list(
        &self,
        request: Request<pb::GetTrustListRequest>,
    ) -> Result<Response<pb::GetTrustListResponse>, Status> {
        let pb::GetTrustListRequest {} = request.into_inner();
        let trust = &self.state.trust;
        Ok(Response::new(pb::GetTrustListResponse {
            trust_list: trust.bytes.clone(),
            sequence: trust.list.sequence,
            stale_after: Some(timestamp(trust.list.stale_after)),
        }))
    }

    async fn get_status_list(
        &self,
        request: Request<pb::GetStatusListRequest>,
    ) -> Result<Response<pb::GetStatusListResponse>, Status> {
        let pb::GetStatusListRequest { since_sequence } = request.into_inner();
        Ok(Response::new(signed_status_list(&self.state, since_sequence).await?))
    }

    type WatchStatusListStream = StatusStream;

    async fn watch_status_list(
        &self,
        request: Request<pb::GetStatusListRequest>,
    ) -> Result<Response<Self::WatchStatusListStream>, Status> {
        let pb::GetStatusListRequest { since_sequence } = request.into_inner();
        let first = signed_status_list(&self.state, since_sequence).await?;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let state = self.state.clone();
        tokio::spawn(async move {
            let mut changes = state.status_changes.subscribe();
            let mut closing = state.closing.subscribe();
            let mut sent = first.sequence;
            if tx.send(Ok(first)).await.is_err() {
                return;
            }
            // Refresh well before the last list sent goes stale, even when nothing changed.
            let refresh = (state.status_list_lifetime / 2).to_std().unwrap_or(std::time::Duration::from_secs(60));
            loop {
                let refreshing = tokio::select! {
                    changed = changes.changed() => if changed.is_err() { return } else { false },
                    _ = closing.wait_for(|closing| *closing) => return,
                    () = tokio::time::sleep(refresh) => true,
                };
                let delta = signed_status_list(&state, sent).await.map_err(Status::from);
                if let Ok(delta) = &delta {
                    // A change this watcher has already sent (seen twice: recorded here, then
                    // found by the journal poller) needs no message; a refresh always sends.
                    if !refreshing && delta.sequence == sent {
                        continue;
                    }
                    sent = delta.sequence;
                }
                if tx.send(delta).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// How often the journal is read for changes made by other processes on the same database
/// (other replicas, or another server on the same SQLite file): the longest a status list
/// watcher here waits to hear of them, plus the read.
pub const JOURNAL_POLL: std::time::Duration = std::time::Duration::from_millis(200);

/// Reads the status journal every [`JOURNAL_POLL`] and tells the status list watchers when its
/// sequence moved: uses and revocations recorded by any process sharing the database reach
/// the watchers of this one. Ends when the server starts closing.
pub async fn poll_journal(state: Arc<ServiceState>) {
    let mut closing = state.closing.subscribe();
    let mut seen: Option<u64> = None;
    loop {
        tokio::select! {
            _ = closing.wait_for(|closing| *closing) => return,
            () = tokio::time::sleep(JOURNAL_POLL) => {}
        }
        let after = seen.unwrap_or(u64::MAX);
        match state.store.status_events(after, state.clock.now()).await {
            Ok(events) => {
                // The first read wakes the watchers too: a change made elsewhere between a
                // watcher's first list and this read would otherwise go unnoticed. Watchers
                // send nothing for a wake that brings no new sequence.
                if seen != Some(events.sequence) {
                    state.status_changed();
                }
                seen = Some(events.sequence);
            }
            Err(error) => tracing::debug!(%error, "status journal not read"),
        }
    }
}
