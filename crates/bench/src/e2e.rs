//! `tidewater bench e2e`: end-to-end latency at a fixed rate, from producer to consumer.
//!
//! A consumer is assigned the topic's partitions at their current end, then a producer in the
//! same process sends `--rate` records per second for `--warmup-secs` plus `--duration-secs`.
//! Record `i` is due at `start + i / rate`; its first 8 bytes carry that due time (nanoseconds on
//! this process's monotonic clock), and the consumer records `now - due` when the record
//! arrives. Measuring from the due time rather than from the moment `send` was called keeps the
//! producer's own delays in the figure: a producer that falls behind its schedule cannot hide
//! the wait it causes (the "coordinated omission" of naive latency benchmarks). Records due
//! during the warm-up (connections, first fetches) are consumed but not measured. The same due
//! time read back in each delivery report gives the producer's side alone (`ack_*`: due to
//! acknowledged, which under acks=all and `fsync = always` means on disk), so a slow figure can
//! be placed on the write path or on the read path.
//!
//! The producer wakes at most every millisecond and sends every record due by then, so pacing
//! costs little CPU; the at most one millisecond a record may wait for the wake-up is part of
//! its latency. The latencies are kept in a `Vec` (bounded by `LATENCY_SAMPLES_MAX`) and sorted
//! once at the end: exact percentiles, no histogram buckets.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::Args;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use tidewater_client::ClusterArgs;

use super::{Deliveries, Summary};
use tidewater_cli::produce::{Acks, Compression};
use tidewater_cli::{CliContext, Connection};

/// The most latencies one run keeps (8 bytes each): a rate and duration needing more are refused
/// before anything is allocated.
pub(crate) const LATENCY_SAMPLES_MAX: u64 = 20_000_000;
/// The highest rate the pacing loop is asked for.
pub(crate) const RATE_MAX: u64 = 10_000_000;
/// Bytes of each record value taken by the due time.
const STAMP_BYTES: usize = 8;
/// The longest the paced producer sleeps at once.
const PACING_SLEEP_MAX: Duration = Duration::from_millis(1);
/// How long one consumer poll waits before checking whether to stop.
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// How long the consumer may take, after the last record is acknowledged, to receive the rest.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Args)]
pub struct E2eBenchArgs {
    #[command(flatten)]
    pub(crate) connect: ClusterArgs,
    /// The topic to use; by default a new one per command, tidewater-bench-e2e-<unix ms>.
    #[arg(long, short = 't')]
    pub(crate) topic: Option<String>,
    /// Records per second the producer sends, on a fixed schedule.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=RATE_MAX))]
    pub(crate) rate: u64,
    /// Seconds measured, after the warm-up.
    #[arg(long, default_value_t = 10.0)]
    pub(crate) duration_secs: f64,
    /// Seconds sent first and not measured (connections, first fetches).
    #[arg(long, default_value_t = 2.0)]
    pub(crate) warmup_secs: f64,
    /// Value bytes of every record; the first 8 carry its due time.
    #[arg(long, default_value_t = 1024,
          value_parser = clap::value_parser!(u32).range(STAMP_BYTES as i64..=i64::from(super::RECORD_BYTES_MAX)))]
    pub(crate) record_bytes: u32,
    /// Acknowledgements each record waits for before the consumer can see it: all, 1 or 0.
    #[arg(long, default_value = "all")]
    pub(crate) acks: Acks,
    /// librdkafka linger.ms: how long a record may wait for others to share its request. It
    /// adds up to that much to a record's latency but saves a request per record at high
    /// rates; 1 is what latency benchmarks of Kafka commonly use (0 sends a request for
    /// every few records and costs the broker several times the CPU at 10,000 msgs/s).
    #[arg(long, default_value_t = 1)]
    pub(crate) linger_ms: u32,
    /// librdkafka batch.size: the most bytes in one partition's batch.
    #[arg(long, default_value_t = 1_000_000)]
    pub(crate) batch_bytes: u32,
    /// Partitions of the topic if it has to be created.
    #[arg(long, short = 'p', default_value_t = 1)]
    pub(crate) partitions: i32,
    /// Print the final figures as name=value lines, for scripts.
    #[arg(long)]
    pub(crate) kv: bool,
}

