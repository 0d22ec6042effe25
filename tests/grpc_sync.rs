//! `SyncEntries` over a real socket: two checkpoints that admitted the same pass while offline
//! sync in either order, and the pass ends with one entry (the earlier) and one double entry,
//! in `GetPass` and the status list; a re-upload changes nothing; and a bad batch is refused
//! whole with `INVALID_ARGUMENT` naming the entry, recording nothing.

mod common;

use chrono::{DateTime, TimeDelta, Utc};
use tonic::Code;

use common::{bad_fields, start, time_of, ts, TestServer};
use epass::grpc::pb;
use epass_core::ids::PassId;
use epass_core::journal::{JournalEntry, GENESIS};
use epass_core::pass::TransportMode;

/// An offline checkpoint's journal, built with the core's hash chain.
struct Gate {
    journal_id: String,
    checkpoint_id: String,
    entries: Vec<(JournalEntry, String)>,
}

impl Gate {
    fn new(journal_id: &str, checkpoint_id: &str) -> Self {
        Self { journal_id: journal_id.into(), checkpoint_id: checkpoint_id.into(), entries: Vec::new() }
    }

    /// Records an admission of `qr_text` at `recorded_at`.
    fn admit(&mut self, scan_id: &str, qr_text: &str, pass_id: &str, recorded_at: DateTime<Utc>) {
        let prev_hash = self.entries.last().map_or(GENESIS, |(e, _)| e.hash().unwrap());
        let entry = JournalEntry {
            journal_id: self.journal_id.clone(),
            seq: self.entries.len() as u64 + 1,
            scan_id: scan_id.into(),
            pass_id: pass_id.parse::<PassId>().unwrap(),
            checkpoint_id: self.checkpoint_id.clone(),
            mode: TransportMode::Rail,
            recorded_at,
            prev_hash,
        };
        self.entries.push((entry, qr_text.into()));
    }

    /// The request for entries `from..=to` (1-based).
    fn request(&self, from: usize, to: usize) -> pb::SyncEntriesRequest {
        let entries = self.entries[from - 1..to]
            .iter()
            .map(|(e, qr)| pb::JournalEntry {
                seq: e.seq,
                scan_id: e.scan_id.clone(),
                qr_text: qr.clone(),
                checkpoint_id: e.checkpoint_id.clone(),
                mode: pb::TransportMode::Rail as i32,
                recorded_at: Some(ts(e.recorded_at)),
                prev_hash: e.prev_hash.0.to_vec(),
                hash: e.hash().unwrap().0.to_vec(),
            })
            .collect();
        pb::SyncEntriesRequest { journal_id: self.journal_id.clone(), entries }
    }
}

async fn try_sync(
    server: &TestServer,
    request: pb::SyncEntriesRequest,
) -> Result<Vec<pb::SyncEntryResult>, tonic::Status> {
    Ok(server.checkpoint.clone().sync_entries(request).await?.into_inner().results)
}

async fn sync(server: &TestServer, request: pb::SyncEntriesRequest) -> Vec<pb::SyncEntryResult> {
    try_sync(server, request).await.expect("SyncEntries succeeds")
}

fn scan_of(entry: &Option<pb::Entry>) -> (&str, &str) {
    let entry = entry.as_ref().expect("an entry");
    (entry.scan_id.as_str(), entry.checkpoint_id.as_str())
}

/// Issues a pass, then lets an hour pass: the gates admit within it.
async fn issued_pass(server: &TestServer, permit: &str) -> (String, String) {
    let issued = server.issue(server.application_for(permit)).await;
    (issued.qr_text, issued.pass.expect("pass").pass_id)
}

async fn two_gates_in_order(a_first: bool) {
    let server = start().await;
    let (qr, pass_id) = issued_pass(&server, "H12345678").await;
    let start = server.now();
    server.clock.advance(TimeDelta::hours(1));
    let (mut a, mut b) = (Gate::new("journal-a", "SZN-A"), Gate::new("journal-b", "SZN-B"));
    // Gate B admitted the holder first, gate A twenty minutes later.
    a.admit("a-1", &qr, &pass_id, start + TimeDelta::minutes(40));
    b.admit("b-1", &qr, &pass_id, start + TimeDelta::minutes(20));

    let (first, second) = if a_first { (&a, &b) } else { (&b, &a) };
    let answer = sync(&server, first.request(1, 1)).await;
    assert_eq!(answer[0].outcome, pb::SyncOutcome::Recorded as i32, "{answer:?}");
    let answer = sync(&server, second.request(1, 1)).await;
    assert_eq!(answer.len(), 1);
    let result = &answer[0];
    assert_eq!((result.outcome, result.pass_id.as_str()), (pb::SyncOutcome::Conflict as i32, pass_id.as_str()));
    // The answer names both: B's is the entry (earlier), A's the double entry.
    assert_eq!(scan_of(&result.entry), ("b-1", "SZN-B"));
    assert_eq!(scan_of(&result.double_entry), ("a-1", "SZN-A"));

    let pass = server.get(&pass_id).await;
    assert_eq!(pass.state, pb::PassState::Used as i32);
    assert_eq!(scan_of(&pass.entry), ("b-1", "SZN-B"));
    assert_eq!(time_of(&pass.entry.as_ref().unwrap().recorded_at), start + TimeDelta::minutes(20));
    assert_eq!(pass.double_entries.len(), 1);
    assert_eq!(
        (pass.double_entries[0].scan_id.as_str(), pass.double_entries[0].checkpoint_id.as_str()),
        ("a-1", "SZN-A")
    );

    // An online scan is refused with the entry; the status list lists the pass once.
    let online = server.record(&qr, "PEK-T3", pb::TransportMode::Air, "online-1").await;
    assert_eq!(online.reason, pb::RejectionReason::AlreadyUsed as i32);
    assert_eq!(scan_of(&online.entry), ("b-1", "SZN-B"));
    let status = server.keys.clone().get_status_list(pb::GetStatusListRequest { since_sequence: 0 }).await.unwrap();
    assert_eq!(status.into_inner().sequence, 1, "one use, whatever the order of the syncs");

    // Both journals uploaded again: nothing changes.
    for gate in [&a, &b] {
        let again = sync(&server, gate.request(1, 1)).await;
        assert_eq!(again[0].outcome, pb::SyncOutcome::AlreadyRecorded as i32, "{again:?}");
        assert_eq!(scan_of(&again[0].entry), ("b-1", "SZN-B"));
    }
    assert_eq!(server.get(&pass_id).await, pass);
}

