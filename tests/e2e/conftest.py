"""One demo home per test session: `python -m wattflow.demo` on a small world, shared by every suite that
reads what a demo leaves behind (the loop's own checks, `make up` in a browser, the lineage walk), so the
demo's few minutes are paid once."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.servers import free_port

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def demo_home(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str], str]:
    """(home, the environment the demo ran with, its stdout). The environment's ports are free ones, so the
    stack that `make up` starts on this home (and the links the demo's DAG runs stored) do not collide with
    anything else on the machine."""
    home = tmp_path_factory.mktemp("demo") / "home"
    env = {
        **os.environ,
        "WATTFLOW_HOME": str(home),
        "WATTFLOW_DEMO_BUILDINGS": "2",
        "WATTFLOW_DEMO_WEEKS": "8",
        "WATTFLOW_DEMO_DRIFT_DAYS": "8",
        # The demo's retrofit, deeper: a step no forecaster misses whatever the weather that week, so the
        # test is about the loop (decide → retrain → gate → deploy), not the detector's sensitivity.
        "WATTFLOW_SIMULATOR__WORLD_DRIFT": '["retrofit:b01:2024-01-29:0.8"]',
        "WATTFLOW_AIRFLOW__TUNE_TRIALS": "1",
        "WATTFLOW_SERVING__GRPC_PORT": str(free_port()),
        "WATTFLOW_SERVING__REST_PORT": str(free_port()),
        # Where `make up` will serve the UIs on this home: the MLflow links of the demo's task pages point there.
        "WATTFLOW_MLFLOW_UI_URL": f"http://127.0.0.1:{free_port()}",
        "WATTFLOW_AIRFLOW__API_PORT": str(free_port()),
        "WATTFLOW_DASHBOARD__PORT": str(free_port()),
        "WATTFLOW_DATA_DOCS_URL": f"http://127.0.0.1:{free_port()}",
    }
    out = subprocess.run([sys.executable, "-m", "wattflow.demo"], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=1800)
    (home / "demo-stdout.txt").write_text(out.stdout + "\n" + out.stderr[-20000:])
    assert out.returncode == 0, f"demo failed:\n{out.stdout[-5000:]}\n{out.stderr[-5000:]}"
    return home, env, out.stdout
