"""Silver gap filling, forecast alignment and derived weather; gold calendar/lags/trailing means and the
day-ahead weather (issued, else persistence), on hand-made frames."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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


# -- derived weather ------------------------------------------------------------------------------------

def test_relative_humidity_from_dew_point_matches_known_values():
    from lakehouse.bronze import dew_point_c
    from lakehouse.weather_derivation import relative_humidity_pct

    got = relative_humidity_pct(np.array([20.0, 30.0, 0.0, 15.0, 10.0]), np.array([10.0, 20.0, -10.0, 15.0, 10.6]))
    # Magnus (Alduchov-Eskridge) over water: 52.5 %, 55.1 %, 46.9 %; saturated at T = Td; a dew point above the
    # temperature (sensor noise) is capped at 100 %.
    assert np.allclose(got, [52.54, 55.08, 46.94, 100.0, 100.0], atol=0.02)
    rh = np.array([5.0, 35.0, 80.0, 99.0])
    assert np.allclose(relative_humidity_pct(np.full(4, 12.0), dew_point_c(np.full(4, 12.0), rh)), rh)  # bronze's inverse


def test_clear_sky_radiation_is_zero_at_night_peaks_at_solar_noon_and_has_the_right_magnitude():
    from lakehouse.weather_derivation import clear_sky_ghi_wm2, cloud_adjusted_ghi_wm2

    def day(date: str) -> np.ndarray:  # Cambridge, UK (52.2 N, 0.12 E): solar noon is ~12:00 UTC
        hours = pd.date_range(date, periods=24, freq="h", tz="UTC").asi8 // 1000
        return clear_sky_ghi_wm2(np.full(24, 52.2), np.full(24, 0.12), hours)

    summer, winter = day("2024-06-21"), day("2024-12-21")
    assert (summer[[0, 1, 2, 21, 22, 23]] == 0).all() and (winter[:8] == 0).all() and (winter[16:] == 0).all()
    assert set(np.argsort(summer)[-2:]) == {11, 12} and set(np.argsort(winter)[-2:]) == {11, 12}  # the hours around noon
    assert 800 <= summer.max() <= 950 and 200 <= winter.max() <= 300
    assert np.allclose(summer[:12], summer[12:][::-1], rtol=0.05, atol=5)  # near-symmetric about noon
    overcast = cloud_adjusted_ghi_wm2(summer, np.full(24, 100.0))
    assert np.allclose(overcast, 0.25 * summer) and np.allclose(cloud_adjusted_ghi_wm2(summer, np.zeros(24)), summer)
    half = cloud_adjusted_ghi_wm2(np.array([800.0]), np.array([50.0]))[0]
    assert half == pytest.approx(800 * (1 - 0.75 * 0.5**3.4))


def test_silver_derives_humidity_and_radiation_where_the_site_sends_none_and_names_them():
    from lakehouse.weather_derivation import clear_sky_ghi_wm2, cloud_adjusted_ghi_wm2

    reg = registry()
    ts = pd.date_range("2024-06-21T08:00", periods=4, freq="h", tz="UTC")
    out = pd.DataFrame({"building_id": "b1", "ts": ts, "quality_flags": ["", "imputed", "", ""]})
    observations = pd.DataFrame({
        "site_id": "s1", "ts": ts, "temperature_c": [20.0, 20.0, 20.0, np.nan], "dew_point_c": [10.0, 10.0, 10.0, 10.0],
        "relative_humidity_pct": [np.nan, 70.0, np.nan, np.nan], "cloud_cover_pct": [50.0, np.nan, np.nan, 50.0],
        "solar_radiation_wm2": [np.nan, np.nan, 333.0, np.nan], "wind_speed_ms": 2.0})
    got = attach_weather(out, reg, observations, None)
    clear = clear_sky_ghi_wm2(np.full(4, 52.5), np.full(4, 13.4), ts.asi8 // 1000)
    assert got["outdoor_humidity_pct"].iloc[0] == pytest.approx(52.54, abs=0.01)
    assert got["outdoor_humidity_pct"].iloc[1] == 70.0 and np.isnan(got["outdoor_humidity_pct"].iloc[3])  # observed wins; no T, no RH
    assert got["solar_radiation_wm2"].iloc[0] == pytest.approx(cloud_adjusted_ghi_wm2(clear[:1], np.array([50.0]))[0])
    assert got["solar_radiation_wm2"].iloc[1] == pytest.approx(clear[1]) and got["solar_radiation_wm2"].iloc[2] == 333.0
    assert list(got["quality_flags"]) == [
        "humidity_from_dew_point,solar_radiation_from_cloud_cover", "imputed,solar_radiation_clear_sky",
        "humidity_from_dew_point", "solar_radiation_from_cloud_cover"]
    assert "site_id" not in got and not any(c.startswith("_") for c in got.columns)
    # Future rows (nothing observed yet) stay empty; a forecast with dew point and cloud cover is converted alike.
    forecasts = observations.assign(issued_at=pd.Timestamp("2024-06-19T06:00", tz="UTC"), relative_humidity_pct=np.nan,
                                    solar_radiation_wm2=[np.nan, 500.0, np.nan, np.nan])
    ahead = attach_weather(pd.DataFrame({"building_id": "b1", "ts": ts}), reg, None, forecasts, derive_observed=False)
    assert ahead[["outdoor_temperature_c", "outdoor_humidity_pct", "solar_radiation_wm2"]].isna().all().all()
    assert ahead["forecast_humidity_pct"].iloc[0] == pytest.approx(52.54, abs=0.01)
    assert ahead["forecast_solar_radiation_wm2"].iloc[1] == 500.0
    assert ahead["forecast_solar_radiation_wm2"].iloc[2] == pytest.approx(clear[2])
    assert ahead["quality_flags"].iloc[0] == "forecast_humidity_from_dew_point,forecast_solar_radiation_from_cloud_cover"
    assert ahead["quality_flags"].iloc[2] == "forecast_humidity_from_dew_point,forecast_solar_radiation_clear_sky"


# -- day-ahead weather: issued forecast, else persistence -------------------------------------------------

def weather_hourly(n: int, start: str, rng: np.random.Generator, issued_share: float) -> pd.DataFrame:
    frame = hourly(n, start)
    # Distinct values everywhere, so "equal to the hour itself" cannot happen by coincidence.
    frame["outdoor_temperature_c"] = rng.uniform(-10, 30, n) + np.arange(n) * 1e-3
    frame["outdoor_humidity_pct"] = rng.uniform(20, 100, n)
    frame["solar_radiation_wm2"] = rng.uniform(0, 900, n)
    issued = rng.random(n) < issued_share
    origin = pd.Series(forecast_origins(frame["ts"].astype("datetime64[us, UTC]").astype("int64").to_numpy(), "Europe/Berlin"))
    frame["forecast_issued_at"] = pd.to_datetime(origin - 6 * 3_600_000_000, unit="us", utc=True).where(issued)
    for column in ("forecast_temperature_c", "forecast_humidity_pct", "forecast_solar_radiation_wm2"):
        frame[column] = np.where(issued, rng.uniform(-50, -40, n), np.nan)  # impossible as observations: no mix-up
    return frame


def test_issued_forecasts_win_and_persistence_fills_the_rest():
    rng = np.random.default_rng(3)
    frame = weather_hourly(24 * 4, "2024-03-01", rng, issued_share=0.5)
    f = hourly_to_features(frame, registry(), Settings()).set_index("ts")
    silver = frame.set_index("ts")
    issued = silver["forecast_issued_at"].notna()
    assert (f.loc[issued, "forecast_source"] == "issued").all()
    assert np.allclose(f.loc[issued, "forecast_temperature"], silver.loc[issued, "forecast_temperature_c"])
    day2 = f.index >= pd.Timestamp("2024-03-02", tz="UTC")
    fallback = ~issued & day2
    assert fallback.sum() > 10 and (f.loc[fallback, "forecast_source"] == "persistence").all()
    before = f.index[fallback] - pd.Timedelta(hours=24)
    assert np.allclose(f.loc[fallback, "forecast_temperature"], silver.loc[before, "outdoor_temperature_c"])
    assert np.allclose(f.loc[fallback, "forecast_humidity"], silver.loc[before, "outdoor_humidity_pct"])
    assert np.allclose(f.loc[fallback, "forecast_solar_radiation"], silver.loc[before, "solar_radiation_wm2"])
    assert f.loc[fallback, "forecast_issued_at"].isna().all()
    # The first day has no day before it in the frame: neither exists.
    first = ~issued & ~day2 & (f.index < pd.Timestamp("2024-03-01T23:00", tz="UTC"))
    assert f.loc[first, "forecast_source"].isna().all() and f.loc[first, "forecast_temperature"].isna().all()
    assert set(f["forecast_source"].dropna()) == {"issued", "persistence"}
    assert FEATURES.schema.field("forecast_source").type == pa.string() and FEATURES.schema.field("forecast_source").nullable
    # Clocks go back on 27 October 2024 in Berlin: its 25th hour (ts - 24 h is the origin's own hour, not yet
    # over at the origin) persists the hour 25 h before, the same local hour of the day before.
    autumn = weather_hourly(24 * 3, "2024-10-26", rng, issued_share=0.0)
    g = hourly_to_features(autumn, registry(), Settings()).set_index("ts")
    last_hour = pd.Timestamp("2024-10-27T22:00", tz="UTC")  # 23:00 CET, 24 h after the origin 26 Oct 22:00 UTC
    assert g.loc[last_hour, "forecast_origin"] == pd.Timestamp("2024-10-26T22:00", tz="UTC")
    assert g.loc[last_hour, "forecast_temperature"] == autumn.set_index("ts").loc[last_hour - pd.Timedelta(hours=25), "outdoor_temperature_c"]


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), days=st.integers(2, 6), start_day=st.integers(0, 370),
       issued_share=st.sampled_from([0.0, 0.3, 0.9]), dropped=st.integers(0, 30))
def test_persistence_is_the_observation_a_day_before_over_before_the_origin_never_the_hour_itself(
        seed, days, start_day, issued_share, dropped):
    rng = np.random.default_rng(seed)
    start = (pd.Timestamp("2024-01-01") + pd.Timedelta(days=start_day)).isoformat()  # spans both DST changes of 2024
    frame = weather_hourly(24 * days, start, rng, issued_share)
    frame = frame.drop(index=rng.choice(len(frame), size=dropped, replace=False))  # silver misses hours
    f = hourly_to_features(frame, registry(), Settings()).set_index("ts")
    silver = frame.set_index("ts")
    persistence = f[f["forecast_source"] == "persistence"]
    for ts, row in persistence.iterrows():
        lag = pd.Timedelta(hours=24)
        while ts - lag + pd.Timedelta(hours=1) > row["forecast_origin"]:  # the 25th hour of a day the clocks go back
            lag += pd.Timedelta(hours=1)
        assert lag <= pd.Timedelta(hours=25)
        source = ts - lag
        assert source + pd.Timedelta(hours=1) <= row["forecast_origin"]  # over before the origin
        assert row["forecast_temperature"] == silver.loc[source, "outdoor_temperature_c"]
        assert row["forecast_temperature"] != silver.loc[ts, "outdoor_temperature_c"]  # never the hour forecast
    no_issue = f["forecast_issued_at"].isna()
    assert (f.loc[~no_issue, "forecast_source"] == "issued").all()
    assert f.loc[no_issue, "forecast_source"].isin(["persistence"]).sum() + f.loc[no_issue, "forecast_source"].isna().sum() == no_issue.sum()
