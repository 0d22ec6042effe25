//! Text and JSON output: verdicts (online and offline), trust lists, and the text of times,
//! modes and reasons.
//!
//! The JSON of a verdict has one shape online and offline, and uses the names of docs/FORMAT.md
//! and the conformance vectors: `reason` (`already_used`, `trust_list_stale`, ...; `null` when
//! accepted), `format_problem` (`bad_payload`, ...; `null` unless the reason is `bad_format`)
//! and `status` (`check`: `checked`, `no_list`, `stale`, `unusable` or `not_evaluated`). The
//! README's "JSON output" section documents it. Text output shows the same names in capitals.

use std::process::ExitCode;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::json;

use super::{EXIT_ACCEPTED, EXIT_CANNOT_DECIDE, EXIT_REJECTED};
use crate::grpc::pb;
use epass_core::keys::{KeyStatus, VerificationKey};
use epass_core::offline::StatusCheck;
use epass_core::status::StatusListError;
use epass_core::trust::{TrustList, TrustListError};
use epass_core::verify::{Reason, Rejection};

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

/// What revocation and single use were checked against.
pub(super) enum StatusShown {
    /// Online: the issuer's database, always current.
    Server,
    /// Offline: a status list, judged as `epass_core::offline::StatusCheck`.
    List(StatusCheck),
}

impl StatusShown {
    /// The status check's name in docs/FORMAT.md and the conformance vectors.
    fn check(&self) -> &'static str {
        match self {
            Self::Server => "checked",
            Self::List(check) => check.as_str(),
        }
    }

    fn detail(&self) -> String {
        match self {
            Self::Server => "revocation and single use checked by the server".to_owned(),
            Self::List(StatusCheck::Checked { sequence }) => format!(
                "revocation and single use checked against status list #{sequence} (hold this sequence: a lower \
                 one later is a rollback)"
            ),
            Self::List(StatusCheck::NoList) => "no status list".to_owned(),
            Self::List(StatusCheck::Stale { stale_after }) => {
                format!("the status list went stale at {}", rfc3339(*stale_after))
            }
            Self::List(StatusCheck::Unusable(StatusListError::NotFull { base })) => {
                format!("the status list is a delta on #{base}, not a full list; fetch it without --since")
            }
            Self::List(StatusCheck::Unusable(StatusListError::Rollback { held, received })) => {
                format!("the status list #{received} is older than the #{held} already held (rollback); fetch it again")
            }
            Self::List(StatusCheck::Unusable(error)) => format!("status list unusable: {error}"),
            Self::List(StatusCheck::NotEvaluated) => "not looked at: no usable trust list to check it with".to_owned(),
        }
    }

    fn text(&self) -> String {
        match self {
            Self::Server | Self::List(StatusCheck::Checked { .. }) => self.detail(),
            Self::List(_) => {
                format!("NOT checked (revocation and single use), {}: {}", self.check(), self.detail())
            }
        }
    }

    fn json(&self) -> serde_json::Value {
        let (source, sequence) = match self {
            Self::Server => ("server", None),
            Self::List(StatusCheck::Checked { sequence }) => ("status_list", Some(*sequence)),
            Self::List(_) => ("status_list", None),
        };
        json!({ "check": self.check(), "source": source, "sequence": sequence, "detail": self.detail() })
    }
}

/// A verdict as the command prints it.
pub(super) struct Printed {
    pub(super) shown: Shown,
    /// The rejection reason or trust list problem, by its name in docs/FORMAT.md; `None` when
    /// accepted.
    pub(super) reason: Option<&'static str>,
    /// The format problem's name when the reason is `bad_format`.
    pub(super) format_problem: Option<&'static str>,
    pub(super) detail: String,
    pub(super) pass: Option<pb::PassSummary>,
    pub(super) entry: Option<pb::Entry>,
    /// What revocation and single use were checked against.
    pub(super) status: StatusShown,
    /// Offline: the trust list's sequence, to hold against rollback.
    pub(super) trust_sequence: Option<u64>,
    pub(super) note: Option<&'static str>,
}

