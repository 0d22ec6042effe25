//! The trust list: which keys may sign passes, signed by an offline root key.
//!
//! A checkpoint is provisioned with the root public key alone. It accepts a trust list only if
//! the root signed it, its sequence is not lower than the one it holds (no rollback), and it is
//! not past `stale_after`; a stale list means "cannot decide", not "pass invalid".

use chrono::{DateTime, TimeDelta, Utc};

use crate::ids::KeyId;
use crate::keys::{KeyRing, KeyStatus, KeyValidity, PassSigner, VerificationKey};
use crate::pass::MAX_VALIDITY;
use crate::signed;
pub use crate::signed::{LIST_FORMAT_VERSION, MAX_LIST_LEN};
use crate::wire;

/// Signature domain of trust lists.
pub const TRUST_LIST_DOMAIN: &[u8] = b"epass/trust-list/v1\0";

/// A pass-signing key as the trust list describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedKey {
    /// The Ed25519 public key.
    pub public_key: [u8; 32],
    /// Active, retired or revoked.
    pub status: KeyStatus,
    /// Passes issued from this time on may carry the key.
    pub sign_from: DateTime<Utc>,
    /// Passes issued from this time on may not.
    pub sign_until: DateTime<Utc>,
    /// The key's passes verify while `now` is before this.
    pub verify_until: DateTime<Utc>,
}

impl TrustedKey {
    /// The key id.
    pub fn key_id(&self) -> KeyId {
        KeyId::of_public_key(&self.public_key)
    }

    /// Whether the key may sign a pass issued at `at`.
    pub fn may_sign_at(&self, at: DateTime<Utc>) -> bool {
        self.status == KeyStatus::Active && self.sign_from <= at && at < self.sign_until
    }
}

/// A trust list's contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustList {
    /// Grows with every list; verifiers refuse a lower one than they hold.
    pub sequence: u64,
    /// When the root signed it.
    pub issued_at: DateTime<Utc>,
    /// After this the list is stale.
    pub stale_after: DateTime<Utc>,
    /// The pass-signing keys.
    pub keys: Vec<TrustedKey>,
}

/// Why a trust list cannot be used.
///
/// Exhaustive on purpose: docs/FORMAT.md fixes the set, so a new variant is a format change
/// that every verifier's `match` must notice.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrustListError {
    /// Not a well-formed trust list.
    #[error("malformed trust list: {0}")]
    Malformed(&'static str),
    /// Signed by another root key.
    #[error("trust list is signed by key {found}, not by the root key {expected}")]
    WrongRootKey {
        /// The root key's id.
        expected: KeyId,
        /// The id in the list.
        found: KeyId,
    },
    /// The root signature does not verify.
    #[error("trust list signature does not verify")]
    BadSignature,
    /// Older than the list already held.
    #[error("trust list sequence {received} is older than the {held} already held (rollback)")]
    Rollback {
        /// Sequence held.
        held: u64,
        /// Sequence received.
        received: u64,
    },
    /// Past its `stale_after`.
    #[error("trust list went stale at {stale_after}")]
    Stale {
        /// When it went stale.
        stale_after: DateTime<Utc>,
    },
}

impl TrustListError {
    /// Stable snake-case name, as in the conformance vectors (`tests/vectors/`).
    pub const fn as_str(&self) -> &'static str {
        match self {
            Self::Malformed(_) => "trust_list_malformed",
            Self::WrongRootKey { .. } => "trust_list_wrong_root_key",
            Self::BadSignature => "trust_list_bad_signature",
            Self::Rollback { .. } => "trust_list_rollback",
            Self::Stale { .. } => "trust_list_stale",
        }
    }
}

fn status_code(status: KeyStatus) -> u32 {
    match status {
        KeyStatus::Active => 1,
        KeyStatus::Retired => 2,
        KeyStatus::Revoked => 3,
    }
}

