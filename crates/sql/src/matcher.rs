//! MATCH_RECOGNIZE at run time: a nondeterministic automaton per partition key, run as a Pike
//! VM over the pattern's program (`plan::Instruction`), with bounded state.
//!
//! Every row of a partition may start a match, so each row opens an *attempt*. An attempt
//! holds its *partial matches* (a program position plus the variable each of its rows was
//! mapped to), in the order the pattern prefers them: greedy quantifiers prefer one more
//! iteration, alternation its left side. A row advances every partial match whose next
//! variable's DEFINE condition holds for it (forking at each `Split`); when one reaches
//! `Match`, it is the attempt's best match so far and every partial match it is preferred to is
//! dropped, while those preferred to it carry on and may still replace it. An attempt is
//! decided when no partial match is left, and its best match, if any, is the one a
//! backtracking matcher would find from that row: the property test checks exactly this.
//!
//! Matches come out per partition in the order of their first rows, one row per match, stamped
//! with the event time of their last row. `AFTER MATCH SKIP TO NEXT ROW` keeps every attempt;
//! `SKIP PAST LAST ROW` drops the attempts that start inside a match once it is emitted
//! (attempts run speculatively until then, since an earlier one may still fail).
//!
//! State is bounded. An attempt lives at most `LIMIT DURATION` of event time: a row later than
//! that cannot join it, and once the close boundary passes `start + duration` no row can, so it
//! is decided (the boundary reaches idle partitions through [`MatcherState::advance`]). A
//! partition keeps the rows of its undecided attempts only, and at most
//! [`PARTIAL_MATCHES_PER_KEY_MAX`] partial matches: beyond it the least preferred are dropped
//! (the newest attempts first) and an error says so. When no DEFINE condition reads other rows
//! than the current one, two partial matches at the same program position accept the same
//! continuations, so only the preferred one is kept (the classic Pike VM): the count per attempt
//! is then at most the program's length.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use crate::agg::Accumulator;
use crate::expr::{eval_keys, truthy, Context, OwnedRow, Row};
use crate::plan::{Instruction, MatchPlan, Navigation, SkipMode};
use crate::value::{KeyMap, KeyPart, Value};

/// The most partial matches one partition key may hold at once, over all its attempts.
pub const PARTIAL_MATCHES_PER_KEY_MAX: usize = 10_000;

/// One partial match: the program position of the next row's variable, and the variable each
/// row so far was mapped to (the attempt's rows, from its first).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct Thread {
    pc: u32,
    variables: Vec<u16>,
}

/// A decided match: its output row (partition columns, then measures), the time of its last
/// row, and its last row's sequence number in the partition.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Outcome {
    row: Vec<Value>,
    time_ms: i64,
    end_seq: u64,
}

/// The search for a match starting at one row.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Attempt {
    start_seq: u64,
    start_ms: i64,
    /// Partial matches still alive, preferred first.
    threads: Vec<Thread>,
    /// The preferred complete match so far (its variables) and the time of its last row.
    best: Option<(Vec<u16>, i64)>,
    /// Set when the attempt is decided with a match.
    outcome: Option<Outcome>,
}

impl Attempt {
    fn is_pending(&self) -> bool {
        !self.threads.is_empty()
    }

    /// The earliest time a match of this attempt can be stamped with, if it has one yet.
    fn hold_ms(&self) -> Option<i64> {
        match (&self.outcome, &self.best) {
            (Some(outcome), _) => Some(outcome.time_ms),
            (None, Some((_, time_ms))) => Some(*time_ms),
            (None, None) => None,
        }
    }
}

/// The matching state of one partition key.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Partition {
    key_values: Vec<Value>,
    /// The rows of the undecided attempts: `rows[0]` has sequence number `first_seq`.
    rows: VecDeque<(i64, OwnedRow)>,
    first_seq: u64,
    next_seq: u64,
    /// In order of their first rows.
    attempts: VecDeque<Attempt>,
    /// The entries this partition has in the state's indexes (rebuilt after a restore).
    #[serde(skip)]
    indexed_deadline: Option<i64>,
    #[serde(skip)]
    indexed_hold: Option<i64>,
}

