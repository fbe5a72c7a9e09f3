"""Users and ACLs through Tidewater's own CLI against a broker that only speaks SASL_SSL (issue
15: user and ACL management "through the CLI. Both survive a restart", and "`tidewater topic
list` against a SASL_SSL broker is a single documented command").

Each test runs its own `tidewater serve` whose one Kafka listener is SASL_SSL (SCRAM-SHA-256 and
SCRAM-SHA-512, with the module's test PKI), with a bootstrap user, `admin`
(TIDEWATER_BOOTSTRAP_USER), who is the one superuser, and no gateway. The CLI runs as a user
runs it: `tidewater ... --client-config admin.properties`, the admin's settings in a Java
properties file that holds bootstrap.servers too (so no --brokers), new passwords on stdin.
What the commands did is then checked with confluent-kafka logging in as the users they made:
alice logs in or is refused, consumes or is refused with Kafka's error codes.

No password may appear in any command's output or in the broker's log (`assert_no_secrets`).
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaError

import confluent_support as ck
from conftest import BrokerProcess
from security_support import QUIET_LIBRDKAFKA, Pki, Security, confluent_login_error, first_record_or_error, make_pki
from support import Record, base_timestamp_ms
from trigger_support import tidewater

ADMIN = "admin"
ADMIN_PASSWORD = "tide-admin-secret"
ALICE = "alice"
MECHANISMS = ["SCRAM-SHA-256", "SCRAM-SHA-512"]
# The timeout a CLI command that must fail is given (--timeout-ms), and the slack on top of it
# that it may take to say so and exit.
REFUSED_COMMAND_TIMEOUT_MS = 5_000
EXIT_SLACK_S = 20.0
# clap's exit status for a usage error.
USAGE_ERROR = 2
DEVICES_TOPIC = "_tidewater_devices"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


class SecuredCluster:
    """A broker whose only Kafka listener is SASL_SSL, the CLI run as its admin, and the clients
    of the users the CLI makes."""

    def __init__(self, broker: BrokerProcess, pki: Pki, directory: Path):
        self.broker = broker
        self.pki = pki
        self.admin_config = self.security(ADMIN, ADMIN_PASSWORD).write_properties(
            directory / "admin.properties", self.bootstrap
        )
        # Every command's stdout and stderr, searched for passwords at the end.
        self.outputs: list[str] = []

    @property
    def bootstrap(self) -> str:
        return self.broker.bootstrap_of("SASL_SSL")

    def security(self, user: str, password: str, mechanism: str = "SCRAM-SHA-512") -> Security:
        return Security("SASL_SSL", mechanism, user, password, ca=self.pki.ca)

    def cli(self, *args: str, stdin: str | None = None, check: bool = True, **options: Any):
        """`tidewater ARGS --client-config admin.properties` (bootstrap.servers from the file)."""
        result = tidewater(
            *args, bootstrap=None, client_config=self.admin_config, stdin=stdin, check=check, **options
        )
        self.outputs.extend([result.stdout, result.stderr])
        return result

    def lines(self, *args: str) -> list[str]:
        """The lines a command that must succeed prints."""
        return self.cli(*args).stdout.splitlines()

    def create_user(self, name: str, password: str) -> None:
        created = self.cli("user", "create", name, "--password-stdin", stdin=password + "\n")
        assert created.stdout.strip() == f"created user {name} (SCRAM-SHA-256, SCRAM-SHA-512)", created.stdout

    def users(self) -> dict[str, set[str]]:
        """`user list`: each user's mechanisms."""
        users = {}
        for line in self.lines("user", "list"):
            name, _, credentials = line.partition("  ")
            users[name] = {credential.split(" (")[0] for credential in credentials.split(", ")}
        return users

    def create_topic(self, topic: str, *values: bytes) -> None:
        """Creates `topic` with the CLI and produces `values` to it as the admin."""
        self.cli("topic", "create", topic, "--partitions", "1")
        if values:
            self.produce(topic, *values)

    def produce(self, topic: str, *values: bytes) -> None:
        records = [Record(None, value, (), base_timestamp_ms()) for value in values]
        ck.produce(self.bootstrap, topic, records, partition=0, **self.security(ADMIN, ADMIN_PASSWORD).librdkafka())

    def login_error(self, user: str, password: str, mechanism: str) -> KafkaError | None:
        return confluent_login_error(self.bootstrap, self.security(user, password, mechanism))

    def consume(self, security: Security, topic: str, group: str) -> bytes | KafkaError:
        """The next record of `topic` for a fresh consumer in `group` (its offset then
        committed), or the first error the consumer gets."""
        return first_record_or_error(
            {
                "bootstrap.servers": self.bootstrap,
                "client.id": f"cli-test-{security.username}",
                "group.id": group,
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                "logger": QUIET_LIBRDKAFKA,
                **security.librdkafka(),
            },
            topic,
        )

    def assert_no_secrets(self, *passwords: str) -> None:
        for password in (ADMIN_PASSWORD, *passwords):
            assert not [output for output in self.outputs if password in output], "a command printed a password"
            assert not [line for line in self.broker.lines if password in line], "the broker logged a password"


