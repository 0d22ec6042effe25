//! Issue 10, the gaps a gate vendor found between docs/FORMAT.md and the `epass` command, each
//! run through the real binary: one JSON vocabulary for verdicts (point 4), the clock tolerance
//! (point 5), the root public key file and the key files (point 8), the line end of standard
//! input (point 10).

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use base64::Engine as _;
use chrono::{DateTime, TimeDelta, Utc};
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::EncodePrivateKey as _;
use epass_core::applicant::{HolderName, PermitNumber};
use epass_core::ids::PassId;
use epass_core::keys::KeyStatus;
use epass_core::pass::{Modes, PassContents, SignedPass};

#[path = "common/command.rs"]
mod command;

/// The real clock: the passes here are checked by a separate process that reads it too.
fn now() -> DateTime<Utc> {
    epass::clock::Clock::now(&epass::clock::SystemClock)
}

fn epass(args: &[&str]) -> Output {
    epass_with_stdin(args, None)
}

fn epass_with_stdin(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = command::epass()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run epass");
    let mut input = child.stdin.take().expect("stdin is piped");
    if let Some(bytes) = stdin {
        input.write_all(bytes).expect("write stdin");
    }
    drop(input);
    child.wait_with_output().expect("epass output")
}

fn json(output: &Output) -> serde_json::Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!("not JSON ({e}): {}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
    })
}

fn path(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// A data directory provisioned two days ago (so that its key signs passes issued since), and
/// a pass its key signed.
struct Checkpoint {
    _dir: tempfile::TempDir,
    data: PathBuf,
}

impl Checkpoint {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        epass::datadir::provision(&data, None, now() - TimeDelta::days(2)).expect("provision");
        Self { _dir: dir, data }
    }

    fn file(&self, name: &str) -> PathBuf {
        self.data.join(name)
    }

    fn pass(&self, issued_at: DateTime<Utc>, valid_until: DateTime<Utc>) -> String {
        let signer = epass::datadir::read_signing_key(&self.file(epass::datadir::SIGNING_KEY_FILE)).unwrap();
        let contents = PassContents {
            pass_id: PassId::from_bytes([0x5a; 16]),
            holder: HolderName::parse("CHAN TAI MAN", "陳大文").unwrap(),
            permit: PermitNumber::parse("H12345678").unwrap(),
            issued_at,
            valid_from: issued_at,
            valid_until,
            modes: Modes::AIR_AND_RAIL,
            entries_allowed: 1,
        };
        SignedPass::sign(contents, &signer).qr_text()
    }

    fn current_pass(&self) -> String {
        let issued_at = now() - TimeDelta::hours(1);
        self.pass(issued_at, issued_at + TimeDelta::days(7))
    }

    fn verify(&self, extra: &[&str], qr: &str, stdin: Option<&[u8]>) -> Output {
        let root = self.file(epass::datadir::ROOT_KEY_FILE);
        let trust = self.file(epass::datadir::TRUST_LIST_FILE);
        let base = ["verify", "--offline", "--root", path(&root), "--trust-list", path(&trust), "--mode", "air"];
        epass_with_stdin(&[&base[..], extra, &["--json", qr]].concat(), stdin)
    }
}

/// Point 4: offline verdicts print the names of docs/FORMAT.md and the vectors, in the shape the
/// online ones have (`tests/cli.rs` checks the online side).
#[test]
fn offline_json_uses_the_documented_names() {
    let checkpoint = Checkpoint::new();
    let qr = checkpoint.current_pass();

    let accepted = json(&checkpoint.verify(&[], &qr, None));
    assert_eq!(accepted["verdict"], "accepted", "{accepted}");
    assert_eq!(accepted["reason"], serde_json::Value::Null, "{accepted}");
    assert_eq!(accepted["format_problem"], serde_json::Value::Null, "{accepted}");
    assert_eq!(accepted["status"]["check"], "no_list", "{accepted}");
    assert_eq!(accepted["status"]["source"], "status_list", "{accepted}");

    let bad = json(&checkpoint.verify(&[], &format!("{qr}="), None));
    assert_eq!(bad["verdict"], "rejected", "{bad}");
    assert_eq!(bad["reason"], "bad_format", "{bad}");
    assert_eq!(bad["format_problem"], "bad_base64", "{bad}");

    let rolled_back = json(&checkpoint.verify(&["--held-sequence", "99"], &qr, None));
    assert_eq!(rolled_back["verdict"], "cannot_decide", "{rolled_back}");
    assert_eq!(rolled_back["reason"], "trust_list_rollback", "{rolled_back}");
    assert_eq!(rolled_back["format_problem"], serde_json::Value::Null, "{rolled_back}");
    assert_eq!(rolled_back["status"]["check"], "not_evaluated", "{rolled_back}");
}

