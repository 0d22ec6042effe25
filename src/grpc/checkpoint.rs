//! `CheckpointService`: verify a pass, record the one entry it allows, and sync the entries
//! that checkpoints admitted offline.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::convert::{sync_result_message, ScanRequest, SyncEntryRequest, SyncRequest, VerdictFields};
use super::pb::{self, checkpoint_service_server::CheckpointService};
use super::{audit, ApiError, FieldViolation, ServiceState};
use crate::store::{
    Actor, AuditAction, AuditOutcome, AuditRecord, EntryAttempt, EntryOutcome, OfflineBatch, OfflineEntry, PassRecord,
    SyncKind,
};
use epass_core::ids::PassId;
use epass_core::journal::{EntryHash, JournalEntry};
use epass_core::verify::{self, AuthenticPass, CheckTime, Reason, Rejection, MAX_CLOCK_TOLERANCE};

/// Serves `CheckpointService`.
#[derive(Debug, Clone)]
pub struct CheckpointHandler {
    state: Arc<ServiceState>,
}

/// The online verdict on an authentic pass: what the record adds to the offline verdict.
fn online_verdict(offline: Result<(), Rejection>, record: Option<&PassRecord>) -> Result<(), Rejection> {
    offline?;
    let record = record.ok_or(Rejection::UnknownPass)?;
    if let Some(revocation) = &record.revocation {
        return Err(Rejection::Revoked { revoked_at: revocation.revoked_at });
    }
    if let Some(entry) = &record.entry {
        return Err(Rejection::AlreadyUsed(entry.clone()));
    }
    Ok(())
}

/// Rebuilds a rejection from its stored reason, for the answer to a resent scan.
fn rejection_for(reason: Reason, pass: &AuthenticPass, scan: &ScanRequest, record: Option<&PassRecord>) -> Rejection {
    let contents = &pass.contents;
    let revoked_at = record.and_then(|r| r.revocation.as_ref()).map(|r| r.revoked_at);
    let entry = record.and_then(|r| r.entry.clone());
    match (reason, revoked_at, entry) {
        (Reason::NotYetValid, _, _) => Rejection::NotYetValid { valid_from: contents.valid_from },
        (Reason::Expired, _, _) => Rejection::Expired { valid_until: contents.valid_until },
        (Reason::ModeNotAllowed, _, _) => Rejection::ModeNotAllowed { mode: scan.mode },
        (Reason::Revoked, Some(revoked_at), _) => Rejection::Revoked { revoked_at },
        (Reason::AlreadyUsed, _, Some(entry)) => Rejection::AlreadyUsed(entry),
        (Reason::UnknownPass, _, _) => Rejection::UnknownPass,
        // The one key reason recorded: the key's verification period ended (time-dependent).
        (Reason::KeyNotValid, _, _) => match pass.key_validity.verify_until {
            Some(verify_until) => Rejection::KeyExpired { key_id: pass.key_id, verify_until },
            None => Rejection::KeyNotValid { key_id: pass.key_id, issued_at: contents.issued_at },
        },
        // Reasons decided before the store is consulted are never recorded; a revoked or used
        // pass always keeps its revocation or entry.
        (
            Reason::BadFormat
            | Reason::UnknownKey
            | Reason::KeyRevoked
            | Reason::BadSignature
            | Reason::Revoked
            | Reason::AlreadyUsed,
            _,
            _,
        ) => Rejection::UnknownPass,
    }
}

