-- Named, versioned policies. A version is never changed once written; an update adds the
-- next version. Enrollments name the version they are pinned to and keep it until an
-- operator moves them (`unlockctl policy apply`), so a new version never silently widens
-- what an enrolled machine may boot.

CREATE TABLE policies (
    name              TEXT NOT NULL,
    version           INTEGER NOT NULL CHECK (version >= 1),
    document          TEXT NOT NULL,     -- policy document (JSON)
    created_at        INTEGER NOT NULL,
    PRIMARY KEY (name, version)
);

-- NULL for an inline (anonymous) policy, whose document is enrollments.policy. For a named
-- one, enrollments.policy keeps a copy of the pinned version's document and the attest path
-- resolves (policy_name, policy_version) to the stored version.
ALTER TABLE enrollments ADD COLUMN policy_name TEXT;
ALTER TABLE enrollments ADD COLUMN policy_version INTEGER;
CREATE INDEX enrollments_policy ON enrollments (policy_name, policy_version);
