"""CLI: `wattflow lineage forecast --building-id ID --ts T`."""

from __future__ import annotations

from datetime import datetime
from typing import Optional

import typer

from wattflow.cli_groups import lineage_app


def _instant(value: str, option: str) -> datetime:
    import pandas as pd

    try:
        stamp = pd.Timestamp(value)
    except ValueError:
        typer.echo(f"{option} {value!r} is not a timestamp: give ISO 8601, e.g. 2024-02-01T12:00:00Z", err=True)
        raise typer.Exit(2) from None
    return (stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")).to_pydatetime()


@lineage_app.command("forecast")
def forecast_command(
    building_id: str = typer.Option(..., "--building-id", help="The building of the forecast."),
    ts: str = typer.Option(..., "--ts", help="The forecast hour (ISO 8601; UTC when no offset is given)."),
    issued_at: Optional[str] = typer.Option(None, "--issued-at", help="Which issue of that hour (default: the newest)."),
) -> None:
    """Walk back from one served forecast: model version, MLflow run, gold/silver/bronze versions, validation
    results and source batches."""
    from wattflow.lineage import LineageNotFound, format_chain, forecast_lineage
    from wattflow.settings import get_settings

    when = _instant(ts, "--ts")
    issued = _instant(issued_at, "--issued-at") if issued_at else None
    try:
        chain = forecast_lineage(get_settings(), building_id, when, issued)
    except LineageNotFound as exc:
        typer.echo(f"lineage: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(format_chain(chain))
