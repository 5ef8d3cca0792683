"""Windows: shapes, origins at local midnight, no leakage across the origin, masks, baselines."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ml.baselines import persistence_24h, seasonal_naive_168h
from ml.spec import FUTURE_FEATURES, HISTORY_FEATURES, WindowSpec
from ml.synthetic import building_timezones, synthetic_gold_features
from ml.windows import WindowError, as_tf_dataset, blocked_split, chronological_split, make_windows, window_for_origin

SPEC = WindowSpec(lookback_h=48, horizon_h=24)
# The simulator's buildings: b01 is in Berlin, b02 in London (UTC in winter), b03 in New York.
LONDON = building_timezones(("b02",))


def _counting_frame(days: int = 12) -> pd.DataFrame:
    """Every feature equals the hour's index, so a window's values say exactly which hours it holds."""
    frame = synthetic_gold_features(("b02",), days=days)
    index = np.arange(len(frame), dtype=float)
    for column in {*HISTORY_FEATURES, *FUTURE_FEATURES}:
        frame[column] = index
    return frame


def test_shapes_and_origins_at_local_midnight() -> None:
    frame = synthetic_gold_features(("b01",), days=10)
    windows = make_windows(frame, SPEC, building_timezones(("b01",)))
    # 10 local days; the first 2 serve as lookback, the last origin needs a full horizon: 8 origins.
    assert len(windows) == 8
    assert windows.history.shape == (8, 48, len(HISTORY_FEATURES))
    assert windows.future.shape == (8, 24, len(FUTURE_FEATURES))
    assert windows.target.shape == windows.valid.shape == (8, 24)
    local = pd.DatetimeIndex(windows.origin, tz="UTC").tz_convert("Europe/Berlin")
    assert (local.hour == 0).all() and (local.minute == 0).all()
    assert windows.history.dtype == np.float32 and windows.future.dtype == np.float32


def test_no_leakage_history_before_origin_future_from_origin() -> None:
    frame = _counting_frame()
    windows = make_windows(frame, SPEC, LONDON)
    ts = pd.DatetimeIndex(frame["ts"])
    for i in range(len(windows)):
        origin_pos = ts.get_loc(pd.Timestamp(windows.origin[i], tz="UTC"))
        history_hours = windows.history[i, :, HISTORY_FEATURES.index("temperature")]
        future_hours = windows.future[i, :, FUTURE_FEATURES.index("forecast_temperature")]
        np.testing.assert_array_equal(history_hours, np.arange(origin_pos - 48, origin_pos))
        np.testing.assert_array_equal(future_hours, np.arange(origin_pos, origin_pos + 24))
        assert history_hours.max() < origin_pos  # nothing at or after the origin in the history
        np.testing.assert_array_equal(windows.target[i], np.arange(origin_pos, origin_pos + 24))


def test_invalid_hours_skipped_for_training_and_masked_for_scoring() -> None:
    frame = synthetic_gold_features(("b02",), days=10)
    bad = frame.index[5 * 24 + 3]  # hour 03 of day 5
    frame.loc[bad, "energy_valid"] = False
    all_windows = make_windows(frame, SPEC, LONDON)
    training = make_windows(frame, SPEC, LONDON, only_valid=True)
    assert len(training) == len(all_windows) - 1
    flagged = ~all_windows.valid
    assert flagged.sum() == 1
    row, step = np.argwhere(flagged)[0]
    assert step == 3 and pd.Timestamp(all_windows.origin[row]) == pd.Timestamp("2024-01-06")


def test_training_keeps_partly_valid_windows_and_their_bad_hours_carry_no_target() -> None:
    frame = synthetic_gold_features(("b02",), days=10)
    frame.loc[frame.index[5 * 24 + 3 : 5 * 24 + 9], "energy_valid"] = False  # 6 hours of day 5
    frame.loc[frame.index[7 * 24 : 7 * 24 + 20], "energy_valid"] = False  # 20 hours of day 7
    all_windows = make_windows(frame, SPEC, LONDON)
    half = make_windows(frame, SPEC, LONDON, min_valid_share=0.5)
    assert len(half) == len(all_windows) - 1  # day 7 (4 of 24 valid) goes, day 5 (18 of 24) stays
    day5 = np.flatnonzero(half.origin == np.datetime64("2024-01-06"))[0]
    assert half.valid[day5].sum() == 18
    dataset = as_tf_dataset(half, ["p50"], target_mean=0.0, target_std=1.0, batch_size=len(half), shuffle=False)
    _, targets = next(iter(dataset))
    target = targets["p50"].numpy()
    np.testing.assert_array_equal(np.isnan(target), ~half.valid)
    with pytest.raises(WindowError, match="min_valid_share=1.5"):
        make_windows(frame, SPEC, min_valid_share=1.5)


def test_missing_hours_become_invalid_targets_and_filled_inputs() -> None:
    frame = synthetic_gold_features(("b02",), days=10).drop(index=range(6 * 24 + 10, 6 * 24 + 13))
    windows = make_windows(frame, SPEC, LONDON)
    assert (~windows.valid).sum() == 3
    assert np.isfinite(windows.history).all() and np.isfinite(windows.future).all()


def test_missing_column_is_named() -> None:
    frame = synthetic_gold_features(days=5).drop(columns=["forecast_humidity"])
    with pytest.raises(WindowError, match="forecast_humidity"):
        make_windows(frame, SPEC)


def test_window_for_origin_matches_training_windows() -> None:
    frame = synthetic_gold_features(("b03",), days=10)
    windows = make_windows(frame, SPEC, building_timezones(("b03",)))
    origin = pd.Timestamp(windows.origin[3], tz="UTC")
    history, future = window_for_origin(frame, origin, SPEC)
    np.testing.assert_array_equal(history[0], windows.history[3])
    np.testing.assert_array_equal(future[0], windows.future[3])
    # A missing history hour is filled as in training; a missing forecast hour is refused.
    history_gap, _ = window_for_origin(frame[frame["ts"] != origin - pd.Timedelta(hours=5)], origin, SPEC)
    assert np.isfinite(history_gap).all()
    with pytest.raises(WindowError, match="lacks 1 forecast hour"):
        window_for_origin(frame[frame["ts"] != origin + pd.Timedelta(hours=5)], origin, SPEC)


def test_baselines_repeat_yesterday_and_last_week() -> None:
    frame = _counting_frame(days=12)
    windows = make_windows(frame, SPEC, LONDON)
    ts = pd.DatetimeIndex(frame["ts"])
    i = len(windows) - 1
    origin_pos = ts.get_loc(pd.Timestamp(windows.origin[i], tz="UTC"))
    np.testing.assert_array_equal(persistence_24h(windows)[i], np.arange(origin_pos - 24, origin_pos))
    np.testing.assert_array_equal(seasonal_naive_168h(windows)[i], np.arange(origin_pos - 168, origin_pos - 144))
    # Without a week of actuals before the origin the seasonal baseline has nothing to say.
    assert np.isnan(seasonal_naive_168h(windows)[0]).all()


def test_chronological_split_keeps_time_order() -> None:
    windows = make_windows(synthetic_gold_features(("b02",), days=30), SPEC, stride_h=6)
    train, validation = chronological_split(windows, 0.2)
    assert len(train) + len(validation) == len(windows)
    assert train.origin.max() < validation.origin.min()


def test_blocked_split_validates_on_weeks_spread_over_the_period() -> None:
    # Origins at UTC midnight (no timezones given): blocks are cut on UTC days, so 200 days make whole blocks.
    windows = make_windows(synthetic_gold_features(("b02",), days=200), SPEC, stride_h=6)
    train, validation = blocked_split(windows, 0.15)
    assert 0.1 < len(validation) / len(windows) < 0.16
    train_days = set(train.origin.astype("datetime64[D]").tolist())
    validation_days = set(validation.origin.astype("datetime64[D]").tolist())
    assert not train_days & validation_days
    # Validation covers the early, middle and late period; training keeps the last weeks.
    span = windows.origin.max() - windows.origin.min()
    position = (validation.origin - windows.origin.min()) / span
    assert position.min() < 0.25 and position.max() > 0.75
    assert train.origin.max() > validation.origin.max()
    # No hour is a target in both sets: the day next to each validation block is left out.
    def target_hours(w):
        return set(w.target_hours().asi8.tolist())

    assert not target_hours(train) & target_hours(validation)


def test_blocked_split_falls_back_to_a_time_cut_on_short_periods() -> None:
    windows = make_windows(synthetic_gold_features(("b02",), days=40), SPEC, stride_h=6)
    train, validation = blocked_split(windows, 0.2)
    assert len(train) + len(validation) == len(windows)
    assert train.origin.max() < validation.origin.min()
