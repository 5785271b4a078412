//! EK certificate checks: the certificate chains to an operator-configured trust store and
//! certifies exactly the EK the agent presented.
//!
//! This is what turns "some TPM key" into "a key inside a genuine TPM of a vendor we trust".
//! The DER decoding is a small bounded reader on top of [`crate::wire::Reader`] (see
//! `der.rs`) rather than a general X.509 crate: EK certificates need a handful of fields,
//! the signed bytes must be taken verbatim from the input (some vendors' encodings do not
//! survive a decode/re-encode round trip), and every length goes through the same bounded
//! cursor as the TPM structures.
//!
//! Policy decisions:
//! - Signatures: RSA PKCS#1 v1.5 and RSA-PSS with SHA-256/384/512, ECDSA P-256/P-384 with
//!   SHA-256/384/512. **SHA-1 signatures are refused**: SHA-1 chosen-prefix collisions are
//!   practical, and a legacy CA signed with SHA-1 can still be used by putting that CA itself
//!   into the trust store (a trust anchor's own signature is never checked).
//! - Time is a parameter (`now`); this crate never reads a clock.
//! - Every certificate of the path is checked for validity at `now`, including the anchor.
//! - Issuers must have basicConstraints cA=TRUE, keyUsage keyCertSign (when keyUsage is
//!   present) and respect pathLenConstraint.
//! - Extensions processed or deliberately accepted: basicConstraints, keyUsage,
//!   extKeyUsage, subjectAltName (the TCG directoryName with TPM manufacturer/model/version,
//!   critical when the subject is empty), subjectDirectoryAttributes, certificatePolicies
//!   (accepted even when critical: no policy constraints are applied), key identifiers,
//!   CRL distribution points, authority information access, and the legacy Netscape
//!   certificate type (recorded; only `image_signature` reads it, for a code signer; Debian's
//!   Secure Boot CA marks it critical). Any other critical extension is refused, naming its
//!   OID.
//! - The leaf must not be a CA; if it has an extKeyUsage it must include
//!   tcg-kp-EKCertificate (2.23.133.8.1). Its key must equal the EK's public key.
//! - Revocation is not checked (no network, no CRLs here).
//!
//! `iak.rs` reuses the chain checks for IAK certificates (TCG device identity), the AK's
//! proof on the registration path without MakeCredential.

mod cert;
pub(crate) mod der;
mod iak;
mod time;
pub(crate) mod verify;

use std::time::{SystemTime, UNIX_EPOCH};

pub use cert::{Certificate, SigningKey, TpmInfo};
pub use iak::{iak_identity, verify_iak_certificate, IakCertError, IakIdentity, VerifiedIak};

use crate::wire::{EccCurve, Public, PublicKey};

