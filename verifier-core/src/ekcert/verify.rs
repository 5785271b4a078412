//! Chain building and the checks on each link: signature by the issuer's key, validity at
//! the caller's time, issuer is a CA allowed to sign certificates, path length.

use aws_lc_rs::signature::{self, VerificationAlgorithm};

use super::cert::{Certificate, Key, SigAlg, OID_P256, OID_P384};
use super::EkCertError;
use crate::wire::HashAlg;

/// Longest chain searched (leaf, intermediates, anchor).
pub(crate) const MAX_CHAIN: usize = 6;

/// Most candidate issuers (anchors and intermediates whose name matches) checked for one
/// certificate. Each check is a signature verification, and the search backtracks, so
/// without a budget a pool of same-named certificates sharing one key (which all verify
/// each other) would cost a number of verifications exponential in the chain depth.
pub(crate) const MAX_LINK_CHECKS: usize = 64;

/// A chain from the leaf (index 0) to a trust anchor (last).
pub(crate) struct Path<'a> {
    pub(crate) certs: Vec<&'a Certificate>,
}

/// Finds a path from `leaf` through `intermediates` to one of `anchors` where every link
/// passes [`check_link`]. Refusals name the most specific failure seen.
pub(crate) fn build<'a>(
    leaf: &'a Certificate,
    intermediates: &'a [Certificate],
    anchors: &'a [Certificate],
    now: i64,
) -> Result<Path<'a>, EkCertError> {
    check_cert(leaf, 0, now)?;
    let mut best: Option<EkCertError> = None;
    let mut path = vec![leaf];
    let mut budget = MAX_LINK_CHECKS;
    let mut ctx = Search {
        intermediates,
        anchors,
        now,
        best: &mut best,
        budget: &mut budget,
    };
    if search(&mut path, &mut ctx) {
        return Ok(Path { certs: path });
    }
    Err(best.unwrap_or(EkCertError::UntrustedIssuer))
}

struct Search<'a, 'b> {
    intermediates: &'a [Certificate],
    anchors: &'a [Certificate],
    now: i64,
    best: &'b mut Option<EkCertError>,
    budget: &'b mut usize,
}

impl Search<'_, '_> {
    /// Spends one link check; false once the budget is gone, which then is the reason
    /// reported (whatever was seen before it, the search did not finish).
    fn spend(&mut self) -> bool {
        if *self.budget == 0 {
            *self.best = Some(EkCertError::PathSearchExhausted {
                max: MAX_LINK_CHECKS,
            });
            return false;
        }
        *self.budget -= 1;
        true
    }
}

fn search<'a>(path: &mut Vec<&'a Certificate>, ctx: &mut Search<'a, '_>) -> bool {
    let Some(&child) = path.last() else {
        return false;
    };
    let depth = path.len();
    if depth >= MAX_CHAIN {
        ctx.best
            .get_or_insert(EkCertError::ChainTooLong { max: MAX_CHAIN });
        return false;
    }
    let named = |c: &&Certificate| c.subject == child.issuer;
    let anchors = ctx.anchors;
    for anchor in anchors.iter().filter(named) {
        if !ctx.spend() {
            return false;
        }
        match check_link(child, anchor, depth, ctx.now) {
            Ok(()) => {
                path.push(anchor);
                return true;
            }
            Err(e) => remember(ctx.best, e),
        }
    }
    let intermediates = ctx.intermediates;
    for issuer in intermediates.iter().filter(named) {
        if path.iter().any(|p| std::ptr::eq(*p, issuer)) {
            continue;
        }
        if !ctx.spend() {
            return false;
        }
        if let Err(e) = check_link(child, issuer, depth, ctx.now) {
            remember(ctx.best, e);
            continue;
        }
        path.push(issuer);
        if search(path, ctx) {
            return true;
        }
        path.pop();
    }
    false
}

/// Keeps the first specific error; "untrusted issuer" is the least specific.
fn remember(best: &mut Option<EkCertError>, e: EkCertError) {
    if best.is_none() {
        *best = Some(e);
    }
}

/// Checks that hold for any certificate in a path, at `depth` (0 = leaf).
pub(crate) fn check_cert(cert: &Certificate, depth: usize, now: i64) -> Result<(), EkCertError> {
    if let Some(oid) = &cert.unknown_critical {
        return Err(EkCertError::UnknownCriticalExtension {
            depth,
            oid: super::der::oid_to_string(oid),
        });
    }
    if let Some(oid) = &cert.duplicate_extension {
        return Err(EkCertError::DuplicateExtension {
            depth,
            oid: super::der::oid_to_string(oid),
        });
    }
    if cert.tbs_sig_alg_raw != cert.outer_sig_alg_raw {
        return Err(EkCertError::SignatureAlgorithmMismatch { depth });
    }
    if now < cert.not_before {
        return Err(EkCertError::NotYetValid {
            depth,
            not_before: cert.not_before,
        });
    }
    if now > cert.not_after {
        return Err(EkCertError::Expired {
            depth,
            not_after: cert.not_after,
        });
    }
    Ok(())
}

