//! End-to-end tests of `tidewater group`: the real binary as a child against a real
//! `tidewater serve` child on a loopback port, with a real consumer group member (librdkafka, in
//! this test process) that joins, consumes, commits and leaves. Output is checked field by field
//! so that every printed offset and lag is asserted exactly.

mod support;

use std::sync::mpsc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use support::{closed_address, fails, ok, run, tidewater, Server, COMMAND_TIMEOUT};

const TOPIC: &str = "events";
const PARTITIONS: i32 = 3;
const RECORDS_PER_PARTITION: usize = 10;
const MEMBER_CLIENT_ID: &str = "tidewater-test-member";
/// How long the member may take to join, to receive records and to leave.
const MEMBER_TIMEOUT: Duration = Duration::from_secs(30);

/// A server whose groups assign partitions as soon as a member joins.
fn start_server() -> Server {
    Server::start_with(&["--group-initial-rebalance-delay-ms", "0"])
}

/// Creates `events` with 3 partitions of 10 records each.
fn create_topic(server: &Server) {
    ok(server, &["topic", "create", TOPIC, "--partitions", &PARTITIONS.to_string()], "");
    let lines: String = (0..RECORDS_PER_PARTITION).map(|index| format!("record-{index}\n")).collect();
    for partition in 0..PARTITIONS {
        ok(server, &["produce", "--topic", TOPIC, "--partition", &partition.to_string()], &lines);
    }
}

/// A consumer group member: subscribed to `events`, committing by hand.
struct Member {
    consumer: BaseConsumer,
    /// The highest offset received in each partition (-1 for none).
    seen: [i64; PARTITIONS as usize],
}

impl Member {
    /// Joins `group` and waits until it is assigned all of `events`.
    fn join(server: &Server, group: &str) -> Member {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &server.kafka)
            .set("group.id", group)
            .set("client.id", MEMBER_CLIENT_ID)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "10000")
            .create()
            .expect("create the member's consumer");
        consumer.subscribe(&[TOPIC]).expect("subscribe");
        let mut member = Member { consumer, seen: [-1; PARTITIONS as usize] };
        let deadline = Instant::now() + MEMBER_TIMEOUT;
        while member.consumer.assignment().expect("assignment").count() < PARTITIONS as usize {
            assert!(Instant::now() < deadline, "the member was not assigned every partition in time");
            member.poll();
        }
        member
    }

    /// Waits up to 100 ms for a record and notes its offset.
    fn poll(&mut self) {
        if let Some(message) = self.consumer.poll(Duration::from_millis(100)) {
            let message = message.expect("consume");
            let seen = &mut self.seen[message.partition() as usize];
            *seen = (*seen).max(message.offset());
        }
    }

    /// Reads until it has received the record before each `(partition, offset)`, then commits
    /// those offsets (the next record to read) as a member of the current generation.
    fn consume_and_commit(&mut self, commits: &[(i32, i64)]) {
        let deadline = Instant::now() + MEMBER_TIMEOUT;
        while commits.iter().any(|&(partition, offset)| self.seen[partition as usize] < offset - 1) {
            assert!(
                Instant::now() < deadline,
                "the member did not receive its records in time: {:?}",
                self.seen
            );
            self.poll();
        }
        let mut offsets = TopicPartitionList::new();
        for &(partition, offset) in commits {
            offsets.add_partition_offset(TOPIC, partition, Offset::Offset(offset)).expect("offset");
        }
        self.consumer.commit(&offsets, CommitMode::Sync).expect("commit as a member");
    }

    /// Leaves the group (LeaveGroup, on close), waiting at most [`MEMBER_TIMEOUT`].
    fn leave(self) {
        let (done, left) = mpsc::channel();
        std::thread::spawn(move || {
            drop(self.consumer);
            let _ = done.send(());
        });
        left.recv_timeout(MEMBER_TIMEOUT).expect("the member did not leave in time");
    }
}

/// The rows of the table whose header starts with `first_column`, each split into its fields.
fn table(text: &str, first_column: &str) -> Vec<Vec<String>> {
    let mut lines = text.lines().skip_while(|line| !line.starts_with(first_column));
    assert!(lines.next().is_some(), "no table headed {first_column:?} in:\n{text}");
    lines
        .take_while(|line| !line.is_empty())
        .map(|line| line.split_whitespace().map(str::to_string).collect())
        .collect()
}

/// `group describe`'s partition table: topic, partition, committed, end, lag, member.
fn offsets_table(server: &Server, group: &str) -> Vec<Vec<String>> {
    table(&ok(server, &["group", "describe", group], ""), "TOPIC ")
}

fn row(fields: &[&str]) -> Vec<String> {
    fields.iter().map(|field| field.to_string()).collect()
}

