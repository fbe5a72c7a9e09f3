"""kafka-python 3.0 (pure Python) against the real broker: byte-identical round trips, every
compression codec, every acks level, the Java-compatible partitioner, offsets_for_times, the
KafkaAdminClient, and the errors a client must see.

Consumers have no group_id: they are assigned partitions and seek to explicit offsets, and
never commit (consumer groups are tested in test_groups.py). The producer keeps kafka-python's
default, an idempotent producer (InitProducerId)."""

from __future__ import annotations

import time

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import AlterConfigOp, ConfigResource, ConfigResourceType, KafkaAdminClient
from kafka.errors import InvalidConfigurationError, MessageSizeTooLargeError, TopicAlreadyExistsError

from support import (
    CLIENT_TIMEOUT_S,
    COMPRESSION_CODECS,
    Record,
    assert_codec_used,
    assert_same_records,
    base_timestamp_ms,
    java_partition,
    keyed_records,
    sample_records,
    stored_batches,
    wait_until,
)

TIMEOUT_MS = int(CLIENT_TIMEOUT_S * 1000)


def admin(bootstrap: str) -> KafkaAdminClient:
    return KafkaAdminClient(bootstrap_servers=bootstrap, client_id="interop-kafka-python", request_timeout_ms=TIMEOUT_MS)


def create_topic(bootstrap: str, topic: str, n_partitions: int = 1, configs: dict[str, str] | None = None) -> None:
    client = admin(bootstrap)
    try:
        client.create_topics({topic: {"num_partitions": n_partitions, "replication_factor": 1, "configs": configs or {}}})
    finally:
        client.close()


def producer(bootstrap: str, **config) -> KafkaProducer:
    return KafkaProducer(
        bootstrap_servers=bootstrap,
        client_id="interop-kafka-python",
        request_timeout_ms=TIMEOUT_MS,
        **config,
    )


def produce(bootstrap: str, topic: str, records, *, partition: int | None = None, **config):
    """Sends `records` in order; returns each one's RecordMetadata."""
    client = producer(bootstrap, **config)
    try:
        futures = [
            client.send(
                topic,
                key=record.key,
                value=record.value,
                headers=list(record.headers),
                timestamp_ms=record.timestamp_ms,
                partition=partition,
            )
            for record in records
        ]
        client.flush(timeout=CLIENT_TIMEOUT_S)
        return [future.get(timeout=CLIENT_TIMEOUT_S) for future in futures]
    finally:
        client.close(timeout=CLIENT_TIMEOUT_S)


def consumer(bootstrap: str) -> KafkaConsumer:
    return KafkaConsumer(
        bootstrap_servers=bootstrap,
        client_id="interop-kafka-python",
        group_id=None,
        enable_auto_commit=False,
        request_timeout_ms=TIMEOUT_MS,
    )


def consume(bootstrap: str, topic: str, partition: int, start_offset: int, count: int):
    client = consumer(bootstrap)
    try:
        topic_partition = TopicPartition(topic, partition)
        client.assign([topic_partition])
        client.seek(topic_partition, start_offset)
        messages = []
        deadline = time.monotonic() + CLIENT_TIMEOUT_S
        while len(messages) < count:
            assert time.monotonic() < deadline, f"read {len(messages)} of {count} records in {CLIENT_TIMEOUT_S}s"
            for batch in client.poll(timeout_ms=500, max_records=count - len(messages)).values():
                messages.extend(batch)
        return messages
    finally:
        client.close()


def to_record(message) -> Record:
    assert message.timestamp_type == 0, f"timestamp type {message.timestamp_type} at offset {message.offset}"
    return Record(message.key, message.value, tuple((key, value) for key, value in message.headers), message.timestamp)


def test_round_trip_is_byte_identical(bootstrap, topic_name):
    create_topic(bootstrap, topic_name)
    records = sample_records(60, base_ts=base_timestamp_ms(), seed=11)
    metadata = produce(bootstrap, topic_name, records)
    assert [(item.partition, item.offset) for item in metadata] == [(0, offset) for offset in range(60)]
    messages = consume(bootstrap, topic_name, 0, 0, 60)
    assert [message.offset for message in messages] == list(range(60))
    assert_same_records(records, [to_record(message) for message in messages])


@pytest.mark.parametrize("codec", COMPRESSION_CODECS)
def test_compressed_batches_round_trip(broker, bootstrap, topic_name, codec):
    create_topic(bootstrap, topic_name)
    records = sample_records(40, base_ts=base_timestamp_ms(), compressible=True, seed=12)
    produce(bootstrap, topic_name, records, compression_type=codec, linger_ms=100)
    messages = consume(bootstrap, topic_name, 0, 0, len(records))
    assert_same_records(records, [to_record(message) for message in messages], codec)
    assert_codec_used(stored_batches(broker.data_dir, topic_name, 0), codec, len(records))


@pytest.mark.parametrize("acks", [0, 1, "all"])
def test_every_acks_level_delivers(bootstrap, topic_name, acks):
    create_topic(bootstrap, topic_name)
    records = sample_records(30, base_ts=base_timestamp_ms(), seed=13)
    metadata = produce(bootstrap, topic_name, records, acks=acks)
    if acks != 0:
        assert [item.offset for item in metadata] == list(range(30))
    client = consumer(bootstrap)
    try:
        topic_partition = TopicPartition(topic_name, 0)
        # acks=0 returns before the broker appended: wait for the high watermark.
        wait_until(
            lambda: client.end_offsets([topic_partition], timeout_ms=TIMEOUT_MS)[topic_partition] == 30,
            what="30 records to be appended",
        )
    finally:
        client.close()
    messages = consume(bootstrap, topic_name, 0, 0, len(records))
    assert_same_records(records, [to_record(message) for message in messages], f"acks={acks}")


