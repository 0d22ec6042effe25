//! The crash campaign: cycles of mixed load on the real `epass serve` binary, each cut by a
//! SIGKILL and followed by a restart on the same data and a check of the whole history kept
//! since the first cycle. Nothing acknowledged may be lost (passes, entries, revocations), no
//! rule may break (two passes a month per permit, one entry per pass, nothing admitted once a
//! revocation was acknowledged), and a retry gets the first answer (one request id, one pass;
//! a resent scan id, its first verdict).
//!
//! The load: concurrent IssuePass for fresh permits (some sent twice at once, some retried),
//! bursts on a few permits pushed past the monthly limit, RecordEntry (several scans of one
//! pass at once, resent scan ids) and RevokePass. Calls cut by the kill may or may not have
//! taken effect: after the restart each is retried, and its effect, if any, is the answer.
//! Every answer is checked as it comes (a second pass for a request id or a third for a permit
//! this month, a second entry, an entry sent after a revocation was acknowledged, a resend
//! answered differently); after the restart every pass is read back with GetPass, calls are
//! retried, and SQL counts the database's passes, holders over the limit and admissions.
//!
//! SQLite (a data directory) and PostgreSQL (a scratch database on `EPASS_TEST_POSTGRES`).
//! `EPASS_CRASH_CYCLES` cycles on each (3 by default: the run `cargo test` makes), each
//! retrying every call acknowledged since the first; with `EPASS_CRASH_FULL_EVERY=N`, only
//! every N cycles and in the last, the others retrying what they acknowledged and a sample.
//! `scripts/crash-campaign.sh 100` is the full campaign, recorded in docs/RELIABILITY.md.

mod replica;

use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use rand::rngs::StdRng;
use rand::seq::SliceRandom as _;
use rand::{Rng as _, SeedableRng as _};
use tonic::{Code, Status};

use epass::access::LocalTokens;
use epass::grpc::pb;
use epass::store::postgres_test_support::ScratchDatabase;
use epass_core::policy::MONTHLY_LIMIT;
use replica::{application, epass, within, Client, WAIT};

