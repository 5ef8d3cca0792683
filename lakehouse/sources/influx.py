"""InfluxDB 2.x: pull sensor readings for [start, stop) with Flux, write forecasts back for Grafana.

Readings are read in pages: the window is cut into `page_window_h` slices, and each slice is read with
``limit(n: page_size, offset: k * page_size)`` until no series fills a page (Flux's limit applies per
table, i.e. per series), so memory stays bounded however long the window. Measurement, tags and fields
map to bronze records by the `influx` settings (metric from the measurement name or from the field name).

Forecasts go to the `forecast_measurement` (default ``energy_forecast``) with tags ``building_id`` and
``model`` and fields ``yhat``, ``p10``, ``p50``, ``p90``, ``horizon_h`` and ``issued_at``: Grafana draws it
beside the actual ``energy`` series. One point per building, model and hour: a newer issue overwrites
the older one, which is what "actual vs latest forecast" needs (gold.forecasts keeps every issue).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Iterator

import pandas as pd
import pyarrow as pa

from lakehouse.bronze import LandingResult
from lakehouse.buildings import METRICS
from wattflow.log import get_logger

log = get_logger(__name__)


class InfluxError(RuntimeError):
    """InfluxDB refused a request; the message carries its status and reason (bad token, missing bucket)."""


def flux_string(value: str) -> str:
    """A Flux string literal (quotes and backslashes escaped, interpolation disabled)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("${", "\\${") + '"'


def flux_time(value: datetime) -> str:
    value = value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ").replace(".000000Z", "Z")


def readings_query(
    cfg: Any, start: datetime, stop: datetime, *, metrics: list[str] | None = None,
    building_ids: list[str] | None = None, limit: int | None = None, offset: int = 0,
) -> str:
    """The Flux that reads readings in [start, stop), optionally for some metrics and buildings, one page."""
    metrics = list(metrics or METRICS)
    lines = [f"from(bucket: {flux_string(cfg.bucket)})", f"  |> range(start: {flux_time(start)}, stop: {flux_time(stop)})"]
    if cfg.metric_from == "measurement":
        lines.append("  |> filter(fn: (r) => " + " or ".join(f"r._measurement == {flux_string(m)}" for m in metrics) + ")")
        lines.append(f"  |> filter(fn: (r) => r._field == {flux_string(cfg.value_field)})")
    else:
        lines.append(f"  |> filter(fn: (r) => r._measurement == {flux_string(cfg.measurement)})")
        lines.append("  |> filter(fn: (r) => " + " or ".join(f"r._field == {flux_string(m)}" for m in metrics) + ")")
    if building_ids:
        tag = cfg.building_tag
        lines.append("  |> filter(fn: (r) => " + " or ".join(f"r[{flux_string(tag)}] == {flux_string(b)}" for b in building_ids) + ")")
    if limit:
        lines.append(f"  |> limit(n: {int(limit)}, offset: {int(offset)})")
    return "\n".join(lines)


def records_from_frame(frame: pd.DataFrame, cfg: Any) -> pd.DataFrame:
    """Flux result rows (``_time``, ``_value``, ``_measurement``, ``_field``, tags) as raw bronze records."""
    if frame.empty:
        return pd.DataFrame(columns=["building_id", "sensor_id", "metric", "ts", "value", "unit"])
    metric = frame["_measurement"] if cfg.metric_from == "measurement" else frame["_field"]

    def tag(name: str) -> pd.Series:
        return frame[name] if name in frame.columns else pd.Series([None] * len(frame), index=frame.index, dtype=object)

    return pd.DataFrame(
        {
            "building_id": tag(cfg.building_tag),
            "sensor_id": tag(cfg.sensor_tag),
            "metric": metric,
            "ts": pd.to_datetime(frame["_time"], utc=True),
            "value": frame["_value"],
            "unit": tag(cfg.unit_tag),
        }
    ).reset_index(drop=True)


@dataclass(frozen=True)
class PullResult:
    pages: int
    rows: int
    landing: LandingResult | None  # summed over pages
    rows_inserted: int  # into bronze.sensor_readings, over all pages
    rows_updated: int


