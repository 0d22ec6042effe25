//! The Prometheus endpoint over a real socket: domain counters, RPC and database latency
//! histograms after a known sequence of calls.
//!
//! One test in this file on purpose: the recorder is global to the process, so the counts are
//! exact only if no other test of the same binary calls the server.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tonic::Code;

use common::{must_finish, start, OTHER_PERMIT, PERMIT};
use epass::grpc::pb;
use epass::telemetry::Metrics;

/// One sample of the text format: name, labels, value.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses the samples of the Prometheus text format (no escaped quotes in our label values).
fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("sample line: {line}"));
            let value = value.parse().unwrap_or_else(|_| panic!("sample value: {line}"));
            let (name, labels) = match series.split_once('{') {
                None => (series, BTreeMap::new()),
                Some((name, rest)) => {
                    let body = rest.strip_suffix('}').unwrap_or_else(|| panic!("labels: {line}"));
                    let labels = body
                        .split("\",")
                        .map(|pair| {
                            let (key, value) = pair.split_once("=\"").unwrap_or_else(|| panic!("label: {line}"));
                            (key.to_owned(), value.trim_end_matches('"').to_owned())
                        })
                        .collect();
                    (name, labels)
                }
            };
            Sample { name: name.to_owned(), labels, value }
        })
        .collect()
}

/// The value of the sample named `name` with exactly `labels`.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let wanted: BTreeMap<String, String> = labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    samples.iter().find(|s| s.name == name && s.labels == wanted).map(|s| s.value)
}

#[track_caller]
fn assert_value(samples: &[Sample], name: &str, labels: &[(&str, &str)], expected: f64) {
    assert_eq!(value(samples, name, labels), Some(expected), "{name}{labels:?}");
}

