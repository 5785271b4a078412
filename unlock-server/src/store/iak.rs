//! IAK bindings (`iak_bindings`): which device (IAK certificate identity) an enrollment
//! accepts registration by IAK certificate for. One row per enrollment, written only by an
//! operator; the registration path only reads it.

use super::audit::{self, Actor};
use super::db::args;
use super::{load_enrollment, Store, StoreError};

impl Store {
    /// Binds `agent_id`'s enrollment to the IAK `identity` (replacing an earlier binding).
    /// [`StoreError::NotFound`] when the agent is not enrolled.
    pub fn bind_iak(&self, agent_id: &str, identity: &str, now: i64) -> Result<(), StoreError> {
        self.write(|c| {
            if load_enrollment(c, agent_id)?.is_none() {
                return Err(StoreError::NotFound(agent_id.to_owned()));
            }
            c.execute(
                "INSERT INTO iak_bindings (agent_id, identity, bound_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (agent_id) DO UPDATE
                    SET identity = excluded.identity, bound_at = excluded.bound_at",
                args![agent_id, identity, now],
            )?;
            audit::append(
                c,
                now,
                "iak_bound",
                Some(agent_id),
                Actor::Admin,
                &serde_json::json!({"identity": identity}),
            )
        })
    }

    /// The IAK identity `agent_id` is bound to, if any.
    pub fn iak_binding(&self, agent_id: &str) -> Result<Option<String>, StoreError> {
        self.read(|c| {
            c.query_opt(
                "SELECT identity FROM iak_bindings WHERE agent_id = ?1",
                args![agent_id],
            )?
            .map(|row| row.text(0, "iak_bindings"))
            .transpose()
        })
    }
}
