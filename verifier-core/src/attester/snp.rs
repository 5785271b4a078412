//! AMD SEV-SNP attestation reports: bounded parsing of the 1184-byte `ATTESTATION_REPORT`
//! and its ECDSA P-384 signature by the chip's VCEK.
//!
//! Layout: AMD SEV Secure Nested Paging Firmware ABI Specification (publication 56860),
//! table "ATTESTATION_REPORT Structure". All integers are little-endian; the signature covers
//! bytes `0x000..0x2A0`; `r` and `s` are 72-byte little-endian fields of which a P-384 value
//! uses the low 48 bytes.
//!
//! Decisions, for reviewers:
//! - Report versions 2 and later are accepted (version 2 is Milan/Genoa firmware, 3 adds the
//!   CPUID fields in what was reserved); fields we read sit at the same offsets in all.
//! - Only `SIGNATURE_ALGO` 1 (ECDSA P-384 with SHA-384) exists; anything else is refused
//!   before any key is used.
//! - TCB versions are decoded in the Milan/Genoa layout (boot loader, TEE, SNP, microcode in
//!   bytes 0, 1, 6, 7). Turin moved the fields; a Turin report is refused by the chain check
//!   (no Turin root is shipped), so it is never decoded in the wrong layout.
//! - Parsing proves nothing: [`SnpReport`] is plain data. Only [`verify_report`] builds a
//!   [`VerifiedSnpReport`], the type claims are taken from.

use aws_lc_rs::signature::{UnparsedPublicKey, ECDSA_P384_SHA384_FIXED};

use super::amd::VerifiedVcek;
use crate::wire::Reader;
use crate::ParseError;

/// Size of an SNP attestation report.
pub const REPORT_LEN: usize = 1184;
/// Bytes covered by the report signature.
pub const SIGNED_LEN: usize = 0x2A0;
/// `SIGNATURE_ALGO` of ECDSA P-384 with SHA-384.
pub const SIG_ALGO_ECDSA_P384_SHA384: u32 = 1;

const STRUCT: &str = "ATTESTATION_REPORT";

/// Guest policy bits (ABI spec, "GUEST_POLICY").
pub mod policy_bits {
    /// SMT is allowed on the host while the guest runs.
    pub const SMT: u64 = 1 << 16;
    /// A migration agent may be associated with the guest.
    pub const MIGRATE_MA: u64 = 1 << 18;
    /// The host may debug the guest (read and write its memory in the clear).
    pub const DEBUG: u64 = 1 << 19;
    /// The guest may run only on a single socket.
    pub const SINGLE_SOCKET: u64 = 1 << 20;
}

/// `PLATFORM_INFO` bits.
pub mod platform_bits {
    /// SMT is enabled on the platform.
    pub const SMT_EN: u64 = 1 << 0;
    /// Transparent SME is enabled.
    pub const TSME_EN: u64 = 1 << 1;
}

/// A TCB version: the security patch levels of AMD's firmware components (Milan/Genoa
/// layout of the 64-bit `TCB_VERSION`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct TcbVersion {
    /// PSP boot loader SPL.
    pub bootloader: u8,
    /// PSP OS (TEE) SPL.
    pub tee: u8,
    /// SNP firmware SPL.
    pub snp: u8,
    /// CPU microcode SPL.
    pub microcode: u8,
}

impl TcbVersion {
    /// Decodes the raw little-endian `TCB_VERSION`.
    pub fn from_raw(raw: u64) -> Self {
        let b = raw.to_le_bytes();
        let [bootloader, tee, _, _, _, _, snp, microcode] = b;
        Self {
            bootloader,
            tee,
            snp,
            microcode,
        }
    }

    /// True when every component is at least `min`'s (TCB versions are not totally
    /// ordered: each SPL is compared on its own).
    pub fn at_least(&self, min: &TcbVersion) -> bool {
        self.bootloader >= min.bootloader
            && self.tee >= min.tee
            && self.snp >= min.snp
            && self.microcode >= min.microcode
    }
}

impl std::fmt::Display for TcbVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "bootloader {} tee {} snp {} microcode {}",
            self.bootloader, self.tee, self.snp, self.microcode
        )
    }
}

