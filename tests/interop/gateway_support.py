"""Pieces the gateway tests share: devices through the `tidewater device` CLI, paho-mqtt clients
(3.1.1 and 5) with waits that have deadlines, hand-made MQTT packets for what paho will not send,
reading back what the gateway appended to the telemetry topic, commands to devices and their
delivery records, and subscriber programs (mosquitto_sub, MQTT.js) run in the background and
read line by line.

Device registry changes reach the gateway through the registry topic within about a second, so
every helper that depends on one (connect after `add`, refused after `disable`) retries until a
deadline rather than sleeping a fixed time.
"""

from __future__ import annotations

import json
import queue
import socket
import ssl
import struct
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Callable, Sequence

import confluent_support as ck
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.packettypes import PacketTypes

from trigger_support import tidewater

TELEMETRY_TOPIC = "telemetry"
# Where commands to devices are produced, and where the gateway records their delivery.
COMMANDS_TOPIC = "commands"
DELIVERIES_TOPIC = "_tidewater_command_deliveries"
# How long a registry change may take to reach the gateway, and an MQTT exchange to finish.
REGISTRY_TIMEOUT_S = 15.0
MQTT_TIMEOUT_S = 15.0

V311 = mqtt.MQTTv311
V5 = mqtt.MQTTv5
VERSIONS = {"3.1.1": V311, "5.0": V5}


