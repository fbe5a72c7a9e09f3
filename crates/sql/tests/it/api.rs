//! The public API's contract beyond the corpus: names, bad events, state limits, tolerances
//! and watermarks.

use serde_json::json;
use tidewater_sql::{
    compile, CheckpointError, Job, JobOptions, LateAction, LatePolicy, PARTIAL_MATCHES_PER_KEY_MAX,
};

fn job(query: &str, options: JobOptions) -> Job {
    match compile(query, options) {
        Ok(job) => job,
        Err(diagnostics) => panic!("{diagnostics:?}"),
    }
}

#[test]
fn inputs_and_outputs_in_query_order() {
    let job = job(
        "WITH s AS (SELECT a FROM second TIMESTAMP BY t) SELECT * INTO out2 FROM first; \
         SELECT a INTO out1 FROM s; SELECT a INTO out2 FROM s",
        JobOptions::default(),
    );
    assert_eq!(job.inputs(), vec!["second", "first"]);
    assert_eq!(job.outputs(), vec!["out2", "out1"]);
}

#[test]
fn bad_events_are_reported_not_fatal() {
    let mut job = job("SELECT a INTO o FROM i", JobOptions::default());
    let step = job.push("nope", 0, &json!({"a": 1}), 0);
    assert_eq!(step.errors[0].message, "the job has no input named 'nope'");
    let step = job.push("i", 0, &json!([1, 2]), 0);
    assert!(step.errors[0].message.starts_with("an event must be a JSON object"), "{:?}", step.errors);
    let step = job.push("i", 0, &json!({"a": 1}), 0);
    assert_eq!(step.outputs[0].row, json!({"a": 1}));
}

#[test]
fn input_names_are_case_insensitive() {
    let mut job = job("SELECT a INTO o FROM Telemetry", JobOptions::default());
    assert_eq!(job.push("telemetry", 0, &json!({"A": 1}), 0).outputs[0].row, json!({"a": 1}));
}

#[test]
fn state_limit_rejects_new_groups_at_the_boundary() {
    let options = JobOptions { max_state_entries: 2, ..JobOptions::default() };
    let mut job =
        job("SELECT k, COUNT(*) AS n INTO o FROM i GROUP BY k, TumblingWindow(second, 10)", options);
    assert!(job.push("i", 0, &json!({"k": "a"}), 1_000).errors.is_empty());
    assert!(job.push("i", 0, &json!({"k": "b"}), 1_000).errors.is_empty());
    assert!(job.push("i", 0, &json!({"k": "a"}), 1_000).errors.is_empty());
    let step = job.push("i", 0, &json!({"k": "c"}), 1_000);
    assert!(step.errors[0].message.contains("state limit reached"), "{:?}", step.errors);
    assert_eq!(step.errors[0].statement_idx, Some(0));
    let step = job.finish();
    assert_eq!(step.outputs.len(), 2);
}

#[test]
fn slowest_partition_holds_windows_open() {
    let mut job = job(
        "SELECT COUNT(*) AS n INTO o FROM i TIMESTAMP BY t GROUP BY TumblingWindow(second, 10)",
        JobOptions::default(),
    );
    assert!(job.push("i", 0, &json!({"t": 1_000}), 0).outputs.is_empty());
    assert!(job.push("i", 1, &json!({"t": 2_000}), 0).outputs.is_empty());
    assert!(job.push("i", 0, &json!({"t": 50_000}), 0).outputs.is_empty(), "partition 1 is still at 2s");
    assert_eq!(job.watermark_ms("i"), Some(2_000));
    let step = job.push("i", 1, &json!({"t": 30_000}), 0);
    assert_eq!(step.outputs.len(), 1);
    assert_eq!(step.outputs[0].row, json!({"n": 2}));
    assert_eq!(step.outputs[0].timestamp_ms, 10_000);
}

#[test]
fn idle_partition_released_by_processing_time() {
    let options = JobOptions { idle_partition_timeout_ms: Some(1_000), ..JobOptions::default() };
    let mut job =
        job("SELECT COUNT(*) AS n INTO o FROM i TIMESTAMP BY t GROUP BY TumblingWindow(second, 10)", options);
    job.push("i", 0, &json!({"t": 1_000}), 0);
    job.push("i", 1, &json!({"t": 20_000}), 0);
    assert!(job.advance_processing_time(1_000).outputs.is_empty(), "idle only after more than the timeout");
    let step = job.advance_processing_time(1_001);
    assert_eq!(step.outputs.len(), 1, "both partitions idle: the freshest decides");
}

