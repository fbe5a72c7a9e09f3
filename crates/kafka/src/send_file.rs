//! Writing a response's file record sets ([`crate::file_records`]): with `sendfile(2)` on a
//! plaintext TCP connection, so the bytes go from the page cache to the socket without passing
//! through the broker's memory; by reading them into memory and writing that on any other
//! writer (a TLS stream must encrypt every byte itself, so one copy is the least it can do).
//!
//! The socket is non-blocking (tokio's), so `sendfile` sends what fits in the socket buffer and
//! then fails with `EAGAIN`: [`send_file_range`] loops over partial sends from the position
//! reached, waiting for writable readiness between them, until the whole range is sent. A
//! `sendfile` that sends nothing before the range's end means the file is shorter than the range
//! (see the module docs of `file_records` on truncation): that is an error, which closes the
//! connection, because the response's sizes are already sent.

use std::fs::File;
use std::future::Future;
use std::io;

use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::file_records::FileRecords;

/// The most one `sendfile` call is asked to send (Linux sends at most 0x7ffff000 bytes a call).
const SENDFILE_CALL_BYTES_MAX: u64 = 0x7fff_f000;

/// A connection's writer, which can also send byte ranges of files.
pub(crate) trait ResponseWriter: AsyncWrite + Unpin + Send {
    /// Writes `records`' bytes, all of them, after whatever was written before.
    fn write_file<'a>(
        &'a mut self,
        records: &'a FileRecords,
    ) -> impl Future<Output = io::Result<()>> + Send + 'a;
}

/// A plaintext TCP connection: `sendfile`.
impl ResponseWriter for tokio::net::tcp::OwnedWriteHalf {
    fn write_file<'a>(
        &'a mut self,
        records: &'a FileRecords,
    ) -> impl Future<Output = io::Result<()>> + Send + 'a {
        let half: &'a Self = self;
        send_file_range(half.as_ref(), records)
    }
}

/// A TLS connection (and any other split stream): the bytes are read and written, one copy.
impl<S: tokio::io::AsyncRead + AsyncWrite + Send> ResponseWriter for tokio::io::WriteHalf<S> {
    fn write_file<'a>(
        &'a mut self,
        records: &'a FileRecords,
    ) -> impl Future<Output = io::Result<()>> + Send + 'a {
        write_file_copied(self, records)
    }
}

/// For tests: an in-memory pipe copies like TLS does.
impl ResponseWriter for tokio::io::DuplexStream {
    fn write_file<'a>(
        &'a mut self,
        records: &'a FileRecords,
    ) -> impl Future<Output = io::Result<()>> + Send + 'a {
        write_file_copied(self, records)
    }
}

/// Reads the range and writes it. The fetch handler reads record sets for TLS connections
/// itself, so this runs only if a writer without `sendfile` is given file ranges anyway.
async fn write_file_copied<W: AsyncWrite + Unpin>(writer: &mut W, records: &FileRecords) -> io::Result<()> {
    let bytes = records.read()?;
    writer.write_all(&bytes).await
}

/// What [`send_file_range`] needs of a socket; a trait so the loop can be tested against a
/// socket that sends little and often refuses.
pub(crate) trait FileSink: Sync {
    /// One non-blocking `sendfile` of up to `count` bytes from `position`: how many were sent
    /// (0 at the end of the file), or `WouldBlock` when the socket buffer is full.
    fn try_send_file(&self, file: &File, position: u64, count: usize) -> io::Result<usize>;
    /// Waits until the socket may take more.
    fn writable(&self) -> impl Future<Output = io::Result<()>> + Send;
}

/// Sends all of `records` through `sink`, through partial sends and full socket buffers.
pub(crate) async fn send_file_range<S: FileSink>(sink: &S, records: &FileRecords) -> io::Result<()> {
    let mut sent = 0u64;
    while sent < records.len {
        let count = (records.len - sent).min(SENDFILE_CALL_BYTES_MAX) as usize;
        match sink.try_send_file(&records.file, records.position + sent, count) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "a segment file ended {} bytes into a {}-byte record set at position {}: truncated while the response was sent",
                        sent, records.len, records.position
                    ),
                ))
            }
            Ok(count) => sent += count as u64,
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => sink.writable().await?,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

