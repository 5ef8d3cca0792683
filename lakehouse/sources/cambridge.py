"""The Cambridge University Estates building electricity archive (2016-2019) as bronze records.

Layout (CityLearn's, see data/cambridge-estates/README.md): one `UCam_Building_<id>.csv` per building,
one row per hour in the order of `timestamps.csv` (UTC), load in `Equipment Electric Power [kWh]`;
`weather.csv` with observed temperature, relative humidity and solar radiation on the same rows. Traps
this importer handles:
- rows carry no timestamp of their own: they are matched to `timestamps.csv` by position, and a file
  whose row count differs is refused by name;
- upstream replaced missing or invalid readings with 0, so a 0 is an outage, not zero load: it is not
  landed as a reading (the hour is missing, which silver treats as a gap), and counted in the result;
- the weather file's "Prediction" columns are the observations 6/12/24 h later, not issued forecasts:
  they are never read (using them as day-ahead forecasts would leak the future);
- solar radiation is published as diffuse and direct parts; global horizontal is their sum as published.

The core, `cambridge_records`, is archive in, tables out; `ingest_cambridge` lands them and registers the
buildings, like `wattflow ingest file`.
"""

from __future__ import annotations

import json
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa

from lakehouse.buildings import Building, BuildingRegistry, Sensor

TIMEZONE = "Europe/London"
SITE_ID = "cambridge"
# The University's central site; the archive's weather is the Met Office's Bedford station (~40 km west).
LATITUDE, LONGITUDE = 52.2043, 0.1149
LOAD_COLUMN = "Equipment Electric Power [kWh]"
SENSOR_ID = "electricity"
WEATHER_COLUMNS = {
    "temperature_c": "Outdoor Drybulb Temperature [C]",
    "relative_humidity_pct": "Relative Humidity [%]",
}
SOLAR_PARTS = ("Diffuse Solar Radiation [W/m2]", "Direct Solar Radiation [W/m2]")


class CambridgeArchiveError(ValueError):
    """The archive is not in the layout this importer reads (the message names the file and the field)."""


@dataclass(frozen=True)
class CambridgeRecords:
    registry: BuildingRegistry
    readings: pa.Table  # raw reading records for `land_source_readings`
    weather: pa.Table  # observation records for `land_weather`
    outage_zeros: dict[str, int]  # building -> hours published as 0 (outages), not landed
    carbon_intensity: pd.Series  # kg CO2e per kWh, per UTC hour
    price: pd.Series  # GBP per kWh, per UTC hour


def building_id_for(number: int | str) -> str:
    return f"ucam-{int(number)}"


