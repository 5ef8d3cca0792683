"""The API semantics shared by the gRPC and REST front ends: resolve a model spec, check, run, answer.

Each handler takes and returns the stock `tensorflow_serving.apis` messages (REST converts JSON to the same
calls), so both entry points give the same codes and messages.
"""

from __future__ import annotations

import time

import numpy as np
from google.protobuf import any_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_management_pb2,
    predict_pb2,
)

from serving.server.batching import BatchScheduler
from serving.server.config import validate_model_server_config
from serving.server.errors import ServingError, error_code_number, invalid_argument, unimplemented
from serving.server.manager import ModelManager
from serving.server.metrics import ServingMetrics
from serving.server.servable import (
    CLASSIFY_METHOD,
    DEFAULT_SIGNATURE,
    REGRESS_METHOD,
    Servable,
    Signature,
    read_warmup_requests,
)
from serving.server.tensors import declared, encode_predict_response, ndarray_to_proto, proto_to_ndarray


class ServingCore:
    def __init__(self, manager: ModelManager, metrics: ServingMetrics, batcher: BatchScheduler | None,
                 *, warmup_iterations: int = 1, max_tensor_bytes: int | None = None,
                 inline_call_max_s: float | None = None, inline_idle_gap_s: float | None = None,
                 inline_busy_hold_s: float | None = None) -> None:
        self.manager = manager
        self.metrics = metrics
        self.batcher = batcher
        self.warmup_iterations = warmup_iterations
        # The decoded size of one request's tensors, all inputs together (the --max_request_bytes flag).
        self.max_tensor_bytes = max_tensor_bytes
        # Where the gRPC front end runs model calls without a batcher, and every blocking handler.
        self.executor = None
        # Unbatched gRPC model calls under way (counted in the event loop): 1 means the loop has no other call.
        self._in_flight = 0
        # When the last unbatched call ended (perf_counter seconds): a call arriving right after it had queued.
        self._last_ended = 0.0
        # Until when (perf_counter seconds) calls keep the executor because one found another in flight.
        self._busy_until = 0.0
        if inline_call_max_s is not None:
            self.INLINE_CALL_MAX_S = inline_call_max_s
        if inline_idle_gap_s is not None:
            self.INLINE_IDLE_GAP_S = inline_idle_gap_s
        if inline_busy_hold_s is not None:
            self.INLINE_BUSY_HOLD_S = inline_busy_hold_s

    # ---- model spec --------------------------------------------------------------------------------
    def resolve(self, model_spec) -> Servable:
        version = model_spec.version.value if model_spec.HasField("version") else None
        return self.manager.resolve(model_spec.name, version, model_spec.version_label)

    # ---- predict -----------------------------------------------------------------------------------
    def run_signature(self, servable: Servable, signature_name: str, inputs: dict[str, np.ndarray],
                      output_filter) -> tuple[Signature, list[str], dict[str, np.ndarray]]:
        signature = servable.signature(signature_name)
        signature.check_inputs(inputs)
        wanted = signature.check_outputs(output_filter)
        started = time.perf_counter()
        if self.batcher is not None:
            key = (servable.model_name, servable.version, id(servable), signature.name)
            outputs = self.batcher.run(key, inputs, signature)
        else:
            outputs = signature(inputs)
        self.metrics.runtime_latency.observe(
            servable.model_name, "Predict", "TF2", value=(time.perf_counter() - started) * 1e6
        )
        return signature, wanted, outputs

    def predict(self, request: predict_pb2.PredictRequest) -> predict_pb2.PredictResponse:
        servable, inputs = self._predict_inputs(request)
        signature, wanted, outputs = self.run_signature(
            servable, request.model_spec.signature_name, inputs, request.output_filter
        )
        return _predict_response(request, servable, signature, wanted, outputs)

    async def predict_async(self, request: predict_pb2.PredictRequest) -> bytes:
        """Predict from the gRPC event loop: everything but the model call runs in the loop, the model call in
        the batcher (no thread waits for it); without batching the call goes to `executor`. Answers the serialized
        PredictResponse (serving.server.tensors.encode_predict_response)."""
        servable = self.resolve(request.model_spec)
        signature = servable.signature(request.model_spec.signature_name)
        inputs = self._decode_known_layout(signature, request)
        if inputs is None:
            servable, inputs = self._predict_inputs(request)  # checked against the signature already
            signature = servable.signature(request.model_spec.signature_name)
            self._remember_layout(signature, request, inputs)
        wanted = signature.check_outputs(request.output_filter) if request.output_filter else signature.output_names
        started = time.perf_counter()
        if self.batcher is not None:
            key = (servable.model_name, servable.version, id(servable), signature.name)
            outputs = await self.batcher.run_async(key, inputs, signature)
        else:
            outputs = await self._call_unbatched(signature, inputs)
        self.metrics.runtime_latency.observe(
            servable.model_name, "Predict", "TF2", value=(time.perf_counter() - started) * 1e6
        )
        return encode_predict_response(request.model_spec.name, servable.version, signature.name, outputs, wanted)

    # An unbatched model call runs in the event loop itself, not on an executor thread, when the server was idle
    # when it arrived: no other Predict in flight, and the last one ended at least INLINE_IDLE_GAP_S before (a
    # client's next request cannot come back sooner than a gRPC round trip, ~0.5 ms here; requests that queued
    # behind a busy server start within tens of microseconds of the previous call's end). Handing the call to a
    # thread and the answer back costs two thread wake-ups, 0.12-0.2 ms per call at batch 1 measured with and
    # without XLA. While the call runs the loop reads nothing, so a request that arrives meanwhile waits for it:
    # INLINE_CALL_MAX_S caps that wait (a call that took longer last time at its batch size goes to the executor),
    # and a busy server keeps the executor, so the loop goes on reading and answering: calls back to back, or any
    # call that found another in flight within the last INLINE_BUSY_HOLD_S (a burst of clients is seen as soon as
    # one call overlaps another, and a steady stream of them keeps overlapping on the executor). From the settings
    # serving.inline_call_max_ms, serving.inline_idle_gap_ms, serving.inline_busy_hold_ms.
    INLINE_CALL_MAX_S = 0.01
    INLINE_IDLE_GAP_S = 0.0002
    INLINE_BUSY_HOLD_S = 0.1

    async def _call_unbatched(self, signature: Signature, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        batch = _batch_size(inputs)
        last = signature.call_seconds.get(batch)
        self._in_flight += 1
        try:
            started = time.perf_counter()
            if self._in_flight > 1:
                self._busy_until = started + self.INLINE_BUSY_HOLD_S
            if (self._in_flight == 1 and last is not None and last <= self.INLINE_CALL_MAX_S
                    and started - self._last_ended >= self.INLINE_IDLE_GAP_S and started >= self._busy_until):
                outputs = signature(inputs)
            else:
                import asyncio

                outputs = await asyncio.get_running_loop().run_in_executor(self.executor, signature, inputs)
            ended = time.perf_counter()
            if len(signature.call_seconds) >= self._MAX_LAYOUTS:  # bounded, like the layouts
                signature.call_seconds.clear()
            signature.call_seconds[batch] = ended - started
        finally:
            self._in_flight -= 1
            self._last_ended = time.perf_counter()
        return outputs

    # Requests of one client look alike: the same input names, dtypes and shapes. Once a request with that layout
    # has passed every check, later ones are decoded straight from their tensor_content (~15 us instead of ~80 us
    # of per-field Python at batch 1); anything else (other shapes, values in the *_val fields) takes the full path.
    _MAX_LAYOUTS = 64

    def _layout_key(self, request) -> tuple:
        return tuple((name, tensor.dtype, tensor.tensor_shape.SerializeToString())
                     for name, tensor in request.inputs.items())

    def _decode_known_layout(self, signature: Signature, request) -> dict[str, np.ndarray] | None:
        layout = signature.layouts.get(self._layout_key(request))
        if layout is None:
            return None
        inputs = {}
        for (name, dtype, shape, nbytes), tensor in zip(layout, request.inputs.values()):
            content = tensor.tensor_content
            if len(content) != nbytes:
                return None
            inputs[name] = np.frombuffer(content, dtype=dtype).reshape(shape)
        return inputs

    def _remember_layout(self, signature: Signature, request, inputs: dict[str, np.ndarray]) -> None:
        layouts = signature.layouts
        if len(layouts) >= self._MAX_LAYOUTS:  # bounded: a client cycling through shapes cannot grow it
            layouts.clear()
        layouts[self._layout_key(request)] = tuple(
            (name, inputs[name].dtype, inputs[name].shape, inputs[name].nbytes) for name in request.inputs
        )

    def _predict_inputs(self, request: predict_pb2.PredictRequest) -> tuple[Servable, dict[str, np.ndarray]]:
        servable = self.resolve(request.model_spec)
        # Names, dtypes and shapes against the signature from the protos' declarations, before any allocation.
        declarations = {name: declared(tensor, name) for name, tensor in request.inputs.items()}
        servable.signature(request.model_spec.signature_name).check_inputs(declarations)
        if self.max_tensor_bytes is not None:
            sizes = {name: d.nbytes for name, d in declarations.items()}
            if sum(sizes.values()) > self.max_tensor_bytes:
                name = max(sizes, key=sizes.get)
                raise invalid_argument(
                    f"Input tensor {name} of shape {list(declarations[name].shape)} would take {sizes[name]} bytes; "
                    f"the request's tensors ({sum(sizes.values())} bytes) exceed the limit of "
                    f"{self.max_tensor_bytes} bytes (--max_request_bytes)"
                )
        inputs = {name: proto_to_ndarray(tensor, name, self.max_tensor_bytes) for name, tensor in request.inputs.items()}
        return servable, inputs

    # ---- metadata and status -----------------------------------------------------------------------
    def get_model_metadata(self, request: get_model_metadata_pb2.GetModelMetadataRequest):
        if not request.HasField("model_spec"):
            raise invalid_argument("Missing ModelSpec")
        if not request.metadata_field:
            raise invalid_argument("GetModelMetadataRequest must specify at least one metadata_field")
        for field in request.metadata_field:
            if field != "signature_def":
                raise invalid_argument(f"Metadata field {field} is not supported")
        servable = self.resolve(request.model_spec)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = request.model_spec.name
        response.model_spec.version.value = servable.version
        packed = any_pb2.Any()
        packed.Pack(servable.signature_def_map)
        response.metadata["signature_def"].CopyFrom(packed)
        return response

    def get_model_status(self, request: get_model_status_pb2.GetModelStatusRequest):
        spec = request.model_spec
        if not spec.name:
            raise invalid_argument("Missing ModelSpec")
        version = spec.version.value if spec.HasField("version") else None
        response = get_model_status_pb2.GetModelStatusResponse()
        for number, state, error in self.manager.version_status(spec.name, version, spec.version_label):
            status = response.model_version_status.add(version=number, state=state)
            status.status.SetInParent()
            if error is not None:
                status.status.error_code = error_code_number(error.code)
                status.status.error_message = error.message
        return response

    def reload_config(self, request: model_management_pb2.ReloadConfigRequest):
        validate_model_server_config(request.config)
        response = model_management_pb2.ReloadConfigResponse()
        try:
            self.manager.apply_config(request.config, strict_labels=True)
        except ServingError as exc:
            response.status.error_code = error_code_number(exc.code)
            response.status.error_message = exc.message
            raise _WithResponse(exc, response) from exc
        return response

    # ---- classify / regress / multi-inference ---------------------------------------------------------
    def check_classify(self, model_spec) -> None:
        self.resolve(model_spec).signature_def(model_spec.signature_name, CLASSIFY_METHOD, "classification")

    def check_regress(self, model_spec) -> None:
        self.resolve(model_spec).signature_def(model_spec.signature_name, REGRESS_METHOD, "regression")

    def check_multi_inference(self, request) -> None:
        if not request.tasks:
            raise invalid_argument("MultiInferenceRequest must specify at least one task")
        model_name = request.tasks[0].model_spec.name
        seen: set[str] = set()
        for task in request.tasks:
            if task.model_spec.name != model_name:
                raise invalid_argument("All ModelSpecs in a MultiInferenceRequest must access the same model name.")
            name = task.model_spec.signature_name or DEFAULT_SIGNATURE
            if name in seen:
                raise invalid_argument(f"Duplicate evaluation of signature: {name}")
            seen.add(name)
            if task.method_name == CLASSIFY_METHOD:
                self.check_classify(task.model_spec)
            elif task.method_name == REGRESS_METHOD:
                self.check_regress(task.model_spec)
            else:
                raise unimplemented(f"Unsupported signature method_name: {task.method_name}")

    # ---- warmup ------------------------------------------------------------------------------------
    def warmup(self, servable: Servable) -> None:
        """Replay `assets.extra/tf_serving_warmup_requests` against the version before it turns AVAILABLE."""
        started = time.perf_counter()
        status = "OK"
        try:
            logs = read_warmup_requests(servable.path)
            warmed = set()
            for _ in range(max(1, self.warmup_iterations)):
                for log in logs:
                    kind = log.WhichOneof("log_type")
                    if kind != "predict_log":
                        raise invalid_argument(f"Unsupported log_type for warmup: {kind}")
                    request = log.predict_log.request
                    inputs = {name: proto_to_ndarray(t, name) for name, t in request.inputs.items()}
                    signature = servable.signature(request.model_spec.signature_name)
                    signature.check_inputs(inputs)
                    signature(inputs)
                    warmed.add(signature.name)
            self._compile_allowed_batch_sizes(servable, warmed or {DEFAULT_SIGNATURE})
        except ServingError as exc:
            status = exc.code.name
            raise
        finally:
            self.metrics.model_warmup_latency.observe(
                str(servable.path), status, value=(time.perf_counter() - started) * 1e6
            )


    def _compile_allowed_batch_sizes(self, servable: Servable, signature_names: set[str]) -> None:
        """XLA compiles once per input shape: run every allowed batch size now, so no request pays a compile.

        Only for XLA-compiled signatures that may run (a refused one fails at its first request, as in TF Serving)
        and when the batcher pads to allowed sizes; inputs are zeros of each signature's declared shape.
        """
        sizes = self.batcher.params.allowed_batch_sizes if self.batcher is not None else ()
        if not sizes or not servable.uses_xla:
            return
        for name in sorted(signature_names):
            signature = servable.signatures.get(name)
            if signature is None or signature.xla_refused:
                continue
            specs = signature.inputs.values()
            if any(spec.shape is None or None in spec.shape[1:] for spec in specs):
                continue  # a dimension besides the batch is free: no fixed set of shapes to compile
            for size in sizes:
                signature({spec.name: np.zeros((size, *spec.shape[1:]), dtype=spec.dtype) for spec in specs})


def _predict_response(request, servable: Servable, signature: Signature, wanted: list[str],
                      outputs: dict[str, np.ndarray]) -> predict_pb2.PredictResponse:
    response = predict_pb2.PredictResponse()
    spec = response.model_spec
    spec.name = request.model_spec.name
    spec.version.value = servable.version
    spec.signature_name = signature.name
    for name in wanted:
        response.outputs[name].CopyFrom(ndarray_to_proto(outputs[name]))
    return response


class _WithResponse(ServingError):
    """A reload failure that also carries the ReloadConfigResponse TF Serving fills in."""

    def __init__(self, error: ServingError, response) -> None:
        super().__init__(error.code, error.message)
        self.response = response


def _batch_size(inputs: dict[str, np.ndarray]) -> int | None:
    for array in inputs.values():
        return array.shape[0] if array.ndim else None
    return None
