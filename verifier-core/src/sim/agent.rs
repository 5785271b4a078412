//! The agent side of protocol v1 over a [`SimTpm`]: builds each request, consumes each
//! answer, and recovers the payload exactly as the initrd agent does.

use std::collections::BTreeSet;

use zeroize::Zeroizing;

use super::{SimError, SimTpm};
use crate::keysplit::{self, NkPrivate, PayloadCiphertext, Share};
use crate::merkle::{quote_extra_data, MerkleTree};
use crate::policy::{
    PcrRuleDocument, PolicyDocument, ReleasePcrDocument, DEFAULT_RELEASE_PCR, RELEASE_EVENT,
};
use crate::proto::v1::{
    activation_proof, ActivateRequest, ActivateResponse, AgentId, AttestRequest, AttestResponse,
    ChallengeRequest, ChallengeResponse, EnrollRequest, Id, InclusionProof, NkPublic, PcrBank,
    PcrValue, RegisterRequest, RegisterResponse, Role, Validate,
};
use crate::proto::Base64Bytes;
use crate::quote::software::SoftwareAk;
use crate::wire::{BankSelection, HashAlg, PcrSelection};

/// PCRs the simulated firmware measures at every boot (with the same values on every
/// simulated machine, like a fleet running one image).
pub const SIM_MEASURED_PCRS: [u8; 8] = [0, 1, 2, 3, 4, 5, 6, 7];

/// A simulated machine running the agent: a [`SimTpm`] with measured firmware and an ECC AK
/// created this boot.
///
/// One boot: [`Self::register_request`] to each role, [`Self::activate_request`] with each
/// answer, [`Self::challenge_request`] to each role, [`Self::attest_requests`] with the
/// challenges, [`Self::finish`] with the answers, then [`Self::extend_release_pcr`].
#[derive(Debug)]
pub struct SimAgent {
    tpm: SimTpm,
    ak: SoftwareAk,
    release_pcr: u8,
    pending: Option<Pending>,
}

/// Between `attest_requests` and `finish`: NK and which challenge each role answered.
#[derive(Debug)]
struct Pending {
    nk: NkPrivate,
    challenges: Vec<(Role, Id)>,
}

impl SimAgent {
    /// A new machine (new EK), booted: firmware measured, a fresh AK.
    pub fn new() -> Result<Self, SimError> {
        let mut tpm = SimTpm::new()?;
        measure_firmware(&mut tpm)?;
        Ok(Self {
            tpm,
            ak: SoftwareAk::generate_ecc_p256()?,
            release_pcr: DEFAULT_RELEASE_PCR,
            pending: None,
        })
    }

    /// The machine's TPM.
    pub fn tpm(&self) -> &SimTpm {
        &self.tpm
    }

    /// The machine's TPM, to change PCRs or the clock between steps.
    pub fn tpm_mut(&mut self) -> &mut SimTpm {
        &mut self.tpm
    }

    /// This boot's AK.
    pub fn ak(&self) -> &SoftwareAk {
        &self.ak
    }

    /// The agent id (SHA-256 of the EK's TPMT_PUBLIC).
    pub fn agent_id(&self) -> AgentId {
        self.tpm.agent_id()
    }

    /// Uses another release PCR than [`DEFAULT_RELEASE_PCR`].
    pub fn set_release_pcr(&mut self, index: u8) {
        self.release_pcr = index;
    }

    /// A reboot: TPM Reset (resetCount + 1, PCRs reset), firmware measured again, a new AK.
    /// The AK must be registered and activated again, as on a real machine.
    pub fn reboot(&mut self) -> Result<(), SimError> {
        self.tpm.reboot();
        measure_firmware(&mut self.tpm)?;
        // The AK survives the reboot, as the real agent's does (a primary key derived from
        // the endorsement seed): the roles pin an agent's AK at its first activation.
        self.pending = None;
        Ok(())
    }

