//! PCR values by bank and index, as replayed from logs or reported in evidence.

use std::collections::BTreeMap;

use super::{Digest, HashAlg, Reader, Writer};
use crate::ParseError;

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
        self.banks
            .entry(value.alg())
            .or_default()
            .insert(index, value);
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

/// Most banks a TPML_PCR_SELECTION may list (HASH_COUNT bound of the reference TPM).
pub const MAX_PCR_BANKS: usize = 16;
/// Largest `sizeofSelect` (PCR_SELECT_MAX for a 24-PCR TPM, rounded up to 32 PCRs).
pub const PCR_SELECT_MAX: usize = 4;

/// One TPMS_PCR_SELECTION: a bank and a bitmap of its PCRs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BankSelection {
    hash: HashAlg,
    size_of_select: u8,
    select: [u8; PCR_SELECT_MAX],
}

impl BankSelection {
    /// Selects `indexes` (each below [`PCR_COUNT`]) of bank `hash`, with the standard
    /// 3-byte bitmap. Returns `None` for an out-of-range index.
    pub fn new(hash: HashAlg, indexes: &[u8]) -> Option<Self> {
        let mut select = [0u8; PCR_SELECT_MAX];
        for &i in indexes {
            if i >= PCR_COUNT {
                return None;
            }
            *select.get_mut(usize::from(i / 8))? |= 1 << (i % 8);
        }
        Some(Self {
            hash,
            size_of_select: 3,
            select,
        })
    }

    /// The bank.
    pub fn hash(&self) -> HashAlg {
        self.hash
    }

    /// Selected PCR indexes, ascending (the order the TPM digests them in).
    pub fn indexes(&self) -> impl Iterator<Item = u8> + '_ {
        (0..PCR_COUNT).filter(|i| {
            self.select
                .get(usize::from(i / 8))
                .is_some_and(|b| b & (1 << (i % 8)) != 0)
        })
    }

    /// True when PCR `index` is selected.
    pub fn contains(&self, index: u8) -> bool {
        self.indexes().any(|i| i == index)
    }
}

/// TPML_PCR_SELECTION: which PCRs of which banks a quote covers, in the TPM's order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct PcrSelection {
    banks: Vec<BankSelection>,
}

/// A PCR the selection covers but the supplied values lack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MissingPcr {
    /// Bank of the missing PCR.
    pub alg: HashAlg,
    /// Index of the missing PCR.
    pub index: u8,
}

impl PcrSelection {
    /// From bank selections; `None` when a bank repeats or there are more than
    /// [`MAX_PCR_BANKS`].
    pub fn new(banks: Vec<BankSelection>) -> Option<Self> {
        if banks.len() > MAX_PCR_BANKS {
            return None;
        }
        for (i, b) in banks.iter().enumerate() {
            if banks.iter().skip(i + 1).any(|o| o.hash == b.hash) {
                return None;
            }
        }
        Some(Self { banks })
    }

    /// Reads a TPML_PCR_SELECTION. Refuses more than [`MAX_PCR_BANKS`] banks, a
    /// `sizeofSelect` above [`PCR_SELECT_MAX`], unknown hash algorithms, a bank listed twice
    /// (the digest would cover it twice, which no honest agent asks for) and bits for PCRs
    /// at or above [`PCR_COUNT`].
    pub fn read(r: &mut Reader<'_>) -> Result<Self, ParseError> {
        const S: &str = "TPML_PCR_SELECTION";
        let count = r.u32("TPML_PCR_SELECTION.count")?;
        let n = usize::try_from(count).unwrap_or(usize::MAX);
        if n > MAX_PCR_BANKS {
            return Err(ParseError::TooLarge {
                structure: S,
                field: "count",
                len: n,
                max: MAX_PCR_BANKS,
            });
        }
        let mut banks = Vec::with_capacity(n);
        for _ in 0..n {
            let id = r.u16("TPMS_PCR_SELECTION.hash")?;
            let hash = HashAlg::from_tpm(id, "TPMS_PCR_SELECTION", "hash")?;
            let size = r.u8("TPMS_PCR_SELECTION.sizeofSelect")?;
            let bytes = r
                .bounded(usize::from(size), "pcrSelect", PCR_SELECT_MAX)
                .map_err(|e| rename(e, "TPMS_PCR_SELECTION"))?;
            let mut select = [0u8; PCR_SELECT_MAX];
            for (d, s) in select.iter_mut().zip(bytes) {
                *d = *s;
            }
            // Byte 3 holds PCRs 24-31, which a PC Client TPM does not have.
            if let Some(&high) = select.get(3) {
                if high != 0 {
                    return Err(ParseError::InvalidValue {
                        structure: "TPMS_PCR_SELECTION",
                        field: "pcrSelect",
                        value: u64::from(high),
                    });
                }
            }
            if banks.iter().any(|b: &BankSelection| b.hash == hash) {
                return Err(ParseError::InvalidValue {
                    structure: S,
                    field: "pcrSelections.hash (repeated bank)",
                    value: u64::from(id),
                });
            }
            banks.push(BankSelection {
                hash,
                size_of_select: size,
                select,
            });
        }
        Ok(Self { banks })
    }

