"""KIP-848's consumer group protocol (`group.protocol=consumer`) with confluent-kafka 2.16
(librdkafka 2.16), every member a process of its own (group_member.py, as in test_groups.py)
that the test can SIGKILL. The broker assigns (ConsumerGroupHeartbeat) and moves partitions
incrementally: a member is told only what it gains or gives up, and gets a partition only after
its previous owner said it has let go of it.

What every test checks from the members' own reports:

- ownership: from the assignment callbacks (librdkafka calls on_revoke before it acknowledges,
  and on_assign only once the broker gave the partition), no partition is owned by two members
  at once (ownership of a killed member ends at the kill);
- incremental moves: each callback names only what changes (an assignment adds partitions the
  member did not own; a revocation takes some of what it owned and leaves it the rest), so a
  member keeps what it had during a rebalance;
- at-least-once, as in test_groups.py: every record produced is processed, and nothing is
  processed again once a commit past it was confirmed.

The broker runs with 6 s sessions and 500 ms heartbeats for consumer groups (they are the
broker's settings in this protocol). Every wait has a deadline; every member still running at
the end is SIGKILLed (the `members` fixture).
"""

from __future__ import annotations

import time

import pytest
from confluent_kafka import ConsumerGroupState, KafkaError

import confluent_support as ck
import test_groups
from support import CLIENT_TIMEOUT_S, cli_describe
from test_groups import (
    DRAIN_TIMEOUT_S,
    SETTLE_TIMEOUT_S,
    Member,
    Members,
    RecordStream,
    admin,
    assert_every_record_processed,
    assert_nothing_committed_was_redelivered,
    assert_running,
    committed_offsets,
    is_exact_cover,
    poll_until,
    wait_all_processed,
)

# test_groups' fixture: the test's group member processes, killed when it ends.
members = test_groups.members

SESSION_TIMEOUT_MS = 6000
HEARTBEAT_INTERVAL_MS = 500
SERVE_ARGS = (
    "--group-consumer-session-timeout-ms",
    str(SESSION_TIMEOUT_MS),
    "--group-consumer-heartbeat-interval-ms",
    str(HEARTBEAT_INTERVAL_MS),
    # For the classic group of the storm test.
    "--group-initial-rebalance-delay-ms",
    "500",
)
N_PARTITIONS = 6
# How long a group of consumer-protocol members may take to settle after a member died: its
# session runs out, then the survivors heartbeat their way to the new assignment.
TAKEOVER_TIMEOUT_S = SESSION_TIMEOUT_MS / 1000 + SETTLE_TIMEOUT_S


def start_broker(broker_factory, topic_name: str):
    """A broker of the test's own with the topic (six partitions): (broker, bootstrap, group id)."""
    broker = broker_factory(*SERVE_ARGS)
    ck.create_topic(broker.bootstrap, topic_name, N_PARTITIONS)
    return broker, broker.bootstrap, f"{topic_name}-group"


def start_consumer_member(pool: Members, name: str, bootstrap: str, topic: str, group: str, **options) -> Member:
    return pool.start(name, "confluent", bootstrap, topic, group, group_protocol="consumer", **options)


def owned(member: Member) -> list[int] | None:
    """What the member owns after its latest callback; None before the first."""
    for event in reversed(member.snapshot()):
        if event["ev"] in ("assigned", "revoked", "lost"):
            return event["owned"]
    return None


def ownership_intervals(member: Member, ended_at: float | None) -> dict[int, list[tuple[float, float]]]:
    """Per partition, the (from, to) times the member owned it, from its callbacks; what it
    still owns ends at `ended_at` (its kill), or never."""
    intervals: dict[int, list[tuple[float, float]]] = {}
    since: dict[int, float] = {}
    for event in member.snapshot():
        if event["ev"] == "assigned":
            for partition in event["partitions"]:
                since[partition] = event["t"]
        elif event["ev"] in ("revoked", "lost"):
            for partition in event["partitions"]:
                start = since.pop(partition)
                intervals.setdefault(partition, []).append((start, event["t"]))
    for partition, start in since.items():
        intervals.setdefault(partition, []).append((start, ended_at if ended_at is not None else float("inf")))
    return intervals