impl CheckpointHandler {
    /// Checks the batch on its own (passes, times, hashes, chain), then has the store check it
    /// against what it holds and record it, all or nothing.
    async fn sync_entries(&self, request: SyncRequest, actor: Actor) -> Result<pb::SyncEntriesResponse, ApiError> {
        let now = self.state.clock.now();
        let entries = offline_batch(&self.state, &request, now).map_err(ApiError::InvalidArgument)?;
        let batch = OfflineBatch { actor, journal_id: request.journal_id.clone(), entries, at: now };
        let synced = match self.state.store.sync_offline_entries(batch.clone()).await? {
            Ok(synced) => synced,
            Err(refusal) => {
                let index = batch.entries.iter().position(|e| e.seq == refusal.seq()).unwrap_or(0);
                return Err(ApiError::InvalidArgument(vec![FieldViolation::new(format!("entries[{index}]"), refusal)]));
            }
        };
        let (mut recorded, mut doubles) = (0_usize, 0_usize);
        let mut results = Vec::with_capacity(synced.len());
        for (entry, synced) in batch.entries.iter().zip(&synced) {
            match synced.kind {
                SyncKind::Recorded => {
                    recorded += 1;
                    crate::telemetry::entry_recorded(entry.mode);
                }
                SyncKind::Conflict => {
                    doubles += 1;
                    crate::telemetry::double_entry();
                    let double = synced.double_entry.as_ref();
                    tracing::warn!(
                        pass_id = %entry.pass_id,
                        entry_scan_id = %synced.entry.scan_id,
                        entry_checkpoint = %synced.entry.checkpoint_id,
                        double_entry_scan_id = double.map_or("", |d| d.scan_id.as_str()),
                        double_entry_checkpoint = double.map_or("", |d| d.checkpoint_id.as_str()),
                        "double entry: a pass was admitted twice, at least once by a checkpoint that was offline"
                    );
                }
                SyncKind::AlreadyRecorded => {}
            }
            results.push(sync_result_message(&entry.scan_id, entry.pass_id, synced));
        }
        if recorded > 0 {
            self.state.status_changed();
        }
        tracing::info!(
            journal_id = %batch.journal_id,
            entries = batch.entries.len(),
            recorded,
            double_entries = doubles,
            "offline entries synced"
        );
        Ok(pb::SyncEntriesResponse { results })
    }

    /// A handler over the shared state.
    pub fn new(state: Arc<ServiceState>) -> Self {
        Self { state }
    }

    /// Writes the audit row of a scan that changes nothing (a verification, or a scan of a QR
    /// that is not an authentic pass), after its verdict is decided. `pass_id` only for an
    /// authentic pass: a forged QR's claimed id is kept out of that pass's trail.
    fn audit_apart(
        &self,
        action: AuditAction,
        scan: &ScanRequest,
        actor: Actor,
        pass_id: Option<PassId>,
        verdict: Result<(), Reason>,
        at: chrono::DateTime<chrono::Utc>,
    ) {
        let record = AuditRecord {
            at,
            action,
            outcome: verdict.map_or_else(AuditOutcome::Rejected, |()| AuditOutcome::Accepted),
            pass_id,
            actor,
            request_key: scan.scan_id.clone(),
            checkpoint_id: Some(scan.checkpoint_id.clone()),
            mode: Some(scan.mode),
            permit_masked: None,
        };
        self.state.audit.submit(record);
    }

    async fn verify(&self, scan: ScanRequest, actor: Actor) -> Result<VerdictFields, ApiError> {
        let now = self.state.clock.now();
        let verification = verify::verify(&scan.qr_text, &self.state.keys, scan.mode, now);
        let Some(pass) = verification.pass else {
            let rejection = verification.verdict.expect_err("no pass without a rejection");
            crate::telemetry::verdict(crate::telemetry::VERIFY_PASS, Some(rejection.reason()));
            self.audit_apart(AuditAction::Verify, &scan, actor, None, Err(rejection.reason()), now);
            return Ok(VerdictFields::rejected(None, &rejection));
        };
        let record = self.state.store.pass(pass.pass_id()).await?;
        let verdict = online_verdict(verification.verdict, record.as_ref());
        crate::telemetry::verdict(crate::telemetry::VERIFY_PASS, verdict.as_ref().err().map(Rejection::reason));
        let reason = verdict.as_ref().map_err(Rejection::reason).copied();
        self.audit_apart(AuditAction::Verify, &scan, actor, Some(pass.pass_id()), reason, now);
        let fields = match verdict {
            Ok(()) => VerdictFields::accepted(&pass, None),
            Err(rejection) => VerdictFields::rejected(Some(&pass), &rejection),
        };
        // At debug: the RPC's own line and the audit row already record each verification, and
        // a checkpoint flood would otherwise pay for a second formatted line per call.
        tracing::debug!(pass_id = %pass.pass_id(), checkpoint = %scan.checkpoint_id, mode = %scan.mode, verdict = fields.verdict, "pass verified");
        Ok(fields)
    }

