//! The pass: its contents, the signed envelope and the QR text (docs/FORMAT.md).
//!
//! Envelope bytes: `version (1) | key id (8) | payload (protobuf) | signature (64)`.
//! The signature is Ed25519 over [`SIGNATURE_DOMAIN`] followed by every envelope byte before
//! the signature. The QR text is [`QR_PREFIX`] then the envelope in base64url without padding.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chrono::{DateTime, TimeDelta, Utc};
use prost::Message as _;

use crate::applicant::{HolderName, PermitNumber};
use crate::ids::{KeyId, PassId};
use crate::keys::PassSigner;

use crate::wire as payload_pb;

/// Text that starts every pass QR code; the digit is the format version.
pub const QR_PREFIX: &str = "EP1:";
/// The envelope format version this code writes and reads.
pub const FORMAT_VERSION: u8 = 1;
/// Prepended to the signed bytes so a pass signature can never be mistaken for another
/// message signed with the same key.
pub const SIGNATURE_DOMAIN: &[u8] = b"epass/pass/v1\0";
/// Version byte plus key id.
pub const HEADER_LEN: usize = 1 + KeyId::LEN;
/// Ed25519 signature length.
pub const SIGNATURE_LEN: usize = 64;
/// Longest envelope accepted; the longest names allowed give about 280 bytes.
pub const MAX_ENVELOPE_LEN: usize = 400;
/// Longest QR text accepted.
pub const MAX_QR_TEXT_LEN: usize = QR_PREFIX.len() + (MAX_ENVELOPE_LEN * 4).div_ceil(3);
/// Times in a payload are whole seconds since the Unix epoch in `0..MAX_TIMESTAMP` (until
/// 2106): a fixed range that verifiers in any language can check alike.
pub const MAX_TIMESTAMP: i64 = 1 << 32;
/// A pass is valid for at most this long.
pub const MAX_VALIDITY: TimeDelta = TimeDelta::days(7);

/// A transport mode of a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransportMode {
    /// Airport.
    Air,
    /// Railway station.
    Rail,
    /// Road crossing.
    Road,
    /// Seaport.
    Sea,
    /// On foot.
    Foot,
}

impl TransportMode {
    /// Lower-case name, as used on the command line and in logs.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Air => "air",
            Self::Rail => "rail",
            Self::Road => "road",
            Self::Sea => "sea",
            Self::Foot => "foot",
        }
    }
}

impl fmt::Display for TransportMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The modes a pass allows: air, rail or both (never empty, never anything else).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Modes(u8);

impl Modes {
    const AIR: u8 = 1;
    const RAIL: u8 = 2;
    /// Air only.
    pub const AIR_ONLY: Self = Self(Self::AIR);
    /// Rail only.
    pub const RAIL_ONLY: Self = Self(Self::RAIL);
    /// Air and rail: the default.
    pub const AIR_AND_RAIL: Self = Self(Self::AIR | Self::RAIL);

    /// The modes from their wire bit set; `None` for an empty set or unknown bits.
    pub const fn from_bits(bits: u32) -> Option<Self> {
        if bits == 0 || bits & !((Self::AIR | Self::RAIL) as u32) != 0 {
            None
        } else {
            Some(Self(bits as u8))
        }
    }

    /// Collects modes; `Err` names the first mode that a pass can never allow. An empty list
    /// means air and rail.
    pub fn from_list(modes: &[TransportMode]) -> Result<Self, TransportMode> {
        let mut bits = 0;
        for mode in modes {
            bits |= match mode {
                TransportMode::Air => Self::AIR,
                TransportMode::Rail => Self::RAIL,
                other => return Err(*other),
            };
        }
        Ok(if bits == 0 { Self::AIR_AND_RAIL } else { Self(bits) })
    }

    /// The wire bit set.
    pub const fn bits(self) -> u32 {
        self.0 as u32
    }

    /// Whether a checkpoint of this mode may admit the holder.
    pub const fn allows(self, mode: TransportMode) -> bool {
        match mode {
            TransportMode::Air => self.0 & Self::AIR != 0,
            TransportMode::Rail => self.0 & Self::RAIL != 0,
            TransportMode::Road | TransportMode::Sea | TransportMode::Foot => false,
        }
    }

    /// The allowed modes, air first.
    pub fn list(self) -> Vec<TransportMode> {
        [TransportMode::Air, TransportMode::Rail].into_iter().filter(|m| self.allows(*m)).collect()
    }
}

impl fmt::Debug for Modes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.list()).finish()
    }
}

