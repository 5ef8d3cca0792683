"""Lineage: OpenLineage events from the pipeline steps, and the walk back from one served forecast.

Each step (ingest, curate, features, train, forecast) runs inside :func:`step_run`, which emits an
OpenLineage START and then COMPLETE (or FAIL) run event. Datasets are what the step read and wrote, each at
its exact version:

- a Delta table: namespace ``delta://<lakehouse root>``, name ``<layer>.<table>``, facet ``version`` (the
  Delta table version read, or the version the write committed);
- an MLflow model version: namespace = the tracking URI, name ``models:/<name>/<version>`` (MLflow's own
  model URI), the output of training and an input of forecasting.

Inside an Airflow task the event carries a ``parent`` facet naming the DAG run's task, so a lineage server
(Marquez, in docker-compose) shows each step under its Airflow task. Events always go to a JSON-lines file
under WATTFLOW_HOME (settings.lineage.file) and, when ``lineage.url`` is set, to that HTTP endpoint too.

:func:`forecast_lineage` walks back from one ``gold.forecasts`` row: the model version that produced it, its
MLflow run, the gold feature version it was trained on, the silver and bronze versions behind that, the Great
Expectations results of those curation runs (``monitoring.quality_results``) and the source batches
(``bronze.sensor_readings.batch_id``) of the hours the forecast looked back on.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import attr

from wattflow.log import get_logger
from wattflow.settings import Settings

log = get_logger(__name__)

PRODUCER = "https://github.com/wattflow/wattflow"
FACET_KEY = "wattflow"  # the steps' own run facet: what they did, in their words (batch names, counts)


class LineageNotFound(LookupError):
    """The walk found no record for a link of the chain; the message names which and why."""


# ---------------------------------------------------------------- datasets


def delta_namespace(settings: Settings) -> str:
    uri = settings.lakehouse_uri
    return uri if "://" in uri else f"delta://{uri}"


def model_namespace(settings: Settings) -> str:
    return settings.tracking_uri


def model_dataset_name(model_name: str, version: int | str) -> str:
    return f"models:/{model_name}/{version}"


@dataclass(frozen=True)
class DatasetRef:
    """One dataset at one version, as a step read or wrote it."""

    namespace: str
    name: str
    version: str | None


# ---------------------------------------------------------------- emitting


def _client(settings: Settings):
    path = settings.lineage_file
    return _cached_client(str(path), settings.lineage.url)


@lru_cache(maxsize=8)
def _cached_client(file: str, url: str):
    """One client per destination and process (a DAG run's steps share it)."""
    import logging

    from openlineage.client import OpenLineageClient

    # The client announces its transport at INFO on every construction; that is not news to a user.
    logging.getLogger("openlineage.client.client").setLevel(logging.WARNING)
    path = Path(file)
    path.parent.mkdir(parents=True, exist_ok=True)
    transports: dict[str, dict[str, Any]] = {"file": {"type": "file", "log_file_path": str(path), "append": True}}
    if url:
        transports["http"] = {"type": "http", "url": url}
    return OpenLineageClient(config={"transport": {"type": "composite", "transports": transports,
                                                   "continue_on_failure": True}})


def _step_facet_class():
    from openlineage.client.generated.base import RunFacet

    @attr.define
    class WattflowStepRunFacet(RunFacet):
        """What the step reports about its run (batch names, row counts, GE batches)."""

        details: dict[str, Any] = attr.field(factory=dict)

    return WattflowStepRunFacet


def _airflow_parent(settings: Settings):
    """The Airflow task this step runs in (Airflow exports AIRFLOW_CTX_* to a task's process), or None."""
    dag_id, task_id = os.environ.get("AIRFLOW_CTX_DAG_ID"), os.environ.get("AIRFLOW_CTX_TASK_ID")
    run_id = os.environ.get("AIRFLOW_CTX_DAG_RUN_ID")
    if not (dag_id and task_id and run_id):
        return None
    from openlineage.client.facet_v2 import parent_run

    try_number = os.environ.get("AIRFLOW_CTX_TRY_NUMBER", "1")
    task_run = uuid.uuid5(uuid.NAMESPACE_URL, f"airflow:{dag_id}.{task_id}:{run_id}:{try_number}")
    return parent_run.ParentRunFacet(
        run=parent_run.Run(runId=str(task_run)),
        job=parent_run.Job(namespace=settings.lineage.namespace, name=f"{dag_id}.{task_id}"),
    )


@dataclass
class StepRun:
    """Collects what one run of a step read and wrote; :func:`step_run` emits it."""

    job: str
    settings: Settings
    run_id: str = field(default_factory=lambda: str(_new_run_id()))
    inputs: list[DatasetRef] = field(default_factory=list)
    outputs: list[DatasetRef] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    def table(self, contract, version: int | None) -> DatasetRef:
        return DatasetRef(delta_namespace(self.settings), contract.qualified_name,
                          None if version is None else str(version))

    def read_table(self, engine, contract) -> int | None:
        """Record `contract` as an input at its current version (the one the step is about to read)."""
        version = engine.version(contract) if engine.exists(contract) else None
        self.inputs.append(self.table(contract, version))
        return version

    def wrote_table(self, contract, version: int | None) -> None:
        if version is not None:
            self.outputs.append(self.table(contract, version))

    def model(self, model_name: str, version: int | str) -> DatasetRef:
        return DatasetRef(model_namespace(self.settings), model_dataset_name(model_name, version), str(version))


def _new_run_id() -> uuid.UUID:
    from openlineage.client.uuid import generate_new_uuid

    return generate_new_uuid()


def _event(step: StepRun, state: str, error: BaseException | None = None):
    from openlineage.client.event_v2 import InputDataset, Job, OutputDataset, Run, RunEvent, RunState
    from openlineage.client.facet_v2 import dataset_version_dataset, error_message_run

    def facets(ref: DatasetRef) -> dict[str, Any]:
        return {"version": dataset_version_dataset.DatasetVersionDatasetFacet(datasetVersion=ref.version)} if ref.version else {}

    run_facets: dict[str, Any] = {}
    parent = _airflow_parent(step.settings)
    if parent is not None:
        run_facets["parent"] = parent
    if state != "START":
        run_facets[FACET_KEY] = _step_facet_class()(details=_jsonable(step.details))
    if error is not None:
        run_facets["errorMessage"] = error_message_run.ErrorMessageRunFacet(
            message=f"{type(error).__name__}: {error}"[:2000], programmingLanguage="python")
    with_datasets = state != "START"
    return RunEvent(
        eventType=getattr(RunState, state),
        eventTime=dt.datetime.now(dt.timezone.utc).isoformat(),
        run=Run(runId=step.run_id, facets=run_facets),
        job=Job(namespace=step.settings.lineage.namespace, name=step.job),
        inputs=[InputDataset(namespace=r.namespace, name=r.name, facets=facets(r)) for r in step.inputs] if with_datasets else [],
        outputs=[OutputDataset(namespace=r.namespace, name=r.name, facets=facets(r)) for r in step.outputs] if with_datasets else [],
        producer=PRODUCER,
    )


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _emit(client, step: StepRun, state: str, error: BaseException | None = None) -> None:
    # Lineage is a record of the work, not the work: a lineage server that is down costs a warning
    # (the file transport has the event), never the step.
    try:
        client.emit(_event(step, state, error))
    except Exception as exc:  # noqa: BLE001 - any transport failure
        log.warning("lineage event not emitted", job=step.job, state=state, error=str(exc))


@contextmanager
def step_run(job: str, settings: Settings) -> Iterator[StepRun]:
    """Emit START, run the block, then COMPLETE with what the block recorded (FAIL when it raised)."""
    step = StepRun(job, settings)
    if not settings.lineage.enabled:
        yield step
        return
    client = _client(settings)
    _emit(client, step, "START")
    try:
        yield step
    except BaseException as exc:
        _emit(client, step, "FAIL", exc)
        raise
    _emit(client, step, "COMPLETE")


# ---------------------------------------------------------------- reading and walking back


@dataclass(frozen=True)
class LineageEvent:
    job: str
    run_id: str
    time: str
    inputs: list[DatasetRef]
    outputs: list[DatasetRef]
    details: dict[str, Any]
    parent: str | None  # "<job> <run id>" of the Airflow task, when it ran in one

    def output(self, name: str) -> DatasetRef | None:
        return next((o for o in self.outputs if o.name == name), None)

    def input(self, name: str) -> DatasetRef | None:
        return next((i for i in self.inputs if i.name == name), None)


def _refs(items: list[dict[str, Any]] | None) -> list[DatasetRef]:
    out = []
    for item in items or []:
        version = ((item.get("facets") or {}).get("version") or {}).get("datasetVersion")
        out.append(DatasetRef(item["namespace"], item["name"], version))
    return out


def read_events(settings: Settings) -> list[LineageEvent]:
    """The COMPLETE events in the lineage file, oldest first."""
    path = settings.lineage_file
    if not path.exists():
        raise LineageNotFound(f"no lineage events at {path} (lineage.file): run the pipeline with lineage.enabled")
    events = []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        raw = json.loads(line)
        if raw.get("eventType") != "COMPLETE":
            continue
        facets = raw["run"].get("facets") or {}
        parent = facets.get("parent")
        events.append(LineageEvent(
            job=raw["job"]["name"], run_id=raw["run"]["runId"], time=raw["eventTime"],
            inputs=_refs(raw.get("inputs")), outputs=_refs(raw.get("outputs")),
            details=(facets.get(FACET_KEY) or {}).get("details") or {},
            parent=f"{parent['job']['name']} {parent['run']['runId']}" if parent else None,
        ))
    return sorted(events, key=lambda e: e.time)


def writers(events: list[LineageEvent], table: str, version: int, start, end) -> list[LineageEvent]:
    """The runs whose writes make up `table` as a reader saw it at `version`, for the rows of [start, end):
    per step window overlapping it, the latest run that committed a version at or before `version` (a re-run
    of a window rewrites the same rows; a run that changed nothing committed no version)."""
    import pandas as pd

    latest: dict[tuple[str, str], LineageEvent] = {}
    for event in events:
        ref = event.output(table)
        if ref is None or ref.version is None or int(ref.version) > version:
            continue
        w_start, w_end = event.details.get("start"), event.details.get("end")
        if w_start and w_end and (pd.Timestamp(w_end) <= start or pd.Timestamp(w_start) >= end):
            continue
        latest[(w_start or "", w_end or "")] = event  # events are oldest first: the last one wins
    return sorted(latest.values(), key=lambda e: (e.details.get("start") or "", e.time))


@dataclass
class Link:
    """One link of the chain, printed as `what` then its facts."""

    what: str
    facts: dict[str, Any]


def _window(event: LineageEvent) -> str:
    return f"{event.details.get('start')} .. {event.details.get('end')}"


def _data_links(events: list[LineageEvent], engine, settings: Settings, building_id: str, gold_version: int,
                start, end, purpose: str) -> list[Link]:
    """gold → silver (+ its validation) → bronze → source batches, for one building's rows in [start, end)."""
    import pyarrow.compute as pc

    from lakehouse.schemas import BUILDING_HOURLY, QUALITY_RESULTS, SENSOR_READINGS

    silver, bronze = BUILDING_HOURLY.qualified_name, SENSOR_READINGS.qualified_name
    gold_runs = writers(events, "gold.features", gold_version, start, end)
    if not gold_runs:
        raise LineageNotFound(f"no recorded run wrote gold.features at or before version {gold_version} "
                              f"for {start.isoformat()} .. {end.isoformat()}")
    silver_versions = sorted({int(ref.version) for r in gold_runs if (ref := r.input(silver)) and ref.version})
    if not silver_versions:
        raise LineageNotFound("the feature runs recorded no silver version they read")
    links = [Link(f"{purpose}: gold.features version {gold_version}", {
        "rows": f"{building_id} {start.isoformat()} .. {end.isoformat()}",
        "written by": [f"build_features run {r.run_id} ({_window(r)})" for r in gold_runs],
        "read silver.building_hourly version": ", ".join(map(str, silver_versions))})]
    silver_runs: dict[str, LineageEvent] = {}
    for version in silver_versions:
        for run in writers(events, silver, version, start, end):
            silver_runs[run.run_id] = run
    curated = sorted(silver_runs.values(), key=lambda e: e.details.get("start") or "")
    if not curated:
        raise LineageNotFound(f"no recorded curation run wrote silver.building_hourly at or before version {silver_versions[-1]}")
    bronze_versions = sorted({int(ref.version) for r in curated if (ref := r.input(bronze)) and ref.version})
    links.append(Link(f"silver.building_hourly version {silver_versions[-1]}", {
        "written by": [f"curate run {r.run_id} ({_window(r)}, {r.details.get('rejected', 0)} rejected to quarantine)"
                       for r in curated],
        "read bronze.sensor_readings version": ", ".join(map(str, bronze_versions))}))

    ge_batches = sorted({b for r in [*curated, *gold_runs] for b in r.details.get("ge_batches", [])})
    if not ge_batches:
        raise LineageNotFound("the curation and feature runs recorded no Great Expectations batch")
    results = engine.read(QUALITY_RESULTS, columns=["suite", "batch", "expectation", "success"])
    results = results.filter(pc.is_in(results.column("batch"), value_set=_array(ge_batches))).to_pandas()
    links.append(Link("validation (monitoring.quality_results)", {
        "batches": ge_batches, "suites": ", ".join(sorted(results["suite"].unique())),
        "expectations": f"{int(results['success'].sum())} of {len(results)} passed",
        "failed": sorted(results.loc[~results["success"], "expectation"].unique())}))

    if not bronze_versions:
        raise LineageNotFound("the curation runs recorded no bronze version they read")
    readings = engine.read(SENSOR_READINGS, version=bronze_versions[-1],
                           filters=[("building_id", "=", building_id), ("date", ">=", start.date()),
                                    ("date", "<=", end.date())],
                           columns=["ts", "batch_id", "source"]).to_pandas()
    ts = readings["ts"].dt.tz_convert("UTC") if readings["ts"].dt.tz is not None else readings["ts"].dt.tz_localize("UTC")
    readings = readings[(ts >= start) & (ts < end)]
    if readings.empty:
        raise LineageNotFound(f"no bronze readings of {building_id} in {start.isoformat()} .. {end.isoformat()}")
    ingests = {e.details.get("batch_id"): e for e in events if e.job == "ingest_sensors" and e.details.get("batch_id")}
    batches = []
    for (batch, source), count in readings.groupby(["batch_id", "source"]).size().sort_index().items():
        run = ingests.get(batch)
        wrote = run.output(bronze) if run else None
        batches.append(f"{batch} ({source}, {count} readings"
                       + (f"; ingest run {run.run_id} wrote version {wrote.version})" if wrote else ")"))
    links.append(Link(f"bronze.sensor_readings version {bronze_versions[-1]}", {
        "readings": f"{len(readings)} of {building_id}", "source batches": batches}))
    return links


def forecast_lineage(settings: Settings, building_id: str, ts: dt.datetime,
                     issued_at: dt.datetime | None = None) -> list[Link]:
    """From one served forecast back to its sources: the newest forecast for (building, ts) unless
    `issued_at` picks one. Two trails meet in it: the data it was computed from (the lookback before its
    origin) and the model version, trained on an earlier gold version. Raises LineageNotFound naming the
    missing link."""
    import pandas as pd
    from mlflow import MlflowClient

    from lakehouse.engine import get_engine
    from lakehouse.schemas import FORECASTS
    from ml import registry, tracking

    engine = get_engine(settings)
    ts_utc = _utc(ts)
    if not engine.exists(FORECASTS):
        raise LineageNotFound("gold.forecasts does not exist yet: nothing has been served")
    rows = engine.read(FORECASTS, filters=[("building_id", "=", building_id), ("date", "=", ts_utc.date())]).to_pandas()
    rows = rows[pd.to_datetime(rows["ts"], utc=True) == ts_utc]
    if issued_at is not None:
        rows = rows[pd.to_datetime(rows["issued_at"], utc=True) == _utc(issued_at)]
    if rows.empty:
        raise LineageNotFound(f"no forecast in gold.forecasts for building_id={building_id!r} ts={ts_utc.isoformat()}"
                              + (f" issued_at={_utc(issued_at).isoformat()}" if issued_at is not None else ""))
    row = rows.sort_values("issued_at").iloc[-1]
    issued = _utc(row["issued_at"])
    model_name, model_version = str(row["model_name"]), str(row["model_version"])
    chain = [Link("forecast (gold.forecasts)", {
        "building_id": building_id, "ts": ts_utc.isoformat(), "issued_at": issued.isoformat(),
        "horizon_h": int(row["horizon_h"]), "p50 kWh": round(float(row["yhat_p50"]), 3),
        "model": f"{model_name} version {model_version}"})]
    if bool(row["is_fallback"]) or model_version == "fallback":
        raise LineageNotFound("this forecast is the seasonal-naive fallback: no model version produced it")

    events = read_events(settings)
    runs = [e for e in events if e.job == "forecast" and issued.isoformat() in e.details.get("origins", [])
            and building_id in e.details.get("buildings", [])]
    if not runs:
        raise LineageNotFound(f"no recorded forecast run issued {building_id} at {issued.isoformat()}")
    run = runs[-1]
    gold_in = run.input("gold.features")
    chain.append(Link("forecast run", {
        "run_id": run.run_id, "at": run.time, "airflow task": run.parent,
        "read": ", ".join(f"{r.name} version {r.version}" for r in run.inputs),
        "wrote": ", ".join(f"{r.name} version {r.version}" for r in run.outputs)}))

    tracking.configure(settings)
    trained = registry.lineage(model_name, model_version)
    aliases = MlflowClient().get_model_version(model_name, model_version).aliases
    train_runs = [e for e in events if e.job == "train" and e.output(model_dataset_name(model_name, model_version))]
    chain.append(Link(f"model {model_dataset_name(model_name, model_version)} (MLflow registry)", {
        "aliases now": ", ".join(aliases) or "none", "MLflow run": trained["run_id"],
        "metrics": _run_metrics(trained["run_id"]), "trained on": f"{trained['table_name']} version {trained['delta_version']}",
        "training window": f"{trained['train_start']} .. {trained['train_end']}",
        "training step run": train_runs[-1].run_id if train_runs else None}))
    if trained["delta_version"] is None:
        raise LineageNotFound(f"MLflow run {trained['run_id']} records no Delta version of its training table")

    if gold_in is None or gold_in.version is None:
        raise LineageNotFound(f"forecast run {run.run_id} recorded no gold.features version")
    lookback_start = issued - pd.Timedelta(hours=settings.model.lookback_h)
    chain += _data_links(events, engine, settings, building_id, int(gold_in.version), lookback_start, issued,
                         "forecast inputs (the lookback before the origin)")
    train_start = _utc(trained["train_start"]) if trained["train_start"] else lookback_start
    train_end = _utc(trained["train_end"]) if trained["train_end"] else issued
    chain += _data_links(events, engine, settings, building_id, int(trained["delta_version"]), train_start, train_end,
                         "training data")
    return chain


def _utc(value):
    import pandas as pd

    stamp = pd.Timestamp(value)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def _run_metrics(run_id: str) -> str:
    from mlflow import MlflowClient

    metrics = MlflowClient().get_run(run_id).data.metrics
    # The backtest's figures the promotion gate judged (day-ahead, on hours the model did not learn from).
    shown = [k for k in ("backtest_cv_rmse", "backtest_nmbe", "backtest_mae") if k in metrics] or sorted(metrics)[:3]
    return ", ".join(f"{k} {metrics[k]:.3f}" for k in shown)


def _array(values: list[str]):
    import pyarrow as pa

    return pa.array(values, type=pa.string())


def format_chain(chain: list[Link]) -> str:
    """The chain from the forecast back to its sources, one link after the other (`←` reads "came from")."""
    lines = []
    for i, link in enumerate(chain):
        lines.append(("← " if i else "") + link.what)
        for key, value in link.facts.items():
            if value is None or value == [] or value == "":
                continue
            if isinstance(value, list) and len(value) > 1:
                lines.append(f"    {key}:")
                lines.extend(f"      - {v}" for v in value)
            else:
                lines.append(f"    {key}: {value[0] if isinstance(value, list) else value}")
    return "\n".join(lines)


def events_path(settings: Settings) -> Path:
    return settings.lineage_file
