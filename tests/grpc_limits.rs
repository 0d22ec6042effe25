//! The per-connection limits over a real socket: the concurrency limit per connection (a
//! saturated connection holds its next call back while other connections are served) and
//! HTTP/2 keepalive (the server pings a quiet connection and closes it when a ping goes
//! unanswered). Each behaviour has a control beside it, showing that the setting, not
//! something else, is what acts.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::{timeout, Instant};
use tonic::transport::Channel;
use tonic::{Status, Streaming};

use common::{at, must_finish, pb, START};
use epass::access::AccessControl;
use epass::config::Limits;
use epass::server::ServeOptions;
use pb::key_service_client::KeyServiceClient;

/// How long a call is given to show that it is held back. Only ever "did not finish within",
/// never a speed assertion: a held-back call would wait forever.
const HELD_BACK: Duration = Duration::from_millis(500);
/// How long a call that must finish, or a frame that must arrive, is given: far beyond what
/// it needs, so that a slow machine does not fail the test.
const GENEROUS: Duration = Duration::from_secs(10);

/// A server started with given limits on a fresh data directory, every call let through.
struct Served {
    addr: SocketAddr,
    _shutdown: oneshot::Sender<()>,
    _task: JoinHandle<Result<(), epass::server::ServeError>>,
    _root: tempfile::TempDir,
}

async fn serve(limits: Limits) -> Served {
    let root = tempfile::tempdir().expect("temporary directory");
    let clock = Arc::new(epass::clock::ManualClock::new(at(START)));
    let (state, _) = epass::server::open_state(&root.path().join("data"), None, clock, Default::default())
        .await
        .expect("open state");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let (shutdown, stop) = oneshot::channel::<()>();
    let options = ServeOptions { access: AccessControl::dangerous_open(), limits, tls: None };
    let task = tokio::spawn(epass::server::run(listener, state, options, async move {
        let _ = stop.await;
    }));
    Served { addr, _shutdown: shutdown, _task: task, _root: root }
}

// Concurrency per connection

/// Opens a `WatchStatusList` stream on `channel` and reads its first list: from then on the
/// stream is open and stays open until dropped.
async fn open_status_stream(channel: &Channel) -> Streaming<pb::GetStatusListResponse> {
    let mut stream = must_finish(
        "opening the status list stream",
        KeyServiceClient::new(channel.clone()).watch_status_list(pb::GetStatusListRequest::default()),
    )
    .await
    .expect("status list stream")
    .into_inner();
    must_finish("the first status list", stream.message()).await.expect("status list").expect("a first status list");
    stream
}

/// Calls `ListVerificationKeys` on `channel`, waiting at most `wait`: `None` if the call was
/// still waiting then (it is abandoned).
async fn list_keys_within(
    channel: &Channel,
    wait: Duration,
) -> Option<Result<pb::ListVerificationKeysResponse, Status>> {
    let mut keys = KeyServiceClient::new(channel.clone());
    timeout(wait, keys.list_verification_keys(pb::ListVerificationKeysRequest {}))
        .await
        .ok()
        .map(|result| result.map(tonic::Response::into_inner))
}

