//! `tidewater bench trigger`: how fast a trigger delivers a topic to a webhook, next to how fast
//! the same HTTP client posts the same requests with no Kafka involved.
//!
//! The command starts an HTTP/1.1 receiver in this process (hyper, 127.0.0.1, port chosen by
//! the kernel) that answers every request 200 with an empty body at once, and runs triggers
//! (`tidewater_jobs::trigger::run_trigger`, webhook action, CloudEvents binary mode, signed the
//! Standard Webhooks way unless `--unsigned`) against it on a tokio runtime of its own. The
//! cluster is any Kafka-compatible one (`--brokers`); the topics are new ones named after the
//! command's start time, deleted at the end with the consumer groups.
//!
//! Every record value starts with a stamp: the time it was sent (due, for the paced producer) in
//! nanoseconds on this process's monotonic clock, the tag of the run it belongs to and its
//! sequence number. In binary mode the webhook body is the value verbatim, so the receiver reads
//! the stamp back: it counts each sequence number once (repeats are redeliveries), ignores
//! requests of other runs, and takes receipt minus send time as the end-to-end latency.
//!
//! - Throughput, for each `--concurrency`: one topic is filled once with `--events` keyed
//!   records (`--keys` distinct keys over `--partitions` partitions, so deliveries can run in
//!   parallel); each run is a trigger with a new consumer group reading it from the earliest
//!   offset, stopped once every event arrived or `--run-secs` after the first one did. The rate
//!   is distinct events received over the time from the first receipt to the last, so the
//!   group join (reported apart, as "first delivery") is not in it. A topic holding more than
//!   the trigger's `BUFFERED_EVENTS_MAX` is a backlog: the trigger catches up with its fetching
//!   paused and resumed by its backpressure, as it would after an outage of its receiver.
//! - The ceiling, in the same runs: the trigger's own webhook executor (same reqwest client
//!   settings, same CloudEvent headers, same signing) driven by as many tasks as the
//!   concurrency, posting the same events as fast as they are answered, measured the same way
//!   at the receiver. The ratio says what Kafka (fetch, per-key scheduling, commits) costs.
//! - Latency: a trigger at `--latency-concurrency` on a new topic, a probe event to see it
//!   delivering, then a producer paced at `--rate` for `--latency-warmup-secs` (not measured)
//!   plus `--latency-secs`. The figure runs from each record's due time (so a producer falling
//!   behind cannot hide the wait: no coordinated omission) to its receipt; the trigger's own
//!   latency (record timestamp to acknowledgement, a histogram in whole milliseconds, warm-up
//!   included) is reported beside it.
//!
//! Every figure is the median of `--runs` runs. Each phase has a deadline, and a trigger that
//! ends early, a delivery that is not answered 200, or an event that never arrives fails the
//! command with the phase named. Process CPU time per event (this process only: receiver,
//! trigger or client, and librdkafka's threads; not the broker) is reported to show where a
//! difference between the trigger and its ceiling goes.
//!
//! On a machine with few cores the figures at concurrency 1 depend on where the tasks run: one
//! request at a time is a ping-pong between tasks, and when they sit on different cores each hop
//! wakes a parked tokio worker. On a 2-core VM that tripled the ceiling's CPU per request (33 to
//! 100 us) and cut it from 30,000 to 12,000 events/s, whereas under `taskset -c 0` or with the
//! other core busy it stayed at 30,000. The CPU columns and "elsewhere" figures tell which case
//! a run was.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use bytes::Bytes;
use clap::Args;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use rdkafka::producer::{BaseProducer, BaseRecord, FutureProducer, Producer};
use tidewater_client::cloudevents::HttpMode;
use tidewater_client::{admin, ClusterArgs, ClusterConfig, QuietContext};
use tidewater_jobs::trigger::action::{Attempt, Executor};
use tidewater_jobs::trigger::definition::{StartFrom, CONCURRENCY_MAX};
use tidewater_jobs::trigger::retry::RetryPolicy;
use tidewater_jobs::trigger::signature::SigningKey;
use tidewater_jobs::trigger::stats::{StatsSnapshot, TriggerStats};
use tidewater_jobs::trigger::{run_trigger, Action, TriggerDefinition};
use tidewater_jobs::Event;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use super::Deliveries;
use tidewater_cli::produce::{Acks, Compression};
use tidewater_cli::Connection;

/// Bytes of each record value taken by the stamp: send time, run tag, sequence number.
const STAMP_BYTES: usize = 24;
/// The most events one throughput topic is filled with (the receiver keeps a bit per event).
const EVENTS_MAX: u64 = 1_000_000;
/// The most distinct keys.
const KEYS_MAX: u64 = 1_000_000;
/// The most partitions of a topic the bench creates.
const PARTITIONS_MAX: i64 = 1000;
/// The largest request body the receiver reads; larger ones are answered 413.
const BODY_BYTES_MAX: usize = 1024 * 1024;
/// The most connections the receiver serves at once; more are closed at once.
const RECEIVER_CONNECTIONS_MAX: usize = 4 * CONCURRENCY_MAX;
/// How long a new trigger may take to deliver its first event: joining the consumer group (with
/// the broker's group.initial.rebalance.delay.ms, 3 s by default) and the first fetch.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the last events may take to arrive after the paced producer's last acknowledgement.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a stopped trigger may take to finish (its own grace for deliveries is 10 s).
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// The webhook action's timeout per request, for the trigger and the ceiling alike.
const WEBHOOK_TIMEOUT_MS: u64 = 10_000;
/// How far past its time budget a ceiling run may go (requests in flight, up to their timeout).
const CEILING_MARGIN: Duration = Duration::from_millis(WEBHOOK_TIMEOUT_MS + 5_000);
/// How often a waiting phase looks at the receiver's counts. Figures come from the receiver's
/// own timestamps, so this only decides how soon a finished run is noticed.
const PROGRESS_POLL: Duration = Duration::from_millis(5);
/// Records handed to librdkafka between two polls for delivery reports while filling a topic.
const POLL_EVERY_RECORDS: u64 = 1024;
/// The longest the paced producer sleeps at once.
const PACING_SLEEP_MAX: Duration = Duration::from_millis(1);
/// How long to wait for room in librdkafka's queue before offering a record again.
const QUEUE_FULL_WAIT: Duration = Duration::from_millis(10);
/// The run tag of the throughput topic's events; latency run `i` uses `LATENCY_TAG_BASE + i`.
const THROUGHPUT_TAG: u64 = 1;
const LATENCY_TAG_BASE: u64 = 2;

