//! Configuration: TOML file, kernel command line overrides, skip, and refusals with clear
//! messages.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::time::Duration;

use initrd_agent::config::{self, parse, split_cmdline, Config, ConfigError, ConfigSource, Loaded};
use initrd_agent::tpm::EkKind;

fn run(toml: &str, cmdline: &str) -> Config {
    match parse(toml, cmdline).unwrap() {
        Loaded::Run(c) => *c,
        Loaded::Skip => panic!("unexpected skip"),
    }
}

fn err(toml: &str, cmdline: &str) -> String {
    parse(toml, cmdline).unwrap_err().to_string()
}

const BOTH: &str = r#"
verifier_url = "https://v.example:8443/verifier/"
tenant_url = "https://t.example/tenant"
"#;

#[test]
fn defaults_fill_everything_but_the_urls() {
    let c = run(BOTH, "BOOT_IMAGE=/vmlinuz root=/dev/mapper/root quiet");
    assert_eq!(c.verifier_url, "https://v.example:8443/verifier");
    assert_eq!(c.tenant_url, "https://t.example/tenant");
    assert_eq!(c.ca_bundle, PathBuf::from("/etc/initrd-agent/ca.pem"));
    assert_eq!(c.tcti, "device:/dev/tpmrm0");
    assert_eq!(c.ek, EkKind::EccP256);
    assert_eq!(c.key_file, PathBuf::from("/run/cryptsetup-keys.d/root.key"));
    assert_eq!(c.timeout, Duration::from_secs(30));
    assert_eq!(c.step_timeout, Duration::from_secs(10));
    assert_eq!(c.retries, 3);
    assert_eq!(c.release_pcr, 15);
    assert_eq!(
        c.event_log,
        PathBuf::from("/sys/kernel/security/tpm0/binary_bios_measurements")
    );
    assert_eq!(
        c.ima_log,
        PathBuf::from("/sys/kernel/security/ima/binary_runtime_measurements")
    );
    assert!(!c.insecure_http);
    assert_eq!(c.iak, None);
}

#[test]
fn iak_keys_are_read_together_or_refused() {
    let c = run(
        &format!("{BOTH}iak_handle = 0x81020001\niak_cert = \"/etc/initrd-agent/iak.pem\"\n"),
        "",
    );
    assert_eq!(
        c.iak,
        Some(config::IakConfig {
            handle: 0x8102_0001,
            cert: PathBuf::from("/etc/initrd-agent/iak.pem"),
        })
    );
    let e = err(&format!("{BOTH}iak_cert = \"/etc/iak.pem\"\n"), "");
    assert!(e.contains("iak_handle"), "{e}");
    let e = err(&format!("{BOTH}iak_handle = 0x81020001\n"), "");
    assert!(e.contains("iak_cert"), "{e}");
    let e = err(
        &format!("{BOTH}iak_handle = 0x80000001\niak_cert = \"/etc/iak.pem\"\n"),
        "",
    );
    assert!(e.contains("persistent handle"), "{e}");
    let e = err(
        &format!("{BOTH}iak_handle = 0x81020001\niak_cert = \"iak.pem\"\n"),
        "",
    );
    assert!(e.contains("absolute"), "{e}");
}

#[test]
fn every_toml_key_is_read() {
    let c = run(
        r#"
verifier_url = "http://127.0.0.1:1/verifier"
tenant_url = "http://127.0.0.1:2/tenant"
ca_bundle = "/x/ca.pem"
tcti = "swtpm:host=127.0.0.1,port=2321"
ek = "rsa"
key_file = "/run/k/data.key"
timeout_secs = 60
step_timeout_secs = 5
retries = 0
release_pcr = 23
event_log = "/x/el"
ima_log = "/x/binary_runtime_measurements_sha256"
insecure_http = true
"#,
        "",
    );
    assert_eq!(c.ca_bundle, PathBuf::from("/x/ca.pem"));
    assert_eq!(c.tcti, "swtpm:host=127.0.0.1,port=2321");
    assert_eq!(c.ek, EkKind::Rsa2048);
    assert_eq!(c.key_file, PathBuf::from("/run/k/data.key"));
    assert_eq!(c.timeout, Duration::from_secs(60));
    assert_eq!(c.step_timeout, Duration::from_secs(5));
    assert_eq!(c.retries, 0);
    assert_eq!(c.release_pcr, 23);
    assert_eq!(c.event_log, PathBuf::from("/x/el"));
    assert!(c.insecure_http);
}

