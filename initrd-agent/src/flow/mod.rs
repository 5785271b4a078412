//! One unlock, start to finish (docs/protocol.md):
//!
//! 1. TPM: the AK, a primary key in the endorsement hierarchy (read back from
//!    [`crate::tpm::AK_PERSISTENT_HANDLE`], else derived: same template, same key), and the
//!    EK's public area from its TCG persistent handle when the TPM keeps it (its hash is the
//!    agent id). No key is derived when both are kept.
//! 2. Only when a role does not know the agent id or the AK (the first boot, a replaced TPM,
//!    an evicted handle): the EK is derived, and for each distinct role base URL `register`
//!    (EK, certificate, AK) and `activate` (TPM2_ActivateCredential, then the HMAC proof)
//!    bind the AK to the EK; the EK and AK are then kept in the TPM for the next boot.
//! 3. Each role (verifier, tenant) issues a challenge nonce and a PCR selection.
//! 4. NK is generated; the nonces go into a Merkle tree (verifier = leaf 0, tenant =
//!    leaf 1); ONE quote over the union of the selections binds
//!    `SHA-256("unlock/v1" || root || SHA-256(NK))`. The PCRs are read after the quote and
//!    checked against it locally.
//! 5. Each role gets the same evidence with its own inclusion proof and answers its half of
//!    K_b sealed to NK; the verifier also sends the payload ciphertext.
//! 6. `K_b = U xor V`, the payload (the LUKS key) is decrypted in memory, the release PCR is
//!    extended, and only then is the key written atomically with mode 0400 (an extend that
//!    fails means no key file). The dracut module's latch unit extends the same PCR again
//!    before switch-root on every path, released or not.
//!
//! On the IAK path (`iak_handle` and `iak_cert` configured, see `flow/iak.rs`), step 1's AK is
//! the device's IAK and step 2 is one `register/iak` with its certificate per role, with
//! no activation round.
//!
//! Requests to the two roles in one step run in parallel (they are independent servers in
//! a split-trust deployment, and boot time is what the user waits for).

mod error;
mod iak;
pub mod round;
pub mod select;
mod snp_vtpm;

pub use select::pcr_banks;

pub use error::{
    AnswerError, FlowError, EXIT_LOCAL, EXIT_REFUSED, EXIT_UNLOCKED, EXIT_UNREACHABLE,
};

use std::path::PathBuf;
use std::time::{Duration, Instant};

use verifier_core::keysplit::{self, NkPrivate, PayloadCiphertext, Share};
use verifier_core::merkle::{quote_extra_data, MerkleTree};
use verifier_core::proto::v1::{
    self, activation_proof, path, ActivateRequest, ActivateResponse, AgentId, AttestRequest,
    AttestResponse, ChallengeRequest, ChallengeResponse, InclusionProof, NkPublic, RegisterRequest,
    RegisterResponse, Role,
};
use verifier_core::proto::Base64Bytes;
use verifier_core::wire::HashAlg;

use crate::config::Config;
use crate::http::{Client, HttpError};
use crate::keyfile::write_key_file;
use crate::logs::{read_event_log, read_ima_log};
use crate::tpm::{Ak, AkHierarchy, Ek, EkKind, Tpm};
use verifier_core::proto::v1::{ErrorCode, EvidenceKind};

/// The PCR IMA extends; the IMA list is only sent when the quote covers it (otherwise the
/// server must refuse it as unverifiable).
const IMA_PCR: u8 = 10;

/// The roles, in the protocol's fixed order (their Merkle leaf index).
pub const ROLES: [Role; 2] = [Role::Verifier, Role::Tenant];

/// The canonical lowercase name of a role: its JSON spelling, and the `role` in the HPKE
/// `info` (`"unlock/v1 share" || role`) the server seals the half with.
pub fn role_name(role: Role) -> &'static str {
    role.as_str()
}

/// A successful unlock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unlocked {
    /// Where the key was written.
    pub key_file: PathBuf,
}

