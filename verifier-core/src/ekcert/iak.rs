//! IAK certificates (TCG "TPM 2.0 Keys for Device Identity and Attestation"): an OEM CA's
//! statement that a key is the Initial Attestation Key of one device's TPM, used as the AK's
//! proof instead of a MakeCredential round.
//!
//! What a verified IAK certificate establishes, and what it does not:
//! - The chain leads to an operator-configured OEM CA ([`TrustStore`], the same path
//!   building and link checks as EK certificates).
//! - The leaf is an end-entity certificate whose extKeyUsage includes
//!   tcg-kp-AIKCertificate (2.23.133.8.3). An IDevID certificate (same CA, same device, but
//!   an *unrestricted* signing key that would sign any digest, forged quotes included) does
//!   not carry it and is refused: that purpose is what says the CA checked a restricted key.
//! - Its public key is exactly the presented AK's, and that AK passed [`AkPublic`]'s checks
//!   (restricted, sign, fixedTPM, fixedParent, sensitiveDataOrigin). The certificate
//!   certifies the key, not the TPMT_PUBLIC's attribute bits: that the attributes are true
//!   rests on the OEM having verified them at provisioning (the spec's procedure, through
//!   the EK), which is what trusting that CA means.
//! - The subjectAltName's hardwareModuleName (RFC 4108 otherName) names the device, with
//!   hwType tcg TPM 2.0 (2.23.133.1.2): [`IakIdentity`]. Whether that device is the machine
//!   a caller means is the caller's decision (the server compares it with the identity the
//!   operator bound to the enrollment).
//! - Not checked: revocation (no CRLs), the hwSerialNum's derivation from the EK
//!   certificate (OEMs follow one of two methods; neither is verifiable without the EK
//!   certificate and the OEM's choice), certificatePolicies.

use std::time::SystemTime;

use super::cert::{Certificate, HardwareModuleName};
use super::{der, key_matches, EkCertError, TrustStore, VerifiedChain};
use crate::quote::AkPublic;

/// tcg-kp-AIKCertificate (2.23.133.8.3): the extKeyUsage of an IAK (and LAK) certificate.
pub(crate) const OID_TCG_KP_AIK_CERTIFICATE: &[u8] = &[0x67, 0x81, 0x05, 0x08, 0x03];
/// tcg hwType TPM 2.0 (2.23.133.1.2), the hardwareModuleName type of a TPM 2.0 device.
const OID_HW_TYPE_TPM2: &[u8] = &[0x67, 0x81, 0x05, 0x01, 0x02];

/// Why an IAK certificate was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IakCertError {
    /// The chain to the OEM CA (or the certificate itself) failed a check.
    #[error("IAK certificate chain: {0}")]
    Chain(#[from] EkCertError),
    /// The IAK certificate says it is a CA.
    #[error("IAK certificate has basicConstraints cA=TRUE")]
    LeafIsCa,
    /// The certificate lacks the tcg-kp-AIKCertificate purpose (an IDevID or another
    /// certificate of the same CA).
    #[error("the certificate's extKeyUsage does not include tcg-kp-AIKCertificate (2.23.133.8.3): not an IAK certificate (an IDevID certificate certifies an unrestricted key)")]
    NotIakCertificate,
    /// The certificate's public key is not the presented AK's.
    #[error("IAK certificate public key does not match the presented AK")]
    KeyMismatch,
    /// No hardwareModuleName in the subjectAltName: the certificate names no device.
    #[error("IAK certificate has no hardwareModuleName (subjectAltName otherName 1.3.6.1.5.5.7.8.4) naming the device")]
    NoHardwareModuleName,
    /// The hardwareModuleName's hwType is not TPM 2.0.
    #[error("IAK certificate hardwareModuleName hwType is {found}, not TPM 2.0 (2.23.133.1.2)")]
    NotTpm2 {
        /// The hwType found, dotted.
        found: String,
    },
}

