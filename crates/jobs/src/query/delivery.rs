//! What a job promises about its output rows (`Delivery`), and the delivery reports of the
//! records it has produced and the broker has not acknowledged yet (`Deliveries`).
//!
//! librdkafka tells the fate of each produced record in a delivery report. A job that dropped
//! the reports would learn of a failed record only from a later transaction commit ("N
//! message(s) failed delivery"), without the broker's reason, and in at-least-once mode not at
//! all. So a job keeps the report of every record it produces here, and before it commits
//! anything that says "the rows up to here are written" (a transaction, or in at-least-once mode
//! a checkpoint) it flushes the producer and reads every report: the first failure fails the job
//! with the topic, the partition and the broker's own error, and nothing is committed past it.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use rdkafka::error::KafkaError;
use rdkafka::message::{Message, ToBytes};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use serde::{Deserialize, Serialize};
use tidewater_client::QuietContext;

/// When a job's output rows become visible, and what a crash may do to them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Delivery {
    /// Rows are written in a Kafka transaction with the checkpoint that covers them: a
    /// read_committed consumer sees them at the next checkpoint, each exactly once, across
    /// crashes.
    #[default]
    ExactlyOnce,
    /// Rows are produced as the engine emits them (idempotent producer, no transaction), and a
    /// checkpoint (state and input offsets) is written only once every row produced before it
    /// is acknowledged: rows are readable at once, and a crash may repeat the rows produced
    /// since the last checkpoint, but never loses one.
    AtLeastOnce,
}

impl Delivery {
    /// `exactly-once` or `at-least-once`.
    pub fn parse(text: &str) -> Result<Delivery, String> {
        match text {
            "exactly-once" => Ok(Delivery::ExactlyOnce),
            "at-least-once" => Ok(Delivery::AtLeastOnce),
            _ => Err(format!("{text:?} is not exactly-once or at-least-once")),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Delivery::ExactlyOnce => "exactly-once",
            Delivery::AtLeastOnce => "at-least-once",
        }
    }
}

impl std::fmt::Display for Delivery {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// How long a job waits for the broker to acknowledge what it produced before a commit.
pub(super) const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a refused record waits for the report that explains it.
const EXPLAIN_WAIT: Duration = Duration::from_secs(2);

/// The delivery reports still to be read, oldest first.
#[derive(Default)]
pub(super) struct Deliveries {
    pending: VecDeque<DeliveryFuture>,
}

impl Deliveries {
    /// Queues `record` (in the open transaction, if there is one) and keeps its report, waiting
    /// while librdkafka's queue is full rather than failing. A record refused here after an
    /// earlier one failed (a transaction in an abortable state refuses everything) is reported
    /// with that earlier failure, the reason.
    pub(super) fn send<K: ToBytes + ?Sized>(
        &mut self,
        producer: &FutureProducer<QuietContext>,
        mut record: FutureRecord<'_, K, [u8]>,
    ) -> anyhow::Result<()> {
        loop {
            match producer.send_result(record) {
                Ok(delivery) => return self.track(delivery),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                    record = returned;
                    producer.poll(Duration::from_millis(10));
                }
                Err((error, returned)) => {
                    let error = anyhow::anyhow!("producing to {}: {error}", returned.topic);
                    return Err(self.explain(error));
                }
            }
        }
    }

    /// Keeps `delivery`, and reads the reports that have already come in at the front, so that
    /// the queue stays short while the broker keeps up and a failure is seen early.
    fn track(&mut self, delivery: DeliveryFuture) -> anyhow::Result<()> {
        self.pending.push_back(delivery);
        while let Some(front) = self.pending.front_mut() {
            let Some(report) = ready(front) else { break };
            self.pending.pop_front();
            check(report)?;
        }
        Ok(())
    }

