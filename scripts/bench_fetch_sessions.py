"""A 100-partition consumer with fetch sessions (KIP-227) against the same consumer without
them: the driver behind scripts/bench-fetch-sessions (which builds the release binary and picks
the Python environment).

  bench_fetch_sessions.py BINARY WORK_DIR

The consumer is kafka-python, the one client of the interop suite that uses fetch sessions
(librdkafka never does). Both modes are the same client at the same protocol version; only its
`enable_incremental_fetch_sessions` differs, so without sessions every fetch names all 100
partitions (session epoch -1) and with them a fetch names what changed. One `tidewater serve`
(release build, data in WORK_DIR), a topic of 100 partitions, and per round, in alternating
order, each mode through two loads:

1. tail: a producer (confluent-kafka, its own process) writes TIDEWATER_BENCH_RATE records a
   second of 100 bytes, round robin over the partitions, for TIDEWATER_BENCH_SECS seconds,
   while the consumer, at the end of every partition, reads them as they come (fetch.min.bytes
   1, fetch.max.wait 500 ms). Most fetches find a few partitions with something new: the case
   sessions are for.
2. catch-up: a fresh consumer reads TIDEWATER_BENCH_RECORDS records (written once, before the
   first round, to another 100-partition topic) from the beginning with
   max_partition_fetch_bytes 16 KiB, so it takes many fetches, each with data in every partition.

Figures per load and mode, the median over the rounds: the broker's CPU microseconds per fetch
and per record read (its own CPU time over the run, from /proc; while tailing it includes the
producer's appends, the same in both modes, so the broker runs with fsync=interval to keep them
small), the consumer's request bytes per fetch (kafka-python's request-size-avg, whose window
covers the run) and per record, and fetches and partitions named per fetch (the broker's
/metrics). Other processes share the machine's cores; the CPU figures are CPU time, not wall
time, to be moved least by that.
"""

from __future__ import annotations

import multiprocessing
import os
import re
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
from kafka import KafkaConsumer, TopicPartition

PARTITIONS = 100
RECORD_BYTES = 100
ROUNDS = int(os.environ.get("TIDEWATER_BENCH_ROUNDS", "3"))
TAIL_SECS = float(os.environ.get("TIDEWATER_BENCH_SECS", "10"))
TAIL_RATE = int(os.environ.get("TIDEWATER_BENCH_RATE", "2000"))
CATCHUP_RECORDS = int(os.environ.get("TIDEWATER_BENCH_RECORDS", "200000"))
# Small batches and small fetches, so the catch-up takes many fetches.
CATCHUP_BATCH_BYTES = 2048
CATCHUP_PARTITION_FETCH_BYTES = 2048
START_TIMEOUT_S = 60
READ_TIMEOUT_S = 300
MODES = {"sessions": True, "sessionless": False}
RUNNING = re.compile(r"tidewater is running.*kafka=127\.0\.0\.1:(\d+)")
ADMIN = re.compile(r"admin listener.*\badmin=127\.0\.0\.1:(\d+)")
FETCH_SAMPLE = re.compile(r'^tidewater_fetch_request(s|_partitions)_total\{kind="(\w+)"\} (\S+)$', re.M)
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def say(line: str) -> None:
    print(line, flush=True)


def start_broker(binary: Path, work: Path) -> tuple[subprocess.Popen, int, int]:
    log = work / "serve.log"
    process = subprocess.Popen(
        [str(binary), "serve", "--kafka-listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
         "--mqtt-listen", "none", "--http-listen", "none", "--fsync", "interval", "--data-dir", str(work / "data")],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=open(log, "w"))
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        text = log.read_text()
        kafka, admin = RUNNING.search(text), ADMIN.search(text)
        if kafka and admin:
            return process, int(kafka[1]), int(admin[1])
        if process.poll() is not None:
            break
        time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"serve did not start; see {log}")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


def fetch_counts(admin_port: int) -> tuple[float, float]:
    """Fetch requests and partitions named in them, all kinds together."""
    with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics", timeout=10) as response:
        page = response.read().decode()
    requests = partitions = 0.0
    for which, _kind, value in FETCH_SAMPLE.findall(page):
        if which == "s":
            requests += float(value)
        else:
            partitions += float(value)
    return requests, partitions


def produce(bootstrap: str, topic: str, records: int, rate: int | None, batch_bytes: int = 1_000_000) -> None:
    """Writes `records` values round robin over the partitions, at `rate` a second if given."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "acks": "all", "batch.size": batch_bytes})
    value = b"x" * RECORD_BYTES
    started = time.monotonic()
    for index in range(records):
        if rate:
            ahead = index / rate - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)
        while True:
            try:
                producer.produce(topic, value, partition=index % PARTITIONS)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    if producer.flush(60) != 0:
        raise RuntimeError("records left unsent")


def consumer(bootstrap: str, sessions: bool, **settings) -> KafkaConsumer:
    return KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                         enable_incremental_fetch_sessions=sessions, **settings)


class Window:
    """The broker's CPU, the consumer's request sizes and the broker's fetch counters over a run."""

    def __init__(self, broker_pid: int, admin_port: int, reader: KafkaConsumer):
        self.broker_pid, self.admin_port, self.reader = broker_pid, admin_port, reader

    def __enter__(self) -> "Window":
        self.cpu = cpu_seconds(self.broker_pid)
        self.fetches, self.named = fetch_counts(self.admin_port)
        return self

    def __exit__(self, *_) -> None:
        self.cpu = cpu_seconds(self.broker_pid) - self.cpu
        fetches, named = fetch_counts(self.admin_port)
        self.fetches, self.named = fetches - self.fetches, named - self.named
        self.request_bytes = self.reader.metrics()["consumer-metrics"]["request-size-avg"]

    def figures(self, records: int) -> dict[str, float]:
        return {
            "records": records,
            "broker_us_per_fetch": 1e6 * self.cpu / max(self.fetches, 1),
            "broker_us_per_record": 1e6 * self.cpu / max(records, 1),
            "request_bytes_per_fetch": self.request_bytes,
            "request_bytes_per_record": self.request_bytes * self.fetches / max(records, 1),
            "fetches": self.fetches,
            "partitions_per_fetch": self.named / max(self.fetches, 1),
        }


