//! What a connection owes its client, in the order it must go out, and the writing of it. The
//! connection's one task drives this queue beside its reads (`session.rs`): there is no writer
//! task and no channel between the two, which an idle connection paid for all its life (a second
//! task, a channel with its first block of slots, a semaphore).
//!
//! An acknowledgement waits at its place in the queue until the append it acknowledges is
//! durable, so acknowledgements leave in the order the PUBLISHes came. What is ready at the head
//! is encoded into one buffer, up to [`WRITE_BATCH_BYTES`] (many appends made durable by one
//! fsync go out in one write), and that batch is written (and flushed, for TLS) within
//! [`WRITE_TIMEOUT`] or the connection is given up. The buffer is given back once written and
//! the queue once empty, so an idle connection holds neither.
//!
//! The queue is bounded by the caller: it stops reading (and stops taking what the hub queued
//! for it) while [`Outbound::has_room`] is false or every QoS 1 slot is taken, which is the
//! backpressure a slow client or a slow cluster puts on a connection.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use tidewater_mqtt::{
    Disconnect, Packet, PacketId, Properties, ProtocolVersion, PubResponse, QoS, ReasonCode,
};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use super::WRITE_TIMEOUT;
use crate::append::{AppendError, PendingAppend};

/// Most bytes gathered before they are written: acknowledgements that became ready together
/// (one fsync makes many appends durable at once) go out in one write, not one each.
pub(super) const WRITE_BATCH_BYTES: usize = 64 * 1024;

/// One item owed to the client.
pub(super) enum Outgoing {
    /// Boxed: rarer than acknowledgements, and a whole packet is hundreds of bytes.
    Packet(Box<Packet>),
    /// `ack` once `pending` is durable; a QoS 1 one holds one of the connection's in-flight
    /// slots until then.
    AfterAppend { pending: PendingAppend, ack: Ack },
}

impl Outgoing {
    pub(super) fn packet(packet: Packet) -> Outgoing {
        Outgoing::Packet(Box::new(packet))
    }
}

/// A successful PUBACK (QoS 1) or PUBREC (QoS 2), built when it is written.
#[derive(Debug, Clone, Copy)]
pub(super) struct Ack {
    pub(super) qos: QoS,
    pub(super) packet_id: PacketId,
    /// When the PUBLISH was read, for the acknowledgement latency metric.
    pub(super) received: std::time::Instant,
}

impl Ack {
    pub(super) fn packet(self) -> Packet {
        let response = PubResponse {
            packet_id: self.packet_id,
            reason_code: ReasonCode::Success,
            properties: Properties::default(),
        };
        match self.qos {
            QoS::ExactlyOnce => Packet::PubRec(response),
            _ => Packet::PubAck(response),
        }
    }
}

/// The queue to the client and the batch being written.
pub(super) struct Outbound {
    queue: VecDeque<Outgoing>,
    /// The batch being written; empty (and without capacity) between batches.
    out: BytesMut,
    /// Bytes were handed to the stream since it was last flushed (TLS keeps records until then).
    unflushed: bool,
    /// When the batch being written must be written by.
    write_deadline: Option<Instant>,
    /// QoS 1 acknowledgements in the queue, each waiting for its append.
    qos1_in_flight: u16,
    /// Most items queued before the connection stops reading.
    bound: u16,
    version: ProtocolVersion,
    /// No more items are taken: an append failed, a packet did not encode, or writing failed.
    /// What is already encoded is still written unless `broken`.
    closed: bool,
    /// Writing failed or timed out: nothing more is written.
    broken: bool,
}

impl Outbound {
    pub(super) fn new(version: ProtocolVersion, bound: u16) -> Outbound {
        Outbound {
            queue: VecDeque::new(),
            out: BytesMut::new(),
            unflushed: false,
            write_deadline: None,
            qos1_in_flight: 0,
            bound,
            version,
            closed: false,
            broken: false,
        }
    }

