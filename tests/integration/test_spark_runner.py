"""One core, two runners: a small simulated portfolio with faults goes through ingest -> curate -> features
(-> batch scoring -> monitoring) on the local runner (delta-rs, chunks in this process) and on a real Spark
standalone cluster (two workers; tests/integration/conftest.py), and every table comes out identical.

Chunks of two buildings over three buildings: both runners cut the portfolio into the same two chunks, so
the expectation results of both chunks are merged into one result per expectation on each side too.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

from lakehouse.schemas import (
    ANOMALIES,
    BUILDING_HOURLY,
    DRIFT_REPORTS,
    FEATURES,
    FORECASTS,
    MONITORING_DECISIONS,
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
ORIGINS = (datetime(2024, 3, 14, tzinfo=timezone.utc), datetime(2024, 3, 15, tzinfo=timezone.utc))
ANOMALIES_SINCE = datetime(2024, 3, 13, tzinfo=timezone.utc)
COMPARED = (BUILDING_HOURLY, QUARANTINE_READINGS, QUARANTINE_WEATHER, FEATURES, QUALITY_RESULTS, FORECASTS, ANOMALIES,
            DRIFT_REPORTS, MONITORING_DECISIONS)
# Where a pass's report files went and when it ran: per home and per run, not content.
BOOKKEEPING = ("run_id", "validated_at", "detected_at", "created_at", "decided_at", "html_uri", "json_uri", "report_uri",
               "mlflow_run_id")


def content(engine, contract: TableContract) -> pd.DataFrame:
    """The table's rows in key order, without bookkeeping that differs per run (run ids, validation times)."""
    df = engine.read(contract).to_pandas()
    drop = [c for c in BOOKKEEPING if c in df.columns]
    return df.drop(columns=drop).sort_values(list(contract.keys)).reset_index(drop=True)


def content_hash(df: pd.DataFrame) -> str:
    return hashlib.sha256(pd.util.hash_pandas_object(df, index=False).to_numpy().tobytes()).hexdigest()[:16]


@pytest.fixture(scope="module")
def portfolio():
    from lakehouse.simulator import FaultConfig, simulate_portfolio

    # Short unit mix-ups: a 12-day batch must stay under the systematic share that stops a batch.
    faults = FaultConfig(unit_mixup_hours=(6.0, 12.0), fahrenheit_hours=(6.0, 12.0))
    return simulate_portfolio(3, SIM_START, SIM_END, seed=7, faults=faults)


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory) -> Path:
    """A small SavedModel with the serving contract (untrained, fixed seed): scoring parity needs the same
    model on both sides, not a good one."""
    from ml.spec import WindowSpec
    from serving.contract_model import export_contract_model

    settings = Settings()
    spec = WindowSpec(lookback_h=settings.model.lookback_h, horizon_h=settings.model.horizon_h,
                      quantiles=tuple(settings.model.quantiles))
    return export_contract_model(tmp_path_factory.mktemp("model") / "1", spec, units=8, seed=5)


def _settings(home: Path, runner: str) -> Settings:
    # A 10-day history: the anomaly baseline looks back one week instead of four; two days of served
    # forecasts: residual drift judges the second day against the first, accuracy both.
    return Settings(home=home, compute=ComputeSettings(runner=runner, chunk_buildings=2),
                    lakehouse=LakehouseSettings(spark_shuffle_partitions=2),
                    monitor={"anomalies": {"baseline_weeks": 1}, "drift_window_days": 1, "drift_reference_days": 1,
                             "accuracy_window_days": 2, "min_reference_hours": 12, "min_accuracy_hours": 12})


def _install_model(settings: Settings, saved_model: Path) -> None:
    """The champion as `deploy_export` leaves it: <model_base_path>/<model>/<version>/."""
    import shutil

    shutil.copytree(saved_model, settings.model_base_path / settings.model.model_name / "1")


def _anomalies(settings: Settings):
    """The per-building part of a monitoring pass: anomalies priced and written to monitoring.anomalies."""
    from lakehouse.engine import get_engine
    from monitoring.anomaly_store import find_anomalies

    return find_anomalies(get_engine(settings), settings, since=ANOMALIES_SINCE, until=END)


def _monitor(settings: Settings):
    """The drift and accuracy part of a monitoring pass (chunk by chunk on the runner), its reports and decision
    recorded in monitoring.drift_reports and monitoring.decisions (no MLflow run: a tracking store is not
    what this test compares)."""
    from lakehouse.engine import get_engine
    from monitoring.monitor import run_monitoring

    return run_monitoring(get_engine(settings), settings, END, with_anomalies=False, log_mlflow=False)


def _pipeline(settings: Settings, saved_model: Path) -> dict[str, float]:
    from wattflow import pipeline

    timings = {}
    _install_model(settings, saved_model)
    for step, run in (("curate", lambda: pipeline.curate(START, END, settings=settings)),
                      ("features", lambda: pipeline.build_features(START, END, settings=settings)),
                      ("score", lambda: pipeline.score(ORIGINS, version=1, settings=settings)),
                      ("anomalies", lambda: _anomalies(settings)),
                      ("monitor", lambda: _monitor(settings))):
        t0 = time.perf_counter()
        run()
        timings[step] = round(time.perf_counter() - t0, 1)
    return timings


