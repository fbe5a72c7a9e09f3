"""Bad input to the gateway's MQTT listener, each case while healthy devices (paho-mqtt, one
3.1.1 and one 5.0, connected for the whole module) stay connected and keep getting PUBACKs: a
bad client costs its own connection, never anyone else's.

What test_gateway.py covers already is not repeated here: QoS 3 from an MQTT 5 client, garbage
before CONNECT, a reserved packet type from a 3.1.1 client, and the CONNACK codes of failed
authentication on their own. Here: malformed fixed headers and topics, reserved flag bits,
protocol violations, packets over the size limit (at the boundary, on a broker with a small
limit) and refused CONNECTs, all with the healthy devices checked after each.

A 3.1.1 connection that breaks a rule is closed without a word (3.1.1 has no DISCONNECT from the
server); an MQTT 5 one is sent a DISCONNECT with the reason code first.
"""

from __future__ import annotations

import socket
import struct

import pytest

from gateway_support import (
    MQTT_TIMEOUT_S,
    V311,
    V5,
    Device,
    add_device,
    connack_code_5,
    connect_packet,
    connect_when_registered,
    events_topic,
    new_device_id,
    packets_until_closed,
    publish_packet,
    publish_packet_of_size,
    read_packet,
    read_whole_packet,
    telemetry_of,
    varint,
    wait_for_code,
)
from trigger_support import tidewater

MALFORMED_PACKET = 0x81
PROTOCOL_ERROR = 0x82
UNSPECIFIED_ERROR = 0x80
BAD_USER_NAME_OR_PASSWORD = 0x86
NOT_AUTHORIZED = 0x87
PACKET_TOO_LARGE = 0x95
RC_311_BAD_USER_NAME_OR_PASSWORD = 4
RC_311_NOT_AUTHORIZED = 5
# The gateway's default --mqtt-max-packet-bytes, which the session broker runs with.
DEFAULT_MAX_PACKET_BYTES = 256 * 1024
# The limit the boundary test's own broker runs with.
SMALL_MAX_PACKET_BYTES = 4096


def disconnect(reason_code: int) -> bytes:
    return bytes([0xE0, 0x01, reason_code])


def connack_5(reason_code: int) -> bytes:
    """An MQTT 5 CONNACK refusing with `reason_code`, no session, no properties."""
    return bytes([0x20, 0x03, 0x00, reason_code, 0x00])


def connack_311(return_code: int) -> bytes:
    return bytes([0x20, 0x02, 0x00, return_code])


class Healthy:
    """Well-behaved devices, one per protocol version, that stay connected while bad clients
    come and go; `check` proves they are still connected and still acknowledged."""

    def __init__(self, bootstrap: str, port: int):
        self.bootstrap = bootstrap
        self.devices: list[tuple[str, Device]] = []
        self.sent: dict[str, list[bytes]] = {}
        for protocol in (V311, V5):
            device_id = new_device_id("healthy")
            key = add_device(bootstrap, device_id)
            self.devices.append((device_id, connect_when_registered(port, device_id, key, protocol)))
            self.sent[device_id] = []

    def check(self, after: str) -> None:
        for device_id, device in self.devices:
            assert not device.disconnected.is_set(), f"a healthy device was disconnected after {after}"
            payload = f"after {after}".encode()
            self.sent[device_id].append(payload)
            device.publish(events_topic(device_id), payload, qos=1)
            acked = device.wait_acked(len(self.sent[device_id]))
            assert acked == self.sent[device_id], f"after {after}"
            assert not device.disconnected.is_set(), f"a healthy device was disconnected after {after}"

    def close_and_check_log(self) -> None:
        for device_id, device in self.devices:
            device.close()
            stored = telemetry_of(self.bootstrap, device_id, at_least=len(self.sent[device_id]))
            assert [record.value() for record in stored] == self.sent[device_id]


@pytest.fixture
def mqtt_port(broker) -> int:
    assert broker.mqtt_port is not None, "the session broker logged no mqtt= address"
    return broker.mqtt_port


@pytest.fixture(scope="module")
def healthy(broker):
    """One pair of healthy devices for the whole module, connected from its first test to its
    last (the boundary test has its own broker, and its own pair)."""
    devices = Healthy(broker.bootstrap, broker.mqtt_port)
    yield devices
    devices.close_and_check_log()


