"""`wattflow tables ...`: list, history, optimize, vacuum."""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.table import Table

from wattflow.cli_groups import tables_app

console = Console()


def _contract(name: str):
    from lakehouse.schemas import contract

    try:
        return contract(name)
    except KeyError as err:
        raise typer.BadParameter(str(err.args[0]), param_hint="TABLE") from None


@tables_app.command("list")
def list_tables() -> None:
    """Every declared table with its location, current version and row count."""
    from lakehouse.engine import get_engine
    from lakehouse.schemas import CONTRACTS

    engine = get_engine()
    out = Table("table", "version", "rows", "location")
    for name, c in sorted(CONTRACTS.items()):
        version = engine.version(c)
        rows = engine.read(c, columns=[c.keys[0]]).num_rows if version is not None else 0
        out.add_row(name, "-" if version is None else str(version), f"{rows:,}", engine.table_uri(c))
    console.print(out)


@tables_app.command("history")
def history(
    table: str = typer.Argument(..., help="Qualified table name, e.g. bronze.sensor_readings"),
    limit: int = typer.Option(20, help="Newest commits to show."),
) -> None:
    """The table's Delta commit log: version, time, operation and metrics."""
    from lakehouse.engine import get_engine

    entries = get_engine().history(_contract(table), limit)
    out = Table("version", "timestamp", "operation", "metrics")
    for e in entries:
        metrics = e.get("operationMetrics") or {}
        out.add_row(str(e.get("version")), str(e.get("timestamp")), str(e.get("operation")), json.dumps(metrics)[:120])
    console.print(out)


@tables_app.command("optimize")
def optimize(table: str = typer.Argument(..., help="Qualified table name.")) -> None:
    """Compact small files (bin-packing) into fewer, larger ones."""
    from lakehouse.engine import get_engine

    console.print_json(data=get_engine().optimize(_contract(table)))


@tables_app.command("vacuum")
def vacuum(
    table: str = typer.Argument(..., help="Qualified table name."),
    retention_hours: int = typer.Option(None, help="Keep files newer than this; default from settings."),
    dry_run: bool = typer.Option(True, "--dry-run/--apply", help="List files without deleting them."),
) -> None:
    """Delete files no longer referenced by versions within the retention period."""
    from lakehouse.engine import get_engine
    from wattflow.settings import get_settings

    hours = retention_hours if retention_hours is not None else get_settings().lakehouse.vacuum_retention_hours
    files = get_engine().vacuum(_contract(table), hours, dry_run=dry_run)
    console.print(f"{'would delete' if dry_run else 'deleted'} {len(files)} file(s)")
    for f in files[:50]:
        console.print(f"  {f}")
