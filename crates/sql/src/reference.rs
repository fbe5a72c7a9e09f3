//! Reference data: tables a query joins its streams with, Stream Analytics' reference inputs
//! (Flink's lookup join). An input named in `JobOptions::reference_inputs` is not a stream: it
//! has no event time and no watermark, and it can only be the right side of a JOIN whose ON
//! clause equates a column of each side. Each stream row is joined with the rows the table
//! holds *when the row is processed* ("as of now"); an update changes what later rows see and
//! never revisits rows already joined.
//!
//! A table is a map from a record key (the Kafka record key of a reference topic, the row
//! number of a reference file) to a JSON object: a new value replaces the key's row, a tombstone
//! deletes it. Each JOIN reading the table keeps an index from the value of its ON clause's
//! equality columns to the record keys that have it, so a lookup costs one hash probe. The rows
//! are not part of a checkpoint: the runner loads the table again (reads its topic to the end,
//! or its file) before it restores a job, as at any start.
//!
//! The table's size is bounded by `JobOptions::max_reference_rows`; an update that would add a
//! key beyond it is refused with [`ReferenceError::Full`] (updates of existing keys and deletes
//! still apply). This module also parses reference files (JSON lines, a JSON array, or CSV with
//! a header row) into rows, without I/O.

use std::collections::HashMap;

use crate::expr::{eval_keys, CompiledExpr, Context, JoinedRow, Row};
use crate::value::{KeyMap, KeyPart};

/// Default for `JobOptions::max_reference_rows`: rows per reference table.
pub const DEFAULT_MAX_REFERENCE_ROWS: usize = 1_000_000;
/// The largest reference file a runner reads (it checks the size before reading).
pub const REFERENCE_FILE_BYTES_MAX: u64 = 256 * 1024 * 1024;

/// A JSON object: one row of a reference table.
pub type ReferenceRow = serde_json::Map<String, serde_json::Value>;

/// Why an update of a reference table was refused; the table is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    #[error("the job has no reference input named '{name}'")]
    Unknown { name: String },
    #[error("a row of reference input '{name}' must be a JSON object, got {found}")]
    NotAnObject { name: String, found: String },
    #[error("reference input '{name}' already holds {max_rows} rows (max_reference_rows); key {key:?} was not added")]
    Full { name: String, max_rows: usize, key: String },
}

/// A problem in a reference file, naming the line (from 1).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ReferenceFileError {
    pub line: usize,
    pub message: String,
}

/// One JOIN's index into a table: the value of the ON clause's reference-side equality columns
/// to the slots of the rows that have it, sorted by record key so that several matches come out
/// in an order that depends only on the table's contents (not on the order of its updates, which
/// a reload after a restore does not replay).
#[derive(Debug)]
pub(crate) struct ReferenceIndex {
    table_keys: Vec<CompiledExpr>,
    by_value: KeyMap<Vec<u32>>,
}

/// A reference table at run time. Rows live in slots, so that a lookup goes from the index
/// straight to its rows (one hash probe per event); a map from record key to slot serves
/// updates, and a deleted row's slot is reused.
#[derive(Debug)]
pub(crate) struct ReferenceTable {
    pub(crate) name: String,
    /// Hashed with the standard library's SipHash: record keys come from whoever writes the
    /// topic.
    slots_by_key: HashMap<Box<[u8]>, u32>,
    slots: Vec<Option<(Box<[u8]>, ReferenceRow)>>,
    free_slots: Vec<u32>,
    indexes: Vec<ReferenceIndex>,
}

impl ReferenceTable {
    pub(crate) fn new(name: String) -> ReferenceTable {
        ReferenceTable {
            name,
            slots_by_key: HashMap::new(),
            slots: Vec::new(),
            free_slots: Vec::new(),
            indexes: Vec::new(),
        }
    }

    /// Adds the index of one JOIN; returns its number.
    pub(crate) fn add_index(&mut self, table_keys: Vec<CompiledExpr>) -> usize {
        self.indexes.push(ReferenceIndex { table_keys, by_value: KeyMap::default() });
        self.indexes.len() - 1
    }

