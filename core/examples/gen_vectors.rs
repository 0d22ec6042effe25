//! Generates the offline-verification conformance vectors in `core/tests/vectors/`, and the trust
//! list and status list examples of docs/FORMAT.md.
//!
//! `cargo run -p epass-core --example gen_vectors -- core/tests/vectors` wipes that folder and writes it again;
//! `cargo run -p epass-core --example gen_vectors -- --doc` prints the Markdown sections of docs/FORMAT.md
//! that describe the lists byte for byte. `core/tests/conformance.rs` includes this file and checks
//! that the checked-in vectors and the document are exactly what it produces.
//!
//! Everything is deterministic: fixed secret keys, fixed times, Ed25519 signatures (which are
//! deterministic), and PNGs from `epass_core::qr::QrSymbol::png`. Every pass and list is built with
//! the core API; only the malformed cases change bytes by hand. The expected verdict of each
//! case is stated here by hand, never computed by the verifier under test.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use chrono::{DateTime, Utc};
use ed25519_dalek::Signer as _;
use epass_core::applicant::{HolderName, PermitNumber};
use epass_core::ids::{KeyId, PassId};
use epass_core::keys::{KeyStatus, PassSigner};
use epass_core::offline::{Outcome, StatusCheck};
use epass_core::pass::{
    FormatProblem, Modes, PassContents, SignedPass, TransportMode, HEADER_LEN, MAX_TIMESTAMP, MAX_VALIDITY, QR_PREFIX,
    SIGNATURE_DOMAIN, SIGNATURE_LEN,
};
use epass_core::qr::{version_of, QrSymbol};
use epass_core::status::{PassEvent, StatusEntry, StatusList, STATUS_LIST_DOMAIN};
use epass_core::trust::{TrustList, TrustListError, TrustedKey, LIST_FORMAT_VERSION, TRUST_LIST_DOMAIN};
use sha2::{Digest as _, Sha256};

/// The first line of the generated README; the generator only wipes a folder that has it.
pub const README_TITLE: &str = "# Offline verification conformance vectors";

/// The command that regenerates the vectors.
pub const REGENERATE: &str = "cargo run -p epass-core --example gen_vectors -- core/tests/vectors";

/// The secret keys, each 32 copies of one byte. They are public: no verifier may trust them
/// in production.
pub const ROOT_SECRET: [u8; 32] = [0xa0; 32];
/// The previous pass-signing key: retired at [`ROTATION`].
pub const OLD_SECRET: [u8; 32] = [0xa1; 32];
/// The current pass-signing key: active from [`ROTATION`]; it also signs the status lists.
pub const CURRENT_SECRET: [u8; 32] = [0xa2; 32];
/// A pass-signing key the trust list revokes.
pub const REVOKED_SECRET: [u8; 32] = [0xa3; 32];
/// A key the trust list does not name.
pub const UNTRUSTED_SECRET: [u8; 32] = [0xa4; 32];
/// Another root key: not the one checkpoints are provisioned with.
pub const OTHER_ROOT_SECRET: [u8; 32] = [0xa5; 32];

const MINUTE: i64 = 60;
const HOUR: i64 = 3_600;
const DAY: i64 = 86_400;
const WEEK: i64 = MAX_VALIDITY.num_seconds();

/// 2026-03-01T00:00:00Z: the old key stops signing and the current key starts.
pub const ROTATION: i64 = 1_772_323_200;
/// 2026-03-02T01:00:00Z: when most passes are issued (09:00 China Standard Time).
pub const ISSUED: i64 = ROTATION + DAY + HOUR;
/// 2026-03-09T01:00:00Z: the end of those passes' window (exclusive).
pub const VALID_UNTIL: i64 = ISSUED + WEEK;
/// 2026-03-03T01:00:00Z: the checkpoint's clock in most cases.
pub const NOW: i64 = ISSUED + DAY;
/// The trust list's sequence.
pub const TRUST_SEQUENCE: u64 = 42;
/// When the trust list goes stale: 30 days after it was signed at [`ROTATION`].
pub const TRUST_STALE_AFTER: i64 = ROTATION + 30 * DAY;
/// The status lists' sequence.
pub const STATUS_SEQUENCE: u64 = 7;
/// 2026-03-02T12:00:00Z: the end of a shortened period (stale trust list, old key's
/// verification period) in some cases.
const SHORT_END: i64 = ROTATION + 36 * HOUR;
/// The clock tolerance of the cases that test it.
const TOLERANCE: i64 = 5 * MINUTE;

/// Pass ids the status list names.
pub const REVOKED_PASS: [u8; 16] = [0xe1; 16];
/// A pass the status list records as used at a rail checkpoint.
pub const USED_PASS: [u8; 16] = [0xe2; 16];
/// A pass the status list records as used, then revoked.
pub const USED_AND_REVOKED_PASS: [u8; 16] = [0xe3; 16];
/// A pass used after the full status list was signed: only a delta records it.
pub const USED_AFTER_LIST_PASS: [u8; 16] = [0xe4; 16];

/// The keys of the vectors.
pub struct Keys {
    /// The root key checkpoints are provisioned with.
    pub root: PassSigner,
    /// See [`OLD_SECRET`].
    pub old: PassSigner,
    /// See [`CURRENT_SECRET`].
    pub current: PassSigner,
    /// See [`REVOKED_SECRET`].
    pub revoked: PassSigner,
    /// See [`UNTRUSTED_SECRET`].
    pub untrusted: PassSigner,
    /// See [`OTHER_ROOT_SECRET`].
    pub other_root: PassSigner,
}

impl Keys {
    /// The fixed keys.
    pub fn new() -> Self {
        Self {
            root: PassSigner::from_secret_bytes(&ROOT_SECRET),
            old: PassSigner::from_secret_bytes(&OLD_SECRET),
            current: PassSigner::from_secret_bytes(&CURRENT_SECRET),
            revoked: PassSigner::from_secret_bytes(&REVOKED_SECRET),
            untrusted: PassSigner::from_secret_bytes(&UNTRUSTED_SECRET),
            other_root: PassSigner::from_secret_bytes(&OTHER_ROOT_SECRET),
        }
    }
}

impl Default for Keys {
    fn default() -> Self {
        Self::new()
    }
}

/// An instant from whole seconds.
pub fn at(seconds: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(seconds, 0).expect("a time in range")
}

