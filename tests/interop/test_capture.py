"""Captures to Parquet, read back by DuckDB and pyarrow: every record exactly once, byte for
byte, in the Hive layout (`TOPIC/date=.../hour=.../partition=P/{first}-{last}.parquet`).

Each test runs `tidewater capture run` as a child process against the session broker, produces
records with confluent-kafka (keeping each record's partition and offset from its delivery
report), and reads the files with the readers' own Hive dataset discovery.
"""

from __future__ import annotations

import json
import os
import random
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import boto3
import duckdb
import pyarrow.fs as pafs
import pytest
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from confluent_kafka import Consumer, TopicPartition

from capture_support import (
    CaptureProcess,
    assert_exactly_once,
    create_topic,
    duckdb_rows,
    parquet_files,
    produce,
    wait_for_rows,
)
from gateway_support import V5, add_device, connect_when_registered, events_topic, new_device_id
from query_support import close_devices
from query_support import wait_for_rows as query_rows
from support import wait_until
from trigger_support import tidewater

FILE_NAME = re.compile(r"^\d{20}-\d{20}\.parquet$")


def capture_name() -> str:
    return f"c-{uuid.uuid4().hex[:10]}"


def committed_offsets(bootstrap: str, group: str, topic: str, n_partitions: int) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        committed = consumer.committed([TopicPartition(topic, partition) for partition in range(n_partitions)], timeout=30)
        return {entry.partition: entry.offset for entry in committed}
    finally:
        consumer.close()


def test_raw_capture_is_read_by_duckdb_and_pyarrow_exactly_once(bootstrap, topic_name, tmp_path):
    create_topic(bootstrap, topic_name, 3)
    rng = random.Random(21)
    records = [
        (None if idx % 7 == 0 else rng.randbytes(rng.randrange(1, 16)), rng.randbytes(rng.randrange(0, 300)))
        for idx in range(900)
    ]
    records.append((b"null-value", None))
    first = produce(bootstrap, topic_name, records[:450], headers=[("source", b"\x00\xff"), ("empty", None)])
    out = tmp_path / "out"
    name = capture_name()
    capture = CaptureProcess(name, topic_name, f"file://{out}", bootstrap, tmp_path / "capture.log", "--window-secs", "2")
    capture.start()
    try:
        wait_for_rows(out / topic_name, len(first), capture)
        # A second burst after the first files closed: later files, the same dataset.
        second = produce(bootstrap, topic_name, records[450:])
        produced = first + second
        wait_for_rows(out / topic_name, len(produced), capture)
    finally:
        assert capture.stop() == 0, capture.log_text()[-4000:]

    assert_exactly_once(out / topic_name, produced)
    # The layout: date/hour/partition directories, files named by their offset range.
    files = parquet_files(out / topic_name)
    assert len(files) >= 2 * 3 - 1, [str(path) for path in files]
    for path in files:
        relative = path.relative_to(out / topic_name).parts
        assert re.fullmatch(r"date=\d{4}-\d{2}-\d{2}", relative[0]) and re.fullmatch(r"hour=\d{2}", relative[1]), relative
        assert relative[2].startswith("partition="), relative
        assert FILE_NAME.match(relative[3]), relative
    staging = out / topic_name / "_staging"
    assert not staging.exists() or not any(staging.iterdir()), list(staging.iterdir())
    # Offsets are committed past every captured record.
    ends: dict[int, int] = {}
    for record in produced:
        ends[record.partition] = max(ends.get(record.partition, -1), record.offset + 1)
    assert committed_offsets(bootstrap, f"tidewater-capture-{name}", topic_name, 3) == ends
    # Headers survive as a map; the Hive columns agree with the file's own.
    table = ds.dataset(str(out / topic_name), format="parquet", partitioning="hive").to_table()
    headers = [row for row in table.column("headers").to_pylist() if row]
    assert headers and all(dict(row) == {"source": b"\x00\xff", "empty": None} for row in headers), headers[:2]
    with duckdb.connect() as connection:
        mismatched = connection.execute(
            f"""SELECT count(*) FROM read_parquet('{out / topic_name}/*/*/*/*.parquet', hive_partitioning = true)
                WHERE strftime("timestamp" AT TIME ZONE 'UTC', '%Y-%m-%d') <> CAST("date" AS VARCHAR)
                   OR hour(("timestamp" AT TIME ZONE 'UTC')) <> CAST(hour AS INTEGER)"""
        ).fetchone()
    assert mismatched == (0,)


