//! Aggregate accumulators. Each window group keeps one small accumulator per aggregate, never
//! the events themselves, except `COUNT(DISTINCT)` which must remember the distinct values.
//!
//! Updating is split into [`Accumulator::check`] and [`Accumulator::apply`] so that a statement
//! can check every aggregate of an event first and then apply all or none: an event with a type
//! error leaves no partial trace in the group.

use std::collections::HashSet;

use crate::value::{KeyHasher, KeyPart, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) enum AggregateKind {
    CountStar,
    Count,
    CountDistinct,
    Sum,
    Avg,
    Min,
    Max,
    /// Sample standard deviation and variance (n - 1).
    Stdev,
    Var,
    /// Population standard deviation and variance (n).
    StdevP,
    VarP,
    /// `TopOne() OVER (ORDER BY ...)`: the whole first row in that order. Its argument is the
    /// array `[[keys...], [descending...], row]` built by `CompiledExpr::TopOneArg`.
    TopOne,
    /// `Collect()` (the whole rows) or `Collect(x)`: every non-NULL value, as an array.
    Collect,
    /// `PERCENTILE_CONT(p)` / `PERCENTILE_DISC(p)` with `p` in parts per million.
    PercentileCont(u32),
    PercentileDisc(u32),
}

impl AggregateKind {
    pub(crate) fn lookup(name: &str, distinct: bool) -> Option<AggregateKind> {
        let kind = match (name.to_ascii_lowercase().as_str(), distinct) {
            ("count", true) => AggregateKind::CountDistinct,
            ("count", false) => AggregateKind::Count,
            ("sum", false) => AggregateKind::Sum,
            ("avg", false) => AggregateKind::Avg,
            ("min", false) => AggregateKind::Min,
            ("max", false) => AggregateKind::Max,
            ("stdev", false) => AggregateKind::Stdev,
            ("var", false) => AggregateKind::Var,
            ("stdevp", false) => AggregateKind::StdevP,
            ("varp", false) => AggregateKind::VarP,
            ("collect", false) => AggregateKind::Collect,
            _ => return None,
        };
        Some(kind)
    }

    pub(crate) fn is_aggregate_name(name: &str) -> bool {
        AggregateKind::lookup(name, false).is_some()
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            AggregateKind::CountStar | AggregateKind::Count | AggregateKind::CountDistinct => "COUNT",
            AggregateKind::Sum => "SUM",
            AggregateKind::Avg => "AVG",
            AggregateKind::Min => "MIN",
            AggregateKind::Max => "MAX",
            AggregateKind::Stdev => "STDEV",
            AggregateKind::Var => "VAR",
            AggregateKind::StdevP => "STDEVP",
            AggregateKind::VarP => "VARP",
            AggregateKind::TopOne => "TopOne",
            AggregateKind::Collect => "Collect",
            AggregateKind::PercentileCont(_) => "PERCENTILE_CONT",
            AggregateKind::PercentileDisc(_) => "PERCENTILE_DISC",
        }
    }
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) enum Accumulator {
    Count(i64),
    Distinct(HashSet<KeyPart, KeyHasher>),
    Sum {
        int_sum: i64,
        #[serde(with = "crate::checkpoint::float")]
        float_sum: f64,
        is_float: bool,
        any: bool,
    },
    Avg {
        #[serde(with = "crate::checkpoint::float")]
        sum: f64,
        count: i64,
    },
    Extreme {
        best: Option<Value>,
        want_max: bool,
    },
    /// Welford's running mean and sum of squared deviations.
    Moments {
        count: i64,
        #[serde(with = "crate::checkpoint::float")]
        mean: f64,
        #[serde(with = "crate::checkpoint::float")]
        m2: f64,
        kind: AggregateKind,
    },
    TopOne {
        best: Option<serde_json::Value>,
    },
    Collect {
        values: Vec<Value>,
    },
    /// Every non-NULL value of the group, sorted when the result is asked for.
    Percentile {
        values: Vec<Value>,
        kind: AggregateKind,
    },
}

