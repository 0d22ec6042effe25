//! Configuration: a TOML file, then `EPASS_…` environment variables, then flags, each
//! overriding the one before; validated as a whole before anything is bound or opened.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::access::Role;

/// Exit code of a configuration error (EX_CONFIG of sysexits.h).
pub const EXIT_CONFIG: u8 = 64;

/// A setting that is wrong, named by its path in the file (`tls.cert`, `clients[2].role`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{setting}: {problem}")]
pub struct ConfigError {
    /// The setting.
    pub setting: String,
    /// What is wrong.
    pub problem: String,
}

impl ConfigError {
    fn new(setting: impl Into<String>, problem: impl ToString) -> Self {
        Self { setting: setting.into(), problem: problem.to_string() }
    }
}

/// The file as written; every field optional so that layers can be merged.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// `[server]`.
    #[serde(default)]
    pub server: ServerSection,
    /// `[tls]`.
    pub tls: Option<TlsSection>,
    /// `[[clients]]`.
    #[serde(default)]
    pub clients: Vec<ClientSection>,
    /// `[limits]`.
    #[serde(default)]
    pub limits: LimitsSection,
    /// `[metrics]`.
    pub metrics: Option<MetricsSection>,
    /// `[log]`.
    #[serde(default)]
    pub log: LogSection,
    /// `[issuance]`.
    #[serde(default)]
    pub issuance: IssuanceSection,
    /// `[database]`.
    #[serde(default)]
    pub database: DatabaseSection,
    /// `[retention]`.
    #[serde(default)]
    pub retention: RetentionSection,
}

/// `[server]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    /// Address to listen on.
    pub listen: Option<String>,
    /// Data directory.
    pub data_dir: Option<PathBuf>,
    /// Signing key file instead of `DATA_DIR/signing-key.pem`.
    pub signing_key: Option<PathBuf>,
    /// Serve without TLS on a non-loopback address (only behind something that adds it).
    pub allow_insecure: Option<bool>,
}

/// `[tls]`: the server's certificate, and the CA of client certificates for mTLS.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// PEM CA certificates that client certificates must chain to; enables mTLS.
    pub client_ca: Option<PathBuf>,
}

/// `[[clients]]`: one caller and how it proves who it is.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientSection {
    /// Name, unique: it scopes idempotency keys and appears in logs and the audit trail.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// SHA-256 of its bearer token, 64 hex digits.
    pub token_sha256: Option<String>,
    /// SHA-256 of its client certificate (DER), 64 hex digits, for mTLS.
    pub cert_sha256: Option<String>,
    /// Requests per second this caller may make (overrides `limits.rate_per_second`).
    pub rate_per_second: Option<u32>,
}

/// `[limits]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    /// Largest request in bytes.
    pub max_request_bytes: Option<usize>,
    /// Longest deadline honoured, in seconds; longer or missing deadlines are cut to it.
    pub max_deadline_seconds: Option<u64>,
    /// Requests per second per caller, with a burst of twice that.
    pub rate_per_second: Option<u32>,
    /// Concurrent requests per connection.
    pub concurrency_per_connection: Option<usize>,
    /// HTTP/2 keepalive ping interval, seconds.
    pub keepalive_interval_seconds: Option<u64>,
    /// How long a keepalive ping may go unanswered, seconds.
    pub keepalive_timeout_seconds: Option<u64>,
    /// How long calls in flight may take to finish after a shutdown signal, seconds.
    pub shutdown_grace_seconds: Option<u64>,
}

/// `[metrics]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSection {
    /// Address of the Prometheus endpoint (`/metrics`).
    pub listen: String,
}

/// Log format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// `[log]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSection {
    /// Text or JSON.
    pub format: Option<LogFormat>,
    /// A `tracing` filter such as `info` or `epass=debug,info`.
    pub level: Option<String>,
}

/// `[issuance]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuanceSection {
    /// How old the upstream identity check may be, seconds.
    pub identity_check_max_age_seconds: Option<u64>,
    /// How long a signed status list is good for, seconds.
    pub status_list_lifetime_seconds: Option<u64>,
}

/// `[database]`: where passes are kept. Without a URL, `DATA_DIR/epass.sqlite3`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSection {
    /// A `postgres://` (or `postgresql://`) URL: PostgreSQL, which several servers may share.
    pub url: Option<String>,
    /// PostgreSQL connections one server opens (writes and reads together).
    pub pool_size: Option<u32>,
    /// How long a call waits for a pooled PostgreSQL connection, seconds.
    pub acquire_timeout_seconds: Option<u64>,
    /// How long one PostgreSQL statement may run, lock waits included, seconds.
    pub statement_timeout_seconds: Option<u64>,
}