#[derive(Debug, Args)]
pub struct TriggerBenchArgs {
    #[command(flatten)]
    pub(crate) connect: ClusterArgs,
    /// Deliveries in flight at once, one throughput measurement each (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    pub(crate) concurrency: Vec<usize>,
    /// Events the throughput topic is filled with; a run ends when all arrived or after
    /// --run-secs, whichever comes first.
    #[arg(long, default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(1..=EVENTS_MAX))]
    pub(crate) events: u64,
    /// The longest a throughput or ceiling run delivers for, counted from its first receipt.
    #[arg(long, default_value_t = 3.0)]
    pub(crate) run_secs: f64,
    /// Partitions of each topic the bench creates.
    #[arg(long, short = 'p', default_value_t = 4, value_parser = clap::value_parser!(i32).range(1..=PARTITIONS_MAX))]
    pub(crate) partitions: i32,
    /// Distinct record keys; events of one key are delivered one at a time, so concurrency
    /// needs many keys.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=KEYS_MAX))]
    pub(crate) keys: u64,
    /// Value bytes of every record (the webhook body); the first 24 carry the stamp.
    #[arg(long, default_value_t = 256,
          value_parser = clap::value_parser!(u32).range(STAMP_BYTES as i64..=i64::from(super::RECORD_BYTES_MAX)))]
    pub(crate) record_bytes: u32,
    /// Events per second the latency phase produces, on a fixed schedule.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=super::e2e::RATE_MAX))]
    pub(crate) rate: u64,
    /// Seconds the latency phase measures, after its warm-up.
    #[arg(long, default_value_t = 5.0)]
    pub(crate) latency_secs: f64,
    /// Seconds the latency phase produces first without measuring.
    #[arg(long, default_value_t = 1.0)]
    pub(crate) latency_warmup_secs: f64,
    /// The trigger's concurrency in the latency phase.
    #[arg(long, default_value_t = 16)]
    pub(crate) latency_concurrency: usize,
    /// Send unsigned requests (by default they carry a Standard Webhooks signature, as a
    /// trigger with a secret sends them).
    #[arg(long)]
    pub(crate) unsigned: bool,
    /// Runs of every measurement; the figures are their medians.
    #[arg(long, default_value_t = 3)]
    pub(crate) runs: usize,
    /// Print the final figures as name=value lines, for scripts.
    #[arg(long)]
    pub(crate) kv: bool,
}

pub(crate) fn run(args: TriggerBenchArgs) -> anyhow::Result<()> {
    super::check_runs(args.runs)?;
    let run_budget = super::check_seconds("--run-secs", args.run_secs, false)?;
    let latency_duration = super::check_seconds("--latency-secs", args.latency_secs, false)?;
    let latency_warmup = super::check_seconds("--latency-warmup-secs", args.latency_warmup_secs, true)?;
    anyhow::ensure!(!args.concurrency.is_empty(), "--concurrency needs at least one value");
    for &concurrency in args.concurrency.iter().chain([&args.latency_concurrency]) {
        anyhow::ensure!(
            (1..=CONCURRENCY_MAX).contains(&concurrency),
            "a concurrency must be between 1 and {CONCURRENCY_MAX}, not {concurrency}"
        );
    }
    let latency_events = (args.rate as f64 * (latency_warmup + latency_duration).as_secs_f64()).ceil() as u64;
    anyhow::ensure!(
        latency_events < EVENTS_MAX,
        "--rate times (--latency-warmup-secs + --latency-secs) is {latency_events} events, more than \
         the {EVENTS_MAX} one latency run may send"
    );
    let latency_samples = (args.rate as f64 * latency_duration.as_secs_f64()).ceil() as u64;

    let unix_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| since.as_millis());
    let prefix = format!("tidewater-bench-trigger-{unix_ms}");
    let origin = Instant::now();
    // One producer fills the throughput topic and paces the latency runs; linger.ms=1 as in
    // `bench e2e`, which also lets batches form while the fill keeps librdkafka's queue full.
    let connect = Connection::new(&args.connect)?;
    let config = super::producer_config(&connect, Acks::All, 1, 1_000_000, Compression::None);
    let producer: Arc<BaseProducer<Deliveries>> =
        Arc::new(config.create_with_context(Deliveries::default()).context("creating the Kafka producer")?);
    let throughput_topic = format!("{prefix}-throughput");
    let latency_topics: Vec<String> =
        (0..args.runs).map(|run_idx| format!("{prefix}-latency-{run_idx}")).collect();
    let mut cleanup = Cleanup { topics: Vec::new(), groups: Vec::new() };
    let result = (|| {
        for topic in std::iter::once(&throughput_topic).chain(&latency_topics) {
            super::ensure_topic(producer.client(), &connect, topic, args.partitions)?;
            cleanup.topics.push(topic.clone());
        }
        eprintln!(
            "bench trigger: filling {throughput_topic:?} ({} partitions) with {} events of {} B over {} keys",
            args.partitions, args.events, args.record_bytes, args.keys
        );
        let fill_started = Instant::now();
        fill(&producer, &args, &throughput_topic, origin)?;
        eprintln!("  filled in {:.2} s", fill_started.elapsed().as_secs_f64());

        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("bench-trigger")
            .build()
            .context("starting the async runtime")?;
        let bench = Bench {
            cluster: connect.cluster.clone(),
            connect_timeout: connect.timeout(),
            secret: (!args.unsigned).then(SigningKey::generate),
            prefix: prefix.clone(),
            origin,
            producer: producer.clone(),
            run_budget,
            latency_warmup,
            latency_duration,
            latency_events,
            latency_samples,
            args: &args,
        };
        let measured =
            runtime.block_on(bench.measure(&throughput_topic, &latency_topics, &mut cleanup.groups));
        // Anything still running (a paced producer whose phase failed) is not waited for long.
        runtime.shutdown_timeout(Duration::from_secs(1));
        measured
    })();
    cleanup.run(&producer, connect.timeout());
    let report = result?;
    print!("{}", render(&report, args.kv));
    Ok(())
}

/// What the bench created in the cluster, deleted at the end whatever happened.
#[derive(Debug)]
struct Cleanup {
    topics: Vec<String>,
    groups: Vec<String>,
}

impl Cleanup {
    fn run(&self, producer: &BaseProducer<Deliveries>, timeout: Duration) {
        for group in &self.groups {
            if let Err(error) = admin::delete_group(producer.client(), group, timeout) {
                eprintln!("note: could not delete consumer group {group:?}: {error:#}");
            }
        }
        for topic in &self.topics {
            if let Err(error) = admin::delete_topic(producer.client(), topic, timeout) {
                eprintln!("note: could not delete topic {topic:?}: {error:#}");
            }
        }
    }
}

/// What every phase shares.
struct Bench<'a> {
    cluster: ClusterConfig,
    connect_timeout: Duration,
    secret: Option<String>,
    prefix: String,
    origin: Instant,
    producer: Arc<BaseProducer<Deliveries>>,
    run_budget: Duration,
    latency_warmup: Duration,
    latency_duration: Duration,
    /// Paced events per latency run, warm-up included.
    latency_events: u64,
    /// Latencies kept per latency run.
    latency_samples: u64,
    args: &'a TriggerBenchArgs,
}

/// One throughput or ceiling run, as the receiver saw it.
#[derive(Debug, Clone, Copy)]
struct RunFigures {
    events_per_s: f64,
    /// From starting the trigger (or the ceiling's workers) to the first receipt.
    first_delivery_ms: f64,
    /// CPU time per event and who used the CPUs, from the first receipt on.
    cpu: CpuUse,
}

