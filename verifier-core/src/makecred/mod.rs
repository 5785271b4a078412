//! TPM2_MakeCredential in software (TPM 2.0 Part 1 section 24 "Credential Protection";
//! Part 3 TPM2_MakeCredential), for RSA and ECC endorsement keys.
//!
//! The server uses it to bind an AK to an EK without a TPM of its own: only the TPM that
//! holds the EK's private part *and* has the AK of the given name loaded can recover the
//! credential with TPM2_ActivateCredential. The output bytes are exactly what the TPM command
//! takes (TPM2B_ID_OBJECT and TPM2B_ENCRYPTED_SECRET, each with its size prefix).
//!
//! Steps (`seed` agreed with the EK, see `seed.rs`):
//! - symKey = KDFa(nameAlg, seed, "STORAGE", name(AK), "", symmetric key bits)
//! - encIdentity = AES-CFB(symKey, IV = 0, TPM2B_DIGEST(credential))
//! - HMACkey = KDFa(nameAlg, seed, "INTEGRITY", "", "", digest bits)
//! - outerHMAC = HMAC(HMACkey, encIdentity || name(AK))
//! - credentialBlob = TPM2B(TPM2B_DIGEST(outerHMAC) || encIdentity)

pub mod kdf;
mod seed;

use zeroize::Zeroizing;

use crate::wire::{
    EccCurve, HashAlg, ObjectAttributes, Public, PublicKey, SymDef, SymMode, Writer,
};

/// The outputs of MakeCredential, ready to hand to TPM2_ActivateCredential.
///
/// Neither field is secret: only the EK's TPM can open them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MadeCredential {
    /// TPM2B_ID_OBJECT (with its `u16` size prefix).
    pub credential_blob: Vec<u8>,
    /// TPM2B_ENCRYPTED_SECRET (with its `u16` size prefix).
    pub encrypted_secret: Vec<u8>,
}

/// Source of the seed (RSA) or ephemeral ECDH key (ECC). Only [`Entropy::System`] is safe;
/// [`Entropy::Fixed`] exists for known-answer tests.
#[doc(hidden)]
#[derive(Debug, Clone, Copy)]
pub enum Entropy<'a> {
    /// The operating system's random generator.
    System,
    /// RSA EK: the seed itself (nameAlg digest size). ECC EK: the ephemeral private scalar.
    Fixed(&'a [u8]),
}

