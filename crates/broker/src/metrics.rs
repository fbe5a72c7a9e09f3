//! The broker's metrics. Per-topic counters ([`TopicMetrics`]) are atomics that the produce and
//! fetch paths add to, found once when the topic is opened; everything that already lives in the
//! broker's state (high watermarks, log sizes, group lag and members) is read when `/metrics` is
//! scraped, by [`Broker`]'s [`Collect`], and never copied.
//!
//! Group lag is Kafka's: the partition's high watermark minus the group's committed offset, as
//! `tidewater group describe` and `kafka-consumer-groups.sh` show it.

use std::sync::Arc;

use tidewater_metrics::{global, Collect, Counter, Exposition, MetricType};

use crate::broker::Broker;
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
    }
}

impl Broker {
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
