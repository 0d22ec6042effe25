//! Integration tests over a real socket: every malformed request is `INVALID_ARGUMENT` with
//! `BadRequest` details naming the field, and leaves the database as it was.

mod common;

use chrono::{DateTime, TimeDelta, Utc};
use tonic::Code;

use common::{applicant, assert_bad_field, bad_fields, identity_check, start, ts, PERMIT};
use epass::grpc::pb;

type Mutation = Box<dyn Fn(&mut pb::IssuePassRequest)>;

fn case(
    what: &'static str,
    field: &'static str,
    mutate: impl Fn(&mut pb::IssuePassRequest) + 'static,
) -> (&'static str, &'static str, Mutation) {
    (what, field, Box::new(mutate))
}

fn permit(value: &'static str) -> impl Fn(&mut pb::IssuePassRequest) {
    move |r| applicant(r).permit_number = value.to_owned()
}

fn mobile(value: &'static str) -> impl Fn(&mut pb::IssuePassRequest) {
    move |r| applicant(r).mobile = value.to_owned()
}

fn expiry(value: &'static str) -> impl Fn(&mut pb::IssuePassRequest) {
    move |r| applicant(r).permit_expiry = value.to_owned()
}

fn situation_and_expiry(situation: pb::PermitSituation, value: &'static str) -> impl Fn(&mut pb::IssuePassRequest) {
    move |r| {
        applicant(r).permit_situation = situation as i32;
        applicant(r).permit_expiry = value.to_owned();
    }
}

fn checked_at(time: DateTime<Utc>) -> impl Fn(&mut pb::IssuePassRequest) {
    move |r| identity_check(r).checked_at = Some(ts(time))
}

