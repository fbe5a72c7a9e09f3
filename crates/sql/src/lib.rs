//! Tidewater's streaming SQL engine: a practical subset of the Azure Stream Analytics (ASA)
//! query language over event time.
//!
//! Architecture invariant: this crate does no I/O. It has no async runtime, no files, no
//! sockets and no clock: event time comes from the events, processing time from the caller.
//! Given the same calls in the same order, a [`Job`] returns the same results, which is what
//! makes exactly-once jobs (replay from a checkpoint) possible for the runner that drives it.
//!
//! ```
//! use tidewater_sql::{compile, JobOptions};
//! let mut job = compile(
//!     "SELECT deviceId, AVG(temp) AS avg_temp INTO alerts FROM telemetry TIMESTAMP BY ts \
//!      GROUP BY deviceId, TumblingWindow(second, 10) HAVING AVG(temp) > 30",
//!     JobOptions::default(),
//! ).expect("valid query");
//! let event = serde_json::json!({"deviceId": "d1", "temp": 35, "ts": "2026-01-01T00:00:05Z"});
//! assert!(job.push("telemetry", 0, &event, 0).outputs.is_empty());
//! let step = job.finish();
//! assert_eq!(step.outputs[0].row, serde_json::json!({"deviceId": "d1", "avg_temp": 35.0}));
//! ```
//!
//! The full description of the language subset, the event-time semantics and the known gaps
//! is in this crate's README.md.
//!
//! Module map: `lexer` and `parser` turn text into an `ast`;
//! `plan` resolves names into compiled expressions (`expr`), aggregate specs (`agg`) and
//! MATCH_RECOGNIZE programs; `job` runs the plan with `window` operators driven by per-input
//! (or per-key) `watermark`s, `analytic` function state, JOIN buffers and the MATCH_RECOGNIZE
//! `matcher`; `checkpoint` saves and restores all of that state. `reference` holds the
//! reference tables JOINs look rows up in (outside checkpoints) and parses reference files.

mod agg;
mod analytic;
mod ast;
mod checkpoint;
mod error;
mod expr;
mod job;
mod lexer;
pub mod local;
mod matcher;
mod parser;
mod plan;
mod reference;
mod scan;
mod time;
mod value;
mod watermark;
mod window;

pub use crate::checkpoint::{CheckpointError, CHECKPOINT_VERSION};
pub use crate::error::{Diagnostic, EventError, LateAction, LateEvent, Position};
pub use crate::job::{Job, Output, Step};
pub use crate::matcher::PARTIAL_MATCHES_PER_KEY_MAX;
pub use crate::parser::EXPRESSION_DEPTH_MAX;
pub use crate::plan::{
    DIAGNOSTICS_MAX, LAG_OFFSET_MAX, NAVIGATION_OFFSET_MAX, PATTERN_STEPS_MAX, STATEMENTS_MAX,
    WINDOWS_PER_EVENT_MAX,
};
pub use crate::reference::{
    is_csv_file_name, parse_csv_rows, parse_json_rows, parse_reference_file, ReferenceError,
    ReferenceFileError, ReferenceRow, DEFAULT_MAX_REFERENCE_ROWS, REFERENCE_FILE_BYTES_MAX,
};
pub use crate::time::{civil_from_days, days_from_civil, format_timestamp, parse_timestamp};

/// The largest query text [`compile`] accepts, in bytes.
pub const QUERY_BYTES_MAX: usize = 1 << 20;
/// Default for [`JobOptions::max_state_entries`].
pub const DEFAULT_MAX_STATE_ENTRIES: usize = 1_000_000;
/// Default for [`JobOptions::idle_key_timeout_ms`]: five minutes.
pub const DEFAULT_IDLE_KEY_TIMEOUT_MS: i64 = 300_000;

/// What happens to an event that arrives behind the close boundary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LatePolicy {
    /// Move its timestamp forward to the watermark and process it (ASA's default).
    #[default]
    Adjust,
    /// Leave it out.
    Drop,
}