def connected(port: int, device_id: str, key: str, level: int) -> socket.socket:
    """A raw connection past a successful CONNACK."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=MQTT_TIMEOUT_S)
    sock.sendall(connect_packet(device_id, key, level))
    connack = read_whole_packet(sock)
    assert connack[:1] == b"\x20" and connack[3] == 0, f"not accepted: {connack!r}"
    return sock


def answer_to(port: int, device_id: str, key: str, level: int, bad: bytes) -> list[bytes]:
    """Connects, sends `bad`, and returns every packet the gateway sent before it closed."""
    with connected(port, device_id, key, level) as sock:
        sock.sendall(bad)
        return packets_until_closed(sock)


# Sent after a successful CONNECT: (what, level, bytes, what the gateway sends before closing).
# The PUBLISHes name the bad device's own topic, so only their form is wrong.
def after_connect_cases(device_id: str) -> list[tuple[str, int, bytes, list[bytes]]]:
    own = events_topic(device_id).encode()
    cases = []
    for level in (4, 5):
        def closed(reason_code: int) -> list[bytes]:
            return [disconnect(reason_code)] if level == 5 else []

        cases += [
            # Malformed packets.
            ("remaining length in five bytes", level, b"\x30\xff\xff\xff\xff\x01", closed(MALFORMED_PACKET)),
            ("remaining length not in the fewest bytes", level, b"\x30\x80\x00", closed(MALFORMED_PACKET)),
            ("topic not UTF-8", level, publish_packet(own + b"\xc3\x28", b"x", 1, 1, level), closed(MALFORMED_PACKET)),
            ("topic with U+0000", level, publish_packet(own + b"\x00", b"x", 1, 1, level), closed(MALFORMED_PACKET)),
            ("PUBREL with reserved flags 0000", level, b"\x60\x02\x00\x01", closed(MALFORMED_PACKET)),
            ("PINGREQ with reserved flags 0001", level, b"\xc1\x00", closed(MALFORMED_PACKET)),
            # Protocol violations.
            ("a second CONNECT", level, connect_packet(device_id, "x", level), closed(PROTOCOL_ERROR)),
            ("QoS 0 PUBLISH with DUP", level, b"\x38" + publish_packet(own, b"x", 0, 0, level)[1:], closed(PROTOCOL_ERROR)),
            # Over the limit: refused from the fixed header alone, the body never sent.
            ("a PUBLISH over the packet size limit", level, b"\x30" + varint(DEFAULT_MAX_PACKET_BYTES), closed(PACKET_TOO_LARGE)),
        ]
    # test_gateway.py sends QoS 3 over MQTT 5.
    cases.append(("QoS 3", 4, publish_packet(own, b"x", 3, 1, 4), []))
    return cases


def test_malformed_packets_and_protocol_violations_close_only_that_connection(bootstrap, mqtt_port, healthy):
    device_id = new_device_id("bad")
    key = add_device(bootstrap, device_id)
    connect_when_registered(mqtt_port, device_id, key, V5).close()
    healthy.check("the bad device connected")
    for what, level, bad, expected in after_connect_cases(device_id):
        answer = answer_to(mqtt_port, device_id, key, level, bad)
        assert answer == expected, f"{what} (protocol level {level}): got {answer!r}"
        healthy.check(f"{what} (protocol level {level})")
    # None of it reached the log.
    assert telemetry_of(bootstrap, device_id, timeout_s=0) == []


def test_packets_before_connect_are_answered_by_closing(bootstrap, mqtt_port, healthy):
    device_id = new_device_id("early")
    key = add_device(bootstrap, device_id)
    cases = [
        ("PUBLISH before CONNECT", publish_packet(events_topic(device_id).encode(), b"x", 1, 1, 4)),
        ("PINGREQ before CONNECT", b"\xc0\x00"),
    ]
    for what, bad in cases:
        with socket.create_connection(("127.0.0.1", mqtt_port), timeout=MQTT_TIMEOUT_S) as sock:
            sock.sendall(bad)
            assert packets_until_closed(sock) == [], what
        healthy.check(what)
    # MQTT-3.1.2-2: a protocol level the server does not speak gets CONNACK return code 1
    # (unacceptable protocol version), then the connection closes.
    unacceptable_protocol_version = bytes([0x20, 0x02, 0x00, 0x01])
    for level in (3, 6):
        what = f"CONNECT named MQTT with protocol level {level}"
        with socket.create_connection(("127.0.0.1", mqtt_port), timeout=MQTT_TIMEOUT_S) as sock:
            sock.sendall(connect_packet(device_id, key, 4).replace(b"MQTT\x04", b"MQTT" + bytes([level])))
            assert packets_until_closed(sock) == [unacceptable_protocol_version], what
        healthy.check(what)
    assert telemetry_of(bootstrap, device_id, timeout_s=0) == []


def refused_connack(port: int, device_id: str, key: str | None, level: int) -> bytes:
    """The CONNACK a refused CONNECT gets; the gateway must close the connection after it."""
    with socket.create_connection(("127.0.0.1", port), timeout=MQTT_TIMEOUT_S) as sock:
        sock.sendall(connect_packet(device_id, key, level))
        [connack] = packets_until_closed(sock)
        return connack


def test_failed_authentication_is_refused_with_the_right_code(bootstrap, mqtt_port, healthy):
    device_id = new_device_id("auth")
    key = add_device(bootstrap, device_id)
    connect_when_registered(mqtt_port, device_id, key, V5).close()
    wrong_key = "A" * 43 + "="
    cases = [
        # (what, client id, password): all Bad user name or password.
        ("an unknown device", new_device_id("unknown"), key),
        ("a wrong key", device_id, wrong_key),
        ("a key that is not base64", device_id, "not a key"),
    ]
    for what, client_id, password in cases:
        assert refused_connack(mqtt_port, client_id, password, 5) == connack_5(BAD_USER_NAME_OR_PASSWORD), what
        assert refused_connack(mqtt_port, client_id, password, 4) == connack_311(RC_311_BAD_USER_NAME_OR_PASSWORD), what
        healthy.check(what)

    tidewater("device", "disable", device_id, bootstrap=bootstrap)
    wait_for_code(lambda: connack_code_5(mqtt_port, device_id, key), NOT_AUTHORIZED, "disabled")
    assert refused_connack(mqtt_port, device_id, key, 5) == connack_5(NOT_AUTHORIZED)
    assert refused_connack(mqtt_port, device_id, key, 4) == connack_311(RC_311_NOT_AUTHORIZED)
    healthy.check("a disabled device")
    assert telemetry_of(bootstrap, device_id, timeout_s=0) == []


def test_the_packet_size_limit_at_its_boundary(broker_factory):
    """On a broker with a small --mqtt-max-packet-bytes: a PUBLISH of exactly the limit (fixed
    header included) is appended, one byte more closes the connection (MQTT 5: DISCONNECT
    Packet too large), and the MQTT 5 CONNACK announces the limit as Maximum Packet Size."""
    broker = broker_factory("--mqtt-max-packet-bytes", str(SMALL_MAX_PACKET_BYTES))
    healthy = Healthy(broker.bootstrap, broker.mqtt_port)
    device_id = new_device_id("big")
    key = add_device(broker.bootstrap, device_id)
    connect_when_registered(broker.mqtt_port, device_id, key, V5).close()
    topic = events_topic(device_id).encode()
    payloads = []
    try:
        for level in (4, 5):
            with socket.create_connection(("127.0.0.1", broker.mqtt_port), timeout=MQTT_TIMEOUT_S) as sock:
                sock.sendall(connect_packet(device_id, key, level))
                connack = read_whole_packet(sock)
                assert connack[3] == 0, connack
                if level == 5:
                    # Property 0x27, Maximum Packet Size, a four-byte integer.
                    assert b"\x27" + struct.pack(">I", SMALL_MAX_PACKET_BYTES) in connack, connack
                at_the_limit, payload = publish_packet_of_size(topic, SMALL_MAX_PACKET_BYTES, 7, level)
                payloads.append(payload)
                sock.sendall(at_the_limit)
                assert read_whole_packet(sock) == b"\x40\x02\x00\x07"  # PUBACK, Success
                sock.sendall(publish_packet_of_size(topic, SMALL_MAX_PACKET_BYTES + 1, 8, level)[0])
                expected = [disconnect(PACKET_TOO_LARGE)] if level == 5 else []
                assert packets_until_closed(sock) == expected, f"protocol level {level}"
            healthy.check(f"a packet one byte too large (protocol level {level})")
        stored = telemetry_of(broker.bootstrap, device_id, at_least=2)
        assert [record.value() for record in stored] == payloads
    finally:
        healthy.close_and_check_log()


def test_a_publish_of_the_largest_allowed_size_is_appended(bootstrap, mqtt_port, healthy):
    """The default packet limit (256 KiB, as IoT Hub's) is one the cluster always takes: a
    PUBLISH of exactly that size is acknowledged and appended, not refused by the producer after
    the gateway accepted it (which a device would answer by resending forever)."""
    device_id = new_device_id("largest")
    key = add_device(bootstrap, device_id)
    connect_when_registered(mqtt_port, device_id, key, V5).close()
    largest, payload = publish_packet_of_size(events_topic(device_id).encode(), DEFAULT_MAX_PACKET_BYTES, 1, 5)
    assert len(largest) == DEFAULT_MAX_PACKET_BYTES
    with connected(mqtt_port, device_id, key, 5) as sock:
        sock.sendall(largest)
        assert read_packet(sock) == bytes([0x40, 0x02, 0x00, 0x01]), "PUBACK 1, success"
    healthy.check("a PUBLISH of the largest allowed size")
    [record] = telemetry_of(bootstrap, device_id, at_least=1)
    assert record.value() == payload
