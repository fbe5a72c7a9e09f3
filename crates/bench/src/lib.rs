//! `tidewater bench produce | consume | e2e | trigger | mqtt`: a load generator for any
//! Kafka-compatible cluster, and for MQTT servers.
//!
//! Like the other client commands it is an ordinary Kafka client on librdkafka (the `rdkafka`
//! crate) and never reaches into the embedded broker, so the same command measures
//! `tidewater serve`, Apache Kafka or Redpanda, and its figures compare with librdkafka's own
//! `rdkafka_performance` (value bytes per second, MB = 10^6 bytes).
//!
//! - `produce` (`produce.rs`): records as fast as librdkafka takes them, several runs, median.
//! - `consume` (`consume.rs`): a topic from its beginning to its end as fast as possible.
//! - `e2e` (`e2e.rs`): a producer paced at a fixed rate and a consumer in the same process; each
//!   record carries the time it was due to be sent, so latency includes any time the producer
//!   fell behind its schedule (no coordinated omission).
//! - `trigger` (`trigger.rs`): a trigger delivering a topic to a webhook receiver in this
//!   process, next to the same HTTP client posting without Kafka, and its end-to-end latency.
//! - `mqtt load | idle | handshakes` (`mqtt.rs`): simulated devices against any MQTT server (the
//!   Tidewater gateway or Mosquitto), over TCP or TLS: QoS 1 publish rate and PUBACK latency,
//!   resident memory per idle connection, and new sessions (TLS handshakes) per second. It
//!   speaks MQTT, not Kafka; with `--gateway` it registers its devices and checks
//!   the telemetry topic through the cluster.
//! - `connect` (`connect.rs`): new SASL (and TLS) logins per second against a listener.
//! - `loopback` (`loopback.rs`, hidden): raw TCP over 127.0.0.1, the network ceiling the other
//!   figures are compared with by `scripts/bench`.
//!
//! Progress goes to stderr; the final figures go to stdout, for people or, with `--kv`, as
//! `name=value` lines for scripts. This module owns what the modes share: the figures' output,
//! the statistics (median, percentiles), the topic set-up, the producer configuration and the
//! delivery counting. Every count, duration and size a user passes is bounded (see the limits
//! below) before anything is allocated for it.

pub mod connect;
pub mod consume;
pub mod e2e;
pub mod loopback;
mod measure;
pub mod mqtt;
pub mod produce;
pub mod trigger;

use std::fmt::Display;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Subcommand;
use rdkafka::client::{Client, ClientContext};
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{DeliveryResult, ProducerContext};
use rdkafka::ClientConfig;
use tidewater_client::{admin, timeout_ms_for_librdkafka};

use tidewater_cli::produce::{acks_name, compression_name, Acks, Compression};
use tidewater_cli::{topic_names, topic_partitions, CliContext, Connection};

/// The largest record value a bench sends: librdkafka's default `message.max.bytes` is 1,000,000
/// bytes for a whole request, so larger records need settings this command does not make.
pub(crate) const RECORD_BYTES_MAX: u32 = 900_000;
/// The longest a run may last, and the longest warm-up.
pub(crate) const DURATION_SECS_MAX: f64 = 3600.0;
/// The most runs one command makes.
pub(crate) const RUNS_MAX: usize = 100;
/// How long `flush` may wait past the delivery timeout for the last delivery reports.
const FLUSH_MARGIN: Duration = Duration::from_secs(5);
/// How long to wait for room in librdkafka's queue before offering a record again.
const QUEUE_FULL_WAIT: Duration = Duration::from_millis(10);
/// How long to wait for a newly created topic to show a leader for every partition.
const TOPIC_READY_POLL: Duration = Duration::from_millis(100);
/// 10^6: throughputs are in MB (10^6 bytes) per second, as rdkafka_performance prints them.
pub(crate) const MEGA: f64 = 1e6;

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Produce throughput: records as fast as the cluster acknowledges them, several runs,
    /// median MB/s and msgs/s.
    Produce(produce::ProduceBenchArgs),
    /// Consume throughput: read a topic from its beginning to its end as fast as possible.
    Consume(consume::ConsumeBenchArgs),
    /// End-to-end latency at a fixed rate: a paced producer and a consumer in this process;
    /// p50/p99/p99.9/max from when each record was due to be sent to when it was consumed.
    E2e(e2e::E2eBenchArgs),
    /// Trigger throughput and latency: webhook deliveries per second at several concurrencies
    /// beside the same HTTP client without Kafka, and produce-to-webhook latency at a fixed rate.
    Trigger(Box<trigger::TriggerBenchArgs>),
    /// MQTT device load against any MQTT server, over TCP or TLS (`scripts/bench-mqtt` compares
    /// the Tidewater gateway with Mosquitto): QoS 1 msgs/s and PUBACK latency of simulated
    /// devices, resident memory per idle connection, and new sessions per second.
    #[command(subcommand)]
    Mqtt(mqtt::MqttBenchCommand),
    /// New authenticated connections per second: SASL logins (SCRAM or PLAIN), over TLS with
    /// --tls-ca, as fast as the broker completes them; p50/p99 of one whole login.
    Connect(connect::ConnectBenchArgs),
    /// TCP bandwidth over 127.0.0.1, no Kafka involved: the network ceiling for the others.
    #[command(hide = true)]
    Loopback(loopback::LoopbackArgs),
}

