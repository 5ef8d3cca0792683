"""Hyper-parameter search with Optuna: TPE sampler, median pruning on validation loss, one MLflow child
run per trial under the study's parent run, the study kept in an RDB so it resumes: SQLite under
WATTFLOW_HOME by default, `model.tuning_storage` (PostgreSQL in production) when several workers share
one study. Each worker process runs `tune` on the same study name and storage; Optuna's storage hands
each trial to exactly one worker, and every worker's result is the best of all the study's trials.

Validation windows are the origins after one fixed time cut, whatever the trial's lookback, so trials
are compared on the same days.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np
import pandas as pd

from ml.spec import WindowSpec, spec_for_frame
from wattflow.log import get_logger

if TYPE_CHECKING:  # pragma: no cover
    import optuna

    from ml.model import ModelParams
    from wattflow.settings import Settings

log = get_logger(__name__)

UNITS = (16, 32, 64, 128)
# On CPU an epoch at batch 32 takes about twice as long as at 64 (per-step overhead of the LSTM loops),
# for no better validation loss on building data; the search spends its time on other axes.
BATCH_SIZES = (64, 128, 256)
# Bumped whenever a categorical choice list changes: Optuna cannot resume a study over other choices, so
# the default study name carries it and a changed space starts a new study.
SEARCH_SPACE_VERSION = 2


@dataclass(frozen=True)
class TuningResult:
    study_name: str
    storage: str
    parent_run_id: str | None
    best_value: float
    best: dict[str, Any]
    n_trials: int  # in the study, all sessions together
    n_complete: int
    n_pruned: int
    seconds: float

    def best_params(self, base: "ModelParams") -> "ModelParams":
        keys = ("units", "layers", "dropout", "learning_rate", "batch_size")
        return replace(base, **{k: self.best[k] for k in keys if k in self.best})

    def best_lookback(self, default: int) -> int:
        return int(self.best.get("lookback_h", default))


def storage_url(settings: "Settings") -> str:
    """`model.tuning_storage` when set (any SQLAlchemy URL; a server database lets workers share a study),
    else SQLite under WATTFLOW_HOME."""
    if settings.model.tuning_storage:
        return settings.model.tuning_storage
    path = (settings.home / "optuna" / "optuna.db").resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def suggest(trial: "optuna.Trial", settings: "Settings") -> dict[str, Any]:
    return {
        "units": trial.suggest_categorical("units", list(UNITS)),
        "layers": trial.suggest_int("layers", 1, 2),
        "dropout": trial.suggest_float("dropout", 0.0, 0.4),
        "learning_rate": trial.suggest_float("learning_rate", 1e-4, 1e-2, log=True),
        "batch_size": trial.suggest_categorical("batch_size", list(BATCH_SIZES)),
        "lookback_h": trial.suggest_categorical("lookback_h", list(settings.model.tuning_lookbacks)),
    }


def baseline_trial(base: "ModelParams", spec: WindowSpec, settings: "Settings") -> dict[str, Any]:
    """The configured parameters as a trial, keeping only values the search space can take."""
    values = {
        "units": base.units if base.units in UNITS else None,
        "layers": min(max(base.layers, 1), 2),
        "dropout": min(max(base.dropout, 0.0), 0.4),
        "learning_rate": min(max(base.learning_rate, 1e-4), 1e-2),
        "batch_size": base.batch_size if base.batch_size in BATCH_SIZES else None,
        "lookback_h": spec.lookback_h if spec.lookback_h in settings.model.tuning_lookbacks else None,
    }
    return {k: v for k, v in values.items() if v is not None}


def tuning_stride_h(settings: "Settings") -> int:
    """Hours between trial training origins: settings.model.tuning_origin_stride_h, else twice the training
    stride (when that still divides a day). Trials only rank configurations, and half the (heavily
    overlapping) windows rank them alike at half the cost."""
    configured = settings.model.tuning_origin_stride_h
    if configured:
        return int(configured)
    doubled = 2 * settings.model.train_origin_stride_h
    return doubled if doubled <= 24 and 24 % doubled == 0 else settings.model.train_origin_stride_h


def check_search_space(study: "optuna.Study", settings: "Settings") -> None:
    """Refuse to resume a study whose earlier trials drew categorical values from other choices."""
    current = {"units": list(UNITS), "batch_size": list(BATCH_SIZES), "lookback_h": list(settings.model.tuning_lookbacks)}
    for trial in study.trials:
        for name, choices in current.items():
            distribution = trial.distributions.get(name)
            if distribution is not None and list(getattr(distribution, "choices", choices)) != choices:
                raise ValueError(
                    f"study {study.study_name!r} searched {name} over {list(distribution.choices)}, this version over "
                    f"{choices}; tune into a new study (another study name) to use the current search space"
                )


def storage_label(storage: str) -> str:
    """The storage URL without its password: what tags, results and logs may show."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(storage).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not a SQLAlchemy URL: show only its scheme
        return storage.split(":", 1)[0]


