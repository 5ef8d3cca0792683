"""Training that does not grow with the portfolio: windows streamed from gold, a bounded sample per epoch.

The in-memory path (`ml.pipeline.train_model`) windows the whole gold frame at once: a year of 200
buildings is ~1.7 M feature rows and ~250 k training windows (~2 GB of float32 before TensorFlow copies
them). Here gold is read a few buildings at a time (`ModelSettings.train_shard_buildings`), each
building's windows go to a local shard on disk (`WindowStore`), and every epoch trains on a fresh sample
of at most `ModelSettings.train_windows_per_epoch` windows, stratified first over use types and then over
the buildings of each use type (`stratified_quotas`), read back from the shards. Memory holds one shard
of gold, or one epoch's sample, whatever the number of buildings.

When the whole portfolio fits the budget every window trains every epoch, in the order the in-memory
path uses, through the same `ml.model.fit`: a small portfolio trains exactly as before.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd

from ml.spec import MIN_DAYS_FOR_SEASON, SEASONAL_FEATURES, WindowSpec, spec_for_frame
from ml.windows import BASELINE_MEMORY_H, Windows, blocked_split_index, empty_windows
from wattflow.log import get_logger

if TYPE_CHECKING:  # pragma: no cover
    from lakehouse.engine import TableEngine
    from ml.model import Forecaster, ModelParams
    from ml.pipeline import TrainedModel

log = get_logger(__name__)

# Arrays of a Windows that live in a shard (building_id is the shard's name).
_FIELDS = ("history", "future", "target", "valid", "actuals_before", "origin")
UNKNOWN_USE_TYPE = "unknown"


def water_fill(capacity: Mapping[Any, int], budget: int) -> dict[Any, int]:
    """Split `budget` as evenly as possible over keys, none above its capacity; what a small key cannot
    take goes to the others. Deterministic (keys in sorted order take the remainder)."""
    alloc = {key: 0 for key in capacity}
    open_keys = sorted(k for k, c in capacity.items() if c > 0)
    left = max(0, int(budget))
    while open_keys and left > 0:
        share = left // len(open_keys)
        if share == 0:
            for key in open_keys[:left]:
                alloc[key] += 1
            break
        still_open = []
        for key in open_keys:
            give = min(share, capacity[key] - alloc[key])
            alloc[key] += give
            left -= give
            if alloc[key] < capacity[key]:
                still_open.append(key)
        open_keys = still_open
    return alloc


def stratified_quotas(counts: Mapping[str, int], use_types: Mapping[str, str], budget: int) -> dict[str, int]:
    """Windows per building for one epoch: the budget split evenly over use types, then evenly over the
    buildings of each use type (a use type with few windows leaves its share to the others).

    A portfolio of 180 offices and 20 schools thus trains on schools half the time, not a tenth: one
    global model serves every use type, and the rare ones are the ones it would otherwise get wrong.
    """
    groups: dict[str, list[str]] = {}
    for building in counts:
        groups.setdefault(use_types.get(building) or UNKNOWN_USE_TYPE, []).append(building)
    per_group = water_fill({g: sum(counts[b] for b in members) for g, members in groups.items()}, budget)
    quotas: dict[str, int] = {}
    for group, members in groups.items():
        quotas.update(water_fill({b: counts[b] for b in members}, per_group[group]))
    return quotas


def tuning_buildings(buildings: Sequence[str], use_types: Mapping[str, str], limit: int) -> list[str]:
    """At most `limit` buildings for Optuna, spread over use types as evenly as they allow (each use type's
    buildings taken at an even step through their sorted ids): trials rank configurations, a stratified
    few buildings rank them as the whole portfolio would, at a bounded cost."""
    if limit <= 0 or len(buildings) <= limit:
        return sorted(buildings)
    quotas = stratified_quotas({b: 1 for b in buildings}, use_types, limit)
    groups: dict[str, list[str]] = {}
    for b in sorted(buildings):
        groups.setdefault(use_types.get(b) or UNKNOWN_USE_TYPE, []).append(b)
    chosen = []
    for members in groups.values():
        k = sum(quotas[b] for b in members)
        chosen += [members[int(i * len(members) / k)] for i in range(k)] if k else []
    return sorted(chosen)


@dataclass(frozen=True)
class ShardInfo:
    building_id: str
    use_type: str
    n_windows: int
    train: np.ndarray  # positions of the building's windows that train (old ones, once)
    news: np.ndarray  # positions of recent windows (retrain): they train `recent_weight` times
    validation: np.ndarray


class WindowStore:
    """One .npy per array per building under a local directory; rows are read back by position through a
    memory map that is closed again, so only the rows asked for stay resident."""

    def __init__(self, directory: Path, spec: WindowSpec) -> None:
        self.directory = Path(directory)
        self.spec = spec
        self.shards: dict[str, ShardInfo] = {}
        self._folders: dict[str, Path] = {}

    def write(self, building_id: str, windows: Windows) -> None:
        folder = self.directory / f"b{len(self._folders):06d}"
        folder.mkdir(parents=True, exist_ok=True)
        for name in _FIELDS:
            np.save(folder / f"{name}.npy", getattr(windows, name), allow_pickle=False)
        self._folders[building_id] = folder

    def read(self, building_id: str, positions: np.ndarray) -> Windows:
        if len(positions) == 0:
            return empty_windows(self.spec)
        folder = self._folders[building_id]
        arrays = {}
        for name in _FIELDS:
            mapped = np.load(folder / f"{name}.npy", mmap_mode="r", allow_pickle=False)
            arrays[name] = np.array(mapped[np.sort(positions)])
            del mapped
        return Windows(building_id=np.full(len(positions), building_id, dtype=object), **arrays)

    def origins(self, building_id: str) -> np.ndarray:
        return np.load(self._folders[building_id] / "origin.npy", allow_pickle=False)

    def cleanup(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


@dataclass
class StreamPlan:
    """What `stream_training_windows` found: the spec, the store and the split, nothing of gold kept."""

    spec: WindowSpec
    store: WindowStore
    recent_weight: int

    @property
    def shards(self) -> list[ShardInfo]:
        return [self.store.shards[b] for b in sorted(self.store.shards)]

    def train_counts(self) -> dict[str, int]:
        return {s.building_id: len(s.train) + self.recent_weight * len(s.news) for s in self.shards}

    def validation_counts(self) -> dict[str, int]:
        return {s.building_id: len(s.validation) for s in self.shards}

    def use_types(self) -> dict[str, str]:
        return {s.building_id: s.use_type for s in self.shards}

    def all_train(self) -> Windows:
        """Every training window, in the in-memory path's order (old ones by building, then the news repeated)."""
        old = Windows.concat([self.store.read(s.building_id, s.train) for s in self.shards], self.spec)
        news = Windows.concat([self.store.read(s.building_id, s.news) for s in self.shards], self.spec)
        return Windows.concat([old, *[news] * (self.recent_weight if len(news) else 0)], self.spec)

    def all_validation(self) -> Windows:
        return Windows.concat([self.store.read(s.building_id, s.validation) for s in self.shards], self.spec)

    def sample(self, quotas: Mapping[str, int], rng: np.random.Generator, part: str = "train") -> Windows:
        """`quotas[b]` windows of building b drawn without replacement (the news count `recent_weight` times),
        read straight into arrays of the sample's size (no second copy while concatenating)."""
        draws: list[tuple[str, np.ndarray]] = []
        for shard in self.shards:
            quota = quotas.get(shard.building_id, 0)
            if quota <= 0:
                continue
            if part == "validation":
                pool = shard.validation
            else:
                pool = np.concatenate([shard.train, *[shard.news] * self.recent_weight]) if len(shard.news) else shard.train
            draws.append((shard.building_id, np.sort(pool[rng.choice(len(pool), size=min(quota, len(pool)), replace=False)])))
        total = sum(len(chosen) for _, chosen in draws)
        if total == 0:
            return empty_windows(self.spec)
        out = empty_windows(self.spec)
        arrays = {name: np.empty((total, *getattr(out, name).shape[1:]), getattr(out, name).dtype) for name in _FIELDS}
        building_id = np.empty(total, dtype=object)
        at = 0
        for building, chosen in draws:
            # A news window drawn twice is read once and placed twice.
            unique, inverse = np.unique(chosen, return_inverse=True)
            folder = self.store._folders[building]
            for name in _FIELDS:
                mapped = np.load(folder / f"{name}.npy", mmap_mode="r", allow_pickle=False)
                arrays[name][at : at + len(chosen)] = np.asarray(mapped[unique])[inverse]
                del mapped
            building_id[at : at + len(chosen)] = building
            at += len(chosen)
        return Windows(building_id=building_id, **arrays)


