"""ASHRAE Guideline 14 metrics and skill against hand-computed values."""

from __future__ import annotations

import math

import numpy as np

from ml.metrics import accuracy, per_horizon, skill


def test_metrics_match_hand_computation() -> None:
    actual = np.array([10.0, 20.0, 30.0, 40.0])
    forecast = np.array([12.0, 18.0, 33.0, 40.0])
    # errors y - ŷ: -2, 2, -3, 0; mean y = 25; Σe² = 17; Σe = -3
    acc = accuracy(actual, forecast, p=1)
    assert acc.n_hours == 4
    assert math.isclose(acc.mae, 7 / 4)
    assert math.isclose(acc.rmse, math.sqrt(17 / 4))
    assert math.isclose(acc.cv_rmse, math.sqrt(17 / 3) / 25)
    assert math.isclose(acc.nmbe, -3 / (3 * 25))  # over-forecast: negative (measured minus predicted)
    assert math.isclose(acc.mape, (0.2 + 0.1 + 0.1 + 0.0) / 4)
    p0 = accuracy(actual, forecast, p=0)
    assert math.isclose(p0.cv_rmse, math.sqrt(17 / 4) / 25)
    assert math.isclose(p0.nmbe, -3 / (4 * 25))


def test_mask_and_zeros() -> None:
    actual = np.array([0.0, 10.0, np.nan, 20.0])
    forecast = np.array([1.0, 11.0, 5.0, 18.0])
    valid = np.array([True, True, True, False])
    acc = accuracy(actual, forecast, valid, p=0)
    assert acc.n_hours == 2  # NaN actual and the invalid hour drop out
    assert math.isclose(acc.mae, 1.0)
    assert math.isclose(acc.mape, 0.1)  # the zero actual is skipped for MAPE only


def test_skill_and_per_horizon() -> None:
    actual = np.array([[10.0, 10.0], [20.0, 20.0]])
    model = np.array([[11.0, 10.0], [19.0, 20.0]])
    baseline = np.array([[12.0, 14.0], [18.0, 16.0]])
    valid = np.ones_like(actual, dtype=bool)
    s = skill(accuracy(actual, model, valid), accuracy(actual, baseline, valid))
    assert math.isclose(s["mae"], 1 - 0.5 / 3.0)
    steps = per_horizon(actual, model, valid, p=0)
    assert [a.mae for a in steps] == [1.0, 0.0]
