"""Portfolio benchmark: P simulated buildings x 1 year of 15-minute readings (6 sensors) through ingest ->
curate -> features -> scoring, on the local runner and on a 2-worker Spark standalone cluster.

Each (runner, P) runs in a child process with its own WATTFLOW_HOME; this process samples memory every
0.5 s with psutil: the driver is the child and its descendants (on Spark, the driver JVM), the workers
are the cluster's Worker JVMs and theirs (executors, Python workers); the master is neither. Stages:

- ingest: `lakehouse.simulator.landing.land_simulated` (no faults), a chunk of `compute.chunk_buildings`
  buildings at a time: locally each chunk simulated and landed in this process (memory: one chunk); on
  Spark the chunks are simulated on the executors and written to bronze from there (the driver sees
  counts). Before the timer, Spark runs one untimed warm-up task per executor (jar fetch, Python worker);
- curate, features: `lakehouse.curation.curate` / `build_features` over the year, on the runner
  `compute.runner` names (h-spark's lakehouse/runners.py);
- scoring: batch day-ahead forecasts of the champion SavedModel for every building
  (`wattflow.pipeline.score` on the runner; a one-epoch champion is trained and exported first, untimed,
  in a `--role train` process that the driver's memory figure leaves out).

The Spark driver's JVM heap is --spark-driver-memory (1g); the driver figure is reported by part too
(python, jvm). One command for both runners and sizes (the issue's table; ~25 min for P = 20 on a loaded
machine, P = 200 is ~10x the readings):

    python bench/portfolio.py --buildings 20 200 --runners local spark --chunk-buildings 10 --json bench/results/portfolio.json

Targets (issue 18, 2 cores): local peak RSS at P = 200 <= 6 GB; Spark driver peak RSS <= 2 GB; cluster
readings/s >= 40% of local at P = 200.

    python bench/portfolio.py --buildings 20 200 --runners local spark [--days 365] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# The repository first: `python bench/portfolio.py` puts bench/ on the path, whose serving.py would hide
# the `serving` package.
sys.path[:] = [str(REPO), *(p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent)]

SENSORS = 6
TARGETS = {"local_peak_rss_mb_at_200": 6144, "spark_driver_peak_rss_mb": 2048, "spark_vs_local_readings_per_s": 0.40}
START = "2024-01-01"


# ------------------------------------------------------------------------------------------- the child


STAGES = ("ingest", "curate", "features", "scoring")


def run_pipeline(buildings: int, days: int, progress: Path | None = None, stop_after: str = "scoring") -> dict:
    """The timed stages, in this process, on the runner the settings name; each stage's time is written to
    `progress` as it ends, so a run that fails later still reports the stages it finished."""
    import pandas as pd

    from lakehouse import curation
    from lakehouse.engine import get_engine
    from lakehouse.simulator import build_registry
    from lakehouse.simulator.landing import land_simulated
    from wattflow.settings import get_settings

    settings = get_settings()
    engine = get_engine(settings)  # compute.runner=spark implies the Spark engine
    start = pd.Timestamp(START, tz="UTC")
    end = start + pd.Timedelta(days=days)
    registry = build_registry(buildings, settings.simulator.seed)
    ids = registry.building_ids()
    stage_s: dict[str, float | None] = {}
    if getattr(engine, "name", "") == "spark":
        warm_up(engine.spark)

    t = time.perf_counter()
    # On Spark the chunks are simulated on the executors and MERGEd from there; locally, chunk after chunk.
    landing = land_simulated(engine, settings, buildings, start.to_pydatetime(), end.to_pydatetime())
    readings = landing.readings_landed
    stage_s["ingest"] = time.perf_counter() - t
    _progress(progress, stage_s)
    if stop_after == "ingest":
        return _partial(readings, stage_s)

    t = time.perf_counter()
    curated = curation.curate(engine, registry, start.to_pydatetime(), end.to_pydatetime(), settings, data_docs=False)
    stage_s["curate"] = time.perf_counter() - t
    _progress(progress, stage_s)
    if stop_after == "curate":
        return _partial(readings, stage_s)
    t = time.perf_counter()
    curation.build_features(engine, registry, start.to_pydatetime(), end.to_pydatetime(), settings)
    stage_s["features"] = time.perf_counter() - t
    _progress(progress, stage_s)
    if stop_after == "features":
        return _partial(readings, stage_s)
    stage_s["scoring"] = score(engine, settings, ids, end)
    _progress(progress, stage_s)
    return {"readings": readings, "stage_s": stage_s, "curate_ok": bool(getattr(curated, "success", True)),
            "python_peak_rss_mb_after": _PEAKS}


def _partial(readings: int, stage_s: dict) -> dict:
    """A run stopped early (--stop-after): the later stages are reported as not run (None)."""
    return {"readings": readings, "stage_s": {**{s: None for s in STAGES}, **stage_s}, "curate_ok": True,
            "python_peak_rss_mb_after": _PEAKS}


def warm_up(spark) -> None:
    """Untimed: the executors' first task fetches the driver's jars and starts a Python worker (tens of
    seconds on a loaded 2-core machine). A long-lived session pays that once, not per stage."""
    import pyarrow as pa

    def identity(batches):
        import lakehouse.curation  # noqa: F401  (the cores' imports, once per Python worker)

        yield from batches

    n = spark.sparkContext.defaultParallelism
    spark.range(0, n, 1, n).mapInArrow(identity, schema="id long").count()


_PEAKS: dict[str, int] = {}  # this process's own peak RSS (MB) as each stage ended: which stage set the peak


def _progress(path: Path | None, stage_s: dict) -> None:
    import resource

    _PEAKS[list(stage_s)[-1]] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    if path is not None:
        path.write_text(json.dumps(stage_s))
    print(f"stages so far: {json.dumps({k: round(v, 1) for k, v in stage_s.items()})}; python peak MB after each: "
          f"{json.dumps(_PEAKS)}", file=sys.stderr, flush=True)


def train_champion(buildings: int) -> None:
    """One short epoch on a few buildings (the tables through delta-rs: Delta either way), registered as
    the champion whatever the gate says: scoring speed does not depend on the model's accuracy."""
    from lakehouse.engine import get_engine
    from lakehouse.simulator import build_registry
    from ml import registry
    from ml.model import ModelParams
    from ml.pipeline import train_and_register
    from wattflow.settings import get_settings

    settings = get_settings()
    ids = build_registry(buildings, settings.simulator.seed).building_ids()
    outcome = train_and_register(get_engine(settings), settings, buildings=ids[: min(4, len(ids))],
                                 params=ModelParams.from_settings(settings.model, epochs=1, units=16))
    if not outcome.decision.promoted:
        registry._record(settings.model.model_name, registry.CHAMPION, outcome.version, "promote",
                         "bench/portfolio.py: scoring benchmark", {})
    # Exported here, as a deployment would, so the scoring driver finds the SavedModel and never loads TF.
    from wattflow.pipeline import champion_saved_model

    version, _ = champion_saved_model(settings)
    (settings.home / "bench-champion.txt").write_text(str(version))


