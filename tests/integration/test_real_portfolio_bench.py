"""A slice of bench/real_portfolio.py on the real Cambridge Estates data: its JSON contract and its verdicts.

The whole benchmark (41 buildings, 2016-2018 -> 2019) runs by hand; this slice (6 buildings, half a year
of training, January-February 2019 backtested, one cold-start building) keeps the path honest in CI.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]


def test_real_portfolio_slice(tmp_path: Path) -> None:
    out_json = tmp_path / "real.json"
    run = subprocess.run(
        [sys.executable, str(REPO / "bench" / "real_portfolio.py"), "--buildings", "6", "--cold-start", "1",
         "--train-start", "2018-06-01", "--train-end", "2019-01-01", "--test-end", "2019-03-01", "--epochs", "4",
         "--json", str(out_json)],
        capture_output=True, text=True, timeout=900, cwd=REPO,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "median CV(RMSE)" in run.stdout and "cold start" in run.stdout
    out = json.loads(out_json.read_text())
    rows = {"model", "persistence_24h", "seasonal_naive_168h", "persistence_ensemble", "gradient_boosting"}
    assert out["buildings"] == 5 and set(out["median_cv_rmse"]) == rows == set(out["ci95"])
    for row in rows:
        lo, hi = out["ci95"][row]
        assert 0 < lo <= out["median_cv_rmse"][row] <= hi < 2
    # Every row is scored on the same hours of each building.
    per = {}
    for r in out["per_building"]:
        per.setdefault(r["building_id"], set()).add(r["n_hours"])
    assert all(len(hours) == 1 for hours in per.values()) and len(per) == 5
    assert 0.4 < out["p10_p90_coverage"] < 1.0
    assert out["cold_start_buildings"] and 0 < out["cold_start_median_cv_rmse"] < 1
    assert out["weather_forecast"].get("persistence", 0) > 0 and "occupancy" in out["window_spec"]["dropped_features"]
    # Even four epochs on half a year learn more than yesterday's load does.
    assert out["median_cv_rmse"]["model"] < out["median_cv_rmse"]["persistence_24h"]