/// RFC 3339 in UTC with a `Z`, as the vectors write times.
pub fn rfc3339(seconds: i64) -> String {
    at(seconds).format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// The trust list most cases use: the current key active, the old key retired at
/// [`ROTATION`] and verifying for 7 more days, and a third key revoked.
pub fn trust_list(keys: &Keys) -> TrustList {
    TrustList {
        sequence: TRUST_SEQUENCE,
        issued_at: at(ROTATION),
        stale_after: at(TRUST_STALE_AFTER),
        keys: vec![
            TrustedKey {
                public_key: keys.current.public_key(),
                status: KeyStatus::Active,
                sign_from: at(ROTATION),
                sign_until: at(ROTATION + 365 * DAY),
                verify_until: at(ROTATION + 365 * DAY + WEEK),
            },
            TrustedKey {
                public_key: keys.old.public_key(),
                status: KeyStatus::Retired,
                sign_from: at(ROTATION - 365 * DAY),
                sign_until: at(ROTATION),
                verify_until: at(ROTATION + WEEK),
            },
            TrustedKey {
                public_key: keys.revoked.public_key(),
                status: KeyStatus::Revoked,
                sign_from: at(ROTATION - 180 * DAY),
                sign_until: at(ROTATION + 185 * DAY),
                verify_until: at(ROTATION + 185 * DAY + WEEK),
            },
        ],
    }
}

/// The status list of a case whose clock reads `now`: signed 10 minutes before, stale an
/// hour after it was signed (the reference server's lifetime).
pub fn status_list(now: i64) -> StatusList {
    status_list_issued(now - 10 * MINUTE)
}

fn status_list_issued(issued_at: i64) -> StatusList {
    let entry = |pass: [u8; 16], event: PassEvent, when: i64| StatusEntry {
        pass_id: PassId::from_bytes(pass),
        event,
        at: at(when),
        valid_until: at(VALID_UNTIL),
    };
    let used = |checkpoint_id: &str, mode| PassEvent::Used { checkpoint_id: checkpoint_id.to_owned(), mode };
    StatusList {
        sequence: STATUS_SEQUENCE,
        issued_at: at(issued_at),
        stale_after: at(issued_at + HOUR),
        base_sequence: 0,
        entries: vec![
            entry(REVOKED_PASS, PassEvent::Revoked, ISSUED + 10 * MINUTE),
            entry(USED_PASS, used("WKL-RAIL-01", TransportMode::Rail), ISSUED + 30 * MINUTE),
            entry(USED_AND_REVOKED_PASS, used("HKG-AIR-03", TransportMode::Air), ISSUED + HOUR),
            entry(USED_AND_REVOKED_PASS, PassEvent::Revoked, ISSUED + 2 * HOUR),
        ],
    }
}

/// A pass id derived from a case name, so that every case has its own pass.
fn pass_id_for(name: &str) -> PassId {
    let digest = Sha256::digest(format!("epass conformance pass {name}"));
    PassId::from_slice(&digest[..PassId::LEN]).expect("16 bytes")
}

fn contents(pass_id: PassId, latin: &str, chinese: &str, issued_at: i64, modes: Modes) -> PassContents {
    PassContents {
        pass_id,
        holder: HolderName::parse(latin, chinese).expect("a valid name"),
        permit: PermitNumber::parse("H12345678").expect("a valid permit number"),
        issued_at: at(issued_at),
        valid_from: at(issued_at),
        valid_until: at(issued_at + WEEK),
        modes,
        entries_allowed: 1,
    }
}

fn standard_contents(pass_id: PassId, modes: Modes) -> PassContents {
    contents(pass_id, "CHAN TAI MAN", "陳大文", ISSUED, modes)
}

fn text_of(envelope: &[u8]) -> String {
    format!("{QR_PREFIX}{}", URL_SAFE_NO_PAD.encode(envelope))
}

/// Signs arbitrary envelope bytes as a pass: for payloads that `SignedPass::sign` cannot
/// produce (non-canonical encodings).
fn sign_raw_pass(signer: &PassSigner, payload: &[u8]) -> Vec<u8> {
    let mut envelope = vec![1];
    envelope.extend_from_slice(signer.key_id().as_bytes());
    envelope.extend_from_slice(payload);
    let signature = signer.signing_key().sign(&[SIGNATURE_DOMAIN, &envelope].concat());
    envelope.extend_from_slice(&signature.to_bytes());
    envelope
}

/// The payload of [`standard_contents`] with the names replaced by any strings, encoded as
/// the core encodes payloads: for names that `HolderName` refuses to hold.
fn payload_with_names(pass_id: PassId, latin: &str, chinese: &str) -> Vec<u8> {
    let standard = standard_contents(pass_id, Modes::AIR_AND_RAIL);
    let mut out = Vec::new();
    len_field(1, pass_id.as_bytes(), &mut out);
    for (number, name) in [(2, latin), (3, chinese)] {
        if !name.is_empty() {
            len_field(number, name.as_bytes(), &mut out);
        }
    }
    len_field(4, standard.permit.as_str().as_bytes(), &mut out);
    for (number, time) in [(5, standard.issued_at), (6, standard.valid_from), (7, standard.valid_until)] {
        varint_field(number, u64::try_from(time.timestamp()).expect("a time after 1970"), &mut out);
    }
    varint_field(8, u64::from(Modes::AIR_AND_RAIL.bits()), &mut out);
    varint_field(9, 1, &mut out);
    out
}

/// The group order L of Ed25519, little-endian.
const GROUP_ORDER: [u8; 32] = [
    0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];

/// `S + L`: the same signature to a verifier that reduces `S`, refused by a strict one.
fn add_group_order(s: &mut [u8]) {
    let mut carry = 0u16;
    for (byte, l) in s.iter_mut().zip(GROUP_ORDER) {
        let sum = u16::from(*byte) + u16::from(l) + carry;
        *byte = sum as u8;
        carry = sum >> 8;
    }
    assert_eq!(carry, 0, "S + L fits in 256 bits");
}

// Protobuf writing, for the one list the core API cannot express (an invalid state and mode).
fn varint(mut value: u64, out: &mut Vec<u8>) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn varint_field(number: u64, value: u64, out: &mut Vec<u8>) {
    varint(number << 3, out);
    varint(value, out);
}

fn len_field(number: u64, bytes: &[u8], out: &mut Vec<u8>) {
    varint((number << 3) | 2, out);
    varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

/// Frames and signs list bytes as `epass_core::status` and `epass_core::trust` do.
fn seal_raw(signer: &PassSigner, domain: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut out = vec![1];
    out.extend_from_slice(signer.key_id().as_bytes());
    out.extend_from_slice(payload);
    let signature = signer.signing_key().sign(&[domain, &out].concat());
    out.extend_from_slice(&signature.to_bytes());
    out
}

/// Which key signs a case's status list, and how.
#[derive(Clone, Copy, PartialEq, Eq)]
enum StatusPlan {
    /// No status list.
    Absent,
    /// [`status_list`] for the case's clock, signed by the current key.
    Fresh,
    /// The same list signed by another key.
    SignedBy(Signer),
    /// Signed 2 hours before the clock: stale for an hour.
    Stale,
    /// Stale exactly at the clock (`now == stale_after`): still fresh.
    AtStaleAfter,
    /// Signed by the current key, one signature bit flipped.
    BadSignature,
    /// Correctly signed, with an entry of state 1 (revoked) and mode 1 (air).
    Malformed,
    /// The fresh full list, then two deltas: 7 to 8 without entries, 8 to 9 recording
    /// [`USED_AFTER_LIST_PASS`] as used.
    DeltasRecordUse,
    /// A stale full list, then a fresh delta without entries (7 to 7) that refreshes it.
    DeltaRefreshes,
    /// The fresh full list, then a delta on sequence 6: it does not follow the list.
    DeltaMismatch,
    /// The fresh full list, then a delta (8 to 9) with one signature bit flipped.
    DeltaBadSignature,
    /// A delta (5 to 7) with the entries of the full list, given as the full list.
    DeltaAsFullList,
    /// A fresh server's lists: the full list of the empty journal (sequence 0, no entries),
    /// then a delta on 0 (0 to 1) recording [`USED_AFTER_LIST_PASS`] as used.
    DeltaOnSequenceZero,
    /// A full list of sequence 0 that nevertheless has the entries of [`status_list`].
    EntriesAtSequenceZero,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Signer {
    Root,
    Old,
    Revoked,
    Untrusted,
}

/// What a verifier must conclude.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Expected {
    /// `accepted`, `rejected` or `cannot_decide`.
    pub outcome: &'static str,
    /// The rejection reason or trust list problem; `None` when accepted.
    pub reason: Option<&'static str>,
    /// The format problem when the reason is `bad_format`.
    pub format_problem: Option<&'static str>,
    /// `checked`, `no_list`, `stale` or `unusable`.
    pub status: &'static str,
}

/// One conformance case.
pub struct Case {
    /// The folder name.
    pub name: &'static str,
    /// What the case checks, and why the verdict is what it is.
    pub description: String,
    /// The QR text exactly, with anything wrong with it.
    pub qr_text: String,
    /// The key that signed the pass, then any other key whose signature is involved.
    pub signers: Vec<[u8; 32]>,
    /// The signed trust list.
    pub trust_list: Vec<u8>,
    /// The trust list sequence the checkpoint held before.
    pub held_trust_sequence: Option<u64>,
    /// The status list sequence the checkpoint used before; in `case.json` only when set.
    pub held_status_sequence: Option<u64>,
    /// The signed full status list, if the checkpoint has one.
    pub status_list: Option<Vec<u8>>,
    /// The signed deltas received since, oldest first.
    pub status_deltas: Vec<Vec<u8>>,
    /// The checkpoint's clock, seconds.
    pub now: i64,
    /// How far the clock may be off, seconds.
    pub tolerance: i64,
    /// The checkpoint's mode.
    pub mode: TransportMode,
    /// The verdict.
    pub expected: Expected,
}

/// Builds cases with the defaults: the standard trust list, a fresh status list, `NOW`, no
/// tolerance, an air checkpoint.
struct Builder<'k> {
    keys: &'k Keys,
    cases: Vec<Case>,
}

/// A case under construction.
struct Draft {
    name: &'static str,
    description: String,
    qr_text: String,
    signer: [u8; 32],
    trust_list: Option<Vec<u8>>,
    held_trust_sequence: Option<u64>,
    held_status_sequence: Option<u64>,
    /// The held status sequence is above the list's: the status is unusable, whatever the plan.
    status_rolled_back: bool,
    status: StatusPlan,
    now: i64,
    tolerance: i64,
    mode: TransportMode,
}

impl Draft {
    fn now(mut self, now: i64) -> Self {
        self.now = now;
        self
    }
    fn tolerance(mut self, tolerance: i64) -> Self {
        self.tolerance = tolerance;
        self
    }
    fn mode(mut self, mode: TransportMode) -> Self {
        self.mode = mode;
        self
    }
    fn status(mut self, status: StatusPlan) -> Self {
        self.status = status;
        self
    }
    fn trust_list(mut self, bytes: Vec<u8>) -> Self {
        self.trust_list = Some(bytes);
        self
    }
    fn held(mut self, sequence: u64) -> Self {
        self.held_trust_sequence = Some(sequence);
        self
    }
    /// A held status sequence not above the list's (after its deltas).
    fn held_status(mut self, sequence: u64) -> Self {
        self.held_status_sequence = Some(sequence);
        self
    }
    /// A held status sequence above the list's (after its deltas): a rollback.
    fn held_status_rolled_back(mut self, sequence: u64) -> Self {
        self.held_status_sequence = Some(sequence);
        self.status_rolled_back = true;
        self
    }
}

const fn status_name(plan: StatusPlan) -> &'static str {
    match plan {
        StatusPlan::Absent => "no_list",
        StatusPlan::Fresh | StatusPlan::AtStaleAfter | StatusPlan::SignedBy(Signer::Old) => "checked",
        StatusPlan::Stale => "stale",
        StatusPlan::SignedBy(Signer::Root | Signer::Revoked | Signer::Untrusted)
        | StatusPlan::BadSignature
        | StatusPlan::Malformed
        | StatusPlan::DeltaMismatch
        | StatusPlan::DeltaBadSignature
        | StatusPlan::DeltaAsFullList
        | StatusPlan::EntriesAtSequenceZero => "unusable",
        StatusPlan::DeltasRecordUse | StatusPlan::DeltaRefreshes | StatusPlan::DeltaOnSequenceZero => "checked",
    }
}

impl<'k> Builder<'k> {
    fn draft(&self, name: &'static str, description: &str, pass: &SignedPass) -> Draft {
        self.draft_text(name, description, pass.qr_text(), &self.keys.current)
    }

    fn draft_text(&self, name: &'static str, description: &str, qr_text: String, signer: &PassSigner) -> Draft {
        Draft {
            name,
            description: description.to_owned(),
            qr_text,
            signer: signer.public_key(),
            trust_list: None,
            held_trust_sequence: None,
            held_status_sequence: None,
            status_rolled_back: false,
            status: StatusPlan::Fresh,
            now: NOW,
            tolerance: 0,
            mode: TransportMode::Air,
        }
    }

