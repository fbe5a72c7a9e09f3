//! The HTTP/1.1 server of the admin listener: at most [`ADMIN_CONNECTIONS_MAX`] connections,
//! a header timeout, GET only for its own endpoints, and a 4xx with its reason for anything else.
//! Other paths go to the console when there is one, after the same access check as `/metrics`.
//! A request never panics the listener: every path it can take ends in a response.
//!
//! Served over TLS when the role gives a certificate (`--admin-tls-cert`), with the handshake
//! bounded like the request headers. On a loopback address, a request must name a loopback host
//! ([`loopback_host`]): a page on another site that rebinds its DNS name to 127.0.0.1 then
//! reaches the port but is refused, since its requests carry that site's name.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, AUTHORIZATION, CONTENT_TYPE, HOST, ORIGIN, WWW_AUTHENTICATE};
use hyper::{Method, Request, Response, StatusCode};
use tidewater_metrics::Registry;
use tokio::net::TcpListener;

use crate::access::{MetricsAccess, Refusal};
use crate::console::{Console, ConsoleRequest, CONSOLE_REQUEST_BYTES_MAX};
use crate::readiness::Readiness;

/// The most admin connections open at once; more wait in the listen backlog. A scraper and a
/// few people's browsers need a handful.
pub const ADMIN_CONNECTIONS_MAX: usize = 64;
/// How long a client may take to send a request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// The Prometheus text format's content type.
const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// How long a client may take to finish its TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the endpoints read.
#[derive(Debug)]
pub struct AdminState {
    pub registry: &'static Registry,
    pub readiness: Arc<Readiness>,
    pub metrics_access: MetricsAccess,
    /// The web console and its API, on every other path; without one those are 404.
    pub console: Option<Arc<dyn Console>>,
    /// HTTPS with this configuration; plain HTTP without.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Only requests naming a loopback host are answered (the listener is bound to loopback).
    pub loopback_only: bool,
}

/// Serves the admin endpoints on `listener` until `stop` turns true.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AdminState>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let permits = Arc::new(tokio::sync::Semaphore::new(ADMIN_CONNECTIONS_MAX));
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            _ = stop.changed() => return,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of descriptors, most likely: wait a little rather than spin.
                    tracing::warn!(%error, "admin listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        let state = state.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match state.tls.clone() {
                None => serve_connection(stream, state).await,
                Some(config) => {
                    let acceptor = tokio_rustls::TlsAcceptor::from(config);
                    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => serve_connection(stream, state).await,
                        Ok(Err(error)) => {
                            tracing::debug!(%peer, %error, "admin listener: TLS handshake failed")
                        }
                        Err(_) => tracing::debug!(%peer, "admin listener: TLS handshake timed out"),
                    }
                }
            }
        });
    }
}

/// Answers the requests of one connection, plain or TLS, until it closes.
async fn serve_connection<S>(stream: S, state: Arc<AdminState>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |request| {
        let state = state.clone();
        async move { Ok::<_, Infallible>(answer(request, &state).await) }
    });
    // A connection's error (a client going away, a timeout) ends only that connection.
    let _ = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
        .await;
}

type AdminResponse = Response<Full<Bytes>>;

fn text(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> AdminResponse {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn plain(status: StatusCode, body: impl Into<String>) -> AdminResponse {
    let mut body = body.into();
    body.push('\n');
    text(status, "text/plain; charset=utf-8", body)
}

fn unauthorized(refusal: Refusal) -> AdminResponse {
    let mut response = plain(StatusCode::UNAUTHORIZED, refusal.reason());
    response.headers_mut().insert(WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"tidewater\""));
    response
}

/// A console request: let in by the metrics access check, its body read up to
/// [`CONSOLE_REQUEST_BYTES_MAX`], then answered by the console.
async fn answer_console(
    request: Request<Incoming>,
    state: &AdminState,
    console: &dyn Console,
) -> AdminResponse {
    let method = request.method().clone();
    if method != Method::GET && method != Method::HEAD && method != Method::POST {
        let mut response =
            plain(StatusCode::METHOD_NOT_ALLOWED, format!("the console takes GET and POST, not {method}"));
        response.headers_mut().insert(ALLOW, HeaderValue::from_static("GET, HEAD, POST"));
        return response;
    }
    if method == Method::POST {
        if let Some(refusal) = cross_site_refusal(request.headers(), state.tls.is_some()) {
            return refusal;
        }
    }
    let authorization = request.headers().get(AUTHORIZATION).map(|value| value.as_bytes().to_vec());
    let principal = match state.metrics_access.check(authorization.as_deref()).await {
        Ok(principal) => principal,
        Err(refusal) => return unauthorized(refusal),
    };
    let path = request.uri().path().to_string();
    let query = request.uri().query().unwrap_or_default().to_string();
    let body = match Limited::new(request.into_body(), CONSOLE_REQUEST_BYTES_MAX).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) => {
            return plain(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body not read ({error}); the console takes at most {CONSOLE_REQUEST_BYTES_MAX} bytes"),
            )
        }
    };
    let answer =
        console.handle(ConsoleRequest { method: method.to_string(), path, query, body, principal }).await;
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = text(status, answer.content_type, answer.body);
    if method == Method::HEAD {
        *response.body_mut() = Full::new(Bytes::new());
    }
    response
}

