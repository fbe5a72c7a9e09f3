"""TLS and SASL against real clients (issue 15's "What must be shown", authorization aside):
confluent-kafka, kafka-python, aiokafka, kafkajs and kcat over SASL_SSL with SCRAM-SHA-256,
SCRAM-SHA-512 and PLAIN; refused credentials seen through each client's own error; clients on the
wrong kind of port; mutual TLS and the principal it gives; malformed and out-of-order SASL
messages over raw sockets; users through the AdminClient's KIP-554 calls, across a restart;
re-authentication (KIP-368); and `serve`'s refusal of unsafe or broken settings.

Most tests share one broker (`secure`) with four listeners: the usual PLAINTEXT one (topics are
created through it), SASL_SSL and SASL_PLAINTEXT with PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512,
and SSL with `--tls-client-ca` (mutual TLS), all with a PKI made for the module
(security_support.make_pki), and a bootstrap user from TIDEWATER_BOOTSTRAP_USER. It logs the
protocol server at debug level, for the lines that name a client-certificate principal. After
every test that tries something bad, `healthy.check` proves the broker still serves everyone
else: a raw connection authenticated at the start of the module still answers, and a new
confluent-kafka producer on SASL_SSL still produces.

Nothing here is about authorization (test_acls.py is): the listeners authenticate, so ACLs
apply, and every principal these tests log in as (the bootstrap user, the certificates' subjects
with and without the mapping rule, and the PLAINTEXT listener's User:ANONYMOUS, which creates the
topics) is made a superuser (`SUPERUSERS`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import ssl
import struct
import subprocess
import time
import uuid
from pathlib import Path
from typing import Callable, Iterator

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition as AioTopicPartition
import aiokafka.errors
from confluent_kafka import KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import (
    AdminClient,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialDeletion,
    UserScramCredentialUpsertion,
)
from kafka import KafkaConsumer, KafkaProducer, TopicPartition as KafkaPythonTopicPartition
import kafka.errors

import confluent_support as ck
from conftest import BrokerProcess, tidewater_binary
from gateway_support import wait_until_retained_messages_are_served
from security_support import (
    ILLEGAL_SASL_STATE,
    QUIET_LIBRDKAFKA,
    REFUSAL_TIMEOUT_S,
    SASL_AUTHENTICATE,
    SASL_AUTHENTICATION_FAILED,
    UNSUPPORTED_SASL_MECHANISM,
    Pki,
    Reader,
    Security,
    api_versions_request,
    client_ssl_context,
    confluent_login_error,
    connect,
    make_pki,
    metadata_request,
    read_response,
    read_until_closed,
    request,
    sasl_authenticate_request,
    sasl_authenticate_response,
    sasl_handshake_request,
    sasl_handshake_response,
    send_all,
    tls_client_hello,
)
from support import (
    CLIENT_TIMEOUT_S,
    SUBPROCESS_TIMEOUT_S,
    Record,
    assert_same_records,
    base_timestamp_ms,
    kcat_binary,
    records_to_json,
    run_kafkajs,
    sample_records,
    unb64,
)

USER = "admin"
PASSWORD = "tide-admin-secret"
MECHANISMS = ["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"]
CLIENTS = ["confluent-kafka", "kafka-python", "aiokafka", "kafkajs", "kcat"]
# The module broker logs the protocol server at debug level: client-certificate principals,
# successful authentications, and why each connection closed.
DEBUG_LOG = "info,tidewater_kafka=debug"
# What every client is told when its credentials are refused, whether the user is unknown or the
# password wrong (Kafka's words).
INVALID_CREDENTIALS = "Authentication failed during authentication due to invalid credentials with SASL mechanism {}"
# kafka-python and kcat keep retrying a refused login until their own deadline: this one.
RETRY_DEADLINE_S = 5
# The longest request accepted before authentication (Kafka's sasl.server.max.receive.size).
UNAUTHENTICATED_REQUEST_BYTES_MAX = 512 * 1024
# Tidewater's own limit on one SASL message.
SASL_MESSAGE_BYTES_MAX = 8 * 1024
# The session lifetime of the re-authentication tests' broker.
REAUTH_MS = 3000
# Kafka's error codes for KIP-554.
RESOURCE_NOT_FOUND = 91
UNACCEPTABLE_CREDENTIAL = 93
MAPPING_RULE = "RULE:^CN=([^,]*).*$/$1/,DEFAULT"


# --- The module's broker -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def tls_args(pki: Pki) -> tuple[str, ...]:
    return ("--tls-cert", str(pki.server.cert), "--tls-key", str(pki.server.key))


# No gateway: these brokers are about the Kafka listeners (test_embedded_components_... has one).
NO_GATEWAY = ("--mqtt-listen", "none", "--http-listen", "none")


# Everyone these tests log in as, in Kafka's super.users form (semicolons: a DN holds commas).
SUPERUSERS = ";".join(
    [f"User:{USER}", "User:ANONYMOUS", "User:CN=alice,OU=eng,O=Acme", "User:CN=bob", "User:alice", "User:bob"]
)


def bootstrap_env(log: str = "info") -> dict[str, str]:
    return {"TIDEWATER_BOOTSTRAP_USER": f"{USER}:{PASSWORD}", "TIDEWATER_SUPERUSERS": SUPERUSERS, "TIDEWATER_LOG": log}


@pytest.fixture(scope="module")
def secure(module_broker_factory, pki: Pki) -> BrokerProcess:
    return module_broker_factory(
        *tls_args(pki),
        "--tls-client-ca",
        str(pki.ca),
        "--sasl-mechanisms",
        "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512",
        *NO_GATEWAY,
        env=bootstrap_env(DEBUG_LOG),
        listeners=("SASL_SSL", "SSL", "SASL_PLAINTEXT"),
    )


def sasl_ssl(pki: Pki, mechanism: str = "SCRAM-SHA-512", user: str = USER, password: str = PASSWORD) -> Security:
    return Security("SASL_SSL", mechanism, user, password, ca=pki.ca)


class RawClient:
    """A connection that speaks Kafka frames by hand (see security_support)."""

    def __init__(self, port: int, tls: ssl.SSLContext | None = None):
        self.sock = connect(port, tls=tls)
        self.peer = "127.0.0.1:%d" % self.sock.getsockname()[1]
        self.correlation_id = 0

    def next_id(self) -> int:
        self.correlation_id += 1
        return self.correlation_id

    def send(self, frame: bytes) -> None:
        send_all(self.sock, frame)

    def call(self, frame_of: Callable[[int], bytes]) -> bytes:
        """Sends the request `frame_of(correlation id)` and returns its response body."""
        correlation_id = self.next_id()
        self.send(frame_of(correlation_id))
        response = read_response(self.sock)
        assert response.correlation_id == correlation_id, (response.correlation_id, correlation_id)
        return response.body

    def handshake(self, mechanism: str, version: int = 1) -> tuple[int, list[str]]:
        body = self.call(lambda cid: sasl_handshake_request(cid, mechanism, version))
        return sasl_handshake_response(body)

    def authenticate(self, auth_bytes: bytes) -> tuple[int, str | None, bytes | None, int]:
        return sasl_authenticate_response(self.call(lambda cid: sasl_authenticate_request(cid, auth_bytes)))

    def login_plain(self, user: str, password: str) -> int:
        """Authenticates with PLAIN; returns the session lifetime the broker gave."""
        assert self.handshake("PLAIN")[0] == 0
        error_code, message, _, lifetime_ms = self.authenticate(b"\0" + user.encode() + b"\0" + password.encode())
        assert error_code == 0, (error_code, message)
        return lifetime_ms

    def metadata(self) -> list[tuple[int, str, int]]:
        """The brokers of a Metadata v1 response: (node id, host, port)."""
        reader = Reader(self.call(metadata_request))
        brokers = []
        for _ in range(reader.int32()):
            node_id, host, port = reader.int32(), reader.string(), reader.int32()
            reader.string()  # rack
            brokers.append((node_id, host, port))
        return brokers

    def closed_after(self) -> bytes:
        """What the broker still sends before it closes the connection (which it must)."""
        return read_until_closed(self.sock)

    def close(self) -> None:
        self.sock.close()


class Healthy:
    """Proof that the broker serves everyone else: a raw SASL_SSL connection authenticated once
    for the whole module (it must still answer Metadata, so the broker closed only the bad
    client's connection), and a new confluent-kafka producer on SASL_SSL that must produce."""

    def __init__(self, broker: BrokerProcess, pki: Pki):
        self.broker = broker
        self.security = sasl_ssl(pki)
        self.port = broker.listener_ports["SASL_SSL"]
        self.topic = f"healthy-{uuid.uuid4().hex[:8]}"
        ck.create_topic(broker.bootstrap, self.topic)
        self.bystander = RawClient(self.port, client_ssl_context(pki))
        self.bystander.login_plain(USER, PASSWORD)
        self.n_checks = 0
        self.check("connecting")

    def check(self, after: str) -> None:
        assert self.broker.is_running(), f"the broker died after {after}:\n{self.broker.log_tail()}"
        try:
            brokers = self.bystander.metadata()
        except (AssertionError, OSError) as error:
            raise AssertionError(f"the bystander's connection did not survive {after}: {error}") from None
        # Metadata advertises the address of the listener the client came in on.
        assert brokers == [(0, "127.0.0.1", self.port)], brokers
        self.n_checks += 1
        record = Record(b"healthy", f"after {after}".encode(), (), base_timestamp_ms())
        [report] = ck.produce(
            self.broker.bootstrap_of("SASL_SSL"), self.topic, [record], partition=0, **self.security.librdkafka()
        )
        assert report.error() is None


@pytest.fixture(scope="module")
def healthy(secure: BrokerProcess, pki: Pki) -> Iterator[Healthy]:
    checker = Healthy(secure, pki)
    yield checker
    checker.bystander.close()


@contextlib.contextmanager
def captured_logs(name: str) -> Iterator[list[logging.LogRecord]]:
    """Every record logged under `name` (with DEBUG and up) while the block runs."""
    records: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger = logging.getLogger(name)
    handler = Collect(logging.DEBUG)
    previous = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)


