//! Records in, a Parquet file's bytes out: the raw columns every capture writes, and with
//! `--columns json` the value's top-level JSON fields as typed columns besides them (`json`).
//!
//! Pure apart from logging: no I/O, no clock. The raw columns are `topic`, `partition`,
//! `offset`, `timestamp` (milliseconds, UTC), `key` and `value` (binary, byte for byte what was
//! produced) and `headers` (a map of string to binary). A file's records go straight into Arrow
//! column builders as they arrive (`FileBuilder`): one copy of each key and value, no allocation
//! per record. Pages are zstd-compressed and row groups hold at most `ROW_GROUP_ROWS_MAX` rows,
//! DuckDB's own row group size, so a reader splits a big file into parallel work.

use std::sync::Arc;

use arrow_array::builder::{BinaryBuilder, MapBuilder, StringBuilder};
use arrow_array::{
    Array, ArrayRef, Int32Array, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray,
};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

pub use crate::json::{JsonSchemaMemory, JsonType};

/// Rows per row group: DuckDB's row group size, small enough for readers to split a file
/// across threads, large enough to compress well.
pub const ROW_GROUP_ROWS_MAX: usize = 122_880;
/// The zstd level of every page: compression is most of the time it takes to write a file, and
/// level 1 is zstd's fastest standard level (see docs/capture.md for what it costs in size).
const ZSTD_LEVEL: i32 = 1;
/// What a record weighs against `--window-bytes` beyond its key, value and headers: its offset,
/// timestamp and the builders' bookkeeping.
pub const RECORD_OVERHEAD_BYTES: u64 = 32;
/// The most bytes a file's value buffer is given up front (it grows past this if needed).
const VALUE_BUFFER_RESERVE_MAX: usize = 64 * 1024 * 1024;

/// One record as read from the topic, owned (held while a partition waits for its listing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapturedRecord {
    pub partition: i32,
    pub offset: i64,
    /// Unix milliseconds, when the record has a timestamp.
    pub timestamp_ms: Option<i64>,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

/// Which columns a capture writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ColumnMode {
    /// Only the record's own fields.
    #[default]
    Raw,
    /// The record's fields plus the value's top-level JSON fields.
    Json,
}

/// What encoding one file found worth counting.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct EncodeStats {
    /// Values that were not a JSON object (only with `ColumnMode::Json`).
    pub non_json_values: u64,
    /// Fields written as text because their types disagreed.
    pub type_conflicts: u64,
}

/// A file's bytes and what encoding it counted.
#[derive(Debug)]
pub struct EncodedFile {
    pub bytes: bytes::Bytes,
    pub stats: EncodeStats,
}

#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("building the Arrow batch: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
    #[error("writing Parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
}

/// One partition's file being gathered: its records' raw columns as Arrow builders, appended in
/// offset order.
pub struct FileBuilder {
    partition: i32,
    offsets: Vec<i64>,
    timestamps: Vec<Option<i64>>,
    keys: BinaryBuilder,
    values: BinaryBuilder,
    headers: MapBuilder<StringBuilder, BinaryBuilder>,
    size_bytes: u64,
}

impl std::fmt::Debug for FileBuilder {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("FileBuilder")
            .field("partition", &self.partition)
            .field("offsets", &(self.first_offset(), self.last_offset()))
            .field("n_records", &self.len())
            .field("size_bytes", &self.size_bytes)
            .finish()
    }
}

impl FileBuilder {
    /// An empty file of `partition`, its value buffer sized for `expected_bytes` (the size
    /// window) so that it rarely grows by copying.
    pub fn new(partition: i32, expected_bytes: u64) -> FileBuilder {
        let reserve = usize::try_from(expected_bytes).unwrap_or(usize::MAX).min(VALUE_BUFFER_RESERVE_MAX);
        FileBuilder {
            partition,
            offsets: Vec::new(),
            timestamps: Vec::new(),
            keys: BinaryBuilder::new(),
            values: BinaryBuilder::with_capacity(1024, reserve),
            headers: headers_builder(),
            size_bytes: 0,
        }
    }