#[test]
fn late_arrival_tolerance_keeps_windows_open_longer() {
    let options = JobOptions {
        late_arrival_tolerance_ms: 5_000,
        late_policy: LatePolicy::Drop,
        ..JobOptions::default()
    };
    let mut job =
        job("SELECT COUNT(*) AS n INTO o FROM i TIMESTAMP BY t GROUP BY TumblingWindow(second, 10)", options);
    job.push("i", 0, &json!({"t": 9_000}), 0);
    assert!(job.push("i", 0, &json!({"t": 15_000}), 0).outputs.is_empty(), "boundary 10s: not past the end");
    assert!(job.push("i", 0, &json!({"t": 10_000}), 0).late.is_empty(), "10s is not before the boundary");
    let step = job.push("i", 0, &json!({"t": 15_001}), 0);
    assert_eq!(step.outputs[0].row, json!({"n": 2}));
    let step = job.push("i", 0, &json!({"t": 10_000}), 0);
    assert_eq!(step.late.len(), 1);
    assert_eq!(step.late[0].action, LateAction::Dropped);
    assert_eq!(step.late[0].watermark_ms, 10_001);
}

#[test]
fn session_without_partition_is_shared_by_all_groups() {
    let mut job = job(
        "SELECT k, COUNT(*) AS n, System.Timestamp() AS e INTO o FROM i TIMESTAMP BY t \
         GROUP BY k, SessionWindow(second, 5, 100)",
        JobOptions::default(),
    );
    // a at 1s and b at 4s share one session (gap 3s); a at 8s extends it; it ends at 13s.
    let mut rows = Vec::new();
    for (key, t) in [("a", 1_000), ("b", 4_000), ("a", 8_000), ("a", 30_000)] {
        rows.extend(
            job.push("i", 0, &json!({"k": key, "t": t}), 0).outputs.into_iter().map(|output| output.row),
        );
    }
    assert_eq!(rows.len(), 2, "the first session closed when 30s arrived");
    rows.extend(job.finish().outputs.into_iter().map(|output| output.row));
    assert_eq!(
        rows,
        vec![
            json!({"k": "a", "n": 2, "e": "1970-01-01T00:00:13.0000000Z"}),
            json!({"k": "b", "n": 1, "e": "1970-01-01T00:00:13.0000000Z"}),
            json!({"k": "a", "n": 1, "e": "1970-01-01T00:00:35.0000000Z"}),
        ]
    );
}

#[test]
fn errors_in_having_are_reported_at_emission() {
    let mut job = job(
        "SELECT COUNT(*) AS n INTO o FROM i TIMESTAMP BY t GROUP BY TumblingWindow(second, 1) HAVING 1 / (COUNT(*) - 1) > 0",
        JobOptions::default(),
    );
    job.push("i", 0, &json!({"t": 500}), 0);
    let step = job.finish();
    assert!(step.outputs.is_empty());
    assert_eq!(step.errors[0].message, "division by zero");
}

#[test]
fn checkpoints_restore_only_into_the_same_job() {
    let query = "SELECT COUNT(*) AS n INTO o FROM i TIMESTAMP BY t GROUP BY TumblingWindow(second, 10)";
    let mut original = job(query, JobOptions::default());
    original.push("i", 0, &json!({"t": 1_000}), 0);
    let checkpoint = original.checkpoint();
    assert_eq!(checkpoint["version"], json!(tidewater_sql::CHECKPOINT_VERSION));

    let mut other_query = job(
        "SELECT COUNT(*) AS n INTO o FROM i TIMESTAMP BY t GROUP BY TumblingWindow(second, 5)",
        JobOptions::default(),
    );
    assert_eq!(other_query.restore(&checkpoint), Err(CheckpointError::WrongJob));
    let options = JobOptions { out_of_order_tolerance_ms: 1, ..JobOptions::default() };
    assert_eq!(job(query, options).restore(&checkpoint), Err(CheckpointError::WrongJob));

    let mut restored = job(query, JobOptions::default());
    let mut future = checkpoint.clone();
    future["version"] = json!(99);
    assert_eq!(restored.restore(&future), Err(CheckpointError::Version { found: 99 }));
    let mut broken = checkpoint.clone();
    broken["statements"] = json!("nonsense");
    assert!(matches!(restored.restore(&broken), Err(CheckpointError::Malformed { .. })));
    assert!(restored.finish().outputs.is_empty(), "failed restores leave the fresh job unchanged");

    let mut restored = job(query, JobOptions::default());
    assert_eq!(restored.restore(&checkpoint), Ok(()));
    assert_eq!(restored.finish(), original.finish());
}

