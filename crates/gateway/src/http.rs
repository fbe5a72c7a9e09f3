//! HTTP ingestion: devices `POST /devices/{id}/messages/events` with their key or a SAS token
//! ([`crate::token`]) in the `Authorization` header, and every event in the request is appended
//! to the telemetry topic (key = device id, header `device-id` = the authenticated id) before the
//! answer is sent.
//!
//! # What a request may carry
//!
//! - **CloudEvents binary mode**: a `ce-specversion` header. The `ce-*` headers (percent-decoded,
//!   as the HTTP binding requires) become `ce_*` record headers, `content-type` stays
//!   `content-type`, the body is the value. This is the CloudEvents Kafka binding's binary mode.
//! - **CloudEvents structured mode** (`application/cloudevents+json`): the event is *unpacked*
//!   into the same binary-mode record (attributes as `ce_*` headers, `datacontenttype` as
//!   `content-type`, `data` or `data_base64` as the value), so consumers see one shape whichever
//!   mode a device used.
//! - **CloudEvents batch mode** (`application/cloudevents-batch+json`): a JSON array of
//!   structured events, one record each, all appended before the answer.
//! - **Plain JSON** (`application/json`, no `ce-` headers): one record, the body as the value.
//!
//! [`parse_events`] turns (headers, body) into records or a [`Refusal`]; it is pure. The
//! required attributes are `specversion` (only "1.0"), `id`, `source` and `type`. The binding
//! itself (header names, percent-decoding, unpacking structured events, the checks) is
//! `tidewater_client::cloudevents`, which triggers' webhooks use in the other direction; this
//! module adds what is HTTP's and the gateway's (statuses, limits, the device's identity).
//!
//! # Credentials
//!
//! `Authorization: Bearer <key>`, `Authorization: Bearer SharedAccessSignature sr=...` or, as
//! IoT Hub's HTTP API takes it, `Authorization: SharedAccessSignature sr=...` ([`credential`]).
//! They are checked by [`crate::auth`] exactly as an MQTT password is, before the body is read.
//!
//! # Answers
//!
//! 200 `{"appended": N}` once every record's append is durable (a delivery report from the
//! idempotent acks=all producer); 401 (with `WWW-Authenticate: Bearer, SharedAccessSignature`)
//! for a missing or wrong key or token, or an unknown device, with the reason a token was
//! refused (malformed, expired, for another device) in the body; 403 for a disabled device; 404
//! for any other path; 405 for another method; 413 for a body over
//! [`HttpConfig::max_body_bytes`] (from `Content-Length` before reading, and counted while
//! reading) or a batch over [`HttpConfig::max_batch_events`]; 400
//! `{"error": reason}` for malformed JSON or a missing attribute; 415 for an unsupported content
//! type; 429 with `Retry-After` (whole seconds) for a device over its quota
//! ([`crate::throttle`]; checked before the body is read, so nothing of the request is
//! appended); 503 while the registry has not been read yet or when an append fails. A 503 after some
//! of a batch's appends succeeded leaves those records in the log: a retrying device gets at
//! least once, never silently none.
//!
//! # Limits
//!
//! Body bytes, events per batch, connections (a semaphore taken before `accept`), the time to
//! send the request headers and the time to send the body are all [`HttpConfig`] fields.

use std::borrow::Cow;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{
    HeaderMap, HeaderValue, ALLOW, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE,
};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::Value as Json;
use tidewater_client::cloudevents::{essence, kafka_headers_from_http, unpack_structured};

use crate::append::{AppendError, Appender, PendingAppend};
use crate::auth::{
    authenticate_at, authenticate_certificate_at, unix_now_secs, Identity, Refusal as AuthRefusal,
};
use crate::listener::{tls_handshake, LimitedListener, Listen, PeerCertificates};
use crate::registry::Directory;
use crate::route::{DeviceMessage, CONTENT_TYPE_HEADER, DEVICE_ID_HEADER, RECORD_BYTES_MAX};
use crate::throttle::{self, Quota};
use crate::token::TOKEN_PREFIX;
use tidewater_mqtt::ReasonCode;