/// Why an EK certificate (or a trust-store certificate) was refused.
///
/// `depth` counts from the EK certificate (0) towards the trust anchor.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EkCertError {
    /// Malformed DER.
    #[error("malformed certificate: {0}")]
    Parse(#[from] crate::ParseError),
    /// PEM text without a well-formed CERTIFICATE block.
    #[error("PEM: {0}")]
    Pem(&'static str),
    /// The trust store holds no certificate.
    #[error("the EK trust store is empty: configure the TPM vendors' CA certificates")]
    EmptyTrustStore,
    /// No certificate in the trust store or the supplied intermediates issued this chain.
    #[error(
        "EK certificate chain does not lead to a certificate in the trust store (issuer unknown)"
    )]
    UntrustedIssuer,
    /// A certificate's signature does not verify with its issuer's key.
    #[error("certificate at depth {depth}: signature does not verify with the issuer's key")]
    BadSignature {
        /// Certificate whose signature failed.
        depth: usize,
    },
    /// A certificate is signed with SHA-1, which this verifier refuses.
    #[error("certificate at depth {depth} is signed with SHA-1, which is refused; trust its issuer directly instead")]
    Sha1Signature {
        /// Certificate with the SHA-1 signature.
        depth: usize,
    },
    /// Unsupported signature algorithm.
    #[error("certificate at depth {depth}: unsupported signature algorithm {oid}")]
    UnsupportedSignatureAlgorithm {
        /// Certificate with the algorithm.
        depth: usize,
        /// The algorithm's OID.
        oid: String,
    },
    /// The issuer's key type or curve does not match or is not supported.
    #[error("issuer at depth {depth}: key type or curve unsupported for this signature")]
    UnsupportedKey {
        /// Issuer certificate.
        depth: usize,
    },
    /// tbsCertificate.signature differs from signatureAlgorithm.
    #[error("certificate at depth {depth}: inner and outer signature algorithms differ")]
    SignatureAlgorithmMismatch {
        /// Certificate concerned.
        depth: usize,
    },
    /// Validity starts after `now`.
    #[error("certificate at depth {depth} is not valid before {not_before} (Unix time)")]
    NotYetValid {
        /// Certificate concerned.
        depth: usize,
        /// notBefore, seconds since the Unix epoch.
        not_before: i64,
    },
    /// Validity ended before `now`.
    #[error("certificate at depth {depth} expired at {not_after} (Unix time)")]
    Expired {
        /// Certificate concerned.
        depth: usize,
        /// notAfter, seconds since the Unix epoch.
        not_after: i64,
    },
    /// An issuer lacks basicConstraints cA=TRUE.
    #[error("issuer at depth {depth} is not a CA (basicConstraints cA is not TRUE)")]
    IssuerNotCa {
        /// Issuer certificate.
        depth: usize,
    },
    /// An issuer's keyUsage lacks keyCertSign.
    #[error("issuer at depth {depth}: keyUsage does not allow keyCertSign")]
    IssuerMayNotSignCertificates {
        /// Issuer certificate.
        depth: usize,
    },
    /// Too many CAs below an issuer with a pathLenConstraint.
    #[error("issuer at depth {depth}: pathLenConstraint {path_len} exceeded")]
    PathLenExceeded {
        /// Issuer certificate.
        depth: usize,
        /// Its constraint.
        path_len: u32,
    },
    /// No path found within the depth limit.
    #[error("no chain of at most {max} certificates reaches the trust store")]
    ChainTooLong {
        /// The limit.
        max: usize,
    },
    /// A critical extension we do not process.
    #[error("certificate at depth {depth}: unknown critical extension {oid}")]
    UnknownCriticalExtension {
        /// Certificate concerned.
        depth: usize,
        /// The extension's OID.
        oid: String,
    },
    /// The same extension appears twice.
    #[error("certificate at depth {depth}: extension {oid} appears more than once")]
    DuplicateExtension {
        /// Certificate concerned.
        depth: usize,
        /// The extension's OID.
        oid: String,
    },
    /// The EK certificate says it is a CA.
    #[error("EK certificate has basicConstraints cA=TRUE")]
    LeafIsCa,
    /// The EK certificate's extKeyUsage lacks tcg-kp-EKCertificate.
    #[error("EK certificate extKeyUsage does not include tcg-kp-EKCertificate (2.23.133.8.1)")]
    NotEkCertificate,
    /// The certificate's public key is not the EK's.
    #[error("EK certificate public key does not match the EK public area")]
    KeyMismatch,
    /// More presented intermediates than [`MAX_PRESENTED_INTERMEDIATES`].
    #[error("more than {max} intermediate certificates presented with the EK certificate")]
    TooManyIntermediates {
        /// The limit.
        max: usize,
    },
    /// Path building gave up after checking too many candidate links (a pool of
    /// same-named certificates crafted to make the search exponential).
    #[error("EK certificate path search gave up after {max} candidate issuers")]
    PathSearchExhausted {
        /// The limit.
        max: usize,
    },
    /// `now` is before the Unix epoch.
    #[error("verification time is before 1970")]
    TimeBeforeEpoch,
}

/// CA certificates trusted to issue EK certificates (TPM vendors' roots and intermediates),
/// plus a pool of untrusted vendor intermediates used only to build paths.
///
/// Every anchor is a trust anchor: a path may end at any of them. The intermediates pool is
/// what an operator gets from vendors' download pages (the issuing CAs between a TPM's EK
/// certificate and the vendor root); keeping it apart from the anchors means a mistake in
/// that directory can never make a certificate trusted, only let a path be found.
#[derive(Debug, Clone, Default)]
pub struct TrustStore {
    anchors: Vec<Certificate>,
    intermediates: Vec<Certificate>,
}

impl TrustStore {
    /// An empty store (which verifies nothing).
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one DER certificate.
    pub fn add_der(&mut self, der: &[u8]) -> Result<(), EkCertError> {
        self.anchors.push(Certificate::from_der(der)?);
        Ok(())
    }

