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
        // Public methods ignore credentials that name nobody (issue 12): a checkpoint whose
        // token was rotated still gets its keys and lists.
        Credential::UnknownToken if rpc.role().is_none() => return rpc.handler_code(),
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

/// The messages of an error and of its sources, joined.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut chain = vec![error.to_string()];
    let mut source = error.source();
    while let Some(cause) = source {
        chain.push(cause.to_string());
        source = cause.source();
    }
    chain.join(": ")
}

/// Connects through `endpoint` and calls `GetTrustList` (a method that needs no credentials, so
/// only the transport can refuse it): the error, if the connection or the call failed.
async fn trust_list_through(endpoint: tonic::transport::Endpoint) -> Option<String> {
    match must_finish("connect", endpoint.connect()).await {
        Err(error) => Some(format!("connect: {}", error_chain(&error))),
        Ok(channel) => {
            must_finish("GetTrustList", KeyServiceClient::new(channel).get_trust_list(pb::GetTrustListRequest {}))
                .await
                .err()
                .map(|status| format!("call: {status:?}: {}", error_chain(&status)))
        }
    }
}

/// The HTTP/2 client preface.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A TLS handshake by hand as a client presenting `identity`, then the HTTP/2 preface, then a
/// read: what the server answered. In TLS 1.3 the server judges the client certificate after the
/// client has finished its handshake, so its verdict comes with the first read; an HTTP/2
/// client writes first and sees only a broken pipe.
async fn first_answer_over_tls(pki: &Pki, addr: SocketAddr, identity: &common::tls::Pem) -> Result<Vec<u8>, String> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject as _;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(pki.server_ca.der.clone())).expect("server CA");
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_client_auth_cert(
            vec![CertificateDer::from(identity.der.clone())],
            PrivateKeyDer::from_pem_slice(identity.key.as_bytes()).expect("client key"),
        )
        .expect("client certificate");
    let tcp = must_finish("TCP connect", tokio::net::TcpStream::connect(addr)).await.expect("TCP connect");
    let server_name = ServerName::try_from("localhost").expect("server name");
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let mut tls = must_finish("TLS handshake", connector.connect(server_name, tcp))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tls.write_all(PREFACE).await.map_err(|e| format!("write: {e}"))?;
    tls.flush().await.map_err(|e| format!("flush: {e}"))?;
    let mut answer = vec![0u8; 9];
    match must_finish("the server's answer", tls.read(&mut answer)).await {
        Ok(0) => Err("closed without a word".to_owned()),
        Ok(n) => Ok(answer[..n].to_vec()),
        Err(e) => Err(format!("read: {e}")),
    }
}

/// The first bytes a server sends back to a plaintext HTTP/2 preface (an empty vector if it
/// closes the connection without a word).
async fn first_answer_in_plaintext(addr: SocketAddr) -> Vec<u8> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut tcp = must_finish("TCP connect", tokio::net::TcpStream::connect(addr)).await.expect("TCP connect");
    tcp.write_all(PREFACE).await.expect("write the preface");
    let mut answer = vec![0u8; 9];
    let n = must_finish("the server's answer", tcp.read(&mut answer)).await.unwrap_or(0);
    answer.truncate(n);
    answer
}

