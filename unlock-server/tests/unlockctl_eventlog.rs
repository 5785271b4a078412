//! `unlockctl eventlog replay` as a person or script runs it: the built binary on real logs.

// Test helpers outside #[test] functions: a failed unwrap or index is a failed test, which is
// what clippy.toml allows inside #[test] functions too.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::path::PathBuf;
use std::process::Command;

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

#[test]
fn json_replay_matches_expected_pcrs() {
    for log in [
        "cos-101-amd-sev.bin",
        "glinux-alex.bin",
        "arch-linux-workstation.bin",
    ] {
        let path = testdata().join("eventlog/go-tpm-tools").join(log);
        let out = unlockctl(&["eventlog", "replay", "--json", path.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let expected: serde_json::Value = serde_json::from_slice(
            &std::fs::read(format!("{}.expected-pcrs.json", path.display())).unwrap(),
        )
        .unwrap();
        let mut compared = 0;
        for (bank, pcrs) in expected["pcrs"].as_object().unwrap() {
            for (index, value) in pcrs.as_object().unwrap() {
                assert_eq!(&got["pcrs"][bank][index], value, "{log} {bank} {index}");
                compared += 1;
            }
        }
        assert!(compared >= 16, "{log}: {compared}");
        // Every bank of the log is present, and events carry lowercase hex digests.
        let events = got["events"].as_array().unwrap();
        assert!(events.len() > 20);
        let digest = events[1]["digests"]["sha256"].as_str().unwrap();
        assert_eq!(digest, digest.to_lowercase());
        assert_eq!(digest.len(), 64);
    }
}

#[test]
fn json_reports_findings() {
    let path = testdata().join("eventlog/go-tpm-tools/arch-linux-workstation.bin");
    let out = unlockctl(&["eventlog", "replay", "--json", path.to_str().unwrap()]);
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let findings = got["findings"].as_array().unwrap();
    assert_eq!(findings.len(), 2);
    assert_eq!(findings[0]["kind"], "digest_mismatch");
    assert_eq!(findings[0]["event_index"], 24);
}

#[test]
fn human_output_lists_events_and_pcrs() {
    let path = testdata().join("eventlog/go-tpm-tools/rhel8-uefi.bin");
    let out = unlockctl(&["eventlog", "replay", path.to_str().unwrap()]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("EV_EFI_BOOT_SERVICES_APPLICATION"), "{text}");
    assert!(text.contains("replayed PCRs:"));
    assert!(text.contains("SecureBoot enabled"));
    // PCR 7 sha256 from expected-pcrs.json.
    let expected: serde_json::Value = serde_json::from_slice(
        &std::fs::read(format!("{}.expected-pcrs.json", path.display())).unwrap(),
    )
    .unwrap();
    let pcr7 = expected["pcrs"]["sha256"]["7"].as_str().unwrap();
    assert!(text.contains(&format!(" 7: {pcr7}")), "{text}");
}

#[test]
fn malformed_log_is_one_line_and_exit_1() {
    let path = testdata().join("eventlog/tpm2-tools/specid-vendordata.bin");
    let out = unlockctl(&["eventlog", "replay", "--json", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_eq!(
        err.trim_end(),
        format!(
            "unlockctl: {}: event 0 at offset 0: TCG_EfiSpecIdEvent.vendorInfo: truncated at \
             offset 69 (needed 4 more bytes)",
            path.display()
        )
    );

    // Truncated in the middle of an event: names that event and its offset.
    let bytes = std::fs::read(testdata().join("eventlog/go-tpm-tools/cos-85-amd-sev.bin")).unwrap();
    let dir = std::env::temp_dir().join(format!("unlockctl-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cut = dir.join("cut.bin");
    std::fs::write(&cut, &bytes[..1000]).unwrap();
    let out = unlockctl(&["eventlog", "replay", cut.to_str().unwrap()]);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains(": event "), "{err}");
    assert!(err.contains(" at offset "), "{err}");
}

#[test]
fn usage_errors_exit_2() {
    let out = unlockctl(&["eventlog", "replay"]);
    assert_eq!(out.status.code(), Some(2));
    let out = unlockctl(&["no-such-command"]);
    assert_eq!(out.status.code(), Some(2));
    let out = unlockctl(&["eventlog", "replay", "/nonexistent/log.bin"]);
    assert_eq!(out.status.code(), Some(1));
}
