"""The admin listener's /metrics and /health endpoints, read with Prometheus' own parser
(`prometheus_client`) while real clients work: confluent-kafka producing and consuming, paho-mqtt
devices publishing, a query job and a trigger delivering to a webhook. Each counter is checked
against what the clients did, and group lag against `tidewater group describe`."""

from __future__ import annotations

import base64
import http.client
import re
import socket
import ssl
import subprocess
import time
import uuid
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition

from capture_support import CaptureProcess, create_topic, parquet_files, wait_for_rows as wait_for_captured_rows
from capture_support import produce as produce_for_capture
from conftest import tidewater_binary
from gateway_support import Device, add_device, connect_when_registered, events_topic, new_device_id
from metrics_support import Scrape, http_get, scrape, wait_for_scrape
from query_support import wait_for_rows
from security_support import make_pki
from support import cli_describe
from trigger_support import Receiver, tidewater

NO_GATEWAY = ("--mqtt-listen", "none", "--http-listen", "none")


def produce(bootstrap: str, topic: str, values: list[bytes], partition: int | None = None) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    failures: list = []
    for value in values:
        kwargs = {} if partition is None else {"partition": partition}
        producer.produce(topic, value, on_delivery=lambda error, _: error and failures.append(error), **kwargs)
    assert producer.flush(30) == 0 and not failures, failures


def test_the_produced_counters_rise_by_what_was_produced(broker, topic_name):
    tidewater("topic", "create", topic_name, "--partitions", "2", bootstrap=broker.bootstrap)
    before = scrape(broker.admin_port)
    assert before.get("tidewater_topic_records_produced_total", topic=topic_name) == 0
    values = [f"record-{index}".encode() for index in range(250)]
    produce(broker.bootstrap, topic_name, values[:100], partition=0)
    produce(broker.bootstrap, topic_name, values[100:], partition=1)
    after = scrape(broker.admin_port)
    assert after.types["tidewater_topic_records_produced"] == "counter"
    assert after.get("tidewater_topic_records_produced_total", topic=topic_name) == 250
    # Batches carry headers and per-record overhead: more bytes than the values alone.
    assert after.get("tidewater_topic_bytes_produced_total", topic=topic_name) > sum(map(len, values))
    watermarks = {partition: after.value("tidewater_partition_high_watermark", topic=topic_name, partition=str(partition))
                  for partition in (0, 1)}
    assert watermarks == {0: 100, 1: 150}, watermarks
    for partition in (0, 1):
        assert after.get("tidewater_partition_log_size_bytes", topic=topic_name, partition=str(partition)) > 0
    # Reading everything back counts every byte that was appended, once.
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": f"{topic_name}-reader",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic_name, 0, 0), TopicPartition(topic_name, 1, 0)])
    read, deadline = 0, time.monotonic() + 30
    while read < 250 and time.monotonic() < deadline:
        message = consumer.poll(1)
        if message is not None and message.error() is None:
            read += 1
    consumer.close()
    assert read == 250
    fetched = scrape(broker.admin_port)
    assert fetched.get("tidewater_topic_bytes_fetched_total", topic=topic_name) == \
        fetched.get("tidewater_topic_bytes_produced_total", topic=topic_name)
    # Every request the clients made is in the latency histogram of its API.
    assert fetched.types["tidewater_kafka_request_latency_seconds"] == "histogram"
    assert fetched.get("tidewater_kafka_request_latency_seconds_count", api="Produce") >= 2
    assert fetched.get("tidewater_kafka_request_latency_seconds_count", api="Fetch") >= 1
    assert fetched.get("tidewater_log_fsync_latency_seconds_count") >= 2
    assert fetched.get("process_resident_memory_bytes") > 1_000_000
    assert fetched.get("process_open_fds") > 0


