"""The vectorised reading checks and the policy, on small hand-made frames (no GE)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from data_quality.checks import flag_readings
from data_quality.policy import BatchRejected
from lakehouse.buildings import Building, BuildingRegistry, Sensor
from lakehouse.curation import readings_to_hourly
from wattflow.settings import Settings

SENSORS = [
    Sensor(sensor_id="elec", metric="energy"),
    Sensor(sensor_id="reg", metric="energy_cumulative"),
    Sensor(sensor_id="temp", metric="indoor_temperature"),
]


def registry(tz: str = "Europe/Berlin", country: str = "DE", latitude: float = 52.5) -> BuildingRegistry:
    return BuildingRegistry(
        buildings=[
            Building(building_id="b1", name="B1", site_id="s1", timezone=tz, country=country, use_type="office",
                     floor_area_m2=1000, latitude=latitude, longitude=13.4, grid_emission_factor_kg_per_kwh=0.4,
                     tariff_per_kwh=0.3, currency="EUR", sensors=SENSORS)
        ]
    )


def series(sensor_id: str, metric: str, values, start="2024-01-10", unit=None, ingested=None) -> pd.DataFrame:
    ts = pd.date_range(start, periods=len(values), freq="15min", tz="UTC")
    return pd.DataFrame(
        {"building_id": "b1", "sensor_id": sensor_id, "metric": metric, "ts": ts, "value": np.asarray(values, float),
         "unit": unit, "ingested_at": ingested if ingested is not None else ts + pd.Timedelta(minutes=1)}
    )


def load_curve(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    hours = np.arange(n) / 4
    return 10 + 8 * np.clip(np.sin((hours % 24 - 6) / 12 * np.pi), 0, None) + rng.normal(0, 0.3, n)


def flags(frame: pd.DataFrame, **quality) -> pd.DataFrame:
    settings = Settings()
    q = settings.quality.model_copy(update=quality)
    return flag_readings(frame, registry(), q).frame


def test_clean_curve_raises_no_flag():
    f = flags(series("elec", "energy", load_curve(4 * 24 * 5)))
    assert f[["spike", "stuck_sensor", "unit_mixup_wh_kwh", "physical_range", "duplicate_reading"]].to_numpy().sum() == 0


def test_spike_stuck_and_wh_for_kwh_are_flagged_where_they_are():
    v = load_curve(4 * 24 * 5)
    v[100] *= 6  # spike
    v[200:220] = v[200]  # stuck for 5 h
    v[300:340] *= 1000  # Wh labelled kWh for 10 h
    f = flags(series("elec", "energy", v))
    assert np.flatnonzero(f["spike"]).tolist() == [100]
    assert np.flatnonzero(f["stuck_sensor"]).tolist() == list(range(200, 220))
    assert np.flatnonzero(f["unit_mixup_wh_kwh"]).tolist() == list(range(300, 340))


def test_fahrenheit_labelled_celsius_and_unit_conversion():
    t = 21 + np.sin(np.arange(400) / 30)
    t[50:80] = t[50:80] * 9 / 5 + 32
    frame = pd.concat([series("temp", "indoor_temperature", t), series("elec", "energy", load_curve(400) * 1000, unit="Wh")])
    f = flags(frame)
    temp = f[f["sensor_id"] == "temp"]
    assert np.flatnonzero(temp["unit_mixup_fahrenheit"]).tolist() == list(range(50, 80))
    elec = f[f["sensor_id"] == "elec"]
    # Wh converts to kWh through the label: no mix-up, values back in kWh.
    assert not elec["unit_mixup_wh_kwh"].any()
    assert elec["value_c"].max() < 30


def test_register_rollover_and_reset_are_told_apart():
    inc = np.full(200, 2.5)
    reg = np.mod(999_800 + np.cumsum(inc), 1_000_000)  # the six-digit register wraps at reading 79
    reg[150:] = reg[150:] - reg[149]  # reset to zero at reading 150
    f = flags(series("reg", "energy_cumulative", reg))
    assert np.flatnonzero(f["cumulative_rollover"]).tolist() == [79]
    assert np.flatnonzero(f["cumulative_reset"]).tolist() == [150]
    assert not f["spike"].any()


def test_duplicates_keep_the_last_delivered_and_future_and_late_are_flagged():
    s = series("elec", "energy", load_curve(100))
    resent = s.iloc[[10]].assign(value=99.0, ingested_at=s["ingested_at"].iloc[10] + pd.Timedelta(minutes=5))
    future = s.iloc[[20]].assign(ts=s["ts"].iloc[20] + pd.Timedelta(days=3))
    late = s.iloc[[30]].assign(ingested_at=s["ingested_at"].iloc[30] + pd.Timedelta(hours=5))
    frame = pd.concat([s.drop(index=[20, 30]), resent, future, late])
    f = flags(frame)
    dup = f[f["duplicate_reading"]]
    assert len(dup) == 1 and dup["value"].iloc[0] != 99.0  # the first delivery is the one set aside
    assert f["future_timestamp"].sum() == 1
    assert f.loc[f["late_arrival"], "ts"].tolist() == [s["ts"].iloc[30]]


def test_dst_artifact_local_time_read_as_utc():
    # Berlin springs forward 2024-03-31 01:00 UTC; readings around it stamped in local time (+1 h / +2 h).
    s = series("elec", "energy", load_curve(4 * 48), start="2024-03-30T12:00")
    switch = pd.Timestamp("2024-03-31T01:00", tz="UTC")
    window = (s["ts"] >= switch - pd.Timedelta(hours=3)) & (s["ts"] < switch + pd.Timedelta(hours=3))
    shifted = s.copy()
    shifted.loc[window, "ts"] = s.loc[window, "ts"] + pd.to_timedelta(np.where(s.loc[window, "ts"] < switch, 1, 2), unit="h")
    assert flags(shifted)["dst_artifact"].sum() > 0
    assert flags(s)["dst_artifact"].sum() == 0


def test_fail_policy_raises_batch_rejected_naming_expectation_observed_and_threshold():
    v = load_curve(400)
    v[100] *= 8
    settings = Settings()
    settings.quality.policies["spike"] = "fail"
    with pytest.raises(BatchRejected) as err:
        readings_to_hourly(series("elec", "energy", v), registry(), settings, validate=False, batch="b-1")
    assert err.value.expectation == "spike" and err.value.observed_value == "1" and err.value.threshold == "0 readings"
    assert "spike" in str(err.value) and "observed 1" in str(err.value) and "threshold 0 readings" in str(err.value)


def test_reject_policy_quarantines_with_check_name_and_keeps_good_rows():
    v = load_curve(400)
    v[100] *= 8
    hourly, rejects, results = readings_to_hourly(series("elec", "energy", v), registry(), Settings(), validate=False)
    assert rejects["check_name"].tolist() == ["spike"]
    assert "spike" in rejects["reason"].iloc[0] and rejects["record_id"].str.len().iloc[0] == 32
    hour = hourly[hourly["ts"] == pd.Timestamp("2024-01-11T01:00", tz="UTC")].iloc[0]
    assert hour["outlier"] and hour["imputed"] and hour["n_readings"] == 3 and hour["n_rejected"] == 1
    assert hourly["energy_kwh"].notna().all() and len(hourly) == 100
    warn = Settings()
    warn.quality.policies["spike"] = "warn"
    _, rejects_warn, results_warn = readings_to_hourly(series("elec", "energy", v), registry(), warn, validate=False)
    assert len(rejects_warn) == 0
    assert [r.success for r in results_warn if r.expectation == "spike"] == [False]


def test_a_flagged_indoor_sensor_is_named_but_leaves_the_hours_energy_usable():
    # A thermometer stuck for 5 h beside a healthy meter: the hours carry the flag, the energy stays a target.
    t = 21 + np.sin(np.arange(400) / 30)
    t[200:220] = t[200]
    frame = pd.concat([series("temp", "indoor_temperature", t), series("elec", "energy", load_curve(400))])
    settings = Settings()
    settings.quality.policies["stuck_sensor"] = "warn"
    hourly, rejects, _ = readings_to_hourly(frame, registry(), settings, validate=False)
    stuck_hours = hourly[hourly["quality_flags"].str.contains("stuck_sensor")]
    assert len(stuck_hours) == 5 and rejects.empty
    assert not stuck_hours["outlier"].any() and not hourly["outlier"].any()
    # The same run of identical values on the meter itself does make those hours outliers.
    v = load_curve(400)
    v[200:220] = v[200]
    hourly, _, _ = readings_to_hourly(series("elec", "energy", v), registry(), settings, validate=False)
    assert hourly["outlier"].sum() == 5


def test_stuck_and_spike_follow_the_sensors_resolution_and_interval():
    """A 10 Wh meter at night repeats and steps by one unit; an hourly 300 kWh meter almost never repeats."""
    rng = np.random.default_rng(3)
    # Quantised: 50 or 60 Wh per 15 minutes (as kWh), runs of equal values by resolution alone, a step of
    # one unit beside a flat stretch is no spike.
    night = 0.05 + 0.01 * (rng.random(4 * 24 * 6) < 0.3)
    night[100:106] = 0.05
    night[106] = 0.06
    f = flags(series("elec", "energy", night))
    assert not f["stuck_sensor"].any() and not f["spike"].any()
    # Hourly, hundreds of kWh with 0.1 kWh resolution: five equal hours are stuck, two are not.
    hourly = np.round(300 + 80 * np.sin(np.arange(24 * 30) / 24 * 2 * np.pi) + rng.normal(0, 8, 24 * 30), 1)
    hourly[200:205] = hourly[200]
    hourly[400:402] = hourly[400]
    frame = series("elec", "energy", hourly)
    frame["ts"] = pd.date_range("2024-01-10", periods=len(hourly), freq="h", tz="UTC")
    frame["ingested_at"] = frame["ts"] + pd.Timedelta(minutes=1)
    f = flags(frame)
    assert np.flatnonzero(f["stuck_sensor"]).tolist() == list(range(200, 205))
