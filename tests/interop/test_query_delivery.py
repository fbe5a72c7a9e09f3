"""`--delivery at-least-once`: a streaming SQL job whose rows are readable as soon as they are
produced, and which loses none across a crash (duplicates allowed).

The job is the simple threshold alert (`WHERE temperature > 30`), every event numbered by `seq`,
read back with confluent-kafka as a read_committed consumer. With a checkpoint interval of an
hour an exactly-once job would show nothing while it runs; an at-least-once one shows every row.
A job killed with SIGKILL mid-stream and restarted writes every expected row at least once, also
as two `--parallel` instances sharing the partitions. And a row the broker refuses (larger than the output topic's max.message.bytes) fails the job, in
either mode, with the broker's own error and no checkpoint past the refused row.
"""

from __future__ import annotations

import json
import threading
import time
import uuid

import pytest
from confluent_kafka import Producer

from query_support import read_committed, wait_for_rows
from test_query import QueryJob, latest_checkpoint
from trigger_support import tidewater

ALERT_QUERY = """
SELECT deviceId, temperature, seq
INTO [{alerts}]
FROM [{readings}]
WHERE temperature > 30
"""

AN_HOUR_MS = "3600000"


def reading(seq: int) -> tuple[str, dict]:
    """Every other reading is hot (31 degrees) and alerts; the others (20) do not."""
    device = f"d{seq % 4}"
    return device, {"deviceId": device, "temperature": 31 if seq % 2 == 0 else 20, "seq": seq}


def produce(bootstrap: str, topic: str, events: list[tuple[str, dict]]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5})
    for key, value in events:
        producer.produce(topic, key=key.encode(), value=json.dumps(value).encode())
        producer.poll(0)
    assert producer.flush(30) == 0


def hot_seqs(seqs: range) -> set[int]:
    return {seq for seq in seqs if seq % 2 == 0}


def wait_for_seqs(bootstrap: str, topic: str, expected: set[int], timeout_s: float = 120.0) -> None:
    """Until `topic` holds a row of every seq in `expected`, or the time is up (the caller then
    reports what is missing)."""
    seen: set[int] = set()
    deadline = time.monotonic() + timeout_s
    while not expected <= seen and time.monotonic() < deadline:
        seen = {row["seq"] for row in read_committed(bootstrap, topic, settle_s=1.0)}


def test_at_least_once_rows_are_readable_while_the_job_runs_without_a_checkpoint(bootstrap, topic_name, tmp_path):
    """With an hour between checkpoints, no transaction would commit while the test runs: the
    rows a read_committed consumer reads were produced outside any transaction."""
    readings, alerts = f"{topic_name}-readings", f"{topic_name}-alerts"
    tidewater("topic", "create", readings, "--partitions", "2", bootstrap=bootstrap)
    name = f"alo-{uuid.uuid4().hex[:8]}"
    query = tmp_path / f"{name}.sql"
    query.write_text(ALERT_QUERY.format(alerts=alerts, readings=readings))
    produce(bootstrap, readings, [reading(seq) for seq in range(200)])
    job = QueryJob(query, bootstrap, tmp_path / "job.log", "--delivery", "at-least-once",
                   checkpoint_interval_ms=AN_HOUR_MS)
    job.start()
    try:
        rows = wait_for_rows(bootstrap, alerts, 100)
        assert job.process is not None and job.process.poll() is None, "the job ended"
        # Nothing was checkpointed yet: the rows did not wait for one.
        assert latest_checkpoint(bootstrap, name) is None
    finally:
        assert job.stop() == 0, (tmp_path / "job.log").read_text()
    assert sorted(row["seq"] for row in rows) == sorted(hot_seqs(range(200))), rows
    # Stopping writes the checkpoint, once every row is acknowledged.
    checkpoint = latest_checkpoint(bootstrap, name)
    assert checkpoint is not None and checkpoint["counts"]["events"] == 200, checkpoint


