//! `--columns json`: the value's top-level JSON fields as typed columns, beside the raw ones.
//!
//! Pure apart from logging. Each value is parsed once, without building a tree: its top-level
//! fields are visited with their names and values borrowed from the value's own bytes (an
//! escaped name or string is the only copy), and each field's scalar is kept per column until
//! the file's types are settled and its Arrow arrays built.
//!
//! A field seen as one JSON type is a column of that type (booleans, 64-bit integers, doubles,
//! strings; integers and doubles together are doubles), nested objects and arrays are their
//! JSON text, and a field seen with types that do not agree, in this file or against an earlier
//! file of the same run (`JsonSchemaMemory`), is a string column holding each value's JSON text,
//! with a warning. A field absent from a file is absent from its schema too, so readers merge
//! files by name (`union_by_name`). Values that are not a JSON object keep only the raw columns
//! and are counted.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use arrow_array::builder::{BooleanBuilder, Float64Builder, Int64Builder, StringBuilder};
use arrow_array::{Array, ArrayRef, BinaryArray};
use arrow_schema::{DataType, Field};
use serde::de::{DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::encode::EncodeStats;

/// JSON fields that become columns in one capture; further fields stay only in `value`.
pub const JSON_COLUMNS_MAX: usize = 1_000;
/// Raw column names, and the Hive directory names readers add as columns: a JSON field with one
/// of these names stays only in `value`.
pub const RESERVED_NAMES: [&str; 9] =
    ["topic", "partition", "offset", "timestamp", "key", "value", "headers", "date", "hour"];

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

/// One field's value in one record, borrowed from the record's bytes where it can be.
#[derive(Debug, Clone)]
enum Scalar<'a> {
    Bool(bool),
    Integer(i64),
    /// The number and its JSON text (which a text column keeps as written).
    Double(f64, &'a str),
    Text(Cow<'a, str>),
    /// An array or an object: its JSON text.
    Nested(&'a str),
}

impl<'a> Scalar<'a> {
    /// The scalar of a field's raw JSON text; `None` for null.
    fn of(raw: &'a RawValue) -> Option<Scalar<'a>> {
        let text = raw.get();
        Some(match text.as_bytes().first()? {
            b'n' => return None,
            b't' => Scalar::Bool(true),
            b'f' => Scalar::Bool(false),
            b'"' => match text.get(1..text.len() - 1) {
                // No escape: the string is the text between the quotes.
                Some(inner) if !inner.contains('\\') => Scalar::Text(Cow::Borrowed(inner)),
                _ => Scalar::Text(Cow::Owned(serde_json::from_str::<String>(text).ok()?)),
            },
            b'[' | b'{' => Scalar::Nested(text),
            _ => {
                let fractional = text.bytes().any(|byte| matches!(byte, b'.' | b'e' | b'E'));
                match text.parse::<i64>() {
                    Ok(integer) if !fractional => Scalar::Integer(integer),
                    // Beyond 64 bits, or a fraction: a double, as serde_json reads it.
                    _ => Scalar::Double(text.parse::<f64>().ok()?, text),
                }
            }
        })
    }

    fn json_type(&self) -> JsonType {
        match self {
            Scalar::Bool(_) => JsonType::Boolean,
            Scalar::Integer(_) => JsonType::Integer,
            Scalar::Double(..) => JsonType::Double,
            Scalar::Text(_) | Scalar::Nested(_) => JsonType::Text,
        }
    }

    fn as_text(&self) -> Cow<'_, str> {
        match self {
            Scalar::Bool(value) => Cow::Borrowed(if *value { "true" } else { "false" }),
            Scalar::Integer(value) => Cow::Owned(value.to_string()),
            Scalar::Double(_, text) | Scalar::Nested(text) => Cow::Borrowed(text),
            Scalar::Text(text) => Cow::Borrowed(text),
        }
    }
}

/// One field across the file's records: the rows that hold a non-null value, in row order.
struct Column<'a> {
    name: Cow<'a, str>,
    values: Vec<(u32, Scalar<'a>)>,
    /// The type that holds every value seen; `None` while only nulls were seen.
    file_type: Option<JsonType>,
    /// Whether a boolean or a number was seen: with a text type that makes a conflict.
    saw_non_text: bool,
}

/// The JSON columns of a file whose values are `values`: each column's field and array, in
/// order of first appearance, with their types settled against the capture's earlier files.
pub(crate) fn json_columns(
    topic: &str,
    values: &BinaryArray,
    memory: &mut JsonSchemaMemory,
    stats: &mut EncodeStats,
) -> Vec<(Field, ArrayRef)> {
    let mut columns: Vec<Column<'_>> = Vec::new();
    let mut index_of: HashMap<Cow<'_, str>, usize> = HashMap::new();
    // One record's fields, reused: a value is used only once it parsed whole.
    let mut fields: Vec<(Cow<'_, str>, &RawValue)> = Vec::new();
    for row in 0..values.len() {
        fields.clear();
        if values.is_null(row) || !parse_object(values.value(row), &mut fields) {
            stats.non_json_values += 1;
            continue;
        }
        for (name, raw) in fields.drain(..) {
            let idx = match index_of.get(name.as_ref()) {
                Some(idx) => *idx,
                None => {
                    if RESERVED_NAMES.contains(&name.as_ref()) || columns.len() >= JSON_COLUMNS_MAX {
                        continue;
                    }
                    index_of.insert(name.clone(), columns.len());
                    columns.push(Column { name, values: Vec::new(), file_type: None, saw_non_text: false });
                    columns.len() - 1
                }
            };
            let column = &mut columns[idx];
            // A name given twice in one object: the last value counts, as serde_json reads it.
            if column.values.last().is_some_and(|(last_row, _)| *last_row == row as u32) {
                column.values.pop();
            }
            let Some(scalar) = Scalar::of(raw) else { continue };
            let seen = scalar.json_type();
            column.saw_non_text |= seen != JsonType::Text;
            column.file_type = Some(match column.file_type {
                None => seen,
                Some(current) => current.join(seen).unwrap_or(JsonType::Text),
            });
            column.values.push((row as u32, scalar));
        }
    }
    let mut settled = Vec::with_capacity(columns.len());
    for column in columns {
        // A field that is null in every record of this file says nothing about its type; it is
        // left out, and readers see nulls through `union_by_name`.
        let Some(mut file_type) = column.file_type else { continue };
        let name = column.name.as_ref();
        match memory.types.get(name).copied() {
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
            None if file_type == JsonType::Text && column.saw_non_text => {
                tracing::warn!(topic, field = %name, "JSON field has values of several types; writing it as text");
                stats.type_conflicts += 1;
            }
            None => {}
        }
        memory.types.insert(name.to_string(), file_type);
        let array = build_array(file_type, &column.values, values.len());
        settled.push((Field::new(name, file_type.data_type(), true), array));
    }
    settled
}

/// The array of one column of `n_rows` rows from its non-null values, in row order.
fn build_array(json_type: JsonType, values: &[(u32, Scalar<'_>)], n_rows: usize) -> ArrayRef {
    // Walks the rows, taking the next value where its row comes and a null elsewhere.
    fn fill(values: &[(u32, Scalar<'_>)], n_rows: usize, mut append: impl FnMut(Option<&Scalar<'_>>)) {
        let mut next = values.iter().peekable();
        for row in 0..n_rows as u32 {
            append(next.next_if(|(value_row, _)| *value_row == row).map(|(_, scalar)| scalar));
        }
    }
    match json_type {
        JsonType::Boolean => {
            let mut builder = BooleanBuilder::with_capacity(n_rows);
            fill(values, n_rows, |scalar| match scalar {
                Some(Scalar::Bool(value)) => builder.append_value(*value),
                _ => builder.append_null(),
            });
            Arc::new(builder.finish())
        }
        JsonType::Integer => {
            let mut builder = Int64Builder::with_capacity(n_rows);
            fill(values, n_rows, |scalar| match scalar {
                Some(Scalar::Integer(value)) => builder.append_value(*value),
                _ => builder.append_null(),
            });
            Arc::new(builder.finish())
        }
        JsonType::Double => {
            let mut builder = Float64Builder::with_capacity(n_rows);
            fill(values, n_rows, |scalar| match scalar {
                Some(Scalar::Double(value, _)) => builder.append_value(*value),
                Some(Scalar::Integer(value)) => builder.append_value(*value as f64),
                _ => builder.append_null(),
            });
            Arc::new(builder.finish())
        }
        JsonType::Text => {
            let text_bytes: usize = values.iter().map(|(_, scalar)| scalar.as_text().len()).sum();
            let mut builder = StringBuilder::with_capacity(n_rows, text_bytes);
            fill(values, n_rows, |scalar| match scalar {
                Some(scalar) => builder.append_value(scalar.as_text()),
                None => builder.append_null(),
            });
            Arc::new(builder.finish())
        }
    }
}

/// Reads `value`'s top-level fields into `fields` (name, raw JSON of the value); false when
/// `value` is not one whole JSON object.
fn parse_object<'a>(value: &'a [u8], fields: &mut Vec<(Cow<'a, str>, &'a RawValue)>) -> bool {
    let mut deserializer = serde_json::Deserializer::from_slice(value);
    ObjectFields(fields).deserialize(&mut deserializer).and_then(|()| deserializer.end()).is_ok()
}

/// Collects an object's fields without parsing their values beyond finding where they end.
struct ObjectFields<'s, 'a>(&'s mut Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> DeserializeSeed<'de> for ObjectFields<'_, 'de> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ObjectFields<'_, 'de> {
    type Value = ();

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(FieldName(name)) = map.next_key()? {
            let raw: &'de RawValue = map.next_value()?;
            self.0.push((name, raw));
        }
        Ok(())
    }
}

/// A field name, borrowed from the input unless it had escapes.
struct FieldName<'a>(Cow<'a, str>);

impl<'de> serde::Deserialize<'de> for FieldName<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NameVisitor;
        impl<'de> Visitor<'de> for NameVisitor {
            type Value = FieldName<'de>;

            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("a field name")
            }

            fn visit_borrowed_str<E>(self, name: &'de str) -> Result<FieldName<'de>, E> {
                Ok(FieldName(Cow::Borrowed(name)))
            }

            fn visit_str<E>(self, name: &str) -> Result<FieldName<'de>, E> {
                Ok(FieldName(Cow::Owned(name.to_string())))
            }
        }
        deserializer.deserialize_str(NameVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The scalar each raw JSON value reads as, shown as its type and text.
    #[test]
    fn scalars_keep_their_types_and_text() {
        let check = |json: &str, expected: Option<(JsonType, &str)>| {
            let raw: Box<RawValue> =
                serde_json::from_str(json).unwrap_or_else(|error| panic!("{json}: {error}"));
            let scalar = Scalar::of(&raw);
            let actual = scalar.as_ref().map(|scalar| (scalar.json_type(), scalar.as_text().into_owned()));
            assert_eq!(actual, expected.map(|(json_type, text)| (json_type, text.to_string())), "{json}");
        };
        check("null", None);
        check("true", Some((JsonType::Boolean, "true")));
        check("-12", Some((JsonType::Integer, "-12")));
        check("1.50", Some((JsonType::Double, "1.50")));
        check("1e3", Some((JsonType::Double, "1e3")));
        check("18446744073709551615", Some((JsonType::Double, "18446744073709551615")));
        check(r#""plain""#, Some((JsonType::Text, "plain")));
        check(r#""tab\tand \u00e9""#, Some((JsonType::Text, "tab\tand é")));
        check(r#"[1, "a"]"#, Some((JsonType::Text, r#"[1, "a"]"#)));
        check(r#"{"x":1}"#, Some((JsonType::Text, r#"{"x":1}"#)));
    }

    #[test]
    fn only_whole_objects_parse() {
        let mut fields = Vec::new();
        for (value, expected) in [
            (r#"{"a":1,"b\"":[2]}"#, Some(vec![("a", "1"), ("b\"", "[2]")])),
            (r#"{"a":1} trailing"#, None),
            (r#"{"a":1"#, None),
            ("[1]", None),
            (r#""text""#, None),
            ("", None),
        ] {
            fields.clear();
            let parsed = parse_object(value.as_bytes(), &mut fields);
            let actual = parsed.then(|| {
                fields.iter().map(|(name, raw)| (name.to_string(), raw.get().to_string())).collect::<Vec<_>>()
            });
            let expected = expected.map(|pairs| {
                pairs.into_iter().map(|(name, raw)| (name.to_string(), raw.to_string())).collect::<Vec<_>>()
            });
            assert_eq!(actual, expected, "{value}");
        }
    }
}
