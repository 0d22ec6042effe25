//! The README walkthrough, run through the real `epass` binary: serve, issue, verify, admit,
//! a second admission rejected, offline verification, keygen.
#![cfg(feature = "server")]

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

const EPASS: &str = env!("CARGO_BIN_EXE_epass");

/// A server process on a free loopback port, killed when dropped.
struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server(data_dir: &Path) -> Server {
    let mut child = Command::new(EPASS)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("start epass serve");
    let stderr = child.stderr.take().expect("stderr is piped");
    let mut lines = BufReader::new(stderr).lines();
    let address = loop {
        let line = lines.next().expect("server exited before listening").expect("read server log");
        if line.contains("epass listening") {
            let start = line.find("127.0.0.1:").expect("log names the address");
            break line[start..].split_whitespace().next().expect("address").to_owned();
        }
    };
    // Keep draining the log so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Server { child, url: format!("http://{address}") }
}

fn epass(args: &[&str]) -> Output {
    Command::new(EPASS).args(args).env("RUST_LOG", "warn").output().expect("run epass")
}

fn json(output: &Output) -> serde_json::Value {
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&output.stdout)))
}

#[test]
fn walkthrough_issue_verify_admit_twice() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(&dir.path().join("data"));
    let png = dir.path().join("pass.png");
    let s = server.url.as_str();

    let issued = epass(&[
        "issue",
        "--server",
        s,
        "--permit",
        "h1234 5678",
        "--name-latin",
        "chan tai man",
        "--name-chinese",
        "陳大文",
        "--sex",
        "male",
        "--permit-expiry",
        "2030-06-30",
        "--situation",
        "lost",
        "--mobile",
        "+8613800138000",
        "--png",
        png.to_str().unwrap(),
        "--json",
    ]);
    assert!(issued.status.success(), "issue failed: {}", String::from_utf8_lossy(&issued.stderr));
    let issued = json(&issued);
    let qr = issued["qr_text"].as_str().unwrap().to_owned();
    assert!(qr.starts_with("EP1:"));
    assert_eq!(issued["name_latin"], "CHAN TAI MAN");
    assert_eq!(issued["permit_number_masked"], "H******78");
    assert_eq!(&std::fs::read(&png).unwrap()[..8], b"\x89PNG\r\n\x1a\n");

    let verified = epass(&["verify", "--server", s, "--mode", "air", "--json", &qr]);
    assert_eq!(verified.status.code(), Some(0));
    assert_eq!(json(&verified)["verdict"], "accepted");

    let admitted = epass(&["admit", "--server", s, "--mode", "rail", "--checkpoint", "SZN-01", "--json", &qr]);
    assert_eq!(admitted.status.code(), Some(0));
    assert_eq!(json(&admitted)["entry"]["checkpoint_id"], "SZN-01");

    let again = epass(&["admit", "--server", s, "--mode", "air", "--checkpoint", "PEK-T3", "--json", &qr]);
    assert_eq!(again.status.code(), Some(1));
    let again = json(&again);
    assert_eq!(again["reason"], "ALREADY_USED");
    assert_eq!(again["entry"]["checkpoint_id"], "SZN-01");

    let road = epass(&["verify", "--server", s, "--mode", "road", &qr]);
    assert_eq!(road.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&road.stdout).contains("MODE_NOT_ALLOWED"));

    // Offline: the signing key file's public half, no server.
    let key = dir.path().join("data").join("signing-key.pem");
    let offline = epass(&["verify", "--offline", "--key", key.to_str().unwrap(), "--mode", "air", "--json", &qr]);
    assert_eq!(offline.status.code(), Some(0));
    assert_eq!(json(&offline)["verdict"], "accepted");

    let pass_id = issued["pass_id"].as_str().unwrap();
    let revoked = epass(&["revoke", "--server", s, "--reason", "test", pass_id]);
    assert!(revoked.status.success());
    let after = epass(&["verify", "--server", s, "--mode", "air", "--json", &qr]);
    assert_eq!(json(&after)["reason"], "REVOKED");
}

#[test]
fn errors_exit_with_two_and_name_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(&dir.path().join("data"));
    let out = epass(&[
        "issue",
        "--server",
        &server.url,
        "--permit",
        "H1234567",
        "--name-latin",
        "CHAN",
        "--sex",
        "male",
        "--permit-expiry",
        "2030-06-30",
        "--situation",
        "lost",
        "--mobile",
        "+8613800138000",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("applicant.permit_number"));

    let unreachable = epass(&["verify", "--server", "http://127.0.0.1:1", "--mode", "air", "EP1:AAAA"]);
    assert_eq!(unreachable.status.code(), Some(2));
}

#[test]
fn keygen_writes_a_private_key_and_prints_its_id() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("new.pem");
    let out = epass(&["keygen", "--out", path.to_str().unwrap()]);
    assert!(out.status.success());
    let key_id = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert_eq!(key_id.len(), 16);
    let signer = epass::datadir::read_signing_key(&path).unwrap();
    assert_eq!(signer.key_id().to_string(), key_id);
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&path).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    // Never overwrites an existing key.
    assert_eq!(epass(&["keygen", "--out", path.to_str().unwrap()]).status.code(), Some(2));
}