/// `[retention]`: how long what the database holds is kept, and how the pruning task runs.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionSection {
    /// Whether `serve` runs the pruning task.
    pub enabled: Option<bool>,
    /// Audit rows of verifications (read-only calls), days.
    pub verification_audit_days: Option<u32>,
    /// Every other audit row (issue, revoke, entries, refusals), days.
    pub change_audit_days: Option<u32>,
    /// Scans (what answers a resent `RecordEntry`), days.
    pub scans_days: Option<u32>,
    /// The holder's names on a pass, days after it ended (expired, used or revoked).
    pub holder_names_days: Option<u32>,
    /// Status list events, days after their pass's validity ended.
    pub status_events_days: Option<u32>,
    /// How often the task runs, seconds.
    pub interval_seconds: Option<u64>,
    /// Rows one batch (one short transaction) removes at most.
    pub batch_rows: Option<u32>,
}

/// Settings given as environment variables or flags; `None` leaves the file's value.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--listen` / `EPASS_LISTEN`.
    pub listen: Option<String>,
    /// `--data-dir` / `EPASS_DATA_DIR`.
    pub data_dir: Option<PathBuf>,
    /// `--signing-key` / `EPASS_SIGNING_KEY`.
    pub signing_key: Option<PathBuf>,
    /// `--allow-insecure` / `EPASS_ALLOW_INSECURE`.
    pub allow_insecure: Option<bool>,
    /// `--metrics-listen` / `EPASS_METRICS_LISTEN`.
    pub metrics_listen: Option<String>,
    /// `--log-format` / `EPASS_LOG_FORMAT`.
    pub log_format: Option<LogFormat>,
    /// `--identity-check-max-age` / `EPASS_IDENTITY_CHECK_MAX_AGE`.
    pub identity_check_max_age_seconds: Option<u64>,
    /// `--database-url` / `EPASS_DATABASE_URL`.
    pub database_url: Option<String>,
}

/// A PostgreSQL URL, checked. It may carry a password, so it is shown only redacted
/// (`Display` and `Debug`); [`DatabaseUrl::expose`] gives it whole, to connect with.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    /// Checks that `text` is a `postgres://` or `postgresql://` URL that the driver can read
    /// (without connecting). The error never quotes the URL, which may hold a password.
    pub fn parse(text: &str) -> Result<Self, String> {
        let scheme = text.split_once("://").map(|(scheme, _)| scheme.to_ascii_lowercase());
        match scheme.as_deref() {
            Some("postgres" | "postgresql") => {}
            Some(other) => {
                return Err(format!(
                    "scheme {other:?} is not supported: use a postgres:// URL, or no URL for DATA_DIR/epass.sqlite3"
                ))
            }
            None => return Err("must be a postgres:// URL (postgres://USER:PASSWORD@HOST:PORT/DATABASE)".to_owned()),
        }
        text.parse::<sqlx::postgres::PgConnectOptions>()
            .map_err(|e| format!("not a usable PostgreSQL URL ({})", redact_url(&e.to_string())))?;
        Ok(Self(text.to_owned()))
    }

    /// The URL as given, password included: for connecting, never for printing.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&redact_url(&self.0))
    }
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DatabaseUrl({self})")
    }
}

/// `text` with the password of every URL in it replaced by `***`: the one in the user
/// information (`user:secret@host`) and a `password=` query parameter.
pub fn redact_url(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("://") {
        let (before, after) = rest.split_at(start + 3);
        out.push_str(before);
        let authority_end = after.find(['/', '?', '#', ' ', '"']).unwrap_or(after.len());
        let authority = &after[..authority_end];
        match authority.rfind('@') {
            Some(at) => match authority[..at].split_once(':') {
                Some((user, _password)) => {
                    out.push_str(user);
                    out.push_str(":***");
                    out.push_str(&authority[at..]);
                }
                None => out.push_str(authority),
            },
            None => out.push_str(authority),
        }
        rest = &after[authority_end..];
    }
    out.push_str(rest);
    redact_query_password(&out)
}

