//! The logs of the real binary: `epass serve` with JSON logs at debug level (sqlx, h2, hyper
//! and tonic included) is driven through issue, verify, admit twice, revoke, look-up and
//! malformed requests; every line must be JSON, every RPC must have its line, and no line may
//! contain the permit number, the mobile number, the QR text or a bearer token, in any spelling.
//! Also checks that `--metrics-listen` serves `/metrics` from the binary.

#[path = "common/application.rs"]
mod application;
#[path = "common/command.rs"]
mod command;

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tonic::transport::{Channel, Endpoint};
use tonic::Code;

use epass::clock::{Clock as _, SystemClock};
use epass::grpc::pb;
use pb::checkpoint_service_client::CheckpointServiceClient;
use pb::issuance_service_client::IssuanceServiceClient;

/// The applicant's permit number: distinctive, so that any trace of it in a log is found.
const PERMIT: &str = "H87654321";
/// The applicant's mobile number.
const MOBILE: &str = "+8613912345678";
/// A token no caller has, sent once: refusals must not echo it.
const WRONG_TOKEN: &str = "wrong-token-Zq8vX3mN7pL2kR9tW4yB6cD1fG5hJ0sA";

/// The server process; killed if the test fails before stopping it.
struct Server {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start(data_dir: &Path) -> Self {
        Self::start_with(data_dir, &[])
    }

    /// [`Server::start`] with more arguments (such as `--config FILE`).
    fn start_with(data_dir: &Path, args: &[&std::ffi::OsStr]) -> Self {
        let mut child = command::epass()
            .args(["serve", "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--log-format", "json"])
            .arg("--data-dir")
            .arg(data_dir)
            .args(args)
            .env("RUST_LOG", "debug")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start epass serve");
        let stderr = child.stderr.take().expect("stderr is piped");
        let (send, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        Self { child, lines, seen: Vec::new() }
    }

    /// Reads log lines until one has `message`; returns its `address` field.
    fn address_logged(&mut self, message: &str) -> SocketAddr {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line =
                self.lines.recv_timeout(left).unwrap_or_else(|_| panic!("no {message:?} line: {:#?}", self.seen));
            self.seen.push(line.clone());
            let Ok(json) = serde_json::from_str::<Value>(&line) else { continue };
            if json["message"] == message {
                return json["address"].as_str().expect("address field").parse().expect("socket address");
            }
        }
    }

