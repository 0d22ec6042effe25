//! Benchmarks of the three hot paths of the pure core: signing a pass into its QR text,
//! rendering the QR symbol, and verifying a scanned QR text (docs/PERFORMANCE.md).
//!
//! Run with `cargo bench -p epass-core --bench hot_paths`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion};
use ed25519_dalek::{Signature, Signer as _};

use epass_core::applicant::{
    HolderName, IdentityCheck, IdentityCheckMethod, MobileNumber, PermitNumber, PermitSituation, Sex,
};
use epass_core::ids::PassId;
use epass_core::keys::{KeyRing, PassSigner};
use epass_core::pass::{
    decode_qr_text, EnvelopeBuf, Modes, PassContents, SignedPass, TransportMode, MAX_ENVELOPE_LEN, SIGNATURE_DOMAIN,
    SIGNATURE_LEN,
};
use epass_core::policy::Application;
use epass_core::qr::{version_of, QrSymbol};
use epass_core::verify::{authenticate, verify};

/// A 30-character Latin name (the length the QR version target is set for) and a
/// 3-character Chinese name.
const NAME_LATIN: &str = "CHEUNG KA WAI ALEXANDRA JOSEPH";
const NAME_CHINESE: &str = "張家慧";

fn issued_at() -> DateTime<Utc> {
    DateTime::from_timestamp(1_795_000_000, 0).expect("a valid time")
}

fn application() -> Application {
    assert_eq!(NAME_LATIN.chars().count(), 30);
    Application {
        permit: PermitNumber::parse("H12345678").expect("valid permit number"),
        name: HolderName::parse(NAME_LATIN, NAME_CHINESE).expect("valid name"),
        sex: Sex::Female,
        permit_expiry: NaiveDate::from_ymd_opt(2030, 1, 1).expect("valid date"),
        situation: PermitSituation::Lost,
        mobile: MobileNumber::parse("+8613800138000").expect("valid mobile number"),
        identity_check: IdentityCheck {
            method: IdentityCheckMethod::SmsAndFace,
            reference: "face-0123456789".into(),
            checked_at: issued_at() - TimeDelta::minutes(1),
        },
        modes: Modes::AIR_AND_RAIL,
    }
}

fn signer() -> PassSigner {
    PassSigner::from_secret_bytes(&[0x42; 32])
}

/// The realistic pass every group works on.
fn realistic_pass(signer: &PassSigner) -> SignedPass {
    SignedPass::sign(application().pass_contents(PassId::from_bytes([7; 16]), issued_at()), signer)
}

/// What the signature covers: the domain prefix, then the envelope before the signature.
fn signed_message(pass: &SignedPass) -> Vec<u8> {
    let envelope = pass.envelope();
    [SIGNATURE_DOMAIN, &envelope[..envelope.len() - SIGNATURE_LEN]].concat()
}

fn configure<'c>(c: &'c mut Criterion, name: &str) -> BenchmarkGroup<'c, WallTime> {
    let mut group = c.benchmark_group(name);
    group.sample_size(50).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    group
}

/// Whether this run measures (`cargo bench`), rather than checking that each benchmark runs
/// once (`cargo test --benches`), which should not pay for the extra measurements.
fn benchmarking() -> bool {
    std::env::args().any(|arg| arg == "--bench")
}

/// Stack layouts every paired comparison is repeated at: 16 bytes apart, over 4 KiB.
const LAYOUTS: usize = 256;

/// Calls `f` with the stack moved down by about `16 * layout` bytes: `layout / 2` frames of
/// 32 bytes, and 16 more for an odd `layout`.
///
/// The same Ed25519 verification (ed25519-dalek's AVX2 backend on the machine measured) runs
/// up to 20-30% faster or slower depending on where its stack falls: found by shifting the
/// process's initial stack with the environment's size, with ASLR off. So a comparison made
/// at one layout says more about the layout than about the code; the median over many
/// layouts does not.
fn at_layout(layout: usize, f: &mut dyn FnMut()) {
    deeper(layout / 2, layout % 2, f);
}

#[inline(never)]
fn deeper(frames: usize, pad: usize, f: &mut dyn FnMut()) {
    if frames > 0 {
        deeper(frames - 1, pad, f);
    } else {
        match pad {
            0 => padded::<0>(f),
            _ => padded::<16>(f),
        }
    }
    // Keeps the recursive call from becoming a jump that reuses this frame.
    black_box(frames);
}

#[inline(never)]
fn padded<const N: usize>(f: &mut dyn FnMut()) {
    let pad = black_box([0u8; N]);
    f();
    black_box(&pad);
}

