//! Integration tests over a real socket: every rejection reason with its exact code, malformed
//! QR texts with their format problem, tampering, the single entry under retries and
//! concurrency (two servers on one database included), a revocation racing an entry, and a
//! revocation reaching the status list (full, delta, watched) and offline verification.

mod common;

use chrono::TimeDelta;
use tonic::Code;

use common::{
    connect, contents, envelope, must_finish, qr_text, sign, sign_envelope, start, start_with_key, time_of, TestServer,
};
use epass::grpc::pb;
use epass_core::ids::PassId;
use epass_core::keys::{KeyRing, KeyStatus, VerificationKey};
use epass_core::offline::{verify_offline, OfflineContext, Outcome, StatusCheck};
use epass_core::pass::{TransportMode, HEADER_LEN, MAX_ENVELOPE_LEN, SIGNATURE_LEN};
use epass_core::status::{PassEvent, StatusEntry, StatusList};
use epass_core::trust::TrustList;
use epass_core::verify::{CheckTime, Rejection};

/// Asserts a rejection with `reason` (and `problem` for `BAD_FORMAT`).
fn assert_rejected(
    response: &pb::VerifyPassResponse,
    reason: pb::RejectionReason,
    problem: pb::FormatProblem,
    context: &str,
) {
    assert_eq!(
        (response.verdict, response.reason, response.format_problem),
        (pb::Verdict::Rejected as i32, reason as i32, problem as i32),
        "{context}: {response:?}"
    );
    assert!(!response.detail.is_empty(), "{context}: a rejection explains itself");
}

/// The same for a `RecordEntry` answer.
fn assert_entry_rejected(
    response: &pb::RecordEntryResponse,
    reason: pb::RejectionReason,
    problem: pb::FormatProblem,
    context: &str,
) {
    assert_eq!(
        (response.verdict, response.reason, response.format_problem),
        (pb::Verdict::Rejected as i32, reason as i32, problem as i32),
        "{context}: {response:?}"
    );
    assert!(!response.detail.is_empty(), "{context}: a rejection explains itself");
}

const NO_PROBLEM: pb::FormatProblem = pb::FormatProblem::Unspecified;

