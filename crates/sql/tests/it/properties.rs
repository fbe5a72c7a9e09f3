//! Property tests: tumbling and hopping window COUNT/SUM/MIN/MAX per key equal a brute-force
//! recomputation over the same events, whatever their arrival order within the out-of-order
//! tolerance.

use std::collections::BTreeMap;

use proptest::prelude::*;
use serde_json::json;
use tidewater_sql::{compile, parse_timestamp, JobOptions, Step};

/// (count, sum, min, max) per (window end, key).
type Table = BTreeMap<(i64, i64), (i64, i64, i64, i64)>;

#[derive(Debug, Clone, Copy)]
struct Window {
    size_ms: i64,
    hop_ms: i64,
}

impl Window {
    fn clause(self) -> String {
        if self.size_ms == self.hop_ms {
            format!("TumblingWindow(millisecond, {})", self.size_ms)
        } else {
            format!("HoppingWindow(millisecond, {}, {})", self.size_ms, self.hop_ms)
        }
    }
}

/// Every window `(end - size, end]` with `end` a multiple of the hop, found by scanning all
/// candidate ends rather than by the engine's arithmetic.
fn brute_force(events: &[(i64, i64, i64)], window: Window) -> Table {
    let mut table = Table::new();
    for &(key, value, timestamp_ms) in events {
        let lowest = (timestamp_ms / window.hop_ms - 2) * window.hop_ms;
        let highest = timestamp_ms + window.size_ms + window.hop_ms;
        let mut end = lowest;
        while end <= highest {
            if end - window.size_ms < timestamp_ms && timestamp_ms <= end {
                let entry = table.entry((end, key)).or_insert((0, 0, i64::MAX, i64::MIN));
                entry.0 += 1;
                entry.1 += value;
                entry.2 = entry.2.min(value);
                entry.3 = entry.3.max(value);
            }
            end += window.hop_ms;
        }
    }
    table
}

fn collect(step: Step, table: &mut Table, last_end: &mut i64) -> Result<(), TestCaseError> {
    prop_assert!(step.late.is_empty(), "no event is late within the tolerance: {:?}", step.late);
    prop_assert!(step.errors.is_empty(), "{:?}", step.errors);
    for output in step.outputs {
        let row = &output.row;
        let end = row["w"].as_str().and_then(parse_timestamp).unwrap_or(i64::MIN);
        prop_assert_eq!(end, output.timestamp_ms);
        prop_assert!(end >= *last_end, "windows come out in end order");
        *last_end = end;
        let key = row["k"].as_i64().unwrap_or(-1);
        let values = (
            row["n"].as_i64().unwrap_or(-1),
            row["s"].as_i64().unwrap_or(-1),
            row["mn"].as_i64().unwrap_or(-1),
            row["mx"].as_i64().unwrap_or(-1),
        );
        prop_assert!(table.insert((end, key), values).is_none(), "window {} key {} emitted twice", end, key);
    }
    Ok(())
}

