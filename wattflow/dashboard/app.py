"""The Dash app: routing, the refresh tick, and the server entry point.

Near-real-time without re-reading: every `refresh_interval_s` the browser asks for the tables' Delta
versions; only when one moved does the page re-render, and then only the changed table's cached reads
are recomputed (`TableReader` keys them by version).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dash
from dash import Input, Output, State, dcc, html

from wattflow.dashboard import pages, savings_page
from wattflow.dashboard.data import DashboardData
from wattflow.log import get_logger

log = get_logger(__name__)


def require_login(server: Any, username: str, password: str) -> None:
    """HTTP basic authentication on every route but `/healthz` when a username and password are configured.

    The dashboard shows a portfolio's energy, costs and occupancy patterns: reachable beyond loopback
    (compose, Kubernetes), it asks who is looking. Behind TLS (an ingress) basic auth is what facility
    teams' browsers and password managers handle without extra parts.
    """
    import hmac

    from flask import Response, request

    @server.route("/healthz")
    def healthz() -> Response:
        return Response("ok", mimetype="text/plain")

    if not (username and password):
        return

    @server.before_request
    def check_credentials() -> Response | None:
        if request.path == "/healthz":
            return None
        auth = request.authorization
        given_user = (auth.username or "") if auth else ""
        given_password = (auth.password or "") if auth else ""
        # Both compared in constant time, so a wrong user name takes as long as a wrong password.
        user_ok = hmac.compare_digest(given_user.encode(), username.encode())
        password_ok = hmac.compare_digest(given_password.encode(), password.encode())
        if user_ok and password_ok:
            return None
        return Response("login required", 401, {"WWW-Authenticate": 'Basic realm="wattflow dashboard", charset="UTF-8"'})


def create_app(settings: Any, engine: Any | None = None, data: DashboardData | None = None) -> dash.Dash:
    data = data or DashboardData(settings, engine)
    app = dash.Dash(
        __name__, title="wattflow", assets_folder=str(Path(__file__).with_name("assets")),
        suppress_callback_exceptions=True, update_title=None,
    )
    app.wattflow_data = data  # type: ignore[attr-defined] - tests and the CLI reach the data layer here
    require_login(app.server, settings.dashboard.username, settings.dashboard.password)
    refresh_ms = int(settings.dashboard.refresh_interval_s * 1000)

    def layout() -> html.Div:
        return html.Div([
            dcc.Location(id="url"),
            dcc.Store(id="versions", data=_stringify(data.versions())),
            dcc.Interval(id="tick", interval=refresh_ms),
            html.Header([dcc.Link("wattflow · energy", href="/"), dcc.Link("savings", href="/savings", className="nav"),
                         html.Span(f"refreshes every {settings.dashboard.refresh_interval_s:g} s when the tables change",
                                   className="refresh")]),
            html.Main(id="page"),
        ])

    app.layout = layout

    @app.callback(Output("versions", "data"), Input("tick", "n_intervals"), State("versions", "data"), prevent_initial_call=True)
    def check_versions(_: int, known: dict[str, Any] | None) -> Any:
        current = _stringify(data.versions(fresh=True))
        return dash.no_update if current == known else current

    @app.callback(Output("page", "children"), Input("url", "pathname"), Input("url", "search"), Input("versions", "data"))
    def render(pathname: str | None, search: str | None, _versions: Any) -> Any:
        path = (pathname or "/").rstrip("/") or "/"
        if path == "/":
            return pages.overview_page(data.overview())
        if path.startswith("/building/"):
            building_id = path.removeprefix("/building/")
            days = pages.span_from_query(search, settings.dashboard.chart_days)
            try:
                return pages.building_page(data.building(building_id, days))
            except KeyError:
                return pages.not_found(f"No building {building_id!r} in the registry.")
        if path == "/savings":
            return savings_page.savings_index(data)
        if path.startswith("/savings/"):
            building_id = path.removeprefix("/savings/")
            try:
                return savings_page.savings_page(savings_page.savings_view(data, building_id, savings_page.model_from_query(search)))
            except KeyError:
                return pages.not_found(f"No building {building_id!r} in the registry.")
        return pages.not_found(f"No page at {path}.")

    return app


def _stringify(versions: dict[str, int | None]) -> dict[str, Any]:
    return {k: v for k, v in versions.items()}


def warm_up(data: DashboardData) -> None:
    """Run the shared reads, the champion lookup and one render of each page kind before the first
    visitor comes, so that nobody pays for the first Delta reads and Python's lazy imports."""
    data.champion()
    try:
        overview = data.overview()
        pages.overview_page(overview)
        if not overview.buildings.empty:
            pages.building_page(data.building(str(overview.buildings["building_id"].iloc[0])))
    except Exception as err:  # noqa: BLE001 - an empty or half-built home still serves pages
        log.warning("dashboard warm-up failed", error=str(err))


def serve(settings: Any, host: str, port: int, debug: bool = False) -> None:
    """Serve under gunicorn (one process, `dashboard.threads` threads: the version-keyed cache lives
    in the process, so more processes would each read the tables); Flask's own server in debug mode."""
    if debug:
        app = create_app(settings)
        warm_up(app.wattflow_data)  # type: ignore[attr-defined]
        app.run(host=host, port=port, debug=True)
        return
    from gunicorn.app.base import BaseApplication

    class DashboardServer(BaseApplication):
        def load_config(self) -> None:
            self.cfg.set("bind", f"{host}:{port}")
            self.cfg.set("workers", 1)
            self.cfg.set("worker_class", "gthread")
            self.cfg.set("threads", settings.dashboard.threads)
            self.cfg.set("timeout", 120)
            self.cfg.set("accesslog", None)
            # One control socket per user by default: a second dashboard (or any gunicorn) would clash.
            self.cfg.set("control_socket_disable", True)

        def load(self) -> Any:
            app = create_app(settings)
            warm_up(app.wattflow_data)  # type: ignore[attr-defined]
            log.info("dashboard listening", url=f"http://{host}:{port}/", lakehouse=settings.lakehouse_uri)
            return app.server

    DashboardServer().run()