def test_json_columns_are_typed_and_new_fields_read_with_union_by_name(bootstrap, topic_name, tmp_path):
    create_topic(bootstrap, topic_name, 1)
    out = tmp_path / "out"
    capture = CaptureProcess(capture_name(), topic_name, f"file://{out}", bootstrap, tmp_path / "capture.log",
                             "--window-secs", "1", "--columns", "json")
    capture.start()
    try:
        first_batch = [
            (b"d1", json.dumps({"device": "d1", "temp": 21, "ok": True, "reading": 1.5, "tags": ["a"]}).encode()),
            (b"d2", json.dumps({"device": "d2", "temp": 22, "ok": False, "reading": 2}).encode()),
            (b"d3", b"not json at all"),
        ]
        produced = produce(bootstrap, topic_name, first_batch)
        wait_for_rows(out / topic_name, len(produced), capture)
        # A later file: a new field (humidity), and temp turning into a string (a conflict).
        later = [(b"d1", json.dumps({"device": "d1", "temp": "hot", "humidity": 40}).encode())]
        produced += produce(bootstrap, topic_name, later)
        wait_for_rows(out / topic_name, len(produced), capture)
    finally:
        assert capture.stop() == 0, capture.log_text()[-4000:]

    files = parquet_files(out / topic_name)
    assert len(files) == 2, files
    glob = f"{out / topic_name}/*/*/*/*.parquet"
    with duckdb.connect() as connection:

        def column_types(path) -> dict[str, str]:
            return {row[0]: row[1] for row in connection.execute(f"DESCRIBE SELECT * FROM read_parquet('{path}')").fetchall()}

        first_types = column_types(files[0])
        assert {column: first_types[column] for column in ("device", "temp", "ok", "reading", "tags")} == {
            "device": "VARCHAR", "temp": "BIGINT", "ok": "BOOLEAN", "reading": "DOUBLE", "tags": "VARCHAR",
        }, first_types
        assert first_types["value"] == "BLOB" and first_types["offset"] == "BIGINT" and "humidity" not in first_types
        second_types = column_types(files[1])
        assert second_types["temp"] == "VARCHAR" and second_types["humidity"] == "BIGINT", second_types
        rows = connection.execute(
            f"""SELECT "offset", device, temp, humidity, tags FROM read_parquet('{glob}', union_by_name = true,
                hive_partitioning = false) ORDER BY "offset" """
        ).fetchall()
    assert rows == [
        (0, "d1", "21", None, '["a"]'),
        (1, "d2", "22", None, None),
        (2, None, None, None, None),
        (3, "d1", "hot", 40, None),
    ], rows
    log = capture.log_text()
    assert "changed type" in log and "non_json_values=1" in log, log[-4000:]
    # pyarrow sees the same types in each file.
    schemas = [pq.read_schema(path) for path in files]
    assert [str(schemas[0].field(name).type) for name in ("device", "temp", "ok", "reading")] == ["string", "int64", "bool", "double"]
    assert [str(schemas[1].field(name).type) for name in ("temp", "humidity")] == ["string", "int64"]


def wait_for_describe(name: str, bootstrap: str, expected: str) -> str:
    """`capture describe NAME` once its output contains `expected`."""

    def described() -> str | None:
        text = tidewater("capture", "describe", name, bootstrap=bootstrap).stdout
        return text if expected in text else None

    return wait_until(described, timeout_s=60, what=f"{expected!r} in `capture describe {name}`")


