-- PostgreSQL twin of ../0001_init.sql (same tables, columns and checks; a test compares
-- them). Runs inside the role's schema (search_path). Integers are BIGINT so one Rust type
-- reads both backends; BLOB is BYTEA.

CREATE TABLE enrollments (
    agent_id          TEXT PRIMARY KEY,
    ek_pub            BYTEA NOT NULL,
    policy            TEXT NOT NULL,
    max_attestations  BIGINT NOT NULL CHECK (max_attestations >= 1),
    max_boots         BIGINT CHECK (max_boots IS NULL OR max_boots >= 1),
    share_wrapped     BYTEA NOT NULL,
    payload_ct        BYTEA,
    state             TEXT NOT NULL CHECK (state IN ('armed', 'revoked', 'terminated')),
    boots_used        BIGINT NOT NULL DEFAULT 0,
    created_at        BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL
);

CREATE TABLE registrations (
    registration_id   TEXT PRIMARY KEY,
    agent_id          TEXT NOT NULL,
    ak_pub            BYTEA NOT NULL,
    ak_name           BYTEA NOT NULL,
    secret            BYTEA NOT NULL,
    expires_at        BIGINT NOT NULL
);

CREATE TABLE aks (
    agent_id          TEXT NOT NULL,
    ak_name           BYTEA NOT NULL,
    ak_pub            BYTEA NOT NULL,
    activated_at      BIGINT NOT NULL,
    PRIMARY KEY (agent_id, ak_name)
);

CREATE TABLE challenges (
    challenge_id      TEXT PRIMARY KEY,
    agent_id          TEXT NOT NULL,
    ak_name           BYTEA NOT NULL,
    nonce             BYTEA NOT NULL,
    expires_at        BIGINT NOT NULL,
    used_at           BIGINT,
    evidence_hash     BYTEA,
    response          BYTEA
);

CREATE TABLE sessions (
    agent_id          TEXT NOT NULL,
    reset_count       BIGINT NOT NULL,
    releases          BIGINT NOT NULL,
    state             TEXT NOT NULL CHECK (state IN ('open', 'terminated')),
    first_release_at  BIGINT NOT NULL,
    last_release_at   BIGINT NOT NULL,
    PRIMARY KEY (agent_id, reset_count)
);

CREATE TABLE attempts (
    id                BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    agent_id          TEXT NOT NULL,
    challenge_id      TEXT,
    at                BIGINT NOT NULL,
    result            TEXT NOT NULL CHECK (result IN ('released', 'refused')),
    reason            TEXT NOT NULL
);
CREATE INDEX attempts_agent ON attempts (agent_id, at);