impl TrustList {
    fn to_wire(&self) -> wire::TrustList {
        wire::TrustList {
            sequence: self.sequence,
            issued_at: self.issued_at.timestamp(),
            stale_after: self.stale_after.timestamp(),
            keys: self
                .keys
                .iter()
                .map(|k| wire::TrustedKey {
                    public_key: k.public_key.to_vec(),
                    status: status_code(k.status),
                    sign_from: k.sign_from.timestamp(),
                    sign_until: k.sign_until.timestamp(),
                    verify_until: k.verify_until.timestamp(),
                })
                .collect(),
        }
    }

    /// Signs the list with the root key.
    pub fn sign(&self, root: &PassSigner) -> Vec<u8> {
        signed::seal(root, TRUST_LIST_DOMAIN, &prost::Message::encode_to_vec(&self.to_wire()))
    }

    /// Checks the root signature over the bytes as received, then parses and validates the
    /// list. Freshness and rollback are checked by [`TrustList::check_current`].
    pub fn open(bytes: &[u8], root: &VerificationKey) -> Result<Self, TrustListError> {
        use TrustListError::Malformed;
        let framed = signed::split(bytes).map_err(Malformed)?;
        if framed.key_id != root.key_id() {
            return Err(TrustListError::WrongRootKey { expected: root.key_id(), found: framed.key_id });
        }
        root.verify_in_domain(TRUST_LIST_DOMAIN, framed.signed, &framed.signature)
            .map_err(|_| TrustListError::BadSignature)?;
        let wire::TrustList { sequence, issued_at, stale_after, keys } =
            signed::decode_canonical(framed.payload).map_err(Malformed)?;
        let issued_at = signed::time(issued_at).map_err(Malformed)?;
        let stale_after = signed::time(stale_after).map_err(Malformed)?;
        if stale_after <= issued_at {
            return Err(Malformed("stale_after is not after issued_at"));
        }
        let keys = keys.into_iter().map(trusted_key).collect::<Result<Vec<_>, _>>().map_err(Malformed)?;
        let list = Self { sequence, issued_at, stale_after, keys };
        list.key_ring().map_err(|_| Malformed("a key appears twice"))?;
        // The root key signs trust lists only. Listed as a pass-signing key, it would also be
        // taken for a status list's signer (status lists are found by key id), so a status list
        // signed by the root key would be used.
        if list.key(root.key_id()).is_some() {
            return Err(Malformed("the root key is listed as a pass-signing key"));
        }
        Ok(list)
    }

    /// Refuses a list older than the one held, or past its `stale_after` at `now`.
    pub fn check_current(&self, held_sequence: Option<u64>, now: DateTime<Utc>) -> Result<(), TrustListError> {
        if let Some(held) = held_sequence.filter(|held| self.sequence < *held) {
            return Err(TrustListError::Rollback { held, received: self.sequence });
        }
        if now > self.stale_after {
            return Err(TrustListError::Stale { stale_after: self.stale_after });
        }
        Ok(())
    }

    /// The keys as a ring for [`crate::verify`], with their statuses and periods.
    pub fn key_ring(&self) -> Result<KeyRing, crate::keys::DuplicateKeyId> {
        let keys = self
            .keys
            .iter()
            .map(|k| {
                let validity = KeyValidity {
                    from: Some(k.sign_from),
                    until: Some(k.sign_until),
                    verify_until: Some(k.verify_until),
                };
                VerificationKey::from_public_key(&k.public_key, k.status, validity)
                    .expect("keys are checked when a list is opened; a hand-built list must hold valid keys")
            })
            .collect();
        KeyRing::new(keys)
    }

    /// The entry for a key id.
    pub fn key(&self, key_id: KeyId) -> Option<&TrustedKey> {
        self.keys.iter().find(|k| k.key_id() == key_id)
    }
}

/// How long a trust list signed by [`TrustList::successor`] stays current.
pub const TRUST_LIST_LIFETIME: TimeDelta = TimeDelta::days(30);
/// How long a newly active key may sign.
pub const SIGNING_PERIOD: TimeDelta = TimeDelta::days(365);