/// Splits a TopOne argument into its keys, their directions and the row.
fn top_one_parts(
    json: &serde_json::Value,
) -> Option<(&[serde_json::Value], &[serde_json::Value], &serde_json::Value)> {
    match json {
        serde_json::Value::Array(parts) => match parts.as_slice() {
            [serde_json::Value::Array(keys), serde_json::Value::Array(descending), row] => {
                Some((keys, descending, row))
            }
            _ => None,
        },
        _ => None,
    }
}

/// True if `candidate` comes strictly before `best` in the ORDER BY order (NULL sorts first).
fn top_one_before(candidate: &serde_json::Value, best: &serde_json::Value) -> bool {
    let (Some((keys, descending, _)), Some((best_keys, _, _))) =
        (top_one_parts(candidate), top_one_parts(best))
    else {
        return false;
    };
    for ((key, best_key), descending) in keys.iter().zip(best_keys).zip(descending) {
        let (key, best_key) = (Value::from_json(key), Value::from_json(best_key));
        let ordering = match (&key, &best_key) {
            (Value::Null, Value::Null) => std::cmp::Ordering::Equal,
            (Value::Null, _) => std::cmp::Ordering::Less,
            (_, Value::Null) => std::cmp::Ordering::Greater,
            _ => key.compare(&best_key).unwrap_or(std::cmp::Ordering::Equal),
        };
        let ordering = if descending.as_bool() == Some(true) { ordering.reverse() } else { ordering };
        if ordering != std::cmp::Ordering::Equal {
            return ordering == std::cmp::Ordering::Less;
        }
    }
    false
}

/// PERCENTILE_CONT interpolates linearly at `p * (n - 1)`; PERCENTILE_DISC takes the first value
/// whose cumulative share reaches `p`, as in T-SQL.
fn percentile(values: &[Value], kind: AggregateKind) -> Value {
    let mut sorted: Vec<&Value> = values.iter().collect();
    sorted.sort_by(|left, right| {
        left.as_f64().unwrap_or(f64::NAN).total_cmp(&right.as_f64().unwrap_or(f64::NAN))
    });
    let count = sorted.len();
    if count == 0 {
        return Value::Null;
    }
    match kind {
        AggregateKind::PercentileCont(ppm) => {
            let position = f64::from(ppm) / 1e6 * (count - 1) as f64;
            let (low, high) = (position.floor() as usize, position.ceil() as usize);
            let low_value = sorted[low.min(count - 1)].as_f64().unwrap_or(f64::NAN);
            let high_value = sorted[high.min(count - 1)].as_f64().unwrap_or(f64::NAN);
            Value::Float(low_value + (high_value - low_value) * (position - low as f64))
        }
        AggregateKind::PercentileDisc(ppm) => {
            let rank = (f64::from(ppm) / 1e6 * count as f64).ceil() as usize;
            sorted[rank.saturating_sub(1).min(count - 1)].clone()
        }
        _ => Value::Null,
    }
}

impl Accumulator {
    pub(crate) fn new(kind: AggregateKind) -> Accumulator {
        match kind {
            AggregateKind::CountStar | AggregateKind::Count => Accumulator::Count(0),
            AggregateKind::CountDistinct => Accumulator::Distinct(HashSet::default()),
            AggregateKind::Sum => {
                Accumulator::Sum { int_sum: 0, float_sum: 0.0, is_float: false, any: false }
            }
            AggregateKind::Avg => Accumulator::Avg { sum: 0.0, count: 0 },
            AggregateKind::Min => Accumulator::Extreme { best: None, want_max: false },
            AggregateKind::Max => Accumulator::Extreme { best: None, want_max: true },
            AggregateKind::Stdev | AggregateKind::Var | AggregateKind::StdevP | AggregateKind::VarP => {
                Accumulator::Moments { count: 0, mean: 0.0, m2: 0.0, kind }
            }
            AggregateKind::TopOne => Accumulator::TopOne { best: None },
            AggregateKind::Collect => Accumulator::Collect { values: Vec::new() },
            AggregateKind::PercentileCont(_) | AggregateKind::PercentileDisc(_) => {
                Accumulator::Percentile { values: Vec::new(), kind }
            }
        }
    }

