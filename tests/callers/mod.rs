//! Harness for the tests of what depends on who calls (scoped idempotency keys, the audit
//! trail, health when the database cannot be written): the real server over a real socket,
//! with named callers that authenticate by bearer token, and clients that call as one of them.

// Each test file uses a different part of the harness.
#![allow(dead_code)]

#[path = "../common/application.rs"]
mod application;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sha2::{Digest as _, Sha256};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use epass::access::{AccessControl, Role};
use epass::clock::ManualClock;
use epass::config::{ClientSettings, Limits};
use epass_core::policy::IssuancePolicy;

pub use epass::grpc::pb;
use pb::checkpoint_service_client::CheckpointServiceClient;
use pb::issuance_service_client::IssuanceServiceClient;

/// Where the clock of a fresh server stands: 10:00 on 10 November 2026 in UTC+8.
pub const START: &str = "2026-11-10T02:00:00Z";
/// The default applicant's permit number.
pub const PERMIT: &str = "H12345678";
/// The default applicant's mobile number.
pub const MOBILE: &str = "+8613800138000";

/// The configured callers: two of each role but admin.
pub const CALLERS: [(&str, Role); 5] = [
    ("issuer-a", Role::Issuer),
    ("issuer-b", Role::Issuer),
    ("checkpoint-a", Role::Checkpoint),
    ("checkpoint-b", Role::Checkpoint),
    ("admin-a", Role::Admin),
];

/// A client that calls as a caller: adds its bearer token to every call.
pub type AsCaller = InterceptedService<Channel, Bearer>;

/// Adds `authorization: Bearer <token>`.
#[derive(Clone)]
pub struct Bearer(MetadataValue<Ascii>);

impl Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request.metadata_mut().insert("authorization", self.0.clone());
        Ok(request)
    }
}

/// The bearer token of a configured caller.
pub fn token(caller: &str) -> String {
    format!("token-of-{caller}")
}

/// A time from RFC 3339 text.
pub fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).expect("RFC 3339 time").with_timezone(&Utc)
}

/// A protobuf timestamp.
pub fn ts(time: DateTime<Utc>) -> prost_types::Timestamp {
    epass::grpc::timestamp_of(time)
}

/// Waits for a future that must finish, so that a hang fails the test instead of stalling the
/// suite. Not a timing assertion: the limit is far beyond any expected duration.
pub async fn must_finish<F: Future>(what: &str, future: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(60), future).await.unwrap_or_else(|_| panic!("{what} did not finish"))
}

/// A running server that knows [`CALLERS`].
pub struct Server {
    /// The address it listens on.
    pub addr: SocketAddr,
    /// The fixed clock it reads.
    pub clock: Arc<ManualClock>,
    /// The data directory.
    pub data_dir: PathBuf,
    /// The channel every client shares.
    pub channel: Channel,
    _root: tempfile::TempDir,
    shutdown: oneshot::Sender<()>,
    task: JoinHandle<Result<(), epass::server::ServeError>>,
}

/// Starts a server on a fresh data directory, its clock at [`START`].
pub async fn start() -> Server {
    start_with_wait(None).await
}

