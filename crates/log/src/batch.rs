//! Kafka RecordBatch v2 headers: the unit the log stores, verbatim.
//!
//! A batch on disk is exactly the bytes a producer sent, so a fetch can hand the file's bytes back
//! without re-encoding. Appends only ever rewrite `base_offset`, which sits outside the CRC. The
//! cleaner (`cleaner.rs`) is the one writer that re-encodes a batch, when compaction drops some
//! of its records: `rebuild_batch` keeps the batch's base offset, last offset delta, producer id,
//! epoch and base sequence (so producer state rebuilt from the log stays right, as in Kafka) and
//! computes a new CRC; `encode_empty_header` keeps a batch with no records left. Such stored
//! batches are checked by `validate_stored`, which allows what the cleaner writes (fewer records
//! than offsets, a delete horizon in `base_timestamp`) and nothing else beyond `validate`.
//! This module is a pure codec: bytes in, typed header out, no I/O.
//!
//! Layout (big-endian), from Kafka's `DefaultRecordBatch`:
//!
//! ```text
//! base_offset: i64            0   ┐ LOG_OVERHEAD: not counted in batch_length
//! batch_length: i32           8   ┘
//! partition_leader_epoch: i32 12
//! magic: i8                   16  (= 2)
//! crc: u32                    17  CRC-32C of bytes [21, end)
//! attributes: i16             21
//! last_offset_delta: i32      23
//! base_timestamp: i64         27
//! max_timestamp: i64          35
//! producer_id: i64            43
//! producer_epoch: i16         51
//! base_sequence: i32          53
//! records_count: i32          57
//! records: [Record]           61
//! ```

use std::fmt;

/// Bytes in front of `batch_length` that it does not count: base offset and the length itself.
pub const LOG_OVERHEAD: usize = 12;
/// The fixed part of a v2 batch, up to the first record.
pub const BATCH_HEADER_BYTES: usize = 61;
/// The smallest legal `batch_length` (a header with no records).
pub const BATCH_LENGTH_MIN: usize = BATCH_HEADER_BYTES - LOG_OVERHEAD;
/// No batch is ever larger than this, whatever the configuration says. Recovery uses it to tell
/// a length field that is plausible from garbage before it reads that many bytes.
pub const BATCH_BYTES_HARD_MAX: usize = 64 * 1024 * 1024;
/// The only record format this log stores.
pub const MAGIC_V2: i8 = 2;
/// Kafka's "no timestamp" value.
pub const NO_TIMESTAMP: i64 = -1;

const BATCH_LENGTH_AT: usize = 8;
const MAGIC_AT: usize = 16;
const CRC_AT: usize = 17;
const ATTRIBUTES_AT: usize = 21;
const LAST_OFFSET_DELTA_AT: usize = 23;
const BASE_TIMESTAMP_AT: usize = 27;
const MAX_TIMESTAMP_AT: usize = 35;
const PRODUCER_ID_AT: usize = 43;
const PRODUCER_EPOCH_AT: usize = 51;
const BASE_SEQUENCE_AT: usize = 53;
const RECORDS_COUNT_AT: usize = 57;

/// Attribute bits we read (compression and timestamp type are carried, never interpreted here).
const ATTRIBUTE_TRANSACTIONAL: i16 = 1 << 4;
const ATTRIBUTE_CONTROL: i16 = 1 << 5;
/// Set by the cleaner (Kafka's KIP-534) on a batch it kept tombstones or a removable marker in:
/// `base_timestamp` then holds the time after which the next cleaning may remove them, and the
/// records' timestamp deltas are relative to it. Producers never set it.
const ATTRIBUTE_DELETE_HORIZON: i16 = 1 << 6;

/// Why a byte range is not a valid v2 batch. Positions are relative to the start of the batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchError {
    /// Fewer bytes than the header, or than `batch_length` says.
    Truncated { need: usize, have: usize },
    /// `batch_length` is below the header size or above the limit.
    BadLength { batch_length: i64, limit: usize },
    /// A magic byte other than 2 (older formats are not stored by this log).
    BadMagic { magic: i8 },
    /// The stored CRC does not match the bytes.
    BadCrc { stored: u32, computed: u32 },
    /// `records_count` disagrees with `last_offset_delta + 1`, or is not positive.
    BadRecordCount { records_count: i32, last_offset_delta: i32 },
    /// `max_timestamp` is below `base_timestamp`, or a timestamp is negative but not -1.
    BadTimestamps { base_timestamp: i64, max_timestamp: i64 },
    /// Attribute bits a producer may not set (the cleaner's delete horizon).
    BadAttributes { attributes: i16 },
    /// The records inside the batch do not parse: record `index` runs past the batch or is malformed.
    MalformedRecord { index: i32 },
}

