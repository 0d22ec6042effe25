//! What every backend decides and names the same way, apart from any SQL: the verdict on a
//! scan, and the names under which verdicts and transport modes are stored.

use super::{OfflineEntry, PassRecord, StoreError, SyncKind, SyncedEntry};
use epass_core::pass::TransportMode;
use epass_core::verify::{EntryRecord, Reason};

/// The stored verdict (`scans.verdict`) of a scan that admitted the holder; other verdicts are
/// [`Reason::as_str`] names.
const ADMITTED: &str = "admitted";

/// The verdict on a scan that is not a replay, in the order the checks are documented:
/// the pass must exist, pass offline verification, be unrevoked and be unused.
/// The same order as `VerifyPass`: what the pass says (window, mode) first, then what the
/// server knows of it.
pub(super) fn decide(offline: &Result<(), Reason>, record: Option<&PassRecord>) -> Result<(), Reason> {
    (*offline)?;
    let record = record.ok_or(Reason::UnknownPass)?;
    if record.revocation.is_some() {
        return Err(Reason::Revoked);
    }
    if record.entry.is_some() {
        return Err(Reason::AlreadyUsed);
    }
    Ok(())
}

/// What a new offline entry does to its pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SyncPlan {
    /// Whether the entry becomes the pass's entry (`passes.used_*`).
    pub(super) becomes_entry: bool,
    /// Whether the pass was unused before: only then is a status event appended (the status
    /// list already lists a used pass).
    pub(super) first_use: bool,
    /// The entry that goes to `double_entries`: this one, or the one it replaces.
    pub(super) double_entry: Option<EntryRecord>,
    /// The pass's entry afterwards.
    pub(super) entry: EntryRecord,
}

/// The rule for a synced offline entry: the first entry by recorded time is the pass's entry,
/// and every other one is kept as a double entry. On a tie the entry already recorded stays.
/// Revocation does not stop it: the holder was admitted, and the record says so (verification
/// reports revocation first either way).
pub(super) fn plan_sync(record: &PassRecord, this: &EntryRecord) -> SyncPlan {
    match &record.entry {
        None => SyncPlan { becomes_entry: true, first_use: true, double_entry: None, entry: this.clone() },
        Some(current) if this.recorded_at < current.recorded_at => {
            SyncPlan { becomes_entry: true, first_use: false, double_entry: Some(current.clone()), entry: this.clone() }
        }
        Some(current) => SyncPlan {
            becomes_entry: false,
            first_use: false,
            double_entry: Some(this.clone()),
            entry: current.clone(),
        },
    }
}

impl SyncPlan {
    /// The answer to the entry `seq` this plan was made for.
    pub(super) fn answer(self, seq: u64) -> SyncedEntry {
        let kind = if self.double_entry.is_some() { SyncKind::Conflict } else { SyncKind::Recorded };
        SyncedEntry { seq, kind, entry: self.entry, double_entry: self.double_entry }
    }
}

/// The answer to an entry synced before, from its pass as it is now.
pub(super) fn already_recorded(entry: &OfflineEntry, record: PassRecord) -> Result<SyncedEntry, StoreError> {
    let this = entry.entry_record();
    let current = record
        .entry
        .ok_or_else(|| StoreError::Corrupt(format!("pass {} has a synced entry, yet no entry", entry.pass_id)))?;
    let double_entry = (current != this).then_some(this);
    Ok(SyncedEntry { seq: entry.seq, kind: SyncKind::AlreadyRecorded, entry: current, double_entry })
}

/// The entries of a batch acknowledged before (`seq <= acknowledged`) and the new ones; the
/// batch is consecutive.
pub(super) fn split_batch(entries: &[OfflineEntry], acknowledged: u64) -> (&[OfflineEntry], &[OfflineEntry]) {
    let old = entries.iter().take_while(|e| e.seq <= acknowledged).count();
    entries.split_at(old)
}

/// A journal sequence as stored.
pub(super) fn seq_value(seq: u64) -> Result<i64, StoreError> {
    i64::try_from(seq).map_err(|_| StoreError::Corrupt(format!("journal sequence {seq} out of range")))
}

/// The mode named by [`TransportMode::name`].
pub(super) fn parse_mode(name: &str) -> Option<TransportMode> {
    use TransportMode::{Air, Foot, Rail, Road, Sea};
    // Naming every variant in a match makes a new mode a compile error here, not a row that
    // cannot be read back.
    let every = |mode: TransportMode| match mode {
        Air | Rail | Road | Sea | Foot => mode,
    };
    [Air, Rail, Road, Sea, Foot].into_iter().map(every).find(|mode| mode.name() == name)
}

pub(super) fn verdict_name(verdict: Result<(), Reason>) -> &'static str {
    match verdict {
        Ok(()) => ADMITTED,
        Err(reason) => reason.as_str(),
    }
}

pub(super) fn parse_verdict(name: &str) -> Option<Result<(), Reason>> {
    if name == ADMITTED {
        Some(Ok(()))
    } else {
        Reason::from_name(name).map(Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for mode in
            [TransportMode::Air, TransportMode::Rail, TransportMode::Road, TransportMode::Sea, TransportMode::Foot]
        {
            assert_eq!(parse_mode(mode.name()), Some(mode));
        }
        assert_eq!(parse_mode("boat"), None);
        for verdict in Reason::ALL.map(Err).into_iter().chain([Ok(())]) {
            assert_eq!(parse_verdict(verdict_name(verdict)), Some(verdict));
        }
    }
}
