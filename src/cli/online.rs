//! The commands that call a server: connecting (TLS, bearer token, error text), `issue`,
//! `verify` (online; offline is handed to `offline`), `admit` and `revoke`.

use std::process::ExitCode;

use anyhow::{bail, Context as _};
use serde_json::json;
use tonic::transport::{Channel, Endpoint};

use super::commands::{mode_message, AdmitArgs, IssueArgs, RevokeArgs, ServerArg, SexArg, SituationArg, VerifyArgs};
use super::input::read_file;
use super::offline::{verify_with_raw_keys, verify_with_trust_list};
use super::output::{modes_text, print_verdict, time_text, Printed};
use crate::access::{LocalTokens, Role};
use crate::clock::{Clock, SystemClock};
use crate::grpc::pb;

/// Puts the bearer token, if any, on every call.
#[derive(Debug, Clone)]
pub(super) struct Bearer(Option<tonic::metadata::AsciiMetadataValue>);

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
pub(super) async fn connect(server: &ServerArg, role: Option<Role>) -> anyhow::Result<Connection> {
    let endpoint = endpoint(&server.server, server)?;
    let value = bearer(server, endpoint.uri(), role)?;
    let channel = endpoint.connect().await.with_context(|| format!("connecting to {}", server.server))?;
    Ok(tonic::service::interceptor::InterceptedService::new(channel, Bearer(value)))
}

/// The endpoint of `url`, with the TLS settings of `server` for https:// URLs.
pub(super) fn endpoint(url: &str, server: &ServerArg) -> anyhow::Result<Endpoint> {
    use tonic::transport::{Certificate, ClientTlsConfig, Identity};
    let mut endpoint = Channel::from_shared(url.to_owned()).with_context(|| format!("bad server URL {url}"))?;
    let https = endpoint.uri().scheme_str() == Some("https");
    match (&server.tls_ca, https) {
        (Some(ca), true) => {
            let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read_file(ca)?));
            if let (Some(cert), Some(key)) = (&server.tls_cert, &server.tls_key) {
                tls = tls.identity(Identity::from_pem(read_file(cert)?, read_file(key)?));
            }
            endpoint = endpoint.tls_config(tls).context("TLS settings")?;
        }
        (None, true) => bail!("{url} is https: give --tls-ca, the CA certificate that signed the server's"),
        (Some(_), false) => bail!("--tls-ca needs an https:// server URL, not {url}"),
        (None, false) => {}
    }
    Ok(endpoint)
}

/// The `authorization` value for `role` at `uri`, if there is a token to send.
pub(super) fn bearer(
    server: &ServerArg,
    uri: &http::Uri,
    role: Option<Role>,
) -> anyhow::Result<Option<tonic::metadata::AsciiMetadataValue>> {
    bearer_token(server, uri, role)?
        .map(|token| format!("Bearer {token}").parse::<tonic::metadata::AsciiMetadataValue>())
        .transpose()
        .context("the token must be printable ASCII")
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

pub(super) fn status_error(status: tonic::Status) -> anyhow::Error {
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

pub(super) async fn issue(args: IssueArgs) -> anyhow::Result<ExitCode> {
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
            checked_at: Some(crate::grpc::timestamp_of(args.identity_checked_at.unwrap_or(now))),
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

pub(super) async fn verify(args: VerifyArgs) -> anyhow::Result<ExitCode> {
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
    let printed = Printed::online(
        response.verdict,
        response.reason,
        response.format_problem,
        response.detail,
        response.pass,
        response.entry,
    );
    Ok(print_verdict(&printed, args.scan.json))
}

pub(super) async fn admit(args: AdmitArgs) -> anyhow::Result<ExitCode> {
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
    let printed = Printed::online(
        response.verdict,
        response.reason,
        response.format_problem,
        response.detail,
        response.pass,
        response.entry,
    );
    Ok(print_verdict(&printed, args.scan.json))
}

pub(super) async fn revoke(args: RevokeArgs) -> anyhow::Result<ExitCode> {
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
