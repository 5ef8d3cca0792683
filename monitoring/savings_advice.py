"""What anomalies cost: excess energy, money (the building's tariff), kgCO2e (its grid emission factor),
and a one-line recommendation a facility manager can act on.

Only over-consumption is priced: an anomaly below the expected (a meter fault, an unplanned shutdown)
saves nothing to recover, so its cost and carbon are zero while its excess stays negative in the record.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import pandas as pd


class BuildingMetadata(Protocol):
    building_id: str
    tariff_per_kwh: float
    currency: str
    grid_emission_factor_kg_per_kwh: float
    timezone: str


def _local_hours(start: pd.Timestamp, end: pd.Timestamp, timezone: str) -> str:
    local_start = pd.Timestamp(start).tz_convert(timezone)
    local_end = pd.Timestamp(end).tz_convert(timezone)
    return f"{local_start:%H:%M}–{local_end:%H:%M}"


def recommendation(kind: str, start: pd.Timestamp, end: pd.Timestamp, excess_ratio: float, timezone: str) -> str:
    hours = _local_hours(start, end, timezone)
    pct = f"{abs(excess_ratio):.0%}" if np.isfinite(excess_ratio) else "n/a"
    day = pd.Timestamp(start).tz_convert(timezone).strftime("%a %d %b")
    if kind == "after_hours_load":
        return f"baseload {hours} on {day} is {pct} above the expected night level: check HVAC and lighting schedules"
    if kind == "weekend_spike":
        return f"weekend/holiday load {hours} on {day} is {pct} above the usual level: check BMS overrides and occupancy schedules"
    if kind == "stuck_meter":
        return f"meter reads a constant value {hours} on {day}: check the meter and its gateway; figures for this span are unreliable"
    if kind == "low_consumption":
        return f"consumption {hours} on {day} is {pct} below expected: check for a meter fault or an unreported shutdown"
    return f"consumption {hours} on {day} is {pct} above expected: check equipment left running and set-points"


def price_anomalies(anomalies: pd.DataFrame, buildings: dict[str, BuildingMetadata]) -> pd.DataFrame:
    """Add cost, currency, co2_kg and recommendation to anomaly rows (`monitoring.anomalies` columns)."""
    out = anomalies.copy()
    if out.empty:
        return out.assign(cost=[], currency=[], co2_kg=[], recommendation=[])
    unknown = sorted(set(out["building_id"]) - set(buildings))
    if unknown:
        raise KeyError(f"anomalies name building_id(s) {unknown} missing from the building metadata")
    priced = out["excess_kwh"].clip(lower=0.0)
    # stuck meters: the excess is an artefact of a frozen reading, not energy that was used
    priced = priced.where(out["kind"] != "stuck_meter", 0.0)
    tariff = out["building_id"].map(lambda b: buildings[b].tariff_per_kwh)
    factor = out["building_id"].map(lambda b: buildings[b].grid_emission_factor_kg_per_kwh)
    out["cost"] = (priced * tariff).round(2)
    out["currency"] = out["building_id"].map(lambda b: buildings[b].currency)
    out["co2_kg"] = (priced * factor).round(3)
    out["recommendation"] = [
        recommendation(k, s, e, r, buildings[b].timezone)
        for k, s, e, r, b in zip(out["kind"], out["start"], out["end"], out["excess_ratio"], out["building_id"])
    ]
    return out


def building_savings(priced: pd.DataFrame) -> pd.DataFrame:
    """Per building: anomalies, wasted kWh, cost and kgCO2e, and the advice of its costliest anomaly."""
    columns = ["building_id", "anomalies", "excess_kwh", "cost", "currency", "co2_kg", "top_recommendation"]
    if priced.empty:
        return pd.DataFrame(columns=columns)
    rows = []
    for building_id, g in priced.groupby("building_id", sort=True):
        wasted = g["excess_kwh"].clip(lower=0.0).where(g["kind"] != "stuck_meter", 0.0)
        top = g.loc[g["cost"].idxmax()] if g["cost"].max() > 0 else g.iloc[0]
        rows.append(
            {
                "building_id": building_id,
                "anomalies": int(len(g)),
                "excess_kwh": round(float(wasted.sum()), 3),
                "cost": round(float(g["cost"].sum()), 2),
                "currency": str(g["currency"].iloc[0]),
                "co2_kg": round(float(g["co2_kg"].sum()), 3),
                "top_recommendation": str(top["recommendation"]),
            }
        )
    return pd.DataFrame(rows, columns=columns)
