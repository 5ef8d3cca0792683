"""Which path a forecast run takes and which origins it scores: plain functions the forecast DAG and
`wattflow score` call."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from wattflow.pipeline import forecast_origins, forecast_path
from wattflow.settings import ComputeSettings, Settings


def test_auto_scores_in_batch_on_spark_and_through_serving_locally():
    assert forecast_path("auto", Settings(compute=ComputeSettings(runner="spark"))) == "batch"
    assert forecast_path("auto", Settings(compute=ComputeSettings(runner="local"))) == "serving"
    assert forecast_path("batch", Settings(compute=ComputeSettings(runner="local"))) == "batch"
    assert forecast_path("serving", Settings(compute=ComputeSettings(runner="spark"))) == "serving"
    with pytest.raises(ValueError, match="'grpc' is not one of auto, serving, batch"):
        forecast_path("grpc", Settings())


def test_origins_every_n_hours_up_to_the_end_exclusive():
    start = datetime(2024, 3, 7, tzinfo=timezone.utc)
    assert forecast_origins(start, datetime(2024, 3, 9, tzinfo=timezone.utc), 24) == [start, datetime(2024, 3, 8, tzinfo=timezone.utc)]
    assert len(forecast_origins(start, datetime(2024, 3, 8, 1, tzinfo=timezone.utc), 6)) == 5  # 0, 6, 12, 18 h and next day 0 h
    assert forecast_origins(start, start, 24) == []
    with pytest.raises(ValueError, match="every_h 0"):
        forecast_origins(start, datetime(2024, 3, 9, tzinfo=timezone.utc), 0)