/// Point 5: the tolerance is 0 unless the operator sets it, and more than the format's 600
/// seconds is a usage error.
#[test]
fn clock_tolerance_defaults_to_zero_and_stops_at_600() {
    let checkpoint = Checkpoint::new();
    let now = now();
    // Expired a minute ago: the old default of 120 seconds accepted it.
    let qr = checkpoint.pass(now - TimeDelta::days(1), now - TimeDelta::seconds(60));
    let by_default = checkpoint.verify(&[], &qr, None);
    assert_eq!(by_default.status.code(), Some(1));
    assert_eq!(json(&by_default)["reason"], "expired");
    let tolerant = checkpoint.verify(&["--tolerance", "600"], &qr, None);
    assert_eq!(tolerant.status.code(), Some(0), "{}", String::from_utf8_lossy(&tolerant.stdout));
    let too_much = checkpoint.verify(&["--tolerance", "601"], &qr, None);
    assert_eq!(too_much.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&too_much.stderr).contains("--tolerance"), "{too_much:?}");
}

/// Point 10: from standard input exactly one trailing LF or CR LF is removed, nothing else.
#[test]
fn standard_input_loses_one_line_end_and_nothing_else() {
    let checkpoint = Checkpoint::new();
    let qr = checkpoint.current_pass();
    let from_stdin = |input: String| json(&checkpoint.verify(&[], "-", Some(input.as_bytes())));
    for accepted in [qr.clone(), format!("{qr}\n"), format!("{qr}\r\n")] {
        assert_eq!(from_stdin(accepted.clone())["verdict"], "accepted", "{accepted:?}");
    }
    for (refused, problem) in [
        (format!("{qr}\n\n"), "bad_base64"),
        (format!("{qr} \n"), "bad_base64"),
        (format!("{qr}\r"), "bad_base64"),
        (format!(" {qr}\n"), "wrong_prefix"),
    ] {
        let verdict = from_stdin(refused.clone());
        assert_eq!(verdict["format_problem"], problem, "{refused:?}: {verdict}");
    }
    // An argument is taken exactly as it is.
    assert_eq!(json(&checkpoint.verify(&[], &format!("{qr}\n"), None))["format_problem"], "bad_base64");
}

/// DER of a PEM file's single block.
fn pem_der(pem: &str, label: &str) -> Vec<u8> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let body = pem.split(&begin).nth(1).and_then(|rest| rest.split(&end).next()).expect("a PEM block");
    base64::engine::general_purpose::STANDARD.decode(body.split_whitespace().collect::<String>()).unwrap()
}

