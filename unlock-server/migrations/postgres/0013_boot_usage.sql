-- PostgreSQL twin of ../0013_boot_usage.sql.
ALTER TABLE sessions ADD COLUMN policy_name TEXT;
ALTER TABLE sessions ADD COLUMN policy_version BIGINT;
ALTER TABLE sessions ADD COLUMN used_items TEXT;
CREATE INDEX sessions_policy ON sessions (policy_name, agent_id);
