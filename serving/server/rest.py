"""REST front end on the same process: TF Serving's `/v1/models/...` routes, JSON bodies and HTTP codes.

Routes and messages follow tensorflow_serving/model_servers/http_rest_api_handler.cc and json_tensor.cc:
row format (`instances` -> `predictions`) and columnar format (`inputs` -> `outputs`).
"""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
from google.protobuf import json_format
from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2, model_pb2

from serving.server.config import MonitoringConfig
from serving.server.core import ServingCore
from serving.server.errors import ServingError, invalid_argument, not_found
from serving.server.tensors import json_to_ndarray

_MODEL = r"/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?"
_GET = re.compile(rf"(?i){_MODEL}(?:/(metadata))?")
_POST = re.compile(rf"(?i){_MODEL}:(classify|regress|predict)")


def _model_spec(name: str, version: str | None, label: str | None) -> model_pb2.ModelSpec:
    spec = model_pb2.ModelSpec(name=name)
    if version is not None:
        spec.version.value = int(version)
    if label:
        spec.version_label = label
    return spec


def _to_json(message) -> dict:
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


class RestApi:
    """Turns a method, path and body into (HTTP status, JSON text); independent of the HTTP server."""

    def __init__(self, core: ServingCore, monitoring: MonitoringConfig) -> None:
        self.core = core
        self.monitoring = monitoring

    def handle(self, method: str, path: str, body: bytes) -> tuple[int, str, str]:
        path = path.split("?", 1)[0]
        if method == "GET" and self.monitoring.prometheus_enabled and path == self.monitoring.prometheus_path:
            return 200, "text/plain; version=0.0.4", self.core.metrics.render()
        started = time.perf_counter()
        model_name, api = "", "unknown"
        try:
            if method == "GET" and (match := _GET.fullmatch(path)):
                model_name, version, label, metadata = match.groups()
                api = "get_model_metadata" if metadata else "get_model_status"
                spec = _model_spec(model_name, version, label)
                result = self._metadata(spec) if metadata else self._status(spec)
            elif method == "POST" and (match := _POST.fullmatch(path)):
                model_name, version, label, verb = match.groups()
                api = verb.lower()
                result = self._post(api, _model_spec(model_name, version, label), body)
            else:
                raise not_found(f"Malformed request: {method} {path}")
        except ServingError as exc:
            self.core.metrics.request_count.inc(model_name, exc.code.name)
            return exc.http_status, "application/json", json.dumps({"error": exc.message})
        self.core.metrics.request_count.inc(model_name, "OK")
        self.core.metrics.request_latency.observe(model_name, api, "REST", value=(time.perf_counter() - started) * 1e6)
        return 200, "application/json", result

    def _status(self, spec) -> str:
        response = self.core.get_model_status(get_model_status_pb2.GetModelStatusRequest(model_spec=spec))
        return json.dumps(_to_json(response), indent=1)

    def _metadata(self, spec) -> str:
        request = get_model_metadata_pb2.GetModelMetadataRequest(model_spec=spec, metadata_field=["signature_def"])
        response = self.core.get_model_metadata(request)
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signature_map)
        return json.dumps(
            {
                "model_spec": {"name": spec.name, "signature_name": "", "version": str(response.model_spec.version.value)},
                "metadata": {"signature_def": _to_json(signature_map)},
            },
            indent=1,
        )

    def _post(self, api: str, spec, body: bytes) -> str:
        try:
            payload = json.loads(body or b"null")
        except (ValueError, UnicodeDecodeError) as exc:
            raise invalid_argument(f"JSON Parse error: {exc}") from None
        if not isinstance(payload, dict):
            raise invalid_argument("JSON Value: request body is not a JSON object")
        signature_name = payload.get("signature_name", "")
        if not isinstance(signature_name, str):
            raise invalid_argument("'signature_name' key must be a string value.")
        spec.signature_name = signature_name
        if api == "classify":
            self.core.check_classify(spec)
        if api == "regress":
            self.core.check_regress(spec)
        return self._predict(spec, payload)

    def _predict(self, spec, payload: dict) -> str:
        servable = self.core.resolve(spec)
        signature = servable.signature(spec.signature_name)
        has_rows, has_columns = "instances" in payload, "inputs" in payload
        if has_rows == has_columns:
            raise invalid_argument(
                "Missing 'inputs' or 'instances' key" if not has_rows
                else "Not formatted correctly expecting only one of 'inputs' or 'instances' keys exists"
            )
        if has_rows:
            inputs = _rows_to_inputs(payload["instances"], signature)
        else:
            inputs = _columns_to_inputs(payload["inputs"], signature)
        signature, wanted, outputs = self.core.run_signature(servable, spec.signature_name, inputs, [])
        if has_rows:
            batch = {outputs[name].shape[0] if outputs[name].ndim else None for name in wanted}
            if len(batch) != 1 or None in batch:
                raise invalid_argument("Tensor batch sizes of outputs differ; use the columnar 'inputs' format")
            if len(wanted) == 1:
                predictions = outputs[wanted[0]].tolist()
            else:
                lists = {name: outputs[name].tolist() for name in wanted}
                predictions = [{name: lists[name][i] for name in wanted} for i in range(batch.pop())]
            return json.dumps({"predictions": predictions})
        if len(wanted) == 1:
            return json.dumps({"outputs": outputs[wanted[0]].tolist()})
        return json.dumps({"outputs": {name: outputs[name].tolist() for name in wanted}})