fn redact_query_password(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.to_ascii_lowercase().find("password=") {
        let preceded = start == 0 || matches!(rest.as_bytes()[start - 1], b'?' | b'&');
        let (before, after) = rest.split_at(start + "password=".len());
        out.push_str(before);
        if preceded {
            let end = after.find(['&', '#', ' ', '"']).unwrap_or(after.len());
            out.push_str("***");
            rest = &after[end..];
        } else {
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// Where passes are kept, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseSettings {
    /// PostgreSQL; `None`: SQLite at `DATA_DIR/epass.sqlite3`.
    pub url: Option<DatabaseUrl>,
    /// PostgreSQL connections one server opens, writes and reads together (plus one, for a
    /// moment at start, to check and apply migrations).
    pub pool_size: u32,
    /// How long a call waits for a pooled PostgreSQL connection.
    pub acquire_timeout: Duration,
    /// How long one PostgreSQL statement may run, lock waits included.
    pub statement_timeout: Duration,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        let defaults = crate::store::PostgresSettings::default();
        Self {
            url: None,
            pool_size: defaults.max_connections + defaults.read_connections,
            acquire_timeout: defaults.acquire_timeout,
            statement_timeout: defaults.statement_timeout,
        }
    }
}

impl DatabaseSettings {
    /// The PostgreSQL store's settings: a third of the pool (at least one connection) reads,
    /// so that verification never waits for a connection held by writes; the rest writes.
    pub fn postgres(&self) -> crate::store::PostgresSettings {
        let read_connections = (self.pool_size / 3).max(1);
        crate::store::PostgresSettings {
            max_connections: self.pool_size - read_connections,
            read_connections,
            acquire_timeout: self.acquire_timeout,
            statement_timeout: self.statement_timeout,
        }
    }
}

/// Retention, checked: each period in whole days.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionSettings {
    /// Whether `serve` runs the pruning task.
    pub enabled: bool,
    /// Audit rows of verifications are kept this many days after the call.
    pub verification_audit_days: u32,
    /// Other audit rows are kept this many days after the call.
    pub change_audit_days: u32,
    /// Scans are kept this many days after the scan.
    pub scans_days: u32,
    /// A pass keeps the holder's names this many days after it ended.
    pub holder_names_days: u32,
    /// Status events are kept this many days after their pass's validity ended (at least 1:
    /// status lists carry events up to the clock tolerance past it).
    pub status_events_days: u32,
    /// How often the pruning task runs.
    pub interval: Duration,
    /// Rows one batch removes at most.
    pub batch_rows: u32,
}

impl Default for RetentionSettings {
    fn default() -> Self {
        // README, "What is kept, and for how long", says why.
        Self {
            enabled: true,
            verification_audit_days: 90,
            change_audit_days: 1825,
            scans_days: 90,
            holder_names_days: 30,
            status_events_days: 7,
            interval: Duration::from_secs(3600),
            batch_rows: 100,
        }
    }
}

/// The longest retention period accepted, days (a century).
const MAX_RETENTION_DAYS: u32 = 36_500;

fn resolve_retention(section: RetentionSection) -> Result<RetentionSettings, ConfigError> {
    let RetentionSection {
        enabled,
        verification_audit_days,
        change_audit_days,
        scans_days,
        holder_names_days,
        status_events_days,
        interval_seconds,
        batch_rows,
    } = section;
    let defaults = RetentionSettings::default();
    let days = |setting: &str, value: Option<u32>, least: u32, default: u32| match value {
        None => Ok(default),
        Some(n) if (least..=MAX_RETENTION_DAYS).contains(&n) => Ok(n),
        Some(_) => Err(ConfigError::new(setting, format!("must be between {least} and {MAX_RETENTION_DAYS} days"))),
    };
    Ok(RetentionSettings {
        enabled: enabled.unwrap_or(defaults.enabled),
        verification_audit_days: days(
            "retention.verification_audit_days",
            verification_audit_days,
            1,
            defaults.verification_audit_days,
        )?,
        change_audit_days: days("retention.change_audit_days", change_audit_days, 1, defaults.change_audit_days)?,
        scans_days: days("retention.scans_days", scans_days, 1, defaults.scans_days)?,
        holder_names_days: days("retention.holder_names_days", holder_names_days, 0, defaults.holder_names_days)?,
        // Not 0: a list carries an event until the clock tolerance after its pass's end.
        status_events_days: days("retention.status_events_days", status_events_days, 1, defaults.status_events_days)?,
        interval: seconds_in("retention.interval_seconds", interval_seconds, 1..=86_400, defaults.interval)?,
        batch_rows: match batch_rows {
            None => defaults.batch_rows,
            Some(n) if (1..=10_000).contains(&n) => n,
            Some(_) => return Err(ConfigError::new("retention.batch_rows", "must be between 1 and 10000")),
        },
    })
}

/// TLS settings, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// Certificate chain, PEM.
    pub cert_pem: Vec<u8>,
    /// Private key, PEM.
    pub key_pem: Vec<u8>,
    /// Client CA, PEM, when mTLS is on.
    pub client_ca_pem: Option<Vec<u8>>,
}

/// A configured caller, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientSettings {
    /// Name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// SHA-256 of its bearer token.
    pub token_sha256: Option<[u8; 32]>,
    /// SHA-256 of its client certificate.
    pub cert_sha256: Option<[u8; 32]>,
    /// Its rate limit, requests per second.
    pub rate_per_second: u32,
}

