//! Access control, TLS and limits over a real socket: every RPC against every kind of
//! credential over TLS with mTLS, per-caller rate limits, the deadline cap, the request size
//! limit, and the shutdown sequence (health `NOT_SERVING`, streams ended, a bounded drain).

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use tonic_types::StatusExt as _;

use common::tls::{pki, Pki};
use common::{at, must_finish, pb, START};
use epass::access::{sha256, AccessControl, Role};
use epass::config::{ClientSettings, Limits};
use epass::server::ServeOptions;
use pb::checkpoint_service_client::CheckpointServiceClient;
use pb::issuance_service_client::IssuanceServiceClient;
use pb::key_service_client::KeyServiceClient;

const ISSUER_TOKEN: &str = "issuer-token-0123456789abcdef0123456789";
const CHECKPOINT_TOKEN: &str = "checkpoint-token-0123456789abcdef012345";
const ADMIN_TOKEN: &str = "admin-token-0123456789abcdef0123456789ab";
const UNKNOWN_TOKEN: &str = "unknown-token-0123456789abcdef0123456789";

/// A server started with given options on a fresh data directory.
struct Served {
    addr: SocketAddr,
    shutdown: oneshot::Sender<()>,
    task: JoinHandle<Result<(), epass::server::ServeError>>,
    _root: tempfile::TempDir,
}

async fn serve(options: ServeOptions) -> Served {
    let root = tempfile::tempdir().expect("temporary directory");
    let clock = Arc::new(epass::clock::ManualClock::new(at(START)));
    let (state, _) = epass::server::open_state(&root.path().join("data"), None, clock, Default::default())
        .await
        .expect("open state");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let (shutdown, stop) = oneshot::channel::<()>();
    let task = tokio::spawn(epass::server::run(listener, state, options, async move {
        let _ = stop.await;
    }));
    Served { addr, shutdown, task, _root: root }
}

fn client(name: &str, role: Role, token: Option<&str>, cert_der: Option<&[u8]>, rate: u32) -> ClientSettings {
    ClientSettings {
        name: name.to_owned(),
        role,
        token_sha256: token.map(|t| sha256(t.as_bytes())),
        cert_sha256: cert_der.map(sha256),
        rate_per_second: rate,
    }
}

/// The callers of the matrix: a token for each role, and the client certificate of `pki`
/// mapped to the checkpoint role.
fn matrix_access(pki: &Pki) -> AccessControl {
    AccessControl::new(
        &[
            client("backend", Role::Issuer, Some(ISSUER_TOKEN), None, 10_000),
            client("scanner", Role::Checkpoint, Some(CHECKPOINT_TOKEN), None, 10_000),
            client("ops", Role::Admin, Some(ADMIN_TOKEN), None, 10_000),
            client("gate-7", Role::Checkpoint, None, Some(&pki.client.der), 10_000),
        ],
        None,
        10_000,
    )
}

fn with_token<T>(message: T, token: Option<&str>) -> Request<T> {
    let mut request = Request::new(message);
    if let Some(token) = token {
        request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().expect("metadata"));
    }
    request
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rpc {
    IssuePass,
    GetPass,
    RevokePass,
    VerifyPass,
    RecordEntry,
    ListVerificationKeys,
    GetTrustList,
    GetStatusList,
    WatchStatusList,
    HealthCheck,
    HealthWatch,
    Reflection,
}

impl Rpc {
    const ALL: [Rpc; 12] = [
        Rpc::IssuePass,
        Rpc::GetPass,
        Rpc::RevokePass,
        Rpc::VerifyPass,
        Rpc::RecordEntry,
        Rpc::ListVerificationKeys,
        Rpc::GetTrustList,
        Rpc::GetStatusList,
        Rpc::WatchStatusList,
        Rpc::HealthCheck,
        Rpc::HealthWatch,
        Rpc::Reflection,
    ];

