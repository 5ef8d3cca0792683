"""What the simulator is asked to inject: sensor faults and real-world drift."""

from __future__ import annotations

from datetime import date, datetime, timezone
from typing import Annotated, Literal, Union

from pydantic import BaseModel, Field, field_validator

FAULT_KINDS: tuple[str, ...] = (
    "gap",
    "spike",
    "stuck",
    "duplicate",
    "late",
    "dst",
    "unit_mixup",
    "fahrenheit",
    "rollover",
    "reset",
    "future_ts",
    "after_hours_waste",
)
DRIFT_KINDS: tuple[str, ...] = ("retrofit", "heat_wave", "occupancy_change")


class FaultConfig(BaseModel):
    """Which faults to inject and how many. Per-building counts for common faults, portfolio counts for rare ones.

    Every injection is written to the ground truth with its exact sensor and time span; injections on
    one sensor never overlap, so each can be scored on its own.
    """

    gap: bool = True
    gaps_per_building: int = Field(2, ge=0)
    gap_hours: tuple[float, float] = (1.0, 12.0)

    spike: bool = True
    spikes_per_building: int = Field(3, ge=0)
    spike_factor: tuple[float, float] = (4.0, 10.0)  # energy and CO2 are multiplied by this
    spike_delta_c: tuple[float, float] = (12.0, 25.0)  # indoor temperature jumps by this

    stuck: bool = True
    stuck_per_building: int = Field(1, ge=0)
    stuck_hours: tuple[float, float] = (4.0, 24.0)

    duplicate: bool = True
    duplicates_per_building: int = Field(4, ge=0)
    duplicate_changed_share: float = Field(0.5, ge=0, le=1)  # re-sent with a different value
    duplicate_value_change: float = 0.1  # relative change of a re-sent value

    late: bool = True
    late_per_building: int = Field(1, ge=0)
    late_hours: tuple[float, float] = (1.0, 6.0)

    dst: bool = True
    dst_per_building: int = Field(1, ge=0)  # at most this many DST switches per building get the artefact
    dst_window_hours: float = 6.0

    unit_mixup: bool = True
    unit_mixup_count: int = Field(1, ge=0)
    unit_mixup_hours: tuple[float, float] = (12.0, 72.0)

    fahrenheit: bool = True
    fahrenheit_count: int = Field(1, ge=0)
    fahrenheit_hours: tuple[float, float] = (12.0, 72.0)

    rollover: bool = True
    rollover_count: int = Field(1, ge=0)
    register_capacity_kwh: float = 1_000_000.0  # a six-digit register wraps to zero here

    reset: bool = True
    reset_count: int = Field(1, ge=0)

    future_ts: bool = True
    future_ts_count: int = Field(3, ge=0)
    future_days: tuple[float, float] = (2.0, 30.0)  # stamped this long after the end of the run

    after_hours_waste: bool = True
    after_hours_waste_count: int = Field(1, ge=0)
    waste_days: tuple[int, int] = (3, 10)
    waste_w_m2: tuple[float, float] = (3.0, 8.0)  # extra load while the building should be idle
    waste_night_start_hour: int = 22
    waste_night_end_hour: int = 6

    @classmethod
    def none(cls) -> "FaultConfig":
        return cls(**{k: False for k in FAULT_KINDS})

    @classmethod
    def only(cls, *kinds: str) -> "FaultConfig":
        unknown = [k for k in kinds if k not in FAULT_KINDS]
        if unknown:
            raise ValueError(f"unknown fault kind(s) {unknown}; known: {', '.join(FAULT_KINDS)}")
        return cls(**{k: k in kinds for k in FAULT_KINDS})

    def enabled(self) -> list[str]:
        return [k for k in FAULT_KINDS if getattr(self, k)]


def _utc(value: datetime | date | str) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day)
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


class _Drift(BaseModel):
    start: datetime

    @field_validator("start", "end", mode="before", check_fields=False)
    @classmethod
    def _as_utc(cls, v):
        return _utc(v)


class Retrofit(_Drift):
    """From `start`, the building's HVAC load is cut by `hvac_reduction` (0.25 = a quarter less)."""

    kind: Literal["retrofit"] = "retrofit"
    building_id: str
    hvac_reduction: float = Field(0.25, gt=0, lt=1)


class HeatWave(_Drift):
    """Between `start` and `end`, the site's outdoor temperature is `delta_c` higher (forecasts follow)."""

    kind: Literal["heat_wave"] = "heat_wave"
    site_id: str
    end: datetime
    delta_c: float = 6.0


class OccupancyChange(_Drift):
    """From `start`, the building's occupancy is multiplied by `factor` (0.6 = hybrid work)."""

    kind: Literal["occupancy_change"] = "occupancy_change"
    building_id: str
    factor: float = Field(0.6, gt=0)


DriftEvent = Annotated[Union[Retrofit, HeatWave, OccupancyChange], Field(discriminator="kind")]


def retrofit(building_id: str, start: datetime | date | str, hvac_reduction: float = 0.25) -> Retrofit:
    return Retrofit(building_id=building_id, start=start, hvac_reduction=hvac_reduction)


def heat_wave(site_id: str, start: datetime | date | str, end: datetime | date | str, delta_c: float = 6.0) -> HeatWave:
    return HeatWave(site_id=site_id, start=start, end=end, delta_c=delta_c)


def occupancy_change(building_id: str, start: datetime | date | str, factor: float = 0.6) -> OccupancyChange:
    return OccupancyChange(building_id=building_id, start=start, factor=factor)


def parse_drift(spec: str) -> Retrofit | HeatWave | OccupancyChange:
    """CLI form: ``retrofit:b01:2024-03-01:0.25``, ``heat_wave:berlin:2024-07-01:2024-07-10:6``,
    ``occupancy_change:b02:2024-04-01:0.6``."""
    parts = spec.split(":")
    kind = parts[0]
    try:
        if kind == "retrofit" and len(parts) in (3, 4):
            return retrofit(parts[1], parts[2], *(float(p) for p in parts[3:]))
        if kind == "heat_wave" and len(parts) in (4, 5):
            return heat_wave(parts[1], parts[2], parts[3], *(float(p) for p in parts[4:]))
        if kind == "occupancy_change" and len(parts) in (3, 4):
            return occupancy_change(parts[1], parts[2], *(float(p) for p in parts[3:]))
    except ValueError as err:
        raise ValueError(f"drift {spec!r}: {err}") from err
    raise ValueError(
        f"drift {spec!r}: expected retrofit:BUILDING:DATE[:SHARE], heat_wave:SITE:FROM:TO[:DELTA_C] "
        f"or occupancy_change:BUILDING:DATE[:FACTOR]"
    )
