//! One IMA measurement: its typed fields and the exact template data the kernel hashed.
//!
//! Both list formats are decoded into the same [`ImaEntry`]; the template data is rebuilt in
//! the kernel's hashing form (`ima_calc_field_array_hash`) so that template hashes can be
//! recomputed and other banks replayed whichever format the list came in.

use std::borrow::Cow;
use std::fmt;

use super::error::EntryProblem;
use crate::wire::{Digest, HashAlg, MAX_DIGEST_SIZE};

/// Longest file name of the `ima` template: the kernel cuts names to `IMA_EVENT_NAME_LEN_MAX`
/// (255) and hashes them zero-padded to 256 bytes.
pub const MAX_IMA_NAME: usize = 255;
/// Longest file name of the `n-ng` field we accept: PATH_MAX (4096), excluding the NUL.
pub const MAX_PATH: usize = 4096;
/// Longest template data we accept. The kernel sets no limit, but file digests, paths and
/// signatures fit in a few KiB; `ima-buf` buffers (kexec command lines, key certificates,
/// critical-data hashes) are far below 64 KiB on real systems.
pub const MAX_TEMPLATE_DATA: usize = 64 * 1024;
/// Longest algorithm name in a `d-ng` field (`streebog512` is the longest the kernel has).
const MAX_ALG_NAME: usize = 32;
/// Size of the zero-padded name buffer the `ima` template hashes.
const IMA_NAME_BUF: usize = MAX_IMA_NAME + 1;

/// The templates we implement. Others (`ima-modsig`, `ima-ngv2`, custom formats) are refused,
/// because an ASCII line of an unknown template cannot be split into fields reliably.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TemplateKind {
    /// `ima`: SHA-1 file digest and a name of at most 255 bytes (legacy).
    Ima,
    /// `ima-ng`: `d-ng` (algorithm-tagged digest) and `n-ng` (full path).
    ImaNg,
    /// `ima-sig`: `d-ng`, `n-ng` and the file's IMA signature (may be empty).
    ImaSig,
    /// `ima-buf`: `d-ng`, `n-ng` and a measured buffer (kexec cmdline, keys, critical data).
    ImaBuf,
}

impl TemplateKind {
    /// Parses a template name as the kernel writes it.
    pub fn from_name(name: &[u8]) -> Option<Self> {
        match name {
            b"ima" => Some(Self::Ima),
            b"ima-ng" => Some(Self::ImaNg),
            b"ima-sig" => Some(Self::ImaSig),
            b"ima-buf" => Some(Self::ImaBuf),
            _ => None,
        }
    }

    /// The template name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ima => "ima",
            Self::ImaNg => "ima-ng",
            Self::ImaSig => "ima-sig",
            Self::ImaBuf => "ima-buf",
        }
    }

    /// Number of fields of the template.
    pub(super) fn field_count(self) -> usize {
        match self {
            Self::Ima | Self::ImaNg => 2,
            Self::ImaSig | Self::ImaBuf => 3,
        }
    }
}

impl fmt::Display for TemplateKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The algorithm of a file digest.
///
/// File digests are never replayed, only compared with a policy, so an algorithm we cannot
/// compute (the kernel also offers sm3, streebog, sha3-*, ...) is kept under the name the
/// kernel wrote rather than refusing the whole list: the template hash still binds it to
/// PCR 10, and a policy entry only matches when it names the same algorithm.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum FileDigestAlg {
    /// An algorithm we implement; the digest has exactly its size.
    Hash(HashAlg),
    /// Another kernel hash algorithm, by name (1-32 chars of `[a-z0-9_-]`); its digest is
    /// 1 to 64 bytes.
    Other(String),
}

impl FileDigestAlg {
    fn parse(name: &[u8]) -> Option<Self> {
        let ok = !name.is_empty()
            && name.len() <= MAX_ALG_NAME
            && name
                .iter()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_' || *c == b'-');
        if !ok {
            return None;
        }
        let name = std::str::from_utf8(name).ok()?;
        Some(match HashAlg::from_name(name) {
            Some(alg) => Self::Hash(alg),
            None => Self::Other(name.to_owned()),
        })
    }

    /// The name as the kernel writes it.
    pub fn name(&self) -> &str {
        match self {
            Self::Hash(alg) => alg.name(),
            Self::Other(name) => name,
        }
    }
}

/// A file (or buffer) digest as measured by IMA.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct FileDigest {
    alg: FileDigestAlg,
    bytes: Vec<u8>,
}

