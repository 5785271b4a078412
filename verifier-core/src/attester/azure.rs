//! Azure confidential VMs: the vTPM trusted through the CPU's attestation report.
//!
//! On an Azure SEV-SNP (or TDX) CVM the vTPM runs in the paravisor (HCL) at a more
//! privileged VMPL than the guest. At boot the HCL asks the CPU for an attestation report
//! whose `REPORT_DATA` holds the hash of a JSON "runtime data" document listing the vTPM's
//! attestation key (`HCLAkPub`, RSA, as a JWK). The HCL report (header, hardware report,
//! runtime data) is stored in the vTPM's NV index `0x01400001`. Verifying the SNP report
//! and the hash therefore proves that the AK belongs to the vTPM inside that measured CVM, and
//! a quote by that AK is trusted through the report instead of an EK certificate and
//! MakeCredential. What it does not prove: that the HCL/paravisor itself is honest (its
//! code is in the launch MEASUREMENT, which policy must pin), nor anything about the quote's
//! freshness (that is the quote's extraData, bound to our nonce and NK as for any TPM).
//!
//! Layout of the HCL report (as Azure's guest attestation library and the public
//! `azure/confidential-computing-cvm-guest-attestation` sources describe it), little-endian:
//! - header, 32 bytes: `"HCLA"`, version, report size, request type, status, 12 reserved;
//! - the hardware report area, 1184 bytes (an SNP report, or a TDX TDREPORT padded);
//! - IGVM request data: data size, version, report type (2 SNP, 4 TDX), runtime-data hash
//!   type (1 SHA-256, 2 SHA-384, 3 SHA-512), runtime-data size, then the runtime data.
//!
//! Bytes after the runtime data (the NV index is larger than the report) are not hashed,
//! not signed and ignored.

use serde::Deserialize;
use subtle::ConstantTimeEq;

use super::snp::{self, SnpError, VerifiedSnpReport};
use crate::quote::{AkError, AkPublic};
use crate::wire::{HashAlg, KeyScheme, ObjectAttributes, Public, PublicKey, Reader, SymDef};
use crate::ParseError;

/// The vTPM NV index holding the HCL report on Azure CVMs.
pub const HCL_REPORT_NV_INDEX: u32 = 0x0140_0001;
/// The persistent handle of the vTPM's attestation key on Azure CVMs.
pub const VTPM_AK_HANDLE: u32 = 0x8100_0003;

/// Largest HCL report accepted (the NV index holds 2600 bytes on current Azure CVMs).
pub const MAX_HCL_REPORT: usize = 8192;
const HEADER_LEN: usize = 32;
const HW_REPORT_LEN: usize = snp::REPORT_LEN;
const STRUCT: &str = "HCL report";

/// Which hardware report the HCL report carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HclReportType {
    /// AMD SEV-SNP attestation report.
    Snp,
    /// Intel TDX TDREPORT (its REPORTDATA is at offset 128).
    Tdx,
}

/// A parsed HCL report. Parsing checks structure only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HclReport<'a> {
    /// Which hardware report follows the header.
    pub report_type: HclReportType,
    /// The hardware report area (1184 bytes).
    pub hw_report: &'a [u8],
    /// Hash algorithm of the runtime-data digest in the report's report data.
    pub runtime_hash: HashAlg,
    /// The runtime data (JSON), exactly as hashed.
    pub runtime_data: &'a [u8],
}

