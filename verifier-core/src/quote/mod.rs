//! Quote verification: from an AK, an expected nonce binding, the signed TPMS_ATTEST bytes,
//! its signature and the reported PCR values, to a [`VerifiedQuote`] or the exact check that
//! failed.
//!
//! Decisions, for reviewers:
//! - The pcrDigest is recomputed with the hash of the signature's scheme. TPM2_Quote hashes
//!   the selected PCRs with the signing scheme's hash (Part 3, 18.4), which for a key with a
//!   fixed scheme (every AK we accept from `tpm2_createak`/tss-esapi) is the AK's scheme hash,
//!   and the signature carries that same hash. The keylime vectors (SHA-256 bank, RSASSA-SHA256)
//!   and an ECC software AK test it.
//! - PCR values beyond the quoted selection are ignored, and [`VerifiedQuote::pcrs`] holds
//!   only the selected ones, so nothing unsigned ever reaches policy.
//! - `clockInfo.safe` is exposed, not enforced: whether an unsafe clock is acceptable is the
//!   caller's (policy's) decision.
//! - `qualifiedSigner` is the AK's *qualified* name (it depends on the AK's parents), so it
//!   cannot be compared with the AK's name here; it is exposed for the record. The AK is
//!   bound by the signature.

mod ak;
#[doc(hidden)]
#[cfg(feature = "aws-lc")]
pub mod software;

use subtle::ConstantTimeEq;

pub use ak::{AkError, AkPublic};

use crate::wire::{
    Attest, Attested, ClockInfo, HashAlg, PcrSelection, PcrValues, Public, Signature,
    TPM_GENERATED_VALUE,
};

/// Why a quote was refused; each variant names the failed check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// Malformed TPMS_ATTEST or TPMT_SIGNATURE.
    #[error(transparent)]
    Parse(#[from] crate::ParseError),
    /// The magic is not TPM_GENERATED_VALUE: the TPM did not produce these bytes.
    #[error("quote magic is 0x{found:08x}, not TPM_GENERATED_VALUE (0xff544347)")]
    BadMagic {
        /// Magic found.
        found: u32,
    },
    /// The attestation is of another type (certify, creation, ...).
    #[error("attestation type is 0x{found:04x}, not TPM_ST_ATTEST_QUOTE (0x8018)")]
    NotAQuote {
        /// TPM_ST found.
        found: u16,
    },
    /// The signature's scheme or hash is not what this AK signs with.
    #[error("signature scheme {scheme} with {hash} is not allowed for this AK")]
    SchemeMismatch {
        /// Scheme found (TCG name).
        scheme: &'static str,
        /// Hash found.
        hash: HashAlg,
    },
    /// The signature does not verify with the AK (forged, altered, or another TPM's key).
    #[error("quote signature does not verify with the registered AK")]
    SignatureInvalid,
    /// extraData is not the expected nonce binding (replay or another session's quote).
    #[error("quote extraData does not match the expected nonce binding")]
    ExtraDataMismatch,
    /// A PCR the quote covers was not supplied.
    #[error("PCR {alg}:{index} is in the quoted selection but its value was not supplied")]
    MissingPcr {
        /// Bank.
        alg: HashAlg,
        /// Index.
        index: u8,
    },
    /// The supplied PCR values do not hash to the signed pcrDigest.
    #[error("reported PCR values do not match the quoted pcrDigest")]
    PcrDigestMismatch,
}

/// A quote whose signature, nonce binding and PCR values have all been checked. Only
/// [`verify_quote`] constructs one; everything in it is covered by the AK's signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedQuote {
    ak_name: Vec<u8>,
    qualified_signer: Vec<u8>,
    extra_data: Vec<u8>,
    clock_info: ClockInfo,
    firmware_version: u64,
    pcr_selection: PcrSelection,
    pcrs: PcrValues,
    hash: HashAlg,
}

/// TPM_RH_ENDORSEMENT: the qualified name of the endorsement hierarchy is its handle.
const RH_ENDORSEMENT: u32 = 0x4000_000B;

/// The qualified name of an object named `name` under a parent whose qualified name is
/// `parent_qn` (TPM 2.0 Part 1, "Qualified Name": QN_B = H_B(QN_A || Name_B), as a TPM2B_NAME
/// with B's name algorithm first). `None` when `name` does not start with a known hash.
pub fn qualified_name(parent_qn: &[u8], name: &[u8]) -> Option<Vec<u8>> {
    let (alg, _) = name.split_first_chunk::<2>()?;
    let alg = HashAlg::from_tpm(u16::from_be_bytes(*alg), "TPM2B_NAME", "nameAlg").ok()?;
    let mut input = Vec::with_capacity(parent_qn.len() + name.len());
    input.extend_from_slice(parent_qn);
    input.extend_from_slice(name);
    let digest = alg.hash(&input);
    let mut out = Vec::with_capacity(2 + digest.as_bytes().len());
    out.extend_from_slice(&alg.to_tpm().to_be_bytes());
    out.extend_from_slice(digest.as_bytes());
    Some(out)
}

/// The qualified name of a primary object named `name` in the endorsement hierarchy.
pub fn endorsement_primary_qn(name: &[u8]) -> Option<Vec<u8>> {
    qualified_name(&RH_ENDORSEMENT.to_be_bytes(), name)
}