/// Cycles per backend when `EPASS_CRASH_CYCLES` is unset.
const DEFAULT_CYCLES: usize = 3;
/// Concurrent clients during the load, each on a connection of its own.
const WORKERS: usize = 6;
/// How long the load runs before the kill, drawn anew each cycle.
const LOAD_MILLIS: std::ops::Range<u64> = 300..1500;
/// Permits pushed past the monthly limit, fresh each cycle.
const HOT_PERMITS: usize = 2;
/// Older requests, scans and revocations retried in a cycle that does not retry them all.
const RETRY_SAMPLE: usize = 200;
/// Calls in flight during the check.
const CHECK_CONCURRENCY: usize = 16;
/// Rate limits are per caller and process: this is about durability, not about the limits.
const CONFIG: &str = "[limits]\nrate_per_second = 1000000\nshutdown_grace_seconds = 2\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_campaign_on_sqlite() {
    let dir = tempfile::tempdir().expect("temporary directory");
    campaign("sqlite", dir.path(), None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_campaign_on_postgresql() {
    let Some(database) = ScratchDatabase::create().await else { return };
    let dir = tempfile::tempdir().expect("temporary directory");
    campaign("postgresql", dir.path(), Some(database.url())).await;
    database.drop_database().await;
}

fn cycles() -> usize {
    match std::env::var("EPASS_CRASH_CYCLES") {
        Ok(text) => text.parse().unwrap_or_else(|_| panic!("EPASS_CRASH_CYCLES={text:?} is not a number of cycles")),
        Err(_) => DEFAULT_CYCLES,
    }
}

/// Runs the cycles on one backend; panics with every violation of the first cycle that finds
/// any, and prints one `crash campaign:` line per cycle and a summary.
async fn campaign(backend: &str, dir: &Path, database_url: Option<&str>) {
    let cycles = cycles();
    let full_every = match std::env::var("EPASS_CRASH_FULL_EVERY") {
        Ok(text) => text.parse().ok().filter(|n| *n > 0).expect("EPASS_CRASH_FULL_EVERY is a number of cycles"),
        Err(_) => 1,
    };
    let seed: u64 = match std::env::var("EPASS_CRASH_SEED") {
        Ok(text) => text.parse().expect("EPASS_CRASH_SEED is a number"),
        Err(_) => rand::random(),
    };
    let data_dir = dir.join("data");
    let config = dir.join("epass.toml");
    std::fs::write(&config, CONFIG).expect("config");
    let history = Arc::new(Mutex::new(History::default()));
    let mut rng = StdRng::seed_from_u64(seed);
    let started = Instant::now();
    println!(
        "crash campaign: {backend}: {cycles} cycles, seed {seed}, {WORKERS} clients, every acknowledged call \
         retried every {full_every} cycles and in the last"
    );

    let mut server = Server::start(&data_dir, &config, database_url);
    let tokens = LocalTokens::read(&data_dir).expect("local tokens");
    for cycle in 1..=cycles {
        let cycle_started = Instant::now();
        let before = history.lock().unwrap().figures();
        history.lock().unwrap().start_cycle(cycle);

        // Load, then SIGKILL while every client has a call in flight or about to be.
        let stop = Arc::new(AtomicBool::new(false));
        let mut workers = Vec::new();
        for worker in 0..WORKERS {
            let client = Client::connect(&server.address, &tokens).await;
            let load = Load { client, history: history.clone(), stop: stop.clone(), worker };
            workers.push(tokio::spawn(load.run(StdRng::seed_from_u64(rng.gen()))));
        }
        let load_millis = rng.gen_range(LOAD_MILLIS);
        tokio::time::sleep(Duration::from_millis(load_millis)).await;
        server.kill();
        stop.store(true, Ordering::Relaxed);
        for worker in workers {
            within("a load client", worker).await.expect("load client");
        }
        let cut = history.lock().unwrap().unresolved();

        // Restart on the same data, then check everything acknowledged since cycle 1.
        server = Server::start(&data_dir, &config, database_url);
        let client = Client::connect(&server.address, &tokens).await;
        check(&client, &history, cycle % full_every == 0 || cycle == cycles, &mut rng).await;
        database_invariants(&history, &data_dir, database_url).await;

        let history = history.lock().unwrap();
        let after = history.figures();
        println!(
            "crash campaign: {backend} cycle {cycle}/{cycles}: load {load_millis} ms, {cut} calls cut by the kill; \
             this cycle: {} passes, {} entries, {} revocations, {} quota refusals; history: {} passes, {} entries, \
             {} revocations; {} checks; {:.1} s",
            after.passes - before.passes,
            after.entries - before.entries,
            after.revocations - before.revocations,
            after.quota_refusals - before.quota_refusals,
            after.passes,
            after.entries,
            after.revocations,
            after.checks - before.checks,
            cycle_started.elapsed().as_secs_f64(),
        );
        if !history.violations.is_empty() {
            let log = server.log.lock().unwrap();
            let tail = log[log.len().saturating_sub(30)..].join("\n");
            panic!(
                "{backend} cycle {cycle} (seed {seed}): {} violations:\n{}\nlast lines of the restarted server:\n{tail}",
                history.violations.len(),
                history.violations.join("\n")
            );
        }
    }
    let history = history.lock().unwrap();
    let f = history.figures();
    println!(
        "crash campaign summary: backend={backend} cycles={cycles} passes={} entries={} revocations={} \
         quota_refusals={} cut_calls={} cut_codes={:?} cut_issues_taken_effect={} cut_issues_not_taken_effect={} \
         checks={} violations={} seconds={:.0}",
        f.passes,
        f.entries,
        f.revocations,
        f.quota_refusals,
        history.cut_calls,
        history.cut_codes,
        history.cut_issues_taken_effect,
        history.cut_issues_not_taken_effect,
        f.checks,
        history.violations.len(),
        started.elapsed().as_secs_f64()
    );
    drop(server);
}

/// An `epass serve` process, killed when dropped.
struct Server {
    child: Child,
    address: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// Starts `epass serve` on a free loopback port; returns once it listens.
    fn start(data_dir: &Path, config: &Path, database_url: Option<&str>) -> Self {
        let mut command = epass();
        command.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"]).arg(data_dir).arg("--config").arg(config);
        if let Some(url) = database_url {
            command.env("EPASS_DATABASE_URL", url);
        }
        let mut child = command.stderr(Stdio::piped()).stdout(Stdio::null()).spawn().expect("start epass serve");
        let stderr = child.stderr.take().expect("stderr is piped");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (lines_tx, lines_rx) = mpsc::channel();
        let keep = log.clone();
        // Drains the log for the life of the process, so that it never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                keep.lock().unwrap().push(line.clone());
                let _ = lines_tx.send(line);
            }
        });
        let deadline = Instant::now() + WAIT;
        let address = loop {
            match lines_rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) if line.contains("epass listening") => {
                    let start = line.find("127.0.0.1:").expect("the log names the address");
                    let rest = &line[start..];
                    break rest.split(|c: char| c.is_whitespace() || c == '"').next().expect("address").to_owned();
                }
                Ok(_) => {}
                Err(_) => {
                    let _ = child.kill();
                    panic!("epass serve did not listen within {WAIT:?}:\n{}", log.lock().unwrap().join("\n"));
                }
            }
        };
        Self { child, address, log }
    }

    /// SIGKILL, and reap.
    fn kill(&mut self) {
        self.child.kill().expect("SIGKILL epass serve");
        self.child.wait().expect("reap epass serve");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Everything the clients sent and were answered, since the first cycle, and what broke.
#[derive(Default)]
struct History {
    /// Logical time: every call is stamped when sent and when answered, under the lock, so
    /// that "answered before sent" is real-time order.
    clock: u64,
    next_id: u64,
    cycle: usize,
    requests: HashMap<String, IssueRequest>,
    passes: HashMap<String, PassFacts>,
    /// Pass ids in the order first acknowledged, to pick passes to scan and revoke.
    pass_order: Vec<String>,
    /// Pass ids ever answered for each permit.
    permits: HashMap<String, BTreeSet<String>>,
    scans: HashMap<String, Scan>,
    hot_permits: Vec<String>,
    quota_refusals: u64,
    checks: u64,
    /// Calls whose answer never came (cut by the kill, or refused by a server that was gone).
    cut_calls: u64,
    /// How the cut calls failed, by gRPC code.
    cut_codes: std::collections::BTreeMap<String, u64>,
    cut_issues_taken_effect: u64,
    cut_issues_not_taken_effect: u64,
    violations: Vec<String>,
}

struct IssueRequest {
    message: pb::IssuePassRequest,
    permit: String,
    /// The pass it was answered with.
    pass: Option<String>,
    /// Logical time of that first answer: a retry sent after it must say `replayed`.
    answered: u64,
    answered_cycle: usize,
    /// Refused for the monthly limit, never answered with a pass.
    refused: bool,
    /// Sent, never answered: its effect is unknown until a retry answers.
    cut: bool,
}

struct PassFacts {
    request_id: String,
    qr_text: String,
    /// The scan id of its entry, as any answer named it.
    entry: Option<String>,
    revocation: Option<Revocation>,
    /// A RevokePass was sent and never answered.
    revoke_cut: bool,
}

struct Revocation {
    /// Logical time of the acknowledgement.
    acknowledged: u64,
    revoked_at: Option<prost_types::Timestamp>,
    cycle: usize,
}

struct Scan {
    pass_id: String,
    checkpoint_id: String,
    /// Logical time it was first sent.
    first_sent: u64,
    answer: Option<ScanAnswer>,
    answered_cycle: usize,
}

#[derive(Clone, Debug, PartialEq)]
struct ScanAnswer {
    verdict: i32,
    reason: i32,
    entry: Option<pb::Entry>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    /// Under load: a call may be cut by the kill.
    Load,
    /// After the restart: every call must be answered.
    Check,
}

struct Figures {
    passes: usize,
    entries: usize,
    revocations: usize,
    quota_refusals: u64,
    checks: u64,
}

impl History {
    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn violation(&mut self, text: String) {
        self.violations.push(text);
    }

    fn figures(&self) -> Figures {
        let accepted = |s: &Scan| s.answer.as_ref().is_some_and(|a| a.verdict == pb::Verdict::Accepted as i32);
        Figures {
            passes: self.passes.len(),
            entries: self.scans.values().filter(|s| accepted(s)).count(),
            revocations: self.passes.values().filter(|p| p.revocation.is_some()).count(),
            quota_refusals: self.quota_refusals,
            checks: self.checks,
        }
    }

    fn start_cycle(&mut self, cycle: usize) {
        self.cycle = cycle;
        self.hot_permits = (0..HOT_PERMITS).map(|_| format!("M{:08}", self.id())).collect();
    }

    /// Calls sent and never answered.
    fn unresolved(&self) -> usize {
        self.requests.values().filter(|r| r.cut).count()
            + self.scans.values().filter(|s| s.answer.is_none()).count()
            + self.passes.values().filter(|p| p.revoke_cut).count()
    }

    /// A new application for `permit`; returns its request id.
    fn new_request(&mut self, permit: String) -> String {
        let request_id = format!("req-{}", self.id());
        let message = application(&request_id, &permit);
        self.requests.insert(
            request_id.clone(),
            IssueRequest { message, permit, pass: None, answered: 0, answered_cycle: 0, refused: false, cut: false },
        );
        request_id
    }

    /// The message to send (again) for a request, and the logical time it is sent.
    fn issue_sent(&mut self, request_id: &str) -> (pb::IssuePassRequest, u64) {
        (self.requests[request_id].message.clone(), self.tick())
    }

    /// Records an IssuePass answer; returns the pass id and QR text when issued.
    fn issue_answered(
        &mut self,
        request_id: &str,
        sent: u64,
        result: Result<pb::IssuePassResponse, Status>,
        phase: Phase,
    ) -> Option<(String, String)> {
        let now = self.tick();
        self.checks += 1;
        let request = self.requests.get_mut(request_id).expect("a known request");
        let was_cut = std::mem::take(&mut request.cut);
        let (first, refused, permit) = (request.pass.clone(), request.refused, request.permit.clone());
        let first_answered = request.answered;
        let answer = match result {
            Ok(answer) => answer,
            Err(status) if status.code() == Code::ResourceExhausted => {
                if let Some(pass) = first {
                    self.violation(format!(
                        "request {request_id}: answered with pass {pass}, then refused: {status:?}"
                    ));
                    return None;
                }
                self.requests.get_mut(request_id).expect("request").refused = true;
                self.quota_refusals += 1;
                if was_cut {
                    self.cut_issues_not_taken_effect += 1;
                }
                return None;
            }
            Err(status) => {
                self.requests.get_mut(request_id).expect("request").cut = true;
                self.call_failed(phase, &format!("IssuePass {request_id} (permit {permit})"), &status);
                return None;
            }
        };
        let Some(pass) = answer.pass.as_ref() else {
            self.violation(format!("request {request_id}: IssuePass answered without a pass"));
            return None;
        };
        let pass_id = pass.pass_id.clone();
        if let Some(first) = first {
            if first != pass_id {
                self.violation(format!("request {request_id}: a retry got pass {pass_id}, the first answer {first}"));
            } else if !answer.replayed && first_answered < sent {
                // Sent after the first answer came; one sent at the same time may be either.
                self.violation(format!("request {request_id}: a retry of pass {pass_id} is not marked replayed"));
            } else if self.passes[&first].qr_text != answer.qr_text {
                self.violation(format!("request {request_id}: a retry of pass {pass_id} has another QR text"));
            }
            return Some((pass_id, answer.qr_text));
        }
        if refused {
            self.violation(format!("request {request_id}: refused for the monthly limit, then issued {pass_id}"));
        }
        if was_cut {
            if answer.replayed {
                self.cut_issues_taken_effect += 1;
            } else {
                self.cut_issues_not_taken_effect += 1;
            }
        }
        let request = self.requests.get_mut(request_id).expect("request");
        request.pass = Some(pass_id.clone());
        request.answered = now;
        request.answered_cycle = self.cycle;
        if let Some(other) = self.passes.get(&pass_id) {
            let text = format!("pass {pass_id} answers request {request_id} and request {}", other.request_id);
            self.violation(text);
            return Some((pass_id, answer.qr_text));
        }
        let facts = PassFacts {
            request_id: request_id.to_owned(),
            qr_text: answer.qr_text.clone(),
            entry: None,
            revocation: None,
            revoke_cut: false,
        };
        self.passes.insert(pass_id.clone(), facts);
        self.pass_order.push(pass_id.clone());
        let passes = self.permits.entry(permit.clone()).or_default();
        passes.insert(pass_id.clone());
        if passes.len() > MONTHLY_LIMIT as usize {
            let text = format!("permit {permit}: {} passes this month, over the limit: {passes:?}", passes.len());
            self.violation(text);
        }
        Some((pass_id, answer.qr_text))
    }

    /// A call got no answer: unknown under load, a violation in the check (or when the error
    /// is one that no cut connection produces).
    fn call_failed(&mut self, phase: Phase, call: &str, status: &Status) {
        let our_fault = matches!(
            status.code(),
            Code::InvalidArgument
                | Code::AlreadyExists
                | Code::NotFound
                | Code::PermissionDenied
                | Code::Unauthenticated
                | Code::FailedPrecondition
                | Code::OutOfRange
                | Code::Unimplemented
        );
        if phase == Phase::Check || our_fault {
            self.violation(format!("{call}: {:?}: {}", status.code(), status.message()));
        } else {
            self.cut_calls += 1;
            *self.cut_codes.entry(format!("{:?}", status.code())).or_default() += 1;
        }
    }

    /// A new scan of `pass_id` (or the resend of `scan_id`); returns the scan id.
    fn scan_sent(&mut self, pass_id: &str, checkpoint_id: &str, scan_id: Option<String>) -> String {
        let now = self.tick();
        let scan_id = scan_id.unwrap_or_else(|| format!("scan-{}", self.id()));
        self.scans.entry(scan_id.clone()).or_insert_with(|| Scan {
            pass_id: pass_id.to_owned(),
            checkpoint_id: checkpoint_id.to_owned(),
            first_sent: now,
            answer: None,
            answered_cycle: 0,
        });
        scan_id
    }

    /// Records a RecordEntry answer.
    fn scan_answered(&mut self, scan_id: &str, result: Result<pb::RecordEntryResponse, Status>, phase: Phase) {
        self.tick();
        self.checks += 1;
        let pass_id = self.scans[scan_id].pass_id.clone();
        let answer = match result {
            Ok(answer) => ScanAnswer { verdict: answer.verdict, reason: answer.reason, entry: answer.entry },
            Err(status) => {
                self.call_failed(phase, &format!("RecordEntry {scan_id} (pass {pass_id})"), &status);
                return;
            }
        };
        let scan = self.scans.get_mut(scan_id).expect("a known scan");
        if let Some(first) = scan.answer.clone() {
            if first != answer {
                let text = format!("scan {scan_id} (pass {pass_id}): resent, answered {answer:?}, first {first:?}");
                self.violation(text);
            }
            return;
        }
        scan.answer = Some(answer.clone());
        scan.answered_cycle = self.cycle;
        let named = answer.entry.as_ref().map(|e| e.scan_id.clone());
        let accepted = answer.verdict == pb::Verdict::Accepted as i32;
        match (accepted, pb::RejectionReason::try_from(answer.reason)) {
            (true, _) if named.as_deref() == Some(scan_id) => self.observe_entry(&pass_id, scan_id),
            (true, _) => self.violation(format!("scan {scan_id}: ACCEPTED naming entry {named:?}")),
            (false, Ok(pb::RejectionReason::AlreadyUsed)) => match named {
                Some(named) if named != scan_id => self.observe_entry(&pass_id, &named),
                _ => self.violation(format!("scan {scan_id}: ALREADY_USED naming entry {named:?}")),
            },
            (false, Ok(pb::RejectionReason::Revoked)) => {}
            (false, reason) => {
                self.violation(format!("scan {scan_id} of pass {pass_id}: rejected for {reason:?}: {answer:?}"));
            }
        }
    }

    /// An answer says that `scan_id` is the entry of `pass_id`: it must be the one entry any
    /// answer ever named, from a scan of that pass, sent before any acknowledged revocation.
    fn observe_entry(&mut self, pass_id: &str, scan_id: &str) {
        self.checks += 1;
        let Some(scan) = self.scans.get(scan_id) else {
            self.violation(format!("pass {pass_id}: entry {scan_id} from a scan nobody sent"));
            return;
        };
        if scan.pass_id != pass_id {
            let text = format!("pass {pass_id}: entry {scan_id} is a scan of pass {}", scan.pass_id);
            self.violation(text);
            return;
        }
        let first_sent = scan.first_sent;
        let pass = self.passes.get_mut(pass_id).expect("a known pass");
        let problem = match &pass.entry {
            Some(entry) if entry != scan_id => {
                Some(format!("pass {pass_id}: two entries, scans {entry} and {scan_id}"))
            }
            Some(_) => None,
            None => {
                pass.entry = Some(scan_id.to_owned());
                pass.revocation.as_ref().filter(|r| r.acknowledged < first_sent).map(|_| {
                    format!("pass {pass_id}: scan {scan_id}, sent after its revocation was acknowledged, is its entry")
                })
            }
        };
        if let Some(text) = problem {
            self.violation(text);
        }
    }

    fn revoke_sent(&mut self, pass_id: &str) {
        self.tick();
        self.passes.get_mut(pass_id).expect("a known pass").revoke_cut = true;
    }

    /// Records a RevokePass answer.
    fn revoke_answered(&mut self, pass_id: &str, result: Result<pb::Pass, Status>, phase: Phase) {
        let now = self.tick();
        self.checks += 1;
        let answer = match result {
            Ok(answer) => answer,
            Err(status) => {
                self.call_failed(phase, &format!("RevokePass {pass_id}"), &status);
                return;
            }
        };
        let cycle = self.cycle;
        let pass = self.passes.get_mut(pass_id).expect("a known pass");
        pass.revoke_cut = false;
        let problem = if answer.state != pb::PassState::Revoked as i32 || answer.revoked_at.is_none() {
            Some(format!("RevokePass {pass_id}: answered a pass that is not revoked: {answer:?}"))
        } else {
            match &pass.revocation {
                Some(first) if first.revoked_at != answer.revoked_at => Some(format!(
                    "RevokePass {pass_id}: revoked at {:?}, first answered {:?}",
                    answer.revoked_at, first.revoked_at
                )),
                Some(_) => None,
                None => {
                    pass.revocation = Some(Revocation { acknowledged: now, revoked_at: answer.revoked_at, cycle });
                    None
                }
            }
        };
        if let Some(text) = problem {
            self.violation(text);
        }
    }

    /// Records a GetPass answer for a pass that was acknowledged.
    fn pass_read(&mut self, pass_id: &str, result: Result<pb::Pass, Status>) {
        self.tick();
        self.checks += 1;
        let read = match result {
            Ok(read) => read,
            Err(status) if status.code() == Code::NotFound => {
                self.violation(format!("acknowledged pass {pass_id} is lost: {}", status.message()));
                return;
            }
            Err(status) => {
                self.call_failed(Phase::Check, &format!("GetPass {pass_id}"), &status);
                return;
            }
        };
        if read.pass_id != pass_id {
            self.violation(format!("GetPass {pass_id} answered pass {}", read.pass_id));
            return;
        }
        if !read.double_entries.is_empty() {
            self.violation(format!("pass {pass_id}: double entries {:?}", read.double_entries));
        }
        match &read.entry {
            Some(entry) => {
                let checkpoint = self.scans.get(&entry.scan_id).map(|s| s.checkpoint_id.clone());
                if checkpoint.is_some_and(|c| c != entry.checkpoint_id) {
                    self.violation(format!("pass {pass_id}: entry {entry:?} names another checkpoint than its scan"));
                }
                self.observe_entry(pass_id, &entry.scan_id);
            }
            None => {
                if let Some(scan_id) = self.passes[pass_id].entry.clone() {
                    self.violation(format!("pass {pass_id}: acknowledged entry {scan_id} is lost"));
                }
            }
        }
        let now = self.tick();
        let cycle = self.cycle;
        let pass = self.passes.get_mut(pass_id).expect("a known pass");
        let revoked = read.state == pb::PassState::Revoked as i32;
        let problem = match &pass.revocation {
            Some(r) if !revoked || r.revoked_at != read.revoked_at => Some(format!(
                "pass {pass_id}: acknowledged revocation at {:?} is lost: state {:?}, revoked at {:?}",
                r.revoked_at, read.state, read.revoked_at
            )),
            Some(_) => None,
            // A cut revocation that took effect: from now on, nothing may be admitted.
            None if revoked && pass.revoke_cut => {
                pass.revoke_cut = false;
                pass.revocation = Some(Revocation { acknowledged: now, revoked_at: read.revoked_at, cycle });
                None
            }
            None if revoked => Some(format!("pass {pass_id}: revoked, and nobody revoked it")),
            None => {
                let expected = if pass.entry.is_some() { pb::PassState::Used } else { pb::PassState::Valid };
                (read.state != expected as i32)
                    .then(|| format!("pass {pass_id}: state {:?}, expected {expected:?}", read.state))
            }
        };
        if let Some(text) = problem {
            self.violation(text);
        }
    }
}

/// One client of the load.
struct Load {
    client: Client,
    history: Arc<Mutex<History>>,
    stop: Arc<AtomicBool>,
    worker: usize,
}

impl Load {
    async fn run(self, mut rng: StdRng) {
        while !self.stop.load(Ordering::Relaxed) {
            match rng.gen_range(0..100) {
                // A traveller applies, sometimes from two tabs at once, sometimes retrying.
                0..=29 => {
                    let request_id = self.fresh_request();
                    match rng.gen_range(0..10) {
                        0 | 1 => {
                            tokio::join!(self.issue(&request_id), self.issue(&request_id));
                        }
                        2 => {
                            self.issue(&request_id).await;
                            self.issue(&request_id).await;
                        }
                        _ => {
                            self.issue(&request_id).await;
                        }
                    }
                }
                // Applies and goes straight to the gate.
                30..=44 => {
                    let request_id = self.fresh_request();
                    if let Some((pass_id, _)) = self.issue(&request_id).await {
                        self.scan(&pass_id, None).await;
                    }
                }
                // A permit pushed past the monthly limit by applications at once.
                45..=54 => {
                    let permit = {
                        let history = self.history.lock().unwrap();
                        history.hot_permits[rng.gen_range(0..history.hot_permits.len())].clone()
                    };
                    let requests: Vec<String> = (0..rng.gen_range(1..=4))
                        .map(|_| self.history.lock().unwrap().new_request(permit.clone()))
                        .collect();
                    futures_util::future::join_all(requests.iter().map(|r| self.issue(r))).await;
                }
                // Scans: one, several gates at once, or a resend.
                55..=84 => {
                    let Some(pass_id) = self.pick_pass(&mut rng) else { continue };
                    match rng.gen_range(0..10) {
                        0 | 1 => {
                            let at_once = rng.gen_range(2..=3);
                            futures_util::future::join_all((0..at_once).map(|_| self.scan(&pass_id, None))).await;
                        }
                        2 | 3 => {
                            let resend = {
                                let history = self.history.lock().unwrap();
                                let scans = &history.scans;
                                scans.iter().find(|(_, s)| s.pass_id == pass_id).map(|(id, _)| id.clone())
                            };
                            self.scan(&pass_id, resend).await;
                        }
                        _ => self.scan(&pass_id, None).await,
                    }
                }
                // An administrator revokes, sometimes while a gate scans it.
                _ => {
                    let Some(pass_id) = self.pick_pass(&mut rng) else { continue };
                    if rng.gen_bool(0.3) {
                        tokio::join!(self.revoke(&pass_id), self.scan(&pass_id, None));
                    } else {
                        self.revoke(&pass_id).await;
                    }
                }
            }
        }
    }

    fn fresh_request(&self) -> String {
        let mut history = self.history.lock().unwrap();
        let permit = format!("H{:08}", history.id());
        history.new_request(permit)
    }

    /// A recent pass mostly, any pass sometimes.
    fn pick_pass(&self, rng: &mut StdRng) -> Option<String> {
        let history = self.history.lock().unwrap();
        let order = &history.pass_order;
        if order.is_empty() {
            return None;
        }
        let from = if rng.gen_bool(0.8) { order.len().saturating_sub(200) } else { 0 };
        Some(order[rng.gen_range(from..order.len())].clone())
    }

    async fn issue(&self, request_id: &str) -> Option<(String, String)> {
        let (message, sent) = self.history.lock().unwrap().issue_sent(request_id);
        let result = self.client.issue(message).await;
        self.history.lock().unwrap().issue_answered(request_id, sent, result, Phase::Load)
    }

    async fn scan(&self, pass_id: &str, resend: Option<String>) {
        let checkpoint_id = format!("GATE-{}", self.worker);
        let (scan_id, qr_text, checkpoint_id) = {
            let mut history = self.history.lock().unwrap();
            let scan_id = history.scan_sent(pass_id, &checkpoint_id, resend);
            let checkpoint_id = history.scans[&scan_id].checkpoint_id.clone();
            (scan_id, history.passes[pass_id].qr_text.clone(), checkpoint_id)
        };
        let result = self.client.record(&qr_text, &checkpoint_id, &scan_id).await;
        self.history.lock().unwrap().scan_answered(&scan_id, result, Phase::Load);
    }

    async fn revoke(&self, pass_id: &str) {
        self.history.lock().unwrap().revoke_sent(pass_id);
        let result = self.client.revoke(pass_id).await;
        self.history.lock().unwrap().revoke_answered(pass_id, result, Phase::Load);
    }
}

/// After a restart: settles every call the kill cut by retrying it, reads every pass, retries
/// the requests, scans and revocations acknowledged in this cycle and a sample of the older
/// ones (all of them when `full`), and scans every pass revoked in this cycle once more.
async fn check(client: &Client, history: &Arc<Mutex<History>>, full: bool, rng: &mut StdRng) {
    let (cut_requests, cut_revocations) = {
        let history = history.lock().unwrap();
        let requests = history.requests.iter().filter(|(_, r)| r.cut).map(|(id, _)| id.clone()).collect::<Vec<_>>();
        let revocations = history.passes.iter().filter(|(_, p)| p.revoke_cut).map(|(id, _)| id.clone()).collect();
        (requests, revocations)
    };
    fan_out(cut_requests, |request_id| retry_issue(client, history, request_id)).await;
    fan_out(cut_revocations, |pass_id| retry_revoke(client, history, pass_id)).await;
    let cut_scans: Vec<String> = {
        let history = history.lock().unwrap();
        history.scans.iter().filter(|(_, s)| s.answer.is_none()).map(|(id, _)| id.clone()).collect()
    };
    fan_out(cut_scans, |scan_id| retry_scan(client, history, scan_id)).await;

    let passes: Vec<String> = history.lock().unwrap().pass_order.clone();
    fan_out(passes.clone(), |pass_id| async move {
        let result = settle(|| client.get(&pass_id)).await;
        history.lock().unwrap().pass_read(&pass_id, result);
    })
    .await;

    let (issued, answered_scans, revoked, revoked_now) = {
        let history = history.lock().unwrap();
        let cycle = history.cycle;
        let mut pick = |items: Vec<(String, usize)>| {
            let (mut recent, mut older): (Vec<_>, Vec<_>) = items.into_iter().partition(|(_, c)| full || *c == cycle);
            older.sort();
            older.shuffle(rng);
            older.truncate(RETRY_SAMPLE);
            recent.extend(older);
            recent.into_iter().map(|(id, _)| id).collect::<Vec<_>>()
        };
        let requests = history.requests.iter().filter(|(_, r)| r.pass.is_some());
        let issued = pick(requests.map(|(id, r)| (id.clone(), r.answered_cycle)).collect());
        let scans = pick(history.scans.iter().map(|(id, s)| (id.clone(), s.answered_cycle)).collect());
        let revocations = history.passes.iter().filter_map(|(id, p)| Some((id.clone(), p.revocation.as_ref()?.cycle)));
        let revocations: Vec<(String, usize)> = revocations.collect();
        let revoked_now = revocations.iter().filter(|(_, c)| *c == cycle).map(|(id, _)| id.clone()).collect();
        (issued, scans, pick(revocations), revoked_now)
    };
    fan_out(issued, |request_id| retry_issue(client, history, request_id)).await;
    fan_out(answered_scans, |scan_id| retry_scan(client, history, scan_id)).await;
    fan_out(revoked, |pass_id| retry_revoke(client, history, pass_id)).await;
    fan_out(revoked_now, |pass_id: String| async move {
        let (scan_id, qr_text) = {
            let mut history = history.lock().unwrap();
            let scan_id = history.scan_sent(&pass_id, "GATE-CHECK", None);
            (scan_id, history.passes[&pass_id].qr_text.clone())
        };
        let result = settle(|| client.record(&qr_text, "GATE-CHECK", &scan_id)).await;
        let mut history = history.lock().unwrap();
        let revoked = result.as_ref().is_ok_and(|a| a.reason == pb::RejectionReason::Revoked as i32);
        if !revoked {
            history.violation(format!("pass {pass_id}: revoked, then a new scan answered {result:?}"));
        }
        history.scan_answered(&scan_id, result, Phase::Check);
    })
    .await;
}

async fn retry_issue(client: &Client, history: &Mutex<History>, request_id: String) {
    let (message, sent) = history.lock().unwrap().issue_sent(&request_id);
    let result = settle(|| client.issue(message.clone())).await;
    history.lock().unwrap().issue_answered(&request_id, sent, result, Phase::Check);
}

async fn retry_scan(client: &Client, history: &Mutex<History>, scan_id: String) {
    let (checkpoint_id, qr_text) = {
        let mut history = history.lock().unwrap();
        history.tick();
        let scan = &history.scans[&scan_id];
        (scan.checkpoint_id.clone(), history.passes[&scan.pass_id].qr_text.clone())
    };
    let result = settle(|| client.record(&qr_text, &checkpoint_id, &scan_id)).await;
    history.lock().unwrap().scan_answered(&scan_id, result, Phase::Check);
}

async fn retry_revoke(client: &Client, history: &Mutex<History>, pass_id: String) {
    history.lock().unwrap().tick();
    let result = settle(|| client.revoke(&pass_id)).await;
    history.lock().unwrap().revoke_answered(&pass_id, result, Phase::Check);
}

/// Runs `call` over `items`, [`CHECK_CONCURRENCY`] at a time.
async fn fan_out<T, F, Fut>(items: Vec<T>, call: F)
where
    F: Fn(T) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    within("the check", futures_util::stream::iter(items).map(call).buffer_unordered(CHECK_CONCURRENCY).count()).await;
}

