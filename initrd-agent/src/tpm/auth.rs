//! How each TPM command is authorized, and the templates of the keys the agent makes.
//!
//! Every key the agent uses has the empty authValue, and no command carries a secret in
//! either direction that a bus observer could use: the disk key arrives sealed to NK, a
//! software key that never enters the TPM. So the agent uses no HMAC sessions and no
//! parameter encryption (an unsalted, unbound session's key derives from nonces that cross
//! the bus in clear, so its "encryption" would hide nothing anyway):
//!
//! | command | authorization |
//! |---|---|
//! | CreatePrimary (EK, AK), NV_Read (EK certificate), Quote, PCR_Extend, EvictControl | password session (TPM_RS_PW), empty password |
//! | Create / Load (AK under the EK), ActivateCredential (the EK) | EK policy session: PolicySecret(TPM_RH_ENDORSEMENT) with the empty password, plus PolicyOR for the high-range templates |
//! | ActivateCredential (the AK) | password session |
//!
//! See docs/threat-model.md ("TPM sessions") for what this does and does not protect.

use std::io::Read;

use verifier_core::tpm2::{
    self, Auth, Command, CommandCode, ALG_ECDSA, ALG_NULL, RH_ENDORSEMENT, RH_NULL, SE_POLICY,
};
use verifier_core::wire::{HashAlg, Writer};

use super::{EkKind, Tpm, TpmError};

/// TPM_ALG_RSA, TPM_ALG_ECC, TPM_ALG_AES, TPM_ALG_CFB.
const ALG_RSA: u16 = 0x0001;
const ALG_ECC: u16 = 0x0023;
const ALG_AES: u16 = 0x0006;
const ALG_CFB: u16 = 0x0043;
/// TPM_ECC_NIST_P256, TPM_ECC_NIST_P384.
const ECC_NIST_P256: u16 = 0x0003;
const ECC_NIST_P384: u16 = 0x0004;

/// TPMA_OBJECT bits.
const FIXED_TPM: u32 = 1 << 1;
const FIXED_PARENT: u32 = 1 << 4;
const SENSITIVE_DATA_ORIGIN: u32 = 1 << 5;
const USER_WITH_AUTH: u32 = 1 << 6;
const ADMIN_WITH_POLICY: u32 = 1 << 7;
const NO_DA: u32 = 1 << 10;
const RESTRICTED: u32 = 1 << 16;
const DECRYPT: u32 = 1 << 17;
const SIGN_ENCRYPT: u32 = 1 << 18;

/// The objectAttributes of the TCG default EK templates (0x000300b2).
const EK_ATTRIBUTES: u32 =
    FIXED_TPM | FIXED_PARENT | SENSITIVE_DATA_ORIGIN | ADMIN_WITH_POLICY | RESTRICTED | DECRYPT;

/// "PolicyA" of the TCG EK Credential Profile with SHA-256: PolicySecret(TPM_RH_ENDORSEMENT),
/// the authPolicy of the low-range templates (checked against
/// [`tpm2::policy_secret_digest`] in the tests).
pub(super) const POLICY_A_SHA256: [u8; 32] = [
    0x83, 0x71, 0x97, 0x67, 0x44, 0x84, 0xb3, 0xf8, 0x1a, 0x90, 0xcc, 0x8d, 0x46, 0xa5, 0xd7, 0x24,
    0xfd, 0x52, 0xd7, 0x6e, 0x06, 0x52, 0x0b, 0x64, 0xf2, 0xa1, 0xda, 0x1b, 0x33, 0x14, 0x69, 0xaa,
];
/// "PolicyC" of the TCG EK Credential Profile with SHA-384 (the PolicyAuthorizeNV branch of
/// the high-range templates, which the agent never satisfies but PolicyOR must list).
pub(super) const POLICY_C_SHA384: [u8; 48] = [
    0xd6, 0x03, 0x2c, 0xe6, 0x1f, 0x2f, 0xb3, 0xc2, 0x40, 0xeb, 0x3c, 0xf6, 0xa3, 0x32, 0x37, 0xef,
    0x2b, 0x6a, 0x16, 0xf4, 0x29, 0x3c, 0x22, 0xb4, 0x55, 0xe2, 0x61, 0xcf, 0xfd, 0x21, 0x7a, 0xd5,
    0xb4, 0x94, 0x7c, 0x2d, 0x73, 0xe6, 0x30, 0x05, 0xee, 0xd2, 0xdc, 0x2b, 0x35, 0x93, 0xd1, 0x65,
];

/// The authPolicy of the high-range SHA-384 templates: PolicyOR(PolicyA, PolicyC), as
/// provisioning tools (swtpm_setup, tpm2-tss) instantiate it.
pub(super) fn policy_b_sha384() -> Vec<u8> {
    let a = tpm2::policy_secret_digest(HashAlg::Sha384, &[0u8; 48], RH_ENDORSEMENT);
    tpm2::policy_or_digest(HashAlg::Sha384, &[&a, &POLICY_C_SHA384])
}

