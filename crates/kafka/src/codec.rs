//! Request decoding and response encoding around the `kafka-protocol` crate.
//!
//! Everything that touches `kafka-protocol` directly for framing lives here, so the rest of
//! Tidewater sees typed requests and responses. A request is checked against the versions we
//! support *before* its body is decoded: an unsupported version is never parsed.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::{Decodable, Encodable};

use crate::versions::SupportedVersions;

/// A decoded request.
#[derive(Debug)]
pub struct Request {
    pub header: RequestHeader,
    pub api_key: ApiKey,
    pub api_version: i16,
    pub body: RequestKind,
}

/// Why a frame could not be turned into a request. Every variant carries what is known of the
/// request so the log line that closes the connection says what the client sent.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("frame of {len} bytes is too short for a request header")]
    TooShort { len: usize },
    #[error("unknown API key {api_key}")]
    UnknownApiKey { api_key: i16, correlation_id: i32 },
    #[error("unsupported version {api_version} of {api_key:?}")]
    UnsupportedVersion { api_key: ApiKey, api_version: i16, correlation_id: i32 },
    #[error("malformed {api_key:?} v{api_version} request: {reason}")]
    Malformed { api_key: ApiKey, api_version: i16, reason: String },
}

/// Bytes at the front of every request header, whatever its version: api key (i16), api
/// version (i16) and correlation id (i32).
const FIXED_HEADER_BYTES: usize = 8;

/// Decodes one frame's payload (without the size prefix).
pub fn decode_request(mut payload: Bytes, supported: &SupportedVersions) -> Result<Request, DecodeError> {
    if payload.len() < FIXED_HEADER_BYTES {
        return Err(DecodeError::TooShort { len: payload.len() });
    }
    let mut fixed = &payload[..FIXED_HEADER_BYTES];
    let raw_api_key = fixed.get_i16();
    let api_version = fixed.get_i16();
    let correlation_id = fixed.get_i32();
    let api_key = ApiKey::try_from(raw_api_key)
        .map_err(|_| DecodeError::UnknownApiKey { api_key: raw_api_key, correlation_id })?;
    if !supported.supports(api_key, api_version) {
        return Err(DecodeError::UnsupportedVersion { api_key, api_version, correlation_id });
    }
    let malformed = |reason: String| DecodeError::Malformed { api_key, api_version, reason };
    let header = RequestHeader::decode(&mut payload, api_key.request_header_version(api_version))
        .map_err(|error| malformed(format!("header: {error:#}")))?;
    let body = RequestKind::decode(api_key, &mut payload, api_version)
        .map_err(|error| malformed(format!("body: {error:#}")))?;
    Ok(Request { header, api_key, api_version, body })
}

/// Encodes a response, size prefix included.
pub fn encode_response(
    correlation_id: i32,
    api_key: ApiKey,
    api_version: i16,
    body: &ResponseKind,
) -> Result<Bytes, String> {
    let mut buffer = BytesMut::with_capacity(response_capacity(body, api_version));
    // The size, filled in below.
    buffer.put_i32(0);
    // ApiVersions responses always use header v0, so a client that sent a version we do not
    // support can still read the error and our version ranges.
    let header_version = match api_key {
        ApiKey::ApiVersions => 0,
        _ => api_key.response_header_version(api_version),
    };
    ResponseHeader::default()
        .with_correlation_id(correlation_id)
        .encode(&mut buffer, header_version)
        .map_err(|error| format!("encoding {api_key:?} v{api_version} response header: {error:#}"))?;
    body.encode(&mut buffer, api_version)
        .map_err(|error| format!("encoding {api_key:?} v{api_version} response: {error:#}"))?;
    let size = (buffer.len() - crate::frame::SIZE_PREFIX_BYTES) as i32;
    buffer[..4].copy_from_slice(&size.to_be_bytes());
    Ok(buffer.freeze())
}

/// Room for the size prefix and a response header (a correlation id and at most an empty tagged
/// field section).
const PREFIX_AND_HEADER_BYTES: usize = crate::frame::SIZE_PREFIX_BYTES + 8;
/// What a small response starts with; its buffer grows as it is written.
const SMALL_RESPONSE_BYTES: usize = 256;

/// The buffer to encode `body` into. A fetch response carries up to tens of megabytes of
/// records; grown a doubling at a time from a small buffer, its old and new buffers were both
/// held at each step (and every byte copied once more), so its exact size is computed first (a
/// walk over the response, no copying). Measured with a consumer asking for a gigabyte per
/// fetch: the broker's peak resident memory went from 228-243 MB to 153 MB. Other responses
/// are small.
fn response_capacity(body: &ResponseKind, api_version: i16) -> usize {
    match body {
        ResponseKind::Fetch(fetch) => fetch
            .compute_size(api_version)
            .map_or(SMALL_RESPONSE_BYTES, |size| size + PREFIX_AND_HEADER_BYTES),
        _ => SMALL_RESPONSE_BYTES,
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use kafka_protocol::messages::fetch_response::{FetchResponse, FetchableTopicResponse, PartitionData};
    use kafka_protocol::messages::TopicName;
    use kafka_protocol::protocol::StrBytes;

    use super::*;

    /// A fetch response is encoded into a buffer allocated once, at its final size.
    #[test]
    fn a_fetch_response_buffer_is_sized_before_encoding() {
        let records = Bytes::from(vec![7u8; 3 * 1024 * 1024]);
        let partitions = (0..3)
            .map(|index| {
                PartitionData::default().with_partition_index(index).with_records(Some(records.clone()))
            })
            .collect();
        let topic = FetchableTopicResponse::default()
            .with_topic(TopicName(StrBytes::from_static_str("orders")))
            .with_partitions(partitions);
        let body = ResponseKind::Fetch(FetchResponse::default().with_responses(vec![topic]));
        for api_version in 4..=12 {
            let capacity = response_capacity(&body, api_version);
            let encoded = encode_response(1, ApiKey::Fetch, api_version, &body).expect("encode");
            assert!(
                encoded.len() <= capacity && capacity - encoded.len() <= PREFIX_AND_HEADER_BYTES,
                "v{api_version}: {} bytes encoded into a buffer of {capacity}",
                encoded.len()
            );
        }
        let small = ResponseKind::Fetch(FetchResponse::default());
        assert!(response_capacity(&small, 12) < SMALL_RESPONSE_BYTES);
    }
}