/// The medians of one concurrency's runs.
#[derive(Debug, Clone, Copy, PartialEq)]
struct ThroughputRow {
    concurrency: usize,
    trigger_events_per_s: f64,
    ceiling_events_per_s: f64,
    trigger_first_delivery_ms: f64,
    trigger_cpu_us_per_event: f64,
    ceiling_cpu_us_per_event: f64,
    /// The most CPUs other processes used while a ceiling run (no Kafka, so no broker) ran: how
    /// busy the machine was with work not the bench's.
    ceiling_others_cpus: Option<f64>,
}

/// The medians of the latency runs, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
struct LatencyRow {
    rate: u64,
    concurrency: usize,
    achieved_events_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    stats_p50_ms: f64,
    stats_p99_ms: f64,
    stats_max_ms: f64,
}

/// Everything the command prints at the end.
#[derive(Debug, Clone, PartialEq)]
struct Report {
    runs: usize,
    record_bytes: u32,
    signed: bool,
    throughput: Vec<ThroughputRow>,
    latency: LatencyRow,
}

impl Bench<'_> {
    async fn measure(
        &self,
        throughput_topic: &str,
        latency_topics: &[String],
        groups: &mut Vec<String>,
    ) -> anyhow::Result<Report> {
        let receiver = Receiver::start(self.origin).await?;
        let measured = self.measure_with(&receiver, throughput_topic, latency_topics, groups).await;
        receiver.stop().await;
        measured
    }

    async fn measure_with(
        &self,
        receiver: &Receiver,
        throughput_topic: &str,
        latency_topics: &[String],
        groups: &mut Vec<String>,
    ) -> anyhow::Result<Report> {
        let args = self.args;
        let url = format!("http://{}/hook", receiver.address);
        eprintln!(
            "  receiver at {url}; {} runs per figure, at most {} s of deliveries per run{}",
            args.runs,
            args.run_secs,
            if self.secret.is_some() { ", signed requests" } else { "" }
        );
        // The ceiling's executor needs a producer (for device commands, which it never sends).
        let idle_producer = self
            .cluster
            .reliable_producer("tidewater-bench-trigger-ceiling")
            .context("creating the ceiling's (unused) producer")?;
        let mut throughput = Vec::with_capacity(args.concurrency.len());
        for &concurrency in &args.concurrency {
            let mut trigger_runs = Vec::with_capacity(args.runs);
            let mut ceiling_runs = Vec::with_capacity(args.runs);
            for run_idx in 0..args.runs {
                let name = format!("{}-c{concurrency}-run{run_idx}", self.prefix);
                groups.push(name.clone());
                let definition = self.definition(&name, throughput_topic, &url, concurrency);
                let trigger = self.throughput_run(receiver, definition).await.with_context(|| {
                    format!("throughput run {} at concurrency {concurrency}", run_idx + 1)
                })?;
                let ceiling = self
                    .ceiling_run(receiver, throughput_topic, &url, concurrency, &idle_producer)
                    .await
                    .with_context(|| format!("ceiling run {} at concurrency {concurrency}", run_idx + 1))?;
                eprintln!(
                    "  c={concurrency} run {}/{}: trigger {:.0} events/s (first delivery after {:.0} ms, {}); \
                     ceiling {:.0} events/s ({}); {:.0}%",
                    run_idx + 1,
                    args.runs,
                    trigger.events_per_s,
                    trigger.first_delivery_ms,
                    trigger.cpu,
                    ceiling.events_per_s,
                    ceiling.cpu,
                    100.0 * trigger.events_per_s / ceiling.events_per_s
                );
                trigger_runs.push(trigger);
                ceiling_runs.push(ceiling);
            }
            let median_of = |runs: &[RunFigures], pick: fn(&RunFigures) -> f64| {
                crate::measure::median(&runs.iter().map(pick).collect::<Vec<f64>>()).unwrap_or(0.0)
            };
            throughput.push(ThroughputRow {
                concurrency,
                trigger_events_per_s: median_of(&trigger_runs, |run| run.events_per_s),
                ceiling_events_per_s: median_of(&ceiling_runs, |run| run.events_per_s),
                trigger_first_delivery_ms: median_of(&trigger_runs, |run| run.first_delivery_ms),
                trigger_cpu_us_per_event: median_of(&trigger_runs, |run| run.cpu.us_per_event),
                ceiling_cpu_us_per_event: median_of(&ceiling_runs, |run| run.cpu.us_per_event),
                ceiling_others_cpus: ceiling_runs
                    .iter()
                    .filter_map(|run| run.cpu.others_cpus)
                    .reduce(f64::max),
            });
        }

        let mut latency_runs = Vec::with_capacity(args.runs);
        for (run_idx, topic) in latency_topics.iter().enumerate() {
            let name = format!("{}-latency-run{run_idx}", self.prefix);
            groups.push(name.clone());
            let definition = self.definition(&name, topic, &url, args.latency_concurrency);
            let tag = LATENCY_TAG_BASE + run_idx as u64;
            let figures = self
                .latency_run(receiver, definition, tag)
                .await
                .with_context(|| format!("latency run {}", run_idx + 1))?;
            eprintln!(
                "  latency run {}/{} at {} events/s (sent at {:.0}), concurrency {}: p50 {:.2} / p99 {:.2} / \
                 max {:.2} ms; the trigger's own: p50 {} / p99 {} / max {} ms",
                run_idx + 1,
                args.runs,
                args.rate,
                figures.achieved_events_per_s,
                args.latency_concurrency,
                figures.p50_ms,
                figures.p99_ms,
                figures.max_ms,
                figures.stats_p50_ms,
                figures.stats_p99_ms,
                figures.stats_max_ms
            );
            latency_runs.push(figures);
        }
        let median_of = |pick: fn(&LatencyRow) -> f64| {
            crate::measure::median(&latency_runs.iter().map(pick).collect::<Vec<f64>>()).unwrap_or(0.0)
        };
        let latency = LatencyRow {
            rate: args.rate,
            concurrency: args.latency_concurrency,
            achieved_events_per_s: median_of(|row| row.achieved_events_per_s),
            p50_ms: median_of(|row| row.p50_ms),
            p99_ms: median_of(|row| row.p99_ms),
            max_ms: median_of(|row| row.max_ms),
            stats_p50_ms: median_of(|row| row.stats_p50_ms),
            stats_p99_ms: median_of(|row| row.stats_p99_ms),
            stats_max_ms: median_of(|row| row.stats_max_ms),
        };
        Ok(Report {
            runs: args.runs,
            record_bytes: args.record_bytes,
            signed: self.secret.is_some(),
            throughput,
            latency,
        })
    }

    fn action(&self, url: &str) -> Action {
        Action::Webhook {
            url: url.to_string(),
            mode: HttpMode::Binary,
            secret: self.secret.clone(),
            timeout_ms: WEBHOOK_TIMEOUT_MS,
            headers: BTreeMap::new(),
        }
    }

    /// A trigger reading `topic` from its earliest offset as consumer group `name`.
    fn definition(&self, name: &str, topic: &str, url: &str, concurrency: usize) -> TriggerDefinition {
        TriggerDefinition {
            name: name.to_string(),
            topic: topic.to_string(),
            action: self.action(url),
            filter: None,
            group_id: Some(name.to_string()),
            concurrency,
            batch: None,
            retry: RetryPolicy::default(),
            dead_letter_topic: None,
            start_from: StartFrom::Earliest,
            paused: false,
            disabled_reason: None,
        }
    }

    /// Starts `definition` as a task; stop it with `stop_trigger`.
    fn start_trigger(&self, definition: TriggerDefinition, stats: Arc<TriggerStats>) -> RunningTrigger {
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(run_trigger(definition, self.cluster.clone(), stats, stopped));
        RunningTrigger { stop, task: Some(task) }
    }

    async fn throughput_run(
        &self,
        receiver: &Receiver,
        definition: TriggerDefinition,
    ) -> anyhow::Result<RunFigures> {
        let events = self.args.events;
        receiver.recording.begin(RunRecord::new(THROUGHPUT_TAG, events, u64::MAX, 0));
        let started_nanos = self.nanos();
        let mut trigger = self.start_trigger(definition, Arc::new(TriggerStats::default()));
        let waited = async {
            let first_nanos = self.wait_for_first(receiver, &mut trigger, started_nanos).await?;
            // CPU is counted from the first delivery on, leaving out the clients' start and the
            // group join, as the rate does.
            let cpu_window = CpuWindow::start(receiver);
            let deadline = Instant::now() + self.run_budget.saturating_sub(self.since(first_nanos));
            loop {
                trigger.check_running().await?;
                if receiver.recording.progress().distinct >= events || Instant::now() >= deadline {
                    return anyhow::Ok(cpu_window.finish(receiver));
                }
                tokio::time::sleep(PROGRESS_POLL).await;
            }
        }
        .await;
        let stopped = trigger.stop().await;
        let cpu = waited?;
        stopped?;
        let record = receiver.recording.finish();
        record.figures(started_nanos, cpu).context("no event arrived")
    }

    /// Waits for the first event of the run to reach the receiver; its receipt time.
    async fn wait_for_first(
        &self,
        receiver: &Receiver,
        trigger: &mut RunningTrigger,
        started_nanos: u64,
    ) -> anyhow::Result<u64> {
        loop {
            trigger.check_running().await?;
            if let Some(first_nanos) = receiver.recording.progress().first_nanos {
                return Ok(first_nanos);
            }
            anyhow::ensure!(
                self.since(started_nanos) < STARTUP_TIMEOUT,
                "no event reached the webhook within {} s of starting the trigger (joining the consumer \
                 group and the first fetch should take far less)",
                STARTUP_TIMEOUT.as_secs()
            );
            tokio::time::sleep(PROGRESS_POLL).await;
        }
    }

    /// The ceiling: the trigger's webhook executor, `concurrency` requests at a time, the same
    /// events as the throughput topic holds, for at most the run budget.
    async fn ceiling_run(
        &self,
        receiver: &Receiver,
        topic: &str,
        url: &str,
        concurrency: usize,
        idle_producer: &FutureProducer<QuietContext>,
    ) -> anyhow::Result<RunFigures> {
        let events = self.args.events;
        let executor =
            Executor::new("tidewater-bench-ceiling", &self.action(url), idle_producer.clone(), false)
                .map_err(|error| anyhow::anyhow!("building the webhook executor: {error}"))?;
        let shared = Arc::new(CeilingShared {
            executor,
            topic: Arc::from(topic),
            value: super::payload(self.args.record_bytes as usize),
            partitions: self.args.partitions,
            keys: self.args.keys,
            next: AtomicU64::new(0),
            events,
            deadline: Mutex::new(None),
            run_budget: self.run_budget,
            origin: self.origin,
        });
        receiver.recording.begin(RunRecord::new(THROUGHPUT_TAG, events, u64::MAX, 0));
        let cpu_window = CpuWindow::start(receiver);
        let started_nanos = self.nanos();
        let mut workers = JoinSet::new();
        for _ in 0..concurrency {
            workers.spawn(ceiling_worker(shared.clone(), receiver.recording.clone()));
        }
        let all = async {
            while let Some(joined) = workers.join_next().await {
                joined.context("a ceiling worker failed")??;
            }
            anyhow::Ok(())
        };
        let limit = self.run_budget + STARTUP_TIMEOUT + CEILING_MARGIN;
        tokio::time::timeout(limit, all)
            .await
            .map_err(|_| anyhow::anyhow!("the ceiling run did not finish within {} s", limit.as_secs()))??;
        let cpu = cpu_window.finish(receiver);
        let record = receiver.recording.finish();
        record.figures(started_nanos, cpu).context("no request reached the receiver")
    }

    async fn latency_run(
        &self,
        receiver: &Receiver,
        definition: TriggerDefinition,
        tag: u64,
    ) -> anyhow::Result<LatencyRow> {
        let topic = definition.topic.clone();
        let total = self.latency_events;
        // Sequence 0 is the probe; the paced events are 1..=total.
        receiver.recording.begin(RunRecord::new(tag, total + 1, u64::MAX, self.latency_samples as usize));
        let stats = Arc::new(TriggerStats::default());
        let started_nanos = self.nanos();
        let mut trigger = self.start_trigger(definition, stats.clone());
        let abort = Arc::new(AtomicBool::new(false));
        let measured = async {
            // The probe: once it arrives, the trigger is assigned its partitions and delivering.
            // Its record timestamp is put past the time it can take to arrive: the trigger's own
            // latency counts from the timestamp and takes one in the future as 0, so the group
            // join the probe waits for stays out of the trigger's figures as it does of ours.
            let mut probe = self.plan(&topic, tag, 0, 1, 1, self.nanos());
            let unix_ms =
                SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| since.as_millis() as i64);
            probe.timestamp_ms = Some(unix_ms + (STARTUP_TIMEOUT + DRAIN_TIMEOUT).as_millis() as i64);
            let producer = self.producer.clone();
            let no_abort = Arc::new(AtomicBool::new(false));
            tokio::task::spawn_blocking(move || send_paced(&producer, &probe, &no_abort))
                .await
                .context("the probe's producer task failed")?
                .context("sending the probe")?;
            self.wait_for_first(receiver, &mut trigger, started_nanos).await?;

            let start_nanos = self.nanos();
            receiver.recording.measure_from(start_nanos + self.latency_warmup.as_nanos() as u64);
            let plan = self.plan(&topic, tag, 1, total, self.args.rate, start_nanos);
            let producer = self.producer.clone();
            let sender_abort = abort.clone();
            let mut sender = tokio::task::spawn_blocking(move || send_paced(&producer, &plan, &sender_abort));
            let send_limit =
                self.latency_warmup + self.latency_duration + self.connect_timeout + DRAIN_TIMEOUT;
            let send_deadline = Instant::now() + send_limit;
            let send_elapsed = loop {
                tokio::select! {
                    sent = &mut sender => break sent.context("the paced producer task failed")??,
                    _ = tokio::time::sleep(PROGRESS_POLL * 20) => {
                        trigger.check_running().await?;
                        anyhow::ensure!(
                            Instant::now() < send_deadline,
                            "the paced producer did not finish within {} s", send_limit.as_secs()
                        );
                    }
                }
            };
            let drain_deadline = Instant::now() + DRAIN_TIMEOUT;
            loop {
                trigger.check_running().await?;
                let distinct = receiver.recording.progress().distinct;
                if distinct > total {
                    break;
                }
                anyhow::ensure!(
                    Instant::now() < drain_deadline,
                    "{} of {total} events did not reach the webhook within {} s of the last acknowledgement",
                    total + 1 - distinct,
                    DRAIN_TIMEOUT.as_secs()
                );
                tokio::time::sleep(PROGRESS_POLL).await;
            }
            anyhow::Ok(total as f64 / send_elapsed.as_secs_f64())
        }
        .await;
        abort.store(true, Ordering::Relaxed);
        let snapshot: StatsSnapshot = stats.snapshot();
        let stopped = trigger.stop().await;
        let achieved_events_per_s = measured?;
        stopped?;
        let mut record = receiver.recording.finish();
        anyhow::ensure!(!record.latencies_nanos.is_empty(), "no event due after the warm-up arrived");
        record.latencies_nanos.sort_unstable();
        let millis = |percent: f64| {
            crate::measure::percentile(&record.latencies_nanos, percent)
                .map_or(0.0, |nanos| nanos as f64 / 1e6)
        };
        Ok(LatencyRow {
            rate: self.args.rate,
            concurrency: self.args.latency_concurrency,
            achieved_events_per_s,
            p50_ms: millis(50.0),
            p99_ms: millis(99.0),
            max_ms: millis(100.0),
            stats_p50_ms: snapshot.latency_p50_ms as f64,
            stats_p99_ms: snapshot.latency_p99_ms as f64,
            stats_max_ms: snapshot.latency_max_ms as f64,
        })
    }

    fn plan(
        &self,
        topic: &str,
        tag: u64,
        first_sequence: u64,
        count: u64,
        rate: u64,
        start_nanos: u64,
    ) -> Plan {
        Plan {
            topic: topic.to_string(),
            tag,
            first_sequence,
            count,
            rate,
            start_nanos,
            origin: self.origin,
            keys: self.args.keys,
            record_bytes: self.args.record_bytes as usize,
            timestamp_ms: None,
        }
    }

    /// Nanoseconds since the origin, now.
    fn nanos(&self) -> u64 {
        self.origin.elapsed().as_nanos() as u64
    }

    /// How long ago `nanos` (since the origin) was.
    fn since(&self, nanos: u64) -> Duration {
        Duration::from_nanos(self.nanos().saturating_sub(nanos))
    }
}

