"""Static membership (KIP-345) with confluent-kafka: a member with a `group.instance.id` that
restarts within its session timeout gets its old partitions back, and the other members see no
revocation, because the group does not rebalance."""

from __future__ import annotations

import threading
import time

from confluent_kafka import Consumer

import confluent_support as ck

# Long enough to cover a restart; within the broker's default bounds (6 s to 30 min).
SESSION_TIMEOUT_MS = 30_000
N_PARTITIONS = 6
SETTLE_TIMEOUT_S = 60.0


class StaticMember:
    """A consumer polled on a thread of its own, recording every assignment and revocation."""

    def __init__(self, bootstrap: str, group: str, topic: str, instance: str):
        self.instance = instance
        self.events: list[tuple[str, frozenset[int]]] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.consumer = Consumer({
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "group.instance.id": instance,
            "session.timeout.ms": SESSION_TIMEOUT_MS,
            "heartbeat.interval.ms": 1000,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        })
        self.consumer.subscribe([topic], on_assign=self._assigned, on_revoke=self._revoked)
        self.thread = threading.Thread(target=self._poll, name=f"member-{instance}", daemon=True)
        self.thread.start()

    def _assigned(self, consumer, partitions) -> None:
        with self.lock:
            self.events.append(("assigned", frozenset(tp.partition for tp in partitions)))

    def _revoked(self, consumer, partitions) -> None:
        with self.lock:
            self.events.append(("revoked", frozenset(tp.partition for tp in partitions)))

    def _poll(self) -> None:
        while not self.stop.is_set():
            self.consumer.poll(0.2)

    def assignment(self) -> frozenset[int]:
        with self.lock:
            current: frozenset[int] = frozenset()
            for kind, partitions in self.events:
                current = partitions if kind == "assigned" else current - partitions
            return current

    def snapshot(self) -> list[tuple[str, frozenset[int]]]:
        with self.lock:
            return list(self.events)

    def close(self) -> None:
        """Closes as a restart would: librdkafka sends no LeaveGroup for a static member."""
        self.stop.set()
        self.thread.join(10)
        self.consumer.close()


def wait_until(condition, what: str, timeout_s: float = SETTLE_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"{what} within {timeout_s}s"
        time.sleep(0.1)


def test_a_static_member_restarted_within_its_session_gets_its_partitions_back_without_a_rebalance(
    broker_factory, topic_name
):
    broker = broker_factory("--group-initial-rebalance-delay-ms", "500", "--mqtt-listen", "none",
                            "--http-listen", "none")
    ck.create_topic(broker.bootstrap, topic_name, N_PARTITIONS)
    group = f"{topic_name}-static"
    members = {instance: StaticMember(broker.bootstrap, group, topic_name, instance) for instance in ("i0", "i1", "i2")}
    try:
        def settled() -> bool:
            assignments = [member.assignment() for member in members.values()]
            return all(assignments) and sum(map(len, assignments)) == N_PARTITIONS and \
                frozenset().union(*assignments) == frozenset(range(N_PARTITIONS))

        wait_until(settled, "three members sharing six partitions")
        before = {instance: member.assignment() for instance, member in members.items()}
        others_before = {instance: len(members[instance].snapshot()) for instance in ("i0", "i2")}

        members["i1"].close()
        members["i1"] = StaticMember(broker.bootstrap, group, topic_name, "i1")
        wait_until(lambda: members["i1"].assignment() == before["i1"], f"i1 getting {sorted(before['i1'])} back")
        # Give a rebalance, were there one, the time to reach the others.
        time.sleep(3)
        for instance in ("i0", "i2"):
            events = members[instance].snapshot()[others_before[instance]:]
            assert events == [], f"{instance} saw {events} while i1 restarted"
            assert members[instance].assignment() == before[instance]
        assert members["i1"].snapshot() == [("assigned", before["i1"])], members["i1"].snapshot()
    finally:
        for member in members.values():
            member.close()