def new_device_id(prefix: str = "dev") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def unique(prefix: str) -> str:
    """A name (topic level, client id) no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def add_device(bootstrap: str | None, device_id: str, client_config: Path | None = None) -> str:
    """Registers a device with `tidewater device add` and returns its key (printed once); see
    `tidewater` for `bootstrap` and `client_config`."""
    key = tidewater("device", "add", device_id, bootstrap=bootstrap, client_config=client_config).stdout.strip()
    assert len(key) == 44, f"expected a base64 key of 32 bytes, got {key!r}"
    return key


def device_token(bootstrap: str, device_id: str, key: str, *options: str) -> str:
    """A SAS token for `device_id` from `tidewater device token` (options: `--ttl 2s`,
    `--expires-at SECS`); it runs without a server, so `bootstrap` only fills the common flag."""
    token = tidewater("device", "token", device_id, "--key", key, *options, bootstrap=bootstrap).stdout.strip()
    assert token.startswith("SharedAccessSignature sr="), token
    return token


def events_topic(device_id: str) -> str:
    return f"devices/{device_id}/messages/events/"


class Device:
    """A paho client connected (or refused) as one device. `acked` lists, in order, the payloads
    whose PUBACK or PUBREC-then-PUBCOMP arrived with a success code; `refused` maps message ids
    to failure reason codes."""

    def __init__(
        self,
        port: int,
        client_id: str,
        key: str | None,
        protocol: int,
        will: tuple[str, bytes] | None = None,
        tls: ssl.SSLContext | None = None,
        transport: str = "tcp",
    ):
        self.protocol = protocol
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol, transport=transport)
        if tls is not None:
            self.client.tls_set_context(tls)
        if will is not None:
            self.client.will_set(will[0], will[1], qos=1)
        if key is not None:
            self.client.username_pw_set(client_id, key)
        self.connack: mqtt.ReasonCode | None = None
        self.connected = threading.Event()
        self.disconnected = threading.Event()
        self.lock = threading.Lock()
        # Message ids in the order their acknowledgements came.
        self.acked_mids: list[int] = []
        self.refused: dict[int, int] = {}
        self.payloads: dict[int, bytes] = {}
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish
        self.client.connect("127.0.0.1", port, keepalive=30)
        self.client.loop_start()
        assert self.connected.wait(MQTT_TIMEOUT_S), "no CONNACK"

    def _on_connect(self, client, userdata, flags, reason_code, properties=None):
        self.connack = reason_code
        self.connected.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties=None):
        self.disconnected.set()
        self.connected.set()

    def _on_publish(self, client, userdata, mid, reason_code, properties=None):
        with self.lock:
            if reason_code.is_failure:
                self.refused[mid] = reason_code.value
            else:
                self.acked_mids.append(mid)

    @property
    def accepted(self) -> bool:
        return self.connack is not None and not self.connack.is_failure and not self.disconnected.is_set()

    @property
    def acked(self) -> list[bytes]:
        """The payloads acknowledged, in the order their acknowledgements came."""
        with self.lock:
            return [self.payloads.get(mid, b"") for mid in self.acked_mids]

    def publish(self, topic: str, payload: bytes, qos: int, properties: Properties | None = None) -> mqtt.MQTTMessageInfo:
        # Not under our lock: paho may hold a lock of its own while it calls on_publish (which
        # takes ours), so publishing under ours can deadlock once acknowledgements come quickly.
        # The payload is recorded after; `acked` looks it up only when read.
        info = self.client.publish(topic, payload, qos=qos, properties=properties)
        with self.lock:
            self.payloads[info.mid] = payload
        return info

    def wait_acked(self, count: int, timeout_s: float = MQTT_TIMEOUT_S) -> list[bytes]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self.lock:
                done = len(self.acked_mids) + len(self.refused) >= count
            if done:
                return self.acked
            time.sleep(0.02)
        raise AssertionError(f"{len(self.acked_mids)} acked and {len(self.refused)} refused of {count} in {timeout_s}s")

    def close(self) -> None:
        if not self.disconnected.is_set():
            self.client.disconnect()
        self.client.loop_stop()


def connect_when_registered(
    port: int,
    device_id: str,
    key: str | None,
    protocol: int,
    will: tuple[str, bytes] | None = None,
    tls: ssl.SSLContext | None = None,
) -> Device:
    """Connects as `device_id` (over TLS with `tls`, which may carry the device's certificate),
    retrying while the gateway has not seen the registration yet."""
    deadline = time.monotonic() + REGISTRY_TIMEOUT_S
    while True:
        device = Device(port, device_id, key, protocol, will, tls=tls)
        if device.accepted:
            return device
        device.close()
        assert time.monotonic() < deadline, f"{device_id} still refused: {device.connack}"
        time.sleep(0.2)


def raw_connect(
    port: int,
    client_id: str,
    password: str | None,
    level: int = 4,
    tls: ssl.SSLContext | None = None,
    user: str | None = None,
) -> tuple[socket.socket, bytes]:
    """Sends a hand-made CONNECT (protocol level 4 = 3.1.1, 5 = 5.0), over TLS with `tls`, and
    returns the socket and the CONNACK bytes, so a test sees the exact return code on the wire.
    With a password the user name is `user`, or the client id (as devices send it)."""
    def string(value: bytes) -> bytes:
        return struct.pack(">H", len(value)) + value

    flags = 0x02  # clean session
    payload = string(client_id.encode())
    if password is not None:
        flags |= 0xC0
        payload += string((user or client_id).encode()) + string(password.encode())
    variable = string(b"MQTT") + bytes([level, flags]) + struct.pack(">H", 30)
    if level == 5:
        variable += b"\x00"  # no properties
    body = variable + payload
    sock = socket.create_connection(("127.0.0.1", port), timeout=MQTT_TIMEOUT_S)
    if tls is not None:
        sock = tls.wrap_socket(sock, server_hostname="127.0.0.1")
    sock.sendall(bytes([0x10]) + remaining_length(len(body)) + body)
    return sock, read_packet(sock)


def remaining_length(length: int) -> bytes:
    """MQTT's Variable Byte Integer: 7 bits a byte, least significant first (a SAS token makes a
    CONNECT longer than the one byte that fits 127)."""
    encoded = bytearray()
    while True:
        byte, length = length % 128, length // 128
        encoded.append(byte | (0x80 if length else 0))
        if not length:
            return bytes(encoded)


def read_packet(sock: socket.socket) -> bytes:
    """One whole packet (with a one-byte remaining length), or b"" once the server closed."""
    header = sock.recv(2)
    if len(header) < 2:
        return b""
    body = b""
    while len(body) < header[1]:
        chunk = sock.recv(header[1] - len(body))
        if not chunk:
            break
        body += chunk
    return header + body


def connack_code_311(port: int, client_id: str, password: str | None, tls: ssl.SSLContext | None = None) -> int:
    """The 3.1.1 CONNACK return code the gateway sends, retried until stable is the caller's job."""
    sock, connack = raw_connect(port, client_id, password, level=4, tls=tls)
    sock.close()
    assert connack[:2] == b"\x20\x02", f"not a 3.1.1 CONNACK: {connack!r}"
    return connack[3]


