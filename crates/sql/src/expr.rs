//! Compiled expressions and their evaluation.
//!
//! The planner resolves every name once: a column becomes either a JSON path into the input
//! event or a slot index into the row an earlier step produced, a function name becomes a
//! [`Scalar`] variant, and aggregates and analytic functions become slot reads. Evaluating a
//! [`CompiledExpr`] per event is then a tree walk with no name lookups beyond the JSON keys
//! themselves. Errors are strings that the caller wraps into an `EventError` for the event.

use std::cmp::Ordering;

use crate::ast::BinaryOp;
use crate::time::{parse_timestamp, TimeUnit};
use crate::value::Value;

/// The row an expression reads its columns from.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Row<'a> {
    /// An input event (or a `SELECT *` of one).
    Json(&'a serde_json::Map<String, serde_json::Value>),
    /// A row produced by a step with known columns, or the group row of an aggregation.
    Slots(&'a [Value]),
    /// A JOIN's pair of rows.
    Pair(&'a JoinedRow<'a>),
}

/// A row kept beyond the call that produced it: a statement's output before it is routed, a
/// JOIN or MATCH_RECOGNIZE buffer entry.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) enum OwnedRow {
    Json(serde_json::Map<String, serde_json::Value>),
    Slots(Vec<Value>),
}

impl OwnedRow {
    pub(crate) fn as_row(&self) -> Row<'_> {
        match self {
            OwnedRow::Json(map) => Row::Json(map),
            OwnedRow::Slots(slots) => Row::Slots(slots),
        }
    }

    /// `None` for a JOIN's pair, which is never kept whole.
    pub(crate) fn from_row(row: Row<'_>) -> Option<OwnedRow> {
        match row {
            Row::Json(map) => Some(OwnedRow::Json(map.clone())),
            Row::Slots(slots) => Some(OwnedRow::Slots(slots.to_vec())),
            Row::Pair(_) => None,
        }
    }
}

/// The two sides of a JOIN match, with their event times.
#[derive(Debug, Clone, Copy)]
pub(crate) struct JoinedRow<'a> {
    pub(crate) sides: [Row<'a>; 2],
    /// `None` for the missing right side of an unmatched LEFT OUTER JOIN row.
    pub(crate) timestamps_ms: [Option<i64>; 2],
}

/// Everything an expression can see while it is evaluated for one event or one window.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Context<'a> {
    pub(crate) row: Row<'a>,
    /// The event time of the row; for window output, the window end.
    pub(crate) timestamp_ms: i64,
    /// Values of the statement's analytic functions for this event.
    pub(crate) analytic: &'a [Value],
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ColumnRef {
    /// A field of the JSON event and then nested record fields.
    Field(Vec<String>),
    /// A slot of a known row and then nested record fields of the value in it.
    Slot { index: usize, rest: Vec<String> },
    /// A column of one side (0: left, 1: right) of a JOIN.
    Side { side: usize, inner: Box<ColumnRef> },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CastType {
    BigInt,
    Float,
    NVarChar,
    DateTime,
    Bit,
}

impl CastType {
    pub(crate) fn name(self) -> &'static str {
        match self {
            CastType::BigInt => "bigint",
            CastType::Float => "float",
            CastType::NVarChar => "nvarchar(max)",
            CastType::DateTime => "datetime",
            CastType::Bit => "bit",
        }
    }

    pub(crate) fn parse(name: &str) -> Option<CastType> {
        let lower = name.to_ascii_lowercase();
        let cast = match lower.as_str() {
            "bigint" | "int" => CastType::BigInt,
            "float" | "real" => CastType::Float,
            "datetime" | "datetime2" => CastType::DateTime,
            "bit" => CastType::Bit,
            _ if lower.starts_with("nvarchar") || lower.starts_with("varchar") => CastType::NVarChar,
            _ => return None,
        };
        Some(cast)
    }
}

/// Scalar functions, resolved at compile time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scalar {
    Lower,
    Upper,
    Len,
    Substring,
    Abs,
    Round,
    Floor,
    Ceiling,
    Sqrt,
    Power,
    Concat,
    Coalesce,
    GetArrayElement,
    GetArrayLength,
    GetRecordPropertyValue,
    DateDiff(TimeUnit),
    DateAdd(TimeUnit),
}

