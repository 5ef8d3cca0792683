"""MLflow tracking: where runs go, and everything a data scientist needs to compare and trace one.

A training run records its params, per-epoch metrics, backtest metrics (overall and per horizon step,
beside both baselines), plots, the Keras model with signature and input example, the exported
SavedModel (`saved_model/`, what TF Serving loads), the gold table URI + Delta version as a dataset
input, the validation result it passed, the git commit and the WindowSpec.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np
import pandas as pd

from ml.spec import INPUT_FUTURE, INPUT_HISTORY

if TYPE_CHECKING:  # pragma: no cover
    from ml.backtest import BacktestResult
    from ml.model import Forecaster
    from wattflow.settings import Settings

# Run tags that make lineage one lookup (MLflow's Delta source drops version 0 from its dict).
TAG_TABLE_URI = "wattflow.delta_table_uri"
TAG_TABLE_NAME = "wattflow.delta_table"
TAG_DELTA_VERSION = "wattflow.delta_version"
TAG_WINDOW_SPEC = "wattflow.window_spec"
TAG_VALIDATION = "wattflow.validation_success"
MODEL_ARTIFACT = "model"
SAVED_MODEL_ARTIFACT = "saved_model"


@dataclass(frozen=True)
class DatasetRef:
    """The exact table state a model was trained on."""

    table: str  # qualified name, e.g. gold.features
    uri: str
    version: int | None
    start: str | None = None
    end: str | None = None
    buildings: tuple[str, ...] = ()


def configure(settings: "Settings") -> str:
    """Point MLflow at the settings' tracking URI and make sure the experiment exists; returns its id."""
    import mlflow

    if settings.tracking_uri.startswith("sqlite:///"):
        Path(settings.tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_registry_uri(settings.tracking_uri)
    experiment_id = ensure_experiment(settings, settings.model.experiment)
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


def ensure_experiment(settings: "Settings", name: str) -> str:
    """The id of experiment `name`, created on first use (artifacts under the settings' root unless the
    tracking server is remote and keeps its own); the tracking URI must already be set (`configure`)."""
    import mlflow

    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    location = None if settings.tracking_uri.startswith("http") else settings.mlflow_artifact_root
    return client.create_experiment(name, artifact_location=location)


def git_commit(repo: Path | None = None) -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo or Path(__file__).resolve().parents[1],
            capture_output=True, text=True, timeout=10, check=True,
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def log_params(forecaster: "Forecaster", extra: dict[str, Any] | None = None) -> None:
    import mlflow

    params = {k: v for k, v in asdict(forecaster.params).items() if k != "extra"}
    params.update(
        lookback_h=forecaster.spec.lookback_h,
        horizon_h=forecaster.spec.horizon_h,
        quantiles=",".join(str(q) for q in forecaster.spec.quantiles) or "none",
        target_mean=round(forecaster.target_mean, 6),
        target_std=round(forecaster.target_std, 6),
    )
    params.update(extra or {})
    mlflow.log_params(params)


def log_epoch_metrics(history: dict[str, list[float]]) -> None:
    """Per-epoch losses as step metrics (one batch write, not a call per epoch)."""
    import time

    import mlflow
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    metrics = [Metric(key=k, value=float(v), timestamp=now, step=i) for k, values in history.items() for i, v in enumerate(values)]
    run = mlflow.active_run()
    if metrics and run is not None:
        mlflow.MlflowClient().log_batch(run.info.run_id, metrics=metrics)


def backtest_metrics(result: "BacktestResult", forecaster: str = "model") -> dict[str, float]:
    metrics: dict[str, float] = {"backtest_n_hours": float(result.n_hours)}
    for name, acc in result.accuracy.items():
        prefix = "backtest" if name == forecaster else name
        if name in result.forecasters and name != forecaster:
            continue
        for key, value in acc.as_dict().items():
            metrics[f"{prefix}_{key}"] = value
    for baseline, values in result.skill[forecaster].items():
        for key, value in values.items():
            metrics[f"skill_{key}_vs_{baseline}"] = value
    return {k: float(v) for k, v in metrics.items() if np.isfinite(v)}


def log_backtest(result: "BacktestResult", forecaster: str = "model") -> None:
    import mlflow

    mlflow.log_metrics(backtest_metrics(result, forecaster))
    for _, row in result.per_horizon.iterrows():
        step = int(row["step"])
        values = {"backtest_mae_by_step": row[f"{forecaster}_mae"], "backtest_rmse_by_step": row[f"{forecaster}_rmse"]}
        mlflow.log_metrics({k: float(v) for k, v in values.items() if np.isfinite(v)}, step=step)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "backtest_hours.parquet"
        result.hours.to_parquet(path, index=False)
        mlflow.log_artifact(str(path), "backtest")
    mlflow.log_table(result.per_horizon, "backtest/per_horizon.json")


def figures(result: "BacktestResult", forecaster: str = "model") -> dict[str, Any]:
    """Forecast vs actual for a sample week, error per horizon step, residuals (matplotlib Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ml.baselines import BASELINES

    hours = result.hours
    out: dict[str, Any] = {}
    building = hours["building_id"].iloc[0]
    one = hours[hours["building_id"] == building].sort_values("ts")
    week = one[one["ts"] < one["ts"].iloc[0] + pd.Timedelta(days=7)]
    fig, ax = plt.subplots(figsize=(12, 4))
    ax.plot(week["ts"], week["actual"], label="actual", color="black", linewidth=1.2)
    ax.plot(week["ts"], week[forecaster], label=f"{forecaster} p50", color="tab:blue")
    if f"{forecaster}_p10" in week and f"{forecaster}_p90" in week:
        ax.fill_between(week["ts"], week[f"{forecaster}_p10"], week[f"{forecaster}_p90"], alpha=0.25, color="tab:blue", label="p10–p90")
    ax.plot(week["ts"], week["persistence_24h"], label="persistence 24 h", color="tab:gray", linestyle="--", linewidth=0.8)
    ax.set_title(f"Day-ahead forecast vs actual, building {building}, first backtest week")
    ax.set_ylabel("energy (kWh)")
    ax.legend(loc="upper right")
    fig.autofmt_xdate()
    out["forecast_vs_actual_week.png"] = fig

    fig, ax = plt.subplots(figsize=(8, 4))
    steps = result.per_horizon["step"]
    for name in [forecaster, *BASELINES]:
        ax.plot(steps, result.per_horizon[f"{name}_mae"], marker="o", markersize=3, label=name)
    ax.set_xlabel("horizon step (h after origin)")
    ax.set_ylabel("MAE (kWh)")
    ax.set_title("Error per horizon step")
    ax.legend()
    out["error_by_horizon.png"] = fig

    scored = hours[hours["scored"]]
    residual = scored["actual"] - scored[forecaster]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.hist(residual, bins=50, color="tab:blue")
    left.set_title("Residuals (actual − forecast)")
    left.set_xlabel("kWh")
    right.scatter(scored[forecaster], residual, s=3, alpha=0.4)
    right.axhline(0, color="black", linewidth=0.8)
    right.set_xlabel("forecast (kWh)")
    right.set_ylabel("residual (kWh)")
    right.set_title("Residual vs forecast")
    out["residuals.png"] = fig
    return out


def log_figures(result: "BacktestResult", forecaster: str = "model") -> None:
    import matplotlib.pyplot as plt
    import mlflow

    for name, fig in figures(result, forecaster).items():
        mlflow.log_figure(fig, f"plots/{name}")
        plt.close(fig)


def log_dataset(ref: DatasetRef, frame: pd.DataFrame, context: str = "training") -> None:
    """The gold table and its Delta version as the run's dataset input (and as tags for lineage)."""
    import mlflow
    from mlflow.data.delta_dataset_source import DeltaDatasetSource

    source = DeltaDatasetSource(path=ref.uri, delta_table_version=ref.version)
    sample_columns = [c for c in ("building_id", "ts", "energy_kwh", "energy_valid") if c in frame]
    dataset = mlflow.data.from_pandas(
        frame[sample_columns], source=source, targets="energy_kwh" if "energy_kwh" in frame else None,
        name=f"{ref.table}@v{ref.version}",
    )
    mlflow.log_input(dataset, context=context)
    mlflow.set_tags(
        {
            TAG_TABLE_NAME: ref.table,
            TAG_TABLE_URI: ref.uri,
            TAG_DELTA_VERSION: "" if ref.version is None else str(ref.version),
            "wattflow.train_start": ref.start or "",
            "wattflow.train_end": ref.end or "",
            "wattflow.buildings": ",".join(ref.buildings),
        }
    )


def log_model(forecaster: "Forecaster", example_windows: Any) -> str:
    """The Keras serving model (flavour `keras`, signature + input example) and its SavedModel export.

    Returns the logged model's URI (what `mlflow.register_model` takes).
    """
    import mlflow
    from mlflow.models import infer_signature

    from ml.model import export_saved_model

    example = example_windows.take(slice(0, 1))
    inputs = {INPUT_HISTORY: example.history, INPUT_FUTURE: example.future}
    outputs = forecaster.predict(example)
    signature = infer_signature(inputs, outputs)
    with _keras_example_dir_fix():
        info = mlflow.keras.log_model(
            forecaster.serving_model, name=MODEL_ARTIFACT, signature=signature, input_example=inputs,
            # Stated, not inferred: inference re-imports TensorFlow in a subprocess (a minute on a busy box).
            pip_requirements=_pip_requirements(),
        )
    with tempfile.TemporaryDirectory() as tmp:
        export_saved_model(forecaster, Path(tmp) / SAVED_MODEL_ARTIFACT)
        mlflow.log_artifacts(str(Path(tmp) / SAVED_MODEL_ARTIFACT), SAVED_MODEL_ARTIFACT)
    mlflow.set_tag(TAG_WINDOW_SPEC, forecaster.spec.to_json())
    mlflow.log_dict(json.loads(forecaster.spec.to_json()), "window_spec.json")
    return info.model_uri


def _pip_requirements() -> list[str]:
    from importlib.metadata import version

    return [f"{name}=={version(name)}" for name in ("mlflow", "tensorflow", "keras", "numpy", "pandas")]


@contextmanager
def _keras_example_dir_fix() -> Iterator[None]:
    """MLflow 3.17's `mlflow.keras.save_model` writes the input example before creating the model folder
    (FileNotFoundError on input_example.json); create the folder first, then let MLflow go on as usual."""
    import mlflow.keras.save as keras_save

    original = keras_save._save_example

    def save_example(mlflow_model: Any, input_example: Any, path: str, *args: Any, **kwargs: Any) -> Any:
        os.makedirs(path, exist_ok=True)
        return original(mlflow_model, input_example, path, *args, **kwargs)

    keras_save._save_example = save_example
    try:
        yield
    finally:
        keras_save._save_example = original


def log_validation(validation_result: dict[str, Any] | None) -> None:
    import mlflow

    if validation_result is None:
        return
    mlflow.log_dict(validation_result, "validation/result.json")
    mlflow.set_tag(TAG_VALIDATION, str(bool(validation_result.get("success", False))).lower())


def log_source() -> None:
    import mlflow

    commit = git_commit()
    if commit:
        mlflow.set_tag("mlflow.source.git.commit", commit)
