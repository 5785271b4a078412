-- Refusals of the evidence itself (validation, policy, activation proof) are what the
-- per-agent rate limit counts; store decisions (a TERMINATED session, a reused nonce) are
-- logged too but do not count: fifty parallel attests of one boot must not lock it out.
ALTER TABLE attempts ADD COLUMN evidence_failure INTEGER NOT NULL DEFAULT 0;
