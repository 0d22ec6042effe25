//! The `epass` command line: serve, keygen, issue, verify, admit, revoke.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context as _};
use chrono::{DateTime, SecondsFormat, Utc};
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde_json::json;
use tonic::transport::Channel;

use crate::clock::{Clock, SystemClock};
use crate::grpc::pb;
use crate::keys::{KeyRing, KeyStatus};
use crate::pass::TransportMode;
use crate::policy::IssuancePolicy;

/// Exit code of an accepted pass.
const EXIT_ACCEPTED: u8 = 0;
/// Exit code of a rejected pass.
const EXIT_REJECTED: u8 = 1;
/// Exit code of any error.
pub const EXIT_ERROR: u8 = 2;

/// Issues and verifies one-time electronic temporary passes.
#[derive(Debug, Parser)]
#[command(name = "epass", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs the gRPC server.
    Serve(ServeArgs),
    /// Writes a new Ed25519 signing key (PKCS#8 PEM, mode 0600) and prints its key id.
    Keygen(KeygenArgs),
    /// Asks a server for a pass.
    Issue(IssueArgs),
    /// Checks a pass without using it (online, or offline with --offline --key).
    Verify(VerifyArgs),
    /// Checks a pass and records the entry (uses the pass up).
    Admit(AdmitArgs),
    /// Revokes a pass.
    Revoke(RevokeArgs),
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "EPASS_LISTEN", default_value = "127.0.0.1:50051")]
    listen: SocketAddr,
    /// Directory for the database, the signing key and the hashing secret.
    #[arg(long, env = "EPASS_DATA_DIR", default_value = "./epass-data")]
    data_dir: PathBuf,
    /// Signing key (PKCS#8 PEM) to use instead of DATA_DIR/signing-key.pem.
    #[arg(long, env = "EPASS_SIGNING_KEY")]
    signing_key: Option<PathBuf>,
    /// How old, in seconds, the upstream identity check may be.
    #[arg(long, env = "EPASS_IDENTITY_CHECK_MAX_AGE", default_value_t = 600)]
    identity_check_max_age: u32,
}

#[derive(Debug, Args)]
struct KeygenArgs {
    /// Where to write the private key.
    #[arg(long, short)]
    out: PathBuf,
}

#[derive(Debug, Args)]
struct ServerArg {
    /// The server's URL.
    #[arg(long, env = "EPASS_SERVER", default_value = "http://127.0.0.1:50051")]
    server: String,
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
    /// The QR text, or - to read it from standard input.
    qr_text: String,
}

#[derive(Debug, Args)]
struct VerifyArgs {
    #[command(flatten)]
    server: ServerArg,
    /// Verify locally with public keys instead of asking a server.
    #[arg(long, requires = "key")]
    offline: bool,
    /// Public key file (SPKI PEM, or a PKCS#8 private key PEM) trusted offline; repeatable.
    #[arg(long)]
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

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve(args) => serve(args).await,
        Command::Keygen(args) => keygen(&args),
        Command::Issue(args) => issue(args).await,
        Command::Verify(args) => verify(args).await,
        Command::Admit(args) => admit(args).await,
        Command::Revoke(args) => revoke(args).await,
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let policy = IssuancePolicy {
        identity_check_max_age: chrono::TimeDelta::seconds(args.identity_check_max_age.into()),
        ..IssuancePolicy::default()
    };
    let (state, created) =
        crate::server::open_state(&args.data_dir, args.signing_key.as_deref(), Arc::new(SystemClock), policy)
            .await
            .with_context(|| format!("opening data directory {}", args.data_dir.display()))?;
    for path in &created {
        tracing::info!(path = %path.display(), "created");
    }
    tracing::info!(key_id = %state.signer.key_id(), keys = state.keys.keys().len(), "signing key loaded");
    let listener =
        tokio::net::TcpListener::bind(args.listen).await.with_context(|| format!("binding {}", args.listen))?;
    tracing::info!(address = %listener.local_addr()?, "epass listening");
    crate::server::run(listener, state, shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
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
    let signer = crate::keys::PassSigner::from_signing_key(key);
    println!("{}", signer.key_id());
    eprintln!("wrote {} (public key {})", args.out.display(), hex::encode(signer.public_key()));
    Ok(ExitCode::SUCCESS)
}

async fn channel(server: &ServerArg) -> anyhow::Result<Channel> {
    Channel::from_shared(server.server.clone())
        .with_context(|| format!("bad server URL {}", server.server))?
        .connect()
        .await
        .with_context(|| format!("connecting to {}", server.server))
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
    let mut client = pb::issuance_service_client::IssuanceServiceClient::new(channel(&args.server).await?);
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
        let symbol = crate::qr::QrSymbol::encode(&response.qr_text)?;
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

fn read_qr_text(arg: &str) -> anyhow::Result<String> {
    if arg == "-" {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)?;
        Ok(text.trim().to_owned())
    } else {
        Ok(arg.to_owned())
    }
}

/// A verdict as the command prints it.
struct Printed {
    accepted: bool,
    reason: String,
    detail: String,
    pass: Option<pb::PassSummary>,
    entry: Option<pb::Entry>,
    note: Option<&'static str>,
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
            "verdict": if printed.accepted { "accepted" } else { "rejected" },
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
            "note": printed.note,
        });
        println!("{out}");
    } else {
        if printed.accepted {
            println!("ACCEPTED");
        } else {
            println!("REJECTED {}: {}", printed.reason, printed.detail);
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
            println!("entry {} at {} (scan {})", time_text(e.recorded_at.as_ref()), e.checkpoint_id, e.scan_id);
        }
        if let Some(note) = printed.note {
            println!("note: {note}");
        }
    }
    ExitCode::from(if printed.accepted { EXIT_ACCEPTED } else { EXIT_REJECTED })
}

