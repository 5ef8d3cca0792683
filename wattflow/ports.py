"""Free TCP ports for servers this project starts on one machine (tests, `make up`, benchmarks).

A port found by binding port 0 comes from the kernel's ephemeral range, the same range it hands out to
every outgoing connection and every other "port 0" listener. Between finding it and the server binding it
(for the demo: minutes later), a Spark driver's py4j gateway or a client socket may take it, and a readiness
probe then talks to the wrong program (seen: the demo's serving probe answered by py4j). So ports are drawn
at random below the ephemeral range, where the kernel never assigns one by itself, and kept only if they bind.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

LOOPBACK = "127.0.0.1"
_LOWEST = 20_000


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768  # Linux's default


def _binds(port: int, host: str) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = LOOPBACK) -> int:
    """A port nothing listens on now, outside the range the kernel assigns to port-0 sockets when it can."""
    high = _ephemeral_low() - 1
    if high - _LOWEST >= 1_000:
        rng = random.SystemRandom()
        for _ in range(200):
            port = rng.randint(_LOWEST, high)
            if _binds(port, host):
                return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:  # a machine with an unusual range
        sock.bind((host, 0))
        return int(sock.getsockname()[1])
