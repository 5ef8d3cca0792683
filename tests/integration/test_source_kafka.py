"""Kafka into bronze against the session's real broker (Kafka 4, KRaft): the broker SIGKILLed and restarted
mid-stream, the consumer SIGKILLed mid-batch and restarted, a rebalance, poison messages, metrics, and the
publishers (`simulate publish --kafka`, forecasts keyed by building).

Every test has its own topic and group on the one broker (`kafka_broker`, `kafka_topic` in tests/conftest.py).
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from lakehouse.delta_rs import DeltaRsEngine
from lakehouse.schemas import QUARANTINE_READINGS, SENSOR_READINGS
from lakehouse.sources.kafka import KafkaIngest, KafkaPublisher, reading_messages
from tests.integration.stream_fixtures import readings_table, small_registry

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
GOOD = {"metric": "energy", "sensor_id": "main_meter", "ts": "2026-01-05T00:00:00Z", "value": 1.5, "unit": "kWh"}
# (payload, check it must be quarantined under); produced to partition 0 between good messages.
POISON = [
    (b"{not json", "malformed_json"),
    (json.dumps({"format": "wattflow.readings/v1", "building_id": "b0", "sensors": [{"sensor_id": "main_meter", "metric": "energy", "unit": "kWh"}],
                 "sensor": [0, 0], "ts": [1767571200], "value": [1.0, 2.0]}).encode(), "malformed_batch"),
    (json.dumps([42]).encode(), "not_a_reading"),
]


def _stream(readings: pa.Table) -> list[tuple[str, bytes, int]]:
    """Building b0 in the compact batch form, b1 as JSON readings: one consumer takes both."""
    out = []
    for building, form in (("b0", "batch"), ("b1", "json")):
        part = readings.filter(pc.equal(readings.column("building_id"), building))
        out += [(m.key, m.payload, m.readings) for m in reading_messages(part, readings_per_message=25, payload_format=form)]
    random.Random(19).shuffle(out)  # buildings interleaved
    return out


def _wait_for(root: Path, readings: int, quarantined: int, timeout: float = 90.0) -> None:
    """Until bronze holds `readings` rows and quarantine `quarantined` (read on an engine of its own)."""
    engine = DeltaRsEngine(str(root))
    deadline = time.monotonic() + timeout
    while True:
        now = (engine.read(SENSOR_READINGS).num_rows, engine.read(QUARANTINE_READINGS).num_rows)
        if now == (readings, quarantined):
            return
        assert time.monotonic() < deadline, f"stalled at {now} (bronze, quarantine) of {(readings, quarantined)}"
        time.sleep(0.3)


def _publish(address: str, topic: str, messages, *, pace_s: float = 0.0, poison_every: int = 0, during=None) -> dict:
    """Publish every message (acks=all); poison messages to partition 0 every `poison_every` messages.
    Returns acknowledged readings and the (partition, offset) of each poison message as the broker stored it."""
    pub = KafkaPublisher(address, linger_ms=5)
    poison_at: dict[str, tuple[int, int]] = {}
    poison_iter = iter(POISON)

    def poison_delivered(check):
        def cb(err, msg):
            assert err is None, err
            poison_at[check] = (msg.partition(), msg.offset())
        return cb

    for i, (key, payload, n) in enumerate(messages):
        pub.publish(topic, key, payload, n)
        if poison_every and i % poison_every == poison_every // 2:
            item = next(poison_iter, None)
            if item is not None:
                pub.producer.produce(topic, item[0], key=b"b0", partition=0, on_delivery=poison_delivered(item[1]))
        if during is not None:
            during(i)
        time.sleep(pace_s)
    assert pub.flush(120) == 0, "the broker never acknowledged every message"
    assert pub.failed_messages == 0, pub.errors
    return {"acknowledged_readings": pub.acknowledged_readings, "poison": poison_at}


def _committed_and_end(address: str, topic: str, group: str) -> tuple[list[int], list[int]]:
    """The group's committed offset and the end offset of each partition."""
    from confluent_kafka import Consumer, TopicPartition

    probe = Consumer({"bootstrap.servers": address, "group.id": group, "enable.auto.commit": False})
    try:
        parts = [TopicPartition(topic, p) for p in probe.list_topics(topic, timeout=10).topics[topic].partitions]
        committed = probe.committed(parts, timeout=10)
        ends = [probe.get_watermark_offsets(tp, timeout=10)[1] for tp in parts]
        # A partition nothing was ever written to has no committed offset (-1001): its end is 0.
        return [max(c.offset, 0) for c in committed], ends
    finally:
        probe.close()