impl fmt::Display for BatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BatchError::Truncated { need, have } => {
                write!(f, "truncated batch: need {need} bytes, have {have}")
            }
            BatchError::BadLength { batch_length, limit } => {
                write!(f, "batch length {batch_length} outside [{BATCH_LENGTH_MIN}, {limit}]")
            }
            BatchError::BadMagic { magic } => write!(f, "unsupported magic {magic} (only v2)"),
            BatchError::BadCrc { stored, computed } => {
                write!(f, "CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")
            }
            BatchError::BadRecordCount { records_count, last_offset_delta } => write!(
                f,
                "records_count {records_count} does not match last_offset_delta {last_offset_delta} + 1"
            ),
            BatchError::BadTimestamps { base_timestamp, max_timestamp } => {
                write!(f, "bad timestamps: base {base_timestamp}, max {max_timestamp}")
            }
            BatchError::BadAttributes { attributes } => {
                write!(f, "attributes {attributes:#06x} set the delete horizon, which only the log may set")
            }
            BatchError::MalformedRecord { index } => write!(f, "record {index} of the batch is malformed"),
        }
    }
}

impl std::error::Error for BatchError {}

/// The fixed fields of one v2 batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    /// Bytes after the length field; the whole batch is `batch_length + LOG_OVERHEAD`.
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub records_count: i32,
}

impl BatchHeader {
    /// The whole batch's size in bytes, overhead included.
    pub fn total_bytes(&self) -> usize {
        self.batch_length as usize + LOG_OVERHEAD
    }

    /// The offset of the batch's last record.
    pub fn last_offset(&self) -> i64 {
        self.base_offset + i64::from(self.last_offset_delta)
    }

    /// The offset right after this batch.
    pub fn next_offset(&self) -> i64 {
        self.last_offset() + 1
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes & ATTRIBUTE_TRANSACTIONAL != 0
    }

    pub fn is_control(&self) -> bool {
        self.attributes & ATTRIBUTE_CONTROL != 0
    }

    /// Compressed batches cannot be read record by record without their codec.
    pub fn is_compressed(&self) -> bool {
        self.attributes & ATTRIBUTE_COMPRESSION_MASK != 0
    }

    /// The broker stamped every record with `max_timestamp` (LogAppendTime).
    pub fn is_log_append_time(&self) -> bool {
        self.attributes & ATTRIBUTE_LOG_APPEND_TIME != 0
    }

    /// When the cleaner may remove this batch's tombstones or its marker, if it set that time.
    pub fn delete_horizon_ms(&self) -> Option<i64> {
        (self.attributes & ATTRIBUTE_DELETE_HORIZON != 0).then_some(self.base_timestamp)
    }
}

/// Reads the total size of the batch starting at `bytes` from its length field, checking the
/// length against `[BATCH_LENGTH_MIN, limit]`. Needs only the first `LOG_OVERHEAD` bytes: this is
/// the cheap "is a whole batch here?" check that comes before any parse.
pub fn peek_total_bytes(bytes: &[u8], limit: usize) -> Result<usize, BatchError> {
    if bytes.len() < LOG_OVERHEAD {
        return Err(BatchError::Truncated { need: LOG_OVERHEAD, have: bytes.len() });
    }
    let batch_length = i64::from(read_i32(bytes, BATCH_LENGTH_AT));
    let total = batch_length + LOG_OVERHEAD as i64;
    if batch_length < BATCH_LENGTH_MIN as i64 || total > limit as i64 {
        return Err(BatchError::BadLength { batch_length, limit });
    }
    Ok(total as usize)
}

