"""Compacted topics with real clients: confluent-kafka and kafka-python reading a compacted topic
with gaps, a keyed counter app keeping its state in a compacted changelog (killed with SIGKILL
and restored from it), Kafka's rules for compacted topics (DeleteRecords from confluent-kafka's
AdminClient, the refusal of keyless records, `compact,delete` honouring retention), and
Tidewater's own tables being compacted topics, also in a data directory made before they were.

Time is shortened with topic configs, never waited out: `segment.ms` of 100 ms makes the next
housekeeping tick (about once a second) roll the active segment, `min.cleanable.dirty.ratio` of
0.01 cleans at once, and `delete.retention.ms` of 0 lets a tombstone go at the pass after the one
that first kept it. A cleaning pass is seen in the broker's log ("cleaned partition").
"""

from __future__ import annotations

import collections
import json
import subprocess
import sys
import threading
import time

import pytest
from confluent_kafka import KafkaError, TopicPartition
from confluent_kafka.admin import ConfigResource
from kafka import KafkaConsumer, KafkaProducer
from kafka import TopicPartition as KafkaPythonPartition
from kafka.errors import InvalidRecordError

import confluent_support as ck
from support import CLIENT_TIMEOUT_S, INTEROP_DIR, POLL_INTERVAL_S, Record, base_timestamp_ms, wait_until
from trigger_support import tidewater

# Topic configs that make the broker roll and clean a compacted topic within seconds.
FAST_COMPACTION = {
    "cleanup.policy": "compact",
    "segment.ms": "100",
    "min.cleanable.dirty.ratio": "0.01",
    "delete.retention.ms": "0",
}
# How long a cleaning pass may take to show up: a tick to roll, the next to clean.
CLEANING_TIMEOUT_S = 60.0
COUNTER_APP = INTEROP_DIR / "counter_app.py"


def keyed(key: str, value: str | None) -> Record:
    return Record(key.encode(), None if value is None else value.encode(), (), base_timestamp_ms())


def produce_keyed(bootstrap: str, topic: str, pairs: list[tuple[str, str | None]]) -> dict[str, int]:
    """Produces `pairs` in order (one request each, so each is its own batch) and returns the
    offset of each key's last record."""
    offsets: dict[str, int] = {}
    for key, value in pairs:
        (report,) = ck.produce(bootstrap, topic, [keyed(key, value)], partition=0, acks="all")
        offsets[key] = report.offset()
    return offsets


def wait_for_cleaning(broker, topic: str, since: int) -> None:
    broker.wait_for_log("cleaned partition", f"{topic}-0", since=since, timeout_s=CLEANING_TIMEOUT_S)


def read_all_confluent(bootstrap: str, topic: str) -> list[tuple[int, bytes, bytes | None]]:
    """(offset, key, value) of every record from the log start, read until librdkafka reports the
    partition's end (its fetch position reached the high watermark, whatever records the last
    offsets hold)."""
    low, _ = ck.watermarks(bootstrap, topic, 0)
    reader = ck.consumer(bootstrap, **{"enable.partition.eof": True})
    try:
        reader.assign([TopicPartition(topic, 0, low)])
        records = []
        deadline = time.monotonic() + CLIENT_TIMEOUT_S
        while True:
            assert time.monotonic() < deadline, f"no end of {topic} after {CLIENT_TIMEOUT_S}s: {records}"
            message = reader.poll(0.2)
            if message is None:
                continue
            if message.error() is not None:
                assert message.error().code() == KafkaError._PARTITION_EOF, message.error()
                return records
            records.append((message.offset(), message.key(), message.value()))
    finally:
        reader.close()


