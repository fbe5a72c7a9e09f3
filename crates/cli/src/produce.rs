//! `tidewater produce`: every line of stdin becomes one record, like `kcat -P`.
//!
//! A line is split into key and value at the first `--key-separator` when one is given; the
//! `--header`s are added to every record. Lines are handed to librdkafka, which batches,
//! compresses and retries them; each record's delivery report says whether the broker
//! acknowledged it. The command always flushes before it exits, and its exit status is the
//! guarantee: zero only if every line was acknowledged (as `--acks` defines acknowledged). The
//! first failures are reported with their line numbers, then a count of all of them.
//!
//! Idempotence is librdkafka's default, off (not every Kafka-compatible service supports it):
//! a retry after a lost acknowledgement can then write a record twice.
//! `-X enable.idempotence=true` (with `--acks all`) turns it on.

use std::io::{BufRead, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientContext;
use tidewater_client::{ClusterArgs, KeyValue};

use tidewater_client::timeout_ms_for_librdkafka;

use crate::progress::{Progress, Unit};
use crate::{CliContext, Connection};

#[derive(Debug, Args)]
pub struct ProduceArgs {
    #[command(flatten)]
    pub connect: ClusterArgs,
    /// The topic to write to.
    #[arg(long, short = 't')]
    pub topic: String,
    /// Split each line at the first SEP into key and value; a line without SEP gets no key.
    /// Without this flag the whole line is the value and records have no key.
    #[arg(long, short = 'K', value_name = "SEP")]
    pub key_separator: Option<String>,
    /// A header added to every record, such as source=sensor-7; may be repeated.
    #[arg(long, short = 'H', value_name = "KEY=VALUE")]
    pub header: Vec<KeyValue>,
    /// Write every record to this partition; otherwise librdkafka's partitioner picks one
    /// (by key hash, or spread out for records without a key).
    #[arg(long, short = 'p')]
    pub partition: Option<i32>,
    /// Acknowledgements to wait for: all (every in-sync replica), 1 (the leader) or 0 (none:
    /// a failed write goes unnoticed).
    #[arg(long, default_value = "all")]
    pub acks: Acks,
    /// Compression of record batches.
    #[arg(long, short = 'z', default_value = "none")]
    pub compression: Compression,
}

/// The longest line read as one record. Longer lines are skipped (and counted as failures)
/// without being held in memory. Brokers refuse much smaller records by default (Kafka's
/// message.max.bytes is about 1 MB), so this only bounds what one line can cost us.
pub(crate) const LINE_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Failures reported one by one before only counting them.
const FAILURES_REPORTED_MAX: u64 = 10;
/// How long to wait for room in librdkafka's queue before offering a record again.
const QUEUE_FULL_WAIT: Duration = Duration::from_millis(100);

/// `--acks`: acknowledgements a record waits for (Kafka's producer `acks`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Acks {
    /// Every in-sync replica has the record.
    All,
    /// The partition leader has the record.
    #[value(name = "1")]
    Leader,
    /// Nothing: the producer does not wait, and a failed write goes unnoticed.
    #[value(name = "0")]
    None,
}

/// `--compression`: how record batches are compressed (Kafka's `compression.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

/// librdkafka's value of `acks` for `--acks`.
pub fn acks_name(acks: Acks) -> &'static str {
    match acks {
        Acks::All => "all",
        Acks::Leader => "1",
        Acks::None => "0",
    }
}

/// librdkafka's value of `compression.type` for `--compression`.
pub fn compression_name(compression: Compression) -> &'static str {
    match compression {
        Compression::None => "none",
        Compression::Gzip => "gzip",
        Compression::Snappy => "snappy",
        Compression::Lz4 => "lz4",
        Compression::Zstd => "zstd",
    }
}

