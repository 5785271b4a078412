//! The agent-facing API of a role: register, activate, challenge, attest.

use std::time::{Duration, UNIX_EPOCH};

use verifier_core::evidence::{self, Expected, Submitted, ValidationError};
use verifier_core::keysplit::{seal_share, wrap_context, NkPublic, Share};
use verifier_core::makecred::make_credential;
use verifier_core::policy::{Evaluator, Matched, Policy, UsedItem};
use verifier_core::proto::v1::{
    verify_activation_proof, ActivateRequest, ActivateResponse, AgentId, AttestRequest,
    AttestResponse, ChallengeRequest, ChallengeResponse, ErrorCode, EvidenceKind, PcrSelection,
    Role, Sealed, SessionInfo,
};
use verifier_core::proto::v1::{RegisterRequest, RegisterResponse};
use verifier_core::proto::Base64Bytes;
use verifier_core::quote::AkPublic;
use verifier_core::wire::{HashAlg, Public, Signature};

use super::ticket::Ticket;
use super::{random_id, RoleService};
use crate::error::{ApiError, Charge};
use crate::store::{
    BootUsage, Enrollment, EnrollmentState, NewChallenge, Refusal, Registration, ReleaseDecision,
    ReleaseRequest, StoreError,
};

impl RoleService {
    /// Registration: checks the EK (enrolled, certificate chains) and the AK (a restricted
    /// signing key fixed to the TPM), then answers MakeCredential so that only that TPM, with
    /// that AK loaded, can recover the secret.
    pub fn register(&self, req: &RegisterRequest, now: i64) -> Result<RegisterResponse, ApiError> {
        let ek_bytes = req.ek_pub.as_bytes();
        let ek = Public::parse(ek_bytes)
            .map_err(|e| ApiError::new(ErrorCode::MalformedRequest, format!("ek_pub: {e}")))?;
        let agent_id = AgentId::of_ek(ek_bytes);
        let enrollment = self.store.enrollment(agent_id.as_str())?;
        if enrollment.is_none() && self.auto_enroll_off() {
            // Without auto-enrollment rules, as always: refused before anything else.
            return Err(ApiError::new(
                ErrorCode::NotEnrolled,
                format!(
                    "agent {agent_id} is not enrolled with the {} role",
                    self.role.as_str()
                ),
            ));
        }
        if let Some(e) = &enrollment {
            if e.ek_pub != ek_bytes {
                return Err(ApiError::new(
                    ErrorCode::NotEnrolled,
                    "EK differs from the enrolled EK",
                ));
            }
        }
        // A confidential VM's enrollment takes its own registration (`role/tee.rs`).
        self.require_evidence_kind(agent_id.as_str(), EvidenceKind::Tpm)?;
        self.require_kind_enabled(self.store.evidence_kind(agent_id.as_str())?)?;
        let ak_public = Public::parse(req.ak_pub.as_bytes())
            .map_err(|e| ApiError::new(ErrorCode::MalformedRequest, format!("ak_pub: {e}")))?;
        let ak = AkPublic::try_from(ak_public)
            .map_err(|e| ApiError::new(ErrorCode::AkNotAcceptable, e.to_string()))?;
        // The pin (a read) before the certificate chain (the costly check).
        self.check_ak_pin(agent_id.as_str(), ak.name())?;
        let cert = req.ek_cert.as_ref().map(Base64Bytes::as_bytes);
        if enrollment.is_none() {
            // Unknown EK: an auto-enrollment rule may admit it (role/admission.rs), which
            // checks its certificate the rule's way; without rules, `not_enrolled`.
            self.admit(agent_id.as_str(), ek_bytes, &ek, cert, now)?;
        } else if self
            .recheck_admitted(agent_id.as_str(), &ek, cert, now)?
            .is_none()
        {
            self.check_ek_cert(req, &ek, agent_id.as_str(), now)?;
        }

        let mut secret = zeroize::Zeroizing::new([0u8; 32]);
        aws_lc_rs::rand::fill(secret.as_mut()).map_err(|_| ApiError::internal("RNG failed"))?;
        let made = make_credential(&ek, ak.name(), secret.as_ref())
            .map_err(|e| ApiError::new(ErrorCode::MalformedRequest, format!("EK: {e}")))?;
        let registration_id = random_id()?;
        let wrapped = self
            .master
            .wrap_share(
                &Share::from_bytes(*secret),
                &registration_context(agent_id.as_str(), registration_id.as_str()),
            )
            .map_err(ApiError::internal)?;
        self.store.insert_registration(&Registration {
            registration_id: registration_id.as_str().to_owned(),
            agent_id: agent_id.as_str().to_owned(),
            ak_pub: req.ak_pub.as_bytes().to_vec(),
            ak_name: ak.name().to_vec(),
            secret_wrapped: wrapped,
            expires_at: now.saturating_add(secs(self.settings.registration_ttl_secs)),
        })?;
        self.metrics.registration();
        tracing::info!(role = self.role.as_str(), agent_id = %agent_id, "registered; MakeCredential issued");
        Ok(RegisterResponse {
            registration_id,
            credential_blob: Base64Bytes::new(tpm2b_contents(&made.credential_blob)?),
            encrypted_secret: Base64Bytes::new(tpm2b_contents(&made.encrypted_secret)?),
        })
    }