    fn signer(&self, which: Signer) -> &'k PassSigner {
        match which {
            Signer::Root => &self.keys.root,
            Signer::Old => &self.keys.old,
            Signer::Revoked => &self.keys.revoked,
            Signer::Untrusted => &self.keys.untrusted,
        }
    }

    fn finish(
        &mut self,
        draft: Draft,
        outcome: &'static str,
        reason: Option<&'static str>,
        problem: Option<&'static str>,
    ) {
        let keys = self.keys;
        let mut signers = vec![draft.signer];
        let now = draft.now;
        let delta = |base_sequence, sequence, entries| StatusList {
            sequence,
            issued_at: at(now - 5 * MINUTE),
            stale_after: at(now - 5 * MINUTE + HOUR),
            base_sequence,
            entries,
        };
        let used_after_list = || StatusEntry {
            pass_id: PassId::from_bytes(USED_AFTER_LIST_PASS),
            event: PassEvent::Used { checkpoint_id: "SZN-RAIL-02".to_owned(), mode: TransportMode::Rail },
            at: at(now - 20 * MINUTE),
            valid_until: at(VALID_UNTIL),
        };
        let fresh = || status_list(now).sign(&keys.current);
        let status_deltas = match draft.status {
            StatusPlan::DeltasRecordUse => vec![
                delta(STATUS_SEQUENCE, STATUS_SEQUENCE + 1, vec![]).sign(&keys.current),
                delta(STATUS_SEQUENCE + 1, STATUS_SEQUENCE + 2, vec![used_after_list()]).sign(&keys.current),
            ],
            StatusPlan::DeltaRefreshes => vec![delta(STATUS_SEQUENCE, STATUS_SEQUENCE, vec![]).sign(&keys.current)],
            StatusPlan::DeltaOnSequenceZero => vec![delta(0, 1, vec![used_after_list()]).sign(&keys.current)],
            StatusPlan::DeltaMismatch => {
                vec![delta(STATUS_SEQUENCE - 1, STATUS_SEQUENCE + 1, vec![used_after_list()]).sign(&keys.current)]
            }
            StatusPlan::DeltaBadSignature => {
                let mut bytes =
                    delta(STATUS_SEQUENCE, STATUS_SEQUENCE + 1, vec![used_after_list()]).sign(&keys.current);
                let last = bytes.len() - 1;
                bytes[last - 20] ^= 0x08;
                vec![bytes]
            }
            _ => vec![],
        };
        let status_list = match draft.status {
            StatusPlan::Absent => None,
            StatusPlan::DeltasRecordUse | StatusPlan::DeltaMismatch | StatusPlan::DeltaBadSignature => Some(fresh()),
            StatusPlan::DeltaRefreshes => Some(status_list_issued(now - 2 * HOUR).sign(&keys.current)),
            StatusPlan::DeltaOnSequenceZero => {
                let empty = StatusList { sequence: 0, entries: vec![], ..status_list(now) };
                Some(empty.sign(&keys.current))
            }
            StatusPlan::EntriesAtSequenceZero => {
                Some(StatusList { sequence: 0, ..status_list(now) }.sign(&keys.current))
            }
            StatusPlan::DeltaAsFullList => {
                let mut list = status_list(now);
                (list.base_sequence, list.issued_at, list.stale_after) =
                    (STATUS_SEQUENCE - 2, at(now - 5 * MINUTE), at(now - 5 * MINUTE + HOUR));
                Some(list.sign(&keys.current))
            }
            StatusPlan::Fresh => Some(status_list(draft.now).sign(&keys.current)),
            StatusPlan::SignedBy(which) => Some(status_list(draft.now).sign(self.signer(which))),
            StatusPlan::Stale => Some(status_list_issued(draft.now - 2 * HOUR).sign(&keys.current)),
            StatusPlan::AtStaleAfter => Some(status_list_issued(draft.now - HOUR).sign(&keys.current)),
            StatusPlan::BadSignature => {
                let mut bytes = status_list(draft.now).sign(&keys.current);
                let last = bytes.len() - 1;
                bytes[last - 40] ^= 0x10;
                Some(bytes)
            }
            StatusPlan::Malformed => Some(malformed_status_list(&keys.current, draft.now)),
        };
        let status_signer = match draft.status {
            StatusPlan::Absent => None,
            StatusPlan::SignedBy(which) => Some(self.signer(which).public_key()),
            _ => Some(keys.current.public_key()),
        };
        if let Some(key) = status_signer.filter(|key| !signers.contains(key)) {
            signers.push(key);
        }
        let status = match () {
            () if outcome == "cannot_decide" => "not_evaluated",
            () if draft.status_rolled_back => "unusable",
            () => status_name(draft.status),
        };
        self.cases.push(Case {
            name: draft.name,
            description: draft.description,
            qr_text: draft.qr_text,
            signers,
            trust_list: draft.trust_list.unwrap_or_else(|| trust_list(keys).sign(&keys.root)),
            held_trust_sequence: draft.held_trust_sequence,
            held_status_sequence: draft.held_status_sequence,
            status_list,
            status_deltas,
            now: draft.now,
            tolerance: draft.tolerance,
            mode: draft.mode,
            expected: Expected { outcome, reason, format_problem: problem, status },
        });
    }

    fn accepted(&mut self, draft: Draft) {
        self.finish(draft, "accepted", None, None);
    }

    fn rejected(&mut self, draft: Draft, reason: &'static str) {
        assert_ne!(reason, "bad_format", "use bad_format()");
        self.finish(draft, "rejected", Some(reason), None);
    }

    fn bad_format(&mut self, draft: Draft, problem: &'static str) {
        self.finish(draft, "rejected", Some("bad_format"), Some(problem));
    }

    fn cannot_decide(&mut self, draft: Draft, problem: &'static str) {
        self.finish(draft, "cannot_decide", Some(problem), None);
    }
}

fn malformed_status_list(signer: &PassSigner, now: i64) -> Vec<u8> {
    let issued_at = now - 10 * MINUTE;
    let mut entry = Vec::new();
    len_field(1, &REVOKED_PASS, &mut entry);
    varint_field(2, 1, &mut entry); // state: revoked
    varint_field(3, VALID_UNTIL as u64, &mut entry);
    varint_field(4, (ISSUED + 10 * MINUTE) as u64, &mut entry);
    varint_field(6, 1, &mut entry); // mode: air, which a revocation never has
    let mut payload = Vec::new();
    varint_field(1, STATUS_SEQUENCE, &mut payload);
    varint_field(2, issued_at as u64, &mut payload);
    varint_field(3, (issued_at + HOUR) as u64, &mut payload);
    len_field(5, &entry, &mut payload);
    seal_raw(signer, STATUS_LIST_DOMAIN, &payload)
}

