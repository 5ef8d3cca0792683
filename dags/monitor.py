"""Daily drift and accuracy checks; requests a retrain only when the policy decides so."""

from __future__ import annotations

from airflow.sdk import Param, dag, task

from wattflow.assets import assets, default_args, start_date

ASSETS = assets()


@dag(
    dag_id="monitor",
    schedule="@daily",
    start_date=start_date(),
    catchup=False,
    max_active_runs=1,
    default_args=default_args(),
    params={"as_of": Param(None, type=["null", "string"], description="Check as of this time (ISO, UTC).")},
    tags=["wattflow", "monitoring", "drift"],
    doc_md="""
### Monitor
Evidently drift of the model's inputs (against same-hour-of-week, similar-weather reference) and
accuracy of served forecasts against actuals; the decision policy (thresholds, persistence,
cooldown, minimum new data) records every decision in `monitoring.decisions`. Only a retrain
decision emits the **retrain_requested** asset, which triggers `train_model`.
The task's **Drift report** link opens the Evidently report.
""",
)
def monitor():
    @task
    def check(**context) -> dict:
        from wattflow import pipeline
        from wattflow.assets import _utc

        as_of = context["params"].get("as_of") or context["data_interval_end"]
        result = pipeline.monitor(_utc(as_of))
        context["ti"].xcom_push(key="drift_report_url", value=result.get("report_uri"))
        return result

    @task(outlets=[ASSETS["retrain_requested"]])
    def request_retrain(outcome: dict, **context) -> dict:
        from airflow.sdk.exceptions import AirflowSkipException

        if not outcome.get("retrain_requested"):
            raise AirflowSkipException("policy decided: hold")
        context["outlet_events"][ASSETS["retrain_requested"]].extra = {
            "as_of": outcome.get("as_of"),
            "reasons": outcome.get("reasons", []),
        }
        return outcome

    request_retrain(check())


monitor()
