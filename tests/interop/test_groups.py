"""Consumer groups (the classic protocol) with real clients, every member a process of its own
(group_member.py for confluent-kafka and kafka-python, kafkajs/group_member.mjs for kafkajs)
that the test can SIGKILL. Members report what they process and which commits the broker
confirmed (see group_member.py), and every test checks what at-least-once promises, per
partition:

- every record produced is processed by some member;
- nothing is processed again once a commit covering it was confirmed: a record is processed
  twice only if the first member to process it never got a commit past it confirmed (it was
  killed, or its commit lost to a rebalance).

Each test runs its own broker with a short initial rebalance delay (SERVE_ARGS) so groups form
quickly; members use 6 s sessions (the broker's minimum) and 1 s heartbeats. Every wait has a
deadline, and every member process still running at the end of a test is SIGKILLed.

Slow tests (`pytest.mark.slow`, deselect with `-m "not slow"`): the SIGKILL takeovers (about
10 s each: they wait out a session timeout) and the rebalance storm (about a minute). The whole
file takes about 100 s.
"""

from __future__ import annotations

import collections
import functools
import json
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest
from confluent_kafka import ConsumerGroupState, ConsumerGroupTopicPartitions, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

import confluent_support as ck
from support import CLIENT_TIMEOUT_S, INTEROP_DIR, KAFKAJS_DIR, cli_describe

# A new group waits this long for more members before its first assignment (Kafka's default is
# 3 s, which would only slow every test down).
INITIAL_REBALANCE_DELAY_MS = 500
SERVE_ARGS = ("--group-initial-rebalance-delay-ms", str(INITIAL_REBALANCE_DELAY_MS))
SESSION_TIMEOUT_MS = 6000
HEARTBEAT_INTERVAL_MS = 1000
# Also the rebalance timeout: how long a join phase waits for a member that has not rejoined.
MAX_POLL_INTERVAL_MS = 10000
# How long a group may take to settle into a stable assignment: joins, the initial delay, and
# perhaps a second rebalance when a member joined late.
SETTLE_TIMEOUT_S = 30.0
# How long members may take to process everything produced so far.
DRAIN_TIMEOUT_S = 45.0
# How long a member may take to exit after SIGTERM (it leaves the group) before it is killed.
CLOSE_TIMEOUT_S = 15.0
# Lines of a member's stderr kept for failure messages.
STDERR_LINES_KEPT = 40

GROUP_MEMBER_PY = INTEROP_DIR / "group_member.py"
GROUP_MEMBER_JS = KAFKAJS_DIR / "group_member.mjs"


def poll_until(condition: Callable[[], Any], timeout_s: float, what: str, interval_s: float = 0.1) -> Any:
    """Polls `condition` until it returns something truthy, and returns that; fails after
    `timeout_s`. (support.wait_until polls every 50 ms, too often for DescribeGroups.)"""
    deadline = time.monotonic() + timeout_s
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(interval_s)


# --- Members --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Processed:
    """One record as a member processed it."""

    member: str
    partition: int
    offset: int
    value: str
    t: float


