//! Text and JSON output: verdicts (online and offline), trust lists, and the text of times,
//! modes and reasons.

use std::process::ExitCode;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::json;

use super::{EXIT_ACCEPTED, EXIT_CANNOT_DECIDE, EXIT_REJECTED};
use crate::grpc::pb;
use epass_core::keys::{KeyStatus, VerificationKey};
use epass_core::offline::StatusCheck;
use epass_core::status::StatusListError;
use epass_core::trust::{TrustList, TrustListError};
use epass_core::verify::Rejection;

pub(super) fn rfc3339(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Secs, true)
}

pub(super) fn time_text(ts: Option<&prost_types::Timestamp>) -> String {
    ts.and_then(crate::grpc::datetime_of).map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true)).unwrap_or_default()
}

pub(super) fn modes_text(modes: &[i32]) -> Vec<&'static str> {
    modes
        .iter()
        .filter_map(|m| pb::TransportMode::try_from(*m).ok())
        .map(|m| match m {
            pb::TransportMode::Air => "air",
            pb::TransportMode::Rail => "rail",
            pb::TransportMode::Road => "road",
            pb::TransportMode::Sea => "sea",
            pb::TransportMode::Foot => "foot",
            pb::TransportMode::Unspecified => "unspecified",
        })
        .collect()
}

/// What a verification concluded, as the command prints it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Shown {
    Accepted,
    Rejected,
    /// Offline only: the verifier's own trust list does not allow a decision.
    CannotDecide,
}

impl Shown {
    fn exit_code(self) -> u8 {
        match self {
            Self::Accepted => EXIT_ACCEPTED,
            Self::Rejected => EXIT_REJECTED,
            Self::CannotDecide => EXIT_CANNOT_DECIDE,
        }
    }
}

/// Whether an offline check consulted a status list.
pub(super) enum StatusShown {
    Checked { sequence: u64 },
    NotChecked { why: &'static str, detail: String },
}

impl StatusShown {
    pub(super) fn not_checked(why: &'static str, detail: impl Into<String>) -> Self {
        Self::NotChecked { why, detail: detail.into() }
    }

    pub(super) fn of(check: &StatusCheck) -> Self {
        match check {
            StatusCheck::Checked { sequence } => Self::Checked { sequence: *sequence },
            StatusCheck::NoList => Self::not_checked("no_list", "no status list"),
            StatusCheck::Stale { stale_after } => {
                Self::not_checked("stale", format!("the status list went stale at {}", rfc3339(*stale_after)))
            }
            StatusCheck::Unusable(StatusListError::NotFull { base }) => Self::not_checked(
                "delta",
                format!("the status list is a delta on #{base}, not a full list; fetch it without --since"),
            ),
            StatusCheck::Unusable(StatusListError::Rollback { held, received }) => Self::not_checked(
                "rollback",
                format!("the status list #{received} is older than the #{held} already held; fetch it again"),
            ),
            StatusCheck::Unusable(error) => Self::not_checked("unusable", format!("status list unusable: {error}")),
            StatusCheck::NotEvaluated => Self::not_checked("no_trust_list", "no usable trust list to check it with"),
        }
    }

    fn text(&self) -> String {
        match self {
            Self::Checked { sequence } => {
                format!("single use and revocation checked against status list #{sequence} (hold this sequence: a lower one later is a rollback)")
            }
            Self::NotChecked { detail, .. } => format!("NOT checked (revocation and single use): {detail}"),
        }
    }

