//! Kafka RecordBatch v2 headers: the unit the log stores, verbatim.
//!
//! A batch on disk is exactly the bytes a producer sent, so a fetch can hand the file's bytes back
//! without re-encoding. The log only ever rewrites `base_offset`, which sits outside the CRC.
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

/// Fully validates the single batch at the start of `bytes`: length bounds, magic, CRC-32C over
/// the range Kafka defines, record count and timestamps. Returns the header; the batch occupies
/// `header.total_bytes()` bytes and anything after it is not looked at.
pub fn validate(bytes: &[u8], limit: usize) -> Result<BatchHeader, BatchError> {
    let header = parse_header(bytes, limit)?;
    let total = header.total_bytes();
    if bytes.len() < total {
        return Err(BatchError::Truncated { need: total, have: bytes.len() });
    }
    let computed = crc32c::crc32c(&bytes[ATTRIBUTES_AT..total]);
    if computed != header.crc {
        return Err(BatchError::BadCrc { stored: header.crc, computed });
    }
    if header.records_count <= 0 || i64::from(header.records_count) != i64::from(header.last_offset_delta) + 1
    {
        return Err(BatchError::BadRecordCount {
            records_count: header.records_count,
            last_offset_delta: header.last_offset_delta,
        });
    }
    let timestamp_ok = |ts: i64| ts >= 0 || ts == NO_TIMESTAMP;
    if !timestamp_ok(header.base_timestamp)
        || !timestamp_ok(header.max_timestamp)
        || (header.base_timestamp != NO_TIMESTAMP && header.max_timestamp < header.base_timestamp)
    {
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

/// Encodes a valid uncompressed v2 batch. Used by tests, benchmarks and tools that need real
/// batches without a Kafka client; each record is `(key, value)` with no headers.
pub fn encode_batch(base_timestamp: i64, records: &[(Option<&[u8]>, &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    for (index, (key, value)) in records.iter().enumerate() {
        let mut record = Vec::new();
        record.push(0u8); // attributes
        put_varint(&mut record, 0); // timestamp delta
        put_varint(&mut record, index as i64); // offset delta
        match key {
            Some(key) => {
                put_varint(&mut record, key.len() as i64);
                record.extend_from_slice(key);
            }
            None => put_varint(&mut record, -1),
        }
        put_varint(&mut record, value.len() as i64);
        record.extend_from_slice(value);
        put_varint(&mut record, 0); // header count
        put_varint(&mut body, record.len() as i64);
        body.extend_from_slice(&record);
    }
    let records_count = records.len() as i32;
    let mut batch = Vec::with_capacity(BATCH_HEADER_BYTES + body.len());
    batch.extend_from_slice(&0i64.to_be_bytes());
    batch.extend_from_slice(&((BATCH_LENGTH_MIN + body.len()) as i32).to_be_bytes());
    batch.extend_from_slice(&0i32.to_be_bytes()); // partition leader epoch
    batch.push(MAGIC_V2 as u8);
    batch.extend_from_slice(&0u32.to_be_bytes()); // crc, filled below
    batch.extend_from_slice(&0i16.to_be_bytes()); // attributes
    batch.extend_from_slice(&(records_count - 1).to_be_bytes());
    batch.extend_from_slice(&base_timestamp.to_be_bytes());
    batch.extend_from_slice(&base_timestamp.to_be_bytes()); // max timestamp
    batch.extend_from_slice(&(-1i64).to_be_bytes()); // producer id
    batch.extend_from_slice(&(-1i16).to_be_bytes()); // producer epoch
    batch.extend_from_slice(&(-1i32).to_be_bytes()); // base sequence
    batch.extend_from_slice(&records_count.to_be_bytes());
    batch.extend_from_slice(&body);
    let crc = crc32c::crc32c(&batch[ATTRIBUTES_AT..]);
    batch[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    batch
}

/// Compression codec bits of `attributes`; 0 is none.
const ATTRIBUTE_COMPRESSION_MASK: i16 = 0x07;
/// Timestamp type bit: set when the broker stamped every record with the batch's max timestamp.
const ATTRIBUTE_LOG_APPEND_TIME: i16 = 1 << 3;

/// Finds the first record of a whole, validated batch whose timestamp is at or after `target`,
/// returning its offset and timestamp. Records of an uncompressed CreateTime batch are walked one
/// by one; a compressed batch cannot be read without decompressing it, so for those (and for
/// LogAppendTime batches, whose records all carry the max timestamp) the answer is the batch's
/// base offset and max timestamp when that reaches `target`.
pub fn first_record_at_or_after(batch: &[u8], target: i64) -> Option<(i64, i64)> {
    let header = parse_header(batch, BATCH_BYTES_HARD_MAX).ok()?;
    if header.max_timestamp < target {
        return None;
    }
    let whole_batch_answer = Some((header.base_offset, header.max_timestamp));
    if header.attributes & (ATTRIBUTE_COMPRESSION_MASK | ATTRIBUTE_LOG_APPEND_TIME) != 0 {
        return whole_batch_answer;
    }
    let mut cursor = &batch[BATCH_HEADER_BYTES..header.total_bytes().min(batch.len())];
    for _ in 0..header.records_count {
        let length = usize::try_from(take_varint(&mut cursor)?).ok()?;
        let mut record = cursor.get(..length)?;
        cursor = &cursor[length..];
        record = record.get(1..)?; // attributes
        let timestamp = header.base_timestamp + take_varint(&mut record)?;
        let offset = header.base_offset + take_varint(&mut record)?;
        if timestamp >= target {
            return Some((offset, timestamp));
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
    let header = parse_header(batch, BATCH_BYTES_HARD_MAX).ok()?;
    if header.attributes & ATTRIBUTE_COMPRESSION_MASK != 0 {
        return None;
    }
    let mut cursor = batch.get(BATCH_HEADER_BYTES..header.total_bytes())?;
    let mut records = Vec::with_capacity((header.records_count.max(0) as usize).min(cursor.len()));
    for _ in 0..header.records_count {
        let length = usize::try_from(take_varint(&mut cursor)?).ok()?;
        let mut record = cursor.get(..length)?;
        cursor = &cursor[length..];
        record = record.get(1..)?; // attributes
        let timestamp = header.base_timestamp + take_varint(&mut record)?;
        let offset = header.base_offset + take_varint(&mut record)?;
        let key = take_bytes(&mut record)?;
        let value = take_bytes(&mut record)?;
        records.push(Record { offset, timestamp, key, value });
    }
    Some(records)
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
    let mut batch = encode_batch(timestamp, &[(Some(&key), &value)]);
    let attributes = ATTRIBUTE_TRANSACTIONAL | ATTRIBUTE_CONTROL;
    batch[ATTRIBUTES_AT..ATTRIBUTES_AT + 2].copy_from_slice(&attributes.to_be_bytes());
    batch[PRODUCER_ID_AT..PRODUCER_ID_AT + 8].copy_from_slice(&producer_id.to_be_bytes());
    batch[PRODUCER_EPOCH_AT..PRODUCER_EPOCH_AT + 2].copy_from_slice(&producer_epoch.to_be_bytes());
    let crc = crc32c::crc32c(&batch[ATTRIBUTES_AT..]);
    batch[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
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
