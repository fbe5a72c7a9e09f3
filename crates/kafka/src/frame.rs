//! Kafka's framing: every request and response is a big-endian `i32` size followed by that many
//! bytes. A pure codec: `check` answers "is a whole frame here?" before anything is allocated.

/// Kafka's `socket.request.max.bytes` default: the largest request a connection may send.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 100 * 1024 * 1024;
/// Bytes of the size prefix.
pub const SIZE_PREFIX_BYTES: usize = 4;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("request of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge { size: i64, limit: usize },
    #[error("negative frame size {size}")]
    Negative { size: i32 },
}

/// Looks at the front of `buffer`: `Ok(Some(n))` when a whole frame of `n` bytes (prefix
/// included) is there, `Ok(None)` when more bytes are needed, an error when the size prefix is
/// unacceptable (the connection should then be closed: the stream cannot be resynchronised).
pub fn check(buffer: &[u8], max_request_bytes: usize) -> Result<Option<usize>, FrameError> {
    let Some(prefix) = buffer.get(..SIZE_PREFIX_BYTES) else {
        return Ok(None);
    };
    let size = i32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
    if size < 0 {
        return Err(FrameError::Negative { size });
    }
    if size as usize > max_request_bytes {
        return Err(FrameError::TooLarge { size: i64::from(size), limit: max_request_bytes });
    }
    let total = SIZE_PREFIX_BYTES + size as usize;
    Ok((buffer.len() >= total).then_some(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_waits_for_whole_frames_and_enforces_the_limit() {
        let frame = [0, 0, 0, 3, 7, 8, 9];
        assert_eq!(check(&frame[..2], 10), Ok(None));
        assert_eq!(check(&frame[..6], 10), Ok(None));
        assert_eq!(check(&frame, 10), Ok(Some(7)));
        assert_eq!(check(&[0, 0, 0, 0], 10), Ok(Some(4)));
        assert_eq!(check(&frame, 2), Err(FrameError::TooLarge { size: 3, limit: 2 }));
        assert_eq!(check(&[0xff, 0xff, 0xff, 0xff], 10), Err(FrameError::Negative { size: -1 }));
    }
}
