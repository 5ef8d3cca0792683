"""Training pipeline: a storage-free core (`train_model`) and the shells that read gold features, log to
MLflow, register and gate (`train_and_register`), or answer an analyst's backtest (`backtest_building`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
import pandas as pd

from ml.spec import WindowSpec, spec_for_frame
from wattflow.log import get_logger

if TYPE_CHECKING:  # pragma: no cover
    from lakehouse.engine import TableEngine
    from ml.backtest import BacktestResult
    from ml.model import Forecaster, ModelParams
    from ml.registry import PromotionDecision
    from ml.tracking import DatasetRef
    from ml.windows import Windows
    from wattflow.settings import Settings

log = get_logger(__name__)


class NoTrainingData(ValueError):
    """The requested buildings and period hold no complete window to learn from."""


@dataclass
class TrainedModel:
    forecaster: "Forecaster"
    spec: WindowSpec
    params: "ModelParams"
    train_end: pd.Timestamp | None
    n_train_windows: int
    n_validation_windows: int
    best_val_loss: float
    epochs_run: int
    train_seconds: float

    def predictor(self):
        """This model as a backtest predictor."""
        return (self.spec, self.forecaster.predict)


@dataclass
class TrainingOutcome:
    run_id: str
    model_name: str
    version: str
    decision: "PromotionDecision"
    backtest: dict[str, Any]
    dataset: "DatasetRef"
    params: dict[str, Any] = field(default_factory=dict)
    train_end: pd.Timestamp | None = None  # the gated model learnt from data before this; judged after it


def spec_from_settings(settings: "Settings", **overrides: Any) -> WindowSpec:
    values: dict[str, Any] = dict(
        lookback_h=settings.model.lookback_h,
        horizon_h=settings.model.horizon_h,
        quantiles=tuple(settings.model.quantiles),
    )
    values.update(overrides)
    return WindowSpec(**values)


def training_windows(
    frame: pd.DataFrame,
    spec: WindowSpec,
    timezones: Mapping[str, str] | None,
    train_end: pd.Timestamp | None,
    stride_h: int,
) -> "Windows":
    """Windows whose every hour (history and target) lies before `train_end`, with at least
    TRAIN_MIN_VALID_SHARE of their target hours valid (the others carry no loss)."""
    from ml.windows import TRAIN_MIN_VALID_SHARE, make_windows

    if train_end is not None:
        frame = frame[pd.to_datetime(frame["ts"], utc=True) < train_end]
    return make_windows(frame, spec, timezones, stride_h=stride_h, min_valid_share=TRAIN_MIN_VALID_SHARE)


def train_model(
    features: pd.DataFrame,
    spec: WindowSpec,
    params: "ModelParams",
    *,
    timezones: Mapping[str, str] | None = None,
    train_end: pd.Timestamp | None = None,
    stride_h: int = 6,
    validation_fraction: float = 0.15,
    recent_since: pd.Timestamp | None = None,
    recent_weight: int = 1,
    callbacks: Sequence[Any] = (),
    verbose: int = 0,
) -> TrainedModel:
    """Window the gold frame, fit the LSTM (early stopping on validation weeks spread over the period), return it. No I/O.

    `recent_since`: the windows whose target reaches past it are the news (data a retrain was requested
    for). They all train, `recent_weight` times over, and validation is drawn from the older windows only:
    a chronological cut would put exactly the news in validation, where the model never learns from it.
    """
    from ml.model import build_forecaster, calibrate_quantiles, fit
    from ml.windows import blocked_split

    started = time.perf_counter()
    spec = spec_for_frame(spec, features if train_end is None else features[pd.to_datetime(features["ts"], utc=True) < train_end])
    windows = training_windows(features, spec, timezones, train_end, stride_h)
    if len(windows) < 4:
        raise NoTrainingData(
            f"{len(windows)} complete window(s) of {spec.lookback_h}+{spec.horizon_h} h before {train_end}; need at least 4"
        )
    if recent_since is None:
        train, validation = blocked_split(windows, validation_fraction)
    else:
        train, validation = recency_split(windows, spec, _as_utc(recent_since), validation_fraction, recent_weight)
    forecaster = build_forecaster(spec, params, train)
    fit(forecaster, train, validation, list(callbacks), verbose=verbose)
    # The p10-p90 band is fitted to cover 80% of the held-out validation hours.
    calibrate_quantiles(forecaster, validation)
    val_losses = forecaster.history.get("val_loss") or forecaster.history.get("loss") or [float("nan")]
    return TrainedModel(
        forecaster=forecaster,
        spec=spec,
        params=params,
        train_end=train_end,
        n_train_windows=len(train),
        n_validation_windows=len(validation),
        best_val_loss=float(np.nanmin(val_losses)),
        epochs_run=len(forecaster.history.get("loss", [])),
        train_seconds=time.perf_counter() - started,
    )


def recency_split(windows: "Windows", spec: WindowSpec, recent_since: pd.Timestamp, validation_fraction: float,
                  recent_weight: int) -> tuple["Windows", "Windows"]:
    """Old windows split as usual; recent ones (target past `recent_since`) all train, repeated `recent_weight` times."""
    from ml.windows import Windows, blocked_split

    target_end = windows.origin + np.timedelta64(spec.horizon_h, "h")
    recent = target_end > np.datetime64(recent_since.tz_convert(None))
    old_train, validation = blocked_split(windows.take(np.flatnonzero(~recent)), validation_fraction)
    news = [windows.take(np.flatnonzero(recent))] * max(1, recent_weight)
    return Windows.concat([old_train, *news], spec), validation


def default_train_end(features: pd.DataFrame, backtest_days: int) -> pd.Timestamp:
    """UTC midnight `backtest_days` before the last feature hour: the backtest gets the days after it."""
    last = pd.to_datetime(features["ts"], utc=True).max()
    return (last - pd.Timedelta(days=backtest_days)).floor("D")


def retrain_train_end(
    features: pd.DataFrame, backtest_days: int, new_data_since: pd.Timestamp, *, holdout_share: float, min_holdout_days: int
) -> pd.Timestamp:
    """Where a monitoring-requested retrain stops learning and starts being judged.

    The champion was trained on data up to `new_data_since`; what came after is the period monitoring found
    wrong. Holding out all of it (or the usual `backtest_days`) would leave the challenger nothing of the
    new behaviour to learn from, so it learns from the older part and is judged, beside the champion, on
    the newest `holdout_share` of it (whole days, at least `min_holdout_days`, at most `backtest_days`).
    Both models are judged on hours neither has seen.
    """
    end = pd.to_datetime(features["ts"], utc=True).max().floor("h") + pd.Timedelta(hours=1)  # exclusive
    new_days = max(0.0, (end - _as_utc(new_data_since)) / pd.Timedelta(days=1))
    holdout_days = min(backtest_days, max(min_holdout_days, round(new_days * holdout_share)))
    return (end - pd.Timedelta(days=holdout_days)).floor("D")


# ---------------------------------------------------------------------------------------------- shell


def _as_utc(value: Any) -> pd.Timestamp:
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tz is None else ts.tz_convert("UTC")


def read_features(
    engine: "TableEngine",
    buildings: Sequence[str] | None = None,
    start: pd.Timestamp | None = None,
    end: pd.Timestamp | None = None,
) -> tuple[pd.DataFrame, "DatasetRef"]:
    """Gold features pinned to the table's current Delta version, with the reference that names it."""
    from lakehouse.schemas import FEATURES
    from ml.tracking import DatasetRef

    version = engine.version(FEATURES)
    if version is None:
        return pd.DataFrame(columns=FEATURES.schema.names), DatasetRef(FEATURES.qualified_name, engine.table_uri(FEATURES), None)
    filters = []
    if buildings:
        filters.append(("building_id", "in", list(buildings)))
    if start is not None:
        filters.append(("date", ">=", str(pd.Timestamp(start).date())))
    if end is not None:
        filters.append(("date", "<=", str(pd.Timestamp(end).date())))
    frame = engine.read(FEATURES, version=version, filters=filters or None).to_pandas()
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
    if start is not None:
        frame = frame[frame["ts"] >= _as_utc(start)]
    if end is not None:
        frame = frame[frame["ts"] < _as_utc(end)]
    frame = frame.sort_values(["building_id", "ts"]).reset_index(drop=True)
    ref = DatasetRef(
        table=FEATURES.qualified_name,
        uri=engine.table_uri(FEATURES),
        version=version,
        start=None if frame.empty else frame["ts"].min().isoformat(),
        end=None if frame.empty else frame["ts"].max().isoformat(),
        buildings=tuple(sorted(frame["building_id"].unique())),
    )
    return frame, ref


