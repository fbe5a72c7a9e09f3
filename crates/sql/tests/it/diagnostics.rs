//! Bad queries produce diagnostics with line and column, several per compile, sorted by
//! position. Each case is the query and the exact rendered diagnostics (`line:column: message`).

use tidewater_sql::{
    compile, JobOptions, DIAGNOSTICS_MAX, EXPRESSION_DEPTH_MAX, LAG_OFFSET_MAX, NAVIGATION_OFFSET_MAX,
    PATTERN_STEPS_MAX, QUERY_BYTES_MAX, STATEMENTS_MAX, WINDOWS_PER_EVENT_MAX,
};

fn render(sql: &str, options: JobOptions) -> String {
    match compile(sql, options) {
        Ok(_) => "compiled\n".to_string(),
        Err(diagnostics) => diagnostics.iter().map(|diagnostic| format!("{diagnostic}\n")).collect(),
    }
}

#[track_caller]
fn check_with(sql: &str, options: JobOptions, expected: &str) {
    let actual = render(sql, options);
    assert_eq!(actual.trim_end(), expected.trim(), "query:\n{sql}\n--- actual:\n{actual}");
}

#[track_caller]
fn check(sql: &str, expected: &str) {
    check_with(sql, JobOptions::default(), expected);
}

#[test]
fn unknown_functions_are_all_reported() {
    check(
        "SELECT foo(x),\n       bar(y) AS b\nINTO o FROM i",
        "1:8: unknown function 'foo'\n2:8: unknown function 'bar'",
    );
}

#[test]
fn non_grouped_column_in_aggregating_select() {
    check(
        "SELECT deviceId, temp, COUNT(*) INTO o FROM i GROUP BY deviceId, TumblingWindow(second, 5)",
        "1:18: column 'temp' in SELECT must appear in GROUP BY or inside an aggregate",
    );
    check(
        "SELECT deviceId, COUNT(*) INTO o FROM i GROUP BY TumblingWindow(second, 5) HAVING temp > 1",
        "1:8: column 'deviceId' in SELECT must appear in GROUP BY or inside an aggregate\n\
         1:83: column 'temp' in HAVING must appear in GROUP BY or inside an aggregate",
    );
}

#[test]
fn aggregate_in_where_and_nested_aggregates() {
    check("SELECT x INTO o FROM i WHERE COUNT(*) > 1", "1:30: aggregate COUNT is not allowed in WHERE");
    check(
        "SELECT SUM(MAX(x)) INTO o FROM i GROUP BY TumblingWindow(second, 1)",
        "1:12: aggregate MAX cannot be nested inside another aggregate",
    );
}

#[test]
fn aggregation_needs_a_window() {
    check(
        "SELECT COUNT(*) INTO o FROM i GROUP BY deviceId",
        "1:40: aggregation over a stream needs a window in GROUP BY: TumblingWindow, HoppingWindow, SlidingWindow or SessionWindow",
    );
    check(
        "SELECT COUNT(*) INTO o FROM i",
        "1:1: aggregation over a stream needs a window in GROUP BY: TumblingWindow, HoppingWindow, SlidingWindow or SessionWindow",
    );
}

#[test]
fn bad_window_arguments() {
    check(
        "SELECT COUNT(*) INTO o FROM i GROUP BY TumblingWindow(week, 0), HoppingWindow(second, 10)",
        "1:55: expected a time unit (millisecond, second, minute, hour, day), found week\n\
         1:61: the window size must be a positive integer literal, found 0\n\
         1:65: only one window is allowed in GROUP BY",
    );
    check(
        "SELECT COUNT(*) INTO o FROM i GROUP BY HoppingWindow(second, 100000, 1)",
        "1:70: the hop is too small: one event would fall into more than 10000 windows",
    );
    check(
        "SELECT TumblingWindow(second, 1) INTO o FROM i",
        "1:8: window function TumblingWindow is only allowed in GROUP BY",
    );
}

#[test]
fn syntax_errors_in_several_statements() {
    check(
        "SELECT x INTO o FROM\nSELECT (y INTO o FROM i\nSELECT z INTO p FROM i WHERE",
        "2:1: expected an input name after FROM, found 'SELECT'\n\
         2:11: expected ')', found 'INTO'\n\
         3:29: expected an expression, found end of query",
    );
    check(
        "SELECT 'abc INTO o FROM i",
        "1:8: unterminated string literal\n1:26: expected an expression, found end of query",
    );
    check(
        "SELECT a INTO o FROM i WHERE a = 1 garbage here",
        "1:36: expected end of statement, found 'garbage'",
    );
    check(
        "SELECT a INTO o FROM i PARTITION BY PartitionId",
        "1:24: FROM ... PARTITION BY is not supported yet (watermarks are kept per partition anyway)",
    );
}