    /// Stops the server with SIGTERM and returns every line it logged.
    fn stop(mut self) -> Vec<String> {
        let status = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status().expect("run kill");
        assert!(status.success(), "kill -TERM failed");
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.child.try_wait().expect("wait for the server").is_none() {
            assert!(Instant::now() < deadline, "server did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut lines = std::mem::take(&mut self.seen);
        // The pipe closes with the process: the reader thread ends and the channel drains.
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(10)) {
            lines.push(line);
        }
        lines
    }
}

/// The local callers' tokens (role name to token), which a server with no configured callers
/// writes on first start. Without them access control would be off, and the test would not
/// show that tokens stay out of the logs.
fn local_tokens(data_dir: &Path) -> BTreeMap<String, String> {
    let path = data_dir.join("local-tokens.toml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let tokens: BTreeMap<String, String> = toml::from_str(&text).expect("local tokens file");
    for role in ["issuer", "checkpoint", "admin"] {
        assert!(tokens.get(role).is_some_and(|t| !t.is_empty()), "a token for {role}: {tokens:?}");
    }
    tokens
}

/// A request with the bearer token of `role`.
fn with_token<T>(message: T, tokens: &BTreeMap<String, String>, role: &str) -> tonic::Request<T> {
    let token = tokens.get(role).unwrap_or_else(|| panic!("no token for {role}"));
    bearer(message, token)
}

fn application(request_id: &str) -> pb::IssuePassRequest {
    // The server reads the real clock: so does the application.
    application::valid_application(SystemClock.now(), request_id, PERMIT, MOBILE)
}

/// `GET /metrics` over plain HTTP/1.1: the body.
fn scrape(addr: SocketAddr) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect to the metrics listener");
    write!(stream, "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").expect("send request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read response");
    let (head, body) = response.split_once("\r\n\r\n").expect("head and body");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_owned()
}

/// What the server sent back that must not be logged either.
struct Driven {
    qr_text: String,
    pass_id: String,
}

async fn drive(addr: SocketAddr, tokens: &BTreeMap<String, String>) -> Driven {
    let channel: Channel =
        Endpoint::from_shared(format!("http://{addr}")).expect("endpoint").connect().await.expect("connect");
    let mut issuance = IssuanceServiceClient::new(channel.clone());
    let mut checkpoint = CheckpointServiceClient::new(channel);

    let issued = issuance
        .issue_pass(with_token(application("log-test-1"), tokens, "issuer"))
        .await
        .expect("IssuePass succeeds")
        .into_inner();
    let qr_text = issued.qr_text;
    let pass_id = issued.pass.expect("pass").pass_id;

    let verify = pb::VerifyPassRequest {
        qr_text: qr_text.clone(),
        checkpoint_id: "SZX-AIR-01".to_owned(),
        mode: pb::TransportMode::Air as i32,
    };
    let verdict = checkpoint.verify_pass(with_token(verify, tokens, "checkpoint")).await.expect("VerifyPass");
    assert_eq!(verdict.into_inner().verdict, pb::Verdict::Accepted as i32);
    for (scan_id, expected) in [("scan-1", pb::Verdict::Accepted), ("scan-2", pb::Verdict::Rejected)] {
        let record = pb::RecordEntryRequest {
            qr_text: qr_text.clone(),
            checkpoint_id: "SZN-01".to_owned(),
            mode: pb::TransportMode::Rail as i32,
            scan_id: scan_id.to_owned(),
        };
        let answer = checkpoint.record_entry(with_token(record, tokens, "checkpoint")).await.expect("RecordEntry");
        assert_eq!(answer.into_inner().verdict, expected as i32, "{scan_id}");
    }
    let revoke = pb::RevokePassRequest { pass_id: pass_id.clone(), reason: "lost phone".to_owned() };
    issuance.revoke_pass(with_token(revoke, tokens, "admin")).await.expect("RevokePass succeeds");
    let get = pb::GetPassRequest { pass_id: pass_id.clone() };
    issuance.get_pass(with_token(get, tokens, "issuer")).await.expect("GetPass succeeds");

    // Malformed applications that carry the numbers in invalid fields.
    let mut bad = application("log-test-2");
    let applicant = bad.applicant.as_mut().expect("applicant");
    applicant.name_latin = format!("CHAN {PERMIT} {}", "X".repeat(300));
    applicant.permit_number = format!("{PERMIT}{PERMIT}");
    applicant.mobile = format!("{MOBILE}99999");
    let status = issuance.issue_pass(with_token(bad, tokens, "issuer")).await.expect_err("malformed application");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(!status.message().contains(PERMIT), "the error echoes the permit number: {}", status.message());
    assert!(!status.message().contains("13912345678"), "the error echoes the mobile: {}", status.message());
    // A QR text whose signature is bad (the pass's own, one byte changed).
    let mut tampered = qr_text.clone().into_bytes();
    let last = tampered.len() - 1;
    tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
    let verify = pb::VerifyPassRequest {
        qr_text: String::from_utf8(tampered).expect("ASCII"),
        checkpoint_id: "SZX-AIR-01".to_owned(),
        mode: pb::TransportMode::Air as i32,
    };
    checkpoint.verify_pass(with_token(verify, tokens, "checkpoint")).await.expect("VerifyPass of a tampered QR");
    // A token nobody has: refused.
    let get = pb::GetPassRequest { pass_id: pass_id.clone() };
    let status = issuance.get_pass(bearer(get, WRONG_TOKEN)).await.expect_err("a token nobody has");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");

    Driven { qr_text, pass_id }
}

/// The line with spaces, dashes, dots and brackets taken out and letters upper-cased: how a
/// number written as `h8765 4321` or `+86 139-1234-5678` would still be found.
fn squeezed(line: &str) -> String {
    line.chars()
        .filter(|c| !matches!(c, ' ' | '\t' | '-' | '.' | '(' | ')' | '+' | '_'))
        .flat_map(char::to_uppercase)
        .collect()
}

#[test]
fn json_logs_at_debug_level_name_each_rpc_and_never_the_numbers_or_tokens() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let data_dir = dir.path().join("data");
    let mut server = Server::start(&data_dir);
    let metrics_addr = server.address_logged("metrics at /metrics");
    let addr = server.address_logged("epass listening");
    let tokens = local_tokens(&data_dir);

    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let driven = runtime.block_on(drive(addr, &tokens));
    let metrics = scrape(metrics_addr);
    let lines = server.stop();

    // The binary's metrics endpoint counts what was done.
    assert!(metrics.lines().any(|l| l == "epass_passes_issued_total 1"), "{metrics}");

    // Every line is one JSON object.
    let events: Vec<Value> = lines
        .iter()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect();
    let targets =
        |prefix: &str| events.iter().filter(|e| e["target"].as_str().is_some_and(|t| t.starts_with(prefix))).count();
    assert!(targets("sqlx") > 0, "the test covers sqlx debug output");
    assert!(targets("h2") > 0, "the test covers h2 debug output");

