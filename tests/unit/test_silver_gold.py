"""Silver gap filling and forecast alignment, gold calendar/lags/trailing means, on hand-made frames."""

from __future__ import annotations

import numpy as np
import pandas as pd

from lakehouse.buildings import Building, BuildingRegistry, Sensor
from lakehouse.gold import hourly_to_features
from lakehouse.schemas import BUILDING_HOURLY, FEATURES
from lakehouse.silver import attach_weather, fill_gaps, forecast_origins, local_dates
from wattflow.settings import Settings


def registry(latitude: float = 52.5, country: str = "DE", tz: str = "Europe/Berlin") -> BuildingRegistry:
    return BuildingRegistry(buildings=[Building(
        building_id="b1", name="B1", site_id="s1", timezone=tz, country=country, use_type="office", floor_area_m2=1000,
        latitude=latitude, longitude=13.4, grid_emission_factor_kg_per_kwh=0.4, tariff_per_kwh=0.3, currency="EUR",
        sensors=[Sensor(sensor_id="elec", metric="energy")])])


def test_short_gaps_interpolate_within_the_local_day_long_ones_stay_empty():
    hours = pd.date_range("2024-01-10", periods=48, freq="h", tz="UTC").asi8 // 1000
    day = local_dates(hours, "Europe/Berlin")
    energy = np.arange(48, dtype=float)
    energy[5:7] = np.nan  # 2 h: filled
    energy[10:14] = np.nan  # 4 h: gap
    energy[22] = np.nan  # 23:00 local: its right neighbour is on the next local day -> gap
    filled, imputed, gap = fill_gaps(energy, day, 2)
    assert np.allclose(filled[5:7], [5, 6]) and imputed[5:7].all()
    assert gap[10:14].all() and np.isnan(filled[10:14]).all()
    assert gap[22] and not imputed[22]


def test_forecast_is_the_latest_issued_before_the_local_midnight_origin():
    reg = registry()
    ts = pd.date_range("2024-06-02T00:00", periods=24, freq="h", tz="UTC")
    out = pd.DataFrame({"building_id": "b1", "ts": ts})
    issued = [pd.Timestamp("2024-05-31T06:00", tz="UTC"), pd.Timestamp("2024-06-01T06:00", tz="UTC"),
              pd.Timestamp("2024-06-01T22:00", tz="UTC"), pd.Timestamp("2024-06-02T06:00", tz="UTC")]
    forecasts = pd.concat([pd.DataFrame({"site_id": "s1", "ts": ts, "issued_at": i, "temperature_c": float(k),
                                         "relative_humidity_pct": 50.0, "solar_radiation_wm2": 0.0}) for k, i in enumerate(issued)])
    got = attach_weather(out, reg, None, forecasts)
    origin = forecast_origins(ts.asi8 // 1000, "Europe/Berlin")
    # Berlin is UTC+2 in June: hours before 22:00 UTC belong to the local day of 2 June (origin 1 June 22:00 UTC).
    assert pd.Timestamp(origin[0], unit="us", tz="UTC") == pd.Timestamp("2024-06-01T22:00", tz="UTC")
    assert (got["forecast_temperature_c"][:22] == 1.0).all()  # issued 1 June 06:00; 22:00 is not *before* the origin
    assert (got["forecast_temperature_c"][22:] == 3.0).all()  # hours of 3 June local: issued 2 June 06:00
    assert (got["forecast_issued_at"] < got["forecast_origin"]).all()


def hourly(n: int = 24 * 10, start: str = "2024-12-20") -> pd.DataFrame:
    ts = pd.date_range(start, periods=n, freq="h", tz="UTC")
    frame = pd.DataFrame({c: np.nan for c in BUILDING_HOURLY.schema.names}, index=range(n))
    frame["building_id"], frame["ts"] = "b1", ts
    frame["energy_kwh"] = np.arange(n, dtype=float)
    frame["outdoor_temperature_c"], frame["outdoor_humidity_pct"], frame["occupancy"] = 5.0, 80.0, 10.0
    frame["imputed"] = frame["gap"] = frame["outlier"] = False
    frame["forecast_issued_at"] = pd.NaT
    return frame


def test_gold_calendar_holidays_degree_hours_lags_and_trailing_means():
    settings = Settings()
    f = hourly_to_features(hourly(), registry(), settings).set_index("ts")
    assert set(FEATURES.schema.names) <= set(f.reset_index().columns)
    xmas = f.loc[pd.Timestamp("2024-12-25T12:00", tz="UTC")]
    assert xmas["is_holiday"] and not xmas["is_working_hour"] and xmas["hour_of_day"] == 13 and xmas["season"] == 0
    row = f.loc[pd.Timestamp("2024-12-23T10:00", tz="UTC")]
    i = 3 * 24 + 10
    assert row["lagged_energy"] == i - 24 and np.isnan(row["lagged_energy_168h"])
    assert row["rolling_avg_energy"] == np.mean(np.arange(i - 24, i))  # the 24 h before, not this hour
    assert row["heating_degree_hours"] == settings.features.heating_base_c - 5.0 and row["cooling_degree_hours"] == 0
    assert row["temp_humidity_interaction"] == 4.0 and row["occupancy_time_interaction"] == 10.0
    assert row["is_working_hour"] and row["day_of_week"] == 0
    south = hourly_to_features(hourly(), registry(latitude=-33.9, country="AU", tz="Australia/Sydney"), settings)
    assert (south["season"] == 2).all()  # December is summer in the south


def test_gold_lags_are_by_time_not_by_row_when_silver_misses_hours():
    frame = hourly().drop(index=range(30, 40))
    f = hourly_to_features(frame, registry(), Settings()).set_index("ts")
    assert len(f) == len(frame)
    row = f.loc[pd.Timestamp("2024-12-21T20:00", tz="UTC")]
    assert row["lagged_energy"] == 20.0