#[test]
fn unknown_outputs_inputs_and_step_columns() {
    let options = JobOptions {
        known_inputs: Some(vec!["telemetry".into()]),
        known_outputs: Some(vec!["alerts".into()]),
        ..JobOptions::default()
    };
    check_with(
        "SELECT a INTO alert FROM telemetry;\nSELECT a INTO alerts FROM telemetri",
        options,
        "1:15: unknown output 'alert' (known: alerts)\n2:27: unknown input 'telemetri' (known: telemetry)",
    );
    check("WITH s AS (SELECT a FROM i)\nSELECT b INTO o FROM s", "2:8: unknown column 'b' (the step has: a)");
    check("SELECT a FROM i", "1:1: missing INTO: say which output this statement writes to");
    check(
        "SELECT a INTO o FROM later;\nWITH later AS (SELECT a FROM i) SELECT a INTO p FROM later",
        "1:22: the WITH step 'later' is used before it is defined",
    );
    check("WITH s AS (SELECT a FROM i)\nSELECT a INTO s FROM s", "2:15: 's' is a WITH step, not an output");
    check(
        "WITH s AS (SELECT a FROM i) SELECT a INTO o FROM s TIMESTAMP BY t",
        "1:65: TIMESTAMP BY applies to inputs, not to the step 's'",
    );
}

#[test]
fn joins() {
    check(
        "SELECT a.x INTO o FROM l a JOIN r b ON a.k = b.k",
        "1:40: a JOIN needs a time bound in ON: AND DATEDIFF(unit, left, right) BETWEEN low AND high",
    );
    check(
        "SELECT x INTO o FROM l a JOIN r b ON a.k = b.k AND DATEDIFF(second, a, b) BETWEEN 0 AND 5",
        "1:8: column 'x' in a JOIN must name its side, as in a.x",
    );
    check(
        "SELECT * INTO o FROM l a JOIN r b ON DATEDIFF(second, a, b) BETWEEN 0 AND 5",
        "1:8: SELECT * is not supported with JOIN yet: name the columns",
    );
    check(
        "SELECT l.x INTO o FROM l JOIN l ON DATEDIFF(second, l, l) BETWEEN 0 AND 5",
        "1:31: the two sides of a JOIN need different names: give them aliases",
    );
}

#[test]
fn constant_type_errors() {
    check(
        "SELECT UPPER(5) AS u, 1 / 0 AS z, 'a' + 1 AS s INTO o FROM i",
        "1:8: UPPER expects a string, got bigint 5\n\
         1:23: division by zero\n\
         1:35: cannot apply + to nvarchar(max) \"a\" and bigint 1",
    );
    check(
        "SELECT AVG('hot') AS a INTO o FROM i GROUP BY TumblingWindow(second, 1)",
        "1:12: AVG expects a number, got nvarchar(max) \"hot\"",
    );
    check(
        "SELECT a INTO o FROM i WHERE a > CAST('x' AS bigint)",
        "1:34: cannot cast nvarchar(max) \"x\" to bigint",
    );
}

#[test]
fn star_with_columns() {
    check("SELECT a, * INTO o FROM i", "1:11: * must come first in the SELECT list");
    check(
        "WITH s AS (SELECT a FROM i) SELECT *, b AS a INTO o FROM s",
        "1:39: duplicate output column 'a': * already has it\n1:39: unknown column 'b' (the step has: a)",
    );
}

#[test]
fn top_one() {
    check(
        "SELECT TopOne() AS t INTO o FROM i GROUP BY TumblingWindow(second, 1)",
        "1:8: TopOne needs OVER (ORDER BY ...)",
    );
    check(
        "SELECT TopOne() OVER (ORDER BY x) AS t INTO o FROM i",
        "1:1: aggregation over a stream needs a window in GROUP BY: TumblingWindow, HoppingWindow, SlidingWindow or SessionWindow",
    );
    check(
        "SELECT a INTO o FROM i WHERE TopOne() OVER (ORDER BY x) IS NULL",
        "1:30: aggregate TopOne is not allowed in WHERE",
    );
}

