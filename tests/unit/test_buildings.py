import json

import pytest
from pydantic import ValidationError

from lakehouse.buildings import Building, BuildingRegistry, Sensor
from lakehouse.schemas import BUILDINGS


def _building(bid: str = "b01", site: str = "berlin", sensors=None) -> Building:
    return Building(
        building_id=bid,
        name=f"Building {bid}",
        site_id=site,
        timezone="Europe/Berlin",
        country="DE",
        use_type="office",
        floor_area_m2=5000,
        latitude=52.5,
        longitude=13.4,
        grid_emission_factor_kg_per_kwh=0.38,
        tariff_per_kwh=0.32,
        currency="EUR",
        sensors=sensors
        if sensors is not None
        else [Sensor(sensor_id=f"{bid}-elec", metric="energy"), Sensor(sensor_id=f"{bid}-temp", metric="indoor_temperature", offset=-0.4)],
    )


def test_sensor_unit_defaults_from_metric():
    assert Sensor(sensor_id="x", metric="energy").unit == "kWh"
    assert Sensor(sensor_id="x", metric="co2").unit == "ppm"
    assert Sensor(sensor_id="x", metric="indoor_temperature", unit="degF").unit == "degF"


def test_unknown_metric_rejected():
    with pytest.raises(ValidationError, match="metric"):
        Sensor(sensor_id="x", metric="power")


def test_registry_lookup():
    registry = BuildingRegistry(buildings=[_building("b01"), _building("b02", site="london")])
    assert registry.get("b02").site_id == "london"
    assert registry.sensor("b01", "b01-temp").offset == -0.4
    assert registry.sensor("b01", "b02-temp") is None
    assert registry.sensor("nope", "b01-temp") is None
    assert registry.site_ids() == ["berlin", "london"]
    with pytest.raises(KeyError, match="'b99'"):
        registry.get("b99")


def test_duplicate_ids_rejected():
    with pytest.raises(ValidationError, match="b01"):
        BuildingRegistry(buildings=[_building("b01"), _building("b01")])
    with pytest.raises(ValidationError, match="appears twice"):
        _building(sensors=[Sensor(sensor_id="s", metric="energy"), Sensor(sensor_id="s", metric="co2")])


def test_to_arrow_matches_contract_and_round_trips():
    registry = BuildingRegistry(buildings=[_building("b01"), _building("b02")])
    table = registry.to_arrow()
    assert table.schema == BUILDINGS.schema
    assert table.column("building_id").to_pylist() == ["b01", "b02"]
    sensors = json.loads(table.column("sensors_json")[0].as_py())
    assert {s["sensor_id"]: s["offset"] for s in sensors} == {"b01-elec": 0.0, "b01-temp": -0.4}
    assert BuildingRegistry.from_arrow(table) == registry
