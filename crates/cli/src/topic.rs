//! `tidewater topic ...`: topic administration against any Kafka-compatible cluster.
//!
//! Reads go through metadata and DescribeConfigs (the `rdkafka` crate's safe API); changes go
//! through `tidewater_client::admin`, which reports the broker's own error message. Every request waits
//! at most `--timeout-ms`. Output is plain text meant for people and for `grep`: `list` prints
//! one name per line, `describe` prints partitions and then configs, each config with the
//! place its value comes from.

use std::fmt::Write as _;

use anyhow::Context;
use clap::{Args, Subcommand};
use rdkafka::admin::{AdminOptions, ConfigEntry, ConfigSource, ResourceSpecifier};
use tidewater_client::{ClusterArgs, KeyValue};

use tidewater_client::admin::{self as raw, ConfigChange};

use crate::progress::{Progress, Unit};
use crate::{topic_names, topic_partitions, Connection, PartitionInfo};

#[derive(Debug, Args)]
pub struct TopicArgs {
    #[command(flatten)]
    pub connect: ClusterArgs,
    #[command(subcommand)]
    pub command: TopicCommand,
}

#[derive(Debug, Subcommand)]
pub enum TopicCommand {
    /// Create a topic (CreateTopics).
    Create {
        /// The topic's name.
        name: String,
        /// Number of partitions; the broker's default (num.partitions) when omitted.
        #[arg(long, short = 'p')]
        partitions: Option<u32>,
        /// Copies of each partition; the broker's default (default.replication.factor) when
        /// omitted. A single Tidewater broker accepts only 1.
        #[arg(long, short = 'r')]
        replication_factor: Option<u16>,
        /// A topic config such as retention.ms=3600000; may be repeated.
        #[arg(long, short = 'c', value_name = "KEY=VALUE")]
        config: Vec<KeyValue>,
    },
    /// List topic names, one per line.
    List,
    /// Show a topic's partitions (leader, replicas, in-sync replicas) and its configs, each
    /// marked with where its value comes from.
    Describe {
        /// The topic's name.
        name: String,
    },
    /// Change topic configs in place (IncrementalAlterConfigs): configs not named keep their
    /// values.
    Alter {
        /// The topic's name.
        name: String,
        /// Set a config, such as retention.ms=3600000; may be repeated.
        #[arg(long, short = 'c', value_name = "KEY=VALUE")]
        config: Vec<KeyValue>,
        /// Remove a topic override so the config falls back to the broker's default; may be
        /// repeated.
        #[arg(long, value_name = "KEY")]
        delete_config: Vec<String>,
    },
    /// Delete a topic and all its records (DeleteTopics).
    Delete {
        /// The topic's name.
        name: String,
    },
    /// Delete a partition's records before an offset (DeleteRecords, as kafka-delete-records.sh):
    /// the partition's log start offset moves up to it and offsets never change. Consumers of a
    /// deleted position start again at the new log start offset.
    DeleteRecords {
        /// The topic's name.
        name: String,
        /// The partition; may be repeated (each gets the same --before).
        #[arg(long, short = 'p', required_unless_present = "all_partitions")]
        partition: Vec<i32>,
        /// Every partition of the topic, instead of --partition (progress is shown per partition).
        #[arg(long, conflicts_with = "partition")]
        all_partitions: bool,
        /// The first offset to keep; -1 (or `end`) deletes every record up to the high watermark.
        #[arg(long, value_parser = parse_before_offset, allow_hyphen_values = true)]
        before: i64,
    },
    /// Grow a topic to COUNT partitions in total (CreatePartitions). Partitions cannot be
    /// removed, and keys may map to different partitions afterwards.
    AddPartitions {
        /// The topic's name.
        name: String,
        /// The new total number of partitions.
        #[arg(long)]
        count: u32,
    },
}

