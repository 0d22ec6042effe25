//! Retention through the real binary: `epass serve` prunes at start what is past its period
//! (old verification rows, an old scan, the names of a pass that ended long ago), logs it at
//! info, counts it in the metrics, keeps everything younger, and stops with the server;
//! `epass config check` prints the periods and names a bad one.

mod common;

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};

use common::command;
use epass::access::{Caller, Role};
use epass::clock::{Clock as _, SystemClock};
use epass::store::{
    Actor, AuditAction, AuditOutcome, AuditRecord, EntryAttempt, NewPass, SqliteStore, Store, StoredPass,
};
use epass_core::ids::{KeyId, PassId};
use epass_core::pass::{Modes, TransportMode};

/// Far beyond what anything here needs: only a hang trips it.
const PATIENCE: Duration = Duration::from_secs(120);

/// An `epass serve` process and its log, killed if still running when dropped.
struct Served {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Served {
    fn start(data_dir: &Path, args: &[&str]) -> Self {
        let mut child = command::epass()
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(args)
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start epass serve");
        let lines = BufReader::new(child.stderr.take().expect("stderr is piped")).lines();
        let log = Arc::new(Mutex::new(Vec::new()));
        let keep = log.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                keep.lock().unwrap().push(line);
            }
        });
        Self { child, log }
    }

    /// The first log line containing `text`, waiting for it.
    fn line_with(&mut self, text: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(line) = self.log.lock().unwrap().iter().find(|l| l.contains(text)) {
                return line.clone();
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("epass serve exited ({status}) before logging {text:?}:\n{}", self.log());
            }
            assert!(Instant::now() < deadline, "no {text:?} in the log:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// SIGTERM, then the exit status.
    fn stop(&mut self) -> std::process::ExitStatus {
        let status = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().expect("run kill");
        assert!(status.success());
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "still running after SIGTERM:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn actor() -> Actor {
    Actor { caller: Caller { name: "old-checkpoint".into(), role: Role::Checkpoint }, peer: None }
}

fn verification(pass_id: PassId, at: DateTime<Utc>) -> AuditRecord {
    AuditRecord {
        at,
        action: AuditAction::Verify,
        outcome: AuditOutcome::Accepted,
        pass_id: Some(pass_id),
        actor: actor(),
        request_key: None,
        checkpoint_id: Some("SZX-AIR-01".into()),
        mode: Some(TransportMode::Air),
        permit_masked: None,
    }
}

/// A pass issued 47 days ago, valid for a week (so ended 40 days ago), with both names.
fn old_pass(pass_id: PassId, now: DateTime<Utc>) -> NewPass {
    let issued_at = now - TimeDelta::days(47);
    NewPass {
        pass: StoredPass {
            pass_id,
            key_id: KeyId::from_bytes([7; 8]),
            signature: [0; 64],
            name_latin: Some("CHAN TAI MAN".into()),
            name_chinese: Some("陳大文".into()),
            permit_masked: "H1234****".into(),
            issued_at,
            valid_from: issued_at,
            valid_until: issued_at + TimeDelta::days(7),
            modes: Modes::AIR_AND_RAIL,
            entries_allowed: 1,
        },
        holder_key: [1; 32],
        quota_month: "2026-10".into(),
        actor: Actor { caller: Caller { name: "old-issuer".into(), role: Role::Issuer }, peer: None },
        request_id: "request-old".into(),
        fingerprint: [2; 32],
    }
}

/// GETs `/metrics` over plain HTTP/1.0.
fn metrics(address: &str) -> String {
    let mut stream = std::net::TcpStream::connect(address).expect("connect to the metrics listener");
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    let mut body = String::new();
    stream.read_to_string(&mut body).unwrap();
    body
}

fn field<'a>(line: &'a str, name: &str) -> &'a str {
    let start = line.find(&format!("{name}=")).unwrap_or_else(|| panic!("no {name} in {line:?}")) + name.len() + 1;
    line[start..].split_whitespace().next().unwrap().trim_matches('"')
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_prunes_what_is_past_its_period_and_keeps_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    // A first start provisions the data directory and the database.
    let mut first = Served::start(&data_dir, &[]);
    first.line_with("epass listening");
    assert_eq!(first.stop().code(), Some(0), "{}", first.log());
    drop(first);

    // What the database held before this release: old verification rows, an old scan, a
    // pass that ended 40 days ago; and young rows.
    let database: PathBuf = data_dir.join("epass.sqlite3");
    let now = SystemClock.now();
    let pass = PassId::from_bytes([0x42; 16]);
    let unknown = PassId::from_bytes([0x43; 16]);
    {
        let store = SqliteStore::open(&database).await.unwrap();
        store.issue(old_pass(pass, now), 2).await.unwrap();
        let old = now - TimeDelta::days(100);
        store.record_audits((0..300).map(|n| verification(pass, old + TimeDelta::seconds(n))).collect()).await.unwrap();
        store.record_audits((0..5).map(|n| verification(pass, now - TimeDelta::hours(n + 1))).collect()).await.unwrap();
        let scan = EntryAttempt {
            actor: actor(),
            scan_id: "scan-old".into(),
            pass_id: unknown,
            checkpoint_id: "SZ-LOWU-01".into(),
            mode: TransportMode::Rail,
            at: old,
            offline_verdict: Ok(()),
        };
        store.record_entry(scan).await.unwrap();
        store.close().await;
    }

    let config = dir.path().join("epass.toml");
    std::fs::write(&config, "[retention]\nbatch_rows = 40\ninterval_seconds = 3600\n").unwrap();
    let checked = command::output_within(command::epass().args(["config", "check"]).arg(&config), PATIENCE);
    assert_eq!(checked.status.code(), Some(0), "{}", String::from_utf8_lossy(&checked.stderr));
    let stdout = String::from_utf8_lossy(&checked.stdout);
    assert!(
        stdout.contains("retention: verification audit rows 90 days, other audit rows 1825 days, scans 90 days, holder names 30 days after a pass ends"),
        "{stdout}"
    );
    assert!(stdout.contains("batches of 40"), "{stdout}");

    let mut server =
        Served::start(&data_dir, &["--config", config.to_str().unwrap(), "--metrics-listen", "127.0.0.1:0"]);
    let metrics_address = field(&server.line_with("metrics at /metrics"), "address").to_owned();
    let pruned = server.line_with("retention: pruned");
    assert!(pruned.contains("INFO"), "{pruned}");
    let counts: Vec<(&str, &str)> = ["verification_audit", "change_audit", "scans", "status_events", "holder_names"]
        .into_iter()
        .map(|kind| (kind, field(&pruned, kind)))
        .collect();
    assert_eq!(
        counts,
        [
            ("verification_audit", "300"),
            ("change_audit", "0"),
            ("scans", "1"),
            ("status_events", "0"),
            ("holder_names", "1")
        ]
    );
    let exposed = metrics(&metrics_address);
    for (kind, rows) in [("verification_audit", 300), ("scans", 1), ("holder_names", 1)] {
        let sample = format!("epass_rows_pruned_total{{kind=\"{kind}\"}} {rows}");
        assert!(exposed.contains(&sample), "no {sample:?} in:\n{exposed}");
    }
    assert_eq!(server.stop().code(), Some(0), "{}", server.log());
    assert!(server.log().contains("stopped"), "{}", server.log());

    // What is left: the young rows, the issue and the old admit row (changes are kept for
    // years), the pass without its names.
    let store = SqliteStore::open_read_only(&database).await.unwrap();
    let trail = store.audit_trail(pass).await.unwrap();
    let kept: Vec<_> = trail.iter().map(|e| (e.action, e.at >= now - TimeDelta::days(1))).collect();
    let mut expected = vec![(AuditAction::Issue, false)];
    expected.extend([(AuditAction::Verify, true); 5]);
    assert_eq!(kept, expected);
    let admit = store.audit_trail(unknown).await.unwrap();
    assert_eq!(admit.iter().map(|e| e.action).collect::<Vec<_>>(), [AuditAction::Admit]);
    let record = store.pass(pass).await.unwrap().expect("the pass is kept");
    assert_eq!((record.pass.name_latin, record.pass.name_chinese), (None, None));
    assert_eq!(record.pass.permit_masked, "H1234****");
    store.close().await;
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}?mode=ro", database.display())).await.unwrap();
    let scans: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM scans").fetch_one(&pool).await.unwrap();
    assert_eq!(scans, 0);
    pool.close().await;
}

