"""Curation on simulated portfolios and the UCI appliances data: fault recall, clean rejects, leakage,
idempotent re-runs with GE checkpoints, Data Docs and the monitoring table."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from data_quality.checks import CHECK_NAMES
from lakehouse.curation import readings_to_hourly
from lakehouse.gold import hourly_to_features
from ml.spec import FUTURE_FEATURES
from wattflow.settings import Settings

START, END = "2024-03-01", "2024-04-15"  # spans the European and US spring DST switches
DELIVERED = pd.Timestamp(END, tz="UTC")
UCI_ZIP = Path(__file__).resolve().parents[2] / "data" / "uci-appliances" / "energydata_complete.zip"


def raw_batch(portfolio) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The portfolio as delivered: on-time readings at the end of the period, late ones an hour after."""
    readings = portfolio.readings.to_pandas()
    readings["ingested_at"] = pd.to_datetime(
        np.where(readings["delivery"] == 0, DELIVERED, DELIVERED + pd.Timedelta(hours=1)), utc=True
    )
    weather = portfolio.weather.to_pandas().assign(ingested_at=DELIVERED)
    return readings.drop(columns="delivery"), weather


@pytest.fixture(scope="module")
def faulty():
    from lakehouse.simulator import FaultConfig, simulate_portfolio

    return simulate_portfolio(8, START, END, faults=FaultConfig())


@pytest.fixture(scope="module")
def clean():
    from lakehouse.simulator import FaultConfig, simulate_portfolio

    return simulate_portfolio(8, START, END, faults=FaultConfig.none())


def _sensor_day_missing(flagged_summary: pd.DataFrame, event) -> bool:
    days = pd.date_range(event.start.floor("D"), (event.end - pd.Timedelta(microseconds=1)).floor("D"), freq="D").date
    rows = flagged_summary[(flagged_summary["building_id"] == event.building_id) & (flagged_summary["sensor_id"] == event.sensor_id)
                           & flagged_summary["date"].isin(days)]
    return bool((rows["n_missing"] > 0).any())


def confusion(portfolio, settings) -> pd.DataFrame:
    """Per fault kind: injected, caught, caught by which checks, and readings rejected inside the spans."""
    from data_quality.checks import flag_readings
    from lakehouse.curation import sensor_day_summary

    readings, _ = raw_batch(portfolio)
    flagged = flag_readings(readings, portfolio.registry, settings.quality).frame
    ts = flagged["ts"]
    us = ts.astype("datetime64[us, UTC]").to_numpy(dtype="datetime64[us]").astype(np.int64)
    summary = sensor_day_summary(flagged, np.ones(len(flagged), bool), int(us.min()), int(us.max()) + 1)
    rejecting = [c for c in CHECK_NAMES if settings.quality.policies.get(c, settings.quality.default_policy) != "warn"]
    rows = []
    truth = portfolio.ground_truth.to_pandas()
    slack = pd.Timedelta(minutes=portfolio.interval_minutes)
    for kind, events in truth.groupby("kind"):
        if kind in ("retrofit", "heat_wave", "occupancy_change"):
            continue
        caught, by, rejected_in_span = 0, set(), 0
        for e in events.itertuples():
            sel = (flagged["building_id"] == e.building_id)
            if e.sensor_id is not None:
                sel &= flagged["sensor_id"] == e.sensor_id
            window = (ts >= e.start - slack) & (ts < e.end + slack)
            if kind == "future_ts":
                window |= ts == pd.Timestamp(json.loads(e.detail)["stamped_ts"])
            hit = flagged[sel & window]
            fired = [c for c in CHECK_NAMES if hit[c].any()]
            rejected_in_span += int(hit[rejecting].any(axis=1).sum())
            if kind == "gap" and _sensor_day_missing(summary, e):
                fired.append("missing_readings")
            by.update(fired)
            caught += bool(fired)
        rows.append({"kind": kind, "injected": len(events), "caught": caught, "recall": caught / len(events),
                     "checks": ",".join(sorted(by)), "rejected_readings_in_spans": rejected_in_span})
    return pd.DataFrame(rows)


