//! What offline verification needs: `verify --offline` (with a trust list, or with raw keys),
//! `trust-list build` and `inspect`, and `fetch`, which downloads the lists and writes them
//! safely.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context as _};
use chrono::TimeDelta;
use serde_json::json;

use super::commands::{BuildArgs, FetchArgs, InspectArgs, VerifyArgs};
use super::input::{image_error, read_file, Scanned};
use super::online::{connect, status_error};
use super::output::{
    print_trust_list, print_verdict, rfc3339, time_text, trust_list_json, trust_problem_name, Printed, Shown,
};
use super::{EXIT_ACCEPTED, EXIT_ERROR, EXIT_REJECTED};
use crate::clock::{Clock, SystemClock};
use crate::datadir::{read_signing_key, read_verification_key};
use crate::grpc::pb;
use epass_core::keys::{KeyRing, KeyStatus, VerificationKey};
use epass_core::offline::{OfflineContext, OfflineVerdict, Outcome, StatusCheck};
use epass_core::status::StatusList;
use epass_core::trust::TrustList;
use epass_core::verify::CheckTime;

fn check_time(args: &VerifyArgs) -> CheckTime {
    CheckTime { now: SystemClock.now(), tolerance: TimeDelta::seconds(args.tolerance.into()) }
}

/// Offline with the root key, the trust list and (optionally) the status list.
pub(super) fn verify_with_trust_list(
    args: &VerifyArgs,
    root_path: &Path,
    trust_path: &Path,
) -> anyhow::Result<ExitCode> {
    let root = read_verification_key(root_path, KeyStatus::Active)?;
    let trust_list = read_file(trust_path)?;
    let status_list = args.status_list.as_deref().map(read_file).transpose()?;
    let context = OfflineContext {
        root_key: &root,
        trust_list: &trust_list,
        held_trust_sequence: args.held_sequence,
        status_list: status_list.as_deref(),
        status_deltas: &[],
        held_status_sequence: args.held_status_sequence,
        mode: args.scan.mode.into(),
        time: check_time(args),
    };
    let verdict: OfflineVerdict = match args.scan.scanned()? {
        Scanned::Text(text) => epass_core::offline::verify_offline(&text, &context),
        Scanned::Image { path, bytes } => {
            image_error(epass_core::offline::verify_offline_image(&bytes, &context), &path)?
        }
    };
    let pass = verdict.pass.as_ref().map(crate::grpc::summary_of);
    let mut printed = match &verdict.outcome {
        Outcome::Accepted => Printed::offline(Shown::Accepted, None, pass, verdict.status),
        Outcome::Rejected(rejection) => Printed::offline(Shown::Rejected, Some(rejection), pass, verdict.status),
        Outcome::CannotDecide(error) => Printed {
            reason: Some(trust_problem_name(error)),
            detail: error.to_string(),
            ..Printed::offline(Shown::CannotDecide, None, pass, verdict.status)
        },
    };
    printed.trust_sequence = verdict.trust_sequence;
    Ok(print_verdict(&printed, args.scan.json))
}

/// Offline with key files trusted as they are: no trust list, no status list.
pub(super) fn verify_with_raw_keys(args: &VerifyArgs) -> anyhow::Result<ExitCode> {
    let keys =
        args.key.iter().map(|path| read_verification_key(path, KeyStatus::Active)).collect::<Result<Vec<_>, _>>()?;
    let ring = KeyRing::new(keys)?;
    let qr_text = args.scan.qr_text()?;
    let verification = epass_core::verify::verify_at(&qr_text, &ring, args.scan.mode.into(), check_time(args));
    let pass = verification.pass.as_ref().map(crate::grpc::summary_of);
    let (shown, rejection) = match &verification.verdict {
        Ok(()) => (Shown::Accepted, None),
        Err(rejection) => (Shown::Rejected, Some(rejection)),
    };
    let printed = Printed {
        note: Some("no trust list was checked: the --key files were trusted as they are, without key periods"),
        ..Printed::offline(shown, rejection, pass, StatusCheck::NoList)
    };
    Ok(print_verdict(&printed, args.scan.json))
}

fn read_keys(paths: &[PathBuf], status: KeyStatus) -> anyhow::Result<Vec<VerificationKey>> {
    Ok(paths.iter().map(|path| read_verification_key(path, status)).collect::<Result<Vec<_>, _>>()?)
}

