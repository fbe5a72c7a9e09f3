//! `tidewater query`: streaming SQL jobs. `query test` runs a query over a file of events with no
//! server at all and compares the output with an expected file (the local testing Azure Stream
//! Analytics users ask for; the formats are `tidewater_sql::local`'s; results are written as
//! they are produced, not held). `query run` runs a job against any Kafka-compatible cluster,
//! exactly once or at least once (`tidewater_jobs::query`).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use tidewater_client::{ClusterArgs, ClusterConfig};
use tidewater_jobs::definitions::STATUS_STALE_MS;
use tidewater_jobs::query::reference::{self, validate_sources, ReferenceLocation, ReferenceSource};
use tidewater_jobs::query::registry::{LatePolicyName, QueryStatus};
use tidewater_jobs::query::runner::StartPosition;
use tidewater_jobs::query::{Delivery, QueryDefinition, QueryRegistry};
use tidewater_sql::{local, JobOptions, LatePolicy};

#[derive(Debug, Subcommand)]
pub(crate) enum QueryCommand {
    /// Run QUERY over a JSON Lines file of events, print every output row (and late events and
    /// event errors) as JSON lines as they are produced, and with --expect compare them with an
    /// expected file.
    /// Exits non-zero on diagnostics, bad input or a mismatch.
    Test(TestArgs),
    /// Run QUERY against a Kafka-compatible cluster until Ctrl-C or SIGTERM: inputs are the
    /// topics its FROM clauses name (JSON values), each INTO names an output topic. Output rows
    /// and the job's checkpoints are committed together in Kafka transactions every
    /// --checkpoint-interval-ms, so a consumer reading the outputs with read_committed sees each
    /// row exactly once, across crashes and restarts; --delivery at-least-once writes each row
    /// as soon as it is produced instead (see --delivery).
    Run(RunArgs),
    /// Register a query job in the cluster; `tidewater serve` runs it (as `run` does, with its
    /// --delivery) until it is stopped or deleted. The query is compiled first: diagnostics
    /// refuse it.
    Create(CreateArgs),
    /// List registered query jobs with their last checkpoint's counters.
    List(RegistryArgs),
    /// Show a job's definition and last checkpoint (when, counters, input offsets).
    Describe(NamedArgs),
    /// Stop a job; its last checkpoint stays, so `start` resumes exactly where it stopped.
    Stop(NamedArgs),
    /// Start a stopped job again.
    Start(NamedArgs),
    /// Remove a job from the registry (its output topics and checkpoints stay).
    Delete(NamedArgs),
}

#[derive(Debug, Args)]
pub(crate) struct RegistryArgs {
    #[command(flatten)]
    connect: ClusterArgs,
}

#[derive(Debug, Args)]
pub(crate) struct NamedArgs {
    #[command(flatten)]
    connect: ClusterArgs,
    /// The job's name.
    name: String,
}

#[derive(Debug, Args)]
pub(crate) struct CreateArgs {
    #[command(flatten)]
    connect: ClusterArgs,
    /// The job's name (letters, digits, '.', '_', '-').
    name: String,
    /// The query file (Azure Stream Analytics SQL).
    #[arg(long)]
    file: PathBuf,
    /// Where inputs start on the job's first run: earliest, latest or @TIME (epoch ms or
    /// ISO-8601).
    #[arg(long, default_value = "earliest", value_parser = StartPosition::parse)]
    from: StartPosition,
    /// How often output rows and the job's state are committed (ms).
    #[arg(long, default_value_t = 1000)]
    checkpoint_interval_ms: u64,
    /// Write late events to this topic.
    #[arg(long)]
    late_topic: Option<String>,
    /// Register the job stopped.
    #[arg(long)]
    stopped: bool,
    /// Process each input partition number on its own, so that several servers running the
    /// registry share the job's partitions (see `query run --parallel`).
    #[arg(long)]
    parallel: bool,
    /// Replace a job of the same name (it restarts from its last checkpoint, which must fit the
    /// new query: change the name for a different query).
    #[arg(long)]
    replace: bool,
    #[command(flatten)]
    delivery: DeliveryArgs,
    #[command(flatten)]
    event_time: EventTimeArgs,
    #[command(flatten)]
    reference: ReferenceArgs,
}