/// Asserts that the call finished, successfully, with the server's key.
fn assert_keys_listed(outcome: Option<Result<pb::ListVerificationKeysResponse, Status>>, what: &str) {
    match outcome {
        Some(Ok(response)) => assert!(!response.keys.is_empty(), "{what}: the server lists its key"),
        Some(Err(status)) => panic!("{what}: the call failed: {status:?}"),
        None => panic!("{what}: the call did not finish within {GENEROUS:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_limit_of_one_a_call_waits_behind_an_open_stream_on_its_connection_only() {
    let server = serve(Limits { concurrency_per_connection: 1, ..Limits::default() }).await;
    let saturated = common::connect(server.addr).await;
    // With nothing in flight the connection serves calls.
    assert_keys_listed(list_keys_within(&saturated, GENEROUS).await, "before the stream");

    let stream = open_status_stream(&saturated).await;
    let held = list_keys_within(&saturated, HELD_BACK).await;
    assert!(held.is_none(), "a second call on a connection at its limit of 1 is held back, but it finished: {held:?}");

    // Another connection has its own allowance.
    let other = common::connect(server.addr).await;
    assert_keys_listed(list_keys_within(&other, GENEROUS).await, "another connection while the first is saturated");

    // Closing the stream frees the connection's one slot.
    drop(stream);
    assert_keys_listed(list_keys_within(&saturated, GENEROUS).await, "the same connection once the stream is closed");
}

/// The control: the same sequence with the default limit, so that the call held back above
/// was held back by the limit and not by the stream itself or the client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_default_limit_a_call_beside_an_open_stream_on_the_same_connection_completes() {
    let limits = Limits::default();
    assert!(limits.concurrency_per_connection > 1, "the control needs room for two calls");
    let server = serve(limits).await;
    let channel = common::connect(server.addr).await;
    let stream = open_status_stream(&channel).await;
    assert_keys_listed(list_keys_within(&channel, GENEROUS).await, "beside an open stream under the default limit");
    drop(stream);
}

// Keepalive, spoken by hand: an HTTP/2 client library answers pings by itself, and the test
// must be able to leave one unanswered.

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const ACK: u8 = 0x1;

/// Limits whose keepalive acts within seconds: a ping after a second of quiet, the connection
/// closed a second after an unanswered one.
fn quick_keepalive() -> Limits {
    Limits {
        keepalive_interval: Duration::from_secs(1),
        keepalive_timeout: Duration::from_secs(1),
        ..Limits::default()
    }
}

/// [`quick_keepalive`] with time to answer each ping: the test's own answers must not race a
/// one-second timeout on a loaded machine.
fn quick_keepalive_patient() -> Limits {
    Limits { keepalive_timeout: Duration::from_secs(10), ..quick_keepalive() }
}

/// What the server did next on a raw connection.
#[derive(Debug)]
enum Next {
    /// It sent a PING (not an acknowledgement), with this payload.
    Ping([u8; 8]),
    /// It sent GOAWAY, closed the connection or reset it.
    Closed(String),
}

/// Opens a TCP connection and starts HTTP/2 as a client: the preface and empty SETTINGS.
async fn h2_connect(addr: SocketAddr) -> TcpStream {
    let mut socket = must_finish("TCP connect", TcpStream::connect(addr)).await.expect("TCP connect");
    socket.write_all(PREFACE).await.expect("write the preface");
    write_frame(&mut socket, SETTINGS, 0, &[]).await;
    socket
}

async fn write_frame(socket: &mut TcpStream, kind: u8, flags: u8, payload: &[u8]) {
    let length = u32::try_from(payload.len()).expect("small frame").to_be_bytes();
    // Length (24 bits), type, flags, stream 0 (connection frames only).
    let mut frame = vec![length[1], length[2], length[3], kind, flags, 0, 0, 0, 0];
    frame.extend_from_slice(payload);
    socket.write_all(&frame).await.expect("write a frame");
}

/// Reads frames until the server pings or closes, acknowledging its SETTINGS (so that the
/// connection is in good standing apart from the pings) and passing over anything else.
async fn next_ping_or_close(socket: &mut TcpStream) -> Next {
    loop {
        let mut header = [0u8; 9];
        if let Err(e) = socket.read_exact(&mut header).await {
            return Next::Closed(format!("reading: {e}"));
        }
        let length = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
        let (kind, flags) = (header[3], header[4]);
        let mut payload = vec![0u8; length];
        if let Err(e) = socket.read_exact(&mut payload).await {
            return Next::Closed(format!("reading: {e}"));
        }
        match kind {
            SETTINGS if flags & ACK == 0 => write_frame(socket, SETTINGS, ACK, &[]).await,
            PING if flags & ACK == 0 => {
                return Next::Ping(payload.try_into().expect("a PING payload is 8 bytes"));
            }
            GOAWAY => return Next::Closed(format!("GOAWAY {payload:02x?}")),
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_pings_a_quiet_connection_and_closes_it_when_the_ping_goes_unanswered() {
    let server = serve(quick_keepalive()).await;
    let mut socket = h2_connect(server.addr).await;
    let next = timeout(GENEROUS, next_ping_or_close(&mut socket)).await.expect("the server pings within 10 s");
    assert!(matches!(next, Next::Ping(_)), "the server pings a quiet connection: {next:?}");
    // The ping is left unanswered.
    let next = timeout(GENEROUS, next_ping_or_close(&mut socket))
        .await
        .expect("the server closes the connection within 10 s of an unanswered ping");
    assert!(matches!(next, Next::Closed(_)), "the server closes the connection: {next:?}");
}

/// The control for the close: a client that answers every ping keeps its connection well past
/// the interval and timeout together. The timeout here is ten times the interval, so that an
/// answer delayed by a loaded machine still arrives in time; were answered pings not enough to
/// keep a connection, it would be closed within the watch all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_answers_the_pings_stays_open() {
    let limits = quick_keepalive_patient();
    let server = serve(limits).await;
    let mut socket = h2_connect(server.addr).await;
    let watched_until = Instant::now() + (limits.keepalive_interval + limits.keepalive_timeout) * 2;
    let mut answered = 0;
    while Instant::now() < watched_until {
        match timeout(GENEROUS, next_ping_or_close(&mut socket)).await.expect("the server keeps pinging") {
            Next::Ping(payload) => {
                write_frame(&mut socket, PING, ACK, &payload).await;
                answered += 1;
            }
            Next::Closed(how) => panic!("the connection was closed after {answered} answered pings: {how}"),
        }
    }
    assert!(answered >= 2, "pings were answered across several intervals: {answered}");
}

/// The control for the ping: with the default interval (30 s) a quiet connection is not pinged
/// within a few seconds, so the pings above come from the configured interval and not from
/// anything else in the HTTP/2 stack.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_default_interval_a_quiet_connection_is_not_pinged_within_seconds() {
    let limits = Limits::default();
    let quick = quick_keepalive();
    assert!(limits.keepalive_interval > quick.keepalive_interval * 10, "the control needs a much longer interval");
    let server = serve(limits).await;
    let mut socket = h2_connect(server.addr).await;
    let watched = (quick.keepalive_interval + quick.keepalive_timeout) * 2;
    let next = timeout(watched, next_ping_or_close(&mut socket)).await;
    assert!(next.is_err(), "neither a ping nor a close within {watched:?} under the default interval: {next:?}");
}
