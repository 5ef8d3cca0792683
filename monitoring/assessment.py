"""The monitoring check as a per-building core and a merge, so that both runners can run it chunk by chunk.

`monitor_chunk` is a pure function of one chunk's gold features and served forecasts (the runner reads
them for the chunk's buildings over the pass's span). It returns two small frames:

* `buildings`: one row per building: its residual-drift verdict (the stattest runs on the building's own
  residuals, so it is exact per chunk), its accuracy sums and ASHRAE figures, how many of its current rows
  found a seasonality-matched reference, and its valid hours since the last training;
* `samples`: the rows the portfolio-level parts need: the matched reference and current rows for the
  pooled input-drift test, and the residual series and (actual, p50) pairs the Evidently reports draw.

`merge_assessment` turns the chunks' frames into the same `Assessment` the pass used to compute on the
whole window. Everything the decision reads merges exactly: per-building verdicts are kept as they are,
the portfolio's accuracy is recomputed from summed errors (sums over buildings instead of one sum over
hours: equal within float rounding), coverage from summed counts, new-data hours as the median of the
buildings' counts. The only portfolio-wide statistic, the pooled input-drift test, needs rows: each
building contributes at most `quota` matched current rows (with their draws), chosen from its own seeded
random stream (`drift.building_rng`), so the sample is bounded by `monitor.sample_rows`, stratified over
buildings, and the same whatever the chunking or the runner. Below the bound every row is kept, and the
merged result is the whole-window result. The report samples (residual series, accuracy pairs) are
bounded the same way; the figures in the decision never come from them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from monitoring.drift import (
    INPUT_DRIFT_COLUMNS,
    MatchedSample,
    building_rng,
    input_drift_scale,
    judge_matched_sample,
    matched_reference,
    residual_judgement,
    residual_stats,
    served_pairs,
    with_relative_columns,
)
from monitoring.retrain_policy import AccuracyFigures, Check

MONITOR_FEATURE_COLUMNS = [
    "building_id", "ts", "energy_kwh", "energy_valid", "hour_of_day", "day_of_week", "occupancy", "temperature",
    "humidity", "solar_radiation", "forecast_temperature", "forecast_humidity", "forecast_solar_radiation",
]
MONITOR_FORECAST_COLUMNS = [
    "building_id", "issued_at", "ts", "horizon_h", "yhat", "yhat_p10", "yhat_p50", "yhat_p90", "model_name",
    "model_version", "is_fallback",
]
_INT, _FLOAT = pa.int64(), pa.float64()
BUILDINGS_SCHEMA = pa.schema([
    ("building_id", pa.string()), ("input_columns", pa.string()),
    ("input_current", _INT), ("input_covered", _INT),
    ("ref_pairs", _INT), ("cur_pairs", _INT), ("judged", pa.bool_()), ("score", _FLOAT), ("drifted", pa.bool_()),
    ("n_ref", _INT), ("n_cur", _INT), ("bias", _FLOAT),
    ("acc_n", _INT), ("acc_sum_err", _FLOAT), ("acc_sum_abs", _FLOAT), ("acc_sum_sq", _FLOAT), ("acc_sum_actual", _FLOAT),
    ("acc_mae", _FLOAT), ("acc_rmse", _FLOAT), ("acc_cv_rmse", _FLOAT), ("acc_nmbe", _FLOAT),
    ("new_hours", _INT),
])
SAMPLE_VALUES = [*INPUT_DRIFT_COLUMNS, "residual_rel", "energy_kwh", "yhat_p50"]
SAMPLES_SCHEMA = pa.schema([
    ("building_id", pa.string()), ("sample", pa.string()), ("position", _INT), ("ts", pa.timestamp("us", tz="UTC")),
    *[(c, _FLOAT) for c in SAMPLE_VALUES],
])
INPUT_REFERENCE, INPUT_CURRENT = "input_reference", "input_current"
RESIDUAL_REFERENCE, RESIDUAL_CURRENT, ACCURACY = "residual_reference", "residual_current", "accuracy"
# Stream numbers of `building_rng` (0 and 1 are the matched reference's draws and its quota).
_RESIDUAL_STREAM, _ACCURACY_STREAM = 2, 3


@dataclass(frozen=True)
class MonitorJob:
    """One pass's windows (all end at `end`, exclusive), the model judged and the per-building sample quota."""

    end: pd.Timestamp
    read_from: pd.Timestamp  # the earliest hour any window needs
    current_from: pd.Timestamp
    reference_from: pd.Timestamp
    accuracy_from: pd.Timestamp
    model_name: str
    model_version: str | None
    data_since: datetime | None = None
    quota: int | None = None  # rows per building and sample; None keeps every row
    seed: int = 0

    @classmethod
    def at(cls, as_of: Any, policy: Any, *, model_name: str, model_version: str | None,
           data_since: datetime | None = None, quota: int | None = None, seed: int = 0) -> "MonitorJob":
        end = pd.Timestamp(as_of)
        end = end.tz_localize("UTC") if end.tzinfo is None else end.tz_convert("UTC")
        current_from = end - pd.Timedelta(days=policy.drift_window_days)
        span = max(policy.drift_window_days + policy.drift_reference_days, policy.accuracy_window_days)
        return cls(end, end - pd.Timedelta(days=span), current_from,
                   current_from - pd.Timedelta(days=policy.drift_reference_days),
                   end - pd.Timedelta(days=policy.accuracy_window_days), model_name,
                   None if model_version is None else str(model_version), data_since, quota, seed)


