-- PostgreSQL twin of ../0012_tee_enrollments.sql.
CREATE TABLE tee_enrollments (
    agent_id          TEXT PRIMARY KEY,
    evidence_kind     TEXT NOT NULL CHECK (evidence_kind IN ('azure-snp-vtpm')),
    hcl_report        BYTEA,
    vcek              BYTEA,
    registered_at     BIGINT
);