/// Point 8: `root export` writes the root public key as SPKI PEM and prints its key id and hex;
/// the trust list opens with that file; keys are written as PKCS#8 v1, and v1 and v2 both read.
#[test]
fn root_public_key_exports_as_spki_and_keys_are_pkcs8_v1() {
    let checkpoint = Checkpoint::new();
    let root_secret = checkpoint.file(epass::datadir::ROOT_KEY_FILE);
    let exported = checkpoint.data.join("root-public-key.pem");
    let out = epass(&["root", "export", "--root", path(&root_secret), "--out", path(&exported), "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let out = json(&out);
    let root = epass::datadir::read_verification_key(&root_secret, KeyStatus::Active).unwrap();
    assert_eq!(out["key_id"], root.key_id().to_string());
    assert_eq!(out["public_key"], hex::encode(root.public_key()));
    let pem = std::fs::read_to_string(&exported).unwrap();
    assert_eq!(out["pem"], pem.as_str());
    let der = pem_der(&pem, "PUBLIC KEY");
    assert_eq!(hex::encode(&der), format!("302a300506032b6570032100{}", hex::encode(root.public_key())));
    // Never over an existing file without --force; text output names the key.
    let again = epass(&["root", "export", "--root", path(&root_secret), "--out", path(&exported)]);
    assert_eq!(again.status.code(), Some(2));
    let text = epass(&["root", "export", "--root", path(&exported)]);
    assert_eq!(String::from_utf8_lossy(&text.stdout), pem);
    assert!(String::from_utf8_lossy(&text.stderr).contains(&root.key_id().to_string()));

    // The file is what a checkpoint needs: the trust list opens with it.
    let trust = checkpoint.file(epass::datadir::TRUST_LIST_FILE);
    let inspected = epass(&["trust-list", "inspect", path(&trust), "--root", path(&exported)]);
    assert_eq!(inspected.status.code(), Some(0), "{}", String::from_utf8_lossy(&inspected.stdout));

    // Secret keys are PKCS#8 v1: the 32 secret bytes alone, as OpenSSL writes them.
    for secret in [root_secret.clone(), checkpoint.file(epass::datadir::SIGNING_KEY_FILE)] {
        let der = pem_der(&std::fs::read_to_string(&secret).unwrap(), "PRIVATE KEY");
        assert_eq!(der.len(), 48, "{}", secret.display());
        assert_eq!(hex::encode(&der[..16]), "302e020100300506032b657004220420", "{}", secret.display());
    }
    // The v2 form (public key inside) that earlier releases wrote still reads, to the same key.
    let signer = epass::datadir::read_signing_key(&root_secret).unwrap();
    let v2 = signer.signing_key().to_pkcs8_pem(LineEnding::LF).unwrap();
    assert!(pem_der(&v2, "PRIVATE KEY").len() > 48, "ed25519-dalek writes v2");
    let v2_path = checkpoint.data.join("root-v2.pem");
    std::fs::write(&v2_path, v2.as_bytes()).unwrap();
    assert_eq!(epass::datadir::read_signing_key(&v2_path).unwrap().key_id(), signer.key_id());
    let public = epass::datadir::read_verification_key(&v2_path, KeyStatus::Active).unwrap();
    assert_eq!(public.key_id(), signer.key_id());

    // OpenSSL, where installed, loads both files as they are.
    if Command::new("openssl").arg("version").output().is_ok_and(|o| o.status.success()) {
        let public = Command::new("openssl").args(["pkey", "-pubin", "-in", path(&exported), "-noout"]).output();
        assert!(public.unwrap().status.success(), "openssl loads the SPKI PEM");
        let secret = Command::new("openssl").args(["pkey", "-in", path(&root_secret), "-noout"]).output();
        assert!(secret.unwrap().status.success(), "openssl loads the PKCS#8 v1 PEM");
    }
}

/// The first lines of `epass serve`'s log, up to "epass listening"; the server is then stopped.
fn serve_log(data: &Path) -> String {
    let mut child = command::epass()
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir", path(data)])
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start epass serve");
    let mut log = String::new();
    for line in BufReader::new(child.stderr.take().unwrap()).lines() {
        let line = line.unwrap();
        log.push_str(&line);
        log.push('\n');
        if line.contains("epass listening") {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    log
}

/// Point 8: with the root secret in the data directory the server says it suits development
/// only; with only the root public key there (the production layout) it serves the trust list
/// it has, without that warning.
#[test]
fn serve_runs_with_the_root_public_key_alone() {
    let checkpoint = Checkpoint::new();
    let log = serve_log(&checkpoint.data);
    assert!(log.contains("epass listening"), "{log}");
    assert!(log.contains("suits development only"), "{log}");

    let root = checkpoint.file(epass::datadir::ROOT_KEY_FILE);
    let public = checkpoint.data.join("root-public-key.pem");
    assert!(epass(&["root", "export", "--root", path(&root), "--out", path(&public)]).status.success());
    std::fs::rename(&public, &root).unwrap();
    let trust_before = std::fs::read(checkpoint.file(epass::datadir::TRUST_LIST_FILE)).unwrap();
    let log = serve_log(&checkpoint.data);
    assert!(log.contains("epass listening"), "{log}");
    assert!(!log.contains("suits development only"), "{log}");
    assert_eq!(std::fs::read(checkpoint.file(epass::datadir::TRUST_LIST_FILE)).unwrap(), trust_before);
}
