"""The monitoring check on the local runner: gold and forecasts in Delta tables (delta-rs), read and judged
chunk by chunk (two buildings a chunk), equals the check on the whole window held in one process."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest

from lakehouse.engine import get_engine
from lakehouse.schemas import FEATURES, FORECASTS
from monitoring.assessment import assess_portfolio
from monitoring.check import assess
from lakehouse.simulator import retrofit
from monitoring.synthetic import TowtForecaster, portfolio_features, served_forecasts, to_contract_table
from wattflow.settings import ComputeSettings

pytestmark = pytest.mark.integration

START = pd.Timestamp("2025-01-06", tz="UTC")
AS_OF = START + pd.Timedelta(days=42)


def test_the_local_runner_judges_chunk_by_chunk_as_the_whole_window(settings):
    settings = settings.model_copy(update={"compute": ComputeSettings(runner="local", chunk_buildings=2)})
    buildings = ("b01", "b02", "b03", "b04", "b05")
    # the New York school's HVAC cut by 30% on day 37; the forecaster learned three weeks of January
    features = portfolio_features(buildings, str(START.date()), 43, seed=5, drift=(retrofit("b03", START + pd.Timedelta(days=37), 0.3),))
    model = TowtForecaster.fit(features, None, START + pd.Timedelta(days=21))
    forecasts = served_forecasts(features, model, start=START + pd.Timedelta(days=21), end=START + pd.Timedelta(days=43),
                                 model_name=settings.model.model_name, model_version="4")
    engine = get_engine(settings)
    engine.upsert(FEATURES, to_contract_table(features, FEATURES))
    engine.upsert(FORECASTS, to_contract_table(forecasts, FORECASTS))

    kwargs = dict(as_of=AS_OF, model_name=settings.model.model_name, model_version="4", data_since=START + pd.Timedelta(days=21))
    ours = assess_portfolio(engine, settings, **kwargs)
    whole = assess(features, forecasts, policy=settings.monitor, **kwargs)
    assert ours.check.drifted_buildings == ("b03",) and ours.check.accuracy.n_hours == 5 * 7 * 24
    a, b = dataclasses.asdict(ours.check), dataclasses.asdict(whole.check)
    for key in ("mae", "rmse", "cv_rmse", "nmbe"):
        assert a["accuracy"].pop(key) == pytest.approx(b["accuracy"].pop(key), abs=2e-6)
    assert a == b
    assert ours.input_drift.summary() == whole.input_drift.summary()
    assert ours.residual_drift.summary() == whole.residual_drift.summary()
    pd.testing.assert_frame_equal(ours.residual_reference, whole.residual_reference)
