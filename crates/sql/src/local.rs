//! Running a job over a file of events, with no cluster: what `tidewater query test` does, and
//! the format the query corpus (`tests/queries/`) is written in.
//!
//! Input is JSON Lines, one event per line; keys starting with `@` steer the run and are removed
//! before the event is pushed: `@input` (which input; default the first the query names),
//! `@partition` (default 0), `@arrival` (processing time, epoch ms or ISO-8601; default 0). A
//! line `{"@advance_processing_time": T}` advances processing time instead. A line with
//! `@reference` updates a reference table as a record of its topic would: `{"@reference":
//! "thresholds", "@key": "d1", "deviceId": "d1", "threshold": 30}` sets the row of key `d1`, and
//! `{"@reference": "thresholds", "@key": "d1", "@tombstone": true}` deletes it. Blank lines and
//! lines starting with `//` are skipped. After the last line the job is finished (open windows
//! flush).
//!
//! Results are JSON lines too: `{"output": NAME, "line": N, "row": {...}}` per output row,
//! `{"late": {...}, "line": N}` per late event and `{"error": MESSAGE, "line": N}` per event
//! error, where `line` is the input line that produced it or `"finish"`. An expected file in the
//! same format is compared kind by kind (outputs, late events, errors), in order; numbers match
//! within a relative 1e-9, `line` is compared only where the expected line has one, and an
//! expected error matches any message containing it.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::Value as Json;

use crate::scan::{scan_object, Fields};
use crate::{
    format_timestamp, parse_timestamp, Job, JobOptions, LateAction, LatePolicy, ReferenceError, ReferenceRow,
    Step,
};

/// The reference tables of a local run as their topics would hold them: per reference input,
/// the latest row of each key. A run that restores a job from a checkpoint loads them into the
/// fresh job first, as a runner reads its reference topics again at every start.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReferenceTables {
    tables: BTreeMap<String, BTreeMap<Vec<u8>, ReferenceRow>>,
}

impl ReferenceTables {
    /// Adds a reference file's rows to input `name`, keyed by their row number (from 1), so none
    /// replaces another.
    pub fn add_file_rows(&mut self, name: &str, rows: Vec<ReferenceRow>) {
        let table = self.tables.entry(name.to_ascii_lowercase()).or_default();
        for (index, row) in rows.into_iter().enumerate() {
            table.insert(file_row_key(index), row);
        }
    }

    /// Sets or (with `None`) deletes the row of `key` in input `name`.
    pub fn update(&mut self, name: &str, key: &[u8], row: Option<ReferenceRow>) {
        let table = self.tables.entry(name.to_ascii_lowercase()).or_default();
        match row {
            Some(row) => table.insert(key.to_vec(), row),
            None => table.remove(key),
        };
    }

    /// The number of rows of input `name`.
    pub fn rows(&self, name: &str) -> usize {
        self.tables.get(&name.to_ascii_lowercase()).map_or(0, BTreeMap::len)
    }

    /// Whether input `name` has a row for `key`.
    pub fn contains(&self, name: &str, key: &[u8]) -> bool {
        self.tables.get(&name.to_ascii_lowercase()).is_some_and(|table| table.contains_key(key))
    }

    /// Every row: reference input name (lower case), record key, row.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8], &ReferenceRow)> + '_ {
        self.tables.iter().flat_map(|(name, table)| {
            table.iter().map(move |(key, row)| (name.as_str(), key.as_slice(), row))
        })
    }

    /// Loads every table into `job`.
    pub fn load_into(&self, job: &mut Job) -> Result<(), ReferenceError> {
        for (name, table) in &self.tables {
            for (key, row) in table {
                job.update_reference(name, key, Some(&Json::Object(row.clone())))?;
            }
        }
        Ok(())
    }
}

/// The record key of a reference file's row `index` (from 0): its row number, zero-padded so
/// that keys sort in file order.
pub fn file_row_key(index: usize) -> Vec<u8> {
    format!("{:010}", index + 1).into_bytes()
}