def score(engine, settings, ids, end) -> float:
    """Batch day-ahead scoring (`wattflow.pipeline.score`, on the settings' runner) of every building from
    the last midnight with a full day of features after it."""
    import pandas as pd

    from wattflow.pipeline import score as batch_score

    # A champion to score with, trained untimed in its own process (bench/train_memory.py measures
    # training), outside the driver's memory figure: the sampler leaves the `--role train` tree out.
    env = {**os.environ, "WATTFLOW_COMPUTE__RUNNER": "local", "WATTFLOW_LAKEHOUSE__ENGINE": "delta_rs"}
    subprocess.run([sys.executable, __file__, "--role", "train", "--buildings", str(len(ids))], env=env, check=True)
    version = int((settings.home / "bench-champion.txt").read_text())
    t = time.perf_counter()
    batch_score([pd.Timestamp(end) - pd.Timedelta(days=2)], version=version, settings=settings)
    return time.perf_counter() - t


# ------------------------------------------------------------------------------------------ the parent


class MemorySampler(threading.Thread):
    """Peak RSS (MB) of the driver tree (the child) and of the Spark workers' trees, every `every_s`."""

    def __init__(self, child_pid: int, every_s: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.child_pid, self.every_s = child_pid, every_s
        self.driver_peak = self.worker_peak = 0.0
        self.parts_peak: dict[str, float] = {}  # the driver tree's peak by part: python (the child), jvm, other
        self.stop_event = threading.Event()

    def _tree_rss(self, root, parts: dict[str, float] | None = None) -> float:
        import psutil

        total = 0
        skipped: set[int] = set()
        for proc in [root, *root.children(recursive=True)]:
            try:
                # The untimed champion training (`--role train`) and its children are not the driver.
                cmd = proc.cmdline()
                trainer = "--role" in cmd and cmd[cmd.index("--role") + 1:][:1] == ["train"]
                if proc.pid in skipped or trainer:
                    skipped.update(c.pid for c in proc.children(recursive=True))
                    continue
                rss = proc.memory_info().rss
                total += rss
                if parts is not None:
                    part = "python" if proc.pid == root.pid else "jvm" if "java" in proc.name() else "other"
                    parts[part] = parts.get(part, 0.0) + rss / 2**20
            except psutil.Error:
                pass
        return total / 2**20

    def run(self) -> None:
        import psutil

        me = psutil.Process()
        while not self.stop_event.is_set():
            parts: dict[str, float] = {}
            try:
                driver = self._tree_rss(psutil.Process(self.child_pid), parts)
            except psutil.Error:
                driver = 0.0
            for k, v in parts.items():
                self.parts_peak[k] = max(self.parts_peak.get(k, 0.0), v)
            workers = 0.0
            for proc in me.children(recursive=False):
                try:
                    if any("deploy.worker.Worker" in part for part in proc.cmdline()):
                        workers += self._tree_rss(proc)
                except psutil.Error:
                    pass
            self.driver_peak, self.worker_peak = max(self.driver_peak, driver), max(self.worker_peak, workers)
            self.stop_event.wait(self.every_s)


def one_run(runner: str, buildings: int, days: int, cluster, chunk: int | None, driver_memory: str = "1g",
            spark_conf: dict[str, str] | None = None, stop_after: str = "scoring") -> dict:
    home = Path(tempfile.mkdtemp(prefix=f"wattflow-portfolio-{runner}-{buildings}-"))
    out = home / "run.json"
    env = {**os.environ, "WATTFLOW_HOME": str(home), "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3",
           "WATTFLOW_COMPUTE__RUNNER": runner}
    if chunk:
        env["WATTFLOW_COMPUTE__CHUNK_BUILDINGS"] = str(chunk)
    if cluster is not None:
        conf = cluster.driver_conf()
        env["WATTFLOW_COMPUTE__SPARK_MASTER"] = cluster.master_url
        env["WATTFLOW_LAKEHOUSE__SPARK_MASTER"] = cluster.master_url
        env["WATTFLOW_LAKEHOUSE__SPARK_CONF"] = json.dumps({**{k: v for k, v in conf.items() if k != "spark.master"},
                                                            **(spark_conf or {})})
        env["WATTFLOW_LAKEHOUSE__SPARK_DRIVER_MEMORY"] = driver_memory
        # One jar cache for every run (as the tests' session uses): a fresh home would re-resolve them (minutes).
        env.setdefault("WATTFLOW_LAKEHOUSE__SPARK_JARS_DIR", str(Path.home() / ".cache" / "wattflow" / "jars"))
    load = os.getloadavg()[0]
    started = time.perf_counter()
    # The child's log goes to a file beside the home (kept after the run), so a long run can be followed.
    log_path = Path(tempfile.gettempdir()) / f"wattflow-portfolio-{runner}-{buildings}.log"
    with log_path.open("w") as log_file:
        child = subprocess.Popen([sys.executable, __file__, "--role", "child", "--buildings", str(buildings), "--days",
                                  str(days), "--json", str(out), "--stop-after", stop_after], env=env,
                                 stdout=log_file, stderr=subprocess.STDOUT, text=True)
        sampler = MemorySampler(child.pid)
        sampler.start()
        child.wait()
    err = log_path.read_text(errors="replace")
    sampler.stop_event.set()
    sampler.join()
    wall = time.perf_counter() - started
    if child.returncode != 0:
        progress = out.with_suffix(".progress")
        done = json.loads(progress.read_text()) if progress.exists() else {}
        subprocess.run(["rm", "-rf", str(home)], check=False)
        return {"runner": runner, "buildings": buildings, "error": err[-3000:], "wall_s": round(wall, 1),
                "stage_s": {k: round(v, 1) for k, v in done.items()}, "driver_peak_rss_mb": round(sampler.driver_peak),
                "worker_peak_rss_mb": round(sampler.worker_peak)}
    result = json.loads(out.read_text())
    subprocess.run(["rm", "-rf", str(home)], check=False)
    timed = {k: v for k, v in result["stage_s"].items() if v is not None}
    total = sum(timed.values())
    return {
        "runner": runner, "buildings": buildings, "readings": result["readings"],
        "stage_s": {k: (None if v is None else round(v, 1)) for k, v in result["stage_s"].items()},
        "total_s": round(total, 1), "readings_per_s": round(result["readings"] / total) if total else None,
        "driver_peak_rss_mb": round(sampler.driver_peak), "worker_peak_rss_mb": round(sampler.worker_peak),
        "driver_peak_rss_mb_by_part": {k: round(v) for k, v in sampler.parts_peak.items()},
        "python_peak_rss_mb_after": result.get("python_peak_rss_mb_after", {}),
        "wall_s": round(wall, 1), "load_1m_at_start": round(load, 1), "cores": os.cpu_count(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--buildings", type=int, nargs="+", default=[20, 200])
    parser.add_argument("--runners", nargs="+", choices=["local", "spark"], default=["local", "spark"])
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--chunk-buildings", type=int, default=None, help="compute.chunk_buildings (default: settings')")
    parser.add_argument("--spark-worker-memory", default="2g")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--spark-driver-memory", default="1g",
                        help="the driver JVM's heap: it plans jobs and holds Delta logs, never readings")
    parser.add_argument("--spark-conf", nargs="*", default=[], metavar="KEY=VALUE",
                        help="extra Spark settings for the driver, e.g. spark.eventLog.enabled=true")
    parser.add_argument("--stop-after", choices=STAGES, default="scoring",
                        help="end each run after this stage (quicker partial runs; totals then cover the stages run)")
    parser.add_argument("--role", choices=["child", "train"], default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "train":
        train_champion(args.buildings[0])
        return
    if args.role == "child":
        args.json.write_text(json.dumps(run_pipeline(args.buildings[0], args.days, args.json.with_suffix(".progress"),
                                                     args.stop_after)))
        return

    runs = []
    for runner in args.runners:
        cluster = None
        if runner == "spark":
            from lakehouse.spark_cluster import start_cluster

            cluster = start_cluster(workers=2, cores=1, memory=args.spark_worker_memory)
        try:
            for p in args.buildings:
                runs.append(one_run(runner, p, args.days, cluster, args.chunk_buildings, args.spark_driver_memory,
                                    dict(kv.split("=", 1) for kv in args.spark_conf), args.stop_after))
                print(json.dumps(runs[-1]), flush=True)
        finally:
            if cluster is not None:
                cluster.stop()
    print_table(runs)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"runs": runs, "targets": TARGETS, "verdicts": verdicts(runs)}, indent=2))


def verdicts(runs: list[dict]) -> dict:
    ok = {(r["runner"], r["buildings"]): r for r in runs if "error" not in r}
    out: dict[str, object] = {}
    local200, spark200 = ok.get(("local", 200)), ok.get(("spark", 200))
    if local200:
        out["local_peak_rss_at_200_ok"] = local200["driver_peak_rss_mb"] <= TARGETS["local_peak_rss_mb_at_200"]
    spark = [r for (runner, _), r in ok.items() if runner == "spark"]
    if spark:
        out["spark_driver_peak_rss_ok"] = all(r["driver_peak_rss_mb"] <= TARGETS["spark_driver_peak_rss_mb"] for r in spark)
    if local200 and spark200:
        out["spark_vs_local_readings_per_s"] = round(spark200["readings_per_s"] / local200["readings_per_s"], 2)
    return out


def print_table(runs: list[dict]) -> None:
    stages = ["ingest", "curate", "features", "scoring"]
    print(f"{'runner':>6} {'P':>4} {'readings':>10} " + " ".join(f"{s + ' s':>10}" for s in stages)
          + f" {'total s':>8} {'readings/s':>10} {'driver MB':>9} {'worker MB':>9} {'load':>5}")
    for r in runs:
        if "error" in r:
            print(f"{r['runner']:>6} {r['buildings']:>4} FAILED: {r['error'].splitlines()[-1] if r['error'] else '?'}")
            continue
        cells = " ".join(f"{'n/a' if r['stage_s'].get(s) is None else r['stage_s'][s]:>10}" for s in stages)
        print(f"{r['runner']:>6} {r['buildings']:>4} {r['readings']:>10} {cells} {r['total_s']:>8} {r['readings_per_s']:>10} "
              f"{r['driver_peak_rss_mb']:>9} {r['worker_peak_rss_mb']:>9} {r['load_1m_at_start']:>5}")
    print(f"{os.cpu_count()} cores; targets: {TARGETS}; verdicts: {verdicts(runs)}")


if __name__ == "__main__":
    main()
