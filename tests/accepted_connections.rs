//! The server's accepted connections have Nagle's algorithm off. With it on, a response's
//! trailers (written after its headers and data) waited for the client's delayed
//! acknowledgement, and a caller sending one call at a time got about 40 ms a call whatever
//! the server's own time (`docs/PERFORMANCE.md`).

use tokio::net::{TcpListener, TcpStream};
use tokio_stream::StreamExt as _;

#[tokio::test]
async fn accepted_connections_send_without_delay() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let mut incoming = epass::server::incoming(listener);
    let client = TcpStream::connect(address).await.unwrap();
    let accepted = incoming.next().await.expect("a connection").expect("accepted");
    assert!(accepted.nodelay().unwrap(), "TCP_NODELAY on the server's side");
    // The control: a connection accepted without it keeps the system's default (Nagle on).
    assert!(!client.nodelay().unwrap());
}
