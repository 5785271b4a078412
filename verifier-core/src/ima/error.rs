//! Errors of IMA list parsing. Every error says where (line or entry, and byte offset) and
//! which check failed, but never echoes list content: file names are chosen by whoever
//! creates files on the attested machine and must not flow into the verifier's logs.

use crate::ParseError;

/// An IMA measurement list could not be parsed. The list is refused as a whole: a verifier
/// cannot replay PCR 10 past an entry it does not understand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ImaError {
    /// A line of the ASCII list (`ascii_runtime_measurements`) is malformed.
    #[error("IMA ASCII list, line {line} (byte offset {offset}): {problem}")]
    Ascii {
        /// 1-based line number.
        line: usize,
        /// Byte offset of the start of the line.
        offset: usize,
        /// What is wrong with it.
        problem: EntryProblem,
    },
    /// An entry of the binary list (`binary_runtime_measurements`) is malformed.
    #[error("IMA binary list, entry {index} (starting at byte offset {offset}): {problem}")]
    Binary {
        /// 0-based entry index.
        index: usize,
        /// Byte offset of the start of the entry.
        offset: usize,
        /// What is wrong with it.
        problem: EntryProblem,
    },
    /// The list is larger than we accept (see [`super::MAX_LIST_BYTES`]).
    #[error("IMA list of {len} bytes exceeds the maximum of {max} bytes")]
    ListTooLarge {
        /// Size of the input.
        len: usize,
        /// Largest accepted size.
        max: usize,
    },
    /// The list has more entries than we accept (see [`super::MAX_ENTRIES`]).
    #[error("IMA list has more than {max} entries")]
    TooManyEntries {
        /// Largest accepted number of entries.
        max: usize,
    },
}

/// What is wrong with one entry. `Copy` and free of list content on purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EntryProblem {
    /// A binary structure was truncated, too large or had trailing bytes.
    #[error(transparent)]
    Structure(#[from] ParseError),
    /// A space-separated field of an ASCII line is missing.
    #[error("field `{0}` is missing")]
    MissingField(&'static str),
    /// A field that must be hexadecimal is not (or has an odd length).
    #[error("field `{0}` is not valid hexadecimal")]
    BadHex(&'static str),
    /// The PCR index is not a number in 0..24.
    #[error("PCR index is not a number below 24")]
    BadPcr,
    /// The template name is not one we implement.
    #[error("template name is not one of ima, ima-ng, ima-sig, ima-buf")]
    UnknownTemplate,
    /// The template hash does not have the size of the list's template hash algorithm.
    #[error("template hash is {len} bytes, but the list's {alg} template hashes are {expected}")]
    TemplateHashLength {
        /// Length found.
        len: usize,
        /// Expected length.
        expected: usize,
        /// The list's template hash algorithm.
        alg: crate::wire::HashAlg,
    },
    /// A file digest's length does not match its algorithm (or exceeds 64 bytes).
    #[error("file digest is {len} bytes, which does not fit its algorithm (expected {expected})")]
    FileDigestLength {
        /// Length found.
        len: usize,
        /// Expected length (64, the maximum, for algorithms of unknown size).
        expected: usize,
    },
    /// The `d-ng` field is not `<alg>:\0<digest>` with an algorithm name of 1 to 32
    /// characters from `[a-z0-9_-]`.
    #[error("file digest field is not `<alg>:<digest>` with a well-formed algorithm name")]
    BadDigestField,
    /// A field is longer than we accept.
    #[error("field `{field}` is {len} bytes, more than the maximum {max}")]
    FieldTooLarge {
        /// Field name.
        field: &'static str,
        /// Length found.
        len: usize,
        /// Largest accepted length.
        max: usize,
    },
    /// A name holds a NUL byte where the kernel never writes one.
    #[error("field `{0}` contains a NUL byte")]
    EmbeddedNul(&'static str),
    /// The template data holds a different number of fields than the template defines.
    #[error("template data holds {found} fields, the template defines {expected}")]
    FieldCount {
        /// Fields found.
        found: usize,
        /// Fields the template defines.
        expected: usize,
    },
    /// The ASCII line is empty.
    #[error("line is empty")]
    EmptyLine,
}
