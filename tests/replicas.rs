//! Three real `epass serve` processes on one PostgreSQL database and one data directory: the
//! quota, single use and idempotency hold across them, and killing one loses nothing that was
//! acknowledged; `epass db migrate`, and a binary that refuses a database migrated by a newer
//! one. Needs PostgreSQL (see `ScratchDatabase`: skipped when none answers at the
//! default address and `EPASS_TEST_POSTGRES` is unset, failed when it is set and unreachable).

mod replica;

use std::collections::BTreeSet;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tonic::Code;

use epass::access::LocalTokens;
use epass::grpc::pb;
use epass::store::postgres_test_support::ScratchDatabase;
use replica::{application, epass, start_replica, within, Client, Replica, WAIT};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_share_one_postgresql_database() {
    let Some(database) = ScratchDatabase::create().await else { return };
    let dir = tempfile::tempdir().expect("temporary directory");
    let data_dir = dir.path().join("data");
    let config = dir.path().join("epass.toml");
    // Rate limits are per process and per caller; this is about the database.
    std::fs::write(&config, "[limits]\nrate_per_second = 1000000\nshutdown_grace_seconds = 2\n").expect("config");

    // The first replica provisions the data directory (signing key, hashing secret, trust
    // list, local tokens); the others start once it is there and read the same files.
    let first = start_replica(&data_dir, &config, database.url());
    let others: Vec<Replica> = std::thread::scope(|scope| {
        let starting: Vec<_> =
            (0..2).map(|_| scope.spawn(|| start_replica(&data_dir, &config, database.url()))).collect();
        starting.into_iter().map(|s| s.join().expect("replica started")).collect()
    });
    let mut replicas = vec![first];
    replicas.extend(others);
    let tokens = LocalTokens::read(&data_dir).expect("local tokens of the first replica");
    let mut clients = Vec::new();
    for replica in &replicas {
        clients.push(Client::connect(&replica.address, &tokens).await);
    }

    quota_holds_across_replicas(&clients).await;
    one_entry_across_replicas(&clients).await;
    one_request_id_is_one_pass_across_replicas(&clients).await;
    nothing_acknowledged_is_lost_when_a_replica_dies(&clients, &mut replicas[2]).await;

    drop(clients);
    drop(replicas);
    database.drop_database().await;
}

/// 40 applications for one permit, at once, spread round-robin: exactly the monthly quota (2)
/// is issued; every other is refused as RESOURCE_EXHAUSTED.
async fn quota_holds_across_replicas(clients: &[Client]) {
    let calls = (0..40).map(|i| {
        let client = clients[i % clients.len()].clone();
        tokio::spawn(async move { client.issue(application(&format!("quota-{i}"), "H10000001")).await })
    });
    let results = within("quota calls", futures_util::future::join_all(calls)).await;
    let mut issued = 0;
    for result in results {
        match result.expect("task") {
            Ok(_) => issued += 1,
            Err(status) => assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}"),
        }
    }
    assert_eq!(issued, epass_core::policy::MONTHLY_LIMIT, "passes issued for one permit across 3 replicas");
}

/// 30 scans of one pass, at once, at 30 gates over the replicas: one is admitted; every other
/// is ALREADY_USED and names that entry.
async fn one_entry_across_replicas(clients: &[Client]) {
    let issued = clients[0].issue(application("entry-pass", "H10000002")).await.expect("issue");
    let qr_text = Arc::new(issued.qr_text);
    let calls = (0..30).map(|i| {
        let (client, qr_text) = (clients[i % clients.len()].clone(), qr_text.clone());
        tokio::spawn(async move { client.record(&qr_text, &format!("GATE-{i:02}"), &format!("scan-{i}")).await })
    });
    let results = within("entry calls", futures_util::future::join_all(calls)).await;
    let answers: Vec<pb::RecordEntryResponse> =
        results.into_iter().map(|r| r.expect("task").expect("RecordEntry answers")).collect();
    let accepted: Vec<_> = answers.iter().filter(|a| a.verdict == pb::Verdict::Accepted as i32).collect();
    assert_eq!(accepted.len(), 1, "one admission of one pass across 3 replicas");
    let winner = accepted[0].entry.as_ref().expect("an accepted scan carries its entry");
    for answer in answers.iter().filter(|a| a.verdict != pb::Verdict::Accepted as i32) {
        assert_eq!(answer.reason, pb::RejectionReason::AlreadyUsed as i32, "{answer:?}");
        let entry = answer.entry.as_ref().expect("ALREADY_USED names the entry");
        assert_eq!((&entry.scan_id, &entry.checkpoint_id), (&winner.scan_id, &winner.checkpoint_id));
    }
}

