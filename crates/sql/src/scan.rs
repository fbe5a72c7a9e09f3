//! Reading only the fields a query reads from an event's JSON text.
//!
//! Events arrive as JSON text, and building a whole `serde_json::Value` per event (a `String`
//! per key and per string value, a hash per key) was the largest cost of simple queries. Most
//! queries read a few top-level fields, so at plan time [`fields_read`] works out, per input,
//! which top-level fields any expression can read; a query that hands the event on whole
//! (`SELECT *`, a `TopOne()` or `Collect()` of the row) needs all of it and gets the full
//! parse. [`scan_object`] then walks the event's top-level keys and decodes only the values of
//! those fields into `serde_json::Value`s, in a map shaped as the full parse would have made it.
//!
//! Guarantees, which the tests below check against the full parse:
//!
//! - Every key that equals a wanted name ignoring ASCII case is kept, in the order the full
//!   parse keeps it (a repeated key keeps its first position and its last value, as
//!   serde_json's map does), so a field lookup (exact name first, then the first key equal
//!   ignoring case) finds the same value in the scanned map as in the full one.
//! - Skipped values are parsed by the same serde_json code as the full parse (numbers with
//!   their range checks, strings with their UTF-8 and escape checks, the same nesting limit),
//!   only without keeping them. serde_json's own skipping (`IgnoredAny`, `RawValue`) is laxer:
//!   it takes `1e400`, invalid UTF-8 in a string and any depth, all of which the full parse
//!   refuses, so a scanned event would not fail where a parsed one does.
//! - Whatever the scan does not take as a plain object (invalid JSON, a value that is not an
//!   object, serde_json's private number and raw-value markers) returns `None`, and the caller
//!   runs the full parse, whose result or error is then exactly what it was before.

use std::borrow::Cow;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::expr::{ColumnRef, CompiledExpr};
use crate::plan::{AnalyticKind, Body, Navigation, Plan, Source, StatementPlan};

/// The top-level fields a query reads from one input's events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Fields {
    /// The query passes the event on whole, or reads it in a way the scan cannot bound.
    All,
    /// Only these names (as the query spells them; keys match them ignoring ASCII case).
    Named(Vec<String>),
}

impl Fields {
    fn add(&mut self, name: &str) {
        if let Fields::Named(names) = self {
            if !names.iter().any(|known| known.eq_ignore_ascii_case(name)) {
                names.push(name.to_string());
            }
        }
    }

    /// Whether an event key is one of these fields (case rules as in the field lookup).
    pub(crate) fn wants(&self, key: &str) -> bool {
        match self {
            Fields::All => true,
            Fields::Named(names) => names.iter().any(|name| name.eq_ignore_ascii_case(key)),
        }
    }

    /// How many fields are named (none for `All`): the size a scanned event's map starts at.
    pub(crate) fn n_named(&self) -> usize {
        match self {
            Fields::All => 0,
            Fields::Named(names) => names.len(),
        }
    }

    /// Both sets together.
    pub(crate) fn union(&self, other: &Fields) -> Fields {
        match (self, other) {
            (Fields::Named(left), Fields::Named(right)) => {
                let mut union = Fields::Named(left.clone());
                right.iter().for_each(|name| union.add(name));
                union
            }
            _ => Fields::All,
        }
    }
}

/// Per input of `plan` (in its order), the top-level fields its events are read by.
pub(crate) fn fields_read(plan: &Plan) -> Vec<Fields> {
    let mut fields: Vec<Fields> = vec![Fields::Named(Vec::new()); plan.inputs.len()];
    for (input, fields) in plan.inputs.iter().zip(&mut fields) {
        for expr in input.timestamp_by.iter().chain(&input.over) {
            add_expr(expr, fields);
        }
    }
    for statement in &plan.statements {
        // Only statements reading an input directly see its events; a statement reading a
        // step sees the step's columns, except after a `SELECT *` step, which is a direct
        // reader passing the event on and so already takes all of it.
        let sources = [Some(statement.source), statement.join.as_ref().map(|join| join.right_source)];
        for source in sources.into_iter().flatten() {
            let Source::Input(input_idx) = source else { continue };
            let Some(fields) = fields.get_mut(input_idx) else { continue };
            // `SELECT *` passes the event on, except after MATCH_RECOGNIZE, whose rows are
            // its matches (partition columns and measures).
            if matches!(statement.body, Body::Star { .. }) && statement.matcher.is_none() {
                *fields = Fields::All;
            }
            // Every expression of the statement, including those that read the other side of
            // a JOIN or the group row: a name too many only keeps a field the lookup would not
            // have asked for.
            for_each_expr(statement, |expr| add_expr(expr, fields));
        }
    }
    fields
}

