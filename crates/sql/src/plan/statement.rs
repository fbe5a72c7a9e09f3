//! Statement planning: a parsed job to a [`Plan`]. Resolves FROM and JOIN names to inputs or
//! earlier `WITH` steps, finds a JOIN's time bound in its ON clause, decides whether a statement
//! aggregates, names output columns, and wires steps to the statements that read them.

use crate::ast::{BinaryOp, CrossApply, Expr, ExprKind, Join, Literal, Select, SelectItem, Statement};
use crate::error::{Diagnostic, Position};
use crate::time::TimeUnit;
use crate::JobOptions;

use super::expr::{
    canonical_without_prefixes, contains_aggregate, default_column_name, is_window_name, visit, Planner,
    Scope,
};
use super::{
    AggregatePlan, AnalyticPlan, Body, Expand, ExpandKind, InputPlan, JoinPlan, JoinSide, Plan,
    ReferenceJoinPlan, Shape, Source, StatementPlan, Target,
};

/// The most diagnostics one compile returns; the rest are summarised in one last message.
pub const DIAGNOSTICS_MAX: usize = 100;
/// The most statements (CTEs included) in one job.
pub const STATEMENTS_MAX: usize = 1_000;

/// What `join_bound` finds in an ON clause.
struct JoinBound {
    min_diff_ms: i64,
    max_diff_ms: i64,
    unit_ms: i64,
    upper_units: i64,
}

/// An expression as the user would recognise it in a message: a column as written.
fn display_name(expr: &Expr) -> String {
    match &expr.kind {
        ExprKind::Path(segments) => segments.join("."),
        _ => expr.canonical(),
    }
}

