"""One loaded SavedModel version: its signatures as concrete functions and its SignatureDefs for metadata."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np

from serving.server.errors import ServingError, failed_precondition, invalid_argument
from serving.server.tensors import dtype_name
from serving.xla import XLA_DISABLED_MESSAGE, uses_xla

DEFAULT_SIGNATURE = "serving_default"
PREDICT_METHOD = "tensorflow/serving/predict"
CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"
WARMUP_FILE = Path("assets.extra") / "tf_serving_warmup_requests"
MAX_WARMUP_RECORDS = 1000


@dataclass(frozen=True)
class InputSpec:
    name: str
    dtype: np.dtype
    dtype_enum: int
    shape: tuple[int | None, ...] | None


class Signature:
    """A serving signature: checks inputs the way TF Serving does, then calls the concrete function."""

    def __init__(self, name: str, function, signature_def, *, xla_refused: bool = False) -> None:
        self.name = name
        # A signature that must be XLA-compiled on a server without --xla_cpu_compilation_enabled: every call
        # fails the way TF Serving's first compilation request does.
        self.xla_refused = xla_refused
        self.signature_def = signature_def
        self.method_name = signature_def.method_name
        self._function = function
        _, kwargs = function.structured_input_signature
        self.inputs: dict[str, InputSpec] = {}
        for key, spec in sorted(kwargs.items()):
            shape = None if spec.shape.rank is None else tuple(spec.shape.as_list())
            self.inputs[key] = InputSpec(key, np.dtype(spec.dtype.as_numpy_dtype), spec.dtype.as_datatype_enum, shape)
        self.input_names = sorted(self.inputs)
        self.output_names = sorted(signature_def.outputs.keys())
        self._flat_order = _flat_input_order(function, self.input_names)
        # The graph function run as one eager op, below even `_call_flat` (see `_direct_call`); None: not possible.
        self._direct = _direct_call(function, self._flat_order)
        # Request input layouts (names, dtypes, shapes) that passed every check: ServingCore decodes those directly.
        self.layouts: dict[tuple, tuple] = {}
        # Wall seconds of the last unbatched gRPC model call per batch size (ServingCore: run it in the loop?).
        self.call_seconds: dict[int | None, float] = {}
        import tensorflow as tf
        from tensorflow.python.eager import context, execute

        self._to_tensor = tf.constant
        self._execute = execute.execute
        self._context = context.context

    def check_inputs(self, inputs: dict[str, np.ndarray]) -> None:
        if set(inputs) != set(self.input_names):
            sent, expected = sorted(inputs), self.input_names
            raise invalid_argument(
                f"input size does not match signature: {len(sent)}!={len(expected)} len({{{','.join(sent)}}}) "
                f"!= len({{{','.join(expected)}}}). Sent extra: {{{','.join(sorted(set(sent) - set(expected)))}}}. "
                f"Missing but required: {{{','.join(sorted(set(expected) - set(sent)))}}}."
            )
        for position, name in enumerate(self.input_names):
            spec, array = self.inputs[name], inputs[name]
            if array.dtype != spec.dtype:
                got = dtype_name(_dtype_enum(array.dtype))
                raise invalid_argument(f"Expects arg[{position}] to be {dtype_name(spec.dtype_enum)} but {got} is provided")
            if spec.shape is not None and (
                array.ndim != len(spec.shape)
                or any(want is not None and want != got for want, got in zip(spec.shape, array.shape))
            ):
                want = "[" + ",".join("?" if d is None else str(d) for d in spec.shape) + "]"
                raise invalid_argument(
                    f"Input {name} has shape [{','.join(map(str, array.shape))}] but the signature expects {want}"
                )

    def check_outputs(self, output_filter) -> list[str]:
        seen: list[str] = []
        for alias in output_filter:
            if alias not in self.signature_def.outputs:
                raise invalid_argument(
                    f"output tensor alias not found in signature: {alias} Outputs expected to be in the set "
                    f"{{{','.join(self.output_names)}}}."
                )
            if alias in seen:
                raise invalid_argument(f"duplicate output tensor alias: {alias}")
            seen.append(alias)
        return seen or self.output_names

    def __call__(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the signature on inputs that passed `check_inputs`."""
        if self.xla_refused:
            raise ServingError(
                grpc.StatusCode.INTERNAL,
                f"{XLA_DISABLED_MESSAGE} (signature {self.name!r} is XLA-compiled: start the server with "
                "--xla_cpu_compilation_enabled=true)",
            )
        function = self._function
        try:
            if self._direct is not None:
                op_name, captured, output_names, attrs = self._direct
                if attrs is None:  # the context's call options, read on first use (after the server set its threads)
                    attrs = _call_attrs()
                    self._direct = (op_name, captured, output_names, attrs)
                tensors = [self._to_tensor(inputs[name]) for name in self._flat_order]
                flat = self._execute(op_name, len(output_names), tensors + captured, attrs, self._context())
                return {name: tensor.numpy() for name, tensor in zip(output_names, flat)}
            if self._flat_order is None:
                result = function(**inputs)
            else:
                # The keyword call binds and casts every argument against the signature in Python (~0.4 ms of
                # GIL-held work per call on 2 cores); `check_inputs` has already checked dtypes and shapes the way
                # TF Serving words it, so the tensors go to the graph function directly, in its argument order.
                tensors = [self._to_tensor(inputs[name]) for name in self._flat_order]
                result = function._call_flat(tensors, function.captured_inputs)
        except Exception as exc:  # a TF runtime error is the caller's input in practice (shapes, values)
            raise _as_serving_error(exc) from exc
        return {name: tensor.numpy() for name, tensor in result.items()}


