//! The journal of a checkpoint without a network: `admit --offline` verifies a pass as
//! `verify --offline` does and, when it is accepted, appends the entry to the journal (synced
//! to disk) before it prints ACCEPTED; `sync` uploads the entries not yet acknowledged
//! (`SyncEntries`) and records each acknowledgement.
//!
//! Two append-only files, one JSON object a line, never rewritten (docs/FORMAT.md, *The
//! offline journal*): the journal (`--journal FILE`: a header line, then one line per entry,
//! each chained to the one before by hash) and its acknowledgements (`FILE.acks`: one line per
//! entry the server answered). A line is written with one `write` and synced before the command
//! goes on; a line cut short by a crash has no line feed, and was never acted on: `admit`
//! removes it before appending, `sync` ignores it. The journal also answers for single use at
//! this checkpoint before any sync: a pass it holds is refused here (`ALREADY_USED`, naming
//! the entry).
//!
//! One command at a time per journal: a scanner admits holders one after another. Nothing
//! locks the files against two commands writing the same journal at once.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context as _};
use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use clap::Args;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::commands::{mode_message, AdmitArgs, ServerArg};
use super::input::read_file;
use super::online::{connect, status_error};
use super::output::{print_verdict, time_text, trust_problem_name, Printed, Shown};
use crate::access::Role;
use crate::clock::{Clock, SystemClock};
use crate::datadir::read_verification_key;
use crate::grpc::pb;
use epass_core::ids::PassId;
use epass_core::journal::{check_chain, EntryHash, JournalEntry, GENESIS};
use epass_core::keys::KeyStatus;
use epass_core::offline::{OfflineContext, Outcome};
use epass_core::pass::TransportMode;
use epass_core::verify::{CheckTime, EntryRecord, Rejection};

/// The first line's `format`.
const JOURNAL_FORMAT: &str = "epass-journal/v1";

/// Entries sent in one `SyncEntries` request (the server takes up to 1000).
const SYNC_BATCH: usize = 500;

/// Test hook: the point at which the command aborts, as a kill would stop it there. Read only
/// at the two points where a crash matters: `admit-after-append` (the entry is on disk,
/// ACCEPTED not yet printed) and `sync-after-upload` (the server answered, the
/// acknowledgements not yet written).
const CRASH_AT: &str = "EPASS_TEST_CRASH_AT";

fn crash_point(name: &str) {
    if std::env::var(CRASH_AT).is_ok_and(|point| point == name) {
        std::process::abort();
    }
}

/// The flags `admit --offline` adds to `admit`.
#[derive(Debug, Args)]
pub(super) struct OfflineAdmitArgs {
    /// Admit here, with no server: verify as `verify --offline` does (--root, --trust-list,
    /// --status-list) and record the entry in --journal before printing ACCEPTED. `epass sync`
    /// uploads the journal later.
    #[arg(long, requires_all = ["root", "trust_list", "journal"])]
    pub(super) offline: bool,
    /// The root public key the trust list must be signed by.
    #[arg(long, value_name = "ROOT_KEY_PEM", requires = "offline")]
    pub(super) root: Option<PathBuf>,
    /// The root-signed trust list (from `epass fetch`).
    #[arg(long, value_name = "FILE", requires = "offline")]
    pub(super) trust_list: Option<PathBuf>,
    /// The full signed status list from `epass fetch`; without it, single use is checked
    /// against this checkpoint's journal only.
    #[arg(long, value_name = "FILE", requires = "offline")]
    pub(super) status_list: Option<PathBuf>,
    /// The highest trust list sequence this checkpoint has seen.
    #[arg(long, value_name = "N", requires = "offline")]
    pub(super) held_sequence: Option<u64>,
    /// The highest status list sequence this checkpoint has used.
    #[arg(long, value_name = "N", requires = "status_list")]
    pub(super) held_status_sequence: Option<u64>,
    /// How far this machine's clock may be off, 0 to 600 seconds (default 0).
    #[arg(long, value_name = "SECONDS", requires = "offline", value_parser = clap::value_parser!(u32).range(0..=600))]
    pub(super) tolerance: Option<u32>,
    /// The journal file, created on first use (with FILE.acks beside it once synced).
    #[arg(long, value_name = "FILE", requires = "offline")]
    pub(super) journal: Option<PathBuf>,
}

