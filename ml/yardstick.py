"""The gradient-boosting yardstick: what a strong tabular model makes of the same day-ahead information.

scikit-learn's histogram gradient boosting, one row per target hour, with the calendar, the weather
forecast known at the origin, and the building's energy 24, 48 and 168 h before the hour (and the mean of
24-47 h before): every one known at the local-midnight origin for each of the 24 steps ahead. One model
for all buildings, the building as a category. The forecaster is judged against it on the very same
hours (benchmarks, `wattflow backtest`): the bar a neural model has to clear to earn its place.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

FEATURES = ("hour_of_day", "day_of_week", "month", "is_holiday", "forecast_temperature", "forecast_humidity",
            "forecast_solar_radiation", "energy_24h_before", "energy_48h_before", "energy_168h_before",
            "mean_energy_24_to_47h_before", "building")


def yardstick_table(gold: pd.DataFrame) -> pd.DataFrame:
    """Gold features on a complete hourly grid per building with the lagged-energy columns and the target."""
    frames = []
    for building, one in gold.sort_values(["building_id", "ts"]).groupby("building_id", observed=True):
        one = one.set_index(pd.to_datetime(one["ts"], utc=True)).asfreq("h")
        energy = one["energy_kwh"].astype(float)
        valid = one["energy_valid"].astype("boolean").fillna(False).to_numpy(dtype=bool)
        one = one.assign(
            building_id=building, energy_24h_before=energy.shift(24), energy_48h_before=energy.shift(48),
            energy_168h_before=energy.shift(168), mean_energy_24_to_47h_before=energy.shift(24).rolling(24, min_periods=12).mean(),
            target=energy.where(valid),
        )
        frames.append(one.rename_axis("hour").reset_index())
    table = pd.concat(frames, ignore_index=True)
    table["building"] = table["building_id"].astype(str).astype("category").cat.codes
    table["is_holiday"] = table["is_holiday"].astype(float)
    for column in FEATURES:
        if column not in table:
            table[column] = np.nan
        table[column] = table[column].astype(float)
    return table


def gradient_boosting_yardstick(gold: pd.DataFrame, train_end: pd.Timestamp, hours: pd.DataFrame,
                                train_buildings: set[str] | None = None) -> np.ndarray:
    """Fit on hours before `train_end` (of `train_buildings`, default all) and predict `hours` (building_id, ts)."""
    from sklearn.ensemble import HistGradientBoostingRegressor

    table = yardstick_table(gold)
    features = list(FEATURES)
    train = table[(table["hour"] < train_end) & table["target"].notna() & table["energy_168h_before"].notna()]
    if train_buildings is not None:
        train = train[train["building_id"].astype(str).isin(train_buildings)]
    model = HistGradientBoostingRegressor(max_iter=500, learning_rate=0.05, random_state=0,
                                         categorical_features=[features.index("building")])
    model.fit(train[features], train["target"])
    table["hour"] = table["hour"].astype("datetime64[ns, UTC]")
    keys = hours[["building_id", "ts"]].astype({"building_id": str, "ts": "datetime64[ns, UTC]"})
    wanted = keys.merge(table.drop(columns=["ts"]).astype({"building_id": str}), left_on=["building_id", "ts"],
                        right_on=["building_id", "hour"], how="left")
    if len(wanted) != len(hours):
        raise ValueError(f"yardstick: {len(wanted)} rows for {len(hours)} backtest hours")
    return model.predict(wanted[features])
