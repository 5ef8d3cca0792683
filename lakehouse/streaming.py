"""Kafka -> bronze.sensor_readings with Spark Structured Streaming: the cluster runner's stream path.

The query reads the sensor topics with Spark's Kafka source and lands every micro-batch in `foreachBatch`:
the batch's records (topic, partition, offset, key, value) come to the driver as Arrow, each record is
decoded by the same function the Python consumer group uses (`lakehouse.sources.kafka.decode_record`:
payload module, key as building, position for quarantine), and the batch lands through the same
`land_source_readings` (screen, calibration, validation, quarantine) with a `SparkEngine`, so the upsert
is delta-spark's MERGE on the contract key. There is no second copy of the parsing or validation.

Exactly once, across a kill at any point. Spark writes the batch's offsets to the checkpoint before the
batch runs and its commit after `foreachBatch` returns; a query killed in between runs the same batch
(same offsets, same records) again when restarted from the checkpoint. Landing is an upsert on the
reading key and a quarantine keyed by a hash of the source and the record as received (its topic,
partition and offset included), so the replay writes nothing twice: bronze ends as if the batch ran once.
The checkpoint lives under WATTFLOW_HOME (`streaming.checkpoint_dir`).

Run it with ``python -m lakehouse.streaming`` (or ``wattflow ingest kafka-stream``): ``--available-now``
drains what the topic holds and stops; without it the query runs on a processing-time trigger.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

import pyarrow as pa

from lakehouse.bronze import LandingResult
from wattflow.log import get_logger

log = get_logger(__name__)

RECORD_COLUMNS = ("topic", "partition", "offset", "key", "value")


def checkpoint_location(settings: Any) -> Path:
    path = Path(settings.streaming.checkpoint_dir).expanduser()
    return path if path.is_absolute() else (Path(settings.home) / path).resolve()


def source_name(topics: Sequence[str]) -> str:
    """The bronze `source` of a topic set: the Python consumer's name, so both paths land the same rows."""
    return "kafka:" + ",".join(topics)


def land_records(
    records: pa.Table, *, source: str, registry: Any, engine: Any, settings: Any, batch_id: str
) -> LandingResult:
    """Land one micro-batch of Kafka records (columns `RECORD_COLUMNS`) through the shared decoding and landing."""
    from lakehouse.sources.kafka import decode_record
    from lakehouse.sources.payload import readings_table
    from lakehouse.sources.screen import land_source_readings

    records = records.sort_by([("topic", "ascending"), ("partition", "ascending"), ("offset", "ascending")])
    columns = [records.column(c).to_pylist() for c in RECORD_COLUMNS]
    decoded, rejected = [], []
    for topic, partition, offset, key, value in zip(*columns):
        d = decode_record(topic, partition, offset, key, value)
        if d.readings:
            decoded.append(d)
        rejected.extend(d.rejected)
    return land_source_readings(
        readings_table(decoded), source=source, registry=registry, engine=engine, pre_rejected=rejected,
        batch_id=batch_id, now=datetime.now(timezone.utc), settings=settings,
    )


@dataclass
class StreamStats:
    batches: int = 0
    records: int = 0
    readings: int = 0
    landed: int = 0
    quarantined: int = 0
    batch_ids: list[int] = field(default_factory=list)
    reasons: dict[str, int] = field(default_factory=dict)


