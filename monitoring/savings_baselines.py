"""The two M&V baselines, each fitted on the baseline period only and driven by observed weather.

* `towt`: CalTRACK hourly (`monitoring.towt`), the reference practitioners recognise.
* `lstm`: the platform's own Keras forecaster (`ml.pipeline.train_model`, the training code path),
  trained on the baseline period with its weather-forecast inputs set to the observations (M&V uses what
  happened, not what was forecast). The network reads a lookback of metered energy, and after the measure
  the meter shows the *new* building, so the counterfactual is rolled forward day by day on its own
  predictions: every lookback hour inside the predicted span holds the model's earlier prediction, never
  the post-measure meter. Its fit statistics on the baseline come from the same rollout (started one
  lookback into the baseline), so the uncertainty describes the model as it is used.

Both return a `BaselineFit`; no storage (the MLflow run is the shell's).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from monitoring.verification import BaselineFit, Period, VerificationError, usable_hours

# Gold-features forecast column -> the observation it stands for.
OBSERVED_FOR_FORECAST = {
    "forecast_temperature": "temperature",
    "forecast_humidity": "humidity",
    "forecast_solar_radiation": "solar_radiation",
}


def with_observed_weather(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame with every weather-forecast input replaced by the observation for that hour."""
    out = frame.copy()
    for forecast, observed in OBSERVED_FOR_FORECAST.items():
        if observed in out:
            out[forecast] = out[observed]
    return out


def fit_towt_baseline(frame: pd.DataFrame, baseline: Period, reporting: Period, timezone: str) -> BaselineFit:
    from monitoring.towt import fit_towt

    frame = frame.assign(ts=pd.to_datetime(frame["ts"], utc=True)).sort_values("ts")
    ts = pd.DatetimeIndex(frame["ts"])
    train = baseline.contains(ts) & usable_hours(frame)
    temperature = pd.to_numeric(frame["temperature"], errors="coerce").to_numpy(np.float64)
    energy = pd.to_numeric(frame["energy_kwh"], errors="coerce").to_numpy(np.float64)
    try:
        model = fit_towt(ts[train], energy[train], temperature[train], timezone=timezone)
    except ValueError as err:
        raise VerificationError(f"baseline {baseline.start.date()} .. {baseline.end.date()}: {err}") from None
    base_rows, rep_rows = baseline.contains(ts), reporting.contains(ts)
    fitted = pd.Series(model.predict(ts[base_rows], temperature[base_rows]), index=ts[base_rows])
    counterfactual = pd.Series(model.predict(ts[rep_rows], temperature[rep_rows]), index=ts[rep_rows])
    notes = []
    if model.segment_type == "single":
        notes.append("TOWT: one segment for the whole baseline (CalTRACK's weighted monthly models need a 12-month baseline)")
    params = {
        "segment_type": model.segment_type,
        "n_segments": len(model.segments),
        "n_parameters": model.n_parameters,
        "occupied_hours_of_week": int(sum(int(s.occupied.sum()) for s in model.segments.values()) / len(model.segments)),
    }
    return BaselineFit("towt", model.n_parameters, fitted, counterfactual, params, notes)


def rollout(forecaster: Any, spec: Any, frame: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp,
            anchored: bool = False) -> pd.Series:
    """Predicted kWh for every hour in [start, end), day by day, each lookback holding earlier predictions
    for the hours from `start` on. `frame`: one building's gold features (observed weather) from at least
    `spec.lookback_h` hours before `start`."""
    from ml.spec import INPUT_FUTURE, INPUT_HISTORY
    from ml.windows import hourly_grid

    grid = hourly_grid(frame, spec)
    if start - pd.Timedelta(hours=spec.lookback_h + (168 if anchored else 0)) < grid.index[0]:
        raise VerificationError(
            f"the LSTM baseline needs {spec.lookback_h} h of history before {start}; the data start at {grid.index[0]}"
        )
    energy_col = spec.history_features.index(spec.target)
    history_values = grid[list(spec.history_features)].to_numpy(np.float32)
    future_values = grid[list(spec.future_features)].to_numpy(np.float32)
    first = int(grid.index.get_indexer([start.floor("h")])[0])
    last = int(grid.index.searchsorted(end))  # exclusive position
    predicted = np.full(len(grid), np.nan)
    origins = list(range(first, last, spec.horizon_h))
    for pos in origins:
        if anchored:
            shift = int(np.ceil((pos - first) / 168)) * 168
            history = history_values[pos - shift - spec.lookback_h: pos - shift]
        else:
            history = history_values[pos - spec.lookback_h: pos].copy()
            own = np.arange(pos - spec.lookback_h, pos) >= first
            history[own, energy_col] = predicted[pos - spec.lookback_h: pos][own]
        stop = min(pos + spec.horizon_h, len(grid))
        future = future_values[pos:stop]
        if len(future) < spec.horizon_h:  # the last day runs past the data: pad with its last hour
            future = np.concatenate([future, np.repeat(future[-1:], spec.horizon_h - len(future), axis=0)])
        out = forecaster.serving_model({INPUT_HISTORY: history[None], INPUT_FUTURE: future[None]}, training=False)
        p50 = np.asarray(out["p50"])[0]
        predicted[pos:stop] = p50[: stop - pos]
    series = pd.Series(predicted, index=grid.index)
    return series[(series.index >= start) & (series.index < end)]


def fit_lstm_baseline(frame: pd.DataFrame, baseline: Period, reporting: Period, timezone: str, *,
                      spec: Any, params: Any, building_id: str) -> BaselineFit:
    from ml.pipeline import NoTrainingData, train_model

    frame = with_observed_weather(frame.assign(ts=pd.to_datetime(frame["ts"], utc=True)).sort_values("ts"))
    ts = pd.DatetimeIndex(frame["ts"])
    train_frame = frame[baseline.contains(ts)]
    try:
        trained = train_model(train_frame, spec, params, timezones={building_id: timezone}, stride_h=6)
    except NoTrainingData as err:
        raise VerificationError(f"baseline {baseline.start.date()} .. {baseline.end.date()}: {err}; lengthen the baseline") from None
    fit_start = baseline.start + pd.Timedelta(hours=spec.lookback_h + (168 if True else 0))
    fitted = rollout(trained.forecaster, spec, train_frame, fit_start, baseline.end, anchored=True)
    # From the end of the baseline on, every lookback hour holds a prediction: a gap between the periods
    # (the installation) shows the meter of a building half changed, which is no baseline.
    context = frame[(ts >= baseline.end - pd.Timedelta(hours=spec.lookback_h + (168 if True else 0))) & (ts < reporting.end)]
    counterfactual = rollout(trained.forecaster, spec, context, baseline.end, reporting.end, anchored=True)
    counterfactual = counterfactual[reporting.contains(counterfactual.index)]
    notes = [f"LSTM: fit statistics on the baseline after its first {spec.lookback_h} h (the first lookback)"]
    out_params = {
        "lookback_h": spec.lookback_h, "horizon_h": spec.horizon_h, "units": params.units, "epochs": params.epochs,
        "epochs_run": trained.epochs_run, "n_train_windows": trained.n_train_windows,
        "best_val_loss": trained.best_val_loss, "train_seconds": round(trained.train_seconds, 2),
    }
    # p = 1 for the network, as Guideline 14's hourly criteria use for simulation models: its weights are
    # not degrees of freedom taken from these hours (early stopping holds out weeks of them).
    return BaselineFit("lstm", 1, fitted, counterfactual, out_params, notes)
