"""The scale-out engine: Spark + delta-spark, local mode by default, a cluster master by configuration.

Same contract as `DeltaRsEngine`: every write is an upsert on the contract's key, a re-run of the same
data makes no new version, reads can pin a version and come back as Arrow in the contract's schema.
The upsert is one Delta MERGE done by Spark (no rows pulled to the driver), so it scales with the
cluster; it only updates rows whose value columns changed, so bookkeeping columns (`ingested_at`,
`batch_id`) never make a re-run rewrite files, and Delta records no empty commit.
"""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import pyarrow as pa
import pyarrow.compute as pc

from lakehouse.engine import (
    CommitRetry,
    Filter,
    SchemaMismatch,
    WriteResult,
    coerce_filters,
    conform,
    dedupe_last,
    merge_predicate,
)
from lakehouse.schemas import TableContract
from lakehouse.spark_session import get_spark

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import Column, DataFrame, SparkSession


class _LostCreateRace(Exception):
    """Another writer created the table between our look and our CREATE TABLE."""


class SparkEngine:
    name = "spark"

    def __init__(
        self,
        root_uri: str,
        spark: "SparkSession",
        storage_options: dict[str, str] | None = None,
        *,
        prune_max_partition_values: int = 1000,
        retry: CommitRetry | None = None,
    ) -> None:
        self.root_uri = root_uri.rstrip("/")
        self.spark = spark
        # Kept for parity with DeltaRsEngine; the session's S3A configuration already carries them.
        self.storage_options = dict(storage_options or {})
        self.prune_max_partition_values = prune_max_partition_values
        self.retry = retry or CommitRetry()

    @classmethod
    def from_settings(cls, settings: Any) -> "SparkEngine":
        return cls(
            settings.lakehouse_uri,
            get_spark(settings),
            settings.lakehouse.storage_options,
            prune_max_partition_values=settings.lakehouse.spark_merge_prune_max_partition_values,
            retry=CommitRetry.from_settings(settings.lakehouse),
        )

    # -- locations -----------------------------------------------------------------------------------

    @property
    def _is_local(self) -> bool:
        return "://" not in self.root_uri or self.root_uri.startswith("file://")

    def table_uri(self, contract: TableContract) -> str:
        """The same URI delta-rs uses, so either engine opens the other's tables."""
        return f"{self.root_uri}/{contract.path}"

    def _path(self, contract: TableContract) -> str:
        """The URI as Hadoop wants it: a scheme-less path would resolve against a cluster's default FS."""
        uri = self.table_uri(contract)
        if "://" not in uri:
            return Path(uri).resolve().as_uri()
        return uri

    @staticmethod
    def _ident(path: str) -> str:
        return "delta.`" + path.replace("`", "``") + "`"

    # -- state ---------------------------------------------------------------------------------------

    def exists(self, contract: TableContract) -> bool:
        if self._is_local:
            return (Path(self.table_uri(contract).removeprefix("file://")) / "_delta_log").is_dir()
        from delta.tables import DeltaTable

        return bool(DeltaTable.isDeltaTable(self.spark, self._path(contract)))

    def version(self, contract: TableContract) -> int | None:
        if not self.exists(contract):
            return None
        row = self.spark.sql(f"DESCRIBE HISTORY {self._ident(self._path(contract))} LIMIT 1").select("version").first()
        return None if row is None else int(row["version"])

    # -- conversion ----------------------------------------------------------------------------------

    def _to_spark(self, contract: TableContract, batch: pa.Table) -> "DataFrame":
        from pyspark.sql.pandas.types import from_arrow_schema

        # Arrow goes to the JVM as Arrow record batches; the explicit schema keeps UTC timestamps and dates typed.
        return self.spark.createDataFrame(batch, schema=from_arrow_schema(contract.schema))

    # -- writes --------------------------------------------------------------------------------------

    def upsert(self, contract: TableContract, data: pa.Table) -> WriteResult:
        """One MERGE per batch. delta-spark checks it against the version it read (WriteSerializable: a
        concurrent MERGE that added or changed files in the partitions this one read makes it fail with a
        ConcurrentAppend/ConcurrentDelete... exception); the upsert then re-diffs and retries (settings)."""
        batch = dedupe_last(contract, conform(contract, data))
        return self.retry.run(contract.qualified_name, lambda: self._upsert_once(contract, batch), self._is_conflict)

    def upsert_frame(self, contract: TableContract, frame: "DataFrame", rows: int | None = None,
                     key_bounds: dict[str, tuple[Any, Any]] | None = None,
                     partition_values: dict[str, list[Any]] | None = None) -> WriteResult:
        """The same MERGE with a Spark DataFrame as its source: rows computed on the executors (the Spark
        runner's stage output) go into the table without passing through the driver. The frame must
        already carry the contract's columns and unique keys (the stage cores guarantee both).

        `key_bounds` ({key column: (lowest, highest)}, inclusive) promises that every source row's key
        lies in that range: the diff and the MERGE then read only target files whose Delta statistics
        overlap it. A wave of a few chunks (narrow, sorted building id ranges) over every date thus reads
        its own buildings' files, not the whole table, however much of the portfolio already landed. Where
        the table holds no row in that slice (dates x bounds), every row is new: one insert-only MERGE, no
        diff. `partition_values` (the frame's distinct partition values, where the caller counted them)
        saves the job that would find them."""
        from pyspark.sql.pandas.types import from_arrow_schema

        wanted = from_arrow_schema(contract.schema)
        source = frame.select(*[frame[f.name].cast(f.dataType).alias(f.name) for f in wanted.fields])
        bounds = {c: b for c, b in (key_bounds or {}).items() if c in contract.keys}
        return self.retry.run(contract.qualified_name, lambda: self._upsert_once(contract, source, rows, bounds, partition_values),
                              self._is_conflict)

    def _is_conflict(self, err: BaseException) -> bool:
        from delta.exceptions.base import (
            ConcurrentAppendException,
            ConcurrentDeleteDeleteException,
            ConcurrentDeleteReadException,
            ConcurrentTransactionException,
            ConcurrentWriteException,
            DeltaConcurrentModificationException,
            MetadataChangedException,
            ProtocolChangedException,
        )

        if isinstance(err, _LostCreateRace):
            return True
        return isinstance(
            err,
            (
                ConcurrentAppendException, ConcurrentDeleteDeleteException, ConcurrentDeleteReadException,
                ConcurrentTransactionException, ConcurrentWriteException, DeltaConcurrentModificationException,
                MetadataChangedException, ProtocolChangedException,
            ),
        )

    def _upsert_once(self, contract: TableContract, batch: "pa.Table | DataFrame", rows: int | None = None,
                     bounds: dict[str, tuple[Any, Any]] | None = None,
                     partition_values: dict[str, list[Any]] | None = None) -> WriteResult:
        path = self._path(contract)
        # A DataFrame's row count is one more Spark job; callers that know it (the runners) pass it.
        rows = batch.num_rows if isinstance(batch, pa.Table) else (rows if rows is not None else batch.count())
        if not self.exists(contract):
            try:
                self._create(contract, batch, path)
            except Exception as err:
                # Two writers creating one table: the loser's CTAS finds the table (or version 0) there.
                if self.exists(contract) and not self._is_conflict(err):
                    raise _LostCreateRace(f"{contract.qualified_name}: another writer created the table first") from err
                raise
            version = self.version(contract)
            assert version is not None
            return WriteResult(contract.qualified_name, version, rows, 0, 0)
        if rows == 0:
            return WriteResult(contract.qualified_name, self.version(contract) or 0, 0, 0, 0)
        values = self._partition_values(contract, batch, partition_values)
        if bounds and self._slice(contract, path, values, bounds).limit(1).count() == 0:
            # Nothing of the table in the batch's slice (a wave of buildings landing for the first time):
            # no key can match, so no diff (a join and a checkpoint of every row); an insert-only MERGE,
            # whose own read of the same slice still meets a concurrent writer's commit as a conflict.
            source = self._to_spark(contract, batch) if isinstance(batch, pa.Table) else batch
            view = f"wattflow_insert_{uuid.uuid4().hex}"
            source.createOrReplaceTempView(view)
            try:
                self.spark.sql(self._merge_sql(contract, values, path, view, bounds, insert_only=True))
            finally:
                self.spark.catalog.dropTempView(view)
            version = self.version(contract)
            assert version is not None
            return WriteResult(contract.qualified_name, version, rows, 0, 0)
        changes = self._changes(contract, batch, path, bounds, values)
        # One pass over the diff yields the counts and the partitions the MERGE must touch.
        groups = changes.groupBy("__new", *contract.partition_by).count().collect()
        inserted = sum(int(g["count"]) for g in groups if g["__new"])
        updated = sum(int(g["count"]) for g in groups if not g["__new"])
        touched = {c: sorted({g[c] for g in groups}) for c in contract.partition_by}
        if inserted or updated:
            view = f"wattflow_upsert_{uuid.uuid4().hex}"
            changes.drop("__new").createOrReplaceTempView(view)
            try:
                self.spark.sql(self._merge_sql(contract, touched, path, view, bounds))
            finally:
                self.spark.catalog.dropTempView(view)
        version = self.version(contract)
        assert version is not None
        return WriteResult(contract.qualified_name, version, inserted, updated, rows - inserted - updated)

    def _partition_values(self, contract: TableContract, batch: "pa.Table | DataFrame",
                          given: dict[str, list[Any]] | None = None) -> dict[str, list[Any]]:
        """The batch's distinct values of each partition column: from the caller, the Arrow batch, or (a
        summary job) the executor-side frame."""
        out = {}
        for col in contract.partition_by:
            if given is not None and col in given:
                out[col] = list(given[col])
            elif isinstance(batch, pa.Table):
                out[col] = pc.unique(batch.column(col)).to_pylist()
            else:
                out[col] = [r[0] for r in batch.select(col).distinct().collect()]
        return out

    def _slice(self, contract: TableContract, path: str, values: dict[str, list[Any]],
               bounds: dict[str, tuple[Any, Any]] | None) -> "DataFrame":
        """The target restricted by literal partition values and key bounds: Delta prunes partitions and
        skips files by their statistics, so only files that can hold a batch key are read."""
        from pyspark.sql import functions as F

        target = self.spark.read.format("delta").load(path)
        for col, vals in values.items():
            if len(vals) <= self.prune_max_partition_values:
                target = target.where(F.col(col).isin(vals))
        for col, (lo, hi) in (bounds or {}).items():
            target = target.where(F.col(col).between(lo, hi))
        return target

    def _changes(self, contract: TableContract, batch: "pa.Table | DataFrame", path: str,
                 bounds: dict[str, tuple[Any, Any]] | None = None, values: dict[str, list[Any]] | None = None) -> "DataFrame":
        """Batch rows that are new or whose value columns differ from the table, flagged `__new`.

        Delta's MERGE rewrites every file holding a key that matches, even when its update condition
        then changes nothing; diffing first means a re-run touches no file and commits nothing, and an
        overlapping batch rewrites only the files of rows that really changed.
        """
        from pyspark.sql import functions as F

        source = (self._to_spark(contract, batch) if isinstance(batch, pa.Table) else batch).alias("s")
        target = self._slice(contract, path, values if values is not None else self._partition_values(contract, batch), bounds)
        keys = list(dict.fromkeys([*contract.partition_by, *contract.keys]))
        values = list(contract.value_columns)
        target = target.select(*keys, *values, F.lit(True).alias("__present")).alias("t")
        on = [F.col(f"s.`{k}`") == F.col(f"t.`{k}`") for k in keys]
        joined = source.join(target, on=on, how="left")
        is_new = F.col("t.__present").isNull()
        same = F.lit(True)
        for v in values:
            same = same & F.col(f"s.`{v}`").eqNullSafe(F.col(f"t.`{v}`"))
        changed = joined.where(is_new | ~same).select("s.*", is_new.alias("__new"))
        # Computed once and kept by the executors: the counts and the MERGE both read it. Delta refuses
        # a MERGE whose source is in Spark's cache, but a checkpoint is a plain, deterministic relation.
        return changed.localCheckpoint(eager=True)

    def _create(self, contract: TableContract, batch: "pa.Table | DataFrame", path: str) -> None:
        if contract.partition_by and isinstance(batch, pa.Table):
            # Rows sorted by partition value before they leave Python: each Arrow batch (one Spark task)
            # then spans a few dates, so a year lands as ~one file per date without a Spark shuffle.
            batch = batch.sort_by([(c, "ascending") for c in contract.partition_by])
        df = self._to_spark(contract, batch) if isinstance(batch, pa.Table) else batch
        view = f"wattflow_create_{uuid.uuid4().hex}"
        df.createOrReplaceTempView(view)
        partitioned = f" PARTITIONED BY ({', '.join(f'`{c}`' for c in contract.partition_by)})" if contract.partition_by else ""
        comment = f" COMMENT {_sql_string(contract.description)}" if contract.description else ""
        try:
            # CTAS writes schema, description and the first rows in one commit (version 0), like delta-rs.
            self.spark.sql(f"CREATE TABLE {self._ident(path)} USING DELTA{partitioned}{comment} AS SELECT * FROM {view}")
        finally:
            self.spark.catalog.dropTempView(view)

    def _merge_sql(self, contract: TableContract, touched: dict[str, list[Any]], path: str, view: str,
                   bounds: dict[str, tuple[Any, Any]] | None = None, insert_only: bool = False) -> str:
        on = [merge_predicate(contract, source="s", target="t")]
        # A join condition alone does not prune partitions; literal partition values do.
        for col, values in touched.items():
            if len(values) <= self.prune_max_partition_values:
                on.append(f"t.`{col}` IN ({', '.join(_sql_literal(v) for v in values)})")
        for col, (lo, hi) in (bounds or {}).items():
            on.append(f"t.`{col}` BETWEEN {_sql_literal(lo)} AND {_sql_literal(hi)}")
        clauses = []
        values = list(contract.value_columns)
        if values and not insert_only:
            same = " AND ".join(f"t.`{c}` <=> s.`{c}`" for c in values)
            clauses.append(f"WHEN MATCHED AND NOT ({same}) THEN UPDATE SET *")
        clauses.append("WHEN NOT MATCHED THEN INSERT *")
        return f"MERGE INTO {self._ident(path)} AS t USING {view} AS s ON {' AND '.join(on)} " + " ".join(clauses)

    # -- reads ---------------------------------------------------------------------------------------

    def read(
        self,
        contract: TableContract,
        *,
        version: int | None = None,
        filters: Sequence[Filter] | None = None,
        columns: Sequence[str] | None = None,
    ) -> pa.Table:
        wanted = list(columns) if columns else contract.schema.names
        unknown = [c for c in wanted if c not in contract.schema.names]
        if unknown:
            raise SchemaMismatch(f"{contract.qualified_name}: no column(s) {unknown}")
        if not self.exists(contract):
            if version is not None:
                raise FileNotFoundError(f"{contract.qualified_name} has no version {version} at {self.table_uri(contract)}")
            return contract.schema.empty_table().select(wanted)
        reader = self.spark.read.format("delta")
        if version is not None:
            reader = reader.option("versionAsOf", int(version))
        df = reader.load(self._path(contract))
        if filters:
            df = df.where(_filter_column(contract, filters))
        result = df.select(*wanted).toArrow()
        target = pa.schema([contract.schema.field(c) for c in wanted])
        return result.select(wanted).cast(target)

    # -- maintenance ---------------------------------------------------------------------------------

    def history(self, contract: TableContract, limit: int | None = None) -> list[dict[str, Any]]:
        if not self.exists(contract):
            return []
        sql = f"DESCRIBE HISTORY {self._ident(self._path(contract))}" + (f" LIMIT {int(limit)}" if limit else "")
        entries = []
        for row in self.spark.sql(sql).collect():
            entry = row.asDict(recursive=True)
            # delta-rs reports epoch milliseconds and numeric metrics; keep one shape for the CLI.
            if isinstance(entry.get("timestamp"), dt.datetime):
                ts = entry["timestamp"]
                ts = ts if ts.tzinfo else ts.replace(tzinfo=dt.timezone.utc)
                entry["timestamp"] = int(ts.timestamp() * 1000)
            entry["operationMetrics"] = {k: _number(v) for k, v in (entry.get("operationMetrics") or {}).items()}
            entries.append(entry)
        return entries

    def optimize(self, contract: TableContract) -> dict[str, Any]:
        if not self.exists(contract):
            return {}
        row = self.spark.sql(f"OPTIMIZE {self._ident(self._path(contract))}").first()
        return {} if row is None or row["metrics"] is None else row["metrics"].asDict(recursive=True)

    def vacuum(self, contract: TableContract, retention_hours: int, dry_run: bool = True) -> list[str]:
        """Files no longer referenced within the retention, relative to the table root (as delta-rs lists them)."""
        if not self.exists(contract):
            return []
        ident = self._ident(self._path(contract))
        rows = self.spark.sql(f"VACUUM {ident} RETAIN {int(retention_hours)} HOURS DRY RUN").collect()
        root = self._path(contract).rstrip("/") + "/"
        files = sorted(_relative(r["path"], root) for r in rows)
        if files and not dry_run:
            self.spark.sql(f"VACUUM {ident} RETAIN {int(retention_hours)} HOURS")
        return files


