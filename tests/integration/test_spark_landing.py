"""Ingest on the cluster: `land_simulated` simulates a portfolio's chunks on the Spark executors and MERGEs
them into bronze there; the local runner simulates and lands the same chunks in this process through
delta-rs. Both homes must hold the same bronze, quarantine, weather and registry (content hash), and a
re-run on the cluster must add no table version.
"""

from __future__ import annotations

import hashlib
import time
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import pytest

from lakehouse.schemas import BUILDINGS, QUARANTINE_READINGS, QUARANTINE_WEATHER, SENSOR_READINGS, WEATHER, TableContract
from wattflow.settings import ComputeSettings, LakehouseSettings, Settings

pytestmark = [pytest.mark.integration, pytest.mark.spark, pytest.mark.xdist_group("spark")]

START, END = datetime(2024, 3, 4, tzinfo=timezone.utc), datetime(2024, 3, 8, tzinfo=timezone.utc)
LANDED_AT = datetime(2024, 3, 8, 1, tzinfo=timezone.utc)
LANDED = (SENSOR_READINGS, QUARANTINE_READINGS, WEATHER, QUARANTINE_WEATHER, BUILDINGS)


def _settings(home: Path, runner: str) -> Settings:
    # Waves of one chunk: the cluster lands the 2 chunks in 2 waves, the second MERGEd beside the first's
    # files (bounded by its building ids), as a large portfolio lands.
    return Settings(home=home, compute=ComputeSettings(runner=runner, chunk_buildings=2),
                    lakehouse=LakehouseSettings(spark_shuffle_partitions=2, spark_landing_wave_chunks=1))


def _content(engine, contract: TableContract) -> pd.DataFrame:
    df = engine.read(contract).to_pandas()
    return df.sort_values(list(contract.keys)).reset_index(drop=True)


def _hash(df: pd.DataFrame) -> str:
    return hashlib.sha256(pd.util.hash_pandas_object(df, index=False).to_numpy().tobytes()).hexdigest()[:16]


def test_cluster_landed_bronze_equals_local_landed_bronze_and_a_rerun_writes_nothing(spark_session, tmp_path: Path) -> None:
    from lakehouse.delta_rs import DeltaRsEngine
    from lakehouse.engine import get_engine
    from lakehouse.simulator import FaultConfig
    from lakehouse.simulator.landing import land_simulated
    from lakehouse.spark_engine import SparkEngine

    # Faults that reach landing: late readings (a second delivery, landed after the first) and re-sent
    # readings with changed values (folded by the upsert). The rest are curation's business.
    faults = FaultConfig(unit_mixup_hours=(6.0, 12.0), fahrenheit_hours=(6.0, 12.0))
    local, cluster = _settings(tmp_path / "local", "local"), _settings(tmp_path / "cluster", "spark")
    ours = land_simulated(DeltaRsEngine.from_settings(local), local, 3, START, END, faults=faults, now=LANDED_AT)
    spark_engine = get_engine(cluster)
    assert isinstance(spark_engine, SparkEngine)
    t0 = time.perf_counter()
    theirs = land_simulated(spark_engine, cluster, 3, START, END, faults=faults, now=LANDED_AT)
    cluster_s = time.perf_counter() - t0

    assert (theirs.readings_landed, theirs.readings_quarantined) == (ours.readings_landed, ours.readings_quarantined)
    assert ours.readings_landed > 3 * 6 * 4 * 96 * 0.9
    assert {k: v for k, v in theirs.reasons.items() if v} == {k: v for k, v in ours.reasons.items() if v}

    local_engine, cluster_engine = DeltaRsEngine.from_settings(local), DeltaRsEngine.from_settings(cluster)
    for contract in LANDED:
        a, b = _content(local_engine, contract), _content(cluster_engine, contract)
        assert len(a) == len(b), contract.qualified_name
        # The simulator sends well-formed records: landing quarantines none (its faults are curation's).
        assert len(a) or contract in (QUARANTINE_READINGS, QUARANTINE_WEATHER), contract.qualified_name
        pd.testing.assert_frame_equal(a, b, check_exact=True, obj=contract.qualified_name)
        assert _hash(a) == _hash(b), contract.qualified_name
    bronze = _content(local_engine, SENSOR_READINGS)
    assert bronze["building_id"].nunique() == 3 and bronze["batch_id"].str.endswith("-d1").any()  # late ones landed

    # The second wave (chunk 1: b03) met none of the first wave's rows in its slice (dates x b03..b03): its
    # on-time rows went in by one insert-only MERGE that scanned no file and rewrote none of b01..b02's.
    inserts = [h for h in spark_engine.history(SENSOR_READINGS) if h["operation"] == "MERGE"
               and ">= b03)" in h["operationParameters"]["predicate"] and h["operationParameters"]["matchedPredicates"] == "[]"]
    assert len(inserts) == 1, [h["operationParameters"] for h in spark_engine.history(SENSOR_READINGS)]
    m = inserts[0]["operationMetrics"]
    assert (m["scanTimeMs"], m["numTargetRowsCopied"], m["numTargetFilesRemoved"], m["numTargetRowsUpdated"]) == (0, 0, 0, 0)
    b03 = bronze[bronze["building_id"] == "b03"]
    # Every on-time row it inserted is there (a late re-send may since have replaced one, as a d1 row).
    assert len(b03) >= m["numTargetRowsInserted"] == m["numSourceRows"] >= b03["batch_id"].str.endswith("-d0").sum() > 0

    versions = {c.qualified_name: cluster_engine.version(c) for c in LANDED}
    t1 = time.perf_counter()
    again = land_simulated(spark_engine, cluster, 3, START, END, faults=faults, now=LANDED_AT)
    assert again.readings_landed == ours.readings_landed
    assert {c.qualified_name: cluster_engine.version(c) for c in LANDED} == versions
    print(f"\ncluster landing {cluster_s:.1f}s, re-run {time.perf_counter() - t1:.1f}s")


def test_chunk_slots_hash_to_their_own_partitions_as_spark_places_them(spark_session) -> None:
    """The Spark runner groups by a slot per chunk that lands the i-th chunk in partition i % N; the slots
    come from a Python copy of Spark's hash, checked here against Spark's own."""
    from pyspark.sql import functions as F

    from lakehouse.runners import spark_hash_long, spread_slots

    rows = spark_session.range(-5, 200).select("id", F.hash("id").alias("h")).collect()
    assert [spark_hash_long(r["id"]) for r in rows] == [r["h"] for r in rows]
    slots = spread_slots(list(range(10)), 4)
    frame = spark_session.createDataFrame([(c, s) for c, s in slots.items()], "chunk long, slot long")
    placed = frame.repartition(4, "slot").select("chunk", F.spark_partition_id().alias("p")).collect()
    assert {r["chunk"]: r["p"] for r in placed} == {c: c % 4 for c in range(10)}