def tail(bootstrap: str, topic: str, sessions: bool, broker_pid: int, admin_port: int) -> dict[str, float]:
    reader = consumer(bootstrap, sessions, fetch_max_wait_ms=500)
    partitions = [TopicPartition(topic, partition) for partition in range(PARTITIONS)]
    reader.assign(partitions)
    reader.seek_to_end()
    for partition in partitions:
        reader.position(partition)
    expected = int(TAIL_SECS * TAIL_RATE)
    reader.poll(timeout_ms=100)  # the first fetch (which opens the session) before the clock
    writer = multiprocessing.Process(target=produce, args=(bootstrap, topic, expected, TAIL_RATE))
    got = 0
    with Window(broker_pid, admin_port, reader) as window:
        writer.start()
        deadline = time.monotonic() + TAIL_SECS + READ_TIMEOUT_S
        while got < expected and time.monotonic() < deadline:
            got += sum(len(batch) for batch in reader.poll(timeout_ms=200).values())
        writer.join()
    reader.close()
    if writer.exitcode != 0 or got != expected:
        raise RuntimeError(f"tail: read {got} of {expected} records (producer exit {writer.exitcode})")
    return window.figures(got)


def catch_up(bootstrap: str, topic: str, sessions: bool, broker_pid: int, admin_port: int) -> dict[str, float]:
    reader = consumer(bootstrap, sessions, max_partition_fetch_bytes=CATCHUP_PARTITION_FETCH_BYTES)
    reader.assign([TopicPartition(topic, partition) for partition in range(PARTITIONS)])
    reader.seek_to_beginning()
    got = 0
    deadline = time.monotonic() + READ_TIMEOUT_S
    with Window(broker_pid, admin_port, reader) as window:
        while got < CATCHUP_RECORDS and time.monotonic() < deadline:
            got += sum(len(batch) for batch in reader.poll(timeout_ms=200, max_records=100_000).values())
    reader.close()
    if got != CATCHUP_RECORDS:
        raise RuntimeError(f"catch-up: read {got} of {CATCHUP_RECORDS} records")
    return window.figures(got)


def main() -> None:
    binary, work = Path(sys.argv[1]), Path(sys.argv[2])
    broker, kafka_port, admin_port = start_broker(binary, work)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        bootstrap = f"127.0.0.1:{kafka_port}"
        admin = AdminClient({"bootstrap.servers": bootstrap})
        for future in admin.create_topics([NewTopic(name, PARTITIONS, 1) for name in ("tail", "catch-up")]).values():
            future.result(30)
        say(f"writing {CATCHUP_RECORDS} records of {RECORD_BYTES} bytes to the catch-up topic")
        produce(bootstrap, "catch-up", CATCHUP_RECORDS, None, CATCHUP_BATCH_BYTES)
        results: dict[tuple[str, str], list[dict[str, float]]] = {}
        loads = {"tail": tail, "catch-up": catch_up}
        for round_index in range(ROUNDS):
            order = list(MODES) if round_index % 2 == 0 else list(MODES)[::-1]
            for load, run in loads.items():
                for mode in order:
                    figures = run(bootstrap, load, MODES[mode], broker.pid, admin_port)
                    results.setdefault((load, mode), []).append(figures)
                    say(f"round {round_index + 1} {load:<8} {mode:<11} " + ", ".join(
                        f"{name}={value:.1f}" for name, value in figures.items()))
        say(f"medians over {ROUNDS} rounds (kafka-python, 100 partitions, {RECORD_BYTES}-byte records; "
            f"tail at {TAIL_RATE}/s for {TAIL_SECS:g} s, catch-up of {CATCHUP_RECORDS}):")
        say(f"{'load':<9} {'mode':<12} {'broker us/fetch':>15} {'broker us/record':>16} {'req B/fetch':>12} "
            f"{'req B/record':>13} {'fetches':>8} {'partitions/fetch':>17}")
        for (load, mode), runs in results.items():
            median = {name: statistics.median(run[name] for run in runs) for name in runs[0]}
            say(f"{load:<9} {mode:<12} {median['broker_us_per_fetch']:>15.0f} {median['broker_us_per_record']:>16.1f} "
                f"{median['request_bytes_per_fetch']:>12.0f} {median['request_bytes_per_record']:>13.1f} "
                f"{median['fetches']:>8.0f} {median['partitions_per_fetch']:>17.1f}")
    finally:
        broker.terminate()
        broker.wait(timeout=60)


if __name__ == "__main__":
    main()