pub(super) fn build_trust_list_file(args: &BuildArgs) -> anyhow::Result<ExitCode> {
    let root = read_signing_key(&args.root)?;
    let mut active = vec![read_verification_key(&args.active, KeyStatus::Active)?];
    active.extend(read_keys(&args.next, KeyStatus::Active)?);
    let retired = read_keys(&args.retired, KeyStatus::Retired)?;
    let revoked = read_keys(&args.revoked, KeyStatus::Revoked)?;
    if let Some(key) = active.iter().chain(&retired).chain(&revoked).find(|k| k.key_id() == root.key_id()) {
        bail!("key {} is the root key; the root signs trust lists only, never passes", key.key_id());
    }
    let previous = match &args.previous {
        Some(path) => {
            let previous_root = match &args.previous_root {
                Some(root_path) => read_verification_key(root_path, KeyStatus::Active)?,
                None => root.verification_key(),
            };
            let bytes = read_file(path)?;
            Some(TrustList::open(&bytes, &previous_root).with_context(|| format!("opening {}", path.display()))?)
        }
        None => None,
    };
    let now = SystemClock.now();
    let mut list = TrustList::successor(previous.as_ref(), &active, &retired, &revoked, now)?;
    if let Some(sequence) = args.sequence {
        if let Some(previous) = previous.as_ref().filter(|p| sequence <= p.sequence) {
            bail!(
                "--sequence {sequence} is not above the previous list's {}: verifiers would see a rollback",
                previous.sequence
            );
        }
        list.sequence = sequence;
    }
    list.stale_after = list.issued_at + TimeDelta::days(args.lifetime_days.into());
    let bytes = list.sign(&root);
    // Verifiers open it with the same code: a list they would refuse is never written.
    let opened = TrustList::open(&bytes, &root.verification_key()).context("the list built does not open")?;
    write_new_file(&args.out, &bytes, args.force)?;
    let current = opened.check_current(None, now);
    if args.json {
        let mut out = trust_list_json(&opened, &root.verification_key(), &current);
        out["path"] = json!(args.out.display().to_string());
        println!("{out}");
    } else {
        print_trust_list(&opened, &root.verification_key(), &current);
    }
    eprintln!("wrote {}", args.out.display());
    Ok(ExitCode::SUCCESS)
}

pub(super) fn inspect_trust_list(args: &InspectArgs) -> anyhow::Result<ExitCode> {
    let root = read_verification_key(&args.root, KeyStatus::Active)?;
    let bytes = read_file(&args.file)?;
    let list = match TrustList::open(&bytes, &root) {
        Ok(list) => list,
        Err(error) => {
            if args.json {
                let out = json!({
                    "valid": false,
                    "current": false,
                    "problem": trust_problem_name(&error),
                    "detail": error.to_string(),
                });
                println!("{out}");
            } else {
                println!("INVALID {}: {error}", trust_problem_name(&error).to_uppercase());
            }
            return Ok(ExitCode::from(EXIT_ERROR));
        }
    };
    let current = list.check_current(args.held_sequence, SystemClock.now());
    if args.json {
        println!("{}", trust_list_json(&list, &root, &current));
    } else {
        print_trust_list(&list, &root, &current);
    }
    Ok(ExitCode::from(if current.is_ok() { EXIT_ACCEPTED } else { EXIT_REJECTED }))
}

/// Writes a new file; an existing one only with `force`.
pub(super) fn write_new_file(path: &Path, bytes: &[u8], force: bool) -> anyhow::Result<()> {
    if force {
        return replace_file(path, bytes);
    }
    let mut file = match std::fs::OpenOptions::new().write(true).create_new(true).open(path) {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            bail!("{} exists; add --force to replace it", path.display())
        }
        opened => opened.with_context(|| format!("creating {}", path.display()))?,
    };
    file.write_all(bytes).and_then(|()| file.sync_all()).with_context(|| format!("writing {}", path.display()))
}

/// Replaces a file through a rename, so that a verifier reading it meanwhile sees the old list
/// or the new one, never part of one.
fn replace_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let name = path.file_name().with_context(|| format!("{} is not a file name", path.display()))?;
    let mut temporary = std::ffi::OsString::from(".");
    temporary.push(name);
    temporary.push(".new");
    let temporary = path.with_file_name(temporary);
    let mut file = std::fs::File::create(&temporary).with_context(|| format!("creating {}", temporary.display()))?;
    file.write_all(bytes).and_then(|()| file.sync_all()).with_context(|| format!("writing {}", temporary.display()))?;
    std::fs::rename(&temporary, path).with_context(|| format!("replacing {}", path.display()))
}

