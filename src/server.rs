//! Wiring: the gRPC services, health and reflection on an already bound listener, behind the
//! access layer, with the limits and TLS of the configuration; and the orderly shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic_health::ServingStatus;

use crate::access::AccessControl;
use crate::config::{DatabaseSettings, Limits, TlsSettings};
use crate::grpc::pb::checkpoint_service_server::CheckpointServiceServer;
use crate::grpc::pb::issuance_service_server::IssuanceServiceServer;
use crate::grpc::pb::key_service_server::KeyServiceServer;
use crate::grpc::{pb, CheckpointHandler, IssuanceHandler, KeyHandler, ServiceState};

/// How long a status list is good for: an offline checkpoint refreshes it within this time,
/// or it says that single use was not checked.
pub const DEFAULT_STATUS_LIST_LIFETIME: chrono::TimeDelta = chrono::TimeDelta::hours(1);

/// A server failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The transport failed.
    #[error("transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The TLS certificate, key or client CA cannot be used (the message carries the causes:
    /// tonic's own error says only "transport error").
    #[error("tls: {0}")]
    Tls(String),
    /// The reflection service could not be built from the descriptor set.
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
}

/// How to serve: who may call, the limits, and TLS.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Callers and their roles.
    pub access: AccessControl,
    /// Request size, deadlines, rates, concurrency, keepalive and shutdown grace.
    pub limits: Limits,
    /// The server certificate and, for mTLS, the client CA; `None` serves plaintext.
    pub tls: Option<TlsSettings>,
}

/// The HTTP/2 transport settings derived from [`Limits`], as they are given to tonic's
/// `Server` builder (kept apart so that a test can check the wiring: the builder cannot be
/// inspected).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransportSettings {
    /// Every call is cut after this long; a shorter `grpc-timeout` from the client wins. It
    /// bounds the time to the response headers: a server stream (`WatchStatusList`) outlives it
    /// and ends at shutdown.
    pub timeout: Duration,
    /// Calls on one connection still waiting for their response headers (tower's limit; an open
    /// server stream no longer counts once its headers are sent). Open streams are bounded by
    /// `max_concurrent_streams` below, which tests/grpc_limits.rs exercises.
    pub concurrency_limit_per_connection: usize,
    /// HTTP/2 streams a client may open at once on one connection (`SETTINGS_MAX_CONCURRENT_STREAMS`),
    /// the same number, so that a client queues on its side instead of the server buffering.
    pub max_concurrent_streams: u32,
    /// Ping a quiet connection this often, to find dead peers.
    pub http2_keepalive_interval: Duration,
    /// Close a connection whose ping went unanswered this long.
    pub http2_keepalive_timeout: Duration,
    /// Largest request message, in bytes; a larger one is refused with `OUT_OF_RANGE` while
    /// decoding, before any handler runs.
    pub max_decoding_message_size: usize,
}

impl TransportSettings {
    /// The settings for `limits`.
    pub fn of(limits: &Limits) -> Self {
        Self {
            timeout: limits.max_deadline,
            concurrency_limit_per_connection: limits.concurrency_per_connection,
            max_concurrent_streams: u32::try_from(limits.concurrency_per_connection).unwrap_or(u32::MAX),
            http2_keepalive_interval: limits.keepalive_interval,
            http2_keepalive_timeout: limits.keepalive_timeout,
            max_decoding_message_size: limits.max_request_bytes,
        }
    }

    fn builder(&self) -> Server {
        Server::builder()
            .timeout(self.timeout)
            .concurrency_limit_per_connection(self.concurrency_limit_per_connection)
            .max_concurrent_streams(self.max_concurrent_streams)
            .http2_keepalive_interval(Some(self.http2_keepalive_interval))
            .http2_keepalive_timeout(Some(self.http2_keepalive_timeout))
    }
}

/// The connections accepted on `listener`, with Nagle's algorithm off: gRPC writes a
/// response's headers and data, then its trailers, and with Nagle the trailers wait for the
/// client's delayed acknowledgement of the rest, about 40 ms a call on Linux.
pub fn incoming(listener: TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener).with_nodelay(Some(true))
}

