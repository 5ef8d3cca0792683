"""Ingest benchmark: a year of 15-minute readings for 20 buildings x 6 sensors (~4.2 M) into bronze.

Times the landing step (validation + calibration + upsert through the engine), not the simulation:
the portfolio is simulated once and handed to each engine as a Parquet file. Each engine runs in a
fresh subprocess, so peak RSS (the process and its children, e.g. Spark's JVM) is per engine.

    python bench/ingest.py [--engines delta_rs,spark] [--buildings 20] [--days 366] [--repeats 1] [--json PATH]

Prints one row per engine: readings/s for the first write into an empty table and for an idempotent
re-run of the same batch (median over repeats), and peak RSS in MB.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import date, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

START = date(2024, 1, 1)
TARGETS = {"delta_rs": {"first_write_readings_per_s": 1_000_000, "rerun_readings_per_s": 500_000, "peak_rss_mb": 4096}}


class PeakRss:
    """Samples the RSS of this process and its children (a JVM) in the background."""

    def __init__(self, interval_s: float = 0.05) -> None:
        import psutil

        self._proc = psutil.Process()
        self._interval = interval_s
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        import psutil

        total = self._proc.memory_info().rss
        for child in self._proc.children(recursive=True):
            try:
                total += child.memory_info().rss
            except psutil.Error:
                pass
        self.peak = max(self.peak, total)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self._interval)

    def __enter__(self) -> "PeakRss":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    @property
    def peak_mb(self) -> float:
        import resource

        self_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
        return max(self.peak, self_peak) / 2**20


def worker(engine_name: str, readings_path: str, registry_path: str, repeats: int, out_path: str) -> None:
    """One engine, in its own process: land the batch into an empty table, then land it again."""
    import pyarrow.parquet as pq

    with PeakRss() as rss:
        from lakehouse.bronze import land_readings, validate_readings
        from lakehouse.buildings import BuildingRegistry
        from lakehouse.engine import get_engine
        from wattflow.settings import get_settings, reset_settings

        readings = pq.read_table(readings_path)
        registry = BuildingRegistry.model_validate_json(Path(registry_path).read_text())
        first, rerun, checks, homes = [], [], [], []
        first_cpu, rerun_cpu, validate_cpu = [], [], []
        for k in range(repeats):
            home = tempfile.mkdtemp(prefix=f"wattflow-bench-{engine_name}-")
            homes.append(home)
            os.environ["WATTFLOW_HOME"] = home
            os.environ["WATTFLOW_LAKEHOUSE__ENGINE"] = engine_name
            reset_settings()
            settings = get_settings()
            engine = get_engine(settings)
            c0, t0 = time.process_time(), time.perf_counter()
            a = land_readings(readings, source="bench", registry=registry, engine=engine, batch_id=f"bench-{k}-a")
            c1, t1 = time.process_time(), time.perf_counter()
            b = land_readings(readings, source="bench", registry=registry, engine=engine, batch_id=f"bench-{k}-b")
            c2, t2 = time.process_time(), time.perf_counter()
            first.append(t1 - t0)
            rerun.append(t2 - t1)
            first_cpu.append(c1 - c0)
            rerun_cpu.append(c2 - c1)
            # The landing step's own share (validation, calibration, bookkeeping), without the engine.
            c3 = time.process_time()
            validate_readings(readings, registry)
            validate_cpu.append(time.process_time() - c3)
            checks.append(
                {
                    "inserted": a.readings.rows_inserted,
                    "rerun_inserted": b.readings.rows_inserted,
                    "rerun_updated": b.readings.rows_updated,
                    "rerun_unchanged": b.readings.rows_unchanged,
                    "version_after_first": a.readings.version,
                    "version_after_rerun": b.readings.version,
                }
            )
    for home in homes:
        shutil.rmtree(home, ignore_errors=True)
    n = readings.num_rows
    Path(out_path).write_text(
        json.dumps(
            {
                "readings": n,
                "first_write_s": first,
                "rerun_s": rerun,
                "first_write_readings_per_s": n / statistics.median(first),
                "rerun_readings_per_s": n / statistics.median(rerun),
                "peak_rss_mb": rss.peak_mb,
                # CPU seconds of this process (all threads; not the JVM): less sensitive to a busy machine.
                "first_write_cpu_s": first_cpu,
                "rerun_cpu_s": rerun_cpu,
                "validation_cpu_s": validate_cpu,
                "checks": checks,
            }
        )
    )


def prepare(buildings: int, days: int, workdir: Path) -> tuple[str, str, int, float]:
    import pyarrow.parquet as pq

    from lakehouse.simulator import simulate_portfolio

    t0 = time.perf_counter()
    portfolio = simulate_portfolio(buildings, START, START + timedelta(days=days), seed=42, forecast_issue_hour_utc=6)
    simulate_s = time.perf_counter() - t0
    readings = portfolio.readings.drop_columns(["delivery"])
    readings_path = workdir / "readings.parquet"
    registry_path = workdir / "registry.json"
    pq.write_table(readings, readings_path)
    registry_path.write_text(portfolio.registry.model_dump_json())
    return str(readings_path), str(registry_path), readings.num_rows, simulate_s


def run_engine(engine: str, readings_path: str, registry_path: str, repeats: int, timeout_s: int) -> dict:
    out = Path(tempfile.mkdtemp(prefix="wattflow-bench-out-")) / f"{engine}.json"
    cmd = [sys.executable, __file__, "--worker", engine, "--readings", readings_path, "--registry", registry_path,
           "--repeats", str(repeats), "--out", str(out)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, cwd=REPO)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout_s} s"}
    if proc.returncode != 0 or not out.exists():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"error": " | ".join(tail) or f"exit code {proc.returncode}"}
    return json.loads(out.read_text())


def render(results: dict, readings: int, simulate_s: float, load: tuple[float, float, float]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"bronze ingest: {readings:,} readings (simulated in {simulate_s:.1f} s, not timed)")
    table.add_column("engine", no_wrap=True)
    for header in ("first write readings/s", "re-run readings/s", "peak RSS MB", "first s (cpu)", "re-run s (cpu)", "validation cpu s", "target met"):
        table.add_column(header, justify="right", no_wrap=True)
    for engine, r in results.items():
        if "error" in r:
            table.add_row(engine, "-", "-", "-", "-", "-", "-", f"error: {r['error'][:60]}")
            continue
        target = TARGETS.get(engine)
        met = "-"
        if target:
            met = "yes" if (
                r["first_write_readings_per_s"] >= target["first_write_readings_per_s"]
                and r["rerun_readings_per_s"] >= target["rerun_readings_per_s"]
                and r["peak_rss_mb"] <= target["peak_rss_mb"]
            ) else "no"
        table.add_row(
            engine,
            f"{r['first_write_readings_per_s']:,.0f}",
            f"{r['rerun_readings_per_s']:,.0f}",
            f"{r['peak_rss_mb']:,.0f}",
            f"{statistics.median(r['first_write_s']):.2f} ({statistics.median(r['first_write_cpu_s']):.2f})",
            f"{statistics.median(r['rerun_s']):.2f} ({statistics.median(r['rerun_cpu_s']):.2f})",
            f"{statistics.median(r['validation_cpu_s']):.2f}",
            met,
        )
    console = Console(width=None if sys.stdout.isatty() else 140)
    console.print(table)
    console.print(
        f"{os.cpu_count()} CPUs, load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} at the start: "
        "figures from a shared machine are depressed when others are busy."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engines", default="delta_rs,spark", help="Comma-separated: delta_rs,spark")
    parser.add_argument("--buildings", type=int, default=20)
    parser.add_argument("--days", type=int, default=366, help="Days of 15-minute data (366 = the year 2024)")
    parser.add_argument("--repeats", type=int, default=1, help="Fresh tables per engine; medians are reported")
    parser.add_argument("--timeout", type=int, default=1800, help="Seconds per engine before giving up")
    parser.add_argument("--json", dest="json_path", help="Write the results here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--readings", help=argparse.SUPPRESS)
    parser.add_argument("--registry", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.readings, args.registry, args.repeats, args.out)
        return

    load = os.getloadavg()
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    unknown = [e for e in engines if e not in ("delta_rs", "spark")]
    if unknown:
        parser.error(f"unknown engine(s) {unknown}; choose from delta_rs, spark")
    with tempfile.TemporaryDirectory(prefix="wattflow-bench-") as tmp:
        readings_path, registry_path, n, simulate_s = prepare(args.buildings, args.days, Path(tmp))
        results = {e: run_engine(e, readings_path, registry_path, args.repeats, args.timeout) for e in engines}
    render(results, n, simulate_s, load)
    if args.json_path:
        Path(args.json_path).parent.mkdir(parents=True, exist_ok=True)
        summary = {
            e: (
                {k: r[k] for k in ("first_write_readings_per_s", "rerun_readings_per_s", "peak_rss_mb")}
                | {k: r[k] for k in ("readings", "first_write_s", "rerun_s", "first_write_cpu_s", "rerun_cpu_s", "validation_cpu_s", "checks")}
                if "error" not in r
                else {"error": r["error"], "first_write_readings_per_s": None, "rerun_readings_per_s": None, "peak_rss_mb": None}
            )
            for e, r in results.items()
        }
        Path(args.json_path).write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
