//! The pruning task: removes what the database holds past its retention period
//! (`[retention]`, README "What is kept, and for how long"), while the service serves.
//!
//! Each run reads the clock once, computes one cutoff per [`PruneKind`], and asks the store for
//! batches of at most `batch_rows` rows, each its own short transaction, until a batch comes
//! back short. On SQLite a batch is one write of the group writer, so issuance and entries
//! wait at most for one batch, never for a whole run; a short pause between batches leaves the
//! writer to them. A failed batch ends the run; the next run starts over.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{PruneKind, Store, StoreError};
use crate::clock::Clock;
use crate::config::RetentionSettings;

/// The pause between two batches of a run.
const BATCH_PAUSE: Duration = Duration::from_millis(10);

/// The cutoff of each kind at `now`: rows older than it are past their period.
pub fn cutoffs(settings: &RetentionSettings, now: DateTime<Utc>) -> [(PruneKind, DateTime<Utc>); 5] {
    let days = |n: u32| now - TimeDelta::days(i64::from(n));
    PruneKind::ALL.map(|kind| {
        let cutoff = match kind {
            PruneKind::VerificationAudit => days(settings.verification_audit_days),
            PruneKind::ChangeAudit => days(settings.change_audit_days),
            PruneKind::Scans => days(settings.scans_days),
            PruneKind::HolderNames => days(settings.holder_names_days),
            // Status lists carry an event until the clock tolerance after its pass's end
            // (`grpc::keys`): whatever the setting, never prune one a list may still carry.
            PruneKind::StatusEvents => {
                days(settings.status_events_days).min(now - epass_core::verify::MAX_CLOCK_TOLERANCE)
            }
        };
        (kind, cutoff)
    })
}

/// What one run removed, per kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Rows of each kind, in the order of [`PruneKind::ALL`].
    pub rows: [u64; 5],
}

impl Pruned {
    /// Rows of `kind`.
    pub fn of(&self, kind: PruneKind) -> u64 {
        PruneKind::ALL.iter().position(|k| *k == kind).map_or(0, |i| self.rows[i])
    }

    /// Rows of every kind.
    pub fn total(&self) -> u64 {
        self.rows.iter().sum()
    }
}

/// Why a run ended early.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A batch failed; what the batches before it removed stays removed.
    #[error("pruning {} failed, after {} rows: {source}", .kind.as_str(), .done.total())]
    Store {
        /// The kind whose batch failed.
        kind: PruneKind,
        /// What was removed before.
        done: Pruned,
        /// The failure.
        source: StoreError,
    },
    /// Asked to stop; what was removed stays removed.
    #[error("stopped")]
    Stopped(Pruned),
}

/// When a run must stop: the server started closing, or [`Pruner::stop`] was called.
#[derive(Debug, Clone)]
pub struct Stop {
    closing: watch::Receiver<bool>,
    stopped: watch::Receiver<bool>,
}

impl Stop {
    /// Stops when either turns true, or its sender is gone.
    pub fn new(closing: watch::Receiver<bool>, stopped: watch::Receiver<bool>) -> Self {
        Self { closing, stopped }
    }

    /// Whether to stop now.
    pub fn requested(&self) -> bool {
        let set = |r: &watch::Receiver<bool>| *r.borrow() || r.has_changed().is_err();
        set(&self.closing) || set(&self.stopped)
    }

    /// Waits until stopping is requested.
    pub async fn wait(&mut self) {
        tokio::select! {
            _ = self.closing.wait_for(|closing| *closing) => {}
            _ = self.stopped.wait_for(|stopped| *stopped) => {}
        }
    }
}

/// One run at `now`: every kind, batch after batch, until each is done. Stops between batches
/// once `stop` says so.
pub async fn run_once(
    store: &dyn Store,
    settings: &RetentionSettings,
    now: DateTime<Utc>,
    stop: &mut Stop,
) -> Result<Pruned, RunError> {
    let mut done = Pruned::default();
    for (i, (kind, cutoff)) in cutoffs(settings, now).into_iter().enumerate() {
        loop {
            if stop.requested() {
                return Err(RunError::Stopped(done));
            }
            let removed = store.prune(kind, cutoff, settings.batch_rows).await.map_err(|source| RunError::Store {
                kind,
                done,
                source,
            })?;
            done.rows[i] += removed;
            crate::telemetry::rows_pruned(kind.as_str(), removed);
            if removed < u64::from(settings.batch_rows) {
                break;
            }
            tokio::select! {
                () = stop.wait() => {}
                () = tokio::time::sleep(BATCH_PAUSE) => {}
            }
        }
    }
    Ok(done)
}

/// The pruning task of `serve`: a run at start and then every `interval`, until stopped.
#[derive(Debug)]
pub struct Pruner {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Pruner {
    /// Starts the task. It stops when `closing` turns true (the server started shutting
    /// down) or at [`Pruner::stop`], between two batches: a batch under way always finishes.
    pub fn start(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        settings: RetentionSettings,
        closing: watch::Receiver<bool>,
    ) -> Self {
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(prune_periodically(store, clock, settings, Stop::new(closing, stopped)));
        Self { stop, task }
    }

