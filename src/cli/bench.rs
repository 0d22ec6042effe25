//! `bench`: connects as the arguments say, runs the load generator of [`crate::bench`], and
//! prints its report (beside a bare baseline's with --baseline); and the hidden command that
//! runs the bare verification server.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context as _};
use tonic::transport::Channel;

use super::commands::{BaselineArg, BenchArgs, ServerArg, WorkloadArg};
use super::online::{bearer, endpoint};
use crate::access::Role;
use crate::bench::baseline::{bare_postgres, bare_sqlite, serve_bare_verifier, BareVerifierProcess};
use crate::bench::{self, Comparison, Plan, Stop, Target, Workload};
use crate::grpc::pb;

const DEFAULT_SECONDS: f64 = 10.0;

pub(super) async fn bench(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let plan = plan(&args)?;
    let urls: Vec<&str> = args.server.server.split(',').map(str::trim).filter(|u| !u.is_empty()).collect();
    if urls.is_empty() {
        bail!("--server names no URL");
    }
    let target = target(&args, &urls).await?;
    let connections = target.channels.len();
    let comparison = match args.baseline {
        None => {
            let report = bench::run(&target, &plan).await?;
            print(&args, &report.json(), &report.text());
            return Ok(ExitCode::SUCCESS);
        }
        Some(BaselineArg::Verify) => {
            if plan.workload != Workload::Verify {
                bail!("--baseline verify compares the verify workload");
            }
            let passes = bench::issue_qr_texts(&target, plan.passes.max(1), plan.in_flight).await?;
            let epass = bench::run_with_passes(&target, &plan, passes.clone()).await?;
            let key = active_key(target.channels[0].clone()).await?;
            let bare = BareVerifierProcess::start(&key).await?;
            let url = format!("http://{}", bare.address);
            let mut channels = Vec::with_capacity(connections);
            for _ in 0..connections {
                // Plain HTTP on loopback, whatever TLS the server under test uses.
                let bare = Channel::from_shared(url.clone()).context("the baseline's address")?;
                channels.push(bare.connect().await.context("connecting to the baseline")?);
            }
            let bare_target = Target { channels, issuer: None, checkpoint: None };
            let mut baseline = bench::run_with_passes(&bare_target, &plan, passes).await?;
            baseline.name = "bare tonic verify_strict".into();
            Comparison { epass, baseline }
        }
        Some(BaselineArg::Sqlite) => {
            let epass = bench::run(&target, &plan).await?;
            let baseline = bare_sqlite(&args.baseline_dir, &plan).await?;
            Comparison { epass, baseline }
        }
        Some(BaselineArg::Postgres) => {
            let Some(url) = &args.baseline_database_url else {
                bail!("--baseline postgres needs --baseline-database-url (or EPASS_DATABASE_URL)");
            };
            if args.baseline_pool_size == 0 {
                bail!("--baseline-pool-size must be at least 1");
            }
            let epass = bench::run(&target, &plan).await?;
            let callers = connections * plan.in_flight;
            let baseline = bare_postgres(url, &plan, callers, args.baseline_pool_size).await?;
            Comparison { epass, baseline }
        }
    };
    print(&args, &comparison.json(), &comparison.text());
    Ok(ExitCode::SUCCESS)
}

fn print(args: &BenchArgs, json: &serde_json::Value, text: &str) {
    if args.json {
        println!("{json}");
    } else {
        print!("{text}");
    }
}

fn plan(args: &BenchArgs) -> anyhow::Result<Plan> {
    let stop = match (args.duration, args.count) {
        (_, Some(count)) => Stop::Calls(count),
        (seconds, None) => {
            let seconds = seconds.unwrap_or(DEFAULT_SECONDS);
            if !(seconds > 0.0 && seconds.is_finite()) {
                bail!("--duration must be a positive number of seconds");
            }
            Stop::After(Duration::from_secs_f64(seconds))
        }
    };
    if args.rate.is_some_and(|rate| !(rate > 0.0 && rate.is_finite())) {
        bail!("--rate must be a positive number of calls a second");
    }
    Ok(Plan {
        workload: match args.workload {
            WorkloadArg::Issue => Workload::Issue,
            WorkloadArg::IssuePng => Workload::IssuePng,
            WorkloadArg::Verify => Workload::Verify,
            WorkloadArg::Admit => Workload::Admit,
            WorkloadArg::Mix => Workload::Mix,
        },
        in_flight: args.in_flight as usize,
        stop,
        rate: args.rate,
        passes: args.passes,
        progress: !args.json && std::io::IsTerminal::is_terminal(&std::io::stderr()),
    })
}

/// One channel per connection, spread over `urls` in turn, and the two roles' tokens.
async fn target(args: &BenchArgs, urls: &[&str]) -> anyhow::Result<Target> {
    let mut channels = Vec::with_capacity(args.connections as usize);
    for c in 0..args.connections as usize {
        let url = urls[c % urls.len()];
        let channel = endpoint(url, &args.server)?.connect().await.with_context(|| format!("connecting to {url}"))?;
        channels.push(channel);
    }
    let uri: http::Uri = urls[0].parse().with_context(|| format!("bad server URL {}", urls[0]))?;
    let role_token = |explicit: &Option<String>, role| match explicit {
        Some(token) => {
            let server = ServerArg { token: Some(token.clone()), ..args.server.clone() };
            bearer(&server, &uri, Some(role))
        }
        None => bearer(&args.server, &uri, Some(role)),
    };
    Ok(Target {
        channels,
        issuer: role_token(&args.issuer_token, Role::Issuer)?,
        checkpoint: role_token(&args.checkpoint_token, Role::Checkpoint)?,
    })
}

/// The active pass-signing key's public key, from KeyService.
async fn active_key(channel: Channel) -> anyhow::Result<[u8; 32]> {
    let mut client = pb::key_service_client::KeyServiceClient::new(channel);
    let keys = client.list_verification_keys(pb::ListVerificationKeysRequest {}).await?.into_inner().keys;
    let key = keys
        .into_iter()
        .find(|k| k.status == pb::KeyStatus::Active as i32)
        .context("the server lists no active key")?;
    key.public_key.as_slice().try_into().context("the active key is not 32 bytes")
}

pub(super) async fn baseline_server(public_key: &str, listen: SocketAddr) -> anyhow::Result<ExitCode> {
    let bytes: [u8; 32] =
        hex::decode(public_key).ok().and_then(|b| b.try_into().ok()).context("--public-key must be 32 bytes of hex")?;
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("binding {listen}"))?;
    println!("listening on {}", listener.local_addr()?);
    serve_bare_verifier(listener, &bytes).await?;
    Ok(ExitCode::SUCCESS)
}
