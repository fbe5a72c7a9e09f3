//! Records in, a Parquet file's bytes out: the raw columns every capture writes, and with
//! `--columns json` the value's top-level JSON fields as typed columns besides them.
//!
//! Pure apart from logging: no I/O, no clock. The raw columns are `topic`, `partition`,
//! `offset`, `timestamp` (milliseconds, UTC), `key` and `value` (binary, byte for byte what was
//! produced) and `headers` (a map of string to binary). Pages are zstd-compressed and row groups
//! hold at most `ROW_GROUP_ROWS_MAX` rows, DuckDB's own row group size, so a reader splits a big
//! file into parallel work.
//!
//! JSON columns are inferred from the file's records: a field seen as one JSON type is a column
//! of that type (booleans, 64-bit integers, doubles, strings; integers and doubles together are
//! doubles), nested objects and arrays are their JSON text, and a field seen with types that do
//! not agree, in this file or against an earlier file of the same run (`JsonSchemaMemory`), is a
//! string column holding each value's JSON text, with a warning. A field absent from a file is
//! absent from its schema too, so readers merge files by name (`union_by_name`). Values that are
//! not a JSON object keep only the raw columns and are counted.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::builder::{BinaryBuilder, MapBuilder, StringBuilder};
use arrow_array::{
    Array, ArrayRef, BinaryArray, BooleanArray, Float64Array, Int32Array, Int64Array, RecordBatch,
    StringArray, TimestampMillisecondArray,
};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use serde_json::{Map, Value};

/// Rows per row group: DuckDB's row group size, small enough for readers to split a file
/// across threads, large enough to compress well.
pub const ROW_GROUP_ROWS_MAX: usize = 122_880;
/// JSON fields that become columns in one capture; further fields stay only in `value`.
pub const JSON_COLUMNS_MAX: usize = 1_000;
/// The zstd level of every page: zstd's own default, a good ratio at a few hundred MB/s.
const ZSTD_LEVEL: i32 = 3;
/// Raw column names, and the Hive directory names readers add as columns: a JSON field with one
/// of these names stays only in `value`.
const RESERVED_NAMES: [&str; 9] =
    ["topic", "partition", "offset", "timestamp", "key", "value", "headers", "date", "hour"];

/// One record as read from the topic.
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

impl CapturedRecord {
    /// What the record weighs against `--window-bytes`: its key, value and headers.
    pub fn size_bytes(&self) -> usize {
        let headers: usize =
            self.headers.iter().map(|(key, value)| key.len() + value.as_ref().map_or(0, Vec::len)).sum();
        self.key.as_ref().map_or(0, Vec::len) + self.value.as_ref().map_or(0, Vec::len) + headers + 32
    }
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

/// A JSON field's column type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonType {
    Boolean,
    Integer,
    Double,
    /// Strings, and the JSON text of anything else.
    Text,
}

impl JsonType {
    fn of(value: &Value) -> Option<JsonType> {
        match value {
            Value::Null => None,
            Value::Bool(_) => Some(JsonType::Boolean),
            Value::Number(number) if number.is_i64() => Some(JsonType::Integer),
            Value::Number(_) => Some(JsonType::Double),
            Value::String(_) | Value::Array(_) | Value::Object(_) => Some(JsonType::Text),
        }
    }

    /// The type that holds values of both, `None` when only text does (a conflict).
    fn join(self, other: JsonType) -> Option<JsonType> {
        match (self, other) {
            (left, right) if left == right => Some(left),
            (JsonType::Integer, JsonType::Double) | (JsonType::Double, JsonType::Integer) => {
                Some(JsonType::Double)
            }
            _ => None,
        }
    }

    fn data_type(self) -> DataType {
        match self {
            JsonType::Boolean => DataType::Boolean,
            JsonType::Integer => DataType::Int64,
            JsonType::Double => DataType::Float64,
            JsonType::Text => DataType::Utf8,
        }
    }
}

/// The JSON column types a capture has written so far, so a field keeps one type across files
/// (or becomes text, once, when a later file disagrees).
#[derive(Debug, Default)]
pub struct JsonSchemaMemory {
    types: HashMap<String, JsonType>,
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
    pub bytes: Vec<u8>,
    pub stats: EncodeStats,
}

#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("building the Arrow batch: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
    #[error("writing Parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
}

/// The Parquet file of `records` (all of one topic-partition, in offset order).
pub fn encode_file(
    topic: &str,
    records: &[CapturedRecord],
    mode: ColumnMode,
    memory: &mut JsonSchemaMemory,
) -> Result<EncodedFile, EncodeError> {
    let mut fields = raw_fields();
    let mut columns = raw_columns(topic, records)?;
    let mut stats = EncodeStats::default();
    if mode == ColumnMode::Json {
        let objects: Vec<Option<Map<String, Value>>> = records
            .iter()
            .map(|record| match record.value.as_deref().map(serde_json::from_slice::<Value>) {
                Some(Ok(Value::Object(object))) => Some(object),
                _ => None,
            })
            .collect();
        stats.non_json_values = objects.iter().filter(|object| object.is_none()).count() as u64;
        for (name, json_type) in infer_columns(topic, &objects, memory, &mut stats) {
            fields.push(Field::new(&name, json_type.data_type(), true));
            columns.push(json_column(&name, json_type, &objects));
        }
    }
    let schema = Arc::new(Schema::new(fields));
    let batch = RecordBatch::try_new(schema.clone(), columns)?;
    let properties = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(ZSTD_LEVEL)?))
        .set_max_row_group_size(ROW_GROUP_ROWS_MAX)
        .set_created_by(format!("tidewater capture {}", env!("CARGO_PKG_VERSION")))
        .build();
    let mut bytes = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut bytes, schema, Some(properties))?;
    writer.write(&batch)?;
    writer.close()?;
    Ok(EncodedFile { bytes, stats })
}

