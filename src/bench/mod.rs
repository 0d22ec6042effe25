//! `epass bench`: a load generator that any operator can point at their own deployment, and
//! the bare baselines that its figures are compared with in the same run (docs/PERFORMANCE.md).
//!
//! It makes its own valid applications with distinct permit numbers, so it needs an issuer
//! credential for every workload (verify and admit first issue the passes they scan) and a
//! checkpoint credential for verify and admit.

pub mod baseline;
mod report;
mod workload;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use indicatif::{ProgressBar, ProgressStyle};
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::Channel;

pub use report::{Comparison, Report};
pub use workload::Workload;

use report::Tally;
use workload::Caller;

/// When a run stops.
#[derive(Debug, Clone, Copy)]
pub enum Stop {
    /// After this long.
    After(Duration),
    /// After this many calls.
    Calls(u64),
}

/// What to send, how hard, and for how long.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The kind of call.
    pub workload: Workload,
    /// Calls in flight on each connection (closed loop), or at most (open loop).
    pub in_flight: usize,
    /// When to stop.
    pub stop: Stop,
    /// Open loop at this many calls a second; closed loop when `None`.
    pub rate: Option<f64>,
    /// Passes issued before a verify, admit or mixed run, which its scans then cycle through.
    pub passes: usize,
    /// Show a progress bar on stderr.
    pub progress: bool,
}

/// Where the calls go: one channel per HTTP/2 connection (spread over the server addresses),
/// and the bearer tokens of the two roles the workloads need.
#[derive(Debug, Clone)]
pub struct Target {
    /// One per connection.
    pub channels: Vec<Channel>,
    /// `authorization` value for issuance calls.
    pub issuer: Option<AsciiMetadataValue>,
    /// `authorization` value for checkpoint calls.
    pub checkpoint: Option<AsciiMetadataValue>,
}

/// Runs `plan` against `target`: issues the passes a scan workload needs, then measures.
pub async fn run(target: &Target, plan: &Plan) -> anyhow::Result<Report> {
    let passes = if plan.workload.scans() {
        issue_qr_texts(target, plan.passes.max(1), plan.in_flight).await?
    } else {
        Vec::new()
    };
    run_with_passes(target, plan, passes).await
}

/// Runs `plan` against `target`, its scans cycling through `passes` (QR texts).
pub async fn run_with_passes(target: &Target, plan: &Plan, passes: Vec<String>) -> anyhow::Result<Report> {
    if target.channels.is_empty() {
        bail!("no connections");
    }
    if plan.in_flight == 0 {
        bail!("in-flight calls per connection must be at least 1");
    }
    if plan.workload.scans() && passes.is_empty() {
        bail!("a scan workload needs passes to scan");
    }
    let mut caller = Caller::new(target.clone());
    caller.passes = passes;
    let caller = Arc::new(caller);
    let workload = plan.workload;
    measure(plan, target.channels.len(), move |i| {
        let caller = Arc::clone(&caller);
        async move { caller.call(workload, i).await }
    })
    .await
}

/// The QR texts of `count` passes issued through `target`, `in_flight` per connection at a time.
pub async fn issue_qr_texts(target: &Target, count: usize, in_flight: usize) -> anyhow::Result<Vec<String>> {
    Caller::new(target.clone()).issue_passes(count, in_flight).await
}

/// What one call ended as: a gRPC code name (`OK`, `UNAVAILABLE`, ...) and, for scans, the
/// verdict (`accepted`, or the rejection reason).
#[derive(Debug, Clone)]
pub struct Outcome {
    /// gRPC code name.
    pub code: &'static str,
    /// Verdict of a scan answered `OK`.
    pub verdict: Option<String>,
}

