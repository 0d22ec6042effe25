//! `epass serve` and `epass config check` through the real binary: SIGTERM and Ctrl-C during
//! load (no call cut, exit 0), configuration errors (exit 64 before anything is opened), the
//! example configuration, and a TLS configuration used by the command line.

mod common;

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tonic::{Code, Request};

use common::{must_finish, pb};
use epass::access::{LocalTokens, Role};
use pb::checkpoint_service_client::CheckpointServiceClient;

use common::command::{self, EPASS};

/// How long a command that must end by itself (a refused `serve`) is given before it is killed
/// and the test fails: far beyond what it needs, so only a hang trips it.
const MUST_END: Duration = Duration::from_secs(60);

/// An `epass serve` process, killed if still running when dropped.
struct Served {
    child: Child,
    address: String,
    log: Arc<Mutex<Vec<String>>>,
    data_dir: PathBuf,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Served {
    /// Sends a signal by name (`TERM`, `INT`) with kill(1): the crate forbids unsafe code.
    fn signal(&self, name: &str) {
        let status =
            Command::new("kill").args([&format!("-{name}"), &self.child.id().to_string()]).status().expect("run kill");
        assert!(status.success(), "kill -{name}");
    }

    /// Waits for the process to end, and its log to be read.
    fn wait(&mut self) -> (std::process::ExitStatus, Vec<String>) {
        let status = self.child.wait().expect("wait for epass serve");
        // The reader thread ends with the pipe; give it the moment it needs.
        for _ in 0..100 {
            if self.log.lock().unwrap().last().is_some_and(|l| l.contains("stopped")) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        (status, self.log.lock().unwrap().clone())
    }

    fn epass(&self, args: &[&str]) -> Output {
        command::epass().args(args).env("EPASS_DATA_DIR", &self.data_dir).output().expect("run epass")
    }
}

/// Starts `epass serve` with `args` on a free loopback port and a data directory in `dir`.
fn serve(dir: &Path, args: &[&str]) -> Served {
    let data_dir = dir.join("data");
    let mut child = command::epass()
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data_dir)
        .args(args)
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("start epass serve");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr is piped")).lines();
    let log = Arc::new(Mutex::new(Vec::new()));
    let address = loop {
        let line = lines.next().expect("server exited before listening").expect("read server log");
        log.lock().unwrap().push(line.clone());
        if line.contains("epass listening") {
            let start = line.find("127.0.0.1:").expect("log names the address");
            break line[start..].split(|c: char| c.is_whitespace() || c == '"').next().expect("address").to_owned();
        }
    };
    let keep = log.clone();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            keep.lock().unwrap().push(line);
        }
    });
    Served { child, address, log, data_dir }
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write file");
    path
}

fn verify_request() -> pb::VerifyPassRequest {
    pb::VerifyPassRequest {
        qr_text: "EP1:AAAA".into(),
        checkpoint_id: "SZX-AIR-01".into(),
        mode: pb::TransportMode::Air as i32,
    }
}

/// Whether a failed call was refused before the server accepted it: UNAVAILABLE (the
/// connection was refused or the stream rejected), or the client's own CANCELLED for a
/// request still queued in hyper's client when the connection closed ("operation was
/// canceled: connection closed" is hyper's error for a request it never sent). A call the
/// server had accepted and then cut would end otherwise (UNKNOWN, INTERNAL, a reset stream).
/// One INTERNAL is a refusal too: h2's `GoAway(_, NO_ERROR, Remote)` is what a stream gets
/// when the server's graceful GOAWAY names a last stream below it, which by HTTP/2 (RFC 9113,
/// 6.8) the server never processed: a request that crossed the GOAWAY on the wire.
fn never_accepted(status: &tonic::Status) -> bool {
    if status.code() == Code::Internal && format!("{status:?}").contains("GoAway(b\"\", NO_ERROR, Remote)") {
        return true;
    }
    let mut chain = Vec::new();
    let mut source = std::error::Error::source(status);
    while let Some(cause) = source {
        chain.push(cause.to_string());
        source = cause.source();
    }
    let chain = chain.join(": ");
    match status.code() {
        Code::Unavailable => true,
        Code::Cancelled => chain.contains("operation was canceled: connection closed"),
        _ => false,
    }
}

