//! The status list across two real replicas on one PostgreSQL database and one data directory:
//! `GetStatusList` gives the same lists and deltas whichever replica answers, and a
//! `WatchStatusList` on one replica hears of entries recorded on the other (the test prints
//! the delay; timing is measured, never asserted). Needs PostgreSQL (see `ScratchDatabase`).

mod replica;

use std::path::Path;
use std::time::{Duration, Instant};

use epass::access::LocalTokens;
use epass::clock::Clock as _;
use epass::datadir::{read_verification_key, ROOT_KEY_FILE};
use epass::grpc::pb;
use epass::store::postgres_test_support::ScratchDatabase;
use epass_core::keys::{KeyRing, KeyStatus};
use epass_core::status::{PassEvent, StatusList};
use epass_core::trust::TrustList;
use replica::{application, start_replica, within, Client, Replica};

/// Two replicas sharing one data directory (so one signing key) and the database.
async fn two_replicas(database: &ScratchDatabase, dir: &Path) -> ([Replica; 2], [Client; 2], KeyRing) {
    let data_dir = dir.join("data");
    let config = dir.join("epass.toml");
    std::fs::write(&config, "[limits]\nrate_per_second = 1000000\nshutdown_grace_seconds = 2\n").expect("config");
    let first = start_replica(&data_dir, &config, database.url());
    let second = start_replica(&data_dir, &config, database.url());
    let tokens = LocalTokens::read(&data_dir).expect("local tokens");
    let clients = [Client::connect(&first.address, &tokens).await, Client::connect(&second.address, &tokens).await];
    let root = read_verification_key(&data_dir.join(ROOT_KEY_FILE), KeyStatus::Active).expect("root key");
    let trust = within("GetTrustList", clients[0].trust_list()).await;
    let keys = TrustList::open(&trust.trust_list, &root).expect("trust list").key_ring().expect("key ring");
    ([first, second], clients, keys)
}

fn open(response: &pb::GetStatusListResponse, keys: &KeyRing) -> StatusList {
    let list = StatusList::open(&response.status_list, keys, epass::clock::SystemClock.now()).expect("a valid list");
    assert_eq!((list.sequence, list.base_sequence), (response.sequence, response.base_sequence));
    list
}

/// Passes revoked and used through both replicas; then both are asked for the full list and for
/// the delta since every sequence (and one neither reached): the decoded lists are equal but
/// for when they were signed. What is signed is the framing (version, signer's key id) and the
/// payload (sequence, `issued_at`, `stale_after`, base sequence, entries), and Ed25519 is
/// deterministic: with one key shared by the replicas, two answers signed in the same second
/// are the same bytes. Replicas with different keys (or signing in different seconds) give
/// different signatures over the same entries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_status_list_is_the_same_whichever_replica_answers() {
    let Some(database) = ScratchDatabase::create().await else { return };
    let dir = tempfile::tempdir().expect("temporary directory");
    let (replicas, clients, keys) = two_replicas(&database, dir.path()).await;

    let mut expected = Vec::new();
    for n in 0..8 {
        let by = &clients[n % 2];
        let issued = within("IssuePass", by.issue(application(&format!("status-{n}"), &format!("H4{n:07}"))))
            .await
            .expect("issue");
        let pass_id = issued.pass.expect("pass").pass_id;
        // Each change goes through the replica that did not issue the pass.
        let other = &clients[(n + 1) % 2];
        if n < 4 {
            let answer =
                within("RecordEntry", other.record(&issued.qr_text, "GATE-S", &format!("status-scan-{n}"))).await;
            assert_eq!(answer.expect("record").verdict, pb::Verdict::Accepted as i32);
            expected.push((pass_id, "used"));
        } else {
            within("RevokePass", other.revoke(&pass_id)).await.expect("revoke");
            expected.push((pass_id, "revoked"));
        }
    }

    let head = open(&within("GetStatusList", clients[0].status_list(0)).await, &keys).sequence;
    assert_eq!(head, 8, "one journal event per change, numbered from 1 with no gap");
    let mut identical = 0;
    for since in (0..=head).chain([head + 5]) {
        let answers = [
            within("GetStatusList", clients[0].status_list(since)).await,
            within("GetStatusList", clients[1].status_list(since)).await,
        ];
        let [a, b] = [open(&answers[0], &keys), open(&answers[1], &keys)];
        assert_eq!((a.sequence, a.base_sequence), (b.sequence, b.base_sequence), "since {since}");
        assert_eq!(a.entries, b.entries, "since {since}");
        if a.issued_at == b.issued_at {
            assert_eq!(answers[0].status_list, answers[1].status_list, "one key, one second: the same bytes");
            identical += 1;
        }
        // A sequence beyond the journal (a restored database) gets the full list, on base 0.
        let base = if since > head { 0 } else { since };
        assert_eq!((a.sequence, a.base_sequence), (head, base), "since {since}");
        let events: Vec<_> = a
            .entries
            .iter()
            .map(|e| {
                let event = match e.event {
                    PassEvent::Revoked => "revoked",
                    PassEvent::Used { .. } => "used",
                };
                (e.pass_id.to_string(), event)
            })
            .collect();
        let skip = usize::try_from(base).expect("small");
        assert_eq!(events, expected[skip..], "since {since}: the events after it, in journal order");
    }
    println!("{identical} of {} pairs of answers were byte-identical (signed in the same second)", head + 2);

    drop(clients);
    drop(replicas);
    database.drop_database().await;
}

