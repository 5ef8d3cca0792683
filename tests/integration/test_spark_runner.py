"""One core, two runners: a small simulated portfolio with faults goes through ingest -> curate -> features
(-> batch scoring -> monitoring) on the local runner (delta-rs, chunks in this process) and on a real Spark
standalone cluster (two workers; tests/integration/conftest.py), and every table comes out identical.

Chunks of two buildings over three buildings: both runners cut the portfolio into the same two chunks, so
the expectation results of both chunks are merged into one result per expectation on each side too.
"""

from __future__ import annotations

import hashlib
import time
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

from lakehouse.schemas import (
    BUILDING_HOURLY,
    FEATURES,
    QUALITY_RESULTS,
    QUARANTINE_READINGS,
    QUARANTINE_WEATHER,
    TableContract,
)
from wattflow.settings import ComputeSettings, LakehouseSettings, Settings

pytestmark = [pytest.mark.integration, pytest.mark.spark, pytest.mark.xdist_group("spark")]

SIM_START, SIM_END = "2024-03-04", "2024-03-16"
START = datetime(2024, 3, 6, tzinfo=timezone.utc)
END = datetime(2024, 3, 16, tzinfo=timezone.utc)
LANDED_AT = datetime(2024, 3, 16, 1, tzinfo=timezone.utc)
COMPARED = (BUILDING_HOURLY, QUARANTINE_READINGS, QUARANTINE_WEATHER, FEATURES, QUALITY_RESULTS)


def content(engine, contract: TableContract) -> pd.DataFrame:
    """The table's rows in key order, without bookkeeping that differs per run (run ids, validation times)."""
    df = engine.read(contract).to_pandas()
    drop = [c for c in ("run_id", "validated_at") if c in df.columns]
    return df.drop(columns=drop).sort_values(list(contract.keys)).reset_index(drop=True)


def content_hash(df: pd.DataFrame) -> str:
    return hashlib.sha256(pd.util.hash_pandas_object(df, index=False).to_numpy().tobytes()).hexdigest()[:16]


@pytest.fixture(scope="module")
def portfolio():
    from lakehouse.simulator import FaultConfig, simulate_portfolio

    # Short unit mix-ups: a 12-day batch must stay under the systematic share that stops a batch.
    faults = FaultConfig(unit_mixup_hours=(6.0, 12.0), fahrenheit_hours=(6.0, 12.0))
    return simulate_portfolio(3, SIM_START, SIM_END, seed=7, faults=faults)


def _settings(home: Path, runner: str) -> Settings:
    return Settings(home=home, compute=ComputeSettings(runner=runner, chunk_buildings=2),
                    lakehouse=LakehouseSettings(spark_shuffle_partitions=2))


def _pipeline(portfolio, settings: Settings) -> dict[str, float]:
    from lakehouse.engine import get_engine
    from lakehouse.simulator import land_portfolio
    from wattflow import pipeline

    timings = {}
    t0 = time.perf_counter()
    land_portfolio(portfolio, get_engine(settings), now=LANDED_AT)
    timings["ingest"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    pipeline.curate(START, END, settings=settings)
    timings["curate"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    pipeline.build_features(START, END, settings=settings)
    timings["features"] = time.perf_counter() - t0
    return timings


def test_local_and_cluster_runners_write_identical_tables_and_a_cluster_rerun_writes_nothing(
        portfolio, spark_session, tmp_path: Path) -> None:
    from lakehouse.engine import get_engine
    from lakehouse.spark_engine import SparkEngine

    local, cluster = _settings(tmp_path / "local", "local"), _settings(tmp_path / "cluster", "spark")
    local_s = _pipeline(portfolio, local)
    cluster_s = _pipeline(portfolio, cluster)
    local_engine, cluster_engine = get_engine(local), get_engine(cluster)
    assert isinstance(cluster_engine, SparkEngine) and cluster_engine.spark.sparkContext.master.startswith("spark://")

    readings = portfolio.readings.num_rows
    for contract in COMPARED:
        ours, theirs = content(local_engine, contract), content(cluster_engine, contract)
        assert len(ours) == len(theirs), contract.qualified_name
        pd.testing.assert_frame_equal(ours, theirs, check_dtype=True, obj=contract.qualified_name)
        assert content_hash(ours) == content_hash(theirs)
    silver = content(local_engine, BUILDING_HOURLY)
    assert len(silver) == 3 * (END - START).days * 24
    quarantined = content(local_engine, QUARANTINE_READINGS)
    assert len(quarantined) > 0 and quarantined["check_name"].nunique() >= 2  # the faults were caught
    quality = content(local_engine, QUALITY_RESULTS)
    # One merged result per expectation and batch, not one per chunk.
    assert not quality.duplicated(["suite", "batch", "expectation"]).any()
    assert set(quality["suite"]) >= {"bronze_sensor_readings", "silver_building_hourly", "gold_features"}

    versions = {c.qualified_name: cluster_engine.version(c) for c in COMPARED}
    from wattflow import pipeline

    again = pipeline.curate(START, END, settings=cluster)
    assert again["silver_changed"] is False
    assert pipeline.build_features(START, END, settings=cluster)["gold_changed"] is False
    assert {c.qualified_name: cluster_engine.version(c) for c in COMPARED} == versions
    print(f"\nreadings={readings} local={local_s} cluster={cluster_s}")
