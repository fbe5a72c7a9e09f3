"""Reference data in streaming SQL jobs: Stream Analytics' per-device threshold alert.

A job joins a stream of readings with a table of thresholds read from a topic keyed by device id
(`--reference thresholds=topic:T`): the latest record per key is the device's threshold, a
tombstone deletes it. The thresholds are produced with confluent-kafka, also while the job runs,
and the alerts follow them; a job killed with SIGKILL and started again reads the table anew
before its first event. `query test` joins with a reference file and names bad input.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Producer

from conftest import tidewater_binary
from metrics_support import wait_for_scrape
from query_support import read_committed
from support import wait_until
from test_query import QueryJob
from trigger_support import tidewater

THRESHOLD_QUERY = """
SELECT r.deviceId, r.temperature, t.threshold, r.seq
INTO [{alerts}]
FROM [{readings}] r TIMESTAMP BY ts
JOIN thresholds t ON r.deviceId = t.deviceId
WHERE r.temperature > t.threshold
"""


def stamp(second: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(1_767_225_600 + second))


class Feed:
    """A producer of readings (increasing event time, numbered; each device's in one partition
    of `partitions`) and of threshold records (key = device id, at an explicit partition of the
    thresholds topic)."""

    def __init__(self, bootstrap: str, readings: str, thresholds: str, partitions: int = 1):
        self.producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
        self.readings, self.thresholds, self.seq, self.partitions = readings, thresholds, 0, partitions

    def reading(self, device: str, temperature: float) -> int:
        self.seq += 1
        value = {"deviceId": device, "temperature": temperature, "seq": self.seq, "ts": stamp(self.seq)}
        partition = sum(device.encode()) % self.partitions
        self.producer.produce(self.readings, key=device.encode(), value=json.dumps(value).encode(),
                              partition=partition)
        assert self.producer.flush(30) == 0
        return self.seq

    def threshold(self, device: str, threshold: float | None, partition: int) -> None:
        value = None if threshold is None else json.dumps({"deviceId": device, "threshold": threshold}).encode()
        self.raw_threshold(device.encode(), value, partition)

    def raw_threshold(self, key: bytes | None, value: bytes | None, partition: int) -> None:
        self.producer.produce(self.thresholds, key=key, value=value, partition=partition)
        assert self.producer.flush(30) == 0

    def wait_until_applied(self, bootstrap: str, alerts: str, probe: str, partition: int) -> None:
        """Writes a row for device `probe` (threshold far below any reading) after what was
        written to `partition` of the thresholds topic, then sends `probe` readings until one
        alerts: the job has then applied everything before the probe's row."""
        self.threshold(probe, -1000, partition)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            seq = self.reading(probe, 0)
            try:
                wait_for_alert(bootstrap, alerts, seq, timeout_s=3)
                return
            except AssertionError:
                continue
        raise AssertionError(f"the probe {probe} never joined")


def alerts_by_seq(bootstrap: str, alerts: str) -> dict[int, dict]:
    rows = read_committed(bootstrap, alerts, settle_s=1.0)
    by_seq = {row["seq"]: row for row in rows}
    assert len(by_seq) == len(rows), f"an alert was delivered twice: {rows}"
    return by_seq


def wait_for_alert(bootstrap: str, alerts: str, seq: int, timeout_s: float = 60.0) -> dict[int, dict]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        by_seq = alerts_by_seq(bootstrap, alerts)
        if seq in by_seq:
            return by_seq
    raise AssertionError(f"no alert for reading {seq} in {alerts}: {alerts_by_seq(bootstrap, alerts)}")


