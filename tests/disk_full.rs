//! A full disk, through the real binary: `epass serve` runs in a mount namespace of its own
//! (`unshare -m`) with its data directory on a small tmpfs, which the test fills. Writes must
//! be refused with UNAVAILABLE saying the disk is full (never INTERNAL, never leaving half a
//! pass), health must say NOT_SERVING for as long as the disk is full, and once the filler is
//! deleted the service must resume by itself: health SERVING, and the refused calls, retried,
//! get fresh and complete answers.
//!
//! The test reaches the tmpfs through `/proc/PID/root`, which resolves paths in the server's
//! namespace. The mount dies with the server; nothing is mounted where the rest of the machine
//! sees it. It needs root (CAP_SYS_ADMIN), as the tests have here and in CI.

#[path = "common/application.rs"]
mod application;
#[path = "common/command.rs"]
mod command;
#[path = "common/served.rs"]
mod served;

use std::io::Write as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tonic::transport::Channel;
use tonic::{Code, Status};
use tonic_health::pb::health_check_response::ServingStatus;

use epass::clock::{Clock as _, SystemClock};
use epass::grpc::pb;
use pb::checkpoint_service_client::CheckpointServiceClient;
use pb::issuance_service_client::IssuanceServiceClient;
use served::{bearer, connect, health, must_finish, wait_for_health, Served, Tokens};

/// The tmpfs: room for the database, its log and the space probe, not much more.
const DISK_MIB: u64 = 32;
/// Passes issued before the disk fills, to be admitted while it is full.
const TO_ADMIT: usize = 40;
/// Writes tried at most while the disk is full before one must be refused (a commit may still
/// fit in room of the write-ahead log that a failed commit left allocated).
const TRIES: usize = 400;

/// Runs `epass serve` with `config` in a new mount namespace, its data directory on a fresh
/// tmpfs at `mount`.
fn serve_on_tmpfs(mount: &Path, config: &Path) -> Served {
    let script = format!(
        r#"mount -t tmpfs -o size={DISK_MIB}m,mode=0700 epass-disk-full "$1" && exec "$2" serve --config "$3" \
           --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 --log-format json --data-dir "$1/data""#
    );
    let mut unshare = Command::new("unshare");
    command::hermetic(&mut unshare)
        .args(["--mount", "--propagation", "private", "sh", "-c", &script, "sh"])
        .arg(mount)
        .arg(command::EPASS)
        .arg(config);
    Served::start(unshare)
}

/// Fills the file system of `dir` with one file, to the last byte it takes; gives up (and
/// fails the test) beyond the tmpfs's size, so that a mistake can never fill another disk.
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).expect("create the filler");
    let limit = (DISK_MIB + 1) << 20;
    let mut written = 0u64;
    for chunk in [1 << 20, 4 << 10, 1] {
        let bytes = vec![0x5a; chunk];
        loop {
            assert!(written < limit, "wrote {written} bytes and the disk is not full: not the tmpfs?");
            match file.write(&bytes) {
                Ok(0) => break,
                Ok(n) => written += n as u64,
                Err(error) if error.kind() == std::io::ErrorKind::StorageFull => break,
                Err(error) => panic!("filling: {error}"),
            }
        }
    }
    file.sync_all().ok();
    eprintln!("filler: {written} bytes");
    path
}

/// A refusal for the full disk: UNAVAILABLE, saying so.
fn assert_disk_full(status: &Status, what: &str) {
    assert_eq!(status.code(), Code::Unavailable, "{what}: {status:?}");
    assert!(status.message().contains("disk is full"), "{what}: {status:?}");
}

struct Client {
    channel: Channel,
    tokens: Tokens,
}

impl Client {
    fn application(request_id: &str, permit: &str) -> pb::IssuePassRequest {
        // The server reads the real clock: so does the application.
        application::valid_application(SystemClock.now(), request_id, permit, "+8613800138000")
    }

    async fn issue(&self, request: &pb::IssuePassRequest) -> Result<pb::IssuePassResponse, Status> {
        let mut client = IssuanceServiceClient::new(self.channel.clone());
        client.issue_pass(bearer(request.clone(), &self.tokens.issuer)).await.map(tonic::Response::into_inner)
    }

