"""Seasonality-aware drift: matched references, residual drift per building, Evidently parity and reports."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from monitoring.drift import (
    DriftInputError,
    column_drift,
    drift_report,
    accuracy_report,
    judge_input_drift,
    judge_residual_drift,
    matched_reference,
    served_pairs,
)
from monitoring.synthetic import TowtForecaster, portfolio_features, served_forecasts

START = pd.Timestamp("2025-01-06", tz="UTC")
AUTUMN = pd.Timestamp("2025-10-06", tz="UTC")  # the simulated climate cools: the last week is about 5 °C colder than the four before


def _frame(building, how, temperature, energy):
    return pd.DataFrame({"building_id": building, "day_of_week": np.asarray(how) // 24, "hour_of_day": np.asarray(how) % 24,
                         "temperature": temperature, "energy_kwh": energy})


def test_matched_reference_draws_from_the_same_building_hour_of_week_and_temperature_bin():
    reference = _frame(["a", "a", "a", "b"], [10, 10, 11, 10], [1.0, 9.0, 1.0, 1.0], [1.0, 2.0, 3.0, 4.0])
    current = _frame(["a", "a", "b"], [10, 10, 50], [2.0, 30.0, 1.0], [0.0, 0.0, 0.0])
    sample = matched_reference(reference, current, temperature_bin_c=4.0, draws=5, seed=1)
    # only the first current row (a, hour 10, 0-4 °C) has a match, and only reference row 0 fits it
    assert sample.coverage == pytest.approx(1 / 3)
    assert len(sample.current) == 1 and sample.reference["energy_kwh"].tolist() == [1.0] * 5


def test_a_season_change_is_not_input_drift_but_a_change_of_behaviour_is():
    features = portfolio_features(("b01", "b02", "b03"), str(AUTUMN.date()), 35, seed=4)
    reference, current = features[features["ts"] < AUTUMN + pd.Timedelta(days=28)], features[features["ts"] >= AUTUMN + pd.Timedelta(days=28)]
    kwargs = dict(temperature_bin_c=4.0, draws=3, min_coverage=0.3, method="wasserstein", threshold=0.1, drift_share_threshold=0.5,
                  columns=("energy_rel", "occupancy_rel"))
    assert reference["temperature"].mean() - current["temperature"].mean() > 3
    calm, _ = judge_input_drift(reference, current, **kwargs)
    assert calm.drift_share is not None and not calm.drift_detected and calm.columns["energy_rel"].score < 0.1
    # the raw comparison, unmatched, sees the season in the energy
    raw = column_drift(reference["energy_kwh"] / reference["energy_kwh"].mean(), current["energy_kwh"] / reference["energy_kwh"].mean(),
                       method="wasserstein", threshold=0.1)
    assert raw.drifted
    changed = current.assign(energy_kwh=current["energy_kwh"] * 0.7)
    drifted, _ = judge_input_drift(reference, changed, **kwargs)
    assert drifted.columns["energy_rel"].drifted and drifted.columns["energy_rel"].score > 0.3


def test_residual_drift_is_per_building_and_needs_a_reference():
    # three weeks of January to learn from (two leave the Berlin office's weather response too uncertain), then
    # three weeks of served forecasts as the reference and the last week, where b02 uses 15% less, as current
    features = portfolio_features(("b01", "b02"), str(START.date()), 49, seed=5)
    model = TowtForecaster.fit(features, None, START + pd.Timedelta(days=21))
    forecasts = served_forecasts(features, model, start=START + pd.Timedelta(days=21), end=START + pd.Timedelta(days=49))
    actual = features.copy()
    late = actual["ts"] >= START + pd.Timedelta(days=42)
    actual.loc[late & (actual["building_id"] == "b02"), "energy_kwh"] *= 0.85
    pairs = served_pairs(forecasts, actual)
    reference, current = pairs[(pairs["ts"] < START + pd.Timedelta(days=42))], pairs[pairs["ts"] >= START + pd.Timedelta(days=42)]
    judgement, ref_wide, cur_wide = judge_residual_drift(reference, current, method="wasserstein", threshold=0.5,
                                                         min_reference_hours=72, min_buildings=1)
    assert judgement.drifted_columns == ["b02"] and judgement.drift_share == 0.5 and judgement.drift_detected
    assert judgement.extra["current_mean_residual_rel"]["b02"] < -0.1
    assert list(ref_wide.columns) == ["b01", "b02"] and len(cur_wide) == 7 * 24
    none, _, _ = judge_residual_drift(reference.iloc[0:0], current, method="wasserstein", threshold=0.5,
                                      min_reference_hours=72, min_buildings=1)
    assert none.drift_share is None and not none.drift_detected and "no building" in none.note


def test_served_pairs_take_the_latest_issue_and_drop_fallbacks():
    ts = pd.Timestamp("2025-01-02 05:00", tz="UTC")
    forecasts = pd.DataFrame({
        "building_id": ["a", "a", "a"], "ts": [ts, ts, ts + pd.Timedelta(hours=1)],
        "issued_at": [ts - pd.Timedelta(hours=29), ts - pd.Timedelta(hours=5), ts - pd.Timedelta(hours=6)],
        "yhat_p50": [1.0, 2.0, 3.0], "model_version": ["1", "1", "1"], "model_name": "m", "is_fallback": [False, False, True],
    })
    actuals = pd.DataFrame({"building_id": ["a", "a"], "ts": [ts, ts + pd.Timedelta(hours=1)], "energy_kwh": [2.5, 3.5],
                            "energy_valid": [True, True]})
    pairs = served_pairs(forecasts, actuals, model_name="m")
    assert pairs["yhat_p50"].tolist() == [2.0] and pairs["energy_kwh"].tolist() == [2.5]
    with pytest.raises(DriftInputError, match="issued_at"):
        served_pairs(forecasts.drop(columns=["issued_at"]), actuals)


def test_our_scores_are_evidentlys_and_reports_are_saved(tmp_path):
    from evidently.legacy.calculations.stattests.registry import get_stattest
    from evidently.legacy.core import ColumnType

    rng = np.random.default_rng(0)
    reference, current = pd.Series(rng.normal(0, 1, 2000)), pd.Series(rng.normal(0.3, 1.2, 500))
    ours = column_drift(reference, current, method="wasserstein", threshold=0.1)
    theirs = get_stattest(reference, current, ColumnType.Numerical, "wasserstein")(reference, current, ColumnType.Numerical, 0.1)
    assert ours.score == pytest.approx(theirs.drift_score) and ours.drifted == theirs.drifted

    features = portfolio_features(("b01", "b02"), str(START.date()), 35, seed=6)
    judgement, sample = judge_input_drift(
        features[features["ts"] < START + pd.Timedelta(days=28)], features[features["ts"] >= START + pd.Timedelta(days=28)],
        temperature_bin_c=4.0, draws=3, min_coverage=0.3, method="wasserstein", threshold=0.1, drift_share_threshold=0.5,
    )
    saved = drift_report(judgement, sample.reference, sample.current, tmp_path)
    assert saved.html_path.stat().st_size > 10_000 and saved.json_path.exists()
    for column, drift in judgement.columns.items():
        assert saved.values[f"ValueDrift:{column}"] == pytest.approx(drift.score)
    assert saved.values["DriftedColumnsCount"]["share"] == pytest.approx(judgement.drift_share)
    assert json.loads(saved.json_path.read_text())["metrics"]
    pairs = pd.DataFrame({"energy_kwh": [10.0, 12.0, 14.0, 9.0], "yhat_p50": [11.0, 12.0, 13.0, 9.0]})
    accuracy = accuracy_report(pairs, tmp_path)
    assert accuracy.values["MAE"]["mean"] == pytest.approx(0.5) and accuracy.html_path.exists()
