"""Which version directories exist and which of them a version policy wants loaded (TF-free)."""

from __future__ import annotations

from pathlib import Path

from tensorflow_serving.config import model_server_config_pb2


def numeric_versions(base_path: Path) -> dict[int, Path]:
    """TF Serving's rule: every child directory whose whole name is a non-negative integer; others are ignored."""
    try:
        children = list(base_path.iterdir())
    except OSError:
        return {}
    found = {}
    for child in children:
        if child.name.isdigit() and child.is_dir():
            found[int(child.name)] = child
    return found


def aspired_versions(
    policy: model_server_config_pb2.FileSystemStoragePathSourceConfig.ServableVersionPolicy,
    present: list[int],
) -> set[int]:
    kind = policy.WhichOneof("policy_choice")
    if kind == "all":
        return set(present)
    if kind == "specific":
        return set(policy.specific.versions) & set(present)
    count = policy.latest.num_versions if kind == "latest" and policy.latest.num_versions > 0 else 1
    return set(sorted(present)[-count:])