/// Per-step timing, printed as `initrd-agent: step <name> <ms> ms` when verbose. Lines that
/// explain what the agent does next are `initrd-agent: note: ...`; the one status line of a
/// run is everything else.
#[derive(Debug)]
pub struct Steps {
    verbose: bool,
    done: Vec<(&'static str, Duration)>,
}

impl Steps {
    /// A recorder that prints when `verbose`.
    pub fn new(verbose: bool) -> Self {
        Self {
            verbose,
            done: Vec::new(),
        }
    }

    /// Records that step `name` started at `since` and has just ended.
    pub fn record(&mut self, name: &'static str, since: Instant) {
        let took = since.elapsed();
        if self.verbose {
            eprintln!("initrd-agent: step {name} {} ms", took.as_millis());
        }
        self.done.push((name, took));
    }

    /// The steps recorded so far.
    pub fn done(&self) -> &[(&'static str, Duration)] {
        &self.done
    }
}

/// The role endpoints of a configuration, in [`ROLES`] order.
fn endpoints(config: &Config) -> [(Role, &str); 2] {
    [
        (Role::Verifier, config.verifier_url.as_str()),
        (Role::Tenant, config.tenant_url.as_str()),
    ]
}

/// Runs `f` for each item, in parallel when there is more than one; results in item order.
fn par<T, R, F>(items: &[T], f: F) -> Vec<R>
where
    T: Sync,
    R: Send,
    F: Fn(&T) -> R + Sync,
{
    if items.len() < 2 {
        return items.iter().map(&f).collect();
    }
    std::thread::scope(|s| {
        let f = &f;
        let handles: Vec<_> = items
            .iter()
            .map(|item| {
                std::thread::Builder::new()
                    .name("initrd-agent-http".into())
                    .spawn_scoped(s, move || f(item))
            })
            .collect();
        handles
            .into_iter()
            .zip(items)
            .map(|(h, item)| match h {
                // A failed spawn (no memory for a stack) runs the request here instead.
                Err(_) => f(item),
                Ok(h) => h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)),
            })
            .collect()
    })
}

/// Unlocks: runs the whole protocol and writes the key. `started` is the process start, from
/// which the overall budget (`config.timeout`) counts.
pub fn unlock(config: &Config, steps: &mut Steps, started: Instant) -> Result<Unlocked, FlowError> {
    if config.evidence == EvidenceKind::AzureSnpVtpm {
        return snp_vtpm::unlock(config, steps, started);
    }
    let deadline = started + config.timeout;
    let client = Client::new(config, deadline)?;

    let t = Instant::now();
    let mut tpm = Tpm::open(&config.tcti)?;
    if let Some(iak_config) = &config.iak {
        let ak = iak::iak(&mut tpm, iak_config)?;
        let known_ek = tpm.persistent_ek_id(config.ek);
        steps.record("tpm", t);
        let result = known_ek
            .map_err(FlowError::from)
            .and_then(|ek| iak::boot(config, iak_config, &client, &mut tpm, &ak, ek, steps));
        if steps.verbose {
            eprintln!("initrd-agent: note: tpm commands {}", tpm.commands());
        }
        return result;
    }
    let (ak, ak_persistent) = tpm.primary_ak()?;
    let known_ek = tpm.persistent_ek_id(config.ek);
    steps.record("tpm", t);
    let result = known_ek
        .map_err(FlowError::from)
        .and_then(|ek| boot(config, &client, &mut tpm, (&ak, ak_persistent), ek, steps));
    // A transient AK is flushed (the resource manager would at exit; a direct /dev/tpm0
    // user would keep it); a persistent one is only closed.
    let _ = tpm.flush_ak(ak);
    if steps.verbose {
        eprintln!("initrd-agent: note: tpm commands {}", tpm.commands());
    }
    result
}