def logged_errors(records: list[logging.LogRecord], error_class: type) -> list[BaseException]:
    """The exceptions of class `error_class` among the log records' arguments."""
    found = []
    for record in records:
        arguments = record.args if isinstance(record.args, tuple) else ()
        found.extend(argument for argument in arguments if isinstance(argument, error_class))
    return found


def new_topic(broker: BrokerProcess, prefix: str) -> str:
    topic = f"{prefix}-{uuid.uuid4().hex[:8]}"
    ck.create_topic(broker.bootstrap, topic)
    return topic


# --- Each client's round trip and refusal ----------------------------------------------------------

TIMEOUT_MS = int(CLIENT_TIMEOUT_S * 1000)


def round_trip_records(seed: int) -> list[Record]:
    # Small, but with binary keys and values, headers and a 40 KB value (several TLS records).
    return sample_records(12, base_ts=base_timestamp_ms(), seed=seed)


def confluent_round_trip(bootstrap: str, security: Security, topic: str) -> None:
    records = round_trip_records(101)
    ck.produce(bootstrap, topic, records, partition=0, logger=QUIET_LIBRDKAFKA, **security.librdkafka())
    messages = ck.consume(bootstrap, topic, 0, 0, len(records), logger=QUIET_LIBRDKAFKA, **security.librdkafka())
    assert_same_records(records, [ck.to_record(message) for message in messages], "confluent-kafka")


def kafka_python_round_trip(bootstrap: str, security: Security, topic: str) -> None:
    records = round_trip_records(102)
    producer = KafkaProducer(
        bootstrap_servers=bootstrap,
        client_id="interop-kafka-python",
        request_timeout_ms=TIMEOUT_MS,
        **security.kafka_python(),
    )
    try:
        futures = [
            producer.send(
                topic,
                key=record.key,
                value=record.value,
                headers=list(record.headers),
                timestamp_ms=record.timestamp_ms,
                partition=0,
            )
            for record in records
        ]
        producer.flush(timeout=CLIENT_TIMEOUT_S)
        assert [future.get(timeout=CLIENT_TIMEOUT_S).offset for future in futures] == list(range(len(records)))
    finally:
        producer.close(timeout=CLIENT_TIMEOUT_S)
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        client_id="interop-kafka-python",
        group_id=None,
        enable_auto_commit=False,
        request_timeout_ms=TIMEOUT_MS,
        **security.kafka_python(),
    )
    try:
        partition = KafkaPythonTopicPartition(topic, 0)
        consumer.assign([partition])
        consumer.seek(partition, 0)
        messages: list = []
        deadline = time.monotonic() + CLIENT_TIMEOUT_S
        while len(messages) < len(records):
            assert time.monotonic() < deadline, f"kafka-python read {len(messages)} of {len(records)} records"
            for batch in consumer.poll(timeout_ms=500, max_records=len(records) - len(messages)).values():
                messages.extend(batch)
    finally:
        consumer.close()
    assert_same_records(
        records,
        [Record(message.key, message.value, tuple(message.headers), message.timestamp) for message in messages],
        "kafka-python",
    )


def aiokafka_round_trip(bootstrap: str, security: Security, topic: str) -> None:
    records = round_trip_records(103)

    async def scenario() -> list:
        producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap,
            client_id="interop-aiokafka",
            request_timeout_ms=TIMEOUT_MS,
            **security.aiokafka(),
        )
        await producer.start()
        try:
            futures = [
                await producer.send(
                    topic,
                    key=record.key,
                    value=record.value,
                    headers=list(record.headers),
                    timestamp_ms=record.timestamp_ms,
                    partition=0,
                )
                for record in records
            ]
            sent = await asyncio.wait_for(asyncio.gather(*futures), CLIENT_TIMEOUT_S)
            assert [metadata.offset for metadata in sent] == list(range(len(records)))
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            client_id="interop-aiokafka",
            group_id=None,
            enable_auto_commit=False,
            request_timeout_ms=TIMEOUT_MS,
            **security.aiokafka(),
        )
        await consumer.start()
        try:
            partition = AioTopicPartition(topic, 0)
            consumer.assign([partition])
            consumer.seek(partition, 0)
            messages: list = []

            async def read_all() -> None:
                while len(messages) < len(records):
                    batches = await consumer.getmany(
                        partition, timeout_ms=500, max_records=len(records) - len(messages)
                    )
                    messages.extend(batches.get(partition, []))

            await asyncio.wait_for(read_all(), CLIENT_TIMEOUT_S)
            return messages
        finally:
            await consumer.stop()

    messages = asyncio.run(scenario())
    assert_same_records(
        records,
        [Record(message.key, message.value, tuple(message.headers), message.timestamp) for message in messages],
        "aiokafka",
    )


def kafkajs_round_trip(bootstrap: str, security: Security, topic: str) -> None:
    records = round_trip_records(104)
    produced = run_kafkajs(
        "produce.mjs",
        bootstrap,
        topic,
        request={"records": records_to_json(records), "partition": 0, "security": security.kafkajs()},
    )
    assert produced == {"partitions": [{"partition": 0, "baseOffset": 0}]}, produced
    fetched = run_kafkajs(
        "fetch.mjs", bootstrap, topic, "0", "0", str(len(records)), request={"security": security.kafkajs()}
    )
    assert "error" not in fetched, fetched
    assert_same_records(
        records,
        [
            Record(
                unb64(item["key"]),
                unb64(item["value"]),
                tuple((name, unb64(value)) for name, value in item["headers"]),
                int(item["timestamp"]),
            )
            for item in fetched["records"]
        ],
        "kafkajs",
    )


def run_kcat(*args: str, timeout_s: float = SUBPROCESS_TIMEOUT_S) -> subprocess.CompletedProcess:
    command = [kcat_binary(), *args]
    try:
        return subprocess.run(command, capture_output=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"kcat ran longer than {timeout_s}s: {' '.join(command)}") from None


# kcat sends each file as one record and skips empty files, so no value here is empty.
KCAT_VALUES = [bytes(range(256)), "ünïcødé 🌊".encode(), bytes(70_000), b"line\nbreaks\r\n\x00"]


