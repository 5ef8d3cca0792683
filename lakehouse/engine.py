"""One small interface over two Delta engines: delta-rs (default, no JVM) and Spark + delta-spark.

Every write is an upsert on the contract's key. Rows whose key is new are inserted, rows whose values
changed are updated, rows that are already there as given are left alone, so writing the same interval
twice changes nothing and makes no new Delta version.
"""

from __future__ import annotations

import dataclasses
import random
import time
from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lakehouse.schemas import TableContract

# A filter in delta-rs' DNF form: [("date", ">=", "2024-01-01"), ("building_id", "in", ["b1", "b2"])]
Filter = tuple[str, str, Any]


@dataclass(frozen=True)
class WriteResult:
    table: str
    version: int
    rows_inserted: int
    rows_updated: int
    rows_unchanged: int
    # Commits refused because another writer changed the rows this one had read, then redone.
    conflicts_retried: int = 0

    @property
    def changed(self) -> bool:
        return bool(self.rows_inserted or self.rows_updated)


class TableEngine(Protocol):
    name: str

    def table_uri(self, contract: TableContract) -> str: ...

    def exists(self, contract: TableContract) -> bool: ...

    def version(self, contract: TableContract) -> int | None: ...

    def upsert(self, contract: TableContract, data: pa.Table) -> WriteResult: ...

    def read(
        self,
        contract: TableContract,
        *,
        version: int | None = None,
        filters: Sequence[Filter] | None = None,
        columns: Sequence[str] | None = None,
    ) -> pa.Table: ...

    def history(self, contract: TableContract, limit: int | None = None) -> list[dict[str, Any]]: ...

    def optimize(self, contract: TableContract) -> dict[str, Any]: ...

    def vacuum(self, contract: TableContract, retention_hours: int, dry_run: bool = True) -> list[str]: ...


class WriteConflict(RuntimeError):
    """Other writers kept changing the rows an upsert read, through every allowed attempt."""


@dataclass(frozen=True)
class CommitRetry:
    """How an upsert redoes a commit that lost to a concurrent writer (numbers from settings)."""

    max_attempts: int = 50
    backoff_initial_s: float = 0.02
    backoff_max_s: float = 1.0

    @classmethod
    def from_settings(cls, lakehouse: Any) -> "CommitRetry":
        return cls(lakehouse.commit_max_attempts, lakehouse.commit_backoff_initial_s, lakehouse.commit_backoff_max_s)

    def delay_s(self, failed_attempts: int, rng: random.Random) -> float:
        """Full jitter: a uniform share of the doubling backoff, so writers that collided spread out."""
        cap = min(self.backoff_max_s, self.backoff_initial_s * (2 ** min(failed_attempts - 1, 30)))
        return rng.uniform(0.0, cap)

    def run(self, table: str, attempt: Callable[[], WriteResult], is_conflict: Callable[[BaseException], bool]) -> WriteResult:
        """Call `attempt` until it commits; a conflict is retried after a jittered sleep, anything else raised."""
        rng = random.Random()
        for failed in range(self.max_attempts):
            try:
                result = attempt()
            except Exception as err:
                if not is_conflict(err):
                    raise
                if failed + 1 >= self.max_attempts:
                    raise WriteConflict(
                        f"{table}: concurrent writers changed the rows this upsert read {self.max_attempts} times in a row "
                        f"(last: {str(err).splitlines()[0]}); nothing of this batch was written. Re-run it, or raise "
                        "lakehouse.commit_max_attempts / commit_backoff_max_s (WATTFLOW_LAKEHOUSE__COMMIT_MAX_ATTEMPTS)."
                    ) from err
                time.sleep(self.delay_s(failed + 1, rng))
                continue
            return dataclasses.replace(result, conflicts_retried=failed) if failed else result
        raise AssertionError("unreachable")  # pragma: no cover


class SchemaMismatch(ValueError):
    """Data handed to a table does not fit its contract; the message names the column."""


