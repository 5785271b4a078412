-- PostgreSQL twin of ../0006_stateless_challenges.sql.
ALTER TABLE enrollments ADD COLUMN agent_ref TEXT;
UPDATE enrollments SET agent_ref = substr(agent_id, 1, 24);
CREATE INDEX enrollments_agent_ref ON enrollments (agent_ref);
DELETE FROM aks;
