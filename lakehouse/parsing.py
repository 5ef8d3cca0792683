"""Vectorised parsing of raw columns into typed arrays, with a mask of the rows that did not parse.

Sources hand us whatever they received: ISO strings with or without an offset, datetimes, epoch numbers,
numbers as text. Each parser returns the typed array plus a boolean mask of rows that failed, so the
caller can quarantine exactly those rows and land the rest. The happy path (already typed columns) costs
a cast; strings go through one vectorised pandas parse.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any, Iterable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

UTC_US = pa.timestamp("us", tz="UTC")
# Epoch numbers above this are taken as milliseconds: 1e11 s is the year 5138, 1e11 ms is 1973.
EPOCH_MS_THRESHOLD = 1e11
# Epoch seconds beyond this (2262-04-11) do not fit a nanosecond datetime, which pandas and the quality
# stages use: such a number is no reading's timestamp, and is rejected as unparseable.
EPOCH_MAX_ABS_S = 9_223_372_036.0


def to_arrow_columns(records: Any) -> tuple[pa.Table, "RawRows"]:
    """Turn a table, a DataFrame or an iterable of dicts into an Arrow table plus a way back to raw rows.

    A column whose values mix types (a number here, a string there) cannot become one Arrow type; such a
    column is carried as text so that the parsers below can reject the bad values one by one, while the
    raw rows used for quarantine keep the original values.
    """
    if isinstance(records, pa.Table):
        return records, RawRows(table=records)
    if isinstance(records, pd.DataFrame):
        frame = records.reset_index(drop=True)
        try:
            table = pa.Table.from_pandas(frame, preserve_index=False)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            table = pa.table({str(c): _column_from_values(frame[c].tolist(), nan_is_null=True) for c in frame.columns})
        return table, RawRows(frame=frame)
    rows = [dict(r) for r in records]
    names = list(dict.fromkeys(k for r in rows for k in r))
    table = pa.table({n: _column_from_values([r.get(n) for r in rows]) for n in names}) if names else pa.table({})
    if not names:
        table = pa.Table.from_pylist([{} for _ in rows]) if rows else pa.table({})
    return table, RawRows(rows=rows)


def _column_from_values(values: list[Any], nan_is_null: bool = False) -> pa.Array:
    # In a DataFrame NaN is how pandas spells "missing"; in plain records a NaN is a (non-finite) value.
    try:
        return pa.array(values, from_pandas=nan_is_null)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        return pa.array([None if _is_null(v, nan_is_null) else _as_text(v) for v in values], type=pa.string())


def _is_null(v: Any, nan_is_null: bool) -> bool:
    return v is None or v is pd.NaT or (nan_is_null and isinstance(v, float) and v != v)


def _as_text(v: Any) -> str:
    if isinstance(v, (dt.datetime, dt.date, pd.Timestamp)):
        return v.isoformat()
    return str(v)


class RawRows:
    """The records exactly as received, fetched only for the rows that go to quarantine."""

    def __init__(self, *, table: pa.Table | None = None, frame: pd.DataFrame | None = None, rows: list[dict] | None = None):
        self._table, self._frame, self._rows = table, frame, rows

    def take(self, indices: Iterable[int]) -> list[dict[str, Any]]:
        idx = [int(i) for i in indices]
        if self._rows is not None:
            return [self._rows[i] for i in idx]
        if self._frame is not None:
            return self._frame.iloc[idx].to_dict(orient="records")
        assert self._table is not None
        return self._table.take(pa.array(idx, type=pa.int64())).to_pylist()


def raw_json(record: dict[str, Any]) -> str:
    """Canonical JSON of a raw record: sorted keys, datetimes as ISO text, NaN kept as NaN."""
    return json.dumps(record, sort_keys=True, default=_json_default, allow_nan=True)


def _json_default(v: Any) -> Any:
    if isinstance(v, (dt.datetime, dt.date, pd.Timestamp)):
        return v.isoformat()
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    return str(v)


def column_or_nulls(table: pa.Table, name: str, type_: pa.DataType = pa.string()) -> pa.ChunkedArray:
    if name in table.column_names:
        return table.column(name)
    return pa.chunked_array([pa.nulls(table.num_rows, type=type_)], type=type_)


def as_array(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    if isinstance(column, pa.ChunkedArray):
        return column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    return column


def null_mask(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """True where a value is missing: null, or empty/blank text for string columns."""
    arr = as_array(column)
    if arr.null_count == 0 and not pa.types.is_string(arr.type) and not pa.types.is_large_string(arr.type):
        return np.zeros(len(arr), dtype=bool)
    missing = pc.is_null(arr, nan_is_null=False)
    if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        missing = pc.or_(missing, pc.fill_null(pc.equal(pc.utf8_trim_whitespace(arr), ""), False))
    return missing.to_numpy(zero_copy_only=False)


def parse_timestamps(column: pa.ChunkedArray | pa.Array) -> tuple[pa.Array, np.ndarray]:
    """UTC microsecond timestamps and a mask of values that are present but do not parse.

    Naive timestamps and offset-less text are taken as UTC (sources must send UTC; a device that sends
    local time shows up later as a DST artefact, which is the quality stage's business). Numbers are epoch
    seconds, or milliseconds when larger than `EPOCH_MS_THRESHOLD`.
    """
    arr = as_array(column)
    n = len(arr)
    t = arr.type
    if pa.types.is_dictionary(t):
        arr = arr.cast(t.value_type)
        t = arr.type
    if pa.types.is_timestamp(t):
        if t.tz is None:
            arr = arr.cast(pa.timestamp(t.unit, tz="UTC"))
        return arr.cast(UTC_US, safe=False), np.zeros(n, dtype=bool)
    if pa.types.is_date(t):
        return arr.cast(pa.timestamp("s")).cast(pa.timestamp("s", tz="UTC")).cast(UTC_US), np.zeros(n, dtype=bool)
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        seconds = arr.cast(pa.float64()).to_numpy(zero_copy_only=False)
        with np.errstate(invalid="ignore"):
            seconds = np.where(np.abs(seconds) > EPOCH_MS_THRESHOLD, seconds / 1000.0, seconds)
            fits = np.isfinite(seconds) & (np.abs(seconds) <= EPOCH_MAX_ABS_S)
            bad = ~fits & ~np.asarray(pc.is_null(arr).to_numpy(zero_copy_only=False))
            micros = np.where(fits, np.round(seconds * 1e6), 0).astype(np.int64)
        mask = pc.is_null(arr).to_numpy(zero_copy_only=False) | bad
        return pa.array(micros, type=pa.int64(), mask=mask).cast(UTC_US), bad
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        try:  # fast path: every value carries its offset ("Z" or "+01:00")
            return arr.cast(UTC_US), np.zeros(n, dtype=bool)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass
        try:  # fast path: no value carries an offset, all are UTC wall time
            return arr.cast(pa.timestamp("us")).cast(UTC_US), np.zeros(n, dtype=bool)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass
        text = pd.Series(arr.to_numpy(zero_copy_only=False), dtype=object)
        # Offset-carrying and offset-less text are parsed apart: in one mixed call pandas reads the
        # offset-less values in the offset of their neighbours instead of UTC.
        has_offset = text.str.contains(r"(?:Z|[+-]\d\d(?::?\d\d)?)\s*$", regex=True, na=False).to_numpy()
        parsed = pd.Series(pd.NaT, index=text.index, dtype="datetime64[ns, UTC]")
        if has_offset.any():
            parsed[has_offset] = pd.to_datetime(text[has_offset], utc=True, errors="coerce", format="ISO8601")
        if (~has_offset).any():
            naive = pd.to_datetime(text[~has_offset], errors="coerce", format="ISO8601")
            if getattr(naive.dt, "tz", None) is None:
                naive = naive.dt.tz_localize("UTC")
            parsed[~has_offset] = naive
        present = text.notna().to_numpy() & (text.astype(str).str.strip() != "").to_numpy()
        bad = parsed.isna().to_numpy() & present
        if bad.any():  # epoch numbers that arrived as text (a column mixing numbers and strings)
            retry = np.flatnonzero(bad)
            epoch = pd.to_numeric(text.iloc[retry], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
            epoch_ts, epoch_bad = parse_timestamps(pa.array(epoch, type=pa.float64(), from_pandas=True))
            ok = ~epoch_bad & ~np.isnan(epoch)
            if ok.any():
                fixed = parsed.copy()
                fixed.iloc[retry[ok]] = pd.to_datetime(epoch_ts.to_pandas()[ok].to_numpy(), utc=True)
                parsed = fixed
                bad = parsed.isna().to_numpy() & present
        return pa.Array.from_pandas(parsed).cast(UTC_US, safe=False), bad
    # Anything else (booleans, structs) is not a timestamp.
    present = ~pc.is_null(arr).to_numpy(zero_copy_only=False)
    return pa.nulls(n, type=UTC_US), present


def parse_numbers(column: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """float64 values, a mask of present-but-non-numeric values, and a mask of non-finite (NaN/inf) values.

    Null stays NaN and is in neither mask: whether a missing value is allowed is the caller's decision.
    """
    arr = as_array(column)
    n = len(arr)
    t = arr.type
    if pa.types.is_dictionary(t):
        arr = arr.cast(t.value_type)
        t = arr.type
    nulls = pc.is_null(arr, nan_is_null=False).to_numpy(zero_copy_only=False) if arr.null_count else np.zeros(n, bool)
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
        values = arr.cast(pa.float64()).to_numpy(zero_copy_only=False)
        non_finite = ~np.isfinite(values) & ~nulls
        return values, np.zeros(n, dtype=bool), non_finite
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        text = pd.Series(arr.to_numpy(zero_copy_only=False), dtype=object)
        values = pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        failed = np.flatnonzero(np.isnan(values) & ~nulls)
        non_numeric = np.zeros(n, dtype=bool)
        for i in failed:  # only the rows that did not parse: tell "nan"/"inf" text from garbage
            try:
                values[i] = float(str(text.iat[i]).strip())
            except ValueError:
                non_numeric[i] = True
        non_finite = ~np.isfinite(values) & ~nulls & ~non_numeric
        return values, non_numeric, non_finite
    # Booleans, lists, structs: present values are not numbers.
    return np.full(n, np.nan), ~nulls, np.zeros(n, dtype=bool)


def text_values(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    """A column as text (ids, units), whatever type it arrived in."""
    arr = as_array(column)
    if pa.types.is_dictionary(arr.type):
        arr = arr.cast(arr.type.value_type)
    if pa.types.is_string(arr.type):
        return arr
    if pa.types.is_large_string(arr.type):
        return arr.cast(pa.string())
    return pa.array([None if v is None else _as_text(v) for v in arr.to_pylist()], type=pa.string())
