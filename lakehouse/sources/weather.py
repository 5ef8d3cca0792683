"""Open-Meteo weather (no API key): hourly observations from the archive, forecasts with their issue time.

- Past forecasts (Previous Runs API, ``previous-runs-api.open-meteo.com/v1/forecast``) land as
  ``kind=forecast`` with an issue time by which the run was surely published (`OpenMeteoClient.previous_runs`):
  real day-ahead forecasts for backtests, instead of the persistence fallback.
- Archive (reanalysis, ``/v1/archive``) lands as ``kind=observation``; the forecast API (``/v1/forecast``)
  lands as ``kind=forecast`` with ``issued_at`` = the request time floored to the hour (Open-Meteo does
  not report the model run; its models update hourly to a few times a day, so the hour of the request
  is the latest issue the response can include and later features never see a forecast "from the future").
- Units are requested as the bronze contract wants them (``wind_speed_unit=ms``, times in GMT).
- Transient failures (5xx, 429, timeouts, dropped connections) are retried with exponential backoff;
  a 4xx other than 429 is a request error and raises `WeatherRequestError` with Open-Meteo's reason.
- Responses are cached under ``$WATTFLOW_HOME/cache/open-meteo``: archive windows once they are final,
  forecasts per issue hour. A re-run inside the cache makes no request and changes no table.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from lakehouse.bronze import LandingResult, land_weather
from wattflow.log import get_logger

log = get_logger(__name__)

# Open-Meteo hourly variable -> bronze.weather column.
HOURLY_VARIABLES: dict[str, str] = {
    "temperature_2m": "temperature_c",
    "relative_humidity_2m": "relative_humidity_pct",
    "dew_point_2m": "dew_point_c",
    "wind_speed_10m": "wind_speed_ms",
    "cloud_cover": "cloud_cover_pct",
    "shortwave_radiation": "solar_radiation_wm2",
}
EXPECTED_UNITS = {"temperature_2m": "°C", "dew_point_2m": "°C", "wind_speed_10m": "m/s", "relative_humidity_2m": "%",
                  "cloud_cover": "%", "shortwave_radiation": "W/m²"}
KMH_PER_MS = 3.6


class WeatherRequestError(RuntimeError):
    """Open-Meteo refused the request (HTTP 4xx); the message carries its reason."""


class WeatherServiceUnavailable(RuntimeError):
    """Open-Meteo kept failing (5xx, 429, timeouts) after every retry."""


class _Transient(Exception):
    pass


@dataclass(frozen=True)
class Location:
    site_id: str
    latitude: float
    longitude: float


def site_location(registry: Any, site_id: str) -> Location:
    buildings = registry.buildings_at(site_id)
    if not buildings:
        raise KeyError(f"unknown site_id {site_id!r}; known: {', '.join(registry.site_ids()) or '(none)'}")
    return Location(site_id, buildings[0].latitude, buildings[0].longitude)


def hourly_frame(response: dict[str, Any], suffix: str = "") -> pd.DataFrame:
    """An Open-Meteo JSON response as one row per UTC hour with bronze.weather column names; `suffix`
    picks the Previous Runs API's variables (``temperature_2m_previous_day1`` for ``_previous_day1``)."""
    hourly = response.get("hourly")
    if not isinstance(hourly, dict) or "time" not in hourly:
        raise WeatherRequestError(f"response has no hourly block: keys {sorted(response)}")
    offset = timedelta(seconds=int(response.get("utc_offset_seconds", 0)))
    times = pd.to_datetime(pd.Series(hourly["time"]), format="ISO8601")
    ts = (times - offset).dt.tz_localize("UTC") if times.dt.tz is None else times.dt.tz_convert("UTC")
    frame = pd.DataFrame({"ts": ts})
    units = response.get("hourly_units", {})
    for variable, column in HOURLY_VARIABLES.items():
        values = pd.Series(hourly.get(variable + suffix, [None] * len(frame)), dtype="float64")
        if variable == "wind_speed_10m" and units.get(variable + suffix) == "km/h":  # asked for m/s; convert if ignored
            values = values / KMH_PER_MS
        frame[column] = values
    return frame


def _utc(value: datetime | str) -> pd.Timestamp:
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


