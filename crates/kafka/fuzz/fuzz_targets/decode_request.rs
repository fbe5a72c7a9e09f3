//! Fuzz target: arbitrary bytes through the request path the server runs on every connection,
//! `frame::check` to cut frames and `decode_request` to parse each one, with a table that
//! admits every API at every version the codec decodes (so no body decoder is out of reach).
//!
//! Any outcome is acceptable except a panic, an abort, or an allocation sized from a length
//! that the input does not back (libFuzzer's `-malloc_limit_mb` reports those as crashes).

#![no_main]

use std::sync::OnceLock;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use tidewater_kafka::frame;
use tidewater_kafka::kafka_protocol::messages::ApiKey;
use tidewater_kafka::{decode_request, ApiRange, SupportedVersions};

/// Small enough that the fuzzer reaches the size limit with short inputs.
const REQUEST_BYTES_MAX: usize = 64 * 1024;

fn every_codec_version() -> &'static SupportedVersions {
    static TABLE: OnceLock<SupportedVersions> = OnceLock::new();
    TABLE.get_or_init(|| {
        let ranges: Vec<ApiRange> = ApiKey::iter()
            .map(|api_key| {
                let versions = api_key.valid_versions();
                ApiRange { api_key, min: versions.min, max: versions.max }
            })
            .collect();
        SupportedVersions::new(&ranges)
    })
}

/// Decodes one payload and checks that a request that decodes agrees with its fixed header.
fn decode(payload: &[u8]) {
    if let Ok(request) = decode_request(Bytes::copy_from_slice(payload), every_codec_version()) {
        assert_eq!(request.api_key as i16, i16::from_be_bytes([payload[0], payload[1]]));
        assert_eq!(request.api_version, i16::from_be_bytes([payload[2], payload[3]]));
        assert_eq!(request.header.request_api_key, request.api_key as i16);
        assert_eq!(request.header.request_api_version, request.api_version);
    }
}

fuzz_target!(|data: &[u8]| {
    // As a stream: cut frames the way a connection does until one is incomplete or refused.
    let mut rest = data;
    while let Ok(Some(frame_len)) = frame::check(rest, REQUEST_BYTES_MAX) {
        assert!(frame_len >= frame::SIZE_PREFIX_BYTES && frame_len <= rest.len());
        decode(&rest[frame::SIZE_PREFIX_BYTES..frame_len]);
        rest = &rest[frame_len..];
    }
    // And the whole input as one payload, so the fuzzer need not learn the size prefix first.
    decode(data);
});