    /// Checks that `value` can be added; `kind` names the aggregate in the error message.
    pub(crate) fn check(&self, kind: AggregateKind, value: &Value) -> Result<(), String> {
        if matches!(value, Value::Null) {
            return Ok(());
        }
        match self {
            Accumulator::Count(_) | Accumulator::Distinct(_) | Accumulator::Collect { .. } => Ok(()),
            Accumulator::TopOne { best } => {
                let Value::Json(json) = value else { return Err("TopOne: malformed argument".to_string()) };
                let Some((keys, _, _)) = top_one_parts(json) else {
                    return Err("TopOne: malformed argument".to_string());
                };
                let Some((best_keys, _, _)) = best.as_ref().and_then(top_one_parts) else { return Ok(()) };
                for (key, best_key) in keys.iter().zip(best_keys) {
                    let (key, best_key) = (Value::from_json(key), Value::from_json(best_key));
                    if key.incomparable(&best_key) {
                        return Err(format!(
                            "TopOne cannot order {} against {}",
                            key.describe(),
                            best_key.describe()
                        ));
                    }
                }
                Ok(())
            }
            Accumulator::Sum { .. }
            | Accumulator::Avg { .. }
            | Accumulator::Moments { .. }
            | Accumulator::Percentile { .. } => match value {
                Value::Int(_) | Value::Float(_) => Ok(()),
                other => Err(format!("{} expects a number, got {}", kind.name(), other.describe())),
            },
            Accumulator::Extreme { best, .. } => match (best, value) {
                (_, Value::Json(_) | Value::Bool(_)) => {
                    Err(format!("{} cannot order {}", kind.name(), value.describe()))
                }
                (Some(best), value) if best.incomparable(value) => Err(format!(
                    "{} cannot compare {} with earlier {}",
                    kind.name(),
                    value.describe(),
                    best.describe()
                )),
                _ => Ok(()),
            },
        }
    }

    /// Adds a value that passed [`Accumulator::check`]. `COUNT(*)` is fed a non-null marker.
    pub(crate) fn apply(&mut self, value: &Value) {
        if matches!(value, Value::Null) {
            return;
        }
        match self {
            Accumulator::Count(count) => *count += 1,
            Accumulator::Distinct(seen) => {
                seen.insert(value.key());
            }
            Accumulator::Sum { int_sum, float_sum, is_float, any } => {
                *any = true;
                match value {
                    Value::Int(number) if !*is_float => match int_sum.checked_add(*number) {
                        Some(total) => *int_sum = total,
                        None => {
                            // Past i64, carry on in floating point rather than fail the window.
                            *is_float = true;
                            *float_sum = *int_sum as f64 + *number as f64;
                        }
                    },
                    other => {
                        if !*is_float {
                            *is_float = true;
                            *float_sum = *int_sum as f64;
                        }
                        *float_sum += other.as_f64().unwrap_or(0.0);
                    }
                }
            }
            Accumulator::Avg { sum, count } => {
                *sum += value.as_f64().unwrap_or(0.0);
                *count += 1;
            }
            Accumulator::Extreme { best, want_max } => {
                let replace = match best {
                    None => true,
                    Some(current) => match value.compare(current) {
                        Some(std::cmp::Ordering::Greater) => *want_max,
                        Some(std::cmp::Ordering::Less) => !*want_max,
                        _ => false,
                    },
                };
                if replace {
                    *best = Some(value.clone());
                }
            }
            Accumulator::Percentile { values, .. } | Accumulator::Collect { values } => {
                values.push(value.clone())
            }
            Accumulator::TopOne { best } => {
                if let Value::Json(json) = value {
                    let replace = best.as_ref().is_none_or(|current| top_one_before(json, current));
                    if replace {
                        *best = Some((**json).clone());
                    }
                }
            }
            Accumulator::Moments { count, mean, m2, .. } => {
                let sample = value.as_f64().unwrap_or(0.0);
                *count += 1;
                let delta = sample - *mean;
                *mean += delta / *count as f64;
                *m2 += delta * (sample - *mean);
            }
        }
    }

