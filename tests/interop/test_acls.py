"""ACLs against a real client: confluent-kafka (librdkafka) over SASL/SCRAM, principal by
principal and operation by operation.

Each test runs its own `tidewater serve` with two Kafka listeners: PLAINTEXT, whose clients are
`User:ANONYMOUS`, made a superuser here so that it plays the administrator (creating users,
topics and ACLs through the AdminClient), and SASL_PLAINTEXT, where the users under test
(`User:alice`, ...) log in with SCRAM-SHA-256. The SASL listener switches authorization on, for
both listeners.

What is shown: each operation is refused with Kafka's error code until an ACL grants it, and
allowed once one does (DeleteRecords included); prefixed and literal patterns; deny over allow;
superusers; the internal topics closed to everyone else whatever the ACLs say; ACLs managed
with `create_acls`, `describe_acls` and `delete_acls`, durable across a restart.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ConfigResource,
    NewTopic,
    ResourcePatternType,
    ResourceType,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialUpsertion,
)

from security_support import first_record_or_error
from support import CLIENT_TIMEOUT_S

SASL_ADDRESS = re.compile(r"SASL_PLAINTEXT://127\.0\.0\.1:(\d+)")


class SecuredBroker:
    """A broker with authorization on, its administrator (the PLAINTEXT listener) and SCRAM
    users on its SASL listener."""

    def __init__(self, process):
        self.process = process
        self.passwords: dict[str, str] = {}

    @property
    def sasl_bootstrap(self) -> str:
        for line in reversed(self.process.lines):
            if "tidewater is running" in line and (match := SASL_ADDRESS.search(line)):
                return f"127.0.0.1:{match.group(1)}"
        raise AssertionError(f"no SASL listener in the running line:\n{self.process.log_tail()}")

    def admin(self) -> AdminClient:
        return AdminClient({"bootstrap.servers": self.process.bootstrap, "client.id": "acl-admin"})

    def add_user(self, name: str) -> None:
        password = uuid.uuid4().hex
        upsertion = UserScramCredentialUpsertion(
            name, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 4096), password.encode()
        )
        admin = self.admin()
        for future in admin.alter_user_scram_credentials([upsertion]).values():
            future.result(timeout=CLIENT_TIMEOUT_S)
        self.passwords[name] = password

    def client_config(self, user: str, **config: Any) -> dict[str, Any]:
        settings = {
            "bootstrap.servers": self.sasl_bootstrap,
            "client.id": f"acl-{user}",
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": "SCRAM-SHA-256",
            "sasl.username": user,
            "sasl.password": self.passwords[user],
        }
        settings.update(config)
        return settings

    def create_topic(self, topic: str) -> None:
        admin = self.admin()
        for future in admin.create_topics([NewTopic(topic, 1, 1)], request_timeout=CLIENT_TIMEOUT_S).values():
            future.result(timeout=CLIENT_TIMEOUT_S)

    def acl(self, *bindings: AclBinding) -> None:
        admin = self.admin()
        for future in admin.create_acls(list(bindings), request_timeout=CLIENT_TIMEOUT_S).values():
            future.result(timeout=CLIENT_TIMEOUT_S)


def binding(
    resource_type: ResourceType,
    name: str,
    principal: str,
    operation: AclOperation,
    permission: AclPermissionType = AclPermissionType.ALLOW,
    pattern: ResourcePatternType = ResourcePatternType.LITERAL,
    host: str = "*",
) -> AclBinding:
    return AclBinding(resource_type, name, pattern, principal, host, operation, permission)


EVERY_ACL = AclBindingFilter(
    ResourceType.ANY, None, ResourcePatternType.ANY, None, None, AclOperation.ANY, AclPermissionType.ANY
)


@pytest.fixture
def secured(broker_factory) -> SecuredBroker:
    process = broker_factory(
        "--kafka-listen",
        "SASL_PLAINTEXT://127.0.0.1:0",
        "--superusers",
        "User:ANONYMOUS,User:root",
        "--mqtt-listen",
        "none",
        "--http-listen",
        "none",
        "--triggers",
        "false",
        "--queries",
        "false",
    )
    broker = SecuredBroker(process)
    for user in ("alice", "bob", "root"):
        broker.add_user(user)
    return broker


def produce(broker: SecuredBroker, user: str, topic: str, **config: Any) -> KafkaError | None:
    """One record from a fresh producer of `user`; its delivery error, or None."""
    producer = Producer(broker.client_config(user, **{"message.timeout.ms": 15_000, **config}))
    reports: list[KafkaError | None] = []
    producer.produce(topic, value=b"record", on_delivery=lambda error, message: reports.append(error))
    producer.flush(CLIENT_TIMEOUT_S)
    assert len(reports) == 1, f"no delivery report for {user} on {topic}"
    return reports[0]


def consume(broker: SecuredBroker, user: str, topic: str, group: str) -> bytes | KafkaError:
    """The first record of `topic` read by a fresh consumer of `user` in `group` (committing
    its offset), or the first error it gets."""
    return first_record_or_error(
        broker.client_config(user, **{"group.id": group, "auto.offset.reset": "earliest", "enable.auto.commit": False}),
        topic,
    )


def code(outcome: Any) -> int | None:
    """The Kafka error code of an outcome (None for a success)."""
    if isinstance(outcome, KafkaError):
        return outcome.code()
    return None


def test_produce_and_consume_are_allowed_exactly_where_an_acl_grants_them(secured, topic_name):
    secured.create_topic(topic_name)
    group = f"{topic_name}-readers"
    assert code(produce(secured, "alice", topic_name)) == KafkaError.TOPIC_AUTHORIZATION_FAILED
    secured.acl(binding(ResourceType.TOPIC, topic_name, "User:alice", AclOperation.WRITE))
    assert produce(secured, "alice", topic_name) is None
    # Writing is not reading, and reading in a group needs the group too.
    assert code(consume(secured, "alice", topic_name, group)) == KafkaError.GROUP_AUTHORIZATION_FAILED
    secured.acl(binding(ResourceType.GROUP, group, "User:alice", AclOperation.READ))
    assert code(consume(secured, "alice", topic_name, group)) == KafkaError.TOPIC_AUTHORIZATION_FAILED
    secured.acl(binding(ResourceType.TOPIC, topic_name, "User:alice", AclOperation.READ))
    assert consume(secured, "alice", topic_name, group) == b"record"
    # Alice's ACLs are hers alone.
    assert code(produce(secured, "bob", topic_name)) == KafkaError.TOPIC_AUTHORIZATION_FAILED
    # The committed offset is there for whoever may describe the group and the topic.
    admin_consumer = Consumer({"bootstrap.servers": secured.process.bootstrap, "group.id": group})
    try:
        committed = admin_consumer.committed([TopicPartition(topic_name, 0)], timeout=CLIENT_TIMEOUT_S)
        assert committed[0].offset == 1
    finally:
        admin_consumer.close()


def test_prefixed_and_literal_patterns_and_deny_over_allow(secured, topic_name):
    prefix = f"{topic_name}-"
    first, second, other = f"{prefix}a", f"{prefix}b", f"other-{topic_name}"
    for topic in (first, second, other):
        secured.create_topic(topic)
    secured.acl(
        binding(ResourceType.TOPIC, prefix, "User:alice", AclOperation.WRITE, pattern=ResourcePatternType.PREFIXED)
    )
    assert produce(secured, "alice", first) is None
    assert produce(secured, "alice", second) is None
    assert code(produce(secured, "alice", other)) == KafkaError.TOPIC_AUTHORIZATION_FAILED
    # A literal DENY beats the prefixed ALLOW on its topic only; a DENY for everyone beats too.
    secured.acl(binding(ResourceType.TOPIC, first, "User:alice", AclOperation.WRITE, AclPermissionType.DENY))
    assert code(produce(secured, "alice", first)) == KafkaError.TOPIC_AUTHORIZATION_FAILED
    assert produce(secured, "alice", second) is None
    secured.acl(binding(ResourceType.TOPIC, second, "User:*", AclOperation.ALL, AclPermissionType.DENY))
    assert code(produce(secured, "alice", second)) == KafkaError.TOPIC_AUTHORIZATION_FAILED
    # A superuser is not bound by any of it.
    assert produce(secured, "root", second) is None


def test_topics_are_created_described_and_deleted_only_with_acls(secured, topic_name):
    def create(user: str) -> int | None:
        admin = AdminClient(secured.client_config(user))
        future = admin.create_topics([NewTopic(topic_name, 1, 1)], request_timeout=CLIENT_TIMEOUT_S)[topic_name]
        try:
            future.result(timeout=CLIENT_TIMEOUT_S)
            return None
        except KafkaException as error:
            return error.args[0].code()

    def describe_configs(user: str) -> int | None:
        admin = AdminClient(secured.client_config(user))
        resource = ConfigResource(ConfigResource.Type.TOPIC, topic_name)
        try:
            configs = admin.describe_configs([resource], request_timeout=CLIENT_TIMEOUT_S)[resource].result(
                timeout=CLIENT_TIMEOUT_S
            )
            assert "retention.ms" in configs
            return None
        except KafkaException as error:
            return error.args[0].code()

    def delete(user: str) -> int | None:
        admin = AdminClient(secured.client_config(user))
        future = admin.delete_topics([topic_name], request_timeout=CLIENT_TIMEOUT_S)[topic_name]
        try:
            future.result(timeout=CLIENT_TIMEOUT_S)
            return None
        except KafkaException as error:
            return error.args[0].code()

    assert create("alice") == KafkaError.TOPIC_AUTHORIZATION_FAILED
    # librdkafka calls the cluster resource (code 4) BROKER.
    secured.acl(binding(ResourceType.BROKER, "kafka-cluster", "User:alice", AclOperation.CREATE))
    assert create("alice") is None
    assert describe_configs("alice") == KafkaError.TOPIC_AUTHORIZATION_FAILED
    secured.acl(binding(ResourceType.TOPIC, topic_name, "User:alice", AclOperation.DESCRIBE_CONFIGS))
    assert describe_configs("alice") is None
    assert delete("alice") == KafkaError.TOPIC_AUTHORIZATION_FAILED
    secured.acl(binding(ResourceType.TOPIC, topic_name, "User:alice", AclOperation.DELETE))
    assert delete("alice") is None


def test_records_are_deleted_only_with_delete_on_the_topic(secured, topic_name):
    secured.create_topic(topic_name)
    for _ in range(2):
        assert produce(secured, "root", topic_name) is None

    def delete_records(user: str, topic: str) -> int:
        """The low watermark after `user` deletes the records of `topic` up to its high
        watermark, or the error code."""
        admin = AdminClient(secured.client_config(user))
        partition = TopicPartition(topic, 0, -1)
        future = admin.delete_records([partition], request_timeout=CLIENT_TIMEOUT_S)[partition]
        try:
            return future.result(timeout=CLIENT_TIMEOUT_S).low_watermark
        except KafkaException as error:
            return error.args[0].code()

    # Without even DESCRIBE, librdkafka does not find the partition in its metadata and sends
    # nothing (_NOENT).
    assert delete_records("alice", topic_name) == KafkaError._NOENT
    # Reading, writing and describing the topic are not deleting from it.
    for operation in (AclOperation.DESCRIBE, AclOperation.READ, AclOperation.WRITE):
        secured.acl(binding(ResourceType.TOPIC, topic_name, "User:alice", operation))
    assert delete_records("alice", topic_name) == KafkaError.TOPIC_AUTHORIZATION_FAILED
    watcher = Consumer({"bootstrap.servers": secured.process.bootstrap, "group.id": f"{topic_name}-w"})
    try:
        watermarks = watcher.get_watermark_offsets(TopicPartition(topic_name, 0), timeout=CLIENT_TIMEOUT_S)
    finally:
        watcher.close()
    assert watermarks == (0, 2), "a refused DeleteRecords deletes nothing"
    secured.acl(binding(ResourceType.TOPIC, topic_name, "User:alice", AclOperation.DELETE))
    assert delete_records("alice", topic_name) == 2
    # The internal topics are closed to her whatever the ACLs say (she cannot even describe
    # them, so librdkafka sends nothing), and open to a superuser.
    internal = "_tidewater_devices"
    if internal not in secured.admin().list_topics(timeout=CLIENT_TIMEOUT_S).topics:
        secured.create_topic(internal)
    secured.acl(
        binding(ResourceType.TOPIC, "_tidewater_", "User:alice", AclOperation.ALL, pattern=ResourcePatternType.PREFIXED)
    )
    assert delete_records("alice", internal) == KafkaError._NOENT
    assert delete_records("root", internal) >= 0


def test_a_transactional_producer_needs_write_on_its_transactional_id(secured, topic_name):
    secured.create_topic(topic_name)
    transactional_id = f"{topic_name}-tx"
    secured.acl(binding(ResourceType.TOPIC, topic_name, "User:alice", AclOperation.WRITE))

    def transactional_producer() -> Producer:
        return Producer(
            secured.client_config("alice", **{"transactional.id": transactional_id, "transaction.timeout.ms": 30_000})
        )

    with pytest.raises(KafkaException) as refused:
        transactional_producer().init_transactions(CLIENT_TIMEOUT_S)
    assert refused.value.args[0].code() == KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED
    secured.acl(binding(ResourceType.TRANSACTIONAL_ID, transactional_id, "User:alice", AclOperation.WRITE))
    producer = transactional_producer()
    producer.init_transactions(CLIENT_TIMEOUT_S)
    producer.begin_transaction()
    producer.produce(topic_name, value=b"in a transaction")
    producer.commit_transaction(CLIENT_TIMEOUT_S)
    secured.acl(
        binding(ResourceType.TOPIC, topic_name, "User:alice", AclOperation.READ),
        binding(ResourceType.GROUP, f"{topic_name}-g", "User:alice", AclOperation.READ),
    )
    assert consume(secured, "alice", topic_name, f"{topic_name}-g") == b"in a transaction"


def test_internal_topics_are_for_superusers_whatever_the_acls_say(secured, topic_name):
    internal = "_tidewater_devices"
    admin = secured.admin()
    if internal not in admin.list_topics(timeout=CLIENT_TIMEOUT_S).topics:
        secured.create_topic(internal)
    assert produce(secured, "root", internal) is None
    group = f"{topic_name}-g"
    secured.acl(
        binding(ResourceType.TOPIC, "*", "User:*", AclOperation.ALL),
        binding(ResourceType.TOPIC, "_tidewater_", "User:alice", AclOperation.ALL, pattern=ResourcePatternType.PREFIXED),
        binding(ResourceType.GROUP, "*", "User:*", AclOperation.ALL),
    )
    assert code(consume(secured, "alice", internal, group)) == KafkaError.TOPIC_AUTHORIZATION_FAILED
    assert code(produce(secured, "alice", internal)) == KafkaError.TOPIC_AUTHORIZATION_FAILED
    # Everything else is open to her, and the internal topic to a superuser.
    secured.create_topic(topic_name)
    assert produce(secured, "alice", topic_name) is None
    assert consume(secured, "root", internal, f"{topic_name}-root") == b"record"
    # A listing by alice does not show it.
    listed = AdminClient(secured.client_config("alice")).list_topics(timeout=CLIENT_TIMEOUT_S).topics
    assert topic_name in listed and internal not in listed


def test_acls_are_managed_with_the_admin_client_and_survive_a_restart(secured, topic_name):
    secured.create_topic(topic_name)
    created = [
        binding(ResourceType.TOPIC, topic_name, "User:alice", AclOperation.WRITE),
        binding(ResourceType.TOPIC, topic_name[:5], "User:bob", AclOperation.READ, pattern=ResourcePatternType.PREFIXED),
        binding(ResourceType.GROUP, "readers", "User:bob", AclOperation.READ, AclPermissionType.DENY, host="10.0.0.1"),
    ]
    secured.acl(*created)
    admin = secured.admin()

    def described(acl_filter: AclBindingFilter) -> set[AclBinding]:
        return set(admin.describe_acls(acl_filter, request_timeout=CLIENT_TIMEOUT_S).result(timeout=CLIENT_TIMEOUT_S))

    assert described(EVERY_ACL) == set(created)
    # MATCH: what applies to this topic, its literal ACL and the prefix that covers it.
    matching = AclBindingFilter(
        ResourceType.TOPIC, topic_name, ResourcePatternType.MATCH, None, None, AclOperation.ANY, AclPermissionType.ANY
    )
    assert described(matching) == set(created[:2])
    by_bob = AclBindingFilter(
        ResourceType.ANY, None, ResourcePatternType.ANY, "User:bob", None, AclOperation.ANY, AclPermissionType.ANY
    )
    assert described(by_bob) == set(created[1:])

    secured.process.restart()
    admin = secured.admin()
    assert described(EVERY_ACL) == set(created)
    assert produce(secured, "alice", topic_name) is None

    deleted = admin.delete_acls([by_bob], request_timeout=CLIENT_TIMEOUT_S)[by_bob].result(timeout=CLIENT_TIMEOUT_S)
    assert set(deleted) == set(created[1:])
    assert described(EVERY_ACL) == {created[0]}
    secured.process.restart()
    admin = secured.admin()
    assert described(EVERY_ACL) == {created[0]}


def test_kafka_python_manages_acls_and_sees_their_refusals(secured, topic_name):
    # librdkafka drops DescribeAcls' own error code (it answers an empty list); kafka-python
    # raises it, as Kafka's Java client does.
    from kafka import KafkaAdminClient
    from kafka.admin import (
        ACL,
        ACLFilter,
        ACLOperation,
        ACLPermissionType,
        ACLResourcePatternType,
        ResourcePattern,
        ResourcePatternFilter,
    )
    from kafka.admin import ResourceType as KafkaPythonResourceType
    from kafka.errors import ClusterAuthorizationFailedError

    def admin(user: str) -> KafkaAdminClient:
        return KafkaAdminClient(
            bootstrap_servers=secured.sasl_bootstrap,
            client_id=f"acl-kafka-python-{user}",
            security_protocol="SASL_PLAINTEXT",
            sasl_mechanism="SCRAM-SHA-256",
            sasl_plain_username=user,
            sasl_plain_password=secured.passwords[user],
            request_timeout_ms=int(CLIENT_TIMEOUT_S * 1000),
        )

    every_acl = ACLFilter(
        principal=None,
        host=None,
        operation=ACLOperation.ANY,
        permission_type=ACLPermissionType.ANY,
        resource_pattern=ResourcePatternFilter(KafkaPythonResourceType.ANY, None, ACLResourcePatternType.ANY),
    )
    acl = ACL(
        principal="User:bob",
        host="*",
        operation=ACLOperation.READ,
        permission_type=ACLPermissionType.ALLOW,
        resource_pattern=ResourcePattern(KafkaPythonResourceType.TOPIC, topic_name, ACLResourcePatternType.LITERAL),
    )
    alice = admin("alice")
    try:
        with pytest.raises(ClusterAuthorizationFailedError):
            alice.describe_acls(every_acl)
        refused = alice.create_acls([acl])
        assert not refused["succeeded"]
        assert refused["failed"] == [ClusterAuthorizationFailedError]
    finally:
        alice.close()
    root = admin("root")
    try:
        created = root.create_acls([acl])
        assert created["succeeded"] == [acl] and not created["failed"]
        acls, _ = root.describe_acls(every_acl)
        assert acls == [acl]
    finally:
        root.close()