pub fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Produce(args) => produce::run(args),
        BenchCommand::Consume(args) => consume::run(args),
        BenchCommand::E2e(args) => e2e::run(args),
        BenchCommand::Trigger(args) => trigger::run(*args),
        BenchCommand::Mqtt(command) => mqtt::run(command),
        BenchCommand::Connect(args) => connect::run(args),
        BenchCommand::Loopback(args) => loopback::run(args),
    }
}

/// The figures a bench ends with, in the order added.
#[derive(Debug, Default)]
pub(crate) struct Summary {
    figures: Vec<(&'static str, String)>,
}

impl Summary {
    /// Adds a figure. Names carry their unit (`mb_per_s`, `p99_ms`) and are stable: scripts read
    /// them.
    pub(crate) fn add(&mut self, name: &'static str, value: impl Display) -> &mut Self {
        self.figures.push((name, value.to_string()));
        self
    }

    /// The figures as text: `name=value` lines with `kv`, aligned `name  value` lines otherwise.
    pub(crate) fn render(&self, kv: bool) -> String {
        let width = self.figures.iter().map(|(name, _)| name.len()).max().unwrap_or(0);
        self.figures
            .iter()
            .map(
                |(name, value)| {
                    if kv {
                        format!("{name}={value}\n")
                    } else {
                        format!("{name:<width$}  {value}\n")
                    }
                },
            )
            .collect()
    }
}

/// Checks a `--duration-secs` or `--warmup-secs` value.
pub(crate) fn check_seconds(name: &str, seconds: f64, allow_zero: bool) -> anyhow::Result<Duration> {
    let low_ok = if allow_zero { seconds >= 0.0 } else { seconds > 0.0 };
    anyhow::ensure!(
        low_ok && seconds <= DURATION_SECS_MAX,
        "{name} must be {} {DURATION_SECS_MAX} seconds, not {seconds}",
        if allow_zero { "between 0 and" } else { "above 0 and at most" }
    );
    Ok(Duration::from_secs_f64(seconds))
}

/// Checks `--runs`.
pub(crate) fn check_runs(runs: usize) -> anyhow::Result<()> {
    anyhow::ensure!((1..=RUNS_MAX).contains(&runs), "--runs must be between 1 and {RUNS_MAX}, not {runs}");
    Ok(())
}

/// Record values: bytes from a small xorshift generator, so a compressing producer (or disk)
/// finds nothing to squeeze and every run sends the same bytes.
pub(crate) fn payload(len: usize) -> Vec<u8> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// The partition ids of `topic`, creating it with `partitions` partitions if it does not exist
/// yet and waiting (up to the connect timeout) until every partition has a leader.
pub(crate) fn ensure_topic<C: ClientContext>(
    client: &Client<C>,
    connect: &Connection,
    topic: &str,
    partitions: i32,
) -> anyhow::Result<Vec<i32>> {
    anyhow::ensure!(partitions >= 1, "--partitions must be at least 1");
    if !topic_names(client, connect)?.iter().any(|name| name == topic) {
        admin::create_topic(client, &admin::NewTopic::new(topic, partitions, &[]), connect.timeout())
            .with_context(|| format!("creating topic {topic:?}"))?;
    }
    let deadline = Instant::now() + connect.timeout();
    loop {
        let found = topic_partitions(client, connect, topic);
        if let Ok(found) = &found {
            if !found.is_empty() && found.iter().all(|partition| partition.leader >= 0) {
                if found.len() != partitions as usize {
                    eprintln!(
                        "note: topic {topic:?} already exists with {} partitions; using them all",
                        found.len()
                    );
                }
                return Ok(found.iter().map(|partition| partition.id).collect());
            }
        }
        if Instant::now() >= deadline {
            found?;
            anyhow::bail!("topic {topic:?} has partitions without a leader after {:?}", connect.timeout());
        }
        std::thread::sleep(TOPIC_READY_POLL);
    }
}

/// The producer settings shared by `produce` and `e2e`; the user's properties (client config
/// file, `-X`) are applied last.
pub(crate) fn producer_config(
    connect: &Connection,
    acks: Acks,
    linger_ms: u32,
    batch_bytes: u32,
    compression: Compression,
) -> ClientConfig {
    let (linger_ms, batch_bytes) = (linger_ms.to_string(), batch_bytes.to_string());
    let message_timeout_ms = timeout_ms_for_librdkafka(connect.timeout()).to_string();
    connect.client_config(&[
        ("client.id", "tidewater-bench"),
        ("acks", acks_name(acks)),
        ("linger.ms", &linger_ms),
        ("batch.size", &batch_bytes),
        ("compression.type", compression_name(compression)),
        // A record not acknowledged within the timeout fails instead of waiting forever.
        ("message.timeout.ms", &message_timeout_ms),
    ])
}

/// Counts delivery reports; the first failure is kept for the error message.
#[derive(Debug, Default)]
pub(crate) struct Deliveries {
    client: CliContext,
    delivered: AtomicU64,
    failed: AtomicU64,
    first_failure: Mutex<Option<String>>,
    /// `e2e` only: the latency of each acknowledgement, read from the record's due time.
    ack_latencies: Option<Arc<e2e::AckLatencies>>,
}

impl Deliveries {
    pub(crate) fn with_ack_latencies(ack_latencies: Arc<e2e::AckLatencies>) -> Deliveries {
        Deliveries { ack_latencies: Some(ack_latencies), ..Deliveries::default() }
    }

