//! End-to-end tests of the client commands (`topic`, `produce`, `consume`) and their cluster
//! flags (`--client-config`, `-X`): the real binary as a child, against a real `tidewater serve`
//! child on a loopback port, checking exact output and exit codes; and of `tidewater_client`'s
//! admin requests against it. Each test starts its own server with a fresh data directory.

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rdkafka::admin::AdminClient;
use support::{closed_address, fails, ok, run, tidewater, Server};
use tidewater_client::admin::{
    self, AclBinding, AclBindingFilter, AclOperation, AclPermission, NewTopic, PatternType, ResourceType,
    ScramAlteration, ScramMechanism,
};
use tidewater_client::{ClusterConfig, QuietContext};

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
fn delete_records_moves_the_log_start_and_refuses_what_is_past_the_end() {
    let server = Server::start();
    ok(&server, &["topic", "create", "readings", "--partitions", "1"], "");
    ok(&server, &["produce", "--topic", "readings"], "r0\nr1\nr2\nr3\nr4\n");
    fn delete(before: &str) -> [&str; 7] {
        ["topic", "delete-records", "readings", "--partition", "0", "--before", before]
    }

    assert_eq!(
        ok(&server, &delete("3"), ""),
        "topic readings partition 0: records before offset 3 deleted\n"
    );
    // Offsets never change: what is left keeps its own.
    let format = ["consume", "--topic", "readings", "--exit-at-end", "--format", "%o %s\n"];
    assert_eq!(ok(&server, &format, ""), "3 r3\n4 r4\n");

    // Past the high watermark: Kafka's OFFSET_OUT_OF_RANGE, and nothing more is deleted.
    let args = delete("9");
    let stderr = fails(tidewater(&server, &args, ""), &args);
    assert!(stderr.contains("partition 0: Broker: Offset out of range"), "{stderr}");
    assert_eq!(ok(&server, &format, ""), "3 r3\n4 r4\n");
    // Not an offset: a usage error that names the value.
    let args = delete("-5");
    let stderr = fails(tidewater(&server, &args, ""), &args);
    assert!(stderr.contains("\"-5\" is not an offset"), "{stderr}");

    // `end` deletes everything up to the high watermark; new records take the next offsets.
    assert_eq!(
        ok(&server, &delete("end"), ""),
        "topic readings partition 0: records before offset 5 deleted\n"
    );
    assert_eq!(ok(&server, &format, ""), "");
    ok(&server, &["produce", "--topic", "readings"], "r5\n");
    assert_eq!(ok(&server, &format, ""), "5 r5\n");
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

#[test]
fn a_client_config_file_reaches_every_role_and_a_bad_one_is_named() {
    let server = Server::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("client.properties");
    let properties = format!(
        "# where the cluster is, as kcat -F and --command-config files say it\n\n\
         bootstrap.servers={}\n! a client id\nclient.id = from-file\n",
        server.kafka
    );
    std::fs::write(&path, properties).expect("write the client config");
    let file = path.to_str().expect("a UTF-8 path");
    let with_file = |args: &[&str]| {
        let mut full = args.to_vec();
        full.extend(["--client-config", file, "--timeout-ms", "20000"]);
        let output = run(&full, b"");
        assert!(output.status.success(), "tidewater {full:?}: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    // No --brokers: the file's bootstrap.servers is the cluster, for the client commands and for
    // the roles built on the jobs runtime and the gateway's registry alike.
    assert_eq!(with_file(&["topic", "create", "from-file"]), "created topic from-file\n");
    assert!(with_file(&["topic", "list"]).lines().any(|name| name == "from-file"));
    with_file(&["trigger", "create", "hook", "--topic", "from-file", "--webhook", "http://127.0.0.1:9/"]);
    assert!(with_file(&["trigger", "list"]).lines().any(|line| line.starts_with("hook ")));
    let query = dir.path().join("copy.sql");
    std::fs::write(&query, "SELECT * INTO copied FROM [from-file]\n").expect("write the query");
    let query = query.to_str().expect("a UTF-8 path");
    assert_eq!(
        with_file(&["query", "create", "copy", "--file", query, "--stopped"]),
        "created query job copy\n"
    );
    let args = ["query", "create", "copy", "--file", query, "--client-config", file];
    assert!(fails(run(&args, b""), &args).contains("a query job named \"copy\" exists"));
    with_file(&["device", "add", "pump-1"]);
    assert!(with_file(&["device", "list"]).lines().any(|line| line.starts_with("pump-1 ")));

    // A malformed line is named by file and line, and a secret on it is not repeated.
    std::fs::write(&path, "security.protocol=SASL_SSL\nsasl.password hunter2\n").expect("write");
    let args = ["topic", "list", "--client-config", file];
    let stderr = fails(run(&args, b""), &args);
    assert!(stderr.contains(&format!("error: {file} line 2: expected KEY=VALUE, found no '='")), "{stderr}");
    assert!(!stderr.contains("hunter2"), "{stderr}");
    // So is a property librdkafka does not know, given in the file or with -X.
    std::fs::write(&path, "sasl.pasword=hunter2\n").expect("write");
    let stderr = fails(run(&args, b""), &args);
    assert!(stderr.contains(&format!("error: {file} line 1: sasl.pasword: ")), "{stderr}");
    assert!(!stderr.contains("hunter2"), "{stderr}");
    let args = ["produce", "--topic", "t", "-X", "sasl.pasword=hunter2"];
    let stderr = fails(run(&args, b""), &args);
    assert!(stderr.contains("error: -X: sasl.pasword: "), "{stderr}");
    assert!(!stderr.contains("hunter2"), "{stderr}");
    let args = ["group", "list", "--client-config", "/nonexistent/client.properties"];
    let stderr = fails(run(&args, b""), &args);
    assert!(
        stderr.contains("error: reading the client config file /nonexistent/client.properties: "),
        "{stderr}"
    );
}

/// An admin client of `tidewater_client` on `server`.
fn admin_client(server: &Server) -> AdminClient<QuietContext> {
    ClusterConfig::new(&server.kafka)
        .client_config(&[("client.id", "tidewater-test-admin")])
        .create_with_context(QuietContext::default())
        .expect("an admin client")
}

#[test]
fn ensure_topic_creates_once_and_keeps_the_brokers_message() {
    let server = Server::start();
    let admin = admin_client(&server);
    let timeout = Duration::from_secs(20);
    let topic = NewTopic::new("table", 1, &[("retention.ms", "-1")]);
    admin::ensure_topic(admin.inner(), &topic, timeout).expect("created");
    admin::ensure_topic(admin.inner(), &topic, timeout).expect("already there, which is fine");
    let refused = admin::create_topic(admin.inner(), &topic, timeout).map_err(|error| error.to_string());
    assert_eq!(refused, Err("Broker: Topic already exists: topic table already exists".to_string()));
    let bad = NewTopic::new("bad", 1, &[("retention.ms", "soon")]);
    let refused = admin::ensure_topic(admin.inner(), &bad, timeout).map_err(|error| error.to_string());
    assert_eq!(
        refused,
        Err("Broker: Configuration is invalid: retention.ms: \"soon\" is not a valid number".to_string())
    );
}

/// The ACL requests `tidewater acl` is built on, through `tidewater_client`, against the
/// broker's ACL APIs (which work while authorization is off, so ACLs can be set up first): a
/// binding created is described by a filter that matches it, deleted by another, and gone.
#[test]
fn acls_round_trip_through_the_client_crate() {
    let server = Server::start();
    let admin = admin_client(&server);
    let client = admin.inner();
    let timeout = Duration::from_secs(20);
    let binding = AclBinding {
        resource_type: ResourceType::Group,
        resource_name: "billing-".to_string(),
        pattern_type: PatternType::Prefixed,
        principal: "User:mallory".to_string(),
        host: "10.0.0.7".to_string(),
        operation: AclOperation::Describe,
        permission: AclPermission::Deny,
    };
    let created = admin::create_acls(client, std::slice::from_ref(&binding), timeout).expect("CreateAcls");
    assert!(matches!(created.as_slice(), [Ok(())]), "{created:?}");
    let mallory = AclBindingFilter { principal: Some("User:mallory".to_string()), ..AclBindingFilter::any() };
    let found = admin::describe_acls(client, &mallory, timeout).expect("DescribeAcls");
    assert_eq!(found, std::slice::from_ref(&binding));
    let alice = AclBindingFilter { principal: Some("User:alice".to_string()), ..AclBindingFilter::any() };
    assert_eq!(admin::describe_acls(client, &alice, timeout).expect("DescribeAcls"), []);
    let deleted =
        admin::delete_acls(client, &[alice, AclBindingFilter::from(&binding)], timeout).expect("DeleteAcls");
    assert!(
        matches!(deleted.as_slice(), [Ok(none), Ok(gone)] if none.is_empty() && gone == std::slice::from_ref(&binding)),
        "{deleted:?}"
    );
    assert_eq!(admin::describe_acls(client, &AclBindingFilter::any(), timeout).expect("DescribeAcls"), []);
}

/// The SCRAM requests `tidewater user` is built on: a credential upserted (librdkafka salts and
/// hashes the password, which needs its OpenSSL) is described with its mechanism and iterations,
/// and gone once deleted. A user without credentials is an error of that user alone.
#[test]
fn scram_credentials_round_trip_through_the_client_crate() {
    let server = Server::start();
    let admin = admin_client(&server);
    let client = admin.inner();
    let timeout = Duration::from_secs(20);
    let upsert = ScramAlteration::Upsert {
        user: "alice".to_string(),
        mechanism: ScramMechanism::Sha256,
        iterations: 8192,
        password: "alice-secret".to_string(),
        salt: None,
    };
    let altered =
        admin::alter_user_scram_credentials(client, &[upsert], timeout).expect("AlterUserScramCredentials");
    assert!(
        matches!(altered.as_slice(), [outcome] if outcome.user == "alice" && outcome.outcome.is_ok()),
        "{altered:?}"
    );
    let described = admin::describe_user_scram_credentials(client, &["alice", "bob"], timeout)
        .expect("DescribeUserScramCredentials");
    let shown: Vec<String> = described
        .iter()
        .map(|user| match &user.credentials {
            Ok(credentials) => format!("{}: {credentials:?}", user.user),
            Err(error) => format!("{}: {:?}", user.user, error.code()),
        })
        .collect();
    assert_eq!(
        shown,
        [
            "alice: [ScramCredentialInfo { mechanism: Sha256, iterations: 8192 }]".to_string(),
            "bob: Some(ErrorCode(91))".to_string(), // RESOURCE_NOT_FOUND
        ]
    );
    let delete = ScramAlteration::Delete { user: "alice".to_string(), mechanism: ScramMechanism::Sha256 };
    let altered =
        admin::alter_user_scram_credentials(client, &[delete], timeout).expect("AlterUserScramCredentials");
    assert!(matches!(altered.as_slice(), [outcome] if outcome.outcome.is_ok()), "{altered:?}");
    let described = admin::describe_user_scram_credentials(client, &["alice"], timeout)
        .expect("DescribeUserScramCredentials");
    assert!(matches!(described.as_slice(), [user] if user.credentials.is_err()), "{described:?}");
}

/// `tidewater topic list | head -1` with a reader that is gone before the listing is printed:
/// the command ends, killed by SIGPIPE as `cat` would be, with no panic on stderr (Rust ignores
/// SIGPIPE, so without the default restored `println!` to the closed pipe panicked with a
/// backtrace).
#[test]
fn a_listing_ends_quietly_when_its_reader_is_gone() {
    use std::io::Read;
    use std::os::unix::process::ExitStatusExt;
    use std::process::{Command, Stdio};

    let server = Server::start();
    ok(&server, &["topic", "create", "listed", "--partitions", "1"], "");
    let mut child = support::ChildGuard(
        Command::new(support::BINARY)
            .args(["topic", "list", "--brokers", &server.kafka, "--timeout-ms", "20000"])
            .env_remove("RUST_LOG")
            .env_remove("RUST_BACKTRACE")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tidewater topic list"),
    );
    // The read end closes before the listing can be written.
    drop(child.0.stdout.take());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.0.try_wait().expect("try_wait") {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "topic list still running after its reader left");
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    child.0.stderr.take().expect("stderr piped").read_to_string(&mut stderr).expect("stderr");
    assert_eq!(status.signal(), Some(libc::SIGPIPE), "{status:?}, stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