impl Scalar {
    /// Looks up a function by name; returns it with its (min, max) argument counts. The date
    /// functions are resolved by the planner because their first argument is a unit.
    pub(crate) fn lookup(name: &str) -> Option<(Scalar, usize, usize)> {
        let found = match name.to_ascii_lowercase().as_str() {
            "lower" => (Scalar::Lower, 1, 1),
            "upper" => (Scalar::Upper, 1, 1),
            "len" => (Scalar::Len, 1, 1),
            "substring" => (Scalar::Substring, 3, 3),
            "abs" => (Scalar::Abs, 1, 1),
            "round" => (Scalar::Round, 1, 2),
            "floor" => (Scalar::Floor, 1, 1),
            "ceiling" => (Scalar::Ceiling, 1, 1),
            "sqrt" => (Scalar::Sqrt, 1, 1),
            "power" => (Scalar::Power, 2, 2),
            "concat" => (Scalar::Concat, 1, usize::MAX),
            "coalesce" => (Scalar::Coalesce, 1, usize::MAX),
            "getarrayelement" => (Scalar::GetArrayElement, 2, 2),
            "getarraylength" => (Scalar::GetArrayLength, 1, 1),
            "getrecordpropertyvalue" => (Scalar::GetRecordPropertyValue, 2, 2),
            _ => return None,
        };
        Some(found)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum CompiledExpr {
    Const(Value),
    Column(ColumnRef),
    /// `System.Timestamp()`.
    Timestamp,
    /// A value computed outside the expression for this row: the statement's analytic function
    /// number `n`, or in MATCH_RECOGNIZE its navigation number `n` (a value read from other
    /// rows of the match).
    Analytic(usize),
    Neg(Box<CompiledExpr>),
    Not(Box<CompiledExpr>),
    And(Box<CompiledExpr>, Box<CompiledExpr>),
    Or(Box<CompiledExpr>, Box<CompiledExpr>),
    Binary(BinaryOp, Box<CompiledExpr>, Box<CompiledExpr>),
    IsNull(Box<CompiledExpr>, bool),
    Between {
        operand: Box<CompiledExpr>,
        low: Box<CompiledExpr>,
        high: Box<CompiledExpr>,
        negated: bool,
    },
    InList {
        operand: Box<CompiledExpr>,
        list: Vec<CompiledExpr>,
        negated: bool,
    },
    Like {
        operand: Box<CompiledExpr>,
        pattern: Box<CompiledExpr>,
        negated: bool,
    },
    Case {
        operand: Option<Box<CompiledExpr>>,
        whens: Vec<(CompiledExpr, CompiledExpr)>,
        otherwise: Box<CompiledExpr>,
    },
    Cast {
        operand: Box<CompiledExpr>,
        to: CastType,
        is_try: bool,
    },
    Call(Scalar, Vec<CompiledExpr>),
    /// The event time of one side of a JOIN (`DATEDIFF(second, a, b)` names the sides).
    SideTimestamp(usize),
    /// The whole input row as a record (for TopOne); the names when the row is slots.
    WholeRow(Option<Vec<String>>),
    /// The argument of a TopOne aggregate: `[[keys...], [descending...], row]`.
    TopOneArg {
        keys: Vec<CompiledExpr>,
        descending: Vec<bool>,
        row: Box<CompiledExpr>,
    },
}

type Eval = Result<Value, String>;

/// Events with at most this many fields are searched by a scan instead of a hash lookup.
///
/// serde_json's map hashes with SipHash, which costs more than comparing a handful of short
/// names (lengths first, then bytes): reading fields was a quarter of the time of simple
/// queries over typical events (Nexmark bids have 7 fields).
const FIELD_SCAN_MAX: usize = 12;

fn lookup_field<'a>(
    map: &'a serde_json::Map<String, serde_json::Value>,
    name: &str,
) -> Option<&'a serde_json::Value> {
    // Exact match first (the common case); ASA field names are case-insensitive, so
    // otherwise the first field whose name matches ignoring ASCII case.
    if map.len() <= FIELD_SCAN_MAX {
        let mut folded = None;
        for (key, value) in map {
            if key == name {
                return Some(value);
            }
            if folded.is_none() && key.eq_ignore_ascii_case(name) {
                folded = Some(value);
            }
        }
        return folded;
    }
    map.get(name)
        .or_else(|| map.iter().find(|(key, _)| key.eq_ignore_ascii_case(name)).map(|(_, value)| value))
}

fn walk<'a>(mut json: &'a serde_json::Value, path: &[String]) -> Option<&'a serde_json::Value> {
    for segment in path {
        json = lookup_field(json.as_object()?, segment)?;
    }
    Some(json)
}

/// SQL truth of a condition: NULL is false; `bit` 1/0 are accepted.
pub(crate) fn truthy(value: &Value) -> Result<bool, String> {
    match value {
        Value::Null => Ok(false),
        Value::Bool(flag) => Ok(*flag),
        Value::Int(number) => Ok(*number != 0),
        other => Err(format!("expected a condition, got {}", other.describe())),
    }
}

/// Converts a timestamp value (ISO-8601 string, epoch-milliseconds number, datetime) to millis.
pub(crate) fn timestamp_of(value: &Value) -> Result<i64, String> {
    match value {
        Value::Int(millis) => Ok(*millis),
        Value::Float(millis) if millis.is_finite() => Ok(*millis as i64),
        Value::DateTime(millis) => Ok(*millis),
        Value::Str(text) => {
            parse_timestamp(text).ok_or_else(|| format!("'{text}' is not an ISO-8601 timestamp"))
        }
        other => Err(format!("expected a timestamp, got {}", other.describe())),
    }
}