/// [`start`], its database waiting at most `wait` for a lock (the default when `None`).
pub async fn start_with_wait(wait: Option<Duration>) -> Server {
    let root = tempfile::tempdir().expect("temporary directory");
    let clock = Arc::new(ManualClock::new(at(START)));
    let data_dir = root.path().join("data");
    let (mut state, _created) =
        epass::server::open_state(&data_dir, None, clock.clone(), IssuancePolicy::default()).await.expect("open state");
    if let Some(wait) = wait {
        let database = data_dir.join(epass::datadir::DATABASE_FILE);
        let store = epass::store::SqliteStore::open_with(&database, wait).await.expect("open store");
        state.store = Arc::new(store);
    }
    let clients: Vec<ClientSettings> = CALLERS
        .iter()
        .map(|(name, role)| ClientSettings {
            name: (*name).to_owned(),
            role: *role,
            token_sha256: Some(Sha256::digest(token(name).as_bytes()).into()),
            cert_sha256: None,
            rate_per_second: 10_000,
        })
        .collect();
    let options = epass::server::ServeOptions {
        access: AccessControl::new(&clients, None, 10_000),
        limits: Limits::default(),
        tls: None,
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local address");
    let (shutdown, shutdown_rx) = oneshot::channel::<()>();
    let task = tokio::spawn(epass::server::run(listener, state, options, async move {
        let _ = shutdown_rx.await;
    }));
    let channel = connect(addr).await;
    Server { addr, clock, data_dir, channel, _root: root, shutdown, task }
}

/// Connects to the server, retrying briefly until it accepts.
pub async fn connect(addr: SocketAddr) -> Channel {
    let endpoint = Endpoint::from_shared(format!("http://{addr}")).expect("endpoint");
    let mut last_error = None;
    for _ in 0..100 {
        match endpoint.connect().await {
            Ok(channel) => return channel,
            Err(e) => last_error = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("server at {addr} never accepted: {last_error:?}");
}

impl Server {
    /// Stops the server, which must end without error. Returns its directory, for a look at
    /// the files it left.
    pub async fn stop(self) -> tempfile::TempDir {
        let Server { channel, shutdown, task, _root, .. } = self;
        drop(channel);
        shutdown.send(()).expect("server still running");
        must_finish("server shutdown", task).await.expect("server task panicked").expect("server ended with an error");
        _root
    }

    /// The database file.
    pub fn database(&self) -> PathBuf {
        self.data_dir.join(epass::datadir::DATABASE_FILE)
    }

    /// The clock's reading.
    pub fn now(&self) -> DateTime<Utc> {
        epass::clock::Clock::now(&*self.clock)
    }

    fn bearer(caller: &str) -> Bearer {
        Bearer(format!("Bearer {}", token(caller)).parse().expect("ASCII token"))
    }

    /// An `IssuanceService` client calling as `caller`.
    pub fn issuance(&self, caller: &str) -> IssuanceServiceClient<AsCaller> {
        IssuanceServiceClient::with_interceptor(self.channel.clone(), Self::bearer(caller))
    }

    /// An `IssuanceService` client calling as `caller` on a connection of its own.
    pub fn issuance_on(&self, channel: Channel, caller: &str) -> IssuanceServiceClient<AsCaller> {
        IssuanceServiceClient::with_interceptor(channel, Self::bearer(caller))
    }

    /// A `CheckpointService` client calling as `caller`.
    pub fn checkpoint(&self, caller: &str) -> CheckpointServiceClient<AsCaller> {
        CheckpointServiceClient::with_interceptor(self.channel.clone(), Self::bearer(caller))
    }

    /// A `CheckpointService` client calling as `caller` on a connection of its own.
    pub fn checkpoint_on(&self, channel: Channel, caller: &str) -> CheckpointServiceClient<AsCaller> {
        CheckpointServiceClient::with_interceptor(channel, Self::bearer(caller))
    }

    /// The health status of `service` ("" for the server as a whole).
    pub async fn health(&self, service: &str) -> ServingStatus {
        let response = HealthClient::new(self.channel.clone())
            .check(HealthCheckRequest { service: service.to_owned() })
            .await
            .expect("health check answers")
            .into_inner();
        ServingStatus::try_from(response.status).expect("known status")
    }

    /// Polls the health of `service` until it is `status`. Health changes as a background
    /// probe sees the database again, so the test waits for it rather than for a time.
    pub async fn wait_for_health(&self, service: &str, status: ServingStatus) {
        must_finish(&format!("health of {service:?} becoming {status:?}"), async {
            while self.health(service).await != status {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
    }

    /// A valid application for `permit` (name `CHAN TAI MAN`, permit lost, expiring years
    /// ahead, identity checked a minute ago, both modes, no image) with `request_id`.
    pub fn application(&self, request_id: &str, permit: &str) -> pb::IssuePassRequest {
        application::valid_application(self.now(), request_id, permit, MOBILE)
    }

    /// Issues an application as `caller`; the call must succeed.
    pub async fn issue(&self, caller: &str, request: pb::IssuePassRequest) -> pb::IssuePassResponse {
        self.issuance(caller).issue_pass(request).await.expect("IssuePass succeeds").into_inner()
    }

    /// Records an entry as `caller` at `checkpoint_id` by rail; the call must succeed.
    pub async fn record(
        &self,
        caller: &str,
        qr_text: &str,
        checkpoint_id: &str,
        scan_id: &str,
    ) -> pb::RecordEntryResponse {
        self.try_record(caller, qr_text, checkpoint_id, scan_id).await.expect("RecordEntry succeeds")
    }

    /// Calls `RecordEntry` as `caller` at `checkpoint_id` by rail.
    pub async fn try_record(
        &self,
        caller: &str,
        qr_text: &str,
        checkpoint_id: &str,
        scan_id: &str,
    ) -> Result<pb::RecordEntryResponse, Status> {
        self.checkpoint(caller)
            .record_entry(pb::RecordEntryRequest {
                qr_text: qr_text.to_owned(),
                checkpoint_id: checkpoint_id.to_owned(),
                mode: pb::TransportMode::Rail as i32,
                scan_id: scan_id.to_owned(),
            })
            .await
            .map(tonic::Response::into_inner)
    }

    /// Verifies as `caller` at `checkpoint_id` by air; the call must succeed.
    pub async fn verify(&self, caller: &str, qr_text: &str, checkpoint_id: &str) -> pb::VerifyPassResponse {
        self.checkpoint(caller)
            .verify_pass(pb::VerifyPassRequest {
                qr_text: qr_text.to_owned(),
                checkpoint_id: checkpoint_id.to_owned(),
                mode: pb::TransportMode::Air as i32,
            })
            .await
            .expect("VerifyPass succeeds")
            .into_inner()
    }
}
