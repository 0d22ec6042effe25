//! The `epass` command line: serve, keygen, issue, verify (online, or offline with a trust
//! list), admit, revoke, trust-list build and inspect, fetch, audit, config check.
//!
//! Client commands authenticate with a bearer token: `--token`/`EPASS_TOKEN`, or, for a
//! server on this machine, the token of the command's role in `DATA_DIR/local-tokens.toml`.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context as _};
use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};
use serde_json::json;
use tonic::transport::Channel;

use crate::access::{LocalTokens, Role};
use crate::clock::{Clock, SystemClock};
use crate::config::EXIT_CONFIG;
use crate::datadir::{read_signing_key, read_verification_key};
use crate::grpc::pb;
use epass_core::keys::{KeyRing, KeyStatus, VerificationKey};
use epass_core::offline::{OfflineContext, OfflineVerdict, Outcome, StatusCheck};
use epass_core::pass::TransportMode;
use epass_core::policy::IssuancePolicy;
use epass_core::status::{StatusList, StatusListError};
use epass_core::trust::{TrustList, TrustListError};
use epass_core::verify::{CheckTime, Rejection};

/// Exit code of an accepted pass, and of a trust list that is valid and current.
const EXIT_ACCEPTED: u8 = 0;
/// Exit code of a rejected pass, and of a trust list that is authentic but stale (or older
/// than the one held).
const EXIT_REJECTED: u8 = 1;
/// Exit code of any error, and of a trust list whose signature or format is bad.
pub const EXIT_ERROR: u8 = 2;
/// Exit code of an offline check whose own trust list does not allow a decision.
const EXIT_CANNOT_DECIDE: u8 = 3;

/// Issues and verifies one-time electronic temporary passes.
#[derive(Debug, Parser)]
#[command(name = "epass", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