def assert_never_owned_twice(group: list[Member], killed_at: dict[str, float]) -> None:
    by_partition: dict[int, list[tuple[float, float, str]]] = {}
    for member in group:
        for partition, spans in ownership_intervals(member, killed_at.get(member.name)).items():
            by_partition.setdefault(partition, []).extend((start, end, member.name) for start, end in spans)
    for partition, spans in by_partition.items():
        spans.sort()
        for (_, end, owner), (start, _, next_owner) in zip(spans, spans[1:]):
            assert start >= end, (
                f"partition {partition}: {next_owner} got it at {start:.3f} while {owner} owned it until {end:.3f}"
            )


def assert_incremental(member: Member) -> None:
    """Each callback names only what changes: assignments add partitions not owned, revocations
    take owned ones and leave the member the rest (with six partitions and at most three
    members, every member keeps at least one through a rebalance); nothing is ever lost."""
    holding: set[int] = set()
    for event in member.snapshot():
        changed = set(event.get("partitions", []))
        if event["ev"] == "assigned":
            assert not changed & holding, f"{member.name} was assigned {changed & holding} again: {event}"
            holding |= changed
        elif event["ev"] == "revoked":
            assert changed <= holding, f"{member.name} revoked what it did not own: {event}"
            holding -= changed
            assert holding, f"{member.name} gave up everything in one revocation, as an eager rebalance would: {event}"
        elif event["ev"] == "lost":
            raise AssertionError(f"{member.name} lost partitions without a revocation: {event}")
        if event["ev"] in ("assigned", "revoked"):
            assert sorted(holding) == event["owned"], (member.name, event)


def wait_shared(bootstrap: str, group: str, group_members: list[Member], pool: Members, timeout_s: float,
                each: int | None = None) -> dict[str, list[int]]:
    """Waits until the members' own callbacks cover every partition exactly once (each member
    holding `each` when given) and ConsumerGroupDescribe shows the group Stable with the same
    assignment. Returns member name -> partitions."""

    def settled():
        own = {member.name: owned(member) for member in group_members}
        if any(partitions is None for partitions in own.values()):
            return None
        if not is_exact_cover(list(own.values()), N_PARTITIONS):
            return None
        if each is not None and any(len(partitions) != each for partitions in own.values()):
            return None
        description = describe(bootstrap, group)
        if description.state != ConsumerGroupState.STABLE:
            return None
        described = sorted(sorted(tp.partition for tp in member.assignment.topic_partitions) for member in description.members)
        if described != sorted(own.values()):
            return None
        return own

    try:
        return poll_until(settled, timeout_s, f"group {group} to share the partitions")
    except AssertionError:
        raise AssertionError(
            f"group {group} did not settle in {timeout_s}s: "
            f"{ {member.name: owned(member) for member in group_members} }\n{pool.describe(group_members)}"
        ) from None


def describe(bootstrap: str, group: str):
    """The group as AdminClient.describe_consumer_groups shows it (ConsumerGroupDescribe)."""
    futures = admin(bootstrap).describe_consumer_groups([group], request_timeout=CLIENT_TIMEOUT_S)
    return futures[group].result(timeout=CLIENT_TIMEOUT_S)


def wait_all_committed(bootstrap: str, group: str, topic: str, delivered: dict[int, dict[int, str]]) -> None:
    """The group's committed offsets reach the end of every partition: nothing processed was
    left uncommitted by the members still running."""
    end_offsets = {partition: len(offsets) for partition, offsets in delivered.items()}
    poll_until(
        lambda: committed_offsets(bootstrap, group, topic, N_PARTITIONS) == end_offsets,
        DRAIN_TIMEOUT_S,
        f"group {group} to commit up to {end_offsets}",
        interval_s=0.5,
    )


