//! The clap definitions of the command line: commands, their arguments and value enums, and
//! the conversions of those enums to the core's and the API's types.

use std::net::SocketAddr;
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use clap::{ArgGroup, Args, Subcommand, ValueEnum};

use crate::grpc::pb;
use epass_core::pass::TransportMode;

#[derive(Debug, Subcommand)]
pub(super) enum Command {
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
    /// Checks a pass and records the entry (uses the pass up); with --offline, here, in a
    /// journal that `sync` uploads later.
    ///
    /// Exit codes: 0 admitted, 1 rejected, 3 cannot decide (offline), 2 errors.
    Admit(AdmitArgs),
    /// Uploads the entries `admit --offline` recorded in a journal and not yet acknowledged,
    /// and records each acknowledgement; safe to run again at any time.
    Sync(super::journal::SyncArgs),
    /// Revokes a pass.
    Revoke(RevokeArgs),
    /// Builds or inspects a root-signed trust list.
    #[command(subcommand)]
    TrustList(TrustListCommand),
    /// Exports the root public key that offline checkpoints are provisioned with.
    #[command(subcommand)]
    Root(super::root::RootCommand),
    /// Downloads the signed trust list and status list that offline verification needs.
    ///
    /// KeyService asks for no credentials. Files are replaced atomically, and only once
    /// everything asked for has arrived (and, with --root, checked).
    Fetch(FetchArgs),
    /// Prints the audit trail of a pass, oldest first: who issued, revoked, verified and
    /// admitted it, when and from where.
    ///
    /// Reads the data directory's database directly, read-only (the server may be running); or,
    /// with --database-url, the PostgreSQL database the servers share.
    Audit(AuditArgs),
    /// Copies the SQLite database, consistently, while the server serves (readers and the
    /// writer keep working): the database as of one commit, synced, mode 0600.
    ///
    /// The keys, the hashing secret and the trust list are not in the copy: back them up too
    /// (README, Backup and restore). For PostgreSQL use pg_dump or pg_basebackup.
    Backup(super::backup::BackupArgs),
    /// Checks a configuration file.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Manages the database schema.
    #[command(subcommand)]
    Db(DbCommand),
    /// Sends load to a server and reports throughput, latency percentiles and errors; with
    /// --baseline, also measures a bare baseline in the same run and prints the ratio.
    ///
    /// Issues passes of its own (distinct made-up permit numbers) with the issuer token, and
    /// scans them with the checkpoint token. --server may name several comma-separated URLs:
    /// the connections are spread over them in turn.
    Bench(BenchArgs),
    /// The bare verification server that `bench --baseline verify` starts; prints
    /// "listening on ADDRESS" once it listens.
    #[command(hide = true)]
    BenchBaselineServer {
        /// The pass-signing public key, hex.
        #[arg(long)]
        public_key: String,
        /// Where to listen.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
    },
}

/// What `bench` sends.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(super) enum WorkloadArg {
    /// IssuePass without an image.
    Issue,
    /// IssuePass with a PNG.
    IssuePng,
    /// VerifyPass of passes issued first.
    Verify,
    /// RecordEntry of passes issued first, a new scan id each call.
    Admit,
    /// 8 VerifyPass, 1 IssuePass and 1 RecordEntry in every 10 calls.
    Mix,
}

