"""Triggers against real webhook receivers: the delivery contract, end to end.

Each test registers a trigger with the `tidewater trigger` CLI (the session broker's `serve`
runs it as a Kafka client of itself) or runs one standalone with `tidewater trigger run`, points
it at a receiver in the test (see trigger_support.Receiver) that answers with scripted statuses,
produces events with confluent-kafka, and checks what the receiver saw, what reached the
dead-letter topic, and what the consumer group committed.

Signatures are checked with the Standard Webhooks reference library (`standardwebhooks`) and
requests are parsed with the CloudEvents Python SDK (`cloudevents`): implementations nobody here
wrote.
"""

from __future__ import annotations

import json
import time
import uuid

import pytest
from cloudevents.http import from_http
from confluent_kafka import OFFSET_INVALID, Consumer, ConsumerGroupState, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from standardwebhooks.webhooks import Webhook

from trigger_support import (
    DELIVERY_TIMEOUT_S,
    Receiver,
    Reply,
    RunnerProcess,
    tidewater,
    wait_for_stats,
)

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@pytest.fixture
def receiver():
    receivers: list[Receiver] = []

    def make(respond=None) -> Receiver:
        made = Receiver(respond)
        receivers.append(made)
        return made

    yield make
    for made in receivers:
        made.close()


@pytest.fixture
def trigger_name(topic_name: str) -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def registered(bootstrap: str):
    """Deletes the triggers a test registered, so the session broker stops running them."""
    names: list[str] = []
    yield names
    for name in names:
        tidewater("trigger", "delete", name, bootstrap=bootstrap, check=False)


def create_topic(bootstrap: str, topic: str, partitions: int = 2) -> None:
    tidewater("topic", "create", topic, "--partitions", str(partitions), bootstrap=bootstrap)


def create_trigger(bootstrap: str, registered: list[str], name: str, topic: str, *args: str) -> None:
    tidewater("trigger", "create", name, "--topic", topic, *args, bootstrap=bootstrap)
    registered.append(name)


def produce(bootstrap: str, topic: str, records: list[tuple[str | None, dict | bytes, dict | None]]) -> None:
    """Produces (key, value, headers) in order and waits for every acknowledgement."""
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    failures = []
    for key, value, headers in records:
        payload = value if isinstance(value, bytes) else json.dumps(value).encode()
        producer.produce(
            topic,
            key=key.encode() if key is not None else None,
            value=payload,
            headers=list((headers or {}).items()),
            on_delivery=lambda error, message: failures.append(error) if error else None,
        )
    assert producer.flush(30) == 0, "records not delivered within 30 s"
    assert not failures, failures


