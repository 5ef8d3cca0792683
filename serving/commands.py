"""CLI: `wattflow serve` (tensorflow_model_server's flags) and `wattflow models deploy`."""

from __future__ import annotations

from typing import Optional

import typer

from wattflow.cli_groups import app, models_app


@app.command(
    "serve",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []},
    add_help_option=False,
)
def serve_command(ctx: typer.Context) -> None:
    """Run the TF-Serving-compatible model server; takes tensorflow_model_server's flags (--port=8500 ...).

    Without --model_config_file or --model_base_path it serves the deployed models of this installation
    (<model_base_path>/models.config, polled) on the ports in settings.
    """
    from serving.server.flags import build_parser, parse_flags
    from serving.server.main import serve
    from wattflow.settings import get_settings

    argv = list(ctx.args)
    if "--help" in argv or "-h" in argv:
        build_parser("wattflow serve").print_help()
        raise typer.Exit(0)
    if not any(arg.startswith(("--model_config_file", "--model_base_path")) for arg in argv):
        settings = get_settings()
        config_file = settings.model_base_path / "models.config"
        if not config_file.exists():
            typer.echo(f"no model deployed yet ({config_file} is missing): run `wattflow models deploy` first", err=True)
            raise typer.Exit(2)
        defaults = [
            f"--model_config_file={settings.model_base_path / 'models.config'}",
            f"--model_config_file_poll_wait_seconds={max(1, int(settings.serving.poll_wait_s))}",
            f"--port={settings.serving.grpc_port}",
            f"--rest_api_port={settings.serving.rest_port}",
        ]
        given = {arg.split("=", 1)[0] for arg in argv}
        argv = [d for d in defaults if d.split("=", 1)[0] not in given] + argv
    serve(parse_flags(argv, prog="wattflow serve"))


@models_app.command("deploy")
def deploy_command(
    version: Optional[int] = typer.Option(None, "--version", help="Registry version to deploy (default: the champion)."),
    alias: str = typer.Option("champion", "--alias", help="Registry alias to deploy when --version is not given."),
    server: Optional[str] = typer.Option(
        None, "--server", help="gRPC address of a running server: wait for the version before moving labels."
    ),
    timeout_s: float = typer.Option(120.0, "--timeout", help="How long to wait for the server to load it."),
) -> None:
    """Export a registry version to <model_base_path>/<model_name>/<version>/ and update models.config."""
    from serving.export import deploy
    from wattflow.settings import get_settings

    from serving.client import VersionLoadFailed
    from serving.export import ExportError

    try:
        result = deploy(get_settings(), version=version, alias=alias, server_target=server, timeout_s=timeout_s)
    except (ExportError, VersionLoadFailed, TimeoutError) as exc:
        typer.echo(f"deploy failed: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(
        f"deployed {result.model_name} version {result.version} at {result.version_dir} "
        f"(labels: {', '.join(f'{k}={v}' for k, v in sorted(result.labels.items())) or 'none'})"
    )
