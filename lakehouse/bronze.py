"""Landing raw records in bronze: every record either lands or goes to quarantine with its reason.

The core (`validate_readings`, `validate_weather`) takes raw records and returns the rows to land and the
rows to quarantine, with no storage involved; `land_readings` and `land_weather` are the thin shell that
adds bookkeeping columns and upserts both through a `TableEngine`. Everything is column-at-a-time: only
rejected rows ever become Python objects.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from lakehouse.buildings import BuildingRegistry
from lakehouse.engine import TableEngine, WriteResult
from lakehouse.parsing import (
    UTC_US,
    RawRows,
    as_array,
    column_or_nulls,
    null_mask,
    parse_numbers,
    parse_timestamps,
    raw_json,
    text_values,
    to_arrow_columns,
)
from lakehouse.schemas import QUARANTINE_READINGS, QUARANTINE_WEATHER, SENSOR_READINGS, WEATHER

Records = pa.Table | pd.DataFrame | Iterable[dict[str, Any]]

READING_FIELDS = ("building_id", "sensor_id", "metric", "ts", "value")
WEATHER_KINDS = ("observation", "forecast")
WEATHER_VALUES = (
    "temperature_c",
    "relative_humidity_pct",
    "dew_point_c",
    "wind_speed_ms",
    "cloud_cover_pct",
    "solar_radiation_wm2",
)


@dataclass(frozen=True)
class LandingResult:
    """What became of a batch. `landed` counts records that passed validation and were handed to the
    upsert; the WriteResults say how many of them were new, changed or already there."""

    received: int
    landed: int
    quarantined: int
    readings: WriteResult | None  # None when no record passed
    quarantine: WriteResult | None  # None when no record was rejected
    reasons: dict[str, int] = field(default_factory=dict)  # check_name -> rejected records


@dataclass(frozen=True)
class Validated:
    """A batch split in two: rows fit to land (contract columns, no bookkeeping) and rejected rows."""

    good: pa.Table
    rejected: pa.Table  # quarantine columns without source/batch_id/ingested_at; `raw` is JSON text
    # record_id hashes the source with the raw text: the same text from two sources is two records.
    reasons: dict[str, int]


class _Rejections:
    """First failing check wins: a record is quarantined once, under the check that stopped it."""

    def __init__(self, n: int) -> None:
        self.check = np.full(n, -1, dtype=np.int16)
        self.names: list[str] = []
        self.messages: list[Any] = []

    def add(self, name: str, mask: np.ndarray, message) -> None:
        fresh = mask & (self.check < 0)
        if fresh.any():
            self.check[fresh] = len(self.names)
            self.names.append(name)
            self.messages.append(message)

    @property
    def bad(self) -> np.ndarray:
        return self.check >= 0


def _show(v: Any) -> str:
    return repr(v) if isinstance(v, str) else str(v)


def record_id(source: str, raw: str) -> str:
    """Stable id of a raw record: the same record from the same source always gets the same id."""
    return hashlib.sha256(f"{source}\x1f{raw}".encode()).hexdigest()[:32]


def _reject_table(
    contract_fields: list[str],
    rej: _Rejections,
    raw_rows: RawRows,
    source: str,
    columns: dict[str, pa.Array],
    ts: pa.Array,
    extra: dict[str, pa.Array] | None = None,
) -> pa.Table:
    bad_idx = np.flatnonzero(rej.bad)
    raws = raw_rows.take(bad_idx)
    texts = [raw_json(r) for r in raws]
    reasons, checks = [], []
    for i, raw in zip(bad_idx, raws):
        k = int(rej.check[i])
        checks.append(rej.names[k])
        reasons.append(rej.messages[k](raw))
    take = pa.array(bad_idx, type=pa.int64())
    data: dict[str, Any] = {
        "record_id": [record_id(source, t) for t in texts],
        "raw": texts,
        "check_name": checks,
        "reason": reasons,
        "ts": ts.take(take),
    }
    for name, arr in {**columns, **(extra or {})}.items():
        data[name] = arr.take(take)
    return pa.table({c: data[c] for c in contract_fields if c in data})


def _factorise(arr: pa.Array) -> tuple[list[str | None], np.ndarray]:
    """Distinct values (null included) and each row's index into them, in one hash pass."""
    encoded = pc.dictionary_encode(arr, null_encoding="encode")
    if isinstance(encoded, pa.ChunkedArray):
        encoded = encoded.combine_chunks()
    return encoded.dictionary.to_pylist(), encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)


