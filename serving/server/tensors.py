"""TensorProto and JSON <-> numpy without per-element Python work on the hot path.

Requests built with `tf.make_tensor_proto` carry `tensor_content` (raw little-endian bytes): those become a
numpy view with no copy. Responses are written as `tensor_content` too (TF Serving's `kAsProtoContent`
serialization), which every stock client reads with `tf.make_ndarray`.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2

from serving.server.errors import invalid_argument

_NUMPY_BY_DTYPE = {
    types_pb2.DT_FLOAT: np.float32,
    types_pb2.DT_DOUBLE: np.float64,
    types_pb2.DT_INT32: np.int32,
    types_pb2.DT_INT64: np.int64,
    types_pb2.DT_INT16: np.int16,
    types_pb2.DT_INT8: np.int8,
    types_pb2.DT_UINT8: np.uint8,
    types_pb2.DT_UINT16: np.uint16,
    types_pb2.DT_UINT32: np.uint32,
    types_pb2.DT_UINT64: np.uint64,
    types_pb2.DT_BOOL: np.bool_,
    types_pb2.DT_HALF: np.float16,
}
_DTYPE_BY_NUMPY = {np.dtype(v): k for k, v in _NUMPY_BY_DTYPE.items()}
# The repeated field a TensorProto uses for each dtype when not sent as tensor_content.
_VALUE_FIELD = {
    types_pb2.DT_FLOAT: "float_val",
    types_pb2.DT_DOUBLE: "double_val",
    types_pb2.DT_INT32: "int_val",
    types_pb2.DT_INT16: "int_val",
    types_pb2.DT_INT8: "int_val",
    types_pb2.DT_UINT8: "int_val",
    types_pb2.DT_UINT16: "int_val",
    types_pb2.DT_INT64: "int64_val",
    types_pb2.DT_UINT32: "uint32_val",
    types_pb2.DT_UINT64: "uint64_val",
    types_pb2.DT_BOOL: "bool_val",
}


def dtype_name(dtype_enum: int) -> str:
    """TF's short name, as in its error messages ("float", "double", "int32")."""
    name = types_pb2.DataType.Name(dtype_enum)
    return {"DT_FLOAT": "float", "DT_DOUBLE": "double", "DT_HALF": "half"}.get(name, name[3:].lower())


def numpy_dtype(dtype_enum: int) -> np.dtype:
    try:
        return np.dtype(_NUMPY_BY_DTYPE[dtype_enum])
    except KeyError:
        raise invalid_argument(f"Unsupported tensor dtype {types_pb2.DataType.Name(dtype_enum)}") from None


def declared_shape(proto: tensor_pb2.TensorProto, name: str) -> tuple[int, ...]:
    if proto.tensor_shape.unknown_rank:
        raise invalid_argument(f"Input tensor {name} has an unknown rank")
    shape = tuple(dim.size for dim in proto.tensor_shape.dim)
    if any(size < 0 for size in shape):
        raise invalid_argument(f"Input tensor {name} has a negative dimension in its shape {list(shape)}")
    return shape


def proto_to_ndarray(proto: tensor_pb2.TensorProto, name: str, max_bytes: int | None = None) -> np.ndarray:
    """The tensor as numpy; its declared size is checked against `max_bytes` before anything is allocated.

    A TensorProto may carry fewer values than its shape holds (the last one repeats), so a few bytes on the wire
    can declare gigabytes: the declared shape times the dtype's size is what counts.
    """
    shape = declared_shape(proto, name)
    dtype = numpy_dtype(proto.dtype)
    count = math.prod(shape)  # Python ints: no overflow on absurd shapes
    if max_bytes is not None and count * dtype.itemsize > max_bytes:
        raise invalid_argument(
            f"Input tensor {name} of shape {list(shape)} ({dtype_name(proto.dtype)}) would take "
            f"{count * dtype.itemsize} bytes, more than the limit of {max_bytes} bytes (--max_request_bytes)"
        )
    if proto.tensor_content:
        if len(proto.tensor_content) != count * dtype.itemsize:
            raise invalid_argument(f"Unable to parse tensor proto for input {name}: content size does not match shape {list(shape)}")
        return np.frombuffer(proto.tensor_content, dtype=dtype).reshape(shape)
    if proto.dtype == types_pb2.DT_HALF:
        values = np.asarray(proto.half_val, dtype=np.uint16).view(np.float16)
    else:
        values = np.asarray(getattr(proto, _VALUE_FIELD[proto.dtype]), dtype=dtype)
    if values.size == count:
        return values.reshape(shape)
    # TensorProto allows one value standing for every element, or a prefix padded with the last value.
    if 0 < values.size < count:
        padded = np.empty(count, dtype=dtype)
        padded[: values.size] = values
        padded[values.size :] = values[-1]
        return padded.reshape(shape)
    if values.size == 0 and count == 0:
        return values.reshape(shape)
    raise invalid_argument(f"Unable to parse tensor proto for input {name}: {values.size} values for shape {list(shape)}")


class Declared:
    """What a TensorProto declares (dtype, shape), shaped like an ndarray for `Signature.check_inputs`."""

    __slots__ = ("dtype", "shape")

    def __init__(self, dtype: np.dtype, shape: tuple[int, ...]) -> None:
        self.dtype = dtype
        self.shape = shape

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


def declared(proto: tensor_pb2.TensorProto, name: str) -> Declared:
    return Declared(numpy_dtype(proto.dtype), declared_shape(proto, name))


