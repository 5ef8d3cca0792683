"""Delta tables on an S3 endpoint (moto's server): delta-rs writes, Spark (S3A) reads, and back."""

from __future__ import annotations

from pathlib import Path

import pytest

from lakehouse.delta_rs import DeltaRsEngine
from lakehouse.schemas import SENSOR_READINGS
from lakehouse.spark_engine import SparkEngine
from tests.integration.delta_fixtures import readings, sorted_rows, with_column
from wattflow.settings import LakehouseSettings, Settings

pytestmark = [pytest.mark.integration, pytest.mark.spark, pytest.mark.xdist_group("spark")]  # meant for one worker (tests/conftest.py)


def s3_settings(home: Path, endpoint, bucket: str, prefix: str) -> Settings:
    # One set of storage options: delta-rs takes them as given, Spark's S3A config is derived from them.
    return Settings(
        home=home,
        lakehouse=LakehouseSettings(root_uri=f"s3://{bucket}/{prefix}", storage_options=endpoint.delta_storage_options()),
    )


def test_delta_rs_and_spark_share_tables_on_s3(tmp_path: Path, spark_session, s3_endpoint, s3_bucket: str) -> None:
    data = readings(hours=24, buildings=2)

    # delta-rs writes; Spark reads the same rows through S3A; both re-runs are no-ops.
    settings = s3_settings(tmp_path, s3_endpoint, s3_bucket, "lake-rs")
    delta_rs, spark = DeltaRsEngine.from_settings(settings), SparkEngine.from_settings(settings)
    assert spark.table_uri(SENSOR_READINGS) == delta_rs.table_uri(SENSOR_READINGS) == f"s3://{s3_bucket}/lake-rs/bronze/sensor_readings"
    created = delta_rs.upsert(SENSOR_READINGS, data)
    assert created.rows_inserted == data.num_rows
    keys = s3_endpoint.list_keys(s3_bucket, "lake-rs/bronze/sensor_readings/")
    assert "lake-rs/bronze/sensor_readings/_delta_log/00000000000000000000.json" in keys
    assert any(k.endswith(".parquet") for k in keys)
    assert spark.exists(SENSOR_READINGS) and spark.version(SENSOR_READINGS) == created.version
    written = sorted_rows(delta_rs.read(SENSOR_READINGS))
    assert sorted_rows(spark.read(SENSOR_READINGS)).equals(written)
    rerun_rs = delta_rs.upsert(SENSOR_READINGS, with_column(data, "batch_id", "rerun"))
    rerun_spark = spark.upsert(SENSOR_READINGS, with_column(data, "batch_id", "rerun"))
    assert (rerun_rs.version, rerun_rs.rows_unchanged) == (created.version, data.num_rows)
    assert (rerun_spark.version, rerun_spark.rows_inserted, rerun_spark.rows_updated) == (created.version, 0, 0)
    assert delta_rs.version(SENSOR_READINGS) == created.version

    # Spark writes a table on S3; delta-rs reads it identically and a delta-rs re-run changes nothing.
    settings = s3_settings(tmp_path, s3_endpoint, s3_bucket, "lake-spark")
    delta_rs, spark = DeltaRsEngine.from_settings(settings), SparkEngine.from_settings(settings)
    by_spark = spark.upsert(SENSOR_READINGS, data)
    assert (by_spark.version, by_spark.rows_inserted) == (0, data.num_rows)
    assert "lake-spark/bronze/sensor_readings/_delta_log/00000000000000000000.json" in s3_endpoint.list_keys(
        s3_bucket, "lake-spark/"
    )
    assert sorted_rows(delta_rs.read(SENSOR_READINGS)).equals(written)
    again = delta_rs.upsert(SENSOR_READINGS, with_column(data, "batch_id", "rerun"))
    assert (again.version, again.rows_inserted, again.rows_updated) == (0, 0, 0)

    # A corrected value through Spark on S3 is one new version that delta-rs sees; the old one stays pinned.
    fix = with_column(data.slice(0, 1), "value", 123.25)
    updated = spark.upsert(SENSOR_READINGS, fix)
    assert (updated.version, updated.rows_updated, updated.rows_inserted) == (1, 1, 0)
    first_key = [("building_id", "=", "b00"), ("sensor_id", "=", "meter-1"), ("ts", "=", data.column("ts")[0].as_py())]
    assert delta_rs.read(SENSOR_READINGS, filters=first_key).column("value").to_pylist() == [123.25]
    assert sorted_rows(delta_rs.read(SENSOR_READINGS, version=0)).equals(written)
