//! `backup`: a consistent copy of the SQLite database, taken while the server serves.
//!
//! The copy is made with SQLite's `VACUUM INTO`, on a read-only connection of its own: one
//! statement, one read transaction, so the copy is the database as of one commit, with the
//! committed content of the write-ahead log, and in WAL mode it never waits for the server's
//! writer nor holds it up. The online backup API (`sqlite3_backup`) was the other choice: it
//! copies pages, but a step-by-step backup starts over whenever another connection writes,
//! which on a busy server may be always, and a single step holds the same read transaction as
//! `VACUUM INTO` anyway. `VACUUM INTO` also reads every row (a damaged page fails the backup
//! rather than being copied) and writes a compact file. What it does not do is sync: this
//! command syncs the file and its directory itself.

use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::Args;
use rusqlite::{Connection, OpenFlags};

use crate::config::EXIT_CONFIG;

/// How long the copy waits for a lock (SQLite recovering the write-ahead log after a crash,
/// say) before it gives up.
const BUSY_WAIT: Duration = Duration::from_secs(5);

/// The files of the data directory that the database copy does not hold and a restore needs,
/// with why (README, *Backup and restore*).
const ALSO_BACK_UP: [&str; 6] = [
    crate::datadir::SIGNING_KEY_FILE,
    crate::datadir::RETIRED_KEYS_DIR,
    crate::datadir::HASHING_SECRET_FILE,
    crate::datadir::TRUST_LIST_FILE,
    crate::datadir::ROOT_KEY_FILE,
    crate::access::LOCAL_TOKENS_FILE,
];

#[derive(Debug, Args)]
pub(super) struct BackupArgs {
    /// Where to write the copy (mode 0600). It must not exist: a backup never overwrites.
    #[arg(long, value_name = "FILE")]
    pub(super) out: PathBuf,
    /// The configuration file `serve` runs with, for its data directory and database.
    #[arg(long, env = "EPASS_CONFIG", value_name = "FILE")]
    pub(super) config: Option<PathBuf>,
    /// The data directory whose epass.sqlite3 to copy [default: the configuration's, else
    /// ./epass-data].
    #[arg(long, env = "EPASS_DATA_DIR")]
    pub(super) data_dir: Option<PathBuf>,
    /// A PostgreSQL URL is refused: back PostgreSQL up with pg_dump or pg_basebackup.
    #[arg(long, env = "EPASS_DATABASE_URL", hide_env_values = true, value_name = "URL")]
    pub(super) database_url: Option<String>,
}

/// What the copy holds, read back from it.
struct Copied {
    bytes: u64,
    schema_version: i64,
    passes: i64,
    used: i64,
    scans: i64,
    audit_rows: i64,
}

pub(super) async fn backup(args: BackupArgs) -> anyhow::Result<ExitCode> {
    let BackupArgs { out, config, data_dir, database_url } = args;
    let overrides = crate::config::Overrides {
        data_dir,
        database_url: database_url.filter(|url| !url.trim().is_empty()),
        ..crate::config::Overrides::default()
    };
    let settings = match config.as_deref().map(crate::config::read_file).transpose() {
        Ok(file) => file.unwrap_or_default().resolve(overrides),
        Err(error) => Err(error),
    };
    let settings = match settings {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("config error: {error}");
            return Ok(ExitCode::from(EXIT_CONFIG));
        }
    };
    if let Some(url) = &settings.database.url {
        bail!(
            "{url} is PostgreSQL: epass backup copies the SQLite database of a data directory only; back \
             PostgreSQL up with its own tools: pg_dump for a logical copy, or pg_basebackup with WAL archiving \
             for a physical one and point-in-time recovery (README, Backup and restore)"
        );
    }
    let data_dir = settings.data_dir;
    let source = data_dir.join(crate::datadir::DATABASE_FILE);
    if !source.is_file() {
        bail!("no database at {} (give --data-dir or --config)", source.display());
    }
    // Created here, exclusively: an existing file is refused before anything is read, and the
    // copy is never readable by others, whatever the umask.
    match fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&out) {
        Ok(_) => {}
        Err(error) if error.kind() == ErrorKind::AlreadyExists => {
            bail!("{} exists: a backup never overwrites a file; name a new one", out.display())
        }
        Err(error) => return Err(error).with_context(|| format!("creating {}", out.display())),
    }
    let copy = {
        let (source, out) = (source.clone(), out.clone());
        tokio::task::spawn_blocking(move || copy_database(&source, &out)).await?
    };
    let copied = match copy {
        Ok(copied) => copied,
        Err(error) => {
            // Only the file this command created, and found empty or half-written.
            let _ = fs::remove_file(&out);
            return Err(error);
        }
    };
    println!(
        "backed up {} to {}: {} bytes, schema version {}, {} passes ({} used), {} scans, {} audit rows",
        source.display(),
        out.display(),
        copied.bytes,
        copied.schema_version,
        copied.passes,
        copied.used,
        copied.scans,
        copied.audit_rows,
    );
    let present: Vec<&str> = ALSO_BACK_UP.into_iter().filter(|name| data_dir.join(name).exists()).collect();
    if !present.is_empty() {
        println!("not in the copy, back up too (README, Backup and restore): {}", present.join(", "));
    }
    Ok(ExitCode::SUCCESS)
}

/// Copies the database at `source` into the empty file `out`, checks the copy and syncs it.
fn copy_database(source: &Path, out: &Path) -> anyhow::Result<Copied> {
    let out_text = out.to_str().with_context(|| format!("{}: not a UTF-8 path, which SQLite needs", out.display()))?;
    let database =
        Connection::open_with_flags(source, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
            .with_context(|| format!("opening {}", source.display()))?;
    database.busy_timeout(BUSY_WAIT)?;
    database.execute("VACUUM INTO ?1", [out_text]).with_context(|| format!("copying {}", source.display()))?;
    database.close().map_err(|(_, error)| error)?;

    let copy = Connection::open_with_flags(out, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .with_context(|| format!("opening the copy {}", out.display()))?;
    let check: String = copy.query_row("PRAGMA quick_check", [], |row| row.get(0))?;
    if check != "ok" {
        bail!("the copy {} fails SQLite's quick_check: {check}", out.display());
    }
    let count = |sql: &str| copy.query_row(sql, [], |row| row.get::<_, i64>(0));
    let schema_version = count("SELECT COALESCE(MAX(version), 0) FROM _sqlx_migrations WHERE success")
        .context("reading the copy's schema version")?;
    let passes = count("SELECT COUNT(*) FROM passes")?;
    let used = count("SELECT COUNT(*) FROM passes WHERE used_at IS NOT NULL")?;
    let scans = count("SELECT COUNT(*) FROM scans")?;
    let audit_rows = count("SELECT COUNT(*) FROM audit")?;
    copy.close().map_err(|(_, error)| error)?;

    // SQLite does not sync what VACUUM INTO wrote; a backup that a power cut can take is none.
    let file = fs::File::open(out).with_context(|| format!("opening {}", out.display()))?;
    file.sync_all().with_context(|| format!("syncing {}", out.display()))?;
    let bytes = file.metadata()?.len();
    let parent = match out.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    fs::File::open(parent)
        .and_then(|directory| directory.sync_all())
        .with_context(|| format!("syncing the directory {}", parent.display()))?;
    Ok(Copied { bytes, schema_version, passes, used, scans, audit_rows })
}
