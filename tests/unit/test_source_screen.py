"""Source-side screening and MQTT payload decoding: pure functions, no broker, no tables."""

from __future__ import annotations

import math
from datetime import datetime, timezone

import pyarrow as pa

from lakehouse.buildings import Building, BuildingRegistry, Sensor
from lakehouse.sources.mqtt import decode_payload, records_table, topic_ids
from lakehouse.sources.screen import screen_readings
from wattflow.settings import Settings

NOW = datetime(2026, 1, 10, tzinfo=timezone.utc)
REGISTRY = BuildingRegistry(
    buildings=[
        Building(building_id="h1", name="House", site_id="s", timezone="Europe/Brussels", country="BE", use_type="residential",
                 floor_area_m2=280.0, latitude=50.5, longitude=3.7, grid_emission_factor_kg_per_kwh=0.17, tariff_per_kwh=0.3,
                 currency="EUR", sensors=[Sensor(sensor_id="m", metric="energy"), Sensor(sensor_id="t", metric="indoor_temperature")])
    ]
)


def _screen(records):
    s = Settings()
    return screen_readings(records, REGISTRY, now=NOW, screen=s.screen, max_future_skew_h=s.quality.max_future_skew_h)


def _r(**kw):
    return {"building_id": "h1", "sensor_id": "m", "metric": "energy", "ts": "2026-01-05T00:00:00Z", "value": 0.5, **kw}


def test_units_convert_or_reject_and_magnitude_catches_wh_as_kwh() -> None:
    out = _screen([
        _r(value=500.0, unit="Wh"),  # converted to 0.5 kWh
        _r(ts="2026-01-05T00:15:00Z", value=500.0, unit="kWh"),  # 500 kWh in 15 min for 280 m2: a Wh value
        _r(ts="2026-01-05T00:30:00Z", unit="gallons"),
        _r(sensor_id="t", metric="indoor_temperature", value=70.0, unit="degF"),  # 21.1 degC
        _r(sensor_id="t", metric="indoor_temperature", ts="2026-01-05T00:15:00Z", value=70.0),  # 70 degC: implausible
    ])
    good = out.good.to_pylist()
    assert [(g["value"], g["unit"]) for g in good][0] == (0.5, "kWh")
    assert math.isclose(good[1]["value"], 21.1111, rel_tol=1e-4) and good[1]["unit"] == "degC"
    assert [r.check_name for r in out.rejected] == ["implausible_magnitude", "unit_mismatch", "implausible_magnitude"]
    assert "[0, 140] kWh" in out.rejected[0].reason and "Wh value sent as kWh" in out.rejected[0].reason


def test_future_and_duplicates_first_copy_wins() -> None:
    out = _screen([_r(), _r(), _r(value=0.7), _r(ts="2026-01-12T00:00:00Z"), _r(ts="2026-01-10T12:00:00Z")])
    assert [g["value"] for g in out.good.to_pylist()] == [0.5, 0.5]  # the first copy, and +12 h is within the skew
    assert [r.check_name for r in out.rejected] == ["duplicate", "conflicting_duplicate", "future_timestamp"]
    assert "0.7 conflicts with 0.5" in out.rejected[1].reason


def test_records_bronze_will_reject_pass_through_untouched() -> None:
    out = _screen([_r(building_id="nowhere"), _r(value="abc"), _r(value=float("nan")), {"metric": "energy"}])
    assert out.good.num_rows == 4 and out.rejected == []


def test_decode_payload_and_topic_ids() -> None:
    assert topic_ids("sites/s1/buildings/b1/sensors/m1") == {"site_id": "s1", "building_id": "b1", "sensor_id": "m1"}
    assert topic_ids("sites/s1/buildings/b1/sensors") == {"site_id": "s1", "building_id": "b1"}
    items, ids, bad = decode_payload("sites/s/buildings/h1/sensors/m", b'[{"ts": 1, "value": 2}, 3]')
    assert items == [{"ts": 1, "value": 2}] and ids == {"building_id": "h1", "sensor_id": "m"}
    assert bad[0].check_name == "not_a_reading"
    _, _, bad = decode_payload("sites/s/buildings/h1/sensors/m", b"\xff{")
    assert bad[0].check_name == "malformed_json" and bad[0].context == {"building_id": "h1", "sensor_id": "m"}


def test_records_table_fills_ids_from_topics_and_keeps_mixed_values() -> None:
    table = records_table([
        ([{"metric": "energy", "ts": "t1", "value": 1.0}], {"building_id": "h1", "sensor_id": "m"}),
        ([{"metric": "energy", "ts": "t2", "value": 2.0, "sensor_id": "x"}], {"building_id": "h1"}),
    ])
    assert table.column("building_id").to_pylist() == ["h1", "h1"]
    assert table.column("sensor_id").to_pylist() == ["m", "x"]
    mixed = records_table([([{"value": 1.0}, {"value": "abc"}], {"building_id": "h1"})])
    assert mixed.column("value").type == pa.string() and mixed.column("value").to_pylist() == ["1.0", "abc"]