/// Checks that the certificate, key and client CA can be used, as the server will use them:
/// for `epass config check` and for `serve` before anything is bound or opened.
pub fn check_tls(tls: &TlsSettings) -> Result<(), ServeError> {
    Server::builder().tls_config(tls_config(tls)).map(drop).map_err(tls_error)
}

fn tls_error(error: tonic::transport::Error) -> ServeError {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    ServeError::Tls(text)
}

fn tls_config(tls: &TlsSettings) -> ServerTlsConfig {
    let TlsSettings { cert_pem, key_pem, client_ca_pem } = tls;
    let config = ServerTlsConfig::new().identity(Identity::from_pem(cert_pem, key_pem));
    match client_ca_pem {
        // Optional: a caller with a bearer token needs no certificate of its own.
        Some(ca) => config.client_ca_root(Certificate::from_pem(ca)).client_auth_optional(true),
        None => config,
    }
}

/// Serves every service on `listener` until `shutdown` completes; then reports every service
/// `NOT_SERVING`, ends the status list streams and the health watches (after their
/// `NOT_SERVING`), stops accepting and lets the calls in flight finish, for at most
/// `limits.shutdown_grace`, after which the calls left are cut (and that is logged).
pub async fn run(
    listener: TcpListener,
    state: ServiceState,
    options: ServeOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let ServeOptions { access, limits, tls } = options;
    let settings = TransportSettings::of(&limits);
    let (health_reporter, _) = tonic_health::server::health_reporter();
    // Health watches end at shutdown once they carried NOT_SERVING, instead of holding the
    // server for the whole grace period.
    let health_service = tonic_health::pb::health_server::HealthServer::new(crate::grpc::ClosingHealth::new(
        health_reporter.clone(),
        state.closing.subscribe(),
    ));
    let mut state = state;
    // While the database cannot be written, health says NOT_SERVING, until a probe succeeds.
    crate::grpc::watch_store_health(&mut state, health_reporter.clone());
    let state = Arc::new(state);
    // Status list watchers hear of uses and revocations that other replicas record.
    tokio::spawn(crate::grpc::poll_journal(state.clone()));
    health_reporter.set_serving::<IssuanceServiceServer<IssuanceHandler>>().await;
    health_reporter.set_serving::<CheckpointServiceServer<CheckpointHandler>>().await;
    health_reporter.set_serving::<KeyServiceServer<KeyHandler>>().await;

    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;

    let max = settings.max_decoding_message_size;
    let issuance = IssuanceServiceServer::new(IssuanceHandler::new(state.clone())).max_decoding_message_size(max);
    let checkpoint = CheckpointServiceServer::new(CheckpointHandler::new(state.clone())).max_decoding_message_size(max);
    let keys = KeyServiceServer::new(KeyHandler::new(state.clone())).max_decoding_message_size(max);

    let mut builder = settings.builder();
    if let Some(tls) = &tls {
        builder = builder.tls_config(tls_config(tls)).map_err(tls_error)?;
    }

    let (draining, mut drain_started) = tokio::sync::watch::channel(false);
    let stop_accepting = {
        let state = state.clone();
        let health_reporter = health_reporter.clone();
        async move {
            shutdown.await;
            // End the streams, or they would hold the server open; and from now on nothing
            // may report SERVING again.
            state.closing.send_replace(true);
            // Load balancers watching health stop sending new calls before the socket closes.
            health_reporter.set_service_status("", ServingStatus::NotServing).await;
            health_reporter.set_not_serving::<IssuanceServiceServer<IssuanceHandler>>().await;
            health_reporter.set_not_serving::<CheckpointServiceServer<CheckpointHandler>>().await;
            health_reporter.set_not_serving::<KeyServiceServer<KeyHandler>>().await;
            tracing::info!(grace = ?limits.shutdown_grace, "shutting down: no new calls; calls in flight may finish");
            draining.send_replace(true);
        }
    };

    // The access layer is the one place calls are authenticated, authorized and rate-limited;
    // anything that should see refused calls too (metrics, request logs) goes above it.
    let serve = builder
        .layer(crate::telemetry::layer())
        .layer(access.layer())
        .layer(UndecodableRequestLayer)
        .add_service(health_service)
        .add_service(reflection)
        .add_service(issuance)
        .add_service(checkpoint)
        .add_service(keys)
        .serve_with_incoming_shutdown(incoming(listener), stop_accepting);
    let grace_over = async {
        let _ = drain_started.wait_for(|started| *started).await;
        tokio::time::sleep(limits.shutdown_grace).await;
    };
    let served = tokio::select! {
        result = serve => result,
        () = grace_over => {
            tracing::warn!(grace = ?limits.shutdown_grace, "shutdown grace period over: calls still in flight are cut");
            Ok(())
        }
    };
    // The verification rows still queued are written before the process ends, if the
    // database lets them within the grace period.
    if tokio::time::timeout(limits.shutdown_grace, state.audit.close()).await.is_err() {
        tracing::warn!("audit rows still queued at shutdown were not written");
    }
    served?;
    Ok(())
}

