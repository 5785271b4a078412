//! `unlockctl policy learn` and `policy check` as an operator runs them: the built binary on
//! evidence captured from a real event log, then on the same evidence with one event changed.

// Test helpers outside #[test] functions: a failed unwrap or index is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::path::{Path, PathBuf};
use std::process::Command;

use verifier_core::eventlog::EventLog;
use verifier_core::proto::v1::{AgentId, CapturedEvidence, PcrBank, PcrValue, EVIDENCE_FORMAT};
use verifier_core::proto::Base64Bytes;
use verifier_core::wire::Digest;

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
        dir.join("eventlog").is_dir(),
        "test data missing: {} has no eventlog/ (set UNLOCK_TESTDATA)",
        dir.display()
    );
    dir
}

fn unlockctl(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_unlockctl"))
        .args(args)
        .output()
        .unwrap()
}

/// Evidence as the agent captures it, for the machine that wrote `log`.
fn evidence(log: &[u8]) -> CapturedEvidence {
    let parsed = EventLog::parse(log).unwrap();
    let pcrs = parsed
        .replay()
        .banks()
        .map(|alg| PcrBank {
            hash: alg,
            values: (0..24u8)
                .map(|i| PcrValue {
                    index: i,
                    digest: Base64Bytes::new(
                        parsed
                            .replay()
                            .get(alg, i)
                            .copied()
                            .unwrap_or_else(|| {
                                if (17..=22).contains(&i) {
                                    Digest::filled(alg, 0xff)
                                } else {
                                    Digest::zero(alg)
                                }
                            })
                            .as_bytes()
                            .to_vec(),
                    ),
                })
                .collect(),
        })
        .collect();
    CapturedEvidence {
        format: EVIDENCE_FORMAT.into(),
        agent_id: AgentId::of_ek(b"ek"),
        ek: "ecc".into(),
        ek_pub: Base64Bytes::new(b"ek".to_vec()),
        ek_cert: None,
        ak_pub: Base64Bytes::new(b"ak".to_vec()),
        pcrs,
        event_log: Some(Base64Bytes::new(log.to_vec())),
        ima_log: None,
        clock_info: None,
    }
}

fn write(dir: &Path, name: &str, e: &CapturedEvidence) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, serde_json::to_vec_pretty(e).unwrap()).unwrap();
    p
}

fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn learn_then_check_accepts_the_boot_and_refuses_a_changed_one() {
    let dir = tempfile::tempdir().unwrap();
    let log = std::fs::read(testdata().join("eventlog/keylime/mb_log.bin")).unwrap();
    let good = write(dir.path(), "good.json", &evidence(&log));
    let policy = dir.path().join("policy.json");
    let out = unlockctl(&[
        "policy",
        "learn",
        "--evidence",
        good.to_str().unwrap(),
        "--mode",
        "both",
        "--out",
        policy.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&policy).unwrap()).unwrap();
    assert_eq!(doc["measured_boot"]["require_secure_boot"], true);

    let out = unlockctl(&[
        "policy",
        "check",
        "--policy",
        policy.to_str().unwrap(),
        "--evidence",
        good.to_str().unwrap(),
    ]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(
        t.contains("signature, nonce and clock are NOT checked"),
        "{t}"
    );
    assert!(t.contains("pass  measured_boot.kernels"), "{t}");
    assert!(t.contains("verdict: accepted"), "{t}");

    // Another kernel: same log, the kernel's digests changed (PCR 9 follows).
    let parsed = EventLog::parse(&log).unwrap();
    let kernel = parsed
        .events()
        .iter()
        .find(|e| e.pcr() == 9 && String::from_utf8_lossy(e.data()).contains("vmlinuz"))
        .unwrap();
    let mut changed = log.clone();
    for d in kernel.digests().as_slice() {
        // The digest follows the 2-byte algorithm id in the TCG_PCR_EVENT2 header.
        let hay = &log[kernel.offset()..];
        let at = hay
            .windows(d.as_bytes().len())
            .position(|w| w == d.as_bytes())
            .unwrap()
            + kernel.offset();
        changed[at..at + d.as_bytes().len()].fill(0x5a);
    }
    let bad = write(dir.path(), "bad.json", &evidence(&changed));
    let out = unlockctl(&[
        "policy",
        "check",
        "--policy",
        policy.to_str().unwrap(),
        "--evidence",
        bad.to_str().unwrap(),
    ]);
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(t.contains("FAIL  measured_boot.kernels"), "{t}");
    assert!(t.contains("FAIL  pcr sha256:9"), "{t}");
    assert!(t.contains("verdict: REFUSED (2 of"), "{t}");
}

#[test]
fn broken_policy_and_evidence_files_say_where() {
    let dir = tempfile::tempdir().unwrap();
    let log = std::fs::read(testdata().join("eventlog/keylime/mb_log.bin")).unwrap();
    let good = write(dir.path(), "good.json", &evidence(&log));
    let policy = dir.path().join("policy.json");
    std::fs::write(
        &policy,
        "{\n  \"version\": 1,\n  \"measured_boot\": {\n    \"kernels\": [\"xyz\"]\n  }\n}\n",
    )
    .unwrap();
    let out = unlockctl(&[
        "policy",
        "check",
        "--policy",
        policy.to_str().unwrap(),
        "--evidence",
        good.to_str().unwrap(),
    ]);
    let t = text(&out);
    assert!(!out.status.success());
    assert!(t.contains("measured_boot.kernels[0]"), "{t}");
    std::fs::write(&policy, "{\n  \"version\": 1,\n  \"pcrz\": []\n}\n").unwrap();
    let t = text(&unlockctl(&[
        "policy",
        "check",
        "--policy",
        policy.to_str().unwrap(),
        "--evidence",
        good.to_str().unwrap(),
    ]));
    assert!(t.contains("line 3") && t.contains("pcrz"), "{t}");
    std::fs::write(dir.path().join("ev.json"), "{\"format\": 1}").unwrap();
    let t = text(&unlockctl(&[
        "policy",
        "learn",
        "--evidence",
        dir.path().join("ev.json").to_str().unwrap(),
    ]));
    assert!(
        t.contains("not an evidence file") && t.contains("line 1"),
        "{t}"
    );
}

/// `policy check --tee-capture` on the real Azure SEV-SNP vTPM capture: a policy pinning its
/// launch measurement and TCB accepts it, a higher minimum TCB or another measurement is
/// refused with the rule named, and a forged capture (one report byte) is not evaluated.
#[test]
fn check_on_a_confidential_vm_capture() {
    let src = testdata().join("quote/trustee-az-snp-vtpm/evidence-v1.json");
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&src).unwrap()).unwrap();
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let hcl = b64
        .decode(json["hcl_report"].as_str().unwrap().trim_end_matches('='))
        .unwrap();
    let report = &hcl[32..32 + 1184];
    let measurement = hex::encode(&report[0x90..0xc0]);
    let tcb = &report[0x180..0x188];
    let (bl, tee, snp, ucode) = (tcb[0], tcb[1], tcb[6], tcb[7]);
    let dir = tempfile::tempdir().unwrap();
    let policy = |measurement: &str, snp_min: u8| {
        let p = dir
            .path()
            .join(format!("p-{snp_min}-{}.json", &measurement[..4]));
        std::fs::write(
            &p,
            format!(
                r#"{{"version":1,"release_pcr":null,"snp":{{"measurements":["{measurement}"],"min_tcb":{{"bootloader":{bl},"tee":{tee},"snp":{snp_min},"microcode":{ucode}}}}}}}"#
            ),
        )
        .unwrap();
        p
    };
    let run = |policy: &Path, capture: &Path| {
        unlockctl(&[
            "policy",
            "check",
            "--policy",
            policy.to_str().unwrap(),
            "--tee-capture",
            capture.to_str().unwrap(),
        ])
    };
    let out_text = |o: &std::process::Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };
    let ok = run(&policy(&measurement, snp), &src);
    assert!(ok.status.success(), "{}", out_text(&ok));
    assert!(
        out_text(&ok).contains("verdict: accepted"),
        "{}",
        out_text(&ok)
    );
    assert!(
        out_text(&ok).contains("NOT that it is now"),
        "{}",
        out_text(&ok)
    );

    let low = run(&policy(&measurement, snp + 1), &src);
    assert!(!low.status.success());
    assert!(
        out_text(&low).contains("FAIL  snp.min_tcb"),
        "{}",
        out_text(&low)
    );

    let other = run(&policy(&"ab".repeat(48), snp), &src);
    assert!(!other.status.success());
    assert!(
        out_text(&other).contains("FAIL  snp.measurement"),
        "{}",
        out_text(&other)
    );

    // The same decisions in Rego, over the same claims, alone and beside the native policy.
    let rego = |min: u8| {
        let p = dir.path().join(format!("p-{min}.rego"));
        std::fs::write(
            &p,
            format!(
                "package unlock\n\ndefault allow := false\n\nallow if {{\n  input.snp.measurement == \"{measurement}\"\n  input.snp.reported_tcb.snp >= {min}\n  not input.snp.debug_allowed\n}}\n"
            ),
        )
        .unwrap();
        p
    };
    let run_rego = |rego: &Path, native: Option<&Path>| {
        let mut args = vec![
            "policy".to_owned(),
            "check".to_owned(),
            "--rego".to_owned(),
            rego.display().to_string(),
            "--tee-capture".to_owned(),
            src.display().to_string(),
        ];
        if let Some(n) = native {
            args.extend(["--policy".to_owned(), n.display().to_string()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        unlockctl(&args)
    };
    let ok = run_rego(&rego(snp), None);
    assert!(ok.status.success(), "{}", out_text(&ok));
    assert!(
        out_text(&ok).contains("pass  rego.allow"),
        "{}",
        out_text(&ok)
    );
    let low = run_rego(&rego(snp + 1), Some(&policy(&measurement, snp)));
    assert!(!low.status.success());
    assert!(
        out_text(&low).contains("FAIL  rego.allow"),
        "{}",
        out_text(&low)
    );
    assert!(
        out_text(&low).contains("pass  snp.min_tcb"),
        "{}",
        out_text(&low)
    );

    // One byte of the report's measurement changed: the signature refuses the capture.
    let mut forged_hcl = hcl.clone();
    forged_hcl[32 + 0x90] ^= 1;
    let mut forged = json.clone();
    forged["hcl_report"] = serde_json::Value::String(b64.encode(&forged_hcl));
    let forged_file = dir.path().join("forged.json");
    std::fs::write(&forged_file, serde_json::to_vec(&forged).unwrap()).unwrap();
    let bad = run(&policy(&measurement, snp), &forged_file);
    assert!(!bad.status.success());
    assert!(
        out_text(&bad).contains("signature does not verify"),
        "{}",
        out_text(&bad)
    );
    assert!(!out_text(&bad).contains("verdict"), "{}", out_text(&bad));
}
