//! Expression planning: one AST expression to one [`CompiledExpr`] in a [`Scope`], with every
//! semantic error a positioned diagnostic.
//!
//! A column becomes a JSON path into the input event, a slot of a step's row or of the group
//! row, or a column of one JOIN side; a function becomes a [`Scalar`]; an aggregate becomes a
//! slot of the group row and an [`AggregateSpec`]; an analytic function becomes a slot of the
//! statement's analytic values and an [`AnalyticPlan`]; a window in GROUP BY becomes a
//! [`WindowSpec`]. Constant subexpressions are evaluated here, so a type error in one is a
//! diagnostic rather than an error on every event.

use crate::agg::AggregateKind;
use crate::ast::{BinaryOp, Expr, ExprKind, Literal, UnaryOp};
use crate::error::{Diagnostic, Position};
use crate::expr::{CastType, ColumnRef, CompiledExpr, Context, Row, Scalar};
use crate::time::TimeUnit;
use crate::value::Value;
use crate::JobOptions;

use super::pattern::PatternScope;
use super::{AggregateSpec, AnalyticKind, AnalyticPlan, Shape, WindowSpec};

/// The most hopping windows one event may fall into (`size / hop`), which bounds the work an
/// event causes.
pub const WINDOWS_PER_EVENT_MAX: i64 = 10_000;
/// The largest `n` of `LAG(x, n)`.
pub const LAG_OFFSET_MAX: i64 = 10_000;

/// What expressions in the current clause may refer to.
pub(super) struct Scope<'a> {
    pub(super) shape: &'a Shape,
    /// Names that may prefix a column (`i.x` with `FROM input i`).
    pub(super) prefixes: Vec<String>,
    pub(super) clause: &'static str,
    /// In an aggregating SELECT or HAVING: the canonical GROUP BY keys and the aggregates found.
    pub(super) group: Option<(&'a [String], &'a mut Vec<AggregateSpec>)>,
    /// Where analytic functions may appear (WHERE and SELECT of non-aggregating statements).
    pub(super) analytics: Option<&'a mut Vec<AnalyticPlan>>,
    pub(super) inside_aggregate: bool,
    /// In MATCH_RECOGNIZE's DEFINE and MEASURES: how names map to rows of the match.
    pub(super) pattern: Option<&'a mut PatternScope>,
}

impl<'a> Scope<'a> {
    /// A scope that reads one row of `shape`: no aggregates, no analytic functions.
    pub(super) fn rows(shape: &'a Shape, prefixes: &[String], clause: &'static str) -> Scope<'a> {
        Scope {
            shape,
            prefixes: prefixes.to_vec(),
            clause,
            group: None,
            analytics: None,
            inside_aggregate: false,
            pattern: None,
        }
    }
}

pub(super) struct Planner<'a> {
    pub(super) options: &'a JobOptions,
    pub(super) diagnostics: Vec<Diagnostic>,
}

pub(super) fn is_window_name(name: &str) -> bool {
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
pub(super) fn contains_aggregate(expr: &Expr) -> bool {
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

pub(super) fn visit(expr: &Expr, visitor: &mut dyn FnMut(&Expr)) {
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
pub(super) fn canonical_without_prefixes(expr: &Expr, prefixes: &[String]) -> String {
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

/// `System.Timestamp` written as a path, without parentheses.
fn is_system_timestamp(segments: &[String]) -> bool {
    segments.len() == 2
        && segments[0].eq_ignore_ascii_case("System")
        && segments[1].eq_ignore_ascii_case("Timestamp")
}

/// The name an unnamed SELECT expression gets in the output row.
pub(super) fn default_column_name(expr: &Expr, index: usize) -> String {
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
    pub(super) fn error(&mut self, position: Position, message: impl Into<String>) {
        self.diagnostics.push(Diagnostic::new(position, message));
    }

    pub(super) fn unit(&mut self, expr: &Expr) -> Option<TimeUnit> {
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

    pub(super) fn positive_int(&mut self, expr: &Expr, what: &str) -> Option<i64> {
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

    pub(super) fn duration(&mut self, unit: &Expr, size: &Expr, what: &str) -> Option<i64> {
        let unit = self.unit(unit);
        let count = self.positive_int(size, what)?;
        let millis = count.checked_mul(unit?.millis());
        if millis.is_none() {
            self.error(size.position, format!("{what} is too large"));
        }
        millis
    }

    pub(super) fn compile_args(&mut self, args: &[Expr], scope: &mut Scope<'_>) -> Option<Vec<CompiledExpr>> {
        let compiled: Vec<Option<CompiledExpr>> = args.iter().map(|arg| self.compile(arg, scope)).collect();
        compiled.into_iter().collect()
    }

    fn compile_box(&mut self, expr: &Expr, scope: &mut Scope<'_>) -> Option<Box<CompiledExpr>> {
        self.compile(expr, scope).map(Box::new)
    }

    /// Compiles one expression in `scope`, recording a diagnostic for each problem found.
    pub(super) fn compile(&mut self, expr: &Expr, scope: &mut Scope<'_>) -> Option<CompiledExpr> {
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
        if scope.pattern.is_some() {
            // MATCH_RECOGNIZE's DEFINE and MEASURES: names may read other rows of the match.
            match &expr.kind {
                ExprKind::Path(segments) if !is_system_timestamp(segments) => {
                    return self.pattern_column(segments, position, scope);
                }
                ExprKind::Call { name, args, star, distinct, over } => {
                    if let Some(compiled) =
                        self.pattern_call(expr, name, args, *star, *distinct, over.is_some(), scope)
                    {
                        return compiled;
                    }
                }
                _ => {}
            }
        }
        let compiled = match &expr.kind {
            ExprKind::Literal(literal) => CompiledExpr::Const(match literal {
                Literal::Null => Value::Null,
                Literal::Int(value) => Value::Int(*value),
                Literal::Float(value) => Value::Float(*value),
                Literal::Str(text) => Value::Str(text.clone()),
            }),
            // `System.Timestamp` without parentheses, as older ASA examples write it.
            ExprKind::Path(segments) if is_system_timestamp(segments) => CompiledExpr::Timestamp,
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

    pub(super) fn column(
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
            let mut side_scope = Scope::rows(&sides[side].shape, &[], scope.clause);
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
        let mut row_scope = Scope::rows(scope.shape, &scope.prefixes, "an analytic function");
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
                if offset.is_some_and(|offset| offset > LAG_OFFSET_MAX) {
                    self.error(args[1].position, format!("the LAG offset may be at most {LAG_OFFSET_MAX}"));
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

    pub(super) fn window(
        &mut self,
        expr: &Expr,
        scope: &mut Scope<'_>,
    ) -> Option<(WindowSpec, Vec<CompiledExpr>)> {
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
                    if size_ms / hop_ms <= WINDOWS_PER_EVENT_MAX =>
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
                if size_ms / hop_ms > WINDOWS_PER_EVENT_MAX {
                    self.error(
                        args[2].position,
                        format!("the hop is too small: one event would fall into more than {WINDOWS_PER_EVENT_MAX} windows"),
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
