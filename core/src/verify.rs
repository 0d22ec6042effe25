//! Offline verification: from QR text to verdict with nothing but the trusted keys and `now`.
//! The online `VerifyPass` and `RecordEntry` run this same code, then add what only the
//! server knows (revocation, use).

use chrono::{DateTime, TimeDelta, Utc};

use crate::ids::{KeyId, PassId};
use crate::keys::{KeyRing, KeyStatus, KeyValidity};
use crate::pass::{decode_qr_text, EnvelopeBuf, FormatProblem, PassContents, TransportMode, MAX_ENVELOPE_LEN};

/// The entry that used a pass up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryRecord {
    /// When the holder was admitted.
    pub recorded_at: DateTime<Utc>,
    /// Where.
    pub checkpoint_id: String,
    /// The checkpoint's mode.
    pub mode: TransportMode,
    /// The scan that recorded it.
    pub scan_id: String,
}

/// A time as officers and logs read it: RFC 3339, whole seconds, UTC.
fn rfc3339(time: &DateTime<Utc>) -> String {
    time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Why a pass is rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Rejection {
    /// Not a well-formed pass.
    #[error("bad format: {0}")]
    BadFormat(FormatProblem),
    /// Signed with a key the verifier does not trust.
    #[error("unknown signing key {key_id}")]
    UnknownKey {
        /// The key id in the pass.
        key_id: KeyId,
    },
    /// The key is trusted, but not for passes issued when this one was.
    #[error("key {key_id} may not sign passes issued at {}", rfc3339(issued_at))]
    KeyNotValid {
        /// The key id.
        key_id: KeyId,
        /// The pass's issue time.
        issued_at: DateTime<Utc>,
    },
    /// The key's passes stopped verifying at `verify_until`.
    #[error("passes signed by key {key_id} stopped verifying at {}", rfc3339(verify_until))]
    KeyExpired {
        /// The key id.
        key_id: KeyId,
        /// End of the key's verification period.
        verify_until: DateTime<Utc>,
    },
    /// The trust list revokes the key: nothing it signed is accepted.
    #[error("key {key_id} is revoked")]
    KeyRevoked {
        /// The key id.
        key_id: KeyId,
    },
    /// The signature does not verify.
    #[error("signature does not verify")]
    BadSignature,
    /// Presented before its window opens.
    #[error("not valid before {}", rfc3339(valid_from))]
    NotYetValid {
        /// Start of the window.
        valid_from: DateTime<Utc>,
    },
    /// Presented at or after the end of its window.
    #[error("expired at {}", rfc3339(valid_until))]
    Expired {
        /// End of the window (exclusive).
        valid_until: DateTime<Utc>,
    },
    /// The checkpoint's mode is not allowed.
    #[error("not valid for entry by {mode}")]
    ModeNotAllowed {
        /// The checkpoint's mode.
        mode: TransportMode,
    },
    /// Already used for its one entry.
    #[error("already used at {} at checkpoint {}", rfc3339(&.0.recorded_at), .0.checkpoint_id)]
    AlreadyUsed(EntryRecord),
    /// Revoked by the issuer.
    #[error("revoked at {}", rfc3339(revoked_at))]
    Revoked {
        /// When.
        revoked_at: DateTime<Utc>,
    },
    /// Correctly signed, but the issuing service has no record of it.
    #[error("the issuing service has no record of this pass")]
    UnknownPass,
}

/// The kind of a [`Rejection`], without its details: what the API, the metrics and the
/// scan records carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// See [`Rejection::BadFormat`].
    BadFormat,
    /// See [`Rejection::UnknownKey`].
    UnknownKey,
    /// See [`Rejection::KeyNotValid`] and [`Rejection::KeyExpired`].
    KeyNotValid,
    /// See [`Rejection::KeyRevoked`].
    KeyRevoked,
    /// See [`Rejection::BadSignature`].
    BadSignature,
    /// See [`Rejection::NotYetValid`].
    NotYetValid,
    /// See [`Rejection::Expired`].
    Expired,
    /// See [`Rejection::ModeNotAllowed`].
    ModeNotAllowed,
    /// See [`Rejection::AlreadyUsed`].
    AlreadyUsed,
    /// See [`Rejection::Revoked`].
    Revoked,
    /// See [`Rejection::UnknownPass`].
    UnknownPass,
}

impl Reason {
    /// Every reason. Checks run in this order, except that a payload found malformed after
    /// the signature verified is reported as `BadFormat` too.
    pub const ALL: [Self; 11] = [
        Self::BadFormat,
        Self::UnknownKey,
        Self::BadSignature,
        Self::KeyRevoked,
        Self::KeyNotValid,
        Self::NotYetValid,
        Self::Expired,
        Self::ModeNotAllowed,
        Self::Revoked,
        Self::AlreadyUsed,
        Self::UnknownPass,
    ];

