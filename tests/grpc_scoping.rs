//! Idempotency keys are scoped to the calling identity, over a real socket: the same
//! `request_id` from two issuers is two applications, and the same `scan_id` from two
//! checkpoints is two scans, one after the other or at once. Each caller's retries still get its
//! own first answer.

mod callers;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use callers::pb;
use tokio::sync::Barrier;
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

/// A call, ready to be sent.
type Call<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Runs `calls` at once, each on its task, released together once all are spawned.
async fn all_at_once<T: Send + 'static>(calls: Vec<Call<T>>) -> Vec<T> {
    let start_line = Arc::new(Barrier::new(calls.len()));
    let tasks: Vec<_> = calls
        .into_iter()
        .map(|call| {
            let start_line = start_line.clone();
            tokio::spawn(async move {
                start_line.wait().await;
                call.await
            })
        })
        .collect();
    callers::must_finish("calls at once", futures_util::future::join_all(tasks))
        .await
        .into_iter()
        .map(|r| r.expect("call task"))
        .collect()
}

/// Issue 12: the same `request_id` from two issuers at once, on connections of their own, many
/// times: two requests, two passes, neither a replay of the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_request_id_from_two_issuers_at_once_is_two_passes() {
    let server = callers::start().await;
    for round in 0..10 {
        let permit = format!("H{:08}", 50_000_000 + round);
        // One request id, the same application: only the caller differs.
        let request = server.application(&format!("shared-{round}"), &permit);
        let mut calls: Vec<Call<_>> = Vec::new();
        for caller in ["issuer-a", "issuer-b"] {
            let mut client = server.issuance_on(callers::connect(server.addr).await, caller);
            let request = request.clone();
            calls.push(Box::pin(async move { client.issue_pass(request).await.map(tonic::Response::into_inner) }));
        }
        let answers: Vec<pb::IssuePassResponse> =
            all_at_once(calls).await.into_iter().map(|r| r.expect("each issuer's request succeeds")).collect();
        assert!(answers.iter().all(|a| !a.replayed), "round {round}: neither is a replay: {answers:#?}");
        let pass_id = |r: &pb::IssuePassResponse| r.pass.as_ref().expect("pass").pass_id.clone();
        assert_ne!(pass_id(&answers[0]), pass_id(&answers[1]), "round {round}: two passes");
        // Both count: the person's quota is used up.
        let status = server
            .issuance("issuer-a")
            .issue_pass(server.application(&format!("third-{round}"), &permit))
            .await
            .expect_err("over the monthly limit");
        assert_eq!(status.code(), Code::ResourceExhausted, "round {round}: {status:?}");
    }
    server.stop().await;
}

/// Issue 12: the same `scan_id` from two checkpoints at once, on connections of their own, many
/// times. For one pass: two scans, so one admits the holder and the other is told the pass is
/// used, naming the first one's entry (were they one scan, both would get the admission). For
/// two passes: two scans, both admitted (were they one, the second would be a scan id reused for
/// another pass, `ALREADY_EXISTS`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_scan_id_from_two_checkpoints_at_once_is_two_scans() {
    let server = callers::start().await;
    let accepted = pb::Verdict::Accepted as i32;
    let gates = [("checkpoint-a", "SZN-01"), ("checkpoint-b", "PEK-T3")];
    // Each gate's client on a connection of its own, scanning `qr_text` with `scan_id`.
    let scans = |qr_texts: [String; 2], scan_id: String| {
        let server = &server;
        async move {
            let mut calls: Vec<Call<_>> = Vec::new();
            for ((caller, gate), qr_text) in gates.into_iter().zip(qr_texts) {
                let mut client = server.checkpoint_on(callers::connect(server.addr).await, caller);
                let request = pb::RecordEntryRequest {
                    qr_text,
                    checkpoint_id: gate.to_owned(),
                    mode: pb::TransportMode::Rail as i32,
                    scan_id: scan_id.clone(),
                };
                calls
                    .push(Box::pin(async move { client.record_entry(request).await.map(tonic::Response::into_inner) }));
            }
            let answers: Vec<pb::RecordEntryResponse> =
                all_at_once(calls).await.into_iter().map(|r| r.expect("each checkpoint's scan succeeds")).collect();
            answers
        }
    };
    for round in 0..10 {
        let one = server
            .issue("issuer-a", server.application(&format!("one-{round}"), &format!("H{:08}", 60_000_000 + round)))
            .await;
        let other_permit = format!("M{:08}", 60_000_000 + round);
        let x = server.issue("issuer-a", server.application(&format!("x-{round}"), &other_permit)).await;
        let y = server.issue("issuer-a", server.application(&format!("y-{round}"), &other_permit)).await;

        // One pass, both checkpoints, one scan id.
        let answers = scans([one.qr_text.clone(), one.qr_text.clone()], format!("scan-{round}")).await;
        let winners: Vec<&pb::RecordEntryResponse> = answers.iter().filter(|a| a.verdict == accepted).collect();
        assert_eq!(winners.len(), 1, "round {round}: exactly one admission: {answers:#?}");
        let entry = winners[0].entry.as_ref().expect("the admission's entry");
        let loser = answers.iter().find(|a| a.verdict != accepted).expect("the other scan");
        assert_eq!(loser.reason, pb::RejectionReason::AlreadyUsed as i32, "round {round}: {loser:?}");
        assert_eq!(loser.entry.as_ref(), Some(entry), "round {round}: the other's entry");

        // Two passes, one at each checkpoint, one scan id: both admitted, each at its gate.
        let answers = scans([x.qr_text.clone(), y.qr_text.clone()], format!("scan-{round}-pair")).await;
        for (answer, (_, gate)) in answers.iter().zip(gates) {
            assert_eq!(answer.verdict, accepted, "round {round}: {answers:#?}");
            assert_eq!(answer.entry.as_ref().expect("entry").checkpoint_id, gate, "round {round}");
        }
    }
    server.stop().await;
}