/// Every case, in a fixed order.
pub fn cases(keys: &Keys) -> Vec<Case> {
    use TransportMode::{Foot, Rail, Road, Sea};
    let mut b = Builder { keys, cases: Vec::new() };
    let current = &keys.current;
    let pass = |name: &str, modes| SignedPass::sign(standard_contents(pass_id_for(name), modes), current);

    // Valid passes.
    let p = pass("valid-air", Modes::AIR_ONLY);
    b.accepted(b.draft("valid-air", "An air-only pass at an airport, a day after issue.", &p));
    let p = pass("valid-rail", Modes::RAIL_ONLY);
    b.accepted(b.draft("valid-rail", "A rail-only pass at a railway station.", &p).mode(Rail));
    let p = pass("valid-both-modes-air", Modes::AIR_AND_RAIL);
    b.accepted(b.draft("valid-both-modes-air", "An air-and-rail pass (modes 3) at an airport.", &p));
    let p = pass("valid-both-modes-rail", Modes::AIR_AND_RAIL);
    b.accepted(b.draft("valid-both-modes-rail", "An air-and-rail pass (modes 3) at a railway station.", &p).mode(Rail));
    let p = SignedPass::sign(
        contents(pass_id_for("chinese-only-name"), "", "陳大文", ISSUED, Modes::AIR_AND_RAIL),
        current,
    );
    b.accepted(b.draft("chinese-only-name", "The holder's name in Chinese only: field 2 is absent.", &p));
    let p = SignedPass::sign(
        contents(pass_id_for("latin-only-name"), "CHAN TAI MAN", "", ISSUED, Modes::AIR_AND_RAIL),
        current,
    );
    b.accepted(b.draft("latin-only-name", "The holder's name in Latin letters only: field 3 is absent.", &p));
    let p = SignedPass::sign(
        contents(pass_id_for("longest-names"), &"A".repeat(64), &"\u{20000}".repeat(20), ISSUED, Modes::AIR_AND_RAIL),
        current,
    );
    let text = p.qr_text();
    let version = version_of(&text).expect("the longest pass fits a QR code");
    b.accepted(b.draft(
        "longest-names",
        &format!(
            "The longest names: 64 Latin letters and 20 four-byte Chinese characters (U+20000); a QR text of {} bytes, QR version {version}.",
            text.len()
        ),
        &p,
    ));
    let p = pass("valid-at-valid-from", Modes::AIR_AND_RAIL);
    b.accepted(b.draft("valid-at-valid-from", "At exactly valid_from: the window includes its start.", &p).now(ISSUED));
    let p = pass("valid-last-second", Modes::AIR_AND_RAIL);
    b.accepted(
        b.draft("valid-last-second", "One second before valid_until: still inside the window.", &p)
            .now(VALID_UNTIL - 1),
    );

    // Key rotation.
    let p = SignedPass::sign(
        contents(pass_id_for("key-rotation-overlap"), "CHAN TAI MAN", "陳大文", ROTATION - 1, Modes::AIR_AND_RAIL),
        &keys.old,
    );
    b.accepted(b.draft_text(
        "key-rotation-overlap",
        "Signed by the retired old key in the last second of its signing period; checked while the current key \
         is active and the old key is still inside its verification period: accepted.",
        p.qr_text(),
        &keys.old,
    ));

    // Malformed texts, all from one correctly signed pass.
    let base = pass("malformed", Modes::AIR_AND_RAIL);
    let text = base.qr_text();
    let body = &text[QR_PREFIX.len()..];
    let envelope = base.envelope().to_vec();
    assert_ne!(body.len() % 4, 0, "the malformed cases need unused bits in the last character");
    let malformed = |b: &Builder<'_>, name, description, qr_text| b.draft_text(name, description, qr_text, current);
    let d = malformed(
        &b,
        "wrong-prefix",
        "The prefix in lower case, `ep1:`: the prefix is compared byte for byte.",
        format!("ep1:{body}"),
    );
    b.bad_format(d, "wrong_prefix");
    let padding = "=".repeat(4 - body.len() % 4);
    let d = malformed(
        &b,
        "padding",
        "A valid pass with base64 padding `=` appended: padding is never allowed.",
        format!("{text}{padding}"),
    );
    b.bad_format(d, "bad_base64");
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let last = body.as_bytes()[body.len() - 1];
    let index = alphabet.iter().position(|c| *c == last).expect("a base64url character");
    assert_eq!(index & 1, 0, "the lowest unused bit is zero in a canonical text");
    let d = malformed(
        &b,
        "non-canonical-trailing-bits",
        "The last character changed so that its unused low bit is 1: it decodes to the same bytes in a lenient \
         decoder, but only the canonical text is accepted.",
        format!("{QR_PREFIX}{}{}", &body[..body.len() - 1], alphabet[index | 1] as char),
    );
    b.bad_format(d, "bad_base64");
    let d = malformed(
        &b,
        "whitespace-trailing-newline",
        "A valid pass followed by a line feed, as a keyboard-wedge scanner appends: the text must be passed exactly.",
        format!("{text}\n"),
    );
    b.bad_format(d, "bad_base64");
    let d = malformed(
        &b,
        "whitespace-inside",
        "A space inside the base64url body.",
        format!("{QR_PREFIX}{} {}", &body[..40], &body[40..]),
    );
    b.bad_format(d, "bad_base64");
    let standard = format!("{QR_PREFIX}{}", STANDARD_NO_PAD.encode(&envelope));
    assert!(standard.contains(['+', '/']), "the standard alphabet must differ from base64url for this pass");
    let d = malformed(
        &b,
        "standard-alphabet",
        "The envelope in the standard base64 alphabet (`+` and `/` instead of `-` and `_`), unpadded.",
        standard,
    );
    b.bad_format(d, "bad_base64");
    let d = malformed(
        &b,
        "too-short",
        "The envelope cut to 73 bytes, one less than the shortest envelope.",
        text_of(&envelope[..73]),
    );
    b.bad_format(d, "too_short");
    let mut long = envelope[..envelope.len() - SIGNATURE_LEN].to_vec();
    long.resize(401 - SIGNATURE_LEN, 0);
    long.extend_from_slice(&envelope[envelope.len() - SIGNATURE_LEN..]);
    let d = malformed(
        &b,
        "too-long",
        "An envelope of 401 bytes (zero bytes inserted before the signature): its text is 539 characters, one \
         more than the longest allowed.",
        text_of(&long),
    );
    b.bad_format(d, "too_long");
    // What a camera may read that is no pass at all: a verifier answers these with their
    // format problem, online as offline, never with an error of its own.
    let d = malformed(&b, "empty-text", "An empty text: no prefix.", String::new());
    b.bad_format(d, "wrong_prefix");
    let d = malformed(
        &b,
        "text-of-1600-bytes",
        "The prefix and 1,596 `A`s: three times longer than any pass (and about the most a QR code at level Q \
         holds), refused on its length before any decoding.",
        format!("EP1:{}", "A".repeat(1596)),
    );
    b.bad_format(d, "too_long");
    let mut v2 = envelope.clone();
    v2[0] = 2;
    let d = malformed(&b, "unsupported-version", "The version byte changed to 2.", text_of(&v2));
    b.bad_format(d, "unsupported_version");
    let mut payload = standard_contents(pass_id_for("bad-payload-non-canonical"), Modes::AIR_AND_RAIL).payload_bytes();
    payload.extend_from_slice(&[0x50, 0x01]);
    let d = malformed(
        &b,
        "bad-payload-non-canonical",
        "A correctly signed payload with an unknown field 10 (bytes `50 01`) appended: the signature verifies, \
         then the payload is refused as not canonical.",
        text_of(&sign_raw_pass(current, &payload)),
    );
    b.bad_format(d, "bad_payload");
    let mut two_entries = standard_contents(pass_id_for("bad-payload-entries-allowed"), Modes::AIR_AND_RAIL);
    two_entries.entries_allowed = 2;
    let p = SignedPass::sign(two_entries, current);
    b.bad_format(
        b.draft("bad-payload-entries-allowed", "A correctly signed, canonical payload with entries_allowed 2.", &p),
        "bad_payload",
    );

    // The name grammar at its edges (FORMAT.md, *Names*): accepted, then refused.
    let named = |name: &str, latin: &str, chinese: &str| {
        SignedPass::sign(contents(pass_id_for(name), latin, chinese, ISSUED, Modes::AIR_AND_RAIL), current)
    };
    for (name, latin, chinese, description) in [
        ("name-latin-one-letter", "A", "", "The shortest Latin name, one letter, and no Chinese name."),
        (
            "name-latin-punctuation-words",
            "-O'NEIL , J.R.-",
            "",
            "The Latin name `-O'NEIL , J.R.-`: punctuation may begin and end the name and a word may be \
             punctuation alone, as long as the whole name has a letter.",
        ),
        ("name-chinese-one-han", "", "陳", "The shortest Chinese name, one Han character, and no Latin name."),
        (
            "name-chinese-middle-dots",
            "",
            "·陳··大·",
            "The Chinese name `·陳··大·`: middle dots (U+00B7) anywhere, repeated, as long as the name has a \
             Han character.",
        ),
        (
            "name-chinese-range-edges",
            "",
            "\u{3400}\u{4dbf}\u{4e00}\u{9fff}\u{20000}\u{2a6df}\u{2a700}\u{2ee5f}\u{30000}\u{323af}",
            "A Chinese name of the first and last character of each Han range: U+3400, U+4DBF, U+4E00, \
             U+9FFF, U+20000, U+2A6DF, U+2A700, U+2EE5F, U+30000, U+323AF.",
        ),
    ] {
        let p = named(name, latin, chinese);
        assert_eq!(
            p.envelope()[HEADER_LEN..p.envelope().len() - SIGNATURE_LEN],
            payload_with_names(pass_id_for(name), latin, chinese)[..]
        );
        b.accepted(b.draft(name, description, &p));
    }
    for (name, latin, chinese, description) in [
        ("name-none", "", "", "Neither name: fields 2 and 3 are both absent."),
        ("name-latin-hyphen-only", "-", "陳大文", "The Latin name `-`: punctuation alone, no letter."),
        ("name-latin-punctuation-only", "-'.,", "陳大文", "The Latin name `-'.,`: every punctuation mark allowed, no letter."),
        ("name-chinese-middle-dot-only", "CHAN TAI MAN", "·", "The Chinese name `·` (U+00B7): a middle dot alone, no Han character."),
        ("name-latin-lower-case", "Chan Tai Man", "陳大文", "The Latin name in mixed case: only upper case is allowed."),
        ("name-latin-double-space", "CHAN  TAI MAN", "陳大文", "Two spaces in a row in the Latin name."),
        ("name-latin-trailing-space", "CHAN TAI MAN ", "陳大文", "A space at the end of the Latin name."),
        ("name-latin-tab", "CHAN\tTAI MAN", "陳大文", "A tab (U+0009) between words of the Latin name: control characters are refused."),
        ("name-latin-carriage-return", "CHAN TAI MAN\r", "陳大文", "A carriage return (U+000D) at the end of the Latin name: control characters are refused."),
        ("name-latin-no-break-space", "CHAN\u{a0}TAI MAN", "陳大文", "A no-break space (U+00A0) between words of the Latin name: only U+0020 separates words."),
        ("name-latin-accented-letter", "CHÂN TAI MAN", "陳大文", "`Â` (U+00C2) in the Latin name: letters are A to Z only."),
        ("name-latin-65-characters", &"A".repeat(65), "陳大文", "A Latin name of 65 letters, one more than allowed."),
        ("name-chinese-21-characters", "CHAN TAI MAN", &"陳".repeat(21), "A Chinese name of 21 characters, one more than allowed."),
        ("name-chinese-space", "CHAN TAI MAN", "陳 大文", "A space inside the Chinese name."),
        ("name-chinese-katakana-middle-dot", "CHAN TAI MAN", "阿卜杜・热合曼", "The katakana middle dot U+30FB in the Chinese name: only U+00B7 is allowed."),
        ("name-chinese-compatibility-ideograph", "CHAN TAI MAN", "陳\u{f900}", "The compatibility ideograph U+F900 in the Chinese name: Unicode normalisation would rewrite it, so it is refused."),
    ] {
        let description = format!("{description} Correctly signed and otherwise canonical: refused as a bad payload.");
        let payload = payload_with_names(pass_id_for(name), latin, chinese);
        let d = b.draft_text(name, &description, text_of(&sign_raw_pass(current, &payload)), current);
        b.bad_format(d, "bad_payload");
    }

    // Signature damage.
    let d = malformed(
        &b,
        "signature-truncated",
        "The envelope without its last byte: the last 64 bytes are no longer the signature.",
        text_of(&envelope[..envelope.len() - 1]),
    );
    b.rejected(d, "bad_signature");
    let d = malformed(
        &b,
        "signature-65-bytes",
        "One zero byte appended to the envelope: there is no length field, so the signature is the last 64 bytes.",
        text_of(&[&envelope[..], &[0]].concat()),
    );
    b.rejected(d, "bad_signature");
    let mut flipped = envelope.clone();
    flipped[HEADER_LEN + 20] ^= 0x01;
    let d = malformed(&b, "payload-bit-flip", "One bit of the payload flipped (in the Latin name).", text_of(&flipped));
    b.rejected(d, "bad_signature");
    let mut flipped = envelope.clone();
    let signature_at = envelope.len() - SIGNATURE_LEN;
    flipped[signature_at + 10] ^= 0x04;
    let d = malformed(&b, "signature-bit-flip", "One bit of the signature flipped.", text_of(&flipped));
    b.rejected(d, "bad_signature");
    let mut malleated = envelope.clone();
    add_group_order(&mut malleated[signature_at + 32..]);
    let d = malformed(
        &b,
        "signature-s-plus-l",
        "The signature's S replaced by S + L (L the group order): valid for a verifier that reduces S, refused by \
         strict verification, which requires S < L.",
        text_of(&malleated),
    );
    b.rejected(d, "bad_signature");

    // Keys.
    let p = SignedPass::sign(standard_contents(pass_id_for("unknown-key"), Modes::AIR_AND_RAIL), &keys.untrusted);
    b.rejected(
        b.draft_text("unknown-key", "Signed by a key the trust list does not name.", p.qr_text(), &keys.untrusted),
        "unknown_key",
    );
    let p = SignedPass::sign(standard_contents(pass_id_for("key-revoked"), Modes::AIR_AND_RAIL), &keys.revoked);
    b.rejected(
        b.draft_text(
            "key-revoked",
            "Signed by a key the trust list revokes (status 3), within its periods: the signature verifies, then \
             the key's status rejects it.",
            p.qr_text(),
            &keys.revoked,
        ),
        "key_revoked",
    );
    let mut flipped = SignedPass::sign(
        standard_contents(pass_id_for("key-revoked-bad-signature"), Modes::AIR_AND_RAIL),
        &keys.revoked,
    )
    .envelope()
    .to_vec();
    let last = flipped.len() - 1;
    flipped[last - 40] ^= 0x02;
    b.rejected(
        b.draft_text(
            "key-revoked-bad-signature",
            "A revoked key's pass with a signature bit flipped: the signature is checked before the key's status.",
            text_of(&flipped),
            &keys.revoked,
        ),
        "bad_signature",
    );
    let p =
        SignedPass::sign(standard_contents(pass_id_for("key-signing-period-ended"), Modes::AIR_AND_RAIL), &keys.old);
    b.rejected(
        b.draft_text(
            "key-signing-period-ended",
            "Signed by the old key with issued_at 25 hours after its sign_until (as a stolen retired key would): \
             issued_at is outside [sign_from, sign_until).",
            p.qr_text(),
            &keys.old,
        ),
        "key_not_valid",
    );
    let p = SignedPass::sign(
        contents(pass_id_for("key-signing-period-edge"), "CHAN TAI MAN", "陳大文", ROTATION, Modes::AIR_AND_RAIL),
        &keys.old,
    );
    b.rejected(
        b.draft_text(
            "key-signing-period-edge",
            "Signed by the old key with issued_at exactly its sign_until: the signing period excludes its end.",
            p.qr_text(),
            &keys.old,
        ),
        "key_not_valid",
    );
    let p = SignedPass::sign(
        contents(
            pass_id_for("key-signing-period-not-started"),
            "CHAN TAI MAN",
            "陳大文",
            ROTATION - 1,
            Modes::AIR_AND_RAIL,
        ),
        current,
    );
    b.rejected(
        b.draft("key-signing-period-not-started", "Signed by the current key one second before its sign_from.", &p),
        "key_not_valid",
    );
    // The old key's verification period cut short to SHORT_END, before its passes expire.
    let mut short = trust_list(keys);
    short.keys[1].verify_until = at(SHORT_END);
    let short = short.sign(&keys.root);
    let old_pass = |name| {
        SignedPass::sign(
            contents(pass_id_for(name), "CHAN TAI MAN", "陳大文", ROTATION - 23 * HOUR, Modes::AIR_AND_RAIL),
            &keys.old,
        )
    };
    let p = old_pass("key-past-verify-period");
    b.rejected(
        b.draft_text(
            "key-past-verify-period",
            "Signed by the old key inside its signing period; the trust list ends the key's verification period \
             (verify_until 2026-03-02T12:00:00Z) before the pass expires, and the clock is past it.",
            p.qr_text(),
            &keys.old,
        )
        .trust_list(short.clone()),
        "key_not_valid",
    );
    let p = old_pass("key-at-verify-until");
    b.rejected(
        b.draft_text(
            "key-at-verify-until",
            "As key-past-verify-period, at exactly verify_until: passes verify only while now < verify_until.",
            p.qr_text(),
            &keys.old,
        )
        .trust_list(short.clone())
        .now(SHORT_END),
        "key_not_valid",
    );
    let p = old_pass("key-verify-until-within-tolerance");
    b.accepted(
        b.draft_text(
            "key-verify-until-within-tolerance",
            "As key-at-verify-until, 299 seconds after verify_until with a 300-second tolerance: \
             now - tolerance < verify_until.",
            p.qr_text(),
            &keys.old,
        )
        .trust_list(short)
        .now(SHORT_END + TOLERANCE - 1)
        .tolerance(TOLERANCE),
    );

    // The window.
    let p = pass("expired", Modes::AIR_AND_RAIL);
    b.rejected(b.draft("expired", "A day after valid_until.", &p).now(VALID_UNTIL + DAY), "expired");
    let p = pass("not-yet-valid", Modes::AIR_AND_RAIL);
    b.rejected(b.draft("not-yet-valid", "One second before valid_from.", &p).now(ISSUED - 1), "not_yet_valid");
    let p = pass("at-valid-until", Modes::AIR_AND_RAIL);
    b.rejected(
        b.draft("at-valid-until", "At exactly valid_until: the window excludes its end.", &p).now(VALID_UNTIL),
        "expired",
    );
    let p = pass("expired-within-tolerance", Modes::AIR_AND_RAIL);
    b.accepted(
        b.draft(
            "expired-within-tolerance",
            "299 seconds after valid_until with a 300-second clock tolerance: now - tolerance < valid_until.",
            &p,
        )
        .now(VALID_UNTIL + TOLERANCE - 1)
        .tolerance(TOLERANCE),
    );
    let p = pass("expired-beyond-tolerance", Modes::AIR_AND_RAIL);
    b.rejected(
        b.draft(
            "expired-beyond-tolerance",
            "300 seconds after valid_until with a 300-second tolerance: now - tolerance = valid_until, expired.",
            &p,
        )
        .now(VALID_UNTIL + TOLERANCE)
        .tolerance(TOLERANCE),
        "expired",
    );
    let p = pass("not-yet-valid-within-tolerance", Modes::AIR_AND_RAIL);
    b.accepted(
        b.draft(
            "not-yet-valid-within-tolerance",
            "300 seconds before valid_from with a 300-second tolerance: now + tolerance = valid_from, accepted.",
            &p,
        )
        .now(ISSUED - TOLERANCE)
        .tolerance(TOLERANCE),
    );
    let p = pass("not-yet-valid-beyond-tolerance", Modes::AIR_AND_RAIL);
    b.rejected(
        b.draft("not-yet-valid-beyond-tolerance", "301 seconds before valid_from with a 300-second tolerance.", &p)
            .now(ISSUED - TOLERANCE - 1)
            .tolerance(TOLERANCE),
        "not_yet_valid",
    );

    // Modes.
    for (name, mode) in [("mode-road", Road), ("mode-sea", Sea), ("mode-foot", Foot)] {
        let p = pass(name, Modes::AIR_AND_RAIL);
        let description = format!("An air-and-rail pass at a {mode} checkpoint: passes never allow {mode}.");
        b.rejected(b.draft(name, &description, &p).mode(mode), "mode_not_allowed");
    }
    let p = pass("mode-rail-only-at-air", Modes::RAIL_ONLY);
    b.rejected(b.draft("mode-rail-only-at-air", "A rail-only pass (modes 2) at an airport.", &p), "mode_not_allowed");
    let p = pass("expired-at-road-checkpoint", Modes::AIR_AND_RAIL);
    b.rejected(
        b.draft(
            "expired-at-road-checkpoint",
            "Expired and at a road checkpoint: the window is checked before the mode.",
            &p,
        )
        .mode(Road)
        .now(VALID_UNTIL),
        "expired",
    );

    // The status list.
    let listed = |pass_id: [u8; 16]| {
        SignedPass::sign(standard_contents(PassId::from_bytes(pass_id), Modes::AIR_AND_RAIL), current)
    };
    b.rejected(b.draft("revoked-pass", "The fresh status list revokes this pass.", &listed(REVOKED_PASS)), "revoked");
    b.rejected(
        b.draft(
            "used-pass",
            "The fresh status list records this pass as used at a rail checkpoint.",
            &listed(USED_PASS),
        ),
        "already_used",
    );
    b.rejected(
        b.draft(
            "used-and-revoked-pass",
            "The status list records this pass as used, then revoked: revoked is reported first, as online.",
            &listed(USED_AND_REVOKED_PASS),
        ),
        "revoked",
    );
    let p = pass("no-status-list", Modes::AIR_AND_RAIL);
    b.accepted(
        b.draft("no-status-list", "No status list: accepted, single use not checked.", &p).status(StatusPlan::Absent),
    );
    b.accepted(
        b.draft(
            "used-pass-no-status-list",
            "The pass of used-pass, with no status list: accepted, single use not checked.",
            &listed(USED_PASS),
        )
        .status(StatusPlan::Absent),
    );
    b.accepted(
        b.draft(
            "stale-status-list",
            "The pass of used-pass; the status list went stale an hour ago, so it is not consulted: accepted, \
             single use not checked.",
            &listed(USED_PASS),
        )
        .status(StatusPlan::Stale),
    );
    b.rejected(
        b.draft(
            "status-list-at-stale-after",
            "The pass of revoked-pass; the clock is exactly the status list's stale_after: the list is stale only \
             when now > stale_after, so it still revokes the pass.",
            &listed(REVOKED_PASS),
        )
        .status(StatusPlan::AtStaleAfter),
        "revoked",
    );
    b.accepted(
        b.draft(
            "status-list-bad-signature",
            "The pass of revoked-pass; the status list's signature has a bit flipped, so the list is unusable: \
             accepted, single use not checked.",
            &listed(REVOKED_PASS),
        )
        .status(StatusPlan::BadSignature),
    );
    b.accepted(
        b.draft(
            "status-list-signed-by-root",
            "The pass of revoked-pass; the status list is signed by the root key, which signs only trust lists: \
             the status list's key must be a pass-signing key of the trust list. Unusable.",
            &listed(REVOKED_PASS),
        )
        .status(StatusPlan::SignedBy(Signer::Root)),
    );
    b.accepted(
        b.draft(
            "status-list-signed-by-unknown-key",
            "The pass of revoked-pass; the status list is signed by a key the trust list does not name. Unusable.",
            &listed(REVOKED_PASS),
        )
        .status(StatusPlan::SignedBy(Signer::Untrusted)),
    );
    b.accepted(
        b.draft(
            "status-list-signed-by-revoked-key",
            "The pass of revoked-pass; the status list is signed by the revoked key. Unusable.",
            &listed(REVOKED_PASS),
        )
        .status(StatusPlan::SignedBy(Signer::Revoked)),
    );
    b.rejected(
        b.draft(
            "status-list-signed-by-retired-key",
            "The pass of revoked-pass; the status list is signed by the retired old key, still inside its \
             verification period: a retired key's status list is used.",
            &listed(REVOKED_PASS),
        )
        .status(StatusPlan::SignedBy(Signer::Old)),
        "revoked",
    );
    b.accepted(
        b.draft(
            "status-list-malformed",
            "The pass of revoked-pass; the correctly signed status list has an entry of state 1 (revoked) with mode \
             1 (air), a combination that never occurs. Unusable.",
            &listed(REVOKED_PASS),
        )
        .status(StatusPlan::Malformed),
    );

    // Status deltas.
    b.rejected(
        b.draft(
            "status-deltas-record-use",
            "A pass used after the full status list was signed. The full list (sequence 7) does not name it; the \
             first delta (7 to 8) has no entries, the second (8 to 9) records the use. Applied in order, they \
             reject the pass.",
            &listed(USED_AFTER_LIST_PASS),
        )
        .status(StatusPlan::DeltasRecordUse),
        "already_used",
    );
    b.rejected(
        b.draft(
            "status-delta-refreshes-stale-list",
            "The pass of revoked-pass. The full list went stale an hour ago; a fresh delta without entries (7 to \
             7) brings its stale_after forward, so the list is consulted and revokes the pass. Staleness is judged \
             after the deltas.",
            &listed(REVOKED_PASS),
        )
        .status(StatusPlan::DeltaRefreshes),
        "revoked",
    );
    b.accepted(
        b.draft(
            "status-delta-mismatch",
            "The pass of used-pass, which the fresh full list (sequence 7) records as used; the delta given applies \
             to sequence 6, not 7. A delta that does not follow makes the whole status list unusable: accepted, \
             single use not checked.",
            &listed(USED_PASS),
        )
        .status(StatusPlan::DeltaMismatch),
    );
    b.accepted(
        b.draft(
            "status-delta-bad-signature",
            "The pass of used-pass, which the fresh full list records as used; the delta's signature has a bit \
             flipped. The whole status list is unusable: accepted, single use not checked.",
            &listed(USED_PASS),
        )
        .status(StatusPlan::DeltaBadSignature),
    );
    b.accepted(
        b.draft(
            "status-list-is-a-delta",
            "The pass of used-pass; the status list given is a delta (base_sequence 5), though it lists the pass \
             as used. A delta says nothing about the events before its base, so it is refused where the full \
             list belongs: accepted, single use not checked.",
            &listed(USED_PASS),
        )
        .status(StatusPlan::DeltaAsFullList),
    );

    // Status list rollback.
    b.accepted(
        b.draft(
            "status-list-rollback",
            "The pass of status-deltas-record-use, used after the full list (sequence 7) was signed. The \
             checkpoint already used status list sequence 9, which records the use; it is given the fresh full \
             list of sequence 7 again, without the deltas, as an attacker replaying an older list would. A status \
             list older than the one held is not used: accepted, single use not checked.",
            &listed(USED_AFTER_LIST_PASS),
        )
        .held_status_rolled_back(STATUS_SEQUENCE + 2),
    );
    b.rejected(
        b.draft(
            "status-list-equal-held-sequence",
            "The pass and held status sequence (9) of status-list-rollback, with the deltas of \
             status-deltas-record-use: the held sequence is compared with the list after its deltas (9), equal \
             is not a rollback, and the list rejects the pass.",
            &listed(USED_AFTER_LIST_PASS),
        )
        .status(StatusPlan::DeltasRecordUse)
        .held_status(STATUS_SEQUENCE + 2),
        "already_used",
    );

    // Sequence 0 is the empty journal: a delta on 0 is a full list.
    b.rejected(
        b.draft(
            "status-delta-on-sequence-0",
            "A fresh server's lists. The full list is the empty journal (sequence 0, no entries); the delta on \
             sequence 0 (0 to 1) records the use of the pass. It follows the list held (base 0 = sequence 0), \
             and, the events after sequence 0 being all the events, it is also a full list on its own: either \
             way the pass is rejected.",
            &listed(USED_AFTER_LIST_PASS),
        )
        .status(StatusPlan::DeltaOnSequenceZero),
        "already_used",
    );
    b.accepted(
        b.draft(
            "status-list-entries-at-sequence-0",
            "The pass of revoked-pass; the correctly signed full list has sequence 0, the empty journal, yet \
             lists the usual entries. A list whose base_sequence equals its sequence has no events, so it is \
             malformed: unusable, accepted, single use not checked.",
            &listed(REVOKED_PASS),
        )
        .status(StatusPlan::EntriesAtSequenceZero),
    );

    // The trust list.
    let p = pass("trust-list-stale", Modes::AIR_AND_RAIL);
    let mut stale = trust_list(keys);
    stale.stale_after = at(SHORT_END);
    let stale = stale.sign(&keys.root);
    b.cannot_decide(
        b.draft(
            "trust-list-stale",
            "The trust list went stale at 2026-03-02T12:00:00Z, 13 hours before the clock: the verifier cannot \
             decide (the pass is not judged invalid).",
            &p,
        )
        .trust_list(stale.clone()),
        "trust_list_stale",
    );
    let p = pass("trust-list-at-stale-after", Modes::AIR_AND_RAIL);
    b.accepted(
        b.draft(
            "trust-list-at-stale-after",
            "The stale list of trust-list-stale, at exactly its stale_after: stale only when now > stale_after.",
            &p,
        )
        .trust_list(stale.clone())
        .now(SHORT_END),
    );
    let p = pass("trust-list-stale-tolerance-not-applied", Modes::AIR_AND_RAIL);
    b.cannot_decide(
        b.draft(
            "trust-list-stale-tolerance-not-applied",
            "One second after the trust list's stale_after with a 300-second clock tolerance: the tolerance widens \
             only the pass's window and the key's verification period, not the lists' staleness.",
            &p,
        )
        .trust_list(stale)
        .now(SHORT_END + 1)
        .tolerance(TOLERANCE),
        "trust_list_stale",
    );
    let p = pass("trust-list-rollback", Modes::AIR_AND_RAIL);
    b.cannot_decide(
        b.draft(
            "trust-list-rollback",
            "The checkpoint already held trust list sequence 43; this list is 42: a rollback.",
            &p,
        )
        .held(TRUST_SEQUENCE + 1),
        "trust_list_rollback",
    );
    let p = pass("trust-list-held-sequence-equal", Modes::AIR_AND_RAIL);
    b.accepted(
        b.draft(
            "trust-list-held-sequence-equal",
            "The checkpoint already held sequence 42, the same list: not a rollback.",
            &p,
        )
        .held(TRUST_SEQUENCE),
    );
    let p = pass("trust-list-bad-root-signature", Modes::AIR_AND_RAIL);
    let mut bad_root = trust_list(keys).sign(&keys.root);
    let signature_at = bad_root.len() - SIGNATURE_LEN;
    bad_root[signature_at] ^= 0x01;
    b.cannot_decide(
        b.draft("trust-list-bad-root-signature", "The trust list's root signature has a bit flipped.", &p)
            .trust_list(bad_root),
        "trust_list_bad_signature",
    );
    let p = pass("trust-list-wrong-root-key", Modes::AIR_AND_RAIL);
    b.cannot_decide(
        b.draft(
            "trust-list-wrong-root-key",
            "The trust list is signed by another root key: its key id is not the provisioned root key's.",
            &p,
        )
        .trust_list(trust_list(keys).sign(&keys.other_root)),
        "trust_list_wrong_root_key",
    );
    let p = pass("trust-list-malformed", Modes::AIR_AND_RAIL);
    let mut inconsistent = trust_list(keys);
    inconsistent.keys[0].verify_until = inconsistent.keys[0].sign_until - chrono::TimeDelta::seconds(1);
    b.cannot_decide(
        b.draft(
            "trust-list-malformed",
            "A correctly signed trust list in which the current key's verify_until is before its sign_until.",
            &p,
        )
        .trust_list(inconsistent.sign(&keys.root)),
        "trust_list_malformed",
    );
    let mut names_root = trust_list(keys);
    names_root.keys.push(TrustedKey { public_key: keys.root.public_key(), ..names_root.keys[1].clone() });
    b.cannot_decide(
        b.draft(
            "trust-list-names-root-key",
            "The pass of revoked-pass. The correctly signed trust list also names the root key, as a retired \
             pass-signing key inside its verification period, and the status list is signed by the root key. \
             The root key signs trust lists only, so the trust list is malformed: the verifier cannot decide \
             (had the list been used, the status list would have been too).",
            &listed(REVOKED_PASS),
        )
        .trust_list(names_root.sign(&keys.root))
        .status(StatusPlan::SignedBy(Signer::Root)),
        "trust_list_malformed",
    );

    b.cases
}

