"""Forecast accuracy as ASHRAE Guideline 14 defines it, plus MAE, RMSE, MAPE and skill.

Guideline 14-2014 (section 4.3.3 / annex B) for a model of measured data y and predictions ŷ:

    CV(RMSE) = sqrt( Σ (y_i − ŷ_i)² / (n − p) ) / ȳ
    NMBE     = Σ (y_i − ŷ_i) / ( (n − p) · ȳ )

with ȳ the mean of the measured values and p the number of model parameters. The sign convention is
measured minus predicted: a positive NMBE means the model under-predicts. We report fractions, not
percent (settings compare against 0.30 and 0.10). A forecaster's out-of-sample error has no fitted
parameter to charge, but the Guideline's hourly calibration criteria are stated with p = 1, so `p`
defaults to 1 (settings.model.ashrae_p) to stay comparable; on thousands of hours the difference is
negligible.

Every function takes a `valid` mask: hours flagged invalid count for no metric, and the model and the
baselines are always scored on the same hours.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class Accuracy:
    n_hours: int
    mae: float
    rmse: float
    cv_rmse: float
    nmbe: float
    mape: float

    def as_dict(self) -> dict[str, float]:
        return {k: v for k, v in asdict(self).items() if k != "n_hours"}


def _flat(actual: np.ndarray, forecast: np.ndarray, valid: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    actual = np.asarray(actual, dtype=np.float64)
    forecast = np.asarray(forecast, dtype=np.float64)
    if actual.shape != forecast.shape:
        raise ValueError(f"actual has shape {actual.shape} but forecast has {forecast.shape}")
    mask = np.isfinite(actual) & np.isfinite(forecast)
    if valid is not None:
        mask &= np.asarray(valid, dtype=bool)
    return actual[mask], forecast[mask]


def accuracy(actual: np.ndarray, forecast: np.ndarray, valid: np.ndarray | None = None, p: int = 1) -> Accuracy:
    y, yhat = _flat(actual, forecast, valid)
    n = int(y.size)
    if n == 0:
        nan = float("nan")
        return Accuracy(0, nan, nan, nan, nan, nan)
    error = y - yhat
    mean = float(y.mean())
    dof = max(n - p, 1)
    nonzero = y != 0
    return Accuracy(
        n_hours=n,
        mae=float(np.abs(error).mean()),
        rmse=float(np.sqrt((error**2).mean())),
        cv_rmse=float(np.sqrt((error**2).sum() / dof) / mean) if mean else float("nan"),
        nmbe=float(error.sum() / (dof * mean)) if mean else float("nan"),
        # MAPE is undefined where the actual is zero (a closed building at night): those hours are skipped.
        mape=float(np.abs(error[nonzero] / y[nonzero]).mean()) if nonzero.any() else float("nan"),
    )


def skill(model: Accuracy, baseline: Accuracy) -> dict[str, float]:
    """1 − model error / baseline error: > 0 means the model beats the baseline, 1 is perfect."""

    def ratio(a: float, b: float) -> float:
        return float(1.0 - a / b) if b else float("nan")

    return {"mae": ratio(model.mae, baseline.mae), "rmse": ratio(model.rmse, baseline.rmse)}


def per_horizon(actual: np.ndarray, forecast: np.ndarray, valid: np.ndarray, p: int = 1) -> list[Accuracy]:
    """Accuracy at each horizon step (column) of [n_windows, horizon] arrays."""
    return [accuracy(actual[:, h], forecast[:, h], valid[:, h], p) for h in range(actual.shape[1])]
