//! Idempotency keys are scoped to the calling identity, over a real socket: the same
//! `request_id` from two issuers is two applications, and the same `scan_id` from two
//! checkpoints is two scans. Each caller's retries still get its own first answer.

mod callers;

use callers::pb;
use tonic::Code;

#[tokio::test]
async fn the_same_request_id_from_two_issuers_is_two_requests() {
    let server = callers::start().await;
    let request = server.application("req-1", callers::PERMIT);

    let a = server.issue("issuer-a", request.clone()).await;
    let b = server.issue("issuer-b", request.clone()).await;
    assert!(!a.replayed && !b.replayed);
    let pass_id = |r: &pb::IssuePassResponse| r.pass.as_ref().expect("pass").pass_id.clone();
    assert_ne!(pass_id(&a), pass_id(&b), "two requests, two passes");

    // Each issuer's retry gets its own pass back, and counts nothing more.
    let a_again = server.issue("issuer-a", request.clone()).await;
    assert!(a_again.replayed);
    assert_eq!((pass_id(&a_again), &a_again.qr_text), (pass_id(&a), &a.qr_text));
    let b_again = server.issue("issuer-b", request.clone()).await;
    assert!(b_again.replayed);
    assert_eq!((pass_id(&b_again), &b_again.qr_text), (pass_id(&b), &b.qr_text));

    // Both passes count against the person's quota (2 a month): a third request is refused,
    // whoever sends it.
    let status = server
        .issuance("issuer-a")
        .issue_pass(server.application("req-2", callers::PERMIT))
        .await
        .expect_err("over the monthly limit");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");

    server.stop().await;
}

#[tokio::test]
async fn a_request_id_conflicts_only_within_one_issuer() {
    let server = callers::start().await;
    server.issue("issuer-a", server.application("req-1", callers::PERMIT)).await;

    // issuer-a reuses its id for another person: refused.
    let other = server.application("req-1", "M87654321");
    let status = server.issuance("issuer-a").issue_pass(other.clone()).await.expect_err("request id reused");
    assert_eq!(status.code(), Code::AlreadyExists, "{status:?}");

    // issuer-b never used it: a new request.
    let b = server.issue("issuer-b", other).await;
    assert!(!b.replayed);

    server.stop().await;
}

#[tokio::test]
async fn the_same_scan_id_from_two_checkpoints_is_two_scans() {
    let server = callers::start().await;
    let first = server.issue("issuer-a", server.application("req-1", callers::PERMIT)).await;
    let second = server.issue("issuer-a", server.application("req-2", callers::PERMIT)).await;
    let accepted = pb::Verdict::Accepted as i32;
    let rejected = pb::Verdict::Rejected as i32;
    let already_used = pb::RejectionReason::AlreadyUsed as i32;

    let a = server.record("checkpoint-a", &first.qr_text, "SZN-01", "scan-1").await;
    assert_eq!(a.verdict, accepted, "{a:?}");

    // checkpoint-b also numbers its scans from 1. Its scan is new, not a resend of
    // checkpoint-a's: the pass is used, and it says so.
    let b = server.record("checkpoint-b", &first.qr_text, "PEK-T3", "scan-1").await;
    assert_eq!((b.verdict, b.reason), (rejected, already_used), "{b:?}");
    let entry = b.entry.as_ref().expect("the first entry");
    assert_eq!((entry.checkpoint_id.as_str(), entry.scan_id.as_str()), ("SZN-01", "scan-1"));

    // Each resends and gets its own first answer back.
    let a_again = server.record("checkpoint-a", &first.qr_text, "SZN-01", "scan-1").await;
    assert_eq!(a_again.verdict, accepted, "{a_again:?}");
    assert_eq!(a_again.entry, a.entry);
    let b_again = server.record("checkpoint-b", &first.qr_text, "PEK-T3", "scan-1").await;
    assert_eq!((b_again.verdict, b_again.reason), (rejected, already_used), "{b_again:?}");

    // Within one checkpoint, a scan id reused for another pass is still refused, and the
    // other pass is left unused.
    for caller in ["checkpoint-a", "checkpoint-b"] {
        let status = server
            .try_record(caller, &second.qr_text, "SZN-01", "scan-1")
            .await
            .expect_err("scan id reused for another pass");
        assert_eq!(status.code(), Code::AlreadyExists, "{caller}: {status:?}");
    }
    let fresh = server.record("checkpoint-b", &second.qr_text, "PEK-T3", "scan-2").await;
    assert_eq!(fresh.verdict, accepted, "{fresh:?}");

    server.stop().await;
}
