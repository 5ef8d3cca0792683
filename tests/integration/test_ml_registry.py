"""Training shell against a real Delta table and a real MLflow (SQLite) store: tracking, registry,
promotion gate, alias history, rollback, lineage, tuning with nested runs, and the CLI."""

from __future__ import annotations

import json

import pandas as pd
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from lakehouse.engine import get_engine
from lakehouse.schemas import FEATURES
from ml import registry
from ml.model import ModelParams
from ml.pipeline import train_and_register
from ml.registry import PromotionDecision
from ml.spec import WindowSpec
from ml.synthetic import synthetic_gold_features

pytestmark = pytest.mark.integration

SPEC = WindowSpec(lookback_h=48, horizon_h=24)
GOOD = ModelParams(units=16, dropout=0.0, learning_rate=5e-3, batch_size=32, epochs=3, patience=2)
# A learning rate this small leaves the network where it started: a forecast no better than a constant.
WORSE = ModelParams(units=16, dropout=0.0, learning_rate=1e-9, batch_size=32, epochs=1, patience=1)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):
    from wattflow.settings import get_settings, reset_settings

    mp = pytest.MonkeyPatch()
    home = tmp_path_factory.mktemp("wattflow-home")
    mp.setenv("WATTFLOW_HOME", str(home))
    mp.setenv("WATTFLOW_MODEL__BACKTEST_DAYS", "7")
    mp.setenv("WATTFLOW_MODEL__LOOKBACK_H", "48")
    mp.setenv("WATTFLOW_MODEL__UNITS", "16")
    mp.setenv("WATTFLOW_MODEL__EPOCHS", "2")
    mp.setenv("WATTFLOW_MODEL__TUNING_MAX_EPOCHS", "2")
    mp.setenv("WATTFLOW_MODEL__TUNING_LOOKBACKS", "[24, 48]")
    mp.setenv("WATTFLOW_MODEL__TRAIN_ORIGIN_STRIDE_H", "12")
    # The gate's ASHRAE limits are not what this module tests: a 4-epoch model must be allowed to lead.
    mp.setenv("WATTFLOW_MODEL__MAX_CV_RMSE", "0.6")
    mp.setenv("WATTFLOW_MODEL__MAX_ABS_NMBE", "0.3")
    reset_settings()
    settings = get_settings()
    engine = get_engine(settings)
    # b02: the simulator's London shop (UTC in winter, so its local midnights are UTC midnights)
    frame = synthetic_gold_features(building_ids=("b02",), days=42)
    written = engine.upsert(FEATURES, pa.Table.from_pandas(frame, preserve_index=False))
    first = train_and_register(engine, settings, params=GOOD, spec=SPEC, validation_result={"success": True, "suite": "gold"})
    second = train_and_register(engine, settings, params=WORSE, spec=SPEC)
    yield {"settings": settings, "engine": engine, "written": written, "first": first, "second": second, "frame": frame}
    mp.undo()
    reset_settings()


def test_first_model_becomes_champion_and_a_worse_challenger_is_not_promoted(world) -> None:
    first, second = world["first"], world["second"]
    name = world["settings"].model.model_name
    assert first.decision.promoted, first.decision.reason
    assert (first.version, second.version) == ("1", "2")
    assert not second.decision.promoted
    assert "does not beat champion v1" in second.decision.reason or "exceeds" in second.decision.reason
    assert second.decision.metrics["challenger"]["cv_rmse"] > second.decision.metrics["champion"]["cv_rmse"]
    # Compared on the same hours.
    assert second.decision.metrics["challenger"]["n_hours"] == second.decision.metrics["champion"]["n_hours"]
    assert registry.alias_version(name, "champion") == "1"
    assert registry.alias_version(name, "challenger") == "2"


