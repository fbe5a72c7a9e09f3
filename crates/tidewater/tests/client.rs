//! End-to-end tests of the client commands (`topic`, `produce`, `consume`): the real binary as a
//! child, against a real `tidewater serve` child on a loopback port, checking exact output and
//! exit codes. Each test starts its own server with a fresh data directory.

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use support::{closed_address, fails, ok, run, tidewater, Server};

/// The lines of `text` that start with `prefix`.
fn lines_starting<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
    text.lines().filter(|line| line.starts_with(prefix)).collect()
}

#[test]
fn topic_create_list_describe_alter_grow_and_delete() {
    let server = Server::start();
    let created = ok(
        &server,
        &["topic", "create", "orders", "--partitions", "2", "--config", "retention.ms=60000"],
        "",
    );
    assert_eq!(created, "created topic orders\n");
    ok(&server, &["topic", "create", "audit", "--replication-factor", "1"], "");
    assert_eq!(ok(&server, &["topic", "list"], ""), "audit\norders\n");

    let described = ok(&server, &["topic", "describe", "orders"], "");
    assert!(
        described.starts_with(
            "topic orders: 2 partitions, replication factor 1\n\
             \x20 partition 0: leader 0, replicas [0], in-sync [0]\n\
             \x20 partition 1: leader 0, replicas [0], in-sync [0]\n\
             configs:\n"
        ),
        "{described}"
    );
    assert_eq!(lines_starting(&described, "  retention.ms="), ["  retention.ms=60000 (set on topic)"]);
    assert_eq!(lines_starting(&described, "  segment.ms="), ["  segment.ms=604800000 (default)"]);

    // Incremental: segment.ms is set, retention.ms falls back to its default, nothing else moves.
    let altered = ok(
        &server,
        &["topic", "alter", "orders", "--config", "segment.ms=1000", "--delete-config", "retention.ms"],
        "",
    );
    assert_eq!(altered, "altered topic orders\n");
    let described = ok(&server, &["topic", "describe", "orders"], "");
    assert_eq!(lines_starting(&described, "  segment.ms="), ["  segment.ms=1000 (set on topic)"]);
    assert_eq!(lines_starting(&described, "  retention.ms="), ["  retention.ms=604800000 (default)"]);
    ok(&server, &["topic", "alter", "orders", "--config", "retention.bytes=1048576"], "");
    let described = ok(&server, &["topic", "describe", "orders"], "");
    assert_eq!(
        lines_starting(&described, "  ")
            .into_iter()
            .filter(|line| line.ends_with("(set on topic)"))
            .collect::<Vec<_>>(),
        ["  retention.bytes=1048576 (set on topic)", "  segment.ms=1000 (set on topic)"]
    );

    assert_eq!(
        ok(&server, &["topic", "add-partitions", "orders", "--count", "3"], ""),
        "topic orders now has 3 partitions\n"
    );
    let described = ok(&server, &["topic", "describe", "orders"], "");
    assert!(described.starts_with("topic orders: 3 partitions, replication factor 1\n"), "{described}");
    assert_eq!(
        lines_starting(&described, "  partition 2:"),
        ["  partition 2: leader 0, replicas [0], in-sync [0]"]
    );

    assert_eq!(ok(&server, &["topic", "delete", "orders"], ""), "deleted topic orders\n");
    assert_eq!(ok(&server, &["topic", "list"], ""), "audit\n");
}

#[test]
fn produced_keys_and_headers_come_back_through_the_format() {
    let server = Server::start();
    ok(&server, &["topic", "create", "events", "--partitions", "1"], "");
    let produced = ok(
        &server,
        &[
            "produce",
            "--topic",
            "events",
            "--key-separator",
            ":",
            "--header",
            "source=sensor-7",
            "--header",
            "unit=C",
        ],
        "k1:21.5\nk2:v:with:colons\nno key here\n:empty key\n",
    );
    assert_eq!(produced, "");

    let consumed = ok(
        &server,
        &["consume", "--topic", "events", "--exit-at-end", "--format", "%t %p %o %k(%K)=%s(%S) [%h]\\n"],
        "",
    );
    assert_eq!(
        consumed,
        "events 0 0 k1(2)=21.5(4) [source=sensor-7,unit=C]\n\
         events 0 1 k2(2)=v:with:colons(13) [source=sensor-7,unit=C]\n\
         events 0 2 (-1)=no key here(11) [source=sensor-7,unit=C]\n\
         events 0 3 (0)=empty key(9) [source=sensor-7,unit=C]\n"
    );
    // The default format prints the value alone; --count stops early.
    assert_eq!(ok(&server, &["consume", "--topic", "events", "--count", "2"], ""), "21.5\nv:with:colons\n");
    // Without --key-separator the whole line is the value.
    ok(&server, &["produce", "--topic", "events"], "a:b\n");
    assert_eq!(
        ok(
            &server,
            &["consume", "--topic", "events", "--from", "4", "--exit-at-end", "--format", "%K %s\\n"],
            ""
        ),
        "-1 a:b\n"
    );
}

#[test]
fn every_compression_codec_round_trips() {
    let server = Server::start();
    ok(&server, &["topic", "create", "packed", "--partitions", "1"], "");
    let codecs = ["none", "gzip", "snappy", "lz4", "zstd"];
    for codec in codecs {
        let lines: String = (0..50).map(|index| format!("{codec}-{index}-{}\n", "x".repeat(100))).collect();
        ok(&server, &["produce", "--topic", "packed", "--compression", codec, "--acks", "1"], &lines);
    }
    let consumed =
        ok(&server, &["consume", "--topic", "packed", "--exit-at-end", "--format", "%o %s\\n"], "");
    let expected: String = codecs
        .iter()
        .flat_map(|codec| (0..50).map(move |index| format!("{codec}-{index}-{}", "x".repeat(100))))
        .enumerate()
        .map(|(offset, value)| format!("{offset} {value}\n"))
        .collect();
    assert_eq!(consumed, expected);
}

