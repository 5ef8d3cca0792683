"""notebooks/compare_runs.ipynb, executed with nbclient against an MLflow store this test fills the way
`ml.pipeline` and `ml.tuning` log (training runs with backtest metrics and the backtest-hours artifact,
a tuning study with nested trials, registry versions whose champion moved and rolled back)."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ml.registry import PromotionDecision
from tests.conftest import REPO
from wattflow.settings import Settings

pytestmark = pytest.mark.integration

NOTEBOOK = REPO / "notebooks" / "compare_runs.ipynb"
# (run name, CV(RMSE), p50 error scale): the second-best run is v3, the best v2
RUNS = [("train-a", 0.21, 0.12), ("train-b", 0.12, 0.05), ("train-c", 0.15, 0.08)]


def backtest_hours(rng: np.random.Generator, error_scale: float) -> pd.DataFrame:
    ts = pd.date_range("2024-03-01", periods=14 * 24, freq="h", tz="UTC")
    rows = []
    for building in ("b01", "b02"):
        actual = 50 + 20 * np.sin(2 * np.pi * ts.hour / 24) + rng.normal(0, 2, len(ts))
        model = actual * (1 + rng.normal(0, error_scale, len(ts)))
        rows.append(pd.DataFrame({
            "building_id": building, "origin": ts.floor("D"), "ts": ts, "horizon_step": ts.hour, "actual": actual,
            "scored": True, "model": model, "model_p10": model * 0.9, "model_p90": model * 1.1,
            "persistence_24h": np.roll(actual, 24), "seasonal_naive_168h": np.roll(actual, 168),
        }))
    return pd.concat(rows, ignore_index=True)


def fill_store(settings: Settings) -> dict[str, str]:
    import mlflow

    from ml import registry, tracking

    tracking.configure(settings)
    client = mlflow.MlflowClient()
    rng = np.random.default_rng(3)
    name = settings.model.model_name
    client.create_registered_model(name)
    versions: dict[str, str] = {}
    for run_name, cv_rmse, scale in RUNS:
        with mlflow.start_run(run_name=run_name) as run:
            mlflow.log_params({"lookback_h": 168, "units": 64, "layers": 1, "dropout": 0.1, "learning_rate": 1e-3, "tuning_trials": 0})
            mlflow.log_metrics({"backtest_mae": 100 * scale, "backtest_rmse": 130 * scale, "backtest_cv_rmse": cv_rmse,
                                "backtest_nmbe": 0.01, "skill_mae_vs_persistence_24h": 0.4, "best_val_loss": scale})
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "backtest_hours.parquet"
                backtest_hours(rng, scale).to_parquet(path, index=False)
                mlflow.log_artifact(str(path), "backtest")
            version = client.create_model_version(name, source=f"{run.info.artifact_uri}/backtest", run_id=run.info.run_id).version
            mlflow.set_tags({"wattflow.model_version": str(version), "wattflow.promoted": "false"})
            versions[run_name] = str(version)
    with mlflow.start_run(run_name="tuning-study"):
        mlflow.set_tags({"wattflow.kind": "tuning", "optuna.study": "study"})
        for trial, (units, lr, lookback) in enumerate([(32, 1e-3, 48), (64, 3e-3, 96), (128, 1e-4, 168), (64, 1e-3, 168)]):
            with mlflow.start_run(run_name=f"trial-{trial}", nested=True):
                mlflow.log_params({"units": units, "learning_rate": lr, "lookback_h": lookback, "layers": 1, "dropout": 0.1, "trial": trial})
                mlflow.log_metrics({"best_val_loss": 0.1 + 0.02 * trial, "epochs_run": 5})
                mlflow.set_tag("optuna.state", "complete")

    def decide(version: str, champion: str | None) -> PromotionDecision:
        return PromotionDecision(True, f"v{version} beats v{champion}", version, champion, {})

    registry.promote(name, decide(versions["train-a"], None))
    registry.promote(name, decide(versions["train-b"], versions["train-a"]))
    registry.rollback(name, "serving regression")
    return versions


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Settings, dict[str, str]]]:
    """One filled store for the module: MLflow's import and schema creation are most of its cost."""
    home = tmp_path_factory.mktemp("notebook-home")
    settings = Settings(home=home)
    versions = fill_store(settings)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("WATTFLOW_HOME", str(home))
        yield settings, versions


def test_notebook_runs_against_a_store_and_compares_runs(store: tuple[Settings, dict[str, str]], artifacts_dir: Path) -> None:
    import nbformat
    from nbclient import NotebookClient

    _, versions = store
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    # the kernel inherits WATTFLOW_HOME from this process (set by the store fixture)
    NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(REPO)}}).execute()
    nbformat.write(notebook, artifacts_dir / "compare_runs.executed.ipynb")

    text = "\n".join(
        output.get("text", "") + str(output.get("data", {}).get("text/plain", "")) + str(output.get("data", {}).get("text/html", ""))
        for cell in notebook.cells if cell.cell_type == "code" for output in cell.get("outputs", [])
    )
    assert "8 runs: 3 training, 1 tuning studies, 4 trials" in text
    # metrics table ordered by CV(RMSE): train-b, then train-c
    assert text.index("train-b") < text.index("train-c") < text.index("train-a")
    mimes = {key for cell in notebook.cells for output in cell.get("outputs", []) for key in output.get("data", {})}
    assert "application/vnd.plotly.v1+json" in mimes  # the parallel-coordinates plot
    assert "image/png" in mimes  # forecast vs actual, champion history
    # the rollback put train-a's version back in charge
    assert f"current champion: {versions['train-a']} | reigned in order: ['{versions['train-a']}']" in text


def test_dashboard_reads_the_registry_champion(store: tuple[Settings, dict[str, str]], tmp_path: Path) -> None:
    from wattflow.dashboard.data import lookup_champion

    settings, versions = store
    assert lookup_champion(settings) == versions["train-a"]
    assert lookup_champion(Settings(home=tmp_path)) is None  # no store: no MLflow call, no error
