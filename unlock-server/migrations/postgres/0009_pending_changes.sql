-- PostgreSQL twin of ../0009_pending_changes.sql.
CREATE TABLE pending_changes (
    id                TEXT PRIMARY KEY,
    agent_id          TEXT NOT NULL,
    change            TEXT NOT NULL,
    submitted_at      BIGINT NOT NULL,
    state             TEXT NOT NULL,
    decided_at        BIGINT,
    result_name       TEXT,
    result_version    BIGINT
);
CREATE INDEX pending_changes_agent ON pending_changes (agent_id, state);
