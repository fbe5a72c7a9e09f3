"""Per-device throttling, as IoT Hub's quotas: a gateway whose devices may send 20 messages a
second by default (`--device-max-messages-per-second 20`), with devices registered with quotas
of their own (`tidewater device add --max-messages-per-second N --max-bytes-per-second N`).

A device over its quota over MQTT is slowed, not refused: the gateway stops reading its socket
until it is back within its quota, so paho-mqtt's QoS 1 messages all arrive, in order, each
acknowledged once durable, and the run takes at least as long as the quota allows (a burst of
one second's worth, then the rate: a lower bound, the property throttling exists for; nothing
here asserts an upper bound). The pause must not count against the client's keep-alive. Over
HTTP a device over its quota gets 429 with Retry-After, and nothing of that request reaches the
topic. `tidewater_device_throttled_total` counts both, by protocol; a device without a limit is
never counted. Everything is read back with confluent-kafka.
"""

from __future__ import annotations

import http.client
import json
import socket
import time

import pytest

from gateway_support import (
    MQTT_TIMEOUT_S,
    REGISTRY_TIMEOUT_S,
    V311,
    Device,
    connect_packet,
    connect_when_registered,
    events_topic,
    new_device_id,
    publish_packet,
    read_whole_packet,
    telemetry_of,
    unique,
)
from metrics_support import scrape
from trigger_support import tidewater

# The gateway's default quota in this module.
DEFAULT_MESSAGES_PER_SECOND = 20
HTTP_TIMEOUT_S = 30.0
THROTTLED = "tidewater_device_throttled_total"


@pytest.fixture(scope="module")
def gateway(module_broker_factory):
    return module_broker_factory(
        "--device-max-messages-per-second", str(DEFAULT_MESSAGES_PER_SECOND), "--mqtt-allow-anonymous"
    )


def add_device(gateway, device_id: str, *quota: str) -> str:
    """Registers a device with `quota` flags in the same record (so the gateway never sees it
    without them) and returns its key."""
    key = tidewater("device", "add", device_id, *quota, bootstrap=gateway.bootstrap).stdout.strip()
    assert len(key) == 44, key
    return key


def throttled(gateway, protocol: str) -> float:
    return scrape(gateway.admin_port).get(THROTTLED, protocol=protocol)


def publish_all(device: Device, topic: str, payloads: list[bytes]) -> float:
    """Publishes every payload at QoS 1 as fast as paho will, waits for every PUBACK and returns
    the seconds that took."""
    started = time.monotonic()
    for payload in payloads:
        device.publish(topic, payload, qos=1)
    acked = device.wait_acked(len(payloads), timeout_s=60.0)
    elapsed = time.monotonic() - started
    assert acked == payloads, "every message acknowledged, in order"
    return elapsed


def test_a_device_over_the_default_quota_is_slowed_and_loses_nothing(gateway):
    device_id = new_device_id("paced")
    key = add_device(gateway, device_id)
    before = throttled(gateway, "mqtt")
    device = connect_when_registered(gateway.mqtt_port, device_id, key, V311)
    try:
        payloads = [f"reading {index}".encode() for index in range(100)]
        elapsed = publish_all(device, events_topic(device_id), payloads)
    finally:
        device.close()
    # A burst of one second's worth (20), the message that goes over it, then one every 50 ms:
    # the 100th is read no sooner than (100 - 20 - 1) / 20 s after the first was sent.
    floor_s = (100 - DEFAULT_MESSAGES_PER_SECOND - 1) / DEFAULT_MESSAGES_PER_SECOND
    assert elapsed >= floor_s, f"100 messages in {elapsed:.2f}s, under a quota that needs {floor_s}s"
    records = telemetry_of(gateway.bootstrap, device_id, at_least=100)
    assert [record.value() for record in records] == payloads, "all 100 appended once, in order"
    assert throttled(gateway, "mqtt") > before


