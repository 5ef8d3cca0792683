"""Monitoring benchmark: one pass over a 20-building portfolio (drift + accuracy + anomalies).

A simulated portfolio (`monitoring.synthetic`, a view of `lakehouse.simulator`: gold-feature rows, the first
building retrofitted, after-hours waste planted by the simulator's fault injection) and the CalTRACK-hourly
stand-in forecaster's served day-ahead forecasts are written to Delta first, untimed. Then, in this process: importing Evidently (a one-time cost of every worker), a warm-up
pass, and `--repeats` timed passes of `monitoring.monitor.run_monitoring` (read 35 days of features and
forecasts chunk by chunk on the runner, seasonality-matched input drift, per-building residual drift, ASHRAE accuracy, three
Evidently reports as HTML + JSON, an MLflow run with the reports, the decision, anomalies with cost and
carbon, every table write). Stage timings come from separate calls of the cores on the same frames.

    python bench/monitor.py [--buildings 20] [--repeats 3] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

TARGET_S = 60.0


def print_measures(rows: list[tuple[str, str]]) -> None:
    """A two-column Markdown table: measure | value."""
    width = max(len(k) for k, _ in rows)
    print(f"| {'measure'.ljust(width)} | value |")
    print(f"|{'-' * (width + 2)}|-------|")
    for k, v in rows:
        print(f"| {k.ljust(width)} | {v} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--buildings", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    load_before = os.getloadavg()

    home = Path(tempfile.mkdtemp(prefix="wattflow-bench-monitor-"))
    os.environ["WATTFLOW_HOME"] = str(home)
    from wattflow.settings import get_settings, reset_settings

    reset_settings()
    settings = get_settings()
    import pandas as pd

    from lakehouse.engine import get_engine
    from lakehouse.schemas import FEATURES, FORECASTS
    from lakehouse.simulator import FaultConfig, retrofit
    from monitoring.synthetic import TowtForecaster, portfolio_world, served_forecasts, to_contract_table

    start = pd.Timestamp("2025-01-06", tz="UTC")
    days = 56
    ids = tuple(f"b{i:02d}" for i in range(1, args.buildings + 1))
    features, world = portfolio_world(
        ids, str(start.date()), days, seed=42, drift=(retrofit(ids[0], start + pd.Timedelta(days=42)),),
        faults=FaultConfig.only("after_hours_waste"),
    )
    model = TowtForecaster.fit(features, None, start + pd.Timedelta(days=21))
    forecasts = served_forecasts(features, model, start=start + pd.Timedelta(days=21), end=start + pd.Timedelta(days=days),
                                 model_name=settings.model.model_name, model_version="1", timezones=world.timezones)
    engine = get_engine(settings)
    engine.upsert(FEATURES, to_contract_table(features, FEATURES))
    engine.upsert(FORECASTS, to_contract_table(forecasts, FORECASTS))

    import monitoring.anomaly_store as store

    # no registry file in a temp home: the simulator's own registry (tariffs, grid factors, timezones)
    store.building_metadata = lambda engine, settings: {b: world.registry.get(b) for b in ids}

    t = time.perf_counter()
    import evidently  # noqa: F401

    import_s = time.perf_counter() - t
    from monitoring.monitor import run_monitoring

    as_of = start + pd.Timedelta(days=days - 1)
    run_monitoring(engine, settings, as_of - pd.Timedelta(days=1))  # warm-up: MLflow store, first reports
    passes, outcomes = [], []
    for _ in range(args.repeats):
        t = time.perf_counter()
        outcomes.append(run_monitoring(engine, settings, as_of))
        passes.append(time.perf_counter() - t)

    # stages, on the same data
    from monitoring.anomaly_store import find_anomalies, read_window
    from monitoring.monitor import save_reports
    from monitoring.check import assess

    stage: dict[str, float] = {}
    t = time.perf_counter()
    window_start = as_of - pd.Timedelta(days=35)
    f = read_window(engine, FEATURES, window_start, as_of, None)
    fc = read_window(engine, FORECASTS, window_start, as_of, None)
    stage["read_s"] = time.perf_counter() - t
    t = time.perf_counter()
    assessment = assess(f, fc, as_of=as_of, model_name=settings.model.model_name, model_version="1", policy=settings.monitor)
    stage["drift_accuracy_core_s"] = time.perf_counter() - t
    # The same check as the pass runs it: chunk by chunk on the runner, only per-building rows and the
    # bounded sample reaching this process.
    from monitoring.assessment import assess_portfolio

    t = time.perf_counter()
    chunked = assess_portfolio(engine, settings, as_of=as_of, model_name=settings.model.model_name, model_version="1")
    stage["drift_accuracy_runner_s"] = time.perf_counter() - t
    same = (chunked.check.residual_drift_share == assessment.check.residual_drift_share
            and chunked.check.building_accuracy == assessment.check.building_accuracy)
    t = time.perf_counter()
    save_reports(assessment, home / "stage-reports")
    stage["evidently_reports_s"] = time.perf_counter() - t
    t = time.perf_counter()
    found = find_anomalies(engine, settings, since=as_of - pd.Timedelta(days=7), until=as_of, write=False)
    stage["anomalies_s"] = time.perf_counter() - t

    result = {
        "pass_s": round(statistics.median(passes), 2),
        "buildings": args.buildings,
        "passes_s": [round(p, 2) for p in passes],
        "evidently_import_s": round(import_s, 2),
        **{k: round(v, 2) for k, v in stage.items()},
        "runner_equals_whole_window": same,
        "runner": settings.compute.runner,
        "chunk_buildings": settings.compute.chunk_buildings,
        "driver_sample_rows": int(len(chunked.matched.reference) + len(chunked.matched.current)
                                  + int(chunked.residual_current.notna().sum().sum()) + len(chunked.accuracy_pairs)),
        "decision": outcomes[-1].decision.label,
        "anomalies": len(found.anomalies),
        "target_s": TARGET_S,
        "load_avg_before": [round(x, 2) for x in load_before],
        "load_avg_after": [round(x, 2) for x in os.getloadavg()],
        "cpus": os.cpu_count(),
    }
    rows = [
        ("buildings", str(args.buildings)),
        ("one monitoring pass, median (s)", f"{result['pass_s']:.2f}  (target <= {TARGET_S:.0f})"),
        ("passes (s)", ", ".join(f"{p:.2f}" for p in passes)),
        ("  read 35 days of features + forecasts (s)", f"{stage['read_s']:.2f}"),
        ("  drift + accuracy core, whole window in one frame (s)", f"{stage['drift_accuracy_core_s']:.2f}"),
        (f"  drift + accuracy on the {settings.compute.runner} runner, chunks of {settings.compute.chunk_buildings} (s)",
         f"{stage['drift_accuracy_runner_s']:.2f}  (same check: {same})"),
        ("  three Evidently reports, HTML + JSON (s)", f"{stage['evidently_reports_s']:.2f}"),
        ("  anomalies for 7 days (s)", f"{stage['anomalies_s']:.2f}"),
        ("Evidently import, once per worker (s)", f"{import_s:.2f}"),
        ("decision / anomalies found", f"{result['decision']} / {result['anomalies']}"),
        ("load average before / after", f"{load_before[0]:.1f} / {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"),
    ]
    print_measures(rows)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