/// Parses the header fields, checking only lengths and the magic byte (no CRC). Used where the
/// bytes were verified before, such as walking a segment that recovery already checked.
pub fn parse_header(bytes: &[u8], limit: usize) -> Result<BatchHeader, BatchError> {
    if bytes.len() < BATCH_HEADER_BYTES {
        return Err(BatchError::Truncated { need: BATCH_HEADER_BYTES, have: bytes.len() });
    }
    peek_total_bytes(bytes, limit)?;
    let magic = bytes[MAGIC_AT] as i8;
    if magic != MAGIC_V2 {
        return Err(BatchError::BadMagic { magic });
    }
    Ok(BatchHeader {
        base_offset: read_i64(bytes, 0),
        batch_length: read_i32(bytes, BATCH_LENGTH_AT),
        partition_leader_epoch: read_i32(bytes, 12),
        magic,
        crc: read_u32(bytes, CRC_AT),
        attributes: read_i16(bytes, ATTRIBUTES_AT),
        last_offset_delta: read_i32(bytes, LAST_OFFSET_DELTA_AT),
        base_timestamp: read_i64(bytes, BASE_TIMESTAMP_AT),
        max_timestamp: read_i64(bytes, MAX_TIMESTAMP_AT),
        producer_id: read_i64(bytes, PRODUCER_ID_AT),
        producer_epoch: read_i16(bytes, PRODUCER_EPOCH_AT),
        base_sequence: read_i32(bytes, BASE_SEQUENCE_AT),
        records_count: read_i32(bytes, RECORDS_COUNT_AT),
    })
}

/// Fully validates the single batch at the start of `bytes` as a producer must send it: length
/// bounds, magic, CRC-32C over the range Kafka defines, record count and timestamps, and no
/// attribute only the log may set. Returns the header; the batch occupies `header.total_bytes()`
/// bytes and anything after it is not looked at.
pub fn validate(bytes: &[u8], limit: usize) -> Result<BatchHeader, BatchError> {
    let header = validate_stored(bytes, limit)?;
    if header.attributes & ATTRIBUTE_DELETE_HORIZON != 0 {
        return Err(BatchError::BadAttributes { attributes: header.attributes });
    }
    if header.records_count != header.last_offset_delta.wrapping_add(1) {
        return Err(BatchError::BadRecordCount {
            records_count: header.records_count,
            last_offset_delta: header.last_offset_delta,
        });
    }
    Ok(header)
}

/// Fully validates one batch as the log may store it: what `validate` checks, except that a batch
/// the cleaner rewrote may hold fewer records than its offsets span (none at all, for an empty
/// batch kept for its producer state), and that with a delete horizon `base_timestamp` is that
/// horizon rather than the first record's timestamp. Recovery and `Log::verify` use this; every
/// field it relaxes is covered by the CRC, so damage is caught as well as by `validate`.
pub fn validate_stored(bytes: &[u8], limit: usize) -> Result<BatchHeader, BatchError> {
    let header = parse_header(bytes, limit)?;
    let total = header.total_bytes();
    if bytes.len() < total {
        return Err(BatchError::Truncated { need: total, have: bytes.len() });
    }
    let computed = crc32c::crc32c(&bytes[ATTRIBUTES_AT..total]);
    if computed != header.crc {
        return Err(BatchError::BadCrc { stored: header.crc, computed });
    }
    if header.records_count < 0
        || header.last_offset_delta < 0
        || i64::from(header.records_count) > i64::from(header.last_offset_delta) + 1
        || (header.records_count == 0 && total != BATCH_HEADER_BYTES)
    {
        return Err(BatchError::BadRecordCount {
            records_count: header.records_count,
            last_offset_delta: header.last_offset_delta,
        });
    }
    let timestamp_ok = |ts: i64| ts >= 0 || ts == NO_TIMESTAMP;
    let ordered = header.base_timestamp == NO_TIMESTAMP
        || header.max_timestamp >= header.base_timestamp
        || header.delete_horizon_ms().is_some();
    if !timestamp_ok(header.base_timestamp) || !timestamp_ok(header.max_timestamp) || !ordered {
        return Err(BatchError::BadTimestamps {
            base_timestamp: header.base_timestamp,
            max_timestamp: header.max_timestamp,
        });
    }
    Ok(header)
}

/// Overwrites the base offset of the batch at the start of `bytes`. The field is outside the
/// CRC, so the batch stays valid.
pub fn set_base_offset(bytes: &mut [u8], base_offset: i64) {
    bytes[0..8].copy_from_slice(&base_offset.to_be_bytes());
}