def open_study(settings: "Settings", study_name: str, spec: WindowSpec, base_params: "ModelParams") -> "optuna.Study":
    """Create or load the study; a new one gets the configured model as its first (waiting) trial.

    Run this once before starting several workers on a new study (the DAG's or the operator's first
    step): two workers that both find it empty would each queue the baseline. `tune` calls it too, so a
    single worker needs nothing else.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = storage_url(settings)
    if storage.startswith("sqlite"):
        # Concurrent SQLite writers wait for the file lock instead of failing at once.
        storage = optuna.storages.RDBStorage(storage, engine_kwargs={"connect_args": {"timeout": 60}})
    study = optuna.create_study(
        study_name=study_name,
        storage=storage,
        direction="minimize",
        sampler=optuna.samplers.TPESampler(seed=sampler_seed(settings, base_params.seed)),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=2),
        load_if_exists=True,
    )
    check_search_space(study, settings)
    if not study.trials:
        # The configured model is the first trial, so a short search can only improve on it.
        study.enqueue_trial(baseline_trial(base_params, spec, settings), skip_if_exists=True)
    return study


def sampler_seed(settings: "Settings", seed: int) -> int:
    """The TPE sampler's seed: the model's seed alone for the local (one-worker) study, so a search repeats;
    mixed with the process id on a shared storage, where workers seeded alike would draw the same trials."""
    import os

    if not settings.model.tuning_storage:
        return seed
    return int(np.random.SeedSequence([seed, os.getpid()]).generate_state(1)[0])


def worker_name() -> str:
    """Which process ran a trial (host:pid): a trial's user attribute, so a shared study shows its workers."""
    import os
    import socket

    return f"{socket.gethostname()}:{os.getpid()}"


def pruning_callback(trial: "optuna.Trial"):
    """Report validation loss each epoch; stop the fit when the median rule prunes the trial."""
    import keras

    class ReportValidationLoss(keras.callbacks.Callback):
        pruned_at: int | None = None

        def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
            value = (logs or {}).get("val_loss")
            if value is None or not np.isfinite(value):
                return
            trial.report(float(value), epoch)
            if trial.should_prune():
                self.pruned_at = epoch
                self.model.stop_training = True

    return ReportValidationLoss()


