//! Test harness for the gRPC integration tests: starts the real server on a fresh data
//! directory over a real socket with a fixed clock, and builds requests and passes.

// Each test file uses a different part of the harness.
#![allow(dead_code)]

mod application;

pub mod command;
pub mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chrono::{DateTime, TimeDelta, Utc};
use ed25519_dalek::{Signer as _, SigningKey};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};
use tonic_types::StatusExt as _;

use epass::clock::ManualClock;
use epass_core::applicant::{HolderName, PermitNumber};
use epass_core::ids::{KeyId, PassId};
use epass_core::keys::PassSigner;
use epass_core::pass::{Modes, PassContents, SignedPass, QR_PREFIX, SIGNATURE_DOMAIN};
use epass_core::policy::IssuancePolicy;

pub use epass::grpc::pb;
use pb::checkpoint_service_client::CheckpointServiceClient;
use pb::issuance_service_client::IssuanceServiceClient;
use pb::key_service_client::KeyServiceClient;

/// Where the clock of a fresh server stands: 10:00 on 10 November 2026 in UTC+8.
pub const START: &str = "2026-11-10T02:00:00Z";
/// The default applicant's permit number.
pub const PERMIT: &str = "H12345678";
/// A second person.
pub const OTHER_PERMIT: &str = "M87654321";
/// The secret of the signing key written for servers started with [`start_with_key`].
pub const SERVER_KEY_SECRET: [u8; 32] = [0x5e; 32];
/// A key the server never trusts.
pub const FOREIGN_KEY_SECRET: [u8; 32] = [0x77; 32];

/// A time from RFC 3339 text.
pub fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).expect("RFC 3339 time").with_timezone(&Utc)
}

/// A protobuf timestamp.
pub fn ts(time: DateTime<Utc>) -> prost_types::Timestamp {
    epass::grpc::timestamp_of(time)
}

/// A time from a protobuf timestamp that must be set.
pub fn time_of(ts: &Option<prost_types::Timestamp>) -> DateTime<Utc> {
    let ts = ts.as_ref().expect("timestamp is set");
    DateTime::from_timestamp(ts.seconds, u32::try_from(ts.nanos).expect("nanos")).expect("timestamp in range")
}

/// A running server with its clients.
pub struct TestServer {
    /// The address it listens on.
    pub addr: SocketAddr,
    /// The fixed clock it reads.
    pub clock: Arc<ManualClock>,
    /// The data directory.
    pub data_dir: PathBuf,
    /// The signing key file given to `open_state`, if any.
    pub key_path: Option<PathBuf>,
    /// IssuanceService client.
    pub issuance: IssuanceServiceClient<Channel>,
    /// CheckpointService client.
    pub checkpoint: CheckpointServiceClient<Channel>,
    /// KeyService client.
    pub keys: KeyServiceClient<Channel>,
    /// The channel, for health and reflection clients.
    pub channel: Channel,
    root: Arc<tempfile::TempDir>,
    shutdown: oneshot::Sender<()>,
    task: JoinHandle<Result<(), epass::server::ServeError>>,
    next_id: Arc<AtomicU64>,
}

/// Starts a server on a fresh data directory, its key generated on first start, the clock at
/// [`START`].
pub async fn start() -> TestServer {
    let root = Arc::new(tempfile::tempdir().expect("temporary directory"));
    let clock = Arc::new(ManualClock::new(at(START)));
    let data_dir = root.path().join("data");
    launch(root, data_dir, None, clock, Arc::new(AtomicU64::new(1))).await
}

/// Starts a server whose signing key is [`SERVER_KEY_SECRET`], given as a key file, so that a
/// test can sign arbitrary envelopes with the server's own key.
pub async fn start_with_key() -> TestServer {
    let root = Arc::new(tempfile::tempdir().expect("temporary directory"));
    let key_path = root.path().join("server-key.pem");
    epass::datadir::write_signing_key(&key_path, &server_signing_key()).expect("write key");
    let clock = Arc::new(ManualClock::new(at(START)));
    let data_dir = root.path().join("data");
    launch(root, data_dir, Some(key_path), clock, Arc::new(AtomicU64::new(1))).await
}

/// The server's signing key for [`start_with_key`].
pub fn server_signing_key() -> SigningKey {
    SigningKey::from_bytes(&SERVER_KEY_SECRET)
}

