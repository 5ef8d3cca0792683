"""The local runner: one chunk or many, the same silver, quarantine and gold, and the same expectation
counts once the chunks' results are merged (delta-rs only; the Spark runner's parity is test_spark_runner.py)."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import pytest

from wattflow.settings import ComputeSettings, Settings

pytestmark = pytest.mark.integration


def test_the_local_runner_writes_the_same_silver_and_gold_in_one_chunk_or_in_many(tmp_path: Path) -> None:
    from lakehouse.delta_rs import DeltaRsEngine
    from lakehouse.schemas import BUILDING_HOURLY, FEATURES, QUALITY_RESULTS, QUARANTINE_READINGS
    from lakehouse import curation
    from lakehouse.simulator import FaultConfig, land_portfolio, simulate_portfolio

    portfolio = simulate_portfolio(3, "2024-03-04", "2024-03-08", seed=3,
                                   faults=FaultConfig(unit_mixup=False, fahrenheit=False))
    start, end = datetime(2024, 3, 5, tzinfo=timezone.utc), datetime(2024, 3, 8, tzinfo=timezone.utc)
    tables = {}
    for chunk in (1, 50):
        settings = Settings(home=tmp_path / f"chunk{chunk}", compute=ComputeSettings(chunk_buildings=chunk))
        engine = DeltaRsEngine.from_settings(settings)
        land_portfolio(portfolio, engine, now=end)
        curation.curate(engine, portfolio.registry, start, end, settings, data_docs=False)
        curation.build_features(engine, portfolio.registry, start, end, settings)
        tables[chunk] = {c.qualified_name: engine.read(c).to_pandas().sort_values(list(c.keys)).reset_index(drop=True)
                         for c in (BUILDING_HOURLY, QUARANTINE_READINGS, FEATURES, QUALITY_RESULTS)}
    for name in (BUILDING_HOURLY.qualified_name, QUARANTINE_READINGS.qualified_name, FEATURES.qualified_name):
        pd.testing.assert_frame_equal(tables[1][name], tables[50][name], check_exact=True, obj=name)
    assert len(tables[1][BUILDING_HOURLY.qualified_name]) == 3 * 3 * 24
    # Merged over three chunks, every expectation's counts equal the one-chunk run's.
    counts = {n: t[QUALITY_RESULTS.qualified_name].set_index(["suite", "expectation"])[["unexpected_count", "element_count"]]
              for n, t in tables.items()}
    pd.testing.assert_frame_equal(counts[1], counts[50])
