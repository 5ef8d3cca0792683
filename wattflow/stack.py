"""`make up` / `make down`: the long-running local stack, each part a background process.

Airflow (its API server with the UI, scheduler, DAG processor and triggerer, each a process of its own)
on the settings' metadata DB, the MLflow UI on the tracking store, the TF-Serving-compatible server (gRPC and
REST), the facility managers' dashboard, the Data Docs (static HTML) over HTTP, and a Kafka 4 broker (KRaft, from
the jar cache) for the sensor stream. Every one listens where its setting says, 127.0.0.1 unless
told otherwise (airflow.api_host, the host of mlflow_ui_url, serving.host, dashboard.host). Logs and pid
files live under $WATTFLOW_HOME/run.

`make down` stops everything `make up` started, grandchildren included: each service starts as a session
leader, and `down` signals every process in those sessions, their descendants, and every process carrying
the home's marker variable in its environment (the MLflow UI starts job consumers in sessions of their own,
which outlive their parent's session otherwise).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from wattflow.airflow_env import airflow_environment
from wattflow.settings import Settings, get_settings

# Set in every service's environment to the home's run folder: what `down` looks for.
STACK_MARKER = "WATTFLOW_STACK_RUN_DIR"
STOP_GRACE_S = 15.0


@dataclass(frozen=True)
class Service:
    name: str
    argv: list[str]
    env: dict[str, str]
    url: str  # where a person (or a test) opens it


def _bin(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


def run_dir(settings: Settings) -> Path:
    return settings.home.resolve() / "run"


def services(settings: Settings) -> list[Service]:
    ui = urlsplit(settings.mlflow_ui_url)
    docs = urlsplit(settings.data_docs_url)
    config = settings.model_base_path / "models.config"
    af = settings.airflow
    serving = settings.serving
    airflow_url = f"http://{_connect_host(af.api_host)}:{af.api_port}"
    airflow_env = {
        **airflow_environment(settings), "AIRFLOW__API__HOST": af.api_host, "AIRFLOW__API__PORT": str(af.api_port),
        # Task processes report to the API server's execution API: where this one listens.
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{airflow_url}/execution/",
        # One worker: uvicorn's supervisor of several restarts each one slower to start than its health
        # check, which a busy 2-core machine makes a loop.
        "AIRFLOW__API__WORKERS": "1",
    }
    # Airflow's components one by one rather than `airflow standalone`: the scheduler and the triggerer
    # would each start a log server bound to every interface (Airflow hard-codes the host); with the
    # LocalExecutor on one machine the API server reads task logs from the files instead.
    return [
        Service("airflow-api", [_bin("airflow"), "api-server"], airflow_env, airflow_url),
        Service("airflow-scheduler", [_bin("airflow"), "scheduler", "--skip-serve-logs"], airflow_env, airflow_url),
        Service("airflow-dag-processor", [_bin("airflow"), "dag-processor"], airflow_env, airflow_url),
        Service("airflow-triggerer", [_bin("airflow"), "triggerer", "--skip-serve-logs"], airflow_env, airflow_url),
        Service("mlflow", [_bin("mlflow"), "ui", "--backend-store-uri", settings.tracking_uri,
                           "--default-artifact-root", settings.mlflow_artifacts_dir.as_uri(),
                           "--host", ui.hostname or "127.0.0.1", "--port", str(ui.port or 5000),
                           # One worker: a local UI has one user, and uvicorn's supervisor of several workers
                           # kills and restarts each one that starts slower than its health-check timeout,
                           # forever, on a busy 2-core machine.
                           "--workers", "1"], {},
                settings.mlflow_ui_url),
        # REST on as well as gRPC: the status URL `up` prints is the REST API's.
        Service("serving", [_bin("wattflow"), "serve", f"--model_config_file={config}", "--enable_batching",
                            f"--port={serving.grpc_port}", f"--rest_api_port={serving.rest_port}",
                            f"--host={serving.host}",
                            f"--model_config_file_poll_wait_seconds={max(1, int(serving.poll_wait_s))}"], {},
                f"http://{_connect_host(serving.host)}:{serving.rest_port}/v1/models/{settings.model.model_name}"),
        # The Great Expectations Data Docs are static HTML: served read-only from their folder.
        Service("data-docs", [sys.executable, "-m", "http.server", str(docs.port or 8090), "--bind",
                              docs.hostname or "127.0.0.1", "--directory", str(settings.data_docs_dir)], {},
                settings.data_docs_url.rstrip("/") + "/index.html"),
        Service("dashboard", [_bin("wattflow"), "dashboard", "--host", settings.dashboard.host,
                              "--port", str(settings.dashboard.port)], {},
                f"http://{_connect_host(settings.dashboard.host)}:{settings.dashboard.port}"),
        kafka_service(settings),
    ]


def kafka_service(settings: Settings) -> Service:
    """The sensor stream's local broker: Kafka 4 in KRaft mode from the jar cache (lakehouse/kafka_broker.py),
    on the first address of kafka.bootstrap_servers (loopback) with its data under $WATTFLOW_HOME/kafka; the
    settings' topics are created once it is up."""
    k = settings.kafka
    host, _, port = k.bootstrap_servers.split(",")[0].strip().rpartition(":")
    if _connect_host(host or "127.0.0.1") not in ("127.0.0.1", "localhost"):
        raise SystemExit(f"kafka.bootstrap_servers {k.bootstrap_servers!r}: `make up` runs a local broker on 127.0.0.1 only")
    argv = [sys.executable, "-m", "lakehouse.kafka_broker", "run", "--dir", str(settings.home.resolve() / "kafka"),
            "--port", port, "--controller-port", str(k.controller_port), "--topic", k.topic, "--topic", k.forecasts_topic]
    return Service("kafka", argv, {}, f"kafka://127.0.0.1:{port}")