def test_registered_capture_runs_in_serve_and_reports_in_describe(bootstrap, topic_name, tmp_path):
    """`capture create` registers; the session broker's `serve` runs it; `describe`, `list`,
    `pause`, `resume` and `delete` manage it. Its destination starts as an unwritable path (a
    file where a directory should be): the error shows in `describe`, nothing is committed, and
    once the path is fixed the retried write succeeds."""
    create_topic(bootstrap, topic_name, 2)
    name = capture_name()
    blocker = tmp_path / "not-a-directory"
    blocker.write_bytes(b"")
    out = blocker / "lake"
    produced = produce(bootstrap, topic_name, [(f"k{idx}".encode(), f"v{idx}".encode()) for idx in range(50)])
    tidewater("capture", "create", name, "--topic", topic_name, "--to", f"file://{out}", "--window-secs", "1",
              bootstrap=bootstrap)
    try:
        describe = wait_for_describe(name, bootstrap, "  error:")
        assert "not-a-directory" in describe.split("  error:")[1] and "state:        error" in describe, describe
        assert committed_offsets(bootstrap, f"tidewater-capture-{name}", topic_name, 2) == {0: -1001, 1: -1001}
        # Fixed: the retried write goes through.
        blocker.unlink()
        wait_until(lambda: parquet_files(out / topic_name), timeout_s=60, what="files after the directory was fixed")
        described = wait_for_describe(name, bootstrap, "written:    50 records")
        assert "running (1 instances)" in described and "error:" not in described, described
        assert_exactly_once(out / topic_name, produced)
        listed = tidewater("capture", "list", bootstrap=bootstrap).stdout
        assert name in listed and topic_name in listed, listed

        tidewater("capture", "pause", name, bootstrap=bootstrap)
        wait_until(lambda: "state:        paused" in tidewater("capture", "describe", name, bootstrap=bootstrap).stdout,
                   timeout_s=30, what="paused")
        more = produce(bootstrap, topic_name, [(b"later", b"while paused")])
        tidewater("capture", "resume", name, bootstrap=bootstrap)
        wait_until(lambda: len(duckdb_rows(out / topic_name)) == len(produced) + 1, timeout_s=60, what="the record produced while paused")
        assert_exactly_once(out / topic_name, produced + more)
    finally:
        tidewater("capture", "delete", name, bootstrap=bootstrap)
    assert name not in tidewater("capture", "list", bootstrap=bootstrap).stdout


# How many times the crash test kills the capture, and the longest it lets one run.
KILLS = 5
RUN_BEFORE_KILL_MAX_S = 3.0


def test_sigkill_at_random_moments_leaves_every_record_exactly_once(bootstrap, topic_name, tmp_path):
    """SIGKILL `capture run` at random moments while a producer runs, restart it each time;
    afterwards the dataset holds every produced record exactly once and nothing partial."""
    create_topic(bootstrap, topic_name, 3)
    out = tmp_path / "out"
    name = capture_name()
    rng = random.Random()
    seed = rng.randrange(1 << 30)
    rng.seed(seed)
    produced: list = []
    producing = threading.Event()
    producing.set()

    def produce_steadily() -> None:
        batch = 0
        while producing.is_set() and batch < 400:
            produced.extend(produce(bootstrap, topic_name, [(f"k{batch}-{idx}".encode(), rng.randbytes(200)) for idx in range(50)]))
            batch += 1
            time.sleep(0.02)

    producer = threading.Thread(target=produce_steadily, daemon=True)
    producer.start()
    log = tmp_path / "capture.log"
    extra = ("--window-secs", "1", "--window-bytes", "20000")
    try:
        for kill in range(KILLS):
            capture = CaptureProcess(name, topic_name, f"file://{out}", bootstrap, log, *extra)
            capture.start()
            # A killed instance's membership expires only after the session timeout, so the
            # next one runs past it before it can be killed with files in flight.
            time.sleep(6 + rng.uniform(0.1, RUN_BEFORE_KILL_MAX_S))
            assert capture.process is not None and capture.process.poll() is None, capture.log_text()[-4000:]
            capture.kill()
    finally:
        producing.clear()
        producer.join(timeout=120)
    assert not producer.is_alive()
    files_before_final = parquet_files(out / topic_name)
    assert files_before_final, f"no file was written before the kills (seed {seed}):\n{log.read_text()[-4000:]}"
    final = CaptureProcess(name, topic_name, f"file://{out}", bootstrap, log, *extra)
    final.start()
    try:
        wait_for_rows(out / topic_name, len(produced), final, timeout_s=120)
    finally:
        assert final.stop() == 0, final.log_text()[-4000:]
    assert_exactly_once(out / topic_name, produced)
    # Nothing but finished files where readers look; leftovers only in _staging.
    for path in (out / topic_name).rglob("*"):
        if path.is_file() and "_staging" not in path.parts:
            assert path.suffix == ".parquet" and FILE_NAME.match(path.name), path


