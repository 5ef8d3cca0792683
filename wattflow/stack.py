"""`make up` / `make down`: the long-running local stack, each part a background process.

Airflow (`airflow standalone`: API server with the UI, scheduler, DAG processor, triggerer) on the
settings' metadata DB, the MLflow UI on the tracking store, the TF-Serving-compatible server, and the
facility managers' dashboard. Logs and pid files live under $WATTFLOW_HOME/run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from wattflow.airflow_env import airflow_environment
from wattflow.settings import Settings, get_settings


def _bin(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


def services(settings: Settings) -> dict[str, tuple[list[str], dict[str, str]]]:
    from urllib.parse import urlsplit

    ui = urlsplit(settings.mlflow_ui_url)
    config = settings.model_base_path / "models.config"
    return {
        "airflow": ([_bin("airflow"), "standalone"], {**airflow_environment(settings), "AIRFLOW__API__PORT": "8080"}),
        "mlflow": ([_bin("mlflow"), "ui", "--backend-store-uri", settings.tracking_uri,
                    "--default-artifact-root", settings.mlflow_artifacts_dir.as_uri(),
                    "--host", ui.hostname or "127.0.0.1", "--port", str(ui.port or 5000)], {}),
        "serving": ([_bin("wattflow"), "serve", f"--model_config_file={config}", "--enable_batching"], {}),
        "dashboard": ([_bin("wattflow"), "dashboard", "--port", "8050"], {}),
    }


def up(settings: Settings | None = None) -> None:
    settings = settings or get_settings()
    run_dir = settings.home.resolve() / "run"
    run_dir.mkdir(parents=True, exist_ok=True)
    config = settings.model_base_path / "models.config"
    config.parent.mkdir(parents=True, exist_ok=True)
    if not config.exists():
        config.write_text("model_config_list {\n}\n")
    for name, (argv, extra_env) in services(settings).items():
        pid_file = run_dir / f"{name}.pid"
        if pid_file.exists() and _alive(int(pid_file.read_text())):
            print(f"{name:<10} already running (pid {pid_file.read_text().strip()})")
            continue
        log = open(run_dir / f"{name}.log", "w")
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, "WATTFLOW_HOME": str(settings.home.resolve()), **extra_env})
        pid_file.write_text(str(proc.pid))
        print(f"{name:<10} started (pid {proc.pid}), log {run_dir / f'{name}.log'}")
    time.sleep(1)
    password_file = settings.airflow_home / "simple_auth_manager_passwords.json.generated"
    print("\nAirflow UI   http://localhost:8080  (user admin; password in "
          f"{password_file} once Airflow has started)")
    print(f"MLflow UI    {settings.mlflow_ui_url}")
    print(f"Serving      gRPC localhost:{settings.serving.grpc_port}, REST http://localhost:{settings.serving.rest_port}/v1/models/{settings.model.model_name}")
    print("Dashboard    http://localhost:8050")
    print("Stop with    make down")


def down(settings: Settings | None = None) -> None:
    settings = settings or get_settings()
    run_dir = settings.home.resolve() / "run"
    for pid_file in sorted(run_dir.glob("*.pid")) if run_dir.exists() else []:
        pid = int(pid_file.read_text())
        if _alive(pid):
            os.killpg(pid, signal.SIGTERM)
            print(f"{pid_file.stem:<10} stopped (pid {pid})")
        pid_file.unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False


if __name__ == "__main__":
    {"up": up, "down": down}[sys.argv[1]]()