/// The limits, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest request in bytes.
    pub max_request_bytes: usize,
    /// Longest deadline honoured.
    pub max_deadline: Duration,
    /// Requests per second per caller (default).
    pub rate_per_second: u32,
    /// Concurrent requests per connection.
    pub concurrency_per_connection: usize,
    /// Keepalive ping interval.
    pub keepalive_interval: Duration,
    /// Keepalive ping timeout.
    pub keepalive_timeout: Duration,
    /// Grace period for calls in flight at shutdown.
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            // The largest legitimate request, an application, is under 2 KiB.
            max_request_bytes: 16 * 1024,
            max_deadline: Duration::from_secs(30),
            rate_per_second: 50,
            concurrency_per_connection: 64,
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(20),
        }
    }
}

/// The whole configuration, checked: what `serve` runs with.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Signing key override.
    pub signing_key: Option<PathBuf>,
    /// TLS, if configured.
    pub tls: Option<TlsSettings>,
    /// Plaintext on a non-loopback address was asked for explicitly.
    pub allow_insecure: bool,
    /// Configured callers (more are added from the data directory's token file).
    pub clients: Vec<ClientSettings>,
    /// Limits.
    pub limits: Limits,
    /// Prometheus endpoint, if any.
    pub metrics_listen: Option<SocketAddr>,
    /// Log format.
    pub log_format: LogFormat,
    /// Log filter.
    pub log_level: String,
    /// Identity check bound.
    pub identity_check_max_age: Duration,
    /// Status list lifetime.
    pub status_list_lifetime: Duration,
    /// The database.
    pub database: DatabaseSettings,
    /// What is kept for how long, and the pruning task.
    pub retention: RetentionSettings,
}

/// Default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:50051";
/// Default data directory.
pub const DEFAULT_DATA_DIR: &str = "./epass-data";

/// Reads a configuration file.
pub fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text =
        std::fs::read_to_string(path).map_err(|e| ConfigError::new("config", format!("{}: {e}", path.display())))?;
    parse_file(&text).map_err(|mut error| {
        if error.setting == "config" {
            error.problem = format!("{}: {}", path.display(), error.problem);
        }
        error
    })
}

/// Parses the text of a configuration file. A value of the wrong type, an unknown variant or
/// an unknown key is named by its dotted path (`limits.rate_per_second`, `clients[0].role`,
/// `server.listen_typo`); only a file that is not TOML at all is `config`, with its line.
pub fn parse_file(text: &str) -> Result<FileConfig, ConfigError> {
    serde_path_to_error::deserialize(toml::Deserializer::new(text)).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        let message = inner.message();
        // serde names an unknown key in its message; the path may or may not end with it.
        if let Some((key, rest)) = message.strip_prefix("unknown field `").and_then(|rest| rest.split_once('`')) {
            let setting = match path.as_str() {
                "." => key.to_owned(),
                path if path == key || path.ends_with(&format!(".{key}")) => path.to_owned(),
                path => format!("{path}.{key}"),
            };
            return ConfigError::new(setting, format!("unknown setting{rest}"));
        }
        if path != "." {
            return ConfigError::new(path, message);
        }
        match inner.span() {
            Some(span) => {
                let line = text.get(..span.start).map_or(1, |before| before.matches('\n').count() + 1);
                ConfigError::new("config", format!("line {line}: {message}"))
            }
            None => ConfigError::new("config", message),
        }
    })
}

fn hash_setting(setting: &str, hex_text: &str) -> Result<[u8; 32], ConfigError> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_text, &mut out)
        .map_err(|_| ConfigError::new(setting, "must be 64 hex digits (SHA-256)"))?;
    Ok(out)
}

/// What a PEM file of the TLS settings must hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PemContents {
    /// At least one `CERTIFICATE` block.
    Certificates,
    /// A private key block (`PRIVATE KEY`, `RSA PRIVATE KEY`, `EC PRIVATE KEY`).
    PrivateKey,
}

fn read_pem(setting: &str, path: &Path, contents: PemContents) -> Result<Vec<u8>, ConfigError> {
    let bytes = std::fs::read(path).map_err(|e| ConfigError::new(setting, format!("{}: {e}", path.display())))?;
    let text = String::from_utf8_lossy(&bytes);
    if !text.contains("-----BEGIN") {
        return Err(ConfigError::new(setting, format!("{}: not a PEM file", path.display())));
    }
    // Checked here so that the error names the setting: TLS itself would say only "peer sent
    // no certificates" or "private key not found".
    let (found, wanted) = match contents {
        PemContents::Certificates => (text.contains("-----BEGIN CERTIFICATE-----"), "a certificate"),
        PemContents::PrivateKey => {
            (text.lines().any(|l| l.starts_with("-----BEGIN ") && l.ends_with("PRIVATE KEY-----")), "a private key")
        }
    };
    if !found {
        return Err(ConfigError::new(
            setting,
            format!("{}: holds no {} in PEM", path.display(), wanted.trim_start_matches("a ")),
        ));
    }
    Ok(bytes)
}

