"""Fixtures that run the real `tidewater` binary for the interop tests.

The broker is a child process started the way a user starts it (`tidewater serve`) on
127.0.0.1 with an OS-chosen port and a fresh data directory. We learn the port from the line
the broker logs once it is ready (`... tidewater is running ... kafka=127.0.0.1:PORT`), and stop
it with SIGTERM as an operator would, expecting a clean exit (status 0). Every wait here has a
deadline; a broker that does not start, or does not stop, fails the test with its log attached.

One broker serves the whole session (`broker`, `bootstrap`), and every test works in topics of
its own (`topic_name`). Tests that restart a broker get their own (`broker_factory`). MQTT
pub/sub tests share one broker per module that lets anonymous clients in (`anonymous_gateway`).

A broker can have more Kafka listeners than the first, PLAINTEXT one (`listeners`: SASL_SSL, SSL,
SASL_PLAINTEXT, each on 127.0.0.1 with a port of its own, kept across restarts), or only those
(`plaintext=False`: then `bootstrap` is the first of them), and settings from the environment
(`env`, e.g. TIDEWATER_BOOTSTRAP_USER); the running line's `listeners=NAME://127.0.0.1:PORT,...`
gives each listener's port (`listener_ports`).

Skips are turned into failures (see `pytest_runtest_makereport`): a client test that did not
run must never read as a pass.
"""

from __future__ import annotations

import collections
import os
import queue
import re
import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Callable

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
# How long the broker may take to log its running line: recovery of a small data dir takes
# milliseconds, but a loaded CI machine can be slow to even exec a debug binary.
START_TIMEOUT_S = 30.0
# How long a SIGTERM'd broker may take to exit. It answers in-flight requests (its own grace
# period is 15 s) and flushes every log.
STOP_TIMEOUT_S = 30.0
# Attempts to bind the same port again on restart (see `BrokerProcess.restart`).
RESTART_BIND_ATTEMPTS = 20
RUNNING_LINE = re.compile(r"tidewater is running.*\bkafka=127\.0\.0\.1:(\d+)")
# The same line names the gateway's MQTT listener (`mqtt=127.0.0.1:PORT`, or `mqtt=none`).
MQTT_ADDRESS = re.compile(r"tidewater is running.*\bmqtt=127\.0\.0\.1:(\d+)")
# And its HTTP ingestion listener (`http=127.0.0.1:PORT`, or `http=none`).
HTTP_ADDRESS = re.compile(r"tidewater is running.*\bhttp=127\.0\.0\.1:(\d+)")
# And every Kafka listener, the first one (`kafka=`) included, the internal one last:
# `listeners=PLAINTEXT://127.0.0.1:P1,SASL_SSL://127.0.0.1:P2,...,INTERNAL://127.0.0.1:P3`.
# The admin listener's line (logged before recovery, so before the running line).
ADMIN_ADDRESS = re.compile(r"admin listener.*\badmin=127\.0\.0\.1:(\d+)")
LISTENERS = re.compile(r"tidewater is running.*\blisteners=(\S+)")
# Broker log lines kept, for failure reports (the tail) and for tests that wait for a line
# (`wait_for_log`). Bounded: a broker with debug logging runs for a whole module.
LOG_LINES_KEPT = 20_000


def tidewater_binary() -> Path:
    """The binary under test: $TIDEWATER_BIN, or target/debug/tidewater in this repository."""
    path = Path(os.environ.get("TIDEWATER_BIN", "target/debug/tidewater"))
    if not path.is_absolute():
        path = REPO_ROOT / path
    return path


class BrokerError(RuntimeError):
    """The broker did not start or stop as expected; the message carries its log."""


