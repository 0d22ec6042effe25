//! `db migrate`: brings a database schema up to date ahead of a rollout.

use std::process::ExitCode;

use anyhow::{bail, Context as _};

use super::commands::MigrateArgs;
use crate::config::DatabaseUrl;
use crate::store::{PostgresStore, SchemaTooNew, SqliteStore, StoreError};

pub(super) async fn migrate(args: MigrateArgs) -> anyhow::Result<ExitCode> {
    let MigrateArgs { database_url, data_dir } = args;
    match database_url.filter(|url| !url.trim().is_empty()) {
        Some(text) => {
            let url =
                DatabaseUrl::parse(text.trim()).map_err(|problem| anyhow::anyhow!("--database-url: {problem}"))?;
            let version = match PostgresStore::migrate(url.expose()).await {
                Ok(version) => version,
                Err(error) => match schema_too_new(&error) {
                    Some(too_new) => bail!("{url}: {too_new}"),
                    None => return Err(anyhow::Error::new(error).context(format!("migrating {url}"))),
                },
            };
            println!("PostgreSQL at {url}: schema version {version}");
        }
        None => {
            if !data_dir.is_dir() {
                bail!(
                    "no data directory at {} (give --data-dir, or --database-url for PostgreSQL)",
                    data_dir.display()
                );
            }
            let path = data_dir.join(crate::datadir::DATABASE_FILE);
            crate::datadir::create_database_file(&path)?;
            let store = SqliteStore::open(&path).await.with_context(|| format!("migrating {}", path.display()))?;
            store.close().await;
            let version = sqlite_version(&path).await.with_context(|| format!("reading {}", path.display()))?;
            println!("SQLite at {}: schema version {version}", path.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The newest migration applied to the SQLite database at `path`, read without writing.
async fn sqlite_version(path: &std::path::Path) -> Result<i64, sqlx::Error> {
    use sqlx::{ConnectOptions as _, Connection as _};
    let mut conn = sqlx::sqlite::SqliteConnectOptions::new().filename(path).read_only(true).connect().await?;
    let version: Option<i64> =
        sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations WHERE success").fetch_one(&mut conn).await?;
    conn.close().await?;
    Ok(version.unwrap_or(0))
}

/// The [`SchemaTooNew`] refusal in a store error, if that is what it is: said as one sentence
/// naming both versions, without the migrator's wrapping.
pub(super) fn schema_too_new(error: &StoreError) -> Option<SchemaTooNew> {
    match error {
        StoreError::Migration(sqlx::migrate::MigrateError::Source(source)) => source.downcast_ref().copied(),
        _ => None,
    }
}