impl Printed {
    pub(super) fn online(
        verdict: i32,
        reason: i32,
        format_problem: i32,
        detail: String,
        pass: Option<pb::PassSummary>,
        entry: Option<pb::Entry>,
    ) -> Self {
        Self {
            shown: if verdict == pb::Verdict::Accepted as i32 { Shown::Accepted } else { Shown::Rejected },
            reason: reason_name(reason),
            format_problem: format_problem_name(format_problem),
            detail,
            pass,
            entry,
            status: StatusShown::Server,
            trust_sequence: None,
            note: None,
        }
    }

    /// A verdict reached here, by the core's verifier.
    pub(super) fn offline(
        shown: Shown,
        rejection: Option<&Rejection>,
        pass: Option<pb::PassSummary>,
        status: StatusCheck,
    ) -> Self {
        let format_problem = match rejection {
            Some(Rejection::BadFormat(problem)) => Some(problem.as_str()),
            _ => None,
        };
        let entry = match rejection {
            Some(Rejection::AlreadyUsed(entry)) => Some(crate::grpc::entry_of(entry)),
            _ => None,
        };
        Self {
            shown,
            reason: rejection.map(|r| r.reason().as_str()),
            format_problem,
            detail: rejection.map(ToString::to_string).unwrap_or_default(),
            pass,
            entry,
            status: StatusShown::List(status),
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
            "format_problem": printed.format_problem,
            "detail": printed.detail,
            "pass_id": printed.pass.as_ref().map(|p| p.pass_id.clone()),
            "name_latin": pass.name_latin,
            "name_chinese": pass.name_chinese,
            "permit_number_masked": pass.permit_number_masked,
            "valid_from": time_text(pass.valid_from.as_ref()),
            "valid_until": time_text(pass.valid_until.as_ref()),
            "modes": modes_text(&pass.modes),
            "entry": entry,
            "status": printed.status.json(),
            "trust_list_sequence": printed.trust_sequence,
            "note": printed.note,
        });
        println!("{out}");
    } else {
        let reason = printed.reason.unwrap_or_default().to_uppercase();
        let problem = printed.format_problem.map(|p| format!(" ({})", p.to_uppercase())).unwrap_or_default();
        match printed.shown {
            Shown::Accepted => println!("ACCEPTED"),
            Shown::Rejected => println!("REJECTED {reason}{problem}: {}", printed.detail),
            Shown::CannotDecide => println!("CANNOT DECIDE {reason}: {}", printed.detail),
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
        println!("status: {}", printed.status.text());
        if let Some(sequence) = printed.trust_sequence {
            println!("trust list #{sequence} (hold this sequence: a lower one later is a rollback)");
        }
        if let Some(note) = printed.note {
            println!("note: {note}");
        }
    }
    ExitCode::from(printed.shown.exit_code())
}

/// The documented name of an API rejection reason (`REJECTION_REASON_ALREADY_USED` is
/// `already_used`); `None` for none (accepted). A value this build does not know keeps its
/// number, so it is never mistaken for another.
fn reason_name(reason: i32) -> Option<&'static str> {
    match pb::RejectionReason::try_from(reason) {
        Ok(pb::RejectionReason::Unspecified) => None,
        Ok(known) => Reason::from_name(&known.as_str_name()["REJECTION_REASON_".len()..].to_ascii_lowercase())
            .map(Reason::as_str)
            .or(Some("unknown")),
        Err(_) => Some("unknown"),
    }
}

/// The documented name of an API format problem; `None` for none.
fn format_problem_name(problem: i32) -> Option<&'static str> {
    match pb::FormatProblem::try_from(problem) {
        Ok(pb::FormatProblem::Unspecified) => None,
        Ok(pb::FormatProblem::WrongPrefix) => Some("wrong_prefix"),
        Ok(pb::FormatProblem::BadBase64) => Some("bad_base64"),
        Ok(pb::FormatProblem::TooShort) => Some("too_short"),
        Ok(pb::FormatProblem::TooLong) => Some("too_long"),
        Ok(pb::FormatProblem::UnsupportedVersion) => Some("unsupported_version"),
        Ok(pb::FormatProblem::BadPayload) => Some("bad_payload"),
        Err(_) => Some("unknown"),
    }
}

/// The name of a trust list problem, as in docs/FORMAT.md and the conformance vectors.
pub(super) fn trust_problem_name(error: &TrustListError) -> &'static str {
    error.as_str()
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
        "problem": current.as_ref().err().map(trust_problem_name),
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
        Err(error) => println!("NOT CURRENT {}: {error}", trust_problem_name(error).to_uppercase()),
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