/// TIMESTAMP BY: the event time `expr` gives for the row. A plain field holding a string (the
/// usual case) is parsed where it lies instead of being copied into a `Value` first; anything
/// else goes through [`timestamp_of`], with the same results.
pub(crate) fn eval_timestamp(expr: &CompiledExpr, context: &Context<'_>) -> Result<i64, String> {
    if let (CompiledExpr::Column(ColumnRef::Field(path)), Row::Json(map)) = (expr, context.row) {
        if let Some((first, rest)) = path.split_first() {
            if let Some(serde_json::Value::String(text)) =
                lookup_field(map, first).and_then(|json| walk(json, rest))
            {
                return parse_timestamp(text).ok_or_else(|| format!("'{text}' is not an ISO-8601 timestamp"));
            }
        }
    }
    expr.eval(context).and_then(|value| timestamp_of(&value))
}

/// `LIKE` with `%` (any run) and `_` (any one character), case-sensitive.
fn like(text: &[char], pattern: &[char]) -> bool {
    // Iterative matcher with backtracking to the last `%`, linear in practice.
    let (mut text_idx, mut pattern_idx) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None;
    while text_idx < text.len() {
        match pattern.get(pattern_idx) {
            Some('%') => {
                backtrack = Some((pattern_idx, text_idx));
                pattern_idx += 1;
            }
            Some(wanted) if *wanted == '_' || *wanted == text[text_idx] => {
                text_idx += 1;
                pattern_idx += 1;
            }
            _ => match backtrack {
                Some((star_idx, star_text_idx)) => {
                    pattern_idx = star_idx + 1;
                    text_idx = star_text_idx + 1;
                    backtrack = Some((star_idx, star_text_idx + 1));
                }
                None => return false,
            },
        }
    }
    pattern[pattern_idx..].iter().all(|wanted| *wanted == '%')
}

fn arithmetic(op: BinaryOp, left: Value, right: Value) -> Eval {
    if matches!(left, Value::Null) || matches!(right, Value::Null) {
        return Ok(Value::Null);
    }
    if op == BinaryOp::Concat
        || (op == BinaryOp::Add && matches!((&left, &right), (Value::Str(_), Value::Str(_))))
    {
        return match (left, right) {
            (Value::Str(mut text), Value::Str(more)) => {
                text.push_str(&more);
                Ok(Value::Str(text))
            }
            (left, right) => Err(format!("cannot concatenate {} and {}", left.describe(), right.describe())),
        };
    }
    let overflow = || format!("bigint overflow in {}", op.symbol());
    match (&left, &right) {
        (Value::Int(a), Value::Int(b)) => match op {
            BinaryOp::Add => a.checked_add(*b).map(Value::Int).ok_or_else(overflow),
            BinaryOp::Sub => a.checked_sub(*b).map(Value::Int).ok_or_else(overflow),
            BinaryOp::Mul => a.checked_mul(*b).map(Value::Int).ok_or_else(overflow),
            BinaryOp::Div if *b == 0 => Err("division by zero".to_string()),
            BinaryOp::Div => Ok(Value::Float(*a as f64 / *b as f64)),
            BinaryOp::Mod if *b == 0 => Err("division by zero".to_string()),
            BinaryOp::Mod => a.checked_rem(*b).map(Value::Int).ok_or_else(overflow),
            _ => Err(format!("unsupported operator {}", op.symbol())),
        },
        _ => {
            let (Some(a), Some(b)) = (left.as_f64(), right.as_f64()) else {
                return Err(format!(
                    "cannot apply {} to {} and {}",
                    op.symbol(),
                    left.describe(),
                    right.describe()
                ));
            };
            match op {
                BinaryOp::Add => Ok(Value::Float(a + b)),
                BinaryOp::Sub => Ok(Value::Float(a - b)),
                BinaryOp::Mul => Ok(Value::Float(a * b)),
                BinaryOp::Div if b == 0.0 => Err("division by zero".to_string()),
                BinaryOp::Div => Ok(Value::Float(a / b)),
                BinaryOp::Mod if b == 0.0 => Err("division by zero".to_string()),
                BinaryOp::Mod => Ok(Value::Float(a % b)),
                _ => Err(format!("unsupported operator {}", op.symbol())),
            }
        }
    }
}

