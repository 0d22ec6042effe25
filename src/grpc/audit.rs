//! Who is calling, as the handlers see it (the caller the access layer authenticated, and the
//! connection's address), and the queue of audit rows written apart from any change.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc::{self, error::TrySendError};
use tokio::sync::watch;
use tokio::task::JoinHandle;
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

/// Rows a queue holds by default: about 2 MiB of memory, and a few seconds of verification
/// at the machine's peak while the database is slow.
pub const DEFAULT_AUDIT_QUEUE_CAPACITY: usize = 8_192;
/// Rows written in one transaction at most.
const MAX_BATCH: usize = 512;

/// The audit rows of calls that changed nothing (verifications, and refusals decided before
/// the store): a bounded queue to one task that writes them in batches, one transaction and so
/// one commit per batch, whatever arrived while the last batch was written.
///
/// A verification never waits for its row, and never fails for it: when the queue is full
/// (the database is slower than the calls), the row is dropped, counted in
/// `epass_audit_rows_dropped_total` and logged. The writes of passes, entries and revocations
/// wait at most for one batch on the single writer. A crash loses the rows still queued: at
/// most the queue's capacity plus the batch being written; never a pass, an entry, a
/// revocation or their rows, which are written in the transaction of their change.
#[derive(Debug)]
pub struct AuditQueue {
    sender: mpsc::Sender<AuditRecord>,
    dropped: AtomicU64,
    stop: watch::Sender<bool>,
    writer: std::sync::Mutex<Option<JoinHandle<()>>>,
}

impl AuditQueue {
    /// Starts the writing task over `store`, holding at most `capacity` rows.
    pub fn start(store: Arc<dyn Store>, capacity: usize) -> Self {
        let (sender, receiver) = mpsc::channel(capacity.max(1));
        let (stop, stopping) = watch::channel(false);
        let writer = tokio::spawn(write_batches(store, receiver, stopping));
        Self { sender, dropped: AtomicU64::new(0), stop, writer: std::sync::Mutex::new(Some(writer)) }
    }

    /// Queues a row, or drops and counts it when the queue is full or closed.
    pub fn submit(&self, record: AuditRecord) {
        if let Err(error) = self.sender.try_send(record) {
            let record = match error {
                TrySendError::Full(record) | TrySendError::Closed(record) => record,
            };
            let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            crate::telemetry::audit_rows_dropped(1);
            // One line per power of two keeps a long overload from flooding the log.
            if dropped.is_power_of_two() {
                tracing::warn!(
                    dropped,
                    action = record.action.as_str(),
                    "audit queue full: audit rows of calls that changed nothing are being dropped"
                );
            }
        }
    }

    /// Rows the queue holds at most.
    pub fn capacity(&self) -> usize {
        self.sender.max_capacity()
    }

    /// Rows dropped so far because the queue was full or closed.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Writes what is queued and stops the task; rows submitted afterwards are dropped.
    pub async fn close(&self) {
        self.stop.send_replace(true);
        let writer = self.writer.lock().expect("audit writer lock").take();
        if let Some(writer) = writer {
            let _ = writer.await;
        }
    }
}

async fn write_batches(
    store: Arc<dyn Store>,
    mut receiver: mpsc::Receiver<AuditRecord>,
    mut stopping: watch::Receiver<bool>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        tokio::select! {
            biased;
            received = receiver.recv_many(&mut batch, MAX_BATCH) => {
                if received == 0 {
                    return;
                }
                write(&store, &mut batch).await;
            }
            () = async { drop(stopping.wait_for(|stop| *stop).await) } => {
                receiver.close();
                while receiver.recv_many(&mut batch, MAX_BATCH).await > 0 {
                    write(&store, &mut batch).await;
                }
                return;
            }
        }
    }
}

async fn write(store: &Arc<dyn Store>, batch: &mut Vec<AuditRecord>) {
    let rows = batch.len();
    if let Err(error) = store.record_audits(std::mem::take(batch)).await {
        crate::telemetry::audit_rows_dropped(rows as u64);
        tracing::error!(%error, rows, "audit rows not written");
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use async_trait::async_trait;
    use chrono::{DateTime, Utc};
    use epass_core::ids::PassId;
    use tokio::sync::{Notify, Semaphore};

    use super::*;
    use crate::access::{Caller, Role};
    use crate::store::{
        Actor, AuditAction, AuditEntry, AuditOutcome, EntryAttempt, EntryOutcome, IssueOutcome, NewPass, PassRecord,
        RequestLookup, RevokeOutcome, StatusEvents, StoreError,
    };

    /// A store whose audit writes wait at a gate the test opens, and that records each batch's
    /// size; nothing else is called.
    struct GatedAudit {
        entered: Notify,
        gate: Semaphore,
        batches: Mutex<Vec<usize>>,
    }

    #[async_trait]
    impl Store for GatedAudit {
        async fn lookup_request(&self, _: &str, _: &str, _: &[u8; 32]) -> Result<RequestLookup, StoreError> {
            unreachable!()
        }
        async fn issue(&self, _: NewPass, _: u32) -> Result<IssueOutcome, StoreError> {
            unreachable!()
        }
        async fn pass(&self, _: PassId) -> Result<Option<PassRecord>, StoreError> {
            unreachable!()
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
        async fn record_audits(&self, records: Vec<AuditRecord>) -> Result<(), StoreError> {
            self.entered.notify_one();
            self.gate.acquire().await.expect("gate open").forget();
            self.batches.lock().unwrap().push(records.len());
            Ok(())
        }
        async fn audit_trail(&self, _: PassId) -> Result<Vec<AuditEntry>, StoreError> {
            unreachable!()
        }
        async fn probe_writable(&self) -> Result<(), StoreError> {
            unreachable!()
        }
        async fn prune(
            &self,
            _: crate::store::PruneKind,
            _: chrono::DateTime<chrono::Utc>,
            _: u32,
        ) -> Result<u64, StoreError> {
            unreachable!()
        }
    }

    fn verification() -> AuditRecord {
        AuditRecord {
            at: DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
            action: AuditAction::Verify,
            outcome: AuditOutcome::Accepted,
            pass_id: None,
            actor: Actor { caller: Caller { name: "gate".into(), role: Role::Checkpoint }, peer: None },
            request_key: None,
            checkpoint_id: Some("GATE-1".into()),
            mode: None,
            permit_masked: None,
        }
    }

    #[tokio::test]
    async fn a_full_queue_drops_and_counts_without_waiting_and_close_writes_the_rest() {
        let store = Arc::new(GatedAudit { entered: Notify::new(), gate: Semaphore::new(0), batches: Mutex::default() });
        let queue = AuditQueue::start(store.clone(), 4);
        // The writer takes the first row and waits at the gate with it.
        queue.submit(verification());
        store.entered.notified().await;
        // Four more fill the queue; three more find it full and are dropped, at once.
        for _ in 0..7 {
            queue.submit(verification());
        }
        assert_eq!(queue.dropped(), 3);
        store.gate.add_permits(10);
        queue.close().await;
        // What waited was written in one batch after the first.
        assert_eq!(*store.batches.lock().unwrap(), vec![1, 4]);
        // After close, a row has nowhere to go: dropped and counted.
        queue.submit(verification());
        assert_eq!(queue.dropped(), 4);
    }
}