/// Reference inputs: tables a query JOINs its streams with.
#[derive(Debug, Args)]
struct ReferenceArgs {
    /// Read input NAME as reference data, a table joined "as of now" (`JOIN NAME t ON s.key =
    /// t.key`, no time bound): from a topic keyed by the row's key (latest value per key wins, a
    /// tombstone deletes; followed live) or from a file (JSON lines, a JSON array or .csv with a
    /// header, read at start). Loaded whole before the first event and again at every restart.
    /// Repeat for several.
    #[arg(long = "reference", value_name = "NAME=topic:TOPIC|NAME=file:PATH", value_parser = ReferenceSource::parse)]
    references: Vec<ReferenceSource>,
}

impl ReferenceArgs {
    fn checked(&self) -> anyhow::Result<Vec<ReferenceSource>> {
        validate_sources(&self.references).map_err(anyhow::Error::msg)?;
        Ok(self.references.clone())
    }
}

#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    #[command(flatten)]
    connect: ClusterArgs,
    /// The query file (Azure Stream Analytics SQL).
    query: PathBuf,
    /// The job's name (its checkpoints and transactional id); default: the file's stem.
    #[arg(long)]
    name: Option<String>,
    /// Where inputs start on the job's first run (later runs resume from the checkpoint):
    /// earliest (a replay), latest, or @TIME (epoch ms or ISO-8601) for the first record at or
    /// after it.
    #[arg(long, default_value = "earliest", value_parser = StartPosition::parse)]
    from: StartPosition,
    /// How often output rows and the job's state are committed (ms): the output latency of an
    /// exactly-once job, and how much is recomputed after a crash (at least once: how many rows
    /// a crash may write twice).
    #[arg(long, default_value_t = 1000)]
    checkpoint_interval_ms: u64,
    /// Write late events (with the watermark they missed in a header) to this topic.
    #[arg(long)]
    late_topic: Option<String>,
    /// Process each input partition number on its own (like ASA's PARTITION BY PartitionId), so
    /// that several instances of the job share the partitions as a consumer group. Right for
    /// queries whose groups live in one partition (e.g. per device, input keyed by device id).
    /// Exactly once or at least once (--delivery).
    #[arg(long)]
    parallel: bool,
    #[command(flatten)]
    delivery: DeliveryArgs,
    #[command(flatten)]
    event_time: EventTimeArgs,
    #[command(flatten)]
    reference: ReferenceArgs,
    #[command(flatten)]
    admin: crate::admin::AdminArgs,
}

/// What a job promises about its output rows.
#[derive(Debug, Args)]
struct DeliveryArgs {
    /// exactly-once: rows are committed with the checkpoint in a Kafka transaction, so a
    /// read_committed consumer sees each row once, across crashes, but only at the next
    /// checkpoint (up to --checkpoint-interval-ms later). at-least-once: each row is produced as
    /// soon as the query emits it (idempotent producer, no transaction) and is readable at once;
    /// input offsets and state are checkpointed only after every earlier row is acknowledged, so
    /// a crash loses no row but may write again the rows since the last checkpoint (consumers
    /// must tolerate duplicates). Both reach about the same events/s; at-least-once spends some
    /// 30% more CPU on its smaller produce requests. With --parallel the same holds per instance:
    /// each waits for its rows' acknowledgements, then writes its partitions' checkpoints, then
    /// commits the group's offsets; a partition taken over resumes from its checkpoint.
    #[arg(long, default_value = "exactly-once", value_name = "exactly-once|at-least-once",
          value_parser = Delivery::parse)]
    delivery: Delivery,
}

