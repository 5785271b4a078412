//! The binary list (`/sys/kernel/security/ima/binary_runtime_measurements`).
//!
//! Integers are in the kernel's native byte order, or little-endian when booted with
//! `ima_canonical_fmt`; we accept little-endian only (x86, arm64, riscv64 and the canonical
//! format), so a big-endian host must boot with `ima_canonical_fmt`.
//!
//! Entry: `pcr: u32`, `template_hash: [alg size]`, `name_len: u32`, `name`, then
//! - `ima` (legacy): `digest: [20]`, `name_len: u32`, `name` (no NUL, at most 255 bytes);
//!   there is no template data length;
//! - others: `template_data_len: u32` and the template data, whose fields are each a `u32`
//!   length and bytes (`d-ng`, `n-ng`, then `sig` or `buf`).

use super::entry::{
    FileDigest, FileDigestAlg, ImaEntry, Location, TemplateKind, MAX_IMA_NAME, MAX_PATH,
    MAX_TEMPLATE_DATA,
};
use super::error::{EntryProblem, ImaError};
use super::{MeasurementList, MAX_ENTRIES, MAX_LIST_BYTES};
use crate::wire::{Digest, HashAlg, Reader, PCR_COUNT};

/// Longest template name we accept (the kernel's are at most 15 bytes).
const MAX_TEMPLATE_NAME: usize = 255;

pub(super) fn parse(input: &[u8], template_hash_alg: HashAlg) -> Result<MeasurementList, ImaError> {
    if input.len() > MAX_LIST_BYTES {
        return Err(ImaError::ListTooLarge {
            len: input.len(),
            max: MAX_LIST_BYTES,
        });
    }
    let mut r = Reader::new("IMA entry", input);
    let mut entries = Vec::new();
    while !r.is_empty() {
        let index = entries.len();
        if index >= MAX_ENTRIES {
            return Err(ImaError::TooManyEntries { max: MAX_ENTRIES });
        }
        let offset = r.offset();
        let entry =
            parse_entry(&mut r, template_hash_alg, offset).map_err(|problem| ImaError::Binary {
                index,
                offset,
                problem,
            })?;
        entries.push(entry);
    }
    Ok(MeasurementList::new(entries, template_hash_alg))
}

fn parse_entry(r: &mut Reader<'_>, alg: HashAlg, offset: usize) -> Result<ImaEntry, EntryProblem> {
    let pcr = r.u32_le("pcr")?;
    let pcr = u8::try_from(pcr)
        .ok()
        .filter(|p| *p < PCR_COUNT)
        .ok_or(EntryProblem::BadPcr)?;
    let hash = r.take(alg.size(), "template_hash")?;
    let template_hash = Digest::from_slice(alg, hash).ok_or(EntryProblem::TemplateHashLength {
        len: hash.len(),
        expected: alg.size(),
        alg,
    })?;
    let name_len = usize_from(r.u32_le("template_name_len")?);
    let name = r.bounded(name_len, "template_name", MAX_TEMPLATE_NAME)?;
    let kind = TemplateKind::from_name(name).ok_or(EntryProblem::UnknownTemplate)?;
    let location = Location::Offset(offset);
    if kind == TemplateKind::Ima {
        let digest = r.take(HashAlg::Sha1.size(), "d")?;
        let digest = FileDigest::new(FileDigestAlg::Hash(HashAlg::Sha1), digest.to_vec())?;
        let len = usize_from(r.u32_le("n_len")?);
        let path = r.bounded(len, "n", MAX_IMA_NAME)?;
        return ImaEntry::build(
            pcr,
            template_hash,
            kind,
            digest,
            path.to_vec(),
            None,
            None,
            location,
        );
    }
    let len = usize_from(r.u32_le("template_data_len")?);
    if len > MAX_TEMPLATE_DATA {
        return Err(EntryProblem::FieldTooLarge {
            field: "template data",
            len,
            max: MAX_TEMPLATE_DATA,
        });
    }
    let mut data = r.sub(len, "IMA template data")?;
    let raw = data.clone().rest();
    let mut fields: [&[u8]; 3] = [&[], &[], &[]];
    let expected = kind.field_count();
    let mut found = 0usize;
    while !data.is_empty() {
        let field_len = usize_from(data.u32_le("field_len")?);
        let field = data.bounded(field_len, "field", MAX_TEMPLATE_DATA)?;
        if let Some(slot) = fields.get_mut(found).filter(|_| found < expected) {
            *slot = field;
        }
        found += 1;
    }
    if found != expected {
        return Err(EntryProblem::FieldCount { found, expected });
    }
    let [dng, nng, extra] = fields;
    let digest = FileDigest::from_dng(dng)?;
    let path = nng.strip_suffix(&[0]).unwrap_or(nng);
    if path.len() > MAX_PATH {
        return Err(EntryProblem::FieldTooLarge {
            field: "n-ng",
            len: path.len(),
            max: MAX_PATH,
        });
    }
    let extra = (kind != TemplateKind::ImaNg).then(|| extra.to_vec());
    ImaEntry::build(
        pcr,
        template_hash,
        kind,
        digest,
        path.to_vec(),
        extra,
        Some(raw.to_vec()),
        location,
    )
}

/// `u32` to `usize` without truncation on every platform we build for; saturates otherwise,
/// which the following bound check then refuses.
fn usize_from(v: u32) -> usize {
    usize::try_from(v).unwrap_or(usize::MAX)
}

/// Writes one entry in the binary format (little-endian).
pub(super) fn write_entry(out: &mut Vec<u8>, e: &ImaEntry) {
    out.extend_from_slice(&u32::from(e.pcr).to_le_bytes());
    out.extend_from_slice(e.template_hash.as_bytes());
    let name = e.kind.name().as_bytes();
    push_len(out, name.len());
    out.extend_from_slice(name);
    if e.kind == TemplateKind::Ima {
        out.extend_from_slice(e.file_digest.as_bytes());
        push_len(out, e.path.len());
        out.extend_from_slice(&e.path);
    } else {
        push_len(out, e.template_data.len());
        out.extend_from_slice(&e.template_data);
    }
}

fn push_len(out: &mut Vec<u8>, len: usize) {
    // Lengths are bounded far below u32::MAX by the parser and the entry constructor.
    let len = u32::try_from(len).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_le_bytes());
}
