//! `epass backup` through the real binary: a backup taken while `epass serve` issues passes and
//! records entries, restored into a fresh data directory with the files the copy does not hold,
//! serves every pass and entry acknowledged before the backup started, answers their retries as
//! the first server did and still counts the quota; and the refusals (an existing file, a
//! PostgreSQL URL, no database).

#[path = "common/application.rs"]
mod application;
#[path = "common/command.rs"]
mod command;
#[path = "common/served.rs"]
mod served;

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tonic::transport::Channel;
use tonic::Code;

use epass::clock::{Clock as _, SystemClock};
use epass::grpc::pb;
use pb::checkpoint_service_client::CheckpointServiceClient;
use pb::issuance_service_client::IssuanceServiceClient;
use served::{bearer, connect, must_finish, Served, Tokens};

/// Passes issued before the first backup, so that the copy has something to copy.
const BEFORE: usize = 60;
/// Callers issuing and admitting at once during the backups.
const CALLERS: usize = 3;
/// Backups tried at most until one ran while calls were being answered.
const BACKUPS: usize = 10;
/// The permit whose two applications of the month are issued before any backup.
const QUOTA_PERMIT: &str = "M11112222";

/// Writes the configuration both servers and the backup run with: `data_dir` (which a
/// `--data-dir` overrides), and rate limits out of the way of the load.
fn write_config(path: &Path, data_dir: &Path) {
    let data_dir = data_dir.to_str().expect("a UTF-8 path");
    std::fs::write(path, format!("[server]\ndata_dir = {data_dir:?}\n\n[limits]\nrate_per_second = 1000000\n"))
        .expect("write the configuration");
}

/// Starts `epass serve` with `config` on `data_dir`.
fn serve(config: &Path, data_dir: &Path) -> (Served, std::net::SocketAddr) {
    let mut command = command::epass();
    command.args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json", "--config"]).arg(config);
    command.arg("--data-dir").arg(data_dir);
    let mut server = Served::start(command);
    let addr = server.address_logged("epass listening");
    (server, addr)
}

/// Something a server acknowledged.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)] // a few hundred of them in a test
enum Acknowledged {
    Issued { request: pb::IssuePassRequest, response: pb::IssuePassResponse },
    Admitted { request: pb::RecordEntryRequest, response: pb::RecordEntryResponse },
}

/// What the callers send: fresh applications (a new permit each, so that no quota refuses
/// them), each followed by an entry of the pass it got.
#[derive(Clone)]
struct Load {
    channel: Channel,
    tokens: Tokens,
    acknowledged: Arc<Mutex<Vec<Acknowledged>>>,
}

impl Load {
    fn application(request_id: &str, permit: &str) -> pb::IssuePassRequest {
        // The server reads the real clock: so does the application.
        application::valid_application(SystemClock.now(), request_id, permit, "+8613800138000")
    }

    async fn issue(&self, request: pb::IssuePassRequest) -> pb::IssuePassResponse {
        let mut client = IssuanceServiceClient::new(self.channel.clone());
        let response =
            client.issue_pass(bearer(request.clone(), &self.tokens.issuer)).await.expect("IssuePass").into_inner();
        self.acknowledged.lock().unwrap().push(Acknowledged::Issued { request, response: response.clone() });
        response
    }

    async fn admit(&self, qr_text: &str, scan_id: &str) {
        let request = pb::RecordEntryRequest {
            qr_text: qr_text.to_owned(),
            checkpoint_id: "SZN-RAIL-01".to_owned(),
            mode: pb::TransportMode::Rail as i32,
            scan_id: scan_id.to_owned(),
        };
        let mut client = CheckpointServiceClient::new(self.channel.clone());
        let response =
            client.record_entry(bearer(request.clone(), &self.tokens.checkpoint)).await.expect("RecordEntry");
        let response = response.into_inner();
        assert_eq!(response.verdict, pb::Verdict::Accepted as i32, "{response:?}");
        self.acknowledged.lock().unwrap().push(Acknowledged::Admitted { request, response });
    }

    /// Caller `caller`'s `n`th pass and its entry.
    async fn issue_and_admit(&self, caller: usize, n: usize) {
        let id = format!("c{caller}-{n}");
        let issued = self.issue(Self::application(&format!("req-{id}"), &format!("H{caller}{n:07}"))).await;
        self.admit(&issued.qr_text, &format!("scan-{id}")).await;
    }

    fn acknowledged(&self) -> usize {
        self.acknowledged.lock().unwrap().len()
    }
}

/// Copies the files of a data directory that a restore needs besides the database.
fn copy_secrets(from: &Path, to: &Path) {
    use epass::datadir::{HASHING_SECRET_FILE, ROOT_KEY_FILE, SIGNING_KEY_FILE, TRUST_LIST_FILE};
    for name in
        [SIGNING_KEY_FILE, HASHING_SECRET_FILE, ROOT_KEY_FILE, TRUST_LIST_FILE, epass::access::LOCAL_TOKENS_FILE]
    {
        std::fs::copy(from.join(name), to.join(name)).unwrap_or_else(|e| panic!("copy {name}: {e}"));
        std::fs::set_permissions(to.join(name), std::fs::Permissions::from_mode(0o600)).unwrap();
    }
}

