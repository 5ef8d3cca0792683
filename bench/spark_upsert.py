"""Spark engine upsert benchmark: synthetic bronze readings straight into `SparkEngine.upsert`.

Isolates the engine (no simulation, validation or calibration) so the Spark figures in `bench/ingest.py`
can be read against it: session start, first write into an empty table, and an idempotent re-run of
the same readings (new batch id and ingestion time, so the diff must ignore bookkeeping columns).

    python bench/spark_upsert.py [--readings 1000000] [--repeats 1] [--json PATH]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
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

SENSORS = (("meter-1", "energy", "kWh"), ("meter-2", "energy", "kWh"), ("zone-1", "indoor_temperature", "degC"),
           ("zone-1", "indoor_humidity", "%"), ("zone-1", "co2", "ppm"), ("zone-1", "occupancy", "people"))


def synthetic_readings(n: int, buildings: int = 20, batch: str = "bench-1"):
    """~n readings: `buildings` x 6 sensors at 15-minute steps from 2024-01-01 UTC."""
    import numpy as np
    import pyarrow as pa

    series = buildings * len(SENSORS)
    steps = max(1, n // series)
    start = np.datetime64("2024-01-01T00:00:00", "us")
    ts = start + np.arange(steps, dtype=np.int64) * np.timedelta64(15 * 60 * 1_000_000, "us")
    b = np.repeat(np.arange(buildings), len(SENSORS) * steps)
    s = np.tile(np.repeat(np.arange(len(SENSORS)), steps), buildings)
    total = series * steps
    rng = np.random.default_rng(42)
    sensor_ids = pa.array([x[0] for x in SENSORS]).take(pa.array(s))
    metrics = pa.array([x[1] for x in SENSORS]).take(pa.array(s))
    units = pa.array([x[2] for x in SENSORS]).take(pa.array(s))
    return pa.table(
        {
            "building_id": pa.array([f"b{i:03d}" for i in range(buildings)]).take(pa.array(b)),
            "sensor_id": sensor_ids,
            "metric": metrics,
            "ts": pa.array(np.tile(ts, series), pa.timestamp("us", tz="UTC")),
            "value": pa.array(np.round(rng.uniform(0, 100, total), 3)),
            "unit": units,
            "source": pa.array(["bench"] * total),
            "batch_id": pa.array([batch] * total),
            "ingested_at": pa.array([dt.datetime.now(dt.timezone.utc)] * total, pa.timestamp("us", tz="UTC")),
        }
    )


class PeakRss:
    """RSS of this process plus its children (Spark's JVM), sampled in the background."""

    def __init__(self) -> None:
        import psutil

        self._proc, self.peak, self._stop = psutil.Process(), 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            total = self._proc.memory_info().rss
            for child in self._proc.children(recursive=True):
                try:
                    total += child.memory_info().rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)
            time.sleep(0.1)

    def __enter__(self) -> "PeakRss":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--readings", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=1, help="fresh tables per repeat; medians reported")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    os.environ.setdefault("WATTFLOW_HOME", tempfile.mkdtemp(prefix="wattflow-bench-spark-"))
    os.environ.setdefault("WATTFLOW_LAKEHOUSE__SPARK_JARS_DIR", str(Path.home() / ".cache" / "wattflow" / "jars"))
    from lakehouse.schemas import SENSOR_READINGS
    from lakehouse.spark_engine import SparkEngine
    from wattflow.settings import get_settings

    data = synthetic_readings(args.readings)
    rerun_data = data.set_column(data.schema.get_field_index("batch_id"), "batch_id", [["bench-2"] * data.num_rows])
    settings = get_settings()
    firsts, reruns = [], []
    with PeakRss() as rss:
        started = time.perf_counter()
        engine = SparkEngine.from_settings(settings)
        session_s = time.perf_counter() - started
        for i in range(args.repeats):
            engine.root_uri = f"{settings.lakehouse_uri}/repeat-{i}"
            t = time.perf_counter()
            first = engine.upsert(SENSOR_READINGS, data)
            firsts.append(time.perf_counter() - t)
            t = time.perf_counter()
            rerun = engine.upsert(SENSOR_READINGS, rerun_data)
            reruns.append(time.perf_counter() - t)
            assert first.rows_inserted == data.num_rows, first
            assert (rerun.version, rerun.rows_unchanged) == (first.version, data.num_rows), rerun
    n = data.num_rows
    result = {
        "spark": {
            "readings": n,
            "session_start_s": round(session_s, 2),
            "first_write_s": round(statistics.median(firsts), 2),
            "rerun_s": round(statistics.median(reruns), 2),
            "first_write_readings_per_s": round(n / statistics.median(firsts)),
            "rerun_readings_per_s": round(n / statistics.median(reruns)),
            "peak_rss_mb": round(rss.peak / 2**20),
            "master": settings.lakehouse.spark_master,
            "driver_memory": settings.lakehouse.spark_driver_memory,
            "shuffle_partitions": settings.lakehouse.spark_shuffle_partitions,
            "load_average_1m": round(os.getloadavg()[0], 1),
        }
    }
    r = result["spark"]
    print(f"{'engine':<8} {'readings':>10} {'start s':>8} {'first write/s':>14} {'re-run/s':>10} {'peak RSS MB':>12} {'load':>5}")
    print(f"{'spark':<8} {n:>10,} {r['session_start_s']:>8} {r['first_write_readings_per_s']:>14,} "
          f"{r['rerun_readings_per_s']:>10,} {r['peak_rss_mb']:>12,} {r['load_average_1m']:>5}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