impl Cli {
    /// Whether the command sets up logging itself: `serve` does, from its settings. For the
    /// others the caller sets it up (warnings to stderr).
    pub fn sets_up_logging(&self) -> bool {
        matches!(self.command, Command::Serve(_))
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs the gRPC server.
    Serve(ServeArgs),
    /// Writes a new Ed25519 signing key (PKCS#8 PEM, mode 0600) and prints its key id.
    Keygen(KeygenArgs),
    /// Asks a server for a pass.
    Issue(IssueArgs),
    /// Checks a pass without using it: online, or offline with a root key and trust list.
    ///
    /// Exit codes: 0 accepted, 1 rejected, 3 cannot decide (offline: the trust list is stale,
    /// rolled back or unusable, so the pass is neither accepted nor judged invalid), 2 errors.
    Verify(VerifyArgs),
    /// Checks a pass and records the entry (uses the pass up).
    Admit(AdmitArgs),
    /// Revokes a pass.
    Revoke(RevokeArgs),
    /// Builds or inspects a root-signed trust list.
    #[command(subcommand)]
    TrustList(TrustListCommand),
    /// Downloads the signed trust list and status list that offline verification needs.
    ///
    /// KeyService asks for no credentials. Files are replaced atomically, and only once
    /// everything asked for has arrived (and, with --root, checked).
    Fetch(FetchArgs),
    /// Prints the audit trail of a pass, oldest first: who issued, revoked, verified and
    /// admitted it, when and from where.
    ///
    /// Reads the data directory's database directly, read-only (the server may be running).
    Audit(AuditArgs),
    /// Checks a configuration file.
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Reads and checks a configuration file as `serve --config` would (without the
    /// environment's overrides), TLS files included.
    ///
    /// Exit codes: 0 good, 64 a bad setting (named on standard error).
    Check {
        /// The TOML file (see docs/epass.example.toml).
        file: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum TrustListCommand {
    /// Builds a trust list and signs it with the root key.
    ///
    /// Key periods (times are the issue times of the passes a key may sign, and the time until
    /// which those passes verify):
    ///
    /// - --active: signs passes issued from now for 365 days; they verify 7 days more (the
    ///   longest a pass lives). A key already in --previous keeps its earlier start.
    ///
    /// - --retired: a key already in --previous keeps its periods there, except that one that
    ///   was active stops signing now and its passes verify until now + 7 days at most. A new
    ///   one signs from the epoch until now, and its passes verify until now + 7 days.
    ///
    /// - --revoked: listed as revoked; nothing it signed is accepted, whatever its periods.
    ///
    /// - every other key of --previous is carried over, an active one retired as above;
    ///   revocations are never lifted.
    ///
    /// The sequence is --previous's + 1 (or 1); the list goes stale after --lifetime-days.
    Build(BuildArgs),
    /// Opens a trust list with the root key and shows it.
    ///
    /// Exit codes: 0 authentic and current, 1 authentic but stale (or older than
    /// --held-sequence), 2 bad signature or format (or any error).
    Inspect(InspectArgs),
}

#[derive(Debug, Args)]
struct BuildArgs {
    /// The root private key (PKCS#8 PEM) that signs the list.
    #[arg(long, value_name = "ROOT_KEY_PEM")]
    root: PathBuf,
    /// The key that signs passes (SPKI public key PEM, or a PKCS#8 private key PEM of which only
    /// the public half is used).
    #[arg(long, value_name = "KEY_PEM")]
    active: PathBuf,
    /// A key that no longer signs but whose passes still verify; repeatable.
    #[arg(long, value_name = "KEY_PEM")]
    retired: Vec<PathBuf>,
    /// A key none of whose passes may be accepted any more; repeatable.
    #[arg(long, value_name = "KEY_PEM")]
    revoked: Vec<PathBuf>,
    /// The list this one replaces: its keys are carried over and its sequence continued.
    #[arg(long, value_name = "OLD_LIST")]
    previous: Option<PathBuf>,
    /// The root public key that signed --previous, if not --root (after a root change).
    #[arg(long, value_name = "ROOT_KEY_PEM", requires = "previous")]
    previous_root: Option<PathBuf>,
    /// The list's sequence; must be above --previous's. Default: --previous's + 1, or 1.
    #[arg(long, value_name = "N")]
    sequence: Option<u64>,
    /// Days until the list goes stale; verifiers then cannot decide until they get a new one.
    #[arg(long, value_name = "DAYS", default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=3650))]
    lifetime_days: u32,
    /// Where to write the signed list.
    #[arg(long, short, value_name = "FILE")]
    out: PathBuf,
    /// Replace --out if it exists.
    #[arg(long)]
    force: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct InspectArgs {
    /// The signed trust list.
    file: PathBuf,
    /// The root public key (SPKI PEM, or the public half of a PKCS#8 private key PEM).
    #[arg(long, value_name = "ROOT_KEY_PEM")]
    root: PathBuf,
    /// The highest sequence held before: a lower one counts as not current (rollback).
    #[arg(long, value_name = "N")]
    held_sequence: Option<u64>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("lists").args(["trust_list", "status_list"]).required(true).multiple(true)))]
struct FetchArgs {
    #[command(flatten)]
    server: ServerArg,
    /// Where to write the signed trust list.
    #[arg(long, value_name = "FILE")]
    trust_list: Option<PathBuf>,
    /// Where to write the signed status list (revoked and used passes).
    #[arg(long, value_name = "FILE")]
    status_list: Option<PathBuf>,
    /// Ask only for the changes after status list sequence N: a delta, written as received,
    /// for verifiers that apply deltas themselves. `verify --offline` needs a full list.
    #[arg(long, value_name = "N", requires = "status_list")]
    since: Option<u64>,
    /// Check the lists against this root public key before writing anything: root signature,
    /// not stale, not older than the trust list already in the file, status list signed by a
    /// listed key.
    #[arg(long, value_name = "ROOT_KEY_PEM")]
    root: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// `serve`'s settings: a configuration file, then the environment, then these flags, each
/// overriding the one before (clap reads a flag or, failing that, its variable). Defaults are
/// the configuration's, so that a flag not given leaves the file's value.
#[derive(Debug, Args)]
struct ServeArgs {
    /// Configuration file (TOML; see docs/epass.example.toml).
    #[arg(long, env = "EPASS_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:50051].
    #[arg(long, env = "EPASS_LISTEN", value_name = "ADDRESS")]
    listen: Option<String>,
    /// Directory for the database, the keys, the hashing secret and the local tokens
    /// [default: ./epass-data].
    #[arg(long, env = "EPASS_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Signing key (PKCS#8 PEM) to use instead of DATA_DIR/signing-key.pem.
    #[arg(long, env = "EPASS_SIGNING_KEY")]
    signing_key: Option<PathBuf>,
    /// Serve without TLS on a non-loopback address (only behind a proxy that adds it).
    #[arg(long, env = "EPASS_ALLOW_INSECURE")]
    allow_insecure: bool,
    /// How old, in seconds, the upstream identity check may be [default: 600].
    #[arg(long, env = "EPASS_IDENTITY_CHECK_MAX_AGE", value_name = "SECONDS")]
    identity_check_max_age: Option<u64>,
    /// Log lines as text or one JSON object per line (to stderr; RUST_LOG sets the filter).
    #[arg(long, env = "EPASS_LOG_FORMAT", value_enum)]
    log_format: Option<crate::config::LogFormat>,
    /// Serve Prometheus metrics at http://ADDRESS/metrics.
    #[arg(long, env = "EPASS_METRICS_LISTEN", value_name = "ADDRESS")]
    metrics_listen: Option<SocketAddr>,
}

#[derive(Debug, Args)]
struct KeygenArgs {
    /// Where to write the private key.
    #[arg(long, short)]
    out: PathBuf,
}

#[derive(Debug, Args)]
struct ServerArg {
    /// The server's URL: http:// or, with --tls-ca, https://.
    #[arg(long, env = "EPASS_SERVER", default_value = "http://127.0.0.1:50051")]
    server: String,
    /// Bearer token. Without it, a server on this machine (loopback URL) is called with the
    /// token of the command's role from DATA_DIR/local-tokens.toml.
    #[arg(long, env = "EPASS_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Data directory of a server on this machine, for its local tokens.
    #[arg(long, env = "EPASS_DATA_DIR", default_value = "./epass-data")]
    data_dir: PathBuf,
    /// CA certificate (PEM) that signed the server's certificate, for https:// URLs.
    #[arg(long, env = "EPASS_TLS_CA", value_name = "PEM")]
    tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS.
    #[arg(long, env = "EPASS_TLS_CERT", value_name = "PEM", requires_all = ["tls_key", "tls_ca"])]
    tls_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, env = "EPASS_TLS_KEY", value_name = "PEM", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum SexArg {
    Female,
    Male,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum SituationArg {
    NotCarried,
    Expired,
    Lost,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ModeArg {
    Air,
    Rail,
    Road,
    Sea,
    Foot,
}

impl From<ModeArg> for TransportMode {
    fn from(mode: ModeArg) -> Self {
        match mode {
            ModeArg::Air => Self::Air,
            ModeArg::Rail => Self::Rail,
            ModeArg::Road => Self::Road,
            ModeArg::Sea => Self::Sea,
            ModeArg::Foot => Self::Foot,
        }
    }
}

fn mode_message(mode: ModeArg) -> pb::TransportMode {
    match mode {
        ModeArg::Air => pb::TransportMode::Air,
        ModeArg::Rail => pb::TransportMode::Rail,
        ModeArg::Road => pb::TransportMode::Road,
        ModeArg::Sea => pb::TransportMode::Sea,
        ModeArg::Foot => pb::TransportMode::Foot,
    }
}

#[derive(Debug, Args)]
struct IssueArgs {
    #[command(flatten)]
    server: ServerArg,
    /// Home Return Permit number.
    #[arg(long)]
    permit: String,
    /// Name in Latin letters as on the permit.
    #[arg(long, default_value = "")]
    name_latin: String,
    /// Name in Chinese characters as on the permit.
    #[arg(long, default_value = "")]
    name_chinese: String,
    /// Sex as on the permit.
    #[arg(long, value_enum)]
    sex: SexArg,
    /// The permit's expiry date, YYYY-MM-DD.
    #[arg(long)]
    permit_expiry: String,
    /// Why the permit is not at hand.
    #[arg(long, value_enum)]
    situation: SituationArg,
    /// Mainland mobile number, +86 and 11 digits.
    #[arg(long)]
    mobile: String,
    /// Allowed modes (air, rail); default both.
    #[arg(long, value_enum, value_delimiter = ',')]
    modes: Vec<ModeArg>,
    /// Idempotency key; a random one by default. Reuse it to retry safely.
    #[arg(long)]
    request_id: Option<String>,
    /// Reference of the identity check that preceded the application.
    #[arg(long, default_value = "cli")]
    check_reference: String,
    /// Write the QR code as PNG to this file.
    #[arg(long)]
    png: Option<PathBuf>,
    /// Write the QR code as SVG to this file.
    #[arg(long)]
    svg: Option<PathBuf>,
    /// Print JSON instead of text and the QR drawing.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct ScanArgs {
    /// The checkpoint's transport mode.
    #[arg(long, value_enum)]
    mode: ModeArg,
    /// The checkpoint's identifier.
    #[arg(long, env = "EPASS_CHECKPOINT", default_value = "cli")]
    checkpoint: String,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// Read the QR code from a PNG or JPEG image (a screenshot, a photo of the phone's screen,
    /// the PNG `issue --png` wrote) instead of taking its text.
    #[arg(long, value_name = "PNG_OR_JPEG", conflicts_with = "qr_text")]
    image: Option<PathBuf>,
    /// The QR text, or - to read it from standard input.
    #[arg(required_unless_present = "image")]
    qr_text: Option<String>,
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("offline_keys").args(["root", "key"])))]
struct VerifyArgs {
    #[command(flatten)]
    server: ServerArg,
    /// Verify here instead of asking a server: with --root and --trust-list (and --status-list
    /// for revocation and single use), or with raw --key files and no trust list.
    #[arg(long, requires = "offline_keys")]
    offline: bool,
    /// Offline: the root public key the trust list must be signed by (SPKI PEM, or the public
    /// half of a PKCS#8 private key PEM such as DATA_DIR/root-key.pem).
    #[arg(long, value_name = "ROOT_KEY_PEM", requires_all = ["offline", "trust_list"])]
    root: Option<PathBuf>,
    /// Offline: the root-signed trust list (from `epass fetch` or `epass trust-list build`).
    #[arg(long, value_name = "FILE", requires = "root")]
    trust_list: Option<PathBuf>,
    /// Offline: the full signed status list from `epass fetch`. Without it (or when it is stale
    /// or unusable) revocation and single use are not checked, and the output says so.
    #[arg(long, value_name = "FILE", requires = "root")]
    status_list: Option<PathBuf>,
    /// Offline: the highest trust list sequence this checkpoint has seen; a lower one is a
    /// rollback, and the verdict is "cannot decide".
    #[arg(long, value_name = "N", requires = "root")]
    held_sequence: Option<u64>,
    /// Offline: the highest status list sequence this checkpoint has used; a lower one may
    /// predate a use, so single use and revocation are not checked against it (rollback).
    #[arg(long, value_name = "N", requires = "status_list")]
    held_status_sequence: Option<u64>,
    /// Offline: how far this machine's clock may be off; widens the pass's window and the
    /// key's verification period by that much at both ends.
    #[arg(long, value_name = "SECONDS", default_value_t = 120, value_parser = clap::value_parser!(u32).range(0..=600))]
    tolerance: u32,
    /// Offline without a trust list: a public key file (SPKI PEM, or a PKCS#8 private key PEM)
    /// trusted as it is, with no periods; repeatable.
    #[arg(long, value_name = "KEY_PEM", requires = "offline")]
    key: Vec<PathBuf>,
    #[command(flatten)]
    scan: ScanArgs,
}

#[derive(Debug, Args)]
struct AdmitArgs {
    #[command(flatten)]
    server: ServerArg,
    /// Idempotency key of this scan; a random one by default.
    #[arg(long)]
    scan_id: Option<String>,
    #[command(flatten)]
    scan: ScanArgs,
}

#[derive(Debug, Args)]
struct RevokeArgs {
    #[command(flatten)]
    server: ServerArg,
    /// Why.
    #[arg(long, default_value = "")]
    reason: String,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// The pass id (32 hex digits).
    pass_id: String,
}

#[derive(Debug, Args)]
struct AuditArgs {
    /// The data directory whose database to read.
    #[arg(long, env = "EPASS_DATA_DIR", default_value = "./epass-data")]
    data_dir: PathBuf,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// The pass id (32 hex digits).
    pass_id: String,
}

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve(args) => serve(args).await,
        Command::Keygen(args) => keygen(&args),
        Command::Issue(args) => issue(args).await,
        Command::Verify(args) => verify(args).await,
        Command::Admit(args) => admit(args).await,
        Command::Revoke(args) => revoke(args).await,
        Command::TrustList(TrustListCommand::Build(args)) => build_trust_list_file(&args),
        Command::TrustList(TrustListCommand::Inspect(args)) => inspect_trust_list(&args),
        Command::Fetch(args) => fetch(args).await,
        Command::Audit(args) => audit(args).await,
        Command::Config(ConfigCommand::Check { file }) => Ok(config_check(&file)),
    }
}

/// The checked settings of a configuration file (or none) with `overrides`, TLS files parsed
/// as the server will use them.
fn checked_settings(
    file: Option<&Path>,
    overrides: crate::config::Overrides,
) -> Result<crate::config::Settings, crate::config::ConfigError> {
    use crate::config::ConfigError;
    let config = file.map(crate::config::read_file).transpose()?.unwrap_or_default();
    let settings = config.resolve(overrides)?;
    if let Some(tls) = &settings.tls {
        crate::server::check_tls(tls).map_err(|error| ConfigError {
            setting: "tls".to_owned(),
            problem: match error {
                crate::server::ServeError::Tls(problem) => problem,
                other => other.to_string(),
            },
        })?;
    }
    for (setting, value) in [
        ("issuance.identity_check_max_age_seconds", settings.identity_check_max_age),
        ("issuance.status_list_lifetime_seconds", settings.status_list_lifetime),
    ] {
        if TimeDelta::from_std(value).is_err() {
            return Err(ConfigError { setting: setting.to_owned(), problem: "too large".to_owned() });
        }
    }
    Ok(settings)
}

fn config_check(path: &Path) -> ExitCode {
    match checked_settings(Some(path), crate::config::Overrides::default()) {
        Ok(settings) => {
            println!(
                "{}: good (listen {}, {} clients, TLS {}, data directory {})",
                path.display(),
                settings.listen,
                settings.clients.len(),
                match &settings.tls {
                    None => "off",
                    Some(tls) if tls.client_ca_pem.is_some() => "on with client certificates",
                    Some(_) => "on",
                },
                settings.data_dir.display(),
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("config error: {error}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    // Parse, validate, bind, serve: nothing is opened or bound before the settings are good.
    let overrides = crate::config::Overrides {
        listen: args.listen,
        data_dir: args.data_dir,
        signing_key: args.signing_key,
        allow_insecure: args.allow_insecure.then_some(true),
        metrics_listen: args.metrics_listen.map(|address| address.to_string()),
        log_format: args.log_format,
        identity_check_max_age_seconds: args.identity_check_max_age,
    };
    let settings = match checked_settings(args.config.as_deref(), overrides) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("config error: {error}");
            return Ok(ExitCode::from(EXIT_CONFIG));
        }
    };
    crate::telemetry::init_logging(settings.log_format, &settings.log_level)?;
    let policy = IssuancePolicy {
        identity_check_max_age: TimeDelta::from_std(settings.identity_check_max_age)?,
        ..IssuancePolicy::default()
    };
    let data_dir = &settings.data_dir;
    let (mut state, created) =
        crate::server::open_state(data_dir, settings.signing_key.as_deref(), Arc::new(SystemClock), policy)
            .await
            .with_context(|| format!("opening data directory {}", data_dir.display()))?;
    state.status_list_lifetime = TimeDelta::from_std(settings.status_list_lifetime)?;
    for path in &created {
        tracing::info!(path = %path.display(), "created");
    }
    tracing::info!(key_id = %state.signer.key_id(), keys = state.keys.keys().len(), "signing key loaded");

    // With no callers configured, a server on loopback works out of the box for the command
    // line on the same machine, which reads the tokens from the data directory.
    let local_tokens = if settings.clients.is_empty() && settings.listen.ip().is_loopback() {
        let (tokens, created) = LocalTokens::provision(data_dir).context("local tokens")?;
        if let Some(path) = created {
            tracing::info!(path = %path.display(), "created (bearer tokens of local-issuer, local-checkpoint, local-admin)");
        }
        Some(tokens)
    } else {
        if settings.clients.is_empty() {
            tracing::warn!("no [[clients]] configured: only KeyService, health and reflection will answer");
        }
        None
    };
    let access =
        crate::access::AccessControl::new(&settings.clients, local_tokens.as_ref(), settings.limits.rate_per_second);
    tracing::info!(callers = ?access.caller_names(), tls = settings.tls.is_some(), "access control");

    let listener =
        tokio::net::TcpListener::bind(settings.listen).await.with_context(|| format!("binding {}", settings.listen))?;
    if settings.tls.is_none() && !settings.listen.ip().is_loopback() {
        tracing::warn!("serving without TLS on a non-loopback address (allow_insecure)");
    }
    let metrics = match settings.metrics_listen {
        None => None,
        Some(address) => Some(serve_metrics(address).await?),
    };
    tracing::info!(address = %listener.local_addr()?, "epass listening");
    let options = crate::server::ServeOptions { access, limits: settings.limits, tls: settings.tls };
    crate::server::run(listener, state, options, shutdown_signal()).await?;
    // Metrics stay up while calls in flight finish.
    if let Some(metrics) = metrics {
        metrics.abort();
    }
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// Binds the metrics listener, installs the recorder and serves `/metrics` in the background.
async fn serve_metrics(address: SocketAddr) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let listener =
        tokio::net::TcpListener::bind(address).await.with_context(|| format!("binding {address} for metrics"))?;
    let metrics = crate::telemetry::Metrics::install()?;
    tracing::info!(address = %listener.local_addr()?, "metrics at /metrics");
    Ok(tokio::spawn(async move {
        if let Err(error) = metrics.serve(listener, std::future::pending()).await {
            tracing::error!(%error, "metrics endpoint failed");
        }
    }))
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM");
            let _ = ctrl_c.await;
            return;
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term.recv() => {},
    }
    tracing::info!("shutting down");
}

fn keygen(args: &KeygenArgs) -> anyhow::Result<ExitCode> {
    let key = ed25519_dalek::SigningKey::from_bytes(&rand::random());
    crate::datadir::write_signing_key(&args.out, &key)?;
    let signer = epass_core::keys::PassSigner::from_signing_key(key);
    println!("{}", signer.key_id());
    eprintln!("wrote {} (public key {})", args.out.display(), hex::encode(signer.public_key()));
    Ok(ExitCode::SUCCESS)
}

/// Puts the bearer token, if any, on every call.
#[derive(Debug, Clone)]
struct Bearer(Option<tonic::metadata::AsciiMetadataValue>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request.metadata_mut().insert("authorization", value.clone());
        }
        Ok(request)
    }
}

type Connection = tonic::service::interceptor::InterceptedService<Channel, Bearer>;

/// Connects to the server, over TLS for https:// URLs, with the token for `role`.
async fn connect(server: &ServerArg, role: Option<Role>) -> anyhow::Result<Connection> {
    use tonic::transport::{Certificate, ClientTlsConfig, Identity};
    let mut endpoint =
        Channel::from_shared(server.server.clone()).with_context(|| format!("bad server URL {}", server.server))?;
    let https = endpoint.uri().scheme_str() == Some("https");
    match (&server.tls_ca, https) {
        (Some(ca), true) => {
            let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read_file(ca)?));
            if let (Some(cert), Some(key)) = (&server.tls_cert, &server.tls_key) {
                tls = tls.identity(Identity::from_pem(read_file(cert)?, read_file(key)?));
            }
            endpoint = endpoint.tls_config(tls).context("TLS settings")?;
        }
        (None, true) => bail!("{} is https: give --tls-ca, the CA certificate that signed the server's", server.server),
        (Some(_), false) => bail!("--tls-ca needs an https:// server URL, not {}", server.server),
        (None, false) => {}
    }
    let token = bearer_token(server, endpoint.uri(), role)?;
    let value = token
        .map(|token| format!("Bearer {token}").parse::<tonic::metadata::AsciiMetadataValue>())
        .transpose()
        .context("the token must be printable ASCII")?;
    let channel = endpoint.connect().await.with_context(|| format!("connecting to {}", server.server))?;
    Ok(tonic::service::interceptor::InterceptedService::new(channel, Bearer(value)))
}

