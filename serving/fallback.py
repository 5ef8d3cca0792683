"""The seasonal-naive forecast the client falls back to: same hour last week, else the same hour yesterday."""

from __future__ import annotations

import numpy as np
import pandas as pd


class NoFallbackPossible(ValueError):
    """Not even a seasonal-naive forecast: the history lacks the hours a week and a day before the horizon."""


def seasonal_naive(history: pd.DataFrame, hours: pd.DatetimeIndex, *, target: str = "energy_kwh") -> np.ndarray:
    """For each hour in `hours` the target 168 h earlier, or 24 h earlier where the week-old value is missing."""
    if "ts" not in history or target not in history:
        raise NoFallbackPossible(f"history needs columns 'ts' and {target!r}, has {sorted(history.columns)}")
    ts = pd.DatetimeIndex(pd.to_datetime(history["ts"], utc=True))
    actual = pd.Series(pd.to_numeric(history[target], errors="coerce").to_numpy(dtype=float), index=ts)
    actual = actual[~actual.index.duplicated(keep="last")]
    if "energy_valid" in history:
        actual = actual.where(history["energy_valid"].fillna(False).astype(bool).to_numpy())
    week = actual.reindex(hours - pd.Timedelta(hours=168)).to_numpy()
    day = actual.reindex(hours - pd.Timedelta(hours=24)).to_numpy()
    # A horizon longer than a day: "yesterday" may itself be in the horizon; repeat the last known day then.
    values = np.where(np.isfinite(week), week, day)
    if not np.isfinite(values).all():
        missing = hours[~np.isfinite(values)][0]
        raise NoFallbackPossible(f"no {target} at {missing - pd.Timedelta(hours=168)} nor {missing - pd.Timedelta(hours=24)}")
    return values
