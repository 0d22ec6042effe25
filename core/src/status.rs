//! The status list: the passes still within their validity that are revoked or used, signed by
//! a pass-signing key, so that an offline checkpoint can refuse them too.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use crate::ids::{KeyId, PassId};
use crate::keys::{KeyRing, KeyStatus, PassSigner};
use crate::pass::TransportMode;
use crate::signed;
use crate::verify::{EntryRecord, Rejection};
use crate::wire;

/// Signature domain of status lists.
pub const STATUS_LIST_DOMAIN: &[u8] = b"epass/status-list/v1\0";

/// What happened to a pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PassEvent {
    /// Revoked by the issuer.
    Revoked,
    /// Used for its entry, at this checkpoint.
    Used {
        /// Where.
        checkpoint_id: String,
        /// The checkpoint's mode.
        mode: TransportMode,
    },
}

/// One line of a status list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusEntry {
    /// The pass.
    pub pass_id: PassId,
    /// What happened.
    pub event: PassEvent,
    /// When.
    pub at: DateTime<Utc>,
    /// The pass's own end of validity; the entry can be dropped after it.
    pub valid_until: DateTime<Utc>,
}

/// A status list: the events numbered `base_sequence + 1` to `sequence` of the issuer's journal
/// (which numbers its first event 1, so sequence 0 is the empty journal). A full list is the
/// one on `base_sequence` 0, holding every event; any other is a delta on top of
/// `base_sequence`. A delta on 0 and a full list are one and the same thing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusList {
    /// Sequence of the server's status after this list.
    pub sequence: u64,
    /// When it was signed.
    pub issued_at: DateTime<Utc>,
    /// After this it proves nothing about single use.
    pub stale_after: DateTime<Utc>,
    /// 0 for a full list; else the sequence of the list this delta applies to.
    pub base_sequence: u64,
    /// The entries.
    pub entries: Vec<StatusEntry>,
}

/// Why a status list cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StatusListError {
    /// Not a well-formed status list.
    #[error("malformed status list: {0}")]
    Malformed(&'static str),
    /// Signed by a key the trust list does not name.
    #[error("status list signed by unknown key {key_id}")]
    UnknownKey {
        /// The key id in the list.
        key_id: KeyId,
    },
    /// Signed by a revoked key, or one whose period has ended.
    #[error("status list signed by key {key_id}, which is no longer trusted")]
    KeyNotTrusted {
        /// The key id.
        key_id: KeyId,
    },
    /// The signature does not verify.
    #[error("status list signature does not verify")]
    BadSignature,
    /// A delta given where a full list is needed.
    #[error("status list is a delta on sequence {base}, not a full list")]
    NotFull {
        /// The delta's base.
        base: u64,
    },
    /// A delta that does not follow the list held.
    #[error("status delta applies to sequence {base}, but {held} is held")]
    DeltaMismatch {
        /// The delta's base.
        base: u64,
        /// The sequence held.
        held: u64,
    },
    /// Older than the status list already used: a replayed list may predate a use.
    #[error("status list sequence {received} is older than the {held} already held (rollback)")]
    Rollback {
        /// The highest sequence held.
        held: u64,
        /// The sequence of the list received, after its deltas.
        received: u64,
    },
}

fn mode_code(mode: &TransportMode) -> u32 {
    match mode {
        TransportMode::Air => 1,
        TransportMode::Rail => 2,
        // Entries are only ever recorded at air and rail checkpoints.
        TransportMode::Road | TransportMode::Sea | TransportMode::Foot => 0,
    }
}

impl StatusList {
    fn to_wire(&self) -> wire::StatusList {
        wire::StatusList {
            sequence: self.sequence,
            issued_at: self.issued_at.timestamp(),
            stale_after: self.stale_after.timestamp(),
            base_sequence: self.base_sequence,
            entries: self
                .entries
                .iter()
                .map(|e| {
                    let (state, checkpoint_id, mode) = match &e.event {
                        PassEvent::Revoked => (1, String::new(), 0),
                        PassEvent::Used { checkpoint_id, mode } => (2, checkpoint_id.clone(), mode_code(mode)),
                    };
                    wire::PassStatus {
                        pass_id: e.pass_id.as_bytes().to_vec(),
                        state,
                        valid_until: e.valid_until.timestamp(),
                        at: e.at.timestamp(),
                        checkpoint_id,
                        mode,
                    }
                })
                .collect(),
        }
    }

    /// Signs the list with a pass-signing key.
    pub fn sign(&self, signer: &PassSigner) -> Vec<u8> {
        signed::seal(signer, STATUS_LIST_DOMAIN, &prost::Message::encode_to_vec(&self.to_wire()))
    }

