//! Who is calling and what they may do: roles, callers, the method table, and the tower layer
//! that authenticates (bearer token or client certificate), authorizes, rate-limits and hands
//! the handlers a [`Caller`].
//!
//! Every RPC of `proto/epass/v1/epass.proto` is named in [`required`]; a path not in the table
//! is answered `UNIMPLEMENTED` without reaching any service. The rules, in order:
//! 1. Public methods (`KeyService`, health, reflection) need nothing, and refuse nothing:
//!    credentials only name the caller in the logs. Credentials that do not name a caller (an
//!    unknown or malformed token, two `authorization` values, a token and a certificate of
//!    different callers) are ignored there, counted in `epass_invalid_credentials_total` and
//!    logged at debug. Availability wins: a checkpoint whose token was rotated must still get
//!    the keys and lists it verifies offline with, and they are signed and public anyway.
//! 2. Other methods need a caller, from the token or from a client certificate whose SHA-256
//!    is configured: otherwise `UNAUTHENTICATED`. A token that is presented must be known and
//!    sent once (one `authorization` value); when a token and a certificate are both
//!    presented they must name the same caller.
//! 3. The caller's role must be the method's: otherwise `PERMISSION_DENIED`.
//! 4. Each caller has a token bucket (its rate per second, a burst of twice that): an empty
//!    bucket gives `RESOURCE_EXHAUSTED` with `RetryInfo`.
//!
//! A refused call whose caller was authenticated (rules 3 and 4) is logged with that caller.
//!
//! Tokens are never logged; only their SHA-256 is kept, and it is compared in constant time.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic::Status;
use tonic_types::{ErrorDetails, StatusExt as _};
use tracing::Instrument as _;

use crate::config::ClientSettings;

/// What a caller may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The applicant-facing backend: issues and looks up passes.
    Issuer,
    /// Checkpoint scanners: verify passes and record entries.
    Checkpoint,
    /// Operators: revoke passes, key operations.
    Admin,
}

impl Role {
    /// Every role.
    pub const ALL: [Self; 3] = [Self::Issuer, Self::Checkpoint, Self::Admin];

    /// Lower-case name, as in the configuration.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Issuer => "issuer",
            Self::Checkpoint => "checkpoint",
            Self::Admin => "admin",
        }
    }

    /// The name of the caller the server registers for this role's local token.
    pub const fn local_caller(self) -> &'static str {
        match self {
            Self::Issuer => "local-issuer",
            Self::Checkpoint => "local-checkpoint",
            Self::Admin => "local-admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An authenticated caller, as the handlers see it (request extension).
///
/// Every call to a method that needs a role carries one; calls to public methods carry one
/// only when they presented credentials.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Caller {
    /// The name given in the configuration; it scopes idempotency keys and appears in the
    /// audit trail and logs.
    pub name: String,
    /// What it may do.
    pub role: Role,
}

/// What a method needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Required {
    /// Anyone may call it, with no credentials.
    Public,
    /// Only callers of this role.
    Role(Role),
}

/// What the method at an HTTP/2 `path` (`/package.Service/Method`) needs; `None` for a path
/// this server does not serve.
pub fn required(path: &str) -> Option<Required> {
    use Required::{Public, Role as R};
    Some(match path {
        "/epass.v1.IssuanceService/IssuePass" => R(Role::Issuer),
        "/epass.v1.IssuanceService/GetPass" => R(Role::Issuer),
        "/epass.v1.IssuanceService/RevokePass" => R(Role::Admin),
        "/epass.v1.CheckpointService/VerifyPass" => R(Role::Checkpoint),
        "/epass.v1.CheckpointService/RecordEntry" => R(Role::Checkpoint),
        "/epass.v1.CheckpointService/SyncEntries" => R(Role::Checkpoint),
        // Offline verifiers fetch keys and lists without an account: they are signed, and public.
        "/epass.v1.KeyService/ListVerificationKeys" => Public,
        "/epass.v1.KeyService/GetTrustList" => Public,
        "/epass.v1.KeyService/GetStatusList" => Public,
        "/epass.v1.KeyService/WatchStatusList" => Public,
        "/grpc.health.v1.Health/Check" => Public,
        "/grpc.health.v1.Health/Watch" => Public,
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo" => Public,
        _ => return None,
    })
}

