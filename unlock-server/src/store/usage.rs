//! What each boot used of its named policy, and the retirement of items no machine needs.
//!
//! A session's first release records the named policy version it was evaluated against and
//! the allowlist items the evidence matched (`sessions.policy_name`, `policy_version`,
//! `used_items`, migration 0013): written in the release transaction, so a refusal (which
//! writes no session) never counts as a boot, and purged with the session. A retirement
//! reads them per enrollment of the policy ([`Store::policy_usage`]) and writes the narrowed
//! version under the policy's lock, only if the latest version is still the one it was
//! computed from ([`Store::add_retired_version`]).

use verifier_core::policy::{BootUse, MachineUse, UsedItem, MAX_USED_ITEMS};

use super::db::{args, Conn};
use super::{Store, StoreError};

/// What a release records about the boot: the named policy version its evidence passed and
/// the items it matched. `None` in a release request for an inline policy.
#[derive(Debug, Clone, Copy)]
pub struct BootUsage<'a> {
    /// Name of the policy.
    pub policy_name: &'a str,
    /// Its version the evidence was evaluated against.
    pub policy_version: u32,
    /// Matched items (only the first [`MAX_USED_ITEMS`] are stored).
    pub used: &'a [UsedItem],
}

fn corrupt(what: &'static str) -> StoreError {
    StoreError::Corrupt {
        table: "sessions",
        what,
    }
}

/// Writes the usage of a session's first release (the session row exists already).
pub(super) fn record(
    c: &mut dyn Conn,
    agent_id: &str,
    reset_count: u32,
    usage: &BootUsage<'_>,
) -> Result<(), StoreError> {
    let items = usage.used.get(..MAX_USED_ITEMS).unwrap_or(usage.used);
    let json = serde_json::to_string(items).map_err(|_| corrupt("used items not encodable"))?;
    c.execute(
        "UPDATE sessions SET policy_name = ?3, policy_version = ?4, used_items = ?5
         WHERE agent_id = ?1 AND reset_count = ?2",
        args![
            agent_id,
            reset_count,
            usage.policy_name,
            usage.policy_version,
            json.as_str()
        ],
    )?;
    Ok(())
}

impl Store {
    /// Every enrollment pinned to `name` (any version), with the sessions that released
    /// under a version of `name`, newest first. An enrollment with no such boot is listed
    /// with none: it keeps every item.
    pub fn policy_usage(&self, name: &str) -> Result<Vec<MachineUse>, StoreError> {
        let pins = self.policy_pins(name)?;
        self.read(|c| {
            let mut out = Vec::with_capacity(pins.len());
            for (agent_id, _) in &pins {
                let rows = c.query(
                    "SELECT policy_version, used_items FROM sessions
                     WHERE agent_id = ?1 AND policy_name = ?2 AND used_items IS NOT NULL
                     ORDER BY reset_count DESC",
                    args![agent_id.as_str(), name],
                )?;
                let boots = rows
                    .iter()
                    .map(|row| {
                        let version = u32::try_from(row.int(0, "sessions")?)
                            .map_err(|_| corrupt("policy_version out of range"))?;
                        let used: Vec<UsedItem> =
                            serde_json::from_str(&row.text(1, "sessions")?)
                                .map_err(|_| corrupt("used_items is not a list of items"))?;
                        Ok(BootUse { version, used })
                    })
                    .collect::<Result<_, StoreError>>()?;
                out.push(MachineUse {
                    machine: agent_id.clone(),
                    boots,
                });
            }
            Ok(out)
        })
    }

    /// Adds `document` as the next version of `name` if the latest is still `base` (the
    /// version the retirement was computed from), with a `policy_retire` audit record
    /// carrying `detail` (removed items, boots required). Returns the new version.
    pub fn add_retired_version(
        &self,
        name: &str,
        base: u32,
        document: &str,
        detail: &serde_json::Value,
        now: i64,
    ) -> Result<u32, StoreError> {
        let audit = super::policies::VersionAudit {
            kind: "policy_retire",
            actor: super::Actor::Admin,
            detail: detail.clone(),
        };
        self.insert_version(name, Some(base), document, &audit, now)
    }
}