/// Calls `visit` on every expression of `statement`.
fn for_each_expr(statement: &StatementPlan, mut visit: impl FnMut(&CompiledExpr)) {
    if let Some(expand) = &statement.expand {
        visit(&expand.arg);
    }
    if let Some(join) = &statement.join {
        visit(&join.on);
    }
    if let Some(join) = &statement.reference_join {
        join.stream_keys.iter().chain(&join.table_keys).chain([&join.on]).for_each(&mut visit);
    }
    statement.filter.iter().for_each(&mut visit);
    for analytic in &statement.analytics {
        match &analytic.kind {
            AnalyticKind::Lag { value, default, .. } => [value, default].into_iter().for_each(&mut visit),
            AnalyticKind::Last { value } => visit(value),
            AnalyticKind::IsFirst { .. } => {}
            AnalyticKind::Moving(spec) => spec.arg.iter().for_each(&mut visit),
        }
        analytic.partition_by.iter().chain(&analytic.when).for_each(&mut visit);
    }
    if let Some(matcher) = &statement.matcher {
        matcher.partition_by.iter().chain(&matcher.measures).for_each(&mut visit);
        for condition in matcher.conditions.iter().flatten() {
            visit(&condition.expr);
            for_each_navigation(&condition.navigations, &mut visit);
        }
        for_each_navigation(&matcher.measure_navigations, &mut visit);
    }
    match &statement.body {
        Body::Star { extras, .. } => extras.iter().for_each(&mut visit),
        Body::Project(items) => items.iter().for_each(&mut visit),
        Body::Aggregate(aggregate) => {
            let args = aggregate.aggregates.iter().filter_map(|spec| spec.arg.as_ref());
            aggregate
                .keys
                .iter()
                .chain(args)
                .chain(&aggregate.session_partition)
                .chain(&aggregate.having)
                .chain(&aggregate.items)
                .for_each(&mut visit);
        }
    }
}

fn for_each_navigation(navigations: &[Navigation], visit: &mut impl FnMut(&CompiledExpr)) {
    for navigation in navigations {
        match navigation {
            Navigation::Offset { value, .. } => visit(value),
            Navigation::Aggregate { arg, .. } => arg.iter().for_each(&mut *visit),
            Navigation::Classifier => {}
        }
    }
}

/// Adds the top-level fields `expr` reads to `fields`.
fn add_expr(expr: &CompiledExpr, fields: &mut Fields) {
    // No wildcard arm: a new kind of expression must say here what it reads.
    match expr {
        CompiledExpr::Const(_)
        | CompiledExpr::Timestamp
        | CompiledExpr::Analytic(_)
        | CompiledExpr::SideTimestamp(_) => {}
        CompiledExpr::Column(column) => add_column(column, fields),
        // The row as a record: all of it.
        CompiledExpr::WholeRow(_) => *fields = Fields::All,
        CompiledExpr::Neg(operand) | CompiledExpr::Not(operand) | CompiledExpr::IsNull(operand, _) => {
            add_expr(operand, fields)
        }
        CompiledExpr::Cast { operand, .. } => add_expr(operand, fields),
        CompiledExpr::And(left, right)
        | CompiledExpr::Or(left, right)
        | CompiledExpr::Binary(_, left, right) => {
            add_expr(left, fields);
            add_expr(right, fields);
        }
        CompiledExpr::Between { operand, low, high, .. } => {
            [operand, low, high].into_iter().for_each(|expr| add_expr(expr, fields))
        }
        CompiledExpr::InList { operand, list, .. } => {
            add_expr(operand, fields);
            list.iter().for_each(|expr| add_expr(expr, fields));
        }
        CompiledExpr::Like { operand, pattern, .. } => {
            add_expr(operand, fields);
            add_expr(pattern, fields);
        }
        CompiledExpr::Case { operand, whens, otherwise } => {
            operand.iter().for_each(|expr| add_expr(expr, fields));
            for (when, then) in whens {
                add_expr(when, fields);
                add_expr(then, fields);
            }
            add_expr(otherwise, fields);
        }
        CompiledExpr::Call(_, args) => args.iter().for_each(|expr| add_expr(expr, fields)),
        CompiledExpr::TopOneArg { keys, row, .. } => {
            keys.iter().for_each(|expr| add_expr(expr, fields));
            add_expr(row, fields);
        }
    }
}

