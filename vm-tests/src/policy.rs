//! Policies learned from a capture boot.
//!
//! PCR values are never hard-coded (they depend on the firmware build, the kernel, the
//! initramfs, even QEMU's option ROMs). Instead a capture boot runs `initrd-agent evidence`
//! inside the very initramfs the scenarios boot, switched on through a fw_cfg entry that no
//! firmware measures, and prints it on the console. The policy pins the PCR values that the
//! captured UEFI event log replays to (and checks them against the live values read in the
//! same boot), so a scenario's boot must match the learned one measurement for measurement.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock};

use base64::Engine as _;
use verifier_core::eventlog::EventLog;
use verifier_core::wire::HashAlg;

use crate::artifacts::Artifacts;
use crate::tpm::Tpm;
use crate::vm::{boot, Firmware, Generator, VmConfig};

/// What a capture boot saw (sha256 bank).
#[derive(Debug, Clone)]
pub struct Captured {
    /// Live PCR values 0-23, lowercase hex.
    pub pcrs: BTreeMap<u8, String>,
    /// The UEFI / TCG2 event log.
    pub event_log: Vec<u8>,
    /// The event log replayed (only the PCRs it extends), lowercase hex.
    pub replayed: BTreeMap<u8, String>,
}

impl Captured {
    /// Parses `initrd-agent evidence` JSON and replays its event log.
    pub fn parse(json: &[u8]) -> Captured {
        let v: serde_json::Value = serde_json::from_slice(json).expect("evidence is JSON");
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut pcrs = BTreeMap::new();
        for bank in v["pcrs"].as_array().expect("evidence.pcrs") {
            if bank["hash"].as_str() != Some("sha256") {
                continue;
            }
            for p in bank["values"].as_array().expect("bank values") {
                let index = u8::try_from(p["index"].as_u64().unwrap()).unwrap();
                let digest = b64.decode(p["digest"].as_str().unwrap()).unwrap();
                pcrs.insert(index, hex(&digest));
            }
        }
        assert_eq!(pcrs.len(), 24, "evidence lacks sha256 PCRs 0-23");
        let event_log = b64
            .decode(
                v["event_log"]
                    .as_str()
                    .expect("the capture boot found no event log"),
            )
            .unwrap();
        let log = EventLog::parse(&event_log).expect("captured event log parses");
        let replayed = (0u8..24)
            .filter_map(|i| {
                let touched = log.events().iter().any(|e| e.pcr() == i && e.is_extended());
                touched
                    .then(|| {
                        log.replay()
                            .get(HashAlg::Sha256, i)
                            .map(|d| (i, d.to_hex()))
                    })
                    .flatten()
            })
            .collect();
        Captured {
            pcrs,
            event_log,
            replayed,
        }
    }

    /// A version 1 policy pinning `indexes` to the values the event log replays to (each
    /// checked against the live value), requiring the event log; the release PCR rule
    /// stays on (its default).
    pub fn policy(&self, indexes: &[u8]) -> String {
        let rules: Vec<String> = indexes
            .iter()
            .map(|i| {
                let replayed = self
                    .replayed
                    .get(i)
                    .unwrap_or_else(|| panic!("the event log does not extend PCR {i}"));
                assert_eq!(
                    Some(replayed),
                    self.pcrs.get(i),
                    "PCR {i}: the event log does not replay to the live value"
                );
                format!(r#"{{"bank":"sha256","index":{i},"allowed":["{replayed}"]}}"#)
            })
            .collect();
        format!(
            r#"{{"version":1,"pcrs":[{}],"require_event_log":true}}"#,
            rules.join(",")
        )
    }

    /// PCRs whose values differ between two captures.
    pub fn differing(&self, other: &Captured) -> Vec<u8> {
        (0u8..24)
            .filter(|i| self.pcrs.get(i) != other.pcrs.get(i))
            .collect()
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

type CaptureKey = (Generator, bool, Vec<String>);
/// One capture per key, booted by the first test that asks; the others wait for it.
type CaptureCell = Arc<OnceLock<Arc<Captured>>>;

/// The evidence of a capture boot of the dracut initramfs with `firmware` and `extra` kernel
/// parameters, booted once per process and shared (the PCRs do not depend on which TPM
/// measures them).
pub fn capture(art: &Artifacts, firmware: Firmware, extra: &[&str]) -> Arc<Captured> {
    capture_of(art, Generator::Dracut, firmware, extra)
}

/// [`capture`] of the initramfs that `generator` built.
pub fn capture_of(
    art: &Artifacts,
    generator: Generator,
    firmware: Firmware,
    extra: &[&str],
) -> Arc<Captured> {
    static CACHE: OnceLock<Mutex<HashMap<CaptureKey, CaptureCell>>> = OnceLock::new();
    let key = (
        generator,
        firmware == Firmware::Uefi,
        extra.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
    );
    let cell = CACHE
        .get_or_init(Default::default)
        .lock()
        .unwrap()
        .entry(key)
        .or_default()
        .clone();
    cell.get_or_init(|| {
        let name = format!(
            "capture-{}{}{}",
            if generator == Generator::InitramfsTools {
                "itools-"
            } else {
                ""
            },
            if firmware == Firmware::Uefi {
                "uefi"
            } else {
                "bios"
            },
            if extra.is_empty() {
                String::new()
            } else {
                format!(
                    "-{}",
                    crate::artifacts::hash_parts(&[extra.join(" ").as_bytes()])[..8].to_owned()
                )
            }
        );
        let ca = tempfile::tempdir_in(&art.env.cache).unwrap();
        let tpm = Tpm::provision(art, ca.path());
        let mut cfg = VmConfig::new(&name, None);
        cfg.generator = generator;
        cfg.firmware = firmware;
        cfg.test_mode = Some("capture");
        cfg.extra_cmdline
            .extend(extra.iter().map(|s| s.to_string()));
        let b = boot(art, &tpm, &cfg);
        assert!(!b.timed_out, "{name}: capture boot hung\n{}", b.tail(40));
        Arc::new(Captured::parse(&b.evidence()))
    })
    .clone()
}

/// The evidence of one capture boot of `cfg` (its `test_mode` set to `capture`, no server)
/// with a fresh TPM: for a boot configuration the shared [`capture`] does not cover (a UKI).
pub fn capture_boot(art: &Artifacts, mut cfg: VmConfig) -> Captured {
    let ca = tempfile::tempdir_in(&art.env.cache).unwrap();
    let tpm = Tpm::provision(art, ca.path());
    cfg.test_mode = Some("capture");
    cfg.server_port = None;
    let b = boot(art, &tpm, &cfg);
    assert!(
        !b.timed_out,
        "{}: capture boot hung\n{}",
        cfg.name,
        b.tail(40)
    );
    Captured::parse(&b.evidence())
}
