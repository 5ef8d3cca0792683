"""`wattflow dashboard [--host H] [--port P]`: the facility managers' dashboard."""

from __future__ import annotations

import typer

from wattflow.cli_groups import app


@app.command("dashboard")
def dashboard(
    host: str = typer.Option(None, "--host", help="Interface to listen on (default: settings.dashboard.host)."),
    port: int = typer.Option(None, "--port", help="Port to listen on (default: settings.dashboard.port)."),
    debug: bool = typer.Option(False, "--debug", help="Dash debug mode (reloader, error pages)."),
) -> None:
    """Portfolio overview and building pages: energy, forecasts, anomalies, savings, model accuracy."""
    from wattflow.dashboard.app import serve
    from wattflow.settings import get_settings

    settings = get_settings()
    serve(settings, host or settings.dashboard.host, port or settings.dashboard.port, debug)
