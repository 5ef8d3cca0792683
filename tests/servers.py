"""Private instances of the production backends, started from local binaries for tests.

Each server runs on a free port in its own temporary directory and is stopped by the fixture that
started it; nothing relies on a system service. Suites import these helpers (or use the fixtures in
``tests/integration/conftest.py``):

- :func:`start_postgres` — PostgreSQL 15 from Debian's ``postgresql`` package (``initdb`` + ``pg_ctl``),
  password-authenticated over TCP, with :meth:`PostgresServer.create_database` returning a URL to a
  fresh database (Airflow's and MLflow's metadata stores each get their own).
- :func:`start_s3` — moto's S3-compatible server (``ThreadedMotoServer``) with boto3 helpers.
- :func:`start_mlflow` — ``infra/mlflow/entrypoint.sh``, the same entrypoint the compose stack and the
  Kubernetes Deployment run, against the two servers above.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import requests

from wattflow.ports import free_port

REPO = Path(__file__).resolve().parents[1]
PG_BIN = Path(os.environ.get("WATTFLOW_PG_BIN", "/usr/lib/postgresql/15/bin"))
# initdb refuses to run as root; Debian's package creates this account.
PG_OS_USER = os.environ.get("WATTFLOW_PG_OS_USER", "postgres")


class ServerStartError(RuntimeError):
    """A test server did not come up; the message carries the tail of its log."""


class MissingTool(RuntimeError):
    """A program or cache a test needs is not on this machine. The message names it and the command that
    installs it; tests/conftest.py reports it as that test's failure in one line (no traceback, never a skip).
    """


# `make test` runs infra/bootstrap.sh, which installs all of these when it can (sudo when not root).
BOOTSTRAP_HINT = "`make bootstrap` installs it (or `sudo apt-get install -y --no-install-recommends {package}`)"


def require_program(name: str, package: str, *candidates: str) -> str:
    """The path of program `name` (PATH first, then the candidates), or MissingTool naming its Debian package."""
    found = shutil.which(name) or next((c for c in candidates if Path(c).is_file() and os.access(c, os.X_OK)), None)
    if found is None:
        raise MissingTool(f"{name} is not installed (Debian package {package}): " + BOOTSTRAP_HINT.format(package=package))
    return found


def require_chromium() -> str:
    """Debian's Chromium, which Playwright drives through executable_path (no browser is ever downloaded)."""
    return require_program("chromium", "chromium", "/usr/bin/chromium")




def _log_tail(path: Path, lines: int = 40) -> str:
    if not path.exists():
        return f"(no log at {path})"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


# ---------------------------------------------------------------- PostgreSQL


@dataclass
class PostgresServer:
    host: str
    port: int
    user: str
    password: str
    base_dir: Path
    run_as: str | None
    _databases: list[str] = field(default_factory=list)

    def url(self, database: str = "postgres", driver: str = "postgresql+psycopg2") -> str:
        return f"{driver}://{self.user}:{self.password}@{self.host}:{self.port}/{database}"

    def connect(self, database: str = "postgres"):  # -> psycopg2 connection
        import psycopg2

        conn = psycopg2.connect(
            host=self.host, port=self.port, user=self.user, password=self.password, dbname=database
        )
        conn.autocommit = True
        return conn

    def create_database(self, prefix: str = "db", driver: str = "postgresql+psycopg2") -> str:
        """Create an empty database with a unique name and return its SQLAlchemy URL."""
        name = f"{prefix}_{secrets.token_hex(4)}"
        # Not `with conn:` — psycopg2 opens a transaction there, and CREATE DATABASE refuses one.
        conn = self.connect()
        try:
            with conn.cursor() as cur:
                # The name is ours (prefix + hex), so quoting it as an identifier is enough.
                cur.execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()
        self._databases.append(name)
        return self.url(name, driver=driver)

    def stop(self) -> None:
        _run_pg(self.run_as, [str(PG_BIN / "pg_ctl"), "-D", str(self.base_dir / "data"), "-m", "fast", "-w", "stop"])


def _run_pg(run_as: str | None, argv: list[str]) -> subprocess.CompletedProcess[str]:
    if run_as:
        argv = ["runuser", "-u", run_as, "--", *argv]
    return subprocess.run(argv, capture_output=True, text=True, check=False)


def _pg_os_user() -> str:
    """The unprivileged account PostgreSQL runs as under root; Debian's package creates `postgres`."""
    try:
        pwd.getpwnam(PG_OS_USER)
    except KeyError:
        created = subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", PG_OS_USER],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if created.returncode != 0:
            raise ServerStartError(f"cannot create OS user {PG_OS_USER!r} for PostgreSQL: {created.stderr}") from None
    return PG_OS_USER