impl Partition {
    fn deadline_start_ms(&self) -> Option<i64> {
        self.attempts.iter().filter(|attempt| attempt.is_pending()).map(|attempt| attempt.start_ms).min()
    }

    fn hold_ms(&self) -> Option<i64> {
        self.attempts.iter().filter_map(Attempt::hold_ms).min()
    }

    fn n_threads(&self) -> usize {
        self.attempts.iter().map(|attempt| attempt.threads.len()).sum()
    }
}

/// The rows an attempt's partial matches refer to: the partition's buffer, and the row being
/// matched (not buffered yet).
struct RowsView<'a> {
    rows: &'a VecDeque<(i64, OwnedRow)>,
    first_seq: u64,
    current: Option<(u64, Row<'a>, i64)>,
}

impl<'a> RowsView<'a> {
    fn get(&self, seq: u64) -> (Row<'a>, i64) {
        if let Some((current_seq, row, time_ms)) = self.current {
            if current_seq == seq {
                return (row, time_ms);
            }
        }
        // The buffer holds every row of an undecided attempt (see `Partition::rows`); an empty
        // slot row would only come from a bug, and reads as NULLs.
        let index = usize::try_from(seq.wrapping_sub(self.first_seq)).unwrap_or(usize::MAX);
        match self.rows.get(index) {
            Some((time_ms, row)) => (row.as_row(), *time_ms),
            None => (Row::Slots(&[]), i64::MIN),
        }
    }
}

/// The rows a navigation visits: an attempt's rows with their variables, and in DEFINE the row
/// being tried as `current_variable`.
struct MatchRows<'v, 'a> {
    view: &'v RowsView<'a>,
    start_seq: u64,
    variables: &'v [u16],
    current_variable: Option<u16>,
}

impl<'a> MatchRows<'_, 'a> {
    fn len(&self) -> usize {
        self.variables.len() + usize::from(self.current_variable.is_some())
    }

    /// The variable, row and time of the `index`-th row.
    fn get(&self, index: usize) -> (u16, Row<'a>, i64) {
        match self.variables.get(index) {
            Some(variable) => {
                let (row, time_ms) = self.view.get(self.start_seq + index as u64);
                (*variable, row, time_ms)
            }
            None => {
                let (row, time_ms) = self.view.get(self.start_seq + index as u64);
                (self.current_variable.unwrap_or(0), row, time_ms)
            }
        }
    }
}

fn navigate(plan: &MatchPlan, navigation: &Navigation, rows: &MatchRows<'_, '_>) -> Result<Value, String> {
    let wanted =
        |variable: Option<u16>, row_variable: u16| variable.is_none_or(|variable| variable == row_variable);
    match navigation {
        Navigation::Offset { variable, from_last, offset, value } => {
            let indexes: Box<dyn Iterator<Item = usize>> =
                if *from_last { Box::new((0..rows.len()).rev()) } else { Box::new(0..rows.len()) };
            let found = indexes
                .filter_map(|index| {
                    let (row_variable, row, time_ms) = rows.get(index);
                    wanted(*variable, row_variable).then_some((row, time_ms))
                })
                .nth(*offset);
            match found {
                Some((row, time_ms)) => value.eval(&Context { row, timestamp_ms: time_ms, analytic: &[] }),
                None => Ok(Value::Null),
            }
        }
        Navigation::Aggregate { variable, kind, arg } => {
            let mut accumulator = Accumulator::new(*kind);
            for index in 0..rows.len() {
                let (row_variable, row, time_ms) = rows.get(index);
                if !wanted(*variable, row_variable) {
                    continue;
                }
                let value = match arg {
                    Some(arg) => arg.eval(&Context { row, timestamp_ms: time_ms, analytic: &[] })?,
                    None => Value::Int(1),
                };
                accumulator.check(*kind, &value)?;
                accumulator.apply(&value);
            }
            Ok(accumulator.result())
        }
        Navigation::Classifier => {
            let names = (0..rows.len())
                .map(|index| {
                    let (variable, _, _) = rows.get(index);
                    serde_json::Value::String(
                        plan.variables.get(usize::from(variable)).cloned().unwrap_or_default(),
                    )
                })
                .collect();
            Ok(Value::Json(Box::new(serde_json::Value::Array(names))))
        }
    }
}

