//! Health that follows the database: while it cannot be written, the server and the services
//! that write (`IssuanceService`, `CheckpointService`) report `NOT_SERVING`; once a write probe
//! succeeds they report `SERVING` again, with no restart.
//!
//! A [`Store`] decorator sees every store call. The first [`StoreError::Unavailable`] or
//! [`StoreError::DiskFull`] flips the health and starts one probe task, which tries
//! [`Store::probe_writable`] every [`PROBE_INTERVAL`] until it succeeds (on SQLite the probe
//! also asks the disk for room, so a full disk keeps `NOT_SERVING` until space is freed). The flip happens before the failing call returns, so a
//! client that got `UNAVAILABLE` already sees `NOT_SERVING`.
//!
//! [`ClosingHealth`] serves the health protocol itself, and ends `Watch` streams at shutdown once
//! they have carried `NOT_SERVING`, as `WatchStatusList` streams end: an open watch would
//! otherwise hold the server for its whole grace period.

use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures_util::{Stream, StreamExt as _};
use tonic_health::pb::health_server::Health;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
use tonic_health::server::{HealthReporter, HealthService};
use tonic_health::ServingStatus;

use super::pb::checkpoint_service_server::CheckpointServiceServer;
use super::pb::issuance_service_server::IssuanceServiceServer;
use super::{AuditQueue, CheckpointHandler, IssuanceHandler, ServiceState};
use crate::store::{
    Actor, AuditEntry, AuditRecord, EntryAttempt, EntryOutcome, IssueOutcome, NewPass, PassRecord, RequestLookup,
    RevokeOutcome, StatusEvents, Store, StoreError,
};
use epass_core::ids::PassId;

/// How often the database is probed while it cannot be written.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// Makes the health of `reporter` follow the writability of the state's store: replaces
/// `state.store` with a wrapper that watches its errors. Call it once, before the state is
/// shared. The `SERVING` it restores is never set once the state's `closing` is, so a shutdown's
/// `NOT_SERVING` stands.
pub fn watch_store_health(state: &mut ServiceState, reporter: HealthReporter) {
    let watched = WatchedStore::new(Arc::clone(&state.store), reporter, state.closing.subscribe());
    state.store = Arc::new(watched);
    // The audit rows' writer goes through the watched store too: a batch that cannot be
    // written says the database cannot be written. The unwatched queue has seen no row yet.
    state.audit = AuditQueue::start(Arc::clone(&state.store), state.audit.capacity());
}

/// The health service of `tonic_health`, whose `Watch` streams end once the server is closing
/// and they have sent `NOT_SERVING` (at shutdown every service is reported `NOT_SERVING` right
/// after `closing` is set). `Check` is `tonic_health`'s own.
pub struct ClosingHealth {
    inner: HealthService,
    closing: tokio::sync::watch::Receiver<bool>,
}

impl ClosingHealth {
    /// The health service of `reporter`, its watches ending once `closing` is set.
    pub fn new(reporter: HealthReporter, closing: tokio::sync::watch::Receiver<bool>) -> Self {
        Self { inner: HealthService::from_health_reporter(reporter), closing }
    }
}

impl std::fmt::Debug for ClosingHealth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClosingHealth").finish_non_exhaustive()
    }
}

/// A `Watch` stream of [`ClosingHealth`].
pub type HealthWatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, tonic::Status>> + Send>>;

const NOT_SERVING_CODE: i32 = tonic_health::pb::health_check_response::ServingStatus::NotServing as i32;

#[tonic::async_trait]
impl Health for ClosingHealth {
    async fn check(
        &self,
        request: tonic::Request<HealthCheckRequest>,
    ) -> Result<tonic::Response<HealthCheckResponse>, tonic::Status> {
        self.inner.check(request).await
    }

    type WatchStream = HealthWatchStream;

    async fn watch(
        &self,
        request: tonic::Request<HealthCheckRequest>,
    ) -> Result<tonic::Response<Self::WatchStream>, tonic::Status> {
        let updates = self.inner.watch(request).await?.into_inner();
        Ok(tonic::Response::new(until_closed(updates, self.closing.clone())))
    }
}