#[test]
fn checkpoints_keep_infinite_floats() {
    let query = "SELECT SUM(CAST(v AS float)) AS s, MAX(CAST(v AS float)) AS m INTO o FROM i TIMESTAMP BY t \
                 GROUP BY TumblingWindow(second, 10)";
    let mut original = job(query, JobOptions::default());
    original.push("i", 0, &json!({"v": "1e999", "t": 1_000}), 0);
    let mut restored = job(query, JobOptions::default());
    assert_eq!(restored.restore(&original.checkpoint()), Ok(()));
    let step = restored.finish();
    // Infinity has no JSON form in output rows either: it is written as null.
    assert_eq!(step.outputs[0].row, json!({"s": null, "m": null}));
    assert_eq!(step, original.finish());
}

#[test]
fn long_window_forms_and_system_timestamp_without_parentheses() {
    let mut job = job(
        "SELECT System.Timestamp AS windowEnd, COUNT(*) AS n INTO o FROM i TIMESTAMP BY t \
         GROUP BY HoppingWindow(Duration(second, 10), Hop(millisecond, 5000))",
        JobOptions::default(),
    );
    job.push("i", 0, &json!({"t": 7_000}), 0);
    let rows: Vec<_> = job.finish().outputs.into_iter().map(|output| output.row).collect();
    assert_eq!(
        rows,
        vec![
            json!({"windowEnd": "1970-01-01T00:00:10.0000000Z", "n": 1}),
            json!({"windowEnd": "1970-01-01T00:00:15.0000000Z", "n": 1}),
        ]
    );
}

#[test]
fn jobs_can_move_between_threads() {
    fn assert_send<T: Send>() {}
    assert_send::<Job>();
}

/// State stays bounded on an endless stream: after many events, windows, analytic histories,
/// sliding/session buffers, JOIN buffers and the reorder buffer hold only recent data.
#[test]
fn state_is_bounded_on_a_long_stream() {
    let query = "
        SELECT k, COUNT(*) AS n INTO tumbling FROM i TIMESTAMP BY t GROUP BY k, TumblingWindow(second, 10);
        SELECT k, COUNT(*) AS n INTO sliding FROM i TIMESTAMP BY t GROUP BY k, SlidingWindow(second, 5);
        SELECT k, COUNT(*) AS n INTO sessions FROM i TIMESTAMP BY t GROUP BY k, SessionWindow(second, 2, 60);
        SELECT k, LAG(v) OVER (PARTITION BY k LIMIT DURATION(second, 5)) AS p,
               AVG(v) OVER (PARTITION BY k LIMIT DURATION(second, 5)) AS a INTO analytic FROM i TIMESTAMP BY t;
        SELECT a.k, b.v INTO joined FROM i a TIMESTAMP BY t LEFT JOIN j b TIMESTAMP BY t
            ON a.k = b.k AND DATEDIFF(second, a, b) BETWEEN 0 AND 3";
    let options = JobOptions { out_of_order_tolerance_ms: 2_000, ..JobOptions::default() };
    assert_state_bounded(&mut job(query, options), |job, index| {
        let event = json!({"k": index % 10, "v": index, "t": index * 100});
        let step = job.push("i", 0, &event, 0);
        assert!(step.errors.is_empty() && step.late.is_empty(), "{step:?}");
        job.push("j", 0, &event, 0);
    });
}