fn add_column(column: &ColumnRef, fields: &mut Fields) {
    match column {
        // Nested fields are read from the top-level field's whole value.
        ColumnRef::Field(path) => {
            if let Some(first) = path.first() {
                fields.add(first);
            }
        }
        ColumnRef::Slot { .. } => {}
        ColumnRef::Side { inner, .. } => add_column(inner, fields),
    }
}

/// Serde_json's markers for its private number and raw-value encodings: an object whose first
/// key is one of them is not a map to the full parse (with the features that use them), so
/// the scan leaves it to the full parse.
const PRIVATE_KEYS: [&str; 2] = ["$serde_json::private::Number", "$serde_json::private::RawValue"];

fn is_private(key: &str) -> bool {
    PRIVATE_KEYS.contains(&key)
}

/// The top-level fields of the JSON object `bytes` that `wanted` takes, decoded as the full
/// parse would, in the order it would keep them. `None` when `bytes` is not one plain JSON
/// object (invalid JSON, another value, a private marker): the caller then parses it in full.
/// `capacity` is the number of fields expected, so that the map is sized once (growing it
/// rehashes every key, which showed in profiles).
pub(crate) fn scan_object(
    bytes: &[u8],
    capacity: usize,
    wanted: impl Fn(&str) -> bool,
) -> Option<serde_json::Map<String, serde_json::Value>> {
    // Only an object is worth scanning; anything else takes the full parse and its message.
    let first = bytes.iter().copied().find(|byte| !matches!(byte, b' ' | b'\n' | b'\r' | b'\t'))?;
    if first != b'{' {
        return None;
    }
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let map = TopLevel { wanted: &wanted, capacity }.deserialize(&mut deserializer).ok()?;
    deserializer.end().ok()?;
    Some(map)
}

/// The event object: wanted fields decoded, the rest parsed and dropped.
struct TopLevel<'w, W> {
    wanted: &'w W,
    capacity: usize,
}

impl<'de, W: Fn(&str) -> bool> DeserializeSeed<'de> for TopLevel<'_, W> {
    type Value = serde_json::Map<String, serde_json::Value>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        // `deserialize_any`, as the full parse does, so the same input takes the same path.
        deserializer.deserialize_any(self)
    }
}

impl<'de, W: Fn(&str) -> bool> Visitor<'de> for TopLevel<'_, W> {
    type Value = serde_json::Map<String, serde_json::Value>;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
        let mut map = serde_json::Map::with_capacity(self.capacity);
        let mut first = true;
        while let Some(Key(key)) = access.next_key()? {
            if std::mem::take(&mut first) && is_private(&key) {
                return Err(serde::de::Error::custom("a serde_json private marker"));
            }
            if (self.wanted)(&key) {
                // A repeated key: the map keeps the first position and the last value.
                map.insert(key.into_owned(), access.next_value::<serde_json::Value>()?);
            } else {
                access.next_value_seed(Skip)?;
            }
        }
        Ok(map)
    }
}

/// A key, borrowed from the input unless it had escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;

            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("a field name")
            }

            fn visit_borrowed_str<E>(self, key: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(key)))
            }

            fn visit_str<E>(self, key: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(key.to_string())))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

