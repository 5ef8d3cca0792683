"""Ports for our servers come from below the kernel's ephemeral range, so no port-0 socket can take them."""

from __future__ import annotations

import socket

from wattflow.ports import _ephemeral_low, free_port


def test_free_ports_are_below_the_ephemeral_range_and_bind() -> None:
    low = _ephemeral_low()
    ports = [free_port() for _ in range(50)]
    assert all(20_000 <= p < low for p in ports), (low, ports)
    assert len(set(ports)) > 40  # drawn at random, not one port over and over
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", ports[0]))


def test_a_port_in_use_is_never_returned() -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", free_port()))
        held.listen()
        taken = held.getsockname()[1]
        assert all(free_port() != taken for _ in range(2_000))
