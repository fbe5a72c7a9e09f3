"""The device gateway against real MQTT clients: paho-mqtt 3.1.1 and 5.0 devices registered with
`tidewater device`, publishing through `tidewater serve`'s MQTT listener, with every
acknowledged message read back from the telemetry topic with confluent-kafka.

Where paho hides the exact bytes (it reports a 3.1.1 return code as its 5.0 equivalent), the
test sends a hand-made CONNECT and reads the CONNACK off the socket.
"""

from __future__ import annotations

import http.client
import os
import re
import signal
import socket
import subprocess
import threading
import time

import pytest

from gateway_support import (
    MQTT_TIMEOUT_S,
    V5,
    VERSIONS,
    Device,
    add_device,
    connack_code_311,
    connack_code_5,
    connect_when_registered,
    device_token,
    events_topic,
    headers_of,
    new_device_id,
    raw_connect,
    read_packet,
    telemetry_of,
    user_properties,
    wait_for_code,
)
from conftest import tidewater_binary
from trigger_support import tidewater

BAD_USER_NAME_OR_PASSWORD = 0x86
NOT_AUTHORIZED = 0x87
PACKET_IDENTIFIER_NOT_FOUND = 0x92
RC_311_BAD_USER_NAME_OR_PASSWORD = 4
RC_311_NOT_AUTHORIZED = 5


@pytest.fixture
def mqtt_port(broker) -> int:
    assert broker.mqtt_port is not None, "the session broker logged no mqtt= address"
    return broker.mqtt_port


@pytest.mark.parametrize("version", VERSIONS)
def test_every_acknowledged_message_is_in_the_log_in_order_with_the_device_id(bootstrap, mqtt_port, version):
    device_id = new_device_id()
    key = add_device(bootstrap, device_id)
    device = connect_when_registered(mqtt_port, device_id, key, VERSIONS[version])
    try:
        payloads = [f"{version} message {index}".encode() for index in range(40)]
        for index, payload in enumerate(payloads):
            device.publish(events_topic(device_id) + "temperature", payload, qos=1 + index % 2)
        acked = device.wait_acked(len(payloads))
    finally:
        device.close()
    assert sorted(acked) == sorted(payloads)
    # PUBACKs come back in the order the QoS 1 messages went out. (paho reports a QoS 2 message
    # at its PUBCOMP, one round trip later, so the two kinds interleave.)
    qos1 = payloads[0::2]
    assert [payload for payload in acked if payload in qos1] == qos1
    records = telemetry_of(bootstrap, device_id, at_least=len(payloads))
    assert [record.value() for record in records] == payloads
    for record in records:
        headers = headers_of(record)
        assert headers["device-id"] == device_id.encode()
        assert headers["mqtt-topic"] == (events_topic(device_id) + "temperature").encode()


def test_user_properties_become_headers_but_cannot_forge_the_device_id(bootstrap, mqtt_port):
    device_id = new_device_id()
    key = add_device(bootstrap, device_id)
    device = connect_when_registered(mqtt_port, device_id, key, V5)
    try:
        properties = user_properties(("site", "north"), ("device-id", "someone-else"))
        device.publish(events_topic(device_id), b"{}", qos=1, properties=properties)
        device.wait_acked(1)
    finally:
        device.close()
    [record] = telemetry_of(bootstrap, device_id, at_least=1)
    assert (record.headers() or []) == [
        ("device-id", device_id.encode()),
        ("mqtt-topic", events_topic(device_id).encode()),
        ("site", b"north"),
    ]


def test_a_wrong_key_or_an_unknown_device_is_bad_user_name_or_password(bootstrap, mqtt_port):
    device_id = new_device_id()
    key = add_device(bootstrap, device_id)
    connect_when_registered(mqtt_port, device_id, key, V5).close()
    wrong = "A" * 43 + "="
    assert connack_code_5(mqtt_port, device_id, wrong) == BAD_USER_NAME_OR_PASSWORD
    assert connack_code_311(mqtt_port, device_id, wrong) == RC_311_BAD_USER_NAME_OR_PASSWORD
    assert connack_code_5(mqtt_port, new_device_id("unknown"), key) == BAD_USER_NAME_OR_PASSWORD
    assert connack_code_311(mqtt_port, new_device_id("unknown"), key) == RC_311_BAD_USER_NAME_OR_PASSWORD
    # And through paho, as an application sees it.
    refused = Device(mqtt_port, device_id, wrong, V5)
    refused.close()
    assert refused.connack is not None and refused.connack.value == BAD_USER_NAME_OR_PASSWORD


