//! Single-threaded throughput of the server's hot paths, each next to the cost floor it
//! should approach (the bare aws-lc-rs operation on the same input, measured in the same run):
//! quote verification, whole-evidence validation, event-log and IMA replay, MakeCredential
//! and HPKE sealing. `cargo bench -p verifier-core` (or `make bench`) prints a table.
//!
//! No benchmark framework: a warm-up, then several timed runs of a calibrated batch, and the
//! median. Good enough to see a 1.2x goal or a 500 MB/s goal; not for 2% differences.

// Bench code: a failed unwrap is a broken benchmark setup, which should stop loudly.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use aws_lc_rs::digest;
use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize};
use aws_lc_rs::signature::{
    self, EcdsaKeyPair, KeyPair as _, ParsedPublicKey, RsaPublicKeyComponents, UnparsedPublicKey,
    ECDSA_P256_SHA256_FIXED_SIGNING,
};
use verifier_core::eventlog::EventLog;
use verifier_core::evidence::{self, Expected, Submitted};
use verifier_core::ima::MeasurementList;
use verifier_core::keysplit::{self, NkPrivate, Share};
use verifier_core::makecred;
use verifier_core::merkle::{self, MerkleTree};
use verifier_core::quote::software::SoftwareAk;
use verifier_core::quote::verify_quote;
use verifier_core::wire::{
    BankSelection, ClockInfo, Digest, EccCurve, HashAlg, KdfScheme, KeyScheme, ObjectAttributes,
    PcrSelection, PcrValues, Public, PublicKey, Signature, SymDef, SymMode,
};

/// Timed runs per measurement; the median is reported.
const RUNS: usize = 7;
/// Target duration of one timed run.
const RUN_TIME: Duration = Duration::from_millis(120);
/// Warm-up before calibration (caches, CPU frequency, lazy initialisation).
const WARM_UP: Duration = Duration::from_millis(200);

/// Warms `f` up and returns a batch size that takes about [`RUN_TIME`].
fn calibrate<R>(f: &mut impl FnMut() -> R) -> u64 {
    let start = Instant::now();
    while start.elapsed() < WARM_UP {
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

/// Calls per second over one batch.
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

/// Operations per second of `f`, median of [`RUNS`].
fn ops_per_sec<R>(mut f: impl FnMut() -> R) -> f64 {
    let batch = calibrate(&mut f);
    median((0..RUNS).map(|_| rate(&mut f, batch)).collect())
}

/// A measurement next to its baseline. The two run in alternating batches and the cost is
/// the median of the per-pair ratios, so load from other processes (this machine is shared)
/// affects both sides of each ratio alike.
struct Compared {
    /// Median calls per second of the measured operation.
    value: f64,
    /// Median calls per second of the baseline.
    base: f64,
    /// Median of baseline rate / measured rate over the pairs.
    cost: f64,
}

fn compare<R, S>(mut f: impl FnMut() -> R, mut base: impl FnMut() -> S) -> Compared {
    let (bf, bb) = (calibrate(&mut f), calibrate(&mut base));
    let (mut vf, mut vb, mut costs) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..RUNS {
        let a = rate(&mut f, bf);
        let b = rate(&mut base, bb);
        vf.push(a);
        vb.push(b);
        costs.push(b / a);
    }
    Compared {
        value: median(vf),
        base: median(vb),
        cost: median(costs),
    }
}

struct Table(Vec<[String; 5]>);

impl Table {
    fn row(&mut self, what: &str, value: String, baseline: String, ratio: String, goal: &str) {
        println!("  measured: {what}");
        self.0
            .push([what.into(), value, baseline, ratio, goal.into()]);
    }

    fn print(&self) {
        let header = [
            "measurement",
            "value",
            "baseline (same run)",
            "cost",
            "goal",
        ];
        let mut width = header.map(str::len);
        for r in &self.0 {
            for (w, c) in width.iter_mut().zip(r) {
                *w = (*w).max(c.len());
            }
        }
        let line = |cells: [&str; 5]| {
            let mut s = String::from("|");
            for (c, w) in cells.iter().zip(width) {
                s.push_str(&format!(" {c:<w$} |"));
            }
            println!("{s}");
        };
        println!();
        line(header);
        line(width.map(|w| "-".repeat(w)).each_ref().map(String::as_str));
        for r in &self.0 {
            line(r.each_ref().map(String::as_str));
        }
        println!();
    }
}

fn testdata() -> PathBuf {
    let dir = std::env::var("UNLOCK_TESTDATA")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../shared/testdata"
            ))
        });
    assert!(
        dir.join("README.md").is_file(),
        "test data not found at {} (set UNLOCK_TESTDATA to the shared testdata folder)",
        dir.display()
    );
    dir
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files_under(&path, out);
        } else {
            out.push(path);
        }
    }
}

