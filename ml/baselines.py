"""Naive forecasts every model is measured against, computed on the same windows from actuals before the origin."""

from __future__ import annotations

import numpy as np

from ml.windows import BASELINE_MEMORY_H, Windows

PERSISTENCE = "persistence_24h"
SEASONAL_NAIVE = "seasonal_naive_168h"
PERSISTENCE_ENSEMBLE = "persistence_ensemble"
BASELINES = (PERSISTENCE, SEASONAL_NAIVE, PERSISTENCE_ENSEMBLE)


def _seasonal(windows: Windows, period_h: int) -> np.ndarray:
    """Each horizon hour repeats the actual `period_h` hours before it (cycled when the horizon exceeds the period)."""
    horizon = windows.target.shape[1]
    if period_h > BASELINE_MEMORY_H:
        raise ValueError(f"period_h={period_h} exceeds the {BASELINE_MEMORY_H} h of actuals kept before each origin")
    # actuals_before[:, -k] is the hour k hours before the origin; step h is origin + h.
    steps = np.arange(horizon)
    back = period_h - (steps % period_h)
    return windows.actuals_before[:, BASELINE_MEMORY_H - back]


def persistence_24h(windows: Windows) -> np.ndarray:
    """Same hour yesterday: the day-ahead baseline a facility manager would use by hand."""
    return _seasonal(windows, 24)


def seasonal_naive_168h(windows: Windows) -> np.ndarray:
    """Same hour one week before: captures the weekday/weekend cycle persistence misses."""
    return _seasonal(windows, 168)


def persistence_ensemble(windows: Windows, days: int = 7) -> np.ndarray:
    """Mean of the same hour over the previous `days` days (BuildingsBench's "persistence ensemble"): smoother
    than yesterday alone, and the strongest naive day-ahead forecast on real commercial buildings."""
    lags = np.stack([_seasonal(windows, 24 * d) for d in range(1, days + 1)], axis=0)
    known = np.isfinite(lags)
    count = known.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, np.where(known, lags, 0.0).sum(axis=0) / count, np.nan).astype(lags.dtype)


def baseline_forecasts(windows: Windows) -> dict[str, np.ndarray]:
    return {PERSISTENCE: persistence_24h(windows), SEASONAL_NAIVE: seasonal_naive_168h(windows),
            PERSISTENCE_ENSEMBLE: persistence_ensemble(windows)}
