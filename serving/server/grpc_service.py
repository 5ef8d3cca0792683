"""gRPC front end: the stock generated servicer bases of `tensorflow_serving.apis`, on a thread-pool server."""

from __future__ import annotations

import time
from concurrent import futures

import grpc
from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

from serving.server.core import ServingCore, _WithResponse
from serving.server.errors import ServingError


class _Observed:
    """Counts each call under TF Serving's metric names and turns a ServingError into the gRPC status."""

    def __init__(self, core: ServingCore) -> None:
        self._core = core

    def _call(self, api: str, model_name: str, context, handler, request):
        started = time.perf_counter()
        metrics = self._core.metrics
        try:
            response = handler(request)
        except _WithResponse as exc:
            metrics.request_count.inc(model_name, exc.code.name)
            context.set_code(exc.code)
            context.set_details(exc.message)
            return exc.response
        except ServingError as exc:
            metrics.request_count.inc(model_name, exc.code.name)
            context.abort(exc.code, exc.message)
        metrics.request_count.inc(model_name, "OK")
        metrics.request_latency.observe(model_name, api, "GRPC", value=(time.perf_counter() - started) * 1e6)
        return response


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer, _Observed):
    def Predict(self, request, context):
        return self._call("predict", request.model_spec.name, context, self._core.predict, request)

    def GetModelMetadata(self, request, context):
        return self._call("get_model_metadata", request.model_spec.name, context, self._core.get_model_metadata, request)

    def Classify(self, request, context):
        return self._call("classify", request.model_spec.name, context, self._unsupported("check_classify"), request)

    def Regress(self, request, context):
        return self._call("regress", request.model_spec.name, context, self._unsupported("check_regress"), request)

    def MultiInference(self, request, context):
        name = request.tasks[0].model_spec.name if request.tasks else ""
        return self._call("multi_inference", name, context, self._core.check_multi_inference, request)

    def _unsupported(self, check: str):
        # The forecaster exports only a predict signature: the check raises TF Serving's error for that case.
        def handler(request):
            getattr(self._core, check)(request.model_spec)
            raise ServingError(grpc.StatusCode.INTERNAL, "unreachable: signature check passed")

        return handler


class ModelService(model_service_pb2_grpc.ModelServiceServicer, _Observed):
    def GetModelStatus(self, request, context):
        return self._call("get_model_status", request.model_spec.name, context, self._core.get_model_status, request)

    def HandleReloadConfigRequest(self, request, context):
        return self._call("reload_config", "", context, self._core.reload_config, request)


def build_grpc_server(core: ServingCore, *, host: str, port: int, max_threads: int, max_message_bytes: int,
                      extra_options: list[tuple[str, object]] | None = None) -> tuple[grpc.Server, int]:
    options = [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.so_reuseport", 0),
        *(extra_options or []),
    ]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_threads, thread_name_prefix="grpc"), options=options,
                         maximum_concurrent_rpcs=None)
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionService(core), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(core), server)
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"cannot bind gRPC port {host}:{port}")
    return server, bound