/// Stamps the batch at the start of `bytes` with the broker's time (LogAppendTime): sets the
/// timestamp-type attribute and the max timestamp, which consumers then give every record, and
/// recomputes the CRC that covers both, which it returns. The batch must have been validated.
pub fn set_log_append_time(bytes: &mut [u8], now_ms: i64) -> u32 {
    let total = peek_total_bytes(bytes, usize::MAX).unwrap_or(bytes.len()).min(bytes.len());
    let attributes = i16::from_be_bytes([bytes[ATTRIBUTES_AT], bytes[ATTRIBUTES_AT + 1]]);
    bytes[ATTRIBUTES_AT..ATTRIBUTES_AT + 2]
        .copy_from_slice(&(attributes | ATTRIBUTE_LOG_APPEND_TIME).to_be_bytes());
    bytes[MAX_TIMESTAMP_AT..MAX_TIMESTAMP_AT + 8].copy_from_slice(&now_ms.to_be_bytes());
    let crc = crc32c::crc32c(&bytes[ATTRIBUTES_AT..total]);
    bytes[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    crc
}

/// Encodes a valid uncompressed v2 batch. Used by tests, benchmarks and tools that need real
/// batches without a Kafka client; each record is `(key, value)` with no headers.
pub fn encode_batch(base_timestamp: i64, records: &[(Option<&[u8]>, &[u8])]) -> Vec<u8> {
    let records: Vec<KeyValue<'_>> = records.iter().map(|(key, value)| (*key, Some(*value))).collect();
    encode_records(base_timestamp, &records, None)
}

/// A record's key and value for `encode_records`; a null value is a tombstone.
pub type KeyValue<'a> = (Option<&'a [u8]>, Option<&'a [u8]>);

/// The producer fields of a batch (KIP-98): who wrote it, at which epoch, its first sequence
/// number, and whether it belongs to a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerFields {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub transactional: bool,
}

/// Encodes a valid uncompressed v2 batch of `(key, value)` records, where a null value is a
/// tombstone, optionally written by an idempotent or transactional producer. For tests, tools and
/// benchmarks; every record has `base_timestamp` and no headers.
pub fn encode_records(
    base_timestamp: i64,
    records: &[KeyValue<'_>],
    producer: Option<ProducerFields>,
) -> Vec<u8> {
    let mut body = Vec::new();
    let mut record = Vec::new();
    for (index, (key, value)) in records.iter().enumerate() {
        record.clear();
        record.push(0u8); // attributes
        put_varint(&mut record, 0); // timestamp delta
        put_varint(&mut record, index as i64); // offset delta
        for field in [key, value] {
            match field {
                Some(bytes) => {
                    put_varint(&mut record, bytes.len() as i64);
                    record.extend_from_slice(bytes);
                }
                None => put_varint(&mut record, -1),
            }
        }
        put_varint(&mut record, 0); // header count
        put_varint(&mut body, record.len() as i64);
        body.extend_from_slice(&record);
    }
    let producer = producer.unwrap_or(ProducerFields {
        producer_id: -1,
        producer_epoch: -1,
        base_sequence: -1,
        transactional: false,
    });
    let attributes = if producer.transactional { ATTRIBUTE_TRANSACTIONAL } else { 0 };
    let records_count = records.len() as i32;
    let mut batch = Vec::with_capacity(BATCH_HEADER_BYTES + body.len());
    batch.extend_from_slice(&0i64.to_be_bytes());
    batch.extend_from_slice(&((BATCH_LENGTH_MIN + body.len()) as i32).to_be_bytes());
    batch.extend_from_slice(&0i32.to_be_bytes()); // partition leader epoch
    batch.push(MAGIC_V2 as u8);
    batch.extend_from_slice(&0u32.to_be_bytes()); // crc, filled below
    batch.extend_from_slice(&attributes.to_be_bytes());
    batch.extend_from_slice(&(records_count - 1).to_be_bytes());
    batch.extend_from_slice(&base_timestamp.to_be_bytes());
    batch.extend_from_slice(&base_timestamp.to_be_bytes()); // max timestamp
    batch.extend_from_slice(&producer.producer_id.to_be_bytes());
    batch.extend_from_slice(&producer.producer_epoch.to_be_bytes());
    batch.extend_from_slice(&producer.base_sequence.to_be_bytes());
    batch.extend_from_slice(&records_count.to_be_bytes());
    batch.extend_from_slice(&body);
    finish_batch(&mut batch);
    batch
}

/// Compression codec bits of `attributes`; 0 is none.
const ATTRIBUTE_COMPRESSION_MASK: i16 = 0x07;
/// Timestamp type bit: set when the broker stamped every record with the batch's max timestamp.
pub(crate) const ATTRIBUTE_LOG_APPEND_TIME: i16 = 1 << 3;

/// Finds the first record of a whole, validated batch whose timestamp is at or after `target`,
/// returning its offset and timestamp. Records of an uncompressed CreateTime batch are walked one
/// by one; a compressed batch cannot be read without decompressing it, so for those (and for
/// LogAppendTime batches, whose records all carry the max timestamp) the answer is the batch's
/// base offset and max timestamp when that reaches `target`. A batch with no records (one the
/// cleaner emptied) has no answer.
pub fn first_record_at_or_after(batch: &[u8], target: i64) -> Option<(i64, i64)> {
    let header = parse_header(batch, BATCH_BYTES_HARD_MAX).ok()?;
    if header.max_timestamp < target || header.records_count == 0 {
        return None;
    }
    let whole_batch_answer = Some((header.base_offset, header.max_timestamp));
    if header.attributes & (ATTRIBUTE_COMPRESSION_MASK | ATTRIBUTE_LOG_APPEND_TIME) != 0 {
        return whole_batch_answer;
    }
    for view in record_views(batch)? {
        let Ok(RecordView { record, .. }) = view else { break };
        if record.timestamp >= target {
            return Some((record.offset, record.timestamp));
        }
    }
    // The header promised a record at or after `target` that the records do not show: answer
    // with the batch so the caller still makes progress.
    whole_batch_answer
}

/// One record of an uncompressed batch, borrowed from the batch's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    pub offset: i64,
    pub timestamp: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
}