fn window_strategy() -> impl Strategy<Value = Window> {
    prop_oneof![
        (1i64..=8).prop_map(|seconds| Window { size_ms: seconds * 1_000, hop_ms: seconds * 1_000 }),
        prop_oneof![Just((10_000, 5_000)), Just((6_000, 4_000)), Just((3_000, 1_000)), Just((5_000, 2_000))]
            .prop_map(|(size_ms, hop_ms)| Window { size_ms, hop_ms }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn windows_match_brute_force(
        events in prop::collection::vec((0i64..3, -50i64..50, 0i64..60_000, 0u32..=100), 0..80),
        tolerance_ms in prop_oneof![Just(0i64), Just(1_500), Just(10_000)],
        window in window_strategy(),
    ) {
        // Arrival order: by event time plus a jitter of at most the tolerance, so every event is
        // at most `tolerance` behind the newest one before it and none is late.
        let mut arrivals: Vec<(i64, i64, i64, i64)> = events
            .iter()
            .map(|&(key, value, timestamp_ms, jitter)| {
                (timestamp_ms + tolerance_ms * i64::from(jitter) / 100, key, value, timestamp_ms)
            })
            .collect();
        arrivals.sort_by_key(|arrival| arrival.0);
        let query = format!(
            "SELECT k, COUNT(*) AS n, SUM(v) AS s, MIN(v) AS mn, MAX(v) AS mx, System.Timestamp() AS w \
             INTO o FROM i TIMESTAMP BY t GROUP BY k, {}",
            window.clause()
        );
        let options = JobOptions { out_of_order_tolerance_ms: tolerance_ms, ..JobOptions::default() };
        let mut job = compile(&query, options).map_err(|error| TestCaseError::fail(format!("{error:?}")))?;
        let mut actual = Table::new();
        let mut last_end = i64::MIN;
        for &(_, key, value, timestamp_ms) in &arrivals {
            let step = job.push("i", 0, &json!({"k": key, "v": value, "t": timestamp_ms}), 0);
            collect(step, &mut actual, &mut last_end)?;
        }
        collect(job.finish(), &mut actual, &mut last_end)?;
        let events: Vec<(i64, i64, i64)> = events.iter().map(|&(key, value, timestamp_ms, _)| (key, value, timestamp_ms)).collect();
        prop_assert_eq!(actual, brute_force(&events, window));
    }
}

/// (count, sum) per (row time, key).
type CountSum = BTreeMap<(i64, i64), (i64, i64)>;

/// Arrival order within the tolerance, as in `windows_match_brute_force`.
fn arrival_order(events: &[(i64, i64, i64, u32)], tolerance_ms: i64) -> Vec<(i64, i64, i64)> {
    let mut arrivals: Vec<(i64, i64, i64, i64)> = events
        .iter()
        .map(|&(key, value, timestamp_ms, jitter)| {
            (timestamp_ms + tolerance_ms * i64::from(jitter) / 100, key, value, timestamp_ms)
        })
        .collect();
    arrivals.sort_by_key(|arrival| arrival.0);
    arrivals.into_iter().map(|(_, key, value, timestamp_ms)| (key, value, timestamp_ms)).collect()
}

/// Runs `query` over the events and returns (end, key) -> (count, sum) with the output order
/// checked to be by end.
fn run_count_sum(
    query: &str,
    arrivals: &[(i64, i64, i64)],
    tolerance_ms: i64,
) -> Result<CountSum, TestCaseError> {
    let options = JobOptions { out_of_order_tolerance_ms: tolerance_ms, ..JobOptions::default() };
    let mut job = compile(query, options).map_err(|error| TestCaseError::fail(format!("{error:?}")))?;
    let mut table = BTreeMap::new();
    let mut last_end = i64::MIN;
    let mut steps = Vec::new();
    for &(key, value, timestamp_ms) in arrivals {
        steps.push(job.push("i", 0, &json!({"k": key, "v": value, "t": timestamp_ms}), 0));
    }
    steps.push(job.finish());
    for step in steps {
        prop_assert!(step.late.is_empty() && step.errors.is_empty(), "{:?}", step);
        for output in step.outputs {
            let end = output.timestamp_ms;
            prop_assert!(end >= last_end, "rows come out in time order");
            last_end = end;
            let key = output.row["k"].as_i64().unwrap_or(-1);
            let values = (output.row["n"].as_i64().unwrap_or(-1), output.row["s"].as_i64().unwrap_or(-1));
            prop_assert!(table.insert((end, key), values).is_none(), "({}, {}) emitted twice", end, key);
        }
    }
    Ok(table)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(100))]

    /// A sliding window has a row at every instant its content changes (an event enters at `t`
    /// or leaves at `t + size`) with the events in `(point - size, point]`, if any.
    #[test]
    fn sliding_windows_match_brute_force(
        events in prop::collection::vec((0i64..3, -50i64..50, 0i64..30_000, 0u32..=100), 0..50),
        tolerance_ms in prop_oneof![Just(0i64), Just(2_000)],
        size_seconds in 1i64..=6,
    ) {
        let size_ms = size_seconds * 1_000;
        let query = format!(
            "SELECT k, COUNT(*) AS n, SUM(v) AS s INTO o FROM i TIMESTAMP BY t GROUP BY k, SlidingWindow(second, {size_seconds})"
        );
        let actual = run_count_sum(&query, &arrival_order(&events, tolerance_ms), tolerance_ms)?;
        let mut expected = BTreeMap::new();
        for &(key, _, timestamp_ms, _) in &events {
            for point in [timestamp_ms, timestamp_ms + size_ms] {
                let inside: Vec<i64> = events
                    .iter()
                    .filter(|event| event.0 == key && point - size_ms < event.2 && event.2 <= point)
                    .map(|event| event.1)
                    .collect();
                if !inside.is_empty() {
                    expected.insert((point, key), (inside.len() as i64, inside.iter().sum()));
                }
            }
        }
        prop_assert_eq!(actual, expected);
    }

    /// Session windows per key with a maximum duration that is never reached: a session is a run
    /// of events whose gaps are at most the timeout, and ends at its last event plus the timeout.
    #[test]
    fn session_windows_match_brute_force(
        events in prop::collection::vec((0i64..3, -50i64..50, 0i64..30_000, 0u32..=100), 0..50),
        tolerance_ms in prop_oneof![Just(0i64), Just(2_000)],
        timeout_seconds in 1i64..=4,
    ) {
        let timeout_ms = timeout_seconds * 1_000;
        let query = format!(
            "SELECT k, COUNT(*) AS n, SUM(v) AS s INTO o FROM i TIMESTAMP BY t \
             GROUP BY k, SessionWindow(second, {timeout_seconds}, 86400) OVER (PARTITION BY k)"
        );
        let actual = run_count_sum(&query, &arrival_order(&events, tolerance_ms), tolerance_ms)?;
        let mut expected = BTreeMap::new();
        for key in 0..3 {
            let mut mine: Vec<(i64, i64)> =
                events.iter().filter(|event| event.0 == key).map(|event| (event.2, event.1)).collect();
            mine.sort();
            let mut session: Option<(i64, i64, i64)> = None; // (last, count, sum)
            for (timestamp_ms, value) in mine {
                session = match session {
                    Some((last, count, sum)) if timestamp_ms - last <= timeout_ms => Some((timestamp_ms, count + 1, sum + value)),
                    Some((last, count, sum)) => {
                        expected.insert((last + timeout_ms, key), (count, sum));
                        Some((timestamp_ms, 1, value))
                    }
                    None => Some((timestamp_ms, 1, value)),
                };
            }
            if let Some((last, count, sum)) = session {
                expected.insert((last + timeout_ms, key), (count, sum));
            }
        }
        prop_assert_eq!(actual, expected);
    }
}

