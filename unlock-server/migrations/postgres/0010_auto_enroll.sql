-- PostgreSQL twin of ../0010_auto_enroll.sql.
ALTER TABLE enrollments ADD COLUMN admitted_by TEXT;

CREATE TABLE admissions (
    agent_id          TEXT PRIMARY KEY,
    ek_pub            BYTEA NOT NULL,
    rule              TEXT NOT NULL,
    admitted_by       TEXT NOT NULL,
    nonce             BYTEA NOT NULL,
    created_at        BIGINT NOT NULL,
    expires_at        BIGINT NOT NULL,
    deposited_at      BIGINT
);
CREATE INDEX admissions_created ON admissions (created_at);