/// A parsed (not yet verified) SNP attestation report. Every field is from the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnpReport {
    /// Report format version.
    pub version: u32,
    /// Guest SVN from the ID block.
    pub guest_svn: u32,
    /// Guest policy (see [`policy_bits`]).
    pub policy: u64,
    /// Family ID from the ID block.
    pub family_id: [u8; 16],
    /// Image ID from the ID block.
    pub image_id: [u8; 16],
    /// VMPL the report was requested from.
    pub vmpl: u32,
    /// Signature algorithm.
    pub signature_algo: u32,
    /// TCB the platform currently runs.
    pub current_tcb: TcbVersion,
    /// Platform info (see [`platform_bits`]).
    pub platform_info: u64,
    /// Bits 0 AUTHOR_KEY_EN, 1 MASK_CHIP_KEY, 2-4 SIGNING_KEY (0 VCEK, 1 VLEK, 7 none).
    pub key_info: u32,
    /// Guest-supplied data bound into the report.
    pub report_data: [u8; 64],
    /// Launch measurement of the guest.
    pub measurement: [u8; 48],
    /// Host-supplied data at launch.
    pub host_data: [u8; 32],
    /// SHA-384 of the ID key that signed the ID block (zeros without one).
    pub id_key_digest: [u8; 48],
    /// SHA-384 of the author key that certified the ID key (zeros without one).
    pub author_key_digest: [u8; 48],
    /// Report ID of this guest.
    pub report_id: [u8; 32],
    /// Report ID of the guest's migration agent.
    pub report_id_ma: [u8; 32],
    /// TCB the VCEK was derived from (what the chain and policy check).
    pub reported_tcb: TcbVersion,
    /// Unique chip identifier (zeros when MASK_CHIP_ID is set).
    pub chip_id: [u8; 64],
    /// Committed TCB.
    pub committed_tcb: TcbVersion,
    /// TCB at the guest's launch.
    pub launch_tcb: TcbVersion,
    /// Signature `r`, big-endian, 48 bytes.
    pub sig_r: [u8; 48],
    /// Signature `s`, big-endian, 48 bytes.
    pub sig_s: [u8; 48],
}

impl SnpReport {
    /// Parses exactly [`REPORT_LEN`] bytes. Never panics; every field is read through the
    /// bounded [`Reader`].
    pub fn parse(bytes: &[u8]) -> Result<Self, ParseError> {
        let mut r = Reader::new(STRUCT, bytes);
        if bytes.len() > REPORT_LEN {
            return Err(ParseError::TrailingData {
                structure: STRUCT,
                offset: REPORT_LEN,
                remaining: bytes.len() - REPORT_LEN,
            });
        }
        let version = r.u32_le("VERSION")?;
        if version < 2 {
            return Err(r.invalid("VERSION", u64::from(version)));
        }
        let guest_svn = r.u32_le("GUEST_SVN")?;
        let policy = r.u64_le("POLICY")?;
        let family_id = r.take_array::<16>("FAMILY_ID")?;
        let image_id = r.take_array::<16>("IMAGE_ID")?;
        let vmpl = r.u32_le("VMPL")?;
        let signature_algo = r.u32_le("SIGNATURE_ALGO")?;
        let current_tcb = TcbVersion::from_raw(r.u64_le("CURRENT_TCB")?);
        let platform_info = r.u64_le("PLATFORM_INFO")?;
        let key_info = r.u32_le("AUTHOR_KEY_EN")?;
        r.take(4, "reserved")?;
        let report_data = r.take_array::<64>("REPORT_DATA")?;
        let measurement = r.take_array::<48>("MEASUREMENT")?;
        let host_data = r.take_array::<32>("HOST_DATA")?;
        let id_key_digest = r.take_array::<48>("ID_KEY_DIGEST")?;
        let author_key_digest = r.take_array::<48>("AUTHOR_KEY_DIGEST")?;
        let report_id = r.take_array::<32>("REPORT_ID")?;
        let report_id_ma = r.take_array::<32>("REPORT_ID_MA")?;
        let reported_tcb = TcbVersion::from_raw(r.u64_le("REPORTED_TCB")?);
        r.take(24, "reserved")?;
        let chip_id = r.take_array::<64>("CHIP_ID")?;
        let committed_tcb = TcbVersion::from_raw(r.u64_le("COMMITTED_TCB")?);
        r.take(8, "CURRENT/COMMITTED build")?;
        let launch_tcb = TcbVersion::from_raw(r.u64_le("LAUNCH_TCB")?);
        r.take(SIGNED_LEN - 0x1F8, "reserved")?;
        let sig_r = p384_scalar(&mut r, "SIGNATURE.R")?;
        let sig_s = p384_scalar(&mut r, "SIGNATURE.S")?;
        r.take(REPORT_LEN - SIGNED_LEN - 144, "SIGNATURE.reserved")?;
        r.finish()?;
        Ok(Self {
            version,
            guest_svn,
            policy,
            family_id,
            image_id,
            vmpl,
            signature_algo,
            current_tcb,
            platform_info,
            key_info,
            report_data,
            measurement,
            host_data,
            id_key_digest,
            author_key_digest,
            report_id,
            report_id_ma,
            reported_tcb,
            chip_id,
            committed_tcb,
            launch_tcb,
            sig_r,
            sig_s,
        })
    }

