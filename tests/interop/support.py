"""Shared pieces of the interop tests: the records every client sends, how results are
compared, bounded polling, the partitioners clients use, and runners for the clients that are
separate programs (kcat, the kafkajs scripts).

Records are compared field by field (key, value, headers, timestamp and its type) with byte
equality: a client must read back exactly what it sent.
"""

from __future__ import annotations

import base64
import json
import random
import shutil
import struct
import subprocess
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from conftest import tidewater_binary

INTEROP_DIR = Path(__file__).resolve().parent
KAFKAJS_DIR = INTEROP_DIR / "kafkajs"

# How long a client may take to deliver or read the records of one test step. Generous: a
# debug broker on a loaded 2-core CI machine, and clients with their own retry backoffs.
CLIENT_TIMEOUT_S = 60.0
# How long a separate client program (node, kcat) may run before it is killed.
SUBPROCESS_TIMEOUT_S = 90.0
# Polling interval of `wait_until`.
POLL_INTERVAL_S = 0.05

# Kafka's codes for the compression codecs in a record batch's attributes (bits 0-2).
CODEC_IDS = {"none": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}
COMPRESSION_CODECS = ["gzip", "snappy", "lz4", "zstd"]


@dataclass(frozen=True)
class Record:
    """A record as a producer sends it and a consumer must read it back."""

    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    timestamp_ms: int


def base_timestamp_ms() -> int:
    """A CreateTime base an hour in the past: clearly not the broker's clock, well inside any
    retention, and on a whole second so the numbers are easy to read in a failure."""
    return (int(time.time()) - 3600) * 1000


def sample_records(
    n_records: int,
    *,
    base_ts: int,
    null_values: bool = True,
    null_keys: bool = True,
    large_value_bytes: int = 40_000,
    compressible: bool = False,
    seed: int = 1,
) -> list[Record]:
    """`n_records` records that exercise what clients tend to get wrong: binary keys and values
    with NUL and 0xff bytes, empty and null keys and values, a large value, UTF-8 text, no
    headers, repeated header keys, empty and binary header values, non-ASCII header keys, and
    CreateTime timestamps that are not in offset order.

    Large values are random bytes unless `compressible` (clients send a batch uncompressed when
    the codec does not make it smaller, which would hide whether the codec works)."""
    rng = random.Random(seed)
    records = []
    for index in range(n_records):
        match index % 4:
            case 0:
                key: bytes | None = f"key-{index}".encode()
            case 1:
                key = bytes([0, 255, index % 256, 10, 13])
            case 2:
                key = b"" if index % 8 == 2 else "clé-ü-€".encode()
            case _:
                key = None if null_keys else f"k{index}".encode()
        match index % 6:
            case 0:
                value: bytes | None = f"value {index}: snow ☃, tide 🌊".encode()
            case 1:
                value = bytes(range(256))
            case 2:
                value = b""
            case 3:
                value = None if null_values else b"\x00"
            case 4 if compressible:
                value = (f"reading {index}: {rng.random():.6f};".encode() * large_value_bytes)[:large_value_bytes]
            case 4:
                value = rng.randbytes(large_value_bytes)
            case _:
                value = json.dumps({"index": index, "nested": {"list": [1, 2, 3]}}).encode()
        if key is None and value is None:
            # A tombstone needs a key (kafka-python refuses a record with neither).
            key = f"tombstone-{index}".encode()
        match index % 4:
            case 0:
                headers: tuple[tuple[str, bytes], ...] = ()
            case 1:
                headers = (("trace-id", f"{index:032x}".encode()),)
            case 2:
                headers = (
                    ("dup", b"first"),
                    ("dup", b"second"),
                    ("empty", b""),
                    ("binary", bytes([0, 1, 254, 255])),
                )
            case _:
                headers = (("ключ-ü", "значение".encode()),)
        # A permutation of whole seconds: timestamps go backwards as well as forwards.
        timestamp_ms = base_ts + ((index * 7919) % max(n_records, 1)) * 1000 + index % 1000
        records.append(Record(key, value, headers, timestamp_ms))
    return records


def keyed_records(keys: Sequence[bytes], per_key: int, *, base_ts: int) -> list[Record]:
    """`per_key` records for each key, interleaved across keys, each value naming its key and
    its sequence number within the key, so per-key order can be checked after a read."""
    records = []
    for sequence in range(per_key):
        for key_index, key in enumerate(keys):
            value = key + b"#" + str(sequence).encode()
            timestamp_ms = base_ts + sequence * 1000 + key_index
            records.append(Record(key, value, (("seq", str(sequence).encode()),), timestamp_ms))
    return records


