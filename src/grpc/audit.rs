//! Who is calling, as the handlers see it (the caller the access layer authenticated, and the
//! connection's address), and the audit rows written apart from any change.

use std::sync::Arc;

use tonic::Request;

use super::ApiError;
use crate::access::Caller;
use crate::store::{Actor, AuditRecord, Store};

/// The caller the access layer put into the request. Its absence is a wiring fault (a service
/// served without the layer): the call fails closed with `internal`, and the fault is logged.
pub fn caller<T>(request: &Request<T>) -> Result<Caller, ApiError> {
    request
        .extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| ApiError::Internal("request reached a handler without an authenticated caller".into()))
}

/// The caller and the remote address of its connection: what scopes idempotency keys and signs
/// audit rows.
pub fn actor<T>(request: &Request<T>) -> Result<Actor, ApiError> {
    Ok(Actor { caller: caller(request)?, peer: request.remote_addr() })
}

/// Writes the audit row of a call that changed nothing, in the background: the answer does not
/// wait for it, so verification keeps its latency (and keeps working) while the database
/// cannot be written. A row that cannot be written is logged and lost; so is one still queued
/// when the process stops.
pub fn record_detached(store: &Arc<dyn Store>, record: AuditRecord) {
    let store = Arc::clone(store);
    tokio::spawn(async move {
        let (action, outcome) = (record.action, record.outcome);
        if let Err(error) = store.record_audit(record).await {
            tracing::error!(%error, action = action.as_str(), outcome = outcome.as_str(), "audit row not written");
        }
    });
}
