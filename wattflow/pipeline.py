"""The steps the DAGs call, one function per task: plain, typed, callable without Airflow.

Each step resolves the settings, the table engine and the building registry, calls the stage's own
functions (lakehouse, data_quality, ml, serving) and returns a small JSON-able summary that Airflow keeps
as the task's XCom. Heavy libraries are imported inside the steps: DAG files import this module lazily
inside tasks only, but the CLI and tests import it directly.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from functools import lru_cache
from typing import Any, Sequence

from wattflow.lineage import step_run
from wattflow.log import get_logger
from wattflow.settings import Settings, get_settings

log = get_logger(__name__)
# How a training run's reason starts when monitoring asked for it (the DAG's asset trigger, or by hand).
REQUESTED_RETRAIN = "retrain requested"


class DeploymentFailed(RuntimeError):
    """The new version never became AVAILABLE or failed its canary request; the message says which."""


# -- shared plumbing ----------------------------------------------------------------------------------


def _engine(settings: Settings | None = None):
    from lakehouse.engine import get_engine

    return get_engine(settings or get_settings())


def registry(settings: Settings | None = None):
    """The building registry as the lakehouse holds it (`reference.buildings`), else the simulated world's."""
    from lakehouse.buildings import BuildingRegistry
    from lakehouse.schemas import BUILDINGS

    settings = settings or get_settings()
    engine = _engine(settings)
    if engine.version(BUILDINGS) is not None:
        table = engine.read(BUILDINGS)
        if table.num_rows:
            return BuildingRegistry.from_arrow(table)
    return simulated_world(settings).registry


def _world_key(settings: Settings) -> tuple:
    sim = settings.simulator
    return (sim.world_buildings, sim.world_start, sim.world_end, sim.seed, sim.interval_minutes,
            sim.world_faults, tuple(sim.world_drift), sim.weather_forecast_issue_hour_utc)


@lru_cache(maxsize=2)
def _simulate(key: tuple):
    from lakehouse.simulator import simulate_portfolio
    from lakehouse.simulator.config import FaultConfig, parse_drift

    n, start, end, seed, interval, faults, drift, issue_hour = key
    return simulate_portfolio(
        n, start, end, seed=seed, interval_minutes=interval, faults=FaultConfig() if faults else None,
        drift=[parse_drift(d) for d in drift], forecast_issue_hour_utc=issue_hour,
    )


def simulated_world(settings: Settings | None = None):
    """The simulated portfolio the `simulator` source replays. Deterministic: the same settings give the
    same readings for any interval, which is what makes re-runs and backfills change nothing."""
    return _simulate(_world_key(settings or get_settings()))


def _in_window(table, column: str, start: dt.datetime, end: dt.datetime):
    import pyarrow as pa
    import pyarrow.compute as pc

    ts = pc.cast(table.column(column), pa.timestamp("us", tz="UTC"))
    mask = pc.and_(pc.greater_equal(ts, pa.scalar(start, pa.timestamp("us", tz="UTC"))),
                   pc.less(ts, pa.scalar(end, pa.timestamp("us", tz="UTC"))))
    return table.filter(mask)


def _iso_utc(value) -> str:
    """One spelling of an instant in lineage records: ISO 8601 in UTC (what the walk back compares)."""
    import pandas as pd

    stamp = pd.Timestamp(value)
    return (stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")).isoformat()


def _summary(obj: Any) -> dict[str, Any]:
    """A JSON-able view of a result dataclass for XCom."""
    if dataclasses.is_dataclass(obj):
        obj = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): _summary(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_summary(v) for v in obj]  # type: ignore[return-value]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj  # type: ignore[return-value]
    if isinstance(obj, dt.datetime):
        return obj.isoformat()  # type: ignore[return-value]
    return str(obj)  # type: ignore[return-value]


# -- ingest -------------------------------------------------------------------------------------------