/// Calls from several connections while the server is told to stop: every call either
/// succeeds or is refused as UNAVAILABLE (never accepted, so nothing was done); none is cut
/// (CANCELLED, UNKNOWN, INTERNAL); and the process exits 0.
async fn stop_during_load(signal: &str) {
    const CALLS_BEFORE_THE_STOP: usize = 50;
    let dir = tempfile::tempdir().unwrap();
    // Rate limits off the way: this is about shutdown.
    let config = write(dir.path(), "epass.toml", "[limits]\nrate_per_second = 1000000\nshutdown_grace_seconds = 30\n");
    let mut server = serve(dir.path(), &["--config", config.to_str().unwrap()]);
    let tokens = LocalTokens::read(&server.data_dir).expect("local tokens written on first start");
    let token = format!("Bearer {}", tokens.token(Role::Checkpoint).unwrap());
    let url = format!("http://{}", server.address);

    // Calls answered, per caller.
    let done: Vec<Arc<AtomicUsize>> = (0..4).map(|_| Arc::new(AtomicUsize::new(0))).collect();
    let mut tasks = Vec::new();
    for done in &done {
        let (done, token, url) = (done.clone(), token.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            let channel = tonic::transport::Endpoint::from_shared(url).unwrap().connect().await.expect("connect");
            let mut client = CheckpointServiceClient::new(channel);
            let mut ok = 0usize;
            // Bounded: the server is told to stop long before this many calls.
            for _ in 0..100_000 {
                let mut request = Request::new(verify_request());
                request.metadata_mut().insert("authorization", token.parse().unwrap());
                match client.verify_pass(request).await {
                    Ok(_) => {
                        ok += 1;
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(status) => return (ok, Some(status)),
                }
            }
            (ok, None)
        }));
    }
    // Every caller is under way (its calls answered) before the signal: the order, not a time,
    // is what makes each one's call in flight at the stop.
    must_finish("calls under way on every connection", async {
        while done.iter().any(|d| d.load(Ordering::Relaxed) < CALLS_BEFORE_THE_STOP) {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await;
    server.signal(signal);
    let results = must_finish("callers", futures_util::future::join_all(tasks)).await;
    for result in results {
        let (ok, refusal) = result.expect("caller task");
        assert!(ok >= CALLS_BEFORE_THE_STOP, "{ok} calls answered");
        let status = refusal.expect("the server stopped before the callers did");
        assert!(never_accepted(&status), "a call was cut instead of refused: {status:?}");
    }
    let (status, log) = tokio::task::spawn_blocking(move || server.wait()).await.unwrap();
    assert_eq!(status.code(), Some(0), "exit status; log:\n{}", log.join("\n"));
    let log = log.join("\n");
    assert!(log.contains("shutting down"), "{log}");
    assert!(!log.contains("grace period over"), "nothing was cut: {log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_load_cuts_no_call_and_exits_zero() {
    stop_during_load("TERM").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_during_load_cuts_no_call_and_exits_zero() {
    stop_during_load("INT").await;
}

#[test]
fn the_example_configuration_is_good() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/epass.example.toml");
    let out = command::epass().args(["config", "check"]).arg(&example).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("good (listen 127.0.0.1:50051, 3 clients, TLS off"));
}

#[test]
fn a_bad_setting_exits_64_naming_it_before_anything_is_opened() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "bad.toml", "[limits]\nrate_per_second = 0\n");
    let check = command::epass().args(["config", "check"]).arg(&config).output().unwrap();
    assert_eq!(check.status.code(), Some(64));
    assert_eq!(
        String::from_utf8_lossy(&check.stderr).trim(),
        "config error: limits.rate_per_second: must be greater than 0"
    );

    let data_dir = dir.path().join("data");
    // Were the setting let through, the server would listen (on a free loopback port): the
    // deadline turns that into a failure instead of a hang.
    let serve = command::output_within(
        command::epass()
            .args(["serve", "--listen", "127.0.0.1:0", "--config"])
            .arg(&config)
            .arg("--data-dir")
            .arg(&data_dir),
        MUST_END,
    );
    assert_eq!(serve.status.code(), Some(64));
    assert!(
        String::from_utf8_lossy(&serve.stderr).contains("config error: limits.rate_per_second: must be greater than 0"),
        "{}",
        String::from_utf8_lossy(&serve.stderr)
    );
    assert!(!data_dir.exists(), "nothing was created");

    // The environment is checked the same way, and so is a TLS file that is PEM but no key.
    // A non-loopback address without TLS is refused. The address is a documentation one
    // (TEST-NET-1) that no interface has, and the port is 0: were the check gone, binding would
    // fail with another message, and no public port would ever be opened.
    let listen = command::output_within(
        command::epass().args(["serve", "--data-dir"]).arg(&data_dir).env("EPASS_LISTEN", "192.0.2.1:0"),
        MUST_END,
    );
    assert_eq!(listen.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&listen.stderr).contains("config error: server.listen:"));
    let pki = common::tls::pki();
    let certs = pki.write(&dir.path().join("tls"));
    let config = write(
        dir.path(),
        "tls.toml",
        &format!(
            "[tls]\ncert = \"{0}/server.pem\"\nkey = \"{0}/server-ca.pem\"\n",
            certs.display() // a certificate where the key should be
        ),
    );
    let check = command::epass().args(["config", "check"]).arg(&config).output().unwrap();
    assert_eq!(check.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&check.stderr).starts_with("config error: tls.key: "), "{check:?}");
    assert!(!data_dir.exists(), "nothing was created");
}