/// `updates` until the server is closing and `NOT_SERVING` has been sent.
fn until_closed<S>(updates: S, closing: tokio::sync::watch::Receiver<bool>) -> HealthWatchStream
where
    S: Stream<Item = Result<HealthCheckResponse, tonic::Status>> + Send + Unpin + 'static,
{
    struct Watch<S> {
        updates: S,
        closing: tokio::sync::watch::Receiver<bool>,
        /// Whether the last status sent was `NOT_SERVING`.
        not_serving_sent: bool,
    }
    let watch = Watch { updates, closing, not_serving_sent: false };
    Box::pin(futures_util::stream::unfold(watch, |mut watch| async move {
        loop {
            if *watch.closing.borrow() && watch.not_serving_sent {
                return None;
            }
            let next = tokio::select! {
                update = watch.updates.next() => Some(update),
                // `false` when the state went away: nothing will report again.
                open = async { watch.closing.wait_for(|closing| *closing).await.is_ok() } => {
                    if !open {
                        return None;
                    }
                    None
                }
            };
            let update = match next {
                Some(update) => update?,
                // Closing: the loop ends the stream if NOT_SERVING went out already; otherwise
                // the shutdown's NOT_SERVING is on its way.
                None if watch.not_serving_sent => continue,
                None => watch.updates.next().await?,
            };
            watch.not_serving_sent = matches!(&update, Ok(response) if response.status == NOT_SERVING_CODE);
            return Some((update, watch));
        }
    }))
}

/// The store with its health watcher.
struct WatchedStore {
    shared: Arc<Shared>,
}

impl WatchedStore {
    fn new(store: Arc<dyn Store>, reporter: HealthReporter, closing: tokio::sync::watch::Receiver<bool>) -> Self {
        let probing = tokio::sync::Mutex::new(false);
        Self { shared: Arc::new(Shared { store, reporter, closing, probing }) }
    }
}

struct Shared {
    store: Arc<dyn Store>,
    reporter: HealthReporter,
    closing: tokio::sync::watch::Receiver<bool>,
    /// Whether a probe task runs. Held across the health updates, so that a failure and a
    /// recovery are reported in the order they were decided.
    probing: tokio::sync::Mutex<bool>,
}

impl Shared {
    async fn set(&self, status: ServingStatus) {
        self.reporter.set_service_status("", status).await;
        self.reporter
            .set_service_status(<IssuanceServiceServer<IssuanceHandler> as tonic::server::NamedService>::NAME, status)
            .await;
        self.reporter
            .set_service_status(
                <CheckpointServiceServer<CheckpointHandler> as tonic::server::NamedService>::NAME,
                status,
            )
            .await;
    }

    /// After a store call: on `Unavailable` or `DiskFull`, reports `NOT_SERVING` and starts the
    /// probe task unless it runs already.
    async fn observe<T>(self: &Arc<Self>, result: &Result<T, StoreError>) {
        let Err(error @ (StoreError::Unavailable(_) | StoreError::DiskFull(_))) = result else {
            return;
        };
        let mut probing = self.probing.lock().await;
        if *probing {
            return;
        }
        *probing = true;
        if matches!(error, StoreError::DiskFull(_)) {
            tracing::error!(%error, "the database's disk is full: reporting NOT_SERVING until space is freed");
        } else {
            tracing::error!(%error, "database cannot be written: reporting NOT_SERVING until a write probe succeeds");
        }
        self.set(ServingStatus::NotServing).await;
        tokio::spawn(probe(Arc::downgrade(self)));
    }
}

/// Probes until the database can be written, then reports `SERVING`. Ends early when the
/// store is dropped (the server is gone).
async fn probe(shared: Weak<Shared>) {
    loop {
        tokio::time::sleep(PROBE_INTERVAL).await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        match shared.store.probe_writable().await {
            Ok(()) => {
                let mut probing = shared.probing.lock().await;
                *probing = false;
                if *shared.closing.borrow() {
                    return;
                }
                tracing::info!("database can be written again: reporting SERVING");
                shared.set(ServingStatus::Serving).await;
                return;
            }
            Err(error) => tracing::debug!(%error, "database still cannot be written"),
        }
    }
}