/// `epass sync`.
#[derive(Debug, Args)]
pub(super) struct SyncArgs {
    #[command(flatten)]
    pub(super) server: ServerArg,
    /// The journal that `admit --offline` wrote.
    #[arg(long, value_name = "FILE")]
    pub(super) journal: PathBuf,
    /// Print JSON.
    #[arg(long)]
    pub(super) json: bool,
}

/// The journal's first line.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct HeaderLine {
    format: String,
    journal_id: String,
}

/// One entry's line: the fields of [`JournalEntry`], its hash and the QR text admitted.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryLine {
    seq: u64,
    scan_id: String,
    pass_id: String,
    checkpoint_id: String,
    mode: String,
    recorded_at: String,
    prev_hash: String,
    hash: String,
    qr_text: String,
}

/// One acknowledgement's line.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct AckLine {
    seq: u64,
    hash: String,
    outcome: String,
}

/// An entry read back.
#[derive(Debug, Clone)]
struct Stored {
    entry: JournalEntry,
    hash: EntryHash,
    qr_text: String,
}

/// The journal as read: its id and every complete entry, the chain checked.
#[derive(Debug)]
struct Journal {
    id: String,
    entries: Vec<Stored>,
}

fn mode_named(name: &str) -> Option<TransportMode> {
    use TransportMode::{Air, Foot, Rail, Road, Sea};
    [Air, Rail, Road, Sea, Foot].into_iter().find(|mode| mode.name() == name)
}

fn hash_named(text: &str) -> Option<EntryHash> {
    hex::decode(text).ok().and_then(|bytes| EntryHash::from_slice(&bytes))
}

fn time_exact(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Nanos, true)
}

/// The complete lines of a file: a last line without its line feed was cut short by a crash
/// and is left out. Returns the lines and the length of the complete part.
fn complete_lines(text: &str) -> (Vec<&str>, usize) {
    let complete = text.rfind('\n').map_or(0, |end| end + 1);
    (text[..complete].lines().collect(), complete)
}

impl Journal {
    fn parse(text: &str, path: &Path) -> anyhow::Result<Self> {
        let (lines, _) = complete_lines(text);
        let Some((header, lines)) = lines.split_first() else { bail!("{} has no header line", path.display()) };
        let header: HeaderLine = serde_json::from_str(header)
            .with_context(|| format!("{}: line 1 is not a journal header", path.display()))?;
        if header.format != JOURNAL_FORMAT {
            bail!("{}: format {:?}, not {JOURNAL_FORMAT:?}", path.display(), header.format);
        }
        let mut entries = Vec::with_capacity(lines.len());
        for (i, line) in lines.iter().enumerate() {
            let at = || format!("{}, line {}", path.display(), i + 2);
            let line: EntryLine = serde_json::from_str(line).with_context(|| format!("{}: not an entry", at()))?;
            let pass_id: PassId = line.pass_id.parse().map_err(|_| anyhow::anyhow!("{}: bad pass_id", at()))?;
            let entry = JournalEntry {
                journal_id: header.journal_id.clone(),
                seq: line.seq,
                scan_id: line.scan_id,
                pass_id,
                checkpoint_id: line.checkpoint_id,
                mode: mode_named(&line.mode).with_context(|| format!("{}: bad mode", at()))?,
                recorded_at: DateTime::parse_from_rfc3339(&line.recorded_at)
                    .with_context(|| format!("{}: bad recorded_at", at()))?
                    .with_timezone(&Utc),
                prev_hash: hash_named(&line.prev_hash).with_context(|| format!("{}: bad prev_hash", at()))?,
            };
            let hash = hash_named(&line.hash).with_context(|| format!("{}: bad hash", at()))?;
            entries.push(Stored { entry, hash, qr_text: line.qr_text });
        }
        let all: Vec<JournalEntry> = entries.iter().map(|s| s.entry.clone()).collect();
        let hashes = check_chain(&header.journal_id, (0, GENESIS), &all)
            .with_context(|| format!("{}: the journal's chain is broken", path.display()))?;
        if let Some((stored, _)) = entries.iter().zip(&hashes).find(|(stored, hash)| stored.hash != **hash) {
            bail!("{}: entry {} does not match its hash: it was changed", path.display(), stored.entry.seq);
        }
        Ok(Self { id: header.journal_id, entries })
    }

    /// Reads a journal for upload; a line cut short at the end is ignored.
    fn read(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::parse(&text, path)
    }

