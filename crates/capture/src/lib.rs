//! The cold path: topics captured to Hive-partitioned Parquet files that analytics tools
//! (DuckDB, pyarrow, Spark, Polars) read as one dataset, exactly once.
//!
//! - [`definition`]: a capture's settings and their validation.
//! - [`layout`]: where a file goes and what its name says (pure).
//! - [`encode`]: records into a Parquet file's bytes, raw or with JSON columns (pure).
//! - [`json`]: the value's top-level JSON fields as typed columns (pure).
//! - [`destination`]: a local directory or an S3 bucket, and making a whole file visible.
//! - [`runner`]: the consumer loop that cuts files by time and size and commits offsets only
//!   after a file is visible.
//! - [`metrics`]: each capture's counters on `/metrics`, read from its stats when scraped.
//! - [`registry`] and [`supervisor`]: captures registered in the cluster (`_tidewater_captures`)
//!   and run by `tidewater serve`, with their status in `_tidewater_capture_status`.
//!
//! A capture is a Kafka client (through `tidewater-client`'s configuration), so it runs against
//! any Kafka-compatible cluster; its instances share partitions through a consumer group.

pub mod definition;
pub mod destination;
pub mod encode;
pub mod json;
pub mod layout;
pub mod metrics;
pub mod registry;
pub mod runner;
pub mod supervisor;

pub use definition::CaptureDefinition;
pub use destination::Destination;
pub use encode::ColumnMode;
pub use runner::{run_capture, CaptureStats};
