//! Corpus tests of the Kafka request codec: named byte strings, each with the outcome
//! `decode_request` (or `frame::check`) must give. The corpus holds what real clients send,
//! requests encoded by `kafka-protocol` itself, and what a broken or hostile client could send:
//! empty and short payloads, unknown API keys, versions we do not speak, truncated headers and
//! bodies, negative lengths and element counts far larger than the bytes that follow. None of
//! these may panic or allocate for a length it has not seen the bytes for; each must come back
//! as the named `DecodeError`, which the server turns into closing that one connection.
//!
//! Failures are collected and reported together, so one run shows every entry that disagrees.
//! The test binary counts allocations, so "never allocates for a length it has not seen the
//! bytes for" is checked too: no single allocation while decoding may exceed what the payload's
//! size can justify.

use bytes::Bytes;
use tidewater_kafka::frame::{self, FrameError};
use tidewater_kafka::kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use tidewater_kafka::kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use tidewater_kafka::kafka_protocol::messages::{
    AlterConfigsRequest, ApiKey, ApiVersionsRequest, CreatePartitionsRequest, CreateTopicsRequest,
    DeleteTopicsRequest, DescribeClusterRequest, DescribeConfigsRequest, FetchRequest,
    IncrementalAlterConfigsRequest, InitProducerIdRequest, ListOffsetsRequest, MetadataRequest,
    OffsetForLeaderEpochRequest, ProduceRequest, RequestHeader, TopicName,
};
use tidewater_kafka::kafka_protocol::protocol::{Encodable, StrBytes};
use tidewater_kafka::{decode_request, ApiRange, DecodeError, SupportedVersions};

/// Allocations the decoder may make whatever the payload (error messages, a header's maps).
const ALLOCATION_SLACK_BYTES: usize = 64 * 1024;
/// Every element of an array takes at least one byte on the wire, and no decoded element is
/// anywhere near this large in memory; so a payload of `n` bytes justifies no single allocation
/// above `n * ALLOCATED_BYTES_PER_WIRE_BYTE_MAX + ALLOCATION_SLACK_BYTES`. An element count taken
/// from the wire without that check asks for gigabytes.
const ALLOCATED_BYTES_PER_WIRE_BYTE_MAX: usize = 512;

/// Records the largest single allocation (or reallocation) made on each thread, so a test can
/// measure what one `decode_request` call asked for.
struct MeasuringAllocator;