/// Registration alone (at enrollment, `initrd-agent register`): the AK derived from the
/// endorsement seed and the EK, registered and activated with every role, kept in the TPM.
/// The roles pin this AK; the first boot then reads both back and goes to the challenges.
pub fn register(
    config: &Config,
    steps: &mut Steps,
    started: Instant,
) -> Result<AgentId, FlowError> {
    if config.evidence == EvidenceKind::AzureSnpVtpm {
        return snp_vtpm::register_only(config, steps, started);
    }
    let client = Client::new(config, started + config.timeout)?;
    let mut tpm = Tpm::open(&config.tcti)?;
    if let Some(iak_config) = &config.iak {
        return iak::register(config, iak_config, &client, &mut tpm, steps);
    }
    let ak = tpm.create_primary_ak(AkHierarchy::Endorsement)?;
    let result = tpm
        .create_ek(config.ek)
        .map_err(FlowError::from)
        .and_then(|ek| {
            let r = read_ek_credentials(&mut tpm, config.ek)
                .map_err(FlowError::from)
                .and_then(|cert| {
                    let agent_id = AgentId::of_ek(ek.public());
                    let roles = endpoints(config);
                    register_all(
                        &client,
                        &mut tpm,
                        (&ek, &ak),
                        cert,
                        &roles,
                        &agent_id,
                        steps,
                    )?;
                    keep_keys(&mut tpm, &ek, &ak);
                    Ok(agent_id)
                });
            let _ = tpm.flush_ek(ek);
            r
        });
    let _ = tpm.flush_ak(ak);
    result
}

/// The boot: with the EK and AK the TPM keeps (read back, nothing derived), straight to
/// the challenges, since both roles pinned the AK when it was first activated. Only when a
/// role does not know them (the first boot after enrollment, a replaced TPM, an evicted
/// handle) does the agent derive the EK, register and activate with every role, and keep
/// the EK and AK in the TPM for the next boot.
fn boot(
    config: &Config,
    client: &Client,
    tpm: &mut Tpm,
    (ak, ak_persistent): (&Ak, bool),
    known_ek: Option<AgentId>,
    steps: &mut Steps,
) -> Result<Unlocked, FlowError> {
    let roles = endpoints(config);
    if let Some(agent_id) = known_ek {
        match attest_rounds(config, client, tpm, ak, &agent_id, steps) {
            Ok(halves) => return finish(config, tpm, &agent_id, halves, steps),
            Err(e) if needs_registration(&e) => {
                eprintln!("initrd-agent: note: {e}; registering this TPM's EK and AK");
            }
            Err(e) => return Err(e),
        }
    }
    let t = Instant::now();
    // What sits at the persistent handle was refused or is not ours (anything with the AK
    // template's attributes passes the local check): register the AK derived from the
    // endorsement seed instead, and put it there.
    let derived = if ak_persistent {
        Some(tpm.create_primary_ak(AkHierarchy::Endorsement)?)
    } else {
        None
    };
    let ak = derived.as_ref().unwrap_or(ak);
    let ek = tpm.create_ek(config.ek);
    let result = ek.map_err(FlowError::from).and_then(|ek| {
        let r = read_ek_credentials(tpm, config.ek)
            .map_err(FlowError::from)
            .and_then(|cert| {
                steps.record("ek", t);
                let agent_id = AgentId::of_ek(ek.public());
                register_all(client, tpm, (&ek, ak), cert, &roles, &agent_id, steps)?;
                keep_keys(tpm, &ek, ak);
                let halves = attest_rounds(config, client, tpm, ak, &agent_id, steps)?;
                finish(config, tpm, &agent_id, halves, steps)
            });
        let _ = tpm.flush_ek(ek);
        r
    });
    if let Some(d) = derived {
        let _ = tpm.flush_ak(d);
    }
    result
}

/// After a registration: the EK at its TCG handle (when free) and the AK at
/// [`crate::tpm::AK_PERSISTENT_HANDLE`], so the next boot reads them back instead of
/// deriving them. Best effort: a TPM that refuses (owner auth set, NV full) only costs the
/// next boot this registration again.
fn keep_keys(tpm: &mut Tpm, ek: &Ek, ak: &Ak) {
    if let Err(e) = tpm.persist_ak(ak) {
        eprintln!(
            "initrd-agent: note: the AK was not made persistent ({e}); the next boot derives it again"
        );
    }
    if let Err(e) = tpm.persist_ek_if_free(ek) {
        eprintln!(
            "initrd-agent: note: the EK was not made persistent ({e}); the next boot registers again"
        );
    }
}

