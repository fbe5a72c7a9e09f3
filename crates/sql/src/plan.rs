//! The planner: statements to an executable plan, with every name resolved and every semantic
//! error reported with its position.
//!
//! This module holds the plan itself, the data model the runtime (`job`, `window`, `analytic`)
//! executes; the planning is split along the seam the code shows:
//!
//! - [`expr`]: expressions. Names become JSON paths, row slots or join sides; functions become
//!   enum variants; aggregates and analytic functions get state slots; windows are read from
//!   GROUP BY; constant subexpressions are folded, so that `1 / 0` is a diagnostic.
//! - [`pattern`]: MATCH_RECOGNIZE. The pattern becomes a small program for the matcher (see
//!   `matcher`), DEFINE and MEASURES expressions read other rows of the match through
//!   [`Navigation`]s.
//! - [`statement`]: statements. Where rows come from (an input or an earlier `WITH` step, two
//!   of them for a JOIN, with the time bound found in its ON clause), where they go (an output
//!   or a step), whether the statement aggregates, and the checks that span clauses.
//!
//! The planner keeps going after an error so that one compile reports all of them (up to
//! [`DIAGNOSTICS_MAX`]).

mod expr;
mod pattern;
mod statement;

use crate::agg::AggregateKind;
pub(crate) use crate::ast::SkipMode;
use crate::expr::CompiledExpr;