#[test]
fn percentiles() {
    check(
        "SELECT PERCENTILE_CONT(1.5) OVER (ORDER BY v) AS p INTO o FROM i GROUP BY TumblingWindow(second, 1)",
        "1:8: PERCENTILE_CONT takes one number between 0 and 1",
    );
    check(
        "SELECT PERCENTILE_DISC(0.5) AS p INTO o FROM i GROUP BY TumblingWindow(second, 1)",
        "1:8: PERCENTILE_DISC needs OVER (ORDER BY expr) with one expression",
    );
}

#[test]
fn cross_apply() {
    check(
        "SELECT a INTO o FROM i CROSS APPLY Explode(i.arr) AS e",
        "1:36: CROSS APPLY supports GetArrayElements(...) and GetRecordProperties(...)",
    );
    check(
        "WITH s AS (SELECT a FROM i) SELECT e.ArrayValue, b INTO o FROM s CROSS APPLY GetArrayElements(a) AS e",
        "1:50: unknown column 'b' (the step has: a, e)",
    );
}

#[test]
fn types_arity_and_analytics() {
    check(
        "SELECT CAST(a AS widget), LEN(a, b), LAG(a) OVER (PARTITION BY k) INTO o FROM i",
        "1:8: unknown type 'widget' (expected bigint, float, nvarchar(max), datetime or bit)\n\
         1:27: LEN takes 1 arguments, found 2\n\
         1:38: LAG needs OVER (... LIMIT DURATION(unit, size))",
    );
    check(
        "SELECT COUNT(*), LAG(a) OVER (LIMIT DURATION(second, 1)) INTO o FROM i GROUP BY TumblingWindow(second, 1)",
        "1:18: analytic function LAG is not supported in an aggregating statement",
    );
    check("SELECT a AS x, b AS x INTO o FROM i", "1:16: duplicate output column 'x'; name it with AS");
    check(
        "SELECT a INTO o FROM i TIMESTAMP BY t1; SELECT b INTO p FROM i TIMESTAMP BY t2",
        "1:77: input 'i' is read with different TIMESTAMP BY clauses; every statement must use the same one",
    );
}

#[test]
fn limits() {
    check("", "1:1: the query has no statements");
    let long = format!("SELECT a INTO o FROM i WHERE a = '{}'", "x".repeat(QUERY_BYTES_MAX));
    check(&long, &format!("1:1: the query is longer than {QUERY_BYTES_MAX} bytes"));
    let many: String =
        (0..DIAGNOSTICS_MAX + 5).map(|index| format!("SELECT f{index}() INTO o FROM i;\n")).collect();
    let rendered = render(&many, JobOptions::default());
    assert_eq!(rendered.lines().count(), DIAGNOSTICS_MAX + 1);
    assert!(rendered.trim_end().ends_with("5 more diagnostics not shown"), "{rendered}");
    let options = JobOptions { out_of_order_tolerance_ms: -1, ..JobOptions::default() };
    check_with(
        "SELECT a INTO o FROM i",
        options,
        "1:1: option out_of_order_tolerance_ms must not be negative, got -1",
    );
}

