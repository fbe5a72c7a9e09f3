"""The README's Quickstart, run as written, so that it cannot go stale.

The commands come from the ```sh blocks of README.md's "## Quickstart" section, so an edit to
the README is what gets tested. A block is a list of steps: each step is a `#` comment and the
lines that follow it up to the next comment at the start of a line (continuation lines, pipes
ending a line, heredocs and multi-line quotes all stay inside one step). A step whose comment
says "(keeps running)" is a program a person leaves running in a terminal of its own; it must be
one command, and it runs in the background here. Every other step runs to completion, in order,
with bash (`set -euo pipefail`), in one scratch directory, and must exit 0 within a deadline.
Shell variables a step assigns (`KEY=$(...)`) carry over to the next steps, as they would in
one terminal.

What changes, and only this, is where things listen, since the defaults (9092, 1883, 8080, the
receiver's 9000, ./tidewater-data) may be taken on a shared machine:

- `tidewater serve` gets its data directory and 127.0.0.1:0 listeners from the environment
  (TIDEWATER_DATA_DIR, TIDEWATER_KAFKA_LISTEN, TIDEWATER_MQTT_LISTEN, TIDEWATER_HTTP_LISTEN);
  the ports are read from its running line;
- every client command gets the broker from TIDEWATER_BROKERS (and `127.0.0.1:9092`, should a
  command name it, becomes the broker's address);
- mosquitto_pub's `-p 1883` becomes the gateway's port;
- the webhook receiver's port 9000 (`127.0.0.1:9000` and `("127.0.0.1", 9000)`) becomes a free
  port.

Each rewrite that must happen is checked to have happened, so a quickstart that moved on (a
new port, a new spelling) fails here instead of talking to whatever listens on the default.

One pause stands in for a person's typing: the gateway learns of a new device from the
registry topic within about a second, so after `tidewater device add` the test waits (bounded)
until the gateway accepts the device's key, as the gateway tests do.

What must come out: the readings in `telemetry`, the alert row of the hot device from `tidewater
consume --topic alerts` (for the window and with the average the README's comment names), and
the same row in the body the webhook receiver prints; and `tidewater serve` must exit cleanly on
SIGTERM at the end.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from conftest import HTTP_ADDRESS, MQTT_ADDRESS, REPO_ROOT, RUNNING_LINE, tidewater_binary
from gateway_support import V5, connect_when_registered

README = REPO_ROOT / "README.md"
# What a foreground step may take: the consume of the alert waits for the job to start, read
# the telemetry and commit a checkpoint, a few seconds on a quiet machine.
STEP_TIMEOUT_S = 60.0
# How long `tidewater serve` may take to log its running line, and a receiver to listen.
START_TIMEOUT_S = 30.0
# How long the webhook may take to receive the alert once its trigger is registered.
DELIVERY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
POLL_S = 0.1
BACKGROUND_MARK = "(keeps running)"


@dataclass
class Step:
    comment: str
    command: str

    @property
    def background(self) -> bool:
        return BACKGROUND_MARK in self.comment


def quickstart_steps(text: str) -> list[Step]:
    """The steps of the ```sh blocks of the "## Quickstart" section, in order."""
    section = re.search(r"^## Quickstart\n(.*?)(?=^## )", text, re.MULTILINE | re.DOTALL)
    assert section, "README.md has no '## Quickstart' section followed by another '## ' section"
    blocks = re.findall(r"^```sh\n(.*?)^```$", section.group(1), re.MULTILINE | re.DOTALL)
    assert blocks, "the Quickstart has no ```sh block"
    steps: list[Step] = []
    for block in blocks:
        comment: list[str] = []
        command: list[str] = []
        heredoc: str | None = None
        # Where the command's lines after its last heredoc start (a heredoc's body is no shell).
        shell_from = 0
        for line in block.splitlines():
            if heredoc is not None:
                command.append(line)
                if line == heredoc:
                    heredoc = None
                    shell_from = len(command)
                continue
            if not line.strip() and not command:
                continue
            if line.startswith("#") and not continues(command[shell_from:]):
                if command:
                    steps.append(Step(" ".join(comment), "\n".join(command)))
                    comment, command, shell_from = [], [], 0
                comment.append(line.lstrip("# "))
                continue
            assert comment, f"a Quickstart command without a comment before it: {line!r}"
            command.append(line)
            found = re.search(r"(?<!<)<<-?\s*['\"]?(\w+)['\"]?", line)  # a heredoc, not a <<< string
            if found:
                heredoc = found.group(1)
        assert heredoc is None, f"an unterminated heredoc in the Quickstart: {heredoc}"
        assert command, f"a Quickstart comment with no command after it: {comment}"
        steps.append(Step(" ".join(comment), "\n".join(command)))
    return steps