class BrokerProcess:
    """One `tidewater serve` child on a data directory, which survives restarts."""

    def __init__(
        self,
        data_dir: Path,
        name: str = "broker",
        test_id: str | None = None,
        serve_args: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
        listeners: tuple[str, ...] = (),
        plaintext: bool = True,
    ):
        assert plaintext or listeners, "a broker needs at least one Kafka listener"
        self.data_dir = data_dir
        self.name = name
        # More `tidewater serve` arguments (e.g. group timings), kept across restarts.
        self.serve_args = tuple(serve_args)
        # Environment variables set for the broker (after the developer's TIDEWATER_* ones are
        # removed), e.g. TIDEWATER_BOOTSTRAP_USER or TIDEWATER_LOG; kept across restarts.
        self.env = dict(env or {})
        # Security protocols of more Kafka listeners on 127.0.0.1 (SASL_SSL, SSL, SASL_PLAINTEXT),
        # after the first, PLAINTEXT one; each keeps its port across restarts.
        self.listeners = tuple(listeners)
        # Whether the first Kafka listener is the usual PLAINTEXT one on `start`'s port. Without
        # it `listeners` are all there is, and the running line's `kafka=` (so `port` and
        # `bootstrap`) is the first of them.
        self.plaintext = plaintext
        # Each listener's port by name (PLAINTEXT, SASL_SSL, ..., INTERNAL), from the running line.
        self.listener_ports: dict[str, int] = {}
        # The test that owns this broker; None for the session's broker.
        self.test_id = test_id
        self.port: int | None = None
        # The MQTT listener's port, from the running line; None when serve runs without one.
        self.mqtt_port: int | None = None
        # The HTTP ingestion listener's port, likewise.
        self.http_port: int | None = None
        # The admin listener's port (/metrics, /health/*), from its own line.
        self.admin_port: int | None = None
        self.process: subprocess.Popen | None = None
        self.lines: collections.deque[str] = collections.deque(maxlen=LOG_LINES_KEPT)
        # Lines logged since the first start, including those `lines` no longer keeps.
        self.n_lines = 0
        self.exit_codes: list[int] = []

    @property
    def bootstrap(self) -> str:
        assert self.port is not None, "broker was never started"
        return f"127.0.0.1:{self.port}"

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, n_lines: int = 60) -> str:
        return "\n".join(list(self.lines)[-n_lines:])

    def bootstrap_of(self, listener: str) -> str:
        """The address of the listener named `listener` (PLAINTEXT, SASL_SSL, ...)."""
        assert listener in self.listener_ports, f"no {listener} listener: {self.listener_ports}"
        return f"127.0.0.1:{self.listener_ports[listener]}"

    def log_mark(self) -> int:
        """A position in the log, for `wait_for_log(since=...)` and `log_since`."""
        return self.n_lines

    def log_since(self, mark: int) -> list[str]:
        """The lines logged since `mark` (as many as are still kept)."""
        kept = list(self.lines)
        return kept[len(kept) - min(self.n_lines - mark, len(kept)) :]

    def wait_for_log(self, *needles: str, since: int = 0, timeout_s: float = 30.0) -> str:
        """Waits for a line logged after `since` that contains every one of `needles`, and
        returns it; fails with the log's tail after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while True:
            for line in self.log_since(since):
                if all(needle in line for needle in needles):
                    return line
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"{self.name} logged no line with {needles!r} within {timeout_s}s:\n{self.log_tail()}"
                )
            time.sleep(0.05)

    def start(self, port: int = 0) -> str:
        """Starts the broker on 127.0.0.1:`port` (0: any free port) and returns its bootstrap
        address once it logged that it is running."""
        assert not self.is_running(), "broker already running"
        binary = tidewater_binary()
        if not binary.is_file():
            raise BrokerError(f"{binary} does not exist; build it with `cargo build -p tidewater`")
        # Settings come from our arguments only, never from a developer's TIDEWATER_* variables.
        env = {key: value for key, value in os.environ.items() if not key.startswith("TIDEWATER_")}
        env.pop("RUST_LOG", None)
        env["TIDEWATER_LOG"] = "info"
        env.update(self.env)
        command = [str(binary), "serve"]
        if self.plaintext:
            command.extend(["--kafka-listen", f"127.0.0.1:{port}"])
        for protocol in self.listeners:
            command.extend(["--kafka-listen", f"{protocol}://127.0.0.1:{self.listener_ports.get(protocol, 0)}"])
        command.extend(["--data-dir", str(self.data_dir), *self.serve_args])
        # Any free port for the device gateway unless the test chose: parallel brokers must not
        # all take the default 1883.
        if "--mqtt-listen" not in self.serve_args:
            command.extend(["--mqtt-listen", "127.0.0.1:0"])
        # Likewise for HTTP ingestion and its default 8080, and the admin listener's 9644.
        if "--http-listen" not in self.serve_args:
            command.extend(["--http-listen", "127.0.0.1:0"])
        if "--admin-listen" not in self.serve_args:
            command.extend(["--admin-listen", "127.0.0.1:0"])
        self.lines.append(f"--- {self.name}: {' '.join(command)}")
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
        )
        self.process = process
        ports: queue.Queue[int | None] = queue.Queue()

        def pump_stderr() -> None:
            # Drains stderr for the broker's whole life (so it never blocks on a full pipe),
            # keeps the tail for failure reports and reports the port of the running line.
            assert process.stderr is not None
            for raw in process.stderr:
                line = raw.decode("utf-8", errors="replace").rstrip("\n")
                self.lines.append(line)
                self.n_lines += 1
                mqtt_match = MQTT_ADDRESS.search(line)
                if mqtt_match:
                    self.mqtt_port = int(mqtt_match.group(1))
                http_match = HTTP_ADDRESS.search(line)
                if http_match:
                    self.http_port = int(http_match.group(1))
                admin_match = ADMIN_ADDRESS.search(line)
                if admin_match:
                    self.admin_port = int(admin_match.group(1))
                listeners_match = LISTENERS.search(line)
                if listeners_match:
                    self.listener_ports = parse_listeners(listeners_match.group(1))
                match = RUNNING_LINE.search(line)
                if match:
                    ports.put(int(match.group(1)))
            ports.put(None)

        threading.Thread(target=pump_stderr, name=f"{self.name}-stderr", daemon=True).start()
        try:
            found = ports.get(timeout=START_TIMEOUT_S)
        except queue.Empty:
            self._kill()
            raise BrokerError(
                f"{self.name} logged no running line within {START_TIMEOUT_S}s:\n{self.log_tail()}"
            ) from None
        if found is None:
            code = self._wait(STOP_TIMEOUT_S)
            raise BrokerError(f"{self.name} exited with {code} before running:\n{self.log_tail()}")
        self.port = found
        return self.bootstrap

    def stop(self) -> int:
        """SIGTERM, then wait for the exit; kills the broker (and raises) if it does not exit in
        time. Returns the exit status."""
        process = self.process
        assert process is not None, "broker was never started"
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self._kill()
            raise BrokerError(
                f"{self.name} did not exit within {STOP_TIMEOUT_S}s of SIGTERM; killed:\n{self.log_tail()}"
            ) from None
        self.exit_codes.append(code)
        return code

    def kill(self) -> int:
        """SIGKILL, as a crash would stop the broker: no shutdown, no final flush. Waits for the
        exit and returns its status."""
        process = self.process
        assert process is not None, "broker was never started"
        if process.poll() is None:
            process.kill()
        code = process.wait(timeout=STOP_TIMEOUT_S)
        self.exit_codes.append(code)
        return code

    def restart(self, while_down: Callable[[], None] | None = None, *, kill: bool = False) -> str:
        """Stops the broker cleanly (with `kill`, by SIGKILL instead) and starts it again on the
        same data directory and the same port, so clients that know the old address reconnect to
        the new process (without the PLAINTEXT listener, every listener keeps its port all the
        same). `while_down` runs between the two, while nothing listens on the port."""
        port = self.port
        assert port is not None
        if kill:
            self.kill()
        else:
            code = self.stop()
            if code != 0:
                raise BrokerError(f"{self.name} exited with {code} on SIGTERM:\n{self.log_tail()}")
        if while_down is not None:
            while_down()
        # The port is free once the old process is gone (tokio sets SO_REUSEADDR, so sockets in
        # TIME_WAIT do not block it). A client reconnecting meanwhile can, rarely, be handed that
        # very port as its own ephemeral source port; then the bind fails and we try again.
        for attempt in range(RESTART_BIND_ATTEMPTS):
            try:
                return self.start(port)
            except BrokerError as error:
                if "binding the Kafka listener" not in str(error) or attempt + 1 == RESTART_BIND_ATTEMPTS:
                    raise
                time.sleep(0.1)
        raise AssertionError("unreachable")

    def _wait(self, timeout_s: float) -> int | None:
        assert self.process is not None
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self._kill()
            return None

    def _kill(self) -> None:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.kill()
            try:
                self.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                pass


def parse_listeners(text: str) -> dict[str, int]:
    """`PLAINTEXT://127.0.0.1:P1,SASL_SSL://127.0.0.1:P2` as {"PLAINTEXT": P1, "SASL_SSL": P2}
    (the first of two listeners with the same name wins)."""
    ports: dict[str, int] = {}
    for listener in text.split(","):
        name, _, address = listener.partition("://")
        ports.setdefault(name, int(address.rsplit(":", 1)[1]))
    return ports


# Every broker started in this session, so failure reports can show their logs.
_BROKERS: list[BrokerProcess] = []


def _stop_and_check(broker: BrokerProcess) -> None:
    if broker.process is None:
        return
    code = broker.stop()
    if code != 0:
        raise BrokerError(f"{broker.name} exited with {code} after SIGTERM:\n{broker.log_tail()}")


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory):
    """The session's broker, on a fresh data directory. It must still exit cleanly at the end."""
    process = BrokerProcess(tmp_path_factory.mktemp("tidewater") / "data", name="session broker")
    _BROKERS.append(process)
    process.start()
    yield process
    _stop_and_check(process)