def _connect_host(bind_host: str) -> str:
    """Where a local browser reaches a server bound to `bind_host` (all interfaces → loopback)."""
    return "127.0.0.1" if bind_host in ("0.0.0.0", "::", "") else bind_host


def child_environment(settings: Settings, extra: dict[str, str]) -> dict[str, str]:
    """The services' environment: this venv's bin first on PATH (`airflow standalone` starts its
    components by running `airflow` from PATH), the home, and the marker `down` finds them by."""
    venv_bin = str(Path(sys.executable).parent)
    path = os.environ.get("PATH", "")
    return {**os.environ, "PATH": f"{venv_bin}{os.pathsep}{path}" if path else venv_bin,
            "WATTFLOW_HOME": str(settings.home.resolve()), STACK_MARKER: str(run_dir(settings)), **extra}


def up(settings: Settings | None = None) -> dict[str, str]:
    """Start every service not already running; returns each service's URL."""
    settings = settings or get_settings()
    runs = run_dir(settings)
    runs.mkdir(parents=True, exist_ok=True)
    config = settings.model_base_path / "models.config"
    config.parent.mkdir(parents=True, exist_ok=True)
    settings.data_docs_dir.mkdir(parents=True, exist_ok=True)
    if not config.exists():
        config.write_text("model_config_list {\n}\n")
    urls: dict[str, str] = {}
    all_services = services(settings)
    _migrate_airflow(settings, next(x for x in all_services if x.name == "airflow-api"), runs)
    for service in all_services:
        urls[service.name] = service.url
        pid_file = runs / f"{service.name}.pid"
        if pid_file.exists() and _alive(int(pid_file.read_text())):
            print(f"{service.name:<10} already running (pid {pid_file.read_text().strip()})")
            continue
        with open(runs / f"{service.name}.log", "w") as log:
            proc = subprocess.Popen(service.argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                    env=child_environment(settings, service.env), cwd=settings.home.resolve())
        pid_file.write_text(str(proc.pid))
        print(f"{service.name:<10} started (pid {proc.pid}), log {runs / f'{service.name}.log'}")
    password_file = settings.airflow_home / "simple_auth_manager_passwords.json.generated"
    print(f"\nAirflow UI   {urls['airflow-api']}  (user admin; password in {password_file} once Airflow has started)")
    print(f"MLflow UI    {urls['mlflow']}")
    print(f"Serving      gRPC {_connect_host(settings.serving.host)}:{settings.serving.grpc_port}, "
          f"REST {urls['serving']}")
    print(f"Data Docs    {urls['data-docs']}")
    print(f"Dashboard    {urls['dashboard']}")
    print(f"Kafka        {urls['kafka'].removeprefix('kafka://')} (topics {settings.kafka.topic}, {settings.kafka.forecasts_topic})")
    print("Stop with    make down")
    return urls