    /// Who may call it, written out here rather than read from the server's table.
    fn role(self) -> Option<Role> {
        match self {
            Rpc::IssuePass | Rpc::GetPass => Some(Role::Issuer),
            Rpc::RevokePass => Some(Role::Admin),
            Rpc::VerifyPass | Rpc::RecordEntry => Some(Role::Checkpoint),
            Rpc::ListVerificationKeys
            | Rpc::GetTrustList
            | Rpc::GetStatusList
            | Rpc::WatchStatusList
            | Rpc::HealthCheck
            | Rpc::HealthWatch
            | Rpc::Reflection => None,
        }
    }

    /// What the handler answers to the request [`call`] sends, once let through: an empty
    /// application is invalid, an unknown pass is not found, a garbage QR is a rejected pass.
    fn handler_code(self) -> Code {
        match self {
            Rpc::IssuePass => Code::InvalidArgument,
            Rpc::GetPass | Rpc::RevokePass => Code::NotFound,
            _ => Code::Ok,
        }
    }
}

/// Calls `rpc` on `channel` with `token`; the code of the answer (for streams, of the first
/// message).
async fn call(channel: &Channel, rpc: Rpc, token: Option<&str>, n: usize) -> Code {
    let unknown_pass = "0123456789abcdef0123456789abcdef".to_owned();
    let code = |result: Result<(), Status>| result.err().map_or(Code::Ok, |s| s.code());
    let mut issuance = IssuanceServiceClient::new(channel.clone());
    let mut checkpoint = CheckpointServiceClient::new(channel.clone());
    let mut keys = KeyServiceClient::new(channel.clone());
    let mut health = HealthClient::new(channel.clone());
    let garbage = || "EP1:AAAA".to_owned();
    let result: Result<(), Status> = match rpc {
        Rpc::IssuePass => issuance.issue_pass(with_token(pb::IssuePassRequest::default(), token)).await.map(drop),
        Rpc::GetPass => {
            issuance.get_pass(with_token(pb::GetPassRequest { pass_id: unknown_pass }, token)).await.map(drop)
        }
        Rpc::RevokePass => issuance
            .revoke_pass(with_token(pb::RevokePassRequest { pass_id: unknown_pass, reason: "test".into() }, token))
            .await
            .map(drop),
        Rpc::VerifyPass => checkpoint
            .verify_pass(with_token(
                pb::VerifyPassRequest {
                    qr_text: garbage(),
                    checkpoint_id: "SZX-AIR-01".into(),
                    mode: pb::TransportMode::Air as i32,
                },
                token,
            ))
            .await
            .map(drop),
        Rpc::RecordEntry => checkpoint
            .record_entry(with_token(
                pb::RecordEntryRequest {
                    qr_text: garbage(),
                    checkpoint_id: "SZX-AIR-01".into(),
                    mode: pb::TransportMode::Air as i32,
                    scan_id: format!("matrix-{n}"),
                },
                token,
            ))
            .await
            .map(drop),
        Rpc::ListVerificationKeys => {
            keys.list_verification_keys(with_token(pb::ListVerificationKeysRequest {}, token)).await.map(drop)
        }
        Rpc::GetTrustList => keys.get_trust_list(with_token(pb::GetTrustListRequest {}, token)).await.map(drop),
        Rpc::GetStatusList => {
            keys.get_status_list(with_token(pb::GetStatusListRequest::default(), token)).await.map(drop)
        }
        Rpc::WatchStatusList => {
            match keys.watch_status_list(with_token(pb::GetStatusListRequest::default(), token)).await {
                Ok(response) => response.into_inner().message().await.map(|m| assert!(m.is_some())),
                Err(status) => Err(status),
            }
        }
        Rpc::HealthCheck => health.check(with_token(HealthCheckRequest::default(), token)).await.map(drop),
        Rpc::HealthWatch => match health.watch(with_token(HealthCheckRequest::default(), token)).await {
            Ok(response) => response.into_inner().message().await.map(|m| assert!(m.is_some())),
            Err(status) => Err(status),
        },
        Rpc::Reflection => {
            use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
            use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
            use tonic_reflection::pb::v1::ServerReflectionRequest;
            let request = ServerReflectionRequest {
                host: String::new(),
                message_request: Some(MessageRequest::ListServices(String::new())),
            };
            let stream = tokio_stream::iter([request]);
            match ServerReflectionClient::new(channel.clone()).server_reflection_info(with_token(stream, token)).await {
                Ok(response) => response.into_inner().message().await.map(|m| assert!(m.is_some())),
                Err(status) => Err(status),
            }
        }
    };
    code(result)
}