/// Where a step puts the partial matches it creates, dropping those another one dominates.
struct NextThreads {
    threads: Vec<Thread>,
    /// Row-local patterns: program positions already taken (by a preferred partial match).
    taken: Vec<bool>,
    /// Otherwise: per position, the partial matches already there (same position and rows
    /// mean the same future).
    by_pc: HashMap<u32, Vec<usize>>,
    row_local: bool,
}

impl NextThreads {
    fn new(plan: &MatchPlan) -> NextThreads {
        NextThreads {
            threads: Vec::new(),
            taken: if plan.row_local { vec![false; plan.program.len()] } else { Vec::new() },
            by_pc: HashMap::new(),
            row_local: plan.row_local,
        }
    }

    /// Adds a partial match unless one at least as preferred behaves the same. `budget` counts
    /// down the partition's allowance; `false` when it ran out.
    fn add(&mut self, pc: u32, variables: &[u16], budget: &mut usize) -> bool {
        if self.row_local {
            let Some(taken) = self.taken.get_mut(pc as usize) else { return true };
            if *taken {
                return true;
            }
            *taken = true;
        } else {
            let same = self.by_pc.get(&pc).is_some_and(|indexes| {
                indexes.iter().any(|index| self.threads[*index].variables == variables)
            });
            if same {
                return true;
            }
        }
        if *budget == 0 {
            return false;
        }
        *budget -= 1;
        if !self.row_local {
            self.by_pc.entry(pc).or_default().push(self.threads.len());
        }
        self.threads.push(Thread { pc, variables: variables.to_vec() });
        true
    }
}

/// Follows the program from `pc` without consuming a row, in preference order: partial
/// matches stop at the next `Consume`. Returns true when `Match` is reached, after which
/// nothing less preferred is followed. `overflow` is set when the budget ran out.
fn follow(
    program: &[Instruction],
    pc: u32,
    variables: &[u16],
    next: &mut NextThreads,
    budget: &mut usize,
    overflow: &mut bool,
) -> bool {
    // Depth-first with an explicit stack (patterns may be long): the preferred branch of a
    // Split is pushed last so that it is taken first.
    let mut stack = vec![pc];
    while let Some(pc) = stack.pop() {
        match program.get(pc as usize) {
            Some(Instruction::Consume(_)) => *overflow |= !next.add(pc, variables, budget),
            Some(Instruction::Split(preferred, other)) => {
                stack.push(*other);
                stack.push(*preferred);
            }
            Some(Instruction::Jump(target)) => stack.push(*target),
            Some(Instruction::Match) => return true,
            None => {}
        }
    }
    false
}

/// The per-row cache of DEFINE conditions that read only the current row.
type ConditionCache = Vec<Option<bool>>;

/// Whether `variable`'s DEFINE condition holds for the current row, given the partial match's
/// rows so far. An error counts as false and is reported (once per distinct message).
fn condition_holds(
    plan: &MatchPlan,
    variable: u16,
    rows: &MatchRows<'_, '_>,
    cache: &mut ConditionCache,
    errors: &mut Vec<String>,
) -> bool {
    let Some(Some(condition)) = plan.conditions.get(usize::from(variable)) else { return true };
    let cacheable = condition.navigations.is_empty();
    if cacheable {
        if let Some(Some(result)) = cache.get(usize::from(variable)) {
            return *result;
        }
    }
    let (_, row, time_ms) = rows.get(rows.len() - 1);
    let result = condition
        .navigations
        .iter()
        .map(|navigation| navigate(plan, navigation, rows))
        .collect::<Result<Vec<_>, _>>()
        .and_then(|values| {
            let context = Context { row, timestamp_ms: time_ms, analytic: &values };
            condition.expr.eval(&context).and_then(|value| truthy(&value))
        });
    let holds = match result {
        Ok(holds) => holds,
        Err(message) => {
            let message = format!("DEFINE {}: {message}", plan.variables[usize::from(variable)]);
            if !errors.contains(&message) {
                errors.push(message);
            }
            false
        }
    };
    if cacheable {
        if let Some(slot) = cache.get_mut(usize::from(variable)) {
            *slot = Some(holds);
        }
    }
    holds
}