/// A problem with the input or expected file, naming the line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct LineError {
    pub line: usize,
    pub message: String,
}

/// Reads `JobOptions` from JSON (`out_of_order_tolerance_ms`, `late_arrival_tolerance_ms`,
/// `late_policy` "adjust" or "drop", `idle_partition_timeout_ms`, `idle_key_timeout_ms`,
/// `reference_inputs`, `max_reference_rows`), naming an unknown key.
pub fn options_from_json(json: &Json) -> Result<JobOptions, String> {
    let mut options = JobOptions::default();
    let Some(object) = json.as_object() else { return Err("options must be a JSON object".to_string()) };
    for (key, value) in object {
        let number = || value.as_i64().ok_or_else(|| format!("{key} must be a whole number of milliseconds"));
        match key.as_str() {
            "out_of_order_tolerance_ms" => options.out_of_order_tolerance_ms = number()?,
            "late_arrival_tolerance_ms" => options.late_arrival_tolerance_ms = number()?,
            "idle_partition_timeout_ms" => options.idle_partition_timeout_ms = Some(number()?),
            "idle_key_timeout_ms" => options.idle_key_timeout_ms = number()?,
            "max_reference_rows" => {
                options.max_reference_rows = value
                    .as_u64()
                    .and_then(|rows| usize::try_from(rows).ok())
                    .ok_or_else(|| format!("{key} must be a whole number of rows"))?
            }
            "reference_inputs" => {
                options.reference_inputs = value
                    .as_array()
                    .and_then(|names| names.iter().map(|name| name.as_str().map(str::to_string)).collect())
                    .ok_or_else(|| format!("{key} must be an array of input names"))?
            }
            "late_policy" => {
                options.late_policy = match value.as_str() {
                    Some("adjust") => LatePolicy::Adjust,
                    Some("drop") => LatePolicy::Drop,
                    _ => return Err("late_policy must be \"adjust\" or \"drop\"".to_string()),
                }
            }
            other => return Err(format!("unknown option {other:?}")),
        }
    }
    Ok(options)
}

fn time_ms(json: &Json) -> Option<i64> {
    match json {
        Json::Number(number) => number.as_i64(),
        Json::String(text) => parse_timestamp(text),
        _ => None,
    }
}

/// Hands what one call into the job produced to `emit`, in the result format, in order.
fn record(step: Step, line: &Json, emit: &mut impl FnMut(Json) -> Result<(), String>) -> Result<(), String> {
    for output in step.outputs {
        // Built by hand, not with json!, which would copy the row by serializing it again.
        let mut result = serde_json::Map::with_capacity(3);
        result.insert("output".to_string(), Json::String(output.name));
        result.insert("line".to_string(), line.clone());
        result.insert("row".to_string(), output.row);
        emit(Json::Object(result))?;
    }
    for late in step.late {
        let action = match late.action {
            LateAction::Adjusted { .. } => "adjusted",
            LateAction::Dropped => "dropped",
        };
        emit(serde_json::json!({"late": {
            "input": late.input,
            "partition": late.partition,
            "timestamp": format_timestamp(late.timestamp_ms),
            "action": action,
        }, "line": line}))?;
    }
    for error in step.errors {
        emit(serde_json::json!({"error": error.to_string(), "line": line}))?;
    }
    Ok(())
}

/// Takes a steering key out of a line's event, if the line has any (`shift_remove` keeps the
/// other keys in the line's order).
fn take(map: &mut serde_json::Map<String, Json>, has_steering: bool, key: &str) -> Option<Json> {
    if has_steering {
        map.shift_remove(key)
    } else {
        None
    }
}

fn is_skipped(text: &str) -> bool {
    text.trim().is_empty() || text.trim_start().starts_with("//")
}

/// Runs `job` over `input` (the input format above) and finishes it. `after_line` is called after
/// each pushed line with the job, so a caller can checkpoint and restore it there.
pub fn run(
    job: &mut Job,
    input: &str,
    mut after_line: impl FnMut(&mut Job, usize) -> Result<(), String>,
) -> Result<Vec<Json>, LineError> {
    run_with_references(job, input, &mut ReferenceTables::default(), |job, line, _| after_line(job, line))
}