@pytest.mark.slow
def test_three_members_share_six_partitions_and_take_over_from_a_killed_one(broker_factory, topic_name, members):
    """slow (waits out a 6 s session). Three consumer-protocol members share six partitions, two
    each; one is SIGKILLed while records stream in. After its session times out the survivors
    take its partitions, keeping their own; every record is processed, nothing committed is
    processed again, the group's commits reach the end of every partition, and no partition was
    owned by two members at once."""
    _, bootstrap, group = start_broker(broker_factory, topic_name)
    stream = RecordStream(bootstrap, topic_name, N_PARTITIONS, members)
    stream.send(300)
    trio = [
        start_consumer_member(members, f"member-{index}", bootstrap, topic_name, group, process_ms=50)
        for index in range(3)
    ]
    before = wait_shared(bootstrap, group, trio, members, SETTLE_TIMEOUT_S, each=2)

    stream.start_background(records_per_s=150)
    victim, survivors = trio[0], trio[1:]
    poll_until(lambda: len(victim.processed()) >= 20, DRAIN_TIMEOUT_S, f"{victim.name} to process records")
    killed_at = time.time()
    victim.kill()
    after = wait_shared(bootstrap, group, survivors, members, TAKEOVER_TIMEOUT_S)
    for survivor in survivors:
        assert set(before[survivor.name]) <= set(after[survivor.name]), (
            f"{survivor.name} had {before[survivor.name]} and now {after[survivor.name]}"
        )
    time.sleep(1.0)
    stream.stop_background()
    delivered = stream.flush()
    wait_all_processed(delivered, trio, members)
    wait_all_committed(bootstrap, group, topic_name, delivered)

    assert_running(survivors, members)
    assert_every_record_processed(delivered, trio)
    assert_nothing_committed_was_redelivered(trio)
    assert_never_owned_twice(trio, {victim.name: killed_at})
    for member in trio:
        assert_incremental(member)
    # The broker's view, through ConsumerGroupDescribe: two members at one epoch, Stable.
    description = describe(bootstrap, group)
    assert description.state == ConsumerGroupState.STABLE
    assert len(description.members) == 2


def test_members_joining_one_by_one_keep_their_partitions(broker_factory, topic_name, members):
    """A member alone owns all six partitions; a second and a third join. Each time the members
    already there give up only what moves (the uniform assignor is sticky: the first member goes
    from six to three to two partitions in two revocations, keeping the rest throughout), and
    the newcomer gets those only after they were given up."""
    _, bootstrap, group = start_broker(broker_factory, topic_name)
    stream = RecordStream(bootstrap, topic_name, N_PARTITIONS, members)
    stream.send(120)
    joined: list[Member] = []
    for index, each in enumerate([6, 3, 2]):
        joined.append(start_consumer_member(members, f"member-{index}", bootstrap, topic_name, group))
        wait_shared(bootstrap, group, joined, members, SETTLE_TIMEOUT_S, each=each)
    delivered = stream.flush()
    wait_all_processed(delivered, joined, members)
    assert_running(joined, members)
    assert_never_owned_twice(joined, {})
    for member in joined:
        assert_incremental(member)
    first = joined[0]
    # (librdkafka also calls on_assign with nothing added after a revocation: left out.)
    changes = [event for event in first.snapshot() if event["ev"] in ("assigned", "revoked") and event["partitions"]]
    assert [len(event["owned"]) for event in changes] == [6, 3, 2], first.describe()
    description = describe(bootstrap, group)
    assert (description.partition_assignor, len(description.members)) == ("uniform", 3)


def test_members_naming_range_get_contiguous_ranges(broker_factory, topic_name, members):
    """Members that set group.remote.assignor=range get the broker's range assignor: per topic,
    contiguous ranges in member id order (ConsumerGroupDescribe names the assignor)."""
    _, bootstrap, group = start_broker(broker_factory, topic_name)
    pair = [
        start_consumer_member(members, f"member-{index}", bootstrap, topic_name, group, remote_assignor="range")
        for index in range(2)
    ]
    shares = wait_shared(bootstrap, group, pair, members, SETTLE_TIMEOUT_S, each=3)
    assert sorted(shares.values()) == [[0, 1, 2], [3, 4, 5]], shares
    assert_never_owned_twice(pair, {})
    assert describe(bootstrap, group).partition_assignor == "range"


