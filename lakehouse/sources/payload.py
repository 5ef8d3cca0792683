"""The sensor stream's payload format, one module for every transport (MQTT, Kafka, BACnet gateways).

Two forms travel in a message; a consumer accepts both, on any topic, mixed:

**JSON readings** (as building gateways send today): one reading object or a list of them,
``{"building_id": "b1", "sensor_id": "m1", "metric": "energy", "ts": "2026-01-05T00:00:00Z", "value": 1.5,
"unit": "kWh"}``. Ids the transport carries (an MQTT topic's levels, a Kafka key) fill what a reading leaves out.

**Compact batch** (many readings per message, columns instead of objects, about a fifth of the bytes and a
fraction of the decoding cost)::

    {"format": "wattflow.readings/v1",
     "building_id": "b1",                                   # optional where the transport names it
     "sensors": [{"sensor_id": "m1", "metric": "energy", "unit": "kWh"}, ...],
     "sensor": [0, 1, 0, 1],                                # per reading: an index into "sensors"
     "ts": [1767571200, 1767571200, 1767572100, ...],       # per reading: epoch seconds UTC (or ms, or ISO text)
     "value": [1.5, 21.3, 1.6, 21.4]}                       # per reading: a number (null or NaN: bronze rejects it)

Decoding never raises. A message that cannot be decoded at all (not UTF-8 JSON, a batch whose columns
differ in length, an unknown format version) becomes one `Rejected` whose raw text is the transport's
origin (topic; Kafka adds partition and offset) plus the payload as received; a reading that cannot be
one (not an object, an index outside "sensors", a timestamp that does not parse) becomes a `Rejected`
of its own, and the good readings beside it are kept.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lakehouse.parsing import EPOCH_MAX_ABS_S, EPOCH_MS_THRESHOLD, UTC_US, parse_timestamps, to_arrow_columns
from lakehouse.sources.screen import Rejected

BATCH_FORMAT = "wattflow.readings/v1"
READING_FIELDS = ("building_id", "sensor_id", "metric", "ts", "value", "unit")
# The columns (and types) of a decoded compact batch; JSON readings come as received, typed by bronze.
BATCH_SCHEMA = pa.schema(
    [
        ("building_id", pa.string()),
        ("sensor_id", pa.string()),
        ("metric", pa.string()),
        ("ts", UTC_US),
        ("value", pa.float64()),
        ("unit", pa.string()),
    ]
)

# A reading's fields are JSON scalars; anything else (an object, an array) is not a reading field.
_SCALARS = (str, int, float, bool, type(None))


@dataclass
class BatchColumns:
    """A compact batch's good readings as NumPy columns; a micro-batch of many messages becomes one Arrow
    table in a handful of vectorised steps (`readings_table`), not a few dozen Arrow calls per message."""

    building_id: str
    sensors: list[tuple[str, str, str | None]]  # (sensor_id, metric, unit)
    sensor: np.ndarray  # int64 index into sensors, per reading
    ts_us: np.ndarray  # int64 epoch microseconds UTC (0 where ts_null)
    value: np.ndarray  # float64 (NaN where value_null, or NaN as sent)
    ts_null: np.ndarray | None = None
    value_null: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.sensor)


@dataclass
class Decoded:
    """What one message holds: reading objects (JSON form), columns (batch form), and what is not a reading."""

    records: list[dict[str, Any]] = field(default_factory=list)
    columns: BatchColumns | None = None
    rejected: list[Rejected] = field(default_factory=list)
    ids: dict[str, str] = field(default_factory=dict)

    @property
    def readings(self) -> int:
        return len(self.records) + (len(self.columns) if self.columns is not None else 0)

    @property
    def batch(self) -> pa.Table | None:
        """The batch form's readings as a table (BATCH_SCHEMA); None for JSON readings."""
        return columns_table([self.columns]) if self.columns is not None else None


def _payload_text(payload: bytes) -> str:
    return payload.decode("utf-8", "replace")


