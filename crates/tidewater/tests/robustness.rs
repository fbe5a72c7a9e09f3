//! Protocol robustness of the real `tidewater` binary: raw bytes over TCP, as a broken or hostile
//! client would send them. Each bad frame (malformed, truncated, oversized, a negative size, an
//! unsupported version, garbage, a client that stalls mid-frame) must close that one connection,
//! with a log line where the frame was bad, and nothing else: a client connected before it keeps
//! working, and a fresh connection still gets ApiVersions and Metadata answered.
//!
//! Every read has a timeout and every loop a bound; the server binds 127.0.0.1 only.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tidewater_kafka::kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, MetadataRequest, MetadataResponse, RequestHeader,
    ResponseHeader,
};
use tidewater_kafka::kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

const BINARY: &str = env!("CARGO_BIN_EXE_tidewater");
/// How long the server may take to start or to log a line; generous for a loaded CI machine.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a read may wait for a response or for the server to close the connection.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// `--max-request-bytes` for these tests: small, so oversized frames are cheap to send.
const REQUEST_BYTES_MAX: usize = 4096;
/// Largest response these tests accept, so a bad size prefix cannot make the test allocate.
const RESPONSE_BYTES_MAX: usize = 1024 * 1024;
/// The versions the broker serves for the APIs these tests look at (its `SUPPORTED` table).
const EXPECTED_RANGES: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 11),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::Metadata, 1, 12),
    (ApiKey::ApiVersions, 0, 4),
];

/// A `tidewater serve` child on 127.0.0.1 with a fresh data directory, and its stderr lines.
struct Server {
    child: Child,
    address: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
    _data_dir: tempfile::TempDir,
}