def _utc(frame: pd.DataFrame) -> pd.DataFrame:
    for column in ("ts", "issued_at"):
        if column in frame.columns:
            frame[column] = pd.to_datetime(frame[column], utc=True)
    return frame


def _capped(frame: pd.DataFrame, quota: int | None, seed: int, stream: int) -> pd.DataFrame:
    """At most `quota` rows per building (a seeded choice per building, kept in time order)."""
    if quota is None or frame.empty:
        return frame
    keep = []
    for building, rows in frame.groupby("building_id", sort=True).indices.items():
        if len(rows) > quota:
            rows = rows[np.sort(building_rng(seed, building, stream).choice(len(rows), quota, replace=False))]
        keep.append(rows)
    return frame.iloc[np.concatenate(keep)]


def _sample(frame: pd.DataFrame, kind: str, columns: list[str]) -> pd.DataFrame:
    out = pd.DataFrame({"building_id": frame["building_id"].astype(str).to_numpy(), "sample": kind})
    out["position"] = out.groupby("building_id").cumcount().astype(np.int64)
    out["ts"] = pd.to_datetime(frame["ts"], utc=True).to_numpy() if "ts" in frame.columns else pd.NaT
    for c in SAMPLE_VALUES:
        out[c] = frame[c].astype(float).to_numpy() if c in columns and c in frame.columns else np.nan
    return out


def _finite(x: float) -> float | None:
    return round(float(x), 6) if np.isfinite(x) else None