/// The event log with the most event bytes (padding excluded) that parses and carries a
/// SHA-256 bank: the worst case the server meets among real logs.
fn largest_event_log() -> (String, Vec<u8>) {
    let mut files = Vec::new();
    files_under(&testdata().join("eventlog"), &mut files);
    files
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "bin"))
        .filter_map(|p| {
            let bytes = std::fs::read(&p).ok()?;
            let log = EventLog::parse(&bytes).ok()?;
            if !log.banks().contains(&HashAlg::Sha256) {
                return None;
            }
            let size = bytes.len() - log.padding();
            let name = p.strip_prefix(testdata()).unwrap().display().to_string();
            Some((size, name, bytes))
        })
        .max_by_key(|(size, ..)| *size)
        .map(|(_, name, bytes)| (name, bytes))
        .expect("no parseable event log with a SHA-256 bank in the test data")
}

fn fmt_ops(v: f64) -> String {
    format!("{v:.0} /s")
}

fn fmt_mb(v: f64) -> String {
    format!("{v:.0} MB/s")
}

/// How a rate is shown: calls per second, or MB/s for calls over `bytes` bytes.
#[derive(Clone, Copy)]
enum Unit {
    Ops,
    Mb(usize),
}

impl Unit {
    fn show(self, rate: f64) -> String {
        match self {
            Self::Ops => fmt_ops(rate),
            Self::Mb(bytes) => fmt_mb(rate * bytes as f64 / 1e6),
        }
    }
}

impl Table {
    fn compared(&mut self, what: &str, unit: Unit, c: &Compared, base: &str, goal: &str) {
        self.row(
            what,
            unit.show(c.value),
            format!("{} {base}", unit.show(c.base)),
            format!("{:.2}x", c.cost),
            goal,
        );
    }
}

fn quote_pcrs() -> (PcrSelection, PcrValues) {
    let sel = PcrSelection::new(vec![BankSelection::new(
        HashAlg::Sha256,
        &[0, 1, 2, 3, 4, 5, 6, 7, 15],
    )
    .unwrap()])
    .unwrap();
    let mut pcrs = PcrValues::new();
    for (_, i) in sel.iter() {
        pcrs.insert(i, HashAlg::Sha256.hash(&[i]));
    }
    (sel, pcrs)
}

fn clock() -> ClockInfo {
    ClockInfo {
        clock: 1000,
        reset_count: 3,
        restart_count: 0,
        safe: true,
    }
}

fn bench_quotes(t: &mut Table) {
    let (sel, pcrs) = quote_pcrs();
    let extra = [0x42u8; 32];
    for (label, ak) in [
        ("ECDSA P-256", SoftwareAk::generate_ecc_p256().unwrap()),
        ("RSA-2048", SoftwareAk::generate_rsa_2048().unwrap()),
    ] {
        let (attest, sig) = ak.quote(&extra, &sel, &pcrs, clock(), 1).unwrap();
        verify_quote(ak.ak(), &extra, &attest, &sig, &pcrs).unwrap();
        let full = || verify_quote(ak.ak(), &extra, &attest, &sig, &pcrs).is_ok();
        // The baselines: one aws-lc-rs verification of the same signature over the same
        // bytes with the key parsed once (the floor); and parsed per call, as the quote
        // code does today.
        let (vs_parsed, unparsed_vs_parsed) = match &sig {
            Signature::Ecdsa { r, s, .. } => {
                let point = ak.public().ecc_point_uncompressed().unwrap();
                let rs = [r.as_slice(), s.as_slice()].concat();
                let alg = &signature::ECDSA_P256_SHA256_FIXED;
                let key = ParsedPublicKey::new(alg, &point).unwrap();
                key.verify_sig(&attest, &rs).unwrap();
                let parsed = || key.verify_sig(&attest, &rs).is_ok();
                let unparsed = || {
                    UnparsedPublicKey::new(alg, &point)
                        .verify(&attest, &rs)
                        .is_ok()
                };
                (compare(full, parsed), compare(unparsed, parsed))
            }
            Signature::RsaSsa { sig, .. } => {
                let n = ak.public().rsa_modulus().unwrap();
                let e = [1u8, 0, 1];
                let alg = &signature::RSA_PKCS1_2048_8192_SHA256;
                let spki = ak.public().spki_der().unwrap();
                let key = ParsedPublicKey::new(alg, &spki).unwrap();
                key.verify_sig(&attest, sig).unwrap();
                let parsed = || key.verify_sig(&attest, sig).is_ok();
                let unparsed = || {
                    RsaPublicKeyComponents { n, e: &e[..] }
                        .verify(alg, &attest, sig)
                        .is_ok()
                };
                (compare(full, parsed), compare(unparsed, parsed))
            }
            other => panic!("unexpected signature {other:?}"),
        };
        let base = "bare verify (key pre-parsed)";
        t.compared(
            &format!("verify_quote, {label} AK"),
            Unit::Ops,
            &vs_parsed,
            base,
            "<= 1.2x",
        );
        t.compared(
            &format!("  bare verify, {label}, key parsed per call"),
            Unit::Ops,
            &unparsed_vs_parsed,
            base,
            "-",
        );
    }
}

