//! A [`Store`] decorator that times every operation of the store it wraps into the database
//! latency histogram ([`crate::telemetry::DB_DURATION`]), so that the SQL code knows nothing
//! of metrics.

use std::future::Future;
use std::time::Instant;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{
    Actor, AuditEntry, AuditRecord, EntryAttempt, EntryOutcome, IssueOutcome, NewPass, OfflineBatch, PassRecord,
    PruneKind, RequestLookup, RevokeOutcome, StatusEvents, Store, StoreError, SyncRefusal, SyncedEntry,
};
use epass_core::ids::PassId;

/// Wraps a store and times its operations, labelled by the trait method's name.
#[derive(Debug, Clone)]
pub struct MeteredStore<S> {
    inner: S,
}

impl<S> MeteredStore<S> {
    /// Times the operations of `inner`.
    pub fn new(inner: S) -> Self {
        Self { inner }
    }
}

/// Runs one operation and records how long it took and whether it failed. An operation whose
/// caller gave up before it finished is not recorded.
async fn timed<T>(
    operation: &'static str,
    future: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    let start = Instant::now();
    let result = future.await;
    crate::telemetry::store_operation(operation, start.elapsed(), result.is_ok());
    result
}

#[async_trait]
impl<S: Store> Store for MeteredStore<S> {
    async fn lookup_request(
        &self,
        caller: &str,
        request_id: &str,
        fingerprint: &[u8; 32],
    ) -> Result<RequestLookup, StoreError> {
        timed("lookup_request", self.inner.lookup_request(caller, request_id, fingerprint)).await
    }

    async fn issue(&self, new: NewPass, monthly_limit: u32) -> Result<IssueOutcome, StoreError> {
        timed("issue", self.inner.issue(new, monthly_limit)).await
    }

    async fn pass(&self, pass_id: PassId) -> Result<Option<PassRecord>, StoreError> {
        timed("pass", self.inner.pass(pass_id)).await
    }

    async fn revoke(
        &self,
        pass_id: PassId,
        reason: &str,
        at: DateTime<Utc>,
        actor: &Actor,
    ) -> Result<RevokeOutcome, StoreError> {
        timed("revoke", self.inner.revoke(pass_id, reason, at, actor)).await
    }

    async fn record_entry(&self, attempt: EntryAttempt) -> Result<EntryOutcome, StoreError> {
        timed("record_entry", self.inner.record_entry(attempt)).await
    }

    async fn sync_offline_entries(
        &self,
        batch: OfflineBatch,
    ) -> Result<Result<Vec<SyncedEntry>, SyncRefusal>, StoreError> {
        timed("sync_offline_entries", self.inner.sync_offline_entries(batch)).await
    }

    async fn status_events(&self, after: u64, now: DateTime<Utc>) -> Result<StatusEvents, StoreError> {
        timed("status_events", self.inner.status_events(after, now)).await
    }

    async fn record_audits(&self, records: Vec<AuditRecord>) -> Result<(), StoreError> {
        timed("record_audits", self.inner.record_audits(records)).await
    }

    async fn audit_trail(&self, pass_id: PassId) -> Result<Vec<AuditEntry>, StoreError> {
        timed("audit_trail", self.inner.audit_trail(pass_id)).await
    }

    async fn probe_writable(&self) -> Result<(), StoreError> {
        timed("probe_writable", self.inner.probe_writable()).await
    }

    async fn prune(&self, kind: PruneKind, cutoff: DateTime<Utc>, limit: u32) -> Result<u64, StoreError> {
        timed("prune", self.inner.prune(kind, cutoff, limit)).await
    }
}
