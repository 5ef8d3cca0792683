"""`wattflow ingest simulate`: simulate a portfolio and land it in bronze."""

from __future__ import annotations

import sys
from datetime import date, timedelta
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from wattflow.cli_groups import ingest_app

# Piped output (make demo, CI logs) would otherwise be cut at 80 columns.
console = Console(width=None if sys.stdout.isatty() else 120)


def _default_start() -> str:
    return (date.today() - timedelta(weeks=8)).isoformat()


@ingest_app.command("simulate")
def simulate(
    buildings: int = typer.Option(3, "--buildings", "-n", min=1, help="How many buildings to simulate."),
    start: str = typer.Option(None, help="First day (UTC, inclusive), e.g. 2024-01-01; default 8 weeks ago."),
    end: str = typer.Option(None, help="Last day (UTC, exclusive); default today."),
    faults: bool = typer.Option(False, "--faults/--no-faults", help="Inject sensor faults (recorded as ground truth)."),
    drift: Optional[list[str]] = typer.Option(
        None,
        "--drift",
        help="Drift event, repeatable: retrofit:b01:2024-03-01:0.25, heat_wave:berlin:2024-07-01:2024-07-10:6, "
        "occupancy_change:b02:2024-04-01:0.6",
    ),
    seed: Optional[int] = typer.Option(None, help="Random seed; default from settings (simulator.seed)."),
    interval_minutes: Optional[int] = typer.Option(None, help="Meter interval; default from settings."),
    ground_truth: Optional[str] = typer.Option(None, help="Also write the injected faults/drift to this Parquet file."),
) -> None:
    """Simulate a building portfolio and land registry, readings and weather in the lakehouse."""
    from pydantic import ValidationError

    from lakehouse.simulator.commands_core import run_simulation
    from lakehouse.simulator.config import parse_drift

    start = start or _default_start()
    end = end or date.today().isoformat()
    # Bad dates and drift specs are the user's to fix: name them, no traceback.
    for hint, value in (("--start", start), ("--end", end)):
        try:
            date.fromisoformat(value[:10])
        except ValueError as err:
            raise typer.BadParameter(f"{value!r}: {err}", param_hint=hint) from None
    for spec in drift or []:
        try:
            parse_drift(spec)
        except (ValueError, ValidationError) as err:
            raise typer.BadParameter(f"{spec!r}: {err}", param_hint="--drift") from None
    try:
        summary = run_simulation(
            buildings=buildings,
            start=start,
            end=end,
            faults=faults,
            drift=list(drift or []),
            seed=seed,
            interval_minutes=interval_minutes,
            ground_truth_path=ground_truth,
        )
    except KeyError as err:  # a drift event names a building or site that is not simulated
        raise typer.BadParameter(str(err.args[0] if err.args else err)) from None
    print_summary(summary)


def print_summary(summary) -> None:
    out = Table(title="Simulated portfolio landed")
    out.add_column("table", no_wrap=True)
    for header in ("version", "rows", "valid", "written", "quarantined"):
        out.add_column(header, justify="right", no_wrap=True)
    for row in summary.rows:
        out.add_row(
            row.table, "-" if row.version is None else str(row.version), f"{row.total_rows:,}",
            f"{row.landed:,}", f"{row.written:,}", f"{row.quarantined:,}",
        )
    console.print(out)
    if summary.reasons:
        console.print("quarantine reasons: " + ", ".join(f"{k}={v}" for k, v in sorted(summary.reasons.items())))
    if summary.ground_truth_counts:
        console.print("injected: " + ", ".join(f"{k}={v}" for k, v in sorted(summary.ground_truth_counts.items())))
    console.print(f"simulated in {summary.simulate_s:.1f} s, landed in {summary.land_s:.1f} s")
