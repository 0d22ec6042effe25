//! The one file that converts between protobuf messages and core types. Every conversion from
//! a request destructures all its fields, so a new proto field breaks the build here instead
//! of being silently ignored.

use chrono::{DateTime, Utc};

use super::pb;
use super::status::FieldViolation;
use crate::store::{PassRecord, StoredPass, SyncKind, SyncedEntry};
use epass_core::applicant::{
    parse_date, parse_token, HolderName, IdentityCheck, IdentityCheckMethod, MobileNumber, NameField, PermitNumber,
    PermitSituation, Sex,
};
use epass_core::ids::PassId;
use epass_core::journal::EntryHash;
use epass_core::pass::{FormatProblem, Modes, TransportMode};
use epass_core::policy::{Application, ApplicationProblem};
use epass_core::verify::{AuthenticPass, EntryRecord, Reason, Rejection};

/// Longest request id and scan id.
pub const MAX_ID_LEN: usize = 128;
/// Longest checkpoint id.
pub const MAX_CHECKPOINT_ID_LEN: usize = 64;
/// Longest identity check reference.
pub const MAX_REFERENCE_LEN: usize = 128;
/// Longest revocation reason, in characters.
pub const MAX_REVOKE_REASON_CHARS: usize = 200;

/// Collects field violations while a request is read.
#[derive(Default)]
struct Violations(Vec<FieldViolation>);

impl Violations {
    fn check<T, E: ToString>(&mut self, field: &str, result: Result<T, E>) -> Option<T> {
        result.map_err(|e| self.0.push(FieldViolation::new(field, e))).ok()
    }

    fn push(&mut self, field: &str, description: impl ToString) {
        self.0.push(FieldViolation::new(field, description));
    }

    fn finish<T>(self, value: Option<T>) -> Result<T, Vec<FieldViolation>> {
        match value {
            Some(value) if self.0.is_empty() => Ok(value),
            _ => Err(self.0),
        }
    }
}

/// The QR image a caller wants with a new pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    /// PNG bytes.
    Png,
    /// An SVG document.
    Svg,
    /// No image: the caller draws the code from the text.
    None,
}

/// A well-formed `IssuePass` request.
#[derive(Debug)]
pub struct IssueRequest {
    /// Idempotency key.
    pub request_id: String,
    /// The application.
    pub application: Application,
    /// The image wanted.
    pub image: ImageFormat,
}

fn transport_mode(value: i32) -> Result<TransportMode, &'static str> {
    match pb::TransportMode::try_from(value) {
        Ok(pb::TransportMode::Air) => Ok(TransportMode::Air),
        Ok(pb::TransportMode::Rail) => Ok(TransportMode::Rail),
        Ok(pb::TransportMode::Road) => Ok(TransportMode::Road),
        Ok(pb::TransportMode::Sea) => Ok(TransportMode::Sea),
        Ok(pb::TransportMode::Foot) => Ok(TransportMode::Foot),
        Ok(pb::TransportMode::Unspecified) => Err("transport mode is required"),
        Err(_) => Err("unknown transport mode"),
    }
}

fn mode_message(mode: TransportMode) -> pb::TransportMode {
    match mode {
        TransportMode::Air => pb::TransportMode::Air,
        TransportMode::Rail => pb::TransportMode::Rail,
        TransportMode::Road => pb::TransportMode::Road,
        TransportMode::Sea => pb::TransportMode::Sea,
        TransportMode::Foot => pb::TransportMode::Foot,
    }
}

fn modes_message(modes: Modes) -> Vec<i32> {
    modes.list().into_iter().map(|m| mode_message(m) as i32).collect()
}

/// A protobuf timestamp from a time.
pub fn timestamp(time: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: time.timestamp(), nanos: time.timestamp_subsec_nanos() as i32 }
}

/// A time from a protobuf timestamp; `None` if out of range or not normalised.
pub fn datetime(ts: &prost_types::Timestamp) -> Option<DateTime<Utc>> {
    let nanos = u32::try_from(ts.nanos).ok().filter(|n| *n < 1_000_000_000)?;
    DateTime::from_timestamp(ts.seconds, nanos)
}

