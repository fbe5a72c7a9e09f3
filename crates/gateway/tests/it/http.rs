//! The HTTP ingestion listener over real sockets, with devices in memory and an in-memory or
//! gated appender: the answer waits for every append, a failed append is a 503, the body limit
//! holds at its boundary, and refused requests append nothing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tidewater_gateway::http::{serve, HttpConfig};
use tidewater_gateway::{Appender, Device, MemoryAppender};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::{wait_for_appends, GatedAppender, KEY};

const BODY_BYTES_MAX: usize = 64;

async fn start(appender: Arc<dyn Appender>) -> (std::net::SocketAddr, tokio::sync::watch::Sender<bool>) {
    start_with(appender, HttpConfig { max_body_bytes: BODY_BYTES_MAX, ..HttpConfig::default() }).await
}

async fn start_with(
    appender: Arc<dyn Appender>,
    config: HttpConfig,
) -> (std::net::SocketAddr, tokio::sync::watch::Sender<bool>) {
    let mut devices = BTreeMap::new();
    devices.insert("pump-1".to_string(), Device::new("pump-1", KEY, [9; 16], 0));
    let mut disabled = Device::new("pump-off", KEY, [9; 16], 0);
    disabled.disabled = true;
    devices.insert("pump-off".to_string(), disabled);
    // One message a second, whatever the listener's default (only one test uses this device: its
    // bucket lives as long as the process).
    let mut limited = Device::new("pump-quota", KEY, [9; 16], 0);
    limited.max_messages_per_second = Some(1);
    devices.insert("pump-quota".to_string(), limited);
    let (_devices, directory) =
        tokio::sync::watch::channel(Some(Arc::new(tidewater_gateway::RegistryView {
            devices,
            ..Default::default()
        })));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(serve(
        vec![tidewater_gateway::Listen::plain(listener)],
        config,
        directory,
        appender,
        stopped,
    ));
    (address, stop)
}

/// A request as bytes: `Connection: close`, so the answer ends with the stream.
fn request(method: &str, path: &str, key: Option<&str>, content_type: &str, body: &str) -> String {
    let authorization = key.map(|key| format!("Authorization: Bearer {key}\r\n")).unwrap_or_default();
    format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{authorization}Content-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Sends `request` and returns "STATUS BODY".
async fn exchange(address: std::net::SocketAddr, request: &str) -> String {
    let mut stream = TcpStream::connect(address).await.expect("connect");
    stream.write_all(request.as_bytes()).await.expect("write");
    read_answer(&mut stream).await
}

async fn read_answer(stream: &mut TcpStream) -> String {
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer))
        .await
        .expect("an answer within 5 s")
        .expect("read");
    let answer = String::from_utf8_lossy(&answer);
    let status = answer.split(' ').nth(1).unwrap_or("none").to_string();
    let body = answer.split_once("\r\n\r\n").map(|(_, body)| body).unwrap_or("");
    format!("{status} {body}")
}

const EVENTS: &str = "/devices/pump-1/messages/events";