def connack_code_5(port: int, client_id: str, password: str | None, tls: ssl.SSLContext | None = None) -> int:
    sock, connack = raw_connect(port, client_id, password, level=5, tls=tls)
    sock.close()
    assert connack[:1] == b"\x20", f"not a CONNACK: {connack!r}"
    return connack[3]


def wait_for_code(probe, expected: int, what: str) -> None:
    """Retries `probe()` until it returns `expected` (a registry change is on its way)."""
    deadline = time.monotonic() + REGISTRY_TIMEOUT_S
    seen = None
    while time.monotonic() < deadline:
        seen = probe()
        if seen == expected:
            return
        time.sleep(0.2)
    raise AssertionError(f"{what}: expected code {expected:#x}, last saw {seen!r}")


def user_properties(*pairs: tuple[str, str]) -> Properties:
    properties = Properties(PacketTypes.PUBLISH)
    properties.UserProperty = list(pairs)
    return properties


def telemetry_of(bootstrap: str, device_id: str, at_least: int = 0, timeout_s: float = 30.0) -> list:
    """Every record of the telemetry topic whose key is `device_id`, in log order; waits until
    there are `at_least`."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            low, high = ck.watermarks(bootstrap, TELEMETRY_TOPIC, 0)
        except KafkaException:
            # Nothing was ever appended: the topic does not exist yet.
            low = high = 0
        messages = ck.consume(bootstrap, TELEMETRY_TOPIC, 0, low, high - low) if high > low else []
        mine = [message for message in messages if message.key() == device_id.encode()]
        if len(mine) >= at_least or time.monotonic() > deadline:
            return mine
        time.sleep(0.2)


def headers_of(message) -> dict[str, bytes]:
    return {name: value for name, value in (message.headers() or [])}


# Hand-made packets of any size, for the tests that send what no client library will
# (test_gateway_bad_input.py and the crash test's reading back).


def varint(value: int) -> bytes:
    """An MQTT Variable Byte Integer (spec 1.5.5), in the fewest bytes."""
    out = bytearray()
    while True:
        byte, value = value % 128, value // 128
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def mqtt_string(value: bytes) -> bytes:
    return struct.pack(">H", len(value)) + value


def packet(first_byte: int, body: bytes) -> bytes:
    """A whole packet: the fixed header's first byte, the Remaining Length, the body."""
    return bytes([first_byte]) + varint(len(body)) + body


def connect_packet(client_id: str, password: str | None, level: int, keep_alive_s: int = 30) -> bytes:
    """A clean-session CONNECT (level 4 = 3.1.1, 5 = 5.0) with user name = client id."""
    flags = 0x02
    payload = mqtt_string(client_id.encode())
    if password is not None:
        flags |= 0xC0
        payload += mqtt_string(client_id.encode()) + mqtt_string(password.encode())
    variable = mqtt_string(b"MQTT") + bytes([level, flags]) + struct.pack(">H", keep_alive_s)
    if level == 5:
        variable += b"\x00"  # no properties
    return packet(0x10, variable + payload)


def publish_packet(topic: bytes, payload: bytes, qos: int, packet_id: int, level: int) -> bytes:
    """A PUBLISH with no properties; `qos` goes into the flags as given (3 included)."""
    variable = mqtt_string(topic)
    if qos:
        variable += struct.pack(">H", packet_id)
    if level == 5:
        variable += b"\x00"
    return packet(0x30 | (qos << 1), variable + payload)


def publish_packet_of_size(topic: bytes, total_bytes: int, packet_id: int, level: int) -> tuple[bytes, bytes]:
    """A QoS 1 PUBLISH of exactly `total_bytes` bytes, fixed header included (what MQTT 5's
    Maximum Packet Size counts), and its payload."""
    payload_bytes = total_bytes - len(publish_packet(topic, b"", 1, packet_id, level))
    # The Remaining Length grows by a byte or two as the payload does.
    while len(publish_packet(topic, b"x" * payload_bytes, 1, packet_id, level)) > total_bytes:
        payload_bytes -= 1
    payload = b"x" * payload_bytes
    built = publish_packet(topic, payload, 1, packet_id, level)
    assert len(built) == total_bytes, f"cannot build a PUBLISH of exactly {total_bytes} bytes"
    return built, payload