impl TryFrom<pb::IssuePassRequest> for IssueRequest {
    type Error = Vec<FieldViolation>;

    fn try_from(request: pb::IssuePassRequest) -> Result<Self, Self::Error> {
        let pb::IssuePassRequest { request_id, applicant, identity_check, modes, image_format } = request;
        let mut v = Violations::default();
        let request_id = v.check("request_id", parse_token(&request_id, MAX_ID_LEN).map(str::to_owned));
        let applicant = applicant.unwrap_or_default();
        let pb::Applicant { permit_number, name_latin, name_chinese, sex, permit_expiry, permit_situation, mobile } =
            applicant;
        let permit = v.check("applicant.permit_number", PermitNumber::parse(&permit_number));
        let name = match HolderName::parse(&name_latin, &name_chinese) {
            Ok(name) => Some(name),
            Err((NameField::Latin, e)) => {
                v.push("applicant.name_latin", e);
                None
            }
            Err((NameField::Chinese, e)) => {
                v.push("applicant.name_chinese", e);
                None
            }
        };
        let sex = v.check(
            "applicant.sex",
            match pb::Sex::try_from(sex) {
                Ok(pb::Sex::Female) => Ok(Sex::Female),
                Ok(pb::Sex::Male) => Ok(Sex::Male),
                Ok(pb::Sex::Unspecified) => Err("sex is required"),
                Err(_) => Err("unknown sex"),
            },
        );
        let permit_expiry = v.check("applicant.permit_expiry", parse_date(&permit_expiry));
        let situation = v.check(
            "applicant.permit_situation",
            match pb::PermitSituation::try_from(permit_situation) {
                Ok(pb::PermitSituation::NotCarried) => Ok(PermitSituation::NotCarried),
                Ok(pb::PermitSituation::Expired) => Ok(PermitSituation::Expired),
                Ok(pb::PermitSituation::Lost) => Ok(PermitSituation::Lost),
                Ok(pb::PermitSituation::Unspecified) => Err("permit situation is required"),
                Err(_) => Err("unknown permit situation"),
            },
        );
        let mobile = v.check("applicant.mobile", MobileNumber::parse(&mobile));
        let identity_check = match identity_check {
            None => {
                v.push("identity_check", "identity check is required");
                None
            }
            Some(pb::IdentityCheck { method, reference, checked_at }) => {
                let method = v.check(
                    "identity_check.method",
                    match pb::IdentityCheckMethod::try_from(method) {
                        Ok(pb::IdentityCheckMethod::SmsAndFace) => Ok(IdentityCheckMethod::SmsAndFace),
                        Ok(pb::IdentityCheckMethod::InPerson) => Ok(IdentityCheckMethod::InPerson),
                        Ok(pb::IdentityCheckMethod::Unspecified) => Err("identity check method is required"),
                        Err(_) => Err("unknown identity check method"),
                    },
                );
                let reference =
                    v.check("identity_check.reference", parse_token(&reference, MAX_REFERENCE_LEN).map(str::to_owned));
                let checked_at = v.check(
                    "identity_check.checked_at",
                    checked_at
                        .as_ref()
                        .ok_or("time of the check is required")
                        .and_then(|ts| datetime(ts).ok_or("not a valid timestamp")),
                );
                match (method, reference, checked_at) {
                    (Some(method), Some(reference), Some(checked_at)) => {
                        Some(IdentityCheck { method, reference, checked_at })
                    }
                    _ => None,
                }
            }
        };
        let modes = if modes.len() > 2 {
            v.push("modes", "at most two modes (air and rail)");
            None
        } else {
            let parsed: Result<Vec<TransportMode>, _> = modes.iter().map(|m| transport_mode(*m)).collect();
            match parsed {
                Err(e) => {
                    v.push("modes", e);
                    None
                }
                Ok(list) => v.check(
                    "modes",
                    Modes::from_list(&list).map_err(|m| format!("passes allow entry by air or rail only, not {m}")),
                ),
            }
        };
        let image = v.check(
            "image_format",
            match pb::QrImageFormat::try_from(image_format) {
                Ok(pb::QrImageFormat::Unspecified | pb::QrImageFormat::Png) => Ok(ImageFormat::Png),
                Ok(pb::QrImageFormat::Svg) => Ok(ImageFormat::Svg),
                Ok(pb::QrImageFormat::None) => Ok(ImageFormat::None),
                Err(_) => Err("unknown image format"),
            },
        );
        let request = (|| {
            Some(IssueRequest {
                request_id: request_id?,
                application: Application {
                    permit: permit?,
                    name: name?,
                    sex: sex?,
                    permit_expiry: permit_expiry?,
                    situation: situation?,
                    mobile: mobile?,
                    identity_check: identity_check?,
                    modes: modes?,
                },
                image: image?,
            })
        })();
        v.finish(request)
    }
}

