"""confluent-kafka (librdkafka 2.x) against the real broker: byte-identical round trips, every
compression codec, every acks level, keyed partitioning, ListOffsets by timestamp, the admin
APIs, and the errors a client must see."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import (
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ConfigSource,
    NewPartitions,
    NewTopic,
    ResourceType,
)

import confluent_support as ck
from support import (
    CLIENT_TIMEOUT_S,
    COMPRESSION_CODECS,
    Record,
    assert_codec_used,
    assert_same_records,
    base_timestamp_ms,
    java_partition,
    keyed_records,
    librdkafka_consistent_partition,
    sample_records,
    stored_batches,
    wait_until,
)


def test_round_trip_is_byte_identical(bootstrap, topic_name):
    ck.create_topic(bootstrap, topic_name)
    records = sample_records(60, base_ts=base_timestamp_ms())
    reports = ck.produce(bootstrap, topic_name, records)
    assert [(report.partition(), report.offset()) for report in reports] == [(0, offset) for offset in range(60)]

    messages = ck.consume(bootstrap, topic_name, 0, 0, len(records))
    assert [message.offset() for message in messages] == list(range(60))
    assert_same_records(records, [ck.to_record(message) for message in messages])
    assert ck.watermarks(bootstrap, topic_name, 0) == (0, 60)


def test_reading_from_the_middle_starts_at_that_offset(bootstrap, topic_name):
    ck.create_topic(bootstrap, topic_name)
    # linger.ms makes several records share a batch, so offset 13 is inside one: the broker
    # returns the whole batch and the client must skip the records before 13.
    records = sample_records(30, base_ts=base_timestamp_ms())
    ck.produce(bootstrap, topic_name, records, **{"linger.ms": 50})
    messages = ck.consume(bootstrap, topic_name, 0, 13, 17)
    assert [message.offset() for message in messages] == list(range(13, 30))
    assert_same_records(records[13:], [ck.to_record(message) for message in messages])


@pytest.mark.parametrize("codec", COMPRESSION_CODECS)
def test_compressed_batches_round_trip(broker, bootstrap, topic_name, codec):
    ck.create_topic(bootstrap, topic_name)
    records = sample_records(50, base_ts=base_timestamp_ms(), compressible=True, seed=7)
    ck.produce(bootstrap, topic_name, records, **{"compression.type": codec, "linger.ms": 100})
    messages = ck.consume(bootstrap, topic_name, 0, 0, len(records))
    assert_same_records(records, [ck.to_record(message) for message in messages], codec)

    # The broker kept the client's compressed batches as they were sent.
    # librdkafka sends a batch uncompressed when the codec would not make it smaller (a lone
    # first record, say), so uncompressed batches may appear beside compressed ones.
    batches = stored_batches(broker.data_dir, topic_name, 0)
    assert_codec_used(batches, codec, len(records))
    assert len(batches) < len(records), "records were not batched; the codec check proves little"


@pytest.mark.parametrize("acks", ["0", "1", "all"])
def test_every_acks_level_delivers(bootstrap, topic_name, acks):
    ck.create_topic(bootstrap, topic_name)
    records = sample_records(40, base_ts=base_timestamp_ms(), seed=3)
    reports = ck.produce(bootstrap, topic_name, records, acks=acks)
    if acks == "0":
        # Nothing comes back with acks=0, so the client cannot know offsets.
        assert all(report.offset() is None or report.offset() < 0 for report in reports)
    else:
        assert [report.offset() for report in reports] == list(range(40))
    # acks=0 returns before the broker appended: wait for the high watermark, then read.
    wait_until(lambda: ck.watermarks(bootstrap, topic_name, 0)[1] == 40, what="all 40 records to be appended")
    messages = ck.consume(bootstrap, topic_name, 0, 0, len(records))
    assert_same_records(records, [ck.to_record(message) for message in messages], f"acks={acks}")


@pytest.mark.parametrize(
    ("partitioner", "expected_partition"),
    [("consistent_random", librdkafka_consistent_partition), ("murmur2_random", java_partition)],
)
def test_keyed_records_land_where_the_partitioner_says_in_order(bootstrap, topic_name, partitioner, expected_partition):
    n_partitions = 5
    ck.create_topic(bootstrap, topic_name, n_partitions)
    keys = [f"sensor-{index}".encode() for index in range(12)]
    records = keyed_records(keys, per_key=15, base_ts=base_timestamp_ms())
    reports = ck.produce(bootstrap, topic_name, records, partitioner=partitioner, **{"linger.ms": 20})

    by_partition: dict[int, list[tuple[int, Record]]] = {}
    for record, report in zip(records, reports):
        assert report.partition() == expected_partition(record.key, n_partitions), (
            f"{record.key!r} went to partition {report.partition()}"
        )
        by_partition.setdefault(report.partition(), []).append((report.offset(), record))
    assert len(by_partition) > 1, "all keys hashed to one partition; the test proves little"

    for partition, delivered in by_partition.items():
        # One producer, no retries: each partition holds its records in send order, at the
        # offsets the delivery reports named.
        assert [offset for offset, _ in delivered] == list(range(len(delivered)))
        messages = ck.consume(bootstrap, topic_name, partition, 0, len(delivered))
        assert_same_records(
            [record for _, record in delivered], [ck.to_record(message) for message in messages], f"partition {partition}"
        )
        assert ck.watermarks(bootstrap, topic_name, partition)[1] == len(delivered)
        sequences: dict[bytes, list[int]] = {}
        for message in messages:
            sequences.setdefault(message.key(), []).append(int(dict(message.headers())["seq"]))
        for key, sequence in sequences.items():
            assert sequence == list(range(15)), f"records of {key!r} out of order: {sequence}"


def test_offsets_for_times(bootstrap, topic_name):
    ck.create_topic(bootstrap, topic_name, 2)
    base_ts = base_timestamp_ms()
    # Increasing timestamps 1 s apart; several batches, so the lookup crosses batch borders.
    records = [Record(b"k", f"v{index}".encode(), (), base_ts + index * 1000) for index in range(30)]
    ck.produce(bootstrap, topic_name, records[:10], partition=0)
    ck.produce(bootstrap, topic_name, records[10:], partition=0)
    ck.produce(bootstrap, topic_name, records[:3], partition=1)

    client = ck.consumer(bootstrap)
    try:
        def lookup(partition: int, timestamp_ms: int) -> int:
            [found] = client.offsets_for_times([TopicPartition(topic_name, partition, timestamp_ms)], timeout=CLIENT_TIMEOUT_S)
            assert found.error is None, found.error
            return found.offset

        assert lookup(0, base_ts - 60_000) == 0  # before everything: the first record
        assert lookup(0, base_ts) == 0
        assert lookup(0, base_ts + 5000) == 5  # an exact match
        assert lookup(0, base_ts + 5001) == 6  # between records: the next one
        assert lookup(0, base_ts + 12_500) == 13  # inside the second batch
        assert lookup(0, base_ts + 29_000) == 29
        assert lookup(0, base_ts + 29_001) == -1  # after everything: no offset (OFFSET_END)
        assert lookup(1, base_ts + 2000) == 2
        assert lookup(1, base_ts + 2001) == -1
    finally:
        client.close()

    # Reading from the offset found gives the record with that timestamp.
    [message] = ck.consume(bootstrap, topic_name, 0, 5, 1)
    assert message.timestamp()[1] == base_ts + 5000 and message.value() == b"v5"


def describe(client, topic: str) -> dict[str, ConfigEntry]:
    resource = ConfigResource(ResourceType.TOPIC, topic)
    return client.describe_configs([resource], request_timeout=CLIENT_TIMEOUT_S)[resource].result(timeout=CLIENT_TIMEOUT_S)


def overrides(entries: dict[str, ConfigEntry]) -> dict[str, str]:
    return {name: entry.value for name, entry in entries.items() if entry.source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value}


# AlterConfigs is deprecated in favour of the incremental API, and tested here on purpose.
@pytest.mark.filterwarnings("ignore:alter_configs has been deprecated")
def test_admin_create_describe_alter_partitions_delete(bootstrap, topic_name):
    client = ck.admin(bootstrap)
    created = client.create_topics(
        [NewTopic(topic_name, num_partitions=2, replication_factor=1, config={"retention.ms": "3600000", "max.message.bytes": "200000"})],
        request_timeout=CLIENT_TIMEOUT_S,
    )
    created[topic_name].result(timeout=CLIENT_TIMEOUT_S)
    metadata = client.list_topics(topic_name, timeout=CLIENT_TIMEOUT_S)
    assert metadata.topics[topic_name].error is None
    assert sorted(metadata.topics[topic_name].partitions) == [0, 1]

    entries = describe(client, topic_name)
    assert overrides(entries) == {"retention.ms": "3600000", "max.message.bytes": "200000"}
    assert entries["cleanup.policy"].value == "delete"
    assert entries["segment.bytes"].source == ConfigSource.DEFAULT_CONFIG.value

    # Incremental: set one config and remove another, leave the third alone.
    resource = ConfigResource(
        ResourceType.TOPIC,
        topic_name,
        incremental_configs=[
            ConfigEntry("segment.ms", "600000", incremental_operation=AlterConfigOpType.SET),
            ConfigEntry("retention.ms", None, incremental_operation=AlterConfigOpType.DELETE),
        ],
    )
    client.incremental_alter_configs([resource], request_timeout=CLIENT_TIMEOUT_S)[resource].result(timeout=CLIENT_TIMEOUT_S)
    entries = describe(client, topic_name)
    assert overrides(entries) == {"max.message.bytes": "200000", "segment.ms": "600000"}
    assert entries["retention.ms"].source == ConfigSource.DEFAULT_CONFIG.value

    # AlterConfigs (not incremental) replaces the whole set of overrides.
    resource = ConfigResource(ResourceType.TOPIC, topic_name, set_config={"retention.bytes": "1048576"})
    client.alter_configs([resource], request_timeout=CLIENT_TIMEOUT_S)[resource].result(timeout=CLIENT_TIMEOUT_S)
    assert overrides(describe(client, topic_name)) == {"retention.bytes": "1048576"}

    # An invalid value is refused and changes nothing.
    resource = ConfigResource(
        ResourceType.TOPIC,
        topic_name,
        incremental_configs=[ConfigEntry("retention.ms", "soon", incremental_operation=AlterConfigOpType.SET)],
    )
    with pytest.raises(KafkaException) as refused:
        client.incremental_alter_configs([resource], request_timeout=CLIENT_TIMEOUT_S)[resource].result(timeout=CLIENT_TIMEOUT_S)
    assert refused.value.args[0].code() == KafkaError.INVALID_CONFIG
    assert overrides(describe(client, topic_name)) == {"retention.bytes": "1048576"}

    client.create_partitions([NewPartitions(topic_name, 4)], request_timeout=CLIENT_TIMEOUT_S)[topic_name].result(
        timeout=CLIENT_TIMEOUT_S
    )
    assert sorted(client.list_topics(topic_name, timeout=CLIENT_TIMEOUT_S).topics[topic_name].partitions) == [0, 1, 2, 3]
    # The new partition takes records.
    record = Record(b"k", b"in the new partition", (), base_timestamp_ms())
    [report] = ck.produce(bootstrap, topic_name, [record], partition=3)
    assert (report.partition(), report.offset()) == (3, 0)

    client.delete_topics([topic_name], request_timeout=CLIENT_TIMEOUT_S)[topic_name].result(timeout=CLIENT_TIMEOUT_S)
    listed = client.list_topics(timeout=CLIENT_TIMEOUT_S)
    assert topic_name not in listed.topics


def test_creating_an_existing_topic_is_topic_already_exists(bootstrap, topic_name):
    ck.create_topic(bootstrap, topic_name)
    client = ck.admin(bootstrap)
    futures = client.create_topics([NewTopic(topic_name, num_partitions=1, replication_factor=1)])
    with pytest.raises(KafkaException) as raised:
        futures[topic_name].result(timeout=CLIENT_TIMEOUT_S)
    assert raised.value.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS


def test_a_record_over_max_message_bytes_is_message_too_large(bootstrap, topic_name):
    ck.create_topic(bootstrap, topic_name, configs={"max.message.bytes": "10000"})
    big = Record(b"big", bytes(20_000), (), base_timestamp_ms())
    # The client's own limit (message.max.bytes, 1 MB) lets it through; the broker refuses it.
    error = ck.produce_expecting_error(bootstrap, topic_name, big)
    assert error.code() == KafkaError.MSG_SIZE_TOO_LARGE, error
    assert ck.watermarks(bootstrap, topic_name, 0) == (0, 0), "the refused batch was stored"
    # The partition still takes records that fit.
    small = Record(b"small", bytes(5_000), (), base_timestamp_ms())
    [report] = ck.produce(bootstrap, topic_name, [small])
    assert report.offset() == 0


def test_producing_to_an_unknown_partition_is_an_error(bootstrap, topic_name):
    # librdkafka checks the partition against the broker's metadata before sending, so this
    # shows the metadata is right; the broker's own Fetch answer for an unknown partition is
    # checked on the wire in test_kafka_python.py and test_kafkajs.py (librdkafka never fetches
    # a partition the metadata lacks: it waits for it to appear, as against Apache Kafka).
    ck.create_topic(bootstrap, topic_name, 2)
    record = Record(b"k", b"v", (), base_timestamp_ms())
    error = ck.produce_expecting_error(bootstrap, topic_name, record, partition=7)
    assert error.code() == KafkaError._UNKNOWN_PARTITION, error


def test_a_deleted_topic_is_unknown_to_metadata_and_list_offsets(bootstrap, topic_name):
    # librdkafka, once the topic vanished, backs off its fetches on the broker's
    # UNKNOWN_TOPIC_OR_PARTITION and keeps waiting for the topic to come back rather than
    # raising an error (as against Apache Kafka), so what a confluent-kafka application can see
    # is asserted here: metadata and ListOffsets name the topic unknown. The Fetch answer itself
    # is checked on the wire in test_kafka_python.py and test_kafkajs.py.
    ck.create_topic(bootstrap, topic_name)
    records = sample_records(5, base_ts=base_timestamp_ms())
    ck.produce(bootstrap, topic_name, records)
    assert len(ck.consume(bootstrap, topic_name, 0, 0, 5)) == 5

    admin = ck.admin(bootstrap)
    admin.delete_topics([topic_name])[topic_name].result(timeout=CLIENT_TIMEOUT_S)

    client = ck.consumer(bootstrap)
    try:
        metadata = client.list_topics(topic_name, timeout=CLIENT_TIMEOUT_S)
        assert metadata.topics[topic_name].error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART
        # librdkafka looks the partition up in that metadata before it asks for offsets.
        with pytest.raises(KafkaException) as raised:
            client.get_watermark_offsets(TopicPartition(topic_name, 0), timeout=CLIENT_TIMEOUT_S)
        assert raised.value.args[0].code() in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_PARTITION)
    finally:
        client.close()
