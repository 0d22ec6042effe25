//! The server side of the command line: `serve` (with its metrics endpoint and shutdown
//! signal), `config check` and `keygen`.

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context as _};
use chrono::TimeDelta;

use super::commands::{KeygenArgs, ServeArgs};
use crate::access::LocalTokens;
use crate::clock::SystemClock;
use crate::config::EXIT_CONFIG;
use crate::server::OpenError;
use epass_core::policy::IssuancePolicy;

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

pub(super) fn config_check(path: &Path) -> ExitCode {
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
            println!("database: {}", describe_database(&settings));
            println!("retention: {}", describe_retention(&settings.retention));
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("config error: {error}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

/// The database of `settings`, for people: never the password.
fn describe_database(settings: &crate::config::Settings) -> String {
    let database = &settings.database;
    match &database.url {
        None => format!("SQLite at {}", settings.data_dir.join(crate::datadir::DATABASE_FILE).display()),
        Some(url) => format!(
            "PostgreSQL at {url} (pool_size {}, acquire_timeout_seconds {}, statement_timeout_seconds {})",
            database.pool_size,
            database.acquire_timeout.as_secs(),
            database.statement_timeout.as_secs(),
        ),
    }
}

/// The retention settings, for people.
fn describe_retention(retention: &crate::config::RetentionSettings) -> String {
    let crate::config::RetentionSettings {
        enabled,
        verification_audit_days,
        change_audit_days,
        scans_days,
        holder_names_days,
        status_events_days,
        interval,
        batch_rows,
    } = retention;
    if !enabled {
        return "off: nothing is pruned".to_owned();
    }
    format!(
        "verification audit rows {verification_audit_days} days, other audit rows {change_audit_days} days, \
         scans {scans_days} days, holder names {holder_names_days} days after a pass ends, status events \
         {status_events_days} days after a pass's validity ends; pruned every {} s in batches of {batch_rows}",
        interval.as_secs()
    )
}

pub(super) async fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    // Parse, validate, bind, serve: nothing is opened or bound before the settings are good.
    let overrides = crate::config::Overrides {
        listen: args.listen,
        data_dir: args.data_dir,
        signing_key: args.signing_key,
        allow_insecure: args.allow_insecure.then_some(true),
        metrics_listen: args.metrics_listen.map(|address| address.to_string()),
        log_format: args.log_format,
        identity_check_max_age_seconds: args.identity_check_max_age,
        database_url: args.database_url,
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
    tracing::info!(database = %describe_database(&settings), "opening the database");
    let database = match &settings.database.url {
        Some(url) => url.to_string(),
        None => data_dir.join(crate::datadir::DATABASE_FILE).display().to_string(),
    };
    let opened = crate::server::open_state_with_database(
        data_dir,
        settings.signing_key.as_deref(),
        &settings.database,
        Arc::new(SystemClock),
        policy,
    )
    .await;
    let (mut state, created) = match opened {
        Ok(opened) => opened,
        Err(error) => {
            // A plain sentence: an older binary in a rollout must say why it will not start.
            let too_new = match &error {
                OpenError::Store(error) => super::db::schema_too_new(error),
                _ => None,
            };
            if let Some(too_new) = too_new {
                bail!("{database}: {too_new}");
            }
            let context = match &error {
                OpenError::Store(_) => format!("opening {database}"),
                _ => format!("opening data directory {}", data_dir.display()),
            };
            return Err(anyhow::Error::new(error).context(context));
        }
    };
    state.status_list_lifetime = TimeDelta::from_std(settings.status_list_lifetime)?;
    for path in &created {
        tracing::info!(path = %path.display(), "created");
    }
    tracing::info!(key_id = %state.signer.key_id(), keys = state.keys.keys().len(), "signing key loaded");
    let root_key = data_dir.join(crate::datadir::ROOT_KEY_FILE);
    if crate::datadir::read_signing_key(&root_key).is_ok() {
        tracing::warn!(
            path = %root_key.display(),
            "the root SECRET key is in the data directory: this suits development only. In production keep it \
             offline, sign trust lists on that machine with `epass trust-list build`, and leave here only its \
             public key (`epass root export`) and trust-list.bin (README, Keys)"
        );
    }

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
    // Started before serving, stopped with it: it stops when the server starts closing.
    tracing::info!(retention = %describe_retention(&settings.retention), "retention");
    let pruner = settings.retention.enabled.then(|| {
        crate::store::retention::Pruner::start(
            Arc::clone(&state.store),
            Arc::clone(&state.clock),
            settings.retention,
            state.closing.subscribe(),
        )
    });
    let options = crate::server::ServeOptions { access, limits: settings.limits, tls: settings.tls };
    let served = crate::server::run(listener, state, options, shutdown_signal()).await;
    if let Some(pruner) = pruner {
        pruner.stop().await;
    }
    served?;
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

pub(super) fn keygen(args: &KeygenArgs) -> anyhow::Result<ExitCode> {
    let key = ed25519_dalek::SigningKey::from_bytes(&rand::random());
    crate::datadir::write_signing_key(&args.out, &key)?;
    let signer = epass_core::keys::PassSigner::from_signing_key(key);
    println!("{}", signer.key_id());
    eprintln!("wrote {} (public key {})", args.out.display(), hex::encode(signer.public_key()));
    Ok(ExitCode::SUCCESS)
}