@pytest.mark.parametrize("parallel", [False, True], ids=["one-instance", "parallel"])
def test_alerts_follow_thresholds_updated_while_the_job_runs_and_across_a_restart(
    bootstrap, topic_name, tmp_path, parallel
):
    """One instance is killed with SIGKILL; a --parallel instance (two readings partitions, one
    engine job and one copy of the table each) is stopped and started."""
    readings, thresholds, alerts = f"{topic_name}-readings", f"{topic_name}-thresholds", f"{topic_name}-alerts"
    n_partitions = 2 if parallel else 1
    tidewater("topic", "create", readings, "--partitions", str(n_partitions), bootstrap=bootstrap)
    # A compacted table over two partitions: the job must read both to their ends first.
    tidewater("topic", "create", thresholds, "--partitions", "2", "--config", "cleanup.policy=compact",
              bootstrap=bootstrap)
    feed = Feed(bootstrap, readings, thresholds, n_partitions)
    feed.threshold("d1", 30, partition=0)
    feed.threshold("d2", 50, partition=1)
    feed.threshold("d3", 10, partition=1)
    feed.threshold("d3", None, partition=1)  # a tombstone: d3 has no threshold
    # Readings already waiting when the job starts are joined with the whole table.
    early = [feed.reading("d1", 25), feed.reading("d1", 35), feed.reading("d2", 45), feed.reading("d2", 55),
             feed.reading("d3", 99)]

    query = tmp_path / "thresholds.sql"
    query.write_text(THRESHOLD_QUERY.format(alerts=alerts, readings=readings))
    job = QueryJob(query, bootstrap, tmp_path / "job.log", "--name", f"reference-{uuid.uuid4().hex[:8]}",
                   "--reference", f"thresholds=topic:{thresholds}", *(["--parallel"] if parallel else []))
    job.start()
    try:
        by_seq = wait_for_alert(bootstrap, alerts, early[3])
        assert sorted(by_seq) == [early[1], early[3]], by_seq
        assert by_seq[early[1]]["threshold"] == 30 and by_seq[early[3]]["threshold"] == 50

        # While the job runs: d1's threshold goes up to 40. A probe device's row is written after
        # it in the same partition, so once the probe joins, the job has applied the update.
        feed.threshold("d1", 40, partition=0)
        feed.wait_until_applied(bootstrap, alerts, "probe", partition=0)
        below, above = feed.reading("d1", 38), feed.reading("d1", 45)
        by_seq = wait_for_alert(bootstrap, alerts, above)
        assert below not in by_seq, "a reading under the new threshold alerted with the old one"
        assert by_seq[above]["threshold"] == 40, by_seq[above]

        # Records that cannot be rows are skipped, and d2 keeps its threshold of 50. (A record
        # without a key cannot be written: the broker refuses it on a compacted topic.)
        feed.raw_threshold(b"d2", b"not json", partition=1)
        feed.raw_threshold(b"d2", b"[60]", partition=1)
        feed.wait_until_applied(bootstrap, alerts, "probe2", partition=1)
        kept_low, kept = feed.reading("d2", 45), feed.reading("d2", 51)
        by_seq = wait_for_alert(bootstrap, alerts, kept)
        assert kept_low not in by_seq and by_seq[kept]["threshold"] == 50, by_seq
        # Let a checkpoint cover everything read so far before the crash.
        time.sleep(1.5)
        if parallel:
            # A killed group member holds its partitions until its session times out: stop it.
            assert job.stop() == 0, (tmp_path / "job.log").read_text()
        else:
            job.kill()

        # While the job is down: d2's threshold changes and d1's row is deleted. The restarted job
        # reads the table again before its first event, so no probe is needed.
        feed.threshold("d2", 60, partition=1)
        feed.threshold("d1", None, partition=0)
        after = [feed.reading("d2", 55), feed.reading("d2", 65), feed.reading("d1", 99), feed.reading("d3", 99)]
        job.start()
        by_seq = wait_for_alert(bootstrap, alerts, after[1])
        time.sleep(1.5)
        by_seq = alerts_by_seq(bootstrap, alerts)
    finally:
        assert job.stop() == 0, (tmp_path / "job.log").read_text()
    devices_alerting = sorted(seq for seq, row in by_seq.items() if not row["deviceId"].startswith("probe"))
    assert devices_alerting == [early[1], early[3], above, kept, after[1]], by_seq
    assert by_seq[after[1]]["threshold"] == 60
    log = (tmp_path / "job.log").read_text()
    assert log.count("reference data loaded") == 2, log
    for reason in ["the value is not JSON", "must be a JSON object"]:
        assert reason in log, f"no warning saying {reason!r}:\n{log}"