fn compare(op: BinaryOp, left: &Value, right: &Value) -> Eval {
    if left.incomparable(right) {
        return Err(format!("cannot compare {} with {}", left.describe(), right.describe()));
    }
    let Some(ordering) = left.compare(right) else {
        // JSON values that differ, or NULL.
        if matches!(left, Value::Null) || matches!(right, Value::Null) {
            return Ok(Value::Null);
        }
        return Ok(Value::Bool(op == BinaryOp::NotEq));
    };
    let result = match op {
        BinaryOp::Eq => ordering == Ordering::Equal,
        BinaryOp::NotEq => ordering != Ordering::Equal,
        BinaryOp::Lt => ordering == Ordering::Less,
        BinaryOp::LtEq => ordering != Ordering::Greater,
        BinaryOp::Gt => ordering == Ordering::Greater,
        BinaryOp::GtEq => ordering != Ordering::Less,
        _ => return Err(format!("unsupported comparison {}", op.symbol())),
    };
    Ok(Value::Bool(result))
}

fn cast(value: Value, to: CastType) -> Eval {
    if matches!(value, Value::Null) {
        return Ok(Value::Null);
    }
    let failed = |value: &Value| format!("cannot cast {} to {}", value.describe(), to.name());
    match to {
        CastType::BigInt => match &value {
            Value::Int(number) => Ok(Value::Int(*number)),
            Value::Float(number) if number.is_finite() && number.abs() < 9.2e18 => {
                Ok(Value::Int(number.trunc() as i64))
            }
            Value::Bool(flag) => Ok(Value::Int(i64::from(*flag))),
            Value::Str(text) => text
                .trim()
                .parse::<i64>()
                .map(Value::Int)
                .or_else(|_| text.trim().parse::<f64>().map(|number| Value::Int(number.trunc() as i64)))
                .map_err(|_| failed(&value)),
            _ => Err(failed(&value)),
        },
        CastType::Float => match &value {
            Value::Int(number) => Ok(Value::Float(*number as f64)),
            Value::Float(number) => Ok(Value::Float(*number)),
            Value::Bool(flag) => Ok(Value::Float(if *flag { 1.0 } else { 0.0 })),
            Value::Str(text) => text.trim().parse::<f64>().map(Value::Float).map_err(|_| failed(&value)),
            _ => Err(failed(&value)),
        },
        CastType::NVarChar => match value {
            Value::Str(text) => Ok(Value::Str(text)),
            Value::Bool(flag) => Ok(Value::Str(if flag { "1" } else { "0" }.to_string())),
            Value::Json(json) => Ok(Value::Str(match *json {
                serde_json::Value::String(text) => text,
                json => json.to_string(),
            })),
            other => Ok(Value::Str(match other.to_json() {
                serde_json::Value::String(text) => text,
                json => json.to_string(),
            })),
        },
        CastType::DateTime => match &value {
            Value::DateTime(millis) => Ok(Value::DateTime(*millis)),
            Value::Str(text) => parse_timestamp(text).map(Value::DateTime).ok_or_else(|| failed(&value)),
            _ => Err(failed(&value)),
        },
        CastType::Bit => match &value {
            Value::Bool(flag) => Ok(Value::Int(i64::from(*flag))),
            Value::Int(number) => Ok(Value::Int(i64::from(*number != 0))),
            Value::Float(number) => Ok(Value::Int(i64::from(*number != 0.0))),
            Value::Str(text) => match text.trim().to_ascii_lowercase().as_str() {
                "1" | "true" => Ok(Value::Int(1)),
                "0" | "false" => Ok(Value::Int(0)),
                _ => Err(failed(&value)),
            },
            _ => Err(failed(&value)),
        },
    }
}

fn expect_str(function: &str, value: &Value) -> Result<Option<String>, String> {
    match value {
        Value::Null => Ok(None),
        Value::Str(text) => Ok(Some(text.clone())),
        other => Err(format!("{function} expects a string, got {}", other.describe())),
    }
}

fn expect_number(function: &str, value: &Value) -> Result<Option<f64>, String> {
    match value {
        Value::Null => Ok(None),
        other => other
            .as_f64()
            .map(Some)
            .ok_or_else(|| format!("{function} expects a number, got {}", other.describe())),
    }
}

fn expect_int(function: &str, value: &Value) -> Result<Option<i64>, String> {
    match value {
        Value::Null => Ok(None),
        Value::Int(number) => Ok(Some(*number)),
        Value::Float(number) if number.fract() == 0.0 => Ok(Some(*number as i64)),
        other => Err(format!("{function} expects an integer, got {}", other.describe())),
    }
}