fn bench_evidence(t: &mut Table, log_name: &str, log: &[u8]) {
    let ak = SoftwareAk::generate_ecc_p256().unwrap();
    let sel = PcrSelection::new(vec![BankSelection::new(
        HashAlg::Sha256,
        &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 14, 15],
    )
    .unwrap()])
    .unwrap();
    let parsed = EventLog::parse(log).unwrap();
    let mut pcrs = PcrValues::new();
    for (alg, i) in sel.iter() {
        let v = parsed
            .replay()
            .get(alg, i)
            .copied()
            .unwrap_or_else(|| Digest::zero(alg));
        pcrs.insert(i, v);
    }
    let nonces = [[1u8; 32], [2u8; 32]];
    let tree = MerkleTree::new(&nonces).unwrap();
    let proof = tree.proof(0).unwrap();
    let nk_pub = NkPrivate::generate().unwrap().public().as_bytes().to_vec();
    let extra = merkle::quote_extra_data(&tree.root(), &nk_pub);
    let (attest, sig) = ak.quote(&extra, &sel, &pcrs, clock(), 1).unwrap();
    let run = || {
        evidence::validate(
            Expected {
                ak: ak.ak(),
                nonce: &nonces[0],
            },
            Submitted {
                attest: &attest,
                signature: &sig,
                pcrs: &pcrs,
                nk_pub: &nk_pub,
                proof: &proof,
                event_log: Some(log),
                ima_log: None,
            },
        )
        .is_ok()
    };
    assert!(run(), "evidence for the bench does not validate");
    let c = compare(run, || {
        verify_quote(ak.ak(), &extra, &attest, &sig, &pcrs).is_ok()
    });
    t.compared(
        &format!(
            "evidence::validate, ECDSA AK + {log_name} ({} B)",
            log.len()
        ),
        Unit::Ops,
        &c,
        "verify_quote alone",
        "-",
    );
}

/// Walks the event framing with no digest handling, decoding or allocation: the floor any
/// parser of this format has to pay. Bench-local, not the crate's parser.
fn framing_walk(bytes: &[u8], banks: &[HashAlg]) -> usize {
    let u32le = |b: &[u8], at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap());
    let mut at = 32 + u32le(bytes, 28) as usize;
    let mut events = 1;
    while at + 12 <= bytes.len() && bytes[at] != 0xff {
        let count = u32le(bytes, at + 8) as usize;
        let mut p = at + 12;
        for _ in 0..count {
            let alg = u16::from_le_bytes([bytes[p], bytes[p + 1]]);
            let size = banks
                .iter()
                .find(|b| b.to_tpm() == alg)
                .map_or(0, |b| b.size());
            p += 2 + size;
        }
        at = p + 4 + u32le(bytes, p) as usize;
        events += 1;
    }
    events
}