#[derive(Debug, Clone, Copy)]
enum Credential {
    Nothing,
    Token(Role),
    /// The client certificate, mapped to the checkpoint role.
    Certificate,
    UnknownToken,
}

fn token_of(role: Role) -> &'static str {
    match role {
        Role::Issuer => ISSUER_TOKEN,
        Role::Checkpoint => CHECKPOINT_TOKEN,
        Role::Admin => ADMIN_TOKEN,
    }
}

fn expected(rpc: Rpc, credential: Credential) -> Code {
    let role = match credential {
        Credential::UnknownToken => return Code::Unauthenticated,
        Credential::Nothing => None,
        Credential::Token(role) => Some(role),
        Credential::Certificate => Some(Role::Checkpoint),
    };
    match (rpc.role(), role) {
        (None, _) => rpc.handler_code(),
        (Some(_), None) => Code::Unauthenticated,
        (Some(needed), Some(role)) if needed == role => rpc.handler_code(),
        (Some(_), Some(_)) => Code::PermissionDenied,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_against_every_credential_over_tls() {
    let pki = pki();
    let server = serve(ServeOptions {
        access: matrix_access(&pki),
        limits: Limits::default(),
        tls: Some(pki.server_settings()),
    })
    .await;
    let anonymous = pki.connect(server.addr, None).await;
    let with_cert = pki.connect(server.addr, Some(&pki.client)).await;
    let credentials = [
        Credential::Nothing,
        Credential::Token(Role::Issuer),
        Credential::Token(Role::Checkpoint),
        Credential::Token(Role::Admin),
        Credential::Certificate,
        Credential::UnknownToken,
    ];
    let mut failures = Vec::new();
    let mut n = 0;
    for rpc in Rpc::ALL {
        for credential in credentials {
            n += 1;
            let (channel, token) = match credential {
                Credential::Nothing => (&anonymous, None),
                Credential::Token(role) => (&anonymous, Some(token_of(role))),
                Credential::Certificate => (&with_cert, None),
                Credential::UnknownToken => (&anonymous, Some(UNKNOWN_TOKEN)),
            };
            let got = call(channel, rpc, token, n).await;
            let want = expected(rpc, credential);
            if got != want {
                failures.push(format!("{rpc:?} with {credential:?}: got {got:?}, expected {want:?}"));
            }
        }
    }
    assert!(failures.is_empty(), "{} cells wrong:\n{}", failures.len(), failures.join("\n"));
    assert_eq!(n, 72);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_say_why() {
    let pki = pki();
    let server = serve(ServeOptions {
        access: matrix_access(&pki),
        limits: Limits::default(),
        tls: Some(pki.server_settings()),
    })
    .await;
    let channel = pki.connect(server.addr, None).await;
    let mut issuance = IssuanceServiceClient::new(channel.clone());

    let status = issuance.issue_pass(pb::IssuePassRequest::default()).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(status.message().contains("needs credentials"), "{status:?}");

    let status = issuance.issue_pass(with_token(pb::IssuePassRequest::default(), Some(ADMIN_TOKEN))).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(status.message().contains("\"ops\" has the admin role"), "{status:?}");
    assert!(status.message().contains("needs the issuer role"), "{status:?}");

    let mut request = Request::new(pb::IssuePassRequest::default());
    request.metadata_mut().insert("authorization", format!("Basic {ISSUER_TOKEN}").parse().unwrap());
    let status = issuance.issue_pass(request).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(status.message().contains("Bearer <token>"), "{status:?}");

    // A token and a certificate of different callers.
    let with_cert = pki.connect(server.addr, Some(&pki.client)).await;
    let status = CheckpointServiceClient::new(with_cert)
        .verify_pass(with_token(pb::VerifyPassRequest::default(), Some(ISSUER_TOKEN)))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(status.message().contains("different callers"), "{status:?}");

    // A method the server does not have.
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    let status = grpc
        .unary::<_, pb::GetPassResponse, _>(
            with_token(pb::GetPassRequest::default(), Some(ADMIN_TOKEN)),
            http::uri::PathAndQuery::from_static("/epass.v1.IssuanceService/DeletePass"),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented, "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_from_another_ca_and_plaintext_are_refused_by_tls() {
    let pki = pki();
    let server = serve(ServeOptions {
        access: matrix_access(&pki),
        limits: Limits::default(),
        tls: Some(pki.server_settings()),
    })
    .await;
    // The handshake fails (or the first call on the broken connection does).
    let refused = match pki.endpoint(server.addr, Some(&pki.stranger)).connect().await {
        Err(_) => true,
        Ok(channel) => KeyServiceClient::new(channel).get_trust_list(pb::GetTrustListRequest {}).await.is_err(),
    };
    assert!(refused, "a certificate from an unknown CA is refused");

    let plaintext = tonic::transport::Endpoint::from_shared(format!("http://{}", server.addr)).unwrap();
    let refused = match plaintext.connect().await {
        Err(_) => true,
        Ok(channel) => KeyServiceClient::new(channel).get_trust_list(pb::GetTrustListRequest {}).await.is_err(),
    };
    assert!(refused, "plaintext is refused by a TLS server");
}

/// A plaintext server on loopback with the given callers and limits.
async fn serve_plain(clients: &[ClientSettings], limits: Limits) -> Served {
    serve(ServeOptions { access: AccessControl::new(clients, None, limits.rate_per_second), limits, tls: None }).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_from_one_caller_is_resource_exhausted_while_another_is_unaffected() {
    let server = serve_plain(
        &[
            client("busy", Role::Checkpoint, Some(CHECKPOINT_TOKEN), None, 1),
            client("quiet", Role::Checkpoint, Some(ADMIN_TOKEN), None, 1),
        ],
        Limits::default(),
    )
    .await;
    let channel = common::connect(server.addr).await;
    let verify = |token: &'static str| {
        let mut checkpoint = CheckpointServiceClient::new(channel.clone());
        async move {
            checkpoint
                .verify_pass(with_token(
                    pb::VerifyPassRequest {
                        qr_text: "EP1:AAAA".into(),
                        checkpoint_id: "SZX-AIR-01".into(),
                        mode: pb::TransportMode::Air as i32,
                    },
                    Some(token),
                ))
                .await
        }
    };
    // At 1 per second with a burst of 2: the first two pass, and one of the next ones is
    // refused unless each took a second.
    verify(CHECKPOINT_TOKEN).await.expect("first call of the burst");
    verify(CHECKPOINT_TOKEN).await.expect("second call of the burst");
    let mut refusal = None;
    for _ in 0..20 {
        if let Err(status) = verify(CHECKPOINT_TOKEN).await {
            refusal = Some(status);
            break;
        }
    }
    let status = refusal.expect("a burst beyond twice the rate is refused");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("\"busy\" is over its rate limit of 1 requests per second"), "{status:?}");
    let retry = status.get_details_retry_info().expect("RetryInfo");
    assert!(retry.retry_delay.is_some_and(|d| d <= Duration::from_secs(1)), "{retry:?}");
    verify(ADMIN_TOKEN).await.expect("another caller has its own bucket");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_that_outlives_the_deadline_cap_is_cut() {
    let limits = Limits { max_deadline: Duration::from_millis(300), ..Limits::default() };
    let server = serve_plain(&[], limits).await;
    let channel = common::connect(server.addr).await;
    // A unary call whose request body never ends: the handler waits for it forever, so only
    // the server's cap can end the call. The client sets no deadline of its own.
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.expect("ready");
    let never = futures_util::stream::pending::<pb::ListVerificationKeysRequest>();
    let status = must_finish(
        "call past the cap",
        grpc.client_streaming::<_, _, pb::ListVerificationKeysResponse, _>(
            Request::new(never),
            http::uri::PathAndQuery::from_static("/epass.v1.KeyService/ListVerificationKeys"),
            tonic_prost::ProstCodec::default(),
        ),
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::Cancelled, "{status:?}");
    assert_eq!(status.message(), "Timeout expired");

    // A call that finishes in time is not affected, and the connection is still good.
    KeyServiceClient::new(channel).get_trust_list(pb::GetTrustListRequest {}).await.expect("quick call");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_over_the_configured_size_are_out_of_range_and_say_the_limit() {
    let limits = Limits { max_request_bytes: 4096, ..Limits::default() };
    let server = serve_plain(&[client("scanner", Role::Checkpoint, Some(CHECKPOINT_TOKEN), None, 100)], limits).await;
    let channel = common::connect(server.addr).await;
    let verify = |qr_text: String| {
        let mut checkpoint = CheckpointServiceClient::new(channel.clone());
        async move {
            checkpoint
                .verify_pass(with_token(
                    pb::VerifyPassRequest {
                        qr_text,
                        checkpoint_id: "SZX-AIR-01".into(),
                        mode: pb::TransportMode::Air as i32,
                    },
                    Some(CHECKPOINT_TOKEN),
                ))
                .await
        }
    };
    let status = verify(format!("EP1:{}", "A".repeat(100 * 1024))).await.unwrap_err();
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    assert!(status.message().contains("the limit is: 4096 bytes"), "{status:?}");
    let status = verify(format!("EP1:{}", "A".repeat(5000))).await.unwrap_err();
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    // Under the limit the handler answers (a rejected pass, not an error).
    verify(format!("EP1:{}", "A".repeat(3000))).await.expect("under the limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_reports_not_serving_ends_streams_and_drains_within_the_grace() {
    let limits = Limits { shutdown_grace: Duration::from_secs(1), ..Limits::default() };
    let server = serve_plain(&[], limits).await;
    let channel = common::connect(server.addr).await;
    let mut health = HealthClient::new(channel.clone());
    let mut watch = health.watch(HealthCheckRequest::default()).await.expect("health watch").into_inner();
    let first = watch.message().await.expect("health update").expect("a first status");
    assert_eq!(first.status, ServingStatus::Serving as i32);
    let mut status_stream = KeyServiceClient::new(channel)
        .watch_status_list(pb::GetStatusListRequest::default())
        .await
        .expect("status list stream")
        .into_inner();
    status_stream.message().await.expect("status list").expect("a first status list");

    server.shutdown.send(()).expect("server running");
    // Draining: the health watch, a call in flight, sees NOT_SERVING; the status list stream
    // ends cleanly.
    let update = must_finish("health update", watch.message()).await.expect("health update").expect("a status");
    assert_eq!(update.status, ServingStatus::NotServing as i32);
    let end = must_finish("status list stream end", async {
        loop {
            match status_stream.message().await {
                Ok(Some(_)) => continue,
                other => break other,
            }
        }
    })
    .await;
    assert!(matches!(end, Ok(None)), "the stream ends without an error: {end:?}");
    // The health watch never ends by itself; the grace period bounds the drain.
    must_finish("bounded drain", server.task).await.expect("server task").expect("server ends without error");
    assert!(tonic::transport::Endpoint::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .connect()
        .await
        .is_err());
}