def test_every_injected_fault_is_caught_and_after_hours_waste_is_kept(faulty):
    settings = Settings()
    table = confusion(faulty, settings)
    print("\n" + table.to_string(index=False))
    faults = table[table["kind"] != "after_hours_waste"]
    assert set(faults["kind"]) >= {"gap", "spike", "stuck", "duplicate", "late", "dst", "unit_mixup", "fahrenheit",
                                   "rollover", "reset", "future_ts"}
    assert (faults["recall"] == 1.0).all(), faults
    # After-hours waste is a real load: it must reach silver, not quarantine.
    waste = table[table["kind"] == "after_hours_waste"]
    assert len(waste) == 1 and waste["rejected_readings_in_spans"].iloc[0] == 0


def test_clean_portfolio_rejects_at_most_half_a_percent(clean):
    settings = Settings()
    readings, weather = raw_batch(clean)
    hourly, rejects, results = readings_to_hourly(readings, clean.registry, settings, weather=weather,
                                                  start=START, end=END, validate=False)
    share = len(rejects) / len(readings)
    by_check = rejects["check_name"].value_counts().to_dict() if len(rejects) else {}
    print(f"\nclean portfolio: {len(rejects)} of {len(readings)} readings rejected ({share:.4%}) {by_check}")
    assert share <= 0.005
    assert len(hourly) == 8 * 45 * 24
    assert hourly["gap"].sum() == 0 and hourly["energy_kwh"].notna().all()
    # Silver energy is the simulator's true hourly energy.
    truth = clean.truth_hourly.to_pandas()[["building_id", "ts", "energy_kwh"]].rename(columns={"energy_kwh": "true_kwh"})
    joined = hourly.merge(truth, on=["building_id", "ts"])
    assert len(joined) == len(hourly)
    assert np.allclose(joined["energy_kwh"], joined["true_kwh"], rtol=1e-3, atol=1e-3)


def test_faulty_portfolio_silver_flags_and_treats_faults(faulty):
    settings = Settings()
    readings, weather = raw_batch(faulty)
    hourly, rejects, _ = readings_to_hourly(readings, faulty.registry, settings, weather=weather, start=START, end=END, validate=False)
    assert len(hourly) == 8 * 45 * 24 and not hourly.duplicated(["building_id", "ts"]).any()
    assert hourly["imputed"].sum() > 0 and hourly["gap"].sum() > 0 and hourly["outlier"].sum() > 0
    # Where the hour was neither imputed, a gap nor an outlier, silver matches the truth.
    truth = faulty.truth_hourly.to_pandas()[["building_id", "ts", "energy_kwh"]].rename(columns={"energy_kwh": "true_kwh"})
    good = hourly.merge(truth, on=["building_id", "ts"])
    good = good[~good["imputed"] & ~good["gap"] & ~good["outlier"] & ~good["quality_flags"].str.contains("dst_artifact|duplicate|future")]
    assert np.allclose(good["energy_kwh"], good["true_kwh"], rtol=1e-3, atol=1e-3)
    assert set(rejects["check_name"]) <= set(CHECK_NAMES) | {c for c in rejects["check_name"] if c.startswith("weather_")}


