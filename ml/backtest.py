"""Rolling-origin backtest: one day-ahead forecast per building and local midnight, scored beside the baselines.

Actuals are known up to each origin and only there (the windows end at it). Every forecaster and both
baselines are scored on exactly the same hours: an hour counts only when its actual is valid and every
forecast for it is finite, so an invalid or missing hour leaves all of them alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np
import pandas as pd

from ml.baselines import BASELINES, baseline_forecasts
from ml.metrics import Accuracy, accuracy, per_horizon, skill
from ml.spec import WindowSpec
from ml.windows import Windows, make_windows

# A forecaster under test: its window spec and a function windows -> {output name: [n, horizon] kWh}.
Predictor = tuple[WindowSpec, Callable[[Windows], Mapping[str, np.ndarray]]]


class NothingToBacktest(ValueError):
    """No origin in the requested period has a full lookback and horizon of features."""


@dataclass
class BacktestResult:
    hours: pd.DataFrame  # one row per building, origin and horizon step; a column per forecast
    accuracy: dict[str, Accuracy]  # forecaster or baseline name -> accuracy on the common hours
    skill: dict[str, dict[str, dict[str, float]]]  # forecaster -> baseline -> {"mae", "rmse"}
    per_horizon: pd.DataFrame  # step, then <name>_mae / <name>_rmse per forecast
    forecasters: tuple[str, ...] = field(default_factory=tuple)

    @property
    def n_hours(self) -> int:
        return int(self.hours["scored"].sum())

    def summary(self, building_id: str | None, forecaster: str = "model") -> dict:
        """The object `wattflow backtest --json` prints."""
        return {
            "building_id": building_id,
            "n_hours": self.n_hours,
            "model": self.accuracy[forecaster].as_dict(),
            "baselines": {name: self.accuracy[name].as_dict() for name in BASELINES},
        }


def _key(windows: Windows) -> pd.MultiIndex:
    return pd.MultiIndex.from_arrays([windows.building_id.astype(str), windows.origin], names=["building_id", "origin"])


def backtest(
    frame: pd.DataFrame,
    predictors: Mapping[str, Predictor],
    *,
    start: pd.Timestamp,
    end: pd.Timestamp | None = None,
    timezones: Mapping[str, str] | None = None,
    ashrae_p: int = 1,
) -> BacktestResult:
    """Score every predictor and the baselines on day-ahead origins in [start, end) at local midnight.

    Predictors may differ in lookback (a champion and a tuned challenger); only origins that all of
    them can forecast are used. All must share the horizon.
    """
    if not predictors:
        raise ValueError("backtest needs at least one predictor")
    horizons = {name: spec.horizon_h for name, (spec, _) in predictors.items()}
    if len(set(horizons.values())) != 1:
        raise ValueError(f"predictors disagree on horizon_h: {horizons}")
    per_predictor: dict[str, Windows] = {}
    common: pd.MultiIndex | None = None
    for name, (spec, _) in predictors.items():
        windows = make_windows(frame, spec, timezones, start=start, end=end)
        per_predictor[name] = windows
        keys = _key(windows)
        common = keys if common is None else common.intersection(keys)
    if common is None or len(common) == 0:
        raise NothingToBacktest(
            f"no origin between {start} and {end or 'the end of the data'} has a full lookback and horizon of features"
        )
    common = common.sort_values()
    forecasts: dict[str, np.ndarray] = {}
    reference: Windows | None = None
    for name, (spec, predict) in predictors.items():
        windows = per_predictor[name]
        windows = windows.take(_key(windows).get_indexer(common))
        out = predict(windows)
        forecasts[name] = np.asarray(out["p50"], dtype=np.float64)
        for band in ("p10", "p90"):
            if band in out:
                forecasts[f"{name}_{band}"] = np.asarray(out[band], dtype=np.float64)
        if reference is None:
            reference = windows
    assert reference is not None
    forecasts.update({k: v.astype(np.float64) for k, v in baseline_forecasts(reference).items()})
    actual = reference.target.astype(np.float64)
    scored = reference.valid & np.isfinite(actual)
    for name in [*predictors, *BASELINES]:
        scored &= np.isfinite(forecasts[name])

    acc = {name: accuracy(actual, forecasts[name], scored, ashrae_p) for name in [*predictors, *BASELINES]}
    skills = {name: {b: skill(acc[name], acc[b]) for b in BASELINES} for name in predictors}
    steps = {"step": np.arange(actual.shape[1])}
    for name in [*predictors, *BASELINES]:
        by_step = per_horizon(actual, forecasts[name], scored, ashrae_p)
        steps[f"{name}_mae"] = [a.mae for a in by_step]
        steps[f"{name}_rmse"] = [a.rmse for a in by_step]

    horizon = actual.shape[1]
    hours = pd.DataFrame(
        {
            "building_id": np.repeat(reference.building_id.astype(str), horizon),
            "origin": pd.DatetimeIndex(np.repeat(reference.origin, horizon), tz="UTC"),
            "ts": reference.target_hours(),
            "horizon_step": np.tile(np.arange(horizon), len(reference)),
            "actual": actual.ravel(),
            "scored": scored.ravel(),
            **{name: values.ravel() for name, values in forecasts.items()},
        }
    )
    return BacktestResult(hours, acc, skills, pd.DataFrame(steps), tuple(predictors))
