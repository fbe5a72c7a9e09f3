"""What the security tests (test_security.py, test_security_cli.py, test_security_seed.py) share:
a test PKI made with Python's `cryptography` package, each client's settings for SASL_SSL, SSL
and SASL_PLAINTEXT (`Security`, also as the properties file the `tidewater` CLI reads), whether
confluent-kafka can log in (`confluent_login_error`), and raw Kafka frames for the bad-input
cases.

The PKI is made fresh for each test module in a temporary directory: a test CA; a server
certificate for IP 127.0.0.1 and DNS localhost signed by it (clients check the host name, as
they do by default); client certificates signed by it; a second, foreign CA with a client
certificate of its own; and a client certificate of the test CA that has expired. Keys are
ECDSA P-256, which every client's TLS library (OpenSSL in librdkafka and Python, Node's) and
rustls accept, and which is quick to make.

Raw frames are built by hand with `struct`, as a client would put them on the wire: a size
prefix, a request header (v1: api key, api version, correlation id, client id) and the body.
Only non-flexible versions are used (ApiVersions v0, Metadata v1, SaslHandshake v1,
SaslAuthenticate v1), so no tagged fields are needed.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import socket
import ssl
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException
from confluent_kafka.admin import AdminClient
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# --- Test PKI -----------------------------------------------------------------------------------

# Validity of the certificates that are meant to be valid: long enough for any test run.
VALID_DAYS = 30


@dataclass(frozen=True)
class CertificateFiles:
    """A certificate and its key as PEM files, and the subject as RFC 2253 writes it (the form
    of Kafka's default principal)."""

    cert: Path
    key: Path
    subject: str


@dataclass(frozen=True)
class Pki:
    ca: Path
    server: CertificateFiles
    # CN=alice,OU=eng,O=Acme and CN=bob, signed by the test CA.
    alice: CertificateFiles
    bob: CertificateFiles
    # Signed by another CA, which the broker does not trust.
    foreign_ca: Path
    foreign: CertificateFiles
    # Signed by the test CA, but its validity ended yesterday.
    expired: CertificateFiles


def _name(*attributes: tuple[x509.ObjectIdentifier, str]) -> x509.Name:
    return x509.Name([x509.NameAttribute(oid, value) for oid, value in attributes])


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )


def _write_cert(path: Path, certificate: x509.Certificate) -> None:
    path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))


class _Authority:
    """A self-signed CA that signs leaf certificates."""

    def __init__(self, directory: Path, name: str):
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = _name((NameOID.ORGANIZATION_NAME, "Tidewater tests"), (NameOID.COMMON_NAME, name))
        now = datetime.datetime.now(datetime.timezone.utc)
        public_key = self.key.public_key()
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(self.name)
            .issuer_name(self.name)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        self.path = directory / f"{name}.pem"
        _write_cert(self.path, self.certificate)

    def issue(
        self,
        directory: Path,
        file_name: str,
        subject: x509.Name,
        *,
        server: bool,
        not_before: datetime.datetime | None = None,
        not_after: datetime.datetime | None = None,
    ) -> CertificateFiles:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before or now - datetime.timedelta(days=1))
            .not_valid_after(not_after or now + datetime.timedelta(days=VALID_DAYS))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False)
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
                ),
                critical=False,
            )
        certificate = builder.sign(self.key, hashes.SHA256())
        cert_path, key_path = directory / f"{file_name}.pem", directory / f"{file_name}-key.pem"
        _write_cert(cert_path, certificate)
        _write_key(key_path, key)
        return CertificateFiles(cert_path, key_path, subject.rfc4514_string())


