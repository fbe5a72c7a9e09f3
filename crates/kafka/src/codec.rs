//! Request decoding and response encoding around the `kafka-protocol` crate.
//!
//! Everything that touches `kafka-protocol` directly for framing lives here, so the rest of
//! Tidewater sees typed requests and responses. A request is checked against the versions we
//! support *before* its body is decoded: an unsupported version is never parsed.

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, FetchResponse, RequestHeader, RequestKind, ResponseHeader, ResponseKind,
};
use kafka_protocol::protocol::buf::ByteBufMut;
use kafka_protocol::protocol::{Decodable, Encodable};

use crate::encoded::{ChunkedBuf, EncodedResponse, PASS_THROUGH_MIN_BYTES};
use crate::file_records::FileRecordSets;
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

/// Encodes a response, size prefix included. A fetch response's larger record sets stay the
/// `Bytes` the log read, as chunks of their own ([`crate::encoded`]), instead of being copied;
/// those that `files` holds placeholders for become file ranges ([`crate::file_records`]).
pub fn encode_response(
    correlation_id: i32,
    api_key: ApiKey,
    api_version: i16,
    body: &ResponseKind,
    files: &FileRecordSets,
) -> Result<EncodedResponse, String> {
    let capacity = response_capacity(body, api_version);
    let encode_error = |error| encoding_failed(api_key, api_version, error);
    if let ResponseKind::Fetch(fetch) = body {
        let (pass_through, file_chunks) = record_sets_to_pass_through(fetch, files);
        if !pass_through.is_empty() || file_chunks > 0 {
            let passed_bytes = passed_bytes(fetch);
            let mut buffer = ChunkedBuf::new(capacity.saturating_sub(passed_bytes), &pass_through, files);
            put_size_placeholder_and_header(&mut buffer, correlation_id, api_key, api_version)?;
            fetch.encode(&mut buffer, api_version).map_err(encode_error)?;
            return buffer
                .finish_with_size_prefix(file_chunks)
                .map_err(|reason| encoding_failed(api_key, api_version, reason));
        }
    }
    let mut buffer = BytesMut::with_capacity(capacity);
    put_size_placeholder_and_header(&mut buffer, correlation_id, api_key, api_version)?;
    body.encode(&mut buffer, api_version).map_err(encode_error)?;
    let size = (buffer.len() - crate::frame::SIZE_PREFIX_BYTES) as i32;
    buffer[..4].copy_from_slice(&size.to_be_bytes());
    Ok(EncodedResponse::single(buffer.freeze()))
}

fn encoding_failed(api_key: ApiKey, api_version: i16, error: impl std::fmt::Display) -> String {
    format!("encoding {api_key:?} v{api_version} response: {error:#}")
}

/// Puts four bytes for the size (filled in once the response is encoded) and the response
/// header.
fn put_size_placeholder_and_header<B: ByteBufMut>(
    buffer: &mut B,
    correlation_id: i32,
    api_key: ApiKey,
    api_version: i16,
) -> Result<(), String> {
    buffer.put_i32(0);
    // ApiVersions responses always use header v0, so a client that sent a version we do not
    // support can still read the error and our version ranges.
    let header_version = match api_key {
        ApiKey::ApiVersions => 0,
        _ => api_key.response_header_version(api_version),
    };
    ResponseHeader::default()
        .with_correlation_id(correlation_id)
        .encode(buffer, header_version)
        .map_err(|error| format!("encoding {api_key:?} v{api_version} response header: {error:#}"))
}

/// A fetch response's record sets large enough to send as they are (see [`crate::encoded`]).
/// The record sets in memory large enough to pass through, and how many placeholders for file
/// ranges the response holds.
fn record_sets_to_pass_through(fetch: &FetchResponse, files: &FileRecordSets) -> (Vec<Bytes>, usize) {
    let mut in_memory = Vec::new();
    let mut file_chunks = 0;
    for records in large_record_sets(fetch) {
        if files.find(records).is_some() {
            file_chunks += 1;
        } else {
            in_memory.push(records.clone());
        }
    }
    (in_memory, file_chunks)
}

/// Bytes of the record sets that become chunks of their own, in memory or in files.
fn passed_bytes(fetch: &FetchResponse) -> usize {
    large_record_sets(fetch).map(Bytes::len).sum()
}

fn large_record_sets(fetch: &FetchResponse) -> impl Iterator<Item = &Bytes> {
    fetch
        .responses
        .iter()
        .flat_map(|topic| &topic.partitions)
        .filter_map(|partition| partition.records.as_ref())
        .filter(|records| records.len() >= PASS_THROUGH_MIN_BYTES)
}

/// Room for the size prefix and a response header (a correlation id and at most an empty tagged
/// field section).
const PREFIX_AND_HEADER_BYTES: usize = crate::frame::SIZE_PREFIX_BYTES + 8;
/// What a small response starts with; its buffer grows as it is written.
const SMALL_RESPONSE_BYTES: usize = 256;

