"""The savings pages: `/savings` (buildings with verified savings) and `/savings/<id>[?model=towt|lstm]`.

Monthly verified savings from `gold.savings` (IPMVP Option C): the adjusted baseline (the counterfactual)
beside the metered use per month, the cumulative savings with its 90% uncertainty band, and the baseline's
Guideline 14 fit statistics. The cumulative band adds the monthly uncertainties linearly: every month is
predicted by the same baseline model, so their errors are correlated and do not average out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

import numpy as np
import pandas as pd
from dash import dcc, html

from lakehouse.schemas import SAVINGS

SAVINGS_COLUMNS = ["building_id", "month", "model", "baseline_start", "baseline_end", "reporting_start", "reporting_end",
                   "n_hours", "excluded_hours", "metered_kwh", "adjusted_baseline_kwh", "savings_kwh", "savings_pct",
                   "fsu_90_pct", "uncertainty_90_kwh", "cost", "currency", "kgco2e", "cv_rmse", "nmbe", "fit_acceptable"]


@dataclass(frozen=True)
class SavingsView:
    building: dict[str, Any]
    model: str
    models: list[str]
    months: pd.DataFrame  # one row per reporting month, with cumulative savings and band
    max_cv_rmse: float
    max_abs_nmbe: float


def read_savings(data: Any) -> pd.DataFrame:
    return data.reader.cached(SAVINGS, "all", lambda v: data.reader.read(SAVINGS, SAVINGS_COLUMNS, version=v))


def savings_view(data: Any, building_id: str, model: str | None = None) -> SavingsView:
    buildings = data.buildings().set_index("building_id")
    if building_id not in buildings.index:
        raise KeyError(building_id)
    rows = read_savings(data)
    rows = rows[rows["building_id"] == building_id]
    models = sorted(rows["model"].unique())
    model = model if model in models else ("towt" if "towt" in models else (models[0] if models else "towt"))
    months = rows[rows["model"] == model].sort_values("month").reset_index(drop=True)
    months["cumulative_kwh"] = months["savings_kwh"].cumsum()
    band = months["uncertainty_90_kwh"].fillna(np.inf).cumsum()
    months["cumulative_low_kwh"] = months["cumulative_kwh"] - band
    months["cumulative_high_kwh"] = months["cumulative_kwh"] + band
    building = {"building_id": building_id, **buildings.loc[building_id].to_dict()}
    s = data.settings.savings
    return SavingsView(building, model, models, months, s.max_cv_rmse, s.max_abs_nmbe)


def model_from_query(search: str | None) -> str | None:
    values = parse_qs((search or "").lstrip("?")).get("model")
    return values[0] if values else None


def _num(value: Any, digits: int = 0) -> str:
    return "–" if value is None or pd.isna(value) or not np.isfinite(value) else f"{value:,.{digits}f}"


def savings_index(data: Any) -> html.Div:
    rows = read_savings(data)
    if rows.empty:
        return html.Div([html.H2("Verified savings"), html.P(
            "No verified savings yet: they appear once monitoring records a level shift and the monthly "
            "verify_savings DAG has run (or `wattflow savings monthly --as-of DATE`).", className="empty")], id="savings-index")
    totals = rows[rows["model"] == "towt"] if (rows["model"] == "towt").any() else rows
    per = totals.groupby("building_id").agg(savings_kwh=("savings_kwh", "sum"), cost=("cost", "sum"),
                                            currency=("currency", "first"), kgco2e=("kgco2e", "sum"), months=("month", "count"))
    items = [html.Li([dcc.Link(b, href=f"/savings/{b}"),
                      html.Span(f" {_num(r.savings_kwh)} kWh · {_num(r.cost, 2)} {r.currency} · {_num(r.kgco2e)} kgCO2e "
                                f"over {r.months} month(s)")], className="savings-row")
             for b, r in per.iterrows()]
    return html.Div([html.H2("Verified savings"), html.Ul(items, id="savings-buildings")], id="savings-index")


def savings_page(view: SavingsView) -> html.Div:
    b, months = view.building, view.months
    title = f"Savings · {b.get('name') or b['building_id']}"
    if months.empty:
        return html.Div([html.H2(title), html.P("No verified savings for this building yet.", className="empty")], id="savings")
    first, last = months.iloc[0], months.iloc[-1]
    total = months["savings_kwh"].sum()
    counterfactual = months["adjusted_baseline_kwh"].sum()
    currency = str(first["currency"])
    labels = [pd.Timestamp(m).strftime("%b %Y") for m in months["month"]]
    kpis = html.Div([
        _kpi("Avoided energy", _num(total), "kWh", f"{100 * total / counterfactual:.1f}% of the adjusted baseline", "kpi-savings"),
        _kpi("Cost avoided", _num(months["cost"].sum(), 2), currency, "at the registry's tariff", "kpi-savings-cost"),
        _kpi("Carbon avoided", _num(months["kgco2e"].sum()), "kgCO2e", "at the grid factor", "kpi-savings-co2"),
        _kpi("Uncertainty (90%)", "± " + _num(last["cumulative_high_kwh"] - last["cumulative_kwh"]), "kWh",
             "sum of the monthly FSU bands", "kpi-savings-fsu"),
    ], className="kpis")
    by_month = {
        "data": [
            {"type": "bar", "name": "adjusted baseline (counterfactual)", "x": labels, "y": months["adjusted_baseline_kwh"].round(1).tolist(),
             "marker": {"color": "#b0bec5"}},
            {"type": "bar", "name": "metered", "x": labels, "y": months["metered_kwh"].round(1).tolist(), "marker": {"color": "#1e88e5"}},
        ],
        "layout": {"barmode": "group", "height": 320, "margin": {"l": 70, "r": 10, "t": 50, "b": 40},
                   "title": {"text": "Counterfactual vs metered, per month", "x": 0.01},
                   "yaxis": {"title": {"text": "kWh"}, "gridcolor": "#eceff1"},
                   "legend": {"orientation": "h", "y": 1.02, "x": 1, "xanchor": "right", "yanchor": "bottom"}},
    }
    cumulative = {
        "data": [
            {"type": "scatter", "mode": "lines", "name": "90% upper", "x": labels, "y": months["cumulative_high_kwh"].round(1).tolist(),
             "line": {"width": 0}, "showlegend": False, "hoverinfo": "skip"},
            {"type": "scatter", "mode": "lines", "name": "90% uncertainty", "x": labels, "y": months["cumulative_low_kwh"].round(1).tolist(),
             "line": {"width": 0}, "fill": "tonexty", "fillcolor": "rgba(67,160,71,0.2)"},
            {"type": "scatter", "mode": "lines+markers", "name": "cumulative savings", "x": labels,
             "y": months["cumulative_kwh"].round(1).tolist(), "line": {"color": "#43a047"}},
        ],
        "layout": {"height": 320, "margin": {"l": 70, "r": 10, "t": 50, "b": 40},
                   "title": {"text": "Cumulative avoided energy with its 90% uncertainty", "x": 0.01},
                   "yaxis": {"title": {"text": "kWh"}, "gridcolor": "#eceff1", "zeroline": True},
                   "legend": {"orientation": "h", "y": 1.02, "x": 1, "xanchor": "right", "yanchor": "bottom"}},
    }
    ok = bool(first["fit_acceptable"])
    fit = html.Table([
        html.Tr([html.Th("baseline"), html.Td(f"{pd.Timestamp(first['baseline_start']).date()} – {pd.Timestamp(first['baseline_end']).date()}")]),
        html.Tr([html.Th("model"), html.Td(view.model)]),
        html.Tr([html.Th("CV(RMSE)"), html.Td(f"{100 * first['cv_rmse']:.1f} % (Guideline 14: ≤ {100 * view.max_cv_rmse:.0f} %)")]),
        html.Tr([html.Th("NMBE"), html.Td(f"{100 * first['nmbe']:+.2f} % (Guideline 14: ±{100 * view.max_abs_nmbe:.0f} %)")]),
        html.Tr([html.Th("verdict"), html.Td("meets Guideline 14" if ok else "fails Guideline 14: savings indicative only",
                                              className="ok" if ok else "bad")]),
        html.Tr([html.Th("reporting hours"), html.Td(f"{int(months['n_hours'].sum()):,} used, {int(months['excluded_hours'].sum()):,} "
                                                     f"non-routine excluded")]),
        html.Tr([html.Th("FSU (90%), last month"), html.Td(f"{_num(last['fsu_90_pct'], 1)} %")]),
    ], id="fit-stats")
    switch = [dcc.Link(m, href=f"/savings/{b['building_id']}?model={m}", className="model-link") for m in view.models]
    return html.Div([
        html.H2(title),
        html.Div(f"IPMVP Option C · reporting {pd.Timestamp(first['reporting_start']).date()} – "
                 f"{pd.Timestamp(last['reporting_end']).date()} · baseline models: ", className="subtitle"), html.Div(switch),
        kpis,
        dcc.Graph(id="savings-months", figure=by_month, config={"displayModeBar": False}),
        dcc.Graph(id="savings-cumulative", figure=cumulative, config={"displayModeBar": False}),
        html.H3("Baseline fit"), fit,
    ], id="savings")


def _kpi(title: str, value: str, unit: str, note: str, kpi_id: str) -> html.Div:
    return html.Div([html.Div(title, className="kpi-title"), html.Div([html.Span(value, className="kpi-value"),
                     html.Span(f" {unit}", className="kpi-unit")]), html.Span(note, className="change")], className="kpi", id=kpi_id)