def ingest_sensors(start: dt.datetime, end: dt.datetime, *, buildings: Sequence[str] | None = None,
                   settings: Settings | None = None) -> dict[str, Any]:
    """Land the readings of [start, end) from the configured source into bronze (idempotent)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from lakehouse.bronze import land_readings
    from lakehouse.schemas import BUILDINGS, SENSOR_READINGS

    settings = settings or get_settings()
    engine = _engine(settings)
    source = settings.airflow.sensor_source
    if source == "influx":
        from lakehouse.sources.influx import ingest_influx

        pulled = ingest_influx(start, end, building_ids=list(buildings) if buildings else None, engine=engine,
                               registry=registry(settings))
        return {"source": source, **_summary(pulled)}
    if source == "mqtt":
        from lakehouse.sources.mqtt import ingest_mqtt

        # The stream's persistent session queued what arrived since the last run: drain it, then stop.
        stats = ingest_mqtt(idle_timeout=settings.mqtt.batch_max_age_s * 5, engine=engine, settings=settings)
        return {"source": source, **_summary(stats)}
    if source == "kafka":
        from lakehouse.sources.kafka import ingest_kafka

        # The consumer group's committed offsets say what arrived since the last run (scheduled, or started
        # by the sensor topic's watcher): drain it, then stop. A run started while another drains finds
        # little or nothing: the group hands each partition to one consumer, and landing is idempotent.
        stats = ingest_kafka(idle_timeout=settings.kafka.batch_max_age_s * 5, engine=engine, settings=settings)
        return {"source": source, **_summary(stats)}
    world = simulated_world(settings)
    engine.upsert(BUILDINGS, world.registry.to_arrow())
    readings = _in_window(world.readings, "ts", start, end)
    if buildings:
        readings = readings.filter(pc.is_in(readings.column("building_id"), value_set=pa.array(list(buildings))))
    batch_id = f"sim-{start:%Y%m%dT%H%M}-{end:%Y%m%dT%H%M}"
    with step_run("ingest_sensors", settings) as lineage:
        landed = land_readings(readings, source="simulator", registry=world.registry, engine=engine, batch_id=batch_id)
        lineage.wrote_table(SENSOR_READINGS, landed.readings.version if landed.readings else None)
        lineage.details.update(start=_iso_utc(start), end=_iso_utc(end), batch_id=batch_id, source="simulator",
                               received=landed.received, landed=landed.landed, quarantined=landed.quarantined)
    log.info("ingested sensor readings", start=start.isoformat(), end=end.isoformat(), landed=landed.landed,
             quarantined=landed.quarantined)
    return {"source": source, "start": start.isoformat(), "end": end.isoformat(), "received": landed.received,
            "landed": landed.landed, "quarantined": landed.quarantined,
            "version": landed.readings.version if landed.readings else None}


def ingest_weather(start: dt.datetime, end: dt.datetime, *, settings: Settings | None = None) -> dict[str, Any]:
    """Land weather observations of [start, end) and the forecasts issued in it into bronze."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from lakehouse.bronze import land_weather
    from lakehouse.schemas import WEATHER

    settings = settings or get_settings()
    engine = _engine(settings)
    weather = simulated_world(settings).weather
    observations = _in_window(weather.filter(pc.equal(weather.column("kind"), "observation")), "ts", start, end)
    forecasts = _in_window(weather.filter(pc.equal(weather.column("kind"), "forecast")), "issued_at", start, end)
    batch_id = f"sim-weather-{start:%Y%m%dT%H%M}-{end:%Y%m%dT%H%M}"
    with step_run("ingest_weather", settings) as lineage:
        landed = land_weather(pa.concat_tables([observations, forecasts]), source="simulator", engine=engine,
                              batch_id=batch_id)
        lineage.wrote_table(WEATHER, landed.readings.version if landed.readings else None)
        lineage.details.update(start=_iso_utc(start), end=_iso_utc(end), batch_id=batch_id, source="simulator",
                               landed=landed.landed, quarantined=landed.quarantined)
    return {"start": start.isoformat(), "end": end.isoformat(), "landed": landed.landed,
            "quarantined": landed.quarantined, "version": landed.readings.version if landed.readings else None}


# -- curate -------------------------------------------------------------------------------------------


