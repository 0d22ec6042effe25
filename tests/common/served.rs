//! An `epass serve` process for the tests that run the binary and talk gRPC to it: started
//! from a command the test builds (so that it may run under a wrapper such as `unshare`), its
//! JSON log read on a thread, the addresses it logs, the local tokens of its data directory,
//! and calls made with them. Shared by `#[path]`; needs `command.rs` as the crate's `command`.

// Each test file uses a different part of the helper.
#![allow(dead_code)]

use std::future::Future;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// How long anything that must happen is given before the test fails: far beyond what it
/// needs, so that only a hang trips it. Not a timing assertion.
pub const MUST_HAPPEN: Duration = Duration::from_secs(60);

/// A server process, killed if the test fails before stopping it.
pub struct Served {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Served {
    /// Starts `command`, which must run `epass serve ... --log-format json` (itself or through
    /// a wrapper that execs it), logging at `info`.
    pub fn start(mut command: Command) -> Self {
        let mut child = command
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {command:?}: {e}"));
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

    /// The process id (of `epass serve` itself when a wrapper execs it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The `address` field of the first log line whose message is `message`, waiting for it.
    pub fn address_logged(&mut self, message: &str) -> SocketAddr {
        let deadline = Instant::now() + MUST_HAPPEN;
        let mut next = 0;
        loop {
            while let Some(line) = self.seen.get(next) {
                next += 1;
                let Ok(json) = serde_json::from_str::<Value>(line) else { continue };
                if json["message"] == message {
                    return json["address"].as_str().expect("address field").parse().expect("socket address");
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(_) => panic!("no {message:?} line; the log so far:\n{}", self.seen.join("\n")),
            }
        }
    }

    /// Every line logged so far.
    pub fn log(&mut self) -> Vec<String> {
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
        self.seen.clone()
    }

    /// Stops the server with SIGTERM; its exit status and every line it logged.
    pub fn stop(mut self) -> (ExitStatus, Vec<String>) {
        let status = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status().expect("run kill");
        assert!(status.success(), "kill -TERM failed");
        let deadline = Instant::now() + MUST_HAPPEN;
        let exit = loop {
            if let Some(exit) = self.child.try_wait().expect("wait for the server") {
                break exit;
            }
            assert!(Instant::now() < deadline, "the server did not stop");
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut lines = std::mem::take(&mut self.seen);
        // The pipe closes with the process: the reader thread ends and the channel drains.
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(10)) {
            lines.push(line);
        }
        (exit, lines)
    }
}

/// The bearer tokens a server with no configured callers writes to its data directory.
#[derive(Debug, Clone)]
pub struct Tokens {
    /// `local-issuer`.
    pub issuer: String,
    /// `local-checkpoint`.
    pub checkpoint: String,
    /// `local-admin`.
    pub admin: String,
}

impl Tokens {
    /// Reads `DATA_DIR/local-tokens.toml`.
    pub fn read(data_dir: &Path) -> Self {
        let tokens = epass::access::LocalTokens::read(data_dir).expect("local tokens written on first start");
        let token = |role| tokens.token(role).expect("a token for every role").to_owned();
        Self {
            issuer: token(epass::access::Role::Issuer),
            checkpoint: token(epass::access::Role::Checkpoint),
            admin: token(epass::access::Role::Admin),
        }
    }
}

/// `message` with `authorization: Bearer TOKEN`.
pub fn bearer<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().expect("header value"));
    request
}

/// A channel to the server at `addr`.
pub async fn connect(addr: SocketAddr) -> Channel {
    Endpoint::from_shared(format!("http://{addr}")).expect("endpoint").connect().await.expect("connect")
}

/// Waits for a future that must finish, so that a hang fails the test instead of stalling the
/// suite. Not a timing assertion: the limit is far beyond any expected duration.
pub async fn must_finish<F: Future>(what: &str, future: F) -> F::Output {
    tokio::time::timeout(MUST_HAPPEN, future).await.unwrap_or_else(|_| panic!("{what} did not finish"))
}

/// The health of `service` (`""`: the server).
pub async fn health(channel: &Channel, service: &str) -> ServingStatus {
    let request = HealthCheckRequest { service: service.to_owned() };
    let response = HealthClient::new(channel.clone()).check(request).await.expect("health check");
    ServingStatus::try_from(response.into_inner().status).expect("a known status")
}

/// Waits until the server reports `status`.
pub async fn wait_for_health(channel: &Channel, status: ServingStatus) {
    must_finish(&format!("health {status:?}"), async {
        while health(channel, "").await != status {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
}

/// `GET /metrics` over plain HTTP/1.1: the body.
pub fn scrape(addr: SocketAddr) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect to the metrics listener");
    write!(stream, "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").expect("send request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read response");
    let (head, body) = response.split_once("\r\n\r\n").expect("head and body");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_owned()
}

/// The value of a metric without labels in a scrape, 0 when absent.
pub fn metric(scrape: &str, name: &str) -> f64 {
    scrape
        .lines()
        .filter_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .map(|value| value.trim().parse().expect("a number"))
        .next()
        .unwrap_or(0.0)
}