def _raw(origin: dict[str, Any], item: Any, payload: bytes) -> str:
    """The quarantine's raw text: where the message came from plus the item as received. An item too deep
    to re-serialise (it parsed, but json.dumps needs a few more stack frames) is kept as the payload's text."""
    try:
        return json.dumps({**origin, "payload": item}, default=str)
    except (RecursionError, ValueError):
        return json.dumps({**origin, "payload": _payload_text(payload)})


def decode_message(payload: bytes, *, ids: dict[str, str] | None = None, origin: dict[str, Any] | None = None) -> Decoded:
    """The readings of one message in either form; `ids` fill what readings leave out, `origin` goes with
    every rejection (MQTT: the topic; Kafka: topic, partition and offset)."""
    ids = dict(ids or {})
    origin = dict(origin or {})

    def whole(check: str, reason: str) -> Decoded:
        raw = json.dumps({**origin, "payload": _payload_text(payload)})
        return Decoded(rejected=[Rejected(raw, check, reason, ids)], ids=ids)

    try:
        doc = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        return whole("malformed_json", f"payload is not JSON: {err}")
    except RecursionError:
        return whole(
            "payload_too_deep",
            "payload nests arrays/objects deeper than the JSON decoder allows; send one reading object or a flat list of them",
        )
    except ValueError as err:  # CPython refuses integers of more than 4,300 digits (int_max_str_digits)
        return whole("number_out_of_range", f"payload holds a number that cannot be parsed ({err}); send values as ordinary decimal numbers")
    if isinstance(doc, dict) and "format" in doc and "sensors" in doc:
        return _decode_batch(doc, payload, ids, origin, whole)
    items = doc if isinstance(doc, list) else [doc]
    records, rejected = [], []
    for item in items:
        if not isinstance(item, dict):
            rejected.append(
                Rejected(_raw(origin, item, payload), "not_a_reading", f"payload item is {type(item).__name__}, not a reading object", ids)
            )
            continue
        nested = next((k for k, v in item.items() if not isinstance(v, _SCALARS)), None)
        if nested is not None:
            kind = type(item[nested]).__name__
            rejected.append(
                Rejected(
                    _raw(origin, item, payload), "not_a_reading",
                    f"field {nested!r}: a {kind} where a number, text or null belongs; a reading's fields are plain values",
                    ids,
                )
            )
            continue
        records.append(item)
    return Decoded(records=records, rejected=rejected, ids=ids)


