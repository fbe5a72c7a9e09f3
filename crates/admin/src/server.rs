//! The HTTP/1.1 server of the admin listener: at most [`ADMIN_CONNECTIONS_MAX`] connections,
//! a header timeout, GET only, and a 4xx with its reason for anything else. A request never
//! panics the listener: every path it can take ends in a response.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use hyper::{Method, Request, Response, StatusCode};
use tidewater_metrics::Registry;
use tokio::net::TcpListener;

use crate::access::MetricsAccess;
use crate::readiness::Readiness;

/// The most admin connections open at once; more wait in the listen backlog. A scraper and a
/// few people's browsers need a handful.
pub const ADMIN_CONNECTIONS_MAX: usize = 64;
/// How long a client may take to send a request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// The Prometheus text format's content type.
const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What the endpoints read.
#[derive(Debug)]
pub struct AdminState {
    pub registry: &'static Registry,
    pub readiness: Arc<Readiness>,
    pub metrics_access: MetricsAccess,
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
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
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
        });
    }
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

async fn answer(request: Request<Incoming>, state: &AdminState) -> AdminResponse {
    let path = request.uri().path();
    if !matches!(path, "/" | "/metrics" | "/health/live" | "/health/ready") {
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
                Ok(()) => text(StatusCode::OK, METRICS_CONTENT_TYPE, state.registry.render()),
                Err(refusal) => {
                    let mut response = plain(StatusCode::UNAUTHORIZED, refusal.reason());
                    response
                        .headers_mut()
                        .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"tidewater\""));
                    response
                }
            }
        }
        _ => plain(StatusCode::OK, "tidewater admin listener: /metrics, /health/live, /health/ready"),
    };
    if request.method() == Method::HEAD {
        *response.body_mut() = Full::new(Bytes::new());
    }
    response
}
