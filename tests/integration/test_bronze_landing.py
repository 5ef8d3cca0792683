"""Landing into real Delta tables (delta-rs): quarantine, idempotency, overlapping intervals, the CLI."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from typer.testing import CliRunner

from lakehouse.bronze import land_readings, land_weather, validate_readings
from lakehouse.engine import get_engine
from lakehouse.schemas import BUILDINGS, QUARANTINE_READINGS, QUARANTINE_WEATHER, SENSOR_READINGS, WEATHER
from lakehouse.simulator import FaultConfig, land_portfolio, simulate_portfolio

pytestmark = pytest.mark.integration

NOW = datetime(2024, 4, 1, 12, 0, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def world():
    """Two buildings, six days around the EU DST switch."""
    return simulate_portfolio(2, "2024-03-28", "2024-04-03", seed=11, forecast_issue_hour_utc=6)


@pytest.fixture
def engine(settings):
    return get_engine(settings)


def sort_keys(table: pa.Table, keys=SENSOR_READINGS.keys) -> pa.Table:
    return table.sort_by([(k, "ascending") for k in keys])


def between(table: pa.Table, start: str, end: str) -> pa.Table:
    ts = table.column("ts")
    lo = pa.scalar(datetime.fromisoformat(start).replace(tzinfo=timezone.utc), pa.timestamp("us", tz="UTC"))
    hi = pa.scalar(datetime.fromisoformat(end).replace(tzinfo=timezone.utc), pa.timestamp("us", tz="UTC"))
    return table.filter(pc.and_(pc.greater_equal(ts, lo), pc.less(ts, hi)))


def test_bad_records_go_to_quarantine_and_the_rest_lands(engine, world):
    good = between(world.readings, "2024-03-28", "2024-03-28T01:00").drop_columns(["delivery"]).to_pylist()
    bad = [
        {**good[0], "ts": "31/02/2024 25:61"},
        {**good[1], "value": "n/a"},
        {**good[2], "building_id": "b77"},
        {**good[3], "sensor_id": "b01-thermostat"},
    ]
    batch = good + bad
    first = land_readings(batch, source="gateway-7", registry=world.registry, engine=engine, batch_id="batch-1", now=NOW)
    assert (first.received, first.landed, first.quarantined) == (len(batch), len(good), 4)
    assert first.reasons == {"unparseable_timestamp": 1, "non_numeric_value": 1, "unknown_building": 1, "unknown_sensor": 1}
    assert engine.read(SENSOR_READINGS).num_rows == len(good)

    q = {r["check_name"]: r for r in engine.read(QUARANTINE_READINGS).to_pylist()}
    assert q["unparseable_timestamp"]["reason"] == "field 'ts': unparseable timestamp '31/02/2024 25:61'"
    assert q["non_numeric_value"]["reason"] == "field 'value': non-numeric value 'n/a'"
    assert q["unknown_building"]["reason"] == "field 'building_id': unknown building 'b77'"
    assert q["unknown_sensor"]["reason"] == "field 'sensor_id': unknown sensor 'b01-thermostat' for building 'b01'"
    assert json.loads(q["non_numeric_value"]["raw"])["value"] == "n/a"
    assert all(r["source"] == "gateway-7" and r["batch_id"] == "batch-1" for r in q.values())
    assert q["unknown_building"]["building_id"] == "b77"

    versions = (engine.version(SENSOR_READINGS), engine.version(QUARANTINE_READINGS))
    again = land_readings(batch, source="gateway-7", registry=world.registry, engine=engine, batch_id="batch-2")
    assert again.quarantine.rows_inserted == 0 and again.readings.rows_inserted == 0
    assert engine.read(QUARANTINE_READINGS).num_rows == 4
    assert (engine.version(SENSOR_READINGS), engine.version(QUARANTINE_READINGS)) == versions


def test_same_interval_twice_changes_nothing(engine, world):
    first = land_portfolio(world, engine, now=NOW)
    tables = (BUILDINGS, SENSOR_READINGS, WEATHER)
    versions = {t.qualified_name: engine.version(t) for t in tables}
    content = {t.qualified_name: engine.read(t) for t in tables}
    assert first.readings_landed == world.readings.num_rows
    assert content["bronze.sensor_readings"].num_rows == world.readings.num_rows

    second = land_portfolio(world, engine)
    assert {t.qualified_name: engine.version(t) for t in tables} == versions
    for t in tables:
        assert sort_keys(engine.read(t), t.keys).equals(sort_keys(content[t.qualified_name], t.keys)), t.qualified_name
    assert all(r.readings.rows_unchanged == r.landed and not r.readings.changed for _, r in second.readings)
    assert not engine.exists(QUARANTINE_READINGS) and not engine.exists(QUARANTINE_WEATHER)


def test_overlapping_intervals_merge(engine, world):
    readings = world.readings.drop_columns(["delivery"])
    one = between(readings, "2024-03-28", "2024-04-01")
    two = between(readings, "2024-03-30", "2024-04-03")
    land_readings(one, source="sim", registry=world.registry, engine=engine, now=NOW)
    result = land_readings(two, source="sim", registry=world.registry, engine=engine, now=NOW)
    overlap = between(readings, "2024-03-30", "2024-04-01").num_rows
    assert result.readings.rows_unchanged == overlap
    assert result.readings.rows_inserted == two.num_rows - overlap
    landed = engine.read(SENSOR_READINGS, columns=list(readings.column_names))
    expected = validate_readings(readings, world.registry).good  # calibrated, as landed in one go
    assert sort_keys(landed).select(["building_id", "sensor_id", "ts", "value"]).equals(
        sort_keys(expected).select(["building_id", "sensor_id", "ts", "value"])
    )

    # A corrected reading in a later batch updates that one row and nothing else.
    row = between(readings, "2024-03-31T12:00", "2024-03-31T12:15").slice(0, 1)
    corrected = row.set_column(row.column_names.index("value"), "value", pa.array([row.column("value")[0].as_py() + 1.0]))
    fix = land_readings(corrected, source="sim", registry=world.registry, engine=engine, now=NOW)
    assert (fix.readings.rows_inserted, fix.readings.rows_updated) == (0, 1)
    assert engine.read(SENSOR_READINGS).num_rows == readings.num_rows


def test_late_readings_land_in_a_later_batch(engine):
    p = simulate_portfolio(2, "2024-03-28", "2024-04-03", seed=11, faults=FaultConfig.only("late"), forecast_issue_hour_utc=6)
    landing = land_portfolio(p, engine, now=NOW)
    assert [bid.rsplit("-", 1)[1] for bid, _ in landing.readings] == ["d0", "d1"]
    late_batch = landing.readings[1][0]
    landed = engine.read(SENSOR_READINGS, columns=["batch_id"])
    late_rows = sum(json.loads(d)["readings"] for d in p.faults("late").column("detail").to_pylist())
    assert pc.sum(pc.equal(landed.column("batch_id"), late_batch)).as_py() == late_rows > 0


def test_calibration_applied_on_landing(engine, world):
    sensor = next(s for b in world.registry for s in b.sensors if s.metric == "indoor_temperature")
    building = next(b for b in world.registry if sensor in b.sensors)
    sensor.offset = 0.7  # as if the registry had been re-calibrated
    try:
        land_readings(
            [{"building_id": building.building_id, "sensor_id": sensor.sensor_id, "metric": "indoor_temperature",
              "ts": "2024-03-29T08:00:00Z", "value": 20.0}],
            source="sim", registry=world.registry, engine=engine, now=NOW,
        )
    finally:
        sensor.offset = 0.0
    (row,) = engine.read(SENSOR_READINGS).to_pylist()
    assert row["value"] == pytest.approx(20.7) and row["unit"] == "degC"


def test_weather_bad_rows_quarantined(engine, world):
    obs = world.weather.slice(0, 3).to_pylist()
    obs.append({**obs[0], "ts": "tomorrow"})
    result = land_weather(obs, source="sim", engine=engine, now=NOW)
    assert (result.landed, result.quarantined) == (3, 1)
    assert engine.read(WEATHER).num_rows == 3
    assert engine.read(QUARANTINE_WEATHER).column("reason").to_pylist() == ["field 'ts': unparseable timestamp 'tomorrow'"]


def test_cli_ingest_simulate_lands_and_is_idempotent(settings, engine):
    from wattflow.cli import app

    args = ["ingest", "simulate", "--buildings", "2", "--start", "2024-03-30", "--end", "2024-04-01", "--faults",
            "--drift", "retrofit:b01:2024-03-31:0.25"]
    runner = CliRunner()
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "bronze.sensor_readings" in result.output and "reference.buildings" in result.output
    versions = [engine.version(t) for t in (BUILDINGS, SENSOR_READINGS, WEATHER)]
    assert None not in versions
    assert engine.read(BUILDINGS).num_rows == 2
    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output
    assert [engine.version(t) for t in (BUILDINGS, SENSOR_READINGS, WEATHER)] == versions
    bad = runner.invoke(app, ["ingest", "simulate", "--buildings", "2", "--start", "2024-03-30", "--end", "2024-04-01", "--drift", "retrofit:b09:2024-03-31"])
    assert bad.exit_code != 0 and "b09" in bad.output