/// Answers `INVALID_ARGUMENT` where tonic's codec answers `INTERNAL` because the request
/// message does not decode (a string field that is not UTF-8, bytes that are not protobuf, a
/// frame flag that is neither 0 nor 1): that is the client's fault, and the telemetry layer
/// above logs it as such instead of as a server fault. The message (prost's description, which
/// quotes no request bytes) is kept.
///
/// tonic decides these statuses inside the generated service, before any handler runs, so the
/// status is read back from the trailers-only response it builds.
#[derive(Debug, Clone, Copy, Default)]
struct UndecodableRequestLayer;

impl<S> tower_layer::Layer<S> for UndecodableRequestLayer {
    type Service = UndecodableRequest<S>;

    fn layer(&self, inner: S) -> Self::Service {
        UndecodableRequest { inner }
    }
}

/// The service of [`UndecodableRequestLayer`].
#[derive(Debug, Clone)]
struct UndecodableRequest<S> {
    inner: S,
}

impl<S, B, ResBody> tower_service::Service<http::Request<B>> for UndecodableRequest<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<ResBody>>,
{
    type Response = http::Response<ResBody>;
    type Error = S::Error;
    type Future = futures_util::future::MapOk<S::Future, fn(http::Response<ResBody>) -> http::Response<ResBody>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        use futures_util::TryFutureExt as _;
        self.inner.call(request).map_ok(undecodable_is_invalid_argument as fn(_) -> _)
    }
}

/// Starts of the `INTERNAL` messages tonic gives a request it cannot decode: prost's
/// `DecodeError` and the codec's frame checks.
const UNDECODABLE: [&str; 2] = ["failed to decode Protobuf message", "protocol error: received message with"];

fn undecodable_is_invalid_argument<B>(mut response: http::Response<B>) -> http::Response<B> {
    let headers = response.headers_mut();
    let internal = headers.get("grpc-status").is_some_and(|code| code.as_bytes() == b"13");
    // grpc-message is percent-encoded; these messages hold no other escapes before their end.
    let message = headers.get("grpc-message").map(|m| String::from_utf8_lossy(m.as_bytes()).replace("%20", " "));
    if internal && message.is_some_and(|m| UNDECODABLE.iter().any(|start| m.starts_with(start))) {
        headers.insert("grpc-status", http::HeaderValue::from_static("3"));
    }
    response
}