/// Why a successor list cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SuccessorError {
    /// A key given in two roles.
    #[error("key {0} is given as more than one of active, retired and revoked")]
    Conflicting(KeyId),
    /// A key the previous list revokes, given as active or retired.
    #[error("key {0} is revoked in the previous list; a revocation is never lifted")]
    RevocationLifted(KeyId),
}

impl TrustList {
    /// The list that follows `previous` (or the first list) at `now`: each `active` key signs
    /// from now for [`SIGNING_PERIOD`] and verifies [`MAX_VALIDITY`] longer; any other key that
    /// was active is retired now, its passes verifying for [`MAX_VALIDITY`] more; `retired`
    /// keys not yet listed verify passes issued until now for [`MAX_VALIDITY`] more; `revoked`
    /// keys are revoked, and revocations are never lifted. Sequence + 1, current for
    /// [`TRUST_LIST_LIFETIME`]. Only public keys are needed.
    ///
    /// Usually one key is active. Several servers rotate with two: the key they sign with and
    /// the key that signs next, listed before any server signs with it, so that every verifier
    /// knows it by then (README, *Several replicas*).
    pub fn successor(
        previous: Option<&TrustList>,
        active: &[VerificationKey],
        retired: &[VerificationKey],
        revoked: &[VerificationKey],
        now: DateTime<Utc>,
    ) -> Result<TrustList, SuccessorError> {
        // The format carries whole seconds.
        let now = DateTime::from_timestamp(now.timestamp(), 0).unwrap_or(now);
        let epoch = DateTime::UNIX_EPOCH;
        let is_active = |id: KeyId| active.iter().any(|k| k.key_id() == id);
        if let Some(key) = retired.iter().chain(revoked).find(|k| is_active(k.key_id())) {
            return Err(SuccessorError::Conflicting(key.key_id()));
        }
        if let Some(key) = retired.iter().find(|k| revoked.iter().any(|r| r.key_id() == k.key_id())) {
            return Err(SuccessorError::Conflicting(key.key_id()));
        }
        // A retiring key's signing period ends after the current second, not at its start: the
        // format carries whole seconds, and a pass the old key signed earlier in this second
        // (issued, answered, in the holder's hands) must still verify.
        let retire_at = now + TimeDelta::seconds(1);
        let mut keys: Vec<TrustedKey> = previous.map(|list| list.keys.clone()).unwrap_or_default();
        let lifted = keys.iter().find(|k| {
            k.status == KeyStatus::Revoked
                && (is_active(k.key_id()) || retired.iter().any(|r| r.key_id() == k.key_id()))
        });
        if let Some(key) = lifted {
            return Err(SuccessorError::RevocationLifted(key.key_id()));
        }
        for key in retired {
            if !keys.iter().any(|k| k.key_id() == key.key_id()) {
                keys.push(TrustedKey {
                    public_key: key.public_key(),
                    status: KeyStatus::Retired,
                    sign_from: epoch,
                    sign_until: retire_at,
                    verify_until: retire_at + MAX_VALIDITY,
                });
            }
        }
        for key in &mut keys {
            if !is_active(key.key_id()) && key.status == KeyStatus::Active {
                key.status = KeyStatus::Retired;
                key.sign_until = key.sign_until.min(retire_at).max(key.sign_from + TimeDelta::seconds(1));
                key.verify_until = key.verify_until.min(key.sign_until + MAX_VALIDITY).max(key.sign_until);
            }
        }
        let sign_until = now + SIGNING_PERIOD;
        let verify_until = sign_until + MAX_VALIDITY;
        for active in active {
            match keys.iter_mut().find(|k| k.key_id() == active.key_id()) {
                Some(key) => {
                    key.status = KeyStatus::Active;
                    key.sign_from = key.sign_from.min(now);
                    key.sign_until = sign_until;
                    key.verify_until = verify_until;
                }
                None => keys.push(TrustedKey {
                    public_key: active.public_key(),
                    status: KeyStatus::Active,
                    sign_from: now,
                    sign_until,
                    verify_until,
                }),
            }
        }
        for key in revoked {
            match keys.iter_mut().find(|k| k.key_id() == key.key_id()) {
                Some(listed) => listed.status = KeyStatus::Revoked,
                None => keys.push(TrustedKey {
                    public_key: key.public_key(),
                    status: KeyStatus::Revoked,
                    sign_from: epoch,
                    sign_until: now,
                    verify_until: now,
                }),
            }
        }
        // The active keys first, then the others, most recent first (the sort is stable).
        keys.sort_by_key(|k| (k.status != KeyStatus::Active, std::cmp::Reverse(k.sign_until)));
        Ok(TrustList {
            sequence: previous.map_or(1, |list| list.sequence + 1),
            issued_at: now,
            stale_after: now + TRUST_LIST_LIFETIME,
            keys,
        })
    }
}