/// Runs `epass backup` with `args`: its exit code, standard output and standard error.
fn backup(args: &[&std::ffi::OsStr]) -> (Option<i32>, String, String) {
    let output = command::output_within(command::epass().arg("backup").args(args), served::MUST_HAPPEN);
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    (output.status.code(), text(&output.stdout), text(&output.stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_under_load_restores_every_acknowledged_pass_and_entry() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    // The configuration names the data directory: backups find it there, as `serve` does.
    let config = dir.path().join("epass.toml");
    write_config(&config, &data_dir);
    let (server, addr) = serve(&config, &data_dir);
    let load = Load {
        channel: connect(addr).await,
        tokens: Tokens::read(&data_dir),
        acknowledged: Arc::new(Mutex::new(Vec::new())),
    };
    for n in 0..2 {
        load.issue(Load::application(&format!("quota-{n}"), QUOTA_PERMIT)).await;
    }
    for n in 0..BEFORE {
        load.issue_and_admit(CALLERS, n).await;
    }

    // Callers keep issuing and admitting, each call acknowledged in order, while backups run.
    let stop = Arc::new(AtomicBool::new(false));
    let callers: Vec<_> = (0..CALLERS)
        .map(|caller| {
            let (load, stop) = (load.clone(), stop.clone());
            tokio::spawn(async move {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    load.issue_and_admit(caller, n).await;
                    n += 1;
                }
            })
        })
        .collect();
    let mut chosen = None;
    for attempt in 0..BACKUPS {
        let out = dir.path().join(format!("backup-{attempt}.sqlite3"));
        let before = load.acknowledged();
        let run = {
            let (config, out) = (config.clone(), out.clone());
            tokio::task::spawn_blocking(move || {
                backup(&["--config".as_ref(), config.as_ref(), "--out".as_ref(), out.as_ref()])
            })
        };
        let (code, stdout, stderr) = must_finish("epass backup", run).await.unwrap();
        let during = load.acknowledged() - before;
        assert_eq!(code, Some(0), "epass backup failed:\n{stdout}\n{stderr}");
        assert!(stdout.contains("backed up"), "{stdout}");
        assert!(stdout.contains("hashing-secret") && stdout.contains("signing-key.pem"), "{stdout}");
        let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the copy's mode");
        // Online means the server answered calls while the copy was taken.
        if during > 0 {
            eprintln!("backup {attempt}: {during} calls answered while it ran");
            chosen = Some((out, before, stdout));
            break;
        }
    }
    let (copy, acknowledged_before, stdout) =
        chosen.unwrap_or_else(|| panic!("no call was answered while any of {BACKUPS} backups ran"));
    // A little more load after the backup, then the callers stop; none saw an error.
    let after = load.acknowledged();
    must_finish("calls after the backup", async {
        while load.acknowledged() < after + 2 * CALLERS {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for caller in callers {
        must_finish("a caller", caller).await.expect("no call failed");
    }
    let (status, log) = server.stop();
    assert!(status.success(), "the first server's exit: {status:?}\n{}", log.join("\n"));

    let acknowledged = load.acknowledged.lock().unwrap().clone();
    let (passes, entries) = acknowledged[..acknowledged_before].iter().fold((0, 0), |(p, e), a| match a {
        Acknowledged::Issued { .. } => (p + 1, e),
        Acknowledged::Admitted { .. } => (p, e + 1),
    });
    let copied: usize = stdout
        .split(", ")
        .find_map(|part| part.strip_suffix(" used)")?.split_once(" passes (")?.0.parse().ok())
        .unwrap_or_else(|| panic!("a pass count in {stdout:?}"));
    assert!(copied >= passes, "{copied} passes copied, {passes} acknowledged before the backup: {stdout}");

    // Restore: the copy as the database, and the files it does not hold.
    let restored = dir.path().join("restored");
    std::fs::create_dir(&restored).unwrap();
    std::fs::set_permissions(&restored, std::fs::Permissions::from_mode(0o700)).unwrap();
    let database = restored.join(epass::datadir::DATABASE_FILE);
    std::fs::copy(&copy, &database).unwrap();
    std::fs::set_permissions(&database, std::fs::Permissions::from_mode(0o600)).unwrap();
    copy_secrets(&data_dir, &restored);
    let (server, addr) = serve(&config, &restored);
    let channel = connect(addr).await;
    let tokens = Tokens::read(&restored);
    let mut issuance = IssuanceServiceClient::new(channel.clone());
    let mut checkpoint = CheckpointServiceClient::new(channel.clone());

    for (i, earlier) in acknowledged[..acknowledged_before].iter().enumerate() {
        match earlier {
            Acknowledged::Issued { request, response } => {
                let pass = response.pass.clone().expect("the pass");
                let get = pb::GetPassRequest { pass_id: pass.pass_id.clone() };
                let found = issuance.get_pass(bearer(get, &tokens.issuer)).await;
                let found = found.unwrap_or_else(|e| panic!("pass {i} is gone: {e:?}")).into_inner().pass.unwrap();
                assert_eq!(found.issued_at, pass.issued_at, "pass {i}");
                assert_eq!(found.valid_until, pass.valid_until, "pass {i}");
                // The retry gets the same pass, as a replay.
                let again = issuance.issue_pass(bearer(request.clone(), &tokens.issuer)).await;
                let again = again.unwrap_or_else(|e| panic!("retry of pass {i}: {e:?}")).into_inner();
                assert!(again.replayed, "retry of pass {i} is a replay");
                assert_eq!(again.pass.unwrap().pass_id, pass.pass_id, "retry of pass {i}");
                assert_eq!(again.qr_text, response.qr_text, "retry of pass {i}");
            }
            Acknowledged::Admitted { request, response } => {
                let entry = response.entry.clone().expect("the entry");
                let pass_id = response.pass.as_ref().expect("the pass").pass_id.clone();
                let get = pb::GetPassRequest { pass_id };
                let found = issuance.get_pass(bearer(get, &tokens.issuer)).await.expect("GetPass").into_inner();
                assert_eq!(found.pass.unwrap().entry, Some(entry.clone()), "entry {i}");
                // The same scan again: the same answer.
                let again = checkpoint.record_entry(bearer(request.clone(), &tokens.checkpoint)).await;
                let again = again.unwrap_or_else(|e| panic!("resent entry {i}: {e:?}")).into_inner();
                assert_eq!(again.verdict, pb::Verdict::Accepted as i32, "resent entry {i}");
                assert_eq!(again.entry, Some(entry.clone()), "resent entry {i}");
                // Another scan of the pass: already used, naming that entry.
                let mut other = request.clone();
                other.scan_id = format!("{}-again", request.scan_id);
                let other = checkpoint.record_entry(bearer(other, &tokens.checkpoint)).await.expect("RecordEntry");
                let other = other.into_inner();
                assert_eq!(other.verdict, pb::Verdict::Rejected as i32, "second entry {i}");
                assert_eq!(other.reason, pb::RejectionReason::AlreadyUsed as i32, "second entry {i}");
                assert_eq!(other.entry, Some(entry), "second entry {i}");
            }
        }
    }
    // The quota still counts: the permit's two passes of the month were restored.
    let third = Load::application("quota-2", QUOTA_PERMIT);
    let refused = issuance.issue_pass(bearer(third, &tokens.issuer)).await.expect_err("a third application");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    let (status, log) = server.stop();
    assert!(status.success(), "the restored server's exit: {status:?}\n{}", log.join("\n"));
    eprintln!(
        "{passes} passes and {entries} entries acknowledged before the backup; {copied} passes copied; \
         {} calls acknowledged in all",
        acknowledged.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_refuses_an_existing_file_postgres_and_a_missing_database() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("backup.sqlite3");
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let arg = |path: &PathBuf| path.as_os_str().to_owned();

    let (code, _, stderr) = backup(&["--data-dir".as_ref(), &arg(&empty), "--out".as_ref(), &arg(&out)]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("no database at"), "{stderr}");
    assert!(!out.exists(), "nothing written");

    // A database to copy: a server's first start makes one.
    let data_dir = dir.path().join("data");
    let config = dir.path().join("epass.toml");
    write_config(&config, &data_dir);
    let (server, addr) = serve(&config, &data_dir);
    // Serving, so that it has its SIGTERM handler.
    served::wait_for_health(&connect(addr).await, tonic_health::pb::health_check_response::ServingStatus::Serving)
        .await;
    let (status, log) = server.stop();
    assert!(status.success(), "{status:?}\n{}", log.join("\n"));
    std::fs::write(&out, "keep me").unwrap();
    let (code, _, stderr) = backup(&["--data-dir".as_ref(), &arg(&data_dir), "--out".as_ref(), &arg(&out)]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("exists") && stderr.contains("never overwrites"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "keep me");

    let fresh = dir.path().join("fresh.sqlite3");
    let url = "postgres://epass:secret@db.example:5432/epass";
    let (code, _, stderr) = backup(&["--database-url".as_ref(), url.as_ref(), "--out".as_ref(), &arg(&fresh)]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("pg_dump") && stderr.contains("pg_basebackup"), "{stderr}");
    assert!(!stderr.contains("secret"), "the password is not shown: {stderr}");
    assert!(!fresh.exists(), "nothing written");

    // And the copy itself works on the stopped server's directory too.
    let (code, stdout, stderr) = backup(&["--data-dir".as_ref(), &arg(&data_dir), "--out".as_ref(), &arg(&fresh)]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("0 passes (0 used)"), "{stdout}");
}
