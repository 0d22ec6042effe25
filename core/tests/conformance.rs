//! Offline verification conformance: the checked-in vectors of `core/tests/vectors/` are exactly what
//! `core/examples/gen_vectors.rs` produces, the reference offline verifier gives every case's
//! expected verdict, the online path agrees where it can judge, and docs/FORMAT.md's list
//! sections and rules hold.

#[allow(dead_code)] // The generator's `main` and the writer are not called from here.
#[path = "../examples/gen_vectors.rs"]
mod gen;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, TimeDelta, Utc};
use ed25519_dalek::{Signer as _, SigningKey};
use epass_core::ids::KeyId;
use epass_core::keys::{KeyRing, KeyStatus, KeyValidity, VerificationKey};
use epass_core::offline::{verify_offline, verify_offline_image, OfflineContext, OfflineVerdict};
use epass_core::pass::TransportMode;
use epass_core::qr::{read_image, version_of, PNG_MODULE_PIXELS, QUIET_ZONE};
use epass_core::status::{StatusList, StatusListError};
use epass_core::trust::{TrustList, TrustListError};
use epass_core::verify::{verify_at, CheckTime};
use serde_json::Value;

const DOC: &str = include_str!("../../docs/FORMAT.md");

fn vectors_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors")
}

fn read_tree(dir: &Path, prefix: &str, files: &mut BTreeMap<String, Vec<u8>>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    entries.sort();
    for path in entries {
        let name = format!("{prefix}{}", path.file_name().unwrap().to_str().unwrap());
        if path.is_dir() {
            read_tree(&path, &format!("{name}/"), files);
        } else {
            files.insert(name, std::fs::read(&path).unwrap());
        }
    }
}

#[test]
fn vectors_are_exactly_what_the_generator_writes() {
    let generated = gen::vector_files();
    let mut on_disk = BTreeMap::new();
    read_tree(&vectors_dir(), "", &mut on_disk);
    let missing: Vec<_> = generated.keys().filter(|k| !on_disk.contains_key(*k)).collect();
    let extra: Vec<_> = on_disk.keys().filter(|k| !generated.contains_key(*k)).collect();
    let differing: Vec<_> =
        generated.iter().filter(|(k, v)| on_disk.get(*k).is_some_and(|d| d != *v)).map(|(k, _)| k).collect();
    assert!(
        missing.is_empty() && extra.is_empty() && differing.is_empty(),
        "core/tests/vectors drifted from the generator; run `{}`\nmissing: {missing:?}\nextra: {extra:?}\ndiffering: {differing:?}",
        gen::REGENERATE
    );
}

/// One case as a vendor's verifier would read it: from the files alone.
struct Vector {
    name: String,
    json: Value,
    qr_text: String,
    png: Vec<u8>,
    root: VerificationKey,
    trust_list: Vec<u8>,
    status_list: Option<Vec<u8>>,
    status_deltas: Vec<Vec<u8>>,
    held: Option<u64>,
    held_status: Option<u64>,
    mode: TransportMode,
    time: CheckTime,
}

fn hex_file(dir: &Path, name: &str) -> Vec<u8> {
    let text = std::fs::read_to_string(dir.join(name)).unwrap();
    let line = text.strip_suffix('\n').unwrap_or_else(|| panic!("{name} ends with a line feed"));
    hex::decode(line).unwrap_or_else(|e| panic!("{}/{name}: {e}", dir.display()))
}

fn mode_named(name: &str) -> TransportMode {
    use TransportMode::*;
    [Air, Rail, Road, Sea, Foot].into_iter().find(|m| m.name() == name).unwrap_or_else(|| panic!("mode {name}"))
}

