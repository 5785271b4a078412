//! Azure SEV-SNP vTPM evidence: verification per second on one core, next to the bare
//! signature work it cannot avoid (one ECDSA P-384 verify of the report, one RSA verify of
//! the quote), measured in the same run in alternating batches.
//! `cargo bench -p verifier-core --bench snp`. Data: the shared test data's real Azure
//! evidence (`quote/trustee-az-snp-vtpm/evidence-v1.json`, set UNLOCK_TESTDATA).
//!
//! Rows: the whole check with the VCEK chain verified each time (two RSA-4096 PSS
//! signatures), and with the chain cached per (chip, TCB) as a server would: the report
//! parse, its signature, the runtime-data hash and JSON, the AK, the quote.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant, UNIX_EPOCH};

use aws_lc_rs::signature::{
    RsaPublicKeyComponents, UnparsedPublicKey, ECDSA_P384_SHA384_FIXED, RSA_PKCS1_2048_8192_SHA256,
};
use base64::Engine as _;
use verifier_core::attester::amd::AmdRoots;
use verifier_core::attester::{azure, snp};
use verifier_core::quote::verify_quote;
use verifier_core::wire::{Digest, HashAlg, PcrValues, PublicKey, Signature};

const RUNS: usize = 7;
const RUN_TIME: Duration = Duration::from_millis(150);

fn calibrate<R>(f: &mut impl FnMut() -> R) -> u64 {
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(200) {
        black_box(f());
    }
    let mut batch: u64 = 1;
    loop {
        let t = Instant::now();
        for _ in 0..batch {
            black_box(f());
        }
        if t.elapsed() >= RUN_TIME / 4 {
            return batch * 4;
        }
        batch *= 2;
    }
}

fn rate<R>(f: &mut impl FnMut() -> R, batch: u64) -> f64 {
    let t = Instant::now();
    for _ in 0..batch {
        black_box(f());
    }
    batch as f64 / t.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// (measured/s, baseline/s, median of baseline rate / measured rate over alternating pairs).
fn compare<R, S>(mut f: impl FnMut() -> R, mut base: impl FnMut() -> S) -> (f64, f64, f64) {
    let (bf, bb) = (calibrate(&mut f), calibrate(&mut base));
    let (mut vf, mut vb, mut costs) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..RUNS {
        let a = rate(&mut f, bf);
        let b = rate(&mut base, bb);
        vf.push(a);
        vb.push(b);
        costs.push(b / a);
    }
    (median(vf), median(vb), median(costs))
}

fn testdata() -> PathBuf {
    std::env::var("UNLOCK_TESTDATA")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../shared/testdata"
            ))
        })
}

fn main() {
    let path = testdata().join("quote/trustee-az-snp-vtpm/evidence-v1.json");
    let d: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).expect("evidence-v1.json")).unwrap();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let hcl = b64
        .decode(d["hcl_report"].as_str().unwrap().trim_end_matches('='))
        .unwrap();
    let vcek_der = b64
        .decode(d["vcek"].as_str().unwrap().trim_end_matches('='))
        .unwrap();
    let q = &d["tpm_quote"];
    let attest = hex::decode(q["message"].as_str().unwrap()).unwrap();
    let sig_bytes = hex::decode(q["signature"].as_str().unwrap()).unwrap();
    let sig = Signature::RsaSsa {
        hash: HashAlg::Sha256,
        sig: sig_bytes.clone(),
    };
    let mut pcrs = PcrValues::new();
    for (i, h) in q["pcrs"].as_array().unwrap().iter().enumerate() {
        pcrs.insert(
            u8::try_from(i).unwrap(),
            Digest::from_hex(HashAlg::Sha256, h.as_str().unwrap()).unwrap(),
        );
    }
    // 2027-06-01, inside the VCEK's validity.
    let now = UNIX_EPOCH + Duration::from_secs(1_811_808_000);
    let roots = AmdRoots::shipped().unwrap();
    let vcek = roots.verify_vcek(&vcek_der, &[], now).unwrap();
    let verified = azure::verify_hcl_report(&hcl, &vcek).unwrap();
    let PublicKey::Rsa { modulus, .. } = verified.ak().public().key() else {
        panic!("RSA AK")
    };
    let n = modulus.clone();
    let e = vec![1u8, 0, 1];

    // The floor: the two signature checks alone, on the same bytes.
    let report = &hcl[32..32 + snp::REPORT_LEN];
    let parsed = snp::SnpReport::parse(report).unwrap();
    let mut rs = parsed.sig_r.to_vec();
    rs.extend_from_slice(&parsed.sig_s);
    let vcek_key = vcek.public_key().to_vec();
    let floor = || {
        UnparsedPublicKey::new(&ECDSA_P384_SHA384_FIXED, &vcek_key)
            .verify(&report[..snp::SIGNED_LEN], &rs)
            .unwrap();
        RsaPublicKeyComponents { n: &n, e: &e }
            .verify(&RSA_PKCS1_2048_8192_SHA256, &attest, &sig_bytes)
            .unwrap();
    };
    let cache = verifier_core::attester::amd::VcekCache::new();
    let cached = || {
        let v = roots.verify_vcek_cached(&cache, &vcek_der, now).unwrap();
        let h = azure::verify_hcl_report(&hcl, &v).unwrap();
        verify_quote(h.ak(), b"challenge", &attest, &sig, &pcrs).unwrap()
    };
    let full = || {
        let v = roots.verify_vcek(&vcek_der, &[], now).unwrap();
        let h = azure::verify_hcl_report(&hcl, &v).unwrap();
        verify_quote(h.ak(), b"challenge", &attest, &sig, &pcrs).unwrap()
    };
    println!("verifier-core snp bench (single thread; median of {RUNS} alternating runs)");
    let (c, fl, cost_c) = compare(cached, floor);
    println!(
        "SNP report + runtime data + AK + vTPM quote, VCEK chain cached: {c:.0}/s; bare P-384 + RSA verify: {fl:.0}/s; cost {cost_c:.2}x (goal <= 1.3x)"
    );
    let (f, fl2, cost_f) = compare(full, floor);
    println!(
        "the same with the VCEK chain verified each time: {f:.0}/s; bare: {fl2:.0}/s; cost {cost_f:.2}x"
    );
}