/// The stable name of a format problem, as in `epass.v1.FormatProblem`.
pub fn format_problem_name(problem: &FormatProblem) -> &'static str {
    match problem {
        FormatProblem::WrongPrefix => "wrong_prefix",
        FormatProblem::BadBase64 => "bad_base64",
        FormatProblem::TooShort { .. } => "too_short",
        FormatProblem::TooLong { .. } => "too_long",
        FormatProblem::UnsupportedVersion { .. } => "unsupported_version",
        FormatProblem::BadPayload(_) => "bad_payload",
    }
}

/// The name of a trust list problem in the vectors.
pub fn trust_problem_name(error: &TrustListError) -> &'static str {
    match error {
        TrustListError::Malformed(_) => "trust_list_malformed",
        TrustListError::WrongRootKey { .. } => "trust_list_wrong_root_key",
        TrustListError::BadSignature => "trust_list_bad_signature",
        TrustListError::Rollback { .. } => "trust_list_rollback",
        TrustListError::Stale { .. } => "trust_list_stale",
    }
}

/// The name of a status check in the vectors.
pub fn status_check_name(check: &StatusCheck) -> &'static str {
    match check {
        StatusCheck::Checked { .. } => "checked",
        StatusCheck::NoList => "no_list",
        StatusCheck::Stale { .. } => "stale",
        StatusCheck::Unusable(_) => "unusable",
        StatusCheck::NotEvaluated => "not_evaluated",
    }
}

