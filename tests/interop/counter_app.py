"""A stateful stream-processing app in the shape of Kafka Streams, for test_compaction.py: a keyed
counter whose state lives in a compacted changelog topic. The test runs it as a child process
and kills it with SIGKILL at any moment.

  counter_app.py [--client kafka-python] BOOTSTRAP INPUT CHANGELOG GROUP TRANSACTIONAL_ID

It runs on confluent-kafka (the default) or on kafka-python 3 (`--client kafka-python`), the
same app written against each client's own transactional API.

On start it fences any earlier instance (init_transactions, which aborts that instance's open
transaction), then restores its state by reading the changelog from the beginning to its end
(read_committed; the end is the partition EOF, so gaps left by compaction do not matter): the
latest value of each key is its count, a null value deletes it. Then it consumes INPUT
(read_committed, group GROUP) and for each record adds one to its key's count and writes the new
count to the changelog, committing the changelog records and the input offsets in one
transaction per batch, exactly once, as Kafka Streams does with exactly_once_v2.

Prints "restored KEYS RECORDS" (keys restored, changelog records read), "committed N" per
transaction, and once every input partition is committed to its end "state JSON" (the counts)
and "caught-up", then exits. Every line is flushed at once; every wait is bounded.
"""

from __future__ import annotations

import json
import sys
import time

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

OPERATION_TIMEOUT_S = 60.0
RUN_LIMIT_S = 180.0
BATCH = 50


def emit(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def restore(bootstrap: str, changelog: str) -> dict[str, int]:
    """The counts the changelog holds: read from its start to the partition's end."""
    reader = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "counter-restore",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
        }
    )
    counts: dict[str, int] = {}
    n_records = 0
    try:
        reader.assign([TopicPartition(changelog, 0, 0)])
        deadline = time.monotonic() + OPERATION_TIMEOUT_S
        while time.monotonic() < deadline:
            message = reader.poll(0.5)
            if message is None:
                continue
            if message.error() is not None:
                if message.error().code() == KafkaError._PARTITION_EOF:
                    return counts_and_report(counts, n_records)
                raise KafkaException(message.error())
            n_records += 1
            key = message.key().decode()
            if message.value() is None:
                counts.pop(key, None)
            else:
                counts[key] = int(message.value())
        raise TimeoutError(f"the changelog's end was not reached in {OPERATION_TIMEOUT_S}s")
    finally:
        reader.close()


def counts_and_report(counts: dict[str, int], n_records: int) -> dict[str, int]:
    emit(f"restored {len(counts)} {n_records}")
    return counts


def caught_up(consumer: Consumer, topic: str) -> bool:
    assignment = consumer.assignment()
    if not assignment:
        return False
    n_partitions = len(consumer.list_topics(topic, timeout=OPERATION_TIMEOUT_S).topics[topic].partitions)
    if len(assignment) != n_partitions:
        return False
    for committed in consumer.committed(assignment, timeout=OPERATION_TIMEOUT_S):
        _, high = consumer.get_watermark_offsets(TopicPartition(topic, committed.partition), timeout=OPERATION_TIMEOUT_S)
        if committed.offset != high:
            return False
    return True


def main(bootstrap: str, input_topic: str, changelog: str, group: str, transactional_id: str) -> None:
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "transactional.id": transactional_id,
            "transaction.timeout.ms": 10_000,
            "message.timeout.ms": 10_000,
            "linger.ms": 5,
            # A compacted topic takes no compressed batches (Tidewater refuses them).
            "compression.type": "none",
        }
    )
    producer.init_transactions(OPERATION_TIMEOUT_S)
    counts = restore(bootstrap, changelog)
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "group.instance.id": f"{transactional_id}-member",
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 500,
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": 100,
        }
    )
    consumer.subscribe([input_topic])
    deadline = time.monotonic() + RUN_LIMIT_S
    while time.monotonic() < deadline:
        messages = consumer.consume(num_messages=BATCH, timeout=0.5)
        for message in messages:
            if message.error() is not None:
                raise KafkaException(message.error())
        if not messages:
            if caught_up(consumer, input_topic):
                emit("state " + json.dumps(counts, sort_keys=True))
                emit("caught-up")
                consumer.close()
                return
            continue
        producer.begin_transaction()
        next_offsets: dict[int, int] = {}
        # Counts change only once the transaction commits: an abort must leave them as they were.
        pending = dict(counts)
        for message in messages:
            key = message.key().decode()
            pending[key] = pending.get(key, 0) + 1
            producer.produce(changelog, key=key.encode(), value=str(pending[key]).encode(), partition=0)
            next_offsets[message.partition()] = message.offset() + 1
        offsets = [TopicPartition(input_topic, partition, offset) for partition, offset in next_offsets.items()]
        producer.send_offsets_to_transaction(offsets, consumer.consumer_group_metadata(), OPERATION_TIMEOUT_S)
        producer.commit_transaction(OPERATION_TIMEOUT_S)
        counts = pending
        emit(f"committed {len(messages)}")
    emit("gave-up")
    sys.exit(3)


