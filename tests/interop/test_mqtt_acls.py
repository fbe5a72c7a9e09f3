"""MQTT clients that are not devices (issue 17): SCRAM users log in to the gateway with their
user name and password, and topic rules (`tidewater mqtt-acl`) decide what users and anonymous
clients may publish and subscribe to.

The module runs one `tidewater serve` whose only Kafka listener is SASL_PLAINTEXT, with a
bootstrap superuser `admin` and anonymous MQTT clients allowed, so authorization is on and the
rules are written as the admin. Each test uses users, client ids and topics of its own, since
rules accumulate: once a rule for any user exists, every user is under rules (deny by default).
What an allowed PUBLISH appended is read back from the pub/sub topic with confluent-kafka; that a
refused one was not is read there too, after a later allowed PUBLISH of the same client was
acknowledged (acknowledgements leave in order, each after its own append). A standalone
`tidewater gateway` in front of the same broker checks users by logging in to it.
"""

from __future__ import annotations

import base64
import os
import re
import subprocess
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from confluent_kafka import Consumer, TopicPartition

from gateway_support import MQTT_TIMEOUT_S, REGISTRY_TIMEOUT_S, V5, VERSIONS, raw_connect
from conftest import tidewater_binary
from security_support import QUIET_LIBRDKAFKA
from test_mqtt_pubsub import Client
from trigger_support import tidewater

ADMIN, ADMIN_PASSWORD = "admin", "mqtt-acl-admin-secret"
MESSAGES_TOPIC = "mqtt-messages"
# MQTT 5 reason codes and 3.1.1 return codes.
NOT_AUTHORIZED = 0x87
BAD_USER_NAME_OR_PASSWORD = 0x86
# A refused subscription, on both versions (docs/gateway.md: what the Paho suite accepts).
SUBACK_REFUSED = 0x80
CONNACK_BAD_CREDENTIALS_311 = 4


class Gateway:
    """The module's broker, its admin's CLI and Kafka settings."""

    def __init__(self, broker, directory: Path):
        self.broker = broker
        self.bootstrap = broker.bootstrap_of("SASL_PLAINTEXT")
        self.admin_config = self.properties(directory / "admin.properties", ADMIN, ADMIN_PASSWORD)
        self.directory = directory

    def properties(self, path: Path, user: str, password: str) -> Path:
        path.write_text(
            f"bootstrap.servers={self.bootstrap}\nsecurity.protocol=SASL_PLAINTEXT\n"
            f"sasl.mechanism=SCRAM-SHA-512\nsasl.username={user}\nsasl.password={password}\n"
        )
        return path

    @property
    def port(self) -> int:
        return self.broker.mqtt_port

    def cli(self, *args: str, stdin: str | None = None, check: bool = True, config: Path | None = None):
        return tidewater(*args, bootstrap=None, client_config=config or self.admin_config, stdin=stdin, check=check)

    def create_user(self, name: str) -> str:
        password = f"pw-{uuid.uuid4().hex}"
        self.cli("user", "create", name, "--password-stdin", stdin=password + "\n")
        return password

    def rule(self, *args: str) -> None:
        self.cli("mqtt-acl", "add", *args)

    def messages(self) -> list[tuple[str, bytes]]:
        """Every (MQTT topic, payload) in the pub/sub topic, read to its end."""
        consumer = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": f"acl-test-{uuid.uuid4().hex}",
                "security.protocol": "SASL_PLAINTEXT",
                "sasl.mechanism": "SCRAM-SHA-512",
                "sasl.username": ADMIN,
                "sasl.password": ADMIN_PASSWORD,
                "enable.auto.commit": False,
                "logger": QUIET_LIBRDKAFKA,
            }
        )
        try:
            metadata = consumer.list_topics(MESSAGES_TOPIC, timeout=MQTT_TIMEOUT_S)
            partitions = list(metadata.topics[MESSAGES_TOPIC].partitions)
            ends = {p: consumer.get_watermark_offsets(TopicPartition(MESSAGES_TOPIC, p), timeout=MQTT_TIMEOUT_S)[1] for p in partitions}
            consumer.assign([TopicPartition(MESSAGES_TOPIC, p, 0) for p in partitions if ends[p] > 0])
            found, done = [], {p for p in partitions if ends[p] == 0}
            deadline = time.monotonic() + MQTT_TIMEOUT_S
            while len(done) < len(partitions):
                assert time.monotonic() < deadline, "the pub/sub topic was not read to its end in time"
                for message in consumer.consume(num_messages=500, timeout=0.5):
                    assert message.error() is None, message.error()
                    found.append((message.key().decode(), message.value()))
                    if message.offset() + 1 >= ends[message.partition()]:
                        done.add(message.partition())
            return found
        finally:
            consumer.close()