impl VerifiedQuote {
    /// Whether the signing key sits in the endorsement hierarchy, as the signed
    /// `qualifiedSigner` proves: a primary key there, or a child of `ek` (a primary there).
    /// Only then is clockInfo (resetCount, restartCount) not obfuscated, so only then does
    /// the resetCount identify the boot; an AK from another hierarchy of the same TPM can be
    /// activated with the EK (MakeCredential binds names, not hierarchies), so activation
    /// alone does not prove it.
    pub fn signed_in_endorsement_hierarchy(&self, ek: Option<&Public>) -> bool {
        let as_primary = endorsement_primary_qn(&self.ak_name);
        let under_ek = ek
            .and_then(|ek| endorsement_primary_qn(&ek.name()))
            .and_then(|ek_qn| qualified_name(&ek_qn, &self.ak_name));
        [as_primary, under_ek]
            .iter()
            .flatten()
            .any(|qn| bool::from(qn.as_slice().ct_eq(&self.qualified_signer)))
    }

    /// Name of the AK that signed.
    pub fn ak_name(&self) -> &[u8] {
        &self.ak_name
    }
    /// qualifiedSigner as signed (the AK's qualified name).
    pub fn qualified_signer(&self) -> &[u8] {
        &self.qualified_signer
    }
    /// extraData (equal to what the caller expected).
    pub fn extra_data(&self) -> &[u8] {
        &self.extra_data
    }
    /// Clock, resetCount, restartCount and safe flag at quote time.
    pub fn clock_info(&self) -> ClockInfo {
        self.clock_info
    }
    /// TPM Reset count: identifies the boot session.
    pub fn reset_count(&self) -> u32 {
        self.clock_info.reset_count
    }
    /// TPM Restart count.
    pub fn restart_count(&self) -> u32 {
        self.clock_info.restart_count
    }
    /// TPM clock in milliseconds.
    pub fn clock(&self) -> u64 {
        self.clock_info.clock
    }
    /// Whether the clock is known not to have been rolled back.
    pub fn safe(&self) -> bool {
        self.clock_info.safe
    }
    /// Vendor firmware version.
    pub fn firmware_version(&self) -> u64 {
        self.firmware_version
    }
    /// The quoted PCR selection.
    pub fn pcr_selection(&self) -> &PcrSelection {
        &self.pcr_selection
    }
    /// The quoted PCR values: exactly the selection, each matching the signed digest.
    pub fn pcrs(&self) -> &PcrValues {
        &self.pcrs
    }
    /// Hash of the signature scheme (also the pcrDigest's hash).
    pub fn hash_alg(&self) -> HashAlg {
        self.hash
    }
}

/// Verifies a quote.
///
/// `attest` is the TPMS_ATTEST exactly as signed (no TPM2B size prefix; see
/// [`Attest::parse_tpm2b`] to unwrap one). `expected_extra_data` is the binding the caller
/// computed for this challenge; it is compared in constant time. Checks, in order: structure,
/// magic, type, signature scheme against the AK, signature, extraData, PCR digest.
pub fn verify_quote(
    ak: &AkPublic,
    expected_extra_data: &[u8],
    attest: &[u8],
    signature: &Signature,
    pcrs: &PcrValues,
) -> Result<VerifiedQuote, VerifyError> {
    let parsed = Attest::parse(attest)?;
    if parsed.magic != TPM_GENERATED_VALUE {
        return Err(VerifyError::BadMagic {
            found: parsed.magic,
        });
    }
    let tag = parsed.tag();
    let Attested::Quote(info) = parsed.attested else {
        return Err(VerifyError::NotAQuote { found: tag });
    };
    match ak.check(attest, signature) {
        ak::SigCheck::Valid => {}
        ak::SigCheck::SchemeMismatch => {
            return Err(VerifyError::SchemeMismatch {
                scheme: scheme_name(signature),
                hash: signature.hash(),
            })
        }
        ak::SigCheck::Invalid => return Err(VerifyError::SignatureInvalid),
    }
    if !bool::from(parsed.extra_data.as_slice().ct_eq(expected_extra_data)) {
        return Err(VerifyError::ExtraDataMismatch);
    }
    let hash = signature.hash();
    let missing = |m: crate::wire::MissingPcr| VerifyError::MissingPcr {
        alg: m.alg,
        index: m.index,
    };
    let digest = info.pcr_select.digest(hash, pcrs).map_err(missing)?;
    if !bool::from(digest.as_bytes().ct_eq(&info.pcr_digest)) {
        return Err(VerifyError::PcrDigestMismatch);
    }
    let covered = info.pcr_select.restrict(pcrs).map_err(missing)?;
    Ok(VerifiedQuote {
        ak_name: ak.name().to_vec(),
        qualified_signer: parsed.qualified_signer,
        extra_data: parsed.extra_data,
        clock_info: parsed.clock_info,
        firmware_version: parsed.firmware_version,
        pcr_selection: info.pcr_select,
        pcrs: covered,
        hash,
    })
}

fn scheme_name(sig: &Signature) -> &'static str {
    match sig {
        Signature::RsaSsa { .. } => "RSASSA",
        Signature::RsaPss { .. } => "RSAPSS",
        Signature::Ecdsa { .. } => "ECDSA",
    }
}

#[cfg(test)]
mod tests;
