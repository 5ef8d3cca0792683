"""The building and sensor metadata model. Loading it from a file lives in `lakehouse.registry_file`."""

from __future__ import annotations

import json
from typing import Literal

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, model_validator

# The metric vocabulary every source speaks. Units are what a reading of that metric is expressed in.
Metric = Literal["energy", "energy_cumulative", "indoor_temperature", "indoor_humidity", "occupancy", "co2"]
METRIC_UNITS: dict[str, str] = {
    "energy": "kWh",  # per interval, from an interval meter
    "energy_cumulative": "kWh",  # register reading of a cumulative meter
    "indoor_temperature": "degC",
    "indoor_humidity": "%",
    "occupancy": "people",
    "co2": "ppm",
}
METRICS: tuple[str, ...] = tuple(METRIC_UNITS)


# BACnet object types whose present-value is a reading (analog and the integer-valued counters).
BACNET_OBJECT_TYPES = ("analog-input", "analog-value", "analog-output", "accumulator", "pulse-converter",
                       "integer-value", "positive-integer-value", "large-analog-value")


class BacnetPoint(BaseModel):
    """Where a sensor lives in a building management system: a BACnet/IP device and one of its objects.

    ``address`` is the device's BACnet/IP address (``host`` or ``host:port``, port 47808 when left out);
    ``device_instance`` names the device in reports; ``object`` is ``type,instance`` (``analog-input,3``);
    the property read is ``present-value`` unless said, and units come from the object's ``units``.
    """

    model_config = ConfigDict(extra="forbid")  # a misspelt key in the registry file is an error, not ignored

    address: str = Field(min_length=1)
    device_instance: int | None = Field(default=None, ge=0, le=4194302)
    object: str
    property: str = "present-value"

    @model_validator(mode="after")
    def _object_identifier(self) -> "BacnetPoint":
        kind, sep, instance = self.object.partition(",")
        if not sep or not instance.strip().isdigit() or kind.strip() not in BACNET_OBJECT_TYPES:
            raise ValueError(
                f"object {self.object!r}: expected TYPE,INSTANCE with TYPE one of {', '.join(BACNET_OBJECT_TYPES)} "
                "(e.g. 'analog-input,3')"
            )
        self.object = f"{kind.strip()},{int(instance)}"
        return self


class Sensor(BaseModel):
    """One sensor of a building. A reading's calibrated value is ``raw * scale + offset``."""

    sensor_id: str = Field(min_length=1)
    metric: Metric
    unit: str = ""
    offset: float = 0.0
    scale: float = 1.0
    bacnet: BacnetPoint | None = None  # polled by `wattflow ingest bacnet` when set

    @model_validator(mode="after")
    def _default_unit(self) -> "Sensor":
        if not self.unit:
            self.unit = METRIC_UNITS[self.metric]
        return self


class Building(BaseModel):
    building_id: str = Field(min_length=1)
    name: str
    site_id: str
    timezone: str
    country: str  # ISO 3166-1 alpha-2, for public holidays
    use_type: str  # office, retail, school, hospital, residential, ...
    # None when unknown: plausibility then comes from the meter's own history, never from a guessed area.
    floor_area_m2: float | None = Field(default=None, gt=0)
    latitude: float = Field(ge=-90, le=90)
    longitude: float = Field(ge=-180, le=180)
    grid_emission_factor_kg_per_kwh: float = Field(ge=0)
    tariff_per_kwh: float = Field(ge=0)
    currency: str
    sensors: list[Sensor] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_sensor_ids(self) -> "Building":
        seen: set[str] = set()
        for s in self.sensors:
            if s.sensor_id in seen:
                raise ValueError(f"building {self.building_id!r}: sensor_id {s.sensor_id!r} appears twice")
            seen.add(s.sensor_id)
        return self

    def sensor(self, sensor_id: str) -> Sensor | None:
        return next((s for s in self.sensors if s.sensor_id == sensor_id), None)

    def sensors_for(self, metric: str) -> list[Sensor]:
        return [s for s in self.sensors if s.metric == metric]


class BuildingRegistry(BaseModel):
    buildings: list[Building] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_building_ids(self) -> "BuildingRegistry":
        seen: set[str] = set()
        for b in self.buildings:
            if b.building_id in seen:
                raise ValueError(f"building_id {b.building_id!r} appears twice in the registry")
            seen.add(b.building_id)
        return self

    def __len__(self) -> int:
        return len(self.buildings)

    def __iter__(self):  # type: ignore[override]
        return iter(self.buildings)

    def get(self, building_id: str) -> Building:
        for b in self.buildings:
            if b.building_id == building_id:
                return b
        raise KeyError(f"unknown building_id {building_id!r}; known: {', '.join(self.building_ids()) or '(none)'}")

    def sensor(self, building_id: str, sensor_id: str) -> Sensor | None:
        try:
            return self.get(building_id).sensor(sensor_id)
        except KeyError:
            return None

    def building_ids(self) -> list[str]:
        return [b.building_id for b in self.buildings]

    def site_ids(self) -> list[str]:
        return list(dict.fromkeys(b.site_id for b in self.buildings))

    def buildings_at(self, site_id: str) -> list[Building]:
        return [b for b in self.buildings if b.site_id == site_id]

    def to_arrow(self) -> pa.Table:
        """The registry in the `reference.buildings` contract, sensors as a JSON list."""
        from lakehouse.schemas import BUILDINGS

        rows = []
        for b in self.buildings:
            row = b.model_dump(exclude={"sensors"})
            # exclude_none: a sensor without a BACnet point serialises as it did before the field existed.
            row["sensors_json"] = json.dumps([s.model_dump(exclude_none=True) for s in b.sensors], sort_keys=True)
            rows.append(row)
        return pa.Table.from_pylist(rows, schema=BUILDINGS.schema)

    @classmethod
    def from_arrow(cls, table: pa.Table) -> "BuildingRegistry":
        """Rebuild a registry from a `reference.buildings` table (e.g. read back from the lakehouse)."""
        buildings = []
        for row in table.to_pylist():
            sensors = json.loads(row.pop("sensors_json") or "[]")
            buildings.append(Building(**row, sensors=[Sensor(**s) for s in sensors]))
        return cls(buildings=buildings)
