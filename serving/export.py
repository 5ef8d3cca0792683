"""Registry version -> TF Serving layout: `<model_base_path>/<model_name>/<version>/` plus `models.config`.

MLflow never writes TF Serving's numeric version directory, so this does: the SavedModel that training logged
with the registered version's run (artifact `saved_model/`) is copied into a hidden temporary directory next
to its final place, warmup requests built from real gold-feature windows are added under
`assets.extra/tf_serving_warmup_requests`, and the directory is renamed into place (one atomic rename, so
a file-system poller never sees half a model). The `model_config_list` file then names the versions in use
(`specific` policy) and the labels `stable` -> champion and `canary` -> challenger.

TF Serving refuses a label on a version that is not yet AVAILABLE, so with a running server the config is
written twice: first the new version next to the labelled ones, then, once the server reports it
AVAILABLE, the moved labels (and the versions no longer in use dropped).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from ml.spec import INPUT_FUTURE, INPUT_HISTORY, WindowSpec
from wattflow.log import get_logger

if TYPE_CHECKING:
    import pandas as pd

    from wattflow.settings import Settings

log = get_logger(__name__)

# Names the training side logs under (ml/tracking.py: SAVED_MODEL_ARTIFACT, TAG_WINDOW_SPEC); serving may not
# import training code, and a test checks the two stay equal.
SAVED_MODEL_ARTIFACT = "saved_model"
TAG_WINDOW_SPEC = "wattflow.window_spec"
CHAMPION, CHALLENGER = "champion", "challenger"
STABLE_LABEL, CANARY_LABEL = "stable", "canary"
WARMUP_RELATIVE = Path("assets.extra") / "tf_serving_warmup_requests"
MAX_WARMUP_RECORDS = 1000


class ExportError(RuntimeError):
    """The version cannot be exported: the message says which version and what is missing."""


@dataclass(frozen=True)
class RegistryVersion:
    model_name: str
    version: int
    run_id: str
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class DeployResult:
    model_name: str
    version: int
    version_dir: Path
    config_path: Path
    labels: dict[str, int]
    versions_in_config: tuple[int, ...]
    warmup_records: int
    already_present: bool = False
    notes: tuple[str, ...] = field(default_factory=tuple)


# ---- pure parts -----------------------------------------------------------------------------------
def serving_labels(champion: int | None, challenger: int | None) -> dict[str, int]:
    """`stable` follows the champion, `canary` the challenger while it differs from the champion."""
    labels = {}
    if champion is not None:
        labels[STABLE_LABEL] = champion
    if challenger is not None and challenger != champion:
        labels[CANARY_LABEL] = challenger
    return labels


def model_config(existing, model_name: str, base_path: Path, versions: Sequence[int], labels: dict[str, int]):
    """The `ModelServerConfig` with this model's entry replaced; other models' entries are kept as they are."""
    from tensorflow_serving.config import model_server_config_pb2

    config = model_server_config_pb2.ModelServerConfig()
    if existing is not None:
        config.CopyFrom(existing)
    entries = config.model_config_list.config
    kept = [e for e in entries if e.name != model_name]
    del entries[:]
    entries.extend(kept)
    entry = entries.add(name=model_name, base_path=str(base_path), model_platform="tensorflow")
    entry.model_version_policy.specific.versions.extend(sorted(set(versions)))
    for label, version in sorted(labels.items()):
        entry.version_labels[label] = version
    return config


def warmup_logs(model_name: str, windows: Sequence[tuple[np.ndarray, np.ndarray]], *, max_records: int,
                batch_sizes: Sequence[int] = ()):
    """PredictionLog records for TF Serving's warmup: one batch-1 request per window, then one with them all.

    Batch 1 and a full batch are the two shapes the server sees most, so both get traced before serving.
    `batch_sizes` (XLA-compiled exports): one more request per allowed batch size, windows repeated to fill it,
    because XLA compiles each shape once and TF Serving compiles only what the warmup file sends.
    """
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

    if not 0 < max_records <= MAX_WARMUP_RECORDS:
        raise ExportError(f"warmup max_records={max_records} must be in 1..{MAX_WARMUP_RECORDS}")

    def request(history: np.ndarray, future: np.ndarray):
        message = predict_pb2.PredictRequest()
        message.model_spec.name = model_name
        message.model_spec.signature_name = "serving_default"
        message.inputs[INPUT_HISTORY].CopyFrom(tf.make_tensor_proto(history.astype(np.float32)))
        message.inputs[INPUT_FUTURE].CopyFrom(tf.make_tensor_proto(future.astype(np.float32)))
        return prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=message))

    singles = list(windows)[: max(0, max_records - 1)]
    logs = [request(h, f) for h, f in singles]
    if len(singles) > 1:
        logs.append(request(np.concatenate([h for h, _ in singles]), np.concatenate([f for _, f in singles])))
    if singles and batch_sizes:
        histories = np.concatenate([h for h, _ in singles])
        futures = np.concatenate([f for _, f in singles])
        for size in sorted(set(batch_sizes))[: max(0, max_records - len(logs))]:
            rows = np.resize(np.arange(len(histories)), size)
            logs.append(request(histories[rows], futures[rows]))
    return logs


def recent_windows(frame: "pd.DataFrame", spec: WindowSpec, *, limit: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Up to `limit` windows at the latest midnights (UTC) of each building that the frame can fill."""
    import pandas as pd

    from ml.windows import WindowError, window_for_origin

    found: list[tuple[np.ndarray, np.ndarray]] = []
    for _building, rows in frame.groupby("building_id", sort=True):
        ts = pd.DatetimeIndex(pd.to_datetime(rows["ts"], utc=True))
        origin = (ts.max() - pd.Timedelta(hours=spec.horizon_h - 1)).floor("D")
        earliest = ts.min() + pd.Timedelta(hours=spec.lookback_h)
        while origin >= earliest and len(found) < limit:
            try:
                found.append(window_for_origin(rows, origin, spec))
            except WindowError:
                pass
            origin -= pd.Timedelta(days=1)
        if len(found) >= limit:
            break
    return found