def start_query(
    settings: Any,
    *,
    bootstrap: str | None = None,
    topics: Sequence[str] | None = None,
    available_now: bool = False,
    max_offsets_per_trigger: int | None = None,
    registry_file: Any = None,
    spark: Any = None,
    on_batch: Callable[[int, LandingResult], None] | None = None,
    stats: StreamStats | None = None,
):
    """Start the Kafka -> bronze query on `spark` (default: the settings' session); returns the StreamingQuery."""
    from lakehouse.sources.mqtt import registry_file_loader
    from lakehouse.spark_engine import SparkEngine
    from lakehouse.spark_session import get_spark
    from lakehouse.engine import CommitRetry

    k, st = settings.kafka, settings.streaming
    topics = list(topics or [t.strip() for t in k.topic.split(",") if t.strip()])
    spark = spark or get_spark(settings)
    engine = SparkEngine(
        settings.lakehouse_uri, spark, settings.lakehouse.storage_options,
        prune_max_partition_values=settings.lakehouse.spark_merge_prune_max_partition_values,
        retry=CommitRetry.from_settings(settings.lakehouse),
    )
    registry = registry_file_loader(Path(registry_file) if registry_file else None)
    source = source_name(topics)
    stats = stats if stats is not None else StreamStats()

    def land_batch(batch_df: Any, batch_id: int) -> None:
        started = time.monotonic()
        records = batch_df.select(*RECORD_COLUMNS).toArrow()
        read_s = time.monotonic() - started
        result = land_records(records, source=source, registry=registry(), engine=engine, settings=settings,
                              batch_id=f"{source}-spark-{batch_id}")
        stats.batches += 1
        stats.batch_ids.append(batch_id)
        stats.records += records.num_rows
        stats.readings += result.received
        stats.landed += result.landed
        stats.quarantined += result.quarantined
        for name, n in result.reasons.items():
            stats.reasons[name] = stats.reasons.get(name, 0) + n
        # One line per landed batch (flushed): an operator, or a test that kills the query, sees progress.
        log.info("streaming batch landed", batch_id=batch_id, records=records.num_rows, landed=result.landed,
                 quarantined=result.quarantined, read_s=round(read_s, 2), seconds=round(time.monotonic() - started, 2))
        if on_batch is not None:
            on_batch(batch_id, result)

    reader = (
        spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", bootstrap or k.bootstrap_servers)
        .option("subscribe", ",".join(topics))
        .option("startingOffsets", st.starting_offsets)
        .option("maxOffsetsPerTrigger", str(max_offsets_per_trigger or st.max_offsets_per_trigger))
    )
    for name, value in k.client_config.items():  # security.protocol, sasl.*, ssl.*: the same as every client
        reader = reader.option(f"kafka.{name}", value)
    writer = reader.load().writeStream.foreachBatch(land_batch).option("checkpointLocation", str(checkpoint_location(settings)))
    writer = writer.trigger(availableNow=True) if available_now else writer.trigger(processingTime=f"{st.trigger_interval_s} seconds")
    query = writer.queryName(f"kafka_to_bronze_{abs(hash(source)) % 10_000}").start()
    return query


def stream_kafka_to_bronze(
    settings: Any | None = None,
    *,
    bootstrap: str | None = None,
    topics: Sequence[str] | None = None,
    available_now: bool = False,
    max_offsets_per_trigger: int | None = None,
    registry_file: Any = None,
    spark: Any = None,
    timeout_s: float | None = None,
) -> StreamStats:
    """Run the query until it stops (`available_now`: the topic is drained), `timeout_s`, or Ctrl-C."""
    from wattflow.settings import get_settings

    settings = settings or get_settings()
    stats = StreamStats()
    query = start_query(settings, bootstrap=bootstrap, topics=topics, available_now=available_now,
                        max_offsets_per_trigger=max_offsets_per_trigger, registry_file=registry_file, spark=spark,
                        stats=stats)
    try:
        query.awaitTermination(timeout_s)
    except KeyboardInterrupt:
        pass
    finally:
        if query.isActive:
            query.stop()
    if query.exception() is not None:
        raise RuntimeError(f"the streaming query failed: {query.exception()}")
    return stats


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m lakehouse.streaming`: Kafka -> bronze with Spark Structured Streaming (settings give defaults)."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--bootstrap", help="Kafka bootstrap servers; default kafka.bootstrap_servers")
    parser.add_argument("--topic", help="comma-separated topics; default kafka.topic")
    parser.add_argument("--available-now", action="store_true", help="drain what the topic holds, then stop")
    parser.add_argument("--max-offsets-per-trigger", type=int, help="records per micro-batch")
    parser.add_argument("--timeout", type=float, help="stop after this many seconds")
    args = parser.parse_args(argv)
    topics = [t.strip() for t in args.topic.split(",")] if args.topic else None
    stats = stream_kafka_to_bronze(bootstrap=args.bootstrap, topics=topics, available_now=args.available_now,
                                   max_offsets_per_trigger=args.max_offsets_per_trigger, timeout_s=args.timeout)
    print(f"{stats.batches} batches, {stats.records:,} records, {stats.readings:,} readings: {stats.landed:,} landed, "
          f"{stats.quarantined:,} quarantined", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