/// Field violations for problems found by the time-dependent checks.
pub fn application_violations(problems: Vec<ApplicationProblem>) -> Vec<FieldViolation> {
    problems.into_iter().map(|p| FieldViolation::new(p.field(), &p)).collect()
}

/// Reads a pass id field.
pub fn pass_id(field: &str, text: &str) -> Result<PassId, Vec<FieldViolation>> {
    text.trim().parse::<PassId>().map_err(|e| vec![FieldViolation::new(field, e)])
}

/// Unicode format characters that change how text around them reads (bidirectional
/// overrides, zero-width characters): refused in free text that the audit trail and the
/// command line show.
fn is_invisible_format(c: char) -> bool {
    matches!(c, '\u{00AD}' | '\u{061C}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}')
}

/// A well-formed `RevokePass` request.
#[derive(Debug)]
pub struct RevokeRequest {
    /// The pass.
    pub pass_id: PassId,
    /// Why.
    pub reason: String,
}

impl TryFrom<pb::RevokePassRequest> for RevokeRequest {
    type Error = Vec<FieldViolation>;

    fn try_from(request: pb::RevokePassRequest) -> Result<Self, Self::Error> {
        let pb::RevokePassRequest { pass_id: id, reason } = request;
        let mut v = Violations::default();
        let pass_id = v.check("pass_id", id.trim().parse::<PassId>());
        let reason = reason.trim().to_owned();
        if reason.chars().count() > MAX_REVOKE_REASON_CHARS {
            v.push("reason", format!("at most {MAX_REVOKE_REASON_CHARS} characters"));
        }
        if reason.chars().any(|c| c.is_control() || is_invisible_format(c)) {
            v.push("reason", "control and invisible formatting characters are not allowed");
        }
        let request = pass_id.map(|pass_id| RevokeRequest { pass_id, reason });
        v.finish(request)
    }
}

/// A well-formed `VerifyPass` or `RecordEntry` request.
#[derive(Debug)]
pub struct ScanRequest {
    /// The scanned text.
    pub qr_text: String,
    /// Where.
    pub checkpoint_id: String,
    /// The checkpoint's mode.
    pub mode: TransportMode,
    /// The scanner's idempotency key (`RecordEntry` only).
    pub scan_id: Option<String>,
}

/// The checkpoint's fields, common to both scans. `qr_text` is not checked here: any text,
/// empty or long, is what was scanned, and gets a verdict with its format problem, as offline
/// (`epass_core::verify`, which checks the length before any decoding). The request size
/// limit bounds it.
fn checkpoint_fields(v: &mut Violations, checkpoint_id: &str, mode: i32) -> (Option<String>, Option<TransportMode>) {
    let checkpoint_id = v.check("checkpoint_id", parse_token(checkpoint_id, MAX_CHECKPOINT_ID_LEN).map(str::to_owned));
    let mode = v.check("mode", transport_mode(mode));
    (checkpoint_id, mode)
}

impl TryFrom<pb::VerifyPassRequest> for ScanRequest {
    type Error = Vec<FieldViolation>;

    fn try_from(request: pb::VerifyPassRequest) -> Result<Self, Self::Error> {
        let pb::VerifyPassRequest { qr_text, checkpoint_id, mode } = request;
        let mut v = Violations::default();
        let (checkpoint_id, mode) = checkpoint_fields(&mut v, &checkpoint_id, mode);
        let request = (|| Some(ScanRequest { qr_text, checkpoint_id: checkpoint_id?, mode: mode?, scan_id: None }))();
        v.finish(request)
    }
}

