//! Fuzzes what a checkpoint runs on whatever its scanner reads: strict decoding of the QR text
//! and authentication with a fixed key ring never panic, and decoding accepts only the one
//! canonical text of the envelope it returns.
#![no_main]

use std::sync::LazyLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use epass_core::keys::{KeyRing, PassSigner};
use epass_core::pass::{decode_qr_text, EnvelopeBuf, TransportMode, HEADER_LEN, MAX_ENVELOPE_LEN, QR_PREFIX};
use epass_core::verify::{authenticate, verify_at, CheckTime};
use libfuzzer_sys::fuzz_target;

static KEYS: LazyLock<KeyRing> = LazyLock::new(|| {
    KeyRing::new(vec![PassSigner::from_secret_bytes(&[0x5e; 32]).verification_key()]).expect("one key")
});

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    check(text);
    // Most inputs lack the prefix: try them behind it as well, to get past the first check.
    if !text.starts_with(QR_PREFIX) {
        check(&format!("{QR_PREFIX}{text}"));
    }
});

fn check(text: &str) {
    let mut buf: EnvelopeBuf = [0; MAX_ENVELOPE_LEN];
    if let Ok(envelope) = decode_qr_text(text, &mut buf) {
        let mut bytes = envelope.signed.to_vec();
        bytes.extend_from_slice(&envelope.signature);
        let canonical = format!("{QR_PREFIX}{}", URL_SAFE_NO_PAD.encode(&bytes));
        assert_eq!(canonical, text, "decoding accepted a text that is not the canonical one");
        assert_eq!(&envelope.signed[1..HEADER_LEN], envelope.key_id.as_bytes());
        assert_eq!(&envelope.signed[HEADER_LEN..], envelope.payload);
    }
    let _ = authenticate(text, &KEYS);
    let now: DateTime<Utc> = DateTime::from_timestamp(1_800_000_000, 0).expect("in range");
    let _ = verify_at(text, &KEYS, TransportMode::Air, CheckTime::exact(now));
}