fn reason_text(reason: i32) -> String {
    pb::RejectionReason::try_from(reason)
        .map(|r| r.as_str_name().trim_start_matches("REJECTION_REASON_").to_owned())
        .unwrap_or_else(|_| reason.to_string())
}

async fn verify(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let qr_text = read_qr_text(&args.scan.qr_text)?;
    if args.offline {
        return verify_offline(&args.key, &args.scan, &qr_text);
    }
    let mut client = pb::checkpoint_service_client::CheckpointServiceClient::new(channel(&args.server).await?);
    let response = client
        .verify_pass(pb::VerifyPassRequest {
            qr_text,
            checkpoint_id: args.scan.checkpoint.clone(),
            mode: mode_message(args.scan.mode) as i32,
        })
        .await
        .map_err(status_error)?
        .into_inner();
    let printed = Printed {
        accepted: response.verdict == pb::Verdict::Accepted as i32,
        reason: reason_text(response.reason),
        detail: response.detail,
        pass: response.pass,
        entry: response.entry,
        note: None,
    };
    Ok(print_verdict(&printed, args.scan.json))
}

fn verify_offline(key_files: &[PathBuf], scan: &ScanArgs, qr_text: &str) -> anyhow::Result<ExitCode> {
    let keys = key_files
        .iter()
        .map(|path| crate::datadir::read_verification_key(path, KeyStatus::Active))
        .collect::<Result<Vec<_>, _>>()?;
    let ring = KeyRing::new(keys)?;
    let now: DateTime<Utc> = SystemClock.now();
    let verification = crate::verify::verify(qr_text, &ring, scan.mode.into(), now);
    let pass = verification.pass.as_ref().map(crate::grpc::summary_of);
    let (accepted, reason, detail) = match &verification.verdict {
        Ok(()) => (true, String::new(), String::new()),
        Err(rejection) => (false, rejection.reason().as_str().to_uppercase(), rejection.to_string()),
    };
    let printed = Printed {
        accepted,
        reason,
        detail,
        pass,
        entry: None,
        note: Some("offline: revocation and single use were not checked"),
    };
    Ok(print_verdict(&printed, scan.json))
}

async fn admit(args: AdmitArgs) -> anyhow::Result<ExitCode> {
    let qr_text = read_qr_text(&args.scan.qr_text)?;
    let mut client = pb::checkpoint_service_client::CheckpointServiceClient::new(channel(&args.server).await?);
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
    let printed = Printed {
        accepted: response.verdict == pb::Verdict::Accepted as i32,
        reason: reason_text(response.reason),
        detail: response.detail,
        pass: response.pass,
        entry: response.entry,
        note: None,
    };
    Ok(print_verdict(&printed, args.scan.json))
}

async fn revoke(args: RevokeArgs) -> anyhow::Result<ExitCode> {
    let mut client = pb::issuance_service_client::IssuanceServiceClient::new(channel(&args.server).await?);
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
