//! Builds the worked example of docs/FORMAT.md with the core API and prints it as the Markdown
//! that goes into that document: `cargo run -p epass-core --example format_example`.
//!
//! `core/tests/format_doc.rs` includes this file and checks that the document contains exactly this
//! output, so the document cannot drift from the code.

use std::fmt::Write as _;

use chrono::{DateTime, TimeZone as _, Utc};
use epass_core::applicant::{HolderName, PermitNumber};
use epass_core::ids::PassId;
use epass_core::keys::PassSigner;
use epass_core::pass::{Modes, PassContents, SignedPass, HEADER_LEN, MAX_VALIDITY, SIGNATURE_DOMAIN, SIGNATURE_LEN};
use epass_core::policy::china_standard_time;
use epass_core::qr::QrSymbol;
use sha2::{Digest as _, Sha256};

/// The example's Ed25519 secret key: the bytes 0x00, 0x01, ..., 0x1f.
pub const SECRET_KEY: [u8; 32] = {
    let mut key = [0u8; 32];
    let mut i = 0;
    while i < 32 {
        key[i] = i as u8;
        i += 1;
    }
    key
};

/// The example's pass id.
pub const PASS_ID: [u8; 16] =
    [0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff];

/// Every value of the worked example.
pub struct WorkedExample {
    /// The signed pass itself.
    pub pass: SignedPass,
    /// The 32-byte public key.
    pub public_key: [u8; 32],
    /// Domain prefix, header and payload: the bytes the signature covers.
    pub signed_message: Vec<u8>,
    /// The QR text.
    pub qr_text: String,
    /// The QR symbol version at level Q.
    pub qr_version: u32,
    /// Modules per side of that symbol.
    pub qr_width: usize,
    /// The mask pattern the penalty rules chose.
    pub qr_mask: u8,
}

/// Builds the worked example. Ed25519 signatures are deterministic, so every run gives the
/// same bytes.
pub fn worked_example() -> WorkedExample {
    let signer = PassSigner::from_secret_bytes(&SECRET_KEY);
    // 09:00 China Standard Time on 2 March 2026.
    let issued_at = Utc.with_ymd_and_hms(2026, 3, 2, 1, 0, 0).single().expect("a valid UTC time");
    let contents = PassContents {
        pass_id: PassId::from_bytes(PASS_ID),
        holder: HolderName::parse("CHAN TAI MAN", "陳大文").expect("a valid name"),
        permit: PermitNumber::parse("H12345678").expect("a valid permit number"),
        issued_at,
        valid_from: issued_at,
        valid_until: issued_at + MAX_VALIDITY,
        modes: Modes::AIR_AND_RAIL,
        entries_allowed: 1,
    };
    let pass = SignedPass::sign(contents, &signer);
    let envelope = pass.envelope();
    let mut signed_message = SIGNATURE_DOMAIN.to_vec();
    signed_message.extend_from_slice(&envelope[..envelope.len() - SIGNATURE_LEN]);
    let qr_text = pass.qr_text();
    let symbol = QrSymbol::encode(&qr_text).expect("the pass fits a QR code");
    let (qr_version, qr_width, qr_mask) = (symbol.version(), symbol.width(), symbol.mask());
    WorkedExample { public_key: signer.public_key(), signed_message, qr_text, qr_version, qr_width, qr_mask, pass }
}

impl WorkedExample {
    /// The payload bytes.
    pub fn payload(&self) -> &[u8] {
        let envelope = self.pass.envelope();
        &envelope[HEADER_LEN..envelope.len() - SIGNATURE_LEN]
    }

