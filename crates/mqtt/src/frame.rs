//! MQTT's fixed header: one byte of packet type and flags, then the Remaining Length as a
//! Variable Byte Integer of one to four bytes. [`check`] answers "is a whole packet here?"
//! without allocating, and rejects a packet over the size limit as soon as its Remaining Length
//! has arrived, long before its body does, so a connection never buffers more than the limit.

use crate::error::DecodeError;

/// The largest value a Variable Byte Integer can hold (four bytes of seven bits).
pub const VARINT_MAX: u32 = 268_435_455;
/// A Variable Byte Integer takes at most four bytes; a fifth continuation is malformed.
pub const VARINT_BYTES_MAX: usize = 4;
/// The largest packet MQTT can describe: one type byte, four length bytes and the body.
pub const PROTOCOL_PACKET_BYTES_MAX: usize = 1 + VARINT_BYTES_MAX + VARINT_MAX as usize;

/// What the front of a buffer holds as a Variable Byte Integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum VarInt {
    /// Every byte present has the continuation bit and fewer than four are there.
    Incomplete,
    /// The value and how many bytes encode it.
    Value { value: u32, n_bytes: usize },
    /// The fourth byte still has the continuation bit set.
    TooLong,
    /// More bytes than needed: a multi-byte encoding ending in a zero byte (MQTT-1.5.5-1).
    NonMinimal { n_bytes: usize },
}

/// Reads a Variable Byte Integer (spec 1.5.5) from the front of `buf`.
pub(crate) fn parse_varint(buf: &[u8]) -> VarInt {
    let mut value: u32 = 0;
    for (idx, &byte) in buf.iter().take(VARINT_BYTES_MAX).enumerate() {
        value |= u32::from(byte & 0x7f) << (7 * idx);
        if byte & 0x80 == 0 {
            let n_bytes = idx + 1;
            if n_bytes > 1 && byte == 0 {
                return VarInt::NonMinimal { n_bytes };
            }
            return VarInt::Value { value, n_bytes };
        }
    }
    if buf.len() >= VARINT_BYTES_MAX {
        VarInt::TooLong
    } else {
        VarInt::Incomplete
    }
}

/// Bytes a Variable Byte Integer of `value` takes.
pub(crate) fn varint_len(value: u32) -> usize {
    match value {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// Appends `value` (at most [`VARINT_MAX`]) as a Variable Byte Integer.
pub(crate) fn put_varint(out: &mut bytes::BytesMut, mut value: u32) {
    debug_assert!(value <= VARINT_MAX);
    loop {
        let mut byte = (value % 128) as u8;
        value /= 128;
        if value > 0 {
            byte |= 0x80;
        }
        bytes::BufMut::put_u8(out, byte);
        if value == 0 {
            break;
        }
    }
}

/// The fixed header of a packet whose length bytes have all arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedHeader {
    /// The first byte: packet type in the high nibble, flags in the low one.
    pub first_byte: u8,
    /// Bytes of the header itself (type byte plus length bytes), where the body starts.
    pub header_bytes: usize,
    /// The Remaining Length: bytes of variable header and payload.
    pub remaining_bytes: usize,
}

impl FixedHeader {
    /// Bytes of the whole packet.
    pub fn packet_bytes(&self) -> usize {
        self.header_bytes + self.remaining_bytes
    }
}

/// Parses the fixed header at the front of `buf`: `Ok(None)` while its length bytes are still
/// arriving, an error when they are malformed.
pub fn parse_header(buf: &[u8]) -> Result<Option<FixedHeader>, DecodeError> {
    let Some((&first_byte, rest)) = buf.split_first() else {
        return Ok(None);
    };
    match parse_varint(rest) {
        VarInt::Incomplete => Ok(None),
        VarInt::TooLong => Err(DecodeError::RemainingLengthTooLong { offset: 1 }),
        VarInt::NonMinimal { .. } => {
            Err(DecodeError::NonMinimalVarInt { what: "remaining length", offset: 1 })
        }
        VarInt::Value { value, n_bytes } => {
            Ok(Some(FixedHeader { first_byte, header_bytes: 1 + n_bytes, remaining_bytes: value as usize }))
        }
    }
}

/// Looks at the front of `buf`: `Ok(Some(n))` when a whole packet of `n` bytes (fixed header
/// included) is there, `Ok(None)` when more bytes are needed, an error when the fixed header is
/// malformed or announces a packet over `max_packet_bytes` (MQTT 5's Maximum Packet Size counts
/// the whole packet). Either error means the connection should be closed: the stream cannot be
/// resynchronised. Never allocates; the packet type and flags are left to [`crate::decode`].
pub fn check(buf: &[u8], max_packet_bytes: usize) -> Result<Option<usize>, DecodeError> {
    let Some(header) = parse_header(buf)? else {
        return Ok(None);
    };
    let total = header.packet_bytes();
    if total > max_packet_bytes {
        return Err(DecodeError::PacketTooLarge { size: total, limit: max_packet_bytes });
    }
    Ok((buf.len() >= total).then_some(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_of_every_width_roundtrip() {
        for value in [0, 1, 127, 128, 16_383, 16_384, 2_097_151, 2_097_152, VARINT_MAX] {
            let mut out = bytes::BytesMut::new();
            put_varint(&mut out, value);
            assert_eq!(out.len(), varint_len(value));
            assert_eq!(parse_varint(&out), VarInt::Value { value, n_bytes: out.len() });
        }
    }

    #[test]
    fn check_waits_for_whole_packets_and_enforces_the_limit() {
        let packet = [0x30, 0x03, 1, 2, 3];
        assert_eq!(check(&[], 10), Ok(None));
        assert_eq!(check(&packet[..1], 10), Ok(None));
        assert_eq!(check(&packet[..4], 10), Ok(None));
        assert_eq!(check(&packet, 10), Ok(Some(5)));
        assert_eq!(check(&[0xc0, 0x00], 10), Ok(Some(2)));
        assert_eq!(check(&packet[..2], 4), Err(DecodeError::PacketTooLarge { size: 5, limit: 4 }));
        assert_eq!(check(&[0x30, 0xff, 0xff], 10), Ok(None));
        assert_eq!(
            check(&[0x30, 0xff, 0xff, 0xff, 0xff], 10),
            Err(DecodeError::RemainingLengthTooLong { offset: 1 })
        );
    }
}