def building_timezones(engine: "TableEngine", settings: "Settings | None" = None) -> dict[str, str]:
    """Timezone per building from `reference.buildings`, else the registry file; unknown buildings use UTC."""
    from lakehouse.schemas import BUILDINGS

    if engine.exists(BUILDINGS):
        table = engine.read(BUILDINGS, columns=["building_id", "timezone"])
        return dict(zip(table.column("building_id").to_pylist(), table.column("timezone").to_pylist()))
    try:
        from lakehouse.registry_file import load_registry, registry_path

        registry = load_registry(registry_path(settings)) if settings is not None else None
        return {b.building_id: b.timezone for b in registry} if registry is not None else {}
    except Exception:  # noqa: BLE001 - no registry file: UTC origins
        return {}


def building_use_types(engine: "TableEngine") -> dict[str, str]:
    """Use type per building from `reference.buildings` (training stratifies over them); none without the table."""
    from lakehouse.schemas import BUILDINGS

    if not engine.exists(BUILDINGS):
        return {}
    table = engine.read(BUILDINGS, columns=["building_id", "use_type"])
    return {b: t for b, t in zip(table.column("building_id").to_pylist(), table.column("use_type").to_pylist()) if t}


def champion_predictor(model_name: str):
    """The current champion as a backtest predictor, or None when there is none yet."""
    from ml import registry
    from ml.spec import INPUT_FUTURE, INPUT_HISTORY

    version = registry.alias_version(model_name, registry.CHAMPION)
    if version is None:
        return None, None
    spec = registry.window_spec_of(model_name, version)
    keras_model = registry.load_keras(model_name, version)

    def predict(windows):
        out = keras_model.predict({INPUT_HISTORY: windows.history, INPUT_FUTURE: windows.future}, batch_size=1024, verbose=0)
        return {name: np.asarray(out[name]) for name in spec.output_names}

    return version, (spec, predict)


