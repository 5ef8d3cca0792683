"""Page layouts: the portfolio overview and one building. Functions of the page data, no I/O."""

from __future__ import annotations

import math
from html import escape
from typing import Any

import pandas as pd
from dash import dcc, html

from wattflow.dashboard.data import BuildingView, Overview

SPANS = (7, 14, 28, 90, 365)


def _num(value: float, digits: int = 0) -> str:
    return "–" if value is None or (isinstance(value, float) and not math.isfinite(value)) else f"{value:,.{digits}f}"


def _change(this: float, last: float) -> html.Span:
    if not last:
        return html.Span("no data last week", className="change")
    change = this / last - 1.0
    return html.Span(f"{change:+.1%} vs last week", className="change up" if change > 0 else "change down")


def _when(ts: pd.Timestamp, timezone: str | None = None) -> str:
    if ts is None or pd.isna(ts):
        return "–"
    return pd.Timestamp(ts).tz_convert(timezone or "UTC").strftime("%a %d %b %Y %H:%M")


def _kpi(title: str, value: str, unit: str, change: html.Span, kpi_id: str) -> html.Div:
    return html.Div([html.Div(title, className="kpi-title"), html.Div([html.Span(value, className="kpi-value"),
                     html.Span(f" {unit}", className="kpi-unit")]), change], className="kpi", id=kpi_id)


def overview_page(data: Overview) -> html.Div:
    if data.end is None:
        return html.Div([html.H2("Portfolio"), html.P("No energy data yet: run the pipeline (make demo) and this page fills in.",
                                                       className="empty")], id="overview")
    totals = data.totals
    cost_kpis = [
        _kpi(f"Cost ({currency})", _num(this), currency, _change(this, last), f"kpi-cost-{currency}")
        for currency, (this, last) in sorted(totals["cost"].items())
    ]
    week = f"{_when(data.end - pd.Timedelta(days=7))} – {_when(data.end)} UTC"
    weekly = data.weekly.sort_values("this_week_kwh", ascending=False)
    chart = {
        "data": [
            {"type": "bar", "name": "last week", "x": weekly["building_id"].tolist(), "y": _values(weekly["last_week_kwh"]),
             "marker": {"color": "#b0bec5"}},
            {"type": "bar", "name": "this week", "x": weekly["building_id"].tolist(), "y": _values(weekly["this_week_kwh"]),
             "marker": {"color": "#1e88e5"}, "customdata": weekly["name"].tolist(),
             "hovertemplate": "%{customdata}<br>%{y:,.0f} kWh<extra>this week</extra>"},
        ],
        "layout": {"barmode": "group", "height": 320, "margin": {"l": 60, "r": 10, "t": 50, "b": 40},
                   "title": {"text": "Energy per building", "x": 0.01}, "yaxis": {"title": {"text": "kWh"}, "gridcolor": "#eceff1"},
                   "legend": {"orientation": "h", "y": 1.02, "x": 1, "xanchor": "right", "yanchor": "bottom"},
                   "plot_bgcolor": "white", "paper_bgcolor": "white"},
    }
    return html.Div([
        html.H2("Portfolio"),
        html.P(f"Rolling week {week}; data up to {_when(data.end)} UTC.", className="subtitle"),
        html.Div([
            _kpi("Energy", _num(totals["this_week_kwh"]), "kWh", _change(totals["this_week_kwh"], totals["last_week_kwh"]), "kpi-energy"),
            *cost_kpis,
            _kpi("Carbon", _num(totals["this_week_co2_kg"]), "kgCO2e", _change(totals["this_week_co2_kg"], totals["last_week_co2_kg"]), "kpi-co2"),
        ], className="kpis"),
        dcc.Graph(id="portfolio-chart", figure=chart, config={"displaylogo": False}),
        html.H3("Worst anomalies"),
        _anomaly_table(data.worst, with_building=True, table_id="worst-anomalies"),
        html.H3("Buildings"),
        _building_table(data.weekly, data.buildings),
    ], id="overview")


def _html_table(head: list[str], rows: list[list[tuple[str, str]]], row_class: str, table_id: str) -> dcc.Markdown:
    """A table as one raw-HTML component: Dash's renderer pays per component, and a table of Td
    components costs more browser time than the rest of the page (cells are (html, css class))."""
    header = "".join(f"<th>{escape(h)}</th>" for h in head)
    body = "".join(
        f'<tr class="{row_class}">' + "".join(f'<td class="{cls}">{cell}</td>' for cell, cls in row) + "</tr>" for row in rows
    )
    return dcc.Markdown(f'<table class="table"><thead><tr>{header}</tr></thead><tbody>{body}</tbody></table>',
                        dangerously_allow_html=True, id=table_id, className="table-wrap")


def _link(href: str, text: str) -> str:
    return f'<a href="{escape(href)}">{escape(text)}</a>'