/// A role that does not know this agent id or AK: register (and activate) first.
fn needs_registration(e: &FlowError) -> bool {
    matches!(
        e,
        FlowError::Http {
            source: HttpError::Refused {
                code: ErrorCode::UnknownAgent | ErrorCode::NotEnrolled,
                ..
            },
            ..
        }
    )
}

/// One entry per distinct base URL (both roles may be served at one): registration goes
/// once to each, and a refusal is reported for the first role that uses that base.
fn distinct_bases<'a>(roles: impl IntoIterator<Item = (Role, &'a str)>) -> Vec<(Role, &'a str)> {
    let mut bases: Vec<(Role, &str)> = Vec::new();
    for (role, base) in roles {
        if !bases.iter().any(|(_, b)| *b == base) {
            bases.push((role, base));
        }
    }
    bases
}

/// Every role answered a registration or an activation for this agent (its EK's id): an
/// answer naming another agent means a role mixed up machines, and nothing goes on.
fn expect_agent_id(
    roles: impl Iterator<Item = Role>,
    answers: Vec<Result<ActivateResponse, HttpError>>,
    agent_id: &AgentId,
) -> Result<(), FlowError> {
    for (role, answer) in roles.zip(answers) {
        let answer = answer.map_err(http_err(role))?;
        if answer.agent_id != *agent_id {
            return Err(answer_err(role)(AnswerError::AgentIdMismatch {
                expected: agent_id.to_string(),
                got: answer.agent_id.to_string(),
            }));
        }
    }
    Ok(())
}

fn http_err(role: Role) -> impl Fn(HttpError) -> FlowError {
    move |source| FlowError::Http {
        role: role_name(role),
        source,
    }
}

fn answer_err(role: Role) -> impl Fn(AnswerError) -> FlowError {
    move |reason| FlowError::Answer {
        role: role_name(role),
        reason,
    }
}

/// The EK certificate (DER) and the CA certificates sent with it.
type EkCredentials = (Option<Vec<u8>>, Vec<Vec<u8>>);

/// The EK certificate from NV and, when there is one, the CA certificates the TPM keeps
/// in the chain indices. A chain that cannot be read is left out (the server may hold the
/// intermediates itself; without them it refuses, naming the missing issuer).
fn read_ek_credentials(tpm: &mut Tpm, kind: EkKind) -> Result<EkCredentials, crate::tpm::TpmError> {
    let Some(cert) = tpm.read_ek_cert(kind)? else {
        return Ok((None, Vec::new()));
    };
    let chain = tpm.read_ek_chain().unwrap_or_else(|e| {
        eprintln!("initrd-agent: note: the EK certificate chain in NV is not sent: {e}");
        Vec::new()
    });
    Ok((Some(cert), chain))
}

/// Registration and activation with every distinct base URL.
fn register_all(
    client: &Client,
    tpm: &mut Tpm,
    (ek, ak): (&Ek, &Ak),
    (ek_cert, ek_chain): EkCredentials,
    roles: &[(Role, &str)],
    agent_id: &AgentId,
    steps: &mut Steps,
) -> Result<(), FlowError> {
    let bases = distinct_bases(roles.iter().copied());
    let req = RegisterRequest {
        ek_pub: Base64Bytes::from(ek.public()),
        ek_cert: ek_cert.map(Base64Bytes::new),
        ek_chain: ek_chain.into_iter().map(Base64Bytes::new).collect(),
        ak_pub: Base64Bytes::from(ak.public()),
    };

    let t = Instant::now();
    let regs = par(&bases, |(_, base)| {
        client.post::<_, RegisterResponse>(base, path::REGISTER, &req)
    });
    let mut activations = Vec::with_capacity(bases.len());
    for ((role, base), reg) in bases.iter().zip(regs) {
        activations.push((*role, *base, reg.map_err(http_err(*role))?));
    }
    steps.record("register", t);

    let t = Instant::now();
    let mut proofs = Vec::with_capacity(activations.len());
    for (role, base, reg) in &activations {
        let secret = tpm.activate_credential_contents(
            ak,
            ek,
            reg.credential_blob.as_bytes(),
            reg.encrypted_secret.as_bytes(),
        )?;
        let proof = activation_proof(&secret, &reg.registration_id);
        proofs.push((
            *role,
            *base,
            ActivateRequest {
                registration_id: reg.registration_id.clone(),
                proof: Base64Bytes::from(proof.as_slice()),
            },
        ));
    }
    let answers = par(&proofs, |(_, base, req)| {
        client.post::<_, ActivateResponse>(base, path::ACTIVATE, req)
    });
    expect_agent_id(proofs.iter().map(|b| b.0), answers, agent_id)?;
    steps.record("activate", t);
    Ok(())
}

