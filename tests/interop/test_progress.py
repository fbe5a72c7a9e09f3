"""Progress of long CLI work when stderr is not a terminal: plain lines (every
TIDEWATER_PROGRESS_INTERVAL_MS; 5 s by default, 0 here so that short work shows them too) for
`produce` from a file, `log verify`, `query run` catching up with its inputs and `topic
delete-records` over many partitions."""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time

from confluent_kafka import Producer

from conftest import tidewater_binary
from trigger_support import tidewater

EVERY_TIME = {"TIDEWATER_PROGRESS_INTERVAL_MS": "0"}


def environment() -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("TIDEWATER_")}
    env.update(EVERY_TIME)
    return env


def run(*args: str, stdin=None, input_text: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(tidewater_binary()), *args], stdin=stdin, input=input_text, capture_output=True,
                          text=True, timeout=120, env=environment())


def test_produce_from_a_file_reports_the_bytes_read_of_the_files_size(broker, topic_name, tmp_path):
    records = tmp_path / "records.jsonl"
    records.write_text("".join(f'{{"n": {index}}}\n' for index in range(2000)))
    size = records.stat().st_size
    with records.open() as stdin:
        completed = run("produce", "--topic", topic_name, "--brokers", broker.bootstrap, stdin=stdin)
    assert completed.returncode == 0, completed.stderr
    lines = re.findall(rf"producing to {topic_name}: (\d+) of (\d+) bytes \((\d+)%\)", completed.stderr)
    assert lines, completed.stderr
    assert {int(total) for _, total, _ in lines} == {size}
    done = [int(read) for read, _, _ in lines]
    assert done == sorted(done) and done[-1] == size, done[-5:]
    assert lines[-1][2] == "100"
    # From a pipe there is no size to go by: no progress.
    piped = run("produce", "--topic", topic_name, "--brokers", broker.bootstrap, input_text='{"n": -1}\n')
    assert piped.returncode == 0 and "producing to" not in piped.stderr, piped.stderr


def test_log_verify_reports_the_bytes_verified(broker_factory, topic_name):
    broker = broker_factory("--segment-bytes", "65536", "--mqtt-listen", "none", "--http-listen", "none")
    # Small batches, so that the 64 KiB segments roll several times.
    producer = Producer({"bootstrap.servers": broker.bootstrap, "batch.num.messages": 50})
    for index in range(3000):
        producer.produce(topic_name, b"v" * 100 + str(index).encode(), partition=0)
    assert producer.flush(30) == 0
    assert broker.stop() == 0
    completed = run("log", "verify", str(broker.data_dir / f"{topic_name}-0"))
    assert completed.returncode == 0, completed.stderr
    lines = re.findall(r"verifying \S+: (\d+) of (\d+) bytes", completed.stderr)
    # One line per closed segment (more than one: 300 KB in 64 KiB segments), then the total.
    assert len(lines) >= 3, completed.stderr
    total = int(lines[-1][1])
    assert int(lines[-1][0]) == total and f"{total} bytes" in completed.stdout, (lines[-1], completed.stdout)


def test_query_run_shows_the_records_left_while_it_catches_up(broker, topic_name, tmp_path):
    source, sink = f"{topic_name}-in", f"{topic_name}-out"
    tidewater("topic", "create", source, "--partitions", "1", bootstrap=broker.bootstrap)
    producer = Producer({"bootstrap.servers": broker.bootstrap})
    for index in range(500):
        producer.produce(source, f'{{"deviceId": "d", "n": {index}}}'.encode())
    assert producer.flush(30) == 0
    query = tmp_path / "catch.sql"
    query.write_text(f"SELECT deviceId, n INTO [{sink}] FROM [{source}]\n")
    name = f"progress-{topic_name[-8:]}"
    command = [str(tidewater_binary()), "query", "run", str(query), "--name", name, "--brokers", broker.bootstrap,
               "--admin-listen", "none"]
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True, env=environment())
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(process.stderr), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any("caught up with its inputs" in line for line in lines):
            time.sleep(0.1)
    finally:
        process.terminate()
        process.wait(timeout=60)
        reader.join(10)
    progress = [line.strip() for line in lines if line.startswith(f"query job {name}:")]
    assert f"query job {name}: catching up: 500 records left to read" in progress, "".join(lines[-30:])
    assert progress[-1] == f"query job {name}: caught up with its inputs", progress


def test_delete_records_over_every_partition_reports_the_partitions_done(broker, topic_name):
    tidewater("topic", "create", topic_name, "--partitions", "12", bootstrap=broker.bootstrap)
    producer = Producer({"bootstrap.servers": broker.bootstrap})
    for index in range(120):
        producer.produce(topic_name, str(index).encode(), partition=index % 12)
    assert producer.flush(30) == 0
    completed = run("topic", "delete-records", topic_name, "--all-partitions", "--before", "end",
                    "--brokers", broker.bootstrap)
    assert completed.returncode == 0, completed.stderr
    lines = re.findall(rf"deleting records of {topic_name}: (\d+) of 12 partitions", completed.stderr)
    assert [int(done) for done in lines] == list(range(1, 13)), completed.stderr
    deleted = re.findall(rf"topic {topic_name} partition (\d+): records before offset (\d+) deleted", completed.stdout)
    assert sorted((int(partition), int(offset)) for partition, offset in deleted) == [(p, 10) for p in range(12)]
    # --all-partitions and --partition together are a usage error.
    both = run("topic", "delete-records", topic_name, "--all-partitions", "-p", "0", "--before", "end",
               "--brokers", broker.bootstrap)
    assert both.returncode == 2 and "cannot be used with" in both.stderr, both.stderr
