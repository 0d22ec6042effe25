//! Harness of the tests that run real `epass serve` processes on one PostgreSQL database
//! (`replicas.rs`, `key_rotation.rs`, `replica_status.rs`): start a replica and wait until it
//! listens, stop it with SIGTERM, and call it with the local tokens of a data directory.

// Each test file uses a different part of the harness.
#![allow(dead_code)]

#[path = "../common/application.rs"]
mod application;

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use tonic::transport::Channel;
use tonic::Request;

use epass::access::{LocalTokens, Role};
use epass::clock::Clock as _;
use epass::grpc::pb;
use pb::checkpoint_service_client::CheckpointServiceClient;
use pb::issuance_service_client::IssuanceServiceClient;
use pb::key_service_client::KeyServiceClient;

/// The binary under test.
pub const EPASS: &str = env!("CARGO_BIN_EXE_epass");

/// Longest wait for a replica to listen or stop, and for any one call.
pub const WAIT: Duration = Duration::from_secs(20);

/// An `epass serve` process, killed when dropped.
pub struct Replica {
    /// The process.
    pub child: Child,
    /// `127.0.0.1:PORT`.
    pub address: String,
    /// Every line it logged so far.
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Replica {
    /// Stops the replica as an operator (or systemd) would, with SIGTERM: it reports
    /// `NOT_SERVING`, finishes its calls and exits 0.
    pub fn stop(mut self) {
        let status = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status().expect("run kill");
        assert!(status.success(), "kill -TERM failed");
        let deadline = std::time::Instant::now() + WAIT;
        let exit = loop {
            if let Some(exit) = self.child.try_wait().expect("poll the replica") {
                break exit;
            }
            assert!(std::time::Instant::now() < deadline, "the replica did not stop within {WAIT:?}");
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(exit.success(), "the replica exits 0 on SIGTERM:\n{}", self.log_text());
    }

    /// The log so far, one line each.
    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

/// Starts `epass serve` on a free loopback port with `data_dir` and the database; returns once
/// it listens. No inherited `EPASS_*` variable reaches it.
pub fn start_replica(data_dir: &Path, config: &Path, database_url: &str) -> Replica {
    let mut child = epass()
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .arg("--config")
        .arg(config)
        .env("EPASS_DATABASE_URL", database_url)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("start epass serve");
    let stderr = child.stderr.take().expect("stderr is piped");
    let log = Arc::new(Mutex::new(Vec::new()));
    let (lines_tx, lines_rx) = mpsc::channel();
    let keep = log.clone();
    // Drains the log for the life of the process, so it never blocks on a full pipe.
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            keep.lock().unwrap().push(line.clone());
            let _ = lines_tx.send(line);
        }
    });
    let deadline = std::time::Instant::now() + WAIT;
    let address = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match lines_rx.recv_timeout(left) {
            Ok(line) if line.contains("epass listening") => {
                let start = line.find("127.0.0.1:").expect("log names the address");
                break line[start..].split(|c: char| c.is_whitespace() || c == '"').next().expect("address").to_owned();
            }
            Ok(_) => {}
            Err(_) => {
                let _ = child.kill();
                panic!("epass serve did not listen within {WAIT:?}:\n{}", log.lock().unwrap().join("\n"));
            }
        }
    };
    Replica { child, address, log }
}

/// An `epass` command with no inherited `EPASS_*` variable.
pub fn epass() -> Command {
    let mut command = Command::new(EPASS);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("EPASS_") {
            command.env_remove(name);
        }
    }
    command.env("NO_COLOR", "1").env("RUST_LOG", "info");
    command
}

/// Runs an `epass` command that must succeed; returns its standard output.
pub fn run_epass(args: &[&std::ffi::OsStr]) -> String {
    let output = epass().args(args).output().expect("run epass");
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "epass {args:?} failed:\n{stdout}{stderr}");
    stdout.into_owned()
}

/// Clients of one replica, with the local tokens of a data directory.
#[derive(Clone)]
pub struct Client {
    /// IssuanceService.
    pub issuance: IssuanceServiceClient<Channel>,
    /// CheckpointService.
    pub checkpoint: CheckpointServiceClient<Channel>,
    /// KeyService (no credentials).
    pub keys: KeyServiceClient<Channel>,
    /// The channel, for health checks.
    pub channel: Channel,
    issuer: String,
    scanner: String,
    admin: String,
}

