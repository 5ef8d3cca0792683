"""`tensorflow_model_server`'s command line, so that scripts written for it start this server unchanged.

TF Serving parses flags with its own `--name=value` parser; booleans accept `--flag`, `--flag=true|false|1|0`.
Flags it has that do not change behaviour here are accepted and ignored, so a copied command line still starts.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, fields


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes", "t"):
        return True
    if lowered in ("false", "0", "no", "f"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean, got {text!r}")


@dataclass
class ServerOptions:
    port: int = 8500
    grpc_socket_path: str = ""
    rest_api_port: int = 0
    rest_api_num_threads: int = 16
    rest_api_timeout_in_ms: int = 30000
    rest_api_enable_cors_support: bool = False
    enable_batching: bool = False
    allow_version_labels_for_unavailable_models: bool = False
    batching_parameters_file: str = ""
    model_config_file: str = ""
    model_config_file_poll_wait_seconds: int = 0
    model_name: str = "default"
    model_base_path: str = ""
    max_num_load_retries: int = 5
    load_retry_interval_micros: int = 60_000_000
    file_system_poll_wait_seconds: int = 1
    monitoring_config_file: str = ""
    grpc_max_threads: int = 0
    enable_model_warmup: bool = True
    num_request_iterations_for_warmup: int = 1
    # TF Serving's "comma separated list of arguments to be passed to the grpc server", e.g.
    # grpc.max_connection_age_ms=2000 (integers as integers, anything else as a string).
    grpc_channel_arguments: str = ""
    # TensorFlow's thread pools: 0 lets TensorFlow choose (one thread per core), as in TF Serving. A negative
    # inter-op value runs every op in the thread that called the model (TF's ConfigProto meaning, which TF Serving
    # passes through to its Session): no hand-off to a pool thread that may have gone to sleep since the last call.
    tensorflow_intra_op_parallelism: int = 0
    tensorflow_inter_op_parallelism: int = 0
    # TF Serving's SSLConfig text proto (server_key, server_cert, custom_ca, client_verify): TLS on gRPC and REST.
    ssl_config_file: str = ""
    # EXPERIMENTAL in TF Serving: without it, a model whose functions must be XLA-compiled fails its first request.
    xla_cpu_compilation_enabled: bool = False
    # Not TF Serving flags (TF Serving's own limits are compiled in): the largest request body either API accepts,
    # which also bounds the decoded size of a request's tensors, and the host to bind.
    max_request_bytes: int = 64 * 1024 * 1024
    host: str = "0.0.0.0"
    # gRPC calls in flight at once; beyond it grpcio answers RESOURCE_EXHAUSTED at once instead of queueing.
    grpc_max_concurrent_rpcs: int = 1024
    # JSON nesting deeper than this is refused with a 400 before it is parsed (a tensor needs batch + rank levels).
    rest_max_json_depth: int = 64
    # Who may call ModelService/HandleReloadConfigRequest: "open" (TF Serving: anyone who reaches the port),
    # "mtls" (only clients with a certificate from custom_ca; needs client_verify), "off" (PERMISSION_DENIED).
    reload_config_access: str = "open"


RELOAD_ACCESS = ("open", "mtls", "off")

_IGNORED = (
    "tensorflow_session_parallelism",
    "per_process_gpu_memory_fraction",
    "saved_model_tags",
    "flush_filesystem_caches",
    "enable_signature_method_name_check",
    "platform_config_file",
    "use_tflite_model",
    "skip_initialize_tpu",
    "remove_unused_fields_from_bundle_metagraph",
    "prefer_tflite_model",
    "use_alts_credentials",
    "enable_profiler",
    "thread_pool_factory_config_file",
)


def build_parser(prog: str = "tensorflow_model_server") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description="TensorFlow Serving compatible model server.", allow_abbrev=False
    )
    defaults = ServerOptions()
    for spec in fields(ServerOptions):
        value = getattr(defaults, spec.name)
        flag = f"--{spec.name}"
        if isinstance(value, bool):
            parser.add_argument(flag, type=_bool, nargs="?", const=True, default=value)
        else:
            parser.add_argument(flag, type=type(value), default=value)
    for name in _IGNORED:
        parser.add_argument(f"--{name}", default=None, nargs="?", const="true", help=argparse.SUPPRESS)
    return parser


def grpc_channel_arguments(text: str) -> list[tuple[str, int | str]]:
    """`--grpc_channel_arguments` as gRPC server options; a malformed entry is a flag error naming it."""
    arguments = []
    for entry in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = entry.partition("=")
        if not sep or not key.strip():
            raise SystemExit(f"--grpc_channel_arguments: {entry!r} is not key=value (e.g. grpc.max_connection_age_ms=2000)")
        value = value.strip()
        arguments.append((key.strip(), int(value) if value.lstrip("-").isdigit() else value))
    return arguments


def parse_flags(argv: list[str] | None = None, prog: str = "tensorflow_model_server") -> ServerOptions:
    namespace = build_parser(prog).parse_args(argv)
    options = ServerOptions(**{spec.name: getattr(namespace, spec.name) for spec in fields(ServerOptions)})
    if options.tensorflow_intra_op_parallelism < 0:
        raise SystemExit("--tensorflow_intra_op_parallelism must be >= 0 (0 lets TensorFlow choose), "
                         f"got {options.tensorflow_intra_op_parallelism}")
    for name in ("rest_api_num_threads", "grpc_max_concurrent_rpcs", "rest_max_json_depth", "max_request_bytes"):
        if getattr(options, name) < 1:
            raise SystemExit(f"--{name} must be >= 1, got {getattr(options, name)}")
    grpc_channel_arguments(options.grpc_channel_arguments)  # a malformed list fails at start, not at bind
    if options.reload_config_access not in RELOAD_ACCESS:
        raise SystemExit(
            f"--reload_config_access must be one of {', '.join(RELOAD_ACCESS)}, got {options.reload_config_access!r}"
        )
    if not options.model_config_file and not options.model_base_path:
        raise SystemExit(
            "Both server_model_base_path and model_config_file are empty! --model_base_path or "
            "--model_config_file must be given."
        )
    return options
