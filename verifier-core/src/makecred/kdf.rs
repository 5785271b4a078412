//! The TPM key derivation functions (TPM 2.0 Part 1, section 11.4.10): KDFa (SP800-108
//! counter mode with HMAC) and KDFe (SP800-56A concatenation KDF with a hash).
//!
//! Both are public so that known-answer tests outside this crate can pin them; MakeCredential
//! is their only user here.

use zeroize::Zeroizing;

use super::MakeCredentialError;
use crate::wire::HashAlg;

/// Largest output either KDF produces here: an AES-256 key or a SHA-512 HMAC key.
pub const MAX_KDF_BYTES: usize = 64;

/// KDFa(hashAlg, key, label, contextU, contextV, bits).
///
/// `label` is given without its terminating NUL, which the spec counts as part of the label
/// and which is always appended here, so `b"STORAGE"` derives what the TPM derives.
/// Only whole bytes are produced (`bits` must be a multiple of 8, at most
/// [`MAX_KDF_BYTES`] * 8): every key we derive has such a size.
pub fn kdfa(
    alg: HashAlg,
    key: &[u8],
    label: &[u8],
    context_u: &[u8],
    context_v: &[u8],
    bits: u32,
) -> Result<Zeroizing<Vec<u8>>, MakeCredentialError> {
    let len = output_len(bits)?;
    let hmac_key = aws_lc_rs::hmac::Key::new(hmac_alg(alg), key);
    let mut out = Zeroizing::new(Vec::with_capacity(len + alg.size()));
    let mut counter: u32 = 1;
    while out.len() < len {
        let mut ctx = aws_lc_rs::hmac::Context::with_key(&hmac_key);
        ctx.update(&counter.to_be_bytes());
        ctx.update(label);
        ctx.update(&[0]);
        ctx.update(context_u);
        ctx.update(context_v);
        ctx.update(&bits.to_be_bytes());
        out.extend_from_slice(ctx.sign().as_ref());
        counter += 1;
    }
    out.truncate(len);
    Ok(out)
}

/// KDFe(hashAlg, Z, label, partyUInfo, partyVInfo, bits).
///
/// `z` is the x coordinate of the shared ECDH point; `label` is given without its NUL, which
/// is appended as for [`kdfa`]. Same output-size rules as [`kdfa`].
pub fn kdfe(
    alg: HashAlg,
    z: &[u8],
    label: &[u8],
    party_u: &[u8],
    party_v: &[u8],
    bits: u32,
) -> Result<Zeroizing<Vec<u8>>, MakeCredentialError> {
    let len = output_len(bits)?;
    let mut out = Zeroizing::new(Vec::with_capacity(len + alg.size()));
    let mut counter: u32 = 1;
    while out.len() < len {
        let mut ctx = aws_lc_rs::digest::Context::new(alg.ring());
        ctx.update(&counter.to_be_bytes());
        ctx.update(z);
        ctx.update(label);
        ctx.update(&[0]);
        ctx.update(party_u);
        ctx.update(party_v);
        out.extend_from_slice(ctx.finish().as_ref());
        counter += 1;
    }
    out.truncate(len);
    Ok(out)
}

/// HMAC with the TPM hash algorithm `alg`.
pub(crate) fn hmac(alg: HashAlg, key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let key = aws_lc_rs::hmac::Key::new(hmac_alg(alg), key);
    let mut ctx = aws_lc_rs::hmac::Context::with_key(&key);
    for p in parts {
        ctx.update(p);
    }
    ctx.sign().as_ref().to_vec()
}

fn hmac_alg(alg: HashAlg) -> aws_lc_rs::hmac::Algorithm {
    match alg {
        HashAlg::Sha1 => aws_lc_rs::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
        HashAlg::Sha256 => aws_lc_rs::hmac::HMAC_SHA256,
        HashAlg::Sha384 => aws_lc_rs::hmac::HMAC_SHA384,
        HashAlg::Sha512 => aws_lc_rs::hmac::HMAC_SHA512,
    }
}

fn output_len(bits: u32) -> Result<usize, MakeCredentialError> {
    let bytes = usize::try_from(bits / 8).unwrap_or(usize::MAX);
    if bits == 0 || bits % 8 != 0 || bytes > MAX_KDF_BYTES {
        return Err(MakeCredentialError::KdfOutputSize { bits });
    }
    Ok(bytes)
}