def describe_record(record: Record | None) -> str:
    if record is None:
        return "(missing)"

    def short(data: bytes | None) -> str:
        if data is None:
            return "None"
        return repr(data[:40]) + (f"...({len(data)} bytes)" if len(data) > 40 else "")

    headers = ", ".join(f"{key}={short(value)}" for key, value in record.headers)
    return f"key={short(record.key)} value={short(record.value)} headers=[{headers}] ts={record.timestamp_ms}"


def assert_same_records(expected: Sequence[Record], actual: Sequence[Record], what: str = "") -> None:
    """Asserts that `actual` equals `expected` in order, with a readable first difference."""
    prefix = f"{what}: " if what else ""
    for index, (want, got) in enumerate(zip(expected, actual)):
        if want != got:
            raise AssertionError(
                f"{prefix}record {index} differs\n  sent: {describe_record(want)}\n  read: {describe_record(got)}"
            )
    assert len(actual) == len(expected), f"{prefix}read {len(actual)} records, sent {len(expected)}"


def wait_until(condition: Callable[[], Any], *, timeout_s: float = CLIENT_TIMEOUT_S, what: str) -> Any:
    """Polls `condition` until it returns something truthy, and returns that; fails after
    `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(POLL_INTERVAL_S)


# --- Partitioners -------------------------------------------------------------------------------


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (the Java client's `Utils.murmur2`), as an unsigned 32-bit value."""
    seed, multiplier, shift = 0x9747B28C, 0x5BD1E995, 24
    length = len(data)
    hash_value = (seed ^ length) & 0xFFFFFFFF
    for index in range(length // 4):
        k = int.from_bytes(data[index * 4 : index * 4 + 4], "little")
        k = (k * multiplier) & 0xFFFFFFFF
        k ^= k >> shift
        k = (k * multiplier) & 0xFFFFFFFF
        hash_value = (hash_value * multiplier) & 0xFFFFFFFF
        hash_value ^= k
    tail = length & ~3
    extra = length % 4
    if extra >= 3:
        hash_value ^= data[tail + 2] << 16
    if extra >= 2:
        hash_value ^= data[tail + 1] << 8
    if extra >= 1:
        hash_value ^= data[tail]
        hash_value = (hash_value * multiplier) & 0xFFFFFFFF
    hash_value ^= hash_value >> 13
    hash_value = (hash_value * multiplier) & 0xFFFFFFFF
    hash_value ^= hash_value >> 15
    return hash_value


def java_partition(key: bytes, n_partitions: int) -> int:
    """The partition of a keyed record under the Java client's default partitioner, which
    kafka-python, aiokafka, kafkajs 2.x and librdkafka's `murmur2_random` reproduce."""
    return (murmur2(key) & 0x7FFFFFFF) % n_partitions


def librdkafka_consistent_partition(key: bytes, n_partitions: int) -> int:
    """librdkafka's default partitioner (`consistent_random`): CRC-32 of the key."""
    return zlib.crc32(key) % n_partitions


# --- What the broker stored ---------------------------------------------------------------------


@dataclass(frozen=True)
class StoredBatch:
    base_offset: int
    n_records: int
    codec_id: int
    log_append_time: bool


def stored_batches(data_dir: Path, topic: str, partition: int) -> list[StoredBatch]:
    """The record batch headers in a partition's segment files, read straight from the data
    directory. Tidewater stores batches exactly as producers sent them (only the base offset is
    rewritten), so this shows which codec the client really used."""
    partition_dir = data_dir / f"{topic}-{partition}"
    batches = []
    for segment in sorted(partition_dir.glob("*.log")):
        data = segment.read_bytes()
        position = 0
        # A batch header is 61 bytes: base offset (8), length (4), leader epoch (4), magic (1),
        # CRC (4), attributes (2), last offset delta (4), first and max timestamps (8 + 8),
        # producer id (8) and epoch (2), base sequence (4), record count (4).
        while position + 61 <= len(data):
            base_offset, batch_length = struct.unpack_from(">qi", data, position)
            if batch_length <= 0:
                break
            magic = data[position + 16]
            assert magic == 2, f"{segment}: batch at byte {position} has magic {magic}"
            (attributes,) = struct.unpack_from(">h", data, position + 21)
            (n_records,) = struct.unpack_from(">i", data, position + 57)
            batches.append(StoredBatch(base_offset, n_records, attributes & 0x7, bool(attributes & 0x8)))
            position += 12 + batch_length
    return batches


def assert_codec_used(batches: Sequence[StoredBatch], codec: str, n_records: int) -> None:
    """The stored batches hold `n_records` records and the client used `codec` for them. Some
    clients send a small batch uncompressed when the codec would not make it smaller, so
    uncompressed batches may appear beside compressed ones, but no other codec may."""
    assert sum(batch.n_records for batch in batches) == n_records, batches
    codecs = {batch.codec_id for batch in batches}
    assert CODEC_IDS[codec] in codecs and codecs <= {0, CODEC_IDS[codec]}, batches
    compressed = sum(batch.n_records for batch in batches if batch.codec_id == CODEC_IDS[codec])
    assert compressed * 2 > n_records, f"only {compressed} of {n_records} records were compressed: {batches}"


# --- Separate client programs -------------------------------------------------------------------


def b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode()


def unb64(text: str | None) -> bytes | None:
    return None if text is None else base64.b64decode(text)


def records_to_json(records: Iterable[Record]) -> list[dict]:
    return [
        {
            "key": b64(record.key),
            "value": b64(record.value),
            "headers": [[name, b64(value)] for name, value in record.headers],
            "timestamp": str(record.timestamp_ms),
        }
        for record in records
    ]


def run_program(command: Sequence[str], *, input_text: str | None = None, cwd: Path | None = None,
                timeout_s: float = SUBPROCESS_TIMEOUT_S) -> subprocess.CompletedProcess:
    """Runs a client program to completion (killed after `timeout_s`) and returns it; the
    caller checks the exit status, so failures can be asserted on as well."""
    try:
        return subprocess.run(
            list(command),
            input=input_text,
            capture_output=True,
            text=True,
            cwd=cwd,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        raise AssertionError(
            f"{command[0]} ran longer than {timeout_s}s: {' '.join(command)}\n"
            f"stdout: {error.stdout!r}\nstderr: {error.stderr!r}"
        ) from None


def run_kafkajs(script: str, *args: str, request: Any = None) -> Any:
    """Runs `node kafkajs/<script> ARGS...` with `request` as JSON on stdin and returns the JSON
    the script printed on its last stdout line. A script reports client errors in that JSON
    itself; a non-zero exit means the script broke."""
    node = shutil.which("node")
    assert node, "node is not installed; scripts/test needs Node.js for the kafkajs tests"
    assert (KAFKAJS_DIR / "node_modules" / "kafkajs").is_dir(), (
        "kafkajs is not installed: run `npm ci` in tests/interop/kafkajs (scripts/test does)"
    )
    completed = run_program(
        [node, str(KAFKAJS_DIR / script), *args],
        input_text=json.dumps(request if request is not None else {}),
        cwd=KAFKAJS_DIR,
    )
    lines = completed.stdout.strip().splitlines()
    assert completed.returncode == 0 and lines, (
        f"node {script} exited with {completed.returncode}\nstdout: {completed.stdout}\nstderr: {completed.stderr[-4000:]}"
    )
    return json.loads(lines[-1])


def kcat_binary() -> str:
    kcat = shutil.which("kcat")
    assert kcat, "kcat is not installed (Debian package kcat); scripts/test installs it"
    return kcat


def cli_describe(bootstrap: str, group: str, topic: str) -> tuple[str, dict[int, dict[str, str]]]:
    """`tidewater group describe GROUP`: its first line, and its partition table's rows for
    `topic` (partition -> column name -> cell)."""
    completed = run_program(
        [str(tidewater_binary()), "group", "describe", group, "--brokers", bootstrap, "--timeout-ms", "10000"],
        timeout_s=30,
    )
    assert completed.returncode == 0, f"group describe exited {completed.returncode}: {completed.stderr}"
    lines = completed.stdout.splitlines()
    headers = [index for index, line in enumerate(lines) if line.split()[:2] == ["TOPIC", "PARTITION"]]
    assert len(headers) == 1, f"no partition table in:\n{completed.stdout}"
    columns = lines[headers[0]].split()
    rows = {}
    for line in lines[headers[0] + 1 :]:
        cells = dict(zip(columns, line.split(), strict=True))
        if cells["TOPIC"] == topic:
            rows[int(cells["PARTITION"])] = cells
    return lines[0], rows
