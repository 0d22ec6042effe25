//! Observability: logs through `tracing` (text or JSON), Prometheus metrics on their own HTTP
//! listener, and the tower layer that times, counts and logs every RPC.
//!
//! The handlers run inside the access layer's `rpc` span (fields `method` and `caller`), which
//! sits below this layer; the access layer names the caller to this one ([`record_caller`]).
//!
//! Nothing here sees a request or response message: the layer reads the gRPC method from the
//! URI path, the caller from the request extensions and the outcome from the `grpc-status`
//! header or trailer, so no permit number, phone number or token can reach a log line or a
//! label through it. Labels only take values from fixed sets (the methods this server serves,
//! gRPC codes, verdict reasons, store operations), so a client cannot grow the metrics.

use std::future::Future;
use std::io::IsTerminal as _;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use http_body::{Body, Frame, SizeHint};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tonic::Code;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::EnvFilter;

use crate::access::Caller;
use crate::config::LogFormat;
use epass_core::pass::TransportMode;
use epass_core::verify::Reason;

/// Counter: passes issued (replayed requests are not counted again).
pub const PASSES_ISSUED: &str = "epass_passes_issued_total";
/// Counter: applications refused because the holder's monthly limit was reached.
pub const QUOTA_REFUSALS: &str = "epass_quota_refusals_total";
/// Audit rows of calls that changed nothing, dropped (queue full) or lost (write failed).
pub const AUDIT_ROWS_DROPPED: &str = "epass_audit_rows_dropped_total";
/// Counter: credentials that named no caller (an unknown or malformed token, two
/// `authorization` values, a token and a certificate of different callers) sent to a public
/// method, which ignores them.
pub const INVALID_CREDENTIALS: &str = "epass_invalid_credentials_total";
/// Counter: verdicts decided, labelled `method` (`VerifyPass`, `RecordEntry`), `verdict`
/// (`accepted`, `rejected`) and `reason` (a rejection reason such as `already_used`, or `none`).
pub const VERDICTS: &str = "epass_verdicts_total";
/// Counter: entries recorded (passes used up), labelled `mode` (`air`, `rail`).
pub const ENTRIES_RECORDED: &str = "epass_entries_recorded_total";
/// Counter: offline entries kept as double entries (a pass admitted again while its checkpoint
/// was offline), counted once, when synced.
pub const DOUBLE_ENTRIES: &str = "epass_double_entries_total";
/// Counter: rows the retention task pruned (audit rows, scans and status events deleted,
/// passes whose holder's names were removed), by `kind` (`store::PruneKind::as_str`).
pub const ROWS_PRUNED: &str = "epass_rows_pruned_total";
/// Histogram: RPC duration in seconds until the last byte of the response, labelled
/// `service`, `method` and `code` (the gRPC status code name, such as `OK`).
pub const RPC_DURATION: &str = "epass_rpc_duration_seconds";
/// Histogram: store operation duration in seconds, labelled `operation` and `outcome`
/// (`ok`, `error`).
pub const DB_DURATION: &str = "epass_db_duration_seconds";

/// `method` label of [`VERDICTS`] for `VerifyPass`.
pub(crate) const VERIFY_PASS: &str = "VerifyPass";
/// `method` label of [`VERDICTS`] for `RecordEntry`.
pub(crate) const RECORD_ENTRY: &str = "RecordEntry";

/// Bucket bounds of [`RPC_DURATION`], seconds.
const RPC_BUCKETS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
/// Bucket bounds of [`DB_DURATION`], seconds: SQLite answers in well under a millisecond until
/// it waits on a lock.
const DB_BUCKETS: &[f64] =
    &[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];
/// How often histogram samples are folded in when nobody scrapes.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);
/// Longest URI path written to a log line; the path is chosen by the client.
const MAX_LOGGED_PATH: usize = 128;