    /// A policy that accepts this machine's current measured PCRs, with the release-PCR rule
    /// (what `unlockctl` would learn from a known-good boot).
    pub fn learn_policy(&self) -> PolicyDocument {
        let pcrs = SIM_MEASURED_PCRS
            .iter()
            .filter_map(|&i| {
                self.tpm.pcr(i).map(|d| PcrRuleDocument {
                    bank: HashAlg::Sha256.name().into(),
                    index: i,
                    allowed: vec![d.to_hex()],
                    initial: false,
                })
            })
            .collect();
        PolicyDocument {
            version: crate::policy::POLICY_VERSION,
            pcrs,
            release_pcr: Some(ReleasePcrDocument {
                bank: HashAlg::Sha256.name().into(),
                index: self.release_pcr,
            }),
            require_event_log: false,
            allow_event_digest_mismatch: false,
            require_clock_safe: false,
            ..PolicyDocument::default()
        }
    }

    /// `POST /v1/register` to each role (the same body for every role).
    pub fn register_request(&self) -> RegisterRequest {
        RegisterRequest {
            ek_pub: Base64Bytes::from(self.tpm.ek_pub_bytes()),
            ek_cert: None,
            ek_chain: Vec::new(),
            ak_pub: Base64Bytes::new(self.ak.public().marshal()),
        }
    }

    /// `POST /v1/activate` for one role's registration answer: TPM2_ActivateCredential, then
    /// the HMAC proof of the recovered secret.
    pub fn activate_request(&self, reg: &RegisterResponse) -> Result<ActivateRequest, SimError> {
        reg.validate()?;
        let secret = self.tpm.activate_credential(
            self.ak.ak().name(),
            reg.credential_blob.as_bytes(),
            reg.encrypted_secret.as_bytes(),
        )?;
        let proof = activation_proof(&secret, &reg.registration_id);
        Ok(ActivateRequest {
            registration_id: reg.registration_id.clone(),
            proof: Base64Bytes::from(proof.as_slice()),
        })
    }

    /// Checks that a role activated the AK for this machine.
    pub fn check_activation(&self, answer: &ActivateResponse) -> Result<(), SimError> {
        if answer.agent_id == self.agent_id() {
            Ok(())
        } else {
            Err(SimError::AgentIdMismatch)
        }
    }

    /// `POST /v1/attest/challenge` to each role.
    pub fn challenge_request(&self) -> ChallengeRequest {
        ChallengeRequest {
            agent_id: self.agent_id(),
            ak_name: Base64Bytes::from(self.ak.ak().name()),
        }
    }

    /// `POST /v1/attest` bodies, one per challenge and in the same order: a fresh NK, a
    /// Merkle tree over the nonces in role order (verifier = leaf 0, tenant = leaf 1), ONE
    /// quote over the union of the selections binding the root and NK, and each role's
    /// inclusion proof.
    pub fn attest_requests(
        &mut self,
        challenges: &[ChallengeResponse],
    ) -> Result<Vec<AttestRequest>, SimError> {
        if challenges.is_empty() {
            return Err(SimError::OutOfOrder("attest_requests needs the challenges"));
        }
        let mut order: Vec<&ChallengeResponse> = challenges.iter().collect();
        order.sort_by_key(|c| c.role.leaf_index());
        for pair in order.windows(2) {
            if let [a, b] = pair {
                if a.role == b.role {
                    return Err(SimError::DuplicateRole(a.role.as_str()));
                }
            }
        }
        let mut nonces = Vec::with_capacity(order.len());
        let mut indexes = BTreeSet::new();
        for c in &order {
            c.validate()?;
            nonces.push(c.nonce()?);
            for bank in &c.pcr_selection {
                if bank.hash != HashAlg::Sha256 {
                    return Err(SimError::Bank(bank.hash));
                }
                indexes.extend(bank.pcrs.iter().copied());
            }
        }
        let indexes: Vec<u8> = indexes.into_iter().collect();
        let bank = BankSelection::new(HashAlg::Sha256, &indexes)
            .ok_or(SimError::PcrIndex(indexes.last().copied().unwrap_or(0)))?;
        let selection = PcrSelection::new(vec![bank]).ok_or(SimError::Bank(HashAlg::Sha256))?;

        let nk = NkPrivate::generate()?;
        let nk_pub = nk.public();
        let tree = MerkleTree::new(&nonces)?;
        let extra_data = quote_extra_data(&tree.root(), nk_pub.as_bytes());
        let (attest, signature) = self.tpm.quote(&self.ak, &extra_data, &selection)?;
        let pcrs = vec![PcrBank {
            hash: HashAlg::Sha256,
            values: indexes
                .iter()
                .filter_map(|&i| {
                    self.tpm.pcr(i).map(|d| PcrValue {
                        index: i,
                        digest: Base64Bytes::from(d.as_bytes()),
                    })
                })
                .collect(),
        }];

        let mut out = Vec::with_capacity(challenges.len());
        for c in challenges {
            let leaf = order
                .iter()
                .position(|o| o.role == c.role)
                .ok_or(SimError::RoleMismatch("challenge lost while sorting"))?;
            let proof = tree.proof(leaf)?;
            let req = AttestRequest {
                challenge_id: c.challenge_id.clone(),
                quote: Base64Bytes::from(attest.as_slice()),
                signature: Base64Bytes::new(signature.marshal()),
                pcrs: pcrs.clone(),
                event_log: None,
                ima_log: None,
                nk_pub: NkPublic::from_keysplit(&nk_pub),
                inclusion: InclusionProof::from_merkle(&proof),
                answer: None,
            };
            req.validate()?;
            out.push(req);
        }
        self.pending = Some(Pending {
            nk,
            challenges: order
                .iter()
                .map(|c| (c.role, c.challenge_id.clone()))
                .collect(),
        });
        Ok(out)
    }