@pytest.fixture
def cluster(broker_factory, pki: Pki, tmp_path: Path) -> SecuredCluster:
    broker = broker_factory(
        "--tls-cert",
        str(pki.server.cert),
        "--tls-key",
        str(pki.server.key),
        "--superusers",
        f"User:{ADMIN}",
        "--mqtt-listen",
        "none",
        "--http-listen",
        "none",
        env={"TIDEWATER_BOOTSTRAP_USER": f"{ADMIN}:{ADMIN_PASSWORD}"},
        listeners=("SASL_SSL",),
        plaintext=False,
    )
    # SASL_SSL is the only way in from outside (INTERNAL is the components' own listener).
    assert set(broker.listener_ports) == {"SASL_SSL", "INTERNAL"}, broker.listener_ports
    return SecuredCluster(broker, pki, tmp_path)


def new_password() -> str:
    return f"pw-{uuid.uuid4().hex}"


def binding_lines(operations: list[str], resources: list[tuple[str, str]], pattern: str = "LITERAL") -> set[str]:
    """How `acl create` and `acl list` print alice's ALLOW bindings."""
    return {
        f"ALLOW User:{ALICE} from * {operation} on {resource_type} {name} ({pattern})"
        for resource_type, name in resources
        for operation in operations
    }


def refusal_code(outcome: bytes | KafkaError) -> int | None:
    return outcome.code() if isinstance(outcome, KafkaError) else None


AUTHORIZATION_FAILED = {KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.GROUP_AUTHORIZATION_FAILED}


def test_topic_list_takes_its_settings_from_a_client_config_file(cluster):
    topic = f"listed-{uuid.uuid4().hex[:8]}"
    cluster.create_topic(topic)
    assert topic in cluster.lines("topic", "list")

    # Without the file the client speaks plaintext to the TLS port: no answer, said clearly,
    # within the timeout.
    started = time.monotonic()
    refused = tidewater(
        "topic", "list", bootstrap=cluster.bootstrap, check=False, timeout_ms=REFUSED_COMMAND_TIMEOUT_MS
    )
    elapsed_s = time.monotonic() - started
    assert refused.returncode != 0, refused.stdout
    assert f"no answer from the cluster at {cluster.bootstrap} within {REFUSED_COMMAND_TIMEOUT_MS} ms" in (
        refused.stderr
    ), refused.stderr
    assert "if it requires TLS or SASL, check security.protocol" in refused.stderr, refused.stderr
    assert elapsed_s < REFUSED_COMMAND_TIMEOUT_MS / 1000 + EXIT_SLACK_S, elapsed_s
    assert topic not in refused.stdout


