"""Anomalies against the simulator's injected after-hours waste, and the detectors on frames."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from monitoring.anomalies import AnomalyInputError, detect_anomalies, stuck_runs
from monitoring.savings_advice import building_savings, price_anomalies
from ml.synthetic import synthetic_gold_features
from wattflow.settings import AnomalySettings


def simulated_hourly(portfolio) -> pd.DataFrame:
    """Hourly energy, local calendar and outdoor temperature per building from a simulated portfolio."""
    truth = portfolio.truth_hourly.to_pandas()
    weather = portfolio.weather.to_pandas()
    frames = []
    for b in portfolio.registry:
        g = truth[truth["building_id"] == b.building_id].copy()
        local = g["ts"].dt.tz_convert(b.timezone)
        g["hour_of_day"], g["day_of_week"] = local.dt.hour, local.dt.dayofweek
        g["is_weekend"] = g["day_of_week"] >= 5
        observed = weather[(weather["kind"] == "observation") & (weather["site_id"] == b.site_id)]
        observed = observed[["ts", "temperature_c"]].rename(columns={"temperature_c": "temperature"})
        frames.append(g.merge(observed, on="ts", how="left"))
    return pd.concat(frames, ignore_index=True)


def test_injected_after_hours_waste_is_found_with_building_span_and_excess():
    from lakehouse.simulator import FaultConfig, simulate_portfolio

    portfolio = simulate_portfolio(3, "2025-01-06", "2025-03-03", seed=5, faults=FaultConfig.only("after_hours_waste"))
    truth = portfolio.ground_truth.to_pandas()
    truth = truth[truth["kind"] == "after_hours_waste"].iloc[0]
    detail = json.loads(truth["detail"])
    start, end = pd.Timestamp(truth["start"], tz="UTC") if pd.Timestamp(truth["start"]).tz is None else pd.Timestamp(truth["start"]), pd.Timestamp(truth["end"])
    end = end.tz_localize("UTC") if end.tz is None else end
    hourly = simulated_hourly(portfolio)
    since = pd.Timestamp("2025-02-03", tz="UTC")
    assert since + pd.Timedelta(days=1) < start  # the baseline weeks are clean

    anomalies, _ = detect_anomalies(hourly[hourly["ts"] >= since], hourly[hourly["ts"] < since], AnomalySettings())
    after_hours = anomalies[anomalies["kind"] == "after_hours_load"]
    assert set(after_hours["building_id"]) == {truth["building_id"]}
    assert (after_hours["start"] >= start.floor("h")).all() and (after_hours["end"] <= end.ceil("h")).all()
    # one anomaly per wasteful night, from the first to the last
    waste_hours = hourly[(hourly["building_id"] == truth["building_id"]) & (hourly["ts"] >= start.floor("h")) & (hourly["ts"] < end)]
    night = waste_hours[(waste_hours["hour_of_day"] >= 22) | (waste_hours["hour_of_day"] < 6)]
    assert after_hours["start"].min() == night["ts"].min()
    assert after_hours["end"].max() == night["ts"].max() + pd.Timedelta(hours=1)
    assert after_hours["excess_kwh"].sum() == pytest.approx(detail["excess_kwh"], rel=0.10)
    assert set(after_hours["severity"]) <= {"medium", "high"}


OFFICE_START = "2025-01-06"  # winter: the four baseline weeks have seen the weather of the two weeks judged


def _office(weeks: int = 6, seed: int = 1) -> pd.DataFrame:
    """The simulator's Berlin office (b01) curated to gold: hour and day columns on its local clock."""
    return synthetic_gold_features(("b01",), OFFICE_START, weeks * 7, seed=seed)


OVER = ("after_hours_load", "weekend_spike", "high_consumption", "stuck_meter")


def test_a_clean_office_raises_no_waste_alarm():
    frame = _office()
    since = (pd.Timestamp(OFFICE_START) + pd.Timedelta(weeks=4)).tz_localize("Europe/Berlin").tz_convert("UTC")  # its midnight
    anomalies, hours = detect_anomalies(frame[frame["ts"] >= since], frame[frame["ts"] < since], AnomalySettings())
    assert len(hours) == 14 * 24 and (hours["expected_source"] == "time_of_week_temperature").all()
    # nothing that would send anyone to look for waste or a broken meter
    assert not anomalies["kind"].isin(OVER).any(), anomalies
    # what is left is the baseline's residual tail: single hours a little under the expectation
    assert len(anomalies) <= 2 and (anomalies["hours"] == 1).all() and (anomalies["excess_ratio"] > -0.25).all()


