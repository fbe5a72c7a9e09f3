"""confluent-kafka (librdkafka) helpers shared by several test modules: produce a list of
`Record`s and collect every delivery report, read a partition from an explicit offset with
manual assignment, and create topics with the AdminClient.

These helpers read by explicit assignment, never subscribing or committing (consumer groups are
tested in test_groups.py): librdkafka needs a `group.id` value to build a consumer, but with
`assign()` and auto-commit off it joins no group.
"""

from __future__ import annotations

import time
from typing import Any, Sequence

from confluent_kafka import (
    TIMESTAMP_CREATE_TIME,
    Consumer,
    KafkaError,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic

from support import CLIENT_TIMEOUT_S, Record

# A group id librdkafka insists on; these consumers never join the group or commit with it.
UNUSED_GROUP_ID = "tidewater-interop-no-groups"


def producer(bootstrap: str, **config: Any) -> Producer:
    settings = {
        "bootstrap.servers": bootstrap,
        "client.id": "interop-confluent",
        "linger.ms": 5,
        "message.timeout.ms": int(CLIENT_TIMEOUT_S * 1000),
        "enable.idempotence": False,
    }
    settings.update(config)
    return Producer(settings)


def consumer(bootstrap: str, **config: Any) -> Consumer:
    settings = {
        "bootstrap.servers": bootstrap,
        "client.id": "interop-confluent",
        "group.id": UNUSED_GROUP_ID,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        # An offset we did not ask for is an error, never a silent jump.
        "auto.offset.reset": "error",
    }
    settings.update(config)
    return Consumer(settings)


def admin(bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap, "client.id": "interop-confluent-admin"})


def create_topic(bootstrap: str, topic: str, n_partitions: int = 1, configs: dict[str, str] | None = None) -> None:
    # Keep the client referenced until the result is in: a collected AdminClient fails its
    # pending futures with _DESTROY.
    client = admin(bootstrap)
    futures = client.create_topics(
        [NewTopic(topic, num_partitions=n_partitions, replication_factor=1, config=configs or {})],
        request_timeout=CLIENT_TIMEOUT_S,
    )
    futures[topic].result(timeout=CLIENT_TIMEOUT_S)


def produce(
    bootstrap: str,
    topic: str,
    records: Sequence[Record],
    *,
    partition: int | None = None,
    **config: Any,
) -> list[Message]:
    """Produces `records` in order and returns each one's delivery report (same order). Fails if
    any record was not delivered."""
    client = producer(bootstrap, **config)
    reports: list[tuple[KafkaError | None, Message] | None] = [None] * len(records)

    def on_delivery(index: int):
        def record_report(error: KafkaError | None, message: Message) -> None:
            reports[index] = (error, message)

        return record_report

    for index, record in enumerate(records):
        kwargs: dict[str, Any] = {
            "key": record.key,
            "value": record.value,
            "timestamp": record.timestamp_ms,
            "on_delivery": on_delivery(index),
        }
        if record.headers:
            kwargs["headers"] = list(record.headers)
        if partition is not None:
            kwargs["partition"] = partition
        client.produce(topic, **kwargs)
        client.poll(0)
    remaining = client.flush(CLIENT_TIMEOUT_S)
    assert remaining == 0, f"{remaining} records still undelivered after {CLIENT_TIMEOUT_S}s"
    missing = [index for index, report in enumerate(reports) if report is None]
    assert not missing, f"no delivery report for records {missing[:10]}"
    errors = [(index, report[0]) for index, report in enumerate(reports) if report and report[0] is not None]
    assert not errors, f"delivery failed: {errors[:5]}"
    return [report[1] for report in reports if report is not None]


def produce_expecting_error(
    bootstrap: str, topic: str, record: Record, *, partition: int | None = None, **config: Any
) -> KafkaError:
    """Produces one record that must fail, and returns the error its delivery report carries."""
    client = producer(bootstrap, **config)
    reports: list[tuple[KafkaError | None, Message]] = []
    kwargs: dict[str, Any] = {} if partition is None else {"partition": partition}
    client.produce(
        topic,
        key=record.key,
        value=record.value,
        timestamp=record.timestamp_ms,
        on_delivery=lambda error, message: reports.append((error, message)),
        **kwargs,
    )
    remaining = client.flush(CLIENT_TIMEOUT_S)
    assert remaining == 0 and len(reports) == 1, "no delivery report for the record"
    error = reports[0][0]
    assert error is not None, f"the record was delivered at offset {reports[0][1].offset()}; expected an error"
    return error


def consume(
    bootstrap: str,
    topic: str,
    partition: int,
    start_offset: int,
    count: int,
    *,
    timeout_s: float = CLIENT_TIMEOUT_S,
    **config: Any,
) -> list[Message]:
    """Reads `count` records of one partition from `start_offset` with manual assignment. Fails
    on any consumer error, or if fewer arrive within `timeout_s`."""
    client = consumer(bootstrap, **config)
    try:
        client.assign([TopicPartition(topic, partition, start_offset)])
        messages: list[Message] = []
        deadline = time.monotonic() + timeout_s
        while len(messages) < count:
            left = deadline - time.monotonic()
            assert left > 0, f"read {len(messages)} of {count} records of {topic}-{partition} in {timeout_s}s"
            for message in client.consume(num_messages=count - len(messages), timeout=min(left, 1.0)):
                error = message.error()
                assert error is None, f"consumer error on {topic}-{partition}: {error}"
                messages.append(message)
        return messages
    finally:
        client.close()


def to_record(message: Message) -> Record:
    timestamp_type, timestamp_ms = message.timestamp()
    assert timestamp_type == TIMESTAMP_CREATE_TIME, f"timestamp type {timestamp_type} at offset {message.offset()}"
    return Record(message.key(), message.value(), tuple(message.headers() or ()), timestamp_ms)


def watermarks(bootstrap: str, topic: str, partition: int) -> tuple[int, int]:
    """(log start offset, high watermark) as the broker reports them (ListOffsets)."""
    client = consumer(bootstrap)
    try:
        return client.get_watermark_offsets(TopicPartition(topic, partition), timeout=CLIENT_TIMEOUT_S)
    finally:
        client.close()
