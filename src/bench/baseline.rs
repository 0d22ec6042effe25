//! The bare baselines `epass bench --baseline` measures in the same run as epass, so that a
//! figure is read as a ratio to what the machine allows rather than as an absolute time:
//! - `verify`: a tonic server whose `VerifyPass` does only the unavoidable work (the prefix
//!   check, base64url and one `verify_strict`), run as its own process like `epass serve`;
//! - `sqlite`: a durable SQLite quota count and insert (WAL, `synchronous = FULL`, one
//!   transaction each, one writer connection), the floor under any issuance;
//! - `postgres`: the same count and insert in one PostgreSQL transaction, with as many callers
//!   at once as the epass run has calls in flight, over a pool the size of epass's writers.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context as _};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ed25519_dalek::{Signature, VerifyingKey};
use epass_core::pass::{QR_PREFIX, SIGNATURE_DOMAIN, SIGNATURE_LEN};
use tokio::io::AsyncBufReadExt as _;
use tokio::net::TcpListener;
use tonic::{Request, Response, Status};

use super::report::Tally;
use super::{Outcome, Plan, Report, Stop};
use crate::grpc::pb;
use crate::grpc::pb::checkpoint_service_server::{CheckpointService, CheckpointServiceServer};

/// The bare verification handler: one key, no key ring, no store, no audit, no metrics.
#[derive(Debug)]
struct BareVerifier {
    key: VerifyingKey,
}

impl BareVerifier {
    fn accepts(&self, text: &str) -> bool {
        let Some(body) = text.strip_prefix(QR_PREFIX) else { return false };
        let Ok(envelope) = URL_SAFE_NO_PAD.decode(body) else { return false };
        let Some(split) = envelope.len().checked_sub(SIGNATURE_LEN) else { return false };
        let Ok(signature) = Signature::from_slice(&envelope[split..]) else { return false };
        let message = [SIGNATURE_DOMAIN, &envelope[..split]].concat();
        self.key.verify_strict(&message, &signature).is_ok()
    }
}

#[tonic::async_trait]
impl CheckpointService for BareVerifier {
    async fn verify_pass(
        &self,
        request: Request<pb::VerifyPassRequest>,
    ) -> Result<Response<pb::VerifyPassResponse>, Status> {
        let verdict =
            if self.accepts(&request.get_ref().qr_text) { pb::Verdict::Accepted } else { pb::Verdict::Rejected };
        Ok(Response::new(pb::VerifyPassResponse { verdict: verdict as i32, ..Default::default() }))
    }

    async fn record_entry(
        &self,
        _request: Request<pb::RecordEntryRequest>,
    ) -> Result<Response<pb::RecordEntryResponse>, Status> {
        Err(Status::unimplemented("the bare baseline only verifies"))
    }

    async fn sync_entries(
        &self,
        _request: Request<pb::SyncEntriesRequest>,
    ) -> Result<Response<pb::SyncEntriesResponse>, Status> {
        Err(Status::unimplemented("the bare baseline only verifies"))
    }
}

/// Serves the bare verification handler on `listener` until the process ends (the hidden
/// `epass bench-baseline-server` command, which `epass bench --baseline verify` starts).
pub async fn serve_bare_verifier(listener: TcpListener, public_key: &[u8; 32]) -> anyhow::Result<()> {
    let key = VerifyingKey::from_bytes(public_key).context("the baseline's public key")?;
    tonic::transport::Server::builder()
        .add_service(CheckpointServiceServer::new(BareVerifier { key }))
        .serve_with_incoming(crate::server::incoming(listener))
        .await
        .context("the baseline server")
}

/// The bare verification server, running as a child process of this one; killed on drop.
#[derive(Debug)]
pub struct BareVerifierProcess {
    _child: tokio::process::Child,
    /// Where it listens.
    pub address: SocketAddr,
}

impl BareVerifierProcess {
    /// Starts `epass bench-baseline-server` (this same binary) on a free loopback port.
    pub async fn start(public_key: &[u8; 32]) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("finding the epass binary")?;
        let mut child = tokio::process::Command::new(exe)
            .args(["bench-baseline-server", "--public-key", &hex::encode(public_key)])
            .stdout(Stdio::piped())
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting the baseline server")?;
        let stdout = child.stdout.take().context("the baseline server's output")?;
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let line = lines.next_line().await?.context("the baseline server ended before it listened")?;
        let Some(address) = line.strip_prefix("listening on ") else {
            bail!("the baseline server said {line:?}");
        };
        Ok(Self { _child: child, address: address.parse().context("the baseline server's address")? })
    }
}

