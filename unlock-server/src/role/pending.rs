//! Policy changes a machine asks for itself (`POST /v1/policy/pending`), and their approval
//! or rejection by an operator (`/admin/v1/pending`).
//!
//! The machine proves who it is with the AK this role activated for it: a quote whose
//! extraData is the change's digest ([`ProposedChange::digest`]). Nothing changes until an
//! operator approves; approval appends the submitted digests to allowlists the agent's named
//! policy already has ([`widen`]: never a new rule, never a removal), adds that as the next
//! version and moves the agent (or, with `fleet`, every enrollment of the policy) to it.
//!
//! The one exception: when the policy's `auto_approve` rule trusts the signer of every boot
//! application the change adds, and the change adds nothing else
//! ([`verifier_core::policy::auto_approval`]), the role approves it at submission, for this
//! agent only, and records `auto: signed by <subject>` as who decided.

use std::time::{Duration, UNIX_EPOCH};

use verifier_core::policy::{auto_approval, diff, widen, AutoApproval, PolicyDocument};
use verifier_core::proto::v1::{
    ErrorCode, Id, PendingChangeInfo, PendingDecisionRequest, PendingList, PendingState,
    PendingSubmitRequest, PendingSubmitResponse, PolicyRef, ProposedChange,
};

use super::{MachineQuote, RoleService};
use crate::error::ApiError;
use crate::store::{Actor, Decision, PendingRow, StoreError, Submitted};

/// Most undecided changes one agent may have on a role.
pub const MAX_PENDING_PER_AGENT: u32 = 8;

/// Who an operator's decision is recorded as.
const OPERATOR: &str = "operator";

/// The new document for a change, against the agent's policy as it stands: (the agent's
/// current version, the latest version of its policy, the widened document).
struct Plan {
    current: PolicyRef,
    current_doc: PolicyDocument,
    latest: PolicyRef,
    widened: PolicyDocument,
}

impl RoleService {
    /// A machine's submission: verified against its activated AK, then stored as pending.
    pub fn submit_pending(
        &self,
        req: &PendingSubmitRequest,
        now: i64,
    ) -> Result<PendingSubmitResponse, ApiError> {
        let agent_id = req.change.agent_id.as_str();
        let digest = req.change.digest()?;
        self.check_machine_quote(
            agent_id,
            &MachineQuote {
                ak_name: req.ak_name.as_bytes(),
                quote: req.quote.as_bytes(),
                signature: req.signature.as_bytes(),
                pcrs: &req.pcr_values()?,
            },
            &digest,
            "the change is not quoted by the agent's AK",
        )?;
        let id = hex::encode(digest);
        let text = serde_json::to_string(&req.change).map_err(ApiError::internal)?;
        let state = match self
            .store
            .submit_pending(&id, agent_id, &text, MAX_PENDING_PER_AGENT, now)
        {
            Ok(Submitted::New) => {
                tracing::info!(role = self.role.as_str(), agent_id, id, note = %req.change.note, "policy change submitted");
                self.try_auto_approve(&id, &req.change, now)?
            }
            Ok(Submitted::Exists(s)) => PendingState::parse(&s).ok_or_else(|| {
                ApiError::internal(format!("pending_changes.state {s:?} is not a state"))
            })?,
            Err(StoreError::TooManyPending { agent_id, max }) => {
                return Err(ApiError::new(
                    ErrorCode::RateLimited,
                    format!("agent {agent_id} already has {max} pending policy changes: an operator must decide them first"),
                ))
            }
            Err(StoreError::NotFound(a)) => {
                return Err(ApiError::new(
                    ErrorCode::NotEnrolled,
                    format!("agent {a} is not enrolled"),
                ))
            }
            Err(e) => return Err(e.into()),
        };
        Ok(PendingSubmitResponse { id, state })
    }

    /// Approves a just-submitted change when the policy's `auto_approve` rule covers it;
    /// otherwise it stays pending for an operator.
    fn try_auto_approve(
        &self,
        id: &str,
        change: &ProposedChange,
        now: i64,
    ) -> Result<PendingState, ApiError> {
        // Machines updated together submit together: when another approval (or an
        // operator) added a version between our plan and our write, plan again on top of it.
        for _ in 0..AUTO_APPROVE_ATTEMPTS {
            match self.auto_approve_once(id, change, now) {
                Err(Moved) => continue,
                Ok(state) => return state,
            }
        }
        tracing::warn!(role = self.role.as_str(), agent_id = %change.agent_id, id, attempts = AUTO_APPROVE_ATTEMPTS, "policy kept moving while auto-approving: the change stays pending");
        Ok(PendingState::Pending)
    }

