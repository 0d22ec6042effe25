//! The README walkthrough, run through the real `epass` binary: serve, issue, verify, admit,
//! a second admission rejected, offline verification (raw keys, and root key + fetched trust
//! and status lists from the PNG, a revocation included), keygen, trust-list build and inspect;
//! the monthly limit and concurrent admissions through the binary.

#[path = "common/command.rs"]
mod command;

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Output, Stdio};

/// A server process on a free loopback port, killed when dropped.
struct Server {
    child: Child,
    url: String,
    data_dir: std::path::PathBuf,
}

impl Server {
    /// Runs `epass` as a client of this server on the same machine: it picks the token of the
    /// command's role from the server's data directory (`local-tokens.toml`).
    fn epass(&self, args: &[&str]) -> Output {
        command::epass().args(args).env("EPASS_DATA_DIR", &self.data_dir).output().expect("run epass")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server(data_dir: &Path) -> Server {
    let mut child = command::epass()
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
    Server { child, url: format!("http://{address}"), data_dir: data_dir.to_owned() }
}

/// Runs `epass` with no server of its own: in a scratch working directory, its data directory
/// one that does not exist, so that an `./epass-data` left in the repository (whose local
/// tokens a command to a loopback server would pick up) is never read.
fn epass(args: &[&str]) -> Output {
    let scratch = tempfile::tempdir().expect("scratch directory");
    command::epass()
        .args(args)
        .current_dir(scratch.path())
        .env("EPASS_DATA_DIR", scratch.path().join("no-data-dir"))
        .output()
        .expect("run epass")
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

    let issued = server.epass(&[
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

    let verified = server.epass(&["verify", "--server", s, "--mode", "air", "--json", &qr]);
    assert_eq!(verified.status.code(), Some(0));
    let verified = json(&verified);
    assert_eq!(verified["verdict"], "accepted");
    // One JSON shape online and offline, with the names of docs/FORMAT.md (issue 10, point 4).
    assert_eq!(verified["reason"], serde_json::Value::Null, "{verified}");
    assert_eq!(verified["format_problem"], serde_json::Value::Null, "{verified}");
    assert_eq!(verified["status"]["check"], "checked", "{verified}");
    assert_eq!(verified["status"]["source"], "server", "{verified}");

    let admitted = server.epass(&["admit", "--server", s, "--mode", "rail", "--checkpoint", "SZN-01", "--json", &qr]);
    assert_eq!(admitted.status.code(), Some(0));
    assert_eq!(json(&admitted)["entry"]["checkpoint_id"], "SZN-01");

    let again = server.epass(&["admit", "--server", s, "--mode", "air", "--checkpoint", "PEK-T3", "--json", &qr]);
    assert_eq!(again.status.code(), Some(1));
    let again = json(&again);
    assert_eq!(again["reason"], "already_used");
    assert_eq!(again["entry"]["checkpoint_id"], "SZN-01");

    let road = server.epass(&["verify", "--server", s, "--mode", "road", &qr]);
    assert_eq!(road.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&road.stdout).contains("MODE_NOT_ALLOWED"));

    // Offline: the signing key file's public half, no server.
    let key = dir.path().join("data").join("signing-key.pem");
    let offline = epass(&["verify", "--offline", "--key", key.to_str().unwrap(), "--mode", "air", "--json", &qr]);
    assert_eq!(offline.status.code(), Some(0));
    let offline = json(&offline);
    assert_eq!(offline["verdict"], "accepted");
    assert_eq!(offline["reason"], serde_json::Value::Null, "{offline}");
    assert!(offline["note"].as_str().unwrap().contains("no trust list was checked"), "{offline}");
    assert_eq!(offline["status"]["check"], "no_list");

    let pass_id = issued["pass_id"].as_str().unwrap();
    let revoked = server.epass(&["revoke", "--server", s, "--reason", "test", pass_id]);
    assert!(revoked.status.success());
    let after = server.epass(&["verify", "--server", s, "--mode", "air", "--json", &qr]);
    assert_eq!(json(&after)["reason"], "revoked");
}

#[test]
fn errors_exit_with_two_and_name_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(&dir.path().join("data"));
    let out = server.epass(&[
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

/// Regression (issue 12): `issue --request-id r1` run twice with identical flags gave the pass,
/// then ALREADY_EXISTS, because each run stamped its own identity check time. The check time is
/// now a flag, which `--request-id` requires, so the same command is the same application.
#[test]
fn issue_retried_with_the_same_flags_a_second_later_gets_the_same_pass() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(&dir.path().join("data"));
    // A minute ago, on whole seconds, as an operator would write it.
    let checked_at =
        chrono::DateTime::from_timestamp(epass::clock::Clock::now(&epass::clock::SystemClock).timestamp() - 60, 0)
            .expect("time in range")
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, false);
    let args = [
        "issue",
        "--server",
        &server.url,
        "--permit",
        "M87654321",
        "--name-latin",
        "LEI SIO MAN",
        "--sex",
        "female",
        "--permit-expiry",
        "2030-01-31",
        "--situation",
        "lost",
        "--mobile",
        "+8613900139000",
        "--request-id",
        "r1",
        "--identity-checked-at",
        &checked_at,
        "--json",
    ];
    let first = server.epass(&args);
    assert!(first.status.success(), "first issue failed: {}", String::from_utf8_lossy(&first.stderr));
    let first = json(&first);
    assert_eq!(first["replayed"], false);
    // More than a second: a check time taken from the clock would differ now.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let second = server.epass(&args);
    assert!(second.status.success(), "retry failed: {}", String::from_utf8_lossy(&second.stderr));
    let second = json(&second);
    assert_eq!(second["replayed"], true);
    assert_eq!(second["pass_id"], first["pass_id"]);
    assert_eq!(second["qr_text"], first["qr_text"]);

    // Without the check time, a request id is refused before anything is sent.
    let without: Vec<&str> =
        args.iter().copied().filter(|a| *a != "--identity-checked-at" && *a != checked_at).collect();
    let out = server.epass(&without);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--identity-checked-at"), "{out:?}");
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

fn path(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

fn issue_with_png(server: &Server, png: &Path) -> serde_json::Value {
    let issued = server.epass(&[
        "issue",
        "--server",
        &server.url,
        "--permit",
        "M87654321",
        "--name-latin",
        "LEI SIO MAN",
        "--sex",
        "female",
        "--permit-expiry",
        "2031-01-31",
        "--situation",
        "lost",
        "--mobile",
        "+8613900139000",
        "--modes",
        "air,rail",
        "--png",
        path(png),
        "--json",
    ]);
    assert!(issued.status.success(), "issue failed: {}", String::from_utf8_lossy(&issued.stderr));
    json(&issued)
}

#[test]
fn offline_walkthrough_fetch_verify_png_admit_fetch_again() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = start_server(&data);
    let s = server.url.as_str();
    let root = data.join("root-key.pem");
    let png = dir.path().join("pass.png");
    let trust = dir.path().join("trust-list.bin");
    let status = dir.path().join("status-list.bin");
    let issued = issue_with_png(&server, &png);
    let pass_id = issued["pass_id"].as_str().unwrap();

    let fetch_args = ["fetch", "--server", s, "--trust-list", path(&trust), "--status-list", path(&status)];
    let fetched = server.epass(&[&fetch_args[..], &["--root", path(&root), "--json"]].concat());
    assert_eq!(fetched.status.code(), Some(0), "{}", String::from_utf8_lossy(&fetched.stderr));
    let fetched = json(&fetched);
    assert_eq!(fetched["checked"], true);
    assert_eq!(fetched["trust_list"]["sequence"], 1);
    assert_eq!(fetched["status_list"]["base_sequence"], 0);
    let first_status = fetched["status_list"]["sequence"].as_u64().unwrap();

    let offline = |extra: &[&str]| {
        let base = ["verify", "--offline", "--root", path(&root), "--trust-list", path(&trust), "--mode", "rail"];
        epass(&[&base[..], extra, &["--image", path(&png)]].concat())
    };

    // Accepted from the PNG, with the status list consulted.
    let accepted = offline(&["--status-list", path(&status), "--json"]);
    assert_eq!(accepted.status.code(), Some(0), "{}", String::from_utf8_lossy(&accepted.stderr));
    let accepted = json(&accepted);
    assert_eq!(accepted["verdict"], "accepted");
    assert_eq!(accepted["pass_id"], pass_id);
    assert_eq!(accepted["status"]["check"], "checked");
    assert_eq!(accepted["status"]["source"], "status_list");
    assert_eq!(accepted["status"]["sequence"], first_status);
    assert_eq!(accepted["trust_list_sequence"], 1);
    let text = offline(&["--status-list", path(&status)]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.starts_with("ACCEPTED\n"), "{text}");
    assert!(text.contains(&format!("checked against status list #{first_status}")), "{text}");

    // Admitted online from the same PNG.
    let admitted =
        server.epass(&["admit", "--server", s, "--mode", "rail", "--checkpoint", "ZHA-01", "--image", path(&png)]);
    assert_eq!(admitted.status.code(), Some(0), "{}", String::from_utf8_lossy(&admitted.stdout));

    // The old status list still says nothing of the entry, and the output names the list used.
    let stale_news = json(&offline(&["--status-list", path(&status), "--json"]));
    assert_eq!(stale_news["verdict"], "accepted");
    let first_list = dir.path().join("status-list-first.bin");
    std::fs::copy(&status, &first_list).unwrap();

    // After fetching again, offline verification rejects it as used.
    let refetched = server.epass(&["fetch", "--server", s, "--status-list", path(&status), "--json"]);
    assert_eq!(refetched.status.code(), Some(0));
    let refetched = json(&refetched);
    assert_eq!(refetched["checked"], false);
    let second_status = refetched["status_list"]["sequence"].as_u64().unwrap();
    assert!(second_status > first_status);
    let used = offline(&["--status-list", path(&status), "--json"]);
    assert_eq!(used.status.code(), Some(1));
    let used = json(&used);
    assert_eq!(used["verdict"], "rejected");
    assert_eq!(used["reason"], "already_used");
    assert_eq!(used["entry"]["checkpoint_id"], "ZHA-01");
    assert_eq!(used["status"]["sequence"], second_status);
    let text = offline(&["--status-list", path(&status)]);
    assert!(String::from_utf8_lossy(&text.stdout).starts_with("REJECTED ALREADY_USED"));

    // The first list replayed, still fresh, to a checkpoint holding the second's sequence: not
    // used, so the pass is accepted with single use not checked (status list rollback).
    let held = second_status.to_string();
    let replayed = offline(&["--status-list", path(&first_list), "--held-status-sequence", &held, "--json"]);
    assert_eq!(replayed.status.code(), Some(0), "{}", String::from_utf8_lossy(&replayed.stderr));
    let replayed = json(&replayed);
    assert_eq!(replayed["status"]["check"], "unusable", "{replayed}");
    assert!(replayed["status"]["detail"].as_str().unwrap().contains("rollback"), "{replayed}");
    let equal = offline(&["--status-list", path(&status), "--held-status-sequence", &held, "--json"]);
    assert_eq!(json(&equal)["status"]["sequence"], second_status);

    // Without a status list the pass is accepted, and the output says what was not checked.
    let unchecked = offline(&[]);
    assert_eq!(unchecked.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&unchecked.stdout).contains("NOT checked"));
    assert_eq!(json(&offline(&["--json"]))["status"]["check"], "no_list");

    // A delta is never taken for the full list: this one is empty (nothing changed since the
    // list fetched last), and checking against it alone would miss the entry.
    let delta = dir.path().join("delta.bin");
    let since = second_status.to_string();
    let fetched = server.epass(&["fetch", "--server", s, "--status-list", path(&delta), "--since", &since, "--json"]);
    assert_eq!(fetched.status.code(), Some(0));
    assert_eq!(json(&fetched)["status_list"]["base_sequence"], second_status);
    let with_delta = json(&offline(&["--status-list", path(&delta), "--json"]));
    assert_eq!(with_delta["status"]["check"], "unusable", "{with_delta}");
    assert!(with_delta["status"]["detail"].as_str().unwrap().contains("not a full list"), "{with_delta}");

    // A trust list older than the one held: cannot decide, exit 3.
    let rollback = offline(&["--status-list", path(&status), "--held-sequence", "99", "--json"]);
    assert_eq!(rollback.status.code(), Some(3));
    let rollback = json(&rollback);
    assert_eq!(rollback["verdict"], "cannot_decide");
    assert_eq!(rollback["reason"], "trust_list_rollback");
    assert_eq!(rollback["status"]["check"], "not_evaluated");
    let text = offline(&["--held-sequence", "99"]);
    assert!(String::from_utf8_lossy(&text.stdout).starts_with("CANNOT DECIDE TRUST_LIST_ROLLBACK"));

    // A trust list signed by another root: cannot decide either.
    let other_root = dir.path().join("other-root.pem");
    assert!(epass(&["keygen", "--out", path(&other_root)]).status.success());
    let base = ["verify", "--offline", "--root", path(&other_root), "--trust-list", path(&trust), "--mode", "air"];
    let foreign = epass(&[&base[..], &["--json", "--image", path(&png)]].concat());
    assert_eq!(foreign.status.code(), Some(3));
    assert_eq!(json(&foreign)["reason"], "trust_list_wrong_root_key");

    // fetch --root refuses lists the root did not sign, and writes nothing.
    let refused = dir.path().join("refused.bin");
    let out = server.epass(&["fetch", "--server", s, "--trust-list", path(&refused), "--root", path(&other_root)]);
    assert_eq!(out.status.code(), Some(2));
    assert!(!refused.exists());

    // The server's own trust list inspects as current.
    let inspected = epass(&["trust-list", "inspect", path(&trust), "--root", path(&root), "--json"]);
    assert_eq!(inspected.status.code(), Some(0));
    assert_eq!(json(&inspected)["keys"][0]["status"], "active");

    // Revoked after its use: online and, once the status list is fetched again, offline, the
    // verdict is REVOKED (revocation is reported before single use).
    let revoked = server.epass(&["revoke", "--server", s, "--reason", "fraud", pass_id]);
    assert_eq!(revoked.status.code(), Some(0), "{}", String::from_utf8_lossy(&revoked.stderr));
    let before_fetch = json(&offline(&["--status-list", path(&status), "--json"]));
    assert_eq!(before_fetch["reason"], "already_used", "the list held knows only the use: {before_fetch}");
    let refetched = server.epass(&["fetch", "--server", s, "--status-list", path(&status), "--json"]);
    assert_eq!(refetched.status.code(), Some(0), "{}", String::from_utf8_lossy(&refetched.stderr));
    let third_status = json(&refetched)["status_list"]["sequence"].as_u64().unwrap();
    assert!(third_status > second_status, "the revocation is a new sequence");
    let revoked = offline(&["--status-list", path(&status), "--json"]);
    assert_eq!(revoked.status.code(), Some(1));
    let revoked = json(&revoked);
    assert_eq!((&revoked["verdict"], &revoked["reason"]), (&"rejected".into(), &"revoked".into()), "{revoked}");
    assert_eq!(revoked["status"]["sequence"], third_status, "{revoked}");
    let text = offline(&["--status-list", path(&status)]);
    assert!(String::from_utf8_lossy(&text.stdout).starts_with("REJECTED REVOKED"), "{text:?}");

    // An image without a QR code is an error, not a verdict.
    let not_qr = dir.path().join("not-qr.png");
    std::fs::write(&not_qr, b"not an image").unwrap();
    let base = ["verify", "--offline", "--root", path(&root), "--trust-list", path(&trust), "--mode", "air"];
    assert_eq!(epass(&[&base[..], &["--image", path(&not_qr)]].concat()).status.code(), Some(2));
}

#[test]
fn trust_list_build_and_inspect_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str| dir.path().join(name);
    let key_id = |name: &str| {
        let out = epass(&["keygen", "--out", path(&file(name))]);
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    let (_root_id, a_id, b_id, c_id) = (key_id("root.pem"), key_id("a.pem"), key_id("b.pem"), key_id("c.pem"));
    let root = file("root.pem");
    let first = file("first.bin");
    let build =
        |extra: &[&str]| epass(&[&["trust-list", "build", "--root", path(&root), "--json"][..], extra].concat());

    let built = build(&["--active", path(&file("a.pem")), "--out", path(&first)]);
    assert_eq!(built.status.code(), Some(0), "{}", String::from_utf8_lossy(&built.stderr));
    let built = json(&built);
    assert_eq!(built["sequence"], 1);
    assert_eq!(built["keys"][0]["key_id"], a_id.as_str());

    // Never over an existing file without --force.
    let again = build(&["--active", path(&file("a.pem")), "--out", path(&first)]);
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    let forced = build(&["--active", path(&file("a.pem")), "--out", path(&first), "--force", "--lifetime-days", "10"]);
    assert_eq!(forced.status.code(), Some(0));

    let inspect = |list: &Path, extra: &[&str]| {
        epass(&[&["trust-list", "inspect", path(list), "--root", path(&root)][..], extra].concat())
    };
    let inspected = inspect(&first, &["--json"]);
    assert_eq!(inspected.status.code(), Some(0));
    let inspected = json(&inspected);
    assert_eq!(inspected["valid"], true);
    assert_eq!(inspected["current"], true);
    assert_eq!(inspected["sequence"], 1);
    assert_eq!(inspected["keys"][0]["status"], "active");
    let text = inspect(&first, &[]);
    assert!(String::from_utf8_lossy(&text.stdout).starts_with("CURRENT\ntrust list #1"));
    // A list older than one held is not current.
    assert_eq!(inspect(&first, &["--held-sequence", "2"]).status.code(), Some(1));

    // Rotation: b takes over, a is retired, c is revoked.
    let second = file("second.bin");
    let rotated = build(&[
        "--previous",
        path(&first),
        "--active",
        path(&file("b.pem")),
        "--revoked",
        path(&file("c.pem")),
        "--out",
        path(&second),
    ]);
    assert_eq!(rotated.status.code(), Some(0), "{}", String::from_utf8_lossy(&rotated.stderr));
    let inspected = json(&inspect(&second, &["--json"]));
    assert_eq!(inspected["sequence"], 2);
    let status_of = |id: &str| {
        let keys = inspected["keys"].as_array().unwrap();
        keys.iter().find(|k| k["key_id"] == id).map(|k| k["status"].as_str().unwrap().to_owned())
    };
    assert_eq!(status_of(&b_id).as_deref(), Some("active"));
    assert_eq!(status_of(&a_id).as_deref(), Some("retired"));
    assert_eq!(status_of(&c_id).as_deref(), Some("revoked"));
    // A sequence that is not above the previous one is refused.
    let low = build(&[
        "--previous",
        path(&second),
        "--active",
        path(&file("b.pem")),
        "--sequence",
        "2",
        "--out",
        path(&file("x.bin")),
    ]);
    assert_eq!(low.status.code(), Some(2));

    // Tampered: bad signature, exit 2.
    let mut bytes = std::fs::read(&second).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    let tampered = file("tampered.bin");
    std::fs::write(&tampered, &bytes).unwrap();
    let out = inspect(&tampered, &["--json"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(json(&out)["problem"], "trust_list_bad_signature");
    assert!(String::from_utf8_lossy(&inspect(&tampered, &[]).stdout).starts_with("INVALID"));
    // Opened with another key as the root: exit 2 as well.
    let wrong = epass(&["trust-list", "inspect", path(&second), "--root", path(&file("a.pem"))]);
    assert_eq!(wrong.status.code(), Some(2));
    // Not a list at all.
    std::fs::write(file("garbage.bin"), b"garbage").unwrap();
    assert_eq!(inspect(&file("garbage.bin"), &[]).status.code(), Some(2));
}

/// The flags of `epass issue` for one application by the holder of `permit`.
fn application_flags<'a>(server: &'a Server, permit: &'a str) -> Vec<&'a str> {
    vec![
        "issue",
        "--server",
        &server.url,
        "--permit",
        permit,
        "--name-latin",
        "LEI SIO MAN",
        "--sex",
        "female",
        "--permit-expiry",
        "2030-01-31",
        "--situation",
        "lost",
        "--mobile",
        "+8613900139000",
        "--json",
    ]
}

/// Issue 12: the monthly limit through the real binary. Two `epass issue` runs for one person
/// against a running `epass serve` give two passes; the third is refused (exit 2), naming the
/// limit and when the next application is possible; another person is unaffected.
#[test]
fn a_third_application_in_a_month_is_refused_through_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(&dir.path().join("data"));
    let mut passes = Vec::new();
    for n in 1..=2 {
        let issued = server.epass(&application_flags(&server, "M87654321"));
        assert_eq!(issued.status.code(), Some(0), "application {n}: {}", String::from_utf8_lossy(&issued.stderr));
        passes.push(json(&issued)["pass_id"].as_str().expect("pass id").to_owned());
    }
    assert_ne!(passes[0], passes[1], "two passes");

    let now = epass::clock::Clock::now(&epass::clock::SystemClock);
    let refused = server.epass(&application_flags(&server, "m8765 4321"));
    assert_eq!(refused.status.code(), Some(2), "the third application: {refused:?}");
    assert!(refused.stdout.is_empty(), "no pass printed: {}", String::from_utf8_lossy(&refused.stdout));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    let next = epass_core::policy::QuotaMonth::of(now).next_start().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    assert!(stderr.contains("ResourceExhausted"), "{stderr}");
    assert!(
        stderr.contains(&format!("at most 2 applications per month; next application possible at {next}")),
        "{stderr}"
    );

    let other = server.epass(&application_flags(&server, "H12345678"));
    assert_eq!(other.status.code(), Some(0), "another person: {}", String::from_utf8_lossy(&other.stderr));
}

/// Issue 12: one QR admitted by `epass admit` run many times at once (each its own process,
/// connection and scan id): exactly one is admitted (exit 0), every other is told the pass is
/// used (exit 1), naming the one entry.
#[test]
fn concurrent_admits_of_one_qr_through_the_binary_admit_exactly_once() {
    const ADMITS: usize = 8;
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(&dir.path().join("data"));
    let issued = server.epass(&application_flags(&server, "M87654321"));
    assert_eq!(issued.status.code(), Some(0), "{}", String::from_utf8_lossy(&issued.stderr));
    let qr = json(&issued)["qr_text"].as_str().expect("QR text").to_owned();

    // Every process is started before any is waited for.
    let children: Vec<Child> = (0..ADMITS)
        .map(|i| {
            let gate = format!("SZN-{i:02}");
            command::epass()
                .args(["admit", "--server", &server.url, "--mode", "rail", "--checkpoint", &gate, "--json", &qr])
                .env("EPASS_DATA_DIR", &server.data_dir)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start epass admit")
        })
        .collect();
    let outputs: Vec<Output> = children.into_iter().map(|c| c.wait_with_output().expect("epass admit")).collect();

    let admitted: Vec<&Output> = outputs.iter().filter(|o| o.status.code() == Some(0)).collect();
    assert_eq!(admitted.len(), 1, "exactly one admission: {outputs:#?}");
    let winner = json(admitted[0]);
    assert_eq!(winner["verdict"], "accepted", "{winner}");
    let entry = &winner["entry"];
    assert!(entry["checkpoint_id"].as_str().is_some_and(|c| c.starts_with("SZN-")), "{winner}");
    for output in outputs.iter().filter(|o| o.status.code() != Some(0)) {
        assert_eq!(output.status.code(), Some(1), "rejected, not an error: {output:?}");
        let loser = json(output);
        assert_eq!((&loser["verdict"], &loser["reason"]), (&"rejected".into(), &"already_used".into()), "{loser}");
        assert_eq!(&loser["entry"], entry, "the one entry: {loser}");
    }
}