thread_local! {
    // A const-initialised `Cell<usize>` needs neither lazy initialisation nor a destructor, so
    // touching it from inside the allocator cannot allocate or recurse.
    static LARGEST_ALLOCATION_BYTES: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

fn note_allocation(size: usize) {
    let _ = LARGEST_ALLOCATION_BYTES.try_with(|largest| largest.set(largest.get().max(size)));
}

// SAFETY: every method forwards to the system allocator with the caller's arguments unchanged;
// the only addition is bookkeeping in a thread-local `Cell`, which does not allocate.
unsafe impl std::alloc::GlobalAlloc for MeasuringAllocator {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        note_allocation(layout.size());
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract, which `System` shares.
        unsafe { std::alloc::System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        note_allocation(layout.size());
        // SAFETY: as for `alloc`.
        unsafe { std::alloc::System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        // SAFETY: `ptr` came from `System` through this allocator, with this layout.
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        note_allocation(new_size);
        // SAFETY: as for `dealloc`; `new_size` is the caller's, checked by its contract.
        unsafe { std::alloc::System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: MeasuringAllocator = MeasuringAllocator;

/// Decodes `payload` and returns the outcome with the largest single allocation it made.
fn decode_measured(
    payload: &[u8],
    supported: &SupportedVersions,
) -> (Result<tidewater_kafka::Request, DecodeError>, usize) {
    let payload = Bytes::copy_from_slice(payload);
    LARGEST_ALLOCATION_BYTES.with(|largest| largest.set(0));
    let outcome = decode_request(payload, supported);
    (outcome, LARGEST_ALLOCATION_BYTES.with(|largest| largest.get()))
}

fn allocation_allowed_bytes(payload: &[u8]) -> usize {
    payload.len() * ALLOCATED_BYTES_PER_WIRE_BYTE_MAX + ALLOCATION_SLACK_BYTES
}

/// The broker's table (crates/broker/src/handlers/mod.rs `SUPPORTED`), copied so this crate's
/// tests do not depend on the broker. The version cases below only need its edges: Produce 3-11,
/// Fetch 4-12, Metadata 1-12 and ApiVersions 0-4.
const BROKER_TABLE: &[ApiRange] = &[
    ApiRange { api_key: ApiKey::Produce, min: 3, max: 11 },
    ApiRange { api_key: ApiKey::Fetch, min: 4, max: 12 },
    ApiRange { api_key: ApiKey::ListOffsets, min: 1, max: 7 },
    ApiRange { api_key: ApiKey::Metadata, min: 1, max: 12 },
    ApiRange { api_key: ApiKey::CreateTopics, min: 2, max: 7 },
    ApiRange { api_key: ApiKey::DeleteTopics, min: 1, max: 6 },
    ApiRange { api_key: ApiKey::CreatePartitions, min: 0, max: 3 },
    ApiRange { api_key: ApiKey::DescribeConfigs, min: 1, max: 4 },
    ApiRange { api_key: ApiKey::AlterConfigs, min: 0, max: 2 },
    ApiRange { api_key: ApiKey::IncrementalAlterConfigs, min: 0, max: 1 },
    ApiRange { api_key: ApiKey::DescribeCluster, min: 0, max: 1 },
    ApiRange { api_key: ApiKey::OffsetForLeaderEpoch, min: 2, max: 4 },
    ApiRange { api_key: ApiKey::InitProducerId, min: 0, max: 4 },
];

/// Every API at every version the codec decodes: the widest table, so malformed bodies of APIs
/// and versions the broker refuses up front still reach the body decoders.
fn every_codec_version() -> SupportedVersions {
    let ranges: Vec<ApiRange> = ApiKey::iter()
        .map(|api_key| {
            let versions = api_key.valid_versions();
            ApiRange { api_key, min: versions.min, max: versions.max }
        })
        .collect();
    SupportedVersions::new(&ranges)
}

/// What decoding one payload must give.
#[derive(Debug)]
enum Expect {
    Request {
        api_key: ApiKey,
        api_version: i16,
        correlation_id: i32,
    },
    TooShort {
        len: usize,
    },
    UnknownApiKey {
        api_key: i16,
    },
    UnsupportedVersion {
        api_key: ApiKey,
        api_version: i16,
    },
    /// The reason must contain `reason` (the empty string matches any reason).
    Malformed {
        api_key: ApiKey,
        api_version: i16,
        reason: &'static str,
    },
}

/// One corpus entry.
struct Case {
    name: String,
    payload: Vec<u8>,
    expect: Expect,
}

fn case(name: impl Into<String>, payload: impl Into<Vec<u8>>, expect: Expect) -> Case {
    Case { name: name.into(), payload: payload.into(), expect }
}

/// Decodes every payload against `supported` and panics listing every entry whose outcome
/// differs from what it expects.
fn check(supported: &SupportedVersions, cases: &[Case]) {
    let mut failures = Vec::new();
    for case in cases {
        let (outcome, largest_allocation_bytes) = decode_measured(&case.payload, supported);
        if largest_allocation_bytes > allocation_allowed_bytes(&case.payload) {
            failures.push(format!(
                "{}\n    allocated {largest_allocation_bytes} bytes at once for a {}-byte payload",
                case.name,
                case.payload.len()
            ));
        }
        let matches = match (&case.expect, &outcome) {
            (Expect::Request { api_key, api_version, correlation_id }, Ok(request)) => {
                request.api_key == *api_key
                    && request.api_version == *api_version
                    && request.header.correlation_id == *correlation_id
                    && request.header.request_api_key == *api_key as i16
                    && request.header.request_api_version == *api_version
            }
            (Expect::TooShort { len }, Err(DecodeError::TooShort { len: got })) => len == got,
            (Expect::UnknownApiKey { api_key }, Err(DecodeError::UnknownApiKey { api_key: got, .. })) => {
                api_key == got
            }
            (
                Expect::UnsupportedVersion { api_key, api_version },
                Err(DecodeError::UnsupportedVersion { api_key: got_key, api_version: got_version, .. }),
            ) => api_key == got_key && api_version == got_version,
            (
                Expect::Malformed { api_key, api_version, reason },
                Err(DecodeError::Malformed { api_key: got_key, api_version: got_version, reason: got }),
            ) => api_key == got_key && api_version == got_version && got.contains(reason),
            _ => false,
        };
        if !matches {
            let got = match &outcome {
                Ok(request) => format!(
                    "Ok({:?} v{}, correlation id {})",
                    request.api_key, request.api_version, request.header.correlation_id
                ),
                Err(error) => format!("{error:?}"),
            };
            failures.push(format!(
                "{}\n    payload:  {}\n    expected: {:?}\n    got:      {got}",
                case.name,
                hex(&case.payload),
                case.expect
            ));
        }
    }
    assert!(failures.is_empty(), "{} corpus entries disagree:\n{}", failures.len(), failures.join("\n"));
}

fn hex(bytes: &[u8]) -> String {
    let shown: Vec<String> = bytes.iter().take(64).map(|byte| format!("{byte:02x}")).collect();
    let more = if bytes.len() > 64 { format!(" ... ({} bytes)", bytes.len()) } else { String::new() };
    format!("{}{more}", shown.join(" "))
}

/// A request as a client would send it (without the size prefix), encoded by `kafka-protocol`.
fn encode(api_key: ApiKey, api_version: i16, correlation_id: i32, body: &impl Encodable) -> Vec<u8> {
    let mut payload = Vec::new();
    RequestHeader::default()
        .with_request_api_key(api_key as i16)
        .with_request_api_version(api_version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("corpus")))
        .encode(&mut payload, api_key.request_header_version(api_version))
        .expect("encode request header");
    body.encode(&mut payload, api_version).expect("encode request body");
    payload
}

/// The fixed front of every request header: api key, api version, correlation id.
fn fixed_header(api_key: i16, api_version: i16, correlation_id: i32) -> Vec<u8> {
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&api_key.to_be_bytes());
    bytes.extend_from_slice(&api_version.to_be_bytes());
    bytes.extend_from_slice(&correlation_id.to_be_bytes());
    bytes
}

/// `parts` joined into one byte string.
fn concat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// A null client id (`i16` length -1) for a non-flexible request header (v1).
const NULL_CLIENT_ID: &[u8] = &[0xff, 0xff];
/// An empty client id and no tagged fields: a flexible request header (v2) after the fixed part.
const EMPTY_CLIENT_ID_NO_TAGS: &[u8] = &[0x00, 0x00, 0x00];

fn metadata_v12() -> MetadataRequest {
    MetadataRequest::default()
        .with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(TopicName(StrBytes::from_static_str("orders"))))
        ]))
        .with_allow_auto_topic_creation(true)
}

