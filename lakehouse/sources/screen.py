"""Source-side screening: what a live source can send wrong that bronze's type checks cannot see.

Bronze (`lakehouse.bronze.validate_readings`) rejects records that are malformed as records: missing
fields, unparseable timestamps, non-numeric or non-finite values, unknown buildings and sensors. A stream
also sends records that parse fine and are still wrong: a value in another unit (Wh sent as kWh shows as
a 1000x magnitude), a timestamp days in the future (a device clock), the same reading twice with two
values. `screen_readings` finds those, column at a time; `land_source_readings` is the one call every
source uses: screen, land the rest through `land_readings`, quarantine what was screened out.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lakehouse.bronze import LandingResult, land_readings, record_id
from lakehouse.buildings import BuildingRegistry
from lakehouse.parsing import column_or_nulls, parse_numbers, parse_timestamps, raw_json, text_values, to_arrow_columns
from lakehouse.schemas import QUARANTINE_READINGS

# Units a source may send that we convert to the sensor's unit: (from, to) -> (factor, offset).
UNIT_CONVERSIONS: dict[tuple[str, str], tuple[float, float]] = {
    ("Wh", "kWh"): (1e-3, 0.0),
    ("MWh", "kWh"): (1e3, 0.0),
    ("degF", "degC"): (5.0 / 9.0, -32.0 * 5.0 / 9.0),
    ("K", "degC"): (1.0, -273.15),
    ("C", "degC"): (1.0, 0.0),
    ("°C", "degC"): (1.0, 0.0),
    ("percent", "%"): (1.0, 0.0),
}


@dataclass(frozen=True)
class Rejected:
    """A record screened out before bronze, as received."""

    raw: dict[str, Any] | str  # the record, or the payload text when it did not parse
    check_name: str
    reason: str
    context: dict[str, Any] | None = None  # ids known from elsewhere (an MQTT topic) when raw is text


@dataclass(frozen=True)
class Screened:
    good: pa.Table  # records for `land_readings` (values converted to the sensor's unit)
    rejected: list[Rejected]


def screen_readings(
    records: Any, registry: BuildingRegistry, *, now: datetime, screen: Any, max_future_skew_h: float
) -> Screened:
    """Split records into those for bronze and those screened out (unit, magnitude, future, duplicate).

    Records that bronze will reject anyway (unparseable, unknown sensor) pass through untouched, so each
    bad record is quarantined once, by the check that knows what is wrong with it.
    """
    table, raw_rows = to_arrow_columns(records)
    n = table.num_rows
    if n == 0:
        return Screened(table, [])
    building = text_values(column_or_nulls(table, "building_id"))
    sensor = text_values(column_or_nulls(table, "sensor_id"))
    ts, _ = parse_timestamps(column_or_nulls(table, "ts"))
    values, _, _ = parse_numbers(column_or_nulls(table, "value", pa.float64()))
    unit = text_values(column_or_nulls(table, "unit"))

    # Per (building, sensor) facts from the registry, looked up once per distinct pair.
    pair_idx, pair_keys = _pair_codes(building, sensor)
    facts = []
    by_id = {b.building_id: b for b in registry.buildings}  # registry.get scans the list: per pair, that is O(B^2)
    for b_id, s_id in pair_keys:
        b = by_id.get(str(b_id)) if b_id is not None and s_id is not None else None
        s = b.sensor(str(s_id)) if b is not None else None
        if s is None:
            facts.append((None, None, np.nan, np.nan))
            continue
        lo, hi = _bounds(s.metric, b.floor_area_m2, screen)
        facts.append((s.metric, s.unit, lo, hi))
    known = np.array([f[0] is not None for f in facts], dtype=bool)[pair_idx]
    sensor_unit = pa.array(np.array([f[1] for f in facts], dtype=object)[pair_idx], pa.string())

    check = np.full(n, "", dtype=object)
    reasons: dict[int, str] = {}

    # Units: convert what converts, reject what does not. Missing unit means the sensor's unit.
    factor = np.ones(n)
    shift = np.zeros(n)
    differs = pc.fill_null(pc.not_equal(unit, sensor_unit), False).to_numpy(zero_copy_only=False) & known
    for i in np.flatnonzero(differs):
        sent, expected = unit[i].as_py(), sensor_unit[i].as_py()
        conv = UNIT_CONVERSIONS.get((sent, expected))
        if conv is None:
            check[i] = "unit_mismatch"
            reasons[i] = f"field 'unit': {sent!r} does not convert to the sensor's unit {expected!r}"
        else:
            factor[i], shift[i] = conv
    converted = values * factor + shift

    # Magnitude: a value outside what the metric can physically be is another unit in disguise.
    lo = np.array([f[2] for f in facts])[pair_idx]
    hi = np.array([f[3] for f in facts])[pair_idx]
    with np.errstate(invalid="ignore"):
        implausible = known & np.isfinite(converted) & ((converted < lo) | (converted > hi)) & (check == "")
    for i in np.flatnonzero(implausible):
        check[i] = "implausible_magnitude"
        metric = facts[pair_idx[i]][0]
        hint = " (a Wh value sent as kWh?)" if metric and metric.startswith("energy") and converted[i] > hi[i] else ""
        reasons[i] = (
            f"field 'value': {values[i]:g} {unit[i].as_py() or facts[pair_idx[i]][1]} is outside the plausible range "
            f"[{lo[i]:g}, {hi[i]:g}] {facts[pair_idx[i]][1]} for {metric}{hint}"
        )

    # Timestamps beyond the allowed clock skew.
    ts_us = ts.cast(pa.int64()).to_numpy(zero_copy_only=False)
    ts_valid = ~pc.is_null(ts).to_numpy(zero_copy_only=False)
    limit_us = int((now + timedelta(hours=max_future_skew_h)).timestamp() * 1e6)
    future = ts_valid & (np.nan_to_num(ts_us.astype(np.float64), nan=0) > limit_us) & (check == "")
    for i in np.flatnonzero(future):
        reasons[i] = f"field 'ts': {ts[i].as_py().isoformat()} is more than {max_future_skew_h:g} h after {now.isoformat()}"
        check[i] = "future_timestamp"

    # Duplicates inside the batch: the first copy lands, later copies are quarantined, with a
    # different reason when the value differs (a device correcting itself or two devices on one id).
    metric_col = text_values(column_or_nulls(table, "metric"))
    key_ok = known & ts_valid & np.isfinite(values) & (check == "")  # bronze rejects the rest itself
    if key_ok.sum() > 1:
        idx = np.flatnonzero(key_ok)
        key = pa.table(
            {"p": pa.array(pair_idx[idx]), "m": metric_col.take(pa.array(idx)), "t": pa.array(ts_us[idx])}
        )
        codes = _row_codes(key)
        order = np.argsort(codes, kind="stable")
        sorted_codes = codes[order]
        repeat = np.zeros(len(idx), dtype=bool)
        repeat[order[1:]] = sorted_codes[1:] == sorted_codes[:-1]
        if repeat.any():
            first_of = {}
            for j in order:
                first_of.setdefault(codes[j], j)
            for j in np.flatnonzero(repeat):
                i = idx[j]
                first = idx[first_of[codes[j]]]
                same = converted[i] == converted[first] or (np.isnan(converted[i]) and np.isnan(converted[first]))
                check[i] = "duplicate" if same else "conflicting_duplicate"
                reasons[i] = (
                    f"duplicate of the reading for {building[i].as_py()}/{sensor[i].as_py()} at {ts[i].as_py().isoformat()} earlier in the batch"
                    if same
                    else f"field 'value': {values[i]:g} conflicts with {values[first]:g} for {building[i].as_py()}/{sensor[i].as_py()} "
                    f"at {ts[i].as_py().isoformat()} earlier in the batch; the first is kept"
                )

    bad = check != ""
    good = table
    changed = ((factor != 1.0) | (shift != 0.0)) & ~bad
    if changed.any():
        old = table.column("value")
        if pa.types.is_floating(old.type) or pa.types.is_integer(old.type):
            new_values = pa.array(np.where(changed, converted, values), pa.float64())
        else:  # text values (some may not parse): bronze parses the converted ones as text too
            texts = old.to_pylist()
            new_values = pa.array([repr(float(converted[i])) if changed[i] else texts[i] for i in range(n)], pa.string())
        good = good.set_column(good.column_names.index("value"), "value", new_values)
        new_units = pc.if_else(pa.array(changed), sensor_unit, unit)
        good = good.set_column(good.column_names.index("unit"), "unit", new_units)
    rejected = []
    if bad.any():
        rows = raw_rows.take(np.flatnonzero(bad))
        for i, raw in zip(np.flatnonzero(bad), rows):
            rejected.append(Rejected(raw, str(check[i]), reasons[i]))
        good = good.filter(pa.array(~bad))
    return Screened(good, rejected)


def _pair_codes(building: pa.Array, sensor: pa.Array) -> tuple[np.ndarray, list[tuple[Any, Any]]]:
    """A code per row for its (building_id, sensor_id) pair, and the distinct pairs (None for a missing id)."""
    codes, uniques = [], []
    for col in (building, sensor):
        u = pc.unique(col).drop_null()
        c = pc.index_in(col, value_set=u).to_numpy(zero_copy_only=False)
        codes.append(np.nan_to_num(c.astype(np.float64), nan=-1).astype(np.int64) + 1)  # 0 = missing
        uniques.append([None, *u.to_pylist()])
    combined = codes[0] * len(uniques[1]) + codes[1]
    distinct, inverse = np.unique(combined, return_inverse=True)
    keys = [(uniques[0][v // len(uniques[1])], uniques[1][v % len(uniques[1])]) for v in distinct.tolist()]
    return inverse.astype(np.int64), keys


def _row_codes(key: pa.Table) -> np.ndarray:
    out = np.zeros(key.num_rows, dtype=np.int64)
    for name in key.column_names:
        col = key.column(name)
        uniques = pc.unique(col)
        codes = pc.index_in(col, value_set=uniques).to_numpy(zero_copy_only=False).astype(np.int64)
        out = out * (len(uniques) + 1) + codes
    return out


def _bounds(metric: str, floor_area_m2: float | None, screen: Any) -> tuple[float, float]:
    if metric in ("energy", "energy_cumulative"):
        # A register only grows, so its bound is not per reading; intervals are bounded by a floor area the
        # owner gave. Without one there is no upper bound here: silver's `unit_mixup_wh_kwh` judges each
        # reading against the meter's own median instead (a Wh-for-kWh mix-up is a ~1000x jump).
        if metric == "energy_cumulative" or not floor_area_m2:
            return (0.0, np.inf)
        return (0.0, floor_area_m2 * screen.max_energy_kwh_per_m2)
    ranges = {
        "indoor_temperature": screen.indoor_temperature_c,
        "indoor_humidity": screen.indoor_humidity_pct,
        "co2": screen.co2_ppm,
        "occupancy": screen.occupancy,
    }
    lo, hi = ranges.get(metric, (-np.inf, np.inf))
    return float(lo), float(hi)


def quarantine_table(rejected: list[Rejected], *, source: str, batch_id: str, now: datetime) -> pa.Table:
    """Rejected records in the `quarantine.sensor_readings` contract (id = hash of source and raw record)."""
    rows = []
    for r in rejected:
        raw_text = r.raw if isinstance(r.raw, str) else raw_json(r.raw)
        fields = r.raw if isinstance(r.raw, dict) else (r.context or {})
        ts, _ = parse_timestamps(pa.array([fields.get("ts")]) if fields.get("ts") is not None else pa.nulls(1, pa.string()))
        rows.append(
            {
                "record_id": record_id(source, raw_text),
                "source": source,
                "raw": raw_text,
                "building_id": _text(fields.get("building_id")),
                "sensor_id": _text(fields.get("sensor_id")),
                "metric": _text(fields.get("metric")),
                "ts": ts[0].as_py(),
                "check_name": r.check_name,
                "reason": r.reason,
                "batch_id": batch_id,
                "ingested_at": now,
            }
        )
    return pa.Table.from_pylist(rows, schema=QUARANTINE_READINGS.schema)


def _text(v: Any) -> str | None:
    return None if v is None else str(v)


def land_source_readings(
    records: Any,
    *,
    source: str,
    registry: BuildingRegistry,
    engine: Any,
    pre_rejected: list[Rejected] | None = None,
    batch_id: str | None = None,
    now: datetime | None = None,
    settings: Any | None = None,
) -> LandingResult:
    """Screen, land the rest in bronze, quarantine everything screened out; one `LandingResult` for all.

    `pre_rejected` carries what a source rejected before it had records (a payload that is not JSON).
    """
    from wattflow.settings import get_settings

    settings = settings or get_settings()
    now = now or datetime.now(timezone.utc)
    batch_id = batch_id or f"{source}-{now:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
    screened = screen_readings(
        records, registry, now=now, screen=settings.screen, max_future_skew_h=settings.quality.max_future_skew_h
    )
    result = land_readings(screened.good, source=source, registry=registry, engine=engine, batch_id=batch_id, now=now)
    rejected = [*(pre_rejected or []), *screened.rejected]
    if not rejected:
        return result
    write = engine.upsert(QUARANTINE_READINGS, quarantine_table(rejected, source=source, batch_id=batch_id, now=now))
    reasons = dict(result.reasons)
    for r in rejected:
        reasons[r.check_name] = reasons.get(r.check_name, 0) + 1
    return replace(
        result,
        received=result.received + len(rejected),
        quarantined=result.quarantined + len(rejected),
        quarantine=write if result.quarantine is None else replace(
            write, rows_inserted=write.rows_inserted + result.quarantine.rows_inserted
        ),
        reasons=reasons,
    )
