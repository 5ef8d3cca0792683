"""A TF Serving endpoint for the conformance suite.

By default the suite starts `wattflow serve` as a subprocess on free ports, serving tiny contract models
(the `history`/`future` -> p10/p50/p90 signature of ml/spec.py) from a temporary model base path. To run the
same suite against the official image, start it with the suite's config and point the suite at it:

    WATTFLOW_SERVING_TARGET=host:8500  WATTFLOW_SERVING_REST=http://host:8501
    WATTFLOW_SERVING_BASE_PATH=/path/mounted/as/the/models/dir  (the suite writes versions and models.config there)
    docker run -v $BASE:$BASE tensorflow/serving --model_config_file=$BASE/models.config \
        --model_config_file_poll_wait_seconds=1 --file_system_poll_wait_seconds=1 \
        --monitoring_config_file=$BASE/monitoring.config --enable_batching --batching_parameters_file=$BASE/batching.config

(with an external target the suite prepares the base path first and waits for the models to load).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.serving.helpers import (
    LIFECYCLE,
    RELOAD,
    REPO,
    SPEC,
    STATIC,
    UNITS,
    BIAS,
    Endpoint,
    free_port,
    initial_entries,
    install,
    write_config,
)


@pytest.fixture(scope="session")
def endpoint(tmp_path_factory: pytest.TempPathFactory):
    from serving.contract_model import export_contract_model

    external = os.environ.get("WATTFLOW_SERVING_TARGET")
    # WATTFLOW_SERVING_XLA=1: the whole suite against XLA-compiled exports, the server started with
    # --xla_cpu_compilation_enabled and batches padded to allowed sizes (too slow to be CI's default).
    xla = os.environ.get("WATTFLOW_SERVING_XLA", "") in ("1", "true")
    base = Path(os.environ["WATTFLOW_SERVING_BASE_PATH"]) if external else tmp_path_factory.mktemp("serving") / "models"
    base.mkdir(parents=True, exist_ok=True)
    templates = tmp_path_factory.mktemp("templates")
    for name in (STATIC, RELOAD, LIFECYCLE):
        shutil.rmtree(base / name, ignore_errors=True)
        (base / name).mkdir()
    config_path = base / "models.config"
    (base / "monitoring.config").write_text(
        'prometheus_config { enable: true, path: "/monitoring/prometheus/metrics" }\n'
    )
    (base / "batching.config").write_text(
        "max_batch_size { value: 32 }\nbatch_timeout_micros { value: 2000 }\n"
        # Two batch threads use the thread pool; XLA mode takes one, so the suite also runs batches in the gRPC loop.
        f"num_batch_threads {{ value: {1 if xla else 2} }}\nmax_enqueued_batches {{ value: 100 }}\n"
        + ("allowed_batch_sizes: [1, 2, 4, 8, 16, 32]\n" if xla else "")
    )
    process = None
    if external:
        grpc_target, rest_url = external, os.environ["WATTFLOW_SERVING_REST"].rstrip("/")
    else:
        # Our server starts now, with the versions still to come: its TensorFlow import overlaps the exports,
        # and its poll picks the versions (and then the labels) up as they land.
        write_config(config_path, initial_entries(base))
        grpc_port, rest_port = free_port(), free_port()
        grpc_target, rest_url = f"127.0.0.1:{grpc_port}", f"http://127.0.0.1:{rest_port}"
        log_path = base.parent / "server.log"
        argv = [
            sys.executable, "-m", "wattflow.cli", "serve", f"--port={grpc_port}", f"--rest_api_port={rest_port}",
            f"--model_config_file={config_path}", "--model_config_file_poll_wait_seconds=1",
            "--file_system_poll_wait_seconds=1", f"--monitoring_config_file={base / 'monitoring.config'}",
            "--enable_batching", f"--batching_parameters_file={base / 'batching.config'}", "--host=127.0.0.1",
            f"--xla_cpu_compilation_enabled={'true' if xla else 'false'}",
        ]
        log_file = open(log_path, "w")
        process = subprocess.Popen(argv, cwd=REPO, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        for version, bias in BIAS.items():
            export_contract_model(templates / str(version), SPEC, units=UNITS, seed=version, bias=bias, jit_compile=xla)
        for version in (1, 2):
            install(templates / str(version), base / STATIC, version)
        install(templates / "1", base / RELOAD, 1)
        install(templates / "1", base / LIFECYCLE, 1)
        # TF Serving refuses labels on versions not yet loaded, so an external server gets the config last.
        write_config(config_path, initial_entries(base))
    except BaseException:
        if process is not None:
            process.kill()
        raise
    endpoint = Endpoint(grpc_target, rest_url, base, templates, config_path, bool(external))
    try:
        _wait_ready(endpoint, process, timeout_s=600)
        yield endpoint
    finally:
        if process is not None:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()


def _wait_ready(endpoint: Endpoint, process, timeout_s: float) -> None:
    import requests

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}; see {endpoint.base_path.parent / 'server.log'}")
        try:
            ready = all(
                requests.get(f"{endpoint.rest_url}/v1/models/{name}", timeout=2).ok for name in (STATIC, RELOAD, LIFECYCLE)
            )
            labels_ready = requests.get(f"{endpoint.rest_url}/v1/models/{STATIC}/labels/canary", timeout=2).ok
            if ready and labels_ready:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"serving endpoint not ready after {timeout_s}s")


@pytest.fixture(scope="session")
def small_exports(tmp_path_factory) -> dict[str, Path]:
    """One small contract model, exported once plain and once XLA-compiled from that export (same weights), for
    the in-process servers of the security and XLA tests: `<dir>/1` each, so `<dir>` is a model base path."""
    from serving.contract_model import export_contract_model
    from serving.xla import write_xla_saved_model

    root = tmp_path_factory.mktemp("small-models")
    plain = export_contract_model(root / "plain" / "1", SPEC, units=UNITS, seed=3)
    return {"plain": plain, "xla": write_xla_saved_model(plain, root / "xla" / "1")}


@pytest.fixture(scope="session")
def channel(endpoint: Endpoint):
    import grpc

    channel = grpc.insecure_channel(endpoint.grpc_target)
    yield channel
    channel.close()


@pytest.fixture(scope="session")
def prediction_stub(channel):
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


@pytest.fixture(scope="session")
def model_stub(channel):
    from tensorflow_serving.apis import model_service_pb2_grpc

    return model_service_pb2_grpc.ModelServiceStub(channel)