/// The records of one whole batch (headers of records are skipped). `None` for a compressed
/// batch, which needs decompressing first, or for malformed records. Used for Tidewater's own
/// internal logs, which it writes uncompressed.
pub fn records(batch: &[u8]) -> Option<Vec<Record<'_>>> {
    record_views(batch)?.map(|view| view.ok().map(|view| view.record)).collect()
}

/// One record of an uncompressed batch with what re-encoding it needs: its attributes byte, its
/// offset delta and everything after the offset delta (key, value and headers) as raw bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordView<'a> {
    pub record: Record<'a>,
    attributes: u8,
    offset_delta: i64,
    /// The key, value and headers exactly as encoded.
    tail: &'a [u8],
}

/// Walks the records of one whole uncompressed batch; see `record_views`.
#[derive(Debug, Clone)]
pub struct RecordViews<'a> {
    cursor: &'a [u8],
    index: i32,
    count: i32,
    base_offset: i64,
    base_timestamp: i64,
}

/// The records of one whole batch, one by one, with the bytes `rebuild_batch` needs. `None` for a
/// compressed batch or a header that does not parse; a record that does not parse ends the walk
/// with `BatchError::MalformedRecord`.
pub fn record_views(batch: &[u8]) -> Option<RecordViews<'_>> {
    let header = parse_header(batch, BATCH_BYTES_HARD_MAX).ok()?;
    if header.is_compressed() {
        return None;
    }
    Some(RecordViews {
        cursor: batch.get(BATCH_HEADER_BYTES..header.total_bytes())?,
        index: 0,
        count: header.records_count.max(0),
        base_offset: header.base_offset,
        base_timestamp: header.base_timestamp,
    })
}

impl<'a> Iterator for RecordViews<'a> {
    type Item = Result<RecordView<'a>, BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.index >= self.count {
            return None;
        }
        let index = self.index;
        let view = self.parse_next();
        // A malformed record ends the walk: nothing after it can be located.
        self.index = if view.is_some() { index + 1 } else { self.count };
        Some(view.ok_or(BatchError::MalformedRecord { index }))
    }
}

impl<'a> RecordViews<'a> {
    fn parse_next(&mut self) -> Option<RecordView<'a>> {
        let length = usize::try_from(take_varint(&mut self.cursor)?).ok()?;
        let mut record = self.cursor.get(..length)?;
        self.cursor = &self.cursor[length..];
        let attributes = *record.first()?;
        record = &record[1..];
        let timestamp = self.base_timestamp.checked_add(take_varint(&mut record)?)?;
        let offset_delta = take_varint(&mut record)?;
        let tail = record;
        let key = take_bytes(&mut record)?;
        let value = take_bytes(&mut record)?;
        let offset = self.base_offset.checked_add(offset_delta)?;
        Some(RecordView { record: Record { offset, timestamp, key, value }, attributes, offset_delta, tail })
    }
}

