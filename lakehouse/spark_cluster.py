"""A Spark standalone cluster on this machine: one master and N workers, started from pyspark's own
``bin/spark-class`` (no Spark install beyond the wheel), for tests, benchmarks and a laptop demo of the
Spark runner.

    with standalone_cluster(workers=2, cores=1, memory="1g") as cluster:
        settings = settings.model_copy(update={...cluster.compute_settings()...})
        spark = SparkSession.builder.master(cluster.master_url)...

Every daemon binds 127.0.0.1 (``SPARK_LOCAL_IP``; otherwise a worker registers under the machine's other
interface and traffic leaves loopback) on free ports, and its executors run this process's Python
(``PYSPARK_PYTHON``: the system Python has no pyarrow, so pandas UDFs would fail). The context manager
returns once every worker has registered with the master (read from the master's ``/json`` page) and
stops the daemons on exit; an ``atexit`` hook stops any cluster still running when the interpreter exits
(a test run that was interrupted). Jars for the driver and executors (delta-spark, hadoop-aws) are not
the cluster's business: the driver ships them with ``spark.jars`` (lakehouse/spark_session.py), which
standalone executors fetch from the driver at start.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from wattflow.log import get_logger
from wattflow.ports import free_port

log = get_logger(__name__)

LOOPBACK = "127.0.0.1"
MASTER_CLASS = "org.apache.spark.deploy.master.Master"
WORKER_CLASS = "org.apache.spark.deploy.worker.Worker"


class ClusterStartError(RuntimeError):
    """A master or worker did not come up in time; the message carries the tail of its log."""


def spark_home() -> Path:
    """The installed pyspark package folder: it carries bin/spark-class and the jars/ Spark needs."""
    from pyspark.find_spark_home import _find_spark_home

    return Path(_find_spark_home())


def _tail(path: Path, lines: int = 30) -> str:
    if not path.exists():
        return f"(no log at {path})"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


@dataclass(eq=False)  # identity: clusters live in a set until stopped
class StandaloneCluster:
    """A running cluster: ``master_url`` (spark://127.0.0.1:PORT) is what a driver connects to."""

    master_url: str
    web_ui_url: str
    workers: int
    cores: int
    memory: str
    work_dir: Path
    python: str
    started_s: float = 0.0
    _procs: list[tuple[str, subprocess.Popen, Path]] = field(default_factory=list, repr=False)
    _own_work_dir: bool = field(default=False, repr=False)

    def state(self) -> dict:
        """The master's status page as JSON (status, aliveworkers, cores, activeapps, ...)."""
        with urllib.request.urlopen(f"{self.web_ui_url}/json/", timeout=5) as response:
            return json.loads(response.read().decode())

    def alive_workers(self) -> int:
        try:
            return int(self.state().get("aliveworkers", 0))
        except (OSError, ValueError):
            return 0

    def driver_conf(self) -> dict[str, str]:
        """Spark properties a driver needs to use this cluster from this machine: the master, a loopback
        driver address, executors sized to fit one worker, and this interpreter for Python workers.

        Merge them into ``lakehouse.spark_conf`` (or pass them to a session builder).
        """
        return {
            "spark.master": self.master_url,
            "spark.driver.host": LOOPBACK,
            "spark.driver.bindAddress": LOOPBACK,
            # One executor per worker, taking all of the worker's cores and memory.
            "spark.executor.cores": str(self.cores),
            "spark.executor.memory": self.memory,
            "spark.cores.max": str(self.cores * self.workers),
            "spark.pyspark.python": self.python,
            "spark.executorEnv.SPARK_LOCAL_IP": LOOPBACK,
        }

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM workers first, then the master (so workers do not retry a vanished master), then wait."""
        procs, self._procs = self._procs, []
        for _, proc, _ in reversed(procs):  # workers were started after the master
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        _RUNNING.discard(self)
        if self._own_work_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)
        if procs:
            log.info("spark_cluster.stopped", master=self.master_url)


_RUNNING: set[StandaloneCluster] = set()
_RUNNING_LOCK = threading.Lock()


@atexit.register
def _stop_all() -> None:
    for cluster in list(_RUNNING):
        cluster.stop(timeout_s=5)


def _environment(home: Path, work_dir: Path, python: str, daemon_memory: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYSPARK_SUBMIT_ARGS", "SPARK_MASTER", "SPARK_WORKER"))}
    env.update({
        "SPARK_HOME": str(home),
        "SPARK_LOCAL_IP": LOOPBACK,
        "SPARK_LOCAL_HOSTNAME": LOOPBACK,
        "PYSPARK_PYTHON": python,
        "SPARK_LOG_DIR": str(work_dir / "logs"),
        # spark-class reads conf from SPARK_CONF_DIR; point it at an empty folder so a stray
        # spark-defaults.conf on the machine cannot change the cluster.
        "SPARK_CONF_DIR": str(work_dir / "conf"),
        # The master and worker daemons themselves are small; the executors get the worker's memory.
        "SPARK_DAEMON_MEMORY": daemon_memory,
        # Short-lived daemons: C2 compilation would cost more CPU than it saves.
        "SPARK_DAEMON_JAVA_OPTS": "-XX:TieredStopAtLevel=1 -Duser.timezone=UTC",
        "TZ": "UTC",
    })
    # Executors import the same wattflow code as this driver (a worktree, not only the installed package).
    code_root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([code_root, *[p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]])
    return env


def _spawn(name: str, args: list[str], env: dict[str, str], work_dir: Path) -> tuple[str, subprocess.Popen, Path]:
    log_path = work_dir / "logs" / f"{name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as out:
        # spark-class ends in `exec java ...`, so the Popen is the JVM itself and SIGTERM reaches it.
        proc = subprocess.Popen([str(spark_home() / "bin" / "spark-class"), *args], env=env, stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=work_dir)
    return name, proc, log_path


def start_cluster(
    workers: int = 2,
    cores: int = 1,
    memory: str = "1g",
    *,
    work_dir: Path | None = None,
    python: str | None = None,
    daemon_memory: str = "256m",
    timeout_s: float = 180.0,
) -> StandaloneCluster:
    """Start a master and `workers` workers (each `cores` cores, `memory` for executors) and wait until
    all workers have registered. Raises ClusterStartError with the daemon's log tail when one does not."""
    if workers < 1 or cores < 1:
        raise ValueError(f"a cluster needs workers >= 1 and cores >= 1; got workers={workers}, cores={cores}")
    t0 = time.monotonic()
    own = work_dir is None
    work_dir = Path(work_dir or tempfile.mkdtemp(prefix="wattflow-spark-cluster-"))
    (work_dir / "conf").mkdir(parents=True, exist_ok=True)
    python = python or sys.executable
    env = _environment(spark_home(), work_dir, python, daemon_memory)
    port, ui_port = free_port(), free_port()
    master_url = f"spark://{LOOPBACK}:{port}"
    cluster = StandaloneCluster(master_url=master_url, web_ui_url=f"http://{LOOPBACK}:{ui_port}", workers=workers,
                                cores=cores, memory=memory, work_dir=work_dir, python=python, _own_work_dir=own)
    with _RUNNING_LOCK:
        _RUNNING.add(cluster)
    try:
        cluster._procs.append(_spawn("master", [MASTER_CLASS, "--host", LOOPBACK, "--port", str(port),
                                                "--webui-port", str(ui_port)], env, work_dir))
        for i in range(workers):
            worker_dir = work_dir / f"worker-{i}"
            worker_dir.mkdir(exist_ok=True)
            cluster._procs.append(_spawn(f"worker-{i}", [
                WORKER_CLASS, master_url, "--host", LOOPBACK, "--port", str(free_port()),
                "--webui-port", str(free_port()), "--cores", str(cores), "--memory", memory,
                "--work-dir", str(worker_dir)], env, work_dir))
        deadline = time.monotonic() + timeout_s
        while cluster.alive_workers() < workers:
            for name, proc, log_path in cluster._procs:
                if proc.poll() is not None:
                    raise ClusterStartError(f"Spark {name} exited with code {proc.returncode} while the cluster "
                                            f"started; its log ({log_path}):\n{_tail(log_path)}")
            if time.monotonic() > deadline:
                logs = "\n".join(f"--- {n}\n{_tail(p, 10)}" for n, _, p in cluster._procs)
                raise ClusterStartError(f"{cluster.alive_workers()} of {workers} Spark workers registered with "
                                        f"{master_url} within {timeout_s:.0f} s; logs:\n{logs}")
            time.sleep(0.5)
    except BaseException:
        cluster.stop(timeout_s=5)
        raise
    cluster.started_s = time.monotonic() - t0
    log.info("spark_cluster.started", master=master_url, workers=workers, cores=cores, memory=memory,
             seconds=round(cluster.started_s, 1))
    return cluster


@contextmanager
def standalone_cluster(workers: int = 2, cores: int = 1, memory: str = "1g", **kwargs) -> Iterator[StandaloneCluster]:
    """`start_cluster(...)` as a context manager that always stops the daemons."""
    cluster = start_cluster(workers, cores, memory, **kwargs)
    try:
        yield cluster
    finally:
        cluster.stop()


def main(argv: list[str] | None = None) -> int:
    """`python -m lakehouse.spark_cluster [--workers N]`: run a local cluster until Ctrl-C (demos, benches)."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cores", type=int, default=1)
    parser.add_argument("--memory", default="1g")
    args = parser.parse_args(argv)
    with standalone_cluster(args.workers, args.cores, args.memory) as cluster:
        print(f"{cluster.master_url} (web UI {cluster.web_ui_url}); {args.workers} worker(s) in "
              f"{cluster.started_s:.1f} s; Ctrl-C stops it", flush=True)
        try:
            signal.pause()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
