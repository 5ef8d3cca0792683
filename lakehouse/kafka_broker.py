"""A single-node Apache Kafka 4 broker in KRaft mode, run from its Maven jars (tests, `make up`, benchmarks).

The jars resolve once from Maven Central into the jar cache Spark's jars use (`settings.spark_jars_dir`,
`lakehouse.spark_jars`: Spark's own Ivy does the resolving, so no Maven install is needed); later starts
read only the cache. Spark's resolver leaves out `scala-library` (Spark ships it), so the broker's class
path takes PySpark's copy, the same 2.13 line Kafka is built for.

One process is controller and broker at once (`process.roles=broker,controller`), every listener bound
to 127.0.0.1, the internal topics with replication factor 1. `start()` formats the storage when it is
new (`kafka.tools.StorageTool format --standalone`), starts `kafka.Kafka`, and waits until a client sees
the broker in the cluster metadata; `stop()` sends SIGTERM (a clean shutdown), `kill()` SIGKILL (a crash:
the next start recovers the logs from disk, and everything the broker acknowledged is still there).

    python -m lakehouse.kafka_broker resolve                      # fill the jar cache (bootstrap)
    python -m lakehouse.kafka_broker run --dir D --port P ...     # foreground broker (make up)
"""

from __future__ import annotations

import argparse
import glob
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Sequence

from wattflow.log import get_logger
from wattflow.ports import free_port

log = get_logger(__name__)

READY_LINE = "Kafka Server started"


class KafkaBrokerError(RuntimeError):
    """The broker could not be resolved, formatted or started; the message carries the tail of its log."""




def _settings(settings: Any | None) -> Any:
    if settings is None:
        from wattflow.settings import get_settings

        settings = get_settings()
    return settings


def _scala_library() -> Path:
    import pyspark

    found = sorted(glob.glob(os.path.join(os.path.dirname(pyspark.__file__), "jars", "scala-library-2.13*.jar")))
    if not found:
        raise KafkaBrokerError("PySpark ships no scala-library 2.13 jar; the Kafka broker needs one on its class path")
    return Path(found[-1])


def broker_classpath(settings: Any | None = None) -> list[Path]:
    """Every jar the broker needs: resolved once into the jar cache, then read from it offline."""
    from lakehouse.spark_jars import JarResolutionError, resolve_coordinate

    settings = _settings(settings)
    cache = Path(settings.spark_jars_dir)
    jars: dict[str, Path] = {}
    for coordinate in settings.kafka.broker_packages:
        try:
            resolved = resolve_coordinate(cache, coordinate)
        except JarResolutionError as err:
            raise KafkaBrokerError(
                f"could not resolve the Kafka broker's jars ({coordinate}) into {cache}: {str(err).splitlines()[0]}; "
                "`make bootstrap` downloads them once (python -m lakehouse.kafka_broker resolve)"
            ) from None
        for jar in resolved:
            jars.setdefault(jar.name, jar)  # the first coordinate's copy of a shared jar wins
    return [*jars.values(), _scala_library()]


def java_binary() -> str:
    import shutil

    java = shutil.which("java")
    if java is None:
        raise KafkaBrokerError("java is not installed (Debian package openjdk-17-jre-headless); `make bootstrap` installs it")
    return java


def server_properties(*, port: int, controller_port: int, data_dir: Path, partitions: int) -> str:
    return "\n".join(
        [
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.bootstrap.servers=127.0.0.1:{controller_port}",
            f"listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{port}",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=PLAINTEXT",
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            f"log.dirs={data_dir}",
            f"num.partitions={partitions}",
            # One node: every internal topic has one replica, or it never becomes available.
            "offsets.topic.replication.factor=1",
            "offsets.topic.num.partitions=3",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
            # A consumer group's first member gets its partitions at once instead of after 3 s.
            "group.initial.rebalance.delay.ms=0",
            "auto.create.topics.enable=true",
            "",
        ]
    )


LOG4J2 = """status = error
appender.file.type = File
appender.file.name = file
appender.file.fileName = {log_file}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = {level}
rootLogger.appenderRef.file.ref = file
logger.ready.name = kafka.server.KafkaRaftServer
logger.ready.level = INFO
"""


