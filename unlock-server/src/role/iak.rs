//! The IAK registration path (`POST /v1/register/iak`): a machine whose TPM holds an OEM's
//! Initial Attestation Key registers it with its IAK certificate instead of a
//! MakeCredential round, and the AK is pinned at once (no activation).
//!
//! What the role checks, in order (each refusal names its check):
//! 1. the EK names an enrollment of this role (the lookup key only: no credential is made
//!    for it on this path, so it proves nothing about the IAK);
//! 2. the AK passes verifier-core's AK checks (restricted signing key, fixedTPM, ...);
//! 3. an operator bound the enrollment to an IAK identity (`unlockctl iak bind`);
//! 4. the AK is not another AK than the one pinned (a read, before any certificate work);
//! 5. the IAK certificate chains to `--iak-ca`, is an IAK certificate and certifies this
//!    AK ([`verifier_core::ekcert::verify_iak_certificate`]);
//! 6. the device it names is the bound identity.
//!
//! Then the AK is pinned like an activated one; the per-boot challenge and attest steps are
//! unchanged. Refusals before the pin write nothing and are charged to the source.

use std::time::{Duration, UNIX_EPOCH};

use verifier_core::ekcert::verify_iak_certificate;
use verifier_core::proto::v1::{
    ActivateResponse, AgentId, ErrorCode, IakBindRequest, IakBindResponse, RegisterIakRequest,
};
use verifier_core::proto::Base64Bytes;
use verifier_core::quote::AkPublic;
use verifier_core::wire::Public;

use super::RoleService;
use crate::error::ApiError;
use crate::store::StoreError;

impl RoleService {
    /// Registration by IAK certificate (module docs: the checks and their order).
    pub fn register_iak(
        &self,
        req: &RegisterIakRequest,
        now: i64,
    ) -> Result<ActivateResponse, ApiError> {
        let ek_bytes = req.ek_pub.as_bytes();
        Public::parse(ek_bytes)
            .map_err(|e| ApiError::new(ErrorCode::MalformedRequest, format!("ek_pub: {e}")))?;
        let agent_id = AgentId::of_ek(ek_bytes);
        let enrolled = self
            .store
            .enrollment(agent_id.as_str())?
            .is_some_and(|e| e.ek_pub == ek_bytes);
        if !enrolled {
            return Err(ApiError::new(
                ErrorCode::NotEnrolled,
                format!(
                    "agent {agent_id} is not enrolled with the {} role",
                    self.role.as_str()
                ),
            ));
        }
        let ak_public = Public::parse(req.ak_pub.as_bytes())
            .map_err(|e| ApiError::new(ErrorCode::MalformedRequest, format!("ak_pub: {e}")))?;
        let ak = AkPublic::try_from(ak_public)
            .map_err(|e| ApiError::new(ErrorCode::AkNotAcceptable, e.to_string()))?;
        let Some(bound) = self.store.iak_binding(agent_id.as_str())? else {
            return Err(ApiError::new(
                ErrorCode::IakNotBound,
                format!(
                    "agent {agent_id} is not bound to an IAK identity: an operator runs \
                     `unlockctl iak bind {agent_id} --iak-cert FILE`, or the machine registers \
                     with MakeCredential"
                ),
            ));
        };
        self.check_ak_pin(agent_id.as_str(), ak.name())?;
        let trust = &self.settings.iak_trust;
        if trust.is_empty() {
            return Err(ApiError::new(
                ErrorCode::IakCertUntrusted,
                "no OEM CA is configured on the server (--iak-ca), so IAK certificates cannot be checked",
            ));
        }
        let chain: Vec<&[u8]> = req.iak_chain.iter().map(Base64Bytes::as_bytes).collect();
        let at = UNIX_EPOCH + Duration::from_secs(u64::try_from(now).unwrap_or(0));
        let verified = verify_iak_certificate(req.iak_cert.as_bytes(), &chain, trust, &ak, at)
            .map_err(|e| ApiError::new(ErrorCode::IakCertUntrusted, e.to_string()))?;
        let identity = verified.identity();
        if identity.key() != bound {
            tracing::warn!(role = self.role.as_str(), agent_id = %agent_id, presented = %identity, bound = %bound, "IAK certificate of another device");
            return Err(ApiError::new(
                ErrorCode::IakIdentityMismatch,
                format!(
                    "the IAK certificate names device {identity}, but agent {agent_id} is bound to {bound}"
                ),
            ));
        }
        if !self
            .store
            .activate_ak(agent_id.as_str(), ak.name(), req.ak_pub.as_bytes(), now)?
        {
            return Err(super::agent::ak_not_pinned(agent_id.as_str()));
        }
        self.metrics.iak_registration();
        tracing::info!(role = self.role.as_str(), agent_id = %agent_id, device = %identity, "IAK certificate verified; AK pinned without an activation round");
        Ok(ActivateResponse { agent_id })
    }

    /// Admin: binds an enrollment to the device its IAK certificate names.
    pub fn bind_iak(&self, req: &IakBindRequest, now: i64) -> Result<IakBindResponse, ApiError> {
        let agent_id = req.agent_id.as_str();
        self.store
            .bind_iak(agent_id, &req.identity, now)
            .map_err(|e| match e {
                StoreError::NotFound(_) => ApiError::new(
                    ErrorCode::NotEnrolled,
                    format!("agent {agent_id} is not enrolled"),
                ),
                other => ApiError::from(other),
            })?;
        tracing::info!(
            role = self.role.as_str(),
            agent_id,
            identity = %req.identity,
            "enrollment bound to an IAK identity"
        );
        Ok(IakBindResponse {
            agent_id: req.agent_id.clone(),
            identity: req.identity.clone(),
        })
    }
}
