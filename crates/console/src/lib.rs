//! Tidewater's built-in web console and the JSON API under `/api/` that it reads, served on the
//! admin listener (crates/admin) through its [`tidewater_admin::Console`] hook.
//!
//! Everything the console shows about topics, messages and consumer groups it learns as a Kafka
//! client (librdkafka through `tidewater-client`), so it works against any Kafka-compatible
//! cluster; live figures (throughput, connections, log sizes) come from the process's metrics
//! registry. With authenticating Kafka listeners the admin listener lets a request in only with
//! a SCRAM user's password, and the API's Kafka client logs in as that user: the console shows
//! what that principal's ACLs let it describe, never more.
//!
//! - [`api`]: the routes, their bounded inputs and the 4xx answers with reasons.
//! - `clients`: one librdkafka client per principal, kept for the next request.
//! - `topics`, `messages`, `groups`, `devices`, `queries`, `triggers`, `overview`: what each route reads or writes.
//! - `assets`: the HTML, CSS and JavaScript, compiled into the binary; no build step.

pub mod api;
mod assets;
mod clients;
mod devices;
mod groups;
mod messages;
mod overview;
mod queries;
mod topics;
mod triggers;

pub use api::{ApiError, ConsoleApi, ConsoleCluster};