/// Why the service state could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// Keys or secret.
    #[error(transparent)]
    DataDir(#[from] crate::datadir::DataDirError),
    /// The database.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// Opens (creating on first start) the data directory and its SQLite database, and assembles
/// the state the handlers share. Returns the files this start created.
pub async fn open_state(
    data_dir: &std::path::Path,
    signing_key: Option<&std::path::Path>,
    clock: Arc<dyn crate::clock::Clock>,
    policy: epass_core::policy::IssuancePolicy,
) -> Result<(ServiceState, Vec<std::path::PathBuf>), OpenError> {
    open_state_with_database(data_dir, signing_key, &DatabaseSettings::default(), clock, policy).await
}

/// [`open_state`] with the database of the configuration: SQLite in the data directory, or
/// PostgreSQL, shared with other servers. Keys, the hashing secret and the trust list come from
/// the data directory either way: servers that share a database must share those files too.
pub async fn open_state_with_database(
    data_dir: &std::path::Path,
    signing_key: Option<&std::path::Path>,
    database: &DatabaseSettings,
    clock: Arc<dyn crate::clock::Clock>,
    policy: epass_core::policy::IssuancePolicy,
) -> Result<(ServiceState, Vec<std::path::PathBuf>), OpenError> {
    let provisioned = crate::datadir::provision(data_dir, signing_key, clock.now())?;
    let store: Arc<dyn crate::store::Store> = match &database.url {
        None => {
            // Owner-only before SQLite opens it; its -wal and -shm files follow its mode.
            crate::datadir::create_database_file(&provisioned.database)?;
            Arc::new(crate::store::MeteredStore::new(crate::store::SqliteStore::open(&provisioned.database).await?))
        }
        Some(url) => Arc::new(crate::store::MeteredStore::new(
            crate::store::PostgresStore::connect(url.expose(), database.postgres()).await?,
        )),
    };
    let state = ServiceState {
        audit: crate::grpc::AuditQueue::start(Arc::clone(&store), crate::grpc::DEFAULT_AUDIT_QUEUE_CAPACITY),
        store,
        signer: provisioned.signer,
        keys: provisioned.keys,
        secret: provisioned.secret,
        clock,
        policy,
        trust: crate::grpc::SignedTrustList { bytes: provisioned.trust_list_bytes, list: provisioned.trust_list },
        status_list_lifetime: DEFAULT_STATUS_LIST_LIFETIME,
        status_changes: tokio::sync::watch::channel(0).0,
        closing: tokio::sync::watch::channel(false).0,
    };
    Ok((state, provisioned.created))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_decode_failures_become_invalid_argument() {
        let response = |status: tonic::Status| undecodable_is_invalid_argument(status.into_http::<()>());
        let code = |response: http::Response<()>| response.headers()["grpc-status"].to_str().unwrap().to_owned();
        let undecodable = tonic::Status::internal("failed to decode Protobuf message: invalid varint");
        assert_eq!(code(response(undecodable)), "3");
        let flag = tonic::Status::internal("protocol error: received message with invalid compression flag: 7");
        assert_eq!(code(response(flag)), "3");
        // A server fault stays one, and so does any other code.
        assert_eq!(code(response(tonic::Status::internal("internal error"))), "13");
        assert_eq!(code(response(tonic::Status::not_found("failed to decode Protobuf message"))), "5");
    }

    /// The builder cannot be inspected, so this checks the one place it is fed from: every
    /// limit reaches its transport setting. tests/grpc_limits.rs shows keepalive and the stream
    /// limit acting on a real connection.
    #[test]
    fn transport_settings_follow_the_limits() {
        let limits = Limits {
            max_request_bytes: 5000,
            max_deadline: Duration::from_secs(7),
            rate_per_second: 3,
            concurrency_per_connection: 9,
            keepalive_interval: Duration::from_secs(11),
            keepalive_timeout: Duration::from_secs(4),
            shutdown_grace: Duration::from_secs(2),
        };
        assert_eq!(
            TransportSettings::of(&limits),
            TransportSettings {
                timeout: Duration::from_secs(7),
                concurrency_limit_per_connection: 9,
                max_concurrent_streams: 9,
                http2_keepalive_interval: Duration::from_secs(11),
                http2_keepalive_timeout: Duration::from_secs(4),
                max_decoding_message_size: 5000,
            }
        );
    }
}