def kcat_round_trip(bootstrap: str, security: Security, topic: str, directory: Path) -> None:
    files = []
    for index, value in enumerate(KCAT_VALUES):
        path = directory / f"kcat-value-{index}.bin"
        path.write_bytes(value)
        files.append(str(path))
    produced = run_kcat(
        "-P", "-b", bootstrap, "-t", topic, "-p", "0", "-k", "kcat-key", "-m", "30", *security.kcat_args(), *files
    )
    assert produced.returncode == 0, produced.stderr.decode(errors="replace")
    # Offset and value length on one line, then the value's bytes: binary-safe.
    consumed = run_kcat(
        "-C",
        "-b",
        bootstrap,
        "-t",
        topic,
        "-p",
        "0",
        "-o",
        "0",
        "-c",
        str(len(KCAT_VALUES)),
        "-e",
        "-m",
        "30",
        "-f",
        "%o %S\\n%s\\n",
        *security.kcat_args(),
    )
    assert consumed.returncode == 0, consumed.stderr.decode(errors="replace")
    output, values, position = consumed.stdout, [], 0
    while position < len(output):
        line_end = output.index(b"\n", position)
        offset, length = (int(field) for field in output[position:line_end].split())
        assert offset == len(values), (offset, len(values))
        values.append(output[line_end + 1 : line_end + 1 + length])
        position = line_end + 1 + length + 1
    assert values == KCAT_VALUES


def round_trip(client: str, bootstrap: str, security: Security, topic: str, directory: Path) -> None:
    match client:
        case "confluent-kafka":
            confluent_round_trip(bootstrap, security, topic)
        case "kafka-python":
            kafka_python_round_trip(bootstrap, security, topic)
        case "aiokafka":
            aiokafka_round_trip(bootstrap, security, topic)
        case "kafkajs":
            kafkajs_round_trip(bootstrap, security, topic)
        case "kcat":
            kcat_round_trip(bootstrap, security, topic, directory)
        case _:
            raise AssertionError(f"unknown client {client}")


def confluent_errors(
    bootstrap: str,
    security: Security,
    until: Callable[[list[KafkaError]], bool],
    *,
    timeout_s: float = REFUSAL_TIMEOUT_S,
) -> list[KafkaError]:
    """The errors a confluent-kafka client reports (error_cb) while it tries to connect, once
    `until` is satisfied; fails if that takes longer than `timeout_s`."""
    errors: list[KafkaError] = []
    client = Producer(
        {
            "bootstrap.servers": bootstrap,
            "client.id": "interop-confluent-refused",
            "error_cb": errors.append,
            "logger": QUIET_LIBRDKAFKA,
            # Once a second is enough to see the error, and spares the broker a retry storm.
            "reconnect.backoff.ms": 1000,
            "reconnect.backoff.max.ms": 1000,
            **security.librdkafka(),
        }
    )
    deadline = time.monotonic() + timeout_s
    while not until(errors):
        assert time.monotonic() < deadline, (
            f"confluent-kafka reported only {[error.str() for error in errors]} in {timeout_s}s"
        )
        client.poll(0.2)
    return errors


def refusal(client: str, bootstrap: str, security: Security) -> str:
    """Connects `client` with credentials the broker must refuse; asserts that the client
    reports it through its own authentication error and returns that error's message."""
    match client:
        case "confluent-kafka":
            errors = confluent_errors(
                bootstrap, security, lambda errors: any(error.code() == KafkaError._AUTHENTICATION for error in errors)
            )
            [error, *_] = [error for error in errors if error.code() == KafkaError._AUTHENTICATION]
            assert "SASL authentication error" in error.str(), error.str()
            return error.str()
        case "kafka-python":
            # kafka-python retries a refused login until its bootstrap deadline, then raises
            # KafkaTimeoutError; each refusal along the way is a SaslAuthenticationFailedError,
            # which its connection raises and its network layer logs.
            with captured_logs("kafka") as records:
                with pytest.raises(kafka.errors.KafkaTimeoutError, match="Unable to bootstrap"):
                    KafkaProducer(
                        bootstrap_servers=bootstrap,
                        client_id="interop-kafka-python",
                        bootstrap_timeout_ms=RETRY_DEADLINE_S * 1000,
                        reconnect_backoff_ms=1000,
                        reconnect_backoff_max_ms=1000,
                        **security.kafka_python(),
                    )
            errors = logged_errors(records, kafka.errors.SaslAuthenticationFailedError)
            assert errors, [record.getMessage() for record in records][-10:]
            return str(errors[0])
        case "aiokafka":
            # aiokafka gives up after one round of its bootstrap servers with KafkaConnectionError
            # and logs why: a SaslAuthenticationFailed (error 58) from the connection.

            async def start() -> None:
                producer = AIOKafkaProducer(
                    bootstrap_servers=bootstrap,
                    client_id="interop-aiokafka",
                    request_timeout_ms=TIMEOUT_MS,
                    **security.aiokafka(),
                )
                try:
                    with pytest.raises(aiokafka.errors.KafkaConnectionError, match="Unable to bootstrap"):
                        await producer.start()
                finally:
                    await producer.stop()

            with captured_logs("aiokafka") as records:
                asyncio.run(start())
            errors = logged_errors(records, aiokafka.errors.SaslAuthenticationFailed)
            assert errors, [record.getMessage() for record in records][-10:]
            return str(errors[0])
        case "kafkajs":
            result = run_kafkajs(
                "produce.mjs", bootstrap, "never-written", request={"records": [], "security": security.kafkajs()}
            )
            error = result.get("error", {})
            assert error.get("name") == "KafkaJSSASLAuthenticationError", result
            return error["message"]
        case "kcat":
            completed = run_kcat("-L", "-b", bootstrap, "-m", str(RETRY_DEADLINE_S), *security.kcat_args())
            stderr = completed.stderr.decode(errors="replace")
            assert completed.returncode != 0 and "SASL authentication error" in stderr, (completed.returncode, stderr)
            return stderr
        case _:
            raise AssertionError(f"unknown client {client}")


# --- SASL_SSL with every client and mechanism --------------------------------------------------------


@pytest.mark.parametrize("mechanism", MECHANISMS)
@pytest.mark.parametrize("client", CLIENTS)
def test_sasl_ssl_round_trip(secure, pki, tmp_path, client, mechanism):
    topic = new_topic(secure, f"sasl-{client}-{mechanism}")
    mark = secure.log_mark()
    round_trip(client, secure.bootstrap_of("SASL_SSL"), sasl_ssl(pki, mechanism), topic, tmp_path)
    # The broker says who logged in, and how.
    secure.wait_for_log("SASL authentication succeeded", f"principal=User:{USER}", f"mechanism={mechanism}", since=mark)


# (what is wrong, mechanism): the message a client gets must not tell them apart.
REFUSALS = {
    "wrong-password-scram-sha-512": ("wrong password", "SCRAM-SHA-512"),
    "unknown-user-scram-sha-256": ("unknown user", "SCRAM-SHA-256"),
    "wrong-password-plain": ("wrong password", "PLAIN"),
    "unknown-user-plain": ("unknown user", "PLAIN"),
}


@pytest.mark.parametrize("case", REFUSALS)
@pytest.mark.parametrize("client", CLIENTS)
def test_refused_credentials(secure, pki, healthy, client, case):
    what, mechanism = REFUSALS[case]
    password = f"not-the-password-{uuid.uuid4().hex[:12]}"
    user = USER if what == "wrong password" else f"nobody-{uuid.uuid4().hex[:8]}"
    mark = secure.log_mark()
    message = refusal(client, secure.bootstrap_of("SASL_SSL"), sasl_ssl(pki, mechanism, user, password))
    # The same words for an unknown user as for a wrong password.
    assert INVALID_CREDENTIALS.format(mechanism) in message, message
    # The broker's log says why, for the broker's operator; never the password.
    reason = f'wrong password or proof for user "{USER}"' if what == "wrong password" else f'unknown user "{user}"'
    secure.wait_for_log("SASL authentication failed", reason, since=mark)
    assert not [line for line in secure.log_since(mark) if password in line]
    healthy.check(f"{client}: {case}")


# --- Clients on the wrong kind of port ----------------------------------------------------------------


