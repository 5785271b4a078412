-- PostgreSQL twin of ../0003_attempt_failures.sql.
ALTER TABLE attempts ADD COLUMN evidence_failure BIGINT NOT NULL DEFAULT 0;