/// What a pass says: everything inside the signed payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PassContents {
    /// Random identifier.
    pub pass_id: PassId,
    /// Holder's name.
    pub holder: HolderName,
    /// Holder's permit number.
    pub permit: PermitNumber,
    /// When the pass was issued (whole seconds).
    pub issued_at: DateTime<Utc>,
    /// First instant of validity (inclusive).
    pub valid_from: DateTime<Utc>,
    /// End of validity (exclusive).
    pub valid_until: DateTime<Utc>,
    /// Allowed transport modes.
    pub modes: Modes,
    /// Entries the pass admits (1 in format version 1).
    pub entries_allowed: u32,
}

/// How a QR text fails to be a well-formed pass.
///
/// Exhaustive on purpose: docs/FORMAT.md fixes the set, so a new variant is a format change
/// that every verifier's `match` must notice.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatProblem {
    /// The text does not start with [`QR_PREFIX`].
    #[error("text does not start with {QR_PREFIX}")]
    WrongPrefix,
    /// Not canonical unpadded base64url.
    #[error("not canonical unpadded base64url")]
    BadBase64,
    /// Shorter than the smallest envelope.
    #[error("envelope too short ({len} bytes)")]
    TooShort {
        /// Envelope length in bytes.
        len: usize,
    },
    /// Longer than the largest envelope.
    #[error("too long ({len} bytes)")]
    TooLong {
        /// Length of the text or envelope in bytes.
        len: usize,
    },
    /// A version byte this verifier does not know.
    #[error("unsupported format version {version}")]
    UnsupportedVersion {
        /// The version byte.
        version: u8,
    },
    /// The signed payload does not decode to a valid pass.
    #[error("bad payload: {0}")]
    BadPayload(&'static str),
}

/// A decoded but not yet verified envelope, borrowing the decode buffer.
#[derive(Debug)]
pub struct Envelope<'a> {
    /// Key id from the header.
    pub key_id: KeyId,
    /// Header and payload: the bytes the signature covers (after the domain prefix).
    pub signed: &'a [u8],
    /// The protobuf payload.
    pub payload: &'a [u8],
    /// The signature.
    pub signature: [u8; SIGNATURE_LEN],
}

/// Buffer a QR text decodes into; on the stack, so decoding and the signature check do not allocate.
pub type EnvelopeBuf = [u8; MAX_ENVELOPE_LEN];

/// Strictly decodes a QR text into its envelope. Checks prefix, length, base64 and version;
/// neither the key nor the signature nor the payload.
pub fn decode_qr_text<'b>(text: &str, buf: &'b mut EnvelopeBuf) -> Result<Envelope<'b>, FormatProblem> {
    let body = text.strip_prefix(QR_PREFIX).ok_or(FormatProblem::WrongPrefix)?;
    if text.len() > MAX_QR_TEXT_LEN {
        return Err(FormatProblem::TooLong { len: text.len() });
    }
    let len = URL_SAFE_NO_PAD.decode_slice(body, &mut buf[..]).map_err(|_| FormatProblem::BadBase64)?;
    parse_envelope(&buf[..len])
}

/// Splits envelope bytes into header, payload and signature.
pub fn parse_envelope(bytes: &[u8]) -> Result<Envelope<'_>, FormatProblem> {
    let len = bytes.len();
    if len > MAX_ENVELOPE_LEN {
        return Err(FormatProblem::TooLong { len });
    }
    if len < HEADER_LEN + 1 + SIGNATURE_LEN {
        return Err(FormatProblem::TooShort { len });
    }
    if bytes[0] != FORMAT_VERSION {
        return Err(FormatProblem::UnsupportedVersion { version: bytes[0] });
    }
    let (signed, signature) = bytes.split_at(len - SIGNATURE_LEN);
    let mut key_id = [0u8; KeyId::LEN];
    key_id.copy_from_slice(&signed[1..HEADER_LEN]);
    Ok(Envelope {
        key_id: KeyId::from_bytes(key_id),
        signed,
        payload: &signed[HEADER_LEN..],
        signature: signature.try_into().expect("split at signature length"),
    })
}

impl FormatProblem {
    /// Stable snake-case name, as in `epass.v1.FormatProblem` and the conformance vectors.
    pub const fn as_str(&self) -> &'static str {
        match self {
            Self::WrongPrefix => "wrong_prefix",
            Self::BadBase64 => "bad_base64",
            Self::TooShort { .. } => "too_short",
            Self::TooLong { .. } => "too_long",
            Self::UnsupportedVersion { .. } => "unsupported_version",
            Self::BadPayload(_) => "bad_payload",
        }
    }
}

impl PassContents {
    fn to_payload(&self) -> payload_pb::PassPayload {
        payload_pb::PassPayload {
            pass_id: self.pass_id.as_bytes().to_vec(),
            name_latin: self.holder.latin().unwrap_or_default().to_owned(),
            name_chinese: self.holder.chinese().unwrap_or_default().to_owned(),
            permit_number: self.permit.as_str().to_owned(),
            issued_at: self.issued_at.timestamp(),
            valid_from: self.valid_from.timestamp(),
            valid_until: self.valid_until.timestamp(),
            modes: self.modes.bits(),
            entries_allowed: self.entries_allowed,
        }
    }

