//! The planner: statements to an executable plan, with every name resolved and every semantic
//! error reported with its position.
//!
//! It decides, per statement, where rows come from (an input or an earlier `WITH` step, two of
//! them for a JOIN, with the time bound found in its ON clause), where they go (an output or a
//! step), whether the statement aggregates (and then over which window) and which analytic
//! functions it keeps state for. Every expression is compiled once into a [`CompiledExpr`], with
//! constant subexpressions folded. The planner keeps going after an error so that one compile
//! reports all of them (up to [`MAX_DIAGNOSTICS`]).

use crate::agg::AggregateKind;
use crate::ast::{BinaryOp, CrossApply, Expr, ExprKind, Literal, Select, SelectItem, Statement, UnaryOp};
use crate::error::{Diagnostic, Position};
use crate::expr::{CastType, ColumnRef, CompiledExpr, Context, Row, Scalar};
use crate::time::TimeUnit;
use crate::value::Value;
use crate::JobOptions;

/// The most diagnostics one compile returns; the rest are summarised in one last message.
pub const MAX_DIAGNOSTICS: usize = 100;
/// The most hopping windows one event may fall into (`size / hop`), which bounds the work an
/// event causes.
pub const MAX_WINDOWS_PER_EVENT: i64 = 10_000;
/// The largest `n` of `LAG(x, n)`.
pub const MAX_LAG_OFFSET: i64 = 10_000;
/// The most statements (CTEs included) in one job.
pub const MAX_STATEMENTS: usize = 1_000;

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

/// What `join_bound` finds in an ON clause.
struct JoinBound {
    min_diff_ms: i64,
    max_diff_ms: i64,
    unit_ms: i64,
    upper_units: i64,
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
    pub(crate) output_shape: Shape,
    pub(crate) filter: Option<CompiledExpr>,
    pub(crate) analytics: Vec<AnalyticPlan>,
    pub(crate) body: Body,
    /// Statements reading this one's rows (only for `WITH` steps), with the JOIN side they read
    /// it as (0 unless it is the right side of a JOIN).
    pub(crate) consumers: Vec<(usize, usize)>,
}

#[derive(Debug, Clone)]
pub(crate) struct InputPlan {
    pub(crate) name: String,
    pub(crate) timestamp_by: Option<CompiledExpr>,
    /// The canonical text of the TIMESTAMP BY expression, to check every statement agrees.
    timestamp_text: Option<String>,
}

#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub(crate) inputs: Vec<InputPlan>,
    pub(crate) statements: Vec<StatementPlan>,
}

/// What expressions in the current clause may refer to.
struct Scope<'a> {
    shape: &'a Shape,
    /// Names that may prefix a column (`i.x` with `FROM input i`).
    prefixes: Vec<String>,
    clause: &'static str,
    /// In an aggregating SELECT or HAVING: the canonical GROUP BY keys and the aggregates found.
    group: Option<(&'a [String], &'a mut Vec<AggregateSpec>)>,
    /// Where analytic functions may appear (WHERE and SELECT of non-aggregating statements).
    analytics: Option<&'a mut Vec<AnalyticPlan>>,
    inside_aggregate: bool,
}

struct Planner<'a> {
    options: &'a JobOptions,
    diagnostics: Vec<Diagnostic>,
}

fn is_window_name(name: &str) -> bool {
    matches!(
        name.to_ascii_lowercase().as_str(),
        "tumblingwindow"
            | "tumbling"
            | "hoppingwindow"
            | "hopping"
            | "slidingwindow"
            | "sliding"
            | "sessionwindow"
            | "session"
    )
}

fn is_analytic_name(name: &str) -> bool {
    matches!(name.to_ascii_lowercase().as_str(), "lag" | "last" | "isfirst")
}

/// True if the expression contains an aggregate call outside an OVER clause.
fn contains_aggregate(expr: &Expr) -> bool {
    let mut found = false;
    visit(expr, &mut |node| {
        if let ExprKind::Call { name, over, .. } = &node.kind {
            found |= name.eq_ignore_ascii_case("TopOne")
                || name.eq_ignore_ascii_case("PERCENTILE_CONT")
                || name.eq_ignore_ascii_case("PERCENTILE_DISC")
                || (over.is_none() && AggregateKind::is_aggregate_name(name));
        }
    });
    found
}

fn visit(expr: &Expr, visitor: &mut dyn FnMut(&Expr)) {
    visitor(expr);
    let mut children: Vec<&Expr> = Vec::new();
    match &expr.kind {
        ExprKind::Literal(_) | ExprKind::Path(_) => {}
        ExprKind::Call { args, .. } => children.extend(args),
        ExprKind::Unary { operand, .. }
        | ExprKind::IsNull { operand, .. }
        | ExprKind::Cast { operand, .. } => children.push(operand),
        ExprKind::Binary { left, right, .. } => children.extend([&**left, &**right]),
        ExprKind::Between { operand, low, high, .. } => children.extend([&**operand, &**low, &**high]),
        ExprKind::InList { operand, list, .. } => {
            children.push(operand);
            children.extend(list);
        }
        ExprKind::Like { operand, pattern, .. } => children.extend([&**operand, &**pattern]),
        ExprKind::Case { operand, whens, otherwise } => {
            children.extend(operand.as_deref());
            for (condition, result) in whens {
                children.extend([condition, result]);
            }
            children.extend(otherwise.as_deref());
        }
    }
    for child in children {
        visit(child, visitor);
    }
}

/// The canonical text of `expr` with input-alias prefixes removed from column paths, so that
/// `i.deviceId` in SELECT matches `deviceId` in GROUP BY.
fn canonical_without_prefixes(expr: &Expr, prefixes: &[String]) -> String {
    let mut has_prefixed_path = false;
    visit(expr, &mut |node| {
        if let ExprKind::Path(segments) = &node.kind {
            has_prefixed_path |=
                segments.len() > 1 && prefixes.iter().any(|prefix| prefix.eq_ignore_ascii_case(&segments[0]));
        }
    });
    if !has_prefixed_path {
        return expr.canonical();
    }
    let mut stripped = expr.clone();
    strip_prefixes(&mut stripped, prefixes);
    stripped.canonical()
}

fn strip_prefixes(expr: &mut Expr, prefixes: &[String]) {
    let strip = |child: &mut Expr| strip_prefixes(child, prefixes);
    match &mut expr.kind {
        ExprKind::Literal(_) => {}
        ExprKind::Path(segments) => {
            if segments.len() > 1 && prefixes.iter().any(|prefix| prefix.eq_ignore_ascii_case(&segments[0])) {
                segments.remove(0);
            }
        }
        ExprKind::Call { args, .. } => args.iter_mut().for_each(strip),
        ExprKind::Unary { operand, .. }
        | ExprKind::IsNull { operand, .. }
        | ExprKind::Cast { operand, .. } => strip(operand),
        ExprKind::Binary { left, right, .. } | ExprKind::Like { operand: left, pattern: right, .. } => {
            strip(left);
            strip(right);
        }
        ExprKind::Between { operand, low, high, .. } => {
            strip(operand);
            strip(low);
            strip(high);
        }
        ExprKind::InList { operand, list, .. } => {
            strip(operand);
            list.iter_mut().for_each(strip);
        }
        ExprKind::Case { operand, whens, otherwise } => {
            if let Some(operand) = operand {
                strip(operand);
            }
            for (condition, result) in whens {
                strip(condition);
                strip(result);
            }
            if let Some(otherwise) = otherwise {
                strip(otherwise);
            }
        }
    }
}

