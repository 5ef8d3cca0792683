from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from wattflow.settings import Settings, get_settings, reset_settings

if TYPE_CHECKING:
    from tests.servers import PostgresServer

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def wattflow_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An isolated WATTFLOW_HOME: every table, store and report of the test lives under it."""
    home = tmp_path / "wattflow-home"
    home.mkdir()
    monkeypatch.setenv("WATTFLOW_HOME", str(home))
    reset_settings()
    yield home
    reset_settings()


@pytest.fixture
def settings(wattflow_home: Path) -> Settings:
    return get_settings()


@pytest.fixture
def artifacts_dir() -> Path:
    """Where tests leave files for people to look at (screenshots, reports)."""
    path = Path(os.environ.get("WATTFLOW_TEST_ARTIFACTS", REPO / "test-artifacts"))
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A private PostgreSQL 15 cluster (Debian's binaries, run as the `postgres` account under root)."""
    # Imported here: `tests` is a package only from the repository root (python -m pytest), and most
    # suites never start a server.
    from tests.servers import postgres_server

    with postgres_server() as server:
        yield server


@pytest.fixture(scope="session")
def postgres_database_url(postgres: PostgresServer) -> Callable[[str], str]:
    """Factory: ``postgres_database_url("airflow")`` creates an empty database and returns its
    ``postgresql+psycopg2://`` URL (e.g. for WATTFLOW_AIRFLOW__DATABASE_URL)."""
    return postgres.create_database
