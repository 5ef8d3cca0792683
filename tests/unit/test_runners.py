"""The runner plumbing that needs no cluster: chunks, the envelope, merging per-chunk expectation results,
the compute settings and Airflow's spark_default connection."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pyarrow as pa
import pytest

from data_quality.policy import QualityResult
from lakehouse.runners import CURATE, RESULT_SCHEMA, chunk_members, chunk_of, merge_results, results_from_table, results_table
from wattflow.airflow_env import AirflowConfigError, spark_master_from_connection
from wattflow.settings import ComputeSettings, LakehouseSettings, Settings


def test_chunks_cut_the_sorted_ids_the_same_way_whatever_order_they_come_in() -> None:
    chunks = chunk_of(["b05", "b01", "b03", "b02", "b04"], 2)
    assert chunks == {"b01": 0, "b02": 0, "b03": 1, "b04": 1, "b05": 2}
    assert chunk_members(chunks) == {0: ["b01", "b02"], 1: ["b03", "b04"], 2: ["b05"]}
    assert chunk_of(["b02", "b01"], 50) == {"b01": 0, "b02": 0}


def test_the_envelope_carries_each_output_back_unchanged() -> None:
    silver = pa.table({"building_id": ["b1"], "ts": pa.array([datetime(2024, 1, 1, tzinfo=timezone.utc)], pa.timestamp("us", tz="UTC"))})
    result = QualityResult("s", "batch", "e", False, "3 of 9 rows (33.3%)", "0", 3, 9, "warn")
    packed = CURATE.pack(4, {"silver": silver, "results": results_table([result])})
    assert packed.num_rows == 2 and set(packed.column("chunk").to_pylist()) == {4}
    assert sorted(packed.column("table").to_pylist()) == ["results", "silver"]
    back = CURATE.unpack(packed, "silver")
    assert back.column("building_id").to_pylist() == ["b1"] and back.column("ts").to_pylist() == silver.column("ts").to_pylist()
    assert back.num_columns == len(CURATE.outputs["silver"])  # the full silver schema, absent columns null
    assert results_from_table(CURATE.unpack(packed, "results")) == [result]
    assert CURATE.unpack(packed, "quarantine").num_rows == 0


def _r(expectation: str, success: bool, observed: str, bad: int, total: int, suite: str = "bronze_sensor_readings",
       policy: str = "reject") -> QualityResult:
    return QualityResult(suite, "curate:x", expectation, success, observed, "t", bad, total, policy)


def test_chunk_results_merge_into_one_per_expectation_with_counts_added_and_shares_recomputed() -> None:
    settings = Settings()
    q = settings.quality
    one = [_r("spike", False, "2", 2, 100), _r("reject_share", True, "0.020000", 2, 100, policy="warn"),
           _r("systematic_reject_share", True, "b1/e: 0.100000", 10, 100, policy="fail"),
           _r("hourly_energy_completeness", True, "0.95", 5, 100, suite="silver_building_hourly", policy="warn"),
           _r("hourly_keys_unique", True, "0 of 100 rows (0%)", 0, 100, suite="silver_building_hourly", policy="fail")]
    two = [_r("spike", True, "0", 0, 300), _r("reject_share", False, f"{0.3:.6f}", 90, 300, policy="warn"),
           _r("systematic_reject_share", True, "b3/e: 0.200000", 20, 300, policy="fail"),
           _r("hourly_energy_completeness", False, "0.8", 60, 300, suite="silver_building_hourly", policy="warn"),
           _r("hourly_keys_unique", False, "1 of 300 rows (0.333%)", 1, 300, suite="silver_building_hourly", policy="fail")]
    merged = {r.expectation: r for r in merge_results([one, two], settings)}
    assert len(merged) == 5
    spike = merged["spike"]  # a sum expectation: the sum of the chunks' sums, held only if within [0, 0]
    assert (spike.success, spike.observed_value, spike.unexpected_count, spike.element_count) == (False, "2", 2, 400)
    share = merged["reject_share"]  # 92 of 400 = 0.23 > max_reject_share
    assert share.observed_value == "0.230000" and share.success is (0.23 <= q.max_reject_share)
    assert merged["systematic_reject_share"].observed_value == "b3/e: 0.200000"  # the worst sensor of any chunk
    completeness = merged["hourly_energy_completeness"]  # 335 of 400 present
    assert completeness.observed_value == "0.8375" and completeness.success is (0.8375 >= q.min_completeness)
    keys = merged["hourly_keys_unique"]
    assert (keys.success, keys.unexpected_count, keys.element_count) == (False, 1, 400)
    assert keys.observed_value == "1 of 400 rows (0.25%)"
    assert merge_results([one], settings) == one  # one chunk: GE's own results, unchanged
    assert RESULT_SCHEMA.names == list(one[0].as_row())


@pytest.mark.parametrize("value, master", [
    ("spark://spark-master:7077", "spark://spark-master:7077"),
    ('{"conn_type": "spark", "host": "spark://spark-master", "port": 7077}', "spark://spark-master:7077"),
    ('{"conn_type": "spark", "host": "spark-master", "port": 7077}', "spark://spark-master:7077"),
    ('{"conn_type": "spark", "host": "k8s://https://api:6443"}', "k8s://https://api:6443"),
    ('{"conn_type": "spark", "host": "local[4]"}', "local[4]"),
    ("", ""),
])
def test_the_spark_default_connection_names_the_master(value: str, master: str) -> None:
    assert spark_master_from_connection(value) == master


def test_a_spark_default_connection_that_is_no_spark_master_is_refused_by_name() -> None:
    with pytest.raises(AirflowConfigError, match="AIRFLOW_CONN_SPARK_DEFAULT='postgresql://db/x'"):
        spark_master_from_connection("postgresql://db/x")


def test_runner_spark_implies_spark_storage_and_the_connection_wins_for_the_master(monkeypatch) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_SPARK_DEFAULT", raising=False)
    local = Settings(lakehouse=LakehouseSettings(engine="delta_rs"))
    assert local.table_engine == "delta_rs" and local.spark_master_url == "local[2]"
    spark = Settings(compute=ComputeSettings(runner="spark", spark_master="spark://a:7077"),
                     lakehouse=LakehouseSettings(engine="delta_rs"))
    assert spark.table_engine == "spark" and spark.spark_master_url == "spark://a:7077"
    monkeypatch.setenv("AIRFLOW_CONN_SPARK_DEFAULT", json.dumps({"conn_type": "spark", "host": "spark://b", "port": 7077}))
    assert spark.spark_master_url == "spark://b:7077"
    from lakehouse.spark_session import session_conf

    assert session_conf(spark, [])["spark.master"] == "spark://b:7077"
    with pytest.raises(ValueError):
        ComputeSettings(chunk_buildings=0)