/// Pieces that random queries are assembled from, so that generated text gets past the lexer
/// and exercises the parser and planner.
const QUERY_PIECES: &[&str] = &[
    "SELECT",
    "INTO",
    "FROM",
    "WHERE",
    "GROUP",
    "BY",
    "HAVING",
    "WITH",
    "AS",
    "TIMESTAMP",
    "OVER",
    "PARTITION",
    "LIMIT",
    "DURATION",
    "CASE",
    "WHEN",
    "THEN",
    "ELSE",
    "END",
    "CAST",
    "NOT",
    "AND",
    "OR",
    "IS",
    "NULL",
    "IN",
    "BETWEEN",
    "LIKE",
    "*",
    "(",
    ")",
    ",",
    ";",
    ".",
    "+",
    "-",
    "/",
    "=",
    "<",
    ">=",
    "<>",
    "a",
    "b.c",
    "i",
    "o",
    "'x'",
    "1",
    "2.5",
    "COUNT",
    "AVG",
    "LAG",
    "ISFIRST",
    "TumblingWindow",
    "HoppingWindow",
    "SlidingWindow",
    "SessionWindow",
    "second",
    "System.Timestamp",
    "[q]",
    "DISTINCT",
    "GetArrayElement",
    "--c\n",
    "/*",
];

