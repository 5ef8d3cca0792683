"""`wattflow lineage forecast` on the session's demo home (tests/e2e/conftest.py): from one served forecast
back to the model version, its MLflow run, the gold/silver/bronze versions, the validation results and the
source batches, each checked against the tables and the registry themselves."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[2]
# Meant for one xdist worker with the other suites on the demo home (tests/conftest.py says why not yet).
pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.xdist_group("demo")]


def _lineage(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "wattflow.cli", "lineage", "forecast", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


def _section(output: str, title_start: str) -> str:
    """The lines of one link of the printed chain (from its title to the next `←`)."""
    block = output.split("\n← " + title_start, 1)[1]
    return block.split("\n← ", 1)[0]


def test_lineage_walks_from_a_served_forecast_to_its_source_batches(demo_home, monkeypatch: pytest.MonkeyPatch) -> None:
    home, env, _ = demo_home
    monkeypatch.setenv("WATTFLOW_HOME", str(home))
    from lakehouse.engine import get_engine
    from lakehouse.schemas import FORECASTS, SENSOR_READINGS
    from ml import registry, tracking
    from wattflow.settings import get_settings, reset_settings

    reset_settings()
    settings = get_settings()
    engine = get_engine(settings)
    # The retrofitted building's newest served forecast, 12 hours ahead.
    forecasts = engine.read(FORECASTS, filters=[("building_id", "=", "b01")]).to_pandas()
    issued = forecasts["issued_at"].max()
    row = forecasts[(forecasts["issued_at"] == issued) & (forecasts["horizon_h"] == 12)].iloc[0]
    ts = pd.Timestamp(row["ts"]).tz_convert("UTC")

    out = _lineage(env, "--building-id", "b01", "--ts", ts.isoformat())
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout
    (home / "lineage-forecast.txt").write_text(text)

    # The forecast and the model version that produced it (the newest issue is served by the champion).
    assert f"issued_at: {pd.Timestamp(issued).tz_convert('UTC').isoformat()}" in text
    version = str(row["model_version"])
    tracking.configure(settings)
    assert version == str(registry.alias_version(settings.model.model_name, registry.CHAMPION))
    model = _section(text, f"model models:/{settings.model.model_name}/{version} ")
    trained = registry.lineage(settings.model.model_name, version)
    assert f"MLflow run: {trained['run_id']}" in model and "champion" in model
    assert f"trained on: gold.features version {trained['delta_version']}" in model
    assert re.search(r"metrics: backtest_cv_rmse \d", model), model

    # Forecast inputs: the gold version the forecast run read, back through silver to bronze.
    forecast_run = _section(text, "forecast run")
    gold_version = int(re.search(r"read: gold\.features version (\d+)", forecast_run).group(1))
    assert f"forecast inputs (the lookback before the origin): gold.features version {gold_version}" in text
    # The validation of the curation and feature runs behind it: every expectation counted, all passed here.
    validation = _section(text, "validation (monitoring.quality_results)")
    passed, total = map(int, re.search(r"expectations: (\d+) of (\d+) passed", validation).groups())
    assert total > 0 and passed == total, validation
    assert "silver_building_hourly" in validation and "gold_features" in validation

    # The source batches: exactly the batch ids of b01's readings in the week before the origin.
    bronze = _section(text, "bronze.sensor_readings version ")
    lookback_start = pd.Timestamp(issued).tz_convert("UTC") - pd.Timedelta(hours=settings.model.lookback_h)
    readings = engine.read(SENSOR_READINGS, filters=[("building_id", "=", "b01")], columns=["ts", "batch_id"]).to_pandas()
    in_lookback = readings[(readings["ts"] >= lookback_start) & (readings["ts"] < pd.Timestamp(issued))]
    printed = re.findall(r"- (sim-\S+) \(simulator, (\d+) readings; ingest run [0-9a-f-]{36} wrote version \d+\)", bronze)
    assert dict((b, int(n)) for b, n in printed) == in_lookback.groupby("batch_id").size().to_dict()

    # The training trail: the model's own gold version, back to the batch that landed its history.
    training = text.split("← training data: ", 1)[1]
    assert training.startswith(f"gold.features version {trained['delta_version']}")
    assert "sim-20231204T0000-" in training  # the initial 8 weeks, landed in one batch


def test_lineage_of_an_unknown_forecast_is_one_clear_line(demo_home) -> None:
    _, env, _ = demo_home
    out = _lineage(env, "--building-id", "no-such-building", "--ts", "2024-02-05T12:00:00Z")
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr.strip().splitlines() == [
        "lineage: no forecast in gold.forecasts for building_id='no-such-building' ts=2024-02-05T12:00:00+00:00"]
    bad = _lineage(env, "--building-id", "b01", "--ts", "yesterday-ish")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().splitlines()[-1].startswith("--ts 'yesterday-ish' is not a timestamp")


def test_lineage_events_are_openlineage_run_events_under_airflow_tasks(demo_home) -> None:
    home, _, _ = demo_home
    events = [json.loads(line) for line in (home / "lineage" / "events.jsonl").read_text().splitlines()]
    complete = [e for e in events if e["eventType"] == "COMPLETE"]
    jobs = {e["job"]["name"] for e in complete}
    assert {"ingest_sensors", "ingest_weather", "curate", "build_features", "train", "forecast"} <= jobs
    # Every run that started completed (the demo's steps all succeeded), each under its Airflow task.
    assert sorted(e["run"]["runId"] for e in events if e["eventType"] == "START") == sorted(e["run"]["runId"] for e in complete)
    assert all(e["run"]["facets"]["parent"]["job"]["name"].count(".") == 1 for e in complete)
    trains = [e for e in complete if e["job"]["name"] == "train"]
    assert [o["name"] for e in trains for o in e["outputs"]] == [
        f"models:/building_energy_lstm/{v}" for v in range(1, len(trains) + 1)]
