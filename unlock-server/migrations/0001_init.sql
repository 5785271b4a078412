-- One database per role (verifier, tenant). A role's database holds its own half only.

CREATE TABLE enrollments (
    agent_id          TEXT PRIMARY KEY,
    ek_pub            BLOB NOT NULL,     -- TPMT_PUBLIC of the enrolled EK
    policy            TEXT NOT NULL,     -- policy document (JSON)
    max_attestations  INTEGER NOT NULL CHECK (max_attestations >= 1),
    max_boots         INTEGER CHECK (max_boots IS NULL OR max_boots >= 1),
    share_wrapped     BLOB NOT NULL,     -- this role's half of K_b, wrapped under the role master key
    payload_ct        BLOB,              -- payload ciphertext (verifier role only)
    state             TEXT NOT NULL CHECK (state IN ('armed', 'revoked', 'terminated')),
    boots_used        INTEGER NOT NULL DEFAULT 0,
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL
);

-- Pending MakeCredential challenges of the registrar.
CREATE TABLE registrations (
    registration_id   TEXT PRIMARY KEY,
    agent_id          TEXT NOT NULL,
    ak_pub            BLOB NOT NULL,
    ak_name           BLOB NOT NULL,
    secret            BLOB NOT NULL,     -- wrapped under the role master key
    expires_at        INTEGER NOT NULL
);

-- AKs proven (ActivateCredential) to live in the TPM of the agent's EK.
CREATE TABLE aks (
    agent_id          TEXT NOT NULL,
    ak_name           BLOB NOT NULL,
    ak_pub            BLOB NOT NULL,
    activated_at      INTEGER NOT NULL,
    PRIMARY KEY (agent_id, ak_name)
);

CREATE TABLE challenges (
    challenge_id      TEXT PRIMARY KEY,
    agent_id          TEXT NOT NULL,
    ak_name           BLOB NOT NULL,
    nonce             BLOB NOT NULL,
    expires_at        INTEGER NOT NULL,
    used_at           INTEGER,
    evidence_hash     BLOB,              -- set when the challenge released
    response          BLOB               -- the sealed answer, returned again on an identical retry
);

-- A boot session is (agent, TPM resetCount).
CREATE TABLE sessions (
    agent_id          TEXT NOT NULL,
    reset_count       INTEGER NOT NULL,
    releases          INTEGER NOT NULL,
    state             TEXT NOT NULL CHECK (state IN ('open', 'terminated')),
    first_release_at  INTEGER NOT NULL,
    last_release_at   INTEGER NOT NULL,
    PRIMARY KEY (agent_id, reset_count)
);

CREATE TABLE attempts (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    agent_id          TEXT NOT NULL,
    challenge_id      TEXT,
    at                INTEGER NOT NULL,
    result            TEXT NOT NULL CHECK (result IN ('released', 'refused')),
    reason            TEXT NOT NULL
);
CREATE INDEX attempts_agent ON attempts (agent_id, at);