def _flat_input_order(function, names: list[str]) -> list[str] | None:
    """The signature's input names in the order its graph function takes them, or None to keep the keyword call.

    This is the order in which the keyword call itself flattens its arguments (`function_type`'s parameters),
    usable when every parameter is one tensor.
    """
    import tensorflow as tf

    function_type = getattr(function, "function_type", None)
    if function_type is None or not hasattr(function, "_call_flat"):
        return None
    parameters = function_type.parameters
    if sorted(parameters) != names or not all(isinstance(p.type_constraint, tf.TensorSpec) for p in parameters.values()):
        return None
    return list(parameters)


def _direct_call(function, flat_order: list[str] | None) -> tuple | None:
    """(op name, captured tensors, output names in flat order, None) to run the graph function as one eager op.

    `_call_flat` spends ~0.2 ms of Python per call on this model (gradient-tape checks, context managers, output
    packing) around the op that runs the function: the same op, with the same inputs, captured variable handles
    and call options (`context.call_function`'s attrs), is what runs here. Only for a servable's signature: no
    tape watches it, it runs eagerly, and its variables never change after load (the handles are kept). None
    when this TensorFlow lacks the pieces or the outputs are not one tensor per name.
    """
    if flat_order is None:
        return None
    try:
        from tensorflow.python.util import nest

        inference = function._inference_function
        op_name = inference.name.decode("utf-8")
        captured = list(function.captured_inputs)
        paths = nest.flatten_with_joined_string_paths(function.structured_outputs)
        expected_inputs = len(inference.cached_definition.signature.input_arg)
        flat_outputs = len(inference.function_type.flat_outputs)
    except (AttributeError, TypeError, ValueError):
        return None
    import tensorflow as tf

    output_names = [path for path, _ in paths]
    if (expected_inputs != len(flat_order) + len(captured) or flat_outputs != len(output_names)
            or len(set(output_names)) != len(output_names)
            or not all(isinstance(spec, (tf.Tensor, tf.TensorSpec)) for _, spec in paths)):
        return None
    return op_name, captured, output_names, None


def _call_attrs() -> tuple:
    """The attrs `context.call_function` passes with every function call (executor type, session config)."""
    import itertools

    from tensorflow.python.eager import context

    return tuple(itertools.chain(*context.context().function_call_options.as_attrs().items()))


def _dtype_enum(dtype: np.dtype) -> int:
    import tensorflow as tf

    try:
        return tf.as_dtype(dtype).as_datatype_enum
    except TypeError:
        return 0


def _as_serving_error(exc: Exception) -> ServingError:
    import tensorflow as tf

    if isinstance(exc, ServingError):
        return exc
    if isinstance(exc, tf.errors.OpError):
        return ServingError(grpc.StatusCode(_grpc_code(exc.error_code)), exc.message)
    if isinstance(exc, (TypeError, ValueError)):
        return invalid_argument(str(exc))
    return ServingError(grpc.StatusCode.INTERNAL, f"{type(exc).__name__}: {exc}")


def _grpc_code(number: int) -> tuple:
    for code in grpc.StatusCode:
        if code.value[0] == number:
            return code.value
    return grpc.StatusCode.UNKNOWN.value


def directory_fingerprint(path: Path) -> tuple:
    """Changes whenever a file under `path` is added, removed or rewritten: a failed load is retried only then."""
    entries = []
    for root, _dirs, files in os.walk(path):
        for file in files:
            full = os.path.join(root, file)
            try:
                stat = os.stat(full)
            except OSError:
                continue
            entries.append((os.path.relpath(full, path), stat.st_size, stat.st_mtime_ns))
    return tuple(sorted(entries))


