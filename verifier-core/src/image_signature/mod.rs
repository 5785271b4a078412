//! Authenticode signatures of boot applications: does a signature from a signer the policy
//! trusts vouch for exactly this PCR 4 digest?
//!
//! A machine that asks for a new kernel or shim ([`crate::proto::v1::ProposedChange`]) sends,
//! beside the predicted digests, the signatures from the images' certificate tables (the
//! `WIN_CERTIFICATE` payload: a PKCS#7 `SignedData`, ~1.5 KiB; never the image). The server
//! lets the change through without an operator only when every added digest is vouched for
//! by [`verify`]. What is checked, in order:
//!
//! 1. the bytes parse as an Authenticode `SignedData` (one signer, `SpcIndirectDataContent`),
//!    decoded by the maintained `authenticode`/`cms`/`x509-cert` crates;
//! 2. the digest the signature carries is in the bank's algorithm and equals the digest the
//!    machine asks for (a signature over another image vouches for nothing here);
//! 3. the signed attributes hold `contentType` = `SpcIndirectDataContent` and a
//!    `messageDigest` equal to the hash of the encapsulated content, so the signed bytes
//!    bind the image digest;
//! 4. the signer's signature over the signed attributes verifies with the key of the
//!    certificate the signer info names (RSA PKCS#1 v1.5 or ECDSA; SHA-256/384/512, SHA-1
//!    refused);
//! 5. that certificate is one the policy trusts, or chains to one through the certificates
//!    the signature carries ([`crate::ekcert::TrustStore`]: signatures, CA constraints,
//!    critical extensions, validity at `now`); it is not a CA and, when it has an
//!    extKeyUsage, that includes code signing.
//!
//! Validity is checked at the caller's clock, which is stricter than Secure Boot (firmware
//! and shim ignore expiry): a kernel signed by an expired signer is not auto-approved and
//! waits for an operator, who can still approve it. Timestamps (counter-signatures) are not
//! read. Revocation (dbx, SBAT) is not checked here: the policy's `measured_boot.dbx` rule
//! does that at boot.

use std::time::SystemTime;

use const_oid::db::rfc5912;
use const_oid::ObjectIdentifier;
use der::{Decode, Encode};

use crate::ekcert::{Certificate, EkCertError, TrustStore};
use crate::wire::{Digest, HashAlg};

/// Largest signature accepted (real ones are 1.5-10 KiB: the signer's certificate and
/// perhaps an intermediate or a timestamp).
pub const MAX_SIGNATURE: usize = 64 * 1024;

/// Most certificates carried in one signature that are tried for a path.
const MAX_CARRIED_CERTS: usize = 8;

/// Why a signature does not vouch for a digest. Each refusal keeps the change pending for
/// an operator; none is an error of the machine's request as such.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImageSignatureError {
    /// Larger than [`MAX_SIGNATURE`].
    #[error("the signature is {0} bytes, more than the {MAX_SIGNATURE} accepted")]
    TooLarge(usize),
    /// Not an Authenticode PKCS#7 SignedData.
    #[error("not an Authenticode signature (PKCS#7 SignedData with SpcIndirectDataContent): {0}")]
    Malformed(String),
    /// The image digest's algorithm is not the bank's.
    #[error("the signature signs a {signed} image digest, not a {bank} one: it cannot vouch for a {bank} measurement")]
    DigestAlgorithm {
        /// The algorithm the signature names.
        signed: String,
        /// The bank of the digest asked for.
        bank: HashAlg,
    },
    /// The signature is for another image.
    #[error("the signature signs image digest {signed}, not the requested {requested}")]
    DigestMismatch {
        /// The digest the signature carries (hex).
        signed: String,
        /// The digest asked for (hex).
        requested: String,
    },
    /// No signed attributes, or one of the two required is missing or malformed.
    #[error("signed attributes: {0}")]
    Attributes(&'static str),
    /// The messageDigest attribute does not hash the signed content.
    #[error("the messageDigest attribute is not the digest of the signed SpcIndirectDataContent (altered content or attribute)")]
    MessageDigestMismatch,
    /// Unsupported or refused algorithm.
    #[error("unsupported signature or digest algorithm {0} (RSA PKCS#1 v1.5 or ECDSA with SHA-256/384/512 are accepted)")]
    Algorithm(String),
    /// The signer info names no certificate the signature carries.
    #[error("the signature does not carry the signer's certificate (issuer and serial number named by the signer info)")]
    SignerCertificateMissing,
    /// The signature over the signed attributes does not verify.
    #[error("the signer's signature over the signed attributes does not verify with the certificate's key")]
    BadSignature,
    /// The signer certificate is not allowed to sign code.
    #[error("the signer certificate is not a code-signing certificate: {0}")]
    NotCodeSigning(&'static str),
    /// The signer is not trusted by the policy.
    #[error("the signer {subject} does not chain to a certificate the policy trusts: {source}")]
    Untrusted {
        /// The signer's subject.
        subject: String,
        /// Why the chain failed.
        source: EkCertError,
    },
}

/// The certificates a policy trusts to sign boot applications (its
/// `auto_approve.boot_applications_signed_by`).
#[derive(Debug, Clone)]
pub struct TrustedSigners {
    ders: Vec<Vec<u8>>,
    store: TrustStore,
}

impl TrustedSigners {
    /// From DER certificates; a certificate that does not parse is refused.
    pub fn from_der(certs: &[Vec<u8>]) -> Result<Self, EkCertError> {
        let mut store = TrustStore::new();
        for c in certs {
            store.add_der(c)?;
        }
        Ok(Self {
            ders: certs.to_vec(),
            store,
        })
    }
}

/// A digest a trusted signer vouched for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vouched {
    /// The image digest.
    pub digest: Digest,
    /// The signer certificate's subject (RFC 4514).
    pub signer: String,
}