/// The bare figure `bench` compares with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(super) enum BaselineArg {
    /// A bare tonic server whose VerifyPass does the prefix check, base64url and one
    /// verify_strict (started here as a child process); needs the verify workload.
    Verify,
    /// A durable SQLite quota count + insert (WAL, synchronous=FULL, one transaction each,
    /// back to back on one thread), in a scratch database under --baseline-dir.
    Sqlite,
    /// The same count + insert in one PostgreSQL transaction, with as many callers at once as
    /// this run has calls in flight (connections x in-flight), over --baseline-pool-size
    /// connections, in a scratch database created on the server of --baseline-database-url.
    Postgres,
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("length").args(["duration", "count"])))]
pub(super) struct BenchArgs {
    /// What to send.
    #[arg(value_enum)]
    pub(super) workload: WorkloadArg,
    #[command(flatten)]
    pub(super) server: ServerArg,
    /// Bearer token for issuing (else --token, else the local issuer token).
    #[arg(long, env = "EPASS_ISSUER_TOKEN", hide_env_values = true)]
    pub(super) issuer_token: Option<String>,
    /// Bearer token for scanning (else --token, else the local checkpoint token).
    #[arg(long, env = "EPASS_CHECKPOINT_TOKEN", hide_env_values = true)]
    pub(super) checkpoint_token: Option<String>,
    /// HTTP/2 connections.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub(super) connections: u32,
    /// Calls in flight on each connection (closed loop), or at most in all (open loop:
    /// connections x in-flight).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub(super) in_flight: u32,
    /// Seconds to run (default 10).
    #[arg(long, value_name = "SECONDS")]
    pub(super) duration: Option<f64>,
    /// Calls to send, instead of a duration.
    #[arg(long, value_name = "N")]
    pub(super) count: Option<u64>,
    /// Open loop: start this many calls a second, whatever the answers (latency counts from
    /// each call's scheduled start). Without it, closed loop.
    #[arg(long, value_name = "CALLS_PER_SECOND")]
    pub(super) rate: Option<f64>,
    /// Passes issued before verify, admit or mix, which the scans cycle through.
    #[arg(long, default_value_t = 1000)]
    pub(super) passes: usize,
    /// Also measure this bare baseline, with the same connections, in-flight calls and length.
    #[arg(long, value_enum)]
    pub(super) baseline: Option<BaselineArg>,
    /// Where the sqlite baseline makes its scratch database (put it on the server's disk).
    #[arg(long, default_value = ".", value_name = "DIR")]
    pub(super) baseline_dir: PathBuf,
    /// The PostgreSQL server the postgres baseline makes its scratch database on (the one
    /// epass uses; any database of it names the server).
    #[arg(long, env = "EPASS_DATABASE_URL", hide_env_values = true, value_name = "URL")]
    pub(super) baseline_database_url: Option<String>,
    /// Connections of the postgres baseline: by default epass's write connections at the
    /// default pool size.
    #[arg(long, default_value_t = 10, value_name = "N")]
    pub(super) baseline_pool_size: u32,
    /// Print JSON.
    #[arg(long)]
    pub(super) json: bool,
}

