//! `CheckpointService`: verify a pass, and record the one entry it allows.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::convert::{ScanRequest, VerdictFields};
use super::pb::{self, checkpoint_service_server::CheckpointService};
use super::{audit, ApiError, ServiceState};
use crate::store::{Actor, AuditAction, AuditOutcome, AuditRecord, EntryAttempt, EntryOutcome, PassRecord};
use epass_core::ids::PassId;
use epass_core::verify::{self, AuthenticPass, Reason, Rejection};

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
}
