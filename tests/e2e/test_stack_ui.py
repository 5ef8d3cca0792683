"""`make up` as users meet it, in a browser: on the session's demo home (tests/e2e/conftest.py) the stack
starts (`python -m wattflow.stack up`, what `make up` runs), and headless Chromium (Debian's, through
Playwright; no browser is downloaded) checks each UI with the demo's data:

- Airflow: logs in, lists the platform's DAGs with their docs, and a DAG run's task shows the MLflow-run and
  Data-Docs extra links (plugins/wattflow_links.py), which open;
- MLflow: the demo's training runs with their metrics, and the registry's `champion` alias;
- serving: the REST status URL that `make up` printed answers, with the champion AVAILABLE;
- the dashboard loads with the demo's buildings.

Screenshots go to test-artifacts/stack-*.png. Then `python -m wattflow.stack down` must leave no process of
the stack behind.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from tests.servers import require_chromium

REPO = Path(__file__).resolve().parents[2]
# Meant for one xdist worker with the other suites on the demo home (tests/conftest.py says why not yet).
pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.xdist_group("demo")]

PLATFORM_DAGS = ("ingest_sensors", "ingest_weather", "curate_and_validate", "train_model", "deploy_model",
                 "forecast", "monitor")
# On a loaded 2-core machine Airflow needs about a minute to migrate, start its four components
# and parse the DAGs; TensorFlow's import dominates the serving server's start.
READY_TIMEOUT_S = 240
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


@dataclass
class Stack:
    home: Path
    env: dict[str, str]
    urls: dict[str, str]
    stdout: str


def _settings(env: dict[str, str]):
    from wattflow.settings import Settings

    # The settings `make up` read: the environment first, then the home's settings.env (the demo's world).
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        from wattflow.settings import reset_settings, get_settings

        reset_settings()
        return get_settings()
    finally:
        os.environ.clear()
        os.environ.update(saved)
        reset_settings()


def _wait(url: str, ok, timeout_s: float, log: Path, auth=None) -> requests.Response:
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            response = requests.get(url, timeout=5, auth=auth)
            if ok(response):
                return response
            last = f"HTTP {response.status_code}: {response.text[:300]}"
        except requests.RequestException as exc:
            last = str(exc)
        time.sleep(1)
    tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:]) if log.exists() else ""
    raise AssertionError(f"{url} not ready after {timeout_s:.0f} s ({last}); {log.name}:\n{tail}")


def _run_stack(command: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "wattflow.stack", command], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)


@pytest.fixture(scope="module")
def stack(demo_home) -> Iterator[Stack]:
    home, demo_env, _ = demo_home
    env = {**demo_env,
           # The stack is looked at, not run: no scheduled DAG run may change the demo's home under the
           # suites that read it. Asset-triggered and manual runs still work.
           "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False"}
    # PATH without the venv: `make up` must not depend on the caller's PATH to find `airflow`.
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                                  if Path(p).resolve() != Path(sys.executable).parent.resolve()) or "/usr/bin:/bin"
    started = _run_stack("up", env)
    assert started.returncode == 0, started.stderr[-3000:]
    printed = dict(re.findall(r"^(Airflow UI|MLflow UI|Data Docs|Dashboard)\s+(\S+)", started.stdout, re.M))
    rest = re.search(r"REST (http://\S+)", started.stdout)
    assert rest and set(printed) == {"Airflow UI", "MLflow UI", "Data Docs", "Dashboard"}, started.stdout
    urls = {"airflow": printed["Airflow UI"], "mlflow": printed["MLflow UI"], "data-docs": printed["Data Docs"],
            "dashboard": printed["Dashboard"], "serving": rest.group(1)}
    stack = Stack(home, env, urls, started.stdout)
    try:
        yield stack
    finally:
        _run_stack("down", env)  # a safety net: the last test asserts what `down` did


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    executable = require_chromium()
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.set_default_timeout(60_000)
    yield page
    context.close()


def test_every_service_listens_on_loopback_only(stack: Stack) -> None:
    for name, url in stack.urls.items():
        assert url.startswith("http://127.0.0.1:"), (name, url)
    run = stack.home / "run"
    _wait(stack.urls["airflow"] + "/api/v2/monitor/health", lambda r: r.status_code == 200
          and r.json()["scheduler"]["status"] == "healthy", READY_TIMEOUT_S, run / "airflow-scheduler.log")
    for name, url in stack.urls.items():
        if name != "serving":
            _wait(url, lambda r: r.status_code < 500, READY_TIMEOUT_S, run / f"{ {'airflow': 'airflow-api'}.get(name, name)}.log")
    listening = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True).stdout
    from wattflow.stack import stack_processes

    pids = set(stack_processes(_settings(stack.env)))
    sockets = [line for line in listening.splitlines() if any(f"pid={pid}," in line for pid in pids)]
    assert sockets, listening
    for line in sockets:
        local = line.split()[3]
        assert local.startswith(("127.0.0.1:", "[::1]:", "[::ffff:127.0.0.1]:")), f"a stack process listens beyond loopback: {line}"


def test_serving_rest_status_url_printed_by_make_up_answers(stack: Stack) -> None:
    report = json.loads((stack.home / "demo-report.json").read_text())
    champion = str(report["champions"][-1]["version"])
    response = _wait(stack.urls["serving"], lambda r: r.status_code == 200 and any(
        v["state"] == "AVAILABLE" for v in r.json()["model_version_status"]), READY_TIMEOUT_S,
        stack.home / "run" / "serving.log")
    available = {v["version"] for v in response.json()["model_version_status"] if v["state"] == "AVAILABLE"}
    assert champion in available, response.json()


def _login(page, base: str, password: str) -> None:
    page.goto(base + "/")
    page.get_by_label("Username").fill("admin")
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r"^(?!.*/auth/login).*$"))


def _latest_run(base: str, headers: dict[str, str], dag_id: str) -> str:
    runs = requests.get(f"{base}/api/v2/dags/{dag_id}/dagRuns", headers=headers,
                        params={"order_by": "-run_after", "limit": 1}, timeout=30).json()["dag_runs"]
    assert runs, f"the demo's {dag_id} runs are in Airflow's metadata DB"
    return runs[0]["dag_run_id"]


def test_airflow_ui_logs_in_lists_the_dags_with_docs_and_task_links_open(stack: Stack, page, artifacts_dir) -> None:
    base = stack.urls["airflow"]
    run = stack.home / "run"
    _wait(base + "/api/v2/monitor/health", lambda r: r.status_code == 200, READY_TIMEOUT_S, run / "airflow-api.log")
    settings = _settings(stack.env)
    passwords = settings.airflow_home / "simple_auth_manager_passwords.json.generated"
    password = json.loads(passwords.read_text())["admin"]

    _login(page, base, password)
    page.goto(base + "/dags")
    for dag_id in PLATFORM_DAGS:
        page.get_by_role("link", name=dag_id, exact=True).first.wait_for()
    page.screenshot(path=str(artifacts_dir / "stack-airflow-dags.png"), full_page=True)

    # Each DAG's docs (doc_md) open from its page.
    for dag_id, heading in (("train_model", "Train model"), ("curate_and_validate", "Curate and validate")):
        page.goto(f"{base}/dags/{dag_id}")
        page.get_by_role("button", name="Dag Docs").click()
        dialog = page.get_by_role("dialog")
        dialog.get_by_text(heading, exact=True).wait_for()
        assert "link opens" in dialog.inner_text(), dialog.inner_text()[:500]
        page.screenshot(path=str(artifacts_dir / f"stack-airflow-{dag_id}-docs.png"))
        page.keyboard.press("Escape")

    token = requests.post(base + "/auth/token", json={"username": "admin", "password": password}, timeout=30).json()
    headers = {"Authorization": f"Bearer {token['access_token']}"}
    links = {}
    for dag_id, task_id, link in (("train_model", "train_and_gate", "MLflow run"),
                                  ("curate_and_validate", "validate_and_curate", "Data Docs")):
        run_id = _latest_run(base, headers, dag_id)
        # Airflow 3 shows a task's extra links on its Details tab.
        page.goto(f"{base}/dags/{dag_id}/runs/{run_id}/tasks/{task_id}/details")
        page.get_by_text("Extra Links").wait_for()
        anchor = page.get_by_role("link", name=link, exact=True)
        anchor.wait_for()
        links[link] = anchor.get_attribute("href")
        page.screenshot(path=str(artifacts_dir / f"stack-airflow-{task_id}-links.png"))
    report = json.loads((stack.home / "demo-report.json").read_text())
    assert links["MLflow run"] == report["champions"][-1]["mlflow_run_url"], links
    assert links["MLflow run"].startswith(stack.urls["mlflow"] + "/#/experiments/"), links
    assert links["Data Docs"] == stack.urls["data-docs"], links  # served over HTTP by `make up`

    # They open: the run's page in the MLflow UI, the validation results in the Data Docs.
    page.goto(links["MLflow run"])
    page.get_by_text("backtest_cv_rmse").first.wait_for()
    page.screenshot(path=str(artifacts_dir / "stack-airflow-link-mlflow-run.png"))
    page.goto(links["Data Docs"])
    page.get_by_text(re.compile("Expectation Suite|Validation Results", re.I)).first.wait_for()
    page.screenshot(path=str(artifacts_dir / "stack-airflow-link-data-docs.png"))


def test_mlflow_ui_shows_the_demos_runs_metrics_and_champion_alias(stack: Stack, page, artifacts_dir) -> None:
    base = stack.urls["mlflow"]
    _wait(base + "/health", lambda r: r.status_code == 200, READY_TIMEOUT_S, stack.home / "run" / "mlflow.log")
    settings = _settings(stack.env)
    report = json.loads((stack.home / "demo-report.json").read_text())
    experiment = requests.get(f"{base}/api/2.0/mlflow/experiments/get-by-name",
                              params={"experiment_name": settings.model.experiment}, timeout=30).json()["experiment"]
    # Every training run of the demo is listed under the experiment.
    page.goto(f"{base}/#/experiments/{experiment['experiment_id']}/runs")
    for champion in report["champions"]:
        run_name = requests.get(f"{base}/api/2.0/mlflow/runs/get", params={"run_id": champion["run_id"]},
                                timeout=30).json()["run"]["info"]["run_name"]
        page.get_by_text(run_name, exact=True).first.wait_for()
    page.screenshot(path=str(artifacts_dir / "stack-mlflow-runs.png"))
    # The champion's run page with its backtest metrics, and their plots.
    champion = report["champions"][-1]
    page.goto(f"{base}/#/experiments/{experiment['experiment_id']}/runs/{champion['run_id']}")
    page.get_by_text("backtest_cv_rmse").first.wait_for()
    page.get_by_text("gold.features@v").first.wait_for()  # the dataset: the Delta table at its version
    page.screenshot(path=str(artifacts_dir / "stack-mlflow-run.png"))
    page.get_by_role("tab", name="Model metrics").click()
    page.get_by_text("backtest_cv_rmse").first.wait_for()
    page.screenshot(path=str(artifacts_dir / "stack-mlflow-run-plots.png"))
    # The registry: the model with its `champion` alias on the promoted version.
    page.goto(f"{base}/#/models/{settings.model.model_name}")
    page.get_by_text("champion").first.wait_for()
    page.screenshot(path=str(artifacts_dir / "stack-mlflow-registry.png"))


def test_dashboard_loads_with_the_demos_buildings(stack: Stack, page, artifacts_dir) -> None:
    base = stack.urls["dashboard"]
    _wait(base + "/", lambda r: r.status_code == 200, READY_TIMEOUT_S, stack.home / "run" / "dashboard.log")
    page.goto(base + "/")
    for building in ("b01", "b02"):
        page.locator(f"a[href='/building/{building}']").first.wait_for()
    page.locator(".js-plotly-plot").first.wait_for()
    page.screenshot(path=str(artifacts_dir / "stack-dashboard.png"), full_page=True)


def test_make_down_stops_everything_it_started(stack: Stack) -> None:
    from wattflow.stack import stack_processes

    settings = _settings(stack.env)
    running = stack_processes(settings)
    assert len(running) >= 7, running  # Airflow's four components, MLflow, serving, the dashboard, and children
    stopped = _run_stack("down", stack.env)
    assert stopped.returncode == 0, stopped.stderr[-2000:]
    assert stack_processes(settings) == []
    for name, url in stack.urls.items():
        with pytest.raises(requests.ConnectionError):
            requests.get(url, timeout=3)
