//! A flood of verifications must not take the service out of service (issue 9's live
//! failure): with checkpoints verifying as fast as the server answers, issuance and entries
//! keep succeeding, health stays `SERVING`, and every answered verification has its audit row
//! (the queue loses rows only when it is full, which this load does not reach on any machine
//! that can run it: the batch writer outpaces the verifier).
//!
//! Before the audit queue, every verification spawned its own fsynced insert on the single
//! writer; those piled up without bound in front of issuance, whose calls then waited past the
//! store's lock wait and failed with `UNAVAILABLE`, which also turned health `NOT_SERVING`.
//! The store here waits at most [`WAIT`], so that the failure would show within seconds.

mod callers;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sqlx::Connection as _;
use tonic_health::pb::health_check_response::ServingStatus;

use callers::pb;

/// The store's wait for the writer: a write that waited longer would fail `UNAVAILABLE`.
const WAIT: Duration = Duration::from_secs(2);
/// Verifiers on each of [`CONNECTIONS`], each sending its next call when answered.
const VERIFIERS_PER_CONNECTION: usize = 48;
const CONNECTIONS: usize = 2;
/// Writes made while the flood runs: issues, then an entry for each pass.
const WRITES: usize = 24;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_verification_flood_starves_no_write_and_keeps_health_serving() {
    let server = Arc::new(callers::start_with_wait(Some(WAIT)).await);
    let scanned = server.issue("issuer-a", server.application("flood-source", callers::PERMIT)).await.qr_text;

    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicU64::new(0));
    let mut verifiers = Vec::new();
    for c in 0..CONNECTIONS {
        // A connection of its own per group, as separate gates would have.
        let channel = callers::connect(server.addr).await;
        for _ in 0..VERIFIERS_PER_CONNECTION {
            let mut client =
                server.checkpoint_on(channel.clone(), if c == 0 { "checkpoint-a" } else { "checkpoint-b" });
            let (stop, answered, qr_text) = (Arc::clone(&stop), Arc::clone(&answered), scanned.clone());
            verifiers.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let request = pb::VerifyPassRequest {
                        qr_text: qr_text.clone(),
                        checkpoint_id: "FLOOD-GATE".into(),
                        mode: pb::TransportMode::Air as i32,
                    };
                    let verdict = client.verify_pass(request).await.expect("VerifyPass answers").into_inner();
                    assert_eq!(verdict.verdict, pb::Verdict::Accepted as i32);
                    answered.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
    }
    let health = {
        let (server, stop) = (Arc::clone(&server), Arc::clone(&stop));
        tokio::spawn(async move {
            let mut checks = 0;
            while !stop.load(Ordering::Relaxed) {
                for service in ["", "epass.v1.IssuanceService", "epass.v1.CheckpointService"] {
                    assert_eq!(server.health(service).await, ServingStatus::Serving, "{service:?} under the flood");
                }
                checks += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            checks
        })
    };

    // Let the flood build up, then write while it runs. Every write must succeed: one that
    // waited for the writer longer than the store's wait would fail.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before_writes = answered.load(Ordering::Relaxed);
    let mut passes = Vec::new();
    for n in 0..WRITES {
        let permit = format!("H{:08}", 20_000_000 + n);
        let issued = server.issuance("issuer-b").issue_pass(server.application(&format!("flood-{n}"), &permit)).await;
        passes.push(issued.expect("IssuePass succeeds under the flood").into_inner().qr_text);
    }
    for (n, qr_text) in passes.iter().enumerate() {
        let entry = server.try_record("checkpoint-b", qr_text, "FLOOD-RAIL", &format!("flood-scan-{n}")).await;
        assert_eq!(entry.expect("RecordEntry succeeds under the flood").verdict, pb::Verdict::Accepted as i32);
    }
    let during_writes = answered.load(Ordering::Relaxed) - before_writes;
    stop.store(true, Ordering::Relaxed);
    for verifier in verifiers {
        callers::must_finish("a verifier", verifier).await.expect("verifier panicked");
    }
    let checks = callers::must_finish("the health checker", health).await.expect("health checker panicked");
    assert!(checks > 0, "health was checked during the flood");
    // The flood really ran beside the writes (not a test that cannot fail).
    assert!(during_writes >= WRITES as u64, "only {during_writes} verifications while writing");

    let database = server.database();
    let verified = answered.load(Ordering::Relaxed);
    let _files = Arc::into_inner(server).expect("the only handle left").stop().await;
    // The queue is written out at shutdown: every answered verification has its row.
    let options = sqlx::sqlite::SqliteConnectOptions::new().filename(&database).read_only(true);
    let mut connection = sqlx::SqliteConnection::connect_with(&options).await.expect("open the database");
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit WHERE action = 'verify'")
        .fetch_one(&mut connection)
        .await
        .expect("count the verification rows");
    assert_eq!(u64::try_from(rows).unwrap(), verified, "verification audit rows");
}
