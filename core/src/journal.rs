//! The journal of an offline checkpoint: the entries it admitted without a network, each
//! chained to the one before by hash, so that an entry removed or changed before upload is
//! detected when the journal is synced.
//!
//! An entry's hash is SHA-256 over a domain and the entry's canonical bytes, which end with
//! the previous entry's hash (32 zero bytes for the first entry). Both the checkpoint that
//! writes the journal and the server that receives it compute it here, so they agree byte for
//! byte; docs/FORMAT.md, *The offline journal*, specifies it for other vendors.

use std::fmt;

use chrono::{DateTime, Utc};
use sha2::{Digest as _, Sha256};

use crate::ids::PassId;
use crate::pass::TransportMode;

/// Signature-style domain of an entry hash: ASCII `epass/journal/v1` then one zero byte.
pub const JOURNAL_DOMAIN: &[u8] = b"epass/journal/v1\0";

/// Version byte that opens an entry's canonical bytes.
pub const ENTRY_VERSION: u8 = 1;

/// The "previous hash" of a journal's first entry.
pub const GENESIS: EntryHash = EntryHash([0; 32]);

/// The SHA-256 hash of a journal entry.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EntryHash(pub [u8; 32]);

impl EntryHash {
    /// The hash from 32 bytes; `None` for any other length.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        bytes.try_into().ok().map(Self)
    }
}

impl fmt::Display for EntryHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for EntryHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EntryHash({self})")
    }
}

/// The code of a transport mode in an entry's canonical bytes (the API's numbers).
pub const fn mode_code(mode: TransportMode) -> u8 {
    match mode {
        TransportMode::Air => 1,
        TransportMode::Rail => 2,
        TransportMode::Road => 3,
        TransportMode::Sea => 4,
        TransportMode::Foot => 5,
    }
}

/// One admission recorded offline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalEntry {
    /// The journal it belongs to: chosen at random when the journal is created.
    pub journal_id: String,
    /// Position in the journal, from 1, without gaps.
    pub seq: u64,
    /// The checkpoint's idempotency key of this admission.
    pub scan_id: String,
    /// The pass admitted.
    pub pass_id: PassId,
    /// Where.
    pub checkpoint_id: String,
    /// The checkpoint's mode.
    pub mode: TransportMode,
    /// When the holder was admitted, by the checkpoint's clock.
    pub recorded_at: DateTime<Utc>,
    /// The hash of entry `seq - 1` ([`GENESIS`] for entry 1).
    pub prev_hash: EntryHash,
}

/// Why an entry's fields cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// A text field longer than 65,535 bytes.
    #[error("{field} is longer than 65535 bytes")]
    TooLong {
        /// Which field.
        field: &'static str,
    },
}

fn put_text(out: &mut Vec<u8>, field: &'static str, text: &str) -> Result<(), EncodeError> {
    let len = u16::try_from(text.len()).map_err(|_| EncodeError::TooLong { field })?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(text.as_bytes());
    Ok(())
}

impl JournalEntry {
    /// The canonical bytes: version `01`, then in this order the journal id (2-byte big-endian
    /// length, then its bytes), the sequence (8 bytes big-endian), the scan id (length-prefixed),
    /// the pass id (16 bytes), the checkpoint id (length-prefixed), the mode (1 byte), the
    /// recorded time (8 bytes big-endian signed seconds, then 4 bytes big-endian nanoseconds)
    /// and the previous hash (32 bytes).
    pub fn canonical_bytes(&self) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::with_capacity(96 + self.journal_id.len() + self.scan_id.len() + self.checkpoint_id.len());
        out.push(ENTRY_VERSION);
        put_text(&mut out, "journal_id", &self.journal_id)?;
        out.extend_from_slice(&self.seq.to_be_bytes());
        put_text(&mut out, "scan_id", &self.scan_id)?;
        out.extend_from_slice(self.pass_id.as_bytes());
        put_text(&mut out, "checkpoint_id", &self.checkpoint_id)?;
        out.push(mode_code(self.mode));
        out.extend_from_slice(&self.recorded_at.timestamp().to_be_bytes());
        out.extend_from_slice(&self.recorded_at.timestamp_subsec_nanos().to_be_bytes());
        out.extend_from_slice(&self.prev_hash.0);
        Ok(out)
    }

    /// SHA-256 of [`JOURNAL_DOMAIN`] followed by the canonical bytes.
    pub fn hash(&self) -> Result<EntryHash, EncodeError> {
        let mut digest = Sha256::new();
        digest.update(JOURNAL_DOMAIN);
        digest.update(self.canonical_bytes()?);
        Ok(EntryHash(digest.finalize().into()))
    }
}

