//! The running job: routes events from inputs through statements and `WITH` steps to outputs,
//! drives windows with the watermark, runs JOINs, and applies the late-event policy.
//!
//! The data path for one pushed event is: compute its event time (TIMESTAMP BY, or the arrival
//! time); compare it with the input's close boundary (late: adjust or drop, and report); update
//! the watermark; hold the event if it is ahead of the watermark (held events are released in
//! event-time order once the watermark reaches them); feed it to every statement reading the
//! input (CROSS APPLY expansion or JOIN matching, then analytic functions, WHERE, and the
//! projection or the window); route what those produce to outputs or to the steps' readers;
//! and finally let every statement rooted at that input emit the windows that its boundary (the
//! lowest of its inputs') has closed, in statement order, so that a step's window output reaches
//! its readers before they close their own windows.
//!
//! A MATCH_RECOGNIZE statement runs each row through its matcher first; the matches it decides
//! then go through the rest of the statement like rows. A match may be decided after later rows
//! (a greedy quantifier waits to see whether it can take more), so the statement *holds back*
//! the close boundary of its own windows and of every statement reading it to the time of the
//! earliest match it has found but not emitted: their windows never close before a match that
//! belongs in them comes out.
//!
//! An input read with `TIMESTAMP BY ... OVER key` has one clock per key (a *substream*): its own
//! watermark, out-of-order tolerance, late events and reorder buffer. Every stateful statement
//! keeps its windows and matcher per substream too, and a substream's boundary moves with its
//! own key's events only, so one key's slow clock never makes another key's events late or
//! holds its windows open. Each row carries its substream (its *clock*) through `feed` and
//! `route`. A key silent for longer than the idle-key timeout (processing time) is closed: its
//! held events are released, its windows and matches flushed, and its state forgotten.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

use crate::analytic::{analytic_value, apply_analytic, AnalyticState};
use crate::checkpoint::{CheckpointError, CHECKPOINT_VERSION};
use crate::error::{EventError, LateAction, LateEvent};
use crate::expr::{eval_keys, eval_timestamp, truthy, Context, JoinedRow, OwnedRow, Row};
use crate::matcher::MatcherState;
use crate::plan::{
    Body, Expand, ExpandKind, JoinPlan, MatchPlan, Plan, ReferenceJoinPlan, Shape, Source, StatementPlan,
    Target,
};
use crate::reference::{ReferenceError, ReferenceRow, ReferenceTable};
use crate::scan::{fields_read, scan_object, Fields};
use crate::value::{KeyMap, KeyPart, Value};
use crate::watermark::Watermark;
use crate::window::{WindowInput, WindowState};
use crate::{JobOptions, LatePolicy};

/// A JOIN's two buffers of rows (left, right) that later rows of the other side may still match.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
struct JoinState {
    #[serde(with = "crate::checkpoint::as_pairs")]
    left: BTreeMap<(i64, u64), OwnedRow>,
    #[serde(with = "crate::checkpoint::as_pairs")]
    right: BTreeMap<(i64, u64), OwnedRow>,
    /// LEFT OUTER JOIN: the held left rows that have matched at least once.
    matched_left: BTreeSet<(i64, u64)>,
    sequence: u64,
}

/// One row written to an output.
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    pub name: String,
    /// The row's event time (for window output, the window end).
    pub timestamp_ms: i64,
    /// A JSON object with the SELECT columns in order.
    pub row: serde_json::Value,
}

/// What one call into the job produced.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Step {
    pub outputs: Vec<Output>,
    pub late: Vec<LateEvent>,
    pub errors: Vec<EventError>,
}

impl Step {
    /// Appends what `other` produced, after what this one did.
    pub fn extend(&mut self, other: Step) {
        self.outputs.extend(other.outputs);
        self.late.extend(other.late);
        self.errors.extend(other.errors);
    }
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct JobCheckpoint {
    version: u32,
    fingerprint: u64,
    inputs: Vec<InputCheckpoint>,
    statements: Vec<StatementCheckpoint>,
}

// The fields added after version 1 (matchers, substreams) default to empty, so checkpoints
// written before them still restore.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct InputCheckpoint {
    name: String,
    watermark: Watermark,
    #[serde(with = "crate::checkpoint::as_pairs")]
    reorder: BTreeMap<(i64, u64), serde_json::Map<String, serde_json::Value>>,
    sequence: u64,
    #[serde(default, with = "crate::checkpoint::as_pairs")]
    keys: KeyMap<KeyClock>,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct StatementCheckpoint {
    analytics: Vec<AnalyticState>,
    window: Option<WindowState>,
    join: Option<JoinState>,
    #[serde(default)]
    matcher: Option<MatcherState>,
    #[serde(default, with = "crate::checkpoint::as_pairs")]
    substreams: KeyMap<Substream>,
}

/// The event-time clock of one key of an input read with `TIMESTAMP BY ... OVER key`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct KeyClock {
    watermark: Watermark,
    /// The key's events ahead of its watermark, released in event-time order.
    #[serde(with = "crate::checkpoint::as_pairs")]
    reorder: BTreeMap<(i64, u64), serde_json::Map<String, serde_json::Value>>,
    last_arrival_ms: i64,
}

/// A statement's clocked state for one substream (one key of `TIMESTAMP BY ... OVER`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Substream {
    window: Option<WindowState>,
    matcher: Option<MatcherState>,
}

/// The substream a row belongs to: `None` for inputs without `OVER`, whose clock is the input's.
type Clock<'a> = Option<&'a [KeyPart]>;

#[derive(Debug)]
struct StatementRuntime {
    plan: StatementPlan,
    /// For a statement writing named columns to an output: an output row with every column
    /// NULL. Each row is a clone of it with the values filled in, which copies the map's hash
    /// table instead of hashing every column name again (SipHash, in serde_json's map): that
    /// was most of the cost of building rows. `None` when column names repeat (the map then
    /// has fewer entries than the row has values) or the statement feeds a step.
    output_template: Option<serde_json::Map<String, serde_json::Value>>,
    analytics: Vec<AnalyticState>,
    window: Option<WindowState>,
    join: Option<JoinState>,
    matcher: Option<MatcherState>,
    /// Windows and matcher per substream, for rows of inputs read with `OVER`.
    substreams: KeyMap<Substream>,
    /// The MATCH_RECOGNIZE statements this one's rows come through (itself included), whose
    /// undecided matches hold its close boundary back.
    upstream_matchers: Vec<usize>,
    /// A JOIN with reference data: the table's index this statement looks rows up in.
    reference_index: Option<usize>,
}

#[derive(Debug)]
struct InputRuntime {
    name: String,
    timestamp_by: Option<crate::expr::CompiledExpr>,
    watermark: Watermark,
    /// Statements whose rows come (directly or through steps) from this input, in order.
    rooted: Vec<usize>,
    /// Statements reading this input directly, in order, with the JOIN side they read it as.
    readers: Vec<(usize, usize)>,
    /// Events ahead of the watermark, held so that statements see them in event-time order.
    reorder: BTreeMap<(i64, u64), serde_json::Map<String, serde_json::Value>>,
    sequence: u64,
    /// `TIMESTAMP BY ... OVER`: the key expressions, and a clock per key (empty without OVER).
    over: Vec<crate::expr::CompiledExpr>,
    /// The top-level fields the query reads from this input's events: what
    /// [`Job::push_json_bytes`] decodes of them.
    fields: Fields,
    keys: KeyMap<KeyClock>,
    /// Events held over all keys' reorder buffers.
    n_held_by_keys: usize,
}