impl FileDigest {
    /// Checks the length against the algorithm.
    pub(super) fn new(alg: FileDigestAlg, bytes: Vec<u8>) -> Result<Self, EntryProblem> {
        let expected = match &alg {
            FileDigestAlg::Hash(a) => a.size(),
            FileDigestAlg::Other(_) => MAX_DIGEST_SIZE,
        };
        let fits = match &alg {
            FileDigestAlg::Hash(_) => bytes.len() == expected,
            FileDigestAlg::Other(_) => !bytes.is_empty() && bytes.len() <= expected,
        };
        if !fits {
            return Err(EntryProblem::FileDigestLength {
                len: bytes.len(),
                expected,
            });
        }
        Ok(Self { alg, bytes })
    }

    /// Decodes a `d-ng` field: `<alg>:\0<digest bytes>`.
    pub(super) fn from_dng(field: &[u8]) -> Result<Self, EntryProblem> {
        let colon = field
            .iter()
            .position(|c| *c == b':')
            .ok_or(EntryProblem::BadDigestField)?;
        let (name, rest) = field.split_at(colon);
        let digest = rest
            .strip_prefix(b":\0")
            .ok_or(EntryProblem::BadDigestField)?;
        let alg = FileDigestAlg::parse(name).ok_or(EntryProblem::BadDigestField)?;
        Self::new(alg, digest.to_vec())
    }

    /// Decodes the ASCII form `<alg>:<hex>`.
    pub(super) fn from_ascii_dng(field: &[u8]) -> Result<Self, EntryProblem> {
        let colon = field
            .iter()
            .position(|c| *c == b':')
            .ok_or(EntryProblem::BadDigestField)?;
        let (name, rest) = field.split_at(colon);
        let hex_part = rest.get(1..).unwrap_or_default();
        if hex_part.len() > 2 * MAX_DIGEST_SIZE {
            return Err(EntryProblem::FileDigestLength {
                len: hex_part.len() / 2,
                expected: MAX_DIGEST_SIZE,
            });
        }
        let alg = FileDigestAlg::parse(name).ok_or(EntryProblem::BadDigestField)?;
        if hex_part.iter().any(u8::is_ascii_uppercase) {
            return Err(EntryProblem::BadHex("d-ng"));
        }
        let bytes = hex::decode(hex_part).map_err(|_| EntryProblem::BadHex("d-ng"))?;
        Self::new(alg, bytes)
    }

    /// The `d-ng` field bytes: `<alg>:\0<digest>`.
    pub(super) fn to_dng(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.alg.name().len() + 2 + self.bytes.len());
        out.extend_from_slice(self.alg.name().as_bytes());
        out.extend_from_slice(b":\0");
        out.extend_from_slice(&self.bytes);
        out
    }

    /// The algorithm.
    pub fn alg(&self) -> &FileDigestAlg {
        &self.alg
    }

    /// The digest bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// As a [`Digest`], when the algorithm is one we implement.
    pub fn digest(&self) -> Option<Digest> {
        match &self.alg {
            FileDigestAlg::Hash(alg) => Digest::from_slice(*alg, &self.bytes),
            FileDigestAlg::Other(_) => None,
        }
    }

    /// Lowercase hex of the digest bytes.
    pub fn to_hex(&self) -> String {
        hex::encode(&self.bytes)
    }
}

impl fmt::Debug for FileDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.alg.name(), self.to_hex())
    }
}

impl fmt::Display for FileDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Where in the input an entry came from, so findings can point at it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    /// 1-based line of an ASCII list.
    Line(usize),
    /// Byte offset of the entry in a binary list.
    Offset(usize),
}

/// One measurement. Fields are private so that the template data always agrees with them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImaEntry {
    pub(super) pcr: u8,
    pub(super) template_hash: Digest,
    pub(super) kind: TemplateKind,
    pub(super) file_digest: FileDigest,
    pub(super) path: Vec<u8>,
    pub(super) signature: Option<Vec<u8>>,
    pub(super) buf: Option<Vec<u8>>,
    pub(super) template_data: Vec<u8>,
    pub(super) location: Location,
}

