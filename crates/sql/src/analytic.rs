//! Analytic functions: `LAG`, `LAST`, `ISFIRST` and moving aggregates over
//! `OVER (PARTITION BY ... LIMIT DURATION(...) WHEN ...)`.
//!
//! Each function keeps, per partition key, the recent `(event time, value)` entries it needs
//! (at most `n` for `LAG(x, n)`, one for `LAST`, the last interval for `ISFIRST`, everything within
//! the duration for moving aggregates). Computing a value and updating the state are separate
//! steps ([`analytic_value`], then [`apply_analytic`]) so that a statement can compute all its
//! analytic values for an event first and change nothing when one of them fails.

use std::collections::{HashMap, VecDeque};

use crate::agg::Accumulator;
use crate::expr::{eval_keys, truthy, Context};
use crate::plan::{AnalyticKind, AnalyticPlan};
use crate::value::{KeyHasher, KeyPart, Value};

#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct AnalyticState {
    /// Per partition key: recent `(event time, value)` entries, oldest first.
    #[serde(with = "crate::checkpoint::as_pairs")]
    pub(crate) history: HashMap<Vec<KeyPart>, VecDeque<(i64, Value)>, KeyHasher>,
    /// ISFIRST: per partition key, the end of the window of the last counted event.
    #[serde(with = "crate::checkpoint::as_pairs")]
    pub(crate) last_window: HashMap<Vec<KeyPart>, i64, KeyHasher>,
}

/// What an analytic function will record for the current event, decided before any state changes.
#[derive(Debug)]
pub(crate) struct AnalyticUpdate {
    pub(crate) key: Vec<KeyPart>,
    /// `Some(value)` when the WHEN condition holds (or there is none): the value to remember.
    remember: Option<Value>,
    /// ISFIRST: the window end to record.
    window_end_ms: Option<i64>,
}

/// Entries older than `(now - duration, now]` no longer count.
fn still_in_duration(entry_ms: i64, now_ms: i64, duration_ms: Option<i64>) -> bool {
    duration_ms.is_none_or(|duration_ms| entry_ms > now_ms.saturating_sub(duration_ms))
}

pub(crate) fn analytic_value(
    plan: &AnalyticPlan,
    state: &AnalyticState,
    context: &Context<'_>,
) -> Result<(Value, AnalyticUpdate), String> {
    let (key, _) = eval_keys(&plan.partition_by, context)?;
    let when = match &plan.when {
        Some(when) => truthy(&when.eval(context)?)?,
        None => true,
    };
    let now_ms = context.timestamp_ms;
    let history = state.history.get(&key);
    let recent = || {
        history
            .into_iter()
            .flatten()
            .filter(move |(entry_ms, _)| still_in_duration(*entry_ms, now_ms, plan.duration_ms))
    };
    let mut update = AnalyticUpdate { key, remember: None, window_end_ms: None };
    let value = match &plan.kind {
        AnalyticKind::Lag { value, offset, default } => {
            let entries: Vec<&(i64, Value)> = recent().collect();
            let result = match entries.len().checked_sub(*offset) {
                Some(index) => entries[index].1.clone(),
                None => default.eval(context)?,
            };
            if when {
                update.remember = Some(value.eval(context)?);
            }
            result
        }
        AnalyticKind::Last { value } => {
            // LAST includes the current event when it satisfies WHEN.
            if when {
                let current = value.eval(context)?;
                update.remember = Some(current.clone());
                current
            } else {
                recent().next_back().map_or(Value::Null, |(_, value)| value.clone())
            }
        }
        AnalyticKind::IsFirst { size_ms } => {
            let end_ms = crate::window_end(now_ms, *size_ms);
            let first = when && state.last_window.get(&update.key) != Some(&end_ms);
            if first {
                update.window_end_ms = Some(end_ms);
            }
            Value::Int(i64::from(first))
        }
        AnalyticKind::Moving(spec) => {
            let current = match &spec.arg {
                Some(arg) => arg.eval(context)?,
                None => Value::Int(1),
            };
            let mut accumulator = Accumulator::new(spec.kind);
            accumulator.check(spec.kind, &current)?;
            for (_, value) in recent() {
                if accumulator.check(spec.kind, value).is_ok() {
                    accumulator.apply(value);
                }
            }
            if when {
                accumulator.check(spec.kind, &current)?;
                accumulator.apply(&current);
                update.remember = Some(current);
            }
            accumulator.result()
        }
    };
    Ok((value, update))
}

