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
    let stderr = failing(&["gateway", "--mqtt-listen", "none"]);
    assert!(stderr.contains("`tidewater gateway` needs an --mqtt-listen address"), "{stderr}");
    // A device id that could not appear in an MQTT topic level is refused before any I/O.
    let stderr = failing(&["device", "add", "a/b", "--brokers", "127.0.0.1:1"]);
    assert!(stderr.contains("device \"a/b\": a device id may hold letters"), "{stderr}");
}