def conform(contract: TableContract, data: pa.Table) -> pa.Table:
    """Cast `data` to the contract's schema (column order, types), deriving `date` from `ts` when absent."""
    schema = contract.schema
    if "date" in schema.names and "date" not in data.column_names and "ts" in data.column_names:
        ts = data.column("ts")
        if not pa.types.is_timestamp(ts.type) or ts.type.tz is None:
            raise SchemaMismatch(f"{contract.qualified_name}: column 'ts' must be a UTC timestamp, got {ts.type}")
        data = data.append_column("date", pc.cast(pc.cast(ts, pa.timestamp("us", tz="UTC")), pa.date32()))
    missing = [n for n in schema.names if n not in data.column_names]
    if missing:
        raise SchemaMismatch(f"{contract.qualified_name}: missing columns {missing}")
    columns = []
    for field in schema:
        column = data.column(field.name)
        if column.type != field.type:
            try:
                column = pc.cast(column, field.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
                raise SchemaMismatch(
                    f"{contract.qualified_name}: column {field.name!r} of type {column.type} does not cast to {field.type}: {err}"
                ) from err
        columns.append(column)
    return pa.Table.from_arrays(columns, schema=schema)


def key_codes(keys: Sequence[str], *tables: pa.Table) -> list[np.ndarray] | None:
    """One int64 per row and key, equal across `tables` exactly when the key columns are equal.

    Each key column is factorised over all tables together and the codes are combined in mixed radix,
    which makes de-duplication and the key join numpy sorts instead of multi-column hash joins
    (about 10x faster on millions of readings). None when the radix product would overflow int64.
    """
    sizes = [t.num_rows for t in tables]
    combined = np.zeros(sum(sizes), dtype=np.int64)
    radix = 1
    for k in keys:
        column = pa.chunked_array([c for t in tables for c in t.column(k).chunks], type=tables[0].column(k).type)
        if column.null_count:
            raise SchemaMismatch(f"key column {k!r} holds {column.null_count} null value(s)")
        uniques = pc.unique(column)
        codes = pc.index_in(column, value_set=uniques).to_numpy(zero_copy_only=False).astype(np.int64)
        if radix > np.iinfo(np.int64).max // max(len(uniques), 1):
            return None
        combined = combined * len(uniques) + codes
        radix *= max(len(uniques), 1)
    return np.split(combined, np.cumsum(sizes)[:-1])


def dedupe_last(contract: TableContract, data: pa.Table) -> pa.Table:
    """Keep the last row per key: a batch that repeats a reading must not write it twice."""
    if data.num_rows < 2:
        return data
    codes = key_codes(contract.keys, data)
    if codes is None:
        idx = pa.table({**{k: data.column(k) for k in contract.keys}, "__row": pa.array(np.arange(data.num_rows))})
        rows = idx.group_by(list(contract.keys), use_threads=False).aggregate([("__row", "max")]).column("__row_max")
        return data if len(rows) == data.num_rows else data.take(pc.sort_indices(rows))
    reversed_codes = codes[0][::-1]
    _, first_in_reversed = np.unique(reversed_codes, return_index=True)
    if len(first_in_reversed) == data.num_rows:
        return data
    return data.take(np.sort(data.num_rows - 1 - first_in_reversed))


@dataclass(frozen=True)
class Delta:
    """How a batch relates to what a table holds on the same keys."""

    inserts: pa.Table
    updates: pa.Table
    unchanged: int


def _null_safe_equal(a: pa.ChunkedArray | pa.Array, b: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray:
    both_null = pc.and_(pc.is_null(a), pc.is_null(b))
    return pc.or_(pc.fill_null(pc.equal(a, b), False), both_null)


def diff_against(contract: TableContract, batch: pa.Table, existing: pa.Table) -> Delta:
    """Split a conformed, de-duplicated batch into rows to insert, rows to update and unchanged rows.

    `existing` holds the table's key and value columns for (at least) the batch's partitions.
    """
    empty = batch.slice(0, 0)
    if existing.num_rows == 0 or batch.num_rows == 0:
        return Delta(inserts=batch, updates=empty, unchanged=0)
    keys = list(contract.keys)
    existing = existing.select(keys + [c for c in contract.value_columns if c in existing.column_names])
    existing = existing.cast(pa.schema([contract.schema.field(c) for c in existing.column_names]))
    codes = key_codes(keys, batch, existing)
    if codes is None:  # pragma: no cover - needs > 2**63 distinct key combinations
        raise SchemaMismatch(f"{contract.qualified_name}: key space too large to diff")
    batch_codes, existing_codes = codes
    order = np.argsort(existing_codes, kind="stable")
    sorted_codes = existing_codes[order]
    pos = np.searchsorted(sorted_codes, batch_codes)
    pos_clipped = np.minimum(pos, len(sorted_codes) - 1)
    matched = sorted_codes[pos_clipped] == batch_codes
    new_rows = np.flatnonzero(~matched)
    matched_rows = np.flatnonzero(matched)
    if len(matched_rows):
        existing_rows = order[pos_clipped[matched_rows]]
        same = np.ones(len(matched_rows), dtype=bool)
        for v in existing.column_names[len(keys):]:
            eq = _null_safe_equal(batch.column(v).take(matched_rows), existing.column(v).take(existing_rows))
            same &= eq.to_numpy(zero_copy_only=False) if isinstance(eq, pa.Array) else np.concatenate(
                [c.to_numpy(zero_copy_only=False) for c in eq.chunks]
            )
        changed_rows = matched_rows[~same]
        unchanged = int(same.sum())
    else:
        changed_rows, unchanged = matched_rows, 0
    # A stream's batch is usually all new keys: then it is the insert as it is (a take of every row costs as
    # much as the rest of the diff).
    inserts = batch if len(new_rows) == batch.num_rows else (batch.take(new_rows) if len(new_rows) else empty)
    return Delta(
        inserts=inserts,
        updates=batch.take(changed_rows) if len(changed_rows) else empty,
        unchanged=unchanged,
    )


def partition_filter(contract: TableContract, batch: pa.Table) -> list[Filter] | None:
    """Partition values a batch touches, so an upsert reads only those partitions of the target."""
    if not contract.partition_by:
        return None
    return [(col, "in", pc.unique(batch.column(col)).to_pylist()) for col in contract.partition_by]


def coerce_filters(contract: TableContract, filters: Sequence[Filter] | None) -> list[Filter] | None:
    """Filter values in the column's own type: "2024-02-01" against a date column, ISO text against a
    timestamp. Callers may write either; Arrow compares only like with like."""
    if not filters:
        return None
    out: list[Filter] = []
    for column, op, value in filters:
        if column not in contract.schema.names:
            raise SchemaMismatch(f"{contract.qualified_name}: filter on unknown column {column!r}")
        field_type = contract.schema.field(column).type
        cast = lambda v: _as_type(v, field_type, column)  # noqa: E731
        out.append((column, op, [cast(v) for v in value] if isinstance(value, (list, tuple, set)) else cast(value)))
    return out


def _as_type(value: Any, field_type: pa.DataType, column: str) -> Any:
    import datetime as dt

    if value is None:
        return None
    try:
        if pa.types.is_date(field_type):
            if isinstance(value, dt.datetime):
                return value.date()
            if isinstance(value, str):
                return dt.date.fromisoformat(value[:10])
            if hasattr(value, "date") and callable(value.date):  # pandas.Timestamp
                return value.date()
        if pa.types.is_timestamp(field_type):
            if isinstance(value, str):
                value = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
            if hasattr(value, "to_pydatetime"):
                value = value.to_pydatetime()
            if isinstance(value, dt.datetime) and value.tzinfo is None:
                value = value.replace(tzinfo=dt.timezone.utc)
        if isinstance(value, str) and pa.types.is_integer(field_type):
            return int(value)
        if isinstance(value, str) and pa.types.is_floating(field_type):
            return float(value)
    except ValueError as err:
        raise SchemaMismatch(f"filter on {column!r}: {value!r} is not a {field_type}") from err
    return value


def merge_predicate(contract: TableContract, source: str = "s", target: str = "t") -> str:
    """SQL join condition on the key, plus the partition columns so both engines prune files."""
    cols = list(dict.fromkeys([*contract.partition_by, *contract.keys]))
    return " AND ".join(f"{target}.`{c}` = {source}.`{c}`" for c in cols)


def get_engine(settings: Any | None = None) -> TableEngine:
    """The engine the settings name, rooted at the settings' lakehouse URI."""
    from wattflow.settings import get_settings

    settings = settings or get_settings()
    # compute.runner=spark implies Spark storage (Settings.table_engine).
    if getattr(settings, "table_engine", settings.lakehouse.engine) == "spark":
        from lakehouse.spark_engine import SparkEngine

        return SparkEngine.from_settings(settings)
    from lakehouse.delta_rs import DeltaRsEngine

    return DeltaRsEngine.from_settings(settings)
