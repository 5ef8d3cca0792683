"""A real commercial meter export onboards as a user runs it: `ingest file`, then `backtest`.

The export has the traits that used to stop it (issue 15): a large building using hundreds of kWh per
hour (Cambridge Estates building 7, real 2018 readings), the site's temperature and dew point only (no
relative humidity, no solar radiation, no occupancy, no issued weather forecasts), flat stretches of a
meter that kept repeating its last value, and timestamps in local standard time. No floor area is given.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from wattflow.cli import app

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
ARCHIVE = REPO / "data" / "cambridge-estates" / "cambridge-estates-2016to2019.zip"
runner = CliRunner()


def meter_export(path: Path, start: str = "2018-01-01", end: str = "2018-06-01") -> pd.DataFrame:
    """Building 7's hourly kWh with temperature and dew point, as a BMS would export them."""
    from lakehouse.sources.cambridge import cambridge_records

    records = cambridge_records(ARCHIVE, buildings=[7], start=start, end=end)
    readings = records.readings.to_pandas().set_index("ts")["value"]
    weather = records.weather.to_pandas().set_index("ts")
    t, rh = weather["temperature_c"], weather["relative_humidity_pct"].clip(1, 100)
    g = np.log(rh / 100) + 17.625 * t / (243.04 + t)
    export = pd.DataFrame({"kWh": readings, "Temp_C": t, "DewPoint_C": (243.04 * g / (17.625 - g)).round(1)})
    export.index = export.index.tz_convert("UTC").tz_localize(None)  # London standard time is UTC
    # Two flat stretches where the meter repeated its last value for 8 hours.
    for day in ("2018-02-06 09:00", "2018-04-17 13:00"):
        stretch = (export.index >= pd.Timestamp(day)) & (export.index < pd.Timestamp(day) + pd.Timedelta(hours=8))
        export.loc[stretch, "kWh"] = export.loc[stretch, "kWh"].iloc[0]
    export = export.rename_axis("Timestamp").reset_index()
    export["Timestamp"] = export["Timestamp"].dt.strftime("%d/%m/%Y %H:%M")
    export.to_csv(path, index=False)
    return export


def test_meter_export_with_what_it_has_ingests_and_backtests(tmp_path: Path, wattflow_home: Path, monkeypatch) -> None:
    # A short training keeps the test fast; the full model is judged by bench/real_portfolio.py.
    monkeypatch.setenv("WATTFLOW_MODEL__EPOCHS", "3")
    path = tmp_path / "building7.csv"
    export = meter_export(path)
    assert export["kWh"].median() > 200  # hundreds of kWh per hour

    ingest = runner.invoke(app, [
        "ingest", "file", str(path), "--building-id", "cam-7", "--timestamp-column", "Timestamp",
        "--energy-column", "kWh", "--weather-column", "temperature_c=Temp_C", "--weather-column", "dew_point_c=DewPoint_C",
        "--timezone", "Europe/London", "--clock", "standard",
    ])
    assert ingest.exit_code == 0, ingest.output
    out = " ".join(ingest.output.split())
    # No guessed bound rejects a reading: every reading with a value lands; the empty cells (outages) are
    # quarantined as such, nothing as `implausible_magnitude`.
    empty = int(export["kWh"].isna().sum())
    assert f"bronze.sensor_readings │ {len(export):,} │ {len(export) - empty:,} │ {empty} │" in out
    assert "implausible_magnitude" not in out and (empty == 0 or f"missing_field={empty}" in out)
    assert "floor_area_m2" not in out.split("guessed for the new building")[-1]

    result = runner.invoke(app, ["backtest", "--building-id", "cam-7", "--train-end", "2018-05-01", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    spec = summary["window_spec"]
    # Relative humidity is derived from the dew point; the building lacks occupancy; the forecast columns
    # come from the observation 24 h before (persistence), flagged.
    assert "humidity" in spec["history_features"] and "forecast_temperature" in spec["future_features"]
    assert "occupancy" in spec["dropped_features"]
    assert summary["weather_forecast"].get("persistence", 0) == summary["n_hours"] > 24 * 25
    assert set(summary["baselines"]) == {"persistence_24h", "seasonal_naive_168h", "persistence_ensemble"}
    # The yardstick is scored on the backtest's hours (the same hours as the model and the baselines).
    assert 0 < summary["yardstick"]["gradient_boosting"]["cv_rmse"] < 1
    # Three epochs on four months already meet ASHRAE Guideline 14's hourly limits (the full model is judged
    # against the baselines and the yardstick by bench/real_portfolio.py).
    assert summary["model"]["cv_rmse"] < 0.30 and abs(summary["model"]["nmbe"]) < 0.10

    # The two flat stretches were quarantined as stuck and the rest went on.
    from lakehouse.engine import get_engine
    from lakehouse.schemas import QUARANTINE_READINGS

    quarantined = get_engine().read(QUARANTINE_READINGS).to_pandas()
    stuck = quarantined[quarantined["check_name"] == "stuck_sensor"]
    assert 14 <= len(stuck) <= 40, quarantined["check_name"].value_counts()