/// Drives `call(i)` for i = 0, 1, ... as the plan says over `connections` connections, and
/// tallies latencies and outcomes. Closed loop: `in_flight` × `connections` callers, each sending its next call when the last
/// is answered. Open loop: calls start on a fixed schedule, and a call's latency runs from its
/// scheduled start, so a server that falls behind is charged for the queue it causes
/// (no coordinated omission).
pub(crate) async fn measure<F, Fut>(plan: &Plan, connections: usize, call: F) -> anyhow::Result<Report>
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Outcome> + Send + 'static,
{
    let call = Arc::new(call);
    let tally = Arc::new(Mutex::new(Tally::new()));
    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let progress = progress_bar(plan);
    let started = Instant::now();
    let deadline = match plan.stop {
        Stop::After(duration) => Some(started + duration),
        Stop::Calls(_) => None,
    };
    let limit = match plan.stop {
        Stop::Calls(n) => n,
        Stop::After(_) => u64::MAX,
    };
    let finished = move |i: u64| i >= limit || deadline.is_some_and(|d| Instant::now() >= d);
    let ticker = spawn_ticker(progress.clone(), Arc::clone(&next), Arc::clone(&done), plan.stop);

    let workers = plan.in_flight * connections.max(1);
    match plan.rate {
        None => {
            let mut tasks = Vec::with_capacity(workers);
            for _ in 0..workers {
                let (call, tally, next) = (Arc::clone(&call), Arc::clone(&tally), Arc::clone(&next));
                tasks.push(tokio::spawn(async move {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if finished(i) {
                            break;
                        }
                        let start = Instant::now();
                        let outcome = call(i).await;
                        tally.lock().expect("tally lock").record(start.elapsed(), &outcome);
                    }
                }));
            }
            for task in tasks {
                task.await.context("a load task failed")?;
            }
        }
        Some(rate) => {
            if !(rate > 0.0 && rate.is_finite()) {
                bail!("the rate must be a positive number of calls a second");
            }
            let slots = Arc::new(tokio::sync::Semaphore::new(workers));
            let interval = Duration::from_secs_f64(1.0 / rate);
            let mut tasks = tokio::task::JoinSet::new();
            loop {
                let i = next.load(Ordering::Relaxed);
                if finished(i) {
                    break;
                }
                let scheduled = started + interval.mul_f64(i as f64);
                tokio::time::sleep_until(scheduled.into()).await;
                next.store(i + 1, Ordering::Relaxed);
                let slot = Arc::clone(&slots).acquire_owned().await.context("slots closed")?;
                let (call, tally) = (Arc::clone(&call), Arc::clone(&tally));
                tasks.spawn(async move {
                    let outcome = call(i).await;
                    tally.lock().expect("tally lock").record(scheduled.elapsed(), &outcome);
                    drop(slot);
                });
                while tasks.try_join_next().is_some() {}
            }
            while tasks.join_next().await.is_some() {}
        }
    }
    let elapsed = started.elapsed();
    done.store(true, Ordering::Relaxed);
    let _ = ticker.await;
    progress.finish_and_clear();
    let tally = Arc::try_unwrap(tally).map_err(|_| anyhow::anyhow!("tally still shared"))?;
    Ok(tally.into_inner().expect("tally lock").report(plan, elapsed))
}

fn progress_bar(plan: &Plan) -> ProgressBar {
    if !plan.progress {
        return ProgressBar::hidden();
    }
    let (length, template) = match plan.stop {
        Stop::After(d) => (d.as_secs().max(1), "{spinner} {elapsed_precise} [{bar:30}] {msg}"),
        Stop::Calls(n) => (n, "{spinner} {elapsed_precise} [{bar:30}] {pos}/{len} {msg}"),
    };
    let bar = ProgressBar::new(length);
    bar.set_style(ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()));
    bar
}

fn spawn_ticker(
    bar: ProgressBar,
    next: Arc<AtomicU64>,
    done: Arc<AtomicBool>,
    stop: Stop,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let started = Instant::now();
        let mut last = (Instant::now(), 0u64);
        while !done.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let sent = next.load(Ordering::Relaxed);
            let now = Instant::now();
            let rate = (sent.saturating_sub(last.1)) as f64 / now.duration_since(last.0).as_secs_f64();
            last = (now, sent);
            match stop {
                Stop::After(_) => bar.set_position(started.elapsed().as_secs()),
                Stop::Calls(n) => bar.set_position(sent.min(n)),
            }
            bar.set_message(format!("{rate:.0} calls/s"));
        }
    })
}