def test_records_already_in_visible_files_are_skipped_when_offsets_were_not_committed(bootstrap, topic_name, tmp_path):
    """The state a kill between a file's rename and its offset commit leaves, made on purpose:
    the files are there, the group's offsets are back at the start. A restarted capture lists
    the files, skips what they hold and writes no second copy."""
    create_topic(bootstrap, topic_name, 3)
    out = tmp_path / "out"
    name = capture_name()
    produced = produce(bootstrap, topic_name, [(f"k{idx}".encode(), f"v{idx}".encode()) for idx in range(300)])
    log = tmp_path / "capture.log"
    first = CaptureProcess(name, topic_name, f"file://{out}", bootstrap, log, "--window-secs", "1", "--window-bytes", "2000")
    first.start()
    try:
        wait_for_rows(out / topic_name, len(produced), first)
    finally:
        assert first.stop() == 0, first.log_text()[-4000:]
    files = parquet_files(out / topic_name)
    tidewater("group", "reset-offsets", f"tidewater-capture-{name}", "--topic", topic_name, "--to-earliest", "--execute",
              bootstrap=bootstrap)
    assert set(committed_offsets(bootstrap, f"tidewater-capture-{name}", topic_name, 3).values()) == {0}
    more = produce(bootstrap, topic_name, [(b"after", b"the reset")])
    second = CaptureProcess(name, topic_name, f"file://{out}", bootstrap, log, "--window-secs", "1")
    second.start()
    try:
        wait_for_rows(out / topic_name, len(produced) + 1, second)
    finally:
        assert second.stop() == 0, second.log_text()[-4000:]
    assert_exactly_once(out / topic_name, produced + more)
    assert set(files) <= set(parquet_files(out / topic_name))
    assert log.read_text().count("records already captured; skipping to the next offset") == 3


