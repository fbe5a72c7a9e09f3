//! `tidewater consume`: print a topic's records, like `kcat -C`.
//!
//! Partitions are read by explicit assignment with explicit start offsets: no consumer group
//! joins, nothing is committed (`enable.auto.commit=false`, and no commit call), so running it
//! changes nothing on the cluster. The `group.id` set below is a throwaway because librdkafka
//! wants one on every consumer; it is never used to join or commit.
//!
//! `--from @TIMESTAMP_MS` is resolved per partition with ListOffsets (librdkafka's
//! `offsets_for_times`): the first record at or after the time, or the partition's end if none
//! is. A start offset outside a partition's range is an error (`auto.offset.reset=error`)
//! rather than a silent jump. The command stops after `--count` records, at the end of every
//! partition with `--exit-at-end`, or on Ctrl-C / SIGTERM; output is flushed in every case, and
//! a closed stdout (as with `| head`) ends it quietly.

use std::collections::HashSet;
use std::io::{BufWriter, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use tidewater_client::ClusterArgs;

use crate::format::RecordView;
use crate::{CliContext, Connection};

#[derive(Debug, Args)]
pub struct ConsumeArgs {
    #[command(flatten)]
    pub connect: ClusterArgs,
    /// The topic to read.
    #[arg(long, short = 't')]
    pub topic: String,
    /// Read only this partition; all of the topic's partitions otherwise.
    #[arg(long, short = 'p')]
    pub partition: Option<i32>,
    /// Where to start in each partition: beginning, end (only records produced from now on),
    /// an OFFSET, or @TIMESTAMP_MS (the first record at or after that time, in milliseconds
    /// since the Unix epoch).
    #[arg(long, short = 'o', default_value = "beginning")]
    pub from: StartFrom,
    /// Stop after this many records.
    #[arg(long, short = 'c')]
    pub count: Option<u64>,
    /// Stop once every partition has been read up to its end (its high watermark).
    #[arg(long, short = 'e')]
    pub exit_at_end: bool,
    /// How each record is printed. Placeholders: %t topic, %p partition, %o offset,
    /// %T timestamp (ms), %k key, %K key length, %s value, %S value length, %h headers
    /// (k=v,k=v), %% a percent sign; escapes \n, \t, \r, \\. A missing key prints as nothing
    /// and its length as -1.
    #[arg(long, short = 'f', default_value = "%s\\n")]
    pub format: crate::format::Format,
}

/// How long one poll waits for a record before checking for a stop signal and flushing stdout.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// `--from`: where reading starts in each partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartFrom {
    Beginning,
    /// Only records produced after the command started.
    End,
    Offset(i64),
    /// The first record whose timestamp is at or after this many ms since the Unix epoch.
    Timestamp(i64),
}

impl std::str::FromStr for StartFrom {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let expected = || format!("expected beginning, end, an OFFSET or @TIMESTAMP_MS, got {text:?}");
        match text {
            "beginning" => Ok(StartFrom::Beginning),
            "end" => Ok(StartFrom::End),
            _ => match text.strip_prefix('@') {
                Some(timestamp) => timestamp.parse::<u64>().map_err(|_| expected()).and_then(|timestamp| {
                    i64::try_from(timestamp).map(StartFrom::Timestamp).map_err(|_| expected())
                }),
                None => text
                    .parse::<u64>()
                    .map_err(|_| expected())
                    .and_then(|offset| i64::try_from(offset).map(StartFrom::Offset).map_err(|_| expected())),
            },
        }
    }
}

pub fn run(args: ConsumeArgs) -> anyhow::Result<()> {
    let connect = &Connection::new(&args.connect)?;
    let timeout = connect.timeout();
    let exit_at_end = args.exit_at_end.to_string();
    let consumer = connect.assign_only_consumer(&[
        ("group.id", "tidewater-cli-consume"),
        ("enable.partition.eof", &exit_at_end),
    ])?;

    let topic = args.topic.as_str();
    let partitions = super::topic_partitions(consumer.client(), connect, topic)?;
    let partition_ids = super::chosen_partitions(&partitions, topic, args.partition)?;
    let assignment = start_offsets(&consumer, topic, &partition_ids, args.from, timeout)?;
    consumer.assign(&assignment).with_context(|| format!("assigning the partitions of {topic:?}"))?;

    if args.count == Some(0) || partition_ids.is_empty() {
        return Ok(());
    }
    let stop = stop_on_signal()?;
    let mut out = BufWriter::new(std::io::stdout().lock());
    let mut printed = 0u64;
    // Partitions whose end has been reached and that have had no record since.
    let mut at_end = HashSet::new();
    while !stop.load(Ordering::Relaxed) {
        let message = match consumer.poll(POLL_INTERVAL) {
            None => {
                if !flush_stdout(&mut out)? {
                    return Ok(());
                }
                continue;
            }
            Some(Ok(message)) => message,
            Some(Err(KafkaError::PartitionEOF(partition))) => {
                at_end.insert(partition);
                if args.exit_at_end && at_end.len() == partition_ids.len() {
                    break;
                }
                continue;
            }
            Some(Err(error)) => {
                consume_error(topic, error)?;
                continue;
            }
        };
        at_end.remove(&message.partition());
        let view = RecordView {
            topic: message.topic(),
            partition: message.partition(),
            offset: message.offset(),
            timestamp_ms: message.timestamp().to_millis(),
            key: message.key(),
            value: message.payload(),
            headers: message
                .headers()
                .map(|headers| headers.iter().map(|header| (header.key, header.value)).collect())
                .unwrap_or_default(),
        };
        if let Err(error) = args.format.write(&view, &mut out) {
            return quiet_if_closed(error);
        }
        printed += 1;
        if args.count == Some(printed) {
            break;
        }
    }
    flush_stdout(&mut out)?;
    Ok(())
}