/// Rounds of challenge, quote and attest one run may take. A role whose challenge expired or
/// vanished while it was unreachable gets a fresh challenge and a fresh quote bound to the
/// same NK; the roles that already answered are not asked again (and would answer again
/// without counting if they were: the server's same-NK rule).
const MAX_ROUNDS: usize = 3;

/// The halves (and the verifier's payload) received so far.
#[derive(Default)]
struct Halves {
    shares: Vec<(Role, Share)>,
    payload: Option<Base64Bytes>,
}

/// Challenge, quote and attest with every role, one NK for the whole run; a role whose
/// challenge expired gets a new round (at most [`MAX_ROUNDS`]).
fn attest_rounds(
    config: &Config,
    client: &Client,
    tpm: &mut Tpm,
    ak: &Ak,
    agent_id: &AgentId,
    steps: &mut Steps,
) -> Result<Halves, FlowError> {
    let roles = endpoints(config);
    // One NK for the whole run: only this process holds it, so every half sealed to it,
    // in any round, is this process's.
    let nk = NkPrivate::generate().map_err(FlowError::Nk)?;
    let mut halves = Halves::default();
    let mut pending: Vec<(Role, &str)> = roles.to_vec();
    let run = Round {
        config,
        client,
        ak,
        agent_id,
        nk: &nk,
    };
    for round in 1..=MAX_ROUNDS {
        let mut failed = run.attest(tpm, &pending, &mut halves, steps)?;
        if failed.is_empty() {
            break;
        }
        if round == MAX_ROUNDS {
            return Err(failed.swap_remove(0).1);
        }
        for (_, e) in &failed {
            eprintln!(
                "initrd-agent: note: {e}; asking again with a new challenge (round {})",
                round + 1
            );
        }
        pending = roles
            .iter()
            .filter(|(r, _)| failed.iter().any(|(f, _)| f == r))
            .copied()
            .collect();
    }
    Ok(halves)
}

/// The halves recombined, the door closed, the key written.
fn finish(
    config: &Config,
    tpm: &mut Tpm,
    agent_id: &AgentId,
    halves: Halves,
    steps: &mut Steps,
) -> Result<Unlocked, FlowError> {
    let key = recombine(agent_id, halves, steps)?;

    // Close the door BEFORE the key leaves this process: once the release PCR is extended
    // no quote in this boot can pass the policy again. If the extend fails, the key is
    // dropped unwritten (the boot falls back to the passphrase); a key on disk in a boot
    // whose PCR still looks unreleased never exists, not even for a moment.
    let t = Instant::now();
    tpm.extend_release(config.release_pcr)
        .map_err(FlowError::Extend)?;
    steps.record("extend", t);

    let t = Instant::now();
    write_key_file(&config.key_file, &key)?;
    drop(key);
    steps.record("write", t);

    Ok(Unlocked {
        key_file: config.key_file.clone(),
    })
}

/// Whether a role's failure is cured by a new challenge: its challenge expired or is
/// unknown (the role was unreachable past the challenge's lifetime, or lost it).
fn new_challenge_helps(e: &FlowError) -> bool {
    matches!(
        e,
        FlowError::Http {
            source: HttpError::Refused {
                code: ErrorCode::ChallengeExpired | ErrorCode::UnknownChallenge,
                ..
            },
            ..
        }
    )
}