    /// Opens each role's half with NK (role and challenge bound by HPKE info and aad),
    /// combines `K_b = U xor V` and decrypts the payload with `aad = agent_id`.
    pub fn finish(&mut self, answers: &[AttestResponse]) -> Result<Zeroizing<Vec<u8>>, SimError> {
        let pending = self
            .pending
            .as_ref()
            .ok_or(SimError::OutOfOrder("finish before attest_requests"))?;
        let mut u: Option<Share> = None;
        let mut v: Option<Share> = None;
        let mut payload = None;
        for a in answers {
            a.validate()?;
            let (_, challenge_id) = pending
                .challenges
                .iter()
                .find(|(r, _)| *r == a.role)
                .ok_or(SimError::RoleMismatch(
                    "an answer came from a role that was not challenged",
                ))?;
            let share = pending.nk.open_share(
                &a.sealed_half.to_keysplit()?,
                a.role.as_str(),
                challenge_id.as_str().as_bytes(),
            )?;
            let slot = match a.role {
                Role::Verifier => {
                    payload = a.payload.as_ref();
                    &mut v
                }
                Role::Tenant => &mut u,
            };
            if slot.replace(share).is_some() {
                return Err(SimError::DuplicateRole(a.role.as_str()));
            }
        }
        let (Some(u), Some(v)) = (u, v) else {
            return Err(SimError::RoleMismatch(
                "both the verifier's and the tenant's answers are needed",
            ));
        };
        let payload = payload.ok_or(SimError::RoleMismatch(
            "the verifier's answer carries no payload",
        ))?;
        let ct = PayloadCiphertext::from_bytes(payload.as_bytes())?;
        let k_b = keysplit::combine(&u, &v);
        let plain = keysplit::decrypt_payload(&k_b, self.agent_id().as_str(), &ct)?;
        self.pending = None;
        Ok(plain)
    }

    /// Extends the release PCR with the "released" event, so no later quote in this boot
    /// satisfies the policy.
    pub fn extend_release_pcr(&mut self) -> Result<(), SimError> {
        self.tpm.measure(self.release_pcr, RELEASE_EVENT)
    }
}

