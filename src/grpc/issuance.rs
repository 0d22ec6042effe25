//! `IssuanceService`: issue, revoke and look up passes.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::convert::{self, ImageFormat, IssueRequest, RevokeRequest};
use super::pb::{self, issuance_service_server::IssuanceService};
use super::{audit, ApiError, ServiceState};
use crate::store::{
    Actor, AuditAction, AuditOutcome, AuditRecord, IssueOutcome, NewPass, PassRecord, RequestLookup, RevokeOutcome,
    StoredPass,
};
use epass_core::ids::PassId;
use epass_core::pass::{PassContents, SignedPass};
use epass_core::policy::{Application, QuotaMonth, MONTHLY_LIMIT};
use epass_core::qr::{self, QrSymbol};
use epass_core::verify;

/// Serves `IssuanceService`.
#[derive(Debug, Clone)]
pub struct IssuanceHandler {
    state: Arc<ServiceState>,
}

impl IssuanceHandler {
    /// A handler over the shared state.
    pub fn new(state: Arc<ServiceState>) -> Self {
        Self { state }
    }

    async fn issue(&self, request: IssueRequest, actor: Actor) -> Result<pb::IssuePassResponse, ApiError> {
        let state = &self.state;
        let IssueRequest { request_id, application, image } = request;
        let fingerprint = application.fingerprint(&state.secret);
        let now = state.clock.now();
        // A new request (the common case) goes straight to the store, which answers a retry
        // or a reused request id itself, in the transaction that would insert: one round trip
        // fewer than looking the id up first. A request that cannot be signed now (its
        // identity check has since aged, the key has rotated) may still be a retry of one that
        // was: it is looked up first, and answered as before.
        let signed = if state.trust.list.key(state.signer.key_id()).is_some_and(|k| k.may_sign_at(now)) {
            let pass_id = PassId::from_bytes(rand::random());
            application
                .issue(pass_id, now, &state.policy, &state.signer)
                .map_err(|problems| ApiError::InvalidArgument(convert::application_violations(problems)))
        } else {
            Err(ApiError::SigningKeyNotActive)
        };
        let signed = match signed {
            Ok(signed) => signed,
            Err(refusal) => {
                return match state.store.lookup_request(&actor.caller.name, &request_id, &fingerprint).await? {
                    RequestLookup::Replay(record) => self.respond_replay(&application, record, image).await,
                    RequestLookup::Conflict => {
                        self.refuse_conflict_apart(actor, request_id, &application);
                        Err(ApiError::RequestIdConflict)
                    }
                    RequestLookup::New => Err(refusal),
                };
            }
        };
        let pass_id = signed.contents().pass_id;
        let new = NewPass {
            pass: stored_pass(&signed),
            holder_key: application.holder_key(&state.secret),
            quota_month: QuotaMonth::of(now).to_string(),
            actor,
            request_id,
            fingerprint,
        };
        match state.store.issue(new, MONTHLY_LIMIT).await? {
            IssueOutcome::Issued(record) => {
                crate::telemetry::pass_issued();
                tracing::info!(pass_id = %pass_id, key_id = %signed.key_id(), "pass issued");
                respond(signed, &record, image, false, now).await
            }
            IssueOutcome::Replayed(record) => self.respond_replay(&application, record, image).await,
            IssueOutcome::RequestIdConflict => Err(ApiError::RequestIdConflict),
            IssueOutcome::QuotaExhausted => {
                crate::telemetry::quota_refused();
                tracing::info!("application refused: monthly limit reached");
                Err(ApiError::QuotaExhausted {
                    limit: MONTHLY_LIMIT,
                    next_application_at: QuotaMonth::of(now).next_start(),
                    now,
                })
            }
        }
    }

    /// Writes the audit row of a reused request id refused before the store was asked to
    /// change anything (an issue that reaches the store writes its own).
    fn refuse_conflict_apart(&self, actor: Actor, request_id: String, application: &Application) {
        let record = AuditRecord {
            at: self.state.clock.now(),
            action: AuditAction::Issue,
            outcome: AuditOutcome::RequestIdConflict,
            pass_id: None,
            actor,
            request_key: Some(request_id),
            checkpoint_id: None,
            mode: None,
            permit_masked: Some(application.permit.masked()),
        };
        self.state.audit.submit(record);
    }