fn arbitrary_json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(|number| json!(number)),
        "[a-z0-9:T.-]{0,12}".prop_map(serde_json::Value::from),
        Just(json!("2026-01-01T00:00:01Z")),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            prop::collection::btree_map(
                prop_oneof![Just("a".to_string()), Just("b".to_string()), Just("t".to_string())],
                inner,
                0..4
            )
            .prop_map(|map| serde_json::Value::Object(map.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Whatever the text, compile returns Ok or positioned diagnostics; it never panics.
    #[test]
    fn compile_never_panics(pieces in prop::collection::vec(prop::sample::select(QUERY_PIECES), 0..40), raw in ".{0,40}") {
        let query = pieces.join(" ");
        for text in [query.as_str(), raw.as_str()] {
            if let Err(diagnostics) = compile(text, JobOptions::default()) {
                prop_assert!(!diagnostics.is_empty());
                prop_assert!(diagnostics.iter().all(|diagnostic| diagnostic.line >= 1 || diagnostic.message.contains("option")));
            }
        }
    }

    /// Arbitrary events through a query that touches most of the evaluator: errors are reported
    /// per event, nothing panics, and a checkpoint taken midway restores.
    #[test]
    fn arbitrary_events_never_panic(events in prop::collection::vec(arbitrary_json(), 0..20)) {
        let query = "WITH s AS (SELECT a, b, t, CAST(a AS float) AS f, GetArrayElement(b, 1) AS e, UPPER(CAST(b AS nvarchar(max))) AS u \
                     FROM i TIMESTAMP BY t WHERE a IS NOT NULL OR LAG(a) OVER (LIMIT DURATION(second, 5)) IS NULL) \
                     SELECT COUNT(DISTINCT a) AS n, AVG(a) AS m, MIN(b) AS lo, STDEV(f) AS sd INTO o FROM s GROUP BY SlidingWindow(second, 3); \
                     SELECT a + 1 AS x, a / f AS y, SUBSTRING(u, 2, 3) AS z, CASE a WHEN 1 THEN 'one' END AS w INTO p FROM s";
        let options = JobOptions { out_of_order_tolerance_ms: 1_000, ..JobOptions::default() };
        let mut job = compile(query, options.clone()).map_err(|error| TestCaseError::fail(format!("{error:?}")))?;
        for (index, event) in events.iter().enumerate() {
            job.push("i", (index % 2) as i32, event, index as i64 * 100);
            if index == events.len() / 2 {
                let checkpoint = job.checkpoint();
                let mut restored = compile(query, options.clone()).map_err(|error| TestCaseError::fail(format!("{error:?}")))?;
                prop_assert_eq!(restored.restore(&checkpoint), Ok(()));
                job = restored;
            }
        }
        job.advance_processing_time(i64::MAX);
        job.finish();
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(100))]

    /// A time-bounded JOIN finds exactly the pairs a nested loop over all events finds, whatever
    /// the interleaving of the two inputs within the out-of-order tolerance; a LEFT OUTER JOIN
    /// adds each unmatched left row once, stamped with the last time a match was possible.
    #[test]
    fn join_matches_nested_loop(
        events in prop::collection::vec((any::<bool>(), 0i64..3, 0i64..30_000, 0u32..=100), 0..40),
        tolerance_ms in prop_oneof![Just(0i64), Just(2_000)],
        (low, high) in prop_oneof![Just((0i64, 5i64)), Just((-3, 3)), Just((2, 10))],
        left_outer in any::<bool>(),
    ) {
        let join = if left_outer { "LEFT OUTER JOIN" } else { "JOIN" };
        let query = format!(
            "SELECT l.id AS left_id, r.id AS right_id INTO o FROM lefts l TIMESTAMP BY t {join} rights r TIMESTAMP BY t \
             ON l.k = r.k AND DATEDIFF(second, l, r) BETWEEN {low} AND {high}"
        );
        let options = JobOptions { out_of_order_tolerance_ms: tolerance_ms, ..JobOptions::default() };
        let mut job = compile(&query, options).map_err(|error| TestCaseError::fail(format!("{error:?}")))?;
        let mut arrivals: Vec<(i64, usize)> = events
            .iter()
            .enumerate()
            .map(|(id, &(_, _, timestamp_ms, jitter))| (timestamp_ms + tolerance_ms * i64::from(jitter) / 100, id))
            .collect();
        arrivals.sort();
        let mut actual = Vec::new();
        let mut steps = Vec::new();
        for &(_, id) in &arrivals {
            let (is_left, key, timestamp_ms, _) = events[id];
            let input = if is_left { "lefts" } else { "rights" };
            steps.push(job.push(input, 0, &json!({"id": id, "k": key, "t": timestamp_ms}), 0));
        }
        steps.push(job.finish());
        for step in steps {
            prop_assert!(step.late.is_empty() && step.errors.is_empty(), "{:?}", step);
            for output in step.outputs {
                let left_id = output.row["left_id"].as_i64().unwrap_or(-1);
                let right_id = output.row["right_id"].as_i64().unwrap_or(-1);
                if right_id == -1 {
                    // Unmatched: stamped with the last time a right row could have matched.
                    let left_ms = usize::try_from(left_id).ok().and_then(|id| events.get(id)).map_or(0, |event| event.2);
                    prop_assert_eq!(output.timestamp_ms, (left_ms.div_euclid(1_000) + high + 1) * 1_000 - 1);
                }
                actual.push((left_id, right_id));
            }
        }
        actual.sort();
        let mut expected = Vec::new();
        for (left_id, left) in events.iter().enumerate().filter(|(_, event)| event.0) {
            let mut matched = false;
            for (right_id, right) in events.iter().enumerate().filter(|(_, event)| !event.0) {
                // DATEDIFF(second, l, r): second boundaries crossed from l to r.
                let difference = right.2.div_euclid(1_000) - left.2.div_euclid(1_000);
                if left.1 == right.1 && (low..=high).contains(&difference) {
                    expected.push((left_id as i64, right_id as i64));
                    matched = true;
                }
            }
            if left_outer && !matched {
                expected.push((left_id as i64, -1));
            }
        }
        expected.sort();
        prop_assert_eq!(actual, expected);
    }
}