def make_pki(directory: Path) -> Pki:
    """Makes the test PKI in `directory` (which must exist)."""
    authority = _Authority(directory, "test-ca")
    foreign_authority = _Authority(directory, "foreign-ca")
    now = datetime.datetime.now(datetime.timezone.utc)
    # RFC 2253 writes the last RDN first: O, OU, CN in the certificate read "CN=..,OU=..,O=..".
    alice = _name(
        (NameOID.ORGANIZATION_NAME, "Acme"), (NameOID.ORGANIZATIONAL_UNIT_NAME, "eng"), (NameOID.COMMON_NAME, "alice")
    )
    pki = Pki(
        ca=authority.path,
        server=authority.issue(directory, "server", _name((NameOID.COMMON_NAME, "localhost")), server=True),
        alice=authority.issue(directory, "alice", alice, server=False),
        bob=authority.issue(directory, "bob", _name((NameOID.COMMON_NAME, "bob")), server=False),
        foreign_ca=foreign_authority.path,
        foreign=foreign_authority.issue(directory, "mallory", _name((NameOID.COMMON_NAME, "mallory")), server=False),
        expired=authority.issue(
            directory,
            "expired",
            _name((NameOID.COMMON_NAME, "carol")),
            server=False,
            not_before=now - datetime.timedelta(days=10),
            not_after=now - datetime.timedelta(days=1),
        ),
    )
    assert pki.alice.subject == "CN=alice,OU=eng,O=Acme", pki.alice.subject
    return pki


def device_authority(directory: Path, name: str) -> _Authority:
    """A CA for device certificates (`tidewater device ca add NAME --cert authority.path`)."""
    return _Authority(directory, name)


def device_certificate(
    authority: _Authority, directory: Path, common_name: str, *, expired: bool = False, not_yet_valid: bool = False
) -> CertificateFiles:
    """A device's client certificate with subject CN = `common_name`, signed by `authority`;
    expired since yesterday, or valid only from tomorrow, if asked."""
    now = datetime.datetime.now(datetime.timezone.utc)
    not_before = not_after = None
    if expired:
        not_before, not_after = now - datetime.timedelta(days=10), now - datetime.timedelta(days=1)
    if not_yet_valid:
        not_before, not_after = now + datetime.timedelta(days=1), now + datetime.timedelta(days=10)
    file_name = f"{common_name}-{len(list(directory.iterdir()))}"
    return authority.issue(
        directory, file_name, _name((NameOID.COMMON_NAME, common_name)), server=False, not_before=not_before, not_after=not_after
    )


def self_signed_device_certificate(directory: Path, common_name: str) -> tuple[CertificateFiles, str]:
    """A self-signed certificate for a device known by its thumbprint, and that thumbprint
    (SHA-256 of the DER, hex), as `tidewater device add --x509-thumbprint` takes it."""
    authority = _Authority(directory, f"{common_name}-self-signed")
    key_path = directory / f"{common_name}-self-signed-key.pem"
    _write_key(key_path, authority.key)
    files = CertificateFiles(authority.path, key_path, authority.name.rfc4514_string())
    return files, authority.certificate.fingerprint(hashes.SHA256()).hex()