@pytest.mark.parametrize("listener", ["SASL_SSL", "SSL"])
def test_a_plaintext_client_on_a_tls_port_fails_cleanly(secure, healthy, listener):
    port = secure.listener_ports[listener]
    # Raw: a Kafka request where a ClientHello belongs. The broker closes the connection (at most
    # after a TLS alert), and says why.
    mark = secure.log_mark()
    client = RawClient(port)
    client.send(api_versions_request(1))
    received = client.closed_after()
    assert received == b"" or received[:1] == b"\x15", f"not a TLS alert: {received[:32]!r}"
    secure.wait_for_log("TLS handshake failed", f"peer={client.peer}", f"listener={listener}", since=mark)
    client.close()
    healthy.check(f"a raw plaintext client on {listener}")

    # confluent-kafka: cannot get metadata, and says it was disconnected during its first request.
    errors = confluent_errors(f"127.0.0.1:{port}", Security("PLAINTEXT"), lambda errors: bool(errors))
    assert errors[0].code() in (KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN), [error.str() for error in errors]
    healthy.check(f"confluent-kafka in plaintext on {listener}")

    # kcat gives up with an error.
    completed = run_kcat("-L", "-b", f"127.0.0.1:{port}", "-m", str(RETRY_DEADLINE_S))
    stderr = completed.stderr.decode(errors="replace")
    assert completed.returncode != 0 and "Disconnected while requesting ApiVersion" in stderr, (
        completed.returncode,
        stderr,
    )
    healthy.check(f"kcat in plaintext on {listener}")
    secure.wait_for_log("TLS handshake failed", f"listener={listener}", "InvalidContentType", since=mark)


def failed_tls_handshake(message: str) -> bool:
    """Whether librdkafka says its TLS handshake failed: in its own words when it read the
    broker's close as a handshake error, or as a disconnection while in the handshake state."""
    return "SSL handshake failed" in message or "in state SSL_HANDSHAKE" in message


@pytest.mark.parametrize("listener", ["PLAINTEXT", "SASL_PLAINTEXT"])
def test_a_tls_client_on_a_plaintext_port_fails_cleanly(secure, pki, healthy, listener):
    port = secure.listener_ports[listener]
    mark = secure.log_mark()
    sock = socket.create_connection(("127.0.0.1", port), timeout=15)
    peer = "127.0.0.1:%d" % sock.getsockname()[1]
    with pytest.raises((ssl.SSLError, ConnectionError)):
        client_ssl_context(pki).wrap_socket(sock, server_hostname="127.0.0.1")
    sock.close()
    secure.wait_for_log(
        "closing connection after a bad frame (a TLS handshake on a plaintext listener?)",
        f"peer={peer}",
        f"listener={listener}",
        since=mark,
    )
    healthy.check(f"a raw TLS client on {listener}")

    errors = confluent_errors(f"127.0.0.1:{port}", Security("SSL", ca=pki.ca), lambda errors: bool(errors))
    assert failed_tls_handshake(errors[0].str()), [error.str() for error in errors]
    healthy.check(f"confluent-kafka over TLS on {listener}")

    completed = run_kcat(
        "-L", "-b", f"127.0.0.1:{port}", "-m", str(RETRY_DEADLINE_S), *Security("SSL", ca=pki.ca).kcat_args()
    )
    stderr = completed.stderr.decode(errors="replace")
    assert completed.returncode != 0 and failed_tls_handshake(stderr), (completed.returncode, stderr)
    healthy.check(f"kcat over TLS on {listener}")


# --- Mutual TLS --------------------------------------------------------------------------------------


@pytest.mark.parametrize("client", CLIENTS)
def test_mutual_tls_round_trip(secure, pki, tmp_path, client):
    topic = new_topic(secure, f"mtls-{client}")
    mark = secure.log_mark()
    round_trip(client, secure.bootstrap_of("SSL"), Security("SSL", ca=pki.ca, client=pki.alice), topic, tmp_path)
    secure.wait_for_log("client certificate accepted", "principal=User:CN=alice,OU=eng,O=Acme", since=mark)


def raw_principal(broker: BrokerProcess, pki: Pki, client_certificate) -> str:
    """Connects to the SSL listener with `client_certificate`, checks that requests are answered,
    and returns the principal the broker logged for that very connection."""
    mark = broker.log_mark()
    client = RawClient(broker.listener_ports["SSL"], client_ssl_context(pki, client_certificate))
    try:
        assert client.metadata() == [(0, "127.0.0.1", broker.listener_ports["SSL"])]
    finally:
        client.close()
    line = broker.wait_for_log("client certificate accepted", f"peer={client.peer}", since=mark)
    return line.split("principal=", 1)[1].strip()


def test_mutual_tls_principal_is_the_subject_dn(secure, pki):
    assert raw_principal(secure, pki, pki.alice) == "User:CN=alice,OU=eng,O=Acme"
    assert raw_principal(secure, pki, pki.bob) == "User:CN=bob"


def test_a_principal_mapping_rule_takes_the_cn(broker_factory, pki):
    broker = broker_factory(
        *tls_args(pki),
        "--tls-client-ca",
        str(pki.ca),
        "--ssl-principal-mapping-rules",
        MAPPING_RULE,
        *NO_GATEWAY,
        env={"TIDEWATER_LOG": DEBUG_LOG, "TIDEWATER_SUPERUSERS": SUPERUSERS},
        listeners=("SSL",),
    )
    assert raw_principal(broker, pki, pki.alice) == "User:alice"
    assert raw_principal(broker, pki, pki.bob) == "User:bob"
    # A client of that listener works as on any other.
    confluent_round_trip(
        broker.bootstrap_of("SSL"), Security("SSL", ca=pki.ca, client=pki.bob), new_topic(broker, "mapped")
    )


# (client certificate, the TLS alert a raw client sees, why the broker refused, the alerts
# confluent-kafka may see). The broker names the CAs it accepts in its CertificateRequest, and
# librdkafka (unlike Python's ssl) then keeps a certificate of another CA to itself: no
# certificate at all.
MTLS_REFUSALS = {
    "no-certificate": (None, "CERTIFICATE_REQUIRED", "peer sent no certificates", ["certificate required"]),
    "foreign-ca": ("foreign", "UNKNOWN_CA", "UnknownIssuer", ["unknown ca", "certificate required"]),
    "expired": ("expired", "CERTIFICATE_EXPIRED", "certificate expired", ["certificate expired"]),
}


@pytest.mark.parametrize("case", MTLS_REFUSALS)
def test_mutual_tls_refuses_at_the_handshake(secure, pki, healthy, case):
    certificate_name, alert, reason, confluent_alerts = MTLS_REFUSALS[case]
    certificate = getattr(pki, certificate_name) if certificate_name else None
    port = secure.listener_ports["SSL"]
    mark = secure.log_mark()
    # Raw: in TLS 1.3 the client's side of the handshake may complete before the server has
    # checked its certificate, so the refusal (an alert) can arrive at the first read.
    sock = socket.create_connection(("127.0.0.1", port), timeout=15)
    peer = "127.0.0.1:%d" % sock.getsockname()[1]
    with pytest.raises(ssl.SSLError) as refused:
        tls = client_ssl_context(pki, certificate).wrap_socket(sock, server_hostname="127.0.0.1")
        tls.sendall(api_versions_request(1))
        read_response(tls)
    sock.close()
    assert alert in str(refused.value), refused.value
    secure.wait_for_log("TLS handshake failed", f"peer={peer}", "listener=SSL", reason, since=mark)
    healthy.check(f"a raw mTLS client with {case}")

    # confluent-kafka is refused with an alert too.
    errors = confluent_errors(
        f"127.0.0.1:{port}", Security("SSL", ca=pki.ca, client=certificate), lambda errors: bool(errors)
    )
    assert any(expected in errors[0].str() for expected in confluent_alerts), [error.str() for error in errors]
    healthy.check(f"confluent-kafka with {case}")
    assert not [line for line in secure.log_since(mark) if "client certificate accepted" in line]


# --- Bad input over raw sockets ----------------------------------------------------------------------


def client_first(user: str, nonce: str = "rOprNGfwEbeRWgbNEkqO") -> bytes:
    return f"n,,n={user},r={nonce}".encode()


def expect_refused(client: RawClient, auth_bytes: bytes, reason: str) -> None:
    error_code, message, _, _ = client.authenticate(auth_bytes)
    assert error_code == SASL_AUTHENTICATION_FAILED, (error_code, message)
    assert message and reason in message, message


def garbage_client_first(client: RawClient) -> str:
    client.handshake("SCRAM-SHA-256")
    expect_refused(client, b"\xff\x00\x13garbage\x00", "malformed SCRAM-SHA-256 message")
    return "malformed SCRAM-SHA-256 message"