impl<'a> HclReport<'a> {
    /// Parses an HCL report (trailing bytes after the runtime data are ignored, see the
    /// module docs). Never panics.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, ParseError> {
        if bytes.len() > MAX_HCL_REPORT {
            return Err(ParseError::TooLarge {
                structure: STRUCT,
                field: "report",
                len: bytes.len(),
                max: MAX_HCL_REPORT,
            });
        }
        let mut r = Reader::new(STRUCT, bytes);
        let magic = r.take_array::<4>("signature")?;
        if &magic != b"HCLA" {
            return Err(r.invalid("signature", u64::from(u32::from_le_bytes(magic))));
        }
        r.take(HEADER_LEN - 4, "header")?;
        let hw_report = r.take(HW_REPORT_LEN, "hw_report")?;
        let data_size = r.u32_le("data_size")?;
        let _version = r.u32_le("version")?;
        let report_type = match r.u32_le("report_type")? {
            2 => HclReportType::Snp,
            4 => HclReportType::Tdx,
            t => return Err(r.invalid("report_type", u64::from(t))),
        };
        let runtime_hash = match r.u32_le("hash_type")? {
            1 => HashAlg::Sha256,
            2 => HashAlg::Sha384,
            3 => HashAlg::Sha512,
            t => return Err(r.invalid("hash_type", u64::from(t))),
        };
        let size = r.u32_le("variable_data_size")?;
        let size = usize::try_from(size).map_err(|_| r.invalid("variable_data_size", 0))?;
        // data_size counts the five header words and the runtime data.
        if usize::try_from(data_size).ok() != size.checked_add(20) {
            return Err(r.invalid("data_size", u64::from(data_size)));
        }
        let runtime_data = r.take(size, "variable_data")?;
        Ok(Self {
            report_type,
            hw_report,
            runtime_hash,
            runtime_data,
        })
    }

    /// The report data of the hardware report: SNP REPORT_DATA (offset 0x50) or TDX
    /// REPORTDATA (offset 128 of the TDREPORT).
    pub fn report_data(&self) -> Option<&'a [u8]> {
        let at = match self.report_type {
            HclReportType::Snp => 0x50,
            HclReportType::Tdx => 128,
        };
        self.hw_report.get(at..at + 64)
    }

    /// True when the runtime data's digest is the first bytes of the report data: the
    /// hardware report vouches for the runtime data (and so for the AK in it).
    pub fn runtime_data_bound(&self) -> bool {
        let digest = self.runtime_hash.hash(self.runtime_data);
        let d = digest.as_bytes();
        self.report_data()
            .and_then(|rd| rd.get(..d.len()))
            .is_some_and(|rd| bool::from(rd.ct_eq(d)))
    }
}

#[derive(Deserialize)]
struct RuntimeData {
    keys: Vec<Jwk>,
    #[serde(rename = "vm-configuration", default)]
    vm_configuration: Option<VmConfiguration>,
    #[serde(rename = "user-data", default)]
    user_data: Option<String>,
}

#[derive(Deserialize)]
struct Jwk {
    kid: String,
    kty: String,
    #[serde(default)]
    n: Option<String>,
    #[serde(default)]
    e: Option<String>,
}

/// `vm-configuration` of the runtime data, as the HCL states it (signed through the report).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
pub struct VmConfiguration {
    /// The serial console is enabled.
    #[serde(rename = "console-enabled", default)]
    pub console_enabled: bool,
    /// UEFI Secure Boot is enabled in the VM's firmware.
    #[serde(rename = "secure-boot", default)]
    pub secure_boot: bool,
    /// The vTPM is enabled.
    #[serde(rename = "tpm-enabled", default)]
    pub tpm_enabled: bool,
}

