"""mosquitto_pub (Debian's mosquitto-clients, libmosquitto) as a registered device: QoS 0, 1 and
2 over MQTT 3.1.1 and 5, each message read back from the telemetry topic with confluent-kafka in
the order it was published, MQTT 5 user properties (`-D publish user-property`) as record
headers, and a wrong key refused the way mosquitto_pub reports it. The tests never skip:
scripts/test installs mosquitto-clients."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from gateway_support import (
    MQTT_TIMEOUT_S,
    V5,
    add_device,
    connect_when_registered,
    events_topic,
    new_device_id,
    telemetry_of,
)

# mosquitto_pub exits with the CONNACK's code when it is refused.
EXIT_BAD_USER_NAME_OR_PASSWORD_5 = 0x86
EXIT_BAD_USER_NAME_OR_PASSWORD_311 = 4


@pytest.fixture
def mqtt_port(broker) -> int:
    assert broker.mqtt_port is not None, "the session broker logged no mqtt= address"
    return broker.mqtt_port


def mosquitto_pub(port: int, device_id: str, key: str, version: str, *args: str, lines: list[str] = ()) -> subprocess.CompletedProcess:
    """Runs mosquitto_pub as `device_id`; with `lines`, one message per line of stdin (-l), all
    over one connection."""
    binary = shutil.which("mosquitto_pub")
    assert binary, "mosquitto_pub is not installed (Debian package mosquitto-clients); scripts/test installs it"
    command = [binary, "-h", "127.0.0.1", "-p", str(port), "-i", device_id, "-u", device_id, "-P", key, "-V", version, *args]
    if lines:
        command.append("-l")
    return subprocess.run(
        command,
        input="".join(f"{line}\n" for line in lines),
        capture_output=True,
        text=True,
        timeout=MQTT_TIMEOUT_S,
    )


@pytest.mark.parametrize("version", ["mqttv311", "mqttv5"])
def test_every_qos_is_appended_in_order(bootstrap, mqtt_port, version):
    device_id = new_device_id("mosquitto")
    key = add_device(bootstrap, device_id)
    connect_when_registered(mqtt_port, device_id, key, V5).close()
    topic = events_topic(device_id) + "mosquitto"
    user_property = ["-D", "publish", "user-property", "site", "north"] if version == "mqttv5" else []
    expected = []
    for qos in (0, 1, 2):
        lines = [f"{version} qos {qos} message {index}" for index in range(3)]
        result = mosquitto_pub(mqtt_port, device_id, key, version, "-t", topic, "-q", str(qos), *user_property, lines=lines)
        assert result.returncode == 0, f"QoS {qos}: exit {result.returncode}\n{result.stdout}{result.stderr}"
        expected += lines
    records = telemetry_of(bootstrap, device_id, at_least=len(expected))
    assert [record.value().decode() for record in records] == expected
    gateway_headers = [("device-id", device_id.encode()), ("mqtt-topic", topic.encode())]
    for record in records:
        if version == "mqttv5":
            assert record.headers() == gateway_headers + [("site", b"north")]
        else:
            assert record.headers() == gateway_headers


@pytest.mark.parametrize(
    "version, exit_status, message",
    [
        ("mqttv311", EXIT_BAD_USER_NAME_OR_PASSWORD_311, "Connection Refused: bad user name or password"),
        ("mqttv5", EXIT_BAD_USER_NAME_OR_PASSWORD_5, "Bad User Name or Password"),
    ],
)
def test_a_wrong_key_fails_with_bad_user_name_or_password(bootstrap, mqtt_port, version, exit_status, message):
    device_id = new_device_id("mosquitto")
    key = add_device(bootstrap, device_id)
    connect_when_registered(mqtt_port, device_id, key, V5).close()
    wrong_key = "A" * 43 + "="
    result = mosquitto_pub(mqtt_port, device_id, wrong_key, version, "-t", events_topic(device_id), "-q", "1", "-m", "refused")
    assert result.returncode == exit_status, f"exit {result.returncode}\n{result.stdout}{result.stderr}"
    assert f"Connection error: {message}" in result.stderr, result.stderr
    assert telemetry_of(bootstrap, device_id, timeout_s=0) == []


def test_an_mqtt_3_1_client_is_turned_away(bootstrap, mqtt_port):
    """MQTT 3.1 (protocol name MQIsdp) is not spoken; the spec lets a server just close (3.1.1
    section 3.1.2.1), which mosquitto_pub reports as a lost connection."""
    device_id = new_device_id("mosquitto")
    key = add_device(bootstrap, device_id)
    connect_when_registered(mqtt_port, device_id, key, V5).close()
    result = mosquitto_pub(mqtt_port, device_id, key, "mqttv31", "-t", events_topic(device_id), "-q", "1", "-m", "3.1")
    assert result.returncode != 0 and "The connection was lost" in result.stderr, (result.returncode, result.stderr)
    assert telemetry_of(bootstrap, device_id, timeout_s=0) == []
