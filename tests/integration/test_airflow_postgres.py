"""Airflow's metadata DB on PostgreSQL, configured only through wattflow's settings."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.servers import PostgresServer
from wattflow.airflow_env import airflow_environment
from wattflow.settings import get_settings, reset_settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_airflow_migrates_its_metadata_db_on_postgresql(
    postgres: PostgresServer,
    postgres_database_url: Callable[[str], str],
    wattflow_home: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = postgres_database_url("airflow")
    monkeypatch.setenv("WATTFLOW_AIRFLOW__DATABASE_URL", url)
    reset_settings()
    env = {**os.environ, **airflow_environment(get_settings())}
    airflow = str(Path(sys.executable).parent / "airflow")
    migrated = subprocess.run([airflow, "db", "migrate"], env=env, capture_output=True, text=True, timeout=240)
    assert migrated.returncode == 0, migrated.stderr[-3000:]

    # The schema is in the fresh PostgreSQL database, and nothing was written to a SQLite file.
    conn = postgres.connect(url.rsplit("/", 1)[1])
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT version_num FROM alembic_version")
            assert len(cur.fetchall()) == 1
            cur.execute("SELECT count(*) FROM information_schema.tables WHERE table_name IN ('dag', 'dag_run', 'task_instance', 'asset')")
            assert cur.fetchone()[0] == 4
    finally:
        conn.close()
    assert not list(wattflow_home.rglob("*.db"))