impl Server {
    fn start(extra_args: &[&str]) -> Server {
        let data_dir = tempfile::tempdir().expect("tempdir");
        let mut args: Vec<String> = extra_args.iter().map(|arg| arg.to_string()).collect();
        if !extra_args.contains(&"--max-request-bytes") {
            args.extend(["--max-request-bytes".to_string(), REQUEST_BYTES_MAX.to_string()]);
        }
        let mut child = Command::new(BINARY)
            .args([
                "serve",
                "--kafka-listen",
                "127.0.0.1:0",
                "--mqtt-listen",
                "none",
                "--http-listen",
                "none",
                "--data-dir",
            ])
            .arg(data_dir.path())
            .args(&args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tidewater");
        let stderr = child.stderr.take().expect("stderr piped");
        let log = Arc::new(Mutex::new(Vec::new()));
        let lines = log.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                lines.lock().expect("log lock").push(line);
            }
        });
        let mut server =
            Server { child, address: SocketAddr::from(([127, 0, 0, 1], 0)), log, _data_dir: data_dir };
        let running = server.wait_for_log(&["tidewater is running"], STARTUP_TIMEOUT);
        let address = running
            .split_whitespace()
            .find_map(|field| field.strip_prefix("kafka="))
            .and_then(|address| address.parse().ok())
            .unwrap_or_else(|| panic!("no kafka=ADDRESS in {running:?}"));
        server.address = address;
        server
    }

    /// A new connection with bounded reads and writes.
    fn connect(&self) -> TcpStream {
        let stream = TcpStream::connect(self.address).expect("connect to tidewater");
        stream.set_read_timeout(Some(READ_TIMEOUT)).expect("read timeout");
        stream.set_write_timeout(Some(READ_TIMEOUT)).expect("write timeout");
        stream.set_nodelay(true).expect("nodelay");
        stream
    }

    /// The first log line containing every one of `needles`, waiting up to `timeout` for it.
    fn wait_for_log(&self, needles: &[&str], timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self.find_log(needles) {
                return line;
            }
            if Instant::now() > deadline {
                let log = self.log.lock().expect("log lock").join("\n");
                panic!("no log line containing all of {needles:?}; the log:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn find_log(&self, needles: &[&str]) -> Option<String> {
        let log = self.log.lock().expect("log lock");
        log.iter().find(|line| needles.iter().all(|needle| line.contains(needle))).cloned()
    }

    /// The server's virtual memory size (Linux `VmSize`): what it has reserved, touched or not.
    fn virtual_memory_bytes(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).expect("/proc status");
        let kib = status
            .lines()
            .find_map(|line| line.strip_prefix("VmSize:"))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .expect("VmSize in /proc status");
        kib * 1024
    }

    /// A fresh connection gets ApiVersions and Metadata answered, and the process is alive.
    fn assert_healthy(&mut self, after: &str) {
        assert!(self.child.try_wait().expect("try_wait").is_none(), "tidewater exited after {after}");
        let mut stream = self.connect();
        assert_api_versions_work(&mut stream, 1_000, after);
        assert_metadata_works(&mut stream, 1_001, after);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A request as a client sends it, size prefix included.
fn request(api_key: ApiKey, api_version: i16, correlation_id: i32, body: &impl Encodable) -> Vec<u8> {
    let mut payload = Vec::new();
    RequestHeader::default()
        .with_request_api_key(api_key as i16)
        .with_request_api_version(api_version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("robustness")))
        .encode(&mut payload, api_key.request_header_version(api_version))
        .expect("encode request header");
    body.encode(&mut payload, api_version).expect("encode request body");
    framed(&payload)
}

fn framed(payload: &[u8]) -> Vec<u8> {
    let size = i32::try_from(payload.len()).expect("payload fits a frame");
    [&size.to_be_bytes()[..], payload].concat()
}

fn api_versions_request(correlation_id: i32) -> Vec<u8> {
    let body = ApiVersionsRequest::default()
        .with_client_software_name(StrBytes::from_static_str("robustness"))
        .with_client_software_version(StrBytes::from_static_str("1.0"));
    request(ApiKey::ApiVersions, 3, correlation_id, &body)
}

fn metadata_request(correlation_id: i32) -> Vec<u8> {
    // A null topic list asks for every topic and creates none.
    request(ApiKey::Metadata, 12, correlation_id, &MetadataRequest::default().with_topics(None))
}

/// Reads one response frame: its correlation id and the bytes after it (header tagged fields,
/// if any, and the body).
fn read_response(stream: &mut TcpStream) -> std::io::Result<(i32, Vec<u8>)> {
    let mut prefix = [0u8; 4];
    stream.read_exact(&mut prefix)?;
    let size = i32::from_be_bytes(prefix);
    let size = usize::try_from(size)
        .ok()
        .filter(|size| (4..=RESPONSE_BYTES_MAX).contains(size))
        .ok_or_else(|| std::io::Error::new(ErrorKind::InvalidData, format!("response size {size}")))?;
    let mut payload = vec![0u8; size];
    stream.read_exact(&mut payload)?;
    let correlation_id = i32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]);
    Ok((correlation_id, payload))
}

/// Decodes a response payload (as `read_response` returns it) of `api_key` at `api_version`.
fn decode_response<T: Decodable>(payload: &[u8], api_key: ApiKey, api_version: i16) -> T {
    let mut bytes = payload;
    ResponseHeader::decode(&mut bytes, api_key.response_header_version(api_version))
        .expect("response header");
    let body = T::decode(&mut bytes, api_version).expect("response body");
    assert!(bytes.is_empty(), "{} bytes left after a {api_key:?} v{api_version} response", bytes.len());
    body
}

fn assert_ranges(response: &ApiVersionsResponse, context: &str) {
    for (api_key, min, max) in EXPECTED_RANGES {
        let range = response.api_keys.iter().find(|range| range.api_key == *api_key as i16);
        let range = range.unwrap_or_else(|| panic!("{context}: no range for {api_key:?}"));
        assert_eq!((range.min_version, range.max_version), (*min, *max), "{context}: {api_key:?}");
    }
}

fn assert_api_versions_work(stream: &mut TcpStream, correlation_id: i32, context: &str) {
    stream.write_all(&api_versions_request(correlation_id)).expect("send ApiVersions");
    let (got, payload) =
        read_response(stream).unwrap_or_else(|error| panic!("ApiVersions after {context}: {error}"));
    assert_eq!(got, correlation_id, "ApiVersions after {context}");
    let response: ApiVersionsResponse = decode_response(&payload, ApiKey::ApiVersions, 3);
    assert_eq!(response.error_code, 0, "ApiVersions after {context}");
    assert_ranges(&response, context);
}

