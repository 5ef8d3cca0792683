"""Tune, train, backtest, register and gate: weekly, or when monitoring requests a retrain."""

from __future__ import annotations

import datetime as dt

from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable, Param, dag, task

from wattflow.assets import assets, default_args, start_date
from wattflow.settings import get_settings

ASSETS = assets()
CFG = get_settings().airflow


def _reason(context) -> str:
    """Why this run trains: a monitoring request (the asset event, or a manual run saying so) or the params'."""
    events = context.get("triggering_asset_events") or {}
    return "retrain requested by monitoring" if events else context["params"]["reason"]


@dag(
    dag_id="train_model",
    schedule=AssetOrTimeSchedule(
        timetable=CronTriggerTimetable(CFG.weekly_retrain_cron, timezone="UTC"),
        assets=ASSETS["retrain_requested"],
    ),
    start_date=start_date(),
    catchup=False,
    max_active_runs=1,
    default_args=default_args(CFG.training_timeout_min),
    params={
        "trials": Param(CFG.tune_trials, type="integer", minimum=0, description="Optuna trials (0: train with settings)."),
        "timeout_s": Param(CFG.tune_timeout_s, type="integer", minimum=1, description="Tuning time bound."),
        "reason": Param("scheduled", type="string", description="Why this run trains (recorded with the model)."),
    },
    tags=["wattflow", "ml", "training"],
    doc_md="""
### Train model
Tunes the LSTM with Optuna (bounded trials and time; a retrain requested by monitoring skips the
study and refits the champion's configuration, learning from the new data several times over), trains
on `gold.features` at a pinned Delta version, backtests it against persistence and seasonal-naive
baselines, registers it in MLflow as `challenger`, and runs the promotion gate. Only a promoted model emits the **new_champion** asset
(a challenger that is not better is registered but the announce task is skipped).
Runs in the `training` pool. The task's **MLflow run** link opens the run.
""",
)
def train_model():
    @task(pool=CFG.training_pool, execution_timeout=dt.timedelta(minutes=CFG.training_timeout_min))
    def tune(**context) -> dict:
        from wattflow import pipeline

        params = context["params"]
        result = pipeline.tune(int(params["trials"]), int(params["timeout_s"]), reason=_reason(context))
        context["ti"].xcom_push(key="mlflow_run_url", value=result.get("mlflow_run_url"))
        return result

    @task(pool=CFG.training_pool, execution_timeout=dt.timedelta(minutes=CFG.training_timeout_min))
    def train_and_gate(tuned: dict, **context) -> dict:
        from wattflow import pipeline

        result = pipeline.train(tuned.get("best_params"), reason=_reason(context))
        context["ti"].xcom_push(key="mlflow_run_url", value=result.get("mlflow_run_url"))
        return result

    @task(outlets=[ASSETS["champion"]])
    def announce_champion(outcome: dict, **context) -> dict:
        from airflow.sdk.exceptions import AirflowSkipException

        if not outcome.get("promoted"):
            raise AirflowSkipException(f"challenger not promoted: {outcome.get('reason')}")
        context["outlet_events"][ASSETS["champion"]].extra = {"version": str(outcome["version"])}
        return outcome

    announce_champion(train_and_gate(tune()))


train_model()