/// The output row of a decided match: the partition columns, then the measures.
fn outcome(
    plan: &MatchPlan,
    key_values: &[Value],
    view: &RowsView<'_>,
    start_seq: u64,
    variables: &[u16],
) -> Result<Outcome, String> {
    let rows = MatchRows { view, start_seq, variables, current_variable: None };
    let end_seq = start_seq + variables.len().saturating_sub(1) as u64;
    let (last_row, time_ms) = view.get(end_seq);
    let values = plan
        .measure_navigations
        .iter()
        .map(|navigation| navigate(plan, navigation, &rows))
        .collect::<Result<Vec<_>, _>>()?;
    let context = Context { row: last_row, timestamp_ms: time_ms, analytic: &values };
    let mut row: Vec<Value> = plan
        .partition_outputs
        .iter()
        .map(|index| key_values.get(*index).cloned().unwrap_or(Value::Null))
        .collect();
    for measure in &plan.measures {
        row.push(measure.eval(&context).map_err(|message| format!("MEASURES: {message}"))?);
    }
    Ok(Outcome { row, time_ms, end_seq })
}

/// The MATCH_RECOGNIZE state of one statement (of one substream, for an input read with
/// TIMESTAMP BY ... OVER): every partition key with an undecided attempt or a match waiting
/// for an earlier one.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct MatcherState {
    #[serde(with = "crate::checkpoint::as_pairs")]
    partitions: KeyMap<Partition>,
    /// Per partition with a pending attempt: the first row time of its oldest one, so that the
    /// boundary finds the attempts it decides without visiting every partition.
    #[serde(skip)]
    deadlines: BTreeSet<(i64, Vec<KeyPart>)>,
    /// The times of the matches found but not emitted yet (a multiset): no row of this state
    /// comes out stamped earlier than the first.
    #[serde(skip)]
    holds: BTreeMap<i64, usize>,
    /// Buffered rows over all partitions, counted against `max_state_entries`.
    #[serde(skip)]
    n_rows: usize,
}

impl MatcherState {
    /// Recomputes the indexes a checkpoint does not carry.
    pub(crate) fn rebuild_indexes(&mut self) {
        self.deadlines.clear();
        self.holds.clear();
        self.n_rows = 0;
        let keys: Vec<Vec<KeyPart>> = self.partitions.keys().cloned().collect();
        for key in keys {
            if let Some(partition) = self.partitions.get_mut(&key) {
                partition.indexed_deadline = None;
                partition.indexed_hold = None;
                self.n_rows += partition.rows.len();
            }
            self.reindex(&key);
        }
    }

    /// No match of this state will be stamped earlier than this (`i64::MAX`: none pending).
    pub(crate) fn hold_ms(&self) -> i64 {
        self.holds.first_key_value().map_or(i64::MAX, |(time_ms, _)| *time_ms)
    }

    fn unindex(&mut self, key: &[KeyPart]) {
        let Some(partition) = self.partitions.get_mut(key) else { return };
        if let Some(deadline) = partition.indexed_deadline.take() {
            self.deadlines.remove(&(deadline, key.to_vec()));
        }
        if let Some(hold) = partition.indexed_hold.take() {
            if let Some(count) = self.holds.get_mut(&hold) {
                *count -= 1;
                if *count == 0 {
                    self.holds.remove(&hold);
                }
            }
        }
    }

    /// Enters the partition in the indexes again, or forgets it when it holds nothing.
    fn reindex(&mut self, key: &[KeyPart]) {
        let Some(partition) = self.partitions.get_mut(key) else { return };
        if partition.attempts.is_empty() && partition.rows.is_empty() {
            self.partitions.swap_remove(key);
            return;
        }
        partition.indexed_deadline = partition.deadline_start_ms();
        partition.indexed_hold = partition.hold_ms();
        if let Some(deadline) = partition.indexed_deadline {
            self.deadlines.insert((deadline, key.to_vec()));
        }
        if let Some(hold) = partition.indexed_hold {
            *self.holds.entry(hold).or_default() += 1;
        }
    }