#[tokio::test]
async fn two_offline_gates_give_one_entry_and_one_double_entry_when_the_later_syncs_first() {
    two_gates_in_order(true).await;
}

#[tokio::test]
async fn two_offline_gates_give_one_entry_and_one_double_entry_when_the_earlier_syncs_first() {
    two_gates_in_order(false).await;
}

/// Asserts that the batch was refused whole, naming `entries[index]` and saying `says`.
async fn assert_refused(server: &TestServer, request: pb::SyncEntriesRequest, index: usize, says: &str) {
    let status = try_sync(server, request).await.expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let field = format!("entries[{index}]");
    assert!(bad_fields(&status).iter().any(|f| f.starts_with(&field)), "{field}: {status:?}");
    assert!(status.message().contains(says), "{says:?}: {}", status.message());
}

#[tokio::test]
async fn a_bad_batch_is_refused_whole_and_names_the_entry() {
    let server = start().await;
    let (qr, pass_id) = issued_pass(&server, "H12345678").await;
    let (other_qr, other_id) = issued_pass(&server, "M87654321").await;
    let start = server.now();
    server.clock.advance(TimeDelta::hours(1));
    let fine = start + TimeDelta::minutes(10);

    // Ahead of the server's clock by more than the tolerance.
    let mut gate = Gate::new("j-future", "G1");
    gate.admit("f-1", &other_qr, &other_id, fine);
    gate.admit("f-2", &qr, &pass_id, server.now() + TimeDelta::minutes(11));
    assert_refused(&server, gate.request(1, 2), 1, "ahead of the server's clock").await;

    // Outside the pass's window.
    let mut gate = Gate::new("j-window", "G1");
    gate.admit("w-1", &other_qr, &other_id, fine);
    gate.admit("w-2", &qr, &pass_id, start - TimeDelta::hours(2));
    assert_refused(&server, gate.request(1, 2), 1, "not valid before").await;

    // A field changed after the hash was computed.
    let mut gate = Gate::new("j-tampered", "G1");
    gate.admit("t-1", &qr, &pass_id, fine);
    let mut request = gate.request(1, 1);
    request.entries[0].checkpoint_id = "ELSEWHERE".into();
    assert_refused(&server, request, 0, "the entry was changed").await;

    // Entry 2 removed before upload.
    let mut gate = Gate::new("j-removed", "G1");
    gate.admit("r-1", &other_qr, &other_id, fine);
    gate.admit("r-2", &qr, &pass_id, fine);
    gate.admit("r-3", &qr, &pass_id, fine);
    let mut request = gate.request(1, 3);
    request.entries.remove(1);
    assert_refused(&server, request, 1, "consecutive").await;

    // Nothing of any of those was recorded.
    for id in [&pass_id, &other_id] {
        let pass = server.get(id).await;
        assert_eq!((pass.entry, pass.double_entries.len()), (None, 0));
    }

    // A scan id reused with a different pass: the one journal synced, then another reusing it.
    let mut gate = Gate::new("j-ok", "G1");
    gate.admit("reused", &qr, &pass_id, fine);
    sync(&server, gate.request(1, 1)).await;
    let mut gate = Gate::new("j-reuse", "G2");
    gate.admit("reused", &other_qr, &other_id, fine);
    assert_refused(&server, gate.request(1, 1), 0, "was used before").await;
    assert_eq!(server.get(&other_id).await.entry, None);

    // The same journal changed after it was acknowledged.
    let mut altered = Gate::new("j-ok", "G1");
    altered.admit("reused", &qr, &pass_id, fine + TimeDelta::seconds(1));
    assert_refused(&server, altered.request(1, 1), 0, "acknowledged before").await;
}