/// A trigger running as a task of this process.
#[derive(Debug)]
struct RunningTrigger {
    stop: watch::Sender<bool>,
    /// `None` once `check_running` found it ended (and reported why).
    task: Option<JoinHandle<anyhow::Result<tidewater_jobs::trigger::RunEnd>>>,
}

impl RunningTrigger {
    /// An error if the trigger has ended, which it must not do before it is told to.
    async fn check_running(&mut self) -> anyhow::Result<()> {
        let Some(task) = self.task.take_if(|task| task.is_finished()) else { return Ok(()) };
        match task.await {
            Ok(Ok(end)) => anyhow::bail!("the trigger ended by itself: {end:?}"),
            Ok(Err(error)) => Err(error.context("the trigger failed")),
            Err(error) => anyhow::bail!("the trigger's task failed: {error}"),
        }
    }

    /// Tells the trigger to stop and waits (up to `STOP_TIMEOUT`) until it has.
    async fn stop(self) -> anyhow::Result<()> {
        let RunningTrigger { stop, task } = self;
        let _ = stop.send(true);
        let Some(task) = task else { return Ok(()) };
        let abort = task.abort_handle();
        match tokio::time::timeout(STOP_TIMEOUT, task).await {
            Ok(Ok(Ok(_))) => Ok(()),
            Ok(Ok(Err(error))) => Err(error.context("the trigger failed")),
            Ok(Err(error)) if error.is_cancelled() => Ok(()),
            Ok(Err(error)) => anyhow::bail!("the trigger's task failed: {error}"),
            Err(_) => {
                abort.abort();
                anyhow::bail!("the trigger did not stop within {} s", STOP_TIMEOUT.as_secs())
            }
        }
    }
}