def train_and_register(
    engine: "TableEngine",
    settings: "Settings",
    buildings: Sequence[str] | None = None,
    start: pd.Timestamp | None = None,
    end: pd.Timestamp | None = None,
    tune_trials: int = 0,
    validation_result: dict[str, Any] | None = None,
    params: "ModelParams | None" = None,
    spec: WindowSpec | None = None,
    new_data_since: pd.Timestamp | None = None,
) -> TrainingOutcome:
    """Gold features → (tune) → train → backtest against the champion and baselines → MLflow → register → gate.

    The model trains on data before the last `settings.model.backtest_days` days and is judged on those
    days, beside the current champion on the very same hours. A retrain that monitoring requested passes
    `new_data_since` (the end of the champion's training data) and is judged on the newest part of what
    came after it instead (`retrain_train_end`), learning from that new data `retrain_recent_weight` times over.
    """
    import mlflow

    from ml import registry, tracking
    from ml.backtest import backtest
    from ml.model import ModelParams

    from lakehouse.schemas import FEATURES
    from ml.training_stream import gold_buildings, train_streamed
    from ml.windows import BASELINE_MEMORY_H

    # Gold is never read whole: two columns to find the buildings and the period, then shards of buildings
    # (training, ml.training_stream) and the backtest's tail of days.
    table_version = engine.version(FEATURES)
    found, first_ts, last_ts = (gold_buildings(engine, table_version, buildings, start, end)
                                if table_version is not None else ([], None, None))
    if not found:
        raise NoTrainingData(f"gold.features has no rows for buildings={list(buildings or []) or 'all'} between {start} and {end}")
    ref = tracking.DatasetRef(FEATURES.qualified_name, engine.table_uri(FEATURES), table_version,
                              start=first_ts.isoformat(), end=last_ts.isoformat(), buildings=tuple(found))
    timezones = building_timezones(engine, settings)
    last_hour = pd.DataFrame({"ts": [last_ts]})
    train_end = default_train_end(last_hour, settings.model.backtest_days)
    if new_data_since is not None:
        train_end = retrain_train_end(last_hour, settings.model.backtest_days, new_data_since,
                                      holdout_share=settings.monitor.retrain_holdout_share,
                                      min_holdout_days=settings.monitor.retrain_min_holdout_days)
    params = params or ModelParams.from_settings(settings.model)
    spec = spec or spec_from_settings(settings)
    use_types = building_use_types(engine)
    tracking.configure(settings)

    if tune_trials:
        from ml.training_stream import tuning_buildings
        from ml.tuning import tune

        tuning_frame, _ = read_features(
            engine, tuning_buildings(found, use_types, settings.model.tuning_max_buildings), start, train_end)
        tuning_frame = tuning_frame[tuning_frame["ts"] < train_end]
        spec = spec_for_frame(spec, tuning_frame)
        result = tune(tuning_frame, settings, n_trials=tune_trials, spec=spec, base_params=params, timezones=timezones)
        del tuning_frame
        params, spec = result.best_params(params), replace(spec, lookback_h=result.best_lookback(spec.lookback_h))

    with mlflow.start_run(run_name=f"train-{pd.Timestamp.now(tz='UTC'):%Y%m%dT%H%M}") as run:
        recent = {} if new_data_since is None else {
            "recent_since": _as_utc(new_data_since), "recent_weight": settings.monitor.retrain_recent_weight}
        trained = train_streamed(
            engine, spec, params, version=table_version, buildings=found, first_ts=first_ts, timezones=timezones,
            use_types=use_types, start=start, train_end=train_end, stride_h=settings.model.train_origin_stride_h,
            validation_fraction=settings.model.validation_fraction,
            windows_per_epoch=settings.model.train_windows_per_epoch,
            shard_buildings=settings.model.train_shard_buildings, **recent,
        )
        spec = trained.spec
        champion_version, champion = champion_predictor(settings.model.model_name)
        # The backtest needs the days after the cut plus each predictor's lookback and the baselines' memory.
        reach_h = max([spec.lookback_h, BASELINE_MEMORY_H] + ([champion[0].lookback_h] if champion else []))
        tail_start = train_end - pd.Timedelta(hours=reach_h) - pd.Timedelta(days=1)
        frame, _ = read_features(engine, found, tail_start if start is None else max(_as_utc(start), tail_start), end)
        tracking.log_source()
        # The dataset input names the whole table version (ref); its sample rows are the backtest's days.
        tracking.log_dataset(ref, frame)
        tracking.log_validation(validation_result)
        tracking.log_params(trained.forecaster, {
            "train_end": train_end.isoformat(), "n_train_windows": trained.n_train_windows,
            "n_validation_windows": trained.n_validation_windows, "train_origin_stride_h": settings.model.train_origin_stride_h,
            "tuning_trials": tune_trials,
            **{k: str(v) for k, v in recent.items()},
        })
        tracking.log_epoch_metrics(trained.forecaster.history)
        mlflow.log_metrics({"best_val_loss": trained.best_val_loss, "train_seconds": trained.train_seconds})

        predictors = {"model": trained.predictor()}
        if champion is not None:
            predictors["champion"] = champion
        result = backtest(frame, predictors, start=train_end, timezones=timezones, ashrae_p=settings.model.ashrae_p)
        tracking.log_backtest(result)
        tracking.log_figures(result)
        model_uri = tracking.log_model(trained.forecaster, _example_windows(frame, spec, timezones))

        version = registry.register(model_uri, settings.model.model_name, run.info.run_id, {
            "delta_table": ref.uri, "delta_version": str(ref.version), "window_spec": spec.to_json(),
        })
        decision = registry.decide_promotion(
            result.accuracy["model"], result.accuracy.get("champion"),
            challenger_version=version, champion_version=champion_version,
            margin=settings.model.promotion_margin, max_cv_rmse=settings.model.max_cv_rmse,
            max_abs_nmbe=settings.model.max_abs_nmbe,
        )
        registry.promote(settings.model.model_name, decision)
        mlflow.set_tags({"wattflow.model_version": version, "wattflow.promoted": str(decision.promoted).lower(),
                         "wattflow.gate_reason": decision.reason[:4000]})
        log.info("model trained", version=version, promoted=decision.promoted, reason=decision.reason,
                 cv_rmse=result.accuracy["model"].cv_rmse, run_id=run.info.run_id)
    return TrainingOutcome(
        run_id=run.info.run_id, model_name=settings.model.model_name, version=version, decision=decision,
        backtest=result.summary(None), dataset=ref, params={**params.__dict__, "lookback_h": spec.lookback_h},
        train_end=train_end,
    )


