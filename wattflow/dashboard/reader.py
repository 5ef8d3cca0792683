"""Table reads for the dashboard: only the columns and partitions a page needs, cached by Delta version.

A cached value is keyed by (table, query) and remembers the table version it was computed from; it is
recomputed only when the table has a newer version, so a refresh that finds nothing new costs one read
of the Delta log. Versions themselves are trusted for `version_ttl_s`, so one page render reads each
log once however many figures it draws.

With the delta-rs engine, reads go through delta-rs' own DataFusion scan, which prunes the date
partitions natively (the engine's generic read builds a pyarrow dataset over every file of the table
first, which costs seconds on a year of daily partitions); any other engine goes through its own `read`.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from datetime import date, datetime
from typing import Any, Callable, Hashable, Sequence

import pandas as pd
import pyarrow as pa

from lakehouse.engine import Filter, TableEngine
from lakehouse.schemas import TableContract

_MAX_ENTRIES = 256


class TableReader:
    def __init__(self, engine: TableEngine, version_ttl_s: float = 2.0) -> None:
        self.engine = engine
        self.version_ttl_s = version_ttl_s
        self._versions: dict[str, tuple[float, int | None]] = {}
        self._cache: OrderedDict[tuple[str, Hashable], tuple[int | None, Any]] = OrderedDict()
        self._lock = threading.Lock()
        self.loads = 0  # computations actually run (not served from the cache); tests count them

    def version(self, contract: TableContract, fresh: bool = False) -> int | None:
        now = time.monotonic()
        known = self._versions.get(contract.qualified_name)
        if not fresh and known is not None and now - known[0] < self.version_ttl_s:
            return known[1]
        version = self.engine.version(contract)
        self._versions[contract.qualified_name] = (now, version)
        return version

    def versions(self, contracts: Sequence[TableContract], fresh: bool = False) -> dict[str, int | None]:
        return {c.qualified_name: self.version(c, fresh) for c in contracts}

    def cached(self, contract: TableContract, key: Hashable, compute: Callable[[int | None], Any]) -> Any:
        """`compute(version)` once per table version and key."""
        version = self.version(contract)
        slot = (contract.qualified_name, key)
        with self._lock:
            hit = self._cache.get(slot)
            if hit is not None and hit[0] == version:
                self._cache.move_to_end(slot)
                return hit[1]
        value = compute(version)
        with self._lock:
            self.loads += 1
            self._cache[slot] = (version, value)
            self._cache.move_to_end(slot)
            while len(self._cache) > _MAX_ENTRIES:
                self._cache.popitem(last=False)
        return value

    def read(
        self,
        contract: TableContract,
        columns: Sequence[str],
        *,
        since: date | None = None,
        filters: Sequence[Filter] = (),
        version: int | None = None,
    ) -> pd.DataFrame:
        """Rows of `contract` (at `version`) with `date >= since` and `filters`, as a frame of `columns`."""
        if version is None and not self.engine.exists(contract):
            return _empty(contract, columns)
        date_filters: list[Filter] = [("date", ">=", since)] if since is not None and "date" in contract.schema.names else []
        table = self._read_delta_rs(contract, columns, date_filters, list(filters), version)
        if table is None:
            table = self.engine.read(contract, version=version, filters=[*date_filters, *filters] or None, columns=list(columns))
        frame = table.to_pandas()
        for column in columns:
            if pa.types.is_timestamp(contract.schema.field(column).type):
                frame[column] = pd.to_datetime(frame[column], utc=True)
        return frame

    def _read_delta_rs(
        self, contract: TableContract, columns: Sequence[str], date_filters: list[Filter], filters: list[Filter], version: int | None
    ) -> pa.Table | None:
        from lakehouse.delta_rs import DeltaRsEngine

        if not isinstance(self.engine, DeltaRsEngine):
            return None
        from deltalake import QueryBuilder

        table = self.engine._table(contract, version)
        if table is None:
            return _empty(contract, columns, arrow=True)
        # delta-rs' own (DataFusion) scan: it prunes partitions and row groups natively, where a pyarrow
        # dataset first builds a fragment per file in Python (4x slower over a year of daily partitions).
        where = " AND ".join(_sql_term(c, op, v) for c, op, v in [*date_filters, *filters])
        select = ", ".join(_sql_name(c) for c in columns)
        sql = f"SELECT {select} FROM t" + (f" WHERE {where}" if where else "")
        result = pa.table(QueryBuilder().register("t", table).execute(sql).read_all())
        target = pa.schema([contract.schema.field(c) for c in columns])
        return result.select(list(columns)).cast(target)

    def latest_ts(self, contract: TableContract) -> pd.Timestamp | None:
        """The latest `ts` of a table, from the Delta log's file statistics where the engine has them."""

        def compute(version: int | None) -> pd.Timestamp | None:
            if version is None:
                return None
            from lakehouse.delta_rs import DeltaRsEngine

            if isinstance(self.engine, DeltaRsEngine):
                import pyarrow.compute as pc

                table = self.engine._table(contract, version)
                actions = pa.table(table.get_add_actions(flatten=True))
                if "max.ts" in actions.column_names:
                    latest = pc.max(actions.column("max.ts")).as_py()
                    if latest is not None:
                        return pd.Timestamp(latest).tz_convert("UTC") if pd.Timestamp(latest).tzinfo else pd.Timestamp(latest, tz="UTC")
            ts = self.engine.read(contract, version=version, columns=["ts"]).column("ts")
            import pyarrow.compute as pc

            latest = pc.max(ts).as_py()
            return None if latest is None else pd.Timestamp(latest).tz_convert("UTC")

        return self.cached(contract, "latest_ts", compute)


def _sql_name(column: str) -> str:
    return '"' + column.replace('"', '""') + '"'


def _sql_value(value: Any) -> str:
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, datetime):
        return f"TIMESTAMP '{pd.Timestamp(value).tz_convert('UTC').strftime('%Y-%m-%dT%H:%M:%S.%fZ') if pd.Timestamp(value).tzinfo else pd.Timestamp(value).isoformat()}'"
    if isinstance(value, date):
        return f"DATE '{value.isoformat()}'"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    raise TypeError(f"filter value {value!r} of type {type(value).__name__} has no SQL literal here")


def _sql_term(column: str, op: str, value: Any) -> str:
    name = _sql_name(column)
    if op in ("=", "==", "!=", "<", "<=", ">", ">="):
        return f"{name} {'=' if op == '==' else op} {_sql_value(value)}"
    if op in ("in", "not in"):
        values = list(value)
        if not values:
            return "FALSE" if op == "in" else "TRUE"
        return f"{name} {op.upper()} ({', '.join(_sql_value(v) for v in values)})"
    raise ValueError(f"filter operator {op!r} is not supported (use =, !=, <, <=, >, >=, in, not in)")


def _empty(contract: TableContract, columns: Sequence[str], arrow: bool = False) -> Any:
    table = contract.schema.empty_table().select(list(columns))
    return table if arrow else table.to_pandas()