    /// One plan-decide-write round of [`Self::try_auto_approve`]; `Err(Moved)` when the
    /// policy gained a version after the plan was made.
    fn auto_approve_once(
        &self,
        id: &str,
        change: &ProposedChange,
        now: i64,
    ) -> Result<Result<PendingState, ApiError>, Moved> {
        let agent_id = change.agent_id.as_str();
        let plan = match self.plan(change) {
            Ok(p) => p,
            Err(why) => {
                tracing::info!(
                    role = self.role.as_str(),
                    agent_id,
                    id,
                    why,
                    "policy change pending approval"
                );
                return Ok(Ok(PendingState::Pending));
            }
        };
        match auto_decision(change, &plan, now) {
            AutoApproval::Approved { signers } => {
                let by = format!("auto: signed by {}", signers.join("; "));
                match self.approve(id, change, &plan, false, (&by, Actor::Agent), now) {
                    Ok(()) => Ok(Ok(PendingState::Approved)),
                    Err(Approve::Moved) => Err(Moved),
                    Err(Approve::Failed(e)) => Ok(Err(e)),
                }
            }
            AutoApproval::Pending(why) => {
                tracing::info!(
                    role = self.role.as_str(),
                    agent_id,
                    id,
                    not_auto_approved = why,
                    "policy change pending approval"
                );
                Ok(Ok(PendingState::Pending))
            }
        }
    }

    fn plan(&self, change: &ProposedChange) -> Result<Plan, String> {
        let agent_id = change.agent_id.as_str();
        let enrollment = self
            .store
            .enrollment(agent_id)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("agent {agent_id} is no longer enrolled"))?;
        let Some((name, version)) = enrollment.policy_ref else {
            return Err("the agent is enrolled with an inline policy: enroll it with a named policy (`unlockctl policy apply NAME --agent ...`) to approve changes".into());
        };
        let parse = |text: &str| -> Result<PolicyDocument, String> {
            serde_json::from_str(text).map_err(|e| e.to_string())
        };
        let current_doc = parse(&enrollment.policy)?;
        let latest = self.store.policy(&name, None).map_err(|e| e.to_string())?;
        let preds = change.predictions().map_err(|e| e.to_string())?;
        let widened = widen(&parse(&latest.document)?, &preds).map_err(|e| e.to_string())?;
        let id = |n: &str| Id::try_from(n.to_owned()).map_err(|e| e.to_string());
        Ok(Plan {
            current: PolicyRef {
                name: id(&name)?,
                version,
            },
            current_doc,
            latest: PolicyRef {
                name: id(&latest.name)?,
                version: latest.version,
            },
            widened: widened.document,
        })
    }

    fn pending_info(&self, row: PendingRow) -> Result<PendingChangeInfo, ApiError> {
        let change: ProposedChange =
            serde_json::from_str(&row.change).map_err(ApiError::internal)?;
        let state = PendingState::parse(&row.state)
            .ok_or_else(|| ApiError::internal("pending_changes.state is not a state"))?;
        let (policy, diff, problem, not_auto) = if state == PendingState::Pending {
            match self.plan(&change) {
                Ok(p) => {
                    let why = match auto_decision(&change, &p, row.submitted_at) {
                        AutoApproval::Pending(why) => Some(why),
                        AutoApproval::Approved { .. } => None,
                    };
                    (
                        Some(p.current),
                        Some(diff(&p.current_doc, &p.widened)),
                        None,
                        why,
                    )
                }
                Err(e) => (None, None, Some(e), None),
            }
        } else {
            (None, None, None, None)
        };
        let result = match row.result {
            Some((n, version)) => Some(PolicyRef {
                name: Id::try_from(n).map_err(ApiError::internal)?,
                version,
            }),
            None => None,
        };
        Ok(PendingChangeInfo {
            id: row.id,
            change,
            submitted_at: row.submitted_at,
            state,
            policy,
            diff,
            problem,
            decided_at: row.decided_at,
            result,
            decided_by: row.decided_by,
            not_auto_approved: not_auto,
        })
    }

    /// Every change this role holds, newest first; a pending one with what approving it
    /// would change for its machine.
    pub fn list_pending(&self) -> Result<PendingList, ApiError> {
        let changes = self
            .store
            .pending_changes(None)?
            .into_iter()
            .map(|r| self.pending_info(r))
            .collect::<Result<_, _>>()?;
        Ok(PendingList { changes })
    }

    /// Approves (adds the widened version, moves the agent or the fleet to it) or rejects.
    pub fn decide_pending(
        &self,
        id: &str,
        req: &PendingDecisionRequest,
        now: i64,
    ) -> Result<PendingChangeInfo, ApiError> {
        let row = self.store.pending_change(id)?.ok_or_else(|| {
            ApiError::new(
                ErrorCode::MalformedRequest,
                format!("no pending change {id}"),
            )
        })?;
        if row.state != PendingState::Pending.as_str() {
            return Err(ApiError::new(
                ErrorCode::MalformedRequest,
                format!("change {id} is already {}", row.state),
            ));
        }
        let change: ProposedChange =
            serde_json::from_str(&row.change).map_err(ApiError::internal)?;
        if !req.approve {
            let decision = Decision {
                approved: false,
                result: None,
                by: OPERATOR,
                actor: Actor::Admin,
            };
            self.store.decide_pending(id, &decision, now)?;
            tracing::info!(role = self.role.as_str(), agent_id = %change.agent_id, id, "policy change rejected");
        } else {
            let plan = self
                .plan(&change)
                .map_err(|e| ApiError::new(ErrorCode::MalformedRequest, e))?;
            self.approve(id, &change, &plan, req.fleet, (OPERATOR, Actor::Admin), now)
                .map_err(|e| match e {
                    Approve::Moved => ApiError::new(
                        ErrorCode::MalformedRequest,
                        format!("policy {} gained a version while this change was being approved: run `unlockctl policy pending` to see the new diff, then approve again", plan.latest.name),
                    ),
                    Approve::Failed(e) => e,
                })?;
        }
        let row = self
            .store
            .pending_change(id)?
            .ok_or_else(|| ApiError::internal("the decided change is gone"))?;
        self.pending_info(row)
    }
}

