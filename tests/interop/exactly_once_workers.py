"""Client programs the exactly-once tests (test_exactly_once.py) run as child processes, so the
tests can kill them with SIGKILL at any moment, as a crash would:

  idempotent BOOTSTRAP TOPIC RUN_ID N_PARTITIONS PER_PARTITION RATE
      An idempotent producer (confluent-kafka, acks=all, 5 requests in flight) writing
      PER_PARTITION records to each partition, RATE records a second in all. Each value carries
      "RUN_ID PARTITION SEQUENCE", the sequence counting from 0 per partition, so a reader can
      tell duplicates, gaps and reordering apart. Prints "acked P S" for every acknowledged
      record and "failed P S NAME" for every failed one.
  transform BOOTSTRAP INPUT OUTPUT GROUP TRANSACTIONAL_ID BATCH PAUSE_MS [ABORT_AFTER]
      A consume-transform-produce loop: reads INPUT (read_committed, group GROUP with a static
      member id), writes each record transformed to the same partition of OUTPUT, and commits
      the input offsets in the same transaction (send_offsets_to_transaction). PAUSE_MS (a
      random 0..PAUSE_MS) is spent inside each transaction so a kill often lands in one. With
      ABORT_AFTER it commits that many transactions, then writes one more batch, aborts it
      explicitly and exits. Prints "committed N" per transaction and "caught-up" (then exits)
      once every input partition's committed position is its high watermark.
  open-transaction BOOTSTRAP TOPIC TRANSACTIONAL_ID COUNT TIMEOUT_MS
      Begins a transaction, writes COUNT records to partition 0, waits for their
      acknowledgement, prints "produced", then waits without ever committing.
  abort BOOTSTRAP TOPIC TRANSACTIONAL_ID COUNT
      Begins a transaction, writes COUNT records to partition 0, waits for their
      acknowledgement, prints "aborting" and aborts it; prints "aborted" or "abort-error NAME",
      then waits to be killed.
  commit BOOTSTRAP TOPIC TRANSACTIONAL_ID N_PARTITIONS PER_PARTITION
      Writes PER_PARTITION records to each partition in one transaction, prints "ready", waits
      for a line on stdin, prints "committing" and commits, retrying retriable errors; prints
      "committed" or "aborted" with the outcome.

Every line is flushed at once, so whatever a worker printed before it was killed reaches the
test. A worker prints "error NAME fatal=..." for client errors and exits non-zero on an
unexpected one; every wait inside it is bounded.
"""

from __future__ import annotations

import random
import sys
import time

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

# How long a worker waits for one client operation (a commit, a flush) before it gives up.
OPERATION_TIMEOUT_S = 60.0
# A record's delivery deadline: longer than any broker restart the tests cause.
MESSAGE_TIMEOUT_MS = 120_000
# Quick reconnects, so a restarted broker is found again at once.
RECONNECT = {"reconnect.backoff.ms": 50, "reconnect.backoff.max.ms": 500, "retry.backoff.ms": 50}


def emit(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def on_client_error(error: KafkaError) -> None:
    # Connection errors while a broker restarts are expected; the test decides what matters.
    emit(f"error {error.name()} fatal={error.fatal()} {error.str()}")


def idempotent(bootstrap: str, topic: str, run_id: str, n_partitions: str, per_partition: str, rate: str) -> None:
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "client.id": f"eos-idempotent-{run_id}",
            "enable.idempotence": True,
            "acks": "all",
            "max.in.flight.requests.per.connection": 5,
            "linger.ms": 5,
            "message.timeout.ms": MESSAGE_TIMEOUT_MS,
            "error_cb": on_client_error,
            **RECONNECT,
        }
    )

    def report(error: KafkaError | None, message) -> None:
        _, partition, sequence = message.value().split(b" ")[:3]
        if error is None:
            emit(f"acked {int(partition)} {int(sequence)}")
        else:
            emit(f"failed {int(partition)} {int(sequence)} {error.name()}")

    started = time.monotonic()
    sent = 0
    for sequence in range(int(per_partition)):
        for partition in range(int(n_partitions)):
            value = f"{run_id} {partition} {sequence} ".encode().ljust(100, b".")
            while True:
                try:
                    producer.produce(topic, value, partition=partition, on_delivery=report)
                    break
                except BufferError:
                    producer.poll(0.05)
            sent += 1
        producer.poll(0)
        # Keep to the rate, so there is always something in flight when the test strikes.
        ahead_s = sent / float(rate) - (time.monotonic() - started)
        if ahead_s > 0:
            producer.poll(ahead_s)
    remaining = producer.flush(OPERATION_TIMEOUT_S * 2)
    emit(f"done {remaining}")


