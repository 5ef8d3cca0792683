"""MQTT into bronze against a real, private Mosquitto: delivery across a broker restart, and poison messages."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pyarrow.compute as pc
import pytest

from lakehouse.engine import get_engine
from lakehouse.schemas import QUARANTINE_READINGS, SENSOR_READINGS
from lakehouse.sources.mqtt import MqttIngest
from lakehouse.sources.publish import Publisher, reading_messages
from tests.integration.stream_fixtures import readings_table, small_registry
from tests.stand_ins.mosquitto import Mosquitto

pytestmark = pytest.mark.integration
TOPIC = "sites/+/buildings/+/sensors/#"


@pytest.fixture
def broker(tmp_path: Path):
    with Mosquitto(tmp_path / "mosquitto") as mq:
        yield mq


def _consumer(broker: Mosquitto, registry, engine, **kw) -> MqttIngest:
    return MqttIngest(
        broker=broker.address, topic=TOPIC, client_id="wattflow-test", engine=engine,
        registry_loader=lambda: registry, batch_max_readings=kw.pop("batch", 2000), batch_max_age_s=0.3, **kw
    )


def test_broker_restart_during_publish_loses_and_doubles_nothing(broker: Mosquitto, wattflow_home: Path) -> None:
    registry = small_registry(2)
    engine = get_engine()
    readings = readings_table(2, 2500)  # 10,000 readings
    messages = list(reading_messages(readings, {"b0": "site-a", "b1": "site-a"}, readings_per_message=10))
    consumer = _consumer(broker, registry, engine)
    stats: dict = {}
    # Stop on idle, not on a count: redelivered copies count as received too, and the test must see
    # every unique reading arrive. Idle means 10 s without a message: on a loaded machine the reconnect and
    # the broker's redelivery of the queued session can pause the stream for several seconds.
    worker = threading.Thread(target=lambda: stats.update(s=consumer.run(idle_timeout=10)))
    worker.start()
    assert consumer._connected.wait(10)

    restarted = threading.Event()
    with Publisher(broker.address) as pub:
        for i, msg in enumerate(messages):
            pub.publish(msg)
            if i == len(messages) // 3:
                # Mid-run: the broker goes away (persisting its state) and comes back on the same port.
                broker.restart(downtime_s=1.0)
                restarted.set()
            time.sleep(0.002)
        assert pub.wait_acknowledged(60), "the broker never acknowledged every publish"
        assert pub.acknowledged_readings == readings.num_rows
    worker.join(90)
    assert not worker.is_alive()
    assert restarted.is_set() and stats["s"].reconnects >= 1

    landed = engine.read(SENSOR_READINGS)
    assert landed.num_rows == readings.num_rows  # none lost, none doubled (the key is unique in bronze)
    keys = landed.select(["building_id", "sensor_id", "ts"]).to_pylist()
    assert len({(k["building_id"], k["sensor_id"], k["ts"]) for k in keys}) == readings.num_rows
    assert pc.sum(landed.column("value")).as_py() == pytest.approx(pc.sum(readings.column("value")).as_py())
    assert engine.read(QUARANTINE_READINGS).num_rows == 0


def test_poison_messages_are_quarantined_and_never_block_the_stream(broker: Mosquitto, wattflow_home: Path) -> None:
    registry = small_registry(1)
    engine = get_engine()
    topic = "sites/site-a/buildings/b0/sensors/main_meter"
    good = {"metric": "energy", "ts": "2026-01-05T00:00:00Z", "value": 1.5, "unit": "kWh"}
    poison = [
        (topic, b"{not json", "malformed_json"),
        (topic, json.dumps({"metric": "energy", "value": 1.0}).encode(), "missing_field"),
        (topic, b'{"metric": "energy", "ts": "2026-01-05T00:15:00Z", "value": NaN}', "non_finite_value"),
        (topic, json.dumps({**good, "ts": "2026-01-05T00:30:00Z", "value": 2500.0}).encode(), "implausible_magnitude"),
        (topic, json.dumps({**good, "ts": "2099-01-01T00:00:00Z"}).encode(), "future_timestamp"),
        (topic, json.dumps([good, {**good, "value": 1.7}]).encode(), "conflicting_duplicate"),
        (topic, json.dumps([{**good, "ts": "2026-01-05T01:00:00Z"}] * 2).encode(), "duplicate"),
        ("sites/site-a/buildings/nowhere/sensors/x", json.dumps(good).encode(), "unknown_building"),
        (topic, json.dumps([42]).encode(), "not_a_reading"),
    ]
    after = [(topic, json.dumps({**good, "ts": f"2026-01-05T02:{m:02d}:00Z", "value": 1.0 + m / 100}).encode(), None) for m in (0, 15, 30, 45)]
    consumer = _consumer(broker, registry, engine, batch=3)  # small batches: poison shares batches with good rows
    worker = threading.Thread(target=lambda: consumer.run(idle_timeout=2.0))
    worker.start()
    assert consumer._connected.wait(10)
    import paho.mqtt.client as mqtt

    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    pub.connect(broker.host if hasattr(broker, "host") else "127.0.0.1", broker.port)
    pub.loop_start()
    for t, payload, _ in [*poison, *after]:
        pub.publish(t, payload, qos=1).wait_for_publish(5)
    pub.disconnect()
    pub.loop_stop()
    worker.join(30)
    assert not worker.is_alive()

    quarantined = engine.read(QUARANTINE_READINGS).to_pylist()
    checks = {q["check_name"] for q in quarantined}
    assert checks == {p[2] for p in poison}
    by_check = {q["check_name"]: q for q in quarantined}
    assert "not JSON" in by_check["malformed_json"]["reason"] and by_check["malformed_json"]["building_id"] == "b0"
    assert "'ts'" in by_check["missing_field"]["reason"]
    assert "Wh value sent as kWh" in by_check["implausible_magnitude"]["reason"]
    assert "1.7 conflicts with 1.5" in by_check["conflicting_duplicate"]["reason"]
    landed = engine.read(SENSOR_READINGS).to_pylist()
    # The first copy of each duplicate lands, then everything published after the poison.
    assert sorted(r["ts"].strftime("%H:%M") for r in landed) == ["00:00", "01:00", "02:00", "02:15", "02:30", "02:45"]
    assert {r["value"] for r in landed if r["ts"].strftime("%H:%M") == "00:00"} == {1.5}
    assert consumer.stats.readings == len(landed) + len(quarantined)


def test_simulator_replay_lands_and_a_second_replay_changes_nothing(broker: Mosquitto, wattflow_home: Path) -> None:
    from lakehouse.sources.mqtt import ingest_mqtt
    from lakehouse.sources.publish import simulate_and_publish

    engine = get_engine()
    # The first run creates the persistent session; from then on the broker queues for it while it is away.
    assert ingest_mqtt(broker=broker.address, idle_timeout=0.5).messages == 0
    published = simulate_and_publish(broker.address, buildings=2, start="2026-01-05", end="2026-01-06")
    assert published.acknowledged_readings == published.readings > 0
    first = ingest_mqtt(broker=broker.address, idle_timeout=1.5)
    assert first.readings == published.readings and first.landed == published.readings and first.quarantined == 0
    assert engine.read(SENSOR_READINGS).num_rows == published.readings
    version = engine.version(SENSOR_READINGS)

    simulate_and_publish(broker.address, buildings=2, start="2026-01-05", end="2026-01-06")
    second = ingest_mqtt(broker=broker.address, idle_timeout=1.5)
    assert second.readings == published.readings
    assert engine.version(SENSOR_READINGS) == version  # the same window again: no new Delta version
    assert engine.read(SENSOR_READINGS).num_rows == published.readings