def test_a_device_with_no_limit_of_its_own_is_never_throttled(gateway):
    # 0 in the device's record is no limit, whatever the gateway's default.
    device_id = new_device_id("free")
    key = add_device(gateway, device_id, "--max-messages-per-second", "0")
    shown = tidewater("device", "show", device_id, bootstrap=gateway.bootstrap).stdout
    assert "quota:         unlimited msg/s, default B/s" in shown, shown
    device = connect_when_registered(gateway.mqtt_port, device_id, key, V311)
    try:
        before = scrape(gateway.admin_port)
        payloads = [f"free {index}".encode() for index in range(100)]
        publish_all(device, events_topic(device_id), payloads)
        after = scrape(gateway.admin_port)
    finally:
        device.close()
    assert after.get(THROTTLED, protocol="mqtt") == before.get(THROTTLED, protocol="mqtt")
    assert [record.value() for record in telemetry_of(gateway.bootstrap, device_id, at_least=100)] == payloads


def test_the_byte_quota_paces_large_messages(gateway):
    bytes_per_second = 5000
    device_id = new_device_id("bytes")
    key = add_device(
        gateway, device_id, "--max-messages-per-second", "0", "--max-bytes-per-second", str(bytes_per_second)
    )
    topic = events_topic(device_id)
    payloads = [bytes([65 + index]) * 1000 for index in range(20)]
    before = throttled(gateway, "mqtt")
    device = connect_when_registered(gateway.mqtt_port, device_id, key, V311)
    try:
        elapsed = publish_all(device, topic, payloads)
    finally:
        device.close()
    # What the quota counts is each PUBLISH packet as sent (3.1.1, QoS 1: as paho encodes it).
    packet_bytes = len(publish_packet(topic.encode(), payloads[0], 1, 1, 4))
    floor_s = (len(payloads) * packet_bytes - packet_bytes - bytes_per_second) / bytes_per_second
    assert elapsed >= floor_s, f"{len(payloads)} x {packet_bytes} bytes in {elapsed:.2f}s, quota needs {floor_s:.2f}s"
    records = telemetry_of(gateway.bootstrap, device_id, at_least=len(payloads))
    assert [record.value() for record in records] == payloads
    assert throttled(gateway, "mqtt") > before


def test_a_pause_longer_than_the_keep_alive_does_not_disconnect(gateway):
    # 200 bytes a second and a message of about 1000: after it the gateway reads nothing for
    # over four seconds, longer than 1.5 x the client's keep-alive of 2 s. The client stays
    # silent through the pause and sends its PINGREQ a little after it: the keep-alive counts
    # from the end of our pause, so the PINGREQ is answered and the connection carries on.
    bytes_per_second = 200
    keep_alive_s = 2
    device_id = new_device_id("keepalive")
    key = add_device(gateway, device_id, "--max-bytes-per-second", str(bytes_per_second))
    topic = events_topic(device_id).encode()
    big = publish_packet(topic, b"x" * 1000, 1, 1, 4)
    pause_s = (len(big) - bytes_per_second) / bytes_per_second
    assert pause_s > 1.5 * keep_alive_s
    deadline = time.monotonic() + REGISTRY_TIMEOUT_S
    while True:
        sock = socket.create_connection(("127.0.0.1", gateway.mqtt_port), timeout=MQTT_TIMEOUT_S)
        sock.sendall(connect_packet(device_id, key, 4, keep_alive_s=keep_alive_s))
        connack = read_whole_packet(sock)
        if connack == b"\x20\x02\x00\x00" or time.monotonic() > deadline:
            break
        sock.close()
        time.sleep(0.2)
    try:
        assert connack == b"\x20\x02\x00\x00", f"not accepted: {connack!r}"
        started = time.monotonic()
        sock.sendall(big)
        assert read_whole_packet(sock) == b"\x40\x02\x00\x01", "the message is taken and acknowledged"
        time.sleep(max(0.0, started + pause_s + 0.5 - time.monotonic()))
        sock.sendall(b"\xc0\x00")  # PINGREQ
        assert read_whole_packet(sock) == b"\xd0\x00", "PINGRESP, not a closed connection"
        sock.sendall(publish_packet(topic, b"after the pause", 1, 2, 4))
        assert read_whole_packet(sock) == b"\x40\x02\x00\x02"
        sock.sendall(b"\xe0\x00")  # DISCONNECT
    finally:
        sock.close()
    records = telemetry_of(gateway.bootstrap, device_id, at_least=2)
    assert [record.value() for record in records] == [b"x" * 1000, b"after the pause"]


