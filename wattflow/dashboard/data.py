"""What each page shows, read from the tables through the version-keyed `TableReader`.

The overview and the default building view share one read per table version: the last few weeks of
silver energy and served forecasts for the whole portfolio (a few thousand rows however long the
history). Longer building views read that building's span alone. The registry champion is looked up in
a background thread, so MLflow never sits on a page load.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from lakehouse.schemas import ANOMALIES, BUILDING_HOURLY, BUILDINGS, FORECASTS, SAVINGS
from ml.metrics import Accuracy
from wattflow.dashboard.figures import (
    anomaly_hours,
    downsample,
    portfolio_totals,
    recent_accuracy,
    served_forecast,
    weekly_comparison,
)
from wattflow.dashboard.reader import TableReader

TABLES = (BUILDINGS, BUILDING_HOURLY, FORECASTS, ANOMALIES, SAVINGS)
BUILDING_COLUMNS = ["building_id", "name", "site_id", "timezone", "use_type", "floor_area_m2",
                    "grid_emission_factor_kg_per_kwh", "tariff_per_kwh", "currency"]
FORECAST_COLUMNS = ["building_id", "issued_at", "ts", "yhat_p10", "yhat_p50", "yhat_p90", "model_name", "model_version", "is_fallback"]
ANOMALY_COLUMNS = ["building_id", "kind", "start", "end", "hours", "energy_kwh", "expected_kwh", "excess_kwh", "excess_ratio",
                   "severity", "cost", "currency", "co2_kg", "recommendation"]


@dataclass(frozen=True)
class Overview:
    end: pd.Timestamp | None  # exclusive end of the data (the hour after the latest reading)
    weekly: pd.DataFrame  # per building, this week vs last
    totals: dict[str, Any]
    worst: pd.DataFrame  # costliest recent anomalies
    buildings: pd.DataFrame


@dataclass(frozen=True)
class BuildingView:
    building: dict[str, Any]
    end: pd.Timestamp | None
    days: int
    series: pd.DataFrame  # ts, energy_kwh, yhat_p10, yhat_p50, yhat_p90 (downsampled)
    bucket_h: int
    anomaly_points: pd.DataFrame  # ts, energy_kwh, kind: hours inside an anomaly (hourly resolution)
    anomalies: pd.DataFrame  # the building's anomalies in the window, costliest first
    savings: dict[str, Any]
    served_model: str | None  # "name v<version>" of the latest served (non-fallback) forecast
    champion: str | None
    accuracy: Accuracy
    accuracy_days: int


@dataclass
class _Champion:
    version: str | None = None
    checked_at: float = 0.0
    error: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


class DashboardData:
    def __init__(self, settings: Any, engine: Any | None = None) -> None:
        from lakehouse.engine import get_engine

        self.settings = settings
        self.config = settings.dashboard
        self.reader = TableReader(engine or get_engine(settings), settings.dashboard.version_ttl_s)
        self._champion = _Champion()

    # -- versions and shared reads ------------------------------------------------------------
    def versions(self, fresh: bool = False) -> dict[str, int | None]:
        return self.reader.versions(TABLES, fresh)

    def buildings(self) -> pd.DataFrame:
        def compute(version: int | None) -> pd.DataFrame:
            if version is not None:
                return self.reader.read(BUILDINGS, BUILDING_COLUMNS).sort_values("building_id").reset_index(drop=True)
            from lakehouse.registry_file import load_registry, registry_path

            rows = [{c: getattr(b, c) for c in BUILDING_COLUMNS} for b in load_registry(registry_path(self.settings))]
            return pd.DataFrame(rows, columns=BUILDING_COLUMNS)

        return self.reader.cached(BUILDINGS, "all", compute)

    def end(self) -> pd.Timestamp | None:
        latest = self.reader.latest_ts(BUILDING_HOURLY)
        return None if latest is None else latest + pd.Timedelta(hours=1)

    @property
    def recent_days(self) -> int:
        return max(14, self.config.chart_days, self.config.accuracy_days) + 1

    def _since(self, end: pd.Timestamp, days: int):
        return (end - pd.Timedelta(days=days)).date()

    def recent_hourly(self, end: pd.Timestamp) -> pd.DataFrame:
        since = self._since(end, self.recent_days)
        return self.reader.cached(BUILDING_HOURLY, ("recent", since), lambda v: self.reader.read(
            BUILDING_HOURLY, ["building_id", "ts", "energy_kwh"], since=since, version=v))

    def recent_served(self, end: pd.Timestamp) -> pd.DataFrame:
        since = self._since(end, self.recent_days)
        return self.reader.cached(FORECASTS, ("recent", since), lambda v: served_forecast(
            self.reader.read(FORECASTS, FORECAST_COLUMNS, since=since, version=v)))

    def anomalies(self) -> pd.DataFrame:
        return self.reader.cached(ANOMALIES, "all", lambda v: self.reader.read(ANOMALIES, ANOMALY_COLUMNS, version=v))

    # -- pages --------------------------------------------------------------------------------
    def overview(self) -> Overview:
        buildings = self.buildings()
        end = self.end()
        if end is None:
            empty = weekly_comparison(pd.DataFrame(columns=["building_id", "ts", "energy_kwh"]), buildings, pd.Timestamp.now(tz="UTC"))
            return Overview(None, empty, portfolio_totals(empty), self.anomalies().iloc[0:0], buildings)
        weekly = self.reader.cached(BUILDING_HOURLY, ("weekly", end, self.reader.version(BUILDINGS)),
                                    lambda v: weekly_comparison(self.recent_hourly(end), buildings, end))
        anomalies = self.anomalies()
        recent = anomalies[anomalies["start"] >= end - pd.Timedelta(days=self.config.anomaly_days)]
        worst = recent.sort_values(["cost", "excess_kwh"], ascending=False).head(self.config.worst_anomalies)
        worst = worst.merge(buildings[["building_id", "name"]], on="building_id", how="left")
        return Overview(end, weekly, portfolio_totals(weekly), worst.reset_index(drop=True), buildings)

    def building(self, building_id: str, days: int | None = None) -> BuildingView:
        buildings = self.buildings()
        match = buildings[buildings["building_id"] == building_id]
        if match.empty:
            raise KeyError(f"unknown building_id {building_id!r}")
        meta = match.iloc[0].to_dict()
        days = int(days or self.config.chart_days)
        end = self.end()
        if end is None:
            empty = pd.DataFrame(columns=["ts", "energy_kwh", "yhat_p10", "yhat_p50", "yhat_p90"])
            return BuildingView(meta, None, days, empty, 1, empty.assign(kind=[]), self.anomalies().iloc[0:0],
                                _savings(self.anomalies().iloc[0:0]), None, self.champion(), recent_accuracy(
                                    pd.DataFrame(columns=["building_id", "ts", "energy_kwh"]), served_forecast(pd.DataFrame()), pd.Timestamp.now(tz="UTC"), 1),
                                self.config.accuracy_days)
        start = end - pd.Timedelta(days=days)
        if days < self.recent_days:
            hourly = self.recent_hourly(end)
            served = self.recent_served(end)
            hourly = hourly[hourly["building_id"] == building_id]
            served = served[served["building_id"] == building_id]
        else:
            since = self._since(end, days)
            only = [("building_id", "=", building_id)]
            hourly = self.reader.cached(BUILDING_HOURLY, ("span", building_id, since), lambda v: self.reader.read(
                BUILDING_HOURLY, ["building_id", "ts", "energy_kwh"], since=since, filters=only, version=v))
            served = self.reader.cached(FORECASTS, ("span", building_id, since), lambda v: served_forecast(
                self.reader.read(FORECASTS, FORECAST_COLUMNS, since=since, filters=only, version=v)))
        accuracy = recent_accuracy(hourly, served, end, self.config.accuracy_days, self.settings.model.ashrae_p)
        actual = hourly[(hourly["ts"] >= start) & (hourly["ts"] < end)][["ts", "energy_kwh"]]
        band = served[(served["ts"] >= start) & (served["ts"] < end)][["ts", "yhat_p10", "yhat_p50", "yhat_p90"]]
        series = actual.merge(band, on="ts", how="outer").sort_values("ts").reset_index(drop=True)
        series, bucket_h = downsample(series, ["energy_kwh", "yhat_p10", "yhat_p50", "yhat_p90"], self.config.chart_max_points)
        anomalies = self.anomalies()
        mine = anomalies[(anomalies["building_id"] == building_id) & (anomalies["end"] > start) & (anomalies["start"] < end)]
        mine = mine.sort_values(["cost", "excess_kwh"], ascending=False).reset_index(drop=True)
        model_rows = served[~served["is_fallback"].astype(bool)]
        served_model = None
        if not model_rows.empty:
            last = model_rows.sort_values("ts").iloc[-1]
            served_model = f"{last['model_name']} v{last['model_version']}"
        return BuildingView(meta, end, days, series, bucket_h, anomaly_hours(mine, actual.sort_values("ts")), mine,
                            _savings(mine), served_model, self.champion(), accuracy, self.config.accuracy_days)

    # -- the registry champion, off the request path -------------------------------------------
    def champion(self) -> str | None:
        """The registry's champion as last looked up; starts a lookup when the last one is stale."""
        state = self._champion
        if time.monotonic() - state.checked_at > self.config.refresh_interval_s and state.lock.acquire(blocking=False):
            threading.Thread(target=self._lookup_champion, daemon=True, name="champion-lookup").start()
        return None if state.version is None else f"{self.settings.model.model_name} v{state.version}"

    def _lookup_champion(self) -> None:
        state = self._champion
        try:
            state.version, state.error = lookup_champion(self.settings), None
        except Exception as err:  # noqa: BLE001 - an unreachable registry must not break the page
            state.error = f"{type(err).__name__}: {err}"
        finally:
            state.checked_at = time.monotonic()
            state.lock.release()


