//! MQTT's data representations (spec 1.5): big-endian integers, Variable Byte Integers, Binary
//! Data and UTF-8 Encoded Strings with a two-byte length. [`Reader`] reads them from a frame
//! with bounds checks that name what was being read and where; strings and binary data come out
//! as zero-copy slices of the frame. The `put_*` functions write them.

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::{DecodeError, EncodeError};
use crate::frame::{parse_varint, VarInt};
use crate::string::Utf8Bytes;

/// The longest string or binary value a two-byte length allows.
pub(crate) const LENGTH_PREFIXED_BYTES_MAX: usize = 65_535;

/// A cursor over `frame[pos..end]`; offsets in errors are from the start of the frame.
#[derive(Debug)]
pub(crate) struct Reader<'a> {
    frame: &'a Bytes,
    pos: usize,
    end: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(frame: &'a Bytes, pos: usize, end: usize) -> Self {
        debug_assert!(pos <= end && end <= frame.len());
        Self { frame, pos, end }
    }

    pub(crate) fn offset(&self) -> usize {
        self.pos
    }

    pub(crate) fn remaining(&self) -> usize {
        self.end - self.pos
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.pos == self.end
    }

    fn need(&self, n_bytes: usize, what: &'static str) -> Result<(), DecodeError> {
        if self.remaining() < n_bytes {
            return Err(DecodeError::Truncated {
                what,
                offset: self.pos,
                need: n_bytes,
                have: self.remaining(),
            });
        }
        Ok(())
    }

    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        self.need(1, what)?;
        let value = self.frame[self.pos];
        self.pos += 1;
        Ok(value)
    }

    pub(crate) fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        self.need(2, what)?;
        let value = u16::from_be_bytes([self.frame[self.pos], self.frame[self.pos + 1]]);
        self.pos += 2;
        Ok(value)
    }

    pub(crate) fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        self.need(4, what)?;
        let bytes = &self.frame[self.pos..self.pos + 4];
        self.pos += 4;
        Ok(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    pub(crate) fn varint(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        let offset = self.pos;
        match parse_varint(&self.frame[self.pos..self.end]) {
            VarInt::Value { value, n_bytes } => {
                self.pos += n_bytes;
                Ok(value)
            }
            VarInt::Incomplete => Err(DecodeError::Truncated {
                what,
                offset,
                need: self.remaining() + 1,
                have: self.remaining(),
            }),
            VarInt::TooLong => Err(DecodeError::VarIntTooLong { what, offset }),
            VarInt::NonMinimal { .. } => Err(DecodeError::NonMinimalVarInt { what, offset }),
        }
    }

    /// The next `n_bytes` as a slice of the frame.
    pub(crate) fn bytes(&mut self, n_bytes: usize, what: &'static str) -> Result<Bytes, DecodeError> {
        self.need(n_bytes, what)?;
        let slice = self.frame.slice(self.pos..self.pos + n_bytes);
        self.pos += n_bytes;
        Ok(slice)
    }

    /// Everything up to the end, as a slice of the frame.
    pub(crate) fn rest(&mut self) -> Bytes {
        let slice = self.frame.slice(self.pos..self.end);
        self.pos = self.end;
        slice
    }

    /// Binary Data (spec 1.5.6): a two-byte length and that many bytes.
    pub(crate) fn binary(&mut self, what: &'static str) -> Result<Bytes, DecodeError> {
        let len = self.u16(what)?;
        self.bytes(usize::from(len), what)
    }

    /// A UTF-8 Encoded String (spec 1.5.4): well-formed, no U+0000.
    pub(crate) fn string(&mut self, what: &'static str) -> Result<Utf8Bytes, DecodeError> {
        let offset = self.pos;
        let bytes = self.binary(what)?;
        if bytes.contains(&0) {
            return Err(DecodeError::NullCharacter { what, offset });
        }
        Utf8Bytes::try_from_bytes(bytes).map_err(|_| DecodeError::InvalidUtf8 { what, offset })
    }

    /// Splits off the next `n_bytes` as a reader of their own, moving past them.
    pub(crate) fn split(&mut self, n_bytes: usize, what: &'static str) -> Result<Reader<'a>, DecodeError> {
        self.need(n_bytes, what)?;
        let inner = Reader { frame: self.frame, pos: self.pos, end: self.pos + n_bytes };
        self.pos += n_bytes;
        Ok(inner)
    }
}

pub(crate) fn put_binary(out: &mut BytesMut, what: &'static str, bytes: &[u8]) -> Result<(), EncodeError> {
    let len = u16::try_from(bytes.len()).map_err(|_| EncodeError::TooLong {
        what,
        len: bytes.len(),
        max: LENGTH_PREFIXED_BYTES_MAX,
    })?;
    out.put_u16(len);
    out.put_slice(bytes);
    Ok(())
}

pub(crate) fn put_string(out: &mut BytesMut, what: &'static str, text: &str) -> Result<(), EncodeError> {
    put_binary(out, what, text.as_bytes())
}