impl TryFrom<pb::RecordEntryRequest> for ScanRequest {
    type Error = Vec<FieldViolation>;

    fn try_from(request: pb::RecordEntryRequest) -> Result<Self, Self::Error> {
        let pb::RecordEntryRequest { qr_text, checkpoint_id, mode, scan_id } = request;
        let mut v = Violations::default();
        let (checkpoint_id, mode) = checkpoint_fields(&mut v, &checkpoint_id, mode);
        let scan_id = v.check("scan_id", parse_token(&scan_id, MAX_ID_LEN).map(str::to_owned));
        let request =
            (|| Some(ScanRequest { qr_text, checkpoint_id: checkpoint_id?, mode: mode?, scan_id: Some(scan_id?) }))();
        v.finish(request)
    }
}

/// The state of a pass at `now`.
pub fn pass_state(record: &PassRecord, now: DateTime<Utc>) -> pb::PassState {
    if record.revocation.is_some() {
        pb::PassState::Revoked
    } else if record.entry.is_some() {
        pb::PassState::Used
    } else if now >= record.pass.valid_until {
        pb::PassState::Expired
    } else {
        pb::PassState::Valid
    }
}

/// The API view of a stored pass.
pub fn pass_message(record: &PassRecord, now: DateTime<Utc>) -> pb::Pass {
    let PassRecord { pass, revocation, entry, double_entries } = record;
    let StoredPass {
        pass_id,
        key_id,
        signature: _,
        name_latin,
        name_chinese,
        permit_masked,
        issued_at,
        valid_from,
        valid_until,
        modes,
        entries_allowed,
    } = pass;
    pb::Pass {
        pass_id: pass_id.to_string(),
        key_id: key_id.to_string(),
        name_latin: name_latin.clone().unwrap_or_default(),
        name_chinese: name_chinese.clone().unwrap_or_default(),
        permit_number_masked: permit_masked.clone(),
        issued_at: Some(timestamp(*issued_at)),
        valid_from: Some(timestamp(*valid_from)),
        valid_until: Some(timestamp(*valid_until)),
        modes: modes_message(*modes),
        entries_allowed: *entries_allowed,
        state: pass_state(record, now) as i32,
        revoked_at: revocation.as_ref().map(|r| timestamp(r.revoked_at)),
        revoke_reason: revocation.as_ref().map(|r| r.reason.clone()).unwrap_or_default(),
        entry: entry.as_ref().map(entry_message),
        double_entries: double_entries.iter().map(entry_message).collect(),
    }
}

/// The API view of an entry.
pub fn entry_message(entry: &EntryRecord) -> pb::Entry {
    let EntryRecord { recorded_at, checkpoint_id, mode, scan_id } = entry;
    pb::Entry {
        recorded_at: Some(timestamp(*recorded_at)),
        checkpoint_id: checkpoint_id.clone(),
        mode: mode_message(*mode) as i32,
        scan_id: scan_id.clone(),
    }
}

/// What the officer sees of an authentic pass.
pub fn summary_message(pass: &AuthenticPass) -> pb::PassSummary {
    let c = &pass.contents;
    pb::PassSummary {
        pass_id: c.pass_id.to_string(),
        key_id: pass.key_id.to_string(),
        name_latin: c.holder.latin().unwrap_or_default().to_owned(),
        name_chinese: c.holder.chinese().unwrap_or_default().to_owned(),
        permit_number_masked: c.permit.masked(),
        issued_at: Some(timestamp(c.issued_at)),
        valid_from: Some(timestamp(c.valid_from)),
        valid_until: Some(timestamp(c.valid_until)),
        modes: modes_message(c.modes),
    }
}