@pytest.fixture
def bootstrap(broker: BrokerProcess):
    """The session broker's address. Fails the test if the broker died during it."""
    assert broker.is_running(), f"the session broker is not running:\n{broker.log_tail()}"
    yield broker.bootstrap
    assert broker.is_running(), f"the session broker died during this test:\n{broker.log_tail()}"


@pytest.fixture(scope="module")
def anonymous_gateway(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest):
    """A broker of the module's own whose MQTT gateway takes anonymous clients
    (`--mqtt-allow-anonymous`), for plain pub/sub; devices connect to it as to any other. Its
    retained messages and sessions are shared by the module's tests, which use topics and client
    ids of their own."""
    module = request.module.__name__
    process = BrokerProcess(
        tmp_path_factory.mktemp(module) / "data",
        name=f"pub/sub broker of {module}",
        serve_args=("--mqtt-allow-anonymous",),
    )
    _BROKERS.append(process)
    process.start()
    # Imported here: gateway_support imports this module (through trigger_support).
    from gateway_support import wait_until_retained_messages_are_served

    wait_until_retained_messages_are_served(process.mqtt_port)
    yield process
    _stop_and_check(process)


@pytest.fixture
def broker_factory(tmp_path: Path, request: pytest.FixtureRequest):
    """Starts brokers of the test's own (each on a fresh data directory, with `serve_args` added
    to the command line, and `env`, `listeners` and `plaintext` as `BrokerProcess` takes them);
    stops them after."""
    started: list[BrokerProcess] = []

    def start(
        *serve_args: str,
        env: dict[str, str] | None = None,
        listeners: tuple[str, ...] = (),
        plaintext: bool = True,
    ) -> BrokerProcess:
        process = BrokerProcess(
            tmp_path / f"data{len(started)}",
            name=f"test broker {len(started)}",
            test_id=request.node.nodeid,
            serve_args=serve_args,
            env=env,
            listeners=listeners,
            plaintext=plaintext,
        )
        _BROKERS.append(process)
        started.append(process)
        process.start()
        return process

    yield start
    for process in started:
        _stop_and_check(process)


