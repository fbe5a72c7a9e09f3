"""kill -9 of `tidewater serve` while 100 devices publish at QoS 1 over MQTT (paho-mqtt, half
3.1.1 and half 5.0), then a restart on the same data directory and port: every message a device
saw a PUBACK for must be in the telemetry topic, in each device's order.

Each message is "<device id> <sequence number>". A device keeps at most `WINDOW` messages awaiting
their PUBACK. paho reconnects on its own and resends, in order, every QoS 1 message it holds no
PUBACK for, so a message the dead server had appended but not yet acknowledged is appended a
second time: those duplicates are allowed, and they are the only disorder allowed. Precisely, per
device, the log must read as at most one increasing run per connection the device made, every
number repeated must be one that had no PUBACK when its first connection died, and in the end
every message published must be acknowledged and in the log.

To keep paho itself from reordering, a device publishes nothing new after a reconnect until
paho's resends are all acknowledged (paho may send a fresh PUBLISH on a new socket before the
resends it does in its CONNACK handler).
"""

from __future__ import annotations

import concurrent.futures
import socket
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from gateway_support import (
    MQTT_TIMEOUT_S,
    REGISTRY_TIMEOUT_S,
    V311,
    V5,
    add_device,
    events_topic,
    headers_of,
    new_device_id,
    read_telemetry,
)

N_DEVICES = 100
# Publishing lasts at least this long (until every device has been acknowledged after the
# restart), the kill coming halfway through.
PUBLISH_S = 10.0
# Messages a device may have awaiting their PUBACK (below paho's max_inflight of 20, so paho
# never holds one back in its queue, where its resend logic differs).
WINDOW = 8
# How long, after publishing stops, every message may take to be acknowledged.
DRAIN_TIMEOUT_S = 60.0


class CrashDevice:
    """One paho client and what it published and saw acknowledged, by sequence number."""

    def __init__(self, port: int, device_id: str, key: str, protocol: int):
        self.device_id = device_id
        self.lock = threading.Lock()
        self.next_seq = 0
        self.outstanding: dict[int, int] = {}  # mid -> sequence number awaiting its PUBACK
        self.early: dict[int, mqtt.ReasonCode] = {}  # PUBACKs seen before publish() returned
        self.acked: list[int] = []
        self.refused: list[tuple[int, int]] = []
        self.n_connects = 0
        self.connected = False
        # After a reconnect, nothing new until paho's resends are acknowledged.
        self.resending = False
        # The sequence numbers acknowledged on the first connection, taken when it died.
        self.acked_on_first_connection: set[int] | None = None
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=device_id, protocol=protocol)
        self.client.username_pw_set(device_id, key)
        self.client.reconnect_delay_set(min_delay=1, max_delay=2)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish
        self.port = port

    def start(self) -> None:
        self.client.connect("127.0.0.1", self.port, keepalive=30)
        self.client.loop_start()

    def _on_connect(self, client, userdata, flags, reason_code, properties=None):
        if reason_code.is_failure:
            return  # The gateway is still reading its registry (Server unavailable); paho retries.
        with self.lock:
            self.n_connects += 1
            self.connected = True

    def _on_disconnect(self, client, userdata, flags, reason_code, properties=None):
        with self.lock:
            if self.connected:
                self.resending = True
            self.connected = False
            if self.acked_on_first_connection is None and self.n_connects == 1:
                self.acked_on_first_connection = set(self.acked)

    def _on_publish(self, client, userdata, mid, reason_code, properties=None):
        with self.lock:
            if mid not in self.outstanding:
                # Acknowledged before `publish_next` could note the mid.
                self.early[mid] = reason_code
                return
            self._record(self.outstanding.pop(mid), reason_code)

    def _record(self, seq: int, reason_code) -> None:
        if reason_code.is_failure:
            self.refused.append((seq, reason_code.value))
        else:
            self.acked.append(seq)

    def publish_next(self) -> bool:
        """Publishes the next message if the window and the connection allow; True if it did.
        Only the publisher thread calls it."""
        with self.lock:
            if not self.connected or len(self.outstanding) >= WINDOW:
                return False
            if self.resending:
                if self.outstanding:
                    return False
                self.resending = False
            seq = self.next_seq
            self.next_seq += 1
        # Not under our lock: paho calls on_publish (which takes it) holding a lock of its own
        # that publish() needs too.
        info = self.client.publish(events_topic(self.device_id), f"{self.device_id} {seq}".encode(), qos=1)
        with self.lock:
            if info.mid in self.early:
                self._record(seq, self.early.pop(info.mid))
            else:
                self.outstanding[info.mid] = seq
        return True

    def acked_since_restart(self) -> bool:
        """Whether a later connection than the first had a message acknowledged."""
        with self.lock:
            first = self.acked_on_first_connection
            return first is not None and self.n_connects >= 2 and len(self.acked) > len(first)

    def is_connected(self) -> bool:
        with self.lock:
            return self.connected

    def is_drained(self) -> bool:
        with self.lock:
            return not self.outstanding

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def increasing_runs(numbers: list[int]) -> int:
    """How many strictly increasing runs `numbers` splits into."""
    return sum(1 for index, number in enumerate(numbers) if index == 0 or number <= numbers[index - 1])