#[tokio::test]
async fn a_sas_token_is_taken_as_a_bearer_token_or_its_own_scheme() {
    let appender = MemoryAppender::default();
    let (address, _stop) = start(Arc::new(appender.clone())).await;
    let now = tidewater_gateway::auth::unix_now_secs();
    let token = tidewater_gateway::token::mint("pump-1", KEY, now + 600);
    let json = "application/json";
    assert_eq!(
        exchange(address, &request("POST", EVENTS, Some(&token), json, "{}")).await,
        r#"200 {"appended":1}"#
    );
    let own_scheme = request("POST", EVENTS, None, json, "{}")
        .replace("Connection: close\r\n", &format!("Connection: close\r\nAuthorization: {token}\r\n"));
    assert_eq!(exchange(address, &own_scheme).await, r#"200 {"appended":1}"#);
    let expired = tidewater_gateway::token::mint("pump-1", KEY, now - 1);
    let answer = exchange(address, &request("POST", EVENTS, Some(&expired), json, "{}")).await;
    assert!(answer.starts_with(r#"401 {"error":"SAS token refused: the token expired at "#), "{answer}");
    let other = tidewater_gateway::token::mint("pump-off", KEY, now + 600);
    assert_eq!(
        exchange(address, &request("POST", EVENTS, Some(&other), json, "{}")).await,
        r#"401 {"error":"SAS token refused: the token is for resource \"devices/pump-off\", not \"devices/pump-1\""}"#
    );
    // A right token of a disabled device is a 403, as its key is.
    let disabled = request("POST", "/devices/pump-off/messages/events", Some(&other), json, "{}");
    assert!(exchange(address, &disabled).await.starts_with("403 "));
    assert_eq!(appender.messages().len(), 2);
}

#[tokio::test]
async fn the_answer_waits_for_every_append_of_a_batch() {
    let appender = Arc::new(GatedAppender::default());
    let (address, _stop) = start_with(appender.clone(), HttpConfig::default()).await;
    let batch = r#"[{"specversion":"1.0","id":"1","source":"/s","type":"t"},{"specversion":"1.0","id":"2","source":"/s","type":"t"}]"#;
    let mut stream = TcpStream::connect(address).await.expect("connect");
    let sent = request("POST", EVENTS, Some(KEY), "application/cloudevents-batch+json", batch);
    stream.write_all(sent.as_bytes()).await.expect("write");
    wait_for_appends(&appender, 2).await;
    appender.resolve(1, Ok(()));
    let mut byte = [0u8; 1];
    let early = tokio::time::timeout(Duration::from_millis(200), stream.read(&mut byte)).await;
    assert!(early.is_err(), "answered before every append was durable");
    appender.resolve(0, Ok(()));
    assert_eq!(read_answer(&mut stream).await, r#"200 {"appended":2}"#);
}

#[tokio::test]
async fn a_device_over_its_quota_gets_429_with_retry_after_and_nothing_is_appended() {
    let appender = MemoryAppender::default();
    let (address, _stop) = start_with(Arc::new(appender.clone()), HttpConfig::default()).await;
    let path = "/devices/pump-quota/messages/events";
    let event = r#"{"specversion":"1.0","id":"1","source":"/s","type":"t"}"#;
    let batch = format!("[{event},{event},{event}]");
    // Three events at one a second: taken whole, and two seconds of debt beyond the burst.
    let sent = request("POST", path, Some(KEY), "application/cloudevents-batch+json", &batch);
    assert_eq!(exchange(address, &sent).await, r#"200 {"appended":3}"#);
    let mut stream = TcpStream::connect(address).await.expect("connect");
    let over = request("POST", path, Some(KEY), "application/json", r#"{"over":1}"#);
    stream.write_all(over.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer))
        .await
        .expect("an answer within 5 s")
        .expect("read");
    let answer = String::from_utf8_lossy(&answer).to_ascii_lowercase();
    assert!(answer.starts_with("http/1.1 429 "), "{answer}");
    let retry_after: u64 = answer
        .split("\r\n")
        .find_map(|line| line.strip_prefix("retry-after: "))
        .and_then(|secs| secs.parse().ok())
        .expect("a Retry-After in seconds");
    assert!((1..=2).contains(&retry_after), "{answer}");
    assert!(answer.contains("over its quota of 1 messages per second"), "{answer}");
    assert_eq!(appender.messages().len(), 3, "nothing of the refused request was appended");
    // A device without a quota of its own, under no default, is never refused.
    for _ in 0..5 {
        let sent = request("POST", EVENTS, Some(KEY), "application/json", "{}");
        assert_eq!(exchange(address, &sent).await, r#"200 {"appended":1}"#);
    }
}

#[tokio::test]
async fn a_failed_append_is_service_unavailable() {
    let appender = Arc::new(GatedAppender::default());
    let (address, _stop) = start(appender.clone()).await;
    let sent = request("POST", EVENTS, Some(KEY), "application/json", "{}");
    let exchange = tokio::spawn(async move { exchange(address, &sent).await });
    wait_for_appends(&appender, 1).await;
    let failure =
        tidewater_gateway::append::AppendError::Failed { topic: "telemetry".into(), detail: "boom".into() };
    appender.resolve(0, Err(failure));
    assert_eq!(
        exchange.await.expect("join"),
        r#"503 {"error":"appending failed: appending to telemetry: boom"}"#
    );
}

#[tokio::test]
async fn the_body_limit_holds_at_its_boundary_and_refusals_append_nothing() {
    let appender = MemoryAppender::default();
    let (address, _stop) = start(Arc::new(appender.clone())).await;
    let at_limit = format!(r#"{{"p":"{}"}}"#, "x".repeat(BODY_BYTES_MAX - 8));
    assert_eq!(at_limit.len(), BODY_BYTES_MAX);
    let over_limit = format!(r#"{{"p":"{}"}}"#, "x".repeat(BODY_BYTES_MAX - 7));
    let json = "application/json";
    let cases = [
        (request("POST", EVENTS, Some(KEY), json, &over_limit), "413"),
        (request("POST", EVENTS, None, json, "{}"), "401"),
        (request("POST", EVENTS, Some("wrong"), json, "{}"), "401"),
        (request("POST", "/devices/pump-off/messages/events", Some(KEY), json, "{}"), "403"),
        (request("POST", "/devices/nobody/messages/events", Some(KEY), json, "{}"), "401"),
        (request("GET", EVENTS, Some(KEY), json, ""), "405"),
        (request("POST", "/devices/pump-1/twin", Some(KEY), json, "{}"), "404"),
        (request("POST", EVENTS, Some(KEY), json, "{"), "400"),
        (request("POST", EVENTS, Some(KEY), "text/plain", "hi"), "415"),
    ];
    for (sent, status) in cases {
        let answer = exchange(address, &sent).await;
        assert!(answer.starts_with(status), "{sent:?}: {answer}");
    }
    assert!(appender.messages().is_empty());
    // A declared length over the limit is refused before any body is sent.
    let headers_only = format!(
        "POST {EVENTS} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\nContent-Type: application/json\r\nContent-Length: 1000000\r\n\r\n"
    );
    assert!(exchange(address, &headers_only).await.starts_with("413 "));
    assert_eq!(
        exchange(address, &request("POST", EVENTS, Some(KEY), json, &at_limit)).await,
        r#"200 {"appended":1}"#
    );
    let messages = appender.messages();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].key, "pump-1");
    assert_eq!(&messages[0].payload[..], at_limit.as_bytes());
}