def _anomaly_table(anomalies: pd.DataFrame, *, with_building: bool, table_id: str, timezone: str | None = None) -> Any:
    if anomalies.empty:
        return html.P("No anomalies in this period.", className="empty", id=table_id)
    head = (["Building"] if with_building else []) + ["Kind", f"Start ({timezone or 'UTC'})", "Hours", "Excess kWh", "Cost", "kgCO2e", "Severity", "Recommendation"]
    rows = []
    for row in anomalies.to_dict("records"):
        cells: list[tuple[str, str]] = []
        if with_building:
            label = row.get("name") if isinstance(row.get("name"), str) else row["building_id"]
            cells.append((_link(f"/building/{row['building_id']}", f"{row['building_id']} · {label}"), ""))
        cells += [
            (escape(row["kind"].replace("_", " ")), ""), (_when(row["start"], timezone), ""), (str(row["hours"]), "num"),
            (_num(row["excess_kwh"], 1), "num"), (f"{_num(row['cost'], 2)} {escape(row['currency'] or '')}", "num"),
            (_num(row["co2_kg"], 1), "num"), (escape(str(row["severity"])), f"sev-{escape(str(row['severity']))}"),
            (escape(str(row["recommendation"])), "advice"),
        ]
        rows.append(cells)
    return _html_table(head, rows, "anomaly-row", table_id)


def _building_table(weekly: pd.DataFrame, buildings: pd.DataFrame) -> dcc.Markdown:
    meta = buildings.set_index("building_id")
    rows = []
    for row in weekly.sort_values("building_id").to_dict("records"):
        b = row["building_id"]
        use = meta["use_type"].get(b, "") if "use_type" in meta else ""
        area = meta["floor_area_m2"].get(b, float("nan")) if "floor_area_m2" in meta else float("nan")
        change = row["change"]
        rows.append([
            (_link(f"/building/{b}", f"{b} · {row['name']}"), ""), (escape(str(use)), ""), (_num(area), "num"),
            (_num(row["this_week_kwh"]), "num"), (_num(row["last_week_kwh"]), "num"),
            ("–" if not math.isfinite(change) else f"{change:+.1%}", "num"),
            (f"{_num(row['this_week_cost'])} {escape(str(row['currency']))}", "num"), (_num(row["this_week_co2_kg"]), "num"),
        ])
    head = ["Building", "Use", "Floor m²", "kWh this week", "kWh last week", "Change", "Cost this week", "kgCO2e this week"]
    return _html_table(head, rows, "building-row", "buildings")


def _local_x(ts: pd.Series, timezone: str) -> list[str]:
    """Wall-clock times of the building as ISO strings (plotly has no time zones on axes)."""
    return ts.dt.tz_convert(timezone).dt.strftime("%Y-%m-%d %H:%M").tolist() if len(ts) else []


def _values(series: pd.Series):
    return series.astype("float64").round(3).to_numpy()


def building_figure(view: BuildingView) -> dict[str, Any]:
    """Actual vs forecast with the p10–p90 band and the anomalous hours marked.

    A plain figure dict rather than `go.Figure`: the graph-objects validation costs more than the
    rest of the page on a busy server, and these traces are fixed by this function anyway.
    """
    s = view.series
    tz = view.building.get("timezone") or "UTC"
    x = _local_x(s["ts"], tz)
    resolution = "hourly" if view.bucket_h == 1 else f"{view.bucket_h} h means"
    traces: list[dict[str, Any]] = [
        {"type": "scatter", "x": x, "y": _values(s["yhat_p90"]), "name": "forecast p90", "mode": "lines",
         "line": {"width": 0}, "showlegend": False, "hoverinfo": "skip"},
        {"type": "scatter", "x": x, "y": _values(s["yhat_p10"]), "name": "forecast p10–p90", "mode": "lines",
         "line": {"width": 0}, "fill": "tonexty", "fillcolor": "rgba(30,136,229,0.18)", "hoverinfo": "skip"},
        {"type": "scatter", "x": x, "y": _values(s["yhat_p50"]), "name": "forecast p50", "mode": "lines",
         "line": {"color": "#1e88e5", "width": 1.5, "dash": "dot"}},
        {"type": "scatter", "x": x, "y": _values(s["energy_kwh"]), "name": "actual", "mode": "lines",
         "line": {"color": "#263238", "width": 1.5}},
    ]
    points = view.anomaly_points
    if not points.empty:
        traces.append({
            "type": "scatter", "x": _local_x(points["ts"], tz), "y": _values(points["energy_kwh"]), "name": "anomaly",
            "mode": "markers", "marker": {"color": "#e53935", "size": 8, "symbol": "x"},
            "text": points["kind"].str.replace("_", " ").tolist(), "hovertemplate": "%{text}<br>%{y:,.1f} kWh<extra>anomaly</extra>",
        })
    shapes = [
        {"type": "rect", "xref": "x", "yref": "paper", "y0": 0, "y1": 1, "line": {"width": 0}, "fillcolor": "#e53935", "opacity": 0.12,
         "x0": pd.Timestamp(row["start"]).tz_convert(tz).strftime("%Y-%m-%d %H:%M"),
         "x1": pd.Timestamp(row["end"]).tz_convert(tz).strftime("%Y-%m-%d %H:%M")}
        for row in view.anomalies.to_dict("records")
    ]
    layout = {
        "height": 420, "margin": {"l": 50, "r": 10, "t": 60, "b": 40}, "hovermode": "x unified", "shapes": shapes,
        "title": {"text": f"Actual vs forecast, last {view.days} days ({resolution}, local time {tz})", "x": 0.01},
        "yaxis": {"title": {"text": "kWh per hour"}, "gridcolor": "#eceff1"}, "xaxis": {"type": "date", "gridcolor": "#eceff1"},
        "legend": {"orientation": "h", "y": 1.02, "x": 1, "xanchor": "right", "yanchor": "bottom"},
        "plot_bgcolor": "white", "paper_bgcolor": "white",
    }
    return {"data": traces, "layout": layout}