def _assert_exactly_once(engine: DeltaRsEngine, readings: pa.Table, poison_at: dict[str, tuple[int, int]], topic: str) -> None:
    landed = engine.read(SENSOR_READINGS)
    assert landed.num_rows == readings.num_rows  # none lost, none doubled (count)
    key = lambda t: {(r["building_id"], r["sensor_id"], r["ts"]) for r in t.select(["building_id", "sensor_id", "ts"]).to_pylist()}  # noqa: E731
    assert key(landed) == key(readings)  # the exact key set
    assert pc.sum(landed.column("value")).as_py() == pytest.approx(pc.sum(readings.column("value")).as_py())
    quarantined = engine.read(QUARANTINE_READINGS).to_pylist()
    assert sorted(q["check_name"] for q in quarantined) == sorted(poison_at)  # each poison message once
    for q in quarantined:
        raw = json.loads(q["raw"])
        assert (raw["topic"], raw["partition"], raw["offset"]) == (topic, *poison_at[q["check_name"]])


def test_broker_killed_and_restarted_mid_stream_lands_every_acknowledged_reading_once(kafka_broker, kafka_topic, tmp_path: Path, settings) -> None:
    topic, group = kafka_topic(3), "g-broker-kill"
    readings = readings_table(2, 1500)  # 6,000 readings in 240 messages
    engine = DeltaRsEngine(str(tmp_path / "lake"))
    registry = small_registry(2)
    consumer = KafkaIngest(bootstrap=kafka_broker.address, topics=[topic], group_id=group, engine=engine,
                           registry_loader=lambda: registry, batch_max_readings=500, batch_max_age_s=0.2, settings=settings)
    worker = threading.Thread(target=consumer.run, daemon=True)  # until stop(): the restart pauses the stream for seconds
    worker.start()
    assert consumer.assigned.wait(60)
    messages = _stream(readings)
    killed = []

    def kill_at_a_third(i: int) -> None:
        if i == len(messages) // 3:
            deadline = time.monotonic() + 60
            while consumer.stats.landed == 0:  # at least one batch landed and its offsets committed
                assert time.monotonic() < deadline
                time.sleep(0.05)
            landed_before = consumer.stats.landed
            kafka_broker.kill()  # SIGKILL: no clean shutdown, the restart recovers the logs
            assert kafka_broker.process is None
            time.sleep(1.0)
            kafka_broker.start(timeout=120)
            killed.append(landed_before)

    published = _publish(kafka_broker.address, topic, messages, pace_s=0.003, poison_every=60, during=kill_at_a_third)
    assert published["acknowledged_readings"] == readings.num_rows and len(published["poison"]) == len(POISON)
    _wait_for(tmp_path / "lake", readings.num_rows, len(POISON))
    consumer.stop()
    worker.join(60)
    assert not worker.is_alive()
    assert killed and 0 < killed[0] < readings.num_rows  # the kill came mid-stream, after some batches had landed

    _assert_exactly_once(engine, readings, published["poison"], topic)
    committed, ends = _committed_and_end(kafka_broker.address, topic, group)
    assert committed == ends  # nothing is left for a restart to read


