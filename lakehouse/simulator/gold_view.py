"""Gold-shaped frames from the simulator, with its ground truth beside them: one world for tests,
benchmarks and the demo.

The simulator's readings go through the same per-building cores the pipeline runs (reading checks,
silver hours: `curation.readings_to_hourly`; gold features: `gold.hourly_to_features`), in memory,
without Delta or Great Expectations, so a frame here is what `gold.features` would hold for that
portfolio. The truth travels with it: the simulator's hourly truth (`truth_hourly`: energy, HVAC share,
occupancy as simulated), the fault and drift records (`ground_truth`), the registry.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any, Sequence

import pandas as pd


# Worlds up to this many building-hours are kept per process (tests ask for the same few again and again);
# larger ones (benchmarks) are curated afresh each time.
CACHE_MAX_BUILDING_HOURS = 50_000


@dataclass
class SimulatedGold:
    features: pd.DataFrame  # gold.features columns, one row per building and hour
    truth_hourly: pd.DataFrame  # the simulator's hourly truth per building
    ground_truth: pd.DataFrame  # injected faults and drift events
    registry: Any  # lakehouse.buildings.BuildingRegistry
    timezones: dict[str, str]


def simulated_gold(
    n_buildings: int,
    start: str | pd.Timestamp,
    end: str | pd.Timestamp,
    *,
    seed: int = 42,
    faults: Any | None = None,
    drift: Sequence[Any] | None = None,
    interval_minutes: int = 60,
    building_ids: Sequence[str] | None = None,
    settings: Any | None = None,
) -> SimulatedGold:
    """Simulate the portfolio over [start, end) and curate it to gold in memory.

    `interval_minutes=60` (one reading an hour) keeps the view cheap for tests; the hourly silver values
    are the same sums either way. Hours before the features' lag margin carry NaN lags, as in gold.

    With the process's own settings the curated world is cached per (size, span, seed, faults, drift,
    buildings): the many tests and benchmarks that ask for the same small portfolio simulate it once
    per process. Each call gets its own copies of the frames, so a caller may edit them.
    """
    hours = (pd.Timestamp(_utc_iso(end)) - pd.Timestamp(_utc_iso(start))) / pd.Timedelta(hours=1)
    big = hours * (len(building_ids) if building_ids is not None else n_buildings) > CACHE_MAX_BUILDING_HOURS
    # A caller's settings may curate differently, and a benchmark's portfolio would only fill memory.
    if settings is not None or big:
        return _curate(n_buildings, start, end, seed, faults, list(drift or []), interval_minutes, building_ids, settings)
    key = (
        int(n_buildings), _utc_iso(start), _utc_iso(end), int(seed),
        faults.model_dump_json() if faults is not None else None,
        tuple(e.model_dump_json() for e in drift or []),
        int(interval_minutes), tuple(building_ids) if building_ids is not None else None,
    )
    world = _cached(key, _settings_fingerprint())
    return replace(
        world,
        features=world.features.copy(),
        truth_hourly=world.truth_hourly.copy(),
        ground_truth=world.ground_truth.copy(),
        timezones=dict(world.timezones),
    )


def _utc_iso(value: str | pd.Timestamp) -> str:
    ts = pd.Timestamp(value)
    return (ts.tz_localize("UTC") if ts.tz is None else ts.tz_convert("UTC")).isoformat()


def _settings_fingerprint() -> str:
    """The curation and feature settings the cached world was made with (a test may change them)."""
    from wattflow.settings import get_settings

    settings = get_settings()
    return settings.model_dump_json()


@lru_cache(maxsize=16)
def _cached(key: tuple, settings_fingerprint: str) -> SimulatedGold:
    from pydantic import TypeAdapter

    from lakehouse.simulator.config import DriftEvent, FaultConfig

    n_buildings, start, end, seed, faults, drift, interval_minutes, building_ids = key
    events = [TypeAdapter(DriftEvent).validate_json(e) for e in drift]
    faults = FaultConfig.model_validate_json(faults) if faults is not None else None
    return _curate(n_buildings, start, end, seed, faults, events, interval_minutes, building_ids, None)


def _curate(n_buildings, start, end, seed, faults, drift, interval_minutes, building_ids, settings) -> SimulatedGold:
    from lakehouse.curation import readings_to_hourly
    from lakehouse.gold import hourly_to_features
    from lakehouse.simulator.portfolio import simulate_portfolio
    from wattflow.settings import get_settings

    settings = settings or get_settings()
    portfolio = simulate_portfolio(
        n_buildings, start, end, seed=seed, interval_minutes=interval_minutes, faults=faults, drift=list(drift or []),
        forecast_issue_hour_utc=settings.simulator.weather_forecast_issue_hour_utc, building_ids=building_ids,
    )
    landed = pd.Timestamp(end, tz="UTC") if pd.Timestamp(end).tz is None else pd.Timestamp(end).tz_convert("UTC")
    readings = portfolio.readings.to_pandas().assign(ingested_at=landed)
    weather = portfolio.weather.to_pandas().assign(ingested_at=landed)
    hourly, _, _ = readings_to_hourly(readings, portfolio.registry, settings, weather=weather, validate=False,
                                      start=portfolio.start, end=portfolio.end)
    from lakehouse.schemas import FEATURES

    features = hourly_to_features(hourly, portfolio.registry, settings)
    # As the table holds it: the contract's columns in its order, with the `date` partition column.
    features["date"] = pd.to_datetime(features["ts"], utc=True).dt.date
    features = features[list(FEATURES.schema.names)]
    return SimulatedGold(
        features=features.sort_values(["building_id", "ts"]).reset_index(drop=True),
        truth_hourly=portfolio.truth_hourly.to_pandas(),
        ground_truth=portfolio.ground_truth.to_pandas(),
        registry=portfolio.registry,
        timezones={b.building_id: b.timezone for b in portfolio.registry.buildings},
    )
