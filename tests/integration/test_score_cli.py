"""`wattflow score` on a tiny home: two simulated buildings curated to gold, a small SavedModel with the serving
contract as version 1, day-ahead forecasts scored in batch on the local runner; a re-run writes nothing, and bad
input gets one message naming the option, the value and the remedy (no traceback)."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from typer.testing import CliRunner

from wattflow.settings import get_settings, reset_settings

pytestmark = pytest.mark.integration


@pytest.fixture
def tiny_home(wattflow_home, monkeypatch):
    from lakehouse.delta_rs import DeltaRsEngine
    from lakehouse.simulator import FaultConfig, land_portfolio, simulate_portfolio
    from ml.spec import WindowSpec
    from serving.contract_model import export_contract_model
    from lakehouse import curation

    # Two days of lookback instead of seven: a five-day home is enough history.
    monkeypatch.setenv("WATTFLOW_MODEL__LOOKBACK_H", "48")
    reset_settings()
    settings = get_settings()
    portfolio = simulate_portfolio(2, "2024-03-04", "2024-03-09", seed=3, faults=FaultConfig(unit_mixup=False, fahrenheit=False))
    start, end = datetime(2024, 3, 5, tzinfo=timezone.utc), datetime(2024, 3, 9, tzinfo=timezone.utc)
    engine = DeltaRsEngine.from_settings(settings)
    land_portfolio(portfolio, engine, now=end)
    curation.curate(engine, portfolio.registry, start, end, settings, data_docs=False)
    curation.build_features(engine, portfolio.registry, start, end, settings)
    spec = WindowSpec(lookback_h=48, horizon_h=settings.model.horizon_h, quantiles=tuple(settings.model.quantiles))
    export_contract_model(settings.model_base_path / settings.model.model_name / "1", spec, units=8, seed=5)
    yield settings, sorted(portfolio.registry.building_ids())
    reset_settings()


def _score(*args: str):
    from wattflow.cli import app

    return CliRunner().invoke(app, ["score", *args])


def test_wattflow_score_writes_day_ahead_forecasts_once_and_refuses_bad_input_clearly(tiny_home):
    import json

    from lakehouse.engine import get_engine
    from lakehouse.schemas import FORECASTS

    settings, buildings = tiny_home
    first = _score("--origin", "2024-03-07", "--origin", "2024-03-08T00:00", "--version", "1", "--json")
    assert first.exit_code == 0, first.output
    payload = json.loads(first.output[first.output.index("{"):])
    assert payload["rows"] == len(buildings) * 2 * 24 and payload["changed"] and payload["runner"] == "local"
    assert payload["origins"] == ["2024-03-07T00:00:00+00:00", "2024-03-08T00:00:00+00:00"]
    forecasts = get_engine(settings).read(FORECASTS).to_pandas()
    assert len(forecasts) == len(buildings) * 2 * 24 and sorted(forecasts["building_id"].unique()) == buildings
    assert (forecasts["model_version"] == "1").all() and not forecasts["is_fallback"].any()
    assert forecasts["yhat"].notna().all() and (forecasts["horizon_h"].between(1, 24)).all()

    # the same origins as a range: nothing new to write
    again = _score("--start", "2024-03-07", "--end", "2024-03-09", "--every-h", "24", "--version", "1")
    assert again.exit_code == 0, again.output
    assert "96 forecast rows" in again.output and "(unchanged)" in again.output

    for args, expected in (
        (("--origin", "2024-13-07"), ["--origin", "'2024-13-07'", "not an ISO date", "UTC"]),
        (("--origin", "2024-03-07", "--building-id", "nope"), ["--building-id", "['nope']", "wattflow buildings list"]),
        (("--start", "2024-03-08", "--end", "2024-03-07"), ["--end", "must be after --start"]),
        ((), ["--origin", "missing origins"]),
        (("--origin", "2024-03-07", "--version", "7"), ["--version", "no SavedModel to score with", "wattflow train"]),
    ):
        bad = _score(*args)
        assert bad.exit_code == 2, (args, bad.output)
        flat = " ".join(bad.output.replace("│", " ").split())
        assert all(e in flat for e in expected), (args, flat)
        assert "Traceback" not in bad.output
    assert get_engine(settings).read(FORECASTS).num_rows == len(buildings) * 2 * 24
