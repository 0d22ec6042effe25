//! Signing and verification keys, the key ring, and the server's hashing secret.

use chrono::{DateTime, Utc};
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::ids::KeyId;
use crate::pass::{MAX_ENVELOPE_LEN, SIGNATURE_DOMAIN, SIGNATURE_LEN};

/// The private key that signs new passes.
pub struct PassSigner {
    key: SigningKey,
    key_id: KeyId,
}

impl PassSigner {
    /// A signer from the 32-byte Ed25519 secret key.
    pub fn from_secret_bytes(secret: &[u8; 32]) -> Self {
        let key = SigningKey::from_bytes(secret);
        let key_id = KeyId::of_public_key(key.verifying_key().as_bytes());
        Self { key, key_id }
    }

    /// A signer from an ed25519-dalek key.
    pub fn from_signing_key(key: SigningKey) -> Self {
        let key_id = KeyId::of_public_key(key.verifying_key().as_bytes());
        Self { key, key_id }
    }

    /// The key id passes signed by this key carry.
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// The 32-byte public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }

    /// The matching verification key, active and without bounds.
    pub fn verification_key(&self) -> VerificationKey {
        VerificationKey::from_public_key(&self.public_key(), KeyStatus::Active, KeyValidity::UNBOUNDED)
            .expect("a key derived from a secret is a valid point")
    }

    /// The secret key bytes, wiped when dropped.
    pub fn secret_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.key.to_bytes())
    }

    /// The ed25519-dalek key (for PKCS#8 encoding at the edges).
    pub fn signing_key(&self) -> &SigningKey {
        &self.key
    }

    /// Signs the envelope bytes before the signature, with the domain prefix.
    pub(crate) fn sign_pass_bytes(&self, signed: &[u8]) -> [u8; SIGNATURE_LEN] {
        self.sign_in_domain(SIGNATURE_DOMAIN, signed)
    }

    /// Signs `domain` followed by `signed`: every kind of signed document has its own domain,
    /// so no signature can be taken for another kind.
    pub(crate) fn sign_in_domain(&self, domain: &[u8], signed: &[u8]) -> [u8; SIGNATURE_LEN] {
        let mut message = Vec::with_capacity(domain.len() + signed.len());
        message.extend_from_slice(domain);
        message.extend_from_slice(signed);
        self.key.sign(&message).to_bytes()
    }
}

impl std::fmt::Debug for PassSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PassSigner").field("key_id", &self.key_id).finish_non_exhaustive()
    }
}

/// Whether a key still signs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyStatus {
    /// Signs new passes and verifies.
    Active,
    /// Verifies passes signed earlier; signs no more.
    Retired,
    /// Compromised or withdrawn: nothing it signed is accepted.
    Revoked,
}

/// When a key counts: the issue times of the passes it may sign, `[from, until)`, and the
/// time until which its passes verify. Each bound is optional.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyValidity {
    /// Earliest issue time, inclusive.
    pub from: Option<DateTime<Utc>>,
    /// Latest issue time, exclusive.
    pub until: Option<DateTime<Utc>>,
    /// Passes signed by the key verify while `now` is before this.
    pub verify_until: Option<DateTime<Utc>>,
}

impl KeyValidity {
    /// No bounds.
    pub const UNBOUNDED: Self = Self { from: None, until: None, verify_until: None };

    /// Whether a pass issued at `issued_at` falls inside the signing period.
    pub fn covers(&self, issued_at: DateTime<Utc>) -> bool {
        self.from.is_none_or(|from| issued_at >= from) && self.until.is_none_or(|until| issued_at < until)
    }

    /// Whether the key's signatures still verify at `now`.
    pub fn verifies_at(&self, now: DateTime<Utc>) -> bool {
        self.verify_until.is_none_or(|until| now < until)
    }
}

/// Why a public key was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The bytes are not the encoding of a curve point.
    #[error("public key is not a valid Ed25519 point")]
    NotAPoint,
    /// A point written in a non-canonical encoding.
    #[error("public key is not canonically encoded")]
    NonCanonical,
    /// A point of small order, which would verify forged signatures.
    #[error("public key has small order")]
    SmallOrder,
    /// A point with a small-order component: no honest key has one.
    #[error("public key is not in the prime-order subgroup")]
    MixedOrder,
}

/// A signature that does not verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("signature does not verify")]
pub struct BadSignature;

/// A public key that verifies passes.
#[derive(Debug, Clone)]
pub struct VerificationKey {
    key: VerifyingKey,
    key_id: KeyId,
    /// Active or retired.
    pub status: KeyStatus,
    /// The issue times of the passes it verifies.
    pub validity: KeyValidity,
}

impl VerificationKey {
    /// Checks and wraps a 32-byte public key. Refuses non-canonical encodings and small-order
    /// points, so that [`VerificationKey::verify`] is strict about the key as well.
    pub fn from_public_key(bytes: &[u8; 32], status: KeyStatus, validity: KeyValidity) -> Result<Self, KeyError> {
        let key = VerifyingKey::from_bytes(bytes).map_err(|_| KeyError::NotAPoint)?;
        if key.to_edwards().compress().as_bytes() != bytes {
            return Err(KeyError::NonCanonical);
        }
        if key.is_weak() {
            return Err(KeyError::SmallOrder);
        }
        if !key.to_edwards().is_torsion_free() {
            return Err(KeyError::MixedOrder);
        }
        Ok(Self { key, key_id: KeyId::of_public_key(bytes), status, validity })
    }

