"""Tidewater against Apache Flink, side by side on one core: the driver behind scripts/bench-flink
(which installs PyFlink and a JDK, builds the release binary and writes the events).

  bench_flink.py run --tidewater BIN --work DIR --events N --rounds R [--only TEXT]
  bench_flink.py flink --table bid|telemetry --input FILE --small-input FILE --sql-file FILE
                       --result FILE [--verify-dir DIR]

`run` is the benchmark: for each query and round it starts one Flink process (`flink`, below) and
one `tidewater query test`, both under `taskset -c 0`, over the same JSON-lines file, and prints
one table. `flink` runs one query in one PyFlink process (its own JVM) several times and
writes what each run cost; it is only ever started by `run`.

What is measured, per run: CPU seconds (user + system) and wall seconds.
- Tidewater: the whole `tidewater query test` process, from exec to exit (os.wait4's rusage):
  reading the file, parsing every line into a serde_json::Value, compiling the query, the engine,
  and writing the rows (to /dev/null).
- Flink: the JVM's CPU (from /proc/PID/stat, every thread: task, GC, JIT compiler, the
  mini-cluster's own) from just before the query is planned to the end of the job, plus the
  Python driver's own CPU over the same span (it only waits). One JVM runs the query three times:
  "cold" (planning, code generation and the JIT's warm-up in it), "warm" (the same again), and
  over the first 20,000 events only (1% of the events if that is fewer): what a job costs besides its events,
  since each job starts and stops a local mini-cluster, is planned and has its code generated.
  The "Flink" column, the one the ratio uses, is the warm job less that one: the rate of a
  long-running job, Flink's best figure. The JVM's start (about 4 CPU seconds) is in none.
Events per CPU-second is events per second of one core, and is barely moved by other processes
sharing the machine (their time is not ours); wall figures are, and are printed for reference.
Each figure is the median over the rounds.

Output rows: a verification run of each engine (untimed: Flink's fourth job in round 1's JVM, to
a filesystem JSON sink; Tidewater once more, to a file) counts the rows, and for queries whose
output is small compares them as multisets (times as epoch milliseconds, numbers to 9 significant
digits). A difference is printed as a MISMATCH line and in the table, never hidden.

Semantics, made equal where the engines differ (so that the rows can be compared):
- Windows: Tidewater's are (start, end], as Stream Analytics'; Flink's [start, end). With
  millisecond event times, (0, 10 s] is [1 ms, 10 s + 1 ms), so Flink's windows get an offset of
  1 ms (the window TVFs' fourth argument). Flink's window_time is then Tidewater's window end.
- MATCH_RECOGNIZE: Tidewater's LIMIT DURATION(second, 10) is inclusive (last row at most 10 s
  after the first), Flink's WITHIN is exclusive, so Flink's is WITHIN INTERVAL '10.001' SECOND.
- Watermarks: the events are in event-time order, about 10 to a millisecond. Tidewater's
  watermark is the newest event time and its close boundary strict: an event at the watermark
  is on time. In Flink a row at the watermark is late (dropped by windows and MATCH_RECOGNIZE),
  so its watermark is the newest event time less 1 ms, Flink's documented form for ascending
  timestamps (`WATERMARK FOR t AS t - INTERVAL '0.001' SECOND`).
"""

from __future__ import annotations

import argparse
import collections
import datetime
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

