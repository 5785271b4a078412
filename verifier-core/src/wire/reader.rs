//! The one bounded reader for untrusted bytes, and its writer counterpart.
//!
//! Every length read from input is checked against the bytes that remain *and* against the
//! caller's maximum before anything is sliced or allocated, so a lying length field can only
//! ever produce an error. Offsets in errors are absolute within the outermost input, which
//! lets a person find the bad byte with a hex dump.

use crate::ParseError;

/// A cursor over untrusted bytes. All reads are bounds-checked and return [`ParseError`].
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    /// Absolute offset of `buf[0]` in the outermost input.
    base: usize,
    structure: &'static str,
}

impl<'a> Reader<'a> {
    /// Starts reading `buf`, naming `structure` in errors.
    pub fn new(structure: &'static str, buf: &'a [u8]) -> Self {
        Self {
            buf,
            pos: 0,
            base: 0,
            structure,
        }
    }

    /// Names the structure now being decoded (for error messages).
    pub fn set_structure(&mut self, structure: &'static str) {
        self.structure = structure;
    }

    /// Absolute offset of the next unread byte.
    pub fn offset(&self) -> usize {
        self.base + self.pos
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    /// True when every byte has been read.
    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    /// Takes exactly `n` bytes.
    pub fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], ParseError> {
        let rest = self.buf.get(self.pos..).unwrap_or_default();
        match rest.split_at_checked(n) {
            Some((head, _)) => {
                self.pos += n;
                Ok(head)
            }
            None => Err(ParseError::Truncated {
                structure: self.structure,
                field,
                offset: self.offset(),
                needed: n - rest.len(),
            }),
        }
    }

    /// Takes exactly `N` bytes as an array.
    pub fn take_array<const N: usize>(
        &mut self,
        field: &'static str,
    ) -> Result<[u8; N], ParseError> {
        let bytes = self.take(N, field)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    /// Takes all remaining bytes.
    pub fn rest(&mut self) -> &'a [u8] {
        let rest = self.buf.get(self.pos..).unwrap_or_default();
        self.pos = self.buf.len();
        rest
    }

    /// Splits off the next `len` bytes as a reader of their own (for nested sized structures).
    pub fn sub(&mut self, len: usize, structure: &'static str) -> Result<Reader<'a>, ParseError> {
        let base = self.offset();
        let buf = self.take(len, structure)?;
        Ok(Reader {
            buf,
            pos: 0,
            base,
            structure,
        })
    }

    /// Reads a big-endian `u8`.
    pub fn u8(&mut self, field: &'static str) -> Result<u8, ParseError> {
        Ok(u8::from_be_bytes(self.take_array(field)?))
    }
    /// Reads a big-endian (TPM byte order) `u16`.
    pub fn u16(&mut self, field: &'static str) -> Result<u16, ParseError> {
        Ok(u16::from_be_bytes(self.take_array(field)?))
    }
    /// Reads a big-endian (TPM byte order) `u32`.
    pub fn u32(&mut self, field: &'static str) -> Result<u32, ParseError> {
        Ok(u32::from_be_bytes(self.take_array(field)?))
    }
    /// Reads a big-endian (TPM byte order) `u64`.
    pub fn u64(&mut self, field: &'static str) -> Result<u64, ParseError> {
        Ok(u64::from_be_bytes(self.take_array(field)?))
    }
    /// Reads a little-endian `u16` (UEFI and event-log byte order).
    pub fn u16_le(&mut self, field: &'static str) -> Result<u16, ParseError> {
        Ok(u16::from_le_bytes(self.take_array(field)?))
    }
    /// Reads a little-endian `u32` (UEFI and event-log byte order).
    pub fn u32_le(&mut self, field: &'static str) -> Result<u32, ParseError> {
        Ok(u32::from_le_bytes(self.take_array(field)?))
    }
    /// Reads a little-endian `u64` (UEFI and event-log byte order).
    pub fn u64_le(&mut self, field: &'static str) -> Result<u64, ParseError> {
        Ok(u64::from_le_bytes(self.take_array(field)?))
    }

    /// Reads a TPM2B: a big-endian `u16` size then that many bytes, refusing sizes above `max`
    /// (the specification's bound for this buffer type) before touching the bytes.
    pub fn tpm2b(&mut self, field: &'static str, max: usize) -> Result<&'a [u8], ParseError> {
        let len = usize::from(self.u16(field)?);
        self.bounded(len, field, max)
    }

    /// Checks an untrusted length against `max`, then takes that many bytes.
    pub fn bounded(
        &mut self,
        len: usize,
        field: &'static str,
        max: usize,
    ) -> Result<&'a [u8], ParseError> {
        if len > max {
            return Err(ParseError::TooLarge {
                structure: self.structure,
                field,
                len,
                max,
            });
        }
        self.take(len, field)
    }

    /// An [`ParseError::InvalidValue`] for `field` of the current structure.
    pub fn invalid(&self, field: &'static str, value: u64) -> ParseError {
        ParseError::InvalidValue {
            structure: self.structure,
            field,
            value,
        }
    }

    /// Ends decoding: trailing bytes are an error, never ignored.
    pub fn finish(self) -> Result<(), ParseError> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(ParseError::TrailingData {
                structure: self.structure,
                offset: self.offset(),
                remaining: self.remaining(),
            })
        }
    }
}

