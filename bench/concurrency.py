"""Concurrency benchmark: W writer processes x N overlapping upserts into one bronze table (delta-rs).

Every upsert names the same overlap slots (shared by all writers, over two date partitions) plus slots
of its own, with a value unique to (writer, upsert), so every upsert must commit exactly one version.
Writers start at the same instant; a commit that loses to another writer's is re-diffed and retried
(`lakehouse.commit_*` settings). Afterwards the table must hold each key once (rows == unique_keys), and
no write may be lost: every key written is there, holding the value of the last committed write naming it.

    python bench/concurrency.py [--writers 4] [--upserts 50] [--json PATH]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

START = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
OVERLAP = [0, 1, 2, 3, 4, 5, 6, 7, 96, 97, 98, 99, 100, 101, 102, 103]  # 15-minute slots on two dates
OWN_PER_UPSERT = 8


def _readings(keys: list[int], value: float, writer: str):
    import pyarrow as pa

    ts = pa.array([START + dt.timedelta(minutes=15 * k) for k in keys], pa.timestamp("us", tz="UTC"))
    n = len(keys)
    return pa.table(
        {
            "building_id": ["b1"] * n, "sensor_id": ["main_meter"] * n, "metric": ["energy"] * n, "ts": ts,
            "value": [value] * n, "unit": ["kWh"] * n, "source": [writer] * n,
            "batch_id": [f"{writer}-{value}"] * n, "ingested_at": ts,
        }
    )


def _engine(root: str):
    from lakehouse.delta_rs import DeltaRsEngine
    from lakehouse.engine import CommitRetry
    from wattflow.settings import get_settings

    return DeltaRsEngine(root, retry=CommitRetry.from_settings(get_settings().lakehouse))


def _warm_up() -> None:
    # One-time set-up of a process (imports, delta-rs' first write and MERGE) is not what is measured.
    from lakehouse.schemas import SENSOR_READINGS

    with tempfile.TemporaryDirectory() as scratch:
        engine = _engine(scratch)
        engine.upsert(SENSOR_READINGS, _readings([0], 0.0, "warm-up"))
        engine.upsert(SENSOR_READINGS, _readings([0, 1], 1.0, "warm-up"))


def _pid(_: int) -> int:
    time.sleep(0.2)
    return os.getpid()


def writer(root: str, w: int, upserts: int, start_at: float) -> list[dict]:
    from lakehouse.schemas import SENSOR_READINGS

    engine = _engine(root)
    time.sleep(max(0.0, start_at - time.time()))
    out = []
    for j in range(upserts):
        keys = OVERLAP + [1000 + w * upserts * OWN_PER_UPSERT + j * OWN_PER_UPSERT + i for i in range(OWN_PER_UPSERT)]
        value = w * 10_000.0 + j + 0.5
        result = engine.upsert(SENSOR_READINGS, _readings(keys, value, f"w{w}"))
        out.append({"keys": keys, "value": value, "version": result.version, "retries": result.conflicts_retried})
    return out


def run(writers: int, upserts: int) -> dict:
    from deltalake import DeltaTable

    workdir = Path(tempfile.mkdtemp(prefix="wattflow-concurrency-"))
    root = str(workdir / "lake")
    try:
        ctx = mp.get_context("spawn")  # delta-rs' runtime does not survive fork
        with ProcessPoolExecutor(max_workers=writers, mp_context=ctx, initializer=_warm_up) as pool:
            seen: set[int] = set()
            while len(seen) < writers:  # every worker started and warmed up before the race
                seen |= set(pool.map(_pid, range(writers)))
            start_at = time.time() + 0.5
            futures = [pool.submit(writer, root, w, upserts, start_at) for w in range(writers)]
            writes = [rec for f in futures for rec in f.result()]
            seconds = time.time() - start_at
        table = DeltaTable(f"{root}/bronze/sensor_readings")
        rows = table.to_pyarrow_table(columns=["ts", "value"]).to_pylist()
        final: dict[int, float] = {}
        for r in rows:
            final[int((r["ts"] - START).total_seconds() // 900)] = r["value"]
        latest: dict[int, tuple[int, float]] = {}
        for rec in writes:
            for k in rec["keys"]:
                if k not in latest or rec["version"] > latest[k][0]:
                    latest[k] = (rec["version"], rec["value"])
        # Lost: a key written but absent, or holding anything but the last committed write's value.
        lost = sum(1 for k, (_, v) in latest.items() if final.get(k) != v)
        versions = sorted(rec["version"] for rec in writes)
        return {
            "writers": writers,
            "upserts_per_writer": upserts,
            "commits": len(set(versions)),
            "retries": sum(rec["retries"] for rec in writes),
            "max_retries_one_upsert": max(rec["retries"] for rec in writes),
            "seconds": round(seconds, 2),
            "commits_per_s": round(len(set(versions)) / seconds, 1),
            "rows": len(rows),
            "unique_keys": len(final),
            "keys_written": len(latest),
            "lost": lost,
            "table_version": table.version(),
            "targets_met": len(rows) == len(final) == len(latest) and lost == 0 and len(set(versions)) == len(writes),
            "load_average": [round(x, 2) for x in os.getloadavg()],
        }
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def render(r: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"Delta upserts under concurrency: {r['writers']} writer processes x {r['upserts_per_writer']} overlapping upserts")
    for col in ("writers", "commits", "conflicts retried", "seconds", "commits/s", "rows", "unique keys", "lost", "target met"):
        t.add_column(col, justify="right")
    t.add_row(
        str(r["writers"]), str(r["commits"]), str(r["retries"]), f"{r['seconds']:.2f}", f"{r['commits_per_s']:.1f}",
        str(r["rows"]), str(r["unique_keys"]), str(r["lost"]), "yes" if r["targets_met"] else "NO",
    )
    console = Console(width=140)
    console.print(t)
    load = r["load_average"]
    console.print(f"{os.cpu_count()} CPUs, load average {load[0]} / {load[1]} / {load[2]} at the end: figures from a shared machine are depressed when others are busy.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--upserts", type=int, default=50, help="Upserts per writer")
    parser.add_argument("--json", dest="json_path", help="Write the results here")
    args = parser.parse_args()
    result = run(args.writers, args.upserts)
    render(result)
    if args.json_path:
        Path(args.json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_path).write_text(json.dumps(result, indent=2))
    sys.exit(0 if result["targets_met"] else 1)


if __name__ == "__main__":
    main()