    // One line per RPC, with method, caller, code and duration.
    let rpc = |method: &str, code: &str| {
        events
            .iter()
            .filter(|e| {
                e["target"] == "epass::rpc" && e["method"] == format!("/epass.v1.{method}") && e["code"] == code
            })
            .inspect(|e| {
                assert!(e["caller"].is_string(), "caller: {e}");
                assert!(e["duration_ms"].is_number(), "duration: {e}");
            })
            .count()
    };
    assert_eq!(rpc("IssuanceService/IssuePass", "OK"), 1);
    assert_eq!(rpc("IssuanceService/IssuePass", "INVALID_ARGUMENT"), 1);
    assert_eq!(rpc("CheckpointService/VerifyPass", "OK"), 2);
    assert_eq!(rpc("CheckpointService/RecordEntry", "OK"), 2);
    assert_eq!(rpc("IssuanceService/RevokePass", "OK"), 1);
    assert_eq!(rpc("IssuanceService/GetPass", "OK"), 1);
    assert_eq!(rpc("IssuanceService/GetPass", "UNAUTHENTICATED"), 1);
    // The handlers' own lines name the pass and carry the RPC's span.
    let issued = events.iter().find(|e| e["message"] == "pass issued").expect("a 'pass issued' line");
    assert_eq!(issued["pass_id"], driven.pass_id.as_str(), "{issued}");
    assert_eq!(issued["span"]["method"], "/epass.v1.IssuanceService/IssuePass", "{issued}");

    // Nothing identifying, in any spelling.
    let mut secrets: Vec<String> = vec![squeezed(PERMIT), squeezed(MOBILE), squeezed(WRONG_TOKEN)];
    secrets.extend(tokens.values().map(|t| squeezed(t)));
    let qr_body = driven.qr_text.split_once(':').map_or(driven.qr_text.as_str(), |(_, body)| body);
    for line in &lines {
        let line_squeezed = squeezed(line);
        for secret in &secrets {
            assert!(!line_squeezed.contains(secret.as_str()), "a log line contains {secret}: {line}");
        }
        assert!(!line.contains(qr_body), "a log line contains the QR text: {line}");
    }
}

/// A request with `authorization: Bearer <token>`.
fn bearer<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().expect("header value"));
    request
}

/// Regression (issue 12): the line of a call refused for its caller's role
/// (`PERMISSION_DENIED`) or rate (`RESOURCE_EXHAUSTED`) said `caller="unauthenticated"`, though
/// the token had named the caller.
#[test]
fn refused_calls_of_an_authenticated_caller_name_it() {
    use sha2::Digest as _;
    let dir = tempfile::tempdir().expect("temporary directory");
    let token = "backend-token-0123456789abcdef0123456789";
    let config = dir.path().join("epass.toml");
    std::fs::write(
        &config,
        format!(
            "[[clients]]\nname = \"backend\"\nrole = \"issuer\"\ntoken_sha256 = \"{}\"\nrate_per_second = 1\n",
            hex::encode(sha2::Sha256::digest(token.as_bytes()))
        ),
    )
    .expect("write the configuration");
    let mut server = Server::start_with(&dir.path().join("data"), &["--config".as_ref(), config.as_os_str()]);
    server.address_logged("metrics at /metrics");
    let addr = server.address_logged("epass listening");

    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    runtime.block_on(async {
        let channel: Channel =
            Endpoint::from_shared(format!("http://{addr}")).expect("endpoint").connect().await.expect("connect");
        let verify = pb::VerifyPassRequest {
            qr_text: "EP1:AAAA".to_owned(),
            checkpoint_id: "SZX-AIR-01".to_owned(),
            mode: pb::TransportMode::Air as i32,
        };
        let status =
            CheckpointServiceClient::new(channel.clone()).verify_pass(bearer(verify, token)).await.unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
        // A bucket of 2 at 1 a second: one of these is refused unless each took a second.
        let mut issuance = IssuanceServiceClient::new(channel);
        let mut limited = false;
        for _ in 0..20 {
            let get = pb::GetPassRequest { pass_id: "0".repeat(32) };
            if let Err(status) = issuance.get_pass(bearer(get, token)).await {
                if status.code() == Code::ResourceExhausted {
                    limited = true;
                    break;
                }
            }
        }
        assert!(limited, "a burst beyond twice the rate is refused");
    });
    let lines = server.stop();
    let events: Vec<Value> = lines.iter().filter_map(|line| serde_json::from_str(line).ok()).collect();
    for code in ["PERMISSION_DENIED", "RESOURCE_EXHAUSTED"] {
        let rpc = events
            .iter()
            .find(|e| e["target"] == "epass::rpc" && e["code"] == code)
            .unwrap_or_else(|| panic!("no {code} line: {lines:#?}"));
        assert_eq!(rpc["caller"], "backend", "{rpc}");
    }
}