fn write_aes_cfb(w: &mut Writer, bits: u16) {
    w.u16(ALG_AES).u16(bits).u16(ALG_CFB);
}

/// The TCG default EK template of `kind` (TPMT_PUBLIC), byte for byte what the EK
/// certificate's key was created from.
pub(super) fn ek_template(kind: EkKind) -> Vec<u8> {
    let mut w = Writer::new();
    match kind {
        EkKind::Rsa2048 => {
            w.u16(ALG_RSA)
                .u16(HashAlg::Sha256.to_tpm())
                .u32(EK_ATTRIBUTES);
            w.tpm2b(&POLICY_A_SHA256);
            write_aes_cfb(&mut w, 128);
            // scheme NULL, 2048 bits, default exponent, unique: 256 zero bytes.
            w.u16(ALG_NULL).u16(2048).u32(0).tpm2b(&[0u8; 256]);
        }
        EkKind::EccP256 => {
            w.u16(ALG_ECC)
                .u16(HashAlg::Sha256.to_tpm())
                .u32(EK_ATTRIBUTES);
            w.tpm2b(&POLICY_A_SHA256);
            write_aes_cfb(&mut w, 128);
            // scheme NULL, curve, kdf NULL, unique: two 32-byte zero coordinates.
            w.u16(ALG_NULL).u16(ECC_NIST_P256).u16(ALG_NULL);
            w.tpm2b(&[0u8; 32]).tpm2b(&[0u8; 32]);
        }
        EkKind::EccP384 => {
            // The high range sets userWithAuth and leaves unique empty.
            w.u16(ALG_ECC)
                .u16(HashAlg::Sha384.to_tpm())
                .u32(EK_ATTRIBUTES | USER_WITH_AUTH);
            w.tpm2b(&policy_b_sha384());
            write_aes_cfb(&mut w, 256);
            w.u16(ALG_NULL).u16(ECC_NIST_P384).u16(ALG_NULL);
            w.tpm2b(&[]).tpm2b(&[]);
        }
        EkKind::Rsa3072 => {
            // Template H-6: like H-3 (SHA-384 name and policy, AES-256-CFB,
            // userWithAuth, empty unique), with a 3072-bit modulus and the default exponent.
            w.u16(ALG_RSA)
                .u16(HashAlg::Sha384.to_tpm())
                .u32(EK_ATTRIBUTES | USER_WITH_AUTH);
            w.tpm2b(&policy_b_sha384());
            write_aes_cfb(&mut w, 256);
            w.u16(ALG_NULL).u16(3072).u32(0).tpm2b(&[]);
        }
    }
    w.into_vec()
}

/// The AK template: ECC NIST P-256, ECDSA-SHA256, SHA-256 name, restricted signing key,
/// fixedTPM, fixedParent, sensitiveDataOrigin, userWithAuth (what the server's AK checks
/// require), and noDA, with an empty unique field. The AK's authValue is empty, so
/// dictionary-attack protection guards nothing; without noDA every boot that used the AK
/// and then lost power without TPM2_Shutdown (a crash, `poweroff -f`, a VM killed) counts as
/// a failed authorization, and after a few such boots the TPM refuses ActivateCredential in
/// lockout mode. A primary AK is derived from this template, so it must not change: the
/// server pinned the name of the key it yields.
pub(super) fn ak_template() -> Vec<u8> {
    let attrs = FIXED_TPM
        | FIXED_PARENT
        | SENSITIVE_DATA_ORIGIN
        | USER_WITH_AUTH
        | NO_DA
        | RESTRICTED
        | SIGN_ENCRYPT;
    let mut w = Writer::new();
    w.u16(ALG_ECC).u16(HashAlg::Sha256.to_tpm()).u32(attrs);
    w.tpm2b(&[]);
    w.u16(ALG_NULL); // symmetric
    w.u16(ALG_ECDSA).u16(HashAlg::Sha256.to_tpm());
    w.u16(ECC_NIST_P256).u16(ALG_NULL);
    w.tpm2b(&[]).tpm2b(&[]);
    w.into_vec()
}

/// The IAK template of [`super::Tpm::provision_iak`]: the AK template with the unique
/// field's x set to `IAK`, so the endorsement seed yields another key than the agent's own
/// AK. This project's stand-in for an OEM's IAK (tests and labs), not a TCG template.
pub(super) fn iak_template() -> Vec<u8> {
    let mut t = ak_template();
    // The last four bytes are unique.x and unique.y, both empty TPM2Bs.
    t.truncate(t.len().saturating_sub(4));
    let mut w = Writer::new();
    w.tpm2b(b"IAK").tpm2b(&[]);
    t.extend_from_slice(w.as_slice());
    t
}

/// A policy session started for the EK's authPolicy.
#[derive(Debug)]
pub(super) struct PolicySession {
    pub(super) handle: u32,
    kind: EkKind,
    nonce: Vec<u8>,
}

