//! `POST /admin/v1/policies/{name}/retire`: the next version of a named policy without the
//! allowlist items no enrolled machine has used in its last N successful boots (see
//! [`crate::policy::retire`]). Each role decides from its own records; `unlockctl` retires
//! only what both roles agree on, by naming the items.

use serde::{Deserialize, Serialize};

use super::admin::PolicyRef;
use super::Validate;
use crate::policy::{Retirement, UsedItem};
use crate::proto::ProtoError;

/// Most boots a retirement may ask for: sessions older than the purge's retention are gone
/// anyway, so a larger N only keeps everything.
pub const MAX_AFTER_BOOTS: u32 = 1000;

/// Most items one retirement may name.
pub const MAX_RETIRE_ITEMS: usize = 4096;

/// The request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyRetireRequest {
    /// Successful boots each machine must have had, under versions allowing an item, without
    /// using it.
    pub after_boots: u32,
    /// Only report what would be retired.
    #[serde(default)]
    pub dry_run: bool,
    /// Retire exactly these items (each must be retirable on this role); absent: every
    /// retirable item.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub items: Option<Vec<UsedItem>>,
}

impl Validate for PolicyRetireRequest {
    fn validate(&self) -> Result<(), ProtoError> {
        if self.after_boots == 0 || self.after_boots > MAX_AFTER_BOOTS {
            return Err(ProtoError::Invalid {
                field: "after_boots",
                reason: "must be between 1 and 1000",
            });
        }
        if self
            .items
            .as_ref()
            .is_some_and(|i| i.len() > MAX_RETIRE_ITEMS)
        {
            return Err(ProtoError::Invalid {
                field: "items",
                reason: "more than 4096 items",
            });
        }
        Ok(())
    }
}

/// The answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyRetireResponse {
    /// The version the retirement starts from (the latest).
    pub from: PolicyRef,
    /// Enrollments of the policy whose boots were considered.
    pub machines: u32,
    /// The narrowed document, its diff, and what was removed and kept (with why).
    pub retirement: Retirement,
    /// The version written (absent for a dry run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored: Option<PolicyRef>,
}

impl Validate for PolicyRetireResponse {
    fn validate(&self) -> Result<(), ProtoError> {
        Ok(())
    }
}
