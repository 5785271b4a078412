//! Registration and credential activation (binding the AK to the EK).

use serde::{Deserialize, Serialize};

use super::common::{AgentId, Id};
use super::{Validate, MAX_EK_CERT, MAX_EK_CHAIN, MAX_ENCRYPTED_SECRET, MAX_ID_OBJECT, MAX_PUBLIC};
use crate::proto::{Base64Bytes, ProtoError};

/// Length of the activation proof (HMAC-SHA256).
pub const PROOF_LEN: usize = 32;
/// Domain separation of the activation proof.
const PROOF_LABEL: &[u8] = b"unlock/v1 activate";

/// `POST /v1/register`: the agent's TPM keys, sent on every boot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    /// The EK's marshalled TPMT_PUBLIC (no TPM2B size prefix); its SHA-256 is the agent id.
    pub ek_pub: Base64Bytes,
    /// The EK certificate (DER), when the TPM has one in NV. Required unless the server is
    /// configured for TOFU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ek_cert: Option<Base64Bytes>,
    /// CA certificates (DER) between the EK certificate and the vendor root, as the TPM
    /// stores them in the EK certificate chain NV indices (TCG EK Credential Profile,
    /// 0x01c00100 onwards). Untrusted: the server uses them only to build a path to a root
    /// it trusts. Absent (and not sent) when the TPM has none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ek_chain: Vec<Base64Bytes>,
    /// The AK's marshalled TPMT_PUBLIC (no size prefix).
    pub ak_pub: Base64Bytes,
}

impl Validate for RegisterRequest {
    fn validate(&self) -> Result<(), ProtoError> {
        self.ek_pub.non_empty("ek_pub", MAX_PUBLIC)?;
        if let Some(cert) = &self.ek_cert {
            cert.non_empty("ek_cert", MAX_EK_CERT)?;
        }
        if self.ek_chain.len() > MAX_EK_CHAIN {
            return Err(ProtoError::Invalid {
                field: "ek_chain",
                reason: "more than 8 certificates",
            });
        }
        for cert in &self.ek_chain {
            cert.non_empty("ek_chain", MAX_EK_CERT)?;
        }
        self.ak_pub.non_empty("ak_pub", MAX_PUBLIC)?;
        Ok(())
    }
}

/// Most certificates an IAK registration may carry (the IAK certificate and its
/// intermediates): OEM chains are two or three deep.
pub const MAX_IAK_CHAIN: usize = 4;

/// `POST /v1/register/iak`: the IAK path. The AK is the device's IAK, and its proof is the
/// OEM's IAK certificate (TCG "TPM 2.0 Keys for Device Identity and Attestation") instead
/// of a MakeCredential round: the server checks the certificate and pins the AK at once,
/// answering like [`ActivateResponse`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterIakRequest {
    /// The EK's marshalled TPMT_PUBLIC: names the enrollment (its SHA-256 is the agent id);
    /// on this path it proves nothing (no credential is made for it).
    pub ek_pub: Base64Bytes,
    /// The IAK's marshalled TPMT_PUBLIC (no size prefix): the AK every quote is signed with.
    pub ak_pub: Base64Bytes,
    /// The IAK certificate (DER).
    pub iak_cert: Base64Bytes,
    /// Intermediate CA certificates (DER, any order) towards the OEM CA the server trusts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub iak_chain: Vec<Base64Bytes>,
}

impl Validate for RegisterIakRequest {
    fn validate(&self) -> Result<(), ProtoError> {
        self.ek_pub.non_empty("ek_pub", MAX_PUBLIC)?;
        self.ak_pub.non_empty("ak_pub", MAX_PUBLIC)?;
        self.iak_cert.non_empty("iak_cert", MAX_EK_CERT)?;
        if self.iak_chain.len() >= MAX_IAK_CHAIN {
            return Err(ProtoError::Invalid {
                field: "iak_chain",
                reason: "more intermediates than an OEM chain has",
            });
        }
        for c in &self.iak_chain {
            c.non_empty("iak_chain", MAX_EK_CERT)?;
        }
        Ok(())
    }
}

/// Largest HCL report (the Azure vTPM's NV index holds 2600 bytes).
pub const MAX_HCL_REPORT: usize = 8 * 1024;
/// Largest VCEK certificate (DER; AMD's are about 1.3 KiB).
pub const MAX_VCEK: usize = 8 * 1024;