def test_group_lag_is_the_high_watermark_minus_the_committed_offset(broker, topic_name):
    """Partition by partition, as `tidewater group describe` shows it: a partition with nothing
    committed has no lag series."""
    bootstrap = broker.bootstrap
    tidewater("topic", "create", topic_name, "--partitions", "3", bootstrap=bootstrap)
    for partition, count in ((0, 30), (1, 20), (2, 10)):
        produce(bootstrap, topic_name, [b"x"] * count, partition=partition)
    group = f"{topic_name}-group"
    committer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    committer.commit(offsets=[TopicPartition(topic_name, 0, 12), TopicPartition(topic_name, 1, 20)], asynchronous=False)
    committer.close()
    page = wait_for_scrape(
        broker.admin_port,
        lambda page: page.value("tidewater_consumer_group_lag", group=group, topic=topic_name, partition="1") is not None,
        "the group's lag",
    )
    _, rows = cli_describe(bootstrap, group, topic_name)
    assert set(rows) == {0, 1}, rows
    for partition, row in rows.items():
        lag = page.value("tidewater_consumer_group_lag", group=group, topic=topic_name, partition=str(partition))
        high_watermark = page.value("tidewater_partition_high_watermark", topic=topic_name, partition=str(partition))
        assert lag == int(row["LAG"]) == high_watermark - int(row["COMMITTED"]), (partition, lag, row)
    assert page.value("tidewater_consumer_group_lag", group=group, topic=topic_name, partition="2") is None
    assert (rows[0]["LAG"], rows[1]["LAG"]) == ("18", "0")

    # A member in the group shows in the members gauge while it is there.
    member = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest"})
    member.subscribe([topic_name])
    try:
        deadline = time.monotonic() + 30
        while not member.assignment() and time.monotonic() < deadline:
            member.poll(0.5)
        wait_for_scrape(broker.admin_port, lambda page: page.get("tidewater_consumer_group_members", group=group) == 1,
                        "one member in the group")
    finally:
        member.close()


def test_a_query_jobs_counters_match_its_input_and_output(broker, topic_name, tmp_path):
    bootstrap = broker.bootstrap
    source, sink = f"{topic_name}-in", f"{topic_name}-out"
    tidewater("topic", "create", source, "--partitions", "1", bootstrap=bootstrap)
    query = tmp_path / "pass.sql"
    query.write_text(f"SELECT deviceId, temperature INTO [{sink}] FROM [{source}]\n")
    name = f"m-{uuid.uuid4().hex[:8]}"
    tidewater("query", "create", name, "--file", str(query), "--checkpoint-interval-ms", "200", bootstrap=bootstrap)
    try:
        events = [f'{{"deviceId": "d{index % 3}", "temperature": {index}}}'.encode() for index in range(40)]
        produce(bootstrap, source, events)
        assert len(wait_for_rows(bootstrap, sink, 40)) == 40
        page = wait_for_scrape(
            broker.admin_port,
            lambda page: page.get("tidewater_query_rows_total", job=name, output=sink) == 40,
            f"40 rows of job {name}",
        )
        assert page.get("tidewater_query_events_total", job=name) == 40
        assert page.get("tidewater_query_late_events_total", job=name) == 0
        assert page.get("tidewater_query_checkpoint_duration_seconds_count", job=name) >= 1
    finally:
        tidewater("query", "delete", name, bootstrap=bootstrap, check=False)


def test_a_triggers_delivered_counter_matches_its_receiver(broker, topic_name):
    bootstrap = broker.bootstrap
    tidewater("topic", "create", topic_name, "--partitions", "2", bootstrap=bootstrap)
    receiver = Receiver()
    name = f"t-{uuid.uuid4().hex[:10]}"
    tidewater("trigger", "create", name, "--topic", topic_name, "--webhook", receiver.url, "--from", "earliest",
              bootstrap=bootstrap)
    try:
        produce(bootstrap, topic_name, [f'{{"n": {index}}}'.encode() for index in range(25)])
        received = receiver.wait_for(lambda requests: len(requests) >= 25, "25 deliveries")
        page = wait_for_scrape(broker.admin_port,
                               lambda page: page.get("tidewater_trigger_delivered_total", trigger=name) >= len(received),
                               f"trigger {name}'s deliveries")
        assert page.get("tidewater_trigger_delivered_total", trigger=name) == len(receiver.snapshot()) == 25
        assert page.get("tidewater_trigger_latency_seconds_count", trigger=name) == 25
        assert page.get("tidewater_trigger_dead_lettered_total", trigger=name) == 0
    finally:
        tidewater("trigger", "delete", name, bootstrap=bootstrap, check=False)
        receiver.close()


