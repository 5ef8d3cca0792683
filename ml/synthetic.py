"""Gold features for tests, benchmarks and demos without the lakehouse: views of the building simulator.

There is one generator, `lakehouse.simulator`: its portfolio is curated to gold in memory through the
pipeline's own cores (`lakehouse/simulator/gold_view.py`), so a frame here is what `gold.features` would
hold for those buildings, and the simulator's truth (hourly energy, HVAC share, injected faults and drift)
travels with it. Buildings are the simulator's: `b01` is a Berlin office, `b02` a London shop, `b03` a
New York school, `b04` a Paris hospital, `b05` a Madrid residential block, and so on round the sites and
use types (`lakehouse.simulator.portfolio.build_registry`); a building is the same whichever others are
simulated beside it. Faults and drift are planted through the simulator's own configuration
(`lakehouse.simulator.FaultConfig`, `retrofit`, `heat_wave`, `occupancy_change`).
"""

from __future__ import annotations

from typing import Any, Sequence

import pandas as pd


def portfolio_size(building_ids: Sequence[str]) -> int:
    """The smallest simulated portfolio that holds `building_ids` (b01, b02, ... by position)."""
    positions = []
    for building_id in building_ids:
        digits = building_id[1:]
        if not (building_id.startswith("b") and digits.isdigit() and building_id == f"b{int(digits):02d}" and int(digits) >= 1):
            raise ValueError(
                f"building_id {building_id!r} is not a simulated building; the simulator names them b01, b02, ... by position"
            )
        positions.append(int(digits))
    return max(positions)


def building_timezones(building_ids: Sequence[str]) -> dict[str, str]:
    """Each simulated building's timezone (its site's), as `make_windows` and the forecasts take them."""
    from lakehouse.simulator.portfolio import build_registry

    registry = build_registry(portfolio_size(building_ids))
    return {b: registry.get(b).timezone for b in building_ids}


def simulated_gold_features(
    n_buildings: int = 3,
    start: str = "2024-01-01",
    days: int = 60,
    seed: int = 7,
    *,
    building_ids: Sequence[str] | None = None,
    faults: Any | None = None,
    drift: Sequence[Any] = (),
    settings: Any | None = None,
):
    """Gold features of the simulated buildings over `days` days, and the `SimulatedGold` they come from
    (hourly truth, fault and drift records, registry, timezones).

    Each building's rows are its `days * 24` hours from its own local midnight of `start`, as a
    building's day-ahead windows start at local midnight; the simulation spans them all.
    """
    from lakehouse.simulator.gold_view import simulated_gold
    from lakehouse.simulator.portfolio import build_registry

    registry = build_registry(n_buildings, seed)
    ids = list(building_ids) if building_ids is not None else registry.building_ids()
    day = pd.Timestamp(start)
    first = {b: day.tz_localize(registry.get(b).timezone).tz_convert("UTC") for b in ids}
    span = pd.Timedelta(hours=24 * days)
    world = simulated_gold(
        n_buildings, min(first.values()).floor("h"), max(first.values()).ceil("h") + span, seed=seed, faults=faults,
        drift=drift, building_ids=building_ids, settings=settings,
    )
    features = world.features
    begin = features["building_id"].map(first)
    keep = (features["ts"] >= begin) & (features["ts"] < begin + span)
    features = features[keep].reset_index(drop=True)
    world.features = features
    return features, world


def synthetic_gold_features(
    building_ids: Sequence[str] = ("b01",),
    start: str = "2024-01-01",
    days: int = 60,
    seed: int = 7,
    *,
    faults: Any | None = None,
    drift: Sequence[Any] = (),
) -> pd.DataFrame:
    """Gold features of `building_ids` (simulated, each exactly as in the whole portfolio), `days * 24`
    hours per building from its local midnight of `start`; every `gold.features` column present."""
    features, _ = simulated_gold_features(
        portfolio_size(building_ids), start, days, seed, building_ids=tuple(building_ids), faults=faults, drift=drift
    )
    return features
