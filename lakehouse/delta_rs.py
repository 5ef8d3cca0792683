"""The default engine: delta-rs (`deltalake`), in-process, no JVM."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import pyarrow as pa
from deltalake import DeltaTable, write_deltalake
from deltalake.exceptions import TableNotFoundError

from lakehouse.engine import (
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


class DeltaRsEngine:
    name = "delta_rs"

    def __init__(self, root_uri: str, storage_options: dict[str, str] | None = None) -> None:
        self.root_uri = root_uri.rstrip("/")
        self.storage_options = dict(storage_options or {})

    @classmethod
    def from_settings(cls, settings: Any) -> "DeltaRsEngine":
        return cls(settings.lakehouse_uri, settings.lakehouse.storage_options)

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
        batch = dedupe_last(contract, conform(contract, data))
        uri = self.table_uri(contract)
        table = self._table(contract)
        if table is None:
            if self._is_local:
                os.makedirs(uri.removeprefix("file://"), exist_ok=True)
            write_deltalake(
                uri,
                batch,
                mode="append",
                partition_by=list(contract.partition_by) or None,
                name=contract.qualified_name,
                description=contract.description,
                storage_options=self.storage_options or None,
            )
            return WriteResult(contract.qualified_name, self.version(contract) or 0, batch.num_rows, 0, 0)
        if batch.num_rows == 0:
            return WriteResult(contract.qualified_name, table.version(), 0, 0, 0)
        columns = list(dict.fromkeys([*contract.keys, *contract.value_columns]))
        existing = table.to_pyarrow_table(filters=partition_filter(contract, batch), columns=columns)
        delta = diff_against(contract, batch, existing)
        if delta.updates.num_rows:
            # Changed values need a MERGE; new keys ride along in the same commit.
            source = pa.concat_tables([delta.updates, delta.inserts])
            (
                table.merge(source, merge_predicate(contract), source_alias="s", target_alias="t")
                .when_matched_update_all()
                .when_not_matched_insert_all()
                .execute()
            )
        elif delta.inserts.num_rows:
            # Only new keys: a plain append is an order of magnitude cheaper than a MERGE.
            write_deltalake(table, delta.inserts, mode="append", storage_options=self.storage_options or None)
        version = self.version(contract)
        assert version is not None
        return WriteResult(
            contract.qualified_name, version, delta.inserts.num_rows, delta.updates.num_rows, delta.unchanged
        )

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
        result = table.to_pyarrow_table(filters=coerce_filters(contract, filters), columns=list(columns) if columns else None)
        # Files written by another engine may order columns differently or use other string types.
        wanted = list(columns) if columns else contract.schema.names
        target = pa.schema([contract.schema.field(c) for c in wanted])
        return result.select(wanted).cast(target)

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