def test_a_registered_at_least_once_job_runs_inside_serve(bootstrap, topic_name, tmp_path):
    readings, alerts = f"{topic_name}-readings", f"{topic_name}-alerts"
    tidewater("topic", "create", readings, "--partitions", "2", bootstrap=bootstrap)
    query = tmp_path / "alerts.sql"
    query.write_text(ALERT_QUERY.format(alerts=alerts, readings=readings))
    name = f"alo-serve-{uuid.uuid4().hex[:8]}"
    tidewater("query", "create", name, "--file", str(query), "--delivery", "at-least-once",
              "--checkpoint-interval-ms", AN_HOUR_MS, bootstrap=bootstrap)
    try:
        description = tidewater("query", "describe", name, bootstrap=bootstrap).stdout
        assert "delivery:         at-least-once" in description, description
        assert '"delivery": "at-least-once"' in description, description
        produce(bootstrap, readings, [reading(seq) for seq in range(40)])
        rows = wait_for_rows(bootstrap, alerts, 20)
        assert sorted(row["seq"] for row in rows) == sorted(hot_seqs(range(40))), rows
    finally:
        tidewater("query", "delete", name, bootstrap=bootstrap, check=False)
    # The same job scaled out: --parallel goes with at-least-once (it was refused before issue
    # 20), and serve runs it, rows before any checkpoint.
    parallel_alerts = f"{topic_name}-parallel-alerts"
    query.write_text(ALERT_QUERY.format(alerts=parallel_alerts, readings=readings))
    tidewater("query", "create", f"{name}-parallel", "--file", str(query), "--delivery", "at-least-once",
              "--parallel", "--checkpoint-interval-ms", AN_HOUR_MS, bootstrap=bootstrap)
    try:
        description = tidewater("query", "describe", f"{name}-parallel", bootstrap=bootstrap).stdout
        assert '"parallel": true' in description and "at-least-once" in description, description
        rows = wait_for_rows(bootstrap, parallel_alerts, 20)
        assert sorted(row["seq"] for row in rows) == sorted(hot_seqs(range(40))), rows
    finally:
        tidewater("query", "delete", f"{name}-parallel", bootstrap=bootstrap, check=False)


def test_an_at_least_once_job_killed_mid_stream_loses_no_row(bootstrap, topic_name, tmp_path):
    """SIGKILL twice while readings keep arriving; after the restarts every hot reading's row is
    in the output at least once (rows since the last checkpoint may be there twice)."""
    readings, alerts = f"{topic_name}-readings", f"{topic_name}-alerts"
    tidewater("topic", "create", readings, "--partitions", "2", bootstrap=bootstrap)
    query = tmp_path / f"alo-crash-{uuid.uuid4().hex[:8]}.sql"
    query.write_text(ALERT_QUERY.format(alerts=alerts, readings=readings))
    total = 6000
    produce(bootstrap, readings, [reading(seq) for seq in range(2000)])
    job = QueryJob(query, bootstrap, tmp_path / "job.log", "--delivery", "at-least-once")

    def feed() -> None:
        # The rest arrives in slices while the job is killed and restarted.
        for start in range(2000, total, 250):
            produce(bootstrap, readings, [reading(seq) for seq in range(start, start + 250)])
            time.sleep(0.1)

    feeder = threading.Thread(target=feed)
    job.start()
    try:
        wait_for_rows(bootstrap, alerts, 50)
        feeder.start()
        job.kill()
        job.start()
        wait_for_rows(bootstrap, alerts, 1200)
        job.kill()
        job.start()
        feeder.join(timeout=120)
        assert not feeder.is_alive(), "the feeder did not finish"
        wait_for_seqs(bootstrap, alerts, hot_seqs(range(total)))
    finally:
        assert job.stop() == 0, (tmp_path / "job.log").read_text()[-3000:]
    rows = read_committed(bootstrap, alerts)
    missing = sorted(hot_seqs(range(total)) - {row["seq"] for row in rows})
    assert not missing, f"{len(missing)} rows lost, first {missing[:10]}"
    assert all(row["temperature"] > 30 for row in rows)


def parallel_job(query, bootstrap: str, log, **kwargs) -> QueryJob:
    """One instance of a `--parallel` at-least-once job; a session timeout short enough that
    the survivor takes a killed instance's partitions over within the test."""
    return QueryJob(query, bootstrap, log, "--parallel", "--delivery", "at-least-once",
                    "-X", "session.timeout.ms=6000", **kwargs)