/// Where a chain of entries breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChainError {
    /// An entry of another journal.
    #[error("entry {seq} belongs to journal {found:?}, not {expected:?}")]
    OtherJournal {
        /// The entry's sequence.
        seq: u64,
        /// The journal of the chain.
        expected: String,
        /// The entry's journal.
        found: String,
    },
    /// A sequence number out of place: an entry is missing before it, or repeated.
    #[error("entry {found} is out of sequence: entry {expected} was expected")]
    OutOfSequence {
        /// The sequence the entry should have.
        expected: u64,
        /// The sequence it has.
        found: u64,
    },
    /// The previous hash is not the hash of the entry before it: that entry was changed or
    /// removed.
    #[error("entry {seq} does not follow the entry before it: its previous hash is {found}, not {expected}")]
    BrokenLink {
        /// The entry's sequence.
        seq: u64,
        /// The hash of the entry before it.
        expected: EntryHash,
        /// The previous hash the entry holds.
        found: EntryHash,
    },
    /// An entry that cannot be encoded.
    #[error("entry {seq}: {error}")]
    Encode {
        /// The entry's sequence.
        seq: u64,
        /// Why.
        error: EncodeError,
    },
}

/// Checks that `entries` continue a chain whose last entry is `after` (its sequence and hash;
/// `(0, GENESIS)` for a new journal) of journal `journal_id`, and returns the hash of each.
pub fn check_chain(
    journal_id: &str,
    after: (u64, EntryHash),
    entries: &[JournalEntry],
) -> Result<Vec<EntryHash>, ChainError> {
    let (mut seq, mut hash) = after;
    let mut hashes = Vec::with_capacity(entries.len());
    for entry in entries {
        if entry.journal_id != journal_id {
            return Err(ChainError::OtherJournal {
                seq: entry.seq,
                expected: journal_id.to_owned(),
                found: entry.journal_id.clone(),
            });
        }
        let expected = seq.saturating_add(1);
        if entry.seq != expected {
            return Err(ChainError::OutOfSequence { expected, found: entry.seq });
        }
        if entry.prev_hash != hash {
            return Err(ChainError::BrokenLink { seq: entry.seq, expected: hash, found: entry.prev_hash });
        }
        hash = entry.hash().map_err(|error| ChainError::Encode { seq: entry.seq, error })?;
        seq = entry.seq;
        hashes.push(hash);
    }
    Ok(hashes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(seq: u64, prev_hash: EntryHash) -> JournalEntry {
        JournalEntry {
            journal_id: "j1".into(),
            seq,
            scan_id: format!("scan-{seq}"),
            pass_id: PassId::from_bytes([seq as u8; 16]),
            checkpoint_id: "SZX T3 Gate 1".into(),
            mode: TransportMode::Air,
            recorded_at: DateTime::from_timestamp(1_800_000_000, 123_456_789).unwrap(),
            prev_hash,
        }
    }

    fn chain(n: u64) -> Vec<JournalEntry> {
        let mut entries = Vec::new();
        let mut prev = GENESIS;
        for seq in 1..=n {
            let e = entry(seq, prev);
            prev = e.hash().unwrap();
            entries.push(e);
        }
        entries
    }

    #[test]
    fn canonical_bytes_are_fixed() {
        let bytes = entry(1, GENESIS).canonical_bytes().unwrap();
        let expected = concat!(
            "01",
            "0002",
            "6a31", // "j1"
            "0000000000000001",
            "0006",
            "7363616e2d31", // "scan-1"
            "01010101010101010101010101010101",
            "000d",
            "535a5820543320476174652031", // "SZX T3 Gate 1"
            "01",
            "000000006b49d200",
            "075bcd15",
            "0000000000000000000000000000000000000000000000000000000000000000",
        );
        assert_eq!(hex::encode(&bytes), expected);
        // Any field changes the hash.
        let base = entry(1, GENESIS).hash().unwrap();
        let mut other = entry(1, GENESIS);
        other.checkpoint_id.push('x');
        assert_ne!(other.hash().unwrap(), base);
        let mut other = entry(1, GENESIS);
        other.recorded_at += chrono::TimeDelta::nanoseconds(1);
        assert_ne!(other.hash().unwrap(), base);
    }

    #[test]
    fn a_chain_checks_and_every_break_is_named() {
        let entries = chain(4);
        let hashes = check_chain("j1", (0, GENESIS), &entries).unwrap();
        assert_eq!(hashes.len(), 4);
        // Continuing after an acknowledged prefix.
        assert_eq!(check_chain("j1", (2, hashes[1]), &entries[2..]).unwrap(), hashes[2..].to_vec());

        // Entry 2 removed: entry 3 is out of sequence.
        let removed = [entries[0].clone(), entries[2].clone()];
        assert_eq!(check_chain("j1", (0, GENESIS), &removed), Err(ChainError::OutOfSequence { expected: 2, found: 3 }));
        // Entry 2 removed and the rest renumbered: the link breaks.
        let mut renumbered = entries[2].clone();
        renumbered.seq = 2;
        assert!(matches!(
            check_chain("j1", (0, GENESIS), &[entries[0].clone(), renumbered]),
            Err(ChainError::BrokenLink { seq: 2, .. })
        ));
        // Entry 2 changed: entry 3 no longer follows it.
        let mut changed = entries.clone();
        changed[1].checkpoint_id = "elsewhere".into();
        assert!(matches!(check_chain("j1", (0, GENESIS), &changed), Err(ChainError::BrokenLink { seq: 3, .. })));
        // Another journal's entry.
        assert!(matches!(check_chain("j2", (0, GENESIS), &entries), Err(ChainError::OtherJournal { seq: 1, .. })));
    }
}
