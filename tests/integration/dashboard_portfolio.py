"""A 20-building, one-year hourly portfolio written straight into the tables the dashboard reads.

Synthesised with numpy (seconds, not the whole pipeline): silver energy with a weekday office profile
and a heating term, served day-ahead forecasts with a p10–p90 band, the buildings' reference rows from
the simulator's registry, and anomalies priced by the real `monitoring.savings_advice.price_anomalies`,
including after-hours waste injected into the last week of one building.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

from monitoring.savings_advice import price_anomalies
from lakehouse.schemas import ANOMALIES, BUILDING_HOURLY, BUILDINGS, FORECASTS, TableContract
from lakehouse.simulator.portfolio import build_registry

WASTE_BUILDING = "b03"
WASTE_EXTRA_KW = 40.0


@dataclass(frozen=True)
class Portfolio:
    building_ids: list[str]
    start: pd.Timestamp
    end: pd.Timestamp  # exclusive
    silver_rows: int
    forecast_rows: int
    anomalies: pd.DataFrame
    waste_start: pd.Timestamp
    waste_hours: int


def _table(frame: pd.DataFrame, contract: TableContract) -> pa.Table:
    columns = {}
    for field in contract.schema:
        if field.name in frame.columns:
            columns[field.name] = pa.array(frame[field.name], type=field.type, from_pandas=True)
        elif field.name != "date":
            columns[field.name] = pa.nulls(len(frame), type=field.type)
    return pa.table(columns)


def write_portfolio(engine, n_buildings: int = 20, days: int = 366, end: str = "2025-01-01", seed: int = 7) -> Portfolio:
    rng = np.random.default_rng(seed)
    registry = build_registry(n_buildings)
    engine.upsert(BUILDINGS, registry.to_arrow())
    ids = registry.building_ids()
    stop = pd.Timestamp(end, tz="UTC")
    ts = pd.date_range(stop - pd.Timedelta(days=days), stop, freq="h", inclusive="left")
    hour, dow = ts.hour.to_numpy(), ts.dayofweek.to_numpy()
    day_of_year = ts.dayofyear.to_numpy()
    temperature = 10 - 9 * np.cos(2 * np.pi * (day_of_year - 20) / 365) + 4 * np.sin(2 * np.pi * (hour - 9) / 24)
    working = (dow < 5) & (hour >= 8) & (hour < 18)
    # Night-time waste from 22:00 local time of the wasteful building, three days before the end.
    local_day = (stop - pd.Timedelta(days=3)).tz_convert(registry.get(WASTE_BUILDING).timezone).normalize()
    waste_start = (local_day + pd.Timedelta(hours=22)).tz_convert("UTC")
    waste_hours = 7
    waste = (ts >= waste_start) & (ts < waste_start + pd.Timedelta(hours=waste_hours))

    silver, forecasts = [], []
    for i, building in enumerate(registry):
        base = building.floor_area_m2 * 0.004
        expected = base * (1 + 1.6 * working) + 0.02 * base * np.clip(15.5 - temperature, 0, None)
        actual = expected * (1 + rng.normal(0, 0.05, len(ts)))
        if building.building_id == WASTE_BUILDING:
            actual = actual + WASTE_EXTRA_KW * waste
        silver.append(pd.DataFrame({
            "building_id": building.building_id, "ts": ts, "energy_kwh": actual.round(3),
            "outdoor_temperature_c": temperature.round(2), "n_readings": np.int32(4), "expected_readings": np.int32(4),
            "n_rejected": np.int32(0), "imputed": False, "gap": False, "outlier": False, "quality_flags": "",
        }))
        p50 = expected * (1 + rng.normal(0, 0.03, len(ts)))
        spread = 1.2816 * 0.06 * expected
        issued_at = ts.floor("D")
        forecasts.append(pd.DataFrame({
            "building_id": building.building_id, "issued_at": issued_at, "ts": ts,
            "horizon_h": ((ts - issued_at) / pd.Timedelta(hours=1)).astype(np.int32) + 1,
            "yhat": p50, "yhat_p10": p50 - spread, "yhat_p50": p50, "yhat_p90": p50 + spread,
            "model_name": "building_energy_lstm", "model_version": "3", "is_fallback": False,
        }))
    silver_frame = pd.concat(silver, ignore_index=True)
    forecast_frame = pd.concat(forecasts, ignore_index=True)
    engine.upsert(BUILDING_HOURLY, _table(silver_frame, BUILDING_HOURLY))
    engine.upsert(FORECASTS, _table(forecast_frame, FORECASTS))

    waste_rows = silver_frame[(silver_frame["building_id"] == WASTE_BUILDING) & silver_frame["ts"].isin(ts[waste])]
    measured = float(waste_rows["energy_kwh"].sum())
    raw = pd.DataFrame([
        {"building_id": WASTE_BUILDING, "kind": "after_hours_load", "start": waste_start,
         "end": waste_start + pd.Timedelta(hours=waste_hours), "hours": waste_hours, "energy_kwh": measured,
         "expected_kwh": measured - WASTE_EXTRA_KW * waste_hours, "excess_kwh": WASTE_EXTRA_KW * waste_hours,
         "excess_ratio": WASTE_EXTRA_KW * waste_hours / (measured - WASTE_EXTRA_KW * waste_hours),
         "expected_source": "forecast_p50", "score": 6.5, "severity": "high"},
        {"building_id": "b07", "kind": "weekend_spike", "start": stop - pd.Timedelta(days=6, hours=-10),
         "end": stop - pd.Timedelta(days=6, hours=-14), "hours": 4, "energy_kwh": 120.0, "expected_kwh": 80.0,
         "excess_kwh": 40.0, "excess_ratio": 0.5, "expected_source": "forecast_p50", "score": 3.1, "severity": "high"},
        {"building_id": "b12", "kind": "stuck_meter", "start": stop - pd.Timedelta(days=10), "end": stop - pd.Timedelta(days=10, hours=-7),
         "hours": 7, "energy_kwh": 70.0, "expected_kwh": 60.0, "excess_kwh": 10.0, "excess_ratio": 0.17,
         "expected_source": "forecast_p50", "score": 0.0, "severity": "medium"},
    ])
    priced = price_anomalies(raw, {b.building_id: b for b in registry})
    engine.upsert(ANOMALIES, _table(priced.assign(detected_at=stop), ANOMALIES))
    return Portfolio(ids, ts[0], stop, len(silver_frame), len(forecast_frame), priced, waste_start, waste_hours)