def _shards(buildings: Sequence[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(buildings), max(1, size)):
        yield list(buildings[start : start + max(1, size)])


def gold_buildings(engine: "TableEngine", version: int, buildings: Sequence[str] | None = None,
                   start: pd.Timestamp | None = None, end: pd.Timestamp | None = None,
                   ) -> tuple[list[str], pd.Timestamp | None, pd.Timestamp | None]:
    """Buildings in gold features (of `buildings`, in [start, end)) and their first and last feature hour,
    reading two columns only."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from lakehouse.schemas import FEATURES

    table = engine.read(FEATURES, version=version, columns=["building_id", "ts"],
                        filters=_filters(list(buildings) if buildings else None, start, end))
    ts = table.column("ts")
    keep = None
    if start is not None:
        keep = pc.greater_equal(ts, pa.scalar(_utc(start).to_pydatetime(), ts.type))
    if end is not None:
        before = pc.less(ts, pa.scalar(_utc(end).to_pydatetime(), ts.type))
        keep = before if keep is None else pc.and_(keep, before)
    if keep is not None:
        table = table.filter(keep)
    if table.num_rows == 0:
        return [], None, None
    found = sorted(str(b) for b in pc.unique(table.column("building_id")).to_pylist())
    bounds = pc.min_max(table.column("ts")).as_py()
    return found, _utc(bounds["min"]), _utc(bounds["max"])


def _filters(buildings: list[str] | None, start: pd.Timestamp | None, end: pd.Timestamp | None) -> list | None:
    filters: list[tuple[str, str, Any]] = []
    if buildings:
        filters.append(("building_id", "in", buildings))
    if start is not None:
        filters.append(("date", ">=", str(_utc(start).date())))
    if end is not None:
        filters.append(("date", "<=", str(_utc(end).date())))
    return filters or None


def _utc(value: Any) -> pd.Timestamp:
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tz is None else ts.tz_convert("UTC")


def _read_shard(engine: "TableEngine", version: int, buildings: list[str], start: pd.Timestamp | None,
                end: pd.Timestamp | None, columns: Sequence[str] | None = None) -> pd.DataFrame:
    from lakehouse.schemas import FEATURES

    frame = engine.read(FEATURES, version=version, filters=_filters(buildings, start, end),
                        columns=list(columns) if columns else None).to_pandas()
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
    if start is not None:
        frame = frame[frame["ts"] >= _utc(start)]
    if end is not None:
        frame = frame[frame["ts"] < _utc(end)]
    return frame.sort_values(["building_id", "ts"]).reset_index(drop=True)


def portfolio_spec(engine: "TableEngine", version: int, buildings: Sequence[str], spec: WindowSpec,
                   start: pd.Timestamp | None, train_end: pd.Timestamp | None, first_ts: pd.Timestamp,
                   shard_buildings: int) -> WindowSpec:
    """`spec_for_frame` over the whole training period, computed shard by shard: a feature stays when every
    building has it; the seasonal ones when the portfolio's data spans a year."""
    columns = sorted({"building_id", "ts", *spec.history_features, *spec.future_features, spec.target})
    kept: set[str] | None = None
    for shard in _shards(buildings, shard_buildings):
        frame = _read_shard(engine, version, shard, start, train_end, columns)
        shard_spec = spec_for_frame(spec, frame)
        names = {*shard_spec.history_features, *shard_spec.future_features}
        kept = names if kept is None else kept & names
    kept = kept or set()
    last = train_end
    if last is not None and (last - first_ts) >= pd.Timedelta(days=MIN_DAYS_FOR_SEASON):
        kept |= SEASONAL_FEATURES & {*spec.history_features, *spec.future_features}
    history = tuple(f for f in spec.history_features if f in kept)
    future = tuple(f for f in spec.future_features if f in kept)
    dropped = sorted({*spec.history_features, *spec.future_features} - {*history, *future})
    if not dropped and "dropped_features" not in spec.extra:
        return spec
    extra = {**spec.extra, "dropped_features": sorted({*spec.extra.get("dropped_features", []), *dropped})}
    return replace(spec, history_features=history, future_features=future, extra=extra)


def stream_training_windows(
    engine: "TableEngine",
    version: int,
    buildings: Sequence[str],
    spec: WindowSpec,
    *,
    timezones: Mapping[str, str] | None,
    use_types: Mapping[str, str] | None,
    start: pd.Timestamp | None,
    train_end: pd.Timestamp | None,
    stride_h: int,
    validation_fraction: float,
    shard_buildings: int,
    directory: Path,
    recent_since: pd.Timestamp | None = None,
    recent_weight: int = 1,
) -> StreamPlan:
    """Window gold a shard of buildings at a time into a `WindowStore`, then split train/validation on the
    origins of the whole portfolio (the split `ml.pipeline.train_model` makes, to the window)."""
    from ml.pipeline import training_windows

    store = WindowStore(directory, spec)
    origins: list[np.ndarray] = []
    order: list[str] = []
    for shard in _shards(sorted(buildings), shard_buildings):
        frame = _read_shard(engine, version, shard, start, train_end)
        for building_id, rows in frame.groupby("building_id", sort=True):
            windows = training_windows(rows, spec, timezones, None, stride_h)
            if not len(windows):
                continue
            store.write(str(building_id), windows)
            origins.append(windows.origin)
            order.append(str(building_id))
        del frame
    if not order:
        return StreamPlan(spec, store, max(1, recent_weight))
    all_origins = np.concatenate(origins)
    owner = np.repeat(np.arange(len(order)), [len(o) for o in origins])
    local = np.concatenate([np.arange(len(o)) for o in origins])
    news_mask = np.zeros(len(all_origins), bool)
    if recent_since is not None:
        target_end = all_origins + np.timedelta64(spec.horizon_h, "h")
        news_mask = target_end > np.datetime64(recent_since.tz_convert(None))
    old = np.flatnonzero(~news_mask)
    train_pos, validation_pos = blocked_split_index(all_origins[old], validation_fraction)
    train_global, validation_global = old[train_pos], old[validation_pos]
    news_global = np.flatnonzero(news_mask)
    types = use_types or {}
    for i, building_id in enumerate(order):
        def mine(positions: np.ndarray) -> np.ndarray:
            return np.sort(local[positions[owner[positions] == i]])

        store.shards[building_id] = ShardInfo(
            building_id=building_id, use_type=types.get(building_id) or UNKNOWN_USE_TYPE, n_windows=len(origins[i]),
            train=mine(train_global), news=mine(news_global), validation=mine(validation_global),
        )
    return StreamPlan(spec, store, max(1, recent_weight) if recent_since is not None else 1)


def fit_sampled(forecaster: "Forecaster", sample: Callable[[int], Windows], epoch_size: int, validation: Windows,
                callbacks: Sequence[Any] = (), verbose: int = 0) -> "Forecaster":
    """`ml.model.fit` with a fresh training sample each epoch: a tf.data generator calls `sample(epoch)` when
    Keras starts the epoch and feeds its `epoch_size` windows shuffled, batch by batch."""
    import keras
    import tensorflow as tf

    from ml.model import window_level
    from ml.spec import INPUT_FUTURE, INPUT_HISTORY
    from ml.windows import as_tf_dataset

    spec, params = forecaster.spec, forecaster.params
    names = spec.output_names
    epochs_started = [0]
    # The epoch's sample lives here, not in the generator's frame: Keras stops after the known number of
    # batches without exhausting the generator, which would otherwise keep the last sample alive beside
    # the next one. Dropping it before drawing the next keeps one sample in memory.
    current: dict[str, Any] = {}

    def batches():
        epoch = epochs_started[0]
        epochs_started[0] += 1
        current.clear()
        windows = sample(epoch)
        target = np.where(windows.valid, windows.target, np.nan) / window_level(windows, spec)
        current.update(history=windows.history, future=windows.future,
                       z=((target - forecaster.target_mean) / forecaster.target_std).astype(np.float32))
        n = len(windows)
        del windows, target
        order = np.random.default_rng(params.seed + epoch).permutation(n)
        for start in range(0, n, params.batch_size):
            index = np.sort(order[start : start + params.batch_size])
            z = current["z"][index]
            yield ({INPUT_HISTORY: current["history"][index], INPUT_FUTURE: current["future"][index]},
                   {name: z for name in names})

    signature = (
        {INPUT_HISTORY: tf.TensorSpec([None, spec.lookback_h, len(spec.history_features)], tf.float32),
         INPUT_FUTURE: tf.TensorSpec([None, spec.horizon_h, len(spec.future_features)], tf.float32)},
        {name: tf.TensorSpec([None, spec.horizon_h], tf.float32) for name in names},
    )
    # A known number of batches: Keras then starts every epoch's iterator (a new sample) without probing.
    n_batches = -(-epoch_size // params.batch_size)
    train_ds = (tf.data.Dataset.from_generator(batches, output_signature=signature)
                .apply(tf.data.experimental.assert_cardinality(n_batches)).prefetch(2))
    all_callbacks = list(callbacks)
    val_ds = None
    if len(validation):
        val_ds = as_tf_dataset(validation, names, target_mean=forecaster.target_mean, target_std=forecaster.target_std,
                               batch_size=params.batch_size, shuffle=False, level=window_level(validation, spec))
        all_callbacks.append(keras.callbacks.EarlyStopping(monitor="val_loss", patience=params.patience, restore_best_weights=True))
    history = forecaster.training_model.fit(train_ds, validation_data=val_ds, epochs=params.epochs,
                                            callbacks=all_callbacks, verbose=verbose, shuffle=False)
    forecaster.history = {k: [float(v) for v in vals] for k, vals in history.history.items()}
    return forecaster


def train_streamed(
    engine: "TableEngine",
    spec: WindowSpec,
    params: "ModelParams",
    *,
    version: int,
    buildings: Sequence[str],
    first_ts: pd.Timestamp,
    timezones: Mapping[str, str] | None,
    use_types: Mapping[str, str] | None,
    start: pd.Timestamp | None,
    train_end: pd.Timestamp | None,
    stride_h: int,
    validation_fraction: float,
    windows_per_epoch: int,
    shard_buildings: int,
    recent_since: pd.Timestamp | None = None,
    recent_weight: int = 1,
    scratch_dir: Path | None = None,
    callbacks: Sequence[Any] = (),
    verbose: int = 0,
) -> "TrainedModel":
    """Gold (pinned `version`) → per-building window shards → fit on a stratified sample per epoch → calibrate.

    Within `windows_per_epoch` the whole portfolio trains each epoch exactly as `train_model` trains it;
    above it each epoch draws `stratified_quotas` afresh and validation is a fixed stratified sample of the
    same relative size.
    """
    from ml.model import build_forecaster, calibrate_quantiles, fit
    from ml.pipeline import NoTrainingData, TrainedModel

    started = time.perf_counter()
    spec = portfolio_spec(engine, version, buildings, spec, start, train_end, first_ts, shard_buildings)
    directory = Path(tempfile.mkdtemp(prefix="wattflow-windows-", dir=scratch_dir))
    plan = stream_training_windows(
        engine, version, buildings, spec, timezones=timezones, use_types=use_types, start=start, train_end=train_end,
        stride_h=stride_h, validation_fraction=validation_fraction, shard_buildings=shard_buildings,
        directory=directory, recent_since=recent_since, recent_weight=recent_weight,
    )
    try:
        train_counts, validation_counts = plan.train_counts(), plan.validation_counts()
        n_train, n_validation = sum(train_counts.values()), sum(validation_counts.values())
        n_windows = sum(s.n_windows for s in plan.shards)
        if n_windows < 4:
            raise NoTrainingData(
                f"{n_windows} complete window(s) of {spec.lookback_h}+{spec.horizon_h} h before {train_end}; need at least 4"
            )
        if n_train <= windows_per_epoch:
            train, validation = plan.all_train(), plan.all_validation()
            forecaster = build_forecaster(spec, params, train)
            fit(forecaster, train, validation, list(callbacks), verbose=verbose)
            epoch_windows = len(train)
        else:
            quotas = stratified_quotas(train_counts, plan.use_types(), windows_per_epoch)
            # Validation keeps the share it has in the in-memory split, sampled once (epochs compare alike).
            validation_budget = int(np.ceil(windows_per_epoch * validation_fraction / max(1e-9, 1 - validation_fraction)))
            validation_quotas = stratified_quotas(validation_counts, plan.use_types(), validation_budget)
            validation = plan.sample(validation_quotas, np.random.default_rng(params.seed), "validation")

            def sample(epoch: int) -> Windows:
                return plan.sample(quotas, np.random.default_rng([params.seed, epoch]))

            forecaster = build_forecaster(spec, params, sample(0))
            epoch_windows = sum(quotas.values())
            fit_sampled(forecaster, sample, epoch_windows, validation, callbacks, verbose=verbose)
        calibrate_quantiles(forecaster, validation)
        val_losses = forecaster.history.get("val_loss") or forecaster.history.get("loss") or [float("nan")]
        log.info("trained from window shards", buildings=len(plan.store.shards), train_windows=n_train,
                 validation_windows=len(validation), windows_per_epoch=epoch_windows)
        return TrainedModel(
            forecaster=forecaster, spec=spec, params=params, train_end=train_end,
            n_train_windows=n_train, n_validation_windows=len(validation),
            best_val_loss=float(np.nanmin(val_losses)),
            epochs_run=len(forecaster.history.get("loss", [])),
            train_seconds=time.perf_counter() - started,
        )
    finally:
        plan.store.cleanup()
