"""`wattflow tune|train|backtest` and `wattflow models history|rollback`."""

from __future__ import annotations

import json
import sys
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from wattflow.cli_groups import app, models_app

console = Console(stderr=True)


def _parse_time(value: str | None, name: str):
    import pandas as pd

    if value is None:
        return None
    try:
        ts = pd.Timestamp(value)
    except ValueError as err:
        raise typer.BadParameter(f"{value!r} is not a date or timestamp", param_hint=name) from err
    return ts.tz_localize("UTC") if ts.tz is None else ts.tz_convert("UTC")


@app.command("tune")
def tune_command(
    trials: int = typer.Option(20, "--trials", min=1, help="Trials to add to the study (it resumes where it stopped)."),
    timeout: Optional[float] = typer.Option(None, "--timeout", help="Stop starting trials after this many seconds."),
    building: Optional[list[str]] = typer.Option(None, "--building-id", help="Restrict to these buildings (repeatable)."),
) -> None:
    """Optuna search over units, layers, dropout, learning rate, batch size and lookback on gold features."""
    from lakehouse.engine import get_engine
    from ml.pipeline import building_timezones, default_train_end, read_features
    from ml.tuning import tune
    from wattflow.settings import get_settings

    settings = get_settings()
    engine = get_engine(settings)
    frame, ref = read_features(engine, building)
    if frame.empty:
        console.print("[red]gold.features is empty: build features first[/red]")
        raise typer.Exit(1)
    train_end = default_train_end(frame, settings.model.backtest_days)
    result = tune(frame[frame["ts"] < train_end], settings, n_trials=trials, timeout_s=timeout,
                  timezones=building_timezones(engine, settings))
    out = Table("study", "trials", "complete", "pruned", "best val loss", "best params")
    out.add_row(result.study_name, str(result.n_trials), str(result.n_complete), str(result.n_pruned),
                f"{result.best_value:.4f}", json.dumps(result.best))
    Console().print(out)


@app.command("train")
def train_command(
    building: Optional[list[str]] = typer.Option(None, "--building-id", help="Restrict to these buildings (repeatable)."),
    start: Optional[str] = typer.Option(None, help="First feature day (UTC)."),
    end: Optional[str] = typer.Option(None, help="Day after the last feature day (UTC)."),
    trials: int = typer.Option(0, "--trials", min=0, help="Tune first with this many Optuna trials."),
) -> None:
    """Train on gold features, backtest against the champion and baselines, log to MLflow, register, gate."""
    from lakehouse.engine import get_engine
    from ml.pipeline import train_and_register
    from wattflow.settings import get_settings

    settings = get_settings()
    outcome = train_and_register(get_engine(settings), settings, building, _parse_time(start, "--start"),
                                 _parse_time(end, "--end"), tune_trials=trials)
    Console().print_json(json.dumps({
        "run_id": outcome.run_id, "model": outcome.model_name, "version": outcome.version,
        "promoted": outcome.decision.promoted, "reason": outcome.decision.reason,
        "table": outcome.dataset.uri, "delta_version": outcome.dataset.version, "backtest": outcome.backtest,
    }, default=str))


def _metrics_table(summary: dict) -> Table:
    out = Table("forecast", "MAE", "RMSE", "CV(RMSE)", "NMBE", "MAPE", title=f"building {summary['building_id']}, {summary['n_hours']} h")
    rows = {"model": summary["model"], **summary["baselines"], **summary.get("yardstick", {})}
    for name, m in rows.items():
        out.add_row(name, f"{m['mae']:.3f}", f"{m['rmse']:.3f}", f"{m['cv_rmse']:.1%}", f"{m['nmbe']:+.1%}", f"{m['mape']:.1%}")
    return out


