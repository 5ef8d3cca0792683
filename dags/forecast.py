"""Hourly day-ahead forecasts through the serving endpoint (gRPC), into gold.forecasts."""

from __future__ import annotations

from airflow.sdk import Param, dag, task

from wattflow.assets import assets, buildings_from_context, default_args, start_date
from wattflow.settings import get_settings

ASSETS = assets()


@dag(
    dag_id="forecast",
    schedule="@hourly",
    start_date=start_date(),
    catchup=get_settings().airflow.catchup,
    max_active_runs=2,
    default_args=default_args(),
    params={
        "issued_at": Param(None, type=["null", "string"], description="Forecast origin (ISO, UTC); default: run's interval end."),
        "buildings": Param([], type="array", description="Limit to these building ids."),
    },
    tags=["wattflow", "serving", "forecast"],
    doc_md="""
### Forecast
For each building, builds the input window exactly as training does and calls TF Serving's
PredictionService over gRPC with the typed client (deadline, retries, seasonal-naive fallback
flagged as such). Writes `gold.forecasts` (and InfluxDB when configured). Idempotent per origin.
""",
)
def forecast():
    @task(outlets=[ASSETS["gold_forecasts"]])
    def forecast_buildings(**context) -> dict:
        from wattflow import pipeline
        from wattflow.assets import _utc

        issued_at = context["params"].get("issued_at") or context["data_interval_end"]
        return pipeline.forecast(_utc(issued_at), buildings=buildings_from_context(context))

    forecast_buildings()


forecast()
