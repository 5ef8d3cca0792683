"""TF Serving API conformance: stock `tensorflow_serving.apis` stubs and plain REST JSON.

Expected codes and messages come from tensorflow/serving (predict_util.cc, server_core.cc,
get_model_metadata_impl.cc, classifier.cc, http_rest_api_handler.cc) and its REST API documentation.
"""

from __future__ import annotations

import grpc
import numpy as np
import pytest
import requests

from tests.integration.serving.helpers import LIFECYCLE, SPEC, STATIC, make_inputs, predict_request

pytestmark = pytest.mark.integration


def _ndarray(proto):
    import tensorflow as tf

    return tf.make_ndarray(proto)


def test_predict_with_stock_stubs_answers_every_output_and_the_resolved_version(prediction_stub):
    response = prediction_stub.Predict(predict_request(STATIC, batch=3), timeout=30)
    assert response.model_spec.name == STATIC
    assert response.model_spec.version.value == 2  # latest of the specific {1, 2}
    assert response.model_spec.signature_name == "serving_default"
    assert sorted(response.outputs) == ["p10", "p50", "p90"]
    for name in ("p10", "p50", "p90"):
        values = _ndarray(response.outputs[name])
        assert values.shape == (3, SPEC.horizon_h) and values.dtype == np.float32
    assert _ndarray(response.outputs["p50"]).mean() > 50  # version 2 adds 100 to every output


def test_predict_by_version_and_by_label_reaches_that_version(prediction_stub):
    by_version = prediction_stub.Predict(predict_request(STATIC, version=1), timeout=30)
    by_label = prediction_stub.Predict(predict_request(STATIC, label="stable"), timeout=30)
    canary = prediction_stub.Predict(predict_request(STATIC, label="canary"), timeout=30)
    assert by_version.model_spec.version.value == 1 and by_label.model_spec.version.value == 1
    assert canary.model_spec.version.value == 2
    np.testing.assert_allclose(_ndarray(by_version.outputs["p50"]), _ndarray(by_label.outputs["p50"]), rtol=1e-5)
    assert abs(_ndarray(canary.outputs["p50"]).mean() - _ndarray(by_label.outputs["p50"]).mean()) > 50


def test_output_filter_returns_only_the_named_outputs(prediction_stub):
    response = prediction_stub.Predict(predict_request(STATIC, output_filter=("p90",)), timeout=30)
    assert list(response.outputs) == ["p90"]


@pytest.mark.parametrize(
    ("change", "code", "message"),
    [
        (dict(model="no_such_model"), grpc.StatusCode.NOT_FOUND, "Servable not found for request: Latest(no_such_model)"),
        (dict(version=7), grpc.StatusCode.NOT_FOUND, f"Servable not found for request: Specific({STATIC}, 7)"),
        (dict(label="nope"), grpc.StatusCode.INVALID_ARGUMENT, "Unrecognized servable version label: nope"),
        (dict(signature="nope"), grpc.StatusCode.FAILED_PRECONDITION, 'Serving signature key "nope" not found.'),
        (dict(output_filter=("p42",)), grpc.StatusCode.INVALID_ARGUMENT, "output tensor alias not found in signature: p42"),
        (dict(output_filter=("p50", "p50")), grpc.StatusCode.INVALID_ARGUMENT, "duplicate output tensor alias: p50"),
    ],
)
def test_predict_errors_carry_tf_servings_codes_and_messages(prediction_stub, change, code, message):
    kwargs = dict(change)
    model = kwargs.pop("model", STATIC)
    with pytest.raises(grpc.RpcError) as raised:
        prediction_stub.Predict(predict_request(model, **kwargs), timeout=30)
    assert raised.value.code() == code
    assert message in raised.value.details()


