"""The building simulator: a deterministic portfolio of buildings, a source like any other.

Names are loaded on first use, so that `wattflow --help` (which imports `lakehouse.simulator.commands`)
and DAG parsing stay fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "DRIFT_KINDS": "config",
    "FAULT_KINDS": "config",
    "DriftEvent": "config",
    "FaultConfig": "config",
    "HeatWave": "config",
    "OccupancyChange": "config",
    "Retrofit": "config",
    "heat_wave": "config",
    "occupancy_change": "config",
    "parse_drift": "config",
    "retrofit": "config",
    "GROUND_TRUTH_SCHEMA": "portfolio",
    "READINGS_SCHEMA": "portfolio",
    "SimulatedPortfolio": "portfolio",
    "build_registry": "portfolio",
    "simulate_portfolio": "portfolio",
    "PortfolioLanding": "landing",
    "land_portfolio": "landing",
}
__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:  # pragma: no cover
    from lakehouse.simulator.config import (  # noqa: F401
        DRIFT_KINDS, FAULT_KINDS, DriftEvent, FaultConfig, HeatWave, OccupancyChange, Retrofit,
        heat_wave, occupancy_change, parse_drift, retrofit,
    )
    from lakehouse.simulator.landing import PortfolioLanding, land_portfolio  # noqa: F401
    from lakehouse.simulator.portfolio import (  # noqa: F401
        GROUND_TRUTH_SCHEMA, READINGS_SCHEMA, SimulatedPortfolio, build_registry, simulate_portfolio,
    )


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'lakehouse.simulator' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"lakehouse.simulator.{module}"), name)
    globals()[name] = value
    return value
