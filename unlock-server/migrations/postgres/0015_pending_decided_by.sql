-- Who decided a machine's policy change: `operator` (unlockctl policy approve/reject) or
-- `auto: signed by <subject>` (the policy's auto_approve rule; see docs/policy.md).
ALTER TABLE pending_changes ADD COLUMN decided_by TEXT;
