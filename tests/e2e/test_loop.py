"""End to end through Airflow: `make demo`'s loop on a tiny portfolio, then a backfill that changes nothing.

The demo runs as a subprocess exactly as `make demo` runs it (python -m wattflow.demo), with a smaller
portfolio (the session's demo home, tests/e2e/conftest.py, shared with the lineage and `make up` suites),
and the test then reads what it left behind: the Delta tables, the MLflow registry, the served versions
and the recorded monitoring decisions.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# Meant for one xdist worker with the other suites on the demo home (tests/conftest.py says why not yet).
pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.xdist_group("demo")]


def test_demo_runs_the_loop_and_retrains_on_drift(demo_home) -> None:
    home, env, stdout = demo_home
    report = json.loads((home / "demo-report.json").read_text())
    champions = report["champions"]
    assert champions[0]["trigger"] == "initial training" and champions[0]["promoted"] is True
    retrains = [c for c in champions if c["trigger"].startswith("retrain requested")]
    # Exactly one drift-triggered retrain: the cooldown keeps it from flapping.
    decisions = [d["decision"] for d in report["decisions"]]
    assert decisions.count("retrain") == 1, decisions
    assert len(retrains) == 1 and retrains[0]["promoted"] is True
    # The retrofitted building is what monitoring saw, and the retrain learnt from data after the retrofit
    # (2023-12-04 + 8 weeks) before being judged on the newest days.
    retrain_decision = next(d for d in report["decisions"] if d["decision"] == "retrain")
    assert any("b01" in reason for reason in retrain_decision["reasons"]), retrain_decision["reasons"]
    assert retrains[0]["train_end"] > "2024-01-29", retrains[0]["train_end"]
    outcome = retrains[0]["retrain_outcome"]
    assert outcome["improved"] is True and outcome["new_mae"] < outcome["old_mae"]
    # The served version moved from the first champion to the retrained one.
    served = {str(v) for v in report["served_versions"]}
    assert {str(champions[0]["version"]), str(retrains[0]["version"])} <= served
    assert "Where to look" in stdout and "demo wall time" in stdout
    # Airflow's own task logs go to a file, the console gets one line per DAG run.
    assert "::group::" not in stdout and "::group::" in (home / "logs" / "dag-runs.log").read_text()


def test_tables_registry_and_decisions_after_the_demo(demo_home, monkeypatch: pytest.MonkeyPatch) -> None:
    home, _, _ = demo_home
    monkeypatch.setenv("WATTFLOW_HOME", str(home))
    from wattflow.settings import get_settings, reset_settings

    reset_settings()
    settings = get_settings()
    from lakehouse.engine import get_engine
    from lakehouse.schemas import FEATURES, FORECASTS, MONITORING_DECISIONS, SENSOR_READINGS
    from ml import registry, tracking

    engine = get_engine(settings)
    readings = engine.read(SENSOR_READINGS, columns=["building_id"])
    # 2 buildings x 6 sensors x 4 readings/h x 24 h x (8 weeks + 8 days) when nothing is lost.
    assert readings.num_rows == 2 * 6 * 4 * 24 * (8 * 7 + 8)
    features = engine.read(FEATURES, columns=["building_id", "ts"]).to_pandas()
    assert features.groupby("building_id").size().min() >= 24 * (8 * 7 + 8) - 2
    decisions = engine.read(MONITORING_DECISIONS).to_pandas()
    assert list(decisions["decision"]).count("retrain") == 1
    retrain = decisions[decisions["decision"] == "retrain"].iloc[0]
    assert json.loads(retrain["reasons"]), "a retrain decision records its reasons"
    tracking.configure(settings)
    champion = registry.alias_version(settings.model.model_name, registry.CHAMPION)
    moves = registry.history(settings.model.model_name)
    assert len([m for m in moves if m.alias == registry.CHAMPION]) >= 2
    forecasts = engine.read(FORECASTS).to_pandas()
    last_origin = forecasts["issued_at"].max()
    assert set(forecasts[forecasts["issued_at"] == last_origin]["model_version"]) == {str(champion)}
    assert not forecasts["is_fallback"].any()
    lineage = registry.lineage(settings.model.model_name, champion)
    assert lineage["delta_version"] is not None and lineage["table"].endswith("gold/features")


def test_backfill_of_ingested_week_changes_nothing(demo_home) -> None:
    home, env, _ = demo_home
    out = subprocess.run([sys.executable, "-m", "wattflow.loop", "backfill", "2023-12-11", "2023-12-18"], cwd=REPO,
                         env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-5000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["before"] == result["after"]
    assert result["before"]["bronze.sensor_readings"]["rows"] > 0
