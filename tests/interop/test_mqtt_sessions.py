"""Persistent MQTT sessions kept in the cluster, with paho-mqtt (3.1.1 and 5) and hand-made
packets against the real binary: a session survives a gateway restart (SIGTERM and SIGKILL)
and moves to another gateway (`tidewater gateway`) in front of the same broker, with Session
Present 1 and every QoS 1 message it was owed; a QoS 2 id awaiting PUBREL survives a kill -9; a
will waiting out its delay is published after a restart; a clean start, or a session's expiry,
leaves a tombstone in `_tidewater_mqtt_sessions`; and a newer connection at another gateway
takes the session over.

The gateways here take anonymous clients, whose sessions are keyed `anonymous/{client id}`.
"""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import threading
import time

import pytest
import paho.mqtt.client as mqtt
from confluent_kafka import KafkaError, TopicPartition, OFFSET_BEGINNING
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

import confluent_support as ck
from conftest import tidewater_binary
from gateway_support import (
    MQTT_TIMEOUT_S,
    V311,
    V5,
    VERSIONS,
    mqtt_string,
    packet,
    packets_until_closed,
    publish_packet,
    read_whole_packet,
    unique,
    varint,
)
from support import wait_until
from test_mqtt_pubsub import Client

SESSIONS_TOPIC = "_tidewater_mqtt_sessions"
MESSAGES_TOPIC = "mqtt-messages"
# How long the gateway may take to write a session's record after the change.
RECORD_TIMEOUT_S = 15.0


def session_records(bootstrap: str) -> dict[str, dict | None]:
    """The sessions table as the cluster holds it: the latest record per client (None for a
    tombstone), read to the partition's end with confluent-kafka."""
    client = ck.consumer(bootstrap, **{"enable.partition.eof": True})
    latest: dict[str, dict | None] = {}
    try:
        client.assign([TopicPartition(SESSIONS_TOPIC, 0, OFFSET_BEGINNING)])
        deadline = time.monotonic() + MQTT_TIMEOUT_S
        while time.monotonic() < deadline:
            message = client.poll(1.0)
            if message is None:
                continue
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    return latest
                if error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                    continue
                raise AssertionError(f"reading {SESSIONS_TOPIC}: {error}")
            value = message.value()
            latest[message.key().decode()] = None if value is None else json.loads(value)
        raise AssertionError(f"{SESSIONS_TOPIC} was not read to its end in {MQTT_TIMEOUT_S}s")
    finally:
        client.close()


def wait_for_record(bootstrap: str, client_id: str, condition, what: str, prefix: str = ""):
    """Waits until the cluster's latest record of anonymous client `client_id` (its will's with
    `prefix="will/"`) satisfies `condition` (it gets `None` for a tombstone or no record, and
    whether there is a record) and returns it."""
    key = f"{prefix}anonymous/{client_id}"
    found: list = []

    def check():
        records = session_records(bootstrap)
        if condition(records.get(key), key in records):
            found.append(records.get(key))
            return True
        return False

    wait_until(check, timeout_s=RECORD_TIMEOUT_S, what=what)
    return found[0]


def detached_with(topic: str):
    """A condition: a record of a session no connection holds, subscribed to `topic`."""
    return lambda record, _: bool(
        record and not record["connected"] and any(sub["filter"] == topic for sub in record["subscriptions"])
    )


class StandaloneGateway:
    """A `tidewater gateway` process in front of `bootstrap` taking anonymous MQTT clients."""

    def __init__(self, bootstrap: str):
        command = [
            str(tidewater_binary()), "gateway", "--brokers", bootstrap, "--mqtt-allow-anonymous",
            "--mqtt-listen", "127.0.0.1:0", "--http-listen", "none", "--admin-listen", "127.0.0.1:0",
        ]
        self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self.mqtt_port = None
        deadline = time.monotonic() + 60
        while self.mqtt_port is None:
            assert time.monotonic() < deadline, "the gateway logged no running line:\n" + "\n".join(self.lines)
            line = self.process.stderr.readline()
            assert line, f"the gateway exited with {self.process.poll()}:\n" + "\n".join(self.lines)
            self.lines.append(line.rstrip())
            match = re.search(r"tidewater gateway is running.*\bmqtt=127\.0\.0\.1:(\d+)", line)
            self.mqtt_port = int(match.group(1)) if match else None
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        for line in self.process.stderr:
            self.lines.append(line.rstrip())

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(30)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        assert self.process.wait(30) == 0, "\n".join(self.lines[-40:])


