//! The broker's metrics. Per-topic counters ([`TopicMetrics`]) are atomics that the produce and
//! fetch paths add to, found once when the topic is opened; everything that already lives in the
//! broker's state (high watermarks, log sizes, group lag and members) is read when `/metrics` is
//! scraped, by [`Broker`]'s [`Collect`], and never copied.
//!
//! Group lag is Kafka's: the partition's high watermark minus the group's committed offset, as
//! `tidewater group describe` and `kafka-consumer-groups.sh` show it.

use std::sync::{Arc, OnceLock};

use tidewater_metrics::{global, Collect, Counter, Exposition, MetricType};

use crate::broker::Broker;
use crate::fetch_sessions::FetchContext;
use crate::partition::Partition;

/// A topic's counters, shared by every partition of the topic.
#[derive(Debug, Clone)]
pub struct TopicMetrics {
    pub records_produced: Arc<Counter>,
    pub bytes_produced: Arc<Counter>,
    pub bytes_fetched: Arc<Counter>,
}

impl TopicMetrics {
    pub fn of(topic: &str) -> TopicMetrics {
        let registry = global();
        TopicMetrics {
            records_produced: registry
                .counters(
                    "tidewater_topic_records_produced_total",
                    "Records appended to the topic by produce requests (offsets assigned).",
                    &["topic"],
                )
                .series(&[topic]),
            bytes_produced: registry
                .counters(
                    "tidewater_topic_bytes_produced_total",
                    "Record batch bytes appended to the topic by produce requests.",
                    &["topic"],
                )
                .series(&[topic]),
            bytes_fetched: registry
                .counters(
                    "tidewater_topic_bytes_fetched_total",
                    "Record batch bytes of the topic sent to consumers in fetch responses.",
                    &["topic"],
                )
                .series(&[topic]),
        }
    }

    /// Takes a deleted topic's series off the page.
    pub fn forget(topic: &str) {
        let registry = global();
        for name in [
            "tidewater_topic_records_produced_total",
            "tidewater_topic_bytes_produced_total",
            "tidewater_topic_bytes_fetched_total",
        ] {
            registry.counters(name, "", &["topic"]).remove(&[topic]);
        }
    }
}

impl Collect for Broker {
    fn collect(&self, page: &mut Exposition) {
        let topics = self.topics();
        // One gauge per partition: its family, then a sample per partition of every topic.
        let per_partition =
            |page: &mut Exposition, name: &str, help: &str, value: &dyn Fn(&Partition) -> f64| {
                page.family(name, help, MetricType::Gauge);
                for topic in &topics {
                    for (index, partition) in topic.partitions.iter().enumerate() {
                        let index = index.to_string();
                        let labels = [("topic", topic.name.as_str()), ("partition", index.as_str())];
                        page.sample(name, &labels, value(partition));
                    }
                }
            };
        per_partition(
            page,
            "tidewater_partition_high_watermark",
            "The offset up to which consumers may read (the next offset to be made visible).",
            &|partition| self.high_watermark(&partition.log) as f64,
        );
        per_partition(
            page,
            "tidewater_partition_log_size_bytes",
            "Bytes of the partition's log segments on disk.",
            &|partition| partition.log.size_bytes() as f64,
        );
        self.collect_groups(page);
        page.family("tidewater_fetch_sessions", "Fetch sessions (KIP-227) kept now.", MetricType::Gauge);
        page.sample("tidewater_fetch_sessions", &[], self.fetch_sessions.len() as f64);
    }
}

/// How fetches are answered (KIP-227): requests and the partitions they name, by kind, so the
/// saving of incremental fetches shows as partitions per request.
#[derive(Debug)]
pub(crate) struct FetchMetrics {
    /// Sessionless, full (opening a session), incremental, session error.
    requests: [Arc<Counter>; 4],
    partitions: [Arc<Counter>; 3],
}

const FETCH_KINDS: [&str; 4] = ["sessionless", "full", "incremental", "session_error"];

impl FetchMetrics {
    fn new() -> FetchMetrics {
        let requests = global().counters(
            "tidewater_fetch_requests_total",
            "Fetch requests by kind: sessionless, full (opening a fetch session), incremental, session_error.",
            &["kind"],
        );
        let partitions = global().counters(
            "tidewater_fetch_request_partitions_total",
            "Partitions named in fetch requests, by kind (an incremental fetch names only what changed).",
            &["kind"],
        );
        FetchMetrics {
            requests: FETCH_KINDS.map(|kind| requests.series(&[kind])),
            partitions: [0, 1, 2].map(|index| partitions.series(&[FETCH_KINDS[index]])),
        }
    }

    pub(crate) fn request(&self, context: FetchContext, named: usize) {
        let index = match context {
            FetchContext::Sessionless => 0,
            FetchContext::Full { .. } => 1,
            FetchContext::Incremental { .. } => 2,
        };
        self.requests[index].inc();
        self.partitions[index].add(named as u64);
    }

    pub(crate) fn session_error(&self) {
        self.requests[3].inc();
    }
}

impl Broker {
    /// The fetch counters, made on first use.
    pub(crate) fn fetch_metrics(&self) -> &'static FetchMetrics {
        static METRICS: OnceLock<FetchMetrics> = OnceLock::new();
        METRICS.get_or_init(FetchMetrics::new)
    }

    fn collect_groups(&self, page: &mut Exposition) {
        // Committed offsets are copied out first, so the offsets lock is not held while the
        // partitions' high watermarks are read.
        let committed: Vec<(String, String, i32, i64)> = {
            let offsets = self.lock_offsets();
            offsets
                .groups()
                .into_iter()
                .flat_map(|group| {
                    offsets
                        .group(&group)
                        .into_iter()
                        .map(|(topic, partition, committed)| {
                            (group.clone(), topic.to_string(), partition, committed.offset)
                        })
                        .collect::<Vec<_>>()
                })
                .collect()
        };
        page.family(
            "tidewater_consumer_group_lag",
            "The partition's high watermark minus the group's committed offset.",
            MetricType::Gauge,
        );
        for (group, topic, partition, offset) in &committed {
            let Ok(log) = self.partition(topic, *partition).map(|partition| partition.log.clone()) else {
                continue;
            };
            let lag = (self.high_watermark(&log) - offset).max(0);
            let partition = partition.to_string();
            let labels =
                [("group", group.as_str()), ("topic", topic.as_str()), ("partition", partition.as_str())];
            page.sample("tidewater_consumer_group_lag", &labels, lag as f64);
        }
        let members = self.lock_groups().member_counts();
        page.family("tidewater_consumer_group_members", "Members of the consumer group.", MetricType::Gauge);
        for (group, count) in members {
            page.sample("tidewater_consumer_group_members", &[("group", group.as_str())], count as f64);
        }
    }
}