/// A compiled job. Feed it events with [`Job::push`]; it is deterministic: the same calls in the
/// same order give the same results.
#[derive(Debug)]
pub struct Job {
    fingerprint: u64,
    inputs: Vec<InputRuntime>,
    /// Reference tables, in `JobOptions::reference_inputs` order; not part of checkpoints.
    references: Vec<ReferenceTable>,
    max_reference_rows: usize,
    statements: Vec<StatementRuntime>,
    late_policy: LatePolicy,
    max_state_entries: usize,
    out_of_order_tolerance_ms: i64,
    late_arrival_tolerance_ms: i64,
    idle_key_timeout_ms: i64,
}

impl Job {
    pub(crate) fn new(plan: Plan, options: &JobOptions, fingerprint: u64) -> Job {
        let fields = fields_read(&plan);
        let mut inputs: Vec<InputRuntime> = plan
            .inputs
            .into_iter()
            .zip(fields)
            .map(|(input, fields)| InputRuntime {
                name: input.name,
                timestamp_by: input.timestamp_by,
                watermark: Watermark::new(
                    options.out_of_order_tolerance_ms,
                    options.late_arrival_tolerance_ms,
                    options.idle_partition_timeout_ms,
                ),
                rooted: Vec::new(),
                readers: Vec::new(),
                reorder: BTreeMap::new(),
                sequence: 0,
                over: input.over,
                fields,
                keys: KeyMap::default(),
                n_held_by_keys: 0,
            })
            .collect();
        let mut references: Vec<ReferenceTable> =
            plan.references.into_iter().map(ReferenceTable::new).collect();
        let mut upstream_matchers: Vec<Vec<usize>> = Vec::new();
        let statements: Vec<StatementRuntime> = plan
            .statements
            .into_iter()
            .enumerate()
            .map(|(index, plan)| {
                for root in &plan.roots {
                    if let Some(input) = inputs.get_mut(*root) {
                        input.rooted.push(index);
                    }
                }
                if let Source::Input(input_idx) = plan.source {
                    if let Some(input) = inputs.get_mut(input_idx) {
                        input.readers.push((index, 0));
                    }
                }
                if let Some(JoinPlan { right_source: Source::Input(input_idx), .. }) = &plan.join {
                    if let Some(input) = inputs.get_mut(*input_idx) {
                        input.readers.push((index, 1));
                    }
                }
                let window = match &plan.body {
                    Body::Aggregate(aggregate) => Some(WindowState::new(
                        aggregate.window,
                        aggregate.aggregates.iter().map(|spec| spec.kind).collect(),
                        options.max_state_entries,
                    )),
                    _ => None,
                };
                let analytics = plan.analytics.iter().map(|_| AnalyticState::default()).collect();
                let join = plan.join.as_ref().map(|_| JoinState::default());
                let output_template = match (&plan.target, &plan.output_shape) {
                    (Target::Output(_), Shape::Columns(names)) => {
                        let template: serde_json::Map<String, serde_json::Value> =
                            names.iter().map(|name| (name.clone(), serde_json::Value::Null)).collect();
                        (template.len() == names.len()).then_some(template)
                    }
                    _ => None,
                };
                let mut upstream = Vec::new();
                let sources = [Some(plan.source), plan.join.as_ref().map(|join| join.right_source)];
                for source in sources.into_iter().flatten() {
                    if let Source::Step(step_idx) = source {
                        for matcher_idx in upstream_matchers.get(step_idx).into_iter().flatten() {
                            if !upstream.contains(matcher_idx) {
                                upstream.push(*matcher_idx);
                            }
                        }
                    }
                }
                if plan.matcher.is_some() {
                    upstream.push(index);
                }
                upstream_matchers.push(upstream.clone());
                let matcher = plan.matcher.as_ref().map(|_| MatcherState::default());
                let reference_index = plan.reference_join.as_ref().and_then(|join| {
                    let table = references.get_mut(join.reference_idx)?;
                    Some(table.add_index(join.table_keys.clone()))
                });
                StatementRuntime {
                    plan,
                    output_template,
                    analytics,
                    window,
                    join,
                    matcher,
                    substreams: KeyMap::default(),
                    upstream_matchers: upstream,
                    reference_index,
                }
            })
            .collect();
        Job {
            fingerprint,
            inputs,
            references,
            max_reference_rows: options.max_reference_rows,
            statements,
            late_policy: options.late_policy,
            max_state_entries: options.max_state_entries,
            out_of_order_tolerance_ms: options.out_of_order_tolerance_ms,
            late_arrival_tolerance_ms: options.late_arrival_tolerance_ms,
            idle_key_timeout_ms: options.idle_key_timeout_ms,
        }
    }

    /// The inputs the job reads, in the order the query first names them.
    pub fn inputs(&self) -> Vec<String> {
        self.inputs.iter().map(|input| input.name.clone()).collect()
    }

    /// The reference inputs (`JobOptions::reference_inputs`), in that order.
    pub fn reference_inputs(&self) -> Vec<String> {
        self.references.iter().map(|table| table.name.clone()).collect()
    }

    /// The number of rows reference input `name` holds, if the job has it.
    pub fn reference_rows(&self, name: &str) -> Option<usize> {
        self.find_reference(name).map(|index| self.references[index].len())
    }

    /// Sets the row of `key` in reference input `name` to `row` (a JSON object), or deletes it
    /// (`None`, a tombstone). Rows processed from now on see the change; nothing is emitted.
    /// Refused, leaving the table as it was, for a row that is not an object or a new key
    /// beyond `JobOptions::max_reference_rows`.
    pub fn update_reference(
        &mut self,
        name: &str,
        key: &[u8],
        row: Option<&serde_json::Value>,
    ) -> Result<(), ReferenceError> {
        let index =
            self.find_reference(name).ok_or_else(|| ReferenceError::Unknown { name: name.to_string() })?;
        let table = &mut self.references[index];
        let row: Option<ReferenceRow> = match row {
            None => None,
            Some(serde_json::Value::Object(map)) => Some(map.clone()),
            Some(other) => {
                return Err(ReferenceError::NotAnObject {
                    name: table.name.clone(),
                    found: Value::from_json(other).describe(),
                })
            }
        };
        table.update(key, row, self.max_reference_rows)
    }

    fn find_reference(&self, name: &str) -> Option<usize> {
        self.references.iter().position(|table| table.name.eq_ignore_ascii_case(name))
    }

    /// The outputs the job writes, in query order, without repeats.
    pub fn outputs(&self) -> Vec<String> {
        let mut outputs: Vec<String> = Vec::new();
        for statement in &self.statements {
            if let Target::Output(name) = &statement.plan.target {
                if !outputs.contains(name) {
                    outputs.push(name.clone());
                }
            }
        }
        outputs
    }

    /// The watermark of `input` in epoch milliseconds (`i64::MIN` before its first event). For
    /// an input read with `TIMESTAMP BY ... OVER`, whose keys each have their own, it is the
    /// watermark its partitions would give.
    pub fn watermark_ms(&self, input: &str) -> Option<i64> {
        self.find_input(input).map(|index| self.inputs[index].watermark.watermark_ms())
    }

    /// The job's state as a JSON document, to be stored with the input offsets it corresponds to
    /// and handed to [`Job::restore`] on a job compiled from the same query and options.
    pub fn checkpoint(&self) -> serde_json::Value {
        let checkpoint = JobCheckpoint {
            version: CHECKPOINT_VERSION,
            fingerprint: self.fingerprint,
            inputs: self
                .inputs
                .iter()
                .map(|input| InputCheckpoint {
                    name: input.name.clone(),
                    watermark: input.watermark.clone(),
                    reorder: input.reorder.clone(),
                    sequence: input.sequence,
                    keys: input.keys.clone(),
                })
                .collect(),
            statements: self
                .statements
                .iter()
                .map(|statement| StatementCheckpoint {
                    analytics: statement.analytics.clone(),
                    window: statement.window.clone(),
                    join: statement.join.clone(),
                    matcher: statement.matcher.clone(),
                    substreams: statement.substreams.clone(),
                })
                .collect(),
        };
        // Every state type serializes to JSON without failing (no non-string map keys reach
        // serde_json: the adapters write them as pairs); Null would only hide a bug.
        serde_json::to_value(checkpoint).unwrap_or(serde_json::Value::Null)
    }

