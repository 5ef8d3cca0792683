from __future__ import annotations

from pathlib import Path

import pytest

from wattflow.airflow_env import REPO_ROOT, AirflowConfigError, airflow_environment
from wattflow.settings import Settings, get_settings, reset_settings


def test_default_is_sqlite_under_wattflow_home(settings: Settings, wattflow_home: Path) -> None:
    env = airflow_environment(settings)
    airflow_home = wattflow_home.resolve() / "airflow"
    assert env["AIRFLOW_HOME"] == str(airflow_home)
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == f"sqlite:///{airflow_home / 'airflow.db'}"
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == str(REPO_ROOT / "dags")
    assert env["AIRFLOW__CORE__PLUGINS_FOLDER"] == str(REPO_ROOT / "plugins")
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "False"
    assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    assert env["WATTFLOW_HOME"] == str(wattflow_home.resolve())
    assert "AIRFLOW__CELERY__BROKER_URL" not in env


def test_postgresql_and_celery_from_the_environment(wattflow_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = "postgresql+psycopg2://airflow:pw@db:5432/airflow"
    monkeypatch.setenv("WATTFLOW_AIRFLOW__DATABASE_URL", url)
    monkeypatch.setenv("WATTFLOW_AIRFLOW__EXECUTOR", "CeleryExecutor")
    monkeypatch.setenv("WATTFLOW_AIRFLOW__CELERY_BROKER_URL", "redis://:secret@redis:6379/0")
    reset_settings()
    env = airflow_environment(get_settings())
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == url
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__CELERY__BROKER_URL"] == "redis://:secret@redis:6379/0"
    assert env["AIRFLOW__CELERY__RESULT_BACKEND"] == "db+" + url


def test_unsupported_database_scheme_names_the_setting(settings: Settings) -> None:
    bad = settings.model_copy(
        update={"airflow": settings.airflow.model_copy(update={"database_url": "mysql+aiomysql://x/y"})}
    )
    with pytest.raises(AirflowConfigError, match=r"airflow.database_url has scheme 'mysql\+aiomysql'"):
        airflow_environment(bad)


def test_celery_without_broker_is_refused(settings: Settings) -> None:
    bad = settings.model_copy(update={"airflow": settings.airflow.model_copy(update={"executor": "CeleryExecutor"})})
    with pytest.raises(AirflowConfigError, match="airflow.celery_broker_url"):
        airflow_environment(bad)


def test_mlflow_artifact_root_switches_to_s3(wattflow_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert get_settings().mlflow_artifact_root == (wattflow_home.resolve() / "mlflow" / "artifacts").as_uri()
    monkeypatch.setenv("WATTFLOW_MLFLOW_TRACKING_URI", "postgresql+psycopg2://mlflow:pw@db/mlflow")
    monkeypatch.setenv("WATTFLOW_MLFLOW_ARTIFACT_LOCATION", "s3://wattflow-mlflow/artifacts/")
    reset_settings()
    s = get_settings()
    assert s.tracking_uri == "postgresql+psycopg2://mlflow:pw@db/mlflow"
    assert s.mlflow_artifact_root == "s3://wattflow-mlflow/artifacts"


def test_the_sensor_topic_trigger_gets_its_kafka_connection(wattflow_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    assert not any(k.startswith("AIRFLOW_CONN_") for k in airflow_environment(get_settings()))  # off by default
    monkeypatch.setenv("WATTFLOW_STREAM_TRIGGER__ENABLED", "true")
    monkeypatch.setenv("WATTFLOW_KAFKA__BOOTSTRAP_SERVERS", "kafka-1:9092,kafka-2:9092")
    monkeypatch.setenv("WATTFLOW_KAFKA__CLIENT_CONFIG", '{"security.protocol": "SASL_SSL", "group.id": "not-this"}')
    reset_settings()
    conn = json.loads(airflow_environment(get_settings())["AIRFLOW_CONN_WATTFLOW_KAFKA"])
    assert conn == {"conn_type": "kafka", "extra": {
        "security.protocol": "SASL_SSL", "bootstrap.servers": "kafka-1:9092,kafka-2:9092",
        "group.id": "wattflow-airflow-trigger", "auto.offset.reset": "latest",  # its own group, never the ingest one
    }}
