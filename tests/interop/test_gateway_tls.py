"""The device gateway on the open internet: MQTT over TLS (`--mqtt-tls-listen`) and HTTPS
ingestion (`--http-tls-listen`) with the server certificate of a CA made in the test, against
paho-mqtt 3.1.1 and 5, mosquitto_pub/mosquitto_sub and curl, every acknowledged message read
back in order from the telemetry topic with confluent-kafka; what a TLS port does with a client
that does not speak TLS; and X.509 devices, CA-signed (`device ca add`, `device add --x509-ca`)
and known by thumbprint (`device add --x509-thumbprint`), with each refusal's code on the wire
(a hand-made CONNECT over TLS) and its reason in the log; and MQTT over secure WebSockets
(`--mqtt-ws-listen` with `--tls-cert`) with MQTT.js and paho (`transport="websockets"`).
"""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
import subprocess
import threading
import time

import pytest

from gateway_support import (
    MQTT_TIMEOUT_S,
    REGISTRY_TIMEOUT_S,
    VERSIONS,
    Device,
    add_device,
    connack_code_311,
    connack_code_5,
    connect_when_registered,
    events_topic,
    headers_of,
    new_device_id,
    raw_connect,
    produce_command,
    telemetry_of,
)
from metrics_support import scrape
from security_support import (
    Pki,
    client_ssl_context,
    device_authority,
    device_certificate,
    make_pki,
    self_signed_device_certificate,
)
from conftest import tidewater_binary
from test_mosquitto_sub import is_subscribed, messages_of, mosquitto_sub
from test_mqttjs import run_mqttjs
from trigger_support import tidewater

MQTT_TLS_ADDRESS = re.compile(r"tidewater is running.*\bmqtt_tls=127\.0\.0\.1:(\d+)")
HTTP_TLS_ADDRESS = re.compile(r"tidewater is running.*\bhttp_tls=127\.0\.0\.1:(\d+)")
MQTT_WSS_ADDRESS = re.compile(r"tidewater is running.*\bmqtt_ws=wss://127\.0\.0\.1:(\d+)")


class TlsGateway:
    """A `tidewater serve` with plain and TLS gateway listeners, and the PKI it trusts."""

    def __init__(self, process, pki: Pki):
        self.process = process
        self.pki = pki
        line = process.wait_for_log("tidewater is running")
        mqtt_tls, http_tls = MQTT_TLS_ADDRESS.search(line), HTTP_TLS_ADDRESS.search(line)
        mqtt_wss = MQTT_WSS_ADDRESS.search(line)
        assert mqtt_tls and http_tls and mqtt_wss, f"no TLS listeners on the running line: {line}"
        self.mqtt_tls_port = int(mqtt_tls.group(1))
        self.mqtt_wss_port = int(mqtt_wss.group(1))
        self.http_tls_port = int(http_tls.group(1))

    @property
    def bootstrap(self) -> str:
        return self.process.bootstrap


@pytest.fixture(scope="module")
def gateway(module_broker_factory, tmp_path_factory) -> TlsGateway:
    directory = tmp_path_factory.mktemp("gateway-pki")
    pki = make_pki(directory)
    process = module_broker_factory(
        "--mqtt-tls-listen", "127.0.0.1:0",
        "--http-tls-listen", "127.0.0.1:0",
        "--mqtt-ws-listen", "127.0.0.1:0",
        "--tls-cert", str(pki.server.cert),
        "--tls-key", str(pki.server.key),
    )
    return TlsGateway(process, pki)


def publish_and_read_back(gateway: TlsGateway, device: Device, device_id: str, payloads: list[bytes]) -> None:
    """Publishes `payloads` at QoS 1 as the connected `device` (closing it after), and checks
    that they were acknowledged and appended in order, stamped with the device id."""
    try:
        for payload in payloads:
            device.publish(events_topic(device_id), payload, qos=1)
        assert device.wait_acked(len(payloads)) == payloads
    finally:
        device.close()
    records = telemetry_of(gateway.bootstrap, device_id, at_least=len(payloads))
    assert [record.value() for record in records] == payloads
    assert all(headers_of(record)["device-id"] == device_id.encode() for record in records)


@pytest.mark.parametrize("version", VERSIONS.keys())
def test_a_key_device_publishes_over_tls_and_its_messages_are_read_back_in_order(gateway, version):
    device_id = new_device_id("tls")
    key = add_device(gateway.bootstrap, device_id)
    tls = client_ssl_context(gateway.pki)
    device = connect_when_registered(gateway.mqtt_tls_port, device_id, key, VERSIONS[version], tls=tls)
    publish_and_read_back(gateway, device, device_id, [f"over TLS {index}".encode() for index in range(20)])


