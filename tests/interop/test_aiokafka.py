"""aiokafka (asyncio) against the real broker: byte-identical round trips, every compression
codec, every acks level, the Java-compatible partitioner, offsets_for_times and the broker's
MESSAGE_TOO_LARGE. Each test drives its own event loop with asyncio.run.

Consumers have no group_id: they are assigned partitions and seek to explicit offsets."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import MessageSizeTooLargeError

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
    sample_records,
    stored_batches,
)

TIMEOUT_MS = int(CLIENT_TIMEOUT_S * 1000)


async def produce(bootstrap: str, topic: str, records, *, partition: int | None = None, **config):
    """Sends `records` in order; returns each one's RecordMetadata."""
    client = AIOKafkaProducer(bootstrap_servers=bootstrap, client_id="interop-aiokafka", request_timeout_ms=TIMEOUT_MS, **config)
    await client.start()
    try:
        futures = [
            await client.send(
                topic,
                key=record.key,
                value=record.value,
                headers=list(record.headers),
                timestamp_ms=record.timestamp_ms,
                partition=partition,
            )
            for record in records
        ]
        return await asyncio.wait_for(asyncio.gather(*futures), CLIENT_TIMEOUT_S)
    finally:
        await client.stop()


async def consume(bootstrap: str, topic: str, partition: int, start_offset: int, count: int):
    client = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        client_id="interop-aiokafka",
        group_id=None,
        enable_auto_commit=False,
        request_timeout_ms=TIMEOUT_MS,
    )
    await client.start()
    try:
        topic_partition = TopicPartition(topic, partition)
        client.assign([topic_partition])
        client.seek(topic_partition, start_offset)
        messages = []

        async def read_all():
            while len(messages) < count:
                batches = await client.getmany(topic_partition, timeout_ms=500, max_records=count - len(messages))
                messages.extend(batches.get(topic_partition, []))

        try:
            await asyncio.wait_for(read_all(), CLIENT_TIMEOUT_S)
        except asyncio.TimeoutError:
            raise AssertionError(f"read {len(messages)} of {count} records in {CLIENT_TIMEOUT_S}s") from None
        return messages
    finally:
        await client.stop()


def to_record(message) -> Record:
    assert message.timestamp_type == 0, f"timestamp type {message.timestamp_type} at offset {message.offset}"
    return Record(message.key, message.value, tuple(message.headers), message.timestamp)


def test_round_trip_is_byte_identical(bootstrap, topic_name):
    ck.create_topic(bootstrap, topic_name)
    records = sample_records(60, base_ts=base_timestamp_ms(), seed=21)

    async def scenario():
        metadata = await produce(bootstrap, topic_name, records)
        assert [(item.partition, item.offset) for item in metadata] == [(0, offset) for offset in range(60)]
        messages = await consume(bootstrap, topic_name, 0, 0, 60)
        assert [message.offset for message in messages] == list(range(60))
        assert_same_records(records, [to_record(message) for message in messages])

    asyncio.run(scenario())


@pytest.mark.parametrize("codec", COMPRESSION_CODECS)
def test_compressed_batches_round_trip(broker, bootstrap, topic_name, codec):
    ck.create_topic(bootstrap, topic_name)
    records = sample_records(40, base_ts=base_timestamp_ms(), compressible=True, seed=22)

    async def scenario():
        await produce(bootstrap, topic_name, records, compression_type=codec, linger_ms=100)
        messages = await consume(bootstrap, topic_name, 0, 0, len(records))
        assert_same_records(records, [to_record(message) for message in messages], codec)

    asyncio.run(scenario())
    assert_codec_used(stored_batches(broker.data_dir, topic_name, 0), codec, len(records))


@pytest.mark.parametrize("acks", [0, 1, "all"])
def test_every_acks_level_delivers(bootstrap, topic_name, acks):
    ck.create_topic(bootstrap, topic_name)
    records = sample_records(30, base_ts=base_timestamp_ms(), seed=23)

    async def scenario():
        metadata = await produce(bootstrap, topic_name, records, acks=acks)
        if acks != 0:
            assert [item.offset for item in metadata] == list(range(30))
        # With acks=0 nothing is acknowledged; the read waits until all 30 arrived.
        messages = await consume(bootstrap, topic_name, 0, 0, len(records))
        assert_same_records(records, [to_record(message) for message in messages], f"acks={acks}")

    asyncio.run(scenario())


def test_keyed_records_land_where_the_partitioner_says_in_order(bootstrap, topic_name):
    n_partitions = 6
    ck.create_topic(bootstrap, topic_name, n_partitions)
    keys = [f"meter/{index}".encode() for index in range(9)]
    records = keyed_records(keys, per_key=10, base_ts=base_timestamp_ms())

    async def scenario():
        metadata = await produce(bootstrap, topic_name, records, linger_ms=20)
        by_partition: dict[int, list[tuple[int, Record]]] = {}
        for record, item in zip(records, metadata):
            assert item.partition == java_partition(record.key, n_partitions), f"{record.key!r} went to {item.partition}"
            by_partition.setdefault(item.partition, []).append((item.offset, record))
        assert len(by_partition) > 1
        for partition, delivered in by_partition.items():
            assert [offset for offset, _ in delivered] == list(range(len(delivered)))
            messages = await consume(bootstrap, topic_name, partition, 0, len(delivered))
            assert_same_records([record for _, record in delivered], [to_record(message) for message in messages])

    asyncio.run(scenario())


def test_offsets_for_times(bootstrap, topic_name):
    ck.create_topic(bootstrap, topic_name)
    base_ts = base_timestamp_ms()
    records = [Record(b"k", f"v{index}".encode(), (), base_ts + index * 1000) for index in range(12)]

    async def scenario():
        await produce(bootstrap, topic_name, records, partition=0)
        client = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, request_timeout_ms=TIMEOUT_MS)
        await client.start()
        try:
            topic_partition = TopicPartition(topic_name, 0)

            async def lookup(timestamp_ms: int):
                found = (await client.offsets_for_times({topic_partition: timestamp_ms}))[topic_partition]
                return None if found is None else (found.offset, found.timestamp)

            assert await lookup(base_ts - 5) == (0, base_ts)
            assert await lookup(base_ts + 7000) == (7, base_ts + 7000)
            assert await lookup(base_ts + 7001) == (8, base_ts + 8000)
            assert await lookup(base_ts + 11_001) is None
        finally:
            await client.stop()

    asyncio.run(scenario())


def test_a_record_over_max_message_bytes_is_message_too_large(bootstrap, topic_name):
    ck.create_topic(bootstrap, topic_name, configs={"max.message.bytes": "10000"})

    async def scenario():
        with pytest.raises(MessageSizeTooLargeError):
            await produce(bootstrap, topic_name, [Record(b"big", bytes(30_000), (), base_timestamp_ms())])

    asyncio.run(scenario())
    assert ck.watermarks(bootstrap, topic_name, 0) == (0, 0)