def curate(start: dt.datetime, end: dt.datetime, *, buildings: Sequence[str] | None = None,
           settings: Settings | None = None) -> dict[str, Any]:
    """Bronze [start, end) → GE checkpoints → silver hourly (+ quarantine by policy)."""
    from lakehouse import curation
    from lakehouse.schemas import BUILDING_HOURLY, QUALITY_RESULTS, SENSOR_READINGS, WEATHER

    settings = settings or get_settings()
    engine = _engine(settings)
    with step_run("curate", settings) as lineage:
        lineage.read_table(engine, SENSOR_READINGS)
        lineage.read_table(engine, WEATHER)
        result = curation.curate(engine, registry(settings), start, end, settings,
                                 building_ids=list(buildings) if buildings else None)
        lineage.wrote_table(BUILDING_HOURLY, result.silver_version if result.silver_changed else None)
        lineage.wrote_table(QUALITY_RESULTS, engine.version(QUALITY_RESULTS) if result.results else None)
        lineage.details.update(start=_iso_utc(start), end=_iso_utc(end), hours=result.hours, rejected=result.rejected,
                               ge_batches=sorted({r.batch for r in result.results}),
                               failed_expectations=[r.expectation for r in result.results if not r.success])
    docs = result.data_docs
    return {"start": start.isoformat(), "end": end.isoformat(), "hours": result.hours, "rejected": result.rejected,
            "silver_version": result.silver_version, "silver_changed": result.silver_changed,
            "failed_expectations": [r.expectation for r in result.results if not r.success],
            "data_docs_url": (docs if docs is None or "://" in docs else f"file://{docs}")}


def build_features(start: dt.datetime, end: dt.datetime, *, buildings: Sequence[str] | None = None,
                   settings: Settings | None = None) -> dict[str, Any]:
    """Silver [start, end) → gold features (idempotent per interval)."""
    from lakehouse import curation
    from lakehouse.schemas import BUILDING_HOURLY, FEATURES, WEATHER

    settings = settings or get_settings()
    engine = _engine(settings)
    with step_run("build_features", settings) as lineage:
        lineage.read_table(engine, BUILDING_HOURLY)
        lineage.read_table(engine, WEATHER)
        result = curation.build_features(engine, registry(settings), start, end, settings)
        lineage.wrote_table(FEATURES, result.gold_version if result.gold_changed else None)
        lineage.details.update(start=_iso_utc(start), end=_iso_utc(end), rows=result.rows,
                               ge_batches=sorted({r.batch for r in result.results}))
    return {"start": start.isoformat(), "end": end.isoformat(), "rows": result.rows,
            "gold_version": result.gold_version, "gold_changed": result.gold_changed}


# -- train --------------------------------------------------------------------------------------------


def _mlflow_run_url(settings: Settings, run_id: str | None) -> str | None:
    if not run_id:
        return None
    import mlflow

    from ml import tracking

    tracking.configure(settings)
    experiment_id = mlflow.get_run(run_id).info.experiment_id
    base = settings.mlflow_ui_url.rstrip("/")
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}"


def tune(trials: int, timeout_s: float, *, reason: str = "scheduled", settings: Settings | None = None) -> dict[str, Any]:
    """Bounded Optuna search on the training period; returns the best parameters (none when trials=0).

    A retrain that monitoring requested is not tuned: the world changed, not the best configuration, and a
    study would rank configurations on the data from before the change; `train` refits the champion's.
    """
    import pandas as pd

    from ml.model import ModelParams
    from ml.pipeline import building_timezones, default_train_end, read_features, spec_from_settings
    from ml.tuning import tune as run_study

    settings = settings or get_settings()
    if reason.startswith(REQUESTED_RETRAIN):
        return {"best_params": None, "trials": 0, "skipped": "retrain requested: refits the champion's configuration"}
    if trials <= 0:
        return {"best_params": None, "trials": 0}
    engine = _engine(settings)
    frame, _ = read_features(engine)
    train_end = default_train_end(frame, settings.model.backtest_days)
    base = ModelParams.from_settings(settings.model)
    result = run_study(frame[pd.to_datetime(frame["ts"], utc=True) < train_end], settings, n_trials=trials,
                       timeout_s=timeout_s, spec=spec_from_settings(settings), base_params=base,
                       timezones=building_timezones(engine, settings))
    best = result.best_params(base)
    return {"best_params": {**dataclasses.asdict(best), "lookback_h": result.best_lookback(settings.model.lookback_h)},
            "best_value": result.best_value, "trials": result.n_trials, "pruned": result.n_pruned,
            "mlflow_run_url": _mlflow_run_url(settings, result.parent_run_id)}


