//! PCR reads and the release extend.
//!
//! PCR values travel as `verifier-core` types ([`PcrValues`], [`PcrSelection`]) so that what
//! the agent reads is checked by exactly the code the server runs.

use verifier_core::tpm2::{self, Auth, Command, CommandCode};
use verifier_core::wire::{BankSelection, Digest, HashAlg, PcrSelection, PcrValues, PCR_COUNT};

use super::{Tpm, TpmError};

/// The event extended into the release PCR (defined once, in verifier-core, next to the
/// default release PCR the policy requires at its initial value).
pub use verifier_core::RELEASE_EVENT;

/// A TPM2_PCR_Read returns at most 8 PCRs; 4 banks of 24 PCRs need 12 reads. More rounds
/// than this mean the TPM is not making progress.
const MAX_READ_ROUNDS: usize = 32;

/// Every PCR (0-23) of the given banks.
pub fn full_selection(banks: &[HashAlg]) -> PcrSelection {
    let all: Vec<u8> = (0..PCR_COUNT).collect();
    let banks = banks
        .iter()
        .filter_map(|alg| BankSelection::new(*alg, &all))
        .collect();
    PcrSelection::new(banks).unwrap_or_default()
}

/// `sel` without the PCRs of `done` (what a PCR_Read has not returned yet).
fn subtract(sel: &PcrSelection, done: &PcrSelection) -> PcrSelection {
    let banks = sel
        .banks()
        .iter()
        .filter_map(|b| {
            let left: Vec<u8> = b
                .indexes()
                .filter(|i| {
                    !done
                        .banks()
                        .iter()
                        .any(|d| d.hash() == b.hash() && d.contains(*i))
                })
                .collect();
            if left.is_empty() {
                None
            } else {
                BankSelection::new(b.hash(), &left)
            }
        })
        .collect();
    PcrSelection::new(banks).unwrap_or_default()
}

impl Tpm {
    /// The PCR banks the TPM has allocated (with at least one PCR), restricted to the hash
    /// algorithms the protocol knows. Order is the TPM's.
    pub fn active_banks(&mut self) -> Result<Vec<HashAlg>, TpmError> {
        let mut c = Command::new(CommandCode::GetCapability);
        c.params().u32(tpm2::CAP_PCRS).u32(0).u32(16);
        let banks = self.run("GetCapability (PCRS)", &c, |_, p| {
            tpm2::pcr_banks_response(p)
        })?;
        Ok(banks
            .into_iter()
            .filter_map(|id| HashAlg::from_tpm(id, "TPMS_PCR_SELECTION", "hash").ok())
            .collect())
    }

    /// Reads the selected PCRs. TPM2_PCR_Read returns at most 8 values per call, so this
    /// loops until every selected PCR is read; a bank the TPM does not have is an error
    /// rather than a silently missing value, and so is a PCR the TPM returns that was not
    /// asked for.
    pub fn read_pcrs(&mut self, sel: &PcrSelection) -> Result<PcrValues, TpmError> {
        let mut values = PcrValues::new();
        let mut remaining = sel.clone();
        for _ in 0..MAX_READ_ROUNDS {
            if remaining.is_empty() {
                return Ok(values);
            }
            let mut c = Command::new(CommandCode::PcrRead);
            remaining.write(c.params());
            let read = self.run("PCR_Read", &c, |_, p| tpm2::pcr_read_response(p))?;
            let mut progressed = false;
            for ((alg, index), raw) in read.selection.iter().zip(&read.digests) {
                let asked = remaining
                    .banks()
                    .iter()
                    .any(|b| b.hash() == alg && b.contains(index));
                if !asked {
                    return Err(TpmError::BadOutput {
                        what: "PCR_Read",
                        reason: "returned a PCR that was not asked for",
                    });
                }
                let d = Digest::from_slice(alg, raw).ok_or(TpmError::BadOutput {
                    what: "PCR_Read",
                    reason: "returned a digest of the wrong size for its bank",
                })?;
                if !values.insert(index, d) {
                    return Err(TpmError::PcrIndex(index));
                }
                progressed = true;
            }
            if !progressed {
                // The TPM read nothing of what is left: that bank is not allocated.
                let missing = remaining.banks().first().map(BankSelection::hash);
                return Err(TpmError::BankNotActive(missing));
            }
            remaining = subtract(&remaining, &read.selection);
        }
        Err(TpmError::BadOutput {
            what: "PCR_Read",
            reason: "did not return all selected PCRs",
        })
    }

    /// Extends PCR `index` in every active bank with that bank's digest of
    /// [`RELEASE_EVENT`]. After this no quote in this boot shows the PCR in its initial
    /// (all-zero) state, which the release policy requires.
    pub fn extend_release(&mut self, index: u8) -> Result<(), TpmError> {
        let banks = self.active_banks()?;
        if banks.is_empty() {
            return Err(TpmError::BankNotActive(None));
        }
        let digests: Vec<Digest> = banks
            .into_iter()
            .map(|alg| alg.hash(RELEASE_EVENT))
            .collect();
        self.extend(index, &digests)
    }

    /// TPM2_PCR_Extend of PCR `index` with one digest per bank (what firmware does for each
    /// event of a measured-boot log).
    pub fn extend(&mut self, index: u8, measurements: &[Digest]) -> Result<(), TpmError> {
        if index >= PCR_COUNT {
            return Err(TpmError::PcrIndex(index));
        }
        let count = u32::try_from(measurements.len()).map_err(|_| TpmError::BadInput {
            field: "TPML_DIGEST_VALUES",
            reason: "too many digests",
        })?;
        let mut c = Command::new(CommandCode::PcrExtend)
            .handle(u32::from(index))
            .auth(Auth::password());
        let p = c.params();
        p.u32(count);
        for d in measurements {
            p.u16(d.alg().to_tpm()).bytes(d.as_bytes());
        }
        self.run("PCR_Extend", &c, |_, p| tpm2::empty_response(p))
    }
}