    /// An agent has one AK, pinned at its first activation: the agent derives the same
    /// primary key at every boot, so another AK under the same EK means another AK template
    /// (an operator's decision to accept) or someone with access to the TPM made a key of
    /// their own. Refused before any MakeCredential is spent on it.
    pub(super) fn check_ak_pin(&self, agent_id: &str, ak_name: &[u8]) -> Result<(), ApiError> {
        let pinned = self.store.activated_aks(agent_id)?;
        if pinned.is_empty() || pinned.iter().any(|(name, _)| name.as_slice() == ak_name) {
            Ok(())
        } else {
            Err(ak_not_pinned(agent_id))
        }
    }

    /// The EK certificate (the agent's, else the fetcher hook's) chains to the trust store
    /// through the untrusted chain certificates sent with it and the configured vendor
    /// intermediates, and certifies exactly this EK.
    fn check_ek_cert(
        &self,
        req: &RegisterRequest,
        ek: &Public,
        agent_id: &str,
        now: i64,
    ) -> Result<(), ApiError> {
        let trust = &self.settings.ek_trust;
        let untrusted =
            |e: &dyn std::fmt::Display| ApiError::new(ErrorCode::EkCertUntrusted, e.to_string());
        let fetched;
        let (der, chain): (&[u8], Vec<&[u8]>) =
            match (&req.ek_cert, &self.settings.ek_cert_hook) {
                (Some(cert), _) => (
                    cert.as_bytes(),
                    req.ek_chain.iter().map(Base64Bytes::as_bytes).collect(),
                ),
                (None, Some(hook)) if !trust.is_empty() => {
                    fetched = hook.fetch(agent_id, req.ek_pub.as_bytes()).map_err(|e| {
                        tracing::warn!(
                            role = self.role.as_str(),
                            agent_id,
                            "EK certificate hook: {e}"
                        );
                        untrusted(&e)
                    })?;
                    let mut chain: Vec<&[u8]> = fetched.chain.iter().map(Vec::as_slice).collect();
                    chain.extend(req.ek_chain.iter().map(Base64Bytes::as_bytes));
                    (fetched.cert.as_slice(), chain)
                }
                _ if self.settings.allow_ek_without_cert => return Ok(()),
                (None, _) => return Err(untrusted(
                    &"an EK certificate is required (the server does not allow EKs without one)",
                )),
            };
        if trust.is_empty() {
            return if self.settings.allow_ek_without_cert {
                Ok(())
            } else {
                Err(untrusted(
                    &"no EK CA is configured on the server (--ek-ca), so the EK certificate cannot be checked",
                ))
            };
        }
        let at = UNIX_EPOCH + Duration::from_secs(u64::try_from(now).unwrap_or(0));
        verifier_core::ekcert::verify_ek_certificate(der, &chain, trust, ek, at)
            .map(drop)
            .map_err(|e| untrusted(&e))
    }