def train(best_params: dict[str, Any] | None = None, *, reason: str = "scheduled",
          settings: Settings | None = None) -> dict[str, Any]:
    """Train on gold features, backtest against champion and baselines, register, gate.

    When monitoring requested the retrain and the challenger was promoted, also checks that the new
    champion beats the old one on the drifted period and records that outcome.
    """
    from lakehouse.schemas import FEATURES
    from ml.model import ModelParams
    from ml.pipeline import spec_from_settings, train_and_register

    settings = settings or get_settings()
    engine = _engine(settings)
    params, spec = None, None
    retrain_requested = reason.startswith(REQUESTED_RETRAIN)
    since = None
    if retrain_requested:
        champion_params, since = _champion_training(settings)
        best_params = best_params or champion_params
    if best_params:
        values = dict(best_params)
        lookback = int(values.pop("lookback_h", settings.model.lookback_h))
        params, spec = ModelParams(**values), spec_from_settings(settings, lookback_h=lookback)
    with step_run("train", settings) as lineage:
        outcome = train_and_register(engine, settings, params=params, spec=spec, new_data_since=since)
        decision = outcome.decision
        # The exact table version the run read (logged on the MLflow run too), and the version it registered.
        lineage.inputs.append(lineage.table(FEATURES, outcome.dataset.version))
        lineage.outputs.append(lineage.model(outcome.model_name, int(outcome.version)))
        lineage.details.update(mlflow_run_id=outcome.run_id, trigger=reason, promoted=bool(decision.promoted),
                               gate=decision.reason,
                               train_end=outcome.train_end.isoformat() if outcome.train_end is not None else None)
    summary = {
        "run_id": outcome.run_id, "model_name": outcome.model_name, "version": int(outcome.version),
        "promoted": bool(decision.promoted), "reason": decision.reason, "trigger": reason,
        "delta_table": outcome.dataset.uri, "delta_version": outcome.dataset.version,
        "metrics": _summary(outcome.backtest), "mlflow_run_url": _mlflow_run_url(settings, outcome.run_id),
    }
    if outcome.train_end is not None:
        summary["train_end"] = outcome.train_end.isoformat()
    if decision.promoted and retrain_requested:
        summary["retrain_outcome"] = _evaluate_retrain(settings, engine, outcome.train_end)
    return summary


def _champion_training(settings: Settings) -> tuple[dict[str, Any] | None, Any]:
    """The serving champion's hyperparameters and the last hour of data it learnt from (registry lineage),
    (None, None) when there is none: a requested retrain refits them on what came after."""
    import pandas as pd

    from ml import registry
    from ml.tracking import configure

    configure(settings)
    name = settings.model.model_name
    version = registry.alias_version(name, registry.CHAMPION)
    if version is None:
        return None, None
    end = registry.lineage(name, version).get("train_end")
    return registry.training_params_of(name, version), pd.Timestamp(end) if end else None


def _evaluate_retrain(settings: Settings, engine, learnt_until=None) -> dict[str, Any] | None:
    from monitoring.monitor import evaluate_retrain
    from lakehouse.schemas import MONITORING_DECISIONS

    decisions = engine.read(MONITORING_DECISIONS).to_pandas()
    retrains = decisions[decisions["decision"] == "retrain"].sort_values("as_of")
    if retrains.empty:
        return None
    # The drifted period starts where the policy began to see it: the first check of the run that led here.
    drift_start = _drift_start(decisions, retrains.iloc[-1]["as_of"], settings.monitor.accuracy_window_days)
    # Hours the new champion learnt from would flatter it: the comparison starts where its training stopped.
    if learnt_until is not None:
        drift_start = max(drift_start, learnt_until)
    outcome = evaluate_retrain(engine, settings, drift_start)
    return _summary(outcome)


def _drift_start(decisions, retrain_as_of, window_days: int):
    """Where the drifted period began: the window of the earliest check in the unbroken run of checks
    (back from the retrain decision) that saw drift or degradation."""
    import json

    import pandas as pd

    window = pd.Timedelta(days=window_days)
    checks = decisions[decisions["as_of"] <= retrain_as_of].sort_values("as_of")
    start = retrain_as_of - window
    for _, row in checks.iloc[::-1].iterrows():
        reasons = json.loads(row["reasons"] or "[]")
        if row["decision"] == "hold" and not any("drift" in r or "degrad" in r for r in reasons):
            break
        start = row["as_of"] - window
    return start


