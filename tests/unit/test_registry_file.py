"""The registry file: validation errors carry file, line and field; site values are inherited; writes keep comments."""

from __future__ import annotations

from pathlib import Path

import pytest

from lakehouse.registry_file import (
    RegistryFileError,
    building_for_timezone,
    dump_registry,
    load_registry,
    parse_registry,
    upsert_building,
    zone_location,
)

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "config" / "buildings.example.yaml"

GOOD = """\
sites:
  - site_id: s1
    timezone: Europe/Brussels
    country: BE
    latitude: 50.8
    longitude: 4.3
    grid_emission_factor_kg_per_kwh: 0.17
    tariff_per_kwh: 0.25
    currency: EUR
    buildings:
      - building_id: b1
        use_type: office
        floor_area_m2: 1000
        sensors:
          - {sensor_id: m1, metric: energy}
      - building_id: b2
        use_type: school
        floor_area_m2: 500
        tariff_per_kwh: 0.19
"""


def _issues(text: str) -> list[tuple[int, str, str]]:
    with pytest.raises(RegistryFileError) as err:
        parse_registry(text, "reg.yaml")
    return [(i.line, i.field, i.message) for i in err.value.issues]


def test_example_file_loads_and_sites_are_inherited() -> None:
    registry = load_registry(EXAMPLE)
    assert len(registry) == 4 and registry.site_ids() == ["brussels-north", "uci-stambruges", "austin-east"]
    school = registry.get("bxl-school")
    assert (school.timezone, school.country, school.tariff_per_kwh) == ("Europe/Brussels", "BE", 0.21)
    assert registry.get("bxl-hq").tariff_per_kwh == 0.24
    assert registry.sensor("bxl-school", "register").scale == 0.001
    assert registry.sensor("atx-mall", "zone_temp").unit == "degC"  # the metric's unit by default


def test_errors_name_file_line_and_field() -> None:
    bad = GOOD.replace("floor_area_m2: 500", "floor_area_m2: -5").replace("metric: energy", "metric: power")
    issues = _issues(bad)
    assert (15, "sites[0].buildings[0].sensors[0].metric", issues[0][2]) == issues[0]
    assert "'energy'" in issues[0][2] and "'power'" in issues[0][2]
    assert issues[1][:2] == (18, "sites[0].buildings[1].floor_area_m2")
    assert "greater than 0" in issues[1][2] and "-5" in issues[1][2]
    with pytest.raises(RegistryFileError, match=r"reg\.yaml:18: sites\[0\]\.buildings\[1\]\.floor_area_m2"):
        parse_registry(bad, "reg.yaml")


def test_inherited_value_errors_point_at_the_site_line() -> None:
    issues = _issues(GOOD.replace("timezone: Europe/Brussels", "timezone: Europe/Brussel"))
    # Both buildings inherit the bad zone: each error points at line 3, where the site sets it.
    assert [(line, field) for line, field, _ in issues] == [(3, "sites[0].timezone"), (3, "sites[0].timezone")]
    assert "unknown IANA timezone 'Europe/Brussel'" in issues[0][2]


def test_unknown_fields_missing_fields_duplicates_and_syntax() -> None:
    issues = _issues(GOOD.replace("        use_type: school\n", "        use_typ: school\n"))
    assert (17, "sites[0].buildings[1].use_typ") == issues[0][:2] and "unknown field 'use_typ'" in issues[0][2]
    assert issues[1][:2] == (16, "sites[0].buildings[1].use_type") and "Field required" in issues[1][2]
    dup = _issues(GOOD.replace("building_id: b2", "building_id: b1"))
    assert dup == [(16, "sites[0].buildings[1].building_id", "building_id 'b1' already defined on line 11")]
    country = _issues(GOOD.replace("country: BE", "country: XX"))
    assert country[0][:2] == (4, "sites[0].country")
    syntax = _issues(GOOD.replace("      - building_id: b2", "      - building_id: [b2"))
    assert syntax[0][1] == "(syntax)" and syntax[0][0] >= 16


def test_upsert_appends_and_keeps_comments(tmp_path: Path) -> None:
    path = tmp_path / "buildings.yaml"
    path.write_text("# our portfolio, edited by hand\n" + GOOD)
    new, guessed = building_for_timezone("b3", "America/New_York", floor_area_m2=800.0)
    assert (new.country, round(new.latitude, 2), round(new.longitude, 2)) == ("US", 40.71, -74.01)
    assert set(guessed) >= {"country", "latitude", "longitude", "currency"} and "floor_area_m2" not in guessed
    registry = upsert_building(new, path)
    text = path.read_text()
    assert text.startswith("# our portfolio, edited by hand\n") and len(registry) == 3
    assert load_registry(path).get("b3").timezone == "America/New_York"
    # Replacing an existing building rewrites the file, and the result still loads to the same registry.
    changed = registry.get("b1").model_copy(update={"floor_area_m2": 1200.0})
    after = upsert_building(changed, path)
    assert load_registry(path) == after and after.get("b1").floor_area_m2 == 1200.0
    assert parse_registry(dump_registry(after)) == after


def test_zone_location_and_absent_file(tmp_path: Path) -> None:
    assert zone_location("Europe/Brussels")[0] == "BE"
    assert len(load_registry(tmp_path / "missing.yaml")) == 0
    with pytest.raises(FileNotFoundError):
        load_registry(tmp_path / "missing.yaml", missing_ok=False)
