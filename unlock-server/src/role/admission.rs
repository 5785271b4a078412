//! Enrollment admission: which unknown machines may enroll themselves (`[[auto_enroll]]`
//! rules, off when there are none), and the deposit that completes such an enrollment.
//!
//! At registration, a machine whose EK this role has no enrollment for is tried against the
//! rules in order. A rule admits it by its EK certificate (`ek_ca`: chains to the rule's own
//! CAs, optional TPM manufacturer and model) or, only when a rule says so by name, by
//! nothing at all (`tofu`). An admitted machine gets the usual MakeCredential and activation,
//! which pin its AK; then it deposits its share ([`RoleService::deposit`]), quoted by that
//! AK over the deposit and the admission's nonce, and only then is it enrolled (armed). Each
//! role applies its own rules to its own registrations, so a machine is auto-enrolled only if
//! both roles admit it.
//!
//! A rule is a [`Recognizer`] (how a machine is recognised) plus what it is enrolled with;
//! an `iak_ca` recognizer (IAK/IDevID certificate from an OEM CA) is one more variant.

use std::time::{Duration, UNIX_EPOCH};

use verifier_core::ekcert::{verify_ek_certificate, TrustStore};
use verifier_core::keysplit::{wrap_context, Share};
use verifier_core::proto::v1::{
    DepositNonceRequest, DepositNonceResponse, DepositRequest, DepositResponse, ErrorCode,
    MAX_ADMITTED_BY,
};
use verifier_core::proto::Base64Bytes;
use verifier_core::wire::{HashAlg, Public};

use super::{MachineQuote, RoleService};
use crate::config::{AutoEnroll, AutoEnrollMode, AutoEnrollRule};
use crate::error::ApiError;
use crate::store::{AdmissionBudget, Admitted, NewAdmission, NewEnrollment, StoreError};

/// How a rule recognises the machines it admits.
#[derive(Debug)]
pub enum Recognizer {
    /// The EK certificate chains to `trust` and names this TPM manufacturer and model.
    EkCa {
        /// The rule's own CAs.
        trust: TrustStore,
        /// Required TPMManufacturer, if any.
        manufacturer: Option<String>,
        /// Required TPMModel, if any.
        model: Option<String>,
    },
    /// Any EK (trust on first use, named by the rule).
    Tofu,
}

/// A loaded rule.
#[derive(Debug)]
pub struct Rule {
    /// As configured.
    pub config: AutoEnrollRule,
    /// Its recognizer, CA files loaded.
    pub recognizer: Recognizer,
}

/// A role's admission rules and bounds (empty: auto-enrollment off).
#[derive(Debug, Default)]
pub struct Admission {
    rules: Vec<Rule>,
    max_waiting: u32,
    deposit_secs: u64,
}

impl Admission {
    /// Loads the rules' CA files.
    pub fn load(
        cfg: &AutoEnroll,
        load_trust: impl Fn(&[std::path::PathBuf]) -> anyhow::Result<TrustStore>,
    ) -> anyhow::Result<Self> {
        let mut rules = Vec::new();
        for r in &cfg.rules {
            let recognizer = match r.mode {
                AutoEnrollMode::EkCa => Recognizer::EkCa {
                    trust: load_trust(&r.ca)?,
                    manufacturer: r.tpm_manufacturer.clone(),
                    model: r.tpm_model.clone(),
                },
                AutoEnrollMode::Tofu => {
                    tracing::warn!(rule = %r.name, "auto-enrollment rule in TOFU mode: any machine that reaches this server can enroll a TPM of its own");
                    Recognizer::Tofu
                }
            };
            rules.push(Rule {
                config: r.clone(),
                recognizer,
            });
        }
        Ok(Self {
            rules,
            max_waiting: cfg.max_waiting,
            deposit_secs: cfg.deposit_secs,
        })
    }

    /// True when no rule is configured (auto-enrollment off).
    pub fn is_off(&self) -> bool {
        self.rules.is_empty()
    }

    fn rule(&self, name: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.config.name == name)
    }
}