class OpenMeteoClient:
    def __init__(self, settings: Any | None = None, *, cache_dir: Path | None = None) -> None:
        import requests

        from wattflow.settings import get_settings

        self.settings = settings or get_settings()
        self.cfg = self.settings.weather
        self.cache_dir = cache_dir or self.settings.cache_dir / "open-meteo"
        self.session = requests.Session()
        self.requests_made = 0

    # -- HTTP with retries -------------------------------------------------
    def _get(self, url: str, params: dict[str, Any]) -> dict[str, Any]:
        import requests
        from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

        retrying = Retrying(
            retry=retry_if_exception_type(_Transient),
            stop=stop_after_attempt(self.cfg.max_retries + 1),
            wait=wait_exponential(multiplier=self.cfg.backoff_initial_s, max=self.cfg.backoff_max_s),
            reraise=True,
        )
        try:
            for attempt in retrying:
                with attempt:
                    self.requests_made += 1
                    try:
                        resp = self.session.get(url, params=params, timeout=self.cfg.timeout_s)
                    except (requests.Timeout, requests.ConnectionError) as err:
                        log.warning("open-meteo unreachable; retrying", url=url, error=str(err))
                        raise _Transient(str(err)) from err
                    if resp.status_code >= 500 or resp.status_code == 429:
                        log.warning("open-meteo transient error; retrying", url=url, status=resp.status_code)
                        raise _Transient(f"HTTP {resp.status_code}: {resp.text[:200]}")
                    if resp.status_code >= 400:
                        try:
                            reason = resp.json().get("reason", resp.text)
                        except ValueError:
                            reason = resp.text
                        raise WeatherRequestError(f"Open-Meteo {url} answered {resp.status_code}: {reason}")
                    return resp.json()
        except _Transient as err:
            raise WeatherServiceUnavailable(
                f"Open-Meteo {url} failed {self.cfg.max_retries + 1} times; last: {err}"
            ) from err
        raise AssertionError("unreachable")  # pragma: no cover

    # -- cache ---------------------------------------------------------------
    def _cache_path(self, url: str, params: dict[str, Any]) -> Path:
        key = hashlib.sha256(json.dumps([url, sorted(params.items())], default=str).encode()).hexdigest()[:24]
        return self.cache_dir / f"{key}.json"

    def _cached_get(self, url: str, params: dict[str, Any], cacheable: bool) -> dict[str, Any]:
        path = self._cache_path(url, params)
        if cacheable and path.exists():
            return json.loads(path.read_text())
        body = self._get(url, params)
        if cacheable:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(body))
            tmp.replace(path)
        return body

    def _params(self, loc: Location) -> dict[str, Any]:
        return {
            "latitude": round(loc.latitude, 4),
            "longitude": round(loc.longitude, 4),
            "hourly": ",".join(HOURLY_VARIABLES),
            "wind_speed_unit": "ms",
            "timezone": "GMT",
        }

    # -- public --------------------------------------------------------------
    def archive(self, loc: Location, start: datetime, end: datetime, *, today: date | None = None) -> pd.DataFrame:
        """Hourly observations for [start, end) (UTC), in requests of bounded length (dates are inclusive there)."""
        start_ts, end_ts = _utc(start), _utc(end)
        first, last = start_ts.date(), (end_ts - pd.Timedelta(microseconds=1)).date()
        today = today or datetime.now(timezone.utc).date()
        frames = []
        step = timedelta(days=self.cfg.archive_max_days_per_request)
        chunk_start = first
        while chunk_start <= last:
            chunk_end = min(last, chunk_start + step - timedelta(days=1))
            params = {**self._params(loc), "start_date": chunk_start.isoformat(), "end_date": chunk_end.isoformat()}
            final = chunk_end <= today - timedelta(days=self.cfg.archive_final_after_days)
            frames.append(hourly_frame(self._cached_get(self.cfg.archive_url, params, cacheable=final)))
            chunk_start = chunk_end + timedelta(days=1)
        columns = ["ts", *HOURLY_VARIABLES.values()]
        frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)
        frame = frame[(frame["ts"] >= start_ts) & (frame["ts"] < end_ts)].reset_index(drop=True)
        frame.insert(0, "site_id", loc.site_id)
        frame.insert(1, "kind", "observation")
        frame.insert(2, "issued_at", frame["ts"])
        return frame

    def previous_runs(self, loc: Location, start: datetime, end: datetime, *, today: date | None = None) -> pd.DataFrame:
        """Day-ahead forecasts as they were issued, for hours in [start, end) (UTC), from the Previous Runs API.

        For each lead N in `previous_runs_lead_days`, ``<variable>_previous_dayN`` is what a run started at
        most N*24 h before the hour forecast for it; it lands as ``kind=forecast`` with ``issued_at`` =
        ts - N*24 h + `previous_runs_published_after_h`, a time by which that run was surely published.
        So the silver join (latest issued strictly before the origin) takes day 1 where it was out before
        the origin and day 2 for the later hours of the day, and never a run published after the origin.
        Hours a lead does not cover (before the archive began) are left out.
        """
        start_ts, end_ts = _utc(start), _utc(end)
        first, last = start_ts.date(), (end_ts - pd.Timedelta(microseconds=1)).date()
        today = today or datetime.now(timezone.utc).date()
        leads = tuple(self.cfg.previous_runs_lead_days)
        hourly = [f"{v}_previous_day{n}" for n in leads for v in HOURLY_VARIABLES]
        step = timedelta(days=self.cfg.previous_runs_max_days_per_request)
        frames = []
        chunk_start = first
        while chunk_start <= last:
            chunk_end = min(last, chunk_start + step - timedelta(days=1))
            params = {**self._params(loc), "hourly": ",".join(hourly),
                      "start_date": chunk_start.isoformat(), "end_date": chunk_end.isoformat()}
            # Past runs do not change: a window wholly before today is cached for good.
            body = self._cached_get(self.cfg.previous_runs_url, params, cacheable=chunk_end < today)
            for n in leads:
                frame = hourly_frame(body, suffix=f"_previous_day{n}")
                values = frame[list(HOURLY_VARIABLES.values())]
                frame = frame[values.notna().any(axis=1).to_numpy()]
                frame.insert(0, "issued_at", frame["ts"] - pd.Timedelta(hours=24 * n - self.cfg.previous_runs_published_after_h))
                frames.append(frame)
            chunk_start = chunk_end + timedelta(days=1)
        columns = ["issued_at", "ts", *HOURLY_VARIABLES.values()]
        frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)
        frame = frame[(frame["ts"] >= start_ts) & (frame["ts"] < end_ts)].sort_values(["ts", "issued_at"]).reset_index(drop=True)
        frame.insert(0, "site_id", loc.site_id)
        frame.insert(1, "kind", "forecast")
        return frame[["site_id", "kind", *columns]]

    def forecast(self, loc: Location, *, now: datetime | None = None, days: int | None = None) -> pd.DataFrame:
        """The current forecast for the next `days`, stamped with its issue hour."""
        now = now or datetime.now(timezone.utc)
        issued_at = pd.Timestamp(now).tz_convert("UTC").floor("h")
        params = {**self._params(loc), "forecast_days": days or self.cfg.forecast_days}
        # The issue hour is part of the cache key: the same hour reuses the response, the next hour asks again.
        path_params = {**params, "_issued_at": issued_at.isoformat()}
        path = self._cache_path(self.cfg.forecast_url, path_params)
        if path.exists():
            body = json.loads(path.read_text())
        else:
            body = self._get(self.cfg.forecast_url, params)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(body))
        frame = hourly_frame(body)
        frame = frame[frame["ts"] >= issued_at].reset_index(drop=True)
        frame.insert(0, "site_id", loc.site_id)
        frame.insert(1, "kind", "forecast")
        frame.insert(2, "issued_at", issued_at)
        return frame