/// An encoded attest body and where it goes.
type Body<'r> = (Role, &'r str, Vec<u8>);

/// What one round needs besides the TPM.
struct Round<'a> {
    config: &'a Config,
    client: &'a Client,
    ak: &'a Ak,
    agent_id: &'a AgentId,
    nk: &'a NkPrivate,
}

impl Round<'_> {
    /// Challenges from `roles`, ONE quote over their nonces and NK, evidence to each.
    /// Halves received go into `halves`; failures a new challenge cures are returned, any
    /// other failure ends the run.
    fn attest(
        &self,
        tpm: &mut Tpm,
        roles: &[(Role, &str)],
        halves: &mut Halves,
        steps: &mut Steps,
    ) -> Result<Vec<(Role, FlowError)>, FlowError> {
        let challenges = self.challenges(roles, steps)?;
        let bodies = self.evidence(tpm, roles, &challenges, steps)?;
        let t = Instant::now();
        let answers = par(&bodies, |(_, base, body)| {
            self.client
                .post_encoded::<AttestResponse>(base, path::ATTEST, body)
        });
        let mut failed = Vec::new();
        for (((role, _, _), answer), ch) in bodies.iter().zip(answers).zip(&challenges) {
            let answer = match answer.map_err(http_err(*role)) {
                Ok(a) => a,
                Err(e) if new_challenge_helps(&e) => {
                    failed.push((*role, e));
                    continue;
                }
                Err(e) => return Err(e),
            };
            let bad = answer_err(*role);
            if answer.role != *role {
                return Err(bad(AnswerError::WrongRole {
                    expected: role_name(*role),
                    got: role_name(answer.role),
                }));
            }
            let sealed = answer
                .sealed_half
                .to_keysplit()
                .map_err(|e| bad(AnswerError::Field(e)))?;
            let share = self
                .nk
                .open_share(
                    &sealed,
                    role_name(*role),
                    ch.challenge_id.as_str().as_bytes(),
                )
                .map_err(|e| bad(AnswerError::Open(e)))?;
            halves.shares.push((*role, share));
            if *role == Role::Verifier {
                halves.payload = answer.payload;
            }
        }
        steps.record("attest", t);
        Ok(failed)
    }

    /// A challenge from each role, checked.
    fn challenges(
        &self,
        roles: &[(Role, &str)],
        steps: &mut Steps,
    ) -> Result<Vec<ChallengeResponse>, FlowError> {
        let t = Instant::now();
        let req = ChallengeRequest {
            agent_id: self.agent_id.clone(),
            ak_name: Base64Bytes::from(self.ak.name()),
        };
        let answers = par(roles, |(_, base)| {
            self.client
                .post::<_, ChallengeResponse>(base, path::CHALLENGE, &req)
        });
        let mut challenges = Vec::with_capacity(roles.len());
        for ((role, _), answer) in roles.iter().zip(answers) {
            let ch = answer.map_err(http_err(*role))?;
            check_challenge(*role, &ch)?;
            challenges.push(ch);
        }
        steps.record("challenge", t);
        Ok(challenges)
    }

    /// The quote over the challenges' Merkle root and NK, the logs, and one encoded attest
    /// body per role with its own inclusion proof. Encoded once, so a retry after a lost
    /// answer sends the same evidence.
    fn evidence<'r>(
        &self,
        tpm: &mut Tpm,
        roles: &[(Role, &'r str)],
        challenges: &[ChallengeResponse],
        steps: &mut Steps,
    ) -> Result<Vec<Body<'r>>, FlowError> {
        let t = Instant::now();
        let mut nonces = Vec::with_capacity(challenges.len());
        for ((role, _), ch) in roles.iter().zip(challenges) {
            nonces.push(
                ch.nonce()
                    .map_err(|e| answer_err(*role)(AnswerError::Field(e)))?,
            );
        }
        let selections: Vec<&[v1::PcrSelection]> = challenges
            .iter()
            .map(|c| c.pcr_selection.as_slice())
            .collect();
        let selection = select::union(&selections)
            .map_err(|e| answer_err(Role::Verifier)(AnswerError::Selection(e)))?;
        let nk_pub = self.nk.public();
        let tree = MerkleTree::new(&nonces).map_err(FlowError::Merkle)?;
        let extra_data = quote_extra_data(&tree.root(), nk_pub.as_bytes());
        let quoted = tpm.quote_with_pcrs(self.ak, &extra_data, &selection)?;
        steps.record("quote", t);

        let t = Instant::now();
        let event_log = read_event_log(&self.config.event_log)?;
        let ima_log = if select::selects(&selection, IMA_PCR) {
            read_ima_log(&self.config.ima_log)?
        } else {
            None
        };
        steps.record("logs", t);

        let pcrs = select::pcr_banks(&selection, &quoted.pcrs);
        let mut bodies = Vec::with_capacity(roles.len());
        for (leaf, ((role, base), ch)) in roles.iter().zip(challenges).enumerate() {
            let proof = tree.proof(leaf).map_err(FlowError::Merkle)?;
            let req = AttestRequest {
                challenge_id: ch.challenge_id.clone(),
                quote: Base64Bytes::from(quoted.quote.attest.as_slice()),
                signature: Base64Bytes::from(quoted.quote.signature.as_slice()),
                pcrs: pcrs.clone(),
                event_log: event_log.clone().map(Base64Bytes::new),
                ima_log: ima_log.clone(),
                nk_pub: NkPublic::from_keysplit(&nk_pub),
                inclusion: InclusionProof::from_merkle(&proof),
                answer: round::answer(
                    self.config.evidence,
                    round::answerer_for(self.config.evidence),
                    ch,
                    &quoted.quote.attest,
                )
                .map_err(answer_err(*role))?,
            };
            let body = v1::encode(&req).map_err(|e| http_err(*role)(HttpError::Encode(e)))?;
            bodies.push((*role, *base, body));
        }
        Ok(bodies)
    }
}

