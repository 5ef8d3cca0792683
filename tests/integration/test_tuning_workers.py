"""Two tuning worker processes on one Optuna study in PostgreSQL (model.tuning_storage, as in production):
both contribute trials, each trial is run by exactly one of them, and the best is the best of all."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
STUDY = "shared-study"

WORKER = """
import json, sys, time
from ml.spec import WindowSpec
from ml.synthetic import synthetic_gold_features
from ml.tuning import tune
from wattflow.settings import get_settings
started = time.time()
frame = synthetic_gold_features(building_ids=("b01",), days=16)
result = tune(frame, get_settings(), n_trials=1, spec=WindowSpec(lookback_h=24, horizon_h=24),
              study_name=sys.argv[1], log_to_mlflow=False)
json.dump({"started": started, "ended": time.time(), "best_value": result.best_value, "best": result.best,
           "n_trials": result.n_trials, "storage": result.storage}, open(sys.argv[2], "w"))
"""


def _env(home: Path, storage: str) -> dict[str, str]:
    return {
        **os.environ, "PYTHONPATH": str(REPO), "WATTFLOW_HOME": str(home),
        "WATTFLOW_MODEL__TUNING_STORAGE": storage, "WATTFLOW_MODEL__TUNING_MAX_EPOCHS": "1",
        "WATTFLOW_MODEL__TUNING_LOOKBACKS": "[24, 48]", "WATTFLOW_MODEL__TRAIN_ORIGIN_STRIDE_H": "12",
        "WATTFLOW_MODEL__UNITS": "16", "TF_CPP_MIN_LOG_LEVEL": "3",
    }


def test_two_worker_processes_share_one_study(tmp_path: Path, postgres_database_url) -> None:
    import optuna

    from ml.model import ModelParams
    from ml.spec import WindowSpec
    from ml.tuning import open_study
    from wattflow.settings import Settings

    storage = postgres_database_url("optuna_workers")
    settings = Settings(home=tmp_path / "home", model={"tuning_storage": storage, "tuning_lookbacks": [24, 48]})
    # The operator's first step: the study and its baseline trial exist before the workers start.
    open_study(settings, STUDY, WindowSpec(lookback_h=24, horizon_h=24), ModelParams.from_settings(settings.model, units=16))
    workers = [
        subprocess.Popen([sys.executable, "-c", WORKER, STUDY, str(tmp_path / f"w{i}.json")],
                         env=_env(tmp_path / f"home{i}", storage), cwd=REPO, stderr=subprocess.PIPE, text=True)
        for i in range(2)
    ]
    for worker in workers:
        _, err = worker.communicate(timeout=600)
        assert worker.returncode == 0, err[-3000:]
    results = [json.loads((tmp_path / f"w{i}.json").read_text()) for i in range(2)]
    # They ran at the same time.
    assert max(r["started"] for r in results) < min(r["ended"] for r in results)

    study = optuna.load_study(study_name=STUDY, storage=storage)
    trials = study.trials
    assert [t.number for t in trials] == [0, 1]
    assert all(t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED) for t in trials)
    by_worker: dict[str, list[int]] = {}
    for t in trials:
        by_worker.setdefault(t.user_attrs["worker"], []).append(t.number)
    assert len(by_worker) == 2 and all(len(numbers) == 1 for numbers in by_worker.values())
    # The baseline ran once, and the workers' samplers did not draw the same parameters.
    assert len({json.dumps(t.params, sort_keys=True) for t in trials}) == 2
    best = min((t for t in trials if t.state == optuna.trial.TrialState.COMPLETE), key=lambda t: t.value)
    last = max(results, key=lambda r: r["ended"])
    assert last["best_value"] == pytest.approx(best.value) and last["best"] == best.params
    assert last["n_trials"] == 2
    # The storage's password never reaches results or tags.
    assert "@" in last["storage"] and storage.split("//")[1].split("@")[0].split(":")[1] not in last["storage"]