def monitor_chunk(features: pd.DataFrame, forecasts: pd.DataFrame, policy: Any, job: MonitorJob) -> dict[str, pd.DataFrame]:
    """The per-building core of a monitoring pass: a chunk's features and forecasts over the pass's span
    in, its `buildings` and `samples` frames out. Both runners call it; `assess` calls it on one frame."""
    from monitoring.check import _figures

    features = _utc(features.copy()).sort_values(["building_id", "ts"], kind="stable").reset_index(drop=True)
    forecasts = _utc(forecasts.copy())
    if len(forecasts):  # a canonical order whatever storage returned: ties in issued_at keep one winner
        forecasts = forecasts.sort_values(["building_id", "ts", "issued_at", "model_version"], kind="stable")
    end = job.end
    valid = features["energy_valid"].fillna(False).astype(bool) if "energy_valid" in features else pd.Series(True, features.index)
    in_current = (features["ts"] >= job.current_from) & (features["ts"] < end)
    in_reference = (features["ts"] >= job.reference_from) & (features["ts"] < job.current_from)

    # Input drift: matched per building; the pooled test waits for the merge.
    reference_rows, current_rows = features[in_reference & valid], features[in_current & valid]
    scale = input_drift_scale(reference_rows)
    reference = with_relative_columns(reference_rows, scale)
    current = with_relative_columns(current_rows, scale)
    matched = matched_reference(reference, current, temperature_bin_c=policy.temperature_bin_c, draws=policy.matched_draws,
                                seed=job.seed, max_current_per_building=job.quota)
    present = [c for c in INPUT_DRIFT_COLUMNS if c in reference.columns and c in current.columns]
    input_current = current.groupby("building_id").size()
    input_covered = matched.covered_by_building

    # Residual drift (per building, exact) and accuracy of the version in production.
    pairs = served_pairs(forecasts, features, model_name=job.model_name)
    if job.model_version is not None:
        pairs = pairs[pairs["model_version"].astype(str) == job.model_version]
    stats, ref_long, cur_long = residual_stats(
        pairs[(pairs["ts"] >= job.reference_from) & (pairs["ts"] < job.current_from)],
        pairs[(pairs["ts"] >= job.current_from) & (pairs["ts"] < end)],
        method=policy.drift_method, threshold=policy.residual_drift_threshold,
        min_reference_hours=policy.min_reference_hours,
    )
    acc_pairs = pairs[(pairs["ts"] >= job.accuracy_from) & (pairs["ts"] < end)]
    accuracy_rows = {}
    for b, g in acc_pairs.groupby("building_id", sort=True):
        y, yhat = g["energy_kwh"].to_numpy(np.float64), g["yhat_p50"].to_numpy(np.float64)
        keep = np.isfinite(y) & np.isfinite(yhat)
        error = y[keep] - yhat[keep]
        figures = _figures(y, yhat)
        accuracy_rows[str(b)] = {
            "acc_n": int(keep.sum()), "acc_sum_err": float(error.sum()), "acc_sum_abs": float(np.abs(error).sum()),
            "acc_sum_sq": float((error ** 2).sum()), "acc_sum_actual": float(y[keep].sum()),
            "acc_mae": figures.mae, "acc_rmse": figures.rmse, "acc_cv_rmse": figures.cv_rmse, "acc_nmbe": figures.nmbe,
        }

    # Valid hours since the last training (the retrain policy's "new data").
    recent = features[(features["ts"] < end) & valid]
    if job.data_since is not None:
        recent = recent[recent["ts"] >= pd.Timestamp(job.data_since)]
    new_hours = recent.groupby("building_id").size()

    per_stats = {r["building_id"]: r for r in stats.to_dict("records")}
    ids = sorted({str(b) for b in features["building_id"].unique()} | set(per_stats) | set(accuracy_rows))
    rows = []
    for b in ids:
        r = {"building_id": b, "input_columns": ",".join(present), "input_current": int(input_current.get(b, 0)),
             "input_covered": int(input_covered.get(b, 0)), "new_hours": int(new_hours.get(b, 0))}
        s = per_stats.get(b)
        r.update({"ref_pairs": 0, "cur_pairs": 0, "judged": False, "score": np.nan, "drifted": False, "n_ref": 0,
                  "n_cur": 0, "bias": np.nan} if s is None else {k: v for k, v in s.items() if k != "building_id"})
        r.update(accuracy_rows.get(b, {"acc_n": 0, "acc_sum_err": 0.0, "acc_sum_abs": 0.0, "acc_sum_sq": 0.0,
                                       "acc_sum_actual": 0.0, "acc_mae": None, "acc_rmse": None, "acc_cv_rmse": None,
                                       "acc_nmbe": None}))
        rows.append(r)
    buildings = pd.DataFrame(rows, columns=BUILDINGS_SCHEMA.names)

    parts = [
        _sample(matched.reference, INPUT_REFERENCE, present),
        _sample(matched.current, INPUT_CURRENT, present),
        _sample(_capped(ref_long, job.quota, job.seed, _RESIDUAL_STREAM), RESIDUAL_REFERENCE, ["residual_rel"]),
        _sample(_capped(cur_long, job.quota, job.seed, _RESIDUAL_STREAM), RESIDUAL_CURRENT, ["residual_rel"]),
        _sample(_capped(acc_pairs, job.quota, job.seed, _ACCURACY_STREAM), ACCURACY, ["energy_kwh", "yhat_p50"]),
    ]
    filled = [p for p in parts if len(p)]
    samples = pd.concat(filled, ignore_index=True) if filled else parts[0]
    return {"buildings": buildings, "samples": samples}


