//! `tidewater capture`: capture topics to Hive-partitioned Parquet files (the cold path).
//!
//! `run` runs one capture in this process against any Kafka-compatible cluster until Ctrl-C or
//! SIGTERM; instances started with the same name share the topic's partitions through one
//! consumer group. The logic lives in `tidewater_capture`; this module turns flags into a
//! definition and waits for a signal.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use tidewater_capture::definition::{DEFAULT_WINDOW_BYTES, DEFAULT_WINDOW_SECS};
use tidewater_capture::{CaptureDefinition, CaptureStats, ColumnMode};
use tidewater_cli::Connection;
use tidewater_client::ClusterArgs;

#[derive(Debug, Args)]
pub(crate) struct CaptureArgs {
    #[command(flatten)]
    pub(crate) connect: ClusterArgs,
    #[command(subcommand)]
    pub(crate) command: CaptureCommand,
}

#[derive(Debug, Subcommand)]
pub(crate) enum CaptureCommand {
    /// Run a capture in this process until Ctrl-C or SIGTERM. Start several with the same name
    /// to share the topic's partitions (one consumer group, `tidewater-capture-NAME`).
    Run(SettingsArgs),
}

/// A capture's settings as flags.
#[derive(Debug, Args)]
pub(crate) struct SettingsArgs {
    /// The capture's name (letters, digits, '.', '_', '-'); it names the consumer group.
    name: String,
    /// The topic to capture.
    #[arg(long, short = 't')]
    topic: String,
    /// Where files go: file:///absolute/dir or s3://bucket/prefix (S3 settings from the AWS_*
    /// environment variables; AWS_ENDPOINT_URL for an S3-compatible store).
    #[arg(long, value_name = "URL")]
    to: String,
    /// Close a partition's file at most this many seconds after its first record arrived
    /// (also when the partition goes quiet).
    #[arg(long, default_value_t = DEFAULT_WINDOW_SECS)]
    window_secs: u64,
    /// Close a partition's file once its records (keys, values, headers) weigh this many bytes.
    #[arg(long, default_value_t = DEFAULT_WINDOW_BYTES)]
    window_bytes: u64,
    /// Columns: raw (topic, partition, offset, timestamp, key, value, headers) or json (those
    /// plus the value's top-level JSON fields, typed).
    #[arg(long, value_enum, default_value_t = ColumnsArg::Raw)]
    columns: ColumnsArg,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ColumnsArg {
    Raw,
    Json,
}

impl SettingsArgs {
    fn definition(self) -> CaptureDefinition {
        CaptureDefinition {
            name: self.name,
            topic: self.topic,
            to: self.to,
            window_secs: self.window_secs,
            window_bytes: self.window_bytes,
            columns: match self.columns {
                ColumnsArg::Raw => ColumnMode::Raw,
                ColumnsArg::Json => ColumnMode::Json,
            },
            paused: false,
        }
    }
}

pub(crate) fn run(args: CaptureArgs) -> anyhow::Result<()> {
    let connect = Connection::new(&args.connect)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("tidewater-capture")
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        match args.command {
            CaptureCommand::Run(settings) => run_one(connect, settings.definition()).await,
        }
    })
}

async fn run_one(connect: Connection, definition: CaptureDefinition) -> anyhow::Result<()> {
    definition.validate().map_err(|error| anyhow::anyhow!("capture {}: {error}", definition.name))?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let stats = Arc::new(CaptureStats::default());
    let capture =
        tokio::spawn(tidewater_capture::run_capture(definition, connect.cluster.clone(), stats, stopped));
    let signal = crate::serve::ShutdownSignal::install()?.wait();
    tokio::pin!(capture);
    tokio::select! {
        result = &mut capture => return result.context("the capture failed")?,
        signal = signal => tracing::info!(signal = signal?, "stopping the capture"),
    }
    let _ = stop.send(true);
    tokio::time::timeout(Duration::from_secs(60), capture)
        .await
        .context("the capture did not stop within 60 s")?
        .context("the capture failed")?
}
