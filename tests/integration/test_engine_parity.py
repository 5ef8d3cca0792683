"""delta-rs and Spark + delta-spark behind one interface: same rows, each reads the other's tables,
upserts are idempotent in both, and versions pin reads."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow as pa
import pytest

from lakehouse.delta_rs import DeltaRsEngine
from lakehouse.schemas import SENSOR_READINGS
from lakehouse.spark_engine import SparkEngine
from tests.integration.delta_fixtures import T0, readings, sorted_rows, utc, with_column
from wattflow.settings import LakehouseSettings, Settings

pytestmark = [pytest.mark.integration, pytest.mark.spark, pytest.mark.xdist_group("spark")]  # meant for one worker (tests/conftest.py)

def engines(root: Path, spark_session) -> tuple[DeltaRsEngine, SparkEngine]:
    settings = Settings(home=root, lakehouse=LakehouseSettings(root_uri=str(root / "lakehouse")))
    return DeltaRsEngine.from_settings(settings), SparkEngine.from_settings(settings)


@pytest.fixture
def both(tmp_path: Path, spark_session) -> tuple[DeltaRsEngine, SparkEngine]:
    return engines(tmp_path, spark_session)


def test_spark_session_runs_in_utc_with_delta(spark_session) -> None:
    assert spark_session.conf.get("spark.sql.session.timeZone") == "UTC"
    assert "DeltaSparkSessionExtension" in spark_session.conf.get("spark.sql.extensions")
    assert spark_session.conf.get("spark.sql.execution.arrow.pyspark.enabled") == "true"


def test_same_input_same_rows_and_each_engine_reads_the_others_table(both, tmp_path: Path) -> None:
    delta_rs, spark = both
    data = readings()
    spark_root = tmp_path / "spark-lake"
    spark.root_uri = str(spark_root)

    by_rs = delta_rs.upsert(SENSOR_READINGS, data)
    by_spark = spark.upsert(SENSOR_READINGS, data)
    assert (by_rs.rows_inserted, by_rs.rows_updated, by_rs.rows_unchanged) == (data.num_rows, 0, 0)
    assert (by_spark.rows_inserted, by_spark.rows_updated, by_spark.rows_unchanged) == (data.num_rows, 0, 0)
    assert by_rs.version == by_spark.version == 0

    rs_table_by_rs = sorted_rows(delta_rs.read(SENSOR_READINGS))
    rs_table_by_spark = sorted_rows(_read_at(spark, delta_rs.root_uri))
    spark_table_by_spark = sorted_rows(spark.read(SENSOR_READINGS))
    spark_table_by_rs = sorted_rows(_read_at(delta_rs, str(spark_root)))

    assert rs_table_by_rs.schema == SENSOR_READINGS.schema
    assert spark_table_by_spark.schema == SENSOR_READINGS.schema
    assert rs_table_by_rs.num_rows == data.num_rows
    assert rs_table_by_rs.drop_columns(["date"]).equals(sorted_rows(data))
    # The same rows, whichever engine wrote and whichever read: values, nulls, UTC timestamps, dates.
    assert spark_table_by_spark.equals(rs_table_by_rs)
    assert rs_table_by_spark.equals(rs_table_by_rs)
    assert spark_table_by_rs.equals(rs_table_by_rs)
    assert sorted(set(rs_table_by_rs.column("date").to_pylist())) == [dt.date(2024, 3, 30), dt.date(2024, 3, 31)]

    # Filters in delta-rs' DNF form and column selection agree too.
    filters = [("date", "=", dt.date(2024, 3, 31)), ("building_id", "in", ["b00", "b02"])]
    cols = ["building_id", "ts", "value", "date"]
    order = [("building_id", "ascending"), ("ts", "ascending"), ("value", "ascending")]
    by_rs = delta_rs.read(SENSOR_READINGS, filters=filters, columns=cols).sort_by(order)
    assert by_rs.num_rows == 2 * 2 * 96 and by_rs.column_names == cols
    assert spark.read(SENSOR_READINGS, filters=filters, columns=cols).sort_by(order).equals(by_rs)
    assert _read_at(spark, delta_rs.root_uri, filters=filters, columns=cols).sort_by(order).equals(by_rs)


def _read_at(engine: DeltaRsEngine | SparkEngine, root: str, **kwargs) -> pa.Table:
    previous = engine.root_uri
    engine.root_uri = root
    try:
        return engine.read(SENSOR_READINGS, **kwargs)
    finally:
        engine.root_uri = previous


def test_spark_upsert_is_idempotent_merges_overlaps_and_updates_changed_values(both) -> None:
    delta_rs, spark = both
    first = readings(hours=24)
    created = spark.upsert(SENSOR_READINGS, first)
    assert created.rows_inserted == first.num_rows
    original = sorted_rows(spark.read(SENSOR_READINGS))

    # Same interval again, new batch id and ingestion time: nothing changes, no new Delta version.
    rerun = spark.upsert(SENSOR_READINGS, readings(hours=24, batch="batch-2"))
    assert (rerun.version, rerun.rows_inserted, rerun.rows_updated, rerun.rows_unchanged) == (
        created.version, 0, 0, first.num_rows
    )
    assert not rerun.changed
    assert spark.version(SENSOR_READINGS) == created.version
    assert sorted_rows(spark.read(SENSOR_READINGS)).equals(original)  # bookkeeping of the first write kept

    # An overlapping interval (second half of day 1 + day 2) merges: only the new half is inserted.
    two_days = readings(hours=48)
    overlap = two_days.filter(pa.compute.greater_equal(two_days.column("ts"), utc(T0 + dt.timedelta(hours=12))))
    merged = spark.upsert(SENSOR_READINGS, overlap)
    overlapping = overlap.filter(pa.compute.less(overlap.column("ts"), utc(T0 + dt.timedelta(hours=24)))).num_rows
    assert merged.version == created.version + 1
    assert (merged.rows_inserted, merged.rows_updated, merged.rows_unchanged) == (
        overlap.num_rows - overlapping, 0, overlapping
    )
    after_merge = spark.read(SENSOR_READINGS)
    assert after_merge.num_rows == two_days.num_rows

    # One corrected value updates exactly that row; the batch repeats it and the last copy wins.
    pc = pa.compute
    target = after_merge.filter(
        pc.and_(pc.equal(after_merge.column("building_id"), "b01"), pc.equal(after_merge.column("metric"), "energy"))
    ).slice(10, 1)
    fix = with_column(with_column(target.drop_columns(["date"]), "value", 999.5), "batch_id", "fix")
    updated = spark.upsert(SENSOR_READINGS, pa.concat_tables([with_column(fix, "value", 1.0), fix]))
    assert (updated.version, updated.rows_inserted, updated.rows_updated, updated.rows_unchanged) == (
        merged.version + 1, 0, 1, 0
    )
    key = [("building_id", "=", "b01"), ("sensor_id", "=", "meter-1"), ("ts", "=", target.column("ts")[0].as_py())]
    fixed = spark.read(SENSOR_READINGS, filters=key)
    assert fixed.column("value").to_pylist() == [999.5] and fixed.column("batch_id").to_pylist() == ["fix"]
    assert spark.read(SENSOR_READINGS).num_rows == after_merge.num_rows

    # Version pinning: every earlier state reads back as it was, through either engine.
    assert sorted_rows(spark.read(SENSOR_READINGS, version=created.version)).equals(original)
    assert spark.read(SENSOR_READINGS, version=merged.version, filters=key).column("value").to_pylist() == [
        target.column("value")[0].as_py()
    ]
    assert sorted_rows(delta_rs.read(SENSOR_READINGS, version=created.version)).equals(original)
    assert delta_rs.read(SENSOR_READINGS, filters=key).column("value").to_pylist() == [999.5]
    with pytest.raises(FileNotFoundError):
        SparkEngine(spark.root_uri + "-absent", spark.spark).read(SENSOR_READINGS, version=0)

    # delta-rs re-writing what Spark wrote (new bookkeeping) is just as idempotent.
    current = spark.read(SENSOR_READINGS).drop_columns(["date"])
    again = delta_rs.upsert(SENSOR_READINGS, with_column(current, "batch_id", "batch-3"))
    assert (again.version, again.rows_inserted, again.rows_updated) == (updated.version, 0, 0)


def test_maintenance_history_optimize_vacuum_agree_with_delta_rs(both) -> None:
    delta_rs, spark = both
    # Two small commits into the same partition leave small files to compact.
    for i in range(2):
        spark.upsert(SENSOR_READINGS, readings(start=T0 + i * dt.timedelta(hours=6), hours=6, buildings=1))
    history = spark.history(SENSOR_READINGS)
    assert [h["version"] for h in history] == [1, 0]
    assert history[0]["operation"] == "MERGE" and history[-1]["operation"] == "CREATE TABLE AS SELECT"
    assert history[0]["operationMetrics"]["numTargetRowsInserted"] == 6 * 4 * 2
    assert isinstance(history[0]["timestamp"], int)
    assert [h["version"] for h in spark.history(SENSOR_READINGS, limit=1)] == [1]
    assert [h["version"] for h in delta_rs.history(SENSOR_READINGS)] == [1, 0]

    before = spark.read(SENSOR_READINGS)
    metrics = spark.optimize(SENSOR_READINGS)
    assert metrics["numFilesRemoved"] > metrics["numFilesAdded"] >= 1
    assert spark.version(SENSOR_READINGS) == 2
    assert sorted_rows(spark.read(SENSOR_READINGS)).equals(sorted_rows(before))

    # The compacted-away files are what both engines would vacuum, named relative to the table root.
    by_spark = spark.vacuum(SENSOR_READINGS, retention_hours=0, dry_run=True)
    by_rs = sorted(delta_rs.vacuum(SENSOR_READINGS, retention_hours=0, dry_run=True))
    assert len(by_spark) == metrics["numFilesRemoved"]
    assert by_spark == by_rs
    table_root = Path(spark.table_uri(SENSOR_READINGS))
    assert all((table_root / f).is_file() for f in by_spark)
    deleted = spark.vacuum(SENSOR_READINGS, retention_hours=0, dry_run=False)
    assert deleted == by_spark
    assert not any((table_root / f).exists() for f in deleted)
    assert sorted_rows(delta_rs.read(SENSOR_READINGS)).equals(sorted_rows(before))


def test_missing_table_reads_empty_in_contract_schema(both) -> None:
    _, spark = both
    assert not spark.exists(SENSOR_READINGS)
    assert spark.version(SENSOR_READINGS) is None
    empty = spark.read(SENSOR_READINGS, columns=["building_id", "value"])
    assert empty.num_rows == 0 and empty.schema == pa.schema([SENSOR_READINGS.schema.field("building_id"), SENSOR_READINGS.schema.field("value")])
    assert spark.history(SENSOR_READINGS) == [] and spark.optimize(SENSOR_READINGS) == {}
