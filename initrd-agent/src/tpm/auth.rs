//! How each TPM command is authorized, chosen per command (VM-NOTES §7).
//!
//! tss-esapi's `execute_with_nullauth_session` starts an unsalted HMAC session with AES
//! parameter encryption for every command. Being unsalted and unbound, its session key is
//! empty, so the encryption hides nothing from someone on the bus; it only costs: in a TCG
//! guest 80-200 ms per command instead of 10-25 ms. The agent therefore uses:
//!
//! | command | authorization |
//! |---|---|
//! | CreatePrimary (EK), NV_Read (EK certificate), Quote, PCR_Extend | password session, empty password |
//! | Create / Load (AK under the EK) | EK policy session (PolicySecret(endorsement), itself authorized by the empty password), no parameter encryption |
//! | ActivateCredential | password for the AK; EK policy session with AES-128-CFB parameter encryption requested (the output is the credential secret) |
//!
//! No secret of the unlock crosses the bus in clear: the disk key arrives sealed to NK, a
//! software key that never enters the TPM.

use tss_esapi::attributes::{ObjectAttributesBuilder, SessionAttributesBuilder};
use tss_esapi::constants::SessionType;
use tss_esapi::handles::{AuthHandle, ObjectHandle, SessionHandle};
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, PublicAlgorithm};
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::interface_types::session_handles::{AuthSession, PolicySession};
use tss_esapi::structures::{
    EccPoint, EccScheme, HashScheme, KeyDerivationFunctionScheme, Public, PublicBuilder,
    PublicEccParametersBuilder, SymmetricDefinition, SymmetricDefinitionObject,
};
use tss_esapi::Context;

use super::{cmd, TpmError};

/// The empty-password session: no HMAC, no parameter encryption.
pub(super) const PASSWORD: Option<AuthSession> = Some(AuthSession::Password);

/// Starts a policy session that satisfies the low-range EK templates' authPolicy
/// (PolicySecret(TPM_RH_ENDORSEMENT), SHA-256). With `encrypt`, AES-128-CFB parameter
/// encryption is requested for the command it authorizes. The caller flushes it.
pub(super) fn ek_policy_session(ctx: &mut Context, encrypt: bool) -> Result<AuthSession, TpmError> {
    let symmetric = if encrypt {
        SymmetricDefinition::AES_128_CFB
    } else {
        SymmetricDefinition::Null
    };
    let session = ctx
        .start_auth_session(
            None,
            None,
            None,
            SessionType::Policy,
            symmetric,
            HashingAlgorithm::Sha256,
        )
        .map_err(cmd("StartAuthSession (EK policy)"))?
        .ok_or(TpmError::BadOutput {
            what: "StartAuthSession",
            reason: "the TPM returned no session",
        })?;
    let result = set_encrypt(ctx, session, encrypt).and_then(|()| satisfy_ek_policy(ctx, session));
    if result.is_err() {
        flush(ctx, session);
    }
    result.map(|()| session)
}

fn set_encrypt(ctx: &mut Context, session: AuthSession, encrypt: bool) -> Result<(), TpmError> {
    if encrypt {
        let (attrs, mask) = SessionAttributesBuilder::new()
            .with_decrypt(true)
            .with_encrypt(true)
            .build();
        ctx.tr_sess_set_attributes(session, attrs, mask)
            .map_err(cmd("TRSess_SetAttributes"))?;
    }
    Ok(())
}

/// PolicySecret(TPM_RH_ENDORSEMENT) with the empty password: (re)satisfies the EK policy in
/// `session` (a policy session's digest starts over after every command it authorizes).
pub(super) fn satisfy_ek_policy(ctx: &mut Context, session: AuthSession) -> Result<(), TpmError> {
    let policy = PolicySession::try_from(session).map_err(cmd("policy session"))?;
    ctx.execute_with_session(PASSWORD, |ctx| {
        ctx.policy_secret(
            policy,
            AuthHandle::Endorsement,
            Default::default(),
            Default::default(),
            Default::default(),
            None,
        )
    })
    .map_err(cmd("PolicySecret (endorsement)"))?;
    Ok(())
}

/// Flushes a session; a leaked session slot would make a later command fail for an
/// unrelated reason, but there is nothing more to do if the flush itself fails.
pub(super) fn flush(ctx: &mut Context, session: AuthSession) {
    let _ = ctx.flush_context(ObjectHandle::from(SessionHandle::from(session)));
}

/// The AK template: ECC NIST P-256, ECDSA-SHA256, SHA-256 name, restricted signing key,
/// fixedTPM, fixedParent, sensitiveDataOrigin, userWithAuth (what the server's AK checks
/// require), and noDA. The AK's authValue is empty, so dictionary-attack protection guards
/// nothing; without noDA every boot that used the AK and then lost power without
/// TPM2_Shutdown (a crash, `poweroff -f`, a VM killed) counts as a failed authorization, and
/// after a few such boots the TPM refuses ActivateCredential in lockout mode.
pub(super) fn ak_template() -> Result<Public, TpmError> {
    let attrs = ObjectAttributesBuilder::new()
        .with_restricted(true)
        .with_user_with_auth(true)
        .with_sign_encrypt(true)
        .with_decrypt(false)
        .with_fixed_tpm(true)
        .with_fixed_parent(true)
        .with_sensitive_data_origin(true)
        .with_no_da(true)
        .build()
        .map_err(cmd("AK attributes"))?;
    let params = PublicEccParametersBuilder::new()
        .with_symmetric(SymmetricDefinitionObject::Null)
        .with_ecc_scheme(EccScheme::EcDsa(HashScheme::new(HashingAlgorithm::Sha256)))
        .with_curve(EccCurve::NistP256)
        .with_key_derivation_function_scheme(KeyDerivationFunctionScheme::Null)
        .build()
        .map_err(cmd("AK ECC parameters"))?;
    PublicBuilder::new()
        .with_public_algorithm(PublicAlgorithm::Ecc)
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attrs)
        .with_ecc_parameters(params)
        .with_ecc_unique_identifier(EccPoint::default())
        .build()
        .map_err(cmd("AK template"))
}
