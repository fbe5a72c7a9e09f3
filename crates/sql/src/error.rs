//! What the engine reports back: compile-time diagnostics with positions, and per-event errors
//! and late events at run time. None of these stop a job; a bad event is reported and skipped.

use std::fmt;

/// A line and column in the query text, both starting at 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Position {
    pub line: u32,
    pub column: u32,
}

/// One problem found while compiling a query, at the place it was found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{line}:{column}: {message}")]
pub struct Diagnostic {
    pub line: u32,
    pub column: u32,
    pub message: String,
}

impl Diagnostic {
    pub(crate) fn new(position: Position, message: impl Into<String>) -> Diagnostic {
        Diagnostic { line: position.line, column: position.column, message: message.into() }
    }
}

/// An event that one statement could not process (a type error, an unparseable timestamp, a
/// state limit). The statement skipped the event; the job carries on.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{target}: {message}")]
pub struct EventError {
    /// Index of the statement (0-based, in query order, `WITH` steps included), or `None` when
    /// the event failed before any statement saw it (not an object, bad TIMESTAMP BY).
    pub statement_idx: Option<usize>,
    /// The output or `WITH` step the statement writes to, or the input for input-level errors.
    pub target: String,
    pub message: String,
}

/// What happened to an event that arrived behind the watermark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LateAction {
    /// Its timestamp was moved forward to `adjusted_to_ms` and it was processed.
    Adjusted {
        adjusted_to_ms: i64,
    },
    Dropped,
}

impl fmt::Display for LateAction {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LateAction::Adjusted { .. } => formatter.write_str("adjusted"),
            LateAction::Dropped => formatter.write_str("dropped"),
        }
    }
}

/// An event older than the watermark minus the late-arrival tolerance, handed back so that the
/// caller can send it to a dead-letter topic.
#[derive(Debug, Clone, PartialEq)]
pub struct LateEvent {
    pub input: String,
    pub partition: i32,
    pub event: serde_json::Value,
    pub timestamp_ms: i64,
    /// The boundary it fell behind: events before it were late.
    pub watermark_ms: i64,
    pub action: LateAction,
}
