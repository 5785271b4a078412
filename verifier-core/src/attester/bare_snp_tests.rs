//! Bare SEV-SNP reports (as a guest gets them from the firmware, without a vTPM or an HCL
//! around them) captured on two real Milan chips, each with its chip's VCEK: each verifies
//! against the shipped AMD roots, its claims match the bytes, and for each check a forgery of
//! exactly that thing is refused with that check's error. Provenance of every file (repository,
//! path, commit, licence, what the report is): `testdata/README.md`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::amd::{AmdRoots, VcekError, VerifiedVcek};
use super::snp::{self, policy_bits, SnpError, TcbVersion};
use super::SnpClaims;
use crate::ekcert::EkCertError;
use crate::policy::Claims;
use crate::policy::{Evaluator, Policy};
use crate::wire::{ClockInfo, PcrValues};

/// One real report and the VCEK of the chip that signed it.
struct Sample {
    name: &'static str,
    report: &'static [u8],
    vcek: &'static [u8],
    /// What `testdata/README.md` records, decoded there with an independent tool.
    tcb: TcbVersion,
    policy: u64,
    chip_id_prefix: [u8; 8],
}

/// From virtee/sev (`tests/certs_data/report_milan.hex` and `vcek_milan.der`).
const VIRTEE: Sample = Sample {
    name: "virtee",
    report: include_bytes!("testdata/snp-report-milan-virtee.bin"),
    vcek: include_bytes!("testdata/vcek-milan-other-chip.der"),
    tcb: TcbVersion {
        bootloader: 3,
        tee: 0,
        snp: 8,
        microcode: 115,
    },
    policy: 0x30000,
    chip_id_prefix: [0xd4, 0x95, 0x54, 0xec, 0x71, 0x7f, 0x4e, 0x5b],
};

/// From google/go-sev-guest (`verify/testdata/attestation.bin` and `vcek.testcer`).
const GO_SEV_GUEST: Sample = Sample {
    name: "go-sev-guest",
    report: include_bytes!("testdata/snp-report-milan-go-sev-guest.bin"),
    vcek: include_bytes!("testdata/vcek-milan-go-sev-guest.der"),
    tcb: TcbVersion {
        bootloader: 2,
        tee: 0,
        snp: 5,
        microcode: 68,
    },
    policy: 0xb0000,
    chip_id_prefix: [0x3a, 0xc3, 0xfe, 0x21, 0xe1, 0x3f, 0xb0, 0x99],
};

const SAMPLES: [Sample; 2] = [VIRTEE, GO_SEV_GUEST];

/// 2027-06-01: inside both VCEKs' validity (2022-09-24 – 2029-09-24 and 2023-04-03 –
/// 2030-04-03) and the shipped roots'.
fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_811_808_000)
}

fn roots() -> AmdRoots {
    AmdRoots::shipped().unwrap()
}

fn vcek(s: &Sample) -> VerifiedVcek {
    roots()
        .verify_vcek(s.vcek, &[], now())
        .unwrap_or_else(|e| panic!("{}: {e}", s.name))
}

/// Little-endian fields read straight from the report bytes at the offsets of AMD's report
/// layout, independently of [`snp::SnpReport::parse`].
fn le_u64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

fn claims_of(s: &Sample) -> SnpClaims {
    let verified = snp::verify_report(s.report, &vcek(s)).unwrap();
    SnpClaims::new(&verified, None)
}

