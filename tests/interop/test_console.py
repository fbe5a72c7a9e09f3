"""The web console on the admin listener, in a real browser and through its JSON API.

Selenium drives Debian's headless Chromium (`apt-get install chromium chromium-driver`) against a
session broker: the overview's throughput chart moves while a producer runs, a topic's records are
browsed and searched by key, a consumer group's lag chart appears, a device shows online, a
command sent from the page arrives at its MQTT client, and it is disabled and enabled again; a
query is tested on sample events loaded from its topic, then created, and runs; a dead-lettered
event is inspected with its reason and sent back, and the trigger delivers it. The API is checked directly for
what it answers to bad input (4xx with a reason, never a panic) and, with SASL listeners, that it
asks for a SCRAM user and shows only what that user's ACLs let it describe.

Screenshots of each page are written to target/console-screenshots/ (overview.png, topics.png, topic.png,
groups.png, devices.png, queries.png, triggers.png) for a reviewer to look at."""

from __future__ import annotations

import base64
import http.client
import json
import re
import shutil
import threading
import time
import urllib.parse
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from metrics_support import http_get
from trigger_support import tidewater

NO_GATEWAY = ("--mqtt-listen", "none", "--http-listen", "none")
SCREENSHOTS = Path(__file__).resolve().parents[2] / "target" / "console-screenshots"
# Every wait in a page is bounded by this.
WAIT_S = 30


def produce(bootstrap: str, topic: str, records: list[tuple[bytes | None, bytes]], partition: int = 0,
            headers: list[tuple[str, bytes]] | None = None) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    failures: list = []
    for key, value in records:
        producer.produce(topic, value, key=key, partition=partition, headers=headers or [],
                         on_delivery=lambda error, _: error and failures.append(error))
    assert producer.flush(30) == 0 and not failures, failures