#[derive(Debug, Args)]
pub(crate) struct TestArgs {
    /// The query file (Azure Stream Analytics SQL).
    query: PathBuf,
    /// Events, one JSON object per line. `@input`, `@partition` and `@arrival` keys steer an
    /// event; `{"@advance_processing_time": T}` advances processing time.
    #[arg(long)]
    input: PathBuf,
    /// Expected results in the same JSON lines format `query test` prints (the results are then
    /// also kept in memory, for the comparison; without it they are only written out).
    #[arg(long)]
    expect: Option<PathBuf>,
    #[command(flatten)]
    event_time: EventTimeArgs,
    /// Reference inputs read from files (a topic's records are given as `@reference` lines of
    /// --input instead).
    #[command(flatten)]
    reference: ReferenceArgs,
}

/// The event-time settings of a job.
#[derive(Debug, Args)]
struct EventTimeArgs {
    /// How far behind the newest event an event may arrive and still count as in order (ms).
    #[arg(long, default_value_t = 0)]
    out_of_order_ms: i64,
    /// Extra delay before windows close and events count as late (ms).
    #[arg(long, default_value_t = 0)]
    late_arrival_ms: i64,
    /// What happens to a late event: adjust its time to the watermark, or drop it.
    #[arg(long, value_enum, default_value_t = LatePolicyArg::Adjust)]
    late_policy: LatePolicyArg,
    /// A partition silent this long (processing time, ms) stops holding the watermark back.
    #[arg(long)]
    idle_partition_ms: Option<i64>,
    /// Inputs read with `TIMESTAMP BY ... OVER key`: a key silent this long (processing time,
    /// ms) is closed, its windows and matches emitted and its state dropped [default: 300000].
    #[arg(long, value_parser = clap::value_parser!(i64).range(1..))]
    idle_key_ms: Option<i64>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LatePolicyArg {
    Adjust,
    Drop,
}

pub(crate) fn run(command: QueryCommand) -> anyhow::Result<()> {
    match command {
        QueryCommand::Test(args) => test(args),
        QueryCommand::Run(args) => run_job(args),
        QueryCommand::Create(args) => {
            let connect = args.connect.clone();
            registry_command(&connect, |registry| create(registry, args))
        }
        QueryCommand::List(args) => {
            registry_command(&args.connect, |registry| async move { list(&registry) })
        }
        QueryCommand::Describe(args) => {
            registry_command(&args.connect, |registry| async move { describe(&registry, &args.name) })
        }
        QueryCommand::Stop(args) => {
            registry_command(&args.connect, |registry| set_stopped(registry, args.name, true))
        }
        QueryCommand::Start(args) => {
            registry_command(&args.connect, |registry| set_stopped(registry, args.name, false))
        }
        QueryCommand::Delete(args) => registry_command(&args.connect, |registry| async move {
            registry.get(&args.name)?;
            registry.delete(&args.name).await?;
            println!("deleted query job {}", args.name);
            Ok(())
        }),
    }
}

/// Runs a registry command on a small runtime.
fn registry_command<F, Fut>(connect: &ClusterArgs, command: F) -> anyhow::Result<()>
where
    F: FnOnce(QueryRegistry) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let registry = QueryRegistry::new(connect.cluster_config()?, connect.timeout());
    tidewater_cli::runtime()?.block_on(command(registry))
}