/// Each named limit accepts its maximum and refuses one more.
#[test]
fn limits_at_their_boundaries() {
    let compiles = |sql: &str| compile(sql, JobOptions::default()).is_ok();
    let hopping = |hops: i64| {
        format!("SELECT COUNT(*) AS n INTO o FROM i GROUP BY HoppingWindow(millisecond, {hops}, 1)")
    };
    assert!(compiles(&hopping(WINDOWS_PER_EVENT_MAX)));
    assert!(!compiles(&hopping(WINDOWS_PER_EVENT_MAX + 1)));
    let lag =
        |offset: i64| format!("SELECT LAG(a, {offset}) OVER (LIMIT DURATION(second, 1)) AS p INTO o FROM i");
    assert!(compiles(&lag(LAG_OFFSET_MAX)));
    assert!(!compiles(&lag(LAG_OFFSET_MAX + 1)));
    let pattern = |steps: usize| {
        format!(
            "SELECT * INTO o FROM i MATCH_RECOGNIZE (LIMIT DURATION(second, 1) PATTERN (A{{{steps}}})) AS m"
        )
    };
    assert!(compiles(&pattern(PATTERN_STEPS_MAX)));
    assert!(!compiles(&pattern(PATTERN_STEPS_MAX + 1)));
    let offset = |offset: i64| {
        format!(
            "SELECT * INTO o FROM i MATCH_RECOGNIZE (LIMIT DURATION(second, 1) MEASURES LAST(A.x, {offset}) AS x PATTERN (A)) AS m"
        )
    };
    assert!(compiles(&offset(NAVIGATION_OFFSET_MAX)));
    assert!(!compiles(&offset(NAVIGATION_OFFSET_MAX + 1)));
    let statements = |count: usize| "SELECT a INTO o FROM i;".repeat(count);
    assert!(compiles(&statements(STATEMENTS_MAX)));
    assert!(!compiles(&statements(STATEMENTS_MAX + 1)));
    // The select item is one level and each parenthesis one more.
    let nested =
        |depth: usize| format!("SELECT {}1{} AS x INTO o FROM i", "(".repeat(depth), ")".repeat(depth));
    assert!(compiles(&nested(EXPRESSION_DEPTH_MAX - 1)));
    assert!(!compiles(&nested(EXPRESSION_DEPTH_MAX)));
    assert!(compiles(&format!("SELECT a INTO o FROM i WHERE a = '{}'", "x".repeat(QUERY_BYTES_MAX - 40))));
    // A long operator chain nests as deeply as parentheses: refused, not a stack overflow.
    let chain = format!("SELECT {} AS x INTO o FROM i", vec!["1"; 200_000].join("+"));
    assert!(chain.len() < QUERY_BYTES_MAX);
    assert!(!compiles(&chain));
}

#[test]
fn good_queries_compile() {
    for query in [
        "SELECT * INTO o FROM i",
        "SELECT i.a.b AS x, [weird name] INTO o FROM input i",
        "WITH a AS (SELECT x FROM i), b AS (SELECT x FROM a) SELECT x INTO o1 FROM a SELECT x INTO o2 FROM b",
        "SELECT k, TopOneCount INTO o FROM i",
        "SELECT System.Timestamp AS t, COUNT(*) INTO o FROM i GROUP BY HoppingWindow(Duration(hour, 1), Hop(minute, 5))",
        "SELECT COUNT(*) INTO o FROM i GROUP BY SessionWindow(Timeout(minute, 5), MaxDuration(hour, 1))",
        "SELECT a.k, COUNT(*) AS n INTO o FROM l a INNER JOIN r AS b TIMESTAMP BY t ON DATEDIFF(ms, b, a) BETWEEN -5 AND 5 \
         GROUP BY a.k, TumblingWindow(second, 1)",
        "SELECT p.PropertyName, p.PropertyValue INTO o FROM i CROSS APPLY GetRecordProperties(i.tags) AS p TIMESTAMP BY t",
        "SELECT i.k, UPPER(k) AS u, COUNT(*) INTO o FROM input i GROUP BY k, UPPER(i.k), TumblingWindow(s, 1)",
        "SELECT COUNT(*) INTO o FROM i GROUP BY SessionWindow(second, 5, 60) OVER (PARTITION BY k), k",
        "SELECT DATEADD(minute, 5, t) AS later, DATEDIFF(ms, t, u) AS gap INTO o FROM i",
        "SELECT a INTO o FROM i WHERE a NOT BETWEEN 1 AND 2 OR b NOT IN ('x', 'y') OR c NOT LIKE 'z%'",
        "SELECT LAST(a) OVER (PARTITION BY k LIMIT DURATION(hour, 1) WHEN a IS NOT NULL) AS last_a INTO o FROM i",
        "SELECT * INTO o FROM i TIMESTAMP BY t OVER d MATCH_RECOGNIZE (PARTITION BY d LIMIT DURATION(minute, 1) \
         MEASURES COUNT(*) AS n, Classifier() AS c, System.Timestamp() AS at AFTER MATCH SKIP TO NEXT ROW \
         PATTERN (A+ (B | .){1,3} C?) DEFINE A AS A.v > LAST(A.v, 1), B AS B.v < FIRST(A.v)) AS m WHERE m.n > 1",
        "SELECT T.sym INTO o FROM Ticker TIMESTAMP BY rowtime MATCH_RECOGNIZE (PARTITION BY sym ORDER BY rowtime \
         MEASURES LAST(B.price) AS sym ONE ROW PER MATCH AFTER MATCH SKIP PAST LAST ROW PATTERN (A B) \
         WITHIN INTERVAL '10' MINUTES DEFINE B AS B.price < A.price) T",
        "SELECT d, COUNT(*) AS n INTO o FROM i TIMESTAMP BY t OVER d GROUP BY d, TumblingWindow(second, 10)",
    ] {
        assert_eq!(render(query, JobOptions::default()), "compiled\n", "{query}");
    }
}

