"""Versions come and go while traffic flows: hot reload, labels, corrupt and deleted versions."""

from __future__ import annotations

import shutil
import threading
from collections import Counter

import grpc
import pytest
import requests

from tests.integration.serving.helpers import (
    LIFECYCLE,
    RELOAD,
    initial_entries,
    install,
    predict_request,
    wait_for,
    write_config,
)

pytestmark = pytest.mark.integration


def _states(endpoint, model: str) -> dict[int, tuple[str, str]]:
    response = requests.get(f"{endpoint.rest_url}/v1/models/{model}", timeout=30)
    if response.status_code != 200:
        return {}
    return {
        int(v["version"]): (v["state"], v["status"]["error_code"]) for v in response.json()["model_version_status"]
    }


class TrafficLoop:
    """Client threads sending Predict by label and by latest until stopped; every outcome is counted."""

    def __init__(self, stub, model: str, threads: int = 3) -> None:
        self.stub, self.model = stub, model
        self.versions: Counter = Counter()
        self.failures: list[str] = []
        self.sent = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]

    def _run(self, index: int) -> None:
        kinds = [dict(label="stable"), dict(), dict(label="stable")]
        while not self._stop.is_set():
            kind = kinds[index % len(kinds)]
            try:
                response = self.stub.Predict(predict_request(self.model, seed=index, **kind), timeout=30)
                with self._lock:
                    self.sent += 1
                    self.versions[(kind.get("label", "latest"), response.model_spec.version.value)] += 1
            except grpc.RpcError as exc:
                with self._lock:
                    self.sent += 1
                    self.failures.append(f"{exc.code().name}: {exc.details()}")

    def __enter__(self) -> "TrafficLoop":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)


def test_hot_reload_under_load_loses_no_request(endpoint, prediction_stub):
    model_dir = endpoint.model_dir(RELOAD)
    entries = initial_entries(endpoint.base_path)
    base = str(model_dir)
    with TrafficLoop(prediction_stub, RELOAD) as traffic:
        wait_for(lambda: traffic.sent >= 5, what="first requests")
        # 1. A new version lands (atomic rename) and the config names it next to the labelled one.
        install(endpoint.template(2), model_dir, 2)
        write_config(endpoint.config_path, {**entries, RELOAD: (base, [1, 2], {"stable": 1})})
        wait_for(lambda: _states(endpoint, RELOAD).get(2, ("",))[0] == "AVAILABLE", what="version 2 AVAILABLE")
        # 2. Canary on the new version, stable still on the old one.
        write_config(endpoint.config_path, {**entries, RELOAD: (base, [1, 2], {"stable": 1, "canary": 2})})
        wait_for(lambda: requests.get(f"{endpoint.rest_url}/v1/models/{RELOAD}/labels/canary", timeout=10).ok,
                 what="canary label")
        # 3. Promotion: stable moves to 2 and version 1 leaves the config in the same change.
        write_config(endpoint.config_path, {**entries, RELOAD: (base, [2], {"stable": 2})})
        wait_for(lambda: _states(endpoint, RELOAD).get(1, ("",))[0] == "END", what="version 1 unloaded")
        sent_at_switch = traffic.sent
        wait_for(lambda: traffic.sent >= sent_at_switch + 10, what="requests after the switch")
    assert traffic.failures == [], traffic.failures[:5]
    assert traffic.sent >= 20
    assert traffic.versions[("stable", 1)] > 0 and traffic.versions[("stable", 2)] > 0
    assert traffic.versions[("latest", 2)] > 0
    # Once version 1 is gone, requests by label reach version 2 only.
    response = prediction_stub.Predict(predict_request(RELOAD, label="stable"), timeout=30)
    assert response.model_spec.version.value == 2