    pub(crate) fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }

    pub(crate) fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    /// An error naming the first failed delivery, if any record failed.
    pub(crate) fn check_no_failures(&self) -> anyhow::Result<()> {
        let failed = self.failed();
        if failed == 0 {
            return Ok(());
        }
        let first = self.first_failure.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone();
        anyhow::bail!("{failed} records were not acknowledged; the first: {}", first.unwrap_or_default())
    }
}

impl ClientContext for Deliveries {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        self.client.log(level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.client.error(error, reason);
    }
}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(message) => {
                self.delivered.fetch_add(1, Ordering::Relaxed);
                if let (Some(ack_latencies), Some(value)) = (&self.ack_latencies, message.payload()) {
                    ack_latencies.record(value);
                }
            }
            Err((error, _)) => {
                if self.failed.fetch_add(1, Ordering::Relaxed) == 0 {
                    *self.first_failure.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) =
                        Some(error.to_string());
                }
            }
        }
    }
}

/// Hands `record` to librdkafka, serving delivery reports while its queue is full (the queue is
/// bounded by queue.buffering.max.messages/kbytes; records leave it once acknowledged or failed
/// by message.timeout.ms, so this wait ends).
pub(crate) fn send(
    producer: &rdkafka::producer::BaseProducer<Deliveries>,
    mut record: rdkafka::producer::BaseRecord<'_, (), [u8]>,
) -> anyhow::Result<()> {
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull), returned)) => {
                record = returned;
                producer.poll(QUEUE_FULL_WAIT);
            }
            Err((error, _)) => return Err(error).context("handing a record to librdkafka"),
        }
    }
}

/// Waits for every record handed to librdkafka to be acknowledged or to fail.
pub(crate) fn flush(
    producer: &rdkafka::producer::BaseProducer<Deliveries>,
    timeout: Duration,
) -> anyhow::Result<()> {
    use rdkafka::producer::Producer;
    producer.flush(timeout + FLUSH_MARGIN).context("waiting for the last acknowledgements")?;
    producer.poll(Duration::ZERO);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_renders_for_people_and_for_scripts() {
        let mut summary = Summary::default();
        summary.add("mb_per_s", "612.3").add("msgs_per_s", 598_000);
        assert_eq!(summary.render(true), "mb_per_s=612.3\nmsgs_per_s=598000\n");
        assert_eq!(summary.render(false), "mb_per_s    612.3\nmsgs_per_s  598000\n");
    }

    #[test]
    fn payload_is_repeatable_and_not_constant() {
        let bytes = payload(1024);
        assert_eq!(bytes, payload(1024));
        assert!(bytes.iter().any(|&byte| byte != bytes[0]));
    }

    #[test]
    fn seconds_and_runs_are_bounded() {
        assert!(check_seconds("--duration-secs", 0.0, false).is_err());
        assert_eq!(check_seconds("--warmup-secs", 0.0, true).ok(), Some(Duration::ZERO));
        assert!(check_seconds("--duration-secs", DURATION_SECS_MAX, false).is_ok());
        assert!(check_seconds("--duration-secs", DURATION_SECS_MAX + 1.0, false).is_err());
        assert!(check_seconds("--duration-secs", f64::NAN, false).is_err());
        assert!(check_runs(0).is_err());
        assert!(check_runs(RUNS_MAX).is_ok());
        assert!(check_runs(RUNS_MAX + 1).is_err());
    }
}