fn vectors() -> Vec<Vector> {
    let mut dirs: Vec<_> =
        std::fs::read_dir(vectors_dir()).unwrap().map(|e| e.unwrap().path()).filter(|p| p.is_dir()).collect();
    dirs.sort();
    dirs.into_iter()
        .map(|dir| {
            let name = dir.file_name().unwrap().to_str().unwrap().to_owned();
            let json: Value = serde_json::from_slice(&std::fs::read(dir.join("case.json")).unwrap()).unwrap();
            let root: [u8; 32] = hex_file(&dir, "root-public-key.hex").try_into().unwrap();
            let trust_list = std::fs::read(dir.join("trust-list.bin")).unwrap();
            assert_eq!(hex_file(&dir, "trust-list.hex"), trust_list, "{name}: trust-list.hex");
            let status_list = std::fs::read(dir.join("status-list.bin")).ok();
            if let Some(list) = &status_list {
                assert_eq!(&hex_file(&dir, "status-list.hex"), list, "{name}: status-list.hex");
            }
            let status_deltas: Vec<Vec<u8>> = json["status_deltas"]
                .as_array()
                .unwrap()
                .iter()
                .map(|file| {
                    let file = file.as_str().unwrap();
                    let bytes = std::fs::read(dir.join(file)).unwrap();
                    let hex_name = file.replace(".bin", ".hex");
                    assert_eq!(hex_file(&dir, &hex_name), bytes, "{name}: {hex_name}");
                    bytes
                })
                .collect();
            assert!(status_deltas.is_empty() || status_list.is_some(), "{name}: deltas without a list");
            let now_seconds = json["now_seconds"].as_i64().unwrap();
            let now = DateTime::from_timestamp(now_seconds, 0).unwrap();
            assert_eq!(json["now"].as_str().unwrap(), now.format("%Y-%m-%dT%H:%M:%SZ").to_string(), "{name}: now");
            let tolerance = TimeDelta::seconds(json["clock_tolerance_seconds"].as_i64().unwrap());
            Vector {
                qr_text: String::from_utf8(std::fs::read(dir.join("qr.txt")).unwrap()).unwrap(),
                png: std::fs::read(dir.join("qr.png")).unwrap(),
                root: VerificationKey::from_public_key(&root, KeyStatus::Active, KeyValidity::UNBOUNDED).unwrap(),
                trust_list,
                status_list,
                status_deltas,
                held: json["held_trust_sequence"].as_u64(),
                held_status: json.get("held_status_sequence").map(|s| s.as_u64().unwrap()),
                mode: mode_named(json["mode"].as_str().unwrap()),
                time: CheckTime { now, tolerance },
                json,
                name,
            }
        })
        .collect()
}

impl Vector {
    fn context<'a>(&'a self, deltas: &'a [&'a [u8]]) -> OfflineContext<'a> {
        OfflineContext {
            root_key: &self.root,
            trust_list: &self.trust_list,
            held_trust_sequence: self.held,
            status_list: self.status_list.as_deref(),
            status_deltas: deltas,
            held_status_sequence: self.held_status,
            mode: self.mode,
            time: self.time,
        }
    }

    fn expected(&self, field: &str) -> Option<&str> {
        self.json["expected"].get(field).map(|v| v.as_str().unwrap_or_else(|| panic!("{}: {field}", self.name)))
    }

    fn check(&self, verdict: &OfflineVerdict, how: &str) {
        let (outcome, reason, problem) = gen::outcome_names(&verdict.outcome);
        let name = &self.name;
        assert_eq!(Some(outcome), self.expected("outcome"), "{name} ({how}): outcome, verdict {verdict:?}");
        assert_eq!(reason, self.expected("reason"), "{name} ({how}): reason, verdict {verdict:?}");
        assert_eq!(problem, self.expected("format_problem"), "{name} ({how}): format problem, verdict {verdict:?}");
        let status = gen::status_check_name(&verdict.status);
        assert_eq!(Some(status), self.expected("status"), "{name} ({how}): status, verdict {verdict:?}");
    }
}

#[test]
fn every_case_gives_its_expected_offline_verdict() {
    let vectors = vectors();
    assert_eq!(vectors.len(), gen::cases(&gen::Keys::new()).len(), "one folder per case");
    for vector in &vectors {
        let deltas: Vec<&[u8]> = vector.status_deltas.iter().map(Vec::as_slice).collect();
        let verdict = verify_offline(&vector.qr_text, &vector.context(&deltas));
        vector.check(&verdict, "qr.txt");
        // The QR symbol carries exactly the text, and verifying the image gives the same verdict.
        assert_eq!(read_image(&vector.png).unwrap(), vector.qr_text, "{}: qr.png", vector.name);
        // In the version docs/FORMAT.md gives the text's length, read off the image's size.
        let side = png::Decoder::new(std::io::Cursor::new(&vector.png)).read_info().unwrap().info().width as usize;
        let modules = side / PNG_MODULE_PIXELS - 2 * QUIET_ZONE;
        assert_eq!(Ok((modules as u32 - 17) / 4), version_of(&vector.qr_text), "{}: qr.png version", vector.name);
        let from_image = verify_offline_image(&vector.png, &vector.context(&deltas)).unwrap();
        assert_eq!(from_image, verdict, "{}: qr.png", vector.name);
        if verdict.pass.is_some() {
            assert_eq!(verdict.trust_sequence, Some(gen::TRUST_SEQUENCE), "{}", vector.name);
        }
    }
}