def test_features_never_depend_on_data_after_the_forecast_origin(faulty):
    settings = Settings()
    readings, weather = raw_batch(faulty)
    registry = faulty.registry
    b = registry.buildings[0]
    origin = pd.Timestamp("2024-04-02", tz=b.timezone).tz_convert("UTC")  # local midnight: a forecast origin

    def features(readings, weather):
        hourly, _, _ = readings_to_hourly(readings, registry, settings, weather=weather, start=START, end=END, validate=False)
        return hourly_to_features(hourly, registry, settings, scaling={}).set_index(["building_id", "ts"]).sort_index()

    # One building and its site keep this fast; the cores treat buildings independently.
    readings = readings[readings["building_id"] == b.building_id]
    weather = weather[weather["site_id"] == b.site_id]
    base = features(readings, weather)
    rng = np.random.default_rng(7)
    after = readings["ts"] > origin
    perturbed = readings.copy()
    perturbed.loc[after, "value"] = perturbed.loc[after, "value"] * rng.uniform(1.2, 1.5, after.sum())
    w = weather.copy()
    future_obs = (w["kind"] == "observation") & (w["ts"] >= origin)
    w.loc[future_obs, "temperature_c"] += 7.0
    late_forecasts = (w["kind"] == "forecast") & (w["issued_at"] >= origin)
    w.loc[late_forecasts, "temperature_c"] -= 9.0
    changed = features(perturbed, w)

    rows = base.xs(b.building_id)
    before = rows.index < origin
    pd.testing.assert_frame_equal(base.xs(b.building_id)[before], changed.xs(b.building_id)[before])
    next_day = (rows.index >= origin) & (rows.index < origin + pd.Timedelta(hours=24))
    future_cols = [c for c in FUTURE_FEATURES]
    pd.testing.assert_frame_equal(base.xs(b.building_id)[next_day][future_cols], changed.xs(b.building_id)[next_day][future_cols])
    # ... while the perturbation did reach what is observed after the origin.
    assert not np.allclose(base.xs(b.building_id)[next_day]["temperature"], changed.xs(b.building_id)[next_day]["temperature"])
    issued = base["forecast_issued_at"].dropna()
    assert (issued < base.loc[issued.index, "forecast_origin"]).all()


@pytest.mark.slow
def test_curate_and_features_through_delta_with_ge_are_idempotent(wattflow_home, capfd):
    from lakehouse.curation import build_features, curate
    from lakehouse.engine import get_engine
    from lakehouse.schemas import BUILDING_HOURLY, FEATURES, QUALITY_RESULTS, QUARANTINE_READINGS
    from lakehouse.simulator import FaultConfig, land_portfolio, simulate_portfolio
    from wattflow.settings import get_settings

    settings = get_settings()
    portfolio = simulate_portfolio(2, "2024-03-25", "2024-04-08", faults=FaultConfig())
    engine = get_engine(settings)
    land_portfolio(portfolio, engine)
    start, end = "2024-03-29", "2024-04-08"
    first = curate(engine, portfolio.registry, start, end, settings)
    assert first.hours == 2 * 10 * 24 and first.silver_changed
    silver_version = engine.version(BUILDING_HOURLY)
    feats = build_features(engine, portfolio.registry, start, end, settings)
    gold_version = engine.version(FEATURES)
    assert feats.rows == 2 * 10 * 24
    assert "Calculating Metrics" not in capfd.readouterr().err, "GE progress bars must stay out of task logs"

    # The second run goes through the CLI, which reads the registry from reference.buildings.
    from typer.testing import CliRunner

    from wattflow.cli import app

    again = CliRunner().invoke(app, ["curate", "--start", start, "--end", end])
    assert again.exit_code == 0, again.output
    assert "(unchanged)" in again.output.replace("\n", "")
    feats_again = build_features(engine, portfolio.registry, start, end, settings)
    assert engine.version(BUILDING_HOURLY) == silver_version
    assert engine.version(FEATURES) == gold_version and not feats_again.gold_changed

    results = engine.read(QUALITY_RESULTS).to_pandas()
    assert {"bronze_sensor_readings", "bronze_weather", "silver_building_hourly", "gold_features"} <= set(results["suite"])
    assert results.duplicated(["suite", "batch", "expectation"]).sum() == 0
    stuck = results[(results["expectation"] == "stuck_sensor")]
    assert len(stuck) == 1 and set(stuck["policy"]) == {"reject"}
    quarantine = engine.read(QUARANTINE_READINGS).to_pandas()
    assert len(quarantine) == first.rejected and set(quarantine["check_name"]) <= set(CHECK_NAMES)
    assert Path(first.data_docs).is_file() and "bronze_sensor_readings" in Path(first.data_docs).read_text()
    catalogue = json.loads(Path(feats.catalogue_path).read_text())
    names = {f["name"] for f in catalogue["features"]}
    assert {"temperature_std", "rolling_avg_energy", "heating_degree_hours"} <= names
    assert set(catalogue["scaling"]["temperature_std"]) == set(portfolio.registry.building_ids())


