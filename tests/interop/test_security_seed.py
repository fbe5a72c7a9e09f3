"""The seed scenario inside `serve` when its only Kafka listener is SASL_SSL (issue 15: "The
seed scenario (MQTT devices, a registered SQL job, a trigger) runs inside `serve` when the only
Kafka listener is SASL_SSL").

The broker has one Kafka listener, SASL_SSL (SCRAM, the module's test PKI), no PLAINTEXT one, a
bootstrap superuser `admin`, and its MQTT and HTTP listeners. Everything the test does from
outside goes through SASL_SSL as the admin: `tidewater device add`, `query create`, `trigger
create` and `topic create` with `--client-config admin.properties`, and confluent-kafka reading
the alerts. The embedded gateway, query job and trigger runner reach the broker through the
internal SCRAM listener (see crates/tidewater/src/listeners.rs) as `User:__tidewater_internal`,
which the broker's log (its authentication at debug level) shows.

The scenario is test_query.py's end-to-end MQTT one (query_support.MqttSeedScenario): two
devices publish readings over MQTT, a registered job averages them and writes an alert for the
hot device, and here a webhook trigger on the alerts topic delivers it to a receiver in the test.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from query_support import MqttSeedScenario, close_devices, read_committed, wait_for_rows
from security_support import QUIET_LIBRDKAFKA, Pki, Security, make_pki
from trigger_support import Receiver, tidewater

ADMIN = "admin"
ADMIN_PASSWORD = "tide-admin-secret"
INTERNAL_PRINCIPAL = "User:__tidewater_internal"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def receiver():
    hook = Receiver()
    yield hook
    hook.close()


def test_seed_scenario_runs_inside_serve_when_the_only_kafka_listener_is_sasl_ssl(
    broker_factory, pki: Pki, receiver: Receiver, tmp_path: Path
):
    broker = broker_factory(
        "--tls-cert",
        str(pki.server.cert),
        "--tls-key",
        str(pki.server.key),
        "--superusers",
        f"User:{ADMIN}",
        env={
            "TIDEWATER_BOOTSTRAP_USER": f"{ADMIN}:{ADMIN_PASSWORD}",
            # Each authentication, with its principal and mechanism, is logged at debug level.
            "TIDEWATER_LOG": "info,tidewater_kafka::authentication=debug",
        },
        listeners=("SASL_SSL",),
        plaintext=False,
    )
    assert set(broker.listener_ports) == {"SASL_SSL", "INTERNAL"}, broker.listener_ports
    assert broker.bootstrap == broker.bootstrap_of("SASL_SSL")
    assert broker.mqtt_port is not None and broker.http_port is not None
    admin = Security("SASL_SSL", "SCRAM-SHA-256", ADMIN, ADMIN_PASSWORD, ca=pki.ca)
    admin_config = admin.write_properties(tmp_path / "admin.properties", broker.bootstrap_of("SASL_SSL"))

    def cli(*args: str) -> str:
        return tidewater(*args, bootstrap=None, client_config=admin_config).stdout

    scenario = MqttSeedScenario.new()
    cli("topic", "create", scenario.alerts, "--partitions", "1")
    trigger = f"{scenario.job}-hook"
    cli("trigger", "create", trigger, "--topic", scenario.alerts, "--webhook", receiver.url, "--from", "earliest")
    devices = scenario.connect_devices(broker.mqtt_port, None, client_config=admin_config)
    try:
        scenario.create_job(tmp_path, None, client_config=admin_config)
        scenario.publish(devices)
        client = {"logger": QUIET_LIBRDKAFKA, **admin.librdkafka()}
        wait_for_rows(broker.bootstrap_of("SASL_SSL"), scenario.alerts, 1, **client)
        # Every alert the job writes, once none has come for a few seconds. How many windows
        # alert depends on how the job's first fetches interleave the two devices' partitions
        # (a partition not yet seen does not hold the watermark back), so the test checks what
        # test_query.py's run of the scenario checks, and that each alert reached the webhook.
        rows = read_committed(broker.bootstrap_of("SASL_SSL"), scenario.alerts, settle_s=3.0, **client)
        scenario.check(rows)
        requests = receiver.wait_for(lambda seen: len(seen) >= len(rows), f"{len(rows)} alerts at the webhook")
    finally:
        close_devices(devices)
    # The webhook got every alert once, each as the record's value (binary mode), in any order:
    # the job writes them without a key, and a trigger delivers events without one in parallel.
    by_window = sorted((request.json() for request in requests), key=lambda row: row["windowEnd"])
    assert by_window == sorted(rows, key=lambda row: row["windowEnd"]), (by_window, rows)
    assert all(request.status == 200 for request in requests)
    assert {request.headers["ce-source"] for request in requests} == {f"/tidewater/topics/{scenario.alerts}"}

    # The job and the trigger are registered and running, as the CLI reports them.
    assert any(line.split()[:2] == [scenario.job, "active"] for line in cli("query", "list").splitlines())
    assert any(line.split()[0] == trigger for line in cli("trigger", "list").splitlines()[1:] if line.split())
    # The components came in through the internal listener with their own identity.
    broker.wait_for_log(
        "listener=INTERNAL",
        "SASL authentication succeeded",
        f"principal={INTERNAL_PRINCIPAL}",
        "mechanism=SCRAM-SHA-512",
    )
    assert not [line for line in broker.lines if "SASL authentication failed" in line], "a client was refused"
    assert not [line for line in broker.lines if ADMIN_PASSWORD in line], "the broker logged a password"
