"""MQTT hardening against a real Mosquitto: poison between good messages, a consumer killed mid-batch,
and a locked-down broker (TLS with client certificates, no anonymous clients, a password file)."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pyarrow.compute as pc
import pytest

from lakehouse.delta_rs import DeltaRsEngine
from lakehouse.schemas import QUARANTINE_READINGS, SENSOR_READINGS
from lakehouse.sources.mqtt import MqttConnectionError, MqttIngest
from lakehouse.sources.publish import Message, Publisher, reading_messages
from tests.integration.stream_fixtures import readings_table, small_registry
from tests.stand_ins.certs import TestCA
from tests.stand_ins.mosquitto import BrokerTls, Mosquitto

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
TOPIC = "sites/site-a/buildings/b0/sensors/main_meter"
PASSWORD = "correct horse battery staple"


def _good(minute: int) -> bytes:
    return json.dumps({"metric": "energy", "ts": f"2026-01-05T00:{minute:02d}:00Z", "value": 1.0 + minute / 100, "unit": "kWh"}).encode()


def _publish(address: str, messages: list[tuple[str, bytes]], pace_s: float = 0.0) -> None:
    host, port = address.rsplit(":", 1)
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"pub-{random.random()}")
    pub.connect(host, int(port))
    pub.loop_start()
    for topic, payload in messages:
        pub.publish(topic, payload, qos=1).wait_for_publish(5)
        time.sleep(pace_s)
    pub.disconnect()
    pub.loop_stop()


@pytest.fixture
def broker(tmp_path: Path):
    with Mosquitto(tmp_path / "mosquitto") as mq:
        yield mq


def _consumer(address: str, root: Path, client_id: str, **kw) -> MqttIngest:
    registry = small_registry(1)
    return MqttIngest(
        broker=address, topic="sites/+/buildings/+/sensors/#", client_id=client_id, engine=DeltaRsEngine(str(root)),
        registry_loader=lambda: registry, batch_max_readings=kw.pop("batch", 2), batch_max_age_s=0.2, **kw,
    )


def test_poison_between_good_messages_is_quarantined_acknowledged_and_never_redelivered(broker: Mosquitto, tmp_path: Path, settings) -> None:
    root = tmp_path / "lake"
    deep = b'{"metric": "energy", "value": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"
    long_number = b'{"metric": "energy", "ts": "2026-01-05T00:20:00Z", "value": ' + b"9" * 5_000 + b"}"
    consumer = _consumer(broker.address, root, "wattflow-poison", settings=settings)
    worker = threading.Thread(target=lambda: consumer.run(idle_timeout=1.5))
    worker.start()
    assert consumer._connected.wait(10)
    _publish(broker.address, [(TOPIC, _good(0)), (TOPIC, deep), (TOPIC, _good(15)), (TOPIC, long_number), (TOPIC, _good(30))])
    worker.join(30)
    assert not worker.is_alive()

    engine = DeltaRsEngine(str(root))
    landed = sorted((r["ts"].strftime("%H:%M"), r["value"]) for r in engine.read(SENSOR_READINGS).to_pylist())
    assert landed == [("00:00", 1.0), ("00:15", 1.15), ("00:30", 1.3)]  # the good ones on both sides
    quarantined = {q["check_name"]: q for q in engine.read(QUARANTINE_READINGS).to_pylist()}
    assert set(quarantined) == {"payload_too_deep", "number_out_of_range"}
    for check, payload in (("payload_too_deep", deep), ("number_out_of_range", long_number)):
        row = quarantined[check]
        assert json.loads(row["raw"]) == {"topic": TOPIC, "payload": payload.decode()}  # as received
        assert (row["building_id"], row["sensor_id"]) == ("b0", "main_meter")
    assert "4300 digits" in quarantined["number_out_of_range"]["reason"]
    assert (consumer.stats.messages, consumer.stats.landed, consumer.stats.quarantined) == (5, 3, 2)

    # Acknowledged: the same persistent session, reconnected, gets nothing back from the broker.
    again = _consumer(broker.address, root, "wattflow-poison", settings=settings)
    stats = again.run(idle_timeout=1.0)
    assert (stats.messages, stats.readings) == (0, 0)


def test_ingest_killed_mid_batch_and_restarted_lands_each_reading_once(broker: Mosquitto, tmp_path: Path) -> None:
    root, home = tmp_path / "lake", tmp_path / "home"
    readings = readings_table(1, 1000)  # 2,000 readings (two sensors), 10 per message
    messages = [(m.topic, m.payload) for m in reading_messages(readings, {"b0": "site-a"}, readings_per_message=10)]

    def start(idle: float) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "tests.integration.mqtt_consumer", broker.address, str(root), str(home), str(idle)],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )

    first = start(60)
    assert first.stdout is not None and first.stdout.readline().strip() == "connected"
    # Paced (about a second in all) so the stream is still flowing when the kill comes.
    publisher = threading.Thread(target=_publish, args=(broker.address, messages), kwargs={"pace_s": 0.005})
    publisher.start()
    assert first.stdout.readline().startswith("commit")  # at least one batch is in bronze and acknowledged
    time.sleep(random.Random(16).uniform(0.0, 0.3))
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    assert first.returncode == -signal.SIGKILL
    publisher.join(60)

    engine = DeltaRsEngine(str(root))
    mid = engine.read(SENSOR_READINGS)  # readable at its last version, no key twice
    assert 0 < mid.num_rows < readings.num_rows
    assert len({(r["sensor_id"], r["ts"]) for r in mid.select(["sensor_id", "ts"]).to_pylist()}) == mid.num_rows

    second = start(2.0)  # same client id: the broker redelivers everything not acknowledged
    out, err = second.communicate(timeout=120)
    assert second.returncode == 0, err
    landed = engine.read(SENSOR_READINGS)
    assert landed.num_rows == readings.num_rows
    assert len({(r["sensor_id"], r["ts"]) for r in landed.select(["sensor_id", "ts"]).to_pylist()}) == readings.num_rows
    assert pc.sum(landed.column("value")).as_py() == pytest.approx(pc.sum(readings.column("value")).as_py())
    assert engine.read(QUARANTINE_READINGS).num_rows == 0


# --------------------------------------------------------------------------------- locked-down broker


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> TestCA:
    return TestCA(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tls_broker(pki: TestCA, tmp_path_factory):
    server = pki.server()
    tls = BrokerTls(pki.ca.cert, server.cert, server.key, users={"ingest": PASSWORD, "gateway": PASSWORD})
    with Mosquitto(tmp_path_factory.mktemp("mosquitto-tls"), tls=tls) as mq:
        yield mq


def test_locked_down_broker_refuses_a_client_without_certificate_or_with_a_wrong_password(tls_broker: Mosquitto, pki: TestCA, tmp_path: Path, settings) -> None:
    client = pki.client("ingest")
    no_cert = _consumer(tls_broker.address, tmp_path / "lake", "no-cert", settings=settings, username="ingest",
                        password=PASSWORD, tls_ca_file=str(pki.ca.cert))
    with pytest.raises(MqttConnectionError, match="closed the connection before the MQTT session began.*client certificate"):
        no_cert.run(idle_timeout=0.5, connect_timeout=10)
    wrong_password = _consumer(tls_broker.address, tmp_path / "lake", "wrong-pw", settings=settings, username="ingest",
                               password="guess", tls_ca_file=str(pki.ca.cert), tls_cert_file=str(client.cert),
                               tls_key_file=str(client.key))
    with pytest.raises(MqttConnectionError, match="refused user 'ingest': Not authorized; check mqtt.username"):
        wrong_password.run(idle_timeout=0.5, connect_timeout=10)
    anonymous = _consumer(tls_broker.address, tmp_path / "lake", "anon", settings=settings, tls_ca_file=str(pki.ca.cert),
                          tls_cert_file=str(client.cert), tls_key_file=str(client.key))
    with pytest.raises(MqttConnectionError, match="refused an anonymous client"):
        anonymous.run(idle_timeout=0.5, connect_timeout=10)
    untrusted = TestCA(tmp_path / "other-ca").client("ingest")  # a certificate the broker's CA never signed
    with pytest.raises(MqttConnectionError, match="closed the connection before the MQTT session began"):
        _consumer(tls_broker.address, tmp_path / "lake", "untrusted", settings=settings, username="ingest", password=PASSWORD,
                  tls_ca_file=str(pki.ca.cert), tls_cert_file=str(untrusted.cert), tls_key_file=str(untrusted.key)).run(
            idle_timeout=0.5, connect_timeout=10)
    plain = _consumer(tls_broker.address, tmp_path / "lake", "plain", settings=settings, username="ingest", password=PASSWORD)
    with pytest.raises(MqttConnectionError, match="is it a TLS listener"):
        plain.run(idle_timeout=0.5, connect_timeout=10)
    assert not (tmp_path / "lake").exists()  # nothing was consumed


def test_client_with_certificate_and_password_lands_readings(tls_broker: Mosquitto, pki: TestCA, tmp_path: Path, settings) -> None:
    ingest_cert, gateway = pki.client("ingest"), pki.client("gateway")
    consumer = _consumer(tls_broker.address, tmp_path / "lake", "tls-ingest", settings=settings, username="ingest",
                         password=PASSWORD, tls_ca_file=str(pki.ca.cert), tls_cert_file=str(ingest_cert.cert),
                         tls_key_file=str(ingest_cert.key))
    worker = threading.Thread(target=lambda: consumer.run(idle_timeout=1.0, connect_timeout=10))
    worker.start()
    assert consumer._connected.wait(10)
    security = {"username": "gateway", "password": PASSWORD, "tls_ca_file": str(pki.ca.cert),
                "tls_cert_file": str(gateway.cert), "tls_key_file": str(gateway.key)}
    with Publisher(tls_broker.address, client_id="tls-gateway", security=security) as pub:  # the `simulate publish` client
        for m in (0, 15, 30):
            pub.publish(Message(TOPIC, _good(m), 1))
        assert pub.wait_acknowledged(10) and pub.acknowledged_messages == 3
    worker.join(30)
    assert not worker.is_alive()
    landed = DeltaRsEngine(str(tmp_path / "lake")).read(SENSOR_READINGS).to_pylist()
    assert sorted((r["ts"].strftime("%H:%M"), r["value"]) for r in landed) == [("00:00", 1.0), ("00:15", 1.15), ("00:30", 1.3)]
