-- Confidential VMs: the evidence kind an enrollment declares, when it is not the default
-- `tpm` (no row: `tpm`), and the SEV-SNP vTPM evidence its latest registration presented.
-- The HCL report and VCEK are kept as received (verified at registration) because the role
-- verifies them again at every attestation: the policy's `snp` section is evaluated then,
-- on claims read from them, so a policy change applies at the next unlock.
CREATE TABLE tee_enrollments (
    agent_id          TEXT PRIMARY KEY,
    evidence_kind     TEXT NOT NULL CHECK (evidence_kind IN ('azure-snp-vtpm')),
    hcl_report        BLOB,              -- as read from the vTPM's NV index 0x01400001
    vcek              BLOB,              -- DER
    registered_at     INTEGER            -- unix seconds of the registration that stored them
);
