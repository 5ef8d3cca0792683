"""Weather plausibility, row by row and vectorised; the GE suite validates the same derived columns."""

from __future__ import annotations

import numpy as np
import pandas as pd

HOUR_NS = 3_600 * 10**9


def weather_check_frame(weather: pd.DataFrame, quality) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Weather rows with the derived columns the suite checks, and one boolean flag per check name."""
    df = weather.reset_index(drop=True).copy()
    for variable in quality.weather_ranges:
        if variable not in df:
            df[variable] = np.nan  # a source that does not report it: nothing to check, not a failure
    n = len(df)
    kind = df["kind"].to_numpy(dtype=object)
    is_obs = kind == "observation"
    is_fc = kind == "forecast"
    ts = df["ts"]
    issued = df["issued_at"].where(df["issued_at"].notna(), ts)
    df["dew_point_excess_c"] = df["dew_point_c"] - df["temperature_c"]
    if "ingested_at" in df and df["ingested_at"].notna().all():
        lead = (ts - df["ingested_at"]) / pd.Timedelta(hours=1)
        df["observation_lead_h"] = np.where(is_obs, lead, np.nan)
    else:
        df["observation_lead_h"] = np.nan
    df["forecast_lead_h"] = np.where(is_fc, (ts - issued) / pd.Timedelta(hours=1), np.nan)

    flags: dict[str, np.ndarray] = {"weather_kind_known": ~(is_obs | is_fc)}
    keys = df[["site_id", "kind", "ts"]].assign(issued_at=issued)
    flags["weather_keys_unique"] = keys.duplicated(keep="last").to_numpy()
    with np.errstate(invalid="ignore"):
        flags["weather_dew_point_plausible"] = (df["dew_point_excess_c"] > quality.dew_point_tolerance_c).to_numpy()
        flags["weather_future_observation"] = (df["observation_lead_h"] > quality.max_future_skew_h).to_numpy()
        flags["weather_forecast_after_issue"] = (df["forecast_lead_h"] < 0).to_numpy()
    for variable, (lo, hi) in quality.weather_ranges.items():
        v = pd.to_numeric(df[variable], errors="coerce").to_numpy(dtype=np.float64) if variable in df else np.full(n, np.nan)
        with np.errstate(invalid="ignore"):
            flags[f"weather_range_{variable}"] = (v < lo) | (v > hi)
    return df, flags