@pytest.mark.slow
def test_rebalance_storm_with_a_classic_and_a_consumer_group_side_by_side(broker_factory, topic_name, members):
    """slow (about a minute). A classic group (eager `range`, client-side assignment) and a
    consumer-protocol group read one topic while members of both come, leave (SIGTERM) and die
    (SIGKILL), round after round. At the end each group's live members cover the six
    partitions exactly once, as each group's description says too, and each group processed
    every record."""
    _, bootstrap, _ = start_broker(broker_factory, topic_name)
    classic_group, consumer_group = f"{topic_name}-classic", f"{topic_name}-consumer"
    stream = RecordStream(bootstrap, topic_name, N_PARTITIONS, members)
    stream.send(300)
    stream.start_background(records_per_s=100)

    def start(kind: str, index: int) -> Member:
        name = f"{kind}-{index}"
        if kind == "classic":
            return members.start(name, "confluent", bootstrap, topic_name, classic_group, process_ms=20)
        return start_consumer_member(members, name, bootstrap, topic_name, consumer_group, process_ms=20)

    live: dict[str, list[Member]] = {kind: [start(kind, index) for index in range(3)] for kind in ("classic", "consumer")}
    everyone: dict[str, list[Member]] = {kind: list(group) for kind, group in live.items()}
    killed_at: dict[str, float] = {}
    n_rounds = 4
    for round_index in range(n_rounds):
        for kind in ("classic", "consumer"):
            newcomer = start(kind, 3 + round_index)
            live[kind].append(newcomer)
            everyone[kind].append(newcomer)
        # Let the newcomers in before someone goes (bounded: each waits for its first callback).
        for kind in ("classic", "consumer"):
            poll_until(lambda: owned(live[kind][-1]) is not None or live[kind][-1].snapshot("assigned"),
                       SETTLE_TIMEOUT_S + SESSION_TIMEOUT_MS / 1000, f"{live[kind][-1].name} to be assigned")
        for kind in ("classic", "consumer"):
            leaver = live[kind].pop(0)
            if round_index % 2 == 0:
                leaver.close()
            else:
                killed_at[leaver.name] = time.time()
                leaver.kill()

    consumer_shares = wait_shared(bootstrap, consumer_group, live["consumer"], members, TAKEOVER_TIMEOUT_S)
    classic_shares = poll_until(
        lambda: (lambda own: own if is_exact_cover(list(own.values()), N_PARTITIONS) else None)(
            {member.name: (member.assignment() or (None, [], 0))[1] for member in live["classic"]}
        ),
        TAKEOVER_TIMEOUT_S + 10,
        "the classic group to cover the partitions",
    )
    stream.stop_background()
    delivered = stream.flush()
    for kind in ("classic", "consumer"):
        wait_all_processed(delivered, everyone[kind], members)
        assert_every_record_processed(delivered, everyone[kind])
        assert_nothing_committed_was_redelivered(everyone[kind])
        assert_running(live[kind], members)
    assert_never_owned_twice(everyone["consumer"], killed_at)
    assert sorted(p for partitions in consumer_shares.values() for p in partitions) == list(range(N_PARTITIONS))
    assert sorted(p for partitions in classic_shares.values() for p in partitions) == list(range(N_PARTITIONS))
    # ListGroups tells the two kinds apart (v5's group type); both are Stable in the end.
    listed = poll_until(
        lambda: (lambda groups: groups if all(
            groups.get(group) == ConsumerGroupState.STABLE for group in (classic_group, consumer_group)
        ) else None)({group.group_id: group.state for group in admin(bootstrap).list_consumer_groups(
            request_timeout=CLIENT_TIMEOUT_S).result(timeout=CLIENT_TIMEOUT_S).valid}),
        SETTLE_TIMEOUT_S,
        "both groups Stable in ListGroups",
    )
    assert {classic_group, consumer_group} <= set(listed)


def test_a_classic_member_cannot_join_a_consumer_group(broker_factory, topic_name, members):
    """A group id is one kind or the other, as in Kafka 4.0: a classic consumer joining a group of
    consumer-protocol members is refused with INCONSISTENT_GROUP_PROTOCOL, and the group keeps
    its member and partitions. `tidewater group describe` shows the consumer group's member and
    its partitions (DescribeGroups answers in the classic form)."""
    _, bootstrap, group = start_broker(broker_factory, topic_name)
    member = start_consumer_member(members, "member-0", bootstrap, topic_name, group)
    wait_shared(bootstrap, group, [member], members, SETTLE_TIMEOUT_S, each=N_PARTITIONS)

    classic = ck.consumer(bootstrap, **{"group.id": group, "session.timeout.ms": 6000})
    try:
        classic.subscribe([topic_name])
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        error = None
        while time.monotonic() < deadline and error is None:
            message = classic.poll(0.2)
            if message is not None and message.error() is not None:
                error = message.error()
        assert error is not None, "the classic consumer was never refused"
        assert error.code() == KafkaError.INCONSISTENT_GROUP_PROTOCOL, error
    finally:
        classic.close()
    assert owned(member) == list(range(N_PARTITIONS))
    assert_incremental(member)

    first_line, rows = cli_describe(bootstrap, group, topic_name)
    assert first_line == f"group {group}: state Stable, protocol consumer/uniform, type consumer, 1 member", first_line
    member_id = next(event["member_id"] for event in member.snapshot("assigned"))
    assert {partition: row["MEMBER"] for partition, row in rows.items()} == {
        partition: member_id for partition in range(N_PARTITIONS)
    }, rows


