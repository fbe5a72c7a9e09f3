//! Runs the log cleaner over the broker's compacted partitions and internal journals, off the
//! request path.
//!
//! Housekeeping (`Broker::tick`, about once a second) starts a round on a thread of its own
//! unless the previous one is still running: the round visits every partition whose topic's
//! cleanup policy includes `compact`, and the consumer-offsets and transactions journals, and
//! runs one pass where the log is dirty enough (`Partition::clean`, `Log::clean`). One round at a time, as Kafka's default of one cleaner thread, so the
//! cleaner's I/O is that of one sequential pass; a pass never blocks produce or fetch (see the log
//! crate's `cleaner.rs`), and its thread runs at a lower CPU priority (`CLEANER_NICE`) so that
//! request handling wins when the two compete for a core. A partition whose pass fails is logged and left alone for
//! `FAILED_PARTITION_BACKOFF_MS`, as Kafka marks a partition uncleanable, so one bad segment does
//! not starve the others or flood the log.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use tidewater_log::{CleanOptions, CleanOutcome, Log, LogError};

use crate::partition::Partition;

/// What a round cleans.
#[derive(Debug, Clone)]
pub(crate) enum CleanTarget {
    /// A partition of a compacted topic: its producers' last batches stay.
    Partition(Arc<Partition>),
    /// An internal journal (`internal_log.rs`), written by no producer.
    Journal(Arc<Log>),
}

impl CleanTarget {
    fn clean(&self) -> Result<CleanOutcome, LogError> {
        match self {
            CleanTarget::Partition(partition) => partition.clean(),
            CleanTarget::Journal(log) => log.clean(&CleanOptions::default()),
        }
    }
}

/// The nice value of the cleaning thread: below the request threads (nice 0), above idle work.
const CLEANER_NICE: libc::c_int = 10;

/// How long a partition whose cleaning failed is skipped before it is tried again.
const FAILED_PARTITION_BACKOFF_MS: i64 = 5 * 60 * 1000;

/// The broker's cleaner: at most one round running, and the partitions that recently failed.
#[derive(Debug, Default)]
pub(crate) struct Cleaner {
    round: Mutex<Option<JoinHandle<()>>>,
    /// `topic-partition` to the time until which it is skipped.
    failed: Arc<Mutex<HashMap<String, i64>>>,
}

impl Cleaner {
    /// Starts a round over `partitions` (name and what to clean) unless one is running.
    pub(crate) fn start_round(&self, partitions: Vec<(String, CleanTarget)>, now_ms: i64) {
        let mut round = self.round.lock().expect("cleaner mutex poisoned by a panic");
        if round.as_ref().is_some_and(|running| !running.is_finished()) {
            return;
        }
        if let Some(finished) = round.take() {
            if finished.join().is_err() {
                tracing::error!("a cleaning round panicked");
            }
        }
        let partitions: Vec<(String, CleanTarget)> = {
            let failed = self.failed.lock().expect("cleaner mutex poisoned by a panic");
            partitions
                .into_iter()
                .filter(|(name, _)| failed.get(name).is_none_or(|until| now_ms >= *until))
                .collect()
        };
        if partitions.is_empty() {
            return;
        }
        let failed = self.failed.clone();
        let spawned = std::thread::Builder::new().name("log-cleaner".to_string()).spawn(move || {
            lower_priority();
            for (name, partition) in partitions {
                clean_one(&name, &partition, &failed, now_ms);
            }
        });
        match spawned {
            Ok(handle) => *round = Some(handle),
            Err(error) => tracing::error!(%error, "could not start a cleaning round"),
        }
    }

    /// Waits for a running round; its passes give up once their logs are closed.
    pub(crate) fn stop(&self) {
        if let Some(running) = self.round.lock().expect("cleaner mutex poisoned by a panic").take() {
            if running.join().is_err() {
                tracing::error!("a cleaning round panicked");
            }
        }
    }
}

/// Lowers this thread's CPU priority to `CLEANER_NICE` (on Linux, nice applies per thread). A
/// failure only costs the priority, so it is logged, not returned.
fn lower_priority() {
    // SAFETY: `gettid` has no preconditions; `setpriority` only reads its integer arguments.
    let result = unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, CLEANER_NICE) };
    if result != 0 {
        tracing::warn!(error = %std::io::Error::last_os_error(), "could not lower the cleaner thread's priority");
    }
}

