//! Fuzzes the pass payload parser. It never panics and accepts only canonical encodings (what
//! it parses re-encodes to the same bytes); and it agrees with the verifier: the same bytes in
//! a correctly signed envelope authenticate to the same contents when it accepts them, and are
//! refused for the same reason when it does not.
#![no_main]

use std::sync::LazyLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ed25519_dalek::Signer as _;
use epass_core::keys::{KeyRing, PassSigner};
use epass_core::pass::{
    PassContents, SignedPass, FORMAT_VERSION, HEADER_LEN, MAX_ENVELOPE_LEN, QR_PREFIX, SIGNATURE_DOMAIN, SIGNATURE_LEN,
};
use epass_core::verify::{authenticate, Rejection};
use libfuzzer_sys::fuzz_target;

static SIGNER: LazyLock<PassSigner> = LazyLock::new(|| PassSigner::from_secret_bytes(&[0x5e; 32]));
static KEYS: LazyLock<KeyRing> = LazyLock::new(|| KeyRing::new(vec![SIGNER.verification_key()]).expect("one key"));

fuzz_target!(|data: &[u8]| {
    let parsed = PassContents::from_payload_bytes(data);
    if let Ok(contents) = &parsed {
        assert_eq!(contents.payload_bytes(), data, "accepted a payload that is not canonically encoded");
    }
    if data.is_empty() {
        // An envelope needs at least one payload byte; the verifier refuses it before parsing.
        return;
    }
    if HEADER_LEN + data.len() + SIGNATURE_LEN > MAX_ENVELOPE_LEN {
        assert!(parsed.is_err(), "accepted a payload too long for any envelope: it could be issued but never verified");
        return;
    }

    // The same bytes behind a valid signature, as a checkpoint would receive them.
    let mut envelope = vec![FORMAT_VERSION];
    envelope.extend_from_slice(SIGNER.key_id().as_bytes());
    envelope.extend_from_slice(data);
    let mut message = SIGNATURE_DOMAIN.to_vec();
    message.extend_from_slice(&envelope);
    envelope.extend_from_slice(&SIGNER.signing_key().sign(&message).to_bytes());
    let text = format!("{QR_PREFIX}{}", URL_SAFE_NO_PAD.encode(&envelope));
    match (authenticate(&text, &KEYS), parsed) {
        (Ok(pass), Ok(contents)) => {
            assert_eq!(pass.contents, contents);
            // Signing the contents gives exactly these bytes: encoding and signing are deterministic.
            assert_eq!(SignedPass::sign(contents, &SIGNER).envelope(), &envelope[..]);
        }
        (Err(Rejection::BadFormat(got)), Err(expected)) => assert_eq!(got, expected),
        (got, expected) => panic!("authenticate gave {got:?}, from_payload_bytes {expected:?}"),
    }
});