/// The MATCH_RECOGNIZE clause around `body`, reading `i` with a time bound.
fn match_query(body: &str) -> String {
    format!("SELECT * INTO o FROM i TIMESTAMP BY t MATCH_RECOGNIZE (LIMIT DURATION(minute, 1) {body}) AS m")
}

#[test]
fn match_recognize_unknown_variables() {
    check(
        &match_query("PATTERN (A B) DEFINE C AS C.x > 1, A AS Dangrous.pressure > 1"),
        "1:103: DEFINE names 'C', which is not a variable of the PATTERN (it has: A, B)\n\
         1:122: unknown pattern variable 'Dangrous' (the PATTERN has: A, B); a name with a dot must start with a variable",
    );
    check(
        &match_query("MEASURES LAST(Warnings.x) AS w PATTERN (Warning+)"),
        "1:96: unknown pattern variable 'Warnings' (the PATTERN has: Warning); a name with a dot must start with a variable",
    );
}

#[test]
fn match_recognize_aggregates_and_navigation() {
    check(
        &match_query("MEASURES MAX(5) AS m, SUM(A.x + B.y) AS s, MAX(SUM(A.x)) AS n PATTERN (A B)"),
        "1:95: MAX over a non-variable: it reads rows of the match, as in MAX(A.price)\n\
         1:108: SUM must read the rows of one pattern variable, as in SUM(A.price * A.tax)\n\
         1:129: SUM cannot be nested inside FIRST, LAST or an aggregate",
    );
    check(
        &match_query("MEASURES Classifier() AS c PATTERN (A) DEFINE A AS Classifier() IS NULL"),
        "1:133: Classifier() is only allowed in MEASURES",
    );
    check(
        &match_query(
            "MEASURES LAG(A.x) OVER (LIMIT DURATION(second, 1)) AS p, LAST(A.x, -1) AS q PATTERN (A)",
        ),
        "1:91: LAG is not supported in MATCH_RECOGNIZE\n\
         1:149: the offset of LAST must be a whole number from 0 to 10000",
    );
    check(
        &match_query("MEASURES A.x AS a, A.y AS a PATTERN (A) DEFINE A AS A.x > 0, A AS A.x < 9"),
        "1:101: duplicate measure 'a'; name it with AS\n1:143: the variable 'A' is defined twice",
    );
}

#[test]
fn match_recognize_patterns_and_clauses() {
    check(
        "SELECT * INTO o FROM i MATCH_RECOGNIZE (PATTERN (A)) AS m",
        "1:24: MATCH_RECOGNIZE needs LIMIT DURATION(unit, n) (or WITHIN INTERVAL 'n' unit): partial matches must expire",
    );
    check(
        &match_query("PATTERN (A*)"),
        "1:91: the pattern can match no rows at all: it must need at least one row",
    );
    check(
        &match_query("PATTERN ((A? B?)+ C)"),
        "1:91: a quantified part of a pattern must need at least one row (it can match none here)",
    );
    check(
        &match_query("PATTERN (A{20000})"),
        &format!(
            "1:91: the pattern is too large: its quantifiers unroll to more than {PATTERN_STEPS_MAX} steps"
        ),
    );
    check(&match_query("PATTERN (A{3,1})"), "1:92: a quantifier {n,m} needs 0 <= n <= m and m > 0");
    check(
        &match_query("PATTERN (A*? B)"),
        "1:93: reluctant quantifiers (*?, +?, ...) are not supported; quantifiers are greedy",
    );
    check(
        &match_query("AFTER MATCH SKIP TO LAST A PATTERN (A)"),
        "1:99: only AFTER MATCH SKIP TO NEXT ROW and AFTER MATCH SKIP PAST LAST ROW are supported",
    );
    check(
        &match_query("ALL ROWS PER MATCH PATTERN (A)"),
        "1:82: ALL ROWS PER MATCH is not supported: MATCH_RECOGNIZE gives one row per match",
    );
    check(
        &match_query("ORDER BY price PATTERN (A)"),
        "1:91: MATCH_RECOGNIZE reads rows in event-time order: ORDER BY may only name the TIMESTAMP BY expression, ascending",
    );
    check(&match_query("PATTERN (A) PATTERN (B)"), "1:94: 'PATTERN' appears twice in MATCH_RECOGNIZE");
    check(&match_query("MEASURES A.x AS x"), "1:99: MATCH_RECOGNIZE needs a PATTERN (...)");
    check(
        "SELECT * INTO o FROM i TIMESTAMP BY t MATCH_RECOGNIZE (LIMIT DURATION(minute, 1) PATTERN (A)) AS m \
         JOIN j ON DATEDIFF(second, m, j) BETWEEN 0 AND 1",
        "1:39: MATCH_RECOGNIZE together with CROSS APPLY or JOIN is not supported yet",
    );
}