@app.command("backtest")
def backtest_command(
    building_id: str = typer.Option(..., "--building-id", help="The building to backtest."),
    train_end: str = typer.Option(..., "--train-end", help="Train on data before this date; backtest day-ahead after it."),
    horizon: int = typer.Option(24, "--horizon", min=1, help="Forecast horizon in hours."),
    trials: int = typer.Option(0, "--trials", min=0, help="Optuna trials before training."),
    as_json: bool = typer.Option(False, "--json", help="Write the result object to stdout as JSON."),
    yardstick: bool = typer.Option(True, "--yardstick/--no-yardstick", help="Also score a gradient-boosting model on the same hours."),
) -> None:
    """Bring your own building: train before --train-end, forecast each later day at local midnight, compare with baselines."""
    from lakehouse.engine import get_engine
    from data_quality.policy import BatchRejected
    from ml.pipeline import NoTrainingData, backtest_building
    from wattflow.settings import get_settings

    settings = get_settings()
    try:
        summary, _ = backtest_building(get_engine(settings), settings, building_id, _parse_time(train_end, "--train-end"),
                                       horizon_h=horizon, trials=trials, yardstick=yardstick)
    except (NoTrainingData, ValueError) as err:
        console.print(f"[red]{err}[/red]")
        raise typer.Exit(1) from None
    except BatchRejected as err:
        console.print(f"[red]{err}. The readings stay in bronze: correct the source (its unit or its clock, e.g. "
                      f"`wattflow ingest file --energy-unit` or `--clock`) and ingest it again.[/red]")
        raise typer.Exit(1) from None
    if as_json:
        sys.stdout.write(json.dumps(summary) + "\n")
        return
    Console().print(_metrics_table(summary))
    spec = summary.get("window_spec", {})
    if spec.get("dropped_features"):
        console.print(f"features the building lacks, left out of the model: {', '.join(spec['dropped_features'])}")
    sources = summary.get("weather_forecast", {})
    if sources.get("persistence"):
        console.print(f"weather forecast: {sources['persistence']:,} of the scored hours had no issued forecast and used the "
                      "observation 24 h before (persistence); land issued ones with `wattflow ingest weather --historical-forecast`")


@models_app.command("history")
def history_command(
    alias: Optional[str] = typer.Option("champion", help="Only moves of this alias; 'all' for every alias."),
    as_json: bool = typer.Option(False, "--json", help="JSON lines instead of a table."),
) -> None:
    """Who was champion when: every alias move with time, reason and figures."""
    from dataclasses import asdict

    from ml import registry, tracking
    from wattflow.settings import get_settings

    settings = get_settings()
    tracking.configure(settings)
    events = [e for e in registry.history(settings.model.model_name) if alias in (None, "all") or e.alias == alias]
    if as_json:
        for e in events:
            sys.stdout.write(json.dumps(asdict(e), default=str) + "\n")
        return
    out = Table("#", "time", "alias", "version", "previous", "action", "reason", "by", title=settings.model.model_name)
    for e in events:
        out.add_row(str(e.seq), e.time, e.alias, e.version, e.previous_version or "-", e.action, e.reason, e.actor)
    Console().print(out)


@models_app.command("rollback")
def rollback_command(reason: str = typer.Option("manual rollback", help="Recorded with the alias move.")) -> None:
    """Move champion back to the version that was champion before the current one."""
    from ml import registry, tracking
    from wattflow.settings import get_settings

    settings = get_settings()
    tracking.configure(settings)
    try:
        event = registry.rollback(settings.model.model_name, reason)
    except registry.NoPreviousChampion as err:
        console.print(f"[red]{err}[/red]")
        raise typer.Exit(1) from None
    Console().print(f"champion of {settings.model.model_name}: v{event.previous_version} -> v{event.version} at {event.time}")


@models_app.command("lineage")
def lineage_command(version: str = typer.Argument(..., help="Registered version, or an alias such as champion.")) -> None:
    """The Delta table and version a registered model was trained on."""
    from ml import registry, tracking
    from wattflow.settings import get_settings

    settings = get_settings()
    tracking.configure(settings)
    if not version.isdigit():
        resolved = registry.alias_version(settings.model.model_name, version)
        if resolved is None:
            console.print(f"[red]no version has alias {version!r}[/red]")
            raise typer.Exit(1)
        version = resolved
    sys.stdout.write(json.dumps(registry.lineage(settings.model.model_name, version), default=str) + "\n")


