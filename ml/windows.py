"""Forecast windows cut from gold features: what the model saw before an origin and what it must predict.

Origins sit at local midnight of the building's timezone (the day-ahead forecast is issued then). For
each origin the *history* is the `lookback_h` hours before it (HISTORY_FEATURES), the *future* the
`horizon_h` hours from it (FUTURE_FEATURES: calendar and the weather forecast issued before the origin)
and the *target* `energy_kwh` over the horizon. Hours whose target is not valid (energy_valid False, a
gap, a null) are skipped in training and masked in metrics.

Pure numpy/pandas: the serving client imports `window_for_origin` and must not pay for TensorFlow.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from ml.spec import WindowSpec

# Actuals kept before each origin for the baselines (seasonal naive needs one week).
BASELINE_MEMORY_H = 168
# Training: a window learns from its valid target hours if at least this share of them is valid. Quality
# flags cluster (a humidity sensor saturating every humid morning flags those hours), so demanding every
# hour valid would drop whole seasons of windows.
TRAIN_MIN_VALID_SHARE = 0.5
# Serving: a lookback missing more than this share of its hours is refused rather than filled.
MAX_MISSING_HISTORY_FRACTION = 0.25


class WindowError(ValueError):
    """The frame cannot give the window asked for; the message names the building, column or hour."""


@dataclass(frozen=True)
class Windows:
    """A batch of forecast windows, aligned on the first axis."""

    history: np.ndarray  # float32 [n, lookback_h, n_history_features]
    future: np.ndarray  # float32 [n, horizon_h, n_future_features]
    target: np.ndarray  # float32 [n, horizon_h]; NaN where the actual is unknown
    valid: np.ndarray  # bool [n, horizon_h]: the target hour is usable (energy_valid and finite)
    actuals_before: np.ndarray  # float32 [n, BASELINE_MEMORY_H]: energy before the origin (inputs filled)
    building_id: np.ndarray  # object [n]
    origin: np.ndarray  # datetime64[ns] UTC [n]

    def __len__(self) -> int:
        return int(self.history.shape[0])

    def take(self, index: np.ndarray | Sequence[int] | slice) -> "Windows":
        return Windows(
            history=self.history[index],
            future=self.future[index],
            target=self.target[index],
            valid=self.valid[index],
            actuals_before=self.actuals_before[index],
            building_id=self.building_id[index],
            origin=self.origin[index],
        )

    @property
    def fully_valid(self) -> np.ndarray:
        """Windows whose every target hour is usable: the ones training may learn from."""
        return self.valid.all(axis=1)

    def target_hours(self) -> pd.DatetimeIndex:
        """UTC timestamp of every target hour, shape [n, horizon_h] flattened row-major."""
        horizon = self.target.shape[1]
        hours = self.origin.astype("datetime64[ns]")[:, None] + np.arange(horizon)[None, :].astype("timedelta64[h]")
        return pd.DatetimeIndex(hours.ravel(), tz="UTC")

    @staticmethod
    def concat(parts: Iterable["Windows"], spec: WindowSpec) -> "Windows":
        parts = [p for p in parts if len(p)]
        if not parts:
            return empty_windows(spec)
        return Windows(
            history=np.concatenate([p.history for p in parts]),
            future=np.concatenate([p.future for p in parts]),
            target=np.concatenate([p.target for p in parts]),
            valid=np.concatenate([p.valid for p in parts]),
            actuals_before=np.concatenate([p.actuals_before for p in parts]),
            building_id=np.concatenate([p.building_id for p in parts]),
            origin=np.concatenate([p.origin for p in parts]),
        )


def empty_windows(spec: WindowSpec) -> Windows:
    return Windows(
        history=np.zeros((0, spec.lookback_h, len(spec.history_features)), np.float32),
        future=np.zeros((0, spec.horizon_h, len(spec.future_features)), np.float32),
        target=np.zeros((0, spec.horizon_h), np.float32),
        valid=np.zeros((0, spec.horizon_h), bool),
        actuals_before=np.zeros((0, BASELINE_MEMORY_H), np.float32),
        building_id=np.zeros(0, object),
        origin=np.zeros(0, "datetime64[ns]"),
    )


def _require_columns(frame: pd.DataFrame, columns: Iterable[str]) -> None:
    missing = sorted({c for c in columns if c not in frame.columns})
    if missing:
        raise WindowError(f"gold features lack column(s) {missing} needed by the window spec")


def _utc(ts: pd.Series | pd.DatetimeIndex) -> pd.DatetimeIndex:
    index = pd.DatetimeIndex(ts)
    return index.tz_localize("UTC") if index.tz is None else index.tz_convert("UTC")


def hourly_grid(frame: pd.DataFrame, spec: WindowSpec) -> pd.DataFrame:
    """One building's rows on a complete UTC hourly index; missing hours become invalid targets.

    Inputs are filled forward then backward (a model input cannot be NaN); the target is not filled,
    and `energy_valid` is False on every hour that was missing or flagged.
    """
    ts = _utc(frame["ts"])
    if ts.has_duplicates:
        dup = ts[ts.duplicated()][0]
        raise WindowError(f"building {frame['building_id'].iloc[0]!r}: hour {dup} appears twice")
    columns = list(dict.fromkeys([*spec.history_features, *spec.future_features, spec.target]))
    data = frame[columns].copy()
    data.index = ts
    data = data.sort_index()
    data = data.reindex(pd.date_range(data.index[0], data.index[-1], freq="h"))
    valid = frame.set_index(ts)["energy_valid"].reindex(data.index) if "energy_valid" in frame else None
    actual = data[spec.target].astype("float64")
    valid_mask = np.isfinite(actual.to_numpy())
    if valid is not None:
        valid_mask &= valid.astype("boolean").fillna(False).to_numpy(dtype=bool)
    inputs = data.drop(columns=[spec.target]).astype("float64").ffill().bfill()
    inputs[spec.target] = actual.where(valid_mask).ffill().bfill()
    for column in columns:
        if inputs[column].isna().all():
            raise WindowError(
                f"building {frame['building_id'].iloc[0]!r}: column {column!r} has no value at all"
            )
    inputs["__actual"] = actual.where(valid_mask)
    inputs["__valid"] = valid_mask
    return inputs


def local_midnights(start: pd.Timestamp, end: pd.Timestamp, timezone: str) -> pd.DatetimeIndex:
    """UTC instants of local midnight for every local day touching [start, end], on the hour."""
    start_local, end_local = start.tz_convert(timezone), end.tz_convert(timezone)
    days = pd.date_range(start_local.normalize().tz_localize(None), end_local.normalize().tz_localize(None), freq="D")
    midnights = days.tz_localize(timezone, nonexistent="shift_forward", ambiguous=False).tz_convert("UTC")
    # Zones with a non-whole-hour offset (e.g. +05:30) issue at the first UTC hour after midnight.
    return midnights.ceil("h")


def origins_for(
    grid_index: pd.DatetimeIndex, spec: WindowSpec, timezone: str = "UTC", stride_h: int = 24,
    start: pd.Timestamp | None = None, end: pd.Timestamp | None = None,
) -> pd.DatetimeIndex:
    """Origins with a full lookback and horizon inside the grid, at local midnight (every `stride_h` hours from it)."""
    first, last = grid_index[0], grid_index[-1]
    midnights = local_midnights(first, last, timezone)
    if stride_h != 24:
        if 24 % stride_h:
            raise WindowError(f"stride_h={stride_h} must divide 24")
        offsets = pd.to_timedelta(np.arange(0, 24, stride_h), unit="h")
        midnights = pd.DatetimeIndex(sorted({m + o for m in midnights for o in offsets}))
    earliest = first + pd.Timedelta(hours=spec.lookback_h)
    latest = last - pd.Timedelta(hours=spec.horizon_h - 1)
    keep = (midnights >= earliest) & (midnights <= latest)
    if start is not None:
        keep &= midnights >= _utc(pd.DatetimeIndex([start]))[0]
    if end is not None:
        keep &= midnights < _utc(pd.DatetimeIndex([end]))[0]
    return midnights[keep]


def _windows_from_grid(
    building_id: str, grid: pd.DataFrame, origins: pd.DatetimeIndex, spec: WindowSpec
) -> Windows:
    if len(origins) == 0:
        return empty_windows(spec)
    positions = grid.index.get_indexer(origins)
    if (positions < 0).any():
        raise WindowError(f"building {building_id!r}: origin {origins[positions < 0][0]} is not on the hourly grid")
    if (positions < spec.lookback_h).any() or (positions + spec.horizon_h > len(grid)).any():
        bad = origins[(positions < spec.lookback_h) | (positions + spec.horizon_h > len(grid))][0]
        raise WindowError(
            f"building {building_id!r}: origin {bad} needs {spec.lookback_h} h before and {spec.horizon_h} h after it"
        )
    history_values = grid[list(spec.history_features)].to_numpy(np.float32)
    future_values = grid[list(spec.future_features)].to_numpy(np.float32)
    actual = grid["__actual"].to_numpy(np.float32)
    valid = grid["__valid"].to_numpy(bool)
    filled_energy = grid[spec.target].to_numpy(np.float32)
    hist_idx = positions[:, None] + np.arange(-spec.lookback_h, 0)[None, :]
    fut_idx = positions[:, None] + np.arange(spec.horizon_h)[None, :]
    memory_idx = positions[:, None] + np.arange(-BASELINE_MEMORY_H, 0)[None, :]
    memory = np.where(memory_idx >= 0, filled_energy[np.clip(memory_idx, 0, None)], np.nan).astype(np.float32)
    return Windows(
        history=history_values[hist_idx],
        future=future_values[fut_idx],
        target=actual[fut_idx],
        valid=valid[fut_idx],
        actuals_before=memory,
        building_id=np.full(len(origins), building_id, dtype=object),
        origin=origins.tz_convert("UTC").tz_localize(None).to_numpy("datetime64[ns]"),
    )


def make_windows(
    frame: pd.DataFrame,
    spec: WindowSpec,
    timezones: Mapping[str, str] | None = None,
    *,
    stride_h: int = 24,
    start: pd.Timestamp | None = None,
    end: pd.Timestamp | None = None,
    only_valid: bool = False,
    min_valid_share: float = 0.0,
) -> Windows:
    """Windows for every building in a gold frame, origins at local midnight (in `[start, end)` if given).

    `only_valid=True` drops windows with any unusable target hour; `min_valid_share` (training) drops
    those with fewer usable target hours than that share; otherwise they are kept and their bad hours
    flagged in `valid` (backtests mask them, training gives them no loss). `stride_h < 24` adds origins
    every `stride_h` hours from midnight: more training examples, same model.
    """
    if not 0.0 <= min_valid_share <= 1.0:
        raise WindowError(f"min_valid_share={min_valid_share} must lie in [0, 1]")
    _require_columns(frame, ["building_id", "ts", *spec.history_features, *spec.future_features, spec.target])
    timezones = timezones or {}
    parts = []
    for building_id, rows in frame.groupby("building_id", sort=True):
        if len(rows) < spec.lookback_h + spec.horizon_h:
            continue
        grid = hourly_grid(rows, spec)
        origins = origins_for(grid.index, spec, timezones.get(str(building_id), "UTC"), stride_h, start, end)
        windows = _windows_from_grid(str(building_id), grid, origins, spec)
        if only_valid and len(windows):
            windows = windows.take(np.flatnonzero(windows.fully_valid))
        elif min_valid_share > 0 and len(windows):
            windows = windows.take(np.flatnonzero(windows.valid.mean(axis=1) >= min_valid_share))
        parts.append(windows)
    return Windows.concat(parts, spec)


def window_for_origin(frame: pd.DataFrame, origin: pd.Timestamp | str, spec: WindowSpec) -> tuple[np.ndarray, np.ndarray]:
    """The model inputs for one building and origin: (history [1, lookback, n_hist], future [1, horizon, n_fut]).

    `frame` holds gold features of one building covering `lookback_h` hours before the origin and
    `horizon_h` hours from it (the future part needs only the calendar and forecast columns). Missing
    input values are filled from their neighbours, as in training.
    """
    if "building_id" not in frame:
        frame = frame.assign(building_id="?")
    buildings = frame["building_id"].unique()
    if len(buildings) != 1:
        raise WindowError(f"window_for_origin needs one building, got {sorted(map(str, buildings))}")
    origin_utc = _utc(pd.DatetimeIndex([pd.Timestamp(origin)]))[0]
    if origin_utc != origin_utc.floor("h"):
        raise WindowError(f"origin {origin_utc} is not on the hour")
    frame = frame.copy()
    if spec.target not in frame:
        frame[spec.target] = np.nan
    if "energy_valid" not in frame:
        frame["energy_valid"] = True
    ts = _utc(frame["ts"])
    lo, hi = origin_utc - pd.Timedelta(hours=spec.lookback_h), origin_utc + pd.Timedelta(hours=spec.horizon_h)
    frame = frame[(ts >= lo) & (ts < hi)]
    _require_columns(frame, ["ts", *spec.history_features, *spec.future_features])
    if frame.empty:
        raise WindowError(f"building {buildings[0]!r}: no rows between {lo} and {hi}")
    present = _utc(frame["ts"])
    future_hours = pd.date_range(origin_utc, hi - pd.Timedelta(hours=1), freq="h")
    history_hours = pd.date_range(lo, origin_utc - pd.Timedelta(hours=1), freq="h")
    absent = future_hours.difference(present)
    if len(absent):
        raise WindowError(
            f"building {buildings[0]!r}: origin {origin_utc} lacks {len(absent)} forecast hour(s) of features, first {absent[0]}"
        )
    # History gaps are filled as in training, but a mostly empty lookback is no basis for a forecast.
    absent = history_hours.difference(present)
    if len(absent) > MAX_MISSING_HISTORY_FRACTION * spec.lookback_h or history_hours[-1] in absent:
        raise WindowError(
            f"building {buildings[0]!r}: origin {origin_utc} lacks {len(absent)} of {spec.lookback_h} history hour(s)"
            f" (the hour before the origin must be there), first {absent[0]}"
        )
    grid = hourly_grid(frame, spec)
    expected = pd.date_range(lo, hi - pd.Timedelta(hours=1), freq="h")
    grid = grid.reindex(expected).ffill().bfill()
    windows = _windows_from_grid(str(buildings[0]), grid, pd.DatetimeIndex([origin_utc]), spec)
    return windows.history, windows.future


def chronological_split(windows: Windows, validation_fraction: float) -> tuple[Windows, Windows]:
    """Train on the earlier origins, validate on the later ones (never shuffle time across the split)."""
    train, validation = chronological_split_index(windows.origin, validation_fraction)
    return windows.take(train), windows.take(validation)


def chronological_split_index(origin: np.ndarray, validation_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """`chronological_split` on origins alone: (train positions, validation positions)."""
    if len(origin) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    cut = np.quantile(origin.astype("int64"), 1.0 - validation_fraction)
    late = origin.astype("int64") > cut
    if late.all() or not late.any():
        order = np.argsort(origin, kind="stable")
        n_val = max(1, int(round(len(origin) * validation_fraction)))
        return order[:-n_val], order[-n_val:]
    return np.flatnonzero(~late), np.flatnonzero(late)


def blocked_split(windows: Windows, validation_fraction: float, block_days: int = 7) -> tuple[Windows, Windows]:
    """Validate on whole blocks of days spread over the period (every k-th week), train on the rest.

    Unlike a single cut at the end, training keeps the most recent weeks, the ones most like the days
    that will be forecast (the season the backtest and the next forecasts fall in); validation still
    sees every season. The day before and after each validation block belongs to neither set, so no
    target hour of a day-ahead window lands in both. With fewer than two validation blocks of data,
    falls back to `chronological_split`.
    """
    train, validation = blocked_split_index(windows.origin, validation_fraction, block_days)
    return windows.take(train), windows.take(validation)


def blocked_split_index(origin: np.ndarray, validation_fraction: float, block_days: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """`blocked_split` on origins alone, (train positions, validation positions): the split depends on nothing
    else, so a portfolio's windows can be split from their origins while the windows stay on disk."""
    if len(origin) == 0 or validation_fraction <= 0:
        return np.arange(len(origin)), np.zeros(0, dtype=np.int64)
    every = max(2, int(round(1.0 / validation_fraction)))
    day = origin.astype("datetime64[D]").astype(np.int64)
    day = day - day.min()
    if day.max() < 2 * every * block_days:
        return chronological_split_index(origin, validation_fraction)
    block = day // block_days
    validation = block % every == every - 1
    first, last = day % block_days == 0, day % block_days == block_days - 1
    gap = (last & ((block + 1) % every == every - 1)) | (first & ((block - 1) % every == every - 1))
    return np.flatnonzero(~validation & ~gap), np.flatnonzero(validation)


def as_tf_dataset(
    windows: Windows,
    output_names: Sequence[str],
    *,
    target_mean: float,
    target_std: float,
    batch_size: int,
    shuffle: bool,
    seed: int = 0,
    level: np.ndarray | None = None,
):
    """A `tf.data.Dataset` of ({history, future}, {output: standardized target}) for `model.fit`.

    With `level` ([n, 1]) the target is taken relative to it before standardizing.
    """
    import tensorflow as tf

    from ml.spec import INPUT_FUTURE, INPUT_HISTORY

    # Hours that are not valid stay NaN: the loss skips them.
    target = np.where(windows.valid, windows.target, np.nan) / (1.0 if level is None else level)
    z = ((target - target_mean) / target_std).astype(np.float32)
    inputs = {INPUT_HISTORY: windows.history, INPUT_FUTURE: windows.future}
    dataset = tf.data.Dataset.from_tensor_slices((inputs, {name: z for name in output_names}))
    if shuffle:
        dataset = dataset.shuffle(len(windows), seed=seed, reshuffle_each_iteration=True)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)