def test_a_registered_job_that_fails_shows_why_in_describe_until_it_runs(bootstrap, topic_name, tmp_path):
    """A job `serve` runs fails at start (its reference topic is missing) and is restarted every
    few seconds: `query describe` and `query list` say so from the status `serve` publishes,
    with the broker's reason. Once the topic exists the job runs and alerts; the last error stays
    in describe, with its age, as the job's latest failure."""
    readings, thresholds, alerts = f"{topic_name}-readings", f"{topic_name}-thresholds", f"{topic_name}-alerts"
    tidewater("topic", "create", readings, "--partitions", "1", bootstrap=bootstrap)
    query = tmp_path / "thresholds.sql"
    query.write_text(THRESHOLD_QUERY.format(alerts=alerts, readings=readings))
    name = f"failing-{topic_name[-8:]}"
    tidewater("query", "create", name, "--file", str(query), "--checkpoint-interval-ms", "200",
              "--reference", f"thresholds=topic:{thresholds}", bootstrap=bootstrap)
    missing = f'reference topic "{thresholds}" does not exist'
    try:
        def described_with(*parts: str) -> str | None:
            described = tidewater("query", "describe", name, bootstrap=bootstrap).stdout
            return described if all(part in described for part in parts) else None

        described = wait_until(lambda: described_with("last error (", missing), timeout_s=60,
                               what=f"describe to show the job's failure:\n{missing}")
        assert "runner " in described, described
        listed = tidewater("query", "list", bootstrap=bootstrap).stdout
        line = next(line for line in listed.splitlines() if line.startswith(name + " "))
        assert line.split()[1] == "active" and " on 1" in line, listed

        tidewater("topic", "create", thresholds, "--partitions", "1", "--config", "cleanup.policy=compact",
                  bootstrap=bootstrap)
        feed = Feed(bootstrap, readings, thresholds)
        feed.threshold("d1", 30, partition=0)
        hot = feed.reading("d1", 35)
        assert wait_for_alert(bootstrap, alerts, hot)[hot]["threshold"] == 30
        described = wait_until(lambda: described_with(": running, 1 events read there"), timeout_s=60,
                               what="describe to show the job running")
        assert missing in described, "the latest failure is no longer shown:\n" + described
    finally:
        tidewater("query", "delete", name, bootstrap=bootstrap, check=False)


def run_query_test(tmp_path: Path, query: str, *extra: str) -> subprocess.CompletedProcess:
    path = tmp_path / "q.sql"
    path.write_text(query)
    return subprocess.run([str(tidewater_binary()), "query", "test", str(path), *extra],
                          capture_output=True, text=True, timeout=60)


QUERY_TEST_SQL = """
SELECT r.deviceId, r.temperature, t.threshold
INTO alerts
FROM readings r TIMESTAMP BY ts
LEFT JOIN thresholds t ON r.deviceId = t.deviceId
WHERE t.threshold IS NULL OR r.temperature > t.threshold
"""


def test_query_test_joins_a_reference_file_and_names_bad_input(tmp_path):
    (tmp_path / "thresholds.csv").write_text('deviceId,threshold\n"d1",30\nd2,50\n')
    events = [
        {"deviceId": "d1", "temperature": 31, "ts": stamp(1)},
        {"deviceId": "d2", "temperature": 40, "ts": stamp(2)},
        {"deviceId": "d9", "temperature": 1, "ts": stamp(3)},
        # A topic's record, as an input line: d2's threshold drops to 35 before the next reading.
        {"@reference": "thresholds", "@key": "d2", "deviceId": "d2", "threshold": 35},
        {"deviceId": "d2", "temperature": 40, "ts": stamp(4)},
    ]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(event) + "\n" for event in events))
    expected = [
        {"output": "alerts", "line": 1, "row": {"deviceId": "d1", "temperature": 31, "threshold": 30}},
        {"output": "alerts", "line": 3, "row": {"deviceId": "d9", "temperature": 1, "threshold": None}},
        {"output": "alerts", "line": 5, "row": {"deviceId": "d2", "temperature": 40, "threshold": 35}},
    ]
    (tmp_path / "expected.jsonl").write_text("".join(json.dumps(line) + "\n" for line in expected))
    inputs = ["--input", str(tmp_path / "in.jsonl")]
    ok = run_query_test(tmp_path, QUERY_TEST_SQL, *inputs, "--expect", str(tmp_path / "expected.jsonl"),
                        "--reference", f"thresholds=file:{tmp_path / 'thresholds.csv'}")
    assert ok.returncode == 0, ok.stderr
    assert "ok: 3 result line(s) match" in ok.stderr

    # The same rows as a JSON array file.
    (tmp_path / "thresholds.json").write_text('[{"deviceId": "d1", "threshold": 30}, {"deviceId": "d2", "threshold": 50}]')
    ok = run_query_test(tmp_path, QUERY_TEST_SQL, *inputs, "--expect", str(tmp_path / "expected.jsonl"),
                        "--reference", f"thresholds=file:{tmp_path / 'thresholds.json'}")
    assert ok.returncode == 0, ok.stderr

    def fails_with(message: str, *args: str, query: str = QUERY_TEST_SQL) -> None:
        result = run_query_test(tmp_path, query, *inputs, *args)
        assert result.returncode != 0 and message in result.stderr, result.stderr
        assert result.stdout == "", "nothing may be printed for a job that did not run"

    fails_with("missing.csv", "--reference", f"thresholds=file:{tmp_path / 'missing.csv'}")
    (tmp_path / "short.csv").write_text("deviceId,threshold\nd1,30\nd2\n")
    fails_with("line 3: 1 fields, the header names 2", "--reference", f"thresholds=file:{tmp_path / 'short.csv'}")
    (tmp_path / "bad.jsonl").write_text('{"deviceId": "d1", "threshold": 30}\n{"deviceId": \n')
    fails_with("line 2: not JSON", "--reference", f"thresholds=file:{tmp_path / 'bad.jsonl'}")
    fails_with("is not NAME=topic:TOPIC or NAME=file:PATH", "--reference", "thresholds")
    fails_with("reads reference data from files", "--reference", "thresholds=topic:thresholds")
    fails_with("needs ON to equate a column of each side", "--reference",
               f"thresholds=file:{tmp_path / 'thresholds.csv'}",
               query=QUERY_TEST_SQL.replace("r.deviceId = t.deviceId", "r.temperature > t.threshold"))
    # Without --reference, thresholds is a stream, and a JOIN of two streams needs a time bound.
    fails_with("a JOIN needs a time bound")


