//! Errors of the API and their one mapping to `tonic::Status`.

use std::collections::HashMap;

use chrono::{DateTime, SecondsFormat, Utc};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt as _};

use crate::store::StoreError;

/// A request field at fault, named by its path in the request (`applicant.permit_number`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    /// Path of the field.
    pub field: String,
    /// What is wrong with it.
    pub description: String,
}

impl FieldViolation {
    /// A violation of `field`.
    pub fn new(field: impl Into<String>, description: impl ToString) -> Self {
        Self { field: field.into(), description: description.to_string() }
    }
}

/// Why a call failed. A rejected pass is not an error: it is a verdict in a successful response.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Malformed request: every offending field.
    #[error("invalid request")]
    InvalidArgument(Vec<FieldViolation>),
    /// The holder's monthly applications are used up.
    #[error("monthly application limit reached")]
    QuotaExhausted {
        /// The limit.
        limit: u32,
        /// When the next application becomes possible.
        next_application_at: DateTime<Utc>,
        /// Now, to compute the retry delay.
        now: DateTime<Utc>,
    },
    /// A request id reused for a different application.
    #[error("request id reused")]
    RequestIdConflict,
    /// A scan id reused for a different pass.
    #[error("scan id reused")]
    ScanIdConflict,
    /// No pass with this id.
    #[error("pass not found")]
    PassNotFound,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The trust list does not let the signing key sign now.
    #[error("signing key not active")]
    SigningKeyNotActive,
    /// A fault in this service; the text is logged, never sent.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<ApiError> for Status {
    fn from(error: ApiError) -> Self {
        match error {
            ApiError::InvalidArgument(violations) => {
                let message =
                    violations.iter().map(|v| format!("{}: {}", v.field, v.description)).collect::<Vec<_>>().join("; ");
                let details = ErrorDetails::with_bad_request(
                    violations
                        .into_iter()
                        .map(|v| tonic_types::FieldViolation::new(v.field, v.description))
                        .collect::<Vec<_>>(),
                );
                Status::with_error_details(Code::InvalidArgument, message, details)
            }
            ApiError::QuotaExhausted { limit, next_application_at, now } => {
                let next = next_application_at.to_rfc3339_opts(SecondsFormat::Secs, true);
                let mut details = ErrorDetails::new();
                details
                    .add_quota_failure_violation(
                        "holder",
                        format!("at most {limit} applications per calendar month (UTC+8)"),
                    )
                    .set_error_info(
                        "MONTHLY_LIMIT_REACHED",
                        "epass",
                        HashMap::from([("next_application_at".to_owned(), next.clone())]),
                    )
                    .set_retry_info((next_application_at - now).to_std().ok());
                Status::with_error_details(
                    Code::ResourceExhausted,
                    format!("at most {limit} applications per month; next application possible at {next}"),
                    details,
                )
            }
            ApiError::RequestIdConflict => {
                Status::already_exists("request_id was already used for a different application; use a new request_id")
            }
            ApiError::ScanIdConflict => Status::already_exists(
                "scan_id was already used for another pass, checkpoint or mode; use a new scan_id",
            ),
            ApiError::PassNotFound => Status::not_found("no pass with this pass_id"),
            ApiError::SigningKeyNotActive => {
                tracing::error!("the signing key is not active in the trust list; issuance is suspended");
                Status::unavailable("issuance is suspended: the signing key is not active in the trust list")
            }
            ApiError::Store(StoreError::Unavailable(e)) => {
                tracing::error!(error = %e, "database unavailable");
                Status::unavailable("database unavailable; retry later")
            }
            // UNAVAILABLE rather than RESOURCE_EXHAUSTED, which this API answers for a holder's
            // monthly limit and a caller's rate: nothing was kept, and the same call succeeds
            // once the operator frees space.
            ApiError::Store(StoreError::DiskFull(e)) => {
                tracing::error!(error = %e, "database disk full");
                Status::unavailable("the database's disk is full: nothing was stored; retry later")
            }
            ApiError::Store(e @ (StoreError::Database(_) | StoreError::Migration(_) | StoreError::Corrupt(_))) => {
                tracing::error!(error = %e, "database error");
                Status::internal("internal error")
            }
            ApiError::Internal(message) => {
                tracing::error!(error = %message, "internal error");
                Status::internal("internal error")
            }
        }
    }
}
