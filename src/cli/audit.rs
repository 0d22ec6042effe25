//! `audit`: the audit trail of a pass, read from the data directory's database or from
//! PostgreSQL.

use std::process::ExitCode;

use anyhow::{bail, Context as _};
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::json;

use super::commands::AuditArgs;
use epass_core::pass::TransportMode;

pub(super) async fn audit(args: AuditArgs) -> anyhow::Result<ExitCode> {
    use crate::store::Store as _;

    let pass_id: epass_core::ids::PassId =
        args.pass_id.parse().map_err(|_| anyhow::anyhow!("pass id {:?} is not 32 hex digits", args.pass_id))?;
    let trail = match &args.database_url {
        Some(text) => {
            let url = crate::config::DatabaseUrl::parse(text.trim())
                .map_err(|problem| anyhow::anyhow!("--database-url: {problem}"))?;
            // One connection each way is plenty for one query; connecting also migrates, as a
            // server start would.
            let settings = crate::store::PostgresSettings {
                max_connections: 1,
                read_connections: 1,
                ..crate::store::PostgresSettings::default()
            };
            let store = crate::store::PostgresStore::connect(url.expose(), settings)
                .await
                .with_context(|| format!("opening {url}"))?;
            let trail = store.audit_trail(pass_id).await.context("reading the audit trail");
            store.close().await;
            trail
        }
        None => {
            let path = args.data_dir.join(crate::datadir::DATABASE_FILE);
            if !path.exists() {
                bail!("no database at {}", path.display());
            }
            let store = crate::store::SqliteStore::open_read_only(&path).await.with_context(|| {
                format!("opening {} read-only (a database not yet migrated needs one server start)", path.display())
            })?;
            let trail = store.audit_trail(pass_id).await.context("reading the audit trail");
            store.close().await;
            trail
        }
    };
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
