"""Training memory against portfolio size: peak RSS of one training run at P buildings x 1 year of gold.

For each P (default 20 and 200) a child process writes P synthetic building-years of gold features
(ml.synthetic: the building simulator's portfolio b01..bP curated to gold, its five sites and use types
in turn) to a Delta table, then another child trains
the global model from it the way `train_and_register` does (ml.training_stream: gold read
`model.train_shard_buildings` buildings at a time into window shards, each epoch a stratified sample of
at most `model.train_windows_per_epoch` windows) and reports its peak RSS (ru_maxrss of that child only).
Target (issue 18): the peaks at P = 20 and P = 200 within 20% of each other.

    python bench/train_memory.py [--buildings 20 200] [--epochs 2] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

TARGET_RATIO = 1.20


def build_gold(home: Path, buildings: int, days: int) -> dict:
    """P building-years of gold features, generated 10 buildings at a time, written in one commit (this child's peak is not measured)."""
    import pyarrow as pa

    from lakehouse.engine import get_engine
    from lakehouse.schemas import FEATURES
    from ml.synthetic import synthetic_gold_features
    from wattflow.settings import get_settings

    engine = get_engine(get_settings())
    started = time.perf_counter()
    ids = [f"b{i + 1:02d}" for i in range(buildings)]  # the simulator's ids; a building is the same in any chunk
    # One write: the table's first commit is a plain write, where chunked upserts would MERGE against an
    # ever larger table (every chunk touches every date partition).
    parts = [pa.Table.from_pandas(synthetic_gold_features(building_ids=tuple(ids[s : s + 10]), days=days, seed=7),
                                  preserve_index=False) for s in range(0, buildings, 10)]
    table = pa.concat_tables(parts)
    rows = table.num_rows
    engine.upsert(FEATURES, table)
    return {"rows": rows, "write_s": time.perf_counter() - started}


def train_once(buildings: int, epochs: int) -> dict:
    import numpy as np
    import pandas as pd

    from lakehouse.engine import get_engine
    from lakehouse.schemas import FEATURES
    from ml.model import ModelParams
    from ml.pipeline import default_train_end, spec_from_settings
    from lakehouse.simulator.portfolio import build_registry
    from ml.training_stream import gold_buildings, train_streamed
    from wattflow.settings import get_settings

    settings = get_settings()
    engine = get_engine(settings)
    version = engine.version(FEATURES)
    started = time.perf_counter()
    found, first_ts, last_ts = gold_buildings(engine, version)
    registry = build_registry(len(found))  # the simulated buildings' use types and timezones
    train_end = default_train_end(pd.DataFrame({"ts": [last_ts]}), settings.model.backtest_days)
    trained = train_streamed(
        engine, spec_from_settings(settings), ModelParams.from_settings(settings.model, epochs=epochs),
        version=version, buildings=found, first_ts=first_ts,
        timezones={b: registry.get(b).timezone for b in found},
        use_types={b: registry.get(b).use_type for b in found}, start=None, train_end=train_end,
        stride_h=settings.model.train_origin_stride_h, validation_fraction=settings.model.validation_fraction,
        windows_per_epoch=settings.model.train_windows_per_epoch, shard_buildings=settings.model.train_shard_buildings,
    )
    return {
        "buildings": len(found), "train_windows": trained.n_train_windows,
        "windows_per_epoch": min(trained.n_train_windows, settings.model.train_windows_per_epoch),
        "validation_windows": trained.n_validation_windows, "epochs": trained.epochs_run,
        "best_val_loss": float(np.round(trained.best_val_loss, 4)), "train_s": round(time.perf_counter() - started, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def _child(role: str, home: Path, buildings: int, args: argparse.Namespace) -> dict:
    out = home / f"{role}.json"
    env = {**os.environ, "WATTFLOW_HOME": str(home), "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"}
    run = subprocess.run([sys.executable, __file__, "--role", role, "--buildings", str(buildings), "--days", str(args.days),
                          "--epochs", str(args.epochs), "--json", str(out)], env=env, capture_output=True, text=True)
    if run.returncode != 0:
        raise SystemExit(f"{role} P={buildings} failed:\n{run.stderr[-4000:]}")
    return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--buildings", type=int, nargs="+", default=[20, 200])
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--role", choices=["gold", "train"], default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role:
        result = build_gold(Path(os.environ["WATTFLOW_HOME"]), args.buildings[0], args.days) if args.role == "gold" \
            else train_once(args.buildings[0], args.epochs)
        args.json.write_text(json.dumps(result))
        return

    runs = []
    for p in args.buildings:
        home = Path(tempfile.mkdtemp(prefix=f"wattflow-train-memory-{p}-"))
        load = os.getloadavg()[0]
        gold = _child("gold", home, p, args)
        run = _child("train", home, p, args)
        runs.append({**run, "gold_rows": gold["rows"], "load_1m": round(load, 1)})
        subprocess.run(["rm", "-rf", str(home)], check=False)
    peaks = [r["peak_rss_mb"] for r in runs]
    ratio = max(peaks) / min(peaks)
    print(f"{'buildings':>9} {'gold rows':>10} {'train win':>10} {'win/epoch':>9} {'epochs':>6} {'train s':>8} "
          f"{'val loss':>8} {'peak RSS MB':>11} {'load':>5}")
    for r in runs:
        print(f"{r['buildings']:>9} {r['gold_rows']:>10} {r['train_windows']:>10} {r['windows_per_epoch']:>9} {r['epochs']:>6} "
              f"{r['train_s']:>8} {r['best_val_loss']:>8} {r['peak_rss_mb']:>11} {r['load_1m']:>5}")
    verdict = "met" if ratio <= TARGET_RATIO else "NOT met"
    print(f"largest/smallest peak RSS = {ratio:.2f} (target <= {TARGET_RATIO}: {verdict}); {os.cpu_count()} cores")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"runs": runs, "peak_rss_ratio": round(ratio, 3), "target_ratio": TARGET_RATIO,
                                         "target_met": ratio <= TARGET_RATIO, "cores": os.cpu_count()}, indent=2))


if __name__ == "__main__":
    main()