@pytest.fixture
def moto_s3(tmp_path):
    """An S3-compatible server (moto in server mode) on 127.0.0.1, for this test only."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = open(tmp_path / "moto.log", "wb")
    process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                               stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        def answers() -> bool:
            assert process.poll() is None, (tmp_path / "moto.log").read_text()
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    return True
            except OSError:
                return False

        wait_until(answers, timeout_s=60, what="moto to listen")
        yield endpoint
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"}


def test_s3_capture_retries_a_missing_bucket_then_writes_exactly_once(bootstrap, topic_name, tmp_path, moto_s3):
    """To an S3-compatible server: while the bucket does not exist the write fails with a clear
    error, is retried, and nothing is committed; once the bucket exists every record arrives
    once, and pyarrow reads the dataset straight from the bucket."""
    create_topic(bootstrap, topic_name, 3)
    bucket = f"lake-{uuid.uuid4().hex[:8]}"
    name = capture_name()
    produced = produce(bootstrap, topic_name, [(f"k{idx}".encode(), os.urandom(100)) for idx in range(200)])
    capture = CaptureProcess(name, topic_name, f"s3://{bucket}/raw", bootstrap, tmp_path / "capture.log",
                             "--window-secs", "1", env={**S3_ENV, "AWS_ENDPOINT_URL": moto_s3})
    s3 = boto3.client("s3", endpoint_url=moto_s3, **{key: value for key, value in (
        ("aws_access_key_id", "testing"), ("aws_secret_access_key", "testing"), ("region_name", "us-east-1"))})
    capture.start()
    try:
        # The first thing that fails is the listing a partition's first record waits for.
        wait_until(lambda: capture.log_text().count("ERROR tidewater_capture") >= 2, timeout_s=60,
                   what="two failed attempts on the missing bucket")
        failure = next(line for line in capture.log_text().splitlines() if "ERROR tidewater_capture" in line)
        assert f"s3://{bucket}/raw" in failure and "NoSuchBucket" in failure and "retry_in_ms" in failure, failure
        assert set(committed_offsets(bootstrap, f"tidewater-capture-{name}", topic_name, 3).values()) == {-1001}
        s3.create_bucket(Bucket=bucket)

        def objects() -> list[str]:
            listed = s3.list_objects_v2(Bucket=bucket, Prefix="raw/")
            return [entry["Key"] for entry in listed.get("Contents", [])]

        def fetched_rows() -> int:
            copy = tmp_path / "copy"
            for key in objects():
                target = copy / key
                target.parent.mkdir(parents=True, exist_ok=True)
                s3.download_file(bucket, key, str(target))
            return len(duckdb_rows(copy / "raw" / topic_name)) if (copy / "raw" / topic_name).exists() else 0

        wait_until(lambda: fetched_rows() >= len(produced), timeout_s=60, what="every record in the bucket")
    finally:
        assert capture.stop() == 0, capture.log_text()[-4000:]
    assert all(key.startswith(f"raw/{topic_name}/date=") and key.endswith(".parquet") for key in objects()), objects()
    assert_exactly_once(tmp_path / "copy" / "raw" / topic_name, produced)
    filesystem = pafs.S3FileSystem(access_key="testing", secret_key="testing", region="us-east-1",
                                   endpoint_override=moto_s3.removeprefix("http://"), scheme="http")
    table = ds.dataset(f"{bucket}/raw/{topic_name}", filesystem=filesystem, format="parquet", partitioning="hive").to_table()
    assert table.num_rows == len(produced)
    assert max(committed_offsets(bootstrap, f"tidewater-capture-{name}", topic_name, 3).values()) > 0


def moto_auth(endpoint: str, enforced: bool) -> None:
    """Turns moto's IAM authentication on (every request must carry a key moto issued) or off,
    through its own API."""
    # As text: a form body would be parsed away before moto reads it.
    request = urllib.request.Request(f"{endpoint}/moto-api/reset-auth", data=b"0" if enforced else b"inf", method="POST",
                                     headers={"Content-Type": "text/plain"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        assert answer.status == 200, answer.read()


def describe_error(name: str, bootstrap: str, *needles: str) -> str:
    """The `error:` line of `capture describe NAME`, once it contains every one of `needles`."""

    def error_line() -> str | None:
        text = tidewater("capture", "describe", name, bootstrap=bootstrap).stdout
        lines = [line for line in text.splitlines() if line.startswith("  error:")]
        return lines[0] if lines and all(needle in lines[0] for needle in needles) else None

    return wait_until(error_line, timeout_s=60, what=f"{needles!r} in the error of `capture describe {name}`")


def s3_dataset(s3, bucket: str, prefix: str, copy: Path) -> Path:
    """Downloads every object under `prefix` of `bucket` into `copy`; the copy's root."""
    for entry in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", []):
        target = copy / entry["Key"]
        target.parent.mkdir(parents=True, exist_ok=True)
        s3.download_file(bucket, entry["Key"], str(target))
    return copy / prefix