def _rows_to_inputs(instances, signature) -> dict[str, np.ndarray]:
    if not isinstance(instances, list) or not instances:
        raise invalid_argument("'instances' must be a non-empty JSON list")
    names = signature.input_names
    if all(isinstance(row, dict) for row in instances):
        columns: dict[str, list] = {name: [] for name in names}
        for index, row in enumerate(instances):
            if set(row) != set(names):
                raise invalid_argument(
                    f"Failed to process element: {index} of 'instances' list. JSON object: {json.dumps(sorted(row))} "
                    f"keys do not match the signature inputs {{{','.join(names)}}}"
                )
            for name in names:
                columns[name].append(row[name])
    elif len(names) == 1:
        columns = {names[0]: instances}
    else:
        raise invalid_argument(
            f"Failed to process element: 0 of 'instances' list. JSON object is not an object with the "
            f"{len(names)} named inputs {{{','.join(names)}}}"
        )
    return {name: json_to_ndarray(values, signature.inputs[name].dtype, name) for name, values in columns.items()}


def _columns_to_inputs(columns, signature) -> dict[str, np.ndarray]:
    names = signature.input_names
    if not isinstance(columns, dict) or (len(names) == 1 and names[0] not in columns):
        if len(names) == 1:
            columns = {names[0]: columns}
        else:
            raise invalid_argument(f"'inputs' must be a JSON object with the inputs {{{','.join(names)}}}")
    return {str(name): json_to_ndarray(value, _dtype(signature, name), name) for name, value in columns.items()}


def _dtype(signature, name):
    spec = signature.inputs.get(name)
    return spec.dtype if spec else np.float32


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out as two writes; with Nagle on, the body waits for the client's delayed ACK (~40 ms).
    disable_nagle_algorithm = True
    api: RestApi
    max_body: int

    def _serve(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > self.max_body:
            status, ctype, text = 400, "application/json", json.dumps(
                {"error": f"Request body of {length} bytes exceeds the limit of {self.max_body} bytes"}
            )
            self.close_connection = True
        else:
            body = self.rfile.read(length) if length else b""
            status, ctype, text = self.api.handle(method, self.path, body)
        data = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self._serve("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._serve("POST")

    def log_message(self, format: str, *args) -> None:  # per-request access logs would dominate the hot path
        return


class RestServer:
    def __init__(self, api: RestApi, *, host: str, port: int, max_body: int, timeout_s: float) -> None:
        handler = type("Handler", (_Handler,), {"api": api, "max_body": max_body, "timeout": timeout_s})
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="rest", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
