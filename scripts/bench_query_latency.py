"""Output latency of a streaming SQL job, exactly once against at least once: the driver behind
scripts/bench-query-latency (which builds the release binary and picks the Python environment).

  bench_query_latency.py BINARY WORK_DIR

One `tidewater serve` on a fresh data directory (WORK_DIR), then for each row of the table:

- broker alone: the floor, no job. Readings are produced (confluent-kafka, idempotent, acks=all,
  linger.ms=1) and read back from the same topic by a read_committed consumer.
- exactly-once and at-least-once: `tidewater query run` with `--delivery MODE` and the default
  checkpoint interval (1000 ms) runs the threshold alert `SELECT deviceId, temperature, seq INTO
  alerts FROM readings WHERE temperature > 30` (every reading is hot), and a read_committed
  consumer reads the alerts.

The latency of a reading is the wall time from just before its `produce()` call to the moment the
consumer returns its row, matched by `seq` (one process, one clock). Readings go out at
TIDEWATER_BENCH_RATE per second (20) for TIDEWATER_BENCH_EVENTS (300) after a warm-up that waits
for the first row (connections, the job's start and first fetch). Each row is printed with its
median, p90, p99 and max.

Then what the mode costs in throughput: TIDEWATER_BENCH_BACKLOG (200,000) readings are produced
first, and a job of each mode is started over them; the figure is readings per second from the
job's start to its last row being readable (so it includes the job's start, a second or so),
next to the job's CPU seconds (user + system, from /proc) over the same span. Figures are
printed, nothing is asserted.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition

N_EVENTS = int(os.environ.get("TIDEWATER_BENCH_EVENTS", "300"))
RATE = float(os.environ.get("TIDEWATER_BENCH_RATE", "20"))
N_BACKLOG = int(os.environ.get("TIDEWATER_BENCH_BACKLOG", "200000"))
# How long a job may take over the backlog.
BACKLOG_TIMEOUT_S = 600
START_TIMEOUT_S = 120
# How long the last rows may take to arrive once everything is produced (an exactly-once row
# waits for the next checkpoint).
DRAIN_TIMEOUT_S = 30
RUNNING = re.compile(r"tidewater is running.*kafka=127\.0\.0\.1:(\d+)")
QUERY = "SELECT deviceId, temperature, seq INTO [{alerts}] FROM [{readings}] WHERE temperature > 30\n"

STARTED: list[subprocess.Popen] = []


def say(line: str) -> None:
    print(line, flush=True)


def start_server(binary: Path, work: Path) -> str:
    """`tidewater serve` on WORK/data with every listener on a port of the kernel's choosing."""
    log = work / "serve.log"
    process = subprocess.Popen(
        [str(binary), "serve", "--kafka-listen", "127.0.0.1:0", "--data-dir", str(work / "data"),
         "--mqtt-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--admin-listen", "none"],
        stdout=subprocess.DEVNULL, stderr=open(log, "a"), stdin=subprocess.DEVNULL,
    )
    STARTED.append(process)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if match := RUNNING.search(log.read_text()):
            return f"127.0.0.1:{match[1]}"
        if process.poll() is not None:
            raise RuntimeError(f"serve exited with {process.returncode}; see {log}")
        time.sleep(0.05)
    raise RuntimeError(f"serve did not start in {START_TIMEOUT_S}s; see {log}")


def create_topic(binary: Path, bootstrap: str, topic: str) -> None:
    subprocess.run([str(binary), "topic", "create", topic, "--partitions", "1", "--brokers", bootstrap],
                   check=True, capture_output=True, timeout=60)


class Reader(threading.Thread):
    """A read_committed consumer of partition 0 of `topic` from its start: the wall time each
    `seq` was first returned."""

    def __init__(self, bootstrap: str, topic: str):
        super().__init__(daemon=True)
        self.consumer = Consumer({
            "bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False, "isolation.level": "read_committed",
        })
        self.consumer.assign([TopicPartition(topic, 0, 0)])
        self.seen: dict[int, float] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                message = self.consumer.poll(0.05)
                if message is None or message.error() is not None:
                    continue
                arrived = time.time()
                seq = json.loads(message.value())["seq"]
                self.seen.setdefault(seq, arrived)
        finally:
            self.consumer.close()


def measure(bootstrap: str, readings: str, reader: Reader) -> list[float]:
    """Produces the warm-up and then the paced readings; the latencies in ms, one per reading
    whose row arrived."""
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 1})

    def send(seq: int) -> None:
        value = json.dumps({"deviceId": f"d{seq % 4}", "temperature": 31, "seq": seq}).encode()
        producer.produce(readings, key=f"d{seq % 4}".encode(), value=value)
        producer.poll(0)

    # Warm-up: one reading every 100 ms (negative seqs) until a row comes back.
    deadline, warm = time.monotonic() + START_TIMEOUT_S, -1
    while not reader.seen:
        if time.monotonic() > deadline:
            raise RuntimeError("no row came back during the warm-up")
        send(warm)
        warm -= 1
        time.sleep(0.1)
    published: dict[int, float] = {}
    started = time.monotonic()
    for seq in range(N_EVENTS):
        due = started + seq / RATE
        time.sleep(max(0.0, due - time.monotonic()))
        published[seq] = time.time()
        send(seq)
    producer.flush(30)
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    while time.monotonic() < deadline and not all(seq in reader.seen for seq in published):
        time.sleep(0.05)
    return [(reader.seen[seq] - at) * 1000 for seq, at in published.items() if seq in reader.seen]