fn produce() -> ProduceRequest {
    // The records are opaque bytes to the codec; the broker validates the batch.
    let records = Bytes::from_static(&[0u8; 61]);
    let partition = PartitionProduceData::default().with_index(0).with_records(Some(records));
    let topic = TopicProduceData::default()
        .with_name(TopicName(StrBytes::from_static_str("orders")))
        .with_partition_data(vec![partition]);
    ProduceRequest::default().with_acks(-1).with_timeout_ms(30_000).with_topic_data(vec![topic])
}

#[test]
fn valid_requests_decode() {
    let supported = SupportedVersions::new(BROKER_TABLE);
    let mut cases = vec![
        // Hand-written: what kafka-python sends first (ApiVersions v0, header v1, no body).
        case(
            "kafka-python ApiVersions v0",
            concat(&[&fixed_header(18, 0, 1), &[0x00, 0x0c], b"kafka-python"]),
            Expect::Request { api_key: ApiKey::ApiVersions, api_version: 0, correlation_id: 1 },
        ),
        // Hand-written: what librdkafka 2.x sends first (ApiVersions v3: flexible header and
        // body, compact strings carry length + 1).
        case(
            "librdkafka ApiVersions v3",
            concat(&[
                &fixed_header(18, 3, 1),
                &[0x00, 0x07],
                b"rdkafka",
                &[0x00],
                &[11],
                b"librdkafka",
                &[6],
                b"2.3.0",
                &[0x00],
            ]),
            Expect::Request { api_key: ApiKey::ApiVersions, api_version: 3, correlation_id: 1 },
        ),
        case(
            "Metadata v12 naming one topic",
            encode(ApiKey::Metadata, 12, 7, &metadata_v12()),
            Expect::Request { api_key: ApiKey::Metadata, api_version: 12, correlation_id: 7 },
        ),
        case(
            "Metadata v1 with a null topic array (all topics)",
            concat(&[&fixed_header(3, 1, 8), NULL_CLIENT_ID, &(-1i32).to_be_bytes()]),
            Expect::Request { api_key: ApiKey::Metadata, api_version: 1, correlation_id: 8 },
        ),
        case(
            "Produce v3 with one batch",
            encode(ApiKey::Produce, 3, 9, &produce()),
            Expect::Request { api_key: ApiKey::Produce, api_version: 3, correlation_id: 9 },
        ),
        case(
            "Produce v9 (flexible) with one batch",
            encode(ApiKey::Produce, 9, 10, &produce()),
            Expect::Request { api_key: ApiKey::Produce, api_version: 9, correlation_id: 10 },
        ),
        case(
            "negative correlation ids are the client's business",
            encode(ApiKey::ApiVersions, 3, -5, &ApiVersionsRequest::default()),
            Expect::Request { api_key: ApiKey::ApiVersions, api_version: 3, correlation_id: -5 },
        ),
        // The codec reads what the version defines and ignores what follows, as Kafka does for
        // tagged fields it does not know. Asserted as it is: such bytes are harmless.
        case(
            "trailing bytes after a complete request are ignored",
            concat(&[&encode(ApiKey::ApiVersions, 0, 11, &ApiVersionsRequest::default()), b"junk"]),
            Expect::Request { api_key: ApiKey::ApiVersions, api_version: 0, correlation_id: 11 },
        ),
    ];
    // Every API and version the broker serves, with a default body.
    for range in BROKER_TABLE.iter().chain([&tidewater_kafka::versions::API_VERSIONS_RANGE]) {
        for api_version in range.min..=range.max {
            let correlation_id = i32::from(range.api_key as i16) * 100 + i32::from(api_version);
            let payload = encode_default(range.api_key, api_version, correlation_id);
            cases.push(case(
                format!("default {:?} v{api_version}", range.api_key),
                payload,
                Expect::Request { api_key: range.api_key, api_version, correlation_id },
            ));
        }
    }
    check(&supported, &cases);
}