# --- Client settings ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Security:
    """How a client connects: Kafka's security protocol, SASL credentials for SASL_*, and for
    TLS the CA to trust and a client certificate (mutual TLS), written out in each client's own
    settings."""

    protocol: str
    mechanism: str | None = None
    username: str | None = None
    password: str | None = None
    ca: Path | None = None
    client: CertificateFiles | None = None

    def librdkafka(self) -> dict[str, str]:
        """confluent-kafka's and kcat's (`-X`) properties."""
        properties = {"security.protocol": self.protocol}
        if self.mechanism is not None:
            properties.update(
                {
                    "sasl.mechanism": self.mechanism,
                    "sasl.username": self.username or "",
                    "sasl.password": self.password or "",
                }
            )
        if self.ca is not None:
            properties["ssl.ca.location"] = str(self.ca)
        if self.client is not None:
            properties.update(
                {"ssl.certificate.location": str(self.client.cert), "ssl.key.location": str(self.client.key)}
            )
        return properties

    def write_properties(self, path: Path, bootstrap: str) -> Path:
        """The same properties, with `bootstrap.servers`, as a Java properties file (what
        `tidewater --client-config`, kcat's -F and the Kafka tools' --command-config read)."""
        lines = [f"bootstrap.servers={bootstrap}", *(f"{name}={value}" for name, value in self.librdkafka().items())]
        path.write_text("\n".join(lines) + "\n")
        return path

    def kcat_args(self) -> list[str]:
        return [argument for name, value in self.librdkafka().items() for argument in ("-X", f"{name}={value}")]

    def kafka_python(self) -> dict:
        """kafka-python's keyword arguments (it checks the host name by default)."""
        settings: dict = {"security_protocol": self.protocol}
        if self.mechanism is not None:
            settings.update(
                sasl_mechanism=self.mechanism, sasl_plain_username=self.username, sasl_plain_password=self.password
            )
        if self.ca is not None:
            settings["ssl_cafile"] = str(self.ca)
        if self.client is not None:
            settings.update(ssl_certfile=str(self.client.cert), ssl_keyfile=str(self.client.key))
        return settings

    def aiokafka(self) -> dict:
        """aiokafka's keyword arguments: TLS goes through an SSLContext."""
        from aiokafka.helpers import create_ssl_context

        settings: dict = {"security_protocol": self.protocol}
        if self.mechanism is not None:
            settings.update(
                sasl_mechanism=self.mechanism, sasl_plain_username=self.username, sasl_plain_password=self.password
            )
        if "SSL" in self.protocol:
            settings["ssl_context"] = create_ssl_context(
                cafile=str(self.ca) if self.ca else None,
                certfile=str(self.client.cert) if self.client else None,
                keyfile=str(self.client.key) if self.client else None,
            )
        return settings

    def kafkajs(self) -> dict:
        """The "security" of a kafkajs script's request (see kafkajs/common.mjs)."""
        security: dict = {}
        if "SSL" in self.protocol:
            security["ssl"] = {
                "ca": str(self.ca) if self.ca else None,
                "cert": str(self.client.cert) if self.client else None,
                "key": str(self.client.key) if self.client else None,
            }
        if self.mechanism is not None:
            security["sasl"] = {"mechanism": self.mechanism, "username": self.username, "password": self.password}
        return security


def client_ssl_context(pki: Pki, client: CertificateFiles | None = None) -> ssl.SSLContext:
    """A client's TLS context that trusts the test CA and checks the host name, with a client
    certificate if given."""
    context = ssl.create_default_context(cafile=str(pki.ca))
    if client is not None:
        context.load_cert_chain(str(client.cert), str(client.key))
    return context


# --- Logging in with confluent-kafka -----------------------------------------------------------

# librdkafka's own log lines go through Python logging (and so into pytest's report), not stderr.
QUIET_LIBRDKAFKA = logging.getLogger("librdkafka")
# How long a client that is meant to fail may keep trying (each retries on its own).
REFUSAL_TIMEOUT_S = 20.0


def confluent_login_error(bootstrap: str, security: Security) -> KafkaError | None:
    """None if confluent-kafka can log in and read metadata, else its authentication error."""
    errors: list[KafkaError] = []
    client = AdminClient(
        {
            "bootstrap.servers": bootstrap,
            "error_cb": errors.append,
            "logger": QUIET_LIBRDKAFKA,
            "reconnect.backoff.ms": 1000,
            "reconnect.backoff.max.ms": 1000,
            **security.librdkafka(),
        }
    )
    deadline = time.monotonic() + REFUSAL_TIMEOUT_S
    while True:
        try:
            client.list_topics(timeout=1.0)
            return None
        except KafkaException:
            pass
        client.poll(0)
        refused = [error for error in errors if error.code() == KafkaError._AUTHENTICATION]
        if refused:
            return refused[0]
        assert time.monotonic() < deadline, (
            f"neither logged in nor refused in {REFUSAL_TIMEOUT_S}s: {[error.str() for error in errors]}"
        )


# --- Raw Kafka frames ---------------------------------------------------------------------------

API_VERSIONS = 18
METADATA = 3
SASL_HANDSHAKE = 17
SASL_AUTHENTICATE = 36