    /// The guest may be debugged by the host.
    pub fn debug_allowed(&self) -> bool {
        self.policy & policy_bits::DEBUG != 0
    }
    /// A migration agent may be associated with the guest.
    pub fn migration_agent_allowed(&self) -> bool {
        self.policy & policy_bits::MIGRATE_MA != 0
    }
    /// The guest policy allows SMT.
    pub fn smt_allowed(&self) -> bool {
        self.policy & policy_bits::SMT != 0
    }
    /// SMT is enabled on the platform.
    pub fn smt_enabled(&self) -> bool {
        self.platform_info & platform_bits::SMT_EN != 0
    }
    /// Which key signed: 0 VCEK, 1 VLEK, 7 none.
    pub fn signing_key(&self) -> u32 {
        (self.key_info >> 2) & 0b111
    }
    /// MASK_CHIP_KEY: the firmware did not sign (the signature is zeros).
    pub fn chip_key_masked(&self) -> bool {
        self.key_info & 0b10 != 0
    }
}

/// A 72-byte little-endian field holding a P-384 scalar: returned big-endian. The 24 high
/// bytes must be zero, otherwise the value is not a P-384 scalar at all.
fn p384_scalar(r: &mut Reader<'_>, field: &'static str) -> Result<[u8; 48], ParseError> {
    let le = r.take_array::<48>(field)?;
    let high = r.take(24, field)?;
    if high.iter().any(|b| *b != 0) {
        return Err(r.invalid(field, 0));
    }
    let mut be = le;
    be.reverse();
    Ok(be)
}

/// Why an SNP report is not genuine.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SnpError {
    /// Malformed report.
    #[error("SNP report: {0}")]
    Parse(#[from] ParseError),
    /// A signature algorithm other than ECDSA P-384/SHA-384.
    #[error("SNP report signature algorithm {0} is not ECDSA P-384/SHA-384 (1)")]
    SignatureAlgorithm(u32),
    /// Signed by a VLEK or not signed: only VCEK-signed reports are verified here.
    #[error("SNP report signing key {0} is not the VCEK (0); VLEK-signed or unsigned reports are not supported")]
    SigningKey(u32),
    /// The signature does not verify with the VCEK: the report was altered, or the VCEK is
    /// another chip's.
    #[error("SNP report signature does not verify with the VCEK")]
    SignatureInvalid,
    /// The VCEK was issued for another chip than the report names.
    #[error("SNP report CHIP_ID does not match the VCEK's hwID (the VCEK is another chip's, or the guest masked CHIP_ID)")]
    ChipIdMismatch,
    /// The VCEK was issued for another TCB than the report's REPORTED_TCB.
    #[error("SNP report REPORTED_TCB ({report}) does not match the VCEK's TCB ({vcek})")]
    TcbMismatch {
        /// The report's REPORTED_TCB.
        report: TcbVersion,
        /// The TCB in the VCEK's extensions.
        vcek: TcbVersion,
    },
}

/// A report whose signature verified with a VCEK that chains to an AMD root, issued for
/// this chip and this reported TCB. Only [`verify_report`] constructs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedSnpReport {
    report: SnpReport,
    product: String,
}

impl VerifiedSnpReport {
    /// The verified report.
    pub fn report(&self) -> &SnpReport {
        &self.report
    }
    /// The AMD product line of the root the VCEK chains to (`Milan`, `Genoa`).
    pub fn product(&self) -> &str {
        &self.product
    }
}

/// The `REPORT_DATA` a bare SEV-SNP guest (one that requests its report itself, without a
/// vTPM) puts in its report for an unlock: the quote binding of protocol v1
/// ([`crate::merkle::quote_extra_data`]: every role's nonce through the Merkle root, and NK)
/// in the first 32 bytes, zeros after. One definition for the agent and the verifier; on
/// Azure the binding is the vTPM quote's instead (the HCL owns REPORT_DATA there).
pub fn unlock_report_data(merkle_root: &[u8; 32], nk_pub: &[u8]) -> [u8; 64] {
    let mut out = [0u8; 64];
    let (head, _) = out.split_at_mut(32);
    head.copy_from_slice(&crate::merkle::quote_extra_data(merkle_root, nk_pub));
    out
}