def api(port: int, path: str, headers: dict[str, str] | None = None, method: str = "GET",
        body: bytes | None = None) -> tuple[int, dict]:
    """(status, JSON body) of an API request; 4xx and 5xx are returned, not raised."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = dict(headers or {})
    if body is not None:
        # What the console's page sends; anything else is refused (see the cross-site test).
        headers.setdefault("Content-Type", "application/json")
    try:
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        text = response.read().decode()
    finally:
        connection.close()
    try:
        return response.status, json.loads(text)
    except json.JSONDecodeError:
        return response.status, {"error": text}


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


# ------------------------------------------------------------------------------------ the API


def test_the_api_answers_bad_input_with_a_4xx_and_a_reason(broker, topic_name):
    port = broker.admin_port
    tidewater("topic", "create", topic_name, "--partitions", "2", bootstrap=broker.bootstrap)
    produce(broker.bootstrap, topic_name, [(b"k", b"{}")] * 3)
    quoted = urllib.parse.quote(topic_name)
    for method, path, body, status, reason in (
        ("GET", "/api/topics/no-such-topic-anywhere/messages", None, 404, "no topic"),
        ("GET", f"/api/topics/{quoted}/messages?partition=7", None, 404, "has no partition 7"),
        ("GET", f"/api/topics/{quoted}/messages?offset=4", None, 400, "past the high watermark 3"),
        ("GET", f"/api/topics/{quoted}/messages?offset=9223372036854775807", None, 400, "past the high watermark"),
        ("GET", f"/api/topics/{quoted}/messages?offset=99999999999999999999999", None, 400, "not a number in range"),
        ("GET", f"/api/topics/{quoted}/messages?offset=-1", None, 400, "negative"),
        ("GET", f"/api/topics/{quoted}/messages?count=100000", None, 400, "out of range"),
        ("GET", f"/api/topics/{quoted}/messages?colour=blue", None, 400, "unknown parameter"),
        ("POST", f"/api/topics/{quoted}/search", b"{not json", 400, "malformed JSON body"),
        ("POST", f"/api/topics/{quoted}/search", b'{"key": 5}', 400, "malformed JSON body"),
        ("POST", f"/api/topics/{quoted}/search", b'{"key": "k", "limit": 0}', 400, "out of range"),
        ("POST", "/api/topics/no-such-topic-anywhere/search", b'{"key": "k"}', 404, "no topic"),
        ("POST", f"/api/topics/{quoted}/search", b"x" * 70_000, 413, "at most"),
        ("DELETE", "/api/topics", None, 405, "takes GET and POST"),
        ("POST", "/api/topics", b"{}", 405, "does not take POST"),
        ("GET", "/api/nothing-here", None, 404, "no such API route"),
        ("GET", "/assets/../Cargo.toml", None, 404, "no such page or asset"),
        ("GET", "/assets/%2e%2e/%2e%2e/Cargo.toml", None, 404, "no such page or asset"),
        ("GET", "/../../etc/passwd", None, 404, "no such page or asset"),
        ("GET", "/assets/", None, 404, "no such page or asset"),
    ):
        answer_status, answer = api(port, path, method=method, body=body)
        assert answer_status == status and reason in answer.get("error", ""), (method, path, answer_status, answer)
    # What another site's page could send from the operator's browser changes nothing.
    for headers, status, reason in (
        ({"Content-Type": "text/plain"}, 415, "Content-Type: application/json"),
        ({"Content-Type": "application/x-www-form-urlencoded"}, 415, "Content-Type: application/json"),
        ({"Content-Type": "application/json", "Origin": "http://evil.example"}, 403, "another site"),
    ):
        answer_status, answer = api(port, "/api/devices/x/command", headers, method="POST", body=b'{"payload": "x"}')
        assert answer_status == status and reason in answer["error"], (headers, answer_status, answer)
    # The listener carries on serving after all of that.
    assert http_get(port, "/health/live")[0] == 200
    assert api(port, f"/api/topics/{quoted}/messages?offset=0")[0] == 200


def test_the_api_shows_topics_records_and_group_lag(broker, topic_name):
    port, bootstrap = broker.admin_port, broker.bootstrap
    tidewater("topic", "create", topic_name, "--partitions", "2", bootstrap=bootstrap)
    produce(bootstrap, topic_name, [(f"device-{n % 3}".encode(), json.dumps({"n": n}).encode()) for n in range(10)],
            partition=1, headers=[("source", b"test")])
    status, listing = api(port, "/api/topics")
    assert status == 200, listing
    (topic,) = [topic for topic in listing["topics"] if topic["name"] == topic_name]
    assert [(p["partition"], p["high_watermark"]) for p in topic["partitions"]] == [(0, 0), (1, 10)]
    assert topic["records"] == 10 and topic["log_size_bytes"] > 0, topic

    status, page = api(port, f"/api/topics/{topic_name}/messages?partition=1&offset=4&count=3")
    assert status == 200, page
    assert [record["offset"] for record in page["records"]] == [4, 5, 6]
    first = page["records"][0]
    assert first["key"] == {"text": "device-1"} and first["value"] == {"json": {"n": 4}}, first
    assert first["headers"] == [{"key": "source", "value": {"text": "test"}}], first
    # By time: everything was produced before now, so from the first record's time on is all.
    status, page = api(port, f"/api/topics/{topic_name}/messages?partition=1&timestamp={first['timestamp_ms']}&count=50")
    assert status == 200 and page["records"][0]["timestamp_ms"] >= first["timestamp_ms"], page
    status, found = api(port, f"/api/topics/{topic_name}/search", method="POST", body=b'{"key": "device-2"}')
    assert status == 200 and sorted(record["offset"] for record in found["records"]) == [2, 5, 8], found

    group = f"{topic_name}-group"
    committer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    committer.commit(offsets=[TopicPartition(topic_name, 1, 7)], asynchronous=False)
    committer.close()
    status, groups = api(port, "/api/groups")
    assert status == 200, groups
    (described,) = [one for one in groups["groups"] if one["name"] == group]
    assert described["offsets"] == [
        {"topic": topic_name, "partition": 1, "committed": 7, "high_watermark": 10, "lag": 3}
    ], described


def test_with_sasl_listeners_the_console_asks_a_user_and_shows_what_its_acls_allow(broker_factory, tmp_path):
    broker = broker_factory(
        *NO_GATEWAY,
        env={"TIDEWATER_BOOTSTRAP_USER": "admin:admin-secret", "TIDEWATER_SUPERUSERS": "User:admin",
             "TIDEWATER_METRICS_TOKEN": "scrape-token"},
        listeners=("SASL_PLAINTEXT",),
        plaintext=False,
    )
    port, bootstrap = broker.admin_port, broker.bootstrap_of("SASL_PLAINTEXT")
    admin_config = tmp_path / "admin.properties"
    admin_config.write_text(
        f"bootstrap.servers={bootstrap}\nsecurity.protocol=SASL_PLAINTEXT\nsasl.mechanism=SCRAM-SHA-512\n"
        "sasl.username=admin\nsasl.password=admin-secret\n"
    )

    def cli(*args: str, stdin: str | None = None):
        return tidewater(*args, bootstrap=None, client_config=admin_config, stdin=stdin)

    cli("user", "create", "alice", "--password-stdin", stdin="alice-secret\n")
    cli("topic", "create", "alice-may-see", "--partitions", "1")
    cli("topic", "create", "alice-may-not-see", "--partitions", "1")
    cli("acl", "create", "--allow", "User:alice", "--operation", "read,describe", "--topic", "alice-may-see")

    for headers, reason in (
        ({}, "authentication required"),
        (basic("alice", "wrong"), "wrong token, user or password"),
        (basic("nobody", "alice-secret"), "wrong token, user or password"),
    ):
        for path in ("/", "/api/topics"):
            status, answer = api(port, path, headers)
            assert status == 401 and reason in answer["error"], (path, headers, status, answer)
    # The metrics token opens /metrics, not the console: it is no Kafka user.
    status, answer = api(port, "/api/topics", {"Authorization": "Bearer scrape-token"})
    assert status == 401 and "SCRAM user" in answer["error"], answer

    status, listing = api(port, "/api/topics", basic("alice", "alice-secret"))
    assert status == 200, listing
    assert [topic["name"] for topic in listing["topics"]] == ["alice-may-see"], listing
    status, answer = api(port, "/api/topics/alice-may-not-see/messages", basic("alice", "alice-secret"))
    assert status == 404 and "may describe" in answer["error"], answer
    assert api(port, "/api/topics/alice-may-see/messages", basic("alice", "alice-secret"))[0] == 200
    status, listing = api(port, "/api/topics", basic("admin", "admin-secret"))
    names = {topic["name"] for topic in listing["topics"]}
    assert status == 200 and {"alice-may-see", "alice-may-not-see"} <= names, listing
    assert http_get(port, "/", basic("alice", "alice-secret"))[0] == 200
    log = "\n".join(broker.lines)
    assert "alice-secret" not in log and "admin-secret" not in log


# ------------------------------------------------------------------------------ in a browser


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium = shutil.which("chromium")
    chromedriver = shutil.which("chromedriver")
    assert chromium and chromedriver, "the console tests need Debian's chromium and chromium-driver"
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=1300,1000"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(chromedriver), options=options)
    driver.set_page_load_timeout(WAIT_S)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    try:
        yield driver
    finally:
        driver.quit()


def wait_until(driver, condition, what: str):
    """The value of `condition(driver)` once it is truthy, within WAIT_S seconds."""
    from selenium.common.exceptions import WebDriverException

    deadline = time.monotonic() + WAIT_S
    last_error = None
    while time.monotonic() < deadline:
        try:
            value = condition(driver)
            if value:
                return value
        except WebDriverException as error:
            last_error = error
        time.sleep(0.25)
    raise AssertionError(f"waited {WAIT_S}s for {what}; last error: {last_error}")


def screenshot(driver, name: str) -> None:
    assert driver.save_screenshot(str(SCREENSHOTS / name)), name


def test_the_overview_chart_moves_while_a_producer_runs(broker, browser, topic_name):
    from selenium.webdriver.common.by import By

    tidewater("topic", "create", topic_name, "--partitions", "1", bootstrap=broker.bootstrap)
    browser.get(f"http://127.0.0.1:{broker.admin_port}/#overview")
    chart = wait_until(browser, lambda d: d.find_element(By.ID, "chart-produce-records"), "the produce chart")
    wait_until(browser, lambda d: "Kafka cluster" in d.find_element(By.ID, "health").text, "the health table")
    stop = threading.Event()

    def keep_producing():
        producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 5})
        while not stop.is_set():
            for _ in range(200):
                producer.produce(topic_name, b'{"temperature": 21.5}')
            producer.poll(0)
            time.sleep(0.05)
        producer.flush(30)

    producer = threading.Thread(target=keep_producing, daemon=True)
    producer.start()
    try:
        wait_until(browser, lambda d: float(d.find_element(By.ID, "chart-produce-records").get_attribute("data-max") or 0) > 0,
                   "a produce rate above zero on the chart")
        first_points = chart.find_element(By.TAG_NAME, "polyline").get_attribute("points")
        wait_until(browser, lambda d: d.find_element(By.CSS_SELECTOR, "#chart-produce-records polyline").get_attribute("points") != first_points,
                   "the chart's line to move")
        wait_until(browser, lambda d: int(d.find_element(By.ID, "chart-produce-records").get_attribute("data-points") or 0) >= 4,
                   "four points on the chart")
        legend = browser.find_element(By.CSS_SELECTOR, "#chart-produce-records + .legend").text
        assert "records produced/s" in legend, legend
        assert "ok" in browser.find_element(By.ID, "health").text
        screenshot(browser, "overview.png")
    finally:
        stop.set()
        producer.join(timeout=WAIT_S)
    assert not producer.is_alive()


def test_a_topics_records_are_browsed_and_searched_by_key(broker, browser, topic_name):
    from selenium.webdriver.common.by import By

    tidewater("topic", "create", topic_name, "--partitions", "1", bootstrap=broker.bootstrap)
    records = [(f"sensor-{n % 2}".encode(), json.dumps({"sensor": n % 2, "reading": {"temperature": 20 + n}}).encode())
               for n in range(6)]
    produce(broker.bootstrap, topic_name, records, headers=[("content-type", b"application/json")])
    browser.get(f"http://127.0.0.1:{broker.admin_port}/#topics")
    wait_until(browser, lambda d: d.find_elements(By.CSS_SELECTOR, f'#topics-table tr[data-topic="{topic_name}"]'),
               "the topic in the topics table")
    topic_row = f'#topics-table tr[data-topic="{topic_name}"]'
    retention = browser.find_element(By.CSS_SELECTOR, f"{topic_row} td.retention").text
    assert retention == "7 d · delete", retention
    # The produce-rate sparkline gets its points from /api/overview's per-topic totals.
    wait_until(browser, lambda d: int(d.find_element(By.CSS_SELECTOR, f"{topic_row} svg.sparkline").get_attribute("data-points") or 0) >= 1,
               "the topic's rate sparkline")
    screenshot(browser, "topics.png")
    browser.find_element(By.LINK_TEXT, topic_name).click()
    shown = wait_until(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#messages .record"), "the topic's records")
    assert [element.get_attribute("data-offset") for element in shown] == [str(n) for n in range(6)]
    # Pretty-printed JSON, with the header and the key.
    value = shown[3].find_element(By.CSS_SELECTOR, "pre.value").text
    assert json.loads(value) == {"sensor": 1, "reading": {"temperature": 23}} and '\n  "reading": {' in value, value
    assert "content-type" in shown[3].text and "application/json" in shown[3].text
    assert shown[3].find_element(By.CSS_SELECTOR, ".key").text == "sensor-1"
    assert "1 record(s) from offset" not in browser.find_element(By.ID, "messages-summary").text

    # From an offset, then by key.
    offset_input = browser.find_element(By.ID, "browse-offset")
    offset_input.clear()
    offset_input.send_keys("4")
    browser.find_element(By.ID, "browse-button").click()
    wait_until(browser, lambda d: [e.get_attribute("data-offset") for e in d.find_elements(By.CSS_SELECTOR, "#messages .record")] == ["4", "5"],
               "records from offset 4")
    browser.find_element(By.ID, "search-key").send_keys("sensor-0")
    browser.find_element(By.ID, "search-button").click()
    wait_until(browser, lambda d: sorted(e.get_attribute("data-offset") for e in d.find_elements(By.CSS_SELECTOR, "#messages .record")) == ["0", "2", "4"],
               "the records with key sensor-0")
    screenshot(browser, "topic.png")


def test_a_groups_lag_chart_appears(broker, browser, topic_name):
    from selenium.webdriver.common.by import By

    tidewater("topic", "create", topic_name, "--partitions", "2", bootstrap=broker.bootstrap)
    for partition in (0, 1):
        produce(broker.bootstrap, topic_name, [(None, b"x")] * 20, partition=partition)
    group = f"{topic_name}-group"
    committer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group})
    committer.commit(offsets=[TopicPartition(topic_name, 0, 5), TopicPartition(topic_name, 1, 15)], asynchronous=False)
    committer.close()
    browser.get(f"http://127.0.0.1:{broker.admin_port}/#groups")
    card = f'.group[data-group="{group}"]'
    wait_until(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, f"{card} .lag-chart polyline")) == 2, "the group's lag chart")
    wait_until(browser, lambda d: float(d.find_element(By.CSS_SELECTOR, f"{card} .lag-chart").get_attribute("data-max") or 0) == 15,
               "the chart's highest lag to be partition 0's 15")
    rows = [row.text for row in browser.find_elements(By.CSS_SELECTOR, f"{card} table.offsets tbody tr")]
    assert rows == [f"{topic_name} 0 5 20 15", f"{topic_name} 1 15 20 5"], rows
    # The lag falls when the group commits more, and the chart follows.
    committer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group})
    committer.commit(offsets=[TopicPartition(topic_name, 0, 20)], asynchronous=False)
    committer.close()
    wait_until(browser, lambda d: f"{topic_name} 0 20 20 0" in d.find_element(By.CSS_SELECTOR, f"{card} table.offsets").text,
               "the new lag of partition 0")
    legend = browser.find_element(By.CSS_SELECTOR, f"{card} .legend").text
    assert f"lag {topic_name}/0: 0" in legend, legend
    screenshot(browser, "groups.png")


def test_a_device_shows_online_is_sent_a_command_from_the_page_and_disabled(broker, browser):
    """The devices page: the device online with its messages counted, a command sent from the
    page arriving at the paho client, disable and enable, then the device offline with its last
    seen time once the client disconnects."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion
    from selenium.webdriver.common.by import By

    from gateway_support import add_device, new_device_id

    device_id = new_device_id("console")
    key = add_device(broker.bootstrap, device_id)
    received: list[bytes] = []
    subscribed = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=device_id, protocol=mqtt.MQTTv311)
    client.username_pw_set(device_id, key)
    client.on_message = lambda _client, _userdata, message: received.append(message.payload)
    client.on_subscribe = lambda *_: subscribed.set()

    def on_connect(_client, _userdata, _flags, reason_code, _properties=None):
        if not reason_code.is_failure:
            client.subscribe(f"devices/{device_id}/messages/devicebound/#", qos=1)

    client.on_connect = on_connect
    # The gateway may not have read the registration yet: connect again until it has.
    deadline = time.monotonic() + WAIT_S
    client.loop_start()
    try:
        while not subscribed.is_set():
            assert time.monotonic() < deadline, "the device never connected and subscribed"
            try:
                client.connect("127.0.0.1", broker.mqtt_port)
            except OSError:
                pass
            subscribed.wait(2)
        browser.get(f"http://127.0.0.1:{broker.admin_port}/#devices")
        row = f'#devices-table tr[data-device="{device_id}"]'
        wait_until(browser, lambda d: d.find_elements(By.CSS_SELECTOR, row), "the device in the table")
        wait_until(browser, lambda d: d.find_element(By.ID, "devices-online").text.startswith("devices online: ")
                   and d.find_element(By.ID, "devices-online").text != "devices online: 0"
                   and "-" not in d.find_element(By.ID, "devices-online").text, "a device online")
        browser.find_element(By.CSS_SELECTOR, f"{row} input.command").send_keys('{"action": "reboot"}')
        browser.find_element(By.CSS_SELECTOR, f"{row} button.send").click()
        wait_until(browser, lambda d: f"command sent to {device_id}" in d.find_element(By.ID, "device-result").text, "the page to say sent")
        deadline = time.monotonic() + WAIT_S
        while not received and time.monotonic() < deadline:
            time.sleep(0.2)
        assert received == [b'{"action": "reboot"}'], received
        browser.find_element(By.CSS_SELECTOR, f"{row} button.toggle").click()
        wait_until(browser, lambda d: d.find_element(By.CSS_SELECTOR, f"{row} td.state").text == "disabled", "the device disabled")
        listing = api(broker.admin_port, "/api/devices")[1]
        assert [device["disabled"] for device in listing["devices"] if device["id"] == device_id] == [True], listing
        browser.find_element(By.CSS_SELECTOR, f"{row} button.toggle").click()
        wait_until(browser, lambda d: d.find_element(By.CSS_SELECTOR, f"{row} td.state").text == "enabled", "the device enabled again")
        # Disabling cuts the connection off at its next message; paho then reconnects by itself.
        wait_until(browser, lambda d: d.find_element(By.CSS_SELECTOR, f"{row} td.presence").text.startswith("online"),
                   "the device online on the page")
        for n in range(3):
            deadline = time.monotonic() + WAIT_S
            while True:
                info = client.publish(f"devices/{device_id}/messages/events/", f'{{"n": {n}}}', qos=1)
                try:
                    info.wait_for_publish(5)
                    break
                except (RuntimeError, ValueError):
                    assert time.monotonic() < deadline, "the message was never sent"
                    time.sleep(0.5)
        wait_until(browser, lambda d: int(d.find_element(By.CSS_SELECTOR, f"{row} td.messages").text or 0) >= 3,
                   "three messages counted")
        screenshot(browser, "devices.png")
    finally:
        client.loop_stop()
        client.disconnect()
    wait_until(browser, lambda d: d.find_element(By.CSS_SELECTOR, f"{row} td.presence").text == "offline",
               "the device offline on the page")
    assert "-" not in browser.find_element(By.CSS_SELECTOR, f"{row} td.last-seen").text[:1]
    listing = api(broker.admin_port, "/api/devices")[1]
    seen = [device for device in listing["devices"] if device["id"] == device_id]
    assert len(seen) == 1 and seen[0]["connected"] is False and seen[0]["connected_since_ms"] is None, seen
    assert seen[0]["messages"] >= 3 and seen[0]["last_seen_ms"] > seen[0]["created_at_ms"], seen
    status, answer = api(broker.admin_port, f"/api/devices/{device_id}/command", method="POST", body=b"[")
    assert status == 400 and "malformed JSON body" in answer["error"], answer
    status, answer = api(broker.admin_port, "/api/devices/no-such-device-here/disabled", method="POST", body=b'{"disabled": true}')
    assert status == 404 and "no device" in answer["error"], answer


