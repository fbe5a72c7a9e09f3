"""A broker restarted under a running consumer group: the group's membership is durable, so the
member carries on without a rebalance.

One confluent-kafka (librdkafka) consumer subscribes in a group, with assignment and revocation
callbacks, and commits synchronously after each batch it reads, on a thread of its own that keeps
polling through the restart. The broker restarts (SIGTERM, or SIGKILL as a crash) while records
are still coming; after it, the consumer keeps reading and its commits are accepted at its old
generation (classic) or member epoch (KIP-848), which a broker that forgot the group refuses
(UNKNOWN_MEMBER_ID, ILLEGAL_GENERATION, FENCED_MEMBER_EPOCH) before making the member rejoin.

What is checked: no callback after the first assignment (no rebalance, so no revocation and no
new assignment), no commit refused for the group's sake, every record read exactly once and in
order, the final commit at the end of every partition, and `tidewater group describe` showing the
same member with the same partitions before and after. A classic group's generation is not in
DescribeGroups (Kafka has no field for it); the broker's log line for the loaded group names it,
and the test checks it is the generation the member was given (1: one member, one join).
"""

from __future__ import annotations

import threading
import time

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException

import confluent_support as ck
from conftest import tidewater_binary
from support import CLIENT_TIMEOUT_S, run_program

N_PARTITIONS = 3
BEFORE, DURING, AFTER = 200, 200, 200
# Errors of a commit that would mean the broker forgot the member.
FORGOTTEN = {
    KafkaError.UNKNOWN_MEMBER_ID,
    KafkaError.ILLEGAL_GENERATION,
    KafkaError.REBALANCE_IN_PROGRESS,
    KafkaError.FENCED_MEMBER_EPOCH,
    KafkaError.STALE_MEMBER_EPOCH,
}


class GroupConsumer:
    """A subscribed consumer polled on a thread of its own: what it read, its callbacks, and the
    outcome of each synchronous commit."""

    def __init__(self, bootstrap: str, group: str, topic: str, protocol: str):
        config = {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "client.id": f"restart-{protocol}",
            "group.protocol": protocol,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 100,
            "reconnect.backoff.ms": 50,
            "reconnect.backoff.max.ms": 500,
        }
        if protocol == "classic":
            config.update({"session.timeout.ms": 30_000, "heartbeat.interval.ms": 500})
        self.consumer = Consumer(config)
        self.lock = threading.Lock()
        self.events: list[tuple[str, list[int]]] = []
        self.read: dict[int, list[tuple[int, bytes]]] = {partition: [] for partition in range(N_PARTITIONS)}
        self.commits_ok = 0
        self.commit_errors: list[KafkaError] = []
        self.poll_errors: list[KafkaError] = []
        self.stop = threading.Event()
        self.consumer.subscribe([topic], on_assign=self._assigned, on_revoke=self._revoked)
        self.thread = threading.Thread(target=self._run, name=f"consumer-{protocol}", daemon=True)
        self.thread.start()

    def _assigned(self, consumer, partitions) -> None:
        with self.lock:
            self.events.append(("assigned", sorted(tp.partition for tp in partitions)))

    def _revoked(self, consumer, partitions) -> None:
        with self.lock:
            self.events.append(("revoked", sorted(tp.partition for tp in partitions)))

    def _run(self) -> None:
        while not self.stop.is_set():
            messages = self.consumer.consume(num_messages=50, timeout=0.2)
            read_any = False
            for message in messages:
                if message.error() is not None:
                    with self.lock:
                        self.poll_errors.append(message.error())
                    continue
                read_any = True
                with self.lock:
                    self.read[message.partition()].append((message.offset(), message.value()))
            if read_any:
                try:
                    self.consumer.commit(asynchronous=False)
                    with self.lock:
                        self.commits_ok += 1
                except KafkaException as error:
                    # While the broker is down a commit fails for want of a coordinator; the
                    # next one after the restart covers what this one did not.
                    with self.lock:
                        self.commit_errors.append(error.args[0])

    def n_read(self) -> int:
        with self.lock:
            return sum(len(records) for records in self.read.values())

    def wait_read(self, total: int, what: str) -> None:
        deadline = time.monotonic() + CLIENT_TIMEOUT_S
        while self.n_read() < total:
            assert self.thread.is_alive(), "the consumer thread died"
            assert time.monotonic() < deadline, f"{what}: read {self.n_read()} of {total}"
            time.sleep(0.05)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=CLIENT_TIMEOUT_S)
        self.consumer.close()