#[test]
fn cmdline_overrides_the_file() {
    let c = run(
        BOTH,
        "quiet rd.unlock.server=https://unlock.example:9443/ rd.unlock.timeout=7 \
         rd.unlock.keyfile=/run/cryptsetup-keys.d/data.key rd.unlock.tcti=swtpm:port=1 \
         rd.unlock.ek=rsa",
    );
    assert_eq!(c.verifier_url, "https://unlock.example:9443/verifier");
    assert_eq!(c.tenant_url, "https://unlock.example:9443/tenant");
    assert_eq!(c.timeout, Duration::from_secs(7));
    // The per-request deadline never exceeds the budget.
    assert_eq!(c.step_timeout, Duration::from_secs(7));
    assert_eq!(c.key_file, PathBuf::from("/run/cryptsetup-keys.d/data.key"));
    assert_eq!(c.tcti, "swtpm:port=1");
    assert_eq!(c.ek, EkKind::Rsa2048);
}

#[test]
fn high_range_ek_kinds_are_selectable() {
    for (name, kind) in [
        ("ecc", EkKind::EccP256),
        ("rsa", EkKind::Rsa2048),
        ("ecc-p384", EkKind::EccP384),
        ("rsa-3072", EkKind::Rsa3072),
    ] {
        let c = run(
            "",
            &format!("rd.unlock.server=https://u.example rd.unlock.ek={name}"),
        );
        assert_eq!(c.ek, kind, "{name}");
        assert_eq!(kind.config_name(), name);
    }
}

#[test]
fn split_trust_urls_win_over_server_and_last_occurrence_wins() {
    let c = run(
        "",
        "rd.unlock.server=https://a.example rd.unlock.tenant=https://t.example/x \
         rd.unlock.timeout=5 rd.unlock.timeout=9",
    );
    assert_eq!(c.verifier_url, "https://a.example/verifier");
    assert_eq!(c.tenant_url, "https://t.example/x");
    assert_eq!(c.timeout, Duration::from_secs(9));
}

#[test]
fn insecure_flag_allows_http_only_when_set() {
    let e = err("", "rd.unlock.server=http://10.0.0.1:8080");
    assert!(e.contains("plain http is refused"), "{e}");
    let c = run(
        "",
        "rd.unlock.server=http://10.0.0.1:8080 rd.unlock.insecure=1",
    );
    assert_eq!(c.verifier_url, "http://10.0.0.1:8080/verifier");
    assert!(c.insecure_http);
    // The command line can also take it back.
    let e = err(
        "insecure_http = true\nverifier_url = \"http://a/v\"\ntenant_url = \"http://a/t\"",
        "rd.unlock.insecure=0",
    );
    assert!(e.contains("plain http is refused"), "{e}");
}

#[test]
fn skip_wins_even_over_a_broken_config() {
    assert_eq!(
        parse("this is not toml", "rd.unlock=0").unwrap(),
        Loaded::Skip
    );
    assert_eq!(
        parse("", "rd.unlock.server=https://x rd.unlock=0").unwrap(),
        Loaded::Skip
    );
    // rd.unlock=1 is an explicit "run".
    assert!(matches!(
        parse("", "rd.unlock=1 rd.unlock.server=https://x").unwrap(),
        Loaded::Run(_)
    ));
}

