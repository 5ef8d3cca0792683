"""`wattflow savings verify --building-id ID --baseline START END --reporting START END [--model towt|lstm] [--json]`
and `wattflow savings monthly --as-of DATE` (what the monthly DAG runs)."""

from __future__ import annotations

import json
from typing import List, Tuple

import typer
from rich.console import Console
from rich.table import Table

from wattflow.cli_groups import app

console = Console()
savings_app = typer.Typer(help="Measurement and verification of savings (IPMVP Option C, ASHRAE Guideline 14).",
                          no_args_is_help=True)
app.add_typer(savings_app, name="savings")


def _pair(values: Tuple[str, str] | None, option: str) -> tuple[str, str]:
    if not values or len(values) != 2:
        raise typer.BadParameter(f"{option} takes two dates, START END (e.g. {option} 2024-01-01 2024-02-12); got {values!r}")
    return values[0], values[1]


@savings_app.command("verify")
def verify_command(
    building_id: str = typer.Option(..., "--building-id", help="The building, as in the registry."),
    baseline: Tuple[str, str] = typer.Option(..., "--baseline", help="Baseline period: START END (UTC dates, END exclusive).",
                                       show_default=False),
    reporting: Tuple[str, str] = typer.Option(..., "--reporting", help="Reporting period: START END (UTC dates, END exclusive).",
                                        show_default=False),
    model: str = typer.Option("towt", "--model", help="Baseline model: towt (CalTRACK hourly) or lstm (the platform's Keras model)."),
    confidence: float = typer.Option(None, "--confidence", help="Confidence the savings must be established at (default: settings, 0.68)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Avoided energy (kWh, %, cost, kgCO2e) with Guideline 14 fit statistics and FSU at 68% and 90%."""
    from lakehouse.engine import get_engine
    from monitoring.savings_verify import verify_building
    from monitoring.verification import Period, VerificationError
    from wattflow.settings import get_settings

    try:
        base = Period.of(*_pair(baseline, "--baseline"), name="--baseline")
        rep = Period.of(*_pair(reporting, "--reporting"), name="--reporting")
        if confidence is not None and not 0 < confidence < 1:
            raise VerificationError(f"--confidence {confidence} must lie between 0 and 1 (e.g. 0.9)")
        result, run_id = verify_building(get_engine(), get_settings(), building_id, base, rep, model=model, confidence=confidence)
    except VerificationError as err:
        raise typer.BadParameter(str(err)) from None
    payload = result.to_json()
    if as_json:
        typer.echo(json.dumps(payload, indent=2))
        return
    out = Table("figure", "value", title=f"Savings of {building_id} ({model}), IPMVP Option C")
    out.add_row("baseline", f"{payload['baseline']['start'][:10]} .. {payload['baseline']['end'][:10]}, {result.baseline.n_hours} h "
                f"({result.baseline.excluded_hours} excluded)")
    out.add_row("fit CV(RMSE) / NMBE", f"{result.fit.cv_rmse:.1%} (≤ 30%) / {result.fit.nmbe:+.2%} (±10%): "
                + ("meets Guideline 14" if result.fit_acceptable else "FAILS Guideline 14"))
    out.add_row("reporting", f"{payload['reporting']['start'][:10]} .. {payload['reporting']['end'][:10]}, {result.reporting.n_hours} h "
                f"({result.reporting.excluded_hours} excluded)")
    out.add_row("metered / adjusted baseline", f"{result.metered_kwh:,.0f} / {result.adjusted_baseline_kwh:,.0f} kWh")
    pct = "" if result.savings_pct is None else f" ({result.savings_pct:.1f}%)"
    out.add_row("avoided energy", f"{result.savings_kwh:,.0f} kWh{pct}")
    for level, fsu, unc in ((68, payload["fsu_68_pct"], result.uncertainty_68_kwh), (90, payload["fsu_90_pct"], result.uncertainty_90_kwh)):
        out.add_row(f"FSU at {level}%", "n/a" if fsu is None else f"{fsu:.1f}% (± {unc:,.0f} kWh)")
    out.add_row("cost / carbon", f"{result.cost:,.2f} {result.currency} / {result.kgco2e:,.0f} kgCO2e")
    out.add_row("effective n'", f"{result.fit.n_effective:.0f} of {result.fit.n_hours} (lag-1 ρ {result.fit.autocorrelation:.2f})")
    console.print(out)
    for note in result.notes:
        console.print(f"  - {note}")
    if run_id:
        console.print(f"MLflow run: {run_id}")


@savings_app.command("monthly")
def monthly_command(
    as_of: str = typer.Option(..., "--as-of", help="Verify every month up to this UTC date (exclusive)."),
    models: List[str] = typer.Option(None, "--model", help="Baseline model(s); default settings savings.monthly_models."),
) -> None:
    """Verified savings per building and month for every level shift monitoring recorded, into gold.savings."""
    from lakehouse.engine import get_engine
    from monitoring.savings_verify import monthly_savings
    from wattflow.settings import get_settings

    outcome = monthly_savings(get_engine(), get_settings(), as_of, models=models or None)
    console.print(f"gold.savings: {outcome.rows} row(s) for {', '.join(outcome.buildings) or 'no building'}")
    for what, why in outcome.skipped.items():
        console.print(f"  skipped {what}: {why}")