/// The assignment for `partitions` of `topic`, each with its start offset.
fn start_offsets(
    consumer: &BaseConsumer<CliContext>,
    topic: &str,
    partitions: &[i32],
    from: StartFrom,
    timeout: Duration,
) -> anyhow::Result<TopicPartitionList> {
    let mut assignment = TopicPartitionList::with_capacity(partitions.len());
    let offset = match from {
        StartFrom::Beginning => Offset::Beginning,
        StartFrom::End => Offset::End,
        StartFrom::Offset(offset) => Offset::Offset(offset),
        StartFrom::Timestamp(timestamp_ms) => {
            // librdkafka takes the timestamps in the offset field and answers with offsets there.
            let mut query = TopicPartitionList::with_capacity(partitions.len());
            for &partition in partitions {
                query.add_partition_offset(topic, partition, Offset::Offset(timestamp_ms))?;
            }
            let found = consumer
                .offsets_for_times(query, timeout)
                .with_context(|| format!("looking up offsets of {topic:?} at timestamp {timestamp_ms} ms"))?;
            for element in found.elements() {
                element.error().with_context(|| {
                    format!(
                        "looking up the offset of {topic:?} partition {} at {timestamp_ms} ms",
                        element.partition()
                    )
                })?;
                // -1 (Offset::End): no record at or after the timestamp, so start at the end.
                let offset = match element.offset() {
                    Offset::Offset(offset) => Offset::Offset(offset),
                    _ => Offset::End,
                };
                assignment.add_partition_offset(topic, element.partition(), offset)?;
            }
            return Ok(assignment);
        }
    };
    for &partition in partitions {
        assignment.add_partition_offset(topic, partition, offset)?;
    }
    Ok(assignment)
}

/// Ends the command for errors that will not go away; reports the rest (a broker connection
/// dropped, which librdkafka retries) and carries on.
fn consume_error(topic: &str, error: KafkaError) -> anyhow::Result<()> {
    match error {
        KafkaError::MessageConsumption(RDKafkaErrorCode::AutoOffsetReset) => anyhow::bail!(
            "reading {topic:?}: a start offset is outside its partition's range of offsets \
             (below its log start offset or past its end)"
        ),
        KafkaError::MessageConsumption(
            code @ (RDKafkaErrorCode::UnknownTopicOrPartition
            | RDKafkaErrorCode::UnknownPartition
            | RDKafkaErrorCode::UnknownTopic
            | RDKafkaErrorCode::TopicAuthorizationFailed),
        ) => anyhow::bail!("reading {topic:?}: {code}"),
        KafkaError::MessageConsumptionFatal(code) => anyhow::bail!("reading {topic:?}: {code}"),
        other => {
            eprintln!("warning: reading {topic:?}: {other}");
            Ok(())
        }
    }
}

/// Flushes buffered output; `false` if stdout has been closed (the reader is gone).
fn flush_stdout(out: &mut impl Write) -> anyhow::Result<bool> {
    match out.flush() {
        Ok(()) => Ok(true),
        Err(error) => quiet_if_closed(error).map(|()| false),
    }
}

/// A closed stdout ends the command without an error (as `consume | head` expects).
fn quiet_if_closed(error: std::io::Error) -> anyhow::Result<()> {
    if error.kind() == std::io::ErrorKind::BrokenPipe {
        return Ok(());
    }
    Err(error).context("writing to stdout")
}

/// A flag set by Ctrl-C (SIGINT) or SIGTERM, so the consume loop stops between records and
/// flushes what it printed.
fn stop_on_signal() -> anyhow::Result<Arc<AtomicBool>> {
    use tokio::signal::unix::{signal, SignalKind};
    let stop = Arc::new(AtomicBool::new(false));
    let runtime = super::runtime()?;
    // Installed here, before returning, so a signal from now on is caught.
    let (mut interrupt, mut terminate) = runtime.block_on(async {
        anyhow::Ok((
            signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
            signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
        ))
    })?;
    let flag = stop.clone();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            runtime.block_on(async {
                tokio::select! {
                    _ = interrupt.recv() => {}
                    _ = terminate.recv() => {}
                }
            });
            flag.store(true, Ordering::Relaxed);
        })
        .context("starting the signal thread")?;
    Ok(stop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_from_parses_every_form_and_refuses_the_rest() {
        let check = |text: &str, expected: Result<StartFrom, ()>| {
            assert_eq!(text.parse::<StartFrom>().map_err(|_| ()), expected, "{text:?}");
        };
        check("beginning", Ok(StartFrom::Beginning));
        check("end", Ok(StartFrom::End));
        check("0", Ok(StartFrom::Offset(0)));
        check("42", Ok(StartFrom::Offset(42)));
        check("@1700000000000", Ok(StartFrom::Timestamp(1_700_000_000_000)));
        check("-1", Err(()));
        check("@", Err(()));
        check("@-5", Err(()));
        check("start", Err(()));
        check("9223372036854775808", Err(()));
        assert_eq!(
            "soon".parse::<StartFrom>(),
            Err("expected beginning, end, an OFFSET or @TIMESTAMP_MS, got \"soon\"".to_string())
        );
    }
}
