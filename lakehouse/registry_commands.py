"""`wattflow buildings list|show|validate`: the building and sensor registry."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from wattflow.cli_groups import buildings_app

# Piped output (CI logs, tests) would otherwise be cut at 80 columns.
console = Console(width=None if sys.stdout.isatty() else 140)


def _load(path: Path | None = None):
    from lakehouse.registry_file import RegistryFileError, load_registry, registry_path

    target = path or registry_path()
    try:
        return target, load_registry(target)
    except RegistryFileError as err:
        console.print(f"[red]{err}[/red]")
        raise typer.Exit(1) from None


@buildings_app.command("list")
def list_buildings() -> None:
    """Every building in the registry file with its site, timezone, floor area and sensor count."""
    path, registry = _load()
    if not len(registry):
        console.print(f"no buildings in {path} (see config/buildings.example.yaml)")
        return
    out = Table("building_id", "name", "site_id", "timezone", "country", "use_type", "floor m2", "sensors")
    for b in registry:
        out.add_row(b.building_id, b.name, b.site_id, b.timezone, b.country, b.use_type, f"{b.floor_area_m2:,.0f}" if b.floor_area_m2 else "unknown", str(len(b.sensors)))
    console.print(out)
    console.print(f"{len(registry)} building(s) from {path}")


@buildings_app.command("show")
def show_building(building_id: str = typer.Argument(..., help="The building to show.")) -> None:
    """One building's metadata and its sensors with unit and calibration."""
    _, registry = _load()
    try:
        b = registry.get(building_id)
    except KeyError as err:
        console.print(f"[red]{err.args[0]}[/red]")
        raise typer.Exit(1) from None
    info = Table("field", "value", show_header=False)
    for k, v in b.model_dump(exclude={"sensors"}).items():
        info.add_row(k, str(v))
    console.print(info)
    sensors = Table("sensor_id", "metric", "unit", "offset", "scale")
    for s in b.sensors:
        sensors.add_row(s.sensor_id, s.metric, s.unit, f"{s.offset:g}", f"{s.scale:g}")
    console.print(sensors)


@buildings_app.command("validate")
def validate(
    path: Path = typer.Argument(None, help="Registry file to check; default the configured one."),
    mirror: bool = typer.Option(False, "--mirror", help="Also upsert it into reference.buildings."),
) -> None:
    """Check a registry file; every problem is printed with its line and field. Exit 1 if any."""
    from lakehouse.registry_file import mirror_registry

    target, registry = _load(path)
    if not target.exists():
        console.print(f"[red]{target} does not exist[/red]")
        raise typer.Exit(1)
    console.print(f"{target}: OK, {len(registry)} building(s) at {len(registry.site_ids())} site(s), "
                  f"{sum(len(b.sensors) for b in registry)} sensor(s)")
    if mirror:
        result = mirror_registry(registry)
        console.print(f"reference.buildings v{result.version}: {result.rows_inserted} inserted, {result.rows_updated} updated")
