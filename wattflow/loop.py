"""Run the platform's loop through Airflow on one machine: `make demo` and the end-to-end test.

Each DAG runs as a real Airflow DAG run (`DAG.test()`: the task SDK, XComs, asset events and the
metadata DB are all Airflow's own), and the asset-triggered DAGs run when, and only when, their upstream
emitted the asset event: the runner plays the scheduler's part in one process so the whole loop fits
in a few minutes on a laptop. `make up` runs the real scheduler instead.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from wattflow.airflow_env import airflow_environment
from wattflow.assets import (
    BRONZE_READINGS_URI,
    BRONZE_WEATHER_URI,
    CHAMPION_URI,
    GOLD_FEATURES_URI,
    RETRAIN_REQUESTED_URI,
)
from wattflow.settings import Settings, get_settings

UTC = dt.timezone.utc


@dataclass
class DagRunReport:
    dag_id: str
    state: str
    seconds: float
    returns: dict[str, Any] = field(default_factory=dict)  # task_id -> return value (XCom)
    task_states: dict[str, str] = field(default_factory=dict)


class DagRunFailed(RuntimeError):
    """A DAG run ended in a state other than success; the message names the failed tasks."""


class Airflow:
    """An Airflow installation under WATTFLOW_HOME, driven in-process."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()
        self.env = airflow_environment(self.settings)
        # Task logs go to files under AIRFLOW_HOME; the console gets warnings only (the runner reports).
        self.env.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", os.environ.get("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING"))
        os.environ.update(self.env)  # before the first airflow import of this process
        Path(self.env["AIRFLOW_HOME"]).mkdir(parents=True, exist_ok=True)
        self.log_path = self.settings.home / "logs" / "dag-runs.log"
        self._bag = None

    def migrate(self) -> None:
        airflow = str(Path(sys.executable).with_name("airflow"))
        env = {**os.environ, **self.env}
        subprocess.run([airflow, "db", "migrate"], env=env, check=True, capture_output=True, text=True)
        cfg = self.settings.airflow
        subprocess.run([airflow, "pools", "set", cfg.training_pool, str(cfg.training_pool_slots),
                        "Model training and tuning: CPU-heavy, one at a time"],
                       env=env, check=True, capture_output=True, text=True)

    @property
    def dags(self):
        if self._bag is None:
            from airflow.dag_processing.dagbag import DagBag

            self._bag = DagBag(dag_folder=self.env["AIRFLOW__CORE__DAGS_FOLDER"])
            if self._bag.import_errors:
                raise RuntimeError(f"DAG import errors: {self._bag.import_errors}")
        return self._bag.dags

    def run(self, dag_id: str, conf: dict[str, Any] | None = None, logical_date: dt.datetime | None = None,
            *, allow_skipped: tuple[str, ...] = ()) -> DagRunReport:
        """One DAG run; raises DagRunFailed unless it succeeded."""
        from airflow.models.taskinstance import TaskInstance
        from airflow.models.xcom import XComModel
        from airflow.utils.session import create_session
        from sqlalchemy import select

        t0 = time.perf_counter()
        with _output_to(self.log_path):
            run = self.dags[dag_id].test(logical_date=logical_date or dt.datetime.now(UTC), run_conf=conf or {})
        with create_session() as session:
            tis = session.scalars(select(TaskInstance).where(TaskInstance.dag_id == dag_id, TaskInstance.run_id == run.run_id)).all()
            states = {ti.task_id: str(ti.state.value if hasattr(ti.state, "value") else ti.state) for ti in tis}
            returns = {}
            for row in session.scalars(select(XComModel).where(XComModel.dag_id == dag_id, XComModel.run_id == run.run_id,
                                                               XComModel.key == "return_value")).all():
                returns[row.task_id] = XComModel.deserialize_value(row)
        state = str(run.state.value if hasattr(run.state, "value") else run.state)
        report = DagRunReport(dag_id, state, time.perf_counter() - t0, returns, states)
        failed = [t for t, s in states.items() if s not in ("success", "skipped")]
        if state != "success" or failed:
            raise DagRunFailed(f"{dag_id} ended {state}; failed tasks: {failed or 'none'} ({states}); "
                               f"task logs in {self.log_path}")
        return report

    def asset_events(self, uri: str, since: dt.datetime | None = None) -> list[dict[str, Any]]:
        from airflow.models.asset import AssetEvent, AssetModel
        from airflow.utils.session import create_session
        from sqlalchemy import select

        with create_session() as session:
            query = select(AssetEvent).join(AssetModel, AssetEvent.asset_id == AssetModel.id).where(AssetModel.uri == uri)
            if since is not None:
                query = query.where(AssetEvent.timestamp > since)
            return [{"timestamp": e.timestamp, "extra": dict(e.extra or {}), "source_dag_id": e.source_dag_id}
                    for e in session.scalars(query.order_by(AssetEvent.timestamp)).all()]