def test_consumer_killed_mid_batch_and_restarted_lands_each_reading_once(kafka_broker, kafka_topic, tmp_path: Path) -> None:
    topic, group = kafka_topic(3), "g-consumer-kill"
    root, home = tmp_path / "lake", tmp_path / "home"
    readings = readings_table(2, 1500)  # 6,000 readings
    messages = _stream(readings)

    def start(idle: float) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "tests.integration.kafka_consumer", kafka_broker.address, topic, group, str(root), str(home), str(idle)],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )

    first = start(60)
    assert first.stdout is not None and first.stdout.readline().strip() == "assigned"  # only our lines go to stdout
    published: dict = {}
    killed = threading.Event()
    # Paced (about two seconds in all) so the stream is still flowing when the kill comes. The last third
    # waits for the kill: on a busy machine the first batch can otherwise take in the whole stream, and
    # the restart would have nothing left to read.
    tail = len(messages) * 2 // 3
    publisher = threading.Thread(target=lambda: published.update(_publish(
        kafka_broker.address, topic, messages, pace_s=0.006, poison_every=60,
        during=lambda i: killed.wait(60) if i == tail else None)))
    publisher.start()
    assert first.stdout.readline().startswith("commit")  # at least one batch is in bronze and its offsets committed
    time.sleep(random.Random(19).uniform(0.0, 0.3))
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    killed.set()
    assert first.returncode == -signal.SIGKILL
    publisher.join(60)
    assert published["acknowledged_readings"] == readings.num_rows

    engine = DeltaRsEngine(str(root))
    mid = engine.read(SENSOR_READINGS)  # readable at its last version, no key twice
    assert 0 < mid.num_rows < readings.num_rows
    assert len({(r["building_id"], r["sensor_id"], r["ts"]) for r in mid.select(["building_id", "sensor_id", "ts"]).to_pylist()}) == mid.num_rows

    second = start(3.0)  # same group: it starts at the committed offsets and reads the rest (and the unlanded tail) again
    out, err = second.communicate(timeout=120)
    assert second.returncode == 0, err
    assert "assigned" in out
    _assert_exactly_once(engine, readings, published["poison"], topic)
    committed, ends = _committed_and_end(kafka_broker.address, topic, group)
    assert committed == ends  # nothing is left for a restart to read