    async fn record_entry(&self, scan: ScanRequest, actor: Actor) -> Result<VerdictFields, ApiError> {
        let now = self.state.clock.now();
        let verification = verify::verify(&scan.qr_text, &self.state.keys, scan.mode, now);
        let Some(pass) = verification.pass else {
            let rejection = verification.verdict.expect_err("no pass without a rejection");
            crate::telemetry::verdict(crate::telemetry::RECORD_ENTRY, Some(rejection.reason()));
            // Nothing is stored for a QR that is not an authentic pass: the row is written apart.
            self.audit_apart(AuditAction::Admit, &scan, actor, None, Err(rejection.reason()), now);
            return Ok(VerdictFields::rejected(None, &rejection));
        };
        let attempt = EntryAttempt {
            actor,
            scan_id: scan.scan_id.clone().ok_or_else(|| ApiError::Internal("scan without scan id".into()))?,
            pass_id: pass.pass_id(),
            checkpoint_id: scan.checkpoint_id.clone(),
            mode: scan.mode,
            at: now,
            offline_verdict: verification.verdict.as_ref().map_err(Rejection::reason).copied(),
        };
        let fields = match self.state.store.record_entry(attempt).await? {
            EntryOutcome::ScanIdConflict => return Err(ApiError::ScanIdConflict),
            EntryOutcome::Decided { verdict, record, replayed } => {
                if verdict.is_ok() && !replayed {
                    self.state.status_changed();
                    crate::telemetry::entry_recorded(scan.mode);
                }
                if !replayed {
                    // A resent scan was counted when it was decided.
                    crate::telemetry::verdict(crate::telemetry::RECORD_ENTRY, verdict.err());
                }
                let fields = decided(&pass, &scan, verification.verdict, verdict, record.as_ref());
                tracing::info!(pass_id = %pass.pass_id(), checkpoint = %scan.checkpoint_id, mode = %scan.mode, replayed, verdict = fields.verdict, "entry scan recorded");
                fields
            }
        };
        Ok(fields)
    }
}

