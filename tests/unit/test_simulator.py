"""The building simulator: determinism, physics, DST, faults visible in the readings, drift effects."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from lakehouse.simulator import (
    FAULT_KINDS,
    GROUND_TRUTH_SCHEMA,
    FaultConfig,
    heat_wave,
    occupancy_change,
    parse_drift,
    retrofit,
    simulate_portfolio,
)

# Five buildings = one per catalogue site (Berlin office, London retail, New York school, Paris hospital,
# Madrid residential); the span covers the US (10 Mar) and EU (31 Mar) spring-forward switches.
START, END = "2024-03-01", "2024-04-12"
SEED = 7
DRIFT = [
    retrofit("b01", "2024-03-22", 0.25),
    heat_wave("london", "2024-03-25", "2024-03-29", 6.0),
    occupancy_change("b03", "2024-03-22", 0.5),
]


@pytest.fixture(scope="module")
def clean():
    return simulate_portfolio(5, START, END, seed=SEED, forecast_issue_hour_utc=6)


@pytest.fixture(scope="module")
def faulted():
    return simulate_portfolio(5, START, END, seed=SEED, faults=FaultConfig(), forecast_issue_hour_utc=6)


@pytest.fixture(scope="module")
def drifted():
    return simulate_portfolio(5, START, END, seed=SEED, drift=DRIFT, forecast_issue_hour_utc=6)


@pytest.fixture(scope="module")
def year():
    return simulate_portfolio(1, "2024-01-01", "2025-01-01", seed=SEED, forecast_issue_hour_utc=6)


def frame(table: pa.Table) -> pd.DataFrame:
    return table.to_pandas()


_BY_SENSOR: dict[int, dict[str, pd.DataFrame]] = {}


def sensor_frame(p, sensor_id: str) -> pd.DataFrame:
    if id(p) not in _BY_SENSOR:
        _BY_SENSOR[id(p)] = {sid: g.reset_index(drop=True) for sid, g in frame(p.readings).groupby("sensor_id")}
    return _BY_SENSOR[id(p)][sensor_id].copy()


def ts(value: str) -> pd.Timestamp:
    return pd.Timestamp(value, tz="UTC")


# -- determinism ------------------------------------------------------------------------------------


def test_same_seed_same_tables():
    a = simulate_portfolio(2, "2024-03-28", "2024-04-04", seed=3, faults=FaultConfig(), forecast_issue_hour_utc=6)
    b = simulate_portfolio(2, "2024-03-28", "2024-04-04", seed=3, faults=FaultConfig(), forecast_issue_hour_utc=6)
    c = simulate_portfolio(2, "2024-03-28", "2024-04-04", seed=4, faults=FaultConfig(), forecast_issue_hour_utc=6)
    for name in ("readings", "weather", "ground_truth", "truth_hourly"):
        assert getattr(a, name).equals(getattr(b, name)), name
    assert a.registry == b.registry
    assert not a.readings.equals(c.readings)


def test_a_building_does_not_depend_on_portfolio_size(clean):
    small = simulate_portfolio(2, START, END, seed=SEED, forecast_issue_hour_utc=6)
    mine = clean.readings.filter(pa.compute.equal(clean.readings.column("building_id"), "b01"))
    theirs = small.readings.filter(pa.compute.equal(small.readings.column("building_id"), "b01"))
    assert mine.equals(theirs)


def test_a_chunk_of_buildings_is_simulated_as_in_the_whole_portfolio(clean):
    chunk = simulate_portfolio(5, START, END, seed=SEED, forecast_issue_hour_utc=6, building_ids=["b02", "b05"])
    assert chunk.registry.building_ids() == ["b02", "b05"]
    wanted = pa.compute.is_in(clean.readings.column("building_id"), value_set=pa.array(["b02", "b05"]))
    assert set(chunk.readings.column("building_id").to_pylist()) == {"b02", "b05"}
    assert chunk.readings.sort_by([("sensor_id", "ascending"), ("ts", "ascending")]).equals(
        clean.readings.filter(wanted).sort_by([("sensor_id", "ascending"), ("ts", "ascending")]))
    with pytest.raises(KeyError, match="b09"):
        simulate_portfolio(5, START, END, seed=SEED, forecast_issue_hour_utc=6, building_ids=["b09"])


def test_volume_and_shape(clean):
    intervals = 42 * 96
    assert clean.readings.num_rows == 5 * 6 * intervals
    assert clean.readings.schema.field("ts").type == pa.timestamp("us", tz="UTC")
    assert set(clean.readings.column("metric").to_pylist()) == {
        "energy", "energy_cumulative", "indoor_temperature", "indoor_humidity", "occupancy", "co2"
    }
    assert {b.timezone for b in clean.registry} == {"Europe/Berlin", "Europe/London", "America/New_York", "Europe/Paris", "Europe/Madrid"}
    assert {b.use_type for b in clean.registry} == {"office", "retail", "school", "hospital", "residential"}
    assert clean.ground_truth.num_rows == 0 and clean.ground_truth.schema == GROUND_TRUTH_SCHEMA


# -- physics ----------------------------------------------------------------------------------------


def _local(p, building_id: str) -> pd.DataFrame:
    df = frame(p.truth_hourly)
    df = df[df.building_id == building_id].copy()
    df["local"] = df.ts.dt.tz_convert(p.registry.get(building_id).timezone)
    return df


def test_heated_office_uses_more_in_cold_weeks(year):
    df = _local(year, "b01")  # Berlin office, heat pump heating
    weekly = df.set_index("ts").resample("W").agg({"energy_kwh": "sum", "outdoor_temperature_c": "mean"})
    cold = weekly.nsmallest(6, "outdoor_temperature_c").energy_kwh.mean()
    mild = weekly[(weekly.outdoor_temperature_c > 12) & (weekly.outdoor_temperature_c < 17)].energy_kwh.mean()
    assert cold > 1.3 * mild
    assert np.corrcoef(weekly.outdoor_temperature_c[weekly.outdoor_temperature_c < 12], weekly.energy_kwh[weekly.outdoor_temperature_c < 12])[0, 1] < -0.7


def test_office_lower_at_night_weekends_and_holidays(year):
    df = _local(year, "b01")
    hour, weekday = df.local.dt.hour, df.local.dt.weekday
    weekday_day = df[(weekday < 5) & hour.between(10, 15)].energy_kwh.mean()
    weekday_night = df[(weekday < 5) & ((hour < 5) | (hour > 22))].energy_kwh.mean()
    weekend_day = df[(weekday >= 5) & hour.between(10, 15)].energy_kwh.mean()
    assert weekday_night < 0.6 * weekday_day
    assert weekend_day < 0.6 * weekday_day
    daily = df.groupby(df.local.dt.date).energy_kwh.sum()
    # German public holidays on weekdays vs. the same weekday one week earlier.
    for holiday in ["2024-05-01", "2024-10-03", "2024-12-25"]:
        day = pd.Timestamp(holiday).date()
        week_before = (pd.Timestamp(holiday) - pd.Timedelta(days=7)).date()
        assert daily[day] < 0.75 * daily[week_before], holiday


def test_weather_is_plausible(year):
    w = frame(year.weather)
    obs = w[w.kind == "observation"].set_index("ts")
    assert len(obs) == 366 * 24
    monthly = obs.temperature_c.resample("MS").mean()
    assert monthly.iloc[6] - monthly.iloc[0] > 10  # July much warmer than January in Berlin
    assert obs.solar_radiation_wm2.min() == 0 and obs.solar_radiation_wm2.max() > 600
    night = obs[(obs.index.hour == 0)]
    assert (night.solar_radiation_wm2 == 0).all()
    assert obs.relative_humidity_pct.between(5, 100).all() and (obs.dew_point_c <= obs.temperature_c + 1e-9).all()
    assert np.corrcoef(obs.temperature_c[:-1], obs.temperature_c[1:])[0, 1] > 0.95  # autocorrelated


def test_day_ahead_forecasts_issued_the_day_before_with_growing_error(year):
    w = frame(year.weather)
    fc = w[w.kind == "forecast"]
    assert set(fc.issued_at.dt.hour) == {6} and (fc.issued_at.dt.minute == 0).all()
    assert (fc.ts > fc.issued_at).all()
    lead = (fc.ts - fc.issued_at) / pd.Timedelta(hours=1)
    assert lead.min() == 1 and lead.max() == 48
    # Every hour of the run has a forecast issued on the previous UTC day.
    obs = w[w.kind == "observation"].set_index("ts").temperature_c
    prev_day = fc[fc.issued_at.dt.normalize() == fc.ts.dt.normalize() - pd.Timedelta(days=1)]
    assert set(obs.index) <= set(prev_day.ts)
    err = (fc.set_index("ts").temperature_c - obs.reindex(fc.ts).to_numpy()).abs().to_numpy()
    short, long_ = np.nanmean(err[(lead <= 6).to_numpy()]), np.nanmean(err[(lead >= 40).to_numpy()])
    assert 0.1 < short < long_ and long_ < 5


# -- DST and time -----------------------------------------------------------------------------------


def test_clean_readings_are_utc_without_gaps_or_duplicates_across_dst(clean):
    df = frame(clean.readings)
    assert str(df.ts.dt.tz) == "UTC"
    for sensor_id, g in df.groupby("sensor_id"):
        steps = g.ts.sort_values().diff().dropna().unique()
        assert list(steps) == [pd.Timedelta(minutes=15)], sensor_id
        assert g.ts.min() == ts(START) and g.ts.max() == ts(END) - pd.Timedelta(minutes=15)


def test_schedules_follow_local_time_across_dst(clean):
    """After the EU spring-forward, the Berlin office fills up one UTC hour earlier."""
    occ = sensor_frame(clean, "b01-occ")
    occ = occ[occ.ts.dt.weekday < 5]
    first_busy = occ[occ.value > occ.value.max() * 0.5].groupby(occ.ts.dt.date).ts.min().dt.hour
    before = first_busy[[d for d in first_busy.index if str(d) < "2024-03-30"]]
    after = first_busy[[d for d in first_busy.index if str(d) > "2024-04-01"]]
    assert before.median() - after.median() == 1


# -- faults -----------------------------------------------------------------------------------------


def truth(p, kind: str) -> list[dict]:
    rows = p.faults(kind).to_pylist()
    for r in rows:
        r["detail"] = json.loads(r["detail"])
    return rows


def test_every_fault_kind_is_injected_and_recorded(faulted):
    kinds = set(faulted.ground_truth.column("kind").to_pylist())
    assert kinds == set(FAULT_KINDS)
    gt = frame(faulted.ground_truth)
    assert (gt.start < gt.end).all()
    sensors = {s.sensor_id for b in faulted.registry for s in b.sensors}
    assert set(gt.sensor_id) <= sensors


def test_faults_do_not_disturb_unaffected_sensors(clean, faulted):
    touched = set(faulted.ground_truth.column("sensor_id").to_pylist())
    untouched = sorted({s.sensor_id for b in clean.registry for s in b.sensors} - touched)
    assert untouched
    for sid in untouched[:3]:
        pd.testing.assert_frame_equal(sensor_frame(clean, sid).drop(columns="delivery"), sensor_frame(faulted, sid).drop(columns="delivery"))


def _window(df: pd.DataFrame, start, end) -> pd.DataFrame:
    return df[(df.ts >= start) & (df.ts < end)]


def test_value_faults_visible(clean, faulted):
    for r in truth(faulted, "gap"):
        assert _window(sensor_frame(faulted, r["sensor_id"]), r["start"], r["end"]).empty
        assert len(_window(sensor_frame(clean, r["sensor_id"]), r["start"], r["end"])) == r["detail"]["missing_readings"]
    for r in truth(faulted, "spike"):
        got = _window(sensor_frame(faulted, r["sensor_id"]), r["start"], r["end"]).value.tolist()
        assert r["detail"]["spiked_value"] in got and r["detail"]["spiked_value"] != r["detail"]["clean_value"]
    for r in truth(faulted, "stuck"):
        got = _window(sensor_frame(faulted, r["sensor_id"]), r["start"], r["end"])
        assert (got.value == r["detail"]["stuck_value"]).all() and len(got) == r["detail"]["readings"]
        assert _window(sensor_frame(clean, r["sensor_id"]), r["start"], r["end"]).value.nunique() > 1
    for kind, f in (("unit_mixup", lambda v: v * 1000), ("fahrenheit", lambda v: v * 9 / 5 + 32)):
        (r,) = truth(faulted, kind)
        got = _window(sensor_frame(faulted, r["sensor_id"]), r["start"], r["end"]).value.to_numpy()
        want = f(_window(sensor_frame(clean, r["sensor_id"]), r["start"], r["end"]).value.to_numpy())
        assert len(got) > 0 and np.allclose(got, want, atol=0.01)
    assert truth(faulted, "unit_mixup")[0]["detail"]["labelled_unit"] == "kWh"


def test_register_faults_visible(faulted):
    for kind in ("rollover", "reset"):
        (r,) = truth(faulted, kind)
        reg = sensor_frame(faulted, r["sensor_id"]).sort_values("ts")
        before = reg[reg.ts < r["start"]].value.iloc[-1]
        at = reg[reg.ts == r["start"]].value.iloc[0]
        assert before == r["detail"]["value_before"] and at == r["detail"]["value_after"]
        assert at < before and at < 1000
    (roll,) = truth(faulted, "rollover")
    assert roll["detail"]["value_before"] > 0.99 * roll["detail"]["capacity_kwh"]


def test_delivery_faults_visible(faulted):
    df = frame(faulted.readings)
    for r in truth(faulted, "duplicate"):
        same_key = df[(df.sensor_id == r["sensor_id"]) & (df.ts == r["start"])]
        assert len(same_key) == 2
        assert same_key.value.tolist() == [r["detail"]["original_value"], r["detail"]["resent_value"]]
    assert any(not r["detail"]["same_value"] for r in truth(faulted, "duplicate"))
    for r in truth(faulted, "late"):
        got = _window(sensor_frame(faulted, r["sensor_id"]), r["start"], r["end"])
        assert (got.delivery == 1).all() and len(got) == r["detail"]["readings"]
    assert (df.delivery == 1).sum() == sum(r["detail"]["readings"] for r in truth(faulted, "late"))
    deliveries = faulted.deliveries()
    assert [d for d, _ in deliveries] == [0, 1] and "delivery" not in deliveries[0][1].column_names
    for r in truth(faulted, "future_ts"):
        stamped = pd.Timestamp(r["detail"]["stamped_ts"])
        assert stamped >= faulted.end + pd.Timedelta(days=2)
        assert (sensor_frame(faulted, r["sensor_id"]).ts == stamped).sum() == 1
        assert _window(sensor_frame(faulted, r["sensor_id"]), r["start"], r["end"]).empty


def test_dst_artefact_visible(faulted):
    rows = truth(faulted, "dst")
    # Berlin, London, Paris, Madrid switch on 31 March; New York on 10 March.
    assert {r["building_id"] for r in rows} == {"b01", "b02", "b03", "b04", "b05"}
    for r in rows:
        d = r["detail"]
        assert d["direction"] == "spring_forward" and d["offset_after_h"] == d["offset_before_h"] + 1
        s = sensor_frame(faulted, r["sensor_id"])
        lead_in = pd.Timedelta(hours=d["offset_before_h"]) if d["offset_before_h"] > 0 else pd.Timedelta(0)
        if lead_in > pd.Timedelta(0):  # readings moved forward leave a hole at the window start
            assert _window(s, r["start"], r["start"] + lead_in).empty
        # ...and collide with correct readings just after the window (local time read as UTC).
        after = pd.Timedelta(hours=abs(d["offset_after_h"]))
        collided = _window(s, r["end"], r["end"] + after)
        assert collided.duplicated("ts").any() or d["offset_after_h"] < 0


def test_after_hours_waste_recorded_exactly(clean, faulted):
    (r,) = truth(faulted, "after_hours_waste")
    got = _window(sensor_frame(faulted, r["sensor_id"]), r["start"], r["end"])
    base = _window(sensor_frame(clean, r["sensor_id"]), r["start"], r["end"])
    extra = got.value.to_numpy() - base.value.to_numpy()
    assert extra.sum() == pytest.approx(r["detail"]["excess_kwh"], abs=0.01)
    local = got.ts.dt.tz_convert(faulted.registry.get(r["building_id"]).timezone).dt.hour
    assert (extra[((local >= 6) & (local < 22)).to_numpy()] == 0).all()  # only at night
    assert (extra[((local >= 23) | (local < 5)).to_numpy()] > 0).all()
    hourly = frame(faulted.truth_hourly)
    in_span = hourly[(hourly.building_id == r["building_id"]) & (hourly.ts >= r["start"]) & (hourly.ts < r["end"])]
    assert (in_span.energy_kwh - in_span.baseline_energy_kwh).sum() == pytest.approx(r["detail"]["excess_kwh"], abs=0.05)


# -- drift ------------------------------------------------------------------------------------------


def test_drift_recorded(drifted):
    gt = frame(drifted.ground_truth)
    assert sorted(gt.kind.unique()) == ["heat_wave", "occupancy_change", "retrofit"]
    (rf,) = gt[gt.kind == "retrofit"].to_dict("records")
    assert rf["building_id"] == "b01" and json.loads(rf["detail"]) == {"hvac_reduction": 0.25}
    assert rf["start"] == ts("2024-03-22")
    hw = gt[gt.kind == "heat_wave"]
    assert set(hw.building_id) == {b.building_id for b in drifted.registry.buildings_at("london")}


def test_retrofit_cuts_hvac_share(clean, drifted):
    def hvac_share(p, after: bool) -> float:
        df = frame(p.truth_hourly)
        df = df[(df.building_id == "b01") & ((df.ts >= ts("2024-03-22")) == after)]
        return df.hvac_kwh.sum() / df.energy_kwh.sum()

    assert hvac_share(drifted, after=False) == pytest.approx(hvac_share(clean, after=False))
    assert hvac_share(drifted, after=True) < hvac_share(clean, after=True) - 0.03
    after_clean = frame(clean.truth_hourly).query("building_id == 'b01' and ts >= @ts('2024-03-22')").hvac_kwh.sum()
    after_drift = frame(drifted.truth_hourly).query("building_id == 'b01' and ts >= @ts('2024-03-22')").hvac_kwh.sum()
    assert after_drift == pytest.approx(0.75 * after_clean, rel=1e-6)
    e_clean = sensor_frame(clean, "b01-elec").value.to_numpy()
    e_drift = sensor_frame(drifted, "b01-elec").value.to_numpy()
    cut = (sensor_frame(clean, "b01-elec").ts >= ts("2024-03-22")).to_numpy()
    assert np.array_equal(e_clean[~cut], e_drift[~cut]) and e_drift[cut].sum() < 0.97 * e_clean[cut].sum()


def test_heat_wave_and_occupancy_change(clean, drifted):
    def obs(p):
        w = frame(p.weather)
        return w[(w.kind == "observation") & (w.site_id == "london")].set_index("ts").temperature_c

    diff = obs(drifted) - obs(clean)
    inside = (diff.index >= ts("2024-03-25")) & (diff.index < ts("2024-03-29"))
    assert np.allclose(diff[inside], 6.0, atol=0.011) and np.allclose(diff[~inside], 0.0, atol=1e-9)
    occ_clean = sensor_frame(clean, "b03-occ")
    occ_drift = sensor_frame(drifted, "b03-occ")
    after = (occ_clean.ts >= ts("2024-03-22")).to_numpy()
    ratio = occ_drift.value[after].sum() / occ_clean.value[after].sum()
    assert ratio == pytest.approx(0.5, abs=0.03)


def test_drift_specs_parse_and_unknown_ids_are_named():
    assert parse_drift("retrofit:b01:2024-03-01:0.3").hvac_reduction == 0.3
    assert parse_drift("heat_wave:paris:2024-07-01:2024-07-05").delta_c == 6.0
    assert parse_drift("occupancy_change:b02:2024-04-01:0.6").start == datetime(2024, 4, 1, tzinfo=timezone.utc)
    with pytest.raises(ValueError, match="retrofit:BUILDING"):
        parse_drift("retrofit")
    with pytest.raises(KeyError, match="'b42'"):
        simulate_portfolio(2, "2024-01-01", "2024-01-02", drift=[retrofit("b42", "2024-01-01")], forecast_issue_hour_utc=6)
