"""Bounded growth of Tidewater's tables and bounded restart work, measured: the driver behind
scripts/bench-tables (which builds the release binary and picks the Python environment).

  bench_tables.py BINARY WORK_DIR

Three stages, each on a `tidewater serve` of its own (fsync=always, data in WORK_DIR):

1. Tables. For TIDEWATER_BENCH_SECS seconds (180; the issue asks for ten minutes), all at once:
   10,000 device registrations churned 10 times (each round removes every device and registers
   it again: a tombstone and a new record per device, written straight to `_tidewater_devices`
   in the format `tidewater device add` writes, taken from one real `device add`); 100 trigger
   definitions rewritten over and over in `_tidewater_triggers` (likewise from one real
   `trigger create`; serve runs with --triggers false, so the 100 definitions are stored, not
   run); and one registered query job checkpointing every second over a steady trickle of
   events. Then: each table's bytes on disk; a restart (recovery time from the running line's
   elapsed_ms, and the wall time to it); the tables' segment.ms, min.cleanable.dirty.ratio and
   delete.retention.ms shortened with topic configs so the cleaner rolls and cleans them at once
   (their live keys are what they were); bytes on disk after cleaning; another restart. A run of
   ten minutes or more also sees the cleaner at work on its own (a table's segment.ms is ten
   minutes), so "the end of the run" is then already partly cleaned.
2. Committed offsets: TIDEWATER_BENCH_OFFSETS (10,000,000) offset commits, spread over 100
   groups x 1,000 partitions (100,000 live keys, each committed many times), then restarts
   before and after the consumer-offsets journal is cleaned.
3. Producers: 1,000 idempotent producers (kafka-python, one after another) each writing to
   every partition of a 4-partition topic with 16 KiB segments (a producer
   snapshot at each roll), then a restart.

Figures are printed; nothing is asserted about time.
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
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

BENCH_SECS = int(os.environ.get("TIDEWATER_BENCH_SECS", "180"))
N_OFFSETS = int(os.environ.get("TIDEWATER_BENCH_OFFSETS", "10000000"))
N_PRODUCERS = int(os.environ.get("TIDEWATER_BENCH_PRODUCERS", "1000"))
N_DEVICES = 10_000
DEVICE_ROUNDS = 10
N_TRIGGERS = 100
OFFSET_GROUPS = 100
OFFSET_TOPICS = 10
OFFSET_PARTITIONS_PER_TOPIC = 100
PRODUCER_PARTITIONS = 4
START_TIMEOUT_S = 600
RUNNING = re.compile(r"tidewater is running.*kafka=127\.0\.0\.1:(\d+).*elapsed_ms=(\d+)")
TABLES = [
    "_tidewater_devices",
    "_tidewater_triggers",
    "_tidewater_queries",
    "_tidewater_query_checkpoints",
    "_tidewater_mqtt_retained",
    "_tidewater_command_deliveries",
]
# What makes the cleaner roll and clean a table at its next pass.
CLEAN_NOW = {"segment.ms": "100", "min.cleanable.dirty.ratio": "0.01", "delete.retention.ms": "0"}


def say(line: str) -> None:
    print(line, flush=True)


# Servers started, killed if the driver stops early (SIGTERM from scripts/bench-tables, Ctrl-C).
STARTED: list[subprocess.Popen] = []


class Server:
    """One `tidewater serve` on a data directory; its log goes to a file."""

    def __init__(self, binary: Path, data_dir: Path, log: Path, *extra: str):
        self.binary, self.data_dir, self.log, self.extra = binary, data_dir, log, extra
        self.process: subprocess.Popen | None = None
        self.port = 0

    def start(self) -> tuple[float, int]:
        """Starts it; returns (wall seconds until its running line, its elapsed_ms)."""
        listen = f"127.0.0.1:{self.port}"
        with open(self.log, "a") as log:
            log.write(f"--- start {time.strftime('%H:%M:%S')}\n")
        started = time.monotonic()
        self.process = subprocess.Popen(
            [str(self.binary), "serve", "--kafka-listen", listen, "--data-dir", str(self.data_dir),
             "--mqtt-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", *self.extra],
            stdout=subprocess.DEVNULL, stderr=open(self.log, "a"),
        )
        STARTED.append(self.process)
        deadline = started + START_TIMEOUT_S
        while time.monotonic() < deadline:
            for line in self.log.read_text().splitlines()[::-1]:
                if line.startswith("--- start"):
                    break
                if match := RUNNING.search(line):
                    self.port = int(match[1])
                    return time.monotonic() - started, int(match[2])
            if self.process.poll() is not None:
                raise RuntimeError(f"serve exited with {self.process.returncode}; see {self.log}")
            time.sleep(0.05)
        raise RuntimeError(f"serve did not start in {START_TIMEOUT_S}s; see {self.log}")

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> float:
        """SIGTERM and wait; returns the seconds it took."""
        assert self.process is not None
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=300)
        if code != 0:
            raise RuntimeError(f"serve exited with {code}; see {self.log}")
        return time.monotonic() - started

    def restart(self, what: str) -> None:
        stop_s = self.stop()
        wall_s, elapsed_ms = self.start()
        say(f"  restart {what}: recovery {elapsed_ms} ms (serve's elapsed_ms), {wall_s:.2f} s to the running line; "
            f"stop took {stop_s:.2f} s; data dir {dir_bytes(self.data_dir) / 1e6:.1f} MB")

    def log_lines(self) -> int:
        return len(self.log.read_text().splitlines())

    def log_count(self, needle: str, since: int = 0) -> int:
        return sum(needle in line for line in self.log.read_text().splitlines()[since:])

    def tidewater(self, *args: str) -> str:
        return subprocess.run([str(self.binary), *args, "--brokers", self.bootstrap], check=True,
                              capture_output=True, text=True, timeout=120).stdout


def dir_bytes(path: Path) -> int:
    return sum(entry.stat().st_size for entry in path.rglob("*") if entry.is_file())


def table_bytes(data_dir: Path, topic: str) -> int:
    return sum(dir_bytes(path) for path in data_dir.glob(f"{topic}-*") if path.is_dir())


def alter(bootstrap: str, topic: str, configs: dict[str, str]) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry

    resource = ConfigResource("topic", topic, incremental_configs=[
        ConfigEntry(name, value, incremental_operation=AlterConfigOpType.SET) for name, value in configs.items()
    ])
    for future in admin.incremental_alter_configs([resource]).values():
        future.result(timeout=60)


def read_table(bootstrap: str, topic: str) -> list[tuple[bytes, bytes | None]]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-reader", "enable.auto.commit": False,
                         "enable.partition.eof": True})
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        records = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None:
                continue
            if message.error() is not None:
                return records
            records.append((message.key(), message.value()))
        raise RuntimeError(f"no end of {topic}")
    finally:
        consumer.close()


def table_producer(bootstrap: str) -> Producer:
    # Tables take no compressed batches; idempotent and acks=all as Tidewater's own writers.
    return Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "compression.type": "none",
                     "linger.ms": 20, "queue.buffering.max.messages": 200_000})


def sizes(data_dir: Path) -> dict[str, int]:
    return {table: table_bytes(data_dir, table) for table in TABLES}


def print_sizes(before: dict[str, int], after: dict[str, int], live: dict[str, int]) -> None:
    say(f"  {'table':34} {'end of the run':>16} {'after cleaning':>15} {'live keys':>10}")
    for table in TABLES:
        say(f"  {table:34} {before[table]:>16,} {after[table]:>15,} {live.get(table, 0):>10,}")


# --- Stage 1: tables ------------------------------------------------------------------------------


def stage_tables(binary: Path, work: Path) -> None:
    say(f"stage 1: tables, {BENCH_SECS} s of churn")
    server = Server(binary, work / "tables-data", work / "tables.log", "--triggers", "false")
    server.start()
    bootstrap = server.bootstrap
    # Templates from the real commands.
    server.tidewater("device", "add", "template-device")
    server.tidewater("topic", "create", "bench-quiet")
    server.tidewater("trigger", "create", "template-trigger", "--topic", "bench-quiet", "--webhook", "http://127.0.0.1:1/x")
    device_template = dict(read_table(bootstrap, "_tidewater_devices"))[b"template-device"].decode()
    trigger_template = dict(read_table(bootstrap, "_tidewater_triggers"))[b"template-trigger"].decode()
    # The query job: counts events per second; checkpoints every second while events arrive.
    server.tidewater("topic", "create", "bench-events")
    query = work / "bench.sql"
    query.write_text("SELECT COUNT(*) AS n INTO [bench-counts] FROM [bench-events] GROUP BY TumblingWindow(second, 1)")
    server.tidewater("query", "create", "bench-job", "--file", str(query), "--checkpoint-interval-ms", "1000")

    stop = threading.Event()
    counters = {"device records": 0, "device rounds": 0, "trigger updates": 0, "events": 0}

    def devices() -> None:
        producer = table_producer(bootstrap)
        # Pace the rounds over the run: the ten rounds, then nothing more.
        for round_idx in range(DEVICE_ROUNDS):
            for index in range(N_DEVICES):
                name = f"device-{index:05}"
                if round_idx > 0:
                    producer.produce("_tidewater_devices", key=name.encode(), value=None)
                value = device_template.replace("template-device", name)
                producer.produce("_tidewater_devices", key=name.encode(), value=value.encode())
                counters["device records"] += 1 + (round_idx > 0)
                producer.poll(0)
            producer.flush(60)
            counters["device rounds"] += 1
            if stop.wait(BENCH_SECS / DEVICE_ROUNDS * 0.9):
                break
        producer.flush(60)

    def triggers() -> None:
        producer = table_producer(bootstrap)
        version = 0
        while not stop.is_set():
            for index in range(N_TRIGGERS):
                name = f"trigger-{index:03}"
                value = trigger_template.replace("template-trigger", name).replace("/x", f"/v{version}")
                producer.produce("_tidewater_triggers", key=name.encode(), value=value.encode())
                counters["trigger updates"] += 1
            producer.flush(60)
            version += 1
            stop.wait(0.5)

    def events() -> None:
        producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 50})
        while not stop.is_set():
            now_ms = int(time.time() * 1000)
            producer.produce("bench-events", value=json.dumps({"at": now_ms}).encode(), timestamp=now_ms)
            counters["events"] += 1
            producer.poll(0)
            stop.wait(0.02)
        producer.flush(60)

    threads = [threading.Thread(target=target, daemon=True) for target in (devices, triggers, events)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    while time.monotonic() - started < BENCH_SECS:
        time.sleep(min(30, BENCH_SECS - (time.monotonic() - started)))
        say(f"  {time.monotonic() - started:.0f} s: {counters}")
    stop.set()
    for thread in threads:
        thread.join(timeout=300)
    say(f"  written: {counters}; query checkpoints: {describe_checkpoints(server)}")

    # The tables as the run left them: cleaned during it only where a segment reached segment.ms
    # (ten minutes for a table) and rolled.
    during = {table: server.log_count(f'cleaned partition partition="{table}-0"') for table in TABLES}
    say(f"  the cleaner's passes during the run: {during}")
    before = sizes(server.data_dir)
    server.restart("at the end of the run")
    say(f"  reading the tables as a component does at start, before cleaning: {time_table_reads(server)}")
    # Shorten time with topic configs: roll now, clean now, drop tombstones at the next pass.
    mark = server.log_lines()
    for table in TABLES:
        alter(bootstrap, table, CLEAN_NOW)
    # A pass per table with records (the last round's tombstones are all superseded by a newer
    # record of their key, so one pass leaves only live keys), and a few seconds for more.
    with_records = [table for table in TABLES if before[table] > 0]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        passes = {table: server.log_count(f'cleaned partition partition="{table}-0"', since=mark) for table in with_records}
        if all(count >= 1 for count in passes.values()):
            break
        time.sleep(1)
    time.sleep(5)
    passes = {table: server.log_count(f'cleaned partition partition="{table}-0"', since=mark) for table in with_records}
    say(f"  cleaning passes per table: {passes}")
    after = sizes(server.data_dir)
    live = {table: sum(value is not None for value in dict(read_table(bootstrap, table)).values()) for table in TABLES}
    print_sizes(before, after, live)
    server.restart("after cleaning")
    say(f"  reading the tables as a component does at start, after cleaning: {time_table_reads(server)}")
    server.stop()


def time_table_reads(server: Server) -> str:
    """Wall time of `device list` and `trigger list`, each of which reads its whole table from the
    start to the partition's end, as the gateway and the trigger runners do when they start."""
    timings = []
    for command in (("device", "list"), ("trigger", "list")):
        started = time.monotonic()
        lines = len(server.tidewater(*command).splitlines())
        timings.append(f"`{' '.join(command)}` {time.monotonic() - started:.2f} s ({lines} lines)")
    return ", ".join(timings)


