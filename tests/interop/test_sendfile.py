"""Fetches served with sendfile (`serve --kafka-sendfile true`, off by default): record sets of
4 KiB or more go from the segment files to the socket without being read by the broker. What a
client reads must be byte for byte what a broker reading the files would send: every record, in
order, with its key, value, headers and timestamp, batches whole (librdkafka checks each batch's
CRC with `check.crcs`, kafka-python checks them always).

Records of many sizes (a few bytes to 40 KB) are produced in batches of several sizes, so that
fetches carry record sets below the 4 KiB threshold (read as usual), above it (sent from the
file) and both in one response, across two partitions; then confluent-kafka and kafka-python
read everything back from the start, in fetches of different sizes.
"""

from __future__ import annotations

import random

from kafka import KafkaConsumer, TopicPartition

import confluent_support as ck
from support import CLIENT_TIMEOUT_S, Record

N_PARTITIONS = 2


def records_of_many_sizes(rng: random.Random, count: int) -> list[Record]:
    sizes = [0, 1, 100, 3_000, 5_000, 40_000]
    return [
        Record(
            key=f"k{index}".encode(),
            value=rng.randbytes(rng.choice(sizes) + rng.randrange(64)),
            headers=(("n", str(index).encode()),),
            timestamp_ms=1_700_000_000_000 + index,
        )
        for index in range(count)
    ]


def test_sendfile_fetches_give_every_record_byte_for_byte(broker_factory, topic_name):
    broker = broker_factory("--kafka-sendfile", "true")
    bootstrap = broker.bootstrap
    ck.create_topic(bootstrap, topic_name, N_PARTITIONS)
    rng = random.Random(20261207)
    produced: dict[int, list[Record]] = {partition: [] for partition in range(N_PARTITIONS)}
    # Batches of one record, of many small ones, and of large ones: linger and batch size vary.
    for round_no, (linger_ms, batch_bytes) in enumerate([(0, 16_384), (20, 1_000_000), (5, 65_536)]):
        for partition in range(N_PARTITIONS):
            records = records_of_many_sizes(rng, 60 + 20 * round_no)
            ck.produce(bootstrap, topic_name, records, partition=partition,
                       **{"linger.ms": linger_ms, "batch.size": batch_bytes})
            produced[partition].extend(records)

    for partition, expected in produced.items():
        for fetch_bytes in (1, 1_048_576):
            messages = ck.consume(bootstrap, topic_name, partition, 0, len(expected),
                                  **{"check.crcs": True, "max.partition.fetch.bytes": fetch_bytes})
            assert [ck.to_record(message) for message in messages] == expected, (partition, fetch_bytes)
            assert [message.offset() for message in messages] == list(range(len(expected)))

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest",
                             max_partition_fetch_bytes=65_536, consumer_timeout_ms=CLIENT_TIMEOUT_S * 1000)
    try:
        consumer.assign([TopicPartition(topic_name, partition) for partition in range(N_PARTITIONS)])
        consumer.seek_to_beginning()
        read: dict[int, list[Record]] = {partition: [] for partition in range(N_PARTITIONS)}
        total = sum(len(records) for records in produced.values())
        for message in consumer:
            read[message.partition].append(Record(
                key=message.key, value=message.value,
                headers=tuple((name, value) for name, value in message.headers),
                timestamp_ms=message.timestamp,
            ))
            if sum(len(records) for records in read.values()) == total:
                break
        assert read == produced
    finally:
        consumer.close()