/// Encodes a batch that keeps `original`'s identity (base offset, last offset delta, partition
/// leader epoch, producer id, epoch and base sequence, transactional and control bits, timestamp
/// type) but holds only `kept`, records of that same batch, as Kafka's cleaner does: the last
/// offset delta is kept so the producer's last sequence survives, and offsets keep their gaps.
/// With `delete_horizon_ms` the batch carries that horizon in `base_timestamp`; record timestamps
/// are unchanged either way (their deltas are re-encoded). Appends the batch to `out`.
pub fn rebuild_batch(
    original: &BatchHeader,
    kept: &[RecordView<'_>],
    delete_horizon_ms: Option<i64>,
    out: &mut Vec<u8>,
) {
    let start = out.len();
    let base_timestamp = match (delete_horizon_ms, kept.first()) {
        (Some(horizon), _) => horizon,
        (None, Some(first)) => first.record.timestamp,
        (None, None) => NO_TIMESTAMP,
    };
    let max_timestamp = if original.is_log_append_time() {
        original.max_timestamp
    } else {
        kept.iter().map(|view| view.record.timestamp).max().unwrap_or(original.max_timestamp)
    };
    let mut attributes = original.attributes & !ATTRIBUTE_COMPRESSION_MASK;
    if delete_horizon_ms.is_some() {
        attributes |= ATTRIBUTE_DELETE_HORIZON;
    }
    put_header(out, original, attributes, base_timestamp, max_timestamp, kept.len() as i32);
    let mut body = Vec::new();
    for view in kept {
        body.clear();
        body.push(view.attributes);
        put_varint(&mut body, view.record.timestamp - base_timestamp);
        put_varint(&mut body, view.offset_delta);
        body.extend_from_slice(view.tail);
        put_varint(out, body.len() as i64);
        out.extend_from_slice(&body);
    }
    finish_batch(&mut out[start..]);
}

/// Encodes `original` with no records left: the header alone, kept for the producer state or the
/// offsets it carries (Kafka's `writeEmptyHeader`). Its max timestamp is the original's.
pub fn encode_empty_header(original: &BatchHeader, out: &mut Vec<u8>) {
    let start = out.len();
    let attributes = original.attributes & !(ATTRIBUTE_COMPRESSION_MASK | ATTRIBUTE_DELETE_HORIZON);
    put_header(out, original, attributes, NO_TIMESTAMP, original.max_timestamp, 0);
    finish_batch(&mut out[start..]);
}

/// Writes a header with `original`'s identity and the given variable fields; the batch length
/// and CRC are filled in by `finish_batch` once the records follow.
fn put_header(
    out: &mut Vec<u8>,
    original: &BatchHeader,
    attributes: i16,
    base_timestamp: i64,
    max_timestamp: i64,
    records_count: i32,
) {
    out.extend_from_slice(&original.base_offset.to_be_bytes());
    out.extend_from_slice(&0i32.to_be_bytes()); // batch length, filled in later
    out.extend_from_slice(&original.partition_leader_epoch.to_be_bytes());
    out.push(MAGIC_V2 as u8);
    out.extend_from_slice(&0u32.to_be_bytes()); // crc, filled in later
    out.extend_from_slice(&attributes.to_be_bytes());
    out.extend_from_slice(&original.last_offset_delta.to_be_bytes());
    out.extend_from_slice(&base_timestamp.to_be_bytes());
    out.extend_from_slice(&max_timestamp.to_be_bytes());
    out.extend_from_slice(&original.producer_id.to_be_bytes());
    out.extend_from_slice(&original.producer_epoch.to_be_bytes());
    out.extend_from_slice(&original.base_sequence.to_be_bytes());
    out.extend_from_slice(&records_count.to_be_bytes());
}

/// Fills in the batch length and CRC of the whole batch `batch`.
fn finish_batch(batch: &mut [u8]) {
    let batch_length = (batch.len() - LOG_OVERHEAD) as i32;
    batch[BATCH_LENGTH_AT..BATCH_LENGTH_AT + 4].copy_from_slice(&batch_length.to_be_bytes());
    let crc = crc32c::crc32c(&batch[ATTRIBUTES_AT..]);
    batch[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
}

/// Reads a varint length and that many bytes; a length of -1 is null.
fn take_bytes<'a>(cursor: &mut &'a [u8]) -> Option<Option<&'a [u8]>> {
    let length = take_varint(cursor)?;
    if length < 0 {
        return Some(None);
    }
    let bytes = cursor.get(..usize::try_from(length).ok()?)?;
    *cursor = &cursor[bytes.len()..];
    Some(Some(bytes))
}

/// Reads one zigzag varint (Kafka's varint and varlong), advancing `cursor`; `None` if malformed.
fn take_varint(cursor: &mut &[u8]) -> Option<i64> {
    let mut raw: u64 = 0;
    for (index, byte) in cursor.iter().enumerate().take(10) {
        raw |= u64::from(byte & 0x7f) << (7 * index);
        if byte & 0x80 == 0 {
            *cursor = &cursor[index + 1..];
            return Some((raw >> 1) as i64 ^ -((raw & 1) as i64));
        }
    }
    None
}