fn assert_metadata_works(stream: &mut TcpStream, correlation_id: i32, context: &str) {
    stream.write_all(&metadata_request(correlation_id)).expect("send Metadata");
    let (got, payload) =
        read_response(stream).unwrap_or_else(|error| panic!("Metadata after {context}: {error}"));
    assert_eq!(got, correlation_id, "Metadata after {context}");
    let response: MetadataResponse = decode_response(&payload, ApiKey::Metadata, 12);
    assert_eq!(response.brokers.len(), 1, "Metadata after {context}: {response:?}");
}

/// Reads until the server closes the connection (end of stream or a reset) and returns what
/// arrived before that; panics if it stays open past `READ_TIMEOUT`.
fn read_until_closed(stream: &mut TcpStream, context: &str) -> Vec<u8> {
    let deadline = Instant::now() + READ_TIMEOUT;
    let mut received = Vec::new();
    let mut chunk = [0u8; 4096];
    // Bounded in count as well as time: the server has no reason to send more than a few
    // responses here.
    for _ in 0..1_000 {
        match stream.read(&mut chunk) {
            Ok(0) => return received,
            Ok(n) => received.extend_from_slice(&chunk[..n]),
            Err(error) if matches!(error.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe) => {
                return received
            }
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!("{context}: the server kept the connection open for {READ_TIMEOUT:?}")
            }
            Err(error) => panic!("{context}: read failed: {error}"),
        }
        assert!(Instant::now() < deadline, "{context}: the server kept the connection open");
    }
    panic!("{context}: the server sent more than expected");
}

/// Deterministic bytes that look like nothing (xorshift64).
fn garbage(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect()
}

/// Builds a payload from parts (for hand-made headers and bodies).
fn concat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

fn fixed_header(api_key: i16, api_version: i16, correlation_id: i32) -> Vec<u8> {
    concat(&[&api_key.to_be_bytes(), &api_version.to_be_bytes(), &correlation_id.to_be_bytes()])
}

/// What the server must do with one corpus entry.
#[derive(Debug)]
enum Expect {
    /// Close the connection without answering, logging a line with `log` and the client's
    /// address (no line when `log` is `None`: a client that hangs up is not news).
    Closed { log: Option<&'static str> },
    /// Answer the requests with these correlation ids, in order, then close.
    AnswersThenCloses { correlation_ids: &'static [i32], log: Option<&'static str> },
}

const BAD_REQUEST: Option<&str> = Some("closing connection after a bad request");
const BAD_FRAME: Option<&str> = Some("bad frame");

/// One corpus entry: a name, the bytes to send, whether to half-close after sending them.
struct Case {
    name: &'static str,
    bytes: Vec<u8>,
    then_shutdown_write: bool,
    expect: Expect,
}

fn case(name: &'static str, bytes: Vec<u8>, expect: Expect) -> Case {
    Case { name, bytes, then_shutdown_write: false, expect }
}

/// Sends each entry on its own connection and checks what the server does, then that the
/// server is healthy and that `bystander`, connected before any of them, still works.
fn check(server: &mut Server, cases: &[Case]) {
    let mut bystander = server.connect();
    assert_api_versions_work(&mut bystander, 1, "connecting");
    for (case_idx, case) in cases.iter().enumerate() {
        let context = case.name;
        let mut stream = server.connect();
        let peer = stream.local_addr().expect("local addr").to_string();
        // The server may close before reading everything (an oversized prefix): then the rest
        // of the write can fail, which is fine.
        let _ = stream.write_all(&case.bytes);
        if case.then_shutdown_write {
            stream.shutdown(Shutdown::Write).expect("half-close");
        }
        let received = read_until_closed(&mut stream, context);
        let (correlation_ids, log) = match &case.expect {
            Expect::Closed { log } => (&[][..], log),
            Expect::AnswersThenCloses { correlation_ids, log } => (*correlation_ids, log),
        };
        let mut rest = &received[..];
        for expected in correlation_ids {
            assert!(rest.len() >= 8, "{context}: no response with correlation id {expected}");
            let size =
                usize::try_from(i32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]])).expect("size");
            let got = i32::from_be_bytes([rest[4], rest[5], rest[6], rest[7]]);
            assert_eq!(got, *expected, "{context}: responses out of order");
            rest = &rest[(4 + size).min(rest.len())..];
        }
        assert!(rest.is_empty(), "{context}: {} unexpected bytes before the close", rest.len());
        if let Some(log) = log {
            server.wait_for_log(&[log, &peer], STARTUP_TIMEOUT);
        }
        let correlation_id = 10 + 2 * case_idx as i32;
        assert_api_versions_work(&mut bystander, correlation_id, context);
        assert_metadata_works(&mut bystander, correlation_id + 1, context);
        server.assert_healthy(context);
    }
}