# Kafka's error codes the bad-input cases expect.
UNSUPPORTED_SASL_MECHANISM = 33
ILLEGAL_SASL_STATE = 34
SASL_AUTHENTICATION_FAILED = 58

# How long a raw client waits for the broker to answer or close.
RAW_TIMEOUT_S = 15.0
# The largest response a raw client accepts (the answers here are a few hundred bytes).
RAW_RESPONSE_BYTES_MAX = 1 << 20


def kafka_string(text: str | None) -> bytes:
    if text is None:
        return struct.pack(">h", -1)
    data = text.encode()
    return struct.pack(">h", len(data)) + data


def kafka_bytes(data: bytes) -> bytes:
    return struct.pack(">i", len(data)) + data


def request(api_key: int, api_version: int, correlation_id: int, body: bytes = b"") -> bytes:
    """A request with header v1 (non-flexible), size prefix included."""
    payload = struct.pack(">hhi", api_key, api_version, correlation_id) + kafka_string("interop-raw") + body
    return struct.pack(">i", len(payload)) + payload


def api_versions_request(correlation_id: int) -> bytes:
    return request(API_VERSIONS, 0, correlation_id)


def metadata_request(correlation_id: int) -> bytes:
    # v1 with a null topic list: every topic, none created.
    return request(METADATA, 1, correlation_id, struct.pack(">i", -1))


def sasl_handshake_request(correlation_id: int, mechanism: str, version: int = 1) -> bytes:
    """v1 (the mechanism's messages then travel in SaslAuthenticate requests) or v0 (as bare
    size-prefixed frames, before KIP-152); the request body is the same."""
    return request(SASL_HANDSHAKE, version, correlation_id, kafka_string(mechanism))


def sasl_authenticate_request(correlation_id: int, auth_bytes: bytes) -> bytes:
    return request(SASL_AUTHENTICATE, 1, correlation_id, kafka_bytes(auth_bytes))


@dataclass
class Response:
    correlation_id: int
    body: bytes


class Reader:
    """Reads a response body field by field."""

    def __init__(self, data: bytes):
        self.data = data
        self.position = 0

    def take(self, n_bytes: int) -> bytes:
        assert self.position + n_bytes <= len(self.data), (
            f"response ends at {len(self.data)}, need {self.position + n_bytes}"
        )
        chunk = self.data[self.position : self.position + n_bytes]
        self.position += n_bytes
        return chunk

    def int16(self) -> int:
        return struct.unpack(">h", self.take(2))[0]

    def int32(self) -> int:
        return struct.unpack(">i", self.take(4))[0]

    def int64(self) -> int:
        return struct.unpack(">q", self.take(8))[0]

    def string(self) -> str | None:
        length = self.int16()
        return None if length < 0 else self.take(length).decode()

    def bytes_(self) -> bytes | None:
        length = self.int32()
        return None if length < 0 else self.take(length)

    def at_end(self) -> bool:
        return self.position == len(self.data)


def parse_responses(data: bytes) -> list[Response]:
    """Splits what a broker sent into response frames (header v0: the correlation id)."""
    responses = []
    position = 0
    while position < len(data):
        assert position + 8 <= len(data), f"a truncated frame at byte {position}: {data[position:]!r}"
        (size,) = struct.unpack_from(">i", data, position)
        assert 4 <= size <= RAW_RESPONSE_BYTES_MAX and position + 4 + size <= len(data), (
            f"frame size {size} at byte {position}"
        )
        (correlation_id,) = struct.unpack_from(">i", data, position + 4)
        responses.append(Response(correlation_id, data[position + 8 : position + 4 + size]))
        position += 4 + size
    return responses


def sasl_handshake_response(body: bytes) -> tuple[int, list[str]]:
    """(error code, enabled mechanisms) of a SaslHandshake v1 response."""
    reader = Reader(body)
    error_code = reader.int16()
    mechanisms = [reader.string() for _ in range(reader.int32())]
    assert reader.at_end()
    return error_code, mechanisms