/// The token to send: `--token`, or the local token of `role` when the server is on this
/// machine (local tokens never go to another host).
fn bearer_token(server: &ServerArg, uri: &http::Uri, role: Option<Role>) -> anyhow::Result<Option<String>> {
    if let Some(token) = &server.token {
        return Ok(Some(token.clone()));
    }
    let Some(role) = role else {
        return Ok(None);
    };
    let host = uri.host().unwrap_or_default().trim_start_matches('[').trim_end_matches(']');
    let loopback = host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if !loopback || !server.data_dir.join(crate::access::LOCAL_TOKENS_FILE).exists() {
        return Ok(None);
    }
    Ok(LocalTokens::read(&server.data_dir)?.token(role).map(str::to_owned))
}

fn status_error(status: tonic::Status) -> anyhow::Error {
    use tonic_types::StatusExt as _;
    let mut message = format!("{:?}", status.code());
    match status.get_details_bad_request() {
        Some(bad) => {
            for v in bad.field_violations {
                message.push_str(&format!("\n  {}: {}", v.field, v.description));
            }
        }
        None => message.push_str(&format!(": {}", status.message())),
    }
    if status.code() == tonic::Code::Unauthenticated {
        message.push_str(
            "\n  give --token or EPASS_TOKEN; a server on this machine with no [[clients]] configured \
             writes DATA_DIR/local-tokens.toml, read from --data-dir (./epass-data by default)",
        );
    }
    anyhow::anyhow!(message)
}