async fn create(registry: QueryRegistry, args: CreateArgs) -> anyhow::Result<()> {
    let sql =
        std::fs::read_to_string(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    let options = args.event_time.options();
    let definition = QueryDefinition {
        name: args.name.clone(),
        sql,
        out_of_order_tolerance_ms: options.out_of_order_tolerance_ms,
        late_arrival_tolerance_ms: options.late_arrival_tolerance_ms,
        late_policy: match options.late_policy {
            LatePolicy::Adjust => LatePolicyName::Adjust,
            LatePolicy::Drop => LatePolicyName::Drop,
        },
        idle_partition_timeout_ms: options.idle_partition_timeout_ms,
        idle_key_timeout_ms: args.event_time.idle_key_ms,
        start_from: args.from,
        checkpoint_interval_ms: args.checkpoint_interval_ms,
        late_topic: args.late_topic,
        parallel: args.parallel,
        delivery: args.delivery.delivery,
        stopped: args.stopped,
        references: args.reference.checked()?,
    };
    if let Err(error) = definition.validate() {
        anyhow::bail!("{}: {error}", args.file.display());
    }
    // A registered job's reference files are read by the process that runs it; they are
    // checked here, where `serve` usually runs too, so that a typo fails now.
    reference::file_tables(&definition.references)?;
    registry.ensure_topic().await?;
    if !args.replace && registry.load()?.contains_key(&definition.name) {
        anyhow::bail!("a query job named {:?} exists; pass --replace to replace it", definition.name);
    }
    registry.put(&definition).await?;
    println!("created query job {}", definition.name);
    Ok(())
}

async fn set_stopped(registry: QueryRegistry, name: String, stopped: bool) -> anyhow::Result<()> {
    let mut definition = registry.get(&name)?;
    definition.stopped = stopped;
    registry.put(&definition).await?;
    println!("{} query job {name}", if stopped { "stopped" } else { "started" });
    Ok(())
}

fn list(registry: &QueryRegistry) -> anyhow::Result<()> {
    let definitions = registry.load()?;
    let statuses = registry.statuses().unwrap_or_default();
    let now = tidewater_client::now_ms();
    println!(
        "{:<28} {:<8} {:>12} {:>10} {:>8} {:>8}  {:<16} RUNNERS",
        "NAME", "STATE", "EVENTS", "OUTPUTS", "LATE", "ERRORS", "LAST CHECKPOINT"
    );
    for (name, definition) in &definitions {
        let checkpoint =
            tidewater_jobs::query::runner::read_latest_checkpoint(registry_cluster(registry), name)?;
        let counts = checkpoint.as_ref().map(|record| record.counts).unwrap_or_default();
        println!(
            "{:<28} {:<8} {:>12} {:>10} {:>8} {:>8}  {:<16} {}",
            name,
            if definition.stopped { "stopped" } else { "active" },
            counts.events,
            counts.outputs,
            counts.late,
            counts.errors,
            checkpoint.map_or("never".to_string(), |record| format_age(record.written_at_ms)),
            runners_summary(&live_statuses(&statuses, name, now)),
        );
    }
    Ok(())
}

/// The status records of `name` that instances published recently, newest first.
fn live_statuses<'a>(statuses: &'a [QueryStatus], name: &str, now_ms: i64) -> Vec<&'a QueryStatus> {
    let mut live: Vec<&QueryStatus> = statuses
        .iter()
        .filter(|status| status.job == name && now_ms - status.updated_at_ms <= STATUS_STALE_MS)
        .collect();
    live.sort_by_key(|status| std::cmp::Reverse(status.updated_at_ms));
    live
}

/// What the instances running a job say of it, in a few words: `running on 1`, `restarting on
/// 1, running on 2`, or `none` when no `serve` reported it lately.
fn runners_summary(live: &[&QueryStatus]) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for status in live {
        *counts.entry(status.state.as_str()).or_default() += 1;
    }
    if counts.is_empty() {
        return "none".to_string();
    }
    counts.iter().map(|(state, count)| format!("{state} on {count}")).collect::<Vec<_>>().join(", ")
}