    /// Activation: the agent proves it recovered the credential secret, which only the TPM
    /// holding both the EK and the AK could do. The AK is then bound to the agent.
    pub fn activate(&self, req: &ActivateRequest, now: i64) -> Result<ActivateResponse, ApiError> {
        let unknown = || {
            ApiError::new(
                ErrorCode::UnknownRegistration,
                "no such registration (or already used)",
            )
        };
        let reg = self
            .store
            .take_registration(req.registration_id.as_str())?
            .ok_or_else(unknown)?;
        if reg.expires_at <= now {
            return Err(ApiError::new(
                ErrorCode::UnknownRegistration,
                "registration expired; register again",
            ));
        }
        let secret = self
            .master
            .unwrap_share(
                &reg.secret_wrapped,
                &registration_context(&reg.agent_id, &reg.registration_id),
            )
            .map_err(ApiError::internal)?;
        if verify_activation_proof(
            secret.expose_secret(),
            &req.registration_id,
            req.proof.as_bytes(),
        )
        .is_err()
        {
            // Logged, never written nor counted against the machine: anyone who knows its
            // public EK can register an AK of their own and fail here (the source pays).
            tracing::warn!(role = self.role.as_str(), agent_id = %reg.agent_id, "activation proof wrong");
            return Err(ApiError::new(
                ErrorCode::ActivationFailed,
                "the activation proof is wrong: the AK is not in the enrolled TPM",
            ));
        }
        if !self
            .store
            .activate_ak(&reg.agent_id, &reg.ak_name, &reg.ak_pub, now)?
        {
            return Err(ak_not_pinned(&reg.agent_id));
        }
        tracing::info!(role = self.role.as_str(), agent_id = %reg.agent_id, "AK activated and pinned");
        let agent_id = AgentId::try_from(reg.agent_id).map_err(ApiError::internal)?;
        Ok(ActivateResponse { agent_id })
    }

    /// A fresh nonce for an agent whose AK is activated, and the PCRs its policy needs.
    /// Writes nothing: the challenge id is a ticket ([`super::ticket`]) the attest step
    /// verifies, and the challenge is stored only when it is used.
    pub fn challenge(
        &self,
        req: &ChallengeRequest,
        now: i64,
    ) -> Result<ChallengeResponse, ApiError> {
        let agent_id = req.agent_id.as_str();
        let enrollment = self.store.enrollment(agent_id)?.ok_or_else(|| {
            ApiError::new(
                ErrorCode::NotEnrolled,
                format!("agent {agent_id} is not enrolled"),
            )
        })?;
        match enrollment.state {
            EnrollmentState::Armed => {}
            EnrollmentState::Revoked => {
                return Err(ApiError::new(
                    ErrorCode::NotEnrolled,
                    "enrollment revoked by an operator",
                ))
            }
            EnrollmentState::Terminated => {
                return Err(ApiError::new(
                    ErrorCode::AgentTerminated,
                    Refusal::AgentTerminated.to_string(),
                ))
            }
        }
        if self
            .store
            .activated_ak(agent_id, req.ak_name.as_bytes())?
            .is_none()
        {
            return Err(ApiError::new(
                ErrorCode::UnknownAgent,
                "this AK is not activated: register and activate first",
            ));
        }
        let policy = Policy::from_json(&enrollment.policy).map_err(ApiError::internal)?;
        let selection = policy
            .selection()
            .banks()
            .iter()
            .map(|b| PcrSelection {
                hash: b.hash(),
                pcrs: b.indexes().collect(),
            })
            .collect();
        let expires_at = now.saturating_add(secs(self.settings.challenge_ttl_secs));
        let kind = self.store.evidence_kind(agent_id)?;
        self.require_kind_enabled(kind)?;
        let issued = self
            .tickets
            .issue(agent_id, req.ak_name.as_bytes(), expires_at)
            .map_err(ApiError::internal)?;
        let params = self.challenge_params(kind, &issued.nonce)?;
        Ok(ChallengeResponse {
            challenge_id: issued.id,
            nonce: Base64Bytes::new(issued.nonce.to_vec()),
            pcr_selection: selection,
            hash_alg: HashAlg::Sha256,
            expires_at: u64::try_from(expires_at).unwrap_or(0),
            role: self.role,
            params: params.map(Base64Bytes::new),
        })
    }

