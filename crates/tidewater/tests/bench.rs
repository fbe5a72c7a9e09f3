//! End-to-end tests of `tidewater bench`: the real binary as a child against a real
//! `tidewater serve`, on volumes small enough for a test. They check that each mode runs, that
//! its `--kv` figures are all there and consistent (every record produced is acknowledged,
//! consumed and measured), and that settings it cannot honour are refused up front. The figures
//! themselves are `scripts/bench`'s (and `scripts/bench-mqtt`'s) business.

mod support;

use std::collections::HashMap;

use support::{fails, ok, run, tidewater, Server};

/// The `name=value` lines of a `--kv` output.
fn figures(output: &str) -> HashMap<String, String> {
    output
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect()
}

/// A figure that must be a number above zero.
fn positive(figures: &HashMap<String, String>, name: &str) -> f64 {
    let value: f64 = figures
        .get(name)
        .unwrap_or_else(|| panic!("no {name} in {figures:?}"))
        .parse()
        .unwrap_or_else(|error| panic!("{name}: {error}"));
    assert!(value > 0.0, "{name}={value}");
    value
}

#[test]
fn produce_consume_and_e2e_measure_every_record() {
    let server = Server::start();
    let produced = figures(&ok(
        &server,
        &[
            "bench",
            "produce",
            "--topic",
            "b",
            "--record-bytes",
            "100",
            "--count",
            "2000",
            "--runs",
            "2",
            "--kv",
        ],
        "",
    ));
    assert_eq!(produced["records"], "4000");
    assert_eq!(produced["acks"], "all");
    assert_eq!(produced["mb_per_s_runs"].split(',').count(), 2);
    positive(&produced, "mb_per_s");
    positive(&produced, "msgs_per_s");

    let consumed = figures(&ok(&server, &["bench", "consume", "--topic", "b", "--runs", "1", "--kv"], ""));
    assert_eq!(consumed["records"], "4000");
    assert_eq!(consumed["bytes"], "400000");
    positive(&consumed, "mb_per_s");
    let limited = figures(&ok(
        &server,
        &["bench", "consume", "--topic", "b", "--count", "10", "--runs", "1", "--kv"],
        "",
    ));
    assert_eq!(limited["records"], "10");

    let e2e = figures(&ok(
        &server,
        &["bench", "e2e", "--rate", "1000", "--duration-secs", "1", "--warmup-secs", "0.5", "--kv"],
        "",
    ));
    assert_eq!(e2e["sent"], "1500");
    assert_eq!(e2e["received"], "1500");
    assert_eq!(e2e["lost"], "0");
    assert_eq!(e2e["samples"], "1000");
    let p50 = positive(&e2e, "p50_ms");
    let p99 = positive(&e2e, "p99_ms");
    let max = positive(&e2e, "max_ms");
    assert!(p50 <= p99 && p99 <= max, "{e2e:?}");
}

#[test]
fn mqtt_load_and_idle_against_the_gateway() {
    let server = Server::start_with(&["--mqtt-listen", "127.0.0.1:0"]);
    let mqtt = server
        .running
        .split_whitespace()
        .find_map(|field| field.strip_prefix("mqtt="))
        .unwrap_or_else(|| panic!("no mqtt=ADDRESS in {:?}", server.running))
        .to_string();
    let pid = server.child.0.id().to_string();
    let target = ["--gateway", "--mqtt", &mqtt, "--connections", "20", "--pid", &pid, "--kv"];
    let mut load_args = vec!["bench", "mqtt", "load", "--in-flight", "2", "--warmup-secs", "0.2"];
    load_args.extend(["--duration-secs", "0.5", "--runs", "2"]);
    load_args.extend(target);
    // Registered, connected, published, and every acknowledged message is in the topic (the
    // command itself fails otherwise).
    let load = figures(&ok(&server, &load_args, ""));
    assert_eq!((load["connections"].as_str(), load["runs"].as_str()), ("20", "2"));
    assert_eq!(load["acked"], load["appended"], "{load:?}");
    positive(&load, "acked");
    positive(&load, "msgs_per_s");
    let p50 = positive(&load, "p50_ms");
    let p99 = positive(&load, "p99_ms");
    let max = positive(&load, "max_ms");
    assert!(p50 <= p99 && p99 <= max, "{load:?}");
    assert!(load.contains_key("server_cpu_us_per_msg"), "{load:?}");

    let mut idle_args = vec!["bench", "mqtt", "idle", "--settle-secs", "0"];
    idle_args.extend(target);
    let idle = figures(&ok(&server, &idle_args, ""));
    assert_eq!(idle["connections"], "20");
    positive(&idle, "rss_before_kib");
    positive(&idle, "rss_after_kib");
}

#[test]
fn loopback_measures_without_a_broker() {
    let output = run(&["bench", "loopback", "--duration-secs", "0.2", "--runs", "1", "--kv"], b"");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let loopback = figures(&String::from_utf8_lossy(&output.stdout));
    positive(&loopback, "mb_per_s");
}

#[test]
fn settings_it_cannot_honour_are_refused() {
    let server = Server::start();
    let check = |args: &[&str], expected: &str| {
        let stderr = fails(tidewater(&server, args, ""), args);
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    };
    check(
        &["bench", "e2e", "--rate", "10000000", "--duration-secs", "3600"],
        "more than the 20000000 latencies one run keeps",
    );
    check(&["bench", "produce", "--duration-secs", "0"], "--duration-secs must be above 0");
    check(&["bench", "produce", "--runs", "0"], "--runs must be between 1 and 100");
    check(&["bench", "produce", "--record-bytes", "900001"], "900001");
    check(&["bench", "e2e", "--record-bytes", "7"], "7");
    check(&["bench", "mqtt", "load", "--in-flight", "0"], "--in-flight");
    check(&["bench", "mqtt", "load", "--connections", "60001"], "--connections");
    check(&["bench", "mqtt", "load", "--runs", "0"], "--runs must be between 1 and 100");
    check(&["bench", "mqtt", "idle", "--pid", "1", "--keep-alive-secs", "0"], "--keep-alive-secs");
    ok(&server, &["topic", "create", "empty"], "");
    check(&["bench", "consume", "--topic", "empty"], "topic \"empty\" is empty: produce to it first");
}
