"""The CLI around the sources: buildings validate/list/show and ingest file, as a user runs them."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from wattflow.cli import app

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()


def test_buildings_validate_names_line_and_field(tmp_path: Path, wattflow_home: Path) -> None:
    ok = runner.invoke(app, ["buildings", "validate", str(REPO / "config" / "buildings.example.yaml")])
    assert ok.exit_code == 0 and "OK, 4 building(s) at 3 site(s)" in ok.output
    bad = tmp_path / "bad.yaml"
    bad.write_text((REPO / "config" / "buildings.example.yaml").read_text().replace("floor_area_m2: 12500", "floor_area_m2: big"))
    result = runner.invoke(app, ["buildings", "validate", str(bad)])
    assert result.exit_code == 1
    assert "bad.yaml:29: sites[0].buildings[0].floor_area_m2" in result.output.replace("\n", "")


def test_ingest_file_registers_the_building_then_list_and_show(tmp_path: Path, wattflow_home: Path) -> None:
    path = tmp_path / "export.csv"
    pd.DataFrame(
        {"Timestamp": pd.date_range("2024-03-31 00:00", periods=16, freq="15min").strftime("%Y-%m-%d %H:%M"),
         "kWh": [0.25] * 16, "Outside C": [8.5] * 16}
    ).to_csv(path, index=False)
    args = ["ingest", "file", str(path), "--building-id", "lab-1", "--timestamp-column", "Timestamp", "--energy-column", "kWh",
            "--timezone", "Europe/Amsterdam", "--weather-column", "temperature_c=Outside C", "--floor-area-m2", "450"]
    result = runner.invoke(app, args)
    # 2024-03-31 02:00-02:59 does not exist in Amsterdam: the file is reported, nothing lands.
    assert result.exit_code == 1 and "does not exist in Europe/Amsterdam" in result.output.replace("\n", " ")
    result = runner.invoke(app, [*args, "--clock", "standard"])
    assert result.exit_code == 0, result.output
    assert "guessed for the new building" in result.output and "latitude" in result.output
    listing = runner.invoke(app, ["buildings", "list"])
    assert listing.exit_code == 0 and "lab-1" in listing.output and "Europe/Amsterdam" in listing.output.replace("\n", "")
    shown = runner.invoke(app, ["buildings", "show", "lab-1"])
    assert shown.exit_code == 0 and "450.0" in shown.output and "kwh" in shown.output
    missing = runner.invoke(app, ["buildings", "show", "nope"])
    assert missing.exit_code == 1 and "unknown building_id 'nope'" in missing.output
