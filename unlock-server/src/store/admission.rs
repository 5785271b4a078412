//! Auto-enrollment admissions: a machine an `[[auto_enroll]]` rule admitted at registration,
//! waiting for its deposit, and the deposit that turns it into an armed enrollment.
//!
//! What a stranger can make the role write here is bounded twice, in the admitting
//! transaction: admissions per rule in the last hour (expired ones included, so waiting out
//! an admission does not refill the rule's budget), and admissions waiting for a deposit at
//! once. Void admissions are deleted once they are older than the hour. The counts are read after the audit head is
//! locked (the admission's audit record is appended first), so concurrent admissions on
//! replicas of one PostgreSQL database take turns and the caps hold there too.

use super::db::{args, Conn, Row};
use super::{audit, insert_enrollment, Actor, NewEnrollment, Store, StoreError};

/// Seconds of the per-rule rate window.
pub const RATE_WINDOW_SECS: i64 = 3600;

/// An admission to record.
#[derive(Debug, Clone)]
pub struct NewAdmission<'a> {
    /// The machine.
    pub agent_id: &'a str,
    /// Its EK's TPMT_PUBLIC.
    pub ek_pub: &'a [u8],
    /// The admitting rule's name.
    pub rule: &'a str,
    /// The rule, its mode and what matched (for people).
    pub admitted_by: &'a str,
    /// Drawn by the role; ties the deposit to this admission.
    pub nonce: [u8; 32],
    /// Void if not deposited by then (unix seconds).
    pub expires_at: i64,
}

/// The caps an admission is checked against.
#[derive(Debug, Clone, Copy)]
pub struct AdmissionBudget {
    /// Admissions by this rule in the last hour.
    pub rule_per_hour: u32,
    /// Admissions (all rules) waiting for a deposit.
    pub max_waiting: u32,
}

/// What [`Store::admit`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admitted {
    /// A new admission (or a fresh one replacing a used or expired one).
    New,
    /// This machine's admission by this rule already waits for its deposit: kept as it is
    /// (same nonce), nothing counted (a retried registration).
    Waiting,
}

/// A stored admission.
#[derive(Debug, Clone)]
pub struct Admission {
    /// Its EK.
    pub ek_pub: Vec<u8>,
    /// The admitting rule's name.
    pub rule: String,
    /// How it was admitted.
    pub admitted_by: String,
    /// The deposit's nonce.
    pub nonce: Vec<u8>,
    /// Unix seconds.
    pub expires_at: i64,
    /// When the deposit was made, if it was.
    pub deposited_at: Option<i64>,
}

fn admission_from_row(r: &Row) -> Result<Admission, StoreError> {
    let t = "admissions";
    Ok(Admission {
        ek_pub: r.blob(0, t)?,
        rule: r.text(1, t)?,
        admitted_by: r.text(2, t)?,
        nonce: r.blob(3, t)?,
        expires_at: r.int(4, t)?,
        deposited_at: r.opt_int(5, t)?,
    })
}

fn load(c: &mut dyn Conn, agent_id: &str, lock: bool) -> Result<Option<Admission>, StoreError> {
    let sql = format!(
        "SELECT ek_pub, rule, admitted_by, nonce, expires_at, deposited_at
         FROM admissions WHERE agent_id = ?1{}",
        if lock { c.dialect().for_update() } else { "" }
    );
    c.query_opt(&sql, args![agent_id])?
        .as_ref()
        .map(admission_from_row)
        .transpose()
}