/// The name an unnamed SELECT expression gets in the output row.
fn default_column_name(expr: &Expr, index: usize) -> String {
    match &expr.kind {
        ExprKind::Path(segments) => segments.last().cloned().unwrap_or_default(),
        ExprKind::Call { name, .. } if name.eq_ignore_ascii_case("System.Timestamp") => {
            "timestamp".to_string()
        }
        ExprKind::Call { name, .. } => name.to_ascii_lowercase(),
        _ => format!("column{}", index + 1),
    }
}

impl Planner<'_> {
    fn error(&mut self, position: Position, message: impl Into<String>) {
        self.diagnostics.push(Diagnostic::new(position, message));
    }

    fn unit(&mut self, expr: &Expr) -> Option<TimeUnit> {
        if let ExprKind::Path(segments) = &expr.kind {
            if let [name] = segments.as_slice() {
                if let Some(unit) = TimeUnit::parse(name) {
                    return Some(unit);
                }
            }
        }
        self.error(
            expr.position,
            format!(
                "expected a time unit (millisecond, second, minute, hour, day), found {}",
                expr.canonical()
            ),
        );
        None
    }

    fn positive_int(&mut self, expr: &Expr, what: &str) -> Option<i64> {
        match &expr.kind {
            ExprKind::Literal(Literal::Int(value)) if *value > 0 => Some(*value),
            _ => {
                self.error(
                    expr.position,
                    format!("{what} must be a positive integer literal, found {}", expr.canonical()),
                );
                None
            }
        }
    }

    fn duration(&mut self, unit: &Expr, size: &Expr, what: &str) -> Option<i64> {
        let unit = self.unit(unit);
        let count = self.positive_int(size, what)?;
        let millis = count.checked_mul(unit?.millis());
        if millis.is_none() {
            self.error(size.position, format!("{what} is too large"));
        }
        millis
    }

    fn compile_args(&mut self, args: &[Expr], scope: &mut Scope<'_>) -> Option<Vec<CompiledExpr>> {
        let compiled: Vec<Option<CompiledExpr>> = args.iter().map(|arg| self.compile(arg, scope)).collect();
        compiled.into_iter().collect()
    }

    fn compile_box(&mut self, expr: &Expr, scope: &mut Scope<'_>) -> Option<Box<CompiledExpr>> {
        self.compile(expr, scope).map(Box::new)
    }

    /// Compiles one expression in `scope`, recording a diagnostic for each problem found.
    fn compile(&mut self, expr: &Expr, scope: &mut Scope<'_>) -> Option<CompiledExpr> {
        let compiled = self.compile_node(expr, scope)?;
        self.fold(compiled, expr.position)
    }

    /// Constant folding: an operator or function whose operands are all constants is evaluated
    /// now, so `1 / 0` or `UPPER(5)` is a diagnostic rather than an error on every event.
    fn fold(&mut self, compiled: CompiledExpr, position: Position) -> Option<CompiledExpr> {
        fn constant(expr: &CompiledExpr) -> bool {
            matches!(expr, CompiledExpr::Const(_))
        }
        let foldable = match &compiled {
            CompiledExpr::Neg(operand)
            | CompiledExpr::Not(operand)
            | CompiledExpr::IsNull(operand, _)
            | CompiledExpr::Cast { operand, .. } => constant(operand),
            CompiledExpr::And(left, right)
            | CompiledExpr::Or(left, right)
            | CompiledExpr::Binary(_, left, right) => constant(left) && constant(right),
            CompiledExpr::Between { operand, low, high, .. } => {
                constant(operand) && constant(low) && constant(high)
            }
            CompiledExpr::InList { operand, list, .. } => constant(operand) && list.iter().all(constant),
            CompiledExpr::Like { operand, pattern, .. } => constant(operand) && constant(pattern),
            CompiledExpr::Case { operand, whens, otherwise } => {
                operand.as_deref().is_none_or(constant)
                    && whens.iter().all(|(condition, result)| constant(condition) && constant(result))
                    && constant(otherwise)
            }
            CompiledExpr::Call(_, args) => args.iter().all(constant),
            _ => false,
        };
        if !foldable {
            return Some(compiled);
        }
        let context = Context { row: Row::Slots(&[]), timestamp_ms: 0, analytic: &[] };
        match compiled.eval(&context) {
            Ok(value) => Some(CompiledExpr::Const(value)),
            Err(message) => {
                self.error(position, message);
                None
            }
        }
    }

    fn compile_node(&mut self, expr: &Expr, scope: &mut Scope<'_>) -> Option<CompiledExpr> {
        if let Some((keys, _)) = &scope.group {
            if !scope.inside_aggregate {
                let canonical = canonical_without_prefixes(expr, &scope.prefixes);
                if let Some(index) = keys.iter().position(|key| *key == canonical) {
                    return Some(CompiledExpr::Column(ColumnRef::Slot { index, rest: Vec::new() }));
                }
            }
        }
        let position = expr.position;
        let compiled = match &expr.kind {
            ExprKind::Literal(literal) => CompiledExpr::Const(match literal {
                Literal::Null => Value::Null,
                Literal::Int(value) => Value::Int(*value),
                Literal::Float(value) => Value::Float(*value),
                Literal::Str(text) => Value::Str(text.clone()),
            }),
            // `System.Timestamp` without parentheses, as older ASA examples write it.
            ExprKind::Path(segments)
                if segments.len() == 2
                    && segments[0].eq_ignore_ascii_case("System")
                    && segments[1].eq_ignore_ascii_case("Timestamp") =>
            {
                CompiledExpr::Timestamp
            }
            ExprKind::Path(segments) => return self.column(segments, position, scope),
            ExprKind::Call { name, args, star, distinct, over } => {
                return self.call(expr, name, args, *star, *distinct, over.as_deref(), scope)
            }
            ExprKind::Unary { op, operand } => {
                let operand = self.compile_box(operand, scope)?;
                match op {
                    UnaryOp::Neg => CompiledExpr::Neg(operand),
                    UnaryOp::Not => CompiledExpr::Not(operand),
                }
            }
            ExprKind::Binary { op, left, right } => {
                let left = self.compile_box(left, scope);
                let right = self.compile_box(right, scope);
                let (left, right) = (left?, right?);
                match op {
                    BinaryOp::And => CompiledExpr::And(left, right),
                    BinaryOp::Or => CompiledExpr::Or(left, right),
                    op => CompiledExpr::Binary(*op, left, right),
                }
            }
            ExprKind::IsNull { operand, negated } => {
                CompiledExpr::IsNull(self.compile_box(operand, scope)?, *negated)
            }
            ExprKind::Between { operand, low, high, negated } => {
                let operand = self.compile_box(operand, scope);
                let low = self.compile_box(low, scope);
                let high = self.compile_box(high, scope);
                CompiledExpr::Between { operand: operand?, low: low?, high: high?, negated: *negated }
            }
            ExprKind::InList { operand, list, negated } => {
                let operand = self.compile_box(operand, scope);
                let list = self.compile_args(list, scope);
                CompiledExpr::InList { operand: operand?, list: list?, negated: *negated }
            }
            ExprKind::Like { operand, pattern, negated } => {
                let operand = self.compile_box(operand, scope);
                let pattern = self.compile_box(pattern, scope);
                CompiledExpr::Like { operand: operand?, pattern: pattern?, negated: *negated }
            }
            ExprKind::Case { operand, whens, otherwise } => {
                let operand = operand.as_ref().map(|operand| self.compile_box(operand, scope));
                let mut compiled_whens = Vec::new();
                let mut failed = false;
                for (condition, result) in whens {
                    let condition = self.compile(condition, scope);
                    let result = self.compile(result, scope);
                    match (condition, result) {
                        (Some(condition), Some(result)) => compiled_whens.push((condition, result)),
                        _ => failed = true,
                    }
                }
                let otherwise = match otherwise {
                    Some(otherwise) => self.compile_box(otherwise, scope),
                    None => Some(Box::new(CompiledExpr::Const(Value::Null))),
                };
                let operand = match operand {
                    None => None,
                    Some(None) => return None,
                    Some(Some(operand)) => Some(operand),
                };
                if failed {
                    return None;
                }
                CompiledExpr::Case { operand, whens: compiled_whens, otherwise: otherwise? }
            }
            ExprKind::Cast { operand, type_name, is_try } => {
                let operand = self.compile_box(operand, scope);
                let Some(to) = CastType::parse(type_name) else {
                    self.error(position, format!("unknown type '{type_name}' (expected bigint, float, nvarchar(max), datetime or bit)"));
                    return None;
                };
                CompiledExpr::Cast { operand: operand?, to, is_try: *is_try }
            }
        };
        Some(compiled)
    }

    fn column(
        &mut self,
        segments: &[String],
        position: Position,
        scope: &mut Scope<'_>,
    ) -> Option<CompiledExpr> {
        if scope.group.is_some() && !scope.inside_aggregate {
            self.error(
                position,
                format!(
                    "column '{}' in {} must appear in GROUP BY or inside an aggregate",
                    segments.join("."),
                    scope.clause
                ),
            );
            return None;
        }
        if let Shape::Joined(sides) = scope.shape {
            let side = sides.iter().position(|side| {
                segments.len() > 1
                    && side.prefixes.iter().any(|prefix| prefix.eq_ignore_ascii_case(&segments[0]))
            });
            let Some(side) = side else {
                self.error(
                    position,
                    format!(
                        "column '{}' in a JOIN must name its side, as in {}.{}",
                        segments.join("."),
                        sides[0].prefixes.last().map_or("a", String::as_str),
                        segments.join(".")
                    ),
                );
                return None;
            };
            let mut side_scope = Scope {
                shape: &sides[side].shape,
                prefixes: Vec::new(),
                clause: scope.clause,
                group: None,
                analytics: None,
                inside_aggregate: false,
            };
            let inner = match self.column(&segments[1..], position, &mut side_scope)? {
                CompiledExpr::Column(inner) => inner,
                _ => return None,
            };
            return Some(CompiledExpr::Column(ColumnRef::Side { side, inner: Box::new(inner) }));
        }
        let mut path = segments;
        if path.len() > 1 && scope.prefixes.iter().any(|prefix| prefix.eq_ignore_ascii_case(&path[0])) {
            path = &path[1..];
        }
        match scope.shape {
            Shape::Joined(_) => None,
            Shape::Json => Some(CompiledExpr::Column(ColumnRef::Field(path.to_vec()))),
            Shape::Columns(names) => {
                let Some(index) = names.iter().position(|name| name.eq_ignore_ascii_case(&path[0])) else {
                    self.error(
                        position,
                        format!("unknown column '{}' (the step has: {})", path[0], names.join(", ")),
                    );
                    return None;
                };
                Some(CompiledExpr::Column(ColumnRef::Slot { index, rest: path[1..].to_vec() }))
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn call(
        &mut self,
        expr: &Expr,
        name: &str,
        args: &[Expr],
        star: bool,
        distinct: bool,
        over: Option<&crate::ast::Over>,
        scope: &mut Scope<'_>,
    ) -> Option<CompiledExpr> {
        let position = expr.position;
        let lower = name.to_ascii_lowercase();
        if lower == "system.timestamp" {
            if !args.is_empty() {
                self.error(position, "System.Timestamp() takes no arguments");
            }
            return Some(CompiledExpr::Timestamp);
        }
        if is_window_name(&lower) {
            self.error(position, format!("window function {name} is only allowed in GROUP BY"));
            return None;
        }
        if star && lower != "count" {
            self.error(position, format!("'*' is only allowed in COUNT(*), not in {name}"));
            return None;
        }
        if lower == "topone" {
            return self.top_one(expr, args, over, scope);
        }
        if lower == "percentile_cont" || lower == "percentile_disc" {
            return self.percentile(expr, &lower, args, over, scope);
        }
        if AggregateKind::is_aggregate_name(&lower) {
            if let Some(over) = over {
                return self.analytic(expr, &lower, args, star, distinct, Some(over), scope);
            }
            return self.aggregate(name, args, star, distinct, position, scope);
        }
        if distinct {
            self.error(position, format!("DISTINCT is only allowed in COUNT, not in {name}"));
        }
        if is_analytic_name(&lower) {
            return self.analytic(expr, &lower, args, star, distinct, over, scope);
        }
        if over.is_some() {
            self.error(position, format!("{name} is not an analytic function and cannot take OVER"));
            return None;
        }
        if lower == "datediff" || lower == "dateadd" {
            if args.len() != 3 {
                self.error(position, format!("{name} takes 3 arguments (unit, ...), found {}", args.len()));
                return None;
            }
            let unit = self.unit(&args[0]);
            let rest: Option<Vec<CompiledExpr>> = args[1..]
                .iter()
                .map(|arg| match (scope.shape, &arg.kind) {
                    // In a JOIN, DATEDIFF(unit, a, b) compares the event times of the sides.
                    (Shape::Joined(sides), ExprKind::Path(segments)) if segments.len() == 1 => sides
                        .iter()
                        .position(|side| {
                            side.prefixes.iter().any(|prefix| prefix.eq_ignore_ascii_case(&segments[0]))
                        })
                        .map(CompiledExpr::SideTimestamp)
                        .or_else(|| self.compile(arg, scope)),
                    _ => self.compile(arg, scope),
                })
                .collect::<Vec<_>>()
                .into_iter()
                .collect();
            let scalar = if lower == "datediff" { Scalar::DateDiff(unit?) } else { Scalar::DateAdd(unit?) };
            return Some(CompiledExpr::Call(scalar, rest?));
        }
        let Some((scalar, min_args, max_args)) = Scalar::lookup(&lower) else {
            self.error(position, format!("unknown function '{name}'"));
            // Still check the arguments, to report their errors too.
            self.compile_args(args, scope);
            return None;
        };
        if args.len() < min_args || args.len() > max_args {
            let expected = if min_args == max_args {
                min_args.to_string()
            } else if max_args == usize::MAX {
                format!("at least {min_args}")
            } else {
                format!("{min_args} to {max_args}")
            };
            self.error(position, format!("{name} takes {expected} arguments, found {}", args.len()));
            return None;
        }
        Some(CompiledExpr::Call(scalar, self.compile_args(args, scope)?))
    }

    fn aggregate(
        &mut self,
        name: &str,
        args: &[Expr],
        star: bool,
        distinct: bool,
        position: Position,
        scope: &mut Scope<'_>,
    ) -> Option<CompiledExpr> {
        if scope.inside_aggregate {
            self.error(position, format!("aggregate {name} cannot be nested inside another aggregate"));
            return None;
        }
        if scope.group.is_none() {
            self.error(position, format!("aggregate {name} is not allowed in {}", scope.clause));
            return None;
        }
        let kind = if star {
            AggregateKind::CountStar
        } else {
            let Some(kind) = AggregateKind::lookup(name, distinct) else {
                self.error(position, format!("DISTINCT is only supported in COUNT, not in {name}"));
                return None;
            };
            kind
        };
        let arg = if star {
            None
        } else if kind == AggregateKind::Collect && args.is_empty() {
            let names = match scope.shape {
                Shape::Columns(names) => Some(names.clone()),
                Shape::Json | Shape::Joined(_) => None,
            };
            Some(CompiledExpr::WholeRow(names))
        } else {
            if args.len() != 1 {
                self.error(position, format!("{name} takes one argument, found {}", args.len()));
                return None;
            }
            scope.inside_aggregate = true;
            let compiled = self.compile(&args[0], scope);
            scope.inside_aggregate = false;
            if let Some(CompiledExpr::Const(value)) = &compiled {
                if let Err(message) = crate::agg::Accumulator::new(kind).check(kind, value) {
                    self.error(args[0].position, message);
                    return None;
                }
            }
            Some(compiled?)
        };
        let (keys, aggregates) = scope.group.as_mut()?;
        let index = keys.len() + aggregates.len();
        aggregates.push(AggregateSpec { kind, arg });
        Some(CompiledExpr::Column(ColumnRef::Slot { index, rest: Vec::new() }))
    }

    fn percentile(
        &mut self,
        expr: &Expr,
        lower: &str,
        args: &[Expr],
        over: Option<&crate::ast::Over>,
        scope: &mut Scope<'_>,
    ) -> Option<CompiledExpr> {
        let position = expr.position;
        let name = lower.to_ascii_uppercase();
        let Some(over) = over.filter(|over| over.order_by.len() == 1 && over.partition_by.is_empty()) else {
            self.error(position, format!("{name} needs OVER (ORDER BY expr) with one expression"));
            return None;
        };
        let fraction = match args.first().map(|arg| &arg.kind) {
            Some(ExprKind::Literal(Literal::Float(value))) if args.len() == 1 => *value,
            Some(ExprKind::Literal(Literal::Int(value))) if args.len() == 1 => *value as f64,
            _ => -1.0,
        };
        if !(0.0..=1.0).contains(&fraction) {
            self.error(position, format!("{name} takes one number between 0 and 1"));
            return None;
        }
        if scope.inside_aggregate || scope.group.is_none() {
            self.error(position, format!("aggregate {name} is not allowed in {}", scope.clause));
            return None;
        }
        scope.inside_aggregate = true;
        let key = self.compile(&over.order_by[0].0, scope);
        scope.inside_aggregate = false;
        let ppm = (fraction * 1e6).round() as u32;
        let kind = if lower == "percentile_cont" {
            AggregateKind::PercentileCont(ppm)
        } else {
            AggregateKind::PercentileDisc(ppm)
        };
        let (keys, aggregates) = scope.group.as_mut()?;
        let index = keys.len() + aggregates.len();
        aggregates.push(AggregateSpec { kind, arg: Some(key?) });
        Some(CompiledExpr::Column(ColumnRef::Slot { index, rest: Vec::new() }))
    }

    fn top_one(
        &mut self,
        expr: &Expr,
        args: &[Expr],
        over: Option<&crate::ast::Over>,
        scope: &mut Scope<'_>,
    ) -> Option<CompiledExpr> {
        let position = expr.position;
        let Some(over) = over.filter(|over| !over.order_by.is_empty()) else {
            self.error(position, "TopOne needs OVER (ORDER BY ...)");
            return None;
        };
        if !args.is_empty()
            || !over.partition_by.is_empty()
            || over.limit_duration.is_some()
            || over.when.is_some()
        {
            self.error(position, "TopOne takes no arguments and only ORDER BY in OVER");
            return None;
        }
        if scope.inside_aggregate || scope.group.is_none() {
            self.error(position, format!("aggregate TopOne is not allowed in {}", scope.clause));
            return None;
        }
        scope.inside_aggregate = true;
        let keys: Vec<Option<CompiledExpr>> =
            over.order_by.iter().map(|(key, _)| self.compile(key, scope)).collect();
        scope.inside_aggregate = false;
        let keys = keys.into_iter().collect::<Option<Vec<_>>>()?;
        let names = match scope.shape {
            Shape::Json => None,
            Shape::Columns(names) => Some(names.clone()),
            Shape::Joined(_) => None,
        };
        let arg = CompiledExpr::TopOneArg {
            keys,
            descending: over.order_by.iter().map(|(_, descending)| *descending).collect(),
            row: Box::new(CompiledExpr::WholeRow(names)),
        };
        let (keys, aggregates) = scope.group.as_mut()?;
        let index = keys.len() + aggregates.len();
        aggregates.push(AggregateSpec { kind: AggregateKind::TopOne, arg: Some(arg) });
        Some(CompiledExpr::Column(ColumnRef::Slot { index, rest: Vec::new() }))
    }

    #[allow(clippy::too_many_arguments)]
    fn analytic(
        &mut self,
        expr: &Expr,
        lower: &str,
        args: &[Expr],
        star: bool,
        distinct: bool,
        over: Option<&crate::ast::Over>,
        scope: &mut Scope<'_>,
    ) -> Option<CompiledExpr> {
        let position = expr.position;
        let name = lower.to_ascii_uppercase();
        if scope.analytics.is_none() {
            let message = if scope.group.is_some() {
                format!("analytic function {name} is not supported in an aggregating statement")
            } else {
                format!("analytic function {name} is not allowed in {}", scope.clause)
            };
            self.error(position, message);
            return None;
        }
        if scope.inside_aggregate {
            self.error(position, format!("analytic function {name} cannot be inside an aggregate"));
            return None;
        }
        let mut row_scope = Scope {
            shape: scope.shape,
            prefixes: scope.prefixes.clone(),
            clause: "an analytic function",
            group: None,
            analytics: None,
            inside_aggregate: false,
        };
        let (partition_by, duration_ms, when) = match over {
            Some(over) => {
                let partition_by = self.compile_args(&over.partition_by, &mut row_scope);
                let duration = over
                    .limit_duration
                    .as_ref()
                    .map(|(unit, size)| self.duration(unit, size, "LIMIT DURATION"));
                let when = over.when.as_ref().map(|when| self.compile(when, &mut row_scope));
                (partition_by, duration, when)
            }
            None => (Some(Vec::new()), None, None),
        };
        let needs_duration = lower != "isfirst";
        if needs_duration && duration_ms.is_none() {
            self.error(position, format!("{name} needs OVER (... LIMIT DURATION(unit, size))"));
            return None;
        }
        let kind = match lower {
            "lag" => {
                if args.is_empty() || args.len() > 3 {
                    self.error(position, format!("LAG takes 1 to 3 arguments, found {}", args.len()));
                    return None;
                }
                let value = self.compile(&args[0], &mut row_scope);
                let offset = match args.get(1) {
                    Some(offset) => self.positive_int(offset, "the LAG offset"),
                    None => Some(1),
                };
                if offset.is_some_and(|offset| offset > MAX_LAG_OFFSET) {
                    self.error(args[1].position, format!("the LAG offset may be at most {MAX_LAG_OFFSET}"));
                    return None;
                }
                let default = match args.get(2) {
                    Some(default) => self.compile(default, &mut row_scope),
                    None => Some(CompiledExpr::Const(Value::Null)),
                };
                AnalyticKind::Lag { value: value?, offset: usize::try_from(offset?).ok()?, default: default? }
            }
            "last" => {
                if args.len() != 1 {
                    self.error(position, format!("LAST takes 1 argument, found {}", args.len()));
                    return None;
                }
                AnalyticKind::Last { value: self.compile(&args[0], &mut row_scope)? }
            }
            "isfirst" => {
                if args.len() != 2 {
                    self.error(
                        position,
                        format!("ISFIRST takes (unit, size), found {} arguments", args.len()),
                    );
                    return None;
                }
                AnalyticKind::IsFirst { size_ms: self.duration(&args[0], &args[1], "the ISFIRST size")? }
            }
            _ => {
                let kind = if star {
                    AggregateKind::CountStar
                } else {
                    let Some(kind) = AggregateKind::lookup(lower, distinct) else {
                        self.error(position, format!("{name} is not supported as an analytic function"));
                        return None;
                    };
                    kind
                };
                if kind == AggregateKind::CountDistinct {
                    self.error(position, "COUNT(DISTINCT) is not supported as an analytic function yet");
                    return None;
                }
                let arg = if star {
                    None
                } else if args.len() == 1 {
                    Some(self.compile(&args[0], &mut row_scope)?)
                } else {
                    self.error(position, format!("{name} takes one argument, found {}", args.len()));
                    return None;
                };
                AnalyticKind::Moving(AggregateSpec { kind, arg })
            }
        };
        let plan = AnalyticPlan {
            kind,
            partition_by: partition_by?,
            duration_ms: duration_ms.flatten(),
            when: match when {
                None => None,
                Some(None) => return None,
                Some(Some(when)) => Some(when),
            },
        };
        let analytics = scope.analytics.as_mut()?;
        analytics.push(plan);
        Some(CompiledExpr::Analytic(analytics.len() - 1))
    }

    fn window(&mut self, expr: &Expr, scope: &mut Scope<'_>) -> Option<(WindowSpec, Vec<CompiledExpr>)> {
        let ExprKind::Call { name, args, over, .. } = &expr.kind else { return None };
        let lower = name.to_ascii_lowercase();
        let arity_error = |planner: &mut Planner<'_>, expected: &str| {
            planner
                .error(expr.position, format!("{name} takes ({expected}), found {} arguments", args.len()));
        };
        let mut session_partition = Vec::new();
        if let Some(over) = over {
            if !lower.starts_with("session") {
                self.error(expr.position, format!("{name} does not take OVER"));
                return None;
            }
            session_partition = self.compile_args(&over.partition_by, scope)?;
        }
        // ASA's long form: HoppingWindow(Duration(hour, 1), Hop(minute, 5)),
        // SessionWindow(Timeout(minute, 5), MaxDuration(hour, 1)); each part has its own unit.
        let is_long_form = !args.is_empty()
            && args.iter().all(|arg| {
                matches!(&arg.kind, ExprKind::Call { name, args, .. }
                    if args.len() == 2 && ["duration", "hop", "timeout", "maxduration"].contains(&name.to_ascii_lowercase().as_str()))
            });
        if is_long_form {
            let sizes: Vec<Option<i64>> = args
                .iter()
                .map(|arg| match &arg.kind {
                    ExprKind::Call { name, args, .. } => {
                        self.duration(&args[0], &args[1], &format!("the {} size", name.to_ascii_lowercase()))
                    }
                    _ => None,
                })
                .collect();
            let sizes = sizes.into_iter().collect::<Option<Vec<i64>>>()?;
            let spec = match (lower.as_str(), sizes.as_slice()) {
                ("tumblingwindow" | "tumbling", [size_ms]) => WindowSpec::Tumbling { size_ms: *size_ms },
                ("slidingwindow" | "sliding", [size_ms]) => WindowSpec::Sliding { size_ms: *size_ms },
                ("hoppingwindow" | "hopping", [size_ms, hop_ms])
                    if size_ms / hop_ms <= MAX_WINDOWS_PER_EVENT =>
                {
                    WindowSpec::Hopping { size_ms: *size_ms, hop_ms: *hop_ms }
                }
                ("sessionwindow" | "session", [timeout_ms, max_duration_ms]) => {
                    WindowSpec::Session { timeout_ms: *timeout_ms, max_duration_ms: *max_duration_ms }
                }
                _ => {
                    self.error(expr.position, format!("{name} does not take these arguments"));
                    return None;
                }
            };
            return Some((spec, session_partition));
        }
        let spec = match lower.as_str() {
            "tumblingwindow" | "tumbling" => {
                if args.len() != 2 {
                    arity_error(self, "unit, size");
                    return None;
                }
                WindowSpec::Tumbling { size_ms: self.duration(&args[0], &args[1], "the window size")? }
            }
            "hoppingwindow" | "hopping" => {
                if args.len() != 3 {
                    arity_error(self, "unit, size, hop");
                    return None;
                }
                let size_ms = self.duration(&args[0], &args[1], "the window size");
                let hop_ms = self.duration(&args[0], &args[2], "the hop size");
                let (size_ms, hop_ms) = (size_ms?, hop_ms?);
                if size_ms / hop_ms > MAX_WINDOWS_PER_EVENT {
                    self.error(
                        args[2].position,
                        format!("the hop is too small: one event would fall into more than {MAX_WINDOWS_PER_EVENT} windows"),
                    );
                    return None;
                }
                WindowSpec::Hopping { size_ms, hop_ms }
            }
            "slidingwindow" | "sliding" => {
                if args.len() != 2 {
                    arity_error(self, "unit, size");
                    return None;
                }
                WindowSpec::Sliding { size_ms: self.duration(&args[0], &args[1], "the window size")? }
            }
            _ => {
                if args.len() != 3 {
                    arity_error(self, "unit, timeout, maximum duration");
                    return None;
                }
                let timeout_ms = self.duration(&args[0], &args[1], "the session timeout");
                let max_duration_ms = self.duration(&args[0], &args[2], "the maximum duration");
                WindowSpec::Session { timeout_ms: timeout_ms?, max_duration_ms: max_duration_ms? }
            }
        };
        Some((spec, session_partition))
    }
}

struct StatementContext<'a> {
    /// Names of the steps defined so far, with their statement index.
    steps: &'a [(String, usize)],
    /// Names of every step of the job, to tell "defined later" from "an input".
    all_steps: &'a [String],
    inputs: &'a mut Vec<InputPlan>,
    statements: &'a [StatementPlan],
}

