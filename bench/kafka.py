"""Kafka stream benchmark: producer process -> local Kafka 4 broker -> `KafkaIngest` -> committed Delta rows.

A producer process offers readings at a sustained rate for `--seconds` (building gateways packing
`--readings-per-message` readings of one building into a message, compact batch form by default, keyed by
building); the consumer group in this process commits micro-batches to bronze (screen + validate +
delta-rs upsert) and commits offsets after each Delta commit. It reports:

- offered_per_s: readings the producer had acknowledged by the broker / its sending time;
- readings_per_s: readings committed to Delta / (last Delta commit - first publish): sustained end to end,
  it cannot exceed the offered rate, so offer more to find capacity;
- p50_s / p99_s: per message, Delta commit time - the message's producer timestamp (one host, one clock);
- lost: acknowledged readings not in bronze afterwards; doubled: bronze rows beyond one per reading key.

The readings replay a portfolio's backlog: every building's clock advances `--interval-minutes` per step, so a
run spans days (bronze is partitioned by date; a live stream puts a whole day in one partition, see
`--interval-minutes 1`).

    python bench/kafka.py [--rate 105000] [--seconds 60] [--readings-per-message 500] [--json PATH]

Each run uses a fresh broker and an empty lakehouse. The machine is shared: figures move with its load.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

SENSORS = (("main_meter", "energy", "kWh"), ("zone_temp", "indoor_temperature", "degC"), ("zone_rh", "indoor_humidity", "%"),
           ("co2", "co2", "ppm"), ("people", "occupancy", "people"))
TARGET_READINGS_PER_S = 100_000
TARGET_P99_S = 2.0
START_EPOCH_S = 1_767_571_200  # 2026-01-05T00:00:00Z


def _payload(building: int, first_step: int, steps: int, interval_s: int, payload_format: str) -> tuple[bytes, int]:
    """One gateway message: `steps` time steps of every sensor of one building (built with NumPy: the
    producer shares the machine with the consumer, so it should cost little)."""
    import numpy as np

    from lakehouse.sources.payload import BATCH_FORMAT

    k = np.arange(first_step, first_step + steps)
    t = START_EPOCH_S + k * interval_s
    per_sensor = np.stack([0.5 + (k % 60) / 100, 21.0 + (k % 10) / 10, np.full(steps, 45.0), 600.0 + k % 50, (k % 30).astype(float)], axis=1)
    ts, sensor, value = np.repeat(t, len(SENSORS)).tolist(), np.tile(np.arange(len(SENSORS)), steps).tolist(), per_sensor.ravel().tolist()
    if payload_format == "batch":
        doc = {"format": BATCH_FORMAT, "building_id": f"b{building:04d}",
               "sensors": [{"sensor_id": s, "metric": m, "unit": u} for s, m, u in SENSORS],
               "sensor": sensor, "ts": ts, "value": value}
        return json.dumps(doc, separators=(",", ":")).encode(), len(ts)
    rows = [{"sensor_id": SENSORS[s][0], "metric": SENSORS[s][1], "unit": SENSORS[s][2],
             "ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t)), "value": v} for s, t, v in zip(sensor, ts, value)]
    return json.dumps(rows, separators=(",", ":")).encode(), len(rows)


def _producer(bootstrap: str, topic: str, rate: float, seconds: float, per_message: int, n_buildings: int,
              interval_s: int, payload_format: str, result_path: str) -> None:
    """Offer `rate` readings/s for `seconds`; write what the broker acknowledged (message ranges) to result_path."""
    from lakehouse.sources.kafka import KafkaPublisher

    steps = max(1, per_message // len(SENSORS))
    acked: list[tuple[int, int, int]] = []  # (building, first step, steps) of each acknowledged message
    pub = KafkaPublisher(bootstrap, linger_ms=10)
    sent = step = n = 0
    start = time.time()
    deadline = start + seconds
    while time.time() < deadline:
        for b in range(n_buildings):
            payload, readings = _payload(b, step, steps, interval_s, payload_format)

            def delivered(err, msg, ident=(b, step, steps)) -> None:
                if err is None:
                    acked.append(ident)

            while True:
                try:
                    pub.producer.produce(topic, payload, key=f"b{b:04d}".encode(), on_delivery=delivered)
                    break
                except BufferError:  # the local queue is full: let deliveries drain it
                    pub.producer.poll(0.05)
            pub.producer.poll(0)
            n += 1
            sent += readings
            ahead = sent / rate - (time.time() - start) if rate else 0
            if ahead > 0:
                time.sleep(ahead)
            if time.time() >= deadline:
                break
        step += steps
    sending_s = time.time() - start
    pub.producer.flush(120)
    Path(result_path).write_text(json.dumps({"acked": acked, "sent_readings": sent, "messages": n, "sending_s": sending_s,
                                             "first_publish": start}))


def run_once(args) -> dict:
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    from lakehouse.buildings import Building, BuildingRegistry, Sensor
    from lakehouse.delta_rs import DeltaRsEngine
    from lakehouse.kafka_broker import KafkaBroker
    from lakehouse.schemas import SENSOR_READINGS
    from lakehouse.sources.kafka import KafkaIngest
    from wattflow.settings import KafkaSettings, LakehouseSettings, Settings

    registry = BuildingRegistry(buildings=[
        Building(building_id=f"b{b:04d}", name=f"bench {b}", site_id="bench", timezone="UTC", country="BE", use_type="office",
                 floor_area_m2=5000.0, latitude=50.8, longitude=4.4, grid_emission_factor_kg_per_kwh=0.17, tariff_per_kwh=0.2,
                 currency="EUR", sensors=[Sensor(sensor_id=s, metric=m, unit=u) for s, m, u in SENSORS])
        for b in range(args.buildings)
    ])
    jars = os.environ.get("WATTFLOW_LAKEHOUSE__SPARK_JARS_DIR") or str(Path.home() / ".cache" / "wattflow" / "jars")
    with tempfile.TemporaryDirectory(prefix="wattflow-bench-kafka-") as tmp:
        settings = Settings(home=Path(tmp) / "home", lakehouse=LakehouseSettings(spark_jars_dir=jars),
                            kafka=KafkaSettings(broker_heap="1g"))
        engine = DeltaRsEngine(str(Path(tmp) / "lakehouse"))
        with KafkaBroker(Path(tmp) / "broker", settings=settings) as broker:
            topic = "bench-readings"
            broker.create_topics([topic], args.partitions)
            latencies: list[tuple[float, int]] = []
            commits: list[float] = []
            landed = [0]

            def on_commit(batch) -> None:
                if args.verbose:
                    ages = [batch.committed_at - p for *_, p in batch.message_meta if p is not None]
                    print(f"batch {batch.readings:>7,} readings, opened {batch.committed_at - batch.opened_at:5.2f} s before commit, "
                          f"oldest message {max(ages, default=0):5.2f} s", file=sys.stderr)
                commits.append(batch.committed_at)
                per_msg = batch.readings / max(1, batch.messages)
                for _, _, _, produced in batch.message_meta:
                    if produced is not None:
                        latencies.append((batch.committed_at - produced, per_msg))
                landed[0] += batch.result.landed

            ingest = KafkaIngest(bootstrap=broker.address, topics=[topic], group_id="bench", engine=engine,
                                 registry_loader=lambda: registry, batch_max_readings=args.batch_readings,
                                 batch_max_age_s=args.batch_age, backlog_factor=args.backlog_factor,
                                 on_commit=on_commit, settings=settings)
            consumer = threading.Thread(target=ingest.run, daemon=True)
            consumer.start()
            if not ingest.assigned.wait(60):
                raise SystemExit("the consumer group got no partitions within 60 s")
            result_path = str(Path(tmp) / "produced.json")
            producer = mp.get_context("spawn").Process(
                target=_producer,
                args=(broker.address, topic, args.rate, args.seconds, args.readings_per_message, args.buildings,
                      args.interval_minutes * 60, args.payload_format, result_path),
            )
            load_before = os.getloadavg()
            producer.start()
            producer.join()
            produced = json.loads(Path(result_path).read_text())
            acked_readings = sum(steps * len(SENSORS) for _, _, steps in produced["acked"])
            # Wait for the backlog to commit, giving up only when commits stop making progress.
            last, stalled_since = -1, time.time()
            while landed[0] < acked_readings:
                time.sleep(0.5)
                if landed[0] != last:
                    last, stalled_since = landed[0], time.time()
                elif time.time() - stalled_since > 30:
                    break
            ingest.stop()
            consumer.join(120)
            load_after = os.getloadavg()
        bronze = engine.read(SENSOR_READINGS, columns=["building_id", "sensor_id", "ts"])
    # Expected keys: every acknowledged message's readings.
    b_idx, s_idx, ts_list = [], [], []
    for b, first, steps in produced["acked"]:
        t = START_EPOCH_S + (first + np.arange(steps)) * args.interval_minutes * 60
        b_idx.append(np.full(steps * len(SENSORS), b))
        s_idx.append(np.tile(np.arange(len(SENSORS)), steps))
        ts_list.append(np.repeat(t, len(SENSORS)))
    expected = pa.table({
        "building_id": pa.array([f"b{b:04d}" for b in range(args.buildings)]).take(pa.array(np.concatenate(b_idx))),
        "sensor_id": pa.array([s for s, _, _ in SENSORS]).take(pa.array(np.concatenate(s_idx))),
        "ts": pa.array(np.concatenate(ts_list) * 1_000_000, pa.int64()).cast(pa.timestamp("us", tz="UTC")),
    }) if b_idx else pa.table({"building_id": pa.array([], pa.string())})
    distinct = bronze.group_by(["building_id", "sensor_id", "ts"]).aggregate([]).num_rows
    found = expected.join(bronze.group_by(["building_id", "sensor_id", "ts"]).aggregate([]),
                          keys=["building_id", "sensor_id", "ts"], join_type="inner").num_rows if b_idx else 0
    lat = sorted(latencies)
    weights = np.array([w for _, w in lat]) if lat else np.array([])
    cum = np.cumsum(weights) / weights.sum() if lat else np.array([])

    def quantile(q: float) -> float | None:
        return round(lat[int(np.searchsorted(cum, q))][0], 3) if lat else None

    first_publish = produced["first_publish"]
    last_commit = max(commits) if commits else first_publish
    return {
        "offered_per_s": round(acked_readings / max(produced["sending_s"], 1e-9), 1),
        "readings_per_s": round(landed[0] / max(last_commit - first_publish, 1e-9), 1),
        "p50_s": quantile(0.50),
        "p99_s": quantile(0.99),
        "lost": int(acked_readings - found),
        "doubled": int(bronze.num_rows - distinct),
        "acknowledged_readings": acked_readings,
        "landed_readings": landed[0],
        "bronze_rows": bronze.num_rows,
        "messages": produced["messages"],
        "batches": ingest.stats.batches,
        "readings_per_message": args.readings_per_message,
        "payload_format": args.payload_format,
        "partitions": args.partitions,
        "buildings": args.buildings,
        "seconds": args.seconds,
        "batch_readings": args.batch_readings,
        "batch_age_s": args.batch_age,
        "backlog_factor": args.backlog_factor,
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in load_after],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=105_000, help="offered readings/s (0: as fast as the producer goes)")
    parser.add_argument("--seconds", type=float, default=60.0, help="how long the producer offers load")
    parser.add_argument("--readings-per-message", type=int, default=500)
    parser.add_argument("--payload-format", choices=("batch", "json"), default="batch")
    parser.add_argument("--buildings", type=int, default=200)
    parser.add_argument("--interval-minutes", type=int, default=15, help="each building's clock step per reading")
    parser.add_argument("--partitions", type=int, default=3)
    from wattflow.settings import KafkaSettings

    defaults = KafkaSettings()
    parser.add_argument("--batch-readings", type=int, default=defaults.batch_max_readings, help="a Delta commit when a batch holds this many")
    # Half the setting's default age: the latency target is p99 <= 2 s, and a batch waits up to its age.
    parser.add_argument("--batch-age", type=float, default=0.5, help="... or is this old (s)")
    parser.add_argument("--backlog-factor", type=int, default=defaults.batch_backlog_factor,
                        help="group commit: a batch may grow to this x while one commits")
    parser.add_argument("--json", type=Path, help="write the result here")
    parser.add_argument("--verbose", action="store_true", help="one line per committed batch (stderr)")
    args = parser.parse_args()
    os.environ.setdefault("WATTFLOW_LOG_LEVEL", "WARNING")
    r = run_once(args)
    print(f"{'offered/s':>10} {'readings/s':>11} {'p50 s':>7} {'p99 s':>7} {'lost':>6} {'doubled':>8} {'batches':>8} {'per msg':>8} {'format':>7}")
    print(f"{r['offered_per_s']:>10,.0f} {r['readings_per_s']:>11,.0f} {r['p50_s']!s:>7} {r['p99_s']!s:>7} {r['lost']:>6} "
          f"{r['doubled']:>8} {r['batches']:>8} {r['readings_per_message']:>8} {r['payload_format']:>7}")
    print(f"{r['acknowledged_readings']:,} readings acknowledged, {r['bronze_rows']:,} in bronze; {args.seconds:g} s offered; "
          f"load average {r['load_average_before'][0]} before, {r['load_average_after'][0]} after")
    print(f"batches of {args.batch_readings:,} readings or {args.batch_age} s, group commit up to {args.backlog_factor}x; "
          f"{args.partitions} partitions, {args.buildings} buildings")
    print(f"targets: >= {TARGET_READINGS_PER_S:,} readings/s sustained, p99 <= {TARGET_P99_S} s, 0 lost, 0 doubled")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(r, indent=2))


if __name__ == "__main__":
    main()