    /// Checks the signature with a key of the trust list (not revoked, still verifying at
    /// `now`), then parses. Staleness is the caller's to judge with [`StatusList::is_stale`].
    pub fn open(bytes: &[u8], keys: &KeyRing, now: DateTime<Utc>) -> Result<Self, StatusListError> {
        use StatusListError::Malformed;
        let framed = signed::split(bytes).map_err(Malformed)?;
        let key = keys.find(framed.key_id).ok_or(StatusListError::UnknownKey { key_id: framed.key_id })?;
        if key.status == KeyStatus::Revoked || !key.validity.verifies_at(now) {
            return Err(StatusListError::KeyNotTrusted { key_id: framed.key_id });
        }
        key.verify_in_domain(STATUS_LIST_DOMAIN, framed.signed, &framed.signature)
            .map_err(|_| StatusListError::BadSignature)?;
        let wire::StatusList { sequence, issued_at, stale_after, base_sequence, entries } =
            signed::decode_canonical(framed.payload).map_err(Malformed)?;
        let entries = entries.into_iter().map(status_entry).collect::<Result<Vec<_>, _>>().map_err(Malformed)?;
        let issued_at = signed::time(issued_at).map_err(Malformed)?;
        let stale_after = signed::time(stale_after).map_err(Malformed)?;
        if stale_after <= issued_at {
            return Err(Malformed("stale_after is not after issued_at"));
        }
        if base_sequence > sequence {
            return Err(Malformed("base_sequence is after sequence"));
        }
        // Entries are the events numbered base_sequence + 1 to sequence: none when the two are
        // equal. So a list of sequence 0 (the empty journal) is always empty, and applying a
        // delta on 0 to it is the same as taking that delta as the full list it is.
        if base_sequence == sequence && !entries.is_empty() {
            return Err(Malformed("entries in a list whose base_sequence equals its sequence"));
        }
        Ok(Self { sequence, issued_at, stale_after, base_sequence, entries })
    }

    /// Whether the list is too old to prove anything at `now`.
    pub fn is_stale(&self, now: DateTime<Utc>) -> bool {
        now > self.stale_after
    }

    /// Applies a delta that follows this list; the result carries the delta's sequence and
    /// times.
    pub fn apply(&mut self, delta: StatusList) -> Result<(), StatusListError> {
        if delta.base_sequence != self.sequence {
            return Err(StatusListError::DeltaMismatch { base: delta.base_sequence, held: self.sequence });
        }
        self.sequence = delta.sequence;
        self.issued_at = delta.issued_at;
        self.stale_after = delta.stale_after;
        self.entries.extend(delta.entries);
        Ok(())
    }

    /// Drops entries of passes that have expired by `now`: they are rejected anyway.
    pub fn prune(&mut self, now: DateTime<Utc>) {
        self.entries.retain(|e| e.valid_until > now);
    }

    /// Indexes the entries for lookups.
    pub fn index(&self) -> StatusIndex<'_> {
        let mut by_pass: BTreeMap<PassId, Vec<&StatusEntry>> = BTreeMap::new();
        for entry in &self.entries {
            by_pass.entry(entry.pass_id).or_default().push(entry);
        }
        StatusIndex { by_pass }
    }
}

/// Status entries by pass id.
#[derive(Debug)]
pub struct StatusIndex<'a> {
    by_pass: BTreeMap<PassId, Vec<&'a StatusEntry>>,
}

impl StatusIndex<'_> {
    /// The rejection the list implies for a pass: revoked before used, as online.
    pub fn rejection(&self, pass_id: PassId) -> Option<Rejection> {
        let entries = self.by_pass.get(&pass_id)?;
        if let Some(revoked) = entries.iter().find(|e| e.event == PassEvent::Revoked) {
            return Some(Rejection::Revoked { revoked_at: revoked.at });
        }
        entries.iter().find_map(|e| match &e.event {
            PassEvent::Used { checkpoint_id, mode } => Some(Rejection::AlreadyUsed(EntryRecord {
                recorded_at: e.at,
                checkpoint_id: checkpoint_id.clone(),
                mode: *mode,
                scan_id: String::new(),
            })),
            PassEvent::Revoked => None,
        })
    }
}

