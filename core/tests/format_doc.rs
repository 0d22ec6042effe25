//! Keeps docs/FORMAT.md true: regenerates its worked example, checks its constants table
//! against the crate's constants, and checks the decoding and rejection rules it states.

#[allow(dead_code)] // The example's `main` is not called from here.
#[path = "../examples/format_example.rs"]
mod format_example;

use std::collections::BTreeMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chrono::{DateTime, TimeDelta, TimeZone as _, Utc};
use epass_core::applicant::{HolderName, PermitNumber};
use epass_core::ids::{KeyId, PassId};
use epass_core::keys::{KeyRing, KeyStatus, KeyValidity, PassSigner, VerificationKey};
use epass_core::pass::{
    decode_qr_text, FormatProblem, Modes, PassContents, SignedPass, TransportMode, FORMAT_VERSION, HEADER_LEN,
    MAX_ENVELOPE_LEN, MAX_QR_TEXT_LEN, MAX_TIMESTAMP, MAX_VALIDITY, QR_PREFIX, SIGNATURE_DOMAIN, SIGNATURE_LEN,
};
use epass_core::qr::{version_of, QrSymbol, EC_LEVEL, QUIET_ZONE};
use epass_core::verify::{verify, Rejection};
use format_example::{worked_example, SECRET_KEY};

const DOC: &str = include_str!("../../docs/FORMAT.md");

/// The text between `<!-- {name}:begin -->` and `<!-- {name}:end -->`.
fn section(name: &str) -> &'static str {
    let begin = format!("<!-- {name}:begin -->\n");
    let end = format!("<!-- {name}:end -->");
    let start = DOC.find(&begin).unwrap_or_else(|| panic!("FORMAT.md lacks {begin:?}")) + begin.len();
    let len = DOC[start..].find(&end).unwrap_or_else(|| panic!("FORMAT.md lacks {end:?}"));
    &DOC[start..start + len]
}

/// The code-quoted value on the worked example's line that starts with `- {label}`.
fn example_value(label: &str) -> &'static str {
    let prefix = format!("- {label}");
    let line = section("worked-example")
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("the worked example has no line {prefix:?}"));
    let start = line.find('`').expect("an opening backtick") + 1;
    let end = line.rfind('`').expect("a closing backtick");
    &line[start..end]
}

fn doc_key_ring() -> KeyRing {
    let public_key: [u8; 32] = hex::decode(example_value("Public key")).unwrap().try_into().unwrap();
    let key = VerificationKey::from_public_key(&public_key, KeyStatus::Active, KeyValidity::UNBOUNDED).unwrap();
    KeyRing::new(vec![key]).unwrap()
}

fn at(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(secs, 0).unwrap()
}

#[test]
fn worked_example_in_doc_is_what_the_code_produces() {
    let example = worked_example();
    let generated = example.markdown();
    assert_eq!(
        section("worked-example"),
        generated,
        "paste the output of `cargo run -p epass-core --example format_example` into FORMAT.md"
    );
    // The same, value by value, for a failure message that names the value.
    let pass = &example.pass;
    for (label, value) in [
        ("Public key", hex::encode(example.public_key)),
        ("Key id", pass.key_id().to_string()),
        ("Payload", hex::encode(example.payload())),
        ("Signed message", hex::encode(&example.signed_message)),
        ("Signature", hex::encode(pass.signature())),
        ("Envelope", hex::encode(pass.envelope())),
        ("QR text", example.qr_text.clone()),
        ("Secret key", hex::encode(SECRET_KEY)),
        ("Pass id", pass.contents().pass_id.to_string()),
    ] {
        assert_eq!(example_value(label), value, "{label}");
        assert!(DOC.contains(&value), "FORMAT.md lacks the {label} {value}");
    }
}