def _example_windows(frame: pd.DataFrame, spec: WindowSpec, timezones: Mapping[str, str]) -> "Windows":
    from ml.windows import make_windows

    first_building = frame["building_id"].iloc[0]
    one = frame[frame["building_id"] == first_building]
    return make_windows(one.iloc[: spec.lookback_h + spec.horizon_h + 48], spec, timezones)


def ensure_features(engine: "TableEngine", settings: "Settings", building_id: str) -> None:
    """Curate silver and build gold features for a building that has bronze readings but no features yet."""
    from lakehouse.buildings import BuildingRegistry
    from lakehouse.curation import build_features, curate
    from lakehouse.registry_file import load_registry
    from lakehouse.schemas import BUILDINGS, SENSOR_READINGS

    if not engine.exists(SENSOR_READINGS):
        raise NoTrainingData(f"building {building_id!r} has no gold features and bronze holds no readings at all")
    ts = engine.read(SENSOR_READINGS, filters=[("building_id", "=", building_id)], columns=["ts"]).column("ts")
    if len(ts) == 0:
        raise NoTrainingData(f"building {building_id!r} has neither gold features nor bronze readings; ingest its file first")
    import pyarrow.compute as pc

    start = pd.Timestamp(pc.min(ts).as_py()).floor("D")
    end = pd.Timestamp(pc.max(ts).as_py()).floor("D") + pd.Timedelta(days=1)
    table = engine.read(BUILDINGS) if engine.exists(BUILDINGS) else None
    registry = BuildingRegistry.from_arrow(table) if table is not None and table.num_rows else load_registry()
    log.info("building features missing: curating", building_id=building_id, start=str(start), end=str(end))
    curate(engine, registry, start, end, settings, building_ids=[building_id])
    build_features(engine, registry, start, end, settings)