/// An offline outcome as the vectors name it: outcome, reason, format problem.
pub fn outcome_names(outcome: &Outcome) -> (&'static str, Option<&'static str>, Option<&'static str>) {
    match outcome {
        Outcome::Accepted => ("accepted", None, None),
        Outcome::Rejected(rejection) => {
            let problem = match rejection {
                epass_core::verify::Rejection::BadFormat(problem) => Some(format_problem_name(problem)),
                _ => None,
            };
            ("rejected", Some(rejection.reason().as_str()), problem)
        }
        Outcome::CannotDecide(error) => ("cannot_decide", Some(trust_problem_name(error)), None),
    }
}

fn json_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => write!(out, "\\u{:04x}", u32::from(c)).expect("writing to a String"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

impl Case {
    /// `case.json`.
    pub fn json(&self) -> String {
        let e = &self.expected;
        let mut expected = format!("    \"outcome\": {}", json_string(e.outcome));
        if let Some(reason) = e.reason {
            write!(expected, ",\n    \"reason\": {}", json_string(reason)).expect("writing to a String");
        }
        if let Some(problem) = e.format_problem {
            write!(expected, ",\n    \"format_problem\": {}", json_string(problem)).expect("writing to a String");
        }
        write!(expected, ",\n    \"status\": {}", json_string(e.status)).expect("writing to a String");
        let held_status =
            self.held_status_sequence.map_or_else(String::new, |s| format!("  \"held_status_sequence\": {s},\n"));
        let deltas: Vec<String> = self.delta_names().iter().map(|name| json_string(&format!("{name}.bin"))).collect();
        format!(
            "{{\n  \"description\": {},\n  \"now\": {},\n  \"now_seconds\": {},\n  \"clock_tolerance_seconds\": {},\n  \
             \"mode\": {},\n  \"held_trust_sequence\": {},\n{held_status}  \"status_deltas\": [{}],\n  \
             \"expected\": {{\n{expected}\n  }}\n}}\n",
            json_string(&self.description),
            json_string(&rfc3339(self.now)),
            self.now,
            self.tolerance,
            json_string(self.mode.name()),
            self.held_trust_sequence.map_or_else(|| "null".to_owned(), |s| s.to_string()),
            deltas.join(", "),
        )
    }

    /// The delta files' names without extension, in the order they apply.
    fn delta_names(&self) -> Vec<String> {
        (1..=self.status_deltas.len()).map(|i| format!("status-delta-{i}")).collect()
    }

    /// Every file of the case, by name.
    pub fn files(&self, root_public_key: &[u8; 32]) -> Vec<(String, Vec<u8>)> {
        let hex_line = |bytes: &[u8]| format!("{}\n", hex::encode(bytes)).into_bytes();
        let symbol = QrSymbol::encode(&self.qr_text).expect("every case's text fits a QR code");
        let mut files: Vec<(&str, Vec<u8>)> = vec![
            ("case.json", self.json().into_bytes()),
            ("qr.txt", self.qr_text.clone().into_bytes()),
            ("qr.png", symbol.png()),
            ("root-public-key.hex", hex_line(root_public_key)),
            ("signing-public-key.hex", self.signers.iter().flat_map(|key| hex_line(key)).collect()),
            ("trust-list.bin", self.trust_list.clone()),
            ("trust-list.hex", hex_line(&self.trust_list)),
        ];
        if let Some(list) = &self.status_list {
            files.push(("status-list.bin", list.clone()));
            files.push(("status-list.hex", hex_line(list)));
        }
        // The envelope as a verifier splits it, whenever the body is canonical base64url.
        let envelope = self.qr_text.strip_prefix(QR_PREFIX).and_then(|body| URL_SAFE_NO_PAD.decode(body).ok());
        if let Some(envelope) = envelope {
            files.push(("envelope.hex", hex_line(&envelope)));
            if envelope.len() >= HEADER_LEN + 1 + SIGNATURE_LEN {
                let (signed, signature) = envelope.split_at(envelope.len() - SIGNATURE_LEN);
                files.push(("payload.hex", hex_line(&signed[HEADER_LEN..])));
                files.push(("signature.hex", hex_line(signature)));
            }
        }
        let mut files: Vec<(String, Vec<u8>)> =
            files.into_iter().map(|(name, bytes)| (name.to_owned(), bytes)).collect();
        for (name, delta) in self.delta_names().into_iter().zip(&self.status_deltas) {
            files.push((format!("{name}.bin"), delta.clone()));
            files.push((format!("{name}.hex"), hex_line(delta)));
        }
        files.sort();
        files
    }
}

/// Every file of `core/tests/vectors/`, by path relative to it.
pub fn vector_files() -> BTreeMap<String, Vec<u8>> {
    let keys = Keys::new();
    let cases = cases(&keys);
    let mut files = BTreeMap::new();
    for case in &cases {
        for (name, bytes) in case.files(&keys.root.public_key()) {
            assert!(files.insert(format!("{}/{name}", case.name), bytes).is_none(), "{} twice", case.name);
        }
    }
    files.insert("README.md".to_owned(), readme(&keys, &cases).into_bytes());
    files
}

fn readme(keys: &Keys, cases: &[Case]) -> String {
    let key_line = |name: &str, secret: &[u8; 32], signer: &PassSigner| {
        format!(
            "| {name} | `{}` × 32 | `{}` | `{}` |\n",
            hex::encode(&secret[..1]),
            hex::encode(signer.public_key()),
            signer.key_id()
        )
    };
    let mut md = format!(
        "{README_TITLE}

Generated by `core/examples/gen_vectors.rs`; do not edit by hand. Regenerate (it wipes this folder
and writes it again) with:

```sh
{REGENERATE}
```

`core/tests/conformance.rs` fails if these files differ in any byte from what the generator
produces, runs the reference offline verifier (`epass_core::offline::verify_offline`, and
`verify_offline_image` on `qr.png`) over every case, and checks that the online path
(`epass_core::verify::verify_at`) agrees wherever it can judge.

The format is specified in [`docs/FORMAT.md`](../../../docs/FORMAT.md): the pass, the trust list,
the status list and the offline verification algorithm. The secret keys below are published:
no verifier may ever trust them outside tests.

## Layout

One folder per case. In each:

| File | Content |
|---|---|
| `case.json` | The verifier's inputs other than bytes, and the expected verdict (below). |
| `qr.txt` | The QR text, exactly: no newline is added at the end (the one case whose text ends in a line feed has it in the file). |
| `qr.png` | That text as a QR symbol as FORMAT.md draws it (one byte-mode segment, level Q, the smallest version that holds the text, so the version follows from the text's length), 8 pixels per module, the full 4-module quiet zone (32 light pixels) on every side (`core/tests/conformance.rs` checks it), 1-bit greyscale PNG. Reading it must give `qr.txt` exactly. |
| `root-public-key.hex` | The root public key the checkpoint is provisioned with (32 bytes). The same in every case. |
| `signing-public-key.hex` | The pass-signing keys involved, one per line: first the key that signed the pass, then the key that signed the status list if it is another. For reference only: a verifier takes keys from the trust list. |
| `trust-list.bin` | The signed trust list the checkpoint holds. |
| `status-list.bin` | The signed full status list the checkpoint holds, when it has one. No file: no status list. |
| `status-delta-1.bin`, `status-delta-2.bin`, ... | Signed status deltas the checkpoint received after that list, applied in this order (`case.json` names them too). |
| `envelope.hex` | The envelope the QR text decodes to, when its body is canonical unpadded base64url (whatever the envelope's length or version). |
| `payload.hex`, `signature.hex` | That envelope split as a verifier splits it, when it is at least 74 bytes long: the bytes between the 9-byte header and the last 64 bytes, and the last 64 bytes. |

Every `.hex` file is lower-case hex of the bytes, then one line feed; `trust-list.hex`,
`status-list.hex` and `status-delta-N.hex` are the `.bin` files in hex.

## `case.json`

```json
{{
  \"description\": \"What the case checks and why the verdict is what it is.\",
  \"now\": \"2026-03-03T01:00:00Z\",
  \"now_seconds\": 1772499600,
  \"clock_tolerance_seconds\": 0,
  \"mode\": \"air\",
  \"held_trust_sequence\": null,
  \"status_deltas\": [],
  \"expected\": {{
    \"outcome\": \"rejected\",
    \"reason\": \"bad_format\",
    \"format_problem\": \"bad_base64\",
    \"status\": \"checked\"
  }}
}}
```

- `now`, `now_seconds`: the checkpoint's clock, as RFC 3339 and as seconds since the Unix epoch.
- `clock_tolerance_seconds`: how far that clock may be off (FORMAT.md, *Clock tolerance*).
- `mode`: the checkpoint's transport mode: `air`, `rail`, `road`, `sea` or `foot`.
- `held_trust_sequence`: the highest trust list sequence the checkpoint accepted before, or
  `null` for none.
- `held_status_sequence`: present only when set: the highest status list sequence the
  checkpoint used before. Absent: none. A status list whose sequence, after its deltas, is
  lower is `unusable` (a rollback); an equal one is fine.
- `status_deltas`: the delta files, in the order they apply on top of `status-list.bin`.
- `expected.outcome`: `accepted`, `rejected` or `cannot_decide`.
- `expected.reason`: present unless accepted. When rejected, the reason's stable name
  (`bad_format`, `unknown_key`, `bad_signature`, `key_revoked`, `key_not_valid`,
  `not_yet_valid`, `expired`, `mode_not_allowed`, `revoked`, `already_used`). When the verifier
  cannot decide, the trust list problem: `trust_list_malformed`, `trust_list_wrong_root_key`,
  `trust_list_bad_signature`, `trust_list_rollback` or `trust_list_stale`.
- `expected.format_problem`: present when the reason is `bad_format`: `wrong_prefix`,
  `bad_base64`, `too_short`, `too_long`, `unsupported_version` or `bad_payload`.
- `expected.status`: what the status list contributed: `checked` (a fresh, valid list was
  consulted), or, meaning *single use not checked*: `no_list`, `stale` (past its
  `stale_after` once the deltas are applied), `unusable` (the list or a delta refused:
  signature, key, content, a delta as the full list, a delta that does not follow, or a
  sequence after the deltas lower than `held_status_sequence`) or
  `not_evaluated` (the trust list was unusable, so the status list was not looked at: always
  the status when the outcome is `cannot_decide`). Otherwise the status is reported whatever
  the pass's verdict: a status list is judged on its own.

## Running a verifier over the vectors

For each folder: provision the verifier with `root-public-key.hex`; give it `trust-list.bin`,
`held_trust_sequence`, `status-list.bin` if present, the `status_deltas`,
`held_status_sequence` if present, `mode`, `now_seconds` and
`clock_tolerance_seconds`; verify `qr.txt` (read as bytes, nothing stripped), and also the text
your QR reader gets from `qr.png`. Compare `outcome`, `reason`, `format_problem` and `status`
with `expected`. A conforming verifier matches every case. Reasons and problems are names only:
match them to your own error codes once, with the tables of FORMAT.md.

Restrict your reader to QR Code. A reader that looks for every barcode format (zxing-cpp with
all formats enabled, for example) may report symbols that are not there: it finds a spurious
Codabar symbol in `valid-at-valid-from/qr.png`, in the pattern of the QR modules. A pass is only
ever a QR Code (Model 2, FORMAT.md *The QR symbol*); at a gate, enable that format alone.

The reference verifier does this in `core/tests/conformance.rs`: `cargo test -p epass-core --test conformance`.

## Keys and times

| Key | Secret key | Public key | Key id |
|---|---|---|---|
"
    );
    md.push_str(&key_line("root (provisioned)", &ROOT_SECRET, &keys.root));
    md.push_str(&key_line("old (retired)", &OLD_SECRET, &keys.old));
    md.push_str(&key_line("current (active, signs status lists)", &CURRENT_SECRET, &keys.current));
    md.push_str(&key_line("revoked", &REVOKED_SECRET, &keys.revoked));
    md.push_str(&key_line("untrusted (not in the trust list)", &UNTRUSTED_SECRET, &keys.untrusted));
    md.push_str(&key_line("other root", &OTHER_ROOT_SECRET, &keys.other_root));
    write!(
        md,
        "
Unless a case says otherwise:

- the trust list is sequence {TRUST_SEQUENCE}, signed by the root at {rotation} and stale after
  {stale}. It names the current key (active, signs from {rotation}), the old key (retired,
  signed until {rotation}, verifies until {old_verify}) and the revoked key;
- passes are issued at {issued}, valid for 7 days, and checked at {now}, at an airport,
  with no clock tolerance and no trust list held before;
- the status list is a full list, sequence {STATUS_SEQUENCE}, signed by the current key 10
  minutes before the clock and stale an hour after it was signed. It lists pass
  `{revoked}` as revoked, pass `{used}` as used at a rail checkpoint, and pass
  `{both}` as used, then revoked. Status deltas are signed by the current key 5 minutes before
  the clock and stale an hour after.

FORMAT.md dissects the trust list and the status list of `valid-air` byte by byte.

## Cases

| Case | Mode | Expected | Description |
|---|---|---|---|
",
        rotation = rfc3339(ROTATION),
        stale = rfc3339(TRUST_STALE_AFTER),
        old_verify = rfc3339(ROTATION + WEEK),
        issued = rfc3339(ISSUED),
        now = rfc3339(NOW),
        revoked = hex::encode(REVOKED_PASS),
        used = hex::encode(USED_PASS),
        both = hex::encode(USED_AND_REVOKED_PASS),
    )
    .expect("writing to a String");
    for case in cases {
        let e = &case.expected;
        let mut expected = e.outcome.to_owned();
        if let Some(reason) = e.reason {
            write!(expected, " `{reason}`").expect("writing to a String");
        }
        if let Some(problem) = e.format_problem {
            write!(expected, " (`{problem}`)").expect("writing to a String");
        }
        write!(expected, ", status `{}`", e.status).expect("writing to a String");
        writeln!(md, "| `{}` | {} | {expected} | {} |", case.name, case.mode, case.description.replace('|', "\\|"))
            .expect("writing to a String");
    }
    md
}

// ---------------------------------------------------------------------------------------------
// The Markdown of docs/FORMAT.md that describes the lists byte for byte.

#[derive(Clone, Copy)]
enum Kind {
    Uint,
    Time,
    Bytes,
    Text,
    KeyStatus,
    State,
    Mode,
    Message(&'static str, &'static [Field]),
}

struct Field {
    number: u64,
    name: &'static str,
    kind: Kind,
}

const TRUSTED_KEY_FIELDS: &[Field] = &[
    Field { number: 1, name: "public_key", kind: Kind::Bytes },
    Field { number: 2, name: "status", kind: Kind::KeyStatus },
    Field { number: 3, name: "sign_from", kind: Kind::Time },
    Field { number: 4, name: "sign_until", kind: Kind::Time },
    Field { number: 5, name: "verify_until", kind: Kind::Time },
];

const TRUST_LIST_FIELDS: &[Field] = &[
    Field { number: 1, name: "sequence", kind: Kind::Uint },
    Field { number: 2, name: "issued_at", kind: Kind::Time },
    Field { number: 3, name: "stale_after", kind: Kind::Time },
    Field { number: 4, name: "keys", kind: Kind::Message("TrustedKey", TRUSTED_KEY_FIELDS) },
];

const PASS_STATUS_FIELDS: &[Field] = &[
    Field { number: 1, name: "pass_id", kind: Kind::Bytes },
    Field { number: 2, name: "state", kind: Kind::State },
    Field { number: 3, name: "valid_until", kind: Kind::Time },
    Field { number: 4, name: "at", kind: Kind::Time },
    Field { number: 5, name: "checkpoint_id", kind: Kind::Text },
    Field { number: 6, name: "mode", kind: Kind::Mode },
];

const STATUS_LIST_FIELDS: &[Field] = &[
    Field { number: 1, name: "sequence", kind: Kind::Uint },
    Field { number: 2, name: "issued_at", kind: Kind::Time },
    Field { number: 3, name: "stale_after", kind: Kind::Time },
    Field { number: 4, name: "base_sequence", kind: Kind::Uint },
    Field { number: 5, name: "entries", kind: Kind::Message("PassStatus", PASS_STATUS_FIELDS) },
];

fn read_varint(bytes: &[u8], at: usize) -> (u64, usize) {
    let mut value = 0u64;
    for (i, b) in bytes[at..].iter().enumerate() {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return (value, i + 1);
        }
    }
    panic!("truncated varint")
}

fn spaced_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" ")
}

