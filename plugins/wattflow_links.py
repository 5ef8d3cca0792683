"""Airflow plugin: links from task instances to the MLflow run, the Data Docs page and the drift report.

A task publishes the target as an XCom (`mlflow_run_url`, `data_docs_url`, `drift_report_url`); the link
shows on every task and resolves to that XCom, so no custom operator is needed for it.
"""

from __future__ import annotations

import logging

from airflow.plugins_manager import AirflowPlugin
from airflow.sdk import BaseOperatorLink

log = logging.getLogger(__name__)


class _XComLink(BaseOperatorLink):
    xcom_key = ""

    def get_link(self, operator, *, ti_key) -> str:  # type: ignore[override]
        from airflow.models.xcom import XComModel
        from airflow.utils.session import create_session

        try:
            # Airflow 3 composes a SELECT here (no Query.first()); run it on a session of the API server's.
            query = XComModel.get_many(
                key=self.xcom_key, dag_ids=ti_key.dag_id, task_ids=ti_key.task_id, run_id=ti_key.run_id, map_indexes=ti_key.map_index
            )
            with create_session() as session:
                value = session.scalars(query).first()
                url = XComModel.deserialize_value(value) if value is not None else None
        except Exception:  # a link must never break the task page
            log.warning("extra link %r not resolved", self.name, exc_info=True)
            return ""
        return str(url or "")


class MlflowRunLink(_XComLink):
    name = "MLflow run"
    xcom_key = "mlflow_run_url"


class DataDocsLink(_XComLink):
    name = "Data Docs"
    xcom_key = "data_docs_url"

    def get_link(self, operator, *, ti_key) -> str:  # type: ignore[override]
        return served_data_docs(super().get_link(operator, ti_key=ti_key))


def served_data_docs(url: str) -> str:
    """A file:// page under the Data Docs folder as the page where `make up` serves it (settings.data_docs_url):
    Airflow's UI drops links that are not http(s)."""
    from pathlib import Path
    from urllib.parse import unquote, urlsplit

    if not url.startswith("file://"):
        return url
    try:
        from wattflow.settings import get_settings

        settings = get_settings()
        page = Path(unquote(urlsplit(url).path)).resolve()
        relative = page.relative_to(settings.data_docs_dir)
    except (ValueError, OSError):  # a page outside the Data Docs folder keeps its own address
        return url
    return f"{settings.data_docs_url.rstrip('/')}/{relative.as_posix()}"


class DriftReportLink(_XComLink):
    name = "Drift report"
    xcom_key = "drift_report_url"


class WattflowLinksPlugin(AirflowPlugin):
    name = "wattflow_links"
    global_operator_extra_links = [MlflowRunLink(), DataDocsLink(), DriftReportLink()]
