//! An encoded response as the chunks it is written in, so that a fetch response's record sets
//! reach the socket without being copied into the response buffer.
//!
//! A fetch answer is mostly record bytes that the log read from its segment file into a
//! [`Bytes`]. Encoding the response the ordinary way copies each of them once more, into one
//! contiguous buffer. [`ChunkedBuf`] is the buffer `kafka-protocol` encodes into instead: when the
//! encoder puts a slice that *is* one of the record sets given to it (the same address and
//! length), the buffer keeps that `Bytes` as a chunk of its own, sharing it, and goes on encoding
//! the fields after it into a new chunk. The reply writer sends the chunks with one vectored
//! write, so a record byte is copied once on the broker: from the file into memory.
//!
//! Small record sets are copied anyway: below [`PASS_THROUGH_MIN_BYTES`] a copy costs less than
//! another `iovec` and another reference count.
//!
//! A record set may also still be in its segment file ([`crate::file_records`]): the response
//! holds a placeholder for it, which the buffer replaces by a [`Chunk::File`], and the writer
//! sends that range with `sendfile`, so on a plaintext connection a record byte is not copied
//! through the broker's memory at all.

use std::io::{self, IoSlice};
use std::os::unix::fs::FileExt;

use bytes::buf::UninitSlice;
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::protocol::buf::ByteBufMut;
use tokio::io::AsyncWriteExt;

use crate::file_records::{FileRecordSets, FileRecords};
use crate::send_file::ResponseWriter;

/// Record sets smaller than this are copied into the response buffer.
pub(crate) const PASS_THROUGH_MIN_BYTES: usize = 4096;

/// One part of an encoded response.
#[derive(Debug, Clone)]
pub enum Chunk {
    Memory(Bytes),
    /// A record set still in its segment file.
    File(FileRecords),
}

