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

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

use crate::analytic::{analytic_value, apply_analytic, AnalyticState};
use crate::checkpoint::{CheckpointError, CHECKPOINT_VERSION};
use crate::error::{EventError, LateAction, LateEvent};
use crate::expr::{eval_keys, eval_timestamp, truthy, Context, JoinedRow, Row};
use crate::plan::{Body, Expand, ExpandKind, JoinPlan, Plan, Shape, Source, StatementPlan, Target};
use crate::value::Value;
use crate::watermark::Watermark;
use crate::window::{WindowInput, WindowState};
use crate::{JobOptions, LatePolicy};

/// A row produced by a statement, before it is routed.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
enum OwnedRow {
    Json(serde_json::Map<String, serde_json::Value>),
    Slots(Vec<Value>),
}

impl OwnedRow {
    fn as_row(&self) -> Row<'_> {
        match self {
            OwnedRow::Json(map) => Row::Json(map),
            OwnedRow::Slots(slots) => Row::Slots(slots),
        }
    }

    fn from_row(row: Row<'_>) -> Option<OwnedRow> {
        match row {
            Row::Json(map) => Some(OwnedRow::Json(map.clone())),
            Row::Slots(slots) => Some(OwnedRow::Slots(slots.to_vec())),
            Row::Pair(_) => None,
        }
    }
}

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
    fn extend(&mut self, other: Step) {
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

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct InputCheckpoint {
    name: String,
    watermark: Watermark,
    #[serde(with = "crate::checkpoint::as_pairs")]
    reorder: BTreeMap<(i64, u64), serde_json::Map<String, serde_json::Value>>,
    sequence: u64,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct StatementCheckpoint {
    analytics: Vec<AnalyticState>,
    window: Option<WindowState>,
    join: Option<JoinState>,
}

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
}

/// A compiled job. Feed it events with [`Job::push`]; it is deterministic: the same calls in the
/// same order give the same results.
#[derive(Debug)]
pub struct Job {
    fingerprint: u64,
    inputs: Vec<InputRuntime>,
    statements: Vec<StatementRuntime>,
    late_policy: LatePolicy,
    max_state_entries: usize,
}

impl Job {
    pub(crate) fn new(plan: Plan, options: &JobOptions, fingerprint: u64) -> Job {
        let mut inputs: Vec<InputRuntime> = plan
            .inputs
            .into_iter()
            .map(|input| InputRuntime {
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
            })
            .collect();
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
                StatementRuntime { plan, output_template, analytics, window, join }
            })
            .collect();
        Job {
            fingerprint,
            inputs,
            statements,
            late_policy: options.late_policy,
            max_state_entries: options.max_state_entries,
        }
    }

    /// The inputs the job reads, in the order the query first names them.
    pub fn inputs(&self) -> Vec<String> {
        self.inputs.iter().map(|input| input.name.clone()).collect()
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

    /// The watermark of `input` in epoch milliseconds (`i64::MIN` before its first event).
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
                })
                .collect(),
            statements: self
                .statements
                .iter()
                .map(|statement| StatementCheckpoint {
                    analytics: statement.analytics.clone(),
                    window: statement.window.clone(),
                    join: statement.join.clone(),
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
            {
                return Err(malformed("a statement's state does not match its plan"));
            }
        }
        for (input, saved) in self.inputs.iter_mut().zip(checkpoint.inputs) {
            input.watermark = saved.watermark;
            input.reorder = saved.reorder;
            input.sequence = saved.sequence;
        }
        for (statement, saved) in self.statements.iter_mut().zip(checkpoint.statements) {
            statement.analytics = saved.analytics;
            statement.window = saved.window;
            statement.join = saved.join;
            if let Some(window) = &mut statement.window {
                window.set_max_entries(self.max_state_entries);
            }
        }
        Ok(())
    }

    fn find_input(&self, name: &str) -> Option<usize> {
        self.inputs.iter().position(|input| input.name.eq_ignore_ascii_case(name))
    }

    /// Processes one event of `input`. `event` should be a JSON object; `partition` is the input
    /// partition it came from (watermarks are kept per partition); `arrival_time_ms` is the
    /// processing time of its arrival, and its event time when the query has no TIMESTAMP BY.
    pub fn push(
        &mut self,
        input: &str,
        partition: i32,
        event: &serde_json::Value,
        arrival_time_ms: i64,
    ) -> Step {
        let mut step = Step::default();
        let Some(input_idx) = self.find_input(input) else {
            step.errors.push(EventError {
                statement_idx: None,
                target: input.to_string(),
                message: format!("the job has no input named '{input}'"),
            });
            return step;
        };
        let Some(map) = event.as_object() else {
            step.errors.push(EventError {
                statement_idx: None,
                target: input.to_string(),
                message: format!(
                    "an event must be a JSON object, got {}",
                    Value::from_json(event).describe()
                ),
            });
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
        let boundary_ms = runtime.watermark.close_boundary_ms();
        if timestamp_ms < boundary_ms {
            let watermark_ms = runtime.watermark.watermark_ms();
            let action = match self.late_policy {
                LatePolicy::Adjust => LateAction::Adjusted { adjusted_to_ms: watermark_ms },
                LatePolicy::Drop => LateAction::Dropped,
            };
            step.late.push(LateEvent {
                input: runtime.name.clone(),
                partition,
                event: event.clone(),
                timestamp_ms,
                watermark_ms: boundary_ms,
                action,
            });
            match action {
                LateAction::Adjusted { adjusted_to_ms } => timestamp_ms = adjusted_to_ms,
                LateAction::Dropped => {
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
                self.feed(statement_idx, side, Row::Json(map), timestamp_ms, &mut step);
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
                self.feed(statement_idx, side, Row::Json(&map), key.0, step);
            }
        }
    }

    fn release(&mut self, input_idx: usize, before: Option<(i64, u64)>, step: &mut Step) {
        let watermark_ms = self.inputs[input_idx].watermark.watermark_ms();
        self.release_up_to(input_idx, watermark_ms, before, step);
    }

    /// Tells the job that processing time is now `now_ms`: partitions that have been silent for
    /// longer than the idle timeout stop holding the watermark back.
    pub fn advance_processing_time(&mut self, now_ms: i64) -> Step {
        let mut step = Step::default();
        for input_idx in 0..self.inputs.len() {
            let before_ms = self.inputs[input_idx].watermark.close_boundary_ms();
            self.inputs[input_idx].watermark.set_processing_time(now_ms);
            self.release(input_idx, None, &mut step);
            step.extend(self.advance_input(input_idx, before_ms));
        }
        step
    }

    /// End of input: emits every window still open.
    pub fn finish(&mut self) -> Step {
        let mut step = Step::default();
        for input_idx in 0..self.inputs.len() {
            self.release_up_to(input_idx, i64::MAX, None, &mut step);
        }
        for statement_idx in 0..self.statements.len() {
            self.advance_statement(statement_idx, i64::MAX, &mut step);
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

    fn advance_input(&mut self, input_idx: usize, previous_boundary_ms: i64) -> Step {
        let mut step = Step::default();
        let boundary_ms = self.inputs[input_idx].watermark.close_boundary_ms();
        if boundary_ms <= previous_boundary_ms {
            return step;
        }
        for rooted_idx in 0..self.inputs[input_idx].rooted.len() {
            let statement_idx = self.inputs[input_idx].rooted[rooted_idx];
            let statement_boundary_ms = self.statement_boundary_ms(statement_idx);
            self.advance_statement(statement_idx, statement_boundary_ms, &mut step);
        }
        step
    }

    fn advance_statement(&mut self, statement_idx: usize, boundary_ms: i64, step: &mut Step) {
        let max_state_entries = self.max_state_entries;
        let statement = &mut self.statements[statement_idx];
        if let Some(mut join) = statement.join.take() {
            // Rows of either side come at or after the boundary from now on: a left row at `a`
            // can only meet right rows up to `a + max`, a right row at `b` left rows from `b - max`
            // to `b - min`.
            let mut produced = Vec::new();
            let mut messages = Vec::new();
            statement.join_expire(&mut join, boundary_ms, max_state_entries, &mut produced, &mut messages);
            statement.join = Some(join);
            let target = statement.plan.target.name().to_string();
            for message in messages {
                step.errors.push(EventError {
                    statement_idx: Some(statement_idx),
                    target: target.clone(),
                    message,
                });
            }
            for (row, row_timestamp_ms) in produced {
                self.route(statement_idx, row, row_timestamp_ms, step);
            }
        }
        let statement = &mut self.statements[statement_idx];
        let Some(window) = &mut statement.window else { return };
        let Body::Aggregate(aggregate) = &statement.plan.body else { return };
        let (emitted, window_errors) = window.advance(boundary_ms);
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
            self.route(statement_idx, row, timestamp_ms, step);
        }
    }

    /// Sends a statement's row to its output, or to every statement reading its step.
    fn route(&mut self, statement_idx: usize, row: OwnedRow, timestamp_ms: i64, step: &mut Step) {
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
                    self.feed(consumer, side, row.as_row(), timestamp_ms, step);
                }
            }
        }
    }

    /// Runs one row through one statement (as the given JOIN side when it joins).
    fn feed(&mut self, statement_idx: usize, side: usize, row: Row<'_>, timestamp_ms: i64, step: &mut Step) {
        let max_state_entries = self.max_state_entries;
        let statement = &mut self.statements[statement_idx];
        if statement.join.is_none() && statement.plan.expand.is_none() {
            // One row in, at most one out: routed straight away, without the buffers below
            // (this is the per-event path of most statements).
            match statement.process(row, timestamp_ms, max_state_entries) {
                Ok(Some(row)) => self.route(statement_idx, row, timestamp_ms, step),
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
        } else {
            match &statement.plan.expand {
                None => match statement.process(row, timestamp_ms, max_state_entries) {
                    Ok(row) => produced.extend(row.map(|row| (row, timestamp_ms))),
                    Err(message) => messages.push(message),
                },
                Some(expand) => match expand_rows(expand, row, timestamp_ms) {
                    Ok(rows) => {
                        for expanded in rows {
                            match statement.process(expanded.as_row(), timestamp_ms, max_state_entries) {
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
            self.route(statement_idx, row, row_timestamp_ms, step);
        }
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
            match self.process(Row::Pair(&joined), out_ms, max_state_entries) {
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
                    match self.process(Row::Pair(&joined), out_ms, max_state_entries) {
                        Ok(row) => produced.extend(row.map(|row| (row, out_ms))),
                        Err(message) => messages.push(message),
                    }
                }
                Err(message) => messages.push(format!("ON: {message}")),
            }
        }
        matched
    }

    /// Analytic functions, WHERE, then the projection (a row now) or the window (rows later).
    fn process(
        &mut self,
        row: Row<'_>,
        timestamp_ms: i64,
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
                if let Some(window) = &mut self.window {
                    window.insert(input)?;
                }
                Ok(None)
            }
        }
    }
}
