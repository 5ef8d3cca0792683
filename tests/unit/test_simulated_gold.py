"""One world: the simulator's portfolio curated to gold in memory (lakehouse/simulator/gold_view.py),
carrying the simulator's truth, usable wherever gold features are."""

from __future__ import annotations

import numpy as np
import pytest
import pandas as pd

from lakehouse.schemas import FEATURES
from lakehouse.simulator import FaultConfig
from ml.synthetic import simulated_gold_features


def test_the_view_is_gold_shaped_and_its_energy_is_the_simulated_truth() -> None:
    features, world = simulated_gold_features(2, start="2024-01-01", days=12, seed=7)
    assert list(features.columns) == list(FEATURES.schema.names)
    assert sorted(features["building_id"].unique()) == ["b01", "b02"]
    assert len(features) == 2 * 12 * 24 and features["energy_valid"].all()
    joined = features.merge(world.truth_hourly, on=["building_id", "ts"], suffixes=("", "_truth"))
    assert len(joined) == len(features)
    np.testing.assert_allclose(joined["energy_kwh"], joined["energy_kwh_truth"], rtol=0, atol=1e-9)
    assert world.timezones == {b.building_id: b.timezone for b in world.registry.buildings}
    # Features a model reads are there from the simulator's weather and calendar, not left null.
    assert features[["temperature", "forecast_temperature", "hour_sin", "is_working_hour"]].notna().all().all()


def test_faults_in_the_view_are_the_ground_truths() -> None:
    features, world = simulated_gold_features(2, start="2024-01-01", days=12, seed=7, faults=FaultConfig())
    assert len(world.ground_truth) > 0
    # Faults reach gold: some hours differ from the simulated truth or are flagged invalid.
    joined = features.merge(world.truth_hourly, on=["building_id", "ts"], suffixes=("", "_truth"))
    differs = ~np.isclose(joined["energy_kwh"], joined["energy_kwh_truth"]) | ~joined["energy_valid"]
    assert 0 < differs.sum() < len(joined)
    assert pd.api.types.is_datetime64_any_dtype(features["ts"])


def test_each_building_starts_at_its_local_midnight_and_a_cached_world_is_not_shared() -> None:
    from ml.synthetic import building_timezones, synthetic_gold_features

    assert building_timezones(("b01", "b02", "b03")) == {"b01": "Europe/Berlin", "b02": "Europe/London", "b03": "America/New_York"}
    frame = synthetic_gold_features(("b01", "b03"), start="2024-01-01", days=3)
    first = frame.groupby("building_id")["ts"].min()
    assert first["b01"] == pd.Timestamp("2023-12-31 23:00", tz="UTC") and first["b03"] == pd.Timestamp("2024-01-01 05:00", tz="UTC")
    assert (frame.groupby("building_id").size() == 3 * 24).all()
    # The second call is served from the cache; what the first caller changed is not in it.
    frame.loc[:, "energy_kwh"] = -1.0
    again = synthetic_gold_features(("b01", "b03"), start="2024-01-01", days=3)
    assert (again["energy_kwh"] > 0).all()
    with pytest.raises(ValueError, match="b1"):
        synthetic_gold_features(("b1",), days=3)