#[test]
fn real_bare_reports_verify_with_their_vceks_and_the_shipped_roots() {
    for s in &SAMPLES {
        assert_eq!(s.report.len(), snp::REPORT_LEN);
        let v = vcek(s);
        assert_eq!(v.product(), "Milan", "{}", s.name);
        assert_eq!(v.product_name(), Some("Milan-B0"), "{}", s.name);
        assert_eq!(v.tcb(), s.tcb, "{}", s.name);
        assert_eq!(&v.hw_id()[..8], &s.chip_id_prefix, "{}", s.name);

        let verified = snp::verify_report(s.report, &v).unwrap();
        assert_eq!(verified.product(), "Milan");
        let r = verified.report();
        assert_eq!(r.version, 2);
        assert_eq!(r.vmpl, 0);
        assert_eq!(r.signing_key(), 0);

        // The claims against the raw bytes: POLICY at 0x08, MEASUREMENT at 0x90, HOST_DATA at
        // 0xC0, REPORTED_TCB at 0x180, CHIP_ID at 0x1A0, REPORT_DATA at 0x50.
        let c = SnpClaims::new(&verified, None);
        assert_eq!(c.product, "Milan");
        assert_eq!(c.policy, s.policy);
        assert_eq!(c.policy, le_u64(s.report, 0x08));
        assert_eq!(c.measurement, &s.report[0x90..0xC0]);
        assert_eq!(c.host_data, [0u8; 32]);
        assert_eq!(c.report_data, &s.report[0x50..0x90]);
        assert_eq!(c.reported_tcb, s.tcb);
        assert_eq!(
            c.reported_tcb,
            TcbVersion::from_raw(le_u64(s.report, 0x180))
        );
        // The guests ran at the TCB they report (current = committed = launch = reported).
        for tcb in [c.current_tcb, c.committed_tcb, c.launch_tcb] {
            assert_eq!(tcb, s.tcb, "{}", s.name);
        }
        assert_eq!(&r.chip_id[..8], &s.chip_id_prefix);
        assert_eq!(
            c.debug_allowed,
            s.policy & policy_bits::DEBUG != 0,
            "{}",
            s.name
        );
        assert!(!c.migration_agent_allowed && c.smt_allowed && c.smt_enabled);
        assert_eq!(c.id_key_digest, [0u8; 48], "launched without an ID block");
        assert!(c.azure.is_none());
    }
    // What differs between the two: go-sev-guest's guest allowed debugging.
    assert!(claims_of(&GO_SEV_GUEST).debug_allowed);
    assert!(!claims_of(&VIRTEE).debug_allowed);
}

/// One flipped bit in the signed part (the measurement, the policy), one in the signature:
/// refused by the signature. A flipped CHIP_ID or REPORTED_TCB bit is refused earlier, by the
/// comparison with the VCEK.
#[test]
fn flipped_bits_of_a_real_bare_report_are_refused_by_their_check() {
    for s in &SAMPLES {
        let v = vcek(s);
        let flip = |off: usize, bit: usize| {
            let mut m = s.report.to_vec();
            m[off] ^= 1u8 << bit;
            snp::verify_report(&m, &v)
        };
        // MEASUREMENT, POLICY's DEBUG bit (bit 19 = byte 0x0A bit 3), R, S.
        for (off, bit) in [
            (0x90, 0),
            (0x0A, 3),
            (snp::SIGNED_LEN, 0),
            (snp::SIGNED_LEN + 72, 7),
        ] {
            assert_eq!(
                flip(off, bit).unwrap_err(),
                SnpError::SignatureInvalid,
                "{} offset {off:#x}",
                s.name
            );
        }
        assert_eq!(flip(0x1A0, 0).unwrap_err(), SnpError::ChipIdMismatch);
        assert!(matches!(
            flip(0x180 + 7, 0).unwrap_err(),
            SnpError::TcbMismatch { vcek, .. } if vcek == s.tcb
        ));
        // Every single-bit change of the signed part and of the signature: refused, never a
        // panic.
        for off in 0..snp::SIGNED_LEN + 144 {
            assert!(flip(off, off % 8).is_err(), "{} offset {off:#x}", s.name);
        }
        // The reserved bytes after the signature are outside the signed part and carry no
        // claim: changing them changes nothing that is verified.
        let tail = flip(snp::REPORT_LEN - 1, 0).unwrap();
        assert_eq!(tail.report().measurement, s.report[0x90..0xC0]);
    }
}

/// Each report with the other chip's genuine VCEK: refused at CHIP_ID. With CHIP_ID and
/// REPORTED_TCB rewritten to the other VCEK's (what an attacker holding only that VCEK would
/// send), the signature check refuses it.
#[test]
fn real_bare_report_with_another_chips_vcek_is_refused() {
    for (s, other) in [(&VIRTEE, &GO_SEV_GUEST), (&GO_SEV_GUEST, &VIRTEE)] {
        let wrong = vcek(other);
        assert_eq!(
            snp::verify_report(s.report, &wrong).unwrap_err(),
            SnpError::ChipIdMismatch,
            "{}",
            s.name
        );
        let mut relabelled = s.report.to_vec();
        relabelled[0x1A0..0x1E0].copy_from_slice(wrong.hw_id());
        relabelled[0x180..0x188].copy_from_slice(&other.report[0x180..0x188]);
        assert_eq!(
            snp::verify_report(&relabelled, &wrong).unwrap_err(),
            SnpError::SignatureInvalid,
            "{}",
            s.name
        );
    }
}