/// An HTTP/2 frame header of a SETTINGS frame: what a server speaking HTTP/2 sends first.
fn is_settings_frame(bytes: &[u8]) -> bool {
    bytes.len() == 9 && bytes[3] == 0x4
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
    // The controls: with the client certificate of the CA the server trusts, or with none (a
    // client certificate is optional; credentials are the access layer's business), the same
    // call over the same kind of connection succeeds.
    for (what, identity) in [("the trusted client certificate", Some(&pki.client)), ("no client certificate", None)] {
        let refused = trust_list_through(pki.endpoint(server.addr, identity)).await;
        assert_eq!(refused, None, "{what}: the call succeeds");
    }

    // A certificate from an unknown CA: the call fails, and the cause is the server's TLS alert
    // naming the certificate's CA (seen by hand; the HTTP/2 client sees a broken pipe), where
    // the trusted certificate gets the server's HTTP/2 SETTINGS.
    let refused = trust_list_through(pki.endpoint(server.addr, Some(&pki.stranger))).await;
    assert!(refused.is_some(), "a certificate from an unknown CA is refused");
    let trusted = first_answer_over_tls(&pki, server.addr, &pki.client).await;
    assert!(trusted.as_deref().is_ok_and(is_settings_frame), "the trusted certificate gets HTTP/2: {trusted:?}");
    let alert = first_answer_over_tls(&pki, server.addr, &pki.stranger).await;
    let alert = alert.expect_err("a certificate from an unknown CA gets no HTTP/2");
    assert!(alert.contains("received fatal alert: UnknownCA"), "refused by TLS for its CA: {alert}");

    // Plaintext HTTP/2 to the TLS port: the call fails, and the server answers the preface as
    // TLS does, with an alert record (content type 21), where a plaintext server sends its
    // SETTINGS.
    let plaintext = tonic::transport::Endpoint::from_shared(format!("http://{}", server.addr)).unwrap();
    assert!(trust_list_through(plaintext).await.is_some(), "plaintext is refused by a TLS server");
    let answer = first_answer_in_plaintext(server.addr).await;
    assert_eq!(answer.first(), Some(&21), "a TLS alert record: {answer:02x?}");
    let plain_server = serve_plain(&[], Limits::default()).await;
    let control = first_answer_in_plaintext(plain_server.addr).await;
    assert!(is_settings_frame(&control), "a plaintext server answers in HTTP/2: {control:02x?}");
    let plaintext_control = tonic::transport::Endpoint::from_shared(format!("http://{}", plain_server.addr)).unwrap();
    assert_eq!(trust_list_through(plaintext_control).await, None, "plaintext to a plaintext server succeeds");
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
    // The cap is what the call that follows must finish within: a few seconds, so that a loaded
    // machine does not cut it too. The stuck call waits that long, no more.
    let limits = Limits { max_deadline: Duration::from_secs(5), ..Limits::default() };
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
    // The health watch and the status list stream must end cleanly within the grace, on a
    // machine that may be loaded: 10 s. The stuck call holds the server for all of it.
    let limits = Limits { shutdown_grace: Duration::from_secs(10), ..Limits::default() };
    let server = serve_plain(&[], limits).await;
    let channel = common::connect(server.addr).await;
    let mut health = HealthClient::new(channel.clone());
    let mut watch = health.watch(HealthCheckRequest::default()).await.expect("health watch").into_inner();
    let first = watch.message().await.expect("health update").expect("a first status");
    assert_eq!(first.status, ServingStatus::Serving as i32);
    let mut status_stream = KeyServiceClient::new(channel.clone())
        .watch_status_list(pb::GetStatusListRequest::default())
        .await
        .expect("status list stream")
        .into_inner();
    status_stream.message().await.expect("status list").expect("a first status list");
    // A call whose request never ends: only the grace period can end it.
    let stuck = tokio::spawn(async move {
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await.expect("ready");
        let never = futures_util::stream::pending::<pb::ListVerificationKeysRequest>();
        grpc.client_streaming::<_, _, pb::ListVerificationKeysResponse, _>(
            Request::new(never),
            http::uri::PathAndQuery::from_static("/epass.v1.KeyService/ListVerificationKeys"),
            tonic_prost::ProstCodec::default(),
        )
        .await
    });

    // Time for the stuck call to reach the server (were it late, the test would check less,
    // not fail).
    tokio::time::sleep(Duration::from_millis(200)).await;
    server.shutdown.send(()).expect("server running");
    // Draining: the health watch sees NOT_SERVING, then ends; the status list stream ends
    // cleanly.
    let update = must_finish("health update", watch.message()).await.expect("health update").expect("a status");
    assert_eq!(update.status, ServingStatus::NotServing as i32);
    let end = must_finish("health watch end", watch.message()).await;
    assert!(matches!(end, Ok(None)), "the health watch ends without an error: {end:?}");
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
    // The stuck call never ends by itself; the grace period bounds the drain.
    must_finish("bounded drain", server.task).await.expect("server task").expect("server ends without error");
    stuck.abort();
    assert!(tonic::transport::Endpoint::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .connect()
        .await
        .is_err());
}

