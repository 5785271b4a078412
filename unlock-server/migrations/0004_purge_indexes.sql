-- Indexes for the periodic purge (`Store::purge`): expired and aged rows are found by a
-- range scan instead of a full scan of tables that a registration or attempt flood can make
-- large. Each purge batch is one short statement under the writer (SQLite) or row locks
-- (PostgreSQL), so it must find its rows quickly.

-- Registrations and challenges past their expiry.
CREATE INDEX registrations_expires ON registrations (expires_at);
CREATE INDEX challenges_expires ON challenges (expires_at);
-- Attempts older than the retention, and each agent's attempts by age (the per-agent cap
-- keeps the newest N by id).
CREATE INDEX attempts_at ON attempts (at);
CREATE INDEX attempts_agent_id ON attempts (agent_id, id);
-- Boot sessions whose last release is older than the retention.
CREATE INDEX sessions_last_release ON sessions (last_release_at);
