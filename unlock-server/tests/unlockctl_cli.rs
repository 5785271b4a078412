//! `unlockctl completions` and `unlockctl man`: generated from the CLI definition, so every
//! subcommand (including nested ones) is in them; bad output directories are clear errors.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

fn unlockctl(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_unlockctl"))
        .args(args)
        .output()
        .unwrap()
}

/// Subcommand names as `unlockctl --help` lists them.
fn subcommands() -> Vec<String> {
    let out = unlockctl(&["--help"]);
    let text = String::from_utf8(out.stdout).unwrap();
    text.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .filter(|n| n != "help")
        .collect()
}

#[test]
fn completions_know_every_subcommand_in_every_shell() {
    let subs = subcommands();
    assert!(subs.len() >= 12, "{subs:?}");
    for shell in ["bash", "zsh", "fish"] {
        let out = unlockctl(&["completions", shell]);
        assert!(out.status.success(), "{shell}");
        let script = String::from_utf8(out.stdout).unwrap();
        for sub in &subs {
            assert!(script.contains(sub.as_str()), "{shell}: {sub} missing");
        }
    }
    let out = unlockctl(&["completions", "tcsh"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "an unknown shell is a usage error"
    );
}

#[test]
fn man_pages_cover_nested_subcommands() {
    let dir = tempfile::tempdir().unwrap();
    let out = unlockctl(&["man", "--out-dir", dir.path().to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for name in [
        "unlockctl",
        "unlockctl-audit-verify",
        "unlockctl-policy-apply",
        "unlockctl-enroll-inventory",
    ] {
        let page = std::fs::read_to_string(dir.path().join(format!("{name}.1")))
            .unwrap_or_else(|e| panic!("{name}.1: {e}"));
        assert!(page.contains(".TH"), "{name}: not a man page");
    }
    for sub in subcommands() {
        assert!(
            dir.path().join(format!("unlockctl-{sub}.1")).exists(),
            "{sub}"
        );
    }
    // A file where the directory should be: refused with the path named.
    let file = dir.path().join("unlockctl.1");
    let out = unlockctl(&["man", "--out-dir", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unlockctl.1"));
}