/// Verifies that `signature` (a `WIN_CERTIFICATE`'s PKCS#7 bytes) is a valid signature of
/// image digest `requested` by a signer `trusted` names, at time `now` (module docs).
pub fn verify(
    signature: &[u8],
    requested: &Digest,
    trusted: &TrustedSigners,
    now: SystemTime,
) -> Result<Vouched, ImageSignatureError> {
    if signature.len() > MAX_SIGNATURE {
        return Err(ImageSignatureError::TooLarge(signature.len()));
    }
    let parsed = authenticode::AuthenticodeSignature::from_bytes(signature)
        .map_err(|e| ImageSignatureError::Malformed(format!("{e:?}")))?;
    check_image_digest(&parsed, requested)?;
    let signer_info = parsed.signer_info();
    let hash = digest_alg(&signer_info.digest_alg.oid)?;
    check_attributes(signer_info, &parsed, hash)?;
    let certs = carried_certificates(signature)?;
    let signer = signer_certificate(signer_info, &certs)?;
    check_signature(signer_info, signer, hash)?;
    let subject = signer.tbs_certificate.subject.to_string();
    check_trust(signer, &certs, trusted, now).map_err(|e| match e {
        Trust::Chain(source) => ImageSignatureError::Untrusted {
            subject: subject.clone(),
            source,
        },
        Trust::Usage(why) => ImageSignatureError::NotCodeSigning(why),
    })?;
    Ok(Vouched {
        digest: *requested,
        signer: subject,
    })
}

/// The image digest the signature carries, next to the one asked for.
fn check_image_digest(
    parsed: &authenticode::AuthenticodeSignature,
    requested: &Digest,
) -> Result<(), ImageSignatureError> {
    let alg = parsed.digest_algorithm().oid;
    let signed_alg = digest_alg(&alg).ok();
    if signed_alg != Some(requested.alg()) {
        return Err(ImageSignatureError::DigestAlgorithm {
            signed: alg.to_string(),
            bank: requested.alg(),
        });
    }
    if parsed.digest() != requested.as_bytes() {
        return Err(ImageSignatureError::DigestMismatch {
            signed: hex::encode(parsed.digest()),
            requested: requested.to_hex(),
        });
    }
    Ok(())
}

/// SHA-2 digest algorithms by OID; SHA-1 and anything else refused.
fn digest_alg(oid: &ObjectIdentifier) -> Result<HashAlg, ImageSignatureError> {
    match *oid {
        rfc5912::ID_SHA_256 => Ok(HashAlg::Sha256),
        rfc5912::ID_SHA_384 => Ok(HashAlg::Sha384),
        rfc5912::ID_SHA_512 => Ok(HashAlg::Sha512),
        other => Err(ImageSignatureError::Algorithm(other.to_string())),
    }
}

