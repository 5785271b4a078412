//! The two ways of agreeing a seed with the EK (TPM 2.0 Part 1, "Secret Sharing" / section
//! 24): RSA-OAEP encryption of a random seed, or ECDH with an ephemeral key followed by KDFe.

use zeroize::Zeroizing;

use super::kdf::kdfe;
use super::{Entropy, MakeCredentialError};
use crate::wire::{EccCurve, HashAlg, Writer};

/// Label of the seed encryption for credentials (with its NUL for OAEP, without it for KDFe,
/// which appends it).
const IDENTITY: &[u8] = b"IDENTITY";

/// Largest RSA modulus accepted (4096 bits): bounds work and output size.
const MAX_RSA_BYTES: usize = 512;
/// Smallest RSA modulus accepted (2048 bits), the EK profile minimum.
const MIN_RSA_BYTES: usize = 256;

fn agreement(curve: EccCurve) -> &'static aws_lc_rs::agreement::Algorithm {
    match curve {
        EccCurve::NistP256 => &aws_lc_rs::agreement::ECDH_P256,
        EccCurve::NistP384 => &aws_lc_rs::agreement::ECDH_P384,
    }
}

/// A seed and the TPM2B_ENCRYPTED_SECRET that lets the EK's TPM recover it.
pub(crate) struct Seed {
    pub(crate) seed: Zeroizing<Vec<u8>>,
    pub(crate) encrypted_secret: Vec<u8>,
}

/// RSA: a random seed of nameAlg size, OAEP-encrypted (hash nameAlg, label "IDENTITY\0").
pub(crate) fn rsa_seed(
    name_alg: HashAlg,
    modulus: &[u8],
    exponent: u32,
    entropy: Entropy<'_>,
) -> Result<Seed, MakeCredentialError> {
    let modulus = strip_leading_zeros(modulus);
    if !(MIN_RSA_BYTES..=MAX_RSA_BYTES).contains(&modulus.len()) {
        return Err(MakeCredentialError::RsaKeySize {
            bits: modulus.len().saturating_mul(8),
        });
    }
    // TPMS_RSA_PARMS.exponent 0 means the default 2^16 + 1.
    let exponent = if exponent == 0 { 65537 } else { exponent };
    // Minimal big-endian encodings: aws-lc refuses leading zero bytes in the components.
    let e = exponent.to_be_bytes();
    let components = aws_lc_rs::rsa::PublicKeyComponents {
        n: modulus,
        e: strip_leading_zeros(&e),
    };
    let key: aws_lc_rs::rsa::PublicEncryptingKey = components
        .try_into()
        .map_err(|_| MakeCredentialError::InvalidEkKey("RSA modulus/exponent"))?;
    let key = aws_lc_rs::rsa::OaepPublicEncryptingKey::new(key)
        .map_err(|_| MakeCredentialError::InvalidEkKey("RSA modulus/exponent"))?;
    let oaep = match name_alg {
        HashAlg::Sha1 => &aws_lc_rs::rsa::OAEP_SHA1_MGF1SHA1,
        HashAlg::Sha256 => &aws_lc_rs::rsa::OAEP_SHA256_MGF1SHA256,
        HashAlg::Sha384 => &aws_lc_rs::rsa::OAEP_SHA384_MGF1SHA384,
        HashAlg::Sha512 => &aws_lc_rs::rsa::OAEP_SHA512_MGF1SHA512,
    };
    let seed = match entropy {
        Entropy::System => random(name_alg.size())?,
        Entropy::Fixed(bytes) if bytes.len() == name_alg.size() => Zeroizing::new(bytes.to_vec()),
        Entropy::Fixed(_) => return Err(MakeCredentialError::FixedEntropySize),
    };
    let mut out = vec![0u8; key.ciphertext_size()];
    let ciphertext = key
        .encrypt(oaep, &seed, &mut out, Some(b"IDENTITY\0"))
        .map_err(|_| MakeCredentialError::Crypto("RSA-OAEP encryption of the seed"))?;
    let mut w = Writer::new();
    w.tpm2b(ciphertext);
    Ok(Seed {
        seed,
        encrypted_secret: w.into_vec(),
    })
}

/// ECC: ephemeral ECDH on the EK's curve; seed = KDFe(nameAlg, Z, "IDENTITY", ephemeral.x,
/// EK.x, digest bits); the secret is the ephemeral public point (TPMS_ECC_POINT in a TPM2B).
pub(crate) fn ecc_seed(
    name_alg: HashAlg,
    curve: EccCurve,
    x: &[u8],
    y: &[u8],
    entropy: Entropy<'_>,
) -> Result<Seed, MakeCredentialError> {
    let len = curve.coordinate_size();
    let (Some(pad_x), Some(pad_y)) = (len.checked_sub(x.len()), len.checked_sub(y.len())) else {
        return Err(MakeCredentialError::InvalidEkKey(
            "ECC point coordinate longer than the curve allows",
        ));
    };
    let alg = agreement(curve);
    let private = match entropy {
        Entropy::System => aws_lc_rs::agreement::PrivateKey::generate(alg)
            .map_err(|_| MakeCredentialError::Crypto("ephemeral ECDH key generation"))?,
        Entropy::Fixed(scalar) => aws_lc_rs::agreement::PrivateKey::from_private_key(alg, scalar)
            .map_err(|_| MakeCredentialError::FixedEntropySize)?,
    };
    let public = private
        .compute_public_key()
        .map_err(|_| MakeCredentialError::Crypto("ephemeral ECDH public key"))?;
    // Uncompressed SEC1 point: 0x04 || x || y.
    let (eph_x, eph_y) = match public.as_ref().split_first() {
        Some((0x04, xy)) if xy.len() == 2 * len => xy.split_at(len),
        _ => {
            return Err(MakeCredentialError::Crypto(
                "ephemeral ECDH public key encoding",
            ))
        }
    };
    // The peer point is padded for the ECDH; KDFe takes x as the EK's public area holds it,
    // which is what the TPM hashes.
    let mut peer = Vec::with_capacity(1 + 2 * len);
    peer.push(0x04);
    peer.resize(1 + pad_x, 0);
    peer.extend_from_slice(x);
    peer.resize(peer.len() + pad_y, 0);
    peer.extend_from_slice(y);
    let peer = aws_lc_rs::agreement::UnparsedPublicKey::new(alg, peer);
    let bits = u32::try_from(name_alg.size() * 8).unwrap_or(u32::MAX);
    // aws-lc checks that the peer point is on the curve; a bad EK point fails here.
    let seed = aws_lc_rs::agreement::agree(
        &private,
        peer,
        MakeCredentialError::InvalidEkKey("ECC point is not on the curve"),
        |z| kdfe(name_alg, z, IDENTITY, eph_x, x, bits),
    )?;
    let mut point = Writer::new();
    point.tpm2b(eph_x).tpm2b(eph_y);
    let mut w = Writer::new();
    w.tpm2b(point.as_slice());
    Ok(Seed {
        seed,
        encrypted_secret: w.into_vec(),
    })
}

/// Random bytes from the operating system's generator.
pub(crate) fn random(len: usize) -> Result<Zeroizing<Vec<u8>>, MakeCredentialError> {
    let mut buf = Zeroizing::new(vec![0u8; len]);
    aws_lc_rs::rand::fill(&mut buf)
        .map_err(|_| MakeCredentialError::Crypto("random number generator"))?;
    Ok(buf)
}

fn strip_leading_zeros(b: &[u8]) -> &[u8] {
    let start = b.iter().position(|&v| v != 0).unwrap_or(b.len());
    b.get(start..).unwrap_or_default()
}
