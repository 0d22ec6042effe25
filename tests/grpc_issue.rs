//! Integration tests over a real socket: issuing, the one admission a pass allows, validity
//! windows, QR images, restarts, keys, health and reflection.

mod common;

use chrono::TimeDelta;
use sha2::{Digest as _, Sha256};
use tonic::Code;

use common::{at, start, start_with_key, time_of, ts, TestServer, PERMIT};
use epass::grpc::pb;

fn is_lower_hex(text: &str, len: usize) -> bool {
    text.len() == len && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_verify_admit_once_then_already_used() {
    let server = start().await;
    let issued_at = server.now();
    let response = server.issue_default().await;
    assert!(!response.replayed);
    assert!(response.qr_text.starts_with("EP1:"), "{}", response.qr_text);
    assert!(response.qr_png.is_empty(), "no image was asked for");
    assert!(response.qr_svg.is_empty(), "no image was asked for");
    assert!((1..=40).contains(&response.qr_version));
    let pass = response.pass.clone().expect("pass");
    assert!(is_lower_hex(&pass.pass_id, 32), "{}", pass.pass_id);
    assert!(is_lower_hex(&pass.key_id, 16), "{}", pass.key_id);
    assert_eq!(pass.name_latin, "CHAN TAI MAN");
    assert_eq!(pass.name_chinese, "陳大文");
    assert_eq!(pass.permit_number_masked, "H******78");
    assert_eq!(pass.issued_at, Some(ts(issued_at)));
    assert_eq!(pass.valid_from, Some(ts(issued_at)));
    assert_eq!(pass.valid_until, Some(ts(issued_at + TimeDelta::days(7))));
    assert_eq!(pass.modes, vec![pb::TransportMode::Air as i32, pb::TransportMode::Rail as i32]);
    assert_eq!(pass.entries_allowed, 1);
    assert_eq!(pass.state, pb::PassState::Valid as i32);
    assert_eq!(pass.entry, None);
    assert_eq!(pass.revoked_at, None);
    assert_eq!(pass.revoke_reason, "");

    server.clock.advance(TimeDelta::hours(2));
    let qr = &response.qr_text;
    let verdict = server.verify(qr, pb::TransportMode::Air).await;
    assert_eq!(verdict.verdict, pb::Verdict::Accepted as i32, "{verdict:?}");
    assert_eq!(verdict.reason, pb::RejectionReason::Unspecified as i32);
    assert_eq!(verdict.format_problem, pb::FormatProblem::Unspecified as i32);
    assert_eq!(verdict.entry, None);
    let expected_summary = pb::PassSummary {
        pass_id: pass.pass_id.clone(),
        key_id: pass.key_id.clone(),
        name_latin: "CHAN TAI MAN".to_owned(),
        name_chinese: "陳大文".to_owned(),
        permit_number_masked: "H******78".to_owned(),
        issued_at: Some(ts(issued_at)),
        valid_from: Some(ts(issued_at)),
        valid_until: Some(ts(issued_at + TimeDelta::days(7))),
        modes: vec![pb::TransportMode::Air as i32, pb::TransportMode::Rail as i32],
    };
    assert_eq!(verdict.pass, Some(expected_summary.clone()));
    // Verifying has no side effect.
    assert_eq!(server.get(&pass.pass_id).await.state, pb::PassState::Valid as i32);

    let admitted_at = server.now();
    let first = server.record(qr, "SZX-AIR-01", pb::TransportMode::Air, "scan-a").await;
    assert_eq!(first.verdict, pb::Verdict::Accepted as i32, "{first:?}");
    assert_eq!(first.reason, pb::RejectionReason::Unspecified as i32);
    assert_eq!(first.pass, Some(expected_summary.clone()));
    let entry = pb::Entry {
        recorded_at: Some(ts(admitted_at)),
        checkpoint_id: "SZX-AIR-01".to_owned(),
        mode: pb::TransportMode::Air as i32,
        scan_id: "scan-a".to_owned(),
    };
    assert_eq!(first.entry, Some(entry.clone()));

    server.clock.advance(TimeDelta::minutes(30));
    let second = server.record(qr, "LOK-RAIL-02", pb::TransportMode::Rail, "scan-b").await;
    assert_eq!(second.verdict, pb::Verdict::Rejected as i32, "{second:?}");
    assert_eq!(second.reason, pb::RejectionReason::AlreadyUsed as i32);
    assert_eq!(second.entry, Some(entry.clone()), "the first entry's time and place");
    assert_eq!(second.pass, Some(expected_summary.clone()));
    assert!(!second.detail.is_empty());

    let verdict = server.verify(qr, pb::TransportMode::Air).await;
    assert_eq!(verdict.verdict, pb::Verdict::Rejected as i32);
    assert_eq!(verdict.reason, pb::RejectionReason::AlreadyUsed as i32);
    assert_eq!(verdict.entry, Some(entry.clone()));
    assert_eq!(verdict.pass, Some(expected_summary));

    let stored = server.get(&pass.pass_id).await;
    assert_eq!(stored.state, pb::PassState::Used as i32);
    assert_eq!(stored.entry, Some(entry));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_pass_reports_expired_state_and_unknown_ids() {
    let server = start().await;
    let pass = server.issue_default().await.pass.expect("pass");
    server.clock.set(time_of(&pass.valid_until));
    assert_eq!(server.get(&pass.pass_id).await.state, pb::PassState::Expired as i32);
    // Upper case and surrounding spaces name the same pass.
    let loud = format!(" {} ", pass.pass_id.to_uppercase());
    assert_eq!(server.get(&loud).await.pass_id, pass.pass_id);
    let status = server.try_get(&"0".repeat(32)).await.expect_err("no such pass");
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_pass_records_time_and_reason_and_first_revocation_stands() {
    let server = start().await;
    let pass = server.issue_default().await.pass.expect("pass");
    server.clock.advance(TimeDelta::minutes(5));
    let revoked_at = server.now();
    let revoked = server.revoke(&pass.pass_id, "reported stolen").await;
    assert_eq!(revoked.state, pb::PassState::Revoked as i32);
    assert_eq!(revoked.revoked_at, Some(ts(revoked_at)));
    assert_eq!(revoked.revoke_reason, "reported stolen");

    server.clock.advance(TimeDelta::minutes(5));
    let again = server.revoke(&pass.pass_id, "second thoughts").await;
    assert_eq!(again.revoked_at, Some(ts(revoked_at)), "first revocation stands");
    assert_eq!(again.revoke_reason, "reported stolen");
    assert_eq!(server.get(&pass.pass_id).await, again);

    let status = server
        .issuance
        .clone()
        .revoke_pass(pb::RevokePassRequest { pass_id: "ab".repeat(16), reason: String::new() })
        .await
        .expect_err("no such pass");
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_carried_pass_ends_with_the_permit_expiry_date_in_utc_plus_8() {
    let server = start().await;
    let now = server.now();
    assert_eq!(now, at("2026-11-10T02:00:00Z")); // 10:00 on 10 November in UTC+8

    let mut request = server.application();
    common::applicant(&mut request).permit_situation = pb::PermitSituation::NotCarried as i32;
    common::applicant(&mut request).permit_expiry = "2026-11-12".to_owned();
    let pass = server.issue(request).await.pass.expect("pass");
    assert_eq!(pass.valid_from, Some(ts(now)));
    assert_eq!(pass.valid_until, Some(ts(at("2026-11-12T16:00:00Z"))));

    // Expiring today: the pass ends at midnight tonight, UTC+8.
    let mut request = server.application_for(common::OTHER_PERMIT);
    common::applicant(&mut request).permit_situation = pb::PermitSituation::NotCarried as i32;
    common::applicant(&mut request).permit_expiry = "2026-11-10".to_owned();
    let pass = server.issue(request).await.pass.expect("pass");
    assert_eq!(pass.valid_until, Some(ts(at("2026-11-10T16:00:00Z"))));

    // Its window is enforced at the checkpoint.
    let mut request = server.application_for("H11111111");
    common::applicant(&mut request).permit_situation = pb::PermitSituation::NotCarried as i32;
    common::applicant(&mut request).permit_expiry = "2026-11-12".to_owned();
    let qr = server.issue(request).await.qr_text;
    server.clock.set(at("2026-11-12T15:59:59Z"));
    let verdict = server.verify(&qr, pb::TransportMode::Rail).await;
    assert_eq!(verdict.verdict, pb::Verdict::Accepted as i32, "{verdict:?}");
    server.clock.set(at("2026-11-12T16:00:00Z"));
    let verdict = server.verify(&qr, pb::TransportMode::Rail).await;
    assert_eq!(verdict.reason, pb::RejectionReason::Expired as i32, "{verdict:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_expired_and_far_off_not_carried_passes_last_exactly_seven_days() {
    let server = start().await;
    let now = server.now();
    let cases = [
        (PERMIT, pb::PermitSituation::Lost, "2029-01-01"),
        ("H22222222", pb::PermitSituation::Lost, "2026-01-01"),
        ("H33333333", pb::PermitSituation::Expired, "2026-11-09"),
        ("H44444444", pb::PermitSituation::NotCarried, "2026-11-17"),
        ("H55555555", pb::PermitSituation::NotCarried, "2030-05-05"),
    ];
    for (permit, situation, expiry) in cases {
        let mut request = server.application_for(permit);
        common::applicant(&mut request).permit_situation = situation as i32;
        common::applicant(&mut request).permit_expiry = expiry.to_owned();
        let pass = server.issue(request).await.pass.expect("pass");
        assert_eq!(pass.valid_from, Some(ts(now)), "{situation:?} {expiry}");
        assert_eq!(pass.valid_until, Some(ts(now + TimeDelta::days(7))), "{situation:?} {expiry}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permit_dates_are_judged_in_utc_plus_8() {
    let server = start().await;
    // 01:00 on 11 November in UTC+8, still 10 November in UTC.
    server.clock.set(at("2026-11-10T17:00:00Z"));

    let mut request = server.application();
    common::applicant(&mut request).permit_situation = pb::PermitSituation::NotCarried as i32;
    common::applicant(&mut request).permit_expiry = "2026-11-10".to_owned();
    let status = server.try_issue(request).await.expect_err("permit expired");
    common::assert_bad_field(&status, "applicant.permit_situation");

    let mut request = server.application();
    common::applicant(&mut request).permit_situation = pb::PermitSituation::Expired as i32;
    common::applicant(&mut request).permit_expiry = "2026-11-10".to_owned();
    let pass = server.issue(request).await.pass.expect("pass");
    assert_eq!(pass.valid_until, Some(ts(at("2026-11-10T17:00:00Z") + TimeDelta::days(7))));

    let mut request = server.application();
    common::applicant(&mut request).permit_situation = pb::PermitSituation::NotCarried as i32;
    common::applicant(&mut request).permit_expiry = "2026-11-11".to_owned();
    let pass = server.issue(request).await.pass.expect("pass");
    assert_eq!(pass.valid_until, Some(ts(at("2026-11-11T16:00:00Z"))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_time_is_whole_seconds() {
    let server = start().await;
    server.clock.advance(TimeDelta::milliseconds(750));
    let pass = server.issue_default().await.pass.expect("pass");
    assert_eq!(pass.issued_at, Some(ts(at(common::START))));
    assert_eq!(pass.valid_from, Some(ts(at(common::START))));
    assert_eq!(pass.valid_until, Some(ts(at(common::START) + TimeDelta::days(7))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn air_only_and_rail_only_passes_list_their_mode() {
    let server = start().await;
    for (permit, modes) in [
        (PERMIT, vec![pb::TransportMode::Air as i32]),
        ("H22222222", vec![pb::TransportMode::Rail as i32]),
        ("H33333333", vec![pb::TransportMode::Rail as i32, pb::TransportMode::Air as i32]),
    ] {
        let mut request = server.application_for(permit);
        request.modes = modes.clone();
        let response = server.issue(request).await;
        let listed = response.pass.expect("pass").modes;
        let mut expected = modes;
        expected.sort();
        assert_eq!(listed, expected);
        // At each checkpoint mode, the verdict follows the modes the pass lists.
        for mode in [pb::TransportMode::Air, pb::TransportMode::Rail] {
            let verdict = server.verify(&response.qr_text, mode).await;
            let expected = if listed.contains(&(mode as i32)) {
                (pb::Verdict::Accepted as i32, pb::RejectionReason::Unspecified as i32)
            } else {
                (pb::Verdict::Rejected as i32, pb::RejectionReason::ModeNotAllowed as i32)
            };
            assert_eq!((verdict.verdict, verdict.reason), expected, "{permit} at {mode:?}: {verdict:?}");
            assert_eq!(verdict.pass.expect("summary").modes, listed);
        }
    }
}

/// Decodes a PNG QR image and reads the code back with `rqrr`: (text, version, ecc bits).
fn read_png_qr(png_bytes: &[u8]) -> (String, usize, u16) {
    let mut decoder = png::Decoder::new(std::io::Cursor::new(png_bytes));
    decoder.set_transformations(png::Transformations::EXPAND);
    let mut reader = decoder.read_info().expect("PNG header");
    let mut pixels = vec![0u8; reader.output_buffer_size()];
    let info = reader.next_frame(&mut pixels).expect("PNG image data");
    assert_eq!(info.color_type, png::ColorType::Grayscale);
    assert_eq!(info.bit_depth, png::BitDepth::Eight);
    let (width, height) = (info.width as usize, info.height as usize);
    let line = info.line_size;
    let mut image = rqrr::PreparedImage::prepare_from_greyscale(width, height, |x, y| pixels[y * line + x]);
    let grids = image.detect_grids();
    assert_eq!(grids.len(), 1, "one QR code in the image");
    let (meta, text) = grids[0].decode().expect("QR decodes");
    (text, meta.version.0, meta.ecc_level)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn png_image_reads_back_to_the_qr_text() {
    let server = start().await;
    let mut request = server.application();
    let name = "CHEUNG WING KEUNG ALEXANDER JR";
    assert_eq!(name.len(), 30);
    common::applicant(&mut request).name_latin = name.to_owned();
    common::applicant(&mut request).name_chinese = "張永強".to_owned();
    request.image_format = pb::QrImageFormat::Png as i32;
    let response = server.issue(request).await;
    assert!(response.qr_svg.is_empty());
    assert!(response.qr_png.starts_with(b"\x89PNG\r\n\x1a\n"));
    assert!(response.qr_version <= 13, "version {}", response.qr_version);
    let (text, version, ecc_bits) = read_png_qr(&response.qr_png);
    assert_eq!(text, response.qr_text);
    assert_eq!(version, response.qr_version as usize);
    assert_eq!(ecc_bits, 0b11, "error correction level Q");

    // Unspecified means PNG.
    let mut request = server.application();
    request.image_format = pb::QrImageFormat::Unspecified as i32;
    let response = server.issue(request).await;
    let (text, _, _) = read_png_qr(&response.qr_png);
    assert_eq!(text, response.qr_text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn longest_names_still_give_a_readable_code() {
    let server = start().await;
    let mut request = server.application();
    common::applicant(&mut request).name_latin = "A".repeat(64);
    common::applicant(&mut request).name_chinese = "龘".repeat(20);
    request.image_format = pb::QrImageFormat::Png as i32;
    let response = server.issue(request).await;
    let (text, version, _) = read_png_qr(&response.qr_png);
    assert_eq!(text, response.qr_text);
    assert_eq!(version, response.qr_version as usize);
    let verdict = server.verify(&response.qr_text, pb::TransportMode::Air).await;
    assert_eq!(verdict.verdict, pb::Verdict::Accepted as i32, "{verdict:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn svg_image_is_an_svg_document() {
    let server = start().await;
    let mut request = server.application();
    request.image_format = pb::QrImageFormat::Svg as i32;
    let response = server.issue(request).await;
    assert!(response.qr_png.is_empty());
    assert!(response.qr_svg.contains("<svg"), "{}", response.qr_svg);
    assert!(response.qr_svg.trim_end().ends_with("</svg>"));
}

async fn key_id_of(server: &TestServer) -> String {
    let keys = server.verification_keys().await;
    assert_eq!(keys.len(), 1, "{keys:?}");
    keys[0].key_id.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_service_lists_the_active_key_with_its_sha256_id() {
    let server = start().await;
    let keys = server.verification_keys().await;
    assert_eq!(keys.len(), 1, "{keys:?}");
    let key = &keys[0];
    assert_eq!(key.public_key.len(), 32);
    let digest = Sha256::digest(&key.public_key);
    assert_eq!(key.key_id, hex::encode(&digest[..8]));
    assert_eq!(key.status, pb::KeyStatus::Active as i32);
    // Its signing period starts at the first start and lasts the signing period.
    assert_eq!(key.valid_from, Some(ts(at(common::START))));
    assert_eq!(key.valid_until, Some(ts(at(common::START) + epass::datadir::SIGNING_PERIOD)));
    let pass = server.issue_default().await.pass.expect("pass");
    assert_eq!(pass.key_id, key.key_id);

    // With a key file given, the listed key is that key.
    let keyed = start_with_key().await;
    let keys = keyed.verification_keys().await;
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].public_key, common::server_signing_key().verifying_key().to_bytes().to_vec());
    assert_ne!(keys[0].key_id, key.key_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_passes_quota_key_and_retries() {
    let server = start().await;
    let key_id = key_id_of(&server).await;
    let first_request = server.application();
    let first = server.issue(first_request.clone()).await;
    let second = server.issue_default().await;
    let third = server.issue(first_request.clone()).await;
    assert!(third.replayed);

    let server = server.restart().await;
    assert_eq!(key_id_of(&server).await, key_id, "same key after restart");

    // The quota still counts the two passes.
    let status = server.try_issue(server.application()).await.expect_err("third application refused");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");

    // A retry of a request from before the restart still replays.
    let replay = server.issue(first_request).await;
    assert!(replay.replayed);
    assert_eq!(replay.qr_text, first.qr_text);

    // Both passes still verify and admit.
    for response in [&first, &second] {
        let verdict = server.verify(&response.qr_text, pb::TransportMode::Rail).await;
        assert_eq!(verdict.verdict, pb::Verdict::Accepted as i32, "{verdict:?}");
    }
    let scan = server.scan_id();
    let admitted = server.record(&first.qr_text, "LOK-RAIL-02", pb::TransportMode::Rail, &scan).await;
    assert_eq!(admitted.verdict, pb::Verdict::Accepted as i32, "{admitted:?}");

    // And the entry survives another restart.
    let server = server.restart().await;
    let verdict = server.verify(&first.qr_text, pb::TransportMode::Rail).await;
    assert_eq!(verdict.reason, pb::RejectionReason::AlreadyUsed as i32);
    assert_eq!(verdict.entry.expect("entry").scan_id, scan);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_key_still_verifies_passes_it_signed_before_the_rotation() {
    let server = start_with_key().await;
    let old_key = common::server_signing_key();
    let old = server.issue_default().await;
    let stopped = server.stop().await;

    // A day later, rotate: the old key becomes a retired key in the data directory, a new one
    // signs.
    stopped.clock.advance(TimeDelta::days(1));
    let rotated_at = at(common::START) + TimeDelta::days(1);
    let retired_dir = stopped_data_dir(&stopped).join(epass::datadir::RETIRED_KEYS_DIR);
    std::fs::create_dir_all(&retired_dir).expect("retired keys folder");
    epass::datadir::write_signing_key(&retired_dir.join("old.pem"), &old_key).expect("write");
    let new_key = ed25519_dalek::SigningKey::from_bytes(&[0x42; 32]);
    let new_key_path = stopped_data_dir(&stopped).join("new-key.pem");
    epass::datadir::write_signing_key(&new_key_path, &new_key).expect("write");
    let server = stopped.start_again_with_key(new_key_path).await;

    let keys = server.verification_keys().await;
    let old_id = epass_core::ids::KeyId::of_public_key(old_key.verifying_key().as_bytes()).to_string();
    let new_id = epass_core::ids::KeyId::of_public_key(new_key.verifying_key().as_bytes()).to_string();
    let listed: Vec<_> = keys.iter().map(|k| (k.key_id.clone(), k.status, k.valid_from, k.valid_until)).collect();
    assert_eq!(
        listed,
        vec![
            (
                new_id.clone(),
                pb::KeyStatus::Active as i32,
                Some(ts(rotated_at)),
                Some(ts(rotated_at + epass::datadir::SIGNING_PERIOD))
            ),
            // The old key signs to the end of the rotation's second.
            (
                old_id.clone(),
                pb::KeyStatus::Retired as i32,
                Some(ts(at(common::START))),
                Some(ts(rotated_at + TimeDelta::seconds(1)))
            ),
        ]
    );
    let verdict = server.verify(&old.qr_text, pb::TransportMode::Air).await;
    assert_eq!(verdict.verdict, pb::Verdict::Accepted as i32, "{verdict:?}");
    assert_eq!(verdict.pass.expect("summary").key_id, old_id);
    let scan = server.scan_id();
    let admitted = server.record(&old.qr_text, "SZX-AIR-01", pb::TransportMode::Air, &scan).await;
    assert_eq!(admitted.verdict, pb::Verdict::Accepted as i32, "{admitted:?}");
    let fresh = server.issue_default().await.pass.expect("pass");
    assert_eq!(fresh.key_id, new_id);

    // The retired key cannot vouch for a pass dated after the rotation's second (within it,
    // it still may: a pass it signed then was already answered).
    let within = common::sign(common::contents(server.now()), &old_key);
    let verdict = server.verify(&within, pb::TransportMode::Air).await;
    assert_eq!(verdict.reason, pb::RejectionReason::UnknownPass as i32, "authentic, only unknown: {verdict:?}");
    server.clock.advance(TimeDelta::seconds(1));
    let forged = common::sign(common::contents(server.now()), &old_key);
    let verdict = server.verify(&forged, pb::TransportMode::Air).await;
    assert_eq!(
        (verdict.verdict, verdict.reason),
        (pb::Verdict::Rejected as i32, pb::RejectionReason::KeyNotValid as i32),
        "{verdict:?}"
    );
}

fn stopped_data_dir(stopped: &common::Stopped) -> std::path::PathBuf {
    stopped.data_dir().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reports_serving() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;

    let server = start().await;
    let mut health = HealthClient::new(server.channel.clone());
    for service in ["", "epass.v1.IssuanceService", "epass.v1.CheckpointService", "epass.v1.KeyService"] {
        let response = health
            .check(HealthCheckRequest { service: service.to_owned() })
            .await
            .unwrap_or_else(|e| panic!("health of {service:?}: {e:?}"))
            .into_inner();
        assert_eq!(response.status, ServingStatus::Serving as i32, "{service:?}");
    }
    let status = health
        .check(HealthCheckRequest { service: "epass.v1.NoSuchService".to_owned() })
        .await
        .expect_err("unknown service");
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_lists_the_services() {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;

    let server = start().await;
    let mut reflection = ServerReflectionClient::new(server.channel.clone());
    let requests = vec![
        ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        },
        ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::FileContainingSymbol("epass.v1.CheckpointService".to_owned())),
        },
    ];
    let mut responses =
        reflection.server_reflection_info(tokio_stream::iter(requests)).await.expect("reflection stream").into_inner();

    let first = responses.message().await.expect("response").expect("a response");
    let Some(MessageResponse::ListServicesResponse(list)) = first.message_response else {
        panic!("expected a service list: {first:?}");
    };
    let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    names.sort();
    for expected in
        ["epass.v1.CheckpointService", "epass.v1.IssuanceService", "epass.v1.KeyService", "grpc.health.v1.Health"]
    {
        assert!(names.iter().any(|n| n == expected), "{expected} in {names:?}");
    }

    let second = responses.message().await.expect("response").expect("a response");
    let Some(MessageResponse::FileDescriptorResponse(files)) = second.message_response else {
        panic!("expected a file descriptor: {second:?}");
    };
    assert!(!files.file_descriptor_proto.is_empty());
}