def uci_records():
    """The UCI appliances house through the file source's mapping: Wh per 10 min, Europe/Brussels."""
    from lakehouse.buildings import Building, BuildingRegistry, Sensor
    from lakehouse.sources.files import FileMapping, file_records, read_table_file

    frame = read_table_file(UCI_ZIP)
    temps = [f"T{i}" for i in range(1, 10)]
    hums = [f"RH_{i}" for i in range(1, 10)]
    mapping = FileMapping(
        building_id="uci-house", timestamp_column="date", energy_column="Appliances", energy_unit="Wh",
        sensor_columns=tuple([("indoor_temperature", c) for c in temps] + [("indoor_humidity", c) for c in hums]),
        weather_columns={"temperature_c": "T_out", "relative_humidity_pct": "RH_out", "wind_speed_ms": "Windspeed",
                         "dew_point_c": "Tdewpoint"},
        timezone="Europe/Brussels", site_id="uci-stambruges", clock="standard",  # the logger ignores DST
    )
    records = file_records(frame, mapping, "Europe/Brussels", "uci-stambruges")
    sensors = [Sensor(sensor_id=s, metric=m) for s, m, _ in mapping.sensors()]
    registry = BuildingRegistry(buildings=[Building(
        building_id="uci-house", name="UCI appliances house", site_id="uci-stambruges", timezone="Europe/Brussels",
        country="BE", use_type="residential", floor_area_m2=280, latitude=50.51, longitude=3.73,
        grid_emission_factor_kg_per_kwh=0.167, tariff_per_kwh=0.28, currency="EUR", sensors=sensors)])
    readings = records.readings.to_pandas()
    weather = records.weather.to_pandas().assign(issued_at=lambda w: w["ts"])
    return readings, weather, registry


def test_suites_on_the_uci_appliances_data(wattflow_home):
    from data_quality.checkpoint import build_data_docs
    from data_quality.policy import BatchRejected
    from wattflow.settings import get_settings

    settings = get_settings()
    readings, weather, registry = uci_records()
    # Default policies: the house's quantised sensors (10 Wh steps, 0.1 K and 0.1 % resolution) sit on one
    # value for a while; the stuck rule judges a run against each sensor's own rate of repeats, and bad
    # readings are set aside without stopping the batch.
    hourly, rejects, results = readings_to_hourly(readings, registry, settings, weather=weather, batch="uci-appliances")
    failed = pd.DataFrame([r.as_row() for r in results if not r.success])
    print(f"\nUCI appliances: {len(readings)} readings, {len(hourly)} hours, {len(rejects)} rejected")
    print(rejects["check_name"].value_counts().to_string() if len(rejects) else "no rejects")
    print(failed[["suite", "expectation", "observed_value", "threshold", "policy"]].to_string(index=False))
    print(f"silver: imputed {int(hourly['imputed'].sum())}, gap {int(hourly['gap'].sum())}, outlier {int(hourly['outlier'].sum())} hours")
    assert len(readings) == 19_735 * 19
    assert len(hourly) >= 19_735 // 6 - 2 and not hourly.duplicated(["building_id", "ts"]).any()
    stuck = rejects[rejects["check_name"] == "stuck_sensor"]
    # The energy meter repeats 29% of its 10-minute readings by resolution alone: none of it is stuck.
    assert len(stuck) < 0.05 * len(readings) and not (stuck["sensor_id"] == "appliances").any()
    systematic = next(r for r in results if r.expectation == "systematic_reject_share")
    assert systematic.success and systematic.unexpected_count < 100
    assert len(rejects) / len(readings) < 0.05
    assert hourly["energy_kwh"].notna().mean() > 0.99
    # Six 10-minute readings (median 60 Wh) sum to the hour: the appliances use ~0.37 kWh in a typical hour.
    assert 0.3 < hourly["energy_kwh"].median() < 0.45

    # A systematic fault stops the batch: the meter sends Wh labelled kWh for 45 of its 136 days.
    wrong = readings.copy()
    energy = wrong["sensor_id"] == "appliances"
    week = energy & (pd.to_datetime(wrong["ts"], utc=True) < pd.to_datetime(wrong["ts"], utc=True).min() + pd.Timedelta(days=45))
    wrong.loc[week, "value"] = wrong.loc[week, "value"].astype(float) * 1000
    with pytest.raises(BatchRejected) as err:
        readings_to_hourly(wrong, registry, settings, weather=weather, batch="uci-appliances-wh", validate=False)
    assert err.value.expectation == "systematic_reject_share"
    assert build_data_docs(settings).is_file()