/// Calls the wrapped store and lets the watcher see the result.
macro_rules! watched {
    ($self:ident . $method:ident ( $($arg:expr),* )) => {{
        let result = $self.shared.store.$method($($arg),*).await;
        $self.shared.observe(&result).await;
        result
    }};
}

#[async_trait]
impl Store for WatchedStore {
    async fn lookup_request(
        &self,
        caller: &str,
        request_id: &str,
        fingerprint: &[u8; 32],
    ) -> Result<RequestLookup, StoreError> {
        watched!(self.lookup_request(caller, request_id, fingerprint))
    }

    async fn issue(&self, new: NewPass, monthly_limit: u32) -> Result<IssueOutcome, StoreError> {
        watched!(self.issue(new, monthly_limit))
    }

    async fn pass(&self, pass_id: PassId) -> Result<Option<PassRecord>, StoreError> {
        watched!(self.pass(pass_id))
    }

    async fn revoke(
        &self,
        pass_id: PassId,
        reason: &str,
        at: DateTime<Utc>,
        actor: &Actor,
    ) -> Result<RevokeOutcome, StoreError> {
        watched!(self.revoke(pass_id, reason, at, actor))
    }

    async fn record_entry(&self, attempt: EntryAttempt) -> Result<EntryOutcome, StoreError> {
        watched!(self.record_entry(attempt))
    }

    async fn sync_offline_entries(
        &self,
        batch: crate::store::OfflineBatch,
    ) -> Result<Result<Vec<crate::store::SyncedEntry>, crate::store::SyncRefusal>, StoreError> {
        watched!(self.sync_offline_entries(batch))
    }

    async fn status_events(&self, after: u64, now: DateTime<Utc>) -> Result<StatusEvents, StoreError> {
        watched!(self.status_events(after, now))
    }

    async fn record_audits(&self, records: Vec<AuditRecord>) -> Result<(), StoreError> {
        watched!(self.record_audits(records))
    }

    async fn audit_trail(&self, pass_id: PassId) -> Result<Vec<AuditEntry>, StoreError> {
        watched!(self.audit_trail(pass_id))
    }

    async fn probe_writable(&self) -> Result<(), StoreError> {
        watched!(self.probe_writable())
    }