/// Regression (issue 10, point 12): every `qr.png` keeps the full 4-module quiet zone, light on
/// all four sides, and the symbol starts right inside it (its three finder patterns' outer
/// corners are dark): no cropping, no extra margin a reader could take for part of the symbol.
#[test]
fn every_png_keeps_the_full_quiet_zone() {
    let margin = QUIET_ZONE * PNG_MODULE_PIXELS;
    for vector in vectors() {
        let image = image::load_from_memory(&vector.png).unwrap().to_luma8();
        let (width, height) = (image.width() as usize, image.height() as usize);
        assert_eq!(width, height, "{}: square", vector.name);
        assert_eq!(width % PNG_MODULE_PIXELS, 0, "{}: whole modules", vector.name);
        let dark = |x: usize, y: usize| image.get_pixel(x as u32, y as u32).0[0] < 128;
        for y in 0..height {
            for x in 0..width {
                let in_quiet_zone = x < margin || y < margin || x >= width - margin || y >= height - margin;
                if in_quiet_zone {
                    assert!(!dark(x, y), "{}: pixel ({x}, {y}) of the quiet zone is dark", vector.name);
                }
            }
        }
        let last = width - margin - 1;
        for (x, y) in [(margin, margin), (last, margin), (margin, last)] {
            assert!(dark(x, y), "{}: a finder pattern's corner ({x}, {y}) is not dark", vector.name);
        }
    }
}

/// Issue 10, point 8: the provisioning file FORMAT.md shows for the vectors' root key is the
/// SPKI PEM of that key (fixed 12-byte DER prefix, then the 32 bytes).
#[test]
fn doc_root_public_key_pem_is_the_vectors_root_key() {
    use base64::Engine as _;
    let public = gen::Keys::new().root.public_key();
    let der = [&[0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00][..], &public].concat();
    let pem = format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----",
        base64::engine::general_purpose::STANDARD.encode(&der)
    );
    assert!(DOC.contains(&pem), "FORMAT.md should show:\n{pem}");
    assert!(DOC.contains(&hex::encode(&der[..12])), "FORMAT.md should give the DER prefix");
    let vector_hex = std::fs::read_to_string(vectors_dir().join("valid-air/root-public-key.hex")).unwrap();
    assert_eq!(vector_hex.trim(), hex::encode(public));
}

/// The vectors name only `unusable`; the reference verifier's reason for it must be the rollback.
#[test]
fn status_list_rollback_is_reported_as_such() {
    let vector = vectors().into_iter().find(|v| v.name == "status-list-rollback").unwrap();
    let verdict = verify_offline(&vector.qr_text, &vector.context(&[]));
    let received = gen::STATUS_SEQUENCE;
    let expected = StatusListError::Rollback { held: received + 2, received };
    assert_eq!(verdict.status, epass_core::offline::StatusCheck::Unusable(expected), "{verdict:?}");
}