/// Why a call was refused before it reached a handler.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The path is not in the method table.
    #[error("unknown method {path}")]
    UnknownMethod {
        /// The request path.
        path: String,
    },
    /// The `authorization` metadata is not `Bearer <token>`.
    #[error("authorization metadata must be \"Bearer <token>\"")]
    MalformedAuthorization,
    /// More than one `authorization` value: which one counts would be a guess.
    #[error("authorization metadata was sent {count} times; send it once")]
    AmbiguousAuthorization {
        /// How many values were sent.
        count: usize,
    },
    /// No configured caller has this token.
    #[error("unknown bearer token")]
    UnknownToken,
    /// The token and the client certificate belong to different callers.
    #[error("the bearer token and the client certificate belong to different callers")]
    CredentialsDisagree,
    /// The method needs a role and no credentials were presented.
    #[error("{method} needs credentials: a bearer token (authorization: Bearer <token>) or a client certificate")]
    NoCredentials {
        /// The method path.
        method: String,
    },
    /// The caller's role is not the method's.
    #[error("caller {caller:?} has the {role} role; {method} needs the {required} role")]
    WrongRole {
        /// The caller.
        caller: String,
        /// Its role.
        role: Role,
        /// The method path.
        method: String,
        /// The role it needs.
        required: Role,
    },
    /// The caller's token bucket is empty.
    #[error("caller {caller:?} is over its rate limit of {per_second} requests per second")]
    RateLimited {
        /// The caller.
        caller: String,
        /// Its rate.
        per_second: u32,
        /// When a call would be let through.
        retry_after: std::time::Duration,
    },
}

impl Refusal {
    /// The authenticated caller a refusal names: the call came from it, and its log line says
    /// so.
    pub fn caller(&self) -> Option<&str> {
        match self {
            Self::WrongRole { caller, .. } | Self::RateLimited { caller, .. } => Some(caller),
            Self::UnknownMethod { .. }
            | Self::MalformedAuthorization
            | Self::AmbiguousAuthorization { .. }
            | Self::UnknownToken
            | Self::CredentialsDisagree
            | Self::NoCredentials { .. } => None,
        }
    }
}

impl From<Refusal> for Status {
    fn from(refusal: Refusal) -> Self {
        let message = refusal.to_string();
        match refusal {
            Refusal::UnknownMethod { .. } => Status::unimplemented(message),
            Refusal::MalformedAuthorization
            | Refusal::AmbiguousAuthorization { .. }
            | Refusal::UnknownToken
            | Refusal::CredentialsDisagree => Status::unauthenticated(message),
            Refusal::NoCredentials { .. } => Status::unauthenticated(message),
            Refusal::WrongRole { .. } => Status::permission_denied(message),
            Refusal::RateLimited { retry_after, .. } => Status::with_error_details(
                tonic::Code::ResourceExhausted,
                message,
                ErrorDetails::with_retry_info(Some(retry_after)),
            ),
        }
    }
}

/// One configured caller.
struct Client {
    caller: Caller,
    token_sha256: Option<[u8; 32]>,
    cert_sha256: Option<[u8; 32]>,
    per_second: u32,
    bucket: DefaultDirectRateLimiter,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("caller", &self.caller)
            .field("token", &self.token_sha256.is_some())
            .field("cert", &self.cert_sha256.is_some())
            .field("per_second", &self.per_second)
            .finish()
    }
}

#[derive(Debug)]
enum Mode {
    Checked(Vec<Client>),
    DangerousOpen,
}

/// The callers this server knows and the rules it applies; cheap to clone.
#[derive(Debug, Clone)]
pub struct AccessControl {
    mode: Arc<Mode>,
}

/// The caller name every call gets under [`AccessControl::dangerous_open`].
pub const OPEN_CALLER: &str = "open";