def test_local_and_cluster_runners_write_identical_tables_and_a_cluster_rerun_writes_nothing(
        portfolio, saved_model: Path, spark_cluster, spark_session, tmp_path: Path) -> None:
    from lakehouse.delta_rs import DeltaRsEngine
    from lakehouse.engine import get_engine
    from lakehouse.simulator import land_portfolio
    from lakehouse.spark_engine import SparkEngine

    local, cluster = _settings(tmp_path / "local", "local"), _settings(tmp_path / "cluster", "spark")
    # Ingest is landing (bronze), which the MQTT/file/simulator sources do batch by batch with delta-rs on
    # either deployment; the runners start after it. Both homes get the same bronze tables.
    t0 = time.perf_counter()
    land_portfolio(portfolio, DeltaRsEngine.from_settings(local), now=LANDED_AT)
    ingest_s = time.perf_counter() - t0
    shutil.copytree(Path(local.lakehouse_uri), Path(cluster.lakehouse_uri))
    local_s = _pipeline(local, saved_model)
    cluster_s = _pipeline(cluster, saved_model)
    # Tables are Delta either way: both are read back through delta-rs (no driver-side Spark collect).
    local_engine, cluster_engine = DeltaRsEngine.from_settings(local), DeltaRsEngine.from_settings(cluster)
    assert isinstance(get_engine(cluster), SparkEngine)
    assert get_engine(cluster).spark.sparkContext.master == spark_cluster.master_url
    assert spark_cluster.state()["aliveworkers"] == 2

    readings = portfolio.readings.num_rows
    for contract in COMPARED:
        ours, theirs = content(local_engine, contract), content(cluster_engine, contract)
        assert len(ours) == len(theirs), contract.qualified_name
        assert len(ours) or contract is QUARANTINE_WEATHER, contract.qualified_name  # the simulated weather is clean
        print(contract.qualified_name, len(ours), content_hash(ours))
        if contract is FORECASTS:  # model outputs: the same numbers within float tolerance
            pd.testing.assert_frame_equal(ours, theirs, check_exact=False, rtol=1e-6, atol=1e-9, obj=contract.qualified_name)
        else:
            pd.testing.assert_frame_equal(ours, theirs, check_exact=True, obj=contract.qualified_name)
            assert content_hash(ours) == content_hash(theirs)
    silver = content(local_engine, BUILDING_HOURLY)
    assert len(silver) == 3 * (END - START).days * 24
    quarantined = content(local_engine, QUARANTINE_READINGS)
    assert len(quarantined) > 0 and quarantined["check_name"].nunique() >= 2  # the faults were caught
    quality = content(local_engine, QUALITY_RESULTS)
    # One merged result per expectation and batch, not one per chunk.
    assert not quality.duplicated(["suite", "batch", "expectation"]).any()
    assert set(quality["suite"]) >= {"bronze_sensor_readings", "silver_building_hourly", "gold_features"}
    forecasts = content(local_engine, FORECASTS)
    assert len(forecasts) == 3 * len(ORIGINS) * 24 and not forecasts["is_fallback"].any()
    assert (forecasts["model_version"] == "1").all() and forecasts["yhat"].notna().all()
    reports = content(local_engine, DRIFT_REPORTS).set_index("report_kind")
    assert list(reports.index) == ["accuracy", "input_drift", "residual_drift"]
    accuracy = json.loads(reports.loc["accuracy", "summary"])
    assert accuracy["portfolio"]["n_hours"] > 100 and set(accuracy["buildings"]) == set(forecasts["building_id"])
    residual = json.loads(reports.loc["residual_drift", "summary"])
    # judged per building (a building whose faults left under 12 h of reference residuals is listed as skipped)
    assert len(residual["scores"]) >= 2 and len(residual["scores"]) + len(residual["skipped_buildings"]) == 3
    check = json.loads(content(local_engine, MONITORING_DECISIONS)["figures"].iloc[0])["check"]
    assert check["model_version"] == "1" and check["accuracy"]["n_hours"] == accuracy["portfolio"]["n_hours"]

    versions = {c.qualified_name: cluster_engine.version(c) for c in COMPARED}
    from wattflow import pipeline

    rerun_t0 = time.perf_counter()
    assert pipeline.curate(START, END, settings=cluster)["silver_changed"] is False
    assert pipeline.build_features(START, END, settings=cluster)["gold_changed"] is False
    assert pipeline.score(ORIGINS, version=1, settings=cluster)["changed"] is False
    assert _anomalies(cluster).rows_written == 0
    _monitor(cluster)
    rerun_s = round(time.perf_counter() - rerun_t0, 1)
    assert {c.qualified_name: cluster_engine.version(c) for c in COMPARED} == versions
    print(f"\nreadings={readings} ingest={ingest_s:.1f}s local={local_s} cluster={cluster_s} cluster_rerun={rerun_s}s")