    /// The key id.
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// The 32-byte public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    /// Strict Ed25519 verification of `signature` over `message` (RFC 8032 with canonical `S`
    /// and `R`, and no small-order `R`).
    pub fn verify(&self, message: &[u8], signature: &[u8; SIGNATURE_LEN]) -> Result<(), BadSignature> {
        let signature = Signature::from_bytes(signature);
        self.key.verify_strict(message, &signature).map_err(|_| BadSignature)
    }

    /// Verifies a signature over `domain` followed by `signed` (for lists, which may be large).
    pub fn verify_in_domain(
        &self,
        domain: &[u8],
        signed: &[u8],
        signature: &[u8; SIGNATURE_LEN],
    ) -> Result<(), BadSignature> {
        let mut message = Vec::with_capacity(domain.len() + signed.len());
        message.extend_from_slice(domain);
        message.extend_from_slice(signed);
        self.verify(&message, signature)
    }

    /// Verifies a pass signature over the envelope's signed bytes, with the domain prefix.
    pub fn verify_pass_bytes(&self, signed: &[u8], signature: &[u8; SIGNATURE_LEN]) -> Result<(), BadSignature> {
        // A stack buffer keeps the signature check free of allocation (parsing the payload allocates a few small strings).
        let mut message = [0u8; SIGNATURE_DOMAIN.len() + MAX_ENVELOPE_LEN];
        let len = SIGNATURE_DOMAIN.len() + signed.len();
        let message = message.get_mut(..len).ok_or(BadSignature)?;
        message[..SIGNATURE_DOMAIN.len()].copy_from_slice(SIGNATURE_DOMAIN);
        message[SIGNATURE_DOMAIN.len()..].copy_from_slice(signed);
        self.verify(message, signature)
    }
}

/// The keys a verifier trusts, looked up by key id.
#[derive(Debug, Clone, Default)]
pub struct KeyRing {
    keys: Vec<VerificationKey>,
}

/// Two keys with the same key id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("key id {0} appears twice")]
pub struct DuplicateKeyId(pub KeyId);

impl KeyRing {
    /// A ring of distinct keys.
    pub fn new(keys: Vec<VerificationKey>) -> Result<Self, DuplicateKeyId> {
        for (i, key) in keys.iter().enumerate() {
            if keys[..i].iter().any(|k| k.key_id == key.key_id) {
                return Err(DuplicateKeyId(key.key_id));
            }
        }
        Ok(Self { keys })
    }

    /// The key with this id.
    pub fn find(&self, key_id: KeyId) -> Option<&VerificationKey> {
        self.keys.iter().find(|k| k.key_id == key_id)
    }

    /// All keys, in the order given.
    pub fn keys(&self) -> &[VerificationKey] {
        &self.keys
    }
}

/// The server's secret for keyed hashes (permit numbers, request fingerprints).
pub struct HashingSecret(Zeroizing<[u8; 32]>);

impl HashingSecret {
    /// Wraps 32 secret bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// The secret bytes, for storing the secret.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// HMAC-SHA-256 of `parts`, each prefixed with its length so that no two different lists
    /// of parts hash alike. `label` separates the uses of the secret.
    pub fn keyed_hash(&self, label: &str, parts: &[&[u8]]) -> [u8; 32] {
        let mut mac = Hmac::<Sha256>::new_from_slice(self.0.as_slice()).expect("HMAC takes any key length");
        for part in std::iter::once(label.as_bytes()).chain(parts.iter().copied()) {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        mac.finalize().into_bytes().into()
    }
}

impl std::fmt::Debug for HashingSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HashingSecret(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_order_and_non_canonical_keys_are_refused() {
        // The identity point (small order).
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert_eq!(
            VerificationKey::from_public_key(&identity, KeyStatus::Active, KeyValidity::UNBOUNDED).unwrap_err(),
            KeyError::SmallOrder
        );
        // y = p + 1 is a non-canonical encoding of the identity's y.
        let mut non_canonical = [0xffu8; 32];
        non_canonical[0] = 0xee;
        non_canonical[31] = 0x7f;
        assert!(VerificationKey::from_public_key(&non_canonical, KeyStatus::Active, KeyValidity::UNBOUNDED).is_err());
    }

    #[test]
    fn pass_signatures_verify_and_flips_do_not() {
        let signer = PassSigner::from_secret_bytes(&[3; 32]);
        let key = signer.verification_key();
        let bytes = b"some envelope bytes";
        let sig = signer.sign_pass_bytes(bytes);
        assert!(key.verify_pass_bytes(bytes, &sig).is_ok());
        // Without the domain prefix the signature is not valid.
        assert!(key.verify(bytes, &sig).is_err());
        let mut flipped = sig;
        flipped[10] ^= 1;
        assert!(key.verify_pass_bytes(bytes, &flipped).is_err());
    }

    #[test]
    fn key_ring_refuses_duplicates() {
        let key = PassSigner::from_secret_bytes(&[3; 32]).verification_key();
        assert!(KeyRing::new(vec![key.clone(), key]).is_err());
    }

    #[test]
    fn keyed_hash_separates_parts() {
        let secret = HashingSecret::from_bytes([9; 32]);
        assert_ne!(secret.keyed_hash("l", &[b"ab", b"c"]), secret.keyed_hash("l", &[b"a", b"bc"]));
        assert_ne!(secret.keyed_hash("l", &[b"a"]), secret.keyed_hash("m", &[b"a"]));
    }
}