/// `issuer` (at `depth`) may have issued `child`: it is a valid CA allowed to sign
/// certificates, its path length allows the CAs below it, and its key verifies the
/// signature.
fn check_link(
    child: &Certificate,
    issuer: &Certificate,
    depth: usize,
    now: i64,
) -> Result<(), EkCertError> {
    check_cert(issuer, depth, now)?;
    match issuer.basic_constraints {
        Some((true, path_len)) => {
            // CA certificates strictly between this issuer and the leaf.
            let below = depth.saturating_sub(1);
            if let Some(max) = path_len {
                if usize::try_from(max).is_ok_and(|m| below > m) {
                    return Err(EkCertError::PathLenExceeded {
                        depth,
                        path_len: max,
                    });
                }
            }
        }
        _ => return Err(EkCertError::IssuerNotCa { depth }),
    }
    if !issuer.may_sign_certs() {
        return Err(EkCertError::IssuerMayNotSignCertificates { depth });
    }
    verify_signature(child, issuer, depth)
}

/// Verifies `child`'s signature with `issuer`'s public key.
pub(crate) fn verify_signature(
    child: &Certificate,
    issuer: &Certificate,
    depth: usize,
) -> Result<(), EkCertError> {
    let (alg, key): (&'static dyn VerificationAlgorithm, &[u8]) =
        match (&child.sig_alg, &issuer.key) {
            (SigAlg::RsaPkcs1(HashAlg::Sha1) | SigAlg::Ecdsa(HashAlg::Sha1), _) => {
                return Err(EkCertError::Sha1Signature {
                    depth: depth.saturating_sub(1),
                })
            }
            (SigAlg::RsaPkcs1(h), Key::Rsa { rsa_public_key, .. }) => (
                match h {
                    HashAlg::Sha256 => &signature::RSA_PKCS1_2048_8192_SHA256,
                    HashAlg::Sha384 => &signature::RSA_PKCS1_2048_8192_SHA384,
                    _ => &signature::RSA_PKCS1_2048_8192_SHA512,
                },
                rsa_public_key,
            ),
            (SigAlg::RsaPss(h), Key::Rsa { rsa_public_key, .. }) => (
                match h {
                    HashAlg::Sha1 => {
                        return Err(EkCertError::Sha1Signature {
                            depth: depth.saturating_sub(1),
                        })
                    }
                    HashAlg::Sha256 => &signature::RSA_PSS_2048_8192_SHA256,
                    HashAlg::Sha384 => &signature::RSA_PSS_2048_8192_SHA384,
                    HashAlg::Sha512 => &signature::RSA_PSS_2048_8192_SHA512,
                },
                rsa_public_key,
            ),
            (SigAlg::Ecdsa(h), Key::Ec { curve, point }) => {
                let alg: &'static dyn VerificationAlgorithm = match (curve.as_slice(), h) {
                    (OID_P256, HashAlg::Sha256) => &signature::ECDSA_P256_SHA256_ASN1,
                    (OID_P256, HashAlg::Sha384) => &signature::ECDSA_P256_SHA384_ASN1,
                    (OID_P256, HashAlg::Sha512) => &signature::ECDSA_P256_SHA512_ASN1,
                    (OID_P384, HashAlg::Sha256) => &signature::ECDSA_P384_SHA256_ASN1,
                    (OID_P384, HashAlg::Sha384) => &signature::ECDSA_P384_SHA384_ASN1,
                    (OID_P384, HashAlg::Sha512) => &signature::ECDSA_P384_SHA512_ASN1,
                    _ => return Err(EkCertError::UnsupportedKey { depth }),
                };
                (alg, point)
            }
            (SigAlg::Unsupported(oid), _) => {
                return Err(EkCertError::UnsupportedSignatureAlgorithm {
                    depth: depth.saturating_sub(1),
                    oid: super::der::oid_to_string(oid),
                })
            }
            _ => return Err(EkCertError::UnsupportedKey { depth }),
        };
    signature::UnparsedPublicKey::new(alg, key)
        .verify(&child.tbs, &child.signature)
        .map_err(|_| EkCertError::BadSignature {
            depth: depth.saturating_sub(1),
        })
}