def chunk_tables(parts: dict[str, pd.DataFrame]) -> dict[str, pa.Table]:
    """The core's frames as Arrow tables of their fixed schemas (what travels in the runners' envelope)."""
    buildings = pa.Table.from_pandas(parts["buildings"], schema=BUILDINGS_SCHEMA, preserve_index=False)
    samples = parts["samples"].copy()
    samples["ts"] = pd.to_datetime(samples["ts"], utc=True)
    return {"buildings": buildings, "samples": pa.Table.from_pandas(samples, schema=SAMPLES_SCHEMA, preserve_index=False)}


def _portfolio_accuracy(buildings: pd.DataFrame) -> AccuracyFigures:
    """ml.metrics.accuracy of the pooled pairs, from the buildings' sums (p = 1, as the per-building figures)."""
    n = int(buildings["acc_n"].sum())
    if n == 0:
        return AccuracyFigures(0, None, None, None, None)
    sum_err, sum_abs = float(buildings["acc_sum_err"].sum()), float(buildings["acc_sum_abs"].sum())
    sum_sq, mean = float(buildings["acc_sum_sq"].sum()), float(buildings["acc_sum_actual"].sum()) / n
    dof = max(n - 1, 1)
    cv_rmse = float(np.sqrt(sum_sq / dof) / mean) if mean else float("nan")
    nmbe = float(sum_err / (dof * mean)) if mean else float("nan")
    return AccuracyFigures(n, _finite(sum_abs / n), _finite(np.sqrt(sum_sq / n)), _finite(cv_rmse), _finite(nmbe))


def _none(value: Any) -> float | None:
    return None if value is None or (isinstance(value, float) and not np.isfinite(value)) else float(value)


def merge_assessment(buildings: pd.DataFrame, samples: pd.DataFrame, policy: Any, job: MonitorJob):
    """The portfolio's `Assessment` from the chunks' `buildings` and `samples` frames (concatenated)."""
    from monitoring.check import Assessment

    buildings = buildings.sort_values("building_id", kind="stable").reset_index(drop=True)
    samples = samples.sort_values(["sample", "building_id", "position"], kind="stable")

    def part(kind: str, columns: list[str]) -> pd.DataFrame:
        rows = samples[samples["sample"] == kind]
        return rows[["building_id", "ts", *columns]].reset_index(drop=True)

    listed = buildings["input_columns"].dropna().unique()
    # Columns the features carry (the same in every chunk); with no building at all, the whole list.
    present = [c for c in INPUT_DRIFT_COLUMNS if not len(listed) or any(c in str(cols).split(",") for cols in listed)]
    offered, covered = int(buildings["input_current"].sum()), int(buildings["input_covered"].sum())
    matched = MatchedSample(part(INPUT_REFERENCE, present), part(INPUT_CURRENT, present),
                            covered / offered if offered else 0.0, offered, covered)
    input_judgement = judge_matched_sample(
        matched, min_coverage=policy.min_coverage, method=policy.drift_method, threshold=policy.input_drift_threshold,
        drift_share_threshold=policy.drift_share_threshold,
    )

    with_pairs = buildings[(buildings["ref_pairs"] > 0) | (buildings["cur_pairs"] > 0)]
    residual, ref_wide, cur_wide = residual_judgement(
        with_pairs[["building_id", "ref_pairs", "cur_pairs", "judged", "score", "drifted", "n_ref", "n_cur", "bias"]],
        part(RESIDUAL_REFERENCE, ["residual_rel"]), part(RESIDUAL_CURRENT, ["residual_rel"]),
        method=policy.drift_method, threshold=policy.residual_drift_threshold,
        min_reference_hours=policy.min_reference_hours, min_buildings=policy.residual_drift_min_buildings,
    )

    scored = buildings[buildings["acc_n"] > 0]
    per_building = {r.building_id: AccuracyFigures(int(r.acc_n), _none(r.acc_mae), _none(r.acc_rmse), _none(r.acc_cv_rmse),
                                                   _none(r.acc_nmbe)) for r in scored.itertuples()}
    new_hours = buildings.loc[buildings["new_hours"] > 0, "new_hours"]
    check = Check(
        as_of=job.end.to_pydatetime(),
        model_name=job.model_name,
        model_version=job.model_version,
        accuracy=_portfolio_accuracy(scored),
        building_accuracy=per_building,
        residual_drift=None if residual.drift_share is None else residual.drift_detected,
        residual_drift_share=residual.drift_share,
        drifted_buildings=tuple(residual.drifted_columns),
        input_drift=None if input_judgement.drift_share is None else input_judgement.drift_detected,
        input_drift_share=input_judgement.drift_share,
        input_coverage=input_judgement.extra.get("coverage"),
        new_data_hours=int(new_hours.median()) if len(new_hours) else 0,
    )
    accuracy_pairs = part(ACCURACY, ["energy_kwh", "yhat_p50"])
    return Assessment(check, input_judgement, matched, residual, ref_wide, cur_wide, accuracy_pairs)