    pub(crate) fn result(&self) -> Value {
        match self {
            Accumulator::Count(count) => Value::Int(*count),
            Accumulator::Distinct(seen) => Value::Int(seen.len() as i64),
            Accumulator::Sum { any: false, .. } => Value::Null,
            Accumulator::Sum { is_float: true, float_sum, .. } => Value::Float(*float_sum),
            Accumulator::Sum { int_sum, .. } => Value::Int(*int_sum),
            Accumulator::Avg { count: 0, .. } => Value::Null,
            Accumulator::Avg { sum, count } => Value::Float(sum / *count as f64),
            Accumulator::Extreme { best, .. } => best.clone().unwrap_or(Value::Null),
            Accumulator::Percentile { values, kind } => percentile(values, *kind),
            Accumulator::Collect { values } => {
                Value::Json(Box::new(serde_json::Value::Array(values.iter().map(Value::to_json).collect())))
            }
            Accumulator::TopOne { best } => best
                .as_ref()
                .and_then(|best| match best {
                    serde_json::Value::Array(parts) => parts.get(2).map(Value::from_json),
                    _ => None,
                })
                .unwrap_or(Value::Null),
            Accumulator::Moments { count, m2, kind, .. } => {
                let population = matches!(kind, AggregateKind::StdevP | AggregateKind::VarP);
                let divisor = if population { *count } else { *count - 1 };
                if divisor <= 0 {
                    return Value::Null;
                }
                let variance = m2 / divisor as f64;
                match kind {
                    AggregateKind::Stdev | AggregateKind::StdevP => Value::Float(variance.sqrt()),
                    _ => Value::Float(variance),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(kind: AggregateKind, values: &[Value]) -> Value {
        let mut accumulator = Accumulator::new(kind);
        for value in values {
            assert!(accumulator.check(kind, value).is_ok());
            accumulator.apply(value);
        }
        accumulator.result()
    }

    #[test]
    fn basic_aggregates() {
        let values = [Value::Int(2), Value::Null, Value::Int(4), Value::Int(4), Value::Int(5)];
        assert_eq!(run(AggregateKind::Count, &values), Value::Int(4));
        assert_eq!(run(AggregateKind::CountDistinct, &values), Value::Int(3));
        assert_eq!(run(AggregateKind::Sum, &values), Value::Int(15));
        assert_eq!(run(AggregateKind::Avg, &values), Value::Float(3.75));
        assert_eq!(run(AggregateKind::Min, &values), Value::Int(2));
        assert_eq!(run(AggregateKind::Max, &values), Value::Int(5));
        assert_eq!(run(AggregateKind::VarP, &values), Value::Float(1.1875));
        assert_eq!(run(AggregateKind::Var, &values), Value::Float(1.1875 * 4.0 / 3.0));
        assert_eq!(run(AggregateKind::Sum, &[Value::Null]), Value::Null);
        assert_eq!(run(AggregateKind::Stdev, &[Value::Int(1)]), Value::Null);
    }

    #[test]
    fn percentiles() {
        let values: Vec<Value> = [15, 20, 35, 40, 50].into_iter().map(Value::Int).collect();
        assert_eq!(run(AggregateKind::PercentileCont(500_000), &values), Value::Float(35.0));
        assert_eq!(run(AggregateKind::PercentileCont(400_000), &values), Value::Float(29.0));
        assert_eq!(run(AggregateKind::PercentileDisc(400_000), &values), Value::Int(20));
        assert_eq!(run(AggregateKind::PercentileDisc(0), &values), Value::Int(15));
        assert_eq!(run(AggregateKind::PercentileDisc(1_000_000), &values), Value::Int(50));
        assert_eq!(run(AggregateKind::PercentileCont(500_000), &[]), Value::Null);
    }

    #[test]
    fn sum_overflows_into_float() {
        assert_eq!(
            run(AggregateKind::Sum, &[Value::Int(i64::MAX), Value::Int(1)]),
            Value::Float(i64::MAX as f64 + 1.0)
        );
        assert_eq!(run(AggregateKind::Sum, &[Value::Int(1), Value::Float(0.5)]), Value::Float(1.5));
    }

    #[test]
    fn type_errors_are_checked() {
        let accumulator = Accumulator::new(AggregateKind::Avg);
        assert!(accumulator.check(AggregateKind::Avg, &Value::Str("x".into())).is_err());
        let mut min = Accumulator::new(AggregateKind::Min);
        min.apply(&Value::Int(1));
        assert!(min.check(AggregateKind::Min, &Value::Str("x".into())).is_err());
    }
}