#[test]
fn quoted_values_are_grouped_and_unquoted() {
    assert_eq!(
        split_cmdline(r#"a "rd.unlock.keyfile=/run/a b.key" c="d e"  "#),
        vec!["a", "rd.unlock.keyfile=/run/a b.key", "c=d e"]
    );
    let c = run(
        "",
        r#"rd.unlock.server="https://x" "rd.unlock.keyfile=/run/k/a b.key""#,
    );
    assert_eq!(c.key_file, PathBuf::from("/run/k/a b.key"));
}

#[test]
fn bad_values_name_the_parameter_and_the_rule() {
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "",
            "rd.unlock.timeout=abc",
            &["rd.unlock.timeout", "whole number of seconds"],
        ),
        (
            "",
            "rd.unlock.timeout=0 rd.unlock.server=https://x",
            &["timeout_secs", "between 1 and 3600"],
        ),
        ("", "rd.unlock=maybe", &["rd.unlock", "0 or 1"]),
        (
            "",
            "rd.unlock.insecure=yes",
            &["rd.unlock.insecure", "0 or 1"],
        ),
        (
            "",
            "rd.unlock.ek=p384 rd.unlock.server=https://x",
            &["rd.unlock.ek", "\"ecc\""],
        ),
        (
            "",
            "rd.unlock.sever=https://x",
            &["unknown kernel command line parameter", "rd.unlock.sever"],
        ),
        (
            "",
            "rd.unlock.server=",
            &["rd.unlock.server", "needs a value"],
        ),
        (
            "",
            "quiet",
            &["verifier_url is not configured", "rd.unlock.server"],
        ),
        (
            "",
            "rd.unlock.server=ftp://x",
            &["rd.unlock.server", "https://"],
        ),
        (
            "",
            "rd.unlock.verifier=ftp://x rd.unlock.tenant=https://t",
            &["verifier_url", "https://"],
        ),
        ("", "rd.unlock.server=https://", &["has no host"]),
        ("", "rd.unlock.server=https://x?a=b", &["no query"]),
        (
            "",
            "rd.unlock.server=https://x rd.unlock.keyfile=root.key",
            &["key_file", "absolute"],
        ),
        (
            &format!("{BOTH}release_pcr = 24"),
            "",
            &["release_pcr", "0 and 23"],
        ),
        (
            &format!("{BOTH}retries = 11"),
            "",
            &["retries", "at most 10"],
        ),
        (
            &format!("{BOTH}step_timeout_secs = 31"),
            "",
            &["step_timeout_secs", "at most timeout_secs"],
        ),
        (&format!("{BOTH}ek = \"dsa\""), "", &["ek", "\"rsa\""]),
        (&format!("{BOTH}tcti = \"\""), "", &["tcti", "empty"]),
        (
            &format!("{BOTH}verifer_url = \"x\""),
            "",
            &["unknown field", "verifer_url"],
        ),
        (
            &format!("{BOTH}timeout_secs = \"30\""),
            "",
            &["timeout_secs"],
        ),
    ];
    for (toml, cmdline, needles) in cases {
        let e = err(toml, cmdline);
        for n in *needles {
            assert!(e.contains(n), "{cmdline:?} / {toml:?}: {e:?} lacks {n:?}");
        }
    }
}

#[test]
fn config_file_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, BOTH).unwrap();
    let explicit = ConfigSource {
        path: path.clone(),
        explicit: true,
    };
    assert!(matches!(
        config::load(&explicit, "").unwrap(),
        Loaded::Run(_)
    ));

    // A missing default file is fine when the command line has the URLs ...
    let implicit_missing = ConfigSource {
        path: dir.path().join("absent.toml"),
        explicit: false,
    };
    assert!(matches!(
        config::load(&implicit_missing, "rd.unlock.server=https://x").unwrap(),
        Loaded::Run(_)
    ));
    // ... but a missing --config file is an error.
    let explicit_missing = ConfigSource {
        explicit: true,
        ..implicit_missing
    };
    assert!(matches!(
        config::load(&explicit_missing, "rd.unlock.server=https://x"),
        Err(ConfigError::Read { .. })
    ));
    // The evidence subcommand needs no URL.
    let local = config::load_local(&explicit_missing.clone(), "").unwrap_err();
    assert!(matches!(local, ConfigError::Read { .. }));
    let local = config::load_local(
        &ConfigSource {
            path: dir.path().join("absent.toml"),
            explicit: false,
        },
        "rd.unlock.ek=rsa rd.unlock=0",
    )
    .unwrap();
    assert_eq!(local.ek, EkKind::Rsa2048);
}