/// A default body of one of the broker's APIs, encoded with its header.
fn encode_default(api_key: ApiKey, api_version: i16, correlation_id: i32) -> Vec<u8> {
    match api_key {
        ApiKey::Produce => encode(api_key, api_version, correlation_id, &ProduceRequest::default()),
        ApiKey::Fetch => encode(api_key, api_version, correlation_id, &FetchRequest::default()),
        ApiKey::ListOffsets => encode(api_key, api_version, correlation_id, &ListOffsetsRequest::default()),
        ApiKey::Metadata => encode(api_key, api_version, correlation_id, &MetadataRequest::default()),
        ApiKey::CreateTopics => encode(api_key, api_version, correlation_id, &CreateTopicsRequest::default()),
        ApiKey::DeleteTopics => encode(api_key, api_version, correlation_id, &DeleteTopicsRequest::default()),
        ApiKey::CreatePartitions => {
            encode(api_key, api_version, correlation_id, &CreatePartitionsRequest::default())
        }
        ApiKey::DescribeConfigs => {
            encode(api_key, api_version, correlation_id, &DescribeConfigsRequest::default())
        }
        ApiKey::AlterConfigs => encode(api_key, api_version, correlation_id, &AlterConfigsRequest::default()),
        ApiKey::IncrementalAlterConfigs => {
            encode(api_key, api_version, correlation_id, &IncrementalAlterConfigsRequest::default())
        }
        ApiKey::DescribeCluster => {
            encode(api_key, api_version, correlation_id, &DescribeClusterRequest::default())
        }
        ApiKey::OffsetForLeaderEpoch => {
            encode(api_key, api_version, correlation_id, &OffsetForLeaderEpochRequest::default())
        }
        ApiKey::InitProducerId => {
            encode(api_key, api_version, correlation_id, &InitProducerIdRequest::default())
        }
        ApiKey::ApiVersions => encode(api_key, api_version, correlation_id, &ApiVersionsRequest::default()),
        other => panic!("no default body for {other:?}; add it here when the broker serves it"),
    }
}

