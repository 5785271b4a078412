//! PCR reads and the release extend.
//!
//! PCR values travel as `verifier-core` types ([`PcrValues`], [`PcrSelection`]) so that what
//! the agent reads is checked by exactly the code the server runs.

use tss_esapi::constants::CapabilityType;
use tss_esapi::handles::PcrHandle;
use tss_esapi::interface_types::algorithm::HashingAlgorithm;
use tss_esapi::structures::{
    CapabilityData, DigestValues, PcrSelectionList, PcrSelectionListBuilder, PcrSlot,
};
use tss_esapi::tss2_esys::ESYS_TR;
use verifier_core::wire::{BankSelection, Digest, HashAlg, PcrSelection, PcrValues, PCR_COUNT};

use super::{cmd, Tpm, TpmError};

/// The event extended into the release PCR (defined once, in verifier-core's policy module,
/// next to the default release PCR the policy requires at its initial value).
pub use verifier_core::policy::RELEASE_EVENT;

/// A TPM2_PCR_Read returns at most 8 PCRs; 4 banks of 24 PCRs need 12 reads. More rounds
/// than this mean the TPM is not making progress.
const MAX_READ_ROUNDS: usize = 32;

pub(super) fn to_tss_alg(alg: HashAlg) -> HashingAlgorithm {
    match alg {
        HashAlg::Sha1 => HashingAlgorithm::Sha1,
        HashAlg::Sha256 => HashingAlgorithm::Sha256,
        HashAlg::Sha384 => HashingAlgorithm::Sha384,
        HashAlg::Sha512 => HashingAlgorithm::Sha512,
    }
}

fn from_tss_alg(alg: HashingAlgorithm) -> Option<HashAlg> {
    match alg {
        HashingAlgorithm::Sha1 => Some(HashAlg::Sha1),
        HashingAlgorithm::Sha256 => Some(HashAlg::Sha256),
        HashingAlgorithm::Sha384 => Some(HashAlg::Sha384),
        HashingAlgorithm::Sha512 => Some(HashAlg::Sha512),
        _ => None,
    }
}

fn slot(index: u8) -> Result<PcrSlot, TpmError> {
    if index >= PCR_COUNT {
        return Err(TpmError::PcrIndex(index));
    }
    PcrSlot::try_from(1u32 << index).map_err(|_| TpmError::PcrIndex(index))
}

fn slot_index(slot: PcrSlot) -> u8 {
    // A PcrSlot is a single bit; its position is the PCR index (0..32).
    u8::try_from(u32::from(slot).trailing_zeros()).unwrap_or(u8::MAX)
}

/// The tss-esapi form of a selection.
pub(super) fn to_tss_selection(sel: &PcrSelection) -> Result<PcrSelectionList, TpmError> {
    let mut builder = PcrSelectionListBuilder::new();
    for bank in sel.banks() {
        let slots = bank.indexes().map(slot).collect::<Result<Vec<_>, _>>()?;
        builder = builder.with_selection(to_tss_alg(bank.hash()), &slots);
    }
    builder.build().map_err(cmd("build PCR selection"))
}

/// Every PCR (0-23) of the given banks.
pub fn full_selection(banks: &[HashAlg]) -> PcrSelection {
    let all: Vec<u8> = (0..PCR_COUNT).collect();
    let banks = banks
        .iter()
        .filter_map(|alg| BankSelection::new(*alg, &all))
        .collect();
    PcrSelection::new(banks).unwrap_or_default()
}

impl Tpm {
    /// The PCR banks the TPM has allocated (with at least one PCR), restricted to the hash
    /// algorithms the protocol knows. Order is the TPM's.
    pub fn active_banks(&mut self) -> Result<Vec<HashAlg>, TpmError> {
        let (data, _) = self
            .ctx
            .get_capability(CapabilityType::AssignedPcr, 0, 16)
            .map_err(cmd("GetCapability (PCRS)"))?;
        self.sent(1);
        let CapabilityData::AssignedPcr(list) = data else {
            return Err(TpmError::BadOutput {
                what: "GetCapability (PCRS)",
                reason: "answered with another capability",
            });
        };
        Ok(list
            .get_selections()
            .iter()
            .filter(|s| !s.is_empty())
            .filter_map(|s| from_tss_alg(s.hashing_algorithm()))
            .collect())
    }

    /// Reads the selected PCRs. TPM2_PCR_Read returns at most 8 values per call, so this
    /// loops until every selected PCR is read; a bank the TPM does not have is an error
    /// rather than a silently missing value.
    pub fn read_pcrs(&mut self, sel: &PcrSelection) -> Result<PcrValues, TpmError> {
        let mut values = PcrValues::new();
        let mut remaining = to_tss_selection(sel)?;
        for _ in 0..MAX_READ_ROUNDS {
            if remaining.is_empty() {
                return Ok(values);
            }
            let (_, read, digests) = self
                .ctx
                .pcr_read(remaining.clone())
                .map_err(cmd("PCR_Read"))?;
            self.sent(1);
            let mut digests = digests.value().iter();
            let mut progressed = false;
            for bank in read.get_selections() {
                let alg = from_tss_alg(bank.hashing_algorithm()).ok_or(TpmError::BadOutput {
                    what: "PCR_Read",
                    reason: "returned a bank of an unknown hash algorithm",
                })?;
                for s in bank.selected() {
                    let index = slot_index(s);
                    let raw = digests.next().ok_or(TpmError::BadOutput {
                        what: "PCR_Read",
                        reason: "returned fewer digests than PCRs selected",
                    })?;
                    let d = Digest::from_slice(alg, raw.value()).ok_or(TpmError::BadOutput {
                        what: "PCR_Read",
                        reason: "returned a digest of the wrong size for its bank",
                    })?;
                    if !values.insert(index, d) {
                        return Err(TpmError::PcrIndex(index));
                    }
                    progressed = true;
                }
            }
            if !progressed {
                // The TPM read nothing of what is left: that bank is not allocated.
                let missing = remaining
                    .get_selections()
                    .iter()
                    .find(|s| !s.is_empty())
                    .and_then(|s| from_tss_alg(s.hashing_algorithm()));
                return Err(TpmError::BankNotActive(missing));
            }
            remaining
                .subtract(&read)
                .map_err(cmd("PCR selection bookkeeping"))?;
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
        let mut digests = DigestValues::new();
        for d in measurements {
            let tss = tss_esapi::structures::Digest::try_from(d.as_bytes())
                .map_err(cmd("PCR_Extend digest"))?;
            digests.set(to_tss_alg(d.alg()), tss);
        }
        if index >= PCR_COUNT {
            return Err(TpmError::PcrIndex(index));
        }
        let handle =
            PcrHandle::try_from(ESYS_TR::from(index)).map_err(|_| TpmError::PcrIndex(index))?;
        self.ctx
            .execute_with_session(super::auth::PASSWORD, |ctx| ctx.pcr_extend(handle, digests))
            .map_err(cmd("PCR_Extend"))?;
        self.sent(1);
        Ok(())
    }
}
