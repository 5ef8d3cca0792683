"""One monitoring pass end to end on Delta tables, Evidently files and a real MLflow tracking store."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from lakehouse.engine import get_engine
from lakehouse.schemas import ANOMALIES, DRIFT_REPORTS, FEATURES, FORECASTS, MONITORING_DECISIONS
from monitoring.monitor import run_monitoring
from monitoring.synthetic import (
    AfterHoursWaste,
    LinearForecaster,
    Retrofit,
    portfolio_features,
    served_forecasts,
    to_contract_table,
)

pytestmark = pytest.mark.integration

START = pd.Timestamp("2025-01-06", tz="UTC")


class _Meta:
    def __init__(self, building_id):
        self.building_id, self.tariff_per_kwh, self.currency = building_id, 0.2, "EUR"
        self.grid_emission_factor_kg_per_kwh, self.timezone = 0.4, "UTC"


def test_a_pass_writes_reports_runs_decisions_and_anomalies_and_a_rerun_changes_nothing(settings, monkeypatch):
    import mlflow

    buildings = ("b1", "b2", "b3")
    waste = AfterHoursWaste("b3", START + pd.Timedelta(days=47, hours=23), 5, 40.0)
    features = portfolio_features(buildings, str(START.date()), 50, seed=9, retrofits=(Retrofit("b2", START + pd.Timedelta(days=35)),),
                                  waste=(waste,))
    model = LinearForecaster.fit(features, None, START + pd.Timedelta(days=14))
    forecasts = served_forecasts(features, model, start=START + pd.Timedelta(days=14), end=START + pd.Timedelta(days=50),
                                 model_name=settings.model.model_name, model_version="3")
    engine = get_engine(settings)
    engine.upsert(FEATURES, to_contract_table(features, FEATURES))
    engine.upsert(FORECASTS, to_contract_table(forecasts, FORECASTS))
    import monitoring.anomaly_store as store

    monkeypatch.setattr(store, "building_metadata", lambda engine, settings: {b: _Meta(b) for b in buildings})

    as_of = START + pd.Timedelta(days=49)
    outcome = run_monitoring(engine, settings, as_of)
    assert outcome.model_version == "3"
    # b2's retrofit biases its forecasts: the accuracy trigger fires, with the building named
    assert outcome.retrain_requested and outcome.decision.label == "retrain"
    assert any(r.startswith("building b2") for r in outcome.decision.reasons)
    for kind in ("input_drift", "residual_drift", "accuracy"):
        html = outcome.report_dir / f"{kind}.html"
        assert html.exists() and (outcome.report_dir / f"{kind}.json").exists()
    assert outcome.report_dir.is_relative_to(settings.reports_dir)

    reports = engine.read(DRIFT_REPORTS).to_pandas().set_index("report_kind")
    assert sorted(reports.index) == ["accuracy", "input_drift", "residual_drift"]
    assert (reports["mlflow_run_id"] == outcome.mlflow_run_id).all() and (reports["model_version"] == "3").all()
    residual = json.loads(reports.loc["residual_drift", "summary"])
    assert residual["drifted_columns"] == ["b2"] and reports.loc["residual_drift", "drift_detected"]
    decisions = engine.read(MONITORING_DECISIONS).to_pandas()
    assert decisions["decision"].tolist() == ["retrain"] and decisions["report_uri"].iloc[0] == str(outcome.report_dir)
    assert json.loads(decisions["figures"].iloc[0])["check"]["building_accuracy"]["b2"]["nmbe"] < -0.1

    run = mlflow.MlflowClient().get_run(outcome.mlflow_run_id)
    assert run.data.tags["wattflow.model_version"] == "3" and run.data.tags["wattflow.decision"] == "retrain"
    assert run.data.metrics["accuracy_hours"] == 3 * 7 * 24
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(outcome.mlflow_run_id, "monitoring")}
    assert "monitoring/residual_drift.html" in artifacts and "monitoring/decision.json" in artifacts

    anomalies = engine.read(ANOMALIES).to_pandas()
    night = anomalies[(anomalies["kind"] == "after_hours_load") & (anomalies["building_id"] == "b3")]
    assert len(night) == 1 and pd.Timestamp(night["start"].iloc[0]) == waste.start and night["hours"].iloc[0] == 5
    assert night["excess_kwh"].iloc[0] == pytest.approx(waste.excess_kwh, rel=0.1)
    assert night["cost"].iloc[0] == pytest.approx(0.2 * night["excess_kwh"].iloc[0], abs=0.01)

    versions = {c.name: engine.version(c) for c in (DRIFT_REPORTS, MONITORING_DECISIONS, ANOMALIES)}
    again = run_monitoring(engine, settings, as_of)
    assert again.mlflow_run_id == outcome.mlflow_run_id and again.decision.label == "retrain"
    assert {c.name: engine.version(c) for c in (DRIFT_REPORTS, MONITORING_DECISIONS, ANOMALIES)} == versions

    # the next day, from the CLI: the retrain decision of yesterday puts the pass in its cooldown
    from typer.testing import CliRunner

    from wattflow.cli import app

    runner = CliRunner()
    tomorrow = runner.invoke(app, ["monitor", "--as-of", str((as_of + pd.Timedelta(days=1)).date()), "--no-anomalies", "--json"])
    assert tomorrow.exit_code == 0, tomorrow.output
    payload = json.loads(tomorrow.output[tomorrow.output.index("{"):])
    assert payload["decision"] == "hold" and not payload["retrain_requested"]
    assert payload["reasons"][0].startswith("cooldown: last retrain 1.0 days ago")
    assert engine.read(MONITORING_DECISIONS).num_rows == 2

    listed = runner.invoke(app, ["anomalies", "--building-id", "b3", "--since", str(waste.start.date()),
                                 "--until", str((as_of).date()), "--json"])
    assert listed.exit_code == 0, listed.output
    rows = [json.loads(line) for line in listed.output.splitlines() if line.startswith("{")]
    assert [r["kind"] for r in rows if r["kind"] == "after_hours_load"] == ["after_hours_load"]
    assert all(r["building_id"] == "b3" for r in rows)
    unknown = runner.invoke(app, ["anomalies", "--building-id", "nope", "--since", "2025-01-01", "--until", "2024-12-01"])
    assert unknown.exit_code != 0 and "must be after since" in unknown.output
