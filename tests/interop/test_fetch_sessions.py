"""Fetch sessions (KIP-227) with consumers of 100 partitions: kafka-python opens a session with
one full fetch and then sends only what changed, which the broker's fetch counters on /metrics
show as partitions named per request; librdkafka (confluent-kafka) is answered as it asks. Every
record is read once, in order, either way."""

from __future__ import annotations

import time

from confluent_kafka import Consumer, Producer, TopicPartition as ConfluentPartition
from kafka import KafkaConsumer, TopicPartition

from metrics_support import scrape
from trigger_support import tidewater

PARTITIONS = 100
NO_GATEWAY = ("--mqtt-listen", "none", "--http-listen", "none")
TIMEOUT_S = 60.0


def produce(bootstrap: str, topic: str, records: list[tuple[int, bytes]]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for partition, value in records:
        producer.produce(topic, value, partition=partition)
    assert producer.flush(30) == 0


def read_with_kafka_python(consumer: KafkaConsumer, expected: int) -> list[tuple[int, int, bytes]]:
    got: list[tuple[int, int, bytes]] = []
    deadline = time.monotonic() + TIMEOUT_S
    while len(got) < expected and time.monotonic() < deadline:
        for partition, messages in consumer.poll(timeout_ms=500).items():
            got.extend((partition.partition, message.offset, message.value) for message in messages)
    return got


def idle(consumer: KafkaConsumer, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert not consumer.poll(timeout_ms=200)


def fetch_counts(port: int) -> dict[str, tuple[float, float]]:
    """(requests, partitions named) by kind of fetch."""
    page = scrape(port)
    return {
        kind: (page.get("tidewater_fetch_requests_total", kind=kind),
               page.get("tidewater_fetch_request_partitions_total", kind=kind))
        for kind in ("sessionless", "full", "incremental")
    }


def test_kafka_python_fetches_incrementally_and_reads_every_record(broker_factory, topic_name):
    broker = broker_factory(*NO_GATEWAY)
    tidewater("topic", "create", topic_name, "--partitions", str(PARTITIONS), bootstrap=broker.bootstrap)
    first = [(partition, f"first-{partition}".encode()) for partition in range(PARTITIONS)]
    produce(broker.bootstrap, topic_name, first)
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, auto_offset_reset="earliest",
                             enable_auto_commit=False, fetch_max_wait_ms=100, consumer_timeout_ms=1000)
    try:
        consumer.assign([TopicPartition(topic_name, partition) for partition in range(PARTITIONS)])
        got = read_with_kafka_python(consumer, PARTITIONS)
        assert sorted(got) == sorted((partition, 0, value) for partition, value in first)
        # The first incremental fetch names all 100 partitions (every offset moved on); from then
        # on, quiet partitions are named no more.
        idle(consumer, 1.0)
        before = fetch_counts(broker.admin_port)
        later = [(7, f"later-{index}".encode()) for index in range(20)]
        produce(broker.bootstrap, topic_name, later)
        got = read_with_kafka_python(consumer, len(later))
        assert got == [(7, 1 + index, value) for index, (_, value) in enumerate(later)], got[:5]
        idle(consumer, 2.0)
        after = fetch_counts(broker.admin_port)
    finally:
        consumer.close()
    full_requests, full_partitions = after["full"]
    assert full_requests >= 1 and full_partitions >= PARTITIONS, after
    requests = after["incremental"][0] - before["incremental"][0]
    named = after["incremental"][1] - before["incremental"][1]
    # Without sessions every fetch names all 100 partitions; with them, only partition 7 when
    # its offset moved.
    assert requests >= 3, (before, after)
    assert 1 <= named <= requests, (requests, named)
    assert after["sessionless"][0] - before["sessionless"][0] == 0, (before, after)


def test_librdkafka_consumers_of_100_partitions_read_every_record(broker_factory, topic_name):
    """librdkafka asks for no session (epoch -1): every fetch is full and sessionless, and is
    answered in full."""
    broker = broker_factory(*NO_GATEWAY)
    tidewater("topic", "create", topic_name, "--partitions", str(PARTITIONS), bootstrap=broker.bootstrap)
    records = [(partition, f"{partition}-{index}".encode()) for index in range(3) for partition in range(PARTITIONS)]
    produce(broker.bootstrap, topic_name, records)
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": f"g-{topic_name}",
                         "enable.auto.commit": False, "fetch.wait.max.ms": 100})
    got: list[tuple[int, int, bytes]] = []
    try:
        consumer.assign([ConfluentPartition(topic_name, partition, 0) for partition in range(PARTITIONS)])
        deadline = time.monotonic() + TIMEOUT_S
        while len(got) < len(records) and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                got.append((message.partition(), message.offset(), message.value()))
    finally:
        consumer.close()
    expected = sorted((partition, index, f"{partition}-{index}".encode()) for index in range(3) for partition in range(PARTITIONS))
    assert sorted(got) == expected
    counts = fetch_counts(broker.admin_port)
    total = sum(requests for requests, _ in counts.values())
    assert total > 0 and counts["sessionless"][0] + counts["full"][0] + counts["incremental"][0] == total, counts
