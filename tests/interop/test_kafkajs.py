"""kafkajs 2.2 (Node.js) against the real broker, through the scripts in kafkajs/ run as child
processes that print JSON: byte-identical round trips, gzip and snappy, every acks level, the
Java-compatible partitioner, ListOffsets by timestamp, the admin APIs (kafkajs has no
IncrementalAlterConfigs), and the broker's own Fetch errors for a deleted topic and an unknown
partition."""

from __future__ import annotations

import pytest

import confluent_support as ck
from support import (
    Record,
    assert_codec_used,
    assert_same_records,
    base_timestamp_ms,
    java_partition,
    keyed_records,
    records_to_json,
    run_kafkajs,
    sample_records,
    stored_batches,
    unb64,
)

# Kafka error codes the scripts report.
UNKNOWN_TOPIC_OR_PARTITION = 3
MESSAGE_TOO_LARGE = 10


def produce(bootstrap: str, topic: str, records, **options) -> dict:
    result = run_kafkajs("produce.mjs", bootstrap, topic, request={"records": records_to_json(records), **options})
    assert "error" not in result, result
    return result


def fetch(bootstrap: str, topic: str, partition: int, offset: int, count: int) -> list[dict]:
    result = run_kafkajs("fetch.mjs", bootstrap, topic, str(partition), str(offset), str(count))
    assert "error" not in result, result
    assert len(result["records"]) == count, f"read {len(result['records'])} of {count} records"
    return result["records"]


def to_record(fetched: dict) -> Record:
    assert fetched["createTime"], f"offset {fetched['offset']} is not CreateTime"
    headers = tuple((name, unb64(value)) for name, value in fetched["headers"])
    return Record(unb64(fetched["key"]), unb64(fetched["value"]), headers, int(fetched["timestamp"]))


def admin(bootstrap: str, *steps: dict) -> list[dict]:
    return run_kafkajs("admin.mjs", bootstrap, request={"steps": list(steps)})["results"]


def test_round_trip_is_byte_identical(bootstrap, topic_name):
    ck.create_topic(bootstrap, topic_name)
    # kafkajs decodes headers into an object keyed by name, so only records whose repeated
    # header keys are adjacent (as in these) read back in the order they were sent.
    records = sample_records(60, base_ts=base_timestamp_ms(), seed=31)
    result = produce(bootstrap, topic_name, records)
    assert result["partitions"] == [{"partition": 0, "baseOffset": 0}]
    fetched = fetch(bootstrap, topic_name, 0, 0, 60)
    assert [item["offset"] for item in fetched] == list(range(60))
    assert_same_records(records, [to_record(item) for item in fetched])
    # Another client reads the same bytes.
    assert_same_records(records, [ck.to_record(message) for message in ck.consume(bootstrap, topic_name, 0, 0, 60)])


@pytest.mark.parametrize("codec", ["gzip", "snappy"])
def test_compressed_batches_round_trip(broker, bootstrap, topic_name, codec):
    ck.create_topic(bootstrap, topic_name)
    records = sample_records(40, base_ts=base_timestamp_ms(), compressible=True, seed=32)
    produce(bootstrap, topic_name, records, compression=codec)
    assert_same_records(records, [to_record(item) for item in fetch(bootstrap, topic_name, 0, 0, 40)], codec)
    assert_codec_used(stored_batches(broker.data_dir, topic_name, 0), codec, len(records))


@pytest.mark.parametrize("acks", [0, 1, -1])
def test_every_acks_level_delivers(bootstrap, topic_name, acks):
    ck.create_topic(bootstrap, topic_name)
    records = sample_records(30, base_ts=base_timestamp_ms(), seed=33)
    result = produce(bootstrap, topic_name, records, acks=acks)
    if acks != 0:
        assert result["partitions"] == [{"partition": 0, "baseOffset": 0}]
    # With acks=0 nothing is acknowledged; the fetch keeps polling until all 30 arrived.
    assert_same_records(records, [to_record(item) for item in fetch(bootstrap, topic_name, 0, 0, 30)], f"acks={acks}")


def test_keyed_records_land_where_the_partitioner_says_in_order(bootstrap, topic_name):
    n_partitions = 5
    ck.create_topic(bootstrap, topic_name, n_partitions)
    keys = [f"order-{index}".encode() for index in range(8)]
    records = keyed_records(keys, per_key=6, base_ts=base_timestamp_ms())
    # One send per record, so each has a delivery report of its own.
    reports = produce(bootstrap, topic_name, records, each=True)["reports"]
    by_partition: dict[int, list[tuple[int, Record]]] = {}
    for record, report in zip(records, reports, strict=True):
        assert report["partition"] == java_partition(record.key, n_partitions), f"{record.key!r}: {report}"
        by_partition.setdefault(report["partition"], []).append((report["offset"], record))
    assert len(by_partition) > 1
    for partition, delivered in by_partition.items():
        assert [offset for offset, _ in delivered] == list(range(len(delivered)))
        fetched = fetch(bootstrap, topic_name, partition, 0, len(delivered))
        assert_same_records([record for _, record in delivered], [to_record(item) for item in fetched])


