//! Two replicas on one PostgreSQL database rotate their signing key with no window in which a
//! valid pass fails verification, following README *Several replicas*, *Rotating the signing
//! key*: a trust list that lists the next key as active beside the current one goes to every
//! replica first, then the replicas switch their signing key one by one, then a list retires
//! the old key. Each replica is restarted in turn with SIGTERM, as an operator would.
//!
//! At every step, including while one replica is down, each live replica issues a pass, and
//! every pass issued so far is verified online on every live replica (so on the replica that
//! did not issue it) and offline with the trust list and status list each live replica hands
//! out through `KeyService`. Needs PostgreSQL (see `ScratchDatabase`).

mod replica;

use std::ffi::OsStr;
use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use epass::access::LocalTokens;
use epass::clock::Clock as _;
use epass::datadir::{read_verification_key, RETIRED_KEYS_DIR, ROOT_KEY_FILE, SIGNING_KEY_FILE, TRUST_LIST_FILE};
use epass::grpc::pb;
use epass::store::postgres_test_support::ScratchDatabase;
use epass_core::keys::{KeyStatus, VerificationKey};
use epass_core::offline::{verify_offline, OfflineContext, Outcome, StatusCheck};
use epass_core::pass::TransportMode;
use epass_core::trust::TrustList;
use epass_core::verify::CheckTime;
use replica::{application, run_epass, start_replica, within, Client, Replica};

/// A pass issued during the rotation.
struct Issued {
    qr_text: String,
    key_id: String,
    issued_by: usize,
    step: String,
}

/// Two replicas, each with its own data directory, as on two machines.
struct Deployment {
    database_url: String,
    config: PathBuf,
    root: VerificationKey,
    dirs: [PathBuf; 2],
    replicas: [Option<Replica>; 2],
    clients: [Option<Client>; 2],
    tokens: LocalTokens,
    passes: Vec<Issued>,
    verified_elsewhere: usize,
}

impl Deployment {
    fn live(&self) -> Vec<usize> {
        (0..2).filter(|&i| self.clients[i].is_some()).collect()
    }

    /// Each live replica issues a pass, which must carry the key `signs[i]`; then every pass so
    /// far is verified on every live replica and offline with every live replica's lists.
    async fn check(&mut self, step: &str, signs: [&str; 2]) {
        for i in self.live() {
            let n = self.passes.len();
            let client = self.clients[i].as_ref().expect("live");
            let issued = within("IssuePass", client.issue(application(&format!("rotation-{n}"), &format!("H3{n:07}"))))
                .await
                .unwrap_or_else(|status| panic!("{step}: replica {i} failed IssuePass: {status:?}"));
            let key_id = issued.pass.as_ref().expect("pass").key_id.clone();
            assert_eq!(key_id, signs[i], "{step}: the key replica {i} signs with");
            self.passes.push(Issued { qr_text: issued.qr_text, key_id, issued_by: i, step: step.to_owned() });
        }
        let now = epass::clock::SystemClock.now();
        for j in self.live() {
            let client = self.clients[j].as_ref().expect("live");
            let trust = within("GetTrustList", client.trust_list()).await;
            let status = within("GetStatusList", client.status_list(0)).await;
            for pass in &self.passes {
                let what = format!(
                    "{step}: the pass signed by {} on replica {} at step '{}', checked on replica {j}",
                    pass.key_id, pass.issued_by, pass.step
                );
                let online = within("VerifyPass", client.verify(&pass.qr_text))
                    .await
                    .unwrap_or_else(|status| panic!("{what}: VerifyPass failed: {status:?}"));
                assert_eq!(online.verdict, pb::Verdict::Accepted as i32, "{what}, online: {online:?}");
                if pass.issued_by != j {
                    self.verified_elsewhere += 1;
                }
                let context = OfflineContext {
                    root_key: &self.root,
                    trust_list: &trust.trust_list,
                    held_trust_sequence: None,
                    status_list: Some(&status.status_list),
                    status_deltas: &[],
                    held_status_sequence: None,
                    mode: TransportMode::Air,
                    time: CheckTime::exact(now),
                };
                let offline = verify_offline(&pass.qr_text, &context);
                assert_eq!(offline.outcome, Outcome::Accepted, "{what}, offline with trust list #{}", trust.sequence);
                assert!(
                    matches!(offline.status, StatusCheck::Checked { .. }),
                    "{what}: the replica's status list is signed by a key of its own trust list: {:?}",
                    offline.status
                );
            }
        }
    }

