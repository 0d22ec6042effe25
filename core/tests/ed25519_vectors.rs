//! Public Ed25519 edge-case vectors (Wycheproof, CCTV) run through the verification path that
//! passes use: `VerificationKey::from_public_key` then `VerificationKey::verify`.
//!
//! The vectors live in `core/tests/data/` (see its README). A key refused by `from_public_key`, a
//! key that is not 32 bytes and a signature that is not 64 bytes all count as rejections: a
//! checkpoint verifier would refuse them before ever calling `verify`.

use std::collections::BTreeMap;

use epass_core::keys::{KeyStatus, KeyValidity, VerificationKey};
use serde::Deserialize;

const WYCHEPROOF: &str = include_str!("data/wycheproof-ed25519.json");
const CCTV: &str = include_str!("data/cctv-ed25519.json");

/// Wycheproof cases marked `valid`, all accepted.
const WYCHEPROOF_VALID: usize = 88;
/// Wycheproof cases marked `invalid`, all rejected.
const WYCHEPROOF_INVALID: usize = 63;
/// CCTV cases in the file.
const CCTV_CASES: usize = 914;
/// CCTV cases a conforming verifier accepts: the one without flags.
const CCTV_ACCEPTED: usize = 1;

/// The flags with which a strict verifier accepts nothing.
const STRICT_FLAGS: [&str; 4] = ["low_order_A", "low_order_R", "non_canonical_A", "non_canonical_R"];

/// Runs the project's verification path on raw vector bytes; `true` when accepted.
fn accepts(key: &[u8], msg: &[u8], sig: &[u8]) -> bool {
    let Ok(key) = <&[u8; 32]>::try_from(key) else {
        return false;
    };
    let Ok(sig) = <&[u8; 64]>::try_from(sig) else {
        return false;
    };
    match VerificationKey::from_public_key(key, KeyStatus::Active, KeyValidity::UNBOUNDED) {
        Ok(key) => key.verify(msg, sig).is_ok(),
        Err(_) => false,
    }
}

fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap_or_else(|e| panic!("bad hex {s:?}: {e}"))
}

#[derive(Deserialize)]
struct WycheproofFile {
    #[serde(rename = "numberOfTests")]
    number_of_tests: usize,
    #[serde(rename = "testGroups")]
    test_groups: Vec<WycheproofGroup>,
}

#[derive(Deserialize)]
struct WycheproofGroup {
    #[serde(rename = "publicKey")]
    public_key: WycheproofKey,
    tests: Vec<WycheproofTest>,
}

#[derive(Deserialize)]
struct WycheproofKey {
    pk: String,
}

#[derive(Deserialize)]
struct WycheproofTest {
    #[serde(rename = "tcId")]
    tc_id: u32,
    comment: String,
    /// Hex.
    msg: String,
    /// Hex.
    sig: String,
    result: WycheproofResult,
}

#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
enum WycheproofResult {
    Valid,
    Invalid,
    Acceptable,
}

#[derive(Deserialize)]
struct CctvCase {
    number: u32,
    /// Hex.
    key: String,
    /// Hex.
    sig: String,
    /// The message as UTF-8 text, not hex.
    msg: String,
    /// `null` for the one case with nothing special about it.
    flags: Option<Vec<String>>,
}

impl CctvCase {
    fn flags(&self) -> &[String] {
        self.flags.as_deref().unwrap_or_default()
    }

    fn accepted(&self) -> bool {
        accepts(&unhex(&self.key), self.msg.as_bytes(), &unhex(&self.sig))
    }
}

fn wycheproof() -> WycheproofFile {
    serde_json::from_str(WYCHEPROOF).expect("Wycheproof vectors parse")
}

fn cctv() -> Vec<CctvCase> {
    serde_json::from_str(CCTV).expect("CCTV vectors parse")
}