    /// The canonical payload bytes.
    pub fn payload_bytes(&self) -> Vec<u8> {
        self.to_payload().encode_to_vec()
    }

    /// Parses payload bytes, refusing anything but the canonical encoding of a valid pass.
    pub fn from_payload_bytes(bytes: &[u8]) -> Result<Self, FormatProblem> {
        use FormatProblem::BadPayload;
        let p = payload_pb::PassPayload::decode(bytes).map_err(|_| BadPayload("not a protobuf PassPayload"))?;
        // Re-encoding must give the same bytes: no unknown fields, no duplicates, no padding.
        let mut canonical = [0u8; MAX_ENVELOPE_LEN];
        let mut out = &mut canonical[..];
        p.encode(&mut out).map_err(|_| BadPayload("payload too long"))?;
        let written = MAX_ENVELOPE_LEN - out.len();
        if canonical[..written] != *bytes {
            return Err(BadPayload("payload is not canonically encoded"));
        }
        let payload_pb::PassPayload {
            pass_id,
            name_latin,
            name_chinese,
            permit_number,
            issued_at,
            valid_from,
            valid_until,
            modes,
            entries_allowed,
        } = p;
        let pass_id = PassId::from_slice(&pass_id).ok_or(BadPayload("pass id is not 16 bytes"))?;
        let holder = HolderName::parse(&name_latin, &name_chinese).map_err(|_| BadPayload("invalid holder name"))?;
        if holder.latin().unwrap_or_default() != name_latin || holder.chinese().unwrap_or_default() != name_chinese {
            return Err(BadPayload("holder name is not normalised"));
        }
        let permit = PermitNumber::parse(&permit_number).map_err(|_| BadPayload("invalid permit number"))?;
        if permit.as_str() != permit_number {
            return Err(BadPayload("permit number is not normalised"));
        }
        let time = |secs| crate::signed::time(secs).map_err(BadPayload);
        let (issued_at, valid_from, valid_until) = (time(issued_at)?, time(valid_from)?, time(valid_until)?);
        if valid_from >= valid_until {
            return Err(BadPayload("validity window is empty"));
        }
        if valid_from < issued_at {
            return Err(BadPayload("valid before it was issued"));
        }
        if valid_until - issued_at > MAX_VALIDITY {
            return Err(BadPayload("valid for more than 7 days after issue"));
        }
        let modes = Modes::from_bits(modes).ok_or(BadPayload("modes must be air, rail or both"))?;
        if entries_allowed != 1 {
            return Err(BadPayload("entries allowed must be 1"));
        }
        Ok(Self { pass_id, holder, permit, issued_at, valid_from, valid_until, modes, entries_allowed })
    }
}

/// A signed pass: its contents and the envelope bytes that carry them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedPass {
    contents: PassContents,
    key_id: KeyId,
    envelope: Vec<u8>,
}

impl SignedPass {
    /// Signs the contents with the signer's key.
    pub fn sign(contents: PassContents, signer: &PassSigner) -> Self {
        let mut envelope = unsigned_envelope(&contents, signer.key_id());
        let signature = signer.sign_pass_bytes(&envelope);
        envelope.extend_from_slice(&signature);
        Self { contents, key_id: signer.key_id(), envelope }
    }

    /// Puts contents and a signature made earlier back together (to answer a retried request
    /// without keeping the permit number). Encoding is deterministic, so the bytes are the
    /// ones first signed; callers verify the result before handing it out.
    pub fn dangerous_assemble_unverified(
        contents: PassContents,
        key_id: KeyId,
        signature: &[u8; SIGNATURE_LEN],
    ) -> Self {
        let mut envelope = unsigned_envelope(&contents, key_id);
        envelope.extend_from_slice(signature);
        Self { contents, key_id, envelope }
    }

    /// The contents.
    pub fn contents(&self) -> &PassContents {
        &self.contents
    }

    /// The signing key's id.
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// The whole envelope.
    pub fn envelope(&self) -> &[u8] {
        &self.envelope
    }

    /// The signature bytes.
    pub fn signature(&self) -> [u8; SIGNATURE_LEN] {
        self.envelope[self.envelope.len() - SIGNATURE_LEN..].try_into().expect("envelope ends with a signature")
    }

    /// The text for the QR code.
    pub fn qr_text(&self) -> String {
        let mut text = String::with_capacity(QR_PREFIX.len() + self.envelope.len().div_ceil(3) * 4);
        text.push_str(QR_PREFIX);
        URL_SAFE_NO_PAD.encode_string(&self.envelope, &mut text);
        text
    }
}