def continues(command: list[str]) -> bool:
    """Whether the command so far is unfinished, so a line starting with '#' belongs to it (as a
    line of a multi-line quote would)."""
    if not command:
        return False
    last = command[-1].rstrip()
    if last.endswith(("\\", "|", "&&", "||")):
        return True
    try:
        shlex.split("\n".join(command), comments=True)
    except ValueError:  # an open quote
        return True
    return False


def assigned_variables(steps: list[Step]) -> list[str]:
    """The shell variables the steps assign at the start of a line (`KEY=$(...)`)."""
    names: list[str] = []
    for step in steps:
        for name in re.findall(r"^([A-Za-z_][A-Za-z0-9_]*)=", step.command, re.MULTILINE):
            if name not in names:
                names.append(name)
    return names


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Quickstart:
    """The scratch directory, the environment, the background programs and the rewrites."""

    def __init__(self, directory: Path, variables: list[str]):
        self.directory = directory
        self.work = directory / "work"
        self.work.mkdir()
        self.state = directory / "state.sh"
        self.state.write_text("")
        self.variables = variables
        bin_dir = directory / "bin"
        bin_dir.mkdir()
        (bin_dir / "tidewater").symlink_to(tidewater_binary())
        # Only the test decides TIDEWATER_* settings, never the developer's environment.
        self.env = {key: value for key, value in os.environ.items() if not key.startswith("TIDEWATER_")}
        self.env.pop("RUST_LOG", None)
        self.env["PATH"] = f"{bin_dir}{os.pathsep}{self.env.get('PATH', '')}"
        self.env["TIDEWATER_LOG"] = "info"
        self.kafka: str | None = None
        self.mqtt_port: int | None = None
        self.webhook_port = free_port()
        self.background: list[tuple[Step, subprocess.Popen, Path]] = []
        self.n_steps = 0

    # -- rewrites

    def rewrite(self, step: Step) -> str:
        command = step.command
        if re.search(r"(^|\s)tidewater serve\b", command):
            assert self.kafka is None, "the Quickstart starts tidewater serve twice"
            return command
        if re.search(r"(^|[\s|$(])tidewater ", command):
            assert self.kafka, f"a tidewater command before tidewater serve: {command}"
            command = command.replace("127.0.0.1:9092", self.kafka)
        if "mosquitto_pub" in command or "mosquitto_sub" in command:
            assert self.mqtt_port, "an MQTT client before tidewater serve"
            assert re.search(r"-p 1883\b", command), f"expected `-p 1883` (the gateway's default) in: {command}"
            command = re.sub(r"-p 1883\b", f"-p {self.mqtt_port}", command)
        if "9000" in command:
            rewritten = command.replace("127.0.0.1:9000", f"127.0.0.1:{self.webhook_port}")
            rewritten = rewritten.replace('("127.0.0.1", 9000)', f'("127.0.0.1", {self.webhook_port})')
            assert "9000" not in rewritten, f"port 9000 in a form this test does not rewrite: {command}"
            command = rewritten
        return command

    # -- running

    def script(self, command: str, *, exec_last: bool) -> str:
        saved = " ".join(self.variables)
        lines = ["set -euo pipefail", f"source {shlex.quote(str(self.state))}"]
        if exec_last:
            # One command that keeps running: exec it, so the test signals it directly.
            lines.append("exec " + command)
        else:
            lines.append(command)
            if saved:
                lines.append(f"declare -p {saved} 2>/dev/null > {shlex.quote(str(self.state))} || true")
        return "\n".join(lines) + "\n"

    def start(self, step: Step) -> None:
        command = self.rewrite(step)
        self.n_steps += 1
        log = self.directory / f"step{self.n_steps}.log"
        env = dict(self.env)
        serve = re.search(r"(^|\s)tidewater serve\b", command) is not None
        if serve:
            env.update(
                TIDEWATER_DATA_DIR=str(self.directory / "tidewater-data"),
                TIDEWATER_KAFKA_LISTEN="127.0.0.1:0",
                TIDEWATER_MQTT_LISTEN="127.0.0.1:0",
                TIDEWATER_HTTP_LISTEN="127.0.0.1:0",
            )
        with open(log, "wb") as output:
            process = subprocess.Popen(
                ["bash", "-c", self.script(command, exec_last=True)],
                cwd=self.work, env=env, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.background.append((step, process, log))
        deadline = time.monotonic() + START_TIMEOUT_S
        if serve:
            while True:
                text = log.read_text(errors="replace")
                running = RUNNING_LINE.search(text)
                if running:
                    self.kafka = f"127.0.0.1:{running.group(1)}"
                    mqtt = MQTT_ADDRESS.search(text)
                    assert mqtt, f"tidewater serve runs no MQTT gateway:\n{text[-3000:]}"
                    self.mqtt_port = int(mqtt.group(1))
                    assert HTTP_ADDRESS.search(text), f"tidewater serve runs no HTTP ingestion:\n{text[-3000:]}"
                    self.env["TIDEWATER_BROKERS"] = self.kafka
                    return
                assert process.poll() is None, f"tidewater serve exited with {process.returncode}:\n{text[-3000:]}"
                assert time.monotonic() < deadline, f"tidewater serve logged no running line:\n{text[-3000:]}"
                time.sleep(POLL_S)
        # Anything else that keeps running here is the webhook receiver: wait until it listens.
        assert str(self.webhook_port) in command, f"a background step this test knows nothing of: {command}"
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.webhook_port), timeout=1).close()
                return
            except OSError:
                assert process.poll() is None, f"{command!r} exited with {process.returncode}:\n{log.read_text()}"
                assert time.monotonic() < deadline, f"nothing listens on {self.webhook_port}:\n{log.read_text()}"
                time.sleep(POLL_S)

    def run(self, step: Step) -> str:
        """Runs a step to completion and returns its stdout."""
        command = self.rewrite(step)
        self.n_steps += 1
        out = self.directory / f"step{self.n_steps}.out"
        err = self.directory / f"step{self.n_steps}.err"
        with open(out, "wb") as stdout, open(err, "wb") as stderr:
            process = subprocess.Popen(
                ["bash", "-c", self.script(command, exec_last=False)],
                cwd=self.work, env=self.env, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr,
                start_new_session=True,
            )
            try:
                code = process.wait(timeout=STEP_TIMEOUT_S)
            except BaseException as error:
                # Our deadline, or pytest's: the step and whatever it started go.
                kill_session(process)
                if not isinstance(error, subprocess.TimeoutExpired):
                    raise
                raise AssertionError(
                    f"step {step.comment!r} did not finish within {STEP_TIMEOUT_S}s:\n{command}\n"
                    f"stdout:\n{out.read_text(errors='replace')}\nstderr:\n{err.read_text(errors='replace')}\n"
                    f"{self.logs()}"
                ) from None
        assert code == 0, (
            f"step {step.comment!r} exited with {code}:\n{command}\nstdout:\n{out.read_text(errors='replace')}\n"
            f"stderr:\n{err.read_text(errors='replace')}\n{self.logs()}"
        )
        return out.read_text(errors="replace")

    def variable(self, name: str) -> str:
        """A shell variable the steps so far assigned."""
        script = f"source {shlex.quote(str(self.state))}\nprintf %s \"${{{name}:-}}\"\n"
        return subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True, timeout=10).stdout

    def output_of_background(self, needle: str) -> str:
        for step, _, log in self.background:
            if needle in step.command:
                return log.read_text(errors="replace")
        raise AssertionError(f"no background step runs {needle!r}")

    def logs(self) -> str:
        return "\n".join(
            f"--- {step.comment}:\n{log.read_text(errors='replace')[-4000:]}" for step, _, log in self.background
        )

    def stop(self) -> dict[str, int | None]:
        """SIGTERM to everything still running in the background (each is a session of its own,
        started here), then SIGKILL what has not exited in time. Returns each exit status."""
        codes: dict[str, int | None] = {}
        for step, process, _ in reversed(self.background):
            if process.poll() is None:
                signal_session(process, signal.SIGTERM)
            try:
                codes[step.command] = process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                kill_session(process)
                codes[step.command] = None
        return codes