fn trusted_key(key: wire::TrustedKey) -> Result<TrustedKey, &'static str> {
    let wire::TrustedKey { public_key, status, sign_from, sign_until, verify_until } = key;
    let public_key: [u8; 32] = public_key.as_slice().try_into().map_err(|_| "public key is not 32 bytes")?;
    let status = match status {
        1 => KeyStatus::Active,
        2 => KeyStatus::Retired,
        3 => KeyStatus::Revoked,
        _ => return Err("unknown key status"),
    };
    VerificationKey::from_public_key(&public_key, status, KeyValidity::UNBOUNDED)
        .map_err(|_| "public key is not a valid prime-order Ed25519 point")?;
    let (sign_from, sign_until, verify_until) =
        (signed::time(sign_from)?, signed::time(sign_until)?, signed::time(verify_until)?);
    if sign_from >= sign_until || verify_until < sign_until {
        return Err("key periods are inconsistent");
    }
    Ok(TrustedKey { public_key, status, sign_from, sign_until, verify_until })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(secs, 0).unwrap()
    }

    fn sample(root: &PassSigner) -> (TrustList, Vec<u8>) {
        let key = PassSigner::from_secret_bytes(&[2; 32]);
        let list = TrustList {
            sequence: 5,
            issued_at: at(1_800_000_000),
            stale_after: at(1_800_000_000) + TimeDelta::days(30),
            keys: vec![TrustedKey {
                public_key: key.public_key(),
                status: KeyStatus::Active,
                sign_from: at(1_790_000_000),
                sign_until: at(1_810_000_000),
                verify_until: at(1_811_000_000),
            }],
        };
        let bytes = list.sign(root);
        (list, bytes)
    }

    #[test]
    fn signed_list_opens_to_the_same_list() {
        let root = PassSigner::from_secret_bytes(&[1; 32]);
        let (list, bytes) = sample(&root);
        assert_eq!(TrustList::open(&bytes, &root.verification_key()).unwrap(), list);
    }

    #[test]
    fn tampered_or_foreign_lists_are_refused() {
        let root = PassSigner::from_secret_bytes(&[1; 32]);
        let (_, bytes) = sample(&root);
        let mut flipped = bytes.clone();
        flipped[20] ^= 1;
        assert_eq!(TrustList::open(&flipped, &root.verification_key()), Err(TrustListError::BadSignature));
        let other = PassSigner::from_secret_bytes(&[9; 32]);
        assert!(matches!(TrustList::open(&bytes, &other.verification_key()), Err(TrustListError::WrongRootKey { .. })));
    }

    /// Regression (issue 10, point 6): a list naming the root key as a pass-signing key opened,
    /// and a status list signed by the root key was then used.
    #[test]
    fn the_root_key_is_never_a_pass_signing_key() {
        let root = PassSigner::from_secret_bytes(&[1; 32]);
        let (mut list, _) = sample(&root);
        list.keys.push(TrustedKey {
            public_key: root.public_key(),
            status: KeyStatus::Retired,
            ..list.keys[0].clone()
        });
        assert_eq!(
            TrustList::open(&list.sign(&root), &root.verification_key()),
            Err(TrustListError::Malformed("the root key is listed as a pass-signing key"))
        );
    }

    /// A rotation across several servers: the next key is listed as active before any server
    /// signs with it, then the old one is retired. Passes of either key verify throughout.
    #[test]
    fn a_next_key_is_active_beside_the_signing_key_until_the_old_one_retires() {
        let (old, next) = (PassSigner::from_secret_bytes(&[2; 32]), PassSigner::from_secret_bytes(&[3; 32]));
        let (old_key, next_key) = (old.verification_key(), next.verification_key());
        let first = TrustList::successor(None, std::slice::from_ref(&old_key), &[], &[], at(1_800_000_000)).unwrap();
        let both =
            TrustList::successor(Some(&first), &[old_key.clone(), next_key.clone()], &[], &[], at(1_800_000_100))
                .unwrap();
        assert_eq!(both.sequence, 2);
        let ids: Vec<_> = both.keys.iter().map(|k| (k.key_id(), k.status)).collect();
        assert_eq!(ids, vec![(old.key_id(), KeyStatus::Active), (next.key_id(), KeyStatus::Active)]);
        assert_eq!(both.key(old.key_id()).unwrap().sign_from, at(1_800_000_000), "the old key keeps its start");
        assert!(both.key(old.key_id()).unwrap().may_sign_at(at(1_800_000_100)));
        assert!(both.key(next.key_id()).unwrap().may_sign_at(at(1_800_000_100)));
        assert!(!both.key(next.key_id()).unwrap().may_sign_at(at(1_800_000_099)), "not before it was listed");
        // The same list built again (a renewal during the rotation) keeps both active.
        let again =
            TrustList::successor(Some(&both), &[old_key.clone(), next_key.clone()], &[], &[], at(1_800_000_200))
                .unwrap();
        assert_eq!(again.key(next.key_id()).unwrap().sign_from, at(1_800_000_100));
        assert!(again.key(old.key_id()).unwrap().may_sign_at(at(1_800_000_200)));

        let retired_at = at(1_800_000_300);
        let last = TrustList::successor(Some(&again), std::slice::from_ref(&next_key), &[], &[], retired_at).unwrap();
        let retired = last.key(old.key_id()).unwrap();
        // Its signing ends after the second of the rotation: a pass it signed in that second
        // was answered, and verifies.
        let second_after = retired_at + TimeDelta::seconds(1);
        assert_eq!((retired.status, retired.sign_until), (KeyStatus::Retired, second_after));
        assert_eq!(retired.verify_until, second_after + MAX_VALIDITY);
        assert!(retired.sign_from <= retired_at && retired_at < retired.sign_until);
        assert_eq!(last.key(next.key_id()).unwrap().sign_from, at(1_800_000_100), "the next key keeps its start");
        assert_eq!(last.keys[0].key_id(), next.key_id());
        // A key cannot be both active and retired.
        assert_eq!(
            TrustList::successor(
                Some(&again),
                std::slice::from_ref(&next_key),
                std::slice::from_ref(&next_key),
                &[],
                retired_at
            ),
            Err(SuccessorError::Conflicting(next.key_id()))
        );
    }

    #[test]
    fn rollback_and_staleness_are_refused() {
        let root = PassSigner::from_secret_bytes(&[1; 32]);
        let (list, _) = sample(&root);
        assert_eq!(list.check_current(Some(5), list.issued_at), Ok(()));
        assert_eq!(list.check_current(Some(6), list.issued_at), Err(TrustListError::Rollback { held: 6, received: 5 }));
        assert_eq!(list.check_current(None, list.stale_after), Ok(()));
        assert_eq!(
            list.check_current(None, list.stale_after + TimeDelta::seconds(1)),
            Err(TrustListError::Stale { stale_after: list.stale_after })
        );
    }
}