fn unsigned_envelope(contents: &PassContents, key_id: KeyId) -> Vec<u8> {
    let payload = contents.to_payload();
    let mut envelope = Vec::with_capacity(HEADER_LEN + payload.encoded_len() + SIGNATURE_LEN);
    envelope.push(FORMAT_VERSION);
    envelope.extend_from_slice(key_id.as_bytes());
    payload.encode(&mut envelope).expect("a Vec grows as needed");
    envelope
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample_contents() -> PassContents {
        let issued_at = DateTime::from_timestamp(1_795_000_000, 0).unwrap();
        PassContents {
            pass_id: PassId::from_bytes([7; 16]),
            holder: HolderName::parse("CHAN TAI MAN", "陳大文").unwrap(),
            permit: PermitNumber::parse("H12345678").unwrap(),
            issued_at,
            valid_from: issued_at,
            valid_until: issued_at + MAX_VALIDITY,
            modes: Modes::AIR_AND_RAIL,
            entries_allowed: 1,
        }
    }

    #[test]
    fn payload_round_trips() {
        let contents = sample_contents();
        let bytes = contents.payload_bytes();
        assert_eq!(PassContents::from_payload_bytes(&bytes).unwrap(), contents);
    }

    #[test]
    fn payload_with_unknown_field_is_refused() {
        let mut bytes = sample_contents().payload_bytes();
        bytes.extend_from_slice(&[0x50, 0x01]); // field 10, varint 1
        assert_eq!(
            PassContents::from_payload_bytes(&bytes),
            Err(FormatProblem::BadPayload("payload is not canonically encoded"))
        );
    }

    #[test]
    fn payload_with_long_window_is_refused() {
        let mut contents = sample_contents();
        contents.valid_until += TimeDelta::seconds(1);
        assert_eq!(
            PassContents::from_payload_bytes(&contents.payload_bytes()),
            Err(FormatProblem::BadPayload("valid for more than 7 days after issue"))
        );
    }

    #[test]
    fn payload_times_are_bounded() {
        let mut contents = sample_contents();
        contents.issued_at = DateTime::from_timestamp(MAX_TIMESTAMP, 0).unwrap();
        contents.valid_from = contents.issued_at;
        contents.valid_until = contents.issued_at + TimeDelta::days(1);
        assert_eq!(
            PassContents::from_payload_bytes(&contents.payload_bytes()),
            Err(FormatProblem::BadPayload("time out of range"))
        );
    }

    #[test]
    fn longest_envelope_text_is_too_long_only_past_the_limit() {
        let mut buf = [0u8; MAX_ENVELOPE_LEN];
        let text = |len: usize| format!("{QR_PREFIX}{}", URL_SAFE_NO_PAD.encode(vec![FORMAT_VERSION; len]));
        assert_eq!(text(MAX_ENVELOPE_LEN).len(), MAX_QR_TEXT_LEN);
        assert!(decode_qr_text(&text(MAX_ENVELOPE_LEN), &mut buf).is_ok());
        assert!(matches!(decode_qr_text(&text(MAX_ENVELOPE_LEN + 1), &mut buf), Err(FormatProblem::TooLong { .. })));
    }

    #[test]
    fn qr_text_decodes_to_the_same_envelope() {
        let signer = PassSigner::from_secret_bytes(&[1; 32]);
        let pass = SignedPass::sign(sample_contents(), &signer);
        let text = pass.qr_text();
        assert!(text.starts_with(QR_PREFIX));
        let mut buf = [0u8; MAX_ENVELOPE_LEN];
        let env = decode_qr_text(&text, &mut buf).unwrap();
        assert_eq!(env.key_id, signer.key_id());
        assert_eq!(env.signature, pass.signature());
        assert_eq!(PassContents::from_payload_bytes(env.payload).unwrap(), *pass.contents());
    }

    #[test]
    fn malformed_texts_name_their_problem() {
        let signer = PassSigner::from_secret_bytes(&[1; 32]);
        let text = SignedPass::sign(sample_contents(), &signer).qr_text();
        let body = &text[QR_PREFIX.len()..];
        let mut buf = [0u8; MAX_ENVELOPE_LEN];
        let mut check = |t: &str| decode_qr_text(t, &mut buf).map(|_| ()).unwrap_err();
        assert_eq!(check(&format!("EP2:{body}")), FormatProblem::WrongPrefix);
        assert_eq!(check(&format!("ep1:{body}")), FormatProblem::WrongPrefix);
        assert_eq!(check(&format!("{text}=")), FormatProblem::BadBase64);
        assert_eq!(check(&format!("{text} ")), FormatProblem::BadBase64);
        assert_eq!(check(&format!("EP1:+{}", &body[1..])), FormatProblem::BadBase64);
        assert_eq!(check("EP1:AQ"), FormatProblem::TooShort { len: 1 });
        assert!(matches!(check(&format!("{text}{}", "A".repeat(600))), FormatProblem::TooLong { .. }));
    }
}