/// `K_b = U xor V`, then the payload (the disk key).
fn recombine(
    agent_id: &AgentId,
    halves: Halves,
    steps: &mut Steps,
) -> Result<zeroize::Zeroizing<Vec<u8>>, FlowError> {
    let t = Instant::now();
    let share = |r: Role| {
        halves
            .shares
            .iter()
            .find(|(role, _)| *role == r)
            .map(|(_, s)| s)
    };
    let verifier_err = answer_err(Role::Verifier);
    let (Some(u), Some(v)) = (share(Role::Tenant), share(Role::Verifier)) else {
        return Err(verifier_err(AnswerError::Selection(
            "a role's share is missing",
        )));
    };
    let k_b = keysplit::combine(u, v);
    let payload = halves.payload.as_ref().ok_or_else(|| {
        verifier_err(AnswerError::Payload(
            keysplit::KeySplitError::PayloadDecrypt,
        ))
    })?;
    let ct = PayloadCiphertext::from_bytes(payload.as_bytes())
        .map_err(|e| verifier_err(AnswerError::Payload(e)))?;
    let key = keysplit::decrypt_payload(&k_b, agent_id.as_str(), &ct)
        .map_err(|e| verifier_err(AnswerError::Payload(e)))?;
    drop(k_b);
    steps.record("decrypt", t);
    Ok(key)
}

/// A challenge must come from the role asked and ask for what our AK can sign.
fn check_challenge(role: Role, ch: &ChallengeResponse) -> Result<(), FlowError> {
    let bad = answer_err(role);
    if ch.role != role {
        return Err(bad(AnswerError::WrongRole {
            expected: role_name(role),
            got: role_name(ch.role),
        }));
    }
    if ch.hash_alg != HashAlg::Sha256 {
        return Err(bad(AnswerError::HashAlg(ch.hash_alg)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_names_are_the_wire_names() {
        for role in ROLES {
            let json = serde_json::to_string(&role).unwrap();
            assert_eq!(json, format!("\"{}\"", role_name(role)));
        }
    }
}