/// The online `VerifyPass` runs `verify::verify_at` with the key ring of the server's trust list,
/// then adds revocation and use from its database. So wherever neither list decides, the online
/// path must give the offline reason (with the same clock and tolerance; the server's own
/// tolerance is zero).
#[test]
fn online_path_agrees_wherever_it_can_judge() {
    let mut compared = 0;
    for vector in vectors() {
        let outcome = vector.expected("outcome").unwrap();
        let reason = vector.expected("reason");
        if outcome == "cannot_decide" || matches!(reason, Some("revoked" | "already_used")) {
            continue;
        }
        let trust = TrustList::open(&vector.trust_list, &vector.root).unwrap();
        let ring = trust.key_ring().unwrap();
        let online = verify_at(&vector.qr_text, &ring, vector.mode, vector.time);
        let online_reason = online.verdict.as_ref().err().map(|r| r.reason().as_str());
        assert_eq!(online_reason, reason, "{}: online {:?}", vector.name, online.verdict);
        let deltas: Vec<&[u8]> = vector.status_deltas.iter().map(Vec::as_slice).collect();
        let offline = verify_offline(&vector.qr_text, &vector.context(&deltas));
        assert_eq!(online.pass, offline.pass, "{}: the same pass is shown", vector.name);
        compared += 1;
    }
    assert!(compared >= 50, "only {compared} cases compared");
}

/// The text between `<!-- {name}:begin -->` and `<!-- {name}:end -->`.
fn section(name: &str) -> &'static str {
    let begin = format!("<!-- {name}:begin -->\n");
    let end = format!("<!-- {name}:end -->");
    let start = DOC.find(&begin).unwrap_or_else(|| panic!("FORMAT.md lacks {begin:?}")) + begin.len();
    let len = DOC[start..].find(&end).unwrap_or_else(|| panic!("FORMAT.md lacks {end:?}"));
    &DOC[start..start + len]
}

#[test]
fn doc_list_sections_are_what_the_generator_prints() {
    for (name, markdown) in gen::doc_sections() {
        assert_eq!(
            section(name),
            markdown,
            "paste the output of `cargo run --example gen_vectors -- --doc` into FORMAT.md ({name})"
        );
    }
    assert!(DOC.contains("| `key_revoked` | 11 |"), "the rejection table names key_revoked = 11");
}

// An independent encoder of the lists, written from the field tables of FORMAT.md.

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A varint field, left out when zero (the proto3 default).
fn num(key: u8, value: i64, out: &mut Vec<u8>) {
    if value != 0 {
        out.push(key);
        varint(value as u64, out);
    }
}

/// A length-delimited field, left out when empty unless `always` (messages in a repeated field).
fn len(key: u8, bytes: &[u8], always: bool, out: &mut Vec<u8>) {
    if always || !bytes.is_empty() {
        out.push(key);
        varint(bytes.len() as u64, out);
        out.extend_from_slice(bytes);
    }
}

#[derive(Clone)]
struct Key {
    public_key: Vec<u8>,
    status: i64,
    sign_from: i64,
    sign_until: i64,
    verify_until: i64,
}

#[derive(Clone)]
struct Trust {
    sequence: i64,
    issued_at: i64,
    stale_after: i64,
    keys: Vec<Key>,
}

impl Trust {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        num(0x08, self.sequence, &mut out);
        num(0x10, self.issued_at, &mut out);
        num(0x18, self.stale_after, &mut out);
        for k in &self.keys {
            let mut key = Vec::new();
            len(0x0a, &k.public_key, false, &mut key);
            num(0x10, k.status, &mut key);
            num(0x18, k.sign_from, &mut key);
            num(0x20, k.sign_until, &mut key);
            num(0x28, k.verify_until, &mut key);
            len(0x22, &key, true, &mut out);
        }
        out
    }

    fn with(&self, change: impl FnOnce(&mut Self)) -> Self {
        let mut t = self.clone();
        change(&mut t);
        t
    }
}

#[derive(Clone)]
struct Entry {
    pass_id: Vec<u8>,
    state: i64,
    valid_until: i64,
    at: i64,
    checkpoint_id: String,
    mode: i64,
}

#[derive(Clone)]
struct Status {
    sequence: i64,
    issued_at: i64,
    stale_after: i64,
    base_sequence: i64,
    entries: Vec<Entry>,
}

impl Status {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        num(0x08, self.sequence, &mut out);
        num(0x10, self.issued_at, &mut out);
        num(0x18, self.stale_after, &mut out);
        num(0x20, self.base_sequence, &mut out);
        for e in &self.entries {
            let mut entry = Vec::new();
            len(0x0a, &e.pass_id, false, &mut entry);
            num(0x10, e.state, &mut entry);
            num(0x18, e.valid_until, &mut entry);
            num(0x20, e.at, &mut entry);
            len(0x2a, e.checkpoint_id.as_bytes(), false, &mut entry);
            num(0x30, e.mode, &mut entry);
            len(0x2a, &entry, true, &mut out);
        }
        out
    }

    fn with(&self, change: impl FnOnce(&mut Self)) -> Self {
        let mut s = self.clone();
        change(&mut s);
        s
    }
}