#[test]
fn describe_reset_and_delete_a_group_through_its_life() {
    let server = start_server();
    create_topic(&server);
    let mut member = Member::join(&server, "billing");
    member.consume_and_commit(&[(0, 4), (1, 7)]);

    let listed = table(&format!("HEADER\n{}", ok(&server, &["group", "list"], "")), "HEADER");
    assert_eq!(listed, [row(&["billing", "Stable", "consumer"])]);

    // librdkafka's default assignors are range then roundrobin; the group agrees on range.
    let described = ok(&server, &["group", "describe", "billing"], "");
    assert!(
        described.starts_with("group billing: state Stable, protocol consumer/range, 1 member\n"),
        "{described}"
    );
    let members = table(&described, "MEMBER ");
    assert_eq!(members.len(), 1, "{described}");
    let member_id = members[0][0].clone();
    assert!(member_id.starts_with(MEMBER_CLIENT_ID), "{described}");
    assert_eq!(members[0], row(&[&member_id, MEMBER_CLIENT_ID, "/127.0.0.1", "events:0,1,2"]));
    // Lag is the log end offset minus the committed offset; `-` where nothing is committed.
    let with_member = [
        row(&["events", "0", "4", "10", "6", &member_id]),
        row(&["events", "1", "7", "10", "3", &member_id]),
        row(&["events", "2", "-", "10", "-", &member_id]),
    ];
    assert_eq!(table(&described, "TOPIC "), with_member);

    // While the member is active, nothing may change its group's offsets or delete it.
    let args = ["group", "delete", "billing"];
    let stderr = fails(tidewater(&server, &args, ""), &args);
    assert!(
        stderr.contains(
            "error: group \"billing\" has 1 active member (state Stable); a group can only be deleted \
             once it has no members"
        ),
        "{stderr}"
    );
    let args = ["group", "reset-offsets", "billing", "--topic", TOPIC, "--to-earliest", "--execute"];
    let output = tidewater(&server, &args, "");
    assert_eq!(String::from_utf8_lossy(&output.stdout), "", "no plan is printed for a refused reset");
    let stderr = fails(output, &args);
    assert!(
        stderr.contains(
            "error: group \"billing\" has 1 active member (state Stable); offsets can only be reset \
             while a group has no active members"
        ),
        "{stderr}"
    );
    // A dry run works and says --execute would be refused.
    let args = ["group", "reset-offsets", "billing", "--topic", TOPIC, "--to-earliest"];
    let output = tidewater(&server, &args, "");
    assert!(output.status.success(), "{output:?}");
    assert!(
        String::from_utf8_lossy(&output.stderr)
            .contains("note: group \"billing\" has 1 active member (state Stable); --execute is refused"),
        "{output:?}"
    );
    assert_eq!(offsets_table(&server, "billing"), with_member);

    member.leave();
    let described = ok(&server, &["group", "describe", "billing"], "");
    assert!(
        described.starts_with("group billing: state Empty, protocol consumer, 0 members\n"),
        "{described}"
    );
    assert!(!described.contains("MEMBER "), "{described}");
    // Without members, only the partitions with committed offsets are left to show.
    let committed = [row(&["events", "0", "4", "10", "6", "-"]), row(&["events", "1", "7", "10", "3", "-"])];
    assert_eq!(table(&described, "TOPIC "), committed);

    // --shift-by needs a committed offset in every partition it moves.
    let args = ["group", "reset-offsets", "billing", "--topic", TOPIC, "--shift-by", "-2"];
    let stderr = fails(tidewater(&server, &args, ""), &args);
    assert!(stderr.contains("error: events partition 2: no committed offset to shift"), "{stderr}");
    // A dry run prints the plan and changes nothing.
    let planned = ok(
        &server,
        &["group", "reset-offsets", "billing", "--topic", TOPIC, "--partition", "1", "--shift-by", "-2"],
        "",
    );
    assert_eq!(
        planned,
        "TOPIC   PARTITION  COMMITTED  NEW-OFFSET\n\
         events  1          7          5\n\
         dry run: nothing committed; add --execute to commit these offsets\n"
    );
    assert_eq!(offsets_table(&server, "billing"), committed);

    let reset = ok(
        &server,
        &["group", "reset-offsets", "billing", "--topic", TOPIC, "--to-earliest", "--execute"],
        "",
    );
    assert_eq!(
        reset,
        "TOPIC   PARTITION  COMMITTED  NEW-OFFSET\n\
         events  0          4          0\n\
         events  1          7          0\n\
         events  2          -          0\n\
         committed 3 offsets of group billing\n"
    );
    assert_eq!(
        offsets_table(&server, "billing"),
        [
            row(&["events", "0", "0", "10", "10", "-"]),
            row(&["events", "1", "0", "10", "10", "-"]),
            row(&["events", "2", "0", "10", "10", "-"]),
        ]
    );

    // The other targets: an offset past the end is moved to the end, with a warning.
    let args = [
        "group",
        "reset-offsets",
        "billing",
        "--topic",
        TOPIC,
        "--partition",
        "2",
        "--to-offset",
        "25",
        "--execute",
    ];
    let output = tidewater(&server, &args, "");
    assert!(output.status.success(), "{output:?}");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "TOPIC   PARTITION  COMMITTED  NEW-OFFSET\n\
         events  2          0          10\n\
         committed 1 offset of group billing\n"
    );
    assert!(
        String::from_utf8_lossy(&output.stderr)
            .contains("warning: events partition 2: offset 25 is past the log end offset 10; using that"),
        "{output:?}"
    );
    let plan = |target: &[&str]| {
        let mut args = vec!["group", "reset-offsets", "billing", "--topic", TOPIC];
        args.extend(target);
        let planned = ok(&server, &args, "");
        let table_text = planned
            .strip_suffix("dry run: nothing committed; add --execute to commit these offsets\n")
            .unwrap_or_else(|| panic!("not a dry run: {planned}"));
        table(table_text, "TOPIC ")
    };
    assert_eq!(
        plan(&["--to-latest"]),
        [
            row(&["events", "0", "0", "10"]),
            row(&["events", "1", "0", "10"]),
            row(&["events", "2", "10", "10"])
        ]
    );
    assert_eq!(
        plan(&["--to-datetime", "0"]),
        [row(&["events", "0", "0", "0"]), row(&["events", "1", "0", "0"]), row(&["events", "2", "10", "0"])]
    );
    assert_eq!(plan(&["--shift-by", "3", "--partition", "0"]), [row(&["events", "0", "0", "3"])]);

    assert_eq!(ok(&server, &["group", "delete", "billing"], ""), "deleted group billing\n");
    assert_eq!(ok(&server, &["group", "list"], ""), "");
    let args = ["group", "describe", "billing"];
    let stderr = fails(tidewater(&server, &args, ""), &args);
    assert!(stderr.contains("error: group \"billing\" does not exist"), "{stderr}");
}

