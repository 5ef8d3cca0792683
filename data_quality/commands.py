"""`wattflow curate` and `wattflow features`: bronze -> silver -> gold for an interval, idempotently."""

from __future__ import annotations

from datetime import datetime
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from wattflow.cli_groups import app

console = Console()


def _registry(engine):
    """The registry as landed in `reference.buildings` (what bronze was validated against), else the file."""
    from lakehouse.buildings import BuildingRegistry
    from lakehouse.registry_file import load_registry
    from lakehouse.schemas import BUILDINGS

    table = engine.read(BUILDINGS)
    return BuildingRegistry.from_arrow(table) if table.num_rows else load_registry()


def _when(value: str, option: str) -> datetime:
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not an ISO date or timestamp (e.g. 2024-01-01 or 2024-01-01T06:00)", param_hint=option) from None


def _print_results(results) -> None:
    failed = [r for r in results if not r.success]
    out = Table("suite", "expectation", "observed", "threshold", "policy", title=f"{len(results)} expectations, {len(failed)} not met")
    for r in failed:
        out.add_row(r.suite, r.expectation, r.observed_value[:40], r.threshold, r.policy)
    console.print(out)


@app.command("curate")
def curate_command(
    start: str = typer.Option(..., "--start", help="First UTC hour (inclusive), ISO format."),
    end: str = typer.Option(..., "--end", help="End (exclusive), ISO format."),
    building_id: Optional[list[str]] = typer.Option(None, "--building-id", help="Only these buildings (repeatable)."),
) -> None:
    """Check bronze readings and weather with the GE suites and write silver `building_hourly` for [start, end)."""
    from data_quality.policy import BatchRejected
    from lakehouse.curation import curate
    from lakehouse.engine import get_engine
    from wattflow.settings import get_settings

    settings = get_settings()
    engine = get_engine(settings)
    registry = _registry(engine)
    unknown = [b for b in building_id or [] if b not in registry.building_ids()]
    if unknown:
        raise typer.BadParameter(f"unknown building(s) {unknown}; known: {', '.join(registry.building_ids())}", param_hint="--building-id")
    try:
        result = curate(engine, registry, _when(start, "--start"), _when(end, "--end"), settings, building_ids=building_id or None)
    except BatchRejected as err:
        console.print(f"[red]{err}[/red]")
        raise typer.Exit(2) from None
    _print_results(result.results)
    console.print(
        f"silver: {result.hours:,} hours from {result.readings:,} readings, {result.rejected:,} quarantined; "
        f"version {result.silver_version} ({'changed' if result.silver_changed else 'unchanged'}). Data Docs: {result.data_docs}"
    )


@app.command("features")
def features_command(
    start: str = typer.Option(..., "--start", help="First UTC hour (inclusive), ISO format."),
    end: str = typer.Option(..., "--end", help="End (exclusive), ISO format."),
    refit_scaling: bool = typer.Option(False, "--refit-scaling", help="Fit the standardization parameters again."),
) -> None:
    """Build gold `features` for [start, end) from silver, and the feature catalogue beside it."""
    from data_quality.policy import BatchRejected
    from lakehouse.curation import build_features
    from lakehouse.engine import get_engine
    from wattflow.settings import get_settings

    settings = get_settings()
    engine = get_engine(settings)
    try:
        result = build_features(engine, _registry(engine), _when(start, "--start"), _when(end, "--end"), settings,
                                refit_scaling=refit_scaling)
    except BatchRejected as err:
        console.print(f"[red]{err}[/red]")
        raise typer.Exit(2) from None
    _print_results(result.results)
    console.print(
        f"gold: {result.rows:,} rows, version {result.gold_version} ({'changed' if result.gold_changed else 'unchanged'}); "
        f"catalogue {result.catalogue_path}"
    )