def garbage_plain(client: RawClient) -> str:
    client.handshake("PLAIN")
    expect_refused(client, b"no separators at all", "malformed PLAIN message")
    return "malformed PLAIN message"


def client_final_before_client_first(client: RawClient) -> str:
    client.handshake("SCRAM-SHA-512")
    expect_refused(client, b"c=biws,r=rOprNGfwEbeRWgbNEkqOserver,p=dHpiYnJpZGdl", "malformed SCRAM-SHA-512 message")
    return "malformed SCRAM-SHA-512 message"


def client_first_twice(client: RawClient) -> str:
    client.handshake("SCRAM-SHA-256")
    error_code, _, server_first, _ = client.authenticate(client_first(USER))
    assert error_code == 0 and server_first and server_first.startswith(b"r=rOprNGfwEbeRWgbNEkqO"), server_first
    expect_refused(client, client_first(USER), "malformed SCRAM-SHA-256 message")
    return "malformed SCRAM-SHA-256 message"


def client_final_with_another_nonce(client: RawClient) -> str:
    client.handshake("SCRAM-SHA-256")
    error_code, _, server_first, _ = client.authenticate(client_first(USER))
    assert error_code == 0 and server_first, server_first
    expect_refused(
        client,
        b"c=biws,r=rOprNGfwEbeRWgbNEkqOnot-the-servers,p=dHpiYnJpZGdl",
        "the nonce is not the one the server sent",
    )
    return "the nonce is not the one the server sent"


def huge_username(client: RawClient) -> str:
    client.handshake("SCRAM-SHA-256")
    # Over the unauthenticated request limit: closed without an answer, before it is parsed.
    client.send(sasl_authenticate_request(client.next_id(), client_first("u" * (1 << 20))))
    return f"exceeds the limit of {UNAUTHENTICATED_REQUEST_BYTES_MAX} bytes"


def long_username(client: RawClient) -> str:
    # Within the SASL message limit, over the user name limit (1 KiB).
    client.handshake("SCRAM-SHA-256")
    expect_refused(client, client_first("u" * 2048), "malformed SCRAM-SHA-256 message")
    return "malformed SCRAM-SHA-256 message"


def empty_scram_username(client: RawClient) -> str:
    client.handshake("SCRAM-SHA-256")
    expect_refused(client, client_first(""), "the user name is empty")
    return "the user name is empty"


def empty_plain_username(client: RawClient) -> str:
    client.handshake("PLAIN")
    expect_refused(client, b"\0\0" + PASSWORD.encode(), "the user name is empty")
    return "the user name is empty"


def metadata_before_authentication(client: RawClient) -> str:
    client.send(metadata_request(client.next_id()))
    return "Metadata request before SASL authentication"


def metadata_during_the_exchange(client: RawClient) -> str:
    client.handshake("SCRAM-SHA-256")
    error_code, _, _, _ = client.authenticate(client_first(USER))
    assert error_code == 0
    client.send(metadata_request(client.next_id()))
    return "Metadata request during SASL authentication"


def authenticate_without_handshake(client: RawClient) -> str:
    error_code, message, _, _ = client.authenticate(client_first(USER))
    assert error_code == ILLEGAL_SASL_STATE, (error_code, message)
    return "SaslAuthenticate without a SaslHandshake first"


def unsupported_mechanism(client: RawClient) -> str:
    error_code, mechanisms = client.handshake("GSSAPI")
    assert (error_code, mechanisms) == (UNSUPPORTED_SASL_MECHANISM, ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
    return 'mechanism="GSSAPI"'


def second_handshake_during_the_exchange(client: RawClient) -> str:
    assert client.handshake("SCRAM-SHA-256")[0] == 0
    assert client.handshake("SCRAM-SHA-256")[0] == ILLEGAL_SASL_STATE
    return "SaslHandshake refused (error code 34)"


def v0_handshake_then_a_garbage_token(client: RawClient) -> str:
    # After a v0 SaslHandshake the mechanism's messages are bare frames, without a header.
    assert client.handshake("SCRAM-SHA-256", version=0)[0] == 0
    garbage = b"\xff\xfe garbage token"
    client.send(struct.pack(">i", len(garbage)) + garbage)
    return "malformed SCRAM-SHA-256 message"


def sasl_message_over_its_limit(client: RawClient) -> str:
    client.handshake("SCRAM-SHA-256")
    expect_refused(client, client_first("u" * SASL_MESSAGE_BYTES_MAX), f"over the limit of {SASL_MESSAGE_BYTES_MAX}")
    return f"over the limit of {SASL_MESSAGE_BYTES_MAX}"


# name: a function that misbehaves on a fresh connection and returns what the broker must log.
# The connection must then be closed, nothing more sent on it.
BAD_INPUT = {
    "garbage-scram-client-first": garbage_client_first,
    "garbage-plain-message": garbage_plain,
    "scram-client-final-before-client-first": client_final_before_client_first,
    "scram-client-first-twice": client_first_twice,
    "scram-client-final-with-another-nonce": client_final_with_another_nonce,
    "scram-1-mib-username": huge_username,
    "scram-2-kib-username": long_username,
    "scram-message-over-8-kib": sasl_message_over_its_limit,
    "scram-empty-username": empty_scram_username,
    "plain-empty-username": empty_plain_username,
    "metadata-before-authentication": metadata_before_authentication,
    "metadata-during-the-exchange": metadata_during_the_exchange,
    "sasl-authenticate-without-handshake": authenticate_without_handshake,
    "unsupported-mechanism": unsupported_mechanism,
    "second-handshake-during-the-exchange": second_handshake_during_the_exchange,
    "v0-handshake-then-a-garbage-token": v0_handshake_then_a_garbage_token,
}


@pytest.mark.parametrize("case", BAD_INPUT)
@pytest.mark.parametrize("listener", ["SASL_PLAINTEXT", "SASL_SSL"])
def test_bad_sasl_input_closes_only_that_connection(secure, pki, healthy, listener, case):
    tls = client_ssl_context(pki) if listener == "SASL_SSL" else None
    mark = secure.log_mark()
    client = RawClient(secure.listener_ports[listener], tls)
    try:
        logged = BAD_INPUT[case](client)
        rest = client.closed_after()
        assert rest == b"", f"{len(rest)} unexpected bytes before the close: {rest[:64]!r}"
    finally:
        client.close()
    secure.wait_for_log(logged, since=mark)
    # The debug line for the close names the connection, so the close was this one's.
    secure.wait_for_log("connection closed", f"peer={client.peer}", since=mark)
    healthy.check(f"{case} on {listener}")


def test_a_refused_client_gets_its_answer_before_the_close(secure, healthy):
    """The broker answers a refused exchange at once and closes the connection a moment later
    (Kafka's connection.failed.authentication.delay.ms, 100 ms): a client that reads the answer
    and the close together (kafka-python 3.0 then drops the answer) still learns why."""
    client = RawClient(secure.listener_ports["SASL_PLAINTEXT"])
    client.handshake("PLAIN")
    expect_refused(client, b"\0" + USER.encode() + b"\0wrong", INVALID_CREDENTIALS.format("PLAIN"))
    answered = time.monotonic()
    assert client.closed_after() == b""
    assert time.monotonic() - answered >= 0.09, "closed right after the answer"
    client.close()
    healthy.check("a refused PLAIN exchange")


@pytest.mark.parametrize("listener", ["PLAINTEXT", "SASL_PLAINTEXT"])
def test_a_tls_client_hello_on_a_plaintext_port_is_closed(secure, healthy, listener):
    mark = secure.log_mark()
    client = RawClient(secure.listener_ports[listener])
    try:
        client.send(tls_client_hello())
        assert client.closed_after() == b""
    finally:
        client.close()
    secure.wait_for_log("(a TLS handshake on a plaintext listener?)", f"peer={client.peer}", since=mark)
    healthy.check(f"a ClientHello on {listener}")


def test_unauthenticated_requests_are_capped_at_512_kib(secure, healthy):
    port = secure.listener_ports["SASL_PLAINTEXT"]
    # The frame's size (after its 4-byte prefix): a header of 21 bytes, then the 4-byte length of
    # the auth bytes and the auth bytes themselves.
    header_bytes = len(request(SASL_AUTHENTICATE, 1, 1)) - 4
    at_limit = b"x" * (UNAUTHENTICATED_REQUEST_BYTES_MAX - header_bytes - 4)
    assert len(sasl_authenticate_request(1, at_limit)) - 4 == UNAUTHENTICATED_REQUEST_BYTES_MAX
    # At the limit: read, and refused by SASL's own message limit, with an answer.
    client = RawClient(port)
    client.handshake("SCRAM-SHA-256")
    expect_refused(client, at_limit, f"over the limit of {SASL_MESSAGE_BYTES_MAX}")
    assert client.closed_after() == b""
    client.close()
    # One byte over: closed without an answer.
    mark = secure.log_mark()
    client = RawClient(port)
    client.handshake("SCRAM-SHA-256")
    client.send(sasl_authenticate_request(client.next_id(), at_limit + b"x"))
    assert client.closed_after() == b""
    client.close()
    secure.wait_for_log(
        "bad frame", f"peer={client.peer}", f"request of {UNAUTHENTICATED_REQUEST_BYTES_MAX + 1} bytes", since=mark
    )
    healthy.check("requests at and over the unauthenticated limit")
    # Once authenticated, the connection may send larger requests (up to --max-request-bytes).
    client = RawClient(port)
    client.login_plain(USER, PASSWORD)
    body = struct.pack(">h", len("x" * 1000)) + b"x" * 1000
    topics = struct.pack(">i", 600) + body * 600  # a Metadata v1 request of ~600 KB
    response = client.call(lambda cid: request(3, 1, cid, topics))
    assert response, "no Metadata response"
    client.close()


# --- Users through KIP-554 --------------------------------------------------------------------------


def scram_admin(bootstrap: str, pki: Pki) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap, "logger": QUIET_LIBRDKAFKA, **sasl_ssl(pki).librdkafka()})


