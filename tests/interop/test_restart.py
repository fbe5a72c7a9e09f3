"""A broker restarted in the middle of a run: confluent-kafka clients carry on.

One producer and one consumer (manual assignment, no group) stay alive while the broker gets
SIGTERM and starts again on the same data directory and port. Records acknowledged before the
restart, records handed to the producer just before SIGTERM (in flight during the shutdown),
records handed to it while no broker listens (queued by the client), and records sent after the
restart must all be acknowledged, and then read back exactly once and in order, by the consumer
that lived through the restart and by a fresh one."""

from __future__ import annotations

import time

from confluent_kafka import TopicPartition

import confluent_support as ck
from support import CLIENT_TIMEOUT_S, Record, base_timestamp_ms

N_PARTITIONS = 2
BEFORE, IN_FLIGHT, WHILE_DOWN, AFTER = 300, 100, 100, 200


def test_clients_carry_on_across_a_broker_restart(broker_factory, topic_name):
    broker = broker_factory()
    bootstrap = broker.bootstrap
    ck.create_topic(bootstrap, topic_name, N_PARTITIONS)

    producer = ck.producer(
        bootstrap,
        acks="all",
        **{"reconnect.backoff.ms": 50, "reconnect.backoff.max.ms": 500, "retry.backoff.ms": 100},
    )
    consumer = ck.consumer(
        bootstrap,
        **{"fetch.wait.max.ms": 100, "reconnect.backoff.ms": 50, "reconnect.backoff.max.ms": 500},
    )
    consumer.assign([TopicPartition(topic_name, partition, 0) for partition in range(N_PARTITIONS)])
    base_ts = base_timestamp_ms()
    sent: list[Record] = []
    reports: dict[int, tuple] = {}

    def send(count: int, phase: str) -> None:
        for _ in range(count):
            index = len(sent)
            record = Record(f"key-{index % 7}".encode(), f"{phase}-{index}".encode(), (("phase", phase.encode()),), base_ts + index)
            sent.append(record)

            def on_delivery(error, message, index=index):
                reports[index] = (error, message.partition(), message.offset())

            producer.produce(
                topic_name,
                key=record.key,
                value=record.value,
                headers=list(record.headers),
                timestamp=record.timestamp_ms,
                on_delivery=on_delivery,
            )
            producer.poll(0)

    received: dict[int, list] = {partition: [] for partition in range(N_PARTITIONS)}

    def read_until(total: int) -> None:
        deadline = time.monotonic() + CLIENT_TIMEOUT_S
        while sum(len(messages) for messages in received.values()) < total:
            assert time.monotonic() < deadline, f"read {sum(map(len, received.values()))} of {total} records"
            for message in consumer.consume(num_messages=500, timeout=0.5):
                assert message.error() is None, message.error()
                received[message.partition()].append(message)

    # Before: everything acknowledged and read.
    send(BEFORE, "before")
    assert producer.flush(CLIENT_TIMEOUT_S) == 0
    read_until(BEFORE)

    # Records handed to the client, then the broker restarts under it; more while it is down.
    send(IN_FLIGHT, "in-flight")
    old_pid = broker.process.pid
    broker.restart(while_down=lambda: send(WHILE_DOWN, "while-down"))
    assert broker.exit_codes == [0], f"the broker did not shut down cleanly: {broker.exit_codes}"
    assert broker.process.pid != old_pid and broker.bootstrap == bootstrap

    # After: the same clients, no reconfiguration.
    send(AFTER, "after")
    assert producer.flush(CLIENT_TIMEOUT_S) == 0, "records still undelivered after the restart"
    failed = {index: report[0] for index, report in reports.items() if report[0] is not None}
    assert not failed, f"deliveries failed: {list(failed.items())[:5]}"
    assert len(reports) == len(sent)
    read_until(len(sent))
    consumer.close()

    # Exactly once, in order: each partition holds precisely its acknowledged records, at
    # consecutive offsets, in the order they were sent, and nothing else.
    expected: dict[int, list[tuple[int, Record]]] = {partition: [] for partition in range(N_PARTITIONS)}
    for index, record in enumerate(sent):
        _, partition, offset = reports[index]
        expected[partition].append((offset, record))
    for partition in range(N_PARTITIONS):
        want = expected[partition]
        assert [offset for offset, _ in want] == list(range(len(want))), f"partition {partition} offsets"
        got = [(message.offset(), ck.to_record(message)) for message in received[partition]]
        assert got == want, f"partition {partition}: the surviving consumer read something else"
        fresh = ck.consume(bootstrap, topic_name, partition, 0, len(want))
        assert [(message.offset(), ck.to_record(message)) for message in fresh] == want
        assert ck.watermarks(bootstrap, topic_name, partition) == (0, len(want))
    assert sum(len(items) for items in expected.values()) == BEFORE + IN_FLIGHT + WHILE_DOWN + AFTER