#[derive(Debug, Subcommand)]
pub(super) enum ConfigCommand {
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
pub(super) enum DbCommand {
    /// Brings the database schema up to date and prints its version: the PostgreSQL database of
    /// --database-url, or else the SQLite database of --data-dir.
    ///
    /// Run it before rolling out a new version to servers that share one PostgreSQL database;
    /// servers also migrate when they start. A database migrated by a newer epass is refused,
    /// naming both versions (exit 2).
    Migrate(MigrateArgs),
}

#[derive(Debug, Args)]
pub(super) struct MigrateArgs {
    /// PostgreSQL URL (postgres://USER:PASSWORD@HOST:PORT/DATABASE).
    #[arg(long, env = "EPASS_DATABASE_URL", hide_env_values = true, value_name = "URL")]
    pub(super) database_url: Option<String>,
    /// Without --database-url: the data directory whose epass.sqlite3 to migrate.
    #[arg(long, env = "EPASS_DATA_DIR", default_value = "./epass-data")]
    pub(super) data_dir: PathBuf,
}

#[derive(Debug, Subcommand)]
pub(super) enum TrustListCommand {
    /// Builds a trust list and signs it with the root key.
    ///
    /// Key periods (times are the issue times of the passes a key may sign, and the time until
    /// which those passes verify):
    ///
    /// - --active: signs passes issued from now for 365 days; they verify 7 days more (the
    ///   longest a pass lives). A key already in --previous keeps its earlier start.
    ///
    /// - --next: a key that will sign soon, listed as active from now exactly as --active, so
    ///   that every verifier knows it before any server signs with it. Several servers rotate
    ///   their key this way (README, *Several replicas*): a list with --active OLD --next NEW,
    ///   then the servers switch to NEW, then a list with --active NEW retires OLD.
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
pub(super) struct BuildArgs {
    /// The root private key (PKCS#8 PEM) that signs the list.
    #[arg(long, value_name = "ROOT_KEY_PEM")]
    pub(super) root: PathBuf,
    /// The key that signs passes (SPKI public key PEM, or a PKCS#8 private key PEM of which only
    /// the public half is used).
    #[arg(long, value_name = "KEY_PEM")]
    pub(super) active: PathBuf,
    /// A key that will sign next, listed as active from now beside --active; repeatable.
    #[arg(long, value_name = "KEY_PEM")]
    pub(super) next: Vec<PathBuf>,
    /// A key that no longer signs but whose passes still verify; repeatable.
    #[arg(long, value_name = "KEY_PEM")]
    pub(super) retired: Vec<PathBuf>,
    /// A key none of whose passes may be accepted any more; repeatable.
    #[arg(long, value_name = "KEY_PEM")]
    pub(super) revoked: Vec<PathBuf>,
    /// The list this one replaces: its keys are carried over and its sequence continued.
    #[arg(long, value_name = "OLD_LIST")]
    pub(super) previous: Option<PathBuf>,
    /// The root public key that signed --previous, if not --root (after a root change).
    #[arg(long, value_name = "ROOT_KEY_PEM", requires = "previous")]
    pub(super) previous_root: Option<PathBuf>,
    /// The list's sequence; must be above --previous's. Default: --previous's + 1, or 1.
    #[arg(long, value_name = "N")]
    pub(super) sequence: Option<u64>,
    /// Days until the list goes stale; verifiers then cannot decide until they get a new one.
    #[arg(long, value_name = "DAYS", default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=3650))]
    pub(super) lifetime_days: u32,
    /// Where to write the signed list.
    #[arg(long, short, value_name = "FILE")]
    pub(super) out: PathBuf,
    /// Replace --out if it exists.
    #[arg(long)]
    pub(super) force: bool,
    /// Print JSON.
    #[arg(long)]
    pub(super) json: bool,
}

#[derive(Debug, Args)]
pub(super) struct InspectArgs {
    /// The signed trust list.
    pub(super) file: PathBuf,
    /// The root public key (SPKI PEM, or the public half of a PKCS#8 private key PEM).
    #[arg(long, value_name = "ROOT_KEY_PEM")]
    pub(super) root: PathBuf,
    /// The highest sequence held before: a lower one counts as not current (rollback).
    #[arg(long, value_name = "N")]
    pub(super) held_sequence: Option<u64>,
    /// Print JSON.
    #[arg(long)]
    pub(super) json: bool,
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("lists").args(["trust_list", "status_list"]).required(true).multiple(true)))]
pub(super) struct FetchArgs {
    #[command(flatten)]
    pub(super) server: ServerArg,
    /// Where to write the signed trust list.
    #[arg(long, value_name = "FILE")]
    pub(super) trust_list: Option<PathBuf>,
    /// Where to write the signed status list (revoked and used passes).
    #[arg(long, value_name = "FILE")]
    pub(super) status_list: Option<PathBuf>,
    /// Ask only for the changes after status list sequence N: a delta, written as received,
    /// for verifiers that apply deltas themselves. `verify --offline` needs a full list.
    #[arg(long, value_name = "N", requires = "status_list")]
    pub(super) since: Option<u64>,
    /// Check the lists against this root public key before writing anything: root signature,
    /// not stale, not older than the trust list already in the file, status list signed by a
    /// listed key.
    #[arg(long, value_name = "ROOT_KEY_PEM")]
    pub(super) root: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    pub(super) json: bool,
}

