"""`wattflow monitor --as-of DATE` and `wattflow anomalies --building-id ID --since DATE`."""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.table import Table

from wattflow.cli_groups import app

console = Console()


@app.command("monitor")
def monitor(
    as_of: str = typer.Option(..., "--as-of", help="End of the monitored windows (UTC date or timestamp), exclusive."),
    anomalies: bool = typer.Option(True, "--anomalies/--no-anomalies", help="Also look for consumption anomalies."),
    as_json: bool = typer.Option(False, "--json", help="Print the outcome as JSON."),
) -> None:
    """Drift and accuracy of the production model, the retrain decision (recorded either way), reports."""
    from lakehouse.engine import get_engine
    from monitoring.monitor import run_monitoring
    from wattflow.settings import get_settings

    outcome = run_monitoring(get_engine(), get_settings(), as_of, with_anomalies=anomalies)
    payload = {
        "as_of": outcome.as_of.isoformat(), "model_name": outcome.model_name, "model_version": outcome.model_version,
        "decision": outcome.decision.label, "retrain_requested": outcome.retrain_requested,
        "reasons": outcome.decision.reasons, "reports": outcome.reports, "mlflow_run_id": outcome.mlflow_run_id,
        "anomalies": outcome.anomalies,
    }
    if as_json:
        typer.echo(json.dumps(payload, indent=2))
        return
    console.print(f"[bold]{payload['decision'].upper()}[/bold] {outcome.model_name} v{outcome.model_version} as of {payload['as_of']}")
    for reason in outcome.decision.reasons:
        console.print(f"  - {reason}")
    console.print(f"reports: {outcome.report_dir}   anomalies: {outcome.anomalies}")


@app.command("anomalies")
def anomalies_command(
    since: str = typer.Option(..., "--since", help="Start of the period (UTC date or timestamp)."),
    building_id: str = typer.Option(None, "--building-id", help="One building; default every building."),
    until: str = typer.Option(None, "--until", help="End of the period, exclusive; default now."),
    as_json: bool = typer.Option(False, "--json", help="Print anomalies as JSON lines."),
) -> None:
    """Consumption anomalies with excess kWh, cost, kgCO2e and a recommendation; recorded in monitoring.anomalies."""
    from monitoring.anomaly_store import find_anomalies
    from lakehouse.engine import get_engine
    from wattflow.settings import get_settings

    try:
        result = find_anomalies(get_engine(), get_settings(), since=since, until=until, building_id=building_id)
    except (KeyError, ValueError) as err:
        raise typer.BadParameter(str(err.args[0] if err.args else err)) from None
    if as_json:
        for row in result.anomalies.to_dict(orient="records"):
            typer.echo(json.dumps(row, default=str))
        return
    out = Table("building", "kind", "start", "end", "excess kWh", "cost", "kgCO2e", "severity", "recommendation")
    for r in result.anomalies.itertuples(index=False):
        out.add_row(r.building_id, r.kind, str(r.start), str(r.end), f"{r.excess_kwh:,.1f}", f"{r.cost:,.2f} {r.currency}",
                    f"{r.co2_kg:,.1f}", r.severity, r.recommendation)
    console.print(out)
    totals = Table("building", "anomalies", "excess kWh", "cost", "kgCO2e", "top recommendation")
    for r in result.buildings.itertuples(index=False):
        totals.add_row(r.building_id, str(r.anomalies), f"{r.excess_kwh:,.1f}", f"{r.cost:,.2f} {r.currency}", f"{r.co2_kg:,.1f}",
                       r.top_recommendation)
    console.print(totals)