impl AccessControl {
    /// The configured callers, plus the local tokens of the data directory when given. Their
    /// names are unique (the configuration checks it; a local caller named like a configured
    /// one is left out).
    pub fn new(clients: &[ClientSettings], local: Option<&LocalTokens>, default_rate: u32) -> Self {
        let mut checked: Vec<Client> = clients
            .iter()
            .map(|c| Client::new(c.name.clone(), c.role, c.token_sha256, c.cert_sha256, c.rate_per_second))
            .collect();
        if let Some(local) = local {
            for (role, token) in &local.tokens {
                let name = role.local_caller();
                if checked.iter().all(|c| c.caller.name != name) {
                    checked.push(Client::new(
                        name.to_owned(),
                        *role,
                        Some(sha256(token.as_bytes())),
                        None,
                        default_rate,
                    ));
                }
            }
        }
        Self { mode: Arc::new(Mode::Checked(checked)) }
    }

    /// Lets every call through, as a caller named [`OPEN_CALLER`] with whatever role the method
    /// needs, with no rate limit. For tests of everything but access control.
    pub fn dangerous_open() -> Self {
        Self { mode: Arc::new(Mode::DangerousOpen) }
    }

    /// Names of the known callers, for the start-up log.
    pub fn caller_names(&self) -> Vec<String> {
        match &*self.mode {
            Mode::Checked(clients) => {
                clients.iter().map(|c| format!("{} ({})", c.caller.name, c.caller.role)).collect()
            }
            Mode::DangerousOpen => vec![format!("{OPEN_CALLER} (every role, no check)")],
        }
    }

    /// Decides a call: `Ok(Some(caller))` to let it through as `caller`, `Ok(None)` to let a
    /// public call through anonymously, `Err` to refuse it. `authorization` holds every value
    /// of the `authorization` header, in order; `peer_cert` is the DER of the client's
    /// end-entity certificate, already verified against the client CA by TLS.
    pub fn check(
        &self,
        path: &str,
        authorization: &[&[u8]],
        peer_cert: Option<&[u8]>,
    ) -> Result<Option<Caller>, Refusal> {
        let required = required(path).ok_or_else(|| Refusal::UnknownMethod { path: path.to_owned() })?;
        let clients = match &*self.mode {
            Mode::DangerousOpen => {
                return Ok(match required {
                    Required::Public => None,
                    Required::Role(role) => Some(Caller { name: OPEN_CALLER.to_owned(), role }),
                })
            }
            Mode::Checked(clients) => clients,
        };
        let identified = identify(clients, authorization, peer_cert);
        let role = match required {
            Required::Public => {
                return Ok(match identified {
                    Ok(client) => client.map(|c| c.caller.clone()),
                    Err(refusal) => {
                        crate::telemetry::invalid_credentials();
                        tracing::debug!(%refusal, "credentials ignored on a public method");
                        None
                    }
                })
            }
            Required::Role(role) => role,
        };
        let client = identified?.ok_or_else(|| Refusal::NoCredentials { method: path.to_owned() })?;
        if client.caller.role != role {
            return Err(Refusal::WrongRole {
                caller: client.caller.name.clone(),
                role: client.caller.role,
                method: path.to_owned(),
                required: role,
            });
        }
        if let Err(not_until) = client.bucket.check() {
            return Err(Refusal::RateLimited {
                caller: client.caller.name.clone(),
                per_second: client.per_second,
                retry_after: not_until.wait_time_from(DefaultClock::default().now()),
            });
        }
        Ok(Some(client.caller.clone()))
    }

    /// The tower layer that applies these rules to every request.
    pub fn layer(&self) -> AccessLayer {
        AccessLayer { access: self.clone() }
    }
}

impl Client {
    fn new(
        name: String,
        role: Role,
        token_sha256: Option<[u8; 32]>,
        cert_sha256: Option<[u8; 32]>,
        per_second: u32,
    ) -> Self {
        let rate = NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN);
        let burst = rate.saturating_mul(NonZeroU32::new(2).unwrap_or(NonZeroU32::MIN));
        Self {
            caller: Caller { name, role },
            token_sha256,
            cert_sha256,
            per_second: rate.get(),
            bucket: RateLimiter::direct(Quota::per_second(rate).allow_burst(burst)),
        }
    }
}

