//! X.509 certificate structure (RFC 5280 section 4.1), decoded just far enough to check an
//! EK certificate chain: names as raw DER, validity, key, signature and the extensions that
//! matter for EK certificates (TCG EK Credential Profile section 3).

use super::der::{self, Tlv, BIT_STRING, OCTET_STRING, SEQUENCE};
use super::time;
use crate::wire::{HashAlg, Reader};
use crate::ParseError;

const CERT: &str = "Certificate";

// Object identifiers, as DER content bytes.
pub(crate) const OID_RSA_ENCRYPTION: &[u8] =
    &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
pub(crate) const OID_EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
pub(crate) const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
pub(crate) const OID_P384: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];
const OID_RSA_PSS: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0a];
const OID_MGF1: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x08];
const OID_SHA1_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x05];
const OID_SHA256_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b];
const OID_SHA384_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0c];
const OID_SHA512_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d];
const OID_ECDSA_SHA1: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x01];
const OID_ECDSA_SHA256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02];
const OID_ECDSA_SHA384: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03];
const OID_ECDSA_SHA512: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x04];
const OID_SHA1: &[u8] = &[0x2b, 0x0e, 0x03, 0x02, 0x1a];
const OID_SHA256: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01];
const OID_SHA384: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02];
const OID_SHA512: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03];

const EXT_SUBJECT_DIRECTORY_ATTRIBUTES: &[u8] = &[0x55, 0x1d, 0x09];
const EXT_SUBJECT_KEY_ID: &[u8] = &[0x55, 0x1d, 0x0e];
const EXT_KEY_USAGE: &[u8] = &[0x55, 0x1d, 0x0f];
const EXT_SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1d, 0x11];
const EXT_BASIC_CONSTRAINTS: &[u8] = &[0x55, 0x1d, 0x13];
const EXT_CRL_DISTRIBUTION_POINTS: &[u8] = &[0x55, 0x1d, 0x1f];
const EXT_CERTIFICATE_POLICIES: &[u8] = &[0x55, 0x1d, 0x20];
const EXT_AUTHORITY_KEY_ID: &[u8] = &[0x55, 0x1d, 0x23];
const EXT_EXTENDED_KEY_USAGE: &[u8] = &[0x55, 0x1d, 0x25];
const EXT_AUTHORITY_INFO_ACCESS: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x01, 0x01];
/// Netscape certificate type (2.16.840.1.113730.1.1), a legacy usage extension Debian's
/// Secure Boot CA marks critical.
const EXT_NETSCAPE_CERT_TYPE: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x86, 0xf8, 0x42, 0x01, 0x01];
/// tcg-kp-EKCertificate (2.23.133.8.1).
pub(crate) const OID_TCG_KP_EK_CERTIFICATE: &[u8] = &[0x67, 0x81, 0x05, 0x08, 0x01];
const OID_TPM_MANUFACTURER: &[u8] = &[0x67, 0x81, 0x05, 0x02, 0x01];
const OID_TPM_MODEL: &[u8] = &[0x67, 0x81, 0x05, 0x02, 0x02];
const OID_TPM_VERSION: &[u8] = &[0x67, 0x81, 0x05, 0x02, 0x03];
/// id-on-hardwareModuleName (1.3.6.1.5.5.7.8.4, RFC 4108): the otherName the TCG device
/// identity certificates (IDevID, IAK) name their device with.
const OID_ON_HARDWARE_MODULE_NAME: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x08, 0x04];
/// X.520 serialNumber (2.5.4.5): the device serial number in an IDevID/IAK subject.
const OID_AT_SERIAL_NUMBER: &[u8] = &[0x55, 0x04, 0x05];

/// keyUsage keyCertSign (bit 5).
const KU_KEY_CERT_SIGN: u16 = 1 << (15 - 5);

