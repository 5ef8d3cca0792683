"""ForecastClient against the server, and `deploy` from a real MLflow registry into the served layout."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ml.spec import FUTURE_FEATURES
from tests.integration.serving.helpers import SPEC, STATIC, free_port, initial_entries, wait_for, write_config

pytestmark = pytest.mark.integration

ORIGIN = pd.Timestamp("2024-01-09", tz="UTC")


@pytest.fixture(scope="module")
def gold():
    from ml.synthetic import synthetic_gold_features

    return synthetic_gold_features(("b02",), start="2024-01-01", days=10)  # the simulator's London shop


def _split(gold: pd.DataFrame):
    ts = pd.to_datetime(gold["ts"], utc=True)
    history = gold[ts < ORIGIN]
    horizon = gold[(ts >= ORIGIN) & (ts < ORIGIN + pd.Timedelta(hours=SPEC.horizon_h))]
    weather_forecast = horizon[["building_id", "ts", *dict.fromkeys(FUTURE_FEATURES)]]
    return history, weather_forecast


def test_forecast_builds_the_training_window_and_reports_the_version(endpoint, gold):
    from ml.windows import window_for_origin
    from serving.client import ForecastClient

    history, weather_forecast = _split(gold)
    with ForecastClient(endpoint.grpc_target, model_name=STATIC, version_label="canary") as client:
        assert (client.spec().lookback_h, client.spec().horizon_h) == (SPEC.lookback_h, SPEC.horizon_h)
        forecast = client.forecast("b02", history, weather_forecast)
        window = window_for_origin(gold, ORIGIN, client.spec())
        expected, version = client.predict(*window)
    assert list(forecast.columns) == [
        "building_id", "ts", "yhat", "p10", "p50", "p90", "model_version", "is_fallback", "fallback_reason"
    ]
    assert len(forecast) == SPEC.horizon_h and forecast["ts"].iloc[0] == ORIGIN
    assert (forecast["ts"].diff().dropna() == pd.Timedelta(hours=1)).all()
    assert not forecast["is_fallback"].any() and (forecast["model_version"] == 2).all() and version == 2
    np.testing.assert_allclose(forecast["p50"], expected["p50"][0], rtol=1e-5)
    np.testing.assert_allclose(forecast["yhat"], forecast["p50"])


def _week_ago(gold: pd.DataFrame) -> np.ndarray:
    indexed = gold.set_index(pd.to_datetime(gold["ts"], utc=True))["energy_kwh"]
    hours = pd.date_range(ORIGIN, periods=SPEC.horizon_h, freq="h")
    return indexed.reindex(hours - pd.Timedelta(hours=168)).to_numpy()


def test_unknown_model_falls_back_to_seasonal_naive(endpoint, gold):
    from serving.client import ForecastClient

    history, weather_forecast = _split(gold)
    with ForecastClient(endpoint.grpc_target, model_name="no_such_model", version_label=None, spec=SPEC) as client:
        forecast = client.forecast("b02", history, weather_forecast)
    assert forecast["is_fallback"].all() and forecast["model_version"].isna().all()
    assert "NOT_FOUND" in forecast["fallback_reason"].iloc[0]
    np.testing.assert_allclose(forecast["yhat"], _week_ago(gold))


def test_unreachable_server_is_retried_then_falls_back(gold):
    from serving.client import ForecastClient

    history, weather_forecast = _split(gold)
    with ForecastClient(f"127.0.0.1:{free_port()}", model_name=STATIC, spec=SPEC, deadline_s=0.3, retries=2) as client:
        forecast = client.forecast("b02", history, weather_forecast)
    assert forecast["is_fallback"].all()
    assert "UNAVAILABLE" in forecast["fallback_reason"].iloc[0] or "DEADLINE" in forecast["fallback_reason"].iloc[0]
    np.testing.assert_allclose(forecast["p50"], _week_ago(gold))


def test_input_that_cannot_make_a_window_falls_back(endpoint, gold):
    from serving.client import ForecastClient

    history, weather_forecast = _split(gold)
    last_hour_missing = history[pd.to_datetime(history["ts"], utc=True) < ORIGIN - pd.Timedelta(hours=1)]
    with ForecastClient(endpoint.grpc_target, model_name=STATIC) as client:
        forecast = client.forecast("b02", last_hour_missing, weather_forecast)
    assert forecast["is_fallback"].all() and forecast["fallback_reason"].iloc[0].startswith("input:")


def test_status_and_wait_until_available(endpoint):
    from serving.client import ForecastClient, VersionLoadFailed

    with ForecastClient(endpoint.grpc_target, model_name=STATIC) as client:
        assert [(s.version, s.state) for s in client.status()] == [(2, "AVAILABLE"), (1, "AVAILABLE")]
        assert client.wait_until_available(1, timeout_s=5).state == "AVAILABLE"
        with pytest.raises(TimeoutError):
            client.wait_until_available(99, timeout_s=0.5)
    assert VersionLoadFailed  # raised for a version the server gave up on (see the lifecycle test)


def _register(settings, template, spec_json: str, alias: str) -> str:
    """A registry version the way training leaves one: run with the SavedModel artifact and the window spec tag."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from ml import tracking

    tracking.configure(settings)
    with mlflow.start_run() as run:
        mlflow.log_artifacts(str(template), tracking.SAVED_MODEL_ARTIFACT)
        mlflow.set_tag(tracking.TAG_WINDOW_SPEC, spec_json)
    client = mlflow.MlflowClient()
    try:
        client.create_registered_model(settings.model.model_name)
    except MlflowException:
        pass
    version = client.create_model_version(
        settings.model.model_name, f"{run.info.artifact_uri}/{tracking.SAVED_MODEL_ARTIFACT}", run.info.run_id
    ).version
    client.set_registered_model_alias(settings.model.model_name, alias, version)
    return str(version)


