//! PCR values by bank and index, as replayed from logs or reported in evidence.

use std::collections::BTreeMap;

use super::{Digest, HashAlg};

/// Number of PCRs of a PC Client TPM (0-23). Indexes at or above this are refused.
pub const PCR_COUNT: u8 = 24;

/// PCR values grouped by bank. Ordered maps so iteration (and output) is deterministic.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PcrValues {
    banks: BTreeMap<HashAlg, BTreeMap<u8, Digest>>,
}

impl PcrValues {
    /// No values.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets PCR `index` of the digest's bank. Returns `false` (and stores nothing) for an
    /// index outside 0..24.
    pub fn insert(&mut self, index: u8, value: Digest) -> bool {
        if index >= PCR_COUNT {
            return false;
        }
        self.banks.entry(value.alg()).or_default().insert(index, value);
        true
    }

    /// The value of PCR `index` in bank `alg`, if present.
    pub fn get(&self, alg: HashAlg, index: u8) -> Option<&Digest> {
        self.banks.get(&alg)?.get(&index)
    }

    /// Mutable access, creating the PCR with `init` if absent.
    pub fn entry_or(&mut self, index: u8, init: Digest) -> Option<&mut Digest> {
        if index >= PCR_COUNT {
            return None;
        }
        Some(
            self.banks
                .entry(init.alg())
                .or_default()
                .entry(index)
                .or_insert(init),
        )
    }

    /// Banks present, in TPM_ALG_ID order.
    pub fn banks(&self) -> impl Iterator<Item = HashAlg> + '_ {
        self.banks.keys().copied()
    }

    /// PCRs of one bank, in index order.
    pub fn bank(&self, alg: HashAlg) -> impl Iterator<Item = (u8, &Digest)> + '_ {
        self.banks
            .get(&alg)
            .into_iter()
            .flat_map(|b| b.iter().map(|(i, d)| (*i, d)))
    }

    /// Every (index, value) in every bank.
    pub fn iter(&self) -> impl Iterator<Item = (u8, &Digest)> + '_ {
        self.banks
            .values()
            .flat_map(|b| b.iter().map(|(i, d)| (*i, d)))
    }

    /// True when no PCR is held.
    pub fn is_empty(&self) -> bool {
        self.banks.values().all(BTreeMap::is_empty)
    }
}