pub use self::expr::{LAG_OFFSET_MAX, WINDOWS_PER_EVENT_MAX};
pub use self::pattern::{NAVIGATION_OFFSET_MAX, PATTERN_STEPS_MAX};
pub(crate) use self::statement::{finish_diagnostics, plan};
pub use self::statement::{DIAGNOSTICS_MAX, STATEMENTS_MAX};

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Shape {
    /// Rows are input events (JSON objects) with no declared columns.
    Json,
    /// Rows are slots with these column names.
    Columns(Vec<String>),
    /// A JOIN's pair of rows: columns must name their side (`a.x`).
    Joined(Box<[JoinSide; 2]>),
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct JoinSide {
    /// The input or step name and its alias.
    pub(crate) prefixes: Vec<String>,
    pub(crate) shape: Shape,
}

/// An inner JOIN of the statement's source (left, side 0) with a second one (right, side 1).
#[derive(Debug, Clone)]
pub(crate) struct JoinPlan {
    pub(crate) right_source: Source,
    pub(crate) on: CompiledExpr,
    /// Bounds on `right time - left time` implied by the ON clause's DATEDIFF, widened by one
    /// unit each way (DATEDIFF counts unit boundaries); the ON clause itself decides exactly.
    pub(crate) min_diff_ms: i64,
    pub(crate) max_diff_ms: i64,
    /// The DATEDIFF unit and the most units the right side may be after the left one: a right
    /// row at `b` can match a left row at `a` only while `floor(b / unit) <= floor(a / unit) +
    /// upper_units`.
    pub(crate) unit_ms: i64,
    pub(crate) upper_units: i64,
    pub(crate) left_outer: bool,
}

impl JoinPlan {
    /// The last right-side time that could still match a left row at `left_ms`.
    pub(crate) fn last_match_ms(&self, left_ms: i64) -> i64 {
        left_ms
            .div_euclid(self.unit_ms)
            .saturating_add(self.upper_units)
            .saturating_add(1)
            .saturating_mul(self.unit_ms)
            .saturating_sub(1)
    }
}

/// A JOIN with reference data (`JobOptions::reference_inputs`): each row of the statement's
/// source is joined with the table's current rows whose equality columns match, with no time
/// bound and no state of its own.
#[derive(Debug, Clone)]
pub(crate) struct ReferenceJoinPlan {
    /// Index into `Plan::references`.
    pub(crate) reference_idx: usize,
    /// The ON clause's equality columns: the stream side's, read from the row with an empty
    /// right side, and the table side's, read from a table row with an empty left side.
    pub(crate) stream_keys: Vec<CompiledExpr>,
    pub(crate) table_keys: Vec<CompiledExpr>,
    /// The whole ON clause, checked on every candidate pair unless `on_is_keys`.
    pub(crate) on: CompiledExpr,
    /// The ON clause is nothing but the equalities of the lookup key, which every row the
    /// index finds satisfies: it is then not evaluated again.
    pub(crate) on_is_keys: bool,
    pub(crate) left_outer: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    Input(usize),
    Step(usize),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    Output(String),
    Step(String),
}

impl Target {
    pub(crate) fn name(&self) -> &str {
        match self {
            Target::Output(name) | Target::Step(name) => name,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WindowSpec {
    Tumbling { size_ms: i64 },
    Hopping { size_ms: i64, hop_ms: i64 },
    Sliding { size_ms: i64 },
    Session { timeout_ms: i64, max_duration_ms: i64 },
}

#[derive(Debug, Clone)]
pub(crate) struct AggregateSpec {
    pub(crate) kind: AggregateKind,
    /// `None` for `COUNT(*)`.
    pub(crate) arg: Option<CompiledExpr>,
}

#[derive(Debug, Clone)]
pub(crate) struct AggregatePlan {
    pub(crate) keys: Vec<CompiledExpr>,
    pub(crate) aggregates: Vec<AggregateSpec>,
    pub(crate) window: WindowSpec,
    /// `SessionWindow(...) OVER (PARTITION BY ...)`: sessions are per value of these.
    pub(crate) session_partition: Vec<CompiledExpr>,
    /// HAVING and the SELECT list read the group row: the keys, then the aggregate results.
    pub(crate) having: Option<CompiledExpr>,
    pub(crate) items: Vec<CompiledExpr>,
}

#[derive(Debug, Clone)]
pub(crate) enum Body {
    /// `SELECT *` or `SELECT *, expr AS name, ...`: the row as it came, then the extra columns.
    Star {
        names: Vec<String>,
        extras: Vec<CompiledExpr>,
    },
    Project(Vec<CompiledExpr>),
    Aggregate(Box<AggregatePlan>),
}

#[derive(Debug, Clone)]
pub(crate) enum AnalyticKind {
    Lag { value: CompiledExpr, offset: usize, default: CompiledExpr },
    Last { value: CompiledExpr },
    IsFirst { size_ms: i64 },
    Moving(AggregateSpec),
}

#[derive(Debug, Clone)]
pub(crate) struct AnalyticPlan {
    pub(crate) kind: AnalyticKind,
    pub(crate) partition_by: Vec<CompiledExpr>,
    pub(crate) duration_ms: Option<i64>,
    pub(crate) when: Option<CompiledExpr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ExpandKind {
    /// `GetArrayElements`: `{ArrayIndex, ArrayValue}` per element.
    ArrayElements,
    /// `GetRecordProperties`: `{PropertyName, PropertyValue}` per field.
    RecordProperties,
}

/// `CROSS APPLY`: the statement sees one row per element, the element under `alias`.
#[derive(Debug, Clone)]
pub(crate) struct Expand {
    pub(crate) kind: ExpandKind,
    pub(crate) arg: CompiledExpr,
    pub(crate) alias: String,
}

#[derive(Debug, Clone)]
pub(crate) struct StatementPlan {
    pub(crate) target: Target,
    pub(crate) source: Source,
    pub(crate) expand: Option<Expand>,
    /// The inputs this statement's rows come from (two for a JOIN of two inputs).
    pub(crate) roots: Vec<usize>,
    pub(crate) join: Option<JoinPlan>,
    pub(crate) reference_join: Option<ReferenceJoinPlan>,
    pub(crate) output_shape: Shape,
    pub(crate) filter: Option<CompiledExpr>,
    pub(crate) analytics: Vec<AnalyticPlan>,
    /// MATCH_RECOGNIZE: rows go through the matcher first, and the statement sees one row per
    /// match (the partition columns, then the measures).
    pub(crate) matcher: Option<Box<MatchPlan>>,
    pub(crate) body: Body,
    /// Statements reading this one's rows (only for `WITH` steps), with the JOIN side they read
    /// it as (0 unless it is the right side of a JOIN).
    pub(crate) consumers: Vec<(usize, usize)>,
}

#[derive(Debug, Clone)]
pub(crate) struct InputPlan {
    pub(crate) name: String,
    pub(crate) timestamp_by: Option<CompiledExpr>,
    /// `TIMESTAMP BY ... OVER key, ...`: each value of these has its own event-time clock
    /// (a substream). Empty: one clock per partition, as usual.
    pub(crate) over: Vec<CompiledExpr>,
    /// The canonical text of the TIMESTAMP BY expression (with its OVER keys), to check every
    /// statement agrees.
    pub(crate) timestamp_text: Option<String>,
}

/// One step of a compiled row pattern. The matcher runs it as a Pike VM: a partial match is a
/// position in this program plus the variables its rows were mapped to; `Split` forks it, the
/// first branch being the one the pattern prefers (greedy quantifiers prefer one more
/// iteration, alternation its left side).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Instruction {
    /// Map the next row to this variable, if its DEFINE condition holds.
    Consume(u16),
    Split(u32, u32),
    Jump(u32),
    Match,
}

/// A value a DEFINE or MEASURES expression reads from the rows of the match rather than from
/// the current row; compiled expressions read it as `CompiledExpr::Analytic(index)`.
#[derive(Debug, Clone)]
pub(crate) enum Navigation {
    /// `FIRST(X.e, n)`, `LAST(X.e, n)` and a bare `X.e`: `value` in the n-th row mapped to X,
    /// counted from the first or from the last (`variable` None: any row of the match).
    Offset { variable: Option<u16>, from_last: bool, offset: usize, value: CompiledExpr },
    /// `COUNT/SUM/AVG/MIN/MAX(...)(X.e)` over the rows mapped to X (`None`: all rows).
    Aggregate { variable: Option<u16>, kind: AggregateKind, arg: Option<CompiledExpr> },
    /// `Classifier()`: the variable of each row of the match, as an array of names.
    Classifier,
}

/// A DEFINE condition: true for a row that may be mapped to the variable.
#[derive(Debug, Clone)]
pub(crate) struct Condition {
    pub(crate) expr: CompiledExpr,
    pub(crate) navigations: Vec<Navigation>,
}

/// A compiled `MATCH_RECOGNIZE`.
#[derive(Debug, Clone)]
pub(crate) struct MatchPlan {
    /// LIMIT DURATION: a match's last row is at most this long after its first.
    pub(crate) duration_ms: i64,
    pub(crate) partition_by: Vec<CompiledExpr>,
    pub(crate) skip: SkipMode,
    pub(crate) program: Vec<Instruction>,
    /// Pattern variables in order of first appearance (`.` among them when the pattern uses it).
    pub(crate) variables: Vec<String>,
    /// Per variable: its DEFINE condition (`None`: any row).
    pub(crate) conditions: Vec<Option<Condition>>,
    /// No condition reads another row than the current one. Two partial matches at the same
    /// program position then accept exactly the same continuations, so only the one the
    /// pattern prefers needs to be kept.
    pub(crate) row_local: bool,
    /// The partition columns that appear in the output row (a measure of the same name
    /// replaces one), by index into `partition_by`.
    pub(crate) partition_outputs: Vec<usize>,
    pub(crate) measures: Vec<CompiledExpr>,
    pub(crate) measure_navigations: Vec<Navigation>,
}

#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub(crate) inputs: Vec<InputPlan>,
    /// The reference inputs, as `JobOptions::reference_inputs` names them.
    pub(crate) references: Vec<String>,
    pub(crate) statements: Vec<StatementPlan>,
}