    /// Replaces this job's state with a checkpoint's. The job must be freshly compiled from the
    /// same query and options as the one that took the checkpoint. On error the job is unchanged.
    pub fn restore(&mut self, checkpoint: &serde_json::Value) -> Result<(), CheckpointError> {
        let version = checkpoint.get("version").and_then(serde_json::Value::as_u64);
        if version != Some(u64::from(CHECKPOINT_VERSION)) {
            return Err(CheckpointError::Version { found: version.unwrap_or(0) });
        }
        let checkpoint = JobCheckpoint::deserialize(checkpoint)
            .map_err(|error| CheckpointError::Malformed { reason: error.to_string() })?;
        if checkpoint.fingerprint != self.fingerprint {
            return Err(CheckpointError::WrongJob);
        }
        let malformed = |reason: &str| CheckpointError::Malformed { reason: reason.to_string() };
        if checkpoint.inputs.len() != self.inputs.len()
            || checkpoint.statements.len() != self.statements.len()
        {
            return Err(malformed("the number of inputs or statements differs from the job's"));
        }
        for (input, saved) in self.inputs.iter().zip(&checkpoint.inputs) {
            if input.name != saved.name {
                return Err(malformed("input names differ from the job's"));
            }
        }
        for (statement, saved) in self.statements.iter().zip(&checkpoint.statements) {
            if statement.analytics.len() != saved.analytics.len()
                || statement.window.is_some() != saved.window.is_some()
                || statement.join.is_some() != saved.join.is_some()
                || statement.matcher.is_some() != saved.matcher.is_some()
            {
                return Err(malformed("a statement's state does not match its plan"));
            }
        }
        for (input, saved) in self.inputs.iter_mut().zip(checkpoint.inputs) {
            input.watermark = saved.watermark;
            input.reorder = saved.reorder;
            input.sequence = saved.sequence;
            input.n_held_by_keys = saved.keys.values().map(|clock| clock.reorder.len()).sum();
            input.keys = saved.keys;
        }
        for (statement, saved) in self.statements.iter_mut().zip(checkpoint.statements) {
            statement.analytics = saved.analytics;
            statement.window = saved.window;
            statement.join = saved.join;
            statement.matcher = saved.matcher;
            statement.substreams = saved.substreams;
            let domains = std::iter::once((&mut statement.window, &mut statement.matcher)).chain(
                statement
                    .substreams
                    .values_mut()
                    .map(|substream| (&mut substream.window, &mut substream.matcher)),
            );
            for (window, matcher) in domains {
                if let Some(window) = window {
                    window.set_max_entries(self.max_state_entries);
                }
                if let Some(matcher) = matcher {
                    matcher.rebuild_indexes();
                }
            }
        }
        Ok(())
    }

    fn find_input(&self, name: &str) -> Option<usize> {
        self.inputs.iter().position(|input| input.name.eq_ignore_ascii_case(name))
    }

    /// Processes one event of `input`. `event` should be a JSON object; `partition` is the input
    /// partition it came from (watermarks are kept per partition, or per key with `OVER`);
    /// `arrival_time_ms` is the processing time of its arrival, and its event time when the
    /// query has no TIMESTAMP BY.
    pub fn push(
        &mut self,
        input: &str,
        partition: i32,
        event: &serde_json::Value,
        arrival_time_ms: i64,
    ) -> Step {
        let Some(map) = event.as_object() else {
            let mut step = Step::default();
            match self.find_input(input) {
                None => step.errors.push(no_such_input(input)),
                Some(_) => step.errors.push(EventError {
                    statement_idx: None,
                    target: input.to_string(),
                    message: format!(
                        "an event must be a JSON object, got {}",
                        Value::from_json(event).describe()
                    ),
                }),
            }
            return step;
        };
        self.push_object(input, partition, map, arrival_time_ms, &|| event.clone())
    }

    /// [`Job::push`] for an event still in its JSON text, as it arrives: only the top-level
    /// fields the query reads from `input` are decoded (see `scan`), and the results are those
    /// of `push` with the parsed event. An error is the one `serde_json::from_slice` gives for
    /// `bytes`: the event is not JSON, and nothing was done.
    pub fn push_json_bytes(
        &mut self,
        input: &str,
        partition: i32,
        bytes: &[u8],
        arrival_time_ms: i64,
    ) -> Result<Step, serde_json::Error> {
        let scanned = match self.find_input(input).map(|input_idx| &self.inputs[input_idx].fields) {
            Some(fields @ Fields::Named(_)) => scan_object(bytes, fields.n_named(), |key| fields.wants(key)),
            Some(Fields::All) | None => None,
        };
        let Some(map) = scanned else {
            // The whole event, something other than an object, or not JSON: the full parse
            // gives the result (and the error) it always did.
            let event: serde_json::Value = serde_json::from_slice(bytes)?;
            return Ok(self.push(input, partition, &event, arrival_time_ms));
        };
        // The scan accepted `bytes`, so the full parse does too; it only runs for a late event.
        let full_event =
            || serde_json::from_slice(bytes).unwrap_or_else(|_| serde_json::Value::Object(map.clone()));
        Ok(self.push_object(input, partition, &map, arrival_time_ms, &full_event))
    }

    /// The top-level fields some input's events are read by, for a caller that decodes an
    /// event before it knows its input (`local`'s lines name it inside the event).
    pub(crate) fn fields_read_by_any_input(&self) -> Fields {
        self.inputs.iter().fold(Fields::Named(Vec::new()), |fields, input| fields.union(&input.fields))
    }

    /// Per input, the fields its events are read by.
    #[cfg(test)]
    pub(crate) fn input_fields(&self) -> Vec<&Fields> {
        self.inputs.iter().map(|input| &input.fields).collect()
    }

    /// [`Job::push`] of an event object `map`, which may hold only the fields the query reads
    /// from `input` (or more); `full_event` gives the whole event for a late-event report.
    pub(crate) fn push_object(
        &mut self,
        input: &str,
        partition: i32,
        map: &serde_json::Map<String, serde_json::Value>,
        arrival_time_ms: i64,
        full_event: &dyn Fn() -> serde_json::Value,
    ) -> Step {
        let mut step = Step::default();
        let Some(input_idx) = self.find_input(input) else {
            step.errors.push(no_such_input(input));
            return step;
        };
        let runtime = &mut self.inputs[input_idx];
        let mut timestamp_ms = match &runtime.timestamp_by {
            None => arrival_time_ms,
            Some(expr) => {
                let context = Context { row: Row::Json(map), timestamp_ms: arrival_time_ms, analytic: &[] };
                match eval_timestamp(expr, &context) {
                    Ok(timestamp_ms) => timestamp_ms,
                    Err(message) => {
                        step.errors.push(EventError {
                            statement_idx: None,
                            target: runtime.name.clone(),
                            message: format!("TIMESTAMP BY: {message}"),
                        });
                        return step;
                    }
                }
            }
        };
        if !runtime.over.is_empty() {
            self.push_keyed(input_idx, partition, full_event, map, timestamp_ms, arrival_time_ms, &mut step);
            return step;
        }
        let boundary_ms = runtime.watermark.close_boundary_ms();
        if timestamp_ms < boundary_ms {
            let late = (runtime.name.as_str(), partition, full_event, timestamp_ms);
            match report_late(self.late_policy, &runtime.watermark, late, &mut step) {
                Some(adjusted_ms) => timestamp_ms = adjusted_ms,
                None => {
                    runtime.watermark.observe(partition, timestamp_ms.max(boundary_ms), arrival_time_ms);
                    return step;
                }
            }
        }
        runtime.watermark.observe(partition, timestamp_ms, arrival_time_ms);
        runtime.sequence += 1;
        let key = (timestamp_ms, runtime.sequence);
        if timestamp_ms <= runtime.watermark.watermark_ms() {
            // Due now: first whatever was held with an earlier time, then this event, without a copy.
            self.release(input_idx, Some(key), &mut step);
            for reader_idx in 0..self.inputs[input_idx].readers.len() {
                let (statement_idx, side) = self.inputs[input_idx].readers[reader_idx];
                self.feed(statement_idx, side, Row::Json(map), timestamp_ms, None, &mut step);
            }
        } else if runtime.reorder.len() >= self.max_state_entries {
            step.errors.push(EventError {
                statement_idx: None,
                target: runtime.name.clone(),
                message: format!(
                    "state limit reached: {} events held for reordering (max_state_entries)",
                    self.max_state_entries
                ),
            });
        } else {
            runtime.reorder.insert(key, map.clone());
        }
        self.release(input_idx, None, &mut step);
        let advanced = self.advance_input(input_idx, boundary_ms);
        step.extend(advanced);
        step
    }