    /// The unlock path: the ticket, the failure budget, the evidence, the policy, then the
    /// release, decided atomically by the store (the one durable write of an attestation).
    /// Returns the JSON body of the answer (stored, so a retry of the same evidence gets the
    /// very same bytes).
    pub fn attest(&self, req: &AttestRequest, now: i64) -> Result<Vec<u8>, ApiError> {
        let Ticketed {
            challenge,
            enrollment,
            ak,
        } = self.open_ticket(req.challenge_id.as_str())?;
        // The same challenge, quote, signature and NK are the same attestation however the
        // body is serialized (a retry of the same evidence gets the stored answer).
        let evidence_hash = req.evidence_digest();
        // A used or expired challenge is decided by a read alone: an identical retry gets
        // its stored answer, anything else is refused; no crypto, no write.
        if let Some(used) = self.store.challenge(&challenge.challenge_id)? {
            let decision =
                crate::store::used_challenge_decision(&used, &challenge.agent_id, &evidence_hash);
            return self.answer(&challenge, 0, decision, false);
        }
        if challenge.expires_at <= now {
            return Err(ApiError::new(
                ErrorCode::ChallengeExpired,
                Refusal::ChallengeExpired.to_string(),
            ));
        }
        self.check_failure_budget(&challenge.agent_id, now)?;
        let refuse = |e: ApiError| self.record_refusal(&challenge, e, now);
        let passed = self
            .validate(req, &challenge, &enrollment, &ak)
            .map_err(refuse)?;
        let policy = Policy::from_json(&enrollment.policy).map_err(ApiError::internal)?;
        // The host requirement comes last (it costs a round trip to the provider, which a
        // machine that fails its own rules should not cause) and before the release: a
        // refused host check is a refusal like the ones above, recorded for the rate limit
        // and consuming no release, so the machine may try again once the host is back.
        if let Some(host_policy) = policy.host() {
            let host = super::host::check(host_policy).map_err(refuse)?;
            tracing::info!(
                role = self.role.as_str(),
                agent_id = %challenge.agent_id,
                challenge_id = %challenge.challenge_id,
                provider = host_policy.provider(),
                host_batch_size = host.batch_size,
                host_reset_count = host.reset_count,
                "host quote fresh, by the pinned AK, and accepted by the host rules"
            );
        }
        // Only a release records what the boot used (a refusal writes no session), so a
        // stranger's evidence can neither count as a boot nor make an item look used.
        let usage = enrollment
            .policy_ref
            .as_ref()
            .map(|(name, version)| BootUsage {
                policy_name: name,
                policy_version: *version,
                used: &passed.used,
            });
        self.release(&challenge, &passed, &evidence_hash, now, usage)
    }

    /// The challenge a ticket stands for: its agent's enrollment and the activated AK it was
    /// issued for. Anything that is not a ticket this role issued is an unknown challenge.
    fn open_ticket(&self, challenge_id: &str) -> Result<Ticketed, ApiError> {
        let unknown = || {
            ApiError::new(
                ErrorCode::UnknownChallenge,
                "no such challenge (not issued by this role, or by an older server); request a new one",
            )
        };
        let ticket = Ticket::parse(challenge_id).ok_or_else(unknown)?;
        for enrollment in self.store.enrollments_by_ref(&ticket.agent_ref)? {
            for (ak_name, ak_pub) in self.store.activated_aks(&enrollment.agent_id)? {
                let Some(nonce) = self.tickets.open(&ticket, &enrollment.agent_id, &ak_name) else {
                    continue;
                };
                let ak = Public::parse(&ak_pub)
                    .map_err(ApiError::internal)
                    .and_then(|p| AkPublic::try_from(p).map_err(ApiError::internal))?;
                return Ok(Ticketed {
                    challenge: NewChallenge {
                        challenge_id: challenge_id.to_owned(),
                        agent_id: enrollment.agent_id.clone(),
                        ak_name,
                        nonce,
                        expires_at: ticket.expires_at,
                    },
                    enrollment,
                    ak,
                });
            }
        }
        Err(unknown())
    }