/// Why Azure vTPM evidence is not genuine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AzureError {
    /// Malformed HCL report.
    #[error("{0}")]
    Parse(#[from] ParseError),
    /// The HCL report carries a TDX report, whose quote verification is not implemented.
    #[error("HCL report carries an Intel TDX report; only SEV-SNP is verified")]
    NotSnp,
    /// The SNP report is not genuine.
    #[error(transparent)]
    Snp(#[from] SnpError),
    /// The runtime data is not what the report vouches for (edited after the report).
    #[error("HCL runtime data does not hash to the report's REPORT_DATA")]
    RuntimeDataNotBound,
    /// The runtime data is not the expected JSON, or lacks exactly one RSA `HCLAkPub`.
    #[error("HCL runtime data: {0}")]
    RuntimeData(String),
    /// The AK in the runtime data is not a usable key.
    #[error("HCL AK: {0}")]
    Ak(#[from] AkError),
    /// The key presented is not the one the runtime data names (`HCLAkPub` for the AK,
    /// `HCLEkPub` for the EK): a genuine report of another vTPM, or a swapped key.
    #[error("the {0} presented is not the HCL runtime data's {1}")]
    KeyNotVouched(&'static str, &'static str),
}

/// An HCL report whose SNP report verified and whose runtime data it binds: the vTPM AK
/// in it is the CVM's. Only [`verify_hcl_report`] builds it.
#[derive(Debug, Clone)]
pub struct VerifiedHclReport {
    snp: VerifiedSnpReport,
    ak: AkPublic,
    /// `HCLEkPub` (RSA modulus without leading zeros, exponent), when the runtime data has
    /// exactly one.
    ek: Option<(Vec<u8>, u32)>,
    vm_configuration: VmConfiguration,
    user_data: Option<String>,
}

impl VerifiedHclReport {
    /// The verified SNP report.
    pub fn snp(&self) -> &VerifiedSnpReport {
        &self.snp
    }
    /// The vTPM's AK, as vouched for by the report.
    pub fn ak(&self) -> &AkPublic {
        &self.ak
    }
    /// The VM configuration the HCL stated.
    pub fn vm_configuration(&self) -> VmConfiguration {
        self.vm_configuration
    }
    /// The runtime data's `user-data` (hex), as the HCL stated it.
    pub fn user_data(&self) -> Option<&str> {
        self.user_data.as_deref()
    }
    /// True when `public` (the TPMT_PUBLIC an agent read from the AK handle) is the key the
    /// report vouches for: same RSA modulus and exponent.
    pub fn ak_matches(&self, public: &Public) -> bool {
        match (rsa_key(self.ak.public()), rsa_key(public)) {
            (Some(a), Some(b)) => a == b,
            _ => false,
        }
    }

    /// True when `public` (the vTPM EK's TPMT_PUBLIC, whose hash is the agent id) is the
    /// runtime data's `HCLEkPub`: the report then names the machine's identity too, so a
    /// genuine report of one CVM cannot register under another CVM's enrollment. False
    /// when the runtime data has no `HCLEkPub`.
    pub fn ek_matches(&self, public: &Public) -> bool {
        match (&self.ek, rsa_key(public)) {
            (Some((n, e)), Some((m, f))) => n.as_slice() == m && *e == f,
            _ => false,
        }
    }
}

/// Verifies an HCL report: the SNP report with the (already chain-verified) VCEK, the
/// runtime data's hash in REPORT_DATA, and the `HCLAkPub` JWK as an RSA AK.
pub fn verify_hcl_report(
    hcl: &[u8],
    vcek: &super::amd::VerifiedVcek,
) -> Result<VerifiedHclReport, AzureError> {
    let parsed = HclReport::parse(hcl)?;
    if parsed.report_type != HclReportType::Snp {
        return Err(AzureError::NotSnp);
    }
    let snp = snp::verify_report(parsed.hw_report, vcek)?;
    if !parsed.runtime_data_bound() {
        return Err(AzureError::RuntimeDataNotBound);
    }
    let runtime: RuntimeData = serde_json::from_slice(parsed.runtime_data)
        .map_err(|e| AzureError::RuntimeData(e.to_string()))?;
    let mut aks = runtime.keys.iter().filter(|k| k.kid == "HCLAkPub");
    let (Some(jwk), None) = (aks.next(), aks.next()) else {
        return Err(AzureError::RuntimeData(
            "expected exactly one key with kid HCLAkPub".into(),
        ));
    };
    let ak = ak_from_jwk(jwk)?;
    let mut eks = runtime.keys.iter().filter(|k| k.kid == "HCLEkPub");
    let ek = match (eks.next(), eks.next()) {
        (Some(jwk), None) => Some(rsa_from_jwk(jwk, "HCLEkPub")?),
        _ => None,
    };
    Ok(VerifiedHclReport {
        snp,
        ak,
        ek,
        vm_configuration: runtime.vm_configuration.unwrap_or_default(),
        user_data: runtime.user_data,
    })
}

/// An RSA public key as (modulus without leading zeros, exponent with 0 read as 65537),
/// the form in which two keys are compared.
fn rsa_key(public: &Public) -> Option<(&[u8], u32)> {
    match public.key() {
        PublicKey::Rsa {
            modulus, exponent, ..
        } => {
            let start = modulus
                .iter()
                .position(|b| *b != 0)
                .unwrap_or(modulus.len());
            let e = if *exponent == 0 { 65537 } else { *exponent };
            Some((modulus.get(start..).unwrap_or_default(), e))
        }
        _ => None,
    }
}

/// The RSA key of a JWK: (modulus without leading zeros, exponent).
fn rsa_from_jwk(jwk: &Jwk, what: &str) -> Result<(Vec<u8>, u32), AzureError> {
    use base64::Engine as _;
    if jwk.kty != "RSA" {
        return Err(AzureError::RuntimeData(format!(
            "{what} has kty {:?}, expected RSA",
            jwk.kty
        )));
    }
    let b64 = |v: &Option<String>, field: &str| -> Result<Vec<u8>, AzureError> {
        let s = v
            .as_deref()
            .ok_or_else(|| AzureError::RuntimeData(format!("{what} has no {field}")))?;
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(s.trim_end_matches('='))
            .map_err(|_| AzureError::RuntimeData(format!("{what} {field} is not base64url")))
    };
    let n = b64(&jwk.n, "n")?;
    let e = b64(&jwk.e, "e")?;
    let n = n
        .get(n.iter().position(|b| *b != 0).unwrap_or(n.len())..)
        .unwrap_or_default()
        .to_vec();
    if e.is_empty() || e.len() > 4 || n.is_empty() {
        return Err(AkError::InvalidKey("RSA exponent or modulus").into());
    }
    let exponent = e.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b));
    Ok((n, exponent))
}

