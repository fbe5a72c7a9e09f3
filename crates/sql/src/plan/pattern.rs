//! MATCH_RECOGNIZE planning: the clause to a [`MatchPlan`], with a positioned diagnostic for
//! every semantic error (an unknown variable, a DEFINE for a variable the pattern does not
//! use, an aggregate over something that is not a variable's rows, a pattern that can match
//! no rows, ...).
//!
//! The pattern becomes a program of [`Instruction`]s in the order of the pattern's
//! preferences, so that the matcher's first complete match is the one a backtracking regular
//! expression engine would find (greedy quantifiers, left alternative first). Quantifiers with
//! bounds are unrolled, which is why the program's size is limited ([`PATTERN_STEPS_MAX`]).
//!
//! In DEFINE and MEASURES a name is read as follows. `X.col` with `X` a pattern variable reads
//! a row mapped to `X`: in `X`'s own DEFINE the current row, elsewhere the last row mapped to
//! `X` so far (`NULL` if none). A name without a variable reads the current row in DEFINE and
//! the match's last row in MEASURES. `FIRST(X.e [, n])`, `LAST(X.e [, n])` and the aggregates
//! read the rows mapped to `X` (every row of the match without a variable), the current row
//! included in DEFINE when it is being tried as `X`. Everything that reads other rows than the
//! current one becomes a [`Navigation`], which the matcher computes per partial match.

use crate::agg::AggregateKind;
use crate::ast::{Expr, ExprKind, Literal, MatchRecognize, Pattern, PatternKind, SkipMode};
use crate::error::Position;
use crate::expr::CompiledExpr;

use super::expr::{default_column_name, visit, Planner, Scope};
use super::{Condition, Instruction, MatchPlan, Navigation, Shape};

/// The most program steps a pattern may compile to, counting each unrolled copy of a bounded
/// quantifier (`A{3}` is three steps): it bounds the work and state of one partial match.
pub const PATTERN_STEPS_MAX: usize = 10_000;
/// The largest `n` of `FIRST(X.e, n)` and `LAST(X.e, n)`.
pub const NAVIGATION_OFFSET_MAX: i64 = 10_000;

/// Which clause of MATCH_RECOGNIZE an expression is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Clause {
    /// The DEFINE condition of this variable.
    Define(u16),
    Measures,
}

/// What names mean in DEFINE and MEASURES (see the module docs).
pub(super) struct PatternScope {
    variables: Vec<String>,
    clause: Clause,
    /// Inside the argument of FIRST/LAST or an aggregate: columns read the visited row, which
    /// is one of this variable's (`None`: of any variable).
    visiting: Option<Option<u16>>,
    navigations: Vec<Navigation>,
}

impl PatternScope {
    fn variable(&self, name: &str) -> Option<u16> {
        self.variables
            .iter()
            .position(|variable| variable.eq_ignore_ascii_case(name))
            .map(|index| index as u16)
    }
}

fn is_navigation_name(lower: &str) -> bool {
    matches!(lower, "first" | "last" | "classifier")
        || AggregateKind::is_aggregate_name(lower)
        || matches!(lower, "topone" | "percentile_cont" | "percentile_disc" | "lag" | "isfirst")
}

/// True if the pattern can match an empty sequence of rows.
fn nullable(pattern: &Pattern) -> bool {
    match &pattern.kind {
        PatternKind::Variable(_) | PatternKind::Any => false,
        PatternKind::Concat(items) => items.iter().all(nullable),
        PatternKind::Alternation(alternatives) => alternatives.iter().any(nullable),
        PatternKind::Repeat { inner, min, .. } => *min == 0 || nullable(inner),
    }
}

/// The number of program steps the pattern compiles to (see `emit`), saturating.
fn program_size(pattern: &Pattern) -> usize {
    match &pattern.kind {
        PatternKind::Variable(_) | PatternKind::Any => 1,
        PatternKind::Concat(items) => items.iter().map(program_size).fold(0, usize::saturating_add),
        PatternKind::Alternation(alternatives) => {
            // A Split and a Jump around every alternative but the last.
            let jumps = 2 * alternatives.len().saturating_sub(1);
            alternatives.iter().map(program_size).fold(jumps, usize::saturating_add)
        }
        PatternKind::Repeat { inner, min, max } => {
            let inner = program_size(inner);
            let mandatory = inner.saturating_mul(*min as usize);
            let optional = match max {
                // Split, body, Jump.
                None => inner.saturating_add(2),
                // Split and body for each optional copy.
                Some(max) => inner.saturating_add(1).saturating_mul(max.saturating_sub(*min) as usize),
            };
            mandatory.saturating_add(optional)
        }
    }
}