class _Archive:
    """The zip or an unpacked folder, read by member name."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise CambridgeArchiveError(f"{self.path}: no such file or folder")
        self._zip = zipfile.ZipFile(self.path) if self.path.is_file() else None
        names = self._zip.namelist() if self._zip else [str(p.relative_to(self.path)) for p in self.path.rglob("*.csv")]
        self.members = {Path(n).name: n for n in names if n.endswith((".csv", ".json"))}

    def read_csv(self, name: str, **kwargs: Any) -> pd.DataFrame:
        if name not in self.members:
            raise CambridgeArchiveError(f"{self.path}: {name} is missing (is this the 2016to2019 archive?)")
        if self._zip:
            with self._zip.open(self.members[name]) as fh:
                return pd.read_csv(fh, **kwargs)
        return pd.read_csv(self.path / self.members[name], **kwargs)

    def building_numbers(self) -> list[int]:
        found = [re.fullmatch(r"UCam_Building_(\d+)\.csv", n) for n in self.members]
        return sorted(int(m.group(1)) for m in found if m)


def _column(frame: pd.DataFrame, name: str, file: str) -> pd.Series:
    if name not in frame:
        raise CambridgeArchiveError(f"{file}: column {name!r} is missing; it has {', '.join(frame.columns)}")
    return pd.to_numeric(frame[name], errors="coerce")


def cambridge_records(
    path: str | Path, *, buildings: Sequence[int | str] | None = None,
    start: str | pd.Timestamp | None = None, end: str | pd.Timestamp | None = None,
) -> CambridgeRecords:
    """Readings, weather and registry of the archive's buildings (all, or `buildings` by number or id) in [start, end)."""
    archive = _Archive(path)
    stamps = pd.to_datetime(archive.read_csv("timestamps.csv")["Timestamp (UTC)"], utc=True)
    keep = np.ones(len(stamps), dtype=bool)
    if start is not None:
        keep &= (stamps >= pd.Timestamp(start, tz="UTC")).to_numpy()
    if end is not None:
        keep &= (stamps < pd.Timestamp(end, tz="UTC")).to_numpy()
    ts = pa.array(stamps[keep].dt.as_unit("us"), pa.timestamp("us", tz="UTC"))
    available = archive.building_numbers()
    wanted = available if not buildings else [int(str(b).removeprefix("ucam-")) for b in buildings]
    unknown = sorted(set(wanted) - set(available))
    if unknown:
        raise CambridgeArchiveError(f"--building: {unknown} not in the archive; it has {available}")

    carbon = _column(archive.read_csv("carbon_intensity.csv"), "kg_CO2/kWh", "carbon_intensity.csv")
    price = _column(archive.read_csv("pricing.csv"), "Electricity Pricing [£/kWh]", "pricing.csv")
    for name, series in (("carbon_intensity.csv", carbon), ("pricing.csv", price)):
        if len(series) != len(stamps):
            raise CambridgeArchiveError(f"{name}: {len(series)} rows for {len(stamps)} timestamps")
    grid_factor = float(np.nanmean(carbon[keep])) if keep.any() else float(np.nanmean(carbon))
    tariff = float(np.nanmean(price[keep])) if keep.any() else float(np.nanmean(price))

    n = int(keep.sum())
    blocks, registry_rows, zeros = [], [], {}
    for number in wanted:
        file = f"UCam_Building_{number}.csv"
        load = _column(archive.read_csv(file), LOAD_COLUMN, file)
        if len(load) != len(stamps):
            raise CambridgeArchiveError(f"{file}: {len(load)} rows for {len(stamps)} timestamps in timestamps.csv")
        values = load.to_numpy(dtype=np.float64)[keep]
        outage = values == 0.0
        building_id = building_id_for(number)
        zeros[building_id] = int(outage.sum())
        present = ~outage & np.isfinite(values)
        blocks.append(pa.table({
            "building_id": pa.array([building_id] * int(present.sum()), pa.string()),
            "sensor_id": pa.array([SENSOR_ID] * int(present.sum()), pa.string()),
            "metric": pa.array(["energy"] * int(present.sum()), pa.string()),
            "ts": ts.filter(pa.array(present)),
            "value": pa.array(values[present], pa.float64()),
            "unit": pa.array(["kWh"] * int(present.sum()), pa.string()),
        }))
        registry_rows.append(Building(
            building_id=building_id, name=f"UCam building {number}", site_id=SITE_ID, timezone=TIMEZONE, country="GB",
            use_type="university", floor_area_m2=None, latitude=LATITUDE, longitude=LONGITUDE,
            grid_emission_factor_kg_per_kwh=round(grid_factor, 4), tariff_per_kwh=round(tariff, 4), currency="GBP",
            sensors=[Sensor(sensor_id=SENSOR_ID, metric="energy", unit="kWh")],
        ))

    weather_frame = archive.read_csv("weather.csv")
    if len(weather_frame) != len(stamps):
        raise CambridgeArchiveError(f"weather.csv: {len(weather_frame)} rows for {len(stamps)} timestamps")
    weather_columns: dict[str, Any] = {
        "site_id": pa.array([SITE_ID] * n, pa.string()),
        "kind": pa.array(["observation"] * n, pa.string()),
        "ts": ts,
    }
    for field, column in WEATHER_COLUMNS.items():
        weather_columns[field] = pa.array(_column(weather_frame, column, "weather.csv").to_numpy()[keep], pa.float64())
    solar = sum(_column(weather_frame, c, "weather.csv").to_numpy() for c in SOLAR_PARTS)
    weather_columns["solar_radiation_wm2"] = pa.array(solar[keep], pa.float64())

    return CambridgeRecords(
        registry=BuildingRegistry(buildings=registry_rows),
        readings=pa.concat_tables(blocks) if blocks else pa.table({}),
        weather=pa.table(weather_columns),
        outage_zeros=zeros,
        carbon_intensity=pd.Series(carbon.to_numpy()[keep], index=stamps[keep]),
        price=pd.Series(price.to_numpy()[keep], index=stamps[keep]),
    )


def metadata(path: str | Path) -> dict[str, Any]:
    """The archive's `metadata_ext.json` (building ids, mean loads, timezone)."""
    archive = _Archive(path)
    name = "metadata_ext.json"
    if name not in archive.members:
        raise CambridgeArchiveError(f"{path}: {name} is missing")
    if archive._zip:
        with archive._zip.open(archive.members[name]) as fh:
            return json.load(fh)
    return json.loads((archive.path / archive.members[name]).read_text())


@dataclass(frozen=True)
class CambridgeIngestResult:
    buildings: list[str]
    readings: Any  # LandingResult
    weather: Any  # LandingResult
    outage_zeros: dict[str, int]
    registry_changed: bool


def ingest_cambridge(
    path: str | Path, *, buildings: Sequence[int | str] | None = None, start: str | None = None, end: str | None = None,
    engine: Any | None = None, registry_file: str | Path | None = None, now: Any | None = None,
) -> CambridgeIngestResult:
    """Register the archive's buildings (if new) and land their readings and the site's weather in bronze.

    Idempotent: a second run finds every row already there and leaves the registry file as it is.
    """
    from lakehouse.bronze import land_weather
    from lakehouse.engine import get_engine
    from lakehouse.registry_file import load_registry, mirror_registry, upsert_building
    from lakehouse.sources.screen import land_source_readings

    engine = engine or get_engine()
    records = cambridge_records(path, buildings=buildings, start=start, end=end)
    registry = load_registry(registry_file)
    changed = False
    for building in records.registry:
        if building.building_id not in registry.building_ids():
            registry = upsert_building(building, registry_file)
            changed = True
    mirror_registry(registry, engine)
    source = f"cambridge-estates:{Path(path).name}"
    readings = land_source_readings(records.readings, source=source, registry=registry, engine=engine, now=now)
    weather = land_weather(records.weather, source=source, engine=engine, now=now)
    return CambridgeIngestResult(records.registry.building_ids(), readings, weather, records.outage_zeros, changed)