def test_curl_posts_over_https(gateway):
    device_id = new_device_id("https")
    key = add_device(gateway.bootstrap, device_id)
    url = f"https://127.0.0.1:{gateway.http_tls_port}/devices/{device_id}/messages/events"
    deadline = time.monotonic() + MQTT_TIMEOUT_S
    for index in range(3):
        while True:
            result = subprocess.run(
                [
                    "curl", "--silent", "--show-error", "--max-time", "10",
                    "--cacert", str(gateway.pki.ca),
                    "-H", f"Authorization: Bearer {key}",
                    "-H", "Content-Type: application/json",
                    "--data", json.dumps({"reading": index}),
                    "--write-out", "\n%{http_code}",
                    url,
                ],
                capture_output=True, text=True, timeout=30,
            )
            status = result.stdout.rsplit("\n", 1)[-1]
            # Until the gateway has read the registration, the device is unknown (401).
            if status == "200" or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert status == "200", f"curl: {result.stdout!r} {result.stderr!r}"
    records = telemetry_of(gateway.bootstrap, device_id, at_least=3)
    assert [json.loads(record.value()) for record in records] == [{"reading": index} for index in range(3)]


def test_a_plaintext_client_on_the_tls_port_is_refused_and_the_listener_keeps_serving(gateway):
    device_id = new_device_id("plain")
    key = add_device(gateway.bootstrap, device_id)
    # A plain MQTT CONNECT is no ClientHello: the handshake fails and that connection closes,
    # with no CONNACK.
    mark = gateway.process.log_mark()
    sock, answer = raw_connect(gateway.mqtt_tls_port, device_id, key, level=4)
    sock.close()
    assert not answer.startswith(b"\x20"), f"a CONNACK over plaintext: {answer!r}"
    gateway.process.wait_for_log("MQTT TLS handshake failed", since=mark)
    # A plain HTTP request on the HTTPS port likewise.
    with socket.create_connection(("127.0.0.1", gateway.http_tls_port), timeout=MQTT_TIMEOUT_S) as plain:
        plain.sendall(b"POST /devices/x/messages/events HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        assert not plain.recv(100).startswith(b"HTTP/"), "an HTTP answer over plaintext"
    # The listener still serves TLS clients.
    device = connect_when_registered(gateway.mqtt_tls_port, device_id, key, VERSIONS["5.0"], tls=client_ssl_context(gateway.pki))
    try:
        device.publish(events_topic(device_id), b"after the plaintext client", qos=1)
        assert device.wait_acked(1) == [b"after the plaintext client"]
    finally:
        device.close()


def test_a_client_that_never_finishes_its_handshake_is_closed_and_others_carry_on(gateway):
    """A TCP connection that sends nothing is closed within the handshake timeout (10 s)."""
    mark = gateway.process.log_mark()
    with socket.create_connection(("127.0.0.1", gateway.mqtt_tls_port), timeout=30) as stalled:
        device_id = new_device_id("beside-stalled")
        key = add_device(gateway.bootstrap, device_id)
        device = connect_when_registered(gateway.mqtt_tls_port, device_id, key, VERSIONS["3.1.1"], tls=client_ssl_context(gateway.pki))
        device.close()
        assert stalled.recv(100) == b"", "the stalled connection was not closed"
    gateway.process.wait_for_log("TLS handshake not finished within", since=mark)


# --- X.509 devices ------------------------------------------------------------------------------


class Factory:
    """A device CA registered with `tidewater device ca add`, one that is not, and where their
    certificates go."""

    def __init__(self, directory, registered, foreign):
        self.directory = directory
        self.registered = registered
        self.foreign = foreign


@pytest.fixture(scope="module")
def factory(gateway, tmp_path_factory) -> Factory:
    directory = tmp_path_factory.mktemp("device-certs")
    registered = device_authority(directory, "factory-ca")
    foreign = device_authority(directory, "foreign-device-ca")
    added = tidewater("device", "ca", "add", "factory", "--cert", str(registered.path), bootstrap=gateway.bootstrap)
    assert "added device CA factory" in added.stdout, added.stdout
    listed = tidewater("device", "ca", "list", bootstrap=gateway.bootstrap).stdout
    assert re.search(r"^factory\s+[0-9a-f]{64}\s+CN=factory-ca,O=Tidewater tests$", listed, re.M), listed
    return Factory(directory, registered, foreign)


def add_x509_device(gateway: TlsGateway, device_id: str, *flags: str) -> None:
    added = tidewater("device", "add", device_id, *flags, bootstrap=gateway.bootstrap)
    assert added.stdout.startswith(f"added X.509 device {device_id}"), added.stdout


@pytest.mark.parametrize("version", VERSIONS.keys())
@pytest.mark.parametrize("kind", ["ca-signed", "thumbprint"])
def test_an_x509_device_publishes_with_its_certificate_alone(gateway, factory, kind, version):
    device_id = new_device_id(kind)
    if kind == "ca-signed":
        files = device_certificate(factory.registered, factory.directory, device_id)
        add_x509_device(gateway, device_id, "--x509-ca")
    else:
        files, thumbprint = self_signed_device_certificate(factory.directory, device_id)
        # Typed as openssl prints fingerprints: upper case, colons.
        typed = ":".join(thumbprint[index : index + 2] for index in range(0, 64, 2)).upper()
        add_x509_device(gateway, device_id, "--x509-thumbprint", typed)
    tls = client_ssl_context(gateway.pki, files)
    device = connect_when_registered(gateway.mqtt_tls_port, device_id, None, VERSIONS[version], tls=tls)
    publish_and_read_back(gateway, device, device_id, [f"{kind} {index}".encode() for index in range(10)])


def test_mosquitto_pub_and_sub_with_a_client_certificate(gateway, factory):
    device_id = new_device_id("mosquitto-x509")
    files = device_certificate(factory.registered, factory.directory, device_id)
    add_x509_device(gateway, device_id, "--x509-ca")
    connect_when_registered(
        gateway.mqtt_tls_port, device_id, None, VERSIONS["5.0"], tls=client_ssl_context(gateway.pki, files)
    ).close()
    tls_args = ["--cafile", str(gateway.pki.ca), "--cert", str(files.cert), "--key", str(files.key)]
    payloads = [f"mosquitto_pub {index}" for index in range(3)]
    for payload in payloads:
        subprocess.run(
            [
                "mosquitto_pub", "-h", "127.0.0.1", "-p", str(gateway.mqtt_tls_port), "-V", "mqttv311", *tls_args,
                "-i", device_id, "-q", "1", "-t", events_topic(device_id), "-m", payload,
            ],
            check=True, capture_output=True, timeout=30,
        )  # fmt: skip
    records = telemetry_of(gateway.bootstrap, device_id, at_least=len(payloads))
    assert [record.value().decode() for record in records] == payloads
    devicebound = f"devices/{device_id}/messages/devicebound/"
    with mosquitto_sub(
        gateway.mqtt_tls_port, "mqttv5", *tls_args, "-i", device_id, "-q", "1", "-t", devicebound + "#", "-C", "1"
    ) as subscriber:
        subscriber.wait_for_line(is_subscribed)
        produce_command(gateway.bootstrap, device_id, b'{"action":"calibrate"}')
        [message] = messages_of(subscriber, 1)
        assert (message.topic, message.payload) == (devicebound, '{"action":"calibrate"}')


def post_with_certificate(gateway: TlsGateway, device_id: str, files, body: dict) -> str:
    """POSTs `body` over HTTPS with the client certificate `files` and no Authorization header;
    returns the HTTP status."""
    result = subprocess.run(
        [
            "curl", "--silent", "--show-error", "--max-time", "10", "--cacert", str(gateway.pki.ca),
            "--cert", str(files.cert), "--key", str(files.key),
            "-H", "Content-Type: application/json", "--data", json.dumps(body), "--write-out", "\n%{http_code}",
            f"https://127.0.0.1:{gateway.http_tls_port}/devices/{device_id}/messages/events",
        ],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    return result.stdout.rsplit("\n", 1)[-1]


def test_curl_posts_with_a_client_certificate(gateway, factory):
    device_id = new_device_id("curl-x509")
    files = device_certificate(factory.registered, factory.directory, device_id)
    add_x509_device(gateway, device_id, "--x509-ca")
    deadline = time.monotonic() + REGISTRY_TIMEOUT_S
    while (status := post_with_certificate(gateway, device_id, files, {"reading": 0})) != "200":
        # 401 until the gateway has read the registration.
        assert time.monotonic() < deadline, f"still {status}"
        time.sleep(0.2)
    assert post_with_certificate(gateway, device_id, files, {"reading": 1}) == "200"
    records = telemetry_of(gateway.bootstrap, device_id, at_least=2)
    assert [json.loads(record.value()) for record in records] == [{"reading": 0}, {"reading": 1}]
    # A certificate of a CA that is not registered does not open the device, nor does this
    # device's certificate open another device's path.
    stranger = device_certificate(factory.foreign, factory.directory, device_id)
    assert post_with_certificate(gateway, device_id, stranger, {"reading": 2}) == "401"
    other_id = new_device_id("curl-x509-other")
    add_x509_device(gateway, other_id, "--x509-ca")
    assert post_with_certificate(gateway, other_id, files, {"reading": 3}) == "401"
    # A disabled device is forbidden once the gateway has seen it disabled.
    tidewater("device", "disable", device_id, bootstrap=gateway.bootstrap)
    deadline = time.monotonic() + REGISTRY_TIMEOUT_S
    while (status := post_with_certificate(gateway, device_id, files, {"reading": 4})) != "403":
        assert status == "200" and time.monotonic() < deadline, f"got {status}"
        time.sleep(0.2)
    assert len(telemetry_of(gateway.bootstrap, device_id)) >= 2


def refused(gateway: TlsGateway, device_id: str, tls, level: int, code: int, reason: str) -> None:
    """Connects as `device_id` with a hand-made CONNECT over TLS until the gateway answers `code`
    and logs `reason` for it (the registration takes a moment to reach the gateway; until then
    the device is merely unknown)."""
    probe = connack_code_311 if level == 4 else connack_code_5
    deadline = time.monotonic() + REGISTRY_TIMEOUT_S
    while True:
        mark = gateway.process.log_mark()
        seen = probe(gateway.mqtt_tls_port, device_id, None, tls=tls)
        try:
            gateway.process.wait_for_log("refused a client certificate", device_id, reason, since=mark, timeout_s=1.0)
            logged = True
        except AssertionError:
            logged = False
        if seen == code and logged:
            return
        assert time.monotonic() < deadline, f"{device_id}: code {seen:#x}, reason logged: {logged}"
        time.sleep(0.2)


# The reason label each refusal is counted under in tidewater_device_auth_failures_total.
METRIC_REASONS = {
    "unknown-thumbprint": "certificate_unknown_thumbprint",
    "foreign-ca": "certificate_unknown_ca",
    "cn-mismatch": "certificate_cn_mismatch",
    "expired": "certificate_expired",
    "not-yet-valid": "certificate_not_yet_valid",
    "disabled": "not_authorized",
}


@pytest.mark.parametrize(
    "case, codes, reason",
    [
        ("unknown-thumbprint", (4, 0x86), "unknown thumbprint"),
        ("foreign-ca", (4, 0x86), "does not chain to a registered CA"),
        ("cn-mismatch", (4, 0x86), "is not the client id"),
        ("expired", (4, 0x86), "the certificate expired"),
        ("not-yet-valid", (4, 0x86), "the certificate is not valid yet"),
        ("disabled", (5, 0x87), "is disabled"),
    ],
)
def test_each_certificate_refusal_has_its_code_and_its_reason_in_the_log(gateway, factory, case, codes, reason):
    device_id = new_device_id(case)
    certificates = {
        "foreign-ca": lambda: device_certificate(factory.foreign, factory.directory, device_id),
        "cn-mismatch": lambda: device_certificate(factory.registered, factory.directory, "someone-else"),
        "expired": lambda: device_certificate(factory.registered, factory.directory, device_id, expired=True),
        "not-yet-valid": lambda: device_certificate(factory.registered, factory.directory, device_id, not_yet_valid=True),
        "disabled": lambda: device_certificate(factory.registered, factory.directory, device_id),
    }
    if case == "unknown-thumbprint":
        _, registered_thumbprint = self_signed_device_certificate(factory.directory, device_id)
        files, _ = self_signed_device_certificate(factory.directory, f"{device_id}-other")
        add_x509_device(gateway, device_id, "--x509-thumbprint", registered_thumbprint)
    else:
        files = certificates[case]()
        add_x509_device(gateway, device_id, "--x509-ca")
    if case == "disabled":
        tidewater("device", "disable", device_id, bootstrap=gateway.bootstrap)
    tls = client_ssl_context(gateway.pki, files)
    failures_before = scrape(gateway.process.admin_port).get("tidewater_device_auth_failures_total",
                                                            reason=METRIC_REASONS[case])
    refused(gateway, device_id, tls, 4, codes[0], reason)
    refused(gateway, device_id, tls, 5, codes[1], reason)
    # Counted under its reason on /metrics (at least once per refused CONNECT; the registry may
    # have taken a moment, so there may be more).
    failures_after = scrape(gateway.process.admin_port).get("tidewater_device_auth_failures_total",
                                                           reason=METRIC_REASONS[case])
    assert failures_after >= failures_before + 2, (case, failures_before, failures_after)


def test_removing_a_ca_refuses_the_certificates_it_signed(gateway, factory):
    authority = device_authority(factory.directory, "short-lived-ca")
    tidewater("device", "ca", "add", "short-lived", "--cert", str(authority.path), bootstrap=gateway.bootstrap)
    device_id = new_device_id("ca-removed")
    files = device_certificate(authority, factory.directory, device_id)
    add_x509_device(gateway, device_id, "--x509-ca")
    tls = client_ssl_context(gateway.pki, files)
    connect_when_registered(gateway.mqtt_tls_port, device_id, None, VERSIONS["5.0"], tls=tls).close()
    removed = tidewater("device", "ca", "remove", "short-lived", bootstrap=gateway.bootstrap)
    assert removed.stdout.strip() == "removed device CA short-lived"
    assert "short-lived" not in tidewater("device", "ca", "list", bootstrap=gateway.bootstrap).stdout
    refused(gateway, device_id, tls, 5, 0x86, "does not chain to a registered CA")


def test_an_x509_device_cannot_be_opened_without_its_certificate(gateway, factory):
    """It has no key, so no password opens it, and without a certificate or a password it is
    Not authorized, whether or not the gateway has seen the registration yet."""
    device_id = new_device_id("x509-nokey")
    add_x509_device(gateway, device_id, "--x509-ca")
    no_certificate = client_ssl_context(gateway.pki)
    assert connack_code_311(gateway.mqtt_tls_port, device_id, "a-guessed-key", tls=no_certificate) == 4
    assert connack_code_5(gateway.mqtt_tls_port, device_id, None, tls=no_certificate) == 0x87


# --- MQTT over secure WebSockets ----------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS.keys())
def test_mqttjs_publishes_over_wss_and_its_messages_are_read_back_in_order(gateway, version):
    device_id = new_device_id("wss-mqttjs")
    key = add_device(gateway.bootstrap, device_id)
    connect_when_registered(gateway.mqtt_tls_port, device_id, key, VERSIONS["5.0"], tls=client_ssl_context(gateway.pki)).close()
    level = 4 if version == "3.1.1" else 5
    messages = [{"payload": f"MQTT.js over wss {index}", "qos": 1} for index in range(10)]
    result = run_mqttjs(
        {
            "port": gateway.mqtt_wss_port, "protocol": "wss", "path": "/mqtt", "ca": str(gateway.pki.ca),
            "clientId": device_id, "password": key, "protocolVersion": level,
            "topic": events_topic(device_id), "messages": messages,
        }
    )  # fmt: skip
    assert "refused" not in result, result
    assert all(outcome["ok"] for outcome in result["outcomes"]), result["outcomes"]
    records = telemetry_of(gateway.bootstrap, device_id, at_least=len(messages))
    assert [record.value().decode() for record in records] == [message["payload"] for message in messages]


def test_an_x509_device_over_wss_on_iot_hubs_path(gateway, factory):
    device_id = new_device_id("wss-x509")
    files = device_certificate(factory.registered, factory.directory, device_id)
    add_x509_device(gateway, device_id, "--x509-ca")
    connect_when_registered(
        gateway.mqtt_tls_port, device_id, None, VERSIONS["5.0"], tls=client_ssl_context(gateway.pki, files)
    ).close()
    messages = [{"payload": f"certificate over wss {index}", "qos": 1} for index in range(3)]
    result = run_mqttjs(
        {
            "port": gateway.mqtt_wss_port, "protocol": "wss", "path": "/$iothub/websocket",
            "ca": str(gateway.pki.ca), "cert": str(files.cert), "key": str(files.key),
            "clientId": device_id, "protocolVersion": 4, "topic": events_topic(device_id), "messages": messages,
        }
    )  # fmt: skip
    assert "refused" not in result, result
    records = telemetry_of(gateway.bootstrap, device_id, at_least=len(messages))
    assert [record.value().decode() for record in records] == [message["payload"] for message in messages]


@pytest.mark.parametrize("version", VERSIONS.keys())
def test_paho_over_websockets(gateway, version):
    device_id = new_device_id("wss-paho")
    key = add_device(gateway.bootstrap, device_id)
    tls = client_ssl_context(gateway.pki)
    connect_when_registered(gateway.mqtt_tls_port, device_id, key, VERSIONS[version], tls=tls).close()
    device = Device(gateway.mqtt_wss_port, device_id, key, VERSIONS[version], tls=tls, transport="websockets")
    assert device.accepted, device.connack
    publish_and_read_back(gateway, device, device_id, [f"paho over wss {index}".encode() for index in range(10)])


def test_a_websocket_request_elsewhere_or_without_the_upgrade_is_refused(gateway):
    context = client_ssl_context(gateway.pki)
    upgrade = {
        "Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Protocol": "mqtt",
    }  # fmt: skip
    for path, headers, status in [
        ("/elsewhere", upgrade, 404),
        ("/mqtt", {}, 400),
        ("/mqtt", {**upgrade, "Sec-WebSocket-Protocol": "chat"}, 400),
        ("/mqtt", upgrade, 101),
    ]:
        connection = http.client.HTTPSConnection("127.0.0.1", gateway.mqtt_wss_port, timeout=MQTT_TIMEOUT_S, context=context)
        try:
            connection.request("GET", path, headers=headers)
            response = connection.getresponse()
            assert response.status == status, (path, headers, response.status)
            if status == 101:
                assert response.getheader("Sec-WebSocket-Accept") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
                assert response.getheader("Sec-WebSocket-Protocol") == "mqtt"
        finally:
            connection.close()


@pytest.mark.parametrize("transport", ["ws", "tls"])
def test_a_standalone_gateway_serves_plain_websockets_or_tls(gateway, transport):
    """`tidewater gateway` takes the same flags: without --tls-cert its WebSocket listener is
    plain ws://; with --tls-cert and --tls-key it serves MQTT over TLS."""
    listen = ["--mqtt-ws-listen", "127.0.0.1:0"] if transport == "ws" else [
        "--mqtt-tls-listen", "127.0.0.1:0", "--tls-cert", str(gateway.pki.server.cert), "--tls-key", str(gateway.pki.server.key),
    ]  # fmt: skip
    standalone = subprocess.Popen(
        [str(tidewater_binary()), "gateway", "--brokers", gateway.bootstrap, "--mqtt-listen", "none", "--http-listen", "none", *listen],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        env={key: value for key, value in os.environ.items() if not key.startswith("TIDEWATER_")},
    )  # fmt: skip
    try:
        assert standalone.stderr is not None
        address = re.compile(r"tidewater gateway is running.*\bmqtt_ws=ws://127\.0\.0\.1:(\d+)" if transport == "ws" else r"tidewater gateway is running.*\bmqtt_tls=127\.0\.0\.1:(\d+)")
        port = None
        deadline = time.monotonic() + MQTT_TIMEOUT_S
        while port is None and time.monotonic() < deadline:
            line = standalone.stderr.readline()
            assert line, f"the gateway exited with {standalone.poll()}"
            match = address.search(line)
            port = int(match.group(1)) if match else None
        assert port is not None, "the gateway logged no running line"
        threading.Thread(target=standalone.stderr.read, daemon=True).start()

        device_id = new_device_id(f"standalone-{transport}")
        key = add_device(gateway.bootstrap, device_id)
        if transport == "ws":
            deadline = time.monotonic() + REGISTRY_TIMEOUT_S
            while not (device := Device(port, device_id, key, VERSIONS["5.0"], transport="websockets")).accepted:
                device.close()
                assert time.monotonic() < deadline, f"still refused: {device.connack}"
                time.sleep(0.2)
        else:
            device = connect_when_registered(port, device_id, key, VERSIONS["5.0"], tls=client_ssl_context(gateway.pki))
        publish_and_read_back(gateway, device, device_id, [f"standalone {transport} {index}".encode() for index in range(5)])
    finally:
        standalone.send_signal(15)
        assert standalone.wait(30) == 0


def test_a_tls_listener_without_a_certificate_stops_the_start():
    result = subprocess.run(
        [str(tidewater_binary()), "gateway", "--brokers", "127.0.0.1:9", "--mqtt-tls-listen", "127.0.0.1:0"],
        capture_output=True, text=True, timeout=30,
        env={key: value for key, value in os.environ.items() if not key.startswith("TIDEWATER_")},
    )  # fmt: skip
    assert result.returncode != 0
    assert "--mqtt-tls-listen and --http-tls-listen need --tls-cert and --tls-key" in result.stderr, result.stderr