/// What `unlockctl` deposits for a machine: `(Role::Verifier, V + payload ciphertext)` and
/// `(Role::Tenant, U)`, from fresh enrollment material for `payload`.
pub fn enroll_requests(
    agent_id: &AgentId,
    ek_pub: &[u8],
    policy: &PolicyDocument,
    payload: &[u8],
    max_attestations: u32,
) -> Result<[(Role, EnrollRequest); 2], SimError> {
    let material = keysplit::enroll_material(agent_id.as_str(), payload)?;
    let req = |share: &Share, payload_ct: Option<Base64Bytes>| EnrollRequest {
        agent_id: agent_id.clone(),
        ek_pub: Base64Bytes::from(ek_pub),
        policy: policy.clone(),
        policy_ref: None,
        max_attestations,
        max_boots: None,
        share: Base64Bytes::from(share.expose_secret().as_slice()),
        payload_ct,
        evidence: crate::proto::v1::EvidenceKind::Tpm,
    };
    Ok([
        (
            Role::Verifier,
            req(
                &material.v,
                Some(Base64Bytes::from(material.payload_ct.as_bytes())),
            ),
        ),
        (Role::Tenant, req(&material.u, None)),
    ])
}

/// The simulated firmware's measurements: the same on every machine and every boot.
fn measure_firmware(tpm: &mut SimTpm) -> Result<(), SimError> {
    for i in SIM_MEASURED_PCRS {
        tpm.measure(i, format!("sim firmware pcr {i}").as_bytes())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evidence::{self, Expected, Submitted};
    use crate::keysplit::{seal_share, Share};
    use crate::makecred::make_credential;
    use crate::proto::v1::{verify_activation_proof, Sealed, SessionInfo};
    use crate::wire::Signature;

    fn challenge(role: Role, id: &str, nonce: u8) -> ChallengeResponse {
        ChallengeResponse {
            challenge_id: Id::try_from(id.to_owned()).unwrap(),
            nonce: Base64Bytes::new(vec![nonce; 32]),
            pcr_selection: vec![crate::proto::v1::PcrSelection {
                hash: HashAlg::Sha256,
                pcrs: vec![0, 7, 15],
            }],
            hash_alg: HashAlg::Sha256,
            expires_at: 0,
            role,
            params: None,
        }
    }

    fn answer(
        role: Role,
        req: &AttestRequest,
        share: &Share,
        payload: Option<&[u8]>,
    ) -> AttestResponse {
        let nk = req.nk_pub.to_keysplit().unwrap();
        let sealed = seal_share(
            &nk,
            role.as_str(),
            req.challenge_id.as_str().as_bytes(),
            share,
        )
        .unwrap();
        AttestResponse {
            role,
            sealed_half: Sealed::from_keysplit(&sealed),
            payload: payload.map(Base64Bytes::from),
            session: SessionInfo {
                reset_count: 1,
                releases: 1,
                max_attestations: 1,
                terminated: true,
            },
        }
    }

    #[test]
    fn out_of_order_steps_are_refused() {
        let mut a = SimAgent::new().unwrap();
        assert!(matches!(a.finish(&[]), Err(SimError::OutOfOrder(_))));
        assert!(matches!(
            a.attest_requests(&[]),
            Err(SimError::OutOfOrder(_))
        ));
        let twice = [
            challenge(Role::Tenant, "a", 1),
            challenge(Role::Tenant, "b", 2),
        ];
        assert!(matches!(
            a.attest_requests(&twice),
            Err(SimError::DuplicateRole("tenant"))
        ));
    }

    #[test]
    fn learned_policy_selects_measured_and_release_pcrs() {
        let a = SimAgent::new().unwrap();
        let p = crate::policy::Policy::from_document(a.learn_policy()).unwrap();
        let sel: Vec<u8> = p.selection().banks()[0].indexes().collect();
        assert_eq!(sel, vec![0, 1, 2, 3, 4, 5, 6, 7, 15]);
        // Same firmware, same policy: one policy fits the simulated fleet.
        assert_eq!(SimAgent::new().unwrap().learn_policy(), a.learn_policy());
    }

    #[test]
    fn activation_proof_verifies_with_the_made_secret() {
        let a = SimAgent::new().unwrap();
        let secret = [3u8; 32];
        let made = make_credential(a.tpm().ek_public(), a.ak().ak().name(), &secret).unwrap();
        let reg = RegisterResponse {
            registration_id: Id::try_from("reg-1".to_owned()).unwrap(),
            credential_blob: Base64Bytes::from(&made.credential_blob[2..]),
            encrypted_secret: Base64Bytes::from(&made.encrypted_secret[2..]),
        };
        let act = a.activate_request(&reg).unwrap();
        verify_activation_proof(&secret, &reg.registration_id, act.proof.as_bytes()).unwrap();
        assert!(
            verify_activation_proof(&[4; 32], &reg.registration_id, act.proof.as_bytes()).is_err()
        );
    }

    #[test]
    fn evidence_validates_for_each_role_and_payload_is_recovered() {
        let mut a = SimAgent::new().unwrap();
        // Given in tenant-first order: the answers keep the input order, the tree the role order.
        let chs = [
            challenge(Role::Tenant, "t1", 2),
            challenge(Role::Verifier, "v1", 1),
        ];
        let reqs = a.attest_requests(&chs).unwrap();
        assert_eq!(reqs[0].challenge_id.as_str(), "t1");
        assert_eq!(reqs[0].inclusion.leaf_index, 1);
        assert_eq!(reqs[1].inclusion.leaf_index, 0);
        for (req, ch) in reqs.iter().zip(&chs) {
            let sig = Signature::parse(req.signature.as_bytes()).unwrap();
            let pcrs = req.pcr_values().unwrap();
            let proof = req.inclusion.to_merkle().unwrap();
            let v = evidence::validate(
                Expected {
                    ak: a.ak().ak(),
                    nonce: &ch.nonce().unwrap(),
                },
                Submitted {
                    attest: req.quote.as_bytes(),
                    signature: &sig,
                    pcrs: &pcrs,
                    nk_pub: req.nk_pub.key.as_bytes(),
                    proof: &proof,
                    event_log: None,
                    ima_log: None,
                },
            )
            .unwrap();
            assert_eq!(v.quote().reset_count(), 1);
        }
        // The other role's nonce does not validate against this role's proof.
        let sig = Signature::parse(reqs[0].signature.as_bytes()).unwrap();
        let pcrs = reqs[0].pcr_values().unwrap();
        let proof = reqs[0].inclusion.to_merkle().unwrap();
        assert!(evidence::validate(
            Expected {
                ak: a.ak().ak(),
                nonce: &[1; 32]
            },
            Submitted {
                attest: reqs[0].quote.as_bytes(),
                signature: &sig,
                pcrs: &pcrs,
                nk_pub: reqs[0].nk_pub.key.as_bytes(),
                proof: &proof,
                event_log: None,
                ima_log: None,
            },
        )
        .is_err());

        let id = a.agent_id();
        let m = keysplit::enroll_material(id.as_str(), b"luks key").unwrap();
        let answers = [
            answer(Role::Tenant, &reqs[0], &m.u, None),
            answer(
                Role::Verifier,
                &reqs[1],
                &m.v,
                Some(m.payload_ct.as_bytes()),
            ),
        ];
        // Halves swapped between roles do not open (HPKE info binds the role).
        let swapped = [
            answer(Role::Tenant, &reqs[1], &m.v, None),
            answer(
                Role::Verifier,
                &reqs[0],
                &m.u,
                Some(m.payload_ct.as_bytes()),
            ),
        ];
        assert!(matches!(a.finish(&swapped), Err(SimError::KeySplit(_))));
        // One half alone is not enough.
        assert!(matches!(
            a.finish(&answers[..1]),
            Err(SimError::RoleMismatch(_))
        ));
        assert_eq!(a.finish(&answers).unwrap().as_slice(), b"luks key");
        // Consumed: a second finish needs a new attest round.
        assert!(matches!(a.finish(&answers), Err(SimError::OutOfOrder(_))));
    }

    #[test]
    fn release_extend_changes_the_release_pcr_and_reboot_resets_it() {
        let mut a = SimAgent::new().unwrap();
        let before = *a.tpm().pcr(15).unwrap();
        a.extend_release_pcr().unwrap();
        assert_ne!(*a.tpm().pcr(15).unwrap(), before);
        let ak_name = a.ak().ak().name().to_vec();
        a.reboot().unwrap();
        assert_eq!(*a.tpm().pcr(15).unwrap(), before);
        assert_eq!(a.tpm().clock_info().reset_count, 2);
        // The AK survives the reboot, as the real agent's (a primary key) does.
        assert_eq!(a.ak().ak().name(), ak_name.as_slice());
    }
}