    /// Stops the task and waits for it: a batch under way finishes (it is one short
    /// transaction), none starts after it.
    pub async fn stop(self) {
        self.stop.send_replace(true);
        if let Err(error) = self.task.await {
            tracing::warn!(%error, "the pruning task ended abnormally");
        }
    }
}

async fn prune_periodically(store: Arc<dyn Store>, clock: Arc<dyn Clock>, settings: RetentionSettings, mut stop: Stop) {
    loop {
        match run_once(&*store, &settings, clock.now(), &mut stop).await {
            Ok(pruned) => log_run(&pruned),
            Err(RunError::Stopped(pruned)) => {
                log_run(&pruned);
                return;
            }
            Err(error) => tracing::warn!(%error, "retention: pruning failed; trying again at the next run"),
        }
        tokio::select! {
            () = stop.wait() => return,
            () = tokio::time::sleep(settings.interval) => {}
        }
    }
}

fn log_run(pruned: &Pruned) {
    let of = |kind| pruned.of(kind);
    if pruned.total() == 0 {
        tracing::debug!("retention: nothing to prune");
        return;
    }
    tracing::info!(
        verification_audit = of(PruneKind::VerificationAudit),
        change_audit = of(PruneKind::ChangeAudit),
        scans = of(PruneKind::Scans),
        status_events = of(PruneKind::StatusEvents),
        holder_names = of(PruneKind::HolderNames),
        "retention: pruned rows past their retention period"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::behaviour::{at, issued, new_pass, verification};
    use crate::store::SqliteStore;

    fn settings() -> RetentionSettings {
        RetentionSettings { batch_rows: 4, ..RetentionSettings::default() }
    }

    fn never() -> Stop {
        // Senders leaked for the test's length: dropping one would read as "stop".
        let (closing, closing_rx) = watch::channel(false);
        let (stopped, stopped_rx) = watch::channel(false);
        std::mem::forget((closing, stopped));
        Stop::new(closing_rx, stopped_rx)
    }

    #[test]
    fn each_kind_has_its_own_cutoff() {
        let now = at("2027-03-01T00:00:00Z");
        let settings = RetentionSettings {
            verification_audit_days: 1,
            change_audit_days: 2,
            scans_days: 3,
            holder_names_days: 0,
            status_events_days: 5,
            ..RetentionSettings::default()
        };
        assert_eq!(
            cutoffs(&settings, now),
            [
                (PruneKind::VerificationAudit, at("2027-02-28T00:00:00Z")),
                (PruneKind::ChangeAudit, at("2027-02-27T00:00:00Z")),
                (PruneKind::Scans, at("2027-02-26T00:00:00Z")),
                (PruneKind::StatusEvents, at("2027-02-24T00:00:00Z")),
                (PruneKind::HolderNames, now),
            ]
        );
        // Whatever the settings say, no status event a list may still carry is pruned.
        let unchecked = RetentionSettings { status_events_days: 0, ..settings };
        assert_eq!(
            cutoffs(&unchecked, now)[3],
            (PruneKind::StatusEvents, now - epass_core::verify::MAX_CLOCK_TOLERANCE)
        );
    }

    #[tokio::test]
    async fn a_run_prunes_every_kind_in_batches_until_done() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("epass.db")).await.unwrap();
        issued(&store, new_pass(1, 1, "2026-11")).await;
        let old = at("2026-01-01T00:00:00Z");
        store.record_audits((0..10).map(|n| verification(n, old)).collect()).await.unwrap();
        // 90 days after the pass ended, 10 verification rows are past their 90 days, the
        // issue row is within its 1825, and the name is past its 30.
        let now = at("2027-03-03T10:00:00Z");
        let pruned = run_once(&store, &settings(), now, &mut never()).await.unwrap();
        assert_eq!(pruned.of(PruneKind::VerificationAudit), 10);
        assert_eq!(pruned.of(PruneKind::HolderNames), 1);
        assert_eq!(pruned.total(), 11);
        assert_eq!(run_once(&store, &settings(), now, &mut never()).await.unwrap(), Pruned::default());
        assert_eq!(store.pass(crate::store::behaviour::pass_id(1)).await.unwrap().unwrap().pass.name_latin, None);
    }

    #[tokio::test]
    async fn a_stopped_run_starts_no_batch() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("epass.db")).await.unwrap();
        store.record_audits(vec![verification(1, at("2026-01-01T00:00:00Z"))]).await.unwrap();
        let (closing, closing_rx) = watch::channel(true);
        let (_stopped, stopped_rx) = watch::channel(false);
        let mut stop = Stop::new(closing_rx, stopped_rx);
        let now = at("2027-01-01T00:00:00Z");
        assert!(matches!(
            run_once(&store, &settings(), now, &mut stop).await,
            Err(RunError::Stopped(pruned)) if pruned == Pruned::default()
        ));
        drop(closing);
        // The task stops at once, too, and the row is still there.
        let pruner = Pruner::start(
            Arc::new(store.clone()),
            Arc::new(crate::clock::ManualClock::new(now)),
            settings(),
            watch::channel(true).1,
        );
        pruner.stop().await;
        assert_eq!(store.prune(PruneKind::VerificationAudit, now, 10).await.unwrap(), 1);
    }
}