def test_wrong_inputs_are_invalid_argument(prediction_stub):
    import tensorflow as tf

    missing = predict_request(STATIC)
    del missing.inputs["future"]
    with pytest.raises(grpc.RpcError) as raised:
        prediction_stub.Predict(missing, timeout=30)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "input size does not match signature: 1!=2" in raised.value.details()
    assert "Missing but required: {future}" in raised.value.details()

    wrong_dtype = predict_request(STATIC)
    history, _ = make_inputs(1)
    wrong_dtype.inputs["history"].CopyFrom(tf.make_tensor_proto(history.astype(np.float64)))
    with pytest.raises(grpc.RpcError) as raised:
        prediction_stub.Predict(wrong_dtype, timeout=30)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "to be float but double is provided" in raised.value.details()

    wrong_shape = predict_request(STATIC)
    wrong_shape.inputs["history"].CopyFrom(tf.make_tensor_proto(np.zeros((1, 5, 3), np.float32)))
    with pytest.raises(grpc.RpcError) as raised:
        prediction_stub.Predict(wrong_shape, timeout=30)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_get_model_metadata_packs_the_signature_def_map(prediction_stub):
    from tensorflow_serving.apis import get_model_metadata_pb2

    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = STATIC
    response = prediction_stub.GetModelMetadata(request, timeout=30)
    assert response.model_spec.version.value == 2
    signatures = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(signatures)
    serving = signatures.signature_def["serving_default"]
    assert serving.method_name == "tensorflow/serving/predict"
    assert [d.size for d in serving.inputs["history"].tensor_shape.dim] == [-1, SPEC.lookback_h, len(SPEC.history_features)]
    assert [d.size for d in serving.inputs["future"].tensor_shape.dim] == [-1, SPEC.horizon_h, len(SPEC.future_features)]
    assert sorted(serving.outputs) == ["p10", "p50", "p90"]

    bad = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["nope"])
    bad.model_spec.name = STATIC
    with pytest.raises(grpc.RpcError) as raised:
        prediction_stub.GetModelMetadata(bad, timeout=30)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "Metadata field nope is not supported" in raised.value.details()


def test_classify_regress_and_multi_inference_answer_as_for_a_predict_only_model(prediction_stub):
    from tensorflow_serving.apis import classification_pb2, inference_pb2, regression_pb2

    classify = classification_pb2.ClassificationRequest()
    classify.model_spec.name = STATIC
    with pytest.raises(grpc.RpcError) as raised:
        prediction_stub.Classify(classify, timeout=30)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert raised.value.details() == (
        "Expected classification signature method_name to be tensorflow/serving/classify. "
        "Was: tensorflow/serving/predict"
    )
    regress = regression_pb2.RegressionRequest()
    regress.model_spec.name = STATIC
    with pytest.raises(grpc.RpcError) as raised:
        prediction_stub.Regress(regress, timeout=30)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "Expected regression signature method_name to be tensorflow/serving/regress" in raised.value.details()
    multi = inference_pb2.MultiInferenceRequest()
    task = multi.tasks.add(method_name="tensorflow/serving/classify")
    task.model_spec.name = STATIC
    with pytest.raises(grpc.RpcError) as raised:
        prediction_stub.MultiInference(multi, timeout=30)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    missing = classification_pb2.ClassificationRequest()
    missing.model_spec.name = "no_such_model"
    with pytest.raises(grpc.RpcError) as raised:
        prediction_stub.Classify(missing, timeout=30)
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


def test_get_model_status_lists_versions_newest_first(model_stub):
    from tensorflow_serving.apis import get_model_status_pb2

    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = STATIC
    response = model_stub.GetModelStatus(request, timeout=30)
    versions = [(s.version, get_model_status_pb2.ModelVersionStatus.State.Name(s.state)) for s in response.model_version_status]
    assert versions == [(2, "AVAILABLE"), (1, "AVAILABLE")]
    request.model_spec.version.value = 9
    with pytest.raises(grpc.RpcError) as raised:
        model_stub.GetModelStatus(request, timeout=30)
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    assert f"Could not find version 9 of model {STATIC}" in raised.value.details()