/// How a job treats time and how much state it may hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobOptions {
    /// How far behind the newest event an event may be and still count as in order.
    pub out_of_order_tolerance_ms: i64,
    /// Extra delay on top of the watermark before windows close and events count as late.
    pub late_arrival_tolerance_ms: i64,
    pub late_policy: LatePolicy,
    /// A partition silent for longer than this (processing time) stops holding back the
    /// watermark. `None`: partitions never go idle.
    pub idle_partition_timeout_ms: Option<i64>,
    /// Per statement: the most open window groups, buffered window events or analytic
    /// partitions. An event that would exceed it is reported as an `EventError` and skipped.
    pub max_state_entries: usize,
    /// For an input read with `TIMESTAMP BY ... OVER key`: a key that has sent nothing for
    /// longer than this (processing time) is closed: its windows and matches are emitted and
    /// its state dropped.
    pub idle_key_timeout_ms: i64,
    /// When set, FROM names must be among these (case-insensitive).
    pub known_inputs: Option<Vec<String>>,
    /// Inputs that are reference data (tables joined "as of now", see `reference`), not
    /// streams: each can only be the right side of a JOIN on equal columns. The runner loads
    /// them with [`Job::update_reference`].
    pub reference_inputs: Vec<String>,
    /// The most rows one reference table may hold; an update adding a key beyond it is refused.
    pub max_reference_rows: usize,
    /// When set, INTO names must be among these (case-insensitive).
    pub known_outputs: Option<Vec<String>>,
}

impl Default for JobOptions {
    fn default() -> JobOptions {
        JobOptions {
            out_of_order_tolerance_ms: 0,
            late_arrival_tolerance_ms: 0,
            late_policy: LatePolicy::Adjust,
            idle_partition_timeout_ms: None,
            max_state_entries: DEFAULT_MAX_STATE_ENTRIES,
            idle_key_timeout_ms: DEFAULT_IDLE_KEY_TIMEOUT_MS,
            known_inputs: None,
            known_outputs: None,
            reference_inputs: Vec::new(),
            max_reference_rows: DEFAULT_MAX_REFERENCE_ROWS,
        }
    }
}

/// The end of the tumbling window `(end - size, end]`, aligned to the epoch, holding `millis`.
pub(crate) fn window_end(millis: i64, size_ms: i64) -> i64 {
    let floor = millis.div_euclid(size_ms).saturating_mul(size_ms);
    if floor == millis {
        floor
    } else {
        floor.saturating_add(size_ms)
    }
}

/// Compiles a job. On failure, returns every diagnostic found (sorted by position, at most
/// [`DIAGNOSTICS_MAX`] and a summary line).
pub fn compile(sql: &str, options: JobOptions) -> Result<Job, Vec<Diagnostic>> {
    let start = Position { line: 1, column: 1 };
    if sql.len() > QUERY_BYTES_MAX {
        return Err(vec![Diagnostic::new(
            start,
            format!("the query is longer than {QUERY_BYTES_MAX} bytes"),
        )]);
    }
    let mut option_errors = Vec::new();
    for (name, value) in [
        ("out_of_order_tolerance_ms", options.out_of_order_tolerance_ms),
        ("late_arrival_tolerance_ms", options.late_arrival_tolerance_ms),
        ("idle_partition_timeout_ms", options.idle_partition_timeout_ms.unwrap_or(0)),
        ("idle_key_timeout_ms", options.idle_key_timeout_ms),
    ] {
        if value < 0 {
            option_errors
                .push(Diagnostic::new(start, format!("option {name} must not be negative, got {value}")));
        }
    }
    if !option_errors.is_empty() {
        return Err(option_errors);
    }
    let (tokens, mut diagnostics) = lexer::lex(sql);
    let mut parser = parser::Parser::new(tokens);
    let statements = parser.parse_job();
    diagnostics.extend(parser.diagnostics);
    if statements.is_empty() && diagnostics.is_empty() {
        return Err(vec![Diagnostic::new(start, "the query has no statements")]);
    }
    let planned = plan::plan(&statements, &options);
    match planned {
        Ok(plan) if diagnostics.is_empty() => {
            Ok(Job::new(plan, &options, checkpoint::fingerprint(sql, &options)))
        }
        Ok(_) => Err(plan::finish_diagnostics(diagnostics)),
        Err(plan_diagnostics) => {
            diagnostics.extend(plan_diagnostics);
            Err(plan::finish_diagnostics(diagnostics))
        }
    }
}