/// [`run`] for a job with reference inputs: `references` are the tables already loaded into
/// `job`; `@reference` lines update both, and `after_line` sees them too (a job restored from a
/// checkpoint needs them loaded first).
pub fn run_with_references(
    job: &mut Job,
    input: &str,
    references: &mut ReferenceTables,
    after_line: impl FnMut(&mut Job, usize, &ReferenceTables) -> Result<(), String>,
) -> Result<Vec<Json>, LineError> {
    let mut results = Vec::new();
    run_streaming(job, input.lines().map(Ok), references, after_line, |result| {
        results.push(result);
        Ok(())
    })?;
    Ok(results)
}

/// [`run_with_references`] over lines read one at a time (a file through `BufRead::lines`),
/// handing each result to `emit` as it is produced rather than collecting them, so that memory
/// does not grow with the input or the output. The results and their order are the same. A
/// line that cannot be read, or an `emit` that fails (a closed output), ends the run with an
/// error naming the line.
pub fn run_streaming<T: AsRef<str>>(
    job: &mut Job,
    lines: impl IntoIterator<Item = std::io::Result<T>>,
    references: &mut ReferenceTables,
    mut after_line: impl FnMut(&mut Job, usize, &ReferenceTables) -> Result<(), String>,
    mut emit: impl FnMut(Json) -> Result<(), String>,
) -> Result<(), LineError> {
    let inputs = job.inputs();
    // What a line's event is decoded to: the fields some input's statements read and the `@`
    // keys that steer the run (see `scan`); a query that needs whole events parses them whole.
    let fields = job.fields_read_by_any_input();
    let mut lines_read = 0;
    for (index, text) in lines.into_iter().enumerate() {
        let line_number = index + 1;
        lines_read = line_number;
        let error = |message: String| LineError { line: line_number, message };
        let text = text.map_err(|read| error(format!("reading: {read}")))?;
        let text = text.as_ref();
        if is_skipped(text) {
            continue;
        }
        let line = Json::from(line_number);
        let scanned = match &fields {
            Fields::Named(_) => scan_object(text.as_bytes(), fields.n_named(), |key| {
                key.starts_with('@') || fields.wants(key)
            })
            // A reference row is the whole line.
            .filter(|map| !map.contains_key("@reference")),
            Fields::All => None,
        };
        let is_scanned = scanned.is_some();
        // The `@` keys are taken out with `shift_remove`, which keeps the other keys in the
        // line's order (`remove` would move the last key into the gap, and the last key of the
        // line and of the scanned fields are not the same one).
        let mut map = match scanned {
            Some(map) => map,
            None => match serde_json::from_str(text).map_err(|parse| error(format!("not JSON: {parse}")))? {
                Json::Object(map) => map,
                _ => return Err(error("an event is a JSON object".to_string())),
            },
        };
        // Most lines have no `@` key: then there is nothing to take out (each try hashes).
        let has_steering = map.keys().any(|key| key.starts_with('@'));
        if let Some(now) = take(&mut map, has_steering, "@advance_processing_time") {
            let now_ms =
                time_ms(&now).ok_or_else(|| error("@advance_processing_time is not a time".to_string()))?;
            record(job.advance_processing_time(now_ms), &line, &mut emit).map_err(error)?;
            continue;
        }
        if let Some(reference) = take(&mut map, has_steering, "@reference") {
            let Json::String(name) = reference else {
                return Err(error("@reference is not a name".to_string()));
            };
            let Some(Json::String(key)) = take(&mut map, has_steering, "@key") else {
                return Err(error("a @reference line needs \"@key\": the record key, a string".to_string()));
            };
            let row = match take(&mut map, has_steering, "@tombstone") {
                Some(Json::Bool(true)) => None,
                None | Some(Json::Bool(false)) => Some(map.clone()),
                Some(_) => return Err(error("@tombstone is true or false".to_string())),
            };
            match job.update_reference(&name, key.as_bytes(), row.clone().map(Json::Object).as_ref()) {
                Ok(()) => references.update(&name, key.as_bytes(), row),
                Err(refused) => {
                    emit(serde_json::json!({"error": refused.to_string(), "line": line})).map_err(error)?
                }
            }
            after_line(job, line_number, references).map_err(error)?;
            continue;
        }
        let input_name = match take(&mut map, has_steering, "@input") {
            Some(Json::String(name)) => name,
            Some(_) => return Err(error("@input is not a name".to_string())),
            None => inputs.first().cloned().ok_or_else(|| error("the query reads no input".to_string()))?,
        };
        let partition = match take(&mut map, has_steering, "@partition") {
            Some(value) => value
                .as_i64()
                .and_then(|partition| i32::try_from(partition).ok())
                .ok_or_else(|| error("@partition is not a partition number".to_string()))?,
            None => 0,
        };
        let arrival_ms = match take(&mut map, has_steering, "@arrival") {
            Some(value) => time_ms(&value).ok_or_else(|| error("@arrival is not a time".to_string()))?,
            None => 0,
        };
        // A late event is reported whole, as the line gave it but for the keys taken out above.
        let full_event = || {
            if !is_scanned {
                return Json::Object(map.clone());
            }
            let mut event = serde_json::from_str(text).unwrap_or_else(|_| Json::Object(map.clone()));
            if let Some(event) = event.as_object_mut() {
                for steering in ["@input", "@partition", "@arrival"] {
                    event.shift_remove(steering);
                }
            }
            event
        };
        let step = job.push_object(&input_name, partition, &map, arrival_ms, &full_event);
        record(step, &line, &mut emit).map_err(error)?;
        after_line(job, line_number, references).map_err(error)?;
    }
    record(job.finish(), &Json::from("finish"), &mut emit)
        .map_err(|message| LineError { line: lines_read, message })
}

