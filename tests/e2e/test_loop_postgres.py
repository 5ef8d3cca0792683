"""End to end through Airflow with its metadata DB on PostgreSQL, as the compose and Helm deployments run it.

`python -m wattflow.demo` runs as a subprocess (as in test_loop.py, on a smaller world) with
WATTFLOW_AIRFLOW__DATABASE_URL pointing at a fresh database on a private PostgreSQL server (tests/servers.py);
the test then reads Airflow's own tables in that database: every DAG of the loop ran there, and succeeded.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.servers import PostgresServer, free_port
from wattflow.assets import BRONZE_READINGS_URI, CHAMPION_URI, GOLD_FEATURES_URI

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

LOOP_DAGS = ("ingest_sensors", "ingest_weather", "curate_and_validate", "train_model", "deploy_model", "forecast", "monitor")
WEEKS, DRIFT_DAYS = 3, 2
# The demo writes 14 into the home's settings.env; the environment must win over that file.
BACKTEST_DAYS = 7


def _database(url: str) -> str:
    return url.rsplit("/", 1)[1]


@pytest.fixture(scope="module")
def postgres_loop(
    postgres: PostgresServer, postgres_database_url: Callable[[str], str], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, str]:
    url = postgres_database_url("airflow")
    home = tmp_path_factory.mktemp("loop-postgres") / "home"
    env = {
        **os.environ,
        "WATTFLOW_HOME": str(home),
        "WATTFLOW_AIRFLOW__DATABASE_URL": url,
        "WATTFLOW_DEMO_BUILDINGS": "1",
        "WATTFLOW_DEMO_WEEKS": str(WEEKS),
        "WATTFLOW_DEMO_DRIFT_DAYS": str(DRIFT_DAYS),
        "WATTFLOW_AIRFLOW__TUNE_TRIALS": "0",
        "WATTFLOW_SERVING__GRPC_PORT": str(free_port()),
        "WATTFLOW_SERVING__REST_PORT": str(free_port()),
        # A small model on a short history: this test is about where Airflow keeps its state, not accuracy.
        "WATTFLOW_MODEL__EPOCHS": "3",
        "WATTFLOW_MODEL__BACKTEST_DAYS": str(BACKTEST_DAYS),
        "WATTFLOW_MODEL__LOOKBACK_H": "48",
        # Three epochs do not meet ASHRAE Guideline 14; the gate still runs, with limits any model meets.
        "WATTFLOW_MODEL__MAX_CV_RMSE": "10",
        "WATTFLOW_MODEL__MAX_ABS_NMBE": "10",
    }
    out = subprocess.run([sys.executable, "-m", "wattflow.demo"], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=900)
    (home.parent / "demo-stdout.txt").write_text(out.stdout + "\n" + out.stderr[-20000:])
    assert out.returncode == 0, f"demo on PostgreSQL failed:\n{out.stdout[-5000:]}\n{out.stderr[-5000:]}"
    return home, url


def test_every_dag_of_the_loop_ran_in_postgresql(postgres: PostgresServer, postgres_loop) -> None:
    home, url = postgres_loop
    conn = postgres.connect(_database(url))
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT dag_id, state, count(*) FROM dag_run GROUP BY dag_id, state")
            runs = {(dag_id, state): n for dag_id, state, n in cur.fetchall()}
            cur.execute("SELECT DISTINCT dag_id FROM serialized_dag")
            serialized = {row[0] for row in cur.fetchall()}
            cur.execute("SELECT a.uri, count(*) FROM asset_event e JOIN asset a ON a.id = e.asset_id GROUP BY a.uri")
            events = dict(cur.fetchall())
            cur.execute("SELECT count(*) FROM task_instance WHERE state NOT IN ('success', 'skipped')")
            unfinished_tasks = cur.fetchone()[0]
            cur.execute("SELECT slots FROM slot_pool WHERE pool = 'training'")
            training_slots = cur.fetchone()
            cur.execute("SELECT e.extra FROM asset_event e JOIN asset a ON a.id = e.asset_id WHERE a.uri = %s "
                        "ORDER BY e.timestamp", (CHAMPION_URI,))
            champion_extras = [row[0] for row in cur.fetchall()]
    finally:
        conn.close()
    assert {state for _, state in runs} == {"success"}, runs
    per_dag = {dag_id: n for (dag_id, _), n in runs.items()}
    # One initial landing plus one per monitored day; forecasts and monitoring once a day.
    assert per_dag["ingest_sensors"] == per_dag["ingest_weather"] == per_dag["curate_and_validate"] == 1 + DRIFT_DAYS
    assert per_dag["forecast"] == per_dag["monitor"] == DRIFT_DAYS
    assert per_dag["train_model"] >= 1 and per_dag["deploy_model"] >= 1
    assert set(LOOP_DAGS) <= set(per_dag), per_dag
    assert set(LOOP_DAGS) <= serialized
    assert unfinished_tasks == 0
    assert training_slots == (1,)
    assert events.get(BRONZE_READINGS_URI, 0) >= 1 + DRIFT_DAYS, events
    assert events.get(GOLD_FEATURES_URI, 0) >= 1 + DRIFT_DAYS, events
    # The promotion the demo reported is the one Airflow recorded in PostgreSQL.
    report = json.loads((home / "demo-report.json").read_text())
    promoted = [str(c["version"]) for c in report["champions"] if c["promoted"]]
    assert [str(json.loads(e)["version"] if isinstance(e, str) else e["version"]) for e in champion_extras] == promoted


def test_champion_promoted_and_served_without_sqlite_metadata(postgres_loop) -> None:
    home, _ = postgres_loop
    report = json.loads((home / "demo-report.json").read_text())
    first = report["champions"][0]
    assert first["trigger"] == "initial training" and first["promoted"] is True, first
    assert str(first["version"]) in {str(v) for v in report["served_versions"]}
    assert len(report["decisions"]) == DRIFT_DAYS
    # The environment won over the home's settings.env, which the demo writes with its own backtest span.
    written = dict(line.split("=", 1) for line in (home / "settings.env").read_text().splitlines() if "=" in line)
    assert written.get("WATTFLOW_MODEL__BACKTEST_DAYS", "").strip("'") not in ("", str(BACKTEST_DAYS)), written
    assert first["metrics"]["n_hours"] == BACKTEST_DAYS * 24, first["metrics"]
    # Airflow kept nothing in SQLite: its home holds logs only.
    airflow_home = home / "airflow"
    assert airflow_home.is_dir()
    assert not [p for p in airflow_home.rglob("*") if p.suffix in (".db", ".sqlite", ".sqlite3")]