def test_disable_enable_rotate_key_and_remove(bootstrap, mqtt_port):
    device_id = new_device_id()
    key = add_device(bootstrap, device_id)
    connect_when_registered(mqtt_port, device_id, key, V5).close()

    tidewater("device", "disable", device_id, bootstrap=bootstrap)
    assert "disabled" in tidewater("device", "show", device_id, bootstrap=bootstrap).stdout
    wait_for_code(lambda: connack_code_5(mqtt_port, device_id, key), NOT_AUTHORIZED, "disabled, 5.0")
    assert connack_code_311(mqtt_port, device_id, key) == RC_311_NOT_AUTHORIZED

    tidewater("device", "enable", device_id, bootstrap=bootstrap)
    wait_for_code(lambda: connack_code_5(mqtt_port, device_id, key), 0, "enabled again")

    new_key = tidewater("device", "rotate-key", device_id, bootstrap=bootstrap).stdout.strip()
    assert new_key != key
    wait_for_code(lambda: connack_code_5(mqtt_port, device_id, key), BAD_USER_NAME_OR_PASSWORD, "old key")
    assert connack_code_311(mqtt_port, device_id, new_key) == 0

    listed = tidewater("device", "list", bootstrap=bootstrap).stdout
    assert device_id in listed
    tidewater("device", "remove", device_id, bootstrap=bootstrap)
    wait_for_code(lambda: connack_code_5(mqtt_port, device_id, new_key), BAD_USER_NAME_OR_PASSWORD, "removed")
    assert device_id not in tidewater("device", "list", bootstrap=bootstrap).stdout
    # The registry stores hashes, never keys.
    shown = tidewater("device", "list", "--json", bootstrap=bootstrap).stdout
    assert key not in shown and new_key not in shown


@pytest.mark.parametrize("version", VERSIONS)
def test_a_token_from_device_token_connects_and_publishes(bootstrap, mqtt_port, version):
    device_id = new_device_id("token")
    key = add_device(bootstrap, device_id)
    token = device_token(bootstrap, device_id, key, "--ttl", "1h")
    device = connect_when_registered(mqtt_port, device_id, token, VERSIONS[version])
    try:
        device.publish(events_topic(device_id), b"signed in with a token", qos=1)
        assert device.wait_acked(1) == [b"signed in with a token"]
    finally:
        device.close()
    [record] = telemetry_of(bootstrap, device_id, at_least=1)
    assert record.value() == b"signed in with a token"
    assert headers_of(record)["device-id"] == device_id.encode()


def test_an_expired_token_is_bad_user_name_or_password(broker, bootstrap, mqtt_port):
    device_id = new_device_id("token")
    key = add_device(bootstrap, device_id)
    connect_when_registered(mqtt_port, device_id, key, V5).close()
    # A crafted expiry in the past.
    past = device_token(bootstrap, device_id, key, "--expires-at", str(int(time.time()) - 60))
    assert connack_code_5(mqtt_port, device_id, past) == BAD_USER_NAME_OR_PASSWORD
    assert connack_code_311(mqtt_port, device_id, past) == RC_311_BAD_USER_NAME_OR_PASSWORD
    refused = Device(mqtt_port, device_id, past, V5)
    refused.close()
    assert refused.connack is not None and refused.connack.value == BAD_USER_NAME_OR_PASSWORD
    # A short-lived one works until it runs out.
    short = device_token(bootstrap, device_id, key, "--ttl", "3s")
    expiry = int(short.rsplit("se=", 1)[1])
    if time.time() < expiry - 1:
        assert connack_code_5(mqtt_port, device_id, short) == 0
    time.sleep(max(0.0, expiry - time.time()) + 1.1)
    assert connack_code_5(mqtt_port, device_id, short) == BAD_USER_NAME_OR_PASSWORD
    assert connack_code_311(mqtt_port, device_id, short) == RC_311_BAD_USER_NAME_OR_PASSWORD
    # The gateway's log says why.
    deadline = time.monotonic() + 5
    while not any("refused a SAS token" in line and "expired" in line for line in broker.lines):
        assert time.monotonic() < deadline, broker.log_tail()
        time.sleep(0.1)


