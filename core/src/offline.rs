//! The offline verifier: a pass checked with nothing but the root public key, a trust list,
//! optionally a status list, the checkpoint's mode and `now`. The online `VerifyPass` runs the
//! same [`crate::verify`] path with the server's trust list.

use chrono::{DateTime, Utc};

use crate::keys::VerificationKey;
use crate::pass::TransportMode;
use crate::status::{StatusList, StatusListError};
use crate::trust::{TrustList, TrustListError};
use crate::verify::{self, AuthenticPass, CheckTime, Rejection};

/// What an offline check concluded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The pass may be admitted.
    Accepted,
    /// The pass is refused, with the same reasons as online.
    Rejected(Rejection),
    /// The verifier's own data does not allow a decision; the pass is not judged invalid.
    CannotDecide(TrustListError),
}

/// Whether single use and revocation were checked, and if not, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatusCheck {
    /// A fresh status list was consulted.
    Checked {
        /// Its sequence.
        sequence: u64,
    },
    /// No status list was given: single use and revocation were not checked.
    NoList,
    /// The status list is past its `stale_after`: not checked.
    Stale {
        /// When it went stale.
        stale_after: DateTime<Utc>,
    },
    /// The status list could not be used (among others, a rollback): not checked.
    Unusable(StatusListError),
    /// The trust list was not usable, so the status list was not looked at.
    NotEvaluated,
}

impl StatusCheck {
    /// Stable snake-case name, as in the conformance vectors (`tests/vectors/`).
    pub const fn as_str(&self) -> &'static str {
        match self {
            Self::Checked { .. } => "checked",
            Self::NoList => "no_list",
            Self::Stale { .. } => "stale",
            Self::Unusable(_) => "unusable",
            Self::NotEvaluated => "not_evaluated",
        }
    }
}

/// The verdict of an offline check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfflineVerdict {
    /// Accepted, rejected or undecided.
    pub outcome: Outcome,
    /// The pass, whenever its signature verified.
    pub pass: Option<AuthenticPass>,
    /// What the status list contributed; when `Checked`, its sequence is the one to hold
    /// against rollback next time.
    pub status: StatusCheck,
    /// The trust list's sequence, to hold against rollback next time.
    pub trust_sequence: Option<u64>,
}

/// What an offline verifier holds.
#[derive(Debug, Clone, Copy)]
pub struct OfflineContext<'a> {
    /// The root public key the checkpoint was provisioned with.
    pub root_key: &'a VerificationKey,
    /// The signed trust list.
    pub trust_list: &'a [u8],
    /// The highest trust list sequence seen before, if any.
    pub held_trust_sequence: Option<u64>,
    /// The signed full status list, if any.
    pub status_list: Option<&'a [u8]>,
    /// Signed deltas received since, oldest first; each is verified and applied in turn.
    pub status_deltas: &'a [&'a [u8]],
    /// The highest status list sequence used before, if any: a lower one (after the deltas) is
    /// an older list replayed, which may predate a use, so it is not used.
    pub held_status_sequence: Option<u64>,
    /// The checkpoint's mode.
    pub mode: TransportMode,
    /// The checkpoint's clock and its tolerance.
    pub time: CheckTime,
}

/// Verifies a QR text offline.
pub fn verify_offline(qr_text: &str, context: &OfflineContext<'_>) -> OfflineVerdict {
    let now = context.time.now;
    let trust = match TrustList::open(context.trust_list, context.root_key)
        .and_then(|list| list.check_current(context.held_trust_sequence, now).map(|()| list))
    {
        Ok(trust) => trust,
        Err(error) => {
            return OfflineVerdict {
                outcome: Outcome::CannotDecide(error),
                pass: None,
                status: StatusCheck::NotEvaluated,
                trust_sequence: None,
            }
        }
    };
    let ring = trust.key_ring().expect("an opened trust list has distinct keys");
    let verification = verify::verify_at(qr_text, &ring, context.mode, context.time);
    let status = match context.status_list {
        None => Err(StatusCheck::NoList),
        Some(bytes) => current_status(bytes, context.status_deltas, context.held_status_sequence, &ring, now),
    };
    let outcome = match (&verification.verdict, &verification.pass, &status) {
        (Err(rejection), _, _) => Outcome::Rejected(rejection.clone()),
        (Ok(()), Some(pass), Ok(list)) => match list.index().rejection(pass.pass_id()) {
            Some(rejection) => Outcome::Rejected(rejection),
            None => Outcome::Accepted,
        },
        (Ok(()), _, _) => Outcome::Accepted,
    };
    OfflineVerdict {
        outcome,
        pass: verification.pass,
        status: match status {
            Ok(list) => StatusCheck::Checked { sequence: list.sequence },
            Err(check) => check,
        },
        trust_sequence: Some(trust.sequence),
    }
}

