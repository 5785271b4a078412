//! Confidential VMs (`tee_enrollments`): the evidence kind an enrollment declares when it is
//! not `tpm`, and the SEV-SNP vTPM evidence (HCL report, VCEK) of the machine's latest
//! registration, which the role verifies again at every attestation.
//!
//! An enrollment without a row is `tpm`: every enrollment made before this table existed
//! keeps its meaning, and the TPM path reads nothing more than it did.

use verifier_core::proto::v1::EvidenceKind;

use super::audit::{self, Actor};
use super::db::{args, Conn};
use super::{Store, StoreError};

/// The HCL report and VCEK a registration presented (as received; verified then).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TeeEvidence {
    /// The HCL report, as read from the vTPM's NV index.
    pub hcl_report: Vec<u8>,
    /// The VCEK certificate (DER).
    pub vcek: Vec<u8>,
    /// Unix seconds of that registration.
    pub registered_at: i64,
}

/// Declares `agent_id`'s evidence kind inside the enrollment's transaction (nothing for
/// `tpm`, the default).
pub(super) fn declare(
    c: &mut dyn Conn,
    agent_id: &str,
    kind: EvidenceKind,
) -> Result<(), StoreError> {
    if kind.is_tpm() {
        return Ok(());
    }
    c.execute(
        "INSERT INTO tee_enrollments (agent_id, evidence_kind) VALUES (?1, ?2)",
        args![agent_id, kind.as_str()],
    )?;
    Ok(())
}

fn kind_of(c: &mut dyn Conn, agent_id: &str) -> Result<EvidenceKind, StoreError> {
    match c.query_opt(
        "SELECT evidence_kind FROM tee_enrollments WHERE agent_id = ?1",
        args![agent_id],
    )? {
        None => Ok(EvidenceKind::Tpm),
        Some(row) => row
            .text(0, "tee_enrollments")?
            .parse()
            .map_err(|_| StoreError::Corrupt {
                table: "tee_enrollments",
                what: "unknown evidence_kind",
            }),
    }
}

impl Store {
    /// The evidence kind `agent_id`'s enrollment declares (`tpm` when it declares none).
    pub fn evidence_kind(&self, agent_id: &str) -> Result<EvidenceKind, StoreError> {
        self.read(|c| kind_of(c, agent_id))
    }

    /// The SEV-SNP vTPM evidence of `agent_id`'s latest registration, if it has one.
    pub fn tee_evidence(&self, agent_id: &str) -> Result<Option<TeeEvidence>, StoreError> {
        self.read(|c| {
            let Some(row) = c.query_opt(
                "SELECT hcl_report, vcek, registered_at FROM tee_enrollments
                 WHERE agent_id = ?1 AND hcl_report IS NOT NULL AND vcek IS NOT NULL",
                args![agent_id],
            )?
            else {
                return Ok(None);
            };
            Ok(Some(TeeEvidence {
                hcl_report: row.blob(0, "tee_enrollments")?,
                vcek: row.blob(1, "tee_enrollments")?,
                registered_at: row.opt_int(2, "tee_enrollments")?.unwrap_or(0),
            }))
        })
    }

    /// Pins an AK the CPU's report vouched for (registration of a confidential VM, no
    /// MakeCredential) and stores the evidence that vouched for it, in one transaction
    /// under the agent's lock. `false` (nothing written) when another AK is pinned, as for
    /// [`Store::activate_ak`]; `NotFound` when the enrollment no longer declares a TEE kind.
    pub fn pin_tee_ak(
        &self,
        agent_id: &str,
        ak_name: &[u8],
        ak_pub: &[u8],
        evidence: &TeeEvidence,
    ) -> Result<bool, StoreError> {
        let now = evidence.registered_at;
        self.write(|c| {
            let lock = format!(
                "SELECT 1 FROM enrollments WHERE agent_id = ?1{}",
                c.dialect().for_update()
            );
            if c.query(&lock, args![agent_id])?.is_empty() {
                return Err(StoreError::NotFound(agent_id.to_owned()));
            }
            let kind = kind_of(c, agent_id)?;
            if kind.is_tpm() {
                return Err(StoreError::NotFound(agent_id.to_owned()));
            }
            if !super::pin_ak(c, agent_id, ak_name, ak_pub, now)? {
                return Ok(false);
            }
            c.execute(
                "UPDATE tee_enrollments SET hcl_report = ?2, vcek = ?3, registered_at = ?4
                 WHERE agent_id = ?1",
                args![agent_id, &evidence.hcl_report, &evidence.vcek, now],
            )?;
            audit::append(
                c,
                now,
                "ak_activated",
                Some(agent_id),
                Actor::Agent,
                &serde_json::json!({
                    "ak_name": hex::encode(ak_name),
                    "evidence": kind.as_str(),
                }),
            )?;
            Ok(true)
        })
    }
}