def percentile(sorted_ms: list[float], fraction: float) -> float:
    return sorted_ms[min(len(sorted_ms) - 1, int(fraction * len(sorted_ms)))]


def read_back(bootstrap: str, readings: str, rows: str) -> list[float]:
    """`measure` with a reader of topic `rows` running meanwhile."""
    reader = Reader(bootstrap, rows)
    reader.start()
    try:
        return measure(bootstrap, readings, reader)
    finally:
        reader.stop.set()
        reader.join()


def run_mode(binary: Path, work: Path, bootstrap: str, mode: str | None) -> list[float]:
    """One row of the table: `mode` None is the broker alone."""
    suffix = uuid.uuid4().hex[:8]
    readings, alerts = f"readings-{suffix}", f"alerts-{suffix}"
    create_topic(binary, bootstrap, readings)
    if mode is None:
        return read_back(bootstrap, readings, readings)
    create_topic(binary, bootstrap, alerts)
    job = start_job(binary, work, bootstrap, mode, readings, alerts)
    try:
        return read_back(bootstrap, readings, alerts)
    finally:
        stop_job(job, mode)


def start_job(binary: Path, work: Path, bootstrap: str, mode: str, readings: str, alerts: str) -> subprocess.Popen:
    query = work / f"job-{mode}-{uuid.uuid4().hex[:8]}.sql"
    query.write_text(QUERY.format(alerts=alerts, readings=readings))
    job = subprocess.Popen(
        [str(binary), "query", "run", str(query), "--brokers", bootstrap, "--delivery", mode,
         "--admin-listen", "none"],
        stdout=subprocess.DEVNULL, stderr=open(work / f"{query.stem}.log", "a"), stdin=subprocess.DEVNULL,
    )
    STARTED.append(job)
    return job


def stop_job(job: subprocess.Popen, mode: str) -> None:
    job.send_signal(signal.SIGTERM)
    if job.wait(timeout=60) != 0:
        raise RuntimeError(f"the {mode} job exited with {job.returncode}; see its log in the work directory")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def backlog_rate(binary: Path, work: Path, bootstrap: str, mode: str, readings: str) -> tuple[float, float]:
    """(readings/s from the job's start to its last row readable, the job's CPU seconds)."""
    alerts = f"alerts-{uuid.uuid4().hex[:8]}"
    create_topic(binary, bootstrap, alerts)
    consumer = Consumer({
        "bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4().hex[:8]}",
        "enable.auto.commit": False, "isolation.level": "read_committed",
    })
    consumer.assign([TopicPartition(alerts, 0, 0)])
    started = time.monotonic()
    job = start_job(binary, work, bootstrap, mode, readings, alerts)
    try:
        rows, deadline = 0, started + BACKLOG_TIMEOUT_S
        while rows < N_BACKLOG:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the {mode} job wrote {rows} of {N_BACKLOG} rows in {BACKLOG_TIMEOUT_S}s")
            rows += sum(message.error() is None for message in consumer.consume(10_000, 0.1))
        elapsed = time.monotonic() - started
        return N_BACKLOG / elapsed, cpu_seconds(job.pid)
    finally:
        consumer.close()
        stop_job(job, mode)


def produce_backlog(binary: Path, bootstrap: str) -> str:
    """A new topic holding N_BACKLOG hot readings; its name."""
    readings = f"backlog-{uuid.uuid4().hex[:8]}"
    create_topic(binary, bootstrap, readings)
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5})
    for seq in range(N_BACKLOG):
        value = json.dumps({"deviceId": f"d{seq % 4}", "temperature": 31, "seq": seq}).encode()
        while True:
            try:
                producer.produce(readings, key=f"d{seq % 4}".encode(), value=value)
                break
            except BufferError:
                producer.poll(0.1)
    if producer.flush(60) != 0:
        raise RuntimeError("the backlog was not all acknowledged")
    return readings


def main() -> None:
    binary, work = Path(sys.argv[1]), Path(sys.argv[2])
    bootstrap = start_server(binary, work)
    say(f"{N_EVENTS} readings at {RATE:g}/s per row, publish to readable (read_committed), ms; "
        f"job checkpoint interval 1000 ms")
    say(f"{'':<16} {'rows':>6} {'median':>8} {'p90':>8} {'p99':>8} {'max':>8}")
    try:
        for label, mode in [("broker alone", None), ("exactly-once", "exactly-once"),
                            ("at-least-once", "at-least-once")]:
            latencies = sorted(run_mode(binary, work, bootstrap, mode))
            if not latencies:
                say(f"{label:<16} no rows")
                continue
            say(f"{label:<16} {len(latencies):>6} {percentile(latencies, 0.5):>8.1f} "
                f"{percentile(latencies, 0.9):>8.1f} {percentile(latencies, 0.99):>8.1f} {latencies[-1]:>8.1f}")
        if N_BACKLOG > 0:
            readings = produce_backlog(binary, bootstrap)
            say(f"\n{N_BACKLOG} readings already in the topic, every one an alert: job start to last row readable")
            say(f"{'':<16} {'readings/s':>11} {'job CPU s':>10}")
            for mode in ["exactly-once", "at-least-once"]:
                rate, cpu = backlog_rate(binary, work, bootstrap, mode, readings)
                say(f"{mode:<16} {rate:>11.0f} {cpu:>10.2f}")
    finally:
        stop_started()


def stop_started() -> None:
    """Stops every process this driver started that still runs: SIGTERM, then SIGKILL after 60 s."""
    for process in STARTED:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    main()