/// What the ceiling's workers share.
#[derive(Debug)]
struct CeilingShared {
    executor: Executor,
    topic: Arc<str>,
    value: Vec<u8>,
    partitions: i32,
    keys: u64,
    /// The next event to post.
    next: AtomicU64,
    events: u64,
    /// Set by the first worker to get an answer: the first receipt plus the run budget.
    deadline: Mutex<Option<Instant>>,
    run_budget: Duration,
    origin: Instant,
}

/// Posts events until all are posted or the run's time is up; an error for any answer but 2xx.
async fn ceiling_worker(shared: Arc<CeilingShared>, recording: Arc<Recording>) -> anyhow::Result<()> {
    loop {
        let deadline = *shared.deadline.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
            return Ok(());
        }
        let sequence = shared.next.fetch_add(1, Ordering::Relaxed);
        if sequence >= shared.events {
            return Ok(());
        }
        let mut value = shared.value.clone();
        Stamp { sent_nanos: shared.origin.elapsed().as_nanos() as u64, tag: THROUGHPUT_TAG, sequence }
            .write(&mut value);
        let unix_ms =
            SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| since.as_millis() as i64);
        let event = Event {
            topic: shared.topic.clone(),
            partition: (sequence % shared.partitions as u64) as i32,
            offset: (sequence / shared.partitions as u64) as i64,
            timestamp_ms: Some(unix_ms),
            key: Some(Bytes::from(key_of(sequence, shared.keys))),
            value: Some(Bytes::from(value)),
            headers: Vec::new(),
        };
        match shared.executor.attempt(std::slice::from_ref(&event), 1).await {
            Attempt::Acknowledged => {}
            other => anyhow::bail!("event {sequence} was not acknowledged: {other:?}"),
        }
        if deadline.is_none() {
            if let Some(first_nanos) = recording.progress().first_nanos {
                let first = shared.origin + Duration::from_nanos(first_nanos);
                let mut deadline = shared.deadline.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                deadline.get_or_insert(first + shared.run_budget);
            }
        }
    }
}

/// The key of event `sequence`: the keys take turns, so every stretch of events has many.
fn key_of(sequence: u64, keys: u64) -> Vec<u8> {
    format!("key-{}", sequence % keys).into_bytes()
}

/// Fills the throughput topic: `--events` keyed records, sequence numbers from 0, sent as fast
/// as the cluster takes them (their send times are not used).
fn fill(
    producer: &BaseProducer<Deliveries>,
    args: &TriggerBenchArgs,
    topic: &str,
    origin: Instant,
) -> anyhow::Result<()> {
    let mut value = super::payload(args.record_bytes as usize);
    for sequence in 0..args.events {
        Stamp { sent_nanos: origin.elapsed().as_nanos() as u64, tag: THROUGHPUT_TAG, sequence }
            .write(&mut value);
        let key = key_of(sequence, args.keys);
        send(producer, BaseRecord::to(topic).key(&key[..]).payload(&value[..]))?;
        if sequence % POLL_EVERY_RECORDS == 0 {
            producer.poll(Duration::ZERO);
        }
    }
    producer.flush(args.connect.timeout()).context("waiting for the fill's acknowledgements")?;
    producer.poll(Duration::ZERO);
    producer.context().check_no_failures()
}