class Servable:
    """A loaded model version. Immutable after load; requests hold a reference, so unloading never cuts one short."""

    def __init__(self, model_name: str, version: int, path: Path) -> None:
        self.model_name = model_name
        self.version = version
        self.path = path
        self.signatures: dict[str, Signature] = {}
        self.signature_def_map = None
        self.uses_xla = False
        self._module = None
        self._lock = threading.Lock()

    @classmethod
    def load(cls, model_name: str, version: int, path: Path, *, xla_enabled: bool = True) -> "Servable":
        """`xla_enabled`: TF Serving's --xla_cpu_compilation_enabled; off, XLA-compiled signatures refuse to run."""
        import tensorflow as tf
        from tensorflow.core.protobuf import saved_model_pb2

        servable = cls(model_name, version, path)
        pb_path = path / "saved_model.pb"
        if not pb_path.exists():
            raise ServingError(
                grpc.StatusCode.NOT_FOUND,
                f"Could not find SavedModel .pb or .pbtxt at supplied export directory path: {path}",
            )
        saved_model = saved_model_pb2.SavedModel()
        try:
            saved_model.ParseFromString(pb_path.read_bytes())
        except Exception as exc:  # protobuf raises DecodeError, a bare Exception subclass
            raise ServingError(grpc.StatusCode.DATA_LOSS, f"Could not parse SavedModel at {pb_path}: {exc}") from exc
        if not saved_model.meta_graphs:
            raise ServingError(grpc.StatusCode.DATA_LOSS, f"SavedModel at {path} has no MetaGraphDef")
        signature_defs = saved_model.meta_graphs[0].signature_def
        servable.uses_xla = uses_xla(saved_model)
        try:
            module = tf.saved_model.load(str(path))
        except Exception as exc:
            raise _load_error(exc, path) from exc
        servable._module = module
        for name, function in module.signatures.items():
            servable.signatures[name] = Signature(name, function, signature_defs[name],
                                                  xla_refused=servable.uses_xla and not xla_enabled)
        from tensorflow_serving.apis import get_model_metadata_pb2

        servable.signature_def_map = get_model_metadata_pb2.SignatureDefMap()
        for name, signature_def in signature_defs.items():
            servable.signature_def_map.signature_def[name].CopyFrom(signature_def)
        return servable

    def signature(self, name: str) -> Signature:
        key = name or DEFAULT_SIGNATURE
        try:
            return self.signatures[key]
        except KeyError:
            raise failed_precondition(f'Serving signature key "{key}" not found.') from None

    def signature_def(self, name: str, method: str, what: str):
        """For Classify/Regress: the signature must exist and carry that method name, as TF Serving checks."""
        key = name or DEFAULT_SIGNATURE
        if key not in self.signature_def_map.signature_def:
            raise invalid_argument(f"No signature was found with the name: {key}")
        signature_def = self.signature_def_map.signature_def[key]
        if signature_def.method_name != method:
            raise invalid_argument(
                f"Expected {what} signature method_name to be {method}. Was: {signature_def.method_name}"
            )
        return signature_def


def _load_error(exc: Exception, path: Path) -> ServingError:
    import tensorflow as tf

    if isinstance(exc, tf.errors.OpError):
        return ServingError(grpc.StatusCode(_grpc_code(exc.error_code)), f"Loading {path} failed: {exc.message}")
    if isinstance(exc, OSError):
        return ServingError(grpc.StatusCode.NOT_FOUND, f"Loading {path} failed: {exc}")
    return ServingError(grpc.StatusCode.DATA_LOSS, f"Loading {path} failed: {type(exc).__name__}: {exc}")


def read_warmup_requests(path: Path):
    """PredictionLog records of `assets.extra/tf_serving_warmup_requests`; more than 1000 is an error, as in TF Serving."""
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    warmup_path = path / WARMUP_FILE
    if not warmup_path.exists():
        return []
    logs = []
    for record in tf.data.TFRecordDataset(str(warmup_path)).as_numpy_iterator():
        if len(logs) >= MAX_WARMUP_RECORDS:
            raise invalid_argument(
                f"Number of warmup records exceeds the maximum ({MAX_WARMUP_RECORDS}) at {warmup_path}"
            )
        log = prediction_log_pb2.PredictionLog()
        log.ParseFromString(record)
        logs.append(log)
    return logs