/// The size of the buffer to encode `body` into, record sets included (the caller takes off
/// those it passes through). A fetch response carries up to tens of megabytes of records; grown
/// a doubling at a time from a small buffer, its old and new buffers were both held at each step
/// (and every byte copied once more), so its exact size is computed first (a walk over the
/// response, no copying). Measured with a consumer asking for a gigabyte per fetch: the broker's
/// peak resident memory went from 228-243 MB to 153 MB. Other responses are small.
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
    use bytes::{BufMut, Bytes};
    use kafka_protocol::messages::fetch_response::{FetchResponse, FetchableTopicResponse, PartitionData};
    use kafka_protocol::messages::TopicName;
    use kafka_protocol::protocol::StrBytes;

    use super::*;
    use crate::encoded::Chunk;
    use crate::file_records::FileRecords;

    fn fetch_response(record_sets: &[Bytes]) -> ResponseKind {
        let partitions = record_sets
            .iter()
            .enumerate()
            .map(|(index, records)| {
                PartitionData::default()
                    .with_partition_index(index as i32)
                    .with_records(Some(records.clone()))
            })
            .collect();
        let topic = FetchableTopicResponse::default()
            .with_topic(TopicName(StrBytes::from_static_str("orders")))
            .with_partitions(partitions);
        ResponseKind::Fetch(FetchResponse::default().with_responses(vec![topic]))
    }

    /// A fetch response's encoded tail is allocated once, at its final size, and its large record
    /// sets are the very buffers the fetch read.
    #[test]
    fn a_fetch_response_is_sized_before_encoding_and_shares_its_large_record_sets() {
        let records = Bytes::from(vec![7u8; 3 * 1024 * 1024]);
        let body = fetch_response(&[records.clone(), records.clone(), records.clone()]);
        for api_version in 4..=12 {
            let capacity = response_capacity(&body, api_version);
            let encoded = encode_response(1, ApiKey::Fetch, api_version, &body, &FileRecordSets::default())
                .expect("encode");
            assert!(
                encoded.len() <= capacity && capacity - encoded.len() <= PREFIX_AND_HEADER_BYTES,
                "v{api_version}: {} bytes encoded for a computed size of {capacity}",
                encoded.len()
            );
            let shared = encoded
                .chunks()
                .iter()
                .filter(|chunk| matches!(chunk, Chunk::Memory(bytes) if bytes.as_ptr() == records.as_ptr()))
                .count();
            assert_eq!(shared, 3, "v{api_version}: every record set is sent from the fetch's own buffer");
        }
        let small = ResponseKind::Fetch(FetchResponse::default());
        assert!(response_capacity(&small, 12) < SMALL_RESPONSE_BYTES);
    }

    /// Whatever is passed through, the bytes on the wire are those of an ordinary contiguous
    /// encoding, at every fetch version.
    #[test]
    fn a_chunked_fetch_response_is_byte_for_byte_the_contiguous_encoding() {
        let sizes = [0, 1, PASS_THROUGH_MIN_BYTES - 1, PASS_THROUGH_MIN_BYTES, 100_000];
        let record_sets: Vec<Bytes> = sizes
            .iter()
            .map(|&size| Bytes::from((0..size).map(|i| (i % 251) as u8).collect::<Vec<_>>()))
            .collect();
        let body = fetch_response(&record_sets);
        for api_version in 4..=12 {
            let mut contiguous = BytesMut::new();
            contiguous.put_i32(0);
            ResponseHeader::default()
                .with_correlation_id(9)
                .encode(&mut contiguous, ApiKey::Fetch.response_header_version(api_version))
                .expect("header");
            body.encode(&mut contiguous, api_version).expect("body");
            let size = (contiguous.len() - 4) as i32;
            contiguous[..4].copy_from_slice(&size.to_be_bytes());

            let encoded = encode_response(9, ApiKey::Fetch, api_version, &body, &FileRecordSets::default())
                .expect("encode");
            assert!(encoded.chunks().len() > 1, "v{api_version}: the two large record sets are chunks");
            assert_eq!(encoded.into_contiguous().expect("joined"), contiguous.freeze(), "v{api_version}");
        }
    }

    /// A record set left in its file encodes to the same bytes as the record set read.
    #[test]
    fn a_fetch_response_with_file_record_sets_is_byte_for_byte_the_read_encoding() {
        let contents: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
        let file = std::sync::Arc::new(crate::file_records::tests::file_with(&contents));
        let read = Bytes::copy_from_slice(&contents[1000..51_000]);
        for api_version in 4..=12 {
            let mut files = FileRecordSets::default();
            let range = FileRecords { file: file.clone(), position: 1000, len: 50_000 };
            let placeholder = files.placeholder_for(range).expect("placeholder");
            let small = Bytes::from_static(b"small");
            let with_files = fetch_response(&[small.clone(), placeholder.clone(), placeholder.clone()]);
            let encoded =
                encode_response(3, ApiKey::Fetch, api_version, &with_files, &files).expect("encode");
            let file_chunks = encoded.chunks().iter().filter(|chunk| matches!(chunk, Chunk::File(_))).count();
            assert_eq!(file_chunks, 2, "v{api_version}");
            let expected = encode_response(
                3,
                ApiKey::Fetch,
                api_version,
                &fetch_response(&[small, read.clone(), read.clone()]),
                &FileRecordSets::default(),
            )
            .expect("encode");
            assert_eq!(encoded.len(), expected.len(), "v{api_version}");
            assert_eq!(
                encoded.into_contiguous().expect("joined"),
                expected.into_contiguous().expect("joined"),
                "v{api_version}"
            );
        }
    }
}
