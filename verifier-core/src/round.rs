//! The challenge round: verifier-made parameters in the challenge, the attester's answer in
//! the attest request.
//!
//! Why: some attesters cannot produce evidence from a nonce alone. IBM Secure Execution's
//! guest answers an attestation request the verifier built (a measurement key encrypted to
//! the host key documents); the evidence is valid only for that request. Protocol v1
//! therefore carries opaque, versioned, bounded parameters in
//! [`ChallengeResponse::params`](crate::proto::v1::ChallengeResponse::params) and the
//! answer in [`AttestRequest::answer`](crate::proto::v1::AttestRequest::answer).
//!
//! No real attester of that kind is built (no public IBM SE evidence exists to test one
//! against), so this module defines the round's **test attester** (evidence kind
//! `test-challenge-round`), whose answer depends on the parameters the way SE's does:
//!
//! - verifier: `secret = HMAC(round key, nonce)`; `params = version (1) || HPKE-seal(attester
//!   key, info, aad = nonce, secret)`. The secret is recomputed from the nonce at attest, so
//!   nothing about a challenge is stored (the server's challenges are stateless tickets) and
//!   a stranger opening challenges costs the server no memory.
//! - attester: opens the parameters with its private key (the nonce as AAD, so parameters
//!   moved to another challenge do not open) and answers
//!   `HMAC(secret, label || nonce || SHA-256(quote))`: bound to this challenge and to the
//!   quote it travels with.
//! - verifier: recomputes the answer for THIS challenge's nonce and the submitted quote and
//!   compares in constant time. An answer made for another challenge, replayed from an
//!   earlier one, or for another quote does not match.

use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::crypto::hmac;
use crate::keysplit::{self, KeySplitError, NkPrivate, NkPublic, Sealed};
use crate::wire::HashAlg;

/// The format version of the test round's parameters (their first byte).
pub const PARAMS_VERSION: u8 = 1;
/// Length of the test round's answer (an HMAC-SHA256).
pub const ANSWER_LEN: usize = 32;
const SEAL_INFO: &[u8] = b"unlock/v1 test-challenge-round params";
const ANSWER_LABEL: &[u8] = b"unlock/v1 test-challenge-round answer";

/// Why a round's parameters could not be made, opened or answered, or an answer was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RoundError {
    /// The evidence kind needs an answer and none was sent.
    #[error("the evidence kind needs an answer to the challenge's parameters and none was sent")]
    AnswerMissing,
    /// The answer is not an answer's length.
    #[error("the answer is {0} bytes, expected {ANSWER_LEN}")]
    AnswerLength(usize),
    /// The answer is not the one for this challenge and quote.
    #[error("the answer is not the answer to this challenge's parameters for this quote")]
    AnswerMismatch,
    /// The parameters are of a format version this build does not know.
    #[error("challenge parameters of unknown version {0} (this build knows {PARAMS_VERSION})")]
    UnknownVersion(u8),
    /// The parameters are empty.
    #[error("challenge parameters are empty")]
    EmptyParams,
    /// The parameters do not decode or do not open with this attester's key for this nonce.
    #[error("challenge parameters do not open with this attester's key for this nonce: {0}")]
    Params(KeySplitError),
    /// The opened secret has the wrong length.
    #[error("challenge parameters hold a secret of the wrong length")]
    SecretLength,
    /// Sealing the parameters failed (the system's generator).
    #[error("sealing challenge parameters failed: {0}")]
    Seal(KeySplitError),
}

/// The verifier's key for the test round (a server derives it from its role master key).
pub struct RoundKey(hmac::Key);

impl std::fmt::Debug for RoundKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RoundKey(<redacted>)")
    }
}

impl RoundKey {
    /// A key from 32 secret bytes.
    pub fn new(bytes: &[u8; 32]) -> Self {
        Self(hmac::Key::new(hmac::HMAC_SHA256, bytes))
    }

    /// The per-challenge secret: recomputed, never stored.
    fn secret(&self, nonce: &[u8; 32]) -> Zeroizing<[u8; 32]> {
        let tag = hmac::sign(&self.0, nonce);
        let mut s = Zeroizing::new([0u8; 32]);
        s.iter_mut().zip(tag.as_ref()).for_each(|(o, b)| *o = *b);
        s
    }

    /// The verifier's parameters for `nonce`, sealed to `attester`.
    pub fn params(&self, attester: &NkPublic, nonce: &[u8; 32]) -> Result<Vec<u8>, RoundError> {
        let sealed = keysplit::seal(attester, SEAL_INFO, nonce, self.secret(nonce).as_slice())
            .map_err(RoundError::Seal)?;
        let mut out = vec![PARAMS_VERSION];
        out.extend_from_slice(&sealed.to_bytes());
        Ok(out)
    }

