-- Auto-enrollment (opt-in `[[auto_enroll]]` rules). An enrollment an operator made has
-- admitted_by NULL; one a rule made says which rule admitted it and what matched.
ALTER TABLE enrollments ADD COLUMN admitted_by TEXT;

-- Machines a rule admitted at registration, until (and after) their deposit. The nonce ties
-- a deposit to this admission; deposited_at is set once, so a second deposit is refused.
-- Rows are kept after the deposit for the rule's rate budget (admissions per hour) and
-- replaced when the same EK is admitted again after its enrollment was deleted.
CREATE TABLE admissions (
    agent_id          TEXT PRIMARY KEY,
    ek_pub            BLOB NOT NULL,
    rule              TEXT NOT NULL,     -- the rule's name
    admitted_by       TEXT NOT NULL,     -- rule, mode and what matched (shown by `unlockctl list`)
    nonce             BLOB NOT NULL,     -- 32 random bytes, drawn at admission
    created_at        INTEGER NOT NULL,
    expires_at        INTEGER NOT NULL,  -- an admission not deposited by then is void
    deposited_at      INTEGER
);
CREATE INDEX admissions_created ON admissions (created_at);