    /// Queues `item`; `false` once the queue is closed (the connection is ending).
    #[must_use]
    pub(super) fn push(&mut self, item: Outgoing) -> bool {
        if self.closed {
            return false;
        }
        if let Outgoing::AfterAppend { ack: Ack { qos: QoS::AtLeastOnce, .. }, .. } = &item {
            self.qos1_in_flight += 1;
        }
        self.queue.push_back(item);
        true
    }

    /// Whether the queue is below its bound, so the connection may read (and take what the hub
    /// queued for it).
    pub(super) fn has_room(&self) -> bool {
        self.queue.len() < usize::from(self.bound)
    }

    /// QoS 1 appends awaiting durability.
    pub(super) fn qos1_in_flight(&self) -> u16 {
        self.qos1_in_flight
    }

    /// When the batch being written must be done by, if one is being written.
    pub(super) fn write_deadline(&self) -> Option<Instant> {
        self.write_deadline
    }

    /// Gives up writing (the batch took longer than [`WRITE_TIMEOUT`]).
    pub(super) fn give_up(&mut self) {
        tracing::debug!("writing to an MQTT client timed out");
        self.close();
        self.broken = true;
    }

    fn close(&mut self) {
        self.closed = true;
        // What was not yet encoded is never written: its appends are not acknowledged, so the
        // client sends those messages again.
        self.queue = VecDeque::new();
        self.qos1_in_flight = 0;
    }