    async fn get(&self, pass_id: &str) -> pb::Pass {
        let mut client = IssuanceServiceClient::new(self.channel.clone());
        let request = pb::GetPassRequest { pass_id: pass_id.to_owned() };
        let response = client.get_pass(bearer(request, &self.tokens.issuer)).await.expect("GetPass");
        response.into_inner().pass.expect("the pass")
    }

    async fn record(&self, request: &pb::RecordEntryRequest) -> Result<pb::RecordEntryResponse, Status> {
        let mut client = CheckpointServiceClient::new(self.channel.clone());
        client.record_entry(bearer(request.clone(), &self.tokens.checkpoint)).await.map(tonic::Response::into_inner)
    }

    async fn verify(&self, qr_text: &str) -> pb::VerifyPassResponse {
        let request = pb::VerifyPassRequest {
            qr_text: qr_text.to_owned(),
            checkpoint_id: "SZX-AIR-01".to_owned(),
            mode: pb::TransportMode::Air as i32,
        };
        let mut client = CheckpointServiceClient::new(self.channel.clone());
        client.verify_pass(bearer(request, &self.tokens.checkpoint)).await.expect("VerifyPass").into_inner()
    }

    async fn all_health(&self) -> Vec<ServingStatus> {
        let mut all = Vec::new();
        for service in ["", "epass.v1.IssuanceService", "epass.v1.CheckpointService"] {
            all.push(health(&self.channel, service).await);
        }
        all
    }
}

fn entry_request(qr_text: &str, scan_id: &str) -> pb::RecordEntryRequest {
    pb::RecordEntryRequest {
        qr_text: qr_text.to_owned(),
        checkpoint_id: "SZN-RAIL-01".to_owned(),
        mode: pb::TransportMode::Rail as i32,
        scan_id: scan_id.to_owned(),
    }
}

