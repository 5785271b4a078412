//! A software attestation key that quotes exactly as a TPM would, for tests, simulated
//! agents and benchmarks. It holds its private key in memory, so it proves nothing about a
//! machine: a real deployment binds the AK to an EK with MakeCredential, which a software key
//! cannot pass. Hidden from the docs for that reason.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize};
use aws_lc_rs::signature::{
    EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING, RSA_PKCS1_SHA256,
};

use super::{AkError, AkPublic};
use crate::wire::{
    Attest, ClockInfo, EccCurve, HashAlg, KdfScheme, KeyScheme, MissingPcr, ObjectAttributes,
    PcrSelection, PcrValues, Public, PublicKey, Signature, SymDef,
};

/// What can go wrong building a software quote.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SoftwareAkError {
    /// aws-lc-rs failed to generate a key or sign.
    #[error("software AK: crypto operation failed")]
    Crypto,
    /// A selected PCR has no value to quote.
    #[error("software AK: PCR {}:{} selected but not supplied", .0.alg, .0.index)]
    MissingPcr(MissingPcr),
    /// The generated public area was not accepted as an AK (a bug).
    #[error(transparent)]
    Ak(#[from] AkError),
    /// The AK's name has no known name algorithm (a bug).
    #[error("software AK: name without a known name algorithm")]
    Name,
}

enum Signer {
    Ecdsa(EcdsaKeyPair),
    Rsa(RsaKeyPair),
}

/// An in-memory AK with the attributes `tpm2_createak` gives (restricted signing, fixedTPM,
/// fixedParent, sensitiveDataOrigin, userWithAuth), ECDSA-P256-SHA256 or RSASSA-2048-SHA256.
pub struct SoftwareAk {
    signer: Signer,
    ak: AkPublic,
    rng: SystemRandom,
}

impl std::fmt::Debug for SoftwareAk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SoftwareAk")
            .field("ak", &self.ak)
            .finish_non_exhaustive()
    }
}

/// The attributes of an AK made by `tpm2_createak` / tss-esapi `create_ak`.
pub fn ak_attributes() -> ObjectAttributes {
    ObjectAttributes::FIXED_TPM
        | ObjectAttributes::FIXED_PARENT
        | ObjectAttributes::SENSITIVE_DATA_ORIGIN
        | ObjectAttributes::USER_WITH_AUTH
        | ObjectAttributes::RESTRICTED
        | ObjectAttributes::SIGN
}

impl SoftwareAk {
    /// A fresh ECDSA P-256 AK (fast: what the bench should use).
    pub fn generate_ecc_p256() -> Result<Self, SoftwareAkError> {
        let kp = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
            .map_err(|_| SoftwareAkError::Crypto)?;
        let point = kp.public_key().as_ref();
        let (x, y) = point
            .get(1..33)
            .zip(point.get(33..65))
            .ok_or(SoftwareAkError::Crypto)?;
        let public = Public::new(
            HashAlg::Sha256,
            ak_attributes(),
            &[],
            PublicKey::Ecc {
                symmetric: SymDef::Null,
                scheme: KeyScheme::Ecdsa(HashAlg::Sha256),
                curve: EccCurve::NistP256,
                kdf: KdfScheme::Null,
                x: x.to_vec(),
                y: y.to_vec(),
            },
        )
        .map_err(AkError::from)?;
        Self::with(Signer::Ecdsa(kp), public)
    }

    /// A fresh RSA-2048 AK (key generation takes ~100 ms).
    pub fn generate_rsa_2048() -> Result<Self, SoftwareAkError> {
        let kp = RsaKeyPair::generate(KeySize::Rsa2048).map_err(|_| SoftwareAkError::Crypto)?;
        let pk = kp.public_key();
        let modulus = pk.modulus().big_endian_without_leading_zero().to_vec();
        let e = pk
            .exponent()
            .big_endian_without_leading_zero()
            .iter()
            .fold(0u32, |a, b| a.checked_shl(8).unwrap_or(0) | u32::from(*b));
        let public = Public::new(
            HashAlg::Sha256,
            ak_attributes(),
            &[],
            PublicKey::Rsa {
                symmetric: SymDef::Null,
                scheme: KeyScheme::RsaSsa(HashAlg::Sha256),
                key_bits: 2048,
                exponent: if e == 65537 { 0 } else { e },
                modulus,
            },
        )
        .map_err(AkError::from)?;
        Self::with(Signer::Rsa(kp), public)
    }

    fn with(signer: Signer, public: Public) -> Result<Self, SoftwareAkError> {
        Ok(Self {
            signer,
            ak: AkPublic::try_from(public)?,
            rng: SystemRandom::new(),
        })
    }

    /// The AK's public area (what an agent registers).
    pub fn public(&self) -> &Public {
        self.ak.public()
    }

    /// The checked AK, as the verifier would hold it after registration.
    pub fn ak(&self) -> &AkPublic {
        &self.ak
    }

    /// Signs `message` (a marshalled TPMS_ATTEST) as the TPM signs with this AK's scheme.
    pub fn sign(&self, message: &[u8]) -> Result<Signature, SoftwareAkError> {
        match &self.signer {
            Signer::Ecdsa(kp) => {
                let sig = kp
                    .sign(&self.rng, message)
                    .map_err(|_| SoftwareAkError::Crypto)?;
                let (r, s) = sig
                    .as_ref()
                    .split_at_checked(32)
                    .ok_or(SoftwareAkError::Crypto)?;
                Ok(Signature::Ecdsa {
                    hash: HashAlg::Sha256,
                    r: r.to_vec(),
                    s: s.to_vec(),
                })
            }
            Signer::Rsa(kp) => {
                let mut sig = vec![0u8; kp.public_modulus_len()];
                kp.sign(&RSA_PKCS1_SHA256, &self.rng, message, &mut sig)
                    .map_err(|_| SoftwareAkError::Crypto)?;
                Ok(Signature::RsaSsa {
                    hash: HashAlg::Sha256,
                    sig,
                })
            }
        }
    }

    /// A TPM2_Quote: the marshalled TPMS_ATTEST over `selection` of `pcrs` (digest with the
    /// scheme hash, SHA-256) and its signature. `qualifiedSigner` is the AK's qualified name
    /// as a primary key in the endorsement hierarchy.
    pub fn quote(
        &self,
        extra_data: &[u8],
        selection: &PcrSelection,
        pcrs: &PcrValues,
        clock_info: ClockInfo,
        firmware_version: u64,
    ) -> Result<(Vec<u8>, Signature), SoftwareAkError> {
        let digest = selection
            .digest(HashAlg::Sha256, pcrs)
            .map_err(SoftwareAkError::MissingPcr)?;
        let signer = super::endorsement_primary_qn(self.ak.name()).ok_or(SoftwareAkError::Name)?;
        let attest = Attest::new_quote(
            &signer,
            extra_data,
            clock_info,
            firmware_version,
            selection.clone(),
            &digest,
        )
        .marshal();
        let sig = self.sign(&attest)?;
        Ok((attest, sig))
    }
}