def _decode_batch(doc: dict[str, Any], payload: bytes, ids: dict[str, str], origin: dict[str, Any], whole) -> Decoded:
    version = doc.get("format")
    if version != BATCH_FORMAT:
        return whole("malformed_batch", f"field 'format': {version!r} is not a known batch format; send {BATCH_FORMAT!r}")
    building = doc.get("building_id", ids.get("building_id"))
    if building is not None and not isinstance(building, str):
        return whole("malformed_batch", f"field 'building_id': {building!r} is not text")
    if building is None or not building.strip():
        return whole("malformed_batch", "field 'building_id': missing, and the transport names no building (MQTT topic, Kafka key)")
    sensors = doc.get("sensors")
    if not isinstance(sensors, list) or not sensors:
        return whole("malformed_batch", "field 'sensors': expected a non-empty list of {sensor_id, metric, unit} objects")
    for i, s in enumerate(sensors):
        if not isinstance(s, dict) or not isinstance(s.get("sensor_id"), str) or not isinstance(s.get("metric"), str) \
                or not isinstance(s.get("unit"), (str, type(None))):
            return whole("malformed_batch", f"field 'sensors[{i}]': {s!r} is not an object with text sensor_id, metric and unit")
    columns = {}
    for name in ("sensor", "ts", "value"):
        column = doc.get(name)
        if not isinstance(column, list):
            return whole("malformed_batch", f"field {name!r}: expected a list with one entry per reading, got {type(column).__name__}")
        columns[name] = column
    lengths = {name: len(c) for name, c in columns.items()}
    if len(set(lengths.values())) != 1:
        return whole("malformed_batch", "fields 'sensor', 'ts' and 'value' must have one entry per reading; lengths are "
                     + ", ".join(f"{k}={v}" for k, v in lengths.items()))
    n = lengths["sensor"]
    triples = [(s["sensor_id"], s["metric"], s.get("unit")) for s in sensors]
    ids = {**ids, "building_id": building}
    rejected: list[Rejected] = []
    bad = np.zeros(n, dtype=bool)

    def reject_rows(rows: Iterable[int], check: str, reason_of) -> None:
        for i in rows:
            if bad[i]:
                continue
            bad[i] = True
            item = {"building_id": building, "sensor": columns["sensor"][i], "ts": columns["ts"][i], "value": columns["value"][i]}
            rejected.append(Rejected(_raw(origin, item, payload), check, reason_of(i), ids))

    # Booleans and nulls are rare: a byte search tells whether the slow checks are needed at all.
    has_bool = b"true" in payload or b"false" in payload
    has_null = b"null" in payload
    # Sensor indices: integers inside "sensors".
    idx = _int_column(columns["sensor"], has_bool)
    out_of_range = (idx < 0) | (idx >= len(sensors))
    if out_of_range.any():
        reject_rows(np.flatnonzero(out_of_range), "not_a_reading",
                    lambda i: f"field 'sensor': {columns['sensor'][i]!r} is not an index into 'sensors' (0..{len(sensors) - 1})")
    # Timestamps: epoch numbers (the fast path) or ISO text, parsed the way bronze parses them.
    ts_us, ts_bad, ts_null = _ts_column(columns["ts"], has_bool or has_null)
    if ts_bad.any():
        reject_rows(np.flatnonzero(ts_bad), "unparseable_timestamp", lambda i: f"field 'ts': unparseable timestamp {columns['ts'][i]!r}")
    # Values: numbers; null and NaN pass on to bronze, which rejects them with its own reasons.
    values, value_bad = _float_column(columns["value"], has_bool)
    if value_bad.any():
        reject_rows(np.flatnonzero(value_bad), "non_numeric_value", lambda i: f"field 'value': non-numeric value {columns['value'][i]!r}")
    value_null = _null_mask(columns["value"]) if has_null else None
    if bad.any():
        keep = ~bad
        idx, ts_us, values = idx[keep], ts_us[keep], values[keep]
        ts_null = ts_null[keep] if ts_null is not None else None
        value_null = value_null[keep] if value_null is not None else None
    cols = BatchColumns(building, triples, idx, ts_us, values, ts_null, value_null)
    return Decoded(columns=cols, rejected=rejected, ids=ids)


