"""Per-topic `message.timestamp.type` and `message.timestamp.difference.max.ms`, as Kafka has them:
under LogAppendTime every record carries the broker's time at append, which confluent-kafka and
kafka-python report as such; a difference limit refuses a producer's stale timestamps with
INVALID_TIMESTAMP and keeps nothing of the refused batch."""

from __future__ import annotations

import time

from confluent_kafka import TIMESTAMP_CREATE_TIME, TIMESTAMP_LOG_APPEND_TIME, Consumer, KafkaError, Producer
from kafka import KafkaConsumer, TopicPartition

from trigger_support import tidewater

AN_OLD_TIME_MS = 978_307_200_000  # 2001-01-01


def produce_one(bootstrap: str, topic: str, value: bytes, timestamp_ms: int):
    """(error, message) of one record's delivery report."""
    reports = []
    producer = Producer({"bootstrap.servers": bootstrap, "message.timeout.ms": 10_000, "retries": 0})
    producer.produce(topic, value, partition=0, timestamp=timestamp_ms,
                     on_delivery=lambda error, message: reports.append((error, message)))
    assert producer.flush(30) == 0
    assert len(reports) == 1
    return reports[0]


def read_all(bootstrap: str, topic: str, count: int) -> list:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"ts-{topic}", "auto.offset.reset": "earliest",
                         "enable.auto.commit": False})
    consumer.subscribe([topic])
    got = []
    deadline = time.monotonic() + 30
    try:
        while len(got) < count and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                got.append(message)
    finally:
        consumer.close()
    return got


def test_log_append_time_gives_every_record_the_brokers_time(bootstrap, topic_name):
    tidewater("topic", "create", topic_name, "--partitions", "1", "--config", "message.timestamp.type=LogAppendTime",
              bootstrap=bootstrap)
    before = int(time.time() * 1000)
    error, delivered = produce_one(bootstrap, topic_name, b"stamped", AN_OLD_TIME_MS)
    after = int(time.time() * 1000)
    assert error is None, error
    kind, stamped = delivered.timestamp()
    assert kind == TIMESTAMP_LOG_APPEND_TIME and before <= stamped <= after, (kind, stamped, before, after)
    [message] = read_all(bootstrap, topic_name, 1)
    assert message.value() == b"stamped"
    assert message.timestamp() == (TIMESTAMP_LOG_APPEND_TIME, stamped)
    # kafka-python reads the batch's type too (1: LogAppendTime).
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False,
                             consumer_timeout_ms=10_000)
    try:
        consumer.assign([TopicPartition(topic_name, 0)])
        record = next(iter(consumer))
    finally:
        consumer.close()
    assert (record.value, record.timestamp_type, record.timestamp) == (b"stamped", 1, stamped)
    described = tidewater("topic", "describe", topic_name, bootstrap=bootstrap).stdout
    assert "message.timestamp.type" in described and "LogAppendTime" in described, described


def test_a_difference_limit_refuses_stale_timestamps_and_keeps_fresh_ones(bootstrap, topic_name):
    tidewater("topic", "create", topic_name, "--partitions", "1", "--config",
              "message.timestamp.difference.max.ms=60000", bootstrap=bootstrap)
    error, _ = produce_one(bootstrap, topic_name, b"stale", AN_OLD_TIME_MS)
    assert error is not None and error.code() == KafkaError.INVALID_TIMESTAMP, error
    now = int(time.time() * 1000)
    error, delivered = produce_one(bootstrap, topic_name, b"fresh", now)
    assert error is None and delivered.timestamp() == (TIMESTAMP_CREATE_TIME, now), error
    # Only the fresh record is in the log, at offset 0.
    [message] = read_all(bootstrap, topic_name, 1)
    assert (message.offset(), message.value()) == (0, b"fresh")
    # The limit can be lifted; bad values are refused with the reason.
    tidewater("topic", "alter", topic_name, "--delete-config", "message.timestamp.difference.max.ms", bootstrap=bootstrap)
    error, _ = produce_one(bootstrap, topic_name, b"old but allowed", AN_OLD_TIME_MS)
    assert error is None, error
    refused = tidewater("topic", "alter", topic_name, "--config", "message.timestamp.type=Sometime",
                        bootstrap=bootstrap, check=False)
    assert refused.returncode != 0 and "neither CreateTime nor LogAppendTime" in refused.stderr, refused.stderr