/// The device an IAK (or IDevID) certificate names: its hardwareModuleName and, when the
/// subject has one, the X.520 serialNumber. Two certificates name the same device when
/// their hardwareModuleNames are equal ([`IakIdentity::key`]); the subject serial is for
/// people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IakIdentity {
    hw_type: String,
    hw_serial: Vec<u8>,
    subject_serial: Option<String>,
}

impl IakIdentity {
    fn from_certificate(cert: &Certificate) -> Result<Self, IakCertError> {
        let HardwareModuleName { hw_type, hw_serial } = cert
            .hardware_module_name
            .as_ref()
            .ok_or(IakCertError::NoHardwareModuleName)?;
        if hw_type.as_slice() != OID_HW_TYPE_TPM2 {
            return Err(IakCertError::NotTpm2 {
                found: der::oid_to_string(hw_type),
            });
        }
        Ok(Self {
            hw_type: der::oid_to_string(hw_type),
            hw_serial: hw_serial.clone(),
            subject_serial: cert.subject_serial_number(),
        })
    }

    /// The identity as one stable string, `<hwType>:<hex hwSerialNum>`: what an enrollment
    /// is bound to and compared with.
    pub fn key(&self) -> String {
        format!("{}:{}", self.hw_type, hex::encode(&self.hw_serial))
    }

    /// hwSerialNum as the issuer wrote it (often ASCII).
    pub fn hw_serial(&self) -> &[u8] {
        &self.hw_serial
    }

    /// The subject's serialNumber attribute (the device serial number), when present.
    pub fn subject_serial(&self) -> Option<&str> {
        self.subject_serial.as_deref()
    }
}

impl std::fmt::Display for IakIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.key())?;
        if let Some(s) = &self.subject_serial {
            write!(f, " (subject serialNumber {s:?})")?;
        }
        Ok(())
    }
}

/// An IAK certificate that chains to the OEM trust store, is an IAK certificate, certifies
/// the given AK and names a TPM 2.0 device. Only [`verify_iak_certificate`] constructs it.
#[derive(Debug, Clone)]
pub struct VerifiedIak {
    chain: VerifiedChain,
    identity: IakIdentity,
}

impl VerifiedIak {
    /// The device the certificate names.
    pub fn identity(&self) -> &IakIdentity {
        &self.identity
    }
    /// The verified chain.
    pub fn chain(&self) -> &VerifiedChain {
        &self.chain
    }
}

/// Verifies an IAK certificate for `ak`: chain to `trust` through the untrusted
/// `intermediates` at `now`, end entity, tcg-kp-AIKCertificate, public key equal to the AK,
/// hardwareModuleName of a TPM 2.0 device (module docs: what this proves and does not).
/// Checks in that order, so a refusal names the first that failed.
pub fn verify_iak_certificate(
    cert_der: &[u8],
    intermediates: &[&[u8]],
    trust: &TrustStore,
    ak: &AkPublic,
    now: SystemTime,
) -> Result<VerifiedIak, IakCertError> {
    let chain = trust.verify_chain(cert_der, intermediates, now)?;
    let leaf = chain.certificate();
    if leaf.is_ca() {
        return Err(IakCertError::LeafIsCa);
    }
    let is_iak = leaf.extended_key_usage.as_ref().is_some_and(|eku| {
        eku.iter()
            .any(|o| o.as_slice() == OID_TCG_KP_AIK_CERTIFICATE)
    });
    if !is_iak {
        return Err(IakCertError::NotIakCertificate);
    }
    if !key_matches(&leaf.key, ak.public()) {
        return Err(IakCertError::KeyMismatch);
    }
    let identity = IakIdentity::from_certificate(leaf)?;
    Ok(VerifiedIak { chain, identity })
}

/// The device identity a certificate (DER) names, without any trust decision: for the
/// operator binding an enrollment to the IAK certificate it was given.
pub fn iak_identity(cert_der: &[u8]) -> Result<IakIdentity, IakCertError> {
    let cert = Certificate::from_der(cert_der).map_err(EkCertError::from)?;
    IakIdentity::from_certificate(&cert)
}