#[test]
fn substreams_need_their_key() {
    check(
        "SELECT COUNT(*) AS n INTO o FROM i TIMESTAMP BY t OVER deviceId GROUP BY TumblingWindow(second, 10)",
        "1:56: a statement that aggregates an input read with TIMESTAMP BY ... OVER must GROUP BY its key deviceId: each key has its own clock",
    );
    check(
        "SELECT * INTO o FROM i TIMESTAMP BY t OVER deviceId MATCH_RECOGNIZE (LIMIT DURATION(minute, 1) PATTERN (A)) AS m",
        "1:44: MATCH_RECOGNIZE over an input read with TIMESTAMP BY ... OVER must PARTITION BY its key deviceId: each key has its own clock",
    );
    check(
        "SELECT a.x INTO o FROM i a TIMESTAMP BY t OVER d JOIN j b TIMESTAMP BY t ON DATEDIFF(second, a, b) BETWEEN 0 AND 5",
        "1:55: JOIN with an input read with TIMESTAMP BY ... OVER is not supported yet",
    );
    check(
        "SELECT * INTO o FROM i TIMESTAMP BY t OVER d; SELECT * INTO p FROM i TIMESTAMP BY t",
        "1:83: input 'i' is read with different TIMESTAMP BY clauses; every statement must use the same one",
    );
}

fn with_reference(name: &str) -> JobOptions {
    JobOptions { reference_inputs: vec![name.to_string()], ..JobOptions::default() }
}

#[test]
fn reference_data_needs_an_equality_of_the_two_sides() {
    let options = || with_reference("thresholds");
    check_with(
        "SELECT r.v INTO o FROM readings r JOIN thresholds t ON r.v > t.limit",
        options(),
        "1:56: a JOIN with reference data needs ON to equate a column of each side, such as ON s.deviceId = thresholds.deviceId (AND-ed with any other condition)",
    );
    // An equality within one side, or under OR, does not say which row to look up.
    check_with(
        "SELECT r.v INTO o FROM readings r JOIN thresholds t ON t.a = t.b OR r.id = t.id",
        options(),
        "1:56: a JOIN with reference data needs ON to equate a column of each side, such as ON s.deviceId = thresholds.deviceId (AND-ed with any other condition)",
    );
    check_with(
        "SELECT r.v INTO o FROM readings r JOIN thresholds t ON r.id = t.id AND r.v > t.limit",
        options(),
        "compiled",
    );
}

#[test]
fn reference_data_is_only_the_right_side_of_a_join_and_has_no_event_time() {
    check_with(
        "SELECT * INTO o FROM thresholds",
        with_reference("Thresholds"),
        "1:22: 'thresholds' is reference data: it can only be the right side of a JOIN (FROM stream s JOIN thresholds t ON s.key = t.key)",
    );
    check_with(
        "SELECT r.v INTO o FROM readings r JOIN thresholds t TIMESTAMP BY ts ON r.id = t.id",
        with_reference("thresholds"),
        "1:66: 'thresholds' is reference data, which has no event time: remove its TIMESTAMP BY",
    );
    // Without the option, the same JOIN is a stream-stream join, which needs a time bound.
    check_with(
        "SELECT r.v INTO o FROM readings r JOIN thresholds t ON r.id = t.id",
        JobOptions::default(),
        "1:56: a JOIN needs a time bound in ON: AND DATEDIFF(unit, left, right) BETWEEN low AND high",
    );
}
