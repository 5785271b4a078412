-- PostgreSQL twin of ../0007_audit.sql.
CREATE TABLE audit (
    seq               BIGINT PRIMARY KEY,
    at                BIGINT NOT NULL,
    kind              TEXT NOT NULL,
    agent_id          TEXT,
    actor             TEXT NOT NULL,
    detail            TEXT NOT NULL,
    prev_hash         BYTEA NOT NULL,
    hash              BYTEA NOT NULL
);
CREATE INDEX audit_agent ON audit (agent_id, seq);

CREATE TABLE audit_head (
    id                BIGINT PRIMARY KEY CHECK (id = 1),
    seq               BIGINT NOT NULL,
    hash              BYTEA NOT NULL
);
INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, decode(repeat('00', 32), 'hex'));
