"""The work behind `wattflow ingest simulate` and `make demo`, callable without the CLI."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from wattflow.log import get_logger
from wattflow.progress import progress

log = get_logger(__name__)


@dataclass
class TableRow:
    table: str
    version: int | None
    total_rows: int
    landed: int  # passed validation in this run
    written: int  # inserted or updated in this run (0 on a re-run)
    quarantined: int


@dataclass
class SimulationSummary:
    rows: list[TableRow]
    reasons: dict[str, int] = field(default_factory=dict)
    ground_truth_counts: dict[str, int] = field(default_factory=dict)
    simulate_s: float = 0.0
    land_s: float = 0.0


def run_simulation(
    *,
    buildings: int,
    start: str,
    end: str,
    faults: bool = False,
    drift: list[str] | None = None,
    seed: int | None = None,
    interval_minutes: int | None = None,
    ground_truth_path: str | None = None,
    settings: Any | None = None,
) -> SimulationSummary:
    from lakehouse.engine import get_engine
    from lakehouse.schemas import BUILDINGS, QUARANTINE_READINGS, QUARANTINE_WEATHER, SENSOR_READINGS, WEATHER
    from lakehouse.simulator import FaultConfig, parse_drift, simulate_portfolio
    from lakehouse.simulator.landing import land_portfolio
    from wattflow.settings import get_settings

    settings = settings or get_settings()
    events = [parse_drift(d) for d in drift or []]
    engine = get_engine(settings)
    with progress("simulate and land", total=5) as advance:
        t0 = time.perf_counter()
        portfolio = simulate_portfolio(
            buildings,
            start,
            end,
            seed=settings.simulator.seed if seed is None else seed,
            interval_minutes=interval_minutes or settings.simulator.interval_minutes,
            faults=FaultConfig() if faults else None,
            drift=events,
            forecast_issue_hour_utc=settings.simulator.weather_forecast_issue_hour_utc,
        )
        simulate_s = time.perf_counter() - t0
        advance(1, "landing")
        log.info("simulated", buildings=buildings, readings=portfolio.readings.num_rows, seconds=round(simulate_s, 2))
        t1 = time.perf_counter()
        landing = land_portfolio(portfolio, engine, on_step=lambda what: advance(1, what))
        land_s = time.perf_counter() - t1
    if ground_truth_path:
        import pyarrow.parquet as pq

        pq.write_table(portfolio.ground_truth, ground_truth_path)

    def total(contract) -> int:
        return engine.read(contract, columns=[contract.keys[0]]).num_rows if engine.exists(contract) else 0

    reasons: Counter[str] = Counter()
    for _, r in landing.readings:
        reasons.update(r.reasons)
    if landing.weather:
        reasons.update(landing.weather.reasons)
    def written(*results) -> int:
        return sum(r.rows_inserted + r.rows_updated for r in results if r is not None)

    weather = landing.weather
    rows = [
        TableRow(BUILDINGS.qualified_name, engine.version(BUILDINGS), total(BUILDINGS), len(portfolio.registry), written(landing.buildings), 0),
        TableRow(
            SENSOR_READINGS.qualified_name, engine.version(SENSOR_READINGS), total(SENSOR_READINGS),
            landing.readings_landed, written(*(r.readings for _, r in landing.readings)), 0,
        ),
        TableRow(
            QUARANTINE_READINGS.qualified_name, engine.version(QUARANTINE_READINGS), total(QUARANTINE_READINGS),
            0, written(*(r.quarantine for _, r in landing.readings)), landing.readings_quarantined,
        ),
        TableRow(WEATHER.qualified_name, engine.version(WEATHER), total(WEATHER), weather.landed if weather else 0, written(weather and weather.readings), 0),
        TableRow(
            QUARANTINE_WEATHER.qualified_name, engine.version(QUARANTINE_WEATHER), total(QUARANTINE_WEATHER),
            0, written(weather and weather.quarantine), weather.quarantined if weather else 0,
        ),
    ]
    counts = Counter(portfolio.ground_truth.column("kind").to_pylist())
    return SimulationSummary(rows, dict(reasons), dict(counts), simulate_s, land_s)