fn count(c: &mut dyn Conn, sql: &str, a: &[super::db::Value<'_>]) -> Result<i64, StoreError> {
    c.query_one(sql, a)?.int(0, "admissions")
}

impl Store {
    /// Records that `a.rule` admitted `a.agent_id`, within `budget`; refused with
    /// [`StoreError::AdmissionBudgetSpent`] when a cap is reached (nothing written).
    pub fn admit(
        &self,
        a: &NewAdmission<'_>,
        budget: AdmissionBudget,
        now: i64,
    ) -> Result<Admitted, StoreError> {
        self.write(|c| {
            if let Some(old) = load(c, a.agent_id, true)? {
                if old.deposited_at.is_none() && old.expires_at > now && old.rule == a.rule {
                    return Ok(Admitted::Waiting);
                }
            }
            // First, so the counts below are read under the audit head's lock.
            audit::append(
                c,
                now,
                "auto_admit",
                Some(a.agent_id),
                Actor::Agent,
                &serde_json::json!({"rule": a.rule, "admitted_by": a.admitted_by}),
            )?;
            // Void admissions go once they no longer count against their rule's hour.
            let window_start = now.saturating_sub(RATE_WINDOW_SECS);
            c.execute(
                "DELETE FROM admissions
                 WHERE deposited_at IS NULL AND expires_at <= ?1 AND created_at <= ?2",
                args![now, window_start],
            )?;
            let waiting = count(
                c,
                "SELECT COUNT(*) FROM admissions
                 WHERE deposited_at IS NULL AND expires_at > ?1 AND agent_id <> ?2",
                args![now, a.agent_id],
            )?;
            if waiting >= i64::from(budget.max_waiting) {
                return Err(StoreError::AdmissionBudgetSpent(format!(
                    "{waiting} admissions already wait for their deposit (auto_enroll_max_waiting = {})",
                    budget.max_waiting
                )));
            }
            let recent = count(
                c,
                "SELECT COUNT(*) FROM admissions WHERE rule = ?1 AND created_at > ?2",
                args![a.rule, window_start],
            )?;
            if recent >= i64::from(budget.rule_per_hour) {
                return Err(StoreError::AdmissionBudgetSpent(format!(
                    "rule {} admitted {recent} machines in the last hour (max_per_hour = {})",
                    a.rule, budget.rule_per_hour
                )));
            }
            c.execute(
                "INSERT INTO admissions (agent_id, ek_pub, rule, admitted_by, nonce, created_at,
                    expires_at, deposited_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, NULL)
                 ON CONFLICT (agent_id) DO UPDATE SET ek_pub = excluded.ek_pub,
                    rule = excluded.rule, admitted_by = excluded.admitted_by,
                    nonce = excluded.nonce, created_at = excluded.created_at,
                    expires_at = excluded.expires_at, deposited_at = NULL",
                args![
                    a.agent_id,
                    a.ek_pub,
                    a.rule,
                    a.admitted_by,
                    a.nonce.as_slice(),
                    now,
                    a.expires_at
                ],
            )?;
            Ok(Admitted::New)
        })
    }

    /// The admission of `agent_id`, deposited or not.
    pub fn admission(&self, agent_id: &str) -> Result<Option<Admission>, StoreError> {
        self.read(|c| load(c, agent_id, false))
    }

    /// Turns the admission of `e.agent_id` into an armed enrollment, if it still waits for
    /// its deposit with `nonce` (checked again under the write, so of two deposits racing,
    /// one wins and the other is refused). Returns how it was admitted.
    pub fn deposit(
        &self,
        e: &NewEnrollment,
        nonce: &[u8],
        policy_ref: (&str, u32),
        now: i64,
    ) -> Result<String, StoreError> {
        let r = self.write(|c| {
            let waiting = load(c, &e.agent_id, true)?.filter(|a| {
                a.deposited_at.is_none()
                    && a.expires_at > now
                    && a.nonce == nonce
                    && a.ek_pub == e.ek_pub
            });
            let Some(a) = waiting else {
                return Err(StoreError::NotAwaitingDeposit(e.agent_id.clone()));
            };
            insert_enrollment(c, e, Some(policy_ref), Some(&a.admitted_by), now)?;
            c.execute(
                "UPDATE admissions SET deposited_at = ?2 WHERE agent_id = ?1",
                args![e.agent_id.as_str(), now],
            )?;
            Ok(a.admitted_by)
        });
        match r {
            Err(err) if err.is_unique_violation() => {
                Err(StoreError::AlreadyEnrolled(e.agent_id.clone()))
            }
            r => r,
        }
    }
}
