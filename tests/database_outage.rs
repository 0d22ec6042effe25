//! A replica whose PostgreSQL server becomes unreachable fails the calls that need it with
//! `UNAVAILABLE` and reports `NOT_SERVING`, and serves again by itself, with no restart, once
//! the server is reachable again (README, *Several replicas*, *PostgreSQL high availability*).
//!
//! The replica reaches PostgreSQL through a TCP proxy in the test, which the outage cuts: every
//! open connection is closed and new ones are refused, as when the primary goes away during a
//! failover, until the proxy listens again on the same address (the address that follows the
//! new primary). The PostgreSQL server, which other tests share, is never stopped. Needs
//! PostgreSQL (see `ScratchDatabase`).

mod replica;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use epass::access::LocalTokens;
use epass::grpc::pb;
use epass::store::postgres_test_support::ScratchDatabase;
use replica::{application, start_replica, within, Client};

/// A TCP proxy to PostgreSQL that can be cut and restored.
struct Proxy {
    address: SocketAddr,
    target: SocketAddr,
    accepting: Option<JoinHandle<()>>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Proxy {
    async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy");
        let address = listener.local_addr().expect("proxy address");
        let mut proxy = Self { address, target, accepting: None, connections: Arc::default() };
        proxy.serve(listener);
        proxy
    }

    fn serve(&mut self, listener: TcpListener) {
        let (target, connections) = (self.target, self.connections.clone());
        self.accepting = Some(tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                connections.lock().unwrap().push(tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                }));
            }
        }));
    }

    /// Closes every connection and stops listening: new connections are refused.
    async fn cut(&mut self) {
        let accepting = self.accepting.take().expect("serving");
        accepting.abort();
        let _ = accepting.await;
        let connections: Vec<_> = self.connections.lock().unwrap().drain(..).collect();
        for connection in connections {
            connection.abort();
            let _ = connection.await;
        }
    }

    /// Listens again on the same address.
    async fn restore(&mut self) {
        let listener = TcpListener::bind(self.address).await.expect("listen again on the proxy's address");
        self.serve(listener);
    }
}

/// Where `host:port` is in a URL.
fn authority(url: &str) -> std::ops::Range<usize> {
    let start = url.find('@').expect("a URL with a user") + 1;
    start..start + url[start..].find('/').expect("a URL with a database")
}

async fn health(client: &Client, service: &str) -> ServingStatus {
    let request = HealthCheckRequest { service: service.to_owned() };
    let response = HealthClient::new(client.channel.clone()).check(request).await.expect("health check");
    response.into_inner().status()
}

async fn wait_for_health(client: &Client, status: ServingStatus) {
    within(&format!("health {status:?}"), async {
        while health(client, "").await != status {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_serves_again_by_itself_after_the_database_comes_back() {
    let Some(database) = ScratchDatabase::create().await else { return };
    let dir = tempfile::tempdir().expect("temporary directory");
    let (data_dir, config) = (dir.path().join("data"), dir.path().join("epass.toml"));
    // A short wait for a pooled connection, so that the calls of the outage fail quickly.
    std::fs::write(&config, "[database]\nacquire_timeout_seconds = 1\n[limits]\nshutdown_grace_seconds = 2\n")
        .expect("config");
    let (direct, host) = (database.url(), authority(database.url()));
    let mut proxy = Proxy::start(direct[host.clone()].parse().expect("the test server's address is IP:PORT")).await;
    let url = format!("{}{}{}", &direct[..host.start], proxy.address, &direct[host.end..]);
    let replica = start_replica(&data_dir, &config, &url);
    let client = Client::connect(&replica.address, &LocalTokens::read(&data_dir).expect("tokens")).await;
    let before = within("IssuePass", client.issue(application("outage-1", "H60000001"))).await.expect("issue");
    assert_eq!(health(&client, "").await, ServingStatus::Serving);

    proxy.cut().await;

    let status = within("IssuePass during the outage", client.issue(application("outage-2", "H60000002")))
        .await
        .expect_err("the database is gone");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}\n{}", replica.log_text());
    let status = within("RecordEntry during the outage", client.record(&before.qr_text, "GATE-O", "outage-scan"))
        .await
        .expect_err("the database is gone");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    wait_for_health(&client, ServingStatus::NotServing).await;
    assert_eq!(health(&client, "epass.v1.IssuanceService").await, ServingStatus::NotServing);
    // The trust list needs no database.
    let trust = within("GetTrustList during the outage", client.trust_list()).await;
    assert!(!trust.trust_list.is_empty());

    // Back: the same process serves again.
    proxy.restore().await;
    wait_for_health(&client, ServingStatus::Serving).await;
    let after = within("IssuePass after the outage", client.issue(application("outage-2", "H60000002")))
        .await
        .expect("the replica serves again");
    assert!(!after.replayed, "the refused request left nothing behind");
    let entry = within("RecordEntry after the outage", client.record(&before.qr_text, "GATE-O", "outage-scan"))
        .await
        .expect("record");
    assert_eq!(entry.verdict, pb::Verdict::Accepted as i32);

    drop(client);
    replica.stop();
    database.drop_database().await;
}
