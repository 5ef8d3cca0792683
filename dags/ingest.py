"""Hourly ingestion of sensor readings and weather into bronze (Delta)."""

from __future__ import annotations

from airflow.sdk import Param, dag, task

from wattflow.assets import assets, buildings_from_context, default_args, start_date, window_from_context
from wattflow.settings import get_settings

ASSETS = assets()
PARAMS = {
    "start": Param(None, type=["null", "string"], description="Override the interval start (ISO, UTC)."),
    "end": Param(None, type=["null", "string"], description="Override the interval end (ISO, UTC)."),
    "buildings": Param([], type="array", description="Limit to these building ids (default: all)."),
}


SENSORS_CRON = "@hourly"


def sensors_schedule():
    """Hourly; with `stream_trigger.enabled`, also whenever readings arrive on the sensor topic (AssetWatcher)."""
    if not get_settings().stream_trigger.enabled:
        return SENSORS_CRON
    from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable

    from wattflow.stream_trigger import sensor_stream_asset

    return AssetOrTimeSchedule(timetable=CronTriggerTimetable(SENSORS_CRON, timezone="UTC"), assets=sensor_stream_asset())


@dag(
    dag_id="ingest_sensors",
    schedule=sensors_schedule(),
    start_date=start_date(),
    catchup=get_settings().airflow.catchup,
    max_active_runs=4,
    default_args=default_args(),
    params=PARAMS,
    tags=["wattflow", "ingest", "bronze"],
    doc_md="""
### Ingest sensor readings
Lands one data interval of readings from the configured source (`WATTFLOW_AIRFLOW__SENSOR_SOURCE`:
simulator replay, MQTT or InfluxDB) into `bronze.sensor_readings`; bad records go to
`quarantine.sensor_readings` with their reason. Idempotent per interval: re-runs and backfills change
nothing. Emits the **bronze_sensor_readings** asset with the interval in its extra.

Hourly, and with `WATTFLOW_STREAM_TRIGGER__ENABLED=true` also event-driven: readings arriving on the Kafka
sensor topic start a run through the **sensor_readings_topic** asset's watcher (run by the triggerer), for
the hours those readings fall in (`wattflow/stream_trigger.py`).
""",
)
def ingest_sensors():
    @task(outlets=[ASSETS["bronze_readings"]])
    def land_sensor_readings(**context) -> dict:
        from wattflow import pipeline

        start, end = window_from_context(context)
        result = pipeline.ingest_sensors(start, end, buildings=buildings_from_context(context))
        context["outlet_events"][ASSETS["bronze_readings"]].extra = {"start": start.isoformat(), "end": end.isoformat()}
        return result

    land_sensor_readings()


@dag(
    dag_id="ingest_weather",
    schedule="@hourly",
    start_date=start_date(),
    catchup=get_settings().airflow.catchup,
    max_active_runs=4,
    default_args=default_args(),
    params=PARAMS,
    tags=["wattflow", "ingest", "bronze", "weather"],
    doc_md="""
### Ingest weather
Lands observations and day-ahead forecasts (with their issue time) for every site into
`bronze.weather`. Idempotent per interval. Emits the **bronze_weather** asset.
""",
)
def ingest_weather():
    @task(outlets=[ASSETS["bronze_weather"]])
    def land_weather(**context) -> dict:
        from wattflow import pipeline

        start, end = window_from_context(context)
        result = pipeline.ingest_weather(start, end)
        context["outlet_events"][ASSETS["bronze_weather"]].extra = {"start": start.isoformat(), "end": end.isoformat()}
        return result

    land_weather()


ingest_sensors()
ingest_weather()