@pytest.fixture(scope="module")
def gateway(module_broker_factory, tmp_path_factory) -> Gateway:
    broker = module_broker_factory(
        "--mqtt-allow-anonymous",
        env={"TIDEWATER_BOOTSTRAP_USER": f"{ADMIN}:{ADMIN_PASSWORD}", "TIDEWATER_SUPERUSERS": f"User:{ADMIN}"},
        listeners=("SASL_PLAINTEXT",),
        plaintext=False,
    )
    return Gateway(broker, tmp_path_factory.mktemp("mqtt-acls"))


class RuledClient(Client):
    """A paho client that also records each PUBLISH's acknowledgement reason code."""

    def __init__(self, *args, **kwargs):
        self.acks: dict[int, int] = {}
        self.acks_lock = threading.Lock()
        super().__init__(*args, **kwargs)
        self.client.on_publish = self._on_publish

    def _on_publish(self, client, userdata, mid, reason_code, properties=None):
        with self.acks_lock:
            self.acks[mid] = reason_code.value

    def publish_code(self, topic: str, payload: bytes, qos: int = 1) -> int:
        """Publishes and returns the PUBACK's reason code (3.1.1: 0, success, always)."""
        info = self.client.publish(topic, payload, qos=qos)
        deadline = time.monotonic() + MQTT_TIMEOUT_S
        while time.monotonic() < deadline:
            with self.acks_lock:
                if info.mid in self.acks:
                    return self.acks[info.mid]
            time.sleep(0.01)
        raise AssertionError(f"no PUBACK for {topic}")


def connect(gateway: Gateway, version: str, client_id: str, credentials: tuple[str, str] | None) -> RuledClient:
    client = RuledClient(gateway.port, VERSIONS[version], client_id, credentials=credentials)
    assert client.connack == 0, f"refused: {client.connack}"
    return client


def subscribe_code(client: Client, topic: str) -> int:
    (code,) = client.subscribe((topic, 1))
    return code


def until(check, what: str):
    """Retries `check` until it returns a truthy value: rule changes reach the gateway through
    the registry topic within about a second."""
    deadline = time.monotonic() + REGISTRY_TIMEOUT_S
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def assert_wrong_logins_refused(port: int, version: str, client_id: str, name: str, password: str) -> None:
    """A wrong password and an unknown user get the exact code on the wire: MQTT 5 0x86, 3.1.1
    return code 4."""
    expected = BAD_USER_NAME_OR_PASSWORD if version == "5.0" else CONNACK_BAD_CREDENTIALS_311
    level = 5 if version == "5.0" else 4
    for user, wrong_password in ((name, "wrong"), ("nobody-" + name, password)):
        sock, connack = raw_connect(port, client_id, wrong_password, level=level, user=user)
        sock.close()
        assert connack[0] == 0x20 and connack[3] == expected, connack


@pytest.mark.parametrize("version", ["3.1.1", "5.0"])
def test_a_scram_user_logs_in_with_its_password_and_is_refused_with_another(gateway, version):
    name = f"app-{uuid.uuid4().hex[:8]}"
    password = gateway.create_user(name)
    client = connect(gateway, version, f"{name}-client", (name, password))
    client.close()
    assert_wrong_logins_refused(gateway.port, version, f"{name}-client", name, password)
    log = "\n".join(gateway.broker.lines)
    assert password not in log