# -- deploy -------------------------------------------------------------------------------------------


def _server_target(settings: Settings) -> str:
    return f"{settings.serving.host}:{settings.serving.grpc_port}"


def _write_labels(settings: Settings, model_name: str, labels: dict[str, int], versions: set[int]) -> None:
    from serving.export import model_config, read_model_config, write_model_config

    config_path = settings.model_base_path / "models.config"
    existing = read_model_config(config_path)
    write_model_config(config_path, model_config(existing, model_name, settings.model_base_path / model_name,
                                                 sorted(versions), labels))


def _labels(settings: Settings, model_name: str) -> dict[str, int]:
    from serving.export import _current_labels, read_model_config

    return _current_labels(read_model_config(settings.model_base_path / "models.config"), model_name)


def deploy_export(version: int | None = None, *, settings: Settings | None = None) -> dict[str, Any]:
    """Export the champion (or `version`) into the model base path and add it to the served versions.

    Labels stay where they are: TF Serving refuses a label on a version it has not loaded, so `stable`
    moves only after the new version is AVAILABLE and has answered a canary request.
    """
    from serving.export import export_version

    settings = settings or get_settings()
    target, version_dir, warmups, existed = export_version(settings, version)
    previous = _labels(settings, target.model_name)
    _write_labels(settings, target.model_name, previous, {target.version, *previous.values()})
    return {"model_name": target.model_name, "version": target.version, "version_dir": str(version_dir),
            "warmup_records": warmups, "previous_stable": previous.get("stable")}


def wait_until_available(exported: dict[str, Any], *, timeout_s: float = 180.0,
                         settings: Settings | None = None) -> dict[str, Any]:
    from serving.client import ForecastClient

    settings = settings or get_settings()
    with ForecastClient(_server_target(settings), model_name=exported["model_name"]) as client:
        status = client.wait_until_available(int(exported["version"]), timeout_s)
    return {"version": exported["version"], "state": str(getattr(status, "state", status))}


def _served_forecast(settings: Settings, model_name: str, *, version: int | None = None, label: str | None = None):
    """One real forecast over gRPC, by version number or by label; raises DeploymentFailed on a fallback."""
    from serving.client import ForecastClient

    building_id = registry(settings).building_ids()[0]
    frame = _forecast_frame(settings, building_id)
    if frame is None:
        raise DeploymentFailed(f"no gold features for {building_id}: cannot build a request window")
    history, future, origin = frame
    with ForecastClient(_server_target(settings), model_name=model_name, version_label=label) as client:
        if version is not None:
            from ml.windows import window_for_origin

            window = window_for_origin(_concat(history, future), origin, client.spec())
            outputs, served = client.predict(*window, version=version)
            return building_id, int(served), [round(float(v), 3) for v in outputs["p50"][0][:3]]
        result = client.forecast(building_id, history, future, origin=origin)
    if bool(result["is_fallback"].any()):
        raise DeploymentFailed(f"request on label {label!r} fell back: {result['fallback_reason'].iloc[0]}")
    return building_id, int(result["model_version"].iloc[0]), result["p50"].head(3).round(3).tolist()


def _concat(history, future):
    import pandas as pd

    return pd.concat([history, future], ignore_index=True).drop_duplicates(subset="ts", keep="last")


def canary_request(exported: dict[str, Any], *, settings: Settings | None = None) -> dict[str, Any]:
    """A real forecast through gRPC from the new version itself, before any label points at it."""
    settings = settings or get_settings()
    try:
        building_id, served, p50 = _served_forecast(settings, exported["model_name"], version=int(exported["version"]))
    except DeploymentFailed:
        raise
    except Exception as exc:  # any failure of the canary is a failed deployment, named as such
        raise DeploymentFailed(f"canary request to version {exported['version']} failed: {exc}") from exc
    if served != int(exported["version"]):
        raise DeploymentFailed(f"canary request served version {served}, expected {exported['version']}")
    if not all(v == v and v >= 0 for v in p50):  # NaN or negative energy: the model is broken
        raise DeploymentFailed(f"canary forecast of version {served} is not a valid energy series: {p50}")
    return {"version": served, "building_id": building_id, "p50_first_hours": p50}


