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
    """`reload_access`: "open" is TF Serving's behaviour (anyone who reaches the port may replace the model
    config); "mtls" admits only callers whose certificate the server verified against custom_ca; "off" refuses."""

    def __init__(self, core: ServingCore, reload_access: str = "open") -> None:
        super().__init__(core)
        self._reload_access = reload_access

    def GetModelStatus(self, request, context):
        return self._call("get_model_status", request.model_spec.name, context, self._core.get_model_status, request)

    def HandleReloadConfigRequest(self, request, context):
        if self._reload_access == "off" or (self._reload_access == "mtls" and not _verified_client(context)):
            self._core.metrics.request_count.inc("", "PERMISSION_DENIED")
            context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                "HandleReloadConfigRequest is disabled on this server (--reload_config_access="
                f"{self._reload_access}); change the model config file instead"
                + (" or call with a client certificate signed by the server's custom_ca"
                   if self._reload_access == "mtls" else ""),
            )
        return self._call("reload_config", "", context, self._core.reload_config, request)


def _verified_client(context) -> bool:
    """True when the peer presented a certificate that the TLS handshake verified (grpc's x509 auth context)."""
    return bool(context.peer_identities())


def server_credentials(ssl_config) -> grpc.ServerCredentials:
    """TF Serving's BuildServerCredentialsFromSSLConfigFile: key and certificate, custom CA, client verification."""
    return grpc.ssl_server_credentials(
        [(ssl_config.server_key.encode(), ssl_config.server_cert.encode())],
        root_certificates=ssl_config.custom_ca.encode() or None,
        require_client_auth=ssl_config.client_verify,
    )


def build_grpc_server(core: ServingCore, *, host: str, port: int, max_threads: int, max_message_bytes: int,
                      max_concurrent_rpcs: int | None = None, ssl_config=None, reload_access: str = "open",
                      extra_options: list[tuple[str, object]] | None = None) -> tuple[grpc.Server, int]:
    options = [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.so_reuseport", 0),
        *(extra_options or []),
    ]
    # Beyond `max_concurrent_rpcs` calls in flight grpcio answers RESOURCE_EXHAUSTED at once, so a flood cannot
    # queue unbounded work behind the thread pool.
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_threads, thread_name_prefix="grpc"), options=options,
                         maximum_concurrent_rpcs=max_concurrent_rpcs)
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionService(core), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(core, reload_access), server)
    address = f"{host}:{port}"
    if ssl_config is not None:
        bound = server.add_secure_port(address, server_credentials(ssl_config))
    else:
        bound = server.add_insecure_port(address)
    if bound == 0:
        raise OSError(f"cannot bind gRPC port {host}:{port}")
    return server, bound