@pytest.mark.parametrize("version", ["3.1.1", "5.0"])
def test_rules_allow_and_deny_publish_and_subscribe_with_each_versions_codes(gateway, version):
    name = f"ruled-{version.replace('.', '')}-{uuid.uuid4().hex[:6]}"
    password = gateway.create_user(name)
    area = f"area-{uuid.uuid4().hex[:8]}"
    gateway.rule("allow", "all", f"{area}/#", "--user", name)
    gateway.rule("deny", "all", f"{area}/secret/#", "--user", name)
    client = connect(gateway, version, f"{name}-c", (name, password))
    try:
        refused_subscribe = SUBACK_REFUSED
        until(lambda: subscribe_code(client, f"{area}/secret/x") == refused_subscribe, "the deny rule never applied")
        assert subscribe_code(client, f"{area}/open/+") == 1
        assert subscribe_code(client, "elsewhere/#") == refused_subscribe
        # A wildcard subscription is granted, but carries nothing a deny rule refuses.
        assert subscribe_code(client, f"{area}/#") == 1
        refused_publish = NOT_AUTHORIZED if version == "5.0" else 0
        assert client.publish_code(f"{area}/secret/x", b"must not be appended") == refused_publish
        assert client.publish_code("elsewhere/x", b"must not be appended either") == refused_publish
        assert client.publish_code(f"{area}/open/1", b"allowed") == 0
        received = client.wait_for(1)
        assert [(topic, payload) for topic, payload, _, _ in received] == [(f"{area}/open/1", b"allowed")]
        messages = gateway.messages()
        assert (f"{area}/open/1", b"allowed") in messages
        assert not [payload for _, payload in messages if payload.startswith(b"must not")], messages
        assert client.client.is_connected(), "a refused PUBLISH must not end the connection"
        # Another user may publish under secret/: the wildcard subscription does not carry it.
        # The pub/sub topic has one partition here, so what was published first arrives first.
        other = f"{name}-other"
        other_password = gateway.create_user(other)
        gateway.rule("allow", "publish", f"{area}/#", "--user", other)
        # MQTT 5, so its PUBACK says when the new rule applies.
        publisher = connect(gateway, "5.0", f"{other}-c", (other, other_password))
        try:
            until(lambda: publisher.publish_code(f"{area}/secret/y", b"secret") == 0, "the allow never applied")
            assert publisher.publish_code(f"{area}/open/2", b"after the secret") == 0
        finally:
            publisher.close()
        received = client.wait_for(2)
        assert [(topic, payload) for topic, payload, _, _ in received] == [
            (f"{area}/open/1", b"allowed"),
            (f"{area}/open/2", b"after the secret"),
        ]
        assert (f"{area}/secret/y", b"secret") in gateway.messages()
    finally:
        client.close()
    metrics = tidewater_metrics(gateway)
    assert 'tidewater_mqtt_authorization_denied_total{action="publish"}' in metrics
    assert 'tidewater_mqtt_authorization_denied_total{action="subscribe"}' in metrics


def tidewater_metrics(gateway: Gateway) -> str:
    """The non-zero `tidewater_mqtt_authorization_denied_total` lines of /metrics, read as the
    admin (with SASL listeners /metrics asks for a SCRAM user)."""
    credentials = base64.b64encode(f"{ADMIN}:{ADMIN_PASSWORD}".encode()).decode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{gateway.broker.admin_port}/metrics", headers={"Authorization": f"Basic {credentials}"}
    )
    with urllib.request.urlopen(request, timeout=MQTT_TIMEOUT_S) as answer:
        text = answer.read().decode()
    return "\n".join(
        line
        for line in text.splitlines()
        if line.startswith("tidewater_mqtt_authorization_denied_total") and not line.endswith(" 0")
    )