def test_members_subscribed_by_a_regular_expression_share_the_matching_topic(broker_factory, topic_name, members):
    """librdkafka sends a "^..." subscription to the broker as SubscribedTopicRegex; the broker
    resolves it against the topics (whole names) and assigns as for names: two members share the
    six partitions and process every record."""
    _, bootstrap, group = start_broker(broker_factory, topic_name)
    stream = RecordStream(bootstrap, topic_name, N_PARTITIONS, members)
    stream.send(120)
    pattern = f"^{topic_name}.*"
    pair = [start_consumer_member(members, f"member-{index}", bootstrap, pattern, group) for index in range(2)]
    wait_shared(bootstrap, group, pair, members, SETTLE_TIMEOUT_S, each=3)
    delivered = stream.flush()
    wait_all_processed(delivered, pair, members)
    assert_every_record_processed(delivered, pair)
    assert_never_owned_twice(pair, {})


def test_a_static_member_back_within_its_session_gets_its_partitions_back(broker_factory, topic_name, members):
    """A static member (group.instance.id) that closes leaves with epoch -2 and keeps its
    partitions; a new process with the same instance id, started within the session timeout,
    gets exactly those back, and the other member sees no revocation or assignment meanwhile."""
    _, bootstrap, group = start_broker(broker_factory, topic_name)
    static = start_consumer_member(members, "static-0", bootstrap, topic_name, group, instance_id="static")
    other = start_consumer_member(members, "other", bootstrap, topic_name, group)
    before = wait_shared(bootstrap, group, [static, other], members, SETTLE_TIMEOUT_S, each=3)
    n_events_before = len([event for event in other.snapshot() if event["ev"] in ("assigned", "revoked", "lost")])
    static.close()
    restarted = start_consumer_member(members, "static-1", bootstrap, topic_name, group, instance_id="static")
    after = wait_shared(bootstrap, group, [restarted, other], members, SETTLE_TIMEOUT_S, each=3)
    assert after["static-1"] == before["static-0"], (before, after)
    assert after["other"] == before["other"]
    callbacks = [event for event in other.snapshot() if event["ev"] in ("assigned", "revoked", "lost")]
    assert len(callbacks) == n_events_before, f"the other member saw a rebalance: {callbacks[n_events_before:]}"
    assert_incremental(other)


@pytest.mark.slow
def test_members_carry_on_after_a_broker_restart(broker_factory, topic_name, members):
    """Consumer groups are durable: after a restart the two members carry on at their epochs
    with the partitions they shared (a lone member with its callbacks watched is in
    test_group_restart.py), so every record is processed and nothing committed is processed
    again."""
    broker, bootstrap, group = start_broker(broker_factory, topic_name)
    stream = RecordStream(bootstrap, topic_name, N_PARTITIONS, members)
    stream.send(120)
    pair = [start_consumer_member(members, f"member-{index}", bootstrap, topic_name, group) for index in range(2)]
    wait_shared(bootstrap, group, pair, members, SETTLE_TIMEOUT_S, each=3)
    first = stream.flush()
    wait_all_processed(first, pair, members)
    wait_all_committed(bootstrap, group, topic_name, first)

    broker.restart()
    admin.cache_clear()
    stream.send(120)
    delivered = stream.flush()
    wait_all_processed(delivered, pair, members)
    wait_shared(bootstrap, group, pair, members, TAKEOVER_TIMEOUT_S, each=3)
    wait_all_committed(bootstrap, group, topic_name, delivered)
    assert_running(pair, members)
    assert_every_record_processed(delivered, pair)
    assert_nothing_committed_was_redelivered(pair)