    /// The trust list replica `i` hands out.
    async fn trust_list(&self, i: usize) -> TrustList {
        let client = self.clients[i].as_ref().expect("live");
        let bytes = within("GetTrustList", client.trust_list()).await.trust_list;
        TrustList::open(&bytes, &self.root).expect("a root-signed list")
    }

    /// Restarts replica `i` after `change` alters its data directory, checking while it is
    /// down and once it is back.
    async fn restart(&mut self, i: usize, step: &str, signs_after: [&str; 2], change: impl FnOnce(&Path)) {
        self.clients[i] = None;
        self.replicas[i].take().expect("running").stop();
        self.check(&format!("{step} (replica {i} down)"), signs_after).await;
        change(&self.dirs[i]);
        let replica = start_replica(&self.dirs[i], &self.config, &self.database_url);
        self.clients[i] = Some(Client::connect(&replica.address, &self.tokens).await);
        self.replicas[i] = Some(replica);
        self.check(step, signs_after).await;
    }
}

fn copy(from: &Path, to: &Path) {
    // std::fs::copy keeps the mode (0600 for keys and secrets).
    std::fs::copy(from, to).unwrap_or_else(|e| panic!("copy {} to {}: {e}", from.display(), to.display()));
}

fn key_id(path: &Path) -> String {
    read_verification_key(path, KeyStatus::Active).expect("key file").key_id().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_rotate_the_signing_key_with_no_failed_verification() {
    let Some(database) = ScratchDatabase::create().await else { return };
    let dir = tempfile::tempdir().expect("temporary directory");
    let config = dir.path().join("epass.toml");
    std::fs::write(&config, "[limits]\nrate_per_second = 1000000\nshutdown_grace_seconds = 2\n").expect("config");

    // The root machine (offline in production): the root key, both pass-signing keys, lists.
    let offline = dir.path().join("root-machine");
    std::fs::create_dir(&offline).expect("root machine directory");
    let at = |name: &str| offline.join(name);
    for name in ["root-key.pem", "k1.pem", "k2.pem"] {
        run_epass(&["keygen".as_ref(), "--out".as_ref(), at(name).as_os_str()]);
    }
    run_epass(&[
        "root".as_ref(),
        "export".as_ref(),
        "--root".as_ref(),
        at("root-key.pem").as_os_str(),
        "--out".as_ref(),
        at("root-public-key.pem").as_os_str(),
    ]);
    let build = |out: &str, active: &str, next: Option<&str>, previous: Option<&str>| {
        let mut args: Vec<&OsStr> = vec!["trust-list".as_ref(), "build".as_ref()];
        let (root, active, out) = (at("root-key.pem"), at(active), at(out));
        args.extend([OsStr::new("--root"), root.as_os_str(), OsStr::new("--active"), active.as_os_str()]);
        let next = next.map(at);
        if let Some(next) = &next {
            args.extend([OsStr::new("--next"), next.as_os_str()]);
        }
        let previous = previous.map(at);
        if let Some(previous) = &previous {
            args.extend([OsStr::new("--previous"), previous.as_os_str()]);
        }
        args.extend([OsStr::new("--out"), out.as_os_str()]);
        run_epass(&args);
    };
    build("list-1.bin", "k1.pem", None, None);
    let (k1, k2) = (key_id(&at("k1.pem")), key_id(&at("k2.pem")));
    let root = read_verification_key(&at("root-public-key.pem"), KeyStatus::Active).expect("root public key");

    // Start two replicas (README, *Several replicas*): the first data directory gets the
    // signing key, the root public key and the list; the first start adds the hashing secret
    // and the local tokens, and the second replica gets a copy of all five.
    let dirs = [dir.path().join("a"), dir.path().join("b")];
    for data in &dirs {
        std::fs::DirBuilder::new().mode(0o700).create(data).expect("data directory");
    }
    copy(&at("k1.pem"), &dirs[0].join(SIGNING_KEY_FILE));
    copy(&at("root-public-key.pem"), &dirs[0].join(ROOT_KEY_FILE));
    copy(&at("list-1.bin"), &dirs[0].join(TRUST_LIST_FILE));
    let first = start_replica(&dirs[0], &config, database.url());
    for file in [SIGNING_KEY_FILE, ROOT_KEY_FILE, TRUST_LIST_FILE, "hashing-secret", "local-tokens.toml"] {
        copy(&dirs[0].join(file), &dirs[1].join(file));
    }
    let second = start_replica(&dirs[1], &config, database.url());
    let tokens = LocalTokens::read(&dirs[0]).expect("local tokens");
    let clients = [Client::connect(&first.address, &tokens).await, Client::connect(&second.address, &tokens).await];
    let mut deployment = Deployment {
        database_url: database.url().to_owned(),
        config,
        root,
        dirs,
        replicas: [Some(first), Some(second)],
        clients: clients.map(Some),
        tokens,
        passes: Vec::new(),
        verified_elsewhere: 0,
    };
    deployment.check("before the rotation", [&k1, &k1]).await;

    // 1. A list with the next key active beside the current one reaches every replica, while
    //    both still sign with k1.
    build("list-2.bin", "k1.pem", Some("k2.pem"), Some("list-1.bin"));
    for i in 0..2 {
        deployment
            .restart(i, &format!("1. list 2 on replica {i}"), [&k1, &k1], |data| {
                copy(&at("list-2.bin"), &data.join(TRUST_LIST_FILE));
            })
            .await;
    }
    for i in 0..2 {
        let list = deployment.trust_list(i).await;
        let statuses: Vec<_> = list.keys.iter().map(|k| (k.key_id().to_string(), k.status)).collect();
        assert_eq!(statuses, vec![(k1.clone(), KeyStatus::Active), (k2.clone(), KeyStatus::Active)]);
    }

    // 2. The replicas switch to k2 one by one; k1 goes to retired-keys/.
    let mut signs = [k1.as_str(), k1.as_str()];
    for i in 0..2 {
        signs[i] = &k2;
        deployment
            .restart(i, &format!("2. replica {i} signs with k2"), signs, |data| {
                let retired = data.join(RETIRED_KEYS_DIR);
                std::fs::DirBuilder::new().mode(0o700).create(&retired).expect("retired-keys");
                std::fs::rename(data.join(SIGNING_KEY_FILE), retired.join("k1.pem")).expect("retire k1");
                copy(&at("k2.pem"), &data.join(SIGNING_KEY_FILE));
            })
            .await;
    }

    // 3. A list that retires k1. It stops k1's signing period at the second it is built, so it
    //    is built after the last k1 pass's second (README: wait after the last switch).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    build("list-3.bin", "k2.pem", None, Some("list-2.bin"));
    for i in 0..2 {
        deployment
            .restart(i, &format!("3. list 3 on replica {i}"), [&k2, &k2], |data| {
                copy(&at("list-3.bin"), &data.join(TRUST_LIST_FILE));
            })
            .await;
    }
    let list = deployment.trust_list(0).await;
    assert_eq!(list.sequence, 3);
    let statuses: Vec<_> = list.keys.iter().map(|k| (k.key_id().to_string(), k.status)).collect();
    assert_eq!(statuses, vec![(k2.clone(), KeyStatus::Active), (k1.clone(), KeyStatus::Retired)]);
    deployment.check("after the rotation", [&k2, &k2]).await;

    let from_k1 = deployment.passes.iter().filter(|p| p.key_id == k1).count();
    assert!(from_k1 >= 10 && deployment.passes.len() > from_k1, "passes of both keys were checked");
    assert!(deployment.verified_elsewhere > 100, "{} checks on the other replica", deployment.verified_elsewhere);
    println!(
        "{} passes ({from_k1} signed by k1), {} online checks on the replica that did not issue the pass",
        deployment.passes.len(),
        deployment.verified_elsewhere
    );

    drop(deployment);
    database.drop_database().await;
}