/// Reads an expected-results file.
pub fn parse_expected(text: &str) -> Result<Vec<Json>, LineError> {
    text.lines()
        .enumerate()
        .filter(|(_, text)| !is_skipped(text))
        .map(|(index, text)| {
            serde_json::from_str(text)
                .map_err(|error| LineError { line: index + 1, message: format!("not JSON: {error}") })
        })
        .collect()
}

/// Numbers compare with a relative tolerance (1e-9) so that `35` matches `35.0`.
fn json_eq(expected: &Json, actual: &Json) -> bool {
    match (expected, actual) {
        (Json::Number(left), Json::Number(right)) => {
            let (left, right) = (left.as_f64().unwrap_or(f64::NAN), right.as_f64().unwrap_or(f64::NAN));
            (left - right).abs() <= 1e-9 * left.abs().max(right.abs()).max(1.0)
        }
        (Json::Object(left), Json::Object(right)) => {
            left.len() == right.len()
                && left.iter().zip(right.iter()).all(|((left_key, left), (right_key, right))| {
                    left_key == right_key && json_eq(left, right)
                })
        }
        (Json::Array(left), Json::Array(right)) => {
            left.len() == right.len() && left.iter().zip(right).all(|(left, right)| json_eq(left, right))
        }
        _ => expected == actual,
    }
}

fn kind(line: &Json) -> &'static str {
    if line.get("output").is_some() {
        "output"
    } else if line.get("late").is_some() {
        "late"
    } else {
        "error"
    }
}

fn line_matches(expected: &Json, actual: &Json) -> bool {
    if let Some(line) = expected.get("line") {
        if actual.get("line") != Some(line) {
            return false;
        }
    }
    match kind(expected) {
        "output" => {
            expected.get("output") == actual.get("output") && json_eq(&expected["row"], &actual["row"])
        }
        "late" => json_eq(&expected["late"], &actual["late"]),
        _ => match (expected["error"].as_str(), actual["error"].as_str()) {
            (Some(wanted), Some(found)) => found.contains(wanted),
            _ => false,
        },
    }
}