pub fn run(args: TopicArgs) -> anyhow::Result<()> {
    let connect = &Connection::new(&args.connect)?;
    let timeout = connect.timeout();
    let admin = connect.admin_client()?;
    match args.command {
        TopicCommand::Create { name, partitions, replication_factor, config } => {
            let topic = raw::NewTopic {
                name: name.clone(),
                partitions: partitions.map_or(-1, |count| count.min(i32::MAX as u32) as i32),
                replication_factor: replication_factor.map_or(-1, i32::from),
                configs: config.into_iter().map(|entry| (entry.key, entry.value)).collect(),
            };
            raw::create_topic(admin.inner(), &topic, timeout)
                .with_context(|| format!("creating topic {name:?}"))?;
            println!("created topic {name}");
        }
        TopicCommand::List => {
            for name in topic_names(admin.inner(), connect)? {
                println!("{name}");
            }
        }
        TopicCommand::Describe { name } => {
            let partitions = topic_partitions(admin.inner(), connect, &name)?;
            let options = AdminOptions::new().request_timeout(Some(timeout));
            let results = super::runtime()?
                .block_on(admin.describe_configs([&ResourceSpecifier::Topic(&name)], &options))
                .with_context(|| format!("describing the configs of topic {name:?}"))?;
            let resource = results
                .into_iter()
                .next()
                .context("the DescribeConfigs answer is empty")?
                .map_err(|code| anyhow::anyhow!("describing the configs of topic {name:?}: {code}"))?;
            print!("{}", describe_text(&name, &partitions, &resource.entries));
        }
        TopicCommand::Alter { name, config, delete_config } => {
            anyhow::ensure!(
                !config.is_empty() || !delete_config.is_empty(),
                "nothing to change: give --config KEY=VALUE or --delete-config KEY"
            );
            let changes: Vec<ConfigChange<'_>> = config
                .iter()
                .map(|entry| ConfigChange::Set { name: &entry.key, value: &entry.value })
                .chain(delete_config.iter().map(|key| ConfigChange::Delete { name: key }))
                .collect();
            raw::alter_topic_configs(admin.inner(), &name, &changes, timeout)
                .with_context(|| format!("altering the configs of topic {name:?}"))?;
            println!("altered topic {name}");
        }
        TopicCommand::Delete { name } => {
            raw::delete_topic(admin.inner(), &name, timeout)
                .with_context(|| format!("deleting topic {name:?}"))?;
            println!("deleted topic {name}");
        }
        TopicCommand::DeleteRecords { name, partition, all_partitions, before } => {
            let partition: Vec<i32> = match all_partitions {
                true => topic_partitions(admin.inner(), connect, &name)?.iter().map(|info| info.id).collect(),
                false => partition,
            };
            // One request per partition, so that deleting over many partitions (each removing
            // its whole segments) shows how far it got, and one refused partition does not
            // hold back the others.
            let progress = Progress::new(
                format!("deleting records of {name}"),
                Some(partition.len() as u64),
                Unit::Partitions,
            );
            let mut refused = Vec::new();
            for (done, &partition) in partition.iter().enumerate() {
                let outcomes = raw::delete_records(admin.inner(), &name, &[(partition, before)], timeout)
                    .with_context(|| format!("deleting records of topic {name:?} partition {partition}"))?;
                for outcome in outcomes {
                    match outcome.error {
                        None => println!(
                            "topic {name} partition {}: records before offset {} deleted",
                            outcome.partition, outcome.low_watermark
                        ),
                        Some(code) => refused.push(format!("partition {}: {code}", outcome.partition)),
                    }
                }
                progress.set(done as u64 + 1);
            }
            progress.finish();
            anyhow::ensure!(refused.is_empty(), "deleting records of topic {name:?}: {}", refused.join("; "));
        }
        TopicCommand::AddPartitions { name, count } => {
            raw::create_partitions(admin.inner(), &name, count as usize, timeout)
                .with_context(|| format!("growing topic {name:?} to {count} partitions"))?;
            println!("topic {name} now has {count} partitions");
        }
    }
    Ok(())
}

