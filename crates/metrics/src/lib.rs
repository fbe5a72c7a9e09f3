//! Tidewater's metrics: counters, gauges and latency histograms that a hot path updates with one
//! atomic operation, a process-wide [`Registry`] that knows them by name, and their rendering in
//! the Prometheus text exposition format (`/metrics` of the admin listener).
//!
//! Recording never takes a lock: a caller asks its [`Family`] for the series of its labels once
//! (a topic's counters when the topic is opened, a job's when it starts), keeps the `Arc`, and
//! from then on only adds to an atomic. Values that already live in some component's state (a
//! partition's high watermark, a group's lag) are not copied into metrics at all: a [`Collect`]
//! reads them when `/metrics` is scraped, under the locks a reader of that state takes anyway.
//!
//! Names follow Prometheus' conventions: `tidewater_` first, the unit last in its base form
//! (`_seconds`, `_bytes`), `_total` on counters. Labels are bounded by construction: a topic, a
//! partition, a group, a job, never a device or a key.
//!
//! The registry is process-wide ([`global`]) because the process is what Prometheus scrapes:
//! `serve` runs the broker, the gateway and the jobs in one process and shows them on one page.

mod exposition;
mod metric;
mod process;
mod registry;

pub use exposition::{Exposition, MetricType};
pub use metric::{Counter, Gauge, Histogram, LATENCY_BUCKETS_SECONDS};
pub use process::ProcessCollector;
pub use registry::{global, Collect, Family, Registry};