def test_a_token_of_one_device_cannot_connect_as_another(bootstrap, mqtt_port):
    device_a, device_b = new_device_id("token-a"), new_device_id("token-b")
    key_a = add_device(bootstrap, device_a)
    key_b = add_device(bootstrap, device_b)
    token_a = device_token(bootstrap, device_a, key_a)
    wait_for_code(lambda: connack_code_5(mqtt_port, device_a, token_a), 0, "A's own token")
    connect_when_registered(mqtt_port, device_b, key_b, V5).close()
    assert connack_code_5(mqtt_port, device_b, token_a) == BAD_USER_NAME_OR_PASSWORD
    assert connack_code_311(mqtt_port, device_b, token_a) == RC_311_BAD_USER_NAME_OR_PASSWORD
    # Nor does B's key make a token that A's id takes.
    assert connack_code_5(mqtt_port, device_a, device_token(bootstrap, device_a, key_b)) == BAD_USER_NAME_OR_PASSWORD


def test_a_malformed_token_is_refused_with_a_reason_in_the_log(broker, bootstrap, mqtt_port):
    device_id = new_device_id("token")
    key = add_device(bootstrap, device_id)
    connect_when_registered(mqtt_port, device_id, key, V5).close()
    malformed = f"SharedAccessSignature sr=devices%2F{device_id}&se=1"
    assert connack_code_5(mqtt_port, device_id, malformed) == BAD_USER_NAME_OR_PASSWORD
    assert connack_code_311(mqtt_port, device_id, malformed) == RC_311_BAD_USER_NAME_OR_PASSWORD
    deadline = time.monotonic() + 5
    while not any(device_id in line and "the token has no sig field" in line for line in broker.lines):
        assert time.monotonic() < deadline, broker.log_tail()
        time.sleep(0.1)


def test_rotate_key_retires_the_old_keys_tokens(bootstrap, mqtt_port):
    device_id = new_device_id("token")
    key = add_device(bootstrap, device_id)
    old_token = device_token(bootstrap, device_id, key)
    connect_when_registered(mqtt_port, device_id, old_token, V5).close()
    # (A connection the old token opened is cut off at its next message after the rotation, as
    # one opened with the key is: crates/gateway/tests/it covers that without the timing.)
    new_key = tidewater("device", "rotate-key", device_id, bootstrap=bootstrap).stdout.strip()
    wait_for_code(lambda: connack_code_5(mqtt_port, device_id, old_token), BAD_USER_NAME_OR_PASSWORD, "old token")
    assert connack_code_311(mqtt_port, device_id, old_token) == RC_311_BAD_USER_NAME_OR_PASSWORD
    new_token = device_token(bootstrap, device_id, new_key)
    assert connack_code_5(mqtt_port, device_id, new_token) == 0
    assert connack_code_311(mqtt_port, device_id, new_token) == 0
    # The signing key is a secret: the CLI never prints it.
    shown = tidewater("device", "show", device_id, "--json", bootstrap=bootstrap).stdout
    assert '"signing_key": "(redacted)"' in shown
    assert "tokens:        accepted" in tidewater("device", "show", device_id, bootstrap=bootstrap).stdout


def test_a_second_add_of_the_same_device_is_refused(bootstrap):
    device_id = new_device_id()
    add_device(bootstrap, device_id)
    result = tidewater("device", "add", device_id, bootstrap=bootstrap, check=False)
    assert result.returncode != 0 and "exists already" in result.stderr


def test_anonymous_clients_are_refused_by_default(mqtt_port):
    assert connack_code_5(mqtt_port, "anyone", None) == NOT_AUTHORIZED
    assert connack_code_311(mqtt_port, "anyone", None) == RC_311_NOT_AUTHORIZED


