//! Runs every case under `tests/queries/` (format in that directory's README.md) through one
//! `check` helper and prints a line diff on mismatch. Every case runs three times: twice
//! straight through (the runs must agree) and once across a checkpoint/restore after every
//! input line (it must give the same output).

use std::fmt::Write as _;
use std::fs;
use std::path::Path;

use serde_json::Value as Json;
use tidewater_sql::{compile, format_timestamp, parse_timestamp, JobOptions, LateAction, LatePolicy, Step};

fn time_ms(json: &Json) -> Option<i64> {
    match json {
        Json::Number(number) => number.as_i64(),
        Json::String(text) => parse_timestamp(text),
        _ => None,
    }
}

fn options(case: &Path) -> JobOptions {
    let mut options = JobOptions::default();
    let Ok(text) = fs::read_to_string(case.join("options.json")) else { return options };
    let json: Json = serde_json::from_str(&text)
        .unwrap_or_else(|error| panic!("{}: options.json: {error}", case.display()));
    for (key, value) in json.as_object().into_iter().flatten() {
        match key.as_str() {
            "out_of_order_tolerance_ms" => options.out_of_order_tolerance_ms = value.as_i64().unwrap_or(0),
            "late_arrival_tolerance_ms" => options.late_arrival_tolerance_ms = value.as_i64().unwrap_or(0),
            "idle_partition_timeout_ms" => options.idle_partition_timeout_ms = value.as_i64(),
            "late_policy" => {
                options.late_policy = if value == "drop" { LatePolicy::Drop } else { LatePolicy::Adjust }
            }
            other => panic!("{}: unknown option {other}", case.display()),
        }
    }
    options
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

/// One observed line in the same shape as `expected.jsonl`.
fn record(step: Step, line: &Json, actual: &mut Vec<Json>) {
    for output in step.outputs {
        actual.push(serde_json::json!({"output": output.name, "line": line, "row": output.row}));
    }
    for late in step.late {
        let action = match late.action {
            LateAction::Adjusted { .. } => "adjusted",
            LateAction::Dropped => "dropped",
        };
        actual.push(serde_json::json!({"late": {
            "input": late.input,
            "partition": late.partition,
            "timestamp": format_timestamp(late.timestamp_ms),
            "action": action,
        }, "line": line}));
    }
    for error in step.errors {
        actual.push(serde_json::json!({"error": error.to_string(), "line": line}));
    }
}

/// Runs a case. With `restore_every_line`, the job is checkpointed after every input line, the
/// checkpoint goes through its text form, and a freshly compiled job restored from it carries on.
fn run(case: &Path, restore_every_line: bool) -> Vec<Json> {
    let query = fs::read_to_string(case.join("query.sql"))
        .unwrap_or_else(|error| panic!("{}: {error}", case.display()));
    let fresh_job = || match compile(&query, options(case)) {
        Ok(job) => job,
        Err(diagnostics) => panic!("{}: does not compile: {diagnostics:#?}", case.display()),
    };
    let mut job = fresh_job();
    let inputs = job.inputs();
    let input_text = fs::read_to_string(case.join("input.jsonl")).unwrap_or_default();
    let mut actual = Vec::new();
    for (index, text) in input_text.lines().enumerate() {
        if text.trim().is_empty() || text.trim_start().starts_with("//") {
            continue;
        }
        let line = Json::from(index + 1);
        let mut event: Json = serde_json::from_str(text)
            .unwrap_or_else(|error| panic!("{}: input line {}: {error}", case.display(), index + 1));
        let map =
            event.as_object_mut().unwrap_or_else(|| panic!("input line {} is not an object", index + 1));
        if let Some(now) = map.remove("@advance_processing_time") {
            let now_ms = time_ms(&now).unwrap_or_else(|| panic!("bad @advance_processing_time"));
            record(job.advance_processing_time(now_ms), &line, &mut actual);
            continue;
        }
        let input = map.remove("@input").and_then(|name| name.as_str().map(str::to_string));
        let input = input.unwrap_or_else(|| inputs[0].clone());
        let partition = map.remove("@partition").and_then(|value| value.as_i64()).unwrap_or(0) as i32;
        let arrival_ms = map.remove("@arrival").and_then(|value| time_ms(&value)).unwrap_or(0);
        record(job.push(&input, partition, &event, arrival_ms), &line, &mut actual);
        if restore_every_line {
            let text = job.checkpoint().to_string();
            let checkpoint: Json =
                serde_json::from_str(&text).unwrap_or_else(|error| panic!("checkpoint: {error}"));
            job = fresh_job();
            if let Err(error) = job.restore(&checkpoint) {
                panic!("{}: restore after input line {}: {error}", case.display(), index + 1);
            }
        }
    }
    record(job.finish(), &Json::from("finish"), &mut actual);
    actual
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

/// An expected line matches an actual one of the same kind. `line` is compared only when the
/// expected line has it; an expected `error` is a substring of the actual message.
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

fn check(case: &Path) -> Option<String> {
    let expected_text = fs::read_to_string(case.join("expected.jsonl")).unwrap_or_default();
    let expected: Vec<Json> = expected_text
        .lines()
        .filter(|text| !text.trim().is_empty() && !text.trim_start().starts_with("//"))
        .map(|text| {
            serde_json::from_str(text)
                .unwrap_or_else(|error| panic!("{}: expected.jsonl: {error}: {text}", case.display()))
        })
        .collect();
    let actual = run(case, false);
    let again = run(case, false);
    assert_eq!(actual, again, "{}: two runs of the same input differ", case.display());
    let restored = run(case, true);
    if restored != actual {
        let mut report =
            format!("case {}: a run restored from a checkpoint after every line differs:\n", case.display());
        for line in &actual {
            let _ = writeln!(report, "  straight: {line}");
        }
        for line in &restored {
            let _ = writeln!(report, "  restored: {line}");
        }
        return Some(report);
    }
    let mut report = String::new();
    for wanted_kind in ["output", "late", "error"] {
        let expected: Vec<&Json> = expected.iter().filter(|line| kind(line) == wanted_kind).collect();
        let actual: Vec<&Json> = actual.iter().filter(|line| kind(line) == wanted_kind).collect();
        let same = expected.len() == actual.len()
            && expected.iter().zip(&actual).all(|(expected, actual)| line_matches(expected, actual));
        if !same {
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
    }
    (!report.is_empty()).then(|| format!("case {}:\n{report}", case.display()))
}

#[test]
fn query_corpus() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/queries");
    let mut cases: Vec<_> = fs::read_dir(&root)
        .unwrap_or_else(|error| panic!("{}: {error}", root.display()))
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.is_dir())
        .collect();
    cases.sort();
    assert!(cases.len() >= 10, "the corpus has only {} cases", cases.len());
    let failures: Vec<String> = cases.iter().filter_map(|case| check(case)).collect();
    assert!(
        failures.is_empty(),
        "{} of {} corpus cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