/// The one value of attribute `oid`, as DER.
fn attribute<'a>(
    attrs: &'a cms::signed_data::SignedAttributes,
    oid: ObjectIdentifier,
    name: &'static str,
) -> Result<&'a der::Any, ImageSignatureError> {
    let mut found = attrs.iter().filter(|a| a.oid == oid);
    let attr = found.next().ok_or(ImageSignatureError::Attributes(name))?;
    if found.next().is_some() || attr.values.len() != 1 {
        return Err(ImageSignatureError::Attributes(
            "an attribute appears twice or has several values",
        ));
    }
    attr.values
        .iter()
        .next()
        .ok_or(ImageSignatureError::Attributes(name))
}

/// The signer's signed attributes; Authenticode requires them (they carry the digest).
fn signed_attributes(
    signer_info: &cms::signed_data::SignerInfo,
) -> Result<&cms::signed_data::SignedAttributes, ImageSignatureError> {
    signer_info
        .signed_attrs
        .as_ref()
        .ok_or(ImageSignatureError::Attributes("absent"))
}

/// contentType is SpcIndirectDataContent and messageDigest hashes the signed content.
fn check_attributes(
    signer_info: &cms::signed_data::SignerInfo,
    parsed: &authenticode::AuthenticodeSignature,
    hash: HashAlg,
) -> Result<(), ImageSignatureError> {
    let attrs = signed_attributes(signer_info)?;
    let content_type = attribute(
        attrs,
        const_oid::db::rfc6268::ID_CONTENT_TYPE,
        "no contentType",
    )?
    .decode_as::<ObjectIdentifier>()
    .map_err(|_| ImageSignatureError::Attributes("contentType is not an OID"))?;
    if content_type != authenticode::SPC_INDIRECT_DATA_OBJID {
        return Err(ImageSignatureError::Attributes(
            "contentType is not SpcIndirectDataContent",
        ));
    }
    let md = attribute(
        attrs,
        const_oid::db::rfc6268::ID_MESSAGE_DIGEST,
        "no messageDigest",
    )?
    .decode_as::<der::asn1::OctetString>()
    .map_err(|_| ImageSignatureError::Attributes("messageDigest is not an OCTET STRING"))?;
    // PKCS#7 (as Authenticode uses it) digests the content's value without its SEQUENCE
    // tag and length.
    let content = parsed
        .encapsulated_content()
        .ok_or(ImageSignatureError::Attributes("no signed content"))?;
    if md.as_bytes() != hash.hash(content).as_bytes() {
        return Err(ImageSignatureError::MessageDigestMismatch);
    }
    Ok(())
}

/// The certificates the SignedData carries (others, such as attribute certificates, are
/// skipped).
fn carried_certificates(
    signature: &[u8],
) -> Result<Vec<x509_cert::Certificate>, ImageSignatureError> {
    let malformed = |e: der::Error| ImageSignatureError::Malformed(e.to_string());
    let mut reader = der::SliceReader::new(signature).map_err(malformed)?;
    let info = cms::content_info::ContentInfo::decode(&mut reader).map_err(malformed)?;
    let sd = info
        .content
        .decode_as::<cms::signed_data::SignedData>()
        .map_err(malformed)?;
    let certs = sd.certificates.map(|c| c.0.into_vec()).unwrap_or_default();
    Ok(certs
        .into_iter()
        .filter_map(|c| match c {
            cms::cert::CertificateChoices::Certificate(c) => Some(c),
            _ => None,
        })
        .take(MAX_CARRIED_CERTS)
        .collect())
}

/// The certificate the signer info names by issuer and serial number.
fn signer_certificate<'a>(
    signer_info: &cms::signed_data::SignerInfo,
    certs: &'a [x509_cert::Certificate],
) -> Result<&'a x509_cert::Certificate, ImageSignatureError> {
    let cms::signed_data::SignerIdentifier::IssuerAndSerialNumber(id) = &signer_info.sid else {
        return Err(ImageSignatureError::SignerCertificateMissing);
    };
    certs
        .iter()
        .find(|c| {
            c.tbs_certificate.issuer == id.issuer
                && c.tbs_certificate.serial_number == id.serial_number
        })
        .ok_or(ImageSignatureError::SignerCertificateMissing)
}