/// Why MakeCredential was refused or failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MakeCredentialError {
    /// Malformed input.
    #[error(transparent)]
    Parse(#[from] crate::ParseError),
    /// The EK is not a restricted decryption (storage) key, so the TPM would refuse to
    /// activate a credential with it.
    #[error("EK TPMT_PUBLIC.objectAttributes: not a restricted decrypt key without sign (0x{attributes:08x})")]
    NotStorageKey {
        /// The objectAttributes found.
        attributes: u32,
    },
    /// The EK has no AES-CFB symmetric definition (credential wrapping needs one).
    #[error("EK TPMT_PUBLIC.parameters.symmetric: need AES-CFB with 128, 192 or 256 key bits, found alg 0x{alg:04x} mode 0x{mode:04x} bits {key_bits}")]
    UnsupportedSymmetric {
        /// TPM_ALG_ID of the symmetric algorithm.
        alg: u16,
        /// TPM_ALG_ID of the mode.
        mode: u16,
        /// Key size in bits.
        key_bits: u16,
    },
    /// The EK's RSA modulus is outside 2048..=4096 bits.
    #[error("EK TPM2B_PUBLIC_KEY_RSA: {bits}-bit modulus is outside 2048..=4096")]
    RsaKeySize {
        /// Modulus size in bits.
        bits: usize,
    },
    /// The EK's public key is malformed (not a valid RSA key, or a point off the curve).
    #[error("EK public key rejected: {0}")]
    InvalidEkKey(&'static str),
    /// The credential is empty or longer than the EK nameAlg digest (TPM2B_DIGEST limit).
    #[error("credential of {len} bytes: must be 1..={max} bytes (EK nameAlg digest size)")]
    CredentialSize {
        /// Length given.
        len: usize,
        /// Largest allowed length.
        max: usize,
    },
    /// The AK name is not nameAlg || digest of a supported hash.
    #[error("AK TPM2B_NAME: {0}")]
    InvalidAkName(&'static str),
    /// A KDF was asked for a size we do not produce.
    #[error("KDF output of {bits} bits: must be a positive multiple of 8, at most 512")]
    KdfOutputSize {
        /// Requested bits.
        bits: u32,
    },
    /// A fixed test seed or scalar has the wrong size.
    #[error("fixed entropy has the wrong size for this EK")]
    FixedEntropySize,
    /// The cryptographic library failed.
    #[error("crypto failure: {0}")]
    Crypto(&'static str),
}

/// What MakeCredential needs from an EK, taken from its TPMT_PUBLIC.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EkInputs<'a> {
    pub(crate) name_alg: HashAlg,
    /// AES key size in bits.
    pub(crate) aes_bits: u16,
    pub(crate) key: EkKey<'a>,
}

/// The EK's public key.
#[derive(Debug, Clone, Copy)]
pub(crate) enum EkKey<'a> {
    Rsa {
        modulus: &'a [u8],
        exponent: u32,
    },
    Ecc {
        curve: EccCurve,
        x: &'a [u8],
        y: &'a [u8],
    },
}

/// Wraps `credential` so that only the TPM holding `ek` can recover it, and only while an
/// object named `ak_name` (TPM2B_NAME contents: nameAlg || digest) is loaded beside it.
///
/// `ek` must be a restricted decryption key with an AES-CFB symmetric definition (every TCG
/// EK template is); `credential` must be 1..=digest-size-of-EK-nameAlg bytes. The seed or
/// ephemeral key comes from the operating system's generator.
pub fn make_credential(
    ek: &Public,
    ak_name: &[u8],
    credential: &[u8],
) -> Result<MadeCredential, MakeCredentialError> {
    make_credential_with(ek, ak_name, credential, Entropy::System)
}

/// [`make_credential`] with the seed (RSA) or ephemeral scalar (ECC) chosen by the caller,
/// for known-answer tests. Never use [`Entropy::Fixed`] outside tests: a reused seed lets
/// anyone who saw one activation open every credential made with it.
#[doc(hidden)]
pub fn make_credential_with(
    ek: &Public,
    ak_name: &[u8],
    credential: &[u8],
    entropy: Entropy<'_>,
) -> Result<MadeCredential, MakeCredentialError> {
    let inputs = ek_inputs(ek)?;
    make_credential_inputs(&inputs, ak_name, credential, entropy)
}

/// Checks that `ek` can receive a credential and extracts what the computation needs.
fn ek_inputs(ek: &Public) -> Result<EkInputs<'_>, MakeCredentialError> {
    let attrs = ek.attributes();
    if !attrs.contains(ObjectAttributes::RESTRICTED)
        || !attrs.contains(ObjectAttributes::DECRYPT)
        || attrs.contains(ObjectAttributes::SIGN)
    {
        return Err(MakeCredentialError::NotStorageKey {
            attributes: attrs.bits(),
        });
    }
    let aes_bits = match ek.symmetric() {
        SymDef::Aes {
            key_bits,
            mode: SymMode::Cfb,
        } => key_bits,
        SymDef::Aes { key_bits, mode } => {
            return Err(MakeCredentialError::UnsupportedSymmetric {
                alg: ALG_AES,
                mode: mode.to_tpm(),
                key_bits,
            })
        }
        SymDef::Null => {
            return Err(MakeCredentialError::UnsupportedSymmetric {
                alg: ALG_NULL,
                mode: ALG_NULL,
                key_bits: 0,
            })
        }
    };
    let key = match ek.key() {
        PublicKey::Rsa {
            modulus, exponent, ..
        } => EkKey::Rsa {
            modulus,
            exponent: *exponent,
        },
        PublicKey::Ecc { curve, x, y, .. } => EkKey::Ecc {
            curve: *curve,
            x,
            y,
        },
    };
    Ok(EkInputs {
        name_alg: ek.name_alg(),
        aes_bits,
        key,
    })
}

const ALG_AES: u16 = 0x0006;
const ALG_NULL: u16 = 0x0010;