def describe_checkpoints(server: Server) -> str:
    try:
        return server.tidewater("query", "list").strip().replace("\n", "; ")
    except subprocess.CalledProcessError as error:
        return f"(query list failed: {error.stderr.strip()})"


# --- Stage 2: committed offsets -------------------------------------------------------------------


def stage_offsets(binary: Path, work: Path) -> None:
    n_partitions = OFFSET_TOPICS * OFFSET_PARTITIONS_PER_TOPIC
    rounds = max(1, N_OFFSETS // (OFFSET_GROUPS * n_partitions))
    say(f"stage 2: {rounds * OFFSET_GROUPS * n_partitions:,} committed offsets "
        f"({OFFSET_GROUPS} groups x {n_partitions} partitions x {rounds} commits each)")
    server = Server(binary, work / "offsets-data", work / "offsets.log")
    server.start()
    admin = AdminClient({"bootstrap.servers": server.bootstrap})
    topics = [f"bench-offsets-{index}" for index in range(OFFSET_TOPICS)]
    for future in admin.create_topics([NewTopic(topic, OFFSET_PARTITIONS_PER_TOPIC, 1) for topic in topics]).values():
        future.result(timeout=120)
    del admin
    partitions = [TopicPartition(topic, partition) for topic in topics for partition in range(OFFSET_PARTITIONS_PER_TOPIC)]
    consumers = [Consumer({"bootstrap.servers": server.bootstrap, "group.id": f"bench-group-{index}",
                           "enable.auto.commit": False}) for index in range(OFFSET_GROUPS)]
    started = time.monotonic()
    committed = 0
    for round_idx in range(rounds):
        for consumer in consumers:
            consumer.commit(offsets=[TopicPartition(tp.topic, tp.partition, round_idx + 1) for tp in partitions],
                            asynchronous=False)
            committed += n_partitions
        if round_idx % 10 == 9:
            elapsed = time.monotonic() - started
            say(f"  {committed:,} committed in {elapsed:.0f} s ({committed / elapsed:,.0f}/s)")
    elapsed = time.monotonic() - started
    say(f"  {committed:,} offsets committed in {elapsed:.0f} s ({committed / elapsed:,.0f}/s)")
    for consumer in consumers:
        consumer.close()
    journal_passes = server.log_count("cleaned log dir=")
    say(f"  journals on disk: {journal_bytes(server.data_dir):,} bytes; the cleaner's passes so far: {journal_passes}")
    server.restart(f"with {committed:,} committed offsets")
    # Give the cleaner a minute more (it cleans once the journal's dirty part is half of it).
    mark = server.log_lines()
    deadline = time.monotonic() + 60
    while server.log_count("cleaned log dir=", since=mark) == 0 and time.monotonic() < deadline:
        time.sleep(1)
    say(f"  journals on disk a minute later: {journal_bytes(server.data_dir):,} bytes")
    server.restart("again")
    server.stop()


def journal_bytes(data_dir: Path) -> int:
    """The bytes of the internal journals (committed offsets, transactions): the dot-directories
    of the data directory."""
    return sum(dir_bytes(path) for path in data_dir.iterdir() if path.is_dir() and path.name.startswith("."))


# --- Stage 3: producers ---------------------------------------------------------------------------


def stage_producers(binary: Path, work: Path) -> None:
    from kafka import KafkaProducer

    say(f"stage 3: {N_PRODUCERS} idempotent producers per partition ({PRODUCER_PARTITIONS} partitions)")
    server = Server(binary, work / "producers-data", work / "producers.log")
    server.start()
    admin = AdminClient({"bootstrap.servers": server.bootstrap})
    topic = "bench-producers"
    admin.create_topics([NewTopic(topic, PRODUCER_PARTITIONS, 1, config={"segment.bytes": "16384"})])[topic].result(timeout=60)
    del admin
    started = time.monotonic()
    for index in range(N_PRODUCERS):
        producer = KafkaProducer(bootstrap_servers=server.bootstrap, enable_idempotence=True, acks="all", linger_ms=0)
        for partition in range(PRODUCER_PARTITIONS):
            producer.send(topic, value=f"producer {index}".encode(), partition=partition)
        producer.flush(timeout=60)
        producer.close(timeout=10)
        if index % 200 == 199:
            say(f"  {index + 1} producers in {time.monotonic() - started:.0f} s")
    segments = sum(1 for _ in (server.data_dir).glob(f"{topic}-*/*.log"))
    snapshots = sum(1 for _ in (server.data_dir).glob(f"{topic}-*/**/*.snapshot"))
    say(f"  {segments} segments, {snapshots} producer snapshot files")
    server.restart(f"with {N_PRODUCERS} producers per partition")
    # The same data directory without its snapshots: recovery reads every batch header of every
    # partition, as it does once for a data directory written before snapshots existed.
    server.stop()
    for snapshot in server.data_dir.glob(f"{topic}-*/**/*.snapshot"):
        snapshot.unlink()
    wall_s, elapsed_ms = server.start()
    say(f"  restart with the producer snapshots removed: recovery {elapsed_ms} ms (serve's elapsed_ms), "
        f"{wall_s:.2f} s to the running line")
    server.stop()


def main(binary: str, work: str) -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    stages = os.environ.get("TIDEWATER_BENCH_STAGES", "tables,offsets,producers").split(",")
    try:
        for stage in stages:
            {"tables": stage_tables, "offsets": stage_offsets, "producers": stage_producers}[stage](Path(binary), Path(work))
    finally:
        for process in STARTED:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=30)


if __name__ == "__main__":
    main(*sys.argv[1:])
