"""Land a simulated portfolio like any source would: registry, readings by delivery batch, weather."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Callable

from lakehouse.bronze import LandingResult, land_readings, land_weather
from lakehouse.engine import TableEngine, WriteResult
from lakehouse.schemas import BUILDINGS
from lakehouse.simulator.portfolio import SimulatedPortfolio

SOURCE = "simulator"


@dataclass
class PortfolioLanding:
    buildings: WriteResult
    readings: list[tuple[str, LandingResult]] = field(default_factory=list)  # (batch_id, result) per delivery
    weather: LandingResult | None = None

    @property
    def readings_landed(self) -> int:
        return sum(r.landed for _, r in self.readings)

    @property
    def readings_quarantined(self) -> int:
        return sum(r.quarantined for _, r in self.readings)


def batch_prefix(portfolio: SimulatedPortfolio) -> str:
    """Batch ids follow from what was simulated, so re-landing the same run is recognisable."""
    return f"sim-s{portfolio.seed}-{portfolio.start:%Y%m%dT%H%M}-{portfolio.end:%Y%m%dT%H%M}"


def land_portfolio(
    portfolio: SimulatedPortfolio,
    engine: TableEngine,
    *,
    source: str = SOURCE,
    now: datetime | None = None,
    on_step: Callable[[str], None] | None = None,
) -> PortfolioLanding:
    """Write the registry to `reference.buildings`, then readings (on-time batch first, late ones after)
    and weather through the bronze landing functions. Re-running it changes nothing."""
    step = on_step or (lambda _: None)
    prefix = batch_prefix(portfolio)
    result = PortfolioLanding(buildings=engine.upsert(BUILDINGS, portfolio.registry.to_arrow()))
    step("reference.buildings")
    for delivery, batch in portfolio.deliveries():
        batch_id = f"{prefix}-d{delivery}"
        landed = land_readings(batch, source=source, registry=portfolio.registry, engine=engine, batch_id=batch_id, now=now)
        result.readings.append((batch_id, landed))
        step(f"bronze.sensor_readings delivery {delivery}")
    result.weather = land_weather(portfolio.weather, source=source, engine=engine, batch_id=f"{prefix}-weather", now=now)
    step("bronze.weather")
    return result