/// Regression (issue 12): a value of the wrong type, an unknown role, a certificate file with
/// no certificate and an unknown key gave messages that did not name the setting.
#[test]
fn config_check_names_the_dotted_path_of_every_bad_setting() {
    let dir = tempfile::tempdir().unwrap();
    let pki = common::tls::pki();
    let certs = pki.write(&dir.path().join("tls"));
    let hash = "ab".repeat(32);
    let cases = [
        ("[limits]\nrate_per_second = \"fast\"\n".to_owned(), "limits.rate_per_second: invalid type: string \"fast\""),
        (
            format!("[[clients]]\nname = \"ops\"\nrole = \"superuser\"\ntoken_sha256 = \"{hash}\"\n"),
            "clients[0].role: unknown variant `superuser`",
        ),
        (
            // The server's key where its certificate should be.
            format!("[tls]\ncert = \"{0}/server.key\"\nkey = \"{0}/server.key\"\n", certs.display()),
            "tls.cert: ",
        ),
        ("[limits]\nburst = 10\n".to_owned(), "limits.burst: unknown setting, expected one of"),
    ];
    for (text, expected) in cases {
        let config = write(dir.path(), "bad.toml", &text);
        let check = command::epass().args(["config", "check"]).arg(&config).output().unwrap();
        assert_eq!(check.status.code(), Some(64), "{text}");
        let stderr = String::from_utf8_lossy(&check.stderr);
        assert!(stderr.starts_with(&format!("config error: {expected}")), "{text}: {stderr}");
    }
}

