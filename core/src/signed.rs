//! Framing shared by the signed lists (trust list, status list):
//! `version (1) | key id (8) | payload (canonical protobuf) | signature (64)`, the signature
//! being Ed25519 over a per-kind domain followed by everything before it.

use chrono::{DateTime, Utc};
use prost::Message;

use crate::ids::KeyId;
use crate::keys::PassSigner;
use crate::pass::{MAX_TIMESTAMP, SIGNATURE_LEN};

/// Version byte of the list formats.
pub const LIST_FORMAT_VERSION: u8 = 1;
/// Largest list accepted (about 300,000 status entries).
pub const MAX_LIST_LEN: usize = 16 << 20;
const HEADER_LEN: usize = 1 + KeyId::LEN;

/// A signed list split into its parts; nothing verified yet.
pub(crate) struct Framed<'a> {
    pub key_id: KeyId,
    pub signed: &'a [u8],
    pub payload: &'a [u8],
    pub signature: [u8; SIGNATURE_LEN],
}

/// Splits list bytes; the error says what is wrong.
pub(crate) fn split(bytes: &[u8]) -> Result<Framed<'_>, &'static str> {
    if bytes.len() > MAX_LIST_LEN {
        return Err("list is too long");
    }
    if bytes.len() < HEADER_LEN + SIGNATURE_LEN {
        return Err("list is too short");
    }
    if bytes[0] != LIST_FORMAT_VERSION {
        return Err("unsupported list format version");
    }
    let (signed, signature) = bytes.split_at(bytes.len() - SIGNATURE_LEN);
    let key_id = KeyId::from_bytes(signed[1..HEADER_LEN].try_into().expect("header holds a key id"));
    Ok(Framed {
        key_id,
        signed,
        payload: &signed[HEADER_LEN..],
        signature: signature.try_into().expect("split at signature length"),
    })
}

/// Frames and signs a payload.
pub(crate) fn seal(signer: &PassSigner, domain: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len() + SIGNATURE_LEN);
    out.push(LIST_FORMAT_VERSION);
    out.extend_from_slice(signer.key_id().as_bytes());
    out.extend_from_slice(payload);
    let signature = signer.sign_in_domain(domain, &out);
    out.extend_from_slice(&signature);
    out
}

/// Decodes a message, refusing anything but its canonical encoding.
pub(crate) fn decode_canonical<M: Message + Default>(bytes: &[u8]) -> Result<M, &'static str> {
    let message = M::decode(bytes).map_err(|_| "payload is not valid protobuf")?;
    if message.encode_to_vec() != bytes {
        return Err("payload is not canonically encoded");
    }
    Ok(message)
}

/// A time field: whole seconds in `0..MAX_TIMESTAMP`.
pub(crate) fn time(seconds: i64) -> Result<DateTime<Utc>, &'static str> {
    (0..MAX_TIMESTAMP)
        .contains(&seconds)
        .then(|| DateTime::from_timestamp(seconds, 0))
        .flatten()
        .ok_or("time out of range")
}