def test_anonymous_clients_when_allowed_have_no_device_identity(broker_factory):
    broker = broker_factory("--mqtt-allow-anonymous")
    bootstrap = broker.bootstrap
    device_id = new_device_id()
    add_device(bootstrap, device_id)
    anonymous = Device(broker.mqtt_port, "", None, V5)
    try:
        assert anonymous.accepted, anonymous.connack
        info = anonymous.publish(events_topic(device_id), b"forged", qos=1)
        anonymous.wait_acked(1)
        assert anonymous.refused == {info.mid: NOT_AUTHORIZED}
    finally:
        anonymous.close()
    assert telemetry_of(bootstrap, device_id, timeout_s=0) == []



@pytest.mark.parametrize("version", VERSIONS)
def test_the_will_of_a_device_that_vanishes_is_appended(bootstrap, mqtt_port, version):
    device_id = new_device_id("will")
    key = add_device(bootstrap, device_id)
    will = (events_topic(device_id) + "status", b"offline")
    device = connect_when_registered(mqtt_port, device_id, key, VERSIONS[version], will=will)
    # The network goes away under the client: no DISCONNECT. The client's loop is stopped
    # first, so it cannot reconnect (and later leave a second will behind).
    device.client.loop_stop()
    device.client.socket().shutdown(socket.SHUT_RDWR)
    device.client.socket().close()
    [record] = telemetry_of(bootstrap, device_id, at_least=1)
    assert record.value() == b"offline"
    assert headers_of(record)["mqtt-will"] == b"true"
    assert headers_of(record)["device-id"] == device_id.encode()

    # After a normal DISCONNECT the will is discarded.
    device = connect_when_registered(mqtt_port, device_id, key, VERSIONS[version], will=will)
    device.publish(events_topic(device_id), b"last words", qos=1)
    device.wait_acked(1)
    device.close()
    time.sleep(0.5)
    assert [record.value() for record in telemetry_of(bootstrap, device_id)] == [b"offline", b"last words"]

def test_a_device_publishing_to_another_devices_topic_is_refused(bootstrap, mqtt_port):
    mallory, victim = new_device_id("mallory"), new_device_id("victim")
    mallory_key = add_device(bootstrap, mallory)
    add_device(bootstrap, victim)

    # 5.0: PUBACK (and PUBREC) with Not authorized; the connection stays up.
    device = connect_when_registered(mqtt_port, mallory, mallory_key, V5)
    try:
        first = device.publish(events_topic(victim), b"forged", qos=1)
        second = device.publish(events_topic(victim), b"forged", qos=2)
        device.wait_acked(2)
        # The gateway answers the QoS 2 message with PUBREC Not authorized (the Rust tests check
        # the bytes). paho 2.1 sends a PUBREL even so, which MQTT-4.3.3 says it must not, and
        # reports the PUBCOMP's Packet Identifier not found (0x92) instead.
        assert device.refused == {first.mid: NOT_AUTHORIZED, second.mid: PACKET_IDENTIFIER_NOT_FOUND}
        device.publish(events_topic(mallory), b"own", qos=1)
        assert device.wait_acked(3) == [b"own"]
    finally:
        device.close()

    # 3.1.1 has no way to refuse a PUBLISH: the connection is closed.
    device = connect_when_registered(mqtt_port, mallory, mallory_key, VERSIONS["3.1.1"])
    try:
        device.publish(events_topic(victim), b"forged", qos=1)
        assert device.disconnected.wait(MQTT_TIMEOUT_S), "the 3.1.1 connection stayed open"
    finally:
        device.close()

    assert telemetry_of(bootstrap, victim, timeout_s=0) == []
    assert [record.value() for record in telemetry_of(bootstrap, mallory, at_least=1)] == [b"own"]


