"""One loaded SavedModel version, run the way TF Serving runs it: the MetaGraph imported into a TF1 Session
(TF Serving's SavedModelBundle is a DirectSession), each signature a callable of that Session.

Why a Session and not TF2's eager `tf.saved_model.load`: it is TF Serving's runtime, so an export that TF
Serving cannot run fails here too (an XLA export whose loops the Session lowers did; serving/xla.py), and it is
faster for this workload. Measured on 2 cores, the default LSTM at batch 1: the plain export 2.18 ms per call
in a Session against 2.90 ms eager, back to back; the XLA export after a 1 ms pause 0.68 ms with every op in the
calling thread against 0.89 ms eager, where the call is always handed to TensorFlow's inter-op thread (perf:
`ExecutorState::Process` in `tf_Compute`), which has gone to sleep between requests.
"""

from __future__ import annotations

import os
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
    """A serving signature: checks inputs the way TF Serving does, then runs the signature's tensors in the
    version's Session."""

    # Up to this many rows a call runs in the calling thread (RunOptions.inter_op_thread_pool = -1) rather than on
    # the Session's inter-op pool: measured on 2 cores with the default LSTM (plain export, pool of 1), the caller's
    # thread is faster at 1 row (1.61 vs 1.70 ms), even at 2-4, and slower from 8 (3.17 vs 2.50 ms; 32: 6.88 vs
    # 4.36), where the pool's thread and the intra-op thread overlap. An XLA-compiled signature is one XLA launch
    # with nothing to overlap: it always runs in the caller's thread (1 row 0.27 vs 0.38 ms, 32 rows 2.05 vs 2.15).
    INLINE_MAX_ROWS = 4

    def __init__(self, name: str, signature_def, session, *, xla_refused: bool = False,
                 always_inline: bool = False) -> None:
        self.name = name
        # A signature that must be XLA-compiled on a server without --xla_cpu_compilation_enabled: every call
        # fails the way TF Serving's first compilation request does.
        self.xla_refused = xla_refused
        self.signature_def = signature_def
        self.method_name = signature_def.method_name
        self.inputs: dict[str, InputSpec] = {
            key: _input_spec(key, info) for key, info in sorted(signature_def.inputs.items())
        }
        self.input_names = sorted(self.inputs)
        self.output_names = sorted(signature_def.outputs.keys())
        feeds = [_tensor_name(name, signature_def.inputs[name]) for name in self.input_names]
        fetches = [_tensor_name(name, signature_def.outputs[name]) for name in self.output_names]
        # Callables made once per signature: a call is a single TF_SessionRunCallable (~20 us of Python), numpy
        # arrays in and out. Two of them, differing only in where the ops run (see INLINE_MAX_ROWS).
        self._run_pooled = _session_callable(session, feeds, fetches, inline=False)
        self._run_inline = _session_callable(session, feeds, fetches, inline=True)
        self._inline_rows = float("inf") if always_inline else self.INLINE_MAX_ROWS
        # Request input layouts (names, dtypes, shapes) that passed every check: ServingCore decodes those directly.
        self.layouts: dict[tuple, tuple] = {}
        # Wall seconds of the last unbatched gRPC model call per batch size (ServingCore: run it in the loop?).
        self.call_seconds: dict[int | None, float] = {}

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
        arrays = [inputs[name] for name in self.input_names]
        rows = arrays[0].shape[0] if arrays and arrays[0].ndim else 1
        run = self._run_inline if rows <= self._inline_rows else self._run_pooled
        try:
            values = run(*arrays)
        except Exception as exc:  # a TF runtime error is the caller's input in practice (shapes, values)
            raise _as_serving_error(exc) from exc
        return dict(zip(self.output_names, values))


def _session_callable(session, feeds: list[str], fetches: list[str], *, inline: bool):
    """`Session.make_callable`'s fast path (the one it takes itself), with the RunOptions it cannot pass."""
    from tensorflow.core.protobuf import config_pb2

    options = config_pb2.CallableOptions(feed=feeds, fetch=fetches)
    if inline:
        # "To use the caller thread set this to -1 - this ... avoids a context switch" (RunOptions, config.proto).
        options.run_options.inter_op_thread_pool = -1
    return session._make_callable_from_options(options)


def _input_spec(name: str, info) -> InputSpec:
    import tensorflow as tf

    dtype = tf.as_dtype(info.dtype)
    shape = None if info.tensor_shape.unknown_rank else tuple(
        None if dim.size < 0 else dim.size for dim in info.tensor_shape.dim)
    return InputSpec(name, np.dtype(dtype.as_numpy_dtype), info.dtype, shape)


def _tensor_name(alias: str, info) -> str:
    if info.WhichOneof("encoding") != "name":
        raise ValueError(f"signature tensor {alias!r} is a composite (sparse or ragged) tensor, which this server "
                         "does not serve; export it as dense tensors")
    return info.name


def session_config():
    """The Session options every version runs with: the process's TensorFlow thread settings (the server's
    --tensorflow_{intra,inter}_op_parallelism), as TF Serving puts its flags into the SavedModelBundle's
    session config. A negative inter-op value runs every op in the calling thread (ConfigProto's meaning)."""
    import tensorflow as tf

    return tf.compat.v1.ConfigProto(
        intra_op_parallelism_threads=_THREADS["intra_op"] if _THREADS["intra_op"] is not None
        else tf.config.threading.get_intra_op_parallelism_threads(),
        inter_op_parallelism_threads=_THREADS["inter_op"] if _THREADS["inter_op"] is not None
        else tf.config.threading.get_inter_op_parallelism_threads(),
        allow_soft_placement=True,
    )


# Set by `set_session_threads` (the server's flags); None: TensorFlow's process-wide setting.
_THREADS: dict[str, int | None] = {"intra_op": None, "inter_op": None}


def set_session_threads(intra_op: int | None, inter_op: int | None) -> None:
    """Thread settings for the Sessions of versions loaded from now on (0 or None: TensorFlow's choice)."""
    _THREADS["intra_op"] = intra_op or None
    _THREADS["inter_op"] = inter_op or None


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
        self._session = None

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
        tags = list(saved_model.meta_graphs[0].meta_info_def.tags)
        graph = tf.Graph()
        session = tf.compat.v1.Session(graph=graph, config=session_config())
        try:
            with graph.as_default():
                tf.compat.v1.saved_model.loader.load(session, tags, str(path))
            for name, signature_def in signature_defs.items():
                if name.startswith("__saved_model"):  # the init op TF2 writes beside the signatures, not one
                    continue
                servable.signatures[name] = Signature(name, signature_def, session, always_inline=servable.uses_xla,
                                                      xla_refused=servable.uses_xla and not xla_enabled)
        except Exception as exc:
            session.close()
            raise _load_error(exc, path) from exc
        servable._session = session
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
