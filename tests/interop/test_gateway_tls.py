"""The device gateway on the open internet: MQTT over TLS (`--mqtt-tls-listen`) and HTTPS
ingestion (`--http-tls-listen`) with the server certificate of a CA made in the test, against
paho-mqtt 3.1.1 and 5 and curl, every acknowledged message read back in order from the telemetry
topic with confluent-kafka; and what a TLS port does with a client that does not speak TLS.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import time

import pytest

from gateway_support import (
    MQTT_TIMEOUT_S,
    VERSIONS,
    add_device,
    connect_when_registered,
    events_topic,
    headers_of,
    new_device_id,
    raw_connect,
    telemetry_of,
)
from security_support import Pki, client_ssl_context, make_pki

MQTT_TLS_ADDRESS = re.compile(r"tidewater is running.*\bmqtt_tls=127\.0\.0\.1:(\d+)")
HTTP_TLS_ADDRESS = re.compile(r"tidewater is running.*\bhttp_tls=127\.0\.0\.1:(\d+)")


class TlsGateway:
    """A `tidewater serve` with plain and TLS gateway listeners, and the PKI it trusts."""

    def __init__(self, process, pki: Pki):
        self.process = process
        self.pki = pki
        line = process.wait_for_log("tidewater is running")
        mqtt_tls, http_tls = MQTT_TLS_ADDRESS.search(line), HTTP_TLS_ADDRESS.search(line)
        assert mqtt_tls and http_tls, f"no TLS listeners on the running line: {line}"
        self.mqtt_tls_port = int(mqtt_tls.group(1))
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
        "--tls-cert", str(pki.server.cert),
        "--tls-key", str(pki.server.key),
    )
    return TlsGateway(process, pki)


@pytest.mark.parametrize("version", VERSIONS.keys())
def test_a_key_device_publishes_over_tls_and_its_messages_are_read_back_in_order(gateway, version):
    device_id = new_device_id("tls")
    key = add_device(gateway.bootstrap, device_id)
    tls = client_ssl_context(gateway.pki)
    device = connect_when_registered(gateway.mqtt_tls_port, device_id, key, VERSIONS[version], tls=tls)
    payloads = [f"over TLS {index}".encode() for index in range(20)]
    try:
        for payload in payloads:
            device.publish(events_topic(device_id), payload, qos=1)
        assert device.wait_acked(len(payloads)) == payloads
    finally:
        device.close()
    records = telemetry_of(gateway.bootstrap, device_id, at_least=len(payloads))
    assert [record.value() for record in records] == payloads
    assert all(headers_of(record)["device-id"] == device_id.encode() for record in records)


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