@pytest.fixture(scope="module")
def module_broker_factory(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest):
    """Like `broker_factory`, for brokers a whole module shares (their logs go with every failing
    test's report); stops them after the module."""
    module = request.module.__name__
    started: list[BrokerProcess] = []

    def start(
        *serve_args: str,
        env: dict[str, str] | None = None,
        listeners: tuple[str, ...] = (),
        plaintext: bool = True,
    ) -> BrokerProcess:
        process = BrokerProcess(
            tmp_path_factory.mktemp(module) / "data",
            name=f"broker {len(started)} of {module}",
            serve_args=serve_args,
            env=env,
            listeners=listeners,
            plaintext=plaintext,
        )
        _BROKERS.append(process)
        started.append(process)
        process.start()
        return process

    yield start
    for process in started:
        # Later modules' failures need not show this module's brokers.
        _BROKERS.remove(process)
        _stop_and_check(process)


@pytest.fixture
def topic_name(request: pytest.FixtureRequest) -> str:
    """A topic name no other test uses: the test's name plus a random suffix."""
    base = re.sub(r"[^a-zA-Z0-9._-]+", "-", request.node.name).strip("-")[:80]
    return f"{base}-{uuid.uuid4().hex[:8]}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report = outcome.get_result()
    if report.skipped and not hasattr(report, "wasxfail"):
        # Nothing in this suite may be skipped: a missing client or tool is a failure.
        report.outcome = "failed"
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.longrepr = f"skipped tests are failures in the interop suite: {reason}"
    if report.failed:
        for process in _BROKERS:
            if process.lines and process.test_id in (None, item.nodeid):
                report.sections.append((f"{process.name} log (tail)", process.log_tail()))