class KafkaBroker:
    """A private broker in `workdir` on free (or given) loopback ports; stop/kill/restart keep its data."""

    def __init__(
        self,
        workdir: Path,
        *,
        port: int | None = None,
        controller_port: int | None = None,
        settings: Any | None = None,
        heap: str | None = None,
        jvm_options: Sequence[str] | None = None,
    ) -> None:
        settings = _settings(settings)
        k = settings.kafka
        self.settings = settings
        self.workdir = Path(workdir).resolve()
        self.port = port or free_port()
        self.controller_port = controller_port or free_port()
        self.heap = heap or k.broker_heap
        self.jvm_options = list(k.broker_jvm_options if jvm_options is None else jvm_options)
        self.partitions = k.partitions
        self.data_dir = self.workdir / "data"
        self.config = self.workdir / "server.properties"
        self.log_file = self.workdir / "server.log"
        self.process: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _write_config(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config.write_text(
            server_properties(port=self.port, controller_port=self.controller_port, data_dir=self.data_dir,
                              partitions=self.partitions)
        )
        (self.workdir / "log4j2.properties").write_text(
            LOG4J2.format(log_file=self.log_file, level=self.settings.kafka.broker_log_level)
        )

    def _java(self, main_class: str, *args: str, heap: str = "256m") -> list[str]:
        classpath = os.pathsep.join(str(j) for j in broker_classpath(self.settings))
        return [
            java_binary(), f"-Xmx{heap}", *self.jvm_options,
            f"-Dlog4j2.configurationFile={self.workdir / 'log4j2.properties'}",
            "-cp", classpath, main_class, *args,
        ]

    def format(self) -> None:
        """Format the storage once (a formatted directory holds meta.properties); a restart keeps it."""
        self._write_config()
        if (self.data_dir / "meta.properties").is_file():
            return
        cluster_id = _cluster_id()
        done = subprocess.run(
            self._java("kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id}", "-c", str(self.config), "--standalone"),
            capture_output=True, text=True, timeout=120,
        )
        if done.returncode != 0:
            raise KafkaBrokerError(f"formatting the Kafka storage in {self.data_dir} failed: {done.stderr[-2000:]}")

    def command(self) -> list[str]:
        return self._java("kafka.Kafka", str(self.config), heap=self.heap)

    def start(self, timeout: float = 90.0) -> "KafkaBroker":
        self.format()
        out = open(self.workdir / "stdout.log", "ab")
        # Its own session: a SIGINT aimed at pytest does not reach it, and kill() hits only the JVM.
        self.process = subprocess.Popen(self.command(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        out.close()
        self.wait_ready(timeout)
        log.info("kafka broker ready", address=self.address, pid=self.process.pid)
        return self

    def wait_ready(self, timeout: float) -> None:
        from confluent_kafka.admin import AdminClient

        # log_level 0: librdkafka would print a line per refused connection while the JVM starts.
        admin = AdminClient({"bootstrap.servers": self.address, "socket.connection.setup.timeout.ms": 1000, "log_level": 0})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise KafkaBrokerError(f"the Kafka broker exited with {self.process.returncode}: {self.log_tail()}")
            try:
                if admin.list_topics(timeout=1.0).brokers:
                    return
            except Exception:  # KafkaException while the broker is still starting
                pass
            time.sleep(0.2)
        raise KafkaBrokerError(f"the Kafka broker at {self.address} was not ready within {timeout:.0f} s: {self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        text = ""
        for f in (self.log_file, self.workdir / "stdout.log"):
            if f.is_file():
                text += "\n".join(f.read_text(errors="replace").splitlines()[-lines:]) + "\n"
        return text.strip() or "(no log)"

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> None:
        """SIGTERM: a clean shutdown (the broker flushes and closes its logs)."""
        if self.process is None or self.process.poll() is not None:
            self.process = None
            return
        self.process.send_signal(sig)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def kill(self) -> None:
        """SIGKILL: a crash. Acknowledged records are in the log files (page cache), which the restart recovers."""
        self.stop(signal.SIGKILL)

    def restart(self, downtime_s: float = 0.5, timeout: float = 90.0) -> None:
        self.stop()
        time.sleep(downtime_s)
        self.start(timeout)

    def create_topics(self, names: Sequence[str], partitions: int | None = None) -> None:
        create_topics(self.address, names, partitions or self.partitions)

    def __enter__(self) -> "KafkaBroker":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64 without padding (what `random-uuid` prints)."""
    import base64

    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


def create_topics(bootstrap: str, names: Sequence[str], partitions: int, timeout: float = 30.0,
                  client_config: dict[str, str] | None = None) -> None:
    """Create topics that do not exist yet (an existing one is left as it is)."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap, **(client_config or {})})
    existing = set(admin.list_topics(timeout=timeout).topics)
    wanted = [NewTopic(n, num_partitions=partitions, replication_factor=1) for n in names if n not in existing]
    if not wanted:
        return
    for name, future in admin.create_topics(wanted, request_timeout=timeout).items():
        try:
            future.result(timeout)
        except KafkaException as err:
            if err.args[0].name() != "TOPIC_ALREADY_EXISTS":
                raise


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lakehouse.kafka_broker", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("resolve", help="resolve the broker's jars into the jar cache and list them")
    run = sub.add_parser("run", help="format (once) and run a broker in the foreground until SIGTERM")
    run.add_argument("--dir", required=True, type=Path)
    run.add_argument("--port", type=int, required=True)
    run.add_argument("--controller-port", type=int, required=True)
    run.add_argument("--topic", action="append", default=[], help="create this topic once the broker is up")
    args = parser.parse_args(argv)
    settings = _settings(None)
    if args.command == "resolve":
        started = time.monotonic()
        jars = broker_classpath(settings)
        for jar in jars:
            print(jar)
        print(f"{len(jars)} jar(s) for the Kafka broker ({time.monotonic() - started:.1f} s)", file=sys.stderr)
        return 0
    broker = KafkaBroker(args.dir, port=args.port, controller_port=args.controller_port, settings=settings)
    stopping = {"now": False}

    def on_term(signum, frame) -> None:  # make down: a clean broker shutdown, then exit
        stopping["now"] = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    broker.start()
    if args.topic:
        broker.create_topics(args.topic)
    print(f"kafka broker on {broker.address} (data in {broker.data_dir})", flush=True)
    while not stopping["now"] and broker.process is not None and broker.process.poll() is None:
        time.sleep(0.5)
    code = 0 if stopping["now"] else (broker.process.returncode if broker.process else 1)
    broker.stop()
    return code


if __name__ == "__main__":
    raise SystemExit(main())