/// Prints the overhead of `subject` over `baseline`, timed in short alternating blocks so
/// that both see the same load (on a shared 2-core machine the load changes between two
/// criterion benchmarks run seconds apart, and that swamps a difference of a few percent),
/// at each of [`LAYOUTS`] stack layouts. The order within a pair alternates, so that neither
/// always runs first.
fn paired_overhead<S, B>(label: &str, mut subject: impl FnMut() -> S, mut baseline: impl FnMut() -> B) {
    const ROUNDS: usize = 5;
    const PER_BLOCK: u32 = 10;
    let time = |layout: usize, f: &mut dyn FnMut()| {
        let start = Instant::now();
        at_layout(layout, &mut || {
            for _ in 0..PER_BLOCK {
                f();
            }
        });
        start.elapsed().as_secs_f64()
    };
    let mut ratios: Vec<Vec<f64>> = (0..LAYOUTS).map(|_| Vec::with_capacity(ROUNDS)).collect();
    for round in 0..ROUNDS {
        for (layout, ratios) in ratios.iter_mut().enumerate() {
            let mut s = || drop(black_box(subject()));
            let mut b = || drop(black_box(baseline()));
            let (s_time, b_time) = if (round + layout) % 2 == 0 {
                let s_time = time(layout, &mut s);
                (s_time, time(layout, &mut b))
            } else {
                let b_time = time(layout, &mut b);
                (time(layout, &mut s), b_time)
            };
            ratios.push(s_time / b_time);
        }
    }
    let mut per_layout: Vec<f64> = ratios
        .iter_mut()
        .map(|r| {
            r.sort_by(f64::total_cmp);
            r[ROUNDS / 2]
        })
        .collect();
    per_layout.sort_by(f64::total_cmp);
    let pct = |r: f64| (r - 1.0) * 100.0;
    println!(
        "{label}: overhead {:+.1}% (median of {LAYOUTS} stack layouts; layouts range {:+.1}% .. {:+.1}%, quartiles {:+.1}% .. {:+.1}%)",
        pct(per_layout[LAYOUTS / 2]),
        pct(per_layout[0]),
        pct(per_layout[LAYOUTS - 1]),
        pct(per_layout[LAYOUTS / 4]),
        pct(per_layout[3 * LAYOUTS / 4]),
    );
}

fn bench_issue(c: &mut Criterion) {
    let signer = signer();
    let app = application();
    let pass_id = PassId::from_bytes([7; 16]);
    let now = issued_at();
    let message = signed_message(&realistic_pass(&signer));

    let sign_and_encode = || {
        let contents = black_box(&app).pass_contents(black_box(pass_id), black_box(now));
        SignedPass::sign(contents, black_box(&signer)).qr_text()
    };
    // PassSigner has no public raw sign, so the baseline is ed25519-dalek itself over a
    // message of the same length as the one a pass signature covers.
    let key = signer.signing_key();
    let bare_sign = || key.sign(black_box(&message));
    if benchmarking() {
        paired_overhead("sign_and_encode vs bare ed25519 sign", sign_and_encode, bare_sign);
    }

    let mut group = configure(c, "issue");
    group.bench_function("sign_and_encode", |b| b.iter(sign_and_encode));
    group.bench_function("pass_contents", |b| {
        b.iter(|| black_box(&app).pass_contents(black_box(pass_id), black_box(now)))
    });
    group.bench_function("bare_ed25519_sign", |b| b.iter(bare_sign));
    let pass = realistic_pass(&signer);
    group.bench_function("qr_text", |b| b.iter(|| black_box(&pass).qr_text()));
    group.finish();
}

/// The PNG settings compared: `QrSymbol::png` uses `fast_up`; `fast_sub` is what it used first.
const PNG_SETTINGS: [(&str, png::Compression, png::FilterType); 4] = [
    ("fast_sub", png::Compression::Fast, png::FilterType::Sub),
    ("default_sub", png::Compression::Default, png::FilterType::Sub),
    ("fast_up", png::Compression::Fast, png::FilterType::Up),
    ("default_up", png::Compression::Default, png::FilterType::Up),
];