    /// Stable snake-case name, for storage, logs and metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::BadFormat => "bad_format",
            Self::UnknownKey => "unknown_key",
            Self::KeyNotValid => "key_not_valid",
            Self::KeyRevoked => "key_revoked",
            Self::BadSignature => "bad_signature",
            Self::NotYetValid => "not_yet_valid",
            Self::Expired => "expired",
            Self::ModeNotAllowed => "mode_not_allowed",
            Self::AlreadyUsed => "already_used",
            Self::Revoked => "revoked",
            Self::UnknownPass => "unknown_pass",
        }
    }

    /// The reason named by [`Reason::as_str`].
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == name)
    }
}

impl Rejection {
    /// The kind of rejection.
    pub const fn reason(&self) -> Reason {
        match self {
            Self::BadFormat(_) => Reason::BadFormat,
            Self::UnknownKey { .. } => Reason::UnknownKey,
            Self::KeyNotValid { .. } | Self::KeyExpired { .. } => Reason::KeyNotValid,
            Self::KeyRevoked { .. } => Reason::KeyRevoked,
            Self::BadSignature => Reason::BadSignature,
            Self::NotYetValid { .. } => Reason::NotYetValid,
            Self::Expired { .. } => Reason::Expired,
            Self::ModeNotAllowed { .. } => Reason::ModeNotAllowed,
            Self::AlreadyUsed(_) => Reason::AlreadyUsed,
            Self::Revoked { .. } => Reason::Revoked,
            Self::UnknownPass => Reason::UnknownPass,
        }
    }
}

/// A pass whose signature verified with a trusted key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthenticPass {
    /// The key that signed it.
    pub key_id: KeyId,
    /// When that key counts.
    pub key_validity: KeyValidity,
    /// What it says.
    pub contents: PassContents,
}

impl AuthenticPass {
    /// The pass id.
    pub fn pass_id(&self) -> PassId {
        self.contents.pass_id
    }
}

/// The result of verifying a QR text: the pass, whenever its signature verified, and the
/// verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verification {
    /// Set once the signature verified, even if the pass is then rejected (the officer still
    /// sees whose pass it is).
    pub pass: Option<AuthenticPass>,
    /// `Ok` when accepted.
    pub verdict: Result<(), Rejection>,
}

/// Decodes the text, finds the key and verifies the signature over the received bytes, and
/// only then parses the payload.
pub fn authenticate(qr_text: &str, keys: &KeyRing) -> Result<AuthenticPass, Rejection> {
    let mut buf: EnvelopeBuf = [0u8; MAX_ENVELOPE_LEN];
    let envelope = decode_qr_text(qr_text, &mut buf).map_err(Rejection::BadFormat)?;
    let key = keys.find(envelope.key_id).ok_or(Rejection::UnknownKey { key_id: envelope.key_id })?;
    key.verify_pass_bytes(envelope.signed, &envelope.signature).map_err(|_| Rejection::BadSignature)?;
    let contents = PassContents::from_payload_bytes(envelope.payload).map_err(Rejection::BadFormat)?;
    if key.status == KeyStatus::Revoked {
        return Err(Rejection::KeyRevoked { key_id: key.key_id() });
    }
    if !key.validity.covers(contents.issued_at) {
        return Err(Rejection::KeyNotValid { key_id: key.key_id(), issued_at: contents.issued_at });
    }
    Ok(AuthenticPass { key_id: envelope.key_id, key_validity: key.validity, contents })
}

/// The largest clock tolerance honoured; a larger one is cut to it, so that no setting can
/// stretch a pass beyond its window by more than this (and the server keeps status entries
/// this long past a pass's end, so that a used pass inside the tolerance stays listed).
pub const MAX_CLOCK_TOLERANCE: TimeDelta = TimeDelta::minutes(10);

/// The verifier's clock: `now`, and how far it may be off. The tolerance widens the pass's
/// window (and the key's verification period) by that much at both ends, so that a checkpoint
/// whose clock is a little off does not turn away a holder at the edges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckTime {
    /// The verifier's current time.
    pub now: DateTime<Utc>,
    /// How far `now` may be off (zero for the server, whose clock is the reference).
    pub tolerance: TimeDelta,
}

impl CheckTime {
    /// `now`, taken as exact.
    pub const fn exact(now: DateTime<Utc>) -> Self {
        Self { now, tolerance: TimeDelta::zero() }
    }
}

/// Checks, at `time`, the key's verification period, the pass's window and the mode.
pub fn check_time_and_mode(pass: &AuthenticPass, mode: TransportMode, time: CheckTime) -> Result<(), Rejection> {
    let CheckTime { now, tolerance } = time;
    let tolerance = tolerance.clamp(TimeDelta::zero(), MAX_CLOCK_TOLERANCE);
    if let Some(verify_until) = pass.key_validity.verify_until {
        if now - tolerance >= verify_until {
            return Err(Rejection::KeyExpired { key_id: pass.key_id, verify_until });
        }
    }
    let contents = &pass.contents;
    if now + tolerance < contents.valid_from {
        return Err(Rejection::NotYetValid { valid_from: contents.valid_from });
    }
    if now - tolerance >= contents.valid_until {
        return Err(Rejection::Expired { valid_until: contents.valid_until });
    }
    if !contents.modes.allows(mode) {
        return Err(Rejection::ModeNotAllowed { mode });
    }
    Ok(())
}

