//! Command-line interface: one subcommand per role.

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
    /// Run Tidewater: open (or create) the data directory, recover every log in it, and run
    /// until Ctrl-C or SIGTERM.
    Serve(ServeArgs),
    /// Inspect log directories on disk (works while no server has them open).
    #[command(subcommand)]
    Log(LogCommand),
}

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
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
