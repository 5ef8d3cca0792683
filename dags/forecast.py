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
        "start": Param(None, type=["null", "string"], description="First forecast origin (ISO, UTC); default: the run's interval end."),
        "end": Param(None, type=["null", "string"], description="Origins up to this time (exclusive), one per `every_h` hours."),
        "every_h": Param(24, type="integer", minimum=1, description="Hours between origins when start/end are given."),
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
        import datetime as dt

        from wattflow import pipeline
        from wattflow.assets import _utc

        params = context["params"]
        if params.get("start") and params.get("end"):
            first, last, step = _utc(params["start"]), _utc(params["end"]), dt.timedelta(hours=int(params["every_h"]))
            origins = [first + i * step for i in range(int((last - first) / step) + (1 if (last - first) % step else 0))]
        else:
            origins = [_utc(context["data_interval_end"])]
        return pipeline.forecast(origins, buildings=buildings_from_context(context))

    forecast_buildings()


forecast()
