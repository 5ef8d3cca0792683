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


WEEK_H = 168


def rollout(forecaster: Any, spec: Any, frame: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp) -> pd.Series:
    """Predicted kWh for every hour in [start, end), one day-ahead call per day, every lookback taken from
    the building *before* `start`: the lookback of a day `d` days after `start` is the one that ends
    ceil(d / 7) whole weeks earlier (same hours of the week, so the calendar inputs stay true), and the
    day's own inputs are its observed weather and calendar. No metered hour from `start` on is read.

    Why not feed the model its own predictions instead: the network's level is the lookback's mean, so
    a recursive rollout feeds its errors back into the level and drifts over a reporting period of weeks.
    `frame`: one building's gold features (observed weather) from `spec.lookback_h` + 168 h before `start`.
    """
    from ml.spec import INPUT_FUTURE, INPUT_HISTORY
    from ml.windows import hourly_grid

    grid = hourly_grid(frame, spec)
    if start - pd.Timedelta(hours=spec.lookback_h + WEEK_H) < grid.index[0]:
        raise VerificationError(
            f"the LSTM baseline needs {spec.lookback_h + WEEK_H} h of data before {start}; the data start at {grid.index[0]}"
        )
    history_values = grid[list(spec.history_features)].to_numpy(np.float32)
    future_values = grid[list(spec.future_features)].to_numpy(np.float32)
    first = int(grid.index.get_indexer([start.floor("h")])[0])
    last = int(grid.index.searchsorted(end))  # exclusive position
    origins = np.arange(first, last, spec.horizon_h)
    histories, futures = [], []
    for pos in origins:
        shift = int(np.ceil((pos - first) / WEEK_H)) * WEEK_H
        histories.append(history_values[pos - shift - spec.lookback_h: pos - shift])
        future = future_values[pos: pos + spec.horizon_h]
        if len(future) < spec.horizon_h:  # the last day runs past the data: pad with its last hour
            future = np.concatenate([future, np.repeat(future[-1:], spec.horizon_h - len(future), axis=0)])
        futures.append(future)
    out = forecaster.serving_model.predict(
        {INPUT_HISTORY: np.stack(histories), INPUT_FUTURE: np.stack(futures)}, batch_size=256, verbose=0
    )
    predicted = np.full(len(grid), np.nan)
    for pos, p50 in zip(origins, np.asarray(out["p50"])):
        stop = min(pos + spec.horizon_h, len(grid))
        predicted[pos:stop] = p50[: stop - pos]
    series = pd.Series(predicted, index=grid.index)
    return series[(series.index >= start) & (series.index < end)]


def _train(frame: pd.DataFrame, period: Period, spec: Any, params: Any, building_id: str, timezone: str):
    from ml.pipeline import NoTrainingData, train_model

    ts = pd.DatetimeIndex(frame["ts"])
    try:
        return train_model(frame[period.contains(ts)], spec, params, timezones={building_id: timezone}, stride_h=6)
    except NoTrainingData as err:
        raise VerificationError(f"baseline {period.start.date()} .. {period.end.date()}: {err}; lengthen the baseline") from None


def fit_lstm_baseline(frame: pd.DataFrame, baseline: Period, reporting: Period, timezone: str, *,
                      spec: Any, params: Any, building_id: str, holdout_days: int = 14) -> BaselineFit:
    """Two trainings, both on baseline hours only. The fit statistics (and so the FSU) come from a model
    trained without the baseline's last `holdout_days` and rolled out over them exactly as the
    counterfactual is rolled out over the reporting period: out-of-sample, because a network's in-sample
    residuals say little about its error weeks away from its data. The counterfactual comes from the
    model trained on the whole baseline."""
    frame = with_observed_weather(frame.assign(ts=pd.to_datetime(frame["ts"], utc=True)).sort_values("ts"))
    ts = pd.DatetimeIndex(frame["ts"])
    holdout_start = baseline.end - pd.Timedelta(days=holdout_days)
    if holdout_start - pd.Timedelta(hours=spec.lookback_h + WEEK_H) < baseline.start + pd.Timedelta(days=7):
        raise VerificationError(
            f"baseline {baseline.start.date()} .. {baseline.end.date()} is too short for the LSTM baseline: it needs "
            f"{holdout_days} held-out days after {(spec.lookback_h + WEEK_H) // 24 + 7} days of training; lengthen the baseline"
        )
    tuning = _train(frame, Period(baseline.start, holdout_start), spec, params, building_id, timezone)
    in_baseline = frame[baseline.contains(ts)]
    fitted = rollout(tuning.forecaster, tuning.spec, in_baseline, holdout_start, baseline.end)
    trained = _train(frame, baseline, spec, params, building_id, timezone)
    # Lookbacks come from the baseline's last weeks; a gap between the periods (the installation) is skipped.
    context = frame[(ts >= baseline.end - pd.Timedelta(hours=spec.lookback_h + WEEK_H)) & (ts < reporting.end)]
    # Each model's own spec: the features its training data could give (ml.spec.spec_for_frame).
    counterfactual = rollout(trained.forecaster, trained.spec, context, baseline.end, reporting.end)
    counterfactual = counterfactual[reporting.contains(counterfactual.index)]
    notes = [f"LSTM: fit statistics out of sample, on the baseline's last {holdout_days} days predicted by a model "
             f"trained without them; their NMBE joins the uncertainty as a systematic part"]
    out_params = {
        "lookback_h": spec.lookback_h, "horizon_h": spec.horizon_h, "units": params.units, "epochs": params.epochs,
        "epochs_run": trained.epochs_run, "n_train_windows": trained.n_train_windows, "holdout_days": holdout_days,
        "best_val_loss": trained.best_val_loss, "train_seconds": round(trained.train_seconds + tuning.train_seconds, 2),
    }
    # p = 1 for the network, as Guideline 14's hourly criteria use for simulation models: its weights are
    # not degrees of freedom taken from the held-out hours the statistics are computed on.
    return BaselineFit("lstm", 1, fitted, counterfactual, out_params, notes, out_of_sample=True)