/// The request path as logs may carry it: the client chooses it, so at most
/// [`MAX_LOGGED_PATH`] bytes, cut on a character boundary.
pub(crate) fn loggable_path(path: &str) -> &str {
    let mut end = path.len().min(MAX_LOGGED_PATH);
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    &path[..end]
}

// Logging.

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoggingError {
    /// The filter is not a `tracing` filter.
    #[error("{setting}: {problem}")]
    Filter {
        /// Where the filter came from (`RUST_LOG` or `log.level`).
        setting: &'static str,
        /// What is wrong with it.
        problem: String,
    },
    /// A global subscriber was already installed.
    #[error("logging was already set up")]
    AlreadySet,
}

/// Sends `tracing` events to stderr, as human-readable lines or one JSON object per line, at
/// the filter `level` (such as `info` or `epass=debug,info`). `RUST_LOG`, when set, takes
/// precedence over `level`.
///
/// JSON lines carry the event's fields at the top level and the fields of the RPC it belongs to
/// (`method`, `caller`) under `span`.
pub fn init_logging(format: LogFormat, level: &str) -> Result<(), LoggingError> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(text) if !text.trim().is_empty() => EnvFilter::try_new(&text)
            .map_err(|e| LoggingError::Filter { setting: "RUST_LOG", problem: e.to_string() })?,
        _ => EnvFilter::try_new(level)
            .map_err(|e| LoggingError::Filter { setting: "log.level", problem: e.to_string() })?,
    };
    let registry = tracing_subscriber::registry().with(filter);
    let installed = match format {
        LogFormat::Text => {
            let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
            registry.with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(ansi)).try_init()
        }
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
    installed.map_err(|_| LoggingError::AlreadySet)
}

// Metrics.

/// Why metrics could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("metrics: {0}")]
pub struct MetricsError(#[from] metrics_exporter_prometheus::BuildError);

/// The process-wide Prometheus recorder. Until [`Metrics::install`] is called, metrics cost
/// next to nothing and go nowhere.
#[derive(Clone)]
pub struct Metrics {
    handle: PrometheusHandle,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// Installs the recorder, or returns the one this function installed before (tests start
    /// several servers in one process).
    pub fn install() -> Result<Self, MetricsError> {
        static INSTALLED: Mutex<Option<PrometheusHandle>> = Mutex::new(None);
        let mut installed = INSTALLED.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(handle) = installed.as_ref() {
            return Ok(Self { handle: handle.clone() });
        }
        let handle = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(RPC_DURATION.to_owned()), RPC_BUCKETS)?
            .set_buckets_for_metric(Matcher::Full(DB_DURATION.to_owned()), DB_BUCKETS)?
            .install_recorder()?;
        describe();
        *installed = Some(handle.clone());
        Ok(Self { handle })
    }

    /// Serves `GET /metrics` on `listener` until `shutdown` completes.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let upkeep_handle = self.handle.clone();
        let upkeep = tokio::spawn(async move {
            let mut interval = tokio::time::interval(UPKEEP_INTERVAL);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                upkeep_handle.run_upkeep();
            }
        });
        let handle = self.handle;
        let app = axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let body = handle.render();
                async move { ([(http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body) }
            }),
        );
        let served = axum::serve(listener, app).with_graceful_shutdown(shutdown).await;
        upkeep.abort();
        served
    }
}

