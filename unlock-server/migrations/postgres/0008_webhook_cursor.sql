-- PostgreSQL twin of ../0008_webhook_cursor.sql.
CREATE TABLE webhook_cursor (
    id                BIGINT PRIMARY KEY CHECK (id = 1),
    seq               BIGINT NOT NULL,
    holder            TEXT,
    lease_until       BIGINT NOT NULL
);
INSERT INTO webhook_cursor (id, seq, holder, lease_until) VALUES (1, 0, NULL, 0);