#[test]
fn bad_frames_close_only_their_own_connection() {
    let mut server = Server::start(&[]);
    let null_client_id: &[u8] = &[0xff, 0xff];
    let limit = REQUEST_BYTES_MAX as i32;
    let mut cases = vec![
        // Framing: refused from the size prefix alone, before the server allocates for it.
        case(
            "size prefix one over --max-request-bytes",
            framed(&vec![0u8; REQUEST_BYTES_MAX + 1]),
            Expect::Closed { log: BAD_FRAME },
        ),
        case(
            "size prefix i32::MAX, nothing after",
            i32::MAX.to_be_bytes().to_vec(),
            Expect::Closed { log: BAD_FRAME },
        ),
        case("size prefix -1", (-1i32).to_be_bytes().to_vec(), Expect::Closed { log: BAD_FRAME }),
        case(
            "size prefix i32::MIN and a body",
            concat(&[&i32::MIN.to_be_bytes(), &[0u8; 64]]),
            Expect::Closed { log: BAD_FRAME },
        ),
        // Decoding: a whole frame that is not a request we can serve.
        case("empty frame", framed(&[]), Expect::Closed { log: BAD_REQUEST }),
        case("seven-byte frame", framed(&[0, 18, 0, 3, 0, 0, 0]), Expect::Closed { log: BAD_REQUEST }),
        case(
            "unknown api key",
            framed(&concat(&[&fixed_header(1000, 0, 5), null_client_id])),
            Expect::Closed { log: BAD_REQUEST },
        ),
        case(
            "Produce v2 (unsupported version)",
            framed(&concat(&[&fixed_header(0, 2, 5), null_client_id, &[0u8; 16]])),
            Expect::Closed { log: BAD_REQUEST },
        ),
        case(
            "Fetch v13 (unsupported version)",
            framed(&concat(&[&fixed_header(1, 13, 5), &[0, 0, 0], &[0u8; 32]])),
            Expect::Closed { log: BAD_REQUEST },
        ),
        case(
            "Metadata v1 with an array count of 0x033c0c00 and nothing after",
            framed(&concat(&[&fixed_header(3, 1, 5), null_client_id, &0x033c_0c00i32.to_be_bytes()])),
            Expect::Closed { log: BAD_REQUEST },
        ),
        case(
            "Metadata v1 with a topic name of length -7",
            framed(&concat(&[
                &fixed_header(3, 1, 5),
                null_client_id,
                &1i32.to_be_bytes(),
                &(-7i16).to_be_bytes(),
            ])),
            Expect::Closed { log: BAD_REQUEST },
        ),
        case(
            "Metadata v12 cut inside its body",
            framed(&metadata_request(5)[4..15]),
            Expect::Closed { log: BAD_REQUEST },
        ),
        // Garbage: its first four bytes are read as a size.
        case(
            "an HTTP request",
            b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec(),
            Expect::Closed { log: BAD_FRAME },
        ),
        case(
            "a TLS ClientHello",
            concat(&[&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03], &garbage(64, 1)]),
            Expect::Closed { log: BAD_FRAME },
        ),
        case("4 KiB of random bytes", garbage(4096, 0x5eed), Expect::Closed { log: BAD_FRAME }),
        case(
            "a plausible size, then random bytes",
            concat(&[&200i32.to_be_bytes(), &garbage(200, 42)]),
            Expect::Closed { log: BAD_REQUEST },
        ),
        case(
            "a Metadata v12 fixed header, then random bytes",
            framed(&concat(&[&fixed_header(3, 12, 5), &garbage(100, 7)])),
            Expect::Closed { log: BAD_REQUEST },
        ),
        // Requests before the bad frame are answered, in order, before the close.
        case(
            "two good requests, then garbage, in one write",
            concat(&[&api_versions_request(21), &metadata_request(22), &framed(&garbage(30, 3))]),
            Expect::AnswersThenCloses { correlation_ids: &[21, 22], log: BAD_REQUEST },
        ),
        case(
            "a good request, then an oversized prefix",
            concat(&[&api_versions_request(23), &(limit + 1).to_be_bytes()]),
            Expect::AnswersThenCloses { correlation_ids: &[23], log: BAD_FRAME },
        ),
    ];
    // A client that hangs up: mid-prefix, mid-frame, or right after a whole request (which is
    // still answered).
    let whole = api_versions_request(24);
    cases.extend([
        Case {
            name: "two bytes of a size prefix, then the client hangs up",
            bytes: whole[..2].to_vec(),
            then_shutdown_write: true,
            expect: Expect::Closed { log: None },
        },
        Case {
            name: "half a frame, then the client hangs up",
            bytes: whole[..whole.len() / 2].to_vec(),
            then_shutdown_write: true,
            expect: Expect::Closed { log: None },
        },
        Case {
            name: "a size prefix at the limit and part of the body, then the client hangs up",
            bytes: concat(&[&limit.to_be_bytes(), &[0u8; 100]]),
            then_shutdown_write: true,
            expect: Expect::Closed { log: None },
        },
        Case {
            name: "a whole request, then the client hangs up",
            bytes: whole.clone(),
            then_shutdown_write: true,
            expect: Expect::AnswersThenCloses { correlation_ids: &[24], log: None },
        },
    ]);
    check(&mut server, &cases);
}