def _migrate_airflow(settings: Settings, api: Service, runs: Path) -> None:
    """`airflow db migrate` before the components start (what `airflow standalone` did first); a no-op on a
    home whose metadata DB is current."""
    with open(runs / "airflow-migrate.log", "w") as log:
        done = subprocess.run([_bin("airflow"), "db", "migrate"], stdout=log, stderr=subprocess.STDOUT,
                              env=child_environment(settings, api.env), cwd=settings.home.resolve(), check=False)
    if done.returncode != 0:
        raise SystemExit(f"airflow db migrate failed ({done.returncode}): see {runs / 'airflow-migrate.log'}")


def stack_processes(settings: Settings, leaders: set[int] | None = None) -> list[int]:
    """Pids of every process of this home's stack: those in a service's session (each service starts as a
    session leader, and its children stay in its session unless they start their own), descendants of the
    services, and any process carrying the home's marker in its environment (job consumers that started a
    session of their own and whose parent has gone). The environment alone is not enough: processes that
    set their title (Airflow's components, gunicorn) overwrite the environment /proc shows."""
    runs = run_dir(settings)
    if leaders is None:
        leaders = {int(f.read_text()) for f in runs.glob("*.pid")} if runs.exists() else set()
    marker = f"{STACK_MARKER}={runs}".encode()
    table: dict[int, tuple[int, int]] = {}  # pid -> (parent pid, session id)
    found: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        pid = int(entry.name)
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            table[pid] = (int(fields[1]), int(fields[3]))
            if marker in (entry / "environ").read_bytes().split(b"\0"):
                found.add(pid)
        except (OSError, IndexError, ValueError):  # gone meanwhile, or another user's
            continue
    found |= {pid for pid, (_, session) in table.items() if session in leaders}
    found |= {pid for pid in leaders if pid in table}
    # Descendants of anything found so far (a child that started its own session, while its parent lives).
    children: dict[int, list[int]] = {}
    for pid, (parent, _) in table.items():
        children.setdefault(parent, []).append(pid)
    todo = list(found)
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return sorted(p for p in found if _alive(p))


def down(settings: Settings | None = None, grace_s: float = STOP_GRACE_S) -> list[int]:
    """Stop every process of the stack: SIGTERM, then SIGKILL after `grace_s`. Returns the pids stopped."""
    settings = settings or get_settings()
    runs = run_dir(settings)
    leaders = {}
    for pid_file in sorted(runs.glob("*.pid")) if runs.exists() else []:
        leaders[int(pid_file.read_text())] = pid_file.stem
    pids = stack_processes(settings, set(leaders))
    for pid in pids:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.2)
    for pid in pids:
        if _alive(pid):
            _signal(pid, signal.SIGKILL)
    # The pid files go only now: a `down` interrupted before this point can be run again.
    for name in leaders.values():
        (runs / f"{name}.pid").unlink(missing_ok=True)
    for pid, name in leaders.items():
        print(f"{name:<10} stopped (pid {pid})")
    others = len([p for p in pids if p not in leaders])
    if others:
        print(f"           and {others} process(es) they started")
    return pids


def _signal(pid: int, sig: signal.Signals) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    # A zombie (exited, not yet reaped by its parent) holds its pid but runs nothing.
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    commands = {"up": up, "down": down}
    if len(args) != 1 or args[0] not in commands:
        print("usage: python -m wattflow.stack up|down", file=sys.stderr)
        return 2
    commands[args[0]]()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