/// Encodes a transaction marker: a control batch of one record that commits or aborts the open
/// transaction of `producer_id` in the partition it is appended to. The layout is Kafka's
/// (`ControlRecordType` key, `EndTransactionMarker` value).
pub fn encode_control_batch(producer_id: i64, producer_epoch: i16, commit: bool, timestamp: i64) -> Vec<u8> {
    let mut key = Vec::with_capacity(4);
    key.extend_from_slice(&0i16.to_be_bytes()); // key version
    key.extend_from_slice(&i16::from(commit).to_be_bytes()); // 0 = abort, 1 = commit
    let mut value = Vec::with_capacity(6);
    value.extend_from_slice(&0i16.to_be_bytes()); // value version
    value.extend_from_slice(&0i32.to_be_bytes()); // coordinator epoch
    let producer = ProducerFields { producer_id, producer_epoch, base_sequence: -1, transactional: true };
    let mut batch = encode_records(timestamp, &[(Some(&key), Some(&value))], Some(producer));
    let attributes = ATTRIBUTE_TRANSACTIONAL | ATTRIBUTE_CONTROL;
    batch[ATTRIBUTES_AT..ATTRIBUTES_AT + 2].copy_from_slice(&attributes.to_be_bytes());
    finish_batch(&mut batch);
    batch
}

/// For a whole control batch: `Some(true)` for a commit marker, `Some(false)` for an abort
/// marker, `None` for anything else.
pub fn control_marker(batch: &[u8]) -> Option<bool> {
    let header = parse_header(batch, BATCH_BYTES_HARD_MAX).ok()?;
    if !header.is_control() {
        return None;
    }
    let record = records(batch)?.into_iter().next()?;
    match record.key? {
        [_, _, 0, 0] => Some(false),
        [_, _, 0, 1] => Some(true),
        _ => None,
    }
}

fn put_varint(out: &mut Vec<u8>, value: i64) {
    let mut zigzag = ((value << 1) ^ (value >> 63)) as u64;
    while zigzag >= 0x80 {
        out.push((zigzag as u8) | 0x80);
        zigzag >>= 7;
    }
    out.push(zigzag as u8);
}

fn read_i64(bytes: &[u8], at: usize) -> i64 {
    let mut buf = [0u8; 8];
    buf.copy_from_slice(&bytes[at..at + 8]);
    i64::from_be_bytes(buf)
}

fn read_i32(bytes: &[u8], at: usize) -> i32 {
    let mut buf = [0u8; 4];
    buf.copy_from_slice(&bytes[at..at + 4]);
    i32::from_be_bytes(buf)
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    read_i32(bytes, at) as u32
}