    /// Opens the journal to append to, creating it (header synced, directory synced) if it
    /// does not exist, and removing a line cut short at its end.
    fn open(path: &Path) -> anyhow::Result<(Self, File)> {
        if !path.exists() {
            create(path)?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        let text = std::io::read_to_string(&mut file).with_context(|| format!("reading {}", path.display()))?;
        let (_, complete) = complete_lines(&text);
        if complete < text.len() {
            // Cut short by a crash before its sync: never acted on, so never printed.
            file.set_len(complete as u64)
                .and_then(|()| file.sync_all())
                .with_context(|| format!("removing the incomplete last line of {}", path.display()))?;
        }
        Ok((Self::parse(&text, path)?, file))
    }

    fn entry_of(&self, pass_id: PassId) -> Option<&Stored> {
        self.entries.iter().find(|stored| stored.entry.pass_id == pass_id)
    }

    /// Appends an entry: one write, then a sync, before the caller acts on it.
    fn append(&mut self, file: &mut File, stored: Stored) -> anyhow::Result<()> {
        let entry = &stored.entry;
        let line = EntryLine {
            seq: entry.seq,
            scan_id: entry.scan_id.clone(),
            pass_id: entry.pass_id.to_string(),
            checkpoint_id: entry.checkpoint_id.clone(),
            mode: entry.mode.name().to_owned(),
            recorded_at: time_exact(entry.recorded_at),
            prev_hash: entry.prev_hash.to_string(),
            hash: stored.hash.to_string(),
            qr_text: stored.qr_text.clone(),
        };
        let mut bytes = serde_json::to_vec(&line)?;
        bytes.push(b'\n');
        file.write_all(&bytes).and_then(|()| file.sync_all()).context("writing the journal")?;
        self.entries.push(stored);
        Ok(())
    }
}

/// Creates a journal with its header: written and synced under a temporary name, then linked
/// into place (which fails rather than replace a journal created meanwhile), and the directory
/// synced, so that the journal exists whole or not at all.
fn create(path: &Path) -> anyhow::Result<()> {
    let journal_id = hex::encode(rand::random::<[u8; 16]>());
    let header = HeaderLine { format: JOURNAL_FORMAT.to_owned(), journal_id };
    let mut bytes = serde_json::to_vec(&header)?;
    bytes.push(b'\n');
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".new");
    let temporary = PathBuf::from(temporary);
    let mut file = File::create(&temporary).with_context(|| format!("creating {}", temporary.display()))?;
    file.write_all(&bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", temporary.display()))?;
    std::fs::hard_link(&temporary, path).with_context(|| format!("creating {}", path.display()))?;
    std::fs::remove_file(&temporary).with_context(|| format!("removing {}", temporary.display()))?;
    sync_directory(path)
}

fn sync_directory(path: &Path) -> anyhow::Result<()> {
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    File::open(directory).and_then(|d| d.sync_all()).with_context(|| format!("syncing {}", directory.display()))
}

fn entry_record(entry: &JournalEntry) -> EntryRecord {
    EntryRecord {
        recorded_at: entry.recorded_at,
        checkpoint_id: entry.checkpoint_id.clone(),
        mode: entry.mode,
        scan_id: entry.scan_id.clone(),
    }
}

/// `admit --offline`.
pub(super) fn admit_offline(args: &AdmitArgs) -> anyhow::Result<ExitCode> {
    let offline = &args.offline;
    let (Some(root_path), Some(trust_path), Some(journal_path)) =
        (&offline.root, &offline.trust_list, &offline.journal)
    else {
        bail!("--offline needs --root, --trust-list and --journal");
    };
    let root = read_verification_key(root_path, KeyStatus::Active)?;
    let trust_list = read_file(trust_path)?;
    let status_list = offline.status_list.as_deref().map(read_file).transpose()?;
    // The journal first: a journal that cannot be read or written admits nobody.
    let (mut journal, mut file) = Journal::open(journal_path)?;
    let scan_id = args.scan_id.clone().unwrap_or_else(|| format!("scan-{}", hex::encode(rand::random::<[u8; 16]>())));
    if journal.entries.iter().any(|stored| stored.entry.scan_id == scan_id) {
        bail!("scan id {scan_id:?} is in the journal already; use a new one");
    }
    let qr_text = args.scan.qr_text()?;
    let now = SystemClock.now();
    let context = OfflineContext {
        root_key: &root,
        trust_list: &trust_list,
        held_trust_sequence: offline.held_sequence,
        status_list: status_list.as_deref(),
        status_deltas: &[],
        held_status_sequence: offline.held_status_sequence,
        mode: args.scan.mode.into(),
        time: CheckTime { now, tolerance: TimeDelta::seconds(offline.tolerance.unwrap_or(0).into()) },
    };
    let verdict = epass_core::offline::verify_offline(&qr_text, &context);
    let summary = verdict.pass.as_ref().map(crate::grpc::summary_of);
    let mut printed = match (&verdict.outcome, &verdict.pass) {
        (Outcome::Accepted, Some(pass)) => {
            if let Some(earlier) = journal.entry_of(pass.pass_id()) {
                // The journal is this checkpoint's own status list, ahead of any server's.
                let rejection = Rejection::AlreadyUsed(entry_record(&earlier.entry));
                Printed {
                    detail: format!(
                        "{rejection}: admitted here while offline, journal entry {} of {}",
                        earlier.entry.seq,
                        journal_path.display()
                    ),
                    ..Printed::offline(Shown::Rejected, Some(&rejection), summary, verdict.status)
                }
            } else {
                let entry = JournalEntry {
                    journal_id: journal.id.clone(),
                    seq: journal.entries.len() as u64 + 1,
                    scan_id,
                    pass_id: pass.pass_id(),
                    checkpoint_id: args.scan.checkpoint.clone(),
                    mode: args.scan.mode.into(),
                    recorded_at: now,
                    prev_hash: journal.entries.last().map_or(GENESIS, |stored| stored.hash),
                };
                let hash = entry.hash()?;
                let record = entry_record(&entry);
                journal.append(&mut file, Stored { entry, hash, qr_text })?;
                crash_point("admit-after-append");
                Printed {
                    entry: Some(crate::grpc::entry_of(&record)),
                    note: Some("admitted offline: the entry is in the journal; run `epass sync` once online"),
                    ..Printed::offline(Shown::Accepted, None, summary, verdict.status)
                }
            }
        }
        (Outcome::Accepted, None) => bail!("an accepted pass without its contents"),
        (Outcome::Rejected(rejection), _) => {
            Printed::offline(Shown::Rejected, Some(rejection), summary, verdict.status)
        }
        (Outcome::CannotDecide(error), _) => Printed {
            reason: Some(trust_problem_name(error)),
            detail: error.to_string(),
            ..Printed::offline(Shown::CannotDecide, None, summary, verdict.status)
        },
    };
    printed.trust_sequence = verdict.trust_sequence;
    Ok(print_verdict(&printed, args.scan.json))
}

fn acks_path(journal: &Path) -> PathBuf {
    let mut name = journal.as_os_str().to_owned();
    name.push(".acks");
    PathBuf::from(name)
}

/// Opens the acknowledgements to append to (creating the file), removes a line cut short at
/// its end, and returns the last entry acknowledged, each acknowledgement checked against the
/// journal's entry.
fn open_acks(path: &Path, journal: &Journal) -> anyhow::Result<(u64, File)> {
    let existed = path.exists();
    let mut file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    if !existed {
        sync_directory(path)?;
    }
    let text = std::io::read_to_string(&mut file).with_context(|| format!("reading {}", path.display()))?;
    let (lines, complete) = complete_lines(&text);
    if complete < text.len() {
        file.set_len(complete as u64)
            .and_then(|()| file.sync_all())
            .with_context(|| format!("removing the incomplete last line of {}", path.display()))?;
    }
    let mut acknowledged = 0;
    for (i, line) in lines.iter().enumerate() {
        let ack: AckLine = serde_json::from_str(line)
            .with_context(|| format!("{}, line {}: not an acknowledgement", path.display(), i + 1))?;
        let stored =
            ack.seq.checked_sub(1).and_then(|index| journal.entries.get(index as usize)).with_context(|| {
                format!("{}: entry {} acknowledged, but not in the journal", path.display(), ack.seq)
            })?;
        if stored.hash.to_string() != ack.hash {
            bail!("{}: entry {} acknowledged with another hash: the journal was changed", path.display(), ack.seq);
        }
        acknowledged = acknowledged.max(ack.seq);
    }
    Ok((acknowledged, file))
}

fn outcome_name(outcome: i32) -> &'static str {
    match pb::SyncOutcome::try_from(outcome) {
        Ok(pb::SyncOutcome::Recorded) => "recorded",
        Ok(pb::SyncOutcome::AlreadyRecorded) => "already_recorded",
        Ok(pb::SyncOutcome::Conflict) => "conflict",
        Ok(pb::SyncOutcome::Unspecified) | Err(_) => "unknown",
    }
}

