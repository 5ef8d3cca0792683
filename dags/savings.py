"""Monthly verified savings (IPMVP Option C) for every building whose level shift monitoring recorded."""

from __future__ import annotations

from airflow.sdk import Param, dag, task

from wattflow.assets import default_args, start_date


@dag(
    dag_id="verify_savings",
    schedule="@monthly",
    start_date=start_date(),
    catchup=False,
    max_active_runs=1,
    default_args=default_args(),
    params={"as_of": Param(None, type=["null", "string"], description="Verify months up to this time (ISO, UTC).")},
    tags=["wattflow", "monitoring", "savings"],
    doc_md="""
### Verify savings
For each building where `monitoring.decisions` recorded a level shift (its NMBE beyond the policy, the
model over-predicting a building that now uses less), fit the baseline (CalTRACK hourly TOWT, and the
LSTM where `savings.monthly_models` asks) on the weeks before the shift and verify each reporting month
since: avoided kWh, cost, kgCO2e, Guideline 14 fit statistics and FSU, MERGEd into `gold.savings`
(one row per building, month and model, so a re-run writes nothing twice). Each fit is an MLflow run.
""",
)
def verify_savings():
    @task
    def verify(**context) -> dict:
        from wattflow import pipeline
        from wattflow.assets import _utc

        as_of = context["params"].get("as_of") or context["data_interval_end"]
        return pipeline.verify_savings(_utc(as_of))

    verify()


verify_savings()