impl FileSink for tokio::net::TcpStream {
    fn try_send_file(&self, file: &File, position: u64, count: usize) -> io::Result<usize> {
        use std::os::fd::AsFd;
        // `try_io` clears the socket's write readiness when the call fails with `WouldBlock`, so
        // the `writable()` that follows waits for the kernel to report room again.
        self.try_io(tokio::io::Interest::WRITABLE, || sendfile(self.as_fd(), file.as_fd(), position, count))
    }

    fn writable(&self) -> impl Future<Output = io::Result<()>> + Send {
        tokio::net::TcpStream::writable(self)
    }
}

/// Linux `sendfile(2)` (the broker is Linux-only, as its `syncfs` and `gettid` calls are).
fn sendfile(
    socket: std::os::fd::BorrowedFd<'_>,
    file: std::os::fd::BorrowedFd<'_>,
    position: u64,
    count: usize,
) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    let mut offset = libc::off_t::try_from(position)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "file position out of range"))?;
    // SAFETY: both descriptors are borrowed, so open for the whole call; `offset` is a local the
    // kernel reads and updates (the file's own offset is left alone, so concurrent sends of one
    // segment do not disturb each other).
    let sent = unsafe { libc::sendfile(socket.as_raw_fd(), file.as_raw_fd(), &mut offset, count) };
    usize::try_from(sent).map_err(|_| io::Error::last_os_error())
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::file_records::tests::file_with;

    /// A socket that takes at most `per_call` bytes a call and refuses every other call.
    struct StingySink {
        per_call: usize,
        calls: Mutex<Vec<Result<(u64, usize), &'static str>>>,
    }

    impl FileSink for StingySink {
        fn try_send_file(&self, file: &File, position: u64, count: usize) -> io::Result<usize> {
            use std::os::unix::fs::FileExt;
            let mut calls = self.calls.lock().expect("calls");
            if calls.len() % 2 == 0 {
                calls.push(Err("would block"));
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let mut bytes = vec![0u8; count.min(self.per_call)];
            let read = file.read_at(&mut bytes, position)?;
            calls.push(Ok((position, read)));
            Ok(read)
        }

        async fn writable(&self) -> io::Result<()> {
            Ok(())
        }
    }

    fn range(file: File, position: u64, len: u64) -> FileRecords {
        FileRecords { file: Arc::new(file), position, len }
    }

    #[tokio::test]
    async fn partial_sends_continue_where_the_last_one_stopped() {
        let sink = StingySink { per_call: 1000, calls: Mutex::new(Vec::new()) };
        send_file_range(&sink, &range(file_with(&[1u8; 10_000]), 500, 2_500)).await.expect("sent");
        let calls = sink.calls.into_inner().expect("calls");
        let sends: Vec<(u64, usize)> = calls.iter().filter_map(|call| call.ok()).collect();
        assert_eq!(sends, [(500, 1000), (1500, 1000), (2500, 500)]);
        assert_eq!(calls.len(), 6, "a refusal before each send, each waited out: {calls:?}");
    }

    #[tokio::test]
    async fn a_file_shorter_than_its_range_is_an_error_not_a_short_response() {
        let sink = StingySink { per_call: 4096, calls: Mutex::new(Vec::new()) };
        let error =
            send_file_range(&sink, &range(file_with(&[1u8; 3000]), 0, 5000)).await.expect_err("short");
        assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
        assert!(error.to_string().contains("3000 bytes into a 5000-byte record set"), "{error}");
    }

    /// The real thing: a range far larger than the socket buffers, through a reader that takes
    /// its time, so `sendfile` sends part of it and meets a full buffer on the way.
    #[tokio::test]
    async fn sendfile_sends_a_large_range_over_a_real_socket() {
        let contents: Vec<u8> = (0..8 * 1024 * 1024).map(|index: u32| (index % 251) as u8).collect();
        let records = range(file_with(&contents), 4096, contents.len() as u64 - 8192);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let reader = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.expect("accept");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            let mut got = Vec::new();
            tokio::io::AsyncReadExt::read_to_end(&mut socket, &mut got).await.expect("read");
            got
        });
        let socket = tokio::net::TcpStream::connect(address).await.expect("connect");
        let (_read_half, mut write_half) = socket.into_split();
        write_half.write_all(b"head").await.expect("head");
        write_half.write_file(&records).await.expect("sendfile");
        write_half.shutdown().await.expect("shutdown");
        drop(write_half);
        let got = reader.await.expect("reader");
        assert_eq!(&got[..4], b"head");
        assert!(got[4..] == contents[4096..contents.len() - 4096], "the range's bytes, in order");
    }
}