/// The client the credentials name, if any: `Err` when they name none or disagree.
fn identify<'a>(
    clients: &'a [Client],
    authorization: &[&[u8]],
    peer_cert: Option<&[u8]>,
) -> Result<Option<&'a Client>, Refusal> {
    let by_token = match authorization {
        [] => None,
        [value] => {
            let token = bearer_token(value).ok_or(Refusal::MalformedAuthorization)?;
            Some(find(clients, &sha256(token), |c| c.token_sha256.as_ref()).ok_or(Refusal::UnknownToken)?)
        }
        values => return Err(Refusal::AmbiguousAuthorization { count: values.len() }),
    };
    let by_cert = peer_cert.and_then(|der| find(clients, &sha256(der), |c| c.cert_sha256.as_ref()));
    match (by_token, by_cert) {
        (Some(a), Some(b)) if !std::ptr::eq(a, b) => Err(Refusal::CredentialsDisagree),
        (Some(client), _) | (None, Some(client)) => Ok(Some(client)),
        (None, None) => Ok(None),
    }
}

/// The SHA-256 of some bytes (a token, a certificate's DER).
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// The client whose hash (by `field`) is `hash`. Every client is compared, in constant time,
/// so that the time taken says nothing about how close a guess came.
fn find<'a>(
    clients: &'a [Client],
    hash: &[u8; 32],
    field: impl Fn(&Client) -> Option<&[u8; 32]>,
) -> Option<&'a Client> {
    let mut found = None;
    for client in clients {
        if let Some(known) = field(client) {
            if bool::from(known.ct_eq(hash)) {
                found = Some(client);
            }
        }
    }
    found
}

/// The token of an `authorization: Bearer <token>` value (the scheme is case-insensitive).
fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let (scheme, token) = (value.get(..7)?, value.get(7..)?);
    let token = token.trim_ascii();
    (scheme.eq_ignore_ascii_case(b"bearer ") && !token.is_empty()).then_some(token)
}

/// Applies an [`AccessControl`] to every request (see [`AccessControl::layer`]).
#[derive(Debug, Clone)]
pub struct AccessLayer {
    access: AccessControl,
}

impl<S> tower_layer::Layer<S> for AccessLayer {
    type Service = AccessService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AccessService { inner, access: self.access.clone() }
    }
}

/// The service of an [`AccessLayer`]: refused calls are answered here as gRPC status
/// responses; calls let through carry their [`Caller`] in the request extensions and run in a
/// `rpc` span whose `caller` field names it.
#[derive(Debug, Clone)]
pub struct AccessService<S> {
    inner: S,
    access: AccessControl,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

impl<S, ReqBody, ResBody> tower_service::Service<http::Request<ReqBody>> for AccessService<S>
where
    S: tower_service::Service<http::Request<ReqBody>, Response = http::Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: Default + Send + 'static,
    ReqBody: Send + 'static,
{
    type Response = http::Response<ResBody>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<ReqBody>) -> Self::Future {
        let path = request.uri().path().to_owned();
        let span =
            tracing::info_span!("rpc", method = crate::telemetry::loggable_path(&path), caller = tracing::field::Empty);
        let peer_certs =
            request.extensions().get::<TlsConnectInfo<TcpConnectInfo>>().and_then(TlsConnectInfo::peer_certs);
        let peer_cert = peer_certs.as_ref().and_then(|certs| certs.first()).map(|der| der.as_ref());
        let authorization: Vec<&[u8]> =
            request.headers().get_all(http::header::AUTHORIZATION).iter().map(http::HeaderValue::as_bytes).collect();
        // In the span: the debug line of ignored credentials names the method.
        match span.in_scope(|| self.access.check(&path, &authorization, peer_cert)) {
            Err(refusal) => {
                if let Some(caller) = refusal.caller() {
                    span.record("caller", caller);
                    // The telemetry layer above logs the refused call with its caller.
                    crate::telemetry::record_caller_name(caller);
                }
                // A client over its rate keeps calling: one line per refused call at info level
                // would let it flood the log (the telemetry layer logs the call too).
                span.in_scope(|| match refusal {
                    Refusal::RateLimited { .. } => tracing::debug!(%refusal, "call refused"),
                    _ => tracing::info!(%refusal, "call refused"),
                });
                Box::pin(std::future::ready(Ok(Status::from(refusal).into_http())))
            }
            Ok(caller) => {
                if let Some(caller) = caller {
                    span.record("caller", caller.name.as_str());
                    // The telemetry layer above logs the RPC with its caller.
                    crate::telemetry::record_caller(&caller);
                    request.extensions_mut().insert(caller);
                }
                // The clone may not be ready; the one `poll_ready` readied is used.
                let clone = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, clone);
                Box::pin(inner.call(request).instrument(span))
            }
        }
    }
}