/// Default largest request body.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;
/// Default most events in one batch-mode request.
pub const DEFAULT_MAX_BATCH_EVENTS: usize = 1000;
/// Default most HTTP connections open at once.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Default time a client has to send a request's headers (also the keep-alive idle limit).
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time a client has to send a request's body.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a full producer queue is waited on between attempts, and how long in all.
const QUEUE_FULL_BACKOFF: Duration = Duration::from_millis(10);
const QUEUE_FULL_GIVE_UP: Duration = Duration::from_secs(10);
/// How long shutdown waits for requests in flight to be answered.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
pub use tidewater_client::cloudevents::{
    ATTRIBUTE_NAME_BYTES_MAX, BATCH_CONTENT_TYPE, JSON_CONTENT_TYPE, STRUCTURED_CONTENT_TYPE,
};

/// How the HTTP listener behaves; see the module documentation.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub max_body_bytes: usize,
    pub max_batch_events: usize,
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    /// Where device events go (the same topic as MQTT's).
    pub telemetry_topic: String,
    /// What a device may send unless its record says otherwise ([`crate::throttle`]; the same
    /// as MQTT's, and charged to the same bucket); unlimited by default.
    pub device_quota: crate::throttle::Quota,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_batch_events: DEFAULT_MAX_BATCH_EVENTS,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            telemetry_topic: "telemetry".to_string(),
            device_quota: crate::throttle::Quota::UNLIMITED,
        }
    }
}

/// Why a request's content is refused, with the HTTP status each stands for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// 400.
    #[error("{0}")]
    Malformed(String),
    /// 413.
    #[error("{0}")]
    TooLarge(String),
    /// 415.
    #[error("{0}")]
    UnsupportedMediaType(String),
}

impl Refusal {
    pub fn status(&self) -> StatusCode {
        match self {
            Refusal::Malformed(_) => StatusCode::BAD_REQUEST,
            Refusal::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Refusal::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        }
    }
}

/// The device id of an events path: `/devices/{id}/messages/events`, with or without a final
/// slash.
pub fn events_path_device(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("/devices/")?;
    let (device, rest) = rest.split_once('/')?;
    let rest = rest.strip_prefix("messages/events")?;
    (!device.is_empty() && (rest.is_empty() || rest == "/")).then_some(device)
}

/// The token of an `Authorization: Bearer <token>` header (the scheme is case-insensitive).
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// What a request presents as its password: a bearer token (a key, or a SAS token), or a SAS
/// token sent as its own scheme (`Authorization: SharedAccessSignature sr=...`), which is the
/// whole header value. Schemes are case-insensitive in HTTP, so the SAS scheme is given back in
/// the exact spelling [`crate::token`] selects tokens by.
pub fn credential(headers: &HeaderMap) -> Option<Cow<'_, str>> {
    if let Some(token) = bearer_token(headers) {
        return Some(Cow::Borrowed(token));
    }
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, fields) = value.split_once(' ')?;
    let sas_scheme = TOKEN_PREFIX.trim_end();
    if !scheme.eq_ignore_ascii_case(sas_scheme) {
        return None;
    }
    Some(if scheme == sas_scheme {
        Cow::Borrowed(value)
    } else {
        Cow::Owned(format!("{TOKEN_PREFIX}{fields}"))
    })
}

