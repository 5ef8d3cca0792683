"""One monitoring check on frames: accuracy and drift of the production model at `as_of`.

Windows (all end at `as_of`, exclusive): accuracy over the last `accuracy_window_days`; drift compares
the last `drift_window_days` against the `drift_reference_days` before them. Only the given model
version's served, non-fallback forecasts count: a check judges the model in production, and a new
version starts with no residual reference of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd

from monitoring.drift import (
    DriftJudgement,
    MatchedSample,
    judge_input_drift,
    judge_residual_drift,
    served_pairs,
)
from ml.metrics import accuracy
from monitoring.retrain_policy import AccuracyFigures, Check, window_bounds
from wattflow.settings import MonitorSettings


@dataclass(frozen=True)
class Assessment:
    check: Check
    input_drift: DriftJudgement
    matched: MatchedSample
    residual_drift: DriftJudgement
    residual_reference: pd.DataFrame  # wide: one column per building
    residual_current: pd.DataFrame
    accuracy_pairs: pd.DataFrame  # served forecasts with actuals in the accuracy window


def _figures(actual: np.ndarray, forecast: np.ndarray) -> AccuracyFigures:
    a = accuracy(actual, forecast)

    def finite(x: float) -> float | None:
        return round(float(x), 6) if np.isfinite(x) else None

    return AccuracyFigures(a.n_hours, finite(a.mae), finite(a.rmse), finite(a.cv_rmse), finite(a.nmbe))


def accuracy_figures(pairs: pd.DataFrame) -> tuple[AccuracyFigures, dict[str, AccuracyFigures]]:
    """Portfolio and per-building ASHRAE accuracy of served p50 forecasts."""
    if pairs.empty:
        return AccuracyFigures(0, None, None, None, None), {}
    portfolio = _figures(pairs["energy_kwh"].to_numpy(), pairs["yhat_p50"].to_numpy())
    per_building = {
        str(b): _figures(g["energy_kwh"].to_numpy(), g["yhat_p50"].to_numpy())
        for b, g in pairs.groupby("building_id", sort=True)
    }
    return portfolio, per_building


def new_data_hours(features: pd.DataFrame, since: datetime | None, as_of: datetime) -> int:
    """Median over buildings of valid hours after `since` (the last training) and before `as_of`."""
    _, end = window_bounds(as_of, 0)
    frame = features[features["ts"] < end]
    if since is not None:
        frame = frame[frame["ts"] >= pd.Timestamp(since)]
    if "energy_valid" in frame.columns:
        frame = frame[frame["energy_valid"].fillna(False).astype(bool)]
    if frame.empty:
        return 0
    return int(frame.groupby("building_id").size().median())


def assess(
    features: pd.DataFrame,
    forecasts: pd.DataFrame,
    *,
    as_of: datetime,
    model_name: str,
    model_version: str | None,
    policy: MonitorSettings,
    data_since: datetime | None = None,
    seed: int = 0,
    quota: int | None = None,
) -> Assessment:
    """Measure the production model at `as_of` from gold features and served forecasts held in this process:
    the per-building core on the whole frame and the merge (monitoring/assessment.py), exactly what the
    runners do chunk by chunk. `quota` bounds the rows per building in the samples (None keeps every row)."""
    from monitoring.assessment import MonitorJob, merge_assessment, monitor_chunk

    job = MonitorJob.at(as_of, policy, model_name=model_name, model_version=model_version, data_since=data_since,
                        quota=quota, seed=seed)
    parts = monitor_chunk(features, forecasts, policy, job)
    return merge_assessment(parts["buildings"], parts["samples"], policy, job)
