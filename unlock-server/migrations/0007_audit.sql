-- The audit trail (see verifier-core/src/audit.rs for the record hash): every release,
-- counted refusal, enrollment and policy change, appended in the transaction that made it,
-- each record holding the hash of the one before. `audit_head` is the chain's last record:
-- its row is what concurrent appenders (replicas) take turns on, so the chain never forks.
CREATE TABLE audit (
    seq               INTEGER PRIMARY KEY,
    at                INTEGER NOT NULL,
    kind              TEXT NOT NULL,
    agent_id          TEXT,
    actor             TEXT NOT NULL,
    detail            TEXT NOT NULL,
    prev_hash         BLOB NOT NULL,
    hash              BLOB NOT NULL
);
CREATE INDEX audit_agent ON audit (agent_id, seq);

CREATE TABLE audit_head (
    id                INTEGER PRIMARY KEY CHECK (id = 1),
    seq               INTEGER NOT NULL,
    hash              BLOB NOT NULL
);
INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, zeroblob(32));