/// Opens the full list and applies the deltas; a list that is a delta itself, older than the
/// one held, or stale after the deltas, proves nothing. Rollback is judged before staleness, as
/// for the trust list.
fn current_status(
    full: &[u8],
    deltas: &[&[u8]],
    held_sequence: Option<u64>,
    ring: &crate::keys::KeyRing,
    now: DateTime<Utc>,
) -> Result<StatusList, StatusCheck> {
    let mut list = StatusList::open(full, ring, now).map_err(StatusCheck::Unusable)?;
    if list.base_sequence != 0 {
        return Err(StatusCheck::Unusable(StatusListError::NotFull { base: list.base_sequence }));
    }
    for delta in deltas {
        let delta = StatusList::open(delta, ring, now).map_err(StatusCheck::Unusable)?;
        list.apply(delta).map_err(StatusCheck::Unusable)?;
    }
    if let Some(held) = held_sequence.filter(|held| list.sequence < *held) {
        return Err(StatusCheck::Unusable(StatusListError::Rollback { held, received: list.sequence }));
    }
    if list.is_stale(now) {
        return Err(StatusCheck::Stale { stale_after: list.stale_after });
    }
    Ok(list)
}

/// Reads the QR code from a PNG or JPEG image, then verifies it offline.
pub fn verify_offline_image(
    image: &[u8],
    context: &OfflineContext<'_>,
) -> Result<OfflineVerdict, crate::qr::ReadImageError> {
    let text = crate::qr::read_image(image)?;
    Ok(verify_offline(&text, context))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{KeyRing, PassSigner};

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(secs, 0).unwrap()
    }

    fn list(sequence: u64, base_sequence: u64) -> StatusList {
        StatusList {
            sequence,
            issued_at: at(1_800_000_000),
            stale_after: at(1_800_003_600),
            base_sequence,
            entries: vec![],
        }
    }

    /// Regression: a replayed older status list, still fresh, was used for single-use checks.
    #[test]
    fn status_list_older_than_the_held_one_is_a_rollback() {
        let signer = PassSigner::from_secret_bytes(&[2; 32]);
        let ring = KeyRing::new(vec![signer.verification_key()]).unwrap();
        let now = at(1_800_000_000);
        let full = list(7, 0).sign(&signer);
        let delta = list(9, 7).sign(&signer);
        let sequence = |held, deltas: &[&[u8]]| current_status(&full, deltas, held, &ring, now).map(|l| l.sequence);
        assert_eq!(sequence(None, &[]), Ok(7));
        assert_eq!(sequence(Some(7), &[]), Ok(7));
        assert_eq!(
            sequence(Some(9), &[]),
            Err(StatusCheck::Unusable(StatusListError::Rollback { held: 9, received: 7 }))
        );
        // The held sequence is compared with the list after its deltas.
        assert_eq!(sequence(Some(9), &[&delta]), Ok(9));
        assert_eq!(
            sequence(Some(10), &[&delta]),
            Err(StatusCheck::Unusable(StatusListError::Rollback { held: 10, received: 9 }))
        );
        // Rollback is reported before staleness, as for the trust list.
        let later = at(1_800_003_601);
        assert_eq!(
            current_status(&full, &[], Some(8), &ring, later),
            Err(StatusCheck::Unusable(StatusListError::Rollback { held: 8, received: 7 }))
        );
    }
}