    /// Answers a retry with the pass issued the first time. The store keeps no permit number,
    /// so the envelope is rebuilt from the retried application and the stored signature, and
    /// verified before it goes out.
    async fn respond_replay(
        &self,
        application: &Application,
        record: PassRecord,
        image: ImageFormat,
    ) -> Result<pb::IssuePassResponse, ApiError> {
        let stored = &record.pass;
        let contents = PassContents {
            pass_id: stored.pass_id,
            holder: application.name.clone(),
            permit: application.permit.clone(),
            issued_at: stored.issued_at,
            valid_from: stored.valid_from,
            valid_until: stored.valid_until,
            modes: stored.modes,
            entries_allowed: stored.entries_allowed,
        };
        let signed = SignedPass::dangerous_assemble_unverified(contents, stored.key_id, &stored.signature);
        let authentic = verify::authenticate(&signed.qr_text(), &self.state.keys)
            .map_err(|r| ApiError::Internal(format!("stored pass {} no longer verifies: {r}", stored.pass_id)))?;
        if authentic.contents != *signed.contents() {
            return Err(ApiError::Internal(format!("stored pass {} does not rebuild", stored.pass_id)));
        }
        tracing::info!(pass_id = %stored.pass_id, "issuance replayed");
        respond(signed, &record, image, true, self.state.clock.now()).await
    }
}

fn stored_pass(signed: &SignedPass) -> StoredPass {
    let c = signed.contents();
    StoredPass {
        pass_id: c.pass_id,
        key_id: signed.key_id(),
        signature: signed.signature(),
        name_latin: c.holder.latin().map(str::to_owned),
        name_chinese: c.holder.chinese().map(str::to_owned),
        permit_masked: c.permit.masked(),
        issued_at: c.issued_at,
        valid_from: c.valid_from,
        valid_until: c.valid_until,
        modes: c.modes,
        entries_allowed: c.entries_allowed,
    }
}

/// Builds the response; renders the image off the async threads, since a PNG costs
/// milliseconds.
async fn respond(
    signed: SignedPass,
    record: &PassRecord,
    image: ImageFormat,
    replayed: bool,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<pb::IssuePassResponse, ApiError> {
    let qr_text = signed.qr_text();
    let (qr_version, qr_png, qr_svg) = if image == ImageFormat::None {
        // The version alone costs microseconds; the matrix costs milliseconds.
        (qr::version_of(&qr_text).map_err(|e| ApiError::Internal(e.to_string()))?, Vec::new(), String::new())
    } else {
        let text = qr_text.clone();
        tokio::task::spawn_blocking(move || {
            let symbol = QrSymbol::encode(&text).map_err(|e| ApiError::Internal(e.to_string()))?;
            let (png, svg) = match image {
                ImageFormat::Png => (symbol.png(), String::new()),
                ImageFormat::Svg => (Vec::new(), symbol.svg()),
                ImageFormat::None => (Vec::new(), String::new()),
            };
            Ok::<_, ApiError>((symbol.version(), png, svg))
        })
        .await
        .map_err(|e| ApiError::Internal(format!("QR rendering task failed: {e}")))??
    };
    Ok(pb::IssuePassResponse {
        pass: Some(convert::pass_message(record, now)),
        qr_text,
        qr_png,
        qr_svg,
        qr_version,
        replayed,
    })
}

#[tonic::async_trait]
impl IssuanceService for IssuanceHandler {
    async fn issue_pass(
        &self,
        request: Request<pb::IssuePassRequest>,
    ) -> Result<Response<pb::IssuePassResponse>, Status> {
        let actor = audit::actor(&request)?;
        let request = IssueRequest::try_from(request.into_inner()).map_err(ApiError::InvalidArgument)?;
        Ok(Response::new(self.issue(request, actor).await?))
    }

    async fn revoke_pass(
        &self,
        request: Request<pb::RevokePassRequest>,
    ) -> Result<Response<pb::RevokePassResponse>, Status> {
        let actor = audit::actor(&request)?;
        let RevokeRequest { pass_id, reason } =
            RevokeRequest::try_from(request.into_inner()).map_err(ApiError::InvalidArgument)?;
        let now = self.state.clock.now();
        match self.state.store.revoke(pass_id, &reason, now, &actor).await.map_err(ApiError::from)? {
            RevokeOutcome::NotFound => Err(ApiError::PassNotFound.into()),
            RevokeOutcome::Revoked(record) => {
                self.state.status_changed();
                tracing::info!(pass_id = %pass_id, "pass revoked");
                Ok(Response::new(pb::RevokePassResponse { pass: Some(convert::pass_message(&record, now)) }))
            }
        }
    }

    async fn get_pass(&self, request: Request<pb::GetPassRequest>) -> Result<Response<pb::GetPassResponse>, Status> {
        let pb::GetPassRequest { pass_id } = request.into_inner();
        let pass_id = convert::pass_id("pass_id", &pass_id).map_err(ApiError::InvalidArgument)?;
        let record = self.state.store.pass(pass_id).await.map_err(ApiError::from)?.ok_or(ApiError::PassNotFound)?;
        let now = self.state.clock.now();
        Ok(Response::new(pb::GetPassResponse { pass: Some(convert::pass_message(&record, now)) }))
    }
}