/// Feeds 20 000 events (`feed` pushes the one numbered `index`) and checks that the job's
/// state (its checkpoint) is as large after 5 000 of them as after 20 000: recent data only.
fn assert_state_bounded(job: &mut Job, mut feed: impl FnMut(&mut Job, i64)) {
    let mut sizes = Vec::new();
    for index in 0..20_000i64 {
        feed(job, index);
        if index % 5_000 == 4_999 {
            sizes.push(job.checkpoint().to_string().len());
        }
    }
    let (first, last) = (sizes[0], sizes[sizes.len() - 1]);
    assert!(last < first * 11 / 10, "state grew: {sizes:?}");
    assert!(last < 100_000, "state is larger than expected: {last} bytes");
}

#[test]
fn collect_gathers_rows_or_values() {
    let mut job = job(
        "SELECT k, Collect() AS rows, Collect(v) AS vs INTO o FROM i TIMESTAMP BY t GROUP BY k, TumblingWindow(second, 10)",
        JobOptions::default(),
    );
    job.push("i", 0, &json!({"k": "a", "v": 1, "t": 1_000}), 0);
    job.push("i", 0, &json!({"k": "a", "t": 2_000}), 0);
    let step = job.finish();
    assert_eq!(
        step.outputs[0].row,
        json!({"k": "a", "rows": [{"k": "a", "v": 1, "t": 1_000}, {"k": "a", "t": 2_000}], "vs": [1]})
    );
}

/// `PARTIAL_MATCHES_PER_KEY_MAX` bounds one key's partial matches; reaching it is reported per
/// row, and the job carries on. Here every `x` row can be A or B and the conditions read the
/// match's rows, so each row doubles the partial matches of every attempt.
#[test]
fn partial_match_limit_is_reported() {
    let mut job = job(
        "SELECT * INTO o FROM i TIMESTAMP BY t MATCH_RECOGNIZE (LIMIT DURATION(hour, 1) PARTITION BY k \
         MEASURES COUNT(*) AS n PATTERN ((A | B)+ C) \
         DEFINE A AS A.v = 'x' AND COUNT(A.v) >= 0, B AS B.v = 'x' AND COUNT(B.v) >= 0, C AS C.v = 'end') AS m",
        JobOptions::default(),
    );
    let mut first_reports = [None, None];
    let mut index = 0;
    while first_reports.iter().any(Option::is_none) && index < 20 {
        for key in [1, 2] {
            let step = job.push("i", 0, &json!({"k": key, "v": "x", "t": index}), 0);
            if let Some(error) = step.errors.first() {
                assert!(error.message.contains("partial-match limit reached"), "{error:?}");
                assert!(error.message.contains(&PARTIAL_MATCHES_PER_KEY_MAX.to_string()));
                first_reports[key as usize - 1].get_or_insert(index);
            }
        }
        index += 1;
    }
    // 2^n partial matches per attempt: the limit (10 000) is reached after about a dozen rows,
    // by each key on its own (the limit is per key).
    assert!(first_reports[0].is_some_and(|index| (8..16).contains(&index)), "{first_reports:?}");
    assert_eq!(first_reports[0], first_reports[1]);
    // Matches are still found (the least preferred partial matches were dropped).
    let step = job.push("i", 0, &json!({"k": 1, "v": "end", "t": 20}), 0);
    assert!(!step.outputs.is_empty(), "{step:?}");
}

#[test]
fn define_errors_are_reported_and_count_as_false() {
    let mut job = job(
        "SELECT * INTO o FROM i TIMESTAMP BY t MATCH_RECOGNIZE (LIMIT DURATION(hour, 1) \
         MEASURES COUNT(*) AS n PATTERN (A B) DEFINE A AS A.v > 1, B AS B.v < 0) AS m",
        JobOptions::default(),
    );
    let step = job.push("i", 0, &json!({"v": "hot", "t": 1}), 0);
    assert_eq!(step.errors.len(), 1, "{step:?}");
    assert_eq!(step.errors[0].message, "DEFINE A: cannot compare nvarchar(max) \"hot\" with bigint 1");
    assert!(job.push("i", 0, &json!({"v": 5, "t": 2}), 0).errors.is_empty());
    let step = job.push("i", 0, &json!({"v": -1, "t": 3}), 0);
    assert_eq!(step.outputs.len(), 1, "{step:?}");
    assert_eq!(step.outputs[0].row, json!({"n": 2}));
}

