"""Savings verification, the shell: gold features in, MLflow runs and `gold.savings` out.

* `verify_building`: one building, one baseline and reporting period, one model (the CLI).
* `level_shifts` / `proposed_split`: from a monitoring decision that found a building's use shifted
  (per-building NMBE beyond the policy: the model over-predicts a building that now uses less) to the
  baseline and reporting periods that verify it.
* `monthly_savings`: every building with a recorded level shift, each reporting month so far, into
  `gold.savings` (MERGE on building, month, model: a re-run writes nothing twice). The monthly DAG calls it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import pandas as pd

from monitoring.verification import BaselineFit, Period, SavingsResult, VerificationError, verify

if TYPE_CHECKING:  # pragma: no cover
    from lakehouse.buildings import Building
    from wattflow.settings import Settings

MODELS = ("towt", "lstm")
TAG_BUILDING = "wattflow.building_id"
TAG_MODEL = "wattflow.savings_model"
TAG_BASELINE = "wattflow.baseline"
TAG_REPORTING = "wattflow.reporting"


def building_record(engine: Any, settings: "Settings", building_id: str) -> "Building":
    """The registry row (timezone, tariff, grid factor): `reference.buildings`, else the registry file."""
    from lakehouse.buildings import BuildingRegistry
    from lakehouse.schemas import BUILDINGS

    registry = None
    if engine.exists(BUILDINGS):
        table = engine.read(BUILDINGS)
        if table.num_rows:
            registry = BuildingRegistry.from_arrow(table)
    if registry is None:
        from lakehouse.registry_file import load_registry, registry_path

        registry = load_registry(registry_path(settings))
    try:
        return registry.get(building_id)
    except KeyError:
        known = ", ".join(sorted(registry.building_ids())) or "none"
        raise VerificationError(f"building_id {building_id!r} is not in the registry (known: {known}); "
                                f"see `wattflow buildings list`") from None


def fit_baseline(model: str, frame: pd.DataFrame, baseline: Period, reporting: Period, building: "Building",
                 settings: "Settings") -> BaselineFit:
    from monitoring.savings_baselines import fit_lstm_baseline, fit_towt_baseline

    if model == "towt":
        return fit_towt_baseline(frame, baseline, reporting, building.timezone)
    if model == "lstm":
        from ml.model import ModelParams
        from ml.pipeline import spec_from_settings

        s = settings.savings
        params = ModelParams.from_settings(settings.model, units=s.lstm_units, epochs=s.lstm_epochs,
                                           batch_size=s.lstm_batch_size, patience=s.lstm_patience)
        return fit_lstm_baseline(frame, baseline, reporting, building.timezone, spec=spec_from_settings(settings),
                                 params=params, building_id=building.building_id)
    raise VerificationError(f"model {model!r} is not a savings baseline; use one of {', '.join(MODELS)}")


def read_building_features(engine: Any, building_id: str, start: pd.Timestamp, end: pd.Timestamp) -> tuple[pd.DataFrame, Any]:
    from ml.pipeline import read_features

    frame, ref = read_features(engine, [building_id], start, end)
    if frame.empty:
        raise VerificationError(
            f"no gold features for building {building_id!r} between {start.date()} and {end.date()}; "
            f"run `wattflow curate` for that period first"
        )
    return frame, ref


def result_for(frame: pd.DataFrame, building: "Building", baseline: Period, reporting: Period, fit: BaselineFit,
               settings: "Settings", confidence: float | None = None) -> SavingsResult:
    s = settings.savings
    return verify(
        building.building_id, frame, baseline, reporting, fit,
        tariff_per_kwh=building.tariff_per_kwh, currency=building.currency,
        grid_factor_kg_per_kwh=building.grid_emission_factor_kg_per_kwh,
        max_cv_rmse=s.max_cv_rmse, max_abs_nmbe=s.max_abs_nmbe, max_fsu=s.max_fsu,
        confidence=s.confidence if confidence is None else confidence,
    )


def track(settings: "Settings", result: SavingsResult, fit: BaselineFit, dataset_ref: Any, frame: pd.DataFrame) -> str:
    """One MLflow run per verification (experiment `savings.experiment`): params, fit statistics, savings, FSU."""
    import mlflow

    from ml.tracking import configure, ensure_experiment, log_dataset, log_source

    configure(settings)
    mlflow.set_experiment(experiment_id=ensure_experiment(settings, settings.savings.experiment))
    payload = result.to_json()
    with mlflow.start_run(run_name=f"savings-{result.building_id}-{result.model}") as run:
        mlflow.set_tags({
            TAG_BUILDING: result.building_id, TAG_MODEL: result.model,
            TAG_BASELINE: f"{result.baseline.start}/{result.baseline.end}",
            TAG_REPORTING: f"{result.reporting.start}/{result.reporting.end}",
        })
        mlflow.log_params({f"baseline.{k}": v for k, v in fit.params.items()} | {"model": result.model})
        metrics = {
            "cv_rmse": result.fit.cv_rmse, "nmbe": result.fit.nmbe, "autocorrelation": result.fit.autocorrelation,
            "n_effective": result.fit.n_effective, "savings_kwh": result.savings_kwh,
            "savings_pct": result.savings_pct, "fsu_68": result.fsu_68, "fsu_90": result.fsu_90,
            "metered_kwh": result.metered_kwh, "adjusted_baseline_kwh": result.adjusted_baseline_kwh,
            "baseline_hours": result.baseline.n_hours, "reporting_hours": result.reporting.n_hours,
            "excluded_baseline_hours": result.baseline.excluded_hours, "excluded_reporting_hours": result.reporting.excluded_hours,
        }
        mlflow.log_metrics({k: float(v) for k, v in metrics.items() if v is not None and np.isfinite(v)})
        mlflow.log_dict(payload, "savings/result.json")
        if dataset_ref is not None and dataset_ref.version is not None:
            log_dataset(dataset_ref, frame, context="baseline")
        log_source()
        return run.info.run_id


def verify_building(engine: Any, settings: "Settings", building_id: str, baseline: Period, reporting: Period, *,
                    model: str = "towt", confidence: float | None = None, tracked: bool = True) -> tuple[SavingsResult, str | None]:
    """Fit `model` on the baseline, verify the reporting period, log the run; (result, MLflow run id)."""
    if model not in MODELS:
        raise VerificationError(f"--model {model!r} is not a savings baseline; use one of {', '.join(MODELS)}")
    if reporting.start < baseline.end:
        raise VerificationError(
            f"reporting starts {reporting.start.date()} before the baseline ends {baseline.end.date()}; "
            f"the periods must not overlap"
        )
    building = building_record(engine, settings, building_id)
    frame, ref = read_building_features(engine, building_id, baseline.start, reporting.end)
    fit = fit_baseline(model, frame, baseline, reporting, building, settings)
    result = result_for(frame, building, baseline, reporting, fit, settings, confidence)
    run_id = track(settings, result, fit, ref, frame) if tracked else None
    return result, run_id


# ------------------------------------------------------------------- from detection to verification


@dataclass(frozen=True)
class LevelShift:
    building_id: str
    decision_as_of: pd.Timestamp
    window_start: pd.Timestamp  # the accuracy window the shift showed up in
    nmbe: float


def level_shifts(decisions: pd.DataFrame, settings: "Settings") -> list[LevelShift]:
    """The first decision per building whose check found the building's NMBE below -`nmbe_threshold`:
    the production model over-predicts it by more than the policy allows, the signature of a cut in use."""
    found: dict[str, LevelShift] = {}
    window = pd.Timedelta(days=settings.monitor.accuracy_window_days)
    rows = decisions.assign(as_of=pd.to_datetime(decisions["as_of"], utc=True)).sort_values("as_of")
    for as_of, figures in zip(rows["as_of"], rows["figures"]):
        check = (json.loads(figures or "{}") or {}).get("check") or {}
        for building_id, acc in sorted((check.get("building_accuracy") or {}).items()):
            nmbe = (acc or {}).get("nmbe")
            n_hours = (acc or {}).get("n_hours") or 0
            if building_id in found or nmbe is None or n_hours < settings.monitor.min_accuracy_hours:
                continue
            if nmbe < -settings.monitor.nmbe_threshold:
                found[building_id] = LevelShift(building_id, as_of, as_of - window, float(nmbe))
    return list(found.values())


def proposed_split(shift: LevelShift, settings: "Settings") -> tuple[Period, pd.Timestamp]:
    """Baseline: `savings.baseline_days` whole days before the window the shift appeared in. Reporting:
    from the decision on. The window itself (when the measure went in) belongs to neither."""
    baseline_end = shift.window_start.floor("D")
    baseline = Period(baseline_end - pd.Timedelta(days=settings.savings.baseline_days), baseline_end)
    return baseline, shift.decision_as_of.ceil("D")


def month_periods(start: pd.Timestamp, as_of: pd.Timestamp) -> list[Period]:
    """Reporting months (UTC) from `start` up to `as_of`, the first and last possibly partial."""
    out, lo = [], start
    while lo < as_of:
        hi = min(lo.floor("D") + pd.offsets.MonthBegin(1), as_of)
        out.append(Period(lo, hi))
        lo = hi
    return out


def savings_rows(result: SavingsResult, shift: LevelShift, baseline: Period, month: Period, run_id: str | None,
                 now: pd.Timestamp) -> dict[str, Any]:
    payload = result.to_json()
    return {
        "building_id": result.building_id, "month": month.start.date().replace(day=1), "model": result.model,
        "decision_as_of": shift.decision_as_of, "baseline_start": baseline.start, "baseline_end": baseline.end,
        "reporting_start": month.start, "reporting_end": month.end,
        "n_hours": result.reporting.n_hours, "excluded_hours": result.reporting.excluded_hours,
        "metered_kwh": result.metered_kwh, "adjusted_baseline_kwh": result.adjusted_baseline_kwh,
        "savings_kwh": result.savings_kwh, "savings_pct": result.savings_pct,
        "fsu_68_pct": payload["fsu_68_pct"], "fsu_90_pct": payload["fsu_90_pct"],
        "uncertainty_68_kwh": result.uncertainty_68_kwh, "uncertainty_90_kwh": result.uncertainty_90_kwh,
        "cost": result.cost, "currency": result.currency, "kgco2e": result.kgco2e,
        "cv_rmse": result.fit.cv_rmse, "nmbe": result.fit.nmbe, "fit_acceptable": result.fit_acceptable,
        "mlflow_run_id": run_id, "verified_at": now,
    }


@dataclass
class MonthlySavingsOutcome:
    rows: int
    buildings: list[str]
    skipped: dict[str, str]  # building -> why
    write: Any = None  # the engine's WriteResult, None when nothing was written


def monthly_savings(engine: Any, settings: "Settings", as_of: Any, *, models: Sequence[str] | None = None,
                    model_name: str | None = None) -> MonthlySavingsOutcome:
    """Verify every building with a recorded level shift, month by month up to `as_of`, into `gold.savings`."""
    import pyarrow as pa

    from lakehouse.schemas import MONITORING_DECISIONS, SAVINGS

    as_of = pd.Timestamp(as_of)
    as_of = as_of.tz_localize("UTC") if as_of.tzinfo is None else as_of.tz_convert("UTC")
    models = list(models or settings.savings.monthly_models)
    if not engine.exists(MONITORING_DECISIONS):
        return MonthlySavingsOutcome(0, [], {})
    decisions = engine.read(MONITORING_DECISIONS).to_pandas()
    if model_name:
        decisions = decisions[decisions["model_name"] == model_name]
    decisions = decisions[pd.to_datetime(decisions["as_of"], utc=True) <= as_of]
    rows: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}
    now = pd.Timestamp.now(tz="UTC")
    for shift in level_shifts(decisions, settings):
        baseline, reporting_start = proposed_split(shift, settings)
        if reporting_start >= as_of:
            skipped[shift.building_id] = f"reporting starts {reporting_start.date()}, not before {as_of.date()}"
            continue
        reporting = Period(reporting_start, as_of.floor("h"))
        try:
            building = building_record(engine, settings, shift.building_id)
            frame, ref = read_building_features(engine, shift.building_id, baseline.start, reporting.end)
            for model in models:
                fit = fit_baseline(model, frame, baseline, reporting, building, settings)
                whole = result_for(frame, building, baseline, reporting, fit, settings)
                run_id = track(settings, whole, fit, ref, frame)
                for month in month_periods(reporting.start, reporting.end):
                    try:
                        result = result_for(frame, building, baseline, month, fit, settings)
                    except VerificationError as err:
                        skipped[f"{shift.building_id}/{month.start.date()}"] = str(err)
                        continue
                    rows.append(savings_rows(result, shift, baseline, month, run_id, now))
        except VerificationError as err:
            skipped[shift.building_id] = str(err)
    if rows:
        frame = pd.DataFrame(rows)
        table = pa.Table.from_pandas(frame[list(SAVINGS.schema.names)], schema=SAVINGS.schema, preserve_index=False)
        write = engine.upsert(SAVINGS, table)
    else:
        write = None
    return MonthlySavingsOutcome(len(rows), sorted({r["building_id"] for r in rows}), skipped, write)
