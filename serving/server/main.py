"""`wattflow serve` / `wattflow-model-server` / `python -m serving.server`: TF Serving's command line."""

from __future__ import annotations

import gc
import os
import signal
import sys
import threading
from pathlib import Path

from serving.server.flags import ServerOptions, grpc_channel_arguments, parse_flags
from wattflow.log import get_logger

log = get_logger(__name__)


class ModelServer:
    """The whole server in one object, so tests and benchmarks can also run it in-process."""

    def __init__(self, options: ServerOptions) -> None:
        from serving.server.batching import BatchScheduler
        from serving.server.config import (
            load_batching_parameters,
            load_model_server_config,
            load_monitoring_config,
            load_ssl_config,
            single_model_config,
        )
        from serving.server.core import ServingCore
        from serving.server.manager import ModelManager, Poller
        from serving.server.metrics import ServingMetrics

        self.options = options
        configure_tensorflow_threads(options.tensorflow_intra_op_parallelism, options.tensorflow_inter_op_parallelism)
        self.metrics = ServingMetrics()
        self.monitoring = load_monitoring_config(options.monitoring_config_file or None)
        self.ssl_config = load_ssl_config(options.ssl_config_file or None)
        if options.reload_config_access == "mtls" and not (self.ssl_config and self.ssl_config.client_verify):
            raise ValueError(
                "--reload_config_access=mtls needs --ssl_config_file with client_verify: true and a custom_ca "
                "(only clients with a certificate from that CA may then reload the config)"
            )
        batcher = None
        if options.enable_batching:
            params = load_batching_parameters(options.batching_parameters_file or None)
            batcher = BatchScheduler(
                params, on_batch=lambda size: self.metrics.processed_batch_size.observe("batch_threads", value=size)
            )
        self.manager = ModelManager(allow_labels_for_unavailable=options.allow_version_labels_for_unavailable_models,
                                    xla_enabled=options.xla_cpu_compilation_enabled)
        from wattflow.settings import get_settings

        serving_settings = get_settings().serving
        self.core = ServingCore(self.manager, self.metrics, batcher,
                                warmup_iterations=options.num_request_iterations_for_warmup,
                                max_tensor_bytes=options.max_request_bytes,
                                inline_call_max_s=serving_settings.inline_call_max_ms / 1000,
                                inline_idle_gap_s=serving_settings.inline_idle_gap_ms / 1000,
                                inline_busy_hold_s=serving_settings.inline_busy_hold_ms / 1000)
        if options.enable_model_warmup:
            self.manager.warmup = self.core.warmup
        self.manager.load_listeners.append(self._record_load)
        self.manager.load_listeners.append(_settle_heap_after_load)
        if options.model_config_file:
            path = options.model_config_file
            read_config = lambda: load_model_server_config(path)  # noqa: E731
        else:
            base_path = str(Path(options.model_base_path).resolve())
            read_config = lambda: single_model_config(options.model_name, base_path)  # noqa: E731
        self._read_config = read_config
        self._poller = Poller(
            self.manager,
            fs_poll_s=options.file_system_poll_wait_seconds,
            config_poll_s=options.model_config_file_poll_wait_seconds if options.model_config_file else 0,
            read_config=read_config if options.model_config_file else None,
        )
        self._batcher = batcher
        self._grpc = None
        self._rest = None
        self.grpc_port = 0
        self.rest_port = 0

    def _record_load(self, model: str, version: int, status: str, seconds: float) -> None:
        path = next(
            (e.base_path for e in self.manager.config.model_config_list.config if e.name == model), model
        )
        model_path = str(Path(path) / str(version))
        self.metrics.load_attempt_count.inc(model_path, "success" if status == "OK" else "failure")
        if status == "OK":
            self.metrics.load_latency.observe(model_path, value=seconds * 1e6)

    def start(self) -> None:
        from serving.server.grpc_service import build_grpc_server
        from serving.server.rest import RestApi, RestServer, server_ssl_context

        options = self.options
        # Like TF Serving, the ports open once the initial config's versions have loaded (or failed).
        self.manager.apply_config(self._read_config(), strict_labels=False)
        self._poller.start()
        threads = options.grpc_max_threads or max(64, 8 * (os.cpu_count() or 2))
        self._grpc, self.grpc_port = build_grpc_server(
            self.core, host=options.host, port=options.port, max_threads=threads,
            max_message_bytes=options.max_request_bytes, max_concurrent_rpcs=options.grpc_max_concurrent_rpcs,
            ssl_config=self.ssl_config, reload_access=options.reload_config_access,
            extra_options=grpc_channel_arguments(options.grpc_channel_arguments),
        )
        self._grpc.start()
        log.info("Running gRPC ModelServer", address=f"{options.host}:{self.grpc_port}")
        if options.rest_api_port:
            self._rest = RestServer(
                RestApi(self.core, self.monitoring, max_json_depth=options.rest_max_json_depth),
                host=options.host, port=options.rest_api_port,
                max_body=options.max_request_bytes, timeout_s=options.rest_api_timeout_in_ms / 1000,
                num_threads=options.rest_api_num_threads,
                ssl_context=server_ssl_context(self.ssl_config) if self.ssl_config else None,
            )
            self._rest.start()
            self.rest_port = self._rest.port
            log.info("Exporting HTTP/REST API", address=f"{options.host}:{self.rest_port}")

    def stop(self, grace_s: float = 2.0) -> None:
        self._poller.stop()
        if self._rest is not None:
            self._rest.stop()
        if self._grpc is not None:
            self._grpc.stop(grace_s).wait()
        if self._batcher is not None:
            self._batcher.stop()