/// Appends the program of `pattern` to `program`, in preference order.
fn emit(pattern: &Pattern, variables: &[String], program: &mut Vec<Instruction>) {
    match &pattern.kind {
        PatternKind::Variable(name) => {
            let index =
                variables.iter().position(|variable| variable.eq_ignore_ascii_case(name)).unwrap_or(0);
            program.push(Instruction::Consume(index as u16));
        }
        PatternKind::Any => {
            let index = variables.iter().position(|variable| variable == ".").unwrap_or(0);
            program.push(Instruction::Consume(index as u16));
        }
        PatternKind::Concat(items) => items.iter().for_each(|item| emit(item, variables, program)),
        PatternKind::Alternation(alternatives) => {
            // Split(first, rest) ... each alternative jumps to the end when it is done.
            let mut jumps = Vec::new();
            for (index, alternative) in alternatives.iter().enumerate() {
                let is_last = index + 1 == alternatives.len();
                let split_at = program.len();
                if !is_last {
                    program.push(Instruction::Split(0, 0));
                }
                emit(alternative, variables, program);
                if !is_last {
                    jumps.push(program.len());
                    program.push(Instruction::Jump(0));
                    let next = program.len() as u32;
                    program[split_at] = Instruction::Split(split_at as u32 + 1, next);
                }
            }
            let end = program.len() as u32;
            for jump in jumps {
                program[jump] = Instruction::Jump(end);
            }
        }
        PatternKind::Repeat { inner, min, max } => {
            for _ in 0..*min {
                emit(inner, variables, program);
            }
            match max {
                None => {
                    // loop: Split(body, exit); body; Jump(loop)
                    let split_at = program.len();
                    program.push(Instruction::Split(0, 0));
                    emit(inner, variables, program);
                    program.push(Instruction::Jump(split_at as u32));
                    let exit = program.len() as u32;
                    program[split_at] = Instruction::Split(split_at as u32 + 1, exit);
                }
                Some(max) => {
                    // Each optional copy: Split(body, end); skipping one skips the rest.
                    let mut splits = Vec::new();
                    for _ in *min..*max {
                        splits.push(program.len());
                        program.push(Instruction::Split(0, 0));
                        emit(inner, variables, program);
                    }
                    let end = program.len() as u32;
                    for split_at in splits {
                        program[split_at] = Instruction::Split(split_at as u32 + 1, end);
                    }
                }
            }
        }
    }
}

/// Collects the pattern's variables in order of first appearance.
fn collect_variables(pattern: &Pattern, variables: &mut Vec<String>) {
    match &pattern.kind {
        PatternKind::Variable(name) => {
            if !variables.iter().any(|variable| variable.eq_ignore_ascii_case(name)) {
                variables.push(name.clone());
            }
        }
        PatternKind::Any => {
            if !variables.iter().any(|variable| variable == ".") {
                variables.push(".".to_string());
            }
        }
        PatternKind::Concat(items) | PatternKind::Alternation(items) => {
            items.iter().for_each(|item| collect_variables(item, variables));
        }
        PatternKind::Repeat { inner, .. } => collect_variables(inner, variables),
    }
}