fn call(scalar: Scalar, args: Vec<Value>) -> Eval {
    let arg = |index: usize| args.get(index).unwrap_or(&Value::Null);
    let result = match scalar {
        Scalar::Lower => expect_str("LOWER", arg(0))?.map(|text| Value::Str(text.to_lowercase())),
        Scalar::Upper => expect_str("UPPER", arg(0))?.map(|text| Value::Str(text.to_uppercase())),
        Scalar::Len => expect_str("LEN", arg(0))?.map(|text| Value::Int(text.chars().count() as i64)),
        Scalar::Substring => {
            let (Some(text), Some(start), Some(length)) = (
                expect_str("SUBSTRING", arg(0))?,
                expect_int("SUBSTRING", arg(1))?,
                expect_int("SUBSTRING", arg(2))?,
            ) else {
                return Ok(Value::Null);
            };
            if length < 0 {
                return Err("SUBSTRING length must not be negative".to_string());
            }
            // T-SQL semantics: 1-based start, characters before position 1 count against length.
            let end = start.saturating_add(length);
            let first = start.max(1);
            let taken = (end - first).max(0) as usize;
            Some(Value::Str(text.chars().skip((first - 1) as usize).take(taken).collect()))
        }
        Scalar::Abs => match arg(0) {
            Value::Int(number) => Some(Value::Int(number.checked_abs().ok_or("bigint overflow in ABS")?)),
            other => expect_number("ABS", other)?.map(|number| Value::Float(number.abs())),
        },
        Scalar::Round => {
            let digits = if args.len() > 1 { expect_int("ROUND", arg(1))?.unwrap_or(0) } else { 0 };
            match arg(0) {
                Value::Int(number) if digits >= 0 => Some(Value::Int(*number)),
                other => expect_number("ROUND", other)?.map(|number| {
                    let scale = 10f64.powi(digits.clamp(-300, 300) as i32);
                    Value::Float((number * scale).round() / scale)
                }),
            }
        }
        Scalar::Floor => match arg(0) {
            Value::Int(number) => Some(Value::Int(*number)),
            other => expect_number("FLOOR", other)?.map(|number| Value::Float(number.floor())),
        },
        Scalar::Ceiling => match arg(0) {
            Value::Int(number) => Some(Value::Int(*number)),
            other => expect_number("CEILING", other)?.map(|number| Value::Float(number.ceil())),
        },
        Scalar::Sqrt => expect_number("SQRT", arg(0))?.map(|number| Value::Float(number.sqrt())),
        Scalar::Power => match (expect_number("POWER", arg(0))?, expect_number("POWER", arg(1))?) {
            (Some(base), Some(exponent)) => Some(Value::Float(base.powf(exponent))),
            _ => None,
        },
        Scalar::Concat => {
            // CONCAT treats NULL as the empty string and converts other scalars to text.
            let mut text = String::new();
            for value in &args {
                if let Value::Str(part) = cast(value.clone(), CastType::NVarChar)? {
                    text.push_str(&part);
                }
            }
            Some(Value::Str(text))
        }
        Scalar::Coalesce => args.into_iter().find(|value| !matches!(value, Value::Null)),
        Scalar::GetArrayElement => match (arg(0), expect_int("GetArrayElement", arg(1))?) {
            (Value::Json(json), Some(index)) if json.is_array() => {
                usize::try_from(index).ok().and_then(|index| json.get(index)).map(Value::from_json)
            }
            (Value::Null, _) | (_, None) => None,
            (other, _) => return Err(format!("GetArrayElement expects an array, got {}", other.describe())),
        },
        Scalar::GetArrayLength => match arg(0) {
            Value::Json(json) if json.is_array() => {
                json.as_array().map(|items| Value::Int(items.len() as i64))
            }
            Value::Null => None,
            other => return Err(format!("GetArrayLength expects an array, got {}", other.describe())),
        },
        Scalar::GetRecordPropertyValue => match (arg(0), expect_str("GetRecordPropertyValue", arg(1))?) {
            (Value::Json(json), Some(name)) if json.is_object() => {
                json.as_object().and_then(|map| walk_property(map, &name)).map(Value::from_json)
            }
            (Value::Null, _) | (_, None) => None,
            (other, _) => {
                return Err(format!("GetRecordPropertyValue expects a record, got {}", other.describe()));
            }
        },
        Scalar::DateDiff(unit) => match (arg(0), arg(1)) {
            (Value::Null, _) | (_, Value::Null) => None,
            (start, end) => {
                let start = start
                    .as_datetime()
                    .ok_or_else(|| format!("DATEDIFF expects datetimes, got {}", start.describe()))?;
                let end = end
                    .as_datetime()
                    .ok_or_else(|| format!("DATEDIFF expects datetimes, got {}", end.describe()))?;
                // Like T-SQL: the number of unit boundaries crossed between the two times.
                let difference = end.div_euclid(unit.millis()).checked_sub(start.div_euclid(unit.millis()));
                Some(Value::Int(difference.ok_or("DATEDIFF overflow")?))
            }
        },
        Scalar::DateAdd(unit) => match (expect_int("DATEADD", arg(0))?, arg(1)) {
            (None, _) | (_, Value::Null) => None,
            (Some(count), date) => {
                let millis = date
                    .as_datetime()
                    .ok_or_else(|| format!("DATEADD expects a datetime, got {}", date.describe()))?;
                let delta = count.checked_mul(unit.millis()).ok_or("DATEADD overflow")?;
                Some(Value::DateTime(millis.checked_add(delta).ok_or("DATEADD overflow")?))
            }
        },
    };
    Ok(result.unwrap_or(Value::Null))
}