/// Table rows for the fields of one message; offsets count from the start of the payload.
fn field_rows(bytes: &[u8], base: usize, fields: &[Field], prefix: &str, rows: &mut Vec<String>) {
    let mut at = 0;
    let mut counts = BTreeMap::new();
    while at < bytes.len() {
        let start = at;
        let (key, key_len) = read_varint(bytes, at);
        at += key_len;
        let field = fields.iter().find(|f| f.number == key >> 3).expect("a known field");
        let key_hex = spaced_hex(&bytes[start..at]);
        let offset = base + start;
        match field.kind {
            Kind::Message(message, inner) => {
                let index = counts.entry(field.number).or_insert(0usize);
                let name = format!("{prefix}{}[{index}]", field.name);
                *index += 1;
                let (len, len_len) = read_varint(bytes, at);
                let len_hex = spaced_hex(&bytes[at..at + len_len]);
                at += len_len;
                let len = usize::try_from(len).expect("a short message");
                rows.push(format!(
                    "| {offset} | `{key_hex}` | {} `{name}` (LEN) | `{len_hex}` = {len} | | a `{message}`: the rows below |",
                    field.number
                ));
                field_rows(&bytes[at..at + len], base + at, inner, &format!("{name}."), rows);
                at += len;
            }
            Kind::Bytes | Kind::Text => {
                let (len, len_len) = read_varint(bytes, at);
                let len_hex = spaced_hex(&bytes[at..at + len_len]);
                at += len_len;
                let len = usize::try_from(len).expect("a short field");
                let value = &bytes[at..at + len];
                at += len;
                let meaning = match field.kind {
                    Kind::Text => format!("UTF-8 \"{}\"", std::str::from_utf8(value).expect("a string field")),
                    _ if len == 32 => format!(
                        "32-byte public key, key id `{}`",
                        KeyId::of_public_key(value.try_into().expect("32 bytes"))
                    ),
                    _ => format!("{len} bytes"),
                };
                rows.push(format!(
                    "| {offset} | `{key_hex}` | {} `{prefix}{}` (LEN) | `{len_hex}` = {len} | `{}` | {meaning} |",
                    field.number,
                    field.name,
                    spaced_hex(value)
                ));
            }
            Kind::Uint | Kind::Time | Kind::KeyStatus | Kind::State | Kind::Mode => {
                let (value, len) = read_varint(bytes, at);
                let value_hex = spaced_hex(&bytes[at..at + len]);
                at += len;
                let meaning = match field.kind {
                    Kind::Time => format!("{value} = {}", rfc3339(i64::try_from(value).expect("a time in range"))),
                    Kind::KeyStatus => {
                        format!(
                            "{value} = {}",
                            ["", "active", "retired", "revoked"][usize::try_from(value).expect("small")]
                        )
                    }
                    Kind::State => {
                        format!("{value} = {}", ["", "revoked", "used"][usize::try_from(value).expect("small")])
                    }
                    Kind::Mode => format!("{value} = {}", ["", "air", "rail"][usize::try_from(value).expect("small")]),
                    _ => value.to_string(),
                };
                rows.push(format!(
                    "| {offset} | `{key_hex}` | {} `{prefix}{}` (VARINT) | | `{value_hex}` | {meaning} |",
                    field.number, field.name
                ));
            }
        }
    }
}