impl ImaEntry {
    /// Builds an entry from typed fields, computing the template data in the kernel's
    /// hashing form unless the binary list supplied it (`raw`, then kept byte for byte so that
    /// the recomputed template hash covers exactly what was logged). `path` excludes the
    /// `n-ng` terminating NUL.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn build(
        pcr: u8,
        template_hash: Digest,
        kind: TemplateKind,
        file_digest: FileDigest,
        path: Vec<u8>,
        extra: Option<Vec<u8>>,
        raw: Option<Vec<u8>>,
        location: Location,
    ) -> Result<Self, EntryProblem> {
        if path.contains(&0) {
            return Err(EntryProblem::EmbeddedNul("n-ng"));
        }
        let template_data = match kind {
            TemplateKind::Ima => {
                if file_digest.alg != FileDigestAlg::Hash(HashAlg::Sha1) {
                    return Err(EntryProblem::BadDigestField);
                }
                if path.len() > MAX_IMA_NAME {
                    return Err(EntryProblem::FieldTooLarge {
                        field: "n",
                        len: path.len(),
                        max: MAX_IMA_NAME,
                    });
                }
                let mut data = Vec::with_capacity(20 + IMA_NAME_BUF);
                data.extend_from_slice(&file_digest.bytes);
                data.extend_from_slice(&path);
                data.resize(20 + IMA_NAME_BUF, 0);
                data
            }
            TemplateKind::ImaNg | TemplateKind::ImaSig | TemplateKind::ImaBuf => {
                if path.len() > MAX_PATH {
                    return Err(EntryProblem::FieldTooLarge {
                        field: "n-ng",
                        len: path.len(),
                        max: MAX_PATH,
                    });
                }
                let mut name = path.clone();
                name.push(0);
                let dng = file_digest.to_dng();
                let empty = Vec::new();
                let third = extra.as_ref().unwrap_or(&empty);
                let mut fields: Vec<&[u8]> = vec![&dng, &name];
                if kind != TemplateKind::ImaNg {
                    fields.push(third);
                }
                let mut data = Vec::new();
                for f in fields {
                    let len = u32::try_from(f.len()).map_err(|_| too_large(f.len()))?;
                    data.extend_from_slice(&len.to_le_bytes());
                    data.extend_from_slice(f);
                }
                if data.len() > MAX_TEMPLATE_DATA {
                    return Err(too_large(data.len()));
                }
                data
            }
        };
        let template_data = raw.unwrap_or(template_data);
        let extra = extra.filter(|e| !e.is_empty());
        let (signature, buf) = match kind {
            TemplateKind::ImaSig => (extra, None),
            TemplateKind::ImaBuf => (None, Some(extra.unwrap_or_default())),
            TemplateKind::Ima | TemplateKind::ImaNg => (None, None),
        };
        Ok(Self {
            pcr,
            template_hash,
            kind,
            file_digest,
            path,
            signature,
            buf,
            template_data,
            location,
        })
    }

    /// The PCR the kernel extended (10 unless the IMA policy says otherwise).
    pub fn pcr(&self) -> u8 {
        self.pcr
    }

    /// The template hash as logged. All zeros marks a violation (see [`Self::is_violation`]).
    pub fn template_hash(&self) -> &Digest {
        &self.template_hash
    }

    /// The template.
    pub fn kind(&self) -> TemplateKind {
        self.kind
    }

    /// The measured file's (or buffer's) digest.
    pub fn file_digest(&self) -> &FileDigest {
        &self.file_digest
    }

    /// The file name hint (or buffer name for `ima-buf`) as raw bytes: Linux paths need not
    /// be UTF-8, and refusing a list because of one odd file name would let any local user
    /// block the unlock.
    pub fn path(&self) -> &[u8] {
        &self.path
    }

    /// The path for display and for policies written as text.
    pub fn path_lossy(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.path)
    }

    /// The IMA signature of an `ima-sig` entry, when the file had one.
    pub fn signature(&self) -> Option<&[u8]> {
        self.signature.as_deref()
    }

    /// The measured buffer of an `ima-buf` entry.
    pub fn buf(&self) -> Option<&[u8]> {
        self.buf.as_deref()
    }

    /// A violation: the kernel logged an all-zero template hash and extended the PCR with
    /// all-ones, because the file changed while measured (open-writers/ToMToU). Its fields
    /// are *not* bound to the PCR, so a policy must not trust them.
    pub fn is_violation(&self) -> bool {
        self.template_hash.as_bytes().iter().all(|b| *b == 0)
    }

    /// The template data in the form the kernel hashes: for `ima`, the digest then the name
    /// zero-padded to 256 bytes; for the others, each field as a little-endian `u32` length
    /// and its bytes.
    pub fn template_data(&self) -> &[u8] {
        &self.template_data
    }

    /// Where in the input this entry came from.
    pub fn location(&self) -> Location {
        self.location
    }
}

fn too_large(len: usize) -> EntryProblem {
    EntryProblem::FieldTooLarge {
        field: "template data",
        len,
        max: MAX_TEMPLATE_DATA,
    }
}