pub(crate) fn apply_analytic(
    plan: &AnalyticPlan,
    state: &mut AnalyticState,
    update: AnalyticUpdate,
    now_ms: i64,
) {
    if let Some(end_ms) = update.window_end_ms {
        state.last_window.insert(update.key.clone(), end_ms);
    }
    let keep = match &plan.kind {
        AnalyticKind::Lag { offset, .. } => *offset,
        AnalyticKind::Last { .. } => 1,
        AnalyticKind::IsFirst { .. } => 0,
        AnalyticKind::Moving(_) => usize::MAX,
    };
    if keep == 0 {
        return;
    }
    let history = state.history.entry(update.key.clone()).or_default();
    if let Some(value) = update.remember {
        history.push_back((now_ms, value));
    }
    while history.front().is_some_and(|(entry_ms, _)| !still_in_duration(*entry_ms, now_ms, plan.duration_ms))
    {
        history.pop_front();
    }
    while history.len() > keep {
        history.pop_front();
    }
    if history.is_empty() {
        state.history.remove(&update.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expr::{ColumnRef, CompiledExpr, Row};

    fn column(name: &str) -> CompiledExpr {
        CompiledExpr::Column(ColumnRef::Field(vec![name.to_string()]))
    }

    /// Feeds `(time, value)` events through one analytic function and returns its values.
    fn run(plan: &AnalyticPlan, events: &[(i64, serde_json::Value)]) -> Vec<Value> {
        let mut state = AnalyticState::default();
        let mut values = Vec::new();
        for (timestamp_ms, event) in events {
            let map = event.as_object().cloned().unwrap_or_default();
            let context = Context { row: Row::Json(&map), timestamp_ms: *timestamp_ms, analytic: &[] };
            match analytic_value(plan, &state, &context) {
                Ok((value, update)) => {
                    values.push(value);
                    apply_analytic(plan, &mut state, update, *timestamp_ms);
                }
                Err(error) => values.push(Value::Str(error)),
            }
        }
        values
    }

    #[test]
    fn lag_with_offset_default_and_when() {
        let plan = AnalyticPlan {
            kind: AnalyticKind::Lag {
                value: column("v"),
                offset: 2,
                default: CompiledExpr::Const(Value::Int(-1)),
            },
            partition_by: Vec::new(),
            duration_ms: Some(100),
            when: Some(CompiledExpr::Binary(
                crate::ast::BinaryOp::Gt,
                Box::new(column("v")),
                Box::new(CompiledExpr::Const(Value::Int(0))),
            )),
        };
        let events = [
            (10, serde_json::json!({"v": 1})),
            (20, serde_json::json!({"v": 0})), // not remembered: WHEN is false
            (30, serde_json::json!({"v": 2})),
            (40, serde_json::json!({"v": 3})),
            (135, serde_json::json!({"v": 4})), // 30 has left (135 - 100 = 35): only 40 remains
        ];
        let values = run(&plan, &events);
        assert_eq!(
            values,
            vec![Value::Int(-1), Value::Int(-1), Value::Int(-1), Value::Int(1), Value::Int(-1)]
        );
    }

    #[test]
    fn last_and_isfirst_with_when() {
        let positive = || {
            Some(CompiledExpr::Binary(
                crate::ast::BinaryOp::Gt,
                Box::new(column("v")),
                Box::new(CompiledExpr::Const(Value::Int(0))),
            ))
        };
        let last = AnalyticPlan {
            kind: AnalyticKind::Last { value: column("v") },
            partition_by: Vec::new(),
            duration_ms: Some(100),
            when: positive(),
        };
        let events = [
            (10, serde_json::json!({"v": 0})), // nothing remembered yet
            (20, serde_json::json!({"v": 5})), // LAST includes the current event
            (30, serde_json::json!({"v": -1})),
            (130, serde_json::json!({"v": 0})), // 20 is more than 100 ms ago
        ];
        assert_eq!(run(&last, &events), vec![Value::Null, Value::Int(5), Value::Int(5), Value::Null]);
        let is_first = AnalyticPlan {
            kind: AnalyticKind::IsFirst { size_ms: 100 },
            partition_by: Vec::new(),
            duration_ms: None,
            when: positive(),
        };
        // (0, 100]: 10 does not count (WHEN), 20 is the first that does; (100, 200]: 130 is ignored, 150 first.
        let events = [
            (10, serde_json::json!({"v": 0})),
            (20, serde_json::json!({"v": 1})),
            (100, serde_json::json!({"v": 1})),
            (130, serde_json::json!({"v": 0})),
            (150, serde_json::json!({"v": 2})),
        ];
        let firsts: Vec<Value> = [0, 1, 0, 0, 1].into_iter().map(Value::Int).collect();
        assert_eq!(run(&is_first, &events), firsts);
    }

    #[test]
    fn moving_sum_counts_the_current_event() {
        let plan = AnalyticPlan {
            kind: AnalyticKind::Moving(crate::plan::AggregateSpec {
                kind: crate::agg::AggregateKind::Sum,
                arg: Some(column("v")),
            }),
            partition_by: vec![column("k")],
            duration_ms: Some(10),
            when: None,
        };
        let events = [
            (0, serde_json::json!({"k": "a", "v": 1})),
            (5, serde_json::json!({"k": "b", "v": 10})),
            (9, serde_json::json!({"k": "a", "v": 2})),
            (10, serde_json::json!({"k": "a", "v": 4})),
            (11, serde_json::json!({"k": "a", "v": "x"})),
        ];
        let values = run(&plan, &events);
        // At 10 the event at 0 has left: (0, 10].
        assert_eq!(values[..4], [Value::Int(1), Value::Int(10), Value::Int(3), Value::Int(6)]);
        assert_eq!(values[4], Value::Str("SUM expects a number, got nvarchar(max) \"x\"".to_string()));
    }
}
