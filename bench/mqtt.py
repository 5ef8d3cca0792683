"""MQTT stream benchmark: publisher on loopback -> private Mosquitto -> `MqttIngest` -> committed Delta rows.

A publisher process offers readings at a sustained rate (gateways packing many readings per message, as
building gateways that buffer a few minutes of all their sensors do); the consumer in this process
commits micro-batches to bronze (screen + validate + delta-rs upsert) and acknowledges after each commit.
Per batch setting (count, max age), it reports:

- readings_per_s: readings committed / (last commit - first publish), i.e. sustained end to end; it
  cannot exceed the offered rate, so offer more (``--rate 30000``, or 0 for as fast as possible) to see capacity;
- latency_p50_s / latency_p99_s: per message, Delta commit time - publish time (same clock, one host).

    python bench/mqtt.py [--rate 20000] [--seconds 20] [--readings-per-message 250] [--json PATH]

Each run uses a fresh broker and an empty lakehouse. The machine is shared: figures move with its load.
"""

from __future__ import annotations

import argparse
import hashlib
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
TARGET_READINGS_PER_S = 20_000
TARGET_P99_S = 2.0


def _key(topic: str, payload: bytes) -> str:
    # Buildings publish identical payloads for the same time block, so the topic must be part of the key,
    # or a later building's send time is paired with an earlier building's commit (negative latencies).
    return hashlib.blake2b(topic.encode() + b"\0" + payload, digest_size=12).hexdigest()