/// `01 ║ key id ║ payload ║ Ed25519(domain ║ 01 ║ key id ║ payload)`, as FORMAT.md frames lists.
fn frame(secret: &[u8; 32], domain: &[u8], payload: &[u8]) -> Vec<u8> {
    let key = SigningKey::from_bytes(secret);
    let key_id = KeyId::of_public_key(key.verifying_key().as_bytes());
    let mut out = vec![1];
    out.extend_from_slice(key_id.as_bytes());
    out.extend_from_slice(payload);
    let signature = key.sign(&[domain, &out].concat());
    out.extend_from_slice(&signature.to_bytes());
    out
}

fn public(secret: &[u8; 32]) -> Vec<u8> {
    SigningKey::from_bytes(secret).verifying_key().to_bytes().to_vec()
}

fn documented_trust_list() -> Trust {
    use gen::{OLD_SECRET, ROTATION, TRUST_STALE_AFTER};
    let (day, week) = (86_400, 604_800);
    Trust {
        sequence: 42,
        issued_at: ROTATION,
        stale_after: TRUST_STALE_AFTER,
        keys: vec![
            Key {
                public_key: public(&gen::CURRENT_SECRET),
                status: 1,
                sign_from: ROTATION,
                sign_until: ROTATION + 365 * day,
                verify_until: ROTATION + 365 * day + week,
            },
            Key {
                public_key: public(&OLD_SECRET),
                status: 2,
                sign_from: ROTATION - 365 * day,
                sign_until: ROTATION,
                verify_until: ROTATION + week,
            },
            Key {
                public_key: public(&gen::REVOKED_SECRET),
                status: 3,
                sign_from: ROTATION - 180 * day,
                sign_until: ROTATION + 185 * day,
                verify_until: ROTATION + 185 * day + week,
            },
        ],
    }
}

fn documented_status_list() -> Status {
    use gen::{ISSUED, NOW, VALID_UNTIL};
    let entry = |pass: [u8; 16], state, at, checkpoint_id: &str, mode| Entry {
        pass_id: pass.to_vec(),
        state,
        valid_until: VALID_UNTIL,
        at,
        checkpoint_id: checkpoint_id.to_owned(),
        mode,
    };
    Status {
        sequence: 7,
        issued_at: NOW - 600,
        stale_after: NOW - 600 + 3600,
        base_sequence: 0,
        entries: vec![
            entry(gen::REVOKED_PASS, 1, ISSUED + 600, "", 0),
            entry(gen::USED_PASS, 2, ISSUED + 1800, "WKL-RAIL-01", 2),
            entry(gen::USED_AND_REVOKED_PASS, 2, ISSUED + 3600, "HKG-AIR-03", 1),
            entry(gen::USED_AND_REVOKED_PASS, 1, ISSUED + 7200, "", 0),
        ],
    }
}

#[test]
fn lists_follow_the_documented_encoding_byte_for_byte() {
    let dir = vectors_dir().join("valid-air");
    let trust = frame(&gen::ROOT_SECRET, b"epass/trust-list/v1\0", &documented_trust_list().encode());
    assert_eq!(std::fs::read(dir.join("trust-list.bin")).unwrap(), trust);
    let status = frame(&gen::CURRENT_SECRET, b"epass/status-list/v1\0", &documented_status_list().encode());
    assert_eq!(std::fs::read(dir.join("status-list.bin")).unwrap(), status);
}

fn at(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(secs, 0).unwrap()
}

fn root() -> VerificationKey {
    let key = public(&gen::ROOT_SECRET).try_into().unwrap();
    VerificationKey::from_public_key(&key, KeyStatus::Active, KeyValidity::UNBOUNDED).unwrap()
}

fn open_trust(payload: &[u8]) -> Result<TrustList, TrustListError> {
    TrustList::open(&frame(&gen::ROOT_SECRET, b"epass/trust-list/v1\0", payload), &root())
}

