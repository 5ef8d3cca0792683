"""TF Serving's configuration files: `model_config_list`, batching parameters and monitoring, in text format.

`ModelServerConfig` comes from the stock `tensorflow_serving.config` protos. The batching and monitoring
messages are not shipped in the `tensorflow-serving-api` wheel, so their descriptors are declared here with
the field numbers of `session_bundle_config.proto` and `monitoring_config.proto`, and parsed with the same
text-format parser, unknown (newer) fields tolerated.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from google.protobuf import descriptor_pb2, descriptor_pool, text_format, wrappers_pb2
from google.protobuf import message_factory
from tensorflow_serving.config import model_server_config_pb2

from serving.server.errors import invalid_argument

DEFAULT_PROMETHEUS_PATH = "/monitoring/prometheus/metrics"


def _declare_messages():
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
    proto = descriptor_pb2.FileDescriptorProto(
        name="wattflow/tf_serving_side_configs.proto",
        package="tensorflow.serving",
        syntax="proto3",
        dependency=["google/protobuf/wrappers.proto"],
    )
    F = descriptor_pb2.FieldDescriptorProto

    def message(name, *specs):
        msg = proto.message_type.add(name=name)
        for field_name, number, kind, type_name, label in specs:
            field = msg.field.add(name=field_name, number=number, type=kind, label=label)
            if type_name:
                field.type_name = type_name

    opt, rep = F.LABEL_OPTIONAL, F.LABEL_REPEATED
    i64 = ".google.protobuf.Int64Value"
    message(
        "BatchingParameters",
        ("max_batch_size", 1, F.TYPE_MESSAGE, i64, opt),
        ("batch_timeout_micros", 2, F.TYPE_MESSAGE, i64, opt),
        ("max_enqueued_batches", 3, F.TYPE_MESSAGE, i64, opt),
        ("num_batch_threads", 4, F.TYPE_MESSAGE, i64, opt),
        ("thread_pool_name", 5, F.TYPE_MESSAGE, ".google.protobuf.StringValue", opt),
        ("allowed_batch_sizes", 6, F.TYPE_INT64, None, rep),
        ("pad_variable_length_inputs", 7, F.TYPE_BOOL, None, opt),
    )
    message("PrometheusConfig", ("enable", 1, F.TYPE_BOOL, None, opt), ("path", 2, F.TYPE_STRING, None, opt))
    message(
        "MonitoringConfig",
        ("prometheus_config", 1, F.TYPE_MESSAGE, ".tensorflow.serving.PrometheusConfig", opt),
    )
    # ssl_config.proto: the PEM texts themselves (not paths), as TF Serving's `--ssl_config_file` takes them.
    message(
        "SSLConfig",
        ("server_key", 1, F.TYPE_STRING, None, opt),
        ("server_cert", 2, F.TYPE_STRING, None, opt),
        ("custom_ca", 3, F.TYPE_STRING, None, opt),
        ("client_verify", 4, F.TYPE_BOOL, None, opt),
    )
    pool.Add(proto)
    get = lambda name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"tensorflow.serving.{name}"))  # noqa: E731
    return get("BatchingParameters"), get("MonitoringConfig"), get("SSLConfig")


BatchingParametersProto, MonitoringConfigProto, SSLConfigProto = _declare_messages()


@dataclass(frozen=True)
class BatchingParameters:
    """Defaults are TF Serving's (`BatchingSession` / `SharedBatchScheduler` options)."""

    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 100
    num_batch_threads: int = 4
    allowed_batch_sizes: tuple[int, ...] = ()


@dataclass(frozen=True)
class MonitoringConfig:
    prometheus_enabled: bool = False
    prometheus_path: str = DEFAULT_PROMETHEUS_PATH


def _read(path: str | Path, what: str) -> str:
    try:
        return Path(path).read_text()
    except OSError as exc:
        raise invalid_argument(f"cannot read {what} file {path}: {exc}") from exc


def parse_batching_parameters(text: str) -> BatchingParameters:
    proto = BatchingParametersProto()
    try:
        text_format.Parse(text, proto, allow_unknown_field=True)
    except text_format.ParseError as exc:
        raise invalid_argument(f"batching parameters: {exc}") from exc
    defaults = BatchingParameters()

    def pick(name: str) -> int:
        return getattr(proto, name).value if proto.HasField(name) else getattr(defaults, name)

    params = BatchingParameters(
        max_batch_size=pick("max_batch_size"),
        batch_timeout_micros=pick("batch_timeout_micros"),
        max_enqueued_batches=pick("max_enqueued_batches"),
        num_batch_threads=pick("num_batch_threads"),
        allowed_batch_sizes=tuple(proto.allowed_batch_sizes),
    )
    if params.max_batch_size < 1 or params.num_batch_threads < 1 or params.max_enqueued_batches < 1:
        raise invalid_argument(f"batching parameters must be positive, got {params}")
    if params.allowed_batch_sizes and params.allowed_batch_sizes[-1] != params.max_batch_size:
        raise invalid_argument("The largest allowed batch size must be equal to max_batch_size")
    return params