/// Hands a keyed record to librdkafka, serving delivery reports while its queue is full (as
/// `super::send` does for unkeyed ones).
fn send(producer: &BaseProducer<Deliveries>, mut record: BaseRecord<'_, [u8], [u8]>) -> anyhow::Result<()> {
    use rdkafka::error::KafkaError;
    use rdkafka::types::RDKafkaErrorCode;
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                record = returned;
                producer.poll(QUEUE_FULL_WAIT);
            }
            Err((error, _)) => return Err(error).context("handing a record to librdkafka"),
        }
    }
}

/// A paced send: `count` records with sequence numbers from `first_sequence`, record `i` due at
/// `start + i / rate` (nanoseconds since `origin`) and stamped with that due time.
#[derive(Debug, Clone)]
struct Plan {
    topic: String,
    tag: u64,
    first_sequence: u64,
    count: u64,
    rate: u64,
    start_nanos: u64,
    origin: Instant,
    keys: u64,
    record_bytes: usize,
    /// The records' timestamp; by default librdkafka's clock when each is sent.
    timestamp_ms: Option<i64>,
}

/// Sends `plan` on schedule and waits for every acknowledgement; how long sending took. Stops
/// early (with an error) when `abort` is set.
fn send_paced(
    producer: &BaseProducer<Deliveries>,
    plan: &Plan,
    abort: &AtomicBool,
) -> anyhow::Result<Duration> {
    let mut value = super::payload(plan.record_bytes);
    let nanos_per_record = 1e9 / plan.rate as f64;
    let start = plan.origin + Duration::from_nanos(plan.start_nanos);
    let mut sent = 0u64;
    while sent < plan.count {
        anyhow::ensure!(!abort.load(Ordering::Relaxed), "stopped after {sent} of {} records", plan.count);
        // Every record due by now; at least the next one, since we slept until it was due.
        let elapsed_nanos = Instant::now().saturating_duration_since(start).as_nanos() as f64;
        let due_count = ((elapsed_nanos / nanos_per_record).floor() as u64 + 1).min(plan.count);
        while sent < due_count {
            let due_nanos = plan.start_nanos + (sent as f64 * nanos_per_record) as u64;
            let sequence = plan.first_sequence + sent;
            Stamp { sent_nanos: due_nanos, tag: plan.tag, sequence }.write(&mut value);
            let key = key_of(sequence, plan.keys);
            let mut record = BaseRecord::to(&plan.topic).key(&key[..]).payload(&value[..]);
            if let Some(timestamp_ms) = plan.timestamp_ms {
                record = record.timestamp(timestamp_ms);
            }
            send(producer, record)?;
            sent += 1;
        }
        producer.poll(Duration::ZERO);
        let next_due = start + Duration::from_nanos((sent as f64 * nanos_per_record) as u64);
        if let Some(wait) = next_due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait.min(PACING_SLEEP_MAX));
        }
    }
    let send_elapsed = start.elapsed();
    producer.flush(DRAIN_TIMEOUT).context("waiting for the paced records' acknowledgements")?;
    producer.poll(Duration::ZERO);
    producer.context().check_no_failures()?;
    Ok(send_elapsed)
}

/// The start of every record value: when it was sent (nanoseconds since the command's origin),
/// which run it belongs to, and its sequence number in that run. Little-endian.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    sent_nanos: u64,
    tag: u64,
    sequence: u64,
}

impl Stamp {
    /// Writes the stamp over the first `STAMP_BYTES` of `value` (at least that long).
    fn write(&self, value: &mut [u8]) {
        value[..8].copy_from_slice(&self.sent_nanos.to_le_bytes());
        value[8..16].copy_from_slice(&self.tag.to_le_bytes());
        value[16..24].copy_from_slice(&self.sequence.to_le_bytes());
    }

    fn read(value: &[u8]) -> Option<Stamp> {
        let field =
            |at: usize| -> Option<u64> { Some(u64::from_le_bytes(value.get(at..at + 8)?.try_into().ok()?)) };
        Some(Stamp { sent_nanos: field(0)?, tag: field(8)?, sequence: field(16)? })
    }
}

/// What the receiver saw of one run. Times are nanoseconds since the command's origin.
#[derive(Debug, Default)]
struct RunRecord {
    tag: u64,
    /// Sequence numbers of the run are `0..events`.
    events: u64,
    /// A bit per sequence number: received yet?
    seen: Vec<u64>,
    distinct: u64,
    /// Requests for an event already received (redeliveries).
    duplicates: u64,
    /// Requests of another run, or without a stamp.
    strays: u64,
    first_nanos: Option<u64>,
    last_nanos: u64,
    /// Events sent before this are not measured (probe, warm-up).
    measure_from_nanos: u64,
    latencies_nanos: Vec<u64>,
    latency_capacity: usize,
}

impl RunRecord {
    fn new(tag: u64, events: u64, measure_from_nanos: u64, latency_capacity: usize) -> RunRecord {
        RunRecord {
            tag,
            events,
            seen: vec![0; events.div_ceil(64) as usize],
            measure_from_nanos,
            latencies_nanos: Vec::with_capacity(latency_capacity),
            latency_capacity,
            ..RunRecord::default()
        }
    }

    /// Counts one request received at `receipt_nanos`.
    fn record(&mut self, receipt_nanos: u64, body: &[u8]) {
        let Some(stamp) =
            Stamp::read(body).filter(|stamp| stamp.tag == self.tag && stamp.sequence < self.events)
        else {
            self.strays += 1;
            return;
        };
        let (word, bit) = ((stamp.sequence / 64) as usize, 1u64 << (stamp.sequence % 64));
        if self.seen[word] & bit != 0 {
            self.duplicates += 1;
            return;
        }
        self.seen[word] |= bit;
        self.distinct += 1;
        self.first_nanos = Some(self.first_nanos.map_or(receipt_nanos, |first| first.min(receipt_nanos)));
        self.last_nanos = self.last_nanos.max(receipt_nanos);
        if stamp.sent_nanos >= self.measure_from_nanos && self.latencies_nanos.len() < self.latency_capacity {
            self.latencies_nanos.push(receipt_nanos.saturating_sub(stamp.sent_nanos));
        }
    }

    /// Throughput figures: distinct events over first-to-last receipt. `None` if nothing came.
    fn figures(&self, started_nanos: u64, cpu: CpuUse) -> Option<RunFigures> {
        let first_nanos = self.first_nanos?;
        // One event alone has no span; count it as taking a nanosecond rather than dividing by 0.
        let span_nanos = self.last_nanos.saturating_sub(first_nanos).max(1);
        Some(RunFigures {
            events_per_s: self.distinct as f64 * 1e9 / span_nanos as f64,
            first_delivery_ms: first_nanos.saturating_sub(started_nanos) as f64 / 1e6,
            cpu,
        })
    }
}

