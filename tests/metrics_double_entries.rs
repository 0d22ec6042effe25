//! The double entry metric over a real socket: two offline checkpoints admitted one pass, and
//! `epass_double_entries_total` counts the double entry once, however often the journals are
//! uploaded again; the pass's one entry counts in `epass_entries_recorded_total` once.
//!
//! One test in this file on purpose: the recorder is global to the process.

mod common;

use chrono::TimeDelta;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

use common::{start, ts};
use epass::grpc::pb;
use epass::telemetry::Metrics;
use epass_core::journal::{JournalEntry, GENESIS};
use epass_core::pass::TransportMode;

/// The value of a sample line `series value` of the Prometheus text, if present.
fn sample(body: &str, series: &str) -> Option<f64> {
    body.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

async fn scrape(addr: std::net::SocketAddr) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect to the metrics listener");
    let request = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("send request");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read response");
    response.split_once("\r\n\r\n").expect("head and body").1.to_owned()
}

/// A one-entry journal of `checkpoint_id` admitting `qr` at `at`.
fn journal(
    id: &str,
    checkpoint_id: &str,
    qr: &str,
    pass_id: &str,
    at: chrono::DateTime<chrono::Utc>,
) -> pb::SyncEntriesRequest {
    let entry = JournalEntry {
        journal_id: id.into(),
        seq: 1,
        scan_id: format!("{id}-1"),
        pass_id: pass_id.parse().unwrap(),
        checkpoint_id: checkpoint_id.into(),
        mode: TransportMode::Rail,
        recorded_at: at,
        prev_hash: GENESIS,
    };
    pb::SyncEntriesRequest {
        journal_id: id.into(),
        entries: vec![pb::JournalEntry {
            seq: 1,
            scan_id: entry.scan_id.clone(),
            qr_text: qr.into(),
            checkpoint_id: checkpoint_id.into(),
            mode: pb::TransportMode::Rail as i32,
            recorded_at: Some(ts(at)),
            prev_hash: GENESIS.0.to_vec(),
            hash: entry.hash().unwrap().0.to_vec(),
        }],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_double_entry_is_counted_once() {
    let metrics = Metrics::install().expect("install the recorder");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the metrics listener");
    let addr = listener.local_addr().expect("metrics address");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(metrics.serve(listener, async move {
        let _ = stopped.await;
    }));

    let server = start().await;
    let issued = server.issue_default().await;
    let pass_id = issued.pass.expect("pass").pass_id;
    let start = server.now();
    server.clock.advance(TimeDelta::hours(1));
    let a = journal("journal-a", "SZN-A", &issued.qr_text, &pass_id, start + TimeDelta::minutes(10));
    let b = journal("journal-b", "SZN-B", &issued.qr_text, &pass_id, start + TimeDelta::minutes(20));
    for _ in 0..3 {
        for request in [&a, &b] {
            server.checkpoint.clone().sync_entries(request.clone()).await.expect("SyncEntries succeeds");
        }
    }

    let body = scrape(addr).await;
    assert_eq!(sample(&body, "epass_double_entries_total"), Some(1.0), "{body}");
    assert_eq!(sample(&body, "epass_entries_recorded_total{mode=\"rail\"}"), Some(1.0), "{body}");
    let _ = stop.send(());
    task.await.expect("metrics task").expect("metrics served");
}
