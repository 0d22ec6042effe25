//! A status list watcher on one server hears of an entry recorded by another server sharing
//! its database (another replica, or another process on the same SQLite file): the journal
//! poller reads the sequence every `JOURNAL_POLL`. Without it, the watcher would hear only at
//! its next refresh, half a status list lifetime (30 minutes) later.

mod common;

use common::{must_finish, start};
use epass::grpc::pb;
use epass::grpc::pb::key_service_client::KeyServiceClient;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_hears_of_an_entry_recorded_by_another_server() {
    let first = start().await;
    let second = first.start_beside().await;
    let issued = first.issue_default().await;

    let mut watch = KeyServiceClient::new(second.channel.clone())
        .watch_status_list(pb::GetStatusListRequest::default())
        .await
        .expect("status list stream")
        .into_inner();
    let before = watch.message().await.expect("first list").expect("a first list").sequence;

    let entry = first.record(&issued.qr_text, "SZN-01", pb::TransportMode::Rail, "scan-across").await;
    assert_eq!(entry.verdict, pb::Verdict::Accepted as i32);
    let update = must_finish("a status list update on the other server", watch.message())
        .await
        .expect("an update")
        .expect("the stream goes on");
    assert!(update.sequence > before, "sequence {} after {before}", update.sequence);
    assert_eq!(update.base_sequence, before, "a delta from what the watcher held");
    drop(watch);
    second.stop().await;
    first.stop().await;
}