/// Verifies a QR text with nothing but the trusted keys: format, key, signature, periods,
/// window and mode. Revocation and use are not checked here; they need the server or a status
/// list (see [`crate::offline`]).
pub fn verify_at(qr_text: &str, keys: &KeyRing, mode: TransportMode, time: CheckTime) -> Verification {
    match authenticate(qr_text, keys) {
        Err(rejection) => Verification { pass: None, verdict: Err(rejection) },
        Ok(pass) => {
            let verdict = check_time_and_mode(&pass, mode, time);
            Verification { pass: Some(pass), verdict }
        }
    }
}

/// [`verify_at`] with an exact clock.
pub fn verify(qr_text: &str, keys: &KeyRing, mode: TransportMode, now: DateTime<Utc>) -> Verification {
    verify_at(qr_text, keys, mode, CheckTime::exact(now))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{KeyStatus, KeyValidity, PassSigner, VerificationKey};
    use crate::pass::tests::sample_contents;
    use crate::pass::SignedPass;
    use chrono::TimeDelta;

    fn setup() -> (KeyRing, SignedPass) {
        let signer = PassSigner::from_secret_bytes(&[5; 32]);
        let ring = KeyRing::new(vec![signer.verification_key()]).unwrap();
        (ring, SignedPass::sign(sample_contents(), &signer))
    }

    #[test]
    fn reason_names_round_trip() {
        for reason in Reason::ALL {
            assert_eq!(Reason::from_name(reason.as_str()), Some(reason));
        }
    }

    #[test]
    fn accepts_within_window_for_allowed_mode() {
        let (ring, pass) = setup();
        let now = pass.contents().valid_from;
        let v = verify(&pass.qr_text(), &ring, TransportMode::Air, now);
        assert_eq!(v.verdict, Ok(()));
        assert_eq!(v.pass.unwrap().contents, *pass.contents());
    }

    #[test]
    fn window_edges() {
        let (ring, pass) = setup();
        let c = pass.contents();
        let text = pass.qr_text();
        let at = |now| verify(&text, &ring, TransportMode::Rail, now).verdict;
        assert_eq!(at(c.valid_from - TimeDelta::seconds(1)), Err(Rejection::NotYetValid { valid_from: c.valid_from }));
        assert_eq!(at(c.valid_until - TimeDelta::seconds(1)), Ok(()));
        assert_eq!(at(c.valid_until), Err(Rejection::Expired { valid_until: c.valid_until }));
    }

    /// Regression: any tolerance was honoured, so a large one accepted any expired pass.
    #[test]
    fn tolerance_is_capped() {
        let (ring, pass) = setup();
        let until = pass.contents().valid_until;
        let time = |now, tolerance| CheckTime { now, tolerance };
        let late = until + MAX_CLOCK_TOLERANCE - TimeDelta::seconds(1);
        assert_eq!(
            verify_at(&pass.qr_text(), &ring, TransportMode::Air, time(late, TimeDelta::days(1))).verdict,
            Ok(())
        );
        let too_late = until + MAX_CLOCK_TOLERANCE;
        assert_eq!(
            verify_at(&pass.qr_text(), &ring, TransportMode::Air, time(too_late, TimeDelta::days(365))).verdict,
            Err(Rejection::Expired { valid_until: until })
        );
    }

    #[test]
    fn other_modes_are_rejected() {
        let (ring, pass) = setup();
        let now = pass.contents().valid_from;
        for mode in [TransportMode::Road, TransportMode::Sea, TransportMode::Foot] {
            assert_eq!(verify(&pass.qr_text(), &ring, mode, now).verdict, Err(Rejection::ModeNotAllowed { mode }));
        }
    }

    #[test]
    fn unknown_key_and_key_window() {
        let (_, pass) = setup();
        let other = PassSigner::from_secret_bytes(&[6; 32]);
        let ring = KeyRing::new(vec![other.verification_key()]).unwrap();
        assert_eq!(authenticate(&pass.qr_text(), &ring), Err(Rejection::UnknownKey { key_id: pass.key_id() }));

        let signer = PassSigner::from_secret_bytes(&[5; 32]);
        let bounded = KeyValidity { until: Some(pass.contents().issued_at), ..KeyValidity::UNBOUNDED };
        let key = VerificationKey::from_public_key(&signer.public_key(), KeyStatus::Retired, bounded).unwrap();
        let ring = KeyRing::new(vec![key]).unwrap();
        assert!(matches!(authenticate(&pass.qr_text(), &ring), Err(Rejection::KeyNotValid { .. })));
    }
}