def test_served_future_rows_carry_the_same_day_ahead_weather_as_training_rows(clean, wattflow_home):
    """`future_features` (the forecast step) against gold for the same hours: the issued forecast where one
    was issued before the origin, else the same persistence fallback, from the same silver."""
    import pyarrow as pa

    from lakehouse.engine import get_engine
    from lakehouse.schemas import BUILDING_HOURLY, BUILDINGS, WEATHER
    from wattflow.pipeline import future_features
    from wattflow.settings import get_settings

    settings = get_settings()
    engine = get_engine(settings)
    readings, weather = raw_batch(clean)
    b = clean.registry.buildings[0]
    readings = readings[readings["building_id"] == b.building_id]
    weather = weather[weather["site_id"] == b.site_id]
    engine.upsert(BUILDINGS, clean.registry.to_arrow())
    hourly, _, _ = readings_to_hourly(readings, clean.registry, settings, weather=weather, start=START, end=END, validate=False)
    engine.upsert(BUILDING_HOURLY, pa.Table.from_pandas(hourly, preserve_index=False))
    origin = pd.Timestamp("2024-04-02", tz=b.timezone).tz_convert("UTC")
    window = [origin + pd.Timedelta(hours=h) for h in range(settings.model.horizon_h)]
    columns = ["forecast_temperature", "forecast_humidity", "forecast_solar_radiation", "forecast_source"]

    def compare(silver: pd.DataFrame) -> pd.DataFrame:
        served = future_features(settings, b.building_id, origin.to_pydatetime()).set_index("ts")
        trained = hourly_to_features(silver, clean.registry, settings, scaling={}).set_index("ts")
        pd.testing.assert_frame_equal(served.loc[window, columns].reset_index(drop=True),
                                      trained.loc[window, columns].reset_index(drop=True), check_dtype=False)
        return served

    # No forecast in bronze: both fall back to persistence, the silver observation 24 h before.
    served = compare(hourly.assign(forecast_issued_at=pd.NaT, forecast_temperature_c=np.nan,
                                   forecast_humidity_pct=np.nan, forecast_solar_radiation_wm2=np.nan))
    assert (served.loc[window, "forecast_source"] == "persistence").all()
    silver = hourly.set_index("ts")
    assert np.allclose(served.loc[window, "forecast_temperature"],
                       silver.loc[[t - pd.Timedelta(hours=24) for t in window], "outdoor_temperature_c"])
    # With the simulator's issued forecasts landed, both take them.
    forecasts = weather[weather["kind"] == "forecast"].drop(columns=["ingested_at"])
    engine.upsert(WEATHER, pa.Table.from_pandas(forecasts.assign(source="simulator", batch_id="t",
                                                                 ingested_at=DELIVERED), preserve_index=False))
    served = compare(hourly)
    assert (served.loc[window, "forecast_source"] == "issued").all()