def start_postgres(user: str = "wattflow") -> PostgresServer:
    """Initialise and start a throwaway PostgreSQL cluster; call ``stop()`` (and remove base_dir) after."""
    if not (PG_BIN / "initdb").exists():
        raise MissingTool(f"PostgreSQL 15 is not installed (no {PG_BIN / 'initdb'}; Debian package postgresql): "
                          + BOOTSTRAP_HINT.format(package="postgresql"))
    run_as = _pg_os_user() if os.geteuid() == 0 else None
    # Not under pytest's tmp dir: that is private to root, and the server runs as PG_OS_USER.
    base_dir = Path(tempfile.mkdtemp(prefix="wattflow-pg-"))
    password = secrets.token_urlsafe(16)
    (base_dir / "pwfile").write_text(password + "\n")
    if run_as:
        entry = pwd.getpwnam(run_as)
        os.chown(base_dir, entry.pw_uid, entry.pw_gid)
        os.chown(base_dir / "pwfile", entry.pw_uid, entry.pw_gid)
    data = base_dir / "data"
    init = _run_pg(
        run_as,
        [
            str(PG_BIN / "initdb"), "-D", str(data), "-U", user, f"--pwfile={base_dir / 'pwfile'}",
            "--auth=scram-sha-256", "--encoding=UTF8", "--locale=C.UTF-8", "--no-sync",
        ],
    )  # fmt: skip
    if init.returncode != 0:
        raise ServerStartError(f"initdb failed ({init.returncode}):\n{init.stdout}\n{init.stderr}")
    port = free_port()
    # Durability off: a test cluster is thrown away, and fsync dominates migration time on a shared disk.
    options = (
        f"-p {port} -c listen_addresses=127.0.0.1 -k {base_dir} -c fsync=off "
        "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
    )
    log = base_dir / "postgres.log"
    started = _run_pg(
        run_as, [str(PG_BIN / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(log), "-w", "-t", "60", "start"]
    )
    if started.returncode != 0:
        raise ServerStartError(f"pg_ctl start failed:\n{started.stderr}\n{_log_tail(log)}")
    return PostgresServer("127.0.0.1", port, user, password, base_dir, run_as)


@contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    server = start_postgres()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.base_dir, ignore_errors=True)


# ---------------------------------------------------------------- S3 (moto server mode)


@dataclass(frozen=True)
class S3Endpoint:
    endpoint_url: str
    access_key_id: str
    secret_access_key: str
    region: str = "us-east-1"

    def client(self):  # -> botocore S3 client
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
            region_name=self.region,
        )

    def create_bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name

    def list_keys(self, bucket: str, prefix: str = "") -> list[str]:
        paginator = self.client().get_paginator("list_objects_v2")
        return [obj["Key"] for page in paginator.paginate(Bucket=bucket, Prefix=prefix) for obj in page.get("Contents", [])]

    def environment(self) -> dict[str, str]:
        """The variables boto3, MLflow (MLFLOW_S3_ENDPOINT_URL) and object stores read."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "MLFLOW_S3_ENDPOINT_URL": self.endpoint_url,
        }

    def delta_storage_options(self) -> dict[str, str]:
        """delta-rs object-store options for this endpoint (plain HTTP, path-style addressing)."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
            "AWS_REGION": self.region,
            "AWS_ALLOW_HTTP": "true",
            # Commits use S3 conditional writes (If-None-Match), which moto honours: two writers can never
            # both create the same log version. Never AWS_S3_ALLOW_UNSAFE_RENAME (settings refuse it).
            "conditional_put": "etag",
        }


@contextmanager
def s3_server() -> Iterator[S3Endpoint]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield S3Endpoint(f"http://{host}:{port}", "wattflow-test", secrets.token_hex(16))
    finally:
        server.stop()


# ---------------------------------------------------------------- MLflow tracking server


@dataclass(frozen=True)
class MlflowServer:
    url: str
    username: str
    password: str
    backend_store_uri: str
    artifacts_destination: str
    log: Path

    def environment(self) -> dict[str, str]:
        """What an MLflow client needs: the server, and basic-auth credentials (read by MLflow itself)."""
        return {
            "MLFLOW_TRACKING_URI": self.url,
            "MLFLOW_TRACKING_USERNAME": self.username,
            "MLFLOW_TRACKING_PASSWORD": self.password,
        }


def _wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServerStartError(f"server exited with {proc.returncode}:\n{_log_tail(log)}")
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.3)
    raise ServerStartError(f"{url} not healthy after {timeout_s:.0f} s:\n{_log_tail(log)}")


@contextmanager
def mlflow_server(
    backend_store_uri: str,
    auth_database_uri: str,
    artifacts_destination: str,
    s3: S3Endpoint,
    workdir: Path,
    timeout_s: float = 90.0,
) -> Iterator[MlflowServer]:
    """Run ``infra/mlflow/entrypoint.sh`` (basic auth, PostgreSQL stores, S3 artifacts) on a free port."""
    port = free_port()
    username, password = "wattflow-admin", secrets.token_urlsafe(16)
    env = {
        **os.environ,
        **s3.environment(),
        # The venv's mlflow, as the image's PATH would give it.
        "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
        "MLFLOW_BACKEND_STORE_URI": backend_store_uri,
        "MLFLOW_AUTH_DATABASE_URI": auth_database_uri,
        "MLFLOW_ARTIFACTS_DESTINATION": artifacts_destination,
        "MLFLOW_AUTH_ADMIN_USERNAME": username,
        "MLFLOW_AUTH_ADMIN_PASSWORD": password,
        "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16),
        "MLFLOW_HOST": "127.0.0.1",
        "MLFLOW_PORT": str(port),
        "MLFLOW_WORKERS": "1",
        "MLFLOW_AUTH_CONFIG_DIR": str(workdir),
    }
    log = workdir / "mlflow-server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            ["bash", str(REPO / "infra" / "mlflow" / "entrypoint.sh")],
            env=env, cwd=workdir, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_http(f"{url}/health", proc, log, timeout_s)
        yield MlflowServer(url, username, password, backend_store_uri, artifacts_destination, log)
    finally:
        _stop_process_group(proc)


def _stop_process_group(proc: subprocess.Popen[bytes], grace_s: float = 5.0) -> None:
    import signal

    if proc.poll() is not None:
        return
    # The entrypoint execs mlflow, which forks uvicorn workers: signal the whole (own) session.
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