#[test]
fn trust_list_rules_stated_in_doc_hold() {
    let base = documented_trust_list();
    let max = (1i64 << 32) - 1;
    let ok: Vec<(&str, Trust)> = vec![
        ("the documented list", base.clone()),
        ("no keys", base.with(|t| t.keys.clear())),
        ("sequence 0", base.with(|t| t.sequence = 0)),
        ("issued at 0", base.with(|t| t.issued_at = 0)),
        ("stale after the latest time", base.with(|t| t.stale_after = max)),
        ("sign_from 0 (field absent)", base.with(|t| t.keys[1].sign_from = 0)),
        ("verify_until equal to sign_until", base.with(|t| t.keys[0].verify_until = t.keys[0].sign_until)),
        ("sign period of 1 second", base.with(|t| t.keys[0].sign_until = t.keys[0].sign_from + 1)),
        ("stale 1 second after issue", base.with(|t| t.stale_after = t.issued_at + 1)),
    ];
    for (what, list) in ok {
        assert!(open_trust(&list.encode()).is_ok(), "{what} should open");
    }
    let mut identity = vec![0u8; 32];
    identity[0] = 1;
    let refused: Vec<(&str, Vec<u8>)> = vec![
        ("issued_at negative", base.with(|t| t.issued_at = -1).encode()),
        ("stale_after 2^32", base.with(|t| t.stale_after = max + 1).encode()),
        ("stale_after equal to issued_at", base.with(|t| t.stale_after = t.issued_at).encode()),
        ("stale_after before issued_at", base.with(|t| t.stale_after = t.issued_at - 1).encode()),
        ("public key 31 bytes", base.with(|t| t.keys[0].public_key.truncate(31)).encode()),
        ("public key absent", base.with(|t| t.keys[0].public_key.clear()).encode()),
        ("public key of small order", base.with(|t| t.keys[0].public_key = identity.clone()).encode()),
        ("status 0 (absent)", base.with(|t| t.keys[0].status = 0).encode()),
        ("status 4", base.with(|t| t.keys[0].status = 4).encode()),
        ("sign_from equal to sign_until", base.with(|t| t.keys[0].sign_from = t.keys[0].sign_until).encode()),
        ("verify_until before sign_until", base.with(|t| t.keys[0].verify_until = t.keys[0].sign_until - 1).encode()),
        ("verify_until 2^32", base.with(|t| t.keys[0].verify_until = max + 1).encode()),
        ("sign_from negative", base.with(|t| t.keys[0].sign_from = -1).encode()),
        ("a key twice", base.with(|t| t.keys.push(t.keys[0].clone())).encode()),
        (
            "the root key as a pass-signing key",
            base.with(|t| t.keys.push(Key { public_key: public(&gen::ROOT_SECRET), ..t.keys[1].clone() })).encode(),
        ),
        ("unknown field 5", [base.encode(), vec![0x28, 0x01]].concat()),
        ("default written out", [vec![0x08, 0x00], base.with(|t| t.sequence = 0).encode()].concat()),
        ("fields out of order", {
            let t = base.with(|t| t.keys.clear()).encode();
            [&t[2..], &t[..2]].concat()
        }),
        ("keys before stale_after", {
            let no_keys = base.with(|t| t.keys.clear()).encode();
            let all = base.encode();
            let stale = &no_keys[8..];
            assert_eq!(stale[0], 0x18);
            [&no_keys[..8], &all[no_keys.len()..], stale].concat()
        }),
        ("non-minimal varint", [vec![0x08, 0xaa, 0x00], base.encode()[2..].to_vec()].concat()),
    ];
    for (what, payload) in refused {
        assert!(
            matches!(open_trust(&payload), Err(TrustListError::Malformed(_))),
            "{what}: {:?}",
            open_trust(&payload)
        );
    }
    // Framing.
    let good = frame(&gen::ROOT_SECRET, b"epass/trust-list/v1\0", &base.encode());
    let mut v2 = good.clone();
    v2[0] = 2;
    assert!(matches!(TrustList::open(&v2, &root()), Err(TrustListError::Malformed(_))), "version 2");
    let mut other_id = good.clone();
    other_id[1] ^= 1;
    assert!(matches!(TrustList::open(&other_id, &root()), Err(TrustListError::WrongRootKey { .. })));
    let wrong_domain = frame(&gen::ROOT_SECRET, b"epass/status-list/v1\0", &base.encode());
    assert_eq!(TrustList::open(&wrong_domain, &root()), Err(TrustListError::BadSignature), "the domain is signed");
    // Sizes: 73 bytes to 16 MiB; framing is checked before the signature.
    let sized = |len: usize| {
        let mut bytes = vec![0u8; len];
        bytes[0] = epass_core::trust::LIST_FORMAT_VERSION;
        bytes[1..9].copy_from_slice(root().key_id().as_bytes());
        TrustList::open(&bytes, &root())
    };
    assert_eq!(sized(72), Err(TrustListError::Malformed("list is too short")));
    assert_eq!(sized(73), Err(TrustListError::BadSignature));
    assert_eq!(sized(gen::MAX_LIST_LEN), Err(TrustListError::BadSignature));
    assert_eq!(sized(gen::MAX_LIST_LEN + 1), Err(TrustListError::Malformed("list is too long")));

    // Rollback, then staleness; both against the exact clock.
    let list = open_trust(&base.encode()).unwrap();
    let stale_after = at(base.stale_after);
    assert_eq!(list.check_current(Some(42), stale_after), Ok(()));
    assert_eq!(list.check_current(Some(41), stale_after), Ok(()));
    assert_eq!(
        list.check_current(None, stale_after + TimeDelta::seconds(1)),
        Err(TrustListError::Stale { stale_after })
    );
    assert_eq!(
        list.check_current(Some(43), stale_after + TimeDelta::seconds(1)),
        Err(TrustListError::Rollback { held: 43, received: 42 }),
        "rollback is reported before staleness"
    );
}

