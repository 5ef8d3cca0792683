"""The pure core of landing: which records land, which go to quarantine, and why."""

import datetime as dt
import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from lakehouse.bronze import record_id, validate_readings, validate_weather
from lakehouse.buildings import Building, BuildingRegistry, Sensor
from lakehouse.parsing import parse_numbers, parse_timestamps
from lakehouse.schemas import QUARANTINE_READINGS


@pytest.fixture
def registry() -> BuildingRegistry:
    return BuildingRegistry(
        buildings=[
            Building(
                building_id="b01", name="Office", site_id="berlin", timezone="Europe/Berlin", country="DE",
                use_type="office", floor_area_m2=5000, latitude=52.5, longitude=13.4,
                grid_emission_factor_kg_per_kwh=0.38, tariff_per_kwh=0.32, currency="EUR",
                sensors=[
                    Sensor(sensor_id="b01-elec", metric="energy"),
                    Sensor(sensor_id="b01-temp", metric="indoor_temperature", offset=0.5, scale=1.0),
                    Sensor(sensor_id="b01-co2", metric="co2", scale=2.0),
                ],
            )
        ]
    )


def good(**overrides):
    record = {"building_id": "b01", "sensor_id": "b01-elec", "metric": "energy", "ts": "2024-03-01T10:00:00Z", "value": 12.5}
    record.update(overrides)
    return record


BAD = [
    (good(ts="2024-02-30T25:00"), "unparseable_timestamp", "field 'ts': unparseable timestamp '2024-02-30T25:00'"),
    (good(value="twelve"), "non_numeric_value", "field 'value': non-numeric value 'twelve'"),
    (good(value=float("inf")), "non_finite_value", "field 'value': non-finite value inf"),
    (good(value=float("nan")), "non_finite_value", "field 'value': non-finite value nan"),
    (good(building_id="b99"), "unknown_building", "field 'building_id': unknown building 'b99'"),
    (good(sensor_id="b01-ghost"), "unknown_sensor", "field 'sensor_id': unknown sensor 'b01-ghost' for building 'b01'"),
    (good(metric="co2"), "metric_mismatch", "field 'metric': 'co2' but sensor 'b01-elec' of building 'b01' measures 'energy'"),
    ({k: v for k, v in good().items() if k != "ts"}, "missing_field", "missing field 'ts'"),
    (good(building_id=None), "missing_field", "missing field 'building_id'"),
]


@pytest.mark.parametrize("record, check, reason", BAD, ids=[b[1] + str(i) for i, b in enumerate(BAD)])
def test_each_bad_record_is_quarantined_with_reason_and_raw(registry, record, check, reason):
    batch = [good(ts="2024-03-01T09:45:00Z", value=1.0), record, good(ts="2024-03-01T10:15:00Z", value=2.0)]
    result = validate_readings(batch, registry)
    assert result.good.num_rows == 2
    assert result.good.column("value").to_pylist() == [1.0, 2.0]
    assert result.rejected.num_rows == 1
    row = result.rejected.to_pylist()[0]
    assert row["check_name"] == check
    assert row["reason"] == reason
    assert json.loads(row["raw"]) == json.loads(json.dumps(record, default=str))
    assert result.reasons == {check: 1}


def test_mixed_batch_from_dataframe(registry):
    frame = pd.DataFrame([good(), good(value="x", ts="2024-03-01T10:15:00Z"), good(building_id="zz", ts="2024-03-01T10:30:00Z")])
    result = validate_readings(frame, registry)
    assert result.good.num_rows == 1
    assert sorted(result.reasons.items()) == [("non_numeric_value", 1), ("unknown_building", 1)]
    assert set(result.rejected.column_names) <= set(QUARANTINE_READINGS.schema.names)


def test_timestamp_forms_all_parse_to_the_same_utc_instant(registry):
    instant = dt.datetime(2024, 3, 1, 10, 0, tzinfo=dt.timezone.utc)
    forms = [
        "2024-03-01T10:00:00Z",
        "2024-03-01T11:00:00+01:00",
        "2024-03-01 10:00:00",  # offset-less text is UTC
        instant,
        dt.datetime(2024, 3, 1, 10, 0),  # naive datetime is UTC
        int(instant.timestamp()),  # epoch seconds
        int(instant.timestamp() * 1000),  # epoch milliseconds
    ]
    result = validate_readings([good(ts=f) for f in forms], registry)
    assert result.rejected.num_rows == 0
    assert set(result.good.column("ts").to_pylist()) == {instant}