    pub(crate) fn len(&self) -> usize {
        self.slots_by_key.len()
    }

    /// Sets (or with `None`) deletes the row of `key`.
    pub(crate) fn update(
        &mut self,
        key: &[u8],
        row: Option<ReferenceRow>,
        max_rows: usize,
    ) -> Result<(), ReferenceError> {
        let existing = self.slots_by_key.get(key).copied();
        if row.is_some() && existing.is_none() && self.slots_by_key.len() >= max_rows {
            return Err(ReferenceError::Full {
                name: self.name.clone(),
                max_rows,
                key: String::from_utf8_lossy(key).into_owned(),
            });
        }
        if let Some(slot) = existing {
            if let Some((_, old)) = self.slots.get(slot as usize).and_then(Option::as_ref) {
                for index in &mut self.indexes {
                    if let Some(value) = index_value(&index.table_keys, old) {
                        if let Some(slots) = index.by_value.get_mut(&value) {
                            slots.retain(|existing| *existing != slot);
                            if slots.is_empty() {
                                index.by_value.swap_remove(&value);
                            }
                        }
                    }
                }
            }
        }
        let Some(row) = row else {
            if let Some(slot) = existing {
                self.slots_by_key.remove(key);
                self.slots[slot as usize] = None;
                self.free_slots.push(slot);
            }
            return Ok(());
        };
        let slot = match existing.or_else(|| self.free_slots.pop()) {
            Some(slot) => slot,
            None => {
                self.slots.push(None);
                // The row limit is far below u32::MAX.
                u32::try_from(self.slots.len() - 1).unwrap_or(u32::MAX)
            }
        };
        for index in &mut self.indexes {
            if let Some(value) = index_value(&index.table_keys, &row) {
                let slots = index.by_value.entry(value).or_default();
                let by_key = |other: &u32| match &self.slots.get(*other as usize) {
                    Some(Some((other_key, _))) => other_key.as_ref().cmp(key),
                    _ => std::cmp::Ordering::Less,
                };
                let at = slots.binary_search_by(by_key).unwrap_or_else(|at| at);
                slots.insert(at, slot);
            }
        }
        self.slots_by_key.insert(key.into(), slot);
        self.slots[slot as usize] = Some((key.into(), row));
        Ok(())
    }

    /// The rows whose equality columns in index `index` have the value `value`.
    pub(crate) fn lookup<'a>(
        &'a self,
        index: usize,
        value: &[KeyPart],
    ) -> impl Iterator<Item = &'a ReferenceRow> + 'a {
        self.indexes
            .get(index)
            .and_then(|index| index.by_value.get(value))
            .into_iter()
            .flatten()
            .filter_map(|slot| self.slots.get(*slot as usize).and_then(Option::as_ref).map(|(_, row)| row))
    }
}

/// The value a row is indexed under: `None` when a part is NULL, which no `=` matches.
fn index_value(table_keys: &[CompiledExpr], row: &ReferenceRow) -> Option<Vec<KeyPart>> {
    let empty = ReferenceRow::new();
    let joined = JoinedRow { sides: [Row::Json(&empty), Row::Json(row)], timestamps_ms: [None, None] };
    let context = Context { row: Row::Pair(&joined), timestamp_ms: 0, analytic: &[] };
    let (value, _) = eval_keys(table_keys, &context).ok()?;
    (!value.contains(&KeyPart::Null)).then_some(value)
}

/// How a reference file is written, from its name: `.csv` is CSV, anything else JSON (JSON
/// lines, or one JSON array of objects).
pub fn is_csv_file_name(name: &str) -> bool {
    name.rsplit('.').next().is_some_and(|extension| extension.eq_ignore_ascii_case("csv"))
}

/// Parses a reference file's text into rows: CSV when `csv`, else JSON.
pub fn parse_reference_file(text: &str, csv: bool) -> Result<Vec<ReferenceRow>, ReferenceFileError> {
    if csv {
        parse_csv_rows(text)
    } else {
        parse_json_rows(text)
    }
}

