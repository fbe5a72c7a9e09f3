//! Tidewater's side of a Kafka-compatible cluster: everything the gateway, the jobs runtime and
//! the CLI need to talk to one, and nothing about how a broker works inside.
//!
//! - [`config`]: where the cluster is and how to reach it ([`ClusterConfig`]), built from the
//!   `--brokers`, `--timeout-ms`, `--client-config` and `-X` flags ([`ClusterArgs`]) every
//!   command and role takes. TLS and SASL settings are librdkafka properties and land here.
//! - [`admin`]: admin requests through librdkafka's C API (topics, configs, groups, ACLs, SCRAM
//!   credentials), keeping the broker's error messages, around one request helper.
//! - [`keyed_topic`]: a keyed table kept in a one-partition topic ([`KeyedTopic`]).
//! - [`cloudevents`]: the CloudEvents Kafka and HTTP bindings, in both directions.
//! - [`assignment`]: the consumer protocol's assignment bytes, decoded (pure).
//! - [`logging`]: the librdkafka context that reports repeated errors once ([`QuietContext`]).
//! - [`time`]: the wall clock in Unix milliseconds ([`now_ms`]).
//!
//! It is the workspace's only librdkafka FFI (`admin`), and it knows nothing of the broker's
//! internals: it speaks the Kafka protocol through librdkafka, so whatever works against
//! `tidewater serve` works against Apache Kafka, Redpanda or Event Hubs.

pub mod admin;
pub mod assignment;
pub mod cloudevents;
pub mod config;
pub mod keyed_topic;
pub mod logging;
pub mod time;

pub use config::{timeout_ms_for_librdkafka, ClusterArgs, ClusterConfig, ConfigError, KeyValue};
pub use keyed_topic::{KeyedTopic, TableError, TableFailure};
pub use logging::QuietContext;
pub use time::now_ms;