#[test]
fn short_payloads_unknown_apis_and_unsupported_versions_are_refused_before_the_body() {
    let supported = SupportedVersions::new(BROKER_TABLE);
    let valid_metadata = encode(ApiKey::Metadata, 12, 7, &metadata_v12());
    let cases = vec![
        case("empty payload (a frame of size 0)", [], Expect::TooShort { len: 0 }),
        case("one byte", [0x00], Expect::TooShort { len: 1 }),
        case("seven bytes: one short of the fixed header", &valid_metadata[..7], Expect::TooShort { len: 7 }),
        case(
            "unknown api key -1",
            concat(&[&fixed_header(-1, 0, 1), NULL_CLIENT_ID]),
            Expect::UnknownApiKey { api_key: -1 },
        ),
        case(
            "unknown api key 1000",
            concat(&[&fixed_header(1000, 0, 1), NULL_CLIENT_ID]),
            Expect::UnknownApiKey { api_key: 1000 },
        ),
        case(
            "unknown api key i16::MAX, nothing after",
            fixed_header(i16::MAX, 0, 1),
            Expect::UnknownApiKey { api_key: i16::MAX },
        ),
        // Versions outside our table are refused from the fixed header alone: the body of a
        // version we do not speak is never parsed.
        case(
            "Produce v2 (below what we serve; the codec starts at v3)",
            concat(&[&fixed_header(0, 2, 1), b"anything at all"]),
            Expect::UnsupportedVersion { api_key: ApiKey::Produce, api_version: 2 },
        ),
        case(
            "Produce v12 (the codec knows it; we do not serve it)",
            fixed_header(0, 12, 1),
            Expect::UnsupportedVersion { api_key: ApiKey::Produce, api_version: 12 },
        ),
        case(
            "Fetch v13 (topic ids)",
            encode(ApiKey::Fetch, 13, 1, &FetchRequest::default()),
            Expect::UnsupportedVersion { api_key: ApiKey::Fetch, api_version: 13 },
        ),
        case(
            "Fetch v3",
            fixed_header(1, 3, 1),
            Expect::UnsupportedVersion { api_key: ApiKey::Fetch, api_version: 3 },
        ),
        case(
            "ApiVersions v5 (newer than us: the server answers v0 with our ranges)",
            concat(&[&fixed_header(18, 5, 1), EMPTY_CLIENT_ID_NO_TAGS]),
            Expect::UnsupportedVersion { api_key: ApiKey::ApiVersions, api_version: 5 },
        ),
        case(
            "ApiVersions v-1",
            fixed_header(18, -1, 1),
            Expect::UnsupportedVersion { api_key: ApiKey::ApiVersions, api_version: -1 },
        ),
        case(
            "Metadata v0",
            concat(&[&fixed_header(3, 0, 1), NULL_CLIENT_ID, &(-1i32).to_be_bytes()]),
            Expect::UnsupportedVersion { api_key: ApiKey::Metadata, api_version: 0 },
        ),
        case(
            "Metadata v13",
            fixed_header(3, 13, 1),
            Expect::UnsupportedVersion { api_key: ApiKey::Metadata, api_version: 13 },
        ),
        case(
            "JoinGroup v5: an API the codec knows and the broker does not serve",
            fixed_header(11, 5, 1),
            Expect::UnsupportedVersion { api_key: ApiKey::JoinGroup, api_version: 5 },
        ),
        // The 8-byte repro of the unbounded-allocation bug (see the next test): with the broker's
        // table, Metadata v0 is refused before its array count is even read.
        case(
            "metadata count repro against the broker table",
            concat(&[
                &[0x00, 0x03, 0x00, 0x00, 0x00, 0x03, 0x3c, 0x0c],
                NULL_CLIENT_ID,
                &0x033c_0c00i32.to_be_bytes(),
            ]),
            Expect::UnsupportedVersion { api_key: ApiKey::Metadata, api_version: 0 },
        ),
    ];
    check(&supported, &cases);
}