def test_list_offsets_by_timestamp(bootstrap, topic_name):
    ck.create_topic(bootstrap, topic_name, 2)
    base_ts = base_timestamp_ms()
    records = [Record(b"k", f"v{index}".encode(), (), base_ts + index * 1000) for index in range(10)]
    produce(bootstrap, topic_name, records, partition=0)
    produce(bootstrap, topic_name, records[:4], partition=1)
    results = admin(
        bootstrap,
        {"op": "offsetsByTimestamp", "topic": topic_name, "timestamp": base_ts + 3000},
        {"op": "offsetsByTimestamp", "topic": topic_name, "timestamp": base_ts + 3500},
        {"op": "offsetsByTimestamp", "topic": topic_name, "timestamp": base_ts + 60_000},
        {"op": "offsets", "topic": topic_name},
    )
    by_partition = lambda result: {item["partition"]: item["offset"] for item in result["ok"]}  # noqa: E731
    assert by_partition(results[0]) == {0: 3, 1: 3}
    assert by_partition(results[1]) == {0: 4, 1: 4}  # partition 1 has offsets 0-3: none that new
    # Newer than everything: the broker finds no offset and kafkajs reports the high watermark.
    assert by_partition(results[2]) == {0: 10, 1: 4}
    assert sorted((item["partition"], item["low"], item["high"]) for item in results[3]["ok"]) == [(0, 0, 10), (1, 0, 4)]


def test_admin_create_describe_alter_partitions_delete(bootstrap, topic_name):
    results = admin(
        bootstrap,
        {"op": "createTopic", "topic": topic_name, "numPartitions": 2, "configs": {"retention.ms": "600000"}},
        {"op": "describeTopicConfigs", "topic": topic_name},
        {"op": "alterTopicConfigs", "topic": topic_name, "configs": {"segment.ms": "120000"}},
        {"op": "describeTopicConfigs", "topic": topic_name},
        {"op": "createTopic", "topic": topic_name, "numPartitions": 1},
        {"op": "createPartitions", "topic": topic_name, "count": 3},
        {"op": "partitionCount", "topic": topic_name},
        {"op": "deleteTopic", "topic": topic_name},
        {"op": "listTopics"},
    )
    assert [("ok" in result) for result in results] == [True] * len(results), results
    created, before, _, after, created_again, _, partition_count, _, listed = (result["ok"] for result in results)
    assert created is True
    assert before["retention.ms"] == {"value": "600000", "isDefault": False, "source": 1}
    assert before["cleanup.policy"]["value"] == "delete" and before["segment.ms"]["isDefault"]
    # AlterConfigs replaced the whole set: retention.ms went back to its default.
    assert after["segment.ms"] == {"value": "120000", "isDefault": False, "source": 1}
    assert after["retention.ms"]["isDefault"] and after["retention.ms"]["value"] != "600000"
    # kafkajs answers `false` exactly when the broker said TOPIC_ALREADY_EXISTS.
    assert created_again is False
    assert partition_count == 3
    assert topic_name not in listed


def test_a_record_over_max_message_bytes_is_message_too_large(bootstrap, topic_name):
    ck.create_topic(bootstrap, topic_name, configs={"max.message.bytes": "10000"})
    big = Record(b"big", bytes(30_000), (), base_timestamp_ms())
    result = run_kafkajs("produce.mjs", bootstrap, topic_name, request={"records": records_to_json([big])})
    assert result.get("error", {}).get("type") == "MESSAGE_TOO_LARGE", result
    assert ck.watermarks(bootstrap, topic_name, 0) == (0, 0)


def test_fetching_an_unknown_partition_is_unknown_topic_or_partition(bootstrap, topic_name):
    ck.create_topic(bootstrap, topic_name, 2)
    result = run_kafkajs("fetch.mjs", bootstrap, topic_name, "7", "0", "1")
    assert result.get("error", {}).get("code") == UNKNOWN_TOPIC_OR_PARTITION, result


def test_fetching_a_deleted_topic_is_unknown_topic_or_partition(bootstrap, topic_name):
    ck.create_topic(bootstrap, topic_name)
    records = sample_records(3, base_ts=base_timestamp_ms())
    produce(bootstrap, topic_name, records)
    assert len(fetch(bootstrap, topic_name, 0, 0, 3)) == 3
    [deleted] = admin(bootstrap, {"op": "deleteTopic", "topic": topic_name})
    assert "ok" in deleted, deleted
    result = run_kafkajs("fetch.mjs", bootstrap, topic_name, "0", "0", "1")
    assert result.get("error", {}).get("code") == UNKNOWN_TOPIC_OR_PARTITION, result
