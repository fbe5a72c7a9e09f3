//! Runs every case under `tests/queries/` (format in that directory's README.md) through one
//! `check` helper and prints a line diff on mismatch. Every case runs three times: twice
//! straight through (the runs must agree) and once across a checkpoint/restore after every
//! input line (it must give the same output). Running and comparing are
//! `tidewater_sql::local`'s, the code `tidewater query test` uses.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;

use serde_json::Value as Json;
use tidewater_sql::{compile, local, JobOptions};

fn options(case: &Path) -> JobOptions {
    let mut options = match fs::read_to_string(case.join("options.json")) {
        Err(_) => JobOptions::default(),
        Ok(text) => {
            let json: Json = serde_json::from_str(&text)
                .unwrap_or_else(|error| panic!("{}: options.json: {error}", case.display()));
            local::options_from_json(&json)
                .unwrap_or_else(|error| panic!("{}: options.json: {error}", case.display()))
        }
    };
    for name in references(case).keys() {
        if !options.reference_inputs.iter().any(|known| known.eq_ignore_ascii_case(name)) {
            options.reference_inputs.push(name.clone());
        }
    }
    options
}

/// `references.json`: reference input name to the file (in the case's directory) of its rows.
fn references(case: &Path) -> serde_json::Map<String, Json> {
    let Ok(text) = fs::read_to_string(case.join("references.json")) else { return serde_json::Map::new() };
    serde_json::from_str(&text).unwrap_or_else(|error| panic!("{}: references.json: {error}", case.display()))
}

/// The reference tables the case starts with, read from their files as `query test` reads them.
fn reference_tables(case: &Path) -> local::ReferenceTables {
    let mut tables = local::ReferenceTables::default();
    for (name, file) in references(case) {
        let file = file.as_str().unwrap_or_else(|| panic!("{}: references.json: {name}", case.display()));
        let text = fs::read_to_string(case.join(file))
            .unwrap_or_else(|error| panic!("{}: {file}: {error}", case.display()));
        let rows = tidewater_sql::parse_reference_file(&text, tidewater_sql::is_csv_file_name(file))
            .unwrap_or_else(|error| panic!("{}: {file}: {error}", case.display()));
        tables.add_file_rows(&name, rows);
    }
    tables
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
    let mut tables = reference_tables(case);
    tables.load_into(&mut job).unwrap_or_else(|error| panic!("{}: {error}", case.display()));
    let input = fs::read_to_string(case.join("input.jsonl")).unwrap_or_default();
    let result = local::run_with_references(&mut job, &input, &mut tables, |job, line, tables| {
        if restore_every_line {
            let text = job.checkpoint().to_string();
            let checkpoint: Json =
                serde_json::from_str(&text).map_err(|error| format!("checkpoint: {error}"))?;
            // As a runner restarts: a fresh job, its reference tables read again (they are not
            // in the checkpoint), then the checkpoint.
            *job = fresh_job();
            tables.load_into(job).map_err(|error| format!("reloading reference data: {error}"))?;
            job.restore(&checkpoint).map_err(|error| format!("restore after input line {line}: {error}"))?;
        }
        Ok(())
    });
    result.unwrap_or_else(|error| panic!("{}: input.jsonl {error}", case.display()))
}

fn check(case: &Path) -> Option<String> {
    let expected_text = fs::read_to_string(case.join("expected.jsonl")).unwrap_or_default();
    let expected = local::parse_expected(&expected_text)
        .unwrap_or_else(|error| panic!("{}: expected.jsonl {error}", case.display()));
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
    local::diff(&expected, &actual).map(|report| format!("case {}:\n{report}", case.display()))
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