def promote_stable(exported: dict[str, Any], *, timeout_s: float = 60.0, settings: Settings | None = None) -> dict[str, Any]:
    """Point `stable` at the new version, then wait until the label serves it."""
    import time

    settings = settings or get_settings()
    version = int(exported["version"])
    previous = exported.get("previous_stable")
    _write_labels(settings, exported["model_name"], {"stable": version}, {version, *([int(previous)] if previous else [])})
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            _, served, _ = _served_forecast(settings, exported["model_name"], label="stable")
        except DeploymentFailed:
            served = None
        if served == version:
            break
        if time.monotonic() > deadline:
            raise DeploymentFailed(f"label stable still serves {served} after {timeout_s:.0f} s, expected {version}")
        time.sleep(max(0.5, settings.serving.poll_wait_s / 2))
    # The old version stays loaded until the label has moved; now only the new one is needed.
    _write_labels(settings, exported["model_name"], {"stable": version}, {version})
    return {"stable": version, "previous": previous}


def rollback_stable(exported: dict[str, Any], *, settings: Settings | None = None) -> int | None:
    settings = settings or get_settings()
    previous = exported.get("previous_stable")
    if previous is None:
        return None
    _write_labels(settings, exported["model_name"], {"stable": int(previous)}, {int(previous)})
    return int(previous)


# -- forecast -----------------------------------------------------------------------------------------


def future_features(settings: Settings, building_id: str, origin: dt.datetime):
    """Gold-feature rows for the `horizon_h` hours from `origin`: calendar plus the weather forecast
    issued before the origin, built by the same code as gold (silver's forecast alignment, gold's
    calendar), with no energy and no observed weather since those hours have not happened yet. Where no
    forecast was issued, gold's persistence fallback (the same hour of the previous day) reads the silver
    history before the origin, exactly as it did for training rows; `forecast_source` says which."""
    import pandas as pd

    from lakehouse.curation import read_catalogue
    from lakehouse.gold import future_features as future_rows
    from lakehouse.schemas import BUILDING_HOURLY, WEATHER

    engine = _engine(settings)
    reg = registry(settings)
    building = reg.get(building_id)
    origin_ts = pd.Timestamp(origin).tz_convert("UTC")
    read_from = origin_ts - pd.Timedelta(hours=settings.features.margin_h)
    last_hour = origin_ts + pd.Timedelta(hours=settings.model.horizon_h - 1)
    silver = engine.read(BUILDING_HOURLY, filters=[("building_id", "=", building_id), ("date", ">=", read_from.date()),
                                                   ("date", "<=", origin_ts.date())]).to_pandas()
    forecasts = engine.read(WEATHER, filters=[("site_id", "=", building.site_id), ("kind", "=", "forecast"),
                                              ("date", ">=", origin_ts.date()),
                                              ("date", "<=", last_hour.date())]).to_pandas()
    catalogue = read_catalogue(engine)
    return future_rows(silver, forecasts, reg, settings, building_id, origin_ts,
                       scaling=catalogue.scaling if catalogue else None)


def _forecast_frame(settings: Settings, building_id: str, origin: dt.datetime | None = None):
    """(history, weather forecast, origin) for one building; None without history.

    History comes from gold features before the origin; the future rows are built from the forecasts
    issued before it (see `future_features`), exactly what an application would have at that time.
    """
    import pandas as pd

    from ml.pipeline import read_features

    lookback = settings.model.lookback_h + 48
    if origin is None:
        frame, _ = read_features(_engine(settings), [building_id])
        if frame.empty:
            return None
        origin = (frame["ts"].max() - pd.Timedelta(hours=settings.model.horizon_h - 1)).floor("D").to_pydatetime()
    origin_ts = pd.Timestamp(origin).tz_convert("UTC")
    history, _ = read_features(_engine(settings), [building_id], origin_ts - pd.Timedelta(hours=lookback), origin_ts)
    if history.empty:
        return None
    return history, future_features(settings, building_id, origin_ts), origin_ts