/// File of the data directory that holds the local callers' tokens.
pub const LOCAL_TOKENS_FILE: &str = "local-tokens.toml";

/// Bearer tokens for one caller of each role, kept in `DATA_DIR/local-tokens.toml` (mode
/// 0600), so that a server on loopback and the command line on the same machine work with no
/// set-up. The server registers them as `local-issuer`, `local-checkpoint` and `local-admin`.
#[derive(Clone, PartialEq, Eq)]
pub struct LocalTokens {
    tokens: BTreeMap<Role, String>,
}

impl fmt::Debug for LocalTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalTokens").field("roles", &self.tokens.keys().collect::<Vec<_>>()).finish()
    }
}

/// The local tokens file could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LocalTokensError {
    /// Reading or writing failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not what the server writes.
    #[error("{path}: {problem}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
}

impl LocalTokens {
    /// Reads `DATA_DIR/local-tokens.toml`.
    pub fn read(data_dir: &Path) -> Result<Self, LocalTokensError> {
        let path = data_dir.join(LOCAL_TOKENS_FILE);
        let text = zeroize::Zeroizing::new(
            std::fs::read_to_string(&path).map_err(|source| LocalTokensError::Io { path: path.clone(), source })?,
        );
        let invalid = |problem: String| LocalTokensError::Invalid { path: path.clone(), problem };
        let tokens: BTreeMap<Role, String> = toml::from_str(&text).map_err(|e| invalid(e.message().to_owned()))?;
        for role in Role::ALL {
            match tokens.get(&role) {
                Some(token) if token.len() >= 32 && token.bytes().all(|b| b.is_ascii_graphic()) => {}
                Some(_) => return Err(invalid(format!("the {role} token must be 32 or more printable characters"))),
                None => return Err(invalid(format!("no {role} token"))),
            }
        }
        Ok(Self { tokens })
    }

    /// Reads the tokens, writing new random ones first if the file does not exist. Returns
    /// the tokens and whether this call created the file.
    pub fn provision(data_dir: &Path) -> Result<(Self, Option<PathBuf>), LocalTokensError> {
        let path = data_dir.join(LOCAL_TOKENS_FILE);
        if path.exists() {
            return Ok((Self::read(data_dir)?, None));
        }
        let tokens: BTreeMap<Role, String> = Role::ALL.iter().map(|&role| (role, new_token())).collect();
        let mut text = String::from(
            "# Bearer tokens of the local callers (local-issuer, local-checkpoint, local-admin), written on\n\
             # first start for the command line on this machine. Delete the file to get new ones.\n",
        );
        for (role, token) in &tokens {
            text.push_str(&format!("{role} = \"{token}\"\n"));
        }
        let io = |source| LocalTokensError::Io { path: path.clone(), source };
        std::fs::create_dir_all(data_dir).map_err(io)?;
        crate::datadir::create_private_file(&path, text.as_bytes()).map_err(io)?;
        Ok((Self { tokens }, Some(path)))
    }

    /// The token of a role.
    pub fn token(&self, role: Role) -> Option<&str> {
        self.tokens.get(&role).map(String::as_str)
    }
}

