-- Failure actions (webhook.rs): the audit trail is the durable outbox; this row is how far
-- the webhook has been delivered, and who holds the delivery lease (one deliverer at a time
-- across replicas, without holding a lock during the HTTP call).
CREATE TABLE webhook_cursor (
    id                INTEGER PRIMARY KEY CHECK (id = 1),
    seq               INTEGER NOT NULL,
    holder            TEXT,
    lease_until       INTEGER NOT NULL
);
INSERT INTO webhook_cursor (id, seq, holder, lease_until) VALUES (1, 0, NULL, 0);