pub(super) async fn fetch(args: FetchArgs) -> anyhow::Result<ExitCode> {
    let root = args.root.as_deref().map(|path| read_verification_key(path, KeyStatus::Active)).transpose()?;
    let mut client = pb::key_service_client::KeyServiceClient::new(connect(&args.server, None).await?);
    // With --root the trust list is needed to check the status list's signer, even when only
    // the status list is written.
    let trust = if args.trust_list.is_some() || root.is_some() {
        Some(client.get_trust_list(pb::GetTrustListRequest {}).await.map_err(status_error)?.into_inner())
    } else {
        None
    };
    let status = match &args.status_list {
        Some(_) => {
            let request = pb::GetStatusListRequest { since_sequence: args.since.unwrap_or(0) };
            Some(client.get_status_list(request).await.map_err(status_error)?.into_inner())
        }
        None => None,
    };

    let mut entries = None;
    if let (Some(root), Some(trust)) = (&root, &trust) {
        let now = SystemClock.now();
        let held = args
            .trust_list
            .as_deref()
            .and_then(|path| std::fs::read(path).ok())
            .and_then(|bytes| TrustList::open(&bytes, root).ok())
            .map(|list| list.sequence);
        let list = TrustList::open(&trust.trust_list, root)
            .and_then(|list| list.check_current(held, now).map(|()| list))
            .context("the server's trust list cannot be used; nothing written")?;
        if let Some(status) = &status {
            let opened = StatusList::open(&status.status_list, &list.key_ring()?, now)
                .context("the server's status list cannot be used; nothing written")?;
            if opened.is_stale(now) {
                bail!("the server's status list went stale at {}; nothing written", rfc3339(opened.stale_after));
            }
            entries = Some(opened.entries.len());
        }
    }

    let mut out = json!({ "trust_list": null, "status_list": null, "checked": root.is_some() });
    if let (Some(path), Some(trust)) = (&args.trust_list, &trust) {
        replace_file(path, &trust.trust_list)?;
        let stale_after = time_text(trust.stale_after.as_ref());
        if !args.json {
            println!("trust list #{}, stale after {stale_after}: wrote {}", trust.sequence, path.display());
        }
        out["trust_list"] = json!({
            "path": path.display().to_string(),
            "sequence": trust.sequence,
            "stale_after": stale_after,
        });
    }
    if let (Some(path), Some(status)) = (&args.status_list, &status) {
        replace_file(path, &status.status_list)?;
        let stale_after = time_text(status.stale_after.as_ref());
        if !args.json {
            let kind = match status.base_sequence {
                0 => "full".to_owned(),
                base => format!("delta on #{base}"),
            };
            let count = entries.map(|n| format!(", {n} entries")).unwrap_or_default();
            println!(
                "status list #{} ({kind}{count}), stale after {stale_after}: wrote {}",
                status.sequence,
                path.display()
            );
        }
        out["status_list"] = json!({
            "path": path.display().to_string(),
            "sequence": status.sequence,
            "base_sequence": status.base_sequence,
            "stale_after": stale_after,
            "entries": entries,
        });
    }
    if args.json {
        println!("{out}");
    } else if let Some(root) = &root {
        println!("checked against root key {}", root.key_id());
    } else {
        println!("not checked here (no --root); `verify --offline` checks them");
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, Utc};
    use epass_core::keys::PassSigner;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(secs, 0).unwrap()
    }

    fn key(seed: u8, status: KeyStatus) -> VerificationKey {
        let public = PassSigner::from_secret_bytes(&[seed; 32]).public_key();
        VerificationKey::from_public_key(&public, status, epass_core::keys::KeyValidity::UNBOUNDED).unwrap()
    }

    #[test]
    fn revocations_are_listed_and_never_lifted() {
        let now = at(1_800_000_000);
        let active = key(1, KeyStatus::Active);
        let bad = key(4, KeyStatus::Revoked);
        let list =
            TrustList::successor(None, std::slice::from_ref(&active), &[], std::slice::from_ref(&bad), now).unwrap();
        assert_eq!(list.key(bad.key_id()).unwrap().status, KeyStatus::Revoked);
        // Signed and opened, the list is one verifiers accept.
        let root = PassSigner::from_secret_bytes(&[9; 32]);
        assert_eq!(TrustList::open(&list.sign(&root), &root.verification_key()).unwrap(), list);

        let later = now + TimeDelta::days(1);
        let carried = TrustList::successor(Some(&list), std::slice::from_ref(&active), &[], &[], later).unwrap();
        assert_eq!(carried.key(bad.key_id()).unwrap().status, KeyStatus::Revoked);
        assert!(TrustList::successor(Some(&list), std::slice::from_ref(&bad), &[], &[], later).is_err());
        assert!(TrustList::successor(
            Some(&list),
            std::slice::from_ref(&active),
            std::slice::from_ref(&bad),
            &[],
            later
        )
        .is_err());
        assert!(TrustList::successor(
            None,
            std::slice::from_ref(&active),
            std::slice::from_ref(&bad),
            std::slice::from_ref(&bad),
            later
        )
        .is_err());
        assert!(TrustList::successor(None, std::slice::from_ref(&active), std::slice::from_ref(&active), &[], later)
            .is_err());
    }
}
