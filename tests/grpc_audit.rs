//! The audit trail, over a real socket: who issued, verified, admitted and revoked a pass, when
//! and from where, refusals included, read back from the database as `epass audit` reads it.

mod callers;

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use sqlx::Row as _;

use callers::{must_finish, pb, Server};
use epass::access::Role;
use epass::store::{AuditAction, AuditEntry, AuditOutcome, SqliteStore, Store as _};
use epass_core::ids::PassId;
use epass_core::pass::TransportMode;
use epass_core::verify::Reason;

/// The trail of a pass as `epass audit` reads it: the database opened read-only, next to the
/// running server.
async fn trail(server: &Server, pass_id: PassId) -> Vec<AuditEntry> {
    let store = SqliteStore::open_read_only(&server.database()).await.expect("open read-only");
    let trail = store.audit_trail(pass_id).await.expect("audit trail");
    store.close().await;
    trail
}

/// Waits until the trail of a pass has `n` rows: a verification's row is written after its
/// answer.
async fn trail_of_length(server: &Server, pass_id: PassId, n: usize) -> Vec<AuditEntry> {
    must_finish(&format!("{n} audit rows"), async {
        loop {
            let trail = trail(server, pass_id).await;
            assert!(trail.len() <= n, "more rows than expected: {trail:#?}");
            if trail.len() == n {
                return trail;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

/// Every audit row, as text, column by column.
async fn every_row_as_text(server: &Server) -> Vec<String> {
    let options = sqlx::sqlite::SqliteConnectOptions::new().filename(server.database()).read_only(true);
    let pool = sqlx::sqlite::SqlitePoolOptions::new().max_connections(1).connect_with(options).await.expect("open");
    let rows = sqlx::query(
        "SELECT seq, at, action, outcome, reason, CASE WHEN pass_id IS NULL THEN 'NULL' ELSE hex(pass_id) END, caller, role, peer, request_key, checkpoint_id, \
         mode, permit_masked FROM audit ORDER BY seq",
    )
    .fetch_all(&pool)
    .await
    .expect("audit rows");
    pool.close().await;
    rows.iter()
        .map(|row| {
            (0..13)
                .map(|i| {
                    row.try_get::<Option<String>, _>(i)
                        .ok()
                        .flatten()
                        .or_else(|| row.try_get::<i64, _>(i).ok().map(|n| n.to_string()))
                        .unwrap_or_else(|| "NULL".to_owned())
                })
                .collect::<Vec<_>>()
                .join(" | ")
        })
        .collect()
}

/// What a row is expected to say; the rest (seq, pass, peer) is checked apart.
#[derive(Debug, PartialEq, Eq)]
struct Expected<'a> {
    at: DateTime<Utc>,
    action: AuditAction,
    outcome: AuditOutcome,
    caller: &'a str,
    role: Option<Role>,
    request_key: Option<&'a str>,
    checkpoint_id: Option<&'a str>,
    mode: Option<TransportMode>,
    permit_masked: Option<&'a str>,
}

fn expected_of(entry: &AuditEntry) -> Expected<'_> {
    Expected {
        at: entry.at,
        action: entry.action,
        outcome: entry.outcome,
        caller: &entry.caller,
        role: entry.role,
        request_key: entry.request_key.as_deref(),
        checkpoint_id: entry.checkpoint_id.as_deref(),
        mode: entry.mode,
        permit_masked: entry.permit_masked.as_deref(),
    }
}

#[tokio::test]
async fn the_trail_names_who_did_what_when_and_from_where() {
    let server = callers::start().await;
    let t0 = server.now();

    let issued = server.issue("issuer-a", server.application("req-1", callers::PERMIT)).await;
    let pass_id: PassId = issued.pass.as_ref().expect("pass").pass_id.parse().expect("pass id");
    trail_of_length(&server, pass_id, 1).await;

    server.clock.advance(TimeDelta::hours(1));
    let verified = server.verify("checkpoint-a", &issued.qr_text, "SZX-AIR-01").await;
    assert_eq!(verified.verdict, pb::Verdict::Accepted as i32);
    trail_of_length(&server, pass_id, 2).await;

    server.clock.advance(TimeDelta::hours(1));
    let admitted = server.record("checkpoint-b", &issued.qr_text, "SZN-01", "scan-1").await;
    assert_eq!(admitted.verdict, pb::Verdict::Accepted as i32);
    // A resend is answered from the first scan and leaves no row.
    server.record("checkpoint-b", &issued.qr_text, "SZN-01", "scan-1").await;
    server.clock.advance(TimeDelta::minutes(5));
    let again = server.record("checkpoint-a", &issued.qr_text, "FUT-02", "scan-1").await;
    assert_eq!(again.reason, pb::RejectionReason::AlreadyUsed as i32);

    server.clock.advance(TimeDelta::hours(1));
    server
        .issuance("admin-a")
        .revoke_pass(pb::RevokePassRequest { pass_id: pass_id.to_string(), reason: "fraud".to_owned() })
        .await
        .expect("RevokePass succeeds");
    let verified = server.verify("checkpoint-a", &issued.qr_text, "SZX-AIR-01").await;
    assert_eq!(verified.reason, pb::RejectionReason::Revoked as i32);

    let trail = trail_of_length(&server, pass_id, 6).await;
    let hour = TimeDelta::hours(1);
    let admit = |at, outcome, caller, role, key, checkpoint| Expected {
        at,
        action: AuditAction::Admit,
        outcome,
        caller,
        role: Some(role),
        request_key: Some(key),
        checkpoint_id: Some(checkpoint),
        mode: Some(TransportMode::Rail),
        permit_masked: None,
    };
    let verify = |at, outcome| Expected {
        at,
        action: AuditAction::Verify,
        outcome,
        caller: "checkpoint-a",
        role: Some(Role::Checkpoint),
        request_key: None,
        checkpoint_id: Some("SZX-AIR-01"),
        mode: Some(TransportMode::Air),
        permit_masked: None,
    };
    let expected = vec![
        Expected {
            at: t0,
            action: AuditAction::Issue,
            outcome: AuditOutcome::Issued,
            caller: "issuer-a",
            role: Some(Role::Issuer),
            request_key: Some("req-1"),
            checkpoint_id: None,
            mode: None,
            permit_masked: Some("H******78"),
        },
        verify(t0 + hour, AuditOutcome::Accepted),
        admit(t0 + hour * 2, AuditOutcome::Accepted, "checkpoint-b", Role::Checkpoint, "scan-1", "SZN-01"),
        admit(
            t0 + hour * 2 + TimeDelta::minutes(5),
            AuditOutcome::Rejected(Reason::AlreadyUsed),
            "checkpoint-a",
            Role::Checkpoint,
            "scan-1",
            "FUT-02",
        ),
        Expected {
            at: t0 + hour * 3 + TimeDelta::minutes(5),
            action: AuditAction::Revoke,
            outcome: AuditOutcome::Revoked,
            caller: "admin-a",
            role: Some(Role::Admin),
            request_key: None,
            checkpoint_id: None,
            mode: None,
            permit_masked: None,
        },
        verify(t0 + hour * 3 + TimeDelta::minutes(5), AuditOutcome::Rejected(Reason::Revoked)),
    ];
    assert_eq!(trail.iter().map(expected_of).collect::<Vec<_>>(), expected);
    for (i, entry) in trail.iter().enumerate() {
        assert_eq!(entry.pass_id, Some(pass_id));
        let peer = entry.peer.unwrap_or_else(|| panic!("row {i} has the caller's address"));
        assert!(peer.ip().is_loopback() && peer.port() != 0, "row {i}: {peer}");
        if i > 0 {
            assert!(entry.seq > trail[i - 1].seq, "oldest first");
        }
    }

    server.stop().await;
}

#[tokio::test]
async fn refusals_are_audited_without_a_pass() {
    let server = callers::start().await;
    server.issue("issuer-a", server.application("req-1", callers::PERMIT)).await;
    server.issue("issuer-b", server.application("req-1", callers::PERMIT)).await;

    // Over the monthly limit: refused, and recorded with the masked permit only.
    let status = server
        .issuance("issuer-b")
        .issue_pass(server.application("req-2", callers::PERMIT))
        .await
        .expect_err("over the limit");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    // A request id reused for another application: refused, recorded.
    let status = server
        .issuance("issuer-a")
        .issue_pass(server.application("req-1", "M87654321"))
        .await
        .expect_err("request id reused");
    assert_eq!(status.code(), tonic::Code::AlreadyExists);
    // A QR that is no pass at all, verified and scanned: rejected, recorded with no pass.
    let forged = "EP1:AAAA";
    let verdict = server.verify("checkpoint-a", forged, "SZX-AIR-01").await;
    assert_eq!(verdict.reason, pb::RejectionReason::BadFormat as i32);
    let verdict = server.record("checkpoint-b", forged, "SZN-01", "scan-9").await;
    assert_eq!(verdict.reason, pb::RejectionReason::BadFormat as i32);

    let rows = must_finish("six audit rows", async {
        loop {
            let rows = every_row_as_text(&server).await;
            if rows.len() >= 6 {
                return rows;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(rows.len(), 6, "{rows:#?}");
    let refusals: Vec<_> =
        rows.iter().filter(|r| r.contains("| NULL | issuer-") || r.contains("| NULL | checkpoint-")).collect();
    assert_eq!(refusals.len(), 4, "rows without a pass: {rows:#?}");
    let find = |needle: &str| {
        rows.iter().find(|r| r.contains(needle)).unwrap_or_else(|| panic!("a row with {needle:?} in {rows:#?}"))
    };
    let quota = find("quota_exhausted");
    assert!(
        quota.contains("| issuer-b | issuer |") && quota.contains("| req-2 |") && quota.contains("H******78"),
        "{quota}"
    );
    let conflict = find("request_id_conflict");
    assert!(conflict.contains("| issuer-a | issuer |") && conflict.contains("M******21"), "{conflict}");
    let verify = find("| verify | rejected | bad_format |");
    assert!(verify.contains("| checkpoint-a | checkpoint |") && verify.contains("SZX-AIR-01"), "{verify}");
    let admit = find("| admit | rejected | bad_format |");
    assert!(admit.contains("| checkpoint-b | checkpoint |") && admit.contains("| scan-9 |"), "{admit}");

    // No row holds a permit or phone number in clear.
    for row in &rows {
        for secret in [callers::PERMIT, "87654321", "13800138000", "12345678"] {
            assert!(!row.contains(secret), "{secret} in {row}");
        }
    }

    server.stop().await;
}