/// MATCH_RECOGNIZE and substreams keep recent state only: attempts end with LIMIT DURATION,
/// rows go with the attempts that need them, and a key silent for the idle-key timeout is
/// closed.
#[test]
fn match_and_substream_state_is_bounded() {
    let query = "
        SELECT * INTO matches FROM i TIMESTAMP BY t MATCH_RECOGNIZE (LIMIT DURATION(second, 5) PARTITION BY k
            MEASURES COUNT(*) AS n AFTER MATCH SKIP TO NEXT ROW PATTERN (A+ B) DEFINE A AS A.v % 7 <> 0, B AS B.v % 7 = 0) AS m;
        SELECT k, COUNT(*) AS n INTO counts FROM j TIMESTAMP BY t OVER k GROUP BY k, TumblingWindow(second, 10)";
    let options = JobOptions { idle_key_timeout_ms: 60_000, ..JobOptions::default() };
    assert_state_bounded(&mut job(query, options), |job, index| {
        // Keys come and go: each sends for 100 events, then never again.
        let event = json!({"k": index / 100, "v": index, "t": index * 100});
        let step = job.push("i", 0, &event, index * 100);
        assert!(step.errors.is_empty() && step.late.is_empty(), "{step:?}");
        let step = job.push("j", 0, &event, index * 100);
        assert!(step.errors.is_empty() && step.late.is_empty(), "{step:?}");
        if index % 1_000 == 999 {
            job.advance_processing_time(index * 100);
        }
    });
}

#[test]
fn substream_keys_count_against_the_state_limit() {
    let options = JobOptions { max_state_entries: 2, ..JobOptions::default() };
    let mut job = job("SELECT * INTO o FROM i TIMESTAMP BY t OVER k", options);
    assert!(job.push("i", 0, &json!({"k": "a", "t": 1}), 0).errors.is_empty());
    assert!(job.push("i", 0, &json!({"k": "b", "t": 1}), 0).errors.is_empty());
    let step = job.push("i", 0, &json!({"k": "c", "t": 1}), 0);
    assert!(step.errors[0].message.contains("state limit reached"), "{step:?}");
    assert_eq!(step.errors[0].statement_idx, None);
    assert_eq!(job.push("i", 0, &json!({"k": "a", "t": 2}), 0).outputs.len(), 1);
}

/// Checkpoints written before matchers and substreams existed (version 1 without those fields)
/// still restore, and a job that does not use the new option keeps its fingerprint.
#[test]
fn checkpoints_from_before_matchers_and_substreams_restore() {
    let query = "SELECT COUNT(*) AS n INTO o FROM i TIMESTAMP BY t GROUP BY TumblingWindow(second, 10)";
    let mut original = job(query, JobOptions::default());
    original.push("i", 0, &json!({"t": 1_000}), 0);
    let mut old = original.checkpoint();
    for input in old["inputs"].as_array_mut().into_iter().flatten() {
        input.as_object_mut().map(|input| input.remove("keys"));
    }
    for statement in old["statements"].as_array_mut().into_iter().flatten() {
        statement
            .as_object_mut()
            .map(|statement| (statement.remove("matcher"), statement.remove("substreams")));
    }
    // FNV-1a over the query and the options, as the fingerprint was computed before.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for byte in bytes {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    eat(query.as_bytes());
    eat(&0i64.to_le_bytes());
    eat(&0i64.to_le_bytes());
    eat(&(-1i64).to_le_bytes());
    eat(&[0]);
    assert_eq!(old["fingerprint"], json!(hash));
    let mut restored = job(query, JobOptions::default());
    assert_eq!(restored.restore(&old), Ok(()));
    assert_eq!(restored.finish(), original.finish());
}

fn reference_job(max_reference_rows: usize) -> Job {
    job(
        "SELECT r.id, t.limit INTO o FROM readings r TIMESTAMP BY ts JOIN limits t ON r.id = t.id",
        JobOptions { reference_inputs: vec!["limits".into()], max_reference_rows, ..JobOptions::default() },
    )
}

