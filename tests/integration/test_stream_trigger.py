"""The ingest DAG's event-driven trigger against the real broker: the Kafka provider's trigger, as the
AssetWatcher configures it, fires on the first message with readings and tells the run which hours to land."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timezone
from types import SimpleNamespace

import pytest

pytestmark = pytest.mark.integration


def test_trigger_fires_on_readings_and_the_run_lands_their_hours(kafka_broker, kafka_topic, monkeypatch, wattflow_home) -> None:
    from confluent_kafka import Producer

    from lakehouse.engine import get_engine
    from lakehouse.registry_file import save_registry
    from lakehouse.schemas import SENSOR_READINGS
    from tests.integration.stream_fixtures import small_registry
    from wattflow import pipeline
    from wattflow.assets import window_from_context
    from wattflow.settings import get_settings, reset_settings
    from wattflow.stream_trigger import connection_environment, sensor_stream_asset

    topic = kafka_topic(partitions=1)
    monkeypatch.setenv("WATTFLOW_STREAM_TRIGGER__ENABLED", "true")
    monkeypatch.setenv("WATTFLOW_STREAM_TRIGGER__AUTO_OFFSET_RESET", "earliest")  # the messages are sent first
    monkeypatch.setenv("WATTFLOW_KAFKA__BOOTSTRAP_SERVERS", kafka_broker.address)
    monkeypatch.setenv("WATTFLOW_KAFKA__TOPIC", topic)
    reset_settings()
    for key, value in connection_environment(get_settings()).items():  # what airflow_environment gives Airflow
        monkeypatch.setenv(key, value)

    producer = Producer({"bootstrap.servers": kafka_broker.address})
    producer.produce(topic, b"{not json", key=b"b1")  # poison: nothing to land, so no run
    readings = [
        {"building_id": "b1", "sensor_id": "main_meter", "metric": "energy", "ts": "2026-01-05T10:15:00Z", "value": 1.5},
        {"building_id": "b1", "sensor_id": "main_meter", "metric": "energy", "ts": "2026-01-05T11:05:00Z", "value": 1.7},
    ]
    producer.produce(topic, json.dumps(readings).encode(), key=b"b1")
    assert producer.flush(30) == 0

    # The trigger exactly as the DAG's asset watcher builds it (serialized, then rebuilt as the triggerer does).
    [watcher] = sensor_stream_asset().watchers
    classpath, kwargs = watcher.trigger.serialize()
    module, _, name = classpath.rpartition(".")
    import importlib

    kwargs["poll_interval"] = 0.1  # after the poison message, do not sleep the production 5 s
    trigger = getattr(importlib.import_module(module), name)(**kwargs)

    async def first_event():
        agen = trigger.run()
        try:
            return await asyncio.wait_for(agen.__anext__(), 60)
        finally:
            await agen.aclose()
            await trigger.cleanup()

    event = asyncio.run(first_event())
    assert event.payload == {
        "topic": topic, "partition": 0, "offset": 1, "readings": 2,
        "start": "2026-01-05T10:00:00+00:00", "end": "2026-01-05T12:00:00+00:00",
    }
    # Airflow stores the payload in the asset event's extra; the triggered run lands those hours.
    asset_event = SimpleNamespace(extra={"from_trigger": True, "payload": event.payload})
    start, end = window_from_context({"triggering_asset_events": {"sensor_readings_topic": [asset_event]}})
    assert (start, end) == (datetime(2026, 1, 5, 10, tzinfo=timezone.utc), datetime(2026, 1, 5, 12, tzinfo=timezone.utc))

    # The run's one task (pipeline.ingest_sensors, Kafka source) drains the ingest group: the readings land,
    # the poison message goes to quarantine; the trigger's own group took nothing from it.
    save_registry(small_registry(2))
    monkeypatch.setenv("WATTFLOW_AIRFLOW__SENSOR_SOURCE", "kafka")
    monkeypatch.setenv("WATTFLOW_KAFKA__GROUP_ID", f"{topic}-ingest")
    monkeypatch.setenv("WATTFLOW_KAFKA__BATCH_MAX_AGE_S", "0.3")  # the drain stops 1.5 s after the last message
    reset_settings()
    result = pipeline.ingest_sensors(start, end)
    assert (result["source"], result["landed"], result["quarantined"]) == ("kafka", 2, 1)
    landed = get_engine().read(SENSOR_READINGS)
    assert sorted(landed.column("value").to_pylist()) == [1.5, 1.7]
