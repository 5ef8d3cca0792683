"""The summary `make demo` prints: tables, runs, the served version, decisions, and where to look."""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console
from rich.table import Table

from wattflow.settings import Settings


def table_rows(settings: Settings) -> list[tuple[str, int | None, int]]:
    from lakehouse.engine import get_engine
    from lakehouse.schemas import CONTRACTS

    engine = get_engine(settings)
    rows = []
    for name, contract in sorted(CONTRACTS.items()):
        version = engine.version(contract)
        count = engine.read(contract, columns=[contract.keys[0]]).num_rows if version is not None else 0
        rows.append((name, version, count))
    return rows


def print_summary(settings: Settings, report: Any, *, wall_s: float, console: Console | None = None) -> None:
    console = console or Console(width=140)
    tables = Table("table", "Delta version", "rows", title="Lakehouse")
    for name, version, count in table_rows(settings):
        if version is not None:
            tables.add_row(name, str(version), f"{count:,}")
    console.print(tables)

    models = Table("trigger", "run id", "version", "promoted", "CV(RMSE)", "NMBE", "MAE", "persistence MAE", "gate",
                   title="Training runs (MLflow)")
    for outcome in report.champions:
        metrics = outcome.get("metrics") or {}
        model = metrics.get("model") or {}
        persistence = (metrics.get("baselines") or {}).get("persistence_24h") or {}
        models.add_row(str(outcome.get("trigger")), str(outcome.get("run_id", ""))[:12], str(outcome.get("version")),
                       str(outcome.get("promoted")), _fmt(model.get("cv_rmse")), _fmt(model.get("nmbe")),
                       _fmt(model.get("mae")), _fmt(persistence.get("mae")), str(outcome.get("reason", ""))[:60])
    console.print(models)

    decisions = Table("as of", "model", "decision", "reasons", title="Monitoring decisions")
    for d in report.decisions:
        decisions.add_row(str(d.get("as_of", ""))[:10], str(d.get("model_version")), str(d.get("decision")),
                          "; ".join(d.get("reasons", []))[:90])
    console.print(decisions)

    retrains = [c for c in report.champions if c.get("retrain_outcome")]
    for c in retrains:
        o = c["retrain_outcome"]
        console.print(f"retrain outcome: new champion v{o['new_version']} MAE {o['new_mae']:.3f} vs old v{o['old_version']} "
                      f"MAE {o['old_mae']:.3f} on {o['n_hours']} post-drift hours → improved={o['improved']}")
    served = sorted(set(report.served_versions), key=lambda v: (len(v), v))
    console.print(f"served versions over gRPC: {', '.join(served) or 'none'}; DAG runs: {len(report.runs)}; "
                  f"retrain requests: {len(report.retrain_requests)}")
    console.print(f"demo wall time: {wall_s:.0f} s\n")
    home = settings.home.resolve()
    console.print("Where to look:")
    console.print(f"  make up                      Airflow UI http://localhost:8080, MLflow UI {settings.mlflow_ui_url}, "
                  f"serving REST http://localhost:{settings.serving.rest_port}/v1/models/{settings.model.model_name}, "
                  "dashboard http://localhost:8050")
    console.print(f"  tables                       {settings.lakehouse_uri}/<layer>/<table> (any Delta reader); "
                  "`wattflow tables list`")
    console.print(f"  data docs                    {settings.data_docs_dir}/index.html")
    console.print(f"  drift reports                {settings.reports_dir}")
    console.print(f"  registry history             `wattflow models history`")
    console.print(f"  DAG run and task logs        {home}/logs/dag-runs.log")
    console.print(f"  everything lives under       {home}")


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{float(value):.3f}"


def as_json(report: Any) -> str:
    return json.dumps({"champions": report.champions, "decisions": report.decisions,
                       "served_versions": report.served_versions}, default=str, indent=2)