pub fn run(args: ProduceArgs) -> anyhow::Result<()> {
    let connect = Connection::new(&args.connect)?;
    let timeout = connect.timeout();
    let message_timeout_ms = timeout_ms_for_librdkafka(timeout).to_string();
    // The user's properties (client config file, -X) win over these.
    let config = connect.client_config(&[
        // Like any Kafka producer: a broker with auto.create.topics.enable creates the topic.
        ("allow.auto.create.topics", "true"),
        ("acks", acks_name(args.acks)),
        ("compression.type", compression_name(args.compression)),
        // A record not acknowledged within the timeout fails instead of waiting forever.
        ("message.timeout.ms", &message_timeout_ms),
    ]);
    let producer: BaseProducer<Deliveries> =
        config.create_with_context(Deliveries::default()).context("creating the Kafka producer")?;

    let separator = args.key_separator.as_deref().map(str::as_bytes);
    anyhow::ensure!(separator.is_none_or(|separator| !separator.is_empty()), "--key-separator is empty");
    let mut stdin = std::io::stdin().lock();
    // Redirected from a file, stdin has a size: progress is shown against it.
    let input_bytes = std::fs::metadata("/dev/stdin")
        .ok()
        .filter(|metadata| metadata.is_file())
        .map(|metadata| metadata.len());
    let progress = input_bytes
        .map(|total| Progress::new(format!("producing to {}", args.topic), Some(total), Unit::Bytes));
    let mut bytes_read = 0u64;
    let mut line = Vec::new();
    let mut line_number = 0usize;
    loop {
        let read = read_line(&mut stdin, &mut line).context("reading stdin")?;
        line_number += 1;
        if !matches!(read, LineRead::End) {
            // The line and its newline (a last line may lack one: never past the file's size).
            bytes_read = (bytes_read + line.len() as u64 + 1).min(input_bytes.unwrap_or(u64::MAX));
            if let Some(progress) = &progress {
                progress.set(bytes_read);
            }
        }
        match read {
            LineRead::End => break,
            LineRead::TooLong => {
                producer
                    .context()
                    .fail(line_number, format_args!("longer than {LINE_BYTES_MAX} bytes; skipped"));
                continue;
            }
            LineRead::Line => {}
        }
        let (key, value) = match separator {
            Some(separator) => split_key(&line, separator),
            None => (None, line.as_slice()),
        };
        let mut record = BaseRecord::with_opaque_to(&args.topic, line_number).payload(value);
        if let Some(key) = key {
            record = record.key(key);
        }
        if let Some(partition) = args.partition {
            record = record.partition(partition);
        }
        if !args.header.is_empty() {
            let headers = args.header.iter().fold(OwnedHeaders::new(), |headers, header| {
                headers.insert(Header { key: &header.key, value: Some(header.value.as_bytes()) })
            });
            record = record.headers(headers);
        }
        // librdkafka's queue is bounded (queue.buffering.max.messages/kbytes): when it is full,
        // serve delivery reports until there is room.
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                    record = returned;
                    producer.poll(QUEUE_FULL_WAIT);
                }
                Err((error, _)) => {
                    producer.context().fail(line_number, format_args!("{error}"));
                    break;
                }
            }
        }
        producer.poll(Duration::ZERO);
    }

    if let Some(progress) = &progress {
        progress.finish();
    }
    // Every record fails by message.timeout.ms, so the flush ends by then; the margin covers
    // the last delivery reports.
    let flushed = producer.flush(timeout + Duration::from_secs(5));
    producer.poll(Duration::ZERO);
    let deliveries = producer.context();
    let failed = deliveries.failed.load(Ordering::Relaxed);
    let delivered = deliveries.delivered.load(Ordering::Relaxed);
    if let Err(error) = flushed {
        anyhow::bail!(
            "{delivered} records acknowledged, {failed} failed, the rest still unacknowledged: {error}"
        );
    }
    anyhow::ensure!(failed == 0, "{failed} of {} records were not produced", failed + delivered);
    Ok(())
}

/// Counts delivery reports and reports the first failures on stderr.
#[derive(Debug, Default)]
struct Deliveries {
    client: CliContext,
    delivered: AtomicU64,
    failed: AtomicU64,
}