def test_calibration_and_default_unit(registry):
    batch = [
        good(sensor_id="b01-temp", metric="indoor_temperature", value=21.0),
        good(sensor_id="b01-co2", metric="co2", value=300.0, unit="ppm"),
        good(value="7.25"),
    ]
    result = validate_readings(batch, registry)
    assert result.good.column("value").to_pylist() == [21.5, 600.0, 7.25]
    assert result.good.column("unit").to_pylist() == ["degC", "ppm", "kWh"]


def test_first_failing_check_wins(registry):
    result = validate_readings([good(building_id="b99", ts="garbage", value="x")], registry)
    assert result.reasons == {"unparseable_timestamp": 1}


def test_record_id_is_stable_and_source_specific():
    raw = json.dumps(good(), sort_keys=True)
    assert record_id("mqtt", raw) == record_id("mqtt", raw)
    assert record_id("mqtt", raw) != record_id("files", raw)


def test_arrow_happy_path_keeps_all_rows(registry):
    n = 1000
    table = pa.table(
        {
            "building_id": ["b01"] * n,
            "sensor_id": ["b01-elec"] * n,
            "metric": ["energy"] * n,
            "ts": pa.array(np.arange(n, dtype=np.int64) * 900_000_000, pa.int64()).cast(pa.timestamp("us", tz="UTC")),
            "value": np.linspace(0, 1, n),
        }
    )
    result = validate_readings(table, registry)
    assert result.good.num_rows == n and result.rejected.num_rows == 0
    assert result.good.column("ts").equals(table.column("ts"))


def test_parse_numbers_tells_garbage_from_nan_text():
    values, non_numeric, non_finite = parse_numbers(pa.array(["1.5", "nan", "abc", None, "-inf"]))
    assert values[0] == 1.5
    assert non_numeric.tolist() == [False, False, True, False, False]
    assert non_finite.tolist() == [False, True, False, False, True]


def test_parse_timestamps_marks_only_present_garbage():
    ts, bad = parse_timestamps(pa.array(["2024-01-01T00:00:00Z", "yesterday", None]))
    assert bad.tolist() == [False, True, False]
    assert ts[0].as_py() == dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)


def test_weather_validation():
    records = [
        {"site_id": "berlin", "kind": "observation", "ts": "2024-03-01T10:00:00Z", "temperature_c": 5.0, "relative_humidity_pct": 80.0},
        {"site_id": "berlin", "kind": "forecast", "issued_at": "2024-02-29T06:00:00Z", "ts": "2024-03-01T10:00:00Z", "temperature_c": 6.0},
        {"site_id": "berlin", "kind": "nowcast", "ts": "2024-03-01T10:00:00Z"},
        {"site_id": "berlin", "kind": "forecast", "ts": "2024-03-01T10:00:00Z"},
        {"site_id": "berlin", "kind": "observation", "ts": "2024-03-01T11:00:00Z", "wind_speed_ms": "calm"},
    ]
    result = validate_weather(records)
    assert result.good.num_rows == 2
    assert result.reasons == {"unknown_kind": 1, "missing_field": 1, "non_numeric_value": 1}
    obs = result.good.to_pylist()[0]
    assert obs["issued_at"] == obs["ts"]  # an observation is issued when observed
    assert obs["dew_point_c"] == pytest.approx(1.86, abs=0.05)  # derived from T and RH (Magnus)
    reasons = result.rejected.column("reason").to_pylist()
    assert "field 'wind_speed_ms': non-numeric value 'calm'" in reasons
    assert "missing field 'issued_at'" in reasons


def test_constant_text_columns_are_valid_arrow():
    from lakehouse.bronze import constant_text

    for value, n in (("bench", 5), ("", 3), ("ünïcode-batch", 2), ("x", 0)):
        arr = constant_text(value, n)
        arr.validate(full=True)
        assert arr.type == pa.string() and arr.to_pylist() == [value] * n
