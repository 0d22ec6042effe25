//! Health that follows the database: while it cannot be written, the server and the services
//! that write (`IssuanceService`, `CheckpointService`) report `NOT_SERVING`; once a write probe
//! succeeds they report `SERVING` again, with no restart.
//!
//! A [`Store`] decorator sees every store call. The first [`StoreError::Unavailable`] flips the
//! health and starts one probe task, which tries [`Store::probe_writable`] every
//! [`PROBE_INTERVAL`] until it succeeds. The flip happens before the failing call returns, so a
//! client that got `UNAVAILABLE` already sees `NOT_SERVING`.

use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

use super::pb::checkpoint_service_server::CheckpointServiceServer;
use super::pb::issuance_service_server::IssuanceServiceServer;
use super::{CheckpointHandler, IssuanceHandler, ServiceState};
use crate::ids::PassId;
use crate::store::{
    Actor, AuditEntry, AuditRecord, EntryAttempt, EntryOutcome, IssueOutcome, NewPass, PassRecord, RequestLookup,
    RevokeOutcome, StatusEvents, Store, StoreError,
};

/// How often the database is probed while it cannot be written.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// Makes the health of `reporter` follow the writability of the state's store: replaces
/// `state.store` with a wrapper that watches its errors. Call it once, before the state is
/// shared. The `SERVING` it restores is never set once the state's `closing` is, so a shutdown's
/// `NOT_SERVING` stands.
pub fn watch_store_health(state: &mut ServiceState, reporter: HealthReporter) {
    let watched = WatchedStore {
        shared: Arc::new(Shared {
            store: Arc::clone(&state.store),
            reporter,
            closing: state.closing.subscribe(),
            probing: tokio::sync::Mutex::new(false),
        }),
    };
    state.store = Arc::new(watched);
}

/// The store with its health watcher.
struct WatchedStore {
    shared: Arc<Shared>,
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

    /// After a store call: on `Unavailable`, reports `NOT_SERVING` and starts the probe task
    /// unless it runs already.
    async fn observe<T>(self: &Arc<Self>, result: &Result<T, StoreError>) {
        let Err(StoreError::Unavailable(error)) = result else {
            return;
        };
        let mut probing = self.probing.lock().await;
        if *probing {
            return;
        }
        *probing = true;
        tracing::error!(%error, "database cannot be written: reporting NOT_SERVING until a write probe succeeds");
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

    async fn status_events(&self, after: u64, now: DateTime<Utc>) -> Result<StatusEvents, StoreError> {
        watched!(self.status_events(after, now))
    }

    async fn passes_in_month(&self, holder_key: &[u8; 32], quota_month: &str) -> Result<u32, StoreError> {
        watched!(self.passes_in_month(holder_key, quota_month))
    }

    async fn record_audit(&self, record: AuditRecord) -> Result<(), StoreError> {
        watched!(self.record_audit(record))
    }

    async fn audit_trail(&self, pass_id: PassId) -> Result<Vec<AuditEntry>, StoreError> {
        watched!(self.audit_trail(pass_id))
    }

    async fn probe_writable(&self) -> Result<(), StoreError> {
        watched!(self.probe_writable())
    }
}