const UUID: &str = "0f6c3b1e-8d7a-4c53-9a0e-3d2f1b6a7c90";

#[test]
fn key_file_follows_the_luks_volume_named_on_the_command_line() {
    let key = |toml: &str, cmdline: &str| run(toml, cmdline).key_file;
    // systemd-cryptsetup-generator names rd.luks.uuid=<uuid> "luks-<uuid>" (with or without
    // the luks- prefix) and reads /run/cryptsetup-keys.d/<name>.key.
    let want = PathBuf::from(format!("/run/cryptsetup-keys.d/luks-{UUID}.key"));
    assert_eq!(key(BOTH, &format!("rd.luks.uuid={UUID} ro")), want);
    assert_eq!(key(BOTH, &format!("rd.luks.uuid=luks-{UUID}")), want);
    assert_eq!(key(BOTH, &format!("luks.uuid={UUID}")), want);
    // rd.luks.name gives the volume its name, in either order.
    let named = PathBuf::from("/run/cryptsetup-keys.d/cryptroot.key");
    assert_eq!(
        key(
            BOTH,
            &format!("rd.luks.uuid={UUID} rd.luks.name={UUID}=cryptroot")
        ),
        named
    );
    assert_eq!(key(BOTH, &format!("rd.luks.name={UUID}=cryptroot")), named);
    // With several volumes the first one on the command line is the one unlocked.
    assert_eq!(
        key(BOTH, &format!("rd.luks.uuid={UUID} rd.luks.uuid=1111")),
        want
    );
    // An explicit setting wins: the file over the derived name, the parameter over both.
    let file = format!("{BOTH}key_file = \"/run/k/data.key\"\n");
    assert_eq!(
        key(&file, &format!("rd.luks.uuid={UUID}")),
        PathBuf::from("/run/k/data.key")
    );
    assert_eq!(
        key(
            &file,
            &format!("rd.luks.uuid={UUID} rd.unlock.keyfile=/run/x.key")
        ),
        PathBuf::from("/run/x.key")
    );
    // No volume named: the historical default.
    assert_eq!(
        key(BOTH, "root=/dev/mapper/root"),
        PathBuf::from("/run/cryptsetup-keys.d/root.key")
    );
}

#[test]
fn a_luks_volume_name_that_would_leave_the_key_directory_is_ignored() {
    for cmdline in [
        "rd.luks.name=abcd=../../etc/shadow",
        "rd.luks.name=abcd=..",
        "rd.luks.name=abcd=",
        "rd.luks.uuid=a/b",
    ] {
        assert_eq!(config::luks_volume(cmdline), None, "{cmdline}");
        assert_eq!(
            run(BOTH, cmdline).key_file,
            PathBuf::from("/run/cryptsetup-keys.d/root.key"),
            "{cmdline}"
        );
    }
}

/// `evidence`: `tpm` by default; `snp-vtpm` (or its long name) for an Azure SEV-SNP CVM,
/// with the VCEK file defaulted; anything else refused with the field named.
#[test]
fn evidence_kind_and_vcek_file() {
    use verifier_core::proto::v1::EvidenceKind;
    let c = run(BOTH, "");
    assert_eq!(c.evidence, EvidenceKind::Tpm);
    assert_eq!(c.vcek_file, PathBuf::from("/etc/initrd-agent/vcek.der"));
    for name in ["snp-vtpm", "azure-snp-vtpm"] {
        let c = run(&format!("{BOTH}evidence = \"{name}\"\n"), "");
        assert_eq!(c.evidence, EvidenceKind::AzureSnpVtpm, "{name}");
    }
    let c = run(
        &format!("{BOTH}evidence = \"snp-vtpm\"\nvcek_file = \"/x/vcek.der\"\n"),
        "",
    );
    assert_eq!(c.vcek_file, PathBuf::from("/x/vcek.der"));
    let e = err(&format!("{BOTH}evidence = \"sgx\"\n"), "");
    assert!(e.contains("evidence") && e.contains("snp-vtpm"), "{e}");
}