    /// Consecutive failures (since the agent's last release) within the window are counted
    /// in the database, so the limit holds across replicas.
    fn check_failure_budget(&self, agent_id: &str, now: i64) -> Result<(), ApiError> {
        let failures = self
            .store
            .recent_refusals(agent_id, now.saturating_sub(FAILURE_WINDOW_SECS))?;
        if failures >= MAX_CONSECUTIVE_FAILURES {
            tracing::warn!(
                role = self.role.as_str(),
                agent_id,
                failures,
                "rate limited"
            );
            return Err(ApiError::new(
                ErrorCode::RateLimited,
                format!(
                    "{failures} failed attestations in the last {FAILURE_WINDOW_SECS} s: try again later"
                ),
            ));
        }
        Ok(())
    }

    /// Logs a refusal of the attest path and writes the ones that belong in the agent's
    /// attempt log: only evidence the agent's AK signed for this challenge counts against
    /// it; the rest anyone could have sent (the source pays, the log line stays), and the
    /// host check's refusals are about the host (written, not counted).
    fn record_refusal(&self, ch: &NewChallenge, e: ApiError, now: i64) -> ApiError {
        tracing::info!(role = self.role.as_str(), agent_id = %ch.agent_id, challenge_id = %ch.challenge_id, code = ?e.code, charge = ?e.charge, reason = %e.message, "refused");
        let evidence_failure = e.charge == Charge::Agent;
        let host = matches!(
            e.code,
            ErrorCode::HostUnreachable | ErrorCode::HostQuoteInvalid | ErrorCode::HostPolicyDenied
        );
        if !evidence_failure && !host {
            return e;
        }
        match self.store.record_refusal_watching(
            &ch.agent_id,
            Some(&ch.challenge_id),
            &e.message,
            evidence_failure,
            now,
            Some((
                now.saturating_sub(FAILURE_WINDOW_SECS),
                MAX_CONSECUTIVE_FAILURES,
            )),
        ) {
            Ok(locked_out) => {
                if locked_out {
                    tracing::warn!(role = self.role.as_str(), agent_id = %ch.agent_id, failures = MAX_CONSECUTIVE_FAILURES, "locked out: further attestations are refused until the window passes");
                }
                e
            }
            Err(err) => ApiError::internal(err),
        }
    }