fn seconds_in(
    setting: &str,
    value: Option<u64>,
    range: std::ops::RangeInclusive<u64>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    match value {
        None => Ok(default),
        Some(seconds) if range.contains(&seconds) => Ok(Duration::from_secs(seconds)),
        Some(_) => Err(ConfigError::new(setting, format!("must be between {} and {}", range.start(), range.end()))),
    }
}

fn positive(setting: &str, value: Option<u64>, default: Duration) -> Result<Duration, ConfigError> {
    match value {
        None => Ok(default),
        Some(0) => Err(ConfigError::new(setting, "must be greater than 0")),
        Some(seconds) => Ok(Duration::from_secs(seconds)),
    }
}

impl FileConfig {
    /// Applies overrides (environment and flags), then checks every setting.
    pub fn resolve(self, overrides: Overrides) -> Result<Settings, ConfigError> {
        let Self { server, tls, clients, limits, metrics, log, issuance, database, retention } = self;
        let listen_text = overrides.listen.or(server.listen).unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
        let listen: SocketAddr = listen_text.parse().map_err(|_| {
            ConfigError::new("server.listen", format!("{listen_text:?} is not an address such as 127.0.0.1:50051"))
        })?;
        let allow_insecure = overrides.allow_insecure.or(server.allow_insecure).unwrap_or(false);

        let tls = match tls {
            None => None,
            Some(TlsSection { cert, key, client_ca }) => Some(TlsSettings {
                cert_pem: read_pem("tls.cert", &cert, PemContents::Certificates)?,
                key_pem: read_pem("tls.key", &key, PemContents::PrivateKey)?,
                client_ca_pem: client_ca
                    .map(|path| read_pem("tls.client_ca", &path, PemContents::Certificates))
                    .transpose()?,
            }),
        };
        if tls.is_none() && !listen.ip().is_loopback() && !allow_insecure {
            return Err(ConfigError::new(
                "server.listen",
                format!("{listen} is not a loopback address and no [tls] is configured; configure TLS, or set server.allow_insecure = true if a proxy in front adds it"),
            ));
        }

        let LimitsSection {
            max_request_bytes,
            max_deadline_seconds,
            rate_per_second,
            concurrency_per_connection,
            keepalive_interval_seconds,
            keepalive_timeout_seconds,
            shutdown_grace_seconds,
        } = limits;
        let defaults = Limits::default();
        let limits = Limits {
            max_request_bytes: match max_request_bytes {
                Some(n) if !(1024..=4 << 20).contains(&n) => {
                    return Err(ConfigError::new("limits.max_request_bytes", "must be between 1024 and 4194304"))
                }
                Some(n) => n,
                None => defaults.max_request_bytes,
            },
            max_deadline: positive("limits.max_deadline_seconds", max_deadline_seconds, defaults.max_deadline)?,
            rate_per_second: match rate_per_second {
                Some(0) => return Err(ConfigError::new("limits.rate_per_second", "must be greater than 0")),
                Some(n) => n,
                None => defaults.rate_per_second,
            },
            concurrency_per_connection: match concurrency_per_connection {
                Some(0) => return Err(ConfigError::new("limits.concurrency_per_connection", "must be greater than 0")),
                Some(n) => n,
                None => defaults.concurrency_per_connection,
            },
            keepalive_interval: positive(
                "limits.keepalive_interval_seconds",
                keepalive_interval_seconds,
                defaults.keepalive_interval,
            )?,
            keepalive_timeout: positive(
                "limits.keepalive_timeout_seconds",
                keepalive_timeout_seconds,
                defaults.keepalive_timeout,
            )?,
            shutdown_grace: positive("limits.shutdown_grace_seconds", shutdown_grace_seconds, defaults.shutdown_grace)?,
        };

        let mut names = BTreeSet::new();
        let mut checked_clients = Vec::with_capacity(clients.len());
        for (i, ClientSection { name, role, token_sha256, cert_sha256, rate_per_second }) in
            clients.into_iter().enumerate()
        {
            let at = |field: &str| format!("clients[{i}].{field}");
            if name.is_empty() || name.len() > 64 || !name.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(ConfigError::new(at("name"), "must be 1 to 64 printable ASCII characters"));
            }
            if !names.insert(name.clone()) {
                return Err(ConfigError::new(at("name"), format!("{name:?} appears twice")));
            }
            let token_sha256 = token_sha256.map(|h| hash_setting(&at("token_sha256"), &h)).transpose()?;
            let cert_sha256 = cert_sha256.map(|h| hash_setting(&at("cert_sha256"), &h)).transpose()?;
            if token_sha256.is_none() && cert_sha256.is_none() {
                return Err(ConfigError::new(at("token_sha256"), "a client needs token_sha256 or cert_sha256"));
            }
            if cert_sha256.is_some() && tls.as_ref().is_none_or(|t| t.client_ca_pem.is_none()) {
                return Err(ConfigError::new(at("cert_sha256"), "client certificates need tls.client_ca"));
            }
            if rate_per_second == Some(0) {
                return Err(ConfigError::new(at("rate_per_second"), "must be greater than 0"));
            }
            checked_clients.push(ClientSettings {
                name,
                role,
                token_sha256,
                cert_sha256,
                rate_per_second: rate_per_second.unwrap_or(limits.rate_per_second),
            });
        }

