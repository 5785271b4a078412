//! A small DER reader for X.509, on top of the crate's bounded [`Reader`]: tag-length-value
//! with definite lengths only, every length checked against what remains before slicing.
//!
//! Only what certificate checks need: SEQUENCE/SET traversal, OIDs, INTEGERs as bytes,
//! BIT STRINGs, BOOLEANs, times and context-specific tags. Anything else is skipped as raw
//! bytes by the caller.

use crate::wire::Reader;
use crate::ParseError;

/// Largest DER object accepted (a certificate is a few KiB; 64 KiB is generous).
pub(crate) const MAX_DER: usize = 65_536;

pub(crate) const SEQUENCE: u8 = 0x30;
pub(crate) const SET: u8 = 0x31;
pub(crate) const INTEGER: u8 = 0x02;
pub(crate) const BIT_STRING: u8 = 0x03;
pub(crate) const OCTET_STRING: u8 = 0x04;
pub(crate) const NULL: u8 = 0x05;
pub(crate) const OID: u8 = 0x06;
pub(crate) const BOOLEAN: u8 = 0x01;
pub(crate) const UTC_TIME: u8 = 0x17;
pub(crate) const GENERALIZED_TIME: u8 = 0x18;

/// One DER element: its tag, its content and its full encoding (tag and length included).
#[derive(Debug, Clone)]
pub(crate) struct Tlv<'a> {
    pub(crate) tag: u8,
    pub(crate) content: Reader<'a>,
    pub(crate) raw: &'a [u8],
}

/// Reads the next element of any tag. Multi-byte tags and indefinite lengths are refused.
pub(crate) fn any<'a>(r: &mut Reader<'a>, field: &'static str) -> Result<Tlv<'a>, ParseError> {
    let mut look = r.clone();
    let start = look.offset();
    let tag = look.u8(field)?;
    if tag & 0x1f == 0x1f {
        return Err(look.invalid(field, u64::from(tag)));
    }
    let first = look.u8(field)?;
    let len = match first {
        0..=0x7f => usize::from(first),
        0x81 => {
            let l = look.u8(field)?;
            if l < 0x80 {
                return Err(look.invalid(field, u64::from(l)));
            }
            usize::from(l)
        }
        0x82 => {
            let l = look.u16(field)?;
            if l < 0x100 {
                return Err(look.invalid(field, u64::from(l)));
            }
            usize::from(l)
        }
        // 0x80 (indefinite, BER only) and lengths of 3+ bytes (over 64 KiB).
        _ => return Err(look.invalid(field, u64::from(first))),
    };
    let header = look.offset() - start;
    if len > MAX_DER {
        return Err(ParseError::TooLarge {
            structure: "DER",
            field,
            len,
            max: MAX_DER,
        });
    }
    let raw = r.clone().take(header + len, field)?;
    r.take(header, field)?;
    let content = r.sub(len, field)?;
    Ok(Tlv { tag, content, raw })
}

/// Reads the next element and checks its tag.
pub(crate) fn expect<'a>(
    r: &mut Reader<'a>,
    tag: u8,
    field: &'static str,
) -> Result<Tlv<'a>, ParseError> {
    let tlv = any(r, field)?;
    if tlv.tag != tag {
        return Err(r.invalid(field, u64::from(tlv.tag)));
    }
    Ok(tlv)
}

/// Reads the next element only if it has `tag` (OPTIONAL / DEFAULT fields).
pub(crate) fn optional<'a>(
    r: &mut Reader<'a>,
    tag: u8,
    field: &'static str,
) -> Result<Option<Tlv<'a>>, ParseError> {
    let mut look = r.clone();
    match look.u8(field) {
        Ok(t) if t == tag => expect(r, tag, field).map(Some),
        _ => Ok(None),
    }
}

/// A SEQUENCE's content reader.
pub(crate) fn sequence<'a>(
    r: &mut Reader<'a>,
    field: &'static str,
) -> Result<Reader<'a>, ParseError> {
    Ok(expect(r, SEQUENCE, field)?.content)
}

/// An OBJECT IDENTIFIER's content bytes (compared byte-for-byte with constants).
pub(crate) fn oid<'a>(r: &mut Reader<'a>, field: &'static str) -> Result<&'a [u8], ParseError> {
    Ok(expect(r, OID, field)?.content.rest())
}

/// A BIT STRING with no unused bits (keys and signatures), as its bytes.
pub(crate) fn bit_string<'a>(
    r: &mut Reader<'a>,
    field: &'static str,
) -> Result<&'a [u8], ParseError> {
    let mut c = expect(r, BIT_STRING, field)?.content;
    let unused = c.u8(field)?;
    if unused != 0 {
        return Err(c.invalid(field, u64::from(unused)));
    }
    Ok(c.rest())
}

/// A non-negative INTEGER as minimal big-endian magnitude bytes (leading zero removed).
pub(crate) fn uint<'a>(r: &mut Reader<'a>, field: &'static str) -> Result<&'a [u8], ParseError> {
    let mut c = expect(r, INTEGER, field)?.content;
    let bytes = c.rest();
    match bytes {
        [] => Err(c.invalid(field, 0)),
        [first, ..] if first & 0x80 != 0 => Err(c.invalid(field, u64::from(*first))),
        [0, rest @ ..] if !rest.is_empty() => Ok(rest),
        _ => Ok(bytes),
    }
}

/// A small non-negative INTEGER (versions, path lengths).
pub(crate) fn small_uint(r: &mut Reader<'_>, field: &'static str) -> Result<u32, ParseError> {
    let bytes = uint(r, field)?;
    if bytes.len() > 4 {
        return Err(ParseError::TooLarge {
            structure: "DER",
            field,
            len: bytes.len(),
            max: 4,
        });
    }
    Ok(bytes.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b)))
}

/// A BOOLEAN (DER: 0x00 or 0xff).
pub(crate) fn boolean(r: &mut Reader<'_>, field: &'static str) -> Result<bool, ParseError> {
    let mut c = expect(r, BOOLEAN, field)?.content;
    let v = c.u8(field)?;
    c.finish()?;
    match v {
        0x00 => Ok(false),
        0xff => Ok(true),
        other => Err(r.invalid(field, u64::from(other))),
    }
}

/// Renders an OID in dotted form, for error messages.
pub(crate) fn oid_to_string(oid: &[u8]) -> String {
    let mut parts: Vec<u64> = Vec::new();
    let mut acc: u64 = 0;
    for b in oid {
        acc = (acc << 7) | u64::from(b & 0x7f);
        if b & 0x80 == 0 {
            if parts.is_empty() {
                let first = if acc < 80 { acc / 40 } else { 2 };
                parts.push(first);
                parts.push(acc - first * 40);
            } else {
                parts.push(acc);
            }
            acc = 0;
        }
        if acc > (u64::MAX >> 8) {
            return "(oversized OID)".to_owned();
        }
    }
    parts
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(".")
}
