"""A small reader for docker-compose.yaml and .env files, the way `docker compose` resolves them.

No Docker engine runs on the test machines, so the stack is checked statically: this module does the
parts of compose's loading that matter for that (``.env`` parsing and ``${VAR...}`` interpolation) and
lists what a file references (volumes, host paths, ports, images).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

# $$ | ${NAME} | ${NAME<op>arg} (op one of :- - :? ? :+ +) | $NAME — compose's interpolation syntax.
_REFERENCE = re.compile(
    r"\$(?:(?P<escaped>\$)"
    r"|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|(?P<named>[A-Za-z_][A-Za-z0-9_]*))"
)


class InterpolationError(ValueError):
    """A required variable (``${VAR:?message}``) was unset or empty."""


@dataclass(frozen=True)
class Reference:
    name: str
    op: str | None  # None, ":-", "-", ":?", "?", ":+", "+"
    arg: str

    @property
    def required(self) -> bool:
        return self.op in (":?", "?")

    @property
    def has_default(self) -> bool:
        return self.op in (":-", "-")


def parse_env_file(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if "=" not in line:
            raise ValueError(f"{path}:{number}: expected NAME=value, got {raw!r}")
        name, value = line.split("=", 1)
        values[name.strip()] = value.strip().strip("'\"")
    return values


def references(text: str) -> Iterator[Reference]:
    for match in _REFERENCE.finditer(text):
        if match["escaped"]:
            continue
        name = match["braced"] or match["named"]
        yield Reference(name, match["op"], match["arg"] or "")


def interpolate(text: str, env: Mapping[str, str]) -> str:
    def substitute(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        name = match["braced"] or match["named"]
        op, arg = match["op"], match["arg"] or ""
        value = env.get(name)
        if op == ":-":
            return value if value else arg
        if op == "-":
            return value if value is not None else arg
        if op == ":?" and not value:
            raise InterpolationError(f"{name}: {arg or 'required'}")
        if op == "?" and value is None:
            raise InterpolationError(f"{name}: {arg or 'required'}")
        if op == ":+":
            return arg if value else ""
        if op == "+":
            return arg if value is not None else ""
        return value or ""

    return _REFERENCE.sub(substitute, text)


def interpolate_tree(node: Any, env: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [interpolate_tree(item, env) for item in node]
    if isinstance(node, dict):
        return {key: interpolate_tree(value, env) for key, value in node.items()}
    return node


def strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, list):
        for item in node:
            yield from strings(item)
    elif isinstance(node, dict):
        for value in node.values():
            yield from strings(value)


def load_compose(path: Path, env: Mapping[str, str]) -> dict[str, Any]:
    """The compose model after YAML anchors/merge keys and interpolation, as `docker compose config` sees it."""
    return interpolate_tree(yaml.safe_load(path.read_text()), env)


@dataclass(frozen=True)
class PublishedPort:
    service: str
    host_ip: str
    host_port: int
    container_port: int
    protocol: str


def published_ports(service_name: str, service: Mapping[str, Any]) -> list[PublishedPort]:
    out = []
    for entry in service.get("ports", []):
        if isinstance(entry, dict):
            out.append(
                PublishedPort(
                    service_name,
                    str(entry.get("host_ip", "0.0.0.0")),
                    int(entry["published"]),
                    int(entry["target"]),
                    str(entry.get("protocol", "tcp")),
                )
            )
            continue
        spec, _, protocol = str(entry).partition("/")
        parts = spec.rsplit(":", 2)
        if len(parts) == 3:
            host_ip, host, container = parts
        elif len(parts) == 2:
            host_ip, (host, container) = "0.0.0.0", parts
        else:
            continue  # container port only: Docker picks an ephemeral host port, no clash possible
        out.append(PublishedPort(service_name, host_ip, int(host), int(container), protocol or "tcp"))
    return out


@dataclass(frozen=True)
class Mount:
    service: str
    source: str
    target: str
    kind: str  # "volume" | "bind"


def mounts(service_name: str, service: Mapping[str, Any]) -> list[Mount]:
    out = []
    for entry in service.get("volumes", []):
        if isinstance(entry, dict):
            source, target = str(entry.get("source", "")), str(entry["target"])
            kind = str(entry.get("type", "volume"))
        else:
            source, target = str(entry).split(":")[:2]
            kind = "bind" if source.startswith((".", "/", "~")) else "volume"
        out.append(Mount(service_name, source, target, kind))
    return out
