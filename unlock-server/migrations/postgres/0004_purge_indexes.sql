-- PostgreSQL twin of ../0004_purge_indexes.sql.
CREATE INDEX registrations_expires ON registrations (expires_at);
CREATE INDEX challenges_expires ON challenges (expires_at);
CREATE INDEX attempts_at ON attempts (at);
CREATE INDEX attempts_agent_id ON attempts (agent_id, id);
CREATE INDEX sessions_last_release ON sessions (last_release_at);
