from __future__ import annotations

import os
from pathlib import Path

import pytest

from wattflow.settings import Settings, get_settings, reset_settings

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