def signal_session(process: subprocess.Popen, signum: int) -> None:
    """Signals the session a step runs in (started here with start_new_session, so its id is
    the step's pid), which holds the step and anything it started."""
    try:
        os.killpg(process.pid, signum)
    except ProcessLookupError:
        pass


def kill_session(process: subprocess.Popen) -> None:
    signal_session(process, signal.SIGKILL)
    process.wait(timeout=STOP_TIMEOUT_S)


def json_lines(text: str) -> list[dict]:
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            rows.append(json.loads(line))
    return rows


def test_readme_quickstart_runs_as_written(tmp_path: Path):
    steps = quickstart_steps(README.read_text())
    commands = [step.command for step in steps]
    # The scenario the issue asks for, in the README's own words.
    for needle in ("tidewater serve", "tidewater device add", "mosquitto_pub", "HoppingWindow(second, 30, 10)",
                   "tidewater query create", "--out-of-order-ms", "--from", "tidewater consume --topic alerts",
                   "tidewater trigger create", "--webhook"):
        assert any(needle in command for command in commands), f"no Quickstart command has {needle!r}"
    device_add = next(re.search(r"(\w+)=\$\(tidewater device add (\S+)\)", c) for c in commands if "device add" in c)
    assert device_add, "the Quickstart registers its device as VAR=$(tidewater device add ID)"
    key_variable, device_id = device_add.group(1), device_add.group(2)

    quickstart = Quickstart(tmp_path, assigned_variables(steps))
    outputs: dict[str, str] = {}
    try:
        for step in steps:
            if step.background:
                quickstart.start(step)
                continue
            outputs[step.command] = quickstart.run(step)
            if "tidewater device add" in step.command:
                # A person types for more than a second; the gateway needs about one to see it.
                key = quickstart.variable(key_variable)
                assert len(key) == 44, f"expected a base64 key of 32 bytes in ${key_variable}, got {key!r}"
                connect_when_registered(quickstart.mqtt_port, device_id, key, V5).close()

        # The readings landed in telemetry, keyed by the device.
        telemetry = next(out for command, out in outputs.items() if "--topic telemetry" in command)
        readings = [line for line in telemetry.splitlines() if line.startswith(f"{device_id} ")]
        assert len(readings) >= 5, f"expected the device's readings in telemetry, got:\n{telemetry}"

        # The alert row arrived at the consumer...
        consumed = next(out for command, out in outputs.items() if "--topic alerts" in command)
        alerts = json_lines(consumed)
        assert alerts, f"tidewater consume printed no alert:\n{consumed}\n{quickstart.logs()}"
        assert all(row["deviceId"] == device_id and row["avg_temp"] > 70 for row in alerts), alerts
        assert alerts[0]["windowEnd"] == "2026-01-01T00:00:50.0000000Z", alerts
        assert abs(alerts[0]["avg_temp"] - 72.0) < 1e-9, alerts

        # ... and at the webhook, whose receiver prints each body it gets.
        deadline = time.monotonic() + DELIVERY_TIMEOUT_S
        while True:
            received = json_lines(quickstart.output_of_background("HTTPServer"))
            if alerts[0] in received:
                break
            assert time.monotonic() < deadline, (
                f"the webhook received no alert within {DELIVERY_TIMEOUT_S}s: {received}\n{quickstart.logs()}"
            )
            time.sleep(POLL_S)
    finally:
        codes = quickstart.stop()
    serve = next(command for command in codes if "tidewater serve" in command)
    assert codes[serve] == 0, f"tidewater serve exited with {codes[serve]} on SIGTERM:\n{quickstart.logs()}"
