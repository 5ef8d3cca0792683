"""Closing the loop with real models: after a level shift, the retrained champion beats the old one on
the drifted period, and `evaluate_retrain` records it (Keras models, MLflow registry, Delta)."""

from __future__ import annotations

import json

import pandas as pd
import pyarrow as pa
import pytest

from lakehouse.engine import get_engine
from lakehouse.schemas import FEATURES, RETRAIN_OUTCOMES
from ml.model import ModelParams
from monitoring.monitor import evaluate_retrain
from ml.pipeline import train_and_register
from ml.spec import WindowSpec
from lakehouse.simulator import retrofit
from ml.synthetic import synthetic_gold_features

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SPEC = WindowSpec(lookback_h=48, horizon_h=24)
# Ten epochs: a simulated office is no sine wave; at three the small model is no better than its baselines.
PARAMS = ModelParams(units=16, dropout=0.0, learning_rate=5e-3, batch_size=32, epochs=10, patience=3)


def test_retrained_champion_beats_the_old_one_after_a_retrofit_and_the_outcome_is_recorded(wattflow_home, monkeypatch):
    from wattflow.settings import get_settings, reset_settings

    monkeypatch.setenv("WATTFLOW_MODEL__BACKTEST_DAYS", "7")
    monkeypatch.setenv("WATTFLOW_MODEL__TRAIN_ORIGIN_STRIDE_H", "12")
    monkeypatch.setenv("WATTFLOW_MODEL__MAX_CV_RMSE", "0.6")
    monkeypatch.setenv("WATTFLOW_MODEL__MAX_ABS_NMBE", "0.3")
    reset_settings()
    settings = get_settings()
    engine = get_engine(settings)

    # b01, the simulator's Berlin office, heats with heat pumps: in winter HVAC is about half its load. The
    # retrofit is planted in the simulator: from drift_start its HVAC uses 60% less (the load ~30% less).
    start = pd.Timestamp("2024-01-01", tz="Europe/Berlin").tz_convert("UTC")
    drift_start = start + pd.Timedelta(days=35)
    frame = synthetic_gold_features(building_ids=("b01",), days=56, drift=(retrofit("b01", drift_start.to_pydatetime(), 0.6),))
    assert pd.Timestamp(frame["ts"].min()) == start
    after = frame["ts"] >= drift_start
    # the old champion is trained while the table ends at the retrofit, the new one once it holds three weeks more
    engine.upsert(FEATURES, pa.Table.from_pandas(frame[~after], preserve_index=False))
    old = train_and_register(engine, settings, params=PARAMS, spec=SPEC)
    engine.upsert(FEATURES, pa.Table.from_pandas(frame[after], preserve_index=False))
    new = train_and_register(engine, settings, params=PARAMS, spec=SPEC)
    assert old.decision.promoted and new.decision.promoted, new.decision.reason

    outcome = evaluate_retrain(engine, settings, drift_start)
    assert (outcome.old_version, outcome.new_version) == (old.version, new.version)
    assert outcome.period_start >= drift_start.to_pydatetime() and outcome.n_hours >= 14 * 24
    assert outcome.new_mae < outcome.old_mae and outcome.improved and outcome.improvement > 0.05

    record = engine.read(RETRAIN_OUTCOMES).to_pandas()
    assert len(record) == 1 and bool(record["improved"].iloc[0])
    assert record["new_mae"].iloc[0] == pytest.approx(outcome.new_mae)
    assert json.loads(record["details"].iloc[0])["per_building"]["b01"]["new_mae"] < json.loads(record["details"].iloc[0])["per_building"]["b01"]["old_mae"]
    version = engine.version(RETRAIN_OUTCOMES)
    evaluate_retrain(engine, settings, drift_start)  # re-run: same key, same figures, no new version
    assert engine.version(RETRAIN_OUTCOMES) == version
    reset_settings()