    /// `push` for an input read with `TIMESTAMP BY ... OVER key`: the same steps as for a
    /// partition, against the clock of the event's key.
    #[allow(clippy::too_many_arguments)]
    fn push_keyed(
        &mut self,
        input_idx: usize,
        partition: i32,
        full_event: &dyn Fn() -> serde_json::Value,
        map: &serde_json::Map<String, serde_json::Value>,
        mut timestamp_ms: i64,
        arrival_time_ms: i64,
        step: &mut Step,
    ) {
        let max_state_entries = self.max_state_entries;
        let (out_of_order_ms, late_arrival_ms) =
            (self.out_of_order_tolerance_ms, self.late_arrival_tolerance_ms);
        let runtime = &mut self.inputs[input_idx];
        let context = Context { row: Row::Json(map), timestamp_ms, analytic: &[] };
        let key = match eval_keys(&runtime.over, &context) {
            Ok((key, _)) => key,
            Err(message) => {
                step.errors.push(EventError {
                    statement_idx: None,
                    target: runtime.name.clone(),
                    message: format!("TIMESTAMP BY ... OVER: {message}"),
                });
                return;
            }
        };
        if !runtime.keys.contains_key(&key)
            && runtime.keys.len() + runtime.n_held_by_keys >= max_state_entries
        {
            step.errors.push(EventError {
                statement_idx: None,
                target: runtime.name.clone(),
                message: format!(
                    "state limit reached: {max_state_entries} substream keys and held events (max_state_entries)"
                ),
            });
            return;
        }
        // The input's own watermark still follows its partitions (for `Job::watermark_ms`).
        runtime.watermark.observe(partition, timestamp_ms, arrival_time_ms);
        let name = runtime.name.clone();
        let clock = runtime.keys.entry(key.clone()).or_insert_with(|| KeyClock {
            watermark: Watermark::new(out_of_order_ms, late_arrival_ms, None),
            reorder: BTreeMap::new(),
            last_arrival_ms: arrival_time_ms,
        });
        clock.last_arrival_ms = clock.last_arrival_ms.max(arrival_time_ms);
        let boundary_ms = clock.watermark.close_boundary_ms();
        if timestamp_ms < boundary_ms {
            match report_late(
                self.late_policy,
                &clock.watermark,
                (name.as_str(), partition, full_event, timestamp_ms),
                step,
            ) {
                Some(adjusted_ms) => timestamp_ms = adjusted_ms,
                None => return,
            }
        }
        clock.watermark.observe(0, timestamp_ms, arrival_time_ms);
        let due = timestamp_ms <= clock.watermark.watermark_ms();
        runtime.sequence += 1;
        let sequence_key = (timestamp_ms, runtime.sequence);
        if due {
            self.release_key(input_idx, &key, i64::MAX, Some(sequence_key), step);
            for reader_idx in 0..self.inputs[input_idx].readers.len() {
                let (statement_idx, side) = self.inputs[input_idx].readers[reader_idx];
                self.feed(statement_idx, side, Row::Json(map), timestamp_ms, Some(&key), step);
            }
        } else if runtime.n_held_by_keys >= max_state_entries {
            step.errors.push(EventError {
                statement_idx: None,
                target: name,
                message: format!(
                    "state limit reached: {max_state_entries} events held for reordering (max_state_entries)"
                ),
            });
        } else {
            clock.reorder.insert(sequence_key, map.clone());
            runtime.n_held_by_keys += 1;
        }
        self.release_key(input_idx, &key, i64::MAX, None, step);
        self.advance_key(input_idx, &key, boundary_ms, step);
    }

    /// Feeds a key's held events up to its watermark and `limit_ms`, in event-time order,
    /// stopping before `before` when given.
    fn release_key(
        &mut self,
        input_idx: usize,
        key: &[KeyPart],
        limit_ms: i64,
        before: Option<(i64, u64)>,
        step: &mut Step,
    ) {
        loop {
            let runtime = &mut self.inputs[input_idx];
            let Some(clock) = runtime.keys.get_mut(key) else { return };
            let limit_ms = limit_ms.min(clock.watermark.watermark_ms());
            let Some(entry) = clock.reorder.first_entry() else { return };
            let sequence_key = *entry.key();
            if sequence_key.0 > limit_ms || before.is_some_and(|before| sequence_key >= before) {
                return;
            }
            let map = entry.remove();
            runtime.n_held_by_keys -= 1;
            for reader_idx in 0..self.inputs[input_idx].readers.len() {
                let (statement_idx, side) = self.inputs[input_idx].readers[reader_idx];
                self.feed(statement_idx, side, Row::Json(&map), sequence_key.0, Some(key), step);
            }
        }
    }

    /// Lets every statement rooted at the input emit what the key's boundary has closed.
    fn advance_key(&mut self, input_idx: usize, key: &[KeyPart], previous_boundary_ms: i64, step: &mut Step) {
        let Some(clock) = self.inputs[input_idx].keys.get(key) else { return };
        let boundary_ms = clock.watermark.close_boundary_ms();
        if boundary_ms <= previous_boundary_ms {
            return;
        }
        for rooted_idx in 0..self.inputs[input_idx].rooted.len() {
            let statement_idx = self.inputs[input_idx].rooted[rooted_idx];
            self.advance_statement(statement_idx, Some(key), boundary_ms, step);
        }
    }

    /// Closes a key of an input read with OVER: its held events are fed, every statement
    /// rooted at the input emits all it holds for the key, and the key's state is dropped. A
    /// later event of the key starts a new clock.
    fn close_key(&mut self, input_idx: usize, key: &[KeyPart], step: &mut Step) {
        self.release_key(input_idx, key, i64::MAX, None, step);
        // Held events past the watermark too.
        if let Some(clock) = self.inputs[input_idx].keys.get_mut(key) {
            clock.watermark.observe(0, i64::MAX, i64::MIN);
        }
        self.release_key(input_idx, key, i64::MAX, None, step);
        for rooted_idx in 0..self.inputs[input_idx].rooted.len() {
            let statement_idx = self.inputs[input_idx].rooted[rooted_idx];
            self.advance_statement(statement_idx, Some(key), i64::MAX, step);
            self.statements[statement_idx].substreams.swap_remove(key);
        }
        self.inputs[input_idx].keys.swap_remove(key);
    }