def forecast(origins: Sequence[dt.datetime], *, buildings: Sequence[str] | None = None,
             settings: Settings | None = None) -> dict[str, Any]:
    """Day-ahead forecasts from each origin for each building over gRPC, into `gold.forecasts`."""
    from lakehouse.schemas import FEATURES

    settings = settings or get_settings()
    engine = _engine(settings)
    building_ids = list(buildings) if buildings else registry(settings).building_ids()
    with step_run("forecast", settings) as lineage:
        # Version pinned before the requests: what the forecast frames below are read from.
        lineage.read_table(engine, FEATURES)
        summary = _forecast(settings, engine, origins, building_ids, lineage)
    return summary


def _forecast(settings: Settings, engine, origins, building_ids: list[str], lineage) -> dict[str, Any]:
    import pandas as pd
    import pyarrow as pa

    from lakehouse.schemas import FORECASTS
    from serving.client import ForecastClient

    rows = []
    with ForecastClient(_server_target(settings), model_name=settings.model.model_name) as client:
        for origin in origins:
            for building_id in building_ids:
                frame = _forecast_frame(settings, building_id, origin)
                if frame is None:
                    continue
                history, future, origin_ts = frame
                result = client.forecast(building_id, history, future, origin=origin_ts)
                result["issued_at"] = origin_ts
                rows.append(result)
    if not rows:
        return {"rows": 0, "origins": [o.isoformat() for o in origins]}
    from serving.batch_scoring import forecast_rows

    out = forecast_rows(pd.concat(rows, ignore_index=True), settings.model.model_name)
    written = engine.upsert(FORECASTS, pa.Table.from_pandas(out[[c for c in FORECASTS.schema.names if c != "date"]],
                                                          preserve_index=False))
    served = out[out["model_version"] != "fallback"]
    for version in sorted(set(served["model_version"].astype(str))):
        lineage.inputs.append(lineage.model(settings.model.model_name, version))
    lineage.wrote_table(FORECASTS, written.version if written.changed else None)
    lineage.details.update(origins=sorted({_iso_utc(t) for t in out["issued_at"]}),
                           buildings=sorted(set(out["building_id"].astype(str))), rows=int(len(out)),
                           fallbacks=int(out["is_fallback"].sum()))
    if settings.influx.url:
        from lakehouse.sources.influx import InfluxSource

        with InfluxSource(settings) as influx:
            influx.write_forecasts(out)
    published = 0
    if settings.kafka.publish_forecasts:  # for applications that consume rather than call
        from lakehouse.sources.kafka import publish_forecasts

        published = publish_forecasts(out, settings)
        lineage.details.update(kafka_topic=settings.kafka.forecasts_topic, kafka_messages=published)
    return {"rows": int(len(out)), "fallbacks": int(out["is_fallback"].sum()), "version": written.version,
            "published": published,
            "origins": [pd.Timestamp(o).isoformat() for o in origins],
            "served_versions": sorted(set(out["model_version"].astype(str)))}


def champion_saved_model(settings: Settings, version: int | None = None) -> tuple[int, "Path"]:
    """(version, folder) of the SavedModel batch scoring loads: the TF-Serving export of `version` (default
    the registry's champion) under `model_base_path/<model>/<version>/`, exported from MLflow if absent."""
    from pathlib import Path

    if version is not None:
        folder = Path(settings.model_base_path) / settings.model.model_name / str(int(version))
        if (folder / "saved_model.pb").exists():
            return int(version), folder
    from serving.export import export_version

    target, folder, _, _ = export_version(settings, version)
    return int(target.version), Path(folder)


def forecast_origins(start: dt.datetime, end: dt.datetime, every_h: int) -> list[dt.datetime]:
    """Forecast origins from `start` up to `end` (exclusive), one every `every_h` hours."""
    if every_h < 1:
        raise ValueError(f"every_h {every_h} must be at least 1 hour")
    step = dt.timedelta(hours=int(every_h))
    origins, origin = [], start
    while origin < end:
        origins.append(origin)
        origin += step
    return origins


def forecast_path(requested: str = "auto", settings: Settings | None = None) -> str:
    """Which path writes a forecast run's `gold.forecasts`: "serving" (TF Serving over gRPC, the online path
    applications use) or "batch" (`score`: the champion SavedModel on the runner). "auto" scores in batch
    where the stages run on Spark (a portfolio too large for one process), else through serving."""
    if requested not in ("auto", "serving", "batch"):
        raise ValueError(f"forecast path {requested!r} is not one of auto, serving, batch")
    if requested != "auto":
        return requested
    settings = settings or get_settings()
    return "batch" if settings.compute.runner == "spark" else "serving"


