//! Command-line interface: one subcommand per role.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use tidewater_log::FsyncPolicy;

#[derive(Debug, Parser)]
#[command(name = "tidewater", version, about = "Tidewater: an event streaming platform in one binary")]
pub(crate) struct Cli {
    /// Log filter for stderr (error, warn, info, debug, trace, or a RUST_LOG expression).
    #[arg(long, global = true, default_value = "info", env = "TIDEWATER_LOG")]
    pub(crate) log_level: String,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run Tidewater: open (or create) the data directory, recover every log in it, serve the
    /// Kafka protocol, and run until Ctrl-C or SIGTERM.
    Serve(ServeArgs),
    /// Inspect log directories on disk (works while no server has them open).
    #[command(subcommand)]
    Log(LogCommand),
}

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Address the Kafka listener binds to.
    #[arg(long, default_value = "127.0.0.1:9092", env = "TIDEWATER_KAFKA_LISTEN")]
    pub(crate) kafka_listen: SocketAddr,
    /// host:port clients are told to connect to (Kafka's advertised.listeners); defaults to the
    /// listen address.
    #[arg(long, env = "TIDEWATER_KAFKA_ADVERTISED")]
    pub(crate) kafka_advertised: Option<String>,
    /// This broker's node id, as clients see it in metadata.
    #[arg(long, default_value_t = 0)]
    pub(crate) node_id: i32,
    /// Create a topic when a producer or a metadata request names one that does not exist
    /// (Kafka auto.create.topics.enable).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub(crate) auto_create_topics: bool,
    /// Partitions of an auto-created topic (Kafka num.partitions).
    #[arg(long, default_value_t = 1)]
    pub(crate) default_partitions: i32,
    /// Largest request a client may send, in bytes (Kafka socket.request.max.bytes).
    #[arg(long, default_value_t = tidewater_kafka::frame::DEFAULT_MAX_REQUEST_BYTES)]
    pub(crate) max_request_bytes: usize,
    /// Connections open at once; more wait in the listen backlog.
    #[arg(long, default_value_t = tidewater_kafka::server::DEFAULT_MAX_CONNECTIONS)]
    pub(crate) max_connections: usize,
    /// Requests one connection may have in flight before the broker stops reading from it.
    #[arg(long, default_value_t = tidewater_kafka::server::DEFAULT_MAX_IN_FLIGHT_PER_CONNECTION)]
    pub(crate) max_in_flight_per_connection: usize,
    /// Close connections idle this many seconds (Kafka connections.max.idle.ms).
    #[arg(long, default_value_t = tidewater_kafka::server::DEFAULT_IDLE_TIMEOUT.as_secs())]
    pub(crate) idle_timeout_secs: u64,
    /// Largest record batch a producer may send, unless a topic overrides it (Kafka
    /// message.max.bytes).
    #[arg(long, default_value_t = tidewater_log::DEFAULT_MAX_BATCH_BYTES)]
    pub(crate) max_batch_bytes: usize,
    /// Where topic-partition logs live, one subdirectory each.
    #[arg(long, default_value = "tidewater-data", env = "TIDEWATER_DATA_DIR")]
    pub(crate) data_dir: PathBuf,
    /// When appends reach the disk: always (fsync before acknowledging, group-committed),
    /// interval[:ms] (fsync in the background; a power loss can lose one interval) or never
    /// (only on segment roll and shutdown; a power loss can lose everything since the last roll).
    #[arg(long, default_value = "always", env = "TIDEWATER_FSYNC")]
    pub(crate) fsync: FsyncPolicy,
    /// Roll to a new segment file at this size (Kafka segment.bytes).
    #[arg(long, default_value_t = tidewater_log::DEFAULT_SEGMENT_BYTES)]
    pub(crate) segment_bytes: u64,
    /// Delete closed segments older than this many milliseconds; -1 keeps them forever
    /// (Kafka retention.ms).
    #[arg(long, default_value_t = tidewater_log::DEFAULT_RETENTION_MS, allow_negative_numbers = true)]
    pub(crate) retention_ms: i64,
    /// Delete the oldest closed segments while a partition is larger than this; -1 for no limit
    /// (Kafka retention.bytes).
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    pub(crate) retention_bytes: i64,
    /// Milliseconds between housekeeping passes (segment age, interval fsync, retention).
    #[arg(long, default_value_t = 1000)]
    pub(crate) housekeeping_interval_ms: u64,
}

#[derive(Debug, Subcommand)]
pub(crate) enum LogCommand {
    /// Re-read every segment of one topic-partition directory and check every batch's CRC and
    /// offset continuity. Exits non-zero on corruption, naming the file and byte position.
    Verify {
        /// A topic-partition directory, such as tidewater-data/orders-0.
        dir: PathBuf,
    },
}