impl Planner<'_> {
    /// Reports every quantifier whose operand can match no rows (`(A?)*`): it would loop
    /// without consuming a row.
    fn check_quantified_operands(&mut self, pattern: &Pattern) {
        match &pattern.kind {
            PatternKind::Variable(_) | PatternKind::Any => {}
            PatternKind::Concat(items) | PatternKind::Alternation(items) => {
                items.iter().for_each(|item| self.check_quantified_operands(item));
            }
            PatternKind::Repeat { inner, .. } => {
                if nullable(inner) {
                    self.error(
                        inner.position,
                        "a quantified part of a pattern must need at least one row (it can match none here)",
                    );
                }
                self.check_quantified_operands(inner);
            }
        }
    }

    /// Plans `MATCH_RECOGNIZE`. `shape` and `prefixes` describe the rows it reads,
    /// `timestamp_text` the TIMESTAMP BY expression of its input (for Flink's ORDER BY), and
    /// `over_keys` the canonical OVER keys of an input read with substreams, which PARTITION
    /// BY must include. Returns the plan and the names of its output columns.
    pub(super) fn plan_match_recognize(
        &mut self,
        clause: &MatchRecognize,
        shape: &Shape,
        prefixes: &[String],
        timestamp_text: Option<&str>,
        over_keys: &[(String, Position, String)],
    ) -> Option<(MatchPlan, Vec<String>)> {
        let mut failed = false;
        let duration_ms = match &clause.limit_duration {
            Some((unit, size)) => self.duration(unit, size, "LIMIT DURATION"),
            None => {
                self.error(
                    clause.position,
                    "MATCH_RECOGNIZE needs LIMIT DURATION(unit, n) (or WITHIN INTERVAL 'n' unit): partial matches must expire",
                );
                None
            }
        };
        failed |= duration_ms.is_none();
        for (key, descending) in &clause.order_by {
            let text = super::expr::canonical_without_prefixes(key, prefixes);
            let is_event_time = Some(text.as_str()) == timestamp_text
                || text == "system.timestamp()"
                || text == "system.timestamp";
            if !is_event_time || *descending || clause.order_by.len() > 1 {
                self.error(
                    key.position,
                    "MATCH_RECOGNIZE reads rows in event-time order: ORDER BY may only name the TIMESTAMP BY expression, ascending",
                );
                failed = true;
            }
        }
        // The pattern.
        self.check_quantified_operands(&clause.pattern);
        if nullable(&clause.pattern) {
            self.error(
                clause.pattern.position,
                "the pattern can match no rows at all: it must need at least one row",
            );
            failed = true;
        }
        let size = program_size(&clause.pattern);
        if size > PATTERN_STEPS_MAX {
            self.error(
                clause.pattern.position,
                format!(
                    "the pattern is too large: its quantifiers unroll to more than {PATTERN_STEPS_MAX} steps"
                ),
            );
            return None;
        }
        let mut variables = Vec::new();
        collect_variables(&clause.pattern, &mut variables);
        if variables.len() >= usize::from(u16::MAX) {
            self.error(clause.pattern.position, "the pattern has too many variables");
            return None;
        }
        let mut program = Vec::with_capacity(size + 1);
        emit(&clause.pattern, &variables, &mut program);
        program.push(Instruction::Match);

        // PARTITION BY, over the input rows.
        let mut row_scope = Scope::rows(shape, prefixes, "PARTITION BY");
        let partition_by = self.compile_args(&clause.partition_by, &mut row_scope);
        failed |= partition_by.is_none();
        for (key, position, name) in over_keys {
            let partitioned = clause
                .partition_by
                .iter()
                .any(|expr| super::expr::canonical_without_prefixes(expr, prefixes) == *key);
            if !partitioned {
                self.error(
                    *position,
                    format!("MATCH_RECOGNIZE over an input read with TIMESTAMP BY ... OVER must PARTITION BY its key {name}: each key has its own clock"),
                );
                failed = true;
            }
        }

        // DEFINE.
        let mut conditions: Vec<Option<Condition>> = vec![None; variables.len()];
        let mut row_local = true;
        for (name, position, condition) in &clause.define {
            let Some(index) = variables.iter().position(|variable| variable.eq_ignore_ascii_case(name))
            else {
                self.error(
                    *position,
                    format!(
                        "DEFINE names '{name}', which is not a variable of the PATTERN (it has: {})",
                        variables.join(", ")
                    ),
                );
                failed = true;
                continue;
            };
            if conditions[index].is_some() {
                self.error(*position, format!("the variable '{name}' is defined twice"));
                failed = true;
                continue;
            }
            let mut pattern_scope = PatternScope {
                variables: variables.clone(),
                clause: Clause::Define(index as u16),
                visiting: None,
                navigations: Vec::new(),
            };
            let compiled = {
                let mut scope =
                    Scope { pattern: Some(&mut pattern_scope), ..Scope::rows(shape, prefixes, "DEFINE") };
                self.compile(condition, &mut scope)
            };
            match compiled {
                Some(expr) => {
                    row_local &= pattern_scope.navigations.is_empty();
                    conditions[index] = Some(Condition { expr, navigations: pattern_scope.navigations });
                }
                None => failed = true,
            }
        }

        // MEASURES.
        let mut measure_scope = PatternScope {
            variables: variables.clone(),
            clause: Clause::Measures,
            visiting: None,
            navigations: Vec::new(),
        };
        let mut measures = Vec::new();
        let mut measure_names: Vec<String> = Vec::new();
        for (index, (expr, alias)) in clause.measures.iter().enumerate() {
            let name = alias.clone().unwrap_or_else(|| default_column_name(expr, index));
            if measure_names.iter().any(|existing| existing.eq_ignore_ascii_case(&name)) {
                self.error(expr.position, format!("duplicate measure '{name}'; name it with AS"));
                failed = true;
            }
            measure_names.push(name);
            let compiled = {
                let mut scope =
                    Scope { pattern: Some(&mut measure_scope), ..Scope::rows(shape, prefixes, "MEASURES") };
                self.compile(expr, &mut scope)
            };
            match compiled {
                Some(compiled) => measures.push(compiled),
                None => failed = true,
            }
        }
        if failed {
            return None;
        }
        let partition_by = partition_by?;
        // Partition columns first (a measure of the same name replaces one), then measures.
        let mut names = Vec::new();
        let mut partition_outputs = Vec::new();
        for (index, expr) in clause.partition_by.iter().enumerate() {
            let name = default_column_name(expr, index);
            let replaced = measure_names.iter().any(|measure| measure.eq_ignore_ascii_case(&name));
            if !replaced && !names.iter().any(|existing: &String| existing.eq_ignore_ascii_case(&name)) {
                partition_outputs.push(index);
                names.push(name);
            }
        }
        names.extend(measure_names);
        let plan = MatchPlan {
            duration_ms: duration_ms?,
            partition_by,
            skip: clause.skip.unwrap_or(SkipMode::PastLastRow),
            program,
            variables,
            conditions,
            row_local,
            partition_outputs,
            measures,
            measure_navigations: measure_scope.navigations,
        };
        Some((plan, names))
    }

    /// A column in DEFINE or MEASURES (see the module docs for what it reads).
    pub(super) fn pattern_column(
        &mut self,
        segments: &[String],
        position: Position,
        scope: &mut Scope<'_>,
    ) -> Option<CompiledExpr> {
        let pattern = scope.pattern.as_deref()?;
        let variable = if segments.len() > 1 { pattern.variable(&segments[0]) } else { None };
        let input_prefixed = segments.len() > 1
            && scope.prefixes.iter().any(|prefix| prefix.eq_ignore_ascii_case(&segments[0]));
        if segments.len() > 1 && variable.is_none() && !input_prefixed {
            self.error(
                position,
                format!(
                    "unknown pattern variable '{}' (the PATTERN has: {}); a name with a dot must start with a variable",
                    segments[0],
                    pattern.variables.join(", ")
                ),
            );
            return None;
        }
        let path: &[String] = if variable.is_some() { &segments[1..] } else { segments };
        let (visiting, clause) = (pattern.visiting, pattern.clause);
        let reads_current_row = match (visiting, clause) {
            // Inside FIRST/LAST/an aggregate the argument reads the row being visited; the
            // caller checked that it reads one variable's rows.
            (Some(_), _) => true,
            (None, Clause::Define(defining)) => variable.is_none_or(|variable| variable == defining),
            (None, Clause::Measures) => false,
        };
        if reads_current_row {
            return self.column(path, position, &mut row_scope(scope));
        }
        // Another variable's last row (in DEFINE), or the match's (in MEASURES).
        let value = self.column(path, position, &mut row_scope(scope))?;
        Some(push_navigation(scope, Navigation::Offset { variable, from_last: true, offset: 0, value }))
    }

    /// FIRST, LAST, the aggregates and `Classifier()` in DEFINE and MEASURES. `None` when the
    /// function is none of those (a scalar, compiled as usual).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn pattern_call(
        &mut self,
        expr: &Expr,
        name: &str,
        args: &[Expr],
        star: bool,
        distinct: bool,
        has_over: bool,
        scope: &mut Scope<'_>,
    ) -> Option<Option<CompiledExpr>> {
        let lower = name.to_ascii_lowercase();
        if !is_navigation_name(&lower) && !has_over {
            return None;
        }
        let position = expr.position;
        let upper = name.to_ascii_uppercase();
        let pattern = scope.pattern.as_deref()?;
        if has_over
            || matches!(lower.as_str(), "topone" | "percentile_cont" | "percentile_disc" | "lag" | "isfirst")
        {
            self.error(position, format!("{upper} is not supported in MATCH_RECOGNIZE"));
            return Some(None);
        }
        if pattern.visiting.is_some() {
            self.error(position, format!("{upper} cannot be nested inside FIRST, LAST or an aggregate"));
            return Some(None);
        }
        if lower == "classifier" {
            if pattern.clause != Clause::Measures {
                self.error(position, "Classifier() is only allowed in MEASURES");
                return Some(None);
            }
            if !args.is_empty() {
                self.error(position, "Classifier() takes no arguments");
                return Some(None);
            }
            return Some(Some(push_navigation(scope, Navigation::Classifier)));
        }
        if star {
            if lower != "count" {
                self.error(position, format!("'*' is only allowed in COUNT(*), not in {name}"));
                return Some(None);
            }
            let navigation =
                Navigation::Aggregate { variable: None, kind: AggregateKind::CountStar, arg: None };
            return Some(Some(push_navigation(scope, navigation)));
        }
        let is_offset = lower == "first" || lower == "last";
        let kind = if is_offset {
            None
        } else {
            match AggregateKind::lookup(&lower, distinct) {
                Some(kind) => Some(kind),
                None => {
                    self.error(position, format!("DISTINCT is only supported in COUNT, not in {name}"));
                    return Some(None);
                }
            }
        };
        if distinct && is_offset {
            self.error(position, format!("DISTINCT is not allowed in {upper}"));
            return Some(None);
        }
        let arity_ok = if is_offset { (1..=2).contains(&args.len()) } else { args.len() == 1 };
        if !arity_ok {
            let expected = if is_offset { "(X.column [, n])" } else { "one argument, as in SUM(X.column)" };
            self.error(position, format!("{upper} takes {expected}, found {} arguments", args.len()));
            return Some(None);
        }
        let offset = match args.get(1) {
            None => 0,
            Some(offset) => {
                match &offset.kind {
                    ExprKind::Literal(Literal::Int(value)) if (0..=NAVIGATION_OFFSET_MAX).contains(value) => {
                        *value as usize
                    }
                    _ => {
                        self.error(
                        offset.position,
                        format!("the offset of {upper} must be a whole number from 0 to {NAVIGATION_OFFSET_MAX}"),
                    );
                        return Some(None);
                    }
                }
            }
        };
        // Which rows the argument reads: one variable's, or every row of the match.
        let mut variables_read: Vec<Option<u16>> = Vec::new();
        let mut unknown: Option<(String, Position)> = None;
        visit(&args[0], &mut |node| {
            if let ExprKind::Path(segments) = &node.kind {
                let is_timestamp = segments.len() == 2
                    && segments[0].eq_ignore_ascii_case("System")
                    && segments[1].eq_ignore_ascii_case("Timestamp");
                if is_timestamp {
                    return;
                }
                let read = if segments.len() > 1 {
                    match pattern.variable(&segments[0]) {
                        Some(variable) => Some(variable),
                        None => {
                            if !scope.prefixes.iter().any(|prefix| prefix.eq_ignore_ascii_case(&segments[0]))
                            {
                                unknown.get_or_insert((segments[0].clone(), node.position));
                            }
                            None
                        }
                    }
                } else {
                    None
                };
                if !variables_read.contains(&read) {
                    variables_read.push(read);
                }
            }
        });
        if let Some((name, position)) = unknown {
            self.error(
                position,
                format!(
                    "unknown pattern variable '{name}' (the PATTERN has: {}); a name with a dot must start with a variable",
                    pattern.variables.join(", ")
                ),
            );
            return Some(None);
        }
        let variable = match variables_read.as_slice() {
            [variable] => *variable,
            [] => {
                self.error(
                    args[0].position,
                    format!(
                        "{upper} over a non-variable: it reads rows of the match, as in {upper}(A.price)"
                    ),
                );
                return Some(None);
            }
            _ => {
                self.error(
                    args[0].position,
                    format!(
                        "{upper} must read the rows of one pattern variable, as in {upper}(A.price * A.tax)"
                    ),
                );
                return Some(None);
            }
        };
        let saved = scope.pattern.as_deref_mut().map(|pattern| pattern.visiting.replace(variable));
        let compiled = self.compile(&args[0], scope);
        if let (Some(pattern), Some(saved)) = (scope.pattern.as_deref_mut(), saved) {
            pattern.visiting = saved;
        }
        let Some(compiled) = compiled else { return Some(None) };
        if let (Some(kind), CompiledExpr::Const(value)) = (kind, &compiled) {
            if let Err(message) = crate::agg::Accumulator::new(kind).check(kind, value) {
                self.error(args[0].position, message);
                return Some(None);
            }
        }
        let navigation = match kind {
            None => Navigation::Offset { variable, from_last: lower == "last", offset, value: compiled },
            Some(kind) => Navigation::Aggregate { variable, kind, arg: Some(compiled) },
        };
        Some(Some(push_navigation(scope, navigation)))
    }
}

