"""The monitoring shell: one pass at `as_of` reads gold features and served forecasts, measures the
production model chunk by chunk on the runner (`monitoring.assessment.assess_portfolio`), decides (`monitoring.retrain_policy.decide`), saves the
Evidently reports (HTML + JSON) under `settings.reports_dir`, logs them to an MLflow run tagged with the
model name and version, summarises them in `monitoring.drift_reports`, records the decision in
`monitoring.decisions`, and looks for consumption anomalies. A retrain decision sets
`outcome.retrain_requested`, which the Airflow `monitor` DAG turns into an Asset event.

`evaluate_retrain` closes the loop: after a retrain it backtests the new champion against the old one
on the drifted period and records whether the retrain helped in `monitoring.retrain_outcomes`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import pyarrow as pa

from monitoring.anomaly_store import read_window, utc
from monitoring.drift import SavedReport, accuracy_report, drift_report, summary_json
from lakehouse.schemas import DRIFT_REPORTS, FEATURES, FORECASTS, MONITORING_DECISIONS, RETRAIN_OUTCOMES
from monitoring.assessment import assess_portfolio
from monitoring.check import Assessment
from monitoring.retrain_policy import Check, Decision, decide, last_retrain
from wattflow.log import get_logger

log = get_logger(__name__)

TAG_AS_OF = "wattflow.monitor.as_of"
TAG_MODEL = "wattflow.model_name"
TAG_VERSION = "wattflow.model_version"


@dataclass(frozen=True)
class MonitoringOutcome:
    as_of: datetime
    model_name: str
    model_version: str | None
    decision: Decision
    retrain_requested: bool
    report_dir: Path
    reports: dict[str, str] = field(default_factory=dict)  # kind -> HTML path
    mlflow_run_id: str | None = None
    anomalies: int = 0


@dataclass(frozen=True)
class ProductionModel:
    version: str | None
    promotion_metrics: dict[str, Any]
    promoted_at: datetime | None
    # The last hour of the data the model was trained and gated on (data time, not wall-clock time):
    # "new data" for the next retrain is counted from here.
    trained_through: datetime | None = None


def production_model(settings: Any, model_name: str, forecasts: pd.DataFrame | Callable[[], pd.DataFrame]) -> ProductionModel:
    """The champion and the accuracy it was promoted with; without a registry, the newest served version
    (`forecasts` may be a callable: the served rows are then read only when the registry has no answer)."""
    version, metrics, promoted_at, trained_through = None, {}, None, None
    try:
        from ml import registry
        from ml.tracking import configure

        configure(settings)
        version = registry.alias_version(model_name, registry.CHAMPION)
        for event in registry.history(model_name):
            if event.alias == registry.CHAMPION and event.version == version:
                metrics = dict((event.metrics or {}).get("challenger") or {})
                promoted_at = utc(event.time).to_pydatetime()
        if version is not None:
            end = registry.lineage(model_name, version).get("train_end")
            trained_through = utc(end).to_pydatetime() if end else None
    except Exception as err:  # noqa: BLE001 - a monitoring pass must still judge the served forecasts
        log.warning("monitor.registry_unavailable", error=str(err))
    if version is None and callable(forecasts):
        forecasts = forecasts()
    if version is None and not forecasts.empty:
        served = forecasts[forecasts["model_name"] == model_name]
        if not served.empty:
            version = str(served.sort_values("issued_at")["model_version"].iloc[-1])
    return ProductionModel(version, metrics, promoted_at, trained_through)


def decision_history(engine: Any, model_name: str, before: pd.Timestamp) -> tuple[list[Check], datetime | None]:
    """Checks and the last retrain decision recorded before `before`."""
    if not engine.exists(MONITORING_DECISIONS):
        return [], None
    rows = engine.read(MONITORING_DECISIONS, filters=[("model_name", "=", model_name)]).to_pandas()
    if rows.empty:
        return [], None
    rows["as_of"] = pd.to_datetime(rows["as_of"], utc=True)
    rows = rows[rows["as_of"] < before].sort_values("as_of")
    checks = []
    for figures in rows["figures"]:
        raw = json.loads(figures or "{}").get("check")
        if raw:
            checks.append(Check.from_dict(raw))
    return checks, last_retrain([(ts.to_pydatetime(), d) for ts, d in zip(rows["as_of"], rows["decision"])])


def shown_buildings(judgement: Any, limit: int) -> Any:
    """The residual judgement as its report shows it: at most `limit` buildings, drifted first, then by score."""
    if len(judgement.columns) <= limit:
        return judgement
    ranked = sorted(judgement.columns.values(), key=lambda d: (not d.drifted, -(d.score if np.isfinite(d.score) else -1.0), d.column))
    return replace(judgement, columns={d.column: d for d in ranked[:limit]})


def save_reports(assessment: Assessment, folder: Path, max_buildings: int | None = None) -> dict[str, SavedReport]:
    saved: dict[str, SavedReport] = {}
    matched = assessment.matched
    residual = assessment.residual_drift if max_buildings is None else shown_buildings(assessment.residual_drift, max_buildings)
    for judgement, reference, current in (
        (assessment.input_drift, matched.reference, matched.current),
        (residual, assessment.residual_reference, assessment.residual_current),
    ):
        report = drift_report(judgement, reference, current, folder)
        if report is not None:
            saved[judgement.kind] = report
    report = accuracy_report(assessment.accuracy_pairs, folder)
    if report is not None:
        saved["accuracy"] = report
    (folder / "decision_inputs.json").write_text(
        summary_json({"input_drift": assessment.input_drift.summary(), "residual_drift": assessment.residual_drift.summary()})
    )
    return saved


def log_to_mlflow(settings: Any, outcome_tags: dict[str, str], metrics: dict[str, float], folder: Path) -> str:
    """Log the pass as an MLflow run tagged with the production model; a re-run reuses its run."""
    import mlflow

    from ml.tracking import configure, ensure_experiment

    configure(settings)
    client = mlflow.MlflowClient()
    experiment_id = ensure_experiment(settings, settings.monitor.experiment)
    query = f"tags.`{TAG_AS_OF}` = '{outcome_tags[TAG_AS_OF]}' and tags.`{TAG_MODEL}` = '{outcome_tags[TAG_MODEL]}'"
    existing = client.search_runs([experiment_id], filter_string=query, max_results=1)
    run_id = existing[0].info.run_id if existing else None
    mlflow.set_experiment(experiment_id=experiment_id)
    started = mlflow.start_run(run_id=run_id) if run_id else mlflow.start_run(run_name=f"monitor-{outcome_tags[TAG_AS_OF]}")
    with started as run:
        mlflow.set_tags(outcome_tags)
        finite = {k: float(v) for k, v in metrics.items() if v is not None and np.isfinite(v)}
        if finite:
            mlflow.log_metrics(finite)
        mlflow.log_artifacts(str(folder), artifact_path="monitoring")
        return run.info.run_id


def tag_model_version(model_name: str, version: str | None, run_id: str, decision: str) -> None:
    """Point the registered version at its latest monitoring run (visible on the version's page)."""
    if not version:
        return
    try:
        import mlflow

        client = mlflow.MlflowClient()
        client.set_model_version_tag(model_name, version, "wattflow.last_monitoring_run", run_id)
        client.set_model_version_tag(model_name, version, "wattflow.last_monitoring_decision", decision)
    except Exception as err:  # noqa: BLE001 - served forecasts of a version the registry does not know
        log.warning("monitor.version_tag_failed", model_name=model_name, version=version, error=str(err))


def _check_metrics(check: Check) -> dict[str, float | None]:
    return {
        "cv_rmse": check.accuracy.cv_rmse,
        "nmbe": check.accuracy.nmbe,
        "mae": check.accuracy.mae,
        "accuracy_hours": float(check.accuracy.n_hours),
        "residual_drift_share": check.residual_drift_share,
        "input_drift_share": check.input_drift_share,
        "input_coverage": check.input_coverage,
    }


def run_monitoring(
    engine: Any,
    settings: Any,
    as_of: datetime | str,
    *,
    with_anomalies: bool = True,
    log_mlflow: bool = True,
) -> MonitoringOutcome:
    """One monitoring pass at `as_of` (windows end there, exclusive). Re-running it rewrites the same rows."""
    policy = settings.monitor
    model_name = settings.model.model_name
    end = utc(as_of)
    span_days = max(policy.drift_window_days + policy.drift_reference_days, policy.accuracy_window_days)
    start = end - pd.Timedelta(days=span_days)
    # Only what names the newest served version, and only when the registry cannot say.
    production = production_model(settings, model_name, lambda: read_window(
        engine, FORECASTS, start, end, None, ["building_id", "ts", "issued_at", "model_name", "model_version"]))
    history, last_retrain_at = decision_history(engine, model_name, end)
    # Data time throughout: a replayed or backfilled period must count its own hours, not the wall clock's.
    data_since = max([t for t in (last_retrain_at, production.trained_through) if t is not None], default=None)

    # Chunk by chunk on the runner (monitoring/assessment.py): the window never sits in this process whole.
    assessment = assess_portfolio(engine, settings, as_of=end, model_name=model_name, model_version=production.version,
                                  data_since=data_since)
    decision = decide(history, assessment.check, last_retrain_at, production.promotion_metrics, policy)
    folder = settings.reports_dir / model_name / end.strftime("%Y%m%dT%H%MZ")
    folder.mkdir(parents=True, exist_ok=True)
    saved = save_reports(assessment, folder, policy.report_max_buildings)
    (folder / "decision.json").write_text(
        summary_json({"decision": decision.label, "reasons": decision.reasons, "figures": decision.figures})
    )

    run_id = None
    if log_mlflow:
        tags = {
            TAG_AS_OF: end.isoformat(),
            TAG_MODEL: model_name,
            TAG_VERSION: production.version or "",
            "wattflow.decision": decision.label,
        }
        run_id = log_to_mlflow(settings, tags, _check_metrics(assessment.check), folder)
        tag_model_version(model_name, production.version, run_id, decision.label)

    now = pd.Timestamp.now(tz="UTC")
    judgements = {"input_drift": assessment.input_drift, "residual_drift": assessment.residual_drift}
    rows = []
    for kind in ("input_drift", "residual_drift", "accuracy"):
        judgement = judgements.get(kind)
        report = saved.get(kind)
        if kind == "accuracy":
            window_start = end - pd.Timedelta(days=policy.accuracy_window_days)
            summary = {"portfolio": assessment.check.accuracy.__dict__,
                       "buildings": {b: a.__dict__ for b, a in assessment.check.building_accuracy.items()},
                       "evidently": report.values if report else {}}
            n_ref, n_cur, share, detected = 0, assessment.check.accuracy.n_hours, None, None
        else:
            window_start = end - pd.Timedelta(days=policy.drift_window_days)
            summary = judgement.summary() | {"evidently": report.values if report else {}}
            n_ref, n_cur, share, detected = judgement.n_reference, judgement.n_current, judgement.drift_share, judgement.drift_detected
        rows.append({
            "as_of": end, "model_name": model_name, "report_kind": kind, "model_version": production.version,
            "window_start": window_start, "window_end": end, "n_reference": n_ref, "n_current": n_cur,
            "drift_share": share, "drift_detected": detected, "summary": summary_json(summary),
            "html_uri": str(report.html_path) if report else None, "json_uri": str(report.json_path) if report else None,
            "mlflow_run_id": run_id, "created_at": now,
        })
    engine.upsert(DRIFT_REPORTS, pa.Table.from_pylist(rows))
    engine.upsert(MONITORING_DECISIONS, pa.Table.from_pylist([{
        "as_of": end, "model_name": model_name, "model_version": production.version, "decision": decision.label,
        "reasons": json.dumps(decision.reasons), "figures": summary_json(decision.figures), "report_uri": str(folder),
        "decided_at": now,
    }]))

    found = 0
    if with_anomalies:
        from monitoring.anomaly_store import find_anomalies

        result = find_anomalies(engine, settings, since=end - pd.Timedelta(days=policy.drift_window_days), until=end)
        found = len(result.anomalies)
    log.info("monitor.decided", as_of=end.isoformat(), model_version=production.version, decision=decision.label,
             reasons=decision.reasons[:3], anomalies=found)
    return MonitoringOutcome(
        as_of=end.to_pydatetime(), model_name=model_name, model_version=production.version, decision=decision,
        retrain_requested=decision.retrain, report_dir=folder,
        reports={k: str(v.html_path) for k, v in saved.items()}, mlflow_run_id=run_id, anomalies=found,
    )


# ----------------------------------------------------------------------------------------- closing the loop
@dataclass(frozen=True)
class RetrainOutcome:
    model_name: str
    old_version: str
    new_version: str
    drift_start: datetime
    period_start: datetime
    period_end: datetime
    n_hours: int
    old_mae: float
    new_mae: float
    improvement: float  # 1 - new / old
    improved: bool
    per_building: dict[str, dict[str, float]]


def compare_on_period(
    hours: pd.DataFrame, *, old: str, new: str, min_improvement: float
) -> tuple[int, float, float, float, bool, dict[str, dict[str, float]]]:
    """MAE of two forecasts (columns `old`, `new`) against `actual` on the same scored hours."""
    scored = hours[hours["scored"]] if "scored" in hours.columns else hours
    scored = scored[np.isfinite(scored["actual"]) & np.isfinite(scored[old]) & np.isfinite(scored[new])]
    if scored.empty:
        raise ValueError("no scored hours in the drifted period: nothing to compare")
    old_mae = float((scored["actual"] - scored[old]).abs().mean())
    new_mae = float((scored["actual"] - scored[new]).abs().mean())
    improvement = 1.0 - new_mae / old_mae if old_mae else 0.0
    per_building = {
        str(b): {"old_mae": round(float((g["actual"] - g[old]).abs().mean()), 4),
                 "new_mae": round(float((g["actual"] - g[new]).abs().mean()), 4), "hours": int(len(g))}
        for b, g in scored.groupby("building_id")
    }
    return len(scored), old_mae, new_mae, improvement, improvement > min_improvement, per_building


def evaluate_retrain(
    engine: Any,
    settings: Any,
    drift_start: datetime | str,
    *,
    period_end: datetime | str | None = None,
    old_version: str | None = None,
    new_version: str | None = None,
) -> RetrainOutcome:
    """Backtest the new champion and the one it replaced on [drift_start, period_end) and record the result.

    Versions default to the current champion and the champion before it (the registry's alias history).
    """
    from ml import registry
    from ml.backtest import backtest
    from ml.pipeline import building_timezones
    from ml.spec import INPUT_FUTURE, INPUT_HISTORY
    from ml.tracking import configure

    configure(settings)
    model_name = settings.model.model_name
    new_version = new_version or registry.alias_version(model_name, registry.CHAMPION)
    if old_version is None:
        stack = registry.champion_stack(registry.history(model_name))
        earlier = [v for v in stack if v != new_version]
        old_version = earlier[-1] if earlier else None
    if new_version is None or old_version is None:
        raise LookupError(f"{model_name}: need a new and an old champion to compare (got {new_version!r}, {old_version!r})")
    start = utc(drift_start)
    end = utc(period_end) if period_end is not None else None

    def predictor(version: str):
        spec = registry.window_spec_of(model_name, version)
        model = registry.load_keras(model_name, version)

        def predict(windows):
            out = model.predict({INPUT_HISTORY: windows.history, INPUT_FUTURE: windows.future}, batch_size=1024, verbose=0)
            return {name: np.asarray(out[name]) for name in spec.output_names}

        return spec, predict

    lookback = max(registry.window_spec_of(model_name, v).lookback_h for v in (old_version, new_version))
    frame = read_window(engine, FEATURES, start - pd.Timedelta(hours=lookback + 48),
                        end if end is not None else pd.Timestamp.now(tz="UTC").ceil("h"), None)
    frame = frame.sort_values(["building_id", "ts"]).reset_index(drop=True)
    result = backtest(frame, {"old": predictor(old_version), "new": predictor(new_version)}, start=start, end=end,
                      timezones=building_timezones(engine, settings), ashrae_p=settings.model.ashrae_p)
    n, old_mae, new_mae, improvement, improved, per_building = compare_on_period(
        result.hours, old="old", new="new", min_improvement=settings.monitor.retrain_min_improvement
    )
    outcome = RetrainOutcome(
        model_name, str(old_version), str(new_version), start.to_pydatetime(),
        result.hours["ts"].min().to_pydatetime(), (result.hours["ts"].max() + pd.Timedelta(hours=1)).to_pydatetime(),
        n, old_mae, new_mae, improvement, improved, per_building,
    )
    record_retrain_outcome(engine, outcome)
    return outcome


def record_retrain_outcome(engine: Any, outcome: RetrainOutcome) -> None:
    engine.upsert(RETRAIN_OUTCOMES, pa.Table.from_pylist([{
        "model_name": outcome.model_name, "new_version": outcome.new_version, "old_version": outcome.old_version,
        "drift_start": outcome.drift_start, "period_start": outcome.period_start, "period_end": outcome.period_end,
        "n_hours": outcome.n_hours, "old_mae": outcome.old_mae, "new_mae": outcome.new_mae,
        "improvement": outcome.improvement, "improved": outcome.improved,
        "details": json.dumps({"per_building": outcome.per_building}, sort_keys=True),
        "evaluated_at": datetime.now(timezone.utc),
    }]))