/// `WatchStatusList` on one replica while another records 50 entries, one at a time: every
/// entry arrives as a delta carrying it. Prints the delay from `RecordEntry`'s answer on one
/// replica to the delta on the other (the journal poller reads every 200 ms); not asserted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_status_list_hears_of_entries_on_the_other_replica() {
    let Some(database) = ScratchDatabase::create().await else { return };
    let dir = tempfile::tempdir().expect("temporary directory");
    let (replicas, clients, keys) = two_replicas(&database, dir.path()).await;

    let mut watch =
        within("WatchStatusList", clients[1].keys.clone().watch_status_list(pb::GetStatusListRequest::default()))
            .await
            .expect("status list stream")
            .into_inner();
    let mut held = within("first list", watch.message()).await.expect("first list").expect("a first list").sequence;
    let mut delays = Vec::new();
    for n in 0..50 {
        let issued = within("IssuePass", clients[0].issue(application(&format!("watch-{n}"), &format!("H5{n:07}"))))
            .await
            .expect("issue");
        let pass_id = issued.pass.expect("pass").pass_id;
        // Entries at uniformly random moments of the poller's 200 ms period: in lock step with
        // the deltas, every entry would land just after a poll and wait a whole period.
        tokio::time::sleep(Duration::from_millis(rand::random::<u64>() % 200)).await;
        let answer = within("RecordEntry", clients[0].record(&issued.qr_text, "GATE-W", &format!("watch-scan-{n}")))
            .await
            .expect("record");
        assert_eq!(answer.verdict, pb::Verdict::Accepted as i32);
        let answered = Instant::now();
        let update = within("a delta on the other replica", watch.message()).await.expect("an update").expect("open");
        delays.push(answered.elapsed());
        let delta = open(&update, &keys);
        assert_eq!((delta.base_sequence, delta.sequence), (held, held + 1), "one delta per entry");
        assert_eq!(delta.entries.len(), 1);
        assert_eq!(delta.entries[0].pass_id.to_string(), pass_id);
        held = delta.sequence;
    }
    delays.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "WatchStatusList delay across replicas over {} entries: min {:.0} ms, median {:.0} ms, p90 {:.0} ms, max {:.0} ms",
        delays.len(),
        ms(delays[0]),
        ms(delays[delays.len() / 2]),
        ms(delays[delays.len() * 9 / 10]),
        ms(delays[delays.len() - 1])
    );

    drop(watch);
    drop(clients);
    drop(replicas);
    database.drop_database().await;
}