fn bench_eventlog(t: &mut Table, log_name: &str, log: &[u8]) {
    let parsed = EventLog::parse(log).unwrap();
    let len = log.len() - parsed.padding();
    let unit = Unit::Mb(len);
    let sha = || digest::digest(&digest::SHA256, &log[..len]);
    let full = compare(|| EventLog::parse(log).map(|l| l.events().len()), sha);
    t.compared(
        &format!(
            "event log parse+replay, {log_name} ({len} B, {} events, {} banks)",
            parsed.events().len(),
            parsed.banks().len()
        ),
        unit,
        &full,
        "SHA-256 over the same bytes",
        ">= 500 MB/s",
    );
    let decode = || {
        for e in parsed.events() {
            black_box(e.decode());
        }
    };
    t.compared(
        "  decode all events (on a parsed log)",
        unit,
        &compare(decode, sha),
        "SHA-256",
        "-",
    );
    let both = || {
        if let Ok(l) = EventLog::parse(log) {
            for e in l.events() {
                black_box(e.decode());
            }
        }
    };
    t.compared(
        "  parse+replay+decode",
        unit,
        &compare(both, sha),
        "SHA-256",
        "-",
    );
    // There is no parse-without-replay entry point; the framing walk is the parse floor.
    let banks = parsed.banks().to_vec();
    assert_eq!(framing_walk(log, &banks), parsed.events().len());
    t.compared(
        "  parse-only floor: framing walk (bench-local)",
        unit,
        &compare(|| framing_walk(log, &banks), sha),
        "SHA-256",
        "-",
    );
}

fn bench_ima(t: &mut Table) {
    // The largest list in the test data is ASCII; the protocol's validation parses the
    // binary format, so convert it (same entries, same template data).
    let path = "ima/rust-keylime/ascii_runtime_measurements";
    let ascii = std::fs::read(testdata().join(path)).unwrap();
    let list = MeasurementList::parse_ascii(&ascii, HashAlg::Sha1).unwrap();
    let binary = list.to_binary();
    let unit = Unit::Mb(binary.len());
    let sha = || digest::digest(&digest::SHA256, &binary);
    let run = || {
        let l = MeasurementList::parse_binary(&binary, HashAlg::Sha1).unwrap();
        (
            l.findings().len(),
            l.replay(HashAlg::Sha256).pcr(HashAlg::Sha256, 10).copied(),
        )
    };
    t.compared(
        &format!(
            "IMA binary parse+check+replay(sha256), {path} as binary ({} B, {} entries)",
            binary.len(),
            list.entries().len()
        ),
        unit,
        &compare(run, sha),
        "SHA-256 over the same bytes",
        "-",
    );
    let parse = || MeasurementList::parse_binary(&binary, HashAlg::Sha1).is_ok();
    t.compared(
        "  IMA binary parse only",
        unit,
        &compare(parse, sha),
        "SHA-256",
        "-",
    );
}

fn ek_attributes() -> ObjectAttributes {
    ObjectAttributes::FIXED_TPM
        | ObjectAttributes::FIXED_PARENT
        | ObjectAttributes::SENSITIVE_DATA_ORIGIN
        | ObjectAttributes::ADMIN_WITH_POLICY
        | ObjectAttributes::RESTRICTED
        | ObjectAttributes::DECRYPT
}

const AES128_CFB: SymDef = SymDef::Aes {
    key_bits: 128,
    mode: SymMode::Cfb,
};

fn bench_makecred(t: &mut Table) {
    let ecc = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
    let point = ecc.public_key().as_ref();
    let ecc_ek = Public::new(
        HashAlg::Sha256,
        ek_attributes(),
        &[],
        PublicKey::Ecc {
            symmetric: AES128_CFB,
            scheme: KeyScheme::Null,
            curve: EccCurve::NistP256,
            kdf: KdfScheme::Null,
            x: point[1..33].to_vec(),
            y: point[33..65].to_vec(),
        },
    )
    .unwrap();
    let rsa = RsaKeyPair::generate(KeySize::Rsa2048).unwrap();
    let rsa_ek = Public::new(
        HashAlg::Sha256,
        ek_attributes(),
        &[],
        PublicKey::Rsa {
            symmetric: AES128_CFB,
            scheme: KeyScheme::Null,
            key_bits: 2048,
            exponent: 0,
            modulus: rsa
                .public_key()
                .modulus()
                .big_endian_without_leading_zero()
                .to_vec(),
        },
    )
    .unwrap();
    let ak_name = SoftwareAk::generate_ecc_p256()
        .unwrap()
        .ak()
        .name()
        .to_vec();
    let secret = [0x33u8; 32];
    for (label, ek) in [("ECC P-256", &ecc_ek), ("RSA-2048", &rsa_ek)] {
        makecred::make_credential(ek, &ak_name, &secret).unwrap();
        let v = ops_per_sec(|| makecred::make_credential(ek, &ak_name, &secret).is_ok());
        t.row(
            &format!("MakeCredential, {label} EK"),
            fmt_ops(v),
            "-".into(),
            "-".into(),
            "-",
        );
    }
}

