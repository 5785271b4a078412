//! The ASCII list (`/sys/kernel/security/ima/ascii_runtime_measurements`).
//!
//! Line format: `PCR template-hash template-name field...`, fields separated by one space.
//! The kernel prints file names verbatim, so a name may contain spaces. We therefore split
//! from both ends: the digest is the first field after the template name; for `ima-sig` and
//! `ima-buf` the last field (signature or buffer, hex, possibly empty: the kernel always
//! prints the separating space) follows the *last* space; the name is everything between.
//! A name holding a newline cannot be represented in this format; such an entry fails to
//! parse or produces a template-hash finding, never a silent success.

use std::io::Write as _;

use super::entry::{
    FileDigest, FileDigestAlg, ImaEntry, Location, TemplateKind, MAX_TEMPLATE_DATA,
};
use super::error::{EntryProblem, ImaError};
use super::{MeasurementList, MAX_ENTRIES, MAX_LIST_BYTES};
use crate::wire::{Digest, HashAlg, PCR_COUNT};

pub(super) fn parse(input: &[u8], template_hash_alg: HashAlg) -> Result<MeasurementList, ImaError> {
    if input.len() > MAX_LIST_BYTES {
        return Err(ImaError::ListTooLarge {
            len: input.len(),
            max: MAX_LIST_BYTES,
        });
    }
    let mut entries = Vec::new();
    let mut offset = 0usize;
    if input.is_empty() {
        return Ok(MeasurementList::new(entries, template_hash_alg));
    }
    let body = input.strip_suffix(b"\n").unwrap_or(input);
    for (i, line) in body.split(|c| *c == b'\n').enumerate() {
        let number = i + 1;
        if entries.len() >= MAX_ENTRIES {
            return Err(ImaError::TooManyEntries { max: MAX_ENTRIES });
        }
        let entry =
            parse_line(line, number, template_hash_alg).map_err(|problem| ImaError::Ascii {
                line: number,
                offset,
                problem,
            })?;
        entries.push(entry);
        offset += line.len() + 1;
    }
    Ok(MeasurementList::new(entries, template_hash_alg))
}

fn split_first<'a>(s: &'a [u8], field: &'static str) -> Result<(&'a [u8], &'a [u8]), EntryProblem> {
    let pos = s
        .iter()
        .position(|c| *c == b' ')
        .ok_or(EntryProblem::MissingField(field))?;
    let (head, tail) = s.split_at(pos);
    Ok((head, tail.get(1..).unwrap_or_default()))
}

fn split_last<'a>(s: &'a [u8], field: &'static str) -> Result<(&'a [u8], &'a [u8]), EntryProblem> {
    let pos = s
        .iter()
        .rposition(|c| *c == b' ')
        .ok_or(EntryProblem::MissingField(field))?;
    let (head, tail) = s.split_at(pos);
    Ok((head, tail.get(1..).unwrap_or_default()))
}

fn decode_hex(s: &[u8], field: &'static str, max: usize) -> Result<Vec<u8>, EntryProblem> {
    if s.len() / 2 > max {
        return Err(EntryProblem::FieldTooLarge {
            field,
            len: s.len() / 2,
            max,
        });
    }
    // The kernel prints lowercase; accepting only that keeps one spelling per list.
    if s.iter().any(u8::is_ascii_uppercase) {
        return Err(EntryProblem::BadHex(field));
    }
    hex::decode(s).map_err(|_| EntryProblem::BadHex(field))
}

fn parse_line(line: &[u8], number: usize, alg: HashAlg) -> Result<ImaEntry, EntryProblem> {
    if line.is_empty() {
        return Err(EntryProblem::EmptyLine);
    }
    let (pcr, rest) = split_first(line, "template-hash")?;
    let pcr = std::str::from_utf8(pcr)
        .ok()
        .and_then(|s| s.parse::<u8>().ok().filter(|p| p.to_string() == s))
        .filter(|p| *p < PCR_COUNT)
        .ok_or(EntryProblem::BadPcr)?;
    let (hash_hex, rest) = split_first(rest, "template-name")?;
    let hash = decode_hex(hash_hex, "template-hash", alg.size())?;
    let template_hash = Digest::from_slice(alg, &hash).ok_or(EntryProblem::TemplateHashLength {
        len: hash.len(),
        expected: alg.size(),
        alg,
    })?;
    let (name, rest) = split_first(rest, "digest")?;
    let kind = TemplateKind::from_name(name).ok_or(EntryProblem::UnknownTemplate)?;
    let location = Location::Line(number);
    match kind {
        TemplateKind::Ima => {
            let (digest, path) = split_first(rest, "n")?;
            let bytes = decode_hex(digest, "d", HashAlg::Sha1.size())?;
            let digest = FileDigest::new(FileDigestAlg::Hash(HashAlg::Sha1), bytes)?;
            ImaEntry::build(
                pcr,
                template_hash,
                kind,
                digest,
                path.to_vec(),
                None,
                None,
                location,
            )
        }
        TemplateKind::ImaNg => {
            let (digest, path) = split_first(rest, "n-ng")?;
            let digest = FileDigest::from_ascii_dng(digest)?;
            ImaEntry::build(
                pcr,
                template_hash,
                kind,
                digest,
                path.to_vec(),
                None,
                None,
                location,
            )
        }
        TemplateKind::ImaSig | TemplateKind::ImaBuf => {
            let (digest, rest) = split_first(rest, "n-ng")?;
            let digest = FileDigest::from_ascii_dng(digest)?;
            let last = if kind == TemplateKind::ImaSig {
                "sig"
            } else {
                "buf"
            };
            let (path, extra) = split_last(rest, last)?;
            let extra = decode_hex(extra, last, MAX_TEMPLATE_DATA)?;
            ImaEntry::build(
                pcr,
                template_hash,
                kind,
                digest,
                path.to_vec(),
                Some(extra),
                None,
                location,
            )
        }
    }
}

/// Writes one entry as the kernel prints it in `ascii_runtime_measurements`.
pub(super) fn write_line(out: &mut Vec<u8>, e: &ImaEntry) {
    // Writing to a Vec cannot fail.
    let _ = write!(
        out,
        "{} {} {} ",
        e.pcr,
        e.template_hash.to_hex(),
        e.kind.name()
    );
    match e.kind {
        TemplateKind::Ima => {
            let _ = write!(out, "{} ", e.file_digest.to_hex());
        }
        TemplateKind::ImaNg | TemplateKind::ImaSig | TemplateKind::ImaBuf => {
            let _ = write!(out, "{} ", e.file_digest);
        }
    }
    out.extend_from_slice(&e.path);
    match e.kind {
        TemplateKind::ImaSig => {
            out.push(b' ');
            out.extend_from_slice(
                hex::encode(e.signature.as_deref().unwrap_or_default()).as_bytes(),
            );
        }
        TemplateKind::ImaBuf => {
            out.push(b' ');
            out.extend_from_slice(hex::encode(e.buf.as_deref().unwrap_or_default()).as_bytes());
        }
        TemplateKind::Ima | TemplateKind::ImaNg => {}
    }
    out.push(b'\n');
}