fn read_i16(bytes: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([bytes[at], bytes[at + 1]])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_stamped_with_the_log_append_time_stays_valid_and_says_so() {
        let mut batch = encode_batch(1_000, &[(Some(b"k"), b"v1"), (None, b"v2")]);
        assert!(!validate(&batch, BATCH_BYTES_HARD_MAX).expect("valid").is_log_append_time());
        set_log_append_time(&mut batch, 5_000);
        let header = validate(&batch, BATCH_BYTES_HARD_MAX).expect("still valid: the CRC was recomputed");
        assert!(header.is_log_append_time());
        assert_eq!((header.base_timestamp, header.max_timestamp), (1_000, 5_000));
    }

    #[test]
    fn finds_first_record_by_timestamp() {
        let mut batch = encode_batch(1_000, &[(None, b"a"), (None, b"b")]);
        set_base_offset(&mut batch, 40);
        assert_eq!(first_record_at_or_after(&batch, 999), Some((40, 1_000)));
        assert_eq!(first_record_at_or_after(&batch, 1_000), Some((40, 1_000)));
        assert_eq!(first_record_at_or_after(&batch, 1_001), None);
    }

    #[test]
    fn records_decode_what_encode_batch_wrote() {
        let mut batch = encode_batch(5_000, &[(Some(b"k1"), b"v1"), (None, b""), (Some(b""), b"v3")]);
        set_base_offset(&mut batch, 10);
        let decoded = records(&batch).expect("uncompressed");
        let summary: Vec<_> =
            decoded.iter().map(|record| (record.offset, record.key, record.value)).collect();
        assert_eq!(
            summary,
            vec![
                (10, Some(&b"k1"[..]), Some(&b"v1"[..])),
                (11, None, Some(&b""[..])),
                (12, Some(&b""[..]), Some(&b"v3"[..])),
            ]
        );
        assert!(decoded.iter().all(|record| record.timestamp == 5_000));
        assert_eq!(records(&batch[..batch.len() - 1]), None);
    }

    #[test]
    fn control_batches_are_valid_and_say_what_they_mark() {
        for commit in [true, false] {
            let batch = encode_control_batch(42, 3, commit, 9_000);
            let header = validate(&batch, 1 << 20).expect("valid");
            assert!(header.is_control() && header.is_transactional());
            assert_eq!((header.producer_id, header.producer_epoch), (42, 3));
            assert_eq!(control_marker(&batch), Some(commit));
        }
        assert_eq!(control_marker(&encode_batch(0, &[(None, b"data")])), None);
    }

    #[test]
    fn varints_round_trip() {
        for value in [0i64, 1, -1, 63, -64, 64, 300, -300, i64::MAX, i64::MIN] {
            let mut bytes = Vec::new();
            put_varint(&mut bytes, value);
            let mut cursor = bytes.as_slice();
            assert_eq!(take_varint(&mut cursor), Some(value));
            assert!(cursor.is_empty());
        }
        assert_eq!(take_varint(&mut [0x80u8, 0x80].as_slice()), None);
    }

    fn check(mutate: impl FnOnce(&mut Vec<u8>), expected: Result<(), BatchError>) {
        let mut batch = encode_batch(1_000, &[(Some(b"k"), b"v1"), (None, b"v2")]);
        mutate(&mut batch);
        let actual = validate(&batch, 1 << 20).map(|_| ());
        assert_eq!(actual, expected);
    }

    #[test]
    fn encoded_batch_is_valid() {
        let batch = encode_batch(1_000, &[(Some(b"k"), b"v1"), (None, b"v2")]);
        let header = validate(&batch, 1 << 20).expect("valid");
        assert_eq!(header.records_count, 2);
        assert_eq!(header.last_offset_delta, 1);
        assert_eq!(header.total_bytes(), batch.len());
        assert_eq!(header.base_timestamp, 1_000);
    }

    #[test]
    fn base_offset_is_outside_the_crc() {
        check(|batch| set_base_offset(batch, 42), Ok(()));
    }

    #[test]
    fn rejects_flipped_record_byte() {
        let mut batch = encode_batch(1_000, &[(None, b"v")]);
        let last = batch.len() - 2;
        batch[last] ^= 0xff;
        assert!(matches!(validate(&batch, 1 << 20), Err(BatchError::BadCrc { .. })));
    }

    #[test]
    fn rejects_bad_magic() {
        check(|batch| batch[MAGIC_AT] = 1, Err(BatchError::BadMagic { magic: 1 }));
    }

    #[test]
    fn rejects_truncation() {
        let batch = encode_batch(1_000, &[(None, b"value")]);
        let have = batch.len() - 1;
        assert_eq!(validate(&batch[..have], 1 << 20), Err(BatchError::Truncated { need: batch.len(), have }));
        assert_eq!(
            validate(&batch[..10], 1 << 20),
            Err(BatchError::Truncated { need: BATCH_HEADER_BYTES, have: 10 })
        );
    }

    #[test]
    fn rejects_length_over_limit_before_reading_it() {
        let batch = encode_batch(1_000, &[(None, &[7u8; 100])]);
        let limit = batch.len() - 1;
        assert!(matches!(validate(&batch, limit), Err(BatchError::BadLength { .. })));
    }

    #[test]
    fn rejects_record_count_mismatch() {
        let mut batch = encode_batch(1_000, &[(None, b"v")]);
        batch[RECORDS_COUNT_AT..RECORDS_COUNT_AT + 4].copy_from_slice(&5i32.to_be_bytes());
        let crc = crc32c::crc32c(&batch[ATTRIBUTES_AT..]);
        batch[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
        assert_eq!(
            validate(&batch, 1 << 20),
            Err(BatchError::BadRecordCount { records_count: 5, last_offset_delta: 0 })
        );
    }

    #[test]
    fn rejects_max_timestamp_below_base() {
        let mut batch = encode_batch(1_000, &[(None, b"v")]);
        batch[MAX_TIMESTAMP_AT..MAX_TIMESTAMP_AT + 8].copy_from_slice(&999i64.to_be_bytes());
        let crc = crc32c::crc32c(&batch[ATTRIBUTES_AT..]);
        batch[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
        assert_eq!(
            validate(&batch, 1 << 20),
            Err(BatchError::BadTimestamps { base_timestamp: 1_000, max_timestamp: 999 })
        );
    }
}