/// Why a POST that changes something (a command sent, a device disabled) is refused when another
/// site's page could have sent it: a page elsewhere may POST a form or a "simple" fetch to
/// 127.0.0.1 from the operator's browser, but it cannot set `Content-Type: application/json`
/// without a CORS preflight this listener never grants, and a browser names its origin.
fn cross_site_refusal(headers: &hyper::HeaderMap, tls: bool) -> Option<AdminResponse> {
    let json = headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.trim_start().to_ascii_lowercase().starts_with("application/json"));
    if !json {
        return Some(plain(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "the console's API takes POST bodies with Content-Type: application/json",
        ));
    }
    if let Some(origin) = headers.get(ORIGIN) {
        let host = headers.get(HOST).and_then(|value| value.to_str().ok()).unwrap_or_default();
        let scheme = if tls { "https://" } else { "http://" };
        let same = origin.to_str().ok().and_then(|origin| origin.strip_prefix(scheme)) == Some(host);
        if !same {
            return Some(plain(StatusCode::FORBIDDEN, "a request from another site's page is refused"));
        }
    }
    None
}

/// Whether a `Host` header names this machine's loopback: `localhost` (or a name under it),
/// `127.0.0.0/8` or `[::1]`, with any port.
pub fn loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        // An IPv6 literal: `[::1]` or `[::1]:9644`.
        Some(rest) => rest.split_once(']').map_or(rest, |(literal, _port)| literal),
        None => host.rsplit_once(':').map_or(host, |(name, _port)| name),
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost"
        || name.ends_with(".localhost")
        || name.parse::<std::net::IpAddr>().is_ok_and(|address| address.is_loopback())
}

async fn answer(request: Request<Incoming>, state: &AdminState) -> AdminResponse {
    if state.loopback_only {
        // A request without Host (HTTP/1.0) comes from no browser, so it is no rebinding attack.
        let host = request.headers().get(HOST).map(|value| value.to_str().unwrap_or("?"));
        if let Some(host) = host.filter(|host| !loopback_host(host)) {
            return plain(
                StatusCode::MISDIRECTED_REQUEST,
                format!(
                    "Host {host:?} is not a loopback name: this listener is bound to loopback and answers \
                     only requests for localhost or 127.0.0.1 (another name pointing here is refused, \
                     against DNS rebinding)"
                ),
            );
        }
    }
    let path = request.uri().path();
    let own = matches!(path, "/metrics" | "/health/live" | "/health/ready");
    if !own {
        if let Some(console) = &state.console {
            return answer_console(request, state, console.as_ref()).await;
        }
    }
    if !own && path != "/" {
        return plain(
            StatusCode::NOT_FOUND,
            format!("no such endpoint: {path} (the admin listener serves /metrics, /health/live and /health/ready)"),
        );
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, format!("{} only takes GET", path));
        response.headers_mut().insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    let mut response = match path {
        "/health/live" => plain(StatusCode::OK, "live"),
        "/health/ready" => match state.readiness.check() {
            Ok(()) => plain(StatusCode::OK, "ready"),
            Err(reason) => plain(StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {reason}")),
        },
        "/metrics" => {
            let authorization = request.headers().get(AUTHORIZATION).map(|value| value.as_bytes());
            match state.metrics_access.check(authorization).await {
                Ok(_) => text(StatusCode::OK, METRICS_CONTENT_TYPE, state.registry.render()),
                Err(refusal) => unauthorized(refusal),
            }
        }
        _ => plain(StatusCode::OK, "tidewater admin listener: /metrics, /health/live, /health/ready"),
    };
    if request.method() == Method::HEAD {
        *response.body_mut() = Full::new(Bytes::new());
    }
    response
}

#[cfg(test)]
mod tests {
    use super::loopback_host;

    #[test]
    fn loopback_hosts_are_the_loopback_names_and_addresses_with_any_port() {
        for host in [
            "localhost",
            "localhost:9644",
            "LOCALHOST.",
            "console.localhost:1",
            "127.0.0.1",
            "127.1.2.3:80",
            "[::1]",
            "[::1]:9644",
        ] {
            assert!(loopback_host(host), "{host}");
        }
        for host in [
            "evil.example",
            "evil.example:9644",
            "10.0.0.1:9644",
            "localhost.evil.example",
            "[::2]:9644",
            "",
            "127.0.0.1.evil.example",
        ] {
            assert!(!loopback_host(host), "{host}");
        }
    }
}