/// `serve`'s settings: a configuration file, then the environment, then these flags, each
/// overriding the one before (clap reads a flag or, failing that, its variable). Defaults are
/// the configuration's, so that a flag not given leaves the file's value.
#[derive(Debug, Args)]
pub(super) struct ServeArgs {
    /// Configuration file (TOML; see docs/epass.example.toml).
    #[arg(long, env = "EPASS_CONFIG", value_name = "FILE")]
    pub(super) config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:50051].
    #[arg(long, env = "EPASS_LISTEN", value_name = "ADDRESS")]
    pub(super) listen: Option<String>,
    /// Directory for the database, the keys, the hashing secret and the local tokens
    /// [default: ./epass-data].
    #[arg(long, env = "EPASS_DATA_DIR")]
    pub(super) data_dir: Option<PathBuf>,
    /// Signing key (PKCS#8 PEM) to use instead of DATA_DIR/signing-key.pem.
    #[arg(long, env = "EPASS_SIGNING_KEY")]
    pub(super) signing_key: Option<PathBuf>,
    /// Serve without TLS on a non-loopback address (only behind a proxy that adds it).
    #[arg(long, env = "EPASS_ALLOW_INSECURE")]
    pub(super) allow_insecure: bool,
    /// How old, in seconds, the upstream identity check may be [default: 600].
    #[arg(long, env = "EPASS_IDENTITY_CHECK_MAX_AGE", value_name = "SECONDS")]
    pub(super) identity_check_max_age: Option<u64>,
    /// Log lines as text or one JSON object per line (to stderr; RUST_LOG sets the filter).
    #[arg(long, env = "EPASS_LOG_FORMAT", value_enum)]
    pub(super) log_format: Option<crate::config::LogFormat>,
    /// Serve Prometheus metrics at http://ADDRESS/metrics.
    #[arg(long, env = "EPASS_METRICS_LISTEN", value_name = "ADDRESS")]
    pub(super) metrics_listen: Option<SocketAddr>,
    /// Keep passes in this PostgreSQL database (postgres://USER:PASSWORD@HOST:PORT/DATABASE),
    /// which several servers may share [default: DATA_DIR/epass.sqlite3].
    #[arg(long, env = "EPASS_DATABASE_URL", hide_env_values = true, value_name = "URL")]
    pub(super) database_url: Option<String>,
}

#[derive(Debug, Args)]
pub(super) struct KeygenArgs {
    /// Where to write the private key.
    #[arg(long, short)]
    pub(super) out: PathBuf,
}