def configure_tensorflow_threads(intra_op: int, inter_op: int) -> None:
    """TF Serving's `--tensorflow_{intra,inter}_op_parallelism` (0: TensorFlow's choice; a negative inter-op value:
    every op in the calling thread), for the Sessions the versions run in; before any model loads."""
    import tensorflow as tf

    from serving.server.servable import set_session_threads

    set_session_threads(intra_op, inter_op)
    # Eager TensorFlow (warmup-record reading, tensor conversions) gets the same pools where a count was given.
    if intra_op > 0:
        tf.config.threading.set_intra_op_parallelism_threads(intra_op)
    if inter_op > 0:
        tf.config.threading.set_inter_op_parallelism_threads(inter_op)


def settle_heap() -> None:
    """Collect once, then move every live object out of the collector's reach (`gc.freeze`).

    TensorFlow and a loaded model leave ~400k long-lived objects; without this, the occasional full
    collection that request traffic triggers walks all of them while holding the GIL (~0.3 s on 2 cores),
    stalling every request in flight. Objects created later are still collected as usual. Runs after each
    successful load; a version unloaded since is freed at the next load's collection.
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def _settle_heap_after_load(model: str, version: int, status: str, seconds: float) -> None:
    # A new version's objects join the frozen set; unfreezing first lets an unloaded version's cycles be freed.
    if status == "OK":
        settle_heap()


def serve(options: ServerOptions) -> None:
    server = ModelServer(options)
    server.start()
    stopped = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopped.set())
    # Printed for people and scripts waiting on the port, in TF Serving's words.
    print(f"Running gRPC ModelServer at {options.host}:{server.grpc_port} ...", flush=True)
    if server.rest_port:
        print(f"Exporting HTTP/REST API at:{options.host}:{server.rest_port} ...", flush=True)
    stopped.wait()
    server.stop()


def main(argv: list[str] | None = None) -> None:
    from serving.server.errors import ServingError

    options = parse_flags(sys.argv[1:] if argv is None else argv)
    try:
        serve(options)
    except (ServingError, ValueError, OSError) as exc:  # a bad flag or config file: one line, no traceback
        raise SystemExit(f"tensorflow_model_server: {exc}") from None


if __name__ == "__main__":
    main()
