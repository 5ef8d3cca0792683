"""Hourly day-ahead forecasts into gold.forecasts: through the serving endpoint (gRPC), or scored in batch on
the compute runner (the champion SavedModel loaded once per worker) where the stages run on Spark."""

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
        "path": Param("auto", type="string", enum=["auto", "serving", "batch"],
                      description="serving: TF Serving over gRPC; batch: the champion on the compute runner; "
                                  "auto: batch when compute.runner is spark."),
    },
    tags=["wattflow", "serving", "forecast"],
    doc_md="""
### Forecast
For each building, builds the input window exactly as training does and calls TF Serving's
PredictionService over gRPC with the typed client (deadline, retries, seasonal-naive fallback
flagged as such). Writes `gold.forecasts` (and InfluxDB when configured). Idempotent per origin.

With `compute.runner: spark` (or the `path` param set to `batch`) the run scores in batch instead
(`wattflow score`): every building's day-ahead forecast from the champion SavedModel, chunk by chunk
on the runner, into the same table. TF Serving stays the path applications call.
""",
)
def forecast():
    def origins_of(context) -> list:
        from wattflow import pipeline
        from wattflow.assets import _utc

        params = context["params"]
        if params.get("start") and params.get("end"):
            return pipeline.forecast_origins(_utc(params["start"]), _utc(params["end"]), int(params["every_h"]))
        return [_utc(context["data_interval_end"])]

    @task.branch
    def choose_path(**context) -> str:
        from wattflow import pipeline

        return "score_batch" if pipeline.forecast_path(context["params"].get("path") or "auto") == "batch" \
            else "forecast_buildings"

    @task(outlets=[ASSETS["gold_forecasts"]])
    def forecast_buildings(**context) -> dict:
        from wattflow import pipeline

        return pipeline.forecast(origins_of(context), buildings=buildings_from_context(context))

    @task(outlets=[ASSETS["gold_forecasts"]])
    def score_batch(**context) -> dict:
        from wattflow import pipeline

        return pipeline.score(origins_of(context), buildings=buildings_from_context(context))

    choose_path() >> [forecast_buildings(), score_batch()]

forecast()