# ---- REST ------------------------------------------------------------------------------------------
def test_rest_model_status_and_metadata(endpoint):
    status = requests.get(f"{endpoint.rest_url}/v1/models/{STATIC}", timeout=30)
    assert status.status_code == 200
    assert status.json() == {
        "model_version_status": [
            {"version": "2", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}},
            {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}},
        ]
    }
    one = requests.get(f"{endpoint.rest_url}/v1/models/{STATIC}/versions/1", timeout=30).json()
    assert [v["version"] for v in one["model_version_status"]] == ["1"]
    labelled = requests.get(f"{endpoint.rest_url}/v1/models/{STATIC}/labels/canary", timeout=30).json()
    assert [v["version"] for v in labelled["model_version_status"]] == ["2"]
    metadata = requests.get(f"{endpoint.rest_url}/v1/models/{STATIC}/versions/1/metadata", timeout=30).json()
    assert metadata["model_spec"]["version"] == "1"
    inputs = metadata["metadata"]["signature_def"]["signature_def"]["serving_default"]["inputs"]
    assert inputs["history"]["dtype"] == "DT_FLOAT"
    assert [d["size"] for d in inputs["history"]["tensor_shape"]["dim"]] == ["-1", str(SPEC.lookback_h), str(len(SPEC.history_features))]


def test_rest_row_and_columnar_predict_agree_with_grpc(endpoint, prediction_stub):
    history, future = make_inputs(2, seed=5)
    grpc_request = predict_request(STATIC, batch=2, seed=5, version=1)
    grpc_p50 = _ndarray(prediction_stub.Predict(grpc_request, timeout=30).outputs["p50"])
    url = f"{endpoint.rest_url}/v1/models/{STATIC}/versions/1:predict"
    rows = requests.post(url, json={"instances": [
        {"history": history[i].tolist(), "future": future[i].tolist()} for i in range(2)
    ]}, timeout=30)
    assert rows.status_code == 200, rows.text
    predictions = rows.json()["predictions"]
    assert len(predictions) == 2 and sorted(predictions[0]) == ["p10", "p50", "p90"]
    np.testing.assert_allclose([p["p50"] for p in predictions], grpc_p50, rtol=1e-4, atol=1e-4)
    columns = requests.post(url, json={"signature_name": "serving_default",
                                       "inputs": {"history": history.tolist(), "future": future.tolist()}}, timeout=30)
    assert columns.status_code == 200, columns.text
    np.testing.assert_allclose(columns.json()["outputs"]["p50"], grpc_p50, rtol=1e-4, atol=1e-4)
    by_label = requests.post(f"{endpoint.rest_url}/v1/models/{STATIC}/labels/stable:predict",
                             json={"inputs": {"history": history.tolist(), "future": future.tolist()}}, timeout=30)
    np.testing.assert_allclose(by_label.json()["outputs"]["p50"], grpc_p50, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "message"),
    [
        ("GET", "/v1/models/no_such_model", None, 404, "Could not find any versions of model no_such_model"),
        ("POST", "/v1/models/no_such_model:predict", {"inputs": {}}, 404, "Servable not found for request: Latest(no_such_model)"),
        ("POST", f"/v1/models/{STATIC}/versions/7:predict", {"inputs": {}}, 404, f"Servable not found for request: Specific({STATIC}, 7)"),
        ("POST", f"/v1/models/{STATIC}/labels/nope:predict", {"inputs": {}}, 400, "Unrecognized servable version label: nope"),
        ("POST", f"/v1/models/{STATIC}:predict", {"signature_name": "nope", "inputs": {}}, 400, 'Serving signature key "nope" not found.'),
        ("POST", f"/v1/models/{STATIC}:predict", {"signature_name": 100}, 400, "'signature_name' key must be a string value."),
        ("POST", f"/v1/models/{STATIC}:predict", {"instances": [{"history": [[0.0]]}]}, 400, "Failed to process element: 0"),
        ("POST", f"/v1/models/{STATIC}:predict", {}, 400, "Missing 'inputs' or 'instances' key"),
        ("POST", f"/v1/models/{STATIC}:predict", "{not json", 400, "JSON Parse error"),
        ("POST", f"/v1/models/{STATIC}:classify", {"examples": [{"x": 1.0}]}, 400,
         "Expected classification signature method_name to be tensorflow/serving/classify"),
        ("POST", f"/v1/models/{STATIC}:regress", {"examples": [{"x": 1.0}]}, 400,
         "Expected regression signature method_name to be tensorflow/serving/regress"),
        ("GET", "/v1/nothing/here", None, 404, "Malformed request"),
    ],
)
def test_rest_errors_have_tf_servings_status_and_error_body(endpoint, method, path, body, status, message):
    url = endpoint.rest_url + path
    if method == "GET":
        response = requests.get(url, timeout=30)
    elif isinstance(body, str):
        response = requests.post(url, data=body, timeout=30)
    else:
        response = requests.post(url, json=body, timeout=30)
    assert response.status_code == status, response.text
    assert message in response.json()["error"]