fn clean_one(name: &str, target: &CleanTarget, failed: &Mutex<HashMap<String, i64>>, now_ms: i64) {
    match target.clean() {
        Ok(CleanOutcome::Cleaned(report)) => tracing::info!(
            partition = name,
            first_dirty = report.first_dirty_offset,
            end = report.end_offset,
            bytes_read = report.bytes_read,
            bytes_written = report.bytes_written,
            tombstones_removed = report.tombstones_removed,
            aborted_batches_removed = report.aborted_batches_removed,
            compressed_batches_kept = report.compressed_batches_kept,
            "cleaned partition"
        ),
        Ok(_) | Err(LogError::Closed) => {}
        Err(error) => {
            tracing::error!(partition = name, %error, "cleaning failed; the partition is skipped for a while");
            failed
                .lock()
                .expect("cleaner mutex poisoned by a panic")
                .insert(name.to_string(), now_ms + FAILED_PARTITION_BACKOFF_MS);
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::broker::Broker;
    use crate::topic_config::{self, TopicConfigs};
    use tidewater_log::batch::{self, encode_records};
    use tidewater_log::{LogConfig, ManualClock};

    fn open(dir: &std::path::Path, clock: &ManualClock) -> Broker {
        let log_defaults =
            LogConfig { segment_ms: 1_000, min_cleanable_dirty_ratio: 0.0, ..LogConfig::default() };
        crate::test_support::open_broker(dir, clock, log_defaults)
    }

    /// Two writes of one key, a roll, and a housekeeping tick whose cleaning round is waited for.
    fn write_twice_and_tick(broker: &Broker, clock: &ManualClock, topic: &str) {
        let partition = broker.partition(topic, 0).expect("partition");
        for value in [b"old", b"new"] {
            let mut records = encode_records(1_000, &[(Some(b"key"), Some(value))], None);
            partition.append(&mut records, 1_000).expect("append");
        }
        clock.advance(1_000);
        broker.tick();
        broker.cleaner.stop();
    }

    /// The values of `topic`'s partition 0, from its start.
    fn values(broker: &Broker, topic: &str) -> Vec<String> {
        let log = &broker.partition(topic, 0).expect("partition").log;
        let mut values = Vec::new();
        let mut offset = log.log_start_offset();
        while let Some(range) = log.read(offset, usize::MAX, i64::MAX).expect("read") {
            let bytes = range.read_bytes().expect("bytes");
            let mut position = 0;
            while position < bytes.len() {
                let header = batch::parse_header(&bytes[position..], usize::MAX >> 1).expect("header");
                let whole = &bytes[position..position + header.total_bytes()];
                for record in batch::records(whole).expect("records") {
                    values.push(String::from_utf8_lossy(record.value.unwrap_or_default()).into_owned());
                }
                position += header.total_bytes();
            }
            offset = range.next_offset;
        }
        values
    }

    #[test]
    fn housekeeping_compacts_the_topics_whose_policy_says_so_and_a_config_change_switches_it_on() {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock = ManualClock::new(1_000);
        let broker = open(dir.path(), &clock);
        let compact: TopicConfigs = [("cleanup.policy".to_string(), "compact".to_string())].into();
        broker.create_topic("table", 1, compact.clone(), false).expect("create");
        broker.create_topic("stream", 1, TopicConfigs::new(), false).expect("create");
        write_twice_and_tick(&broker, &clock, "table");
        write_twice_and_tick(&broker, &clock, "stream");
        assert_eq!(values(&broker, "table"), ["new"]);
        assert_eq!(values(&broker, "stream"), ["old", "new"]);

        broker.set_topic_configs("stream", compact, false).expect("alter");
        let stream = broker.topic("stream").expect("topic");
        let described = topic_config::describe(&broker.config.log_defaults, &stream.configs);
        assert!(described.contains(&("cleanup.policy", "compact".to_string(), false)), "{described:?}");
        write_twice_and_tick(&broker, &clock, "stream");
        assert_eq!(values(&broker, "stream"), ["new"]);
        broker.close().expect("close");
    }
}
