//! Record sets that stay in their log segment files until the response carrying them is
//! written, and then go from the page cache to a plaintext socket with `sendfile(2)`: no copy
//! through the broker's memory at all. Opt-in (`ServerConfig::send_files`): measured on loopback
//! it cost the broker more CPU per byte served than reading into memory and writing.
//!
//! The fetch handler reads no bytes for such a record set. It gives the response a placeholder
//! instead ([`FileRecordSets::placeholder_for`]), a `Bytes` of the record set's length, and keeps
//! the file range beside the response ([`crate::Reply::WithFiles`]). `kafka-protocol` encodes
//! the response as usual; the encoder ([`crate::encoded`]) recognises each placeholder by its
//! address, as it recognises any record set it passes through, and puts the file range in the
//! response's chunks where the bytes would have been. The writer then sends the encoded chunks
//! with ordinary writes and each file range with `sendfile` ([`crate::send_file`]).
//!
//! Placeholders are slices of one static zero-filled region that nothing writes and nothing
//! reads: it lives in the binary's zero-initialised data, so it costs address space and no
//! memory. Each placeholder of a response has its own part of the region, laid end to end, so
//! each is told apart by its address. A record set that does not fit in what is left of the
//! region (one response carries at most [`PLACEHOLDER_REGION_BYTES`] through files) is read
//! into memory as before.
//!
//! Lifetime and truncation: the `Arc<File>` keeps the segment's inode readable while the
//! response is written, even if retention or the cleaner deletes or replaces the segment
//! meanwhile (both unlink or rename; neither rewrites a file in place). The broker never cuts
//! back bytes a read has returned: a segment is truncated only when it is recovered at open
//! (before any read) and after a failed append, back to where that append began, which is past
//! the end of every range a read returned. Should a file still be shorter than its range when it
//! is sent (someone truncated it behind the broker's back), the response cannot be finished
//! well-formed, since its sizes are already on the wire: the write fails and the connection
//! closes, and the client fetches again on a new one. The handler checks each file's length
//! when it takes the range, so a file found short then is read (and reported) the ordinary way.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use bytes::Bytes;

use crate::encoded::PASS_THROUGH_MIN_BYTES;

/// The most record bytes one response sends from files; beyond it, record sets are read.
/// Above the broker's largest fetch response (55 MiB) plus a batch.
pub const PLACEHOLDER_REGION_BYTES: usize = 64 * 1024 * 1024;

/// Never written and, outside a bug the encoder reports, never read: see the module docs.
static PLACEHOLDER_REGION: [u8; PLACEHOLDER_REGION_BYTES] = [0; PLACEHOLDER_REGION_BYTES];

/// Whole batches of one segment file, as the log's read returned them.
#[derive(Debug, Clone)]
pub struct FileRecords {
    pub file: Arc<File>,
    pub position: u64,
    pub len: u64,
}

impl FileRecords {
    /// The bytes, read into memory (the copying path: TLS, tests).
    pub fn read(&self) -> io::Result<Bytes> {
        let len = usize::try_from(self.len).map_err(|_| io::Error::other("record set too large"))?;
        let mut bytes = vec![0u8; len];
        self.file.read_exact_at(&mut bytes, self.position)?;
        Ok(Bytes::from(bytes))
    }
}

/// The file record sets of one response, each with the placeholder that stands for it.
#[derive(Debug, Default)]
pub struct FileRecordSets {
    sets: Vec<(Bytes, FileRecords)>,
    /// Bytes of the placeholder region given out so far.
    region_used: usize,
}

impl FileRecordSets {
    /// A placeholder to put in the response where `records`' bytes go, or `None` when the record
    /// set should be read into memory instead: when it is small (a copy costs less than another
    /// system call) or the response has used up the placeholder region.
    pub fn placeholder_for(&mut self, records: FileRecords) -> Option<Bytes> {
        let len = usize::try_from(records.len).ok()?;
        if len < PASS_THROUGH_MIN_BYTES || len > PLACEHOLDER_REGION_BYTES - self.region_used {
            return None;
        }
        let placeholder = Bytes::from_static(&PLACEHOLDER_REGION[self.region_used..self.region_used + len]);
        self.region_used += len;
        self.sets.push((placeholder.clone(), records));
        Some(placeholder)
    }

    pub fn is_empty(&self) -> bool {
        self.sets.is_empty()
    }

    /// The file range `slice` stands for, if it is one of this response's placeholders.
    pub(crate) fn find(&self, slice: &[u8]) -> Option<&FileRecords> {
        self.sets
            .iter()
            .find(|(placeholder, _)| {
                placeholder.as_ptr() == slice.as_ptr() && placeholder.len() == slice.len()
            })
            .map(|(_, records)| records)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn records(len: u64) -> FileRecords {
        FileRecords { file: Arc::new(file_with(&vec![3u8; len as usize])), position: 0, len }
    }

    /// An unlinked temporary file holding `bytes`.
    pub(crate) fn file_with(bytes: &[u8]) -> File {
        let mut file = tempfile::tempfile().expect("temporary file");
        std::io::Write::write_all(&mut file, bytes).expect("write");
        file
    }

    #[test]
    fn placeholders_are_distinct_and_small_or_overflowing_sets_are_read_instead() {
        let mut sets = FileRecordSets::default();
        assert!(sets.placeholder_for(records(PASS_THROUGH_MIN_BYTES as u64 - 1)).is_none());
        let first = sets.placeholder_for(records(PASS_THROUGH_MIN_BYTES as u64)).expect("placeholder");
        let second = sets.placeholder_for(records(PASS_THROUGH_MIN_BYTES as u64)).expect("placeholder");
        assert_ne!(first.as_ptr(), second.as_ptr(), "equal lengths, told apart by address");
        assert_eq!(sets.find(&first).map(|found| found.len), Some(PASS_THROUGH_MIN_BYTES as u64));
        assert!(sets.find(&first[..10]).is_none(), "a part of a placeholder is not one");
        let mut huge = records(1);
        huge.len = PLACEHOLDER_REGION_BYTES as u64;
        assert!(sets.placeholder_for(huge).is_none(), "beyond what is left of the region");
    }
}