    /// The example as it appears in docs/FORMAT.md.
    pub fn markdown(&self) -> String {
        let c = self.pass.contents();
        let envelope = self.pass.envelope();
        let mut md = String::new();
        let mut line = |s: String| {
            md.push_str(&s);
            md.push('\n');
        };
        line("Inputs:".into());
        line(String::new());
        line(format!("- Secret key (32 bytes, 0x00 to 0x1f): `{}`", hex::encode(SECRET_KEY)));
        line(format!("- Pass id: `{}`", c.pass_id));
        line(format!(
            "- Holder: `{}` / `{}`, permit `{}`",
            c.holder.latin().unwrap_or_default(),
            c.holder.chinese().unwrap_or_default(),
            c.permit.as_str()
        ));
        line(format!("- Issued at and valid from: {}", time_text(c.issued_at)));
        line(format!("- Valid until (exclusive): {}", time_text(c.valid_until)));
        line(format!("- Modes: air and rail (bits `{}`), entries allowed: {}", c.modes.bits(), c.entries_allowed));
        line(String::new());
        line("Outputs (hex is lower case, one value per line):".into());
        line(String::new());
        line(format!("- Public key: `{}`", hex::encode(self.public_key)));
        line(format!("- SHA-256 of the public key: `{}`", hex::encode(Sha256::digest(self.public_key))));
        line(format!("- Key id (its first 8 bytes): `{}`", self.pass.key_id()));
        line(format!("- Payload ({} bytes): `{}`", self.payload().len(), hex::encode(self.payload())));
        line(format!(
            "- Signed message ({} bytes: domain, version, key id, payload): `{}`",
            self.signed_message.len(),
            hex::encode(&self.signed_message)
        ));
        line(format!("- Signature (64 bytes): `{}`", hex::encode(self.pass.signature())));
        line(format!("- Envelope ({} bytes): `{}`", envelope.len(), hex::encode(envelope)));
        line(format!("- QR text ({} characters): `{}`", self.qr_text.len(), self.qr_text));
        line(format!(
            "- QR symbol at level Q: version {} ({w} × {w} modules), one byte-mode segment, mask pattern `{:03b}`",
            self.qr_version,
            self.qr_mask,
            w = self.qr_width
        ));
        line(String::new());
        line("The payload, field by field:".into());
        line(String::new());
        line("| Offset | Key | Field (wire type) | Length | Value bytes | Value |".into());
        line("|---:|---|---|---|---|---|".into());
        for row in payload_rows(self.payload()) {
            line(row);
        }
        md
    }
}

fn time_text(t: DateTime<Utc>) -> String {
    let cst = t.with_timezone(&china_standard_time());
    format!(
        "{} = `{}` seconds since the Unix epoch ({} China Standard Time)",
        t.format("%Y-%m-%dT%H:%M:%SZ"),
        t.timestamp(),
        cst.format("%Y-%m-%d %H:%M")
    )
}

fn spaced_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" ")
}

/// Reads a base-128 varint, returning its value and length.
fn varint(bytes: &[u8]) -> (u64, usize) {
    let mut value = 0u64;
    for (i, b) in bytes.iter().enumerate() {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return (value, i + 1);
        }
    }
    panic!("truncated varint")
}

/// One table row per field of a canonical payload.
fn payload_rows(payload: &[u8]) -> Vec<String> {
    const NAMES: [&str; 9] = [
        "pass_id",
        "name_latin",
        "name_chinese",
        "permit_number",
        "issued_at",
        "valid_from",
        "valid_until",
        "modes",
        "entries_allowed",
    ];
    let mut rows = Vec::new();
    let mut at = 0;
    while at < payload.len() {
        let start = at;
        let (key, key_len) = varint(&payload[at..]);
        at += key_len;
        let (field, wire_type) = (key >> 3, key & 7);
        let name = NAMES[usize::try_from(field - 1).expect("small field number")];
        let mut row = format!("| {start} | `{}` | {field} `{name}` ", spaced_hex(&payload[start..start + key_len]));
        match wire_type {
            0 => {
                let (value, len) = varint(&payload[at..]);
                let bytes = &payload[at..at + len];
                at += len;
                let meaning = match field {
                    5..=7 => {
                        let t =
                            DateTime::from_timestamp(i64::try_from(value).expect("a 2026 time"), 0).expect("in range");
                        format!("{value} = {}", t.format("%Y-%m-%dT%H:%M:%SZ"))
                    }
                    8 => format!("{value} = air (1) + rail (2)"),
                    _ => value.to_string(),
                };
                write!(row, "(VARINT) | | `{}` | {meaning} |", spaced_hex(bytes)).expect("writing to a String");
            }
            2 => {
                let (len, len_len) = varint(&payload[at..]);
                let len_bytes = &payload[at..at + len_len];
                at += len_len;
                let len = usize::try_from(len).expect("a short field");
                let bytes = &payload[at..at + len];
                at += len;
                let meaning = if field == 1 {
                    "16 bytes".to_owned()
                } else {
                    format!("UTF-8 \"{}\"", std::str::from_utf8(bytes).expect("a string field"))
                };
                write!(row, "(LEN) | `{}` = {len} | `{}` | {meaning} |", spaced_hex(len_bytes), spaced_hex(bytes))
                    .expect("writing to a String");
            }
            other => panic!("wire type {other} does not occur in a payload"),
        }
        rows.push(row);
    }
    rows
}

fn main() {
    print!("{}", worked_example().markdown());
}