/// A signature algorithm of a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SigAlg {
    RsaPkcs1(HashAlg),
    /// RSASSA-PSS with MGF1 of the same hash and salt length = hash length.
    RsaPss(HashAlg),
    Ecdsa(HashAlg),
    /// Anything else (including PSS with other parameters): refused when used.
    Unsupported(Vec<u8>),
}

/// The subject public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Key {
    /// `rsa_public_key` is the RSAPublicKey DER (what aws-lc verifies with).
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
        rsa_public_key: Vec<u8>,
    },
    /// `curve` is the named-curve OID; `point` the SEC1 encoding.
    Ec { curve: Vec<u8>, point: Vec<u8> },
    /// Another algorithm (its OID).
    Other(Vec<u8>),
}

/// TPM identification from the subjectAltName directoryName (TCG EK Credential Profile).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TpmInfo {
    /// TPMManufacturer (2.23.133.2.1), e.g. `id:474F4F47`.
    pub manufacturer: Option<String>,
    /// TPMModel (2.23.133.2.2).
    pub model: Option<String>,
    /// TPMVersion (2.23.133.2.3).
    pub version: Option<String>,
}

/// The hardwareModuleName of a subjectAltName otherName (RFC 4108): which kind of hardware
/// module (`hw_type`, an OID's DER content bytes) and its serial number, as the issuer wrote
/// them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HardwareModuleName {
    pub(crate) hw_type: Vec<u8>,
    pub(crate) hw_serial: Vec<u8>,
}