def _messages(n_buildings: int, steps: int, per_message: int) -> list[tuple[str, bytes, int]]:
    """Gateway messages in time order: each carries `per_message` readings of one building."""
    import datetime as dt

    start = dt.datetime(2026, 1, 5, tzinfo=dt.timezone.utc)
    steps_per_msg = max(1, per_message // len(SENSORS))
    out = []
    for first in range(0, steps, steps_per_msg):
        for b in range(n_buildings):
            readings = []
            for k in range(first, min(steps, first + steps_per_msg)):
                ts = (start + dt.timedelta(minutes=k)).strftime("%Y-%m-%dT%H:%M:%SZ")
                for sensor, metric, unit in SENSORS:
                    value = {"energy": 0.5 + (k % 60) / 100, "indoor_temperature": 21.0 + (k % 10) / 10,
                             "indoor_humidity": 45.0, "co2": 600.0 + k % 50, "occupancy": float(k % 30)}[metric]
                    readings.append({"sensor_id": sensor, "metric": metric, "ts": ts, "value": value, "unit": unit})
            payload = json.dumps(readings, separators=(",", ":")).encode()
            out.append((f"sites/bench/buildings/b{b:03d}/sensors", payload, len(readings)))
    return out


def _publisher(address: str, messages: list[tuple[str, bytes, int]], rate: float, times_path: str) -> None:
    from lakehouse.sources.publish import Message, Publisher

    sent: dict[str, float] = {}
    total = 0
    with Publisher(address, max_inflight=2000) as pub:
        start = time.time()
        for topic, payload, n in messages:
            if rate:
                ahead = total / rate - (time.time() - start)
                if ahead > 0:
                    time.sleep(ahead)
            sent[_key(topic, payload)] = time.time()
            pub.publish(Message(topic, payload, n))
            total += n
        pub.wait_acknowledged(120)
    Path(times_path).write_text(json.dumps(sent))


def run_once(batch_size: int, max_age_s: float, rate: float, seconds: float, per_message: int, n_buildings: int) -> dict:
    from lakehouse.buildings import Building, BuildingRegistry, Sensor
    from lakehouse.delta_rs import DeltaRsEngine
    from lakehouse.sources.mqtt import MqttIngest
    from tests.stand_ins.mosquitto import Mosquitto
    from wattflow.settings import Settings

    total_readings = int(rate * seconds) if rate else int(TARGET_READINGS_PER_S * seconds)
    steps = max(1, total_readings // (n_buildings * len(SENSORS)))
    messages = _messages(n_buildings, steps, per_message)
    n_readings = sum(m[2] for m in messages)
    registry = BuildingRegistry(buildings=[
        Building(building_id=f"b{b:03d}", name=f"bench {b}", site_id="bench", timezone="UTC", country="BE", use_type="office",
                 floor_area_m2=5000.0, latitude=50.8, longitude=4.4, grid_emission_factor_kg_per_kwh=0.17, tariff_per_kwh=0.2,
                 currency="EUR", sensors=[Sensor(sensor_id=s, metric=m, unit=u) for s, m, u in SENSORS])
        for b in range(n_buildings)
    ])
    with tempfile.TemporaryDirectory(prefix="wattflow-bench-mqtt-") as tmp:
        settings = Settings(home=Path(tmp) / "home")
        engine = DeltaRsEngine(str(Path(tmp) / "lakehouse"))
        commits: dict[str, float] = {}
        done = threading.Event()
        committed = [0]

        def on_commit(batch) -> None:
            for topic, payload in batch.message_keys:
                commits.setdefault(_key(topic, payload), batch.committed_at)
            committed[0] += batch.readings
            if committed[0] >= n_readings:
                done.set()

        with Mosquitto(Path(tmp) / "mosquitto") as broker:
            ingest = MqttIngest(broker=broker.address, topic="sites/+/buildings/+/sensors/#", client_id="bench",
                                engine=engine, registry_loader=lambda: registry, batch_max_readings=batch_size,
                                batch_max_age_s=max_age_s, on_commit=on_commit, settings=settings)
            consumer = threading.Thread(target=ingest.run, daemon=True)  # until stop(): the publisher may start slowly
            consumer.start()
            ingest._connected.wait(10)
            time.sleep(0.5)  # subscribed
            times_path = str(Path(tmp) / "sent.json")
            ctx = mp.get_context("spawn")
            publisher = ctx.Process(target=_publisher, args=(broker.address, messages, rate, times_path))
            publisher.start()
            publisher.join()
            # Wait for the backlog to commit, giving up only when commits stop making progress.
            last, stalled_since = -1, time.time()
            while not done.wait(1.0):
                if committed[0] != last:
                    last, stalled_since = committed[0], time.time()
                elif time.time() - stalled_since > 20:
                    break
            ingest.stop()
            consumer.join(60)
        sent = json.loads(Path(times_path).read_text())
    latencies = sorted(commits[k] - t for k, t in sent.items() if k in commits)
    first_publish = min(sent.values())
    last_commit = max(commits.values()) if commits else first_publish
    stats = ingest.stats
    return {
        "batch_size": batch_size,
        "batch_max_age_s": max_age_s,
        "offered_readings_per_s": rate or None,
        "readings_per_message": per_message,
        "readings": n_readings,
        "committed_readings": stats.landed,
        "batches": stats.batches,
        "readings_per_s": round(stats.landed / max(last_commit - first_publish, 1e-9), 1),
        "latency_p50_s": round(statistics.median(latencies), 4) if latencies else None,
        "latency_p99_s": round(latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))], 4) if latencies else None,
        "messages_without_commit": len(sent) - len(latencies),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=TARGET_READINGS_PER_S, help="offered readings/s (0: as fast as possible)")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the offered stream")
    parser.add_argument("--readings-per-message", type=int, default=250)
    parser.add_argument("--buildings", type=int, default=50)
    parser.add_argument("--settings", default="5000:0.5,20000:1.0", help="batch settings, COUNT:MAX_AGE_S,...")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    os.environ.setdefault("WATTFLOW_LOG_LEVEL", "WARNING")
    runs = []
    for spec in args.settings.split(","):
        count, age = spec.split(":")
        runs.append(run_once(int(count), float(age), args.rate, args.seconds, args.readings_per_message, args.buildings))
    header = f"{'batch_size':>10} {'max_age_s':>9} {'offered/s':>10} {'readings/s':>11} {'p50 s':>7} {'p99 s':>7} {'batches':>8} {'uncommitted':>11}"
    print(header)
    for r in runs:
        print(f"{r['batch_size']:>10,} {r['batch_max_age_s']:>9} {r['offered_readings_per_s'] or 0:>10,.0f} {r['readings_per_s']:>11,.0f} "
              f"{r['latency_p50_s']:>7} {r['latency_p99_s']:>7} {r['batches']:>8} {r['readings'] - r['committed_readings']:>11}")
    print(f"targets: >= {TARGET_READINGS_PER_S:,} readings/s sustained, p99 <= {TARGET_P99_S} s; "
          f"{args.readings_per_message} readings per MQTT message, QoS 1, ack after commit")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"runs": runs}, indent=2))


if __name__ == "__main__":
    main()