#[test]
fn a_request_exactly_at_the_size_limit_is_read_and_one_byte_over_is_refused() {
    let mut server = Server::start(&[]);
    // A Metadata v1 request padded with trailing bytes to exactly the limit: the codec ignores
    // what follows a complete body, so the server answers it.
    let mut payload = concat(&[&fixed_header(3, 1, 31), &[0xff, 0xff], &(-1i32).to_be_bytes()]);
    payload.resize(REQUEST_BYTES_MAX, 0);
    let mut stream = server.connect();
    stream.write_all(&framed(&payload)).expect("send");
    let (correlation_id, _) = read_response(&mut stream).expect("a response to a request at the limit");
    assert_eq!(correlation_id, 31);
    assert_api_versions_work(&mut stream, 32, "a request at the limit");

    payload.push(0);
    let mut stream = server.connect();
    let peer = stream.local_addr().expect("local addr").to_string();
    let _ = stream.write_all(&framed(&payload));
    assert!(read_until_closed(&mut stream, "one byte over the limit").is_empty());
    let line = server.wait_for_log(&["bad frame", &peer], STARTUP_TIMEOUT);
    assert!(
        line.contains(&format!("{} bytes exceeds the limit of {REQUEST_BYTES_MAX}", REQUEST_BYTES_MAX + 1)),
        "{line}"
    );
    server.assert_healthy("one byte over the limit");
}

