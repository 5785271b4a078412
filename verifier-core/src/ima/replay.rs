//! Replay of a measurement list into PCR values, with template-hash findings.

use super::{ImaEntry, Location, MeasurementList};
use crate::wire::{Digest, HashAlg, PcrValues};

/// Evidence in the list that disagrees with itself. Any finding means the list must not be
/// trusted for policy, even if the replay matches the quote.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ImaFinding {
    /// The logged template hash is not the digest of the entry's template data: the file
    /// digest or path shown is not what the kernel measured into the PCR.
    TemplateHashMismatch {
        /// 0-based entry index.
        index: usize,
        /// Where the entry is in the input.
        location: Location,
        /// Template hash in the list (what the PCR was extended with).
        logged: Digest,
        /// Digest of the template data.
        computed: Digest,
    },
}

/// Result of [`MeasurementList::replay`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImaReplay {
    /// Replayed value of every PCR the list touches, in the requested bank. PCRs start at
    /// zero (IMA PCRs are reset to zero at boot).
    pub pcrs: PcrValues,
    /// Template-hash findings (always computed in the list's template hash algorithm).
    pub findings: Vec<ImaFinding>,
}

impl ImaReplay {
    /// The replayed PCR `index` in the replayed bank, if the list touched it.
    pub fn pcr(&self, alg: HashAlg, index: u8) -> Option<&Digest> {
        self.pcrs.get(alg, index)
    }
}

impl MeasurementList {
    /// Replays the list into `bank`.
    ///
    /// In the list's own template hash algorithm the PCRs are extended with the logged
    /// template hashes (all-ones for violations), as the TPM was. In another bank each entry's
    /// template data is hashed in that bank's algorithm (all-ones for violations). Either way
    /// `findings` lists entries whose logged template hash does not match their data.
    pub fn replay(&self, bank: HashAlg) -> ImaReplay {
        let mut pcrs = PcrValues::new();
        let ones = Digest::filled(bank, 0xff);
        for e in &self.entries {
            let measurement = if e.is_violation() {
                ones
            } else if bank == self.template_hash_alg {
                e.template_hash
            } else {
                bank.hash(&e.template_data)
            };
            if let Some(pcr) = pcrs.entry_or(e.pcr, Digest::zero(bank)) {
                pcr.extend(measurement.as_bytes());
            }
        }
        ImaReplay {
            pcrs,
            findings: self.findings(),
        }
    }

    /// Entries whose logged template hash is not the digest of their template data.
    /// Violations are skipped: their all-zero hash is by design unrelated to the data.
    pub fn findings(&self) -> Vec<ImaFinding> {
        self.entries
            .iter()
            .enumerate()
            .filter_map(|(index, e)| check(index, e, self.template_hash_alg))
            .collect()
    }
}

fn check(index: usize, e: &ImaEntry, alg: HashAlg) -> Option<ImaFinding> {
    if e.is_violation() {
        return None;
    }
    let computed = alg.hash(&e.template_data);
    (computed != e.template_hash).then_some(ImaFinding::TemplateHashMismatch {
        index,
        location: e.location,
        logged: e.template_hash,
        computed,
    })
}