/// Builds TPM-format bytes (big-endian). Writing cannot fail except for a TPM2B longer than
/// `u16::MAX`, which callers rule out by construction (typed buffers have spec maximums).
#[derive(Debug, Default, Clone)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    /// An empty writer.
    pub fn new() -> Self {
        Self::default()
    }
    /// Appends a `u8`.
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }
    /// Appends a big-endian `u16`.
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }
    /// Appends a big-endian `u32`.
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }
    /// Appends a big-endian `u64`.
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }
    /// Appends raw bytes.
    pub fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(v);
        self
    }
    /// Appends a TPM2B (`u16` size then bytes). Callers pass buffers already bounded by their
    /// spec maximum (all far below `u16::MAX`); anything longer is cut at `u16::MAX` rather
    /// than producing a size field that disagrees with the bytes.
    pub fn tpm2b(&mut self, v: &[u8]) -> &mut Self {
        let len = u16::try_from(v.len()).unwrap_or(u16::MAX);
        self.u16(len);
        self.buf
            .extend_from_slice(v.get(..usize::from(len)).unwrap_or_default());
        self
    }
    /// The bytes written so far.
    pub fn as_slice(&self) -> &[u8] {
        &self.buf
    }
    /// Consumes the writer.
    pub fn into_vec(self) -> Vec<u8> {
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncated_names_field_and_offset() {
        let mut r = Reader::new("TPMS_X", &[1, 2, 3]);
        assert_eq!(r.u16("a").unwrap(), 0x0102);
        let err = r.u32("b").unwrap_err();
        assert_eq!(
            err,
            ParseError::Truncated {
                structure: "TPMS_X",
                field: "b",
                offset: 2,
                needed: 3
            }
        );
    }

    #[test]
    fn tpm2b_length_lie_is_refused_before_slicing() {
        // Claims 0xffff bytes with a max of 64: TooLarge, not a huge allocation or a panic.
        let mut r = Reader::new("TPM2B_DIGEST", &[0xff, 0xff, 0]);
        assert!(matches!(
            r.tpm2b("buffer", 64),
            Err(ParseError::TooLarge {
                len: 0xffff,
                max: 64,
                ..
            })
        ));
        // Claims 4 bytes with only 1 present.
        let mut r = Reader::new("TPM2B_DIGEST", &[0, 4, 0]);
        assert!(matches!(
            r.tpm2b("buffer", 64),
            Err(ParseError::Truncated { needed: 3, .. })
        ));
    }

    #[test]
    fn trailing_bytes_are_an_error() {
        let mut r = Reader::new("S", &[0, 1, 9]);
        r.u16("x").unwrap();
        assert_eq!(
            r.finish(),
            Err(ParseError::TrailingData {
                structure: "S",
                offset: 2,
                remaining: 1
            })
        );
    }

    #[test]
    fn sub_reader_offsets_are_absolute() {
        let data = [0u8, 0, 0, 0, 0, 2, 7];
        let mut r = Reader::new("outer", &data);
        r.take(4, "skip").unwrap();
        let mut s = r.sub(2, "inner").unwrap();
        s.u8("a").unwrap();
        assert_eq!(s.offset(), 5);
        let e = s.u16("b").unwrap_err();
        assert!(matches!(
            e,
            ParseError::Truncated {
                offset: 5,
                structure: "inner",
                ..
            }
        ));
    }

    #[test]
    fn writer_round_trips_tpm2b() {
        let mut w = Writer::new();
        w.u16(7).tpm2b(b"abc").u32(9);
        let bytes = w.into_vec();
        let mut r = Reader::new("t", &bytes);
        assert_eq!(r.u16("a").unwrap(), 7);
        assert_eq!(r.tpm2b("b", 10).unwrap(), b"abc");
        assert_eq!(r.u32("c").unwrap(), 9);
        r.finish().unwrap();
    }
}
