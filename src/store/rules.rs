//! What every backend decides and names the same way, apart from any SQL: the verdict on a
//! scan, and the names under which verdicts and transport modes are stored.

use super::PassRecord;
use epass_core::pass::TransportMode;
use epass_core::verify::Reason;

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