fn describe(registry: &QueryRegistry, name: &str) -> anyhow::Result<()> {
    let definition = registry.get(name)?;
    println!("query job:        {name}");
    println!(
        "state:            {}",
        if definition.stopped { "stopped" } else { "active (run by tidewater serve)" }
    );
    println!(
        "delivery:         {}",
        match definition.delivery {
            Delivery::ExactlyOnce => "exactly-once (rows visible at each checkpoint, once each)",
            Delivery::AtLeastOnce => "at-least-once (rows visible as produced; a restart may repeat some)",
        }
    );
    let statuses = registry.statuses().unwrap_or_default();
    let live = live_statuses(&statuses, name, tidewater_client::now_ms());
    if live.is_empty() {
        println!(
            "runners:          none reported in the last {} s (tidewater serve runs registered jobs)",
            STATUS_STALE_MS / 1000
        );
    }
    for status in &live {
        println!("runner {}: {}, {} events read there", status.instance, status.state, status.events);
        if let Some(failure) = &status.last_failure {
            println!("  last error ({}): {}", format_age(failure.at_ms), failure.message);
        }
    }
    println!("definition:\n{}", serde_json::to_string_pretty(&definition)?);
    match tidewater_jobs::query::runner::read_latest_checkpoint(registry_cluster(registry), name)? {
        None => println!("last checkpoint:  none yet"),
        Some(record) => {
            let counts = record.counts;
            println!(
                "last checkpoint:  {} (events {}, outputs {}, late {}, errors {})",
                format_age(record.written_at_ms),
                counts.events,
                counts.outputs,
                counts.late,
                counts.errors
            );
            for (topic, partition, offset) in record.offsets {
                println!("  input {topic}/{partition}: next offset {offset}");
            }
        }
    }
    Ok(())
}

fn registry_cluster(registry: &QueryRegistry) -> &ClusterConfig {
    registry.cluster()
}

fn format_age(at_ms: i64) -> String {
    format!("{:.1} s ago", (tidewater_client::now_ms() - at_ms).max(0) as f64 / 1000.0)
}

impl EventTimeArgs {
    fn options(&self) -> JobOptions {
        JobOptions {
            out_of_order_tolerance_ms: self.out_of_order_ms,
            late_arrival_tolerance_ms: self.late_arrival_ms,
            late_policy: match self.late_policy {
                LatePolicyArg::Adjust => LatePolicy::Adjust,
                LatePolicyArg::Drop => LatePolicy::Drop,
            },
            idle_partition_timeout_ms: self.idle_partition_ms,
            idle_key_timeout_ms: self.idle_key_ms.unwrap_or(tidewater_sql::DEFAULT_IDLE_KEY_TIMEOUT_MS),
            ..JobOptions::default()
        }
    }
}

fn run_job(args: RunArgs) -> anyhow::Result<()> {
    let sql =
        std::fs::read_to_string(&args.query).with_context(|| format!("reading {}", args.query.display()))?;
    let name = match &args.name {
        Some(name) => name.clone(),
        None => args
            .query
            .file_stem()
            .and_then(|stem| stem.to_str())
            .map(str::to_string)
            .context("the query file has no name to name the job after; pass --name")?,
    };
    tidewater_jobs::query::registry::validate_job_name(&name).map_err(anyhow::Error::msg)?;
    let settings = tidewater_jobs::query::QueryJobSettings {
        name,
        sql,
        options: args.event_time.options(),
        start_from: args.from,
        checkpoint_interval: std::time::Duration::from_millis(args.checkpoint_interval_ms.max(10)),
        late_topic: args.late_topic,
        parallel: args.parallel,
        references: args.reference.checked()?,
        delivery: args.delivery.delivery,
    };
    let cluster = args.connect.cluster_config()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("tidewater-query")
        .build()
        .context("starting the async runtime")?;
    let job_name = settings.name.clone();
    runtime.block_on(async move {
        let admin = crate::admin::start_for_client_role(&args.admin, &cluster).await?;
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let job = tokio::spawn(tidewater_jobs::query::run_query_job(settings, cluster, stopped));
        tokio::pin!(job);
        crate::admin::AdminListener::set_ready(&admin);
        std::thread::Builder::new()
            .name("query-progress".to_string())
            .spawn(move || show_catching_up(&job_name))
            .context("starting the progress thread")?;
        let signal = crate::serve::ShutdownSignal::install()?.wait();
        tokio::select! {
            result = &mut job => return result.context("the query job failed")?,
            signal = signal => tracing::info!(signal = signal?, "stopping the query job"),
        }
        let _ = stop.send(true);
        job.await.context("the query job failed")?
    })
}

