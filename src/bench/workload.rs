//! The calls `epass bench` sends: applications it makes up (distinct permit numbers, so the
//! monthly limit never refuses them), and scans of the passes it issued.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::Context as _;
use rand::Rng as _;
use tonic::{Code, Request};

use super::{Outcome, Target};
use crate::clock::{Clock as _, SystemClock};
use crate::grpc::pb;
use crate::grpc::pb::checkpoint_service_client::CheckpointServiceClient;
use crate::grpc::pb::issuance_service_client::IssuanceServiceClient;
use crate::telemetry::code_name;

/// The kind of call a run sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// `IssuePass` without an image (`QR_IMAGE_FORMAT_NONE`).
    Issue,
    /// `IssuePass` with a PNG.
    IssuePng,
    /// `VerifyPass` of issued passes (read-only).
    Verify,
    /// `RecordEntry` of issued passes, each scan with its own scan id; once every pass is
    /// used, the scans are answered `ALREADY_USED` (still a write: the scan is recorded).
    Admit,
    /// Out of every 10 calls: 8 `VerifyPass`, 1 `IssuePass` (no image), 1 `RecordEntry`.
    Mix,
}

impl Workload {
    /// Whether the run scans passes, which it issues first.
    pub fn scans(self) -> bool {
        matches!(self, Self::Verify | Self::Admit | Self::Mix)
    }

    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Issue => "issue",
            Self::IssuePng => "issue-png",
            Self::Verify => "verify",
            Self::Admit => "admit",
            Self::Mix => "mix",
        }
    }
}

/// Sends the calls; cheap to clone (channels are handles).
#[derive(Debug, Clone)]
pub(super) struct Caller {
    target: Arc<Target>,
    /// Tells this run's request and scan ids apart from any other run's.
    run: u64,
    /// Permit numbers are 10 digits from here on, one per application.
    permit_base: u64,
    next_permit: Arc<AtomicU64>,
    /// QR texts the scans cycle through.
    pub(super) passes: Vec<String>,
}

const PERMIT_SPACE: u64 = 10_000_000_000;

impl Caller {
    pub(super) fn new(target: Target) -> Self {
        let mut rng = rand::thread_rng();
        Self {
            target: Arc::new(target),
            run: rng.gen(),
            permit_base: rng.gen_range(0..PERMIT_SPACE),
            next_permit: Arc::new(AtomicU64::new(0)),
            passes: Vec::new(),
        }
    }

    fn channel(&self, i: u64) -> tonic::transport::Channel {
        self.target.channels[(i % self.target.channels.len() as u64) as usize].clone()
    }

    fn request<T>(message: T, token: Option<&tonic::metadata::AsciiMetadataValue>) -> Request<T> {
        let mut request = Request::new(message);
        if let Some(token) = token {
            request.metadata_mut().insert("authorization", token.clone());
        }
        request
    }

    fn application(&self, image_format: pb::QrImageFormat) -> pb::IssuePassRequest {
        let n = self.next_permit.fetch_add(1, Ordering::Relaxed);
        let permit = (self.permit_base + n) % PERMIT_SPACE;
        pb::IssuePassRequest {
            request_id: format!("bench-{:016x}-{n}", self.run),
            applicant: Some(pb::Applicant {
                permit_number: format!("{permit:010}"),
                name_latin: "CHEUNG KA WAI ALEXANDRA JOSEPH".into(),
                name_chinese: "張家慧".into(),
                sex: pb::Sex::Female as i32,
                permit_expiry: "2030-01-31".into(),
                permit_situation: pb::PermitSituation::Lost as i32,
                mobile: "+8613800138000".into(),
            }),
            identity_check: Some(pb::IdentityCheck {
                method: pb::IdentityCheckMethod::SmsAndFace as i32,
                reference: format!("bench-check-{n}"),
                checked_at: Some(crate::grpc::timestamp_of(SystemClock.now())),
            }),
            modes: vec![pb::TransportMode::Air as i32, pb::TransportMode::Rail as i32],
            image_format: image_format as i32,
        }
    }