def score(origins: Sequence[dt.datetime], *, buildings: Sequence[str] | None = None, version: int | None = None,
          settings: Settings | None = None) -> dict[str, Any]:
    """Batch scoring: day-ahead forecasts from each origin for every building (or `buildings`) from the
    champion SavedModel, loaded in the scoring process (on Spark, once per Python worker), into
    `gold.forecasts`, on the runner `compute.runner` names. Applications keep the online path (`forecast`)."""
    import pandas as pd

    from lakehouse.curation import read_catalogue
    from lakehouse.runners import ScoringJob, chunk_of, get_runner
    from lakehouse.schemas import FEATURES, FORECASTS, WEATHER

    settings = settings or get_settings()
    engine = _engine(settings)
    reg = registry(settings)
    building_ids = sorted(buildings) if buildings else reg.building_ids()
    model_version, model_dir = champion_saved_model(settings, version)
    stamps = tuple(sorted(pd.Timestamp(o).tz_convert("UTC") for o in origins))
    last = stamps[-1] + pd.Timedelta(hours=settings.model.horizon_h)
    sites = sorted({reg.get(b).site_id for b in building_ids})
    weather = engine.read(WEATHER, filters=[("kind", "=", "forecast"), ("site_id", "in", sites),
                                            ("date", ">=", stamps[0].date()), ("date", "<=", last.date())]).to_pandas()
    catalogue = read_catalogue(engine)
    job = ScoringJob(origins=stamps, model_dir=str(model_dir), model_version=model_version,
                     scaling=catalogue.scaling if catalogue else {}, forecasts=weather)
    with step_run("score", settings) as lineage:
        lineage.read_table(engine, FEATURES)
        outcome = get_runner(engine, settings).score(reg, chunk_of(building_ids, settings.compute.chunk_buildings), job)
        written = outcome.write().get("forecasts")
        lineage.inputs.append(lineage.model(settings.model.model_name, str(model_version)))
        lineage.wrote_table(FORECASTS, written.version if written is not None and written.changed else None)
        lineage.details.update(origins=[_iso_utc(t) for t in stamps], rows=outcome.rows.get("forecasts", 0),
                               runner=settings.compute.runner)
    return {"rows": outcome.rows.get("forecasts", 0), "model_version": model_version,
            "origins": [t.isoformat() for t in stamps], "runner": settings.compute.runner,
            "version": written.version if written is not None else engine.version(FORECASTS),
            "changed": bool(written is not None and written.changed)}


# -- monitor ------------------------------------------------------------------------------------------


def monitor(as_of: dt.datetime, *, settings: Settings | None = None) -> dict[str, Any]:
    """One monitoring pass; `retrain_requested` is what the DAG turns into an asset event."""
    from monitoring.monitor import run_monitoring

    settings = settings or get_settings()
    outcome = run_monitoring(_engine(settings), settings, as_of)
    report = next(iter(outcome.reports.values()), None)
    return {"as_of": outcome.as_of.isoformat(), "model_version": outcome.model_version,
            "decision": "retrain" if outcome.retrain_requested else "hold",
            "retrain_requested": bool(outcome.retrain_requested), "reasons": list(outcome.decision.reasons),
            "figures": _summary(outcome.decision.figures), "anomalies": outcome.anomalies,
            "report_uri": f"file://{report}" if report else None}


# -- savings ------------------------------------------------------------------------------------------


def verify_savings(as_of: dt.datetime, *, settings: Settings | None = None) -> dict[str, Any]:
    """Verified savings per building and month since each recorded level shift, MERGEd into gold.savings."""
    from monitoring.savings_verify import monthly_savings

    settings = settings or get_settings()
    outcome = monthly_savings(_engine(settings), settings, as_of, model_name=settings.model.model_name)
    return {"as_of": as_of.isoformat(), "rows": outcome.rows, "buildings": outcome.buildings, "skipped": outcome.skipped,
            "table_version": None if outcome.write is None else outcome.write.version}