def test_prometheus_metrics_use_tf_servings_names(endpoint, prediction_stub):
    prediction_stub.Predict(predict_request(STATIC), timeout=30)
    with pytest.raises(grpc.RpcError):
        prediction_stub.Predict(predict_request(STATIC, label="nope"), timeout=30)
    text = requests.get(f"{endpoint.rest_url}/monitoring/prometheus/metrics", timeout=30).text
    counts = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(":tensorflow:serving:request_count{")
    }
    assert counts[f':tensorflow:serving:request_count{{model_name="{STATIC}",status="OK"}}'] >= 1
    assert counts[f':tensorflow:serving:request_count{{model_name="{STATIC}",status="INVALID_ARGUMENT"}}'] >= 1
    assert "# TYPE :tensorflow:serving:request_latency histogram" in text
    assert f':tensorflow:serving:request_latency_count{{model_name="{STATIC}",API="predict",entrypoint="GRPC"}}' in text
    assert ":tensorflow:cc:saved_model:load_attempt_count{" in text


def test_concurrent_predicts_are_batched_and_split_back_exactly(endpoint, prediction_stub):
    """Dynamic batching merges concurrent requests; each caller still gets exactly its own rows."""
    from concurrent.futures import ThreadPoolExecutor

    requests_ = [predict_request(STATIC, version=1, seed=seed) for seed in range(24)]
    alone = [_ndarray(prediction_stub.Predict(r, timeout=30).outputs["p50"]) for r in requests_[:4]]
    with ThreadPoolExecutor(24) as pool:
        together = list(pool.map(lambda r: prediction_stub.Predict(r, timeout=30), requests_))
    for single, response in zip(alone, together[:4]):
        np.testing.assert_allclose(_ndarray(response.outputs["p50"]), single, rtol=1e-4, atol=1e-4)
    assert all(r.model_spec.version.value == 1 for r in together)
    if not endpoint.external:
        metrics = requests.get(f"{endpoint.rest_url}/monitoring/prometheus/metrics", timeout=30).text
        sizes = [line for line in metrics.splitlines() if line.startswith(":tensorflow:serving:batching_session:processed_batch_size_bucket")]
        batched_once = [line for line in sizes if 'le="1"' in line]
        total = [line for line in sizes if 'le="+Inf"' in line]
        assert float(total[0].rsplit(" ", 1)[1]) > float(batched_once[0].rsplit(" ", 1)[1]), "no batch larger than 1"


def test_lifecycle_model_serves_its_first_version(prediction_stub):
    response = prediction_stub.Predict(predict_request(LIFECYCLE), timeout=30)
    assert response.model_spec.version.value == 1