def lookup_champion(settings: Any) -> str | None:
    """The version behind alias `champion` of the settings' model, or None without a registry."""
    uri = settings.tracking_uri
    if uri.startswith("sqlite:///"):
        from pathlib import Path

        if not Path(uri.removeprefix("sqlite:///")).exists():
            return None
    import mlflow

    from ml.registry import CHAMPION, alias_version

    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return alias_version(settings.model.model_name, CHAMPION)


def _savings(anomalies: pd.DataFrame) -> dict[str, Any]:
    """What fixing the building's anomalies would save: over-consumption only, stuck meters excluded."""
    if anomalies.empty:
        return {"excess_kwh": 0.0, "cost": 0.0, "currency": "", "co2_kg": 0.0, "anomalies": 0}
    wasted = anomalies["excess_kwh"].clip(lower=0.0).where(anomalies["kind"] != "stuck_meter", 0.0)
    return {
        "excess_kwh": float(wasted.sum()),
        "cost": float(anomalies["cost"].fillna(0.0).sum()),
        "currency": str(anomalies["currency"].dropna().iloc[0]) if anomalies["currency"].notna().any() else "",
        "co2_kg": float(anomalies["co2_kg"].fillna(0.0).sum()),
        "anomalies": int(len(anomalies)),
    }