#[test]
fn doc_qr_text_verifies_with_doc_public_key() {
    let ring = doc_key_ring();
    let text = example_value("QR text");
    let (from, until) = (1_772_413_200, 1_773_018_000);
    let check = |mode, now| verify(text, &ring, mode, now).verdict;
    assert_eq!(check(TransportMode::Air, at(from)), Ok(()));
    assert_eq!(check(TransportMode::Rail, at(until - 1)), Ok(()));
    assert_eq!(check(TransportMode::Air, at(from + 3 * 86_400)), Ok(()));
    assert_eq!(
        check(TransportMode::Air, at(until) - TimeDelta::milliseconds(1)),
        Ok(()),
        "the window is compared at sub-second precision"
    );
    for mode in [TransportMode::Road, TransportMode::Sea, TransportMode::Foot] {
        assert_eq!(check(mode, at(from)), Err(Rejection::ModeNotAllowed { mode }));
    }
    assert_eq!(check(TransportMode::Air, at(from - 1)), Err(Rejection::NotYetValid { valid_from: at(from) }));
    assert_eq!(check(TransportMode::Air, at(until)), Err(Rejection::Expired { valid_until: at(until) }));

    // The verifier shows whose pass it is even when the window or mode rejects it.
    let v = verify(text, &ring, TransportMode::Road, at(until));
    assert_eq!(v.pass.unwrap().contents.permit.as_str(), "H12345678");
}

#[test]
fn doc_qr_text_decodes_to_the_stated_layout() {
    let text = example_value("QR text");
    assert!(text.starts_with(QR_PREFIX));
    let envelope = URL_SAFE_NO_PAD.decode(&text[QR_PREFIX.len()..]).unwrap();
    assert_eq!(hex::encode(&envelope), example_value("Envelope"));
    assert_eq!(envelope[0], FORMAT_VERSION);
    assert_eq!(hex::encode(&envelope[1..HEADER_LEN]), example_value("Key id"));
    let public_key = hex::decode(example_value("Public key")).unwrap();
    assert_eq!(hex::encode(KeyId::of_public_key(&public_key.try_into().unwrap()).as_bytes()), example_value("Key id"));
    let (signed, signature) = envelope.split_at(envelope.len() - SIGNATURE_LEN);
    assert_eq!(hex::encode(signature), example_value("Signature"));
    assert_eq!(hex::encode(&signed[HEADER_LEN..]), example_value("Payload"));
    let message = [SIGNATURE_DOMAIN, signed].concat();
    assert_eq!(hex::encode(&message), example_value("Signed message"));

    let mut buf = [0u8; MAX_ENVELOPE_LEN];
    let decoded = decode_qr_text(text, &mut buf).unwrap();
    assert_eq!(decoded.signed, signed);
    assert_eq!(decoded.signature, signature);
    let contents = PassContents::from_payload_bytes(decoded.payload).unwrap();
    assert_eq!(contents.holder.latin(), Some("CHAN TAI MAN"));
    assert_eq!(contents.holder.chinese(), Some("陳大文"));
    assert_eq!(contents.modes, Modes::AIR_AND_RAIL);

    let symbol = QrSymbol::encode(text).unwrap();
    assert!(DOC.contains(&format!("QR symbol at level Q: version {}", symbol.version())));
    // An independent reader gets the text back, and reads level Q (format bits 0b11) and the
    // version from the symbol itself.
    let scale = 4;
    let side = (symbol.width() + 2 * QUIET_ZONE) * scale;
    let mut image = rqrr::PreparedImage::prepare_from_greyscale(side, side, |x, y| {
        let (mx, my) = ((x / scale).wrapping_sub(QUIET_ZONE), (y / scale).wrapping_sub(QUIET_ZONE));
        if mx < symbol.width() && my < symbol.width() && symbol.is_dark(mx, my) {
            0
        } else {
            255
        }
    });
    let grids = image.detect_grids();
    assert_eq!(grids.len(), 1);
    let (meta, read) = grids[0].decode().unwrap();
    assert_eq!(read, text);
    assert_eq!(meta.ecc_level, 0b11);
    assert_eq!(meta.version.0, symbol.version() as usize);
    assert_eq!(meta.mask, u16::from(symbol.mask()));
    assert!(DOC.contains(&format!("needs version {} ({w} × {w} modules)", symbol.version(), w = symbol.width())));
}