/// The core, over already-checked EK inputs.
pub(crate) fn make_credential_inputs(
    ek: &EkInputs<'_>,
    ak_name: &[u8],
    credential: &[u8],
    entropy: Entropy<'_>,
) -> Result<MadeCredential, MakeCredentialError> {
    check_ak_name(ak_name)?;
    let name_alg = ek.name_alg;
    if credential.is_empty() || credential.len() > name_alg.size() {
        return Err(MakeCredentialError::CredentialSize {
            len: credential.len(),
            max: name_alg.size(),
        });
    }
    let seed = match ek.key {
        EkKey::Rsa { modulus, exponent } => seed::rsa_seed(name_alg, modulus, exponent, entropy)?,
        EkKey::Ecc { curve, x, y } => seed::ecc_seed(name_alg, curve, x, y, entropy)?,
    };

    let sym_key = kdf::kdfa(
        name_alg,
        &seed.seed,
        b"STORAGE",
        ak_name,
        &[],
        u32::from(ek.aes_bits),
    )?;
    let mut enc_identity = Zeroizing::new(Vec::with_capacity(2 + credential.len()));
    enc_identity.extend_from_slice(&u16::try_from(credential.len()).unwrap_or(0).to_be_bytes());
    enc_identity.extend_from_slice(credential);
    aes_cfb_encrypt(&sym_key, &mut enc_identity)?;

    let digest_bits = u32::try_from(name_alg.size() * 8).unwrap_or(0);
    let hmac_key = kdf::kdfa(name_alg, &seed.seed, b"INTEGRITY", &[], &[], digest_bits)?;
    let outer_hmac = kdf::hmac(name_alg, &hmac_key, &[&enc_identity, ak_name]);

    let mut id_object = Writer::new();
    id_object.tpm2b(&outer_hmac).bytes(&enc_identity);
    let mut blob = Writer::new();
    blob.tpm2b(id_object.as_slice());
    Ok(MadeCredential {
        credential_blob: blob.into_vec(),
        encrypted_secret: seed.encrypted_secret,
    })
}

/// AES-CFB128 with a zero IV, in place (the IV is zero because each symKey is used once).
fn aes_cfb_encrypt(key: &[u8], data: &mut [u8]) -> Result<(), MakeCredentialError> {
    use aws_lc_rs::cipher::{EncryptingKey, EncryptionContext, UnboundCipherKey};
    use aws_lc_rs::iv::FixedLength;
    let alg = match key.len() {
        16 => &aws_lc_rs::cipher::AES_128,
        24 => &aws_lc_rs::cipher::AES_192,
        32 => &aws_lc_rs::cipher::AES_256,
        _ => {
            return Err(MakeCredentialError::Crypto(
                "AES key size (128, 192 or 256 bits)",
            ))
        }
    };
    let key = UnboundCipherKey::new(alg, key)
        .and_then(EncryptingKey::cfb128)
        .map_err(|_| MakeCredentialError::Crypto("AES-CFB key setup"))?;
    key.less_safe_encrypt(data, EncryptionContext::Iv128(FixedLength::from([0u8; 16])))
        .map_err(|_| MakeCredentialError::Crypto("AES-CFB encryption"))?;
    Ok(())
}

/// The inverse of [`aes_cfb_encrypt`], for the software TPM's ActivateCredential
/// ([`crate::sim`]); kept beside the encryption so both use one cipher setup.
pub(crate) fn aes_cfb_decrypt(key: &[u8], data: &mut [u8]) -> Result<(), MakeCredentialError> {
    use aws_lc_rs::cipher::{DecryptingKey, DecryptionContext, UnboundCipherKey};
    use aws_lc_rs::iv::FixedLength;
    let alg = match key.len() {
        16 => &aws_lc_rs::cipher::AES_128,
        24 => &aws_lc_rs::cipher::AES_192,
        32 => &aws_lc_rs::cipher::AES_256,
        _ => {
            return Err(MakeCredentialError::Crypto(
                "AES key size (128, 192 or 256 bits)",
            ))
        }
    };
    let key = UnboundCipherKey::new(alg, key)
        .and_then(DecryptingKey::cfb128)
        .map_err(|_| MakeCredentialError::Crypto("AES-CFB key setup"))?;
    key.decrypt(data, DecryptionContext::Iv128(FixedLength::from([0u8; 16])))
        .map_err(|_| MakeCredentialError::Crypto("AES-CFB decryption"))?;
    Ok(())
}

/// A TPM2B_NAME of an object: nameAlg (u16) then a digest of that algorithm's size.
fn check_ak_name(name: &[u8]) -> Result<(), MakeCredentialError> {
    let mut r = crate::wire::Reader::new("TPM2B_NAME", name);
    let alg = r.u16("nameAlg")?;
    let alg = HashAlg::from_tpm(alg, "TPM2B_NAME", "nameAlg")?;
    if r.remaining() != alg.size() {
        return Err(MakeCredentialError::InvalidAkName(
            "digest length does not match nameAlg",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