def test_the_puback_latency_histogram_counts_every_qos1_message(broker):
    bootstrap, port = broker.bootstrap, broker.mqtt_port
    device_id = new_device_id("metrics")
    key = add_device(bootstrap, device_id)
    before = scrape(broker.admin_port)
    device = connect_when_registered(port, device_id, key, protocol=5)
    try:
        page = scrape(broker.admin_port)
        assert page.get("tidewater_devices_connected") >= 1
        assert page.get("tidewater_mqtt_connections") >= 1
        for index in range(30):
            device.publish(events_topic(device_id), f'{{"n": {index}}}'.encode(), qos=1)
        assert len(device.wait_acked(30)) == 30
        # paho counts a QoS 0 message as "acknowledged" once it is sent.
        device.publish(events_topic(device_id), b'{"qos": 0}', qos=0)
        device.wait_acked(31)
        after = wait_for_scrape(
            broker.admin_port,
            lambda page: page.get("tidewater_mqtt_messages_received_total", qos="0")
            > before.get("tidewater_mqtt_messages_received_total", qos="0"),
            "the QoS 0 message",
        )
    finally:
        device.close()
    assert after.get("tidewater_mqtt_ack_latency_seconds_count", qos="1") - \
        before.get("tidewater_mqtt_ack_latency_seconds_count", qos="1") == 30
    assert after.get("tidewater_mqtt_messages_received_total", qos="1") - \
        before.get("tidewater_mqtt_messages_received_total", qos="1") == 30
    assert after.get("tidewater_mqtt_messages_received_total", qos="0") - \
        before.get("tidewater_mqtt_messages_received_total", qos="0") >= 1
    # A wrong key is counted as a failure with its reason, never with the device's name.
    refused = Device(port, device_id, "wrong-key", protocol=5)
    refused.close()
    failures = wait_for_scrape(
        broker.admin_port,
        lambda page: page.get("tidewater_device_auth_failures_total", reason="bad_credentials")
        > before.get("tidewater_device_auth_failures_total", reason="bad_credentials"),
        "a bad_credentials failure",
    )
    assert device_id not in failures.text


def test_ready_is_503_while_the_logs_recover_then_200(broker_factory, topic_name, tmp_path):
    """A data directory with a thousand partitions takes a moment to recover: meanwhile
    /health/ready says why it is not ready and /health/live is up."""
    first = broker_factory(*NO_GATEWAY)
    tidewater("topic", "create", topic_name, "--partitions", "1000", bootstrap=first.bootstrap, timeout_s=120,
              timeout_ms=120_000)
    produce(first.bootstrap, topic_name, [b"v"] * 50)
    assert first.stop() == 0
    process = subprocess.Popen(
        [str(tidewater_binary()), "serve", "--data-dir", str(first.data_dir), "--kafka-listen", "127.0.0.1:0",
         "--admin-listen", "127.0.0.1:0", *NO_GATEWAY],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    statuses: list[tuple[int, str]] = []
    try:
        assert process.stderr is not None
        admin_port = None
        for line in process.stderr:
            match = re.search(r"admin=127\.0\.0\.1:(\d+)", line)
            if match:
                admin_port = int(match.group(1))
                break
        assert admin_port is not None, "no admin listener line"
        live = http_get(admin_port, "/health/live")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            status, body, _ = http_get(admin_port, "/health/ready")
            if not statuses or statuses[-1] != (status, body.strip()):
                statuses.append((status, body.strip()))
            if status == 200:
                break
            time.sleep(0.02)
    finally:
        process.terminate()
        process.wait(timeout=60)
    assert live[0] == 200
    assert statuses[0] == (503, "not ready: recovering the logs"), statuses
    assert statuses[-1] == (200, "ready"), statuses


def test_bad_requests_get_a_4xx_with_a_reason(broker):
    port = broker.admin_port
    # Paths other than the admin listener's own belong to the console (tests/interop/test_console.py
    # covers its API): a path that is none of its pages or assets is a 404 with the reason.
    for path in ("/nope", "/../../etc/passwd", "/metrics/../../x", "/%00"):
        status, body, _ = http_get(port, path)
        assert status == 404 and "no such page or asset" in body, (path, status, body)
    status, body, headers = http_get(port, "/metrics", method="POST")
    assert status == 405 and headers.get("allow") == "GET, HEAD", (status, body, headers)
    status, body, _ = http_get(port, "/metrics", method="HEAD")
    assert (status, body) == (200, "")
    # The listener is still serving after all of that.
    assert scrape(port).get("tidewater_uptime_seconds") > 0


def test_with_authenticating_listeners_metrics_take_a_token_or_a_scram_user(broker_factory):
    broker = broker_factory(
        *NO_GATEWAY,
        env={"TIDEWATER_BOOTSTRAP_USER": "admin:admin-secret", "TIDEWATER_SUPERUSERS": "User:admin",
             "TIDEWATER_METRICS_TOKEN": "scrape-token"},
        listeners=("SASL_PLAINTEXT",),
        plaintext=False,
    )
    port = broker.admin_port

    def basic(user: str, password: str) -> dict[str, str]:
        return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}

    for headers, reason in (
        ({}, "authentication required"),
        ({"Authorization": "Bearer wrong-token"}, "wrong token, user or password"),
        (basic("admin", "wrong"), "wrong token, user or password"),
        (basic("nobody", "admin-secret"), "wrong token, user or password"),
        ({"Authorization": "Digest abc"}, "malformed Authorization header"),
        ({"Authorization": "Basic !!!"}, "malformed Authorization header"),
    ):
        status, body, response_headers = http_get(port, "/metrics", headers)
        assert status == 401 and reason in body, (headers, status, body)
        assert response_headers.get("www-authenticate", "").startswith("Basic"), response_headers
    for headers in ({"Authorization": "Bearer scrape-token"}, basic("admin", "admin-secret")):
        page = scrape(port, headers)
        assert isinstance(page, Scrape) and page.get("tidewater_uptime_seconds") > 0
    # Health stays open: a load balancer has no credentials.
    assert http_get(port, "/health/ready")[0] == 200
    log = "\n".join(broker.lines)
    assert "scrape-token" not in log and "admin-secret" not in log


