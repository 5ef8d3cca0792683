"""The monitoring check chunk by chunk equals the check on the whole window: per-building residual drift and
accuracy merge exactly (sums within float rounding), the pooled input-drift sample does not depend on the
chunking or the row order storage returns, and the per-building quota bounds it."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from monitoring.assessment import MonitorJob, merge_assessment, monitor_chunk
from monitoring.check import assess
from lakehouse.simulator import retrofit
from monitoring.synthetic import TowtForecaster, portfolio_features, served_forecasts
from wattflow.settings import MonitorSettings

BUILDINGS = ("b01", "b02", "b03", "b04", "b05")  # the simulator's: Berlin office, London shop, New York school, ...
START = pd.Timestamp("2025-01-06", tz="UTC")
AS_OF = START + pd.Timedelta(days=49)
SERVED = START + pd.Timedelta(days=21)  # first served hour: the champion was trained before it
MODEL = "building_energy_lstm"


@pytest.fixture(scope="module")
def world():
    # the New York school's HVAC cut by 30% on day 44; the forecaster learned three weeks of January
    features = portfolio_features(BUILDINGS, str(START.date()), 50, seed=11, drift=(retrofit("b03", START + pd.Timedelta(days=44), 0.3),))
    model = TowtForecaster.fit(features, None, SERVED)
    forecasts = served_forecasts(features, model, start=SERVED, end=START + pd.Timedelta(days=50),
                                 model_name=MODEL, model_version="2")
    return features, forecasts


def chunked(features, forecasts, chunks, policy, quota=None):
    job = MonitorJob.at(AS_OF, policy, model_name=MODEL, model_version="2", data_since=SERVED,
                        quota=quota)
    parts = [monitor_chunk(features[features["building_id"].isin(c)], forecasts[forecasts["building_id"].isin(c)], policy, job)
             for c in chunks]
    return merge_assessment(pd.concat([p["buildings"] for p in parts], ignore_index=True),
                            pd.concat([p["samples"] for p in parts], ignore_index=True), policy, job)


def assert_same(ours, whole):
    a, b = dataclasses.asdict(ours.check), dataclasses.asdict(whole.check)
    for key in ("mae", "rmse", "cv_rmse", "nmbe"):  # portfolio sums: per-building sums added in another order
        assert a["accuracy"].pop(key) == pytest.approx(b["accuracy"].pop(key), abs=2e-6)
    assert a == b
    assert ours.input_drift.summary() == whole.input_drift.summary()
    assert ours.residual_drift.summary() == whole.residual_drift.summary()
    pd.testing.assert_frame_equal(ours.matched.reference, whole.matched.reference[ours.matched.reference.columns])
    pd.testing.assert_frame_equal(ours.residual_current, whole.residual_current)
    pd.testing.assert_frame_equal(ours.accuracy_pairs.reset_index(drop=True),
                                  whole.accuracy_pairs[ours.accuracy_pairs.columns].reset_index(drop=True), check_dtype=False)


def test_chunks_and_shuffled_rows_give_the_whole_window_check(world):
    features, forecasts = world
    policy = MonitorSettings()
    whole = assess(features, forecasts, as_of=AS_OF, model_name=MODEL, model_version="2", policy=policy,
                   data_since=SERVED)
    check = whole.check
    # the world is judged: b03's retrofit moved its residuals, the others held; accuracy over 7 days x 5 buildings
    assert check.drifted_buildings == ("b03",) and check.residual_drift_share == pytest.approx(0.2)
    assert check.accuracy.n_hours == 5 * 7 * 24 and set(check.building_accuracy) == set(BUILDINGS)
    assert check.input_coverage is not None and check.input_coverage > 0.5 and check.new_data_hours == 28 * 24
    assert len(whole.matched.current) == round(check.input_coverage * 5 * 7 * 24)
    assert len(whole.matched.reference) == policy.matched_draws * len(whole.matched.current)

    shuffled = features.sample(frac=1.0, random_state=1)
    for chunks in ((BUILDINGS,), (("b01", "b02"), ("b03", "b04"), ("b05",)), tuple((b,) for b in BUILDINGS)):
        assert_same(chunked(shuffled, forecasts.sample(frac=1.0, random_state=2), chunks, policy), whole)


def test_the_per_building_quota_bounds_the_samples_the_same_way_on_every_chunking(world):
    features, forecasts = world
    policy = MonitorSettings()
    whole = assess(features, forecasts, as_of=AS_OF, model_name=MODEL, model_version="2", policy=policy,
                   data_since=SERVED, quota=30)
    full = assess(features, forecasts, as_of=AS_OF, model_name=MODEL, model_version="2", policy=policy,
                  data_since=SERVED)
    per_building = whole.matched.current.groupby("building_id").size()
    assert (per_building <= 30).all() and len(per_building) == 5
    assert len(whole.matched.reference) == policy.matched_draws * len(whole.matched.current)
    assert whole.accuracy_pairs.groupby("building_id").size().tolist() == [30] * 5
    assert (whole.residual_current.notna().sum() == 30).all()
    # the decision's residual drift and accuracy never come from the sample: the same as without a quota
    assert whole.check.residual_drift_share == full.check.residual_drift_share
    assert whole.check.accuracy == full.check.accuracy and whole.check.building_accuracy == full.check.building_accuracy
    assert whole.check.input_coverage == full.check.input_coverage
    assert_same(chunked(features, forecasts, (("b01", "b02", "b03"), ("b04", "b05")), policy, quota=30), whole)
    assert np.isfinite(whole.input_drift.columns["energy_rel"].score)


def test_the_merged_portfolio_accuracy_is_the_pooled_ashrae_accuracy(world):
    from ml.metrics import accuracy

    features, forecasts = world
    whole = assess(features, forecasts, as_of=AS_OF, model_name=MODEL, model_version="2", policy=MonitorSettings())
    pairs = whole.accuracy_pairs  # every pair: no quota
    pooled = accuracy(pairs["energy_kwh"].to_numpy(), pairs["yhat_p50"].to_numpy())
    figures = whole.check.accuracy
    assert figures.n_hours == pooled.n_hours == len(pairs)
    for key in ("mae", "rmse", "cv_rmse", "nmbe"):
        assert getattr(figures, key) == pytest.approx(getattr(pooled, key), abs=1e-6)