def test_refused_credentials_and_a_missing_bucket_show_in_describe_and_the_log(broker_factory, topic_name, tmp_path, moto_s3):
    """Registered captures in a `serve` whose S3 credentials the store refuses (moto with IAM
    authentication on), and one whose bucket does not exist: each error shows in `capture
    describe` and in the server's log, is retried, and nothing is committed; once the store
    accepts (authentication off, the bucket created) every record arrives exactly once."""
    # S3 settings are the environment of the process that runs the capture: a server of its own.
    broker = broker_factory("--group-initial-rebalance-delay-ms", "0", env={
        "AWS_ACCESS_KEY_ID": "AKIAREFUSEDBYMOTO000", "AWS_SECRET_ACCESS_KEY": "refused", "AWS_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": moto_s3,
    })
    bootstrap = broker.bootstrap
    s3 = boto3.client("s3", endpoint_url=moto_s3, aws_access_key_id="testing", aws_secret_access_key="testing",
                      region_name="us-east-1")
    bucket, missing = f"lake-{uuid.uuid4().hex[:8]}", f"missing-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    create_topic(bootstrap, topic_name, 2)
    produced = produce(bootstrap, topic_name, [(f"k{idx}".encode(), os.urandom(64)) for idx in range(120)])
    refused, unbucketed = capture_name(), capture_name()
    moto_auth(moto_s3, enforced=True)
    try:
        mark = broker.log_mark()
        tidewater("capture", "create", refused, "--topic", topic_name, "--to", f"s3://{bucket}/raw", "--window-secs", "1",
                  bootstrap=bootstrap)
        error = describe_error(refused, bootstrap, "InvalidAccessKeyId")
        assert f"s3://{bucket}/raw" in error and "403" in error, error
        logged = broker.wait_for_log("ERROR", "InvalidAccessKeyId", "retry_in_ms", since=mark)
        assert f"s3://{bucket}/raw" in logged, logged
        # Retried with backoff: a second failure is logged after the first.
        wait_until(lambda: sum("InvalidAccessKeyId" in line for line in broker.log_since(mark)) >= 2, timeout_s=30,
                   what="a retried attempt")
        assert "state:        error" in tidewater("capture", "describe", refused, bootstrap=bootstrap).stdout
        assert committed_offsets(bootstrap, f"tidewater-capture-{refused}", topic_name, 2) == {0: -1001, 1: -1001}
    finally:
        moto_auth(moto_s3, enforced=False)
    try:
        # The store accepts the same credentials now: the retried attempts go through.
        wait_until(lambda: "written:    120 records" in tidewater("capture", "describe", refused, bootstrap=bootstrap).stdout,
                   timeout_s=90, what="every record written once the credentials are accepted")
        described = tidewater("capture", "describe", refused, bootstrap=bootstrap).stdout
        assert "error:" not in described and "running (1 instances)" in described, described
        assert_exactly_once(s3_dataset(s3, bucket, f"raw/{topic_name}", tmp_path / "refused"), produced)

        mark = broker.log_mark()
        tidewater("capture", "create", unbucketed, "--topic", topic_name, "--to", f"s3://{missing}/raw", "--window-secs", "1",
                  bootstrap=bootstrap)
        error = describe_error(unbucketed, bootstrap, "NoSuchBucket")
        assert f"s3://{missing}/raw" in error, error
        broker.wait_for_log("ERROR", "NoSuchBucket", f"s3://{missing}/raw", since=mark)
        assert committed_offsets(bootstrap, f"tidewater-capture-{unbucketed}", topic_name, 2) == {0: -1001, 1: -1001}
        s3.create_bucket(Bucket=missing)
        wait_until(lambda: "written:    120 records" in tidewater("capture", "describe", unbucketed, bootstrap=bootstrap).stdout,
                   timeout_s=90, what="every record written once the bucket exists")
        assert_exactly_once(s3_dataset(s3, missing, f"raw/{topic_name}", tmp_path / "missing"), produced)
        ends = {0: 0, 1: 0}
        for record in produced:
            ends[record.partition] = max(ends[record.partition], record.offset + 1)
        for name in (refused, unbucketed):
            wait_until(lambda: committed_offsets(bootstrap, f"tidewater-capture-{name}", topic_name, 2) == ends,
                       timeout_s=30, what=f"{name}'s offsets committed past every record")
    finally:
        for name in (refused, unbucketed):
            tidewater("capture", "delete", name, bootstrap=bootstrap, check=False)


# librdkafka's smallest max.poll.interval.ms above the tests' 6 s session timeout, and how long
# the destination keeps failing: twice that, so a capture that stopped polling while it retried
# would be put out of the group.
MAX_POLL_INTERVAL_MS = 7000
FAILING_FOR_S = 2 * MAX_POLL_INTERVAL_MS / 1000


