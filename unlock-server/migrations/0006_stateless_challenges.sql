-- Challenges are tickets (see role/ticket.rs): issuing one writes nothing, and a ticket
-- names its agent by the first 24 hex characters of the agent id. The challenges table now
-- holds only used challenges, inserted by the release transaction that used them.
ALTER TABLE enrollments ADD COLUMN agent_ref TEXT;
UPDATE enrollments SET agent_ref = substr(agent_id, 1, 24);
CREATE INDEX enrollments_agent_ref ON enrollments (agent_ref);

-- One AK per agent from now on (pinned at its first activation, see role/agent.rs). AKs
-- activated by earlier versions were made afresh at every boot and are never used again;
-- dropping them costs each machine one registration at its next boot.
DELETE FROM aks;