/// Progress of the current run.
#[derive(Debug, Clone, Copy)]
struct Progress {
    distinct: u64,
    first_nanos: Option<u64>,
}

/// The receiver's record, shared by its connections and the phases.
#[derive(Debug)]
struct Recording {
    origin: Instant,
    run: Mutex<RunRecord>,
}

impl Recording {
    fn lock(&self) -> std::sync::MutexGuard<'_, RunRecord> {
        self.run.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn begin(&self, record: RunRecord) {
        *self.lock() = record;
    }

    fn measure_from(&self, nanos: u64) {
        self.lock().measure_from_nanos = nanos;
    }

    fn progress(&self) -> Progress {
        let run = self.lock();
        Progress { distinct: run.distinct, first_nanos: run.first_nanos }
    }

    /// Ends the run: its record, with an empty one (which counts everything as stray) in its place.
    fn finish(&self) -> RunRecord {
        std::mem::take(&mut *self.lock())
    }
}

/// The webhook receiver: HTTP/1.1 on 127.0.0.1, 200 with an empty body for every request.
#[derive(Debug)]
struct Receiver {
    address: SocketAddr,
    recording: Arc<Recording>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Receiver {
    async fn start(origin: Instant) -> anyhow::Result<Receiver> {
        let listener =
            tokio::net::TcpListener::bind("127.0.0.1:0").await.context("binding the webhook receiver")?;
        let address = listener.local_addr().context("reading the receiver's address")?;
        let recording = Arc::new(Recording { origin, run: Mutex::new(RunRecord::default()) });
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn({
            let recording = recording.clone();
            async move {
                let mut connections = JoinSet::new();
                loop {
                    let accepted = tokio::select! {
                        accepted = listener.accept() => accepted,
                        _ = stopped.changed() => break,
                    };
                    while connections.try_join_next().is_some() {}
                    let stream = match accepted {
                        Ok((stream, _)) => stream,
                        Err(error) => {
                            // Out of file descriptors, most likely: wait for some to close.
                            tracing::warn!(%error, "the webhook receiver could not accept a connection");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    };
                    if connections.len() >= RECEIVER_CONNECTIONS_MAX {
                        continue;
                    }
                    let _ = stream.set_nodelay(true);
                    let recording = recording.clone();
                    connections.spawn(async move {
                        let service = service_fn(move |request| receive(request, recording.clone()));
                        // A connection's end (the client closing it, or an error) ends only it.
                        let _ = http1::Builder::new()
                            .timer(TokioTimer::new())
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
                connections.abort_all();
            }
        });
        Ok(Receiver { address, recording, stop, task })
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// One webhook request: read the body (bounded), count it, answer 200.
async fn receive(
    request: Request<Incoming>,
    recording: Arc<Recording>,
) -> Result<Response<Empty<Bytes>>, Infallible> {
    let body = match Limited::new(request.into_body(), BODY_BYTES_MAX).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            let mut response = Response::new(Empty::new());
            *response.status_mut() = StatusCode::PAYLOAD_TOO_LARGE;
            return Ok(response);
        }
    };
    let receipt_nanos = recording.origin.elapsed().as_nanos() as u64;
    recording.lock().record(receipt_nanos, &body);
    Ok(Response::new(Empty::new()))
}

/// CPU use over a stretch of a run: this process's time per distinct event received meanwhile,
/// and (where /proc/stat tells) how many CPUs this process and everything else kept busy.
#[derive(Debug, Clone, Copy)]
struct CpuWindow {
    cpu: Duration,
    distinct: u64,
    wall: Instant,
    machine: Option<crate::measure::MachineTicks>,
}

/// How a stretch of a run used the CPUs.
#[derive(Debug, Clone, Copy, PartialEq)]
struct CpuUse {
    us_per_event: f64,
    /// CPUs this process kept busy on average.
    process_cpus: f64,
    /// CPUs everything else kept busy (the broker, other programs, the kernel's own threads).
    others_cpus: Option<f64>,
    /// CPUs of the machine.
    machine_cpus: Option<usize>,
}

impl std::fmt::Display for CpuUse {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "{:.1} us CPU/event, {:.2} CPUs", self.us_per_event, self.process_cpus)?;
        if let (Some(others), Some(cpus)) = (self.others_cpus, self.machine_cpus) {
            write!(formatter, " + {others:.2} of {cpus} elsewhere")?;
        }
        Ok(())
    }
}

impl CpuWindow {
    fn start(receiver: &Receiver) -> CpuWindow {
        CpuWindow {
            cpu: crate::measure::process_cpu_time(),
            distinct: receiver.recording.progress().distinct,
            wall: Instant::now(),
            machine: crate::measure::MachineTicks::read().ok(),
        }
    }

    fn finish(&self, receiver: &Receiver) -> CpuUse {
        let events = receiver.recording.progress().distinct.saturating_sub(self.distinct).max(1);
        let cpu = crate::measure::process_cpu_time().saturating_sub(self.cpu).as_secs_f64();
        let process_cpus = cpu / self.wall.elapsed().as_secs_f64().max(1e-9);
        let machine =
            self.machine.zip(crate::measure::MachineTicks::read().ok()).and_then(|(before, after)| {
                let total = after.total.checked_sub(before.total).filter(|total| *total > 0)?;
                let busy = after.busy.checked_sub(before.busy)?;
                let busy_cpus = busy as f64 / total as f64 * after.cpus as f64;
                Some(((busy_cpus - process_cpus).max(0.0), after.cpus))
            });
        CpuUse {
            us_per_event: cpu * 1e6 / events as f64,
            process_cpus,
            others_cpus: machine.map(|(others, _)| others),
            machine_cpus: machine.map(|(_, cpus)| cpus),
        }
    }
}

/// The final figures: a table for people, `name=value` lines with `kv`.
fn render(report: &Report, kv: bool) -> String {
    let mut out = String::new();
    let latency = &report.latency;
    if kv {
        let _ = writeln!(out, "runs={}", report.runs);
        let _ = writeln!(out, "record_bytes={}", report.record_bytes);
        let _ = writeln!(out, "signed={}", report.signed);
        for row in &report.throughput {
            let prefix = format!("c{}", row.concurrency);
            let _ = writeln!(out, "{prefix}_trigger_events_per_s={:.0}", row.trigger_events_per_s);
            let _ = writeln!(out, "{prefix}_ceiling_events_per_s={:.0}", row.ceiling_events_per_s);
            let _ =
                writeln!(out, "{prefix}_ratio={:.3}", row.trigger_events_per_s / row.ceiling_events_per_s);
            let _ = writeln!(out, "{prefix}_first_delivery_ms={:.0}", row.trigger_first_delivery_ms);
            let _ = writeln!(out, "{prefix}_trigger_cpu_us_per_event={:.1}", row.trigger_cpu_us_per_event);
            let _ = writeln!(out, "{prefix}_ceiling_cpu_us_per_event={:.1}", row.ceiling_cpu_us_per_event);
            if let Some(others) = row.ceiling_others_cpus {
                let _ = writeln!(out, "{prefix}_ceiling_others_cpus={others:.2}");
            }
        }
        let _ = writeln!(out, "latency_rate_events_per_s={}", latency.rate);
        let _ = writeln!(out, "latency_achieved_events_per_s={:.0}", latency.achieved_events_per_s);
        let _ = writeln!(out, "latency_concurrency={}", latency.concurrency);
        let _ = writeln!(out, "latency_p50_ms={:.3}", latency.p50_ms);
        let _ = writeln!(out, "latency_p99_ms={:.3}", latency.p99_ms);
        let _ = writeln!(out, "latency_max_ms={:.3}", latency.max_ms);
        let _ = writeln!(out, "stats_p50_ms={:.0}", latency.stats_p50_ms);
        let _ = writeln!(out, "stats_p99_ms={:.0}", latency.stats_p99_ms);
        let _ = writeln!(out, "stats_max_ms={:.0}", latency.stats_max_ms);
        return out;
    }
    let _ = writeln!(
        out,
        "webhook deliveries, {} B bodies, CloudEvents binary mode, {}; medians of {} runs",
        report.record_bytes,
        if report.signed { "signed" } else { "unsigned" },
        report.runs
    );
    let _ = writeln!(
        out,
        "{:>11}  {:>14}  {:>14}  {:>15}  {:>14}  {:>13}  {:>13}",
        "concurrency",
        "trigger ev/s",
        "ceiling ev/s",
        "trigger/ceiling",
        "first delivery",
        "trigger CPU",
        "ceiling CPU"
    );
    for row in &report.throughput {
        let _ = writeln!(
            out,
            "{:>11}  {:>14.0}  {:>14.0}  {:>14.0}%  {:>11.0} ms  {:>7.1} us/ev  {:>7.1} us/ev",
            row.concurrency,
            row.trigger_events_per_s,
            row.ceiling_events_per_s,
            100.0 * row.trigger_events_per_s / row.ceiling_events_per_s,
            row.trigger_first_delivery_ms,
            row.trigger_cpu_us_per_event,
            row.ceiling_cpu_us_per_event
        );
    }
    let _ = writeln!(
        out,
        "ceiling: the trigger's webhook executor posting the same events to the same receiver, no Kafka"
    );
    let others = report.throughput.iter().filter_map(|row| row.ceiling_others_cpus).reduce(f64::max);
    if let Some(others) = others {
        let _ = writeln!(
            out,
            "CPU: this process per event; other programs kept up to {others:.2} CPUs busy during the ceiling runs"
        );
    }
    let _ = writeln!(
        out,
        "\nlatency at {} events/s (sent at {:.0}), concurrency {}:",
        latency.rate, latency.achieved_events_per_s, latency.concurrency
    );
    let _ = writeln!(
        out,
        "  produce -> webhook receipt   p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
        latency.p50_ms, latency.p99_ms, latency.max_ms
    );
    let _ = writeln!(
        out,
        "  trigger stats (timestamp -> ack, ms buckets)  p50 {:.0} ms  p99 {:.0} ms  max {:.0} ms",
        latency.stats_p50_ms, latency.stats_p99_ms, latency.stats_max_ms
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_round_trip_and_short_values_have_none() {
        let mut value = vec![0u8; 40];
        let stamp = Stamp { sent_nanos: 123_456_789, tag: 7, sequence: u64::MAX - 1 };
        stamp.write(&mut value);
        assert_eq!(Stamp::read(&value), Some(stamp));
        assert_eq!(Stamp::read(&value[..STAMP_BYTES]), Some(stamp));
        assert_eq!(Stamp::read(&value[..STAMP_BYTES - 1]), None);
    }

    #[test]
    fn the_record_counts_each_event_once_and_ignores_other_runs() {
        let body = |sent_nanos: u64, tag: u64, sequence: u64| {
            let mut value = vec![0u8; STAMP_BYTES];
            Stamp { sent_nanos, tag, sequence }.write(&mut value);
            value
        };
        let mut record = RunRecord::new(3, 100, 1_000, 2);
        record.record(2_000, &body(500, 3, 0)); // before measure_from: counted, not measured
        record.record(2_500, &body(1_500, 3, 1));
        record.record(2_600, &body(1_500, 3, 1)); // a redelivery
        record.record(2_700, &body(1_500, 4, 2)); // another run's
        record.record(2_800, &body(1_500, 3, 100)); // past the run's events
        record.record(2_900, b"short");
        record.record(1_900, &body(1_600, 3, 99)); // received out of order
        record.record(3_000, &body(1_700, 3, 64)); // over the latency capacity
        assert_eq!((record.distinct, record.duplicates, record.strays), (4, 1, 3));
        assert_eq!((record.first_nanos, record.last_nanos), (Some(1_900), 3_000));
        assert_eq!(record.latencies_nanos, vec![1_000, 300]);
        let cpu = CpuUse { us_per_event: 2.0, process_cpus: 1.0, others_cpus: None, machine_cpus: None };
        let figures = record.figures(1_000, cpu).unwrap_or_else(|| panic!("no figures"));
        assert_eq!(figures.events_per_s, 4.0 * 1e9 / 1_100.0);
        assert_eq!(figures.first_delivery_ms, 0.0009);
        assert_eq!(figures.cpu, cpu);
        assert!(RunRecord::new(3, 1, 0, 0).figures(0, cpu).is_none());
    }

    #[test]
    fn keys_take_turns() {
        let keys: Vec<Vec<u8>> = (0..5).map(|sequence| key_of(sequence, 3)).collect();
        assert_eq!(
            keys,
            [b"key-0".to_vec(), b"key-1".to_vec(), b"key-2".to_vec(), b"key-0".to_vec(), b"key-1".to_vec()]
        );
    }

    #[test]
    fn the_report_renders_for_people_and_for_scripts() {
        let report = Report {
            runs: 3,
            record_bytes: 256,
            signed: true,
            throughput: vec![ThroughputRow {
                concurrency: 16,
                trigger_events_per_s: 8000.0,
                ceiling_events_per_s: 20000.0,
                trigger_first_delivery_ms: 250.0,
                trigger_cpu_us_per_event: 150.0,
                ceiling_cpu_us_per_event: 60.0,
                ceiling_others_cpus: Some(0.25),
            }],
            latency: LatencyRow {
                rate: 1000,
                concurrency: 16,
                achieved_events_per_s: 999.6,
                p50_ms: 1.5,
                p99_ms: 4.25,
                max_ms: 9.0,
                stats_p50_ms: 2.0,
                stats_p99_ms: 5.0,
                stats_max_ms: 9.0,
            },
        };
        let kv = render(&report, true);
        assert!(
            kv.contains("\nc16_trigger_events_per_s=8000\nc16_ceiling_events_per_s=20000\nc16_ratio=0.400\n"),
            "{kv}"
        );
        assert!(kv.contains("\nc16_ceiling_others_cpus=0.25\nlatency_rate_events_per_s=1000\n"), "{kv}");
        assert!(kv.contains("\nlatency_p99_ms=4.250\n"), "{kv}");
        let table = render(&report, false);
        assert!(table.contains("         16            8000           20000              40%"), "{table}");
        assert!(table.contains("p50 1.50 ms  p99 4.25 ms  max 9.00 ms"), "{table}");
    }
}
