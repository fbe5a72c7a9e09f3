"""Pieces the streaming SQL tests share: reading a job's output as a read_committed consumer
(with a deadline), and the seed scenario over MQTT, which test_query.py runs against the session
broker and test_security_seed.py against a broker whose only Kafka listener is SASL_SSL.

The seed scenario over MQTT: two registered devices publish temperature readings through the
gateway of `serve`, which appends them to the shared "telemetry" topic; a job registered with
`tidewater query create` (so `serve` runs it) averages each device's readings over a 30-second
window hopping by 10 seconds and writes an alert where the average passes 70. The hot device
warms by half a degree a second from 60, the cool one stays at 60: only the hot one alerts, first
for the window that ends at 40 s.

Every helper takes the cluster's address and, for a secured one, its client settings: the
properties file the `tidewater` CLI reads (`client_config`) and the same properties for
confluent-kafka (`**config`).
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from gateway_support import V5, Device, add_device, connect_when_registered, events_topic, new_device_id
from trigger_support import tidewater


def read_committed(
    bootstrap: str, topic: str, settle_s: float = 2.0, timeout_s: float = 60.0, **config: Any
) -> list[dict]:
    """Everything in partition 0 of `topic` a read_committed consumer sees, once nothing new has
    arrived for `settle_s`."""
    consumer = Consumer({
        "bootstrap.servers": bootstrap, "group.id": "unused", "enable.auto.commit": False,
        "isolation.level": "read_committed", **config,
    })
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        rows, quiet_since, deadline = [], time.monotonic(), time.monotonic() + timeout_s
        while time.monotonic() - quiet_since < settle_s and time.monotonic() < deadline:
            message = consumer.poll(0.2)
            if message is not None and message.error() is None:
                rows.append(json.loads(message.value()))
                quiet_since = time.monotonic()
        return rows
    finally:
        consumer.close()


def wait_for_rows(bootstrap: str, topic: str, count: int, timeout_s: float = 60.0, **config: Any) -> list[dict]:
    """The rows of `topic` (partition 0, read_committed) once there are at least `count`."""
    deadline = time.monotonic() + timeout_s
    rows: list[dict] = []
    while time.monotonic() < deadline:
        rows = read_committed(bootstrap, topic, settle_s=0.5, timeout_s=5, **config)
        if len(rows) >= count:
            return rows
    raise AssertionError(f"{len(rows)} rows in {topic}, waited for {count}")


@dataclass(frozen=True)
class MqttSeedScenario:
    """One run of the seed scenario over MQTT, with device ids, an alerts topic and a job name
    of its own."""

    hot: str
    cool: str
    alerts: str
    job: str

    @staticmethod
    def new() -> MqttSeedScenario:
        suffix = uuid.uuid4().hex[:8]
        return MqttSeedScenario(
            hot=new_device_id("hot"),
            cool=new_device_id("cool"),
            alerts=f"mqtt-alerts-{suffix}",
            job=f"mqtt-seed-{suffix}",
        )

    def query(self) -> str:
        # The gateway appends every device's events to the shared "telemetry" topic; this job
        # looks at its own two devices only.
        return f"""
            SELECT deviceId, System.Timestamp() AS windowEnd, AVG(temperature) AS avg_temp
            INTO [{self.alerts}]
            FROM telemetry TIMESTAMP BY ts
            WHERE deviceId = '{self.hot}' OR deviceId = '{self.cool}'
            GROUP BY deviceId, HoppingWindow(second, 30, 10)
            HAVING AVG(temperature) > 70
        """

    def connect_devices(
        self, mqtt_port: int, bootstrap: str | None, client_config: Path | None = None
    ) -> dict[str, Device]:
        """Registers both devices (`tidewater device add`) and connects each with its key, over
        MQTT 5."""
        devices: dict[str, Device] = {}
        try:
            for device_id in (self.hot, self.cool):
                key = add_device(bootstrap, device_id, client_config=client_config)
                devices[device_id] = connect_when_registered(mqtt_port, device_id, key, V5)
        except BaseException:
            close_devices(devices)
            raise
        return devices

    def create_job(self, directory: Path, bootstrap: str | None, client_config: Path | None = None) -> None:
        """Registers the job (`tidewater query create`), reading from now on."""
        query = directory / f"{self.job}.sql"
        query.write_text(self.query())
        start_ms = int(time.time() * 1000)
        # Two devices on two connections interleave in the topic in any order: a minute of
        # out-of-order tolerance puts their readings back in event-time order.
        tidewater("query", "create", self.job, "--file", str(query), "--from", f"@{start_ms}",
                  "--checkpoint-interval-ms", "200", "--out-of-order-ms", "60000",
                  bootstrap=bootstrap, client_config=client_config)

    def delete_job(self, bootstrap: str | None, client_config: Path | None = None) -> None:
        tidewater("query", "delete", self.job, bootstrap=bootstrap, client_config=client_config, check=False)

    def publish(self, devices: dict[str, Device]) -> None:
        """A reading every 2 s of event time for a minute from each device (QoS 1), and one far
        ahead that moves the watermark past the windows under test; waits for every PUBACK."""
        seconds = [*range(0, 60, 2), 200]
        for second in seconds:
            for device_id, device in devices.items():
                temperature = 60 + second / 2 if device_id == self.hot else 60
                stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(1_767_225_600 + second))
                payload = json.dumps({"deviceId": device_id, "temperature": temperature, "ts": stamp})
                device.publish(events_topic(device_id), payload.encode(), qos=1)
        for device in devices.values():
            device.wait_acked(len(seconds))

    def check(self, rows: list[dict]) -> None:
        """Only the hot device alerts, first for the window (10 s, 40 s]."""
        assert rows and {row["deviceId"] for row in rows} == {self.hot}, rows
        first = min(rows, key=lambda row: row["windowEnd"])
        # (10 s, 40 s]: readings at 12..40 s, 60 + s/2 on average 73.
        assert first["windowEnd"] == "2026-01-01T00:00:40.0000000Z", rows
        assert abs(first["avg_temp"] - 73.0) < 1e-9, rows


def close_devices(devices: dict[str, Device]) -> None:
    for device in devices.values():
        device.close()