# ---- file system ----------------------------------------------------------------------------------
def write_warmup_file(version_dir: Path, logs) -> None:
    import tensorflow as tf

    path = version_dir / WARMUP_RELATIVE
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for record in logs:
            writer.write(record.SerializeToString())


def install_version(saved_model_dir: Path, model_dir: Path, version: int, logs=(), *,
                    xla: bool = False) -> tuple[Path, bool]:
    """Copy a SavedModel to `model_dir/<version>/` atomically; an existing complete version is left alone.

    `xla`: write the signatures as XLA-compiled functions instead of copying (serving.xla_cpu_compilation_enabled
    must then be on in the server)."""
    final = model_dir / str(version)
    if (final / "saved_model.pb").exists():
        return final, True
    if final.exists():
        raise ExportError(f"{final} exists without saved_model.pb (a half-written version?); remove it first")
    if not (saved_model_dir / "saved_model.pb").exists():
        raise ExportError(f"{saved_model_dir} holds no saved_model.pb")
    model_dir.mkdir(parents=True, exist_ok=True)
    # Hidden and non-numeric: TF Serving's poller ignores it; same file system, so the rename is atomic.
    staging = model_dir / f".staging-{version}-{uuid.uuid4().hex[:8]}"
    try:
        if xla:
            from serving.xla import write_xla_saved_model

            write_xla_saved_model(saved_model_dir, staging)
        else:
            shutil.copytree(saved_model_dir, staging)
        if logs:
            write_warmup_file(staging, logs)
        os.rename(staging, final)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return final, False


def read_model_config(path: Path):
    from serving.server.config import load_model_server_config

    return load_model_server_config(path) if path.exists() else None


def write_model_config(path: Path, config) -> None:
    """Replace the file in one rename so the server's config poll never reads half of it."""
    from google.protobuf import text_format

    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=".models.config.", delete=False) as handle:
        handle.write(text_format.MessageToString(config))
        temporary = Path(handle.name)
    os.replace(temporary, path)


# ---- registry -------------------------------------------------------------------------------------
def _client(settings: "Settings"):
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_registry_uri(settings.tracking_uri)
    return MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)


def resolve_version(settings: "Settings", version: int | None = None, alias: str = CHAMPION) -> RegistryVersion:
    from mlflow.exceptions import MlflowException

    client = _client(settings)
    name = settings.model.model_name
    try:
        found = client.get_model_version(name, str(version)) if version is not None else client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        what = f"version {version}" if version is not None else f"alias {alias!r}"
        raise ExportError(f"registered model {name!r} has no {what}: {exc.message}") from exc
    return RegistryVersion(name, int(found.version), found.run_id, tuple(getattr(found, "aliases", ()) or ()))


def alias_versions(settings: "Settings") -> dict[str, int]:
    from mlflow.exceptions import MlflowException

    client = _client(settings)
    found = {}
    for alias in (CHAMPION, CHALLENGER):
        try:
            found[alias] = int(client.get_model_version_by_alias(settings.model.model_name, alias).version)
        except MlflowException:
            continue
    return found


def download_saved_model(settings: "Settings", run_id: str, destination: Path) -> Path:
    import mlflow

    mlflow.set_tracking_uri(settings.tracking_uri)
    try:
        path = mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path=SAVED_MODEL_ARTIFACT, dst_path=str(destination)
        )
    except Exception as exc:  # MLflow raises several types for a missing artifact
        raise ExportError(f"run {run_id} has no {SAVED_MODEL_ARTIFACT}/ artifact: {exc}") from exc
    return Path(path)