def read_all_kafka_python(bootstrap: str, topic: str) -> tuple[list[tuple[int, bytes, bytes | None]], int]:
    """The same with kafka-python: poll until its position reaches the end offset."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, request_timeout_ms=30_000)
    try:
        partition = KafkaPythonPartition(topic, 0)
        consumer.assign([partition])
        consumer.seek_to_beginning(partition)
        end = consumer.end_offsets([partition])[partition]
        records = []
        deadline = time.monotonic() + CLIENT_TIMEOUT_S
        while consumer.position(partition) < end:
            assert time.monotonic() < deadline, f"kafka-python stuck at {consumer.position(partition)} of {end}"
            for batch in consumer.poll(timeout_ms=200).values():
                records.extend((record.offset, record.key, record.value) for record in batch)
        return records, consumer.position(partition)
    finally:
        consumer.close()


def test_confluent_kafka_and_kafka_python_read_a_compacted_topic_with_gaps(broker, bootstrap, topic_name):
    """Keys written over and over, some deleted: after cleaning, both clients read the latest
    value of every live key at its original offset, skip the gaps, and reach the end."""
    ck.create_topic(bootstrap, topic_name, configs=FAST_COMPACTION)
    latest: dict[str, int] = {}
    for round_number in range(4):
        latest.update(produce_keyed(bootstrap, topic_name, [(f"k{index}", f"v{round_number}") for index in range(6)]))
        time.sleep(0.3)
    latest.update(produce_keyed(bootstrap, topic_name, [("k4", None), ("k5", None)]))
    live = {key: offset for key, offset in latest.items() if key not in ("k4", "k5")}
    expected = sorted((offset, key.encode(), b"v3") for key, offset in live.items())

    # A tombstone goes at the first pass after the one that gave it its horizon (0 ms here), and
    # a pass needs something new to clean: write a filler record and wait for a pass, until the
    # tombstones are gone.
    records: list[tuple[int, bytes, bytes | None]] = []
    for filler in range(10):
        mark = broker.log_mark()
        (report,) = ck.produce(bootstrap, topic_name, [keyed("filler", str(filler))], partition=0, acks="all")
        wait_for_cleaning(broker, topic_name, mark)
        expected_now = sorted([*expected, (report.offset(), b"filler", str(filler).encode())])
        records = read_all_confluent(bootstrap, topic_name)
        if records == expected_now:
            break
    else:
        raise AssertionError(f"the topic never compacted to {expected}: {records}")
    _, high = ck.watermarks(bootstrap, topic_name, 0)
    assert len(records) < high, "gaps: fewer records than offsets"

    kafka_python_records, position = read_all_kafka_python(bootstrap, topic_name)
    assert kafka_python_records == records
    assert position == high


def test_records_without_a_key_are_refused_on_a_compacted_topic(bootstrap, topic_name):
    """Kafka's rule: INVALID_RECORD for a keyless record on a compacted topic, from either
    client; a keyed record goes in, and the topic holds only it. Compressed batches are refused
    the same way (this broker cannot read their keys)."""
    ck.create_topic(bootstrap, topic_name, configs={"cleanup.policy": "compact"})
    error = ck.produce_expecting_error(bootstrap, topic_name, Record(None, b"no key", (), base_timestamp_ms()), partition=0)
    assert error.code() == KafkaError.INVALID_RECORD, error
    # Compressible, so librdkafka does compress it (it sends a batch that compression does not
    # shrink as it is).
    compressed = ck.produce_expecting_error(
        bootstrap, topic_name, keyed("k", "z" * 2000), partition=0, **{"compression.type": "gzip"}
    )
    assert compressed.code() == KafkaError.INVALID_RECORD, compressed

    # kafka-python's idempotent producer (its default) takes the refusal as fatal and fails
    # whatever it sends next, so the keyed record goes through a producer of its own.
    for key, value in [(None, b"no key"), (b"k", b"kept")]:
        producer = KafkaProducer(bootstrap_servers=bootstrap, request_timeout_ms=30_000)
        try:
            sent = producer.send(topic_name, key=key, value=value, partition=0)
            if key is None:
                try:
                    sent.get(timeout=CLIENT_TIMEOUT_S)
                    raise AssertionError("kafka-python's keyless record was accepted")
                except InvalidRecordError:
                    pass
            else:
                sent.get(timeout=CLIENT_TIMEOUT_S)
        finally:
            producer.close()
    records = read_all_confluent(bootstrap, topic_name)
    assert [(key, value) for _, key, value in records] == [(b"k", b"kept")]


def test_delete_records_from_confluent_kafkas_admin_client_on_a_compacted_topic(bootstrap, topic_name):
    """DeleteRecords (what Kafka Streams purges repartition topics with) moves the log start
    offset of a compacted topic too: reads begin there, and the answer is the new low
    watermark."""
    ck.create_topic(bootstrap, topic_name, configs={"cleanup.policy": "compact"})
    produce_keyed(bootstrap, topic_name, [(f"k{index}", "v") for index in range(10)])
    client = ck.admin(bootstrap)
    partition = TopicPartition(topic_name, 0, 6)
    result = client.delete_records([partition], request_timeout=CLIENT_TIMEOUT_S)[partition].result(timeout=CLIENT_TIMEOUT_S)
    assert result.low_watermark == 6
    assert ck.watermarks(bootstrap, topic_name, 0) == (6, 10)
    records = read_all_confluent(bootstrap, topic_name)
    assert [offset for offset, _, _ in records] == [6, 7, 8, 9]


def test_compact_delete_honours_retention_and_compact_alone_keeps_every_key(broker, bootstrap, topic_name):
    """`compact,delete` deletes closed segments past `retention.ms` even where they hold a key's
    latest record; plain `compact` keeps every key however old."""
    both, compact_only = f"{topic_name}-both", f"{topic_name}-compact"
    for topic, policy in [(both, "compact,delete"), (compact_only, "compact")]:
        ck.create_topic(bootstrap, topic, configs={**FAST_COMPACTION, "cleanup.policy": policy, "retention.ms": "1000"})
        produce_keyed(bootstrap, topic, [(f"k{index}", "v") for index in range(5)])
    # Old enough for retention, and rolled by a tick so retention may take the segment.
    wait_until(lambda: ck.watermarks(bootstrap, both, 0) == (5, 5), timeout_s=CLEANING_TIMEOUT_S,
               what="retention to delete the compact,delete topic's records")
    time.sleep(2)
    assert ck.watermarks(bootstrap, compact_only, 0) == (0, 5)
    records = read_all_confluent(bootstrap, compact_only)
    assert [key for _, key, _ in records] == [f"k{index}".encode() for index in range(5)]


# --- A stateful app on a compacted changelog ------------------------------------------------------


class CounterApp:
    """counter_app.py as a child process whose stdout lines are collected as they arrive."""

    def __init__(self, *args: str):
        self.process = subprocess.Popen(
            [sys.executable, str(COUNTER_APP), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.lines: list[str] = []
        self.stderr: collections.deque[str] = collections.deque(maxlen=40)
        self._readers = [
            threading.Thread(target=self._pump, args=(self.process.stdout, self.lines.append), daemon=True),
            threading.Thread(target=self._pump, args=(self.process.stderr, self.stderr.append), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _pump(stream, keep) -> None:
        for line in stream:
            keep(line.rstrip("\n"))

    def describe(self) -> str:
        return f"counter app (exit {self.process.poll()}): {self.lines[-20:]}\nstderr: {list(self.stderr)}"

    def count(self, prefix: str) -> int:
        return sum(line.startswith(prefix) for line in list(self.lines))

    def wait_for(self, prefix: str, count: int = 1, timeout_s: float = 90.0) -> None:
        deadline = time.monotonic() + timeout_s
        while self.count(prefix) < count:
            if self.process.poll() is not None:
                for reader in self._readers:
                    reader.join(timeout=10)
                assert self.count(prefix) >= count, f"exited before {count} {prefix!r} lines\n{self.describe()}"
                return
            assert time.monotonic() < deadline, f"no {count} {prefix!r} lines in {timeout_s}s\n{self.describe()}"
            time.sleep(POLL_INTERVAL_S)

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(timeout=30)

    def finish(self) -> dict[str, int]:
        """Waits for the app to catch up and exit; returns its final state."""
        self.wait_for("caught-up", timeout_s=120)
        assert self.process.wait(timeout=30) == 0, self.describe()
        for reader in self._readers:
            reader.join(timeout=10)
        (state,) = [line for line in self.lines if line.startswith("state ")]
        return json.loads(state.removeprefix("state "))

    def restored(self) -> tuple[int, int]:
        (line,) = [line for line in self.lines if line.startswith("restored ")]
        keys, records = line.split()[1:]
        return int(keys), int(records)


@pytest.mark.parametrize("client", ["confluent-kafka", "kafka-python"])
def test_a_keyed_counter_killed_with_sigkill_restores_its_state_from_a_compacted_changelog(
    bootstrap, topic_name, client
):
    """The way Kafka Streams apps keep state: a keyed counter writes each new count to a
    compacted changelog in the transaction that commits its input offsets. It is killed with
    SIGKILL mid-run, twice, and each time restores from the changelog (which the cleaner
    compacts meanwhile, removing superseded counts and the killed instances' aborted writes);
    its final state equals a clean run's, and a restore from the compacted changelog alone reads
    little more than one record per key. The same app runs on confluent-kafka and on
    kafka-python."""
    client_args = () if client == "confluent-kafka" else ("--client", client)
    input_topic = f"{topic_name}-input"
    ck.create_topic(bootstrap, input_topic, n_partitions=2)
    keys = [f"key-{index % 17}" for index in range(3000)]
    ck.produce(bootstrap, input_topic, [keyed(key, "event") for key in keys], acks="all")
    expected = dict(collections.Counter(keys))

    def run(name: str, kills: int) -> tuple[dict[str, int], str]:
        changelog = f"{topic_name}-{name}-changelog"
        ck.create_topic(bootstrap, changelog, configs=FAST_COMPACTION)
        args = (*client_args, bootstrap, input_topic, changelog, f"{topic_name}-{name}", f"{topic_name}-{name}")
        for kill in range(kills):
            app = CounterApp(*args)
            app.wait_for("committed", count=5 + 5 * kill)
            app.kill()
            # Let a roll and a cleaning pass happen between the runs.
            time.sleep(1.5)
        state = CounterApp(*args).finish()
        return state, changelog

    clean_state, _ = run("clean", kills=0)
    assert clean_state == expected
    crashed_state, changelog = run("crashed", kills=2)
    assert crashed_state == clean_state

    # Restored from the changelog alone, once the cleaner has been through it: every count ever
    # written is len(keys) records; compaction leaves about one per key (plus those of the
    # active segment, never cleaned).
    def compacted_restore():
        restorer = CounterApp(*client_args, bootstrap, input_topic, changelog, f"{topic_name}-crashed", f"{topic_name}-crashed")
        assert restorer.finish() == expected
        n_keys, n_records = restorer.restored()
        assert n_keys == len(expected)
        return n_records if n_records < len(keys) / 4 else None

    wait_until(compacted_restore, timeout_s=CLEANING_TIMEOUT_S, what="a restore from the compacted changelog")


# --- Tidewater's own tables -----------------------------------------------------------------------

TABLES = {
    "_tidewater_devices": "compact",
    "_tidewater_mqtt_retained": "compact",
    "_tidewater_mqtt_sessions": "compact",
    "_tidewater_command_deliveries": "compact,delete",
    "_tidewater_triggers": "compact",
    "_tidewater_trigger_status": "compact,delete",
    "_tidewater_queries": "compact",
    "_tidewater_query_status": "compact,delete",
}


def topic_configs(bootstrap: str, topic: str) -> dict[str, str]:
    client = ck.admin(bootstrap)
    resource = ConfigResource("topic", topic)
    entries = client.describe_configs([resource], request_timeout=CLIENT_TIMEOUT_S)[resource].result(timeout=CLIENT_TIMEOUT_S)
    return {name: entry.value for name, entry in entries.items()}


def wait_for_tables(bootstrap: str, topic_name: str, tmp_path) -> None:
    """Registers a trigger and a query job (the gateway's tables exist from the start; the
    triggers' and queries' only once the first is registered, and the trigger status table once
    `serve` runs it), and waits for every table. The trigger watches a topic nothing is written
    to, so it never calls its webhook."""
    quiet = f"{topic_name}-quiet"
    tidewater("topic", "create", quiet, bootstrap=bootstrap)
    tidewater("trigger", "create", f"tables-{topic_name[-8:]}", "--topic", quiet,
              "--webhook", "http://127.0.0.1:1/never", bootstrap=bootstrap)
    query = tmp_path / "tables.sql"
    query.write_text(f"SELECT COUNT(*) AS n INTO [{quiet}-out] FROM [{quiet}] GROUP BY TumblingWindow(second, 10)")
    tidewater("query", "create", f"tables-{topic_name[-8:]}", "--file", str(query), bootstrap=bootstrap)

    def all_there():
        topics = ck.admin(bootstrap).list_topics(timeout=CLIENT_TIMEOUT_S).topics
        return all(table in topics for table in [*TABLES, "_tidewater_query_checkpoints"])

    wait_until(all_there, timeout_s=CLIENT_TIMEOUT_S, what="serve's components to create their tables")


def forget_tables_jobs(bootstrap: str, topic_name: str) -> None:
    """Removes what `wait_for_tables` registered, so the session broker stops running it."""
    tidewater("trigger", "delete", f"tables-{topic_name[-8:]}", bootstrap=bootstrap, check=False)
    tidewater("query", "delete", f"tables-{topic_name[-8:]}", bootstrap=bootstrap, check=False)


def test_tidewaters_tables_are_compacted_topics(bootstrap, topic_name, tmp_path):
    """Every table `serve`'s components keep (devices, retained messages, MQTT sessions, deliveries, triggers,
    their status, queries) is a compacted topic; those that only matter for a while also go by
    time."""
    try:
        wait_for_tables(bootstrap, topic_name, tmp_path)
    finally:
        forget_tables_jobs(bootstrap, topic_name)
    for table, policy in TABLES.items():
        configs = topic_configs(bootstrap, table)
        assert configs["cleanup.policy"] == policy, (table, configs)
        assert configs["segment.ms"] == "600000", (table, configs)


def test_tables_of_a_data_directory_from_before_compaction_are_switched_at_start(broker_factory, topic_name, tmp_path):
    """An upgrade: tables created as an older Tidewater created them (`cleanup.policy=delete`
    with `retention.ms=-1`, the checkpoint topic with a day's retention) are switched to
    compaction when the components start (the gateway's at once, the registries' by the runners
    `serve` starts for them, the checkpoint topic by a job), with a log line saying so; a setting
    the topic overrides itself (the checkpoint topic's `segment.ms`) stays as it is, and what the
    tables held (a device, a trigger, a query job) is all still there."""
    broker = broker_factory()
    bootstrap = broker.bootstrap
    wait_for_tables(bootstrap, topic_name, tmp_path)
    # Records in the tables (a device here, the trigger and the query job registered above):
    # still there after the upgrade. (Registered before the downgrade below, since `device add`
    # upgrades the devices table itself.)
    device = f"upgraded-{topic_name[-8:]}"
    tidewater("device", "add", device, bootstrap=bootstrap)
    # Make the tables what an older version left: delete policy, no segment.ms of their own, and
    # retention.ms=-1 on those it kept for ever; the checkpoint topic with a day's retention (and
    # a segment.ms an operator set on it).
    for table, policy in TABLES.items():
        kept_for_ever = ["--config", "retention.ms=-1"] if policy == "compact" else []
        tidewater("topic", "alter", table, "--config", "cleanup.policy=delete", *kept_for_ever,
                  "--delete-config", "segment.ms", bootstrap=bootstrap)
    tidewater("topic", "alter", "_tidewater_query_checkpoints", "--config", "cleanup.policy=delete",
              "--config", "retention.ms=86400000", "--config", "segment.ms=3600000", bootstrap=bootstrap)
    assert topic_configs(bootstrap, "_tidewater_devices")["cleanup.policy"] == "delete"

    mark = broker.log_mark()
    broker.restart()
    broker.wait_for_log("upgraded a table topic", "_tidewater_devices", since=mark)
    for table, policy in TABLES.items():
        wait_until(lambda: topic_configs(bootstrap, table)["cleanup.policy"] == policy, timeout_s=CLIENT_TIMEOUT_S,
                   what=f"{table} to be switched to {policy}")
        assert topic_configs(bootstrap, table)["segment.ms"] == "600000", table

    # The checkpoint topic is the jobs': the job registered above upgrades it when serve starts it.
    wait_until(lambda: topic_configs(bootstrap, "_tidewater_query_checkpoints")["cleanup.policy"] == "compact",
               timeout_s=CLIENT_TIMEOUT_S, what="the checkpoint topic to be switched to compact")
    assert device in tidewater("device", "list", bootstrap=bootstrap).stdout
    assert f"tables-{topic_name[-8:]}" in tidewater("trigger", "list", bootstrap=bootstrap).stdout
    assert f"tables-{topic_name[-8:]}" in tidewater("query", "list", bootstrap=bootstrap).stdout
    configs = topic_configs(bootstrap, "_tidewater_query_checkpoints")
    assert configs["segment.ms"] == "3600000", "set on the topic: kept"
    assert configs["retention.ms"] == "86400000", "kept, and without effect under compact alone"