/// `TIMESTAMP BY expr [OVER key, ...]` as written after a FROM or JOIN name.
#[derive(Clone, Copy)]
struct TimestampClause<'a> {
    expr: Option<&'a Expr>,
    over: &'a [Expr],
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
        if self.reference_index(from_name, context).is_some() {
            self.error(
                *from_position,
                format!("'{from_name}' is reference data: it can only be the right side of a JOIN (FROM stream s JOIN {from_name} t ON s.key = t.key)"),
            );
            return None;
        }
        let timestamp = TimestampClause { expr: select.timestamp_by.as_ref(), over: &select.timestamp_over };
        let (source, mut shape, mut roots) =
            self.resolve_source(from_name, *from_position, timestamp, context);
        let mut prefixes = vec![from_name.clone()];
        prefixes.extend(select.from_alias.clone());
        // The substream keys of an input read with TIMESTAMP BY ... OVER, as canonical text.
        let over_keys: Vec<(String, Position, String)> = match source {
            Source::Input(index) if !context.inputs[index].over.is_empty() => select
                .timestamp_over
                .iter()
                .map(|key| (canonical_without_prefixes(key, &prefixes), key.position, display_name(key)))
                .collect(),
            _ => Vec::new(),
        };
        let mut matcher = None;
        if let Some(clause) = &select.match_recognize {
            if select.cross_apply.is_some() || select.join.is_some() {
                self.error(
                    clause.position,
                    "MATCH_RECOGNIZE together with CROSS APPLY or JOIN is not supported yet",
                );
                return None;
            }
            let timestamp_text =
                select.timestamp_by.as_ref().map(|expr| canonical_without_prefixes(expr, &prefixes));
            let (plan, names) =
                self.plan_match_recognize(clause, &shape, &prefixes, timestamp_text.as_deref(), &over_keys)?;
            matcher = Some(Box::new(plan));
            // Later clauses read the match rows: the partition columns, then the measures.
            shape = Shape::Columns(names);
            prefixes = clause.alias.iter().cloned().collect();
        }
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
        let mut reference_join = None;
        if let Some(join_clause) = &select.join {
            if select.cross_apply.is_some() {
                self.error(join_clause.right.1, "CROSS APPLY together with JOIN is not supported yet");
                return None;
            }
            if let Some(reference_idx) = self.reference_index(&join_clause.right.0, context) {
                let left_prefixes = std::mem::take(&mut prefixes);
                let (plan, joined) =
                    self.plan_reference_join(join_clause, reference_idx, shape, left_prefixes)?;
                shape = joined;
                reference_join = Some(plan);
            }
        }
        if let Some(join_clause) = select.join.as_ref().filter(|_| reference_join.is_none()) {
            let (right_name, right_position) = &join_clause.right;
            let right_timestamp = TimestampClause {
                expr: join_clause.right_timestamp_by.as_ref(),
                over: &join_clause.right_timestamp_over,
            };
            let (right_source, right_shape, right_roots) =
                self.resolve_source(right_name, *right_position, right_timestamp, context);
            let over_root =
                roots.iter().chain(&right_roots).any(|root| !context.inputs[*root].over.is_empty());
            if over_root {
                self.error(
                    *right_position,
                    "JOIN with an input read with TIMESTAMP BY ... OVER is not supported yet",
                );
                return None;
            }
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
            let mut scope = Scope::rows(&shape, &[], "ON");
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
                pattern: None,
            };
            self.compile(condition, &mut scope)
        });

        if is_aggregating && matcher.is_none() {
            // Each key of TIMESTAMP BY ... OVER has its own clock, so its windows close on their
            // own: they must not mix keys.
            for (key, position, name) in &over_keys {
                let grouped =
                    select.group_by.iter().any(|expr| canonical_without_prefixes(expr, &prefixes) == *key);
                if !grouped {
                    self.error(
                        *position,
                        format!("a statement that aggregates an input read with TIMESTAMP BY ... OVER must GROUP BY its key {name}: each key has its own clock"),
                    );
                    return None;
                }
            }
        }
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
            reference_join,
            output_shape,
            filter,
            analytics,
            matcher,
            body,
            consumers: Vec::new(),
        })
    }

    /// The reference input `name` is, unless a step of that name hides it.
    fn reference_index(&self, name: &str, context: &StatementContext<'_>) -> Option<usize> {
        if context.all_steps.iter().any(|step| step.eq_ignore_ascii_case(name)) {
            return None;
        }
        self.options.reference_inputs.iter().position(|reference| reference.eq_ignore_ascii_case(name))
    }

    /// A JOIN with reference data: the ON clause must equate columns of the two sides (among
    /// its top-level AND terms); those columns index the table. No time bound applies.
    fn plan_reference_join(
        &mut self,
        join: &Join,
        reference_idx: usize,
        left_shape: Shape,
        left_prefixes: Vec<String>,
    ) -> Option<(ReferenceJoinPlan, Shape)> {
        let (right_name, right_position) = &join.right;
        if let Some(timestamp_by) = &join.right_timestamp_by {
            self.error(
                timestamp_by.position,
                format!("'{right_name}' is reference data, which has no event time: remove its TIMESTAMP BY"),
            );
            return None;
        }
        let mut right_prefixes = vec![right_name.clone()];
        right_prefixes.extend(join.right_alias.clone());
        if left_prefixes
            .iter()
            .any(|left| right_prefixes.iter().any(|right| left.eq_ignore_ascii_case(right)))
        {
            self.error(*right_position, "the two sides of a JOIN need different names: give them aliases");
            return None;
        }
        if contains_aggregate(&join.on) {
            self.error(join.on.position, "aggregates are not allowed in ON");
            return None;
        }
        let sides = [left_prefixes.clone(), right_prefixes.clone()];
        let shape = Shape::Joined(Box::new([
            JoinSide { prefixes: left_prefixes, shape: left_shape },
            JoinSide { prefixes: right_prefixes, shape: Shape::Json },
        ]));
        let mut scope = Scope::rows(&shape, &[], "ON");
        let on = self.compile(&join.on, &mut scope);
        // The side an operand reads: every column it names belongs to that one side.
        let side_of = |expr: &Expr| {
            let mut found: Option<Option<usize>> = None;
            visit(expr, &mut |node| {
                if let ExprKind::Path(segments) = &node.kind {
                    let side = sides.iter().position(|prefixes| {
                        segments.len() > 1
                            && prefixes.iter().any(|prefix| prefix.eq_ignore_ascii_case(&segments[0]))
                    });
                    found = match found {
                        None => Some(side),
                        Some(seen) if seen == side => Some(seen),
                        Some(_) => Some(None),
                    };
                }
            });
            found.flatten()
        };
        let mut pairs = Vec::new();
        let mut terms = vec![&join.on];
        let mut n_terms = 0;
        while let Some(term) = terms.pop() {
            match &term.kind {
                ExprKind::Binary { op: BinaryOp::And, left, right } => {
                    terms.push(right);
                    terms.push(left);
                    continue;
                }
                ExprKind::Binary { op: BinaryOp::Eq, left, right } => match (side_of(left), side_of(right)) {
                    (Some(0), Some(1)) => pairs.push((&**left, &**right)),
                    (Some(1), Some(0)) => pairs.push((&**right, &**left)),
                    _ => {}
                },
                _ => {}
            }
            n_terms += 1;
        }
        let on_is_keys = n_terms == pairs.len();
        if pairs.is_empty() {
            self.error(
                join.on.position,
                format!("a JOIN with reference data needs ON to equate a column of each side, such as ON s.deviceId = {right_name}.deviceId (AND-ed with any other condition)"),
            );
            return None;
        }
        let (mut stream_keys, mut table_keys) = (Vec::new(), Vec::new());
        for (stream_side, table_side) in pairs {
            let mut scope = Scope::rows(&shape, &[], "ON");
            stream_keys.push(self.compile(stream_side, &mut scope)?);
            table_keys.push(self.compile(table_side, &mut scope)?);
        }
        let plan = ReferenceJoinPlan {
            reference_idx,
            stream_keys,
            table_keys,
            on: on?,
            on_is_keys,
            left_outer: join.left_outer,
        };
        Some((plan, shape))
    }

    /// Resolves a FROM or JOIN name to a step defined earlier or to an input.
    fn resolve_source(
        &mut self,
        name: &str,
        position: Position,
        timestamp: TimestampClause<'_>,
        context: &mut StatementContext<'_>,
    ) -> (Source, Shape, Vec<usize>) {
        let step = context.steps.iter().find(|(step, _)| step.eq_ignore_ascii_case(name));
        match step {
            Some((_, index)) => {
                let upstream = &context.statements[*index];
                if let Some(timestamp_by) = timestamp.expr {
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
                let index = self.input(name, timestamp, position, context.inputs);
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
        let mut scope = Scope::rows(shape, prefixes, "CROSS APPLY");
        let arg = self.compile(&args[0], &mut scope)?;
        Some(Expand { kind, arg, alias: cross_apply.alias.clone() })
    }

    fn input(
        &mut self,
        name: &str,
        timestamp: TimestampClause<'_>,
        from_position: Position,
        inputs: &mut Vec<InputPlan>,
    ) -> usize {
        let timestamp_expr = timestamp.expr;
        let timestamp_text = timestamp_expr.map(|expr| {
            let mut text = expr.canonical();
            if !timestamp.over.is_empty() {
                let keys: Vec<String> = timestamp.over.iter().map(Expr::canonical).collect();
                text.push_str(&format!(" OVER {}", keys.join(", ")));
            }
            text
        });
        let shape = Shape::Json;
        let mut over_scope = Scope::rows(&shape, &[name.to_string()], "TIMESTAMP BY ... OVER");
        let over = if timestamp.over.iter().any(contains_aggregate) {
            self.error(timestamp.over[0].position, "aggregates are not allowed in TIMESTAMP BY ... OVER");
            Vec::new()
        } else {
            self.compile_args(timestamp.over, &mut over_scope).unwrap_or_default()
        };
        let timestamp_by = timestamp_expr.and_then(|timestamp_by| {
            let shape = Shape::Json;
            let mut scope = Scope::rows(&shape, &[name.to_string()], "TIMESTAMP BY");
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
        inputs.push(InputPlan { name: name.to_string(), timestamp_by, over, timestamp_text });
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
            pattern: None,
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
        let mut row_scope = Scope::rows(shape, prefixes, "GROUP BY");
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
                        pattern: None,
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
                pattern: None,
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
    if statements.len() > STATEMENTS_MAX {
        planner.error(Position::default(), format!("a job may have at most {STATEMENTS_MAX} statements"));
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
    for statement in statements.iter().take(STATEMENTS_MAX) {
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
                    reference_join: None,
                    output_shape: Shape::Json,
                    filter: None,
                    analytics: Vec::new(),
                    matcher: None,
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
    Ok(Plan { inputs, references: options.reference_inputs.clone(), statements: plans })
}

/// Sorts diagnostics by position, drops duplicates and caps their number.
pub(crate) fn finish_diagnostics(mut diagnostics: Vec<Diagnostic>) -> Vec<Diagnostic> {
    diagnostics.sort_by_key(|diagnostic| (diagnostic.line, diagnostic.column));
    diagnostics.dedup();
    if diagnostics.len() > DIAGNOSTICS_MAX {
        let more = diagnostics.len() - DIAGNOSTICS_MAX;
        diagnostics.truncate(DIAGNOSTICS_MAX);
        let last = diagnostics[DIAGNOSTICS_MAX - 1].clone();
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
    use crate::agg::AggregateKind;
    use crate::expr::{ColumnRef, CompiledExpr};
    use crate::lexer::lex;
    use crate::parser::Parser;
    use crate::plan::{AnalyticKind, WindowSpec};

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