def monitored_buildings(engine: Any, settings: Any, job: MonitorJob) -> list[str]:
    """The buildings a pass judges: the registry's (file, else reference.buildings); without a registry, the
    buildings gold has in the pass's span (one column read)."""
    from monitoring.anomaly_store import building_metadata, read_window
    from lakehouse.schemas import FEATURES

    ids = sorted(building_metadata(engine, settings))
    if ids:
        return ids
    frame = read_window(engine, FEATURES, job.read_from, job.end, None, ["building_id", "ts"])
    return sorted({str(b) for b in frame["building_id"].unique()})


def assess_portfolio(engine: Any, settings: Any, *, as_of: Any, model_name: str, model_version: str | None,
                     data_since: datetime | None = None, seed: int = 0):
    """The monitoring check of the portfolio, chunk by chunk on the runner `compute.runner` names; only the
    chunks' `buildings` and `samples` frames reach this process."""
    from lakehouse.runners import chunk_of, get_runner

    policy = settings.monitor
    job = MonitorJob.at(as_of, policy, model_name=model_name, model_version=model_version, data_since=data_since, seed=seed)
    ids = monitored_buildings(engine, settings, job)
    job = replace(job, quota=max(policy.sample_min_per_building, policy.sample_rows // max(len(ids), 1)))
    outcome = get_runner(engine, settings).monitor(chunk_of(ids, settings.compute.chunk_buildings), job)
    outcome.discard()
    buildings = outcome.summaries["buildings"].to_pandas()
    samples = outcome.summaries["samples"].to_pandas()
    if "ts" in samples.columns:
        samples["ts"] = pd.to_datetime(samples["ts"], utc=True)
    return merge_assessment(buildings, samples, policy, job)


# -- what the runners call ---------------------------------------------------------------------------------
def _monitor_envelope():
    from lakehouse.runners import RESULT_SCHEMA, STATS_SCHEMA, Envelope

    return Envelope({"buildings": BUILDINGS_SCHEMA, "samples": SAMPLES_SCHEMA, "results": RESULT_SCHEMA,
                     "stats": STATS_SCHEMA})


MONITOR_OUT = _monitor_envelope()


def monitor_chunk_envelope(features: pd.DataFrame, forecasts: pd.DataFrame, chunk: int, settings: Any,
                           job: MonitorJob) -> pa.Table:
    """`monitor_chunk` on one chunk, packed in the MONITOR_OUT envelope (both runners call this)."""
    from lakehouse.runners import _stats, results_table

    tables = chunk_tables(monitor_chunk(features, forecasts, settings.monitor, job))
    return MONITOR_OUT.pack(chunk, {**tables, "results": results_table([]), "stats": _stats(len(features))})
