"""What a user's query job gets, end to end: the driver behind scripts/bench-query-e2e (which
builds the release binary and picks the Python environment).

  bench_query_e2e.py BINARY WORK_DIR

One `tidewater serve` on a fresh data directory (WORK_DIR, through bench_query_latency's
`start_server`). TIDEWATER_BENCH_EVENTS (1,000,000) JSON readings of 100 devices (`deviceId`,
`temperature`, `ts` a millisecond apart) are written to a JSON-lines file and produced, keyed by
device, into a topic of 1 partition and one of 3. The query is a per-device tumbling average
over event time, the IoT job the issue names:

  SELECT deviceId, AVG(temperature) AS avg INTO out FROM readings TIMESTAMP BY ts
  GROUP BY deviceId, TumblingWindow(second, 10)

Each round measures, side by side:
- engine: `taskset -c 0 tidewater query test` over the file, output to /dev/null: events per
  CPU-second of that process (user + system, from wait4), parsing included. The ceiling a job
  on one core can reach.
- consume: `tidewater bench consume` of each topic, records/s: what the broker serves.
- job: `tidewater query run` over each topic (exactly once, the default), started when the topic
  is full; events/s from its start until its /metrics count every reading (so the job's start,
  connecting and its first fetch are included), the job's CPU seconds over that span (from
  /proc), and how busy that kept its core. For 3 partitions also with `--parallel` (one
  instance, one engine job per partition number).
Then the medians, and the job's events/s as a share of the engine's events per CPU-second,
against the goal of 80%. Figures are printed, nothing is asserted.
"""

from __future__ import annotations

import json
import os
import re
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

from confluent_kafka import Producer

from bench_query_latency import STARTED, cpu_seconds, start_server, stop_started

N_EVENTS = int(os.environ.get("TIDEWATER_BENCH_EVENTS", "1000000"))
ROUNDS = int(os.environ.get("TIDEWATER_BENCH_ROUNDS", "3"))
N_DEVICES = 100
JOB_TIMEOUT_S = 600
GOAL = 0.8
QUERY = ("SELECT deviceId, AVG(temperature) AS avg INTO [{output}] FROM [{readings}] TIMESTAMP BY ts\n"
         "GROUP BY deviceId, TumblingWindow(second, 10)\n")
ADMIN_LISTENING = re.compile(r"admin=(127\.0\.0\.1:\d+)")
EVENTS_READ = re.compile(r"^tidewater_query_events_total\{[^}]*\} (\S+)$", re.M)


def say(line: str) -> None:
    print(line, flush=True)


def reading(seq: int) -> bytes:
    return json.dumps({"deviceId": f"d{seq % N_DEVICES}", "temperature": 20 + seq % 17,
                       "ts": 1_700_000_000_000 + seq}).encode()


def write_readings(path: Path) -> None:
    with path.open("wb") as file:
        for seq in range(N_EVENTS):
            file.write(reading(seq) + b"\n")


def fill_topic(binary: Path, bootstrap: str, partitions: int) -> str:
    topic = f"readings-{partitions}p-{uuid.uuid4().hex[:6]}"
    subprocess.run([str(binary), "topic", "create", topic, "--partitions", str(partitions),
                    "--brokers", bootstrap], check=True, capture_output=True, timeout=60)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "batch.size": 1_000_000,
                         "enable.idempotence": True})
    for seq in range(N_EVENTS):
        while True:
            try:
                producer.produce(topic, key=f"d{seq % N_DEVICES}".encode(), value=reading(seq))
                break
            except BufferError:
                producer.poll(0.05)
    if producer.flush(120) != 0:
        raise RuntimeError(f"{topic}: the readings were not all acknowledged")
    return topic


