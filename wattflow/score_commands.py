"""`wattflow score`: batch day-ahead forecasts for every building (or some) from the champion SavedModel, on the
runner `compute.runner` names, into `gold.forecasts` (`wattflow.pipeline.score`). Idempotent per origin."""

from __future__ import annotations

import datetime as dt
import json
from typing import Optional

import typer
from rich.console import Console

from wattflow.cli_groups import app

console = Console()


def _when(value: str, option: str) -> dt.datetime:
    try:
        ts = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not an ISO date or timestamp (e.g. 2024-03-14 or 2024-03-14T06:00); "
                                 "give the origin in UTC", param_hint=option) from None
    return ts.replace(tzinfo=dt.timezone.utc) if ts.tzinfo is None else ts.astimezone(dt.timezone.utc)


def _origins(origin: list[str] | None, start: str | None, end: str | None, every_h: int) -> list[dt.datetime]:
    from wattflow.pipeline import forecast_origins

    if origin and (start or end):
        raise typer.BadParameter("give either --origin (repeatable) or --start/--end, not both", param_hint="--origin")
    if origin:
        return sorted({_when(o, "--origin") for o in origin})
    if not (start and end):
        raise typer.BadParameter("missing origins: give --origin 2024-03-14 (repeatable) or --start and --end",
                                 param_hint="--origin")
    first, last = _when(start, "--start"), _when(end, "--end")
    if every_h < 1:
        raise typer.BadParameter(f"--every-h {every_h} must be at least 1 (hours between origins)", param_hint="--every-h")
    if last <= first:
        raise typer.BadParameter(f"--end {last.isoformat()} must be after --start {first.isoformat()}", param_hint="--end")
    return forecast_origins(first, last, every_h)


@app.command("score")
def score_command(
    origin: Optional[list[str]] = typer.Option(None, "--origin", help="Forecast origin (UTC date or timestamp); repeatable."),
    start: Optional[str] = typer.Option(None, "--start", help="First origin (UTC), with --end: one origin every --every-h hours."),
    end: Optional[str] = typer.Option(None, "--end", help="Origins before this time (UTC), exclusive."),
    every_h: int = typer.Option(24, "--every-h", help="Hours between origins with --start/--end."),
    building_id: Optional[list[str]] = typer.Option(None, "--building-id", help="Only these buildings (repeatable)."),
    version: Optional[int] = typer.Option(None, "--version", help="Model version; default the registry's champion."),
    as_json: bool = typer.Option(False, "--json", help="Print the outcome as JSON."),
) -> None:
    """Day-ahead forecasts of every building from the champion SavedModel, scored in batch on the compute runner
    (local chunks, or the Spark cluster) into gold.forecasts. The online path (TF Serving) stays for applications."""
    from serving.export import ExportError
    from wattflow import pipeline
    from wattflow.settings import get_settings

    origins = _origins(origin, start, end, every_h)
    settings = get_settings()
    if building_id:
        known = pipeline.registry(settings).building_ids()
        unknown = sorted(set(building_id) - set(known))
        if unknown:
            raise typer.BadParameter(f"unknown building(s) {unknown}; known: {', '.join(known)} "
                                     "(see `wattflow buildings list`)", param_hint="--building-id")
    try:
        result = pipeline.score(origins, buildings=building_id or None, version=version, settings=settings)
    except ExportError as err:
        which = f"version {version}" if version is not None else "a champion"
        raise typer.BadParameter(f"no SavedModel to score with: {err}. Train and promote {which} (`wattflow train`), "
                                 f"or put its TF-Serving export under {settings.model_base_path}/{settings.model.model_name}/"
                                 f"<version>/", param_hint="--version") from None
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    state = "changed" if result["changed"] else "unchanged"
    console.print(f"gold.forecasts: {result['rows']:,} forecast rows from model v{result['model_version']} for "
                  f"{len(result['origins'])} origin(s) on the {result['runner']} runner; version {result['version']} ({state})")
    if not result["rows"]:
        console.print("[yellow]no forecasts: gold.features has no history window before these origins "
                      f"(lookback {settings.model.lookback_h} h); run `wattflow features` over it first[/yellow]")