fn issue_cases(now: DateTime<Utc>) -> Vec<(&'static str, &'static str, Mutation)> {
    // The server's clock shows 2026-11-10 in UTC+8.
    vec![
        case("empty request id", "request_id", |r| r.request_id = String::new()),
        case("129-character request id", "request_id", |r| r.request_id = "r".repeat(129)),
        case("request id ending with a space", "request_id", |r| r.request_id = "req-1 ".to_owned()),
        case("request id starting with a space", "request_id", |r| r.request_id = " req-1".to_owned()),
        case("request id with a tab", "request_id", |r| r.request_id = "req\t1".to_owned()),
        case("non-ASCII request id", "request_id", |r| r.request_id = "請求-1".to_owned()),
        case("empty permit number", "applicant.permit_number", permit("")),
        case("blank permit number", "applicant.permit_number", permit("   ")),
        case("7 digits", "applicant.permit_number", permit("H1234567")),
        case("9 digits", "applicant.permit_number", permit("H123456789")),
        case("region X", "applicant.permit_number", permit("X12345678")),
        case("letter among digits", "applicant.permit_number", permit("H1234567A")),
        case("full-width H", "applicant.permit_number", permit("Ｈ12345678")),
        case("hyphen", "applicant.permit_number", permit("H-12345678")),
        case("300 digits", "applicant.permit_number", |r| applicant(r).permit_number = "1".repeat(300)),
        case("digit in Latin name", "applicant.name_latin", |r| applicant(r).name_latin = "CHAN 1".to_owned()),
        case("Chinese in Latin name", "applicant.name_latin", |r| applicant(r).name_latin = "CHAN 大文".to_owned()),
        case("65-letter Latin name", "applicant.name_latin", |r| applicant(r).name_latin = "A".repeat(65)),
        case("10 KB Latin name", "applicant.name_latin", |r| applicant(r).name_latin = "A".repeat(10 * 1024)),
        case("NUL in Latin name", "applicant.name_latin", |r| applicant(r).name_latin = "CHAN\u{0}TAI MAN".to_owned()),
        // Regression (issue 12): CR and TAB were turned into spaces and accepted.
        case("CR in Latin name", "applicant.name_latin", |r| applicant(r).name_latin = "CHAN\rTAI MAN".to_owned()),
        case("tab in Latin name", "applicant.name_latin", |r| applicant(r).name_latin = "CHAN\tTAI MAN".to_owned()),
        case("line break after Chinese name", "applicant.name_chinese", |r| {
            applicant(r).name_chinese = "陳大文\n".to_owned()
        }),
        case("no name at all", "applicant.name_latin", |r| {
            applicant(r).name_latin = String::new();
            applicant(r).name_chinese = " ".to_owned();
        }),
        case("space in Chinese name", "applicant.name_chinese", |r| applicant(r).name_chinese = "陳 大文".to_owned()),
        case("Latin in Chinese name", "applicant.name_chinese", |r| applicant(r).name_chinese = "陳A".to_owned()),
        case("emoji in Chinese name", "applicant.name_chinese", |r| applicant(r).name_chinese = "陳😀".to_owned()),
        case("21-character Chinese name", "applicant.name_chinese", |r| applicant(r).name_chinese = "陳".repeat(21)),
        // U+F900, a compatibility ideograph that normalisation would rewrite.
        case("compatibility ideograph", "applicant.name_chinese", |r| {
            applicant(r).name_chinese = "陳\u{F900}".to_owned()
        }),
        case("sex unspecified", "applicant.sex", |r| applicant(r).sex = pb::Sex::Unspecified as i32),
        case("unknown sex", "applicant.sex", |r| applicant(r).sex = 7),
        case("empty expiry", "applicant.permit_expiry", expiry("")),
        case("one-digit month", "applicant.permit_expiry", expiry("2029-2-28")),
        case("30 February", "applicant.permit_expiry", expiry("2029-02-30")),
        case("two-digit year", "applicant.permit_expiry", expiry("29-02-28")),
        case("slashes", "applicant.permit_expiry", expiry("2029/02/28")),
        case("date and time", "applicant.permit_expiry", expiry("2029-02-28T00:00:00")),
        case("expiry in 2099", "applicant.permit_expiry", expiry("2099-01-01")),
        case("expiry in 1979", "applicant.permit_expiry", expiry("1979-12-31")),
        case("situation unspecified", "applicant.permit_situation", |r| {
            applicant(r).permit_situation = pb::PermitSituation::Unspecified as i32
        }),
        case("unknown situation", "applicant.permit_situation", |r| applicant(r).permit_situation = 9),
        case(
            "not carried but expired yesterday",
            "applicant.permit_situation",
            situation_and_expiry(pb::PermitSituation::NotCarried, "2026-11-09"),
        ),
        case(
            "expired but valid until tomorrow",
            "applicant.permit_situation",
            situation_and_expiry(pb::PermitSituation::Expired, "2026-11-11"),
        ),
        case(
            "expired but valid until the end of today",
            "applicant.permit_situation",
            situation_and_expiry(pb::PermitSituation::Expired, "2026-11-10"),
        ),
        case("empty mobile", "applicant.mobile", mobile("")),
        case("no country code", "applicant.mobile", mobile("13800138000")),
        case("Hong Kong number", "applicant.mobile", mobile("+85291234567")),
        case("not starting with 1", "applicant.mobile", mobile("+8623800138000")),
        case("10 digits", "applicant.mobile", mobile("+861380013800")),
        case("12 digits", "applicant.mobile", mobile("+86138001380000")),
        case("letter", "applicant.mobile", mobile("+8613800I38000")),
        case("no applicant", "applicant.permit_number", |r| r.applicant = None),
        case("no identity check", "identity_check", |r| r.identity_check = None),
        case("method unspecified", "identity_check.method", |r| {
            identity_check(r).method = pb::IdentityCheckMethod::Unspecified as i32
        }),
        case("unknown method", "identity_check.method", |r| identity_check(r).method = 9),
        case("empty reference", "identity_check.reference", |r| identity_check(r).reference = String::new()),
        case("129-character reference", "identity_check.reference", |r| identity_check(r).reference = "f".repeat(129)),
        case("reference starting with a space", "identity_check.reference", |r| {
            identity_check(r).reference = " face-check".to_owned()
        }),
        case("no check time", "identity_check.checked_at", |r| identity_check(r).checked_at = None),
        case("check 11 minutes old", "identity_check.checked_at", checked_at(now - TimeDelta::minutes(11))),
        case("check a day old", "identity_check.checked_at", checked_at(now - TimeDelta::days(1))),
        case("check 2 minutes ahead", "identity_check.checked_at", checked_at(now + TimeDelta::minutes(2))),
        case("negative nanos", "identity_check.checked_at", |r| {
            identity_check(r).checked_at.as_mut().expect("set").nanos = -1
        }),
        case("nanos of a whole second", "identity_check.checked_at", |r| {
            identity_check(r).checked_at.as_mut().expect("set").nanos = 1_000_000_000
        }),
        case("seconds out of range", "identity_check.checked_at", |r| {
            identity_check(r).checked_at = Some(prost_types::Timestamp { seconds: i64::MAX, nanos: 0 })
        }),
        case("road", "modes", |r| r.modes = vec![pb::TransportMode::Road as i32]),
        case("sea", "modes", |r| r.modes = vec![pb::TransportMode::Air as i32, pb::TransportMode::Sea as i32]),
        case("foot", "modes", |r| r.modes = vec![pb::TransportMode::Foot as i32]),
        case("mode unspecified", "modes", |r| r.modes = vec![pb::TransportMode::Unspecified as i32]),
        case("unknown mode", "modes", |r| r.modes = vec![42]),
        case("three modes", "modes", |r| {
            r.modes = vec![pb::TransportMode::Air as i32, pb::TransportMode::Rail as i32, pb::TransportMode::Air as i32]
        }),
        case("unknown image format", "image_format", |r| r.image_format = 9),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_invalid_application_names_its_field_and_stores_nothing() {
    let server = start().await;
    let mut refused_ids = Vec::new();
    for (what, field, mutate) in issue_cases(server.now()) {
        let mut request = server.application();
        mutate(&mut request);
        let status = server.try_issue(request.clone()).await.expect_err(what);
        assert_bad_field(&status, field);
        assert!(descriptions(&status).iter().all(|d| !d.is_empty()), "{what}: every violation says what is wrong");
        if field != "request_id" {
            refused_ids.push(request.request_id);
        }
    }

    // Nothing was stored: the request ids of refused applications are still free, and the
    // whole quota is available.
    let mut replays = Vec::new();
    for id in [&refused_ids[0], &refused_ids[refused_ids.len() - 1]] {
        let mut request = server.application();
        request.request_id = id.clone();
        replays.push(server.issue(request).await.replayed);
    }
    assert_eq!(replays, vec![false, false]);
    let status = server.try_issue(server.application()).await.expect_err("third application");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
}

/// The descriptions of the `BadRequest` details of a status.
fn descriptions(status: &tonic::Status) -> Vec<String> {
    use tonic_types::StatusExt as _;
    status
        .get_details_bad_request()
        .expect("BadRequest details")
        .field_violations
        .into_iter()
        .map(|v| v.description)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_field_is_reported_at_once() {
    let server = start().await;
    let mut request = server.application();
    applicant(&mut request).permit_number = "X1".to_owned();
    applicant(&mut request).mobile = "12345".to_owned();
    applicant(&mut request).sex = pb::Sex::Unspecified as i32;
    identity_check(&mut request).reference = String::new();
    request.modes = vec![pb::TransportMode::Sea as i32];
    let status = server.try_issue(request).await.expect_err("invalid");
    let mut fields = bad_fields(&status);
    fields.sort();
    assert_eq!(
        fields,
        vec!["applicant.mobile", "applicant.permit_number", "applicant.sex", "identity_check.reference", "modes"]
    );
    server.assert_full_quota_available().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_check_age_limits_are_inclusive() {
    let server = start().await;
    let now = server.now();
    let accepted =
        [("H10000001", now - TimeDelta::minutes(10)), ("H10000002", now + TimeDelta::minutes(1)), ("H10000003", now)];
    for (permit, at) in accepted {
        let mut request = server.application_for(permit);
        identity_check(&mut request).checked_at = Some(ts(at));
        if let Err(status) = server.try_issue(request).await {
            panic!("check at {at} refused: {status:?}");
        }
    }
    let refused =
        [now - TimeDelta::minutes(10) - TimeDelta::seconds(1), now + TimeDelta::minutes(1) + TimeDelta::seconds(1)];
    for at in refused {
        let mut request = server.application();
        identity_check(&mut request).checked_at = Some(ts(at));
        let status = server.try_issue(request).await.expect_err("refused");
        assert_bad_field(&status, "identity_check.checked_at");
    }
    server.assert_full_quota_available().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absurdly_large_requests_are_refused_before_anything_is_stored() {
    let server = start().await;
    let mut request = server.application();
    applicant(&mut request).name_latin = "A".repeat(100 * 1024);
    let status = server.try_issue(request.clone()).await.expect_err("100 KB name");
    // Refused by the 16 KiB request limit while decoding, before any handler runs.
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");

    let status = server
        .try_verify(pb::VerifyPassRequest {
            qr_text: format!("EP1:{}", "A".repeat(100 * 1024)),
            checkpoint_id: "SZX-AIR-01".to_owned(),
            mode: pb::TransportMode::Air as i32,
        })
        .await
        .expect_err("100 KB QR text");
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");

    // The connection is still usable, and the request id is still free.
    let mut retry = server.application();
    retry.request_id = request.request_id;
    assert!(!server.issue(retry).await.replayed);
    server.assert_quota_left(PERMIT, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_scans_name_their_field_and_leave_the_pass_unused() {
    let server = start().await;
    let response = server.issue_default().await;
    let pass_id = response.pass.expect("pass").pass_id;
    let qr = response.qr_text;

    let good = pb::RecordEntryRequest {
        qr_text: qr.clone(),
        checkpoint_id: "SZX-AIR-01".to_owned(),
        mode: pb::TransportMode::Air as i32,
        scan_id: "scan-ok".to_owned(),
    };
    type ScanMutation = Box<dyn Fn(&mut pb::RecordEntryRequest)>;
    let cases: Vec<(&str, &str, ScanMutation)> = vec![
        ("empty checkpoint", "checkpoint_id", Box::new(|r| r.checkpoint_id = String::new())),
        ("65-character checkpoint", "checkpoint_id", Box::new(|r| r.checkpoint_id = "C".repeat(65))),
        ("checkpoint ending with a space", "checkpoint_id", Box::new(|r| r.checkpoint_id = "SZX AIR ".to_owned())),
        ("checkpoint with a line break", "checkpoint_id", Box::new(|r| r.checkpoint_id = "SZX\nAIR".to_owned())),
        ("mode unspecified", "mode", Box::new(|r| r.mode = pb::TransportMode::Unspecified as i32)),
        ("unknown mode", "mode", Box::new(|r| r.mode = 42)),
        ("empty scan id", "scan_id", Box::new(|r| r.scan_id = String::new())),
        ("129-character scan id", "scan_id", Box::new(|r| r.scan_id = "s".repeat(129))),
        ("scan id starting with a space", "scan_id", Box::new(|r| r.scan_id = " scan-1".to_owned())),
    ];
    for (what, field, mutate) in &cases {
        let mut request = good.clone();
        mutate(&mut request);
        let status = server.try_record(request.clone()).await.expect_err(what);
        assert_bad_field(&status, field);
        if *field != "scan_id" {
            let verify = pb::VerifyPassRequest {
                qr_text: request.qr_text,
                checkpoint_id: request.checkpoint_id,
                mode: request.mode,
            };
            let status = server.try_verify(verify).await.expect_err(what);
            assert_bad_field(&status, field);
        }
    }
    let stored = server.get(&pass_id).await;
    assert_eq!(stored.state, pb::PassState::Valid as i32);
    assert_eq!(stored.entry, None);
    let answer = server.try_record(good).await.expect("valid scan");
    assert_eq!(answer.verdict, pb::Verdict::Accepted as i32, "{answer:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_pass_ids_and_reasons_are_invalid_argument() {
    let server = start().await;
    let pass_id = server.issue_default().await.pass.expect("pass").pass_id;
    let bad_ids = [
        String::new(),
        "xyz".to_owned(),
        "a".repeat(31),
        "a".repeat(33),
        "g".repeat(32),
        format!("{}-", &pass_id[..31]),
    ];
    for bad in &bad_ids {
        let status = server.try_get(bad).await.expect_err("bad id");
        assert_bad_field(&status, "pass_id");
        let status = server
            .issuance
            .clone()
            .revoke_pass(pb::RevokePassRequest { pass_id: bad.clone(), reason: "test".to_owned() })
            .await
            .expect_err("bad id");
        assert_bad_field(&status, "pass_id");
    }
    for reason in ["r".repeat(201), "line\nbreak".to_owned(), "lost \u{202E}kcatta".to_owned()] {
        let status = server
            .issuance
            .clone()
            .revoke_pass(pb::RevokePassRequest { pass_id: pass_id.clone(), reason })
            .await
            .expect_err("bad reason");
        assert_bad_field(&status, "reason");
    }
    let stored = server.get(&pass_id).await;
    assert_eq!(stored.state, pb::PassState::Valid as i32, "not revoked");
    assert_eq!(stored.revoked_at, None);
}

/// Writes and reads message bytes as they are: requests no generated client would send.
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut tonic::codec::EncodeBuf<'_>) -> Result<(), tonic::Status> {
        prost::bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut tonic::codec::DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        use prost::bytes::Buf as _;
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

/// Regression (issue 12): a request body that does not decode was answered `INTERNAL` and
/// logged as a server fault. It is the client's fault: `INVALID_ARGUMENT`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_request_bodies_are_invalid_argument() {
    let server = start().await;
    let bodies: [(&str, Vec<u8>); 4] = [
        // Field 1 (qr_text, request_id, pass_id: a string in every request), 2 bytes, not UTF-8.
        ("a string field of invalid UTF-8", vec![0x0a, 0x02, 0xff, 0xfe]),
        ("a varint that never ends", vec![0xff; 12]),
        ("a length beyond the body", vec![0x0a, 0x50, 0x41]),
        ("field number 0", vec![0x00, 0x01]),
    ];
    let paths = [
        "/epass.v1.CheckpointService/VerifyPass",
        "/epass.v1.CheckpointService/RecordEntry",
        "/epass.v1.IssuanceService/IssuePass",
        "/epass.v1.IssuanceService/GetPass",
    ];
    for path in paths {
        for (what, body) in &bodies {
            let mut grpc = tonic::client::Grpc::new(server.channel.clone());
            grpc.ready().await.expect("ready");
            let status = grpc
                .unary(tonic::Request::new(body.clone()), http::uri::PathAndQuery::from_static(path), RawCodec)
                .await
                .expect_err(what);
            assert_eq!(status.code(), Code::InvalidArgument, "{path} with {what}: {status:?}");
            assert!(status.message().starts_with("failed to decode Protobuf message"), "{status:?}");
        }
    }
    // Nothing was stored, and the connection still serves well-formed calls.
    server.assert_full_quota_available().await;
}

/// Regression (issue 12): ids are "printable ASCII" in the proto, and U+0020 is printable, yet
/// `web 42`, `SZX T3 Gate 1` and `scan 1` were refused. Spaces inside are accepted now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_may_hold_spaces_inside() {
    let server = start().await;
    let mut request = server.application();
    request.request_id = "web 42".to_owned();
    identity_check(&mut request).reference = "face check 7".to_owned();
    let issued = server.issue(request.clone()).await;
    assert!(!issued.replayed);
    // The same id is the same request: the retry gets the pass.
    let again = server.issue(request).await;
    assert!(again.replayed);
    let pass_id = issued.pass.expect("pass").pass_id;
    assert_eq!(again.pass.expect("pass").pass_id, pass_id);

    let verdict = server.verify(&issued.qr_text, pb::TransportMode::Air).await;
    assert_eq!(verdict.verdict, pb::Verdict::Accepted as i32, "{verdict:?}");
    let entry = server.record(&issued.qr_text, "SZX T3 Gate 1", pb::TransportMode::Air, "scan 1").await;
    assert_eq!(entry.verdict, pb::Verdict::Accepted as i32, "{entry:?}");
    let resent = server.record(&issued.qr_text, "SZX T3 Gate 1", pb::TransportMode::Air, "scan 1").await;
    assert_eq!(resent.verdict, pb::Verdict::Accepted as i32, "a resent scan gets the first answer: {resent:?}");
    let stored = server.get(&pass_id).await.entry.expect("entry recorded");
    assert_eq!((stored.checkpoint_id.as_str(), stored.scan_id.as_str()), ("SZX T3 Gate 1", "scan 1"));
}
