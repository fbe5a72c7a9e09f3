"""What transactions cost a producer: transactional produce, committing every 100 ms, against
plain idempotent produce, both with confluent-kafka (librdkafka) against a running broker.

    target/interop-venv/bin/python tests/interop/bench_transactions.py --bootstrap 127.0.0.1:9092

Each phase writes 1 KiB records (incompressible) to a fresh topic of its own, as fast as the
client goes, for --duration-s seconds:

  idempotent     enable.idempotence, acks=all; counts acknowledged records.
  transactional  the same producer settings plus a transactional.id; begins a transaction,
                 produces for --commit-interval-ms, commits, and so on; counts committed records.

Both include the final flush or commit in their time. It prints records/s and MB/s (10^6 bytes
of record values per second) for each phase and their ratio. The interop suite runs it for a
second only to see that it works; its figures are meant for a release build of the broker:

    cargo build --release -p tidewater
    target/release/tidewater serve --kafka-listen 127.0.0.1:9092 --data-dir "$(mktemp -d)"
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid

from confluent_kafka import KafkaError, Producer
from confluent_kafka.admin import AdminClient, NewTopic

# How long any single client operation (topic creation, flush, commit) may take.
OPERATION_TIMEOUT_S = 60.0
# The producer's queue limit (queue.buffering.max.kbytes).
QUEUE_KIB = 4096


def producer_config(bootstrap: str, **extra) -> dict:
    return {
        "bootstrap.servers": bootstrap,
        "client.id": "tidewater-bench-transactions",
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "compression.type": "none",
        # A small client queue (4 MiB, about 4000 records): the producer is held back to what
        # the broker absorbs, so a transaction holds about --commit-interval-ms of records
        # rather than a queue's worth, and the last flush or commit is short.
        "queue.buffering.max.kbytes": QUEUE_KIB,
        **extra,
    }


def create_topic(bootstrap: str, prefix: str, n_partitions: int) -> str:
    topic = f"{prefix}-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=n_partitions, replication_factor=1)])[topic].result(
        timeout=OPERATION_TIMEOUT_S
    )
    return topic


def produce_one(producer: Producer, topic: str, value: bytes, on_delivery=None) -> None:
    while True:
        try:
            producer.produce(topic, value, on_delivery=on_delivery)
            return
        except BufferError:
            # The client's queue is full: let deliveries drain it.
            producer.poll(0.001)


def bench_idempotent(bootstrap: str, topic: str, value: bytes, duration_s: float) -> tuple[int, float]:
    producer = Producer(producer_config(bootstrap))
    acked = 0
    failures: list[KafkaError] = []

    def on_delivery(error: KafkaError | None, _message) -> None:
        nonlocal acked
        if error is None:
            acked += 1
        else:
            failures.append(error)

    started = time.monotonic()
    sent = 0
    while time.monotonic() - started < duration_s:
        produce_one(producer, topic, value, on_delivery)
        sent += 1
        if sent % 1000 == 0:
            producer.poll(0)
    remaining = producer.flush(OPERATION_TIMEOUT_S)
    elapsed_s = time.monotonic() - started
    if remaining or failures:
        raise SystemExit(f"idempotent: {remaining} records undelivered, {len(failures)} failed: {failures[:3]}")
    return acked, elapsed_s


def bench_transactional(
    bootstrap: str, topic: str, value: bytes, duration_s: float, commit_interval_s: float
) -> tuple[int, float, list[float]]:
    """Returns the records committed, the time taken and how long each commit_transaction took
    (which includes delivering what the transaction still had queued)."""
    producer = Producer(
        producer_config(bootstrap, **{"transactional.id": f"bench-{uuid.uuid4().hex[:8]}", "transaction.timeout.ms": 60_000})
    )
    producer.init_transactions(OPERATION_TIMEOUT_S)
    committed = 0
    commit_s: list[float] = []
    started = time.monotonic()
    while time.monotonic() - started < duration_s:
        producer.begin_transaction()
        began = time.monotonic()
        in_transaction = 0
        while time.monotonic() - began < commit_interval_s:
            produce_one(producer, topic, value)
            in_transaction += 1
            if in_transaction % 1000 == 0:
                producer.poll(0)
        committing = time.monotonic()
        producer.commit_transaction(OPERATION_TIMEOUT_S)
        commit_s.append(time.monotonic() - committing)
        committed += in_transaction
    return committed, time.monotonic() - started, commit_s


def report(name: str, n_records: int, elapsed_s: float, record_bytes: int, extra: str = "") -> float:
    rate = n_records / elapsed_s
    print(
        f"{name:<14} {n_records:>9} records in {elapsed_s:5.1f} s: {rate:>9.0f} records/s, "
        f"{rate * record_bytes / 1e6:7.1f} MB/s{extra}",
        flush=True,
    )
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", required=True, help="host:port of a running broker")
    parser.add_argument("--duration-s", type=float, default=10.0, help="length of each phase (default 10)")
    parser.add_argument("--record-bytes", type=int, default=1024, help="record value size (default 1024)")
    parser.add_argument("--commit-interval-ms", type=int, default=100, help="transaction length (default 100)")
    parser.add_argument("--partitions", type=int, default=1, help="partitions of each phase's topic (default 1)")
    args = parser.parse_args()

    value = os.urandom(args.record_bytes)
    print(
        f"{args.record_bytes}-byte records, {args.partitions} partition(s), {args.duration_s:g} s per phase, "
        f"a commit every {args.commit_interval_ms} ms",
        flush=True,
    )
    topic = create_topic(args.bootstrap, "bench-idempotent", args.partitions)
    acked, elapsed_s = bench_idempotent(args.bootstrap, topic, value, args.duration_s)
    idempotent_rate = report("idempotent", acked, elapsed_s, args.record_bytes)
    topic = create_topic(args.bootstrap, "bench-transactional", args.partitions)
    committed, elapsed_s, commit_s = bench_transactional(
        args.bootstrap, topic, value, args.duration_s, args.commit_interval_ms / 1000
    )
    commit_ms = sorted(seconds * 1000 for seconds in commit_s)
    transactional_rate = report(
        "transactional",
        committed,
        elapsed_s,
        args.record_bytes,
        f" ({len(commit_ms)} commits; commit_transaction median {commit_ms[len(commit_ms) // 2]:.1f} ms, "
        f"max {commit_ms[-1]:.1f} ms)",
    )
    print(f"transactional / idempotent: {transactional_rate / idempotent_rate:.2f}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