pub(crate) fn run(args: E2eBenchArgs) -> anyhow::Result<()> {
    let duration = super::check_seconds("--duration-secs", args.duration_secs, false)?;
    let warmup = super::check_seconds("--warmup-secs", args.warmup_secs, true)?;
    let measured = (args.rate as f64 * duration.as_secs_f64()).ceil() as u64;
    anyhow::ensure!(
        measured <= LATENCY_SAMPLES_MAX,
        "--rate times --duration-secs is {measured} records, more than the {LATENCY_SAMPLES_MAX} \
         latencies one run keeps"
    );
    let total = (args.rate as f64 * (warmup + duration).as_secs_f64()).ceil() as u64;
    let topic = args.topic.clone().unwrap_or_else(|| {
        let unix_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| since.as_millis());
        format!("tidewater-bench-e2e-{unix_ms}")
    });
    // The clock every due time is measured on; the schedule starts once everything is set up.
    let origin = Instant::now();
    let ack_latencies = Arc::new(AckLatencies::new(origin, measured));
    let connect = Connection::new(&args.connect)?;
    let config =
        super::producer_config(&connect, args.acks, args.linger_ms, args.batch_bytes, Compression::None);
    let producer: BaseProducer<Deliveries> = config
        .create_with_context(Deliveries::with_ack_latencies(ack_latencies.clone()))
        .context("creating the Kafka producer")?;
    let partitions = super::ensure_topic(producer.client(), &connect, &topic, args.partitions)?;
    let consumer = assigned_consumer(&connect, &topic, &partitions)?;
    eprintln!(
        "bench e2e: topic {topic:?} ({} partitions), {} records/s of {} B, acks={}, linger.ms={}, \
         {} s warm-up + {} s measured",
        partitions.len(),
        args.rate,
        args.record_bytes,
        tidewater_cli::produce::acks_name(args.acks),
        args.linger_ms,
        args.warmup_secs,
        args.duration_secs
    );

    let start_nanos = origin.elapsed().as_nanos() as u64;
    let warmup_end_nanos = start_nanos + warmup.as_nanos() as u64;
    ack_latencies.measure_from(warmup_end_nanos);
    let stop = Arc::new(AtomicBool::new(false));
    // Records the producer has sent so far, so the consumer knows when it has them all.
    let sent_total = Arc::new(AtomicU64::new(u64::MAX));
    let consumer_thread = {
        let (stop, sent_total) = (stop.clone(), sent_total.clone());
        std::thread::Builder::new()
            .name("bench-consumer".into())
            .spawn(move || {
                measure_latencies(&consumer, origin, warmup_end_nanos, measured, &stop, &sent_total)
            })
            .context("starting the consumer thread")?
    };

    let produced = send_paced(&producer, &args, &topic, partitions.len() == 1, origin, start_nanos, total);
    // Whatever happened, the consumer stops: at once on failure, after the drain otherwise.
    let sent = if produced.is_ok() { total } else { 0 };
    if produced.is_err() {
        stop.store(true, Ordering::Relaxed);
    }
    sent_total.store(sent, Ordering::Relaxed);
    let drain_deadline = Instant::now() + DRAIN_TIMEOUT;
    while !consumer_thread.is_finished() && Instant::now() < drain_deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    stop.store(true, Ordering::Relaxed);
    let consumed = consumer_thread.join().map_err(|_| anyhow::anyhow!("the consumer thread panicked"))?;
    let send_elapsed = produced?;
    let Consumed { received, mut latencies_nanos, error } = consumed;
    if let Some(error) = error {
        return Err(error);
    }
    anyhow::ensure!(!latencies_nanos.is_empty(), "no record due after the warm-up was consumed");
    latencies_nanos.sort_unstable();
    let mut acks_nanos = ack_latencies.take();
    acks_nanos.sort_unstable();
    let millis = |nanos: u64| format!("{:.3}", nanos as f64 / 1e6);
    let pick = |percent: f64| millis(crate::measure::percentile(&latencies_nanos, percent).unwrap_or(0));
    let pick_ack = |percent: f64| millis(crate::measure::percentile(&acks_nanos, percent).unwrap_or(0));
    let mean = latencies_nanos.iter().map(|&nanos| nanos as f64).sum::<f64>() / latencies_nanos.len() as f64;
    let mut summary = Summary::default();
    summary
        .add("topic", &topic)
        .add("record_bytes", args.record_bytes)
        .add("acks", tidewater_cli::produce::acks_name(args.acks))
        .add("linger_ms", args.linger_ms)
        .add("rate_msgs_per_s", args.rate)
        .add("achieved_msgs_per_s", format!("{:.0}", sent as f64 / send_elapsed.as_secs_f64()))
        .add("sent", sent)
        .add("received", received)
        .add("lost", sent.saturating_sub(received))
        .add("samples", latencies_nanos.len())
        .add("p50_ms", pick(50.0))
        .add("p99_ms", pick(99.0))
        .add("p999_ms", pick(99.9))
        .add("max_ms", pick(100.0))
        .add("mean_ms", format!("{:.3}", mean / 1e6))
        .add("ack_p50_ms", pick_ack(50.0))
        .add("ack_p99_ms", pick_ack(99.0))
        .add("ack_p999_ms", pick_ack(99.9))
        .add("ack_max_ms", pick_ack(100.0));
    print!("{}", summary.render(args.kv));
    anyhow::ensure!(received >= sent, "{} of {sent} acknowledged records never arrived", sent - received);
    Ok(())
}