#[test]
fn truncated_and_hostile_requests_are_malformed_not_panics_or_huge_allocations() {
    let supported = every_codec_version();
    let metadata =
        |version: i16| Expect::Malformed { api_key: ApiKey::Metadata, api_version: version, reason: "" };
    let cases = vec![
        // Truncated headers.
        case(
            "ApiVersions v0: fixed header only, client id length missing",
            fixed_header(18, 0, 1),
            Expect::Malformed { api_key: ApiKey::ApiVersions, api_version: 0, reason: "header" },
        ),
        case(
            "ApiVersions v3: half a client id length",
            concat(&[&fixed_header(18, 3, 1), &[0x00]]),
            Expect::Malformed { api_key: ApiKey::ApiVersions, api_version: 3, reason: "header" },
        ),
        case(
            "ApiVersions v3: client id says 10 bytes, 3 follow",
            concat(&[&fixed_header(18, 3, 1), &[0x00, 0x0a], b"abc"]),
            Expect::Malformed { api_key: ApiKey::ApiVersions, api_version: 3, reason: "header" },
        ),
        case(
            "ApiVersions v3: header tagged fields missing",
            concat(&[&fixed_header(18, 3, 1), &[0x00, 0x00]]),
            Expect::Malformed { api_key: ApiKey::ApiVersions, api_version: 3, reason: "header" },
        ),
        case(
            "Metadata v1: client id not UTF-8",
            concat(&[&fixed_header(3, 1, 1), &[0x00, 0x02, 0xc3, 0x28], &(-1i32).to_be_bytes()]),
            Expect::Malformed { api_key: ApiKey::Metadata, api_version: 1, reason: "header" },
        ),
        // Truncated bodies.
        case(
            "Metadata v1: header only, topic count missing",
            concat(&[&fixed_header(3, 1, 1), NULL_CLIENT_ID]),
            Expect::Malformed { api_key: ApiKey::Metadata, api_version: 1, reason: "body" },
        ),
        case(
            "Metadata v1: one topic promised, none sent",
            concat(&[&fixed_header(3, 1, 1), NULL_CLIENT_ID, &1i32.to_be_bytes()]),
            Expect::Malformed { api_key: ApiKey::Metadata, api_version: 1, reason: "body" },
        ),
        case(
            "ApiVersions v3: body cut inside the client software name",
            concat(&[&fixed_header(18, 3, 1), EMPTY_CLIENT_ID_NO_TAGS, &[11], b"librd"]),
            Expect::Malformed { api_key: ApiKey::ApiVersions, api_version: 3, reason: "body" },
        ),
        // Element counts far beyond the bytes that follow: refused before allocating. Before the
        // vendored codec was patched, these 16 bytes made it reserve room for 54 million topics.
        case(
            "metadata count repro: Metadata v0, array count 0x033c0c00, nothing after",
            concat(&[
                &[0x00, 0x03, 0x00, 0x00, 0x00, 0x03, 0x3c, 0x0c],
                NULL_CLIENT_ID,
                &0x033c_0c00i32.to_be_bytes(),
            ]),
            Expect::Malformed {
                api_key: ApiKey::Metadata,
                api_version: 0,
                reason: "Array length 54266880 exceeds",
            },
        ),
        case(
            "metadata count repro without a client id: 0x033c read as its length",
            concat(&[&[0x00, 0x03, 0x00, 0x00, 0x00, 0x03, 0x3c, 0x0c], &0x033c_0c00i32.to_be_bytes()]),
            Expect::Malformed { api_key: ApiKey::Metadata, api_version: 0, reason: "header" },
        ),
        case(
            "Metadata v1: array count i32::MAX",
            concat(&[&fixed_header(3, 1, 1), NULL_CLIENT_ID, &i32::MAX.to_be_bytes(), &[0u8; 16]]),
            Expect::Malformed {
                api_key: ApiKey::Metadata,
                api_version: 1,
                reason: "Array length 2147483647 exceeds",
            },
        ),
        case(
            "Metadata v9: compact array count u32::MAX - 1 (varint ff ff ff ff 0f)",
            concat(&[&fixed_header(3, 9, 1), EMPTY_CLIENT_ID_NO_TAGS, &[0xff, 0xff, 0xff, 0xff, 0x0f]]),
            Expect::Malformed {
                api_key: ApiKey::Metadata,
                api_version: 9,
                reason: "CompactArray length 4294967294 exceeds",
            },
        ),
        case(
            "Metadata v9: varint count that never ends",
            concat(&[&fixed_header(3, 9, 1), EMPTY_CLIENT_ID_NO_TAGS, &[0xff; 12]]),
            metadata(9),
        ),
        case(
            "Fetch v4: absurd partition count inside a topic",
            concat(&[
                &fixed_header(1, 4, 1),
                NULL_CLIENT_ID,
                &(-1i32).to_be_bytes(), // replica id
                &500i32.to_be_bytes(),  // max wait
                &1i32.to_be_bytes(),    // min bytes
                &1_000_000i32.to_be_bytes(),
                &[0x00], // isolation level
                &1i32.to_be_bytes(),
                &[0x00, 0x01],
                b"t",
                &0x7fff_fff0i32.to_be_bytes(),
            ]),
            Expect::Malformed { api_key: ApiKey::Fetch, api_version: 4, reason: "exceeds" },
        ),
        case(
            "Produce v3: records length i32::MAX with 4 bytes behind it",
            concat(&[
                &fixed_header(0, 3, 1),
                NULL_CLIENT_ID,
                &[0xff, 0xff], // transactional id: null
                &(-1i16).to_be_bytes(),
                &30_000i32.to_be_bytes(),
                &1i32.to_be_bytes(),
                &[0x00, 0x01],
                b"t",
                &1i32.to_be_bytes(),
                &0i32.to_be_bytes(), // partition
                &i32::MAX.to_be_bytes(),
                &[1, 2, 3, 4],
            ]),
            Expect::Malformed { api_key: ApiKey::Produce, api_version: 3, reason: "Not enough bytes" },
        ),
        case(
            "Produce v9: tagged field count u32::MAX with nothing after",
            concat(&[
                &fixed_header(0, 9, 1),
                EMPTY_CLIENT_ID_NO_TAGS,
                &[0x00],
                &(-1i16).to_be_bytes(),
                &30_000i32.to_be_bytes(),
                &[0x01],
                &[0xff, 0xff, 0xff, 0xff, 0x0f],
            ]),
            Expect::Malformed { api_key: ApiKey::Produce, api_version: 9, reason: "body" },
        ),
        // Negative lengths and counts.
        case(
            "Metadata v1: client id length -2",
            concat(&[&fixed_header(3, 1, 1), &(-2i16).to_be_bytes(), &(-1i32).to_be_bytes()]),
            Expect::Malformed {
                api_key: ApiKey::Metadata,
                api_version: 1,
                reason: "String length is negative (-2)",
            },
        ),
        case(
            "Metadata v1: topic name length -7",
            concat(&[&fixed_header(3, 1, 1), NULL_CLIENT_ID, &1i32.to_be_bytes(), &(-7i16).to_be_bytes()]),
            Expect::Malformed {
                api_key: ApiKey::Metadata,
                api_version: 1,
                reason: "String length is negative (-7)",
            },
        ),
        case(
            "Metadata v1: array count -2",
            concat(&[&fixed_header(3, 1, 1), NULL_CLIENT_ID, &(-2i32).to_be_bytes()]),
            Expect::Malformed {
                api_key: ApiKey::Metadata,
                api_version: 1,
                reason: "Array length is negative (-2)",
            },
        ),
        case(
            "Metadata v1: array count i32::MIN",
            concat(&[&fixed_header(3, 1, 1), NULL_CLIENT_ID, &i32::MIN.to_be_bytes()]),
            Expect::Malformed { api_key: ApiKey::Metadata, api_version: 1, reason: "negative" },
        ),
        case(
            "Produce v3: records length -2",
            concat(&[
                &fixed_header(0, 3, 1),
                NULL_CLIENT_ID,
                &[0xff, 0xff],
                &(-1i16).to_be_bytes(),
                &30_000i32.to_be_bytes(),
                &1i32.to_be_bytes(),
                &[0x00, 0x01],
                b"t",
                &1i32.to_be_bytes(),
                &0i32.to_be_bytes(),
                &(-2i32).to_be_bytes(),
            ]),
            Expect::Malformed {
                api_key: ApiKey::Produce,
                api_version: 3,
                reason: "Data length is negative (-2)",
            },
        ),
        case(
            "Produce v3: topic array null where the schema forbids it",
            concat(&[
                &fixed_header(0, 3, 1),
                NULL_CLIENT_ID,
                &[0xff, 0xff],
                &(-1i16).to_be_bytes(),
                &30_000i32.to_be_bytes(),
                &(-1i32).to_be_bytes(),
            ]),
            Expect::Malformed {
                api_key: ApiKey::Produce,
                api_version: 3,
                reason: "Array length is negative (-1)",
            },
        ),
        // Garbage.
        case(
            "HTTP request line",
            b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec(),
            Expect::UnknownApiKey { api_key: i16::from_be_bytes([b'G', b'E']) },
        ),
        case(
            "TLS ClientHello start",
            [0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03],
            Expect::UnknownApiKey { api_key: 0x1603 },
        ),
    ];
    check(&supported, &cases);
}