/// The signer's signature over the DER of the signed attributes (as a SET OF).
fn check_signature(
    signer_info: &cms::signed_data::SignerInfo,
    signer: &x509_cert::Certificate,
    hash: HashAlg,
) -> Result<(), ImageSignatureError> {
    use aws_lc_rs::signature::{self as sig, VerificationAlgorithm};
    let attrs = signed_attributes(signer_info)?;
    let signed = attrs
        .to_der()
        .map_err(|e| ImageSignatureError::Malformed(e.to_string()))?;
    let der = signer
        .to_der()
        .map_err(|e| ImageSignatureError::Malformed(e.to_string()))?;
    let cert = Certificate::from_der(&der)
        .map_err(|e| ImageSignatureError::Malformed(format!("signer certificate: {e}")))?;
    let alg_oid = signer_info.signature_algorithm.oid;
    let rsa = [
        rfc5912::RSA_ENCRYPTION,
        rfc5912::SHA_256_WITH_RSA_ENCRYPTION,
        rfc5912::SHA_384_WITH_RSA_ENCRYPTION,
        rfc5912::SHA_512_WITH_RSA_ENCRYPTION,
    ];
    let ecdsa = [
        rfc5912::ECDSA_WITH_SHA_256,
        rfc5912::ECDSA_WITH_SHA_384,
        rfc5912::ECDSA_WITH_SHA_512,
    ];
    let (alg, key): (&'static dyn VerificationAlgorithm, &[u8]) = match cert.signing_key() {
        crate::ekcert::SigningKey::Rsa(k) if rsa.contains(&alg_oid) => (
            match hash {
                HashAlg::Sha256 => &sig::RSA_PKCS1_2048_8192_SHA256,
                HashAlg::Sha384 => &sig::RSA_PKCS1_2048_8192_SHA384,
                _ => &sig::RSA_PKCS1_2048_8192_SHA512,
            },
            k,
        ),
        crate::ekcert::SigningKey::P256(k) if ecdsa.contains(&alg_oid) => (
            match hash {
                HashAlg::Sha256 => &sig::ECDSA_P256_SHA256_ASN1,
                HashAlg::Sha384 => &sig::ECDSA_P256_SHA384_ASN1,
                _ => &sig::ECDSA_P256_SHA512_ASN1,
            },
            k,
        ),
        crate::ekcert::SigningKey::P384(k) if ecdsa.contains(&alg_oid) => (
            match hash {
                HashAlg::Sha256 => &sig::ECDSA_P384_SHA256_ASN1,
                HashAlg::Sha384 => &sig::ECDSA_P384_SHA384_ASN1,
                _ => &sig::ECDSA_P384_SHA512_ASN1,
            },
            k,
        ),
        _ => return Err(ImageSignatureError::Algorithm(alg_oid.to_string())),
    };
    sig::UnparsedPublicKey::new(alg, key)
        .verify(&signed, signer_info.signature.as_bytes())
        .map_err(|_| ImageSignatureError::BadSignature)
}

/// Why the signer is not trusted.
enum Trust {
    Chain(EkCertError),
    Usage(&'static str),
}

/// The signer is trusted itself or chains to a trusted certificate, and may sign code.
fn check_trust(
    signer: &x509_cert::Certificate,
    carried: &[x509_cert::Certificate],
    trusted: &TrustedSigners,
    now: SystemTime,
) -> Result<(), Trust> {
    let der = |c: &x509_cert::Certificate| {
        c.to_der()
            .map_err(|_| Trust::Chain(EkCertError::UntrustedIssuer))
    };
    let leaf = der(signer)?;
    let others = carried
        .iter()
        .filter(|c| *c != signer)
        .map(der)
        .collect::<Result<Vec<_>, _>>()?;
    let cert = if trusted.ders.contains(&leaf) {
        crate::ekcert::check_directly_trusted(&leaf, now).map_err(Trust::Chain)?
    } else {
        let refs: Vec<&[u8]> = others.iter().map(Vec::as_slice).collect();
        trusted
            .store
            .verify_chain(&leaf, &refs, now)
            .map_err(Trust::Chain)?
            .certificate()
            .clone()
    };
    if cert.is_ca_certificate() {
        return Err(Trust::Usage("it is a CA (basicConstraints cA=TRUE)"));
    }
    if !cert.allows_code_signing() {
        return Err(Trust::Usage(
            "its extKeyUsage, keyUsage or Netscape type does not allow code signing",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