/// The records a request carries for `device_id` on `topic`, in order, or why it is refused.
pub fn parse_events(
    device_id: &str,
    topic: &str,
    headers: &HeaderMap,
    body: Bytes,
    max_batch_events: usize,
) -> Result<Vec<DeviceMessage>, Refusal> {
    let content_type = match headers.get(CONTENT_TYPE) {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .map_err(|_| Refusal::Malformed("the content-type header is not ASCII".to_string()))?,
        ),
    };
    let record = |ce_headers: Vec<(String, Bytes)>, content_type: Option<&str>, value: Bytes| {
        let mut record_headers = Vec::with_capacity(ce_headers.len() + 2);
        record_headers.push((DEVICE_ID_HEADER.to_string(), Bytes::copy_from_slice(device_id.as_bytes())));
        record_headers.extend(ce_headers);
        if let Some(content_type) = content_type {
            record_headers
                .push((CONTENT_TYPE_HEADER.to_string(), Bytes::copy_from_slice(content_type.as_bytes())));
        }
        DeviceMessage {
            topic: topic.to_string(),
            key: device_id.to_string(),
            payload: value,
            headers: record_headers,
        }
    };
    if headers.contains_key("ce-specversion") {
        let attributes =
            kafka_headers_from_http(headers.iter().map(|(name, value)| (name.as_str(), value.as_bytes())))
                .map_err(|error| Refusal::Malformed(error.0))?;
        return Ok(vec![record(attributes, content_type, body)]);
    }
    let Some(content_type) = content_type else {
        return Err(Refusal::UnsupportedMediaType(format!(
            "no content-type: send {JSON_CONTENT_TYPE}, {STRUCTURED_CONTENT_TYPE}, {BATCH_CONTENT_TYPE}, or a binary-mode CloudEvent (ce- headers)"
        )));
    };
    match essence(content_type).as_str() {
        JSON_CONTENT_TYPE => {
            parse_json(&body)?;
            Ok(vec![record(Vec::new(), Some(content_type), body)])
        }
        STRUCTURED_CONTENT_TYPE => {
            let event = structured_event(parse_json(&body)?, None)?;
            Ok(vec![record(event.attributes, event.content_type.as_deref(), event.data)])
        }
        BATCH_CONTENT_TYPE => {
            let Json::Array(events) = parse_json(&body)? else {
                return Err(Refusal::Malformed("a batch must be a JSON array of events".to_string()));
            };
            if events.len() > max_batch_events {
                return Err(Refusal::TooLarge(format!(
                    "a batch holds at most {max_batch_events} events, this one {}",
                    events.len()
                )));
            }
            events
                .into_iter()
                .enumerate()
                .map(|(index, json)| {
                    let event = structured_event(json, Some(index))?;
                    Ok(record(event.attributes, event.content_type.as_deref(), event.data))
                })
                .collect()
        }
        other => Err(Refusal::UnsupportedMediaType(format!(
            "content-type {other:?} is not supported without ce- headers: send {JSON_CONTENT_TYPE}, {STRUCTURED_CONTENT_TYPE} or {BATCH_CONTENT_TYPE}"
        ))),
    }
}

fn parse_json(body: &[u8]) -> Result<Json, Refusal> {
    serde_json::from_slice(body).map_err(|error| Refusal::Malformed(format!("malformed JSON: {error}")))
}

/// Unpacks one structured event into the Kafka binding's binary mode, or refuses it (400).
fn structured_event(
    json: Json,
    index: Option<usize>,
) -> Result<tidewater_client::cloudevents::Unpacked, Refusal> {
    unpack_structured(json, index).map_err(|error| Refusal::Malformed(error.0))
}

/// What every connection shares.
#[derive(Debug)]
struct Shared {
    config: HttpConfig,
    directory: Directory,
    appender: Arc<dyn Appender>,
}

/// Accepts HTTP connections on every listener (plain, and HTTPS for a TLS one) until `stop`
/// turns true, then lets each connection finish the request it is answering and waits up to
/// [`SHUTDOWN_GRACE`] for them. [`HttpConfig::max_connections`] applies to each listener.
pub async fn serve(
    listeners: Vec<Listen>,
    config: HttpConfig,
    directory: Directory,
    appender: Arc<dyn Appender>,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let shared = Arc::new(Shared { config, directory, appender });
    let mut accepting = tokio::task::JoinSet::new();
    for listen in listeners {
        accepting.spawn(accept_loop(listen, shared.clone(), stop.clone()));
    }
    while accepting.join_next().await.is_some() {}
}