/// `GetRecordPropertyValue` accepts a dotted path: `'a.b'` reads field `b` of field `a`.
fn walk_property<'a>(
    map: &'a serde_json::Map<String, serde_json::Value>,
    name: &str,
) -> Option<&'a serde_json::Value> {
    if let Some(value) = lookup_field(map, name) {
        return Some(value);
    }
    let mut segments = name.split('.');
    let first = lookup_field(map, segments.next()?)?;
    let rest: Vec<String> = segments.map(str::to_string).collect();
    walk(first, &rest)
}

impl CompiledExpr {
    pub(crate) fn eval(&self, context: &Context<'_>) -> Eval {
        match self {
            CompiledExpr::Const(value) => Ok(value.clone()),
            CompiledExpr::Column(column) => Ok(read_column(column, context.row)),
            CompiledExpr::Timestamp => Ok(Value::DateTime(context.timestamp_ms)),
            CompiledExpr::Analytic(index) => Ok(context.analytic.get(*index).cloned().unwrap_or(Value::Null)),
            CompiledExpr::Neg(operand) => match operand.eval(context)? {
                Value::Null => Ok(Value::Null),
                Value::Int(number) => {
                    number.checked_neg().map(Value::Int).ok_or_else(|| "bigint overflow in -".to_string())
                }
                Value::Float(number) => Ok(Value::Float(-number)),
                other => Err(format!("cannot negate {}", other.describe())),
            },
            CompiledExpr::Not(operand) => match operand.eval(context)? {
                Value::Null => Ok(Value::Null),
                other => Ok(Value::Bool(!truthy(&other)?)),
            },
            CompiledExpr::And(left, right) => {
                // Three-valued logic: FALSE wins over NULL.
                let left = left.eval(context)?;
                if !matches!(left, Value::Null) && !truthy(&left)? {
                    return Ok(Value::Bool(false));
                }
                let right = right.eval(context)?;
                if !matches!(right, Value::Null) && !truthy(&right)? {
                    return Ok(Value::Bool(false));
                }
                if matches!(left, Value::Null) || matches!(right, Value::Null) {
                    Ok(Value::Null)
                } else {
                    Ok(Value::Bool(true))
                }
            }
            CompiledExpr::Or(left, right) => {
                let left = left.eval(context)?;
                if !matches!(left, Value::Null) && truthy(&left)? {
                    return Ok(Value::Bool(true));
                }
                let right = right.eval(context)?;
                if !matches!(right, Value::Null) && truthy(&right)? {
                    return Ok(Value::Bool(true));
                }
                if matches!(left, Value::Null) || matches!(right, Value::Null) {
                    Ok(Value::Null)
                } else {
                    Ok(Value::Bool(false))
                }
            }
            CompiledExpr::Binary(op, left, right) => {
                let left = left.eval(context)?;
                let right = right.eval(context)?;
                match op {
                    BinaryOp::Eq
                    | BinaryOp::NotEq
                    | BinaryOp::Lt
                    | BinaryOp::LtEq
                    | BinaryOp::Gt
                    | BinaryOp::GtEq => compare(*op, &left, &right),
                    _ => arithmetic(*op, left, right),
                }
            }
            CompiledExpr::IsNull(operand, negated) => {
                Ok(Value::Bool(matches!(operand.eval(context)?, Value::Null) != *negated))
            }
            CompiledExpr::Between { operand, low, high, negated } => {
                let value = operand.eval(context)?;
                let above = compare(BinaryOp::GtEq, &value, &low.eval(context)?)?;
                let below = compare(BinaryOp::LtEq, &value, &high.eval(context)?)?;
                match (above, below) {
                    (Value::Bool(above), Value::Bool(below)) => Ok(Value::Bool((above && below) != *negated)),
                    _ => Ok(Value::Null),
                }
            }
            CompiledExpr::InList { operand, list, negated } => {
                let value = operand.eval(context)?;
                if matches!(value, Value::Null) {
                    return Ok(Value::Null);
                }
                for item in list {
                    if compare(BinaryOp::Eq, &value, &item.eval(context)?)? == Value::Bool(true) {
                        return Ok(Value::Bool(!*negated));
                    }
                }
                Ok(Value::Bool(*negated))
            }
            CompiledExpr::Like { operand, pattern, negated } => {
                match (operand.eval(context)?, pattern.eval(context)?) {
                    (Value::Str(text), Value::Str(pattern)) => {
                        let text: Vec<char> = text.chars().collect();
                        let pattern: Vec<char> = pattern.chars().collect();
                        Ok(Value::Bool(like(&text, &pattern) != *negated))
                    }
                    (Value::Null, _) | (_, Value::Null) => Ok(Value::Null),
                    (text, pattern) => Err(format!(
                        "LIKE expects strings, got {} and {}",
                        text.describe(),
                        pattern.describe()
                    )),
                }
            }
            CompiledExpr::Case { operand, whens, otherwise } => {
                let subject = operand.as_ref().map(|operand| operand.eval(context)).transpose()?;
                for (condition, result) in whens {
                    let matched = match &subject {
                        Some(subject) => {
                            compare(BinaryOp::Eq, subject, &condition.eval(context)?)? == Value::Bool(true)
                        }
                        None => truthy(&condition.eval(context)?)?,
                    };
                    if matched {
                        return result.eval(context);
                    }
                }
                otherwise.eval(context)
            }
            CompiledExpr::Cast { operand, to, is_try } => {
                let value = operand.eval(context)?;
                match cast(value, *to) {
                    Err(_) if *is_try => Ok(Value::Null),
                    result => result,
                }
            }
            CompiledExpr::SideTimestamp(side) => Ok(match context.row {
                Row::Pair(joined) => {
                    joined.timestamps_ms.get(*side).copied().flatten().map_or(Value::Null, Value::DateTime)
                }
                _ => Value::Null,
            }),
            CompiledExpr::WholeRow(names) => {
                Ok(Value::Json(Box::new(serde_json::Value::Object(match (context.row, names) {
                    (Row::Json(map), _) => map.clone(),
                    (Row::Slots(slots), Some(names)) => {
                        names.iter().cloned().zip(slots.iter().map(Value::to_json)).collect()
                    }
                    (Row::Slots(_), None) | (Row::Pair(_), _) => serde_json::Map::new(),
                }))))
            }
            CompiledExpr::TopOneArg { keys, descending, row } => {
                let keys = keys
                    .iter()
                    .map(|key| key.eval(context).map(|value| value.to_json()))
                    .collect::<Result<Vec<_>, _>>()?;
                let row = row.eval(context)?.to_json();
                Ok(Value::Json(Box::new(serde_json::json!([keys, descending, row]))))
            }
            CompiledExpr::Call(scalar, args) => {
                let values = args.iter().map(|arg| arg.eval(context)).collect::<Result<Vec<_>, _>>()?;
                call(*scalar, values)
            }
        }
    }
}