impl Planner<'_> {
    fn plan_statement(
        &mut self,
        statement: &Statement,
        context: &mut StatementContext<'_>,
    ) -> Option<StatementPlan> {
        let select: &Select = &statement.select;
        let target = match (&statement.cte_name, &select.into) {
            (Some((name, _)), None) => Target::Step(name.clone()),
            (Some(_), Some((_, position))) => {
                self.error(
                    *position,
                    "a WITH step cannot have INTO; its rows go to the statements that read it",
                );
                return None;
            }
            (None, Some((name, position))) => {
                if context.steps.iter().any(|(step, _)| step.eq_ignore_ascii_case(name)) {
                    self.error(*position, format!("'{name}' is a WITH step, not an output"));
                } else if let Some(known) = &self.options.known_outputs {
                    if !known.iter().any(|output| output.eq_ignore_ascii_case(name)) {
                        self.error(
                            *position,
                            format!("unknown output '{name}' (known: {})", known.join(", ")),
                        );
                    }
                }
                Target::Output(name.clone())
            }
            (None, None) => {
                self.error(select.position, "missing INTO: say which output this statement writes to");
                Target::Output(String::new())
            }
        };
        let (from_name, from_position) = &select.from;
        let (source, mut shape, mut roots) =
            self.resolve_source(from_name, *from_position, select.timestamp_by.as_ref(), context);
        let mut prefixes = vec![from_name.clone()];
        prefixes.extend(select.from_alias.clone());
        let expand = match &select.cross_apply {
            None => None,
            Some(cross_apply) => {
                let expand = self.plan_cross_apply(cross_apply, &shape, &prefixes);
                // Later clauses see the element under its alias (a field, or one more column).
                if let Shape::Columns(names) = &mut shape {
                    names.push(cross_apply.alias.clone());
                }
                Some(expand?)
            }
        };

        let mut join = None;
        if let Some(join_clause) = &select.join {
            if select.cross_apply.is_some() {
                self.error(join_clause.right.1, "CROSS APPLY together with JOIN is not supported yet");
                return None;
            }
            let (right_name, right_position) = &join_clause.right;
            let (right_source, right_shape, right_roots) = self.resolve_source(
                right_name,
                *right_position,
                join_clause.right_timestamp_by.as_ref(),
                context,
            );
            let mut right_prefixes = vec![right_name.clone()];
            right_prefixes.extend(join_clause.right_alias.clone());
            if prefixes.iter().any(|left| right_prefixes.iter().any(|right| left.eq_ignore_ascii_case(right)))
            {
                self.error(
                    *right_position,
                    "the two sides of a JOIN need different names: give them aliases",
                );
                return None;
            }
            shape = Shape::Joined(Box::new([
                JoinSide { prefixes: std::mem::take(&mut prefixes), shape },
                JoinSide { prefixes: right_prefixes, shape: right_shape },
            ]));
            for root in right_roots {
                if !roots.contains(&root) {
                    roots.push(root);
                }
            }
            let mut scope = Scope {
                shape: &shape,
                prefixes: Vec::new(),
                clause: "ON",
                group: None,
                analytics: None,
                inside_aggregate: false,
            };
            if contains_aggregate(&join_clause.on) {
                self.error(join_clause.on.position, "aggregates are not allowed in ON");
                return None;
            }
            let on = self.compile(&join_clause.on, &mut scope);
            let Some(JoinBound { min_diff_ms, max_diff_ms, unit_ms, upper_units }) =
                self.join_bound(&join_clause.on, &shape)
            else {
                self.error(
                    join_clause.on.position,
                    "a JOIN needs a time bound in ON: AND DATEDIFF(unit, left, right) BETWEEN low AND high",
                );
                return None;
            };
            join = Some(JoinPlan {
                right_source,
                on: on?,
                min_diff_ms,
                max_diff_ms,
                unit_ms,
                upper_units,
                left_outer: join_clause.left_outer,
            });
        }

        let is_aggregating = !select.group_by.is_empty()
            || select.having.is_some()
            || select
                .items
                .iter()
                .any(|item| matches!(item, SelectItem::Expr { expr, .. } if contains_aggregate(expr)));

        let mut analytics = Vec::new();
        let filter = select.where_clause.as_ref().and_then(|condition| {
            let mut scope = Scope {
                shape: &shape,
                prefixes: prefixes.clone(),
                clause: "WHERE",
                group: None,
                analytics: if is_aggregating { None } else { Some(&mut analytics) },
                inside_aggregate: false,
            };
            self.compile(condition, &mut scope)
        });

        let mut names = Vec::new();
        let body = if is_aggregating {
            self.plan_aggregate(select, &shape, &prefixes, &mut names)
                .map(|plan| Body::Aggregate(Box::new(plan)))
        } else {
            self.plan_projection(select, &shape, &prefixes, &mut analytics, &mut names)
        };
        let body = body?;
        let output_shape = match (&body, shape) {
            (Body::Star { .. }, Shape::Columns(mut columns)) => {
                columns.extend(names);
                Shape::Columns(columns)
            }
            (Body::Star { .. }, shape) => shape,
            _ => Shape::Columns(names),
        };
        Some(StatementPlan {
            target,
            source,
            expand,
            roots,
            join,
            output_shape,
            filter,
            analytics,
            body,
            consumers: Vec::new(),
        })
    }

    /// Resolves a FROM or JOIN name to a step defined earlier or to an input.
    fn resolve_source(
        &mut self,
        name: &str,
        position: Position,
        timestamp_by: Option<&Expr>,
        context: &mut StatementContext<'_>,
    ) -> (Source, Shape, Vec<usize>) {
        let step = context.steps.iter().find(|(step, _)| step.eq_ignore_ascii_case(name));
        match step {
            Some((_, index)) => {
                let upstream = &context.statements[*index];
                if let Some(timestamp_by) = timestamp_by {
                    self.error(
                        timestamp_by.position,
                        format!("TIMESTAMP BY applies to inputs, not to the step '{name}'"),
                    );
                }
                (Source::Step(*index), upstream.output_shape.clone(), upstream.roots.clone())
            }
            None => {
                if context.all_steps.iter().any(|step| step.eq_ignore_ascii_case(name)) {
                    self.error(position, format!("the WITH step '{name}' is used before it is defined"));
                } else if let Some(known) = &self.options.known_inputs {
                    if !known.iter().any(|input| input.eq_ignore_ascii_case(name)) {
                        self.error(position, format!("unknown input '{name}' (known: {})", known.join(", ")));
                    }
                }
                let index = self.input(name, timestamp_by, position, context.inputs);
                (Source::Input(index), Shape::Json, vec![index])
            }
        }
    }

    /// Finds `DATEDIFF(unit, x, y) BETWEEN low AND high` among the ON clause's top-level AND
    /// terms, with x and y naming the two sides, and turns it into bounds on
    /// `right time - left time` in milliseconds.
    fn join_bound(&mut self, on: &Expr, shape: &Shape) -> Option<JoinBound> {
        let Shape::Joined(sides) = shape else { return None };
        let side_of = |expr: &Expr| match &expr.kind {
            ExprKind::Path(segments) if segments.len() == 1 => sides.iter().position(|side| {
                side.prefixes.iter().any(|prefix| prefix.eq_ignore_ascii_case(&segments[0]))
            }),
            _ => None,
        };
        let mut terms = vec![on];
        let mut bound = None;
        while let Some(term) = terms.pop() {
            match &term.kind {
                ExprKind::Binary { op: BinaryOp::And, left, right } => {
                    terms.push(left);
                    terms.push(right);
                }
                ExprKind::Between { operand, low, high, negated: false } => {
                    let ExprKind::Call { name, args, .. } = &operand.kind else { continue };
                    if !name.eq_ignore_ascii_case("DATEDIFF") || args.len() != 3 {
                        continue;
                    }
                    let (Some(first), Some(second)) = (side_of(&args[1]), side_of(&args[2])) else {
                        continue;
                    };
                    let (ExprKind::Literal(Literal::Int(low)), ExprKind::Literal(Literal::Int(high))) =
                        (&low.kind, &high.kind)
                    else {
                        continue;
                    };
                    let Some(unit) = self.unit(&args[0]).map(TimeUnit::millis) else { continue };
                    // DATEDIFF(unit, first, second) = second - first, counted in unit boundaries.
                    let low_ms = low.saturating_sub(1).saturating_mul(unit);
                    let high_ms = high.saturating_add(1).saturating_mul(unit);
                    bound = match (first, second) {
                        (0, 1) => Some(JoinBound {
                            min_diff_ms: low_ms,
                            max_diff_ms: high_ms,
                            unit_ms: unit,
                            upper_units: *high,
                        }),
                        (1, 0) => Some(JoinBound {
                            min_diff_ms: high_ms.saturating_neg(),
                            max_diff_ms: low_ms.saturating_neg(),
                            unit_ms: unit,
                            upper_units: low.saturating_neg(),
                        }),
                        _ => continue,
                    };
                }
                _ => {}
            }
        }
        bound
    }

    fn plan_cross_apply(
        &mut self,
        cross_apply: &CrossApply,
        shape: &Shape,
        prefixes: &[String],
    ) -> Option<Expand> {
        let call = &cross_apply.call;
        let (kind, args) = match &call.kind {
            ExprKind::Call { name, args, over: None, .. }
                if name.eq_ignore_ascii_case("GetArrayElements") =>
            {
                (ExpandKind::ArrayElements, args)
            }
            ExprKind::Call { name, args, over: None, .. }
                if name.eq_ignore_ascii_case("GetRecordProperties") =>
            {
                (ExpandKind::RecordProperties, args)
            }
            _ => {
                self.error(
                    call.position,
                    "CROSS APPLY supports GetArrayElements(...) and GetRecordProperties(...)",
                );
                return None;
            }
        };
        if args.len() != 1 {
            self.error(call.position, format!("CROSS APPLY takes one argument, found {}", args.len()));
            return None;
        }
        let mut scope = Scope {
            shape,
            prefixes: prefixes.to_vec(),
            clause: "CROSS APPLY",
            group: None,
            analytics: None,
            inside_aggregate: false,
        };
        let arg = self.compile(&args[0], &mut scope)?;
        Some(Expand { kind, arg, alias: cross_apply.alias.clone() })
    }

    fn input(
        &mut self,
        name: &str,
        timestamp_by: Option<&Expr>,
        from_position: Position,
        inputs: &mut Vec<InputPlan>,
    ) -> usize {
        let timestamp_expr = timestamp_by;
        let timestamp_text = timestamp_expr.map(Expr::canonical);
        let timestamp_by = timestamp_expr.and_then(|timestamp_by| {
            let shape = Shape::Json;
            let mut scope = Scope {
                shape: &shape,
                prefixes: vec![name.to_string()],
                clause: "TIMESTAMP BY",
                group: None,
                analytics: None,
                inside_aggregate: false,
            };
            if contains_aggregate(timestamp_by) {
                self.error(timestamp_by.position, "aggregates are not allowed in TIMESTAMP BY");
                return None;
            }
            self.compile(timestamp_by, &mut scope)
        });
        if let Some(index) = inputs.iter().position(|input| input.name.eq_ignore_ascii_case(name)) {
            if inputs[index].timestamp_text != timestamp_text {
                let position = timestamp_expr.map_or(from_position, |expr| expr.position);
                self.error(
                    position,
                    format!("input '{name}' is read with different TIMESTAMP BY clauses; every statement must use the same one"),
                );
            }
            return index;
        }
        inputs.push(InputPlan { name: name.to_string(), timestamp_by, timestamp_text });
        inputs.len() - 1
    }

    fn output_names(&mut self, select: &Select, names: &mut Vec<String>) {
        for (index, item) in select.items.iter().enumerate() {
            if let SelectItem::Expr { expr, alias } = item {
                let name = alias.clone().unwrap_or_else(|| default_column_name(expr, index));
                if names.iter().any(|existing: &String| existing.eq_ignore_ascii_case(&name)) {
                    self.error(expr.position, format!("duplicate output column '{name}'; name it with AS"));
                }
                names.push(name);
            }
        }
    }

    fn plan_projection(
        &mut self,
        select: &Select,
        shape: &Shape,
        prefixes: &[String],
        analytics: &mut Vec<AnalyticPlan>,
        names: &mut Vec<String>,
    ) -> Option<Body> {
        let star = match select.items.as_slice() {
            [SelectItem::Star(position), ..] => Some(*position),
            _ => None,
        };
        if let Some(position) = star {
            if matches!(shape, Shape::Joined(_)) {
                self.error(position, "SELECT * is not supported with JOIN yet: name the columns");
                return None;
            }
        }
        if let Some(position) =
            select.items.iter().skip(usize::from(star.is_some())).find_map(|item| match item {
                SelectItem::Star(position) => Some(*position),
                SelectItem::Expr { .. } => None,
            })
        {
            self.error(position, "* must come first in the SELECT list");
            return None;
        }
        self.output_names(select, names);
        if let (Some(_), Shape::Columns(columns)) = (star, shape) {
            for (name, item) in names.iter().zip(select.items.iter().skip(1)) {
                if columns.iter().any(|column| column.eq_ignore_ascii_case(name)) {
                    let position = match item {
                        SelectItem::Expr { expr, .. } => expr.position,
                        SelectItem::Star(position) => *position,
                    };
                    self.error(position, format!("duplicate output column '{name}': * already has it"));
                }
            }
        }
        let mut scope = Scope {
            shape,
            prefixes: prefixes.to_vec(),
            clause: "SELECT without GROUP BY (aggregates need a window)",
            group: None,
            analytics: Some(analytics),
            inside_aggregate: false,
        };
        let mut items = Vec::new();
        let mut failed = false;
        for item in &select.items {
            if let SelectItem::Expr { expr, .. } = item {
                match self.compile(expr, &mut scope) {
                    Some(compiled) => items.push(compiled),
                    None => failed = true,
                }
            }
        }
        if failed {
            return None;
        }
        Some(if star.is_some() {
            Body::Star { names: names.clone(), extras: items }
        } else {
            Body::Project(items)
        })
    }

    fn plan_aggregate(
        &mut self,
        select: &Select,
        shape: &Shape,
        prefixes: &[String],
        names: &mut Vec<String>,
    ) -> Option<AggregatePlan> {
        let mut row_scope = Scope {
            shape,
            prefixes: prefixes.to_vec(),
            clause: "GROUP BY",
            group: None,
            analytics: None,
            inside_aggregate: false,
        };
        let mut window = None;
        let mut window_seen = false;
        let mut session_partition = Vec::new();
        let mut keys = Vec::new();
        let mut key_texts = Vec::new();
        let mut failed = false;
        for expr in &select.group_by {
            let is_window = matches!(&expr.kind, ExprKind::Call { name, .. } if is_window_name(name));
            if is_window {
                if window_seen {
                    self.error(expr.position, "only one window is allowed in GROUP BY");
                    failed = true;
                    continue;
                }
                window_seen = true;
                match self.window(expr, &mut row_scope) {
                    Some((spec, partition)) => {
                        window = Some(spec);
                        session_partition = partition;
                    }
                    None => failed = true,
                }
                continue;
            }
            if contains_aggregate(expr) {
                self.error(expr.position, "aggregates are not allowed in GROUP BY");
                failed = true;
                continue;
            }
            match self.compile(expr, &mut row_scope) {
                Some(compiled) => {
                    keys.push(compiled);
                    key_texts.push(canonical_without_prefixes(expr, prefixes));
                }
                None => failed = true,
            }
        }
        if window.is_none() && !failed {
            let position = select.group_by.first().map_or(select.position, |expr| expr.position);
            self.error(
                position,
                "aggregation over a stream needs a window in GROUP BY: TumblingWindow, HoppingWindow, SlidingWindow or SessionWindow",
            );
            failed = true;
        }
        let mut aggregates = Vec::new();
        let mut items = Vec::new();
        for item in &select.items {
            match item {
                SelectItem::Star(position) => {
                    self.error(*position, "SELECT * is not allowed in an aggregating statement");
                    failed = true;
                }
                SelectItem::Expr { expr, .. } => {
                    let mut scope = Scope {
                        shape,
                        prefixes: prefixes.to_vec(),
                        clause: "SELECT",
                        group: Some((&key_texts, &mut aggregates)),
                        analytics: None,
                        inside_aggregate: false,
                    };
                    match self.compile(expr, &mut scope) {
                        Some(compiled) => items.push(compiled),
                        None => failed = true,
                    }
                }
            }
        }
        let having = select.having.as_ref().and_then(|having| {
            let mut scope = Scope {
                shape,
                prefixes: prefixes.to_vec(),
                clause: "HAVING",
                group: Some((&key_texts, &mut aggregates)),
                analytics: None,
                inside_aggregate: false,
            };
            let compiled = self.compile(having, &mut scope);
            failed |= compiled.is_none();
            compiled
        });
        self.output_names(select, names);
        if failed {
            return None;
        }
        Some(AggregatePlan { keys, aggregates, window: window?, session_partition, having, items })
    }
}