# -- SQL helpers ---------------------------------------------------------------------------------------


def _sql_string(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _sql_literal(value: Any) -> str:
    if isinstance(value, dt.datetime):
        value = value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)
        return f"TIMESTAMP'{value.astimezone(dt.timezone.utc).isoformat(sep=' ')}'"
    if isinstance(value, dt.date):
        return f"DATE'{value.isoformat()}'"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, (int, float)):
        return repr(value)
    if value is None:
        return "NULL"
    return _sql_string(str(value))


def _relative(path: str, root: str) -> str:
    for prefix in (root, root.replace("file:///", "file:/")):
        if path.startswith(prefix):
            return path[len(prefix):]
    return path


def _number(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            try:
                return float(value)
            except ValueError:
                return value
    return value


def _filter_column(contract: TableContract, filters: Sequence[Filter]) -> "Column":
    from pyspark.sql import functions as F

    condition = None
    # One coercion for both engines: ISO text or numbers in text become the column's own type.
    for name, op, value in coerce_filters(contract, filters) or []:
        col = F.col(name)
        op = op.strip().lower()
        if op in ("in", "not in"):
            term = col.isin(list(value)) if op == "in" else ~col.isin(list(value))
        elif op in ("=", "=="):
            term = col == F.lit(value)
        elif op == "!=":
            term = col != F.lit(value)
        elif op == "<":
            term = col < F.lit(value)
        elif op == "<=":
            term = col <= F.lit(value)
        elif op == ">":
            term = col > F.lit(value)
        elif op == ">=":
            term = col >= F.lit(value)
        else:
            raise ValueError(f"unsupported filter operator {op!r} on column {name!r}")
        condition = term if condition is None else condition & term
    assert condition is not None
    return condition
