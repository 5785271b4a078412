-- PostgreSQL twin of ../0005_session_nks.sql.
ALTER TABLE sessions ADD COLUMN nks BYTEA;
