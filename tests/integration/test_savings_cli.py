"""`wattflow savings verify` on Delta tables and a real MLflow store, and the monthly step behind the
`verify_savings` DAG: from a recorded level shift to `gold.savings`, idempotent."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from lakehouse.engine import get_engine
from lakehouse.schemas import MONITORING_DECISIONS, SAVINGS
from tests.savings_world import CUT, CUTS, END, START, land, savings_world, true_savings
from wattflow.cli import app

pytestmark = pytest.mark.integration


@pytest.fixture
def landed(settings):
    portfolio, features = savings_world()
    engine = get_engine(settings)
    land(engine, portfolio, features)
    return engine, portfolio


def test_cli_json_reports_savings_fit_and_fsu_and_logs_an_mlflow_run(landed, settings):
    import mlflow

    engine, portfolio = landed
    args = ["savings", "verify", "--building-id", "b04", "--baseline", START, CUT, "--reporting", CUT, END, "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)  # MLflow's own log lines go to stderr
    assert set(out) >= {"building_id", "model", "baseline", "reporting", "savings_kwh", "savings_pct", "fsu_68_pct",
                        "fsu_90_pct", "cost", "kgco2e"}
    assert set(out["baseline"]) >= {"start", "end", "cv_rmse", "nmbe", "n_hours"}
    assert set(out["reporting"]) >= {"start", "end", "n_hours", "metered_kwh", "adjusted_baseline_kwh"}
    assert (out["building_id"], out["model"]) == ("b04", "towt")
    assert out["baseline"]["start"].startswith(START) and out["reporting"]["end"].startswith(END)
    assert (out["baseline"]["n_hours"], out["reporting"]["n_hours"]) == (42 * 24, 21 * 24)
    assert out["savings_kwh"] == pytest.approx(out["reporting"]["adjusted_baseline_kwh"] - out["reporting"]["metered_kwh"], abs=0.01)
    truth = true_savings(portfolio, "b04", CUT, END)
    assert abs(out["savings_kwh"] - truth) <= out["uncertainty_90_kwh"]
    assert 0 < out["fsu_68_pct"] < out["fsu_90_pct"] < 50
    building = portfolio.registry.get("b04")
    assert out["cost"] == pytest.approx(out["savings_kwh"] * building.tariff_per_kwh, abs=0.01)
    assert out["kgco2e"] == pytest.approx(out["savings_kwh"] * building.grid_emission_factor_kg_per_kwh, abs=0.01)
    assert out["baseline"]["cv_rmse"] < 0.30 and out["sufficient"] is True
    # the fit is an MLflow run with the same figures
    mlflow.set_tracking_uri(settings.tracking_uri)
    (run,) = mlflow.search_runs(experiment_names=[settings.savings.experiment], output_format="list")
    assert run.data.tags["wattflow.building_id"] == "b04" and run.data.params["model"] == "towt"
    assert run.data.metrics["savings_kwh"] == pytest.approx(out["savings_kwh"], abs=0.01)


def flat(text: str) -> str:
    """The CLI's error box as one line of words."""
    return " ".join(text.replace("│", " ").split())


def test_cli_names_the_bad_field_and_the_remedy_without_a_traceback(landed):
    runner = CliRunner()
    bad = runner.invoke(app, ["savings", "verify", "--building-id", "b99", "--baseline", START, CUT, "--reporting", CUT, END])
    assert bad.exit_code == 2 and "building_id 'b99' is not in the registry" in flat(bad.output) and "Traceback" not in flat(bad.output)
    bad = runner.invoke(app, ["savings", "verify", "--building-id", "b01", "--baseline", CUT, START, "--reporting", CUT, END])
    assert bad.exit_code == 2 and "--baseline: end 2024-01-01 must be after start 2024-02-12" in flat(bad.output)
    bad = runner.invoke(app, ["savings", "verify", "--building-id", "b01", "--baseline", START, CUT, "--reporting", CUT, END,
                              "--model", "arima"])
    assert bad.exit_code == 2 and "'arima' is not a savings baseline; use one of towt, lstm" in flat(bad.output)


def decision(as_of: str, nmbe: dict[str, float]) -> dict:
    check = {"as_of": as_of, "model_name": "building_energy_lstm", "model_version": "1",
             "accuracy": {"n_hours": 168, "mae": 1.0, "rmse": 1.0, "cv_rmse": 0.1, "nmbe": 0.0},
             "building_accuracy": {b: {"n_hours": 168, "mae": 1.0, "rmse": 1.0, "cv_rmse": 0.1, "nmbe": v} for b, v in nmbe.items()}}
    ts = pd.Timestamp(as_of, tz="UTC")
    return {"as_of": ts, "model_name": "building_energy_lstm", "model_version": "1", "decision": "retrain",
            "reasons": "[]", "figures": json.dumps({"check": check}), "report_uri": "", "decided_at": ts}


def test_a_recorded_level_shift_becomes_monthly_verified_savings_and_a_rerun_changes_nothing(landed, settings):
    import pyarrow as pa

    from wattflow import pipeline

    engine, portfolio = landed
    # monitoring saw b01 and b04 over-predicted a week after the cut; b02 stayed within the policy
    rows = [decision("2024-02-12", {"b01": 0.01, "b02": 0.0, "b04": -0.02}),
            decision("2024-02-19", {"b01": -0.18, "b02": 0.03, "b04": -0.25})]
    engine.upsert(MONITORING_DECISIONS, pa.Table.from_pylist(rows, schema=MONITORING_DECISIONS.schema))
    first = pipeline.verify_savings(pd.Timestamp(END, tz="UTC").to_pydatetime(), settings=settings)
    assert first["buildings"] == ["b01", "b04"] and first["rows"] == 4  # Feb 19-29 and Mar 1-3, two buildings
    table = engine.read(SAVINGS).to_pandas().sort_values(["building_id", "month"])
    assert list(zip(table["building_id"], table["month"].astype(str))) == [
        ("b01", "2024-02-01"), ("b01", "2024-03-01"), ("b04", "2024-02-01"), ("b04", "2024-03-01")]
    # the proposed split: baseline the 42 days before the accuracy window, reporting from the decision
    assert set(table["baseline_end"].astype(str)) == {"2024-02-12 00:00:00+00:00"}
    assert set(table["baseline_start"].astype(str)) == {"2024-01-01 00:00:00+00:00"}
    assert table["reporting_start"].astype(str).tolist()[0] == "2024-02-19 00:00:00+00:00"
    assert (table["model"] == "towt").all() and table["fit_acceptable"].all()
    for b in ("b01", "b04"):
        months = table[table["building_id"] == b]
        truth = true_savings(portfolio, b, "2024-02-19", END)
        assert abs(months["savings_kwh"].sum() - truth) <= months["uncertainty_90_kwh"].sum()
        assert (months["savings_kwh"] > 0).all() and (months["n_hours"] == [11 * 24, 3 * 24]).all()
    version = engine.version(SAVINGS)
    again = pipeline.verify_savings(pd.Timestamp(END, tz="UTC").to_pydatetime(), settings=settings)
    assert again["rows"] == 4
    assert engine.version(SAVINGS) in (version, version + 1)
    assert engine.read(SAVINGS).num_rows == 4
    assert engine.read(SAVINGS).to_pandas().sort_values(["building_id", "month"])["savings_kwh"].tolist() == table["savings_kwh"].tolist()
    assert CUTS["b01"] > 0