    async fn prune(&self, kind: crate::store::PruneKind, cutoff: DateTime<Utc>, limit: u32) -> Result<u64, StoreError> {
        watched!(self.prune(kind, cutoff, limit))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use tonic::Request;
    use tonic_health::pb::health_server::Health as _;
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::server::HealthService;

    use super::*;

    /// A store whose writability the test sets; only `pass` and `probe_writable` are called.
    #[derive(Default)]
    struct Switch {
        writable: AtomicBool,
        probes_passed: AtomicUsize,
    }

    impl Switch {
        fn result(&self) -> Result<(), StoreError> {
            if self.writable.load(Ordering::SeqCst) {
                Ok(())
            } else {
                Err(StoreError::Unavailable(sqlx::Error::PoolTimedOut))
            }
        }
    }

    #[async_trait]
    impl Store for Switch {
        async fn lookup_request(&self, _: &str, _: &str, _: &[u8; 32]) -> Result<RequestLookup, StoreError> {
            unreachable!()
        }
        async fn issue(&self, _: NewPass, _: u32) -> Result<IssueOutcome, StoreError> {
            unreachable!()
        }
        async fn pass(&self, _: PassId) -> Result<Option<PassRecord>, StoreError> {
            self.result().map(|()| None)
        }
        async fn revoke(&self, _: PassId, _: &str, _: DateTime<Utc>, _: &Actor) -> Result<RevokeOutcome, StoreError> {
            unreachable!()
        }
        async fn record_entry(&self, _: EntryAttempt) -> Result<EntryOutcome, StoreError> {
            unreachable!()
        }
        async fn sync_offline_entries(
            &self,
            _: crate::store::OfflineBatch,
        ) -> Result<Result<Vec<crate::store::SyncedEntry>, crate::store::SyncRefusal>, StoreError> {
            unreachable!()
        }
        async fn status_events(&self, _: u64, _: DateTime<Utc>) -> Result<StatusEvents, StoreError> {
            unreachable!()
        }
        async fn record_audits(&self, _: Vec<AuditRecord>) -> Result<(), StoreError> {
            unreachable!()
        }
        async fn audit_trail(&self, _: PassId) -> Result<Vec<AuditEntry>, StoreError> {
            unreachable!()
        }
        async fn probe_writable(&self) -> Result<(), StoreError> {
            self.result()?;
            self.probes_passed.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
        async fn prune(&self, _: crate::store::PruneKind, _: DateTime<Utc>, _: u32) -> Result<u64, StoreError> {
            unreachable!()
        }
    }

    async fn status(health: &HealthService, service: &str) -> i32 {
        let request = Request::new(HealthCheckRequest { service: service.to_owned() });
        health.check(request).await.expect("known service").into_inner().status
    }

    const SERVING: i32 = tonic_health::pb::health_check_response::ServingStatus::Serving as i32;
    const NOT_SERVING: i32 = tonic_health::pb::health_check_response::ServingStatus::NotServing as i32;
    const ISSUANCE: &str = "epass.v1.IssuanceService";
    const CHECKPOINT: &str = "epass.v1.CheckpointService";

    async fn setup() -> (Arc<Switch>, WatchedStore, HealthService, tokio::sync::watch::Sender<bool>) {
        let (reporter, _) = tonic_health::server::health_reporter();
        reporter.set_service_status(ISSUANCE, ServingStatus::Serving).await;
        reporter.set_service_status(CHECKPOINT, ServingStatus::Serving).await;
        let switch = Arc::new(Switch::default());
        let (closing, closing_rx) = tokio::sync::watch::channel(false);
        let store: Arc<dyn Store> = switch.clone();
        let watched = WatchedStore::new(store, reporter.clone(), closing_rx);
        (switch, watched, HealthService::from_health_reporter(reporter), closing)
    }

    /// Waits until the probe task has ended.
    async fn probe_ended(watched: &WatchedStore) {
        tokio::time::timeout(Duration::from_secs(60), async {
            while *watched.shared.probing.lock().await {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the probe ends");
    }

    #[tokio::test]
    async fn unavailable_flips_health_until_a_probe_succeeds() {
        let (switch, watched, health, _closing) = setup().await;
        assert!(watched.pass(PassId::from_bytes([1; 16])).await.is_err());
        // Already reported when the failing call returns.
        for service in ["", ISSUANCE, CHECKPOINT] {
            assert_eq!(status(&health, service).await, NOT_SERVING, "{service:?}");
        }
        // Another failure while the probe runs changes nothing.
        assert!(watched.pass(PassId::from_bytes([1; 16])).await.is_err());
        switch.writable.store(true, Ordering::SeqCst);
        probe_ended(&watched).await;
        assert_eq!(switch.probes_passed.load(Ordering::SeqCst), 1, "one probe task");
        for service in ["", ISSUANCE, CHECKPOINT] {
            assert_eq!(status(&health, service).await, SERVING, "{service:?}");
        }
        // A success is not a failure: nothing flips.
        assert!(watched.pass(PassId::from_bytes([1; 16])).await.is_ok());
        assert_eq!(status(&health, "").await, SERVING);
    }

    #[tokio::test]
    async fn a_shutdown_keeps_not_serving() {
        let (switch, watched, health, closing) = setup().await;
        assert!(watched.pass(PassId::from_bytes([1; 16])).await.is_err());
        closing.send_replace(true);
        switch.writable.store(true, Ordering::SeqCst);
        probe_ended(&watched).await;
        assert_eq!(switch.probes_passed.load(Ordering::SeqCst), 1);
        assert_eq!(status(&health, "").await, NOT_SERVING);
    }
}
