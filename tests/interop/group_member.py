"""One consumer group member as a program of its own, so a test can SIGKILL it: `python
group_member.py CLIENT BOOTSTRAP TOPIC GROUP [options]` with CLIENT `confluent` (librdkafka) or
`kafka-python`. test_groups.py runs it; kafkajs/group_member.mjs is its kafkajs twin.

It subscribes, and for every batch it polls: reports the records (processing), then commits the
offsets after them synchronously and reports the commit once the broker confirmed it. So a commit
never covers a record that was not reported first (at-least-once), and a record reported but
never covered by a confirmed commit is what another member may process again.

Everything it reports is one JSON object per stdout line, flushed at once, so a line written
before a SIGKILL still reaches the test:

    {"ev": "started", "pid": ...}
    {"ev": "assigned", "t": ..., "member_id": ..., "partitions": [...]}   the whole assignment
        (kafka-python adds "leader": whether this member computed the group's assignment); with
        an incremental protocol (--group-protocol consumer, cooperative-sticky) only what was
        added, and confluent members add "owned": everything they own after the callback
    {"ev": "revoked", "t": ..., "partitions": [...]}   (confluent: and "owned", as above)
    {"ev": "lost", "t": ..., "partitions": [...], "owned": [...]}   confluent: taken away without
        a revocation (the session ended before the member could give them up)
    {"ev": "records", "t": ..., "partition": P, "offsets": [...], "values": [...]}
    {"ev": "committed", "t": ..., "offsets": {"P": next offset, ...}}
    {"ev": "commit_failed", "t": ..., "error": "..."}
    {"ev": "closed", "t": ...}

`t` is wall-clock seconds (time.time()): the same clock in every process on the machine, so the
test can order one member's confirmed commit before another member's processing.

SIGTERM closes the consumer cleanly (it leaves the group) and ends the program.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time

STOP = False


def emit(event: str, **fields) -> None:
    sys.stdout.write(json.dumps({"ev": event, "t": time.time(), **fields}) + "\n")
    sys.stdout.flush()


def on_sigterm(_signum, _frame) -> None:
    global STOP
    STOP = True


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("client", choices=["confluent", "kafka-python"])
    parser.add_argument("bootstrap")
    parser.add_argument("topic")
    parser.add_argument("group")
    parser.add_argument("--client-id", default="interop-group-member")
    parser.add_argument("--assignor", choices=["range", "roundrobin", "cooperative-sticky"], default="range")
    parser.add_argument(
        "--group-protocol",
        choices=["classic", "consumer"],
        default="classic",
        help="consumer: KIP-848 (confluent only); the broker assigns, with --remote-assignor",
    )
    parser.add_argument("--remote-assignor", choices=["uniform", "range"], default=None)
    parser.add_argument("--instance-id", default=None, help="group.instance.id: a static member (confluent only)")
    parser.add_argument("--session-timeout-ms", type=int, default=6000)
    parser.add_argument("--heartbeat-interval-ms", type=int, default=1000)
    # Also the rebalance timeout these clients send in JoinGroup: how long a join phase may
    # wait for a member that has not rejoined.
    parser.add_argument("--max-poll-interval-ms", type=int, default=10000)
    parser.add_argument("--max-records", type=int, default=50, help="records per poll")
    parser.add_argument(
        "--process-ms",
        type=int,
        default=0,
        help="after reporting a batch, work this long before committing it (widens the window a kill can hit)",
    )
    parser.add_argument(
        "--commit-records-max",
        type=int,
        default=None,
        help="commit only batches that end within this many records processed in total; process the rest without committing",
    )
    return parser.parse_args()


def run_confluent(args: argparse.Namespace) -> None:
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    config = {
        "bootstrap.servers": args.bootstrap,
        "client.id": args.client_id,
        "group.id": args.group,
        "max.poll.interval.ms": args.max_poll_interval_ms,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "fetch.wait.max.ms": 100,
        "reconnect.backoff.ms": 50,
        "reconnect.backoff.max.ms": 500,
    }
    if args.instance_id:
        config["group.instance.id"] = args.instance_id
    if args.group_protocol == "consumer":
        # KIP-848: the broker owns the session timeout, the heartbeat interval and the
        # assignment; librdkafka refuses the classic settings for them.
        config["group.protocol"] = "consumer"
        if args.remote_assignor:
            config["group.remote.assignor"] = args.remote_assignor
    else:
        config["partition.assignment.strategy"] = args.assignor
        config["session.timeout.ms"] = args.session_timeout_ms
        config["heartbeat.interval.ms"] = args.heartbeat_interval_ms
    consumer = Consumer(config)
    # What this member owns, kept from the callbacks: with an incremental protocol (KIP-848,
    # cooperative-sticky) they name only what changes, so "owned" reports the whole of it.
    owned: set[int] = set()
    incremental = args.group_protocol == "consumer" or args.assignor == "cooperative-sticky"

    def on_assign(client, partitions):
        added = sorted(tp.partition for tp in partitions)
        if not incremental:
            owned.clear()
        owned.update(added)
        emit("assigned", member_id=client.memberid(), partitions=added, owned=sorted(owned))

    def on_revoke(_client, partitions):
        revoked = sorted(tp.partition for tp in partitions)
        owned.difference_update(revoked)
        emit("revoked", partitions=revoked, owned=sorted(owned))

    def on_lost(_client, partitions):
        lost = sorted(tp.partition for tp in partitions)
        owned.difference_update(lost)
        emit("lost", partitions=lost, owned=sorted(owned))

    consumer.subscribe([args.topic], on_assign=on_assign, on_revoke=on_revoke, on_lost=on_lost)
    n_processed = 0
    while not STOP:
        messages = consumer.consume(num_messages=args.max_records, timeout=0.2)
        batches: dict[int, list] = {}
        for message in messages:
            if message.error() is not None:
                emit("consumer_error", error=str(message.error()))
                continue
            batches.setdefault(message.partition(), []).append(message)
        if not batches:
            continue
        for partition, batch in sorted(batches.items()):
            emit(
                "records",
                partition=partition,
                offsets=[message.offset() for message in batch],
                values=[message.value().decode() for message in batch],
            )
        if args.process_ms:
            time.sleep(args.process_ms / 1000)
        n_processed += sum(len(batch) for batch in batches.values())
        if args.commit_records_max is not None and n_processed > args.commit_records_max:
            continue
        offsets = [TopicPartition(batch[-1].topic(), partition, batch[-1].offset() + 1) for partition, batch in batches.items()]
        try:
            results = consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as error:
            emit("commit_failed", error=str(error))
            continue
        failed = [f"{tp.partition}: {tp.error}" for tp in results if tp.error is not None]
        if failed:
            emit("commit_failed", error="; ".join(failed))
        confirmed = {str(tp.partition): tp.offset for tp in results if tp.error is None}
        if confirmed:
            emit("committed", offsets=confirmed)
    consumer.close()
    emit("closed")


def run_kafka_python(args: argparse.Namespace) -> None:
    from kafka import ConsumerRebalanceListener, KafkaConsumer, OffsetAndMetadata
    from kafka.coordinator.assignors.range import RangePartitionAssignor
    from kafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
    from kafka.errors import KafkaError

    consumer = KafkaConsumer(
        bootstrap_servers=args.bootstrap,
        client_id=args.client_id,
        group_id=args.group,
        partition_assignment_strategy=[
            RangePartitionAssignor if args.assignor == "range" else RoundRobinPartitionAssignor
        ],
        session_timeout_ms=args.session_timeout_ms,
        heartbeat_interval_ms=args.heartbeat_interval_ms,
        max_poll_interval_ms=args.max_poll_interval_ms,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=100,
        reconnect_backoff_ms=50,
        reconnect_backoff_max_ms=500,
    )

    class Listener(ConsumerRebalanceListener):
        def on_partitions_revoked(self, revoked):
            emit("revoked", partitions=sorted(tp.partition for tp in revoked))

        def on_partitions_assigned(self, assigned):
            # The eager protocol hands over the whole assignment at once. Whether this member
            # led the rebalance (computed everyone's assignment) is only in a private field.
            emit(
                "assigned",
                member_id=consumer.group_metadata().member_id,
                partitions=sorted(tp.partition for tp in assigned),
                leader=consumer._coordinator._is_leader,
            )

    consumer.subscribe([args.topic], listener=Listener())
    n_processed = 0
    while not STOP:
        polled = consumer.poll(timeout_ms=200, max_records=args.max_records)
        if not polled:
            continue
        for tp, batch in sorted(polled.items(), key=lambda item: item[0].partition):
            emit(
                "records",
                partition=tp.partition,
                offsets=[record.offset for record in batch],
                values=[record.value.decode() for record in batch],
            )
        if args.process_ms:
            time.sleep(args.process_ms / 1000)
        n_processed += sum(len(batch) for batch in polled.values())
        if args.commit_records_max is not None and n_processed > args.commit_records_max:
            continue
        offsets = {tp: OffsetAndMetadata(batch[-1].offset + 1, "", -1) for tp, batch in polled.items()}
        try:
            consumer.commit(offsets)
        except KafkaError as error:
            emit("commit_failed", error=repr(error))
            continue
        emit("committed", offsets={str(tp.partition): meta.offset for tp, meta in offsets.items()})
    consumer.close(autocommit=False)
    emit("closed")


def main() -> None:
    args = parse_args()
    signal.signal(signal.SIGTERM, on_sigterm)
    emit("started", pid=os.getpid(), client=args.client)
    if args.client == "confluent":
        run_confluent(args)
    else:
        run_kafka_python(args)


if __name__ == "__main__":
    main()
