//! Streaming SQL jobs against a Kafka-compatible cluster.
//!
//! - `runner`: one job, exactly once (output rows and checkpoints in Kafka transactions) or at
//!   least once (rows produced as emitted, checkpoints once they are acknowledged).
//! - `delivery`: the delivery modes, and the delivery reports a job reads before it commits.
//! - `parallel`: one job over several instances sharing the input partitions, one engine job
//!   per partition number, exactly once through KIP-447 transactional offset commits, or at
//!   least once (offsets committed after the checkpoints, which come after the rows).
//! - `registry`: query jobs registered in the cluster (`_tidewater_queries`), as the trigger
//!   registry does for triggers, so `tidewater serve` can run them.
//! - `supervisor`: keeps the registered jobs running.
//! - `reference`: reference inputs (tables from a topic or a file), loaded before the first
//!   event and followed live.
//! - `metrics`: each job's series in the process's metrics registry.

pub mod delivery;
mod metrics;
pub mod parallel;
pub mod reference;
pub mod registry;
pub mod runner;
pub mod supervisor;

pub use delivery::Delivery;
pub use metrics::{input_lag_records, last_failure, JobFailure};
pub use registry::{QueryDefinition, QueryRegistry};
pub use runner::{run_query_job, QueryJobSettings, CHECKPOINT_TOPIC};
pub use supervisor::supervise_queries;
