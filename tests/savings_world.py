"""A simulated portfolio with known retrofits for the savings tests (unit, CLI, monthly DAG step, dashboard).

Four buildings, Jan 1 - Mar 4 2024, hourly meters, no sensor faults: an office (Berlin), a school (New
York) and a hospital (Paris) get their HVAC load cut on Feb 12 by 30%, 20% and 40%; a shop (London) does
not change. Built once per process: simulation and curation take about a second.
"""

from __future__ import annotations

import json
from functools import lru_cache

import pandas as pd

START, CUT, END = "2024-01-01", "2024-02-12", "2024-03-04"
CUTS = {"b01": 0.30, "b03": 0.20, "b04": 0.40}  # office, school, hospital
UNCHANGED = "b02"  # retail


@lru_cache(maxsize=1)
def savings_world():
    """(portfolio, gold features) through the real curation: silver hours, then gold features."""
    from lakehouse.curation import readings_to_hourly
    from lakehouse.gold import hourly_to_features
    from lakehouse.simulator import FaultConfig, retrofit, simulate_portfolio
    from wattflow.settings import Settings

    settings = Settings()
    portfolio = simulate_portfolio(4, START, END, faults=FaultConfig.none(), interval_minutes=60,
                                   drift=[retrofit(b, CUT, r) for b, r in CUTS.items()], forecast_issue_hour_utc=6)
    delivered = pd.Timestamp(END, tz="UTC")
    readings = portfolio.readings.to_pandas().drop(columns="delivery").assign(ingested_at=delivered)
    weather = portfolio.weather.to_pandas().assign(ingested_at=delivered)
    hourly, _, _ = readings_to_hourly(readings, portfolio.registry, settings, weather=weather, start=START, end=END, validate=False)
    return portfolio, hourly_to_features(hourly, portfolio.registry, settings, scaling={})


def true_savings(portfolio, building_id: str, start, end) -> float:
    """The recorded HVAC cut applied to the HVAC energy the building used in [start, end)."""
    truth = portfolio.ground_truth.to_pandas()
    cut = truth[(truth["kind"] == "retrofit") & (truth["building_id"] == building_id)]
    if cut.empty:
        return 0.0
    share = json.loads(cut["detail"].iloc[0])["hvac_reduction"]
    hourly = portfolio.truth_hourly.to_pandas()
    ts = pd.to_datetime(hourly["ts"], utc=True)
    rows = hourly[(hourly["building_id"] == building_id) & (ts >= pd.Timestamp(start, tz="UTC")) & (ts < pd.Timestamp(end, tz="UTC"))]
    return float((rows["hvac_kwh"] * share / (1 - share)).sum())


def land(engine, portfolio, features) -> None:
    """The registry and the gold features in the lakehouse, as curation leaves them."""
    import pyarrow as pa

    from lakehouse.schemas import BUILDINGS, FEATURES

    engine.upsert(BUILDINGS, portfolio.registry.to_arrow())
    engine.upsert(FEATURES, pa.Table.from_pandas(features[list(FEATURES.schema.names)], schema=FEATURES.schema, preserve_index=False))
