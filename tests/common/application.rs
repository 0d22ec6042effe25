//! The valid application every test harness starts from, shared by `#[path]` so the harnesses
//! cannot drift apart: names `CHAN TAI MAN` / `陳大文`, permit lost and expiring about three
//! years after `now`, identity checked a minute before `now`, both modes, no image.

use chrono::{DateTime, Days, TimeDelta, Utc};
use epass::grpc::pb;

/// The application of the holder of `permit`, reachable at `mobile`, sent at `now`.
pub fn valid_application(now: DateTime<Utc>, request_id: &str, permit: &str, mobile: &str) -> pb::IssuePassRequest {
    let expiry = now
        .with_timezone(&epass_core::policy::china_standard_time())
        .date_naive()
        .checked_add_days(Days::new(3 * 365))
        .expect("date in range");
    pb::IssuePassRequest {
        request_id: request_id.to_owned(),
        applicant: Some(pb::Applicant {
            permit_number: permit.to_owned(),
            name_latin: "CHAN TAI MAN".to_owned(),
            name_chinese: "陳大文".to_owned(),
            sex: pb::Sex::Male as i32,
            permit_expiry: expiry.format("%Y-%m-%d").to_string(),
            permit_situation: pb::PermitSituation::Lost as i32,
            mobile: mobile.to_owned(),
        }),
        identity_check: Some(pb::IdentityCheck {
            method: pb::IdentityCheckMethod::SmsAndFace as i32,
            reference: "face-check-0001".to_owned(),
            checked_at: Some(epass::grpc::timestamp_of(now - TimeDelta::minutes(1))),
        }),
        modes: Vec::new(),
        image_format: pb::QrImageFormat::None as i32,
    }
}