#[test]
fn wycheproof_valid_accepted_and_invalid_rejected() {
    let file = wycheproof();
    let mut counts = BTreeMap::<WycheproofResult, usize>::new();
    let mut wrong = Vec::new();
    for group in &file.test_groups {
        let key = unhex(&group.public_key.pk);
        for test in &group.tests {
            *counts.entry(test.result).or_default() += 1;
            let accepted = accepts(&key, &unhex(&test.msg), &unhex(&test.sig));
            let expected = match test.result {
                WycheproofResult::Valid => true,
                WycheproofResult::Invalid => false,
                // None exist in this file (asserted below). If a new file brings some, they are
                // the malleable and small-order cases a strict verifier refuses.
                WycheproofResult::Acceptable => false,
            };
            if accepted != expected {
                wrong.push(format!("tcId {} ({:?}, {:?}): accepted={accepted}", test.tc_id, test.result, test.comment));
            }
        }
    }
    assert!(wrong.is_empty(), "verdicts differ from Wycheproof:\n{}", wrong.join("\n"));
    assert_eq!(counts.values().sum::<usize>(), file.number_of_tests);
    // Pinned so that swapping the file for another version is noticed.
    assert_eq!(counts.get(&WycheproofResult::Valid), Some(&WYCHEPROOF_VALID));
    assert_eq!(counts.get(&WycheproofResult::Invalid), Some(&WYCHEPROOF_INVALID));
    assert_eq!(counts.get(&WycheproofResult::Acceptable), None);
}

#[test]
fn cctv_no_low_order_or_non_canonical_case_is_accepted() {
    let cases = cctv();
    assert_eq!(cases.len(), CCTV_CASES);
    let offending: Vec<String> = cases
        .iter()
        .filter(|c| c.flags().iter().any(|f| STRICT_FLAGS.contains(&f.as_str())))
        .filter(|c| c.accepted())
        .map(|c| format!("case {} {:?}", c.number, c.flags()))
        .collect();
    assert!(offending.is_empty(), "a strict verifier accepted:\n{}", offending.join("\n"));
}

/// Regression pin: exactly 1 CCTV case verifies, the one without flags, and docs/FORMAT.md
/// tells vendors to expect the same number. The 42 cases whose key has a small-order
/// component (`low_order_component_A`, 7 of them with `low_order_component_R` as well for 35)
/// satisfy the cofactorless equation, but the key is refused: it is not in the prime-order
/// subgroup, and no honest key has a small-order component.
///
/// Every case flagged `low_order_residue` is rejected: its equation holds only when multiplied
/// by the cofactor, and the verification is cofactorless. `reencoded_k` only occurs together
/// with `non_canonical_*`. A change in this number means the verification rules changed.
#[test]
fn cctv_accepted_cases_are_pinned() {
    let cases = cctv();
    let accepted: Vec<&CctvCase> = cases.iter().filter(|c| c.accepted()).collect();
    let mut by_flags = BTreeMap::<Vec<String>, usize>::new();
    for case in &accepted {
        let mut flags = case.flags().to_vec();
        flags.sort();
        *by_flags.entry(flags).or_default() += 1;
    }
    let flags = |f: &[&str]| f.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let expected = BTreeMap::from([(flags(&[]), CCTV_ACCEPTED)]);
    assert_eq!(by_flags, expected);
    assert_eq!(accepted.len(), CCTV_ACCEPTED);
}

/// Regression (issue 10, point 3): docs/FORMAT.md said 1 CCTV case is accepted, the data README
/// 43. Both now state the counts pinned above, and this keeps them doing so.
#[test]
fn documents_state_the_pinned_counts() {
    // Compared with line breaks and runs of spaces folded, as the text is wrapped.
    let folded = |text: &str| text.split_whitespace().collect::<Vec<_>>().join(" ");
    let format = folded(include_str!("../../docs/FORMAT.md"));
    let data = folded(include_str!("data/README.md"));
    for stated in [
        format!(
            "accepts all {WYCHEPROOF_VALID} Wycheproof `valid` cases and rejects all {WYCHEPROOF_INVALID} `invalid` ones"
        ),
        format!("accepts exactly {CCTV_ACCEPTED} of the {CCTV_CASES} CCTV (C2SP) `ed25519vectors` cases: the one without flags"),
    ] {
        assert!(format.contains(&stated), "docs/FORMAT.md no longer says: {stated}");
    }
    for stated in [
        format!(
            "{WYCHEPROOF_VALID} valid accepted, {WYCHEPROOF_INVALID} invalid rejected, 0 acceptable for Wycheproof"
        ),
        format!("exactly {CCTV_ACCEPTED} of the {CCTV_CASES} CCTV cases accepted, the one without flags"),
        format!("{CCTV_CASES} cases"),
    ] {
        assert!(data.contains(&stated), "core/tests/data/README.md no longer says: {stated}");
    }
}