def test_polling_goes_on_while_a_failed_write_is_retried(bootstrap, topic_name, tmp_path):
    """Files that cannot be published for longer than `max.poll.interval.ms` (a file stands
    where their date directory goes; the listing still works): the capture keeps polling with
    the partitions paused, so it stays in the group with its partitions, and once the path is
    fixed every record arrives exactly once."""
    create_topic(bootstrap, topic_name, 2)
    out = tmp_path / "out"
    name = capture_name()
    # Today's and, near midnight, tomorrow's: the records' timestamps say which.
    blockers = {out / topic_name / time.strftime("date=%Y-%m-%d", time.gmtime(time.time() + delta)) for delta in (0, 120)}
    for blocker in blockers:
        blocker.parent.mkdir(parents=True, exist_ok=True)
        blocker.write_bytes(b"")
    produced = produce(bootstrap, topic_name, [(f"k{idx}".encode(), f"v{idx}".encode()) for idx in range(200)])
    capture = CaptureProcess(name, topic_name, f"file://{out}", bootstrap, tmp_path / "capture.log",
                             "--window-secs", "1", "-X", f"max.poll.interval.ms={MAX_POLL_INTERVAL_MS}")
    capture.start()
    try:
        wait_until(lambda: "ERROR" in capture.log_text() and "writing " in capture.log_text(), timeout_s=60,
                   what="a failed publish")
        time.sleep(FAILING_FOR_S)
        failures = [line for line in capture.log_text().splitlines() if "ERROR" in line and "writing " in line]
        assert len(failures) >= 3 and "retry_in_ms" in failures[0] and "date=" in failures[0], failures
        for blocker in blockers:
            blocker.unlink()
        wait_for_rows(out / topic_name, len(produced), capture)
    finally:
        assert capture.stop() == 0, capture.log_text()[-4000:]
    assert_exactly_once(out / topic_name, produced)
    log = capture.log_text()
    # Still a member: librdkafka never saw the poll interval pass (a capture that stopped polling
    # is put out of the group, and its commits after the write are refused as an unknown
    # member's), one assignment, never revoked, and the offsets committed past every record.
    assert "maximum poll interval" not in log and "commit" not in log, log[-4000:]
    assert log.count("partitions assigned") == 1 and "revoked" not in log, log[-4000:]
    ends = {0: 0, 1: 0}
    for record in produced:
        ends[record.partition] = max(ends[record.partition], record.offset + 1)
    assert committed_offsets(bootstrap, f"tidewater-capture-{name}", topic_name, 2) == ends


def test_two_instances_share_the_partitions_through_one_group(bootstrap, topic_name, tmp_path):
    """Two `capture run` instances with one name split the topic's partitions: both write files,
    and together they write every record once."""
    create_topic(bootstrap, topic_name, 4)
    out = tmp_path / "out"
    name = capture_name()
    instances = [
        CaptureProcess(name, topic_name, f"file://{out}", bootstrap, tmp_path / f"capture{idx}.log", "--window-secs", "1",
                       env={"RUST_LOG": "info,tidewater_capture=debug"})
        for idx in range(2)
    ]
    for instance in instances:
        instance.start()
    try:
        # Both in the group before the records come, so neither reads all four partitions.
        def latest_assignment(instance: CaptureProcess) -> str:
            lines = [line for line in instance.log_text().splitlines() if "partitions assigned" in line]
            return lines[-1] if lines else ""

        wait_until(lambda: all(latest_assignment(instance).count(",") == 1 for instance in instances), timeout_s=60,
                   what="two partitions assigned to each instance")
        produced = produce(bootstrap, topic_name, [(f"k{idx}".encode(), f"v{idx}".encode()) for idx in range(2000)])
        wait_for_rows(out / topic_name, len(produced), instances[0])
    finally:
        for instance in instances:
            assert instance.stop() == 0, instance.log_text()[-4000:]
    assert_exactly_once(out / topic_name, produced)
    for instance in instances:
        assert "file visible" in instance.log_text(), instance.log_text()[-4000:]