    /// Adds one record (the next offset of the partition).
    pub fn append<'h>(
        &mut self,
        offset: i64,
        timestamp_ms: Option<i64>,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: impl IntoIterator<Item = (&'h str, Option<&'h [u8]>)>,
    ) -> Result<(), EncodeError> {
        let mut size_bytes =
            RECORD_OVERHEAD_BYTES + key.map_or(0, <[u8]>::len) as u64 + value.map_or(0, <[u8]>::len) as u64;
        for (name, header_value) in headers {
            size_bytes += (name.len() + header_value.map_or(0, <[u8]>::len)) as u64;
            self.headers.keys().append_value(name);
            self.headers.values().append_option(header_value);
        }
        self.headers.append(true)?;
        self.offsets.push(offset);
        self.timestamps.push(timestamp_ms);
        self.keys.append_option(key);
        self.values.append_option(value);
        self.size_bytes += size_bytes;
        Ok(())
    }

    /// Adds an owned record.
    pub fn append_record(&mut self, record: &CapturedRecord) -> Result<(), EncodeError> {
        self.append(
            record.offset,
            record.timestamp_ms,
            record.key.as_deref(),
            record.value.as_deref(),
            record.headers.iter().map(|(name, value)| (name.as_str(), value.as_deref())),
        )
    }

    pub fn len(&self) -> usize {
        self.offsets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }

    pub fn first_offset(&self) -> Option<i64> {
        self.offsets.first().copied()
    }

    pub fn last_offset(&self) -> Option<i64> {
        self.offsets.last().copied()
    }

    /// What the records weigh against `--window-bytes`: keys, values, headers and
    /// `RECORD_OVERHEAD_BYTES` each.
    pub fn size_bytes(&self) -> u64 {
        self.size_bytes
    }
}

/// The Parquet file of `file`'s records.
pub fn encode_file(
    topic: &str,
    mut file: FileBuilder,
    mode: ColumnMode,
    memory: &mut JsonSchemaMemory,
) -> Result<EncodedFile, EncodeError> {
    let n_rows = file.len();
    let values = file.values.finish();
    let mut stats = EncodeStats::default();
    let json_columns = match mode {
        ColumnMode::Raw => Vec::new(),
        ColumnMode::Json => crate::json::json_columns(topic, &values, memory, &mut stats),
    };
    let headers = file.headers.finish();
    let mut fields = raw_fields(headers.data_type().clone());
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(std::iter::repeat_n(topic, n_rows))),
        Arc::new(Int32Array::from_value(file.partition, n_rows)),
        Arc::new(Int64Array::from(std::mem::take(&mut file.offsets))),
        Arc::new(TimestampMillisecondArray::from(std::mem::take(&mut file.timestamps)).with_timezone("UTC")),
        Arc::new(file.keys.finish()),
        Arc::new(values),
        Arc::new(headers),
    ];
    for (field, column) in json_columns {
        fields.push(field);
        columns.push(column);
    }
    let schema = Arc::new(Schema::new(fields));
    let batch = RecordBatch::try_new(schema.clone(), columns)?;
    let mut bytes = Vec::with_capacity(file.size_bytes as usize / 4);
    let mut writer = ArrowWriter::try_new(&mut bytes, schema, Some(writer_properties()?))?;
    writer.write(&batch)?;
    writer.close()?;
    Ok(EncodedFile { bytes: bytes.into(), stats })
}

fn writer_properties() -> Result<WriterProperties, EncodeError> {
    let value = ColumnPath::from("value");
    Ok(WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(ZSTD_LEVEL)?))
        .set_max_row_group_size(ROW_GROUP_ROWS_MAX)
        .set_created_by(format!("tidewater capture {}", env!("CARGO_PKG_VERSION")))
        // Values are opaque and mostly distinct: a dictionary would be built for each page only
        // to be thrown away, and min/max statistics of payload bytes cost a comparison per
        // value for no query's benefit. Keys (often a device id) keep both.
        .set_column_dictionary_enabled(value.clone(), false)
        .set_column_statistics_enabled(value, EnabledStatistics::None)
        .build())
}

fn raw_fields(headers_type: DataType) -> Vec<Field> {
    vec![
        Field::new("topic", DataType::Utf8, false),
        Field::new("partition", DataType::Int32, false),
        Field::new("offset", DataType::Int64, false),
        Field::new("timestamp", DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())), true),
        Field::new("key", DataType::Binary, true),
        Field::new("value", DataType::Binary, true),
        Field::new("headers", headers_type, false),
    ]
}