/// `POST /v1/register/snp-vtpm`: registration of a confidential VM's vTPM whose AK the CPU's
/// attestation report vouches for (evidence kind `azure-snp-vtpm`), instead of an EK
/// certificate and MakeCredential. Answered with [`ActivateResponse`]: the AK is pinned at
/// once, since the report (checked by the role) is what proves it, not a credential round.
///
/// The agent only reads and sends bytes: the HCL report from the vTPM's NV index
/// `0x01400001` and the VCEK certificate it was given (Azure's instance metadata or AMD's
/// KDS). Both are untrusted until the role has verified them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnpVtpmRegisterRequest {
    /// The vTPM EK's marshalled TPMT_PUBLIC; its SHA-256 is the agent id, and its key must
    /// be the HCL runtime data's `HCLEkPub`.
    pub ek_pub: Base64Bytes,
    /// The vTPM AK's marshalled TPMT_PUBLIC (the key at persistent handle `0x81000003`);
    /// its key must be the HCL runtime data's `HCLAkPub`.
    pub ak_pub: Base64Bytes,
    /// The HCL report as read from the NV index (trailing padding included).
    pub hcl_report: Base64Bytes,
    /// The chip's VCEK certificate (DER).
    pub vcek: Base64Bytes,
}

impl Validate for SnpVtpmRegisterRequest {
    fn validate(&self) -> Result<(), ProtoError> {
        self.ek_pub.non_empty("ek_pub", MAX_PUBLIC)?;
        self.ak_pub.non_empty("ak_pub", MAX_PUBLIC)?;
        self.hcl_report.non_empty("hcl_report", MAX_HCL_REPORT)?;
        self.vcek.non_empty("vcek", MAX_VCEK)?;
        Ok(())
    }
}

/// The MakeCredential challenge: only the TPM holding the EK can recover the secret, and it
/// releases it only for an AK with the given name loaded in that TPM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterResponse {
    /// Names this registration in [`ActivateRequest`].
    pub registration_id: Id,
    /// TPM2B_ID_OBJECT contents (no size prefix) for TPM2_ActivateCredential.
    pub credential_blob: Base64Bytes,
    /// TPM2B_ENCRYPTED_SECRET contents (no size prefix) for TPM2_ActivateCredential.
    pub encrypted_secret: Base64Bytes,
}

impl Validate for RegisterResponse {
    fn validate(&self) -> Result<(), ProtoError> {
        self.credential_blob
            .non_empty("credential_blob", MAX_ID_OBJECT)?;
        self.encrypted_secret
            .non_empty("encrypted_secret", MAX_ENCRYPTED_SECRET)?;
        Ok(())
    }
}

/// `POST /v1/activate`: proof that the TPM recovered the secret.
///
/// The agent sends `HMAC-SHA256(key = secret, "unlock/v1 activate" || registration_id)`
/// ([`activation_proof`]) rather than the secret itself: the secret never leaves the
/// machine, a proof for one registration is useless for another, and a TLS-terminating
/// proxy or a request log learns nothing reusable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActivateRequest {
    /// From [`RegisterResponse`].
    pub registration_id: Id,
    /// [`activation_proof`] (32 bytes).
    pub proof: Base64Bytes,
}

impl Validate for ActivateRequest {
    fn validate(&self) -> Result<(), ProtoError> {
        self.proof.exact("proof", PROOF_LEN)?;
        Ok(())
    }
}

/// The AK is bound to the EK; the agent may now ask for challenges.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActivateResponse {
    /// The agent id the server registered (the agent checks it equals its own).
    pub agent_id: AgentId,
}

impl Validate for ActivateResponse {
    fn validate(&self) -> Result<(), ProtoError> {
        Ok(())
    }
}

/// The activation proof for `secret` (the credential ActivateCredential returned).
pub fn activation_proof(secret: &[u8], registration_id: &Id) -> [u8; PROOF_LEN] {
    let key = crate::crypto::hmac::Key::new(crate::crypto::hmac::HMAC_SHA256, secret);
    let mut ctx = crate::crypto::hmac::Context::with_key(&key);
    ctx.update(PROOF_LABEL);
    ctx.update(registration_id.as_str().as_bytes());
    <[u8; PROOF_LEN]>::try_from(ctx.sign().as_ref()).unwrap_or_default()
}

/// Checks a proof in constant time.
pub fn verify_activation_proof(
    secret: &[u8],
    registration_id: &Id,
    proof: &[u8],
) -> Result<(), ProtoError> {
    let key = crate::crypto::hmac::Key::new(crate::crypto::hmac::HMAC_SHA256, secret);
    let mut msg = Vec::with_capacity(PROOF_LABEL.len() + registration_id.as_str().len());
    msg.extend_from_slice(PROOF_LABEL);
    msg.extend_from_slice(registration_id.as_str().as_bytes());
    crate::crypto::hmac::verify(&key, &msg, proof).map_err(|_| ProtoError::Invalid {
        field: "proof",
        reason: "does not prove knowledge of the credential secret",
    })
}
