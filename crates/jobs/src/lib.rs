//! The jobs runtime: processing that runs as a client of a Kafka-compatible cluster.
//!
//! Nothing here assumes the broker is in-process. Jobs get a `tidewater_client::ClusterConfig`
//! (bootstrap servers and the user's librdkafka properties) and work the same inside `tidewater serve` (against its embedded broker), standalone against
//! Apache Kafka or Redpanda, and scaled out over several instances that share a consumer group.
//!
//! It runs triggers (`trigger`: simple event processing, an action per event) and streaming SQL
//! jobs (`query`: complex event processing, exactly once through Kafka transactions).

pub mod definitions;
pub mod event;
pub mod query;
pub mod task;
pub mod time_format;
pub mod trigger;

pub use event::Event;
