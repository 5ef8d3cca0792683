"""Which model versions are loaded, and which one a request gets.

Mirrors TF Serving's ServerCore: a `model_config_list` names models, base paths, version policies and labels;
a file-system poll finds numeric version directories; versions load (with warmup) before they become
AVAILABLE; a version leaves only once a replacement is AVAILABLE (or its directory is gone); labels may only
point at AVAILABLE versions. Requests read an immutable snapshot that is swapped atomically, so the hot path
takes no lock and a request never sees a half-applied change.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import grpc
from tensorflow_serving.apis import get_model_status_pb2
from tensorflow_serving.config import model_server_config_pb2

from serving.server.errors import ServingError, failed_precondition, invalid_argument, not_found
from serving.server.policy import aspired_versions, numeric_versions
from serving.server.servable import Servable, directory_fingerprint
from wattflow.log import get_logger

log = get_logger(__name__)

State = get_model_status_pb2.ModelVersionStatus.State


@dataclass
class VersionRecord:
    state: int = State.START
    error: ServingError | None = None
    servable: Servable | None = None
    fingerprint: tuple | None = None


@dataclass
class ModelRecord:
    config: model_server_config_pb2.ModelConfig
    versions: dict[int, VersionRecord] = field(default_factory=dict)
    labels: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelView:
    """What requests see of one model: AVAILABLE versions and labels, never mutated."""

    versions: dict[int, Servable]
    labels: dict[str, int]
    latest: Servable | None


Warmup = Callable[[Servable], None]


class ModelManager:
    def __init__(self, *, warmup: Warmup | None = None, allow_labels_for_unavailable: bool = False,
                 xla_enabled: bool = False) -> None:
        self.warmup = warmup
        self.xla_enabled = xla_enabled
        self._allow_unavailable_labels = allow_labels_for_unavailable
        self._models: dict[str, ModelRecord] = {}
        self._pending_labels: dict[str, dict[str, int]] = {}
        self._views: dict[str, ModelView] = {}
        self._sync_lock = threading.RLock()
        self.config = model_server_config_pb2.ModelServerConfig()
        self.load_listeners: list[Callable[[str, int, str, float], None]] = []

    # ---- requests (lock-free) -------------------------------------------------------------------
    def resolve(self, name: str, version: int | None = None, label: str = "") -> Servable:
        view = self._views.get(name)
        if label:
            if view is None or label not in view.labels:
                raise invalid_argument(f"Unrecognized servable version label: {label}")
            version = view.labels[label]
        if version is not None:
            servable = view.versions.get(version) if view else None
            if servable is None:
                raise not_found(f"Servable not found for request: Specific({name}, {version})")
            return servable
        if view is None or view.latest is None:
            raise not_found(f"Servable not found for request: Latest({name})")
        return view.latest

    def version_status(self, name: str, version: int | None = None, label: str = ""):
        """GetModelStatus: every known version (newest first) or one; TF Serving's messages for unknown ones."""
        with self._sync_lock:
            record = self._models.get(name)
            if label:
                labels = record.labels if record else {}
                if label not in labels:
                    raise invalid_argument(f"Unrecognized servable version label: {label}")
                version = labels[label]
            states = {v: (r.state, r.error) for v, r in (record.versions.items() if record else ())}
        if version is not None:
            if version not in states:
                raise not_found(f"Could not find version {version} of model {name}")
            return [(version, *states[version])]
        if not states:
            raise not_found(f"Could not find any versions of model {name}")
        return [(v, *states[v]) for v in sorted(states, reverse=True)]

    def model_names(self) -> list[str]:
        return sorted(self._models)

    # ---- configuration ----------------------------------------------------------------------------
    def apply_config(self, config: model_server_config_pb2.ModelServerConfig, *, strict_labels: bool) -> None:
        """Take a new `model_config_list`: policies apply at once; labels once their versions are AVAILABLE.

        `strict_labels` (HandleReloadConfigRequest) reports a label on an unavailable version as
        FAILED_PRECONDITION, as TF Serving does; the file poll instead keeps it pending and retries each poll.
        """
        with self._sync_lock:
            self.config = config
            wanted = {entry.name: entry for entry in config.model_config_list.config}
            for name in list(self._models):
                if name not in wanted:
                    self._drop_model(name)
            for name, entry in wanted.items():
                record = self._models.get(name)
                if record is None:
                    self._models[name] = ModelRecord(config=entry)
                else:
                    record.config = entry
                self._pending_labels[name] = dict(entry.version_labels)
            self._sync_all()
            problems = self._apply_labels()
            self._unload_unaspired()
            self._publish()
        if problems and strict_labels:
            raise failed_precondition(problems[0])

    def poll(self) -> None:
        with self._sync_lock:
            self._sync_all()
            self._apply_labels()
            self._unload_unaspired()
            self._publish()

    # ---- internals (called with the sync lock held) ----------------------------------------------
    def _sync_all(self) -> None:
        for name, record in self._models.items():
            self._sync_model(name, record)

    def _sync_model(self, name: str, record: ModelRecord) -> None:
        base = Path(record.config.base_path)
        present = numeric_versions(base)
        for version, version_record in list(record.versions.items()):
            if version not in present and version_record.state == State.AVAILABLE:
                # The directory is gone: TF Serving stops aspiring the version and unloads it.
                self._unload(name, record, version, "its directory was removed")
        aspired = aspired_versions(record.config.model_version_policy, list(present))
        for version in sorted(aspired, reverse=True):
            version_record = record.versions.get(version)
            if version_record and version_record.state == State.AVAILABLE:
                continue
            fingerprint = directory_fingerprint(present[version])
            if version_record and version_record.error is not None and version_record.fingerprint == fingerprint:
                continue  # failed before and unchanged since: retrying would fail the same way
            self._load(name, record, version, present[version], fingerprint)
            self._publish()

    def _load(self, name: str, record: ModelRecord, version: int, path: Path, fingerprint: tuple) -> None:
        version_record = VersionRecord(state=State.LOADING, fingerprint=fingerprint)
        record.versions[version] = version_record
        started = time.perf_counter()
        log.info("loading servable", model=name, version=version, path=str(path))
        try:
            servable = Servable.load(name, version, path, xla_enabled=self.xla_enabled)
            if self.warmup is not None:
                self.warmup(servable)
        except ServingError as exc:
            version_record.state, version_record.error = State.END, exc
            log.error("loading servable failed", model=name, version=version, error=str(exc))
            self._notify(name, version, exc.code.name, started)
            return
        except Exception as exc:  # a broken model must never take the server down
            version_record.state = State.END
            version_record.error = ServingError(grpc.StatusCode.UNKNOWN, f"{type(exc).__name__}: {exc}")
            log.error("loading servable failed", model=name, version=version, error=str(exc))
            self._notify(name, version, "UNKNOWN", started)
            return
        version_record.servable, version_record.state, version_record.error = servable, State.AVAILABLE, None
        log.info("servable available", model=name, version=version, seconds=round(time.perf_counter() - started, 3))
        self._notify(name, version, "OK", started)

    def _notify(self, name: str, version: int, status: str, started: float) -> None:
        for listener in self.load_listeners:
            listener(name, version, status, time.perf_counter() - started)

    def _apply_labels(self) -> list[str]:
        problems = []
        for name, labels in list(self._pending_labels.items()):
            record = self._models.get(name)
            if record is None:
                del self._pending_labels[name]
                continue
            unavailable = [
                f"Request to assign label to version {version} of model {name}, which is not currently available "
                "for inference"
                for version in labels.values()
                if not self._allow_unavailable_labels
                and (record.versions.get(version) is None or record.versions[version].state != State.AVAILABLE)
            ]
            if unavailable:
                problems.extend(unavailable)
                continue
            record.labels = dict(labels)
            del self._pending_labels[name]
        return problems

    def _unload_unaspired(self) -> None:
        for name, record in self._models.items():
            present = numeric_versions(Path(record.config.base_path))
            aspired = aspired_versions(record.config.model_version_policy, list(present))
            available = {v for v, r in record.versions.items() if r.state == State.AVAILABLE}
            # Availability-preserving: an old version leaves only once an aspired one serves, and never while a
            # label still points at it (a request by that label would otherwise fail).
            if not (aspired & available):
                continue
            labelled = set(record.labels.values())
            for version in sorted(available - aspired - labelled):
                self._unload(name, record, version, "no longer aspired")

    def _unload(self, name: str, record: ModelRecord, version: int, why: str) -> None:
        version_record = record.versions[version]
        version_record.state = State.UNLOADING
        version_record.servable = None
        version_record.state = State.END
        log.info("servable unloaded", model=name, version=version, reason=why)

    def _drop_model(self, name: str) -> None:
        record = self._models.pop(name)
        for version, version_record in record.versions.items():
            if version_record.state == State.AVAILABLE:
                self._unload(name, record, version, "model removed from the config")
        self._pending_labels.pop(name, None)

    def _publish(self) -> None:
        views = {}
        for name, record in self._models.items():
            versions = {v: r.servable for v, r in record.versions.items() if r.state == State.AVAILABLE and r.servable}
            latest = versions[max(versions)] if versions else None
            labels = {label: v for label, v in record.labels.items() if v in versions}
            views[name] = ModelView(versions=versions, labels=labels, latest=latest)
        self._views = views