def ingest_weather(
    site_id: str,
    start: datetime | str | None = None,
    end: datetime | str | None = None,
    *,
    forecast: bool = False,
    historical_forecast: bool = False,
    engine: Any | None = None,
    registry: Any | None = None,
    client: OpenMeteoClient | None = None,
    now: datetime | None = None,
) -> LandingResult:
    """Archive observations for [start, end), the forecasts issued for those hours (`historical_forecast`),
    or the current forecast, for a site, landed in bronze.weather."""
    from lakehouse.engine import get_engine
    from lakehouse.registry_file import load_registry

    registry = registry if registry is not None else load_registry()
    loc = site_location(registry, site_id)
    client = client or OpenMeteoClient()
    if forecast and historical_forecast:
        raise ValueError("--forecast (the current forecast) and --historical-forecast (past forecasts) exclude each other")
    if forecast:
        frame = client.forecast(loc, now=now)
        source = "open-meteo:forecast"
    elif start is None or end is None:
        raise ValueError("archive weather needs --start and --end")
    elif historical_forecast:
        frame = client.previous_runs(loc, start, end)
        source = "open-meteo:previous-runs"
    else:
        frame = client.archive(loc, start, end)
        source = "open-meteo:archive"
    records = pa.Table.from_pandas(frame, preserve_index=False)
    return land_weather(records, source=source, engine=engine or get_engine(), now=now)