def publish_all(port: int, topic: str, payloads: list[bytes]) -> None:
    publisher = Client(port, V311)
    try:
        for payload in payloads:
            publisher.publish(topic, payload, 1)
    finally:
        publisher.close()


def payloads_of(messages) -> list[bytes]:
    return [payload for _, payload, _, _ in messages]


@pytest.mark.parametrize("version", ["3.1.1", "5.0"])
@pytest.mark.parametrize("kill", [False, True], ids=["sigterm", "sigkill"])
def test_a_persistent_session_survives_a_gateway_restart(broker_factory, version, kill):
    broker = broker_factory("--mqtt-allow-anonymous")
    protocol = VERSIONS[version]
    topic = unique("orders") + "/new"
    client_id = unique("worker")
    worker = Client(broker.mqtt_port, protocol, client_id, clean=False, session_expiry=3600)
    assert worker.session_present is False
    assert worker.subscribe((topic, 1)) == [1]
    before = [f"before {n}".encode() for n in range(3)]
    publish_all(broker.mqtt_port, topic, before)
    assert payloads_of(worker.wait_for(3)) == before
    worker.close()
    # The gateway writes the session's record once the client has gone; a crash before that
    # would be a crash while connected, the next test's case.
    wait_for_record(broker.bootstrap, client_id, detached_with(topic), "the detached session's record")

    away = [f"away {n}".encode() for n in range(10)]
    publisher = Client(broker.mqtt_port, V311)
    try:
        for payload in away:
            publisher.publish(topic, payload, 1)
        publisher.publish(topic, b"qos 0 is not kept for an absent client", 0)
    finally:
        publisher.close()
    broker.restart(kill=kill)

    worker = Client(broker.mqtt_port, protocol, client_id, clean=False, session_expiry=3600)
    try:
        assert worker.session_present is True
        worker.wait_for(len(away))
        # Nothing already acknowledged comes again, nothing owed is missing, in order.
        assert payloads_of(worker.quiet_for(1.0)) == away
        # The restored session is subscribed: a message published now arrives too.
        publish_all(broker.mqtt_port, topic, [b"after"])
        assert payloads_of(worker.wait_for(len(away) + 1))[-1] == b"after"
    finally:
        worker.close()


def test_a_session_moves_to_another_gateway_in_front_of_the_same_broker(broker_factory):
    """The first gateway dies (kill -9) with the client connected; the client reconnects to a
    second gateway process, which restores the session from the cluster. Messages are
    published through a third gateway (the broker's own) meanwhile."""
    broker = broker_factory("--mqtt-allow-anonymous")
    topic = unique("alerts") + "/fire"
    client_id = unique("pager")
    first = StandaloneGateway(broker.bootstrap)
    second = None
    try:
        worker = Client(first.mqtt_port, V5, client_id, clean=False, session_expiry=3600)
        assert worker.subscribe((topic, 1)) == [1]
        before = [f"before {n}".encode() for n in range(3)]
        publish_all(broker.mqtt_port, topic, before)
        assert payloads_of(worker.wait_for(3)) == before
        first.kill()
        worker.vanish()

        away = [f"away {n}".encode() for n in range(10)]
        publish_all(broker.mqtt_port, topic, away)
        second = StandaloneGateway(broker.bootstrap)
        worker = Client(second.mqtt_port, V5, client_id, clean=False, session_expiry=3600)
        try:
            assert worker.session_present is True
            received = payloads_of(worker.quiet_for(1.0))
            assert set(away) <= set(received), f"owed messages missing: {received}"
            # Acknowledgements not yet written when the gateway died may bring a message of
            # before again (QoS 1 allows it); what was owed comes in order, once.
            assert [payload for payload in received if payload not in before] == away
        finally:
            worker.close()
    finally:
        first.kill()
        if second is not None:
            second.stop()


