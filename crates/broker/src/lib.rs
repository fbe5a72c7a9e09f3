//! Tidewater's broker: topics and partitions over the log, and the Kafka API handlers that
//! produce to, fetch from and administer them.
//!
//! Architecture invariant: the broker never parses bytes off a socket. It receives typed
//! requests from `tidewater-kafka` (through the `Handler` trait) and returns typed responses;
//! blocking log work runs on tokio's blocking pool, never on the async threads.

pub mod acl;
mod broker;
mod cleaner;
pub mod credentials;
mod error;
pub mod fetch_sessions;
mod fetch_waiters;
pub mod groups;
mod handlers;
mod internal_log;
mod meta;
mod metrics;
mod partition;
mod producer_snapshot;
mod producers;
#[cfg(test)]
mod test_support;
pub mod topic_config;
mod transaction_coordinator;
pub mod transactions;

pub use crate::acl::AuthorizationConfig;
pub use crate::broker::{ApiError, Broker, BrokerConfig, Topic, PARTITIONS_PER_TOPIC_MAX};
pub use crate::error::BrokerError;
pub use crate::handlers::{BrokerHandler, FETCH_MAX_WAIT_MS_MAX};
pub use crate::meta::META_FILE_NAME;
pub use crate::metrics::TopicMetrics;
pub use crate::partition::Partition;