def test_weekend_spike_stuck_meter_and_forecast_band():
    frame = _office()
    since = pd.Timestamp(OFFICE_START, tz="UTC") + pd.Timedelta(weeks=4)
    # a Saturday afternoon (local 11:00-15:00) with the building running as on a weekday
    saturday = since + pd.Timedelta(days=5, hours=10)
    spike = (frame["ts"] >= saturday) & (frame["ts"] < saturday + pd.Timedelta(hours=4))
    frame.loc[spike, "energy_kwh"] += 60.0
    # a meter stuck for 8 hours on Tuesday of the next week
    stuck_at = since + pd.Timedelta(days=8, hours=9)
    stuck = (frame["ts"] >= stuck_at) & (frame["ts"] < stuck_at + pd.Timedelta(hours=8))
    frame.loc[stuck, "energy_kwh"] = float(frame.loc[stuck, "energy_kwh"].iloc[0])

    anomalies, hours = detect_anomalies(frame[frame["ts"] >= since], frame[frame["ts"] < since], AnomalySettings())
    weekend = anomalies[anomalies["kind"] == "weekend_spike"]
    assert len(weekend) == 1 and weekend["start"].iloc[0] == saturday and weekend["hours"].iloc[0] == 4
    assert weekend["excess_kwh"].iloc[0] == pytest.approx(240.0, rel=0.15)
    stuck_rows = anomalies[anomalies["kind"] == "stuck_meter"]
    assert len(stuck_rows) == 1 and stuck_rows["start"].iloc[0] == stuck_at and stuck_rows["hours"].iloc[0] == 8
    assert stuck_rows["severity"].iloc[0] == "medium"
    assert (hours["expected_source"] == "time_of_week_temperature").all()

    # with a forecast band, an hour above p90 by more than the margin is anomalous and p50 is the expectation
    window = frame[frame["ts"] >= since].copy()
    window["yhat_p50"] = window["energy_kwh"]
    window["yhat_p10"], window["yhat_p90"] = window["yhat_p50"] - 5, window["yhat_p50"] + 5
    hot = window.index[(window["hour_of_day"] == 12) & ~window["is_weekend"]][3]
    window.loc[hot, "energy_kwh"] += 30.0
    found, scored = detect_anomalies(window, frame[frame["ts"] < since], AnomalySettings(stuck_hours=10_000))
    assert len(found) == 1 and found["excess_kwh"].iloc[0] == pytest.approx(30.0) and found["score"].iloc[0] == pytest.approx(2.5)
    assert found["expected_source"].iloc[0] == "forecast_p50" and found["kind"].iloc[0] == "high_consumption"


def test_stuck_runs_need_consecutive_hours_of_one_building():
    frame = pd.DataFrame({
        "building_id": ["a"] * 4 + ["b"] * 3,
        "ts": pd.date_range("2025-01-01", periods=4, freq="h", tz="UTC").append(pd.date_range("2025-01-01", periods=3, freq="h", tz="UTC")),
        "energy_kwh": [5.0, 5.0, 5.0, 6.0, 5.0, 5.0, 0.0],
    })
    assert stuck_runs(frame, 3).tolist() == [True, True, True, False, False, False, False]


def test_missing_column_is_named():
    with pytest.raises(AnomalyInputError, match="hour_of_day"):
        detect_anomalies(pd.DataFrame({"building_id": [], "ts": [], "energy_kwh": [], "day_of_week": []}), pd.DataFrame(), AnomalySettings())


class _Meta:
    def __init__(self, building_id, tariff, currency, factor, tz="Europe/Berlin"):
        self.building_id, self.tariff_per_kwh, self.currency = building_id, tariff, currency
        self.grid_emission_factor_kg_per_kwh, self.timezone = factor, tz


def test_savings_and_carbon_arithmetic():
    anomalies = pd.DataFrame({
        "building_id": ["b1", "b1", "b2", "b2"],
        "kind": ["after_hours_load", "low_consumption", "weekend_spike", "stuck_meter"],
        "start": pd.to_datetime(["2025-02-03 01:00", "2025-02-04 10:00", "2025-02-08 09:00", "2025-02-09 00:00"], utc=True),
        "end": pd.to_datetime(["2025-02-03 04:00", "2025-02-04 12:00", "2025-02-08 13:00", "2025-02-09 08:00"], utc=True),
        "excess_kwh": [120.0, -50.0, 80.0, 30.0],
        "excess_ratio": [0.4, -0.25, 0.6, 0.1],
    })
    meta = {"b1": _Meta("b1", 0.25, "EUR", 0.38), "b2": _Meta("b2", 0.30, "GBP", 0.2, "Europe/London")}
    priced = price_anomalies(anomalies, meta)
    assert priced["cost"].tolist() == [30.0, 0.0, 24.0, 0.0]
    assert priced["co2_kg"].tolist() == [pytest.approx(45.6), 0.0, pytest.approx(16.0), 0.0]
    assert priced["currency"].tolist() == ["EUR", "EUR", "GBP", "GBP"]
    assert priced["recommendation"].iloc[0] == (
        "baseload 02:00–05:00 on Mon 03 Feb is 40% above the expected night level: check HVAC and lighting schedules"
    )
    totals = building_savings(priced).set_index("building_id")
    assert totals.loc["b1", "excess_kwh"] == 120.0 and totals.loc["b1", "cost"] == 30.0
    assert totals.loc["b2", "co2_kg"] == pytest.approx(16.0) and totals.loc["b2", "anomalies"] == 2
    assert totals.loc["b2", "top_recommendation"].startswith("weekend/holiday load 09:00–13:00 on Sat 08 Feb is 60%")
    with pytest.raises(KeyError, match="b9"):
        price_anomalies(anomalies.assign(building_id="b9"), meta)
