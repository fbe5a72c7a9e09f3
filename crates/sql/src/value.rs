//! Run-time values: the scalar types of the language plus nested JSON records and arrays, with
//! their conversions to and from JSON and the comparison and hashing rules that grouping uses.

use std::cmp::Ordering;

use crate::time::{format_timestamp, parse_timestamp};

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(#[serde(with = "crate::checkpoint::float")] f64),
    Str(String),
    /// Epoch milliseconds, from `CAST(... AS datetime)`, `System.Timestamp()` or `DATEADD`.
    DateTime(i64),
    /// A nested record or array, kept as JSON. Boxed: serde_json's `Value` is 80 bytes with
    /// `preserve_order`, which would make every value (group keys, accumulators, row slots)
    /// that big; checkpoints write the box as its contents.
    Json(Box<serde_json::Value>),
}

impl Value {
    pub(crate) fn from_json(json: &serde_json::Value) -> Value {
        match json {
            serde_json::Value::Null => Value::Null,
            serde_json::Value::Bool(flag) => Value::Bool(*flag),
            serde_json::Value::Number(number) => match number.as_i64() {
                Some(value) => Value::Int(value),
                None => number.as_f64().map_or(Value::Null, Value::Float),
            },
            serde_json::Value::String(text) => Value::Str(text.clone()),
            other => Value::Json(Box::new(other.clone())),
        }
    }

    pub(crate) fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Null => serde_json::Value::Null,
            Value::Bool(flag) => serde_json::Value::Bool(*flag),
            Value::Int(value) => serde_json::Value::from(*value),
            Value::Float(value) => serde_json::Number::from_f64(*value)
                .map_or(serde_json::Value::Null, serde_json::Value::Number),
            Value::Str(text) => serde_json::Value::String(text.clone()),
            Value::DateTime(millis) => serde_json::Value::String(format_timestamp(*millis)),
            Value::Json(json) => (**json).clone(),
        }
    }

    /// [`Value::to_json`] without copying strings or nested JSON.
    pub(crate) fn into_json(self) -> serde_json::Value {
        match self {
            Value::Str(text) => serde_json::Value::String(text),
            Value::Json(json) => *json,
            other => other.to_json(),
        }
    }

    pub(crate) fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "bit",
            Value::Int(_) => "bigint",
            Value::Float(_) => "float",
            Value::Str(_) => "nvarchar(max)",
            Value::DateTime(_) => "datetime",
            Value::Json(json) if json.is_array() => "array",
            Value::Json(_) => "record",
        }
    }

    /// A short rendering for error messages.
    pub(crate) fn describe(&self) -> String {
        let mut text = self.to_json().to_string();
        if text.len() > 40 {
            let cut = (0..=40).rev().find(|index| text.is_char_boundary(*index)).unwrap_or(0);
            text.truncate(cut);
            text.push('…');
        }
        format!("{} {text}", self.type_name())
    }

    pub(crate) fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Int(value) => Some(*value as f64),
            Value::Float(value) => Some(*value),
            _ => None,
        }
    }

    /// The datetime this value denotes: a datetime, or a string in ISO-8601 form.
    pub(crate) fn as_datetime(&self) -> Option<i64> {
        match self {
            Value::DateTime(millis) => Some(*millis),
            Value::Str(text) => parse_timestamp(text),
            _ => None,
        }
    }

    /// SQL comparison: `None` when either side is NULL or the types do not compare.
    pub(crate) fn compare(&self, other: &Value) -> Option<Ordering> {
        match (self, other) {
            (Value::Null, _) | (_, Value::Null) => None,
            (Value::Int(left), Value::Int(right)) => Some(left.cmp(right)),
            (Value::Int(_) | Value::Float(_), Value::Int(_) | Value::Float(_)) => {
                self.as_f64()?.partial_cmp(&other.as_f64()?)
            }
            (Value::Str(left), Value::Str(right)) => Some(left.cmp(right)),
            (Value::Bool(left), Value::Bool(right)) => Some(left.cmp(right)),
            (Value::DateTime(left), _) => Some(left.cmp(&other.as_datetime()?)),
            (_, Value::DateTime(right)) => Some(self.as_datetime()?.cmp(right)),
            (Value::Json(left), Value::Json(right)) => (left == right).then_some(Ordering::Equal),
            _ => None,
        }
    }

    /// True if the two values are of types that can never be compared (a type error, as
    /// opposed to a NULL comparison).
    pub(crate) fn incomparable(&self, other: &Value) -> bool {
        !matches!(self, Value::Null) && !matches!(other, Value::Null) && self.compare(other).is_none() && {
            // Two JSON values that differ compare as "not equal", not as a type error.
            !matches!((self, other), (Value::Json(_), Value::Json(_)))
        }
    }

    /// The hashable form used for GROUP BY keys, PARTITION BY keys and COUNT(DISTINCT).
    pub(crate) fn key(&self) -> KeyPart {
        match self {
            Value::Null => KeyPart::Null,
            Value::Bool(flag) => KeyPart::Bool(*flag),
            Value::Int(value) => KeyPart::Int(*value),
            Value::Float(value) if value.fract() == 0.0 && value.abs() < 9.0e15 => {
                KeyPart::Int(*value as i64)
            }
            Value::Float(value) => KeyPart::Float(value.to_bits()),
            Value::Str(text) => KeyPart::Str(text.clone()),
            Value::DateTime(millis) => KeyPart::DateTime(*millis),
            Value::Json(json) => KeyPart::Json(json.to_string()),
        }
    }
}