class KafkaPythonConsumer(GroupConsumer):
    """The same member with kafka-python (classic protocol only), its rebalance listener and
    synchronous commits; errors are kept by class name."""

    def __init__(self, bootstrap: str, group: str, topic: str):
        from kafka import ConsumerRebalanceListener, KafkaConsumer

        outer = self

        class Listener(ConsumerRebalanceListener):
            def on_partitions_assigned(self, assigned):
                with outer.lock:
                    outer.events.append(("assigned", sorted(tp.partition for tp in assigned)))

            def on_partitions_revoked(self, revoked):
                with outer.lock:
                    outer.events.append(("revoked", sorted(tp.partition for tp in revoked)))

        self.consumer = KafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=group,
            client_id="restart-kafka-python",
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            session_timeout_ms=30_000,
            heartbeat_interval_ms=500,
            fetch_max_wait_ms=100,
            reconnect_backoff_ms=50,
            reconnect_backoff_max_ms=500,
        )
        self.lock = threading.Lock()
        self.events = []
        self.read = {partition: [] for partition in range(N_PARTITIONS)}
        self.commits_ok = 0
        self.commit_errors = []
        self.poll_errors = []
        self.stop = threading.Event()
        self.consumer.subscribe([topic], listener=Listener())
        self.thread = threading.Thread(target=self._run_kafka_python, name="consumer-kafka-python", daemon=True)
        self.thread.start()

    def _run_kafka_python(self) -> None:
        from kafka.errors import KafkaError as KafkaPythonError

        while not self.stop.is_set():
            try:
                batches = self.consumer.poll(timeout_ms=200, max_records=50)
            except KafkaPythonError as error:
                with self.lock:
                    self.poll_errors.append(type(error).__name__)
                continue
            read_any = False
            for tp, messages in batches.items():
                for message in messages:
                    read_any = True
                    with self.lock:
                        self.read[tp.partition].append((message.offset, message.value))
            if read_any:
                try:
                    self.consumer.commit()
                    with self.lock:
                        self.commits_ok += 1
                except KafkaPythonError as error:
                    with self.lock:
                        self.commit_errors.append(type(error).__name__)


# kafka-python's errors of a commit that would mean the broker forgot the member.
FORGOTTEN_KAFKA_PYTHON = {"CommitFailedError", "UnknownMemberIdError", "IllegalGenerationError", "RebalanceInProgressError"}


def describe(bootstrap: str, group: str) -> list[str]:
    """`tidewater group describe`: its lines up to the partition table (state and members)."""
    completed = run_program(
        [str(tidewater_binary()), "group", "describe", group, "--brokers", bootstrap, "--timeout-ms", "10000"],
        timeout_s=30,
    )
    assert completed.returncode == 0, f"group describe exited {completed.returncode}: {completed.stderr}"
    lines = completed.stdout.splitlines()
    table = next(index for index, line in enumerate(lines) if line.split()[:2] == ["TOPIC", "PARTITION"])
    return lines[:table]


