//! End-to-end tests of `tidewater bench`: the real binary as a child against a real
//! `tidewater serve`, on volumes small enough for a test. They check that each mode runs, that
//! its `--kv` figures are all there and consistent (every record produced is acknowledged,
//! consumed and measured), and that settings it cannot honour are refused up front. The figures
//! themselves are `scripts/bench`'s (and `scripts/bench-mqtt`'s) business.

mod support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use support::{fails, ok, run, tidewater, Server};

/// The `name=value` lines of a `--kv` output.
fn figures(output: &str) -> HashMap<String, String> {
    output
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect()
}

/// The address of one of the server's listeners (`mqtt`, `mqtt_tls`) from its running line.
fn listener(server: &Server, name: &str) -> String {
    let prefix = format!("{name}=");
    server
        .running
        .split_whitespace()
        .find_map(|field| field.strip_prefix(prefix.as_str()))
        .unwrap_or_else(|| panic!("no {name}=ADDRESS in {:?}", server.running))
        .to_string()
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
    let mqtt = listener(&server, "mqtt");
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

/// A CA, and a server certificate it signs for IP 127.0.0.1, as PEM files in `dir`: (CA, server
/// certificate, server key).
fn test_pki(dir: &Path, ca_name: &str) -> (PathBuf, PathBuf, PathBuf) {
    let ca_key = rcgen::KeyPair::generate().expect("CA key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::new()).expect("CA params");
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, ca_name);
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).expect("CA certificate");
    let server_key = rcgen::KeyPair::generate().expect("server key");
    let server_params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).expect("server params");
    let server = server_params.signed_by(&server_key, &ca, &ca_key).expect("server certificate");
    let paths = (dir.join(format!("{ca_name}.pem")), dir.join("server.pem"), dir.join("server.key"));
    std::fs::write(&paths.0, ca.pem()).expect("write CA");
    std::fs::write(&paths.1, server.pem()).expect("write server certificate");
    std::fs::write(&paths.2, server_key.serialize_pem()).expect("write server key");
    paths
}

#[test]
fn mqtt_handshakes_load_and_idle_over_tls() {
    let pki = tempfile::tempdir().expect("tempdir");
    let (ca, cert, key) = test_pki(pki.path(), "bench-ca");
    let (cert, key) = (cert.to_string_lossy().into_owned(), key.to_string_lossy().into_owned());
    let server =
        Server::start_with(&["--mqtt-tls-listen", "127.0.0.1:0", "--tls-cert", &cert, "--tls-key", &key]);
    let mqtt_tls = listener(&server, "mqtt_tls");
    let pid = server.child.0.id().to_string();
    let ca = ca.to_string_lossy().into_owned();
    let target =
        ["--gateway", "--mqtt", &mqtt_tls, "--tls-ca", &ca, "--connections", "10", "--pid", &pid, "--kv"];

    let mut handshake_args =
        vec!["bench", "mqtt", "handshakes", "--concurrency", "3", "--duration-secs", "0.3"];
    handshake_args.extend(["--runs", "2"]);
    handshake_args.extend(target);
    let handshakes = figures(&ok(&server, &handshake_args, ""));
    assert_eq!((handshakes["tls"].as_str(), handshakes["runs"].as_str()), ("true", "2"), "{handshakes:?}");
    positive(&handshakes, "handshakes_per_s");
    let p50 = positive(&handshakes, "p50_ms");
    let p99 = positive(&handshakes, "p99_ms");
    assert!(p50 <= p99, "{handshakes:?}");
    positive(&handshakes, "client_cpu_us_per_handshake");
    assert!(handshakes.contains_key("server_cpu_us_per_handshake"), "{handshakes:?}");

    // Every acknowledged message is in the topic over TLS too (the command fails otherwise).
    let mut load_args = vec!["bench", "mqtt", "load", "--in-flight", "2", "--warmup-secs", "0.2"];
    load_args.extend(["--duration-secs", "0.3", "--runs", "1"]);
    load_args.extend(target);
    let load = figures(&ok(&server, &load_args, ""));
    assert_eq!(load["acked"], load["appended"], "{load:?}");
    positive(&load, "msgs_per_s");

    let mut idle_args = vec!["bench", "mqtt", "idle", "--settle-secs", "0"];
    idle_args.extend(target);
    let idle = figures(&ok(&server, &idle_args, ""));
    assert_eq!(idle["connections"], "10");

    // A client that trusts another CA refuses the server's certificate.
    let (other_ca, _, _) = test_pki(pki.path(), "other-ca");
    let other_ca = other_ca.to_string_lossy().into_owned();
    let args = ["bench", "mqtt", "handshakes", "--mqtt", &mqtt_tls, "--tls-ca", &other_ca, "--runs", "1"];
    let stderr = fails(tidewater(&server, &args, ""), &args);
    assert!(stderr.contains("TLS handshake") && stderr.contains("UnknownIssuer"), "{stderr}");
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
    check(&["bench", "mqtt", "load", "--connections", "200001"], "--connections");
    check(&["bench", "mqtt", "handshakes", "--concurrency", "0"], "--concurrency");
    check(&["bench", "mqtt", "load", "--tls-ca", "/nonexistent/ca.pem"], "/nonexistent/ca.pem");
    check(&["bench", "mqtt", "load", "--runs", "0"], "--runs must be between 1 and 100");
    check(&["bench", "mqtt", "idle", "--pid", "1", "--keep-alive-secs", "0"], "--keep-alive-secs");
    ok(&server, &["topic", "create", "empty"], "");
    check(&["bench", "consume", "--topic", "empty"], "topic \"empty\" is empty: produce to it first");
}