def building_page(view: BuildingView) -> html.Div:
    b = view.building
    acc = view.accuracy
    savings = view.savings
    spans = html.Div([html.Span("Span: ")] + [
        dcc.Link(f"{d} d", href=f"/building/{b['building_id']}?days={d}", className="span" + (" active" if d == view.days else ""))
        for d in SPANS], className="spans")
    model = html.Div([
        html.Div([html.Span("Served model: "), html.B(view.served_model or "none yet", id="served-model")]),
        html.Div([html.Span("Registry champion: "), html.B(view.champion or "not known", id="champion-model")]),
        html.Div([html.Span(f"Accuracy, last {view.accuracy_days} days ({acc.n_hours} h): "),
                  html.B(f"MAE {_num(acc.mae, 2)} kWh · CV(RMSE) {_num(acc.cv_rmse * 100 if math.isfinite(acc.cv_rmse) else acc.cv_rmse, 1)} % · "
                         f"NMBE {_num(acc.nmbe * 100 if math.isfinite(acc.nmbe) else acc.nmbe, 1)} %", id="accuracy")]),
    ], className="model-box")
    recs = [html.Li([html.B(f"{r['kind'].replace('_', ' ')}: "), r["recommendation"],
                     html.Span(f" — saves ≈ {_num(max(r['excess_kwh'], 0.0) if r['kind'] != 'stuck_meter' else 0.0, 1)} kWh, "
                               f"{_num(r['cost'], 2)} {r['currency'] or ''}, {_num(r['co2_kg'], 1)} kgCO2e", className="saving")],
                    className="recommendation") for r in view.anomalies.to_dict("records")]
    return html.Div([
        html.Div(dcc.Link("← Portfolio", href="/"), className="back"),
        html.H2(f"{b['building_id']} · {b['name']}"),
        html.P(f"{b.get('use_type', '')}, {_num(b.get('floor_area_m2', float('nan')))} m², {b.get('timezone', '')}; tariff "
               f"{b.get('tariff_per_kwh', float('nan')):.3f} {b.get('currency', '')}/kWh, grid {b.get('grid_emission_factor_kg_per_kwh', float('nan')):.3f} kgCO2e/kWh. "
               f"Data up to {_when(view.end, b.get('timezone'))} local.", className="subtitle"),
        model,
        spans,
        dcc.Graph(id="building-chart", figure=building_figure(view), config={"displaylogo": False}),
        html.H3("Recommendations"),
        html.P(f"Fixing {_these(savings['anomalies'])} would have saved ≈ {_num(savings['excess_kwh'], 1)} kWh, "
               f"{_num(savings['cost'], 2)} {savings['currency']} and {_num(savings['co2_kg'], 1)} kgCO2e.", id="savings-total")
        if savings["anomalies"] else html.P("No anomalies in this span.", className="empty", id="savings-total"),
        html.Ul(recs, id="recommendations"),
        html.H3("Anomalies"),
        _anomaly_table(view.anomalies, with_building=False, table_id="building-anomalies", timezone=b.get("timezone")),
    ], id="building")


def _these(count: int) -> str:
    return "this anomaly" if count == 1 else f"these {count} anomalies"


def not_found(message: str) -> html.Div:
    return html.Div([html.Div(dcc.Link("← Portfolio", href="/"), className="back"), html.H2("Not found"), html.P(message)], id="not-found")


def span_from_query(search: str | None, default: int) -> int:
    from urllib.parse import parse_qs

    values: dict[str, Any] = parse_qs((search or "").lstrip("?"))
    try:
        days = int(values.get("days", [default])[0])
    except (TypeError, ValueError):
        return default
    return min(max(days, 1), 3660)
