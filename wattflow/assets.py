"""The Airflow Assets that wire the DAGs by data, and the defaults every task shares.

Imports nothing heavy: DAG files import this at parse time.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from wattflow.settings import get_settings

BRONZE_READINGS_URI = "wattflow://lakehouse/bronze/sensor_readings"
BRONZE_WEATHER_URI = "wattflow://lakehouse/bronze/weather"
SILVER_HOURLY_URI = "wattflow://lakehouse/silver/building_hourly"
GOLD_FEATURES_URI = "wattflow://lakehouse/gold/features"
GOLD_FORECASTS_URI = "wattflow://lakehouse/gold/forecasts"
CHAMPION_URI = "wattflow://registry/champion"
RETRAIN_REQUESTED_URI = "wattflow://monitoring/retrain_requested"


def assets() -> dict[str, Any]:
    from airflow.sdk import Asset

    return {
        "bronze_readings": Asset(name="bronze_sensor_readings", uri=BRONZE_READINGS_URI),
        "bronze_weather": Asset(name="bronze_weather", uri=BRONZE_WEATHER_URI),
        "silver_hourly": Asset(name="silver_building_hourly", uri=SILVER_HOURLY_URI),
        "gold_features": Asset(name="gold_features", uri=GOLD_FEATURES_URI),
        "gold_forecasts": Asset(name="gold_forecasts", uri=GOLD_FORECASTS_URI),
        "champion": Asset(name="new_champion", uri=CHAMPION_URI),
        "retrain_requested": Asset(name="retrain_requested", uri=RETRAIN_REQUESTED_URI),
    }


def default_args(timeout_min: int | None = None) -> dict[str, Any]:
    cfg = get_settings().airflow
    return {
        "owner": cfg.owner,
        "retries": cfg.retries,
        "retry_delay": dt.timedelta(seconds=cfg.retry_delay_s),
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": dt.timedelta(seconds=cfg.max_retry_delay_s),
        "execution_timeout": dt.timedelta(minutes=timeout_min or cfg.task_timeout_min),
    }


def start_date() -> dt.datetime:
    return dt.datetime.fromisoformat(get_settings().airflow.start_date).replace(tzinfo=dt.timezone.utc)


def window_from_context(context: dict[str, Any]) -> tuple[dt.datetime, dt.datetime]:
    """The [start, end) a run works on: params for manual runs, else the triggering asset events' extras
    (union of the intervals the producers landed or the watched topic's readings fall in), else the run's
    data interval."""
    params = context.get("params") or {}
    if params.get("start") and params.get("end"):
        return _utc(params["start"]), _utc(params["end"])
    events = context.get("triggering_asset_events") or {}
    # A producer task puts its interval in the event's extra; an asset watcher's trigger (the sensor topic,
    # wattflow.stream_trigger) puts it in the extra's "payload".
    extras = [getattr(e, "extra", None) or {} for evs in events.values() for e in evs]
    extras += [x["payload"] for x in extras if isinstance(x.get("payload"), dict)]
    spans = [(_utc(x["start"]), _utc(x["end"])) for x in extras if "start" in x and "end" in x]
    if spans:
        return min(s for s, _ in spans), max(e for _, e in spans)
    start, end = context.get("data_interval_start"), context.get("data_interval_end")
    if start is None or end is None:
        raise ValueError("run has neither params start/end, asset event extras nor a data interval")
    return _utc(start), _utc(end)


def buildings_from_context(context: dict[str, Any]) -> list[str] | None:
    value = (context.get("params") or {}).get("buildings")
    return list(value) if value else None


def _utc(value: Any) -> dt.datetime:
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)
    return dt.datetime.fromtimestamp(value.timestamp(), tz=dt.timezone.utc)