fn random_id(prefix: &str) -> String {
    format!("{prefix}-{}", hex::encode(rand::random::<[u8; 12]>()))
}

fn time_text(ts: Option<&prost_types::Timestamp>) -> String {
    ts.and_then(crate::grpc::datetime_of).map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true)).unwrap_or_default()
}

async fn issue(args: IssueArgs) -> anyhow::Result<ExitCode> {
    let now = SystemClock.now();
    let mut client =
        pb::issuance_service_client::IssuanceServiceClient::new(connect(&args.server, Some(Role::Issuer)).await?);
    let image_format = match (&args.png, &args.svg) {
        (Some(_), Some(_)) => bail!("choose one of --png and --svg"),
        (Some(_), None) => pb::QrImageFormat::Png,
        (None, Some(_)) => pb::QrImageFormat::Svg,
        (None, None) => pb::QrImageFormat::None,
    };
    let request = pb::IssuePassRequest {
        request_id: args.request_id.clone().unwrap_or_else(|| random_id("cli")),
        applicant: Some(pb::Applicant {
            permit_number: args.permit.clone(),
            name_latin: args.name_latin.clone(),
            name_chinese: args.name_chinese.clone(),
            sex: match args.sex {
                SexArg::Female => pb::Sex::Female,
                SexArg::Male => pb::Sex::Male,
            } as i32,
            permit_expiry: args.permit_expiry.clone(),
            permit_situation: match args.situation {
                SituationArg::NotCarried => pb::PermitSituation::NotCarried,
                SituationArg::Expired => pb::PermitSituation::Expired,
                SituationArg::Lost => pb::PermitSituation::Lost,
            } as i32,
            mobile: args.mobile.clone(),
        }),
        identity_check: Some(pb::IdentityCheck {
            method: pb::IdentityCheckMethod::SmsAndFace as i32,
            reference: args.check_reference.clone(),
            checked_at: Some(crate::grpc::timestamp_of(now)),
        }),
        modes: args.modes.iter().map(|m| mode_message(*m) as i32).collect(),
        image_format: image_format as i32,
    };
    let response = client.issue_pass(request).await.map_err(status_error)?.into_inner();
    if let Some(path) = &args.png {
        std::fs::write(path, &response.qr_png).with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.svg {
        std::fs::write(path, &response.qr_svg).with_context(|| format!("writing {}", path.display()))?;
    }
    let pass = response.pass.unwrap_or_default();
    if args.json {
        let out = json!({
            "pass_id": pass.pass_id,
            "key_id": pass.key_id,
            "qr_text": response.qr_text,
            "qr_version": response.qr_version,
            "name_latin": pass.name_latin,
            "name_chinese": pass.name_chinese,
            "permit_number_masked": pass.permit_number_masked,
            "valid_from": time_text(pass.valid_from.as_ref()),
            "valid_until": time_text(pass.valid_until.as_ref()),
            "modes": modes_text(&pass.modes),
            "replayed": response.replayed,
        });
        println!("{out}");
    } else {
        let symbol = epass_core::qr::QrSymbol::encode(&response.qr_text)?;
        println!("{}", symbol.terminal());
        println!("pass {}", pass.pass_id);
        println!("holder {} {} ({})", pass.name_latin, pass.name_chinese, pass.permit_number_masked);
        println!(
            "valid {} to {} for {}",
            time_text(pass.valid_from.as_ref()),
            time_text(pass.valid_until.as_ref()),
            modes_text(&pass.modes).join(", ")
        );
        println!("{}", response.qr_text);
    }
    Ok(ExitCode::SUCCESS)
}

fn modes_text(modes: &[i32]) -> Vec<&'static str> {
    modes
        .iter()
        .filter_map(|m| pb::TransportMode::try_from(*m).ok())
        .map(|m| match m {
            pb::TransportMode::Air => "air",
            pb::TransportMode::Rail => "rail",
            pb::TransportMode::Road => "road",
            pb::TransportMode::Sea => "sea",
            pb::TransportMode::Foot => "foot",
            pb::TransportMode::Unspecified => "unspecified",
        })
        .collect()
}

