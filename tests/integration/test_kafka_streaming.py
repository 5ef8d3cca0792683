"""Spark Structured Streaming, Kafka -> bronze: SIGKILLed mid-stream and restarted from its checkpoint, the
query leaves bronze identical (content hash) to what the Python consumer group lands from the same topic.

Both runs of the query are processes of their own on `local[1]` (the one that is killed must be; the restart
as one too costs less than driving the session's shared cluster), one after the other."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow.compute as pc
import pytest

from lakehouse.engine import get_engine
from lakehouse.registry_file import save_registry
from lakehouse.schemas import QUARANTINE_READINGS, SENSOR_READINGS
from tests.integration.stream_fixtures import readings_table, small_registry
from wattflow.settings import LakehouseSettings, Settings

pytestmark = [pytest.mark.integration, pytest.mark.spark, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]
PER_BATCH = 13  # Kafka records per micro-batch: the 25 records take two batches (each batch costs a few Spark jobs)


def content_hash(engine) -> tuple[int, str, list[tuple]]:
    """Rows, a hash of bronze's reading content (bookkeeping columns aside) and the quarantine's (id, check)."""
    table = engine.read(SENSOR_READINGS).select(["building_id", "sensor_id", "metric", "ts", "value", "unit", "source"])
    rows = table.sort_by([(c, "ascending") for c in ("building_id", "sensor_id", "metric", "ts")]).to_pylist()
    digest = hashlib.sha256(json.dumps(rows, default=str).encode()).hexdigest()
    quarantine = engine.read(QUARANTINE_READINGS)
    return len(rows), digest, sorted(zip(quarantine.column("record_id").to_pylist(), quarantine.column("check_name").to_pylist()))


def _publish(bootstrap: str, topic: str) -> int:
    from lakehouse.sources.kafka import KafkaPublisher, reading_messages

    readings = readings_table(2, 96)  # 384 readings
    sent = 0
    with KafkaPublisher(bootstrap) as pub:
        for building, form in (("b0", "batch"), ("b1", "json")):  # both payload forms on one topic
            part = readings.filter(pc.equal(readings.column("building_id"), building))
            for msg in reading_messages(part, readings_per_message=16, payload_format=form):
                pub.publish(topic, msg.key, msg.payload, msg.readings)
                sent += msg.readings
        pub.publish(topic, "b0", b"{not json", 0)  # poison: quarantined with its topic, partition and offset
        assert pub.flush(60) == 0
    return sent


def test_killed_and_restarted_query_lands_what_the_python_consumer_lands(kafka_broker, kafka_topic, tmp_path: Path) -> None:
    from lakehouse.sources.kafka import KafkaIngest

    topic = kafka_topic(partitions=3)
    sent = _publish(kafka_broker.address, topic)
    registry = small_registry(2)
    jars_dir = os.environ.get("WATTFLOW_LAKEHOUSE__SPARK_JARS_DIR") or str(Path.home() / ".cache" / "wattflow" / "jars")

    # The Python consumer group's result, in its own home.
    python_home = Settings(home=tmp_path / "python-home")
    python_engine = get_engine(python_home)
    consumer = KafkaIngest(bootstrap=kafka_broker.address, topics=[topic], group_id=f"{topic}-python", engine=python_engine,
                           registry_loader=lambda: registry, settings=python_home)
    stats = consumer.run(idle_timeout=3)
    assert stats.landed == sent and stats.quarantined == 1
    expected = content_hash(python_engine)
    assert expected[0] == sent

    # The streaming query in its own process and home, SIGKILLed (its JVM with it) once a batch has landed.
    spark_home = tmp_path / "spark-home"
    registry_file = spark_home / "config" / "buildings.yaml"
    save_registry(registry, registry_file)
    env = {
        **os.environ, "PYTHONPATH": str(REPO), "WATTFLOW_HOME": str(spark_home),
        "WATTFLOW_LAKEHOUSE__SPARK_JARS_DIR": jars_dir, "WATTFLOW_LAKEHOUSE__SPARK_MASTER": "local[1]",
        "WATTFLOW_LAKEHOUSE__SPARK_CONF": json.dumps({"spark.driver.extraJavaOptions": "-XX:TieredStopAtLevel=1"}),
    }
    command = [sys.executable, "-m", "lakehouse.streaming", "--bootstrap", kafka_broker.address, "--topic", topic,
               "--available-now", "--max-offsets-per-trigger", str(PER_BATCH)]
    proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    landed_lines: list[str] = []
    output: list[str] = []

    def watch() -> None:
        for line in proc.stdout:
            output.append(line)
            if "streaming batch landed" in line:
                landed_lines.append(line)
                os.killpg(proc.pid, signal.SIGKILL)  # mid-stream: Spark may not have committed this batch yet
                return

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    watcher.join(240)
    if not landed_lines:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail("the streaming query landed no batch within 240 s:\n" + "".join(output[-30:]))
    assert proc.wait(30) == -signal.SIGKILL
    spark_settings = Settings(home=spark_home, lakehouse=LakehouseSettings(spark_jars_dir=jars_dir))
    partial = content_hash(get_engine(spark_settings))[0]
    assert 0 < partial < sent, f"killed after {partial} of {sent} readings: not mid-stream"

    # Restarted from the same checkpoint, as a fresh process: the rest lands, the killed batch's replay writes nothing twice.
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "quarantined" in done.stdout and "batches" in done.stdout
    assert content_hash(get_engine(spark_settings)) == expected