def test_a_registered_job_keeps_its_reference_inputs_and_runs_inside_serve(broker, bootstrap, topic_name, tmp_path):
    readings, thresholds, alerts = f"{topic_name}-readings", f"{topic_name}-thresholds", f"{topic_name}-alerts"
    tidewater("topic", "create", readings, "--partitions", "1", bootstrap=bootstrap)
    tidewater("topic", "create", thresholds, "--partitions", "1", "--config", "cleanup.policy=compact",
              bootstrap=bootstrap)
    feed = Feed(bootstrap, readings, thresholds)
    feed.threshold("d1", 30, partition=0)
    query = tmp_path / "thresholds.sql"
    query.write_text(THRESHOLD_QUERY.format(alerts=alerts, readings=readings))
    name = f"reference-{topic_name[-8:]}"
    reference = f"thresholds=topic:{thresholds}"
    tidewater("query", "create", name, "--file", str(query), "--checkpoint-interval-ms", "200",
              "--reference", reference, bootstrap=bootstrap)
    try:
        description = tidewater("query", "describe", name, bootstrap=bootstrap).stdout
        assert f'"topic": "{thresholds}"' in description, description
        quiet, hot = feed.reading("d1", 29), feed.reading("d1", 31)
        by_seq = wait_for_alert(bootstrap, alerts, hot)
        assert quiet not in by_seq and by_seq[hot]["threshold"] == 30, by_seq
        # The table's size and the records it skipped are on serve's /metrics.
        feed.raw_threshold(b"d2", b"{not json", partition=0)
        feed.threshold("d3", 40, partition=0)
        labels = {"job": name, "reference": "thresholds"}
        page = wait_for_scrape(broker.admin_port,
                               lambda page: page.value("tidewater_query_reference_rows", **labels) == 2,
                               "two rows in the reference table")
        assert page.get("tidewater_query_reference_refused_total", **labels) == 1
    finally:
        tidewater("query", "delete", name, bootstrap=bootstrap, check=False)

    def refused(message: str, *args: str) -> None:
        result = tidewater("query", "create", f"{name}-bad", "--file", str(query), *args,
                           bootstrap=bootstrap, check=False)
        assert result.returncode != 0 and message in result.stderr, result.stderr

    refused("missing.csv", "--reference", f"thresholds=file:{tmp_path / 'missing.csv'}")
    refused("declared twice", "--reference", reference, "--reference", f"Thresholds=file:{query}")
    listed = tidewater("query", "list", bootstrap=bootstrap).stdout
    assert f"{name}-bad" not in listed, listed


def test_a_job_whose_reference_topic_does_not_exist_fails_naming_it(bootstrap, topic_name, tmp_path):
    readings = f"{topic_name}-readings"
    tidewater("topic", "create", readings, "--partitions", "1", bootstrap=bootstrap)
    query = tmp_path / "thresholds.sql"
    query.write_text(THRESHOLD_QUERY.format(alerts=f"{topic_name}-alerts", readings=readings))
    missing = f"{topic_name}-no-such-thresholds"
    result = subprocess.run(
        [str(tidewater_binary()), "query", "run", str(query), "--brokers", bootstrap, "--admin-listen", "none",
         "--name", f"missing-{uuid.uuid4().hex[:8]}", "--reference", f"thresholds=topic:{missing}"],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )
    assert result.returncode != 0, result.stderr
    assert f'reference topic "{missing}" does not exist' in result.stderr, result.stderr
