-- What each boot session's first release was evaluated against, and which allowlist items of
-- that policy its evidence matched (`Verdict::used`, at most 64): the record `unlockctl
-- policy retire` reads to find items no machine has needed in its last N boots. Only
-- releases write it (a refusal records nothing), and the rows go with their sessions in the
-- background purge. Items are digests and exact command lines already in the policy: nothing
-- secret.
ALTER TABLE sessions ADD COLUMN policy_name TEXT;       -- NULL: an inline policy
ALTER TABLE sessions ADD COLUMN policy_version INTEGER;
ALTER TABLE sessions ADD COLUMN used_items TEXT;        -- JSON array of UsedItem
CREATE INDEX sessions_policy ON sessions (policy_name, agent_id);