fn headers_builder() -> MapBuilder<StringBuilder, BinaryBuilder> {
    MapBuilder::new(None, StringBuilder::new(), BinaryBuilder::new())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::BinaryArray;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    /// topic, partition, offset, timestamp, key, value, headers.
    const RAW_COLUMNS: usize = 7;

    fn record(offset: i64, value: &str) -> CapturedRecord {
        CapturedRecord {
            partition: 2,
            offset,
            timestamp_ms: Some(1_700_000_000_000 + offset),
            key: Some(format!("k{offset}").into_bytes()),
            value: Some(value.as_bytes().to_vec()),
            headers: vec![("h".into(), Some(vec![0, 255])), ("empty".into(), None)],
        }
    }

    fn file_of(records: &[CapturedRecord]) -> FileBuilder {
        let mut file = FileBuilder::new(records.first().map_or(0, |record| record.partition), 0);
        for record in records {
            file.append_record(record).unwrap_or_else(|error| panic!("{error}"));
        }
        file
    }

    fn read_back(bytes: bytes::Bytes) -> RecordBatch {
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
            .and_then(|builder| builder.build())
            .unwrap_or_else(|error| panic!("reading the file back: {error}"));
        let batches: Vec<RecordBatch> =
            reader.map(|batch| batch.unwrap_or_else(|error| panic!("{error}"))).collect();
        arrow_select_concat(&batches)
    }

    fn arrow_select_concat(batches: &[RecordBatch]) -> RecordBatch {
        assert_eq!(batches.len(), 1, "one small file is one batch");
        batches[0].clone()
    }

    /// Each JSON column's name and type, after the raw columns.
    fn check_json_columns(
        values: &[&str],
        memory: &mut JsonSchemaMemory,
        expected: &[(&str, DataType)],
    ) -> EncodeStats {
        let records: Vec<CapturedRecord> =
            values.iter().enumerate().map(|(idx, value)| record(idx as i64, value)).collect();
        let file = encode_file("t", file_of(&records), ColumnMode::Json, memory)
            .unwrap_or_else(|error| panic!("{error}"));
        let batch = read_back(file.bytes);
        let actual: Vec<(String, DataType)> = batch.schema().fields()[RAW_COLUMNS..]
            .iter()
            .map(|field| (field.name().clone(), field.data_type().clone()))
            .collect();
        let expected: Vec<(String, DataType)> =
            expected.iter().map(|(name, data_type)| (name.to_string(), data_type.clone())).collect();
        assert_eq!(actual, expected, "values {values:?}");
        file.stats
    }

    #[test]
    fn raw_columns_keep_bytes_and_headers() {
        let mut records = vec![record(7, "not json \u{0}"), record(8, "{}")];
        records[1].key = None;
        records[1].value = None;
        records[1].timestamp_ms = None;
        records[1].headers.clear();
        let file =
            encode_file("topic-a", file_of(&records), ColumnMode::Raw, &mut JsonSchemaMemory::default())
                .unwrap_or_else(|error| panic!("{error}"));
        let batch = read_back(file.bytes);
        assert_eq!(batch.num_rows(), 2);
        let column =
            |name: &str| batch.column_by_name(name).unwrap_or_else(|| panic!("no column {name}")).clone();
        let values = column("value");
        let values =
            values.as_any().downcast_ref::<BinaryArray>().unwrap_or_else(|| panic!("value is binary"));
        assert_eq!(values.value(0), b"not json \0");
        assert!(values.is_null(1));
        let keys = column("key");
        let keys = keys.as_any().downcast_ref::<BinaryArray>().unwrap_or_else(|| panic!("key is binary"));
        assert_eq!(keys.value(0), b"k7");
        assert!(keys.is_null(1));
        let offsets = column("offset");
        let offsets =
            offsets.as_any().downcast_ref::<Int64Array>().unwrap_or_else(|| panic!("offset is int64"));
        assert_eq!(offsets.values().to_vec(), vec![7, 8]);
        let headers = column("headers");
        let headers = headers
            .as_any()
            .downcast_ref::<arrow_array::MapArray>()
            .unwrap_or_else(|| panic!("headers is a map"));
        assert_eq!(headers.value_length(0), 2);
        assert_eq!(headers.value_length(1), 0);
        assert_eq!(file.stats, EncodeStats::default());
    }

    #[test]
    fn json_fields_become_typed_columns() {
        let stats = check_json_columns(
            &[
                r#"{"device":"d1","temp":21,"ok":true,"tags":["a"],"nothing":null}"#,
                r#"{"device":"d2","temp":21.5,"ok":false,"extra":{"x":1}}"#,
                "not json",
                "[1,2]",
            ],
            &mut JsonSchemaMemory::default(),
            &[
                ("device", DataType::Utf8),
                ("temp", DataType::Float64),
                ("ok", DataType::Boolean),
                ("tags", DataType::Utf8),
                ("extra", DataType::Utf8),
            ],
        );
        assert_eq!(stats, EncodeStats { non_json_values: 2, type_conflicts: 0 });
    }

    #[test]
    fn type_conflicts_become_text_within_and_across_files() {
        let mut memory = JsonSchemaMemory::default();
        let stats = check_json_columns(
            &[r#"{"a":1,"b":1}"#, r#"{"a":"x","b":2}"#],
            &mut memory,
            &[("a", DataType::Utf8), ("b", DataType::Int64)],
        );
        assert_eq!(stats.type_conflicts, 1);
        // A later file: b turns boolean (a conflict with the earlier file), a stays text even
        // though this file holds only numbers, and c is new.
        let stats = check_json_columns(
            &[r#"{"a":3,"b":true,"c":1.5}"#],
            &mut memory,
            &[("a", DataType::Utf8), ("b", DataType::Utf8), ("c", DataType::Float64)],
        );
        assert_eq!(stats.type_conflicts, 1);
    }

    #[test]
    fn reserved_names_stay_in_the_value() {
        check_json_columns(
            &[r#"{"offset":1,"partition":"p","date":"d","reading":2}"#],
            &mut JsonSchemaMemory::default(),
            &[("reading", DataType::Int64)],
        );
    }
}