/// A consumer assigned every partition of `topic` at its current end.
fn assigned_consumer(
    connect: &Connection,
    topic: &str,
    partitions: &[i32],
) -> anyhow::Result<BaseConsumer<CliContext>> {
    let consumer = connect
        .assign_only_consumer(&[("client.id", "tidewater-bench"), ("group.id", "tidewater-bench-e2e")])?;
    let mut assignment = TopicPartitionList::with_capacity(partitions.len());
    for &partition in partitions {
        let (_, high) = consumer
            .fetch_watermarks(topic, partition, connect.timeout())
            .with_context(|| format!("reading the end offset of {topic:?} partition {partition}"))?;
        assignment.add_partition_offset(topic, partition, Offset::Offset(high))?;
    }
    consumer.assign(&assignment).with_context(|| format!("assigning the partitions of {topic:?}"))?;
    Ok(consumer)
}

/// Sends `total` records on the schedule `start + i / rate` (`start` in nanoseconds after
/// `origin`), then waits for every acknowledgement. Returns how long sending took (to the last
/// record handed over).
fn send_paced(
    producer: &BaseProducer<Deliveries>,
    args: &E2eBenchArgs,
    topic: &str,
    single_partition: bool,
    origin: Instant,
    start_nanos: u64,
    total: u64,
) -> anyhow::Result<Duration> {
    let mut value = super::payload(args.record_bytes as usize);
    let nanos_per_record = 1e9 / args.rate as f64;
    let start = origin + Duration::from_nanos(start_nanos);
    let mut sent = 0u64;
    while sent < total {
        // Every record due by now; at least the next one, since we slept until it was due.
        let elapsed_nanos = start.elapsed().as_nanos() as f64;
        let due_count = ((elapsed_nanos / nanos_per_record).floor() as u64 + 1).min(total);
        while sent < due_count {
            let due_nanos = start_nanos + (sent as f64 * nanos_per_record) as u64;
            value[..STAMP_BYTES].copy_from_slice(&due_nanos.to_le_bytes());
            let mut record = BaseRecord::<(), [u8]>::to(topic).payload(&value[..]);
            if single_partition {
                record = record.partition(0);
            }
            super::send(producer, record)?;
            sent += 1;
        }
        producer.poll(Duration::ZERO);
        let next_due = start + Duration::from_nanos((sent as f64 * nanos_per_record) as u64);
        if let Some(wait) = next_due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait.min(PACING_SLEEP_MAX));
        }
    }
    let send_elapsed = start.elapsed();
    super::flush(producer, args.connect.timeout())?;
    producer.context().check_no_failures()?;
    Ok(send_elapsed)
}