def test_reload_config_rpc_refuses_a_label_on_an_unavailable_version(endpoint, model_stub, prediction_stub):
    from tensorflow_serving.apis import model_management_pb2
    from tensorflow_serving.config import model_server_config_pb2

    config = model_server_config_pb2.ModelServerConfig()
    for name, (base, versions, labels) in initial_entries(endpoint.base_path).items():
        entry = config.model_config_list.config.add(name=name, base_path=base, model_platform="tensorflow")
        if versions is None:
            entry.model_version_policy.latest.num_versions = 1
        else:
            entry.model_version_policy.specific.versions.extend(versions)
        entry.version_labels.update(labels)
    static = next(e for e in config.model_config_list.config if e.name.endswith("static"))
    static.version_labels["broken"] = 42
    with pytest.raises(grpc.RpcError) as raised:
        model_stub.HandleReloadConfigRequest(model_management_pb2.ReloadConfigRequest(config=config), timeout=60)
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "Request to assign label to version 42 of model" in raised.value.details()
    assert "which is not currently available for inference" in raised.value.details()
    # The labels in force are the previous ones: canary still answers.
    assert prediction_stub.Predict(predict_request(static.name, label="canary"), timeout=30).model_spec.version.value == 2
    del static.version_labels["broken"]
    response = model_stub.HandleReloadConfigRequest(model_management_pb2.ReloadConfigRequest(config=config), timeout=60)
    assert response.status.error_code == 0


def test_corrupt_half_written_and_deleted_versions(endpoint, prediction_stub):
    model_dir = endpoint.model_dir(LIFECYCLE)  # policy latest{1}, version 1 serving
    assert _states(endpoint, LIFECYCLE)[1][0] == "AVAILABLE"
    # A corrupt SavedModel: not loaded, the error is in the status, version 1 keeps serving.
    corrupt = model_dir / "3"
    shutil.copytree(endpoint.template(1), corrupt)
    (corrupt / "saved_model.pb").write_bytes(b"\x08\x01garbage that is not a SavedModel proto\xff\xff")
    wait_for(lambda: _states(endpoint, LIFECYCLE).get(3, ("", "OK"))[1] != "OK", what="version 3 load failure")
    state, code = _states(endpoint, LIFECYCLE)[3]
    assert state == "END" and code != "OK"
    assert _states(endpoint, LIFECYCLE)[1][0] == "AVAILABLE"
    assert prediction_stub.Predict(predict_request(LIFECYCLE), timeout=30).model_spec.version.value == 1
    shutil.rmtree(corrupt)
    # Half written (copy interrupted: variables only, no saved_model.pb yet): not loaded either.
    half = model_dir / "4"
    shutil.copytree(endpoint.template(1) / "variables", half / "variables")
    wait_for(lambda: 4 in _states(endpoint, LIFECYCLE), what="version 4 seen")
    assert _states(endpoint, LIFECYCLE)[4][0] != "AVAILABLE"
    assert prediction_stub.Predict(predict_request(LIFECYCLE), timeout=30).model_spec.version.value == 1
    # The writer finishes: the now complete directory loads and replaces version 1 (latest{1}).
    shutil.copy(endpoint.template(2) / "saved_model.pb", half / "saved_model.pb")
    shutil.copytree(endpoint.template(2) / "variables", half / "variables", dirs_exist_ok=True)
    shutil.copytree(endpoint.template(2) / "assets", half / "assets", dirs_exist_ok=True)
    if (endpoint.template(2) / "fingerprint.pb").exists():
        shutil.copy(endpoint.template(2) / "fingerprint.pb", half / "fingerprint.pb")
    wait_for(lambda: _states(endpoint, LIFECYCLE).get(4, ("",))[0] == "AVAILABLE", what="version 4 AVAILABLE")
    wait_for(lambda: _states(endpoint, LIFECYCLE).get(1, ("",))[0] == "END", what="version 1 unloaded")
    assert prediction_stub.Predict(predict_request(LIFECYCLE), timeout=30).model_spec.version.value == 4
    # Deleting a version unloads it; the remaining directory (1) is aspired again and loads.
    shutil.rmtree(half)
    wait_for(lambda: _states(endpoint, LIFECYCLE).get(4, ("",))[0] == "END", what="version 4 unloaded")
    with pytest.raises(grpc.RpcError) as raised:
        prediction_stub.Predict(predict_request(LIFECYCLE, version=4), timeout=30)
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    wait_for(lambda: _states(endpoint, LIFECYCLE).get(1, ("",))[0] == "AVAILABLE", what="version 1 back")