def transform(
    bootstrap: str,
    input_topic: str,
    output_topic: str,
    group: str,
    transactional_id: str,
    batch: str,
    pause_ms: str,
    abort_after: str | None = None,
) -> None:
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "client.id": "eos-transform",
            "transactional.id": transactional_id,
            "transaction.timeout.ms": 10_000,
            "linger.ms": 5,
            # librdkafka requires it to be at most the transaction timeout.
            "message.timeout.ms": 10_000,
            "error_cb": on_client_error,
            **RECONNECT,
        }
    )
    # First fence any previous instance (aborting its open transaction), then read the offsets
    # it committed: the new instance starts exactly where the last committed transaction ended.
    producer.init_transactions(OPERATION_TIMEOUT_S)
    emit("initialised")
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "client.id": "eos-transform",
            "group.id": group,
            # A static member: a restarted instance takes over the killed one's place at once
            # instead of waiting for its session to expire.
            "group.instance.id": f"{transactional_id}-member",
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 500,
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": 100,
            "error_cb": on_client_error,
            **RECONNECT,
        }
    )
    consumer.subscribe([input_topic])
    n_input_partitions = len(consumer.list_topics(input_topic, timeout=OPERATION_TIMEOUT_S).topics[input_topic].partitions)
    rng = random.Random()
    n_committed = 0
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        messages = consumer.consume(num_messages=int(batch), timeout=0.5)
        for message in messages:
            if message.error() is not None:
                raise KafkaException(message.error())
        if not messages:
            if caught_up(consumer, input_topic, n_input_partitions):
                consumer.close()
                emit("caught-up")
                return
            continue
        producer.begin_transaction()
        next_offsets: dict[int, int] = {}
        for message in messages:
            producer.produce(
                output_topic,
                key=message.key(),
                value=b"out:" + message.value(),
                partition=message.partition(),
                headers=[("instance", transactional_id.encode()), ("txn", str(n_committed).encode())],
            )
            next_offsets[message.partition()] = message.offset() + 1
        producer.poll(0)
        time.sleep(rng.uniform(0, int(pause_ms)) / 1000)
        if abort_after is not None and n_committed == int(abort_after):
            # Make sure the records are in the log before the abort, so a read_uncommitted
            # reader has something aborted to see.
            assert producer.flush(OPERATION_TIMEOUT_S) == 0
            producer.abort_transaction(OPERATION_TIMEOUT_S)
            emit(f"aborted {len(messages)}")
            return
        offsets = [TopicPartition(input_topic, partition, offset) for partition, offset in next_offsets.items()]
        producer.send_offsets_to_transaction(offsets, consumer.consumer_group_metadata(), OPERATION_TIMEOUT_S)
        producer.commit_transaction(OPERATION_TIMEOUT_S)
        n_committed += 1
        emit(f"committed {len(messages)}")
    emit("gave-up")
    sys.exit(3)


def caught_up(consumer: Consumer, topic: str, n_partitions: int) -> bool:
    """Whether this instance holds every input partition and has committed all of each."""
    assignment = consumer.assignment()
    if len(assignment) != n_partitions:
        return False
    for committed in consumer.committed(assignment, timeout=OPERATION_TIMEOUT_S):
        _, high = consumer.get_watermark_offsets(TopicPartition(topic, committed.partition), timeout=OPERATION_TIMEOUT_S)
        if committed.offset != high:
            return False
    return True


def transactional_producer(bootstrap: str, transactional_id: str, timeout_ms: int) -> Producer:
    return Producer(
        {
            "bootstrap.servers": bootstrap,
            "client.id": "eos-transactional",
            "transactional.id": transactional_id,
            "transaction.timeout.ms": timeout_ms,
            "linger.ms": 5,
            # librdkafka requires it to be at most the transaction timeout.
            "message.timeout.ms": min(MESSAGE_TIMEOUT_MS, timeout_ms),
            "error_cb": on_client_error,
            **RECONNECT,
        }
    )


def open_transaction(bootstrap: str, topic: str, transactional_id: str, count: str, timeout_ms: str) -> None:
    producer = transactional_producer(bootstrap, transactional_id, int(timeout_ms))
    producer.init_transactions(OPERATION_TIMEOUT_S)
    producer.begin_transaction()
    for index in range(int(count)):
        producer.produce(topic, f"open-{index}".encode(), partition=0)
    assert producer.flush(OPERATION_TIMEOUT_S) == 0
    emit("produced")
    # Wait (bounded) for the test to kill us; never commit.
    time.sleep(120)
    sys.exit(3)


def abort(bootstrap: str, topic: str, transactional_id: str, count: str) -> None:
    producer = transactional_producer(bootstrap, transactional_id, 60_000)
    producer.init_transactions(OPERATION_TIMEOUT_S)
    producer.begin_transaction()
    for index in range(int(count)):
        producer.produce(topic, f"aborted-{index}".encode(), partition=0)
    assert producer.flush(OPERATION_TIMEOUT_S) == 0
    emit("aborting")
    try:
        producer.abort_transaction(OPERATION_TIMEOUT_S)
        emit("aborted")
    except KafkaException as exception:
        emit(f"abort-error {exception.args[0].name()}")
    # Wait (bounded) for the test to kill us.
    time.sleep(120)
    sys.exit(3)


def commit(bootstrap: str, topic: str, transactional_id: str, n_partitions: str, per_partition: str) -> None:
    producer = transactional_producer(bootstrap, transactional_id, 60_000)
    producer.init_transactions(OPERATION_TIMEOUT_S)
    producer.begin_transaction()
    for partition in range(int(n_partitions)):
        for index in range(int(per_partition)):
            producer.produce(topic, f"txn-{partition}-{index}".encode(), partition=partition)
    assert producer.flush(OPERATION_TIMEOUT_S) == 0
    # The test arranges the broker's fate, then tells us to go on.
    emit("ready")
    sys.stdin.readline()
    emit("committing")
    for _ in range(20):
        try:
            producer.commit_transaction(OPERATION_TIMEOUT_S)
            emit("committed")
            return
        except KafkaException as exception:
            error = exception.args[0]
            emit(f"commit-error {error.name()} retriable={error.retriable()} abortable={error.txn_requires_abort()}")
            if error.retriable():
                continue
            if error.txn_requires_abort():
                producer.abort_transaction(OPERATION_TIMEOUT_S)
                emit("aborted")
                return
            raise
    emit("gave-up")
    sys.exit(3)


WORKERS = {
    "idempotent": idempotent,
    "transform": transform,
    "open-transaction": open_transaction,
    "abort": abort,
    "commit": commit,
}

if __name__ == "__main__":
    WORKERS[sys.argv[1]](*sys.argv[2:])
