//! Captured Azure SEV-SNP vTPM evidence, for offline policy work (`policy check`, learning a
//! measurement): the report, its VCEK chain, the runtime-data binding and the quote's
//! signature are all verified, but the quote is bound to whatever nonce it was made for, not
//! to a challenge of ours, so the claims prove what the CVM was, not that it is now.
//!
//! Format: the JSON that Trustee's `az-snp-vtpm` attester produces (version 1):
//! `hcl_report` and `vcek` as unpadded base64url, `tpm_quote` with `message` (TPMS_ATTEST)
//! and `signature` (raw RSA) in hex and `pcrs`, the 24 SHA-256 PCR values in hex.

use std::time::SystemTime;

use base64::Engine as _;
use serde::Deserialize;

use super::amd::AmdRoots;
use super::azure::{self, VerifiedHclReport};
use super::{AzureSnpVtpmError, SnpClaims};
use crate::evidence::ValidationError;
use crate::quote::{verify_quote, VerifiedQuote};
use crate::wire::{Attest, Digest, HashAlg, PcrValues, Signature};

/// Largest capture accepted (a real one is about 8 KiB).
pub const MAX_CAPTURE: usize = 64 * 1024;

#[derive(Deserialize)]
struct Json {
    version: u32,
    hcl_report: String,
    vcek: String,
    tpm_quote: QuoteJson,
}

#[derive(Deserialize)]
struct QuoteJson {
    message: String,
    signature: String,
    pcrs: Vec<String>,
}

/// Why a capture cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaptureError {
    /// Not the expected JSON (or too large, or a field is not valid base64url/hex).
    #[error("Azure SEV-SNP vTPM capture: {0}")]
    Format(String),
    /// The evidence is not genuine (VCEK chain, report, runtime data, quote signature).
    #[error(transparent)]
    Invalid(#[from] AzureSnpVtpmError),
}

/// A capture whose report, chain, runtime data and quote signature verified. Only
/// [`CheckedAzureCapture::check`] builds it.
#[derive(Debug)]
pub struct CheckedAzureCapture {
    hcl: VerifiedHclReport,
    quote: VerifiedQuote,
    snp: SnpClaims,
}

impl CheckedAzureCapture {
    /// Parses and verifies a capture at time `now` (for the certificate chain).
    pub fn check(json: &[u8], roots: &AmdRoots, now: SystemTime) -> Result<Self, CaptureError> {
        let fmt = |m: &str| CaptureError::Format(m.to_owned());
        if json.len() > MAX_CAPTURE {
            return Err(fmt("larger than 64 KiB"));
        }
        let j: Json = serde_json::from_slice(json).map_err(|e| fmt(&e.to_string()))?;
        if j.version != 1 {
            return Err(fmt("version is not 1"));
        }
        let b64 = |s: &str, what: &str| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(s.trim_end_matches('='))
                .map_err(|_| fmt(&format!("{what} is not base64url")))
        };
        let hcl = b64(&j.hcl_report, "hcl_report")?;
        let vcek_der = b64(&j.vcek, "vcek")?;
        let attest =
            hex::decode(&j.tpm_quote.message).map_err(|_| fmt("tpm_quote.message is not hex"))?;
        let sig = Signature::RsaSsa {
            hash: HashAlg::Sha256,
            sig: hex::decode(&j.tpm_quote.signature)
                .map_err(|_| fmt("tpm_quote.signature is not hex"))?,
        };
        if j.tpm_quote.pcrs.len() > usize::from(crate::wire::PCR_COUNT) {
            return Err(fmt("more than 24 PCR values"));
        }
        let mut pcrs = PcrValues::new();
        for (i, h) in j.tpm_quote.pcrs.iter().enumerate() {
            let d = Digest::from_hex(HashAlg::Sha256, h)
                .ok_or_else(|| fmt("a PCR value is not 64 hex digits"))?;
            pcrs.insert(u8::try_from(i).unwrap_or(u8::MAX), d);
        }

        let vcek = roots
            .verify_vcek(&vcek_der, &[], now)
            .map_err(AzureSnpVtpmError::from)?;
        let hcl = azure::verify_hcl_report(&hcl, &vcek).map_err(AzureSnpVtpmError::from)?;
        // Offline: the quote's own extraData is the expected one, so the signature, the PCR
        // digest and the AK are checked and the freshness is not.
        let extra = Attest::parse(&attest)
            .map_err(|e| AzureSnpVtpmError::Quote(ValidationError::Quote(e.into())))?
            .extra_data;
        let quote = verify_quote(hcl.ak(), &extra, &attest, &sig, &pcrs)
            .map_err(|e| AzureSnpVtpmError::Quote(ValidationError::Quote(e)))?;
        let snp = SnpClaims::new(hcl.snp(), Some(hcl.vm_configuration()));
        Ok(Self { hcl, quote, snp })
    }

    /// The verified HCL report.
    pub fn hcl(&self) -> &VerifiedHclReport {
        &self.hcl
    }
    /// The verified quote (its extraData is the capturer's nonce).
    pub fn quote(&self) -> &VerifiedQuote {
        &self.quote
    }
    /// The SNP claims.
    pub fn snp(&self) -> &SnpClaims {
        &self.snp
    }
}