#[test]
fn unknown_groups_and_bad_arguments_are_clear_errors() {
    let server = start_server();
    create_topic(&server);
    let check = |args: &[&str], expected: &str| {
        let stderr = fails(tidewater(&server, args, ""), args);
        assert!(stderr.contains(expected), "tidewater {args:?}: no {expected:?} in:\n{stderr}");
    };
    assert_eq!(ok(&server, &["group", "list"], ""), "");
    check(&["group", "describe", "nobody"], "error: group \"nobody\" does not exist");
    check(&["group", "delete", "nobody"], "error: group \"nobody\" does not exist");
    check(&["group", "reset-offsets", "nobody", "--topic", TOPIC], "--to-earliest");
    check(
        &["group", "reset-offsets", "nobody", "--topic", TOPIC, "--to-earliest", "--to-latest"],
        "cannot be used with",
    );
    check(&["group", "reset-offsets", "nobody", "--topic", TOPIC, "--to-offset", "-1"], "--to-offset");
    check(
        &["group", "reset-offsets", "nobody", "--topic", "missing", "--to-earliest"],
        "topic \"missing\" does not exist",
    );
    check(
        &["group", "reset-offsets", "nobody", "--topic", TOPIC, "--partition", "9", "--to-earliest"],
        "topic \"events\" has no partition 9",
    );
    assert_eq!(ok(&server, &["group", "list"], ""), "", "no failed command created a group");

    // Committing offsets for a group nobody has joined creates it, as in Kafka: a way to start
    // a new group at chosen offsets.
    ok(&server, &["group", "reset-offsets", "fresh", "--topic", TOPIC, "--to-offset", "3", "--execute"], "");
    let listed = table(&format!("HEADER\n{}", ok(&server, &["group", "list"], "")), "HEADER");
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0][..2], row(&["fresh", "Empty"]));
    assert_eq!(
        offsets_table(&server, "fresh"),
        [
            row(&["events", "0", "3", "10", "7", "-"]),
            row(&["events", "1", "3", "10", "7", "-"]),
            row(&["events", "2", "3", "10", "7", "-"]),
        ]
    );
}

#[test]
fn an_unreachable_cluster_fails_within_the_timeout() {
    let nowhere = closed_address();
    for args in [&["group", "list"][..], &["group", "describe", "any"], &["group", "delete", "any"]] {
        let mut full = args.to_vec();
        full.extend(["--brokers", &nowhere, "--timeout-ms", "1000"]);
        let started = Instant::now();
        let stderr = fails(run(&full, b""), &full);
        assert!(started.elapsed() < COMMAND_TIMEOUT / 3, "{full:?} took {:?}", started.elapsed());
        assert!(stderr.contains(&format!("the cluster at {nowhere}")), "{full:?}: {stderr}");
    }
}
