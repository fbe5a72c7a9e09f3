//! `tidewater capture`: capture topics to Hive-partitioned Parquet files (the cold path).
//!
//! Registration commands (`create`, `pause`, `resume`, `delete`) write to the captures topic;
//! `tidewater serve` follows it and runs every capture that is not paused. `list` and
//! `describe` read the definitions and each instance's latest status record (state, latest
//! error, counters). `run` runs one capture in this process against any Kafka-compatible
//! cluster until Ctrl-C or SIGTERM; instances started with the same name share the topic's
//! partitions through one consumer group. The logic lives in `tidewater_capture`; this module
//! turns flags into definitions and prints.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use tidewater_capture::definition::{DEFAULT_WINDOW_BYTES, DEFAULT_WINDOW_SECS};
use tidewater_capture::registry::{Registry, StatusRecord, STATUS_STALE_MS};
use tidewater_capture::{CaptureDefinition, CaptureStats, ColumnMode};
use tidewater_cli::Connection;
use tidewater_client::{now_ms, ClusterArgs};

#[derive(Debug, Args)]
pub(crate) struct CaptureArgs {
    #[command(flatten)]
    pub(crate) connect: ClusterArgs,
    #[command(subcommand)]
    pub(crate) command: CaptureCommand,
}

#[derive(Debug, Subcommand)]
pub(crate) enum CaptureCommand {
    /// Register a capture for `tidewater serve` to run (replacing one with the same name).
    Create(SettingsArgs),
    /// List captures with their state and counters.
    List,
    /// Show a capture's settings and each instance's state, latest error and counters.
    Describe { name: String },
    /// Stop capturing; open files are written and committed, and `resume` carries on from there.
    Pause { name: String },
    /// Start capturing again.
    Resume { name: String },
    /// Remove a capture. Its files stay, and its consumer group's offsets stay until
    /// `tidewater group delete`.
    Delete { name: String },
    /// Run a capture in this process until Ctrl-C or SIGTERM, with no registration. Start
    /// several with the same name to share the topic's partitions (one consumer group,
    /// `tidewater-capture-NAME`).
    Run(RunArgs),
}

/// `capture run`: a capture's settings and the admin listener (its counters on /metrics).
#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    #[command(flatten)]
    settings: SettingsArgs,
    #[command(flatten)]
    admin: crate::admin::AdminArgs,
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
    /// environment variables of the process that runs the capture; AWS_ENDPOINT_URL for an
    /// S3-compatible store).
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
    /// The file format; Parquet is the only one.
    #[arg(long, value_enum, default_value_t = FormatArg::Parquet)]
    format: FormatArg,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ColumnsArg {
    Raw,
    Json,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum FormatArg {
    Parquet,
}

impl SettingsArgs {
    fn definition(self) -> CaptureDefinition {
        let FormatArg::Parquet = self.format;
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
    let registry = Registry::new(connect.cluster.clone(), connect.timeout());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("tidewater-capture")
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        match args.command {
            CaptureCommand::Create(settings) => {
                let definition = settings.definition();
                registry.ensure_topics().await?;
                registry.put(&definition).await?;
                println!("created capture {} of {} to {}", definition.name, definition.topic, definition.to);
                Ok(())
            }
            CaptureCommand::List => list(&registry),
            CaptureCommand::Describe { name } => describe(&registry, &name),
            CaptureCommand::Pause { name } => set_paused(&registry, &name, true).await,
            CaptureCommand::Resume { name } => set_paused(&registry, &name, false).await,
            CaptureCommand::Delete { name } => {
                let definition = registry.get(&name)?;
                registry.delete(&name).await?;
                println!(
                    "deleted capture {name}; its files stay, and its consumer group {} keeps its offsets until `tidewater group delete`",
                    definition.group_id()
                );
                Ok(())
            }
            CaptureCommand::Run(run) => run_one(connect, run.settings.definition(), &run.admin).await,
        }
    })
}

async fn set_paused(registry: &Registry, name: &str, paused: bool) -> anyhow::Result<()> {
    let mut definition = registry.get(name)?;
    definition.paused = paused;
    registry.put(&definition).await?;
    println!("{} capture {name}", if paused { "paused" } else { "resumed" });
    Ok(())
}

/// The status records of instances that reported recently.
fn live_statuses(statuses: &[StatusRecord], name: &str, now: i64) -> Vec<StatusRecord> {
    statuses
        .iter()
        .filter(|status| status.capture == name && now - status.updated_at_ms <= STATUS_STALE_MS)
        .cloned()
        .collect()
}

fn state_of(definition: &CaptureDefinition, live: &[StatusRecord]) -> String {
    if definition.paused {
        return "paused".to_string();
    }
    if live.is_empty() {
        return "not running".to_string();
    }
    let failing = live.iter().filter(|status| status.state == "failed" || status.detail.is_some()).count();
    if failing > 0 {
        format!("error ({failing} of {} instances)", live.len())
    } else {
        format!("running ({} instances)", live.len())
    }
}

fn list(registry: &Registry) -> anyhow::Result<()> {
    let definitions = registry.load()?;
    let statuses = registry.statuses().unwrap_or_default();
    let now = now_ms();
    println!("{:<24} {:<20} {:<32} {:<24} {:>10} {:>8}", "NAME", "TOPIC", "TO", "STATE", "RECORDS", "FILES");
    for (name, definition) in &definitions {
        let live = live_statuses(&statuses, name, now);
        println!(
            "{:<24} {:<20} {:<32} {:<24} {:>10} {:>8}",
            name,
            definition.topic,
            definition.to,
            state_of(definition, &live),
            live.iter().map(|status| status.counters.records_written).sum::<u64>(),
            live.iter().map(|status| status.counters.files_written).sum::<u64>(),
        );
    }
    Ok(())
}

fn describe(registry: &Registry, name: &str) -> anyhow::Result<()> {
    let definition = registry.get(name)?;
    let statuses = registry.statuses().unwrap_or_default();
    let live = live_statuses(&statuses, name, now_ms());
    println!("capture:      {name}");
    println!("state:        {}", state_of(&definition, &live));
    println!("topic:        {}", definition.topic);
    println!("to:           {}", definition.to);
    println!("window:       {} s or {} bytes", definition.window_secs, definition.window_bytes);
    println!(
        "columns:      {}",
        match definition.columns {
            ColumnMode::Raw => "raw",
            ColumnMode::Json => "json",
        }
    );
    println!("group:        {}", definition.group_id());
    for status in &live {
        let counters = status.counters;
        println!("instance {}: {}", status.instance, status.state);
        if let Some(detail) = &status.detail {
            println!("  error:      {detail}");
        }
        println!(
            "  written:    {} records in {} files, {} bytes; skipped {} already captured",
            counters.records_written,
            counters.files_written,
            counters.bytes_written,
            counters.records_skipped
        );
        println!(
            "  json:       {} values not JSON objects, {} type conflicts",
            counters.non_json_values, counters.type_conflicts
        );
    }
    Ok(())
}

async fn run_one(
    connect: Connection,
    definition: CaptureDefinition,
    admin: &crate::admin::AdminArgs,
) -> anyhow::Result<()> {
    definition.validate().map_err(|error| anyhow::anyhow!("capture {}: {error}", definition.name))?;
    let admin = crate::admin::start_for_client_role(admin, &connect.cluster).await?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let stats = Arc::new(CaptureStats::default());
    tidewater_capture::metrics::register(&definition.name, &stats);
    let capture =
        tokio::spawn(tidewater_capture::run_capture(definition, connect.cluster.clone(), stats, stopped));
    crate::admin::AdminListener::set_ready(&admin);
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
