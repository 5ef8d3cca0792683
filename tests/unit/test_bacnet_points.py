"""The BACnet poller's functional core: registry mapping, units, single-precision values, slots."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lakehouse.buildings import BacnetPoint, Building, BuildingRegistry, Sensor
from lakehouse.registry_file import RegistryFileError, parse_registry
from lakehouse.sources.bacnet import (
    Point,
    ReadError,
    reading_unit,
    readings_from_answers,
    real32,
    registry_points,
    slot_start,
)

TS = datetime(2024, 3, 4, 12, 15, tzinfo=timezone.utc)

REGISTRY = """\
sites:
  - site_id: s
    timezone: Europe/Brussels
    country: BE
    latitude: 50.8
    longitude: 4.3
    grid_emission_factor_kg_per_kwh: 0.1
    tariff_per_kwh: 0.2
    currency: EUR
    use_type: office
    buildings:
      - building_id: b
        sensors:
          - {sensor_id: m, metric: energy, bacnet: {address: "10.0.0.5", device_instance: 5, object: "analog-input, 3"}}
          - {sensor_id: t, metric: indoor_temperature, bacnet: {address: "10.0.0.5:47809", object: "analog-value,1", property: presentValue}}
          - {sensor_id: plain, metric: co2}
"""


def _point(metric="energy", unit="kWh", obj="analog-input,3") -> Point:
    return Point("b", "m", metric, unit, "10.0.0.5:47808", 5, obj, "present-value")


def test_registry_maps_sensors_to_device_objects() -> None:
    points = registry_points(parse_registry(REGISTRY))
    assert [(p.sensor_id, p.address, p.device_instance, p.object, p.property) for p in points] == [
        ("m", "10.0.0.5:47808", 5, "analog-input,3", "present-value"),
        ("t", "10.0.0.5:47809", None, "analog-value,1", "present-value"),
    ]


def test_registry_names_the_line_and_field_of_a_bad_bacnet_mapping() -> None:
    bad = REGISTRY.replace('object: "analog-input, 3"', 'object: "analog-inptu,3"').replace("property: presentValue", "adress: x")
    with pytest.raises(RegistryFileError) as err:
        parse_registry(bad, "buildings.yaml")
    text = str(err.value)
    assert "buildings.yaml:14: sites[0].buildings[0].sensors[0].bacnet: Value error, object 'analog-inptu,3'" in text
    assert "buildings.yaml:15: sites[0].buildings[0].sensors[1].bacnet.adress: Extra inputs are not permitted" in text


def test_a_sensor_without_bacnet_serialises_as_before() -> None:
    sensor = Sensor(sensor_id="m", metric="energy")
    building = Building(building_id="b", name="b", site_id="s", timezone="UTC", country="BE", use_type="office",
                        latitude=0, longitude=0, grid_emission_factor_kg_per_kwh=0, tariff_per_kwh=0, currency="EUR",
                        sensors=[sensor, sensor.model_copy(update={"sensor_id": "n", "bacnet": BacnetPoint(address="h", object="analog-input,1")})])
    sensors_json = BuildingRegistry(buildings=[building]).to_arrow().column("sensors_json")[0].as_py()
    assert sensors_json.startswith('[{"metric": "energy", "offset": 0.0, "scale": 1.0, "sensor_id": "m", "unit": "kWh"}, ')
    assert BuildingRegistry.from_arrow(BuildingRegistry(buildings=[building]).to_arrow()) == BuildingRegistry(buildings=[building])


@pytest.mark.parametrize(
    ("bacnet_units", "sensor_unit", "sent", "fits"),
    [
        ("kilowatt-hours", "kWh", "kWh", True),
        ("watt-hours", "kWh", "Wh", True),  # the shared screen converts
        ("degrees-fahrenheit", "degC", "degF", True),
        ("no-units", "people", "people", True),
        ("no-units", "ppm", "no-units", False),
        ("percent", "ppm", "%", False),
        ("kilowatts", "kWh", "kilowatts", False),  # power is not energy
    ],
)
def test_units_are_mapped_and_checked(bacnet_units: str, sensor_unit: str, sent: str, fits: bool) -> None:
    assert reading_unit(bacnet_units, sensor_unit) == (sent, fits)


def test_answers_become_readings_and_problems_name_field_value_and_remedy() -> None:
    points = [_point(), _point("co2", "ppm", "analog-input,4"), _point("indoor_temperature", "degC", "analog-input,5")]
    answers = {
        ("analog-input,3", "present-value"): 12.5, ("analog-input,3", "units"): "kilowatt-hours",
        ("analog-input,4", "present-value"): 4.0, ("analog-input,4", "units"): "percent",
        ("analog-input,5", "present-value"): ReadError("object: unknown-object"),
        ("analog-input,5", "units"): ReadError("object: unknown-object"),
    }
    records, problems = readings_from_answers(points, answers, TS)
    assert records == [
        {"building_id": "b", "sensor_id": "m", "metric": "energy", "ts": TS, "value": 12.5, "unit": "kWh"},
        {"building_id": "b", "sensor_id": "m", "metric": "co2", "ts": TS, "value": 4.0, "unit": "%"},
    ]
    assert [(p.object, p.field, p.value) for p in problems] == [
        ("analog-input,4", "units", "percent"), ("analog-input,5", "present-value", "object: unknown-object"),
    ]
    assert "field 'units'" in problems[0].message and "Remedy" in problems[0].message
    assert "check the object in the registry's bacnet mapping" in problems[1].message


@given(st.floats(width=32, allow_nan=False, allow_infinity=False))
def test_real32_is_the_same_single_precision_number(value: float) -> None:
    got = real32(float(np.float32(value)))
    assert np.float32(got) == np.float32(value)
    assert float(f"{got:.9g}") == got  # at most the 9 significant digits a float32 holds, not float64's 17


@given(st.integers(min_value=0, max_value=2**40), st.sampled_from([0.5, 1.0, 15.0, 60.0, 900.0]))
def test_slot_start_is_on_the_grid_and_holds_now(ms: int, interval: float) -> None:
    now = datetime.fromtimestamp(1.7e9 + ms / 1000, tz=timezone.utc)
    slot = slot_start(now, interval)
    assert slot <= now and (now - slot).total_seconds() < interval
    assert round(slot.timestamp() * 1e6) % round(interval * 1e6) == 0


_ANSWER = st.one_of(
    st.floats(), st.integers(), st.booleans(), st.none(), st.text(max_size=8),
    st.builds(ReadError, st.text(max_size=12)),
)
_UNITS = st.one_of(st.sampled_from(["kilowatt-hours", "watt-hours", "percent", "no-units", "kilowatts"]), st.none(),
                   st.builds(ReadError, st.just("property: unknown-property")))


@given(st.lists(st.tuples(_ANSWER, _UNITS), min_size=1, max_size=6))
def test_any_answer_gives_a_reading_or_a_problem_never_an_exception(answers) -> None:
    points = [_point(obj=f"analog-input,{i}") for i in range(len(answers))]
    table = {}
    for i, (value, units) in enumerate(answers):
        table[(f"analog-input,{i}", "present-value")] = value
        table[(f"analog-input,{i}", "units")] = units
    records, problems = readings_from_answers(points, table, TS)
    for i, (value, units) in enumerate(answers):
        numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
        flagged = {p.field for p in problems if p.object == f"analog-input,{i}"}
        if not numeric:
            assert "present-value" in flagged  # no reading without a number, and the reason is given
    assert len(records) == sum(isinstance(v, (int, float)) and not isinstance(v, bool) for v, _ in answers)
    assert all(isinstance(r["value"], float) and r["ts"] == TS for r in records)
    bad_units = sum(
        1 for v, u in answers
        if isinstance(v, (int, float)) and not isinstance(v, bool) and isinstance(u, str) and u in ("percent", "no-units", "kilowatts")
    )
    assert sum(p.field == "units" for p in problems) == bad_units