def read_whole_packet(sock: socket.socket) -> bytes:
    """One whole packet of any size, or b"" once the server closed (a timeout fails)."""
    def read_exactly(n_bytes: int) -> bytes:
        data = b""
        while len(data) < n_bytes:
            chunk = sock.recv(n_bytes - len(data))
            if not chunk:
                return data
            data += chunk
        return data

    header = read_exactly(1)
    if not header:
        return b""
    remaining, shift = 0, 0
    for _ in range(4):
        byte = read_exactly(1)
        if not byte:
            return b""
        header += byte
        remaining |= (byte[0] & 0x7F) << shift
        shift += 7
        if byte[0] & 0x80 == 0:
            break
    return header + read_exactly(remaining)


def packets_until_closed(sock: socket.socket, max_packets: int = 10) -> list[bytes]:
    """Every packet the server sends until it closes the connection (at most `max_packets`, and
    each read within the socket's timeout: a connection left open fails the caller)."""
    packets = []
    for _ in range(max_packets):
        try:
            data = read_whole_packet(sock)
        except socket.timeout:
            raise AssertionError(f"the server kept the connection open; it sent {packets!r}") from None
        except ConnectionResetError:
            return packets
        if not data:
            return packets
        packets.append(data)
    raise AssertionError(f"more than {max_packets} packets and still open: {packets!r}")


def read_telemetry(bootstrap: str) -> list:
    """The whole telemetry topic (partition 0), in log order, for a broker of the test's own."""
    low, high = ck.watermarks(bootstrap, TELEMETRY_TOPIC, 0)
    return ck.consume(bootstrap, TELEMETRY_TOPIC, 0, low, high - low) if high > low else []


def wait_until_retained_messages_are_served(port: int) -> None:
    """Waits until a retained message an anonymous client just published reaches a new subscriber
    with the retain flag.

    A gateway opens its MQTT listener only once it has read the retained table to where it ended
    at start, so retained messages from before a restart are served at once. A retained message
    published since is in the table once the gateway reads it back from the pub/sub topic, a
    moment after its PUBACK; a subscriber arriving within that moment gets it as a live message
    (retain flag 0). Tests about clients, not about that moment, begin after this probe."""
    topic = unique("tidewater-probe") + "/retained"
    publisher = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=unique("probe"), protocol=V311)
    publisher.connect("127.0.0.1", port, keepalive=30)
    publisher.loop_start()
    try:
        info = publisher.publish(topic, b"probe", qos=1, retain=True)
        info.wait_for_publish(MQTT_TIMEOUT_S)
        assert info.is_published(), "the probe was not acknowledged"
        deadline = time.monotonic() + MQTT_TIMEOUT_S
        while True:
            received: queue.Queue[bool] = queue.Queue()
            subscriber = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=unique("probe"), protocol=V311)
            subscriber.on_message = lambda client, userdata, message: received.put(bool(message.retain))
            subscriber.on_connect = lambda client, userdata, flags, reason_code, properties=None: client.subscribe(topic, 1)
            subscriber.connect("127.0.0.1", port, keepalive=30)
            subscriber.loop_start()
            try:
                retained = received.get(timeout=max(0.0, min(1.0, deadline - time.monotonic())))
            except queue.Empty:
                retained = False
            finally:
                subscriber.disconnect()
                subscriber.loop_stop()
            if retained:
                break
            assert time.monotonic() < deadline, f"no retained message reached a subscriber within {MQTT_TIMEOUT_S}s"
        # Cleared, so that no later subscriber to `#` sees it.
        publisher.publish(topic, b"", qos=1, retain=True).wait_for_publish(MQTT_TIMEOUT_S)
    finally:
        publisher.disconnect()
        publisher.loop_stop()


# Commands to devices, produced as any application would, and the gateway's delivery records.


def produce_command(
    bootstrap: str, device_id: str, payload: bytes, headers: Sequence[tuple[str, bytes]] = (("kind", b"maintenance"),)
) -> None:
    """Produces one command for `device_id` (key = device id) and waits until it is appended."""
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    producer.produce(COMMANDS_TOPIC, key=device_id.encode(), value=payload, headers=list(headers))
    assert producer.flush(30) == 0