/// `--before`: an offset, or -1 or `end` for the high watermark.
fn parse_before_offset(text: &str) -> Result<i64, String> {
    if text == "end" {
        return Ok(-1);
    }
    match text.parse::<i64>() {
        Ok(offset) if offset >= -1 => Ok(offset),
        _ => Err(format!(
            "{text:?} is not an offset: give a number from 0, or -1 or `end` for the high watermark"
        )),
    }
}

/// The text `topic describe` prints: a summary line, one line per partition, then every config
/// sorted by name with where its value comes from.
fn describe_text(name: &str, partitions: &[PartitionInfo], configs: &[ConfigEntry]) -> String {
    let replication_factor = partitions.iter().map(|partition| partition.replicas.len()).max().unwrap_or(0);
    let mut text = format!(
        "topic {name}: {} partition{}, replication factor {replication_factor}\n",
        partitions.len(),
        if partitions.len() == 1 { "" } else { "s" }
    );
    for partition in partitions {
        let _ = writeln!(
            text,
            "  partition {}: leader {}, replicas {:?}, in-sync {:?}",
            partition.id, partition.leader, partition.replicas, partition.in_sync_replicas
        );
    }
    text.push_str("configs:\n");
    let mut configs: Vec<&ConfigEntry> = configs.iter().collect();
    configs.sort_by(|left, right| left.name.cmp(&right.name));
    for config in configs {
        let value = match (&config.value, config.is_sensitive) {
            (_, true) => "(sensitive)",
            (Some(value), false) => value.as_str(),
            (None, false) => "(none)",
        };
        let _ = writeln!(text, "  {}={value} ({})", config.name, source_label(config));
    }
    text
}

/// Where a config's value comes from, in the words `describe` prints.
fn source_label(config: &ConfigEntry) -> &'static str {
    match config.source {
        ConfigSource::DynamicTopic => "set on topic",
        ConfigSource::DynamicBroker => "broker setting",
        ConfigSource::DynamicDefaultBroker => "cluster-wide setting",
        ConfigSource::StaticBroker => "broker config file",
        ConfigSource::Default => "default",
        ConfigSource::Unknown if config.is_default => "default",
        ConfigSource::Unknown => "unknown source",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, value: &str, source: ConfigSource) -> ConfigEntry {
        ConfigEntry {
            name: name.to_string(),
            value: Some(value.to_string()),
            is_default: source == ConfigSource::Default,
            source,
            is_read_only: false,
            is_sensitive: false,
        }
    }

    #[test]
    fn describe_text_lists_partitions_then_sorted_configs_with_their_source() {
        let partitions =
            [0, 1].map(|id| PartitionInfo { id, leader: 0, replicas: vec![0], in_sync_replicas: vec![0] });
        let configs = [
            entry("segment.bytes", "1024", ConfigSource::Default),
            entry("retention.ms", "60000", ConfigSource::DynamicTopic),
        ];
        assert_eq!(
            describe_text("orders", &partitions, &configs),
            "topic orders: 2 partitions, replication factor 1\n\
             \x20 partition 0: leader 0, replicas [0], in-sync [0]\n\
             \x20 partition 1: leader 0, replicas [0], in-sync [0]\n\
             configs:\n\
             \x20 retention.ms=60000 (set on topic)\n\
             \x20 segment.bytes=1024 (default)\n"
        );
    }

    #[test]
    fn describe_text_hides_sensitive_values() {
        let mut secret = entry("sasl.jaas.config", "password=hunter2", ConfigSource::StaticBroker);
        secret.is_sensitive = true;
        let text = describe_text("t", &[], &[secret]);
        assert!(text.ends_with("  sasl.jaas.config=(sensitive) (broker config file)\n"), "{text}");
        assert!(text.starts_with("topic t: 0 partitions, replication factor 0\n"), "{text}");
    }
}