class Member:
    """One group member program and everything it reported."""

    def __init__(self, name: str, client: str, bootstrap: str, topic: str, group: str, **options: Any):
        self.name = name
        self.client = client
        if client == "kafkajs":
            node = shutil.which("node")
            assert node, "node is not installed; scripts/test needs Node.js for the kafkajs tests"
            process_ms = options.pop("process_ms", 0)
            assert not options, f"kafkajs members take only process_ms: {options}"
            command = [
                node,
                str(GROUP_MEMBER_JS),
                bootstrap,
                topic,
                group,
                str(SESSION_TIMEOUT_MS),
                str(HEARTBEAT_INTERVAL_MS),
                str(MAX_POLL_INTERVAL_MS),
                str(process_ms),
            ]
            cwd: Path = KAFKAJS_DIR
        else:
            command = [
                sys.executable,
                str(GROUP_MEMBER_PY),
                client,
                bootstrap,
                topic,
                group,
                "--session-timeout-ms",
                str(SESSION_TIMEOUT_MS),
                "--heartbeat-interval-ms",
                str(HEARTBEAT_INTERVAL_MS),
                "--max-poll-interval-ms",
                str(MAX_POLL_INTERVAL_MS),
            ]
            for key, value in options.items():
                command += [f"--{key.replace('_', '-')}", str(value)]
            cwd = INTEROP_DIR
        self.command = command
        self.events: list[dict] = []
        self.stderr: collections.deque[str] = collections.deque(maxlen=STDERR_LINES_KEPT)
        self._lock = threading.Lock()
        self.process = subprocess.Popen(
            command, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        self._readers = [
            threading.Thread(target=self._read_stdout, name=f"{name}-stdout", daemon=True),
            threading.Thread(target=self._read_stderr, name=f"{name}-stderr", daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _read_stdout(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            line = raw.decode("utf-8", errors="replace").strip()
            if not line:
                continue
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                event = {"ev": "garbage", "line": line}
            with self._lock:
                self.events.append(event)

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        for raw in self.process.stderr:
            self.stderr.append(raw.decode("utf-8", errors="replace").rstrip("\n"))

    def alive(self) -> bool:
        return self.process.poll() is None

    def snapshot(self, kind: str | None = None) -> list[dict]:
        with self._lock:
            return [event for event in self.events if kind is None or event["ev"] == kind]

    def processed(self) -> list[Processed]:
        return [
            Processed(self.name, event["partition"], offset, value, event["t"])
            for event in self.snapshot("records")
            for offset, value in zip(event["offsets"], event["values"], strict=True)
        ]

    def commits(self) -> list[tuple[float, int, int]]:
        """Confirmed commits: (time, partition, next offset)."""
        return [
            (event["t"], int(partition), offset)
            for event in self.snapshot("committed")
            for partition, offset in event["offsets"].items()
        ]

    def last_commits(self) -> dict[int, int]:
        last: dict[int, int] = {}
        for _, partition, offset in self.commits():
            last[partition] = offset
        return last

    def assignment(self) -> tuple[str | None, list[int], float] | None:
        """(member id, partitions, time) of the member's latest rebalance callback, or None
        before the first. A revocation (eager protocol: everything) leaves it with nothing."""
        for event in reversed(self.snapshot()):
            if event["ev"] == "assigned":
                return event["member_id"], event["partitions"], event["t"]
            if event["ev"] in ("revoked", "lost"):
                return None, [], event["t"]
        return None

    def kill(self) -> None:
        """SIGKILL: no LeaveGroup, no last commit; the broker learns only from the silence."""
        if self.alive():
            self.process.kill()
        self._wait_and_drain(CLOSE_TIMEOUT_S)

    def close(self) -> None:
        """SIGTERM: the member closes its consumer (leaving the group) and exits; killed if it
        does not within CLOSE_TIMEOUT_S."""
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=CLOSE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self._wait_and_drain(CLOSE_TIMEOUT_S)

    def _wait_and_drain(self, timeout_s: float) -> None:
        self.process.wait(timeout=timeout_s)
        # Everything written before the exit is in the pipe; let the readers take it in.
        for reader in self._readers:
            reader.join(timeout=timeout_s)

    def describe(self) -> str:
        status = "running" if self.alive() else f"exited {self.process.returncode}"
        counts = collections.Counter(event["ev"] for event in self.snapshot())
        stderr = "\n    ".join(self.stderr)
        return (
            f"{self.name} (pid {self.process.pid}, {status}): events {dict(counts)}, "
            f"assignment {self.assignment()}\n  stderr tail:\n    {stderr}"
        )


class Members:
    """The members a test started; whatever still runs at the end is killed."""

    def __init__(self) -> None:
        self.all: list[Member] = []
        # Run before the members are killed: stop whatever could start or feed more of them.
        self.cleanups: list[Callable[[], None]] = []

    def start(self, name: str, client: str, bootstrap: str, topic: str, group: str, **options: Any) -> Member:
        member = Member(name, client, bootstrap, topic, group, **options)
        self.all.append(member)
        return member

    def describe(self, members: list[Member] | None = None) -> str:
        return "\n".join(member.describe() for member in (members if members is not None else self.all))

    def kill_all(self) -> None:
        for cleanup in self.cleanups:
            cleanup()
        for member in self.all:
            if member.alive():
                member.process.kill()
        for member in self.all:
            try:
                member.process.wait(timeout=CLOSE_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                pass


@pytest.fixture
def members():
    started = Members()
    try:
        yield started
    finally:
        started.kill_all()
        # Drop the test's AdminClients while its broker still runs.
        admin.cache_clear()


# --- Producing ------------------------------------------------------------------------------------


class RecordStream:
    """Produces records with values "PARTITION:SEQUENCE" round-robin over the partitions, from
    the test process (confluent-kafka), and keeps what each delivery report said."""

    def __init__(self, bootstrap: str, topic: str, n_partitions: int, pool: Members):
        self.topic = topic
        self.n_partitions = n_partitions
        self.producer: Producer = ck.producer(bootstrap, acks="all", **{"linger.ms": 2})
        self.delivered: dict[int, dict[int, str]] = {partition: {} for partition in range(n_partitions)}
        self.errors: list[str] = []
        self.n_sent = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        pool.cleanups.append(self._stop.set)

    def send(self, count: int, partitions: list[int] | None = None) -> None:
        targets = partitions if partitions is not None else list(range(self.n_partitions))
        for _ in range(count):
            with self._lock:
                index = self.n_sent
                self.n_sent += 1
            partition = targets[index % len(targets)]
            value = f"{partition}:{index}"

            def on_delivery(error, message, value=value):
                with self._lock:
                    if error is not None:
                        self.errors.append(f"{value}: {error}")
                    else:
                        self.delivered[message.partition()][message.offset()] = value

            self.producer.produce(self.topic, value=value.encode(), partition=partition, on_delivery=on_delivery)
            self.producer.poll(0)

    def start_background(self, records_per_s: int) -> None:
        """Keeps producing at about `records_per_s` until `stop_background`."""

        def produce_steadily() -> None:
            chunk = max(1, records_per_s // 20)
            while not self._stop.wait(chunk / records_per_s):
                self.send(chunk)

        self._thread = threading.Thread(target=produce_steadily, name="record-stream", daemon=True)
        self._thread.start()

    def stop_background(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=CLIENT_TIMEOUT_S)
            assert not self._thread.is_alive(), "the producing thread did not stop"

    def flush(self) -> dict[int, dict[int, str]]:
        """Waits for every delivery report; returns partition -> offset -> value."""
        remaining = self.producer.flush(CLIENT_TIMEOUT_S)
        assert remaining == 0, f"{remaining} records undelivered after {CLIENT_TIMEOUT_S}s"
        with self._lock:
            assert not self.errors, f"delivery failed: {self.errors[:5]}"
            total = sum(len(offsets) for offsets in self.delivered.values())
            assert total == self.n_sent, f"{total} delivery reports for {self.n_sent} records"
            return {partition: dict(offsets) for partition, offsets in self.delivered.items()}

    def end_offsets(self) -> dict[int, int]:
        delivered = self.flush()
        return {partition: len(offsets) for partition, offsets in delivered.items()}


# --- Checks ---------------------------------------------------------------------------------------


def all_processed(members: list[Member]) -> list[Processed]:
    return [record for member in members for record in member.processed()]


def missing_records(delivered: dict[int, dict[int, str]], members: list[Member]) -> dict[int, list[int]]:
    """Per partition, the delivered offsets no member processed (yet)."""
    seen: dict[int, set[int]] = collections.defaultdict(set)
    for record in all_processed(members):
        seen[record.partition].add(record.offset)
    return {
        partition: sorted(set(offsets) - seen[partition])
        for partition, offsets in delivered.items()
        if set(offsets) - seen[partition]
    }


def wait_all_processed(delivered: dict[int, dict[int, str]], members: list[Member], pool: Members) -> None:
    try:
        poll_until(lambda: not missing_records(delivered, members), DRAIN_TIMEOUT_S, "every record processed")
    except AssertionError:
        missing = missing_records(delivered, members)
        summary = {partition: f"{len(offsets)} from {offsets[0]}" for partition, offsets in missing.items()}
        raise AssertionError(f"records never processed: {summary}\n{pool.describe()}") from None


def assert_every_record_processed(delivered: dict[int, dict[int, str]], members: list[Member]) -> None:
    """Per partition, the processed offsets are exactly the delivered ones, with their values."""
    for record in all_processed(members):
        expected = delivered.get(record.partition, {}).get(record.offset)
        assert expected == record.value, (
            f"{record.member} processed {record.partition}/{record.offset} = {record.value!r}; "
            f"the producer was told {expected!r}"
        )
    assert not missing_records(delivered, members)


def duplicates(members: list[Member]) -> dict[tuple[int, int], list[Processed]]:
    """(partition, offset) -> every processing of it, for those processed more than once."""
    by_record: dict[tuple[int, int], list[Processed]] = collections.defaultdict(list)
    for record in all_processed(members):
        by_record[(record.partition, record.offset)].append(record)
    return {
        key: sorted(processings, key=lambda record: record.t)
        for key, processings in by_record.items()
        if len(processings) > 1
    }


def assert_nothing_committed_was_redelivered(members: list[Member]) -> None:
    """No member processes a record after a commit past it was confirmed (to anyone).

    A commit is confirmed only while its member's generation is current, and the next owner of
    the partition reads the committed offset after that generation ended; so once a commit of
    offset C on partition P was confirmed, every later processing on P is at C or beyond."""
    commits = sorted(commit for member in members for commit in member.commits())
    processings = sorted(all_processed(members), key=lambda record: record.t)
    committed: dict[int, tuple[int, float]] = {}
    commit_index = 0
    for record in processings:
        while commit_index < len(commits) and commits[commit_index][0] < record.t:
            t, partition, offset = commits[commit_index]
            if offset > committed.get(partition, (-1, 0.0))[0]:
                committed[partition] = (offset, t)
            commit_index += 1
        floor, at = committed.get(record.partition, (-1, 0.0))
        assert record.offset >= floor, (
            f"{record.member} processed {record.partition}/{record.offset} at {record.t:.3f}, "
            f"after a commit of offset {floor} was confirmed at {at:.3f}"
        )


def assert_running(members: list[Member], pool: Members) -> None:
    """The members still run and none reported a consumer error (a crashed kafkajs consumer
    stops consuming for good, and its process exits)."""
    broken = [member for member in members if not member.alive() or member.snapshot("consumer_error")]
    assert not broken, f"members stopped or reported errors:\n{pool.describe(broken)}"


def current_assignments(members: list[Member]) -> dict[str, tuple[str | None, list[int]]]:
    result = {}
    for member in members:
        assignment = member.assignment()
        result[member.name] = (assignment[0], assignment[1]) if assignment else (None, [])
    return result


def is_exact_cover(assignments: list[list[int]], n_partitions: int) -> bool:
    flat = [partition for partitions in assignments for partition in partitions]
    return sorted(flat) == list(range(n_partitions))


@functools.cache
def admin(bootstrap: str) -> AdminClient:
    """One AdminClient per broker address, kept: the tests poll DescribeGroups. Dropped when
    the broker restarts (see `restart_broker`)."""
    return AdminClient({"bootstrap.servers": bootstrap, "client.id": "interop-groups-admin"})


def restart_broker(broker) -> None:
    """Restarts the broker (same port and data directory) and drops the AdminClients.

    librdkafka 2.16 re-bootstraps once every broker it knows is down, decommissioning them; a
    decommissioned broker can stay cached as the group coordinator, and a coordinator request
    (OffsetFetch from list_consumer_group_offsets) then waits for it until it times out
    (confluentinc/librdkafka#5511). Seen here as a 60 s timeout after the second restart, with
    the request queued on a broker handle stuck "terminating in state TRY_CONNECT". A fresh
    client after each restart avoids it."""
    broker.restart()
    admin.cache_clear()


def describe_group(bootstrap: str, group: str):
    futures = admin(bootstrap).describe_consumer_groups([group], request_timeout=CLIENT_TIMEOUT_S)
    return futures[group].result(timeout=CLIENT_TIMEOUT_S)


def described_assignments(description, topic: str) -> dict[str, list[int]]:
    """member id -> partitions of `topic`, as DescribeGroups reports them."""
    result = {}
    for member in description.members:
        partitions = member.assignment.topic_partitions if member.assignment else []
        assert all(tp.topic == topic for tp in partitions), partitions
        result[member.member_id] = sorted(tp.partition for tp in partitions)
    return result


def wait_stable(bootstrap: str, topic: str, group: str, members: list[Member], n_partitions: int,
                pool: Members, timeout_s: float = SETTLE_TIMEOUT_S, *,
                each: int | None = None) -> dict[str, list[int]]:
    """Waits until the group is Stable with exactly `members` in it, each member's own latest
    assignment is what DescribeGroups shows for its member id, and together they cover every
    partition exactly once (each member holding `each` partitions when given). Returns member
    name -> partitions."""

    def settled():
        own = current_assignments(members)
        if any(member_id is None for member_id, _ in own.values()):
            return None
        if not is_exact_cover([partitions for _, partitions in own.values()], n_partitions):
            return None
        if each is not None and any(len(partitions) != each for _, partitions in own.values()):
            return None
        description = describe_group(bootstrap, group)
        if description.state != ConsumerGroupState.STABLE:
            return None
        described = described_assignments(description, topic)
        if described != {member_id: partitions for member_id, partitions in own.values()}:
            return None
        return {name: partitions for name, (_, partitions) in own.items()}

    try:
        return poll_until(settled, timeout_s, f"group {group} to settle")
    except AssertionError:
        try:
            description = describe_group(bootstrap, group)
            described = (description.state, described_assignments(description, topic))
        except Exception as error:  # noqa: BLE001 - only for the failure message
            described = repr(error)
        raise AssertionError(
            f"group {group} did not settle in {timeout_s}s\nDescribeGroups: {described}\n"
            f"members' own: {current_assignments(members)}\n{pool.describe(members)}"
        ) from None


def committed_offsets(bootstrap: str, group: str, topic: str, n_partitions: int) -> dict[int, int]:
    """The group's committed offsets as AdminClient.list_consumer_group_offsets (OffsetFetch)
    reports them; -1001 (librdkafka's OFFSET_INVALID) where nothing was committed."""
    request = ConsumerGroupTopicPartitions(group, [TopicPartition(topic, p) for p in range(n_partitions)])
    result = admin(bootstrap).list_consumer_group_offsets([request], request_timeout=CLIENT_TIMEOUT_S)[group].result(
        timeout=CLIENT_TIMEOUT_S
    )
    assert result.group_id == group
    offsets = {}
    for tp in result.topic_partitions:
        assert tp.error is None, f"{tp.topic}/{tp.partition}: {tp.error}"
        offsets[tp.partition] = tp.offset
    return offsets


def start_group(pool: Members, client: str, bootstrap: str, topic: str, group: str, n_members: int,
                prefix: str | None = None, **options: Any) -> list[Member]:
    return [
        pool.start(f"{prefix or client}-{index}", client, bootstrap, topic, group, **options)
        for index in range(n_members)
    ]


# --- Tests ----------------------------------------------------------------------------------------

N_TAKEOVER_PARTITIONS = 6


@pytest.mark.slow
@pytest.mark.parametrize("client", ["confluent", "kafka-python", "kafkajs"])
def test_survivors_take_over_a_killed_members_partitions_and_lose_nothing(
    broker_factory, topic_name, members, client
):
    """slow (about 10 s: waits out a session timeout). Three members of one group share six
    partitions while records stream in; one is SIGKILLed mid-stream, between processing a batch
    and committing it. After its session times out the two survivors split all six partitions
    and process again what the victim processed without committing; every record is processed,
    and the only duplicates are of records processed before the takeover and never committed."""
    broker = broker_factory(*SERVE_ARGS)
    bootstrap = broker.bootstrap
    ck.create_topic(bootstrap, topic_name, N_TAKEOVER_PARTITIONS)
    group = f"{topic_name}-group"
    # Each batch takes 200 ms of "work" between being processed (reported) and committed: the
    # window the kill aims at.
    trio = start_group(members, client, bootstrap, topic_name, group, 3, process_ms=200)
    before = wait_stable(bootstrap, topic_name, group, trio, N_TAKEOVER_PARTITIONS, members, each=2)

    stream = RecordStream(bootstrap, topic_name, N_TAKEOVER_PARTITIONS, members)
    stream.start_background(records_per_s=150)
    victim, survivors = trio[0], trio[1:]
    poll_until(
        lambda: len(victim.processed()) >= 30 and victim.snapshot()[-1]["ev"] == "records",
        DRAIN_TIMEOUT_S,
        f"{victim.name} to be working on a batch it has not committed",
        interval_s=0.005,
    )
    killed_at = time.time()
    victim.kill()
    orphaned = before[victim.name]
    victim_commits = victim.last_commits()
    uncommitted = {
        (r.partition, r.offset) for r in victim.processed() if r.offset >= victim_commits.get(r.partition, 0)
    }
    assert uncommitted, f"the kill missed the window between processing and committing\n{victim.describe()}"

    after = wait_stable(
        bootstrap, topic_name, group, survivors, N_TAKEOVER_PARTITIONS, members,
        timeout_s=SESSION_TIMEOUT_MS / 1000 + SETTLE_TIMEOUT_S,
    )
    taken_over_at = max(member.assignment()[2] for member in survivors)
    # Keep records coming a little after the takeover, then let the survivors catch up.
    time.sleep(1.0)
    stream.stop_background()
    delivered = stream.flush()
    wait_all_processed(delivered, trio, members)

    # The broker noticed the death through the session timeout (no LeaveGroup came): not before
    # the victim's last heartbeat plus the session, not much after.
    waited_s = taken_over_at - killed_at
    assert (SESSION_TIMEOUT_MS - HEARTBEAT_INTERVAL_MS) / 1000 - 0.5 <= waited_s <= SESSION_TIMEOUT_MS / 1000 + 10, (
        f"survivors got the orphaned partitions {waited_s:.1f}s after the kill"
    )
    assert sorted(after[survivors[0].name] + after[survivors[1].name]) == list(range(N_TAKEOVER_PARTITIONS))
    assert_running(survivors, members)
    assert_every_record_processed(delivered, trio)
    assert_nothing_committed_was_redelivered(trio)
    # What the victim processed and never committed, a survivor processed again.
    survivors_did = {(r.partition, r.offset) for r in all_processed(survivors)}
    assert uncommitted <= survivors_did, sorted(uncommitted - survivors_did)[:10]
    assert {partition for partition, _ in uncommitted} <= set(orphaned)
    twice = duplicates(trio)
    for (partition, offset), processings in twice.items():
        assert processings[0].t <= taken_over_at, (
            f"{partition}/{offset} was processed twice, first at {processings[0].t:.3f}, after the "
            f"takeover at {taken_over_at:.3f}: {processings}"
        )
    print(
        f"{client}: takeover {waited_s:.1f}s after the kill, {sum(map(len, delivered.values()))} records, "
        f"{len(uncommitted)} processed by the victim and not committed, {len(twice)} processed twice, "
        f"{sum(len(member.snapshot('commit_failed')) for member in trio)} commits refused"
    )
    assert sum(len(offsets) for offsets in delivered.values()) > 600, "too few records to show anything"


def test_two_groups_on_one_topic_each_receive_every_record(broker_factory, topic_name, members):
    """Three groups (two confluent-kafka members, two kafka-python members, one kafkajs member)
    on one topic: each processes every record exactly once, and each keeps its own committed
    offsets, at the end of every partition."""
    n_partitions = 4
    broker = broker_factory(*SERVE_ARGS)
    bootstrap = broker.bootstrap
    ck.create_topic(bootstrap, topic_name, n_partitions)
    groups = {
        f"{topic_name}-confluent": start_group(members, "confluent", bootstrap, topic_name, f"{topic_name}-confluent", 2),
        f"{topic_name}-kafka-python": start_group(
            members, "kafka-python", bootstrap, topic_name, f"{topic_name}-kafka-python", 2, assignor="roundrobin"
        ),
        f"{topic_name}-kafkajs": start_group(members, "kafkajs", bootstrap, topic_name, f"{topic_name}-kafkajs", 1),
    }
    for group, group_members in groups.items():
        wait_stable(bootstrap, topic_name, group, group_members, n_partitions, members)

    stream = RecordStream(bootstrap, topic_name, n_partitions, members)
    stream.send(400)
    delivered = stream.flush()
    for group, group_members in groups.items():
        wait_all_processed(delivered, group_members, members)
        assert_every_record_processed(delivered, group_members)
        assert not duplicates(group_members), f"{group} processed records twice: {list(duplicates(group_members))[:5]}"
    assert_running([member for group_members in groups.values() for member in group_members], members)
    ends = {partition: len(offsets) for partition, offsets in delivered.items()}
    for group, group_members in groups.items():
        poll_until(
            lambda group_members=group_members: all(
                max((offset for member in group_members for t, p, offset in member.commits() if p == partition), default=0)
                == end
                for partition, end in ends.items()
            ),
            DRAIN_TIMEOUT_S,
            f"{group}'s commits to reach the end",
        )
        assert committed_offsets(bootstrap, group, topic_name, n_partitions) == ends, group


def test_a_group_resumes_from_its_committed_offsets_after_broker_restarts(broker_factory, topic_name, members):
    """A member (confluent-kafka) processes 150 records but gets commits confirmed only for
    about the first 90, and is SIGKILLed. The broker restarts: the committed offsets are what the
    member was told, before and after. A new member (kafka-python) in the same group starts at
    exactly those offsets, so it processes again exactly what was never committed. It then stays
    in the group through a second broker restart and processes what comes after, without
    processing anything committed again. (The group itself is durable too: after the first
    restart the killed member is still in it until its session, started at load time, expires.)"""
    n_partitions = 3
    broker = broker_factory(*SERVE_ARGS)
    bootstrap = broker.bootstrap
    ck.create_topic(bootstrap, topic_name, n_partitions)
    group = f"{topic_name}-group"
    stream = RecordStream(bootstrap, topic_name, n_partitions, members)

    stream.send(90)
    first = members.start("confluent-first", "confluent", bootstrap, topic_name, group, commit_records_max=90)
    wait_stable(bootstrap, topic_name, group, [first], n_partitions, members)
    wait_all_processed(stream.flush(), [first], members)
    stream.send(60)
    wait_all_processed(stream.flush(), [first], members)
    first.kill()
    told = first.last_commits()
    assert sum(told.values()) >= 30, f"too few commits to show anything: {told}"
    assert sum(told.values()) <= 90, f"committed past the limit: {told}"
    committed = {partition: told.get(partition, -1001) for partition in range(n_partitions)}
    assert committed_offsets(bootstrap, group, topic_name, n_partitions) == committed

    restart_broker(broker)
    assert committed_offsets(bootstrap, group, topic_name, n_partitions) == committed, "after the restart"
    second = members.start("kafka-python-second", "kafka-python", bootstrap, topic_name, group)
    wait_stable(bootstrap, topic_name, group, [second], n_partitions, members)
    ends = stream.end_offsets()

    def resumed() -> dict[int, list[int]]:
        return {
            partition: sorted(r.offset for r in second.processed() if r.partition == partition)
            for partition in range(n_partitions)
        }

    expected = {partition: list(range(max(committed[partition], 0), ends[partition])) for partition in range(n_partitions)}
    try:
        poll_until(lambda: resumed() == expected, DRAIN_TIMEOUT_S, "the new member to process what was not committed")
    except AssertionError:
        raise AssertionError(
            f"committed {committed}, ends {ends}; the new member processed {resumed()}\n{members.describe()}"
        ) from None

    # A member alive across a broker restart carries on in the (durable) group.
    stream.send(60)
    wait_all_processed(stream.flush(), [first, second], members)
    restart_broker(broker)
    stream.send(60)
    delivered = stream.flush()
    wait_all_processed(delivered, [first, second], members)
    assert_running([second], members)
    assert_every_record_processed(delivered, [first, second])
    assert_nothing_committed_was_redelivered([first, second])
    # The group is durable, so its commits after the restart are accepted at its generation;
    # whatever happens, nothing committed is processed again (test_group_restart.py checks
    # that no commit is refused and nothing is read twice).
    refused = [event["error"] for event in second.snapshot("commit_failed")]
    print(f"restart: {len(duplicates([second]))} records processed twice by the member that lived through it; "
          f"commits refused: {refused}")
    ends = {partition: len(offsets) for partition, offsets in delivered.items()}
    poll_until(lambda: second.last_commits() == ends, DRAIN_TIMEOUT_S, "the last commits")
    assert committed_offsets(bootstrap, group, topic_name, n_partitions) == ends


@pytest.mark.parametrize("assignor,first_client", [("range", "confluent"), ("roundrobin", "kafka-python")])
def test_librdkafka_and_kafka_python_share_a_group(broker_factory, topic_name, members, assignor, first_client):
    """Two confluent-kafka (librdkafka) and two kafka-python members in one group, all with the
    same assignor. The first two to join are of `first_client`, so one of them stays the leader
    and computes the assignment the other client decodes (kafka-python members say whether they
    led). Every partition goes to exactly one member (as they report it and as DescribeGroups
    shows it), and each record is processed once, by the member its partition is assigned to."""
    n_partitions = 6
    broker = broker_factory(*SERVE_ARGS)
    bootstrap = broker.bootstrap
    ck.create_topic(bootstrap, topic_name, n_partitions)
    group = f"{topic_name}-group"
    second_client = "kafka-python" if first_client == "confluent" else "confluent"
    first = start_group(members, first_client, bootstrap, topic_name, group, 2, assignor=assignor)
    wait_stable(bootstrap, topic_name, group, first, n_partitions, members, each=3)
    second = start_group(members, second_client, bootstrap, topic_name, group, 2, assignor=assignor)
    everyone = first + second
    assignments = wait_stable(bootstrap, topic_name, group, everyone, n_partitions, members)
    assert sorted(len(partitions) for partitions in assignments.values()) == [1, 1, 2, 2], assignments
    description = describe_group(bootstrap, group)
    assert description.partition_assignor == assignor
    assert len(description.members) == 4
    kafka_python_leaders = [
        member.name for member in everyone
        if member.client == "kafka-python" and member.snapshot("assigned")[-1]["leader"]
    ]
    assert len(kafka_python_leaders) == (1 if first_client == "kafka-python" else 0), kafka_python_leaders

    stream = RecordStream(bootstrap, topic_name, n_partitions, members)
    stream.send(300)
    delivered = stream.flush()
    wait_all_processed(delivered, everyone, members)
    assert_running(everyone, members)
    assert_every_record_processed(delivered, everyone)
    assert not duplicates(everyone), f"processed twice: {list(duplicates(everyone))[:5]}"
    for member in everyone:
        seen = {record.partition for record in member.processed()}
        assert seen == set(assignments[member.name]), f"{member.name} processed {seen}, assigned {assignments[member.name]}"


N_STORM_MEMBERS = 10
N_STORM_PARTITIONS = 12
STORM_S = 45.0
# Members only leave cleanly before this point of the storm, so rebalances complete and members
# come and go in every phase of them; after it, 40% of them are SIGKILLed (each dead member then
# holds up every join phase until its session expires, as in Kafka).
STORM_KILLS_AFTER_S = 20.0


@pytest.mark.slow
def test_a_group_settles_after_a_rebalance_storm(broker_factory, topic_name, members):
    """slow (about a minute). Ten member slots (seven confluent-kafka, three kafka-python, range
    assignor) start members that consume for 1-5 s and then close (LeaveGroup) or, later in the
    storm, are SIGKILLed, and start again, for STORM_S while records stream in. Then every slot
    keeps one member: the group becomes Stable with exactly those ten, each partition assigned
    to exactly one of them (their own reports and DescribeGroups agree), and every record was
    processed, none after a commit past it was confirmed."""
    broker = broker_factory(*SERVE_ARGS)
    bootstrap = broker.bootstrap
    ck.create_topic(bootstrap, topic_name, N_STORM_PARTITIONS)
    group = f"{topic_name}-group"
    stream = RecordStream(bootstrap, topic_name, N_STORM_PARTITIONS, members)
    stream.start_background(records_per_s=100)
    storm_starts = time.monotonic()
    storm_ends = storm_starts + STORM_S
    finals: dict[int, Member] = {}
    failures: list[str] = []
    kills = collections.Counter()
    # Set when the test ends early, so no slot starts members after the teardown killed them.
    abandoned = threading.Event()
    members.cleanups.append(abandoned.set)

    def run_slot(slot: int) -> None:
        rng = random.Random(slot)
        client = "confluent" if slot < 7 else "kafka-python"
        generation = 0
        try:
            while not abandoned.is_set():
                member = members.start(
                    f"slot{slot}-{generation}-{client}", client, bootstrap, topic_name, group, process_ms=50
                )
                generation += 1
                life_s = rng.uniform(1.0, 5.0)
                if time.monotonic() + life_s >= storm_ends:
                    finals[slot] = member
                    return
                time.sleep(life_s)
                if time.monotonic() - storm_starts > STORM_KILLS_AFTER_S and rng.random() < 0.4:
                    member.kill()
                    kills["killed"] += 1
                else:
                    member.close()
                    kills["closed"] += 1
                time.sleep(rng.uniform(0.0, 1.0))
        except Exception as error:  # noqa: BLE001 - reported by the test thread
            failures.append(f"slot {slot}: {error!r}")

    slots = [
        threading.Thread(target=run_slot, args=(slot,), name=f"slot-{slot}", daemon=True)
        for slot in range(N_STORM_MEMBERS)
    ]
    for thread in slots:
        thread.start()
    for thread in slots:
        thread.join(timeout=STORM_S + 30)
    assert not any(thread.is_alive() for thread in slots), "a member slot did not finish"
    assert not failures, failures
    assert len(finals) == N_STORM_MEMBERS
    assert kills["killed"] >= 5 and kills["closed"] >= 5, kills
    stream.stop_background()
    storm_over_at = time.time()

    survivors = list(finals.values())
    assert all(member.alive() for member in survivors), members.describe(survivors)
    assignments = wait_stable(
        bootstrap, topic_name, group, survivors, N_STORM_PARTITIONS, members,
        timeout_s=SESSION_TIMEOUT_MS / 1000 + MAX_POLL_INTERVAL_MS / 1000 + SETTLE_TIMEOUT_S,
    )
    assert sorted(len(partitions) for partitions in assignments.values()) == [1] * 8 + [2] * 2, assignments
    description = describe_group(bootstrap, group)
    assert description.state == ConsumerGroupState.STABLE
    assert len(description.members) == N_STORM_MEMBERS

    delivered = stream.flush()
    wait_all_processed(delivered, members.all, members)
    assert_running(survivors, members)
    assert_every_record_processed(delivered, members.all)
    assert_nothing_committed_was_redelivered(members.all)
    during = [record for record in all_processed(members.all) if record.t < storm_over_at]
    n_assignments = sum(len(member.snapshot("assigned")) for member in members.all)
    print(
        f"storm: {len(members.all)} members started, {dict(kills)}, {n_assignments} assignments handed out, "
        f"{sum(map(len, delivered.values()))} records ({len(during)} processed during the storm), "
        f"{len(duplicates(members.all))} processed twice"
    )


def test_lag_is_the_end_offset_minus_the_committed_offset(broker_factory, topic_name, members):
    """Lag per partition (high watermark minus committed offset) as three tools see it, against
    what was produced and committed: confluent-kafka's committed() and watermarks, the
    AdminClient's list_consumer_group_offsets, and `tidewater group describe`. First with
    offsets committed by hand (one partition without any), then while a member that caught up
    is in the group, then after more records arrived with nobody consuming."""
    n_partitions = 3
    broker = broker_factory(*SERVE_ARGS)
    bootstrap = broker.bootstrap
    ck.create_topic(bootstrap, topic_name, n_partitions)
    group = f"{topic_name}-group"
    stream = RecordStream(bootstrap, topic_name, n_partitions, members)
    stream.send(30, partitions=[0])
    stream.send(20, partitions=[1])
    stream.send(10, partitions=[2])
    stream.flush()

    def lag_from_clients() -> dict[int, int | None]:
        consumer = ck.consumer(bootstrap, **{"group.id": group})
        try:
            committed = consumer.committed(
                [TopicPartition(topic_name, partition) for partition in range(n_partitions)], timeout=CLIENT_TIMEOUT_S
            )
            lag = {}
            for tp in committed:
                assert tp.error is None, tp.error
                _, high = consumer.get_watermark_offsets(TopicPartition(topic_name, tp.partition), timeout=CLIENT_TIMEOUT_S)
                lag[tp.partition] = None if tp.offset < 0 else high - tp.offset
            return lag
        finally:
            consumer.close()

    def lag_from_admin() -> dict[int, int | None]:
        committed = committed_offsets(bootstrap, group, topic_name, n_partitions)
        ends = {partition: ck.watermarks(bootstrap, topic_name, partition)[1] for partition in range(n_partitions)}
        return {partition: None if offset < 0 else ends[partition] - offset for partition, offset in committed.items()}

    def check_cli(expected_lag: dict[int, int | None], ends: dict[int, int], state: str,
                  member_id: str | None = None) -> None:
        first_line, rows = cli_describe(bootstrap, group, topic_name)
        assert f"state {state}" in first_line, first_line
        for partition, lag in expected_lag.items():
            row = rows.get(partition)
            if lag is None and row is None:
                continue  # nothing committed and nobody assigned: the CLI may leave it out
            assert row is not None, f"partition {partition} missing from {rows}"
            assert row["END"] == str(ends[partition]), row
            if lag is None:
                assert (row["COMMITTED"], row["LAG"]) == ("-", "-"), row
            else:
                assert row["LAG"] == str(lag) == str(int(row["END"]) - int(row["COMMITTED"])), row
            if member_id is not None:
                assert row["MEMBER"] == member_id, row

    # Commits by hand (no member: a group that only holds offsets).
    committer = ck.consumer(bootstrap, **{"group.id": group})
    try:
        results = committer.commit(
            offsets=[TopicPartition(topic_name, 0, 12), TopicPartition(topic_name, 1, 20)], asynchronous=False
        )
        assert all(tp.error is None for tp in results), results
    finally:
        committer.close()
    ends = {0: 30, 1: 20, 2: 10}
    expected: dict[int, int | None] = {0: 30 - 12, 1: 0, 2: None}
    assert lag_from_clients() == expected
    assert lag_from_admin() == expected
    check_cli(expected, ends, "Empty")

    # A member catches up from there and commits; it stays in the group.
    member = members.start("confluent-lag", "confluent", bootstrap, topic_name, group)
    poll_until(lambda: member.last_commits() in ({0: 30, 2: 10}, {0: 30, 1: 20, 2: 10}),
               DRAIN_TIMEOUT_S, "the member to commit the ends")
    caught_up = {0: 0, 1: 0, 2: 0}
    assert lag_from_clients() == caught_up
    assert lag_from_admin() == caught_up
    wait_stable(bootstrap, topic_name, group, [member], n_partitions, members)
    member_id = member.assignment()[0]
    check_cli(caught_up, ends, "Stable", member_id)
    member.close()
    assert member.process.returncode == 0, members.describe([member])

    # More records with nobody consuming: the lag is exactly those.
    stream.send(7, partitions=[1])
    stream.flush()
    ends[1] += 7
    assert lag_from_clients() == {0: 0, 1: 7, 2: 0}
    assert lag_from_admin() == {0: 0, 1: 7, 2: 0}
    check_cli({0: 0, 1: 7, 2: 0}, ends, "Empty")