def window_spec_of_run(settings: "Settings", run_id: str) -> WindowSpec:
    tags = _client(settings).get_run(run_id).data.tags
    if TAG_WINDOW_SPEC not in tags:
        raise ExportError(f"run {run_id} has no {TAG_WINDOW_SPEC} tag")
    return WindowSpec.from_json(tags[TAG_WINDOW_SPEC])


def read_gold_features(settings: "Settings", spec: WindowSpec, days: int) -> "pd.DataFrame | None":
    """The last `days` of gold features (for warmup windows); None when the table does not exist yet."""
    import pandas as pd

    from lakehouse.engine import get_engine
    from lakehouse.schemas import FEATURES

    engine = get_engine(settings)
    if not engine.exists(FEATURES):
        return None
    since = pd.Timestamp.now(tz="UTC") - pd.Timedelta(days=days)
    table = engine.read(FEATURES, filters=[("ts", ">=", since.to_pydatetime())])
    if table.num_rows == 0:
        table = engine.read(FEATURES)
    return table.to_pandas()


# ---- the shell ------------------------------------------------------------------------------------
def export_version(settings: "Settings", version: int | None = None, *, alias: str = CHAMPION,
                   warmup_frame: "pd.DataFrame | None" = None) -> tuple[RegistryVersion, Path, int, bool]:
    """Put a registry version under `<model_base_path>/<model_name>/<version>/`; returns (version, dir, warmup, existed)."""
    target = resolve_version(settings, version, alias)
    model_dir = settings.model_base_path / target.model_name
    if (model_dir / str(target.version) / "saved_model.pb").exists():
        return target, model_dir / str(target.version), 0, True
    spec = window_spec_of_run(settings, target.run_id)
    frame = warmup_frame if warmup_frame is not None else read_gold_features(
        settings, spec, days=settings.serving.warmup_days
    )
    windows = recent_windows(frame, spec, limit=settings.serving.warmup_windows) if frame is not None else []
    if not windows:
        log.warning("no gold-feature windows for warmup; exporting without warmup requests", version=target.version)
    xla = settings.serving.xla
    logs = warmup_logs(target.model_name, windows, max_records=MAX_WARMUP_RECORDS,
                       batch_sizes=settings.serving.xla_batch_sizes if xla else ()) if windows else []
    with tempfile.TemporaryDirectory(dir=settings.cache_dir if settings.cache_dir.exists() else None) as tmp:
        saved_model = download_saved_model(settings, target.run_id, Path(tmp))
        version_dir, existed = install_version(saved_model, model_dir, target.version, logs, xla=xla)
    log.info("exported version", model=target.model_name, version=target.version, path=str(version_dir),
             warmup_records=len(logs), xla=xla)
    return target, version_dir, len(logs), existed


def deploy(settings: "Settings", version: int | None = None, *, alias: str = CHAMPION,
           server_target: str | None = None, timeout_s: float = 120.0,
           warmup_frame: "pd.DataFrame | None" = None) -> DeployResult:
    """Export a registry version and point the serving config at it (labels from the registry aliases)."""
    target, version_dir, warmup_count, existed = export_version(
        settings, version, alias=alias, warmup_frame=warmup_frame
    )
    config_path = settings.model_base_path / "models.config"
    model_path = settings.model_base_path / target.model_name
    aliases = alias_versions(settings)
    labels = serving_labels(aliases.get(CHAMPION), aliases.get(CHALLENGER))
    in_use = {target.version, *labels.values()}
    present = {int(p.name) for p in model_path.iterdir() if p.name.isdigit()}
    missing = sorted(v for v in labels.values() if v not in present)
    notes = []
    for version_number in missing:  # a label on a version never exported would break the reload: export it too
        export_version(settings, version_number, warmup_frame=warmup_frame)
        notes.append(f"exported labelled version {version_number} as well")
    existing = read_model_config(config_path)
    if server_target:
        old_labels = _current_labels(existing, target.model_name)
        staged = in_use | set(old_labels.values())
        write_model_config(config_path, model_config(existing, target.model_name, model_path, staged, old_labels))
        from serving.client import ForecastClient

        with ForecastClient(server_target, model_name=target.model_name) as client:
            for version_number in sorted(set(labels.values()) | {target.version}):
                client.wait_until_available(version_number, timeout_s)
    write_model_config(config_path, model_config(existing, target.model_name, model_path, in_use, labels))
    return DeployResult(
        model_name=target.model_name, version=target.version, version_dir=version_dir, config_path=config_path,
        labels=labels, versions_in_config=tuple(sorted(in_use)), warmup_records=warmup_count,
        already_present=existed, notes=tuple(notes),
    )


def _current_labels(config, model_name: str) -> dict[str, int]:
    if config is None:
        return {}
    for entry in config.model_config_list.config:
        if entry.name == model_name:
            return dict(entry.version_labels)
    return {}