#[derive(Debug, Clone, Args)]
pub(super) struct ServerArg {
    /// The server's URL: http:// or, with --tls-ca, https://.
    #[arg(long, env = "EPASS_SERVER", default_value = "http://127.0.0.1:50051")]
    pub(super) server: String,
    /// Bearer token. Without it, a server on this machine (loopback URL) is called with the
    /// token of the command's role from DATA_DIR/local-tokens.toml.
    #[arg(long, env = "EPASS_TOKEN", hide_env_values = true)]
    pub(super) token: Option<String>,
    /// Data directory of a server on this machine, for its local tokens.
    #[arg(long, env = "EPASS_DATA_DIR", default_value = "./epass-data")]
    pub(super) data_dir: PathBuf,
    /// CA certificate (PEM) that signed the server's certificate, for https:// URLs.
    #[arg(long, env = "EPASS_TLS_CA", value_name = "PEM")]
    pub(super) tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS.
    #[arg(long, env = "EPASS_TLS_CERT", value_name = "PEM", requires_all = ["tls_key", "tls_ca"])]
    pub(super) tls_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, env = "EPASS_TLS_KEY", value_name = "PEM", requires = "tls_cert")]
    pub(super) tls_key: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(super) enum SexArg {
    Female,
    Male,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(super) enum SituationArg {
    NotCarried,
    Expired,
    Lost,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(super) enum ModeArg {
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

pub(super) fn mode_message(mode: ModeArg) -> pb::TransportMode {
    match mode {
        ModeArg::Air => pb::TransportMode::Air,
        ModeArg::Rail => pb::TransportMode::Rail,
        ModeArg::Road => pb::TransportMode::Road,
        ModeArg::Sea => pb::TransportMode::Sea,
        ModeArg::Foot => pb::TransportMode::Foot,
    }
}

#[derive(Debug, Args)]
pub(super) struct IssueArgs {
    #[command(flatten)]
    pub(super) server: ServerArg,
    /// Home Return Permit number.
    #[arg(long)]
    pub(super) permit: String,
    /// Name in Latin letters as on the permit.
    #[arg(long, default_value = "")]
    pub(super) name_latin: String,
    /// Name in Chinese characters as on the permit.
    #[arg(long, default_value = "")]
    pub(super) name_chinese: String,
    /// Sex as on the permit.
    #[arg(long, value_enum)]
    pub(super) sex: SexArg,
    /// The permit's expiry date, YYYY-MM-DD.
    #[arg(long)]
    pub(super) permit_expiry: String,
    /// Why the permit is not at hand.
    #[arg(long, value_enum)]
    pub(super) situation: SituationArg,
    /// Mainland mobile number, +86 and 11 digits.
    #[arg(long)]
    pub(super) mobile: String,
    /// Allowed modes (air, rail); default both.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub(super) modes: Vec<ModeArg>,
    /// Idempotency key; a random one by default. To retry safely, run the same command again:
    /// same --request-id, same --identity-checked-at, same particulars.
    ///
    /// It needs --identity-checked-at: the time of the identity check is part of the
    /// application, so a retry that stamped a new one would be another application (ALREADY_EXISTS).
    #[arg(long, requires = "identity_checked_at")]
    pub(super) request_id: Option<String>,
    /// Reference of the identity check that preceded the application.
    #[arg(long, default_value = "cli")]
    pub(super) check_reference: String,
    /// When the identity check passed, RFC 3339 (2026-11-10T10:00:00+08:00); it must be recent
    /// (the server's identity_check_max_age). Default: now, for a one-off call without
    /// --request-id.
    #[arg(long, value_name = "TIME", value_parser = rfc3339)]
    pub(super) identity_checked_at: Option<DateTime<Utc>>,
    /// Write the QR code as PNG to this file.
    #[arg(long)]
    pub(super) png: Option<PathBuf>,
    /// Write the QR code as SVG to this file.
    #[arg(long)]
    pub(super) svg: Option<PathBuf>,
    /// Print JSON instead of text and the QR drawing.
    #[arg(long)]
    pub(super) json: bool,
}

/// A time written in RFC 3339.
fn rfc3339(text: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(text.trim())
        .map(|time| time.with_timezone(&Utc))
        .map_err(|e| format!("{e}: write it as 2026-11-10T10:00:00+08:00"))
}

#[derive(Debug, Args)]
pub(super) struct ScanArgs {
    /// The checkpoint's transport mode.
    #[arg(long, value_enum)]
    pub(super) mode: ModeArg,
    /// The checkpoint's identifier.
    #[arg(long, env = "EPASS_CHECKPOINT", default_value = "cli")]
    pub(super) checkpoint: String,
    /// Print JSON.
    #[arg(long)]
    pub(super) json: bool,
    /// Read the QR code from a PNG or JPEG image (a screenshot, a photo of the phone's screen,
    /// the PNG `issue --png` wrote) instead of taking its text.
    #[arg(long, value_name = "PNG_OR_JPEG", conflicts_with = "qr_text")]
    pub(super) image: Option<PathBuf>,
    /// The QR text, or - to read it from standard input. From standard input exactly one line
    /// feed (LF or CR LF) at the end is removed, nothing else; an argument is taken as it is.
    #[arg(required_unless_present = "image")]
    pub(super) qr_text: Option<String>,
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("offline_keys").args(["root", "key"])))]
pub(super) struct VerifyArgs {
    #[command(flatten)]
    pub(super) server: ServerArg,
    /// Verify here instead of asking a server: with --root and --trust-list (and --status-list
    /// for revocation and single use), or with raw --key files and no trust list.
    #[arg(long, requires = "offline_keys")]
    pub(super) offline: bool,
    /// Offline: the root public key the trust list must be signed by (SPKI PEM, or the public
    /// half of a PKCS#8 private key PEM such as DATA_DIR/root-key.pem).
    #[arg(long, value_name = "ROOT_KEY_PEM", requires_all = ["offline", "trust_list"])]
    pub(super) root: Option<PathBuf>,
    /// Offline: the root-signed trust list (from `epass fetch` or `epass trust-list build`).
    #[arg(long, value_name = "FILE", requires = "root")]
    pub(super) trust_list: Option<PathBuf>,
    /// Offline: the full signed status list from `epass fetch`. Without it (or when it is stale
    /// or unusable) revocation and single use are not checked, and the output says so.
    #[arg(long, value_name = "FILE", requires = "root")]
    pub(super) status_list: Option<PathBuf>,
    /// Offline: the highest trust list sequence this checkpoint has seen; a lower one is a
    /// rollback, and the verdict is "cannot decide".
    #[arg(long, value_name = "N", requires = "root")]
    pub(super) held_sequence: Option<u64>,
    /// Offline: the highest status list sequence this checkpoint has used; a lower one may
    /// predate a use, so single use and revocation are not checked against it (rollback).
    #[arg(long, value_name = "N", requires = "status_list")]
    pub(super) held_status_sequence: Option<u64>,
    /// Offline: how far this machine's clock may be off; widens the pass's window and the
    /// key's verification period by that much at both ends. At most 600 (docs/FORMAT.md,
    /// Clock tolerance); the default 0 gives the online service's verdicts.
    #[arg(long, value_name = "SECONDS", default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=600))]
    pub(super) tolerance: u32,
    /// Offline without a trust list: a public key file (SPKI PEM, or a PKCS#8 private key PEM)
    /// trusted as it is, with no periods; repeatable.
    #[arg(long, value_name = "KEY_PEM", requires = "offline")]
    pub(super) key: Vec<PathBuf>,
    #[command(flatten)]
    pub(super) scan: ScanArgs,
}

#[derive(Debug, Args)]
pub(super) struct AdmitArgs {
    #[command(flatten)]
    pub(super) server: ServerArg,
    /// Idempotency key of this scan; a random one by default.
    #[arg(long)]
    pub(super) scan_id: Option<String>,
    #[command(flatten)]
    pub(super) offline: super::journal::OfflineAdmitArgs,
    #[command(flatten)]
    pub(super) scan: ScanArgs,
}

#[derive(Debug, Args)]
pub(super) struct RevokeArgs {
    #[command(flatten)]
    pub(super) server: ServerArg,
    /// Why.
    #[arg(long, default_value = "")]
    pub(super) reason: String,
    /// Print JSON.
    #[arg(long)]
    pub(super) json: bool,
    /// The pass id (32 hex digits).
    pub(super) pass_id: String,
}

#[derive(Debug, Args)]
pub(super) struct AuditArgs {
    /// The data directory whose database to read.
    #[arg(long, env = "EPASS_DATA_DIR", default_value = "./epass-data")]
    pub(super) data_dir: PathBuf,
    /// Read this PostgreSQL database instead of the data directory's (postgres://...).
    #[arg(long, value_name = "URL")]
    pub(super) database_url: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub(super) json: bool,
    /// The pass id (32 hex digits).
    pub(super) pass_id: String,
}

#[cfg(test)]
mod tests {
    use super::super::Cli;
    use clap::{CommandFactory as _, Parser as _};

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

    /// Regression (issue 12): `--request-id` alone stamped a new identity check time on every
    /// call, so the documented retry was refused as another application.
    #[test]
    fn a_request_id_needs_the_identity_check_time() {
        let issue = [
            "epass",
            "issue",
            "--permit",
            "H12345678",
            "--sex",
            "male",
            "--permit-expiry",
            "2030-01-01",
            "--situation",
            "lost",
            "--mobile",
            "+8613800138000",
        ];
        let with = |extra: &[&'static str]| Cli::try_parse_from(issue.iter().chain(extra).copied());
        assert!(with(&[]).is_ok());
        assert!(with(&["--request-id", "r1"]).is_err());
        assert!(with(&["--request-id", "r1", "--identity-checked-at", "2026-11-10T10:00:00+08:00"]).is_ok());
        assert!(with(&["--identity-checked-at", "2026-11-10T10:00:00+08:00"]).is_ok());
        assert!(with(&["--identity-checked-at", "yesterday"]).is_err());
    }
}