/// The API code of a rejection reason.
pub fn reason_message(reason: Reason) -> pb::RejectionReason {
    match reason {
        Reason::BadFormat => pb::RejectionReason::BadFormat,
        Reason::UnknownKey => pb::RejectionReason::UnknownKey,
        Reason::KeyNotValid => pb::RejectionReason::KeyNotValid,
        Reason::KeyRevoked => pb::RejectionReason::KeyRevoked,
        Reason::BadSignature => pb::RejectionReason::BadSignature,
        Reason::NotYetValid => pb::RejectionReason::NotYetValid,
        Reason::Expired => pb::RejectionReason::Expired,
        Reason::ModeNotAllowed => pb::RejectionReason::ModeNotAllowed,
        Reason::AlreadyUsed => pb::RejectionReason::AlreadyUsed,
        Reason::Revoked => pb::RejectionReason::Revoked,
        Reason::UnknownPass => pb::RejectionReason::UnknownPass,
    }
}

fn format_problem_message(problem: &FormatProblem) -> pb::FormatProblem {
    match problem {
        FormatProblem::WrongPrefix => pb::FormatProblem::WrongPrefix,
        FormatProblem::BadBase64 => pb::FormatProblem::BadBase64,
        FormatProblem::TooShort { .. } => pb::FormatProblem::TooShort,
        FormatProblem::TooLong { .. } => pb::FormatProblem::TooLong,
        FormatProblem::UnsupportedVersion { .. } => pb::FormatProblem::UnsupportedVersion,
        FormatProblem::BadPayload(_) => pb::FormatProblem::BadPayload,
    }
}

/// The fields of a verdict, common to `VerifyPass` and `RecordEntry` responses.
#[derive(Debug, Default)]
pub struct VerdictFields {
    /// Accepted or rejected.
    pub verdict: i32,
    /// Why rejected.
    pub reason: i32,
    /// How malformed, for `BAD_FORMAT`.
    pub format_problem: i32,
    /// Human-readable explanation.
    pub detail: String,
    /// The pass, when authentic.
    pub pass: Option<pb::PassSummary>,
    /// The entry: recorded now, or the earlier one for `ALREADY_USED`.
    pub entry: Option<pb::Entry>,
}

impl VerdictFields {
    /// An accepted pass.
    pub fn accepted(pass: &AuthenticPass, entry: Option<&EntryRecord>) -> Self {
        Self {
            verdict: pb::Verdict::Accepted as i32,
            pass: Some(summary_message(pass)),
            entry: entry.map(entry_message),
            ..Self::default()
        }
    }

    /// A rejected pass.
    pub fn rejected(pass: Option<&AuthenticPass>, rejection: &Rejection) -> Self {
        let format_problem = match rejection {
            Rejection::BadFormat(problem) => format_problem_message(problem),
            _ => pb::FormatProblem::Unspecified,
        };
        let entry = match rejection {
            Rejection::AlreadyUsed(entry) => Some(entry_message(entry)),
            _ => None,
        };
        Self {
            verdict: pb::Verdict::Rejected as i32,
            reason: reason_message(rejection.reason()) as i32,
            format_problem: format_problem as i32,
            detail: rejection.to_string(),
            pass: pass.map(summary_message),
            entry,
        }
    }

    /// As a `VerifyPass` response.
    pub fn into_verify_response(self) -> pb::VerifyPassResponse {
        let Self { verdict, reason, format_problem, detail, pass, entry } = self;
        pb::VerifyPassResponse { verdict, reason, format_problem, detail, pass, entry }
    }

    /// As a `RecordEntry` response.
    pub fn into_record_response(self) -> pb::RecordEntryResponse {
        let Self { verdict, reason, format_problem, detail, pass, entry } = self;
        pb::RecordEntryResponse { verdict, reason, format_problem, detail, pass, entry }
    }
}

/// Longest journal id.
pub const MAX_JOURNAL_ID_LEN: usize = 64;
/// Most entries in one `SyncEntries` request.
pub const MAX_SYNC_ENTRIES: usize = 1000;

/// A well-formed `SyncEntries` request: every field present and of the right shape. The passes
/// and the chain are checked by the handler.
#[derive(Debug)]
pub struct SyncRequest {
    /// The journal.
    pub journal_id: String,
    /// Its entries, in the order sent.
    pub entries: Vec<SyncEntryRequest>,
}