def load_batching_parameters(path: str | Path | None) -> BatchingParameters:
    return parse_batching_parameters(_read(path, "batching parameters")) if path else BatchingParameters()


@dataclass(frozen=True)
class SSLConfig:
    """TF Serving's SSLConfig: PEM server key and certificate, an optional CA, and whether clients must present
    a certificate signed by that CA (mutual TLS)."""

    server_key: str
    server_cert: str
    custom_ca: str = ""
    client_verify: bool = False


def parse_ssl_config(text: str) -> SSLConfig:
    proto = SSLConfigProto()
    try:
        text_format.Parse(text, proto)
    except text_format.ParseError as exc:
        raise invalid_argument(f"ssl config: {exc}") from exc
    if not proto.server_key or not proto.server_cert:
        raise invalid_argument(
            "ssl config: server_key and server_cert must both hold PEM text (the file contents, not paths)"
        )
    if proto.client_verify and not proto.custom_ca:
        raise invalid_argument("ssl config: client_verify: true needs custom_ca, the CA that signs client certificates")
    for field_name in ("server_key", "server_cert", "custom_ca"):
        value = getattr(proto, field_name)
        if value and "-----BEGIN " not in value:
            raise invalid_argument(f"ssl config: {field_name} is not PEM text (expected '-----BEGIN ...')")
    return SSLConfig(proto.server_key, proto.server_cert, proto.custom_ca, proto.client_verify)


def load_ssl_config(path: str | Path | None) -> SSLConfig | None:
    return parse_ssl_config(_read(path, "ssl config")) if path else None


def ssl_config_text(config: SSLConfig) -> str:
    proto = SSLConfigProto(server_key=config.server_key, server_cert=config.server_cert,
                           custom_ca=config.custom_ca, client_verify=config.client_verify)
    return text_format.MessageToString(proto)


def parse_monitoring_config(text: str) -> MonitoringConfig:
    proto = MonitoringConfigProto()
    try:
        text_format.Parse(text, proto, allow_unknown_field=True)
    except text_format.ParseError as exc:
        raise invalid_argument(f"monitoring config: {exc}") from exc
    prom = proto.prometheus_config
    return MonitoringConfig(prometheus_enabled=prom.enable, prometheus_path=prom.path or DEFAULT_PROMETHEUS_PATH)


def load_monitoring_config(path: str | Path | None) -> MonitoringConfig:
    return parse_monitoring_config(_read(path, "monitoring config")) if path else MonitoringConfig()


def parse_model_server_config(text: str) -> model_server_config_pb2.ModelServerConfig:
    config = model_server_config_pb2.ModelServerConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as exc:
        raise invalid_argument(f"Invalid protobuf file: model config: {exc}") from exc
    validate_model_server_config(config)
    return config


def load_model_server_config(path: str | Path) -> model_server_config_pb2.ModelServerConfig:
    return parse_model_server_config(_read(path, "model config"))


def single_model_config(model_name: str, base_path: str) -> model_server_config_pb2.ModelServerConfig:
    """What `--model_name`/`--model_base_path` mean: one model, latest version."""
    config = model_server_config_pb2.ModelServerConfig()
    entry = config.model_config_list.config.add(name=model_name, base_path=base_path, model_platform="tensorflow")
    entry.model_version_policy.latest.num_versions = 1
    return config


def validate_model_server_config(config: model_server_config_pb2.ModelServerConfig) -> None:
    if config.WhichOneof("config") == "custom_model_config":
        raise invalid_argument("custom_model_config is not supported; use model_config_list")
    names: set[str] = set()
    for entry in config.model_config_list.config:
        if not entry.name:
            raise invalid_argument("Illegal setting: model name must not be empty")
        if entry.name in names:
            raise invalid_argument(f"Illegal to list model {entry.name} multiple times in config list")
        names.add(entry.name)
        if not entry.base_path:
            raise invalid_argument(f"Illegal setting: model {entry.name} has an empty base_path")
        if entry.model_platform and entry.model_platform != "tensorflow":
            raise invalid_argument(f"Illegal setting: model platform {entry.model_platform!r} is not supported")


def model_config_text(config: model_server_config_pb2.ModelServerConfig) -> str:
    return text_format.MessageToString(config)