class InfluxSource:
    def __init__(self, settings: Any | None = None, *, url: str | None = None, token: str | None = None, org: str | None = None) -> None:
        from influxdb_client import InfluxDBClient

        from wattflow.settings import get_settings

        self.settings = settings or get_settings()
        self.cfg = self.settings.influx
        self.url = url or self.cfg.url
        if not self.url:
            raise InfluxError("no InfluxDB URL: set WATTFLOW_INFLUX__URL (and WATTFLOW_INFLUX__TOKEN)")
        self.org = org or self.cfg.org
        self.client = InfluxDBClient(
            url=self.url, token=token if token is not None else self.cfg.token, org=self.org,
            timeout=int(self.cfg.timeout_s * 1000),
        )

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> "InfluxSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _query_frame(self, flux: str) -> pd.DataFrame:
        from influxdb_client.rest import ApiException

        import warnings

        from influxdb_client.client.warnings import MissingPivotFunction

        try:
            with warnings.catch_warnings():
                # Long format (one row per series and time) is exactly the bronze shape: no pivot wanted.
                warnings.simplefilter("ignore", MissingPivotFunction)
                result = self.client.query_api().query_data_frame(flux, org=self.org)
        except ApiException as err:
            raise InfluxError(f"InfluxDB {self.url} answered {err.status}: {_reason(err)}") from None
        frames = result if isinstance(result, list) else [result]
        frames = [f for f in frames if not f.empty]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def pages(
        self, start: datetime, stop: datetime, *, metrics: list[str] | None = None, building_ids: list[str] | None = None
    ) -> Iterator[pd.DataFrame]:
        """Raw bronze records for [start, stop), one page at a time."""
        window = timedelta(hours=self.cfg.page_window_h)
        size = self.cfg.page_size
        slice_start = start
        while slice_start < stop:
            slice_stop = min(stop, slice_start + window)
            offset = 0
            while True:
                flux = readings_query(self.cfg, slice_start, slice_stop, metrics=metrics, building_ids=building_ids,
                                      limit=size, offset=offset)
                frame = self._query_frame(flux)
                if not frame.empty:
                    yield records_from_frame(frame, self.cfg)
                # Flux limits each series: another page is needed only while some series filled this one.
                fullest = int(frame.groupby("table").size().max()) if not frame.empty else 0
                if fullest < size:
                    break
                offset += size
            slice_start = slice_stop

    def write_forecasts(self, forecasts: pa.Table | pd.DataFrame, *, bucket: str | None = None) -> int:
        """Write gold.forecasts rows as `forecast_measurement` points; returns the number of points."""
        from influxdb_client import WritePrecision
        from influxdb_client.client.write_api import SYNCHRONOUS
        from influxdb_client.rest import ApiException

        frame = forecasts.to_pandas() if isinstance(forecasts, pa.Table) else forecasts
        lines = forecast_lines(frame, self.cfg.forecast_measurement)
        if not lines:
            return 0
        try:
            with self.client.write_api(write_options=SYNCHRONOUS) as api:
                api.write(bucket=bucket or self.cfg.forecast_bucket, org=self.org, record=lines, write_precision=WritePrecision.S)
        except ApiException as err:
            raise InfluxError(f"InfluxDB {self.url} answered {err.status}: {_reason(err)}") from None
        return len(lines)


def _reason(err: Any) -> str:
    import json

    try:
        return json.loads(err.body).get("message", err.body)
    except (TypeError, ValueError):
        return str(err.body or err.reason)


def _escape_tag(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")


def forecast_lines(frame: pd.DataFrame, measurement: str) -> list[str]:
    """Line protocol (seconds precision) for forecast rows: tags building_id, model; numeric fields."""
    if frame.empty:
        return []
    ts = pd.to_datetime(frame["ts"], utc=True)
    issued = pd.to_datetime(frame["issued_at"], utc=True)
    out = []
    for i, row in enumerate(frame.itertuples(index=False)):
        fields = []
        for name, column in (("yhat", "yhat"), ("p10", "yhat_p10"), ("p50", "yhat_p50"), ("p90", "yhat_p90")):
            value = getattr(row, column, None)
            if value is not None and pd.notna(value):
                fields.append(f"{name}={float(value)!r}")
        if not fields:
            continue
        fields.append(f"horizon_h={int(row.horizon_h)}i")
        fields.append(f"issued_at={int(issued.iloc[i].timestamp())}i")
        tags = f"building_id={_escape_tag(row.building_id)},model={_escape_tag(row.model_name)}"
        out.append(f"{_escape_tag(measurement)},{tags} {','.join(fields)} {int(ts.iloc[i].timestamp())}")
    return out


def ingest_influx(
    start: datetime | str,
    stop: datetime | str,
    *,
    metrics: list[str] | None = None,
    building_ids: list[str] | None = None,
    engine: Any | None = None,
    registry: Any | None = None,
    source: InfluxSource | None = None,
    now: datetime | None = None,
) -> PullResult:
    """Pull [start, stop) from InfluxDB into bronze, page by page (each page is one idempotent upsert)."""
    from lakehouse.engine import get_engine
    from lakehouse.registry_file import load_registry
    from lakehouse.sources.screen import land_source_readings

    start_ts, stop_ts = (pd.Timestamp(t) for t in (start, stop))
    start_dt = (start_ts.tz_localize("UTC") if start_ts.tzinfo is None else start_ts).to_pydatetime()
    stop_dt = (stop_ts.tz_localize("UTC") if stop_ts.tzinfo is None else stop_ts).to_pydatetime()
    engine = engine or get_engine()
    registry = registry if registry is not None else load_registry()
    own = source is None
    source = source or InfluxSource()
    pages = rows = inserted = updated = 0
    totals: LandingResult | None = None
    try:
        for page in source.pages(start_dt, stop_dt, metrics=metrics, building_ids=building_ids):
            pages += 1
            rows += len(page)
            result = land_source_readings(page, source=f"influx:{source.cfg.bucket}", registry=registry, engine=engine, now=now)
            totals = result if totals is None else _add(totals, result)
            if result.readings is not None:
                inserted += result.readings.rows_inserted
                updated += result.readings.rows_updated
            log.info("influx page landed", page=pages, rows=len(page), landed=result.landed, quarantined=result.quarantined)
    finally:
        if own:
            source.close()
    return PullResult(pages, rows, totals, inserted, updated)


def _add(a: LandingResult, b: LandingResult) -> LandingResult:
    reasons = dict(a.reasons)
    for k, v in b.reasons.items():
        reasons[k] = reasons.get(k, 0) + v
    return LandingResult(
        received=a.received + b.received, landed=a.landed + b.landed, quarantined=a.quarantined + b.quarantined,
        readings=b.readings or a.readings, quarantine=b.quarantine or a.quarantine, reasons=reasons,
    )