/// One journal entry as uploaded.
#[derive(Debug)]
pub struct SyncEntryRequest {
    /// Position in the journal.
    pub seq: u64,
    /// The checkpoint's idempotency key.
    pub scan_id: String,
    /// The QR text admitted.
    pub qr_text: String,
    /// Where.
    pub checkpoint_id: String,
    /// The checkpoint's mode.
    pub mode: TransportMode,
    /// When, by the checkpoint's clock.
    pub recorded_at: DateTime<Utc>,
    /// The hash of the entry before.
    pub prev_hash: EntryHash,
    /// This entry's hash, as the checkpoint computed it.
    pub hash: EntryHash,
}

impl TryFrom<pb::SyncEntriesRequest> for SyncRequest {
    type Error = Vec<FieldViolation>;

    fn try_from(request: pb::SyncEntriesRequest) -> Result<Self, Self::Error> {
        let pb::SyncEntriesRequest { journal_id, entries } = request;
        let mut v = Violations::default();
        let journal_id = v.check("journal_id", parse_token(&journal_id, MAX_JOURNAL_ID_LEN).map(str::to_owned));
        if entries.len() > MAX_SYNC_ENTRIES {
            v.push("entries", format!("at most {MAX_SYNC_ENTRIES} entries in one request"));
        }
        let mut parsed = Vec::with_capacity(entries.len());
        for (i, entry) in entries.into_iter().enumerate().take(MAX_SYNC_ENTRIES) {
            let pb::JournalEntry { seq, scan_id, qr_text, checkpoint_id, mode, recorded_at, prev_hash, hash } = entry;
            let field = |name: &str| format!("entries[{i}].{name}");
            if seq == 0 {
                v.push(&field("seq"), "entries are numbered from 1");
            }
            let scan_id = v.check(&field("scan_id"), parse_token(&scan_id, MAX_ID_LEN).map(str::to_owned));
            let checkpoint_id =
                v.check(&field("checkpoint_id"), parse_token(&checkpoint_id, MAX_CHECKPOINT_ID_LEN).map(str::to_owned));
            let mode = v.check(&field("mode"), transport_mode(mode));
            let recorded_at = v.check(
                &field("recorded_at"),
                recorded_at
                    .as_ref()
                    .ok_or("the time of the admission is required")
                    .and_then(|ts| datetime(ts).ok_or("not a valid timestamp")),
            );
            let prev_hash = v.check(&field("prev_hash"), EntryHash::from_slice(&prev_hash).ok_or("not 32 bytes"));
            let hash = v.check(&field("hash"), EntryHash::from_slice(&hash).ok_or("not 32 bytes"));
            if let (Some(scan_id), Some(checkpoint_id), Some(mode), Some(recorded_at), Some(prev_hash), Some(hash)) =
                (scan_id, checkpoint_id, mode, recorded_at, prev_hash, hash)
            {
                parsed.push(SyncEntryRequest {
                    seq,
                    scan_id,
                    qr_text,
                    checkpoint_id,
                    mode,
                    recorded_at,
                    prev_hash,
                    hash,
                });
            }
        }
        let request = journal_id.map(|journal_id| SyncRequest { journal_id, entries: parsed });
        v.finish(request)
    }
}

/// The API code of what became of a synced entry.
fn sync_outcome_message(kind: SyncKind) -> pb::SyncOutcome {
    match kind {
        SyncKind::Recorded => pb::SyncOutcome::Recorded,
        SyncKind::AlreadyRecorded => pb::SyncOutcome::AlreadyRecorded,
        SyncKind::Conflict => pb::SyncOutcome::Conflict,
    }
}

/// The answer about one synced entry.
pub fn sync_result_message(scan_id: &str, pass_id: PassId, synced: &SyncedEntry) -> pb::SyncEntryResult {
    let SyncedEntry { seq, kind, entry, double_entry } = synced;
    pb::SyncEntryResult {
        seq: *seq,
        scan_id: scan_id.to_owned(),
        outcome: sync_outcome_message(*kind) as i32,
        pass_id: pass_id.to_string(),
        entry: Some(entry_message(entry)),
        double_entry: double_entry.as_ref().map(entry_message),
    }
}