    /// Feeds one row (rows come in event-time order). Matches that became final are appended
    /// to `out`; problems that do not stop the row (a DEFINE or MEASURES error, the partial
    /// match limit) to `errors`. An `Err` means the row was not taken at all.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn push(
        &mut self,
        plan: &MatchPlan,
        row: Row<'_>,
        timestamp_ms: i64,
        max_state_entries: usize,
        out: &mut Vec<(OwnedRow, i64)>,
        errors: &mut Vec<String>,
    ) -> Result<(), String> {
        let (key, key_values) = eval_keys(&plan.partition_by, &Context { row, timestamp_ms, analytic: &[] })?;
        if self.n_rows + self.partitions.len() >= max_state_entries && !self.partitions.contains_key(&key) {
            return Err(format!(
                "state limit reached: {max_state_entries} rows and partitions held by MATCH_RECOGNIZE (max_state_entries)"
            ));
        }
        if self.n_rows >= max_state_entries {
            return Err(format!(
                "state limit reached: {max_state_entries} rows held by MATCH_RECOGNIZE (max_state_entries)"
            ));
        }
        if !self.partitions.contains_key(&key) {
            let partition = Partition {
                key_values,
                rows: VecDeque::new(),
                first_seq: 0,
                next_seq: 0,
                attempts: VecDeque::new(),
                indexed_deadline: None,
                indexed_hold: None,
            };
            self.partitions.insert(key.clone(), partition);
        }
        self.unindex(&key);
        let Some(partition) = self.partitions.get_mut(&key) else { return Ok(()) };
        let seq = partition.next_seq;
        partition.next_seq += 1;

        // A row later than an attempt's duration cannot join it: that attempt is decided.
        for attempt in &mut partition.attempts {
            if timestamp_ms > attempt.start_ms.saturating_add(plan.duration_ms) {
                attempt.threads.clear();
            }
        }
        // Every row may start a match.
        let mut budget = PARTIAL_MATCHES_PER_KEY_MAX.saturating_sub(partition.n_threads());
        let mut overflow = false;
        let mut start = NextThreads::new(plan);
        follow(&plan.program, 0, &[], &mut start, &mut budget, &mut overflow);
        partition.attempts.push_back(Attempt {
            start_seq: seq,
            start_ms: timestamp_ms,
            threads: start.threads,
            best: None,
            outcome: None,
        });

        // Step every pending attempt over the row, oldest first, each in preference order.
        let mut budget = PARTIAL_MATCHES_PER_KEY_MAX;
        let mut cache: ConditionCache = vec![None; plan.variables.len()];
        let view = RowsView {
            rows: &partition.rows,
            first_seq: partition.first_seq,
            current: Some((seq, row, timestamp_ms)),
        };
        for attempt in &mut partition.attempts {
            if !attempt.is_pending() {
                continue;
            }
            let threads = std::mem::take(&mut attempt.threads);
            let mut next = NextThreads::new(plan);
            for thread in threads {
                let Some(Instruction::Consume(variable)) = plan.program.get(thread.pc as usize) else {
                    continue;
                };
                let rows = MatchRows {
                    view: &view,
                    start_seq: attempt.start_seq,
                    variables: &thread.variables,
                    current_variable: Some(*variable),
                };
                if !condition_holds(plan, *variable, &rows, &mut cache, errors) {
                    continue;
                }
                let mut variables = thread.variables;
                variables.push(*variable);
                if follow(&plan.program, thread.pc + 1, &variables, &mut next, &mut budget, &mut overflow) {
                    // Complete: preferred to every partial match after it, which are dropped.
                    attempt.best = Some((variables, timestamp_ms));
                    break;
                }
            }
            attempt.threads = next.threads;
        }
        if overflow {
            errors.push(format!(
                "partial-match limit reached: {PARTIAL_MATCHES_PER_KEY_MAX} partial matches for one PARTITION BY key (PARTIAL_MATCHES_PER_KEY_MAX); the least preferred were dropped, so matches may be missed"
            ));
        }
        Self::decide(plan, &mut partition.attempts, &partition.key_values, &view, out, errors);
        // Keep the row if an undecided attempt contains it (they all do, being contiguous).
        let keep = partition.attempts.iter().any(Attempt::is_pending);
        if keep {
            if partition.rows.is_empty() {
                partition.first_seq = seq;
            }
            if let Some(owned) = OwnedRow::from_row(row) {
                partition.rows.push_back((timestamp_ms, owned));
                self.n_rows += 1;
            }
        }
        self.n_rows -= Self::trim(partition);
        self.reindex(&key);
        Ok(())
    }

    /// The close boundary reached `boundary_ms` (`i64::MAX`: end of input): every attempt that
    /// started more than the duration before it can take no more rows, and is decided.
    pub(crate) fn advance(
        &mut self,
        plan: &MatchPlan,
        boundary_ms: i64,
        out: &mut Vec<(OwnedRow, i64)>,
        errors: &mut Vec<String>,
    ) {
        let expired = |start_ms: i64| {
            boundary_ms == i64::MAX || start_ms.saturating_add(plan.duration_ms) < boundary_ms
        };
        while let Some((start_ms, key)) = self.deadlines.first().cloned() {
            if !expired(start_ms) {
                break;
            }
            self.unindex(&key);
            let Some(partition) = self.partitions.get_mut(&key) else { continue };
            for attempt in &mut partition.attempts {
                if expired(attempt.start_ms) {
                    attempt.threads.clear();
                }
            }
            let view = RowsView { rows: &partition.rows, first_seq: partition.first_seq, current: None };
            Self::decide(plan, &mut partition.attempts, &partition.key_values, &view, out, errors);
            self.n_rows -= Self::trim(partition);
            self.reindex(&key);
        }
    }

    /// Settles the attempts without partial matches, then emits the decided matches at the
    /// front, in order of their first rows.
    fn decide(
        plan: &MatchPlan,
        attempts: &mut VecDeque<Attempt>,
        key_values: &[Value],
        view: &RowsView<'_>,
        out: &mut Vec<(OwnedRow, i64)>,
        errors: &mut Vec<String>,
    ) {
        for attempt in attempts.iter_mut() {
            if attempt.is_pending() || attempt.outcome.is_some() {
                continue;
            }
            if let Some((variables, _)) = attempt.best.take() {
                match outcome(plan, key_values, view, attempt.start_seq, &variables) {
                    Ok(decided) => attempt.outcome = Some(decided),
                    Err(message) => errors.push(message),
                }
            }
        }
        // Decided without a match: nothing to wait for.
        attempts
            .retain(|attempt| attempt.is_pending() || attempt.outcome.is_some() || attempt.best.is_some());
        while attempts.front().is_some_and(|attempt| !attempt.is_pending()) {
            let Some(attempt) = attempts.pop_front() else { break };
            let Some(decided) = attempt.outcome else { continue };
            if plan.skip == SkipMode::PastLastRow {
                attempts.retain(|later| later.start_seq > decided.end_seq);
            }
            out.push((OwnedRow::Slots(decided.row), decided.time_ms));
        }
    }

    /// Drops the buffered rows no undecided attempt needs; returns how many.
    fn trim(partition: &mut Partition) -> usize {
        let oldest = partition
            .attempts
            .iter()
            .filter(|attempt| attempt.is_pending())
            .map(|attempt| attempt.start_seq)
            .min();
        let before = partition.rows.len();
        match oldest {
            None => {
                partition.rows.clear();
                partition.first_seq = partition.next_seq;
            }
            Some(oldest) => {
                while partition.first_seq < oldest && partition.rows.pop_front().is_some() {
                    partition.first_seq += 1;
                }
            }
        }
        before - partition.rows.len()
    }

    /// Partial matches and buffered rows over all partitions (for tests and limits).
    #[cfg(test)]
    fn sizes(&self) -> (usize, usize) {
        (self.partitions.values().map(Partition::n_threads).sum(), self.n_rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expr::{ColumnRef, CompiledExpr};
    use crate::plan::Condition;
    use serde_json::json;

    /// `PATTERN (A+ B)`, A: v = 'a', B: v = 'b', measures FIRST(id) and LAST(id).
    fn plan(skip: SkipMode) -> MatchPlan {
        let v_is = |letter: &str| Condition {
            expr: CompiledExpr::Binary(
                crate::ast::BinaryOp::Eq,
                Box::new(CompiledExpr::Column(ColumnRef::Field(vec!["v".into()]))),
                Box::new(CompiledExpr::Const(Value::Str(letter.into()))),
            ),
            navigations: Vec::new(),
        };
        let id = || CompiledExpr::Column(ColumnRef::Field(vec!["id".into()]));
        MatchPlan {
            duration_ms: 100,
            partition_by: Vec::new(),
            skip,
            program: vec![
                Instruction::Consume(0),
                Instruction::Split(0, 2),
                Instruction::Consume(1),
                Instruction::Match,
            ],
            variables: vec!["A".into(), "B".into()],
            conditions: vec![Some(v_is("a")), Some(v_is("b"))],
            row_local: true,
            partition_outputs: Vec::new(),
            measures: vec![CompiledExpr::Analytic(0), CompiledExpr::Analytic(1)],
            measure_navigations: vec![
                Navigation::Offset { variable: None, from_last: false, offset: 0, value: id() },
                Navigation::Offset { variable: None, from_last: true, offset: 0, value: id() },
            ],
        }
    }

    fn run(plan: &MatchPlan, events: &[(i64, &str)]) -> (Vec<(Vec<Value>, i64)>, MatcherState) {
        let mut state = MatcherState::default();
        let mut out = Vec::new();
        let mut errors = Vec::new();
        for (index, (time_ms, letter)) in events.iter().enumerate() {
            let event = json!({"id": index, "v": letter});
            let map = event.as_object().cloned().unwrap_or_default();
            let pushed = state.push(plan, Row::Json(&map), *time_ms, 1_000, &mut out, &mut errors);
            assert_eq!(pushed, Ok(()));
        }
        assert!(errors.is_empty(), "{errors:?}");
        let rows = out
            .into_iter()
            .map(|(row, time_ms)| match row {
                OwnedRow::Slots(values) => (values, time_ms),
                OwnedRow::Json(_) => (Vec::new(), time_ms),
            })
            .collect();
        (rows, state)
    }

    #[test]
    fn skip_modes_and_the_state_left_behind() {
        let events = [(0, "a"), (1, "a"), (2, "b"), (3, "a")];
        let (rows, state) = run(&plan(SkipMode::PastLastRow), &events);
        assert_eq!(rows, vec![(vec![Value::Int(0), Value::Int(2)], 2)]);
        // The trailing `a` is a pending attempt holding its one row, with two partial matches:
        // another A next, or the B.
        assert_eq!(state.sizes(), (2, 1));
        let (rows, _) = run(&plan(SkipMode::ToNextRow), &events);
        let ranges: Vec<Vec<Value>> = rows.into_iter().map(|(values, _)| values).collect();
        assert_eq!(ranges, vec![vec![Value::Int(0), Value::Int(2)], vec![Value::Int(1), Value::Int(2)]]);
    }

    #[test]
    fn attempts_expire_with_the_duration_and_the_boundary() {
        // a at 0, then b at 150: too late for the attempt that started at 0 (duration 100).
        let (rows, state) = run(&plan(SkipMode::PastLastRow), &[(0, "a"), (150, "b")]);
        assert!(rows.is_empty());
        assert_eq!(state.sizes(), (0, 0));
        let (_, mut state) = run(&plan(SkipMode::PastLastRow), &[(0, "a"), (50, "a")]);
        assert_eq!(state.sizes(), (4, 2));
        let mut out = Vec::new();
        state.advance(&plan(SkipMode::PastLastRow), 100, &mut out, &mut Vec::new());
        assert_eq!(state.sizes(), (4, 2), "a row at 100 could still join the first attempt");
        state.advance(&plan(SkipMode::PastLastRow), 101, &mut out, &mut Vec::new());
        assert_eq!(state.sizes(), (2, 1));
        state.advance(&plan(SkipMode::PastLastRow), 151, &mut out, &mut Vec::new());
        assert_eq!(state.sizes(), (0, 0));
        assert!(state.partitions.is_empty() && state.deadlines.is_empty() && state.holds.is_empty());
    }
}
