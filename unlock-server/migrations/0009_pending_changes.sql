-- Policy changes a machine asked for with its own AK (a quote over the change's digest),
-- waiting for an operator. The id is the hex SHA-256 of the change (the same on every role),
-- so a resubmission finds the row it made. Decided rows are kept: a replay of a rejected
-- change gets the rejection, never a fresh pending row.
CREATE TABLE pending_changes (
    id                TEXT PRIMARY KEY,
    agent_id          TEXT NOT NULL,
    change            TEXT NOT NULL,     -- ProposedChange (JSON, as submitted)
    submitted_at      INTEGER NOT NULL,
    state             TEXT NOT NULL,     -- pending | approved | rejected
    decided_at        INTEGER,
    result_name       TEXT,
    result_version    INTEGER
);
CREATE INDEX pending_changes_agent ON pending_changes (agent_id, state);