fn entry_json(entry: Option<&pb::Entry>) -> serde_json::Value {
    entry.map_or(serde_json::Value::Null, |e| {
        json!({
            "recorded_at": time_text(e.recorded_at.as_ref()),
            "checkpoint_id": e.checkpoint_id,
            "scan_id": e.scan_id,
        })
    })
}

fn entry_text(entry: Option<&pb::Entry>) -> String {
    entry.map_or_else(String::new, |e| {
        format!("{} at {} (scan {})", time_text(e.recorded_at.as_ref()), e.checkpoint_id, e.scan_id)
    })
}

/// `sync`.
pub(super) async fn sync(args: SyncArgs) -> anyhow::Result<ExitCode> {
    let journal = Journal::read(&args.journal)?;
    let acks = acks_path(&args.journal);
    let (acknowledged, mut ack_file) = open_acks(&acks, &journal)?;
    let pending: Vec<&Stored> = journal.entries.iter().filter(|s| s.entry.seq > acknowledged).collect();
    let mut results = Vec::new();
    if !pending.is_empty() {
        let mut client = pb::checkpoint_service_client::CheckpointServiceClient::new(
            connect(&args.server, Some(Role::Checkpoint)).await?,
        );
        for batch in pending.chunks(SYNC_BATCH) {
            let entries = batch
                .iter()
                .map(|stored| {
                    let e = &stored.entry;
                    pb::JournalEntry {
                        seq: e.seq,
                        scan_id: e.scan_id.clone(),
                        qr_text: stored.qr_text.clone(),
                        checkpoint_id: e.checkpoint_id.clone(),
                        mode: mode_message(mode_arg(e.mode)) as i32,
                        recorded_at: Some(crate::grpc::timestamp_of(e.recorded_at)),
                        prev_hash: e.prev_hash.0.to_vec(),
                        hash: stored.hash.0.to_vec(),
                    }
                })
                .collect();
            let request = pb::SyncEntriesRequest { journal_id: journal.id.clone(), entries };
            let answer = client.sync_entries(request).await.map_err(status_error)?.into_inner();
            crash_point("sync-after-upload");
            if answer.results.len() != batch.len() {
                bail!("the server answered {} of {} entries; nothing acknowledged", answer.results.len(), batch.len());
            }
            let mut lines = Vec::new();
            for (stored, result) in batch.iter().zip(&answer.results) {
                if result.seq != stored.entry.seq {
                    bail!("the server answered entry {} for entry {}", result.seq, stored.entry.seq);
                }
                let ack = AckLine {
                    seq: result.seq,
                    hash: stored.hash.to_string(),
                    outcome: outcome_name(result.outcome).to_owned(),
                };
                lines.extend(serde_json::to_vec(&ack)?);
                lines.push(b'\n');
            }
            ack_file
                .write_all(&lines)
                .and_then(|()| ack_file.sync_all())
                .with_context(|| format!("writing {}", acks.display()))?;
            results.extend(answer.results);
        }
    }
    let last = journal.entries.last().map_or(0, |s| s.entry.seq);
    let count = |name: &str| results.iter().filter(|r| outcome_name(r.outcome) == name).count();
    if args.json {
        let rows: Vec<_> = results
            .iter()
            .map(|r| {
                json!({
                    "seq": r.seq,
                    "scan_id": r.scan_id,
                    "pass_id": r.pass_id,
                    "outcome": outcome_name(r.outcome),
                    "entry": entry_json(r.entry.as_ref()),
                    "double_entry": entry_json(r.double_entry.as_ref()),
                })
            })
            .collect();
        println!(
            "{}",
            json!({ "journal_id": journal.id, "results": rows, "acknowledged": last, "entries": journal.entries.len() })
        );
    } else {
        for r in &results {
            let name = outcome_name(r.outcome).to_uppercase();
            println!("{name} entry {} scan {} pass {}", r.seq, r.scan_id, r.pass_id);
            if r.outcome == pb::SyncOutcome::Conflict as i32 || r.double_entry.is_some() {
                println!("  entry:        {}", entry_text(r.entry.as_ref()));
                println!("  double entry: {}", entry_text(r.double_entry.as_ref()));
            }
        }
        println!(
            "journal {}: {} entries sent, {} recorded, {} already recorded, {} conflicts; acknowledged up to entry {last}",
            journal.id,
            results.len(),
            count("recorded"),
            count("already_recorded"),
            count("conflict"),
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn mode_arg(mode: TransportMode) -> super::commands::ModeArg {
    use super::commands::ModeArg;
    match mode {
        TransportMode::Air => ModeArg::Air,
        TransportMode::Rail => ModeArg::Rail,
        TransportMode::Road => ModeArg::Road,
        TransportMode::Sea => ModeArg::Sea,
        TransportMode::Foot => ModeArg::Foot,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    #[test]
    fn offline_admission_needs_its_lists_and_a_journal() {
        let parse = |extra: &[&str]| {
            let args = ["epass", "admit", "--mode", "rail"].iter().chain(extra).chain(&["EP1:x"]).copied();
            super::super::Cli::try_parse_from(args.collect::<Vec<_>>())
        };
        assert!(parse(&[]).is_ok());
        let full = ["--offline", "--root", "r.pem", "--trust-list", "t.bin", "--journal", "gate.journal"];
        assert!(parse(&full).is_ok());
        assert!(parse(&full[..5]).is_err(), "--offline needs --journal");
        assert!(parse(&["--journal", "gate.journal"]).is_err(), "--journal needs --offline");
        assert!(parse(&["--root", "r.pem", "--trust-list", "t.bin"]).is_err(), "the lists need --offline");
        assert!(parse(&[&full[..], &["--tolerance", "601"]].concat()).is_err());
    }

    fn stored(journal: &Journal, pass: u8, at: i64) -> Stored {
        let entry = JournalEntry {
            journal_id: journal.id.clone(),
            seq: journal.entries.len() as u64 + 1,
            scan_id: format!("scan {pass}"),
            pass_id: PassId::from_bytes([pass; 16]),
            checkpoint_id: "SZX T3 Gate 1".into(),
            mode: TransportMode::Air,
            recorded_at: DateTime::from_timestamp(at, 123_456_789).unwrap(),
            prev_hash: journal.entries.last().map_or(GENESIS, |s| s.hash),
        };
        let hash = entry.hash().unwrap();
        Stored { entry, hash, qr_text: "EP1:x".into() }
    }

    #[test]
    fn a_journal_reads_back_and_a_cut_line_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gate.journal");
        let (mut journal, mut file) = Journal::open(&path).unwrap();
        for pass in [1, 2] {
            let next = stored(&journal, pass, 1_800_000_000 + i64::from(pass));
            journal.append(&mut file, next).unwrap();
        }
        drop(file);
        // A crash in the middle of the third line.
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(b"{\"seq\":3,\"scan_").unwrap();
        drop(file);
        let read = Journal::read(&path).unwrap();
        assert_eq!((read.id.as_str(), read.entries.len()), (journal.id.as_str(), 2));
        assert_eq!(read.entries[1].entry, journal.entries[1].entry);
        let (mut reopened, mut file) = Journal::open(&path).unwrap();
        let next = stored(&reopened, 3, 1_800_000_003);
        reopened.append(&mut file, next).unwrap();
        assert_eq!(Journal::read(&path).unwrap().entries.len(), 3);
    }

    #[test]
    fn a_changed_or_removed_line_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gate.journal");
        let (mut journal, mut file) = Journal::open(&path).unwrap();
        for pass in [1, 2, 3] {
            let next = stored(&journal, pass, 1_800_000_000);
            journal.append(&mut file, next).unwrap();
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let changed = text.replace(
            "SZX T3 Gate 1\",\"mode\":\"air\",\"recorded_at\":\"2027-01-15T08:00:00.123456789Z\",\"prev_hash\":\"0000",
            "SZX T3 Gate 2\",\"mode\":\"air\",\"recorded_at\":\"2027-01-15T08:00:00.123456789Z\",\"prev_hash\":\"0000",
        );
        assert_ne!(changed, text);
        assert!(Journal::parse(&changed, &path).is_err());
        let lines: Vec<&str> = text.lines().collect();
        let removed = format!("{}\n{}\n{}\n", lines[0], lines[1], lines[3]);
        let error = Journal::parse(&removed, &path).unwrap_err();
        assert!(format!("{error:#}").contains("out of sequence"), "{error:#}");
    }
}