#[test]
fn a_reference_table_refuses_new_keys_at_its_limit_and_keeps_updating_the_others() {
    let mut job = reference_job(2);
    assert_eq!(job.reference_inputs(), vec!["limits"]);
    assert_eq!(job.inputs(), vec!["readings"], "a reference input is not a stream to read");
    for id in ["a", "b"] {
        assert_eq!(
            job.update_reference("limits", id.as_bytes(), Some(&json!({"id": id, "limit": 1}))),
            Ok(())
        );
    }
    let refused = job.update_reference("LIMITS", b"c", Some(&json!({"id": "c", "limit": 1})));
    assert_eq!(
        refused.map_err(|error| error.to_string()),
        Err("reference input 'limits' already holds 2 rows (max_reference_rows); key \"c\" was not added"
            .into())
    );
    assert_eq!(job.reference_rows("limits"), Some(2));
    // An existing key still changes, and a deleted one makes room.
    assert_eq!(job.update_reference("limits", b"a", Some(&json!({"id": "a", "limit": 5}))), Ok(()));
    assert_eq!(job.update_reference("limits", b"b", None), Ok(()));
    assert_eq!(job.update_reference("limits", b"c", Some(&json!({"id": "c", "limit": 7}))), Ok(()));
    let step = job.push("readings", 0, &json!({"id": "a", "ts": 1}), 0);
    assert_eq!(step.outputs[0].row, json!({"id": "a", "limit": 5}));
    assert!(job.push("readings", 0, &json!({"id": "b", "ts": 2}), 0).outputs.is_empty());
    assert_eq!(
        job.push("readings", 0, &json!({"id": "c", "ts": 3}), 0).outputs[0].row,
        json!({"id": "c", "limit": 7})
    );
    // A row that is not an object is refused and the table keeps the old one.
    assert!(job.update_reference("limits", b"c", Some(&json!([1]))).is_err());
    assert_eq!(
        job.push("readings", 0, &json!({"id": "c", "ts": 4}), 0).outputs[0].row,
        json!({"id": "c", "limit": 7})
    );
}

#[test]
fn reference_tables_are_not_in_checkpoints_and_survive_a_restore() {
    let mut job = reference_job(10);
    assert_eq!(job.update_reference("limits", b"a", Some(&json!({"id": "a", "limit": 1}))), Ok(()));
    let checkpoint = job.checkpoint();
    assert!(!checkpoint.to_string().contains("limit\""), "{checkpoint}");
    // A fresh job restored from it joins with whatever table was loaded before the restore.
    let mut restored = reference_job(10);
    assert_eq!(restored.update_reference("limits", b"a", Some(&json!({"id": "a", "limit": 2}))), Ok(()));
    assert_eq!(restored.restore(&checkpoint), Ok(()));
    assert_eq!(
        restored.push("readings", 0, &json!({"id": "a", "ts": 1}), 0).outputs[0].row,
        json!({"id": "a", "limit": 2})
    );
    // The set of reference inputs is part of the job: a checkpoint does not fit the stream join.
    let other = compile(
        "SELECT r.id, t.limit INTO o FROM readings r TIMESTAMP BY ts JOIN limits t ON r.id = t.id",
        JobOptions { reference_inputs: vec!["other".into()], ..JobOptions::default() },
    );
    assert!(other.is_err(), "limits is then a stream without a time bound");
}

#[test]
fn reference_rows_that_share_a_key_come_out_in_record_key_order_whatever_the_updates() {
    let mut job = reference_job(10);
    let row = |name: &str| json!({"id": "x", "limit": name});
    for key in ["b", "a", "c"] {
        assert_eq!(job.update_reference("limits", key.as_bytes(), Some(&row(key))), Ok(()));
    }
    let limits = |job: &mut Job, ts: i64| -> Vec<serde_json::Value> {
        job.push("readings", 0, &json!({"id": "x", "ts": ts}), 0)
            .outputs
            .into_iter()
            .map(|output| output.row["limit"].clone())
            .collect()
    };
    assert_eq!(limits(&mut job, 1), vec![json!("a"), json!("b"), json!("c")]);
    // A deleted row's slot is reused by the next new key; order still follows the record keys.
    assert_eq!(job.update_reference("limits", b"a", None), Ok(()));
    assert_eq!(job.update_reference("limits", b"0", Some(&row("0"))), Ok(()));
    // A row that moves to another id leaves this one.
    assert_eq!(job.update_reference("limits", b"b", Some(&json!({"id": "y", "limit": "b"}))), Ok(()));
    assert_eq!(limits(&mut job, 2), vec![json!("0"), json!("c")]);
    assert_eq!(job.reference_rows("limits"), Some(3));
}
