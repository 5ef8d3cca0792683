"""Where training stops and the gate's backtest starts: the usual holdout, and a monitoring-requested retrain's."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ml.pipeline import default_train_end, retrain_train_end


def _hours(start: str, end: str) -> pd.DataFrame:
    return pd.DataFrame({"ts": pd.date_range(start, end, freq="h", inclusive="left", tz="UTC")})


def test_default_holdout_is_the_last_backtest_days() -> None:
    frame = _hours("2024-01-01", "2024-02-01")  # last hour 2024-01-31 23:00
    assert default_train_end(frame, 14) == pd.Timestamp("2024-01-17", tz="UTC")


@pytest.mark.parametrize(
    ("since", "expected"),
    [
        # 7 days of new data: judged on the newest 4 (round(3.5)), learns from the 3 before.
        ("2024-01-25", "2024-01-28"),
        # 3 days of new data: the minimum holdout of 2 days; one new day to learn from.
        ("2024-01-29", "2024-01-30"),
        # 40 days of new data: never more than the usual backtest.
        ("2023-12-22", "2024-01-18"),
        # No new data at all: still a minimum holdout, so the gate has hours to judge.
        ("2024-02-05", "2024-01-30"),
    ],
)
def test_retrain_learns_from_the_older_part_of_the_new_data(since: str, expected: str) -> None:
    frame = _hours("2023-12-01", "2024-02-01")  # exclusive end 2024-02-01
    end = retrain_train_end(frame, 14, pd.Timestamp(since, tz="UTC"), holdout_share=0.5, min_holdout_days=2)
    assert end == pd.Timestamp(expected, tz="UTC")


def test_retrain_holdout_accepts_naive_timestamps_as_utc() -> None:
    frame = _hours("2024-01-01", "2024-02-01")
    assert retrain_train_end(frame, 28, pd.Timestamp("2024-01-25"), holdout_share=0.5, min_holdout_days=2) == pd.Timestamp("2024-01-28", tz="UTC")


def test_requested_retrain_trains_on_all_the_news_and_validates_on_older_windows() -> None:
    from ml.pipeline import recency_split
    from ml.spec import WindowSpec
    from ml.synthetic import synthetic_gold_features
    from ml.windows import make_windows

    spec = WindowSpec(lookback_h=48, horizon_h=24)
    windows = make_windows(synthetic_gold_features(days=30, seed=3), spec, stride_h=6)
    since = pd.Timestamp(windows.origin.max(), tz="UTC") - pd.Timedelta(days=3)
    target_end = pd.to_datetime(windows.origin + np.timedelta64(24, "h"), utc=True)
    news = int((target_end > since).sum())
    assert 0 < news < len(windows)

    train, validation = recency_split(windows, spec, since, validation_fraction=0.15, recent_weight=4)

    # Every new window trains, four times over; none validates, and validation holds only old windows.
    assert int((pd.to_datetime(train.origin + np.timedelta64(24, "h"), utc=True) > since).sum()) == 4 * news
    assert len(validation) > 0
    assert (pd.to_datetime(validation.origin + np.timedelta64(24, "h"), utc=True) <= since).all()
    # Old windows are split (a time cut on a month), never duplicated.
    old_train = int((pd.to_datetime(train.origin + np.timedelta64(24, "h"), utc=True) <= since).sum())
    assert old_train + len(validation) == len(windows) - news


def test_a_requested_retrain_skips_the_study_and_a_scheduled_one_does_not() -> None:
    from wattflow.pipeline import tune
    from wattflow.settings import get_settings

    requested = tune(5, 60, reason="retrain requested by monitoring", settings=get_settings())
    assert requested["trials"] == 0 and requested["best_params"] is None
    assert "champion's configuration" in requested["skipped"]
    assert tune(0, 60, reason="scheduled", settings=get_settings()) == {"best_params": None, "trials": 0}