/// Checks one uploaded entry on its own: an authentic pass of this server, admitted at a time
/// not ahead of the server's clock, within the pass's window and at a mode it allows (both
/// with the largest clock tolerance, since the checkpoint's own is not known), and a hash that
/// matches its fields.
fn offline_entry(
    state: &ServiceState,
    journal_id: &str,
    uploaded: &SyncEntryRequest,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<OfflineEntry, String> {
    let pass = verify::authenticate(&uploaded.qr_text, &state.keys)
        .map_err(|rejection| format!("not an authentic pass of this server: {rejection}"))?;
    if uploaded.recorded_at > now + MAX_CLOCK_TOLERANCE {
        return Err(format!(
            "recorded at {}, more than {} seconds ahead of the server's clock",
            uploaded.recorded_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            MAX_CLOCK_TOLERANCE.num_seconds()
        ));
    }
    let at_admission = CheckTime { now: uploaded.recorded_at, tolerance: MAX_CLOCK_TOLERANCE };
    verify::check_time_and_mode(&pass, uploaded.mode, at_admission)
        .map_err(|rejection| format!("the pass could not be admitted at its recorded time: {rejection}"))?;
    let entry = JournalEntry {
        journal_id: journal_id.to_owned(),
        seq: uploaded.seq,
        scan_id: uploaded.scan_id.clone(),
        pass_id: pass.pass_id(),
        checkpoint_id: uploaded.checkpoint_id.clone(),
        mode: uploaded.mode,
        recorded_at: uploaded.recorded_at,
        prev_hash: uploaded.prev_hash,
    };
    let hash = entry.hash().map_err(|e| e.to_string())?;
    if hash != uploaded.hash {
        return Err(format!("its hash is {}, but its fields hash to {hash}: the entry was changed", uploaded.hash));
    }
    Ok(OfflineEntry {
        seq: entry.seq,
        hash,
        prev_hash: entry.prev_hash,
        scan_id: entry.scan_id,
        pass_id: entry.pass_id,
        checkpoint_id: entry.checkpoint_id,
        mode: entry.mode,
        recorded_at: entry.recorded_at,
    })
}

/// Checks a batch on its own, every entry and the chain between them; every problem found is
/// reported, each naming its entry.
fn offline_batch(
    state: &ServiceState,
    request: &SyncRequest,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Vec<OfflineEntry>, Vec<FieldViolation>> {
    let mut violations = Vec::new();
    let mut entries: Vec<OfflineEntry> = Vec::with_capacity(request.entries.len());
    let mut previous: Option<(u64, EntryHash)> = None;
    let mut scan_ids = std::collections::HashSet::new();
    for (i, uploaded) in request.entries.iter().enumerate() {
        let field = format!("entries[{i}]");
        let seq = uploaded.seq;
        if let Some((previous_seq, previous_hash)) = previous {
            if seq != previous_seq + 1 {
                violations.push(FieldViolation::new(
                    &field,
                    format!("entry {seq} follows entry {previous_seq}: entries must be consecutive"),
                ));
            } else if uploaded.prev_hash != previous_hash {
                violations.push(FieldViolation::new(
                    &field,
                    format!(
                        "entry {seq} does not follow entry {previous_seq}: its previous hash is not that entry's hash"
                    ),
                ));
            }
        }
        previous = Some((seq, uploaded.hash));
        if !scan_ids.insert(uploaded.scan_id.as_str()) {
            violations.push(FieldViolation::new(
                &field,
                format!("entry {seq}: scan id {:?} is sent twice", uploaded.scan_id),
            ));
        }
        match offline_entry(state, &request.journal_id, uploaded, now) {
            Ok(entry) => entries.push(entry),
            Err(problem) => violations.push(FieldViolation::new(&field, format!("entry {seq}: {problem}"))),
        }
    }
    if violations.is_empty() {
        Ok(entries)
    } else {
        Err(violations)
    }
}

fn decided(
    pass: &AuthenticPass,
    scan: &ScanRequest,
    offline: Result<(), Rejection>,
    verdict: Result<(), Reason>,
    record: Option<&PassRecord>,
) -> VerdictFields {
    match verdict {
        Ok(()) => VerdictFields::accepted(pass, record.and_then(|r| r.entry.as_ref())),
        Err(reason) => {
            // Prefer the detailed rejection computed now when it is the same kind.
            let rejection = match offline {
                Err(rejection) if rejection.reason() == reason => rejection,
                _ => rejection_for(reason, pass, scan, record),
            };
            VerdictFields::rejected(Some(pass), &rejection)
        }
    }
}

#[tonic::async_trait]
impl CheckpointService for CheckpointHandler {
    async fn verify_pass(
        &self,
        request: Request<pb::VerifyPassRequest>,
    ) -> Result<Response<pb::VerifyPassResponse>, Status> {
        let actor = audit::actor(&request)?;
        let scan = ScanRequest::try_from(request.into_inner()).map_err(ApiError::InvalidArgument)?;
        Ok(Response::new(self.verify(scan, actor).await?.into_verify_response()))
    }

    async fn record_entry(
        &self,
        request: Request<pb::RecordEntryRequest>,
    ) -> Result<Response<pb::RecordEntryResponse>, Status> {
        let actor = audit::actor(&request)?;
        let scan = ScanRequest::try_from(request.into_inner()).map_err(ApiError::InvalidArgument)?;
        Ok(Response::new(self.record_entry(scan, actor).await?.into_record_response()))
    }

    async fn sync_entries(
        &self,
        request: Request<pb::SyncEntriesRequest>,
    ) -> Result<Response<pb::SyncEntriesResponse>, Status> {
        let actor = audit::actor(&request)?;
        let sync = SyncRequest::try_from(request.into_inner()).map_err(ApiError::InvalidArgument)?;
        Ok(Response::new(self.sync_entries(sync, actor).await?))
    }
}