@contextlib.contextmanager
def _output_to(path: Path):
    """Send this process's stdout and stderr (file descriptors, so the task SDK's loggers and TensorFlow's
    C++ logs follow too) to `path` while a DAG runs: the console keeps the runner's one line per DAG run."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(path, "ab") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


class ServingProcess:
    """`wattflow serve` in the background on the settings' ports, serving the deployed models."""

    def __init__(self, settings: Settings, log_path: Path) -> None:
        self.settings = settings
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    def start(self) -> "ServingProcess":
        config = self.settings.model_base_path / "models.config"
        config.parent.mkdir(parents=True, exist_ok=True)
        if not config.exists():
            config.write_text("model_config_list {\n}\n")
        wattflow = str(Path(sys.executable).with_name("wattflow"))
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen([wattflow, "serve", "--enable_batching"], stdout=open(self.log_path, "w"),
                                     stderr=subprocess.STDOUT, env={**os.environ, "WATTFLOW_HOME": str(self.settings.home.resolve())})
        self._wait_ready()
        return self

    def _wait_ready(self, timeout_s: float = 120.0) -> None:
        import urllib.request

        url = f"http://{self.settings.serving.host}:{self.settings.serving.rest_port}/monitoring/prometheus/metrics"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc and self.proc.poll() is not None:
                raise RuntimeError(f"wattflow serve exited with {self.proc.returncode}; see {self.log_path}")
            try:
                urllib.request.urlopen(url, timeout=1)
                return
            except OSError as exc:
                if getattr(exc, "code", None):  # an HTTP error means the server answers
                    return
                time.sleep(0.5)
        raise TimeoutError(f"wattflow serve did not answer on {url} within {timeout_s:.0f} s; see {self.log_path}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()


@dataclass
class LoopReport:
    runs: list[DagRunReport] = field(default_factory=list)
    champions: list[dict[str, Any]] = field(default_factory=list)
    decisions: list[dict[str, Any]] = field(default_factory=list)
    retrain_requests: list[dict[str, Any]] = field(default_factory=list)
    served_versions: list[str] = field(default_factory=list)


def _iso(value: dt.datetime) -> str:
    return value.astimezone(UTC).isoformat()


def run_loop(
    settings: Settings | None = None,
    *,
    initial_weeks: int = 8,
    drift_days: int = 14,
    tune_trials: int = 2,
    say: Callable[[str], None] = print,
) -> LoopReport:
    """The whole loop through Airflow on the simulated world of the settings:

    ingest `initial_weeks` → curate/validate → features → tune → train → gate → deploy → forecast over gRPC
    → then day by day after the world's drift date: ingest, curate, forecast, monitor; a retrain request
    triggers train → deploy, and the loop goes on until `drift_days` days have been monitored.
    """
    settings = settings or get_settings()
    report = LoopReport()
    airflow = Airflow(settings)
    say("airflow: migrating the metadata DB and creating the training pool")
    airflow.migrate()
    start = dt.datetime.fromisoformat(settings.simulator.world_start).replace(tzinfo=UTC)
    t_drift = start + dt.timedelta(weeks=initial_weeks)

    def run(dag_id: str, conf: dict[str, Any] | None = None) -> DagRunReport:
        result = airflow.run(dag_id, conf)
        report.runs.append(result)
        say(f"  {dag_id:<20} {result.state:<8} {result.seconds:6.1f} s  {_brief(result)}")
        return result

    def land_and_curate(a: dt.datetime, b: dt.datetime) -> None:
        since = dt.datetime.now(UTC)
        run("ingest_sensors", {"start": _iso(a), "end": _iso(b)})
        # Day-ahead forecasts for the first day were issued the day before: land those too.
        run("ingest_weather", {"start": _iso(a - dt.timedelta(days=1)), "end": _iso(b)})
        events = airflow.asset_events(BRONZE_READINGS_URI, since) + airflow.asset_events(BRONZE_WEATHER_URI, since)
        if not events:
            raise DagRunFailed("ingest emitted no bronze asset event: curate_and_validate would not run")
        # The scheduler's part: the bronze events trigger curate_and_validate over the union of their intervals.
        window_start = min(dt.datetime.fromisoformat(e["extra"]["start"]) for e in events)
        window_end = max(dt.datetime.fromisoformat(e["extra"]["end"]) for e in events)
        run("curate_and_validate", {"start": _iso(max(window_start, a)), "end": _iso(window_end)})
        if not airflow.asset_events(GOLD_FEATURES_URI, since):
            raise DagRunFailed("curate_and_validate emitted no gold features event")

    def train_and_deploy(reason: str) -> dict[str, Any] | None:
        since = dt.datetime.now(UTC)
        trained = run("train_model", {"trials": tune_trials, "timeout_s": settings.airflow.tune_timeout_s, "reason": reason})
        outcome = trained.returns.get("train_and_gate", {})
        report.champions.append(outcome)
        champion_events = airflow.asset_events(CHAMPION_URI, since)
        if not champion_events:
            say(f"  gate: version {outcome.get('version')} not promoted ({outcome.get('reason')})")
            return None
        version = int(champion_events[-1]["extra"]["version"])
        run("deploy_model", {"version": version})
        return outcome

    say(f"ingest, validate and build features: {initial_weeks} weeks from {start:%Y-%m-%d}")
    land_and_curate(start, t_drift)
    say("tune, train, backtest, register and gate")
    if train_and_deploy("initial training") is None:
        raise DagRunFailed("the first model did not pass the promotion gate; nothing to serve")

    say(f"after {t_drift:%Y-%m-%d}: day by day — forecast over gRPC, ingest, curate, monitor")
    for day in range(drift_days):
        origin = t_drift + dt.timedelta(days=day)
        forecast = run("forecast", {"start": _iso(origin), "end": _iso(origin + dt.timedelta(hours=1)), "every_h": 24})
        report.served_versions += forecast.returns.get("forecast_buildings", {}).get("served_versions", [])
        land_and_curate(origin, origin + dt.timedelta(days=1))
        since = dt.datetime.now(UTC)
        checked = run("monitor", {"as_of": _iso(origin + dt.timedelta(days=1))})
        decision = checked.returns.get("check", {})
        report.decisions.append(decision)
        requests = airflow.asset_events(RETRAIN_REQUESTED_URI, since)
        if requests:
            report.retrain_requests += requests
            say(f"  monitor requested a retrain: {decision.get('reasons')}")
            train_and_deploy("retrain requested by monitoring")
    return report


def _brief(result: DagRunReport) -> str:
    keys = ("landed", "hours", "rows", "version", "promoted", "decision", "served_versions", "state")
    for value in reversed(list(result.returns.values())):  # the last task's result says the most
        if isinstance(value, dict) and any(k in value for k in keys):
            return ", ".join(f"{k}={value[k]}" for k in keys if k in value)[:110]
    return ""


def table_fingerprints(settings: Settings, names: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """Version, row count and a content hash (bookkeeping columns excluded) per table."""
    import hashlib

    import pyarrow as pa

    from lakehouse.engine import get_engine
    from lakehouse.schemas import contract

    engine = get_engine(settings)
    out = {}
    for name in names:
        c = contract(name)
        columns = [n for n in c.schema.names if n not in c.volatile]
        table = engine.read(c, columns=columns).sort_by([(k, "ascending") for k in c.keys])
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        out[name] = {"version": engine.version(c), "rows": table.num_rows,
                     "sha256": hashlib.sha256(sink.getvalue().to_pybytes()).hexdigest()}
    return out


BACKFILL_TABLES = ("bronze.sensor_readings", "bronze.weather", "quarantine.sensor_readings", "silver.building_hourly", "gold.features")


def backfill(start: dt.datetime, end: dt.datetime, settings: Settings | None = None) -> dict[str, Any]:
    """Re-run ingest and curate through Airflow over [start, end); returns the tables before and after."""
    settings = settings or get_settings()
    airflow = Airflow(settings)
    before = table_fingerprints(settings, BACKFILL_TABLES)
    conf = {"start": _iso(start), "end": _iso(end)}
    for dag_id, run_conf in (("ingest_sensors", conf), ("ingest_weather", {"start": _iso(start - dt.timedelta(days=1)), "end": conf["end"]}),
                             ("curate_and_validate", conf)):
        airflow.run(dag_id, run_conf)
    return {"before": before, "after": table_fingerprints(settings, BACKFILL_TABLES)}


if __name__ == "__main__":
    import json

    # python -m wattflow.loop backfill START END
    if len(sys.argv) == 4 and sys.argv[1] == "backfill":
        result = backfill(dt.datetime.fromisoformat(sys.argv[2]).replace(tzinfo=UTC),
                          dt.datetime.fromisoformat(sys.argv[3]).replace(tzinfo=UTC))
        print(json.dumps(result))
    else:
        raise SystemExit("usage: python -m wattflow.loop backfill START END")
