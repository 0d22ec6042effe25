//! `epass audit --data-dir DIR PASS_ID [--json]`, through the real binary, next to a running
//! server: the trail of a pass, oldest first, read from the database read-only.

mod callers;
#[path = "common/command.rs"]
mod command;

use std::process::Output;

use callers::{pb, Server};

/// Runs `epass` off the async threads (the server runs on them).
async fn epass(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || command::epass().args(&args).output().expect("run epass"))
        .await
        .expect("epass task")
}

async fn audit(server: &Server, pass_id: &str, json: bool) -> Output {
    let mut args = vec!["audit".to_owned(), "--data-dir".to_owned(), server.data_dir.display().to_string()];
    if json {
        args.push("--json".to_owned());
    }
    args.push(pass_id.to_owned());
    epass(args).await
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Issues a pass, admits its holder, tries again elsewhere, revokes it.
async fn history(server: &Server) -> String {
    let issued = server.issue("issuer-a", server.application("req-1", callers::PERMIT)).await;
    let pass_id = issued.pass.as_ref().expect("pass").pass_id.clone();
    server.record("checkpoint-a", &issued.qr_text, "SZN-01", "scan-1").await;
    server.record("checkpoint-b", &issued.qr_text, "PEK-T3", "scan-1").await;
    server
        .issuance("admin-a")
        .revoke_pass(pb::RevokePassRequest { pass_id: pass_id.clone(), reason: "fraud".to_owned() })
        .await
        .expect("RevokePass succeeds");
    pass_id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_prints_the_trail_oldest_first() {
    let server = callers::start().await;
    let pass_id = history(&server).await;

    let output = audit(&server, &pass_id, false).await;
    assert!(output.status.success(), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{stdout}");
    let expect = [
        ["issue", "issued", "by issuer-a (issuer) from 127.0.0.1:", "id req-1", "permit H******78"],
        ["admit", "accepted", "by checkpoint-a (checkpoint) from 127.0.0.1:", "at SZN-01 (rail)", "id scan-1"],
        ["admit", "rejected (already_used)", "by checkpoint-b (checkpoint)", "at PEK-T3 (rail)", "id scan-1"],
        ["revoke", "revoked", "by admin-a (admin) from 127.0.0.1:", "", ""],
    ];
    for (line, parts) in lines.iter().zip(expect) {
        assert!(line.starts_with("2026-11-10T02:00:00"), "{line}");
        for part in parts {
            assert!(line.contains(part), "{part:?} in {line:?}");
        }
    }
    assert!(!stdout.contains("12345678") && !stdout.contains("13800138000"), "{stdout}");

    let output = audit(&server, &pass_id, true).await;
    assert!(output.status.success(), "{}", text(&output.stderr));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(json["pass_id"], pass_id.as_str());
    let trail = json["trail"].as_array().expect("trail");
    let summary: Vec<_> = trail
        .iter()
        .map(|row| {
            (
                row["action"].as_str().unwrap(),
                row["outcome"].as_str().unwrap(),
                row["reason"].as_str(),
                row["caller"].as_str().unwrap(),
                row["role"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("issue", "issued", None, "issuer-a", "issuer"),
            ("admit", "accepted", None, "checkpoint-a", "checkpoint"),
            ("admit", "rejected", Some("already_used"), "checkpoint-b", "checkpoint"),
            ("revoke", "revoked", None, "admin-a", "admin"),
        ]
    );
    let first = &trail[0];
    assert_eq!(first["at"], "2026-11-10T02:00:00.000000000Z");
    assert_eq!(first["request_key"], "req-1");
    assert_eq!(first["permit_masked"], "H******78");
    assert!(first["peer"].as_str().expect("peer").starts_with("127.0.0.1:"), "{first}");
    assert_eq!(trail[1]["checkpoint_id"], "SZN-01");
    assert_eq!(trail[1]["mode"], "rail");
    let seqs: Vec<u64> = trail.iter().map(|row| row["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "oldest first: {seqs:?}");

    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_of_an_unknown_or_malformed_pass_id_is_an_error() {
    let server = callers::start().await;
    history(&server).await;

    let output = audit(&server, &"ab".repeat(16), false).await;
    assert_eq!(output.status.code(), Some(2), "{}", text(&output.stdout));
    assert!(text(&output.stderr).contains("no audit rows"), "{}", text(&output.stderr));

    let output = audit(&server, "not-a-pass-id", false).await;
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output.stderr).contains("32 hex digits"), "{}", text(&output.stderr));

    server.stop().await;

    let output = epass(vec!["audit".into(), "--data-dir".into(), "/nonexistent/epass".into(), "ab".repeat(16)]).await;
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output.stderr).contains("no database"), "{}", text(&output.stderr));
}