/// Runs the bare durable SQLite count + insert in a new database under `dir` for as long as
/// `plan` says: one synchronous connection on its own thread, one transaction per insert,
/// back to back (WAL, `synchronous = FULL`). Its rate is the ceiling of any store that commits
/// each write on its own.
pub async fn bare_sqlite(dir: &Path, plan: &Plan) -> anyhow::Result<Report> {
    let dir = tempfile::TempDir::new_in(dir).context("a directory for the baseline database")?;
    let path = dir.path().join("baseline.sqlite3");
    let stop = plan.stop;
    let (latencies, elapsed) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let mut connection = rusqlite::Connection::open(&path)?;
        connection.pragma_update(None, "journal_mode", "WAL")?;
        connection.pragma_update(None, "synchronous", "FULL")?;
        connection.execute_batch(
            "CREATE TABLE passes (pass_id BLOB PRIMARY KEY, holder BLOB NOT NULL, month TEXT NOT NULL, \
             payload BLOB NOT NULL); CREATE INDEX passes_by_holder ON passes (holder, month);",
        )?;
        let seed: u64 = rand::random();
        let started = Instant::now();
        let mut latencies = Vec::new();
        for i in 0u64.. {
            let done = match stop {
                Stop::After(duration) => started.elapsed() >= duration,
                Stop::Calls(n) => i >= n,
            };
            if done {
                break;
            }
            let start = Instant::now();
            let holder = [&seed.to_le_bytes()[..], &i.to_le_bytes()[..]].concat();
            let tx = connection.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let count: i64 = tx.query_row(
                "SELECT COUNT(*) FROM passes WHERE holder = ?1 AND month = ?2",
                rusqlite::params![holder, "2026-12"],
                |row| row.get(0),
            )?;
            if count < 2 {
                tx.execute(
                    "INSERT INTO passes (pass_id, holder, month, payload) VALUES (?1, ?1, ?2, ?3)",
                    rusqlite::params![holder, "2026-12", &[0u8; 200][..]],
                )?;
            }
            tx.commit()?;
            latencies.push(start.elapsed());
        }
        Ok((latencies, started.elapsed()))
    })
    .await
    .context("the baseline thread")??;
    let mut tally = Tally::new();
    for latency in latencies {
        tally.record(latency, &Outcome { code: "OK", verdict: None });
    }
    let mut report = tally.report(plan, elapsed);
    report.name = "bare sqlite count + insert (one thread)".into();
    report.mode = "back to back".into();
    Ok(report)
}

/// Runs the bare PostgreSQL count + insert for as long as `plan` says, in a scratch database
/// created on the server of `url` and dropped afterwards: `callers` tasks at once (the epass
/// run's calls in flight), each a transaction after another on a pool of `pool_size`
/// connections; one transaction is the quota count and the insert, as epass's issue is.
pub async fn bare_postgres(url: &str, plan: &Plan, callers: usize, pool_size: u32) -> anyhow::Result<Report> {
    use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
    use sqlx::{ConnectOptions as _, Connection as _};
    use std::str::FromStr as _;

    let server = PgConnectOptions::from_str(url).context("--baseline-database-url")?;
    let name = format!("epass_bench_{:016x}", rand::random::<u64>());
    let mut admin = server.connect().await.context("connecting to PostgreSQL for the baseline")?;
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut admin).await.context("creating its database")?;
    let pool = PgPoolOptions::new()
        .max_connections(pool_size)
        .connect_with(server.clone().database(&name))
        .await
        .context("connecting to the baseline database")?;
    let run = async {
        sqlx::raw_sql(
            "CREATE TABLE passes (pass_id BYTEA PRIMARY KEY, holder BYTEA NOT NULL, month TEXT NOT NULL, \
             payload BYTEA NOT NULL); CREATE INDEX passes_by_holder ON passes (holder, month);",
        )
        .execute(&pool)
        .await?;
        let started = Instant::now();
        let next = Arc::new(AtomicU64::new(0));
        let seed: u64 = rand::random();
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..callers.max(1) {
            let (pool, next, stop) = (pool.clone(), Arc::clone(&next), plan.stop);
            tasks.spawn(async move {
                let mut latencies = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let done = match stop {
                        Stop::After(duration) => started.elapsed() >= duration,
                        Stop::Calls(n) => i >= n,
                    };
                    if done {
                        return Ok::<_, sqlx::Error>(latencies);
                    }
                    let start = Instant::now();
                    let holder = [&seed.to_le_bytes()[..], &i.to_le_bytes()[..]].concat();
                    let mut tx = pool.begin().await?;
                    let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM passes WHERE holder = $1 AND month = $2")
                        .bind(&holder)
                        .bind("2026-12")
                        .fetch_one(&mut *tx)
                        .await?;
                    if count < 2 {
                        sqlx::query("INSERT INTO passes (pass_id, holder, month, payload) VALUES ($1, $1, $2, $3)")
                            .bind(&holder)
                            .bind("2026-12")
                            .bind(&[0u8; 200][..])
                            .execute(&mut *tx)
                            .await?;
                    }
                    tx.commit().await?;
                    latencies.push(start.elapsed());
                }
            });
        }
        let mut tally = Tally::new();
        while let Some(latencies) = tasks.join_next().await {
            for latency in latencies.context("a baseline caller")?? {
                tally.record(latency, &Outcome { code: "OK", verdict: None });
            }
        }
        Ok::<_, anyhow::Error>(tally.report(plan, started.elapsed()))
    };
    let report = run.await;
    pool.close().await;
    let dropped = sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)")).execute(&mut admin).await;
    let _ = admin.close().await;
    let mut report = report?;
    dropped.with_context(|| format!("dropping the baseline database {name}"))?;
    report.name = format!("bare postgres count + insert ({callers} callers, {pool_size} connections)");
    report.mode = "closed loop".into();
    Ok(report)
}