/// How long `query run` shows its catching up at most: a job that has not caught up by then is
/// followed by its metrics (`tidewater_query_input_lag_records`).
const CATCHING_UP_SHOWN_MAX: std::time::Duration = std::time::Duration::from_secs(3600);

/// Shows the records left to read while the job catches up with its inputs (a bar on a
/// terminal, a line every few seconds otherwise), until it has once read everything there was.
fn show_catching_up(job_name: &str) {
    use tidewater_cli::progress::{Progress, Unit};
    let progress = Progress::new(format!("query job {job_name}"), None, Unit::Records);
    let started = std::time::Instant::now();
    while started.elapsed() < CATCHING_UP_SHOWN_MAX {
        std::thread::sleep(std::time::Duration::from_millis(500));
        match tidewater_jobs::query::input_lag_records(job_name) {
            Some(lag) if lag <= 0.0 => {
                progress.finish_with("caught up with its inputs");
                return;
            }
            Some(lag) => progress.message(&format!("catching up: {lag} records left to read")),
            None => progress.message("starting"),
        }
    }
}

fn test(args: TestArgs) -> anyhow::Result<()> {
    let query =
        std::fs::read_to_string(&args.query).with_context(|| format!("reading {}", args.query.display()))?;
    let references = args.reference.checked()?;
    if let Some(topic) =
        references.iter().find(|source| matches!(source.location, ReferenceLocation::Topic(_)))
    {
        anyhow::bail!(
            "query test reads reference data from files (--reference {}=file:PATH); give a topic's records as @reference lines of --input",
            topic.name
        );
    }
    let options =
        JobOptions { reference_inputs: reference::reference_names(&references), ..args.event_time.options() };
    let mut job = match tidewater_sql::compile(&query, options) {
        Ok(job) => job,
        Err(diagnostics) => {
            for diagnostic in &diagnostics {
                eprintln!("{}:{diagnostic}", args.query.display());
            }
            anyhow::bail!("{} does not compile ({} problem(s))", args.query.display(), diagnostics.len());
        }
    };
    let mut tables = reference::file_tables(&references)?;
    tables.load_into(&mut job).map_err(|error| anyhow::anyhow!("loading reference files: {error}"))?;
    let input =
        std::fs::File::open(&args.input).with_context(|| format!("reading {}", args.input.display()))?;
    // Results are written as they are produced, through one buffer, and kept only when they are
    // to be compared with --expect: a long input needs no memory for its output.
    let mut stdout = std::io::BufWriter::with_capacity(QUERY_TEST_BUFFER_BYTES, std::io::stdout().lock());
    let mut kept = Vec::new();
    let mut n_results = 0usize;
    let keep = args.expect.is_some();
    let run = local::run_streaming(
        &mut job,
        std::io::BufRead::lines(std::io::BufReader::new(input)),
        &mut tables,
        |_, _, _| Ok(()),
        |result| {
            serde_json::to_writer(&mut stdout, &result)
                .map_err(std::io::Error::from)
                .and_then(|()| stdout.write_all(b"\n"))
                .map_err(|error| format!("writing the results: {error}"))?;
            n_results += 1;
            if keep {
                kept.push(result);
            }
            Ok(())
        },
    );
    // What was produced before a bad line is written out before the error is.
    let flushed = stdout.flush().context("writing the results");
    run.with_context(|| args.input.display().to_string())?;
    flushed?;
    let Some(expect) = &args.expect else { return Ok(()) };
    let text = std::fs::read_to_string(expect).with_context(|| format!("reading {}", expect.display()))?;
    let expected = local::parse_expected(&text).with_context(|| expect.display().to_string())?;
    match local::diff(&expected, &kept) {
        None => {
            eprintln!("ok: {n_results} result line(s) match {}", expect.display());
            Ok(())
        }
        Some(report) => {
            eprint!("{report}");
            anyhow::bail!("the results differ from {}", expect.display())
        }
    }
}

/// `query test`'s output buffer: a write call per this many bytes of results, not per row.
const QUERY_TEST_BUFFER_BYTES: usize = 256 * 1024;