/// `None` if `actual` matches `expected`; otherwise a line diff per kind (`-` expected,
/// `+` actual, unmarked lines match).
pub fn diff(expected: &[Json], actual: &[Json]) -> Option<String> {
    let mut report = String::new();
    for wanted_kind in ["output", "late", "error"] {
        let expected: Vec<&Json> = expected.iter().filter(|line| kind(line) == wanted_kind).collect();
        let actual: Vec<&Json> = actual.iter().filter(|line| kind(line) == wanted_kind).collect();
        let same = expected.len() == actual.len()
            && expected.iter().zip(&actual).all(|(expected, actual)| line_matches(expected, actual));
        if same {
            continue;
        }
        let _ = writeln!(report, "--- {wanted_kind} lines differ (- expected, + actual):");
        for index in 0..expected.len().max(actual.len()) {
            match (expected.get(index), actual.get(index)) {
                (Some(expected), Some(actual)) if line_matches(expected, actual) => {
                    let _ = writeln!(report, "  {actual}");
                }
                (expected, actual) => {
                    if let Some(expected) = expected {
                        let _ = writeln!(report, "- {expected}");
                    }
                    if let Some(actual) = actual {
                        let _ = writeln!(report, "+ {actual}");
                    }
                }
            }
        }
    }
    (!report.is_empty()).then_some(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    const QUERY: &str = "SELECT deviceId, AVG(temp) AS avg_temp INTO alerts FROM telemetry TIMESTAMP BY ts \
                         GROUP BY deviceId, TumblingWindow(second, 10) HAVING AVG(temp) > 30";

    fn job() -> Job {
        crate::compile(QUERY, JobOptions::default()).unwrap_or_else(|diagnostics| panic!("{diagnostics:?}"))
    }

    #[test]
    fn runs_a_file_and_compares_with_expected_lines() {
        let input = "// two readings in (0s, 10s], one in (10s, 20s]\n\
                     {\"deviceId\": \"d1\", \"temp\": 31, \"ts\": \"2026-01-01T00:00:02Z\"}\n\
                     {\"deviceId\": \"d1\", \"temp\": 35, \"ts\": \"2026-01-01T00:00:09Z\"}\n\
                     {\"deviceId\": \"d1\", \"temp\": 20, \"ts\": \"2026-01-01T00:00:12Z\"}\n";
        let results = run(&mut job(), input, |_, _| Ok(())).unwrap_or_else(|error| panic!("{error}"));
        let expected =
            parse_expected(r#"{"output": "alerts", "line": 4, "row": {"deviceId": "d1", "avg_temp": 33}}"#)
                .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(diff(&expected, &results), None, "{results:?}");
        let wrong = parse_expected(r#"{"output": "alerts", "row": {"deviceId": "d1", "avg_temp": 34}}"#)
            .unwrap_or_else(|error| panic!("{error}"));
        let report = diff(&wrong, &results).unwrap_or_else(|| panic!("a wrong average matched"));
        assert!(report.contains("- {") && report.contains("+ {"), "{report}");
    }

    #[test]
    fn bad_input_lines_are_named() {
        let error = run(&mut job(), "\n{\"deviceId\": 1}\nnot json\n", |_, _| Ok(()))
            .err()
            .unwrap_or_else(|| panic!("bad input ran"));
        assert_eq!(error.line, 3);
        let error = run(&mut job(), "[1]\n", |_, _| Ok(())).err().unwrap_or_else(|| panic!("an array ran"));
        assert!(error.message.contains("object"), "{error}");
    }

    #[test]
    fn options_are_read_and_unknown_ones_named() {
        let options =
            options_from_json(&serde_json::json!({"out_of_order_tolerance_ms": 5000, "late_policy": "drop"}))
                .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(options.out_of_order_tolerance_ms, 5000);
        assert_eq!(options.late_policy, LatePolicy::Drop);
        assert!(options_from_json(&serde_json::json!({"tolerance": 1}))
            .is_err_and(|error| error.contains("tolerance")));
    }
}