/// A Milan VCEK is refused against the Genoa roots alone (another product's ARK), and outside
/// its validity.
#[test]
fn milan_vceks_are_refused_by_genoa_roots_and_outside_their_validity() {
    let genoa_only = AmdRoots::from_pems(&[(
        "Genoa",
        include_bytes!("../../data/amd/genoa-ark.pem"),
        include_bytes!("../../data/amd/genoa-ask.pem"),
    )])
    .unwrap();
    for s in &SAMPLES {
        assert!(
            matches!(
                genoa_only.verify_vcek(s.vcek, &[], now()),
                Err(VcekError::Chain(EkCertError::UntrustedIssuer))
            ),
            "{}",
            s.name
        );
        // 2033-05-18, after both VCEKs expired; 2022-01-01, before either was issued.
        assert!(matches!(
            roots().verify_vcek(s.vcek, &[], UNIX_EPOCH + Duration::from_secs(2_000_000_000)),
            Err(VcekError::Chain(EkCertError::Expired { .. }))
        ));
        assert!(matches!(
            roots().verify_vcek(s.vcek, &[], UNIX_EPOCH + Duration::from_secs(1_640_995_200)),
            Err(VcekError::Chain(EkCertError::NotYetValid { .. }))
        ));
    }
}

fn failed_rules(policy: &str, snp: &SnpClaims) -> Vec<String> {
    let pcrs = PcrValues::new();
    let clock = ClockInfo {
        clock: 1,
        reset_count: 0,
        restart_count: 0,
        safe: true,
    };
    let claims = Claims::from_validated(&pcrs, clock, None, None).with_snp(snp);
    Policy::from_json(policy)
        .unwrap()
        .evaluate_claims(&claims)
        .failures
        .into_iter()
        .map(|f| f.rule)
        .collect()
}

/// The policy on the real claims: a minimum TCB one step above the reported one (in each
/// component) is refused, the reported TCB itself is accepted; the debug-allowing real report
/// is refused by the default policy; a measurement allowlist accepts exactly the real one.
#[test]
fn policy_on_real_bare_report_claims() {
    for s in &SAMPLES {
        let c = claims_of(s);
        let t = s.tcb;
        let min = |bl: u8, tee: u8, snp: u8, uc: u8| {
            format!(
                r#"{{"version":1,"release_pcr":null,"snp":{{"allow_debug":true,
                "min_tcb":{{"bootloader":{bl},"tee":{tee},"snp":{snp},"microcode":{uc}}}}}}}"#
            )
        };
        assert!(
            failed_rules(&min(t.bootloader, t.tee, t.snp, t.microcode), &c).is_empty(),
            "{}",
            s.name
        );
        for above in [
            min(t.bootloader + 1, t.tee, t.snp, t.microcode),
            min(t.bootloader, t.tee + 1, t.snp, t.microcode),
            min(t.bootloader, t.tee, t.snp + 1, t.microcode),
            min(t.bootloader, t.tee, t.snp, t.microcode + 1),
        ] {
            assert_eq!(failed_rules(&above, &c), ["snp.min_tcb"], "{}", s.name);
        }
        let allow = |m: &[u8]| {
            format!(
                r#"{{"version":1,"release_pcr":null,"snp":{{"allow_debug":true,"measurements":["{}"]}}}}"#,
                hex::encode(m)
            )
        };
        assert!(failed_rules(&allow(&c.measurement), &c).is_empty());
        let mut other = c.measurement.clone();
        other[47] ^= 1;
        assert_eq!(failed_rules(&allow(&other), &c), ["snp.measurement"]);
    }
    let plain = r#"{"version":1,"release_pcr":null}"#;
    assert!(failed_rules(plain, &claims_of(&VIRTEE)).is_empty());
    assert_eq!(
        failed_rules(plain, &claims_of(&GO_SEV_GUEST)),
        ["snp.debug"]
    );
}

/// REPORT_DATA binding: the go-sev-guest report carries `01 02 03 04 05` and zeros; it binds
/// exactly that, not one bit off, and not an unlock challenge's binding.
#[test]
fn real_bare_report_binds_only_its_own_report_data() {
    let verified = snp::verify_report(GO_SEV_GUEST.report, &vcek(&GO_SEV_GUEST)).unwrap();
    let mut own = [0u8; 64];
    own[..5].copy_from_slice(&[1, 2, 3, 4, 5]);
    assert!(verified.binds(&own));
    for i in [0, 4, 5, 63] {
        let mut near = own;
        near[i] ^= 1;
        assert!(!verified.binds(&near), "byte {i}");
    }
    let nk = [4u8; crate::keysplit::NK_PUBLIC_LEN];
    assert!(!verified.binds(&snp::unlock_report_data(&[7; 32], &nk)));
    let virtee = snp::verify_report(VIRTEE.report, &vcek(&VIRTEE)).unwrap();
    assert!(!virtee.binds(&own));
    assert!(virtee.binds(&VIRTEE.report[0x50..0x90].try_into().unwrap()));
}
