"""Deploy a new champion to TF Serving: export, wait until AVAILABLE, canary, move the stable label."""

from __future__ import annotations

from airflow.sdk import Param, TriggerRule, dag, task

from wattflow.assets import assets, default_args, start_date

ASSETS = assets()


@dag(
    dag_id="deploy_model",
    schedule=[ASSETS["champion"]],
    start_date=start_date(),
    catchup=False,
    max_active_runs=1,
    default_args=default_args(),
    params={"version": Param(None, type=["null", "integer"], description="Registry version (default: champion).")},
    tags=["wattflow", "serving"],
    doc_md="""
### Deploy model
Exports the registry's champion (or `version`) as a SavedModel into TF Serving's model base path
(atomically, with warmup requests) and adds it to the served versions, waits until the server reports
it AVAILABLE, sends a canary request to that version over gRPC, then moves the `stable` label to it and
waits until the label serves it. On any failure the `stable` label is put back on the previous
version and the run fails loudly.
""",
)
def deploy_model():
    @task
    def export(**context) -> dict:
        from wattflow import pipeline

        version = context["params"].get("version")
        if version is None:
            events = context.get("triggering_asset_events") or {}
            announced = [e.extra.get("version") for evs in events.values() for e in evs if getattr(e, "extra", None)]
            version = int(announced[-1]) if announced and announced[-1] else None
        return pipeline.deploy_export(version)

    @task
    def wait_until_available(exported: dict) -> dict:
        from wattflow import pipeline

        return pipeline.wait_until_available(exported)

    @task
    def canary_request(exported: dict) -> dict:
        from wattflow import pipeline

        return pipeline.canary_request(exported)

    @task
    def promote_stable(exported: dict) -> dict:
        from wattflow import pipeline

        return pipeline.promote_stable(exported)

    @task(trigger_rule=TriggerRule.ONE_FAILED, retries=0)
    def roll_back_stable(exported: dict) -> None:
        from airflow.sdk.exceptions import AirflowFailException

        from wattflow import pipeline

        restored = pipeline.rollback_stable(exported)
        raise AirflowFailException(f"deployment of version {exported.get('version')} failed; stable label restored to {restored}")

    exported = export()
    available = wait_until_available(exported)
    canary = canary_request(exported)
    promoted = promote_stable(exported)
    available >> canary >> promoted
    [available, canary, promoted] >> roll_back_stable(exported)


deploy_model()