impl Client {
    /// Connects to a replica.
    pub async fn connect(address: &str, tokens: &LocalTokens) -> Self {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
            .expect("URL")
            .connect_timeout(WAIT)
            .timeout(WAIT)
            .connect()
            .await
            .expect("connect to replica");
        let bearer = |role| format!("Bearer {}", tokens.token(role).expect("local token"));
        Self {
            issuance: IssuanceServiceClient::new(channel.clone()),
            checkpoint: CheckpointServiceClient::new(channel.clone()),
            keys: KeyServiceClient::new(channel.clone()),
            channel,
            issuer: bearer(Role::Issuer),
            scanner: bearer(Role::Checkpoint),
            admin: bearer(Role::Admin),
        }
    }

    fn authorized<T>(message: T, token: &str) -> Request<T> {
        let mut request = Request::new(message);
        request.metadata_mut().insert("authorization", token.parse().expect("token is ASCII"));
        request.set_timeout(WAIT);
        request
    }

    /// IssuePass.
    pub async fn issue(&self, request: pb::IssuePassRequest) -> Result<pb::IssuePassResponse, tonic::Status> {
        let request = Self::authorized(request, &self.issuer);
        self.issuance.clone().issue_pass(request).await.map(tonic::Response::into_inner)
    }

    /// GetPass.
    pub async fn get(&self, pass_id: &str) -> Result<pb::Pass, tonic::Status> {
        let request = Self::authorized(pb::GetPassRequest { pass_id: pass_id.to_owned() }, &self.issuer);
        let response = self.issuance.clone().get_pass(request).await?.into_inner();
        Ok(response.pass.expect("GetPass returns the pass"))
    }

    /// RevokePass, as the admin.
    pub async fn revoke(&self, pass_id: &str) -> Result<pb::Pass, tonic::Status> {
        let message = pb::RevokePassRequest { pass_id: pass_id.to_owned(), reason: "test".to_owned() };
        let response = self.issuance.clone().revoke_pass(Self::authorized(message, &self.admin)).await?.into_inner();
        Ok(response.pass.expect("RevokePass returns the pass"))
    }

    /// VerifyPass at an airport gate.
    pub async fn verify(&self, qr_text: &str) -> Result<pb::VerifyPassResponse, tonic::Status> {
        let message = pb::VerifyPassRequest {
            qr_text: qr_text.to_owned(),
            checkpoint_id: "GATE-V".to_owned(),
            mode: pb::TransportMode::Air as i32,
        };
        let request = Self::authorized(message, &self.scanner);
        self.checkpoint.clone().verify_pass(request).await.map(tonic::Response::into_inner)
    }

    /// RecordEntry at an airport gate.
    pub async fn record(
        &self,
        qr_text: &str,
        checkpoint_id: &str,
        scan_id: &str,
    ) -> Result<pb::RecordEntryResponse, tonic::Status> {
        let message = pb::RecordEntryRequest {
            qr_text: qr_text.to_owned(),
            checkpoint_id: checkpoint_id.to_owned(),
            mode: pb::TransportMode::Air as i32,
            scan_id: scan_id.to_owned(),
        };
        let request = Self::authorized(message, &self.scanner);
        self.checkpoint.clone().record_entry(request).await.map(tonic::Response::into_inner)
    }

    /// GetTrustList.
    pub async fn trust_list(&self) -> pb::GetTrustListResponse {
        let mut request = Request::new(pb::GetTrustListRequest {});
        request.set_timeout(WAIT);
        self.keys.clone().get_trust_list(request).await.expect("GetTrustList").into_inner()
    }

    /// GetStatusList since a sequence (0: the full list).
    pub async fn status_list(&self, since_sequence: u64) -> pb::GetStatusListResponse {
        let mut request = Request::new(pb::GetStatusListRequest { since_sequence });
        request.set_timeout(WAIT);
        self.keys.clone().get_status_list(request).await.expect("GetStatusList").into_inner()
    }
}

/// A valid application for `permit`, sent now.
pub fn application(request_id: &str, permit: &str) -> pb::IssuePassRequest {
    application::valid_application(epass::clock::SystemClock.now(), request_id, permit, "+8613800138000")
}

/// Bounds a wait of the test itself.
pub async fn within<F: std::future::Future>(what: &str, future: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(60), future).await.unwrap_or_else(|_| panic!("{what}: timed out"))
}