#[test]
fn every_truncation_of_a_valid_request_is_an_error() {
    let supported = every_codec_version();
    let whole = [
        (
            ApiKey::ApiVersions,
            3,
            encode(
                ApiKey::ApiVersions,
                3,
                1,
                &ApiVersionsRequest::default()
                    .with_client_software_name(StrBytes::from_static_str("librdkafka"))
                    .with_client_software_version(StrBytes::from_static_str("2.3.0")),
            ),
        ),
        (ApiKey::Metadata, 1, encode(ApiKey::Metadata, 1, 1, &metadata_v12())),
        (ApiKey::Metadata, 12, encode(ApiKey::Metadata, 12, 1, &metadata_v12())),
        (ApiKey::Produce, 3, encode(ApiKey::Produce, 3, 1, &produce())),
        (ApiKey::Produce, 9, encode(ApiKey::Produce, 9, 1, &produce())),
    ];
    let mut cases = Vec::new();
    for (api_key, api_version, payload) in &whole {
        cases.push(case(
            format!("whole {api_key:?} v{api_version}"),
            payload.clone(),
            Expect::Request { api_key: *api_key, api_version: *api_version, correlation_id: 1 },
        ));
        for len in 0..payload.len() {
            let expect = if len < 8 {
                Expect::TooShort { len }
            } else {
                Expect::Malformed { api_key: *api_key, api_version: *api_version, reason: "" }
            };
            cases.push(case(
                format!("{api_key:?} v{api_version} cut to {len} bytes"),
                &payload[..len],
                expect,
            ));
        }
    }
    check(&supported, &cases);
}