# Each query in both dialects. Tidewater's are the text of crates/sql/benches/nexmark.rs, which
# measures the engine alone (events pre-parsed); `compare` says whether the rows are compared
# ("rows") or only counted ("count", for the queries that echo every event).
OFFSET = "INTERVAL '0.001' SECOND"
QUERIES = [
    {
        "name": "q0 pass-through",
        "table": "bid",
        "compare": "count",
        "tidewater": "SELECT * INTO out FROM bid TIMESTAMP BY dateTime",
        "flink": "SELECT * FROM bid",
    },
    {
        "name": "q1 currency",
        "table": "bid",
        "compare": "count",
        "tidewater": "SELECT auction, bidder, 0.908 * price AS price, dateTime INTO out "
        "FROM bid TIMESTAMP BY dateTime",
        "flink": "SELECT auction, bidder, 0.908 * price AS price, `dateTime` FROM bid",
    },
    {
        "name": "q2 selection",
        "table": "bid",
        "compare": "rows",
        "tidewater": "SELECT auction, price INTO out FROM bid TIMESTAMP BY dateTime "
        "WHERE auction % 123 = 0",
        "flink": "SELECT auction, price FROM bid WHERE MOD(auction, 123) = 0",
    },
    {
        # Bids per auction in 10 s windows hopping by 2 s; the auctions with the window's most.
        "name": "q5 hot items",
        "table": "bid",
        "compare": "rows",
        "tidewater": "WITH AuctionBids AS ( "
        "SELECT auction, COUNT(*) AS num FROM bid TIMESTAMP BY dateTime "
        "GROUP BY auction, HoppingWindow(second, 10, 2)), "
        "MaxBids AS ( "
        "SELECT MAX(num) AS maxn FROM AuctionBids GROUP BY TumblingWindow(second, 2)) "
        "SELECT a.auction, a.num INTO out "
        "FROM AuctionBids a JOIN MaxBids m "
        "ON DATEDIFF(millisecond, a, m) BETWEEN 0 AND 0 AND a.num >= m.maxn",
        # Nexmark's own q5 (window TVF form), with the 1 ms offset.
        "flink": f"""
SELECT AuctionBids.auction, AuctionBids.num
FROM (
  SELECT auction, COUNT(*) AS num, window_start AS starttime, window_end AS endtime
  FROM TABLE(HOP(TABLE bid, DESCRIPTOR(`dateTime`), INTERVAL '2' SECOND, INTERVAL '10' SECOND, {OFFSET}))
  GROUP BY auction, window_start, window_end
) AS AuctionBids
JOIN (
  SELECT MAX(CountBids.num) AS maxn, CountBids.starttime, CountBids.endtime
  FROM (
    SELECT COUNT(*) AS num, window_start AS starttime, window_end AS endtime
    FROM TABLE(HOP(TABLE bid, DESCRIPTOR(`dateTime`), INTERVAL '2' SECOND, INTERVAL '10' SECOND, {OFFSET}))
    GROUP BY auction, window_start, window_end
  ) AS CountBids
  GROUP BY CountBids.starttime, CountBids.endtime
) AS MaxBids
ON AuctionBids.starttime = MaxBids.starttime AND AuctionBids.endtime = MaxBids.endtime
   AND AuctionBids.num >= MaxBids.maxn""",
    },
    {
        # The bids whose price is the highest of their 10 s tumbling window.
        "name": "q7 highest bid",
        "table": "bid",
        "compare": "rows",
        "tidewater": "WITH MaxPrice AS ( "
        "SELECT MAX(price) AS maxprice FROM bid TIMESTAMP BY dateTime "
        "GROUP BY TumblingWindow(second, 10)) "
        "SELECT b.auction, b.price, b.bidder, b.dateTime INTO out "
        "FROM bid b TIMESTAMP BY dateTime JOIN MaxPrice m "
        "ON DATEDIFF(millisecond, b, m) BETWEEN 0 AND 10000 AND b.price = m.maxprice",
        # Nexmark's own q7 (an interval join of the bids with the window maximum).
        "flink": f"""
SELECT B.auction, B.price, B.bidder, B.`dateTime`
FROM bid B
JOIN (
  SELECT MAX(price) AS maxprice, window_time AS `dateTime`
  FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(`dateTime`), INTERVAL '10' SECOND, {OFFSET}))
  GROUP BY window_start, window_end, window_time
) B1
ON B.price = B1.maxprice
WHERE B.`dateTime` BETWEEN B1.`dateTime` - INTERVAL '10' SECOND AND B1.`dateTime`""",
    },
    {
        # The seed's alert: 1,000 devices' average temperature over 30 s windows hopping by 10 s.
        "name": "seed hopping avg",
        "table": "telemetry",
        "compare": "rows",
        # AVG(temperature) of readings with one decimal is often exactly 70 in decimal, and the
        # engines sum in a different order (Flink per 10 s slice, then the slices), so the float
        # lands on either side of HAVING > 70: such rows are told apart from other differences.
        "threshold": ("avg_temp", 70.0),
        "tidewater": "SELECT deviceId, AVG(temperature) AS avg_temp INTO alerts "
        "FROM telemetry TIMESTAMP BY ts "
        "GROUP BY deviceId, HoppingWindow(second, 30, 10) HAVING AVG(temperature) > 70",
        "flink": f"""
SELECT deviceId, AVG(temperature) AS avg_temp
FROM TABLE(HOP(TABLE telemetry, DESCRIPTOR(ts), INTERVAL '10' SECOND, INTERVAL '30' SECOND, {OFFSET}))
GROUP BY deviceId, window_start, window_end
HAVING AVG(temperature) > 70""",
    },
    {
        # Three bids in a row on one auction, each higher than the one before, within 10 s.
        "name": "match rising bids",
        "table": "bid",
        "compare": "rows",
        "tidewater": "SELECT * INTO out FROM bid TIMESTAMP BY dateTime MATCH_RECOGNIZE ( "
        "LIMIT DURATION(second, 10) PARTITION BY auction "
        "MEASURES FIRST(A.price) AS fromPrice, LAST(C.price) AS toPrice "
        "PATTERN (A B C) DEFINE B AS B.price > A.price, C AS C.price > B.price) AS m",
        "flink": """
SELECT * FROM bid MATCH_RECOGNIZE (
  PARTITION BY auction ORDER BY `dateTime`
  MEASURES FIRST(A.price) AS fromPrice, LAST(C.price) AS toPrice
  ONE ROW PER MATCH AFTER MATCH SKIP PAST LAST ROW
  PATTERN (A B C) WITHIN INTERVAL '10.001' SECOND
  DEFINE B AS B.price > A.price, C AS C.price > B.price) AS m""",
    },
]

