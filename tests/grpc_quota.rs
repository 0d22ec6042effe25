//! Integration tests over a real socket: the monthly quota (2 applications per person per
//! calendar month in UTC+8), idempotent retries and concurrent applications, through one server
//! or two on one database.

mod common;

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use tonic::{Code, Status};
use tonic_types::StatusExt as _;

use common::{at, connect, start, TestServer, OTHER_PERMIT, PERMIT};
use epass::grpc::pb;

/// Asserts a quota refusal that names `next` as the time of the next possible application.
fn assert_quota_refusal(status: &Status, now: DateTime<Utc>, next: &str) {
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains(next), "message names {next}: {}", status.message());
    let details = status.get_error_details();
    let info = details.error_info().expect("ErrorInfo");
    assert_eq!(info.reason, "MONTHLY_LIMIT_REACHED");
    assert_eq!(info.domain, "epass");
    assert_eq!(info.metadata.get("next_application_at").map(String::as_str), Some(next), "{info:?}");
    let retry = details.retry_info().expect("RetryInfo");
    let delay = (at(next) - now).to_std().expect("next is ahead");
    assert_eq!(retry.retry_delay, Some(delay));
    let quota = details.quota_failure().expect("QuotaFailure");
    assert_eq!(quota.violations.len(), 1, "{quota:?}");
}