async fn accept_loop(listen: Listen, shared: Arc<Shared>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let what = if listen.tls.is_some() { "HTTPS" } else { "HTTP" };
    let listener = LimitedListener::new(listen.socket, shared.config.max_connections, what);
    while let Some((stream, peer, permit)) = listener.accept(&mut stop).await {
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        let stop = stop.clone();
        let tls = listen.tls.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match tls {
                None => serve_connection(stream, None, shared, stop).await,
                Some(config) => {
                    if let Some((stream, certificates)) = tls_handshake(stream, &config, peer, "HTTP").await {
                        serve_connection(stream, certificates, shared, stop).await;
                    }
                }
            }
        });
    }
    listener.close(SHUTDOWN_GRACE).await;
}

/// Serves one connection's requests; `certificates` is what a TLS client presented, if
/// anything.
async fn serve_connection<S>(
    stream: S,
    certificates: Option<PeerCertificates>,
    shared: Arc<Shared>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let certificates = certificates.map(Arc::new);
    let service = hyper::service::service_fn({
        let shared = shared.clone();
        move |request| handle(request, shared.clone(), certificates.clone())
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(shared.config.header_timeout)
        .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
    tokio::pin!(connection);
    // A connection's error (a client going away, a timeout) ends only that connection.
    tokio::select! {
        _ = connection.as_mut() => return,
        _ = stop.changed() => connection.as_mut().graceful_shutdown(),
    }
    let _ = connection.await;
}

type HttpResponse = Response<Full<Bytes>>;

fn respond(status: StatusCode, body: Json) -> HttpResponse {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(JSON_CONTENT_TYPE));
    response
}

fn refuse(status: StatusCode, reason: impl Into<String>) -> HttpResponse {
    respond(status, serde_json::json!({ "error": reason.into() }))
}

async fn handle(
    request: Request<Incoming>,
    shared: Arc<Shared>,
    certificates: Option<Arc<PeerCertificates>>,
) -> Result<HttpResponse, Infallible> {
    Ok(answer(request, &shared, certificates.as_deref()).await)
}

/// One request, checked in order: path, method, key, size, content; then appended.
async fn answer(
    request: Request<Incoming>,
    shared: &Shared,
    certificates: Option<&PeerCertificates>,
) -> HttpResponse {
    let Some(device_id) = events_path_device(request.uri().path()).map(str::to_string) else {
        return refuse(StatusCode::NOT_FOUND, "no such path; devices POST to /devices/{id}/messages/events");
    };
    if request.method() != Method::POST {
        let mut response = refuse(StatusCode::METHOD_NOT_ALLOWED, "only POST is allowed here");
        response.headers_mut().insert(ALLOW, HeaderValue::from_static("POST"));
        return response;
    }
    // Authentication before the body is read, so a stranger cannot make us read a megabyte.
    let identity = {
        let registry = shared.directory.borrow().clone();
        match (credential(request.headers()), certificates) {
            // Over HTTPS, a request without a key or token may prove itself with the client
            // certificate of the connection, as an MQTT CONNECT without a password does.
            (None, Some(chain)) if !chain.is_empty() => {
                match authenticate_certificate_at(registry.as_deref(), &device_id, chain, unix_now_secs()) {
                    Ok(identity) => Ok(identity),
                    Err(problem) => {
                        crate::metrics::gateway().certificate_refused(&problem);
                        tracing::info!(device_id, reason = %problem, "refused a client certificate over HTTPS");
                        if problem.code() == ReasonCode::BadUserNameOrPassword {
                            return refuse(
                                StatusCode::UNAUTHORIZED,
                                "the client certificate does not identify this device",
                            );
                        }
                        Err(problem.code().into())
                    }
                }
            }
            (None, _) => {
                let refusal = ReasonCode::BadUserNameOrPassword.into();
                crate::metrics::gateway().auth_failed(&refusal);
                Err(refusal)
            }
            (Some(password), _) => authenticate_at(
                registry.as_deref().map(|registry| &registry.devices),
                &device_id,
                Some(password.as_bytes()),
                false,
                unix_now_secs(),
            )
            .inspect_err(|refusal| crate::metrics::gateway().auth_failed(refusal)),
        }
    };
    match identity {
        Ok(Identity::Device(_)) => {}
        Ok(Identity::Anonymous | Identity::User(_))
        | Err(AuthRefusal { code: ReasonCode::NotAuthorized, .. }) => {
            return refuse(StatusCode::FORBIDDEN, "this device is disabled");
        }
        Err(AuthRefusal { code: ReasonCode::ServerUnavailable, .. }) => {
            let mut response =
                refuse(StatusCode::SERVICE_UNAVAILABLE, "the device registry has not been read yet");
            response.headers_mut().insert("retry-after", HeaderValue::from_static("1"));
            return response;
        }
        Err(AuthRefusal { token, .. }) => {
            let reason = match token {
                Some(error) => {
                    tracing::info!(device_id, reason = %error, "refused a SAS token over HTTP");
                    format!("SAS token refused: {error}")
                }
                None => {
                    "send the device's key or a SAS token as Authorization: Bearer <key or token>".to_string()
                }
            };
            let mut response = refuse(StatusCode::UNAUTHORIZED, reason);
            response
                .headers_mut()
                .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer, SharedAccessSignature"));
            return response;
        }
    }
    // A device over its quota is refused before its body is read, and nothing of it appended.
    let quota = shared
        .directory
        .borrow()
        .as_ref()
        .and_then(|registry| registry.devices.get(&device_id))
        .map_or(shared.config.device_quota, |device| Quota::of_device(device, shared.config.device_quota));
    let bucket = (!quota.is_unlimited()).then(|| throttle::buckets().of_device(&device_id));
    if let Some(bucket) = &bucket {
        let debt = bucket.debt(quota, throttle::now_nanos());
        if !debt.is_zero() {
            return too_many_requests(&device_id, quota, debt);
        }
    }
    let max_body_bytes = shared.config.max_body_bytes;
    let declared_length = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared_length.is_some_and(|length| length > max_body_bytes as u64) {
        return refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is over the limit of {max_body_bytes} bytes"),
        );
    }
    let (parts, body) = request.into_parts();
    // Counted while reading too: a chunked body declares no length.
    let collected =
        tokio::time::timeout(shared.config.body_timeout, Limited::new(body, max_body_bytes).collect());
    let body = match collected.await {
        Err(_elapsed) => return refuse(StatusCode::REQUEST_TIMEOUT, "the body did not arrive in time"),
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(error)) if error.is::<http_body_util::LengthLimitError>() => {
            return refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the body is over the limit of {max_body_bytes} bytes"),
            );
        }
        Ok(Err(error)) => return refuse(StatusCode::BAD_REQUEST, format!("reading the body: {error}")),
    };
    let body_bytes = u64::try_from(body.len()).unwrap_or(u64::MAX);
    let messages = match parse_events(
        &device_id,
        &shared.config.telemetry_topic,
        &parts.headers,
        body,
        shared.config.max_batch_events,
    ) {
        Ok(messages) => messages,
        Err(refusal) => return refuse(refusal.status(), refusal.to_string()),
    };
    if let Some(too_big) = messages.iter().find(|message| message.record_bytes() > RECORD_BYTES_MAX) {
        return refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "an event is at most {RECORD_BYTES_MAX} bytes with its headers, this one {}",
                too_big.record_bytes()
            ),
        );
    }
    // Charged before appending (a request refused above costs nothing); the debt it leaves is
    // what the device's next request is refused for.
    if let Some(bucket) = &bucket {
        bucket.charge(quota, throttle::now_nanos(), messages.len() as u64, body_bytes);
    }
    match append_all(shared.appender.as_ref(), &messages).await {
        Ok(()) => {
            crate::metrics::gateway().http_events_received.add(messages.len() as u64);
            crate::presence::presence().activity(&device_id).messages_received(messages.len() as u64);
            respond(StatusCode::OK, serde_json::json!({ "appended": messages.len() }))
        }
        Err(error) => {
            tracing::warn!(%error, device_id, "an HTTP event could not be appended");
            refuse(StatusCode::SERVICE_UNAVAILABLE, format!("appending failed: {error}"))
        }
    }
}