/// What the scanner read: a QR text, or an image to find one in.
enum Scanned {
    Text(String),
    Image { path: PathBuf, bytes: Vec<u8> },
}

impl ScanArgs {
    fn scanned(&self) -> anyhow::Result<Scanned> {
        if let Some(path) = &self.image {
            return Ok(Scanned::Image { path: path.clone(), bytes: read_file(path)? });
        }
        match self.qr_text.as_deref() {
            Some("-") => {
                let mut text = String::new();
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)?;
                Ok(Scanned::Text(text.trim().to_owned()))
            }
            Some(text) => Ok(Scanned::Text(text.to_owned())),
            None => bail!("give the QR text or --image"),
        }
    }

    /// The QR text, read from the image if there is one.
    fn qr_text(&self) -> anyhow::Result<String> {
        match self.scanned()? {
            Scanned::Text(text) => Ok(text),
            Scanned::Image { path, bytes } => image_error(epass_core::qr::read_image(&bytes), &path),
        }
    }
}

fn image_error<T>(result: Result<T, epass_core::qr::ReadImageError>, path: &Path) -> anyhow::Result<T> {
    result.with_context(|| format!("reading a QR code from {}", path.display()))
}

fn read_file(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

fn rfc3339(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// What a verification concluded, as the command prints it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shown {
    Accepted,
    Rejected,
    /// Offline only: the verifier's own trust list does not allow a decision.
    CannotDecide,
}

impl Shown {
    fn exit_code(self) -> u8 {
        match self {
            Self::Accepted => EXIT_ACCEPTED,
            Self::Rejected => EXIT_REJECTED,
            Self::CannotDecide => EXIT_CANNOT_DECIDE,
        }
    }
}

/// Whether an offline check consulted a status list.
enum StatusShown {
    Checked { sequence: u64 },
    NotChecked { why: &'static str, detail: String },
}

impl StatusShown {
    fn not_checked(why: &'static str, detail: impl Into<String>) -> Self {
        Self::NotChecked { why, detail: detail.into() }
    }

    fn of(check: &StatusCheck) -> Self {
        match check {
            StatusCheck::Checked { sequence } => Self::Checked { sequence: *sequence },
            StatusCheck::NoList => Self::not_checked("no_list", "no status list"),
            StatusCheck::Stale { stale_after } => {
                Self::not_checked("stale", format!("the status list went stale at {}", rfc3339(*stale_after)))
            }
            StatusCheck::Unusable(StatusListError::NotFull { base }) => Self::not_checked(
                "delta",
                format!("the status list is a delta on #{base}, not a full list; fetch it without --since"),
            ),
            StatusCheck::Unusable(StatusListError::Rollback { held, received }) => Self::not_checked(
                "rollback",
                format!("the status list #{received} is older than the #{held} already held; fetch it again"),
            ),
            StatusCheck::Unusable(error) => Self::not_checked("unusable", format!("status list unusable: {error}")),
            StatusCheck::NotEvaluated => Self::not_checked("no_trust_list", "no usable trust list to check it with"),
        }
    }

    fn text(&self) -> String {
        match self {
            Self::Checked { sequence } => {
                format!("single use and revocation checked against status list #{sequence} (hold this sequence: a lower one later is a rollback)")
            }
            Self::NotChecked { detail, .. } => format!("NOT checked (revocation and single use): {detail}"),
        }
    }

    fn json(&self) -> serde_json::Value {
        match self {
            Self::Checked { sequence } => json!({ "checked": true, "sequence": sequence }),
            Self::NotChecked { why, detail } => json!({ "checked": false, "why": why, "detail": detail }),
        }
    }
}

/// A verdict as the command prints it.
struct Printed {
    shown: Shown,
    reason: String,
    detail: String,
    pass: Option<pb::PassSummary>,
    entry: Option<pb::Entry>,
    /// Offline: what the status list contributed.
    status: Option<StatusShown>,
    /// Offline: the trust list's sequence, to hold against rollback.
    trust_sequence: Option<u64>,
    note: Option<&'static str>,
}

impl Printed {
    fn online(
        verdict: i32,
        reason: i32,
        detail: String,
        pass: Option<pb::PassSummary>,
        entry: Option<pb::Entry>,
    ) -> Self {
        Self {
            shown: if verdict == pb::Verdict::Accepted as i32 { Shown::Accepted } else { Shown::Rejected },
            reason: reason_text(reason),
            detail,
            pass,
            entry,
            status: None,
            trust_sequence: None,
            note: None,
        }
    }
}

fn print_verdict(printed: &Printed, as_json: bool) -> ExitCode {
    let pass = printed.pass.clone().unwrap_or_default();
    if as_json {
        let entry = printed.entry.as_ref().map(|e| {
            json!({
                "recorded_at": time_text(e.recorded_at.as_ref()),
                "checkpoint_id": e.checkpoint_id,
                "mode": modes_text(&[e.mode]).first().copied().unwrap_or_default(),
                "scan_id": e.scan_id,
            })
        });
        let out = json!({
            "verdict": match printed.shown {
                Shown::Accepted => "accepted",
                Shown::Rejected => "rejected",
                Shown::CannotDecide => "cannot_decide",
            },
            "reason": printed.reason,
            "detail": printed.detail,
            "pass_id": printed.pass.as_ref().map(|p| p.pass_id.clone()),
            "name_latin": pass.name_latin,
            "name_chinese": pass.name_chinese,
            "permit_number_masked": pass.permit_number_masked,
            "valid_from": time_text(pass.valid_from.as_ref()),
            "valid_until": time_text(pass.valid_until.as_ref()),
            "modes": modes_text(&pass.modes),
            "entry": entry,
            "status": printed.status.as_ref().map(StatusShown::json),
            "trust_list_sequence": printed.trust_sequence,
            "note": printed.note,
        });
        println!("{out}");
    } else {
        match printed.shown {
            Shown::Accepted => println!("ACCEPTED"),
            Shown::Rejected => println!("REJECTED {}: {}", printed.reason, printed.detail),
            Shown::CannotDecide => println!("CANNOT DECIDE {}: {}", printed.reason, printed.detail),
        }
        if let Some(p) = &printed.pass {
            println!("pass {} {} {} ({})", p.pass_id, p.name_latin, p.name_chinese, p.permit_number_masked);
            println!(
                "valid {} to {} for {}",
                time_text(p.valid_from.as_ref()),
                time_text(p.valid_until.as_ref()),
                modes_text(&p.modes).join(", ")
            );
        }
        if let Some(e) = &printed.entry {
            if e.scan_id.is_empty() {
                println!("entry {} at {}", time_text(e.recorded_at.as_ref()), e.checkpoint_id);
            } else {
                println!("entry {} at {} (scan {})", time_text(e.recorded_at.as_ref()), e.checkpoint_id, e.scan_id);
            }
        }
        if let Some(status) = &printed.status {
            println!("status: {}", status.text());
        }
        if let Some(sequence) = printed.trust_sequence {
            println!("trust list #{sequence} (hold this sequence: a lower one later is a rollback)");
        }
        if let Some(note) = printed.note {
            println!("note: {note}");
        }
    }
    ExitCode::from(printed.shown.exit_code())
}

fn reason_text(reason: i32) -> String {
    pb::RejectionReason::try_from(reason)
        .map(|r| r.as_str_name().trim_start_matches("REJECTION_REASON_").to_owned())
        .unwrap_or_else(|_| reason.to_string())
}

/// The reason shown for a rejection found here, in the API's spelling.
fn rejection_text(rejection: &Rejection) -> String {
    rejection.reason().as_str().to_uppercase()
}

/// The reason shown when the trust list does not allow a decision.
fn trust_problem_text(error: &TrustListError) -> &'static str {
    match error {
        TrustListError::Malformed(_) => "TRUST_LIST_MALFORMED",
        TrustListError::WrongRootKey { .. } => "TRUST_LIST_WRONG_ROOT_KEY",
        TrustListError::BadSignature => "TRUST_LIST_BAD_SIGNATURE",
        TrustListError::Rollback { .. } => "TRUST_LIST_ROLLBACK",
        TrustListError::Stale { .. } => "TRUST_LIST_STALE",
    }
}

async fn verify(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    if args.offline {
        return match (&args.root, &args.trust_list) {
            (Some(root), Some(trust_list)) => verify_with_trust_list(&args, root, trust_list),
            _ => verify_with_raw_keys(&args),
        };
    }
    let qr_text = args.scan.qr_text()?;
    let mut client = pb::checkpoint_service_client::CheckpointServiceClient::new(
        connect(&args.server, Some(Role::Checkpoint)).await?,
    );
    let response = client
        .verify_pass(pb::VerifyPassRequest {
            qr_text,
            checkpoint_id: args.scan.checkpoint.clone(),
            mode: mode_message(args.scan.mode) as i32,
        })
        .await
        .map_err(status_error)?
        .into_inner();
    let printed = Printed::online(response.verdict, response.reason, response.detail, response.pass, response.entry);
    Ok(print_verdict(&printed, args.scan.json))
}

fn check_time(args: &VerifyArgs) -> CheckTime {
    CheckTime { now: SystemClock.now(), tolerance: TimeDelta::seconds(args.tolerance.into()) }
}

/// Offline with the root key, the trust list and (optionally) the status list.
fn verify_with_trust_list(args: &VerifyArgs, root_path: &Path, trust_path: &Path) -> anyhow::Result<ExitCode> {
    let root = read_verification_key(root_path, KeyStatus::Active)?;
    let trust_list = read_file(trust_path)?;
    let status_list = args.status_list.as_deref().map(read_file).transpose()?;
    let context = OfflineContext {
        root_key: &root,
        trust_list: &trust_list,
        held_trust_sequence: args.held_sequence,
        status_list: status_list.as_deref(),
        status_deltas: &[],
        held_status_sequence: args.held_status_sequence,
        mode: args.scan.mode.into(),
        time: check_time(args),
    };
    let verdict: OfflineVerdict = match args.scan.scanned()? {
        Scanned::Text(text) => epass_core::offline::verify_offline(&text, &context),
        Scanned::Image { path, bytes } => {
            image_error(epass_core::offline::verify_offline_image(&bytes, &context), &path)?
        }
    };
    let status = StatusShown::of(&verdict.status);
    let (shown, reason, detail) = match &verdict.outcome {
        Outcome::Accepted => (Shown::Accepted, String::new(), String::new()),
        Outcome::Rejected(rejection) => (Shown::Rejected, rejection_text(rejection), rejection.to_string()),
        Outcome::CannotDecide(error) => (Shown::CannotDecide, trust_problem_text(error).to_owned(), error.to_string()),
    };
    let entry = match &verdict.outcome {
        Outcome::Rejected(Rejection::AlreadyUsed(entry)) => Some(crate::grpc::entry_of(entry)),
        _ => None,
    };
    let printed = Printed {
        shown,
        reason,
        detail,
        pass: verdict.pass.as_ref().map(crate::grpc::summary_of),
        entry,
        status: Some(status),
        trust_sequence: verdict.trust_sequence,
        note: None,
    };
    Ok(print_verdict(&printed, args.scan.json))
}

/// Offline with key files trusted as they are: no trust list, no status list.
fn verify_with_raw_keys(args: &VerifyArgs) -> anyhow::Result<ExitCode> {
    let keys =
        args.key.iter().map(|path| read_verification_key(path, KeyStatus::Active)).collect::<Result<Vec<_>, _>>()?;
    let ring = KeyRing::new(keys)?;
    let qr_text = args.scan.qr_text()?;
    let verification = epass_core::verify::verify_at(&qr_text, &ring, args.scan.mode.into(), check_time(args));
    let (shown, reason, detail) = match &verification.verdict {
        Ok(()) => (Shown::Accepted, String::new(), String::new()),
        Err(rejection) => (Shown::Rejected, rejection_text(rejection), rejection.to_string()),
    };
    let printed = Printed {
        shown,
        reason,
        detail,
        pass: verification.pass.as_ref().map(crate::grpc::summary_of),
        entry: None,
        status: Some(StatusShown::not_checked("no_list", "no status list")),
        trust_sequence: None,
        note: Some("no trust list was checked: the --key files were trusted as they are, without key periods"),
    };
    Ok(print_verdict(&printed, args.scan.json))
}

async fn admit(args: AdmitArgs) -> anyhow::Result<ExitCode> {
    let qr_text = args.scan.qr_text()?;
    let mut client = pb::checkpoint_service_client::CheckpointServiceClient::new(
        connect(&args.server, Some(Role::Checkpoint)).await?,
    );
    let response = client
        .record_entry(pb::RecordEntryRequest {
            qr_text,
            checkpoint_id: args.scan.checkpoint.clone(),
            mode: mode_message(args.scan.mode) as i32,
            scan_id: args.scan_id.clone().unwrap_or_else(|| random_id("scan")),
        })
        .await
        .map_err(status_error)?
        .into_inner();
    let printed = Printed::online(response.verdict, response.reason, response.detail, response.pass, response.entry);
    Ok(print_verdict(&printed, args.scan.json))
}

async fn revoke(args: RevokeArgs) -> anyhow::Result<ExitCode> {
    let mut client =
        pb::issuance_service_client::IssuanceServiceClient::new(connect(&args.server, Some(Role::Admin)).await?);
    let response = client
        .revoke_pass(pb::RevokePassRequest { pass_id: args.pass_id.clone(), reason: args.reason.clone() })
        .await
        .map_err(status_error)?
        .into_inner();
    let pass = response.pass.unwrap_or_default();
    if args.json {
        println!(
            "{}",
            json!({ "pass_id": pass.pass_id, "revoked_at": time_text(pass.revoked_at.as_ref()), "reason": pass.revoke_reason })
        );
    } else {
        println!("revoked {} at {}", pass.pass_id, time_text(pass.revoked_at.as_ref()));
    }
    Ok(ExitCode::SUCCESS)
}

async fn audit(args: AuditArgs) -> anyhow::Result<ExitCode> {
    use crate::store::Store as _;

    let pass_id: epass_core::ids::PassId =
        args.pass_id.parse().map_err(|_| anyhow::anyhow!("pass id {:?} is not 32 hex digits", args.pass_id))?;
    let path = args.data_dir.join(crate::datadir::DATABASE_FILE);
    if !path.exists() {
        bail!("no database at {}", path.display());
    }
    let store = crate::store::SqliteStore::open_read_only(&path).await.with_context(|| {
        format!("opening {} read-only (a database not yet migrated needs one server start)", path.display())
    })?;
    let trail = store.audit_trail(pass_id).await.context("reading the audit trail");
    store.close().await;
    let trail = trail?;
    if trail.is_empty() {
        bail!("no audit rows for pass {pass_id}");
    }
    let time = |at: DateTime<Utc>| at.to_rfc3339_opts(SecondsFormat::Nanos, true);
    if args.json {
        let rows: Vec<_> = trail
            .iter()
            .map(|e| {
                json!({
                    "seq": e.seq,
                    "at": time(e.at),
                    "action": e.action.as_str(),
                    "outcome": e.outcome.as_str(),
                    "reason": e.outcome.reason().map(epass_core::verify::Reason::as_str),
                    "caller": e.caller,
                    "role": e.role.map(crate::access::Role::name),
                    "peer": e.peer.map(|p| p.to_string()),
                    "request_key": e.request_key,
                    "checkpoint_id": e.checkpoint_id,
                    "mode": e.mode.map(TransportMode::name),
                    "permit_masked": e.permit_masked,
                })
            })
            .collect();
        println!("{}", json!({ "pass_id": pass_id.to_string(), "trail": rows }));
    } else {
        for e in &trail {
            let mut line = format!("{}  {:<6}  {}", time(e.at), e.action.as_str(), e.outcome.as_str());
            if let Some(reason) = e.outcome.reason() {
                line += &format!(" ({})", reason.as_str());
            }
            line += &format!("  by {}", e.caller);
            if let Some(role) = e.role {
                line += &format!(" ({role})");
            }
            line += &format!(" from {}", e.peer.map_or_else(|| "unknown address".to_owned(), |p| p.to_string()));
            if let Some(checkpoint) = &e.checkpoint_id {
                line += &format!("  at {checkpoint}");
            }
            if let Some(mode) = e.mode {
                line += &format!(" ({})", mode.name());
            }
            if let Some(key) = &e.request_key {
                line += &format!("  id {key}");
            }
            if let Some(permit) = &e.permit_masked {
                line += &format!("  permit {permit}");
            }
            println!("{line}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn read_keys(paths: &[PathBuf], status: KeyStatus) -> anyhow::Result<Vec<VerificationKey>> {
    Ok(paths.iter().map(|path| read_verification_key(path, status)).collect::<Result<Vec<_>, _>>()?)
}

fn build_trust_list_file(args: &BuildArgs) -> anyhow::Result<ExitCode> {
    let root = read_signing_key(&args.root)?;
    let active = read_verification_key(&args.active, KeyStatus::Active)?;
    let retired = read_keys(&args.retired, KeyStatus::Retired)?;
    let revoked = read_keys(&args.revoked, KeyStatus::Revoked)?;
    if let Some(key) = std::iter::once(&active).chain(&retired).chain(&revoked).find(|k| k.key_id() == root.key_id()) {
        bail!("key {} is the root key; the root signs trust lists only, never passes", key.key_id());
    }
    let previous = match &args.previous {
        Some(path) => {
            let previous_root = match &args.previous_root {
                Some(root_path) => read_verification_key(root_path, KeyStatus::Active)?,
                None => root.verification_key(),
            };
            let bytes = read_file(path)?;
            Some(TrustList::open(&bytes, &previous_root).with_context(|| format!("opening {}", path.display()))?)
        }
        None => None,
    };
    let now = SystemClock.now();
    let mut list = TrustList::successor(previous.as_ref(), &active, &retired, &revoked, now)?;
    if let Some(sequence) = args.sequence {
        if let Some(previous) = previous.as_ref().filter(|p| sequence <= p.sequence) {
            bail!(
                "--sequence {sequence} is not above the previous list's {}: verifiers would see a rollback",
                previous.sequence
            );
        }
        list.sequence = sequence;
    }
    list.stale_after = list.issued_at + TimeDelta::days(args.lifetime_days.into());
    let bytes = list.sign(&root);
    // Verifiers open it with the same code: a list they would refuse is never written.
    let opened = TrustList::open(&bytes, &root.verification_key()).context("the list built does not open")?;
    write_new_file(&args.out, &bytes, args.force)?;
    let current = opened.check_current(None, now);
    if args.json {
        let mut out = trust_list_json(&opened, &root.verification_key(), &current);
        out["path"] = json!(args.out.display().to_string());
        println!("{out}");
    } else {
        print_trust_list(&opened, &root.verification_key(), &current);
    }
    eprintln!("wrote {}", args.out.display());
    Ok(ExitCode::SUCCESS)
}

fn inspect_trust_list(args: &InspectArgs) -> anyhow::Result<ExitCode> {
    let root = read_verification_key(&args.root, KeyStatus::Active)?;
    let bytes = read_file(&args.file)?;
    let list = match TrustList::open(&bytes, &root) {
        Ok(list) => list,
        Err(error) => {
            if args.json {
                let out = json!({
                    "valid": false,
                    "current": false,
                    "problem": trust_problem_text(&error),
                    "detail": error.to_string(),
                });
                println!("{out}");
            } else {
                println!("INVALID {}: {error}", trust_problem_text(&error));
            }
            return Ok(ExitCode::from(EXIT_ERROR));
        }
    };
    let current = list.check_current(args.held_sequence, SystemClock.now());
    if args.json {
        println!("{}", trust_list_json(&list, &root, &current));
    } else {
        print_trust_list(&list, &root, &current);
    }
    Ok(ExitCode::from(if current.is_ok() { EXIT_ACCEPTED } else { EXIT_REJECTED }))
}

fn key_status_text(status: KeyStatus) -> &'static str {
    match status {
        KeyStatus::Active => "active",
        KeyStatus::Retired => "retired",
        KeyStatus::Revoked => "revoked",
    }
}

fn trust_list_json(
    list: &TrustList,
    root: &VerificationKey,
    current: &Result<(), TrustListError>,
) -> serde_json::Value {
    let keys: Vec<_> = list
        .keys
        .iter()
        .map(|k| {
            json!({
                "key_id": k.key_id().to_string(),
                "public_key": hex::encode(k.public_key),
                "status": key_status_text(k.status),
                "sign_from": rfc3339(k.sign_from),
                "sign_until": rfc3339(k.sign_until),
                "verify_until": rfc3339(k.verify_until),
            })
        })
        .collect();
    json!({
        "valid": true,
        "current": current.is_ok(),
        "problem": current.as_ref().err().map(trust_problem_text),
        "detail": current.as_ref().err().map(ToString::to_string).unwrap_or_default(),
        "root_key_id": root.key_id().to_string(),
        "sequence": list.sequence,
        "issued_at": rfc3339(list.issued_at),
        "stale_after": rfc3339(list.stale_after),
        "keys": keys,
    })
}

fn print_trust_list(list: &TrustList, root: &VerificationKey, current: &Result<(), TrustListError>) {
    match current {
        Ok(()) => println!("CURRENT"),
        Err(error) => println!("NOT CURRENT {}: {error}", trust_problem_text(error)),
    }
    println!("trust list #{} signed by root key {}", list.sequence, root.key_id());
    println!("issued at {}, stale after {}", rfc3339(list.issued_at), rfc3339(list.stale_after));
    for k in &list.keys {
        println!(
            "key {} {}: signs passes issued {} to {}, which verify until {}",
            k.key_id(),
            key_status_text(k.status),
            rfc3339(k.sign_from),
            rfc3339(k.sign_until),
            rfc3339(k.verify_until)
        );
    }
}

/// Writes a new file; an existing one only with `force`.
fn write_new_file(path: &Path, bytes: &[u8], force: bool) -> anyhow::Result<()> {
    if force {
        return replace_file(path, bytes);
    }
    let mut file = match std::fs::OpenOptions::new().write(true).create_new(true).open(path) {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            bail!("{} exists; add --force to replace it", path.display())
        }
        opened => opened.with_context(|| format!("creating {}", path.display()))?,
    };
    file.write_all(bytes).and_then(|()| file.sync_all()).with_context(|| format!("writing {}", path.display()))
}

/// Replaces a file through a rename, so that a verifier reading it meanwhile sees the old list
/// or the new one, never part of one.
fn replace_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let name = path.file_name().with_context(|| format!("{} is not a file name", path.display()))?;
    let mut temporary = std::ffi::OsString::from(".");
    temporary.push(name);
    temporary.push(".new");
    let temporary = path.with_file_name(temporary);
    let mut file = std::fs::File::create(&temporary).with_context(|| format!("creating {}", temporary.display()))?;
    file.write_all(bytes).and_then(|()| file.sync_all()).with_context(|| format!("writing {}", temporary.display()))?;
    std::fs::rename(&temporary, path).with_context(|| format!("replacing {}", path.display()))
}

async fn fetch(args: FetchArgs) -> anyhow::Result<ExitCode> {
    let root = args.root.as_deref().map(|path| read_verification_key(path, KeyStatus::Active)).transpose()?;
    let mut client = pb::key_service_client::KeyServiceClient::new(connect(&args.server, None).await?);
    // With --root the trust list is needed to check the status list's signer, even when only
    // the status list is written.
    let trust = if args.trust_list.is_some() || root.is_some() {
        Some(client.get_trust_list(pb::GetTrustListRequest {}).await.map_err(status_error)?.into_inner())
    } else {
        None
    };
    let status = match &args.status_list {
        Some(_) => {
            let request = pb::GetStatusListRequest { since_sequence: args.since.unwrap_or(0) };
            Some(client.get_status_list(request).await.map_err(status_error)?.into_inner())
        }
        None => None,
    };

    let mut entries = None;
    if let (Some(root), Some(trust)) = (&root, &trust) {
        let now = SystemClock.now();
        let held = args
            .trust_list
            .as_deref()
            .and_then(|path| std::fs::read(path).ok())
            .and_then(|bytes| TrustList::open(&bytes, root).ok())
            .map(|list| list.sequence);
        let list = TrustList::open(&trust.trust_list, root)
            .and_then(|list| list.check_current(held, now).map(|()| list))
            .context("the server's trust list cannot be used; nothing written")?;
        if let Some(status) = &status {
            let opened = StatusList::open(&status.status_list, &list.key_ring()?, now)
                .context("the server's status list cannot be used; nothing written")?;
            if opened.is_stale(now) {
                bail!("the server's status list went stale at {}; nothing written", rfc3339(opened.stale_after));
            }
            entries = Some(opened.entries.len());
        }
    }

    let mut out = json!({ "trust_list": null, "status_list": null, "checked": root.is_some() });
    if let (Some(path), Some(trust)) = (&args.trust_list, &trust) {
        replace_file(path, &trust.trust_list)?;
        let stale_after = time_text(trust.stale_after.as_ref());
        if !args.json {
            println!("trust list #{}, stale after {stale_after}: wrote {}", trust.sequence, path.display());
        }
        out["trust_list"] = json!({
            "path": path.display().to_string(),
            "sequence": trust.sequence,
            "stale_after": stale_after,
        });
    }
    if let (Some(path), Some(status)) = (&args.status_list, &status) {
        replace_file(path, &status.status_list)?;
        let stale_after = time_text(status.stale_after.as_ref());
        if !args.json {
            let kind = match status.base_sequence {
                0 => "full".to_owned(),
                base => format!("delta on #{base}"),
            };
            let count = entries.map(|n| format!(", {n} entries")).unwrap_or_default();
            println!(
                "status list #{} ({kind}{count}), stale after {stale_after}: wrote {}",
                status.sequence,
                path.display()
            );
        }
        out["status_list"] = json!({
            "path": path.display().to_string(),
            "sequence": status.sequence,
            "base_sequence": status.base_sequence,
            "stale_after": stale_after,
            "entries": entries,
        });
    }
    if args.json {
        println!("{out}");
    } else if let Some(root) = &root {
        println!("checked against root key {}", root.key_id());
    } else {
        println!("not checked here (no --root); `verify --offline` checks them");
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;
    use epass_core::keys::PassSigner;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(secs, 0).unwrap()
    }

    #[test]
    fn command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn online_verify_takes_no_offline_flags() {
        assert!(Cli::try_parse_from(["epass", "verify", "--mode", "air", "EP1:x"]).is_ok());
        assert!(Cli::try_parse_from(["epass", "verify", "--mode", "air", "--image", "a.png"]).is_ok());
        assert!(Cli::try_parse_from(["epass", "verify", "--mode", "air", "--image", "a.png", "EP1:x"]).is_err());
        assert!(Cli::try_parse_from(["epass", "verify", "--mode", "air"]).is_err());
        assert!(Cli::try_parse_from(["epass", "verify", "--mode", "air", "--root", "r.pem", "EP1:x"]).is_err());
        assert!(Cli::try_parse_from(["epass", "verify", "--offline", "--mode", "air", "EP1:x"]).is_err());
        let both =
            ["epass", "verify", "--offline", "--root", "r", "--trust-list", "t", "--key", "k", "--mode", "air", "x"];
        assert!(Cli::try_parse_from(both).is_err());
        let root_only = ["epass", "verify", "--offline", "--root", "r.pem", "--mode", "air", "EP1:x"];
        assert!(Cli::try_parse_from(root_only).is_err(), "--root needs --trust-list");
    }

    fn key(seed: u8, status: KeyStatus) -> VerificationKey {
        let public = PassSigner::from_secret_bytes(&[seed; 32]).public_key();
        VerificationKey::from_public_key(&public, status, epass_core::keys::KeyValidity::UNBOUNDED).unwrap()
    }

    #[test]
    fn revocations_are_listed_and_never_lifted() {
        let now = at(1_800_000_000);
        let active = key(1, KeyStatus::Active);
        let bad = key(4, KeyStatus::Revoked);
        let list = TrustList::successor(None, &active, &[], std::slice::from_ref(&bad), now).unwrap();
        assert_eq!(list.key(bad.key_id()).unwrap().status, KeyStatus::Revoked);
        // Signed and opened, the list is one verifiers accept.
        let root = PassSigner::from_secret_bytes(&[9; 32]);
        assert_eq!(TrustList::open(&list.sign(&root), &root.verification_key()).unwrap(), list);

        let later = now + TimeDelta::days(1);
        let carried = TrustList::successor(Some(&list), &active, &[], &[], later).unwrap();
        assert_eq!(carried.key(bad.key_id()).unwrap().status, KeyStatus::Revoked);
        assert!(TrustList::successor(Some(&list), &bad, &[], &[], later).is_err());
        assert!(TrustList::successor(Some(&list), &active, std::slice::from_ref(&bad), &[], later).is_err());
        assert!(
            TrustList::successor(None, &active, std::slice::from_ref(&bad), std::slice::from_ref(&bad), later).is_err()
        );
        assert!(TrustList::successor(None, &active, std::slice::from_ref(&active), &[], later).is_err());
    }
}
