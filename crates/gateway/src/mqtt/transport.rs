//! The byte streams an MQTT connection runs over: a plain TCP socket, or TLS over one. The
//! connection code is generic over the two halves: any `AsyncWrite` for the writer task, and
//! [`ReadBytes`] for the reader, which must be cancel-safe (the reader waits on it inside
//! `select!`) and, on plain TCP, must not hold a read buffer while the client is idle.

use std::future::Future;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::tcp::OwnedReadHalf;

/// How much room a read makes in the buffer.
pub(super) const READ_CHUNK_BYTES: usize = 4096;

/// Reads what the client sent next into a buffer.
pub(super) trait ReadBytes: Send {
    /// Waits for bytes and appends them to `buffer`; `Ok(0)` at the end of the stream.
    /// Cancel-safe: dropped before it completes, it has read nothing.
    fn read_some<'a>(
        &'a mut self,
        buffer: &'a mut BytesMut,
    ) -> impl Future<Output = std::io::Result<usize>> + Send + 'a;
}

impl ReadBytes for OwnedReadHalf {
    async fn read_some(&mut self, buffer: &mut BytesMut) -> std::io::Result<usize> {
        loop {
            // The room is made only once bytes are there, so an idle connection holds no buffer.
            self.readable().await?;
            buffer.reserve(READ_CHUNK_BYTES);
            match self.try_read_buf(buffer) {
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
                outcome => return outcome,
            }
        }
    }
}

/// A TLS stream's read half. rustls keeps its own buffers per connection, so the room made
/// before waiting costs little on top; `read_buf` is cancel-safe.
impl<S: AsyncRead + Send> ReadBytes for tokio::io::ReadHalf<S> {
    async fn read_some(&mut self, buffer: &mut BytesMut) -> std::io::Result<usize> {
        buffer.reserve(READ_CHUNK_BYTES);
        self.read_buf(buffer).await
    }
}