fn status_entry(entry: wire::PassStatus) -> Result<StatusEntry, &'static str> {
    let wire::PassStatus { pass_id, state, valid_until, at, checkpoint_id, mode } = entry;
    let pass_id = PassId::from_slice(&pass_id).ok_or("pass id is not 16 bytes")?;
    let event = match (state, mode) {
        (1, 0) if checkpoint_id.is_empty() => PassEvent::Revoked,
        (2, 1) => PassEvent::Used { checkpoint_id, mode: TransportMode::Air },
        (2, 2) => PassEvent::Used { checkpoint_id, mode: TransportMode::Rail },
        _ => return Err("unknown state or mode"),
    };
    Ok(StatusEntry { pass_id, event, at: signed::time(at)?, valid_until: signed::time(valid_until)? })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::KeyRing;
    use chrono::TimeDelta;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(secs, 0).unwrap()
    }

    fn list(sequence: u64, base_sequence: u64, entries: Vec<StatusEntry>) -> StatusList {
        StatusList { sequence, issued_at: at(1_800_000_000), stale_after: at(1_800_003_600), base_sequence, entries }
    }

    fn used(id: u8) -> StatusEntry {
        StatusEntry {
            pass_id: PassId::from_bytes([id; 16]),
            event: PassEvent::Used { checkpoint_id: "SZN-01".into(), mode: TransportMode::Rail },
            at: at(1_799_999_000),
            valid_until: at(1_800_100_000),
        }
    }

    #[test]
    fn signed_list_opens_and_answers_lookups() {
        let signer = PassSigner::from_secret_bytes(&[2; 32]);
        let ring = KeyRing::new(vec![signer.verification_key()]).unwrap();
        let revoked = StatusEntry { event: PassEvent::Revoked, ..used(2) };
        let original = list(7, 0, vec![used(1), revoked]);
        let opened = StatusList::open(&original.sign(&signer), &ring, at(1_800_000_000)).unwrap();
        assert_eq!(opened, original);
        let index = opened.index();
        assert!(matches!(index.rejection(PassId::from_bytes([1; 16])), Some(Rejection::AlreadyUsed(_))));
        assert!(matches!(index.rejection(PassId::from_bytes([2; 16])), Some(Rejection::Revoked { .. })));
        assert_eq!(index.rejection(PassId::from_bytes([3; 16])), None);
    }

    #[test]
    fn tampered_and_unknown_signers_are_refused() {
        let signer = PassSigner::from_secret_bytes(&[2; 32]);
        let ring = KeyRing::new(vec![signer.verification_key()]).unwrap();
        let mut bytes = list(1, 0, vec![used(1)]).sign(&signer);
        bytes[12] ^= 1;
        assert_eq!(StatusList::open(&bytes, &ring, at(1_800_000_000)), Err(StatusListError::BadSignature));
        let other = PassSigner::from_secret_bytes(&[3; 32]);
        let bytes = list(1, 0, vec![]).sign(&other);
        assert!(matches!(StatusList::open(&bytes, &ring, at(1_800_000_000)), Err(StatusListError::UnknownKey { .. })));
    }

    /// Regression (issue 10, point 7): sequence 0 is the empty journal, so a list whose range
    /// is empty (base equal to sequence, 0 and 0 included) has no entries.
    #[test]
    fn an_empty_range_has_no_entries() {
        let signer = PassSigner::from_secret_bytes(&[2; 32]);
        let ring = KeyRing::new(vec![signer.verification_key()]).unwrap();
        let now = at(1_800_000_000);
        assert!(StatusList::open(&list(0, 0, vec![]).sign(&signer), &ring, now).is_ok());
        assert!(StatusList::open(&list(7, 7, vec![]).sign(&signer), &ring, now).is_ok());
        for (sequence, base) in [(0, 0), (7, 7)] {
            assert!(matches!(
                StatusList::open(&list(sequence, base, vec![used(1)]).sign(&signer), &ring, now),
                Err(StatusListError::Malformed(_))
            ));
        }
        // The first event after an empty full list comes as a delta on 0: it applies.
        let mut empty = list(0, 0, vec![]);
        empty.apply(list(1, 0, vec![used(1)])).unwrap();
        assert_eq!((empty.sequence, empty.entries.len()), (1, 1));
    }

    #[test]
    fn deltas_apply_in_order_only() {
        let mut full = list(3, 0, vec![used(1)]);
        assert!(matches!(full.apply(list(5, 4, vec![used(2)])), Err(StatusListError::DeltaMismatch { .. })));
        full.apply(list(5, 3, vec![used(2)])).unwrap();
        assert_eq!(full.sequence, 5);
        assert_eq!(full.entries.len(), 2);
        full.prune(at(1_800_100_000));
        assert!(full.entries.is_empty());
        assert!(full.is_stale(full.stale_after + TimeDelta::seconds(1)));
    }
}