    /// Adds every CERTIFICATE block of a PEM bundle (text around the blocks is ignored);
    /// returns how many were added.
    pub fn add_pem(&mut self, pem: &[u8]) -> Result<usize, EkCertError> {
        let ders = pem_certificates(pem)?;
        for d in &ders {
            self.add_der(d)?;
        }
        Ok(ders.len())
    }

    /// Adds one DER certificate to the untrusted intermediates pool (path building only).
    pub fn add_intermediate_der(&mut self, der: &[u8]) -> Result<(), EkCertError> {
        self.intermediates.push(Certificate::from_der(der)?);
        Ok(())
    }

    /// Adds every CERTIFICATE block of a PEM bundle to the intermediates pool; returns how
    /// many were added.
    pub fn add_intermediate_pem(&mut self, pem: &[u8]) -> Result<usize, EkCertError> {
        let ders = pem_certificates(pem)?;
        for d in &ders {
            self.add_intermediate_der(d)?;
        }
        Ok(ders.len())
    }

    /// Number of certificates in the intermediates pool.
    pub fn intermediates_len(&self) -> usize {
        self.intermediates.len()
    }

    /// Number of anchors.
    pub fn len(&self) -> usize {
        self.anchors.len()
    }

    /// True when there is no anchor.
    pub fn is_empty(&self) -> bool {
        self.anchors.is_empty()
    }

    /// Verifies that `cert_der` chains to this store through `intermediates` (DER,
    /// untrusted, any order) and the store's own intermediates pool at time `now`. Checks signatures, validity, CA constraints and
    /// critical extensions; not EK-specific rules (see [`verify_ek_certificate`]).
    pub fn verify_chain(
        &self,
        cert_der: &[u8],
        intermediates: &[&[u8]],
        now: SystemTime,
    ) -> Result<VerifiedChain, EkCertError> {
        if self.anchors.is_empty() {
            return Err(EkCertError::EmptyTrustStore);
        }
        let now = unix_seconds(now)?;
        let leaf = Certificate::from_der(cert_der)?;
        if intermediates.len() > MAX_PRESENTED_INTERMEDIATES {
            return Err(EkCertError::TooManyIntermediates {
                max: MAX_PRESENTED_INTERMEDIATES,
            });
        }
        let mut inter = intermediates
            .iter()
            .map(|d| Certificate::from_der(d))
            .collect::<Result<Vec<_>, _>>()?;
        inter.extend(self.intermediates.iter().cloned());
        let path = verify::build(&leaf, &inter, &self.anchors, now)?;
        let anchor_subject = path
            .certs
            .last()
            .map(|c| c.subject.clone())
            .unwrap_or_default();
        let length = path.certs.len();
        Ok(VerifiedChain {
            leaf,
            length,
            anchor_subject,
        })
    }
}

/// Checks a certificate the caller trusts as it is (no path: it is itself in the caller's
/// trust list): it parses, is valid at `now` and has no critical extension this module does
/// not process. Its own signature is not checked, as for any trust anchor.
pub fn check_directly_trusted(der: &[u8], now: SystemTime) -> Result<Certificate, EkCertError> {
    let cert = Certificate::from_der(der)?;
    verify::check_cert(&cert, 0, unix_seconds(now)?)?;
    Ok(cert)
}

/// Most intermediates a caller may present with one certificate (the TPM's NV chain
/// indices, a fetched chain): real EK chains have one or two CAs below the root.
pub const MAX_PRESENTED_INTERMEDIATES: usize = crate::proto::v1::MAX_EK_CHAIN;

/// A certificate whose chain to the trust store was verified.
#[derive(Debug, Clone)]
pub struct VerifiedChain {
    leaf: Certificate,
    length: usize,
    anchor_subject: Vec<u8>,
}

impl VerifiedChain {
    /// The verified certificate.
    pub fn certificate(&self) -> &Certificate {
        &self.leaf
    }
    /// Number of certificates in the path, leaf and anchor included.
    pub fn length(&self) -> usize {
        self.length
    }
    /// DER Name of the trust anchor the path ends at.
    pub fn anchor_subject(&self) -> &[u8] {
        &self.anchor_subject
    }
}

/// An EK certificate that chains to the trust store and certifies the given EK. Only
/// [`verify_ek_certificate`] constructs it.
#[derive(Debug, Clone)]
pub struct VerifiedEkCert {
    chain: VerifiedChain,
}