def _field_reason(name: str, what: str):
    return lambda raw: f"field {name!r}: {what} {_show(raw.get(name))}"


def validate_readings(records: Records, registry: BuildingRegistry, *, source: str = "") -> Validated:
    """Split raw sensor readings into rows to land (calibrated, typed) and rejected rows with reasons.

    Checks, first failure wins: missing_field, unparseable_timestamp, non_numeric_value,
    non_finite_value, unknown_building, unknown_sensor, metric_mismatch.
    """
    table, raw_rows = to_arrow_columns(records)
    n = table.num_rows
    rej = _Rejections(n)

    # Ids are checked per distinct value (a few dozen), then mapped back to millions of rows by code.
    ids = {c: text_values(column_or_nulls(table, c)) for c in ("building_id", "sensor_id", "metric")}
    codes = {c: _factorise(arr) for c, arr in ids.items()}
    for name in READING_FIELDS:
        if name in codes:
            uniques, code = codes[name]
            blank = np.array([v is None or not v.strip() for v in uniques], dtype=bool)
            missing = blank[code] if blank.any() else np.zeros(n, dtype=bool)
        else:
            missing = null_mask(column_or_nulls(table, name))
        rej.add("missing_field", missing, lambda raw, name=name: f"missing field {name!r}")

    ts, ts_bad = parse_timestamps(column_or_nulls(table, "ts"))
    rej.add("unparseable_timestamp", ts_bad, _field_reason("ts", "unparseable timestamp"))
    values, non_numeric, non_finite = parse_numbers(column_or_nulls(table, "value", pa.float64()))
    rej.add("non_numeric_value", non_numeric, _field_reason("value", "non-numeric value"))
    rej.add("non_finite_value", non_finite, _field_reason("value", "non-finite value"))

    flat = [(b, s) for b in registry.buildings for s in b.sensors]
    (b_list, b_codes), (s_list, s_codes), (m_list, m_codes) = codes["building_id"], codes["sensor_id"], codes["metric"]
    b_known = {b.building_id for b in registry.buildings}
    b_is_known = np.array([v in b_known for v in b_list], dtype=bool)
    rej.add("unknown_building", ~b_is_known[b_codes], _field_reason("building_id", "unknown building"))

    pair_index = {(b.building_id, s.sensor_id): i for i, (b, s) in enumerate(flat)}
    if len(b_list) * len(s_list) <= 4_000_000:
        lookup = np.array([[pair_index.get((bv, sv), -1) for sv in s_list] for bv in b_list], dtype=np.int64)
        sensor_idx = lookup.reshape(len(b_list), len(s_list))[b_codes, s_codes]
    else:  # many distinct ids (a garbage batch): factorise the pairs instead of a dense table
        pair = b_codes * len(s_list) + s_codes
        uniq, inverse = np.unique(pair, return_inverse=True)
        per_pair = np.array(
            [pair_index.get((b_list[p // len(s_list)], s_list[p % len(s_list)]), -1) for p in uniq], dtype=np.int64
        )
        sensor_idx = per_pair[inverse]
    rej.add(
        "unknown_sensor",
        sensor_idx < 0,
        lambda raw: f"field 'sensor_id': unknown sensor {_show(raw.get('sensor_id'))} for building {_show(raw.get('building_id'))}",
    )

    safe_idx = np.where(sensor_idx < 0, 0, sensor_idx) if flat else np.zeros(n, dtype=np.int64)
    if flat:
        metric_names = sorted({s.metric for _, s in flat})
        sensor_metric = np.array([metric_names.index(s.metric) for _, s in flat], dtype=np.int64)
        unique_metric = np.array([metric_names.index(m) if m in metric_names else -1 for m in m_list], dtype=np.int64)
        mismatch = (sensor_idx >= 0) & (unique_metric[m_codes] != sensor_metric[safe_idx])
        rej.add(
            "metric_mismatch",
            mismatch,
            lambda raw: (
                f"field 'metric': {_show(raw.get('metric'))} but sensor {_show(raw.get('sensor_id'))} of building "
                f"{_show(raw.get('building_id'))} measures "
                f"{_show(registry.sensor(str(raw.get('building_id')), str(raw.get('sensor_id'))).metric)}"
            ),
        )
    b_arr, s_arr, m_arr = ids["building_id"], ids["sensor_id"], ids["metric"]

    good_mask = ~rej.bad
    n_good = int(good_mask.sum())
    reasons: dict[str, int] = {}
    for k, name in enumerate(rej.names):
        reasons[name] = reasons.get(name, 0) + int((rej.check == k).sum())

    # Calibration and default units from the registry.
    if flat:
        offsets = np.array([s.offset for _, s in flat], dtype=np.float64)
        scales = np.array([s.scale for _, s in flat], dtype=np.float64)
        if np.any(offsets != 0.0) or np.any(scales != 1.0):
            values = values * scales[safe_idx] + offsets[safe_idx]
    unit = text_values(column_or_nulls(table, "unit"))
    if unit.null_count and flat:
        default_units = pa.array([s.unit for _, s in flat], type=pa.string()).take(pa.array(safe_idx))
        unit = pc.if_else(pc.is_null(unit), default_units, unit)

    good_cols = {
        "building_id": b_arr,
        "sensor_id": s_arr,
        "metric": m_arr,
        "ts": ts,
        "value": pa.array(values, type=pa.float64()),
        "unit": unit,
    }
    good = pa.table(good_cols)
    if n_good < n:
        good = good.filter(pa.array(good_mask))
    if n_good == n:
        rejected = QUARANTINE_READINGS.schema.empty_table()
    else:
        rejected = _reject_table(QUARANTINE_READINGS.schema.names, rej, raw_rows, source, dict(ids), ts)
    return Validated(good=good, rejected=rejected, reasons=reasons)


def validate_weather(records: Records, *, source: str = "") -> Validated:
    """Split raw weather records into rows to land and rejected rows.

    Checks, first failure wins: missing_field (site_id, kind, ts; issued_at for forecasts),
    unknown_kind, unparseable_timestamp, non_numeric_value, non_finite_value. Missing weather values are
    allowed (a station may not report cloud cover); an observation's issued_at defaults to its ts.
    """
    table, raw_rows = to_arrow_columns(records)
    n = table.num_rows
    rej = _Rejections(n)
    ids = {c: text_values(column_or_nulls(table, c)) for c in ("site_id", "kind")}
    for name in ("site_id", "kind", "ts"):
        col = ids[name] if name in ids else column_or_nulls(table, name)
        rej.add("missing_field", null_mask(col), lambda raw, name=name: f"missing field {name!r}")
    kind = ids["kind"]
    is_forecast = pc.fill_null(pc.equal(kind, "forecast"), False).to_numpy(zero_copy_only=False)
    known_kind = pc.fill_null(pc.is_in(kind, value_set=pa.array(WEATHER_KINDS)), False).to_numpy(zero_copy_only=False)
    rej.add("unknown_kind", ~known_kind, _field_reason("kind", "unknown kind (observation|forecast expected)"))

    ts, ts_bad = parse_timestamps(column_or_nulls(table, "ts"))
    rej.add("unparseable_timestamp", ts_bad, _field_reason("ts", "unparseable timestamp"))
    issued_raw = column_or_nulls(table, "issued_at")
    issued, issued_bad = parse_timestamps(issued_raw)
    rej.add("missing_field", null_mask(issued_raw) & is_forecast, lambda raw: "missing field 'issued_at'")
    rej.add("unparseable_timestamp", issued_bad, _field_reason("issued_at", "unparseable timestamp"))
    issued = pc.if_else(pc.is_null(issued), ts, issued)

    numbers: dict[str, pa.Array] = {}
    for name in WEATHER_VALUES:
        values, non_numeric, non_finite = parse_numbers(column_or_nulls(table, name, pa.float64()))
        rej.add("non_numeric_value", non_numeric, _field_reason(name, "non-numeric value"))
        rej.add("non_finite_value", non_finite, _field_reason(name, "non-finite value"))
        numbers[name] = pa.array(values, type=pa.float64(), from_pandas=True)  # NaN -> null: not reported
    if numbers["dew_point_c"].null_count:  # derive what the source did not send
        derived = pa.array(
            dew_point_c(
                numbers["temperature_c"].to_numpy(zero_copy_only=False),
                numbers["relative_humidity_pct"].to_numpy(zero_copy_only=False),
            ),
            from_pandas=True,
        )
        numbers["dew_point_c"] = pc.if_else(pc.is_null(numbers["dew_point_c"]), derived, numbers["dew_point_c"])

    reasons: dict[str, int] = {}
    for k, name in enumerate(rej.names):
        reasons[name] = reasons.get(name, 0) + int((rej.check == k).sum())
    good = pa.table({"site_id": ids["site_id"], "kind": kind, "issued_at": issued, "ts": ts, **numbers})
    if rej.bad.any():
        good = good.filter(pa.array(~rej.bad))
        rejected = _reject_table(QUARANTINE_WEATHER.schema.names, rej, raw_rows, source, ids, ts, {"issued_at": issued})
    else:
        rejected = QUARANTINE_WEATHER.schema.empty_table()
    return Validated(good=good, rejected=rejected, reasons=reasons)


def dew_point_c(temperature_c: np.ndarray, relative_humidity_pct: np.ndarray) -> np.ndarray:
    """Magnus formula (Alduchov & Eskridge coefficients), good to ~0.4 K for -40..50 degC."""
    a, b = 17.625, 243.04
    with np.errstate(divide="ignore", invalid="ignore"):
        gamma = np.log(np.clip(relative_humidity_pct, 1e-3, 100.0) / 100.0) + a * temperature_c / (b + temperature_c)
        return b * gamma / (a - gamma)


def constant_text(value: str, n: int) -> pa.Array:
    """A string column holding one value n times, built from buffers (a cast would copy row by row)."""
    data = value.encode()
    if (n + 1) * len(data) >= 2**31 - 1:
        return pa.array([value], pa.large_string()).take(np.zeros(n, dtype=np.int64)).cast(pa.string())
    offsets = np.arange(0, (n + 1) * len(data), max(len(data), 1), dtype=np.int32)[: n + 1] if data else np.zeros(n + 1, np.int32)
    return pa.Array.from_buffers(pa.string(), n, [None, pa.py_buffer(offsets), pa.py_buffer(data * n)])


def _bookkeeping(table: pa.Table, source: str, batch_id: str, now: datetime) -> pa.Table:
    n = table.num_rows
    constant = lambda v: constant_text(v, n)  # noqa: E731
    stamp = pa.array(np.full(n, int(now.timestamp() * 1_000_000), dtype=np.int64)).cast(UTC_US)
    for name, arr in (("source", constant(source)), ("batch_id", constant(batch_id)), ("ingested_at", stamp)):
        if name in table.column_names:
            table = table.drop_columns([name])
        table = table.append_column(name, arr)
    return table


def _land(
    validated: Validated,
    received: int,
    *,
    target,
    quarantine_target,
    source: str,
    engine: TableEngine,
    batch_id: str | None,
    now: datetime | None,
) -> LandingResult:
    now = now or datetime.now(timezone.utc)
    if now.tzinfo is None:
        now = now.replace(tzinfo=timezone.utc)
    batch_id = batch_id or f"{source}-{now:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
    readings = None
    if validated.good.num_rows:
        readings = engine.upsert(target, _bookkeeping(validated.good, source, batch_id, now))
    quarantine = None
    if validated.rejected.num_rows:
        quarantine = engine.upsert(quarantine_target, _bookkeeping(validated.rejected, source, batch_id, now))
    return LandingResult(
        received=received,
        landed=validated.good.num_rows,
        quarantined=validated.rejected.num_rows,
        readings=readings,
        quarantine=quarantine,
        reasons=dict(validated.reasons),
    )


def land_readings(
    records: Records,
    *,
    source: str,
    registry: BuildingRegistry,
    engine: TableEngine,
    batch_id: str | None = None,
    now: datetime | None = None,
) -> LandingResult:
    """Land raw sensor readings in `bronze.sensor_readings`; rejected records go to `quarantine.sensor_readings`.

    Records carry building_id, sensor_id, metric, ts (ISO text, datetime or epoch), value and optionally
    unit (default: the sensor's). Calibration (``raw * scale + offset``) from the registry is applied.
    Re-landing the same batch changes nothing, in either table.
    """
    validated = validate_readings(records, registry, source=source)
    received = validated.good.num_rows + validated.rejected.num_rows
    return _land(
        validated,
        received,
        target=SENSOR_READINGS,
        quarantine_target=QUARANTINE_READINGS,
        source=source,
        engine=engine,
        batch_id=batch_id,
        now=now,
    )


def land_weather(
    records: Records,
    *,
    source: str,
    engine: TableEngine,
    batch_id: str | None = None,
    now: datetime | None = None,
) -> LandingResult:
    """Land weather observations and forecasts in `bronze.weather`; rejects go to `quarantine.weather`."""
    validated = validate_weather(records, source=source)
    received = validated.good.num_rows + validated.rejected.num_rows
    return _land(
        validated,
        received,
        target=WEATHER,
        quarantine_target=QUARANTINE_WEATHER,
        source=source,
        engine=engine,
        batch_id=batch_id,
        now=now,
    )
