//! Retiring allowlist items of a named policy that no enrolled machine needs any more: the
//! last step of an update (allow → approve → reboot → retire). The role decides from its own
//! boot records (`store/usage.rs`) with `verifier_core::policy::retire`; asked for named
//! items (what both roles agree on), it retires exactly those or refuses. The new version
//! passes `check_only_narrows` and is written with a `policy_retire` audit record only if the
//! policy's latest version is still the one the decision was made on.

use std::collections::BTreeMap;

use verifier_core::policy::{retire, PolicyDocument, Retirement};
use verifier_core::proto::v1::{ErrorCode, PolicyRef, PolicyRetireRequest, PolicyRetireResponse};

use super::policies::store_error;
use super::RoleService;
use crate::error::ApiError;

impl RoleService {
    /// Decides (and unless `dry_run`, stores) the retirement of `name`'s latest version.
    pub fn retire_policy(
        &self,
        name: &str,
        req: &PolicyRetireRequest,
        now: i64,
    ) -> Result<PolicyRetireResponse, ApiError> {
        let latest = self.policy_version(name, None)?;
        let from = latest.policy.clone();
        let machines = self.store.policy_usage(from.name.as_str())?;
        let versions = self.versions_of(&from, &latest.document, &machines)?;
        let retirement = retire(
            &versions,
            from.version,
            &machines,
            req.after_boots,
            req.items.as_deref(),
        )
        .map_err(|e| ApiError::new(ErrorCode::MalformedRequest, format!("{from}: {e}")))?;
        let machines = u32::try_from(machines.len()).unwrap_or(u32::MAX);
        if req.dry_run {
            return Ok(PolicyRetireResponse {
                from,
                machines,
                retirement,
                stored: None,
            });
        }
        let stored = self.store_retirement(&from, &retirement, req.after_boots, now)?;
        Ok(PolicyRetireResponse {
            from,
            machines,
            retirement,
            stored: Some(stored),
        })
    }

    /// The documents of the latest version and of every version a recorded boot names.
    fn versions_of(
        &self,
        latest: &PolicyRef,
        latest_doc: &PolicyDocument,
        machines: &[verifier_core::policy::MachineUse],
    ) -> Result<BTreeMap<u32, PolicyDocument>, ApiError> {
        let mut versions = BTreeMap::from([(latest.version, latest_doc.clone())]);
        for boot in machines.iter().flat_map(|m| &m.boots) {
            if let std::collections::btree_map::Entry::Vacant(slot) = versions.entry(boot.version) {
                let p = self.policy_version(latest.name.as_str(), Some(boot.version))?;
                slot.insert(p.document);
            }
        }
        Ok(versions)
    }

    /// Writes the narrowed version (refusing when nothing can be retired).
    fn store_retirement(
        &self,
        from: &PolicyRef,
        r: &Retirement,
        after_boots: u32,
        now: i64,
    ) -> Result<PolicyRef, ApiError> {
        if r.removed.is_empty() {
            let why: Vec<String> = r
                .kept
                .iter()
                .map(|k| format!("{}: {}", k.item, k.reason))
                .collect();
            return Err(ApiError::new(
                ErrorCode::MalformedRequest,
                format!("{from}: nothing can be retired ({})", why.join("; ")),
            ));
        }
        let text = serde_json::to_string(&r.document).map_err(ApiError::internal)?;
        let detail = serde_json::json!({
            "after_boots": after_boots,
            "removed": r.removed,
        });
        let version = self
            .store
            .add_retired_version(from.name.as_str(), from.version, &text, &detail, now)
            .map_err(store_error)?;
        tracing::info!(
            role = self.role.as_str(),
            policy = %from.name,
            version,
            removed = r.removed.len(),
            "policy items retired"
        );
        Ok(PolicyRef {
            name: from.name.clone(),
            version,
        })
    }
}