def wait_until(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"{what} within {timeout_s}s"
        time.sleep(0.05)


def test_every_acknowledged_message_survives_kill_9_with_100_devices(broker_factory):
    # `restart` binds the same Kafka port again; the MQTT port is chosen here so that it is the
    # same after the restart too, where the devices reconnect.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        mqtt_port = probe.getsockname()[1]
    broker = broker_factory("--mqtt-listen", f"127.0.0.1:{mqtt_port}")
    bootstrap = broker.bootstrap
    device_ids = [new_device_id(f"crash{index:03}") for index in range(N_DEVICES)]
    with concurrent.futures.ThreadPoolExecutor(max_workers=25) as pool:
        keys = list(pool.map(lambda device_id: add_device(bootstrap, device_id), device_ids))
    devices = [
        CrashDevice(mqtt_port, device_id, key, V311 if index % 2 else V5)
        for index, (device_id, key) in enumerate(zip(device_ids, keys))
    ]
    try:
        for device in devices:
            device.start()
        # paho retries while the registry has not reached the gateway yet.
        wait_until(lambda: all(device.is_connected() for device in devices), REGISTRY_TIMEOUT_S, "every device connected")

        stop_publishing = threading.Event()

        def publish_until_stopped() -> None:
            while not stop_publishing.is_set():
                if not any([device.publish_next() for device in devices]):
                    time.sleep(0.002)

        publisher = threading.Thread(target=publish_until_stopped, name="crash-publisher")
        started = time.monotonic()
        publisher.start()
        try:
            time.sleep(PUBLISH_S / 2)
            # SIGKILL: no shutdown, no final flush. Then the same data directory and ports.
            broker.restart(kill=True)
            time.sleep(max(0.0, PUBLISH_S - (time.monotonic() - started)))
            # On a slow machine the restart may take most of that: go on until every device has
            # had something acknowledged by the new process.
            wait_until(
                lambda: all(device.acked_since_restart() for device in devices),
                REGISTRY_TIMEOUT_S + DRAIN_TIMEOUT_S,
                "every device acknowledged after the restart",
            )
        finally:
            stop_publishing.set()
            publisher.join(timeout=MQTT_TIMEOUT_S)
        assert not publisher.is_alive(), "the publisher did not stop"
        wait_until(lambda: all(device.is_drained() for device in devices), DRAIN_TIMEOUT_S, "every message acknowledged")
    finally:
        for device in devices:
            device.stop()

    records = read_telemetry(broker.bootstrap)
    stored: dict[str, list[int]] = {device_id: [] for device_id in device_ids}
    for record in records:
        device_id = record.key().decode()
        name, seq = record.value().decode().split()
        assert name == device_id and headers_of(record)["device-id"] == device_id.encode(), record.value()
        stored[device_id].append(int(seq))

    n_duplicates = 0
    for device in devices:
        numbers = stored[device.device_id]
        assert not device.refused, f"{device.device_id}: PUBACKs with failure codes {device.refused[:5]}"
        assert device.n_connects >= 2, f"{device.device_id} never reconnected after the restart"
        assert device.acked_on_first_connection is not None
        # Every message acknowledged (in the end, all that were published) is in the log...
        assert sorted(device.acked) == list(range(device.next_seq)), f"{device.device_id}: not all acknowledged"
        missing = set(device.acked) - set(numbers)
        assert not missing, f"{device.device_id}: {len(missing)} acknowledged messages lost, e.g. {sorted(missing)[:5]}"
        # ...in order, but for resends after a reconnect...
        runs = increasing_runs(numbers)
        assert runs <= device.n_connects, (
            f"{device.device_id}: {runs} increasing runs over {device.n_connects} connections: {numbers}"
        )
        first_seen = list(dict.fromkeys(numbers))
        assert first_seen == sorted(first_seen), f"{device.device_id}: out of order: {numbers}"
        # ...and only messages that had no PUBACK when the server died come twice.
        repeated = [seq for seq in set(numbers) if numbers.count(seq) > 1]
        assert all(numbers.count(seq) <= device.n_connects for seq in repeated), f"{device.device_id}: {numbers}"
        wrongly_repeated = set(repeated) & device.acked_on_first_connection
        assert not wrongly_repeated, f"{device.device_id}: acknowledged messages appended twice: {sorted(wrongly_repeated)}"
        n_duplicates += len(repeated)
    n_acked = sum(len(device.acked) for device in devices)
    print(f"{n_acked} messages acknowledged, {len(records)} records, {n_duplicates} duplicates of resent messages")