    async fn issue(&self, i: u64, image_format: pb::QrImageFormat) -> Result<String, tonic::Status> {
        let request = Self::request(self.application(image_format), self.target.issuer.as_ref());
        let response = IssuanceServiceClient::new(self.channel(i)).issue_pass(request).await?;
        Ok(response.into_inner().qr_text)
    }

    /// Issues `count` passes, `in_flight` per connection at a time, and returns their QR texts.
    pub(super) async fn issue_passes(&self, count: usize, in_flight: usize) -> anyhow::Result<Vec<String>> {
        let next = Arc::new(AtomicU64::new(0));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..(in_flight * self.target.channels.len()).min(count) {
            let (caller, next) = (self.clone(), Arc::clone(&next));
            tasks.spawn(async move {
                let mut texts = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count as u64 {
                        return Ok::<_, anyhow::Error>(texts);
                    }
                    let text = caller.issue(i, pb::QrImageFormat::None).await.context("issuing the passes to scan")?;
                    texts.push(text);
                }
            });
        }
        let mut texts = Vec::with_capacity(count);
        while let Some(joined) = tasks.join_next().await {
            texts.extend(joined.context("an issuing task failed")??);
        }
        Ok(texts)
    }

    fn scan_text(&self, i: u64) -> String {
        self.passes[(i % self.passes.len() as u64) as usize].clone()
    }

    async fn verify(&self, i: u64) -> Result<pb::VerifyPassResponse, tonic::Status> {
        let message = pb::VerifyPassRequest {
            qr_text: self.scan_text(i),
            checkpoint_id: "BENCH-GATE".into(),
            mode: pb::TransportMode::Air as i32,
        };
        let request = Self::request(message, self.target.checkpoint.as_ref());
        Ok(CheckpointServiceClient::new(self.channel(i)).verify_pass(request).await?.into_inner())
    }

    async fn admit(&self, i: u64) -> Result<pb::RecordEntryResponse, tonic::Status> {
        let message = pb::RecordEntryRequest {
            qr_text: self.scan_text(i),
            checkpoint_id: "BENCH-GATE".into(),
            mode: pb::TransportMode::Rail as i32,
            scan_id: format!("bench-{:016x}-{i}", self.run),
        };
        let request = Self::request(message, self.target.checkpoint.as_ref());
        Ok(CheckpointServiceClient::new(self.channel(i)).record_entry(request).await?.into_inner())
    }

    /// Sends call `i` of `workload`.
    pub(super) async fn call(&self, workload: Workload, i: u64) -> Outcome {
        let which = match workload {
            Workload::Mix => match i % 10 {
                0 => Workload::Issue,
                1 => Workload::Admit,
                _ => Workload::Verify,
            },
            other => other,
        };
        let result = match which {
            Workload::Issue | Workload::Mix => self.issue(i, pb::QrImageFormat::None).await.map(|_| None),
            Workload::IssuePng => self.issue(i, pb::QrImageFormat::Png).await.map(|_| None),
            Workload::Verify => self.verify(i).await.map(|r| Some(verdict(r.verdict, r.reason))),
            Workload::Admit => self.admit(i).await.map(|r| Some(verdict(r.verdict, r.reason))),
        };
        match result {
            Ok(verdict) => Outcome { code: code_name(Code::Ok), verdict },
            Err(status) => Outcome { code: code_name(status.code()), verdict: None },
        }
    }
}

fn verdict(verdict: i32, reason: i32) -> String {
    if verdict == pb::Verdict::Accepted as i32 {
        return "accepted".into();
    }
    pb::RejectionReason::try_from(reason).map_or_else(
        |_| format!("reason {reason}"),
        |r| r.as_str_name().trim_start_matches("REJECTION_REASON_").to_lowercase(),
    )
}
