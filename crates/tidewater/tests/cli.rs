//! End-to-end tests of the real `tidewater` binary, run as a child process.

mod support;

use std::process::Command;
use std::sync::Arc;

use support::{send_sigterm, start_server, wait_exit, wait_for_line, BINARY};
use tidewater_log::batch::encode_batch;
use tidewater_log::{Log, LogConfig, SystemClock};

#[test]
fn serve_creates_the_data_dir_and_shuts_down_cleanly_on_sigterm() {
    let temp = tempfile::tempdir().expect("tempdir");
    let data_dir = temp.path().join("data");
    let (mut server, lines) = start_server(&data_dir);
    wait_for_line(&lines, "tidewater is running");
    assert!(data_dir.is_dir());
    send_sigterm(&server.0);
    wait_for_line(&lines, "all logs flushed and closed");
    assert!(wait_exit(&mut server).success());
}

#[test]
fn serve_recovers_a_torn_log_and_says_what_it_cut() {
    let temp = tempfile::tempdir().expect("tempdir");
    let data_dir = temp.path().join("data");
    let partition_dir = data_dir.join("orders-0");
    let kept = {
        let log = Log::open(&partition_dir, LogConfig::default(), Arc::new(SystemClock)).expect("open");
        for index in 0..10u8 {
            log.append_durable(&mut encode_batch(1_000, &[(None, &[index; 50])])).expect("append");
        }
        log.end_offset()
    };
    // A torn write: half a batch at the end of the active segment.
    let segment = partition_dir.join("00000000000000000000.log");
    let torn = encode_batch(1_000, &[(None, &[9u8; 50])]);
    let mut bytes = std::fs::read(&segment).expect("read segment");
    bytes.extend_from_slice(&torn[..torn.len() / 2]);
    std::fs::write(&segment, &bytes).expect("write segment");

    let (mut server, lines) = start_server(&data_dir);
    let seen = wait_for_line(&lines, "tidewater is running");
    assert!(
        seen.iter().any(|line| line.contains("recovery truncated the active segment")),
        "no truncation report in:\n{}",
        seen.join("\n")
    );
    send_sigterm(&server.0);
    assert!(wait_exit(&mut server).success());
    let log = Log::open(&partition_dir, LogConfig::default(), Arc::new(SystemClock)).expect("reopen");
    assert_eq!(log.end_offset(), kept);
}

#[test]
fn log_verify_reports_corruption_in_a_closed_segment() {
    let temp = tempfile::tempdir().expect("tempdir");
    let partition_dir = temp.path().join("events-0");
    let config = LogConfig { segment_bytes: 1024, ..LogConfig::default() };
    {
        let log = Log::open(&partition_dir, config, Arc::new(SystemClock)).expect("open");
        for index in 0..40u8 {
            log.append_durable(&mut encode_batch(1_000, &[(None, &[index; 60])])).expect("append");
        }
        assert!(log.segment_count() > 2);
        log.close().expect("close");
    }
    let output = Command::new(BINARY).args(["log", "verify"]).arg(&partition_dir).output().expect("run");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(String::from_utf8_lossy(&output.stdout).starts_with("ok: "));

    // Flip a byte inside a record of the first (closed) segment.
    let segment = partition_dir.join("00000000000000000000.log");
    let mut bytes = std::fs::read(&segment).expect("read");
    bytes[100] ^= 0xff;
    std::fs::write(&segment, &bytes).expect("write");
    let output = Command::new(BINARY).args(["log", "verify"]).arg(&partition_dir).output().expect("run");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("corrupt segment") && stderr.contains("00000000000000000000.log"), "{stderr}");
}

#[test]
fn a_bad_setting_is_a_clear_error() {
    let output = Command::new(BINARY).args(["serve", "--fsync", "sometimes"]).output().expect("run");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("unknown fsync policy \"sometimes\""), "{stderr}");
}