fn bench_qr(c: &mut Criterion) {
    let text = realistic_pass(&signer()).qr_text();
    let symbol = QrSymbol::encode(&text).expect("the text fits");
    assert_eq!(version_of(&text), Ok(symbol.version()));
    println!(
        "realistic pass: QR text {} chars, QR version {} ({} modules), mask {}, SVG {} bytes",
        text.len(),
        symbol.version(),
        symbol.width(),
        symbol.mask(),
        symbol.svg().len(),
    );
    for (name, compression, filter) in PNG_SETTINGS {
        println!("PNG {name}: {} bytes", symbol.png_with(compression, filter).len());
    }

    let mut group = configure(c, "qr");
    group.bench_function("encode_matrix", |b| b.iter(|| QrSymbol::encode(black_box(&text))));
    // What the `qrcode` crate's own encoder costs for the same text (its automatic segmentation
    // and its mask choice): what `encode_matrix` was before its mask choice was replaced.
    group.bench_function("qrcode_crate_matrix", |b| {
        b.iter(|| qrcode::QrCode::with_error_correction_level(black_box(text.as_bytes()), qrcode::EcLevel::Q))
    });
    // What a caller that wants only the version (no image) computes instead of the whole
    // matrix: a search over the capacities, from the text's length alone.
    group.bench_function("version_only", |b| b.iter(|| version_of(black_box(&text))));
    group.bench_function("png", |b| b.iter(|| black_box(&symbol).png()));
    group.bench_function("svg", |b| b.iter(|| black_box(&symbol).svg()));
    for (name, compression, filter) in PNG_SETTINGS {
        group.bench_function(format!("png_{name}"), |b| b.iter(|| black_box(&symbol).png_with(compression, filter)));
    }
    group.finish();
}

fn bench_verify(c: &mut Criterion) {
    let signer = signer();
    let ring = KeyRing::new(vec![signer.verification_key()]).expect("one key");
    let pass = realistic_pass(&signer);
    let text = pass.qr_text();
    let now = pass.contents().valid_from + TimeDelta::hours(1);
    let message = signed_message(&pass);
    let signature = Signature::from_bytes(&pass.signature());
    let verifying_key = signer.signing_key().verifying_key();
    assert_eq!(verify(&text, &ring, TransportMode::Air, now).verdict, Ok(()));
    assert!(verifying_key.verify_strict(&message, &signature).is_ok());
    let bare = || black_box(&verifying_key).verify_strict(black_box(&message), black_box(&signature));
    let full = || verify(black_box(&text), black_box(&ring), TransportMode::Air, black_box(now));
    let key = ring.find(pass.key_id()).expect("the signer's key");
    let signed = &pass.envelope()[..pass.envelope().len() - SIGNATURE_LEN];
    let raw_signature = pass.signature();
    let pass_bytes = || black_box(key).verify_pass_bytes(black_box(signed), black_box(&raw_signature));
    if benchmarking() {
        // The first two lines calibrate the method: the same call on both sides, then the
        // same call with the subject's stack 2 KiB lower.
        paired_overhead("bare verify_strict vs itself", bare, bare);
        let mut bare_inner = || drop(black_box(bare()));
        paired_overhead("bare verify_strict 2 KiB lower vs itself", || at_layout(128, &mut bare_inner), bare);
        paired_overhead("verify vs bare verify_strict", full, bare);
        paired_overhead("verify_pass_bytes vs bare verify_strict", pass_bytes, bare);
        paired_overhead("verify vs verify_pass_bytes", full, pass_bytes);
    }

    let mut group = configure(c, "verify");
    group.bench_function("verify", |b| b.iter(full));
    group.bench_function("bare_verify_strict", |b| b.iter(bare));
    group.bench_function("authenticate", |b| b.iter(|| authenticate(black_box(&text), black_box(&ring))));
    group.bench_function("verify_pass_bytes", |b| b.iter(pass_bytes));
    group.bench_function("decode_qr_text", |b| {
        b.iter(|| {
            let mut buf: EnvelopeBuf = [0u8; MAX_ENVELOPE_LEN];
            decode_qr_text(black_box(&text), &mut buf).map(|e| e.key_id)
        })
    });
    let payload = pass.contents().payload_bytes();
    group.bench_function("parse_payload", |b| b.iter(|| PassContents::from_payload_bytes(black_box(&payload))));
    group.bench_function("decode_and_parse", |b| {
        b.iter(|| {
            let mut buf: EnvelopeBuf = [0u8; MAX_ENVELOPE_LEN];
            let envelope = decode_qr_text(black_box(&text), &mut buf).expect("well formed");
            PassContents::from_payload_bytes(envelope.payload)
        })
    });
    group.finish();
}

// What `criterion_group!` and `criterion_main!` expand to, written out because the
// undocumented `pub fn` the first one generates trips the `missing_docs` lint.
fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench_issue(&mut c);
    bench_qr(&mut c);
    bench_verify(&mut c);
    c.final_summary();
}