/// A scope for the columns of one input row.
fn row_scope<'s>(scope: &Scope<'s>) -> Scope<'s> {
    Scope::rows(scope.shape, &scope.prefixes, scope.clause)
}

/// Records a navigation of the clause being compiled; the expression reads its value.
fn push_navigation(scope: &mut Scope<'_>, navigation: Navigation) -> CompiledExpr {
    match scope.pattern.as_deref_mut() {
        Some(pattern) => {
            pattern.navigations.push(navigation);
            CompiledExpr::Analytic(pattern.navigations.len() - 1)
        }
        None => CompiledExpr::Const(crate::value::Value::Null),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lexer::lex;
    use crate::parser::Parser;

    fn program_of(pattern: &str) -> (Vec<Instruction>, Vec<String>) {
        let (tokens, errors) = lex(&format!(
            "SELECT * INTO o FROM i MATCH_RECOGNIZE (LIMIT DURATION(second, 1) PATTERN ({pattern}))"
        ));
        assert!(errors.is_empty());
        let mut parser = Parser::new(tokens);
        let statements = parser.parse_job();
        assert!(parser.diagnostics.is_empty(), "{:?}", parser.diagnostics);
        let clause = statements[0].select.match_recognize.as_ref().map(|clause| clause.pattern.clone());
        let pattern = clause.unwrap_or(Pattern { kind: PatternKind::Any, position: Position::default() });
        let mut variables = Vec::new();
        collect_variables(&pattern, &mut variables);
        let mut program = Vec::new();
        emit(&pattern, &variables, &mut program);
        program.push(Instruction::Match);
        assert_eq!(program.len(), program_size(&pattern) + 1);
        (program, variables)
    }

    #[test]
    fn quantifiers_and_alternation_compile_in_preference_order() {
        use Instruction::*;
        // A+ B?: A, then greedily another A (Split's first branch), then B or not.
        let (program, variables) = program_of("A+ B?");
        assert_eq!(variables, vec!["A", "B"]);
        assert_eq!(
            program,
            vec![Consume(0), Split(2, 4), Consume(0), Jump(1), Split(5, 6), Consume(1), Match]
        );
        // (A | B) C{1,2}
        let (program, _) = program_of("(A | B) C{1,2}");
        assert_eq!(
            program,
            vec![Split(1, 3), Consume(0), Jump(4), Consume(1), Consume(2), Split(6, 7), Consume(2), Match]
        );
        // . and {,2}
        let (program, variables) = program_of(".{,2} A");
        assert_eq!(variables, vec![".", "A"]);
        assert_eq!(program, vec![Split(1, 4), Consume(0), Split(3, 4), Consume(0), Consume(1), Match]);
    }
}