fn ak_from_jwk(jwk: &Jwk) -> Result<AkPublic, AzureError> {
    let (n, exponent) = rsa_from_jwk(jwk, "HCLAkPub")?;
    let key_bits = u16::try_from(n.len() * 8).map_err(|_| AkError::UnsupportedKey("RSA size"))?;
    // The JWK carries only the key. The public area around it is the restricted signing
    // template every AK has; its attributes are asserted by the HCL (which created the key
    // in its vTPM), not read from the TPM, so this AK's name is not the vTPM object's name.
    // Use `VerifiedHclReport::ak_matches` to tie an agent-supplied TPMT_PUBLIC to it.
    let attrs = ObjectAttributes::SIGN
        .with(ObjectAttributes::RESTRICTED)
        .with(ObjectAttributes::FIXED_TPM)
        .with(ObjectAttributes::FIXED_PARENT)
        .with(ObjectAttributes::SENSITIVE_DATA_ORIGIN)
        .with(ObjectAttributes::USER_WITH_AUTH);
    let public = Public::new(
        HashAlg::Sha256,
        attrs,
        &[],
        PublicKey::Rsa {
            symmetric: SymDef::Null,
            scheme: KeyScheme::Null,
            key_bits,
            exponent: if exponent == 65537 { 0 } else { exponent },
            modulus: n.to_vec(),
        },
    )
    .map_err(AkError::Parse)?;
    Ok(AkPublic::try_from(public)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minimal(runtime: &[u8], report_type: u32) -> Vec<u8> {
        let mut v = b"HCLA".to_vec();
        v.resize(HEADER_LEN + HW_REPORT_LEN, 0);
        for w in [
            u32::try_from(runtime.len() + 20).unwrap(),
            1,
            report_type,
            1,
            u32::try_from(runtime.len()).unwrap(),
        ] {
            v.extend_from_slice(&w.to_le_bytes());
        }
        v.extend_from_slice(runtime);
        v
    }

    #[test]
    fn structure_checks() {
        let ok = minimal(b"{}", 2);
        let p = HclReport::parse(&ok).unwrap();
        assert_eq!(p.runtime_data, b"{}");
        assert!(!p.runtime_data_bound(), "zero report data binds nothing");
        for len in 0..ok.len() {
            assert!(HclReport::parse(&ok[..len]).is_err(), "{len}");
        }
        let mut bad = ok.clone();
        bad[0] = b'X';
        assert!(HclReport::parse(&bad).is_err());
        assert!(HclReport::parse(&minimal(b"{}", 3)).is_err());
        assert!(HclReport::parse(&vec![0u8; MAX_HCL_REPORT + 1]).is_err());
        // data_size that disagrees with the runtime-data size.
        let mut bad = ok.clone();
        bad[HEADER_LEN + HW_REPORT_LEN] ^= 1;
        assert!(HclReport::parse(&bad).is_err());
        // A runtime-data size larger than the input.
        let mut bad = minimal(b"{}", 2);
        bad.truncate(bad.len() - 1);
        assert!(HclReport::parse(&bad).is_err());
    }
}