    /// verifier-core's validation against the challenge's AK and nonce, then the signer's
    /// hierarchy; the verified resetCount and NK, or the refusal (not yet recorded).
    fn validate(
        &self,
        req: &AttestRequest,
        ch: &NewChallenge,
        enrollment: &Enrollment,
        ak: &AkPublic,
    ) -> Result<Passed, ApiError> {
        let signature = Signature::parse(req.signature.as_bytes())
            .map_err(|e| ApiError::new(ErrorCode::QuoteInvalid, format!("signature: {e}")))?;
        let pcrs = req.pcr_values()?;
        let nk = req.nk_pub.to_keysplit()?;
        let proof = req.inclusion.to_merkle()?;
        let ima =
            match &req.ima_log {
                Some(l) => Some(l.parse().map_err(|e| {
                    ApiError::new(ErrorCode::ImaLogMismatch, format!("IMA log: {e}"))
                })?),
                None => None,
            };
        let submitted = Submitted {
            attest: req.quote.as_bytes(),
            signature: &signature,
            pcrs: &pcrs,
            nk_pub: nk.as_bytes(),
            proof: &proof,
            event_log: req.event_log.as_ref().map(Base64Bytes::as_bytes),
            ima_log: ima.as_ref(),
        };
        let ek = Public::parse(&enrollment.ek_pub).map_err(ApiError::internal)?;
        let policy = Policy::from_json(&enrollment.policy).map_err(ApiError::internal)?;
        // The verifier is picked by the evidence kind the enrollment declares.
        let validated = match self.store.evidence_kind(&ch.agent_id)? {
            EvidenceKind::Tpm => evidence::validate(
                Expected {
                    ak,
                    nonce: &ch.nonce,
                },
                submitted,
            )
            .map_err(|e| validation_error(&e))?,
            EvidenceKind::TestChallengeRound => {
                let answer = req.answer.as_ref().map(Base64Bytes::as_bytes);
                self.validate_round(ch, ak, answer, submitted)?
            }
            EvidenceKind::AzureSnpVtpm => {
                let (reset_count, used) =
                    self.validate_snp_vtpm(ch, ak, &ek, submitted, &policy)?;
                return Ok(Passed {
                    reset_count,
                    nk,
                    used,
                });
            }
            other => {
                return Err(ApiError::internal(format!(
                    "no verifier for evidence kind {other}"
                )))
            }
        };
        // The resetCount names the boot session only for an AK in the endorsement hierarchy
        // (elsewhere clockInfo is obfuscated), and activation with the EK does not prove the
        // hierarchy: the signed qualifiedSigner does.
        if !validated.quote().signed_in_endorsement_hierarchy(Some(&ek)) {
            return Err(ApiError::new(
                ErrorCode::AkNotAcceptable,
                "the quote's qualifiedSigner puts the AK outside the endorsement hierarchy \
                 (neither a primary key there nor a child of the enrolled EK)",
            )
            .by_agent());
        }
        let verdict = policy.evaluate(&validated);
        if !verdict.accepted() {
            return Err(ApiError::new(ErrorCode::PolicyDenied, verdict.to_string()).by_agent());
        }
        Ok(Passed {
            reset_count: validated.quote().reset_count(),
            nk,
            used: verdict.used.iter().map(Matched::item).collect(),
        })
    }

    /// The release, decided by the store in one transaction (which also stores the
    /// challenge as used): `seal` makes the answer for the count the store decides.
    fn release(
        &self,
        ch: &NewChallenge,
        passed: &Passed,
        evidence_hash: &[u8; 32],
        now: i64,
        usage: Option<BootUsage<'_>>,
    ) -> Result<Vec<u8>, ApiError> {
        let role = self.role;
        let (reset_count, nk) = (passed.reset_count, &passed.nk);
        let nk_digest = HashAlg::Sha256.hash(nk.as_bytes());
        let nk_hash = <[u8; 32]>::try_from(nk_digest.as_bytes()).map_err(ApiError::internal)?;
        let decision = self.store.release(
            &ReleaseRequest {
                challenge: ch,
                reset_count,
                evidence_hash,
                nk_hash: Some(nk_hash),
                now,
                usage,
            },
            |enr, count| {
                let share = self
                    .master
                    .unwrap_share(
                        &enr.share_wrapped,
                        &wrap_context(role.as_str(), &ch.agent_id),
                    )
                    .map_err(|e| StoreError::Seal(e.to_string()))?;
                let sealed = seal_share(nk, role.as_str(), ch.challenge_id.as_bytes(), &share)
                    .map_err(|e| StoreError::Seal(e.to_string()))?;
                let payload = match role {
                    Role::Verifier => Some(Base64Bytes::new(enr.payload_ct.clone().ok_or_else(
                        || StoreError::Seal("verifier enrollment without payload".into()),
                    )?)),
                    Role::Tenant => None,
                };
                let response = AttestResponse {
                    role,
                    sealed_half: Sealed::from_keysplit(&sealed),
                    payload,
                    session: SessionInfo {
                        reset_count,
                        releases: count.releases,
                        max_attestations: enr.max_attestations,
                        terminated: count.terminated,
                    },
                };
                verifier_core::proto::v1::encode(&response)
                    .map_err(|e| StoreError::Seal(e.to_string()))
            },
        )?;
        self.answer(ch, reset_count, decision, true)
    }

