"""Training from window shards streamed out of gold (ml/training_stream.py): the stratified quotas, the
sample each epoch draws, and the promise that a portfolio within the budget trains exactly as before."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from lakehouse.engine import get_engine
from lakehouse.schemas import FEATURES
from ml.model import ModelParams
from ml.pipeline import train_model
from ml.spec import WindowSpec
from lakehouse.simulator.portfolio import build_registry
from ml.synthetic import synthetic_gold_features
from ml.training_stream import stratified_quotas, stream_training_windows, train_streamed, tuning_buildings, water_fill

pytestmark = pytest.mark.integration

SPEC = WindowSpec(lookback_h=48, horizon_h=24)
PARAMS = ModelParams(units=8, dropout=0.0, learning_rate=5e-3, batch_size=64, epochs=1, patience=2, encoder_hours=24)
# The simulator's Berlin buildings (one timezone, so every building has the same UTC-midnight origins):
# three offices and a school.
OFFICES, SCHOOL = ("b01", "b26", "b51"), "b11"
BUILDINGS = (*OFFICES, SCHOOL)
USE_TYPES = {b.building_id: b.use_type for b in build_registry(51).buildings if b.building_id in BUILDINGS}


def test_water_fill_gives_what_a_small_key_cannot_take_to_the_others() -> None:
    assert water_fill({"a": 2, "b": 100, "c": 100}, 50) == {"a": 2, "b": 24, "c": 24}
    assert water_fill({"a": 2, "b": 3}, 50) == {"a": 2, "b": 3}
    assert sum(water_fill({k: 10 for k in "abcdefg"}, 23).values()) == 23


def test_quotas_split_the_budget_over_use_types_before_buildings() -> None:
    counts = {f"o{i:03d}": 1000 for i in range(180)} | {f"s{i:02d}": 1000 for i in range(20)}
    types = {b: "office" if b.startswith("o") else "school" for b in counts}
    quotas = stratified_quotas(counts, types, 10_000)
    assert sum(quotas.values()) == 10_000
    assert sum(q for b, q in quotas.items() if types[b] == "school") == 5_000
    assert {quotas[f"s{i:02d}"] for i in range(20)} == {250}
    assert min(quotas[b] for b in counts if types[b] == "office") >= 27
    # Tuning's building sample follows the same strata.
    chosen = tuning_buildings(sorted(counts), types, 10)
    assert len(chosen) == 10 and sum(b.startswith("s") for b in chosen) == 5


@pytest.fixture(scope="module")
def gold(tmp_path_factory: pytest.TempPathFactory):
    from wattflow.settings import get_settings, reset_settings

    mp = pytest.MonkeyPatch()
    mp.setenv("WATTFLOW_HOME", str(tmp_path_factory.mktemp("stream-home")))
    reset_settings()
    engine = get_engine(get_settings())
    frame = synthetic_gold_features(building_ids=BUILDINGS, days=40)
    engine.upsert(FEATURES, pa.Table.from_pandas(frame, preserve_index=False))
    yield engine, frame
    mp.undo()
    reset_settings()


def _streamed(engine, frame, windows_per_epoch: int, shard_buildings: int, params: ModelParams = PARAMS):
    return train_streamed(
        engine, SPEC, params, version=engine.version(FEATURES), buildings=list(BUILDINGS),
        first_ts=pd.to_datetime(frame["ts"], utc=True).min(), timezones=None, use_types=USE_TYPES, start=None,
        train_end=pd.Timestamp("2024-02-03", tz="UTC"), stride_h=6, validation_fraction=0.15,
        windows_per_epoch=windows_per_epoch, shard_buildings=shard_buildings,
    )


def test_within_the_budget_streamed_training_is_the_in_memory_training(gold) -> None:
    engine, frame = gold
    before = train_model(frame, SPEC, PARAMS, train_end=pd.Timestamp("2024-02-03", tz="UTC"), stride_h=6,
                         validation_fraction=0.15)
    after = _streamed(engine, frame, windows_per_epoch=100_000, shard_buildings=3)
    assert after.spec == before.spec
    assert (after.n_train_windows, after.n_validation_windows) == (before.n_train_windows, before.n_validation_windows)
    assert after.forecaster.history["loss"] == pytest.approx(before.forecaster.history["loss"], rel=1e-4)
    assert after.best_val_loss == pytest.approx(before.best_val_loss, rel=1e-4)


def test_above_the_budget_each_epoch_draws_a_fresh_stratified_sample(gold, tmp_path) -> None:
    engine, _ = gold
    plan = stream_training_windows(
        engine, engine.version(FEATURES), list(BUILDINGS), SPEC, timezones=None, use_types=USE_TYPES, start=None,
        train_end=pd.Timestamp("2024-02-03", tz="UTC"), stride_h=6, validation_fraction=0.15, shard_buildings=2,
        directory=tmp_path / "shards",
    )
    counts = plan.train_counts()
    assert set(counts) == set(BUILDINGS) and len(set(counts.values())) == 1
    quotas = stratified_quotas(counts, plan.use_types(), 120)
    assert USE_TYPES == {"b01": "office", "b26": "office", "b51": "office", "b11": "school"}
    assert quotas[SCHOOL] == 60 and {quotas[b] for b in OFFICES} == {20}
    first = plan.sample(quotas, np.random.default_rng([0, 0]))
    second = plan.sample(quotas, np.random.default_rng([0, 1]))
    assert len(first) == len(second) == 120
    assert (first.building_id == SCHOOL).sum() == 60
    assert not np.array_equal(first.origin, second.origin)
    # The rows read back are the windows written: a sample's window is one of the building's windows.
    everything = plan.all_train()
    keys = set(zip(everything.building_id, everything.origin.astype("int64")))
    assert set(zip(first.building_id, first.origin.astype("int64"))) <= keys


def test_above_the_budget_training_runs_on_the_sample_and_bounds_validation(gold) -> None:
    engine, frame = gold
    trained = _streamed(engine, frame, windows_per_epoch=128, shard_buildings=2, params=replace(PARAMS, epochs=2))
    assert trained.epochs_run == 2 and np.isfinite(trained.best_val_loss)
    # Validation keeps its 15:85 share of the epoch budget (ceil(128 * 0.15 / 0.85) = 23).
    assert trained.n_validation_windows == 23
    assert trained.n_train_windows > 128
