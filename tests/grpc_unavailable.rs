//! When the database cannot be written, calls that write fail with `UNAVAILABLE` and health
//! turns `NOT_SERVING`; once it can be written again, health returns to `SERVING` and the calls
//! succeed, with no restart. Over a real socket, with the write lock really held: a separate
//! connection takes it with `BEGIN EXCLUSIVE`, as another process could (as root, file
//! permissions cannot make the file unwritable).

mod callers;

use std::time::Duration;

use sqlx::Connection as _;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

use callers::pb;

/// The server's wait for a lock: short, so that the test does not sit through the default.
const WAIT: Duration = Duration::from_millis(200);

const ISSUANCE: &str = "epass.v1.IssuanceService";
const CHECKPOINT: &str = "epass.v1.CheckpointService";
const KEYS: &str = "epass.v1.KeyService";

#[tokio::test]
async fn a_held_write_lock_makes_the_service_unavailable_until_it_is_released() {
    let server = callers::start_with_wait(Some(WAIT)).await;
    let issued = server.issue("issuer-a", server.application("req-1", callers::PERMIT)).await;
    for service in ["", ISSUANCE, CHECKPOINT, KEYS] {
        assert_eq!(server.health(service).await, ServingStatus::Serving, "{service:?}");
    }

    // Someone else holds the write lock.
    let options = sqlx::sqlite::SqliteConnectOptions::new().filename(server.database());
    let mut holder = sqlx::SqliteConnection::connect_with(&options).await.expect("second connection");
    sqlx::query("BEGIN EXCLUSIVE").execute(&mut holder).await.expect("take the write lock");

    let status = server
        .issuance("issuer-a")
        .issue_pass(server.application("req-2", callers::PERMIT))
        .await
        .expect_err("the database cannot be written");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(!status.message().contains("lock"), "no internal text: {}", status.message());
    // Reported before the failed call returned.
    assert_eq!(server.health("").await, ServingStatus::NotServing);
    assert_eq!(server.health(ISSUANCE).await, ServingStatus::NotServing);
    assert_eq!(server.health(CHECKPOINT).await, ServingStatus::NotServing);
    // The keys are served from reads alone.
    assert_eq!(server.health(KEYS).await, ServingStatus::Serving);

    // Entries cannot be recorded either; verification (reads only) still answers.
    let status = server
        .try_record("checkpoint-a", &issued.qr_text, "SZN-01", "scan-1")
        .await
        .expect_err("the database cannot be written");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    let verdict = server.verify("checkpoint-a", &issued.qr_text, "SZX-AIR-01").await;
    assert_eq!(verdict.verdict, pb::Verdict::Accepted as i32);

    // Still held: the probe keeps failing, and health stays NOT_SERVING.
    tokio::time::sleep(epass::grpc::PROBE_INTERVAL * 2).await;
    assert_eq!(server.health("").await, ServingStatus::NotServing);

    sqlx::query("ROLLBACK").execute(&mut holder).await.expect("release the write lock");
    holder.close().await.expect("close");

    // The probe sees the database again: the same server serves again.
    server.wait_for_health("", ServingStatus::Serving).await;
    assert_eq!(server.health(ISSUANCE).await, ServingStatus::Serving);
    assert_eq!(server.health(CHECKPOINT).await, ServingStatus::Serving);
    let second = server.issue("issuer-a", server.application("req-2", callers::PERMIT)).await;
    assert!(!second.replayed, "the failed request left nothing behind");
    let entry = server.record("checkpoint-a", &issued.qr_text, "SZN-01", "scan-1").await;
    assert_eq!(entry.verdict, pb::Verdict::Accepted as i32);

    server.stop().await;
}