/// A call of the check, repeated while the freshly restarted server answers UNAVAILABLE (its
/// pool may still be opening connections); any other answer stands.
async fn settle<T, F, Fut>(call: F) -> Result<T, Status>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, Status>>,
{
    let mut attempts = 0;
    loop {
        match call().await {
            Err(status) if status.code() == Code::Unavailable && attempts < 10 => {
                attempts += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            result => return result,
        }
    }
}

/// What the database itself holds, counted with SQL: as many passes as the clients know of,
/// no holder over the monthly limit in any month, one admitted scan per used pass and no more.
async fn database_invariants(history: &Mutex<History>, data_dir: &Path, database_url: Option<&str>) {
    const QUERIES: [(&str, &str); 5] = [
        ("passes", "SELECT count(*) FROM passes"),
        (
            "holder months over the limit",
            "SELECT count(*) FROM (SELECT holder_key FROM passes GROUP BY holder_key, quota_month HAVING count(*) > 2) AS t",
        ),
        (
            "passes admitted twice",
            "SELECT count(*) FROM (SELECT pass_id FROM scans WHERE verdict = 'admitted' GROUP BY pass_id HAVING count(*) > 1) AS t",
        ),
        ("used passes", "SELECT count(*) FROM passes WHERE used_scan_id IS NOT NULL"),
        ("admitted scans", "SELECT count(*) FROM scans WHERE verdict = 'admitted'"),
    ];
    // PostgreSQL keeps a row-locked counter per holder and month beside the passes.
    const POSTGRES_QUOTA: (&str, &str) = (
        "quota counters that disagree with the passes",
        "SELECT count(*) FROM quota_counts q WHERE issued <> (SELECT count(*) FROM passes p \
         WHERE p.holder_key = q.holder_key AND p.quota_month = q.quota_month)",
    );
    let mut counts = HashMap::new();
    match database_url {
        None => {
            let db = rusqlite::Connection::open(data_dir.join("epass.sqlite3")).expect("open the SQLite database");
            db.busy_timeout(WAIT).expect("busy timeout");
            for (name, sql) in QUERIES {
                let count: i64 = db.query_row(sql, [], |row| row.get(0)).unwrap_or_else(|e| panic!("{sql}: {e}"));
                counts.insert(name, count);
            }
        }
        Some(url) => {
            let mut db = <sqlx::PgConnection as sqlx::Connection>::connect(url).await.expect("connect to PostgreSQL");
            for (name, sql) in QUERIES.into_iter().chain([POSTGRES_QUOTA]) {
                let count: i64 =
                    sqlx::query_scalar(sql).fetch_one(&mut db).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
                counts.insert(name, count);
            }
            sqlx::Connection::close(db).await.expect("close");
        }
    }
    let mut history = history.lock().unwrap();
    let known_passes = history.passes.len() as i64;
    let known_entries = history.passes.values().filter(|p| p.entry.is_some()).count() as i64;
    let expected = [
        ("passes", known_passes),
        ("holder months over the limit", 0),
        ("passes admitted twice", 0),
        ("used passes", known_entries),
        ("admitted scans", known_entries),
        ("quota counters that disagree with the passes", 0),
    ];
    for (name, want) in expected {
        let Some(&found) = counts.get(name) else { continue };
        history.checks += 1;
        if found != want {
            history.violation(format!("the database holds {found} {name}, the clients know of {want}"));
        }
    }
}

/// The checker itself: each rule it enforces catches a history that breaks it.
mod checker {
    use super::*;

    fn issued(pass_id: &str, replayed: bool) -> Result<pb::IssuePassResponse, Status> {
        let pass = pb::Pass { pass_id: pass_id.to_owned(), ..Default::default() };
        Ok(pb::IssuePassResponse { pass: Some(pass), qr_text: format!("qr-{pass_id}"), replayed, ..Default::default() })
    }

    fn history_with_pass(pass_id: &str) -> (History, String) {
        let mut history = History::default();
        let request_id = history.new_request("H00000001".to_owned());
        let (_, sent) = history.issue_sent(&request_id);
        assert!(history.issue_answered(&request_id, sent, issued(pass_id, false), Phase::Load).is_some());
        assert!(history.violations.is_empty(), "{:?}", history.violations);
        (history, request_id)
    }

    fn entry(scan_id: &str) -> pb::Entry {
        pb::Entry { scan_id: scan_id.to_owned(), checkpoint_id: "GATE-0".to_owned(), ..Default::default() }
    }

    fn accepted(scan_id: &str) -> Result<pb::RecordEntryResponse, Status> {
        Ok(pb::RecordEntryResponse {
            verdict: pb::Verdict::Accepted as i32,
            entry: Some(entry(scan_id)),
            ..Default::default()
        })
    }

    fn revoked() -> Result<pb::Pass, Status> {
        let revoked_at = Some(prost_types::Timestamp { seconds: 1, nanos: 0 });
        Ok(pb::Pass { state: pb::PassState::Revoked as i32, revoked_at, ..Default::default() })
    }

    #[test]
    fn a_retry_answered_with_another_pass_is_a_violation() {
        let (mut history, request_id) = history_with_pass("p1");
        let (_, sent) = history.issue_sent(&request_id);
        history.issue_answered(&request_id, sent, issued("p1", true), Phase::Check);
        assert!(history.violations.is_empty(), "{:?}", history.violations);
        history.issue_answered(&request_id, sent, issued("p2", true), Phase::Check);
        assert_eq!(history.violations.len(), 1, "{:?}", history.violations);
        history.issue_answered(&request_id, sent, issued("p1", false), Phase::Check);
        assert_eq!(history.violations.len(), 2, "a retry must say replayed: {:?}", history.violations);
    }

    #[test]
    fn a_third_pass_for_one_permit_is_a_violation() {
        let (mut history, _) = history_with_pass("p1");
        for pass_id in ["p2", "p3"] {
            let request_id = history.new_request("H00000001".to_owned());
            let (_, sent) = history.issue_sent(&request_id);
            history.issue_answered(&request_id, sent, issued(pass_id, false), Phase::Load);
        }
        assert_eq!(history.violations.len(), 1, "{:?}", history.violations);
        assert!(history.violations[0].contains("over the limit"), "{:?}", history.violations);
    }

    #[test]
    fn an_entry_sent_after_an_acknowledged_revocation_is_a_violation() {
        let (mut history, _) = history_with_pass("p1");
        let before = history.scan_sent("p1", "GATE-0", None);
        history.revoke_sent("p1");
        history.revoke_answered("p1", revoked(), Phase::Load);
        history.scan_answered(&before, accepted(&before), Phase::Load);
        assert!(history.violations.is_empty(), "a scan sent before the revocation may win: {:?}", history.violations);

        let (mut history, _) = history_with_pass("p1");
        history.revoke_sent("p1");
        history.revoke_answered("p1", revoked(), Phase::Load);
        let after = history.scan_sent("p1", "GATE-0", None);
        history.scan_answered(&after, accepted(&after), Phase::Load);
        assert_eq!(history.violations.len(), 1, "{:?}", history.violations);
    }

    #[test]
    fn two_entries_or_a_changed_answer_are_violations() {
        let (mut history, _) = history_with_pass("p1");
        let (a, b) = (history.scan_sent("p1", "GATE-0", None), history.scan_sent("p1", "GATE-0", None));
        history.scan_answered(&a, accepted(&a), Phase::Load);
        history.scan_answered(&b, accepted(&b), Phase::Load);
        assert_eq!(history.violations.len(), 1, "two entries: {:?}", history.violations);

        let (mut history, _) = history_with_pass("p1");
        let a = history.scan_sent("p1", "GATE-0", None);
        history.scan_answered(&a, accepted(&a), Phase::Load);
        let used = pb::RecordEntryResponse {
            verdict: pb::Verdict::Rejected as i32,
            reason: pb::RejectionReason::AlreadyUsed as i32,
            entry: Some(entry("scan-other")),
            ..Default::default()
        };
        history.scan_answered(&a, Ok(used), Phase::Check);
        assert_eq!(history.violations.len(), 1, "a resend answered differently: {:?}", history.violations);
    }

    #[test]
    fn a_lost_pass_entry_or_revocation_is_a_violation() {
        let (mut history, _) = history_with_pass("p1");
        history.pass_read("p1", Err(Status::not_found("no such pass")));
        assert_eq!(history.violations.len(), 1, "{:?}", history.violations);

        let (mut history, _) = history_with_pass("p1");
        let a = history.scan_sent("p1", "GATE-0", None);
        history.scan_answered(&a, accepted(&a), Phase::Load);
        history.revoke_sent("p1");
        history.revoke_answered("p1", revoked(), Phase::Load);
        let read = pb::Pass { pass_id: "p1".to_owned(), state: pb::PassState::Valid as i32, ..Default::default() };
        history.pass_read("p1", Ok(read));
        assert_eq!(history.violations.len(), 2, "entry and revocation lost: {:?}", history.violations);
    }
}