/// A boot application's Authenticode signature checked for auto-approval (Debian's signed
/// shim fallback, chained to Debian's Secure Boot CA) against its floor: the two RSA-2048
/// PKCS#1 verifications it needs (the signer's, the CA's over the signer certificate), keys
/// parsed per call as the code does.
fn bench_image_signature(t: &mut Table) {
    use verifier_core::image_signature::{verify, TrustedSigners};
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/image_signature/testdata");
    let image = std::fs::read(dir.join("fbx64.efi.signed")).unwrap();
    let ca = std::fs::read(dir.join("debian-secure-boot-ca.der")).unwrap();
    let digest = verifier_core::predict::authenticode(&image, HashAlg::Sha256).unwrap();
    let sig = verifier_core::predict::image_signatures(&image)
        .unwrap()
        .remove(0);
    let trusted = TrustedSigners::from_der(&[ca]).unwrap();
    let now = std::time::SystemTime::now();
    verify(&sig, &digest, &trusted, now).unwrap();
    let full = || verify(&sig, &digest, &trusted, now).is_ok();
    let ak = SoftwareAk::generate_rsa_2048().unwrap();
    let (sel, pcrs) = quote_pcrs();
    let (attest, q) = ak.quote(&[1; 32], &sel, &pcrs, clock(), 1).unwrap();
    let Signature::RsaSsa { sig: rsa_sig, .. } = q else {
        panic!("not an RSA signature")
    };
    let n = ak.public().rsa_modulus().unwrap();
    let e = [1u8, 0, 1];
    let alg = &signature::RSA_PKCS1_2048_8192_SHA256;
    let two = || {
        (0..2).all(|_| {
            RsaPublicKeyComponents { n, e: &e[..] }
                .verify(alg, &attest, &rsa_sig)
                .is_ok()
        })
    };
    t.compared(
        "image_signature::verify (Debian-signed PE, chain to Debian CA)",
        Unit::Ops,
        &compare(full, two),
        "2 bare RSA-2048 verifies",
        "-",
    );
}

fn bench_hpke(t: &mut Table) {
    let nk = NkPrivate::generate().unwrap();
    let nk_pub = nk.public();
    let share = Share::from_bytes([0x5au8; 32]);
    let sealed = keysplit::seal_share(&nk_pub, "verifier", b"challenge-1", &share).unwrap();
    assert_eq!(
        nk.open_share(&sealed, "verifier", b"challenge-1")
            .unwrap()
            .expose_secret(),
        share.expose_secret()
    );
    let v =
        ops_per_sec(|| keysplit::seal_share(&nk_pub, "verifier", b"challenge-1", &share).is_ok());
    t.row(
        "HPKE seal_share (X25519, HKDF-SHA256, AES-128-GCM)",
        fmt_ops(v),
        "-".into(),
        "-".into(),
        "-",
    );
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument, if any, is ignored.
    let (log_name, log) = largest_event_log();
    let mut t = Table(Vec::new());
    println!("verifier-core bench (single thread; median of {RUNS} runs)");
    // VERIFY_BENCH_ONLY=ima (a section name) runs one section, e.g. under callgrind.
    let only = std::env::var("VERIFY_BENCH_ONLY").unwrap_or_default();
    let on = |section: &str| only.is_empty() || only == section;
    if on("quote") {
        bench_quotes(&mut t);
    }
    if on("evidence") {
        bench_evidence(&mut t, &log_name, &log);
    }
    if on("eventlog") {
        bench_eventlog(&mut t, &log_name, &log);
    }
    if on("ima") {
        bench_ima(&mut t);
    }
    if on("makecred") {
        bench_makecred(&mut t);
    }
    if on("hpke") {
        bench_hpke(&mut t);
    }
    if on("image_signature") {
        bench_image_signature(&mut t);
    }
    t.print();
    println!("cost = median over alternating runs of baseline rate / measured rate (1.00x: as fast as the baseline).");
}
