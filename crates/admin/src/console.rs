//! The hook through which the admin listener serves the web console and its JSON API without
//! knowing how either works: [`Console`]. The listener checks who is asking (the same
//! [`crate::MetricsAccess`] as `/metrics`), reads a bounded body, and hands the request over
//! with the [`Principal`] it let in; the console (crates/console, a Kafka client) acts as that
//! principal. This keeps the admin crate free of librdkafka, as the Layering table wants.

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;

use crate::access::Principal;

/// The most bytes a console request's body may have; the API's bodies are small JSON objects.
pub const CONSOLE_REQUEST_BYTES_MAX: usize = 64 * 1024;

/// A request for the console, already let in.
#[derive(Debug)]
pub struct ConsoleRequest {
    /// "GET", "HEAD" or "POST": the listener refuses the others.
    pub method: String,
    pub path: String,
    /// The query string, without its `?` (empty when there is none).
    pub query: String,
    /// At most [`CONSOLE_REQUEST_BYTES_MAX`] bytes.
    pub body: Bytes,
    pub principal: Principal,
}

/// The console's answer.
#[derive(Debug)]
pub struct ConsoleResponse {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Bytes,
}

/// A boxed future of a console's answer, so that [`Console`] stays object safe.
pub type ConsoleFuture = Pin<Box<dyn Future<Output = ConsoleResponse> + Send>>;

/// Serves every path of the admin listener other than `/metrics` and `/health/*`.
pub trait Console: Send + Sync + std::fmt::Debug {
    fn handle(&self, request: ConsoleRequest) -> ConsoleFuture;
}