    /// Parses a TPML_PCR_SELECTION that fills `bytes` exactly.
    pub fn parse(bytes: &[u8]) -> Result<Self, ParseError> {
        let mut r = Reader::new("TPML_PCR_SELECTION", bytes);
        let s = Self::read(&mut r)?;
        r.finish()?;
        Ok(s)
    }

    /// Appends the TPML_PCR_SELECTION exactly as parsed (same `sizeofSelect`).
    pub fn write(&self, w: &mut Writer) {
        // At most MAX_PCR_BANKS entries by construction.
        w.u32(u32::try_from(self.banks.len()).unwrap_or(0));
        for b in &self.banks {
            w.u16(b.hash.to_tpm()).u8(b.size_of_select);
            let n = usize::from(b.size_of_select).min(PCR_SELECT_MAX);
            w.bytes(b.select.get(..n).unwrap_or_default());
        }
    }

    /// The marshalled TPML_PCR_SELECTION.
    pub fn marshal(&self) -> Vec<u8> {
        let mut w = Writer::new();
        self.write(&mut w);
        w.into_vec()
    }

    /// Bank selections in list order.
    pub fn banks(&self) -> &[BankSelection] {
        &self.banks
    }

    /// Every selected (bank, index), in the order the TPM digests them: list order, then
    /// ascending index within a bank.
    pub fn iter(&self) -> impl Iterator<Item = (HashAlg, u8)> + '_ {
        self.banks
            .iter()
            .flat_map(|b| b.indexes().map(move |i| (b.hash, i)))
    }

    /// True when nothing is selected.
    pub fn is_empty(&self) -> bool {
        self.iter().next().is_none()
    }

    /// The quote's pcrDigest for `values`: `H_alg(value_1 || value_2 || ...)` in
    /// [`PcrSelection::iter`] order (TPM 2.0 Part 3, TPM2_Quote). `alg` is the hash of the
    /// signing scheme, which is not necessarily any PCR bank's algorithm. Values outside the
    /// selection are ignored; every selected PCR must be present.
    pub fn digest(&self, alg: HashAlg, values: &PcrValues) -> Result<Digest, MissingPcr> {
        let mut parts = Vec::new();
        for (bank, index) in self.iter() {
            let v = values
                .get(bank, index)
                .ok_or(MissingPcr { alg: bank, index })?;
            parts.push(v.as_bytes());
        }
        Ok(alg.hash_parts(&parts))
    }

    /// The subset of `values` this selection covers (the rest is dropped); fails like
    /// [`PcrSelection::digest`] when a selected PCR is absent.
    pub fn restrict(&self, values: &PcrValues) -> Result<PcrValues, MissingPcr> {
        let mut out = PcrValues::new();
        for (bank, index) in self.iter() {
            let v = values
                .get(bank, index)
                .ok_or(MissingPcr { alg: bank, index })?;
            out.insert(index, *v);
        }
        Ok(out)
    }
}

/// Re-labels a reader error with the structure actually being decoded.
fn rename(e: ParseError, structure: &'static str) -> ParseError {
    match e {
        ParseError::TooLarge {
            field, len, max, ..
        } => ParseError::TooLarge {
            structure,
            field,
            len,
            max,
        },
        other => other,
    }
}