def tune(
    features: pd.DataFrame,
    settings: "Settings",
    *,
    n_trials: int,
    timeout_s: float | None = None,
    spec: WindowSpec | None = None,
    base_params: "ModelParams | None" = None,
    timezones: Mapping[str, str] | None = None,
    study_name: str | None = None,
    log_to_mlflow: bool = True,
) -> TuningResult:
    """Run `n_trials` more trials of the study (creating or resuming it) on `features` (training period only)."""
    import mlflow
    import optuna

    import keras

    from ml import tracking
    from ml.model import ModelParams, build_forecaster, fit
    from ml.pipeline import NoTrainingData, training_windows

    started = time.perf_counter()
    spec = spec_for_frame(spec or WindowSpec(horizon_h=settings.model.horizon_h, quantiles=tuple(settings.model.quantiles)), features)
    base_params = base_params or ModelParams.from_settings(settings.model)
    study_name = study_name or f"{settings.model.model_name}-tuning-v{SEARCH_SPACE_VERSION}"
    storage = storage_label(storage_url(settings))
    study = open_study(settings, study_name, spec, base_params)
    ts = pd.to_datetime(features["ts"], utc=True)
    validation_cut = ts.min() + (ts.max() - ts.min()) * (1 - settings.model.validation_fraction)
    validation_cut = validation_cut.floor("D")
    windows_cache: dict[int, Any] = {}

    stride_h = tuning_stride_h(settings)

    def windows_for(lookback: int):
        if lookback not in windows_cache:
            trial_spec = replace(spec, lookback_h=lookback)
            windows = training_windows(features, trial_spec, timezones, None, stride_h)
            late = windows.origin >= validation_cut.tz_localize(None).to_datetime64()
            windows_cache[lookback] = (trial_spec, windows.take(np.flatnonzero(~late)), windows.take(np.flatnonzero(late)))
        return windows_cache[lookback]

    parent_run_id = study.user_attrs.get("mlflow_parent_run_id") if log_to_mlflow else None
    if log_to_mlflow:
        tracking.configure(settings)
        if mlflow.active_run() is not None:
            parent = mlflow.start_run(run_name=f"tuning-{study_name}", nested=True)
        elif parent_run_id:
            parent = mlflow.start_run(run_id=parent_run_id)
        else:
            parent = mlflow.start_run(run_name=f"tuning-{study_name}")
        parent_run_id = parent.info.run_id
        study.set_user_attr("mlflow_parent_run_id", parent_run_id)
        mlflow.set_tags({"wattflow.kind": "tuning", "optuna.study": study_name, "optuna.storage": storage,
                         "tuning.origin_stride_h": str(stride_h)})

    def objective(trial: "optuna.Trial") -> float:
        trial.set_user_attr("worker", worker_name())
        chosen = suggest(trial, settings)
        trial_spec, train, validation = windows_for(chosen["lookback_h"])
        if len(train) < 4 or len(validation) < 1:
            raise NoTrainingData(f"lookback {chosen['lookback_h']} h leaves {len(train)} training / {len(validation)} validation windows")
        params = replace(
            base_params, **{k: v for k, v in chosen.items() if k != "lookback_h"},
            epochs=settings.model.tuning_max_epochs, patience=min(base_params.patience, 3),
        )
        callback = pruning_callback(trial)
        # Earlier trials' models are done with: without this, Keras keeps their graphs and memory grows per trial.
        keras.backend.clear_session()
        run = mlflow.start_run(run_name=f"trial-{trial.number}", nested=True) if log_to_mlflow else None
        try:
            forecaster = build_forecaster(trial_spec, params, train)
            fit(forecaster, train, validation, [callback])
            val_losses = forecaster.history.get("val_loss", [float("nan")])
            value = float(np.nanmin(val_losses))
            if log_to_mlflow:
                mlflow.log_params({**chosen, "trial": trial.number, "epochs_cap": params.epochs})
                tracking.log_epoch_metrics(forecaster.history)
                mlflow.log_metrics({"best_val_loss": value, "epochs_run": len(val_losses)})
                mlflow.set_tag("optuna.state", "pruned" if callback.pruned_at is not None else "complete")
        finally:
            if run is not None:
                mlflow.end_run()
        if callback.pruned_at is not None:
            raise optuna.TrialPruned(f"pruned at epoch {callback.pruned_at}")
        return value

    try:
        study.optimize(objective, n_trials=n_trials, timeout=timeout_s, gc_after_trial=True, catch=(NoTrainingData,))
        states = [t.state for t in study.trials]
        complete = sum(s == optuna.trial.TrialState.COMPLETE for s in states)
        if complete == 0:
            raise NoTrainingData(f"study {study_name!r}: no trial completed ({len(states)} tried)")
        result = TuningResult(
            study_name=study_name, storage=storage, parent_run_id=parent_run_id,
            best_value=float(study.best_value), best=dict(study.best_params), n_trials=len(states),
            n_complete=complete, n_pruned=sum(s == optuna.trial.TrialState.PRUNED for s in states),
            seconds=time.perf_counter() - started,
        )
        if log_to_mlflow:
            # Params are immutable and a resumed study may find a new best: tags can move.
            mlflow.set_tags({f"best.{k}": str(v) for k, v in result.best.items()})
            mlflow.log_metrics({"best_val_loss": result.best_value, "n_trials": result.n_trials, "n_pruned": result.n_pruned})
        log.info("tuning done", study=study_name, best=result.best, best_val_loss=result.best_value, trials=result.n_trials)
        return result
    finally:
        if log_to_mlflow:
            mlflow.end_run()
