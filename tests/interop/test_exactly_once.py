"""Exactly-once against the real broker, under failure: idempotent producers and transactions
with confluent-kafka, kafka-python and kafkajs, while producers, transform loops and the broker
itself are killed with SIGKILL.

The clients that get killed run as child processes (exactly_once_workers.py), so a kill is a
real crash: no flush, no close, no goodbye to the broker. A killed broker is started again on
the same port and data directory. Every wait is bounded, and every child is killed when its
test ends, whatever the outcome.
"""

from __future__ import annotations

import collections
import random
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

import confluent_support as ck
from support import (
    CLIENT_TIMEOUT_S,
    INTEROP_DIR,
    POLL_INTERVAL_S,
    Record,
    base_timestamp_ms,
    run_kafkajs,
    run_program,
    wait_until,
)

WORKERS_SCRIPT = INTEROP_DIR / "exactly_once_workers.py"
# How long a worker child may take to reach a point the test waits for.
WORKER_TIMEOUT_S = 60.0
# Worker output lines kept for failure reports.
WORKER_LINES_KEPT = 40


class Worker:
    """One exactly_once_workers.py child. Its stdout lines are collected as they arrive (a killed
    worker's last lines included); its stderr is kept for failure reports."""

    def __init__(self, name: str, args: tuple[str, ...]):
        self.name = name
        self.process = subprocess.Popen(
            [sys.executable, str(WORKERS_SCRIPT), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._lines: list[str] = []
        self._lock = threading.Lock()
        self._stderr: collections.deque[str] = collections.deque(maxlen=WORKER_LINES_KEPT)
        self._readers = [
            threading.Thread(target=self._pump, args=(self.process.stdout, True), daemon=True),
            threading.Thread(target=self._pump, args=(self.process.stderr, False), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _pump(self, stream, is_stdout: bool) -> None:
        for line in stream:
            line = line.rstrip("\n")
            if is_stdout:
                with self._lock:
                    self._lines.append(line)
            else:
                self._stderr.append(line)

    def send(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def lines(self, prefix: str = "") -> list[str]:
        with self._lock:
            return [line for line in self._lines if line.startswith(prefix)]

    def count(self, prefix: str) -> int:
        return len(self.lines(prefix))

    def describe(self) -> str:
        with self._lock:
            tail = self._lines[-WORKER_LINES_KEPT:]
        return (
            f"worker {self.name} (exit {self.process.poll()}):\n  stdout: {tail}\n"
            f"  stderr: {list(self._stderr)}"
        )

    def wait_for(self, condition: Callable[[], bool], what: str, timeout_s: float = WORKER_TIMEOUT_S) -> None:
        """Waits until `condition` holds; fails early if the worker exits before it does."""
        deadline = time.monotonic() + timeout_s
        while not condition():
            if self.process.poll() is not None:
                self._drain()
                if condition():
                    return
                raise AssertionError(f"{what}: the worker exited first\n{self.describe()}")
            if time.monotonic() >= deadline:
                raise AssertionError(f"{what}: not within {timeout_s}s\n{self.describe()}")
            time.sleep(POLL_INTERVAL_S)

    def kill(self) -> None:
        """SIGKILL; returns once the process is gone and everything it printed is read."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=WORKER_TIMEOUT_S)
        self._drain()

    def finish(self, timeout_s: float = WORKER_TIMEOUT_S) -> int:
        """Waits for the worker to exit by itself (killing it after `timeout_s`); returns its
        exit status."""
        try:
            code = self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"still running after {timeout_s}s; killed\n{self.describe()}") from None
        self._drain()
        return code

    def _drain(self) -> None:
        for reader in self._readers:
            reader.join(timeout=WORKER_TIMEOUT_S)


@pytest.fixture
def workers() -> Iterator[Callable[..., Worker]]:
    """Starts worker children; kills every one still running when the test ends."""
    started: list[Worker] = []

    def start(name: str, *args: object) -> Worker:
        worker = Worker(name, tuple(str(arg) for arg in args))
        started.append(worker)
        return worker

    yield start
    for worker in started:
        if worker.process.poll() is None:
            worker.kill()


READ_COMMITTED = {"isolation.level": "read_committed"}


def plain_record(value: bytes) -> Record:
    return Record(None, value, (), base_timestamp_ms())


def fatal_errors(worker: Worker) -> list[str]:
    return [line for line in worker.lines("error ") if "fatal=True" in line]


def read_partition(bootstrap: str, topic: str, partition: int, **config) -> list:
    """Every record of a partition from offset 0 to the end its reader may read, with the
    isolation level of `config` (read_uncommitted unless asked; librdkafka's own default is
    read_committed)."""
    config = {"isolation.level": "read_uncommitted", **config}
    reader = ck.consumer(bootstrap, **config)
    try:
        _, end = reader.get_watermark_offsets(TopicPartition(topic, partition), timeout=CLIENT_TIMEOUT_S, cached=False)
    finally:
        reader.close()
    if end == 0:
        return []
    # The end offset of read_committed is the last stable offset; reading up to it returns the
    # records below it that were not aborted, so collect until the position reaches it.
    reader = ck.consumer(bootstrap, **config)
    try:
        reader.assign([TopicPartition(topic, partition, 0)])
        messages = []
        deadline = time.monotonic() + CLIENT_TIMEOUT_S
        while True:
            position = reader.position([TopicPartition(topic, partition)])[0].offset
            if position >= end:
                return messages
            assert time.monotonic() < deadline, (
                f"{topic}-{partition}: position {position} after {CLIENT_TIMEOUT_S}s, end is {end}"
            )
            # Short polls: the position moves past a final transaction marker only with the
            # fetch after the last record, which returns no message.
            for message in reader.consume(num_messages=1000, timeout=0.1):
                assert message.error() is None, f"{topic}-{partition}: {message.error()}"
                messages.append(message)
    finally:
        reader.close()


# --- Idempotence under failure ------------------------------------------------------------------

IDEMPOTENT_PARTITIONS = 3
# Records a second, in all, each idempotent worker writes: enough to always have requests in
# flight, few enough for a debug broker.
IDEMPOTENT_RATE = 3000
ACKED = re.compile(r"acked (\d+) (\d+)$")


def test_idempotent_producer_keeps_order_without_duplicates_across_producer_and_broker_kills(
    broker_factory, topic_name, workers
):
    """Idempotent producers (confluent-kafka, acks=all, 5 in flight) numbering their records per
    partition, while the broker is SIGKILLed and restarted under them and they are SIGKILLed
    themselves, each followed by a successor. In every partition each run's records must be its
    sequence 0, 1, 2, ... in order with no duplicate and no gap, and hold every record the run
    was told was acknowledged; only an unacknowledged tail of a killed run may be missing."""
    broker = broker_factory()
    bootstrap = broker.bootstrap
    ck.create_topic(bootstrap, topic_name, IDEMPOTENT_PARTITIONS)
    unbounded = 1_000_000

    def start(run_id: str, per_partition: int) -> Worker:
        return workers(run_id, "idempotent", bootstrap, topic_name, run_id, IDEMPOTENT_PARTITIONS, per_partition, IDEMPOTENT_RATE)

    def acked_at_least(worker: Worker, count: int) -> None:
        worker.wait_for(lambda: worker.count("acked ") >= count, f"{worker.name}: {count} acknowledgements")

    # Run 1: the broker is killed under it twice and comes back; it carries on, retrying what
    # was in flight (records written whose acknowledgement was lost come back as duplicates the
    # broker must recognise). Then the broker is killed once more, and as soon as it is back and
    # run 1's retries of what piled up meanwhile are arriving, run 1 is killed too.
    run1 = start("run1", unbounded)
    acked_at_least(run1, 1500)
    for _ in range(2):
        broker.restart(kill=True)
        acked_at_least(run1, run1.count("acked ") + 1000)
    broker.restart(kill=True, while_down=lambda: time.sleep(0.3))
    acked_at_least(run1, run1.count("acked ") + 1)
    run1.kill()

    # Run 2, its successor, is killed while its own requests are in flight.
    run2 = start("run2", unbounded)
    acked_at_least(run2, 1500)
    run2.kill()

    # Run 3 writes a fixed number of records; the broker is killed half-way. It must finish with
    # every record acknowledged.
    per_partition = 1000
    run3 = start("run3", per_partition)
    acked_at_least(run3, per_partition * IDEMPOTENT_PARTITIONS // 2)
    broker.restart(kill=True)
    assert run3.finish() == 0, run3.describe()
    assert run3.lines("done ") == ["done 0"], run3.describe()
    assert run3.count("acked ") == per_partition * IDEMPOTENT_PARTITIONS, run3.describe()

    runs = [run1, run2, run3]
    for run in runs:
        assert not run.lines("failed "), f"deliveries failed\n{run.describe()}"
        assert not fatal_errors(run), run.describe()
    for partition in range(IDEMPOTENT_PARTITIONS):
        sequences: dict[str, list[int]] = collections.defaultdict(list)
        for message in read_partition(bootstrap, topic_name, partition):
            run_id, record_partition, sequence = message.value().split(b" ")[:3]
            assert int(record_partition) == partition, message.value()
            sequences[run_id.decode()].append(int(sequence))
        assert set(sequences) <= {run.name for run in runs}, sorted(sequences)
        for run in runs:
            written = sequences[run.name]
            expected = list(range(len(written)))
            if written != expected:
                first = next(index for index, (got, want) in enumerate(zip(written, expected)) if got != want)
                raise AssertionError(
                    f"partition {partition}, {run.name}: sequence {written[first]} at position {first} where "
                    f"{expected[first]} belongs (a duplicate, gap or reordering): ...{written[max(0, first - 3) : first + 4]}..."
                )
            acked = [int(match[2]) for line in run.lines("acked ") if (match := ACKED.match(line)) and int(match[1]) == partition]
            assert acked, f"{run.name} got no acknowledgement for partition {partition}"
            assert max(acked) < len(written), (
                f"partition {partition}, {run.name}: acknowledged sequence {max(acked)} but only "
                f"0..{len(written) - 1} are in the log"
            )
            assert len(set(acked)) == len(acked), f"{run.name}: a record acknowledged twice"
            # Shown with -s: how much of each run was in doubt (written, never acknowledged).
            print(f"partition {partition} {run.name}: {len(written)} written, {len(acked)} acknowledged")
        assert len(sequences["run3"]) == per_partition


# --- Consume-transform-produce ------------------------------------------------------------------

TRANSFORM_PARTITIONS = 2
TRANSFORM_RECORDS = 2000
# Transform instances killed at a random point, one after another.
TRANSFORM_KILLS = 9
# Which instance (counting from 0) aborts a transaction explicitly instead of being killed.
TRANSFORM_ABORTING_RUN = 3
# Records per transaction, and the most time (ms) a killed instance spends inside one.
TRANSFORM_BATCH = 25
TRANSFORM_PAUSE_MS = 60
# The longest the whole kill-and-restart sequence may take before the test gives up.
TRANSFORM_DEADLINE_S = 120.0


def test_consume_transform_produce_is_exactly_once_across_kills(broker_factory, topic_name, workers):
    """A read_committed consume-transform-produce loop (confluent-kafka, offsets committed in
    the transaction with send_offsets_to_transaction) moves 2000 records from an input topic to
    an output topic while instances are SIGKILLed at random points (often inside a transaction)
    and restarted, one also aborting a transaction on purpose. A read_committed reader of the
    output sees every input record exactly once and in its partition's order; a
    read_uncommitted reader also sees the aborted copies."""
    broker = broker_factory()
    bootstrap = broker.bootstrap
    input_topic, output_topic = f"{topic_name}-in", f"{topic_name}-out"
    ck.create_topic(bootstrap, input_topic, TRANSFORM_PARTITIONS)
    ck.create_topic(bootstrap, output_topic, TRANSFORM_PARTITIONS)
    inputs: dict[int, list[bytes]] = {partition: [] for partition in range(TRANSFORM_PARTITIONS)}
    for index in range(TRANSFORM_RECORDS):
        inputs[index % TRANSFORM_PARTITIONS].append(f"in-{index}".encode())
    for partition, values in inputs.items():
        records = [plain_record(value) for value in values]
        ck.produce(bootstrap, input_topic, records, partition=partition, acks="all", **{"enable.idempotence": True})

    group, transactional_id = f"{topic_name}-group", f"{topic_name}-transform"

    def start(run: int, *extra: object) -> Worker:
        return workers(
            f"transform{run}", "transform", bootstrap, input_topic, output_topic, group, transactional_id,
            TRANSFORM_BATCH, *extra,
        )

    rng = random.Random()
    seed = rng.randrange(1 << 30)
    rng.seed(seed)
    deadline = time.monotonic() + TRANSFORM_DEADLINE_S
    kills = 0
    for run in range(TRANSFORM_KILLS + 1):
        assert time.monotonic() < deadline, f"{kills} kills in {TRANSFORM_DEADLINE_S}s (seed {seed})"
        if run == TRANSFORM_ABORTING_RUN:
            # Commits two transactions, writes a third and aborts it, then exits.
            worker = start(run, TRANSFORM_PAUSE_MS, 2)
            assert worker.finish() == 0, worker.describe()
            assert worker.count("committed ") == 2 and worker.count("aborted ") == 1, worker.describe()
            continue
        # Kill it after a few commits (so every instance makes progress, whatever the machine's
        # speed) plus a random moment: inside its next transaction, often, or in its commit.
        worker = start(run, TRANSFORM_PAUSE_MS)
        n_commits = rng.randint(1, 4)
        worker.wait_for(
            lambda: worker.count("committed ") >= n_commits or worker.count("caught-up"),
            f"transform{run}: {n_commits} commits",
        )
        assert not worker.count("caught-up"), f"the input ran out after {kills} kills (seed {seed})"
        time.sleep(rng.uniform(0, TRANSFORM_PAUSE_MS * 1.5 / 1000))
        worker.kill()
        kills += 1
        assert not fatal_errors(worker), worker.describe()
    # The last instance runs to the end of the input.
    final = start(TRANSFORM_KILLS + 1, 0)
    assert final.finish(timeout_s=max(deadline - time.monotonic(), 30)) == 0, final.describe()
    assert final.lines()[-1] == "caught-up", final.describe()
    assert kills == TRANSFORM_KILLS

    committed_total = 0
    uncommitted_total = 0
    for partition in range(TRANSFORM_PARTITIONS):
        expected = [b"out:" + value for value in inputs[partition]]
        committed = [message.value() for message in read_partition(bootstrap, output_topic, partition, **READ_COMMITTED)]
        if committed != expected:
            counts = collections.Counter(committed)
            duplicated = [value for value, count in counts.items() if count > 1]
            missing = [value for value in expected if value not in counts]
            raise AssertionError(
                f"output partition {partition} (seed {seed}): {len(committed)} records for {len(expected)} inputs; "
                f"duplicated {duplicated[:5]}, missing {missing[:5]}"
            )
        uncommitted = [message.value() for message in read_partition(bootstrap, output_topic, partition)]
        # Whatever only read_uncommitted sees is a copy of an output record from an aborted
        # transaction (or one a killed instance left open and its successor aborted).
        assert set(uncommitted) == set(expected)
        committed_total += len(committed)
        uncommitted_total += len(uncommitted)
    assert committed_total == TRANSFORM_RECORDS
    assert uncommitted_total > committed_total, "no aborted record reached the output topic"
    for partition, values in inputs.items():
        assert committed_offset(bootstrap, group, input_topic, partition) == len(values)
    print(f"transform: {kills} kills, {uncommitted_total - committed_total} aborted records (seed {seed})")


# --- Zombie fencing -----------------------------------------------------------------------------

# The errors a fenced confluent-kafka producer may report: librdkafka's own, or the broker's.
FENCING_ERRORS = {KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH}


def transactional_producer(bootstrap: str, transactional_id: str, **config):
    return ck.producer(
        bootstrap,
        **{
            "transactional.id": transactional_id,
            "enable.idempotence": True,
            "transaction.timeout.ms": 30_000,
            "message.timeout.ms": 30_000,
            **config,
        },
    )


def assert_fenced(exception: KafkaException, what: str) -> None:
    error = exception.args[0]
    assert error.code() in FENCING_ERRORS and error.fatal(), f"{what}: expected a fatal fencing error, got {error}"


def test_a_new_producer_with_the_same_transactional_id_fences_the_old_one(bootstrap, topic_name):
    """Zombie fencing: a second producer with the same transactional.id fences the first, whose
    next produce (to a partition its transaction already holds) or commit fails with a fatal
    fencing error; nothing it sends after being fenced reaches the log, and only the transactions
    of the current producer are ever visible to read_committed."""
    ck.create_topic(bootstrap, topic_name)
    transactional_id = f"{topic_name}-txn"

    # The first producer is fenced in the middle of a transaction, then tries to carry on.
    first = transactional_producer(bootstrap, transactional_id)
    first.init_transactions(CLIENT_TIMEOUT_S)
    first.begin_transaction()
    first.produce(topic_name, b"first: aborted by the fencing", partition=0)
    assert first.flush(CLIENT_TIMEOUT_S) == 0
    second = transactional_producer(bootstrap, transactional_id)
    second.init_transactions(CLIENT_TIMEOUT_S)
    with pytest.raises(KafkaException) as raised:
        first.produce(topic_name, b"first: zombie write", partition=0)
        first.flush(CLIENT_TIMEOUT_S)
        first.commit_transaction(CLIENT_TIMEOUT_S)
    assert_fenced(raised.value, "the zombie's produce")

    # The second commits one transaction, and is fenced by a third in the middle of the next:
    # its commit (EndTxn) is refused.
    second.begin_transaction()
    second.produce(topic_name, b"second: committed", partition=0)
    second.commit_transaction(CLIENT_TIMEOUT_S)
    second.begin_transaction()
    second.produce(topic_name, b"second: aborted by the fencing", partition=0)
    assert second.flush(CLIENT_TIMEOUT_S) == 0
    third = transactional_producer(bootstrap, transactional_id)
    third.init_transactions(CLIENT_TIMEOUT_S)
    with pytest.raises(KafkaException) as raised:
        second.commit_transaction(CLIENT_TIMEOUT_S)
    assert_fenced(raised.value, "the zombie's commit")
    third.begin_transaction()
    third.produce(topic_name, b"third: committed", partition=0)
    third.commit_transaction(CLIENT_TIMEOUT_S)

    committed = [message.value() for message in read_partition(bootstrap, topic_name, 0, **READ_COMMITTED)]
    assert committed == [b"second: committed", b"third: committed"]
    everything = [message.value() for message in read_partition(bootstrap, topic_name, 0)]
    assert everything == [
        b"first: aborted by the fencing",
        b"second: committed",
        b"second: aborted by the fencing",
        b"third: committed",
    ], "the log holds something a fenced producer sent after it was fenced"


def test_a_zombie_consumers_offsets_are_refused_in_a_transaction(bootstrap, topic_name):
    """KIP-447: a transactional producer sends its consumer's group metadata with the offsets it
    commits. Once that consumer's generation is over (it left, another member took the
    partitions), the commit is refused and the transaction can only abort: neither the zombie's
    offsets nor its output become visible."""
    ck.create_topic(bootstrap, topic_name)
    output = f"{topic_name}-out"
    ck.create_topic(bootstrap, output)
    group = f"{topic_name}-group"
    ck.produce(bootstrap, topic_name, [Record(None, f"in-{index}".encode(), (), base_timestamp_ms()) for index in range(4)])

    def member():
        consumer = ck.consumer(bootstrap, **{"group.id": group, "enable.auto.commit": False,
                                             "auto.offset.reset": "earliest", **READ_COMMITTED})
        consumer.subscribe([topic_name])
        wait_until(lambda: consumer.poll(0.2) is not None or bool(consumer.assignment()),
                   timeout_s=CLIENT_TIMEOUT_S, what="the member's assignment")
        return consumer

    zombie_consumer = member()
    stale_metadata = zombie_consumer.consumer_group_metadata()
    zombie_consumer.close()  # leaves the group: its generation is over
    successor = member()  # a new generation
    producer = transactional_producer(bootstrap, f"{topic_name}-txn")
    producer.init_transactions(CLIENT_TIMEOUT_S)
    producer.begin_transaction()
    producer.produce(output, b"zombie output", partition=0)
    with pytest.raises(KafkaException) as raised:
        producer.send_offsets_to_transaction([TopicPartition(topic_name, 0, 4)], stale_metadata, CLIENT_TIMEOUT_S)
        producer.commit_transaction(CLIENT_TIMEOUT_S)
    error = raised.value.args[0]
    assert error.code() in (KafkaError.UNKNOWN_MEMBER_ID, KafkaError.ILLEGAL_GENERATION) or \
        error.txn_requires_abort(), error
    producer.abort_transaction(CLIENT_TIMEOUT_S)

    # The current member's commit in a transaction goes through.
    producer.begin_transaction()
    producer.produce(output, b"current output", partition=0)
    producer.send_offsets_to_transaction(
        [TopicPartition(topic_name, 0, 2)], successor.consumer_group_metadata(), CLIENT_TIMEOUT_S)
    producer.commit_transaction(CLIENT_TIMEOUT_S)
    committed = successor.committed([TopicPartition(topic_name, 0)], timeout=CLIENT_TIMEOUT_S)
    successor.close()
    assert committed[0].offset == 2, "the zombie's offsets (4) or nothing were committed"
    visible = [message.value() for message in read_partition(bootstrap, output, 0, **READ_COMMITTED)]
    assert visible == [b"current output"]


# --- The broker killed in the middle of a transaction -------------------------------------------

# The transaction timeout of a producer that disappears: the broker aborts its transaction after
# this long.
ABANDONED_TRANSACTION_TIMEOUT_MS = 5000
# How long after a restart the last stable offset may take to pass an abandoned transaction:
# its timeout, the broker's timer period and a margin for a slow machine.
STABLE_AFTER_RESTART_S = 30.0


def stable_offsets(bootstrap: str, topic: str, partition: int) -> tuple[int, int]:
    """(last stable offset, high watermark) as ListOffsets reports them (the latest offset for
    read_committed and read_uncommitted)."""
    committed_reader = ck.consumer(bootstrap, **READ_COMMITTED)
    uncommitted_reader = ck.consumer(bootstrap, **{"isolation.level": "read_uncommitted"})
    try:
        tp = TopicPartition(topic, partition)
        return (
            committed_reader.get_watermark_offsets(tp, timeout=CLIENT_TIMEOUT_S, cached=False)[1],
            uncommitted_reader.get_watermark_offsets(tp, timeout=CLIENT_TIMEOUT_S, cached=False)[1],
        )
    finally:
        committed_reader.close()
        uncommitted_reader.close()


def wait_until_stable(bootstrap: str, topic: str, partition: int, what: str) -> None:
    """Waits until no transaction holds back the partition's last stable offset."""
    wait_until(
        lambda: len(set(stable_offsets(bootstrap, topic, partition))) == 1,
        timeout_s=STABLE_AFTER_RESTART_S,
        what=what,
    )


def test_a_transaction_open_when_the_broker_is_killed_is_aborted_after_restart(broker_factory, topic_name, workers):
    """A transactional producer writes and never commits; the broker is SIGKILLed and so is the
    producer. After the restart the coordinator still knows the transaction and aborts it once
    its timeout (5 s) has passed, so the last stable offset moves past it: a read_committed
    consumer reaches the end and sees the plain records around the transaction and none of
    it."""
    broker = broker_factory()
    bootstrap = broker.bootstrap
    ck.create_topic(bootstrap, topic_name)

    def plain(start: int) -> list[Record]:
        return [plain_record(f"plain-{index}".encode()) for index in range(start, start + 5)]

    ck.produce(bootstrap, topic_name, plain(0), partition=0, acks="all")
    worker = workers("open", "open-transaction", bootstrap, topic_name, f"{topic_name}-txn", 20, ABANDONED_TRANSACTION_TIMEOUT_MS)
    worker.wait_for(lambda: worker.count("produced"), "the transaction's records acknowledged")
    ck.produce(bootstrap, topic_name, plain(5), partition=0, acks="all")
    assert stable_offsets(bootstrap, topic_name, 0) == (5, 30), "the open transaction holds the last stable offset"

    broker.restart(kill=True, while_down=worker.kill)
    wait_until_stable(bootstrap, topic_name, 0, "the abandoned transaction to be aborted after the restart")
    assert stable_offsets(bootstrap, topic_name, 0) == (31, 31), "20 + 10 records and the abort marker"
    committed = [message.value() for message in read_partition(bootstrap, topic_name, 0, **READ_COMMITTED)]
    assert committed == [f"plain-{index}".encode() for index in range(10)]
    everything = [message.value() for message in read_partition(bootstrap, topic_name, 0)]
    assert len(everything) == 30 and everything[5:25] == [f"open-{index}".encode() for index in range(20)]


# A transaction that stays open across broker kills: longer than the whole test, so nothing but
# the broker's own memory of it keeps its records from read_committed consumers.
LONG_TRANSACTION_TIMEOUT_MS = 120_000


def test_a_transaction_open_since_many_segments_ago_survives_broker_kills_during_snapshots(
    broker_factory, topic_name, workers
):
    """Regression (the FIXME of partition.rs): producer state was rebuilt from the last two
    segments after a restart, so a transaction that began further back was not open any more,
    and read_committed consumers were served its records, and everything after them, as
    committed. Now it is snapshotted at every segment roll (write temporary file, fsync, rename,
    fsync the directory) and rebuilt from the newest snapshot plus the batches after it.

    A transaction stays open while an idempotent producer rolls a 1 KiB segment every few
    records (a snapshot each time) and the broker is SIGKILLed three times, at whatever point of
    a roll or snapshot the kill lands. After every restart the last stable offset is still the
    transaction's first offset; once it is aborted, read_committed readers see every
    acknowledged plain record exactly once and none of the transaction's."""
    broker = broker_factory()
    bootstrap = broker.bootstrap
    ck.create_topic(bootstrap, topic_name, configs={"segment.bytes": "1024"})
    ck.produce(bootstrap, topic_name, [plain_record(b"before")], partition=0, acks="all")
    open_txn = workers("open", "open-transaction", bootstrap, topic_name, f"{topic_name}-txn", 5, LONG_TRANSACTION_TIMEOUT_MS)
    open_txn.wait_for(lambda: open_txn.count("produced"), "the transaction's records acknowledged")
    plain = workers("plain", "idempotent", bootstrap, topic_name, "plain", 1, 1_000_000, 500)
    for kill in range(3):
        plain.wait_for(lambda: plain.count("acked ") >= 400 * (kill + 1), f"{400 * (kill + 1)} plain records acknowledged")
        broker.restart(kill=True)
        stable, high = stable_offsets(bootstrap, topic_name, 0)
        assert stable == 1 and high > 100, f"after kill {kill + 1}: last stable offset {stable}, high watermark {high}"
    segments = [path for path in (broker.data_dir / f"{topic_name}-0").iterdir() if path.suffix == ".log"]
    assert len(segments) > 20, f"{len(segments)} segments: the transaction began many segments back"
    plain.kill()
    # The transaction's producer aborts it (a transaction it cannot finish, as after a crash).
    open_txn.kill()
    abort = workers("fence", "abort", bootstrap, topic_name, f"{topic_name}-txn", 0)
    abort.wait_for(lambda: abort.count("aborted"), "the transaction to be aborted by its successor")
    wait_until_stable(bootstrap, topic_name, 0, "the aborted transaction to release the last stable offset")
    committed = [message.value() for message in read_partition(bootstrap, topic_name, 0, **READ_COMMITTED)]
    assert committed[0] == b"before"
    assert not [value for value in committed if value.startswith(b"open-")], "aborted records were served"
    sequences = [int(value.split(b" ")[2]) for value in committed[1:]]
    assert sequences == list(range(len(sequences))), "plain records lost, repeated or reordered"
    acked = [int(match[2]) for line in plain.lines("acked ") if (match := ACKED.match(line))]
    assert max(acked) < len(sequences), "an acknowledged record is missing"


COMMIT_PARTITIONS = 16
# Control batches have bit 5 of a batch's attributes set (a transaction marker).
CONTROL_ATTRIBUTE = 0x20


def partitions_with_marker(data_dir: Path, topic: str, n_partitions: int) -> list[int]:
    """The partitions whose segment files hold a transaction marker, read from the data
    directory (the kernel shows a write to every reader as soon as it is made, synced or not)."""
    found = []
    for partition in range(n_partitions):
        for segment in (data_dir / f"{topic}-{partition}").glob("*.log"):
            data = segment.read_bytes()
            position = 0
            while position + 61 <= len(data):
                batch_length = int.from_bytes(data[position + 8 : position + 12], "big", signed=True)
                if batch_length <= 0:
                    break
                attributes = int.from_bytes(data[position + 21 : position + 23], "big")
                if attributes & CONTROL_ATTRIBUTE:
                    found.append(partition)
                    break
                position += 12 + batch_length
    return sorted(set(found))


def wait_for_marker(data_dir: Path, topic: str, partition: int, timeout_s: float = WORKER_TIMEOUT_S) -> None:
    """Busy-waits until a marker lands in `partition` (so a kill right after lands inside the
    broker's EndTxn work)."""
    deadline = time.monotonic() + timeout_s
    segment_dir = data_dir / f"{topic}-{partition}"
    last_size = -1
    while time.monotonic() < deadline:
        size = sum(segment.stat().st_size for segment in segment_dir.glob("*.log"))
        if size != last_size:
            last_size = size
            if partition in partitions_with_marker(data_dir, topic, partition + 1):
                return
    raise AssertionError(f"no transaction marker in {topic}-{partition} within {timeout_s}s")


@pytest.mark.parametrize("kill_at", ["end-txn-unread", "first-marker-written", "last-marker-written"])
def test_a_commit_cut_short_by_a_broker_kill_completes_everywhere_or_nowhere(
    broker_factory, topic_name, workers, kill_at
):
    """A transaction over 16 partitions; the broker is SIGKILLed in the middle of the commit:
    with the producer's EndTxn sent but not yet read (the broker is stopped with SIGSTOP while
    the producer commits), right after the first partition's commit marker is written (fifteen
    still to come), or right after the last one (the coordinator has yet to record the commit
    complete and answer). It restarts on the same port and the producer, still alive, retries
    its commit. Whatever the producer is finally told, every partition agrees with it:
    read_committed sees the transaction's records in all 16 partitions (committed) or in none
    (aborted), and the last stable offset reaches the high watermark everywhere."""
    broker = broker_factory()
    bootstrap = broker.bootstrap
    ck.create_topic(bootstrap, topic_name, COMMIT_PARTITIONS)
    per_partition = 5
    worker = workers("commit", "commit", bootstrap, topic_name, f"{topic_name}-txn", COMMIT_PARTITIONS, per_partition)
    worker.wait_for(lambda: worker.count("ready"), "the transaction's records acknowledged")
    # Freeze the broker, let the producer send its EndTxn into the frozen broker's socket, then
    # let the broker go on only as far as the case wants before killing it.
    broker.process.send_signal(signal.SIGSTOP)
    try:
        worker.send("commit")
        worker.wait_for(lambda: worker.count("committing"), "the producer to start its commit")
        time.sleep(0.3)
        if kill_at != "end-txn-unread":
            broker.process.send_signal(signal.SIGCONT)
            partition = 0 if kill_at == "first-marker-written" else COMMIT_PARTITIONS - 1
            wait_for_marker(broker.data_dir, topic_name, partition)
    finally:
        marked_at_kill: list[int] = []
        broker.restart(
            kill=True,
            while_down=lambda: marked_at_kill.extend(
                partitions_with_marker(broker.data_dir, topic_name, COMMIT_PARTITIONS)
            ),
        )
    assert worker.finish() == 0, worker.describe()
    outcome = worker.lines()[-1]
    assert outcome in ("committed", "aborted"), worker.describe()
    completed_at_start = any("completed a transaction interrupted by a restart" in line for line in broker.lines)
    # Shown with -s: where the kill landed.
    print(
        f"killed at {kill_at}: markers in {len(marked_at_kill)} of {COMMIT_PARTITIONS} partitions; "
        f"completed by the restarted broker: {completed_at_start}; the producer was told: {outcome}"
    )
    if kill_at == "end-txn-unread":
        assert marked_at_kill == [], "the frozen broker wrote markers"

    for partition in range(COMMIT_PARTITIONS):
        wait_until_stable(bootstrap, topic_name, partition, f"partition {partition}'s last stable offset to move on")
        committed = [message.value() for message in read_partition(bootstrap, topic_name, partition, **READ_COMMITTED)]
        expected = [f"txn-{partition}-{index}".encode() for index in range(per_partition)]
        assert committed == (expected if outcome == "committed" else []), f"partition {partition} after '{outcome}'"


def test_an_abort_whose_index_entry_was_not_written_stays_hidden_from_read_committed(
    broker_factory, topic_name, workers
):
    """The broker writes an abort marker to the log, then the aborted range to the partition's
    aborted-transaction file (what read_committed fetches list for clients to skip). Here the
    second write fails (a directory squats the file's name), then the broker is SIGKILLed: the
    state a crash between the two writes leaves. Meanwhile the transaction must stay open (the
    last stable offset before its records); after the restart the entry is restored from the
    marker, and read_committed consumers never see the aborted records."""
    broker = broker_factory()
    bootstrap = broker.bootstrap
    ck.create_topic(bootstrap, topic_name)
    squatter = broker.data_dir / f"{topic_name}-0" / "aborted-transactions"
    squatter.mkdir()
    worker = workers("abort", "abort", bootstrap, topic_name, f"{topic_name}-txn", 5)
    worker.wait_for(lambda: worker.count("aborting"), "the transaction's records acknowledged")
    wait_until(
        lambda: partitions_with_marker(broker.data_dir, topic_name, 1) == [0],
        timeout_s=WORKER_TIMEOUT_S,
        what="the abort marker in the log",
    )
    # (The high watermark may not count the marker yet: its fsync waits for the next append.)
    assert stable_offsets(bootstrap, topic_name, 0)[0] == 0, (
        "read_committed may read the aborted records while their entry is missing"
    )

    def repair() -> None:
        worker.kill()
        squatter.rmdir()

    broker.restart(kill=True, while_down=repair)
    wait_until_stable(bootstrap, topic_name, 0, "the last stable offset to move on after the restart")
    assert any("restoring an aborted transaction" in line for line in broker.lines), broker.log_tail()
    assert read_partition(bootstrap, topic_name, 0, **READ_COMMITTED) == []
    everything = [message.value() for message in read_partition(bootstrap, topic_name, 0)]
    assert everything == [f"aborted-{index}".encode() for index in range(5)]


# --- Other clients' transactional producers -----------------------------------------------------


def committed_offset(bootstrap: str, group: str, topic: str, partition: int) -> int:
    reader = ck.consumer(bootstrap, **{"group.id": group})
    try:
        return reader.committed([TopicPartition(topic, partition)], timeout=CLIENT_TIMEOUT_S)[0].offset
    finally:
        reader.close()


# Three transactions every client runs: a commit with offsets of a group, an abort whose group
# offsets must be dropped with it, and a commit without offsets.
TRANSACTIONS = [
    {"values": [f"committed-{index}" for index in range(5)], "commit": True, "offset": 5},
    {"values": [f"aborted-{index}" for index in range(5)], "commit": False, "offset": 100},
    {"values": [f"committed-{index}" for index in range(5, 10)], "commit": True, "offset": None},
]


def assert_transactions_applied(bootstrap: str, topic: str, group: str) -> None:
    committed = [message.value().decode() for message in read_partition(bootstrap, topic, 0, **READ_COMMITTED)]
    assert committed == [f"committed-{index}" for index in range(10)]
    everything = [message.value().decode() for message in read_partition(bootstrap, topic, 0)]
    assert everything == [value for transaction in TRANSACTIONS for value in transaction["values"]]
    assert committed_offset(bootstrap, group, topic, 0) == 5, "the aborted transaction's offsets were applied"


def test_kafka_python_transactions_commit_and_abort(bootstrap, topic_name):
    """kafka-python 3.0's transactional producer: commit, abort and offsets sent in a
    transaction (send_offsets_to_transaction), checked by read_committed and read_uncommitted
    readers and the group's committed offset."""
    from kafka import KafkaProducer
    from kafka import TopicPartition as KafkaPythonTopicPartition
    from kafka.structs import OffsetAndMetadata

    ck.create_topic(bootstrap, topic_name)
    group = f"{topic_name}-group"
    producer = KafkaProducer(
        bootstrap_servers=bootstrap,
        client_id="interop-kafka-python",
        transactional_id=f"{topic_name}-txn",
        request_timeout_ms=int(CLIENT_TIMEOUT_S * 1000),
    )
    try:
        producer.init_transactions()
        for transaction in TRANSACTIONS:
            producer.begin_transaction()
            for value in transaction["values"]:
                producer.send(topic_name, value.encode(), partition=0)
            if transaction["offset"] is not None:
                offsets = {KafkaPythonTopicPartition(topic_name, 0): OffsetAndMetadata(transaction["offset"], "", -1)}
                producer.send_offsets_to_transaction(offsets, group)
            if transaction["commit"]:
                producer.commit_transaction()
            else:
                # Make sure the records are in the log before the abort.
                producer.flush(timeout=CLIENT_TIMEOUT_S)
                producer.abort_transaction()
    finally:
        producer.close(timeout=CLIENT_TIMEOUT_S)
    assert_transactions_applied(bootstrap, topic_name, group)


def test_kafkajs_transactions_commit_and_abort(bootstrap, topic_name):
    """kafkajs 2.2's transactional producer (idempotent, maxInFlightRequests 1, through
    producer.transaction()): commit, abort and sendOffsets, checked as for kafka-python."""
    ck.create_topic(bootstrap, topic_name)
    group = f"{topic_name}-group"
    request = {
        "transactions": [
            {
                "values": transaction["values"],
                "commit": transaction["commit"],
                **({"offsets": {"group": group, "partition": 0, "offset": transaction["offset"]}} if transaction["offset"] is not None else {}),
            }
            for transaction in TRANSACTIONS
        ]
    }
    result = run_kafkajs("transaction.mjs", bootstrap, topic_name, f"{topic_name}-txn", request=request)
    assert result == {"transactions": len(TRANSACTIONS)}, result
    assert_transactions_applied(bootstrap, topic_name, group)


# --- The benchmark ------------------------------------------------------------------------------

BENCH_LINE = re.compile(r"^(idempotent|transactional)\s+(\d+) records in\s+[\d.]+ s:\s+\d+ records/s,\s+[\d.]+ MB/s", re.M)


def test_the_transactions_benchmark_runs(broker_factory):
    """bench_transactions.py (transactional produce committing every 100 ms against idempotent
    produce) runs to the end against a broker of its own, for half a second a phase. Only that
    it works is checked here; its figures mean something against a release build (see its
    docstring)."""
    broker = broker_factory()
    completed = run_program(
        [sys.executable, str(INTEROP_DIR / "bench_transactions.py"), "--bootstrap", broker.bootstrap, "--duration-s", "0.5"]
    )
    assert completed.returncode == 0, f"stdout: {completed.stdout}\nstderr: {completed.stderr[-4000:]}"
    phases = {name: int(count) for name, count in BENCH_LINE.findall(completed.stdout)}
    assert set(phases) == {"idempotent", "transactional"} and all(phases.values()), completed.stdout