fn ring() -> KeyRing {
    TrustList::open(&frame(&gen::ROOT_SECRET, b"epass/trust-list/v1\0", &documented_trust_list().encode()), &root())
        .unwrap()
        .key_ring()
        .unwrap()
}

#[test]
fn status_list_rules_stated_in_doc_hold() {
    let base = documented_status_list();
    let now = at(gen::NOW);
    let open = |secret: &[u8; 32], payload: &[u8], now| {
        StatusList::open(&frame(secret, b"epass/status-list/v1\0", payload), &ring(), now)
    };
    let current = &gen::CURRENT_SECRET;
    let max = (1i64 << 32) - 1;
    let ok: Vec<(&str, Status)> = vec![
        ("the documented list", base.clone()),
        ("no entries", base.with(|s| s.entries.clear())),
        ("a delta", base.with(|s| s.base_sequence = 5)),
        (
            "an empty delta with base_sequence equal to sequence",
            base.with(|s| s.base_sequence = s.sequence).with(|s| s.entries.clear()),
        ),
        ("the empty journal: sequence 0, no entries", base.with(|s| s.sequence = 0).with(|s| s.entries.clear())),
        ("used with an empty checkpoint id", base.with(|s| s.entries[1].checkpoint_id.clear())),
        ("the same entry twice", base.with(|s| s.entries.push(s.entries[0].clone()))),
        ("entry times at the latest time", base.with(|s| (s.entries[0].at, s.entries[0].valid_until) = (max, max))),
    ];
    for (what, list) in ok {
        assert!(open(current, &list.encode(), now).is_ok(), "{what} should open");
    }
    let refused: Vec<(&str, Status)> = vec![
        ("revoked with mode air", base.with(|s| s.entries[0].mode = 1)),
        ("revoked with a checkpoint id", base.with(|s| s.entries[0].checkpoint_id = "X".into())),
        ("used with mode 0", base.with(|s| s.entries[1].mode = 0)),
        ("used with mode 3", base.with(|s| s.entries[1].mode = 3)),
        ("state 0", base.with(|s| s.entries[0].state = 0)),
        ("state 3", base.with(|s| (s.entries[0].state, s.entries[0].mode) = (3, 0))),
        ("pass id 15 bytes", base.with(|s| s.entries[0].pass_id.truncate(15))),
        ("entry at negative", base.with(|s| s.entries[0].at = -1)),
        ("entry valid_until 2^32", base.with(|s| s.entries[0].valid_until = max + 1)),
        ("stale_after equal to issued_at", base.with(|s| s.stale_after = s.issued_at)),
        ("issued_at 2^32", base.with(|s| s.issued_at = max + 1)),
        ("base_sequence after sequence", base.with(|s| s.base_sequence = s.sequence + 1)),
        ("entries with base_sequence equal to sequence", base.with(|s| s.base_sequence = s.sequence)),
        ("entries at sequence 0", base.with(|s| s.sequence = 0)),
    ];
    for (what, list) in refused {
        let result = open(current, &list.encode(), now);
        assert!(matches!(result, Err(StatusListError::Malformed(_))), "{what}: {result:?}");
    }
    let unknown_field = [base.encode(), vec![0x30, 0x01]].concat();
    assert!(matches!(open(current, &unknown_field, now), Err(StatusListError::Malformed(_))));

    // The signing key: a pass-signing key of the trust list, not revoked, before its verify_until.
    let payload = base.encode();
    assert!(open(&gen::OLD_SECRET, &payload, now).is_ok(), "a retired key in its verification period");
    let old_verify_until = at(gen::ROTATION + 604_800);
    assert!(open(&gen::OLD_SECRET, &payload, old_verify_until - TimeDelta::seconds(1)).is_ok());
    assert!(matches!(open(&gen::OLD_SECRET, &payload, old_verify_until), Err(StatusListError::KeyNotTrusted { .. })));
    assert!(matches!(open(&gen::REVOKED_SECRET, &payload, now), Err(StatusListError::KeyNotTrusted { .. })));
    assert!(matches!(open(&gen::ROOT_SECRET, &payload, now), Err(StatusListError::UnknownKey { .. })));
    let wrong_domain = frame(current, b"epass/trust-list/v1\0", &payload);
    assert_eq!(StatusList::open(&wrong_domain, &ring(), now), Err(StatusListError::BadSignature));

    // Staleness: stale only when now > stale_after.
    let list = open(current, &payload, now).unwrap();
    assert!(!list.is_stale(at(base.stale_after)));
    assert!(list.is_stale(at(base.stale_after + 1)));

    // Deltas apply only on top of the sequence they name, and carry the delta's times.
    let mut full = list.clone();
    let delta = open(
        current,
        &base.with(|s| (s.sequence, s.base_sequence, s.stale_after) = (9, 6, s.stale_after + 60)).encode(),
        now,
    )
    .unwrap();
    assert_eq!(full.apply(delta), Err(StatusListError::DeltaMismatch { base: 6, held: 7 }));
    let delta = base.with(|s| {
        (s.sequence, s.base_sequence, s.stale_after) = (9, 7, s.stale_after + 60);
        s.entries.truncate(1);
    });
    full.apply(open(current, &delta.encode(), now).unwrap()).unwrap();
    assert_eq!((full.sequence, full.stale_after, full.entries.len()), (9, at(delta.stale_after), 5));
}

#[test]
fn list_constants_in_doc_match_the_code() {
    let table = section("list-constants");
    let value = |code: &str| {
        let line = table.lines().find(|l| l.ends_with(&format!("| `{code}` |"))).unwrap_or_else(|| panic!("{code}"));
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        cells[1].trim_matches('`').to_owned()
    };
    assert_eq!(value("trust::TRUST_LIST_DOMAIN"), hex::encode(epass_core::trust::TRUST_LIST_DOMAIN));
    assert_eq!(value("status::STATUS_LIST_DOMAIN"), hex::encode(epass_core::status::STATUS_LIST_DOMAIN));
    assert_eq!(value("pass::MAX_TIMESTAMP - 1"), (epass_core::pass::MAX_TIMESTAMP - 1).to_string());
    assert_eq!(value("trust::LIST_FORMAT_VERSION"), epass_core::trust::LIST_FORMAT_VERSION.to_string());
    assert_eq!(value("trust::TRUST_LIST_LIFETIME"), epass_core::trust::TRUST_LIST_LIFETIME.num_seconds().to_string());
    assert_eq!(value("trust::SIGNING_PERIOD"), epass_core::trust::SIGNING_PERIOD.num_seconds().to_string());
}