/// Evaluates key expressions (GROUP BY, PARTITION BY): their values and hashable forms.
pub(crate) fn eval_keys(
    exprs: &[CompiledExpr],
    context: &Context<'_>,
) -> Result<(Vec<crate::value::KeyPart>, Vec<Value>), String> {
    let values = exprs.iter().map(|expr| expr.eval(context)).collect::<Result<Vec<_>, _>>()?;
    Ok((values.iter().map(Value::key).collect(), values))
}

pub(crate) fn read_column(column: &ColumnRef, row: Row<'_>) -> Value {
    match (column, row) {
        (ColumnRef::Field(path), Row::Json(map)) => {
            let Some((first, rest)) = path.split_first() else { return Value::Null };
            lookup_field(map, first).and_then(|json| walk(json, rest)).map_or(Value::Null, Value::from_json)
        }
        (ColumnRef::Slot { index, rest }, Row::Slots(slots)) => match slots.get(*index) {
            Some(value) if rest.is_empty() => value.clone(),
            Some(Value::Json(json)) => walk(json, rest).map_or(Value::Null, Value::from_json),
            _ => Value::Null,
        },
        (ColumnRef::Side { side, inner }, Row::Pair(joined)) => match joined.sides.get(*side) {
            Some(row) => read_column(inner, *row),
            None => Value::Null,
        },
        // The planner compiles columns against the shape of the row the statement reads, so
        // the two never disagree; NULL keeps a planner bug from becoming a crash.
        _ => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn eval(expr: &CompiledExpr, event: &serde_json::Value) -> Eval {
        let map = event.as_object().cloned().unwrap_or_default();
        expr.eval(&Context { row: Row::Json(&map), timestamp_ms: 1_000, analytic: &[] })
    }

    fn column(path: &[&str]) -> Box<CompiledExpr> {
        Box::new(CompiledExpr::Column(ColumnRef::Field(path.iter().map(|s| s.to_string()).collect())))
    }

    fn constant(value: Value) -> Box<CompiledExpr> {
        Box::new(CompiledExpr::Const(value))
    }

    #[test]
    fn nested_paths_and_case_insensitive_fields() {
        let event = json!({"a": {"B": {"c": 5}}});
        assert_eq!(eval(&column(&["a", "b", "c"]), &event), Ok(Value::Int(5)));
        assert_eq!(eval(&column(&["a", "x"]), &event), Ok(Value::Null));
    }

    #[test]
    fn exact_field_names_win_over_case_folded_ones_in_small_and_large_events() {
        // Small events are scanned, large ones hashed: both must pick the same field.
        for n_padding in [0, FIELD_SCAN_MAX + 1] {
            let mut map = serde_json::Map::new();
            map.insert("X".into(), json!(1));
            for index in 0..n_padding {
                map.insert(format!("pad{index}"), json!(0));
            }
            map.insert("x".into(), json!(2));
            map.insert("Y".into(), json!(3));
            map.insert("yY".into(), json!(4));
            let event = serde_json::Value::Object(map);
            assert_eq!(eval(&column(&["x"]), &event), Ok(Value::Int(2)));
            assert_eq!(eval(&column(&["y"]), &event), Ok(Value::Int(3)));
            assert_eq!(eval(&column(&["YY"]), &event), Ok(Value::Int(4)));
            assert_eq!(eval(&column(&["z"]), &event), Ok(Value::Null));
        }
    }

    #[test]
    fn arithmetic_and_type_errors() {
        let sum = CompiledExpr::Binary(BinaryOp::Add, column(&["x"]), constant(Value::Int(1)));
        assert_eq!(eval(&sum, &json!({"x": 2})), Ok(Value::Int(3)));
        assert_eq!(eval(&sum, &json!({"x": 2.5})), Ok(Value::Float(3.5)));
        assert_eq!(eval(&sum, &json!({})), Ok(Value::Null));
        assert!(eval(&sum, &json!({"x": "a"})).is_err());
        let concat = CompiledExpr::Binary(BinaryOp::Add, column(&["x"]), constant(Value::Str("!".into())));
        assert_eq!(eval(&concat, &json!({"x": "hi"})), Ok(Value::Str("hi!".into())));
        let division = CompiledExpr::Binary(BinaryOp::Div, constant(Value::Int(1)), constant(Value::Int(0)));
        assert_eq!(eval(&division, &json!({})), Err("division by zero".to_string()));
    }

    #[test]
    fn three_valued_logic() {
        let null = || constant(Value::Null);
        let yes = || constant(Value::Bool(true));
        let no = || constant(Value::Bool(false));
        assert_eq!(eval(&CompiledExpr::And(null(), no()), &json!({})), Ok(Value::Bool(false)));
        assert_eq!(eval(&CompiledExpr::And(null(), yes()), &json!({})), Ok(Value::Null));
        assert_eq!(eval(&CompiledExpr::Or(null(), yes()), &json!({})), Ok(Value::Bool(true)));
        assert_eq!(eval(&CompiledExpr::Or(no(), null()), &json!({})), Ok(Value::Null));
    }

    #[test]
    fn scalar_functions() {
        let text = || Value::Str("Hello".into());
        assert_eq!(
            call(Scalar::Substring, vec![text(), Value::Int(2), Value::Int(3)]),
            Ok(Value::Str("ell".into()))
        );
        assert_eq!(call(Scalar::Len, vec![text()]), Ok(Value::Int(5)));
        assert_eq!(call(Scalar::Round, vec![Value::Float(2.345), Value::Int(2)]), Ok(Value::Float(2.35)));
        let array = Value::Json(Box::new(json!([10, 20])));
        assert_eq!(call(Scalar::GetArrayElement, vec![array.clone(), Value::Int(1)]), Ok(Value::Int(20)));
        assert_eq!(call(Scalar::GetArrayElement, vec![array, Value::Int(5)]), Ok(Value::Null));
        let record = Value::Json(Box::new(json!({"a": {"b": 1}})));
        assert_eq!(
            call(Scalar::GetRecordPropertyValue, vec![record, Value::Str("a.b".into())]),
            Ok(Value::Int(1))
        );
        assert_eq!(
            call(Scalar::DateDiff(TimeUnit::Second), vec![Value::DateTime(0), Value::DateTime(5_500)]),
            Ok(Value::Int(5))
        );
        assert!(call(Scalar::Upper, vec![Value::Int(1)]).is_err());
    }

    #[test]
    fn like_patterns() {
        let matches = |text: &str, pattern: &str| {
            like(&text.chars().collect::<Vec<_>>(), &pattern.chars().collect::<Vec<_>>())
        };
        assert!(matches("device-42", "device-%"));
        assert!(matches("abc", "a_c"));
        assert!(matches("abc", "%"));
        assert!(!matches("abc", "a_"));
        assert!(matches("aXbXc", "a%b%c"));
    }

    #[test]
    fn casts() {
        assert_eq!(cast(Value::Str("42".into()), CastType::BigInt), Ok(Value::Int(42)));
        assert_eq!(cast(Value::Float(2.9), CastType::BigInt), Ok(Value::Int(2)));
        assert_eq!(cast(Value::Int(3), CastType::NVarChar), Ok(Value::Str("3".into())));
        assert_eq!(
            cast(Value::Str("1970-01-01T00:00:01Z".into()), CastType::DateTime),
            Ok(Value::DateTime(1_000))
        );
        assert!(cast(Value::Str("x".into()), CastType::Float).is_err());
    }
}
