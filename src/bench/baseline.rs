//! The bare baselines `epass bench --baseline` measures in the same run as epass, so that a
//! figure is read as a ratio to what the machine allows rather than as an absolute time:
//! - `verify`: a tonic server whose `VerifyPass` does only the unavoidable work (the prefix
//!   check, base64url and one `verify_strict`), run as its own process like `epass serve`;
//! - `sqlite`: a durable SQLite quota count and insert (WAL, `synchronous = FULL`, one
//!   transaction each, one writer connection), the floor under any issuance.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;

use anyhow::{bail, Context as _};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ed25519_dalek::{Signature, VerifyingKey};
use epass_core::pass::{QR_PREFIX, SIGNATURE_DOMAIN, SIGNATURE_LEN};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use tokio::io::AsyncBufReadExt as _;
use tokio::net::TcpListener;
use tonic::{Request, Response, Status};

use super::{measure, Outcome, Plan, Report};
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
}

/// Serves the bare verification handler on `listener` until the process ends (the hidden
/// `epass bench-baseline-server` command, which `epass bench --baseline verify` starts).
pub async fn serve_bare_verifier(listener: TcpListener, public_key: &[u8; 32]) -> anyhow::Result<()> {
    let key = VerifyingKey::from_bytes(public_key).context("the baseline's public key")?;
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    tonic::transport::Server::builder()
        .add_service(CheckpointServiceServer::new(BareVerifier { key }))
        .serve_with_incoming(incoming)
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

/// Runs the bare durable SQLite count + insert in a new database under `dir`, with as many
/// concurrent callers as `plan` gives epass over `connections` connections.
pub async fn bare_sqlite(dir: &Path, plan: &Plan, connections: usize) -> anyhow::Result<Report> {
    let dir = tempfile::TempDir::new_in(dir).context("a directory for the baseline database")?;
    let options = SqliteConnectOptions::new()
        .filename(dir.path().join("baseline.sqlite3"))
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full);
    let pool = SqlitePoolOptions::new().max_connections(1).connect_with(options).await?;
    sqlx::query(
        "CREATE TABLE passes (pass_id BLOB PRIMARY KEY, holder BLOB NOT NULL, month TEXT NOT NULL, \
         payload BLOB NOT NULL)",
    )
    .execute(&pool)
    .await?;
    sqlx::query("CREATE INDEX passes_by_holder ON passes (holder, month)").execute(&pool).await?;
    let seed: u64 = rand::random();
    let mut report = measure(plan, connections, move |i| {
        let pool = pool.clone();
        async move {
            match quota_insert(&pool, seed, i).await {
                Ok(()) => Outcome { code: "OK", verdict: None },
                Err(_) => Outcome { code: "UNAVAILABLE", verdict: None },
            }
        }
    })
    .await?;
    report.name = "bare sqlite count + insert".into();
    Ok(report)
}

async fn quota_insert(pool: &sqlx::SqlitePool, seed: u64, i: u64) -> Result<(), sqlx::Error> {
    let mut connection = pool.acquire().await?;
    sqlx::query("BEGIN IMMEDIATE").execute(&mut *connection).await?;
    let holder = [&seed.to_le_bytes()[..], &i.to_le_bytes()[..]].concat();
    let result = async {
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM passes WHERE holder = ? AND month = ?")
            .bind(&holder)
            .bind("2026-12")
            .fetch_one(&mut *connection)
            .await?;
        if count < 2 {
            sqlx::query("INSERT INTO passes (pass_id, holder, month, payload) VALUES (?, ?, ?, ?)")
                .bind(&holder)
                .bind(&holder)
                .bind("2026-12")
                .bind(&[0u8; 200][..])
                .execute(&mut *connection)
                .await?;
        }
        sqlx::query("COMMIT").execute(&mut *connection).await
    }
    .await;
    if result.is_err() {
        let _ = sqlx::query("ROLLBACK").execute(&mut *connection).await;
    }
    result.map(drop)
}