fn time(timestamp: &Option<prost_types::Timestamp>) -> chrono::DateTime<chrono::Utc> {
    let t = timestamp.as_ref().expect("a time");
    chrono::DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap()).expect("in range")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_writes_as_unavailable_and_the_service_resumes_when_space_is_freed() {
    let dir = tempfile::tempdir().unwrap();
    let mount = dir.path().join("disk");
    std::fs::create_dir(&mount).unwrap();
    // Rate limits out of the way: this is about the disk.
    let config = dir.path().join("epass.toml");
    std::fs::write(&config, "[limits]\nrate_per_second = 1000000\n").unwrap();
    let mut server = serve_on_tmpfs(&mount, &config);
    let metrics = server.address_logged("metrics at /metrics");
    let addr = server.address_logged("epass listening");
    // The server's view of the mount point, from outside its namespace.
    let disk = PathBuf::from(format!("/proc/{}/root", server.pid())).join(mount.strip_prefix("/").unwrap());
    assert_ne!(
        std::fs::metadata(&disk).unwrap().dev(),
        std::fs::metadata(&mount).unwrap().dev(),
        "the data directory must be on the test's tmpfs before anything is filled"
    );
    let client = Client { channel: connect(addr).await, tokens: Tokens::read(&disk.join("data")) };
    assert_eq!(client.all_health().await, vec![ServingStatus::Serving; 3]);
    let mut to_admit = Vec::new();
    for n in 0..TO_ADMIT {
        let issued = client.issue(&Client::application(&format!("before-{n}"), &format!("H1{n:07}"))).await;
        to_admit.push(issued.expect("IssuePass before the disk fills").qr_text);
    }

    let filler = fill(&disk);

    // Applications until one is refused: those acknowledged meanwhile were stored whole.
    let mut issued_while_full = Vec::new();
    let mut refused_application = None;
    for n in 0..TRIES {
        let request = Client::application(&format!("full-{n}"), &format!("H2{n:07}"));
        match client.issue(&request).await {
            Ok(response) => issued_while_full.push(response),
            Err(status) => {
                assert_disk_full(&status, "IssuePass");
                refused_application = Some(request);
                break;
            }
        }
    }
    let refused_application = refused_application.expect("an application refused while the disk is full");
    // Entries until one is refused.
    let mut refused_entry = None;
    let mut admitted_while_full = Vec::new();
    for (n, qr_text) in to_admit.iter().enumerate() {
        let request = entry_request(qr_text, &format!("scan-full-{n}"));
        match client.record(&request).await {
            Ok(response) => admitted_while_full.push(response),
            Err(status) => {
                assert_disk_full(&status, "RecordEntry");
                refused_entry = Some(request);
                break;
            }
        }
    }
    let refused_entry = refused_entry.expect("an entry refused while the disk is full");
    eprintln!(
        "while full: {} applications and {} entries still fitted before the refusals",
        issued_while_full.len(),
        admitted_while_full.len()
    );
    assert_eq!(client.all_health().await, vec![ServingStatus::NotServing; 3]);

    // Verification only reads, and still answers; its audit row cannot be written, and is
    // dropped and counted (a row or two may still fit, as a commit may).
    let unused = &to_admit[to_admit.len() - 1];
    must_finish("a verification's audit row counted as dropped", async {
        loop {
            let verdict = client.verify(unused).await;
            assert_eq!(verdict.verdict, pb::Verdict::Accepted as i32, "{verdict:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
            if served::metric(&served::scrape(metrics), "epass_audit_rows_dropped_total") >= 1.0 {
                break;
            }
        }
    })
    .await;

    // For as long as the disk is full: several probes later, still NOT_SERVING.
    tokio::time::sleep(3 * epass::grpc::PROBE_INTERVAL + Duration::from_millis(500)).await;
    assert_eq!(client.all_health().await, vec![ServingStatus::NotServing; 3]);

    // Passes carry whole seconds.
    let freed_at = chrono::SubsecRound::trunc_subsecs(SystemClock.now(), 0);
    std::fs::remove_file(&filler).expect("delete the filler");
    // No restart: the server finds out by itself.
    wait_for_health(&client.channel, ServingStatus::Serving).await;
    assert_eq!(client.all_health().await, vec![ServingStatus::Serving; 3]);

    // The refused application, retried: a new pass, issued now, whole.
    let retried = client.issue(&refused_application).await.expect("the refused application, retried");
    assert!(!retried.replayed, "nothing was stored of the refused call");
    let pass = retried.pass.clone().expect("the pass");
    assert!(time(&pass.issued_at) >= freed_at, "issued after the space was freed: {pass:?}");
    let stored = client.get(&pass.pass_id).await;
    assert_eq!(stored.issued_at, pass.issued_at);
    assert_eq!(client.verify(&retried.qr_text).await.verdict, pb::Verdict::Accepted as i32);
    // Its permit's quota counts that pass alone: one more application, then the limit.
    let permit = refused_application.applicant.as_ref().unwrap().permit_number.clone();
    client.issue(&Client::application("after-1", &permit)).await.expect("the month's second application");
    let limit = client.issue(&Client::application("after-2", &permit)).await.expect_err("a third application");
    assert_eq!(limit.code(), Code::ResourceExhausted, "{limit:?}");

    // The refused entry, resent: recorded now.
    let admitted = client.record(&refused_entry).await.expect("the refused entry, resent");
    assert_eq!(admitted.verdict, pb::Verdict::Accepted as i32, "{admitted:?}");
    assert!(time(&admitted.entry.as_ref().expect("the entry").recorded_at) >= freed_at, "{admitted:?}");

    // What was acknowledged while the disk was full is there.
    for response in &issued_while_full {
        let pass = response.pass.as_ref().unwrap();
        assert_eq!(client.get(&pass.pass_id).await.issued_at, pass.issued_at);
    }
    for response in &admitted_while_full {
        let pass_id = &response.pass.as_ref().unwrap().pass_id;
        assert_eq!(client.get(pass_id).await.entry, response.entry);
    }

    let (status, log) = server.stop();
    let log = log.join("\n");
    assert!(status.success(), "exit: {status:?}\n{log}");
    assert!(log.contains("disk is full"), "the log says why: {log}");
    assert!(!log.contains("panicked"), "{log}");
}
