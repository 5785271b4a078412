//! Linux IMA measurement lists: parsing (ASCII and binary) and replay into PCR values.
//!
//! IMA extends a PCR (10 by default) with one *template hash* per measurement; the template
//! hash is a digest of the entry's template data (file digest, path, signature or buffer).
//! Validation therefore has two parts, and both must pass before a policy may look at the
//! entries:
//! 1. [`MeasurementList::replay`] must reproduce the quoted PCR 10. The replay follows the
//!    *logged* template hashes in the list's own bank, exactly as the TPM was extended.
//! 2. Every non-violation entry's template hash must equal the digest of its template data,
//!    otherwise the file digest and path a policy checks are not what the TPM measured. Such
//!    entries are reported as [`ImaFinding::TemplateHashMismatch`] by the same call.
//!
//! Which bank: `ascii_runtime_measurements` and `binary_runtime_measurements` carry SHA-1
//! template hashes; kernels since 6.x also offer `*_runtime_measurements_sha256` (and other
//! banks) with template hashes in that algorithm. The caller says which file it has by
//! passing the template hash algorithm. Replaying another bank (e.g. SHA-256 from the classic
//! SHA-1 list) needs the template data, which both formats provide: the binary list carries
//! it, and from the ASCII list it is rebuilt from the printed fields. In that case the
//! replay hashes the template data in the bank's algorithm, as kernels since 5.10 extend
//! each bank; older kernels extended non-SHA-1 banks with the zero-padded SHA-1 template
//! hash, which this replay does not model.
//!
//! Violations (open-writers, time-of-measure/time-of-use) are logged with an all-zero template
//! hash and extended as all-ones; [`ImaEntry::is_violation`] marks them.

mod ascii;
mod binary;
mod entry;
mod error;
mod replay;

pub use entry::{
    FileDigest, FileDigestAlg, ImaEntry, Location, TemplateKind, MAX_IMA_NAME, MAX_PATH,
    MAX_TEMPLATE_DATA,
};
pub use error::{EntryProblem, ImaError};
pub use replay::{ImaFinding, ImaReplay};

use crate::wire::HashAlg;

/// Largest list we parse (8 MiB). An initramfs at unlock time has hundreds to a few
/// thousand entries (about 150 bytes each); a long-running host with a broad policy can
/// reach tens of thousands, still below this.
pub const MAX_LIST_BYTES: usize = 8 * 1024 * 1024;
/// Most entries we accept (bounds memory independently of entry size).
pub const MAX_ENTRIES: usize = 131_072;

/// A parsed IMA measurement list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeasurementList {
    entries: Vec<ImaEntry>,
    template_hash_alg: HashAlg,
}

impl MeasurementList {
    fn new(entries: Vec<ImaEntry>, template_hash_alg: HashAlg) -> Self {
        Self {
            entries,
            template_hash_alg,
        }
    }

    /// Parses an ASCII list whose template hashes are in `template_hash_alg` (SHA-1 for
    /// `ascii_runtime_measurements`). The input is bytes because file names need not be
    /// UTF-8. An empty input is an empty list.
    pub fn parse_ascii(input: &[u8], template_hash_alg: HashAlg) -> Result<Self, ImaError> {
        ascii::parse(input, template_hash_alg)
    }

    /// Parses a binary list whose template hashes are in `template_hash_alg` (SHA-1 for
    /// `binary_runtime_measurements`). Trailing bytes that do not form a whole entry are an
    /// error naming the entry and offset.
    pub fn parse_binary(input: &[u8], template_hash_alg: HashAlg) -> Result<Self, ImaError> {
        binary::parse(input, template_hash_alg)
    }

    /// The entries, in measurement order.
    pub fn entries(&self) -> &[ImaEntry] {
        &self.entries
    }

    /// The algorithm of the logged template hashes.
    pub fn template_hash_alg(&self) -> HashAlg {
        self.template_hash_alg
    }

    /// The list in the kernel's ASCII format. Parsing the result gives back an equal list
    /// (with line locations) for every list the kernel can produce.
    pub fn to_ascii(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for e in &self.entries {
            ascii::write_line(&mut out, e);
        }
        out
    }

    /// The list in the kernel's binary format (little-endian).
    pub fn to_binary(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for e in &self.entries {
            binary::write_entry(&mut out, e);
        }
        out
    }
}