/// The same request sent to two replicas at once is one pass.
async fn one_request_id_is_one_pass_across_replicas(clients: &[Client]) {
    let request = application("same-request", "H10000003");
    let (a, b) = within("the same request twice", async {
        tokio::join!(clients[0].issue(request.clone()), clients[1].issue(request))
    })
    .await;
    let (a, b) = (a.expect("first answer"), b.expect("second answer"));
    let id = |r: &pb::IssuePassResponse| r.pass.as_ref().expect("pass").pass_id.clone();
    assert_eq!(id(&a), id(&b), "one request id, one pass");
}

/// Issues and entries run against all three while one is killed with SIGKILL: the other two
/// keep answering, and every pass and entry acknowledged by any replica is still there.
async fn nothing_acknowledged_is_lost_when_a_replica_dies(clients: &[Client], victim: &mut Replica) {
    let stop = Arc::new(AtomicBool::new(false));
    let killed = Arc::new(AtomicBool::new(false));
    let answered_after_kill = Arc::new(AtomicUsize::new(0));
    let passes = Arc::new(Mutex::new(BTreeSet::new()));
    let entries = Arc::new(Mutex::new(Vec::new()));
    let mut workers = Vec::new();
    for worker in 0..6 {
        let client = clients[worker % clients.len()].clone();
        let survivor = worker % clients.len() != 2;
        let (stop, killed, answered) = (stop.clone(), killed.clone(), answered_after_kill.clone());
        let (passes, entries) = (passes.clone(), entries.clone());
        workers.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let permit = format!("M{:02}{:06}", worker, n);
                let after_kill = killed.load(Ordering::Relaxed);
                let issued = match client.issue(application(&format!("load-{worker}-{n}"), &permit)).await {
                    Ok(issued) => issued,
                    Err(status) if !survivor => {
                        // The dying replica: what it did not acknowledge may or may not exist.
                        let _ = status;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                    Err(status) => panic!("a surviving replica failed IssuePass: {status:?}"),
                };
                let pass_id = issued.pass.as_ref().expect("pass").pass_id.clone();
                passes.lock().unwrap().insert(pass_id.clone());
                let (gate, scan) = (format!("GATE-{worker}"), format!("load-scan-{worker}-{n}"));
                match client.record(&issued.qr_text, &gate, &scan).await {
                    Ok(answer) => {
                        assert_eq!(answer.verdict, pb::Verdict::Accepted as i32, "{answer:?}");
                        entries.lock().unwrap().push((pass_id, gate, scan));
                    }
                    Err(status) if !survivor => {
                        let _ = status;
                    }
                    Err(status) => panic!("a surviving replica failed RecordEntry: {status:?}"),
                }
                if survivor && after_kill {
                    answered.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    victim.child.kill().expect("SIGKILL the replica");
    killed.store(true, Ordering::Relaxed);
    victim.child.wait().expect("reap the killed replica");
    // Long enough for the survivors to answer many calls with one replica gone.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        within("load worker", worker).await.expect("load worker");
    }
    assert!(
        answered_after_kill.load(Ordering::Relaxed) > 0,
        "the surviving replicas answered after the kill; killed replica log:\n{}",
        victim.log.lock().unwrap().join("\n")
    );

    let passes = passes.lock().unwrap().clone();
    let entries = entries.lock().unwrap().clone();
    assert!(!passes.is_empty() && !entries.is_empty(), "the load made passes and entries");
    let survivor = &clients[0];
    let mut used = BTreeSet::new();
    for (pass_id, gate, scan) in &entries {
        let pass = within("GetPass", survivor.get(pass_id)).await.expect("an acknowledged pass is there");
        assert_eq!(pass.state, pb::PassState::Used as i32, "{pass:?}");
        let entry = pass.entry.as_ref().expect("an acknowledged entry is there");
        assert_eq!((&entry.checkpoint_id, &entry.scan_id), (gate, scan));
        used.insert(pass_id.clone());
    }
    for pass_id in passes.difference(&used) {
        within("GetPass", survivor.get(pass_id)).await.expect("an acknowledged pass is there");
    }
}

/// `url` with a password in it, if it has none: a server that trusts the test's user ignores
/// it, and it must never appear in any output.
fn with_password(url: &str, password: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let (user, host) = rest.split_once('@')?;
    (!user.contains(':')).then(|| format!("{scheme}://{user}:{password}@{host}"))
}

/// Waits for a process to end, at most [`WAIT`].
fn finish(mut child: Child) -> (std::process::ExitStatus, String) {
    let deadline = std::time::Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("poll the process") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("the process did not end within {WAIT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr is piped"), &mut stderr).expect("stderr");
    (status, stderr)
}

/// `epass db migrate` applies the migrations and prints the version; once a newer build has
/// migrated the database, `serve` (and `db migrate`) refuse it, naming both versions, exit
/// non-zero and never print the URL's password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn db_migrate_and_a_binary_older_than_the_schema() {
    let Some(database) = ScratchDatabase::create().await else { return };
    const PASSWORD: &str = "never-printed-7f3a";
    let url = with_password(database.url(), PASSWORD).unwrap_or_else(|| database.url().to_owned());

    let migrated = epass().args(["db", "migrate"]).env("EPASS_DATABASE_URL", &url).output().expect("run epass");
    let stdout = String::from_utf8_lossy(&migrated.stdout);
    let stderr = String::from_utf8_lossy(&migrated.stderr);
    assert!(migrated.status.success(), "{stdout}{stderr}");
    let known: i64 = stdout
        .trim()
        .rsplit_once("schema version ")
        .and_then(|(_, version)| version.parse().ok())
        .unwrap_or_else(|| panic!("prints the schema version: {stdout}"));
    assert!(known >= 1, "{stdout}");
    assert!(!stdout.contains(PASSWORD) && !stderr.contains(PASSWORD), "{stdout}{stderr}");

    // What a newer build leaves behind: a migration this one does not have.
    let newer = known + 1000;
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(database.url()).await.expect("connect");
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES ($1, 'from a newer epass', true, '\\x00', 0)",
    )
    .bind(newer)
    .execute(&mut conn)
    .await
    .expect("record a newer migration");
    sqlx::Connection::close(conn).await.expect("close");

    let dir = tempfile::tempdir().expect("temporary directory");
    let served = epass()
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .args(["--database-url", &url])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start epass serve");
    let (status, stderr) = finish(served);
    assert!(!status.success(), "serve refuses a newer schema:\n{stderr}");
    let sentence = format!("the database schema is at version {newer}, newer than version {known}");
    assert!(stderr.contains(&sentence), "names both versions:\n{stderr}");
    assert!(!stderr.contains("epass listening"), "{stderr}");
    assert!(!stderr.contains(PASSWORD), "{stderr}");

    let refused = epass().args(["db", "migrate", "--database-url", &url]).output().expect("run epass");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && stderr.contains(&sentence), "{stderr}");
    assert!(!stderr.contains(PASSWORD), "{stderr}");

    database.drop_database().await;
}

/// A database URL of another kind is a configuration error naming `database.url`: exit 64,
/// before anything is bound or opened (the data directory is not created).
#[test]
fn another_scheme_is_a_config_error() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let data_dir = dir.path().join("data");
    let output = epass()
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data_dir)
        .env("EPASS_DATABASE_URL", "mysql://root:never-printed@db/epass")
        .output()
        .expect("run epass");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(i32::from(epass::config::EXIT_CONFIG)), "{stderr}");
    assert!(stderr.contains("config error: database.url:"), "{stderr}");
    assert!(!stderr.contains("never-printed"), "{stderr}");
    assert!(!data_dir.exists(), "nothing was created");
}