impl Chunk {
    pub fn len(&self) -> usize {
        match self {
            Chunk::Memory(bytes) => bytes.len(),
            // `FileRecordSets` gives placeholders only to ranges that fit in memory's sizes.
            Chunk::File(records) => records.len as usize,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A response ready to send, size prefix included: its bytes are the chunks in order.
#[derive(Debug, Clone)]
pub struct EncodedResponse {
    chunks: Vec<Chunk>,
}

impl EncodedResponse {
    pub(crate) fn single(bytes: Bytes) -> EncodedResponse {
        EncodedResponse { chunks: vec![Chunk::Memory(bytes)] }
    }

    /// The chunks, in the order they are sent.
    pub fn chunks(&self) -> &[Chunk] {
        &self.chunks
    }

    /// Bytes in the whole response, size prefix included.
    pub fn len(&self) -> usize {
        self.chunks.iter().map(Chunk::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The response as one buffer, copied together (file chunks read) when it is in several
    /// chunks: for tests and callers that want to parse it.
    pub fn into_contiguous(mut self) -> io::Result<Bytes> {
        if let [Chunk::Memory(_)] = self.chunks.as_slice() {
            let Some(Chunk::Memory(only)) = self.chunks.pop() else { unreachable!("one memory chunk") };
            return Ok(only);
        }
        let mut joined = BytesMut::with_capacity(self.len());
        for chunk in &self.chunks {
            match chunk {
                Chunk::Memory(bytes) => joined.put_slice(bytes),
                Chunk::File(records) => {
                    let start = joined.len();
                    joined.resize(start + chunk.len(), 0);
                    records.file.read_exact_at(&mut joined[start..], records.position)?;
                }
            }
        }
        Ok(joined.freeze())
    }

    /// Writes every chunk: runs of chunks in memory with vectored writes (where the writer
    /// supports them), file chunks with the writer's `write_file` (`sendfile` on plaintext TCP).
    pub(crate) async fn write_to<W: ResponseWriter>(&self, writer: &mut W) -> io::Result<()> {
        if let [Chunk::Memory(only)] = self.chunks.as_slice() {
            return writer.write_all(only).await;
        }
        let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(self.chunks.len());
        for run in self.chunks.split_inclusive(|chunk| matches!(chunk, Chunk::File(_))) {
            slices.clear();
            slices.extend(run.iter().filter_map(|chunk| match chunk {
                Chunk::Memory(bytes) => Some(IoSlice::new(bytes)),
                Chunk::File(_) => None,
            }));
            write_all_vectored(writer, &mut slices).await?;
            if let Some(Chunk::File(records)) = run.last() {
                writer.write_file(records).await?;
            }
        }
        Ok(())
    }
}

async fn write_all_vectored<W: ResponseWriter>(writer: &mut W, slices: &mut [IoSlice<'_>]) -> io::Result<()> {
    let mut unwritten = slices;
    // Empty slices at the front would make a write of zero bytes look like a closed writer.
    IoSlice::advance_slices(&mut unwritten, 0);
    while !unwritten.is_empty() {
        let written = writer.write_vectored(unwritten).await?;
        if written == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut unwritten, written);
    }
    Ok(())
}

/// One piece of a response being encoded.
enum Piece {
    /// Bytes the encoder wrote; still mutable so the size prefix can be filled in at the end.
    Encoded(BytesMut),
    /// A record set shared with the fetch that read it.
    Shared(Bytes),
    /// A record set still in its file.
    File(FileRecords),
}

/// The buffer a response is encoded into: an encoded tail that grows, and the pieces before it.
/// See the module documentation.
pub(crate) struct ChunkedBuf<'a> {
    /// Record sets to keep as chunks of their own when the encoder puts them.
    pass_through: &'a [Bytes],
    /// Placeholders to replace by the file ranges they stand for.
    files: &'a FileRecordSets,
    /// File chunks made so far, to check that no placeholder was copied as if it were records.
    file_chunks: usize,
    pieces: Vec<Piece>,
    /// Bytes in `pieces`, so offsets stay those of the whole response.
    pieces_len: usize,
    tail: BytesMut,
}

impl<'a> ChunkedBuf<'a> {
    /// A buffer expecting about `encoded_capacity` bytes of its own (the response minus the
    /// record sets it passes through).
    pub(crate) fn new(
        encoded_capacity: usize,
        pass_through: &'a [Bytes],
        files: &'a FileRecordSets,
    ) -> ChunkedBuf<'a> {
        ChunkedBuf {
            pass_through,
            files,
            file_chunks: 0,
            pieces: Vec::new(),
            pieces_len: 0,
            tail: BytesMut::with_capacity(encoded_capacity),
        }
    }

    /// The response's chunks, with the first four bytes (written as a placeholder by the
    /// caller) set to the size of what follows them. An error if fewer than `file_chunks`
    /// placeholders (as many as the response holds) became file chunks: the encoder copied one,
    /// and its zeros must not reach a client as records.
    pub(crate) fn finish_with_size_prefix(mut self, file_chunks: usize) -> Result<EncodedResponse, String> {
        if self.file_chunks != file_chunks {
            return Err(format!(
                "{} of the response's {file_chunks} file record sets were encoded as file ranges",
                self.file_chunks
            ));
        }
        let total = self.pieces_len + self.tail.len();
        let size = i32::try_from(total - crate::frame::SIZE_PREFIX_BYTES).unwrap_or(i32::MAX);
        if !self.tail.is_empty() {
            self.pieces.push(Piece::Encoded(self.tail));
        }
        let mut chunks = Vec::with_capacity(self.pieces.len());
        for (index, piece) in self.pieces.into_iter().enumerate() {
            chunks.push(match piece {
                Piece::Encoded(mut bytes) => {
                    if index == 0 {
                        bytes[..crate::frame::SIZE_PREFIX_BYTES].copy_from_slice(&size.to_be_bytes());
                    }
                    Chunk::Memory(bytes.freeze())
                }
                Piece::Shared(bytes) => Chunk::Memory(bytes),
                Piece::File(records) => Chunk::File(records),
            });
        }
        Ok(EncodedResponse { chunks })
    }

    /// The record set `slice` is, when it is one to pass through: a file range for a
    /// placeholder, or memory shared with the fetch.
    fn shared(&self, slice: &[u8]) -> Option<Piece> {
        if slice.len() < PASS_THROUGH_MIN_BYTES {
            return None;
        }
        if let Some(records) = self.files.find(slice) {
            return Some(Piece::File(records.clone()));
        }
        self.pass_through
            .iter()
            .find(|records| records.as_ptr() == slice.as_ptr() && records.len() == slice.len())
            .map(|records| Piece::Shared(records.clone()))
    }
}

// SAFETY: every method forwards to the tail `BytesMut`, whose implementation upholds the
// trait's contract (`chunk_mut` is writable memory of `remaining_mut` or fewer bytes, and
// `advance_mut` only past what was written); `put_slice` either forwards or writes nothing.
unsafe impl BufMut for ChunkedBuf<'_> {
    fn remaining_mut(&self) -> usize {
        self.tail.remaining_mut()
    }

    unsafe fn advance_mut(&mut self, count: usize) {
        // SAFETY: the caller's promise (`count` bytes of `chunk_mut` were written) is about the
        // tail's chunk, which is what `chunk_mut` returned.
        unsafe { self.tail.advance_mut(count) }
    }

    fn chunk_mut(&mut self) -> &mut UninitSlice {
        self.tail.chunk_mut()
    }

    fn put_slice(&mut self, slice: &[u8]) {
        match self.shared(slice) {
            Some(piece) => {
                if !self.tail.is_empty() {
                    let encoded = self.tail.split();
                    self.pieces_len += encoded.len();
                    self.pieces.push(Piece::Encoded(encoded));
                }
                self.pieces_len += slice.len();
                self.file_chunks += usize::from(matches!(piece, Piece::File(_)));
                self.pieces.push(piece);
            }
            None => self.tail.put_slice(slice),
        }
    }
}

/// Offsets are those of the whole response. Only the tail can be sought in or read back:
/// `kafka-protocol` uses gaps (a length written after what it measures) only when it encodes
/// record batches, never in the messages a response is made of, so no gap spans a piece.
impl ByteBufMut for ChunkedBuf<'_> {
    fn offset(&self) -> usize {
        self.pieces_len + self.tail.len()
    }

    fn seek(&mut self, offset: usize) {
        let in_tail = offset.checked_sub(self.pieces_len).expect("a seek within the encoded tail");
        self.tail.resize(in_tail, 0);
    }

    fn range(&mut self, range: std::ops::Range<usize>) -> &mut [u8] {
        let start = range.start.checked_sub(self.pieces_len).expect("a range within the encoded tail");
        &mut self.tail[start..range.end - self.pieces_len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::Arc;

    use crate::file_records::tests::file_with;

    fn encode(pass_through: &[Bytes], parts: &[&[u8]]) -> EncodedResponse {
        encode_with_files(pass_through, &FileRecordSets::default(), 0, parts).expect("encoded")
    }

    fn encode_with_files(
        pass_through: &[Bytes],
        files: &FileRecordSets,
        file_chunks: usize,
        parts: &[&[u8]],
    ) -> Result<EncodedResponse, String> {
        let mut buf = ChunkedBuf::new(64, pass_through, files);
        buf.put_i32(0);
        for part in parts {
            buf.put_slice(part);
        }
        buf.finish_with_size_prefix(file_chunks)
    }

    fn memory(chunk: &Chunk) -> &Bytes {
        match chunk {
            Chunk::Memory(bytes) => bytes,
            Chunk::File(_) => panic!("a file chunk where memory was expected"),
        }
    }

    #[test]
    fn a_large_record_set_given_to_pass_through_is_shared_not_copied() {
        let records = Bytes::from(vec![9u8; PASS_THROUGH_MIN_BYTES]);
        let response = encode(std::slice::from_ref(&records), &[b"head", &records, b"tail"]);
        let chunks = response.chunks();
        assert_eq!(chunks.len(), 3);
        assert_eq!(memory(&chunks[1]).as_ptr(), records.as_ptr(), "the record set is the same memory");
        let whole = response.into_contiguous().expect("joined");
        assert_eq!(&whole[..4], &((4 + PASS_THROUGH_MIN_BYTES + 4) as i32).to_be_bytes());
        assert_eq!(&whole[4..8], b"head");
        assert!(whole[8..8 + PASS_THROUGH_MIN_BYTES].iter().all(|&byte| byte == 9));
        assert_eq!(&whole[8 + PASS_THROUGH_MIN_BYTES..], b"tail");
    }

    #[test]
    fn small_equal_or_unlisted_slices_are_copied() {
        let small = Bytes::from(vec![1u8; PASS_THROUGH_MIN_BYTES - 1]);
        let listed = Bytes::from(vec![2u8; PASS_THROUGH_MIN_BYTES]);
        // The same bytes at another address are not the listed record set.
        let lookalike = listed.to_vec();
        let response = encode(&[small.clone(), listed], &[&small, &lookalike]);
        assert_eq!(response.chunks().len(), 1);
        assert_eq!(response.len(), 4 + 2 * PASS_THROUGH_MIN_BYTES - 1);
    }

    #[test]
    fn a_response_starting_with_a_shared_piece_after_the_prefix_keeps_its_prefix() {
        let records = Bytes::from(vec![5u8; PASS_THROUGH_MIN_BYTES * 2]);
        let response = encode(std::slice::from_ref(&records), &[&records]);
        assert_eq!(response.chunks().len(), 2);
        let whole = response.into_contiguous().expect("joined");
        assert_eq!(&whole[..4], &(records.len() as i32).to_be_bytes());
    }

    #[tokio::test]
    async fn chunks_are_written_in_order_through_partial_vectored_writes() {
        let records = Bytes::from((0..PASS_THROUGH_MIN_BYTES * 3).map(|i| i as u8).collect::<Vec<_>>());
        let response = encode(std::slice::from_ref(&records), &[b"a", &records, b"b", &records[..10]]);
        // A pipe far smaller than the response forces partial writes at every boundary.
        let (mut writer, mut reader) = tokio::io::duplex(1000);
        let expected = response.clone().into_contiguous().expect("joined");
        let read = tokio::spawn(async move {
            let mut got = Vec::new();
            tokio::io::AsyncReadExt::read_to_end(&mut reader, &mut got).await.map(|_| got)
        });
        response.write_to(&mut writer).await.expect("written");
        drop(writer);
        assert_eq!(read.await.expect("reader").expect("read"), expected.to_vec());
    }

    /// A placeholder becomes its file range; the bytes sent are the file's, between the
    /// encoded bytes around them.
    #[tokio::test]
    async fn a_placeholder_is_sent_as_its_file_range() {
        let contents: Vec<u8> = (0..3 * PASS_THROUGH_MIN_BYTES).map(|i| (i % 7) as u8).collect();
        let file = Arc::new(file_with(&contents));
        let mut files = FileRecordSets::default();
        let len = 2 * PASS_THROUGH_MIN_BYTES as u64;
        let placeholder =
            files.placeholder_for(FileRecords { file, position: 100, len }).expect("placeholder");
        let response = encode_with_files(&[], &files, 1, &[b"head", &placeholder, b"tail"]).expect("encoded");
        assert!(matches!(response.chunks()[1], Chunk::File(_)), "{:?}", response.chunks());
        let (mut writer, mut reader) = tokio::io::duplex(1000);
        let read = tokio::spawn(async move {
            let mut got = Vec::new();
            tokio::io::AsyncReadExt::read_to_end(&mut reader, &mut got).await.map(|_| got)
        });
        response.write_to(&mut writer).await.expect("written");
        drop(writer);
        let got = read.await.expect("reader").expect("read");
        assert_eq!(&got[..4], &((4 + len + 4) as i32).to_be_bytes());
        assert_eq!(&got[4..8], b"head");
        assert!(got[8..8 + len as usize] == contents[100..100 + len as usize]);
        assert_eq!(&got[8 + len as usize..], b"tail");
    }

    /// Were a placeholder copied by the encoder (not put whole), its zeros would reach the client
    /// as records: the encoding fails instead.
    #[test]
    fn a_placeholder_that_was_not_passed_through_fails_the_encoding() {
        let mut files = FileRecordSets::default();
        let records = FileRecords { file: Arc::new(file_with(&[1; 8192])), position: 0, len: 8192 };
        let placeholder = files.placeholder_for(records).expect("placeholder");
        let error = encode_with_files(&[], &files, 1, &[&placeholder[..4096], &placeholder[4096..]])
            .expect_err("copied placeholder");
        assert!(error.contains("0 of the response's 1 file record sets"), "{error}");
    }
}
