"""Bronze → silver (validated) → gold features, triggered by new bronze data."""

from __future__ import annotations

from airflow.sdk import Param, dag, task

from wattflow.assets import assets, buildings_from_context, default_args, start_date, window_from_context

ASSETS = assets()


@dag(
    dag_id="curate_and_validate",
    schedule=ASSETS["bronze_readings"] | ASSETS["bronze_weather"],
    start_date=start_date(),
    catchup=False,
    max_active_runs=1,
    default_args=default_args(),
    params={
        "start": Param(None, type=["null", "string"], description="Interval start (ISO, UTC) for manual runs."),
        "end": Param(None, type=["null", "string"], description="Interval end (ISO, UTC) for manual runs."),
        "buildings": Param([], type="array", description="Limit to these building ids."),
    },
    tags=["wattflow", "quality", "silver", "gold"],
    doc_md="""
### Curate and validate
Runs the Great Expectations checkpoints on the bronze interval the triggering events name, writes
`silver.building_hourly` (rejects to quarantine by policy; a failed batch stops here with the
expectation, observed value and threshold), then builds `gold.features`. Idempotent per interval.
The task's **Data Docs** link opens the validation results.
""",
)
def curate_and_validate():
    @task(outlets=[ASSETS["silver_hourly"]])
    def validate_and_curate(**context) -> dict:
        from wattflow import pipeline

        start, end = window_from_context(context)
        result = pipeline.curate(start, end, buildings=buildings_from_context(context))
        context["ti"].xcom_push(key="data_docs_url", value=result.get("data_docs_url"))
        context["outlet_events"][ASSETS["silver_hourly"]].extra = {"start": start.isoformat(), "end": end.isoformat()}
        return result

    @task(outlets=[ASSETS["gold_features"]])
    def build_features(**context) -> dict:
        from wattflow import pipeline

        start, end = window_from_context(context)
        result = pipeline.build_features(start, end, buildings=buildings_from_context(context))
        context["outlet_events"][ASSETS["gold_features"]].extra = {"start": start.isoformat(), "end": end.isoformat()}
        return result

    validate_and_curate() >> build_features()


curate_and_validate()