#[test]
fn a_bad_retention_setting_exits_64_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    for (text, message) in [
        ("[retention]\nstatus_events_days = 0\n", "retention.status_events_days: must be between 1 and 36500 days"),
        ("[retention]\nbatch_rows = 0\n", "retention.batch_rows: must be between 1 and 10000"),
        ("[retention]\nscans_days = \"forever\"\n", "retention.scans_days: invalid type: string \"forever\""),
        ("[retention]\nkeep_days = 1\n", "retention.keep_days: unknown setting"),
    ] {
        let config = dir.path().join("bad.toml");
        std::fs::write(&config, text).unwrap();
        let checked = command::output_within(command::epass().args(["config", "check"]).arg(&config), PATIENCE);
        assert_eq!(checked.status.code(), Some(64), "{text}");
        let stderr = String::from_utf8_lossy(&checked.stderr);
        assert!(stderr.contains(&format!("config error: {message}")), "{text}: {stderr}");
    }
    let off = dir.path().join("off.toml");
    std::fs::write(&off, "[retention]\nenabled = false\n").unwrap();
    let checked = command::output_within(command::epass().args(["config", "check"]).arg(&off), PATIENCE);
    assert_eq!(checked.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&checked.stdout).contains("retention: off: nothing is pruned"));
}