def engine_rate(binary: Path, work: Path, readings: Path) -> float:
    """`query test` over the file on one core: events per CPU-second."""
    query = work / "engine.asaql"
    query.write_text(QUERY.format(output="out", readings="readings"))
    process = subprocess.Popen(["taskset", "-c", "0", str(binary), "query", "test", str(query),
                                "--input", str(readings), "--log-level", "warn"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    STARTED.append(process)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"query test exited with {process.returncode}: {process.stderr.read().decode()[-2000:]}")
    return N_EVENTS / (usage.ru_utime + usage.ru_stime)


def consume_rate(binary: Path, bootstrap: str, topic: str) -> float:
    result = subprocess.run([str(binary), "bench", "consume", "--topic", topic, "--brokers", bootstrap, "--kv"],
                            check=True, capture_output=True, text=True, timeout=300)
    return float(re.search(r"^msgs_per_s=(\S+)$", result.stdout, re.M)[1])


def job_rate(binary: Path, work: Path, bootstrap: str, topic: str, parallel: bool) -> tuple[float, float]:
    """(events/s from the job's start until it has read every reading, its CPU seconds then)."""
    output = f"out-{uuid.uuid4().hex[:6]}"
    subprocess.run([str(binary), "topic", "create", output, "--brokers", bootstrap],
                   check=True, capture_output=True, timeout=60)
    query = work / f"job-{output}.asaql"
    query.write_text(QUERY.format(output=output, readings=topic))
    log = work / f"job-{output}.log"
    started = time.monotonic()
    job = subprocess.Popen(
        [str(binary), "query", "run", str(query), "--brokers", bootstrap, "--admin-listen", "127.0.0.1:0",
         *(["--parallel"] if parallel else [])],
        stdout=subprocess.DEVNULL, stderr=open(log, "a"), stdin=subprocess.DEVNULL,
    )
    STARTED.append(job)
    try:
        metrics_url = None
        events = 0.0
        while events < N_EVENTS:
            if time.monotonic() - started > JOB_TIMEOUT_S:
                raise RuntimeError(f"the job read {events:.0f} of {N_EVENTS} readings in {JOB_TIMEOUT_S}s; see {log}")
            if job.poll() is not None:
                raise RuntimeError(f"the job exited with {job.returncode}; see {log}")
            time.sleep(0.02)
            if metrics_url is None:
                if match := ADMIN_LISTENING.search(log.read_text()):
                    metrics_url = f"http://{match[1]}/metrics"
                continue
            try:
                text = urllib.request.urlopen(metrics_url, timeout=2).read().decode()
            except OSError:
                continue
            events = sum(float(value) for value in EVENTS_READ.findall(text))
        elapsed = time.monotonic() - started
        return N_EVENTS / elapsed, cpu_seconds(job.pid)
    finally:
        job.send_signal(signal.SIGTERM)
        job.wait(timeout=60)


def main() -> None:
    binary, work = Path(sys.argv[1]), Path(sys.argv[2])
    bootstrap = start_server(binary, work)
    readings = work / "readings.jsonl"
    write_readings(readings)
    topics = {partitions: fill_topic(binary, bootstrap, partitions) for partitions in (1, 3)}
    rows = [("1 partition", 1, False), ("3 partitions", 3, False), ("3 partitions, --parallel", 3, True)]
    engine, consume = [], {partitions: [] for partitions in topics}
    jobs: dict[str, list[tuple[float, float, float]]] = {label: [] for label, _, _ in rows}
    say(f"{N_EVENTS} JSON readings of {N_DEVICES} devices; per-device tumbling average, exactly once; "
        f"{ROUNDS} rounds")
    try:
        for round_no in range(1, ROUNDS + 1):
            engine.append(engine_rate(binary, work, readings))
            for partitions, topic in topics.items():
                consume[partitions].append(consume_rate(binary, bootstrap, topic))
            for label, partitions, parallel in rows:
                rate, cpu = job_rate(binary, work, bootstrap, topics[partitions], parallel)
                jobs[label].append((rate, cpu, cpu / (N_EVENTS / rate)))
            say(f"round {round_no}: engine {engine[-1]:,.0f} events/CPU-s; "
                + "; ".join(f"{label} {jobs[label][-1][0]:,.0f}/s" for label, _, _ in rows))
        engine_median = statistics.median(engine)
        say(f"\nengine alone (query test, one core): {engine_median:,.0f} events per CPU-second")
        for partitions in topics:
            say(f"broker consume, {partitions} partition(s): {statistics.median(consume[partitions]):,.0f} records/s")
        say(f"\n{'query run':<26} {'events/s':>10} {'job CPU s':>10} {'core busy':>10} {'of engine':>10} {'goal 80%':>9}")
        for label, _, _ in rows:
            rate = statistics.median(sample[0] for sample in jobs[label])
            cpu = statistics.median(sample[1] for sample in jobs[label])
            busy = statistics.median(sample[2] for sample in jobs[label])
            share = rate / engine_median
            say(f"{label:<26} {rate:>10,.0f} {cpu:>10.2f} {busy:>10.0%} {share:>10.0%} "
                f"{'met' if share >= GOAL else 'not met':>9}")
    finally:
        stop_started()


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    main()