    /// Feeds the held events up to `limit_ms` in event-time order (arrival order among equal
    /// times), stopping before `before` when given.
    fn release_up_to(
        &mut self,
        input_idx: usize,
        limit_ms: i64,
        before: Option<(i64, u64)>,
        step: &mut Step,
    ) {
        loop {
            let runtime = &mut self.inputs[input_idx];
            let Some(entry) = runtime.reorder.first_entry() else { return };
            let key = *entry.key();
            if key.0 > limit_ms || before.is_some_and(|before| key >= before) {
                return;
            }
            let map = entry.remove();
            for reader_idx in 0..self.inputs[input_idx].readers.len() {
                let (statement_idx, side) = self.inputs[input_idx].readers[reader_idx];
                self.feed(statement_idx, side, Row::Json(&map), key.0, None, step);
            }
        }
    }

    fn release(&mut self, input_idx: usize, before: Option<(i64, u64)>, step: &mut Step) {
        let watermark_ms = self.inputs[input_idx].watermark.watermark_ms();
        self.release_up_to(input_idx, watermark_ms, before, step);
    }

    /// Tells the job that its reader is assigned `partition` of `input` and will read it: the
    /// input's watermark waits for the partition's first event, or for [`Job::caught_up`] if it
    /// has none to give, so that events of a partition fetched a moment after another are not
    /// taken for late ones. Call it after [`Job::restore`], for every partition assigned; a
    /// partition the job has already seen is not waited for again.
    pub fn expect_partition(&mut self, input: &str, partition: i32) {
        if let Some(input_idx) = self.find_input(input) {
            self.inputs[input_idx].watermark.expect(partition);
        }
    }

    /// Tells the job that its reader has reached the end of `partition` of `input`: a partition
    /// still expected (it had nothing to read) stops holding the watermark back, which may
    /// close windows.
    pub fn caught_up(&mut self, input: &str, partition: i32) -> Step {
        let mut step = Step::default();
        let Some(input_idx) = self.find_input(input) else {
            return step;
        };
        let before_ms = self.inputs[input_idx].watermark.close_boundary_ms();
        let was_expected = self.inputs[input_idx].watermark.caught_up(partition);
        if was_expected && self.inputs[input_idx].over.is_empty() {
            self.release(input_idx, None, &mut step);
            step.extend(self.advance_input(input_idx, before_ms));
        }
        step
    }

    /// Tells the job that processing time is now `now_ms`: partitions that have been silent for
    /// longer than the idle timeout stop holding the watermark back, and keys of inputs read
    /// with `OVER` that have been silent for longer than the idle-key timeout are closed.
    pub fn advance_processing_time(&mut self, now_ms: i64) -> Step {
        let mut step = Step::default();
        for input_idx in 0..self.inputs.len() {
            let before_ms = self.inputs[input_idx].watermark.close_boundary_ms();
            self.inputs[input_idx].watermark.set_processing_time(now_ms);
            if self.inputs[input_idx].over.is_empty() {
                self.release(input_idx, None, &mut step);
                step.extend(self.advance_input(input_idx, before_ms));
                continue;
            }
            let idle: Vec<Vec<KeyPart>> = self.inputs[input_idx]
                .keys
                .iter()
                .filter(|(_, clock)| now_ms.saturating_sub(clock.last_arrival_ms) > self.idle_key_timeout_ms)
                .map(|(key, _)| key.clone())
                .collect();
            for key in idle {
                self.close_key(input_idx, &key, &mut step);
            }
        }
        step
    }

    /// End of input: emits every window still open and every match still undecided.
    pub fn finish(&mut self) -> Step {
        let mut step = Step::default();
        for input_idx in 0..self.inputs.len() {
            self.release_up_to(input_idx, i64::MAX, None, &mut step);
            let keys: Vec<Vec<KeyPart>> = self.inputs[input_idx].keys.keys().cloned().collect();
            for key in keys {
                if let Some(clock) = self.inputs[input_idx].keys.get_mut(&key) {
                    clock.watermark.observe(0, i64::MAX, i64::MIN);
                }
                self.release_key(input_idx, &key, i64::MAX, None, &mut step);
            }
        }
        for statement_idx in 0..self.statements.len() {
            self.advance_statement(statement_idx, None, i64::MAX, &mut step);
            let keys: Vec<Vec<KeyPart>> = self.statements[statement_idx].substreams.keys().cloned().collect();
            for key in keys {
                self.advance_statement(statement_idx, Some(&key), i64::MAX, &mut step);
            }
        }
        step
    }

    /// A statement's close boundary: the lowest of its inputs' (two for a JOIN).
    fn statement_boundary_ms(&self, statement_idx: usize) -> i64 {
        let roots = &self.statements[statement_idx].plan.roots;
        roots
            .iter()
            .filter_map(|root| self.inputs.get(*root))
            .map(|input| input.watermark.close_boundary_ms())
            .min()
            .unwrap_or(i64::MIN)
    }

    /// The earliest time a match not yet emitted by a MATCH_RECOGNIZE statement upstream of
    /// this one (or by itself) will be stamped with, in the given substream.
    fn upstream_hold_ms(&self, statement_idx: usize, clock: Clock<'_>) -> i64 {
        self.statements[statement_idx]
            .upstream_matchers
            .iter()
            .filter_map(|matcher_idx| self.statements[*matcher_idx].matcher_state(clock))
            .map(MatcherState::hold_ms)
            .min()
            .unwrap_or(i64::MAX)
    }

    fn advance_input(&mut self, input_idx: usize, previous_boundary_ms: i64) -> Step {
        let mut step = Step::default();
        let boundary_ms = self.inputs[input_idx].watermark.close_boundary_ms();
        if boundary_ms <= previous_boundary_ms {
            return step;
        }
        for rooted_idx in 0..self.inputs[input_idx].rooted.len() {
            let statement_idx = self.inputs[input_idx].rooted[rooted_idx];
            let statement_boundary_ms = self.statement_boundary_ms(statement_idx);
            self.advance_statement(statement_idx, None, statement_boundary_ms, &mut step);
        }
        step
    }

    /// The statement's inputs (or, for a substream, its key) have reached `boundary_ms`: expire
    /// JOIN rows, decide the matches that can no longer grow, and emit the windows closed by
    /// the boundary (held back to the earliest undecided match upstream).
    fn advance_statement(
        &mut self,
        statement_idx: usize,
        clock: Clock<'_>,
        boundary_ms: i64,
        step: &mut Step,
    ) {
        let max_state_entries = self.max_state_entries;
        let statement = &mut self.statements[statement_idx];
        let mut produced = Vec::new();
        let mut messages = Vec::new();
        if let Some(mut join) = statement.join.take() {
            // Rows of either side come at or after the boundary from now on: a left row at `a`
            // can only meet right rows up to `a + max`, a right row at `b` left rows from `b - max`
            // to `b - min`.
            statement.join_expire(&mut join, boundary_ms, max_state_entries, &mut produced, &mut messages);
            statement.join = Some(join);
        }
        statement.expire_matches(clock, boundary_ms, max_state_entries, &mut produced, &mut messages);
        // The target's name is copied only when there is an error to report: this runs per
        // event for every statement rooted at the input.
        for message in messages {
            step.errors.push(EventError {
                statement_idx: Some(statement_idx),
                target: statement.plan.target.name().to_string(),
                message,
            });
        }
        for (row, row_timestamp_ms) in produced {
            self.route(statement_idx, row, row_timestamp_ms, clock, step);
        }
        let window_boundary_ms = boundary_ms.min(self.upstream_hold_ms(statement_idx, clock));
        let statement = &mut self.statements[statement_idx];
        let Body::Aggregate(aggregate) = &statement.plan.body else { return };
        let window = match clock {
            None => statement.window.as_mut(),
            Some(key) => statement.substreams.get_mut(key).and_then(|substream| substream.window.as_mut()),
        };
        let Some(window) = window else { return };
        let (emitted, window_errors) = window.advance(window_boundary_ms);
        let target = statement.plan.target.name().to_string();
        for message in window_errors {
            step.errors.push(EventError {
                statement_idx: Some(statement_idx),
                target: target.clone(),
                message,
            });
        }
        let mut produced = Vec::new();
        for group in emitted {
            let mut slots = group.key_values;
            slots.extend(group.results);
            let context = Context { row: Row::Slots(&slots), timestamp_ms: group.end_ms, analytic: &[] };
            let result = (|| {
                if let Some(having) = &aggregate.having {
                    if !truthy(&having.eval(&context)?)? {
                        return Ok(None);
                    }
                }
                aggregate
                    .items
                    .iter()
                    .map(|item| item.eval(&context))
                    .collect::<Result<Vec<_>, String>>()
                    .map(Some)
            })();
            match result {
                Ok(Some(row)) => produced.push((OwnedRow::Slots(row), group.end_ms)),
                Ok(None) => {}
                Err(message) => step.errors.push(EventError {
                    statement_idx: Some(statement_idx),
                    target: target.clone(),
                    message,
                }),
            }
        }
        for (row, timestamp_ms) in produced {
            self.route(statement_idx, row, timestamp_ms, clock, step);
        }
    }

