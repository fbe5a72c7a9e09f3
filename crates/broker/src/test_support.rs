//! What the broker's unit tests share: a broker on a temporary directory with a test clock.

use std::path::Path;
use std::sync::Arc;

use tidewater_log::{LogConfig, ManualClock};

use crate::broker::{Broker, BrokerConfig};
use crate::groups::GroupConfig;

/// A broker on `dir` whose topics get `log_defaults`, with time from `clock`.
pub(crate) fn open_broker(dir: &Path, clock: &ManualClock, log_defaults: LogConfig) -> Broker {
    let config = BrokerConfig {
        data_dir: dir.to_path_buf(),
        node_id: 0,
        auto_create_topics: false,
        default_partitions: 1,
        log_defaults,
        groups: GroupConfig::default(),
        offsets_retention_ms: 7 * 24 * 60 * 60 * 1000,
    };
    Broker::open(config, Arc::new(clock.clone())).expect("open broker")
}