def test_the_default_admin_port_being_taken_is_a_warning_not_a_failure(tmp_path: Path):
    """Two roles on one machine both default to 9644: the second runs without /metrics and says
    so, rather than refusing to start. An address given on the command line must bind."""
    holder = socket.socket()
    try:
        holder.bind(("127.0.0.1", 9644))
        holder.listen()
    except OSError:
        pass  # another process holds it already: the same situation
    serve = [str(tidewater_binary()), "serve", "--kafka-listen", "127.0.0.1:0", *NO_GATEWAY]
    env = {"PATH": "/usr/bin:/bin", "TIDEWATER_LOG": "info"}
    try:
        explicit = subprocess.run([*serve, "--data-dir", str(tmp_path / "explicit"), "--admin-listen", "127.0.0.1:9644"],
                                  stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60, env=env)
        assert explicit.returncode != 0, explicit.stderr
        assert "binding the admin listener to 127.0.0.1:9644" in explicit.stderr, explicit.stderr
        process = subprocess.Popen([*serve, "--data-dir", str(tmp_path / "default")], stdin=subprocess.DEVNULL,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
        try:
            assert process.stderr is not None
            seen = []
            for line in process.stderr:
                seen.append(line)
                if "tidewater is running" in line:
                    break
            assert any("default address is taken" in line for line in seen), "".join(seen)
        finally:
            process.terminate()
            assert process.wait(timeout=60) == 0
    finally:
        holder.close()


def raw_get(port: int, path: str, host: str) -> tuple[int, str]:
    """A GET with the `Host` header given, as a page whose DNS name was rebound to 127.0.0.1
    sends it."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.putrequest("GET", path, skip_host=True)
        connection.putheader("Host", host)
        connection.endheaders()
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


def test_a_loopback_listener_refuses_requests_for_another_host_name(broker):
    """DNS rebinding: a page on evil.example whose name now resolves to 127.0.0.1 reaches the
    port, but its requests name evil.example, and are refused before any credential or page."""
    port = broker.admin_port
    for path in ("/metrics", "/api/overview", "/", "/health/ready"):
        status, body = raw_get(port, path, f"evil.example:{port}")
        assert status == 421 and "not a loopback name" in body, (path, status, body)
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", "localhost"):
        status, body = raw_get(port, "/health/ready", host)
        assert (status, body.strip()) == (200, "ready"), (host, status, body)
    status, body = raw_get(port, "/metrics", f"localhost:{port}")
    assert status == 200 and "tidewater_uptime_seconds" in body


def test_the_admin_listener_serves_https_with_its_certificate(broker_factory, tmp_path):
    """With --admin-tls-cert/--admin-tls-key the console, /metrics and health are HTTPS only: a
    client that trusts the CA reads them, a plain HTTP request gets no page."""
    pki = make_pki(tmp_path)
    broker = broker_factory(*NO_GATEWAY, "--admin-tls-cert", str(pki.server.cert), "--admin-tls-key", str(pki.server.key))
    port = broker.admin_port
    assert any(f"https://127.0.0.1:{port}/" in line for line in broker.lines), broker.lines[-5:]
    context = ssl.create_default_context(cafile=str(pki.ca))
    for path, expected in (("/health/ready", "ready"), ("/metrics", "tidewater_uptime_seconds"), ("/", "<html")):
        connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            body = response.read().decode()
        finally:
            connection.close()
        assert response.status == 200 and expected in body, (path, response.status, body[:200])
    # Plain HTTP to the TLS port: the handshake fails, no page is served, and the listener carries on.
    try:
        status, body, _ = http_get(port, "/metrics")
    except (OSError, http.client.HTTPException) as error:
        status, body = None, repr(error)
    assert status is None or status >= 400, (status, body[:200])
    assert "tidewater_uptime_seconds" not in body
    connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
    connection.request("GET", "/health/live")
    assert connection.getresponse().status == 200
    connection.close()


def test_an_admin_listener_beyond_loopback_needs_tls_or_an_explicit_opt_out(tmp_path: Path):
    """A token or a password sent over plain HTTP across the network could be read on the way:
    the start is refused before anything binds (so the test binds nothing beyond loopback)."""
    pki = make_pki(tmp_path)
    result = subprocess.run(
        [str(tidewater_binary()), "serve", "--data-dir", str(tmp_path / "data"), "--kafka-listen", "127.0.0.1:0",
         *NO_GATEWAY, "--admin-listen", "0.0.0.0:0"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin", "TIDEWATER_METRICS_TOKEN": "scrape-token"},
    )
    assert result.returncode != 0
    assert "in clear over the network" in result.stderr and "--admin-tls-cert" in result.stderr, result.stderr
    assert "scrape-token" not in result.stderr
    # A key without its certificate is a usage error, named by clap.
    result = subprocess.run(
        [str(tidewater_binary()), "serve", "--data-dir", str(tmp_path / "data"), "--admin-tls-key", str(pki.server.key)],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2 and "--admin-tls-cert" in result.stderr, result.stderr
    # A certificate that is not one is named with its path.
    result = subprocess.run(
        [str(tidewater_binary()), "serve", "--data-dir", str(tmp_path / "data"), "--kafka-listen", "127.0.0.1:0",
         *NO_GATEWAY, "--admin-listen", "127.0.0.1:0", "--admin-tls-cert", str(pki.server.key),
         "--admin-tls-key", str(pki.server.key)],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode != 0 and "admin listener's certificate" in result.stderr, result.stderr


def test_capture_run_serves_its_counters_on_metrics(bootstrap, topic_name, tmp_path):
    """`capture run --admin-listen` shows how many records and files it made visible, equal to
    what DuckDB's and pyarrow's reader find, and that it is not failing."""
    create_topic(bootstrap, topic_name, 3)
    produced = produce_for_capture(bootstrap, topic_name, [(None, b'{"n": %d}' % n) for n in range(300)])
    out = tmp_path / "out"
    capture = CaptureProcess(f"metrics-{topic_name}", topic_name, f"file://{out}", bootstrap, tmp_path / "capture.log",
                             "--window-secs", "1", "--admin-listen", "127.0.0.1:0")
    capture.start()
    try:
        wait_for_captured_rows(out / topic_name, len(produced), capture)
        port = None
        deadline = time.monotonic() + 30
        while port is None and time.monotonic() < deadline:
            match = re.search(r"admin=127\.0\.0\.1:(\d+)", capture.log_text())
            port = int(match.group(1)) if match else None
            time.sleep(0.1)
        assert port is not None, capture.log_text()[-2000:]
        name = f"metrics-{topic_name}"
        page = wait_for_scrape(port, lambda page: page.get("tidewater_capture_records_written_total", capture=name) == 300,
                               "all 300 records counted")
        assert page.get("tidewater_capture_files_written_total", capture=name) == len(parquet_files(out / topic_name))
        assert page.get("tidewater_capture_bytes_written_total", capture=name) == sum(
            path.stat().st_size for path in parquet_files(out / topic_name))
        assert page.value("tidewater_capture_failing", capture=name) == 0
        assert http_get(port, "/health/ready")[0] == 200
    finally:
        assert capture.stop() == 0, capture.log_text()[-2000:]


def test_with_only_a_token_the_console_takes_it_as_a_basic_password(broker_factory):
    """A browser cannot send a bearer token; with the token and no SCRAM users, the console
    and /metrics take it as HTTP Basic's password, whatever the user name."""
    broker = broker_factory(*NO_GATEWAY, env={"TIDEWATER_METRICS_TOKEN": "console-token"})
    port = broker.admin_port

    def basic(user: str, password: str) -> dict[str, str]:
        return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}

    status, body, headers = http_get(port, "/api/overview")
    assert status == 401 and headers.get("www-authenticate", "").startswith("Basic"), (status, body, headers)
    assert http_get(port, "/api/overview", basic("operator", "wrong"))[0] == 401
    for headers in (basic("operator", "console-token"), basic("", "console-token"), {"Authorization": "Bearer console-token"}):
        status, body, _ = http_get(port, "/api/overview", headers)
        assert status == 200 and '"totals"' in body, (headers, status, body[:200])
    assert scrape(port, basic("prometheus", "console-token")).get("tidewater_uptime_seconds") > 0
    assert "console-token" not in "\n".join(broker.lines)