def _ts_column(values: list[Any], maybe_special: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Epoch microseconds, a mask of present-but-unparseable values, and a mask of nulls (None when none)."""
    n = len(values)
    if not maybe_special:
        try:
            arr = np.asarray(values)
        except (ValueError, OverflowError):
            arr = None
        if arr is not None and arr.ndim == 1 and arr.dtype.kind in "iuf":
            seconds = arr.astype(np.float64)
            with np.errstate(invalid="ignore"):
                seconds = np.where(np.abs(seconds) > EPOCH_MS_THRESHOLD, seconds / 1000.0, seconds)
                fits = np.isfinite(seconds) & (np.abs(seconds) <= EPOCH_MAX_ABS_S)
                micros = np.where(fits, np.round(seconds * 1e6), 0).astype(np.int64)
            return micros, ~fits, None
    parsed, bad = parse_timestamps(_loose_array(values))
    nulls = np.asarray(parsed.is_null().to_numpy(zero_copy_only=False), dtype=bool) & ~bad
    micros = pc.fill_null(parsed.cast(pa.int64()), 0).to_numpy(zero_copy_only=False).astype(np.int64)
    return micros, np.asarray(bad, dtype=bool), nulls if nulls.any() else None


def _loose_array(values: list[Any]) -> pa.Array:
    """An Arrow array of whatever a column holds; mixed types become text for the parsers to judge one by one."""
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        return pa.array([None if v is None else str(v) for v in values], pa.string())


def _int_column(values: list[Any], has_bool: bool) -> np.ndarray:
    """Sensor indices as int64; anything that is not an integer becomes -1 (rejected as out of range)."""
    if not has_bool:
        try:
            arr = np.asarray(values)
            if arr.dtype.kind in "iu" and arr.ndim == 1:
                return arr.astype(np.int64)
        except (ValueError, OverflowError):
            pass
    return np.array([v if isinstance(v, int) and not isinstance(v, bool) and -2**62 < v < 2**62 else -1 for v in values], dtype=np.int64)


def _null_mask(values: list[Any]) -> np.ndarray:
    return np.array([v is None for v in values], dtype=bool)


def _float_column(values: list[Any], has_bool: bool) -> tuple[np.ndarray, np.ndarray]:
    """Values as float64 (null as NaN) and a mask of entries that are not numbers (booleans, text that is
    not a number). Numbers as text are numbers, as bronze takes them."""
    if not has_bool:
        try:
            arr = np.asarray(values, dtype=np.float64)  # None becomes NaN; the null mask tells them apart
            if arr.ndim == 1:
                return arr, np.zeros(len(values), dtype=bool)
        except (TypeError, ValueError, OverflowError):
            pass
    out = np.full(len(values), np.nan)
    bad = np.zeros(len(values), dtype=bool)
    for i, v in enumerate(values):
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float, str)):
            bad[i] = True
            continue
        try:
            out[i] = float(v)
        except (OverflowError, ValueError):
            bad[i] = True
    return out, bad


def records_table(chunks: Sequence[tuple[list[dict[str, Any]], dict[str, str]]]) -> pa.Table:
    """One Arrow table from many messages' reading objects, ids from the transport where a reading has none.

    The common case (every reading has the same fields) is one `from_pylist`; readings with differing
    fields or mixed value types take the general path, which keeps bad values for bronze to reject.
    """
    records = [r for items, _ in chunks for r in items]
    if not records:
        return pa.table({})
    keys = records[0].keys()
    table = None
    if all(r.keys() == keys for r in records):
        try:
            table = pa.Table.from_pylist(records)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            table = None
    if table is None:
        table, _ = to_arrow_columns(records)
    counts = [len(items) for items, _ in chunks]
    for key in ("building_id", "sensor_id"):
        from_ids = pa.array(np.repeat(np.array([ids.get(key) for _, ids in chunks], dtype=object), counts), pa.string())
        if key in table.column_names:
            given = table.column(key)
            if not pa.types.is_string(given.type):
                given = given.cast(pa.string()) if not pa.types.is_null(given.type) else pa.nulls(len(given), pa.string())
            table = table.set_column(table.column_names.index(key), key, pc.coalesce(given, from_ids))
        else:
            table = table.append_column(key, from_ids)
    return table


def columns_table(parts: Sequence[BatchColumns]) -> pa.Table:
    """One BATCH_SCHEMA table from many messages' columns: ids by code, one `take` per text column."""
    parts = [p for p in parts if len(p)]
    if not parts:
        return BATCH_SCHEMA.empty_table()
    buildings: dict[str, int] = {}
    sensors: dict[tuple[str, str, str | None], int] = {}
    b_codes, s_codes = [], []
    for p in parts:
        code = buildings.setdefault(p.building_id, len(buildings))
        b_codes.append(np.full(len(p), code, dtype=np.int64))
        remap = np.array([sensors.setdefault(t, len(sensors)) for t in p.sensors], dtype=np.int64)
        s_codes.append(remap[p.sensor])
    triples = list(sensors)
    s_code = pa.array(np.concatenate(s_codes))

    def mask(name: str) -> np.ndarray | None:
        if all(getattr(p, name) is None for p in parts):
            return None
        return np.concatenate([getattr(p, name) if getattr(p, name) is not None else np.zeros(len(p), dtype=bool) for p in parts])

    ts_null, value_null = mask("ts_null"), mask("value_null")
    return pa.table(
        {
            "building_id": pa.array(list(buildings), pa.string()).take(pa.array(np.concatenate(b_codes))),
            "sensor_id": pa.array([t[0] for t in triples], pa.string()).take(s_code),
            "metric": pa.array([t[1] for t in triples], pa.string()).take(s_code),
            "ts": pa.array(np.concatenate([p.ts_us for p in parts]), pa.int64(), mask=ts_null).cast(UTC_US),
            "value": pa.array(np.concatenate([p.value for p in parts]), pa.float64(), mask=value_null),
            "unit": pa.array([t[2] for t in triples], pa.string()).take(s_code),
        },
        schema=BATCH_SCHEMA,
    )


def readings_table(decoded: Sequence[Decoded]) -> pa.Table:
    """One table for a whole micro-batch of messages: batch-form columns become one table (the fast path);
    when JSON readings are in the batch too, everything goes the JSON way (bronze types it)."""
    parts = [d.columns for d in decoded if d.columns is not None and len(d.columns)]
    chunks = [(d.records, d.ids) for d in decoded if d.records]
    if not chunks:
        return columns_table(parts) if parts else pa.table({})
    if parts:
        as_records = columns_table(parts)
        as_records = as_records.set_column(
            as_records.column_names.index("ts"), "ts", pc.strftime(as_records.column("ts"), format="%Y-%m-%dT%H:%M:%SZ")
        )
        chunks.append((as_records.to_pylist(), {}))
    return records_table(chunks)


# ----------------------------------------------------------------------------------------------- encoding


def _clean(value: Any) -> Any:
    return None if isinstance(value, float) and math.isnan(value) else value


def encode_json(rows: Sequence[dict[str, Any]]) -> bytes:
    """A list of reading objects (ts as ISO text), the JSON form."""
    return json.dumps(list(rows), separators=(",", ":"), default=str).encode()


def encode_batch(table: pa.Table, *, building_id: str | None = None) -> bytes:
    """One building's readings in the compact batch form (columns building_id? sensor_id, metric, unit, ts, value).

    `ts` is sent as epoch seconds (integers when whole, else fractional). `building_id` defaults to the
    table's single building; a table with several buildings needs one message per building.
    """
    if building_id is None:
        found = pc.unique(table.column("building_id")).to_pylist()
        if len(found) != 1:
            raise ValueError(f"encode_batch: one building per message, the table holds {len(found)}: {found[:5]}")
        building_id = found[0]
    units = table.column("unit") if "unit" in table.column_names else pa.nulls(table.num_rows, pa.string())
    triples = pa.table({"sensor_id": table.column("sensor_id"), "metric": table.column("metric"), "unit": units})
    sensors = triples.group_by(["sensor_id", "metric", "unit"], use_threads=False).aggregate([]).to_pylist()
    index = {(s["sensor_id"], s["metric"], s["unit"]): i for i, s in enumerate(sensors)}
    sensor_col = [index[(s, m, u)] for s, m, u in zip(*(triples.column(c).to_pylist() for c in ("sensor_id", "metric", "unit")))]
    ts = table.column("ts")
    if pa.types.is_timestamp(ts.type):
        micros = pc.cast(ts.cast(UTC_US), pa.int64()).to_numpy(zero_copy_only=False)
        whole = (micros % 1_000_000 == 0).all()
        ts_list = (micros // 1_000_000).tolist() if whole else (micros / 1e6).tolist()
    else:
        ts_list = ts.to_pylist()
    values = [_clean(v) for v in table.column("value").to_pylist()]
    doc = {"format": BATCH_FORMAT, "building_id": building_id, "sensors": sensors, "sensor": sensor_col,
           "ts": ts_list, "value": values}
    return json.dumps(doc, separators=(",", ":")).encode()