class Poller:
    """Re-reads the config file and re-scans the file system on TF Serving's two poll intervals."""

    def __init__(self, manager: ModelManager, *, fs_poll_s: float, config_poll_s: float,
                 read_config: Callable[[], model_server_config_pb2.ModelServerConfig] | None) -> None:
        self._manager = manager
        self._fs_poll_s = fs_poll_s
        self._config_poll_s = config_poll_s
        self._read_config = read_config
        self._stop = threading.Event()
        self._last_config_text: str | None = None
        self._thread = threading.Thread(target=self._run, name="model-poller", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        next_fs = time.monotonic() + self._fs_poll_s if self._fs_poll_s > 0 else float("inf")
        next_config = time.monotonic() + self._config_poll_s if self._config_poll_s > 0 else float("inf")
        while not self._stop.is_set():
            now = time.monotonic()
            wait = min(next_fs, next_config) - now
            if wait == float("inf"):
                return
            if wait > 0 and self._stop.wait(wait):
                return
            now = time.monotonic()
            try:
                if now >= next_config and self._read_config is not None:
                    next_config = now + self._config_poll_s
                    self._manager.apply_config(self._read_config(), strict_labels=False)
                    next_fs = now + self._fs_poll_s if self._fs_poll_s > 0 else float("inf")
                elif now >= next_fs:
                    next_fs = now + self._fs_poll_s
                    self._manager.poll()
            except ServingError as exc:
                log.error("model config poll failed", error=str(exc))
            except Exception as exc:  # keep polling whatever one round raised
                log.exception("model poll failed", error=str(exc))