#[test]
fn query_test_compares_with_expected_output_and_reports_diagnostics_with_positions() {
    let case = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../sql/tests/queries/hopping_window");
    let run = |query: &std::path::Path, expect: Option<&std::path::Path>| {
        let mut command = Command::new(BINARY);
        command.args(["query", "test"]).arg(query).arg("--input").arg(case.join("input.jsonl"));
        if let Some(expect) = expect {
            command.arg("--expect").arg(expect);
        }
        command.output().expect("run tidewater query test")
    };
    let matching = run(&case.join("query.sql"), Some(&case.join("expected.jsonl")));
    let stdout = String::from_utf8_lossy(&matching.stdout);
    assert!(matching.status.success(), "{}", String::from_utf8_lossy(&matching.stderr));
    assert_eq!(stdout.lines().count(), 6, "{stdout}");
    assert!(
        stdout.starts_with(r#"{"output":"hops","line":3,"row":{"windowEnd":"2026-01-01T00:00:05.0000000Z""#)
    );

    let temp = tempfile::tempdir().expect("tempdir");
    let wrong = temp.path().join("wrong.jsonl");
    std::fs::write(&wrong, r#"{"output": "hops", "row": {"windowEnd": "2026-01-01T00:00:05.0000000Z", "tollId": 1, "cars": 3, "total": 9}}"#)
        .expect("write");
    let mismatch = run(&case.join("query.sql"), Some(&wrong));
    let stderr = String::from_utf8_lossy(&mismatch.stderr);
    assert!(!mismatch.status.success());
    assert!(stderr.contains("- {") && stderr.contains("\"cars\":3") && stderr.contains("+ {"), "{stderr}");

    let bad = temp.path().join("bad.sql");
    std::fs::write(&bad, "SELECT foo(x) INTO o FROM i\nGROUP BY TumblingWindow(parsec, 1)\n").expect("write");
    let diagnostics = run(&bad, None);
    let stderr = String::from_utf8_lossy(&diagnostics.stderr);
    assert!(!diagnostics.status.success());
    assert!(stderr.contains("bad.sql:1:8: unknown function 'foo'"), "{stderr}");
    assert!(stderr.contains("bad.sql:2:25:"), "{stderr}");
}

#[test]
fn query_idle_key_ms_reaches_the_engine() {
    // One device's clock: an event at 10 s, processing time moves on 5 s, then an event at 5 s.
    // A key closed after 1 s of silence starts afresh (two windows of one event each); a key
    // still open takes the second event as late and adjusts it into its window (one of two).
    let temp = tempfile::tempdir().expect("tempdir");
    let query = temp.path().join("per_key.sql");
    std::fs::write(
        &query,
        "SELECT deviceId, COUNT(*) AS n INTO out FROM input TIMESTAMP BY ts OVER deviceId\n\
         GROUP BY deviceId, TumblingWindow(second, 60)\n",
    )
    .expect("write");
    let input = temp.path().join("input.jsonl");
    std::fs::write(
        &input,
        concat!(
            r#"{"@arrival": 1000, "deviceId": "a", "ts": "2026-01-01T00:00:10Z"}"#,
            "\n",
            r#"{"@advance_processing_time": 6000}"#,
            "\n",
            r#"{"@arrival": 6000, "deviceId": "a", "ts": "2026-01-01T00:00:05Z"}"#,
            "\n",
        ),
    )
    .expect("write");
    let counts = |extra: &[&str]| -> Vec<i64> {
        let output = Command::new(BINARY)
            .args(["query", "test"])
            .arg(&query)
            .arg("--input")
            .arg(&input)
            .args(extra)
            .output()
            .expect("run tidewater query test");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        stdout
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter_map(|line| line.pointer("/row/n").and_then(serde_json::Value::as_i64))
            .collect()
    };
    assert_eq!(counts(&["--idle-key-ms", "1000"]), [1, 1]);
    assert_eq!(counts(&[]), [2]);
    let stderr = failing(&["query", "test", "--idle-key-ms", "0", "--input", "x", "q.sql"]);
    assert!(stderr.contains("--idle-key-ms"), "{stderr}");
}

/// Runs `tidewater ARGS` and returns its stderr, expecting it to fail.
fn failing(args: &[&str]) -> String {
    let output = Command::new(BINARY).args(args).env("TIDEWATER_LOG", "error").output().expect("run");
    assert!(!output.status.success(), "tidewater {args:?} succeeded");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn bad_gateway_settings_are_clear_errors() {
    let stderr = failing(&["serve", "--mqtt-listen", "localhost"]);
    assert!(stderr.contains("expected host:port (an IP address and a port) or \"none\""), "{stderr}");
    let stderr = failing(&["serve", "--kafka-listen", "127.0.0.1:0", "--mqtt-max-packet-bytes", "10"]);
    assert!(stderr.contains("--mqtt-max-packet-bytes must be between 256 and"), "{stderr}");
    let stderr = failing(&["gateway", "--mqtt-listen", "none", "--http-listen", "none"]);
    assert!(
        stderr.contains(
            "`tidewater gateway` needs an --mqtt-listen, --mqtt-tls-listen, --mqtt-ws-listen, --http-listen or --http-tls-listen address"
        ),
        "{stderr}"
    );
    let stderr = failing(&["serve", "--kafka-listen", "127.0.0.1:0", "--http-max-body-bytes", "0"]);
    assert!(stderr.contains("--http-max-body-bytes must be at least 1"), "{stderr}");
    // A device id that could not appear in an MQTT topic level is refused before any I/O.
    let stderr = failing(&["device", "add", "a/b", "--brokers", "127.0.0.1:1"]);
    assert!(stderr.contains("device \"a/b\": a device id may hold letters"), "{stderr}");
}

#[test]
fn device_token_needs_no_server_and_is_deterministic() {
    // The brokers address is unreachable: `device token` must not try it.
    let key = "q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA=";
    let args =
        ["device", "token", "pump-1", "--key", key, "--expires-at", "1700000000", "--brokers", "127.0.0.1:1"];
    let output = Command::new(BINARY).args(args).env("TIDEWATER_LOG", "error").output().expect("run");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    // The same token as tidewater_gateway::token's fixed test vector (checked against Python's hmac).
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "SharedAccessSignature sr=devices%2Fpump-1&sig=8bBcwLjs7txOVmlF3qNyeLtqQH36tZ9XQhVo92RrMdg%3D&se=1700000000\n"
    );
    assert!(String::from_utf8_lossy(&output.stderr).contains("already expired"));
    let stderr = failing(&["device", "token", "pump-1", "--key", "not-a-key"]);
    assert!(stderr.contains("--key is not a device key"), "{stderr}");
    let stderr = failing(&["device", "token", "pump-1", "--key", key, "--ttl", "400d"]);
    assert!(stderr.contains("a token is valid for 1s to 365d"), "{stderr}");
}
