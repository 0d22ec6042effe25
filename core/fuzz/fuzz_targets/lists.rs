//! Fuzzes the signed lists an offline checkpoint downloads: `TrustList::open` and
//! `StatusList::open` never panic, and a list that opens signs again to exactly the same
//! bytes (canonical encoding, deterministic signatures). The first input byte says what the
//! rest is: raw list bytes, or a payload that is framed and signed here with the fixed keys,
//! so that the parsers behind the signature checks are reached too.
#![no_main]

use std::sync::LazyLock;

use chrono::{DateTime, TimeDelta, Utc};
use ed25519_dalek::Signer as _;
use epass_core::keys::{KeyRing, PassSigner};
use epass_core::status::{StatusList, STATUS_LIST_DOMAIN};
use epass_core::trust::{TrustList, TRUST_LIST_DOMAIN};
use libfuzzer_sys::fuzz_target;

/// The version byte of the list framing (docs/FORMAT.md).
const LIST_FORMAT_VERSION: u8 = 1;

static ROOT: LazyLock<PassSigner> = LazyLock::new(|| PassSigner::from_secret_bytes(&[0x01; 32]));
static SIGNER: LazyLock<PassSigner> = LazyLock::new(|| PassSigner::from_secret_bytes(&[0x02; 32]));
static KEYS: LazyLock<KeyRing> = LazyLock::new(|| KeyRing::new(vec![SIGNER.verification_key()]).expect("one key"));

fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000, 0).expect("in range")
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else { return };
    match selector % 4 {
        0 => trust_list(rest),
        1 => trust_list(&seal(&ROOT, TRUST_LIST_DOMAIN, rest)),
        2 => status_list(rest),
        _ => status_list(&seal(&SIGNER, STATUS_LIST_DOMAIN, rest)),
    }
});

/// `version | key id | payload | signature over domain and everything before it`.
fn seal(signer: &PassSigner, domain: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut out = vec![LIST_FORMAT_VERSION];
    out.extend_from_slice(signer.key_id().as_bytes());
    out.extend_from_slice(payload);
    let mut message = domain.to_vec();
    message.extend_from_slice(&out);
    out.extend_from_slice(&signer.signing_key().sign(&message).to_bytes());
    out
}

fn trust_list(bytes: &[u8]) {
    let Ok(list) = TrustList::open(bytes, &ROOT.verification_key()) else { return };
    assert_eq!(list.sign(&ROOT), bytes, "an opened trust list does not sign back to its bytes");
    let ring = list.key_ring().expect("an opened trust list has distinct keys");
    for key in &list.keys {
        assert!(ring.find(key.key_id()).is_some());
        let _ = key.may_sign_at(now());
    }
    let _ = list.check_current(Some(list.sequence), now());
    let _ = list.check_current(None, list.stale_after + TimeDelta::seconds(1));
}

fn status_list(bytes: &[u8]) {
    let Ok(list) = StatusList::open(bytes, &KEYS, now()) else { return };
    assert_eq!(list.sign(&SIGNER), bytes, "an opened status list does not sign back to its bytes");
    let index = list.index();
    for entry in &list.entries {
        assert!(index.rejection(entry.pass_id).is_some(), "a listed pass is not refused");
    }
    let _ = list.is_stale(now());
    let mut applied = list.clone();
    let delta = StatusList { base_sequence: list.sequence, ..list.clone() };
    applied.apply(delta).expect("a delta on the list's own sequence applies");
    assert_eq!(applied.entries.len(), 2 * list.entries.len());
    applied.prune(now());
}