/// Help texts, and zeros for the counters without labels so that they exist before the first
/// event.
fn describe() {
    metrics::describe_counter!(PASSES_ISSUED, "Passes issued (retried requests are not counted again).");
    metrics::describe_counter!(QUOTA_REFUSALS, "Applications refused because the monthly limit was reached.");
    metrics::describe_counter!(
        AUDIT_ROWS_DROPPED,
        "Audit rows of calls that changed nothing (verifications) not written: queue full or write failed."
    );
    metrics::describe_counter!(
        VERDICTS,
        "Verdicts decided by VerifyPass and RecordEntry, by verdict and rejection reason (resent scans are not counted again)."
    );
    metrics::describe_counter!(
        INVALID_CREDENTIALS,
        "Credentials that named no caller, sent to a public method (KeyService, health, reflection), which ignored them."
    );
    metrics::describe_counter!(ENTRIES_RECORDED, "Entries recorded (passes used up), by transport mode.");
    metrics::describe_counter!(
        DOUBLE_ENTRIES,
        "Offline entries synced as double entries: the pass had been used already (counted once, when synced)."
    );
    metrics::describe_counter!(
        ROWS_PRUNED,
        "Rows removed by the retention task, by kind (holder_names: passes whose names were removed)."
    );
    metrics::describe_histogram!(
        RPC_DURATION,
        metrics::Unit::Seconds,
        "RPC duration until the end of the response, by service, method and gRPC status code."
    );
    metrics::describe_histogram!(
        DB_DURATION,
        metrics::Unit::Seconds,
        "Store operation duration, by operation and outcome."
    );
    metrics::counter!(PASSES_ISSUED).absolute(0);
    metrics::counter!(QUOTA_REFUSALS).absolute(0);
    metrics::counter!(INVALID_CREDENTIALS).absolute(0);
    metrics::counter!(DOUBLE_ENTRIES).absolute(0);
}

/// Counts an offline entry synced as a double entry.
pub(crate) fn double_entry() {
    metrics::counter!(DOUBLE_ENTRIES).increment(1);
}

/// Counts a pass issued.
pub(crate) fn pass_issued() {
    metrics::counter!(PASSES_ISSUED).increment(1);
}

/// Counts an application refused for the monthly limit.
pub(crate) fn quota_refused() {
    metrics::counter!(QUOTA_REFUSALS).increment(1);
}

/// Counts credentials that a public method ignored because they named no caller.
pub(crate) fn invalid_credentials() {
    metrics::counter!(INVALID_CREDENTIALS).increment(1);
}

/// Counts audit rows of calls that changed nothing that were not written.
pub(crate) fn audit_rows_dropped(rows: u64) {
    metrics::counter!(AUDIT_ROWS_DROPPED).increment(rows);
}

/// Counts a verdict of `method` ([`VERIFY_PASS`] or [`RECORD_ENTRY`]): accepted, or rejected
/// for `reason`.
pub(crate) fn verdict(method: &'static str, rejected: Option<Reason>) {
    let (verdict, reason) = match rejected {
        None => ("accepted", "none"),
        Some(reason) => ("rejected", reason.as_str()),
    };
    metrics::counter!(VERDICTS, "method" => method, "verdict" => verdict, "reason" => reason).increment(1);
}

/// Counts rows of `kind` the retention task removed.
pub(crate) fn rows_pruned(kind: &'static str, rows: u64) {
    metrics::counter!(ROWS_PRUNED, "kind" => kind).increment(rows);
}

/// Counts an entry recorded at a checkpoint of `mode`.
pub(crate) fn entry_recorded(mode: TransportMode) {
    metrics::counter!(ENTRIES_RECORDED, "mode" => mode.name()).increment(1);
}

/// Records the duration of a store operation (`store::MeteredStore` calls it).
pub fn store_operation(operation: &'static str, elapsed: Duration, ok: bool) {
    let outcome = if ok { "ok" } else { "error" };
    metrics::histogram!(DB_DURATION, "operation" => operation, "outcome" => outcome).record(elapsed.as_secs_f64());
}

// The RPC layer.

/// The tower layer that times and logs every RPC: put it on the server
/// (`Server::builder().layer(telemetry::layer())`).
pub fn layer() -> RpcLayer {
    RpcLayer
}

/// See [`layer`].
#[derive(Debug, Clone, Copy, Default)]
pub struct RpcLayer;

impl<S> tower_layer::Layer<S> for RpcLayer {
    type Service = RpcService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcService { inner }
    }
}