def backtest_building(
    engine: "TableEngine",
    settings: "Settings",
    building_id: str,
    train_end: pd.Timestamp,
    horizon_h: int = 24,
    trials: int = 0,
    params: "ModelParams | None" = None,
    yardstick: bool = True,
) -> tuple[dict[str, Any], "BacktestResult"]:
    """Bring your own building: train on its data before `train_end`, backtest day-ahead after it.

    The summary also carries the features the model used (and those the building lacks), where the
    weather forecast of the scored hours came from, and the gradient-boosting yardstick on the same hours.

    Returns the summary object of `wattflow backtest --json` and the full result (hours, per step).
    """
    from ml.backtest import backtest
    from ml.model import ModelParams

    train_end = _as_utc(train_end)
    frame, _ = read_features(engine, [building_id])
    if frame.empty:
        ensure_features(engine, settings, building_id)
        frame, _ = read_features(engine, [building_id])
    if frame.empty:
        raise NoTrainingData(f"building {building_id!r} has no gold features, even after curating its readings")
    timezones = building_timezones(engine, settings)
    spec = spec_for_frame(spec_from_settings(settings, horizon_h=horizon_h), frame[pd.to_datetime(frame["ts"], utc=True) < train_end])
    params = params or ModelParams.from_settings(settings.model)
    if trials:
        from ml.tuning import tune

        tuned = tune(frame[frame["ts"] < train_end], settings, n_trials=trials, spec=spec, base_params=params,
                     timezones=timezones, study_name=f"backtest-{building_id}")
        params, spec = tuned.best_params(params), replace(spec, lookback_h=tuned.best_lookback(spec.lookback_h))
    trained = train_model(frame, spec, params, timezones=timezones, train_end=train_end,
                          stride_h=settings.model.train_origin_stride_h, validation_fraction=settings.model.validation_fraction)
    result = backtest(frame, {"model": trained.predictor()}, start=train_end, timezones=timezones, ashrae_p=settings.model.ashrae_p)
    summary = result.summary(building_id)
    summary["window_spec"] = {"history_features": list(trained.spec.history_features),
                              "future_features": list(trained.spec.future_features),
                              "dropped_features": list(trained.spec.extra.get("dropped_features", []))}
    if "forecast_source" in frame:
        scored_ts = set(result.hours.loc[result.hours["scored"], "ts"])
        sources = frame.loc[pd.to_datetime(frame["ts"], utc=True).isin(scored_ts), "forecast_source"]
        summary["weather_forecast"] = {str(k): int(v) for k, v in sources.fillna("none").value_counts().items()}
    if yardstick:
        from ml.metrics import accuracy
        from ml.yardstick import gradient_boosting_yardstick

        scored = result.hours[result.hours["scored"]]
        predicted = gradient_boosting_yardstick(frame, train_end, scored)
        summary["yardstick"] = {"gradient_boosting": accuracy(scored["actual"].to_numpy(), predicted, p=settings.model.ashrae_p).as_dict()}
    return summary, result