/// Regression (issue 12): an open health `Watch` held every shutdown for the whole grace period
/// (20 s by default, then "calls cut"). With a grace far beyond `must_finish`'s limit, the
/// server must end because the watch ended, not because the grace ran out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_health_watch_ends_at_shutdown_and_does_not_hold_the_server() {
    let limits = Limits { shutdown_grace: Duration::from_secs(3600), ..Limits::default() };
    let server = serve_plain(&[], limits).await;
    let channel = common::connect(server.addr).await;
    let mut watches = Vec::new();
    for service in ["", "epass.v1.IssuanceService", "epass.v1.KeyService"] {
        let mut health = HealthClient::new(channel.clone());
        let request = HealthCheckRequest { service: service.to_owned() };
        let mut watch = health.watch(request).await.expect("health watch").into_inner();
        let first = watch.message().await.expect("health update").expect("a first status");
        assert_eq!(first.status, ServingStatus::Serving as i32, "{service:?}");
        watches.push((service, watch));
    }

    server.shutdown.send(()).expect("server running");
    for (service, mut watch) in watches {
        let mut last = None;
        let end = must_finish("health watch end", async {
            loop {
                match watch.message().await {
                    Ok(Some(update)) => last = Some(update.status),
                    other => break other,
                }
            }
        })
        .await;
        assert!(matches!(end, Ok(None)), "{service:?}: the watch ends without an error: {end:?}");
        assert_eq!(last, Some(ServingStatus::NotServing as i32), "{service:?}: NOT_SERVING is sent before the end");
    }
    must_finish("shutdown with health watches open", server.task)
        .await
        .expect("server task")
        .expect("server ends without error");
}

/// Regression (issue 12): with two `authorization` values the first one won silently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_authorization_values_are_unauthenticated() {
    let server = serve_plain(
        &[
            client("backend", Role::Issuer, Some(ISSUER_TOKEN), None, 10_000),
            client("ops", Role::Admin, Some(ADMIN_TOKEN), None, 10_000),
        ],
        Limits::default(),
    )
    .await;
    let channel = common::connect(server.addr).await;
    for second in [ISSUER_TOKEN, ADMIN_TOKEN, UNKNOWN_TOKEN] {
        let mut request = with_token(pb::GetPassRequest { pass_id: "0".repeat(32) }, Some(ISSUER_TOKEN));
        request.metadata_mut().append("authorization", format!("Bearer {second}").parse().expect("metadata"));
        let status = IssuanceServiceClient::new(channel.clone()).get_pass(request).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
        assert!(status.message().contains("sent 2 times"), "{status:?}");
    }
    // One value is fine.
    let request = with_token(pb::GetPassRequest { pass_id: "0".repeat(32) }, Some(ISSUER_TOKEN));
    let status = IssuanceServiceClient::new(channel).get_pass(request).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
}

/// Regression (issue 12): public methods refused an unknown token, so a checkpoint whose token
/// was rotated could not fetch the lists it verifies offline with. They ignore credentials
/// that name nobody now, and count them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_methods_ignore_credentials_that_name_nobody_and_count_them() {
    let metrics = epass::telemetry::Metrics::install().expect("metrics recorder");
    let metrics_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind metrics");
    let metrics_addr = metrics_listener.local_addr().expect("metrics address");
    tokio::spawn(metrics.serve(metrics_listener, std::future::pending()));
    let server =
        serve_plain(&[client("scanner", Role::Checkpoint, Some(CHECKPOINT_TOKEN), None, 10_000)], Limits::default())
            .await;
    let channel = common::connect(server.addr).await;
    let mut keys = KeyServiceClient::new(channel.clone());
    keys.list_verification_keys(with_token(pb::ListVerificationKeysRequest {}, Some(UNKNOWN_TOKEN)))
        .await
        .expect("keys");
    keys.get_trust_list(with_token(pb::GetTrustListRequest {}, Some(UNKNOWN_TOKEN))).await.expect("trust list");
    keys.get_status_list(with_token(pb::GetStatusListRequest::default(), Some(UNKNOWN_TOKEN)))
        .await
        .expect("status list");
    let mut watch = keys
        .watch_status_list(with_token(pb::GetStatusListRequest::default(), Some(UNKNOWN_TOKEN)))
        .await
        .expect("watch");
    watch.get_mut().message().await.expect("status list stream").expect("a first status list");
    HealthClient::new(channel.clone())
        .check(with_token(HealthCheckRequest::default(), Some(UNKNOWN_TOKEN)))
        .await
        .expect("health");
    // Malformed, and twice: ignored too.
    let mut request = Request::new(pb::GetTrustListRequest {});
    request.metadata_mut().insert("authorization", "Basic c2Nhbm5lcg==".parse().expect("metadata"));
    keys.get_trust_list(request).await.expect("malformed credentials are ignored");
    let mut request = with_token(pb::GetTrustListRequest {}, Some(CHECKPOINT_TOKEN));
    request.metadata_mut().append("authorization", format!("Bearer {UNKNOWN_TOKEN}").parse().expect("metadata"));
    keys.get_trust_list(request).await.expect("two values are ignored");
    // Methods that need a role still refuse the stale token.
    let status = CheckpointServiceClient::new(channel)
        .verify_pass(with_token(pb::VerifyPassRequest::default(), Some(UNKNOWN_TOKEN)))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");

    // Other tests of this binary may send such credentials too: at least these 7 were counted.
    let body = must_finish("scrape", async {
        let mut stream = tokio::net::TcpStream::connect(metrics_addr).await.expect("connect to metrics");
        let request = format!("GET /metrics HTTP/1.1\r\nHost: {metrics_addr}\r\nConnection: close\r\n\r\n");
        tokio::io::AsyncWriteExt::write_all(&mut stream, request.as_bytes()).await.expect("send");
        let mut response = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut stream, &mut response).await.expect("read");
        response
    })
    .await;
    let counted = body
        .lines()
        .find_map(|line| line.strip_prefix("epass_invalid_credentials_total "))
        .and_then(|value| value.trim().parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no epass_invalid_credentials_total in {body}"));
    assert!(counted >= 7.0, "counted {counted}");
}