/// The service of [`RpcLayer`].
#[derive(Debug, Clone)]
pub struct RpcService<S> {
    inner: S,
}

/// What an RPC shares with code that runs inside it: the caller, once known.
#[derive(Debug, Default)]
struct CallContext {
    caller: OnceLock<String>,
}

tokio::task_local! {
    static CURRENT: Arc<CallContext>;
}

/// Names the caller of the RPC being served, for an access check that runs inside the
/// telemetry layer (an interceptor, or a layer added after it, as in `server::run`). The
/// caller is read from the request's [`Caller`] extension anyway when the check runs before
/// the layer; the first caller named wins. Does nothing outside an RPC.
pub fn record_caller(caller: &Caller) {
    record_caller_name(&caller.name);
}

/// [`record_caller`] by name alone: for a call refused after its caller was authenticated
/// (the wrong role, over its rate), whose line names that caller rather than
/// `unauthenticated`.
pub fn record_caller_name(name: &str) {
    let _ = CURRENT.try_with(|context| context.caller.set(name.to_owned()));
}

impl<S, B, ResBody> tower_service::Service<http::Request<B>> for RpcService<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<ResBody>>,
{
    type Response = http::Response<RpcBody<ResBody>>;
    type Error = S::Error;
    type Future = RpcFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let context = Arc::new(CallContext::default());
        if let Some(caller) = request.extensions().get::<Caller>() {
            let _ = context.caller.set(caller.name.clone());
        }
        let call =
            Call { context: context.clone(), path: request.uri().path().to_owned(), start: Instant::now(), code: None };
        let inner = &mut self.inner;
        let future = CURRENT.sync_scope(context, || inner.call(request));
        RpcFuture { inner: future, call: Some(call) }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`RpcService`]: polls the inner future where [`record_caller`]
    /// finds the call.
    pub struct RpcFuture<F> {
        #[pin]
        inner: F,
        call: Option<Call>,
    }
}

impl<F, ResBody, E> Future for RpcFuture<F>
where
    F: Future<Output = Result<http::Response<ResBody>, E>>,
{
    type Output = Result<http::Response<RpcBody<ResBody>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let context = this.call.as_ref().expect("RpcFuture polled after completion").context.clone();
        let inner = this.inner;
        let result = ready!(CURRENT.sync_scope(context, || inner.poll(cx)));
        let mut call = this.call.take().expect("RpcFuture polled after completion");
        Poll::Ready(match result {
            Ok(response) => {
                // A trailers-only response (most errors) carries the status in its headers and
                // nothing else: the call is over, and is recorded before the client can see it.
                let call = match response.headers().get("grpc-status") {
                    Some(status) => {
                        call.code = Some(Code::from_bytes(status.as_bytes()));
                        drop(call);
                        None
                    }
                    None => Some(call),
                };
                Ok(response.map(|inner| RpcBody { inner, call }))
            }
            Err(error) => {
                call.code = Some(Code::Internal);
                Err(error)
            }
        })
    }
}

pin_project_lite::pin_project! {
    /// The response body of [`RpcService`]: finds the status in the trailers, and ends the
    /// RPC's measurement when the body ends or is dropped.
    pub struct RpcBody<B> {
        #[pin]
        inner: B,
        call: Option<Call>,
    }
}

