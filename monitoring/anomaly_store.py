"""The I/O shell around anomaly detection: read gold features and served forecasts, detect, price,
write `monitoring.anomalies` (keyed by building, kind and start, so a re-run writes nothing twice)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Mapping

import pandas as pd
import pyarrow as pa

from monitoring.anomalies import detect_anomalies
from monitoring.savings_advice import BuildingMetadata, building_savings, price_anomalies
from lakehouse.schemas import ANOMALIES, FEATURES, FORECASTS

ANOMALY_FEATURE_COLUMNS = [
    "building_id", "ts", "energy_kwh", "energy_valid", "hour_of_day", "day_of_week", "is_weekend", "is_holiday", "temperature",
]


@dataclass(frozen=True)
class AnomalyResult:
    anomalies: pd.DataFrame  # priced, `monitoring.anomalies` columns
    buildings: pd.DataFrame  # per-building savings summary
    rows_written: int


def utc(value: Any) -> pd.Timestamp:
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def read_window(engine: Any, contract: Any, start: pd.Timestamp, end: pd.Timestamp, building_ids: list[str] | None,
                columns: list[str] | None = None) -> pd.DataFrame:
    """Rows of a ts-keyed table in [start, end), pruned on the date partition first."""
    if not engine.exists(contract):
        return pd.DataFrame(columns=columns or contract.schema.names)
    filters = [("date", ">=", start.date()), ("date", "<=", end.date())]
    if building_ids:
        filters.append(("building_id", "in", list(building_ids)))
    available = [c for c in (columns or contract.schema.names) if c in contract.schema.names]
    frame = engine.read(contract, filters=filters, columns=available).to_pandas()
    for column in ("ts", "issued_at"):
        if column in frame.columns:
            frame[column] = pd.to_datetime(frame[column], utc=True)
    return frame[(frame["ts"] >= start) & (frame["ts"] < end)].reset_index(drop=True)


def latest_forecasts(forecasts: pd.DataFrame, model_name: str | None = None) -> pd.DataFrame:
    """Per building and hour, the latest non-fallback forecast issued before the hour."""
    if forecasts.empty:
        return pd.DataFrame(columns=["building_id", "ts", "yhat_p10", "yhat_p50", "yhat_p90"])
    f = forecasts
    if model_name is not None:
        f = f[f["model_name"] == model_name]
    f = f[~f["is_fallback"].fillna(False).astype(bool) & (f["issued_at"] <= f["ts"])]
    f = f.sort_values(["building_id", "ts", "issued_at"]).drop_duplicates(["building_id", "ts"], keep="last")
    return f[["building_id", "ts", "yhat_p10", "yhat_p50", "yhat_p90"]]


def building_metadata(engine: Any, settings: Any) -> dict[str, BuildingMetadata]:
    """Tariff, currency, emission factor and timezone per building: the registry file, else reference.buildings."""
    from lakehouse.registry_file import load_registry, registry_path

    registry = load_registry(registry_path(settings))
    found: dict[str, BuildingMetadata] = {b.building_id: b for b in registry}
    if not found:
        from lakehouse.schemas import BUILDINGS

        if engine.exists(BUILDINGS):
            for row in engine.read(BUILDINGS).to_pylist():
                found[row["building_id"]] = _Row(**{k: row[k] for k in _Row.__dataclass_fields__})
    return found


@dataclass(frozen=True)
class _Row:
    building_id: str
    tariff_per_kwh: float
    currency: str
    grid_emission_factor_kg_per_kwh: float
    timezone: str


def anomalies_chunk(features: pd.DataFrame, forecasts: pd.DataFrame, meta: Mapping[str, BuildingMetadata], settings: Any,
                    start: pd.Timestamp) -> pd.DataFrame:
    """The per-building core of anomaly detection: a chunk's features (with `baseline_weeks` of history
    before `start`) and served forecasts in, its priced anomalies of [start, ...) out. Both runners call it."""
    features = features.sort_values(["building_id", "ts"], kind="stable").reset_index(drop=True)
    window = features[features["ts"] >= start].merge(
        latest_forecasts(forecasts, settings.model.model_name), on=["building_id", "ts"], how="left"
    )
    anomalies, _ = detect_anomalies(window, features[features["ts"] < start], settings.monitor.anomalies)
    anomalies = anomalies[anomalies["building_id"].isin(meta)] if not anomalies.empty else anomalies
    return price_anomalies(anomalies, dict(meta))


def find_anomalies(
    engine: Any,
    settings: Any,
    *,
    since: datetime | str,
    until: datetime | str | None = None,
    building_id: str | None = None,
    buildings: Mapping[str, BuildingMetadata] | None = None,
    write: bool = True,
) -> AnomalyResult:
    """Detect, price and (by default) record the anomalies of [since, until) for one or every building,
    chunk by chunk on the runner `compute.runner` names (lakehouse/runners.py)."""
    from lakehouse.runners import AnomalyJob, chunk_of, get_runner

    start = utc(since)
    end = utc(until) if until is not None else utc(datetime.now(timezone.utc)).ceil("h")
    if end <= start:
        raise ValueError(f"until {end.isoformat()} must be after since {start.isoformat()}")
    anomaly_settings = settings.monitor.anomalies
    history_start = start - pd.Timedelta(weeks=anomaly_settings.baseline_weeks)
    meta = dict(buildings) if buildings is not None else building_metadata(engine, settings)
    if building_id and building_id not in meta:
        features = read_window(engine, FEATURES, history_start, end, [building_id], ["building_id", "ts"])
        if not features.empty:
            raise KeyError(f"building_id {building_id!r} has features but no metadata (tariff, emission factor)")
    ids = [building_id] if building_id else sorted(meta)
    job = AnomalyJob(history_start=history_start, start=start, end=end, meta=meta, detected_at=pd.Timestamp.now(tz="UTC"))
    outcome = get_runner(engine, settings).anomalies(chunk_of(ids, settings.compute.chunk_buildings), job)
    priced = outcome.summaries["anomalies"].to_pandas()
    written = 0
    if write and len(priced):
        result = outcome.write().get("anomalies")
        written = (result.rows_inserted + result.rows_updated) if result is not None else 0
    else:
        outcome.discard()
    priced = priced.drop(columns=["detected_at"]).reset_index(drop=True)
    return AnomalyResult(priced, building_savings(priced), written)