def test_keyed_records_land_where_the_partitioner_says_in_order(bootstrap, topic_name):
    n_partitions = 4
    create_topic(bootstrap, topic_name, n_partitions)
    keys = [f"device-{index:03d}".encode() for index in range(10)]
    records = keyed_records(keys, per_key=12, base_ts=base_timestamp_ms())
    metadata = produce(bootstrap, topic_name, records, linger_ms=20)
    by_partition: dict[int, list[tuple[int, Record]]] = {}
    for record, item in zip(records, metadata):
        assert item.partition == java_partition(record.key, n_partitions), f"{record.key!r} went to {item.partition}"
        by_partition.setdefault(item.partition, []).append((item.offset, record))
    assert len(by_partition) > 1
    for partition, delivered in by_partition.items():
        assert [offset for offset, _ in delivered] == list(range(len(delivered)))
        messages = consume(bootstrap, topic_name, partition, 0, len(delivered))
        assert_same_records([record for _, record in delivered], [to_record(message) for message in messages])


def test_offsets_for_times(bootstrap, topic_name):
    create_topic(bootstrap, topic_name)
    base_ts = base_timestamp_ms()
    records = [Record(b"k", f"v{index}".encode(), (), base_ts + index * 1000) for index in range(20)]
    produce(bootstrap, topic_name, records[:8], partition=0)
    produce(bootstrap, topic_name, records[8:], partition=0)
    client = consumer(bootstrap)
    try:
        topic_partition = TopicPartition(topic_name, 0)

        def lookup(timestamp_ms: int):
            found = client.offsets_for_times({topic_partition: timestamp_ms}, timeout_ms=TIMEOUT_MS)[topic_partition]
            return None if found is None else (found.offset, found.timestamp)

        assert lookup(base_ts - 1) == (0, base_ts)
        assert lookup(base_ts + 4000) == (4, base_ts + 4000)
        assert lookup(base_ts + 9500) == (10, base_ts + 10_000)
        assert lookup(base_ts + 19_000) == (19, base_ts + 19_000)
        assert lookup(base_ts + 19_001) is None
    finally:
        client.close()


def test_admin_create_describe_alter_partitions_delete(bootstrap, topic_name):
    client = admin(bootstrap)
    try:
        client.create_topics(
            {topic_name: {"num_partitions": 1, "replication_factor": 1, "configs": {"retention.ms": "7200000", "segment.bytes": "1048576"}}}
        )
        resource = ConfigResource(ConfigResourceType.TOPIC, topic_name)

        def overrides() -> dict[str, str]:
            described = client.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic_name)])
            return {name: config["value"] for name, config in described["topic"][topic_name].items()}

        assert overrides() == {"retention.ms": "7200000", "segment.bytes": "1048576"}
        everything = client.describe_configs([resource], config_filter="all")["topic"][topic_name]
        assert everything["cleanup.policy"]["value"] == "delete"
        assert everything["max.message.bytes"]["config_source"] == "DEFAULT_CONFIG"

        # IncrementalAlterConfigs (the client's choice when the broker offers it).
        client.alter_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic_name, configs={"segment.ms": "60000", "retention.ms": (AlterConfigOp.DELETE, None)})],
            incremental=True,
        )
        assert overrides() == {"segment.bytes": "1048576", "segment.ms": "60000"}
        # AlterConfigs replaces the whole set; kafka-python sends the other current overrides
        # along, so the result looks incremental. (test_confluent_kafka.py shows the
        # replacement itself.)
        client.alter_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic_name, configs={"retention.bytes": "2097152"})],
            incremental=False,
        )
        assert overrides() == {"segment.bytes": "1048576", "segment.ms": "60000", "retention.bytes": "2097152"}

        client.create_partitions({topic_name: 3})
        assert client.describe_topics([topic_name])[0]["partitions"].__len__() == 3
        [item] = produce(bootstrap, topic_name, [Record(b"k", b"v", (), base_timestamp_ms())], partition=2)
        assert (item.partition, item.offset) == (2, 0)

        client.delete_topics([topic_name])
        assert topic_name not in client.list_topics()
    finally:
        client.close()


def test_invalid_config_is_refused(bootstrap, topic_name):
    client = admin(bootstrap)
    try:
        with pytest.raises(InvalidConfigurationError):
            client.create_topics({topic_name: {"num_partitions": 1, "replication_factor": 1, "configs": {"segment.bytes": "lots"}}})
        assert topic_name not in client.list_topics()
    finally:
        client.close()


def test_creating_an_existing_topic_is_topic_already_exists(bootstrap, topic_name):
    create_topic(bootstrap, topic_name)
    with pytest.raises(TopicAlreadyExistsError):
        create_topic(bootstrap, topic_name)


def test_a_record_over_max_message_bytes_is_message_too_large(bootstrap, topic_name):
    create_topic(bootstrap, topic_name, configs={"max.message.bytes": "10000"})
    client = producer(bootstrap, retries=0)
    try:
        future = client.send(topic_name, key=b"big", value=bytes(30_000), timestamp_ms=base_timestamp_ms())
        client.flush(timeout=CLIENT_TIMEOUT_S)
        with pytest.raises(MessageSizeTooLargeError):
            future.get(timeout=CLIENT_TIMEOUT_S)
    finally:
        client.close(timeout=CLIENT_TIMEOUT_S)