    /// Sends a statement's row to its output, or to every statement reading its step.
    fn route(
        &mut self,
        statement_idx: usize,
        row: OwnedRow,
        timestamp_ms: i64,
        clock: Clock<'_>,
        step: &mut Step,
    ) {
        let statement = &self.statements[statement_idx];
        let plan = &statement.plan;
        match &plan.target {
            Target::Output(name) => {
                let json = match (row, &plan.output_shape) {
                    (OwnedRow::Json(map), _) => serde_json::Value::Object(map),
                    (OwnedRow::Slots(slots), Shape::Columns(names)) => match &statement.output_template {
                        Some(template) if template.len() == slots.len() => {
                            let mut map = template.clone();
                            for (field, value) in map.values_mut().zip(slots) {
                                *field = value.into_json();
                            }
                            serde_json::Value::Object(map)
                        }
                        _ => serde_json::Value::Object(
                            names.iter().cloned().zip(slots.into_iter().map(Value::into_json)).collect(),
                        ),
                    },
                    (OwnedRow::Slots(slots), Shape::Json | Shape::Joined(_)) => {
                        serde_json::Value::Array(slots.iter().map(Value::to_json).collect())
                    }
                };
                step.outputs.push(Output { name: name.clone(), timestamp_ms, row: json });
            }
            Target::Step(_) => {
                let consumers = plan.consumers.clone();
                for (consumer, side) in consumers {
                    self.feed(consumer, side, row.as_row(), timestamp_ms, clock, step);
                }
            }
        }
    }

    /// Runs one row through one statement (as the given JOIN side when it joins).
    fn feed(
        &mut self,
        statement_idx: usize,
        side: usize,
        row: Row<'_>,
        timestamp_ms: i64,
        clock: Clock<'_>,
        step: &mut Step,
    ) {
        let max_state_entries = self.max_state_entries;
        let statement = &mut self.statements[statement_idx];
        if statement.join.is_none()
            && statement.reference_index.is_none()
            && statement.plan.expand.is_none()
            && statement.plan.matcher.is_none()
        {
            // One row in, at most one out: routed straight away, without the buffers below
            // (this is the per-event path of most statements).
            match statement.process(row, timestamp_ms, clock, max_state_entries) {
                Ok(Some(row)) => self.route(statement_idx, row, timestamp_ms, clock, step),
                Ok(None) => {}
                Err(message) => step.errors.push(EventError {
                    statement_idx: Some(statement_idx),
                    target: statement.plan.target.name().to_string(),
                    message,
                }),
            }
            return;
        }
        let mut produced = Vec::new();
        let mut messages = Vec::new();
        if let Some(mut join) = statement.join.take() {
            statement.join_row(
                &mut join,
                side,
                row,
                timestamp_ms,
                max_state_entries,
                &mut produced,
                &mut messages,
            );
            statement.join = Some(join);
        } else if let (Some(index), Some(plan)) =
            (statement.reference_index, statement.plan.reference_join.take())
        {
            // Taken out for the call (and put back) so that matches can run through `process`.
            if let Some(table) = self.references.get(plan.reference_idx) {
                let probe = (row, timestamp_ms, clock);
                statement.reference_join_row(
                    &plan,
                    table,
                    index,
                    probe,
                    max_state_entries,
                    &mut produced,
                    &mut messages,
                );
            }
            statement.plan.reference_join = Some(plan);
        } else if statement.plan.matcher.is_some() {
            statement.match_row(row, timestamp_ms, clock, max_state_entries, &mut produced, &mut messages);
        } else {
            match &statement.plan.expand {
                None => match statement.process(row, timestamp_ms, clock, max_state_entries) {
                    Ok(row) => produced.extend(row.map(|row| (row, timestamp_ms))),
                    Err(message) => messages.push(message),
                },
                Some(expand) => match expand_rows(expand, row, timestamp_ms) {
                    Ok(rows) => {
                        for expanded in rows {
                            match statement.process(expanded.as_row(), timestamp_ms, clock, max_state_entries)
                            {
                                Ok(row) => produced.extend(row.map(|row| (row, timestamp_ms))),
                                Err(message) => messages.push(message),
                            }
                        }
                    }
                    Err(message) => messages.push(message),
                },
            }
        }
        // The target's name is copied only when there is an error to report: this runs per event.
        if !messages.is_empty() {
            let target = statement.plan.target.name().to_string();
            for message in messages {
                step.errors.push(EventError {
                    statement_idx: Some(statement_idx),
                    target: target.clone(),
                    message,
                });
            }
        }
        for (row, row_timestamp_ms) in produced {
            self.route(statement_idx, row, row_timestamp_ms, clock, step);
        }
    }
}

fn no_such_input(input: &str) -> EventError {
    EventError {
        statement_idx: None,
        target: input.to_string(),
        message: format!("the job has no input named '{input}'"),
    }
}

/// An event of `(input, partition, whole event, event time)` behind the close boundary of its
/// watermark (its partition's, or its key's): reported, and moved to the watermark or dropped
/// as the late policy says. Returns the time to process it at, or `None` when it is dropped.
fn report_late(
    policy: LatePolicy,
    watermark: &Watermark,
    (input, partition, full_event, timestamp_ms): (&str, i32, &dyn Fn() -> serde_json::Value, i64),
    step: &mut Step,
) -> Option<i64> {
    let action = match policy {
        LatePolicy::Adjust => LateAction::Adjusted { adjusted_to_ms: watermark.watermark_ms() },
        LatePolicy::Drop => LateAction::Dropped,
    };
    step.late.push(LateEvent {
        input: input.to_string(),
        partition,
        event: full_event(),
        timestamp_ms,
        watermark_ms: watermark.close_boundary_ms(),
        action,
    });
    match action {
        LateAction::Adjusted { adjusted_to_ms } => Some(adjusted_to_ms),
        LateAction::Dropped => None,
    }
}

