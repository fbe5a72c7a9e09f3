"""mosquitto_sub (Debian's mosquitto-clients, libmosquitto) as a subscriber, with mosquitto_pub
publishing, both as separate processes against the gateway, over MQTT 3.1.1 and 5: QoS 0, 1 and
2 round trips, `+` and `#` filters, a retained message (flag set, then cleared by
`--remove-retained`), a persistent session (`-c -i ID`) resumed with what was published while it
was away, a will sent when a mosquitto_sub is killed with SIGKILL (and not when one ends
normally), and commands from the `commands` topic reaching a device's mosquitto_sub, online and
after waiting for it.

Plain pub/sub needs anonymous clients, so this module has a broker of its own with
`--mqtt-allow-anonymous` (conftest's `anonymous_gateway`). Each mosquitto_sub runs with `-d`, so
the test sees its SUBACK and publishes only after it, with `-W` so that it never outlives its
test, and prints each message through `-F` as one tab-separated line. The gateway's pub/sub
topic has one partition, so messages on different MQTT topics keep the order they were
acknowledged in; the wildcard test relies on that.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass

import pytest

from gateway_support import (
    MQTT_TIMEOUT_S,
    V5,
    BackgroundProgram,
    add_device,
    command_deliveries,
    connect_when_registered,
    line_buffered,
    produce_command,
    unique,
)

VERSIONS = ["mqttv311", "mqttv5"]
# mosquitto_sub's -W: it disconnects and exits this many seconds after connecting, whatever it got.
SUB_TIMEOUT_S = 20
# Each message, tab-separated: a marker, topic, QoS, retain flag, MQTT 5 user properties
# (key:value), payload. Payloads here have no tabs or newlines.
MESSAGE_FORMAT = r"message\t%t\t%q\t%r\t%P\t%p"


@dataclass(frozen=True)
class Received:
    topic: str
    qos: int
    retain: bool
    user_properties: str
    payload: str


def mosquitto_binary(name: str) -> str:
    binary = shutil.which(name)
    assert binary, f"{name} is not installed (Debian package mosquitto-clients); scripts/test installs it"
    return binary


def mosquitto_pub(port: int, version: str, *args: str, lines: list[str] = ()) -> None:
    """Runs mosquitto_pub (anonymous unless `args` say otherwise) to completion; with `lines`,
    one message per line of stdin (-l), all over one connection. It must succeed."""
    command = [mosquitto_binary("mosquitto_pub"), "-h", "127.0.0.1", "-p", str(port), "-V", version, *args]
    if lines:
        command.append("-l")
    result = subprocess.run(
        command, input="".join(f"{line}\n" for line in lines), capture_output=True, text=True, timeout=MQTT_TIMEOUT_S
    )
    assert result.returncode == 0, f"{' '.join(command)}: exit {result.returncode}\n{result.stdout}{result.stderr}"


def mosquitto_sub(port: int, version: str, *args: str) -> BackgroundProgram:
    """Starts mosquitto_sub in the background with debug output (for its SUBACK) and one
    `message` line per message."""
    command = [
        mosquitto_binary("mosquitto_sub"),
        "-h", "127.0.0.1", "-p", str(port), "-V", version,
        "-d", "-F", MESSAGE_FORMAT, "-W", str(SUB_TIMEOUT_S),
        *args,
    ]  # fmt: skip
    return BackgroundProgram(line_buffered(command))


def is_subscribed(line: str) -> bool:
    return "received SUBACK" in line


def is_message(line: str) -> bool:
    return line.startswith("message\t")


def messages_of(program: BackgroundProgram, count: int) -> list[Received]:
    """The first `count` messages `program` printed, once it has."""
    received = []
    for line in program.wait_for_lines(is_message, count)[:count]:
        _, topic, qos, retain, user_properties, payload = line.split("\t", 5)
        received.append(Received(topic, int(qos), retain == "1", user_properties, payload))
    return received


def assert_exits_cleanly(program: BackgroundProgram) -> None:
    code = program.wait_exit(SUB_TIMEOUT_S + MQTT_TIMEOUT_S)
    assert code == 0, f"exit {code}: {program.describe()}"


@pytest.mark.parametrize("version", VERSIONS)
def test_every_qos_round_trips_in_order(anonymous_gateway, version):
    root = unique("plant")
    port = anonymous_gateway.mqtt_port
    per_qos = 5
    with mosquitto_sub(port, version, "-q", "2", "-t", f"{root}/#", "-C", str(3 * per_qos)) as subscriber:
        subscriber.wait_for_line(is_subscribed)
        for qos in (0, 1, 2):
            lines = [f"{version} qos {qos} reading {index}" for index in range(per_qos)]
            mosquitto_pub(port, version, "-t", f"{root}/qos{qos}", "-q", str(qos), lines=lines)
        received = messages_of(subscriber, 3 * per_qos)
        assert_exits_cleanly(subscriber)
    for qos in (0, 1, 2):
        of_qos = [message for message in received if message.topic == f"{root}/qos{qos}"]
        assert [message.payload for message in of_qos] == [f"{version} qos {qos} reading {index}" for index in range(per_qos)]
        assert {(message.qos, message.retain) for message in of_qos} == {(qos, False)}, of_qos


def test_wildcards_match_by_level(anonymous_gateway):
    root = unique("site")
    port = anonymous_gateway.mqtt_port
    filters = ["-t", f"{root}/+/temp", "-t", f"{root}/hall/#"]
    # Published one after the other, each acknowledged before the next, so each topic that should
    # not match comes before the last one that should: had it been delivered, it would be among
    # the first three.
    published = [
        (f"{root}/kitchen/temp", True),
        (f"{root}/kitchen/humidity", False),
        (f"{root}/hall", True),  # `#` matches its parent level too
        (f"{root}/a/b/temp", False),  # `+` is exactly one level
        (f"{root}/hallway/door", False),
        (f"{root}/hall/door/open", True),
    ]
    with mosquitto_sub(port, "mqttv5", "-q", "1", *filters, "-C", "3") as subscriber:
        subscriber.wait_for_line(is_subscribed)
        for topic, _ in published:
            mosquitto_pub(port, "mqttv311", "-t", topic, "-q", "1", "-m", topic)
        received = messages_of(subscriber, 3)
        assert_exits_cleanly(subscriber)
    assert [message.topic for message in received] == [topic for topic, matches in published if matches]
    assert [message.payload for message in received] == [message.topic for message in received]


@pytest.mark.parametrize("version", VERSIONS)
def test_retained_message_reaches_a_later_subscriber_until_removed(anonymous_gateway, version):
    topic = unique("status") + "/line-1"
    port = anonymous_gateway.mqtt_port
    mosquitto_pub(port, version, "-t", topic, "-q", "1", "-r", "-m", "running")
    # --retained-only prints only messages with the retain flag; --remove-retained then clears
    # each one it got by publishing an empty retained message (QoS 1) to its topic. Not with -C:
    # mosquitto_sub 2.0.11 then waits for that publish to be acknowledged before it disconnects,
    # but never notices the PUBACK (it sets no publish callback) and runs until -W. So the test
    # waits for the PUBACK itself and kills it.
    with mosquitto_sub(port, version, "-q", "1", "-t", topic, "--retained-only", "--remove-retained") as late:
        assert messages_of(late, 1) == [Received(topic, 1, True, "", "running")]
        late.wait_for_line(lambda line: "received PUBACK" in line)
        late.kill()
    # A subscriber with --retained-only exits at the first message without the retain flag, so a
    # live message published after its SUBACK ends it; a retained message still held would come
    # first. The removal is acknowledged but not necessarily applied by the time a new
    # subscriber arrives, so subscribers come until one sees none (or the deadline fails this).
    for attempt in range(10):
        with mosquitto_sub(port, version, "-q", "1", "-t", topic, "--retained-only") as later:
            later.wait_for_line(is_subscribed)
            mosquitto_pub(port, version, "-t", topic, "-q", "1", "-m", f"live {attempt}")
            assert_exits_cleanly(later)
            if not any(is_message(line) for line in later.lines):
                return
    raise AssertionError(f"the retained message was still sent after its removal: {later.describe()}")


@pytest.mark.parametrize("version", VERSIONS)
def test_persistent_session_gets_what_was_published_while_away(anonymous_gateway, version):
    topic = unique("jobs") + "/queue"
    client_id = unique("worker")
    port = anonymous_gateway.mqtt_port
    # -c keeps the session (MQTT 5: a Session Expiry Interval that never ends); -E exits, with a
    # normal DISCONNECT, as soon as the subscription is acknowledged.
    session = ["-c", "-i", client_id, "-q", "1", "-t", topic]
    with mosquitto_sub(port, version, *session, "-E") as first:
        first.wait_for_line(is_subscribed)
        assert_exits_cleanly(first)
    jobs = [f"job {index}" for index in range(4)]
    mosquitto_pub(port, version, "-t", topic, "-q", "1", lines=jobs[:2])
    mosquitto_pub(port, version, "-t", topic, "-q", "2", lines=jobs[2:])
    # Back with the same client id: what arrived meanwhile comes at the subscription's QoS 1.
    with mosquitto_sub(port, version, *session, "-C", str(len(jobs))) as back:
        received = messages_of(back, len(jobs))
        assert_exits_cleanly(back)
    assert received == [Received(topic, 1, False, "", job) for job in jobs]


@pytest.mark.parametrize("version", VERSIONS)
def test_will_is_sent_when_a_subscriber_is_killed(anonymous_gateway, version):
    will_topic = unique("wills") + "/client"
    port = anonymous_gateway.mqtt_port
    with mosquitto_sub(port, "mqttv5", "-q", "1", "-t", will_topic, "-C", "1") as watcher:
        watcher.wait_for_line(is_subscribed)

        def with_will(payload: str) -> list[str]:
            return [
                "-i", unique("sub"), "-t", unique("idle"),
                "--will-topic", will_topic, "--will-payload", payload, "--will-qos", "1",
            ]  # fmt: skip

        # One that ends normally (a DISCONNECT after its SUBACK) leaves no will behind; it goes
        # first, so had its will been sent it would be the one message the watcher waits for.
        with mosquitto_sub(port, version, *with_will("should not be sent"), "-E") as polite:
            polite.wait_for_line(is_subscribed)
            assert_exits_cleanly(polite)
        with mosquitto_sub(port, version, *with_will("gone")) as doomed:
            doomed.wait_for_line(is_subscribed)
            doomed.kill()
        received = messages_of(watcher, 1)
        assert_exits_cleanly(watcher)
    assert received == [Received(will_topic, 1, False, "", "gone")]


@pytest.mark.parametrize("version", VERSIONS)
def test_commands_reach_a_device_online_and_after_it_was_away(anonymous_gateway, version):
    device_id = unique("pump")
    key = add_device(anonymous_gateway.bootstrap, device_id)
    connect_when_registered(anonymous_gateway.mqtt_port, device_id, key, V5).close()
    devicebound = f"devices/{device_id}/messages/devicebound/"

    def device_subscriber() -> BackgroundProgram:
        # -C 1: the command's PUBACK goes out, then a normal DISCONNECT.
        return mosquitto_sub(
            anonymous_gateway.mqtt_port, version,
            "-i", device_id, "-u", device_id, "-P", key, "-q", "1", "-t", devicebound + "#", "-C", "1",
        )  # fmt: skip

    # The record's headers become MQTT 5 user properties; 3.1.1 has nowhere to put them.
    user_properties = "kind:maintenance" if version == "mqttv5" else ""
    with device_subscriber() as online:
        online.wait_for_line(is_subscribed)
        produce_command(anonymous_gateway.bootstrap, device_id, b'{"action":"calibrate"}')
        assert messages_of(online, 1) == [Received(devicebound, 1, False, user_properties, '{"action":"calibrate"}')]
        assert_exits_cleanly(online)
    assert len(command_deliveries(anonymous_gateway.bootstrap, device_id, 1)) == 1
    # Produced while no one is connected as the device: it waits. The first command was
    # acknowledged, so it is not sent again.
    produce_command(anonymous_gateway.bootstrap, device_id, b'{"action":"reboot"}')
    with device_subscriber() as back:
        assert messages_of(back, 1) == [Received(devicebound, 1, False, user_properties, '{"action":"reboot"}')]
        assert_exits_cleanly(back)
    deliveries = command_deliveries(anonymous_gateway.bootstrap, device_id, 2)
    assert len(deliveries) == 2, deliveries
    assert deliveries[0]["offset"] < deliveries[1]["offset"]