def test_anonymous_clients_are_held_to_the_default_quota(gateway):
    client = Device(gateway.mqtt_port, unique("anonymous-paced"), None, V311)
    try:
        assert client.accepted, client.connack
        before = throttled(gateway, "mqtt")
        payloads = [f"anonymous {index}".encode() for index in range(50)]
        elapsed = publish_all(client, unique("throttle/pubsub"), payloads)
    finally:
        client.close()
    floor_s = (50 - DEFAULT_MESSAGES_PER_SECOND - 1) / DEFAULT_MESSAGES_PER_SECOND
    assert elapsed >= floor_s, f"50 messages in {elapsed:.2f}s, the default quota needs {floor_s}s"
    assert throttled(gateway, "mqtt") > before


def post(port: int, device_id: str, key: str, body: bytes, content_type: str) -> tuple[int, dict, dict]:
    """(status, response headers with lower-case names, JSON body) of one POST of events."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=HTTP_TIMEOUT_S)
    try:
        connection.request(
            "POST",
            f"/devices/{device_id}/messages/events",
            body=body,
            headers={"Authorization": f"Bearer {key}", "Content-Type": content_type},
        )
        response = connection.getresponse()
        raw = response.read()
        return response.status, {name.lower(): value for name, value in response.getheaders()}, json.loads(raw or b"{}")
    finally:
        connection.close()


def test_http_over_the_quota_gets_429_with_retry_after_and_appends_nothing(gateway):
    # One message a second: a batch of five puts the device four seconds in debt.
    device_id = new_device_id("http-paced")
    key = add_device(gateway, device_id, "--max-messages-per-second", "1")
    batch = json.dumps(
        [
            {"specversion": "1.0", "id": f"e{index}", "source": "/throttle", "type": "reading", "data": {"n": index}}
            for index in range(5)
        ]
    ).encode()
    deadline = time.monotonic() + REGISTRY_TIMEOUT_S
    while True:
        status, _, answer = post(gateway.http_port, device_id, key, batch, "application/cloudevents-batch+json")
        # 401 until the gateway has read the registration.
        if status != 401 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert (status, answer) == (200, {"appended": 5})
    before = throttled(gateway, "http")

    status, headers, answer = post(gateway.http_port, device_id, key, b'{"refused": true}', "application/json")
    assert status == 429, (status, answer)
    retry_after = int(headers["retry-after"])
    # The debt was at most four seconds (five messages, one second of burst) when it was told.
    assert 1 <= retry_after <= 4, headers
    assert "over its quota of 1 messages per second" in answer["error"], answer
    assert throttled(gateway, "http") == before + 1

    # Once Retry-After has passed, the device is within its quota again.
    time.sleep(retry_after)
    status, _, answer = post(gateway.http_port, device_id, key, b'{"accepted": true}', "application/json")
    assert (status, answer) == (200, {"appended": 1})
    records = telemetry_of(gateway.bootstrap, device_id, at_least=6)
    values = [record.value() for record in records]
    assert b'{"refused": true}' not in values
    assert [json.loads(value) for value in values] == [{"n": index} for index in range(5)] + [{"accepted": True}]


def test_device_update_sets_and_clears_a_quota(gateway):
    device_id = new_device_id("updated")
    add_device(gateway, device_id)
    show = lambda: tidewater("device", "show", device_id, bootstrap=gateway.bootstrap).stdout
    assert "quota:         default" in show()
    tidewater("device", "update", device_id, "--max-messages-per-second", "5", "--max-bytes-per-second", "0",
              bootstrap=gateway.bootstrap)
    assert "quota:         5 msg/s, unlimited B/s" in show()
    listed = tidewater("device", "list", bootstrap=gateway.bootstrap).stdout
    assert any(line.startswith(device_id + " ") and line.endswith("5 msg/s, unlimited B/s") for line in listed.splitlines())
    tidewater("device", "update", device_id, "--max-messages-per-second", "default", bootstrap=gateway.bootstrap)
    assert "quota:         default msg/s, unlimited B/s" in show()
    refused = tidewater("device", "update", device_id, bootstrap=gateway.bootstrap, check=False)
    assert refused.returncode != 0 and "nothing to change" in refused.stderr
    refused = tidewater("device", "update", device_id, "--max-messages-per-second", "lots", bootstrap=gateway.bootstrap,
                        check=False)
    assert refused.returncode != 0 and "or \"default\"" in refused.stderr