def read_all(bootstrap: str, topic: str, expected: int, timeout_s: float = 30.0):
    """Reads `expected` records of every partition of `topic` from the beginning."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused", "enable.auto.commit": False})
    try:
        metadata = consumer.list_topics(topic, timeout=10)
        partitions = metadata.topics[topic].partitions
        consumer.assign([TopicPartition(topic, partition, 0) for partition in partitions])
        messages = []
        deadline = time.monotonic() + timeout_s
        while len(messages) < expected and time.monotonic() < deadline:
            message = consumer.poll(0.2)
            if message is not None and message.error() is None:
                messages.append(message)
        assert len(messages) == expected, f"read {len(messages)} of {expected} records from {topic}"
        return messages
    finally:
        consumer.close()


def committed_offsets(bootstrap: str, group: str, topic: str, partitions: int) -> list[int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        committed = consumer.committed([TopicPartition(topic, partition) for partition in range(partitions)], timeout=10)
        return [entry.offset for entry in committed]
    finally:
        consumer.close()


def wait_for_commits(bootstrap: str, group: str, topic: str, expected: list[int], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    offsets: list[int] = []
    while time.monotonic() < deadline:
        offsets = committed_offsets(bootstrap, group, topic, len(expected))
        if offsets == expected:
            return
        time.sleep(0.2)
    raise AssertionError(f"group {group} committed {offsets}, expected {expected}")


def per_key_sequences(requests) -> dict[str, list[int]]:
    sequences: dict[str, list[int]] = {}
    for request in requests:
        if 200 <= request.status < 300:
            event = request.json()
            sequences.setdefault(event["key"], []).append(event["seq"])
    return sequences


def test_webhook_binary_mode_is_signed_and_keeps_order_per_key(bootstrap, topic_name, trigger_name, receiver, registered):
    create_topic(bootstrap, topic_name)
    hook = receiver()
    create_trigger(bootstrap, registered, trigger_name, topic_name, "--webhook", hook.url, "--secret", SECRET, "--from", "earliest")
    records = [(f"k{index % 4}", {"key": f"k{index % 4}", "seq": index}, {"kind": b"reading"}) for index in range(40)]
    produce(bootstrap, topic_name, records)
    requests = hook.wait_for(lambda seen: len(seen) >= 40, "40 deliveries")
    assert len(requests) == 40, "no event may be delivered twice when every delivery succeeds"

    verifier = Webhook(SECRET)
    ids = set()
    for request in requests:
        # The reference library recomputes the HMAC over id.timestamp.body and checks the age.
        verifier.verify(request.body, request.headers)
        event = from_http(request.headers, request.body)
        assert event["specversion"] == "1.0"
        assert event["type"] == "com.tidewater.record"
        assert event["source"] == f"/tidewater/topics/{topic_name}"
        assert event["subject"] == event["partitionkey"] == event.data["key"]
        assert request.headers["content-type"] == "application/json"
        assert request.headers["webhook-id"] == event["id"]
        ids.add(event["id"])
    assert len(ids) == 40
    expected = {f"k{key}": [index for index in range(40) if index % 4 == key] for key in range(4)}
    assert per_key_sequences(requests) == expected
    wait_for_stats(trigger_name, bootstrap, {"delivered": 40, "retried": 0, "dead_lettered": 0})


def test_structured_and_batch_modes(bootstrap, topic_name, trigger_name, receiver, registered):
    create_topic(bootstrap, topic_name, partitions=1)
    structured = receiver()
    batched = receiver()
    create_trigger(bootstrap, registered, trigger_name, topic_name, "--webhook", structured.url, "--mode", "structured", "--from", "earliest")
    create_trigger(
        bootstrap, registered, trigger_name + "-batch", topic_name,
        "--webhook", batched.url, "--batch-max-events", "7", "--batch-max-wait-ms", "200", "--from", "earliest",
    )
    produce(bootstrap, topic_name, [("device-1", {"key": "device-1", "seq": index}, None) for index in range(20)])

    requests = structured.wait_for(lambda seen: len(seen) >= 20, "20 structured deliveries")
    for index, request in enumerate(requests):
        assert request.headers["content-type"].startswith("application/cloudevents+json")
        event = from_http(request.headers, request.body)
        assert event.data == {"key": "device-1", "seq": index}
        assert event["id"] == f"{topic_name}-0-{index}"

    batches = batched.wait_for(lambda seen: sum(len(request.json()) for request in seen) >= 20, "20 batched events")
    assert all(request.headers["content-type"] == "application/cloudevents-batch+json" for request in batches)
    assert all(1 <= len(request.json()) <= 7 for request in batches)
    events = [event for request in batches for event in request.json()]
    assert [event["data"]["seq"] for event in events] == list(range(20))
    assert all(event["specversion"] == "1.0" and event["datacontenttype"] == "application/json" for event in events)


def test_retries_back_off_and_honour_retry_after(bootstrap, topic_name, trigger_name, receiver, registered):
    def respond(request, attempt):
        if attempt == 1:
            return Reply(503)
        if attempt == 2:
            return Reply(429, {"Retry-After": "2"})
        return Reply(200)

    create_topic(bootstrap, topic_name, partitions=1)
    hook = receiver(respond)
    create_trigger(
        bootstrap, registered, trigger_name, topic_name,
        "--webhook", hook.url, "--secret", SECRET, "--initial-backoff-ms", "100", "--from", "earliest",
    )
    produce(bootstrap, topic_name, [("a", {"key": "a", "seq": 0}, None), ("b", {"key": "b", "seq": 1}, None)])
    requests = hook.wait_for(lambda seen: sum(request.status == 200 for request in seen) >= 2, "both events acknowledged")
    by_id: dict[str, list] = {}
    for request in requests:
        by_id.setdefault(request.headers["webhook-id"], []).append(request)
    assert len(by_id) == 2
    for attempts in by_id.values():
        # The same webhook-id on every attempt (receivers deduplicate on it), a fresh signature each.
        assert [request.status for request in attempts] == [503, 429, 200]
        Webhook(SECRET).verify(attempts[2].body, attempts[2].headers)
        waited = attempts[2].received_at - attempts[1].received_at
        assert waited >= 1.9, f"Retry-After: 2 not honoured: retried after {waited:.2f} s"
    wait_for_stats(trigger_name, bootstrap, {"delivered": 2, "retried": 4, "dead_lettered": 0})


def test_dead_letter_after_max_attempts_and_for_client_errors(bootstrap, topic_name, trigger_name, receiver, registered):
    def respond(request, attempt):
        mode = request.json()["mode"]
        return Reply({"ok": 200, "fail": 500, "bad": 400}[mode])

    create_topic(bootstrap, topic_name, partitions=1)
    hook = receiver(respond)
    dead_letter_topic = f"{topic_name}-dlq"
    create_trigger(
        bootstrap, registered, trigger_name, topic_name,
        "--webhook", hook.url, "--max-attempts", "3", "--initial-backoff-ms", "20", "--max-backoff-ms", "100",
        "--dead-letter-topic", dead_letter_topic, "--from", "earliest",
    )
    modes = ["ok", "fail", "bad", "ok"]
    produce(bootstrap, topic_name, [(f"key-{index}", {"mode": mode, "seq": index}, {"origin": b"test"}) for index, mode in enumerate(modes)])
    wait_for_commits(bootstrap, f"tidewater-trigger-{trigger_name}", topic_name, [4])

    attempts = {}
    for request in hook.snapshot():
        attempts.setdefault(request.json()["seq"], []).append(request.status)
    assert attempts == {0: [200], 1: [500, 500, 500], 2: [400], 3: [200]}

    dead = read_all(bootstrap, dead_letter_topic, expected=2)
    by_seq = {json.loads(message.value())["seq"]: message for message in dead}
    assert sorted(by_seq) == [1, 2]
    for seq, attempts_header, status in [(1, b"3", "HTTP 500"), (2, b"1", "HTTP 400")]:
        message = by_seq[seq]
        headers = dict(message.headers())
        assert message.key() == f"key-{seq}".encode()
        assert headers["origin"] == b"test", "the event's own headers are kept"
        assert headers["tidewater-dead-letter-attempts"] == attempts_header
        assert status in headers["tidewater-dead-letter-reason"].decode()
        assert headers["tidewater-dead-letter-source"] == f"{topic_name}/0/{seq}".encode()
        assert headers["tidewater-dead-letter-trigger"] == trigger_name.encode()
    wait_for_stats(trigger_name, bootstrap, {"delivered": 2, "dead_lettered": 2})


def test_gone_disables_the_trigger_until_resumed(bootstrap, topic_name, trigger_name, receiver, registered):
    gone = {"answered": False}

    def respond(request, attempt):
        if not gone["answered"]:
            gone["answered"] = True
            return Reply(410)
        return Reply(200)

    create_topic(bootstrap, topic_name, partitions=1)
    hook = receiver(respond)
    create_trigger(bootstrap, registered, trigger_name, topic_name, "--webhook", hook.url, "--from", "earliest")
    produce(bootstrap, topic_name, [("a", {"key": "a", "seq": 0}, None)])
    hook.wait_for(lambda seen: len(seen) >= 1, "the first delivery")

    wait_until_state(bootstrap, trigger_name, "disabled")
    description = tidewater("trigger", "describe", trigger_name, bootstrap=bootstrap).stdout
    assert "410" in description

    produce(bootstrap, topic_name, [("a", {"key": "a", "seq": 1}, None)])
    time.sleep(3)
    assert len(hook.snapshot()) == 1, "a disabled trigger delivered"
    # The group's position stays at the event answered with 410: it is delivered again on resume.
    assert committed_offsets(bootstrap, f"tidewater-trigger-{trigger_name}", topic_name, 1) in ([0], [-1001])

    tidewater("trigger", "resume", trigger_name, bootstrap=bootstrap)
    requests = hook.wait_for(lambda seen: sum(request.status == 200 for request in seen) >= 2, "redelivery after resume")
    assert per_key_sequences(requests) == {"a": [0, 1]}


def test_per_key_order_with_parallel_keys(bootstrap, topic_name, trigger_name, receiver, registered):
    import random

    generator = random.Random(7)

    def respond(request, attempt):
        return Reply(200, delay_s=generator.uniform(0.0, 0.03))

    create_topic(bootstrap, topic_name, partitions=2)
    hook = receiver(respond)
    create_trigger(bootstrap, registered, trigger_name, topic_name, "--webhook", hook.url, "--concurrency", "8", "--from", "earliest")
    records = [(f"key-{index % 6}", {"key": f"key-{index % 6}", "seq": index}, None) for index in range(90)]
    produce(bootstrap, topic_name, records)
    requests = hook.wait_for(lambda seen: len(seen) >= 90, "90 deliveries")
    assert hook.max_in_flight_per_key == 1, "two deliveries of one key overlapped"
    assert hook.max_in_flight > 1, "keys were not delivered in parallel"
    assert hook.max_in_flight <= 8, "the concurrency limit was exceeded"
    expected = {f"key-{key}": [index for index in range(90) if index % 6 == key] for key in range(6)}
    assert per_key_sequences(requests) == expected


def test_filter_selects_events(bootstrap, topic_name, trigger_name, receiver, registered):
    create_topic(bootstrap, topic_name, partitions=1)
    hook = receiver()
    create_trigger(
        bootstrap, registered, trigger_name, topic_name,
        "--webhook", hook.url, "--filter", "value.temperature > 70 AND headers.kind = 'reading'", "--from", "earliest",
    )
    readings = [("d1", {"key": "d1", "seq": 0, "temperature": 65}, {"kind": b"reading"}),
                ("d1", {"key": "d1", "seq": 1, "temperature": 75}, {"kind": b"reading"}),
                ("d1", {"key": "d1", "seq": 2, "temperature": 90}, {"kind": b"calibration"}),
                ("d1", {"key": "d1", "seq": 3, "temperature": 71}, {"kind": b"reading"}),
                ("d1", b"not json", {"kind": b"reading"})]
    produce(bootstrap, topic_name, readings)
    wait_for_commits(bootstrap, f"tidewater-trigger-{trigger_name}", topic_name, [5])
    assert per_key_sequences(hook.snapshot()) == {"d1": [1, 3]}
    wait_for_stats(trigger_name, bootstrap, {"delivered": 2})


def test_killed_runner_redelivers_rather_than_loses(bootstrap, topic_name, receiver, tmp_path):
    create_topic(bootstrap, topic_name, partitions=2)
    hook = receiver(lambda request, attempt: Reply(200, delay_s=0.1))
    name = f"standalone-{uuid.uuid4().hex[:8]}"
    config = tmp_path / "triggers.json"
    config.write_text(json.dumps([{
        "name": name, "topic": topic_name, "start_from": "earliest", "concurrency": 4,
        "action": {"type": "webhook", "url": hook.url},
    }]))
    produce(bootstrap, topic_name, [(f"k{index % 8}", {"key": f"k{index % 8}", "seq": index}, None) for index in range(80)])

    runner = RunnerProcess(config, bootstrap, tmp_path / "runner.log")
    runner.start()
    try:
        hook.wait_for(lambda seen: len(seen) >= 15, "some deliveries before the kill")
        runner.kill()
        before_kill = {request.json()["seq"] for request in hook.snapshot()}
        assert len(before_kill) < 80, "everything was delivered before the kill; the test proves nothing"
        runner.start()
        requests = hook.wait_for(
            lambda seen: {request.json()["seq"] for request in seen} >= set(range(80)),
            "every event after the restart",
            timeout_s=DELIVERY_TIMEOUT_S * 2,
        )
    finally:
        code = runner.stop()
    assert code == 0, runner.log_text()
    # At-least-once: duplicates are allowed (what was in flight at the kill), losses are not.
    delivered = [request.json()["seq"] for request in requests]
    assert set(delivered) == set(range(80))
    print(f"{len(delivered) - 80} events delivered twice around the kill")


def test_command_and_device_command_actions(bootstrap, topic_name, trigger_name, registered, tmp_path):
    create_topic(bootstrap, topic_name, partitions=1)
    out = tmp_path / "out"
    out.mkdir()
    # Exit 65 (EX_DATAERR) refuses the event; otherwise write "key:value" to a file per offset.
    script = f'value=$(cat); [ "$value" = "reject" ] && exit 65; printf %s "$TIDEWATER_KEY:$value" > "{out}/$TIDEWATER_OFFSET"'
    create_trigger(
        bootstrap, registered, trigger_name, topic_name,
        "--command", "sh", "--arg", "-c", "--arg", script, "--from", "earliest", "--max-attempts", "2",
    )
    commands_topic = f"{topic_name}-commands"
    create_topic(bootstrap, commands_topic, partitions=1)
    create_trigger(
        bootstrap, registered, trigger_name + "-device", topic_name,
        "--device-command", "--commands-topic", commands_topic, "--device", "field:target.device",
        "--filter", "exists(value.target)", "--from", "earliest",
    )
    produce(bootstrap, topic_name, [
        ("k1", b"hello", None),
        ("k2", b"reject", None),
        ("k3", {"target": {"device": "thermostat-9"}, "set": 21}, None),
    ])
    wait_for_commits(bootstrap, f"tidewater-trigger-{trigger_name}", topic_name, [3])
    assert (out / "0").read_text() == "k1:hello"
    assert not (out / "1").exists(), "exit 65 must dead-letter, not acknowledge"
    assert json.loads((out / "2").read_text().split(":", 1)[1])["set"] == 21
    dead = read_all(bootstrap, f"{topic_name}.{trigger_name}.dead-letter", expected=1)
    assert dead[0].value() == b"reject"
    assert b"exited with" in dict(dead[0].headers())["tidewater-dead-letter-reason"]

    commands = read_all(bootstrap, commands_topic, expected=1)
    assert commands[0].key() == b"thermostat-9"
    assert json.loads(commands[0].value())["set"] == 21
    assert dict(commands[0].headers())["tidewater-source-event"] == f"{topic_name}-0-2".encode()


def test_bad_definitions_are_refused_with_a_reason(bootstrap, topic_name):
    create_topic(bootstrap, topic_name, partitions=1)
    cases = [
        (["--webhook", "http://127.0.0.1:1/x", "--filter", "value.a >"], "filter"),
        (["--webhook", "ftp://example.com/x"], "http or https"),
        (["--webhook", "http://127.0.0.1:1/x", "--secret", "whsec_AAAA"], "16 to 64 bytes"),
        ([], "--webhook URL, --command PROGRAM or --device-command"),
        (["--webhook", "http://127.0.0.1:1/x", "--concurrency", "0"], "concurrency"),
    ]
    for args, message in cases:
        result = tidewater("trigger", "create", "bad", "--topic", topic_name, *args, bootstrap=bootstrap, check=False)
        assert result.returncode != 0, args
        assert message in result.stderr, (args, result.stderr)
    missing = tidewater("trigger", "create", "bad", "--topic", f"{topic_name}-missing", "--webhook", "http://127.0.0.1:1/x",
                        bootstrap=bootstrap, check=False)
    assert missing.returncode != 0 and "does not exist" in missing.stderr, missing.stderr
    listed = tidewater("trigger", "list", bootstrap=bootstrap).stdout
    assert "\nbad " not in listed, "a refused trigger was registered"


def test_pause_resume_and_apply_round_trip(bootstrap, topic_name, trigger_name, receiver, registered, tmp_path):
    create_topic(bootstrap, topic_name, partitions=1)
    hook = receiver()
    create_trigger(bootstrap, registered, trigger_name, topic_name, "--webhook", hook.url, "--secret", SECRET, "--from", "earliest")
    produce(bootstrap, topic_name, [("a", {"key": "a", "seq": 0}, None)])
    hook.wait_for(lambda seen: len(seen) >= 1, "the first delivery")

    tidewater("trigger", "pause", trigger_name, bootstrap=bootstrap)
    wait_until_state(bootstrap, trigger_name, "paused")
    # Give the runner time to stop (it follows the registry within a second).
    time.sleep(2)
    produce(bootstrap, topic_name, [("a", {"key": "a", "seq": 1}, None)])
    time.sleep(3)
    assert len(hook.snapshot()) == 1, "a paused trigger delivered"

    # describe --json prints what apply reads: re-applying it changes nothing but the mode.
    exported = json.loads(tidewater("trigger", "describe", trigger_name, "--json", bootstrap=bootstrap).stdout)
    assert exported[0]["action"]["secret"] == SECRET
    exported[0]["paused"] = False
    exported[0]["action"]["mode"] = "structured"
    definitions = tmp_path / "triggers.json"
    definitions.write_text(json.dumps(exported))
    tidewater("trigger", "apply", str(definitions), bootstrap=bootstrap)
    requests = hook.wait_for(lambda seen: len(seen) >= 2, "the delivery after apply resumed the trigger")
    assert requests[1].headers["content-type"].startswith("application/cloudevents+json")
    assert from_http(requests[1].headers, requests[1].body).data == {"key": "a", "seq": 1}
    assert len(requests) == 2, "the event delivered before the pause was delivered again"


def test_a_killed_serve_takes_its_triggers_partitions_back_without_waiting_for_its_dead_self(
    broker_factory, topic_name, receiver, tmp_path
):
    """Group membership survives a broker restart, so a serve killed with SIGKILL comes back to
    find its trigger's dead consumer still a member. As a new member, its consumer would wait
    for that member's session to time out (librdkafka's 45 s) before the group rebalanced; it
    joins as a static member named after the broker instead, takes the dead member's place and
    its partitions at once, and the group never leaves Stable. Checked on the group itself: the
    first change DescribeGroups shows after the restart is the member id being replaced in a
    Stable group of one, where a dynamic member's join shows PreparingRebalance, for 45 s."""
    broker = broker_factory()
    bootstrap = broker.bootstrap
    name = f"t-{uuid.uuid4().hex[:10]}"
    group = f"tidewater-trigger-{name}"
    create_topic(bootstrap, topic_name, partitions=2)
    hook = receiver()
    tidewater("trigger", "create", name, "--topic", topic_name, "--webhook", hook.url, "--from", "earliest",
              bootstrap=bootstrap)
    produce(bootstrap, topic_name, [(f"k{seq % 4}", {"seq": seq}, None) for seq in range(8)])
    hook.wait_for(lambda seen: len({request.json()["seq"] for request in seen}) >= 8, "deliveries before the kill")
    before = describe_group_once(bootstrap, group)
    assert before.state == ConsumerGroupState.STABLE and len(before.members) == 1, before
    (dead,) = before.members
    assert dead.group_instance_id == "tidewater-serve-0", dead
    # Committed (every 1 s), so nothing but what is produced next is delivered after the restart.
    wait_for_commits(bootstrap, group, topic_name, committed_ends(bootstrap, topic_name, 2))

    bootstrap = broker.restart(kill=True)
    deadline = time.monotonic() + 60
    after = describe_group_once(bootstrap, group)
    while time.monotonic() < deadline:
        after = describe_group_once(bootstrap, group)
        if after.state != ConsumerGroupState.STABLE or [m.member_id for m in after.members] != [dead.member_id]:
            break
        time.sleep(0.1)
    assert after.state == ConsumerGroupState.STABLE, f"the restarted trigger made the group rebalance: {after}"
    (member,) = after.members
    assert member.member_id != dead.member_id and member.group_instance_id == dead.group_instance_id, after
    assert sorted(tp.partition for tp in member.assignment.topic_partitions) == [0, 1], after

    produce(bootstrap, topic_name, [(f"k{seq % 4}", {"seq": seq}, None) for seq in range(8, 12)])
    hook.wait_for(lambda seen: {8, 9, 10, 11} <= {request.json()["seq"] for request in seen},
                  "deliveries after the restart")
    tidewater("trigger", "delete", name, bootstrap=bootstrap)


def describe_group_once(bootstrap: str, group: str):
    """DescribeGroups from a client of its own: librdkafka's admin client can stay stuck on a
    coordinator it knew before a broker restart (see test_groups.py's `restart_broker`)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    return admin.describe_consumer_groups([group], request_timeout=10)[group].result(timeout=15)


def committed_ends(bootstrap: str, topic: str, partitions: int) -> list[int]:
    """What a group that has read every partition of `topic` has committed: each partition's end
    offset, or no offset (OFFSET_INVALID) where the partition is empty."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused", "enable.auto.commit": False})
    try:
        ends = [consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)[1]
                for partition in range(partitions)]
        return [end if end > 0 else OFFSET_INVALID for end in ends]
    finally:
        consumer.close()


def wait_until_state(bootstrap: str, name: str, state: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    description = ""
    while time.monotonic() < deadline:
        description = tidewater("trigger", "describe", name, bootstrap=bootstrap).stdout
        if f"state:            {state}" in description:
            return
        time.sleep(0.2)
    raise AssertionError(f"trigger {name} never reached state {state}:\n{description}")