/// Plans a parsed job. Diagnostics come back unsorted; `finish_diagnostics` orders them.
pub(crate) fn plan(statements: &[Statement], options: &JobOptions) -> Result<Plan, Vec<Diagnostic>> {
    let mut planner = Planner { options, diagnostics: Vec::new() };
    if statements.len() > MAX_STATEMENTS {
        planner.error(Position::default(), format!("a job may have at most {MAX_STATEMENTS} statements"));
    }
    if !statements.is_empty() && statements.iter().all(|statement| statement.cte_name.is_some()) {
        planner.error(
            statements.first().map_or(Position { line: 1, column: 1 }, |statement| statement.select.position),
            "the job has no statement writing INTO an output",
        );
    }
    let mut steps: Vec<(String, usize)> = Vec::new();
    let all_steps: Vec<String> = statements
        .iter()
        .filter_map(|statement| statement.cte_name.as_ref().map(|(name, _)| name.clone()))
        .collect();
    let mut inputs = Vec::new();
    let mut plans: Vec<StatementPlan> = Vec::new();
    let mut failed = false;
    for statement in statements.iter().take(MAX_STATEMENTS) {
        if let Some((name, position)) = &statement.cte_name {
            if steps.iter().any(|(step, _)| step.eq_ignore_ascii_case(name)) {
                planner.error(*position, format!("the WITH step '{name}' is defined twice"));
            }
        }
        let mut context = StatementContext {
            steps: &steps,
            all_steps: &all_steps,
            inputs: &mut inputs,
            statements: &plans,
        };
        match planner.plan_statement(statement, &mut context) {
            Some(plan) => {
                if let Some((name, _)) = &statement.cte_name {
                    steps.push((name.clone(), plans.len()));
                }
                plans.push(plan);
            }
            None => {
                failed = true;
                // Keep later statements that read this step from reporting "unknown column".
                if let Some((name, _)) = &statement.cte_name {
                    steps.push((name.clone(), plans.len()));
                }
                plans.push(StatementPlan {
                    target: Target::Step(String::new()),
                    source: Source::Input(0),
                    expand: None,
                    roots: Vec::new(),
                    join: None,
                    output_shape: Shape::Json,
                    filter: None,
                    analytics: Vec::new(),
                    body: Body::Star { names: Vec::new(), extras: Vec::new() },
                    consumers: Vec::new(),
                });
            }
        }
    }
    for index in 0..plans.len() {
        if let Source::Step(upstream) = plans[index].source {
            plans[upstream].consumers.push((index, 0));
        }
        if let Some(JoinPlan { right_source: Source::Step(upstream), .. }) = plans[index].join {
            plans[upstream].consumers.push((index, 1));
        }
    }
    let mut diagnostics = planner.diagnostics;
    if failed || !diagnostics.is_empty() {
        if diagnostics.is_empty() {
            diagnostics.push(Diagnostic::new(Position::default(), "the query could not be planned"));
        }
        return Err(diagnostics);
    }
    Ok(Plan { inputs, statements: plans })
}