def test_a_malformed_packet_closes_that_connection_and_others_carry_on(bootstrap, mqtt_port):
    bad_id, good_id = new_device_id("bad"), new_device_id("good")
    bad_key, good_key = add_device(bootstrap, bad_id), add_device(bootstrap, good_id)
    good = connect_when_registered(mqtt_port, good_id, good_key, V5)
    try:
        connect_when_registered(mqtt_port, bad_id, bad_key, V5).close()
        sock, connack = raw_connect(mqtt_port, bad_id, bad_key, level=5)
        assert connack[0] == 0x20 and connack[3] == 0, connack
        # A PUBLISH with QoS 3, which does not exist.
        sock.sendall(b"\x36\x05\x00\x01a\x00\x01")
        assert read_packet(sock) == b"\xe0\x01\x81"  # DISCONNECT, Malformed Packet
        assert read_packet(sock) == b""
        sock.close()

        # Garbage before any CONNECT, and a 3.1.1 connection sent a reserved packet type.
        for garbage in (b"\xff\xff\xff\xff\xff", b"\x00\x00"):
            with socket.create_connection(("127.0.0.1", mqtt_port), timeout=MQTT_TIMEOUT_S) as raw:
                raw.sendall(garbage)
                assert read_packet(raw) == b""
        sock, connack = raw_connect(mqtt_port, bad_id, bad_key, level=4)
        sock.sendall(b"\xf0\x00")
        assert read_packet(sock) == b""
        sock.close()

        good.publish(events_topic(good_id), b"still here", qos=1)
        assert good.wait_acked(1) == [b"still here"]
    finally:
        good.close()


def test_ping_keeps_a_quiet_device_connected(bootstrap, mqtt_port):
    device_id = new_device_id()
    key = add_device(bootstrap, device_id)
    connect_when_registered(mqtt_port, device_id, key, V5).close()
    sock, connack = raw_connect(mqtt_port, device_id, key, level=4)
    assert connack == b"\x20\x02\x00\x00"
    sock.sendall(b"\xc0\x00")
    assert read_packet(sock) == b"\xd0\x00"
    sock.sendall(b"\xe0\x00")
    assert read_packet(sock) == b""
    sock.close()


def test_a_standalone_gateway_in_front_of_a_cluster(broker_factory):
    """`tidewater gateway` against a broker without its own gateway: the same behaviour, as a
    plain Kafka client."""
    broker = broker_factory("--mqtt-listen", "none", "--http-listen", "none")
    assert broker.mqtt_port is None and broker.http_port is None
    bootstrap = broker.bootstrap
    gateway = subprocess.Popen(
        [str(tidewater_binary()), "gateway", "--brokers", bootstrap, "--mqtt-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={key: value for key, value in os.environ.items() if not key.startswith("TIDEWATER_")},
    )
    try:
        assert gateway.stderr is not None
        port = http_port = None
        deadline = time.monotonic() + MQTT_TIMEOUT_S
        while port is None and time.monotonic() < deadline:
            line = gateway.stderr.readline()
            assert line, f"the gateway exited with {gateway.poll()}"
            match = re.search(r"tidewater gateway is running.*\bmqtt=127\.0\.0\.1:(\d+)", line)
            port = int(match.group(1)) if match else None
            http_match = re.search(r"tidewater gateway is running.*\bhttp=127\.0\.0\.1:(\d+)", line)
            http_port = int(http_match.group(1)) if http_match else http_port
        assert port is not None and http_port is not None, "the gateway logged no running line"
        threading.Thread(target=gateway.stderr.read, daemon=True).start()

        device_id = new_device_id("standalone")
        key = add_device(bootstrap, device_id)
        device = connect_when_registered(port, device_id, key, V5)
        try:
            device.publish(events_topic(device_id), b"via the standalone gateway", qos=1)
            assert device.wait_acked(1) == [b"via the standalone gateway"]
        finally:
            device.close()
        [record] = telemetry_of(bootstrap, device_id, at_least=1)
        assert record.value() == b"via the standalone gateway"
        assert headers_of(record)["device-id"] == device_id.encode()
        # And over HTTP, through the same standalone gateway.
        connection = http.client.HTTPConnection("127.0.0.1", http_port, timeout=MQTT_TIMEOUT_S)
        connection.request(
            "POST",
            f"/devices/{device_id}/messages/events",
            body=b'{"via": "http"}',
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        )
        response = connection.getresponse()
        assert (response.status, response.read()) == (200, b'{"appended":1}')
        connection.close()
        records = telemetry_of(bootstrap, device_id, at_least=2)
        assert [record.value() for record in records] == [b"via the standalone gateway", b'{"via": "http"}']
    finally:
        gateway.send_signal(signal.SIGTERM)
        assert gateway.wait(timeout=30) == 0