# The JSON-lines files as Flink tables: every field the generator writes, event time from the
# file, and the watermark Flink documents for ascending timestamps (see the module's doc).
FLINK_TABLES = {
    "bid": "`auction` BIGINT, `bidder` BIGINT, `price` BIGINT, `channel` STRING, `url` STRING, "
    "`dateTime` TIMESTAMP_LTZ(3), `extra` STRING, WATERMARK FOR `dateTime` AS `dateTime` - INTERVAL '0.001' SECOND",
    "telemetry": "`deviceId` STRING, `temperature` DOUBLE, `ts` TIMESTAMP_LTZ(3), "
    "WATERMARK FOR `ts` AS `ts` - INTERVAL '0.001' SECOND",
}
# Where the generator (cargo bench ... -- --write-jsonl DIR) puts each table's events.
INPUT_FILES = {"bid": "bids.jsonl", "telemetry": "telemetry.jsonl"}
# A Flink process (JVM start, two or three jobs over the events) may take this long.
FLINK_TIMEOUT_S = 3600
TIDEWATER_TIMEOUT_S = 1800
GOAL_RATIO = 5.0
# Events in the small file whose Flink job measures what a job costs besides its events.
SMALL_EVENTS = 20_000


def say(line: str) -> None:
    print(line, flush=True)


# ---------------------------------------------------------------------------------------------
# The Flink side: runs inside the PyFlink virtualenv, one process (one JVM) per call.


