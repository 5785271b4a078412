-- The evidence kind `test-challenge-round` (TESTS ONLY: accepted only by a server started
-- with --test-attester-key) joins the kinds an enrollment may declare. SQLite cannot alter
-- a CHECK constraint: the table is rebuilt with the wider one, rows kept.
CREATE TABLE tee_enrollments_new (
    agent_id          TEXT PRIMARY KEY,
    evidence_kind     TEXT NOT NULL
                      CHECK (evidence_kind IN ('azure-snp-vtpm', 'test-challenge-round')),
    hcl_report        BLOB,              -- as read from the vTPM's NV index 0x01400001
    vcek              BLOB,              -- DER
    registered_at     INTEGER            -- unix seconds of the registration that stored them
);
INSERT INTO tee_enrollments_new (agent_id, evidence_kind, hcl_report, vcek, registered_at)
    SELECT agent_id, evidence_kind, hcl_report, vcek, registered_at FROM tee_enrollments;
DROP TABLE tee_enrollments;
ALTER TABLE tee_enrollments_new RENAME TO tee_enrollments;
