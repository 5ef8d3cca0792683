"""The default engine: delta-rs (`deltalake`), in-process, no JVM."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
from deltalake import CommitProperties, DeltaTable, write_deltalake
from deltalake.exceptions import CommitFailedError, DeltaError, TableNotFoundError

from lakehouse.engine import (
    CommitRetry,
    Filter,
    WriteResult,
    coerce_filters,
    conform,
    dedupe_last,
    diff_against,
    merge_predicate,
    partition_filter,
)
from lakehouse.schemas import TableContract


# Above this many distinct leading-key values in one batch the IN-list costs more than it prunes.
_KEY_FILTER_MAX_VALUES = 10_000


class _LostCreateRace(Exception):
    """Another writer committed version 0 of a table between our look and our create."""


class DeltaRsEngine:
    name = "delta_rs"

    def __init__(
        self, root_uri: str, storage_options: dict[str, str] | None = None, retry: CommitRetry | None = None
    ) -> None:
        self.root_uri = root_uri.rstrip("/")
        self.storage_options = dict(storage_options or {})
        self.retry = retry or CommitRetry()

    @classmethod
    def from_settings(cls, settings: Any) -> "DeltaRsEngine":
        return cls(settings.lakehouse_uri, settings.lakehouse.storage_options, CommitRetry.from_settings(settings.lakehouse))

    @property
    def _is_local(self) -> bool:
        return "://" not in self.root_uri or self.root_uri.startswith("file://")

    def table_uri(self, contract: TableContract) -> str:
        return f"{self.root_uri}/{contract.path}"

    def _table(self, contract: TableContract, version: int | None = None) -> DeltaTable | None:
        uri = self.table_uri(contract)
        if self._is_local and not (Path(uri.removeprefix("file://")) / "_delta_log").is_dir():
            return None
        try:
            return DeltaTable(uri, version=version, storage_options=self.storage_options or None)
        except TableNotFoundError:
            return None

    def exists(self, contract: TableContract) -> bool:
        return self._table(contract) is not None

    def version(self, contract: TableContract) -> int | None:
        table = self._table(contract)
        return None if table is None else table.version()

    def upsert(self, contract: TableContract, data: pa.Table) -> WriteResult:
        """Insert new keys and update changed rows in one commit that is safe beside other writers.

        The commit is a MERGE against the version the diff was read from, so Delta's conflict checker
        refuses it when another writer added or changed rows in the same partitions in between (a plain
        append would never be refused: two writers landing the same new keys would both append them).
        A refused commit wrote nothing visible; it is re-read, re-diffed and retried (settings).
        """
        batch = dedupe_last(contract, conform(contract, data))
        return self.retry.run(contract.qualified_name, lambda: self._upsert_once(contract, batch), self._is_conflict)

    def _is_conflict(self, err: BaseException) -> bool:
        return isinstance(err, (CommitFailedError, _LostCreateRace))

    def _upsert_once(self, contract: TableContract, batch: pa.Table) -> WriteResult:
        uri = self.table_uri(contract)
        table = self._table(contract)
        if table is None:
            return self._create(contract, batch, uri)
        if batch.num_rows == 0:
            return WriteResult(contract.qualified_name, table.version(), 0, 0, 0)
        columns = list(dict.fromkeys([*contract.keys, *contract.value_columns]))
        # `table` stays pinned at the version read here; the MERGE below commits against it.
        existing = self._existing_for(table, contract, batch, columns)
        delta = diff_against(contract, batch, existing)
        if delta.updates.num_rows or delta.inserts.num_rows:
            # Only rows that are new or changed go in, so a re-run rewrites no file. streamed_exec=False
            # lets delta-rs derive the batch's partitions from the (in-memory) source: the MERGE then
            # scans only those partitions (20x faster than a streamed source here) and its read predicate
            # is those partitions, so it conflicts only with writers touching the same dates.
            source = pa.concat_tables([delta.updates, delta.inserts])
            merge = table.merge(source, merge_predicate(contract), source_alias="s", target_alias="t", streamed_exec=False)
            if delta.updates.num_rows:
                merge = merge.when_matched_update_all()
            # New keys only (the common stream case): an insert-only MERGE rewrites no target file. A key
            # another writer inserted meanwhile is still caught: its file lands in a partition we read.
            merge.when_not_matched_insert_all().execute()
        return WriteResult(
            contract.qualified_name, table.version(), delta.inserts.num_rows, delta.updates.num_rows, delta.unchanged
        )

    @staticmethod
    def _existing_for(table: DeltaTable, contract: TableContract, batch: pa.Table, columns: list[str]) -> pa.Table:
        """The target's rows the batch could match: its partitions, and within them the files whose
        statistics admit its values of the leading key column (the building). A portfolio lands a chunk of
        buildings at a time over a year: reading whole date partitions read every other chunk's rows too
        (measured: time quadratic in the portfolio, memory linear; P = 200 did not finish). Rows of other
        buildings in a chosen file are harmless: they never match a key."""
        filters = list(partition_filter(contract, batch) or [])
        lead = contract.keys[0]
        if lead not in contract.partition_by:
            values = pc.unique(batch.column(lead))
            if len(values) <= _KEY_FILTER_MAX_VALUES:
                filters.append((lead, "in", values.to_pylist()))
        return _scan(table, contract, coerce_filters(contract, filters) or [], columns)

    def _create(self, contract: TableContract, batch: pa.Table, uri: str) -> WriteResult:
        """Version 0 with the first rows. Two writers creating the same table race for version 0; without
        `max_commit_retries=0` delta-rs would retry the loser as a blind append at version 1 (measured:
        16 rows for 8 keys). The loser instead fails and goes through the MERGE path."""
        if self._is_local:
            os.makedirs(uri.removeprefix("file://"), exist_ok=True)
        try:
            write_deltalake(
                uri,
                batch,
                mode="error",
                partition_by=list(contract.partition_by) or None,
                name=contract.qualified_name,
                description=contract.description,
                storage_options=self.storage_options or None,
                commit_properties=CommitProperties(max_commit_retries=0),
            )
        except CommitFailedError as err:
            raise _LostCreateRace(f"{contract.qualified_name}: another writer created the table first") from err
        except DeltaError as err:
            if self._table(contract) is not None:  # "A table already exists": created since we looked
                raise _LostCreateRace(f"{contract.qualified_name}: another writer created the table first") from err
            raise
        return WriteResult(contract.qualified_name, 0, batch.num_rows, 0, 0)

    def read(
        self,
        contract: TableContract,
        *,
        version: int | None = None,
        filters: Sequence[Filter] | None = None,
        columns: Sequence[str] | None = None,
    ) -> pa.Table:
        table = self._table(contract, version)
        if table is None:
            if version is not None:
                raise FileNotFoundError(f"{contract.qualified_name} has no version {version} at {self.table_uri(contract)}")
            return contract.schema.empty_table().select(list(columns) if columns else contract.schema.names)
        coerced = coerce_filters(contract, filters) or []
        after = [f for f in coerced if f[0] not in contract.partition_by]
        wanted = list(columns) if columns else contract.schema.names
        read_columns = list(dict.fromkeys([*wanted, *(f[0] for f in after)]))
        result = _scan(table, contract, coerced, read_columns)
        if after:
            result = result.filter(_filter_mask(result, after))
        return result.select(wanted)

    def history(self, contract: TableContract, limit: int | None = None) -> list[dict[str, Any]]:
        table = self._table(contract)
        return [] if table is None else table.history(limit)

    def optimize(self, contract: TableContract) -> dict[str, Any]:
        table = self._table(contract)
        if table is None:
            return {}
        return table.optimize.compact()

    def vacuum(self, contract: TableContract, retention_hours: int, dry_run: bool = True) -> list[str]:
        table = self._table(contract)
        if table is None:
            return []
        return table.vacuum(retention_hours=retention_hours, dry_run=dry_run, enforce_retention_duration=False)


def _scan(table: DeltaTable, contract: TableContract, filters: Sequence[Filter], columns: Sequence[str]) -> pa.Table:
    """`columns` of the files that `filters` (in the contract's types) may hold rows for, in the contract's
    types; rows are not filtered here.

    Files are chosen by their partition values and the per-file statistics delta-rs puts in each fragment's
    guarantee, so a filter on any column (a building, a time range) skips files without opening them: a
    chunk of buildings read from a year of a portfolio reads that chunk's files, not the year. The chosen
    files are read without a row filter: files delta-rs's MERGE wrote hold strings as string_view, and
    pyarrow's row filter cannot compare those with the dataset's string type (it errors, or crashes).
    """
    dataset = table.to_pyarrow_dataset()
    expr = partition = None
    for column, op, value in filters:
        prune = _prune_expression(contract, column, op, value)
        expr = _and(expr, prune)
        if column in contract.partition_by:
            partition = _and(partition, prune)
    try:
        fragments = list(dataset.get_fragments(filter=expr)) if expr is not None else list(dataset.get_fragments())
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid, pa.ArrowTypeError):
        # Statistics typed unlike the filter (another engine's files): choose by partition values only.
        fragments = list(dataset.get_fragments(filter=partition)) if partition is not None else list(dataset.get_fragments())
    target = pa.schema([contract.schema.field(c) for c in columns])
    if not fragments:
        return target.empty_table()
    chosen = ds.FileSystemDataset(fragments, dataset.schema, dataset.format, dataset.filesystem)
    # Files written by another engine may order columns differently or use other string types.
    return chosen.to_table(columns=list(columns)).cast(target)


def _prune_expression(contract: TableContract, column: str, op: str, value: Any):
    field_type = contract.schema.field(column).type
    if op == "in":
        return pc.field(column).isin(pa.array(list(value), field_type))
    ops = {"=": "__eq__", "==": "__eq__", "<": "__lt__", "<=": "__le__", ">": "__gt__", ">=": "__ge__"}
    if op in ops and value is not None:
        return getattr(pc.field(column), ops[op])(pa.scalar(value, field_type))
    return None  # "!=", "not in": little to prune, and nulls make them subtle


def _and(left, right):
    if right is None:
        return left
    return right if left is None else left & right


def _filter_mask(table: pa.Table, filters: Sequence[Filter]):
    """The rows of `table` that pass every (column, op, value) filter, as DNF's one conjunction."""
    ops = {"=": pc.equal, "==": pc.equal, "!=": pc.not_equal, "<": pc.less, "<=": pc.less_equal,
           ">": pc.greater, ">=": pc.greater_equal}
    mask = None
    for column, op, value in filters:
        values = table.column(column)
        if op in ("in", "not in"):
            hit = pc.is_in(values, value_set=pa.array(list(value), type=values.type))
            hit = pc.invert(hit) if op == "not in" else hit
        elif op in ops:
            hit = ops[op](values, pa.scalar(value, type=values.type))
        else:
            raise ValueError(f"filter operator {op!r} on {column!r} is not supported")
        hit = pc.fill_null(hit, False)
        mask = hit if mask is None else pc.and_(mask, hit)
    return mask
