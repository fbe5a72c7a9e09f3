//! The client commands, `tidewater topic`, `produce` and `consume` (a small kcat) and `group`
//! (a small kafka-consumer-groups).
//!
//! They are ordinary Kafka clients built on librdkafka (the `rdkafka` crate) and
//! `tidewater_client`, and never reach into the embedded broker, so they work the same against
//! `tidewater serve`, Apache Kafka or Redpanda. This module owns what they share: the
//! [`Connection`] resolved from the cluster flags (`tidewater_client::ClusterArgs`) with the
//! commands' own librdkafka settings, and the metadata lookup that turns a topic name into its
//! partitions, with a clear error when the topic does not exist or the cluster cannot be reached
//! in time.
//!
//! Nothing here keeps state between runs. No command joins a consumer group; only
//! `group reset-offsets --execute` and `group delete` change a group's committed offsets.

pub mod acl;
pub mod consume;
pub mod format;
pub mod group;
pub mod produce;
pub mod progress;
pub mod topic;
pub mod user;

use std::time::Duration;

use anyhow::Context;
use rdkafka::client::{Client, ClientContext};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientConfig;
use tidewater_client::{ClusterArgs, ClusterConfig};

/// What every client command's librdkafka configuration starts with (see
/// [`Connection::client_config`]).
const COMMAND_BASE_SETTINGS: [(&str, &str); 2] =
    [("client.id", "tidewater-cli"), ("allow.auto.create.topics", "false")];

/// The cluster a command talks to, from its flags, and how long it waits for it.
#[derive(Debug, Clone)]
pub struct Connection {
    pub cluster: ClusterConfig,
    timeout: Duration,
}

impl Connection {
    /// Resolves the flags: reads the client config file and checks every property.
    pub fn new(args: &ClusterArgs) -> anyhow::Result<Connection> {
        Ok(Connection { cluster: args.cluster_config()?, timeout: args.timeout() })
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The bootstrap servers, for messages.
    pub fn brokers(&self) -> &str {
        &self.cluster.bootstrap_servers
    }

    /// librdkafka's configuration for a client command: [`COMMAND_BASE_SETTINGS`], then
    /// `settings`, then the user's properties (client config file, `-X`), which win.
    ///
    /// `allow.auto.create.topics=false`: a metadata request for a topic that does not exist must
    /// not create it (brokers with auto.create.topics.enable would), or `describe` and `consume`
    /// of a mistyped name would leave a new empty topic behind instead of saying it does not
    /// exist.
    pub fn client_config(&self, settings: &[(&str, &str)]) -> ClientConfig {
        let mut all = COMMAND_BASE_SETTINGS.to_vec();
        all.extend_from_slice(settings);
        self.cluster.client_config(&all)
    }

    /// An admin client with the commands' base settings and the user's properties, for the
    /// commands that send admin requests (`topic`, `user`, `acl`).
    pub fn admin_client(&self) -> anyhow::Result<rdkafka::admin::AdminClient<CliContext>> {
        self.client_config(&[])
            .create_with_context(CliContext::default())
            .context("creating the Kafka admin client")
    }

    /// A consumer that reads by explicit assignment and never commits: no auto-commit, no offset
    /// store, and an error (not a silent jump) when a start offset is out of range. librdkafka
    /// needs a `group.id` to build a consumer; `settings` carries it and anything else the caller
    /// needs, and the user's properties are applied last so they win over both.
    pub fn assign_only_consumer(
        &self,
        settings: &[(&str, &str)],
    ) -> anyhow::Result<rdkafka::consumer::BaseConsumer<CliContext>> {
        let mut all = COMMAND_BASE_SETTINGS.to_vec();
        all.extend([
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
            ("auto.offset.reset", "error"),
        ]);
        all.extend_from_slice(settings);
        self.cluster
            .consumer_config(&all)
            .create_with_context(CliContext::default())
            .context("creating the Kafka consumer")
    }
}

/// One partition of a topic as the cluster's metadata describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionInfo {
    pub id: i32,
    /// The node id of the partition's leader; -1 while it has none.
    pub leader: i32,
    pub replicas: Vec<i32>,
    pub in_sync_replicas: Vec<i32>,
}

/// Every topic name in the cluster, sorted.
pub fn topic_names<C: ClientContext>(
    client: &Client<C>,
    connect: &Connection,
) -> anyhow::Result<Vec<String>> {
    let metadata =
        client.fetch_metadata(None, connect.timeout()).map_err(|error| unreachable(connect, error))?;
    let mut names: Vec<String> = metadata.topics().iter().map(|topic| topic.name().to_string()).collect();
    names.sort();
    Ok(names)
}

/// The partitions of `topic`, sorted by id; an error if the topic does not exist.
pub fn topic_partitions<C: ClientContext>(
    client: &Client<C>,
    connect: &Connection,
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

/// The ids of `partitions` (a topic's, from [`topic_partitions`]) a command works on: `chosen`
/// alone, which must be one of them, or all.
pub fn chosen_partitions(
    partitions: &[PartitionInfo],
    topic: &str,
    chosen: Option<i32>,
) -> anyhow::Result<Vec<i32>> {
    match chosen {
        Some(partition) => {
            anyhow::ensure!(
                partitions.iter().any(|known| known.id == partition),
                "topic {topic:?} has no partition {partition} (it has {} partitions)",
                partitions.len()
            );
            Ok(vec![partition])
        }
        None => Ok(partitions.iter().map(|partition| partition.id).collect()),
    }
}

/// The error for a metadata request that failed, which almost always means no broker answered
/// or none let this client in (librdkafka reports a refused login or a failed TLS handshake
/// that way too, after the same timeout).
pub fn unreachable(connect: &Connection, error: KafkaError) -> anyhow::Error {
    anyhow::anyhow!(
        "no answer from the cluster at {} within {} ms: {error} (is it running? if it requires TLS or \
         SASL, check security.protocol, the certificates and the credentials given with \
         --client-config or -X)",
        connect.brokers(),
        connect.timeout().as_millis()
    )
}

/// Builds the tokio runtime the async admin futures of `rdkafka` are driven on. One thread is
/// plenty: librdkafka does the network I/O on its own threads and the futures only wait.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the async runtime")
}

/// The librdkafka context of the client commands: every component's. librdkafka reports trouble
/// outside any one request (a refused connection, all brokers down) as errors and retries by
/// itself, over and over; the first of each kind is a warning on stderr, repeats go to the debug
/// log, so a user sees why a command is slow without a screenful of the same line.
/// End-of-partition notices, which `consume --exit-at-end` asks for, are not errors at all.
/// librdkafka's own log lines go to the debug log (`--log-level debug`, with `-X debug=...` for
/// more of them).
pub type CliContext = tidewater_client::QuietContext;
