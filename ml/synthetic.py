"""A synthetic gold-features frame for tests, benchmarks and demos without the lakehouse.

`simulated_gold_features` is the one-world view: the building simulator (lakehouse/simulator) curated
to gold in memory, its ground truth beside it (lakehouse/simulator/gold_view.py). `synthetic_gold_features`
below is the older closed-form generator that the unit tests were written against; new tests and
benchmarks use the simulator's view.

Energy follows a daily occupancy profile (weekdays only), heating/cooling driven by outdoor temperature
and noise; the day-ahead forecast columns are the observed weather plus forecast error. Columns follow
the `gold.features` contract, so every consumer of gold features can run on it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from lakehouse.schemas import FEATURES


def simulated_gold_features(
    n_buildings: int = 3,
    start: str = "2024-01-01",
    days: int = 60,
    seed: int = 7,
    **kwargs,
):
    """Gold features of `n_buildings` simulated buildings over `days` days from `start`, and the
    `SimulatedGold` they come from (truth, ground truth, registry, timezones)."""
    from lakehouse.simulator.gold_view import simulated_gold

    begin = pd.Timestamp(start, tz="UTC")
    world = simulated_gold(n_buildings, begin, begin + pd.Timedelta(days=days), seed=seed, **kwargs)
    return world.features, world


def synthetic_gold_features(
    building_ids: tuple[str, ...] = ("b1",),
    start: str = "2024-01-01",
    days: int = 60,
    seed: int = 7,
    noise_kwh: float = 2.0,
    invalid_fraction: float = 0.0,
    timezone: str = "UTC",
) -> pd.DataFrame:
    """Hourly rows per building from local midnight of `start` for `days` days, every FEATURES column present."""
    rng = np.random.default_rng(seed)
    first = pd.Timestamp(start).tz_localize(timezone).tz_convert("UTC")
    ts = pd.date_range(first, periods=days * 24, freq="h")
    local = ts.tz_convert(timezone)
    hour, dow = local.hour.to_numpy(), local.dayofweek.to_numpy()
    day_of_year = local.dayofyear.to_numpy()
    frames = []
    for i, building_id in enumerate(building_ids):
        scale = 1.0 + 0.5 * i
        temperature = 10 + 8 * np.sin(2 * np.pi * (day_of_year - 110) / 365) + 5 * np.sin(2 * np.pi * (hour - 9) / 24)
        temperature = temperature + rng.normal(0, 1.5, len(ts))
        humidity = np.clip(70 - 1.2 * (temperature - 10) + rng.normal(0, 5, len(ts)), 5, 100)
        solar = np.clip(600 * np.sin(np.pi * (hour - 6) / 12), 0, None) * rng.uniform(0.4, 1.0, len(ts))
        weekend = dow >= 5
        open_hours = (~weekend) & (hour >= 8) & (hour < 18)
        occupancy = np.where(open_hours, 80 * scale, 2.0) * rng.uniform(0.8, 1.2, len(ts))
        energy = (
            20 * scale
            + np.where(open_hours, 35 * scale, 0.0)
            + 1.8 * scale * np.clip(16 - temperature, 0, None)
            + 2.2 * scale * np.clip(temperature - 22, 0, None)
            + rng.normal(0, noise_kwh, len(ts))
        )
        valid = rng.random(len(ts)) >= invalid_fraction
        frame = pd.DataFrame(
            {
                "building_id": building_id,
                "ts": ts,
                "energy_kwh": np.where(valid, energy, np.nan),
                "energy_valid": valid,
                "hour_of_day": hour.astype(np.int8),
                "day_of_week": dow.astype(np.int8),
                "month": local.month.to_numpy().astype(np.int8),
                "season": ((local.month.to_numpy() % 12) // 3).astype(np.int8),
                "is_weekend": weekend,
                "is_holiday": np.zeros(len(ts), bool),
                "is_working_hour": open_hours,
                "hour_sin": np.sin(2 * np.pi * hour / 24),
                "hour_cos": np.cos(2 * np.pi * hour / 24),
                "dow_sin": np.sin(2 * np.pi * dow / 7),
                "dow_cos": np.cos(2 * np.pi * dow / 7),
                "doy_sin": np.sin(2 * np.pi * (local.dayofyear.to_numpy() - 1) / 365.25),
                "doy_cos": np.cos(2 * np.pi * (local.dayofyear.to_numpy() - 1) / 365.25),
                "temperature": temperature,
                "humidity": humidity,
                "solar_radiation": solar,
                "indoor_temperature": 21 + rng.normal(0, 0.5, len(ts)),
                "occupancy": occupancy,
                "heating_degree_hours": np.clip(18 - temperature, 0, None),
                "cooling_degree_hours": np.clip(temperature - 22, 0, None),
                "temp_humidity_interaction": temperature * humidity / 100,
                "occupancy_time_interaction": occupancy * np.sin(2 * np.pi * hour / 24),
                "forecast_temperature": temperature + rng.normal(0, 1.0, len(ts)),
                "forecast_humidity": np.clip(humidity + rng.normal(0, 4, len(ts)), 0, 100),
                "forecast_solar_radiation": np.clip(solar + rng.normal(0, 40, len(ts)), 0, None),
                "forecast_issued_at": local.normalize().tz_convert("UTC") - pd.Timedelta(hours=18),
            }
        )
        energy_series = frame["energy_kwh"]
        frame["lagged_energy"] = energy_series.shift(24)
        frame["lagged_energy_168h"] = energy_series.shift(168)
        frame["rolling_avg_energy"] = energy_series.shift(1).rolling(24, min_periods=1).mean()
        frame["rolling_avg_energy_168h"] = energy_series.shift(1).rolling(168, min_periods=1).mean()
        for column in ("temperature", "humidity", "occupancy"):
            frame[f"{column}_std"] = (frame[column] - frame[column].mean()) / frame[column].std()
        frame["date"] = ts.date
        frames.append(frame)
    out = pd.concat(frames, ignore_index=True)
    # Columns the contract gained after this generator was written stay null rather than break callers.
    for column in FEATURES.schema.names:
        if column not in out:
            out[column] = None
    return out[list(FEATURES.schema.names)]
