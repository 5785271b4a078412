-- PostgreSQL twin of ../0011_iak_bindings.sql.
CREATE TABLE iak_bindings (
    agent_id          TEXT PRIMARY KEY,
    identity          TEXT NOT NULL,
    bound_at          BIGINT NOT NULL
);