def test_placeholders_give_each_user_and_client_its_own_topics(gateway):
    tag = uuid.uuid4().hex[:8]
    alice, bob = f"alice-{tag}", f"bob-{tag}"
    alice_password, bob_password = gateway.create_user(alice), gateway.create_user(bob)
    gateway.rule("allow", "all", f"home-{tag}/%u/#", "--everyone")
    gateway.rule("allow", "publish", f"clients-{tag}/%c", "--everyone")
    alice_client = connect(gateway, "5.0", f"a-{tag}", (alice, alice_password))
    bob_client = connect(gateway, "5.0", f"b-{tag}", (bob, bob_password))
    try:
        until(lambda: subscribe_code(alice_client, f"home-{tag}/{alice}/#") == 1, "the %u rule never applied")
        assert subscribe_code(alice_client, f"home-{tag}/{bob}/#") == SUBACK_REFUSED
        assert subscribe_code(alice_client, f"home-{tag}/+/#") == SUBACK_REFUSED
        assert bob_client.publish_code(f"home-{tag}/{alice}/x", b"not bob's") == NOT_AUTHORIZED
        assert bob_client.publish_code(f"clients-{tag}/a-{tag}", b"not bob's client") == NOT_AUTHORIZED
        assert bob_client.publish_code(f"clients-{tag}/b-{tag}", b"bob's client") == 0
        assert alice_client.publish_code(f"home-{tag}/{alice}/x", b"alice's own") == 0
        received = alice_client.wait_for(1)
        assert [(topic, payload) for topic, payload, _, _ in received] == [(f"home-{tag}/{alice}/x", b"alice's own")]
    finally:
        alice_client.close()
        bob_client.close()


def test_a_rule_added_while_connected_applies_to_the_next_subscribe_and_publish(gateway):
    tag = uuid.uuid4().hex[:8]
    name = f"live-{tag}"
    password = gateway.create_user(name)
    gateway.rule("allow", "all", f"live-{tag}/#", "--user", name)
    client = connect(gateway, "5.0", f"live-{tag}", (name, password))
    try:
        until(lambda: subscribe_code(client, f"live-{tag}/a") == 1, "the allow rule never applied")
        assert client.publish_code(f"live-{tag}/b", b"before") == 0
        gateway.rule("deny", "all", f"live-{tag}/b", "--client", f"live-{tag}")
        until(lambda: subscribe_code(client, f"live-{tag}/b") == SUBACK_REFUSED, "the new deny never applied")
        assert client.publish_code(f"live-{tag}/b", b"after") == NOT_AUTHORIZED
        gateway.cli("mqtt-acl", "remove", "deny", "all", f"live-{tag}/b", "--client", f"live-{tag}")
        until(lambda: subscribe_code(client, f"live-{tag}/b") == 1, "the removed deny still applied")
    finally:
        client.close()
    listed = gateway.cli("mqtt-acl", "list").stdout
    assert f"allow all live-{tag}/# --user {name}" in listed, listed
    assert f"live-{tag}/b" not in listed, listed


def test_anonymous_clients_get_rules_of_their_own(gateway):
    tag = uuid.uuid4().hex[:8]
    anonymous = connect(gateway, "3.1.1", f"anon-{tag}", None)
    try:
        gateway.rule("allow", "all", f"public-{tag}/#", "--anonymous")
        until(lambda: subscribe_code(anonymous, f"anywhere-{tag}") == SUBACK_REFUSED, "no default deny")
        assert subscribe_code(anonymous, f"public-{tag}/x") == 1
        # A will the rules refuse refuses the CONNECT.
        refused = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"will-{tag}", protocol=V5)
        codes = []
        refused.on_connect = lambda client, userdata, flags, code, properties=None: codes.append(code.value)
        refused.will_set(f"private-{tag}/will", b"gone", qos=1)
        refused.connect("127.0.0.1", gateway.port)
        refused.loop_start()
        until(lambda: codes, "no CONNACK")
        refused.loop_stop()
        assert codes == [NOT_AUTHORIZED]
    finally:
        anonymous.close()