fn list_markdown(kind: &str, list: &[u8], domain: &[u8], signer: &str, fields: &[Field]) -> String {
    let (signed, signature) = list.split_at(list.len() - SIGNATURE_LEN);
    let payload = &signed[HEADER_LEN..];
    let mut md = String::new();
    let mut line = |s: String| {
        md.push_str(&s);
        md.push('\n');
    };
    line(format!("- {kind} ({} bytes): `{}`", list.len(), hex::encode(list)));
    line(format!("- Version (offset 0, 1 byte): `{}`", hex::encode(&signed[..1])));
    line(format!("- Key id (offset 1, 8 bytes), of the {signer}: `{}`", hex::encode(&signed[1..HEADER_LEN])));
    line(format!("- Payload (offset 9, {} bytes): `{}`", payload.len(), hex::encode(payload)));
    line(format!("- Signature (offset {}, 64 bytes): `{}`", signed.len(), hex::encode(signature)));
    line(format!(
        "- Signed message ({} bytes: the {}-byte domain, then bytes 0 to {} of the list): `{}`",
        domain.len() + signed.len(),
        domain.len(),
        signed.len() - 1,
        hex::encode([domain, signed].concat())
    ));
    line(String::new());
    line("The payload, field by field (offsets count from the start of the payload):".into());
    line(String::new());
    line("| Offset | Key | Field (wire type) | Length | Value bytes | Value |".into());
    line("|---:|---|---|---|---|---|".into());
    let mut rows = Vec::new();
    field_rows(payload, 0, fields, "", &mut rows);
    for row in rows {
        line(row);
    }
    md
}

/// The generated sections of docs/FORMAT.md, by marker name.
pub fn doc_sections() -> BTreeMap<&'static str, String> {
    let keys = Keys::new();
    let cases = cases(&keys);
    let valid_air = cases.iter().find(|c| c.name == "valid-air").expect("the valid-air case");
    let mut sections = BTreeMap::new();

    let mut trust = format!(
        "Inputs: the root secret key is 32 bytes `a0`; the pass-signing keys are the secret keys of 32 \
         bytes `a2` (current, active), `a1` (old, retired) and `a3` (revoked). This is the trust list of \
         `core/tests/vectors/valid-air/trust-list.bin`.\n\n\
         - Root public key: `{}`\n\
         - Root key id: `{}`\n",
        hex::encode(keys.root.public_key()),
        keys.root.key_id()
    );
    trust.push_str(&list_markdown(
        "Trust list",
        &valid_air.trust_list,
        TRUST_LIST_DOMAIN,
        "root key",
        TRUST_LIST_FIELDS,
    ));
    sections.insert("trust-list-example", trust);

    let status_bytes = valid_air.status_list.as_ref().expect("valid-air has a status list");
    let mut status = format!(
        "Inputs: signed by the current pass-signing key (secret key 32 bytes `a2`, public key `{}`), 10 \
         minutes before the clock of `core/tests/vectors/valid-air/` ({}). This is \
         `core/tests/vectors/valid-air/status-list.bin`.\n\n",
        hex::encode(keys.current.public_key()),
        rfc3339(valid_air.now)
    );
    status.push_str(&list_markdown(
        "Status list",
        status_bytes,
        STATUS_LIST_DOMAIN,
        "current pass-signing key",
        STATUS_LIST_FIELDS,
    ));
    sections.insert("status-list-example", status);

    let constants = [
        (
            format!(
                "Trust list signature domain, hex ({} bytes: ASCII `epass/trust-list/v1` then one zero byte)",
                TRUST_LIST_DOMAIN.len()
            ),
            hex::encode(TRUST_LIST_DOMAIN),
            "trust::TRUST_LIST_DOMAIN",
        ),
        (
            format!(
                "Status list signature domain, hex ({} bytes: ASCII `epass/status-list/v1` then one zero byte)",
                STATUS_LIST_DOMAIN.len()
            ),
            hex::encode(STATUS_LIST_DOMAIN),
            "status::STATUS_LIST_DOMAIN",
        ),
        ("List format version byte".to_owned(), LIST_FORMAT_VERSION.to_string(), "trust::LIST_FORMAT_VERSION"),
        ("List header (version byte and key id), bytes".to_owned(), HEADER_LEN.to_string(), "pass::HEADER_LEN"),
        (
            "Shortest list (header and signature, empty payload), bytes".to_owned(),
            (HEADER_LEN + SIGNATURE_LEN).to_string(),
            "pass::HEADER_LEN + pass::SIGNATURE_LEN",
        ),
        ("Longest list, bytes (16 MiB)".to_owned(), MAX_LIST_LEN.to_string(), "signed::MAX_LIST_LEN"),
        (
            "Latest time a list may carry, seconds".to_owned(),
            (MAX_TIMESTAMP - 1).to_string(),
            "pass::MAX_TIMESTAMP - 1",
        ),
        ("Key status: active".to_owned(), "1".to_owned(), "keys::KeyStatus::Active"),
        ("Key status: retired".to_owned(), "2".to_owned(), "keys::KeyStatus::Retired"),
        ("Key status: revoked".to_owned(), "3".to_owned(), "keys::KeyStatus::Revoked"),
        ("Pass status state: revoked".to_owned(), "1".to_owned(), "status::PassEvent::Revoked"),
        ("Pass status state: used".to_owned(), "2".to_owned(), "status::PassEvent::Used"),
        ("Pass status mode: air".to_owned(), "1".to_owned(), "pass::TransportMode::Air"),
        ("Pass status mode: rail".to_owned(), "2".to_owned(), "pass::TransportMode::Rail"),
        (
            "Reference server: trust list lifetime, seconds (30 days)".to_owned(),
            (30 * DAY).to_string(),
            "trust::TRUST_LIST_LIFETIME",
        ),
        (
            "Reference server: signing period of a new key, seconds (365 days)".to_owned(),
            (365 * DAY).to_string(),
            "trust::SIGNING_PERIOD",
        ),
        (
            "Reference server: status list lifetime, seconds (1 hour)".to_owned(),
            HOUR.to_string(),
            "server::DEFAULT_STATUS_LIST_LIFETIME",
        ),
    ];
    let mut table = String::from("| Constant | Value | In the code |\n|---|---|---|\n");
    for (name, value, code) in constants {
        writeln!(table, "| {name} | `{value}` | `{code}` |").expect("writing to a String");
    }
    sections.insert("list-constants", table);
    sections
}

/// `signed::MAX_LIST_LEN`, which the crate does not export; `core/tests/conformance.rs` checks it
/// by behaviour.
pub const MAX_LIST_LEN: usize = 16 << 20;

/// Writes the vectors into `dir`, after removing what it held.
pub fn write_vectors(dir: &Path) -> std::io::Result<usize> {
    if dir.exists() {
        let readme = std::fs::read_to_string(dir.join("README.md")).unwrap_or_default();
        let empty = std::fs::read_dir(dir)?.next().is_none();
        if !empty && !readme.starts_with(README_TITLE) {
            return Err(std::io::Error::other(format!(
                "{} is not empty and holds no vectors README: refusing to wipe it",
                dir.display()
            )));
        }
        std::fs::remove_dir_all(dir)?;
    }
    let files = vector_files();
    for (path, bytes) in &files {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().expect("a file in a folder"))?;
        std::fs::write(path, bytes)?;
    }
    Ok(files.len())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [flag] if flag == "--doc" => {
            for (name, markdown) in doc_sections() {
                println!("<!-- {name}:begin -->\n{markdown}<!-- {name}:end -->\n");
            }
        }
        [dir] if !dir.starts_with('-') => match write_vectors(Path::new(dir)) {
            Ok(count) => eprintln!("wrote {count} files to {dir}"),
            Err(error) => {
                eprintln!("gen_vectors: {error}");
                std::process::exit(1);
            }
        },
        _ => {
            eprintln!("usage: gen_vectors <dir> (e.g. {REGENERATE})\n       gen_vectors --doc");
            std::process::exit(64);
        }
    }
}