async fn launch(
    root: Arc<tempfile::TempDir>,
    data_dir: PathBuf,
    key_path: Option<PathBuf>,
    clock: Arc<ManualClock>,
    next_id: Arc<AtomicU64>,
) -> TestServer {
    let (state, _created) =
        epass::server::open_state(&data_dir, key_path.as_deref(), clock.clone(), IssuancePolicy::default())
            .await
            .expect("open state");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local address");
    let (shutdown, shutdown_rx) = oneshot::channel::<()>();
    let task = tokio::spawn(epass::server::run(listener, state, open_options(), async move {
        let _ = shutdown_rx.await;
    }));
    let channel = connect(addr).await;
    TestServer {
        addr,
        clock,
        data_dir,
        key_path,
        issuance: IssuanceServiceClient::new(channel.clone()),
        checkpoint: CheckpointServiceClient::new(channel.clone()),
        keys: KeyServiceClient::new(channel.clone()),
        channel,
        root,
        shutdown,
        task,
        next_id,
    }
}

/// Options for the business-logic tests: every call passes (as the caller `open`), default
/// limits, plaintext. Access control, limits and TLS have their own tests.
pub fn open_options() -> epass::server::ServeOptions {
    epass::server::ServeOptions {
        access: epass::access::AccessControl::dangerous_open(),
        limits: epass::config::Limits::default(),
        tls: None,
    }
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

/// Waits for a future that must finish, so that a hang fails the test instead of stalling the
/// suite. Not a timing assertion: the limit is far beyond any expected duration.
pub async fn must_finish<F: Future>(what: &str, future: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(60), future).await.unwrap_or_else(|_| panic!("{what} did not finish"))
}

impl TestServer {
    /// Stops the server: completes the shutdown future and waits for the server task, which
    /// must end without error. Returns what a restart needs.
    pub async fn stop(self) -> Stopped {
        let TestServer {
            addr: _,
            clock,
            data_dir,
            key_path,
            issuance,
            checkpoint,
            keys,
            channel,
            root,
            shutdown,
            task,
            next_id,
        } = self;
        // The server lets open connections finish: the clients go first.
        drop((issuance, checkpoint, keys, channel));
        shutdown.send(()).expect("server still running");
        must_finish("server shutdown", task).await.expect("server task panicked").expect("server ended with an error");
        Stopped { root, data_dir, key_path, clock, next_id }
    }

    /// Starts a second server on the same data directory, database and clock, as another
    /// process (or replica) sharing the database would be.
    pub async fn start_beside(&self) -> TestServer {
        launch(
            self.root.clone(),
            self.data_dir.clone(),
            self.key_path.clone(),
            self.clock.clone(),
            self.next_id.clone(),
        )
        .await
    }

    /// Stops the server and starts a new one on the same data directory and clock.
    pub async fn restart(self) -> TestServer {
        self.stop().await.start_again().await
    }

    /// The clock's reading.
    pub fn now(&self) -> DateTime<Utc> {
        epass::clock::Clock::now(&*self.clock)
    }

    /// A fresh request id.
    pub fn request_id(&self) -> String {
        format!("req-{}", self.next_id.fetch_add(1, Ordering::Relaxed))
    }

    /// A fresh scan id.
    pub fn scan_id(&self) -> String {
        format!("scan-{}", self.next_id.fetch_add(1, Ordering::Relaxed))
    }

    /// A valid application from the default applicant ([`PERMIT`], `CHAN TAI MAN`, `陳大文`,
    /// permit lost, expiring years ahead), identity checked one minute before the clock's
    /// reading, both modes, no image.
    pub fn application(&self) -> pb::IssuePassRequest {
        application::valid_application(self.now(), &self.request_id(), PERMIT, "+8613800138000")
    }

    /// [`TestServer::application`] for another permit number.
    pub fn application_for(&self, permit: &str) -> pb::IssuePassRequest {
        let mut request = self.application();
        applicant(&mut request).permit_number = permit.to_owned();
        request
    }

    /// Calls `IssuePass`.
    pub async fn try_issue(&self, request: pb::IssuePassRequest) -> Result<pb::IssuePassResponse, Status> {
        self.issuance.clone().issue_pass(request).await.map(tonic::Response::into_inner)
    }