/// Sorts diagnostics by position, drops duplicates and caps their number.
pub(crate) fn finish_diagnostics(mut diagnostics: Vec<Diagnostic>) -> Vec<Diagnostic> {
    diagnostics.sort_by_key(|diagnostic| (diagnostic.line, diagnostic.column));
    diagnostics.dedup();
    if diagnostics.len() > MAX_DIAGNOSTICS {
        let more = diagnostics.len() - MAX_DIAGNOSTICS;
        diagnostics.truncate(MAX_DIAGNOSTICS);
        let last = diagnostics[MAX_DIAGNOSTICS - 1].clone();
        diagnostics.push(Diagnostic {
            line: last.line,
            column: last.column,
            message: format!("{more} more diagnostics not shown"),
        });
    }
    diagnostics
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lexer::lex;
    use crate::parser::Parser;

    fn plan_of(sql: &str) -> Plan {
        let (tokens, lex_errors) = lex(sql);
        assert!(lex_errors.is_empty());
        let mut parser = Parser::new(tokens);
        let statements = parser.parse_job();
        assert!(parser.diagnostics.is_empty(), "{:?}", parser.diagnostics);
        match plan(&statements, &JobOptions::default()) {
            Ok(plan) => plan,
            Err(diagnostics) => panic!("{diagnostics:?}"),
        }
    }

    #[test]
    fn step_columns_resolve_to_slots_and_inputs_to_paths() {
        let plan = plan_of("WITH s AS (SELECT a.b AS x, c FROM i) SELECT c, x.y INTO o FROM s");
        assert_eq!(plan.inputs.len(), 1);
        let Body::Project(step_items) = &plan.statements[0].body else { panic!("projection expected") };
        assert_eq!(step_items[0], CompiledExpr::Column(ColumnRef::Field(vec!["a".into(), "b".into()])));
        assert_eq!(plan.statements[0].output_shape, Shape::Columns(vec!["x".into(), "c".into()]));
        assert_eq!(plan.statements[0].consumers, vec![(1, 0)]);
        let Body::Project(items) = &plan.statements[1].body else { panic!("projection expected") };
        assert_eq!(items[0], CompiledExpr::Column(ColumnRef::Slot { index: 1, rest: vec![] }));
        assert_eq!(items[1], CompiledExpr::Column(ColumnRef::Slot { index: 0, rest: vec!["y".into()] }));
        assert_eq!(plan.statements[1].source, Source::Step(0));
    }

    #[test]
    fn aggregating_select_reads_keys_then_aggregates() {
        let plan = plan_of(
            "SELECT COUNT(*) AS n, k, AVG(v) + 1 AS a INTO o FROM i GROUP BY k, HoppingWindow(second, 10, 5) HAVING MAX(v) > 3",
        );
        let Body::Aggregate(aggregate) = &plan.statements[0].body else { panic!("aggregate expected") };
        assert_eq!(aggregate.window, WindowSpec::Hopping { size_ms: 10_000, hop_ms: 5_000 });
        let kinds: Vec<AggregateKind> = aggregate.aggregates.iter().map(|spec| spec.kind).collect();
        assert_eq!(kinds, vec![AggregateKind::CountStar, AggregateKind::Avg, AggregateKind::Max]);
        // Slot 0 is the key k; aggregates follow in the order they were met.
        assert_eq!(aggregate.items[0], CompiledExpr::Column(ColumnRef::Slot { index: 1, rest: vec![] }));
        assert_eq!(aggregate.items[1], CompiledExpr::Column(ColumnRef::Slot { index: 0, rest: vec![] }));
        assert!(aggregate.having.is_some());
    }

    #[test]
    fn analytic_functions_get_state_slots() {
        let plan = plan_of(
            "SELECT LAG(a) OVER (PARTITION BY k LIMIT DURATION(minute, 1)) AS p INTO o FROM i \
             WHERE ISFIRST(second, 10) OVER (PARTITION BY k) = 1",
        );
        let statement = &plan.statements[0];
        assert_eq!(statement.analytics.len(), 2);
        assert!(matches!(statement.analytics[0].kind, AnalyticKind::IsFirst { size_ms: 10_000 }));
        assert_eq!(statement.analytics[1].duration_ms, Some(60_000));
        let Body::Project(items) = &statement.body else { panic!("projection expected") };
        assert_eq!(items[0], CompiledExpr::Analytic(1));
    }
}
