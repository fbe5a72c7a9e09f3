"""MQTT.js (npm `mqtt`, pinned in mqttjs/package-lock.json) as a registered device, through
mqttjs/publish.mjs run as a child process: MQTT 3.1.1 and 5, QoS 0, 1 and 2 messages in flight
together, every one acknowledged in the order it was sent and read back from the telemetry topic
with confluent-kafka in that order; MQTT 5 user properties as record headers; a wrong key
refused with the right CONNACK code."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from gateway_support import (
    V5,
    add_device,
    connect_when_registered,
    events_topic,
    new_device_id,
    telemetry_of,
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


def run_mqttjs(request: dict[str, Any]) -> dict[str, Any]:
    """Runs mqttjs/publish.mjs with `request` and returns the JSON it printed last."""
    node = shutil.which("node")
    assert node, "node is not installed; scripts/test needs Node.js for the MQTT.js tests"
    assert (MQTTJS_DIR / "node_modules" / "mqtt").is_dir(), (
        "MQTT.js is not installed: run `npm ci` in tests/interop/mqttjs (scripts/test does)"
    )
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
