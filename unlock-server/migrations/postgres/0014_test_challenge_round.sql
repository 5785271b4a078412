-- PostgreSQL twin of ../0014_test_challenge_round.sql.
ALTER TABLE tee_enrollments DROP CONSTRAINT tee_enrollments_evidence_kind_check;
ALTER TABLE tee_enrollments ADD CONSTRAINT tee_enrollments_evidence_kind_check
    CHECK (evidence_kind IN ('azure-snp-vtpm', 'test-challenge-round'));
