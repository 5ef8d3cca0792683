"""Writer processes for the concurrency and kill tests: real processes upserting one Delta table.

Readings are keyed by an integer `k` (a 15-minute slot from 2024-01-01, so keys 0..95 are one date
partition, 96..191 the next). Every upsert carries a value unique to (writer, step), so each one changes
every row it names and must commit exactly one new version; a test can then tell from the versions the
writers report which value must be the table's last word on each key.

Run as a script (``python -m tests.integration.delta_writers URI N_BATCHES``) it lands batch after batch
until killed: the crash-safety test SIGKILLs it at random moments.
"""

from __future__ import annotations

import datetime as dt
import sys
import time
from typing import Any

import pyarrow as pa

from lakehouse.engine import CommitRetry
from lakehouse.schemas import SENSOR_READINGS

START = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
# Patient enough that four writers hammering one partition never give up inside a test.
TEST_RETRY = CommitRetry(max_attempts=60, backoff_initial_s=0.005, backoff_max_s=0.2)


def readings(keys: list[int], value: float, writer: str) -> pa.Table:
    ts = pa.array([START + dt.timedelta(minutes=15 * k) for k in keys], pa.timestamp("us", tz="UTC"))
    n = len(keys)
    return pa.table(
        {
            "building_id": ["b1"] * n,
            "sensor_id": ["main_meter"] * n,
            "metric": ["energy"] * n,
            "ts": ts,
            "value": [value] * n,
            "unit": ["kWh"] * n,
            "source": [writer] * n,
            "batch_id": [f"{writer}-{value}"] * n,
            "ingested_at": ts,
        }
    )


def key_of(ts: dt.datetime) -> int:
    return int((ts - START).total_seconds() // 900)


def engine_at(root: str, storage_options: dict[str, str] | None = None):
    from lakehouse.delta_rs import DeltaRsEngine

    return DeltaRsEngine(root, storage_options, retry=TEST_RETRY)


def warm_up() -> None:
    """A pool worker's initializer: imports and delta-rs' one-time set-up (seconds on a busy machine, for
    the first write and the first MERGE of a process) happen here, not inside the race."""
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        engine = engine_at(scratch)
        engine.upsert(SENSOR_READINGS, readings([0], 0.0, "warm-up"))
        engine.upsert(SENSOR_READINGS, readings([0, 1], 1.0, "warm-up"))


def pid(_: int = 0) -> int:
    import os

    time.sleep(0.2)  # long enough that each of the pool's workers takes one
    return os.getpid()


def write_steps(
    root: str, writer: int, steps: list[list[int]], start_at: float, storage_options: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    """Upsert `steps` in order, starting at wall-clock `start_at` so all writers collide; one record per step."""
    engine = engine_at(root, storage_options)
    time.sleep(max(0.0, start_at - time.time()))
    out = []
    for j, keys in enumerate(steps):
        value = writer * 1000.0 + j + 0.5
        result = engine.upsert(SENSOR_READINGS, readings(keys, value, f"w{writer}"))
        out.append(
            {
                "writer": writer,
                "step": j,
                "keys": keys,
                "value": value,
                "version": result.version,
                "inserted": result.rows_inserted,
                "updated": result.rows_updated,
                "retries": result.conflicts_retried,
            }
        )
    return out


def batch_keys(i: int) -> list[int]:
    """Batch i of the kill test: 40 new slots plus an overlap with the previous batch (updated values)."""
    return list(range(max(0, 40 * i - 8), 40 * i + 40))


def batch_value(i: int) -> float:
    return 100.0 + i


def main(argv: list[str]) -> None:
    root, n_batches = argv[0], int(argv[1])
    engine = engine_at(root)
    print("ready", flush=True)
    for i in range(n_batches):
        engine.upsert(SENSOR_READINGS, readings(batch_keys(i), batch_value(i), "killable"))
        print(f"landed {i}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
