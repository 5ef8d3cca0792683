"""MLflow as deployed: tracking server with basic auth, PostgreSQL stores, artifacts on S3.

The server is infra/mlflow/entrypoint.sh (what compose and Kubernetes run). The client side goes
through the settings switch (WATTFLOW_MLFLOW_TRACKING_URI) and MLflow's own credential variables.
"""

from __future__ import annotations

from importlib.metadata import version
from urllib.parse import urlsplit

import numpy as np
import pytest
import requests

from tests.servers import MlflowServer, PostgresServer, S3Endpoint
from wattflow.settings import get_settings, reset_settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MODEL_NAME = "building_energy_lstm_backend_test"


def _tiny_lstm():
    import keras

    keras.utils.set_random_seed(7)
    history = keras.Input(shape=(6, 2), name="history")
    hidden = keras.layers.LSTM(4)(history)
    p50 = keras.layers.Dense(3, name="p50")(hidden)
    return keras.Model(history, p50)


def test_anonymous_requests_are_refused(mlflow_tracking_server: MlflowServer) -> None:
    search = f"{mlflow_tracking_server.url}/api/2.0/mlflow/experiments/search?max_results=1"
    assert requests.get(search, timeout=30).status_code == 401
    authed = requests.get(
        search, auth=(mlflow_tracking_server.username, mlflow_tracking_server.password), timeout=30
    )
    assert authed.status_code == 200, authed.text


def test_log_register_alias_and_load_through_the_server(
    mlflow_tracking_server: MlflowServer,
    postgres: PostgresServer,
    s3_endpoint: S3Endpoint,
    wattflow_home,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import mlflow
    from mlflow import MlflowClient
    from mlflow.models import infer_signature

    for key, value in mlflow_tracking_server.environment().items():
        monkeypatch.setenv(key, value)
    # Only the server holds S3 keys: the client uploads through the server's artifact proxy.
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MLFLOW_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("WATTFLOW_MLFLOW_TRACKING_URI", mlflow_tracking_server.url)
    reset_settings()
    settings = get_settings()
    assert settings.tracking_uri == mlflow_tracking_server.url
    mlflow.set_tracking_uri(settings.tracking_uri)
    # Earlier tests in the process point the (global) registry at their own SQLite stores.
    mlflow.set_registry_uri(settings.tracking_uri)

    model = _tiny_lstm()
    rng = np.random.default_rng(3)
    windows = rng.normal(size=(16, 6, 2)).astype("float32")
    # Seeded random weights are as good as trained ones for a round trip, and skip fit's tracing cost.
    expected = np.asarray(model(windows[:4], training=False))

    experiment_id = mlflow.create_experiment("wattflow-backend-test")
    with mlflow.start_run(experiment_id=experiment_id) as run:
        mlflow.log_params({"units": 4, "lookback_h": 6})
        mlflow.log_metric("cv_rmse", 0.21)
        logged = mlflow.keras.log_model(
            model,
            name="model",
            signature=infer_signature(windows, expected),
            # Explicit requirements: inference would reload the model in a subprocess (slow).
            pip_requirements=[f"keras=={version('keras')}", f"tensorflow=={version('tensorflow')}"],
            registered_model_name=MODEL_NAME,
        )

    client = MlflowClient()
    registered = client.get_registered_model(MODEL_NAME)
    assert [v.version for v in registered.latest_versions] == ["1"]
    client.set_registered_model_alias(MODEL_NAME, "champion", "1")
    assert client.get_model_version_by_alias(MODEL_NAME, "champion").run_id == run.info.run_id

    loaded = mlflow.pyfunc.load_model(f"models:/{MODEL_NAME}@champion")
    predicted = np.asarray(loaded.predict(windows[:4]))
    np.testing.assert_allclose(predicted, expected, rtol=1e-5, atol=1e-6)

    # Artifacts landed in the bucket behind the server, under the configured destination.
    dest = urlsplit(mlflow_tracking_server.artifacts_destination)
    keys = s3_endpoint.list_keys(dest.netloc, dest.path.lstrip("/"))
    model_keys = [k for k in keys if f"/{logged.model_id}/" in k]
    assert any(k.endswith("/MLmodel") for k in model_keys), keys
    assert any(k.endswith(".keras") or k.endswith("saved_model.pb") for k in model_keys), model_keys

    # And the run, the version and the alias are rows in PostgreSQL.
    database = urlsplit(mlflow_tracking_server.backend_store_uri).path.lstrip("/")
    conn = postgres.connect(database)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT status FROM runs WHERE run_uuid = %s", (run.info.run_id,))
            assert cur.fetchall() == [("FINISHED",)]
            cur.execute("SELECT key, value FROM metrics WHERE run_uuid = %s", (run.info.run_id,))
            assert cur.fetchall() == [("cv_rmse", 0.21)]
            cur.execute("SELECT alias, version FROM registered_model_aliases WHERE name = %s", (MODEL_NAME,))
            assert cur.fetchall() == [("champion", 1)]
    finally:
        conn.close()


def test_settings_switch_tracking_to_postgresql_with_s3_artifacts(
    postgres: PostgresServer,
    s3_endpoint: S3Endpoint,
    s3_bucket: str,
    wattflow_home,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No server: the client itself writes runs to PostgreSQL and artifacts to S3 (boto3), as the ML code
    configures MLflow from settings (ml.tracking.configure)."""
    import mlflow

    from ml.tracking import configure

    database_url = postgres.create_database("mlflow_direct")
    for key, value in s3_endpoint.environment().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("WATTFLOW_MLFLOW_TRACKING_URI", database_url)
    monkeypatch.setenv("WATTFLOW_MLFLOW_ARTIFACT_LOCATION", f"s3://{s3_bucket}/mlflow/")
    reset_settings()
    settings = get_settings()
    experiment_id = configure(settings)
    assert mlflow.get_experiment(experiment_id).artifact_location == f"s3://{s3_bucket}/mlflow"

    with mlflow.start_run() as run:
        mlflow.log_metric("cv_rmse", 0.18)
        mlflow.log_dict({"lookback_h": 168}, "window_spec.json")

    keys = s3_endpoint.list_keys(s3_bucket, "mlflow/")
    assert f"mlflow/{run.info.run_id}/artifacts/window_spec.json" in keys
    conn = postgres.connect(urlsplit(database_url).path.lstrip("/"))
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT r.status, e.name FROM runs r JOIN experiments e USING (experiment_id) WHERE run_uuid = %s", (run.info.run_id,))
            assert cur.fetchall() == [("FINISHED", settings.model.experiment)]
    finally:
        conn.close()
    # Nothing fell back to local files.
    assert not (wattflow_home / "mlflow").exists()
