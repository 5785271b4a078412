//! The challenge round on the wire (evidence kind `test-challenge-round`, TESTS ONLY):
//! verifier-made parameters in the challenge, the attester's answer checked at attest.
//!
//! The parameters are derived from the ticket's nonce under a key derived from the role's
//! master key ([`verifier_core::round`]), so a challenge still writes nothing: the answer is
//! recomputed at attest from the nonce the ticket opens to. A stranger who opens many
//! challenges makes the server seal a few dozen bytes each and store none; the existing
//! challenge limits (per-source throttle, body limits) apply unchanged.
//!
//! The kind exists only on a server started with `--test-attester-key`; without it an
//! enrollment, a challenge or an attestation of this kind is refused with
//! `evidence_kind_disabled`, so a production server cannot be made to accept it.

use aws_lc_rs::hmac;
use verifier_core::attester::{
    Challenge, EvidenceVerifier, TestRoundError, TestRoundEvidence, TestRoundVerifier,
};
use verifier_core::evidence::{Submitted, ValidatedEvidence};
use verifier_core::keysplit::{MasterKey, NkPublic};
use verifier_core::proto::v1::{ErrorCode, EvidenceKind, Role};
use verifier_core::quote::AkPublic;
use verifier_core::round::RoundKey;

use super::RoleService;
use crate::error::ApiError;
use crate::store::NewChallenge;

/// The role's test round: its key and the test attester's public key.
#[derive(Debug)]
pub struct TestRound {
    key: RoundKey,
    attester: NkPublic,
}

impl TestRound {
    /// `HMAC-SHA256(master, "unlock/v1 test challenge round|<role>")` as the round key.
    pub fn derive(master: &MasterKey, role: Role, attester: NkPublic) -> Self {
        let k = hmac::Key::new(hmac::HMAC_SHA256, master.expose_secret());
        let label = format!("unlock/v1 test challenge round|{}", role.as_str());
        let derived = hmac::sign(&k, label.as_bytes());
        let mut bytes = zeroize::Zeroizing::new([0u8; 32]);
        bytes
            .iter_mut()
            .zip(derived.as_ref())
            .for_each(|(o, b)| *o = *b);
        Self {
            key: RoundKey::new(&bytes),
            attester,
        }
    }

    fn verifier<'k>(&'k self, ak: &'k AkPublic) -> TestRoundVerifier<'k> {
        TestRoundVerifier {
            ak,
            key: &self.key,
            attester: &self.attester,
        }
    }
}

/// The refusal for a kind this server was not started to accept.
pub(super) fn disabled(kind: EvidenceKind) -> ApiError {
    ApiError::new(
        ErrorCode::EvidenceKindDisabled,
        format!(
            "evidence kind `{kind}` exists only for tests: this server was not started with \
             --test-attester-key"
        ),
    )
}

impl RoleService {
    fn test_round(&self) -> Result<&TestRound, ApiError> {
        self.test_round
            .as_ref()
            .ok_or_else(|| disabled(EvidenceKind::TestChallengeRound))
    }

    /// Refuses an evidence kind this server does not accept (the test kind without the
    /// test flag).
    pub(super) fn require_kind_enabled(&self, kind: EvidenceKind) -> Result<(), ApiError> {
        if kind == EvidenceKind::TestChallengeRound {
            self.test_round()?;
        }
        Ok(())
    }

    /// The verifier-made parameters for a challenge to an enrollment of `kind`: `None` for
    /// the kinds that need only the nonce.
    /// (What [`TestRoundVerifier`]'s `challenge` makes, without the AK it does not use.)
    pub(super) fn challenge_params(
        &self,
        kind: EvidenceKind,
        nonce: &[u8; 32],
    ) -> Result<Option<Vec<u8>>, ApiError> {
        if !kind.needs_challenge_round() {
            return Ok(None);
        }
        let round = self.test_round()?;
        let params = round
            .key
            .params(&round.attester, nonce)
            .map_err(ApiError::internal)?;
        Ok(Some(params))
    }

    /// The attest-time check of a `test-challenge-round` enrollment: the answer for THIS
    /// challenge's nonce and the submitted quote, then the quote as a TPM quote.
    pub(super) fn validate_round<'a>(
        &self,
        ch: &NewChallenge,
        ak: &AkPublic,
        answer: Option<&'a [u8]>,
        submitted: Submitted<'a>,
    ) -> Result<ValidatedEvidence<'a>, ApiError> {
        let round = self.test_round()?;
        round
            .verifier(ak)
            .verify(
                &Challenge::nonce_only(ch.nonce),
                TestRoundEvidence {
                    answer,
                    tpm: submitted,
                },
            )
            .map_err(|e| round_error(&e))
    }
}

/// A refusal of test-round evidence, charged to the agent only when its AK signed the
/// refused quote (a wrong answer anyone could send).
fn round_error(e: &TestRoundError) -> ApiError {
    if e.code() == ErrorCode::Internal {
        return ApiError::internal(e);
    }
    let refusal = ApiError::new(e.code(), e.to_string());
    if e.signed_by_ak() {
        refusal.by_agent()
    } else {
        refusal
    }
}