def test_a_query_is_tested_on_sample_events_from_its_topic_then_created(broker, browser):
    import uuid

    from selenium.webdriver.common.by import By

    suffix = uuid.uuid4().hex[:8]
    readings, alerts, job = f"console_readings_{suffix}", f"console_alerts_{suffix}", f"console_job_{suffix}"
    tidewater("topic", "create", readings, "--partitions", "1", bootstrap=broker.bootstrap)
    produce(broker.bootstrap, readings, [(None, json.dumps({"deviceId": f"pump-{n}", "temperature": 20 + 5 * n}).encode())
                                         for n in range(5)])
    browser.get(f"http://127.0.0.1:{broker.admin_port}/#queries")
    sql = browser.find_element(By.ID, "query-sql")
    sql.clear()
    sql.send_keys(f"SELECT deviceId, temperature INTO {alerts} FROM {readings} WHERE temperature > 30")
    topic = browser.find_element(By.ID, "sample-topic")
    topic.clear()
    topic.send_keys(readings)
    browser.find_element(By.ID, "sample-button").click()
    wait_until(browser, lambda d: "5 JSON event(s) loaded" in d.find_element(By.ID, "query-result").text, "the sample events")
    browser.find_element(By.ID, "query-test").click()
    rows = wait_until(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#query-rows tbody tr"), "the test's rows")
    assert [row.text for row in rows] == [f'{alerts} "pump-3" 35', f'{alerts} "pump-4" 40'], [row.text for row in rows]
    screenshot(browser, "queries.png")
    browser.find_element(By.ID, "query-name").send_keys(job)
    browser.find_element(By.ID, "query-create").click()
    wait_until(browser, lambda d: f"created query job {job}" in d.find_element(By.ID, "query-result").text, "the job created")
    wait_until(browser, lambda d: d.find_elements(By.CSS_SELECTOR, f'#queries-table tr[data-job="{job}"]'), "the job in the table")
    status, answer = api(broker.admin_port, "/api/queries", method="POST",
                         body=json.dumps({"name": job, "sql": "SELECT * INTO x FROM y"}).encode())
    assert status == 409 and "exists" in answer["error"], answer
    status, answer = api(broker.admin_port, "/api/queries/test", method="POST",
                         body=json.dumps({"sql": "SELEC nonsense", "events": ""}).encode())
    assert status == 400 and "does not compile" in answer["error"], answer
    # Created, it runs in the serve process: its events counter reaches the five readings.
    deadline = time.monotonic() + WAIT_S
    while True:
        jobs = {one["name"]: one for one in api(broker.admin_port, "/api/queries")[1]["jobs"]}
        if jobs[job]["events_total"] == 5:
            break
        assert time.monotonic() < deadline, jobs[job]
        time.sleep(0.5)
    # The table shows its watermark as a time, and the charts have its line.
    row = f'#queries-table tr[data-job="{job}"]'
    wait_until(browser, lambda d: re.match(r"\d{4}-\d\d-\d\dT", d.find_element(By.CSS_SELECTOR, f"{row} td.watermark").text),
               "the watermark as a time")
    assert browser.find_element(By.CSS_SELECTOR, f"{row} td.failures").text == "0"
    wait_until(browser, lambda d: any(line.get_attribute("points") for line in d.find_elements(
        By.CSS_SELECTOR, f'#queries-rate-chart polyline[data-series="{job}"]')), "the events per second chart drawn")
    listed = {one["name"]: one for one in api(broker.admin_port, "/api/queries")[1]["jobs"]}[job]
    assert abs(listed["watermark_ms"] - (time.time() * 1000 - listed["watermark_lag_seconds"] * 1000)) < 60_000, listed
    screenshot(browser, "queries-running.png")
    tidewater("query", "delete", job, bootstrap=broker.bootstrap)


def test_a_failing_query_job_shows_its_failures_and_latest_error(broker, browser):
    """A job whose output rows the cluster refuses (bigger than the output topic's
    max.message.bytes) fails and is restarted: the page counts its failures and shows why."""
    import uuid

    from selenium.webdriver.common.by import By

    suffix = uuid.uuid4().hex[:8]
    readings, small, job = f"console_big_{suffix}", f"console_small_{suffix}", f"console_failing_{suffix}"
    tidewater("topic", "create", readings, "--partitions", "1", bootstrap=broker.bootstrap)
    tidewater("topic", "create", small, "--partitions", "1", "--config", "max.message.bytes=200", bootstrap=broker.bootstrap)
    produce(broker.bootstrap, readings, [(None, json.dumps({"payload": "x" * 400}).encode())])
    status, answer = api(broker.admin_port, "/api/queries", method="POST",
                         body=json.dumps({"name": job, "sql": f"SELECT payload INTO {small} FROM {readings}"}).encode())
    assert status == 200, answer
    try:
        deadline = time.monotonic() + WAIT_S * 2
        while True:
            listed = {one["name"]: one for one in api(broker.admin_port, "/api/queries")[1]["jobs"]}[job]
            if (listed["failures_total"] or 0) >= 1:
                break
            assert time.monotonic() < deadline, listed
            time.sleep(0.5)
        assert listed["last_error"] and listed["last_error_at_ms"] > 0, listed
        browser.get(f"http://127.0.0.1:{broker.admin_port}/#queries")
        wait_until(browser, lambda d: int(d.find_element(By.CSS_SELECTOR, f'#queries-table tr[data-job="{job}"] td.failures').text or 0) >= 1,
                   "the failures counted on the page")
        error_rows = [row.text for row in browser.find_elements(By.CSS_SELECTOR, "#queries-table tr.job-error")]
        assert any(row.startswith(f"{job} failed at ") for row in error_rows), error_rows
        screenshot(browser, "queries-failing.png")
    finally:
        tidewater("query", "delete", job, bootstrap=broker.bootstrap)


def test_a_dead_lettered_event_is_inspected_and_sent_back(broker, browser, topic_name):
    import uuid

    from selenium.webdriver.common.by import By

    from trigger_support import Receiver, Reply

    # The receiver refuses the first attempt of the event for good (400: dead-lettered at once)
    # and takes it when it comes back.
    seen: list[bytes] = []

    def respond(request, attempt):
        seen.append(request.body)
        return Reply(status=400) if len(seen) == 1 else Reply()

    receiver = Receiver(respond)
    name = f"console-{uuid.uuid4().hex[:8]}"
    tidewater("topic", "create", topic_name, "--partitions", "1", bootstrap=broker.bootstrap)
    tidewater("trigger", "create", name, "--topic", topic_name, "--webhook", receiver.url, "--from", "earliest",
              bootstrap=broker.bootstrap)
    try:
        produce(broker.bootstrap, topic_name, [(b"valve-7", b'{"pressure": 9}')])
        browser.get(f"http://127.0.0.1:{broker.admin_port}/#triggers")
        row = f'#triggers-table tr[data-trigger="{name}"]'
        wait_until(browser, lambda d: d.find_element(By.CSS_SELECTOR, f"{row} td.dead-lettered").text == "1", "one event dead-lettered")
        browser.find_element(By.CSS_SELECTOR, f"{row} button.dead-letters").click()
        record = wait_until(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#dead-letters .record"), "the dead letter")[0]
        assert "tidewater-dead-letter-reason" in record.text and "400" in record.text, record.text
        assert json.loads(record.find_element(By.CSS_SELECTOR, "pre.value").text) == {"pressure": 9}
        screenshot(browser, "triggers.png")
        record.find_element(By.CSS_SELECTOR, "button.replay").click()
        wait_until(browser, lambda d: "sent back" in d.find_element(By.ID, "replay-result").text, "the page to say sent back")
        receiver.wait_for(lambda requests: len(requests) >= 2, "the event delivered again")
        wait_until(browser, lambda d: d.find_element(By.CSS_SELECTOR, f"{row} td.delivered").text == "1", "one event delivered")
        # The delivery and latency charts have the trigger's line once it delivered.
        for chart in ("triggers-rate-chart", "triggers-latency-chart"):
            wait_until(browser, lambda d: any(line.get_attribute("points") for line in d.find_elements(
                By.CSS_SELECTOR, f'#{chart} polyline[data-series="{name}"]')), f"the trigger's line in {chart}")
        screenshot(browser, "triggers-delivered.png")
        status, answer = api(broker.admin_port, f"/api/triggers/{name}/replay", method="POST", body=b'{"partition": 0, "offset": 99}')
        assert status == 404 and "no record at offset 99" in answer["error"], answer
        status, answer = api(broker.admin_port, f"/api/triggers/{name}/replay", method="POST", body=b'{"partition": "x"}')
        assert status == 400 and "malformed JSON body" in answer["error"], answer
    finally:
        tidewater("trigger", "delete", name, bootstrap=broker.bootstrap, check=False)
        receiver.close()
