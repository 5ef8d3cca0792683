"""The building simulator: a deterministic portfolio of buildings, a source like any other.

Light at import time (numpy and pyarrow only); `holidays` and pandas load when a portfolio is simulated.
"""

from lakehouse.simulator.config import (
    DRIFT_KINDS,
    FAULT_KINDS,
    DriftEvent,
    FaultConfig,
    HeatWave,
    OccupancyChange,
    Retrofit,
    heat_wave,
    occupancy_change,
    parse_drift,
    retrofit,
)
from lakehouse.simulator.portfolio import (
    GROUND_TRUTH_SCHEMA,
    READINGS_SCHEMA,
    SimulatedPortfolio,
    build_registry,
    simulate_portfolio,
)

__all__ = [
    "DRIFT_KINDS",
    "FAULT_KINDS",
    "GROUND_TRUTH_SCHEMA",
    "READINGS_SCHEMA",
    "DriftEvent",
    "FaultConfig",
    "HeatWave",
    "OccupancyChange",
    "Retrofit",
    "SimulatedPortfolio",
    "build_registry",
    "heat_wave",
    "occupancy_change",
    "parse_drift",
    "retrofit",
    "simulate_portfolio",
]