def committed(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    from confluent_kafka import TopicPartition

    reader = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        partitions = reader.committed(
            [TopicPartition(topic, partition) for partition in range(N_PARTITIONS)], timeout=CLIENT_TIMEOUT_S
        )
        return {tp.partition: tp.offset for tp in partitions}
    finally:
        reader.close()


@pytest.mark.parametrize("kill", [False, True], ids=["sigterm", "sigkill"])
@pytest.mark.parametrize("protocol", ["classic", "consumer", "kafka-python"])
def test_a_group_member_carries_on_across_a_broker_restart_without_a_rebalance(
    broker_factory, topic_name, protocol, kill
):
    """`protocol`: librdkafka's classic or consumer (KIP-848) protocol, or kafka-python's
    (classic)."""
    broker = broker_factory()
    bootstrap = broker.bootstrap
    group = f"{topic_name}-group"
    ck.create_topic(bootstrap, topic_name, N_PARTITIONS)
    producer = ck.producer(bootstrap, acks="all", **{"reconnect.backoff.ms": 50, "reconnect.backoff.max.ms": 500})
    sent: list[bytes] = []

    def send(count: int) -> None:
        for _ in range(count):
            value = f"record-{len(sent)}".encode()
            producer.produce(topic_name, key=value, value=value, partition=len(sent) % N_PARTITIONS)
            sent.append(value)
        assert producer.flush(CLIENT_TIMEOUT_S) == 0

    if protocol == "kafka-python":
        member = KafkaPythonConsumer(bootstrap, group, topic_name)
    else:
        member = GroupConsumer(bootstrap, group, topic_name, protocol)
    try:
        send(BEFORE)
        member.wait_read(BEFORE, "before the restart")
        deadline = time.monotonic() + CLIENT_TIMEOUT_S
        while committed(bootstrap, group, topic_name) != {p: BEFORE // N_PARTITIONS + (p < BEFORE % N_PARTITIONS) for p in range(N_PARTITIONS)}:
            assert time.monotonic() < deadline, "the commits before the restart did not land"
            time.sleep(0.1)
        with member.lock:
            # kafka-python also reports an empty revocation before its first join.
            events_before = list(member.events)
        assert [event for event in events_before if event[1]] == [("assigned", list(range(N_PARTITIONS)))], events_before
        described_before = describe(bootstrap, group)

        # More records, and the broker restarts while the consumer reads them.
        send(DURING)
        mark = broker.log_mark()
        broker.restart(kill=kill)
        commits_at_restart = member.commits_ok
        send(AFTER)
        total = BEFORE + DURING + AFTER
        member.wait_read(total, "after the restart")
        deadline = time.monotonic() + CLIENT_TIMEOUT_S
        ends = {p: total // N_PARTITIONS + (p < total % N_PARTITIONS) for p in range(N_PARTITIONS)}
        while committed(bootstrap, group, topic_name) != ends:
            assert time.monotonic() < deadline, f"committed {committed(bootstrap, group, topic_name)}, want {ends}"
            time.sleep(0.1)
        assert member.commits_ok > commits_at_restart, "no commit was accepted after the restart"
        described_after = describe(bootstrap, group)
        with member.lock:
            # Taken before closing: close() revokes the assignment, as it should.
            events = list(member.events)
    finally:
        member.close()

    refused = [
        error
        for error in member.commit_errors
        if (error in FORGOTTEN_KAFKA_PYTHON if isinstance(error, str) else error.code() in FORGOTTEN)
    ]
    assert not refused, f"commits refused as if the broker forgot the member: {refused}"
    assert events == events_before, f"a rebalance happened: {events}"
    assert described_after == described_before, (described_before, described_after)
    # Exactly once, in order: each partition read at consecutive offsets, as it was sent.
    for partition in range(N_PARTITIONS):
        want = [value for index, value in enumerate(sent) if index % N_PARTITIONS == partition]
        got = member.read[partition]
        assert [offset for offset, _ in got] == list(range(len(want))), f"partition {partition} offsets"
        assert [value for _, value in got] == want, f"partition {partition} values"
    kind = "consumer" if protocol == "consumer" else "classic"
    loaded = [line for line in broker.log_since(mark) if f"loaded {kind} group" in line and group in line]
    assert len(loaded) == 1, f"the broker did not log loading the group:\n{broker.log_tail()}"
    if kind == "classic":
        assert "generation=1" in loaded[0] and "state=Stable" in loaded[0], loaded