/// 32 random bytes, base64url.
fn new_token() -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(name: &str, role: Role, token: Option<&str>, cert: Option<&[u8]>, rate: u32) -> ClientSettings {
        ClientSettings {
            name: name.to_owned(),
            role,
            token_sha256: token.map(|t| sha256(t.as_bytes())),
            cert_sha256: cert.map(sha256),
            rate_per_second: rate,
        }
    }

    fn access() -> AccessControl {
        AccessControl::new(
            &[
                client("backend", Role::Issuer, Some("issuer-token"), None, 1000),
                client("gate", Role::Checkpoint, None, Some(b"gate-cert"), 1000),
                client("ops", Role::Admin, Some("admin-token"), Some(b"ops-cert"), 1000),
            ],
            None,
            1000,
        )
    }

    const ISSUE: &str = "/epass.v1.IssuanceService/IssuePass";

    /// Every method of the proto files is in the table, and nothing else is.
    #[test]
    fn method_table_names_every_rpc_of_the_descriptor_set() {
        use prost::Message as _;
        let mut paths = Vec::new();
        for set in [crate::grpc::pb::FILE_DESCRIPTOR_SET, tonic_health::pb::FILE_DESCRIPTOR_SET] {
            let set = prost_types::FileDescriptorSet::decode(set).unwrap();
            for file in set.file {
                for service in &file.service {
                    for method in &service.method {
                        paths.push(format!("/{}.{}/{}", file.package(), service.name(), method.name()));
                    }
                }
            }
        }
        paths.push("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo".to_owned());
        assert_eq!(paths.len(), 13, "{paths:?}");
        for path in &paths {
            assert!(required(path).is_some(), "{path} is missing from the method table");
        }
        assert_eq!(required("/epass.v1.IssuanceService/Nope"), None);
        assert_eq!(required("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"), None);
    }

    #[test]
    fn tokens_certificates_and_roles() {
        let a = access();
        let issuer: &[&[u8]] = &[b"Bearer issuer-token"];
        assert_eq!(a.check(ISSUE, issuer, None).unwrap().unwrap().name, "backend");
        assert_eq!(a.check(ISSUE, &[b"bearer   issuer-token "], None).unwrap().unwrap().name, "backend");
        assert_eq!(a.check(ISSUE, &[], None), Err(Refusal::NoCredentials { method: ISSUE.to_owned() }));
        assert_eq!(a.check(ISSUE, &[b"Bearer nope"], None), Err(Refusal::UnknownToken));
        assert_eq!(a.check(ISSUE, &[b"Basic aXNzdWVy"], None), Err(Refusal::MalformedAuthorization));
        assert_eq!(a.check(ISSUE, &[b"Bearer "], None), Err(Refusal::MalformedAuthorization));
        assert!(matches!(a.check(ISSUE, &[b"Bearer admin-token"], None), Err(Refusal::WrongRole { .. })));
        let verify = "/epass.v1.CheckpointService/VerifyPass";
        assert_eq!(a.check(verify, &[], Some(b"gate-cert")).unwrap().unwrap().name, "gate");
        assert!(matches!(a.check(verify, &[], Some(b"stranger-cert")), Err(Refusal::NoCredentials { .. })));
        // Both credentials: they must agree.
        let revoke = "/epass.v1.IssuanceService/RevokePass";
        assert_eq!(a.check(revoke, &[b"Bearer admin-token"], Some(b"ops-cert")).unwrap().unwrap().name, "ops");
        assert_eq!(a.check(revoke, &[b"Bearer admin-token"], Some(b"gate-cert")), Err(Refusal::CredentialsDisagree));
        // An unmapped certificate next to a good token is only transport security.
        assert_eq!(a.check(revoke, &[b"Bearer admin-token"], Some(b"stranger")).unwrap().unwrap().name, "ops");
        // Regression (issue 12): of two authorization values the first one won silently.
        let twice: [&[u8]; 2] = [b"Bearer issuer-token", b"Bearer issuer-token"];
        assert_eq!(a.check(ISSUE, &twice, None), Err(Refusal::AmbiguousAuthorization { count: 2 }));
        let different: [&[u8]; 2] = [b"Bearer issuer-token", b"Bearer nope"];
        assert_eq!(a.check(ISSUE, &different, None), Err(Refusal::AmbiguousAuthorization { count: 2 }));
    }

    #[test]
    fn public_methods_need_nothing_and_refuse_no_credentials() {
        let a = access();
        let keys = "/epass.v1.KeyService/ListVerificationKeys";
        assert_eq!(a.check(keys, &[], None), Ok(None));
        assert_eq!(a.check(keys, &[b"Bearer issuer-token"], None).unwrap().unwrap().role, Role::Issuer);
        // Credentials that name nobody are ignored on public methods: a checkpoint whose token
        // was rotated still gets the keys and lists it verifies with.
        assert_eq!(a.check(keys, &[b"Bearer nope"], None), Ok(None));
        assert_eq!(a.check(keys, &[b"Basic aXNzdWVy"], None), Ok(None));
        assert_eq!(a.check(keys, &[b"Bearer issuer-token", b"Bearer admin-token"], None), Ok(None));
        assert_eq!(a.check(keys, &[b"Bearer admin-token"], Some(b"gate-cert")), Ok(None));
        assert!(matches!(a.check("/x.Y/Z", &[], None), Err(Refusal::UnknownMethod { .. })));
    }

    #[test]
    fn refusals_map_to_their_codes() {
        use tonic::Code;
        let cases = [
            (Refusal::UnknownMethod { path: "/a/b".into() }, Code::Unimplemented),
            (Refusal::MalformedAuthorization, Code::Unauthenticated),
            (Refusal::AmbiguousAuthorization { count: 2 }, Code::Unauthenticated),
            (Refusal::UnknownToken, Code::Unauthenticated),
            (Refusal::CredentialsDisagree, Code::Unauthenticated),
            (Refusal::NoCredentials { method: ISSUE.into() }, Code::Unauthenticated),
            (
                Refusal::WrongRole {
                    caller: "c".into(),
                    role: Role::Admin,
                    method: ISSUE.into(),
                    required: Role::Issuer,
                },
                Code::PermissionDenied,
            ),
            (
                Refusal::RateLimited { caller: "c".into(), per_second: 1, retry_after: Default::default() },
                Code::ResourceExhausted,
            ),
        ];
        for (refusal, code) in cases {
            assert_eq!(Status::from(refusal.clone()).code(), code, "{refusal}");
        }
    }

    #[test]
    fn a_burst_of_twice_the_rate_then_refusal_per_caller() {
        let a = AccessControl::new(
            &[
                client("slow", Role::Issuer, Some("slow-token"), None, 1),
                client("other", Role::Issuer, Some("other-token"), None, 1),
            ],
            None,
            1,
        );
        // A bucket of 2 starts full; nothing refills it within microseconds at 1 per second.
        for _ in 0..2 {
            a.check(ISSUE, &[b"Bearer slow-token"], None).unwrap();
        }
        let refusal = a.check(ISSUE, &[b"Bearer slow-token"], None).unwrap_err();
        assert!(matches!(refusal, Refusal::RateLimited { per_second: 1, .. }), "{refusal:?}");
        a.check(ISSUE, &[b"Bearer other-token"], None).expect("another caller has its own bucket");
    }

    #[test]
    fn dangerous_open_lets_everything_through_as_open() {
        let a = AccessControl::dangerous_open();
        let caller = a.check(ISSUE, &[], None).unwrap().unwrap();
        assert_eq!(caller, Caller { name: OPEN_CALLER.to_owned(), role: Role::Issuer });
        assert_eq!(a.check("/epass.v1.KeyService/GetTrustList", &[], None), Ok(None));
    }

    #[test]
    fn local_tokens_are_written_once_privately_and_registered() {
        let dir = tempfile::tempdir().unwrap();
        let (tokens, created) = LocalTokens::provision(dir.path()).unwrap();
        let path = created.expect("first call creates the file");
        let mode = std::fs::metadata(&path).unwrap().permissions();
        assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777, 0o600);
        let (again, created) = LocalTokens::provision(dir.path()).unwrap();
        assert!(created.is_none());
        assert_eq!(tokens, again);
        assert!(!format!("{tokens:?}").contains(tokens.token(Role::Admin).unwrap()), "Debug hides tokens");

        let a = AccessControl::new(&[], Some(&tokens), 10);
        for role in Role::ALL {
            let header = format!("Bearer {}", tokens.token(role).unwrap());
            let path = match role {
                Role::Issuer => ISSUE,
                Role::Checkpoint => "/epass.v1.CheckpointService/RecordEntry",
                Role::Admin => "/epass.v1.IssuanceService/RevokePass",
            };
            let caller = a.check(path, &[header.as_bytes()], None).unwrap().unwrap();
            assert_eq!(caller, Caller { name: role.local_caller().to_owned(), role });
        }
        std::fs::write(&path, "issuer = \"short\"\n").unwrap();
        assert!(matches!(LocalTokens::read(dir.path()), Err(LocalTokensError::Invalid { .. })));
    }
}