/// What a flip of one bit at `index` of an envelope of `len` bytes must give.
fn expected_for_flip(index: usize, len: usize) -> (pb::RejectionReason, pb::FormatProblem) {
    if index == 0 {
        (pb::RejectionReason::BadFormat, pb::FormatProblem::UnsupportedVersion)
    } else if index < HEADER_LEN {
        (pb::RejectionReason::UnknownKey, NO_PROBLEM)
    } else {
        assert!(index < len);
        // Payload and signature bytes alike: the signature no longer verifies.
        (pb::RejectionReason::BadSignature, NO_PROBLEM)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bit_flips_anywhere_are_rejected_for_the_reason_of_their_place() {
    let server = start().await;
    let response = server.issue_default().await;
    let original = envelope(&response.qr_text);
    let len = original.len();
    assert!(len > HEADER_LEN + SIGNATURE_LEN, "{len}");

    // Every bit of the header; one bit of every later byte, the bit position turning with
    // the byte so that all positions are covered. Each of those later flips costs a signature
    // verification (milliseconds in a debug build), so all 8 bits of ~140 bytes would take
    // the suite over ten seconds for little more assurance.
    let mut cases = Vec::new();
    for index in 0..len {
        let bits = if index < HEADER_LEN { (0..8).collect::<Vec<_>>() } else { vec![index % 8] };
        for bit in bits {
            let mut tampered = original.clone();
            tampered[index] ^= 1 << bit;
            cases.push((index, bit, qr_text(&tampered)));
        }
    }
    assert_eq!(cases.len(), HEADER_LEN * 8 + len - HEADER_LEN);
    // A few calls at a time over one connection keep the suite fast.
    for chunk in cases.chunks(32) {
        let answers = futures_util::future::join_all(
            chunk.iter().map(|(_, _, text)| server.verify(text, pb::TransportMode::Air)),
        )
        .await;
        for ((index, bit, _), answer) in chunk.iter().zip(answers) {
            let (reason, problem) = expected_for_flip(*index, len);
            let context = format!("bit {bit} of byte {index} of {len}");
            assert_rejected(&answer, reason, problem, &context);
            assert_eq!(answer.pass, None, "{context}: nothing authentic to show");
        }
    }

    // The untouched pass is still accepted: the rejections came from the flips.
    let verdict = server.verify(&response.qr_text, pb::TransportMode::Air).await;
    assert_eq!(verdict.verdict, pb::Verdict::Accepted as i32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_pass_cannot_be_recorded() {
    let server = start().await;
    let response = server.issue_default().await;
    let mut tampered = envelope(&response.qr_text);
    tampered[HEADER_LEN + 3] ^= 0x01;
    let scan = server.scan_id();
    let answer = server.record(&qr_text(&tampered), "SZX-AIR-01", pb::TransportMode::Air, &scan).await;
    assert_entry_rejected(&answer, pb::RejectionReason::BadSignature, NO_PROBLEM, "payload flip");
    assert_eq!(answer.pass, None);
    assert_eq!(answer.entry, None);
    let pass = server.get(&response.pass.expect("pass").pass_id).await;
    assert_eq!(pass.state, pb::PassState::Valid as i32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pass_signed_by_another_key_is_unknown_key() {
    let server = start().await;
    let foreign = ed25519_dalek::SigningKey::from_bytes(&common::FOREIGN_KEY_SECRET);
    let text = sign(contents(server.now()), &foreign);

    let verdict = server.verify(&text, pb::TransportMode::Air).await;
    assert_rejected(&verdict, pb::RejectionReason::UnknownKey, NO_PROBLEM, "foreign key");
    assert_eq!(verdict.pass, None);

    let scan = server.scan_id();
    let answer = server.record(&text, "SZX-AIR-01", pb::TransportMode::Air, &scan).await;
    assert_entry_rejected(&answer, pb::RejectionReason::UnknownKey, NO_PROBLEM, "foreign key");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pass_signed_by_the_servers_key_but_never_issued_is_unknown_pass() {
    let server = start_with_key().await;
    let text = sign(contents(server.now()), &common::server_signing_key());

    let verdict = server.verify(&text, pb::TransportMode::Air).await;
    assert_rejected(&verdict, pb::RejectionReason::UnknownPass, NO_PROBLEM, "never issued");
    // The signature verified, so the officer sees what the pass claims.
    let summary = verdict.pass.expect("summary of an authentic pass");
    assert_eq!(summary.pass_id, "c3".repeat(16));
    assert_eq!(summary.permit_number_masked, "H******78");

    let scan = server.scan_id();
    let answer = server.record(&text, "SZX-AIR-01", pb::TransportMode::Air, &scan).await;
    assert_entry_rejected(&answer, pb::RejectionReason::UnknownPass, NO_PROBLEM, "never issued");
    assert_eq!(answer.entry, None);
    let status = server.try_get(&"c3".repeat(16)).await.expect_err("never issued");
    assert_eq!(status.code(), Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pass_dated_outside_the_keys_signing_period_is_key_not_valid() {
    // The key signs passes issued from the server's first start for SIGNING_PERIOD.
    let server = start_with_key().await;
    let key = common::server_signing_key();
    let start = server.now();
    for (what, issued_at) in [
        ("an hour before the key's period", start - TimeDelta::hours(1)),
        ("at the end of the key's period", start + epass::datadir::SIGNING_PERIOD),
    ] {
        let text = sign(contents(issued_at), &key);
        let verdict = server.verify(&text, pb::TransportMode::Air).await;
        assert_rejected(&verdict, pb::RejectionReason::KeyNotValid, NO_PROBLEM, what);
        assert_eq!(verdict.pass, None, "{what}");
        let scan = server.scan_id();
        let answer = server.record(&text, "SZX-AIR-01", pb::TransportMode::Air, &scan).await;
        assert_entry_rejected(&answer, pb::RejectionReason::KeyNotValid, NO_PROBLEM, what);
    }
    // Dated at the start of the period, the same forgery gets as far as the store.
    let text = sign(contents(start), &key);
    let verdict = server.verify(&text, pb::TransportMode::Air).await;
    assert_rejected(&verdict, pb::RejectionReason::UnknownPass, NO_PROBLEM, "inside the period");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pass_signed_by_a_revoked_key_is_key_revoked() {
    use epass_core::keys::KeyStatus;
    use epass_core::trust::{TrustList, TrustedKey};

    let server = start_with_key().await;
    let old_key = common::server_signing_key();
    let old = server.issue_default().await;
    let stopped = server.stop().await;

    // The root revokes the old key (compromised) and trusts a new one.
    stopped.clock.advance(TimeDelta::hours(1));
    let now = common::at(common::START) + TimeDelta::hours(1);
    let new_key = ed25519_dalek::SigningKey::from_bytes(&[0x24; 32]);
    let list = TrustList {
        sequence: 2,
        issued_at: now,
        stale_after: now + TimeDelta::days(30),
        keys: vec![
            TrustedKey {
                public_key: new_key.verifying_key().to_bytes(),
                status: KeyStatus::Active,
                sign_from: now,
                sign_until: now + TimeDelta::days(365),
                verify_until: now + TimeDelta::days(372),
            },
            TrustedKey {
                public_key: old_key.verifying_key().to_bytes(),
                status: KeyStatus::Revoked,
                sign_from: common::at(common::START),
                sign_until: now,
                verify_until: now + TimeDelta::days(7),
            },
        ],
    };
    common::write_trust_list(stopped.data_dir(), &list);
    let new_key_path = stopped.data_dir().join("new-key.pem");
    epass::datadir::write_signing_key(&new_key_path, &new_key).expect("write key");
    let server = stopped.start_again_with_key(new_key_path).await;

    let statuses: Vec<i32> = server.verification_keys().await.iter().map(|k| k.status).collect();
    assert_eq!(statuses, vec![pb::KeyStatus::Active as i32, pb::KeyStatus::Revoked as i32]);

    let verdict = server.verify(&old.qr_text, pb::TransportMode::Air).await;
    assert_rejected(&verdict, pb::RejectionReason::KeyRevoked, NO_PROBLEM, "revoked key");
    assert_eq!(verdict.pass, None);
    let scan = server.scan_id();
    let answer = server.record(&old.qr_text, "SZX-AIR-01", pb::TransportMode::Air, &scan).await;
    assert_entry_rejected(&answer, pb::RejectionReason::KeyRevoked, NO_PROBLEM, "revoked key");
    let stored = server.get(&old.pass.expect("pass").pass_id).await;
    assert_eq!(stored.entry, None);

    // Passes of the new key are accepted.
    let fresh = server.issue_default().await;
    let verdict = server.verify(&fresh.qr_text, pb::TransportMode::Air).await;
    assert_eq!(verdict.verdict, pb::Verdict::Accepted as i32, "{verdict:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hand_built_envelopes_signed_by_the_servers_key() {
    let server = start_with_key().await;
    let key = common::server_signing_key();
    let payload = contents(server.now()).payload_bytes();

    // The hand-built envelope is a real pass (never issued): the framing is right.
    let canonical = sign_envelope(&key, 1, &payload);
    assert_eq!(canonical, sign(contents(server.now()), &key));
    let verdict = server.verify(&canonical, pb::TransportMode::Air).await;
    assert_rejected(&verdict, pb::RejectionReason::UnknownPass, NO_PROBLEM, "canonical");

    // An unknown field (10, varint 1) after the known ones: correctly signed, not canonical.
    let mut extended = payload.clone();
    extended.extend_from_slice(&[0x50, 0x01]);
    let verdict = server.verify(&sign_envelope(&key, 1, &extended), pb::TransportMode::Air).await;
    assert_rejected(&verdict, pb::RejectionReason::BadFormat, pb::FormatProblem::BadPayload, "unknown field");
    assert_eq!(verdict.pass, None);

    // A field repeated: decodes to the same message, but is not the canonical encoding.
    let mut repeated = payload.clone();
    repeated.extend_from_slice(&[0x48, 0x01]); // entries_allowed = 1 again
    let verdict = server.verify(&sign_envelope(&key, 1, &repeated), pb::TransportMode::Air).await;
    assert_rejected(&verdict, pb::RejectionReason::BadFormat, pb::FormatProblem::BadPayload, "repeated field");

    // Not protobuf at all.
    let verdict = server.verify(&sign_envelope(&key, 1, &[0xff; 40]), pb::TransportMode::Air).await;
    assert_rejected(&verdict, pb::RejectionReason::BadFormat, pb::FormatProblem::BadPayload, "garbage payload");

    // Canonical, but a window longer than 7 days, or two entries.
    let mut long = contents(server.now());
    long.valid_until = long.valid_from + TimeDelta::days(8);
    let mut twice = contents(server.now());
    twice.entries_allowed = 2;
    // Valid from a day after issue for 7 days: more than 7 days after issue.
    let mut late = contents(server.now());
    late.valid_from = late.issued_at + TimeDelta::days(1);
    late.valid_until = late.valid_from + TimeDelta::days(7);
    let mut early = contents(server.now());
    early.valid_from = early.issued_at - TimeDelta::seconds(1);
    let mut far = contents(chrono::DateTime::from_timestamp(1 << 32, 0).expect("time"));
    far.valid_until = far.issued_at + TimeDelta::days(1);
    for (what, bad) in [
        ("8-day window", long),
        ("two entries", twice),
        ("ends over 7 days after issue", late),
        ("valid before issue", early),
        ("times past 2^32 seconds", far),
    ] {
        let verdict = server.verify(&sign(bad, &key), pb::TransportMode::Air).await;
        assert_rejected(&verdict, pb::RejectionReason::BadFormat, pb::FormatProblem::BadPayload, what);
    }

    // A correctly signed envelope of another version.
    let verdict = server.verify(&sign_envelope(&key, 2, &payload), pb::TransportMode::Air).await;
    assert_rejected(&verdict, pb::RejectionReason::BadFormat, pb::FormatProblem::UnsupportedVersion, "version 2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn before_its_window_a_pass_is_not_yet_valid() {
    let server = start().await;
    let issued_at = server.now();
    let response = server.issue_default().await;
    let pass_id = response.pass.expect("pass").pass_id;
    let qr = &response.qr_text;

    server.clock.set(issued_at - TimeDelta::seconds(1));
    let verdict = server.verify(qr, pb::TransportMode::Air).await;
    assert_rejected(&verdict, pb::RejectionReason::NotYetValid, NO_PROBLEM, "1 s early");
    assert_eq!(verdict.pass.expect("summary").pass_id, pass_id);
    let scan = server.scan_id();
    let answer = server.record(qr, "SZX-AIR-01", pb::TransportMode::Air, &scan).await;
    assert_entry_rejected(&answer, pb::RejectionReason::NotYetValid, NO_PROBLEM, "1 s early");
    assert_eq!(answer.entry, None);
    assert_eq!(server.get(&pass_id).await.entry, None);

    server.clock.set(issued_at);
    let verdict = server.verify(qr, pb::TransportMode::Air).await;
    assert_eq!(verdict.verdict, pb::Verdict::Accepted as i32, "{verdict:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_and_after_the_end_of_its_window_a_pass_is_expired() {
    let server = start().await;
    let response = server.issue_default().await;
    let pass = response.pass.expect("pass");
    let valid_until = time_of(&pass.valid_until);
    let qr = &response.qr_text;

    server.clock.set(valid_until - TimeDelta::seconds(1));
    let verdict = server.verify(qr, pb::TransportMode::Rail).await;
    assert_eq!(verdict.verdict, pb::Verdict::Accepted as i32, "{verdict:?}");

    for (offset, what) in [(0, "at valid_until"), (1, "1 s after")] {
        server.clock.set(valid_until + TimeDelta::seconds(offset));
        let verdict = server.verify(qr, pb::TransportMode::Rail).await;
        assert_rejected(&verdict, pb::RejectionReason::Expired, NO_PROBLEM, what);
        assert_eq!(verdict.pass.expect("summary").pass_id, pass.pass_id);
        let scan = server.scan_id();
        let answer = server.record(qr, "LOK-RAIL-02", pb::TransportMode::Rail, &scan).await;
        assert_entry_rejected(&answer, pb::RejectionReason::Expired, NO_PROBLEM, what);
        assert_eq!(answer.entry, None);
    }
    let stored = server.get(&pass.pass_id).await;
    assert_eq!(stored.state, pb::PassState::Expired as i32);
    assert_eq!(stored.entry, None);

    // The rejected scans did not use the pass.
    server.clock.set(valid_until - TimeDelta::seconds(1));
    let scan = server.scan_id();
    let answer = server.record(qr, "LOK-RAIL-02", pb::TransportMode::Rail, &scan).await;
    assert_eq!(answer.verdict, pb::Verdict::Accepted as i32, "{answer:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn road_sea_and_foot_checkpoints_are_refused() {
    let server = start().await;
    let response = server.issue_default().await;
    let qr = &response.qr_text;
    for mode in [pb::TransportMode::Road, pb::TransportMode::Sea, pb::TransportMode::Foot] {
        let context = format!("{mode:?}");
        let verdict = server.verify(qr, mode).await;
        assert_rejected(&verdict, pb::RejectionReason::ModeNotAllowed, NO_PROBLEM, &context);
        let scan = server.scan_id();
        let answer = server.record(qr, "LMC-ROAD-01", mode, &scan).await;
        assert_entry_rejected(&answer, pb::RejectionReason::ModeNotAllowed, NO_PROBLEM, &context);
        assert_eq!(answer.entry, None);
    }
    let scan = server.scan_id();
    let answer = server.record(qr, "LOK-RAIL-02", pb::TransportMode::Rail, &scan).await;
    assert_eq!(answer.verdict, pb::Verdict::Accepted as i32, "{answer:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_mode_passes_are_refused_at_the_other_mode() {
    let server = start().await;
    let mut request = server.application();
    request.modes = vec![pb::TransportMode::Air as i32];
    let air_only = server.issue(request).await.qr_text;
    let mut request = server.application();
    request.modes = vec![pb::TransportMode::Rail as i32];
    let rail_only = server.issue(request).await.qr_text;

    let verdict = server.verify(&air_only, pb::TransportMode::Rail).await;
    assert_rejected(&verdict, pb::RejectionReason::ModeNotAllowed, NO_PROBLEM, "air-only at rail");
    let verdict = server.verify(&rail_only, pb::TransportMode::Air).await;
    assert_rejected(&verdict, pb::RejectionReason::ModeNotAllowed, NO_PROBLEM, "rail-only at air");
    let scan = server.scan_id();
    let answer = server.record(&air_only, "LOK-RAIL-02", pb::TransportMode::Rail, &scan).await;
    assert_entry_rejected(&answer, pb::RejectionReason::ModeNotAllowed, NO_PROBLEM, "air-only at rail");

    let verdict = server.verify(&air_only, pb::TransportMode::Air).await;
    assert_eq!(verdict.verdict, pb::Verdict::Accepted as i32, "{verdict:?}");
    let verdict = server.verify(&rail_only, pb::TransportMode::Rail).await;
    assert_eq!(verdict.verdict, pb::Verdict::Accepted as i32, "{verdict:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_pass_is_refused_by_verify_and_record_entry() {
    let server = start().await;
    let response = server.issue_default().await;
    let pass_id = response.pass.expect("pass").pass_id;
    server.revoke(&pass_id, "applicant found the permit").await;
    server.clock.advance(TimeDelta::minutes(1));

    let verdict = server.verify(&response.qr_text, pb::TransportMode::Air).await;
    assert_rejected(&verdict, pb::RejectionReason::Revoked, NO_PROBLEM, "verify");
    assert_eq!(verdict.pass.expect("summary").pass_id, pass_id);
    let scan = server.scan_id();
    let answer = server.record(&response.qr_text, "SZX-AIR-01", pb::TransportMode::Air, &scan).await;
    assert_entry_rejected(&answer, pb::RejectionReason::Revoked, NO_PROBLEM, "record");
    assert_eq!(answer.entry, None);
    let stored = server.get(&pass_id).await;
    assert_eq!(stored.state, pb::PassState::Revoked as i32);
    assert_eq!(stored.entry, None);
}

/// Replaces the last base64url character with one that has the same value in its used bits
/// but a non-zero unused bit.
fn non_canonical_tail(text: &str, envelope_len: usize) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    assert_ne!(envelope_len % 3, 0, "the last character must have unused bits");
    let last = *text.as_bytes().last().expect("text");
    let value = ALPHABET.iter().position(|c| *c == last).expect("base64url");
    // The lowest bit of the last character is unused with 1 or 2 bytes in the last group.
    let changed = ALPHABET[value ^ 1] as char;
    format!("{}{changed}", &text[..text.len() - 1])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_texts_are_bad_format_with_their_problem() {
    use pb::FormatProblem as P;

    let server = start().await;
    let response = server.issue_default().await;
    let text = response.qr_text.clone();
    let body = text.strip_prefix("EP1:").expect("prefix").to_owned();
    let env = envelope(&text);
    let mid = body.len() / 2;

    let mut bad_version = env.clone();
    bad_version[0] = 2;
    let mut zero_version = env.clone();
    zero_version[0] = 0;
    let mut trailing = env.clone();
    trailing.extend_from_slice(&[0, 0, 0]);
    let mut overlong = env.clone();
    overlong.resize(600, 0x41);

    let cases: Vec<(&str, String, pb::RejectionReason, P)> = vec![
        ("other prefix", format!("EP2:{body}"), pb::RejectionReason::BadFormat, P::WrongPrefix),
        ("lower-case prefix", format!("ep1:{body}"), pb::RejectionReason::BadFormat, P::WrongPrefix),
        ("no prefix", body.clone(), pb::RejectionReason::BadFormat, P::WrongPrefix),
        ("padding", format!("{text}="), pb::RejectionReason::BadFormat, P::BadBase64),
        ("double padding", format!("{text}=="), pb::RejectionReason::BadFormat, P::BadBase64),
        (
            "non-canonical last character",
            non_canonical_tail(&text, env.len()),
            pb::RejectionReason::BadFormat,
            P::BadBase64,
        ),
        (
            "space inside",
            format!("EP1:{} {}", &body[..mid], &body[mid..]),
            pb::RejectionReason::BadFormat,
            P::BadBase64,
        ),
        (
            "newline inside",
            format!("EP1:{}\n{}", &body[..mid], &body[mid..]),
            pb::RejectionReason::BadFormat,
            P::BadBase64,
        ),
        ("trailing newline", format!("{text}\n"), pb::RejectionReason::BadFormat, P::BadBase64),
        ("standard alphabet +", format!("EP1:+{}", &body[1..]), pb::RejectionReason::BadFormat, P::BadBase64),
        (
            "standard alphabet /",
            format!("EP1:{}/{}", &body[..mid], &body[mid + 1..]),
            pb::RejectionReason::BadFormat,
            P::BadBase64,
        ),
        ("empty body", "EP1:".to_owned(), pb::RejectionReason::BadFormat, P::TooShort),
        ("one byte", qr_text(&env[..1]), pb::RejectionReason::BadFormat, P::TooShort),
        (
            "truncated to one byte under the minimum",
            qr_text(&env[..HEADER_LEN + SIGNATURE_LEN]),
            pb::RejectionReason::BadFormat,
            P::TooShort,
        ),
        ("600-byte envelope", qr_text(&overlong), pb::RejectionReason::BadFormat, P::TooLong),
        ("long text", format!("{text}{}", "A".repeat(2000)), pb::RejectionReason::BadFormat, P::TooLong),
        ("version 2", qr_text(&bad_version), pb::RejectionReason::BadFormat, P::UnsupportedVersion),
        ("version 0", qr_text(&zero_version), pb::RejectionReason::BadFormat, P::UnsupportedVersion),
        // The signature is the last 64 bytes: trailing bytes shift it.
        ("trailing bytes", qr_text(&trailing), pb::RejectionReason::BadSignature, P::Unspecified),
        ("truncated envelope", qr_text(&env[..env.len() - 1]), pb::RejectionReason::BadSignature, P::Unspecified),
    ];
    for (what, qr, reason, problem) in &cases {
        let verdict = server.verify(qr, pb::TransportMode::Air).await;
        assert_rejected(&verdict, *reason, *problem, what);
        assert_eq!(verdict.pass, None, "{what}");
        let scan = server.scan_id();
        let answer = server.record(qr, "SZX-AIR-01", pb::TransportMode::Air, &scan).await;
        assert_entry_rejected(&answer, *reason, *problem, what);
        assert_eq!(answer.entry, None, "{what}");
    }

    // None of that touched the real pass.
    let scan = server.scan_id();
    let answer = server.record(&text, "SZX-AIR-01", pb::TransportMode::Air, &scan).await;
    assert_eq!(answer.verdict, pb::Verdict::Accepted as i32, "{answer:?}");
}

/// An envelope one or two bytes over the limit is well-formed base64url whose decoded length
/// exceeds `MAX_ENVELOPE_LEN`: it is too long, not bad base64.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envelope_just_over_the_limit_is_too_long() {
    let server = start().await;
    let response = server.issue_default().await;
    for len in [MAX_ENVELOPE_LEN + 1, MAX_ENVELOPE_LEN + 2] {
        let mut env = envelope(&response.qr_text);
        env.resize(len, 0x41);
        let verdict = server.verify(&qr_text(&env), pb::TransportMode::Air).await;
        assert_rejected(
            &verdict,
            pb::RejectionReason::BadFormat,
            pb::FormatProblem::TooLong,
            &format!("{len}-byte envelope"),
        );
    }
    // At the limit itself the envelope is decoded, and only its signature fails.
    let mut env = envelope(&response.qr_text);
    env.resize(MAX_ENVELOPE_LEN, 0x41);
    let verdict = server.verify(&qr_text(&env), pb::TransportMode::Air).await;
    assert_rejected(&verdict, pb::RejectionReason::BadSignature, NO_PROBLEM, "envelope at the limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resent_scan_gets_the_same_answer_even_after_the_window() {
    let server = start().await;
    let response = server.issue_default().await;
    let pass = response.pass.expect("pass");
    let qr = &response.qr_text;
    let first = server.record(qr, "SZX-AIR-01", pb::TransportMode::Air, "scan-1").await;
    assert_eq!(first.verdict, pb::Verdict::Accepted as i32, "{first:?}");

    server.clock.advance(TimeDelta::minutes(1));
    let resent = server.record(qr, "SZX-AIR-01", pb::TransportMode::Air, "scan-1").await;
    assert_eq!(resent, first);

    server.clock.set(time_of(&pass.valid_until) + TimeDelta::hours(1));
    let resent = server.record(qr, "SZX-AIR-01", pb::TransportMode::Air, "scan-1").await;
    assert_eq!(resent.verdict, pb::Verdict::Accepted as i32, "{resent:?}");
    assert_eq!(resent.entry, first.entry);
    assert_eq!(resent.pass, first.pass);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resent_rejected_scan_keeps_its_first_answer() {
    let server = start().await;
    let issued_at = server.now();
    let response = server.issue_default().await;
    let qr = &response.qr_text;

    server.clock.set(issued_at - TimeDelta::seconds(1));
    let early = server.record(qr, "SZX-AIR-01", pb::TransportMode::Air, "scan-early").await;
    assert_entry_rejected(&early, pb::RejectionReason::NotYetValid, NO_PROBLEM, "early");

    server.clock.set(issued_at);
    let resent = server.record(qr, "SZX-AIR-01", pb::TransportMode::Air, "scan-early").await;
    assert_entry_rejected(&resent, pb::RejectionReason::NotYetValid, NO_PROBLEM, "resent");
    assert_eq!(resent.entry, None);

    let fresh = server.record(qr, "SZX-AIR-01", pb::TransportMode::Air, "scan-late").await;
    assert_eq!(fresh.verdict, pb::Verdict::Accepted as i32, "{fresh:?}");

    // A resent ALREADY_USED scan, too, keeps its answer.
    let second = server.record(qr, "SZX-AIR-02", pb::TransportMode::Air, "scan-again").await;
    assert_entry_rejected(&second, pb::RejectionReason::AlreadyUsed, NO_PROBLEM, "second");
    let resent = server.record(qr, "SZX-AIR-02", pb::TransportMode::Air, "scan-again").await;
    assert_eq!(resent, second);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_scan_id_for_another_pass_is_already_exists() {
    let server = start().await;
    let first = server.issue_default().await;
    let second = server.issue_default().await;
    let answer = server.record(&first.qr_text, "SZX-AIR-01", pb::TransportMode::Air, "scan-x").await;
    assert_eq!(answer.verdict, pb::Verdict::Accepted as i32);

    let status = server
        .try_record(pb::RecordEntryRequest {
            qr_text: second.qr_text.clone(),
            checkpoint_id: "SZX-AIR-01".to_owned(),
            mode: pb::TransportMode::Air as i32,
            scan_id: "scan-x".to_owned(),
        })
        .await
        .expect_err("scan id reused for another pass");
    assert_eq!(status.code(), Code::AlreadyExists, "{status:?}");

    // Nothing changed: the second pass is unused.
    let stored = server.get(&second.pass.expect("pass").pass_id).await;
    assert_eq!(stored.state, pb::PassState::Valid as i32);
    assert_eq!(stored.entry, None);
}

/// Regression: a scan id resent from another checkpoint, or with another mode, got the first
/// scan's ACCEPTED back, so a second gate could open on one admission (even a road gate).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_scan_id_at_another_checkpoint_or_mode_is_already_exists() {
    let server = start().await;
    let pass = server.issue_default().await;
    let answer = server.record(&pass.qr_text, "SZX-AIR-01", pb::TransportMode::Air, "scan-y").await;
    assert_eq!(answer.verdict, pb::Verdict::Accepted as i32);
    for (checkpoint_id, mode) in [
        ("SZX-AIR-02", pb::TransportMode::Air),
        ("SZX-AIR-01", pb::TransportMode::Rail),
        ("SZX-AIR-01", pb::TransportMode::Road),
    ] {
        let status = server
            .try_record(pb::RecordEntryRequest {
                qr_text: pass.qr_text.clone(),
                checkpoint_id: checkpoint_id.to_owned(),
                mode: mode as i32,
                scan_id: "scan-y".to_owned(),
            })
            .await
            .expect_err("scan id reused elsewhere");
        assert_eq!(status.code(), Code::AlreadyExists, "{checkpoint_id} {mode:?}: {status:?}");
    }
    // The true resend still gets its first answer.
    let again = server.record(&pass.qr_text, "SZX-AIR-01", pb::TransportMode::Air, "scan-y").await;
    assert_eq!(again.verdict, pb::Verdict::Accepted as i32);
}

async fn record_on_own_connection(server: &TestServer, qr: String, scan_id: String) -> pb::RecordEntryResponse {
    let channel = connect(server.addr).await;
    let mut client = pb::checkpoint_service_client::CheckpointServiceClient::new(channel);
    client
        .record_entry(pb::RecordEntryRequest {
            qr_text: qr,
            checkpoint_id: "SZX-AIR-01".to_owned(),
            mode: pb::TransportMode::Air as i32,
            scan_id,
        })
        .await
        .expect("RecordEntry succeeds")
        .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_scans_admit_exactly_once() {
    let server = start().await;
    let response = server.issue_default().await;
    let pass_id = response.pass.expect("pass").pass_id;
    let scans = (0..8).map(|i| record_on_own_connection(&server, response.qr_text.clone(), format!("race-{i}")));
    let answers = common::must_finish("concurrent scans", futures_util::future::join_all(scans)).await;

    let accepted: Vec<&pb::RecordEntryResponse> =
        answers.iter().filter(|a| a.verdict == pb::Verdict::Accepted as i32).collect();
    assert_eq!(accepted.len(), 1, "{answers:#?}");
    let entry = accepted[0].entry.clone().expect("entry");
    for answer in answers.iter().filter(|a| a.verdict != pb::Verdict::Accepted as i32) {
        assert_entry_rejected(answer, pb::RejectionReason::AlreadyUsed, NO_PROBLEM, "losing scan");
        assert_eq!(answer.entry.as_ref(), Some(&entry), "the winner's entry");
    }
    assert_eq!(server.get(&pass_id).await.entry, Some(entry));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_resends_of_one_scan_all_get_the_admission() {
    let server = start().await;
    let response = server.issue_default().await;
    let scans = (0..6).map(|_| record_on_own_connection(&server, response.qr_text.clone(), "same-scan".to_owned()));
    let answers = common::must_finish("concurrent resends", futures_util::future::join_all(scans)).await;
    for answer in &answers {
        assert_eq!(answer.verdict, pb::Verdict::Accepted as i32, "{answers:#?}");
        assert_eq!(answer, &answers[0]);
    }
    assert_eq!(answers[0].entry.as_ref().expect("entry").scan_id, "same-scan");
}

/// The root public key of a server's data directory, and the key ring of the trust list the
/// server serves, opened with it as an offline checkpoint would.
async fn checkpoint_keys(server: &TestServer) -> (VerificationKey, Vec<u8>, KeyRing) {
    let root =
        epass::datadir::read_verification_key(&server.data_dir.join(epass::datadir::ROOT_KEY_FILE), KeyStatus::Active)
            .expect("root key");
    let trust = server.keys.clone().get_trust_list(pb::GetTrustListRequest {}).await.expect("trust list").into_inner();
    let ring = TrustList::open(&trust.trust_list, &root).expect("trust list opens").key_ring().expect("key ring");
    (root, trust.trust_list, ring)
}

/// `GetStatusList` since `since_sequence` (0: the full list).
async fn status_list(server: &TestServer, since_sequence: u64) -> pb::GetStatusListResponse {
    server
        .keys
        .clone()
        .get_status_list(pb::GetStatusListRequest { since_sequence })
        .await
        .expect("GetStatusList succeeds")
        .into_inner()
}

/// The entries of a status list about one pass, in journal order.
fn entries_of(list: &StatusList, pass_id: &str) -> Vec<StatusEntry> {
    let pass_id: PassId = pass_id.parse().expect("pass id");
    list.entries.iter().filter(|e| e.pass_id == pass_id).cloned().collect()
}

/// Issue 12: a revocation over gRPC reaches the status list, full (`GetStatusList` 0), as a
/// delta (`GetStatusList` since the sequence held) and on a `WatchStatusList` stream; and the
/// core's offline verification, given the lists fetched, says `REVOKED`, where the list fetched
/// before the revocation still accepts the pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_reaches_the_status_list_and_offline_verification_says_revoked() {
    let server = start().await;
    let (root, trust_list, ring) = checkpoint_keys(&server).await;
    let revoked = server.issue_default().await;
    let kept = server.issue(server.application_for(common::OTHER_PERMIT)).await;
    let pass_id = revoked.pass.as_ref().expect("pass").pass_id.clone();
    let kept_id = kept.pass.as_ref().expect("pass").pass_id.clone();

    // What a checkpoint holds before: the full list, and a watch from its sequence.
    let before = status_list(&server, 0).await;
    assert_eq!(before.base_sequence, 0, "a full list");
    let held = StatusList::open(&before.status_list, &ring, server.now()).expect("the full list opens");
    assert!(entries_of(&held, &pass_id).is_empty(), "nothing about the pass yet: {held:?}");
    let mut watch = server
        .keys
        .clone()
        .watch_status_list(pb::GetStatusListRequest { since_sequence: before.sequence })
        .await
        .expect("status list stream")
        .into_inner();
    let first =
        must_finish("the first message", watch.message()).await.expect("a message").expect("the stream goes on");
    assert_eq!((first.base_sequence, first.sequence), (before.sequence, before.sequence), "nothing new yet");

    server.clock.advance(TimeDelta::minutes(5));
    let revoked_at = server.now();
    let answer = server.revoke(&pass_id, "applicant found the permit").await;
    assert_eq!(answer.state, pb::PassState::Revoked as i32);
    let now = server.now();
    let expected = StatusEntry {
        pass_id: pass_id.parse().expect("pass id"),
        event: PassEvent::Revoked,
        at: revoked_at,
        valid_until: time_of(&revoked.pass.as_ref().expect("pass").valid_until),
    };

    // The full list.
    let full = status_list(&server, 0).await;
    assert_eq!(full.base_sequence, 0);
    assert!(full.sequence > before.sequence, "a new sequence: {} after {}", full.sequence, before.sequence);
    let full_list = StatusList::open(&full.status_list, &ring, now).expect("the full list opens");
    assert_eq!(entries_of(&full_list, &pass_id), vec![expected.clone()], "{full_list:?}");
    assert!(entries_of(&full_list, &kept_id).is_empty(), "the other pass is not listed: {full_list:?}");

    // The delta on the list held: exactly the revocation, and applied it gives the full list.
    let delta = status_list(&server, before.sequence).await;
    assert_eq!((delta.base_sequence, delta.sequence), (before.sequence, full.sequence));
    let delta_list = StatusList::open(&delta.status_list, &ring, now).expect("the delta opens");
    assert_eq!(delta_list.entries, vec![expected.clone()]);
    let mut applied = held.clone();
    applied.apply(delta_list).expect("the delta follows the list held");
    assert_eq!(applied.entries, full_list.entries);

    // The watcher hears of it.
    let update = must_finish("the revocation on the watch", watch.message())
        .await
        .expect("an update")
        .expect("the stream goes on");
    assert_eq!((update.base_sequence, update.sequence), (before.sequence, full.sequence));
    let watched = StatusList::open(&update.status_list, &ring, now).expect("the watched delta opens");
    assert_eq!(watched.entries, vec![expected.clone()]);
    drop(watch);

    // Offline, with what was fetched.
    let offline = |qr: &str, status_list: Option<&[u8]>, deltas: &[&[u8]]| {
        verify_offline(
            qr,
            &OfflineContext {
                root_key: &root,
                trust_list: &trust_list,
                held_trust_sequence: None,
                status_list,
                status_deltas: deltas,
                held_status_sequence: None,
                mode: TransportMode::Air,
                time: CheckTime::exact(now),
            },
        )
    };
    let revoked_verdict = Outcome::Rejected(Rejection::Revoked { revoked_at });
    let checked = StatusCheck::Checked { sequence: full.sequence };
    for (what, verdict) in [
        ("the full list", offline(&revoked.qr_text, Some(&full.status_list), &[])),
        ("the old list and the delta", offline(&revoked.qr_text, Some(&before.status_list), &[&delta.status_list])),
        (
            "the old list and the watched delta",
            offline(&revoked.qr_text, Some(&before.status_list), &[&update.status_list]),
        ),
    ] {
        assert_eq!((&verdict.outcome, &verdict.status), (&revoked_verdict, &checked), "{what}: {verdict:?}");
    }
    // The control: the list from before the revocation accepts the same pass, and the other
    // pass is accepted with the new list.
    let stale_news = offline(&revoked.qr_text, Some(&before.status_list), &[]);
    assert_eq!(stale_news.outcome, Outcome::Accepted, "{stale_news:?}");
    let other = offline(&kept.qr_text, Some(&full.status_list), &[]);
    assert_eq!((&other.outcome, &other.status), (&Outcome::Accepted, &checked), "{other:?}");
    // And online, the same reason.
    let online = server.verify(&revoked.qr_text, pb::TransportMode::Air).await;
    assert_rejected(&online, pb::RejectionReason::Revoked, NO_PROBLEM, "online");
    server.stop().await;
}

/// Calls `RevokePass` on a connection of its own.
async fn revoke_on(channel: tonic::transport::Channel, pass_id: String) -> pb::Pass {
    pb::issuance_service_client::IssuanceServiceClient::new(channel)
        .revoke_pass(pb::RevokePassRequest { pass_id, reason: "race".to_owned() })
        .await
        .expect("RevokePass succeeds")
        .into_inner()
        .pass
        .expect("RevokePass returns the pass")
}

/// Calls `RecordEntry` at `SZX-AIR-01` by air on a connection of its own.
async fn record_on(channel: tonic::transport::Channel, qr_text: String, scan_id: String) -> pb::RecordEntryResponse {
    pb::checkpoint_service_client::CheckpointServiceClient::new(channel)
        .record_entry(pb::RecordEntryRequest {
            qr_text,
            checkpoint_id: "SZX-AIR-01".to_owned(),
            mode: pb::TransportMode::Air as i32,
            scan_id,
        })
        .await
        .expect("RecordEntry succeeds")
        .into_inner()
}

/// Issue 12: `RevokePass` and `RecordEntry` of one pass at once, on separate connections, many
/// times. Revocation is reported before single use and a revoked pass admits no one, so each
/// round ends one of two ways: the entry was accepted first (the revocation then finds the pass
/// used, and the pass ends used and revoked, the use journaled before the revocation), or the
/// revocation came first and the entry is refused `REVOKED` (no entry anywhere). Never an
/// accepted entry that the revocation did not see.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_racing_an_entry_ends_consistently() {
    const ROUNDS: usize = 30;
    let server = start().await;
    let (_root, _trust, ring) = checkpoint_keys(&server).await;
    let (mut admitted_first, mut revoked_first) = (0, 0);
    for round in 0..ROUNDS {
        let issued = server.issue(server.application_for(&format!("H{:08}", 20_000_000 + round))).await;
        let pass_id = issued.pass.as_ref().expect("pass").pass_id.clone();
        let (revoker, scanner) = (connect(server.addr).await, connect(server.addr).await);
        // Both connections are open before either call starts; the barrier lets them go
        // together.
        let start_line = std::sync::Arc::new(tokio::sync::Barrier::new(2));
        let revoke = tokio::spawn({
            let (start_line, pass_id) = (start_line.clone(), pass_id.clone());
            async move {
                start_line.wait().await;
                revoke_on(revoker, pass_id).await
            }
        });
        let scan = tokio::spawn({
            let (start_line, qr) = (start_line.clone(), issued.qr_text.clone());
            async move {
                start_line.wait().await;
                record_on(scanner, qr, format!("race-{round}")).await
            }
        });
        let revoked = must_finish("the revocation", revoke).await.expect("revoke task");
        let scanned = must_finish("the scan", scan).await.expect("scan task");

        let stored = server.get(&pass_id).await;
        assert_eq!(stored.state, pb::PassState::Revoked as i32, "round {round}: {stored:?}");
        assert_eq!(revoked.revoked_at, stored.revoked_at, "round {round}: one revocation");
        let events: Vec<PassEvent> = entries_of(
            &StatusList::open(&status_list(&server, 0).await.status_list, &ring, server.now()).expect("status list"),
            &pass_id,
        )
        .into_iter()
        .map(|e| e.event)
        .collect();
        if scanned.verdict == pb::Verdict::Accepted as i32 {
            admitted_first += 1;
            let entry = scanned.entry.clone().expect("an accepted scan names its entry");
            assert_eq!(revoked.entry.as_ref(), Some(&entry), "round {round}: the revocation saw the entry");
            assert_eq!(stored.entry.as_ref(), Some(&entry), "round {round}");
            let used = PassEvent::Used { checkpoint_id: "SZX-AIR-01".to_owned(), mode: TransportMode::Air };
            assert_eq!(events, vec![used, PassEvent::Revoked], "round {round}: the use, then the revocation");
        } else {
            revoked_first += 1;
            assert_entry_rejected(&scanned, pb::RejectionReason::Revoked, NO_PROBLEM, &format!("round {round}"));
            assert_eq!(scanned.entry, None, "round {round}");
            assert_eq!(revoked.entry, None, "round {round}");
            assert_eq!(stored.entry, None, "round {round}: no entry was recorded");
            assert_eq!(events, vec![PassEvent::Revoked], "round {round}");
        }
        // Once the revocation has been answered, no scan is admitted.
        let after = server.record(&issued.qr_text, "SZX-AIR-01", pb::TransportMode::Air, &server.scan_id()).await;
        assert_entry_rejected(&after, pb::RejectionReason::Revoked, NO_PROBLEM, &format!("round {round}, after"));
    }
    eprintln!("{ROUNDS} rounds: the entry first {admitted_first} times, the revocation first {revoked_first} times");
    server.stop().await;
}

/// Issue 12: two servers on one SQLite database file (two `SqliteStore`s, as two processes
/// would have; the README allows it), the same pass scanned through both at once, many times:
/// exactly one scan is admitted, and every other names that entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_scans_through_two_servers_on_one_database_admit_exactly_once() {
    const ROUNDS: usize = 10;
    const SCANS_PER_SERVER: usize = 4;
    let first = start().await;
    let second = first.start_beside().await;
    for round in 0..ROUNDS {
        let issued = first.issue(first.application_for(&format!("H{:08}", 30_000_000 + round))).await;
        let pass_id = issued.pass.as_ref().expect("pass").pass_id.clone();
        let mut channels = Vec::new();
        for server in [&first, &second] {
            for _ in 0..SCANS_PER_SERVER {
                channels.push(connect(server.addr).await);
            }
        }
        let start_line = std::sync::Arc::new(tokio::sync::Barrier::new(channels.len()));
        let scans: Vec<_> = channels
            .into_iter()
            .enumerate()
            .map(|(i, channel)| {
                let (start_line, qr) = (start_line.clone(), issued.qr_text.clone());
                tokio::spawn(async move {
                    start_line.wait().await;
                    record_on(channel, qr, format!("race-{round}-{i}")).await
                })
            })
            .collect();
        let answers: Vec<pb::RecordEntryResponse> =
            must_finish("concurrent scans", futures_util::future::join_all(scans))
                .await
                .into_iter()
                .map(|r| r.expect("scan task"))
                .collect();
        let accepted: Vec<&pb::RecordEntryResponse> =
            answers.iter().filter(|a| a.verdict == pb::Verdict::Accepted as i32).collect();
        assert_eq!(accepted.len(), 1, "round {round}: {answers:#?}");
        let entry = accepted[0].entry.clone().expect("entry");
        for answer in answers.iter().filter(|a| a.verdict != pb::Verdict::Accepted as i32) {
            assert_entry_rejected(answer, pb::RejectionReason::AlreadyUsed, NO_PROBLEM, &format!("round {round}"));
            assert_eq!(answer.entry.as_ref(), Some(&entry), "round {round}: the winner's entry");
        }
        // Both servers read the same entry back.
        assert_eq!(first.get(&pass_id).await.entry.as_ref(), Some(&entry), "round {round}");
        assert_eq!(second.get(&pass_id).await.entry.as_ref(), Some(&entry), "round {round}");
    }
    second.stop().await;
    first.stop().await;
}