    /// A release decision as the agent's answer, logged once. `validated`: the evidence was
    /// verified (its AK signed it), so a refusal here is charged to the agent.
    fn answer(
        &self,
        ch: &NewChallenge,
        reset_count: u32,
        decision: ReleaseDecision,
        validated: bool,
    ) -> Result<Vec<u8>, ApiError> {
        let role = self.role.as_str();
        let (agent_id, challenge_id) = (ch.agent_id.as_str(), ch.challenge_id.as_str());
        match decision {
            ReleaseDecision::Released {
                response,
                releases,
                session_terminated,
            } => {
                self.metrics.release(session_terminated);
                tracing::info!(
                    role,
                    agent_id,
                    challenge_id,
                    reset_count,
                    releases,
                    session_terminated,
                    "released"
                );
                Ok(response)
            }
            ReleaseDecision::Resealed { response } => {
                tracing::info!(
                    role,
                    agent_id,
                    challenge_id,
                    reset_count,
                    "this boot already released to this NK: the same half re-sealed, not counted"
                );
                Ok(response)
            }
            ReleaseDecision::Retried { response } => {
                tracing::info!(
                    role,
                    agent_id,
                    challenge_id,
                    "identical retry: same answer, not counted"
                );
                Ok(response)
            }
            ReleaseDecision::Refused(r) => {
                tracing::info!(role, agent_id, challenge_id, reason = %r, "refused");
                let e = ApiError::new(r.code(), r.to_string());
                Err(if validated { e.by_agent() } else { e })
            }
        }
    }
}

/// Evidence that passed validation and the policy: what the release needs of it.
struct Passed {
    /// resetCount of the verified quote (the boot session).
    reset_count: u32,
    /// The key the answer is sealed to.
    nk: NkPublic,
    /// The allowlist items the evidence matched (`Verdict::used`).
    used: Vec<UsedItem>,
}

/// A challenge whose ticket verified, with what attesting to it needs.
struct Ticketed {
    challenge: NewChallenge,
    enrollment: Enrollment,
    ak: AkPublic,
}

/// Failed attestations of one agent, since its last release, after which it is refused with
/// `rate_limited` until the oldest falls out of the window. A real boot fails a few times at
/// most (a policy mismatch is not fixed by retrying); a loop hammering the server is stopped
/// before it costs a validation each time.
pub const MAX_CONSECUTIVE_FAILURES: u32 = 10;

/// The window of [`MAX_CONSECUTIVE_FAILURES`], in seconds.
pub const FAILURE_WINDOW_SECS: i64 = 300;

fn registration_context(agent_id: &str, registration_id: &str) -> Vec<u8> {
    format!("registrar|{agent_id}|{registration_id}").into_bytes()
}

pub(super) fn ak_not_pinned(agent_id: &str) -> ApiError {
    ApiError::new(
        ErrorCode::AkNotPinned,
        format!(
            "agent {agent_id} has another AK pinned (proven with its EK at its first activation); \
             if the machine's AK really changed, an operator runs `unlockctl unpin-ak {agent_id}`"
        ),
    )
}

fn secs(s: u64) -> i64 {
    i64::try_from(s).unwrap_or(i64::MAX)
}

/// The TPM2B's contents (the protocol carries them without the size prefix).
fn tpm2b_contents(tpm2b: &[u8]) -> Result<Vec<u8>, ApiError> {
    let mut r = verifier_core::wire::Reader::new("TPM2B", tpm2b);
    let body = r
        .tpm2b("buffer", usize::from(u16::MAX))
        .map_err(ApiError::internal)?;
    r.finish().map_err(ApiError::internal)?;
    Ok(body.to_vec())
}

fn validation_error(e: &ValidationError) -> ApiError {
    let refusal = ApiError::new(e.code(), e.to_string());
    if e.signed_by_ak() {
        refusal.by_agent()
    } else {
        refusal
    }
}