def test_users_are_created_with_both_mechanisms_and_only_once(cluster):
    password = new_password()
    cluster.create_user(ALICE, password)
    for mechanism in MECHANISMS:
        assert cluster.login_error(ALICE, password, mechanism) is None, mechanism
    assert cluster.login_error(ALICE, new_password(), "SCRAM-SHA-256").code() == KafkaError._AUTHENTICATION

    again = cluster.cli("user", "create", ALICE, "--password-stdin", stdin=new_password() + "\n", check=False)
    assert again.returncode != 0 and f'user "{ALICE}" exists already' in again.stderr, again.stderr
    # The first password still works: the second create changed nothing.
    assert cluster.login_error(ALICE, password, "SCRAM-SHA-512") is None

    assert cluster.users() == {ADMIN: set(MECHANISMS), ALICE: set(MECHANISMS)}
    cluster.assert_no_secrets(password)


def test_acls_grant_consumption_are_listed_and_survive_a_restart(cluster):
    password = new_password()
    cluster.create_user(ALICE, password)
    alice = cluster.security(ALICE, password)
    suffix = uuid.uuid4().hex[:8]
    topic, group = f"readings-{suffix}", f"readers-{suffix}"
    # The prefixed ACLs cover every topic and group whose name starts with `prefix`.
    prefix = f"alerts-{suffix}-"
    prefixed_topic, prefixed_group = f"{prefix}topic", f"{prefix}group"
    cluster.create_topic(topic, b"first")
    cluster.create_topic(prefixed_topic, b"prefixed")

    assert refusal_code(cluster.consume(alice, topic, group)) in AUTHORIZATION_FAILED
    literal = binding_lines(["READ", "DESCRIBE"], [("TOPIC", topic), ("GROUP", group)])
    created = cluster.lines(
        "acl", "create", "--allow", f"User:{ALICE}", "--operation", "read,describe", "--topic", topic, "--group", group
    )
    assert set(created) == {f"created {line}" for line in literal} and len(created) == 4, created
    prefixed = binding_lines(["READ", "DESCRIBE"], [("TOPIC", prefix), ("GROUP", prefix)], "PREFIXED")
    created = cluster.lines(
        "acl",
        "create",
        "--allow",
        f"User:{ALICE}",
        "--operation",
        "read,describe",
        "--topic",
        prefix,
        "--group",
        prefix,
        "--resource-pattern-type",
        "prefixed",
    )
    assert set(created) == {f"created {line}" for line in prefixed} and len(created) == 4, created

    assert cluster.consume(alice, topic, group) == b"first"
    assert cluster.consume(alice, prefixed_topic, prefixed_group) == b"prefixed"
    # Nothing is granted beyond the ACLs: another group is refused.
    assert refusal_code(cluster.consume(alice, topic, f"others-{suffix}")) == KafkaError.GROUP_AUTHORIZATION_FAILED

    def check_listings() -> None:
        every = cluster.lines("acl", "list")
        assert set(every) == literal | prefixed and len(every) == 8, every
        # A topic's listing shows what applies to it: its literal ACLs (the prefix is not its).
        assert set(cluster.lines("acl", "list", "--topic", topic)) == binding_lines(
            ["READ", "DESCRIBE"], [("TOPIC", topic)]
        )
        assert set(cluster.lines("acl", "list", "--topic", prefixed_topic)) == binding_lines(
            ["READ", "DESCRIBE"], [("TOPIC", prefix)], "PREFIXED"
        )
        assert set(cluster.lines("acl", "list", "--principal", f"User:{ALICE}")) == literal | prefixed
        assert cluster.lines("acl", "list", "--principal", "User:bob") == []

    check_listings()
    cluster.broker.restart()
    # The users, the ACLs, and what they allow, all came back.
    assert cluster.users() == {ADMIN: set(MECHANISMS), ALICE: set(MECHANISMS)}
    check_listings()
    cluster.produce(topic, b"second")
    assert cluster.consume(alice, topic, group) == b"second"
    cluster.assert_no_secrets(password)