/// Moves the clock; applications built afterwards carry an identity check a minute before.
fn set_clock(server: &TestServer, time: &str) {
    server.clock.set(at(time));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn third_application_is_refused_until_the_month_turns_in_utc_plus_8() {
    let server = start().await;
    server.issue_default().await;
    set_clock(&server, "2026-11-30T12:00:00Z");
    server.issue_default().await;

    let status = server.try_issue(server.application()).await.expect_err("third application in November");
    assert_quota_refusal(&status, server.now(), "2026-11-30T16:00:00Z");

    // The last second of November in UTC+8.
    set_clock(&server, "2026-11-30T15:59:59Z");
    let status = server.try_issue(server.application()).await.expect_err("still November in UTC+8");
    assert_quota_refusal(&status, server.now(), "2026-11-30T16:00:00Z");
    assert_eq!(status.get_details_retry_info().expect("RetryInfo").retry_delay, Some(Duration::from_secs(1)));

    // Midnight, 1 December in UTC+8: a new month, a new quota of two.
    set_clock(&server, "2026-11-30T16:00:00Z");
    server.issue_default().await;
    server.issue_default().await;
    let status = server.try_issue(server.application()).await.expect_err("third application in December");
    assert_quota_refusal(&status, server.now(), "2026-12-31T16:00:00Z");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn december_quota_turns_into_the_next_year() {
    let server = start().await;
    set_clock(&server, "2026-12-31T15:00:00Z");
    server.issue_default().await;
    server.issue_default().await;
    let status = server.try_issue(server.application()).await.expect_err("third application in December");
    assert_quota_refusal(&status, server.now(), "2026-12-31T16:00:00Z");
    set_clock(&server, "2026-12-31T16:00:00Z");
    server.issue_default().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_passes_still_count() {
    let server = start().await;
    for _ in 0..2 {
        let pass = server.issue_default().await.pass.expect("pass");
        server.revoke(&pass.pass_id, "withdrawn by the applicant").await;
    }
    let status = server.try_issue(server.application()).await.expect_err("revoked passes count");
    assert_quota_refusal(&status, server.now(), "2026-11-30T16:00:00Z");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn used_passes_count_and_refusals_do_not() {
    let server = start().await;
    let first = server.issue_default().await;
    let scan = server.scan_id();
    let answer = server.record(&first.qr_text, "SZX-AIR-01", pb::TransportMode::Air, &scan).await;
    assert_eq!(answer.verdict, pb::Verdict::Accepted as i32);
    // Refusals for time-dependent rules (stale check, expired permit) take no quota.
    for _ in 0..3 {
        let mut request = server.application();
        common::identity_check(&mut request).checked_at = Some(common::ts(server.now() - TimeDelta::minutes(30)));
        let status = server.try_issue(request).await.expect_err("stale check");
        assert_eq!(status.code(), Code::InvalidArgument);
    }
    server.assert_quota_left(PERMIT, 1).await;
    // Quota refusals take none either: next month starts with two.
    set_clock(&server, "2026-12-01T00:00:00Z");
    server.assert_quota_left(PERMIT, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_person_is_unaffected_and_permit_spelling_does_not_matter() {
    let server = start().await;
    server.issue_default().await;
    server.issue_default().await;
    server.assert_quota_left(OTHER_PERMIT, 2).await;
    // The same permit number written differently is the same person.
    let status = server.try_issue(server.application_for("h1234 5678")).await.expect_err("same person");
    assert_quota_refusal(&status, server.now(), "2026-11-30T16:00:00Z");
    // Different name or mobile with the same permit number: still the same person.
    let mut request = server.application();
    common::applicant(&mut request).name_latin = "WONG SIU MING".to_owned();
    common::applicant(&mut request).mobile = "+8613900139000".to_owned();
    let status = server.try_issue(request).await.expect_err("same permit");
    assert_eq!(status.code(), Code::ResourceExhausted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_applications_for_the_last_slot_issue_exactly_one() {
    let server = start().await;
    server.issue_default().await;
    let requests: Vec<pb::IssuePassRequest> = (0..10).map(|_| server.application()).collect();
    let calls = requests.into_iter().map(|request| {
        let addr = server.addr;
        async move {
            let channel = connect(addr).await;
            pb::issuance_service_client::IssuanceServiceClient::new(channel)
                .issue_pass(request)
                .await
                .map(tonic::Response::into_inner)
        }
    });
    let results = common::must_finish("concurrent applications", futures_util::future::join_all(calls)).await;
    let issued = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(issued, 1, "{results:#?}");
    for result in results.iter().filter(|r| r.is_err()) {
        let status = result.as_ref().expect_err("refused");
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    }
    let status = server.try_issue(server.application()).await.expect_err("quota used up");
    assert_eq!(status.code(), Code::ResourceExhausted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retried_request_returns_the_same_pass_and_takes_no_quota() {
    let server = start().await;
    let request = server.application();
    let first = server.issue(request.clone()).await;
    assert!(!first.replayed);

    let retry = server.issue(request.clone()).await;
    assert!(retry.replayed);
    assert_eq!(retry.qr_text, first.qr_text);
    assert_eq!(retry.pass, first.pass);
    assert_eq!(retry.qr_version, first.qr_version);

    // A retry long after, when the identity check would be stale, still replays; the image
    // format is not part of the application.
    server.clock.advance(TimeDelta::hours(1));
    let mut late = request.clone();
    late.image_format = pb::QrImageFormat::Svg as i32;
    let retry = server.issue(late).await;
    assert!(retry.replayed);
    assert_eq!(retry.qr_text, first.qr_text);
    assert!(retry.qr_svg.contains("<svg"));

    // The replay took no quota: one more application succeeds, then the limit.
    server.assert_quota_left(PERMIT, 1).await;

    // With the quota used up, the retry still answers with the pass.
    let retry = server.issue(request).await;
    assert!(retry.replayed);
    assert_eq!(retry.qr_text, first.qr_text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reused_request_id_with_another_application_is_already_exists() {
    let server = start().await;
    let request = server.application();
    let first = server.issue(request.clone()).await;

    let mut other = request.clone();
    common::applicant(&mut other).mobile = "+8613900139000".to_owned();
    let status = server.try_issue(other).await.expect_err("id reused");
    assert_eq!(status.code(), Code::AlreadyExists, "{status:?}");

    let mut other_person = request.clone();
    common::applicant(&mut other_person).permit_number = OTHER_PERMIT.to_owned();
    let status = server.try_issue(other_person).await.expect_err("id reused");
    assert_eq!(status.code(), Code::AlreadyExists, "{status:?}");

    // Nothing changed: the first pass stands, one application is left, and the other person
    // has the whole quota.
    let pass = first.pass.expect("pass");
    assert_eq!(server.get(&pass.pass_id).await, pass);
    server.assert_quota_left(PERMIT, 1).await;
    server.assert_quota_left(OTHER_PERMIT, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_retries_of_one_request_issue_one_pass() {
    let server = start().await;
    let request = server.application();
    let calls = (0..5).map(|_| {
        let addr = server.addr;
        let request = request.clone();
        async move {
            let channel = connect(addr).await;
            pb::issuance_service_client::IssuanceServiceClient::new(channel)
                .issue_pass(request)
                .await
                .map(tonic::Response::into_inner)
        }
    });
    let results = common::must_finish("concurrent retries", futures_util::future::join_all(calls)).await;
    let responses: Vec<pb::IssuePassResponse> = results.into_iter().map(|r| r.expect("every retry succeeds")).collect();
    let fresh = responses.iter().filter(|r| !r.replayed).count();
    assert_eq!(fresh, 1, "exactly one call issued: {responses:#?}");
    for response in &responses {
        assert_eq!(response.qr_text, responses[0].qr_text);
    }
    server.assert_quota_left(PERMIT, 1).await;
}

/// Issue 12: two servers on one SQLite database file (two `SqliteStore`s, as two processes
/// would have; the README allows it), applications for one person sent through both at once,
/// many times: never more than the monthly limit of 2 is issued, and every other application is
/// refused `RESOURCE_EXHAUSTED`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_applications_through_two_servers_on_one_database_never_exceed_the_limit() {
    const ROUNDS: usize = 8;
    const APPLICATIONS_PER_SERVER: usize = 3;
    let first = start().await;
    let second = first.start_beside().await;
    for round in 0..ROUNDS {
        let permit = format!("M{:08}", 40_000_000 + round);
        let mut calls = Vec::new();
        for server in [&first, &second] {
            for _ in 0..APPLICATIONS_PER_SERVER {
                calls.push((connect(server.addr).await, server.application_for(&permit)));
            }
        }
        let start_line = std::sync::Arc::new(tokio::sync::Barrier::new(calls.len()));
        let calls: Vec<_> = calls
            .into_iter()
            .map(|(channel, request)| {
                let start_line = start_line.clone();
                tokio::spawn(async move {
                    start_line.wait().await;
                    pb::issuance_service_client::IssuanceServiceClient::new(channel)
                        .issue_pass(request)
                        .await
                        .map(tonic::Response::into_inner)
                })
            })
            .collect();
        let results: Vec<_> = common::must_finish("concurrent applications", futures_util::future::join_all(calls))
            .await
            .into_iter()
            .map(|r| r.expect("application task"))
            .collect();
        let issued: Vec<&pb::IssuePassResponse> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
        assert_eq!(issued.len(), 2, "round {round}: exactly the monthly limit is issued: {results:#?}");
        assert_ne!(issued[0].pass, issued[1].pass, "round {round}: two passes");
        for status in results.iter().filter_map(|r| r.as_ref().err()) {
            assert_eq!(status.code(), Code::ResourceExhausted, "round {round}: {status:?}");
        }
        // Through either server, the person has no application left this month.
        for server in [&first, &second] {
            let status = server.try_issue(server.application_for(&permit)).await.expect_err("quota used up");
            assert_eq!(status.code(), Code::ResourceExhausted, "round {round}: {status:?}");
        }
    }
    second.stop().await;
    first.stop().await;
}
