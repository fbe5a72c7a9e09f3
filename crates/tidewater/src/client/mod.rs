//! The client commands, `tidewater topic`, `produce` and `consume` (a small kcat) and `group`
//! (a small kafka-consumer-groups).
//!
//! They are ordinary Kafka clients built on librdkafka (the `rdkafka` crate) and never reach
//! into the embedded broker, so they work the same against `tidewater serve`, Apache Kafka or
//! Redpanda. This module owns what they share: the librdkafka configuration built from
//! `--brokers`, `--timeout-ms` and `-X` properties, and the metadata lookup that turns a topic
//! name into its partitions, with a clear error when the topic does not exist or the cluster
//! cannot be reached in time.
//!
//! Nothing here keeps state between runs. No command joins a consumer group; only
//! `group reset-offsets --execute` and `group delete` change a group's committed offsets.

pub(crate) mod admin;
pub(crate) mod consume;
pub(crate) mod format;
pub(crate) mod group;
pub(crate) mod produce;
pub(crate) mod topic;

use std::time::Duration;

use anyhow::Context;
use rdkafka::client::{Client, ClientContext};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientConfig;

use crate::cli::ConnectArgs;

/// librdkafka's base configuration for every client command.
///
/// `allow.auto.create.topics=false`: a metadata request for a topic that does not exist must not
/// create it (brokers with auto.create.topics.enable would), or `describe` and `consume` of a
/// mistyped name would leave a new empty topic behind instead of saying it does not exist.
pub(crate) fn client_config(connect: &ConnectArgs) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &connect.brokers)
        .set("client.id", "tidewater-cli")
        .set("allow.auto.create.topics", "false");
    for property in &connect.properties {
        config.set(&property.key, &property.value);
    }
    config
}

/// A consumer that reads by explicit assignment and never commits: no auto-commit, no offset
/// store, and an error (not a silent jump) when a start offset is out of range. librdkafka needs a
/// `group.id` to build a consumer; `settings` carries it and anything else the caller needs, and
/// the user's `-X` properties are applied last so they win over both.
pub(crate) fn assign_only_consumer(
    connect: &ConnectArgs,
    settings: &[(&str, &str)],
) -> anyhow::Result<rdkafka::consumer::BaseConsumer<CliContext>> {
    let mut config = client_config(connect);
    config
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "error");
    for (key, value) in settings {
        config.set(*key, *value);
    }
    for property in &connect.properties {
        config.set(&property.key, &property.value);
    }
    config.create_with_context(CliContext::default()).context("creating the Kafka consumer")
}

impl ConnectArgs {
    pub(crate) fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms.max(1))
    }
}

/// librdkafka takes timeouts as a C `int` of milliseconds.
pub(crate) fn timeout_ms_for_librdkafka(timeout: Duration) -> i32 {
    i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX)
}

/// One partition of a topic as the cluster's metadata describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PartitionInfo {
    pub(crate) id: i32,
    /// The node id of the partition's leader; -1 while it has none.
    pub(crate) leader: i32,
    pub(crate) replicas: Vec<i32>,
    pub(crate) in_sync_replicas: Vec<i32>,
}

/// Every topic name in the cluster, sorted.
pub(crate) fn topic_names<C: ClientContext>(
    client: &Client<C>,
    connect: &ConnectArgs,
) -> anyhow::Result<Vec<String>> {
    let metadata =
        client.fetch_metadata(None, connect.timeout()).map_err(|error| unreachable(connect, error))?;
    let mut names: Vec<String> = metadata.topics().iter().map(|topic| topic.name().to_string()).collect();
    names.sort();
    Ok(names)
}

/// The partitions of `topic`, sorted by id; an error if the topic does not exist.
pub(crate) fn topic_partitions<C: ClientContext>(
    client: &Client<C>,
    connect: &ConnectArgs,
    topic: &str,
) -> anyhow::Result<Vec<PartitionInfo>> {
    let metadata =
        client.fetch_metadata(Some(topic), connect.timeout()).map_err(|error| unreachable(connect, error))?;
    let found = metadata
        .topics()
        .iter()
        .find(|candidate| candidate.name() == topic)
        .with_context(|| format!("the cluster's metadata does not mention topic {topic:?}"))?;
    if let Some(error) = found.error() {
        let code = RDKafkaErrorCode::from(error);
        if code == RDKafkaErrorCode::UnknownTopicOrPartition {
            anyhow::bail!("topic {topic:?} does not exist");
        }
        anyhow::bail!("looking up topic {topic:?}: {code}");
    }
    let mut partitions: Vec<PartitionInfo> = found
        .partitions()
        .iter()
        .map(|partition| PartitionInfo {
            id: partition.id(),
            leader: partition.leader(),
            replicas: partition.replicas().to_vec(),
            in_sync_replicas: partition.isr().to_vec(),
        })
        .collect();
    partitions.sort_by_key(|partition| partition.id);
    Ok(partitions)
}

/// The error for a metadata request that failed, which almost always means no broker answered.
fn unreachable(connect: &ConnectArgs, error: KafkaError) -> anyhow::Error {
    anyhow::anyhow!(
        "no answer from the cluster at {} within {} ms: {error}",
        connect.brokers,
        connect.timeout().as_millis()
    )
}

/// Builds the tokio runtime the async admin futures of `rdkafka` are driven on. One thread is
/// plenty: librdkafka does the network I/O on its own threads and the futures only wait.
pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the async runtime")
}

/// The librdkafka context of the client commands: the jobs runtime's. librdkafka reports trouble
/// outside any one request (a refused connection, all brokers down) as errors and retries by
/// itself, over and over; the first of each kind is a warning on stderr, repeats go to the debug
/// log, so a user sees why a command is slow without a screenful of the same line.
/// End-of-partition notices, which `consume --exit-at-end` asks for, are not errors at all.
/// librdkafka's own log lines go to the debug log (`--log-level debug`, with `-X debug=...` for
/// more of them).
pub(crate) type CliContext = tidewater_jobs::logging::QuietContext;