        let metrics_listen = match overrides.metrics_listen.or(metrics.map(|m| m.listen)) {
            None => None,
            Some(text) => Some(
                text.parse::<SocketAddr>()
                    .map_err(|_| ConfigError::new("metrics.listen", format!("{text:?} is not an address")))?,
            ),
        };
        // Port 0 asks for any free port: two of them never clash.
        if metrics_listen == Some(listen) && listen.port() != 0 {
            return Err(ConfigError::new("metrics.listen", "must differ from server.listen"));
        }

        let log_level = log.level.unwrap_or_else(|| "info".to_owned());
        if tracing_subscriber::EnvFilter::try_new(&log_level).is_err() {
            return Err(ConfigError::new("log.level", format!("{log_level:?} is not a log filter")));
        }

        let database = resolve_database(database, overrides.database_url)?;
        let retention = resolve_retention(retention)?;

        let IssuanceSection { identity_check_max_age_seconds, status_list_lifetime_seconds } = issuance;
        Ok(Settings {
            listen,
            data_dir: overrides.data_dir.or(server.data_dir).unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
            signing_key: overrides.signing_key.or(server.signing_key),
            tls,
            allow_insecure,
            clients: checked_clients,
            limits,
            metrics_listen,
            log_format: overrides.log_format.or(log.format).unwrap_or_default(),
            log_level,
            identity_check_max_age: positive(
                "issuance.identity_check_max_age_seconds",
                overrides.identity_check_max_age_seconds.or(identity_check_max_age_seconds),
                Duration::from_secs(600),
            )?,
            status_list_lifetime: positive(
                "issuance.status_list_lifetime_seconds",
                status_list_lifetime_seconds,
                Duration::from_secs(3600),
            )?,
            database,
            retention,
        })
    }
}

/// Most connections one server may open: PostgreSQL's own default `max_connections` is 100.
const MAX_POOL_SIZE: u32 = 1000;

