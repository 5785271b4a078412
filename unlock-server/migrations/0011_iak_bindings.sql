-- The device an enrollment accepts an IAK certificate for (TCG device identity: the IAK
-- certificate's hardwareModuleName, as `<hwType>:<hex hwSerialNum>`). Set by an operator
-- (`unlockctl iak bind`); without a row, registration by IAK certificate is refused.
-- Deleted with the enrollment.
CREATE TABLE iak_bindings (
    agent_id          TEXT PRIMARY KEY,
    identity          TEXT NOT NULL,
    bound_at          INTEGER NOT NULL
);