def alter_results(admin: AdminClient, alterations: list) -> dict[str, int]:
    """Each user's outcome: 0, or the Kafka error code."""
    outcomes = {}
    for user, future in admin.alter_user_scram_credentials(alterations, request_timeout=CLIENT_TIMEOUT_S).items():
        try:
            future.result(timeout=CLIENT_TIMEOUT_S)
            outcomes[user] = 0
        except KafkaException as error:
            outcomes[user] = error.args[0].code()
    return outcomes


def described(admin: AdminClient, users: list[str]) -> dict[str, object]:
    """Each user's credentials as {(mechanism, iterations)}, or the Kafka error code."""
    outcomes: dict[str, object] = {}
    for user, future in admin.describe_user_scram_credentials(users, request_timeout=CLIENT_TIMEOUT_S).items():
        try:
            description = future.result(timeout=CLIENT_TIMEOUT_S)
            outcomes[user] = {(info.mechanism, info.iterations) for info in description.scram_credential_infos}
        except KafkaException as error:
            outcomes[user] = error.args[0].code()
    return outcomes


def test_scram_users_through_the_admin_client_survive_restarts(broker_factory, pki):
    broker = broker_factory(
        *tls_args(pki),
        "--sasl-mechanisms",
        "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512",
        *NO_GATEWAY,
        env=bootstrap_env(),
        listeners=("SASL_SSL",),
    )
    user, first_password, second_password = f"dave-{uuid.uuid4().hex[:6]}", "dave-first-pw", "dave-second-pw"
    sha256, sha512 = ScramMechanism.SCRAM_SHA_256, ScramMechanism.SCRAM_SHA_512

    def login(mechanism: str, password: str) -> KafkaError | None:
        return confluent_login_error(
            broker.bootstrap_of("SASL_SSL"), Security("SASL_SSL", mechanism, user, password, ca=pki.ca)
        )

    admin = scram_admin(broker.bootstrap_of("SASL_SSL"), pki)
    assert alter_results(
        admin,
        [
            UserScramCredentialUpsertion(user, ScramCredentialInfo(sha256, 4096), first_password.encode()),
            UserScramCredentialUpsertion(
                user, ScramCredentialInfo(sha512, 8192), first_password.encode(), b"a salt of our own"
            ),
        ],
    ) == {user: 0}
    for mechanism in MECHANISMS:
        assert login(mechanism, first_password) is None, mechanism
    assert login("SCRAM-SHA-256", second_password).code() == KafkaError._AUTHENTICATION
    assert described(admin, [user]) == {user: {(sha256, 4096), (sha512, 8192)}}
    every_user = admin.describe_user_scram_credentials(request_timeout=CLIENT_TIMEOUT_S).result(
        timeout=CLIENT_TIMEOUT_S
    )
    assert {USER, user} <= set(every_user), every_user

    broker.restart()
    admin = scram_admin(broker.bootstrap_of("SASL_SSL"), pki)
    assert described(admin, [user]) == {user: {(sha256, 4096), (sha512, 8192)}}
    assert login("SCRAM-SHA-512", first_password) is None
    # A new password replaces the old one.
    assert alter_results(
        admin, [UserScramCredentialUpsertion(user, ScramCredentialInfo(sha256, 4096), second_password.encode())]
    ) == {user: 0}
    assert login("SCRAM-SHA-256", second_password) is None
    assert login("SCRAM-SHA-256", first_password).code() == KafkaError._AUTHENTICATION

    # Deleted, the user can no longer log in, with any mechanism, and is no longer described.
    assert alter_results(
        admin, [UserScramCredentialDeletion(user, sha256), UserScramCredentialDeletion(user, sha512)]
    ) == {user: 0}
    assert described(admin, [user]) == {user: RESOURCE_NOT_FOUND}
    for mechanism, password in [
        ("SCRAM-SHA-256", second_password),
        ("SCRAM-SHA-512", first_password),
        ("PLAIN", second_password),
    ]:
        error = login(mechanism, password)
        assert error is not None and error.code() == KafkaError._AUTHENTICATION, (mechanism, error)
    broker.restart()
    admin = scram_admin(broker.bootstrap_of("SASL_SSL"), pki)
    assert described(admin, [user]) == {user: RESOURCE_NOT_FOUND}
    assert login("SCRAM-SHA-512", first_password).code() == KafkaError._AUTHENTICATION
    # The bootstrap user came through both restarts (and was not made again).
    assert login_as_bootstrap_user(broker, pki) is None
    assert len([line for line in broker.lines if "created the bootstrap user" in line]) == 1


def login_as_bootstrap_user(broker: BrokerProcess, pki: Pki) -> KafkaError | None:
    return confluent_login_error(broker.bootstrap_of("SASL_SSL"), sasl_ssl(pki, "SCRAM-SHA-256"))


def test_scram_credential_errors(secure, pki, healthy):
    admin = scram_admin(secure.bootstrap_of("SASL_SSL"), pki)
    sha256, sha512 = ScramMechanism.SCRAM_SHA_256, ScramMechanism.SCRAM_SHA_512
    suffix = uuid.uuid4().hex[:6]
    too_few, too_many, good = f"erin-{suffix}", f"fay-{suffix}", f"gus-{suffix}"
    # One user's bad alteration does not stop another's good one.
    assert alter_results(
        admin,
        [
            UserScramCredentialUpsertion(too_few, ScramCredentialInfo(sha256, 1000), b"pw"),
            UserScramCredentialUpsertion(too_many, ScramCredentialInfo(sha512, 20000), b"pw"),
            UserScramCredentialUpsertion(good, ScramCredentialInfo(sha512, 4096), b"gus-pw"),
        ],
    ) == {too_few: UNACCEPTABLE_CREDENTIAL, too_many: UNACCEPTABLE_CREDENTIAL, good: 0}
    assert described(admin, [too_few, good]) == {too_few: RESOURCE_NOT_FOUND, good: {(sha512, 4096)}}
    # Deleting what does not exist: the user, or a mechanism the user has no credential for.
    assert alter_results(admin, [UserScramCredentialDeletion(f"nobody-{suffix}", sha256)]) == {
        f"nobody-{suffix}": RESOURCE_NOT_FOUND
    }
    assert alter_results(admin, [UserScramCredentialDeletion(good, sha256)]) == {good: RESOURCE_NOT_FOUND}
    assert described(admin, [f"nobody-{suffix}"]) == {f"nobody-{suffix}": RESOURCE_NOT_FOUND}
    # Names the broker keeps for itself, its components' user above all.
    for reserved in ["__tidewater_x", "__tidewater_internal"]:
        assert alter_results(
            admin, [UserScramCredentialUpsertion(reserved, ScramCredentialInfo(sha512, 4096), b"pw")]
        ) == {reserved: UNACCEPTABLE_CREDENTIAL}
        assert alter_results(admin, [UserScramCredentialDeletion(reserved, sha512)]) == {
            reserved: UNACCEPTABLE_CREDENTIAL
        }
        assert described(admin, [reserved]) == {reserved: RESOURCE_NOT_FOUND}
    healthy.check("refused credential alterations")