/// JSON reference data: one JSON array of objects, or one object per line (JSON lines; blank
/// lines are skipped).
pub fn parse_json_rows(text: &str) -> Result<Vec<ReferenceRow>, ReferenceFileError> {
    let as_object = |value: serde_json::Value, line: usize| match value {
        serde_json::Value::Object(map) => Ok(map),
        other => Err(ReferenceFileError {
            line,
            message: format!("a row must be a JSON object, got {}", json_kind(&other)),
        }),
    };
    if text.trim_start().starts_with('[') {
        let rows: Vec<serde_json::Value> = serde_json::from_str(text).map_err(|error| {
            ReferenceFileError { line: error.line(), message: format!("not JSON: {error}") }
        })?;
        // An array's rows are reported by their first line: count lines up to each element is
        // not worth it, so errors in an array name the array's first line and the element.
        return rows
            .into_iter()
            .enumerate()
            .map(|(index, value)| {
                as_object(value, 1).map_err(|error| ReferenceFileError {
                    line: 1,
                    message: format!("element {index} of the array: {}", error.message),
                })
            })
            .collect();
    }
    let mut rows = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let value: serde_json::Value = serde_json::from_str(line)
            .map_err(|error| ReferenceFileError { line: index + 1, message: format!("not JSON: {error}") })?;
        rows.push(as_object(value, index + 1)?);
    }
    Ok(rows)
}

fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// CSV reference data (RFC 4180): a header row naming the columns, then one row per line.
/// Fields may be quoted (`"a, b"`, `""` for a quote, line breaks inside quotes). An unquoted
/// field that reads as a JSON number is a number and an empty unquoted field is NULL; every
/// other field, and every quoted one, is a string, so `"007"` keeps its zeros.
pub fn parse_csv_rows(text: &str) -> Result<Vec<ReferenceRow>, ReferenceFileError> {
    let records = csv_records(text)?;
    let mut records = records.into_iter();
    let Some((header_line, header)) = records.next() else { return Ok(Vec::new()) };
    let mut names: Vec<String> = Vec::with_capacity(header.len());
    for (field, _) in header {
        let name = field.trim().to_string();
        if name.is_empty() || names.contains(&name) {
            return Err(ReferenceFileError {
                line: header_line,
                message: format!(
                    "the header row needs a distinct, non-empty name for every column, got {name:?}"
                ),
            });
        }
        names.push(name);
    }
    let mut rows = Vec::new();
    for (line, fields) in records {
        if fields.len() == 1 && fields[0].0.is_empty() && !fields[0].1 {
            continue; // a blank line
        }
        if fields.len() != names.len() {
            return Err(ReferenceFileError {
                line,
                message: format!("{} fields, the header names {}", fields.len(), names.len()),
            });
        }
        let row = names
            .iter()
            .zip(fields)
            .map(|(name, (field, quoted))| (name.clone(), csv_value(field, quoted)))
            .collect();
        rows.push(row);
    }
    Ok(rows)
}

fn csv_value(field: String, quoted: bool) -> serde_json::Value {
    if quoted {
        return serde_json::Value::String(field);
    }
    if field.is_empty() {
        return serde_json::Value::Null;
    }
    let looks_numeric = field.bytes().all(|byte| byte.is_ascii_digit() || b"+-.eE".contains(&byte));
    match serde_json::from_str::<serde_json::Number>(&field) {
        Ok(number) if looks_numeric => serde_json::Value::Number(number),
        _ => serde_json::Value::String(field),
    }
}

