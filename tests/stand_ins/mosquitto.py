"""A private Mosquitto broker on a free loopback port, with persistence, that can be stopped and restarted.

Config chosen for the delivery guarantees under test: persistence on (a restart keeps the persistent
session's queued QoS 1 messages), no cap on queued or in-flight messages (Mosquitto's defaults, 1000 and
20, would drop or throttle a fast publisher).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from wattflow.ports import free_port




@dataclass(frozen=True)
class BrokerTls:
    """A locked-down listener: TLS with client certificates required, no anonymous clients, a password file."""

    ca_file: Path
    cert_file: Path
    key_file: Path
    users: dict[str, str]  # username -> password, hashed into Mosquitto's password file


class Mosquitto:
    def __init__(self, workdir: Path, port: int | None = None, tls: BrokerTls | None = None) -> None:
        from tests.servers import require_program

        # Missing, it fails the test in one line naming the package (tests/conftest.py).
        self.binary = require_program("mosquitto", "mosquitto", "/usr/sbin/mosquitto")
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.config = self.workdir / "mosquitto.conf"
        self.tls = tls
        security = ["allow_anonymous true"]
        if tls is not None:
            passwords = self.workdir / "passwords"
            passwords.write_text("")
            for user, password in tls.users.items():
                subprocess.run(["mosquitto_passwd", "-b", str(passwords), user, password], check=True, capture_output=True)
            passwords.chmod(0o600)
            security = [
                "allow_anonymous false",
                f"password_file {passwords}",
                f"cafile {tls.ca_file}",
                f"certfile {tls.cert_file}",
                f"keyfile {tls.key_file}",
                "require_certificate true",
                "tls_version tlsv1.2",
            ]
        self.config.write_text(
            "\n".join(
                [
                    f"listener {self.port} 127.0.0.1",
                    *security,
                    "persistence true",
                    f"persistence_location {self.workdir}/",
                    "persistence_file mosquitto.db",
                    "autosave_interval 1",
                    "max_queued_messages 0",
                    "max_inflight_messages 0",
                    f"log_dest file {self.workdir}/mosquitto.log",
                    "log_type error",
                    "log_type warning",
                    "log_type notice",
                    # Started as root, Mosquitto would switch to the `mosquitto` user, who cannot write here.
                    *(["user root"] if os.geteuid() == 0 else []),
                    "",
                ]
            )
        )
        self.process: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> "Mosquitto":
        self.process = subprocess.Popen(
            [self.binary, "-c", str(self.config)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.process.stderr.read().decode() if self.process.stderr else ''}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not listen on {self.port} within {timeout} s")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        """SIGTERM: Mosquitto writes its persistence file and exits (what a service restart does)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(sig)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def restart(self, downtime_s: float = 0.5) -> None:
        self.stop()
        time.sleep(downtime_s)
        self.start()

    def __enter__(self) -> "Mosquitto":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