impl RoleService {
    /// Adds the widened version (unless the latest already is it) on top of the version the
    /// plan was made from, moves the agent (or the fleet) to it and records the decision as
    /// made by `by`.
    fn approve(
        &self,
        id: &str,
        change: &ProposedChange,
        plan: &Plan,
        fleet: bool,
        (by, actor): (&str, Actor),
        now: i64,
    ) -> Result<(), Approve> {
        let latest_doc =
            self.policy_version(plan.latest.name.as_str(), Some(plan.latest.version))?;
        // Already allowed by the latest version: nothing to add.
        let target = if latest_doc.document == plan.widened {
            plan.latest.version
        } else {
            let text = serde_json::to_string(&plan.widened).map_err(ApiError::internal)?;
            let base = Some(plan.latest.version);
            match self
                .store
                .add_policy_version(plan.latest.name.as_str(), base, &text, actor, now)
            {
                Ok(v) => v,
                Err(StoreError::PolicyMoved { .. }) => return Err(Approve::Moved),
                Err(e) => return Err(ApiError::from(e).into()),
            }
        };
        let agents = [change.agent_id.as_str().to_owned()];
        self.store.apply_policy(
            plan.latest.name.as_str(),
            target,
            (!fleet).then_some(&agents[..]),
            false,
            now,
        )?;
        let decision = Decision {
            approved: true,
            result: Some((plan.latest.name.as_str(), target)),
            by,
            actor,
        };
        self.store.decide_pending(id, &decision, now)?;
        tracing::info!(role = self.role.as_str(), agent_id = %change.agent_id, id, policy = %plan.latest.name, version = target, fleet, by, "policy change approved");
        Ok(())
    }
}

/// The `auto_approve` rule's verdict on `change` under `plan`, at `now` (Unix seconds).
fn auto_decision(change: &ProposedChange, plan: &Plan, now: i64) -> AutoApproval {
    let signatures: Vec<Vec<u8>> = change
        .signatures
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect();
    let at = UNIX_EPOCH + Duration::from_secs(u64::try_from(now).unwrap_or(0));
    auto_approval(&plan.current_doc, &plan.widened, &signatures, at)
}

/// How many times a machine's change is planned again when the policy gained a version
/// between its plan and its write (each round re-reads the latest version).
const AUTO_APPROVE_ATTEMPTS: usize = 4;

/// The policy gained a version after the plan was made.
#[derive(Debug)]
struct Moved;

/// Why an approval did not happen.
#[derive(Debug)]
enum Approve {
    /// The latest version is no longer the one planned on: plan again.
    Moved,
    /// Anything else.
    Failed(ApiError),
}

impl From<ApiError> for Approve {
    fn from(e: ApiError) -> Self {
        Self::Failed(e)
    }
}

impl From<StoreError> for Approve {
    fn from(e: StoreError) -> Self {
        Self::Failed(e.into())
    }
}
