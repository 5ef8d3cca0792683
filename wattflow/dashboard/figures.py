"""The dashboard's figures as pure functions of frames: weekly comparison, served forecast, accuracy,
downsampling. No storage here; `wattflow.dashboard.data` reads the tables and calls these."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ml.metrics import Accuracy, accuracy

WEEK = pd.Timedelta(days=7)


def weekly_comparison(hourly: pd.DataFrame, buildings: pd.DataFrame, end: pd.Timestamp) -> pd.DataFrame:
    """Per building: energy, cost and kgCO2e over the 7 days before `end` and the 7 days before those.

    `hourly` has building_id, ts, energy_kwh; `buildings` has building_id, name, tariff_per_kwh,
    currency, grid_emission_factor_kg_per_kwh. Rolling weeks ending at the latest data keep both
    figures complete, which calendar weeks would not be on a Tuesday.
    """
    this_start, last_start = end - WEEK, end - 2 * WEEK
    ts = hourly["ts"]
    energy = hourly["energy_kwh"].astype("float64")
    frame = pd.DataFrame({
        "building_id": hourly["building_id"].astype(str),
        "this_week_kwh": energy.where((ts >= this_start) & (ts < end), 0.0).fillna(0.0),
        "last_week_kwh": energy.where((ts >= last_start) & (ts < this_start), 0.0).fillna(0.0),
    })
    sums = frame.groupby("building_id", sort=True).sum()
    meta = buildings.set_index("building_id")
    out = pd.DataFrame(index=meta.index.union(sums.index))
    out["name"] = meta["name"].reindex(out.index).fillna(pd.Series(out.index, index=out.index))
    for column in ("this_week_kwh", "last_week_kwh"):
        out[column] = sums[column].reindex(out.index).fillna(0.0)
    tariff = meta["tariff_per_kwh"].reindex(out.index).astype("float64")
    factor = meta["grid_emission_factor_kg_per_kwh"].reindex(out.index).astype("float64")
    out["currency"] = meta["currency"].reindex(out.index).fillna("")
    for week in ("this_week", "last_week"):
        out[f"{week}_cost"] = out[f"{week}_kwh"] * tariff
        out[f"{week}_co2_kg"] = out[f"{week}_kwh"] * factor
    with np.errstate(divide="ignore", invalid="ignore"):
        out["change"] = np.where(out["last_week_kwh"] > 0, out["this_week_kwh"] / out["last_week_kwh"] - 1.0, np.nan)
    return out.reset_index(names="building_id")


def portfolio_totals(weekly: pd.DataFrame) -> dict[str, object]:
    """Energy and kgCO2e summed over the portfolio; cost summed per currency (tariffs differ by site)."""
    cost = weekly.groupby("currency", sort=True)[["this_week_cost", "last_week_cost"]].sum()
    this_kwh, last_kwh = float(weekly["this_week_kwh"].sum()), float(weekly["last_week_kwh"].sum())
    return {
        "this_week_kwh": this_kwh,
        "last_week_kwh": last_kwh,
        "change": (this_kwh / last_kwh - 1.0) if last_kwh > 0 else float("nan"),
        "this_week_co2_kg": float(weekly["this_week_co2_kg"].sum()),
        "last_week_co2_kg": float(weekly["last_week_co2_kg"].sum()),
        "cost": {str(c): (float(r["this_week_cost"]), float(r["last_week_cost"])) for c, r in cost.iterrows()},
    }


def served_forecast(forecasts: pd.DataFrame) -> pd.DataFrame:
    """Per building and hour, the forecast that was in force: the latest issued at or before the hour,
    a model's forecast preferred over the seasonal-naive fallback."""
    columns = ["building_id", "ts", "yhat_p10", "yhat_p50", "yhat_p90", "model_name", "model_version", "is_fallback"]
    if forecasts.empty:
        return pd.DataFrame(columns=columns)
    f = forecasts[forecasts["issued_at"] <= forecasts["ts"]].copy()
    f["is_fallback"] = f["is_fallback"].fillna(False).astype(bool)
    # Sorted so that the kept (last) row is a non-fallback one where any exists, then the latest issue.
    f = f.sort_values(["building_id", "ts", "is_fallback", "issued_at"], ascending=[True, True, False, True])
    f = f.drop_duplicates(["building_id", "ts"], keep="last")
    return f[[c for c in columns if c in f.columns]].reset_index(drop=True)


def recent_accuracy(actual: pd.DataFrame, served: pd.DataFrame, end: pd.Timestamp, days: int, ashrae_p: int = 1) -> Accuracy:
    """MAE, CV(RMSE), ... of the served (non-fallback) p50 against actuals over `days` before `end`."""
    start = end - pd.Timedelta(days=days)
    a = actual[(actual["ts"] >= start) & (actual["ts"] < end)][["building_id", "ts", "energy_kwh"]]
    f = served[~served["is_fallback"].astype(bool)][["building_id", "ts", "yhat_p50"]] if not served.empty else served
    joined = a.merge(f, on=["building_id", "ts"], how="inner") if not f.empty else a.assign(yhat_p50=np.nan)
    return accuracy(joined["energy_kwh"].to_numpy(np.float64), joined["yhat_p50"].to_numpy(np.float64), p=ashrae_p)


def downsample(frame: pd.DataFrame, columns: list[str], max_points: int) -> tuple[pd.DataFrame, int]:
    """Mean of `columns` over equal time buckets so at most `max_points` rows remain (one series,
    sorted by ts); returns the frame and the bucket size in hours (1 = untouched)."""
    if len(frame) <= max_points or frame.empty:
        return frame, 1
    span_h = (frame["ts"].max() - frame["ts"].min()) / pd.Timedelta(hours=1) + 1
    bucket_h = max(1, math.ceil(span_h / max_points))
    # Whole days when the bucket is longer than a few hours, so a point is "that day" on the chart.
    if bucket_h > 6:
        bucket_h = 24 * math.ceil(bucket_h / 24)
    bucketed = frame.set_index("ts")[columns].resample(f"{bucket_h}h").mean().dropna(how="all")
    return bucketed.reset_index(), bucket_h


def anomaly_hours(anomalies: pd.DataFrame, actual: pd.DataFrame) -> pd.DataFrame:
    """The hours of `actual` (one building) inside any anomaly span, with the anomaly's kind."""
    if anomalies.empty or actual.empty:
        return actual.iloc[0:0].assign(kind=pd.Series(dtype=str))
    parts = []
    for row in anomalies.itertuples(index=False):
        inside = actual[(actual["ts"] >= row.start) & (actual["ts"] < row.end)]
        if not inside.empty:
            parts.append(inside.assign(kind=row.kind))
    return pd.concat(parts, ignore_index=True) if parts else actual.iloc[0:0].assign(kind=pd.Series(dtype=str))