def command_deliveries(bootstrap: str, device_id: str, count: int, timeout_s: float = 30.0) -> list[dict]:
    """The delivery records of `device_id`'s commands, in log order; reads until there are `count`
    or `timeout_s` has passed, and returns what it found either way."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": unique("deliveries"), "enable.auto.commit": False})
    consumer.assign([TopicPartition(DELIVERIES_TOPIC, 0, 0)])
    found: list[dict] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(found) < count and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None or message.error():
                continue
            # Keyed per command: `{device}/{partition}/{offset}` (the device is in the value too).
            if message.key().startswith(f"{device_id}/".encode()):
                found.append(json.loads(message.value()))
    finally:
        consumer.close()
    return found


# Subscriber programs run in the background.

# How long a background client program may take to exit once killed, and to hand over the rest
# of its output once it exited.
PROGRAM_EXIT_TIMEOUT_S = 15.0


class BackgroundProgram:
    """A client program (mosquitto_sub, node mqttjs/subscribe.mjs) running while the test goes on:
    its stdout is read line by line as it comes, so the test can wait, with a deadline, for the
    line that says it subscribed before publishing, and for the messages after. Used as a context
    manager, which kills the program if it is still running.

    Its stdout must be line buffered when it is a pipe: node's is; C programs run through
    `stdbuf -oL` (see `line_buffered`)."""

    def __init__(self, command: Sequence[str], *, input_text: str | None = None, cwd: Path | None = None):
        self.command = list(command)
        self.process = subprocess.Popen(
            self.command,
            stdin=subprocess.PIPE if input_text is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=cwd,
        )
        self.lines: list[str] = []
        self.stderr_lines: list[str] = []
        self.changed = threading.Condition()
        self.readers = [
            threading.Thread(target=self._read, args=(self.process.stdout, self.lines), daemon=True),
            threading.Thread(target=self._read, args=(self.process.stderr, self.stderr_lines), daemon=True),
        ]
        for reader in self.readers:
            reader.start()
        if input_text is not None:
            assert self.process.stdin is not None
            self.process.stdin.write(input_text)
            self.process.stdin.close()

    def _read(self, stream, into: list[str]) -> None:
        for line in stream:
            with self.changed:
                into.append(line.rstrip("\n"))
                self.changed.notify_all()

    def describe(self) -> str:
        with self.changed:
            return (
                f"{' '.join(self.command)} (exit status {self.process.poll()})\n"
                f"stdout: {self.lines[-40:]}\nstderr: {self.stderr_lines[-40:]}"
            )

    def wait_for_line(self, matches: Callable[[str], bool], timeout_s: float = MQTT_TIMEOUT_S) -> str:
        """The first stdout line for which `matches` holds, once there is one."""
        deadline = time.monotonic() + timeout_s
        with self.changed:
            while True:
                found = next((line for line in self.lines if matches(line)), None)
                if found is not None:
                    return found
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self.changed.wait(min(remaining, 0.1))
        raise AssertionError(f"no such line within {timeout_s}s from {self.describe()}")

    def wait_for_lines(
        self, matches: Callable[[str], bool], count: int, timeout_s: float = MQTT_TIMEOUT_S
    ) -> list[str]:
        """The stdout lines for which `matches` holds, once there are `count` of them."""
        deadline = time.monotonic() + timeout_s
        with self.changed:
            while True:
                found = [line for line in self.lines if matches(line)]
                if len(found) >= count:
                    return found
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self.changed.wait(min(remaining, 0.1))
        raise AssertionError(f"{len(found)} of {count} lines within {timeout_s}s from {self.describe()}")

    def wait_exit(self, timeout_s: float = MQTT_TIMEOUT_S) -> int:
        """Waits for the program to end by itself (killing it, and failing, after `timeout_s`) and
        returns its exit status once all its output is read."""
        try:
            code = self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"still running after {timeout_s}s: {self.describe()}") from None
        for reader in self.readers:
            reader.join(PROGRAM_EXIT_TIMEOUT_S)
        return code

    def kill(self) -> None:
        """SIGKILL, as a client losing power: no DISCONNECT. Also how a program still running is
        ended: mosquitto_sub 2.0.11 disconnects from its SIGTERM handler, which can deadlock on
        a lock the interrupted code holds (it then hangs, and ignores further SIGTERMs)."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=PROGRAM_EXIT_TIMEOUT_S)

    def __enter__(self) -> "BackgroundProgram":
        return self

    def __exit__(self, *exc_info) -> None:
        self.kill()


def line_buffered(command: Sequence[str]) -> list[str]:
    """`command` run with its stdout line buffered (coreutils stdbuf), so that a C program writing
    to a pipe hands each line over as it prints it rather than when its buffer fills."""
    return ["stdbuf", "-oL", *command]