    /// Moves what it can: encodes what is ready at the head of the queue into a new batch and
    /// writes the batch. `Ready(Ok(()))` when something moved (an item left the queue, bytes
    /// were written), `Ready(Err(()))` when the queue closed just now (an append failed, or
    /// writing failed), `Pending` when nothing can move until the stream or an append wakes the
    /// task.
    pub(super) fn poll_progress<S: AsyncWrite + Unpin>(
        &mut self,
        stream: &mut S,
        context: &mut Context<'_>,
    ) -> Poll<Result<(), ()>> {
        if self.broken {
            return Poll::Ready(Err(()));
        }
        let mut progressed = false;
        loop {
            if self.out.is_empty() && !self.unflushed {
                let encoded = self.encode_batch(context);
                if !self.out.is_empty() {
                    self.write_deadline = Some(Instant::now() + WRITE_TIMEOUT);
                }
                match encoded {
                    Ok(true) => progressed = true,
                    Ok(false) => {}
                    // What was encoded before (and a DISCONNECT) is written on the next turn.
                    Err(()) => return Poll::Ready(Err(())),
                }
                if self.out.is_empty() {
                    self.write_deadline = None;
                    break;
                }
            }
            let written = if self.out.is_empty() {
                Pin::new(&mut *stream).poll_flush(context).map_ok(|()| {
                    self.unflushed = false;
                })
            } else {
                Pin::new(&mut *stream).poll_write(context, &self.out).map(|written| match written {
                    Ok(0) => Err(std::io::ErrorKind::WriteZero.into()),
                    Ok(n) => {
                        self.out.advance(n);
                        self.unflushed = true;
                        if self.out.is_empty() {
                            // Given back: an idle connection holds no write buffer.
                            self.out = BytesMut::new();
                        }
                        Ok(())
                    }
                    Err(error) => Err(error),
                })
            };
            match written {
                Poll::Ready(Ok(())) => progressed = true,
                Poll::Ready(Err(error)) => {
                    tracing::debug!(%error, "writing to an MQTT client");
                    self.close();
                    self.broken = true;
                    return Poll::Ready(Err(()));
                }
                Poll::Pending => break,
            }
        }
        if progressed {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    }

    /// Encodes the items at the head of the queue that are ready, up to a batch; whether any
    /// was. `Err` when the queue closed: a failed append (then an MQTT 5 client is told with a
    /// DISCONNECT, encoded last) or a packet that does not encode.
    fn encode_batch(&mut self, context: &mut Context<'_>) -> Result<bool, ()> {
        let mut encoded_any = false;
        while self.out.len() < WRITE_BATCH_BYTES {
            let Some(head) = self.queue.front_mut() else { break };
            let encoded = match head {
                Outgoing::Packet(packet) => packet.encode(self.version, &mut self.out),
                Outgoing::AfterAppend { pending, ack } => {
                    let appended = match pending.as_mut().poll(context) {
                        Poll::Ready(appended) => appended,
                        Poll::Pending => break,
                    };
                    if ack.qos == QoS::AtLeastOnce {
                        self.qos1_in_flight -= 1;
                    }
                    match appended {
                        Ok(()) => {
                            crate::metrics::gateway().acknowledged(ack.qos, ack.received);
                            ack.packet().encode(self.version, &mut self.out)
                        }
                        Err(error) => {
                            self.append_failed(&error);
                            return Err(());
                        }
                    }
                }
            };
            self.queue.pop_front();
            encoded_any = true;
            if let Err(error) = encoded {
                tracing::warn!(%error, "encoding a packet for an MQTT client");
                self.close();
                return Err(());
            }
        }
        if self.queue.is_empty() && self.queue.capacity() > 0 {
            self.queue = VecDeque::new();
        }
        Ok(encoded_any)
    }

    /// An append failed: the connection ends without acknowledging it (or anything after it),
    /// so the client sends those messages again.
    fn append_failed(&mut self, error: &AppendError) {
        tracing::warn!(%error, "an append failed; closing the connection without acknowledging");
        self.close();
        if self.version == ProtocolVersion::V5 {
            let disconnect = Packet::Disconnect(Disconnect {
                reason_code: ReasonCode::UnspecifiedError,
                properties: Properties::default(),
            });
            let _ = disconnect.encode(self.version, &mut self.out);
        }
    }

    /// Whether anything is queued, encoded and not written, or written and not flushed.
    fn owes_anything(&self) -> bool {
        !self.queue.is_empty() || !self.out.is_empty() || self.unflushed
    }

    /// Writes everything owed (waiting for the appends it acknowledges), each batch within
    /// [`WRITE_TIMEOUT`], as a connection does before it closes.
    pub(super) async fn drain<S: AsyncWrite + Unpin>(&mut self, stream: &mut S) {
        while !self.broken && self.owes_anything() {
            let write_deadline = self.write_deadline;
            let step = std::future::poll_fn(|context| self.poll_progress(stream, context));
            let stepped = match write_deadline {
                Some(deadline) => tokio::time::timeout_at(deadline, step).await.ok(),
                None => Some(step.await),
            };
            match stepped {
                Some(Ok(())) => {}
                // Closed: what was encoded before is still written, on the next turn.
                Some(Err(())) => {}
                None => self.give_up(),
            }
        }
    }

    /// Drains what is owed, then closes the stream's writing side (unless writing failed).
    pub(super) async fn close_stream<S: AsyncWrite + Unpin>(&mut self, stream: &mut S) {
        self.drain(stream).await;
        if !self.broken {
            let _ = tokio::time::timeout(WRITE_TIMEOUT, stream.shutdown()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio::sync::oneshot;

    /// A pending append that resolves when the returned sender says how.
    fn pending_append() -> (PendingAppend, oneshot::Sender<Result<(), AppendError>>) {
        let (resolve, resolved) = oneshot::channel();
        let pending: PendingAppend =
            Box::pin(async move { resolved.await.unwrap_or(Err(AppendError::QueueFull)) });
        (pending, resolve)
    }

    fn ack(qos: QoS, id: u16) -> Ack {
        Ack { qos, packet_id: PacketId::new(id).expect("a packet id"), received: std::time::Instant::now() }
    }

    fn encoded(version: ProtocolVersion, packets: &[Packet]) -> Vec<u8> {
        let mut out = BytesMut::new();
        for packet in packets {
            packet.encode(version, &mut out).expect("encodes");
        }
        out.to_vec()
    }

    /// Polls `outbound` once, as the connection's loop does.
    fn poll_once<S: AsyncWrite + Unpin>(outbound: &mut Outbound, stream: &mut S) -> Poll<Result<(), ()>> {
        outbound.poll_progress(stream, &mut Context::from_waker(std::task::Waker::noop()))
    }

    #[tokio::test]
    async fn acknowledgements_leave_in_order_once_their_appends_are_durable() {
        let version = ProtocolVersion::V311;
        let (mut client, mut server) = tokio::io::duplex(4096);
        let mut outbound = Outbound::new(version, 4);
        let (first, resolve_first) = pending_append();
        let (second, resolve_second) = pending_append();
        assert!(outbound.push(Outgoing::AfterAppend { pending: first, ack: ack(QoS::AtLeastOnce, 1) }));
        assert!(outbound.push(Outgoing::packet(Packet::PingResp)));
        assert!(outbound.push(Outgoing::AfterAppend { pending: second, ack: ack(QoS::ExactlyOnce, 2) }));
        assert!(outbound.has_room());
        assert!(outbound.push(Outgoing::packet(Packet::PingResp)));
        assert!(!outbound.has_room(), "four items fill a queue bounded at four");
        assert_eq!(outbound.qos1_in_flight(), 1, "QoS 2 takes no QoS 1 slot");

        // The second append is durable first: nothing may pass the first.
        resolve_second.send(Ok(())).expect("sent");
        assert!(poll_once(&mut outbound, &mut server).is_pending());
        assert_eq!(outbound.write_deadline(), None, "nothing is being written");
        resolve_first.send(Ok(())).expect("sent");
        outbound.drain(&mut server).await;
        assert_eq!(outbound.qos1_in_flight(), 0);
        assert_eq!(outbound.write_deadline(), None);
        let expected = encoded(
            version,
            &[
                ack(QoS::AtLeastOnce, 1).packet(),
                Packet::PingResp,
                ack(QoS::ExactlyOnce, 2).packet(),
                Packet::PingResp,
            ],
        );
        let mut written = vec![0u8; expected.len()];
        client.read_exact(&mut written).await.expect("written");
        assert_eq!(written, expected);
        assert_eq!(
            (outbound.queue.capacity(), outbound.out.capacity()),
            (0, 0),
            "an idle queue holds no memory"
        );
    }

    #[tokio::test]
    async fn a_failed_append_closes_the_queue_and_an_mqtt_5_client_is_told() {
        let version = ProtocolVersion::V5;
        let (mut client, mut server) = tokio::io::duplex(4096);
        let mut outbound = Outbound::new(version, 8);
        let (failing, fail) = pending_append();
        let (later, _resolve_later) = pending_append();
        assert!(outbound.push(Outgoing::packet(Packet::PingResp)));
        assert!(outbound.push(Outgoing::AfterAppend { pending: failing, ack: ack(QoS::AtLeastOnce, 1) }));
        assert!(outbound.push(Outgoing::AfterAppend { pending: later, ack: ack(QoS::ExactlyOnce, 2) }));
        fail.send(Err(AppendError::Failed { topic: "telemetry".into(), detail: "test".into() }))
            .expect("sent");
        assert_eq!(poll_once(&mut outbound, &mut server), Poll::Ready(Err(())));
        assert!(!outbound.push(Outgoing::packet(Packet::PingResp)), "a closed queue takes nothing more");
        outbound.close_stream(&mut server).await;
        let mut written = Vec::new();
        client.read_to_end(&mut written).await.expect("read to the end");
        let disconnect = Packet::Disconnect(Disconnect {
            reason_code: ReasonCode::UnspecifiedError,
            properties: Properties::default(),
        });
        assert_eq!(written, encoded(version, &[Packet::PingResp, disconnect]), "no acknowledgement");
    }

    /// The queue's slots are what an idle connection's queue would hold if it kept them.
    #[test]
    fn an_item_is_small() {
        assert!(std::mem::size_of::<Outgoing>() <= 40, "{} bytes", std::mem::size_of::<Outgoing>());
    }
}