#[test]
fn an_unsupported_api_versions_version_gets_our_ranges_in_v0() {
    let mut server = Server::start(&[]);
    let mut stream = server.connect();
    // KIP-511: a client newer than the broker asks with its own latest version, and the broker
    // answers in v0 with UNSUPPORTED_VERSION and its ranges; the client then retries on the same
    // connection with a version from them.
    let versions: &[(i16, &[u8])] = &[
        (5, &[0x00, 0x00, 0x00, 0x00]),
        (i16::MAX, &[0x00, 0x00, 0x00, 0x02, 0xff, 0x00]),
        (-1, &[0x00, 0x00]),
    ];
    for (idx, (api_version, rest)) in versions.iter().enumerate() {
        let correlation_id = 40 + idx as i32;
        let context = format!("ApiVersions v{api_version}");
        stream
            .write_all(&framed(&concat(&[&fixed_header(18, *api_version, correlation_id), rest])))
            .expect("send");
        let (got, payload) = read_response(&mut stream).unwrap_or_else(|error| panic!("{context}: {error}"));
        assert_eq!(got, correlation_id, "{context}");
        let response: ApiVersionsResponse = decode_response(&payload, ApiKey::ApiVersions, 0);
        assert_eq!(response.error_code, 35, "{context}: UNSUPPORTED_VERSION");
        assert_ranges(&response, &context);
    }
    assert_api_versions_work(&mut stream, 50, "the v0 fallback");
    assert_metadata_works(&mut stream, 51, "the v0 fallback");
    server.assert_healthy("unsupported ApiVersions versions");
}

#[test]
fn a_client_that_stalls_mid_frame_is_closed_at_the_idle_timeout() {
    let mut server = Server::start(&["--idle-timeout-secs", "1"]);
    let whole = metadata_request(60);
    // Slowloris: several clients each send part of a frame and stall.
    let mut stalled: Vec<TcpStream> = (0..8)
        .map(|idx| {
            let mut stream = server.connect();
            stream.write_all(&whole[..(idx + 1) * whole.len() / 10]).expect("send part of a frame");
            stream
        })
        .collect();
    let started = Instant::now();
    // Meanwhile other clients are served.
    server.assert_healthy("stalled clients connected");
    for (idx, stream) in stalled.iter_mut().enumerate() {
        let received = read_until_closed(stream, &format!("stalled client {idx}"));
        assert!(received.is_empty(), "stalled client {idx} got an answer to half a request");
    }
    let elapsed = started.elapsed();
    assert!(elapsed < READ_TIMEOUT, "stalled clients closed after {elapsed:?}");
    server.assert_healthy("stalled clients closed");
}

#[test]
fn pipelined_requests_are_answered_in_order_beyond_the_in_flight_limit() {
    let mut server = Server::start(&["--max-in-flight-per-connection", "2"]);
    let mut stream = server.connect();
    // 100 requests in one write: the server reads 2 at a time (the in-flight limit is
    // backpressure, not an error) and answers all of them in request order.
    let n_requests = 100;
    let correlation_ids: Vec<i32> = (0..n_requests).map(|idx| 1_000 + idx * 7).collect();
    let mut bytes = Vec::new();
    for (idx, correlation_id) in correlation_ids.iter().enumerate() {
        if idx % 2 == 0 {
            bytes.extend_from_slice(&metadata_request(*correlation_id));
        } else {
            bytes.extend_from_slice(&api_versions_request(*correlation_id));
        }
    }
    stream.write_all(&bytes).expect("send pipelined requests");
    for (idx, expected) in correlation_ids.iter().enumerate() {
        let (got, payload) =
            read_response(&mut stream).unwrap_or_else(|error| panic!("response {idx}: {error}"));
        assert_eq!(got, *expected, "response {idx} out of order");
        if idx % 2 == 0 {
            let _: MetadataResponse = decode_response(&payload, ApiKey::Metadata, 12);
        } else {
            let response: ApiVersionsResponse = decode_response(&payload, ApiKey::ApiVersions, 3);
            assert_eq!(response.error_code, 0);
        }
    }
    assert_api_versions_work(&mut stream, 5, "100 pipelined requests");
    server.assert_healthy("100 pipelined requests");
}