def test_a_newer_connection_at_another_gateway_takes_the_session_over(broker_factory):
    """The old connection (hand-made MQTT 5 packets, to read its DISCONNECT's reason code, which
    paho does not report) is closed with Session taken over once the other gateway's record
    reaches its gateway; the new connection has the session, subscription included."""
    broker = broker_factory("--mqtt-allow-anonymous")
    topic = unique("takeover") + "/t"
    client_id = unique("roamer")
    other = StandaloneGateway(broker.bootstrap)
    try:
        expiry = b"\x11" + (3600).to_bytes(4, "big")
        variable = mqtt_string(b"MQTT") + bytes([5, 0x00]) + (30).to_bytes(2, "big") + varint(len(expiry)) + expiry
        old = socket.create_connection(("127.0.0.1", broker.mqtt_port), timeout=MQTT_TIMEOUT_S)
        old.sendall(packet(0x10, variable + mqtt_string(client_id.encode())))
        connack = read_whole_packet(old)
        assert connack[0] == 0x20 and connack[3] == 0, f"CONNACK {connack!r}"
        old.sendall(packet(0x82, b"\x00\x01\x00" + mqtt_string(topic.encode()) + b"\x01"))
        assert read_whole_packet(old) == b"\x90\x04\x00\x01\x00\x01", "SUBACK granting QoS 1"
        new = Client(other.mqtt_port, V5, client_id, clean=False, session_expiry=3600)
        try:
            assert new.session_present is True
            assert packets_until_closed(old)[-1:] == [b"\xe0\x01\x8e"], "DISCONNECT Session taken over"
            publish_all(broker.mqtt_port, topic, [b"to the new connection"])
            assert payloads_of(new.wait_for(1)) == [b"to the new connection"]
        finally:
            new.close()
            old.close()
    finally:
        other.stop()


def connect_persistent_311(port: int, client_id: str) -> socket.socket:
    """A hand-made 3.1.1 CONNECT with Clean Session 0 (anonymous); returns the socket once the
    CONNACK says the connection was accepted, with the Session Present flag checked by the
    caller through `connect_persistent_311.present`."""
    variable = mqtt_string(b"MQTT") + bytes([4, 0x00]) + (30).to_bytes(2, "big")
    sock = socket.create_connection(("127.0.0.1", port), timeout=MQTT_TIMEOUT_S)
    sock.sendall(packet(0x10, variable + mqtt_string(client_id.encode())))
    connack = read_whole_packet(sock)
    assert connack[:2] == b"\x20\x02" and connack[3] == 0, f"CONNACK {connack!r}"
    connect_persistent_311.present = connack[2] == 1
    return sock


def test_a_qos_2_id_awaiting_pubrel_survives_a_kill_9(broker_factory):
    """The PUBREC is sent only once the id awaiting PUBREL is in the cluster: after a crash the
    client's resend (DUP) is acknowledged again but not appended twice, and its PUBREL is
    completed with Success."""
    broker = broker_factory("--mqtt-allow-anonymous")
    client_id = unique("exactly-once")
    topic = unique("payments").encode() + b"/in"
    payload = b"pay 10 EUR once"
    sock = connect_persistent_311(broker.mqtt_port, client_id)
    sock.sendall(publish_packet(topic, payload, 2, 7, 4))
    assert read_whole_packet(sock) == b"\x50\x02\x00\x07", "PUBREC 7"
    low, high = ck.watermarks(broker.bootstrap, MESSAGES_TOPIC, 0)
    broker.restart(kill=True)
    sock.close()

    sock = connect_persistent_311(broker.mqtt_port, client_id)
    try:
        assert connect_persistent_311.present is True
        dup = bytearray(publish_packet(topic, payload, 2, 7, 4))
        dup[0] |= 0x08
        sock.sendall(bytes(dup))
        assert read_whole_packet(sock) == b"\x50\x02\x00\x07", "PUBREC 7 again"
        sock.sendall(b"\x62\x02\x00\x07")
        assert read_whole_packet(sock) == b"\x70\x02\x00\x07", "PUBCOMP 7"
        # A new message may use id 7 now, and is appended.
        sock.sendall(publish_packet(topic, b"a new one", 2, 7, 4))
        assert read_whole_packet(sock) == b"\x50\x02\x00\x07"
    finally:
        sock.close()
    records = ck.consume(broker.bootstrap, MESSAGES_TOPIC, 0, high - 1, 2)
    assert [record.value() for record in records] == [payload, b"a new one"]
    assert ck.watermarks(broker.bootstrap, MESSAGES_TOPIC, 0)[1] == high + 1


@pytest.mark.parametrize("version", ["3.1.1", "5.0"])
def test_a_clean_start_leaves_a_tombstone_and_no_session(broker_factory, version):
    broker = broker_factory("--mqtt-allow-anonymous")
    protocol = VERSIONS[version]
    topic = unique("clean") + "/t"
    client_id = unique("cleaner")
    worker = Client(broker.mqtt_port, protocol, client_id, clean=False, session_expiry=3600)
    worker.subscribe((topic, 1))
    worker.close()
    wait_for_record(broker.bootstrap, client_id, detached_with(topic), "the persistent session's record")
    # Clean Session 1 / Clean Start with Session Expiry 0: the session ends, in the cluster too.
    fresh = Client(broker.mqtt_port, protocol, client_id, clean=True)
    assert fresh.session_present is False
    fresh.close()
    wait_for_record(broker.bootstrap, client_id, lambda record, present: present and record is None, "a tombstone")
    broker.restart(kill=True)
    again = Client(broker.mqtt_port, protocol, client_id, clean=False, session_expiry=3600)
    try:
        assert again.session_present is False
    finally:
        again.close()