def test_run_has_params_metrics_plots_model_and_dataset(world) -> None:
    import mlflow

    client = mlflow.MlflowClient()
    run = client.get_run(world["first"].run_id)
    assert run.data.params["units"] == "16" and run.data.params["lookback_h"] == "48"
    assert {"backtest_cv_rmse", "backtest_mae", "persistence_24h_mae", "seasonal_naive_168h_mae",
            "skill_mae_vs_persistence_24h", "best_val_loss"} <= set(run.data.metrics)
    assert len(client.get_metric_history(run.info.run_id, "loss")) == GOOD.epochs
    assert len(client.get_metric_history(run.info.run_id, "backtest_mae_by_step")) == 24
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert artifacts == {"plots/forecast_vs_actual_week.png", "plots/error_by_horizon.png", "plots/residuals.png"}
    saved = {a.path for a in client.list_artifacts(run.info.run_id, "saved_model")}
    assert "saved_model/saved_model.pb" in saved
    assert run.data.tags["mlflow.source.git.commit"]
    assert run.data.tags["wattflow.validation_success"] == "true"
    inputs = run.inputs.dataset_inputs
    assert len(inputs) == 1 and inputs[0].dataset.source_type == "delta_table"
    assert json.loads(inputs[0].dataset.source)["path"] == world["engine"].table_uri(FEATURES)
    # The registered Keras model loads and forecasts from raw inputs.
    from ml.windows import make_windows

    keras_model = registry.load_keras(world["settings"].model.model_name, "champion")
    # The features the version was trained with (six weeks: no day of the year), as recorded in the registry.
    spec = registry.window_spec_of(world["settings"].model.model_name, world["first"].version)
    assert "doy_sin" in spec.extra["dropped_features"] and len(spec.future_features) == len(SPEC.future_features) - 2
    windows = make_windows(world["frame"], spec).take(slice(0, 2))
    out = keras_model.predict({"history": windows.history, "future": windows.future}, verbose=0)
    assert set(out) == {"p10", "p50", "p90"} and out["p50"].shape == (2, 24)
    assert 10 < float(out["p50"].mean()) < 150  # kWh, not standardized units


def test_lineage_answers_table_and_delta_version(world) -> None:
    lineage = registry.lineage(world["settings"].model.model_name, "1")
    assert lineage["table"] == world["engine"].table_uri(FEATURES)
    assert lineage["delta_version"] == world["written"].version
    assert lineage["run_id"] == world["first"].run_id


def test_training_params_come_back_typed_from_the_registry(world) -> None:
    # A retrain that monitoring requests refits the champion's configuration: it must read back exactly.
    params = registry.training_params_of(world["settings"].model.model_name, "1")
    assert params == {**{k: v for k, v in GOOD.__dict__.items() if k != "extra"}, "lookback_h": 48}
    assert isinstance(params["units"], int) and isinstance(params["learning_rate"], float)
    assert ModelParams(**{k: v for k, v in params.items() if k != "lookback_h"}) == GOOD


def test_rollback_restores_previous_champion_and_history_records_it(world) -> None:
    name = world["settings"].model.model_name
    forced = PromotionDecision(True, "test: operator promoted v2 by hand", "2", "1", {"note": "forced"})
    registry.promote(name, forced)
    assert registry.alias_version(name, "champion") == "2"
    event = registry.rollback(name, "v2 misbehaves in production")
    assert (event.previous_version, event.version) == ("2", "1")
    assert registry.alias_version(name, "champion") == "1"
    with pytest.raises(registry.NoPreviousChampion):
        registry.rollback(name)
    champions = [(e.action, e.version) for e in registry.history(name) if e.alias == "champion"]
    assert champions == [("promote", "1"), ("promote", "2"), ("rollback", "1")]

    from wattflow.cli import app

    out = CliRunner().invoke(app, ["models", "history", "--json"])
    assert out.exit_code == 0, out.output
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    assert [r["version"] for r in rows] == ["1", "2", "1"]
    assert rows[-1]["reason"].startswith("v2 misbehaves")


def test_tuning_nests_trials_under_a_parent_run_and_resumes(world) -> None:
    import mlflow

    from ml.tuning import tune

    settings, frame = world["settings"], world["frame"]
    first = tune(frame, settings, n_trials=1, spec=SPEC, base_params=GOOD, study_name="t")
    second = tune(frame, settings, n_trials=1, spec=SPEC, base_params=GOOD, study_name="t")
    assert second.n_trials == 2 and second.parent_run_id == first.parent_run_id
    children = mlflow.search_runs(filter_string=f"tags.mlflow.parentRunId = '{first.parent_run_id}'", output_format="list")
    assert len(children) == 2
    assert {c.data.params["lookback_h"] for c in children} <= {"24", "48"}
    assert second.best["units"] in (16, 32, 64, 128)


def test_backtest_cli_prints_the_issue_object(world) -> None:
    from wattflow.cli import app

    out = CliRunner().invoke(app, ["backtest", "--building-id", "b02", "--train-end", "2024-02-01", "--json"])
    assert out.exit_code == 0, out.output
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["building_id"] == "b02"
    assert set(summary["baselines"]) == {"persistence_24h", "seasonal_naive_168h", "persistence_ensemble"}
    assert set(summary["model"]) == {"mae", "rmse", "cv_rmse", "nmbe", "mape"}
    assert summary["n_hours"] == 11 * 24  # origins at midnight Feb 1 .. Feb 11, the data ends Feb 11 23:00
    # a 4-epoch model: its error is in the building's kWh, below its mean load (b02 uses ~60 kWh an hour)
    assert 0 < summary["model"]["mae"] < world["frame"]["energy_kwh"].mean()