def wait_for_assignment(*jobs: QueryJob, timeout_s: float = 60.0) -> None:
    """Until every instance's log says it was assigned a partition (the group has settled)."""
    deadline = time.monotonic() + timeout_s
    while not all("partition assigned" in job.log.read_text() for job in jobs):
        assert time.monotonic() < deadline, "an instance got no partition: " + " | ".join(
            job.log.read_text()[-1500:] for job in jobs)
        assert all(job.process is not None and job.process.poll() is None for job in jobs), "an instance ended"
        time.sleep(0.2)


def partition_checkpoints(bootstrap: str, name: str, partitions: int) -> dict[int, dict]:
    """The latest checkpoint of each partition number of parallel job `name` that has one."""
    found = {partition: latest_checkpoint(bootstrap, f"{name}#{partition}") for partition in range(partitions)}
    return {partition: record for partition, record in found.items() if record is not None}


def test_parallel_at_least_once_rows_are_readable_before_any_checkpoint(bootstrap, topic_name, tmp_path):
    """Two `--parallel` instances share a 4-partition input with an hour between checkpoints: a
    read_committed consumer reads every row while no partition has a checkpoint, so no row waited
    for one. Stopped, the instances checkpoint every partition they read."""
    readings, alerts = f"{topic_name}-readings", f"{topic_name}-alerts"
    tidewater("topic", "create", readings, "--partitions", "4", bootstrap=bootstrap)
    name = f"alo-par-{uuid.uuid4().hex[:8]}"
    query = tmp_path / f"{name}.sql"
    query.write_text(ALERT_QUERY.format(alerts=alerts, readings=readings))
    first = parallel_job(query, bootstrap, tmp_path / "first.log", checkpoint_interval_ms=AN_HOUR_MS)
    second = parallel_job(query, bootstrap, tmp_path / "second.log", checkpoint_interval_ms=AN_HOUR_MS)
    first.start()
    second.start()
    try:
        # Readings only once both hold partitions: a rebalance after them would checkpoint the
        # revoked partitions (as it must) and there would be a checkpoint to find.
        wait_for_assignment(first, second)
        produce(bootstrap, readings, [reading(seq) for seq in range(200)])
        rows = wait_for_rows(bootstrap, alerts, 100)
        assert partition_checkpoints(bootstrap, name, 4) == {}, "a checkpoint was written while the job ran"
        for job in (first, second):
            assert job.process is not None and job.process.poll() is None, job.log.read_text()[-3000:]
    finally:
        for job in (first, second):
            assert job.stop() == 0, job.log.read_text()[-3000:]
    assert sorted({row["seq"] for row in rows}) == sorted(hot_seqs(range(200))), rows
    checkpoints = partition_checkpoints(bootstrap, name, 4)
    assert sum(record["counts"]["events"] for record in checkpoints.values()) == 200, checkpoints