fn resolve_database(section: DatabaseSection, url_override: Option<String>) -> Result<DatabaseSettings, ConfigError> {
    let DatabaseSection { url, pool_size, acquire_timeout_seconds, statement_timeout_seconds } = section;
    let defaults = DatabaseSettings::default();
    // An empty value (EPASS_DATABASE_URL= in a unit file) means none, as if unset.
    let url = url_override.or(url).filter(|url| !url.trim().is_empty());
    Ok(DatabaseSettings {
        url: url
            .map(|text| DatabaseUrl::parse(text.trim()))
            .transpose()
            .map_err(|e| ConfigError::new("database.url", e))?,
        pool_size: match pool_size {
            None => defaults.pool_size,
            Some(n) if (2..=MAX_POOL_SIZE).contains(&n) => n,
            Some(_) => {
                return Err(ConfigError::new("database.pool_size", format!("must be between 2 and {MAX_POOL_SIZE}")))
            }
        },
        acquire_timeout: seconds_in(
            "database.acquire_timeout_seconds",
            acquire_timeout_seconds,
            1..=300,
            defaults.acquire_timeout,
        )?,
        statement_timeout: seconds_in(
            "database.statement_timeout_seconds",
            statement_timeout_seconds,
            1..=3600,
            defaults.statement_timeout,
        )?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Settings, ConfigError> {
        parse_file(text)?.resolve(Overrides::default())
    }

    #[test]
    fn empty_config_gives_loopback_defaults() {
        let s = parse("").unwrap();
        assert_eq!(s.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(s.limits, Limits::default());
        assert!(s.tls.is_none());
    }

    #[test]
    fn non_loopback_without_tls_is_refused_unless_allowed() {
        let err = parse("[server]\nlisten = \"0.0.0.0:50051\"\n").unwrap_err();
        assert_eq!(err.setting, "server.listen");
        assert!(parse("[server]\nlisten = \"0.0.0.0:50051\"\nallow_insecure = true\n").is_ok());
    }

    #[test]
    fn bad_settings_name_themselves() {
        let cases = [
            ("[server]\nlisten = \"nowhere\"\n", "server.listen"),
            ("[limits]\nrate_per_second = 0\n", "limits.rate_per_second"),
            ("[limits]\nmax_request_bytes = 10\n", "limits.max_request_bytes"),
            ("[[clients]]\nname = \"a\"\nrole = \"issuer\"\ntoken_sha256 = \"xyz\"\n", "clients[0].token_sha256"),
            ("[[clients]]\nname = \"a\"\nrole = \"issuer\"\n", "clients[0].token_sha256"),
            ("[metrics]\nlisten = \"127.0.0.1:50051\"\n", "metrics.listen"),
            ("[log]\nlevel = \"[[[\"\n", "log.level"),
            ("[tls]\ncert = \"/nonexistent.pem\"\nkey = \"/nonexistent.key\"\n", "tls.cert"),
            ("[database]\nurl = \"mysql://u:p@h/db\"\n", "database.url"),
            ("[database]\nurl = \"epass.sqlite3\"\n", "database.url"),
            ("[database]\npool_size = 1\n", "database.pool_size"),
            ("[database]\npool_size = 100000\n", "database.pool_size"),
            ("[database]\nacquire_timeout_seconds = 0\n", "database.acquire_timeout_seconds"),
            ("[database]\nstatement_timeout_seconds = 3601\n", "database.statement_timeout_seconds"),
            ("[retention]\nverification_audit_days = 0\n", "retention.verification_audit_days"),
            ("[retention]\nchange_audit_days = 36501\n", "retention.change_audit_days"),
            ("[retention]\nscans_days = 0\n", "retention.scans_days"),
            ("[retention]\nholder_names_days = 36501\n", "retention.holder_names_days"),
            ("[retention]\nstatus_events_days = 0\n", "retention.status_events_days"),
            ("[retention]\ninterval_seconds = 0\n", "retention.interval_seconds"),
            ("[retention]\nbatch_rows = 0\n", "retention.batch_rows"),
            ("[retention]\nbatch_rows = 10001\n", "retention.batch_rows"),
        ];
        for (text, setting) in cases {
            assert_eq!(parse(text).unwrap_err().setting, setting, "{text}");
        }
        let twice = format!(
            "{0}{0}",
            "[[clients]]\nname = \"a\"\nrole = \"admin\"\ntoken_sha256 = \"".to_owned() + &"ab".repeat(32) + "\"\n"
        );
        assert_eq!(parse(&twice).unwrap_err().setting, "clients[1].name");
        assert!(toml::from_str::<FileConfig>("[server]\nlisten_typo = 1\n").is_err(), "unknown keys are refused");
    }

    /// Regression (issue 12): type errors, unknown variants and unknown keys did not name the
    /// setting.
    #[test]
    fn type_errors_and_unknown_keys_name_their_dotted_path() {
        let client = "[[clients]]\nname = \"a\"\ntoken_sha256 = \"ab\"\n";
        let cases = [
            ("[limits]\nrate_per_second = \"fast\"\n", "limits.rate_per_second", "expected u32"),
            (&format!("{client}role = \"superuser\"\n"), "clients[0].role", "unknown variant `superuser`"),
            (&format!("{client}role = \"admin\"\n{client}role = 7\n"), "clients[1].role", "string"),
            ("[server]\nlisten_typo = 1\n", "server.listen_typo", "unknown setting, expected one of"),
            ("[limits]\nburst = 1\n", "limits.burst", "unknown setting"),
            ("[nonsense]\n", "nonsense", "unknown setting"),
            ("[log]\nformat = \"xml\"\n", "log.format", "unknown variant `xml`"),
            ("[server]\nallow_insecure = \"yes\"\n", "server.allow_insecure", "expected a boolean"),
            ("[retention]\nscans_days = \"forever\"\n", "retention.scans_days", "expected u32"),
            ("[retention]\nholder_names_days = -1\n", "retention.holder_names_days", "u32"),
            ("[retention]\nkeep = 1\n", "retention.keep", "unknown setting"),
        ];
        for (text, setting, problem) in cases {
            let error = parse(text).unwrap_err();
            assert_eq!(error.setting, setting, "{text}: {error}");
            assert!(error.problem.contains(problem), "{text}: {error}");
        }
        let error = parse("[limits\nrate_per_second = 1\n").unwrap_err();
        assert_eq!(error.setting, "config");
        assert!(error.problem.starts_with("line 1: "), "{error}");
    }

    #[test]
    fn tls_files_must_hold_what_their_setting_names() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key.pem");
        std::fs::write(&key, "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n").unwrap();
        let text = |cert: &Path, key: &Path| {
            format!("[tls]\ncert = {:?}\nkey = {:?}\n", cert.display().to_string(), key.display().to_string())
        };
        // A certificate file that holds only a key.
        let error = parse(&text(&key, &key)).unwrap_err();
        assert_eq!(error.setting, "tls.cert", "{error}");
        assert!(error.problem.contains("holds no certificate"), "{error}");
        let cert = dir.path().join("cert.pem");
        std::fs::write(&cert, "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").unwrap();
        let error = parse(&text(&cert, &cert)).unwrap_err();
        assert_eq!(error.setting, "tls.key", "{error}");
        assert!(error.problem.contains("holds no private key"), "{error}");
    }

    #[test]
    fn metrics_and_grpc_may_both_ask_for_any_free_port() {
        let file: FileConfig = toml::from_str("[metrics]\nlisten = \"127.0.0.1:0\"\n").unwrap();
        let s = file.resolve(Overrides { listen: Some("127.0.0.1:0".into()), ..Overrides::default() }).unwrap();
        assert_eq!(s.metrics_listen.map(|a| a.port()), Some(0));
    }

    #[test]
    fn overrides_win_over_the_file() {
        let file: FileConfig = toml::from_str("[server]\nlisten = \"127.0.0.1:1\"\ndata_dir = \"/a\"\n").unwrap();
        let s = file.resolve(Overrides { listen: Some("127.0.0.1:2".into()), ..Overrides::default() }).unwrap();
        assert_eq!(s.listen.port(), 2);
        assert_eq!(s.data_dir, PathBuf::from("/a"));
    }

    #[test]
    fn retention_has_defaults_and_takes_each_setting() {
        assert_eq!(parse("").unwrap().retention, RetentionSettings::default());
        let s = parse(
            "[retention]\nenabled = false\nverification_audit_days = 30\nchange_audit_days = 3650\n\
             scans_days = 14\nholder_names_days = 0\nstatus_events_days = 1\ninterval_seconds = 60\nbatch_rows = 250\n",
        )
        .unwrap();
        assert_eq!(
            s.retention,
            RetentionSettings {
                enabled: false,
                verification_audit_days: 30,
                change_audit_days: 3650,
                scans_days: 14,
                holder_names_days: 0,
                status_events_days: 1,
                interval: Duration::from_secs(60),
                batch_rows: 250,
            }
        );
    }

    #[test]
    fn no_database_url_keeps_sqlite() {
        let s = parse("").unwrap();
        assert_eq!(s.database, DatabaseSettings::default());
        assert!(s.database.url.is_none());
        assert_eq!(s.database.postgres(), crate::store::PostgresSettings::default());
    }

    #[test]
    fn a_postgres_url_selects_postgres_and_the_flag_wins() {
        let file: FileConfig = toml::from_str(
            "[database]\nurl = \"postgres://file@db/epass\"\npool_size = 6\nacquire_timeout_seconds = 2\nstatement_timeout_seconds = 9\n",
        )
        .unwrap();
        let s = file.clone().resolve(Overrides::default()).unwrap();
        assert_eq!(s.database.url.as_ref().map(DatabaseUrl::expose), Some("postgres://file@db/epass"));
        let pg = s.database.postgres();
        assert_eq!((pg.max_connections, pg.read_connections), (4, 2));
        assert_eq!((pg.acquire_timeout, pg.statement_timeout), (Duration::from_secs(2), Duration::from_secs(9)));
        let flag = Overrides { database_url: Some("postgresql://flag@db/epass".into()), ..Overrides::default() };
        let s = file.resolve(flag).unwrap();
        assert_eq!(s.database.url.as_ref().map(DatabaseUrl::expose), Some("postgresql://flag@db/epass"));
    }

    #[test]
    fn passwords_are_never_shown() {
        let url = DatabaseUrl::parse("postgres://epass:s3cret@db.example:5432/epass?sslmode=require").unwrap();
        assert_eq!(url.to_string(), "postgres://epass:***@db.example:5432/epass?sslmode=require");
        assert!(!format!("{url:?}").contains("s3cret"));
        let query = DatabaseUrl::parse("postgres://epass@db/epass?password=s3cret&sslmode=disable").unwrap();
        assert_eq!(query.to_string(), "postgres://epass@db/epass?password=***&sslmode=disable");
        assert_eq!(redact_url("postgres://db/epass"), "postgres://db/epass");
        let err = parse("[database]\nurl = \"mysql://root:s3cret@db/epass\"\n").unwrap_err();
        assert!(!err.to_string().contains("s3cret"), "{err}");
    }
}