/// 429 for a device over its quota, with `Retry-After` in whole seconds (at least 1) until it is
/// not.
fn too_many_requests(device_id: &str, quota: Quota, debt: Duration) -> HttpResponse {
    crate::metrics::gateway().throttled_http();
    tracing::debug!(device_id, ?debt, "refused an HTTP request over the device's quota");
    let retry_after_secs = retry_after_secs(debt);
    let limits = [(quota.messages_per_second, "messages"), (quota.bytes_per_second, "bytes")]
        .iter()
        .filter(|(limit, _)| *limit > 0)
        .map(|(limit, what)| format!("{limit} {what}"))
        .collect::<Vec<_>>()
        .join(" and ");
    let mut response = refuse(
        StatusCode::TOO_MANY_REQUESTS,
        format!("device {device_id} is over its quota of {limits} per second; retry in {retry_after_secs}s"),
    );
    response.headers_mut().insert(RETRY_AFTER, HeaderValue::from(retry_after_secs));
    response
}

/// A wait as `Retry-After` seconds: rounded up, and at least 1 (0 would invite a retry that is
/// still early).
fn retry_after_secs(debt: Duration) -> u64 {
    (debt.as_secs() + u64::from(debt.subsec_nanos() > 0)).max(1)
}

/// Queues every message in order, then waits until all are durable.
async fn append_all(appender: &dyn Appender, messages: &[DeviceMessage]) -> Result<(), AppendError> {
    let mut pending: Vec<PendingAppend> = Vec::with_capacity(messages.len());
    for message in messages {
        let deadline = tokio::time::Instant::now() + QUEUE_FULL_GIVE_UP;
        loop {
            match appender.append(message) {
                Ok(append) => {
                    pending.push(append);
                    break;
                }
                Err(AppendError::QueueFull) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(QUEUE_FULL_BACKOFF).await;
                }
                Err(error) => return Err(error),
            }
        }
    }
    for append in pending {
        append.await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses a request with `headers` and `body` for device "pump-1", and describes each
    /// record as `key headers... | value`, or the refusal as `status: reason`.
    fn check(headers: &[(&str, &str)], body: &str) -> String {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            let name = hyper::header::HeaderName::from_bytes(name.as_bytes()).unwrap_or(CONTENT_TYPE);
            map.append(name, HeaderValue::from_str(value).unwrap_or(HeaderValue::from_static("?")));
        }
        match parse_events("pump-1", "telemetry", &map, Bytes::copy_from_slice(body.as_bytes()), 3) {
            Ok(messages) => messages
                .iter()
                .map(|message| {
                    let headers: Vec<String> = message
                        .headers
                        .iter()
                        .map(|(name, value)| format!("{name}={}", String::from_utf8_lossy(value)))
                        .collect();
                    format!(
                        "{} {} | {}",
                        message.key,
                        headers.join(" "),
                        String::from_utf8_lossy(&message.payload)
                    )
                })
                .collect::<Vec<_>>()
                .join("\n"),
            Err(refusal) => format!("{}: {refusal}", refusal.status().as_u16()),
        }
    }

    const BINARY: [(&str, &str); 4] =
        [("ce-specversion", "1.0"), ("ce-id", "A-1"), ("ce-source", "/pump"), ("ce-type", "reading")];

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        let check = |millis: u64| retry_after_secs(Duration::from_millis(millis));
        assert_eq!([check(1), check(999), check(1000), check(1001), check(2500)], [1, 1, 1, 2, 3]);
    }

    #[test]
    fn binary_mode_headers_become_ce_headers() {
        let mut headers = BINARY.to_vec();
        headers.push(("ce-traceparent", "00-x%20y"));
        headers.push(("content-type", "text/plain"));
        assert_eq!(
            check(&headers, "71 degrees"),
            "pump-1 device-id=pump-1 ce_specversion=1.0 ce_id=A-1 ce_source=/pump ce_type=reading \
             ce_traceparent=00-x y content-type=text/plain | 71 degrees"
        );
        // Binary data of any type, and no content type at all, are fine in binary mode.
        assert_eq!(
            check(&BINARY, ""),
            "pump-1 device-id=pump-1 ce_specversion=1.0 ce_id=A-1 ce_source=/pump ce_type=reading | "
        );
    }

    #[test]
    fn binary_mode_needs_the_required_attributes() {
        assert_eq!(check(&BINARY[..3], "x"), "400: missing required CloudEvents attribute \"type\"");
        let mut headers = BINARY.to_vec();
        headers[0] = ("ce-specversion", "0.3");
        assert_eq!(check(&headers, "x"), "400: only CloudEvents specversion \"1.0\" is supported");
        let mut headers = BINARY.to_vec();
        headers.push(("ce-broken", "%zz"));
        assert_eq!(check(&headers, "x"), "400: header ce-broken is not valid percent-encoded UTF-8");
        let mut headers = BINARY.to_vec();
        headers.push(("ce-bad_name", "v"));
        assert!(check(&headers, "x").starts_with("400: CloudEvents attribute name \"bad_name\""));
    }

    #[test]
    fn structured_mode_is_unpacked_into_binary_mode() {
        let structured = [("content-type", "application/cloudevents+json; charset=utf-8")];
        assert_eq!(
            check(
                &structured,
                r#"{"type":"reading","specversion":"1.0","source":"/pump","id":"A-2",
                    "datacontenttype":"application/json","data":{"t":71},"site":"north","seq":7}"#
            ),
            "pump-1 device-id=pump-1 ce_specversion=1.0 ce_id=A-2 ce_source=/pump ce_type=reading \
             ce_site=north ce_seq=7 content-type=application/json | {\"t\":71}"
        );
        assert_eq!(
            check(
                &structured,
                r#"{"specversion":"1.0","id":"3","source":"/p","type":"t","data_base64":"/wCA"}"#
            )
            .split(" | ")
            .next(),
            Some("pump-1 device-id=pump-1 ce_specversion=1.0 ce_id=3 ce_source=/p ce_type=t")
        );
        assert!(check(
            &structured,
            r#"{"specversion":"1.0","id":"3","source":"/p","type":"t","datacontenttype":"text/plain","data":"hi"}"#
        )
        .ends_with("content-type=text/plain | hi"));
        assert_eq!(
            check(&structured, r#"{"specversion":"1.0","id":"3","source":"/p"}"#),
            "400: missing required CloudEvents attribute \"type\""
        );
        assert_eq!(
            check(&structured, r#"{"specversion":"1.0","id":"3","source":"/p","type":"t","ext":{"a":1}}"#),
            "400: CloudEvents attribute \"ext\" must be a scalar"
        );
        assert!(check(&structured, r#"{"specversion":"1.0""#).starts_with("400: malformed JSON"));
        assert_eq!(check(&structured, "[]"), "400: a CloudEvent must be a JSON object");
    }

    #[test]
    fn a_batch_is_one_record_per_event_up_to_the_limit() {
        let batch = [("content-type", "application/cloudevents-batch+json")];
        let event =
            |id: u32| format!(r#"{{"specversion":"1.0","id":"{id}","source":"/p","type":"t","data":{id}}}"#);
        assert_eq!(
            check(&batch, &format!("[{},{}]", event(1), event(2))),
            "pump-1 device-id=pump-1 ce_specversion=1.0 ce_id=1 ce_source=/p ce_type=t content-type=application/json | 1\n\
             pump-1 device-id=pump-1 ce_specversion=1.0 ce_id=2 ce_source=/p ce_type=t content-type=application/json | 2"
        );
        assert_eq!(check(&batch, "[]"), "");
        // The limit in this test is 3 events.
        let three = format!("[{},{},{}]", event(1), event(2), event(3));
        assert_eq!(check(&batch, &three).lines().count(), 3);
        let four = format!("[{},{},{},{}]", event(1), event(2), event(3), event(4));
        assert_eq!(check(&batch, &four), "413: a batch holds at most 3 events, this one 4");
        assert_eq!(
            check(&batch, &format!(r#"[{},{{"id":"x"}}]"#, event(1))),
            "400: event 1: missing required CloudEvents attribute \"specversion\""
        );
        assert_eq!(check(&batch, "{}"), "400: a batch must be a JSON array of events");
    }

    #[test]
    fn plain_json_is_one_record_as_it_is() {
        assert_eq!(
            check(&[("content-type", "application/json")], r#"{"t": 71}"#),
            "pump-1 device-id=pump-1 content-type=application/json | {\"t\": 71}"
        );
        assert!(check(&[("content-type", "application/json")], "{").starts_with("400: malformed JSON"));
        assert!(
            check(&[("content-type", "text/plain")], "hi").starts_with("415: content-type \"text/plain\"")
        );
        assert!(check(&[], "{}").starts_with("415: no content-type"));
    }

    #[test]
    fn a_device_id_header_cannot_be_forged() {
        // Only ce- headers and content-type are copied; `device-id` is always the path's.
        let mut headers = BINARY.to_vec();
        headers.push(("device-id", "pump-9"));
        assert!(check(&headers, "x").starts_with("pump-1 device-id=pump-1 ce_"));
        assert!(!check(&headers, "x").contains("pump-9"));
    }

    #[test]
    fn paths_and_bearer_tokens() {
        assert_eq!(events_path_device("/devices/pump-1/messages/events"), Some("pump-1"));
        assert_eq!(events_path_device("/devices/pump-1/messages/events/"), Some("pump-1"));
        assert_eq!(events_path_device("/devices/pump-1/messages/events/x"), None);
        assert_eq!(events_path_device("/devices//messages/events"), None);
        assert_eq!(events_path_device("/devices/pump-1/twin"), None);
        assert_eq!(events_path_device("/"), None);
        let token = |value: &str| {
            let mut headers = HeaderMap::new();
            headers
                .insert(AUTHORIZATION, HeaderValue::from_str(value).unwrap_or(HeaderValue::from_static("")));
            bearer_token(&headers).map(str::to_string)
        };
        assert_eq!(token("Bearer abc="), Some("abc=".to_string()));
        assert_eq!(token("bearer abc="), Some("abc=".to_string()));
        assert_eq!(token("Basic abc="), None);
        assert_eq!(token("Bearer "), None);
        assert_eq!(bearer_token(&HeaderMap::new()), None);
    }

    #[test]
    fn credentials_are_a_bearer_token_or_a_sas_scheme() {
        let credential_of = |value: &str| {
            let mut headers = HeaderMap::new();
            headers
                .insert(AUTHORIZATION, HeaderValue::from_str(value).unwrap_or(HeaderValue::from_static("")));
            credential(&headers).map(|credential| credential.into_owned())
        };
        let sas = "SharedAccessSignature sr=devices%2Fpump-1&sig=abc%3D&se=1";
        assert_eq!(credential_of("Bearer key="), Some("key=".to_string()));
        assert_eq!(credential_of(&format!("Bearer {sas}")), Some(sas.to_string()));
        assert_eq!(credential_of(sas), Some(sas.to_string()));
        assert_eq!(
            credential_of("sharedaccesssignature sr=devices%2Fpump-1&sig=abc%3D&se=1"),
            Some(sas.to_string())
        );
        assert_eq!(credential_of("SharedAccessSignature"), None);
        assert_eq!(credential_of("Basic a2V5"), None);
    }
}