    fn json(&self) -> serde_json::Value {
        match self {
            Self::Checked { sequence } => json!({ "checked": true, "sequence": sequence }),
            Self::NotChecked { why, detail } => json!({ "checked": false, "why": why, "detail": detail }),
        }
    }
}

/// A verdict as the command prints it.
pub(super) struct Printed {
    pub(super) shown: Shown,
    pub(super) reason: String,
    pub(super) detail: String,
    pub(super) pass: Option<pb::PassSummary>,
    pub(super) entry: Option<pb::Entry>,
    /// Offline: what the status list contributed.
    pub(super) status: Option<StatusShown>,
    /// Offline: the trust list's sequence, to hold against rollback.
    pub(super) trust_sequence: Option<u64>,
    pub(super) note: Option<&'static str>,
}

impl Printed {
    pub(super) fn online(
        verdict: i32,
        reason: i32,
        detail: String,
        pass: Option<pb::PassSummary>,
        entry: Option<pb::Entry>,
    ) -> Self {
        Self {
            shown: if verdict == pb::Verdict::Accepted as i32 { Shown::Accepted } else { Shown::Rejected },
            reason: reason_text(reason),
            detail,
            pass,
            entry,
            status: None,
            trust_sequence: None,
            note: None,
        }
    }
}

pub(super) fn print_verdict(printed: &Printed, as_json: bool) -> ExitCode {
    let pass = printed.pass.clone().unwrap_or_default();
    if as_json {
        let entry = printed.entry.as_ref().map(|e| {
            json!({
                "recorded_at": time_text(e.recorded_at.as_ref()),
                "checkpoint_id": e.checkpoint_id,
                "mode": modes_text(&[e.mode]).first().copied().unwrap_or_default(),
                "scan_id": e.scan_id,
            })
        });
        let out = json!({
            "verdict": match printed.shown {
                Shown::Accepted => "accepted",
                Shown::Rejected => "rejected",
                Shown::CannotDecide => "cannot_decide",
            },
            "reason": printed.reason,
            "detail": printed.detail,
            "pass_id": printed.pass.as_ref().map(|p| p.pass_id.clone()),
            "name_latin": pass.name_latin,
            "name_chinese": pass.name_chinese,
            "permit_number_masked": pass.permit_number_masked,
            "valid_from": time_text(pass.valid_from.as_ref()),
            "valid_until": time_text(pass.valid_until.as_ref()),
            "modes": modes_text(&pass.modes),
            "entry": entry,
            "status": printed.status.as_ref().map(StatusShown::json),
            "trust_list_sequence": printed.trust_sequence,
            "note": printed.note,
        });
        println!("{out}");
    } else {
        match printed.shown {
            Shown::Accepted => println!("ACCEPTED"),
            Shown::Rejected => println!("REJECTED {}: {}", printed.reason, printed.detail),
            Shown::CannotDecide => println!("CANNOT DECIDE {}: {}", printed.reason, printed.detail),
        }
        if let Some(p) = &printed.pass {
            println!("pass {} {} {} ({})", p.pass_id, p.name_latin, p.name_chinese, p.permit_number_masked);
            println!(
                "valid {} to {} for {}",
                time_text(p.valid_from.as_ref()),
                time_text(p.valid_until.as_ref()),
                modes_text(&p.modes).join(", ")
            );
        }
        if let Some(e) = &printed.entry {
            if e.scan_id.is_empty() {
                println!("entry {} at {}", time_text(e.recorded_at.as_ref()), e.checkpoint_id);
            } else {
                println!("entry {} at {} (scan {})", time_text(e.recorded_at.as_ref()), e.checkpoint_id, e.scan_id);
            }
        }
        if let Some(status) = &printed.status {
            println!("status: {}", status.text());
        }
        if let Some(sequence) = printed.trust_sequence {
            println!("trust list #{sequence} (hold this sequence: a lower one later is a rollback)");
        }
        if let Some(note) = printed.note {
            println!("note: {note}");
        }
    }
    ExitCode::from(printed.shown.exit_code())
}

fn reason_text(reason: i32) -> String {
    pb::RejectionReason::try_from(reason)
        .map(|r| r.as_str_name().trim_start_matches("REJECTION_REASON_").to_owned())
        .unwrap_or_else(|_| reason.to_string())
}

/// The reason shown for a rejection found here, in the API's spelling.
pub(super) fn rejection_text(rejection: &Rejection) -> String {
    rejection.reason().as_str().to_uppercase()
}

/// The reason shown when the trust list does not allow a decision.
pub(super) fn trust_problem_text(error: &TrustListError) -> &'static str {
    match error {
        TrustListError::Malformed(_) => "TRUST_LIST_MALFORMED",
        TrustListError::WrongRootKey { .. } => "TRUST_LIST_WRONG_ROOT_KEY",
        TrustListError::BadSignature => "TRUST_LIST_BAD_SIGNATURE",
        TrustListError::Rollback { .. } => "TRUST_LIST_ROLLBACK",
        TrustListError::Stale { .. } => "TRUST_LIST_STALE",
    }
}

fn key_status_text(status: KeyStatus) -> &'static str {
    match status {
        KeyStatus::Active => "active",
        KeyStatus::Retired => "retired",
        KeyStatus::Revoked => "revoked",
    }
}

pub(super) fn trust_list_json(
    list: &TrustList,
    root: &VerificationKey,
    current: &Result<(), TrustListError>,
) -> serde_json::Value {
    let keys: Vec<_> = list
        .keys
        .iter()
        .map(|k| {
            json!({
                "key_id": k.key_id().to_string(),
                "public_key": hex::encode(k.public_key),
                "status": key_status_text(k.status),
                "sign_from": rfc3339(k.sign_from),
                "sign_until": rfc3339(k.sign_until),
                "verify_until": rfc3339(k.verify_until),
            })
        })
        .collect();
    json!({
        "valid": true,
        "current": current.is_ok(),
        "problem": current.as_ref().err().map(trust_problem_text),
        "detail": current.as_ref().err().map(ToString::to_string).unwrap_or_default(),
        "root_key_id": root.key_id().to_string(),
        "sequence": list.sequence,
        "issued_at": rfc3339(list.issued_at),
        "stale_after": rfc3339(list.stale_after),
        "keys": keys,
    })
}

pub(super) fn print_trust_list(list: &TrustList, root: &VerificationKey, current: &Result<(), TrustListError>) {
    match current {
        Ok(()) => println!("CURRENT"),
        Err(error) => println!("NOT CURRENT {}: {error}", trust_problem_text(error)),
    }
    println!("trust list #{} signed by root key {}", list.sequence, root.key_id());
    println!("issued at {}, stale after {}", rfc3339(list.issued_at), rfc3339(list.stale_after));
    for k in &list.keys {
        println!(
            "key {} {}: signs passes issued {} to {}, which verify until {}",
            k.key_id(),
            key_status_text(k.status),
            rfc3339(k.sign_from),
            rfc3339(k.sign_until),
            rfc3339(k.verify_until)
        );
    }
}
