"""MQTT publish/subscribe through the gateway with paho-mqtt (3.1.1 and 5): every message a
subscriber receives went through the cluster first (the pub/sub topic, the retained table, the
commands topic), so these tests also show that the log follower feeds subscribers.

Plain pub/sub needs anonymous clients, so this module runs a `tidewater serve` of its own with
`--mqtt-allow-anonymous` (conftest's `anonymous_gateway`). Commands go to devices registered
with `tidewater device add`, and are produced to the `commands` topic with confluent-kafka, as
any application would.
"""

from __future__ import annotations

import threading
import time

import pytest
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.subscribeoptions import SubscribeOptions

from gateway_support import (
    MQTT_TIMEOUT_S,
    REGISTRY_TIMEOUT_S,
    V311,
    V5,
    VERSIONS,
    add_device,
    command_deliveries,
    produce_command,
    unique,
)


class Client:
    """A paho client that records what it receives, in order, as (topic, payload, qos, retain)."""

    def __init__(
        self,
        port: int,
        protocol: int,
        client_id: str = "",
        *,
        clean: bool = True,
        session_expiry: int | None = None,
        credentials: tuple[str, str] | None = None,
        will: tuple[str, bytes] | None = None,
    ):
        self.protocol = protocol
        if protocol == V5:
            self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol)
        else:
            self.client = mqtt.Client(
                CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol, clean_session=clean
            )
        if credentials is not None:
            self.client.username_pw_set(*credentials)
        if will is not None:
            self.client.will_set(will[0], will[1], qos=1)
        self.lock = threading.Lock()
        self.messages: list[tuple[str, bytes, int, bool]] = []
        self.granted: dict[int, list[int]] = {}
        self.connack = None
        self.session_present: bool | None = None
        self.connected = threading.Event()
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        properties = None
        if protocol == V5 and session_expiry is not None:
            properties = Properties(PacketTypes.CONNECT)
            properties.SessionExpiryInterval = session_expiry
        if protocol == V5:
            self.client.connect("127.0.0.1", port, keepalive=30, clean_start=clean, properties=properties)
        else:
            self.client.connect("127.0.0.1", port, keepalive=30)
        self.client.loop_start()
        assert self.connected.wait(MQTT_TIMEOUT_S), "no CONNACK"

    def _on_connect(self, client, userdata, flags, reason_code, properties=None):
        self.connack = reason_code
        self.session_present = bool(flags.session_present)
        self.connected.set()

    def _on_message(self, client, userdata, message):
        with self.lock:
            self.messages.append((message.topic, message.payload, message.qos, bool(message.retain)))

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties=None):
        with self.lock:
            self.granted[mid] = [code.value for code in reason_codes]

    def subscribe(self, *filters: tuple[str, int], options: dict | None = None) -> list[int]:
        """Subscribes and returns the SUBACK's reason codes."""
        if self.protocol == V5:
            pairs = [(topic, SubscribeOptions(qos=qos, **(options or {}))) for topic, qos in filters]
        else:
            pairs = list(filters)
        _, mid = self.client.subscribe(pairs)
        deadline = time.monotonic() + MQTT_TIMEOUT_S
        while time.monotonic() < deadline:
            with self.lock:
                if mid in self.granted:
                    return self.granted[mid]
            time.sleep(0.01)
        raise AssertionError("no SUBACK")

    def publish(self, topic: str, payload: bytes, qos: int, retain: bool = False) -> None:
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        if qos > 0:
            info.wait_for_publish(MQTT_TIMEOUT_S)
            assert info.is_published(), f"{topic} was not acknowledged"

    def wait_for(self, count: int, timeout_s: float = MQTT_TIMEOUT_S) -> list[tuple[str, bytes, int, bool]]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.messages) >= count:
                    return list(self.messages)
            time.sleep(0.01)
        with self.lock:
            raise AssertionError(f"received {len(self.messages)} of {count}: {self.messages}")

    def quiet_for(self, seconds: float) -> list[tuple[str, bytes, int, bool]]:
        time.sleep(seconds)
        with self.lock:
            return list(self.messages)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def vanish(self) -> None:
        """Drops the TCP connection without a DISCONNECT, as a device losing power does."""
        self.client.loop_stop()
        sock = self.client.socket()
        if sock is not None:
            sock.close()


@pytest.mark.parametrize("qos", [0, 1, 2])
@pytest.mark.parametrize("version", ["3.1.1", "5.0"])
def test_round_trip_at_every_qos_keeps_order(anonymous_gateway, version, qos):
    topic = unique("plant") + "/line-1/temp"
    subscriber = Client(anonymous_gateway.mqtt_port, VERSIONS[version])
    publisher = Client(anonymous_gateway.mqtt_port, VERSIONS[version])
    try:
        assert subscriber.subscribe((topic, 2)) == [2]
        payloads = [f"reading {n}".encode() for n in range(30)]
        for payload in payloads:
            publisher.publish(topic, payload, qos)
        received = subscriber.wait_for(len(payloads))
        assert [payload for _, payload, _, _ in received] == payloads
        assert {message_qos for _, _, message_qos, _ in received} == {qos}
        assert not any(retain for _, _, _, retain in received)
    finally:
        publisher.close()
        subscriber.close()


