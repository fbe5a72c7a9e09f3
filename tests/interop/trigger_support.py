"""Pieces the trigger tests share: a scriptable webhook receiver, the `tidewater` CLI, and a
standalone trigger runner process.

The receiver is a real HTTP server (Python's ThreadingHTTPServer on 127.0.0.1) that answers each
request with whatever the test's `respond` function says, and records every request with its
arrival time, headers and body. It also tracks how many requests are in progress at once, per
key (the CloudEvents `partitionkey` extension) and overall, so tests can check that a key never
has two deliveries in flight.
"""

from __future__ import annotations

import http.server
import json
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from conftest import tidewater_binary

# How long a trigger may take to deliver what a test produced: the group join alone waits out
# the broker's initial rebalance delay (3 s), and CI machines are slow.
DELIVERY_TIMEOUT_S = 60.0


@dataclass
class Request:
    received_at: float
    path: str
    headers: dict[str, str]
    body: bytes
    status: int = 0

    @property
    def key(self) -> str | None:
        return self.headers.get("ce-partitionkey")

    def json(self):
        return json.loads(self.body)


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


class Receiver:
    """A webhook receiver on 127.0.0.1:<free port>. `respond(request, attempt)` decides each reply;
    `attempt` counts the requests seen so far with the same webhook-id or ce-id (1 for the
    first)."""

    def __init__(self, respond: Callable[[Request, int], Reply] | None = None):
        self.respond = respond or (lambda request, attempt: Reply())
        self.requests: list[Request] = []
        self.lock = threading.Lock()
        self.attempts: dict[str, int] = {}
        self.in_flight_by_key: dict[str, int] = {}
        self.max_in_flight_per_key = 0
        self.in_flight = 0
        self.max_in_flight = 0
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):  # noqa: N802 (the stdlib's name)
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length)
                request = Request(
                    received_at=time.monotonic(),
                    path=self.path,
                    headers={name.lower(): value for name, value in self.headers.items()},
                    body=body,
                )
                reply = receiver._begin(request)
                try:
                    if reply.delay_s:
                        time.sleep(reply.delay_s)
                finally:
                    # Before the answer goes out: once it has, the runner may send the next
                    # event of this key, and must not find this one still counted in flight.
                    receiver._end(request)
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="webhook-receiver", daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def _begin(self, request: Request) -> Reply:
        identity = request.headers.get("webhook-id") or request.headers.get("ce-id") or ""
        with self.lock:
            attempt = self.attempts.get(identity, 0) + 1
            self.attempts[identity] = attempt
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            if request.key is not None:
                count = self.in_flight_by_key.get(request.key, 0) + 1
                self.in_flight_by_key[request.key] = count
                self.max_in_flight_per_key = max(self.max_in_flight_per_key, count)
        reply = self.respond(request, attempt)
        request.status = reply.status
        with self.lock:
            self.requests.append(request)
        return reply

    def _end(self, request: Request) -> None:
        with self.lock:
            self.in_flight -= 1
            if request.key is not None:
                self.in_flight_by_key[request.key] -= 1

    def snapshot(self) -> list[Request]:
        with self.lock:
            return list(self.requests)

    def wait_for(self, condition: Callable[[list[Request]], bool], what: str, timeout_s: float = DELIVERY_TIMEOUT_S) -> list[Request]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            requests = self.snapshot()
            if condition(requests):
                return requests
            time.sleep(0.05)
        requests = self.snapshot()
        raise AssertionError(f"timed out waiting for {what}; {len(requests)} requests received")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def tidewater(
    *args: str,
    bootstrap: str | None,
    client_config: Path | None = None,
    stdin: str | None = None,
    check: bool = True,
    timeout_ms: int = 20_000,
    timeout_s: float = 60.0,
) -> subprocess.CompletedProcess:
    """Runs a `tidewater` client command against `bootstrap` (None: the client config file's
    bootstrap.servers), with the librdkafka properties of `client_config` (`--client-config`,
    the place for TLS and SASL settings) and `stdin` as its standard input."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("TIDEWATER_")}
    command = [str(tidewater_binary()), *args, "--timeout-ms", str(timeout_ms)]
    if bootstrap is not None:
        command.extend(["--brokers", bootstrap])
    if client_config is not None:
        command.extend(["--client-config", str(client_config)])
    result = subprocess.run(
        command,
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env=env,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"tidewater {' '.join(args)} exited {result.returncode}:\n{result.stderr}")
    return result


def trigger_stats(name: str, bootstrap: str) -> dict[str, int]:
    """The counters `tidewater trigger list` prints for `name`."""
    output = tidewater("trigger", "list", bootstrap=bootstrap).stdout
    for line in output.splitlines()[1:]:
        columns = line.split()
        if columns and columns[0] == name:
            delivered, retried, dead = (int(value) for value in columns[-3:])
            return {"delivered": delivered, "retried": retried, "dead_lettered": dead}
    raise AssertionError(f"trigger {name} not in `trigger list`:\n{output}")


def wait_for_stats(name: str, bootstrap: str, expected: dict[str, int], timeout_s: float = 30.0) -> dict[str, int]:
    """Waits until the runners' published counters reach `expected` (they publish every 2 s)."""
    deadline = time.monotonic() + timeout_s
    stats: dict[str, int] = {}
    while time.monotonic() < deadline:
        stats = trigger_stats(name, bootstrap)
        if all(stats.get(key) == value for key, value in expected.items()):
            return stats
        time.sleep(0.25)
    raise AssertionError(f"trigger {name} counters {stats}, expected {expected}")


class RunnerProcess:
    """`tidewater trigger run --config FILE` as a separate process that a test can kill."""

    def __init__(self, config: Path, bootstrap: str, log: Path, *extra: str):
        self.command = [
            str(tidewater_binary()),
            "trigger",
            "run",
            "--config",
            str(config),
            "--brokers",
            bootstrap,
            # A killed runner's group membership must expire quickly for the next one to take
            # over its partitions (the broker's minimum session timeout is 6 s).
            "-X",
            "session.timeout.ms=6000",
            *extra,
        ]
        self.log = log
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        env = {key: value for key, value in os.environ.items() if not key.startswith("TIDEWATER_")}
        env["TIDEWATER_LOG"] = "info"
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
        return self.process.wait(timeout=60)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")