def test_rebalance_commits_what_is_landed_and_loses_nothing(kafka_broker, kafka_topic, tmp_path: Path, settings) -> None:
    from confluent_kafka import Producer

    topic, group, partitions = kafka_topic(4), "g-rebalance", 4
    readings = readings_table(2, 900)  # 3,600 readings
    engine = DeltaRsEngine(str(tmp_path / "lake"))
    registry = small_registry(2)
    messages = _stream(readings)
    producer = Producer({"bootstrap.servers": kafka_broker.address, "acks": "all", "enable.idempotence": True})

    def publish(part: list) -> None:  # round-robin over the partitions, so both members get some
        for i, (key, payload, _) in enumerate(part):
            producer.produce(topic, payload, key=key.encode(), partition=i % partitions)
        assert producer.flush(30) == 0

    def member() -> KafkaIngest:
        return KafkaIngest(bootstrap=kafka_broker.address, topics=[topic], group_id=group, engine=engine, registry_loader=lambda: registry,
                           batch_max_readings=400, batch_max_age_s=0.3, settings=settings)

    def until(condition, what: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, what
            time.sleep(0.05)

    first, second = member(), member()
    t1 = threading.Thread(target=first.run, daemon=True)
    t1.start()
    assert first.assigned.wait(60)
    third = len(messages) // 3
    publish(messages[:third])
    until(lambda: first.stats.landed > 0, "the first member landed nothing")
    t2 = threading.Thread(target=second.run, daemon=True)
    t2.start()  # joins: the first member lands what it holds, commits, and gives up half the partitions
    assert second.assigned.wait(60)
    until(lambda: first.stats.rebalances >= 1, "the first member was never asked to give partitions up")
    publish(messages[third : 2 * third])
    until(lambda: second.stats.landed > 0, "the second member landed nothing")
    landed_by_first = first.stats.landed
    first.stop()  # leaves: its landed offsets are committed, the second takes every partition
    t1.join(60)
    assert not t1.is_alive()
    publish(messages[2 * third :])
    _wait_for(tmp_path / "lake", readings.num_rows, 0)
    second.stop()
    t2.join(60)

    assert landed_by_first > 0 and second.stats.rebalances >= 1
    landed = engine.read(SENSOR_READINGS)
    assert landed.num_rows == readings.num_rows
    key = lambda t: {(r["building_id"], r["sensor_id"], r["ts"]) for r in t.select(["building_id", "sensor_id", "ts"]).to_pylist()}  # noqa: E731
    assert key(landed) == key(readings)
    committed, ends = _committed_and_end(kafka_broker.address, topic, group)
    assert committed == ends and sum(ends) == len(messages)


def test_poison_never_blocks_its_partition_and_metrics_report_lag_and_rate(kafka_broker, kafka_topic, tmp_path: Path, settings) -> None:
    from confluent_kafka import Producer

    topic, group = kafka_topic(1), "g-poison"  # one partition: poison and good readings share it
    engine = DeltaRsEngine(str(tmp_path / "lake"))
    registry = small_registry(1)
    producer = Producer({"bootstrap.servers": kafka_broker.address, "acks": "all"})
    offsets = {}
    sent = [
        ("good-0", json.dumps({**GOOD, "ts": "2026-01-05T00:00:00Z"}).encode()),
        ("malformed_json", POISON[0][0]),
        ("unknown_sensor", json.dumps({**GOOD, "sensor_id": "nope"}).encode()),
        ("good-1", json.dumps({**GOOD, "ts": "2026-01-05T00:15:00Z", "value": 1.6}).encode()),
        ("malformed_batch", POISON[1][0]),
        ("good-2", json.dumps({**GOOD, "ts": "2026-01-05T00:30:00Z", "value": 1.7}).encode()),
    ]
    for name, payload in sent:
        producer.produce(topic, payload, key=b"b0", on_delivery=lambda err, msg, name=name: offsets.__setitem__(name, msg.offset()))
    assert producer.flush(30) == 0
    consumer = KafkaIngest(bootstrap=kafka_broker.address, topics=[topic], group_id=group, engine=engine, registry_loader=lambda: registry,
                           batch_max_readings=2, batch_max_age_s=0.2, poll_max_messages=1, settings=settings, lag_interval_s=0.1)
    lags: list[int] = []
    set_lag = consumer.metrics.set_lag
    consumer.metrics.set_lag = lambda t, p, lag: (lags.append(lag), set_lag(t, p, lag))
    stats = consumer.run(idle_timeout=2.0)

    landed = sorted((r["ts"].strftime("%H:%M"), r["value"]) for r in engine.read(SENSOR_READINGS).to_pylist())
    assert landed == [("00:00", 1.5), ("00:15", 1.6), ("00:30", 1.7)]  # the good ones on both sides of the poison
    quarantined = {q["check_name"]: q for q in engine.read(QUARANTINE_READINGS).to_pylist()}
    assert set(quarantined) == {"malformed_json", "unknown_sensor", "malformed_batch"}
    for check in ("malformed_json", "malformed_batch"):
        raw = json.loads(quarantined[check]["raw"])
        assert (raw["topic"], raw["partition"], raw["offset"]) == (topic, 0, offsets[check])
        assert quarantined[check]["building_id"] == "b0"  # from the message key
    assert "'sensor', 'ts' and 'value' must have one entry per reading" in quarantined["malformed_batch"]["reason"]
    assert (stats.messages, stats.landed, stats.quarantined) == (6, 3, 3)
    committed, ends = _committed_and_end(kafka_broker.address, topic, group)
    assert committed == ends  # nothing is left for a restart to read  # the poison's offsets were committed with their batch

    from prometheus_client.parser import text_string_to_metric_families

    samples = {(m.name, tuple(sorted(m.labels.items()))): m.value
               for family in text_string_to_metric_families(consumer.metrics.text()) for m in family.samples}
    assert samples[("wattflow_kafka_readings_landed_total", (("group", group),))] == 3
    assert samples[("wattflow_kafka_readings_quarantined_total", (("group", group),))] == 3
    assert samples[("wattflow_kafka_consumer_lag", (("group", group), ("partition", "0"), ("topic", topic)))] == 0  # all committed
    assert max(lags) > 0 and lags[-1] == 0  # behind while the small batches landed one by one, then caught up
    assert samples[("wattflow_kafka_landed_readings_per_second", (("group", group),))] > 0


def test_simulate_publish_kafka_then_ingest_kafka_lands_the_portfolio_and_a_replay_changes_nothing(
    kafka_broker, kafka_topic, wattflow_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from lakehouse.engine import get_engine
    from wattflow.cli import app
    from wattflow.settings import reset_settings

    topic = kafka_topic(3)
    monkeypatch.setenv("WATTFLOW_KAFKA__BOOTSTRAP_SERVERS", kafka_broker.address)
    monkeypatch.setenv("WATTFLOW_KAFKA__TOPIC", topic)
    monkeypatch.setenv("WATTFLOW_KAFKA__GROUP_ID", "g-cli")
    reset_settings()
    runner = CliRunner()
    published = runner.invoke(app, ["simulate", "publish", "--kafka", "--buildings", "2", "--start", "2026-01-05", "--end", "2026-01-06"])
    assert published.exit_code == 0, published.output
    sent = int(published.output.split("published ")[1].split(" readings")[0].replace(",", ""))
    assert f"broker acknowledged {sent:,}" in published.output and sent > 0
    first = runner.invoke(app, ["ingest", "kafka", "--idle-timeout", "2"])
    assert first.exit_code == 0, first.output
    assert f"{sent:,} readings: {sent:,} landed, 0 quarantined" in first.output
    engine = get_engine()
    assert engine.read(SENSOR_READINGS).num_rows == sent
    version = engine.version(SENSOR_READINGS)

    again = runner.invoke(app, ["simulate", "publish", "--kafka", "--buildings", "2", "--start", "2026-01-05", "--end", "2026-01-06",
                                "--payload-format", "json", "--readings-per-message", "40"])
    assert again.exit_code == 0, again.output
    second = runner.invoke(app, ["ingest", "kafka", "--idle-timeout", "2"])
    assert f"{sent:,} readings: {sent:,} landed" in second.output  # the replay only, from the committed offsets on
    assert engine.version(SENSOR_READINGS) == version  # the same readings again: no new Delta version
    assert engine.read(SENSOR_READINGS).num_rows == sent


def test_no_broker_is_one_clear_line(wattflow_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from wattflow.cli import app
    from wattflow.ports import free_port
    from wattflow.settings import reset_settings

    monkeypatch.setenv("WATTFLOW_KAFKA__BOOTSTRAP_SERVERS", f"127.0.0.1:{free_port()}")
    monkeypatch.setenv("WATTFLOW_KAFKA__CONNECT_TIMEOUT_S", "2")
    reset_settings()
    result = CliRunner().invoke(app, ["ingest", "kafka", "--idle-timeout", "1"])
    assert result.exit_code == 1
    assert "no Kafka broker answered at 127.0.0.1:" in result.output and "WATTFLOW_KAFKA__BOOTSTRAP_SERVERS" in result.output
    assert "Traceback" not in result.output


def test_forecasts_are_published_one_message_per_building_keyed_by_building(kafka_broker, kafka_topic, settings) -> None:
    import pandas as pd
    from confluent_kafka import Consumer

    from lakehouse.sources.kafka import FORECAST_FORMAT, publish_forecasts

    topic = kafka_topic(3)
    issued = pd.Timestamp("2026-01-06T00:00:00Z")
    frame = pd.DataFrame([
        {"building_id": b, "issued_at": issued, "ts": issued + pd.Timedelta(hours=h), "horizon_h": h + 1, "yhat": 10.0 * i + h,
         "yhat_p10": 9.0, "yhat_p50": 10.0, "yhat_p90": 11.0, "model_name": "lstm", "model_version": "3", "is_fallback": False}
        for i, b in enumerate(("b0", "b1", "b2")) for h in range(24)
    ])
    assert publish_forecasts(frame, settings, bootstrap=kafka_broker.address, topic=topic) == 3

    consumer = Consumer({"bootstrap.servers": kafka_broker.address, "group.id": "g-forecast-reader", "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    got = []
    deadline = time.monotonic() + 30
    while len(got) < 3 and time.monotonic() < deadline:
        got += [m for m in consumer.consume(10, 1.0) if m.error() is None]
    consumer.close()
    by_key = {m.key().decode(): json.loads(m.value()) for m in got}
    assert sorted(by_key) == ["b0", "b1", "b2"]
    doc = by_key["b1"]
    assert (doc["format"], doc["building_id"], doc["issued_at"], doc["model_version"]) == (FORECAST_FORMAT, "b1", "2026-01-06T00:00:00Z", "3")
    assert [p["horizon_h"] for p in doc["points"]] == list(range(1, 25))
    assert doc["points"][5] == {"ts": "2026-01-06T05:00:00Z", "horizon_h": 6, "yhat": 15.0, "yhat_p10": 9.0, "yhat_p50": 10.0, "yhat_p90": 11.0}
