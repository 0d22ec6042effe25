//! "Admit offline, sync later" through the real binary, on SQLite and on PostgreSQL: two
//! checkpoints admit the same pass with `epass admit --offline`, each into its own journal,
//! and `epass sync` uploads both, in either order: one entry (the earlier), one double entry.
//! A re-uploaded journal changes nothing; the journal refuses the pass a second time at the
//! same checkpoint before any sync; and a kill between the journal's sync and the printed
//! verdict, or between the upload and its acknowledgement, loses nothing and counts nothing
//! twice.
//!
//! The PostgreSQL runs need a server (see `ScratchDatabase`); without one they say skipped.

#[path = "common/command.rs"]
mod command;

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};

use epass::store::postgres_test_support::ScratchDatabase;

/// A server process on a free loopback port, killed when dropped.
struct Server {
    child: Child,
    url: String,
    data_dir: PathBuf,
    database_url: Option<String>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server(data_dir: &Path, database_url: Option<&str>) -> Server {
    let mut command = command::epass();
    command.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"]).arg(data_dir);
    if let Some(url) = database_url {
        command.args(["--database-url", url]);
    }
    let mut child = command
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("start epass serve");
    let stderr = child.stderr.take().expect("stderr is piped");
    let mut lines = BufReader::new(stderr).lines();
    let address = loop {
        let line = lines.next().expect("server exited before listening").expect("read server log");
        if line.contains("epass listening") {
            let start = line.find("127.0.0.1:").expect("log names the address");
            break line[start..].split_whitespace().next().expect("address").to_owned();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    Server {
        child,
        url: format!("http://{address}"),
        data_dir: data_dir.to_owned(),
        database_url: database_url.map(str::to_owned),
    }
}

/// A checkpoint's files: its copy of the lists, and its journal.
struct Gate {
    id: &'static str,
    journal: PathBuf,
}

struct Setup {
    _dir: tempfile::TempDir,
    server: Server,
    trust_list: PathBuf,
    status_list: PathBuf,
    qr: String,
    pass_id: String,
    dir: PathBuf,
}

impl Setup {
    fn epass(&self, args: &[&str]) -> Output {
        self.epass_with(args, None)
    }

    fn epass_with(&self, args: &[&str], crash_at: Option<&str>) -> Output {
        let mut command = command::epass();
        command.args(args).env("EPASS_DATA_DIR", &self.server.data_dir).current_dir(&self.dir);
        if let Some(point) = crash_at {
            command.env("EPASS_TEST_CRASH_AT", point);
        }
        command.output().expect("run epass")
    }

    fn gate(&self, id: &'static str) -> Gate {
        Gate { id, journal: self.dir.join(format!("{id}.journal")) }
    }

    fn admit(&self, gate: &Gate, crash_at: Option<&str>) -> Output {
        let root = self.server.data_dir.join("root-key.pem");
        let args = [
            "admit",
            "--offline",
            "--root",
            root.to_str().unwrap(),
            "--trust-list",
            self.trust_list.to_str().unwrap(),
            "--status-list",
            self.status_list.to_str().unwrap(),
            "--journal",
            gate.journal.to_str().unwrap(),
            "--mode",
            "rail",
            "--checkpoint",
            gate.id,
            "--json",
            &self.qr,
        ];
        self.epass_with(&args, crash_at)
    }

    fn sync(&self, gate: &Gate, crash_at: Option<&str>) -> Output {
        let args = ["sync", "--server", &self.server.url, "--journal", gate.journal.to_str().unwrap(), "--json"];
        self.epass_with(&args, crash_at)
    }

    /// The audit trail's `admit_offline` rows as (outcome, checkpoint).
    fn offline_trail(&self) -> Vec<(String, String)> {
        let mut args = vec!["audit", "--json"];
        let data_dir = self.server.data_dir.to_str().unwrap().to_owned();
        match &self.server.database_url {
            Some(url) => args.extend(["--database-url", url.as_str()]),
            None => args.extend(["--data-dir", data_dir.as_str()]),
        }
        args.push(&self.pass_id);
        let output = self.epass(&args);
        assert!(output.status.success(), "audit: {}", String::from_utf8_lossy(&output.stderr));
        json(&output)["trail"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|row| row["action"] == "admit_offline")
            .map(|row| (row["outcome"].as_str().unwrap().to_owned(), row["checkpoint_id"].as_str().unwrap().to_owned()))
            .collect()
    }

    /// The online verdict at another checkpoint, which must be `already_used`: its entry's
    /// checkpoint.
    fn entry_checkpoint(&self) -> String {
        let output = self.epass(&["verify", "--server", &self.server.url, "--mode", "air", "--json", &self.qr]);
        let verdict = json(&output);
        assert_eq!(verdict["reason"], "already_used", "{verdict}");
        verdict["entry"]["checkpoint_id"].as_str().unwrap().to_owned()
    }
}

fn json(output: &Output) -> serde_json::Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {} / {}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

/// A server, one pass, and the lists a checkpoint fetched before it lost the network.
fn setup(database_url: Option<&str>) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(&dir.path().join("data"), database_url);
    let mut setup = Setup {
        dir: dir.path().to_owned(),
        trust_list: dir.path().join("trust-list.bin"),
        status_list: dir.path().join("status-list.bin"),
        _dir: dir,
        server,
        qr: String::new(),
        pass_id: String::new(),
    };
    let issued = setup.epass(&[
        "issue",
        "--server",
        &setup.server.url,
        "--permit",
        "H12345678",
        "--name-latin",
        "CHAN TAI MAN",
        "--sex",
        "male",
        "--permit-expiry",
        "2030-06-30",
        "--situation",
        "lost",
        "--mobile",
        "+8613800138000",
        "--json",
    ]);
    assert!(issued.status.success(), "issue: {}", String::from_utf8_lossy(&issued.stderr));
    let issued = json(&issued);
    setup.qr = issued["qr_text"].as_str().unwrap().to_owned();
    setup.pass_id = issued["pass_id"].as_str().unwrap().to_owned();
    let root = setup.server.data_dir.join("root-key.pem");
    let fetched = setup.epass(&[
        "fetch",
        "--server",
        &setup.server.url,
        "--trust-list",
        setup.trust_list.to_str().unwrap(),
        "--status-list",
        setup.status_list.to_str().unwrap(),
        "--root",
        root.to_str().unwrap(),
    ]);
    assert!(fetched.status.success(), "fetch: {}", String::from_utf8_lossy(&fetched.stderr));
    setup
}

fn outcomes(output: &Output) -> Vec<String> {
    assert!(output.status.success(), "sync: {}", String::from_utf8_lossy(&output.stderr));
    json(output)["results"].as_array().unwrap().iter().map(|r| r["outcome"].as_str().unwrap().to_owned()).collect()
}

fn two_gates(database_url: Option<&str>, later_syncs_first: bool) {
    let setup = setup(database_url);
    let (a, b) = (setup.gate("GATE-A"), setup.gate("GATE-B"));

    let admitted = setup.admit(&a, None);
    assert_eq!(admitted.status.code(), Some(0), "{}", String::from_utf8_lossy(&admitted.stderr));
    assert_eq!(json(&admitted)["entry"]["checkpoint_id"], "GATE-A");
    // The journal is gate A's status list: the same pass is refused there before any sync.
    let again = setup.admit(&a, None);
    assert_eq!(again.status.code(), Some(1));
    let again = json(&again);
    assert_eq!(
        (again["reason"].as_str(), again["entry"]["checkpoint_id"].as_str()),
        (Some("already_used"), Some("GATE-A"))
    );
    assert!(again["detail"].as_str().unwrap().contains("journal entry 1"), "{again}");
    // Gate B, offline too, knows nothing of it: it admits the holder again, later.
    let admitted = setup.admit(&b, None);
    assert_eq!(admitted.status.code(), Some(0), "{}", String::from_utf8_lossy(&admitted.stderr));

    let (first, second) = if later_syncs_first { (&b, &a) } else { (&a, &b) };
    assert_eq!(outcomes(&setup.sync(first, None)), ["recorded"]);
    let synced = setup.sync(second, None);
    assert_eq!(outcomes(&synced), ["conflict"]);
    let result = &json(&synced)["results"][0];
    // The answer names both: A's is the entry (earlier), B's the double entry.
    assert_eq!(result["entry"]["checkpoint_id"], "GATE-A", "{result}");
    assert_eq!(result["double_entry"]["checkpoint_id"], "GATE-B", "{result}");
    assert_eq!(setup.entry_checkpoint(), "GATE-A");
    let trail = setup.offline_trail();
    let doubles: Vec<_> = trail.iter().filter(|(outcome, _)| outcome == "double_entry").collect();
    assert_eq!(doubles, [&("double_entry".to_owned(), "GATE-B".to_owned())], "{trail:?}");

    // Nothing left to send; and the journals uploaded again from scratch change nothing.
    assert!(outcomes(&setup.sync(&a, None)).is_empty());
    for gate in [&a, &b] {
        std::fs::remove_file(gate.journal.with_extension("journal.acks")).unwrap();
        assert_eq!(outcomes(&setup.sync(gate, None)), ["already_recorded"]);
    }
    assert_eq!(setup.offline_trail(), trail);
    assert_eq!(setup.entry_checkpoint(), "GATE-A");
}

#[test]
fn two_offline_gates_on_sqlite_the_earlier_syncing_first() {
    two_gates(None, false);
}

#[test]
fn two_offline_gates_on_sqlite_the_later_syncing_first() {
    two_gates(None, true);
}

fn kills(database_url: Option<&str>) {
    let setup = setup(database_url);
    let gate = setup.gate("GATE-K");

    // Killed after the journal's sync, before ACCEPTED was printed.
    let killed = setup.admit(&gate, Some("admit-after-append"));
    assert_ne!(killed.status.code(), Some(0));
    assert!(!String::from_utf8_lossy(&killed.stdout).contains("accepted"));
    // The entry is there: the holder is refused a second time here, naming it.
    let again = setup.admit(&gate, None);
    assert_eq!(again.status.code(), Some(1));
    assert!(json(&again)["detail"].as_str().unwrap().contains("journal entry 1"));

    // Killed after the upload, before the acknowledgement was written.
    let killed = setup.sync(&gate, Some("sync-after-upload"));
    assert_ne!(killed.status.code(), Some(0));
    let acks = gate.journal.with_extension("journal.acks");
    assert!(std::fs::read_to_string(&acks).unwrap_or_default().is_empty());
    let trail = setup.offline_trail();
    assert_eq!(trail, [("accepted".to_owned(), "GATE-K".to_owned())]);
    // The sync resumes: the server knows the entry, and counts it once.
    assert_eq!(outcomes(&setup.sync(&gate, None)), ["already_recorded"]);
    assert_eq!(setup.offline_trail(), trail);
    assert!(outcomes(&setup.sync(&gate, None)).is_empty());
    assert_eq!(setup.entry_checkpoint(), "GATE-K");
}

#[test]
fn kills_lose_nothing_and_count_nothing_twice_on_sqlite() {
    kills(None);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_offline_gates_on_postgres_in_either_order() {
    for later_syncs_first in [false, true] {
        let Some(database) = ScratchDatabase::create().await else { return };
        let url = database.url().to_owned();
        tokio::task::spawn_blocking(move || two_gates(Some(&url), later_syncs_first)).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn kills_lose_nothing_and_count_nothing_twice_on_postgres() {
    let Some(database) = ScratchDatabase::create().await else { return };
    let url = database.url().to_owned();
    tokio::task::spawn_blocking(move || kills(Some(&url))).await.unwrap();
}