/// Why one rule did not admit a machine.
fn recognise(rule: &Rule, cert: Option<&[u8]>, ek: &Public, now: i64) -> Result<String, String> {
    let name = &rule.config.name;
    match &rule.recognizer {
        Recognizer::Tofu => Ok(format!("rule {name} (tofu: any EK)")),
        Recognizer::EkCa {
            trust,
            manufacturer,
            model,
        } => {
            let der = cert.ok_or_else(|| format!("rule {name}: no EK certificate"))?;
            let at = UNIX_EPOCH + Duration::from_secs(u64::try_from(now).unwrap_or(0));
            let verified = verify_ek_certificate(der, &[], trust, ek, at)
                .map_err(|e| format!("rule {name}: {e}"))?;
            let info = verified.tpm_info().cloned().unwrap_or_default();
            let wants = |want: &Option<String>, got: &Option<String>, what: &str| match want {
                Some(w) if got.as_deref() != Some(w.as_str()) => Err(format!(
                    "rule {name}: the certificate's TPM {what} is {:?}, the rule requires {w:?}",
                    got.as_deref().unwrap_or("absent")
                )),
                _ => Ok(()),
            };
            wants(manufacturer, &info.manufacturer, "manufacturer")?;
            wants(model, &info.model, "model")?;
            let anchor = HashAlg::Sha256.hash(verified.chain().anchor_subject());
            let mut how = format!(
                "rule {name} (ek_ca: CA subject sha256:{}",
                hex::encode(anchor.as_bytes().get(..8).unwrap_or_default())
            );
            for (k, v) in [("manufacturer", &info.manufacturer), ("model", &info.model)] {
                if let Some(v) = v {
                    let v: String = v.chars().filter(|c| !c.is_control()).take(64).collect();
                    how.push_str(&format!(", {k} {v}"));
                }
            }
            how.push(')');
            Ok(how)
        }
    }
}

impl RoleService {
    /// True when this role has no auto-enrollment rule.
    pub(super) fn auto_enroll_off(&self) -> bool {
        self.admission.is_off()
    }