/// Every row of the constants table, keyed by its "In the code" column.
#[test]
fn doc_constants_match_the_code() {
    let mut documented = BTreeMap::new();
    for line in section("constants").lines().skip(2) {
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        assert_eq!(cells.len(), 3, "not a table row: {line:?}");
        let value = cells[1].strip_prefix('`').and_then(|v| v.strip_suffix('`')).expect("a quoted value");
        let code = cells[2].strip_prefix('`').and_then(|v| v.strip_suffix('`')).expect("a quoted name");
        assert!(documented.insert(code.to_owned(), value.to_owned()).is_none(), "{code} twice");
    }
    let ec_level = match EC_LEVEL {
        qrcode::EcLevel::L => "L",
        qrcode::EcLevel::M => "M",
        qrcode::EcLevel::Q => "Q",
        qrcode::EcLevel::H => "H",
    };
    let expected: BTreeMap<String, String> = [
        ("pass::QR_PREFIX", QR_PREFIX.to_owned()),
        ("pass::FORMAT_VERSION", FORMAT_VERSION.to_string()),
        ("pass::SIGNATURE_DOMAIN", hex::encode(SIGNATURE_DOMAIN)),
        ("ids::KeyId::LEN", KeyId::LEN.to_string()),
        ("pass::HEADER_LEN", HEADER_LEN.to_string()),
        ("pass::SIGNATURE_LEN", SIGNATURE_LEN.to_string()),
        ("pass::HEADER_LEN + 1 + pass::SIGNATURE_LEN", (HEADER_LEN + 1 + SIGNATURE_LEN).to_string()),
        ("pass::MAX_ENVELOPE_LEN", MAX_ENVELOPE_LEN.to_string()),
        ("pass::MAX_QR_TEXT_LEN", {
            assert_eq!(MAX_QR_TEXT_LEN, QR_PREFIX.len() + URL_SAFE_NO_PAD.encode([0u8; MAX_ENVELOPE_LEN]).len());
            MAX_QR_TEXT_LEN.to_string()
        }),
        ("ids::PassId::LEN", PassId::LEN.to_string()),
        ("pass::MAX_VALIDITY", MAX_VALIDITY.num_seconds().to_string()),
        ("pass::Modes::AIR_ONLY.bits()", Modes::AIR_ONLY.bits().to_string()),
        ("pass::Modes::RAIL_ONLY.bits()", Modes::RAIL_ONLY.bits().to_string()),
        ("applicant::HolderName::MAX_LATIN_CHARS", HolderName::MAX_LATIN_CHARS.to_string()),
        ("applicant::HolderName::MAX_CHINESE_CHARS", HolderName::MAX_CHINESE_CHARS.to_string()),
        ("0", "0".to_owned()),
        ("pass::MAX_TIMESTAMP - 1", (MAX_TIMESTAMP - 1).to_string()),
        ("qr::EC_LEVEL", ec_level.to_owned()),
        ("qr::QUIET_ZONE", QUIET_ZONE.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    assert_eq!(documented, expected);
    assert_eq!(SIGNATURE_DOMAIN, b"epass/pass/v1\0");
}

#[test]
fn text_rules_stated_in_doc_hold() {
    let text = example_value("QR text");
    let body = &text[QR_PREFIX.len()..];
    let mut buf = [0u8; MAX_ENVELOPE_LEN];
    let mut check = |t: &str| decode_qr_text(t, &mut buf).map(|_| ());
    let wrap = |envelope: &[u8]| format!("{QR_PREFIX}{}", URL_SAFE_NO_PAD.encode(envelope));

    assert_eq!(check(text), Ok(()));
    for bad_prefix in ["ep1:", "EP2:", "EP1", ""] {
        assert_eq!(check(&format!("{bad_prefix}{body}")), Err(FormatProblem::WrongPrefix), "{bad_prefix}");
    }
    let last = body.len() - 1;
    assert_eq!(&body[last..], "A", "the doc's example changes a final A to B");
    for bad in [
        format!("{text}\n"),
        format!("{text}\r\n"),
        format!("{text}="),
        format!("{text} "),
        format!("{QR_PREFIX} {body}"),
        format!("{QR_PREFIX}{}\n{}", &body[..40], &body[40..]),
        format!("{QR_PREFIX}{}B", &body[..last]),
        format!("{QR_PREFIX}{}", &body[..last - 1]), // length 1 modulo 4
        format!("{QR_PREFIX}+{}", &body[1..]),
        format!("{QR_PREFIX}/{}", &body[1..]),
        format!("{QR_PREFIX}é{}", &body[2..]),
    ] {
        assert_eq!(check(&bad), Err(FormatProblem::BadBase64), "{bad:?}");
    }
    assert_eq!(URL_SAFE_NO_PAD.decode("AQ").unwrap(), [1]);
    assert!(URL_SAFE_NO_PAD.decode("AR").is_err());

    // Lengths: 74 to 400 bytes, version byte 1.
    let envelope = |len: usize| {
        let mut e = vec![0x5a; len];
        e[0] = FORMAT_VERSION;
        e
    };
    assert_eq!(check(&wrap(&envelope(74))), Ok(()));
    assert_eq!(check(&wrap(&envelope(73))), Err(FormatProblem::TooShort { len: 73 }));
    assert_eq!(check(QR_PREFIX), Err(FormatProblem::TooShort { len: 0 }));
    let longest = wrap(&envelope(400));
    assert_eq!(longest.len(), 538);
    assert_eq!(check(&longest), Ok(()));
    for len in [401, 402, 403] {
        let t = wrap(&envelope(len));
        assert!(t.len() > MAX_QR_TEXT_LEN);
        assert_eq!(check(&t), Err(FormatProblem::TooLong { len: t.len() }), "{len} bytes");
    }
    assert_eq!(check(&format!("{QR_PREFIX}{}", "A".repeat(535))), Err(FormatProblem::TooLong { len: 539 }));
    let mut v2 = envelope(74);
    v2[0] = 2;
    assert_eq!(check(&wrap(&v2)), Err(FormatProblem::UnsupportedVersion { version: 2 }));
    let mut v0 = envelope(73);
    v0[0] = 0;
    assert_eq!(check(&wrap(&v0)), Err(FormatProblem::TooShort { len: 73 }), "length is checked before version");
}

#[test]
fn verification_order_stated_in_doc_holds() {
    let example = worked_example();
    let ring = doc_key_ring();
    let envelope = example.pass.envelope().to_vec();
    let now = at(1_772_413_200);
    let wrap = |e: &[u8]| format!("{QR_PREFIX}{}", URL_SAFE_NO_PAD.encode(e));

    // A bit flip anywhere after the key id is a bad signature: the signature is checked first.
    // Each byte gets one flip, at a bit position that moves with the byte.
    for i in HEADER_LEN..envelope.len() {
        let mut e = envelope.clone();
        e[i] ^= 1 << (i % 8);
        let verdict = verify(&wrap(&e), &ring, TransportMode::Air, now).verdict;
        assert_eq!(verdict, Err(Rejection::BadSignature), "byte {i}");
    }
    // A flipped key id names no trusted key.
    let mut e = envelope.clone();
    e[1] ^= 1;
    assert!(matches!(verify(&wrap(&e), &ring, TransportMode::Air, now).verdict, Err(Rejection::UnknownKey { .. })));
    // A different trusted key only.
    let other = KeyRing::new(vec![PassSigner::from_secret_bytes(&[7; 32]).verification_key()]).unwrap();
    let verdict = verify(&example.qr_text, &other, TransportMode::Air, now).verdict;
    assert_eq!(verdict, Err(Rejection::UnknownKey { key_id: example.pass.key_id() }));

    // A correctly signed but invalid payload is bad_format, after the signature (step 4).
    let signer = PassSigner::from_secret_bytes(&SECRET_KEY);
    let mut contents = example.pass.contents().clone();
    contents.entries_allowed = 2;
    let bad = SignedPass::sign(contents, &signer);
    let verdict = verify(&bad.qr_text(), &ring, TransportMode::Air, now).verdict;
    assert_eq!(verdict, Err(Rejection::BadFormat(FormatProblem::BadPayload("entries allowed must be 1"))));
    // ... and before the key's interval (step 5): the interval would also reject it.
    let public_key = signer.public_key();
    let bounded = |from, until| {
        let validity = KeyValidity { from, until, verify_until: None };
        KeyRing::new(vec![VerificationKey::from_public_key(&public_key, KeyStatus::Retired, validity).unwrap()])
            .unwrap()
    };
    let issued = at(1_772_413_200);
    let closed = bounded(None, Some(issued));
    let verdict = verify(&bad.qr_text(), &closed, TransportMode::Air, now).verdict;
    assert!(matches!(verdict, Err(Rejection::BadFormat(_))));

    // Step 5: the key interval applies to issued_at, [from, until), status ignored.
    let key_check = |ring: &KeyRing, now| verify(&example.qr_text, ring, TransportMode::Air, now).verdict;
    assert_eq!(key_check(&bounded(Some(issued), Some(issued + TimeDelta::seconds(1))), now), Ok(()));
    let not_valid = Err(Rejection::KeyNotValid { key_id: example.pass.key_id(), issued_at: issued });
    assert_eq!(key_check(&closed, now), not_valid);
    assert_eq!(key_check(&bounded(Some(issued + TimeDelta::seconds(1)), None), now), not_valid);
    // ... and comes before the window (step 5 before 7).
    assert_eq!(key_check(&closed, at(1_773_018_000)), not_valid);
    // The window comes before the mode (step 7 before 8).
    let verdict = verify(&example.qr_text, &ring, TransportMode::Road, at(1_773_018_000)).verdict;
    assert!(matches!(verdict, Err(Rejection::Expired { .. })));
}

/// An independent encoder of `PassPayload`, written from the document's rules, so the payload
/// rules can be tested byte by byte.
#[derive(Clone)]
struct Payload {
    pass_id: Vec<u8>,
    latin: String,
    chinese: String,
    permit: String,
    issued_at: i64,
    valid_from: i64,
    valid_until: i64,
    modes: u64,
    entries: u64,
}

fn varint(mut v: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

fn len_field(key: u8, bytes: &[u8]) -> Vec<u8> {
    [&[key][..], &varint(bytes.len() as u64), bytes].concat()
}

impl Payload {
    fn example() -> Self {
        Self {
            pass_id: format_example::PASS_ID.to_vec(),
            latin: "CHAN TAI MAN".into(),
            chinese: "陳大文".into(),
            permit: "H12345678".into(),
            issued_at: 1_772_413_200,
            valid_from: 1_772_413_200,
            valid_until: 1_773_018_000,
            modes: 3,
            entries: 1,
        }
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (key, bytes) in [(0x0a, &self.pass_id[..]), (0x12, self.latin.as_bytes()), (0x1a, self.chinese.as_bytes())]
        {
            if !bytes.is_empty() {
                out.extend(len_field(key, bytes));
            }
        }
        if !self.permit.is_empty() {
            out.extend(len_field(0x22, self.permit.as_bytes()));
        }
        for (key, value) in [
            (0x28, self.issued_at as u64),
            (0x30, self.valid_from as u64),
            (0x38, self.valid_until as u64),
            (0x40, self.modes),
            (0x48, self.entries),
        ] {
            if value != 0 {
                out.push(key);
                out.extend(varint(value));
            }
        }
        out
    }

    fn with(&self, change: impl FnOnce(&mut Self)) -> Self {
        let mut p = self.clone();
        change(&mut p);
        p
    }
}

fn accepted(bytes: &[u8]) -> bool {
    match PassContents::from_payload_bytes(bytes) {
        Ok(_) => true,
        Err(FormatProblem::BadPayload(_)) => false,
        Err(other) => panic!("a payload error is always bad_payload, not {other:?}"),
    }
}

#[test]
fn payload_encoding_rules_stated_in_doc_hold() {
    let p = Payload::example();
    let canonical = p.encode();
    assert_eq!(hex::encode(&canonical), example_value("Payload"), "the doc's rules give the example's bytes");
    assert!(accepted(&canonical));

    let splice = |at: usize, remove: usize, insert: &[u8]| {
        let mut b = canonical.clone();
        b.splice(at..at + remove, insert.iter().copied());
        b
    };
    let modes_at = canonical.len() - 4;
    assert_eq!(&canonical[modes_at..], [0x40, 0x03, 0x48, 0x01]);
    let refused: Vec<(&str, Vec<u8>)> = vec![
        ("unknown field 10", [&canonical[..], &[0x50, 0x01]].concat()),
        ("field 0", [&canonical[..], &[0x02, 0x00]].concat()),
        ("trailing zero byte", [&canonical[..], &[0x00]].concat()),
        ("field repeated", [&canonical[..], &[0x48, 0x01]].concat()),
        ("default written out", splice(modes_at, 0, &[0x40, 0x00])),
        ("non-minimal varint", splice(modes_at, 2, &[0x40, 0x83, 0x00])),
        ("uint32 above 2^32", splice(modes_at, 2, &[&[0x40][..], &varint((1 << 32) + 3)].concat())),
        ("wrong wire type", splice(modes_at, 2, &[0x45, 3, 0, 0, 0])),
        ("out of order", [&canonical[..modes_at], &[0x48, 0x01, 0x40, 0x03]].concat()),
        ("non-minimal length", splice(0, 2, &[0x0a, 0x90, 0x00])),
        ("invalid UTF-8", splice(18, 14, &[0x12, 0x01, 0xff])),
        ("truncated", canonical[..canonical.len() - 1].to_vec()),
    ];
    for (what, bytes) in refused {
        assert!(!accepted(&bytes), "{what}: {}", hex::encode(&bytes));
    }
    // Field 1 as a varint is a wire-type error too.
    assert!(!accepted(&splice(0, 18, &[0x08, 0x01])));
}

#[test]
fn payload_validation_rules_stated_in_doc_hold() {
    let p = Payload::example();
    let (min, max) = (0, MAX_TIMESTAMP - 1);
    let week = MAX_VALIDITY.num_seconds();
    let ok: Vec<(&str, Payload)> = vec![
        ("latin only", p.with(|p| p.chinese.clear())),
        ("chinese only", p.with(|p| p.latin.clear())),
        ("latin punctuation", p.with(|p| p.latin = "O'NEIL-SMITH, J.R.".into())),
        ("latin 64 characters", p.with(|p| p.latin = "A".repeat(64))),
        ("latin one letter", p.with(|p| p.latin = "A".into())),
        ("latin word of marks alone", p.with(|p| p.latin = "O'NEIL , J.R.".into())),
        ("latin marks at both ends", p.with(|p| p.latin = "-A.".into())),
        ("chinese leading middle dot", p.with(|p| p.chinese = "·陳".into())),
        ("chinese middle dots in a row", p.with(|p| p.chinese = "陳··大".into())),
        ("chinese one character", p.with(|p| p.chinese = "陳".into())),
        ("middle dot", p.with(|p| p.chinese = "阿卜杜·热合曼".into())),
        ("chinese 20 extension B characters", p.with(|p| p.chinese = "\u{20000}".repeat(20))),
        (
            "each Han range",
            p.with(|p| {
                p.chinese =
                    "\u{3400}\u{4dbf}\u{4e00}\u{9fff}\u{20000}\u{2a6df}\u{2a700}\u{2ee5f}\u{30000}\u{323af}".into()
            }),
        ),
        ("M permit", p.with(|p| p.permit = "M87654321".into())),
        ("10-digit permit", p.with(|p| p.permit = "0123456789".into())),
        ("window of exactly 7 days", p.with(|p| p.valid_until = p.valid_from + week)),
        ("window of 1 second", p.with(|p| p.valid_until = p.valid_from + 1)),
        (
            "valid from after issue",
            p.with(|p| (p.valid_from, p.valid_until) = (p.issued_at + 86_400, p.issued_at + week)),
        ),
        ("earliest time", p.with(|p| (p.issued_at, p.valid_from, p.valid_until) = (min, min, min + 1))),
        ("latest time", p.with(|p| (p.issued_at, p.valid_from, p.valid_until) = (max - 1, max - 1, max))),
        ("issued at zero", p.with(|p| (p.issued_at, p.valid_from, p.valid_until) = (0, 0, 1))),
        ("air only", p.with(|p| p.modes = 1)),
        ("rail only", p.with(|p| p.modes = 2)),
    ];
    for (what, payload) in ok {
        assert!(accepted(&payload.encode()), "{what} should be accepted");
    }

    let refused: Vec<(&str, Payload)> = vec![
        ("pass id 15 bytes", p.with(|p| p.pass_id.truncate(15))),
        ("pass id 17 bytes", p.with(|p| p.pass_id.push(0))),
        ("pass id absent", p.with(|p| p.pass_id.clear())),
        (
            "no name",
            p.with(|p| {
                p.latin.clear();
                p.chinese.clear();
            }),
        ),
        ("latin lower case", p.with(|p| p.latin = "chan tai man".into())),
        ("latin two spaces", p.with(|p| p.latin = "CHAN  TAI MAN".into())),
        ("latin leading space", p.with(|p| p.latin = " CHAN".into())),
        ("latin trailing space", p.with(|p| p.latin = "CHAN ".into())),
        ("latin tab", p.with(|p| p.latin = "CHAN\tTAI".into())),
        ("latin carriage return", p.with(|p| p.latin = "CHAN\rTAI".into())),
        ("latin line feed at the end", p.with(|p| p.latin = "CHAN\n".into())),
        ("latin delete character", p.with(|p| p.latin = "CHAN\u{7f}".into())),
        ("latin no-break space", p.with(|p| p.latin = "CHAN\u{a0}TAI".into())),
        ("latin hyphen alone", p.with(|p| p.latin = "-".into())),
        ("latin two hyphens", p.with(|p| p.latin = "--".into())),
        ("latin hyphen and full stop", p.with(|p| p.latin = "-.".into())),
        ("latin marks and spaces alone", p.with(|p| p.latin = "- ' , .".into())),
        ("chinese middle dot alone", p.with(|p| p.chinese = "·".into())),
        ("chinese two middle dots", p.with(|p| p.chinese = "··".into())),
        ("latin digit", p.with(|p| p.latin = "CHAN 1".into())),
        ("latin non-ASCII", p.with(|p| p.latin = "CHÂN".into())),
        ("latin 65 characters", p.with(|p| p.latin = "A".repeat(65))),
        ("chinese with space", p.with(|p| p.chinese = "陳 大文".into())),
        ("chinese leading space", p.with(|p| p.chinese = " 陳大文".into())),
        ("chinese 21 characters", p.with(|p| p.chinese = "陳".repeat(21))),
        ("chinese with Latin", p.with(|p| p.chinese = "陳A".into())),
        ("chinese katakana middle dot", p.with(|p| p.chinese = "阿卜杜・热合曼".into())),
        ("permit lower case", p.with(|p| p.permit = "h12345678".into())),
        ("permit with space", p.with(|p| p.permit = "H1234 5678".into())),
        ("permit 9 digits", p.with(|p| p.permit = "123456789".into())),
        ("permit other letter", p.with(|p| p.permit = "X12345678".into())),
        ("permit absent", p.with(|p| p.permit.clear())),
        ("before earliest time", p.with(|p| p.issued_at = min - 1)),
        ("after latest time", p.with(|p| p.valid_until = max + 1)),
        ("empty window", p.with(|p| p.valid_until = p.valid_from)),
        ("reversed window", p.with(|p| p.valid_until = p.valid_from - 1)),
        ("window over 7 days", p.with(|p| p.valid_until = p.valid_from + week + 1)),
        (
            "valid until over 7 days after issue",
            p.with(|p| p.valid_from += 1).with(|p| p.valid_until = p.issued_at + week + 1),
        ),
        ("valid from long after issue", p.with(|p| p.issued_at -= 365 * 86_400)),
        ("negative times", p.with(|p| (p.issued_at, p.valid_from, p.valid_until) = (-100, -100, -1))),
        ("compatibility ideograph", p.with(|p| p.chinese = "\u{f900}".into())),
        ("valid before issue", p.with(|p| p.issued_at = p.valid_from + 1)),
        ("no modes", p.with(|p| p.modes = 0)),
        ("unknown mode bit", p.with(|p| p.modes = 4)),
        ("air, rail and more", p.with(|p| p.modes = 7)),
        ("no entries", p.with(|p| p.entries = 0)),
        ("two entries", p.with(|p| p.entries = 2)),
    ];
    for (what, payload) in refused {
        assert!(!accepted(&payload.encode()), "{what} should be refused");
    }
}

#[test]
fn longest_pass_size_stated_in_doc() {
    let signer = PassSigner::from_secret_bytes(&SECRET_KEY);
    let issued_at = Utc.with_ymd_and_hms(2026, 3, 2, 1, 0, 0).unwrap();
    let contents = PassContents {
        pass_id: PassId::from_bytes([0xff; 16]),
        holder: HolderName::parse(&"A".repeat(64), &"\u{20000}".repeat(20)).unwrap(),
        permit: PermitNumber::parse("0123456789").unwrap(),
        issued_at,
        valid_from: issued_at,
        valid_until: issued_at + MAX_VALIDITY,
        modes: Modes::AIR_AND_RAIL,
        entries_allowed: 1,
    };
    let pass = SignedPass::sign(contents, &signer);
    let text = pass.qr_text();
    let symbol = QrSymbol::encode(&text).unwrap();
    let version = symbol.version();
    for stated in [
        format!("{} bytes, QR version {version}, with the longest names allowed", pass.envelope().len()),
        format!("QR text of {} bytes.", text.len()),
        format!(
            "the longest pass the issuer signs ({} bytes, see\n  [The envelope](#the-envelope)) version {version} ({w} × {w} modules)",
            text.len(),
            w = symbol.width()
        ),
    ] {
        assert!(DOC.contains(&stated), "FORMAT.md should say {stated:?}");
    }
    let longest_text = "A".repeat(MAX_QR_TEXT_LEN);
    let stated = format!(
        "the longest text a verifier\n  accepts ({MAX_QR_TEXT_LEN} bytes) version {}",
        version_of(&longest_text).unwrap()
    );
    assert!(DOC.contains(&stated), "FORMAT.md should say {stated:?}");
}

/// The capacity table of *The QR symbol*: version v holds exactly the bytes its row says.
#[test]
fn doc_qr_capacities_match_the_encoder() {
    let mut version = 0;
    for line in section("qr-capacity").lines().skip(2) {
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        assert_eq!(cells.len(), 2, "not a table row: {line:?}");
        for capacity in cells[1].split(", ") {
            version += 1;
            let capacity: usize = capacity.parse().unwrap();
            assert_eq!(version_of(&"A".repeat(capacity)), Ok(version), "{capacity} bytes");
            let one_more = version_of(&"A".repeat(capacity + 1));
            assert!(one_more.is_err() || one_more == Ok(version + 1), "{} bytes", capacity + 1);
        }
    }
    assert_eq!(version, 40);
    assert!(version_of(&"A".repeat(1664)).is_err());
}