/// A certificate's public key, for verifying a signature made with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigningKey<'a> {
    /// RSA: the RSAPublicKey DER.
    Rsa(&'a [u8]),
    /// NIST P-256: the SEC1 point.
    P256(&'a [u8]),
    /// NIST P-384: the SEC1 point.
    P384(&'a [u8]),
    /// Another algorithm.
    Other,
}

/// A decoded certificate. Only the crate constructs it, from DER.
#[derive(Debug, Clone)]
pub struct Certificate {
    pub(crate) der: Vec<u8>,
    pub(crate) tbs: Vec<u8>,
    pub(crate) sig_alg: SigAlg,
    pub(crate) tbs_sig_alg_raw: Vec<u8>,
    pub(crate) outer_sig_alg_raw: Vec<u8>,
    pub(crate) signature: Vec<u8>,
    pub(crate) issuer: Vec<u8>,
    pub(crate) subject: Vec<u8>,
    pub(crate) not_before: i64,
    pub(crate) not_after: i64,
    pub(crate) key: Key,
    /// (cA, pathLenConstraint) when basicConstraints is present.
    pub(crate) basic_constraints: Option<(bool, Option<u32>)>,
    /// keyUsage bits, bit 0 (digitalSignature) as the most significant of 16.
    pub(crate) key_usage: Option<u16>,
    pub(crate) extended_key_usage: Option<Vec<Vec<u8>>>,
    pub(crate) tpm_info: Option<TpmInfo>,
    /// The first hardwareModuleName otherName of the subjectAltName, when present.
    pub(crate) hardware_module_name: Option<HardwareModuleName>,
    /// Netscape certificate type bits (first byte, sslClient = 0x80), when present.
    pub(crate) netscape_cert_type: Option<u8>,
    /// OID of the first critical extension we do not process.
    pub(crate) unknown_critical: Option<Vec<u8>>,
    /// OID of an extension that appears twice (RFC 5280 forbids it).
    pub(crate) duplicate_extension: Option<Vec<u8>>,
    /// Non-critical extensions this module does not process, as (OID, extnValue contents):
    /// kept for callers that read vendor extensions (AMD's VCEK TCB and chip id).
    pub(crate) other_extensions: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Certificate {
    /// Decodes one DER certificate, refusing trailing bytes.
    pub fn from_der(der_bytes: &[u8]) -> Result<Self, ParseError> {
        let mut outer = Reader::new(CERT, der_bytes);
        let mut cert = der::sequence(&mut outer, "Certificate")?;
        outer.finish()?;
        let tbs_tlv = der::expect(&mut cert, SEQUENCE, "tbsCertificate")?;
        let outer_alg = der::expect(&mut cert, SEQUENCE, "signatureAlgorithm")?;
        let signature = der::bit_string(&mut cert, "signatureValue")?.to_vec();
        cert.finish()?;

        let mut tbs = tbs_tlv.content.clone();
        let version = match der::optional(&mut tbs, 0xa0, "version")? {
            Some(mut v) => {
                let n = der::small_uint(&mut v.content, "version")?;
                v.content.finish()?;
                n
            }
            None => 0,
        };
        if version > 2 {
            return Err(tbs.invalid("version", u64::from(version)));
        }
        der::expect(&mut tbs, der::INTEGER, "serialNumber")?;
        let tbs_alg = der::expect(&mut tbs, SEQUENCE, "signature")?;
        let issuer = der::expect(&mut tbs, SEQUENCE, "issuer")?.raw.to_vec();
        let mut validity = der::sequence(&mut tbs, "validity")?;
        let not_before = time::read(&mut validity, "notBefore")?;
        let not_after = time::read(&mut validity, "notAfter")?;
        validity.finish()?;
        let subject = der::expect(&mut tbs, SEQUENCE, "subject")?.raw.to_vec();
        let key = read_spki(&mut tbs)?;
        // issuerUniqueID [1] and subjectUniqueID [2] (v2/v3 only; ignored).
        der::optional(&mut tbs, 0x81, "issuerUniqueID")?;
        der::optional(&mut tbs, 0x82, "subjectUniqueID")?;
        let mut cert = Self {
            der: der_bytes.to_vec(),
            tbs: tbs_tlv.raw.to_vec(),
            sig_alg: read_sig_alg(outer_alg.clone())?,
            tbs_sig_alg_raw: tbs_alg.raw.to_vec(),
            outer_sig_alg_raw: outer_alg.raw.to_vec(),
            signature,
            issuer,
            subject,
            not_before,
            not_after,
            key,
            basic_constraints: None,
            key_usage: None,
            extended_key_usage: None,
            tpm_info: None,
            hardware_module_name: None,
            netscape_cert_type: None,
            unknown_critical: None,
            duplicate_extension: None,
            other_extensions: Vec::new(),
        };
        if let Some(mut ext) = der::optional(&mut tbs, 0xa3, "extensions")? {
            if version != 2 {
                return Err(tbs.invalid("version", u64::from(version)));
            }
            let mut list = der::sequence(&mut ext.content, "extensions")?;
            ext.content.finish()?;
            let mut seen: Vec<Vec<u8>> = Vec::new();
            while !list.is_empty() {
                let mut e = der::sequence(&mut list, "Extension")?;
                let oid = der::oid(&mut e, "extnID")?;
                let critical = match der::optional(&mut e, der::BOOLEAN, "critical")? {
                    Some(t) => der::boolean(&mut Reader::new(CERT, t.raw), "critical")?,
                    None => false,
                };
                let mut value = der::expect(&mut e, OCTET_STRING, "extnValue")?.content;
                e.finish()?;
                if seen.iter().any(|s| s.as_slice() == oid) {
                    cert.duplicate_extension.get_or_insert_with(|| oid.to_vec());
                }
                seen.push(oid.to_vec());
                cert.read_extension(oid, critical, &mut value)?;
            }
        }
        tbs.finish()?;
        Ok(cert)
    }

    fn read_extension(
        &mut self,
        oid: &[u8],
        critical: bool,
        value: &mut Reader<'_>,
    ) -> Result<(), ParseError> {
        match oid {
            EXT_BASIC_CONSTRAINTS => {
                let mut bc = der::sequence(value, "basicConstraints")?;
                let ca = match der::optional(&mut bc, der::BOOLEAN, "cA")? {
                    Some(t) => der::boolean(&mut Reader::new(CERT, t.raw), "cA")?,
                    None => false,
                };
                let path_len = if bc.is_empty() {
                    None
                } else {
                    Some(der::small_uint(&mut bc, "pathLenConstraint")?)
                };
                bc.finish()?;
                self.basic_constraints = Some((ca, path_len));
            }
            EXT_KEY_USAGE => {
                // A BIT STRING whose unused bits may be non-zero: read it by hand.
                let mut c = der::expect(value, BIT_STRING, "keyUsage")?.content;
                let _unused = c.u8("keyUsage")?;
                let bytes = c.rest();
                let hi = bytes.first().copied().unwrap_or(0);
                let lo = bytes.get(1).copied().unwrap_or(0);
                self.key_usage = Some(u16::from_be_bytes([hi, lo]));
            }
            EXT_EXTENDED_KEY_USAGE => {
                let mut seq = der::sequence(value, "extKeyUsage")?;
                let mut oids = Vec::new();
                while !seq.is_empty() {
                    oids.push(der::oid(&mut seq, "KeyPurposeId")?.to_vec());
                }
                self.extended_key_usage = Some(oids);
            }
            // Legacy usage bits: recorded; a code signer must have objectSigning when present
            // (`allows_code_signing`); on a CA they are not enforced (the CA is one the
            // operator named), as for certificatePolicies below.
            EXT_NETSCAPE_CERT_TYPE => {
                let mut c = der::expect(value, BIT_STRING, "netscapeCertType")?.content;
                let _unused = c.u8("netscapeCertType")?;
                self.netscape_cert_type = Some(c.rest().first().copied().unwrap_or(0));
            }
            EXT_SUBJECT_ALT_NAME => {
                let (info, hw) = read_tpm_san(value)?;
                self.tpm_info = Some(info);
                self.hardware_module_name = hw;
            }
            // Recognized and deliberately not enforced: identifiers, revocation pointers,
            // the TPM security attributes (subjectDirectoryAttributes) and policies. A
            // critical certificatePolicies is accepted as "any policy": we apply no policy
            // constraints, which is what the trust store's operator opted into.
            EXT_SUBJECT_DIRECTORY_ATTRIBUTES
            | EXT_SUBJECT_KEY_ID
            | EXT_AUTHORITY_KEY_ID
            | EXT_CRL_DISTRIBUTION_POINTS
            | EXT_CERTIFICATE_POLICIES
            | EXT_AUTHORITY_INFO_ACCESS => {}
            other if critical => {
                self.unknown_critical.get_or_insert_with(|| other.to_vec());
            }
            other => self
                .other_extensions
                .push((other.to_vec(), value.rest().to_vec())),
        }
        Ok(())
    }

    /// keyUsage allows keyCertSign (an absent keyUsage allows everything, RFC 5280 4.2.1.3).
    pub(crate) fn may_sign_certs(&self) -> bool {
        self.key_usage.is_none_or(|ku| ku & KU_KEY_CERT_SIGN != 0)
    }

    /// The TPM manufacturer, model and version from the subjectAltName, when present.
    pub fn tpm_info(&self) -> Option<&TpmInfo> {
        self.tpm_info.as_ref()
    }

    /// The subject's X.520 serialNumber attribute (2.5.4.5; where IDevID and IAK
    /// certificates carry the device's serial number), when present. Text is taken as UTF-8
    /// with invalid sequences replaced: it is compared and shown, never interpreted.
    pub fn subject_serial_number(&self) -> Option<String> {
        name_attribute(&self.subject, OID_AT_SERIAL_NUMBER)
            .ok()
            .flatten()
    }

    /// The certificate's DER encoding.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// notBefore and notAfter as seconds since the Unix epoch.
    pub fn validity(&self) -> (i64, i64) {
        (self.not_before, self.not_after)
    }

    /// The contents (extnValue) of the non-critical extension `oid` (DER content bytes of
    /// the OID), when present and not one this module processes itself.
    pub(crate) fn extension(&self, oid: &[u8]) -> Option<&[u8]> {
        self.other_extensions
            .iter()
            .find(|(o, _)| o.as_slice() == oid)
            .map(|(_, v)| v.as_slice())
    }

    /// The SEC1 point of a NIST P-384 subject key, if that is the key.
    pub(crate) fn p384_point(&self) -> Option<&[u8]> {
        match &self.key {
            Key::Ec { curve, point } if curve.as_slice() == OID_P384 => Some(point),
            _ => None,
        }
    }

    /// True when the certificate says it is a CA (basicConstraints cA=TRUE).
    pub(crate) fn is_ca(&self) -> bool {
        matches!(self.basic_constraints, Some((true, _)))
    }

    /// The subject key in the form a signature check needs, or `Other`.
    pub fn signing_key(&self) -> SigningKey<'_> {
        match &self.key {
            Key::Rsa { rsa_public_key, .. } => SigningKey::Rsa(rsa_public_key),
            Key::Ec { curve, point } if curve.as_slice() == OID_P256 => SigningKey::P256(point),
            Key::Ec { curve, point } if curve.as_slice() == OID_P384 => SigningKey::P384(point),
            _ => SigningKey::Other,
        }
    }

    /// True when the certificate says it is a CA (basicConstraints cA=TRUE).
    pub fn is_ca_certificate(&self) -> bool {
        self.is_ca()
    }

    /// True when the certificate may sign code: its extKeyUsage, when present, lists
    /// id-kp-codeSigning or anyExtendedKeyUsage, its keyUsage, when present, has
    /// digitalSignature, and its Netscape certificate type, when present, objectSigning.
    pub fn allows_code_signing(&self) -> bool {
        const CODE_SIGNING: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x03];
        const ANY: &[u8] = &[0x55, 0x1d, 0x25, 0x00];
        const KU_DIGITAL_SIGNATURE: u16 = 0x8000;
        const NS_OBJECT_SIGNING: u8 = 0x10;
        let eku = self.extended_key_usage.as_ref().is_none_or(|eku| {
            eku.iter()
                .any(|o| o.as_slice() == CODE_SIGNING || o.as_slice() == ANY)
        });
        let ku = self
            .key_usage
            .is_none_or(|ku| ku & KU_DIGITAL_SIGNATURE != 0);
        let ns = self
            .netscape_cert_type
            .is_none_or(|t| t & NS_OBJECT_SIGNING != 0);
        eku && ku && ns
    }

    /// True when issuer and subject names are identical (a root or self-issued CA).
    pub fn is_self_issued(&self) -> bool {
        self.issuer == self.subject
    }
}

fn read_spki(tbs: &mut Reader<'_>) -> Result<Key, ParseError> {
    let mut spki = der::sequence(tbs, "subjectPublicKeyInfo")?;
    let mut alg = der::sequence(&mut spki, "subjectPublicKeyInfo.algorithm")?;
    let alg_oid = der::oid(&mut alg, "subjectPublicKeyInfo.algorithm")?;
    let key = if alg_oid == OID_RSA_ENCRYPTION {
        der::optional(&mut alg, der::NULL, "parameters")?;
        alg.finish()?;
        let bits = der::bit_string(&mut spki, "subjectPublicKey")?;
        let mut outer = Reader::new("RSAPublicKey", bits);
        let mut rsa = der::sequence(&mut outer, "RSAPublicKey")?;
        outer.finish()?;
        let n = der::uint(&mut rsa, "modulus")?.to_vec();
        let e = der::uint(&mut rsa, "publicExponent")?.to_vec();
        rsa.finish()?;
        Key::Rsa {
            n,
            e,
            rsa_public_key: bits.to_vec(),
        }
    } else if alg_oid == OID_EC_PUBLIC_KEY {
        let curve = der::oid(&mut alg, "namedCurve")?.to_vec();
        alg.finish()?;
        let point = der::bit_string(&mut spki, "subjectPublicKey")?.to_vec();
        Key::Ec { curve, point }
    } else {
        let oid = alg_oid.to_vec();
        alg.rest();
        spki.rest();
        Key::Other(oid)
    };
    spki.finish()?;
    Ok(key)
}

fn hash_from_oid(oid: &[u8]) -> Option<HashAlg> {
    match oid {
        OID_SHA1 => Some(HashAlg::Sha1),
        OID_SHA256 => Some(HashAlg::Sha256),
        OID_SHA384 => Some(HashAlg::Sha384),
        OID_SHA512 => Some(HashAlg::Sha512),
        _ => None,
    }
}

fn read_sig_alg(tlv: Tlv<'_>) -> Result<SigAlg, ParseError> {
    let mut alg = tlv.content;
    let oid = der::oid(&mut alg, "signatureAlgorithm")?;
    let simple = match oid {
        OID_SHA1_RSA => Some(SigAlg::RsaPkcs1(HashAlg::Sha1)),
        OID_SHA256_RSA => Some(SigAlg::RsaPkcs1(HashAlg::Sha256)),
        OID_SHA384_RSA => Some(SigAlg::RsaPkcs1(HashAlg::Sha384)),
        OID_SHA512_RSA => Some(SigAlg::RsaPkcs1(HashAlg::Sha512)),
        OID_ECDSA_SHA1 => Some(SigAlg::Ecdsa(HashAlg::Sha1)),
        OID_ECDSA_SHA256 => Some(SigAlg::Ecdsa(HashAlg::Sha256)),
        OID_ECDSA_SHA384 => Some(SigAlg::Ecdsa(HashAlg::Sha384)),
        OID_ECDSA_SHA512 => Some(SigAlg::Ecdsa(HashAlg::Sha512)),
        _ => None,
    };
    if let Some(s) = simple {
        // RSA algorithms carry NULL parameters (or none); ECDSA none.
        der::optional(&mut alg, der::NULL, "parameters")?;
        alg.finish()?;
        return Ok(s);
    }
    if oid == OID_RSA_PSS {
        return Ok(read_pss_params(&mut alg)?.unwrap_or_else(|| SigAlg::Unsupported(oid.to_vec())));
    }
    let oid = oid.to_vec();
    alg.rest();
    Ok(SigAlg::Unsupported(oid))
}

/// RSASSA-PSS-params; `None` when they are valid DER but not a combination we verify.
fn read_pss_params(alg: &mut Reader<'_>) -> Result<Option<SigAlg>, ParseError> {
    let mut p = der::sequence(alg, "RSASSA-PSS-params")?;
    if !alg.is_empty() {
        return Err(alg.invalid("RSASSA-PSS-params", 0));
    }
    let mut hash = Some(HashAlg::Sha1);
    if let Some(mut t) = der::optional(&mut p, 0xa0, "hashAlgorithm")? {
        let mut a = der::sequence(&mut t.content, "hashAlgorithm")?;
        hash = hash_from_oid(der::oid(&mut a, "hashAlgorithm")?);
        der::optional(&mut a, der::NULL, "parameters")?;
        a.finish()?;
    }
    let mut mgf_hash = Some(HashAlg::Sha1);
    if let Some(mut t) = der::optional(&mut p, 0xa1, "maskGenAlgorithm")? {
        let mut a = der::sequence(&mut t.content, "maskGenAlgorithm")?;
        if der::oid(&mut a, "maskGenAlgorithm")? != OID_MGF1 {
            return Ok(None);
        }
        let mut h = der::sequence(&mut a, "maskGenAlgorithm.parameters")?;
        mgf_hash = hash_from_oid(der::oid(&mut h, "maskGenAlgorithm.parameters")?);
        der::optional(&mut h, der::NULL, "parameters")?;
    }
    let mut salt = 20;
    if let Some(mut t) = der::optional(&mut p, 0xa2, "saltLength")? {
        salt = der::small_uint(&mut t.content, "saltLength")?;
    }
    if let Some(mut t) = der::optional(&mut p, 0xa3, "trailerField")? {
        if der::small_uint(&mut t.content, "trailerField")? != 1 {
            return Ok(None);
        }
    }
    p.finish()?;
    Ok(match (hash, mgf_hash) {
        (Some(h), Some(m)) if h == m && usize::try_from(salt).is_ok_and(|s| s == h.size()) => {
            Some(SigAlg::RsaPss(h))
        }
        _ => None,
    })
}

/// subjectAltName: collects the TCG TPM attributes of any directoryName and the first
/// hardwareModuleName otherName; other names are allowed and ignored.
fn read_tpm_san(
    value: &mut Reader<'_>,
) -> Result<(TpmInfo, Option<HardwareModuleName>), ParseError> {
    let mut info = TpmInfo::default();
    let mut hw = None;
    let mut names = der::sequence(value, "subjectAltName")?;
    while !names.is_empty() {
        let name = der::any(&mut names, "GeneralName")?;
        if name.tag == 0xa0 {
            let module = read_other_name(name.content)?;
            if hw.is_none() {
                hw = module;
            }
            continue;
        }
        if name.tag != 0xa4 {
            continue;
        }
        let mut dn_outer = name.content;
        let mut rdns = der::sequence(&mut dn_outer, "directoryName")?;
        while !rdns.is_empty() {
            let mut set = der::expect(&mut rdns, der::SET, "RelativeDistinguishedName")?.content;
            while !set.is_empty() {
                let mut atv = der::sequence(&mut set, "AttributeTypeAndValue")?;
                let oid = der::oid(&mut atv, "type")?;
                let text = der::any(&mut atv, "value")?.content.rest();
                let text = String::from_utf8_lossy(text).into_owned();
                match oid {
                    OID_TPM_MANUFACTURER => info.manufacturer = Some(text),
                    OID_TPM_MODEL => info.model = Some(text),
                    OID_TPM_VERSION => info.version = Some(text),
                    _ => {}
                }
            }
        }
    }
    Ok((info, hw))
}

/// An otherName (`type-id OID, [0] EXPLICIT value`): the hardwareModuleName when it is one
/// (`SEQUENCE { hwType OID, hwSerialNum OCTET STRING }`), `None` for any other type.
fn read_other_name(mut other: Reader<'_>) -> Result<Option<HardwareModuleName>, ParseError> {
    let type_id = der::oid(&mut other, "otherName.type-id")?;
    let mut explicit = der::expect(&mut other, 0xa0, "otherName.value")?.content;
    other.finish()?;
    if type_id != OID_ON_HARDWARE_MODULE_NAME {
        return Ok(None);
    }
    let mut seq = der::sequence(&mut explicit, "HardwareModuleName")?;
    explicit.finish()?;
    let hw_type = der::oid(&mut seq, "hwType")?.to_vec();
    let hw_serial = der::expect(&mut seq, OCTET_STRING, "hwSerialNum")?
        .content
        .rest()
        .to_vec();
    seq.finish()?;
    Ok(Some(HardwareModuleName { hw_type, hw_serial }))
}

/// The value of the first attribute `oid` in a DER Name (a SEQUENCE of SETs of
/// AttributeTypeAndValue), as text.
fn name_attribute(name: &[u8], oid: &[u8]) -> Result<Option<String>, ParseError> {
    let mut outer = Reader::new("Name", name);
    let mut rdns = der::sequence(&mut outer, "Name")?;
    while !rdns.is_empty() {
        let mut set = der::expect(&mut rdns, der::SET, "RelativeDistinguishedName")?.content;
        while !set.is_empty() {
            let mut atv = der::sequence(&mut set, "AttributeTypeAndValue")?;
            let t = der::oid(&mut atv, "type")?;
            let text = der::any(&mut atv, "value")?.content.rest();
            if t == oid {
                return Ok(Some(String::from_utf8_lossy(text).into_owned()));
            }
        }
    }
    Ok(None)
}