def ndarray_to_proto(array: np.ndarray) -> tensor_pb2.TensorProto:
    # asarray, not ascontiguousarray: that one turns a 0-d output into shape [1]; tobytes() writes C order anyway.
    array = np.asarray(array)
    try:
        dtype = _DTYPE_BY_NUMPY[array.dtype]
    except KeyError:
        raise invalid_argument(f"Unsupported output dtype {array.dtype}") from None
    shape = tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in array.shape])
    return tensor_pb2.TensorProto(dtype=dtype, tensor_shape=shape, tensor_content=array.tobytes())


_JSON_KINDS = {"f": "fiu", "i": "iu", "u": "iu", "b": "b"}


def json_to_ndarray(value, dtype: np.dtype, name: str) -> np.ndarray:
    """A JSON (nested list) value as an array of the signature's dtype; one numpy conversion from the lists.

    Numbers only for numeric inputs, booleans only for bool inputs: numpy would otherwise turn null into NaN and
    "1" into 1.0 where TF Serving answers that the JSON value is not of the expected type.
    """
    try:
        array = np.asarray(value)
    except (TypeError, ValueError, OverflowError, RecursionError) as exc:
        raise invalid_argument(f"Failed to process element: 0 key: {name} of 'instances' list. Error: {exc}") from None
    if array.dtype == object:
        raise invalid_argument(
            f"Input {name} is ragged or holds values that are not {np.dtype(dtype).name} (null, objects or mixed "
            "types); every row must have the same shape and every value be a number"
        )
    allowed = _JSON_KINDS.get(np.dtype(dtype).kind, "")
    if array.size and array.dtype.kind not in allowed:
        raise invalid_argument(
            f"Input {name}: JSON values of type {array.dtype.name} are not of the expected type {np.dtype(dtype).name}"
        )
    with np.errstate(over="ignore"):  # 1e39 into float32 is inf, as a C++ cast would give
        return array.astype(dtype, copy=False)


def ndarray_to_json(array: np.ndarray):
    return array.tolist()


# ---- Predict responses as bytes -----------------------------------------------------------------------------
# gRPC Predict answers are assembled from cached pieces instead of building TensorProto/PredictResponse objects:
# per request that took ~40 us of GIL-held Python at batch 1 (object construction, map insertion, CopyFrom), the
# same order as grpcio's own per-call cost. The wire format is the one protobuf writes (fields in number order),
# so every client parses the same message; a unit test checks the bytes against the proto built field by field.
_TENSOR_CONTENT_TAG = b"\x22"  # TensorProto.tensor_content = 4, length-delimited
_MAP_KEY_TAG = b"\x0a"  # map entry key = 1
_MAP_VALUE_TAG = b"\x12"  # map entry value = 2
_OUTPUTS_TAG = b"\x0a"  # PredictResponse.outputs = 1
_MODEL_SPEC_TAG = b"\x12"  # PredictResponse.model_spec = 2


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(tag: bytes, payload: bytes) -> bytes:
    return tag + _varint(len(payload)) + payload


@functools.lru_cache(maxsize=256)
def _tensor_header(dtype_enum: int, shape: tuple[int, ...]) -> bytes:
    """A TensorProto's dtype and shape, serialized (the fields before tensor_content)."""
    proto = tensor_pb2.TensorProto(dtype=dtype_enum)
    proto.tensor_shape.SetInParent()  # present even for a scalar, as ndarray_to_proto and make_tensor_proto write it
    for size in shape:
        proto.tensor_shape.dim.add(size=size)
    return proto.SerializeToString()


@functools.lru_cache(maxsize=256)
def _model_spec_field(model_name: str, version: int, signature_name: str) -> bytes:
    from tensorflow_serving.apis import model_pb2

    spec = model_pb2.ModelSpec(name=model_name, signature_name=signature_name)
    spec.version.value = version
    return _field(_MODEL_SPEC_TAG, spec.SerializeToString())


@functools.lru_cache(maxsize=256)
def _output_prefix(name: str, dtype_enum: int, shape: tuple[int, ...]) -> bytes:
    """One `outputs` map entry of a PredictResponse up to its tensor's bytes. A name, dtype and shape fix every
    length in it, so per request an output is this prefix and `array.tobytes()`: one join, no varints."""
    nbytes = math.prod(shape) * numpy_dtype(dtype_enum).itemsize
    tensor_prefix = _tensor_header(dtype_enum, shape) + _TENSOR_CONTENT_TAG + _varint(nbytes)
    entry_prefix = (_field(_MAP_KEY_TAG, name.encode()) + _MAP_VALUE_TAG + _varint(len(tensor_prefix) + nbytes)
                    + tensor_prefix)
    return _OUTPUTS_TAG + _varint(len(entry_prefix) + nbytes) + entry_prefix


def encode_predict_response(model_name: str, version: int, signature_name: str,
                            outputs: dict[str, np.ndarray], wanted: list[str]) -> bytes:
    """A serialized PredictResponse: the `wanted` outputs as tensor_content, then the resolved model spec."""
    parts = []
    for name in wanted:
        array = outputs[name]
        dtype = _DTYPE_BY_NUMPY.get(array.dtype)
        if dtype is None:
            raise invalid_argument(f"Unsupported output dtype {array.dtype}")
        parts.append(_output_prefix(name, dtype, array.shape))
        parts.append(array.tobytes())
    parts.append(_model_spec_field(model_name, version, signature_name))
    return b"".join(parts)