def test_seed_telemetry_hourly_averages_from_parquet_equal_a_tumbling_sql_job(broker, bootstrap, tmp_path):
    """The seed scenario's cold path against its hot path: registered devices publish readings
    over MQTT through the gateway into the shared "telemetry" topic; a capture with JSON columns
    writes it to Parquet, and DuckDB's hourly average per device over those files equals what a
    streaming SQL job (`tidewater query create`) computes over the same events with a tumbling
    hour window."""
    assert broker.mqtt_port is not None, "the session broker logged no mqtt= address"
    device_ids = [new_device_id(f"probe{idx}") for idx in range(3)]
    job, averages = f"hourly-{uuid.uuid4().hex[:8]}", f"hourly-averages-{uuid.uuid4().hex[:8]}"
    query = tmp_path / "hourly.sql"
    query.write_text(f"""
        SELECT deviceId, System.Timestamp() AS windowEnd, AVG(temperature) AS avg_temp
        INTO [{averages}]
        FROM telemetry TIMESTAMP BY ts
        WHERE {" OR ".join(f"deviceId = '{device_id}'" for device_id in device_ids)}
        GROUP BY deviceId, TumblingWindow(hour, 1)
    """)
    out = tmp_path / "lake"
    capture = CaptureProcess(capture_name(), "telemetry", f"file://{out}", bootstrap, tmp_path / "capture.log",
                             "--window-secs", "1", "--columns", "json")
    devices: dict = {}
    try:
        for device_id in device_ids:
            devices[device_id] = connect_when_registered(broker.mqtt_port, device_id, add_device(bootstrap, device_id), V5)
        tidewater("query", "create", job, "--file", str(query), "--from", f"@{int(time.time() * 1000)}",
                  "--checkpoint-interval-ms", "200", bootstrap=bootstrap)
        capture.start()
        # Three hours of event time, a reading every 10 minutes from each device; each step is
        # acknowledged before the next, so the topic holds them in event-time order. Then one
        # reading from each device six hours on moves the job's watermark past the three hours
        # (its own hour stays open in the job, so it is left out of the comparison below).
        rng = random.Random(21)
        steps = [*range(5 * 60, 3 * 3600, 600), 9 * 3600]
        for step_idx, second in enumerate(steps):
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(1_767_225_600 + second))
            for device_idx, (device_id, device) in enumerate(devices.items()):
                temperature = round(20 + 5 * device_idx + rng.uniform(-3, 3), 2)
                payload = json.dumps({"deviceId": device_id, "temperature": temperature, "ts": stamp})
                device.publish(events_topic(device_id), payload.encode(), qos=1)
            for device in devices.values():
                device.wait_acked(step_idx + 1)
        n_events = len(steps) * len(device_ids)

        glob = f"{out}/telemetry/*/*/*/*.parquet"
        ids = ", ".join(f"'{device_id}'" for device_id in device_ids)

        def captured() -> int:
            if not parquet_files(out / "telemetry"):
                return 0
            with duckdb.connect() as connection:
                return connection.execute(
                    f"SELECT count(*) FROM read_parquet('{glob}', union_by_name = true, hive_partitioning = false) WHERE deviceId IN ({ids})"
                ).fetchone()[0]

        wait_until(lambda: captured() >= n_events, timeout_s=60, what="every reading in the Parquet files")
        job_rows = query_rows(bootstrap, averages, 3 * len(device_ids))
    finally:
        close_devices(devices)
        tidewater("query", "delete", job, bootstrap=bootstrap, check=False)
        if capture.process is not None:
            assert capture.stop() == 0, capture.log_text()[-4000:]

    assert captured() == n_events
    with duckdb.connect() as connection:
        # The cold path's answer: typed columns straight from the files. CASTs keep the query
        # right even if other tests' events on the shared topic made a column text.
        parquet_rows = connection.execute(
            f"""SELECT deviceId,
                       strftime(date_trunc('hour', strptime(CAST(ts AS VARCHAR), '%Y-%m-%dT%H:%M:%SZ')) + INTERVAL 1 HOUR,
                                '%Y-%m-%dT%H:%M:%S') AS window_end,
                       avg(CAST(temperature AS DOUBLE)) AS avg_temp, count(*) AS n
                FROM read_parquet('{glob}', union_by_name = true, hive_partitioning = false)
                WHERE deviceId IN ({ids})
                GROUP BY ALL ORDER BY ALL"""
        ).fetchall()
    from_parquet = {(device_id, window_end): avg_temp for device_id, window_end, avg_temp, _ in parquet_rows}
    from_job = {(row["deviceId"], row["windowEnd"][:19]): row["avg_temp"] for row in job_rows}
    assert len(job_rows) == len(from_job) == 3 * len(device_ids), job_rows
    # Every closed hour of every device, six readings each, and the watermark's reading alone.
    assert sorted({window_end for _, window_end in from_job}) == [
        "2026-01-01T01:00:00", "2026-01-01T02:00:00", "2026-01-01T03:00:00"], job_rows
    assert set(from_parquet) == set(from_job) | {(device_id, "2026-01-01T10:00:00") for device_id in device_ids}
    assert all(n == 6 for _, window_end, _, n in parquet_rows if window_end != "2026-01-01T10:00:00"), parquet_rows
    for key, avg_temp in from_job.items():
        assert abs(from_parquet[key] - avg_temp) < 1e-9, (key, from_parquet[key], avg_temp)