def test_a_client_that_never_asks_for_a_session_writes_nothing(broker_factory):
    broker = broker_factory("--mqtt-allow-anonymous")
    client_id = unique("ephemeral")
    worker = Client(broker.mqtt_port, V5, client_id, clean=True)
    worker.subscribe((unique("ephemeral") + "/t", 1))
    worker.close()
    marker = unique("marker")
    # A persistent client after it, so the table is known to be written up to here.
    other = Client(broker.mqtt_port, V5, marker, clean=False, session_expiry=3600)
    other.close()
    wait_for_record(broker.bootstrap, marker, lambda record, _: bool(record and not record["connected"]), "the marker")
    assert f"anonymous/{client_id}" not in session_records(broker.bootstrap)


def test_a_session_expires_in_the_cluster_too(broker_factory):
    broker = broker_factory("--mqtt-allow-anonymous")
    topic = unique("expiring") + "/t"
    client_id = unique("brief")
    worker = Client(broker.mqtt_port, V5, client_id, clean=False, session_expiry=2)
    worker.subscribe((topic, 1))
    worker.close()
    record = wait_for_record(broker.bootstrap, client_id, detached_with(topic), "the detached session's record")
    assert record["expires_at_ms"] is not None
    # The gateway stops while the session waits to expire; the restarted one ends it on time.
    broker.restart(kill=True)
    wait_for_record(broker.bootstrap, client_id, lambda record, present: present and record is None, "the expiry's tombstone")
    again = Client(broker.mqtt_port, V5, client_id, clean=False, session_expiry=2)
    try:
        assert again.session_present is False
    finally:
        again.close()


@pytest.mark.parametrize("kill", [False, True], ids=["sigterm-while-connected", "sigkill-after-it-vanished"])
def test_a_delayed_will_survives_a_gateway_restart(broker_factory, kill):
    """A will with a Will Delay Interval is kept in the sessions topic while it waits, so the
    restarted gateway publishes it when it is due, once. With SIGTERM the client is still
    connected (the stopping gateway ends its connection, which starts the delay); with SIGKILL
    it vanished before."""
    broker = broker_factory("--mqtt-allow-anonymous")
    topic = unique("lastwill") + "/pump"
    watcher_id = unique("watcher")
    watcher = Client(broker.mqtt_port, V5, watcher_id, clean=False, session_expiry=3600)
    watcher.subscribe((topic, 1))
    watcher.close()
    wait_for_record(broker.bootstrap, watcher_id, detached_with(topic), "the watcher's session record")

    doomed_id = unique("doomed")
    doomed = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=doomed_id, protocol=V5)
    will_properties = Properties(PacketTypes.WILLMESSAGE)
    will_properties.WillDelayInterval = 3
    doomed.will_set(topic, b"pump-1 is gone", qos=1, properties=will_properties)
    connected = threading.Event()
    doomed.on_connect = lambda client, userdata, flags, reason_code, properties=None: connected.set()
    connect_properties = Properties(PacketTypes.CONNECT)
    connect_properties.SessionExpiryInterval = 300
    doomed.connect("127.0.0.1", broker.mqtt_port, keepalive=30, clean_start=True, properties=connect_properties)
    doomed.loop_start()
    assert connected.wait(MQTT_TIMEOUT_S), "no CONNACK"
    doomed.loop_stop()
    if kill:
        doomed.socket().close()
        wait_for_record(broker.bootstrap, doomed_id, lambda record, _: bool(record), "the waiting will", prefix="will/")
        broker.restart(kill=True)
    else:
        # The will's delay begins when the stopping gateway ends the connection; the restarted
        # one publishes it.
        broker.restart()
        doomed.socket().close()

    watcher = Client(broker.mqtt_port, V5, watcher_id, clean=False, session_expiry=3600)
    try:
        assert watcher.session_present is True
        assert watcher.wait_for(1) == [(topic, b"pump-1 is gone", 1, False)]
        assert len(watcher.quiet_for(1.0)) == 1, "published once"
    finally:
        watcher.close()
    wait_for_record(broker.bootstrap, doomed_id, lambda record, present: present and record is None,
                    "the published will's tombstone", prefix="will/")
