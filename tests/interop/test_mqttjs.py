"""MQTT.js (npm `mqtt`, pinned in mqttjs/package-lock.json) against the gateway, through
mqttjs/publish.mjs and mqttjs/subscribe.mjs run as child processes.

As a registered device publishing: MQTT 3.1.1 and 5, QoS 0, 1 and 2 messages in flight together,
every one acknowledged in the order it was sent and read back from the telemetry topic with
confluent-kafka in that order; MQTT 5 user properties as record headers; a wrong key refused
with the right CONNACK code.

As a subscriber, on a broker of the module's own that lets anonymous clients in (conftest's
`anonymous_gateway`): MQTT.js to MQTT.js at every QoS (with MQTT 5 user properties), a
persistent session resumed with what was published while it was away, a retained message, a
shared subscription splitting messages between two MQTT.js processes, and commands from the
`commands` topic delivered to a device's MQTT.js client, before and after it connected.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from gateway_support import (
    MQTT_TIMEOUT_S,
    V5,
    BackgroundProgram,
    add_device,
    command_deliveries,
    connect_when_registered,
    events_topic,
    new_device_id,
    produce_command,
    telemetry_of,
    unique,
)
from support import run_program

MQTTJS_DIR = Path(__file__).resolve().parent / "mqttjs"
PROTOCOL_LEVELS = {"3.1.1": 4, "5.0": 5}
BAD_USER_NAME_OR_PASSWORD = 0x86
RC_311_BAD_USER_NAME_OR_PASSWORD = 4


@pytest.fixture
def mqtt_port(broker) -> int:
    assert broker.mqtt_port is not None, "the session broker logged no mqtt= address"
    return broker.mqtt_port


def node_for_mqttjs() -> str:
    node = shutil.which("node")
    assert node, "node is not installed; scripts/test needs Node.js for the MQTT.js tests"
    assert (MQTTJS_DIR / "node_modules" / "mqtt").is_dir(), (
        "MQTT.js is not installed: run `npm ci` in tests/interop/mqttjs (scripts/test does)"
    )
    return node


def run_mqttjs(request: dict[str, Any]) -> dict[str, Any]:
    """Runs mqttjs/publish.mjs with `request` and returns the JSON it printed last."""
    node = node_for_mqttjs()
    completed = run_program([node, str(MQTTJS_DIR / "publish.mjs")], input_text=json.dumps(request), cwd=MQTTJS_DIR)
    lines = completed.stdout.strip().splitlines()
    assert completed.returncode == 0 and lines, (
        f"node publish.mjs exited with {completed.returncode}\nstdout: {completed.stdout}\nstderr: {completed.stderr[-4000:]}"
    )
    return json.loads(lines[-1])


@pytest.mark.parametrize("version", PROTOCOL_LEVELS)
def test_every_qos_is_acknowledged_and_appended_in_order(bootstrap, mqtt_port, version):
    device_id = new_device_id("mqttjs")
    key = add_device(bootstrap, device_id)
    connect_when_registered(mqtt_port, device_id, key, V5).close()
    level = PROTOCOL_LEVELS[version]
    topic = events_topic(device_id) + "mqttjs"
    messages = [{"payload": f"MQTT.js {version} message {index}", "qos": index % 3} for index in range(12)]
    if level == 5:
        for message in messages:
            message["userProperties"] = {"site": "north"}
    result = run_mqttjs(
        {"port": mqtt_port, "clientId": device_id, "password": key, "protocolVersion": level, "topic": topic, "messages": messages}
    )
    assert "refused" not in result, result
    assert result["connack"]["sessionPresent"] is False
    assert result["connack"]["reasonCode" if level == 5 else "returnCode"] == 0, result["connack"]
    assert all(outcome["ok"] for outcome in result["outcomes"]), result["outcomes"]
    # PUBACKs (QoS 1) and PUBRECs (QoS 2) come back in the order the messages went out; each
    # PUBREC is followed, after MQTT.js's PUBREL, by a PUBCOMP.
    sent_ids = [outcome["messageId"] for outcome, message in zip(result["outcomes"], messages) if message["qos"] > 0]
    acks = [packet for packet in result["received"] if packet["cmd"] in ("puback", "pubrec")]
    assert [packet["messageId"] for packet in acks] == sent_ids, result["received"]
    assert [packet["cmd"] for packet in acks] == ["puback" if message["qos"] == 1 else "pubrec" for message in messages if message["qos"] > 0]
    completed = [packet["messageId"] for packet in result["received"] if packet["cmd"] == "pubcomp"]
    assert sorted(completed) == sorted(packet["messageId"] for packet in acks if packet["cmd"] == "pubrec")
    # MQTT 5 acknowledgements say Success (3.1.1 ones have no reason code).
    assert all(packet["reasonCode"] in ((0,) if level == 5 else (None,)) for packet in result["received"]), result["received"]

    records = telemetry_of(bootstrap, device_id, at_least=len(messages))
    assert [record.value().decode() for record in records] == [message["payload"] for message in messages]
    gateway_headers = [("device-id", device_id.encode()), ("mqtt-topic", topic.encode())]
    expected_headers = gateway_headers + [("site", b"north")] if level == 5 else gateway_headers
    assert all(record.headers() == expected_headers for record in records), records[0].headers()


@pytest.mark.parametrize(
    "version, code, message",
    [
        ("3.1.1", RC_311_BAD_USER_NAME_OR_PASSWORD, "Connection refused: Bad username or password"),
        ("5.0", BAD_USER_NAME_OR_PASSWORD, "Connection refused: Bad User Name or Password"),
    ],
)
def test_a_wrong_key_is_refused_with_bad_user_name_or_password(bootstrap, mqtt_port, version, code, message):
    device_id = new_device_id("mqttjs")
    key = add_device(bootstrap, device_id)
    connect_when_registered(mqtt_port, device_id, key, V5).close()
    result = run_mqttjs(
        {
            "port": mqtt_port,
            "clientId": device_id,
            "password": "A" * 43 + "=",
            "protocolVersion": PROTOCOL_LEVELS[version],
            "topic": events_topic(device_id),
            "messages": [{"payload": "refused", "qos": 1}],
        }
    )
    assert result == {"refused": {"code": code, "message": message}}
    assert telemetry_of(bootstrap, device_id, timeout_s=0) == []


# MQTT.js as a subscriber.

# How long a subscribe.mjs run may wait for its messages before it gives up (and the test fails).
SUBSCRIBER_TIMEOUT_MS = 20_000


def start_subscriber(
    port: int, version: str, filters: list[tuple[str, int]], count: int, **options: Any
) -> BackgroundProgram:
    """Starts mqttjs/subscribe.mjs: anonymous unless `password` is in `options`, a clean session
    with a fresh client id unless they say otherwise (`clientId`, `clean`,
    `sessionExpiryInterval`)."""
    request = {
        "port": port,
        "clientId": unique("mqttjs-sub"),
        "protocolVersion": PROTOCOL_LEVELS[version],
        "clean": True,
        "filters": [{"topic": topic, "qos": qos} for topic, qos in filters],
        "count": count,
        "timeoutMs": SUBSCRIBER_TIMEOUT_MS,
        **options,
    }
    command = [node_for_mqttjs(), str(MQTTJS_DIR / "subscribe.mjs")]
    return BackgroundProgram(command, input_text=json.dumps(request), cwd=MQTTJS_DIR)


def output_of(program: BackgroundProgram, kind: str) -> list[dict[str, Any]]:
    """What `program` printed so far of one kind ("subscribed", "message", "done"), in order."""
    with program.changed:
        lines = list(program.lines)
    return [parsed[kind] for parsed in map(json.loads, lines) if kind in parsed]


def wait_subscribed(program: BackgroundProgram) -> dict[str, Any]:
    program.wait_for_line(lambda line: '"subscribed"' in line)
    return output_of(program, "subscribed")[0]


def wait_done(program: BackgroundProgram) -> list[dict[str, Any]]:
    """Waits for subscribe.mjs to receive its messages and exit; returns the messages."""
    code = program.wait_exit(SUBSCRIBER_TIMEOUT_MS / 1000 + MQTT_TIMEOUT_S)
    assert code == 0, f"exit {code}: {program.describe()}"
    done = output_of(program, "done")
    assert done and not done[0]["timedOut"], program.describe()
    return output_of(program, "message")


def publish_anonymously(port: int, version: str, topic: str, messages: list[dict[str, Any]]) -> None:
    request = {"port": port, "clientId": unique("mqttjs-pub"), "protocolVersion": PROTOCOL_LEVELS[version]}
    result = run_mqttjs({**request, "topic": topic, "messages": messages})
    assert result["outcomes"] and all(outcome["ok"] for outcome in result["outcomes"]), result


@pytest.mark.parametrize("version", PROTOCOL_LEVELS)
def test_every_qos_round_trips_between_mqttjs_clients(anonymous_gateway, version):
    topic = unique("plant") + "/line-1/temp"
    port = anonymous_gateway.mqtt_port
    messages = [{"payload": f"MQTT.js {version} reading {index}", "qos": index % 3} for index in range(12)]
    if version == "5.0":
        for message in messages:
            message["userProperties"] = {"site": "north"}
    with start_subscriber(port, version, [(topic, 2)], len(messages)) as subscriber:
        assert wait_subscribed(subscriber)["granted"] == [2]
        publish_anonymously(port, version, topic, messages)
        received = wait_done(subscriber)
    # All in flight together. MQTT keeps order per QoS level only: MQTT.js hands a QoS 2 message
    # over once its PUBREL has arrived, so QoS 0 and 1 messages sent after it may overtake it.
    for qos in (0, 1, 2):
        assert [message["payload"] for message in received if message["qos"] == qos] == [
            message["payload"] for message in messages if message["qos"] == qos
        ], received
    assert len(received) == len(messages)
    assert not any(message["retain"] or message["dup"] for message in received), received
    expected_properties = {"site": "north"} if version == "5.0" else None
    assert all(message["userProperties"] == expected_properties for message in received), received


@pytest.mark.parametrize("version", PROTOCOL_LEVELS)
def test_persistent_session_is_resumed_with_what_arrived_while_away(anonymous_gateway, version):
    topic = unique("jobs") + "/queue"
    port = anonymous_gateway.mqtt_port
    # MQTT 3.1.1: Clean Session 0; MQTT 5: Clean Start 0 and a Session Expiry Interval.
    session = {"clientId": unique("mqttjs-worker"), "clean": False, "sessionExpiryInterval": 300}
    # Subscribes, then leaves with a normal DISCONNECT.
    with start_subscriber(port, version, [(topic, 1)], 0, **session) as first:
        assert wait_subscribed(first)["connack"]["sessionPresent"] is False
        assert wait_done(first) == []
    jobs = [{"payload": f"job {index}", "qos": 1 + index % 2} for index in range(4)]
    publish_anonymously(port, version, topic, jobs)
    # Back with no SUBSCRIBE of its own: the session kept the subscription and what it matched.
    with start_subscriber(port, version, [], len(jobs), **session) as back:
        assert wait_subscribed(back)["connack"]["sessionPresent"] is True
        received = wait_done(back)
    assert [(message["topic"], message["payload"], message["qos"]) for message in received] == [
        (topic, job["payload"], 1) for job in jobs
    ]


@pytest.mark.parametrize("version", PROTOCOL_LEVELS)
def test_retained_message_reaches_a_later_subscriber(anonymous_gateway, version):
    topic = unique("status") + "/line-1"
    port = anonymous_gateway.mqtt_port
    publish_anonymously(port, version, topic, [{"payload": "running", "qos": 1, "retain": True}])
    with start_subscriber(port, version, [(topic, 1)], 2) as late:
        wait_subscribed(late)
        # Sent live after the subscription: no retain flag, although it was published retained.
        publish_anonymously(port, version, topic, [{"payload": "stopped", "qos": 1, "retain": True}])
        received = wait_done(late)
    assert [(message["payload"], message["retain"]) for message in received] == [("running", True), ("stopped", False)]


def test_shared_subscription_splits_messages_between_two_mqttjs_subscribers(anonymous_gateway):
    topic = unique("work") + "/items"
    port = anonymous_gateway.mqtt_port
    payloads = [f"item {index}" for index in range(20)]
    # Each member waits for all of them; the test ends both once they have them between them.
    members = [start_subscriber(port, "5.0", [(f"$share/workers/{topic}", 1)], len(payloads)) for _ in range(2)]
    try:
        for member in members:
            assert wait_subscribed(member)["granted"] == [1]
        publish_anonymously(port, "5.0", topic, [{"payload": payload, "qos": 1} for payload in payloads])
        deadline = time.monotonic() + MQTT_TIMEOUT_S
        while sum(len(output_of(member, "message")) for member in members) < len(payloads):
            assert time.monotonic() < deadline, [member.describe() for member in members]
            time.sleep(0.05)
    finally:
        for member in members:
            member.kill()
    shares = [[message["payload"] for message in output_of(member, "message")] for member in members]
    assert sorted(shares[0] + shares[1]) == sorted(payloads), f"each message to exactly one member: {shares}"
    assert all(shares), f"both members get a share: {shares}"
    # Each member's share keeps the order of publication.
    assert all(share == sorted(share, key=payloads.index) for share in shares), shares


@pytest.mark.parametrize("version", PROTOCOL_LEVELS)
def test_commands_reach_an_mqttjs_device(anonymous_gateway, version):
    device_id = new_device_id("mqttjs")
    key = add_device(anonymous_gateway.bootstrap, device_id)
    connect_when_registered(anonymous_gateway.mqtt_port, device_id, key, V5).close()
    devicebound = f"devices/{device_id}/messages/devicebound/"
    # Produced before the device is connected: it waits for the device to subscribe.
    produce_command(anonymous_gateway.bootstrap, device_id, b'{"action":"calibrate"}')
    credentials = {"clientId": device_id, "password": key}
    with start_subscriber(anonymous_gateway.mqtt_port, version, [(devicebound + "#", 1)], 2, **credentials) as device:
        assert wait_subscribed(device)["granted"] == [1]
        device.wait_for_line(lambda line: "calibrate" in line)
        # And one produced while it is there.
        produce_command(anonymous_gateway.bootstrap, device_id, b'{"action":"reboot"}')
        received = wait_done(device)
    # The record's headers become MQTT 5 user properties; 3.1.1 has nowhere to put them.
    expected_properties = {"kind": "maintenance"} if version == "5.0" else None
    assert [(message["topic"], message["payload"], message["qos"], message["userProperties"]) for message in received] == [
        (devicebound, '{"action":"calibrate"}', 1, expected_properties),
        (devicebound, '{"action":"reboot"}', 1, expected_properties),
    ]
    deliveries = command_deliveries(anonymous_gateway.bootstrap, device_id, 2)
    assert len(deliveries) == 2, deliveries
    assert deliveries[0]["offset"] < deliveries[1]["offset"]
