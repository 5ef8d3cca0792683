"""Constants and helpers shared by the serving conformance tests (and their conftest)."""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from ml.spec import WindowSpec
from wattflow.ports import free_port

REPO = Path(__file__).resolve().parents[3]
# Small enough to export in a second; the window shape is read from metadata by the client.
SPEC = WindowSpec(lookback_h=48, horizon_h=6)
UNITS = 8
# Model names, one per group of tests, so tests that move versions never disturb the others.
STATIC, RELOAD, LIFECYCLE = "conformance_static", "conformance_reload", "conformance_lifecycle"
# Every exported version adds a constant to all outputs: tests tell versions apart by it.
BIAS = {1: 0.0, 2: 100.0}


@dataclass
class Endpoint:
    grpc_target: str
    rest_url: str
    base_path: Path
    templates: Path
    config_path: Path
    external: bool

    def model_dir(self, name: str) -> Path:
        return self.base_path / name

    def template(self, version: int) -> Path:
        return self.templates / str(version)




def write_config(config_path: Path, entries: dict[str, tuple[str, list[int] | None, dict[str, int]]]) -> None:
    """entries: model -> (base_path, specific versions or None for latest{1}, labels)."""
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    config = model_server_config_pb2.ModelServerConfig()
    for name, (base_path, versions, labels) in entries.items():
        entry = config.model_config_list.config.add(name=name, base_path=base_path, model_platform="tensorflow")
        if versions is None:
            entry.model_version_policy.latest.num_versions = 1
        else:
            entry.model_version_policy.specific.versions.extend(versions)
        for label, version in labels.items():
            entry.version_labels[label] = version
    temporary = config_path.with_name(".models.config.tmp")
    temporary.write_text(text_format.MessageToString(config))
    os.replace(temporary, config_path)


def install(template: Path, model_dir: Path, version: int) -> Path:
    """Atomic copy of an exported template into `model_dir/<version>` (staging dir + rename)."""
    staging = model_dir / f".staging-{version}"
    shutil.copytree(template, staging)
    final = model_dir / str(version)
    os.rename(staging, final)
    return final


def initial_entries(endpoint_base: Path) -> dict:
    return {
        STATIC: (str(endpoint_base / STATIC), [1, 2], {"stable": 1, "canary": 2}),
        RELOAD: (str(endpoint_base / RELOAD), [1], {"stable": 1}),
        LIFECYCLE: (str(endpoint_base / LIFECYCLE), None, {}),
    }


def make_inputs(batch: int, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    history = rng.normal(size=(batch, SPEC.lookback_h, len(SPEC.history_features))).astype("float32")
    future = rng.normal(size=(batch, SPEC.horizon_h, len(SPEC.future_features))).astype("float32")
    return history, future


def predict_request(model: str, batch: int = 1, *, version: int | None = None, label: str = "", seed: int = 0,
                    signature: str = "", output_filter: tuple[str, ...] = ()):
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    history, future = make_inputs(batch, seed)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    if version is not None:
        request.model_spec.version.value = version
    if label:
        request.model_spec.version_label = label
    if signature:
        request.model_spec.signature_name = signature
    request.inputs["history"].CopyFrom(tf.make_tensor_proto(history))
    request.inputs["future"].CopyFrom(tf.make_tensor_proto(future))
    request.output_filter.extend(output_filter)
    return request


def wait_for(condition, timeout_s: float = 60.0, poll_s: float = 0.2, what: str = "condition"):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(poll_s)
    raise TimeoutError(f"{what} not met after {timeout_s}s")
