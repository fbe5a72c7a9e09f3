"""Helpers for the capture tests: a `tidewater capture run` process a test can stop or kill,
producing records with their positions, and reading a captured dataset with pyarrow and DuckDB
(packages nobody here wrote)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow.dataset as ds
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import tidewater_binary

# How long a capture may take to make produced records visible (its window plus a margin).
CAPTURE_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Produced:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


def create_topic(bootstrap: str, topic: str, n_partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(topic, num_partitions=n_partitions, replication_factor=1)])
    for future in futures.values():
        future.result(timeout=30)


def produce(bootstrap: str, topic: str, records: list[tuple[bytes | None, bytes | None]], headers=None) -> list[Produced]:
    """Produces `records` (key, value) and returns where each landed, from delivery reports."""
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5})
    produced: list[Produced] = []
    errors: list[str] = []

    def on_delivery(error, message) -> None:
        if error is not None:
            errors.append(str(error))
        else:
            produced.append(Produced(message.partition(), message.offset(), message.key(), message.value()))

    for idx, (key, value) in enumerate(records):
        producer.produce(topic, key=key, value=value, headers=headers, on_delivery=on_delivery, partition=idx % 3 if key is None else -1)
        producer.poll(0)
    remaining = producer.flush(30)
    assert remaining == 0 and not errors, f"{remaining} records undelivered, errors: {errors[:3]}"
    return produced


class CaptureProcess:
    """`tidewater capture run NAME --topic T --to URL ...` as a child process."""

    def __init__(self, name: str, topic: str, to: str, bootstrap: str, log: Path, *extra: str, env: dict[str, str] | None = None):
        self.command = [
            str(tidewater_binary()), "capture", "run", name, "--topic", topic, "--to", to,
            "--brokers", bootstrap,
            # A killed instance's group membership must expire quickly for the next one to take
            # over its partitions (the broker's minimum session timeout is 6 s).
            "-X", "session.timeout.ms=6000",
            *extra,
        ]
        self.log = log
        self.env = env or {}
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        env = {key: value for key, value in os.environ.items() if not key.startswith("TIDEWATER_")}
        env.setdefault("RUST_LOG", "info")
        env.update(self.env)
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(self.command, stdout=log, stderr=log, stdin=subprocess.DEVNULL, env=env)

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout=30)

    def stop(self) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=90)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def parquet_files(root: Path) -> list[Path]:
    return sorted(path for path in root.rglob("*.parquet") if "_staging" not in path.parts)


def pyarrow_rows(topic_dir: Path) -> list[dict]:
    """Every row of the dataset under `topic_dir`, read by pyarrow's Hive dataset discovery."""
    if not parquet_files(topic_dir):
        return []
    dataset = ds.dataset(str(topic_dir), format="parquet", partitioning="hive")
    return dataset.to_table(columns=["partition", "offset", "key", "value"]).to_pylist()


def duckdb_rows(topic_dir: Path) -> list[tuple]:
    """(partition, offset, key, value) of every row, read by DuckDB."""
    glob = str(topic_dir / "*" / "*" / "*" / "*.parquet")
    with duckdb.connect() as connection:
        return connection.execute(
            f"SELECT partition, \"offset\", key, value FROM read_parquet('{glob}', hive_partitioning = false)"
        ).fetchall()


def wait_for_rows(topic_dir: Path, n_rows: int, capture: CaptureProcess, timeout_s: float = CAPTURE_TIMEOUT_S) -> int:
    """Waits until the dataset holds at least `n_rows` rows; returns how many it holds."""
    deadline = time.monotonic() + timeout_s
    count = 0
    while time.monotonic() < deadline:
        count = len(pyarrow_rows(topic_dir))
        if count >= n_rows:
            return count
        assert capture.process is not None and capture.process.poll() is None, f"capture exited:\n{capture.log_text()[-4000:]}"
        time.sleep(0.5)
    raise AssertionError(f"{count} of {n_rows} rows captured after {timeout_s} s:\n{capture.log_text()[-4000:]}")


def assert_exactly_once(topic_dir: Path, produced: list[Produced]) -> None:
    """Both readers see every produced record once, byte for byte, and nothing else."""
    expected = {(record.partition, record.offset): (record.key, record.value) for record in produced}
    assert len(expected) == len(produced)
    for reader, rows in (
        ("pyarrow", [(row["partition"], row["offset"], row["key"], row["value"]) for row in pyarrow_rows(topic_dir)]),
        ("duckdb", duckdb_rows(topic_dir)),
    ):
        assert len(rows) == len(produced), f"{reader}: {len(rows)} rows for {len(produced)} records"
        positions = [(partition, offset) for partition, offset, _, _ in rows]
        assert len(set(positions)) == len(positions), f"{reader}: duplicate (partition, offset)"
        actual = {(partition, offset): (bytes(key) if key is not None else None, bytes(value) if value is not None else None)
                  for partition, offset, key, value in rows}
        assert actual == expected, f"{reader}: keys or values differ"