/// `CROSS APPLY`: one row per array element or record field, the element under the alias.
fn expand_rows(expand: &Expand, row: Row<'_>, timestamp_ms: i64) -> Result<Vec<OwnedRow>, String> {
    let context = Context { row, timestamp_ms, analytic: &[] };
    let elements: Vec<serde_json::Value> = match (expand.kind, expand.arg.eval(&context)?) {
        (_, Value::Null) => return Ok(Vec::new()),
        (ExpandKind::ArrayElements, Value::Json(json)) if json.is_array() => {
            let serde_json::Value::Array(items) = *json else { return Ok(Vec::new()) };
            items
                .into_iter()
                .enumerate()
                .map(|(index, item)| serde_json::json!({"ArrayIndex": index, "ArrayValue": item}))
                .collect()
        }
        (ExpandKind::RecordProperties, Value::Json(json)) if json.is_object() => {
            let serde_json::Value::Object(map) = *json else { return Ok(Vec::new()) };
            map.into_iter()
                .map(|(name, value)| serde_json::json!({"PropertyName": name, "PropertyValue": value}))
                .collect()
        }
        (ExpandKind::ArrayElements, other) => {
            return Err(format!("GetArrayElements expects an array, got {}", other.describe()))
        }
        (ExpandKind::RecordProperties, other) => {
            return Err(format!("GetRecordProperties expects a record, got {}", other.describe()))
        }
    };
    Ok(elements
        .into_iter()
        .map(|element| match row {
            Row::Json(map) => {
                let mut map = map.clone();
                map.insert(expand.alias.clone(), element);
                OwnedRow::Json(map)
            }
            Row::Slots(slots) => {
                let mut slots = slots.to_vec();
                slots.push(Value::Json(Box::new(element)));
                OwnedRow::Slots(slots)
            }
            // The planner refuses CROSS APPLY with JOIN.
            Row::Pair(_) => OwnedRow::Slots(Vec::new()),
        })
        .collect())
}

impl StatementRuntime {
    /// A JOIN: matches the row against the other side's buffer (each match, stamped with the
    /// later of the two times, goes through the rest of the statement), then keeps the row for
    /// the other side's later rows.
    #[allow(clippy::too_many_arguments)]
    fn join_row(
        &mut self,
        join: &mut JoinState,
        side: usize,
        row: Row<'_>,
        timestamp_ms: i64,
        max_state_entries: usize,
        produced: &mut Vec<(OwnedRow, i64)>,
        messages: &mut Vec<String>,
    ) {
        // Taken out for the duration of the call (and put back below) so that matches can run
        // through `process`, which needs the statement mutably, without copying the plan.
        let Some(plan) = self.plan.join.take() else { return };
        let matched =
            self.join_matches(&plan, join, side, row, timestamp_ms, max_state_entries, produced, messages);
        self.plan.join = Some(plan);
        join.sequence += 1;
        let key = (timestamp_ms, join.sequence);
        if side == 0 && !matched.is_empty() {
            join.matched_left.insert(key);
        }
        if side == 1 {
            join.matched_left.extend(matched);
        }
        if join.left.len() + join.right.len() >= max_state_entries {
            messages.push(format!(
                "state limit reached: {max_state_entries} rows held by the JOIN (max_state_entries)"
            ));
            return;
        }
        let Some(owned) = OwnedRow::from_row(row) else { return };
        let buffer = if side == 0 { &mut join.left } else { &mut join.right };
        buffer.insert(key, owned);
    }

    /// A JOIN with reference data: the row meets every table row whose equality columns have
    /// its values and for which the whole ON clause holds, each match going through the rest of
    /// the statement at the row's own time; with LEFT JOIN, a row that meets none goes through
    /// once with the table's side NULL. Nothing is kept.
    #[allow(clippy::too_many_arguments)]
    fn reference_join_row(
        &mut self,
        plan: &ReferenceJoinPlan,
        table: &ReferenceTable,
        index: usize,
        (row, timestamp_ms, clock): (Row<'_>, i64, Clock<'_>),
        max_state_entries: usize,
        produced: &mut Vec<(OwnedRow, i64)>,
        messages: &mut Vec<String>,
    ) {
        let empty = ReferenceRow::new();
        let probe = JoinedRow { sides: [row, Row::Json(&empty)], timestamps_ms: [Some(timestamp_ms), None] };
        let context = Context { row: Row::Pair(&probe), timestamp_ms, analytic: &[] };
        let key = match eval_keys(&plan.stream_keys, &context) {
            Ok((key, _)) => key,
            Err(message) => {
                messages.push(format!("ON: {message}"));
                return;
            }
        };
        let mut matched = false;
        // NULL equals nothing, so a row with a NULL key part meets no table row.
        let candidates = (!key.contains(&KeyPart::Null)).then(|| table.lookup(index, &key));
        for table_row in candidates.into_iter().flatten() {
            let joined =
                JoinedRow { sides: [row, Row::Json(table_row)], timestamps_ms: [Some(timestamp_ms), None] };
            let context = Context { row: Row::Pair(&joined), timestamp_ms, analytic: &[] };
            let on = if plan.on_is_keys {
                Ok(true)
            } else {
                plan.on.eval(&context).and_then(|value| truthy(&value))
            };
            match on {
                Ok(false) => {}
                Ok(true) => {
                    matched = true;
                    match self.process(Row::Pair(&joined), timestamp_ms, clock, max_state_entries) {
                        Ok(row) => produced.extend(row.map(|row| (row, timestamp_ms))),
                        Err(message) => messages.push(message),
                    }
                }
                Err(message) => messages.push(format!("ON: {message}")),
            }
        }
        if !matched && plan.left_outer {
            match self.process(Row::Pair(&probe), timestamp_ms, clock, max_state_entries) {
                Ok(row) => produced.extend(row.map(|row| (row, timestamp_ms))),
                Err(message) => messages.push(message),
            }
        }
    }

    /// Drops the held rows that nothing can match any more. For a LEFT OUTER JOIN, each dropped
    /// left row that never matched goes through the statement with a NULL right side, stamped
    /// with the latest time at which a matching right row could have occurred (ASA's rule), which
    /// is also when it became certain that none will: so it is never behind a window the
    /// statement has already closed.
    fn join_expire(
        &mut self,
        join: &mut JoinState,
        boundary_ms: i64,
        max_state_entries: usize,
        produced: &mut Vec<(OwnedRow, i64)>,
        messages: &mut Vec<String>,
    ) {
        let Some(plan) = self.plan.join.take() else { return };
        join.right = join.right.split_off(&(boundary_ms.saturating_add(plan.min_diff_ms), 0));
        let empty = serde_json::Map::new();
        // Left rows in time order: the last time a right row could match them grows with it.
        while let Some(entry) = join.left.first_entry() {
            let key = *entry.key();
            let last_match_ms = plan.last_match_ms(key.0);
            if last_match_ms >= boundary_ms {
                break;
            }
            let left = entry.remove();
            let matched = join.matched_left.remove(&key);
            if !plan.left_outer || matched {
                continue;
            }
            let joined =
                JoinedRow { sides: [left.as_row(), Row::Json(&empty)], timestamps_ms: [Some(key.0), None] };
            let out_ms = last_match_ms;
            match self.process(Row::Pair(&joined), out_ms, None, max_state_entries) {
                Ok(row) => produced.extend(row.map(|row| (row, out_ms))),
                Err(message) => messages.push(message),
            }
        }
        self.plan.join = Some(plan);
    }

    #[allow(clippy::too_many_arguments)]
    fn join_matches(
        &mut self,
        plan: &JoinPlan,
        join: &JoinState,
        side: usize,
        row: Row<'_>,
        timestamp_ms: i64,
        max_state_entries: usize,
        produced: &mut Vec<(OwnedRow, i64)>,
        messages: &mut Vec<String>,
    ) -> Vec<(i64, u64)> {
        let mut matched = Vec::new();
        let (other, range) = if side == 0 {
            let low = timestamp_ms.saturating_add(plan.min_diff_ms);
            let high = timestamp_ms.saturating_add(plan.max_diff_ms);
            (&join.right, (low, 0)..=(high, u64::MAX))
        } else {
            let low = timestamp_ms.saturating_sub(plan.max_diff_ms);
            let high = timestamp_ms.saturating_sub(plan.min_diff_ms);
            (&join.left, (low, 0)..=(high, u64::MAX))
        };
        for (&other_key, other_row) in other.range(range) {
            let other_ms = other_key.0;
            let (sides, timestamps_ms) = if side == 0 {
                ([row, other_row.as_row()], [Some(timestamp_ms), Some(other_ms)])
            } else {
                ([other_row.as_row(), row], [Some(other_ms), Some(timestamp_ms)])
            };
            let joined = JoinedRow { sides, timestamps_ms };
            let out_ms = timestamp_ms.max(other_ms);
            let context = Context { row: Row::Pair(&joined), timestamp_ms: out_ms, analytic: &[] };
            match plan.on.eval(&context).and_then(|value| truthy(&value)) {
                Ok(false) => {}
                Ok(true) => {
                    matched.push(other_key);
                    match self.process(Row::Pair(&joined), out_ms, None, max_state_entries) {
                        Ok(row) => produced.extend(row.map(|row| (row, out_ms))),
                        Err(message) => messages.push(message),
                    }
                }
                Err(message) => messages.push(format!("ON: {message}")),
            }
        }
        matched
    }