def test_acls_are_deleted_by_principal_and_never_all_by_accident(cluster):
    password = new_password()
    cluster.create_user(ALICE, password)
    alice = cluster.security(ALICE, password)
    suffix = uuid.uuid4().hex[:8]
    topic, group = f"readings-{suffix}", f"readers-{suffix}"
    cluster.create_topic(topic, b"first", b"second")
    cluster.cli(
        "acl", "create", "--allow", f"User:{ALICE}", "--operation", "read,describe", "--topic", topic, "--group", group
    )
    granted = binding_lines(["READ", "DESCRIBE"], [("TOPIC", topic), ("GROUP", group)])
    assert cluster.consume(alice, topic, group) == b"first"

    # No filter: refused, and nothing deleted.
    refused = cluster.cli("acl", "delete", check=False)
    assert refused.returncode != 0 and "delete which ACLs?" in refused.stderr, refused.stderr
    assert "--all" in refused.stderr, refused.stderr
    assert set(cluster.lines("acl", "list")) == granted

    deleted = cluster.lines("acl", "delete", "--principal", f"User:{ALICE}")
    assert set(deleted) == {f"deleted {line}" for line in granted} and len(deleted) == 4, deleted
    assert cluster.lines("acl", "list") == []
    assert refusal_code(cluster.consume(alice, topic, group)) in AUTHORIZATION_FAILED

    # A principal without its type is a usage error that names it, before anything is sent.
    mistyped = cluster.cli(
        "acl", "create", "--allow", ALICE, "--operation", "read", "--topic", topic, check=False
    )
    assert mistyped.returncode == USAGE_ERROR, (mistyped.returncode, mistyped.stderr)
    assert f"'{ALICE}'" in mistyped.stderr and "--allow" in mistyped.stderr, mistyped.stderr
    assert cluster.lines("acl", "list") == []
    cluster.assert_no_secrets(password)


def test_a_new_password_replaces_the_old_and_a_deleted_user_cannot_log_in(cluster):
    old, new = new_password(), new_password()
    cluster.create_user(ALICE, old)
    changed = cluster.cli("user", "passwd", ALICE, "--password-stdin", stdin=new + "\n")
    assert changed.stdout.strip() == f"changed the password of user {ALICE}", changed.stdout
    for mechanism in MECHANISMS:
        assert cluster.login_error(ALICE, old, mechanism).code() == KafkaError._AUTHENTICATION, mechanism
        assert cluster.login_error(ALICE, new, mechanism) is None, mechanism
    assert cluster.users() == {ADMIN: set(MECHANISMS), ALICE: set(MECHANISMS)}

    deleted = cluster.cli("user", "delete", ALICE)
    assert deleted.stdout.strip() == f"deleted user {ALICE}", deleted.stdout
    for mechanism in MECHANISMS:
        assert cluster.login_error(ALICE, new, mechanism).code() == KafkaError._AUTHENTICATION, mechanism
    assert cluster.users() == {ADMIN: set(MECHANISMS)}
    gone = cluster.cli("user", "passwd", ALICE, "--password-stdin", stdin=new + "\n", check=False)
    assert gone.returncode != 0 and f'user "{ALICE}" does not exist' in gone.stderr, gone.stderr
    cluster.assert_no_secrets(old, new)


def test_the_device_registry_is_for_superusers_whatever_the_acls_say(cluster):
    password = new_password()
    cluster.create_user(ALICE, password)
    alice = cluster.security(ALICE, password)
    device_id = f"pump-{uuid.uuid4().hex[:8]}"
    key = cluster.cli("device", "add", device_id).stdout.strip()
    assert len(key) == 44, key
    topic = f"readings-{uuid.uuid4().hex[:8]}"
    cluster.create_topic(topic, b"open to alice")
    cluster.cli("acl", "create", "--allow", f"User:{ALICE}", "--operation", "all", "--topic", "*", "--group", "*")

    # The ACL opens every ordinary topic to her, but not the registry.
    assert cluster.consume(alice, topic, f"alice-{topic}") == b"open to alice"
    refused = cluster.consume(alice, DEVICES_TOPIC, f"alice-{topic}")
    assert refusal_code(refused) == KafkaError.TOPIC_AUTHORIZATION_FAILED, refused
    # The admin, a superuser, reads it: the device's record is there.
    records = ck.consume(
        cluster.bootstrap, DEVICES_TOPIC, 0, 0, 1, **cluster.security(ADMIN, ADMIN_PASSWORD).librdkafka()
    )
    assert records[0].key() == device_id.encode(), records[0].key()
    cluster.assert_no_secrets(password)