#[test]
fn a_tls_configuration_serves_https_and_the_command_line_uses_it() {
    let dir = tempfile::tempdir().unwrap();
    let pki = common::tls::pki();
    let certs = pki.write(&dir.path().join("tls"));
    let token = "checkpoint-token-for-the-tls-test-0123456789";
    let config = write(
        dir.path(),
        "epass.toml",
        &format!(
            r#"
[tls]
cert = "{certs}/server.pem"
key = "{certs}/server.key"
client_ca = "{certs}/client-ca.pem"

[[clients]]
name = "gate"
role = "checkpoint"
token_sha256 = "{token_hash}"

[[clients]]
name = "backend"
role = "issuer"
cert_sha256 = "{cert_hash}"
"#,
            certs = certs.display(),
            token_hash = hex::encode(epass::access::sha256(token.as_bytes())),
            cert_hash = hex::encode(epass::access::sha256(&pki.client.der)),
        ),
    );
    let check = command::epass().args(["config", "check"]).arg(&config).output().unwrap();
    assert_eq!(check.status.code(), Some(0), "{}", String::from_utf8_lossy(&check.stderr));
    assert!(String::from_utf8_lossy(&check.stdout).contains("2 clients, TLS on with client certificates"));

    let server = serve(dir.path(), &["--config", config.to_str().unwrap()]);
    assert!(!server.data_dir.join("local-tokens.toml").exists(), "configured clients: no local tokens");
    let url = format!("https://{}", server.address);
    let ca = certs.join("server-ca.pem");
    let tls = ["--server", &url, "--tls-ca", ca.to_str().unwrap()];

    // The checkpoint token: the call goes through and the garbage QR is rejected (exit 1).
    let verified =
        server.epass(&[&["verify"][..], &tls[..], &["--token", token, "--mode", "air", "EP1:AAAA"]].concat());
    assert_eq!(verified.status.code(), Some(1), "{}", String::from_utf8_lossy(&verified.stderr));
    assert!(String::from_utf8_lossy(&verified.stdout).contains("BAD_FORMAT"));
    // Without a token: refused, and the message says how to give one.
    let refused = server.epass(&[&["verify"][..], &tls[..], &["--mode", "air", "EP1:AAAA"]].concat());
    assert_eq!(refused.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("Unauthenticated") && stderr.contains("--token"), "{stderr}");
    // The client certificate is the issuer.
    let client = [
        "--tls-cert",
        &format!("{}/client.pem", certs.display()),
        "--tls-key",
        &format!("{}/client.key", certs.display()),
    ]
    .map(|s| s.to_owned());
    let issue = [
        "issue",
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
    ];
    let client: Vec<&str> = client.iter().map(String::as_str).collect();
    let issued = server.epass(&[&issue[..], &tls[..], &client[..]].concat());
    assert_eq!(issued.status.code(), Some(0), "{}", String::from_utf8_lossy(&issued.stderr));
    // Plain http to the TLS port fails, and https without --tls-ca says what is missing.
    let plain = server.epass(&[
        "verify",
        "--server",
        &format!("http://{}", server.address),
        "--token",
        token,
        "--mode",
        "air",
        "EP1:AAAA",
    ]);
    assert_eq!(plain.status.code(), Some(2));
    let no_ca = server.epass(&["verify", "--server", &url, "--token", token, "--mode", "air", "EP1:AAAA"]);
    assert_eq!(no_ca.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&no_ca.stderr).contains("--tls-ca"));
}

/// Regression (issue 12): the database and its WAL were world-readable (0644 in a 0755
/// directory). Under a umask of 000, the most permissive, the data directory is 0700 and the
/// database, its `-wal` and its `-shm` are 0600, like the keys.
#[test]
fn the_data_directory_and_the_database_are_private_whatever_the_umask() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let mut child = command::hermetic(&mut Command::new("sh"))
        .args(["-c", "umask 000 && exec \"$0\" \"$@\"", EPASS, "serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data_dir)
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("start epass serve");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr is piped")).lines();
    loop {
        let line = lines.next().expect("server exited before listening").expect("read server log");
        if line.contains("epass listening") {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    let mode = |path: &Path| std::fs::metadata(path).map(|m| m.permissions().mode() & 0o777);
    let modes: Vec<(String, std::io::Result<u32>)> = ["", "epass.sqlite3", "epass.sqlite3-wal", "epass.sqlite3-shm"]
        .iter()
        .map(|name| (name.to_string(), mode(&data_dir.join(name))))
        .collect();
    let _ = child.kill();
    let _ = child.wait();
    for (name, mode) in modes {
        let expected = if name.is_empty() { 0o700 } else { 0o600 };
        let mode = mode.unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(mode, expected, "{name:?} is {mode:o}");
    }
}
