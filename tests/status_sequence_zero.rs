//! Issue 10, point 7: on a fresh server the status journal is empty, sequence 0, and the first
//! event reaches a watcher as a list on base_sequence 0. docs/FORMAT.md defines that as the full
//! list and, at once, the delta on the empty list: the core opens both, and applying the second
//! to the first gives exactly the second.

mod common;

use common::{must_finish, start};
use epass::grpc::pb;
use epass_core::keys::KeyStatus;
use epass_core::status::StatusList;
use epass_core::trust::TrustList;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_servers_first_event_is_a_full_list_and_a_delta_on_zero() {
    let server = start().await;
    let now = server.now();
    let root =
        epass::datadir::read_verification_key(&server.data_dir.join(epass::datadir::ROOT_KEY_FILE), KeyStatus::Active)
            .expect("root key");
    let trust = server.keys.clone().get_trust_list(pb::GetTrustListRequest {}).await.expect("trust list");
    let ring = TrustList::open(&trust.into_inner().trust_list, &root).expect("trust list opens").key_ring().unwrap();
    let issued = server.issue_default().await;

    let mut watch = server
        .keys
        .clone()
        .watch_status_list(pb::GetStatusListRequest { since_sequence: 0 })
        .await
        .expect("status list stream")
        .into_inner();
    let first = watch.message().await.expect("first list").expect("a first list");
    assert_eq!((first.sequence, first.base_sequence), (0, 0), "the empty journal");
    let mut held = StatusList::open(&first.status_list, &ring, now).expect("the empty full list opens");
    assert!(held.entries.is_empty());

    let entry = server.record(&issued.qr_text, "SZN-01", pb::TransportMode::Rail, "scan-zero").await;
    assert_eq!(entry.verdict, pb::Verdict::Accepted as i32);
    let update = must_finish("the first event", watch.message()).await.expect("an update").expect("the stream goes on");
    assert_eq!((update.sequence, update.base_sequence), (1, 0), "the first event, on base 0");
    let received = StatusList::open(&update.status_list, &ring, now).expect("the list on base 0 opens");
    assert_eq!(received.entries.len(), 1);

    // Applied as a delta on the list held, or taken as the full list: the same entries.
    held.apply(received.clone()).expect("a list on base 0 follows the list of sequence 0");
    assert_eq!(held, received);
    // And GetStatusList with since_sequence 0, a caller holding sequence 0, gets the same.
    let full = server.keys.clone().get_status_list(pb::GetStatusListRequest { since_sequence: 0 }).await.unwrap();
    let full = StatusList::open(&full.into_inner().status_list, &ring, now).unwrap();
    assert_eq!((full.sequence, full.base_sequence, &full.entries), (1, 0, &received.entries));
    drop(watch);
    server.stop().await;
}
