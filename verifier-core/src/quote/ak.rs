//! Attestation keys: which TPM keys may sign the quotes we trust, and how they verify.

use crate::crypto::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
#[cfg(feature = "aws-lc")]
use aws_lc_rs::rsa::RsaPssSaltLength;

use crate::wire::{EccCurve, HashAlg, KeyScheme, ObjectAttributes, Public, Signature};

/// Why a public area is not acceptable as an AK.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AkError {
    /// Malformed input.
    #[error(transparent)]
    Parse(#[from] crate::ParseError),
    /// An attribute every AK must have is clear (TCG name of the attribute).
    #[error("AK attribute {0} must be set (an AK is a TPM-generated, non-duplicable, restricted signing key)")]
    MissingAttribute(&'static str),
    /// An attribute no AK may have is set (TCG name of the attribute).
    #[error("AK attribute {0} must be clear (an AK signs only; a decrypting key could be used to forge quotes)")]
    ForbiddenAttribute(&'static str),
    /// The key type or size is one we do not verify with.
    #[error("AK key {0} is not supported (use RSA-2048/3072 or ECC NIST P-256/P-384)")]
    UnsupportedKey(&'static str),
    /// The AK's signing scheme (or its hash) is not one we verify.
    #[error("AK scheme {0} is not supported (use RSASSA/RSAPSS with SHA-256/384, or ECDSA with the curve's hash)")]
    UnsupportedScheme(&'static str),
    /// The name algorithm is too weak to identify the key (a SHA-1 name could collide).
    #[error("AK nameAlg {0} is too weak; use SHA-256 or stronger")]
    WeakNameAlg(HashAlg),
    /// The public key bytes do not form a valid key.
    #[error("AK public key is invalid: {0}")]
    InvalidKey(&'static str),
}

/// Attributes every AK must have, with their TCG names, checked in this order.
const REQUIRED: [(ObjectAttributes, &str); 6] = [
    (ObjectAttributes::SIGN, "sign"),
    (ObjectAttributes::RESTRICTED, "restricted"),
    (ObjectAttributes::FIXED_TPM, "fixedTPM"),
    (ObjectAttributes::FIXED_PARENT, "fixedParent"),
    (
        ObjectAttributes::SENSITIVE_DATA_ORIGIN,
        "sensitiveDataOrigin",
    ),
    (ObjectAttributes::USER_WITH_AUTH, "userWithAuth"),
];

#[derive(Debug, Clone)]
enum Key {
    Rsa { n: Vec<u8>, e: Vec<u8> },
    Ecc { curve: EccCurve, point: Vec<u8> },
}

/// A public area checked to be a usable attestation key: a restricted signing key that
/// cannot leave its TPM, of a type and scheme we verify. Only [`AkPublic::try_from`] builds
/// one, so holding it means the checks passed.
#[derive(Debug, Clone)]
pub struct AkPublic {
    public: Public,
    name: Vec<u8>,
    key: Key,
}

impl TryFrom<Public> for AkPublic {
    type Error = AkError;

    fn try_from(public: Public) -> Result<Self, AkError> {
        let attrs = public.attributes();
        for (bit, name) in REQUIRED {
            if !attrs.contains(bit) {
                return Err(AkError::MissingAttribute(name));
            }
        }
        if attrs.contains(ObjectAttributes::DECRYPT) {
            return Err(AkError::ForbiddenAttribute("decrypt"));
        }
        if public.name_alg() == HashAlg::Sha1 {
            return Err(AkError::WeakNameAlg(HashAlg::Sha1));
        }
        let key = match public.ecc_curve() {
            None => rsa_key(&public)?,
            Some(curve) => {
                match (curve, public.scheme()) {
                    (_, KeyScheme::Null)
                    | (EccCurve::NistP256, KeyScheme::Ecdsa(HashAlg::Sha256))
                    | (EccCurve::NistP384, KeyScheme::Ecdsa(HashAlg::Sha384)) => {}
                    (_, KeyScheme::Ecdsa(_)) => {
                        return Err(AkError::UnsupportedScheme(
                            "ECDSA with a hash other than the curve's",
                        ))
                    }
                    _ => return Err(AkError::UnsupportedScheme("not a signing scheme")),
                }
                let point = public
                    .ecc_point_uncompressed()
                    .ok_or(AkError::InvalidKey("ECC coordinate longer than the curve"))?;
                // Parse once now so an off-curve point is refused at registration, not at
                // the first quote. (ring, the agent's backend, has no separate parse: there
                // an off-curve point fails the signature check of the agent's own quote.)
                #[cfg(feature = "aws-lc")]
                signature::ParsedPublicKey::new(ecdsa_alg(curve), &point)
                    .map_err(|_| AkError::InvalidKey("ECC point is not on the curve"))?;
                Key::Ecc { curve, point }
            }
        };
        let name = public.name();
        Ok(Self { public, name, key })
    }
}

fn rsa_key(public: &Public) -> Result<Key, AkError> {
    match public.scheme() {
        KeyScheme::Null
        | KeyScheme::RsaSsa(HashAlg::Sha256 | HashAlg::Sha384)
        | KeyScheme::RsaPss(HashAlg::Sha256 | HashAlg::Sha384) => {}
        KeyScheme::RsaSsa(_) | KeyScheme::RsaPss(_) => {
            return Err(AkError::UnsupportedScheme(
                "RSA signatures with a hash other than SHA-256/384",
            ))
        }
        _ => return Err(AkError::UnsupportedScheme("not a signing scheme")),
    }
    let modulus = public.rsa_modulus().unwrap_or_default();
    let bits = public.rsa_key_bits().unwrap_or(0);
    if !matches!(bits, 2048 | 3072) {
        return Err(AkError::UnsupportedKey("RSA size"));
    }
    if modulus.len() != usize::from(bits / 8) || modulus.first().is_none_or(|b| *b < 0x80) {
        return Err(AkError::InvalidKey(
            "RSA modulus does not have keyBits bits",
        ));
    }
    let e = public.rsa_exponent().unwrap_or(65537);
    if e < 3 || e & 1 == 0 {
        return Err(AkError::InvalidKey("RSA exponent"));
    }
    let e = e.to_be_bytes();
    let start = e.iter().position(|b| *b != 0).unwrap_or(0);
    Ok(Key::Rsa {
        n: modulus.to_vec(),
        e: e.get(start..).unwrap_or_default().to_vec(),
    })
}

fn ecdsa_alg(curve: EccCurve) -> &'static signature::EcdsaVerificationAlgorithm {
    match curve {
        EccCurve::NistP256 => &signature::ECDSA_P256_SHA256_FIXED,
        EccCurve::NistP384 => &signature::ECDSA_P384_SHA384_FIXED,
    }
}

/// Outcome of checking a signature against the AK.
pub(super) enum SigCheck {
    Valid,
    SchemeMismatch,
    Invalid,
}

impl AkPublic {
    /// The checked public area.
    pub fn public(&self) -> &Public {
        &self.public
    }

    /// The AK's name (nameAlg || H(TPMT_PUBLIC)), what MakeCredential binds to the EK.
    pub fn name(&self) -> &[u8] {
        &self.name
    }

    /// True when the AK may produce `sig`'s scheme and hash: the AK's own scheme if it has
    /// one, otherwise the schemes for its key type with a hash we accept.
    fn allows(&self, sig: &Signature) -> bool {
        let sig_hash_ok = matches!(sig.hash(), HashAlg::Sha256 | HashAlg::Sha384);
        match (self.public.scheme(), sig, &self.key) {
            (KeyScheme::RsaSsa(h), Signature::RsaSsa { hash, .. }, _)
            | (KeyScheme::RsaPss(h), Signature::RsaPss { hash, .. }, _)
            | (KeyScheme::Ecdsa(h), Signature::Ecdsa { hash, .. }, _) => h == *hash,
            (
                KeyScheme::Null,
                Signature::RsaSsa { .. } | Signature::RsaPss { .. },
                Key::Rsa { .. },
            ) => sig_hash_ok,
            (KeyScheme::Null, Signature::Ecdsa { hash, .. }, Key::Ecc { curve, .. }) => {
                matches!(
                    (curve, hash),
                    (EccCurve::NistP256, HashAlg::Sha256) | (EccCurve::NistP384, HashAlg::Sha384)
                )
            }
            _ => false,
        }
    }

    /// Verifies `sig` over `message` (the TPMS_ATTEST bytes).
    pub(super) fn check(&self, message: &[u8], sig: &Signature) -> SigCheck {
        if !self.allows(sig) {
            return SigCheck::SchemeMismatch;
        }
        let ok = match (&self.key, sig) {
            (Key::Rsa { n, e }, Signature::RsaSsa { hash, sig }) => {
                let params = match hash {
                    HashAlg::Sha384 => &signature::RSA_PKCS1_2048_8192_SHA384,
                    _ => &signature::RSA_PKCS1_2048_8192_SHA256,
                };
                RsaPublicKeyComponents { n, e }
                    .verify(params, message, sig)
                    .is_ok()
            }
            (Key::Rsa { n, e }, Signature::RsaPss { hash, sig }) => {
                // TPMs use either a digest-sized salt (FIPS, newer TPMs) or the maximum
                // (older TPMs); both are valid PSS.
                let key = RsaPublicKeyComponents { n, e };
                let digest = match hash {
                    HashAlg::Sha384 => PSS384_DIGEST,
                    _ => PSS256_DIGEST,
                };
                key.verify(digest, message, sig).is_ok() || pss_max_salt(&key, *hash, message, sig)
            }
            (Key::Ecc { curve, point }, Signature::Ecdsa { r, s, .. }) => {
                match fixed_rs(curve.coordinate_size(), r, s) {
                    Some(rs) => UnparsedPublicKey::new(ecdsa_alg(*curve), point)
                        .verify(message, &rs)
                        .is_ok(),
                    None => false,
                }
            }
            _ => false,
        };
        if ok {
            SigCheck::Valid
        } else {
            SigCheck::Invalid
        }
    }
}

static PSS256_DIGEST: &signature::RsaParameters = &signature::RSA_PSS_2048_8192_SHA256;
static PSS384_DIGEST: &signature::RsaParameters = &signature::RSA_PSS_2048_8192_SHA384;
#[cfg(feature = "aws-lc")]
const PSS256_MAX: signature::RsaParameters =
    signature::RSA_PSS_2048_8192_SHA256.with_pss_salt_length(RsaPssSaltLength::Max);
#[cfg(feature = "aws-lc")]
const PSS384_MAX: signature::RsaParameters =
    signature::RSA_PSS_2048_8192_SHA384.with_pss_salt_length(RsaPssSaltLength::Max);

/// RSA-PSS with the maximum salt length (older TPMs). Only aws-lc verifies it; the agent's
/// ring build only ever checks its own ECDSA AK, so there it is simply not a valid form.
#[cfg(feature = "aws-lc")]
fn pss_max_salt(
    key: &RsaPublicKeyComponents<&Vec<u8>>,
    hash: HashAlg,
    message: &[u8],
    sig: &[u8],
) -> bool {
    let max = match hash {
        HashAlg::Sha384 => &PSS384_MAX,
        _ => &PSS256_MAX,
    };
    key.verify(max, message, sig).is_ok()
}

#[cfg(not(feature = "aws-lc"))]
fn pss_max_salt(_: &RsaPublicKeyComponents<&Vec<u8>>, _: HashAlg, _: &[u8], _: &[u8]) -> bool {
    false
}

/// `r || s`, each left-padded to `n` bytes; `None` when either is longer than `n`.
fn fixed_rs(n: usize, r: &[u8], s: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(2 * n);
    out.resize(n.checked_sub(r.len())?, 0);
    out.extend_from_slice(r);
    out.resize(out.len() + n.checked_sub(s.len())?, 0);
    out.extend_from_slice(s);
    Some(out)
}