    /// Flushes `producer` and reads every report: `Ok` once every record produced so far is
    /// acknowledged by the broker, else the first failure (its topic, partition and error).
    /// Blocks; call it through `blocking` from async code.
    pub(super) fn settle(&mut self, producer: &FutureProducer<QuietContext>) -> anyhow::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        producer.flush(SETTLE_TIMEOUT).map_err(|error| {
            anyhow::anyhow!("waiting for the broker to acknowledge {} record(s): {error}", self.pending.len())
        })?;
        // After the flush every report has been handed to its callback; the callback may still
        // be running on librdkafka's polling thread, hence the short waits.
        while let Some(front) = self.pending.front_mut() {
            match ready(front) {
                Some(report) => {
                    self.pending.pop_front();
                    check(report)?;
                }
                None if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(1)),
                None => anyhow::bail!(
                    "{} record(s) not acknowledged within {} s",
                    self.pending.len(),
                    SETTLE_TIMEOUT.as_secs()
                ),
            }
        }
        Ok(())
    }

    /// `error`, with the reason when an earlier record's report says it failed; waits up to
    /// `EXPLAIN_WAIT` for the reports still out (a failure makes librdkafka refuse what follows
    /// a moment before its report is handed over).
    fn explain(&mut self, error: anyhow::Error) -> anyhow::Error {
        let deadline = Instant::now() + EXPLAIN_WAIT;
        while let Some(front) = self.pending.front_mut() {
            match ready(front) {
                Some(report) => {
                    self.pending.pop_front();
                    if let Err(failure) = check(report) {
                        return failure.context(format!("{error:#}"));
                    }
                }
                None if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(1)),
                None => break,
            }
        }
        error
    }

    /// Forgets the reports of records whose transaction is aborted.
    pub(super) fn clear(&mut self) {
        self.pending.clear();
    }
}

/// A delivery report, or the error of a producer closed before it reported.
type Report = <DeliveryFuture as Future>::Output;

/// The report, if it has come in, without waiting.
fn ready(delivery: &mut DeliveryFuture) -> Option<Report> {
    let mut context = Context::from_waker(Waker::noop());
    match Pin::new(delivery).poll(&mut context) {
        Poll::Ready(report) => Some(report),
        Poll::Pending => None,
    }
}

fn check(report: Report) -> anyhow::Result<()> {
    match report {
        Ok(Ok(_)) => Ok(()),
        Ok(Err((error, message))) => {
            let partition = match message.partition() {
                partition if partition >= 0 => format!(" partition {partition}"),
                _ => String::new(),
            };
            anyhow::bail!("delivering a record to {}{partition} failed: {error}", message.topic())
        }
        Err(_) => anyhow::bail!("the producer closed before a record's delivery was reported"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivery_modes_parse_and_print_as_the_cli_spells_them() {
        for delivery in [Delivery::ExactlyOnce, Delivery::AtLeastOnce] {
            assert_eq!(Delivery::parse(&delivery.to_string()), Ok(delivery));
        }
        assert!(Delivery::parse("at-most-once").is_err_and(|error| error.contains("at-least-once")));
    }

    #[test]
    fn a_record_that_is_never_acknowledged_fails_settle_with_its_topic_and_reason() {
        // Nothing listens on port 1: librdkafka gives up on the record after its timeout and
        // says so in the report, which settle must return rather than an empty Ok.
        let producer: FutureProducer<QuietContext> = tidewater_client::ClusterConfig::new("127.0.0.1:1")
            .client_config(&[("message.timeout.ms", "200")])
            .create_with_context(QuietContext::default())
            .unwrap_or_else(|error| panic!("{error}"));
        let mut deliveries = Deliveries::default();
        assert!(deliveries.settle(&producer).is_ok(), "nothing produced, nothing to wait for");
        deliveries
            .send(&producer, FutureRecord::<(), [u8]>::to("alerts").payload(&b"{}"[..]))
            .unwrap_or_else(|error| panic!("{error}"));
        let error = deliveries.settle(&producer).err().unwrap_or_else(|| panic!("a lost record settled"));
        let message = format!("{error:#}");
        assert!(
            message.contains("delivering a record to alerts") && message.contains("timed out"),
            "{message}"
        );
        assert!(deliveries.pending.is_empty());
    }
}