impl VerifiedEkCert {
    /// TPM manufacturer, model and version from the certificate, when present.
    pub fn tpm_info(&self) -> Option<&TpmInfo> {
        self.chain.leaf.tpm_info()
    }
    /// The verified chain.
    pub fn chain(&self) -> &VerifiedChain {
        &self.chain
    }
}

/// Verifies an EK certificate: it chains to `trust` (through optional untrusted
/// `intermediates`) at time `now`, is an end-entity EK certificate, and its public key is
/// exactly `ek`'s.
pub fn verify_ek_certificate(
    cert_der: &[u8],
    intermediates: &[&[u8]],
    trust: &TrustStore,
    ek: &Public,
    now: SystemTime,
) -> Result<VerifiedEkCert, EkCertError> {
    let chain = trust.verify_chain(cert_der, intermediates, now)?;
    let leaf = &chain.leaf;
    if matches!(leaf.basic_constraints, Some((true, _))) {
        return Err(EkCertError::LeafIsCa);
    }
    if let Some(eku) = &leaf.extended_key_usage {
        if !eku
            .iter()
            .any(|o| o.as_slice() == cert::OID_TCG_KP_EK_CERTIFICATE)
        {
            return Err(EkCertError::NotEkCertificate);
        }
    }
    if !key_matches(&leaf.key, ek) {
        return Err(EkCertError::KeyMismatch);
    }
    Ok(VerifiedEkCert { chain })
}

/// Compares the certificate key with the EK by value (RSA n and e; ECC curve and point), so
/// that harmless encoding differences (leading zeros) do not matter.
pub(crate) fn key_matches(key: &cert::Key, ek: &Public) -> bool {
    match (key, ek.key()) {
        (cert::Key::Rsa { n, e, .. }, PublicKey::Rsa { modulus, .. }) => {
            let ek_e = ek.rsa_exponent().unwrap_or(0).to_be_bytes();
            strip(n) == strip(modulus) && strip(e) == strip(&ek_e)
        }
        (
            cert::Key::Ec { curve, point },
            PublicKey::Ecc {
                curve: ek_curve, ..
            },
        ) => {
            let want = match ek_curve {
                EccCurve::NistP256 => cert::OID_P256,
                EccCurve::NistP384 => cert::OID_P384,
            };
            curve.as_slice() == want && ek.ecc_point_uncompressed().is_some_and(|p| p == *point)
        }
        _ => false,
    }
}

fn strip(b: &[u8]) -> &[u8] {
    let start = b.iter().position(|&v| v != 0).unwrap_or(b.len());
    b.get(start..).unwrap_or_default()
}

pub(crate) fn unix_seconds(now: SystemTime) -> Result<i64, EkCertError> {
    let secs = now
        .duration_since(UNIX_EPOCH)
        .map_err(|_| EkCertError::TimeBeforeEpoch)?
        .as_secs();
    Ok(i64::try_from(secs).unwrap_or(i64::MAX))
}

/// Largest PEM input accepted (a large vendor bundle is well under this).
const MAX_PEM: usize = 4 << 20;

/// Extracts the DER of every `CERTIFICATE` block of PEM text; other text is ignored.
pub fn pem_certificates(pem: &[u8]) -> Result<Vec<Vec<u8>>, EkCertError> {
    use base64::Engine as _;
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    if pem.len() > MAX_PEM {
        return Err(EkCertError::Pem("input larger than 4 MiB"));
    }
    let text = std::str::from_utf8(pem).map_err(|_| EkCertError::Pem("not UTF-8 text"))?;
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(BEGIN) {
        let body = rest.get(start + BEGIN.len()..).unwrap_or_default();
        let end = body
            .find(END)
            .ok_or(EkCertError::Pem("BEGIN CERTIFICATE without END"))?;
        let b64: String = body
            .get(..end)
            .unwrap_or_default()
            .chars()
            .filter(|c| !c.is_ascii_whitespace())
            .collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|_| EkCertError::Pem("invalid base64 in CERTIFICATE block"))?;
        out.push(der);
        rest = body.get(end + END.len()..).unwrap_or_default();
    }
    if out.is_empty() {
        return Err(EkCertError::Pem("no CERTIFICATE block found"));
    }
    Ok(out)
}