def test_deploy_exports_the_champion_with_warmup_and_labels_and_the_server_serves_it(endpoint, settings, gold):
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    from ml import tracking
    from serving import export
    from serving.client import ForecastClient

    assert export.SAVED_MODEL_ARTIFACT == tracking.SAVED_MODEL_ARTIFACT
    assert export.TAG_WINDOW_SPEC == tracking.TAG_WINDOW_SPEC
    name = settings.model.model_name
    first = _register(settings, endpoint.template(1), SPEC.to_json(), "champion")
    second = _register(settings, endpoint.template(2), SPEC.to_json(), "challenger")

    result = export.deploy(settings, warmup_frame=gold)
    version_dir = settings.model_base_path / name / first
    assert result.version == int(first) and result.version_dir == version_dir
    assert (version_dir / "saved_model.pb").exists()
    assert not [p for p in version_dir.parent.iterdir() if p.name.startswith(".staging")]
    records = [prediction_log_pb2.PredictionLog.FromString(r.numpy())
               for r in tf.data.TFRecordDataset(str(version_dir / export.WARMUP_RELATIVE))]
    assert result.warmup_records == len(records) > 1
    assert records[0].predict_log.request.inputs["history"].tensor_shape.dim[1].size == SPEC.lookback_h
    assert result.labels == {"stable": int(first), "canary": int(second)}  # the challenger was exported too
    assert (settings.model_base_path / name / second / "saved_model.pb").exists()
    config = export.read_model_config(result.config_path)
    entry = next(e for e in config.model_config_list.config if e.name == name)
    assert sorted(entry.model_version_policy.specific.versions) == sorted({int(first), int(second)})
    assert dict(entry.version_labels) == {"stable": int(first), "canary": int(second)}
    again = export.deploy(settings, warmup_frame=gold)
    assert again.already_present and again.version == result.version

    # The running server picks the deployed model up from its config file.
    entries = initial_entries(endpoint.base_path)
    entries[name] = (str(settings.model_base_path / name), [int(first), int(second)], dict(entry.version_labels))
    write_config(endpoint.config_path, entries)
    try:
        with ForecastClient(endpoint.grpc_target, model_name=name) as client:
            wait_for(lambda: any(s.state == "AVAILABLE" for s in _safe_status(client)), what="deployed model")
            client.wait_until_available(int(second), timeout_s=60)
            history, weather_forecast = _split(gold)
            wait_for(lambda: not client.forecast("b02", history, weather_forecast)["is_fallback"].any(),
                     what="forecast by label stable")
            forecast = client.forecast("b02", history, weather_forecast)
        assert (forecast["model_version"] == int(first)).all()
    finally:
        write_config(endpoint.config_path, initial_entries(endpoint.base_path))


def _safe_status(client):
    from serving.client import ServingUnavailable

    try:
        return client.status()
    except ServingUnavailable:
        return []
