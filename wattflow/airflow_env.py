"""Airflow's configuration derived from the one settings object.

Airflow reads its configuration from ``AIRFLOW__SECTION__KEY`` variables. Every way we start it (the
local ``make up`` stack, ``airflow dags test`` in the end-to-end tests, the compose and Helm deployments)
goes through :func:`airflow_environment`, so the metadata DB, DAG folder and executor are decided once.
This module imports nothing of Airflow: DAG files and the CLI may import it cheaply.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from wattflow.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[1]

# Airflow 3 refuses async or unknown drivers for its metadata DB; these are the ones the lock carries.
SUPPORTED_DB_SCHEMES = ("sqlite", "postgresql", "postgresql+psycopg2")


class AirflowConfigError(ValueError):
    """A setting that Airflow could not run with; the message names the setting and its value."""


def airflow_database_url(settings: Settings) -> str:
    url = settings.airflow.database_url
    if not url:
        return f"sqlite:///{settings.airflow_home / 'airflow.db'}"
    scheme = urlsplit(url).scheme
    if scheme not in SUPPORTED_DB_SCHEMES:
        raise AirflowConfigError(
            f"airflow.database_url has scheme {scheme!r}; expected one of {', '.join(SUPPORTED_DB_SCHEMES)}"
        )
    return url


def airflow_environment(settings: Settings) -> dict[str, str]:
    """The environment variables an Airflow process (CLI, scheduler, task) needs for this deployment."""
    cfg = settings.airflow
    dags_folder = Path(cfg.dags_folder) if cfg.dags_folder else REPO_ROOT / "dags"
    plugins_folder = Path(cfg.plugins_folder) if cfg.plugins_folder else REPO_ROOT / "plugins"
    env = {
        "AIRFLOW_HOME": str(settings.airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder.resolve()),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(plugins_folder.resolve()),
        "AIRFLOW__CORE__LOAD_EXAMPLES": str(cfg.load_examples),
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": str(cfg.dags_are_paused_at_creation),
        "AIRFLOW__CORE__EXECUTOR": cfg.executor,
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": airflow_database_url(settings),
        # Task processes re-read the settings; they must land in the same home as the scheduler.
        "WATTFLOW_HOME": str(settings.home.resolve()),
    }
    # The sensor topic's watcher (event-driven ingest) reads Kafka through this Airflow connection.
    from wattflow.stream_trigger import connection_environment

    env.update(connection_environment(settings))
    if cfg.executor == "CeleryExecutor":
        if not cfg.celery_broker_url:
            raise AirflowConfigError("airflow.celery_broker_url is empty but airflow.executor is CeleryExecutor")
        env["AIRFLOW__CELERY__BROKER_URL"] = cfg.celery_broker_url
        # Celery's result backend speaks SQLAlchemy through the "db+" prefix; default to the metadata DB.
        env["AIRFLOW__CELERY__RESULT_BACKEND"] = cfg.celery_result_backend or "db+" + airflow_database_url(
            settings
        )
    return env


def spark_master_from_connection(value: str) -> str:
    """The Spark master URL in an Airflow `spark_default` connection given as AIRFLOW_CONN_SPARK_DEFAULT.

    Airflow accepts a URI (``spark://spark-master:7077``) or JSON (``{"conn_type": "spark", "host":
    "spark://spark-master", "port": 7077}``, the form the Spark provider documents; its host may also be
    ``k8s://https://api:6443`` or ``local[4]``). Empty string when unset or empty.
    """
    import json

    value = (value or "").strip()
    if not value:
        return ""
    if value.startswith("{"):
        conn = json.loads(value)
        host, port = str(conn.get("host") or "").rstrip("/"), conn.get("port")
        if not host:
            raise AirflowConfigError(f"AIRFLOW_CONN_SPARK_DEFAULT has no host: {value!r}; expected e.g. "
                                     '{"conn_type": "spark", "host": "spark://spark-master", "port": 7077}')
        if "://" not in host and not host.startswith(("local", "yarn")):
            host = f"spark://{host}"
        return f"{host}:{port}" if port else host
    parts = urlsplit(value)
    if parts.scheme in ("spark", "k8s") and parts.netloc:
        return f"{parts.scheme}://{parts.netloc}"
    raise AirflowConfigError(f"AIRFLOW_CONN_SPARK_DEFAULT={value!r} is not a Spark master; expected "
                             "spark://host:7077 or the JSON form with conn_type spark")