def test_a_parallel_at_least_once_job_killed_mid_stream_loses_no_row(bootstrap, topic_name, tmp_path):
    """Two `--parallel` at-least-once instances over 4 partitions (a checkpoint every 3 s) while
    readings keep arriving: each is killed with SIGKILL while it reads and restarted, the second
    once the group has settled after the first kill and the first's partitions were restored from
    their checkpoints. Every hot reading's row is in the output at least once; duplicates (the
    rows since a killed instance's last checkpoint) are allowed, and counted."""
    readings, alerts = f"{topic_name}-readings", f"{topic_name}-alerts"
    tidewater("topic", "create", readings, "--partitions", "4", bootstrap=bootstrap)
    query = tmp_path / f"alo-par-crash-{uuid.uuid4().hex[:8]}.sql"
    query.write_text(ALERT_QUERY.format(alerts=alerts, readings=readings))
    total = 10_000
    produce(bootstrap, readings, [reading(seq) for seq in range(1000)])
    first = parallel_job(query, bootstrap, tmp_path / "first.log", checkpoint_interval_ms="3000")
    second = parallel_job(query, bootstrap, tmp_path / "second.log", checkpoint_interval_ms="3000")

    def feed() -> None:
        # A steady trickle (not bursts the jobs finish and checkpoint between), so a kill finds
        # rows written since the last checkpoint.
        producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5})
        for start in range(1000, total, 30):
            for seq in range(start, start + 30):
                key, value = reading(seq)
                producer.produce(readings, key=key.encode(), value=json.dumps(value).encode())
            producer.poll(0)
            time.sleep(0.05)
        assert producer.flush(30) == 0

    def restarted(job: QueryJob) -> None:
        """Kills `job` and starts it again, then waits until it is assigned partitions anew
        (the group has settled, the killed instance's partitions restored)."""
        assigned = job.log.read_text().count("partition assigned")
        job.kill()
        job.start()
        deadline = time.monotonic() + 90
        while job.log.read_text().count("partition assigned") <= assigned:
            assert time.monotonic() < deadline, job.log.read_text()[-3000:]
            time.sleep(0.2)

    feeder = threading.Thread(target=feed)
    first.start()
    second.start()
    try:
        wait_for_assignment(first, second)
        feeder.start()
        wait_for_rows(bootstrap, alerts, 700)
        restarted(first)
        wait_for_rows(bootstrap, alerts, 2500)
        restarted(second)
        feeder.join(timeout=120)
        assert not feeder.is_alive(), "the feeder did not finish"
        wait_for_seqs(bootstrap, alerts, hot_seqs(range(total)))
    finally:
        for job in (first, second):
            assert job.stop() == 0, job.log.read_text()[-3000:]
    rows = read_committed(bootstrap, alerts)
    seqs = [row["seq"] for row in rows]
    missing = sorted(hot_seqs(range(total)) - set(seqs))
    assert not missing, f"{len(missing)} rows lost, first {missing[:10]}"
    assert set(seqs) == hot_seqs(range(total)), "a row no reading explains"
    print(f"{len(seqs)} rows for {len(set(seqs))} hot readings: {len(seqs) - len(set(seqs))} duplicates")


@pytest.mark.parametrize("delivery", ["at-least-once", "exactly-once"])
def test_a_row_the_broker_refuses_fails_the_job_with_the_brokers_error(bootstrap, topic_name, tmp_path, delivery):
    """The output topic takes batches of at most 4 KiB; one reading carries a 10 KiB note. The
    job ends with the broker's reason in its log, and its last checkpoint stops before that
    reading, so a restart would try it again rather than skip it."""
    readings, alerts = f"{topic_name}-readings", f"{topic_name}-alerts"
    tidewater("topic", "create", readings, "--partitions", "1", bootstrap=bootstrap)
    tidewater("topic", "create", alerts, "--partitions", "1", "--config", "max.message.bytes=4096",
              bootstrap=bootstrap)
    name = f"refused-{uuid.uuid4().hex[:8]}"
    query = tmp_path / f"{name}.sql"
    query.write_text(f"SELECT seq, note INTO [{alerts}] FROM [{readings}]")
    note = lambda seq: ("x" * 10_000) if seq == 5 else "small"  # noqa: E731
    produce(bootstrap, readings, [("d", {"seq": seq, "note": note(seq)}) for seq in range(5)])
    log = tmp_path / "job.log"
    job = QueryJob(query, bootstrap, log, "--delivery", delivery)
    job.start()
    try:
        wait_for_rows(bootstrap, alerts, 5)
        deadline = time.monotonic() + 30
        while ((latest_checkpoint(bootstrap, name) or {}).get("counts", {}).get("events")) != 5:
            assert time.monotonic() < deadline, "no checkpoint of the first 5 readings"
            time.sleep(0.2)
        produce(bootstrap, readings, [("d", {"seq": seq, "note": note(seq)}) for seq in range(5, 9)])
        assert job.process is not None
        code = job.process.wait(timeout=90)
    finally:
        if job.process is not None and job.process.poll() is None:
            job.kill()
    text = log.read_text()
    assert code != 0, text[-3000:]
    assert "Message size too large" in text and alerts in text, text[-3000:]
    checkpoint = latest_checkpoint(bootstrap, name)
    assert checkpoint is not None, text[-3000:]
    offsets = {(topic, partition): offset for topic, partition, offset in checkpoint["offsets"]}
    # The big reading is at offset 5 of the input: no checkpoint says it was handled.
    assert offsets[(readings, 0)] <= 5, checkpoint