def test_a_consumer_group_over_sasl_ssl_is_coordinated_on_that_listener(secure, pki):
    """FindCoordinator answers with the address of the client's own listener: a group member on
    SASL_SSL joins, reads and commits there (sent to the PLAINTEXT port, it would fail)."""
    bootstrap = secure.bootstrap_of("SASL_SSL")
    topic = new_topic(secure, "group-sasl")
    records = round_trip_records(105)
    ck.produce(bootstrap, topic, records, partition=0, logger=QUIET_LIBRDKAFKA, **sasl_ssl(pki).librdkafka())
    group = f"group-{uuid.uuid4().hex[:8]}"
    consumer = ck.consumer(
        bootstrap,
        logger=QUIET_LIBRDKAFKA,
        **{"group.id": group, "auto.offset.reset": "earliest"},
        **sasl_ssl(pki).librdkafka(),
    )
    try:
        consumer.subscribe([topic])
        messages: list = []
        deadline = time.monotonic() + CLIENT_TIMEOUT_S
        while len(messages) < len(records):
            assert time.monotonic() < deadline, f"the group member read {len(messages)} of {len(records)} records"
            for message in consumer.consume(num_messages=len(records), timeout=0.5):
                assert message.error() is None, message.error()
                messages.append(message)
        assert_same_records(records, [ck.to_record(message) for message in messages], "group member")
        consumer.commit(message=messages[-1], asynchronous=False)
        [committed] = consumer.committed([TopicPartition(topic, 0)], timeout=CLIENT_TIMEOUT_S)
        assert committed.offset == len(records)
    finally:
        consumer.close()


def test_each_sasl_listener_offers_its_own_mechanisms(broker_factory, pki):
    broker = broker_factory(
        *tls_args(pki),
        "--sasl-mechanisms",
        "PLAIN,SCRAM-SHA-256",
        "--sasl-mechanisms",
        "SCRAM-SHA-512",
        *NO_GATEWAY,
        env=bootstrap_env(),
        listeners=("SASL_SSL", "SASL_PLAINTEXT"),
    )

    def offered(listener: str, tls: ssl.SSLContext | None) -> list[str]:
        client = RawClient(broker.listener_ports[listener], tls)
        try:
            error_code, mechanisms = client.handshake("GSSAPI")
            assert error_code == UNSUPPORTED_SASL_MECHANISM
            assert client.closed_after() == b""
            return mechanisms
        finally:
            client.close()

    assert offered("SASL_SSL", client_ssl_context(pki)) == ["PLAIN", "SCRAM-SHA-256"]
    assert offered("SASL_PLAINTEXT", None) == ["SCRAM-SHA-512"]
    # A mechanism another listener offers is refused here.
    security = Security("SASL_PLAINTEXT", "PLAIN", USER, PASSWORD)
    errors = confluent_errors(broker.bootstrap_of("SASL_PLAINTEXT"), security, lambda errors: bool(errors))
    assert "PLAIN" in errors[0].str() and errors[0].code() == KafkaError._AUTHENTICATION, [
        error.str() for error in errors
    ]
    assert (
        confluent_login_error(
            broker.bootstrap_of("SASL_PLAINTEXT"), Security("SASL_PLAINTEXT", "SCRAM-SHA-512", USER, PASSWORD)
        )
        is None
    )


@pytest.mark.parametrize("listener", ["PLAINTEXT", "SSL"])
def test_sasl_on_a_listener_without_sasl_is_illegal(secure, pki, healthy, listener):
    tls = client_ssl_context(pki, pki.alice) if listener == "SSL" else None
    mark = secure.log_mark()
    client = RawClient(secure.listener_ports[listener], tls)
    try:
        assert client.handshake("PLAIN")[0] == ILLEGAL_SASL_STATE
        assert client.closed_after() == b""
    finally:
        client.close()
    secure.wait_for_log("connection closed", f"peer={client.peer}", "SaslHandshake refused (error code 34)", since=mark)
    healthy.check(f"a SaslHandshake on {listener}")


def test_reauthentication_must_keep_the_principal(secure, pki, healthy):
    other = f"hal-{uuid.uuid4().hex[:6]}"
    admin = scram_admin(secure.bootstrap_of("SASL_SSL"), pki)
    upsert = UserScramCredentialUpsertion(other, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 4096), b"hal-pw")
    assert alter_results(admin, [upsert]) == {other: 0}
    mark = secure.log_mark()
    client = RawClient(secure.listener_ports["SASL_PLAINTEXT"])
    try:
        client.login_plain(USER, PASSWORD)
        # Re-authenticating as the same user works, and the connection goes on.
        client.login_plain(USER, PASSWORD)
        assert client.metadata()
        # As another user it is refused, and the connection closed.
        assert client.handshake("PLAIN")[0] == 0
        expect_refused(
            client, b"\0" + other.encode() + b"\0hal-pw", "Cannot change principals during re-authentication"
        )
        assert client.closed_after() == b""
    finally:
        client.close()
    secure.wait_for_log("SASL re-authentication refused", f"peer={client.peer}", since=mark)
    healthy.check("a re-authentication as another user")


# --- Re-authentication (KIP-368) ---------------------------------------------------------------------


class ConfluentSession:
    """A confluent-kafka producer and an assigned consumer of one topic."""

    def __init__(self, bootstrap: str, security: Security, topic: str):
        self.topic = topic
        self.errors: list[KafkaError] = []
        common = {"error_cb": self.errors.append, "logger": QUIET_LIBRDKAFKA, **security.librdkafka()}
        self.producer = ck.producer(bootstrap, **common)
        self.consumer = ck.consumer(bootstrap, **common)
        self.consumer.assign([TopicPartition(topic, 0, 0)])
        self.delivered: list[int] = []

    def produce(self, value: bytes) -> None:
        self.producer.produce(
            self.topic,
            value=value,
            partition=0,
            on_delivery=lambda error, message: self.delivered.append(-1 if error else message.offset()),
        )
        self.producer.poll(0)

    def read(self, timeout_s: float) -> list[bytes]:
        values = []
        for message in self.consumer.consume(num_messages=100, timeout=timeout_s):
            assert message.error() is None, message.error()
            values.append(message.value())
        return values

    def finish(self) -> list[int]:
        """Waits for every delivery; returns the offsets."""
        assert self.producer.flush(CLIENT_TIMEOUT_S) == 0
        assert not self.errors, [error.str() for error in self.errors]
        return self.delivered

    def close(self) -> None:
        self.consumer.close()


class KafkaPythonSession:
    """The same with kafka-python, which re-authenticates too (its SaslReauthenticator)."""

    def __init__(self, bootstrap: str, security: Security, topic: str):
        self.topic = topic
        self.producer = KafkaProducer(
            bootstrap_servers=bootstrap,
            client_id="interop-kafka-python",
            request_timeout_ms=TIMEOUT_MS,
            linger_ms=5,
            **security.kafka_python(),
        )
        self.consumer = KafkaConsumer(
            bootstrap_servers=bootstrap,
            client_id="interop-kafka-python",
            group_id=None,
            enable_auto_commit=False,
            request_timeout_ms=TIMEOUT_MS,
            **security.kafka_python(),
        )
        self.partition = KafkaPythonTopicPartition(topic, 0)
        self.consumer.assign([self.partition])
        self.consumer.seek(self.partition, 0)
        self.futures: list = []

    def produce(self, value: bytes) -> None:
        self.futures.append(self.producer.send(self.topic, value=value, partition=0))

    def read(self, timeout_s: float) -> list[bytes]:
        batches = self.consumer.poll(timeout_ms=int(timeout_s * 1000), max_records=100)
        return [message.value for batch in batches.values() for message in batch]

    def finish(self) -> list[int]:
        self.producer.flush(timeout=CLIENT_TIMEOUT_S)
        return [future.get(timeout=CLIENT_TIMEOUT_S).offset for future in self.futures]

    def close(self) -> None:
        self.producer.close(timeout=CLIENT_TIMEOUT_S)
        self.consumer.close()