def jvm_cpu_seconds(pid: int) -> float:
    """User + system CPU of a process, every thread, from /proc (clock ticks)."""
    with open(f"/proc/{pid}/stat") as stat:
        # Fields after the command name, which is in parentheses and may hold spaces.
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def self_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def flink_main(args: argparse.Namespace) -> None:
    from pyflink.common import Configuration
    from pyflink.java_gateway import get_gateway
    from pyflink.table import EnvironmentSettings, Schema, TableDescriptor, TableEnvironment

    config = Configuration()
    config.set_string("parallelism.default", "1")
    config.set_string("table.local-time-zone", "UTC")
    # As in the Nexmark benchmark's own Flink configuration.
    config.set_string("pipeline.object-reuse", "true")
    settings = EnvironmentSettings.new_instance().in_streaming_mode().with_configuration(config).build()

    def new_environment(input_file: str):
        """A table environment (its own catalog) in the same JVM, the table reading input_file."""
        t_env = TableEnvironment.create(settings)
        t_env.execute_sql(
            f"CREATE TABLE {args.table} ({FLINK_TABLES[args.table]}) WITH ("
            f"'connector' = 'filesystem', 'path' = '{input_file}', 'format' = 'json', "
            "'json.timestamp-format.standard' = 'ISO-8601')"
        )
        return t_env

    full = new_environment(args.input)
    small = new_environment(args.small_input)
    jvm_pid = get_gateway().jvm.ProcessHandle.current().pid()
    startup_cpu = jvm_cpu_seconds(jvm_pid)
    sql = Path(args.sql_file).read_text()
    # Cold and warm over the whole file, then over the small file (the cost of a job that does
    # almost nothing: the mini-cluster's start and stop, planning, code generation), then the
    # verification job to files.
    plan = [("cold", full, "blackhole"), ("warm", full, "blackhole"), ("small", small, "blackhole")]
    if args.verify_dir:
        plan.append(("verify", full, "filesystem"))
    runs = {}
    for run_idx, (label, t_env, connector) in enumerate(plan):
        cpu_before = jvm_cpu_seconds(jvm_pid) + self_cpu_seconds()
        wall_before = time.monotonic()
        table = t_env.sql_query(sql)
        schema = Schema.new_builder().from_row_data_type(table.get_schema().to_row_data_type()).build()
        descriptor = TableDescriptor.for_connector(connector).schema(schema)
        if connector == "filesystem":
            descriptor = descriptor.option("path", args.verify_dir).format("json")
        sink_name = f"sink_{run_idx}"
        t_env.create_temporary_table(sink_name, descriptor.build())
        table.execute_insert(sink_name).wait()
        cpu = jvm_cpu_seconds(jvm_pid) + self_cpu_seconds() - cpu_before
        runs[label] = {"cpu_s": cpu, "wall_s": time.monotonic() - wall_before}
    with open(f"/proc/{jvm_pid}/status") as status:
        peak_rss_kib = next(
            (int(line.split()[1]) for line in status if line.startswith("VmHWM:")), 0
        )
    Path(args.result).write_text(
        json.dumps({"startup_cpu_s": startup_cpu, "runs": runs, "peak_rss_kib": peak_rss_kib})
    )


# ---------------------------------------------------------------------------------------------
# The benchmark: runs the two engines and prints the table.

TIMESTAMP = re.compile(r"^(\d{4}-\d\d-\d\d)[T ](\d\d:\d\d:\d\d(?:\.\d+)?)Z?$")


def normalize(value):
    """A value as both engines' rows can be compared: times to epoch ms, numbers to 9 digits."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (int, float)):
        return float(f"{value:.9g}")
    if isinstance(value, str):
        match = TIMESTAMP.match(value)
        if match:
            date, clock = match.groups()
            whole, _, fraction = clock.partition(".")
            moment = datetime.datetime.fromisoformat(f"{date}T{whole}+00:00")
            return int(moment.timestamp()) * 1000 + int((fraction + "000")[:3])
    return value


def row_key(row: dict) -> tuple:
    return tuple(sorted((name.lower(), json.dumps(normalize(value))) for name, value in row.items()))


def at_having_threshold(query: dict, row: tuple) -> bool:
    """Whether a row's thresholded column equals the HAVING threshold to 9 digits (see QUERIES)."""
    if "threshold" not in query:
        return False
    column, threshold = query["threshold"]
    value = dict(row).get(column.lower())
    return value is not None and json.loads(value) == normalize(threshold)


def tidewater_rows(path: Path, keep: bool):
    """The output rows of `tidewater query test` (lines with "output"); others are counted."""
    rows, n_rows, n_other = collections.Counter(), 0, 0
    with open(path) as lines:
        for line in lines:
            result = json.loads(line)
            if "output" not in result:
                n_other += 1
                continue
            n_rows += 1
            if keep:
                rows[row_key(result["row"])] += 1
    return n_rows, n_other, rows


