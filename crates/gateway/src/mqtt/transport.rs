//! The byte streams an MQTT connection runs over: a plain TCP socket, TLS over one, or the
//! in-memory pipe behind a WebSocket. The connection code is generic over the stream, which one
//! task both reads and writes; its reads ([`ReadBytes`], [`poll_read_some`]) must be cancel-safe
//! and must not hold a read buffer while the client is idle.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt};

/// How much room a read makes in the buffer.
pub(super) const READ_CHUNK_BYTES: usize = 4096;

/// Reads what the client sent next into a buffer.
pub(super) trait ReadBytes: Send {
    /// Waits for bytes and appends them to `buffer`; `Ok(0)` at the end of the stream.
    /// Cancel-safe: dropped before it completes, it has read nothing. While it waits, an
    /// empty `buffer` holds no memory.
    fn read_some<'a>(
        &'a mut self,
        buffer: &'a mut BytesMut,
    ) -> impl Future<Output = std::io::Result<usize>> + Send + 'a;
}

impl<S: AsyncRead + Unpin + Send> ReadBytes for S {
    async fn read_some(&mut self, buffer: &mut BytesMut) -> std::io::Result<usize> {
        std::future::poll_fn(|context| poll_read_some(self, context, buffer)).await
    }
}

/// One attempt at [`ReadBytes::read_some`], for a caller that polls the stream itself (the
/// connection's loop, which writes to the same stream between reads).
pub(super) fn poll_read_some<S: AsyncRead + Unpin>(
    stream: &mut S,
    context: &mut Context<'_>,
    buffer: &mut BytesMut,
) -> Poll<std::io::Result<usize>> {
    // Room is made for each attempt and given back when nothing came: a read can only be tried
    // with room, and an idle connection (TCP readiness is stale after the last read; rustls
    // always tries its socket) would otherwise keep a chunk while it waits, which is most of
    // its life. A partial packet is kept, of course.
    buffer.reserve(READ_CHUNK_BYTES);
    let polled = pin!(stream.read_buf(buffer)).poll(context);
    if polled.is_pending() && buffer.is_empty() {
        *buffer = BytesMut::new();
    }
    polled
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn a_waiting_read_holds_no_buffer_and_keeps_a_partial_packet() {
        let (mut client, mut server) = tokio::io::duplex(64);
        let mut buffer = BytesMut::with_capacity(READ_CHUNK_BYTES);
        let mut read = Box::pin(server.read_some(&mut buffer));
        assert!(futures_poll_once(read.as_mut()).is_pending());
        drop(read);
        assert_eq!(buffer.capacity(), 0, "an idle read gave its room back");

        client.write_all(b"\x30\x10par").await.expect("written");
        assert_eq!(server.read_some(&mut buffer).await.expect("read"), 5);
        let mut read = Box::pin(server.read_some(&mut buffer));
        assert!(futures_poll_once(read.as_mut()).is_pending());
        drop(read);
        assert_eq!(&buffer[..], b"\x30\x10par", "the partial packet stays");
        drop(client);
        assert_eq!(server.read_some(&mut buffer).await.expect("end of stream"), 0);
    }

    fn futures_poll_once<F: Future + ?Sized>(future: std::pin::Pin<&mut F>) -> std::task::Poll<F::Output> {
        future.poll(&mut std::task::Context::from_waker(std::task::Waker::noop()))
    }
}