fn raw_fields() -> Vec<Field> {
    vec![
        Field::new("topic", DataType::Utf8, false),
        Field::new("partition", DataType::Int32, false),
        Field::new("offset", DataType::Int64, false),
        Field::new("timestamp", DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())), true),
        Field::new("key", DataType::Binary, true),
        Field::new("value", DataType::Binary, true),
        Field::new("headers", headers_builder().finish().data_type().clone(), false),
    ]
}

fn headers_builder() -> MapBuilder<StringBuilder, BinaryBuilder> {
    MapBuilder::new(None, StringBuilder::new(), BinaryBuilder::new())
}

fn raw_columns(topic: &str, records: &[CapturedRecord]) -> Result<Vec<ArrayRef>, EncodeError> {
    let mut headers = headers_builder();
    for record in records {
        for (key, value) in &record.headers {
            headers.keys().append_value(key);
            headers.values().append_option(value.as_deref());
        }
        headers.append(true)?;
    }
    Ok(vec![
        Arc::new(StringArray::from_iter_values(records.iter().map(|_| topic))),
        Arc::new(Int32Array::from_iter_values(records.iter().map(|record| record.partition))),
        Arc::new(Int64Array::from_iter_values(records.iter().map(|record| record.offset))),
        Arc::new(
            TimestampMillisecondArray::from_iter(records.iter().map(|record| record.timestamp_ms))
                .with_timezone("UTC"),
        ),
        Arc::new(BinaryArray::from_iter(records.iter().map(|record| record.key.as_deref()))),
        Arc::new(BinaryArray::from_iter(records.iter().map(|record| record.value.as_deref()))),
        Arc::new(headers.finish()),
    ])
}

/// The JSON columns of one file, in order of first appearance, with their types settled
/// against the file's values and the capture's earlier files.
fn infer_columns(
    topic: &str,
    objects: &[Option<Map<String, Value>>],
    memory: &mut JsonSchemaMemory,
    stats: &mut EncodeStats,
) -> Vec<(String, JsonType)> {
    let mut columns: Vec<(String, Option<JsonType>)> = Vec::new();
    let mut index_of: HashMap<&str, usize> = HashMap::new();
    for object in objects.iter().flatten() {
        for (name, value) in object {
            let idx = match index_of.get(name.as_str()) {
                Some(idx) => *idx,
                None => {
                    if RESERVED_NAMES.contains(&name.as_str()) || columns.len() >= JSON_COLUMNS_MAX {
                        continue;
                    }
                    index_of.insert(name, columns.len());
                    columns.push((name.clone(), None));
                    columns.len() - 1
                }
            };
            let Some(seen) = JsonType::of(value) else { continue };
            let column_type = &mut columns[idx].1;
            *column_type = Some(match column_type {
                None => seen,
                Some(current) => current.join(seen).unwrap_or(JsonType::Text),
            });
        }
    }
    let mut settled = Vec::with_capacity(columns.len());
    for (name, file_type) in columns {
        // A field that is null in every record of this file says nothing about its type; it is
        // left out, and readers see nulls through `union_by_name`.
        let Some(mut file_type) = file_type else { continue };
        let observed_conflict = file_type == JsonType::Text
            && objects
                .iter()
                .flatten()
                .any(|object| matches!(object.get(&name), Some(Value::Bool(_) | Value::Number(_))));
        match memory.types.get(&name).copied() {
            // Once text, always text: the earlier files already hold it as strings.
            Some(JsonType::Text) => file_type = JsonType::Text,
            Some(earlier) => match earlier.join(file_type) {
                Some(joined) => file_type = joined,
                None => {
                    tracing::warn!(topic, field = %name, earlier = ?earlier, now = ?file_type,
                        "JSON field changed type; writing it as text from now on");
                    stats.type_conflicts += 1;
                    file_type = JsonType::Text;
                }
            },
            None if observed_conflict => {
                tracing::warn!(topic, field = %name, "JSON field has values of several types; writing it as text");
                stats.type_conflicts += 1;
            }
            None => {}
        }
        memory.types.insert(name.clone(), file_type);
        settled.push((name, file_type));
    }
    settled
}

fn json_column(name: &str, json_type: JsonType, objects: &[Option<Map<String, Value>>]) -> ArrayRef {
    let values = objects.iter().map(|object| object.as_ref().and_then(|object| object.get(name)));
    match json_type {
        JsonType::Boolean => {
            Arc::new(BooleanArray::from_iter(values.map(|value| value.and_then(Value::as_bool))))
        }
        JsonType::Integer => {
            Arc::new(Int64Array::from_iter(values.map(|value| value.and_then(Value::as_i64))))
        }
        JsonType::Double => {
            Arc::new(Float64Array::from_iter(values.map(|value| value.and_then(Value::as_f64))))
        }
        JsonType::Text => Arc::new(StringArray::from_iter(values.map(|value| match value {
            None | Some(Value::Null) => None,
            Some(Value::String(text)) => Some(text.clone()),
            Some(other) => Some(other.to_string()),
        }))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

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

    fn read_back(bytes: Vec<u8>) -> RecordBatch {
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes))
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
        let file =
            encode_file("t", &records, ColumnMode::Json, memory).unwrap_or_else(|error| panic!("{error}"));
        let batch = read_back(file.bytes);
        let actual: Vec<(String, DataType)> = batch.schema().fields()[raw_fields().len()..]
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
        let file = encode_file("topic-a", &records, ColumnMode::Raw, &mut JsonSchemaMemory::default())
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