def flink_rows(directory: Path, keep: bool):
    rows, n_rows = collections.Counter(), 0
    for part in sorted(directory.rglob("*")):
        if not part.is_file() or part.name.startswith("."):
            continue
        with open(part) as lines:
            for line in lines:
                n_rows += 1
                if keep:
                    rows[row_key(json.loads(line))] += 1
    return n_rows, rows


def run_tidewater(binary: str, sql_file: Path, input_file: Path, stdout_path: str) -> dict:
    """One `tidewater query test` on core 0; its rusage from wait4 (taskset execs it)."""
    with open(stdout_path, "wb") as stdout:
        wall_before = time.monotonic()
        process = subprocess.Popen(
            ["taskset", "-c", "0", binary, "query", "test", str(sql_file), "--input", str(input_file)],
            stdout=stdout,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + TIDEWATER_TIMEOUT_S
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                process.kill()
                pid, status, usage = os.wait4(process.pid, 0)
                break
            time.sleep(0.05)
        wall = time.monotonic() - wall_before
        process.returncode = os.waitstatus_to_exitcode(status)
        stderr = process.stderr.read().decode(errors="replace")
    if process.returncode != 0:
        raise RuntimeError(f"tidewater query test exited {process.returncode}: {stderr.strip()[-2000:]}")
    return {"cpu_s": usage.ru_utime + usage.ru_stime, "wall_s": wall, "peak_rss_kib": usage.ru_maxrss}


def run_flink(query_idx: int, sql_file: Path, input_file: Path, small_file: Path, work: Path, round_idx: int, verify_dir):
    result_file = work / f"flink-{query_idx}-{round_idx}.json"
    log_file = work / f"flink-{query_idx}-{round_idx}.log"
    command = [
        "taskset", "-c", "0", sys.executable, __file__, "flink",
        "--table", QUERIES[query_idx]["table"], "--input", str(input_file),
        "--small-input", str(small_file), "--sql-file", str(sql_file), "--result", str(result_file),
    ]
    if verify_dir:
        command += ["--verify-dir", str(verify_dir)]
    with open(log_file, "wb") as log:
        completed = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, timeout=FLINK_TIMEOUT_S)
    if completed.returncode != 0 or not result_file.exists():
        tail = log_file.read_text(errors="replace").splitlines()
        # The Java exception's own lines, not the whole stack.
        interesting = [line for line in tail if "Exception" in line or "Error" in line][-6:]
        raise RuntimeError(
            f"the Flink run exited {completed.returncode} (log: {log_file}):\n  " + "\n  ".join(interesting or tail[-10:])
        )
    return json.loads(result_file.read_text())


def rate(n_events: int, seconds) -> float | None:
    return n_events / seconds if seconds else None


def fmt_rate(value) -> str:
    return "-" if value is None else f"{value / 1e3:,.0f}k"