/// `GET path` over plain HTTP/1.1: the status line and the body.
async fn http_get(addr: SocketAddr, path: &str) -> (String, String) {
    let mut stream = TcpStream::connect(addr).await.expect("connect to the metrics listener");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("send request");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.expect("read response");
    let response = String::from_utf8(response).expect("UTF-8 response");
    let (head, body) = response.split_once("\r\n\r\n").expect("head and body");
    let status = head.lines().next().expect("status line").to_owned();
    assert!(!head.to_ascii_lowercase().contains("transfer-encoding: chunked"), "plain body expected: {head}");
    (status, body.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_issues_verdicts_entries_and_time_rpcs_and_the_database() {
    let metrics = Metrics::install().expect("install the recorder");
    let metrics_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the metrics listener");
    let metrics_addr = metrics_listener.local_addr().expect("metrics address");
    let (stop_metrics, stopped) = tokio::sync::oneshot::channel::<()>();
    let metrics_task = tokio::spawn(metrics.serve(metrics_listener, async move {
        let _ = stopped.await;
    }));

    let server = start().await;
    let issued = server.issue_default().await;
    let qr = issued.qr_text.clone();
    let pass_id = issued.pass.expect("pass").pass_id;

    // VerifyPass: accepted, then mode_not_allowed.
    assert_eq!(server.verify(&qr, pb::TransportMode::Air).await.verdict, pb::Verdict::Accepted as i32);
    assert_eq!(server.verify(&qr, pb::TransportMode::Road).await.verdict, pb::Verdict::Rejected as i32);
    // RecordEntry: admitted by rail; the same scan resent (not counted again); a second entry.
    let scan = server.scan_id();
    assert_eq!(
        server.record(&qr, "SZN-01", pb::TransportMode::Rail, &scan).await.verdict,
        pb::Verdict::Accepted as i32
    );
    assert_eq!(
        server.record(&qr, "SZN-01", pb::TransportMode::Rail, &scan).await.verdict,
        pb::Verdict::Accepted as i32
    );
    let again = server.record(&qr, "PEK-T3", pb::TransportMode::Air, &server.scan_id()).await;
    assert_eq!(again.reason, pb::RejectionReason::AlreadyUsed as i32);
    // VerifyPass after the entry.
    assert_eq!(server.verify(&qr, pb::TransportMode::Air).await.reason, pb::RejectionReason::AlreadyUsed as i32);
    // A second pass for the same person, then the monthly limit.
    server.issue_default().await;
    let refused = server.try_issue(server.application()).await.expect_err("third application is refused");
    assert_eq!(refused.code(), Code::ResourceExhausted);
    // Another person; a malformed lookup.
    server.issue(server.application_for(OTHER_PERMIT)).await;
    let bad = server.try_get("not-a-pass-id").await.expect_err("bad pass id");
    assert_eq!(bad.code(), Code::InvalidArgument);
    server.get(&pass_id).await;

    let (status, body) = http_get(metrics_addr, "/metrics").await;
    assert!(status.ends_with("200 OK"), "{status}");
    let samples = parse(&body);

    assert_value(&samples, "epass_passes_issued_total", &[], 3.0);
    assert_value(&samples, "epass_quota_refusals_total", &[], 1.0);
    let verdict = |method, verdict, reason| {
        value(&samples, "epass_verdicts_total", &[("method", method), ("verdict", verdict), ("reason", reason)])
    };
    assert_eq!(verdict("VerifyPass", "accepted", "none"), Some(1.0));
    assert_eq!(verdict("VerifyPass", "rejected", "mode_not_allowed"), Some(1.0));
    assert_eq!(verdict("VerifyPass", "rejected", "already_used"), Some(1.0));
    assert_eq!(verdict("RecordEntry", "accepted", "none"), Some(1.0), "the resent scan is not counted again");
    assert_eq!(verdict("RecordEntry", "rejected", "already_used"), Some(1.0));
    assert_value(&samples, "epass_entries_recorded_total", &[("mode", "rail")], 1.0);
    assert_eq!(value(&samples, "epass_entries_recorded_total", &[("mode", "air")]), None);

    // RPC latency: every call counted once, by method and status code, in histogram buckets.
    let rpc = |method, code| {
        let service = match method {
            "IssuePass" | "GetPass" | "RevokePass" => "epass.v1.IssuanceService",
            _ => "epass.v1.CheckpointService",
        };
        value(&samples, "epass_rpc_duration_seconds_count", &[("service", service), ("method", method), ("code", code)])
    };
    assert_eq!(rpc("IssuePass", "OK"), Some(3.0));
    assert_eq!(rpc("IssuePass", "RESOURCE_EXHAUSTED"), Some(1.0));
    assert_eq!(rpc("VerifyPass", "OK"), Some(3.0));
    assert_eq!(rpc("RecordEntry", "OK"), Some(3.0));
    assert_eq!(rpc("GetPass", "INVALID_ARGUMENT"), Some(1.0));
    assert_eq!(rpc("GetPass", "OK"), Some(1.0));
    let inf_bucket = value(
        &samples,
        "epass_rpc_duration_seconds_bucket",
        &[("service", "epass.v1.IssuanceService"), ("method", "IssuePass"), ("code", "OK"), ("le", "+Inf")],
    );
    assert_eq!(inf_bucket, Some(3.0), "a histogram, not a summary");
    assert!(
        samples.iter().any(|s| s.name == "epass_rpc_duration_seconds_sum" && s.value > 0.0),
        "durations are recorded"
    );

    // Database latency by store operation: three issues went in, the refused one too.
    let db =
        |operation| value(&samples, "epass_db_duration_seconds_count", &[("operation", operation), ("outcome", "ok")]);
    assert_eq!(db("issue"), Some(4.0));
    assert_eq!(db("record_entry"), Some(3.0));
    assert!(db("pass").is_some_and(|n| n >= 4.0), "VerifyPass reads the pass: {:?}", db("pass"));
    // A new request goes straight to the store's issue: the lookup is off the common path.
    assert_eq!(db("lookup_request"), None);

    // Nothing of a request reaches the metrics.
    assert!(!body.contains(PERMIT) && !body.contains(OTHER_PERMIT) && !body.contains(&pass_id), "{body}");
    let (status, _) = http_get(metrics_addr, "/other").await;
    assert!(status.contains("404"), "{status}");

    server.stop().await;
    stop_metrics.send(()).expect("metrics server running");
    must_finish("metrics shutdown", metrics_task).await.expect("metrics task").expect("metrics server");
}
