"""The facility managers' dashboard: portfolio overview and building pages, served by Dash.

`wattflow dashboard` starts it; `create_app(settings)` builds the Dash app for tests and WSGI servers.
Imports stay light here: Dash and Plotly load inside `wattflow.dashboard.app`.
"""