    /// Calls `IssuePass`, which must succeed.
    pub async fn issue(&self, request: pb::IssuePassRequest) -> pb::IssuePassResponse {
        self.try_issue(request).await.expect("IssuePass succeeds")
    }

    /// Issues the default application.
    pub async fn issue_default(&self) -> pb::IssuePassResponse {
        self.issue(self.application()).await
    }

    /// Calls `GetPass`.
    pub async fn try_get(&self, pass_id: &str) -> Result<pb::Pass, Status> {
        let response = self.issuance.clone().get_pass(pb::GetPassRequest { pass_id: pass_id.to_owned() }).await?;
        Ok(response.into_inner().pass.expect("GetPass returns the pass"))
    }

    /// Calls `GetPass`, which must succeed.
    pub async fn get(&self, pass_id: &str) -> pb::Pass {
        self.try_get(pass_id).await.expect("GetPass succeeds")
    }

    /// Calls `RevokePass`, which must succeed.
    pub async fn revoke(&self, pass_id: &str, reason: &str) -> pb::Pass {
        self.issuance
            .clone()
            .revoke_pass(pb::RevokePassRequest { pass_id: pass_id.to_owned(), reason: reason.to_owned() })
            .await
            .expect("RevokePass succeeds")
            .into_inner()
            .pass
            .expect("RevokePass returns the pass")
    }

    /// Calls `VerifyPass`.
    pub async fn try_verify(&self, request: pb::VerifyPassRequest) -> Result<pb::VerifyPassResponse, Status> {
        self.checkpoint.clone().verify_pass(request).await.map(tonic::Response::into_inner)
    }

    /// Verifies a QR text at checkpoint `SZX-AIR-01` with `mode`; the call must succeed.
    pub async fn verify(&self, qr_text: &str, mode: pb::TransportMode) -> pb::VerifyPassResponse {
        self.try_verify(pb::VerifyPassRequest {
            qr_text: qr_text.to_owned(),
            checkpoint_id: "SZX-AIR-01".to_owned(),
            mode: mode as i32,
        })
        .await
        .expect("VerifyPass succeeds")
    }

    /// Calls `RecordEntry`.
    pub async fn try_record(&self, request: pb::RecordEntryRequest) -> Result<pb::RecordEntryResponse, Status> {
        self.checkpoint.clone().record_entry(request).await.map(tonic::Response::into_inner)
    }

    /// Records an entry at `checkpoint_id` with `mode` and `scan_id`; the call must succeed.
    pub async fn record(
        &self,
        qr_text: &str,
        checkpoint_id: &str,
        mode: pb::TransportMode,
        scan_id: &str,
    ) -> pb::RecordEntryResponse {
        self.try_record(pb::RecordEntryRequest {
            qr_text: qr_text.to_owned(),
            checkpoint_id: checkpoint_id.to_owned(),
            mode: mode as i32,
            scan_id: scan_id.to_owned(),
        })
        .await
        .expect("RecordEntry succeeds")
    }

    /// The server's verification keys.
    pub async fn verification_keys(&self) -> Vec<pb::VerificationKey> {
        self.keys
            .clone()
            .list_verification_keys(pb::ListVerificationKeysRequest {})
            .await
            .expect("ListVerificationKeys succeeds")
            .into_inner()
            .keys
    }

    /// Checks that the default applicant's whole monthly quota (2 passes) is still available:
    /// two applications succeed and a third is refused. Uses the quota up.
    pub async fn assert_full_quota_available(&self) {
        self.assert_quota_left(PERMIT, 2).await;
    }

    /// Checks that exactly `left` applications for `permit` succeed now and the next one is
    /// refused with `RESOURCE_EXHAUSTED`. Uses the quota up.
    pub async fn assert_quota_left(&self, permit: &str, left: usize) {
        for i in 0..left {
            if let Err(status) = self.try_issue(self.application_for(permit)).await {
                panic!("application {} of {left} refused: {status:?}", i + 1);
            }
        }
        let status =
            self.try_issue(self.application_for(permit)).await.expect_err("application beyond the quota is refused");
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    }
}

/// What remains of a stopped server: enough to start another on the same directory.
pub struct Stopped {
    root: Arc<tempfile::TempDir>,
    data_dir: PathBuf,
    key_path: Option<PathBuf>,
    /// The clock, shared with the next server.
    pub clock: Arc<ManualClock>,
    next_id: Arc<AtomicU64>,
}