/// The producer's side of the latency: from a record's due time to its acknowledgement (as
/// seen when the producer next serves delivery reports, at most a millisecond later). Kept
/// beside the end-to-end figure, it tells the time to durability from the time to a consumer.
#[derive(Debug)]
pub(crate) struct AckLatencies {
    origin: Instant,
    /// Due times before this are the warm-up's; `u64::MAX` until the schedule starts.
    measure_from_nanos: AtomicU64,
    capacity: usize,
    samples: std::sync::Mutex<Vec<u64>>,
}

impl AckLatencies {
    fn new(origin: Instant, capacity: u64) -> AckLatencies {
        AckLatencies {
            origin,
            measure_from_nanos: AtomicU64::new(u64::MAX),
            capacity: capacity as usize,
            samples: std::sync::Mutex::new(Vec::with_capacity(capacity as usize)),
        }
    }

    fn measure_from(&self, due_nanos: u64) {
        self.measure_from_nanos.store(due_nanos, Ordering::Relaxed);
    }

    /// Records the acknowledgement of a record with this value, now.
    pub(crate) fn record(&self, value: &[u8]) {
        let acknowledged_nanos = self.origin.elapsed().as_nanos() as u64;
        let Some(due_nanos) = due_nanos(value) else { return };
        if due_nanos < self.measure_from_nanos.load(Ordering::Relaxed) {
            return;
        }
        let mut samples = self.samples.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if samples.len() < self.capacity {
            samples.push(acknowledged_nanos.saturating_sub(due_nanos));
        }
    }

    fn take(&self) -> Vec<u64> {
        std::mem::take(&mut *self.samples.lock().unwrap_or_else(|poisoned| poisoned.into_inner()))
    }
}

/// The due time a record's value starts with.
fn due_nanos(value: &[u8]) -> Option<u64> {
    let stamp: [u8; STAMP_BYTES] = value.get(..STAMP_BYTES)?.try_into().ok()?;
    Some(u64::from_le_bytes(stamp))
}

/// What the consumer thread saw.
#[derive(Debug)]
struct Consumed {
    received: u64,
    latencies_nanos: Vec<u64>,
    error: Option<anyhow::Error>,
}

/// Polls until it has received as many records as were sent (`sent_total`, `u64::MAX` while the
/// producer runs) or `stop` is set. Latencies of records due after the warm-up are kept, up to
/// `capacity`.
fn measure_latencies(
    consumer: &BaseConsumer<CliContext>,
    origin: Instant,
    warmup_end_nanos: u64,
    capacity: u64,
    stop: &AtomicBool,
    sent_total: &AtomicU64,
) -> Consumed {
    let mut latencies_nanos = Vec::with_capacity(capacity as usize);
    let mut received = 0u64;
    while received < sent_total.load(Ordering::Relaxed) && !stop.load(Ordering::Relaxed) {
        let message = match consumer.poll(POLL_INTERVAL) {
            None => continue,
            Some(Ok(message)) => message,
            Some(Err(error)) => {
                let error = anyhow::Error::new(error).context("consuming");
                return Consumed { received, latencies_nanos, error: Some(error) };
            }
        };
        let arrived_nanos = origin.elapsed().as_nanos() as u64;
        received += 1;
        let Some(due_nanos) = message.payload().and_then(due_nanos) else { continue };
        if due_nanos >= warmup_end_nanos && (latencies_nanos.len() as u64) < capacity {
            latencies_nanos.push(arrived_nanos.saturating_sub(due_nanos));
        }
    }
    Consumed { received, latencies_nanos, error: None }
}