/// Regression (issue 12): an empty or 5,000-byte `qr_text` was `INVALID_ARGUMENT` while texts of
/// 539 to 4,095 bytes got a verdict. Any text within the request size limit is what was
/// scanned, and gets a verdict naming its format problem, as offline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_qr_text_within_the_request_limit_gets_a_verdict() {
    let limits = Limits { max_request_bytes: 128 * 1024, ..Limits::default() };
    let server =
        serve_plain(&[client("scanner", Role::Checkpoint, Some(CHECKPOINT_TOKEN), None, 10_000)], limits).await;
    let channel = common::connect(server.addr).await;
    let cases = [
        ("empty", String::new(), pb::FormatProblem::WrongPrefix),
        ("5,000 bytes", format!("EP1:{}", "A".repeat(4996)), pb::FormatProblem::TooLong),
        ("60 kB", format!("EP1:{}", "A".repeat(60 * 1024)), pb::FormatProblem::TooLong),
        ("60 kB of anything", "x".repeat(60 * 1024), pb::FormatProblem::WrongPrefix),
    ];
    for (n, (what, qr_text, problem)) in cases.into_iter().enumerate() {
        let mut checkpoint = CheckpointServiceClient::new(channel.clone());
        let verify = pb::VerifyPassRequest {
            qr_text: qr_text.clone(),
            checkpoint_id: "SZX-AIR-01".into(),
            mode: pb::TransportMode::Air as i32,
        };
        let answer = checkpoint.verify_pass(with_token(verify, Some(CHECKPOINT_TOKEN))).await;
        let answer = answer.unwrap_or_else(|status| panic!("{what}: {status:?}")).into_inner();
        assert_eq!(answer.verdict, pb::Verdict::Rejected as i32, "{what}: {answer:?}");
        assert_eq!(answer.reason, pb::RejectionReason::BadFormat as i32, "{what}: {answer:?}");
        assert_eq!(answer.format_problem, problem as i32, "{what}: {answer:?}");
        let record = pb::RecordEntryRequest {
            qr_text,
            checkpoint_id: "SZX-AIR-01".into(),
            mode: pb::TransportMode::Air as i32,
            scan_id: format!("garbage-{n}"),
        };
        let answer = checkpoint.record_entry(with_token(record, Some(CHECKPOINT_TOKEN))).await;
        let answer = answer.unwrap_or_else(|status| panic!("{what}: {status:?}")).into_inner();
        assert_eq!(answer.verdict, pb::Verdict::Rejected as i32, "{what}: {answer:?}");
        assert_eq!(answer.format_problem, problem as i32, "{what}: {answer:?}");
    }
    // A bad checkpoint id, mode or scan id is still the request's fault.
    let verify = pb::VerifyPassRequest { qr_text: String::new(), checkpoint_id: String::new(), mode: 0 };
    let status = CheckpointServiceClient::new(channel)
        .verify_pass(with_token(verify, Some(CHECKPOINT_TOKEN)))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let fields: Vec<String> =
        status.get_details_bad_request().expect("BadRequest").field_violations.into_iter().map(|v| v.field).collect();
    assert_eq!(fields, ["checkpoint_id", "mode"]);
}
