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
) -> Assessment:
    """Measure the production model at `as_of` from gold features and served forecasts."""
    cur_start, end = window_bounds(as_of, policy.drift_window_days)
    ref_start = cur_start - pd.Timedelta(days=policy.drift_reference_days)
    acc_start, _ = window_bounds(as_of, policy.accuracy_window_days)

    in_current = (features["ts"] >= cur_start) & (features["ts"] < end)
    in_reference = (features["ts"] >= ref_start) & (features["ts"] < cur_start)
    valid = features["energy_valid"].fillna(False).astype(bool) if "energy_valid" in features else True
    input_judgement, matched = judge_input_drift(
        features[in_reference & valid],
        features[in_current & valid],
        temperature_bin_c=policy.temperature_bin_c,
        draws=policy.matched_draws,
        min_coverage=policy.min_coverage,
        method=policy.drift_method,
        threshold=policy.input_drift_threshold,
        drift_share_threshold=policy.drift_share_threshold,
        seed=seed,
    )

    pairs = served_pairs(forecasts, features, model_name=model_name)
    if model_version is not None:
        pairs = pairs[pairs["model_version"].astype(str) == str(model_version)]
    residual_judgement, ref_wide, cur_wide = judge_residual_drift(
        pairs[(pairs["ts"] >= ref_start) & (pairs["ts"] < cur_start)],
        pairs[(pairs["ts"] >= cur_start) & (pairs["ts"] < end)],
        method=policy.drift_method,
        threshold=policy.residual_drift_threshold,
        min_reference_hours=policy.min_reference_hours,
        min_buildings=policy.residual_drift_min_buildings,
    )

    accuracy_pairs = pairs[(pairs["ts"] >= acc_start) & (pairs["ts"] < end)]
    portfolio, per_building = accuracy_figures(accuracy_pairs)
    check = Check(
        as_of=end.to_pydatetime(),
        model_name=model_name,
        model_version=None if model_version is None else str(model_version),
        accuracy=portfolio,
        building_accuracy=per_building,
        residual_drift=None if residual_judgement.drift_share is None else residual_judgement.drift_detected,
        residual_drift_share=residual_judgement.drift_share,
        drifted_buildings=tuple(residual_judgement.drifted_columns),
        input_drift=None if input_judgement.drift_share is None else input_judgement.drift_detected,
        input_drift_share=input_judgement.drift_share,
        input_coverage=input_judgement.extra.get("coverage"),
        new_data_hours=new_data_hours(features, data_since, as_of),
    )
    return Assessment(check, input_judgement, matched, residual_judgement, ref_wide, cur_wide, accuracy_pairs)