    /// Checks `answer` against the one this challenge (`nonce`) and `quote` call for.
    pub fn check(
        &self,
        nonce: &[u8; 32],
        quote: &[u8],
        answer: Option<&[u8]>,
    ) -> Result<(), RoundError> {
        let answer = answer.ok_or(RoundError::AnswerMissing)?;
        if answer.len() != ANSWER_LEN {
            return Err(RoundError::AnswerLength(answer.len()));
        }
        let want = answer_for(&self.secret(nonce), nonce, quote);
        if bool::from(want.ct_eq(answer)) {
            Ok(())
        } else {
            Err(RoundError::AnswerMismatch)
        }
    }
}

/// The attester's side: opens `params` with its key for this `nonce` and answers for
/// `quote`. Untrusted input: bounded, never panics.
pub fn answer(
    attester: &NkPrivate,
    params: &[u8],
    nonce: &[u8; 32],
    quote: &[u8],
) -> Result<[u8; ANSWER_LEN], RoundError> {
    let (&version, sealed) = params.split_first().ok_or(RoundError::EmptyParams)?;
    if version != PARAMS_VERSION {
        return Err(RoundError::UnknownVersion(version));
    }
    let sealed = Sealed::from_bytes(sealed).map_err(RoundError::Params)?;
    let opened = attester
        .open(&sealed, SEAL_INFO, nonce)
        .map_err(RoundError::Params)?;
    let mut secret = Zeroizing::new([0u8; 32]);
    if opened.len() != secret.len() {
        return Err(RoundError::SecretLength);
    }
    secret.copy_from_slice(&opened);
    Ok(answer_for(&secret, nonce, quote))
}

fn answer_for(secret: &[u8; 32], nonce: &[u8; 32], quote: &[u8]) -> [u8; ANSWER_LEN] {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(ANSWER_LABEL);
    ctx.update(nonce);
    ctx.update(HashAlg::Sha256.hash(quote).as_bytes());
    let mut out = [0u8; ANSWER_LEN];
    out.iter_mut()
        .zip(ctx.sign().as_ref())
        .for_each(|(o, b)| *o = *b);
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    fn setup() -> (RoundKey, NkPrivate) {
        (RoundKey::new(&[7; 32]), NkPrivate::generate().unwrap())
    }

    #[test]
    fn the_answer_to_this_challenge_is_accepted() {
        let (k, a) = setup();
        let p = k.params(&a.public(), &[1; 32]).unwrap();
        assert_eq!(p[0], PARAMS_VERSION);
        let ans = answer(&a, &p, &[1; 32], b"quote").unwrap();
        k.check(&[1; 32], b"quote", Some(&ans)).unwrap();
    }

    #[test]
    fn answers_for_another_challenge_quote_or_none_are_refused() {
        let (k, a) = setup();
        let p1 = k.params(&a.public(), &[1; 32]).unwrap();
        let ans1 = answer(&a, &p1, &[1; 32], b"quote").unwrap();
        // Another challenge of the same machine.
        assert!(matches!(
            k.check(&[2; 32], b"quote", Some(&ans1)),
            Err(RoundError::AnswerMismatch)
        ));
        // Another quote.
        assert!(matches!(
            k.check(&[1; 32], b"other", Some(&ans1)),
            Err(RoundError::AnswerMismatch)
        ));
        assert!(matches!(
            k.check(&[1; 32], b"quote", None),
            Err(RoundError::AnswerMissing)
        ));
        assert!(matches!(
            k.check(&[1; 32], b"quote", Some(&[0; 31])),
            Err(RoundError::AnswerLength(31))
        ));
        // Another verifier key.
        assert!(matches!(
            RoundKey::new(&[8; 32]).check(&[1; 32], b"quote", Some(&ans1)),
            Err(RoundError::AnswerMismatch)
        ));
    }

    #[test]
    fn altered_moved_or_foreign_params_do_not_open() {
        let (k, a) = setup();
        let p = k.params(&a.public(), &[1; 32]).unwrap();
        // Moved to another challenge (the nonce is the AAD).
        assert!(matches!(
            answer(&a, &p, &[2; 32], b"q"),
            Err(RoundError::Params(_))
        ));
        // Altered anywhere.
        for i in 1..p.len() {
            let mut bad = p.clone();
            bad[i] ^= 1;
            assert!(answer(&a, &bad, &[1; 32], b"q").is_err(), "byte {i}");
        }
        let mut v2 = p.clone();
        v2[0] = 2;
        assert!(matches!(
            answer(&a, &v2, &[1; 32], b"q"),
            Err(RoundError::UnknownVersion(2))
        ));
        assert!(matches!(
            answer(&a, &[], &[1; 32], b"q"),
            Err(RoundError::EmptyParams)
        ));
        // Another attester's key.
        let stranger = NkPrivate::generate().unwrap();
        assert!(answer(&stranger, &p, &[1; 32], b"q").is_err());
    }

    #[test]
    fn arbitrary_params_never_panic() {
        let a = NkPrivate::generate().unwrap();
        for len in [0usize, 1, 2, 32, 33, 48, 49, 100, 5000] {
            let mut p = vec![PARAMS_VERSION; len];
            p.iter_mut()
                .enumerate()
                .skip(1)
                .for_each(|(i, b)| *b = u8::try_from(i % 251).unwrap_or(0));
            let _ = answer(&a, &p, &[0; 32], b"q");
        }
    }
}