#[test]
fn many_connections_are_served_and_the_connection_limit_holds_at_its_boundary() {
    let max_connections = 4;
    let mut server = Server::start(&["--max-connections", &max_connections.to_string()]);
    // Up to the limit, every connection is served.
    let mut held: Vec<TcpStream> = (0..max_connections)
        .map(|idx| {
            let mut stream = server.connect();
            assert_api_versions_work(&mut stream, idx, "connections up to the limit");
            stream
        })
        .collect();
    // One over: the connection waits in the listen backlog, unanswered.
    let mut waiting = server.connect();
    waiting.write_all(&api_versions_request(99)).expect("send");
    waiting.set_read_timeout(Some(Duration::from_millis(500))).expect("read timeout");
    let mut byte = [0u8; 1];
    match waiting.read(&mut byte) {
        Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        other => panic!("a connection over the limit was served: {other:?}"),
    }
    // A slot frees up when a held connection closes, and the waiting one is served.
    held.pop();
    waiting.set_read_timeout(Some(READ_TIMEOUT)).expect("read timeout");
    let (correlation_id, _) = read_response(&mut waiting).expect("served once a slot is free");
    assert_eq!(correlation_id, 99);
    drop(waiting);
    drop(held);

    // Many connections in turn, each doing a little and some misbehaving, leave no slot taken:
    // with a limit of 4, a leaked slot would soon stall the rest.
    for idx in 0..60 {
        let mut stream = server.connect();
        match idx % 3 {
            0 => assert_api_versions_work(&mut stream, idx, "many connections"),
            1 => {
                let _ = stream.write_all(&framed(&garbage(20, idx as u64 + 1)));
                read_until_closed(&mut stream, "many connections: garbage");
            }
            _ => drop(stream),
        }
    }
    server.assert_healthy("many connections");
}

#[test]
fn a_size_prefix_alone_does_not_make_the_server_reserve_the_frame() {
    // Kafka's default limit, 100 MiB: each client announces a frame of exactly that size and
    // sends nothing more. The server makes room as bytes arrive, so 64 such clients cost little;
    // reserving each announced frame at once cost 6.4 GiB of address space (a broker under an
    // address-space limit or strict overcommit would abort).
    let limit = tidewater_kafka::frame::DEFAULT_MAX_REQUEST_BYTES;
    let mut server = Server::start(&["--max-request-bytes", &limit.to_string()]);
    server.assert_healthy("startup");
    let before = server.virtual_memory_bytes();
    let prefix = i32::try_from(limit).expect("limit fits a size prefix").to_be_bytes();
    let n_clients = 64;
    let mut clients: Vec<TcpStream> = (0..n_clients)
        .map(|_| {
            let mut stream = server.connect();
            stream.write_all(&prefix).expect("send a size prefix");
            stream
        })
        .collect();
    // Nothing tells a client that the server has read its prefix; on loopback a moment is
    // plenty. (Measuring too early could only let this test pass wrongly, never fail wrongly.)
    server.assert_healthy("64 size prefixes");
    std::thread::sleep(Duration::from_millis(500));
    let grown = server.virtual_memory_bytes().saturating_sub(before);
    let announced = n_clients as u64 * limit as u64;
    assert!(
        grown < announced / 8,
        "the server's address space grew by {grown} bytes for {n_clients} size prefixes announcing {announced}"
    );
    // More of each frame arrives; still no response until a frame is whole.
    for stream in &mut clients {
        stream.write_all(&[0u8; 10_000]).expect("send part of a body");
    }
    server.assert_healthy("64 partial frames");
    drop(clients);
    server.assert_healthy("64 clients hung up mid-frame");

    // A large frame still arrives whole through the step-by-step growth: a Metadata v1 request
    // padded to 3 MiB with bytes the codec ignores after the body.
    let mut payload = concat(&[&fixed_header(3, 1, 77), &[0xff, 0xff], &(-1i32).to_be_bytes()]);
    payload.resize(3 * 1024 * 1024, 0);
    let mut stream = server.connect();
    stream.write_all(&framed(&payload)).expect("send a 3 MiB request");
    let (correlation_id, _) = read_response(&mut stream).expect("a response to a 3 MiB request");
    assert_eq!(correlation_id, 77);
    assert_api_versions_work(&mut stream, 78, "a 3 MiB request");
}