/// The records of a CSV text, each with the line it starts on and its fields (with whether the
/// field was quoted).
#[allow(clippy::type_complexity)]
fn csv_records(text: &str) -> Result<Vec<(usize, Vec<(String, bool)>)>, ReferenceFileError> {
    let mut records = Vec::new();
    let mut chars = text.chars().peekable();
    let mut line = 1;
    while chars.peek().is_some() {
        let start_line = line;
        let mut fields = Vec::new();
        loop {
            let mut field = String::new();
            let mut quoted = false;
            if chars.peek() == Some(&'"') {
                quoted = true;
                chars.next();
                loop {
                    match chars.next() {
                        None => {
                            return Err(ReferenceFileError {
                                line: start_line,
                                message: "a quoted field is not closed".to_string(),
                            })
                        }
                        Some('"') if chars.peek() == Some(&'"') => {
                            chars.next();
                            field.push('"');
                        }
                        Some('"') => break,
                        Some(other) => {
                            if other == '\n' {
                                line += 1;
                            }
                            field.push(other);
                        }
                    }
                }
                if !matches!(chars.peek(), None | Some(',' | '\n' | '\r')) {
                    return Err(ReferenceFileError {
                        line,
                        message: "text after a closing quote: a field is either quoted whole or not at all"
                            .to_string(),
                    });
                }
            } else {
                while let Some(&next) = chars.peek() {
                    if matches!(next, ',' | '\n' | '\r') {
                        break;
                    }
                    if next == '"' {
                        return Err(ReferenceFileError {
                            line,
                            message: "a quote inside an unquoted field: quote the whole field".to_string(),
                        });
                    }
                    field.push(next);
                    chars.next();
                }
            }
            fields.push((field, quoted));
            match chars.next() {
                Some(',') => continue,
                Some('\r') => {
                    if chars.peek() == Some(&'\n') {
                        chars.next();
                    }
                    line += 1;
                    break;
                }
                Some('\n') => {
                    line += 1;
                    break;
                }
                _ => break,
            }
        }
        records.push((start_line, fields));
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(json: serde_json::Value) -> Vec<ReferenceRow> {
        serde_json::from_value(json).unwrap_or_else(|error| panic!("{error}"))
    }

    #[test]
    fn csv_types_unquoted_numbers_and_keeps_quoted_text() {
        let text = "deviceId,threshold,site,note\r\nd1,30,\"007\",\"a, \"\"b\"\"\"\n\nd2,-1.5e1,,x\n";
        let parsed = parse_csv_rows(text).unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(
            parsed,
            rows(serde_json::json!([
                {"deviceId": "d1", "threshold": 30, "site": "007", "note": "a, \"b\""},
                {"deviceId": "d2", "threshold": -15.0, "site": null, "note": "x"},
            ]))
        );
    }

    #[test]
    fn csv_errors_name_the_line() {
        let short = parse_csv_rows("a,b\n1,2\n3\n").err().unwrap_or_else(|| panic!("a short row parsed"));
        assert_eq!(
            short,
            ReferenceFileError { line: 3, message: "1 fields, the header names 2".to_string() }
        );
        let open = parse_csv_rows("a\n\"x\n").err().unwrap_or_else(|| panic!("an open quote parsed"));
        assert_eq!(open.line, 2);
        let stray = parse_csv_rows("a,b\n1,x\"y\n").err().unwrap_or_else(|| panic!("a stray quote parsed"));
        assert_eq!(stray.line, 2);
        let header = parse_csv_rows("a,a\n1,2\n").err().unwrap_or_else(|| panic!("a repeated column parsed"));
        assert_eq!(header.line, 1);
        assert_eq!(parse_csv_rows(""), Ok(Vec::new()));
    }

    #[test]
    fn json_reads_lines_or_an_array_and_names_bad_lines() {
        let lines = parse_json_rows("{\"k\": 1}\n\n{\"k\": 2}\n").unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(lines, rows(serde_json::json!([{"k": 1}, {"k": 2}])));
        let array = parse_json_rows(" [{\"k\": 1}, {\"k\": 2}]").unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(array, lines);
        let bad =
            parse_json_rows("{\"k\": 1}\n{\"k\": \n").err().unwrap_or_else(|| panic!("bad JSON parsed"));
        assert_eq!(bad.line, 2);
        let scalar = parse_json_rows("{\"k\": 1}\n5\n").err().unwrap_or_else(|| panic!("a number parsed"));
        assert_eq!(
            scalar,
            ReferenceFileError { line: 2, message: "a row must be a JSON object, got a number".to_string() }
        );
        let element = parse_json_rows("[{}, []]").err().unwrap_or_else(|| panic!("an array element parsed"));
        assert!(element.message.contains("element 1"), "{element}");
        assert!(is_csv_file_name("t.CSV") && !is_csv_file_name("t.jsonl"));
    }
}