@pytest.mark.parametrize("client", ["confluent-kafka", "kafka-python"])
def test_clients_reauthenticate_and_keep_working(broker_factory, pki, client):
    broker = broker_factory(
        *tls_args(pki),
        "--sasl-mechanisms",
        "SCRAM-SHA-256,SCRAM-SHA-512",
        "--connections-max-reauth-ms",
        str(REAUTH_MS),
        *NO_GATEWAY,
        env=bootstrap_env("info,tidewater_kafka::authentication=debug"),
        listeners=("SASL_SSL",),
    )
    topic = new_topic(broker, "reauth")
    session_class = ConfluentSession if client == "confluent-kafka" else KafkaPythonSession
    session = session_class(broker.bootstrap_of("SASL_SSL"), sasl_ssl(pki, "SCRAM-SHA-256"), topic)
    read: list[bytes] = []
    sent = 0
    mark = broker.log_mark()
    # Over three session lifetimes, a record every 200 ms, read back as it comes.
    deadline = time.monotonic() + 10 * REAUTH_MS / 3000
    try:
        while time.monotonic() < deadline:
            session.produce(str(sent).encode())
            sent += 1
            read.extend(session.read(0.2))
        delivered = session.finish()
        read_deadline = time.monotonic() + CLIENT_TIMEOUT_S
        while len(read) < sent and time.monotonic() < read_deadline:
            read.extend(session.read(0.5))
    finally:
        session.close()
    assert delivered == list(range(sent)), delivered
    assert read == [str(index).encode() for index in range(sent)]
    log = broker.log_since(mark)
    assert not [line for line in log if "request after the SASL session expired" in line], (
        "a client was disconnected for expiry"
    )
    # Both clients' connections re-authenticated, each more than once.
    reauthentications = [
        line for line in log if "SASL authentication succeeded" in line and "reauthenticating=true" in line
    ]
    assert len(reauthentications) >= 4, "\n".join(reauthentications)


def test_a_session_that_expires_without_reauthentication_is_closed(broker_factory, pki):
    broker = broker_factory(
        "--sasl-mechanisms",
        "PLAIN",
        "--connections-max-reauth-ms",
        str(REAUTH_MS),
        *NO_GATEWAY,
        env=bootstrap_env(),
        listeners=("SASL_PLAINTEXT",),
    )
    client = RawClient(broker.listener_ports["SASL_PLAINTEXT"])
    # SaslAuthenticate v1 tells the client how long its session lasts.
    assert client.login_plain(USER, PASSWORD) == REAUTH_MS
    started = time.monotonic()
    assert client.metadata()
    time.sleep(max(0.0, REAUTH_MS / 1000 + 0.5 - (time.monotonic() - started)))
    client.send(metadata_request(client.next_id()))
    assert client.closed_after() == b""
    client.close()
    broker.wait_for_log("request after the SASL session expired", f"peer={client.peer}")


# --- The embedded components ---------------------------------------------------------------------------


def test_embedded_components_connect_when_the_listeners_authenticate(broker_factory, pki):
    """With an authenticating listener, the gateway (like triggers and query jobs) reaches the
    broker through the internal SCRAM listener: the bundled librdkafka is built with OpenSSL
    (`ssl-vendored`), without which it has no SCRAM ("No provider for SASL mechanism
    SCRAM-SHA-512") and the gateway would never open its MQTT listener."""
    broker = broker_factory(
        *tls_args(pki), "--mqtt-allow-anonymous", "--http-listen", "none", env=bootstrap_env(), listeners=("SASL_SSL",)
    )
    assert broker.mqtt_port is not None
    probe_error: AssertionError | None = None
    try:
        wait_until_retained_messages_are_served(broker.mqtt_port)
    except AssertionError as error:
        probe_error = error
    client_errors = [line for line in broker.lines if "No provider for SASL mechanism" in line]
    assert not client_errors and probe_error is None, (
        f"the gateway cannot reach the broker ({probe_error}): {client_errors[:1]}"
    )


# --- Safe by default, and settings that do not load ---------------------------------------------------


def serve(data_dir: Path, *args: str, expect_running: bool) -> str:
    """Runs `tidewater serve ARGS` (no gateway). With `expect_running`, waits for its running line
    and stops it with SIGTERM (it must exit 0); otherwise it must exit non-zero on its own. Returns
    what it logged."""
    gateway = () if "--mqtt-listen" in args else NO_GATEWAY
    command = [str(tidewater_binary()), "serve", "--data-dir", str(data_dir), *gateway, *args]
    env = {"PATH": "/usr/bin:/bin", "TIDEWATER_LOG": "info"}
    log_path = data_dir.with_suffix(".log")
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log, env=env)
    try:
        deadline = time.monotonic() + 30
        while process.poll() is None and time.monotonic() < deadline:
            if expect_running and "tidewater is running" in log_path.read_text(errors="replace"):
                process.send_signal(signal.SIGTERM)
                assert process.wait(timeout=30) == 0, log_path.read_text(errors="replace")
                return log_path.read_text(errors="replace")
            time.sleep(0.05)
        text = log_path.read_text(errors="replace")
        assert process.poll() is not None, f"serve neither ran nor exited in 30 s: {text}"
        assert not expect_running, f"serve exited with {process.returncode} instead of running: {text}"
        assert process.returncode != 0, f"serve exited 0: {text}"
        return text
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)


def test_a_non_loopback_plaintext_listener_is_refused_unless_allowed(tmp_path):
    refused = serve(tmp_path / "refused", "--kafka-listen", "0.0.0.0:0", expect_running=False)
    assert "PLAINTEXT://0.0.0.0:0" in refused and "--allow-insecure-listeners" in refused, refused
    started = serve(
        tmp_path / "allowed", "--kafka-listen", "0.0.0.0:0", "--allow-insecure-listeners", expect_running=True
    )
    assert "listeners=PLAINTEXT://0.0.0.0:" in started, started


def test_an_anonymous_mqtt_listener_beyond_loopback_is_refused(tmp_path):
    refused = serve(
        tmp_path / "refused",
        "--kafka-listen",
        "127.0.0.1:0",
        "--mqtt-listen",
        "0.0.0.0:0",
        "--mqtt-allow-anonymous",
        "--http-listen",
        "none",
        expect_running=False,
    )
    assert (
        "MQTT listener allowing anonymous clients on 0.0.0.0:0" in refused and "--allow-insecure-listeners" in refused
    ), refused


def test_sasl_ssl_on_every_interface_starts(tmp_path, pki):
    started = serve(tmp_path / "secure", "--kafka-listen", "SASL_SSL://0.0.0.0:0", *tls_args(pki), expect_running=True)
    assert "listeners=SASL_SSL://0.0.0.0:" in started, started


def test_a_tls_listener_without_a_certificate_is_refused(tmp_path):
    refused = serve(tmp_path / "no-cert", "--kafka-listen", "SSL://127.0.0.1:0", expect_running=False)
    assert "listener SSL://127.0.0.1:0 uses TLS: give --tls-cert and --tls-key" in refused, refused


@pytest.mark.parametrize("case", ["missing-cert", "garbage-cert", "missing-key", "garbage-key", "key-of-another-cert"])
def test_certificate_files_that_do_not_load_are_named(tmp_path, pki, case):
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("this is not PEM\n")
    missing = tmp_path / "missing.pem"
    cert, key = pki.server.cert, pki.server.key
    match case:
        case "missing-cert":
            cert, named, reason = missing, [str(missing)], "No such file or directory"
        case "garbage-cert":
            cert, named, reason = garbage, [str(garbage)], "holds no PEM certificate"
        case "missing-key":
            key, named, reason = missing, [str(missing)], "No such file or directory"
        case "garbage-key":
            key, named, reason = garbage, [str(garbage)], "holds no PEM private key"
        case _:
            key, named, reason = (
                pki.alice.key,
                [str(pki.alice.key), str(pki.server.cert)],
                "does not belong to the certificate",
            )
    refused = serve(
        tmp_path / "data",
        "--kafka-listen",
        "SASL_SSL://127.0.0.1:0",
        "--tls-cert",
        str(cert),
        "--tls-key",
        str(key),
        expect_running=False,
    )
    assert all(path in refused for path in named) and reason in refused, refused