impl PolicySession {
    /// The authorization entry for a command this session authorizes.
    pub(super) fn auth(&self, keep: bool) -> Auth {
        Auth::policy(self.handle, self.nonce.clone(), keep)
    }
}

/// A caller nonce of `len` bytes. It protects nothing here (no HMAC is computed), but the
/// TPM requires one of at least 16 bytes for StartAuthSession.
fn nonce(len: usize) -> Result<Vec<u8>, TpmError> {
    let mut buf = vec![0u8; len];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .map_err(|_| TpmError::BadInput {
            field: "nonceCaller",
            reason: "cannot read /dev/urandom",
        })?;
    Ok(buf)
}

impl Tpm {
    /// Starts a policy session with the EK's name algorithm and satisfies the EK's
    /// authPolicy in it. The caller flushes it (or lets the TPM flush it by clearing
    /// continueSession on its last use).
    pub(super) fn ek_policy_session(&mut self, kind: EkKind) -> Result<PolicySession, TpmError> {
        let alg = if kind.high_range() {
            HashAlg::Sha384
        } else {
            HashAlg::Sha256
        };
        let nonce = nonce(alg.size())?;
        let mut c = Command::new(CommandCode::StartAuthSession)
            .handle(RH_NULL)
            .handle(RH_NULL);
        c.params()
            .tpm2b(&nonce)
            .tpm2b(&[])
            .u8(SE_POLICY)
            .u16(ALG_NULL)
            .u16(alg.to_tpm());
        let handle = self.run("StartAuthSession (EK policy)", &c, |h, p| {
            tpm2::start_auth_session_response(p)?;
            Ok(h)
        })?;
        let handle = handle.ok_or(TpmError::BadOutput {
            what: "StartAuthSession",
            reason: "the TPM returned no session",
        })?;
        let session = PolicySession {
            handle,
            kind,
            nonce,
        };
        if let Err(e) = self.satisfy_ek_policy(&session) {
            self.flush(handle);
            return Err(e);
        }
        Ok(session)
    }

    /// PolicySecret(TPM_RH_ENDORSEMENT) with the empty password, then for the high-range
    /// templates PolicyOR(PolicyA, PolicyC): (re)satisfies the EK policy in `session` (a
    /// policy session's digest starts over after every command it authorizes).
    pub(super) fn satisfy_ek_policy(&mut self, session: &PolicySession) -> Result<(), TpmError> {
        let mut c = Command::new(CommandCode::PolicySecret)
            .handle(RH_ENDORSEMENT)
            .handle(session.handle)
            .auth(Auth::password());
        c.params().tpm2b(&[]).tpm2b(&[]).tpm2b(&[]).u32(0);
        self.run("PolicySecret (endorsement)", &c, |_, p| {
            tpm2::policy_secret_response(p)
        })?;
        if session.kind.high_range() {
            let a = tpm2::policy_secret_digest(HashAlg::Sha384, &[0u8; 48], RH_ENDORSEMENT);
            let mut c = Command::new(CommandCode::PolicyOr).handle(session.handle);
            c.params().u32(2).tpm2b(&a).tpm2b(&POLICY_C_SHA384);
            self.run("PolicyOR (EK policy)", &c, |_, p| tpm2::empty_response(p))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use verifier_core::wire::Public;

    #[test]
    fn policy_a_is_policy_secret_of_the_endorsement_hierarchy() {
        assert_eq!(
            tpm2::policy_secret_digest(HashAlg::Sha256, &[0u8; 32], RH_ENDORSEMENT),
            POLICY_A_SHA256
        );
    }

    #[test]
    fn high_range_policy_is_the_profile_value() {
        // PolicyB_SHA384 of the TCG EK Credential Profile (B.4).
        let expected: [u8; 48] = [
            0xb2, 0x6e, 0x7d, 0x28, 0xd1, 0x1a, 0x50, 0xbc, 0x53, 0xd8, 0x82, 0xbc, 0xf5, 0xfd,
            0x3a, 0x1a, 0x07, 0x41, 0x48, 0xbb, 0x35, 0xd3, 0xb4, 0xe4, 0xcb, 0x1c, 0x0a, 0xd9,
            0xbd, 0xe4, 0x19, 0xca, 0xcb, 0x47, 0xba, 0x09, 0x69, 0x96, 0x46, 0x15, 0x0f, 0x9f,
            0xc0, 0x00, 0xf3, 0xf8, 0x0e, 0x12,
        ];
        assert_eq!(policy_b_sha384(), expected);
    }

    #[test]
    fn templates_parse_with_the_servers_parser() {
        for kind in [
            EkKind::Rsa2048,
            EkKind::EccP256,
            EkKind::EccP384,
            EkKind::Rsa3072,
        ] {
            let t = ek_template(kind);
            let p = Public::parse(&t).unwrap();
            assert_eq!(p.marshal(), t);
        }
        let ak = Public::parse(&ak_template()).unwrap();
        assert_eq!(ak.marshal(), ak_template());
    }
}
