//! The challenge round, agent side: a challenge's verifier-made parameters go to the
//! attester of the agent's evidence kind, and its answer into the attest request.
//!
//! The TPM and SEV-SNP vTPM kinds need no round: their challenges carry no parameters, and
//! a challenge that does is refused here with a clear error rather than attested without an
//! answer. An attester that needs a round (IBM Secure Execution, not built) implements
//! [`ChallengeAnswerer`] and is returned by [`answerer_for`] for its kind; the flow is
//! otherwise unchanged. The protocol's test kind (`test-challenge-round`) has no attester in
//! the agent: its answerer lives in the server's tests, which drive the protocol directly.

use verifier_core::proto::v1::{ChallengeResponse, EvidenceKind};
use verifier_core::proto::Base64Bytes;
use verifier_core::round::RoundError;

use super::error::AnswerError;

/// An attester that answers a challenge round's verifier-made parameters.
pub trait ChallengeAnswerer {
    /// The answer to `params` for this challenge's `nonce`, bound to `quote` (the
    /// TPMS_ATTEST the attest request carries).
    fn answer(&self, params: &[u8], nonce: &[u8; 32], quote: &[u8]) -> Result<Vec<u8>, RoundError>;
}

/// The attester that answers `kind`'s challenge parameters in this agent: none of the
/// kinds built into the agent needs one.
pub fn answerer_for(_kind: EvidenceKind) -> Option<&'static dyn ChallengeAnswerer> {
    None
}

/// The answer to send with `ch`'s attest request: `None` when the challenge carries no
/// parameters; refused when it does and `answerer` is absent or fails.
pub fn answer(
    kind: EvidenceKind,
    answerer: Option<&dyn ChallengeAnswerer>,
    ch: &ChallengeResponse,
    quote: &[u8],
) -> Result<Option<Base64Bytes>, AnswerError> {
    let Some(params) = &ch.params else {
        return Ok(None);
    };
    let answerer = answerer.ok_or(AnswerError::UnansweredParams(kind))?;
    let nonce = ch.nonce().map_err(AnswerError::Field)?;
    answerer
        .answer(params.as_bytes(), &nonce, quote)
        .map(|a| Some(Base64Bytes::new(a)))
        .map_err(AnswerError::Round)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use verifier_core::keysplit::NkPrivate;
    use verifier_core::proto::v1::{Id, Role};
    use verifier_core::round::RoundKey;
    use verifier_core::wire::HashAlg;

    struct TestAttester(NkPrivate);

    impl ChallengeAnswerer for TestAttester {
        fn answer(
            &self,
            params: &[u8],
            nonce: &[u8; 32],
            quote: &[u8],
        ) -> Result<Vec<u8>, RoundError> {
            verifier_core::round::answer(&self.0, params, nonce, quote).map(|a| a.to_vec())
        }
    }

    fn challenge(params: Option<Vec<u8>>) -> ChallengeResponse {
        ChallengeResponse {
            challenge_id: Id::try_from("c".to_owned()).unwrap(),
            nonce: Base64Bytes::new(vec![3; 32]),
            pcr_selection: Vec::new(),
            hash_alg: HashAlg::Sha256,
            expires_at: 0,
            role: Role::Verifier,
            params: params.map(Base64Bytes::new),
        }
    }

    #[test]
    fn parameters_reach_the_attester_and_its_answer_is_sent() {
        let a = TestAttester(NkPrivate::generate().unwrap());
        let key = RoundKey::new(&[5; 32]);
        let ch = challenge(Some(key.params(&a.0.public(), &[3; 32]).unwrap()));
        let sent = answer(EvidenceKind::TestChallengeRound, Some(&a), &ch, b"quote")
            .unwrap()
            .unwrap();
        key.check(&[3; 32], b"quote", Some(sent.as_bytes()))
            .unwrap();
    }

    #[test]
    fn no_parameters_no_answer_and_unanswerable_parameters_refused() {
        assert!(answerer_for(EvidenceKind::Tpm).is_none());
        assert_eq!(
            answer(EvidenceKind::Tpm, None, &challenge(None), b"q").unwrap(),
            None
        );
        assert!(matches!(
            answer(EvidenceKind::Tpm, None, &challenge(Some(vec![1, 2])), b"q"),
            Err(AnswerError::UnansweredParams(EvidenceKind::Tpm))
        ));
        let a = TestAttester(NkPrivate::generate().unwrap());
        assert!(matches!(
            answer(
                EvidenceKind::TestChallengeRound,
                Some(&a),
                &challenge(Some(vec![1, 2])),
                b"q"
            ),
            Err(AnswerError::Round(_))
        ));
    }
}
