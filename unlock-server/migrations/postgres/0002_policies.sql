-- PostgreSQL twin of ../0002_policies.sql.

CREATE TABLE policies (
    name              TEXT NOT NULL,
    version           BIGINT NOT NULL CHECK (version >= 1),
    document          TEXT NOT NULL,
    created_at        BIGINT NOT NULL,
    PRIMARY KEY (name, version)
);

ALTER TABLE enrollments ADD COLUMN policy_name TEXT;
ALTER TABLE enrollments ADD COLUMN policy_version BIGINT;
CREATE INDEX enrollments_policy ON enrollments (policy_name, policy_version);