impl VerifiedSnpReport {
    /// True when the report's REPORT_DATA is exactly `expected` (compared in constant
    /// time): the report was requested for this challenge and NK.
    pub fn binds(&self, expected: &[u8; 64]) -> bool {
        bool::from(subtle::ConstantTimeEq::ct_eq(
            &self.report.report_data[..],
            &expected[..],
        ))
    }
}

/// Verifies `report` (exactly [`REPORT_LEN`] bytes) with a VCEK already verified against
/// the AMD roots ([`super::amd::AmdRoots::verify_vcek`], which a caller may cache per chip
/// and TCB). Checks, in order: structure, algorithm, signing key, chip id and reported TCB
/// against the VCEK, signature.
pub fn verify_report(report: &[u8], vcek: &VerifiedVcek) -> Result<VerifiedSnpReport, SnpError> {
    let parsed = SnpReport::parse(report)?;
    if parsed.signature_algo != SIG_ALGO_ECDSA_P384_SHA384 {
        return Err(SnpError::SignatureAlgorithm(parsed.signature_algo));
    }
    if parsed.signing_key() != 0 || parsed.chip_key_masked() {
        return Err(SnpError::SigningKey(parsed.signing_key()));
    }
    if !bool::from(subtle::ConstantTimeEq::ct_eq(
        &parsed.chip_id[..],
        vcek.hw_id(),
    )) {
        return Err(SnpError::ChipIdMismatch);
    }
    if parsed.reported_tcb != vcek.tcb() {
        return Err(SnpError::TcbMismatch {
            report: parsed.reported_tcb,
            vcek: vcek.tcb(),
        });
    }
    let signed = report.get(..SIGNED_LEN).ok_or(SnpError::SignatureInvalid)?;
    let mut rs = [0u8; 96];
    let (r, s) = rs.split_at_mut(48);
    r.copy_from_slice(&parsed.sig_r);
    s.copy_from_slice(&parsed.sig_s);
    UnparsedPublicKey::new(&ECDSA_P384_SHA384_FIXED, vcek.public_key())
        .verify(signed, &rs)
        .map_err(|_| SnpError::SignatureInvalid)?;
    Ok(VerifiedSnpReport {
        report: parsed,
        product: vcek.product().to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcb_layout_is_milan_genoa() {
        let t = TcbVersion::from_raw(u64::from_le_bytes([4, 0, 0, 0, 0, 0, 0x18, 0xdb]));
        assert_eq!(
            t,
            TcbVersion {
                bootloader: 4,
                tee: 0,
                snp: 0x18,
                microcode: 0xdb
            }
        );
        assert!(t.at_least(&TcbVersion {
            bootloader: 3,
            tee: 0,
            snp: 0x18,
            microcode: 0xdb
        }));
        assert!(!t.at_least(&TcbVersion {
            bootloader: 0,
            tee: 1,
            snp: 0,
            microcode: 0
        }));
    }

    #[test]
    fn every_truncation_and_extension_is_a_parse_error() {
        let mut report = vec![0u8; REPORT_LEN];
        report[0] = 2;
        assert!(SnpReport::parse(&report).is_ok());
        for len in 0..REPORT_LEN {
            assert!(
                SnpReport::parse(&report[..len]).is_err(),
                "{len} bytes parsed"
            );
        }
        report.push(0);
        assert!(matches!(
            SnpReport::parse(&report),
            Err(ParseError::TrailingData { remaining: 1, .. })
        ));
    }

    #[test]
    fn non_p384_signature_scalars_are_refused() {
        let mut report = vec![0u8; REPORT_LEN];
        report[0] = 2;
        // A byte above the 48 low bytes of R.
        report[SIGNED_LEN + 48] = 1;
        assert!(matches!(
            SnpReport::parse(&report),
            Err(ParseError::InvalidValue {
                field: "SIGNATURE.R",
                ..
            })
        ));
    }

    #[test]
    fn version_1_is_refused() {
        let mut report = vec![0u8; REPORT_LEN];
        report[0] = 1;
        assert!(SnpReport::parse(&report).is_err());
    }
}