impl<B: Body> Body for RpcBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    if let Some(mut call) = this.call.take() {
                        call.code =
                            Some(trailers.get("grpc-status").map_or(Code::Unknown, |v| Code::from_bytes(v.as_bytes())));
                    }
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(mut call) = this.call.take() {
                    call.code = Some(Code::Internal);
                }
            }
            Poll::Ready(None) => {
                if let Some(mut call) = this.call.take() {
                    call.code.get_or_insert(Code::Unknown);
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// One RPC being measured; dropping it records the histogram and writes the log line. A call
/// dropped without a status (the client went away first) counts as `CANCELLED`.
struct Call {
    context: Arc<CallContext>,
    path: String,
    start: Instant,
    code: Option<Code>,
}

impl std::fmt::Debug for Call {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Call").field("path", &self.path).field("code", &self.code).finish_non_exhaustive()
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        let elapsed = self.start.elapsed();
        let code = self.code.unwrap_or(Code::Cancelled);
        let code_name = code_name(code);
        let (service, method) = method_labels(&self.path);
        metrics::histogram!(
            RPC_DURATION,
            "service" => service.to_owned(),
            "method" => method.to_owned(),
            "code" => code_name,
        )
        .record(elapsed.as_secs_f64());

        let path = loggable_path(&self.path);
        let caller = self.context.caller.get().map_or("unauthenticated", String::as_str);
        let duration_ms = elapsed.as_secs_f64() * 1000.0;
        if service == "grpc.health.v1.Health" {
            // Probes call every few seconds; their lines would drown the others.
            tracing::debug!(target: "epass::rpc", method = path, caller, code = code_name, duration_ms, "rpc");
        } else if is_server_fault(code) {
            tracing::warn!(target: "epass::rpc", method = path, caller, code = code_name, duration_ms, "rpc");
        } else {
            tracing::info!(target: "epass::rpc", method = path, caller, code = code_name, duration_ms, "rpc");
        }
    }
}

/// The `service` and `method` labels of a path: its names if this server serves it, else
/// `unknown` (a label per path any client makes up would let it add time series at will).
fn method_labels(path: &str) -> (&str, &str) {
    match split_path(path) {
        Some(names) if crate::access::required(path).is_some() => names,
        _ => ("unknown", "unknown"),
    }
}

/// `/package.Service/Method` as (`package.Service`, `Method`).
fn split_path(path: &str) -> Option<(&str, &str)> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    (!service.is_empty() && !method.is_empty() && !method.contains('/')).then_some((service, method))
}

fn is_server_fault(code: Code) -> bool {
    matches!(code, Code::Internal | Code::Unavailable | Code::Unknown | Code::DataLoss)
}

/// The canonical name of a gRPC status code, as in the gRPC specification.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: a path whose 128th byte fell inside a multi-byte character was logged whole.
    #[test]
    fn logged_paths_are_bounded_even_inside_a_character() {
        let path = format!("/{}", "é".repeat(200));
        let logged = loggable_path(&path);
        assert!(logged.len() <= MAX_LOGGED_PATH && logged.len() >= MAX_LOGGED_PATH - 3);
        assert_eq!(loggable_path("/epass.v1.KeyService/GetTrustList"), "/epass.v1.KeyService/GetTrustList");
    }

    #[test]
    fn paths_split_into_service_and_method() {
        assert_eq!(
            split_path("/epass.v1.CheckpointService/VerifyPass"),
            Some(("epass.v1.CheckpointService", "VerifyPass"))
        );
        for bad in ["", "/", "//", "/a", "/a/", "//b", "/a/b/c", "a/b"] {
            assert_eq!(split_path(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn only_served_methods_are_labelled_by_name() {
        assert_eq!(method_labels("/epass.v1.IssuanceService/IssuePass"), ("epass.v1.IssuanceService", "IssuePass"));
        assert_eq!(method_labels("/grpc.health.v1.Health/Check"), ("grpc.health.v1.Health", "Check"));
        for made_up in ["/epass.v1.IssuanceService/Nope", "/x/y", "/", "/metrics"] {
            assert_eq!(method_labels(made_up), ("unknown", "unknown"), "{made_up}");
        }
    }

    #[test]
    fn code_names_are_the_canonical_ones() {
        assert_eq!(code_name(Code::Ok), "OK");
        assert_eq!(code_name(Code::ResourceExhausted), "RESOURCE_EXHAUSTED");
        assert_eq!(code_name(Code::from_bytes(b"5")), "NOT_FOUND");
    }
}
