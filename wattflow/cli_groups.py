"""Command groups of the `wattflow` CLI. Each package attaches its commands in its own `commands` module."""

import typer

app = typer.Typer(
    help="wattflow: building energy forecasting, from sensor readings to served forecasts.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
ingest_app = typer.Typer(help="Land readings and weather in the bronze tables.", no_args_is_help=True)
simulate_app = typer.Typer(help="Run the building simulator (publish onto MQTT, export files).", no_args_is_help=True)
tables_app = typer.Typer(help="Inspect and maintain Delta tables.", no_args_is_help=True)
buildings_app = typer.Typer(help="The building and sensor registry.", no_args_is_help=True)
models_app = typer.Typer(help="The model registry: history, rollback, deploy.", no_args_is_help=True)
lineage_app = typer.Typer(help="Lineage: from a served forecast back to its sources (OpenLineage events).",
                          no_args_is_help=True)

app.add_typer(ingest_app, name="ingest")
app.add_typer(simulate_app, name="simulate")
app.add_typer(tables_app, name="tables")
app.add_typer(buildings_app, name="buildings")
app.add_typer(models_app, name="models")
app.add_typer(lineage_app, name="lineage")