def test_rules_survive_a_restart(gateway):
    tag = uuid.uuid4().hex[:8]
    name = f"durable-{tag}"
    password = gateway.create_user(name)
    gateway.rule("allow", "subscribe", f"kept-{tag}/#", "--user", name)
    gateway.rule("deny", "subscribe", f"kept-{tag}/no", "--user", name)
    gateway.broker.restart()
    gateway.bootstrap = gateway.broker.bootstrap_of("SASL_PLAINTEXT")
    client = until(lambda: _try_connect(gateway, f"d-{tag}", (name, password)), "could not reconnect")
    try:
        assert subscribe_code(client, f"kept-{tag}/no") == SUBACK_REFUSED
        assert subscribe_code(client, f"kept-{tag}/yes") == 1
    finally:
        client.close()


def _try_connect(gateway: Gateway, client_id: str, credentials: tuple[str, str]) -> RuledClient | None:
    client = RuledClient(gateway.port, V5, client_id, credentials=credentials)
    if client.connack == 0:
        return client
    client.client.loop_stop()
    return None


def test_changing_rules_needs_the_admins_rights(gateway):
    tag = uuid.uuid4().hex[:8]
    name = f"plain-{tag}"
    password = gateway.create_user(name)
    config = gateway.properties(gateway.directory / f"{name}.properties", name, password)
    refused = gateway.cli(
        "mqtt-acl", "add", "allow", "all", "#", "--user", name, config=config, check=False
    )
    assert refused.returncode != 0, refused.stdout
    assert "authoriz" in refused.stderr.lower(), refused.stderr
    assert f"--user {name}" not in gateway.cli("mqtt-acl", "list").stdout
    bad = gateway.cli("mqtt-acl", "add", "allow", "all", "a/#/b", "--everyone", check=False)
    assert bad.returncode != 0 and "not a valid MQTT topic filter" in bad.stderr, bad.stderr


def test_a_standalone_gateway_checks_a_user_by_logging_in_to_the_cluster(gateway):
    """`tidewater gateway` is only a Kafka client: it proves a user's password by a SCRAM login
    to the cluster with it, and applies the same rules as the embedded gateway."""
    tag = uuid.uuid4().hex[:8]
    name = f"standalone-{tag}"
    password = gateway.create_user(name)
    gateway.rule("allow", "all", f"standalone-{tag}/#", "--user", name)
    # The gateway's own identity: the admin, over SCRAM-SHA-512, as any client of the cluster.
    env = {key: value for key, value in os.environ.items() if not key.startswith("TIDEWATER_")}
    command = [
        str(tidewater_binary()), "gateway", "--client-config", str(gateway.admin_config),
        "--mqtt-listen", "127.0.0.1:0", "--http-listen", "none", "--admin-listen", "none",
    ]
    standalone = subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env
    )
    log: list[str] = []
    try:
        assert standalone.stderr is not None
        port = None
        deadline = time.monotonic() + MQTT_TIMEOUT_S
        while port is None and time.monotonic() < deadline:
            line = standalone.stderr.readline()
            assert line, f"the gateway exited with {standalone.poll()}"
            log.append(line)
            match = re.search(r"tidewater gateway is running.*\bmqtt=127\.0\.0\.1:(\d+)", line)
            port = int(match.group(1)) if match else None
        assert port is not None, "the gateway logged no running line"
        threading.Thread(target=lambda: log.extend(standalone.stderr), daemon=True).start()

        assert_wrong_logins_refused(port, "5.0", f"s-{tag}", name, password)
        client = RuledClient(port, V5, f"s-{tag}", credentials=(name, password))
        assert client.connack == 0, client.connack
        try:
            until(lambda: subscribe_code(client, f"standalone-{tag}/in") == 1, "the allow rule never applied")
            assert subscribe_code(client, f"elsewhere-{tag}") == SUBACK_REFUSED
            assert client.publish_code(f"standalone-{tag}/in", b"through the standalone gateway") == 0
            assert client.publish_code(f"elsewhere-{tag}", b"refused") == NOT_AUTHORIZED
            received = client.wait_for(1)
            assert [payload for _, payload, _, _ in received] == [b"through the standalone gateway"]
        finally:
            client.close()
    finally:
        standalone.terminate()
        standalone.wait(timeout=30)
    assert password not in "".join(log)