#[test]
fn consume_starts_at_an_offset_a_timestamp_or_the_end() {
    let server = Server::start();
    ok(&server, &["topic", "create", "readings", "--partitions", "2"], "");
    ok(&server, &["produce", "--topic", "readings", "--partition", "1"], "a\nb\n");
    // Record timestamps are the producer's clock in ms: leave a clear gap on both sides.
    std::thread::sleep(Duration::from_millis(50));
    let between_ms = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_millis();
    std::thread::sleep(Duration::from_millis(50));
    ok(&server, &["produce", "--topic", "readings", "--partition", "1"], "c\nd\n");

    let consume = |from: &str, extra: &[&str]| {
        let mut args =
            vec!["consume", "--topic", "readings", "--exit-at-end", "--format", "%p:%o:%s ", "--from", from];
        args.extend(extra);
        ok(&server, &args, "")
    };
    assert_eq!(consume("beginning", &[]), "1:0:a 1:1:b 1:2:c 1:3:d ");
    assert_eq!(consume("1", &["--partition", "1"]), "1:1:b 1:2:c 1:3:d ");
    assert_eq!(consume("4", &["--partition", "1"]), "");
    assert_eq!(consume(&format!("@{between_ms}"), &[]), "1:2:c 1:3:d ");
    assert_eq!(consume("@0", &["--count", "1"]), "1:0:a ");
    // After the last record (and on the empty partition 0): nothing to read.
    assert_eq!(consume(&format!("@{}", between_ms + 3_600_000), &[]), "");
    assert_eq!(consume("end", &[]), "");
}

#[test]
fn bad_input_is_a_clear_error_and_a_failing_exit() {
    let server = Server::start();
    ok(&server, &["topic", "create", "known", "--partitions", "1"], "");
    ok(&server, &["produce", "--topic", "known"], "only\n");
    let check = |args: &[&str], expected: &str| {
        let stderr = fails(tidewater(&server, args, ""), args);
        assert!(stderr.contains(expected), "tidewater {args:?}: no {expected:?} in:\n{stderr}");
    };
    check(&["topic", "describe", "missing"], "error: topic \"missing\" does not exist");
    check(&["consume", "--topic", "missing"], "error: topic \"missing\" does not exist");
    check(&["topic", "create", "t", "--config", "retention.ms"], "expected KEY=VALUE, got \"retention.ms\"");
    check(
        &["topic", "create", "t", "--config", "retention.ms=soon"],
        "error: creating topic \"t\": Broker: Configuration is invalid: retention.ms: \"soon\" is not a valid number",
    );
    check(
        &["topic", "alter", "known", "--config", "no.such.config=1"],
        "unknown topic config \"no.such.config\"",
    );
    check(&["topic", "alter", "known"], "nothing to change");
    check(&["topic", "create", "known"], "Topic already exists");
    check(
        &["topic", "delete", "missing"],
        "error: deleting topic \"missing\": Broker: Unknown topic or partition",
    );
    check(&["topic", "add-partitions", "known", "--count", "1"], "Invalid number of partitions");
    check(&["consume", "--topic", "known", "--format", "%x"], "unknown placeholder %x");
    check(
        &["consume", "--topic", "known", "--from", "soon"],
        "expected beginning, end, an OFFSET or @TIMESTAMP_MS",
    );
    check(&["consume", "--topic", "known", "--partition", "5"], "topic \"known\" has no partition 5");
    check(&["consume", "--topic", "known", "--from", "7", "--exit-at-end"], "outside its partition's range");
    check(&["produce", "--topic", "known", "--compression", "brotli"], "invalid value 'brotli'");

    // A record that fails is reported with its line number, and the exit status says so.
    let args = ["produce", "--topic", "known", "--partition", "9"];
    let stderr = fails(tidewater(&server, &args, "lost\n"), &args);
    assert!(stderr.contains("error: line 1: ") && stderr.contains("Unknown partition"), "{stderr}");
    assert!(stderr.contains("1 of 1 records were not produced"), "{stderr}");
    // Nothing was written by any of the failures.
    assert_eq!(ok(&server, &["consume", "--topic", "known", "--exit-at-end"], ""), "only\n");
    assert_eq!(ok(&server, &["topic", "list"], ""), "known\n");
}

#[test]
fn an_unreachable_cluster_fails_within_the_timeout() {
    let nowhere = closed_address();
    let check = |args: &[&str], stdin: &str, expected: &str| {
        let mut full = args.to_vec();
        full.extend(["--brokers", &nowhere, "--timeout-ms", "1000"]);
        let started = std::time::Instant::now();
        let stderr = fails(run(&full, stdin.as_bytes()), &full);
        assert!(started.elapsed() < Duration::from_secs(20), "{full:?} took {:?}", started.elapsed());
        assert!(stderr.contains(expected), "tidewater {full:?}: no {expected:?} in:\n{stderr}");
    };
    let no_answer = format!("no answer from the cluster at {nowhere} within 1000 ms");
    check(&["topic", "list"], "", &no_answer);
    check(&["topic", "describe", "any"], "", &no_answer);
    check(&["consume", "--topic", "any"], "", &no_answer);
    check(&["topic", "create", "any"], "", "error: creating topic \"any\": Local: Timed out");
    check(&["produce", "--topic", "any"], "one\ntwo\n", "2 of 2 records were not produced");
}