impl Stopped {
    /// The data directory.
    pub fn data_dir(&self) -> &std::path::Path {
        &self.data_dir
    }

    /// Starts a server on the same data directory and clock, signing with the key file at
    /// `key_path`.
    pub async fn start_again_with_key(mut self, key_path: PathBuf) -> TestServer {
        self.key_path = Some(key_path);
        self.start_again().await
    }

    /// Starts a server on the same data directory, key file and clock.
    pub async fn start_again(self) -> TestServer {
        launch(self.root, self.data_dir, self.key_path, self.clock, self.next_id).await
    }
}

/// The applicant of a request.
pub fn applicant(request: &mut pb::IssuePassRequest) -> &mut pb::Applicant {
    request.applicant.as_mut().expect("applicant is set")
}

/// The identity check of a request.
pub fn identity_check(request: &mut pb::IssuePassRequest) -> &mut pb::IdentityCheck {
    request.identity_check.as_mut().expect("identity check is set")
}

/// The envelope bytes of a QR text.
pub fn envelope(qr_text: &str) -> Vec<u8> {
    let body = qr_text.strip_prefix(QR_PREFIX).expect("QR prefix");
    URL_SAFE_NO_PAD.decode(body).expect("base64url")
}

/// The QR text of envelope bytes.
pub fn qr_text(envelope: &[u8]) -> String {
    format!("{QR_PREFIX}{}", URL_SAFE_NO_PAD.encode(envelope))
}

/// Builds and signs an envelope by hand: version, key id, the given payload bytes, and an
/// Ed25519 signature over the domain and those bytes.
pub fn sign_envelope(key: &SigningKey, version: u8, payload: &[u8]) -> String {
    let key_id = KeyId::of_public_key(key.verifying_key().as_bytes());
    let mut envelope = vec![version];
    envelope.extend_from_slice(key_id.as_bytes());
    envelope.extend_from_slice(payload);
    let mut message = SIGNATURE_DOMAIN.to_vec();
    message.extend_from_slice(&envelope);
    envelope.extend_from_slice(&key.sign(&message).to_bytes());
    qr_text(&envelope)
}

/// Contents of a pass for the default applicant, valid for 7 days from `issued_at`, that the
/// server never issued.
pub fn contents(issued_at: DateTime<Utc>) -> PassContents {
    PassContents {
        pass_id: PassId::from_bytes([0xc3; 16]),
        holder: HolderName::parse("CHAN TAI MAN", "陳大文").expect("name"),
        permit: PermitNumber::parse(PERMIT).expect("permit number"),
        issued_at,
        valid_from: issued_at,
        valid_until: issued_at + TimeDelta::days(7),
        modes: Modes::AIR_AND_RAIL,
        entries_allowed: 1,
    }
}

/// Signs contents with the core API.
pub fn sign(contents: PassContents, key: &SigningKey) -> String {
    SignedPass::sign(contents, &PassSigner::from_signing_key(key.clone())).qr_text()
}

/// Asserts an `INVALID_ARGUMENT` whose `BadRequest` details name `field`.
pub fn assert_bad_field(status: &Status, field: &str) {
    assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status:?}");
    let fields = bad_fields(status);
    assert!(fields.iter().any(|f| f == field), "expected a violation of {field}, got {fields:?} ({status:?})");
    assert!(status.message().contains(field), "message names {field}: {}", status.message());
}

/// The fields named by the `BadRequest` details of a status.
pub fn bad_fields(status: &Status) -> Vec<String> {
    status
        .get_details_bad_request()
        .expect("BadRequest details")
        .field_violations
        .into_iter()
        .map(|v| v.field)
        .collect()
}

/// Replaces the trust list in a (stopped) server's data directory with `list`, signed by the
/// directory's root key.
pub fn write_trust_list(data_dir: &std::path::Path, list: &epass_core::trust::TrustList) {
    let root = epass::datadir::read_signing_key(&data_dir.join(epass::datadir::ROOT_KEY_FILE)).expect("root key");
    std::fs::write(data_dir.join(epass::datadir::TRUST_LIST_FILE), list.sign(&root)).expect("write trust list");
}