    /// Registration of an EK this role has no enrollment for: admitted by the first rule
    /// that recognises it (recorded, within the rule's and the role's budgets), or refused.
    /// Without rules this is the refusal registration always gave (`not_enrolled`). The
    /// certificate is checked here, before anything is written: a stranger's EK without a
    /// certificate from a rule's CA costs one chain check and is charged to its source.
    pub(super) fn admit(
        &self,
        agent_id: &str,
        ek_bytes: &[u8],
        ek: &Public,
        cert: Option<&[u8]>,
        now: i64,
    ) -> Result<(), ApiError> {
        let not_enrolled = || {
            ApiError::new(
                ErrorCode::NotEnrolled,
                format!(
                    "agent {agent_id} is not enrolled with the {} role",
                    self.role.as_str()
                ),
            )
        };
        if self.admission.is_off() {
            return Err(not_enrolled());
        }
        let mut why = Vec::new();
        let mut admitted = None;
        for rule in &self.admission.rules {
            match recognise(rule, cert, ek, now) {
                Ok(how) => {
                    admitted = Some((rule, how));
                    break;
                }
                Err(e) => why.push(e),
            }
        }
        let Some((rule, mut how)) = admitted else {
            tracing::info!(role = self.role.as_str(), agent_id, reasons = %why.join("; "), "auto-enrollment refused: no rule admits this EK");
            let mut e = ApiError::new(
                ErrorCode::EkCertUntrusted,
                format!(
                    "agent {agent_id} is not enrolled and no auto-enrollment rule of the {} role admits it: {}",
                    self.role.as_str(),
                    why.join("; ")
                ),
            );
            if cert.is_none() {
                // Nothing was checked: as cheap as an unknown EK without rules.
                e = not_enrolled();
            }
            return Err(e);
        };
        how.truncate(MAX_ADMITTED_BY);
        let mut nonce = [0u8; 32];
        aws_lc_rs::rand::fill(&mut nonce).map_err(|_| ApiError::internal("RNG failed"))?;
        let deposit_secs = i64::try_from(self.admission.deposit_secs).unwrap_or(i64::MAX);
        let r = self.store.admit(
            &NewAdmission {
                agent_id,
                ek_pub: ek_bytes,
                rule: &rule.config.name,
                admitted_by: &how,
                nonce,
                expires_at: now.saturating_add(deposit_secs),
            },
            AdmissionBudget {
                rule_per_hour: rule.config.max_per_hour,
                max_waiting: self.admission.max_waiting,
            },
            now,
        );
        match r {
            Ok(Admitted::New) => {
                tracing::warn!(role = self.role.as_str(), agent_id, rule = %rule.config.name, admitted_by = %how, "auto-enrollment: machine admitted, waiting for its deposit");
                Ok(())
            }
            Ok(Admitted::Waiting) => Ok(()),
            Err(StoreError::AdmissionBudgetSpent(m)) => {
                tracing::warn!(role = self.role.as_str(), agent_id, rule = %rule.config.name, reason = %m, "auto-enrollment refused: budget spent");
                Err(ApiError::new(
                    ErrorCode::RateLimited,
                    format!("auto-enrollment refused for now: {m}"),
                ))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The EK certificate check of an enrolled machine that a rule admitted: the rule's own
    /// CAs, while the rule is configured (a TOFU rule checks nothing). `None`: the machine was
    /// not admitted by a rule that is still configured (the role's `ek_ca` decides).
    pub(super) fn recheck_admitted(
        &self,
        agent_id: &str,
        ek: &Public,
        cert: Option<&[u8]>,
        now: i64,
    ) -> Result<Option<()>, ApiError> {
        if self.admission.is_off() {
            return Ok(None);
        }
        let Some(a) = self.store.admission(agent_id)? else {
            return Ok(None);
        };
        let Some(rule) = self.admission.rule(&a.rule) else {
            return Ok(None);
        };
        recognise(rule, cert, ek, now)
            .map(|_| Some(()))
            .map_err(|e| ApiError::new(ErrorCode::EkCertUntrusted, e))
    }

    /// The nonce of the admission waiting for `req.agent_id`'s deposit.
    pub fn deposit_nonce(
        &self,
        req: &DepositNonceRequest,
        now: i64,
    ) -> Result<DepositNonceResponse, ApiError> {
        let agent_id = req.agent_id.as_str();
        let a = self
            .store
            .admission(agent_id)?
            .filter(|a| {
                a.deposited_at.is_none()
                    && a.expires_at > now
                    && self.admission.rule(&a.rule).is_some()
            })
            .ok_or_else(|| not_awaiting(agent_id))?;
        Ok(DepositNonceResponse {
            nonce: Base64Bytes::new(a.nonce),
            admitted_by: a.admitted_by,
        })
    }

    /// The machine's deposit: quoted by the AK this role activated for it, over the deposit
    /// and its admission's nonce; turns the admission into an armed enrollment with the
    /// rule's named policy (latest version) and bounds.
    pub fn deposit(&self, req: &DepositRequest, now: i64) -> Result<DepositResponse, ApiError> {
        let d = &req.deposit;
        let agent_id = d.agent_id.as_str();
        if d.role != self.role {
            return Err(ApiError::new(
                ErrorCode::MalformedRequest,
                format!(
                    "deposit.role: this deposit is for the {} role, not the {} role",
                    d.role.as_str(),
                    self.role.as_str()
                ),
            ));
        }
        let a = self
            .store
            .admission(agent_id)?
            .filter(|a| a.deposited_at.is_none() && a.expires_at > now)
            .ok_or_else(|| not_awaiting(agent_id))?;
        let rule = self
            .admission
            .rule(&a.rule)
            .ok_or_else(|| not_awaiting(agent_id))?;
        let digest = d.digest(&a.nonce)?;
        self.check_machine_quote(
            agent_id,
            &MachineQuote {
                ak_name: req.ak_name.as_bytes(),
                quote: req.quote.as_bytes(),
                signature: req.signature.as_bytes(),
                pcrs: &req.pcr_values()?,
            },
            &digest,
            "the deposit is not quoted by the agent's AK over this admission's nonce",
        )?;
        let policy = self.store.policy(&rule.config.policy, None).map_err(|e| {
            tracing::error!(role = self.role.as_str(), rule = %rule.config.name, policy = %rule.config.policy, error = %e, "auto-enrollment rule names a policy this role cannot read");
            ApiError::new(
                ErrorCode::Internal,
                "the rule's named policy is missing on this role",
            )
        })?;
        let share = Share::from_slice(d.share.as_bytes())
            .map_err(|e| ApiError::new(ErrorCode::MalformedRequest, format!("share: {e}")))?;
        let wrapped = self
            .master
            .wrap_share(&share, &wrap_context(self.role.as_str(), agent_id))
            .map_err(ApiError::internal)?;
        let enrollment = NewEnrollment {
            agent_id: agent_id.to_owned(),
            ek_pub: a.ek_pub.clone(),
            policy: policy.document.clone(),
            max_attestations: rule.config.max_attestations,
            max_boots: rule.config.max_boots,
            share_wrapped: wrapped,
            payload_ct: d.payload_ct.as_ref().map(|p| p.as_bytes().to_vec()),
        };
        let admitted_by =
            match self
                .store
                .deposit(&enrollment, &a.nonce, (&policy.name, policy.version), now)
            {
                Ok(how) => how,
                Err(StoreError::NotAwaitingDeposit(_)) => return Err(not_awaiting(agent_id)),
                Err(StoreError::AlreadyEnrolled(_)) => {
                    return Err(ApiError::new(
                        ErrorCode::NotAwaitingDeposit,
                        format!(
                            "agent {agent_id} is already enrolled with the {} role",
                            self.role.as_str()
                        ),
                    ))
                }
                Err(e) => return Err(e.into()),
            };
        tracing::warn!(role = self.role.as_str(), agent_id, admitted_by = %admitted_by, policy = %format!("{} v{}", policy.name, policy.version), "auto-enrolled: deposit made, enrollment armed");
        Ok(DepositResponse {
            agent_id: d.agent_id.clone(),
            admitted_by,
        })
    }
}

fn not_awaiting(agent_id: &str) -> ApiError {
    ApiError::new(
        ErrorCode::NotAwaitingDeposit,
        format!("agent {agent_id} has no admission waiting for a deposit (never admitted by an auto-enrollment rule, expired, its rule removed, or already deposited)"),
    )
}