/// The hasher of the engine's maps keyed by group, partition or distinct values: foldhash,
/// several times faster than the standard library's SipHash on the short keys grouping uses
/// (the per-event group lookup was ~40% of a hopping-window query).
///
/// Every map in the process shares one randomly seeded state, so that a hopping window can hash
/// an event's key once and reuse the hash in each window the event falls in (see
/// `window::FixedWindows`), while crafted keys still cannot be made to collide in every
/// process. Iteration order is never taken from these hashes (maps are IndexMaps, kept in
/// insertion order), so results stay deterministic.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct KeyHasher;

impl std::hash::BuildHasher for KeyHasher {
    type Hasher = foldhash::fast::FoldHasher<'static>;

    fn build_hasher(&self) -> Self::Hasher {
        static STATE: std::sync::OnceLock<foldhash::fast::SeedableRandomState> = std::sync::OnceLock::new();
        STATE.get_or_init(foldhash::fast::SeedableRandomState::random).build_hasher()
    }
}

/// An insertion-ordered map keyed by a group or partition key.
pub(crate) type KeyMap<V> = indexmap::IndexMap<Vec<KeyPart>, V, KeyHasher>;

/// A value in hashable form. Integral floats hash as integers so that `1` and `1.0` group
/// together.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub(crate) enum KeyPart {
    Null,
    Bool(bool),
    Int(i64),
    Float(u64),
    Str(String),
    DateTime(i64),
    Json(String),
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_round_trip() {
        for json in [json!(null), json!(true), json!(3), json!(2.5), json!("x"), json!({"a": [1]})] {
            assert_eq!(Value::from_json(&json).to_json(), json);
            assert_eq!(Value::from_json(&json).into_json(), json);
        }
        assert_eq!(Value::DateTime(0).to_json(), json!("1970-01-01T00:00:00.0000000Z"));
    }

    #[test]
    fn comparisons() {
        assert_eq!(Value::Int(1).compare(&Value::Float(1.5)), Some(Ordering::Less));
        assert_eq!(Value::Null.compare(&Value::Int(1)), None);
        assert!(Value::Str("a".into()).incomparable(&Value::Int(1)));
        assert!(!Value::Null.incomparable(&Value::Int(1)));
        let text = Value::Str("1970-01-01T00:00:01Z".into());
        assert_eq!(Value::DateTime(1_000).compare(&text), Some(Ordering::Equal));
    }

    #[test]
    fn keys_unify_integral_floats() {
        assert_eq!(Value::Float(2.0).key(), Value::Int(2).key());
        assert_ne!(Value::Float(2.5).key(), Value::Int(2).key());
    }
}
