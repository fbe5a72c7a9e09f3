"""Streaming SQL jobs (`tidewater query run`) against the real broker.

The seed scenario of the architecture: simulated devices publish temperature readings, a job
computes a 30-second hopping average per device and writes an alert when it exceeds 70, and the
alerts appear in the output topic. Then the exactly-once guarantee: a job killed with SIGKILL
mid-run and restarted produces, for read_committed consumers, exactly the rows of a clean run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition

from conftest import tidewater_binary
from query_support import MqttSeedScenario, close_devices, read_committed, wait_for_rows
from trigger_support import tidewater

SEED_QUERY = """
SELECT deviceId, System.Timestamp() AS windowEnd, AVG(temperature) AS avg_temp
INTO [{alerts}]
FROM [{telemetry}] TIMESTAMP BY ts
GROUP BY deviceId, HoppingWindow(second, 30, 10)
HAVING AVG(temperature) > 70
"""


def readings(seconds: range, devices: int) -> list[tuple[str, dict]]:
    """Device d0 stays at 60 degrees; the others heat up by one degree per second from 60."""
    events = []
    for second in seconds:
        for device in range(devices):
            temperature = 60 if device == 0 else 60 + second * (device / devices)
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(1_767_225_600 + second))
            events.append((f"d{device}", {"deviceId": f"d{device}", "temperature": temperature, "ts": stamp}))
    return events


def produce(bootstrap: str, topic: str, events: list[tuple[str, dict]]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    for key, value in events:
        producer.produce(topic, key=key.encode(), value=json.dumps(value).encode())
    assert producer.flush(30) == 0


class QueryJob:
    """`tidewater query run` as a child process."""

    def __init__(self, query: Path, bootstrap: str, log: Path, *extra: str, checkpoint_interval_ms: str = "200"):
        self.command = [str(tidewater_binary()), "query", "run", str(query), "--brokers", bootstrap,
                        "--checkpoint-interval-ms", checkpoint_interval_ms, *extra]
        self.log = log
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        env = {key: value for key, value in os.environ.items() if not key.startswith("TIDEWATER_")}
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(self.command, stdout=log, stderr=log, stdin=subprocess.DEVNULL, env=env)

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout=30)

    def stop(self) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=60)


def test_seed_scenario_alerts_on_a_hot_device_average(bootstrap, topic_name, tmp_path):
    telemetry, alerts = f"{topic_name}-telemetry", f"{topic_name}-alerts"
    tidewater("topic", "create", telemetry, "--partitions", "2", bootstrap=bootstrap)
    query = tmp_path / "seed.sql"
    query.write_text(SEED_QUERY.format(alerts=alerts, telemetry=telemetry))
    # Check the query locally first, as a user would: `query test` needs no server.
    local = subprocess.run([str(tidewater_binary()), "query", "test", str(query), "--input", "/dev/null"],
                           capture_output=True, text=True, timeout=60)
    assert local.returncode == 0, local.stderr

    produce(bootstrap, telemetry, readings(range(0, 60, 2), devices=2))
    job = QueryJob(query, bootstrap, tmp_path / "job.log")
    job.start()
    try:
        rows = wait_for_rows(bootstrap, alerts, 1)
    finally:
        assert job.stop() == 0, (tmp_path / "job.log").read_text()
    # d1 heats up by half a degree a second from 60: its 30 s average passes 70 once the window
    # ends after about 35 s. d0 stays at 60 and never alerts.
    assert rows and all(row["deviceId"] == "d1" for row in rows), rows
    assert all(row["avg_temp"] > 70 for row in rows)
    assert list(rows[0]) == ["deviceId", "windowEnd", "avg_temp"]
    first = rows[0]
    assert first["windowEnd"] == "2026-01-01T00:00:40.0000000Z", rows
    # (10 s, 40 s]: readings at 12, 14, ..., 40 s, i.e. 60 + s/2 averaged over s = 12..40 step 2.
    assert abs(first["avg_temp"] - (60 + sum(range(12, 41, 2)) / 15 / 2)) < 1e-9


def test_a_killed_job_resumes_exactly_once(bootstrap, topic_name, tmp_path):
    telemetry = f"{topic_name}-telemetry"
    tidewater("topic", "create", telemetry, "--partitions", "2", bootstrap=bootstrap)
    first_half, second_half = readings(range(0, 150), devices=4), readings(range(150, 300), devices=4)
    produce(bootstrap, telemetry, first_half)

    def job_for(name: str) -> tuple[Path, str]:
        alerts = f"{topic_name}-{name}"
        query = tmp_path / f"{name}.sql"
        query.write_text(SEED_QUERY.format(alerts=alerts, telemetry=telemetry))
        return query, alerts

    # The reference: a clean run over all the readings.
    clean_query, clean_alerts = job_for("clean")
    # The job under test: killed with SIGKILL twice, restarted each time.
    crashing_query, crashing_alerts = job_for("crashing")
    clean = QueryJob(clean_query, bootstrap, tmp_path / "clean.log")
    crashing = QueryJob(crashing_query, bootstrap, tmp_path / "crashing.log")
    clean.start()
    crashing.start()
    try:
        wait_for_rows(bootstrap, crashing_alerts, 5)
        crashing.kill()
        produce(bootstrap, telemetry, second_half)
        crashing.start()
        time.sleep(1.5)
        crashing.kill()
        crashing.start()
        # Both jobs have read everything once their outputs agree in size twice in a row (each
        # read waits until nothing new arrived for 2 s).
        agreed, deadline = 0, time.monotonic() + 90
        while agreed < 2 and time.monotonic() < deadline:
            expected = read_committed(bootstrap, clean_alerts)
            actual = read_committed(bootstrap, crashing_alerts)
            agreed = agreed + 1 if len(actual) == len(expected) > 20 else 0
    finally:
        assert clean.stop() == 0, (tmp_path / "clean.log").read_text()
        assert crashing.stop() == 0, (tmp_path / "crashing.log").read_text()
    expected = read_committed(bootstrap, clean_alerts)
    actual = read_committed(bootstrap, crashing_alerts)
    key = lambda row: (row["windowEnd"], row["deviceId"])  # noqa: E731
    assert len({key(row) for row in actual}) == len(actual), "a row was delivered twice"
    assert sorted(actual, key=key) == sorted(expected, key=key)
    assert len(expected) > 20, f"the scenario produced only {len(expected)} alerts"


COUNT_QUERY = """
SELECT COUNT(*) AS n, System.Timestamp() AS windowEnd
INTO [{counts}]
FROM [{events}] TIMESTAMP BY ts
GROUP BY TumblingWindow(second, 10)
"""


def at_second(second: int) -> tuple[str, dict]:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(1_767_225_600 + second))
    return "d0", {"deviceId": "d0", "ts": stamp}


def latest_checkpoint(bootstrap: str, job: str) -> dict | None:
    """The job's last committed checkpoint record, read from the checkpoint topic's start."""
    consumer = Consumer({
        "bootstrap.servers": bootstrap, "group.id": "unused", "enable.auto.commit": False,
        "isolation.level": "read_committed", "enable.partition.eof": True,
    })
    try:
        consumer.assign([TopicPartition("_tidewater_query_checkpoints", 0, 0)])
        latest, deadline = None, time.monotonic() + 30
        while time.monotonic() < deadline:
            message = consumer.poll(0.2)
            if message is None:
                continue
            if message.error() is not None:
                return latest
            if message.key() == job.encode():
                latest = json.loads(message.value())
        raise AssertionError("the checkpoint topic's end was not reached")
    finally:
        consumer.close()


def test_an_idle_job_restarts_from_its_checkpoint_after_every_retention_has_passed(broker_factory, topic_name, tmp_path):
    """Regression (issue 18): the checkpoint topic kept one day, and an idle job writes no
    checkpoints, so a job whose input was quiet for a day lost its only checkpoint; restarted, it
    began again from its start position: it wrote its output twice, or, once retention had taken
    its input too, lost the state of its open windows. The checkpoint topic is compacted now, so
    the latest checkpoint of each job stays however long it is idle.

    The day is shortened with topic configs: the input and the checkpoint topic get a retention of
    1 ms and segments that roll at the next tick, so the input's records are deleted and the
    checkpoint topic is cleaned (which under the old delete policy deleted the checkpoint). The
    job restarted then neither repeats the window it wrote nor forgets the one it had open."""
    broker = broker_factory()
    bootstrap = broker.bootstrap
    events, counts = f"{topic_name}-events", f"{topic_name}-counts"
    tidewater("topic", "create", events, bootstrap=bootstrap)
    query = tmp_path / "idle.sql"
    query.write_text(COUNT_QUERY.format(counts=counts, events=events))
    job = QueryJob(query, bootstrap, tmp_path / "idle.log")
    # Five events in (0 s, 10 s], three in (10 s, 20 s]: the first window closes, the second
    # stays open in the job's state.
    produce(bootstrap, events, [at_second(second) for second in [1, 2, 3, 4, 5, 11, 12, 13]])
    job.start()
    try:
        assert [row["n"] for row in wait_for_rows(bootstrap, counts, 1)] == [5]
        deadline = time.monotonic() + 30
        while (latest_checkpoint(bootstrap, "idle") or {}).get("counts", {}).get("events") != 8:
            assert time.monotonic() < deadline, "no checkpoint of all 8 events"
            time.sleep(0.2)
        # Idle from here on: nothing new to read, so no new checkpoint.
        time.sleep(1)
    finally:
        job.kill()

    mark = broker.log_mark()
    for topic in [events, "_tidewater_query_checkpoints"]:
        tidewater("topic", "alter", topic, "--config", "retention.ms=1", "--config", "segment.ms=100",
                  "--config", "min.cleanable.dirty.ratio=0.01", "--config", "delete.retention.ms=0", bootstrap=bootstrap)
    broker.wait_for_log("cleaned partition", "_tidewater_query_checkpoints-0", since=mark, timeout_s=60)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused"})
    try:
        deadline = time.monotonic() + 60
        while consumer.get_watermark_offsets(TopicPartition(events, 0), timeout=10, cached=False) != (8, 8):
            assert time.monotonic() < deadline, "retention did not delete the input"
            time.sleep(0.2)
    finally:
        consumer.close()
    assert (latest_checkpoint(bootstrap, "idle") or {}).get("counts", {}).get("events") == 8, "the checkpoint stayed"
    # The day is over: the input keeps its records again, or retention (1 ms, over records
    # stamped in January) could delete the next ones before the restarted job reads them.
    tidewater("topic", "alter", events, "--delete-config", "retention.ms", "--delete-config", "segment.ms",
              bootstrap=bootstrap)

    job.start()
    try:
        # Two more events in the open window, then one that closes it.
        produce(bootstrap, events, [at_second(second) for second in [14, 15, 25]])
        rows = wait_for_rows(bootstrap, counts, 2)
        time.sleep(2)
        rows = read_committed(bootstrap, counts)
    finally:
        assert job.stop() == 0, (tmp_path / "idle.log").read_text()
    assert rows == [
        {"n": 5, "windowEnd": "2026-01-01T00:00:10.0000000Z"},
        {"n": 5, "windowEnd": "2026-01-01T00:00:20.0000000Z"},
    ], rows


def test_a_registered_job_runs_inside_serve(bootstrap, topic_name, tmp_path):
    telemetry, alerts = f"{topic_name}-telemetry", f"{topic_name}-alerts"
    tidewater("topic", "create", telemetry, "--partitions", "2", bootstrap=bootstrap)
    query = tmp_path / "seed.sql"
    query.write_text(SEED_QUERY.format(alerts=alerts, telemetry=telemetry))
    name = f"seed-{topic_name[-8:]}"
    tidewater("query", "create", name, "--file", str(query), "--checkpoint-interval-ms", "200", bootstrap=bootstrap)
    try:
        produce(bootstrap, telemetry, readings(range(0, 60, 2), devices=2))
        rows = wait_for_rows(bootstrap, alerts, 1)
        assert rows[0]["windowEnd"] == "2026-01-01T00:00:40.0000000Z", rows
        listed = tidewater("query", "list", bootstrap=bootstrap).stdout
        line = next(line for line in listed.splitlines() if line.startswith(name + " "))
        assert line.split()[1] == "active" and int(line.split()[2]) == 60, listed

        tidewater("query", "stop", name, bootstrap=bootstrap)
        time.sleep(2)
        before = len(read_committed(bootstrap, alerts, settle_s=0.5))
        produce(bootstrap, telemetry, readings(range(60, 90, 2), devices=2))
        time.sleep(2)
        assert len(read_committed(bootstrap, alerts, settle_s=0.5)) == before, "a stopped job wrote rows"

        tidewater("query", "start", name, bootstrap=bootstrap)
        rows = wait_for_rows(bootstrap, alerts, before + 1)
        assert len({(row["windowEnd"], row["deviceId"]) for row in rows}) == len(rows), "a row was written twice"
        description = tidewater("query", "describe", name, bootstrap=bootstrap).stdout
        assert "last checkpoint:" in description and "events 90" in description, description
    finally:
        tidewater("query", "delete", name, bootstrap=bootstrap, check=False)

    bad = tmp_path / "bad.sql"
    bad.write_text("SELECT frob(x) INTO o FROM i\n")
    refused = tidewater("query", "create", "bad", "--file", str(bad), bootstrap=bootstrap, check=False)
    assert refused.returncode != 0 and "1:8: unknown function" in refused.stderr, refused.stderr


def test_a_job_started_on_partitions_that_hold_data_finds_none_of_it_late(bootstrap, topic_name, tmp_path):
    """Both partitions already hold a reading a second for 30 s and then one far ahead. However
    the job's first fetches interleave them, no partition's readings are late: a partition the
    job is assigned holds the watermark until it has been read from (or found empty)."""
    readings_topic, counts_topic = f"{topic_name}-in", f"{topic_name}-counts"
    tidewater("topic", "create", readings_topic, "--partitions", "2", bootstrap=bootstrap)
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    for partition in (0, 1):
        for second in [*range(1, 31), 1000]:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(1_767_225_600 + second))
            producer.produce(readings_topic, partition=partition, value=json.dumps({"ts": stamp}).encode())
    assert producer.flush(30) == 0
    query = tmp_path / "counts.sql"
    query.write_text(f"""
        SELECT COUNT(*) AS n, System.Timestamp() AS windowEnd
        INTO [{counts_topic}]
        FROM [{readings_topic}] TIMESTAMP BY ts
        GROUP BY TumblingWindow(second, 10)
    """)
    job = QueryJob(query, bootstrap, tmp_path / "job.log", "--late-policy", "drop")
    job.start()
    try:
        rows = wait_for_rows(bootstrap, counts_topic, 3)
    finally:
        assert job.stop() == 0, (tmp_path / "job.log").read_text()
    # Ten readings of each partition in each window; the window of the far reading stays open.
    assert rows == [
        {"n": 20, "windowEnd": f"2026-01-01T00:00:{second}.0000000Z"} for second in (10, 20, 30)
    ], rows


def test_a_job_can_start_from_a_timestamp(bootstrap, topic_name, tmp_path):
    telemetry, alerts = f"{topic_name}-telemetry", f"{topic_name}-alerts"
    tidewater("topic", "create", telemetry, "--partitions", "1", bootstrap=bootstrap)
    produce(bootstrap, telemetry, readings(range(0, 20), devices=2))
    time.sleep(1.1)
    start_ms = int(time.time() * 1000)
    produce(bootstrap, telemetry, readings(range(20, 30), devices=2))
    query = tmp_path / "seed.sql"
    query.write_text(SEED_QUERY.format(alerts=alerts, telemetry=telemetry))
    name = f"from-ts-{topic_name[-8:]}"
    tidewater("query", "create", name, "--file", str(query), "--from", f"@{start_ms}",
              "--checkpoint-interval-ms", "200", bootstrap=bootstrap)
    try:
        deadline, line = time.monotonic() + 60, ""
        while time.monotonic() < deadline:
            listed = tidewater("query", "list", bootstrap=bootstrap).stdout
            line = next((line for line in listed.splitlines() if line.startswith(name + " ")), "")
            if line and int(line.split()[2]) > 0:
                break
            time.sleep(0.3)
        # Only the 20 readings produced after the start time were read.
        time.sleep(1)
        listed = tidewater("query", "list", bootstrap=bootstrap).stdout
        line = next(line for line in listed.splitlines() if line.startswith(name + " "))
        assert int(line.split()[2]) == 20, listed
    finally:
        tidewater("query", "delete", name, bootstrap=bootstrap, check=False)


def test_seed_scenario_end_to_end_from_mqtt_devices(broker, bootstrap, tmp_path):
    """Devices publish readings over MQTT through the gateway; a registered job averages them per
    device and alerts above 70; the alert appears in the output topic (see query_support)."""
    assert broker.mqtt_port is not None, "the session broker logged no mqtt= address"
    scenario = MqttSeedScenario.new()
    devices = scenario.connect_devices(broker.mqtt_port, bootstrap)
    try:
        scenario.create_job(tmp_path, bootstrap)
        scenario.publish(devices)
        rows = wait_for_rows(bootstrap, scenario.alerts, 1)
    finally:
        close_devices(devices)
        scenario.delete_job(bootstrap)
    scenario.check(rows)


def test_parallel_instances_share_the_partitions_exactly_once(bootstrap, topic_name, tmp_path):
    """`query run --parallel`: two instances of one job split a 4-partition input (one engine job
    per partition), one is killed with SIGKILL and restarted, and read_committed consumers of
    the output see exactly the rows of a single clean instance."""
    telemetry = f"{topic_name}-telemetry"
    tidewater("topic", "create", telemetry, "--partitions", "4", bootstrap=bootstrap)
    first_half, second_half = readings(range(0, 120), devices=8), readings(range(120, 240), devices=8)
    produce(bootstrap, telemetry, first_half)

    def job(name: str, alerts: str, log: str) -> QueryJob:
        query = tmp_path / f"{name}.sql"
        query.write_text(SEED_QUERY.format(alerts=alerts, telemetry=telemetry))
        return QueryJob(query, bootstrap, tmp_path / log, "--parallel", "-X", "session.timeout.ms=6000")

    reference_alerts, shared_alerts = f"{topic_name}-reference", f"{topic_name}-shared"
    reference = job("reference", reference_alerts, "reference.log")
    first = job("shared", shared_alerts, "first.log")
    second = job("shared", shared_alerts, "second.log")
    for process in (reference, first, second):
        process.start()
    try:
        wait_for_rows(bootstrap, shared_alerts, 5)
        first.kill()
        produce(bootstrap, telemetry, second_half)
        time.sleep(1)
        first.start()
        agreed, deadline = 0, time.monotonic() + 120
        while agreed < 2 and time.monotonic() < deadline:
            expected = read_committed(bootstrap, reference_alerts)
            actual = read_committed(bootstrap, shared_alerts)
            agreed = agreed + 1 if len(actual) == len(expected) > 20 else 0
    finally:
        for process in (reference, first, second):
            assert process.stop() == 0, process.log.read_text()[-3000:]
    expected = read_committed(bootstrap, reference_alerts)
    actual = read_committed(bootstrap, shared_alerts)
    key = lambda row: (row["windowEnd"], row["deviceId"])  # noqa: E731
    assert len({key(row) for row in actual}) == len(actual), "a row was delivered twice"
    assert sorted(actual, key=key) == sorted(expected, key=key)
    assert len(expected) > 20
    for log in ("first.log", "second.log"):
        assert "partition assigned" in (tmp_path / log).read_text(), f"{log}: this instance never got a partition"
