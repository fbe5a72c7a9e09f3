//! The admin listener (`--admin-listen`, Redpanda's 9644 by default) that every long-running
//! role serves: `/metrics` in the Prometheus text format, `/health/live` and `/health/ready`.
//!
//! It never touches a hot path: `/metrics` renders the process-wide registry
//! ([`tidewater_metrics::global`]), whose series the components update with atomics, and whose
//! collectors read live state under the locks any reader takes. `/health/ready` reads one
//! [`Readiness`] that the role's lifecycle sets: not ready while logs recover or listeners are
//! not yet open, or once shutdown begins, with the reason in the 503's body.
//!
//! Who may read `/metrics` is [`MetricsAccess`]: anyone (the default of a loopback listener in
//! front of unauthenticated Kafka listeners), or only a request bearing the configured token or
//! the password of a SCRAM user. The health endpoints stay open, as a load balancer needs them
//! and they say nothing but "ready" or why not.
//!
//! Every other path belongs to the web console when the role gives one ([`Console`]): the same
//! access check lets a request in, and the console acts as the [`Principal`] it found.

mod access;
mod console;
mod readiness;
mod server;

pub use access::{MetricsAccess, MetricsToken, Principal};
pub use console::{Console, ConsoleFuture, ConsoleRequest, ConsoleResponse, CONSOLE_REQUEST_BYTES_MAX};
pub use readiness::Readiness;
pub use server::{loopback_host, serve, AdminState, ADMIN_CONNECTIONS_MAX};