def test_wildcard_subscriptions_match_by_level(anonymous_gateway):
    root = unique("site")
    subscriber = Client(anonymous_gateway.mqtt_port, V5)
    publisher = Client(anonymous_gateway.mqtt_port, V311)
    try:
        subscriber.subscribe((f"{root}/+/temp", 1), (f"{root}/hall/#", 1))
        for topic in [f"{root}/kitchen/temp", f"{root}/hall", f"{root}/hall/door/open", f"{root}/kitchen/humidity", f"{root}/a/b/temp"]:
            publisher.publish(topic, topic.encode(), 1)
        received = subscriber.wait_for(3)
        assert sorted(topic for topic, _, _, _ in subscriber.quiet_for(0.5)) == sorted(
            [f"{root}/kitchen/temp", f"{root}/hall", f"{root}/hall/door/open"]
        )
        assert len(received) == 3
    finally:
        publisher.close()
        subscriber.close()


@pytest.mark.parametrize("version", ["3.1.1", "5.0"])
def test_retained_message_reaches_later_subscribers_until_cleared(anonymous_gateway, version):
    topic = unique("status") + "/line-1"
    publisher = Client(anonymous_gateway.mqtt_port, VERSIONS[version])
    try:
        publisher.publish(topic, b"running", 1, retain=True)
        late = Client(anonymous_gateway.mqtt_port, VERSIONS[version])
        late.subscribe((topic, 1))
        assert late.wait_for(1) == [(topic, b"running", 1, True)]
        late.close()
        publisher.publish(topic, b"", 1, retain=True)
        later = Client(anonymous_gateway.mqtt_port, VERSIONS[version])
        later.subscribe((topic, 1))
        assert later.quiet_for(1.0) == [], "a cleared retained message is not sent"
        later.close()
    finally:
        publisher.close()


def test_retained_and_plain_messages_on_one_topic_keep_their_order(anonymous_gateway):
    """MQTT-4.6.0-6: one client's messages on one topic arrive in the order sent, retained or not
    (a retained one is also stored in the retained table, but is delivered in its place)."""
    topic = unique("order") + "/1"
    subscriber = Client(anonymous_gateway.mqtt_port, V5)
    publisher = Client(anonymous_gateway.mqtt_port, V311)
    try:
        subscriber.subscribe((topic, 1))
        infos = [
            publisher.client.publish(topic, str(n).encode(), qos=1, retain=n % 2 == 1) for n in range(20)
        ]
        for info in infos:
            info.wait_for_publish(MQTT_TIMEOUT_S)
            assert info.is_published()
        received = subscriber.wait_for(20)
        assert [payload for _, payload, _, _ in received] == [str(n).encode() for n in range(20)]
    finally:
        publisher.publish(topic, b"", 1, retain=True)
        publisher.close()
        subscriber.close()


def test_retained_messages_are_served_right_after_a_restart(broker_factory):
    """The listener opens only once the retained table is read to its end, so a subscriber that
    connects the moment the restarted server says it is running still gets them."""
    broker = broker_factory("--mqtt-allow-anonymous")
    topic = unique("status") + "/pump"
    publisher = Client(broker.mqtt_port, V311)
    publisher.publish(topic, b"running", 1, retain=True)
    publisher.close()
    broker.restart()
    subscriber = Client(broker.mqtt_port, V5)
    try:
        subscriber.subscribe((topic, 1))
        assert subscriber.wait_for(1) == [(topic, b"running", 1, True)]
    finally:
        subscriber.close()


def test_will_message_goes_to_subscribers_when_a_client_vanishes(anonymous_gateway):
    topic = unique("wills") + "/client-1"
    subscriber = Client(anonymous_gateway.mqtt_port, V5)
    try:
        subscriber.subscribe((topic, 1))
        doomed = Client(anonymous_gateway.mqtt_port, V311, unique("doomed"), will=(topic, b"gone"))
        polite = Client(anonymous_gateway.mqtt_port, V311, unique("polite"), will=(topic, b"should not be sent"))
        polite.close()
        doomed.vanish()
        assert subscriber.wait_for(1)[0][:2] == (topic, b"gone")
        assert len(subscriber.quiet_for(1.0)) == 1, "a normal DISCONNECT sends no will"
    finally:
        subscriber.close()