impl Deliveries {
    fn fail(&self, line_number: usize, reason: std::fmt::Arguments<'_>) {
        let failed = self.failed.fetch_add(1, Ordering::Relaxed) + 1;
        if failed <= FAILURES_REPORTED_MAX {
            eprintln!("error: line {line_number}: {reason}");
        } else if failed == FAILURES_REPORTED_MAX + 1 {
            eprintln!("error: more records failed; counting the rest without reporting each");
        }
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
    /// The line number of the record, for error messages.
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, line_number: usize) {
        match result {
            Ok(_) => {
                self.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Err((error, _)) => self.fail(line_number, format_args!("{error}")),
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum LineRead {
    /// `line` holds the next line, without its `\n`.
    Line,
    /// The next line was longer than [`LINE_BYTES_MAX`]; it has been skipped.
    TooLong,
    End,
}

/// Reads the next line into `line`, holding at most [`LINE_BYTES_MAX`] + 1 bytes of it.
fn read_line(reader: &mut impl BufRead, line: &mut Vec<u8>) -> std::io::Result<LineRead> {
    line.clear();
    let read = (&mut *reader).take(LINE_BYTES_MAX as u64 + 1).read_until(b'\n', line)?;
    if read == 0 {
        return Ok(LineRead::End);
    }
    if line.last() == Some(&b'\n') {
        line.pop();
        return Ok(LineRead::Line);
    }
    if line.len() <= LINE_BYTES_MAX {
        // The last line of the input, without a newline.
        return Ok(LineRead::Line);
    }
    // Too long: skip to the end of the line without keeping it.
    line.clear();
    loop {
        let buffer = reader.fill_buf()?;
        if buffer.is_empty() {
            return Ok(LineRead::TooLong);
        }
        match buffer.iter().position(|&byte| byte == b'\n') {
            Some(newline) => {
                reader.consume(newline + 1);
                return Ok(LineRead::TooLong);
            }
            None => {
                let length = buffer.len();
                reader.consume(length);
            }
        }
    }
}

/// Splits `line` at the first `separator` into key and value; no key if it is absent.
fn split_key<'a>(line: &'a [u8], separator: &[u8]) -> (Option<&'a [u8]>, &'a [u8]) {
    match line.windows(separator.len()).position(|window| window == separator) {
        Some(index) => (Some(&line[..index]), &line[index + separator.len()..]),
        None => (None, line),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_key_uses_the_first_separator() {
        assert_eq!(split_key(b"k1:v:1", b":"), (Some(&b"k1"[..]), &b"v:1"[..]));
        assert_eq!(split_key(b"k1::v", b"::"), (Some(&b"k1"[..]), &b"v"[..]));
        assert_eq!(split_key(b":v", b":"), (Some(&b""[..]), &b"v"[..]));
        assert_eq!(split_key(b"no separator", b":"), (None, &b"no separator"[..]));
    }

    fn read_all(input: &[u8]) -> Vec<Result<Vec<u8>, LineRead>> {
        let mut reader = std::io::BufReader::with_capacity(4096, input);
        let mut line = Vec::new();
        let mut lines = Vec::new();
        loop {
            match read_line(&mut reader, &mut line).expect("read from memory") {
                LineRead::End => return lines,
                LineRead::Line => lines.push(Ok(line.clone())),
                LineRead::TooLong => lines.push(Err(LineRead::TooLong)),
            }
        }
    }

    #[test]
    fn lines_keep_everything_but_the_newline() {
        assert_eq!(
            read_all(b"a\n\nb\r\nlast"),
            vec![Ok(b"a".to_vec()), Ok(b"".to_vec()), Ok(b"b\r".to_vec()), Ok(b"last".to_vec())]
        );
        assert!(read_all(b"").is_empty());
    }

    #[test]
    fn a_line_at_the_limit_is_read_and_one_past_it_is_skipped() {
        let mut input = vec![b'x'; LINE_BYTES_MAX];
        input.push(b'\n');
        input.extend(std::iter::repeat_n(b'y', LINE_BYTES_MAX + 1));
        input.extend_from_slice(b"\nafter\n");
        input.extend(std::iter::repeat_n(b'z', LINE_BYTES_MAX + 1));
        let lines = read_all(&input);
        assert_eq!(lines.len(), 4);
        assert_eq!(lines[0].as_ref().map(Vec::len), Ok(LINE_BYTES_MAX));
        assert_eq!(lines[1], Err(LineRead::TooLong));
        assert_eq!(lines[2], Ok(b"after".to_vec()));
        // Too long and without a final newline.
        assert_eq!(lines[3], Err(LineRead::TooLong));
    }
}