# --- The same app on kafka-python ------------------------------------------------------------------


def restore_kafka_python(bootstrap: str, changelog: str) -> dict[str, int]:
    """The counts the changelog holds, read with kafka-python (read_committed) from the log start
    until its position reaches the end offset (the last stable offset): compaction's gaps and the
    transaction markers are stepped over by the position, not by the offsets of records seen."""
    from kafka import KafkaConsumer
    from kafka import TopicPartition as KafkaPythonPartition

    reader = KafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        isolation_level="read_committed",
        request_timeout_ms=int(OPERATION_TIMEOUT_S * 1000),
    )
    counts: dict[str, int] = {}
    n_records = 0
    try:
        partition = KafkaPythonPartition(changelog, 0)
        reader.assign([partition])
        reader.seek_to_beginning(partition)
        end = reader.end_offsets([partition])[partition]
        deadline = time.monotonic() + OPERATION_TIMEOUT_S
        while reader.position(partition) < end:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the changelog's end {end} was not reached in {OPERATION_TIMEOUT_S}s")
            for batch in reader.poll(timeout_ms=500).values():
                for record in batch:
                    n_records += 1
                    key = record.key.decode()
                    if record.value is None:
                        counts.pop(key, None)
                    else:
                        counts[key] = int(record.value)
        return counts_and_report(counts, n_records)
    finally:
        reader.close()


def main_kafka_python(bootstrap: str, input_topic: str, changelog: str, group: str, transactional_id: str) -> None:
    from kafka import KafkaConsumer, KafkaProducer
    from kafka import TopicPartition as KafkaPythonPartition
    from kafka.structs import OffsetAndMetadata

    timeout_ms = int(OPERATION_TIMEOUT_S * 1000)
    producer = KafkaProducer(
        bootstrap_servers=bootstrap,
        transactional_id=transactional_id,
        transaction_timeout_ms=10_000,
        request_timeout_ms=10_000,
        linger_ms=5,
    )
    producer.init_transactions()
    counts = restore_kafka_python(bootstrap, changelog)
    consumer = KafkaConsumer(
        input_topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        session_timeout_ms=6000,
        heartbeat_interval_ms=500,
        max_poll_interval_ms=10_000,
        isolation_level="read_committed",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=100,
        request_timeout_ms=timeout_ms,
    )

    def caught_up_kafka_python() -> bool:
        assignment = consumer.assignment()
        partitions = consumer.partitions_for_topic(input_topic) or set()
        if not assignment or len(assignment) != len(partitions):
            return False
        ends = consumer.end_offsets(list(assignment))
        for partition in assignment:
            committed = consumer.committed(partition)
            committed = getattr(committed, "offset", committed)
            if committed != ends[partition]:
                return False
        return True

    deadline = time.monotonic() + RUN_LIMIT_S
    while time.monotonic() < deadline:
        batches = consumer.poll(timeout_ms=500, max_records=BATCH)
        messages = [record for batch in batches.values() for record in batch]
        if not messages:
            if caught_up_kafka_python():
                emit("state " + json.dumps(counts, sort_keys=True))
                emit("caught-up")
                consumer.close()
                producer.close(timeout=OPERATION_TIMEOUT_S)
                return
            continue
        producer.begin_transaction()
        next_offsets: dict[int, int] = {}
        # Counts change only once the transaction commits: an abort must leave them as they were.
        pending = dict(counts)
        for record in messages:
            key = record.key.decode()
            pending[key] = pending.get(key, 0) + 1
            producer.send(changelog, key=key.encode(), value=str(pending[key]).encode(), partition=0)
            next_offsets[record.partition] = record.offset + 1
        offsets = {
            KafkaPythonPartition(input_topic, partition): OffsetAndMetadata(offset, "", -1)
            for partition, offset in next_offsets.items()
        }
        producer.send_offsets_to_transaction(offsets, group)
        producer.commit_transaction()
        counts = pending
        emit(f"committed {len(messages)}")
    emit("gave-up")
    sys.exit(3)


if __name__ == "__main__":
    arguments = sys.argv[1:]
    if arguments[:2] == ["--client", "kafka-python"]:
        main_kafka_python(*arguments[2:])
    else:
        main(*arguments)