@pytest.mark.parametrize("version", ["3.1.1", "5.0"])
def test_persistent_session_is_resumed_with_what_arrived_while_away(anonymous_gateway, version):
    protocol = VERSIONS[version]
    topic = unique("jobs") + "/queue"
    client_id = unique("worker")
    worker = Client(anonymous_gateway.mqtt_port, protocol, client_id, clean=False, session_expiry=300)
    assert worker.session_present is False
    worker.subscribe((topic, 1))
    worker.close()
    publisher = Client(anonymous_gateway.mqtt_port, V311)
    try:
        for n in range(5):
            publisher.publish(topic, f"job {n}".encode(), 1)
        publisher.publish(topic, b"qos 0 is not kept for an absent client", 0)
    finally:
        publisher.close()
    # Give the log follower time to queue them all before the worker is back.
    time.sleep(1.0)
    worker = Client(anonymous_gateway.mqtt_port, protocol, client_id, clean=False, session_expiry=300)
    try:
        assert worker.session_present is True
        received = worker.wait_for(5)
        assert [payload for _, payload, _, _ in worker.quiet_for(0.5)] == [f"job {n}".encode() for n in range(5)]
        assert len(received) == 5
    finally:
        worker.close()
    # A clean start ends the session.
    fresh = Client(anonymous_gateway.mqtt_port, protocol, client_id, clean=True)
    assert fresh.session_present is False
    fresh.close()


def test_shared_subscription_splits_messages_between_members(anonymous_gateway):
    topic = unique("work") + "/items"
    members = [Client(anonymous_gateway.mqtt_port, V5) for _ in range(2)]
    publisher = Client(anonymous_gateway.mqtt_port, V5)
    try:
        for member in members:
            member.subscribe((f"$share/workers/{topic}", 1))
        payloads = [f"item {n}".encode() for n in range(20)]
        for payload in payloads:
            publisher.publish(topic, payload, 1)
        deadline = time.monotonic() + MQTT_TIMEOUT_S
        while sum(len(member.messages) for member in members) < len(payloads) and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.3)
        got = [payload for member in members for _, payload, _, _ in member.messages]
        assert sorted(got) == sorted(payloads), "each message to exactly one member"
        assert all(member.messages for member in members), "both members get a share"
    finally:
        publisher.close()
        for member in members:
            member.close()


def connect_device(port: int, device_id: str, key: str, protocol: int) -> Client:
    deadline = time.monotonic() + REGISTRY_TIMEOUT_S
    while True:
        client = Client(port, protocol, device_id, credentials=(device_id, key))
        if client.connack is not None and not client.connack.is_failure:
            return client
        client.client.loop_stop()
        assert time.monotonic() < deadline, f"{device_id} still refused: {client.connack}"
        time.sleep(0.2)


@pytest.mark.parametrize("version", ["3.1.1", "5.0"])
def test_commands_reach_a_device_online_and_one_that_was_offline(anonymous_gateway, version):
    device_id = unique("pump")
    key = add_device(anonymous_gateway.bootstrap, device_id)
    devicebound = f"devices/{device_id}/messages/devicebound/"
    # Sent while the device has never connected: it waits.
    produce_command(anonymous_gateway.bootstrap, device_id, b'{"action":"calibrate"}')
    device = connect_device(anonymous_gateway.mqtt_port, device_id, key, VERSIONS[version])
    try:
        assert device.subscribe((devicebound + "#", 1)) == [1]
        assert device.wait_for(1) == [(devicebound, b'{"action":"calibrate"}', 1, False)]
        produce_command(anonymous_gateway.bootstrap, device_id, b'{"action":"reboot"}')
        assert [payload for _, payload, _, _ in device.wait_for(2)] == [b'{"action":"calibrate"}', b'{"action":"reboot"}']
        # A device may not listen to another device's commands, nor to everything.
        refused = device.subscribe(("devices/other/messages/devicebound/#", 1), ("#", 0))
        assert refused == ([0x87, 0x87] if VERSIONS[version] == V5 else [0x80, 0x80])
    finally:
        device.close()
    deliveries = command_deliveries(anonymous_gateway.bootstrap, device_id, 2)
    assert len(deliveries) == 2, deliveries
    assert deliveries[0]["offset"] < deliveries[1]["offset"]


def test_a_command_not_acknowledged_is_sent_again_on_reconnect(anonymous_gateway):
    device_id = unique("valve")
    key = add_device(anonymous_gateway.bootstrap, device_id)
    devicebound = f"devices/{device_id}/messages/devicebound/"
    device = connect_device(anonymous_gateway.mqtt_port, device_id, key, V311)
    # The device loses power after the command arrives, before it acknowledges it.
    device.client.manual_ack_set(True)
    device.subscribe((devicebound + "#", 1))
    produce_command(anonymous_gateway.bootstrap, device_id, b"open")
    assert device.wait_for(1)[0][:2] == (devicebound, b"open")
    device.vanish()
    again = connect_device(anonymous_gateway.mqtt_port, device_id, key, V311)
    try:
        again.subscribe((devicebound + "#", 1))
        assert again.wait_for(1)[0][:2] == (devicebound, b"open")
    finally:
        again.close()
    assert len(command_deliveries(anonymous_gateway.bootstrap, device_id, 1)) == 1, "delivered once acknowledged"