#[test]
fn every_api_and_version_the_codec_knows_survives_bit_flips() {
    // Not a fuzzer (that is crates/kafka/fuzz): a deterministic sweep that flips each bit of
    // the bytes after the fixed header of a default request, for every API and version the codec
    // decodes. Any outcome is fine except a panic or an allocation the payload cannot justify;
    // the count keeps the sweep honest.
    let supported = every_codec_version();
    let mut decoded = 0usize;
    let mut largest_allocation_bytes = 0;
    for range in supported.ranges() {
        for api_version in range.min..=range.max {
            let mut payload = fixed_header(range.api_key as i16, api_version, 1);
            if range.api_key.request_header_version(api_version) >= 2 {
                payload.extend_from_slice(EMPTY_CLIENT_ID_NO_TAGS);
            } else {
                payload.extend_from_slice(NULL_CLIENT_ID);
            }
            // A body of zeros is a plausible request for most APIs (empty arrays and strings).
            payload.extend_from_slice(&[0u8; 24]);
            for bit in (8 * 8)..(payload.len() * 8) {
                let mut flipped = payload.clone();
                flipped[bit / 8] ^= 1 << (bit % 8);
                let (_, allocated_bytes) = decode_measured(&flipped, &supported);
                assert!(
                    allocated_bytes <= allocation_allowed_bytes(&flipped),
                    "{:?} v{api_version}, bit {bit} flipped: allocated {allocated_bytes} bytes at once",
                    range.api_key
                );
                largest_allocation_bytes = largest_allocation_bytes.max(allocated_bytes);
                decoded += 1;
            }
        }
    }
    assert!(decoded > 10_000, "only {decoded} payloads decoded");
    assert!(largest_allocation_bytes > 0, "the allocator measured nothing");
}

/// One `frame::check` corpus entry: the buffer, the limit, and the answer.
type FrameCase = (&'static str, Vec<u8>, usize, Result<Option<usize>, FrameError>);

#[test]
fn frame_check_enforces_the_size_limit_at_the_boundary() {
    let limit = 1024;
    let with_size = |size: i32, body_bytes: usize| concat(&[&size.to_be_bytes(), &vec![0u8; body_bytes]]);
    let cases: Vec<FrameCase> = vec![
        ("nothing yet", vec![], limit, Ok(None)),
        ("three bytes of the prefix", vec![0, 0, 4], limit, Ok(None)),
        ("size 0: a whole (empty) frame", with_size(0, 0), limit, Ok(Some(4))),
        ("exactly at the limit, body not here yet", with_size(1024, 0), limit, Ok(None)),
        ("exactly at the limit, one byte short", with_size(1024, 1023), limit, Ok(None)),
        ("exactly at the limit, whole", with_size(1024, 1024), limit, Ok(Some(1028))),
        (
            "exactly at the limit, with the next frame's first bytes",
            with_size(1024, 1030),
            limit,
            Ok(Some(1028)),
        ),
        // Refused from the prefix alone, before any body byte is read or room is made for it.
        ("one over the limit", with_size(1025, 0), limit, Err(FrameError::TooLarge { size: 1025, limit })),
        (
            "one over the limit, body present",
            with_size(1025, 1025),
            limit,
            Err(FrameError::TooLarge { size: 1025, limit }),
        ),
        (
            "i32::MAX",
            with_size(i32::MAX, 0),
            limit,
            Err(FrameError::TooLarge { size: i64::from(i32::MAX), limit }),
        ),
        (
            "i32::MAX against the default limit",
            with_size(i32::MAX, 0),
            frame::DEFAULT_MAX_REQUEST_BYTES,
            Err(FrameError::TooLarge { size: i64::from(i32::MAX), limit: frame::DEFAULT_MAX_REQUEST_BYTES }),
        ),
        ("size -1", with_size(-1, 0), limit, Err(FrameError::Negative { size: -1 })),
        ("size i32::MIN", with_size(i32::MIN, 8), limit, Err(FrameError::Negative { size: i32::MIN })),
        ("limit 0 allows only empty frames", with_size(0, 0), 0, Ok(Some(4))),
        ("limit 0 refuses one byte", with_size(1, 1), 0, Err(FrameError::TooLarge { size: 1, limit: 0 })),
    ];
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|(name, buffer, limit, expected)| {
            let got = frame::check(buffer, *limit);
            (got != *expected).then(|| format!("{name}: expected {expected:?}, got {got:?}"))
        })
        .collect();
    assert!(failures.is_empty(), "frame::check disagrees:\n{}", failures.join("\n"));
}