/// A value parsed through `deserialize_any` (the full parse's path, with its checks) and
/// dropped: strings stay borrowed or in serde_json's scratch buffer, nothing is allocated.
#[derive(Clone, Copy)]
struct Skip;

impl<'de> DeserializeSeed<'de> for Skip {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Skip {
    type Value = ();

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut access: A) -> Result<(), A::Error> {
        while access.next_element_seed(Skip)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<(), A::Error> {
        let mut first = true;
        while let Some(Key(key)) = access.next_key()? {
            if std::mem::take(&mut first) && is_private(&key) {
                return Err(serde::de::Error::custom("a serde_json private marker"));
            }
            access.next_value_seed(Skip)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;
    use crate::{compile, Job, JobOptions};

    fn job(sql: &str) -> Job {
        compile(sql, JobOptions::default()).unwrap_or_else(|errors| panic!("{sql}: {errors:?}"))
    }

    /// Per input, the fields a query reads, or `None` for all of them.
    fn check_fields(sql: &str, expected: &[Option<&[&str]>]) {
        let job = job(sql);
        // Compared as sets of lowercase names: the order and spelling kept do not matter.
        let actual: Vec<Option<BTreeSet<String>>> = job
            .input_fields()
            .into_iter()
            .map(|fields| match fields {
                Fields::All => None,
                Fields::Named(names) => Some(names.iter().map(|name| name.to_ascii_lowercase()).collect()),
            })
            .collect();
        let expected: Vec<Option<BTreeSet<String>>> = expected
            .iter()
            .map(|names| names.map(|names| names.iter().map(|name| name.to_ascii_lowercase()).collect()))
            .collect();
        assert_eq!(actual, expected, "{sql}");
    }

    #[test]
    fn the_fields_a_query_reads() {
        // Nexmark q1: four of a bid's seven fields.
        check_fields(
            "SELECT auction, bidder, 0.908 * price AS price, dateTime INTO out FROM bid TIMESTAMP BY dateTime",
            &[Some(&["dateTime", "auction", "bidder", "price"])],
        );
        // Nested paths read their top-level field; names differing in case are one field.
        check_fields("SELECT a.b.c, A.d, e INTO out FROM input a WHERE E > 1", &[Some(&["b", "d", "e"])]);
        // The event passed on whole.
        check_fields("SELECT * INTO out FROM bid", &[None]);
        check_fields("SELECT *, 1 AS one INTO out FROM bid WHERE price > 1", &[None]);
        check_fields(
            "SELECT TopOne() OVER (ORDER BY price DESC) AS top INTO out FROM bid TIMESTAMP BY ts \
             GROUP BY TumblingWindow(second, 10)",
            &[None],
        );
        check_fields(
            "SELECT Collect() AS all_rows INTO out FROM bid GROUP BY TumblingWindow(second, 10)",
            &[None],
        );
        // A `SELECT *` step passes the event on whole to the statements reading it.
        check_fields("WITH s AS (SELECT * FROM input) SELECT a INTO out FROM s", &[None]);
        // Aggregates, GROUP BY, HAVING, OVER keys and a step's columns.
        check_fields(
            "WITH s AS (SELECT k, SUM(v) AS total FROM input TIMESTAMP BY ts OVER dev \
             GROUP BY dev, k, TumblingWindow(second, 1) HAVING COUNT(*) > 0) \
             SELECT k, total INTO out FROM s",
            &[Some(&["ts", "dev", "k", "v"])],
        );
        // A JOIN of two inputs: each side's columns (a name too many is harmless).
        check_fields(
            "SELECT l.a, r.b INTO out FROM lhs l TIMESTAMP BY t1 JOIN rhs r TIMESTAMP BY t2 \
             ON l.id = r.id AND DATEDIFF(second, l, r) BETWEEN 0 AND 5",
            &[Some(&["t1", "id", "a", "b"]), Some(&["t2", "id", "a", "b"])],
        );
        // Analytic functions and CROSS APPLY.
        check_fields(
            "SELECT id, LAG(v) OVER (PARTITION BY dev LIMIT DURATION(second, 10)) AS previous \
             INTO out FROM input",
            &[Some(&["v", "dev", "id"])],
        );
        check_fields(
            "SELECT e.ArrayValue AS value INTO out FROM input i CROSS APPLY GetArrayElements(i.items) AS e",
            &[Some(&["items", "e"])],
        );
        // MATCH_RECOGNIZE: PARTITION BY, DEFINE and MEASURES; its `SELECT *` is the matches.
        let match_recognize = "INTO out FROM bid TIMESTAMP BY ts MATCH_RECOGNIZE ( \
             LIMIT DURATION(second, 10) PARTITION BY auction \
             MEASURES FIRST(A.price) AS fromPrice, LAST(B.price) AS toPrice \
             PATTERN (A B) DEFINE A AS A.kind = 'x', B AS B.price > A.price) AS m";
        for select in ["SELECT *", "SELECT auction, toPrice"] {
            check_fields(
                &format!("{select} {match_recognize}"),
                &[Some(&["ts", "auction", "price", "kind"])],
            );
        }
    }

    /// The key-value pairs of `map` in its order (`Map`'s `==` ignores the order).
    fn pairs(map: &serde_json::Map<String, serde_json::Value>) -> Vec<(&String, &serde_json::Value)> {
        map.iter().collect()
    }

    /// The scan of `text` for `names` agrees with the full parse: the same fields, values and
    /// order, or `None` exactly when the full parse gives no object.
    fn check_scan(text: &str, names: &[&str]) {
        let fields = Fields::Named(names.iter().map(|name| name.to_string()).collect());
        let scanned = scan_object(text.as_bytes(), names.len(), |key| fields.wants(key));
        match serde_json::from_slice::<serde_json::Value>(text.as_bytes()) {
            Ok(serde_json::Value::Object(full)) => {
                let mut expected = full.clone();
                expected.retain(|key, _| fields.wants(key));
                match scanned {
                    Some(scanned) => assert_eq!(pairs(&scanned), pairs(&expected), "{text}"),
                    // Left to the full parse, which is what these mean to it with serde_json's
                    // `raw_value` or `arbitrary_precision` features (the workspace has the first).
                    None => assert!(text.contains("$serde_json::private::"), "{text}: not scanned"),
                }
            }
            _ => assert_eq!(scanned, None, "{text}"),
        }
    }

    #[test]
    fn scanned_fields_are_the_parsed_ones() {
        let names = ["a", "b", "ts", "é", "k\"ey"];
        for text in [
            r#"{"a": 1, "b": "two", "c": 3}"#,
            r#"{}"#,
            " \n\t{ \"a\" :\r1 , \"skip\" : [ 1 , { \"x\" : null } ] }  \n",
            // Case: every spelling of a wanted name is kept, in order.
            r#"{"A": 1, "x": 0, "a": 2, "B": 3}"#,
            // Duplicates: the first position, the last value.
            r#"{"a": 1, "b": 2, "a": 3, "x": 4, "a": {"n": 5}}"#,
            // Escapes in keys and strings, unicode.
            r#"{"\u0061": "\u00e9\n\"", "k\"ey": "\ud83d\ude00", "é": "ü", "\u00c9": 1, "x\\": "\\"}"#,
            // Numbers: integers, negative, floats, beyond u64, exponents.
            r#"{"a": -9223372036854775808, "b": 18446744073709551615, "ts": 18446744073709551616}"#,
            r#"{"a": 1.5e-3, "b": -0.0, "ts": 1E+2, "x": 123456789012345678901234567890}"#,
            // Nested values read by path are decoded whole; skipped ones only checked.
            r#"{"a": {"b": {"c": [1, 2, {"d": "e"}]}}, "x": {"y": [[], {}]}}"#,
            // Not an object, or not JSON: the full parse decides.
            "[1, 2]",
            "\"text\"",
            "42",
            "null",
            "",
            "   ",
            r#"{"a": 1"#,
            r#"{"a": 1,}"#,
            r#"{"a": 1} x"#,
            r#"{"a": 1} {"a": 2}"#,
            r#"{a: 1}"#,
            r#"{"a": 01}"#,
            r#"{"a": "tab	inside"}"#,
            r#"{"a": "\x"}"#,
            // Invalid in a skipped value, which serde_json's own skipping would let through.
            r#"{"a": 1, "x": 1e400}"#,
            r#"{"a": 1, "x": -1e400}"#,
            r#"{"a": 1, "x": "\ud800"}"#,
            // serde_json's private markers.
            r#"{"$serde_json::private::RawValue": "[1]"}"#,
            r#"{"a": 1, "x": {"$serde_json::private::RawValue": "not json"}}"#,
            r#"{"$serde_json::private::Number": "1"}"#,
        ] {
            check_scan(text, &names);
        }
        // Depth: the full parse refuses 128 levels of nesting, in a skipped value too.
        for depth in [10, 126, 127, 128, 200] {
            let nested = format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
            check_scan(&format!(r#"{{"a": 1, "x": {nested}}}"#), &names);
            check_scan(&format!(r#"{{"a": {nested}}}"#), &names);
        }
        // Invalid UTF-8 in a skipped string and in a skipped key.
        for bytes in [&b"{\"a\": 1, \"x\": \"\xff\"}"[..], b"{\"\xff\": 1}", b"\xef\xbb\xbf{\"a\": 1}"] {
            let fields = Fields::Named(vec!["a".to_string()]);
            assert_eq!(scan_object(bytes, 1, |key| fields.wants(key)), None);
            assert!(serde_json::from_slice::<serde_json::Value>(bytes).is_err());
        }
    }

    /// `push_json_bytes` gives what `push` of the parsed event gives, step by step, or the
    /// parse's error.
    fn check_push(sql: &str, events: &[&[u8]]) {
        let (mut by_value, mut by_bytes) = (job(sql), job(sql));
        let input = by_value.inputs()[0].clone();
        for (index, bytes) in events.iter().enumerate() {
            let arrival_ms = index as i64 * 1_000;
            let pushed = match serde_json::from_slice::<serde_json::Value>(bytes) {
                Ok(event) => Ok(by_value.push(&input, 0, &event, arrival_ms)),
                Err(error) => Err(error.to_string()),
            };
            let scanned =
                by_bytes.push_json_bytes(&input, 0, bytes, arrival_ms).map_err(|error| error.to_string());
            assert_eq!(scanned, pushed, "{sql}: {}", String::from_utf8_lossy(bytes));
        }
        // Checkpoints differ: the scanned job's held events have only the fields it reads.
        assert_eq!(by_bytes.finish(), by_value.finish(), "{sql}");
    }

    #[test]
    fn pushed_bytes_give_the_results_of_pushed_values() {
        let events: &[&[u8]] = &[
            br#"{"Dev": "d1", "v": 1, "ts": "2026-01-01T00:00:01Z", "x": [1, 2], "extra": "skip me"}"#,
            br#"{"dev": "d2", "V": 2.5, "ts": "2026-01-01T00:00:02Z", "n": {"m": {"k": "deep"}}}"#,
            br#"{"dev": "d1", "v": 3, "v": 4, "ts": "2026-01-01T00:00:04Z", "DEV": "d3"}"#,
            // Late: reported whole.
            br#"{"dev": "d2", "v": 5, "ts": "2026-01-01T00:00:00Z", "note": "late \u00e9"}"#,
            br#"{"dev": "d1", "v": "text", "ts": "not a time"}"#,
            br#"{"dev": "d1", "v": 6, "ts": "2026-01-01T00:00:30Z", "big": 18446744073709551616}"#,
            b"[1, 2]",
            b"17",
            br#"{"dev": "d1", "v": 1"#,
            br#"{"dev": "d1", "v": 1, "x": 1e400}"#,
            b"{\"dev\": \"d1\", \"x\": \"\xff\"}",
            br#"{"dev": "d1", "v": 7, "ts": "2026-01-01T00:01:00Z"}"#,
        ];
        for sql in [
            "SELECT dev, v INTO out FROM input TIMESTAMP BY ts",
            "SELECT dev, n.m.k AS k, GetArrayElement(x, 1) AS second INTO out FROM input TIMESTAMP BY ts",
            "SELECT dev, SUM(v) AS total, COUNT(*) AS n INTO out FROM input TIMESTAMP BY ts \
             GROUP BY dev, TumblingWindow(second, 10)",
            "SELECT dev, AVG(v) AS average INTO out FROM input TIMESTAMP BY ts OVER dev \
             GROUP BY dev, TumblingWindow(second, 10)",
            "SELECT dev, LAG(v) OVER (PARTITION BY dev LIMIT DURATION(minute, 1)) AS previous \
             INTO out FROM input TIMESTAMP BY ts",
            "SELECT * INTO out FROM input TIMESTAMP BY ts",
            "SELECT v INTO out FROM input",
            "SELECT dev INTO out FROM input TIMESTAMP BY ts WHERE v > 2",
        ] {
            check_push(sql, events);
        }
    }

    /// A JSON value as text, with the odd corners the scan must agree with the parse on.
    fn json_text() -> impl Strategy<Value = String> {
        let leaf = prop_oneof![
            Just("null".to_string()),
            Just("true".to_string()),
            any::<i64>().prop_map(|number| number.to_string()),
            any::<u64>().prop_map(|number| number.to_string()),
            any::<f64>().prop_map(|number| format!("{number:?}")),
            Just("18446744073709551616".to_string()),
            Just("1e400".to_string()),
            Just("-0.0e-3".to_string()),
            "[a-zA-Z0-9 é😀]{0,8}".prop_map(|text| serde_json::Value::String(text).to_string()),
            Just(r#""esc\"aped\\ \u00e9 \ud83d\ude00 \n""#.to_string()),
            Just(r#""\ud800""#.to_string()),
        ];
        leaf.prop_recursive(4, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(|items| format!("[{}]", items.join(","))),
                prop::collection::vec((key_text(), inner), 0..4).prop_map(|fields| object_text(&fields, " ")),
            ]
        })
    }

    /// Keys: wanted names in several spellings, escapes, unicode and others.
    fn key_text() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(r#""a""#.to_string()),
            Just(r#""A""#.to_string()),
            Just(r#""\u0061""#.to_string()),
            Just(r#""Ts""#.to_string()),
            Just(r#""ts""#.to_string()),
            Just(r#""é""#.to_string()),
            Just(r#""É""#.to_string()),
            Just(r#""k\"ey""#.to_string()),
            "[a-zA-Z]{0,3}".prop_map(|text| serde_json::Value::String(text).to_string()),
        ]
    }

    fn object_text(fields: &[(String, String)], space: &str) -> String {
        let fields: Vec<String> =
            fields.iter().map(|(key, value)| format!("{key}{space}:{space}{value}")).collect();
        format!("{{{space}{}{space}}}", fields.join(&format!(",{space}")))
    }

    /// An event: an object (sometimes cut short, or another value), spaced one of several ways.
    fn event_text() -> impl Strategy<Value = String> {
        let object = || {
            let space = prop_oneof![Just(""), Just(" "), Just("\n\t "), Just("\r\n")];
            (prop::collection::vec((key_text(), json_text()), 0..8), space)
                .prop_map(|(fields, space)| object_text(&fields, space))
        };
        prop_oneof![
            6 => object(),
            1 => (object(), any::<prop::sample::Index>()).prop_map(|(text, cut)| {
                let mut end = cut.index(text.len() + 1);
                while !text.is_char_boundary(end) {
                    end -= 1;
                }
                text[..end].to_string()
            }),
            1 => json_text(),
        ]
    }

    proptest! {
        #[test]
        fn random_events_scan_as_they_parse(text in event_text()) {
            check_scan(&text, &["a", "ts", "é"]);
        }

        #[test]
        fn random_events_push_as_they_parse(texts in prop::collection::vec(event_text(), 1..6)) {
            let events: Vec<&[u8]> = texts.iter().map(|text| text.as_bytes()).collect();
            check_push("SELECT a, A.b AS ab, ts INTO out FROM input", &events);
        }
    }
}