    /// The statement's clocked state for a substream, created on its first row.
    fn substream(&mut self, key: &[KeyPart], max_state_entries: usize) -> &mut Substream {
        let index = match self.substreams.get_index_of(key) {
            Some(index) => index,
            None => {
                let window = match &self.plan.body {
                    Body::Aggregate(aggregate) => Some(WindowState::new(
                        aggregate.window,
                        aggregate.aggregates.iter().map(|spec| spec.kind).collect(),
                        max_state_entries,
                    )),
                    _ => None,
                };
                let matcher = self.plan.matcher.as_ref().map(|_| MatcherState::default());
                self.substreams.insert_full(key.to_vec(), Substream { window, matcher }).0
            }
        };
        &mut self.substreams[index]
    }

    /// The matcher of a clock domain, if the statement has one there.
    fn matcher_state(&self, clock: Clock<'_>) -> Option<&MatcherState> {
        match clock {
            None => self.matcher.as_ref(),
            Some(key) => self.substreams.get(key).and_then(|substream| substream.matcher.as_ref()),
        }
    }

    /// MATCH_RECOGNIZE: runs the row through the matcher, then each match it decided through
    /// the rest of the statement.
    fn match_row(
        &mut self,
        row: Row<'_>,
        timestamp_ms: i64,
        clock: Clock<'_>,
        max_state_entries: usize,
        produced: &mut Vec<(OwnedRow, i64)>,
        messages: &mut Vec<String>,
    ) {
        if let Some(key) = clock {
            // Created while the plan is in place: it says what state the substream needs.
            self.substream(key, max_state_entries);
        }
        self.run_matcher(clock, max_state_entries, produced, messages, |plan, state, matches, messages| {
            if let Err(message) = state.push(plan, row, timestamp_ms, max_state_entries, matches, messages) {
                messages.push(message);
            }
        });
    }

    /// MATCH_RECOGNIZE: the boundary decides the attempts that can no longer grow.
    fn expire_matches(
        &mut self,
        clock: Clock<'_>,
        boundary_ms: i64,
        max_state_entries: usize,
        produced: &mut Vec<(OwnedRow, i64)>,
        messages: &mut Vec<String>,
    ) {
        self.run_matcher(clock, max_state_entries, produced, messages, |plan, state, matches, messages| {
            state.advance(plan, boundary_ms, matches, messages);
        });
    }

    /// Runs `run` on the matcher of the clock domain, if the statement has one there, then the
    /// matches it decided through the rest of the statement.
    fn run_matcher(
        &mut self,
        clock: Clock<'_>,
        max_state_entries: usize,
        produced: &mut Vec<(OwnedRow, i64)>,
        messages: &mut Vec<String>,
        run: impl FnOnce(&MatchPlan, &mut MatcherState, &mut Vec<(OwnedRow, i64)>, &mut Vec<String>),
    ) {
        // Taken out for the duration of the call so that the state can be borrowed mutably.
        let Some(plan) = self.plan.matcher.take() else { return };
        let mut matches = Vec::new();
        let state = match clock {
            None => self.matcher.as_mut(),
            Some(key) => self.substreams.get_mut(key).and_then(|substream| substream.matcher.as_mut()),
        };
        if let Some(state) = state {
            run(&plan, state, &mut matches, messages);
        }
        self.plan.matcher = Some(plan);
        for (row, timestamp_ms) in matches {
            match self.process(row.as_row(), timestamp_ms, clock, max_state_entries) {
                Ok(row) => produced.extend(row.map(|row| (row, timestamp_ms))),
                Err(message) => messages.push(message),
            }
        }
    }

    /// Analytic functions, WHERE, then the projection (a row now) or the window (rows later).
    fn process(
        &mut self,
        row: Row<'_>,
        timestamp_ms: i64,
        clock: Clock<'_>,
        max_state_entries: usize,
    ) -> Result<Option<OwnedRow>, String> {
        let base = Context { row, timestamp_ms, analytic: &[] };
        let mut analytic_values = Vec::with_capacity(self.plan.analytics.len());
        if !self.plan.analytics.is_empty() {
            // Evaluate everything first, then update state, so an error leaves no trace.
            let mut updates = Vec::with_capacity(self.plan.analytics.len());
            for (plan, state) in self.plan.analytics.iter().zip(&self.analytics) {
                let (value, update) = analytic_value(plan, state, &base)?;
                analytic_values.push(value);
                updates.push(update);
            }
            let entries: usize =
                self.analytics.iter().map(|state| state.history.len() + state.last_window.len()).sum();
            let adds_key = self.analytics.iter().zip(&updates).any(|(state, update)| {
                !state.history.contains_key(&update.key) && !state.last_window.contains_key(&update.key)
            });
            if adds_key && entries >= max_state_entries {
                return Err(format!(
                    "state limit reached: {max_state_entries} analytic partitions (max_state_entries)"
                ));
            }
            for ((plan, state), update) in self.plan.analytics.iter().zip(&mut self.analytics).zip(updates) {
                apply_analytic(plan, state, update, timestamp_ms);
            }
        }
        let context = Context { row, timestamp_ms, analytic: &analytic_values };
        if let Some(filter) = &self.plan.filter {
            if !truthy(&filter.eval(&context)?)? {
                return Ok(None);
            }
        }
        match &self.plan.body {
            // The planner refuses SELECT * with JOIN, so a pair never gets here.
            Body::Star { names, extras } => {
                let values = extras.iter().map(|item| item.eval(&context)).collect::<Result<Vec<_>, _>>()?;
                Ok(match (OwnedRow::from_row(row), &self.plan.output_shape) {
                    (Some(OwnedRow::Json(mut map)), _) => {
                        // A JSON row keeps its fields; the extra columns are added (or replace
                        // fields of the same name), in SELECT order.
                        for (name, value) in names.iter().zip(values) {
                            map.insert(name.clone(), value.to_json());
                        }
                        Some(OwnedRow::Json(map))
                    }
                    (Some(OwnedRow::Slots(mut slots)), _) => {
                        slots.extend(values);
                        Some(OwnedRow::Slots(slots))
                    }
                    (None, _) => None,
                })
            }
            Body::Project(items) => {
                let values = items.iter().map(|item| item.eval(&context)).collect::<Result<Vec<_>, _>>()?;
                Ok(Some(OwnedRow::Slots(values)))
            }
            Body::Aggregate(aggregate) => {
                let (key_parts, key_values) = eval_keys(&aggregate.keys, &context)?;
                let (session_parts, _) = eval_keys(&aggregate.session_partition, &context)?;
                let args = aggregate
                    .aggregates
                    .iter()
                    .map(|spec| match &spec.arg {
                        Some(arg) => arg.eval(&context),
                        None => Ok(Value::Int(1)),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let input = WindowInput { timestamp_ms, key_parts, key_values, args, session_parts };
                let window = match clock {
                    None => self.window.as_mut(),
                    Some(key) => self.substream(key, max_state_entries).window.as_mut(),
                };
                if let Some(window) = window {
                    window.insert(input)?;
                }
                Ok(None)
            }
        }
    }
}