def run_main(args: argparse.Namespace) -> int:
    work = Path(args.work)
    n_events = args.events
    selected = [(idx, query) for idx, query in enumerate(QUERIES) if args.only in query["name"]]
    # The first events of each file, for the Flink job that measures a job's fixed cost.
    n_small = max(1, min(SMALL_EVENTS, n_events // 100))
    small_files = {}
    for table, name in INPUT_FILES.items():
        small_files[table] = work / f"small-{name}"
        with open(work / name) as source, open(small_files[table], "w") as small:
            for _, line in zip(range(n_small), source):
                small.write(line)
    say(
        f"{n_events:,} events per query, {args.rounds} round(s), both engines on core 0 (taskset -c 0), "
        "Flink at parallelism 1 with a blackhole sink, Tidewater writing to /dev/null"
    )
    results = []
    for query_idx, query in selected:
        input_file = work / INPUT_FILES[query["table"]]
        tidewater_sql = work / f"query-{query_idx}.asaql"
        flink_sql = work / f"query-{query_idx}.flink.sql"
        tidewater_sql.write_text(query["tidewater"] + "\n")
        flink_sql.write_text(query["flink"].strip() + "\n")
        verify_dir = work / f"flink-out-{query_idx}"
        entry = {"query": query, "flink": [], "tidewater": [], "error": None}
        results.append(entry)
        say(f"{query['name']}:")
        try:
            for round_idx in range(args.rounds):
                flink = run_flink(
                    query_idx, flink_sql, input_file, small_files[query["table"]], work, round_idx,
                    verify_dir if round_idx == 0 else None,
                )
                entry["flink"].append(flink)
                tidewater = run_tidewater(args.tidewater, tidewater_sql, input_file, os.devnull)
                entry["tidewater"].append(tidewater)
                cold, warm, small = (flink["runs"][label] for label in ("cold", "warm", "small"))
                say(
                    f"  round {round_idx + 1}: Flink cold {cold['cpu_s']:.2f} CPU-s / {cold['wall_s']:.2f} s, "
                    f"warm {warm['cpu_s']:.2f} CPU-s / {warm['wall_s']:.2f} s, "
                    f"{n_small:,} events {small['cpu_s']:.2f} CPU-s (JVM start {flink['startup_cpu_s']:.2f} CPU-s); "
                    f"Tidewater {tidewater['cpu_s']:.2f} CPU-s / {tidewater['wall_s']:.2f} s"
                )
            # The rows, from one more Tidewater run to a file and Flink's verification job.
            tidewater_out = work / f"tidewater-out-{query_idx}.jsonl"
            run_tidewater(args.tidewater, tidewater_sql, input_file, str(tidewater_out))
            keep = query["compare"] == "rows"
            n_tidewater, n_other, tidewater_set = tidewater_rows(tidewater_out, keep)
            n_flink, flink_set = flink_rows(verify_dir, keep)
            entry["rows"] = (n_flink, n_tidewater)
            problems = []
            if n_other:
                problems.append(f"Tidewater reported {n_other} late events or errors")
            if n_flink != n_tidewater:
                problems.append(f"row counts differ: Flink {n_flink}, Tidewater {n_tidewater}")
            at_threshold = []
            if keep and flink_set != tidewater_set:
                only_flink = list((flink_set - tidewater_set).elements())
                only_tidewater = list((tidewater_set - flink_set).elements())
                at_threshold = [
                    (engine, row)
                    for engine, rows in (("Flink", only_flink), ("Tidewater", only_tidewater))
                    for row in rows
                    if at_having_threshold(query, row)
                ]
                if len(at_threshold) < len(only_flink) + len(only_tidewater):
                    problems.append(
                        f"rows differ: {len(only_flink)} only in Flink (first: {only_flink[:2]}), "
                        f"{len(only_tidewater)} only in Tidewater (first: {only_tidewater[:2]})"
                    )
                elif n_flink != n_tidewater:
                    # Explained by the rows at the threshold, reported below.
                    problems = [problem for problem in problems if not problem.startswith("row counts")]
            if at_threshold:
                column, threshold = query["threshold"]
                entry["note"] = (
                    f"{query['name']}: {len(at_threshold)} row(s) only in "
                    f"{' and '.join(sorted({engine for engine, _ in at_threshold}))}, each with {column} = "
                    f"{threshold:g} to 9 digits: a float sum in another order on the other side of the HAVING "
                    "threshold; every other row is the same"
                )
                say(f"  NOTE: {entry['note']}")
            if problems:
                entry["check"] = "MISMATCH"
            elif at_threshold:
                entry["check"] = "same*"
            else:
                entry["check"] = "same rows" if keep else "same count"
            for problem in problems:
                say(f"  MISMATCH: {problem}")
            say(f"  rows: Flink {n_flink:,}, Tidewater {n_tidewater:,} ({entry['check']})")
            tidewater_out.unlink()
        except (RuntimeError, subprocess.TimeoutExpired) as error:
            entry["error"] = str(error)
            say(f"  FAILED: {error}")

    say("")
    say(
        f"Tidewater against Apache Flink, {n_events:,} events, events per CPU-second "
        f"(= per second of one core), median of {args.rounds} round(s)"
    )
    header = (
        f"{'query':<18} {'Flink':>10} {'Flink warm':>10} {'Flink cold':>10} {'Tidewater':>10} {'ratio':>6} {'goal 5x':>7} "
        f"{'Flink rows':>11} {'TW rows':>11} {'check':>10} {'Flink wall':>10} {'TW wall':>9}"
    )
    say(header)
    n_failed = 0
    for entry in results:
        query = entry["query"]
        if entry["error"] and not entry["tidewater"]:
            say(f"{query['name']:<18} FAILED (see above)")
            n_failed += 1
            continue
        median = statistics.median

        def flink_median(label, field="cpu_s"):
            return median(run["runs"][label][field] for run in entry["flink"])

        # Per round, the warm job's events and CPU beyond those of the small job: Flink's rate
        # once a job's fixed cost is paid (a long-running job's).
        steady_cpu = median(run["runs"]["warm"]["cpu_s"] - run["runs"]["small"]["cpu_s"] for run in entry["flink"])
        flink_rate = rate(n_events - n_small, steady_cpu) if steady_cpu > 0 else None
        tidewater_cpu = median(run["cpu_s"] for run in entry["tidewater"])
        tidewater_wall = median(run["wall_s"] for run in entry["tidewater"])
        tidewater_rate = rate(n_events, tidewater_cpu)
        ratio = tidewater_rate / flink_rate if flink_rate and tidewater_rate else None
        met = "-" if ratio is None else ("yes" if ratio >= GOAL_RATIO else "no")
        n_flink, n_tidewater = entry.get("rows", (None, None))
        check = entry.get("check", "FAILED" if entry["error"] else "-")
        say(
            f"{query['name']:<18} {fmt_rate(flink_rate):>10} {fmt_rate(rate(n_events, flink_median('warm'))):>10} "
            f"{fmt_rate(rate(n_events, flink_median('cold'))):>10} "
            f"{fmt_rate(tidewater_rate):>10} {'-' if ratio is None else f'{ratio:.2f}x':>6} {met:>7} "
            f"{'-' if n_flink is None else f'{n_flink:,}':>11} {'-' if n_tidewater is None else f'{n_tidewater:,}':>11} "
            f"{check:>10} {fmt_rate(rate(n_events, flink_median('warm', 'wall_s'))):>10} "
            f"{fmt_rate(rate(n_events, tidewater_wall)):>9}"
        )
        if entry["error"] or check == "MISMATCH":
            n_failed += 1
    say("")
    say(
        "Events per CPU-second of the engine's process (user + system, every thread). "
        "Tidewater: the whole `tidewater query test` process, JSON parsing included. "
        "Flink warm: the query's second job in one JVM, as a whole; cold: its first (planning, code generation "
        "and the JIT's warm-up in it; the JVM's start in neither). "
        f"Flink: the warm job less a job over the first {n_small:,} events (a job's fixed cost: the mini-cluster, "
        "planning, code generation), i.e. a long-running job's rate, Flink's best figure. "
        "ratio = Tidewater / Flink; goal 5x: ratio >= 5. "
        "Wall columns: events per wall-second (Flink's warm job), moved by whatever else the machine runs."
    )
    for entry in results:
        if entry.get("note"):
            say(f"* {entry['note']}")
    peak_flink = max((run["peak_rss_kib"] for entry in results for run in entry["flink"]), default=0)
    peak_tidewater = max((run["peak_rss_kib"] for entry in results for run in entry["tidewater"]), default=0)
    say(f"peak resident memory: Flink's JVM {peak_flink / 1024:,.0f} MiB, tidewater {peak_tidewater / 1024:,.0f} MiB")
    return 1 if n_failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run")
    run.add_argument("--tidewater", required=True)
    run.add_argument("--work", required=True)
    run.add_argument("--events", type=int, required=True)
    run.add_argument("--rounds", type=int, default=3)
    run.add_argument("--only", default="")
    flink = commands.add_parser("flink")
    flink.add_argument("--table", choices=sorted(FLINK_TABLES), required=True)
    flink.add_argument("--input", required=True)
    flink.add_argument("--sql-file", required=True)
    flink.add_argument("--small-input", required=True)
    flink.add_argument("--result", required=True)
    flink.add_argument("--verify-dir")
    args = parser.parse_args()
    if args.command == "flink":
        flink_main(args)
        return 0
    return run_main(args)


if __name__ == "__main__":
    sys.exit(main())