def sasl_authenticate_response(body: bytes) -> tuple[int, str | None, bytes | None, int]:
    """(error code, error message, auth bytes, session lifetime ms) of a SaslAuthenticate v1
    response."""
    reader = Reader(body)
    error_code = reader.int16()
    message = reader.string()
    auth_bytes = reader.bytes_()
    lifetime_ms = reader.int64()
    assert reader.at_end()
    return error_code, message, auth_bytes, lifetime_ms


def connect(port: int, *, tls: ssl.SSLContext | None = None) -> socket.socket:
    """A raw connection to 127.0.0.1:`port`, over TLS with `tls`, with a read deadline."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=RAW_TIMEOUT_S)
    if tls is not None:
        sock = tls.wrap_socket(sock, server_hostname="127.0.0.1")
    sock.settimeout(RAW_TIMEOUT_S)
    return sock


def read_response(sock: socket.socket) -> Response:
    """Reads one response frame; fails if the connection closes first."""
    prefix = read_exactly(sock, 4)
    (size,) = struct.unpack(">i", prefix)
    assert 4 <= size <= RAW_RESPONSE_BYTES_MAX, f"response size {size}"
    payload = read_exactly(sock, size)
    return Response(struct.unpack_from(">i", payload)[0], payload[4:])


def read_exactly(sock: socket.socket, n_bytes: int) -> bytes:
    data = b""
    while len(data) < n_bytes:
        chunk = sock.recv(n_bytes - len(data))
        assert chunk, f"connection closed after {len(data)} of {n_bytes} bytes"
        data += chunk
    return data


def send_all(sock: socket.socket, data: bytes) -> None:
    """Sends `data`; the broker may close before reading it all (a frame over the limit), which
    is not an error here: what it does then is what the caller checks."""
    try:
        sock.sendall(data)
    except (BrokenPipeError, ConnectionResetError, ssl.SSLError, ssl.SSLEOFError):
        pass


def read_until_closed(sock: socket.socket, *, timeout_s: float = RAW_TIMEOUT_S) -> bytes:
    """Everything the broker sends until it closes the connection (end of stream, a reset, or a
    TLS close); fails if it stays open past `timeout_s` or sends too much."""
    deadline = time.monotonic() + timeout_s
    received = b""
    while True:
        left = deadline - time.monotonic()
        assert left > 0, f"the broker kept the connection open for {timeout_s}s (received {len(received)} bytes)"
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError, ssl.SSLEOFError, ssl.SSLZeroReturnError):
            return received
        except socket.timeout:
            raise AssertionError(
                f"the broker kept the connection open for {timeout_s}s (received {len(received)} bytes)"
            ) from None
        if not chunk:
            return received
        received += chunk
        assert len(received) <= RAW_RESPONSE_BYTES_MAX, "the broker sent more than expected"


def tls_client_hello() -> bytes:
    """The first flight of a real TLS client (a ClientHello record), as Python's ssl makes it."""
    context = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = context.wrap_bio(incoming, outgoing, server_hostname="localhost")
    try:
        client.do_handshake()
    except ssl.SSLWantReadError:
        pass
    hello = outgoing.read()
    assert hello[:2] == b"\x16\x03", hello[:16]
    return hello


# How long a consumer gets to show whether it reads or is refused.
CONSUME_TIMEOUT_S = 20.0


def first_record_or_error(config: dict[str, Any], topic: str) -> bytes | KafkaError:
    """The first record of `topic` for a fresh confluent-kafka consumer with `config` (a group
    member: its offset is committed), or the first error the consumer gets, whichever comes
    first: an authorized read, or the refusal with its Kafka error code."""
    consumer = Consumer(config)
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + CONSUME_TIMEOUT_S
        while time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None:
                continue
            if message.error() is not None:
                return message.error()
            consumer.commit(message=message, asynchronous=False)
            return message.value()
        who = config.get("sasl.username", "the consumer")
        raise AssertionError(f"{who} got neither a record nor an error from {topic}")
    finally:
        consumer.close()
