"""docker-compose.yaml checked without a Docker engine: schema, cross-references, secrets, configs.

The model is loaded the way `docker compose` loads it (anchors, merge keys, `${VAR}` interpolation
from .env.example with every secret filled by a placeholder) and validated against the Compose
Specification's JSON schema (vendored: tests/fixtures/compose-spec.json).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.compose_model import (
    InterpolationError,
    interpolate,
    load_compose,
    mounts,
    parse_env_file,
    published_ports,
    references,
    strings,
)
from wattflow.settings import Settings

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yaml"
ENV_EXAMPLE = REPO / ".env.example"
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|FERNET")


def _raw() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def _references() -> list:
    # Values only: compose interpolates values, not comments.
    return [ref for text in strings(_raw()) for ref in references(text)]


def _required_vars() -> set[str]:
    return {ref.name for ref in _references() if ref.required}


def _filled_env() -> dict[str, str]:
    """.env.example as an operator would fill it: every empty (secret) value set."""
    env = parse_env_file(ENV_EXAMPLE)
    return {name: value or f"placeholder-{name.lower()}" for name, value in env.items()}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose(COMPOSE, _filled_env())


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["services"]


# ------------------------------------------------------------------ the interpolation reader itself


def test_interpolation_follows_compose_rules() -> None:
    env = {"SET": "x", "EMPTY": ""}
    assert interpolate("${SET:-d} ${EMPTY:-d} ${EMPTY-d} ${UNSET-d} $$HOME $SET", env) == "x d  d $HOME x"
    assert interpolate("${SET:+alt}${EMPTY:+alt}", env) == "alt"
    with pytest.raises(InterpolationError, match="EMPTY: set it"):
        interpolate("${EMPTY:?set it}", env)
    assert [r.name for r in references("$$SYS ${A:?} $B ${C:-1}")] == ["A", "B", "C"]


# ------------------------------------------------------------------ schema and variables


def test_compose_validates_against_the_compose_spec_schema(compose: dict[str, Any]) -> None:
    schema = json.loads((REPO / "tests" / "fixtures" / "compose-spec.json").read_text())
    validator = jsonschema.Draft7Validator(schema)
    errors = sorted(validator.iter_errors(compose), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors[:10])


def test_schema_check_catches_a_broken_file(compose: dict[str, Any]) -> None:
    schema = json.loads((REPO / "tests" / "fixtures" / "compose-spec.json").read_text())
    broken = json.loads(json.dumps(compose))
    broken["services"]["mlflow"]["depends_on"]["postgres"]["condition"] = "service_ready"
    broken["services"]["redis"]["restart_policy"] = "always"
    messages = [e.message for e in jsonschema.Draft7Validator(schema).iter_errors(broken)]
    assert len(messages) == 2 and any("restart_policy" in m for m in messages), messages


def test_every_variable_is_documented_in_env_example() -> None:
    documented = parse_env_file(ENV_EXAMPLE)
    used = {ref.name for ref in _references()}
    assert used - documented.keys() == set(), "variables used by compose but missing in .env.example"
    assert documented.keys() - used == set(), ".env.example variables compose never reads"


def test_compose_refuses_to_start_without_secrets() -> None:
    env = parse_env_file(ENV_EXAMPLE)
    with pytest.raises(InterpolationError):
        load_compose(COMPOSE, env)  # .env.example as committed: secrets empty


def test_no_secret_is_committed() -> None:
    env = parse_env_file(ENV_EXAMPLE)
    required = _required_vars()
    secrets_in_example = {name for name in env if SECRET_NAME.search(name) and not name.endswith("_USERNAME")}
    assert secrets_in_example <= required, "a secret with a default would start the stack with a known value"
    assert {name: env[name] for name in required if env[name]} == {}, "required secrets must be empty"
    # Every secret-looking environment entry and every credential inside a URL comes from ${VAR:?}.
    raw_text = COMPOSE.read_text()
    for name, value in re.findall(r"^\s+([A-Z][A-Z0-9_]*):\s*(.+)$", raw_text, flags=re.M):
        if SECRET_NAME.search(name) and "_FILE" not in name and "_USERNAME" not in name:
            refs = list(references(value))
            assert refs and all(r.required for r in refs), f"{name}: {value}"
    for credential in re.findall(r"://[A-Za-z0-9_-]*:([^@\s]+)@", raw_text):
        refs = list(references(credential))
        assert refs and all(r.required for r in refs), f"URL credential {credential!r} is not a required variable"


# ------------------------------------------------------------------ cross-references


def test_services_cover_the_platform(services: dict[str, Any]) -> None:
    expected = {
        "postgres", "redis", "minio", "minio-init", "mlflow", "influxdb", "mosquitto", "kafka", "kafka-init", "tf-serving",
        "serving-init", "spark-master", "spark-worker", "prometheus", "grafana", "dashboard", "airflow-init",
        "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer", "airflow-worker", "marquez",
    }  # fmt: skip
    assert set(services) == expected


def test_platform_sends_lineage_to_marquez(services: dict[str, Any]) -> None:
    """Every platform container's steps post their OpenLineage events to the Marquez service, which keeps
    them in its own database on the shared PostgreSQL."""
    assert services["airflow-worker"]["environment"]["WATTFLOW_LINEAGE__URL"] == "http://marquez:5000"
    marquez = services["marquez"]["environment"]
    assert (marquez["POSTGRES_HOST"], marquez["POSTGRES_DB"], marquez["POSTGRES_USER"]) == ("postgres", "marquez", "marquez")
    assert "create marquez" in (REPO / "infra" / "postgres" / "init-databases.sh").read_text()


def test_every_service_has_a_health_check(services: dict[str, Any]) -> None:
    for name, service in services.items():
        check = service.get("healthcheck")
        assert check and not check.get("disable") and check.get("test"), name
        assert check["test"][0] in ("CMD", "CMD-SHELL"), name


def test_every_image_is_pinned_to_a_tag(services: dict[str, Any]) -> None:
    for name, service in services.items():
        image = service.get("image")
        assert image, f"{name} has no image name (built images need one with a tag too)"
        repository, _, tag = image.rpartition(":")
        assert repository and "/" not in tag and tag and tag != "latest", f"{name}: {image}"


def test_depends_on_targets_exist_and_one_shots_are_awaited_correctly(services: dict[str, Any]) -> None:
    one_shots = {name for name, s in services.items() if s.get("restart") == "no"}
    assert one_shots == {"minio-init", "serving-init", "airflow-init", "kafka-init"}
    for name, service in services.items():
        for target, spec in service.get("depends_on", {}).items():
            assert target in services, f"{name} depends on unknown service {target}"
            condition = spec["condition"]
            if target in one_shots:
                assert condition == "service_completed_successfully", f"{name} -> {target}"
            else:
                assert condition in ("service_healthy", "service_started"), f"{name} -> {target}"


def test_named_volumes_are_declared_and_used(compose: dict[str, Any], services: dict[str, Any]) -> None:
    all_mounts = [m for name, s in services.items() for m in mounts(name, s)]
    named = {m.source for m in all_mounts if m.kind == "volume"}
    assert named <= set(compose["volumes"]), named - set(compose["volumes"])
    assert set(compose["volumes"]) <= named, "declared but never mounted"
    for service in services.values():
        for network in service.get("networks", []):
            assert network in compose.get("networks", {}), network


def test_host_paths_env_files_and_build_contexts_exist(services: dict[str, Any]) -> None:
    for name, service in services.items():
        for mount in mounts(name, service):
            if mount.kind == "bind":
                assert (REPO / mount.source).exists(), f"{name}: {mount.source}"
        for env_file in service.get("env_file", []):
            path = env_file["path"] if isinstance(env_file, dict) else env_file
            assert (REPO / path).exists(), f"{name}: env_file {path}"
        if build := service.get("build"):
            assert (REPO / build["context"] / build["dockerfile"]).is_file(), name
    # Scripts run by the containers must be executable in the checkout (bind mounts keep the mode).
    for script in ("infra/postgres/init-databases.sh", "infra/influxdb/create-buckets.sh", "infra/mlflow/entrypoint.sh"):
        assert (REPO / script).stat().st_mode & 0o111, script


def test_no_host_port_is_published_twice(services: dict[str, Any]) -> None:
    ports = [p for name, s in services.items() for p in published_ports(name, s)]
    clashes = Counter((p.host_port, p.protocol) for p in ports)
    assert [key for key, count in clashes.items() if count > 1] == []
    assert {p.service: p.host_port for p in ports if p.container_port == 8080} == {
        "airflow-apiserver": 8080,
        "spark-master": 8088,
    }
    assert all(p.host_ip == "127.0.0.1" for p in ports), "the default binding is loopback"


# ------------------------------------------------------------------ service wiring


def test_airflow_runs_celery_on_postgresql_with_auth(services: dict[str, Any]) -> None:
    env = services["airflow-scheduler"]["environment"]
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://airflow:placeholder-")
    assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://:placeholder-redis_password@redis:6379/")
    assert env["AIRFLOW__CORE__AUTH_MANAGER"].endswith("SimpleAuthManager")
    assert env["AIRFLOW__API_AUTH__JWT_SECRET"] == "placeholder-airflow_jwt_secret"
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/"
    commands = {name: services[name]["command"] for name in services if name.startswith("airflow-") and name != "airflow-init"}
    assert commands == {
        "airflow-apiserver": ["airflow", "api-server"],
        "airflow-scheduler": ["airflow", "scheduler"],
        "airflow-dag-processor": ["airflow", "dag-processor"],
        "airflow-triggerer": ["airflow", "triggerer"],
        "airflow-worker": ["airflow", "celery", "worker"],
    }
    # The same deployment through wattflow's settings (wattflow.airflow_env) agrees with Airflow's own.
    settings = Settings(airflow={
        "database_url": env["WATTFLOW_AIRFLOW__DATABASE_URL"], "executor": env["WATTFLOW_AIRFLOW__EXECUTOR"],
        "celery_broker_url": env["WATTFLOW_AIRFLOW__CELERY_BROKER_URL"], "dags_folder": env["WATTFLOW_AIRFLOW__DAGS_FOLDER"],
    })  # fmt: skip
    from wattflow.airflow_env import airflow_environment

    derived = airflow_environment(settings)
    for key in ("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "AIRFLOW__CORE__EXECUTOR", "AIRFLOW__CELERY__BROKER_URL", "AIRFLOW__CORE__DAGS_FOLDER"):
        assert derived[key] == env[key], key


def test_mlflow_server_uses_postgresql_s3_and_basic_auth(services: dict[str, Any]) -> None:
    env = services["mlflow"]["environment"]
    assert env["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql+psycopg2://mlflow:") and env[
        "MLFLOW_BACKEND_STORE_URI"
    ].endswith("@postgres:5432/mlflow")
    assert env["MLFLOW_AUTH_DATABASE_URI"].endswith("@postgres:5432/mlflow_auth")
    assert env["MLFLOW_ARTIFACTS_DESTINATION"] == "s3://wattflow-mlflow/artifacts"
    assert env["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"
    assert services["mlflow"]["entrypoint"][-1] == "/usr/local/bin/mlflow-entrypoint.sh"
    entrypoint = (REPO / "infra" / "mlflow" / "entrypoint.sh").read_text()
    assert "--app-name basic-auth" in entrypoint and "--artifacts-destination" in entrypoint
    # Both databases are created by the postgres init script.
    init = (REPO / "infra" / "postgres" / "init-databases.sh").read_text()
    assert "create airflow " in init and "create mlflow \"$MLFLOW_DB_PASSWORD\" mlflow mlflow_auth" in init
    platform = services["airflow-worker"]["environment"]
    assert platform["WATTFLOW_MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert platform["MLFLOW_TRACKING_PASSWORD"] == "placeholder-mlflow_admin_password"


def test_tf_serving_mounts_models_batching_and_monitoring(services: dict[str, Any]) -> None:
    serving = services["tf-serving"]
    args = dict(a.removeprefix("--").split("=", 1) for a in serving["command"])
    targets = {m.target: m for m in mounts("tf-serving", serving)}
    for flag in ("model_config_file", "batching_parameters_file", "monitoring_config_file"):
        path = args[flag]
        assert any(path.startswith(t) for t in targets), f"--{flag}={path} is not under a mount"
    assert args["enable_batching"] == "true"
    # Model base path: the shared WATTFLOW_HOME volume, mounted where the platform containers mount it.
    assert targets["/wattflow"].source == "wattflow-home"
    assert services["airflow-worker"]["environment"]["WATTFLOW_HOME"] == "/wattflow"
    assert args["model_config_file"] == "/wattflow/models/models.config"
    model_config = (REPO / "infra" / "serving" / "models.config").read_text()
    assert f'name: "{Settings().model.model_name}"' in model_config
    assert f'base_path: "/wattflow/models/{Settings().model.model_name}"' in model_config
    monitoring = (REPO / "infra" / "serving" / "monitoring.config").read_text()
    assert 'path: "/monitoring/prometheus/metrics"' in monitoring
    batching = (REPO / "infra" / "serving" / "batching.config").read_text()
    for field in ("max_batch_size", "batch_timeout_micros", "num_batch_threads", "max_enqueued_batches"):
        assert re.search(rf"^{field} {{ value: \d+ }}$", batching, flags=re.M), field


def test_prometheus_scrapes_tf_serving(services: dict[str, Any]) -> None:
    config = yaml.safe_load((REPO / "infra" / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    serving = jobs["tf-serving"]
    assert serving["metrics_path"] == "/monitoring/prometheus/metrics"
    host, port = serving["static_configs"][0]["targets"][0].split(":")
    assert host in services and f"--rest_api_port={port}" in services[host]["command"]


def test_grafana_datasources_and_dashboards_line_up(services: dict[str, Any]) -> None:
    provisioning = REPO / "infra" / "grafana" / "provisioning"
    datasources = yaml.safe_load((provisioning / "datasources" / "datasources.yaml").read_text())["datasources"]
    by_uid = {d["uid"]: d for d in datasources}
    assert {d["type"] for d in datasources} == {"influxdb", "prometheus"}
    for source in datasources:
        host = source["url"].split("//")[1].split(":")[0]
        assert host in services, source["url"]
    # ${VAR} in provisioning files is read from Grafana's environment.
    grafana_env = services["grafana"]["environment"]
    for text in strings(datasources):
        for ref in references(text):
            assert ref.name in grafana_env, ref.name
    dashboards = {p.stem: json.loads(p.read_text()) for p in (REPO / "infra" / "grafana" / "dashboards").glob("*.json")}
    assert set(dashboards) == {"energy-forecast", "serving"}
    for dashboard in dashboards.values():
        for panel in dashboard["panels"]:
            for target in panel["targets"]:
                assert target["datasource"]["uid"] in by_uid
    influx = Settings().influx
    energy_queries = " ".join(t["query"] for p in dashboards["energy-forecast"]["panels"] for t in p["targets"])
    assert f'r._measurement == "{influx.forecast_measurement}"' in energy_queries
    assert f'r._field == "{influx.value_field}"' in energy_queries and '"energy"' in energy_queries
    serving_exprs = " ".join(t["expr"] for p in dashboards["serving"]["panels"] for t in p["targets"])
    assert ":tensorflow:serving:request_count" in serving_exprs
    assert ":tensorflow:serving:request_latency_bucket" in serving_exprs
    mounted = {m.target: m.source for m in mounts("grafana", services["grafana"])}
    assert mounted["/etc/grafana/provisioning"] == "./infra/grafana/provisioning"
    provider = yaml.safe_load((provisioning / "dashboards" / "dashboards.yaml").read_text())["providers"][0]
    assert mounted[provider["options"]["path"]] == "./infra/grafana/dashboards"


def test_platform_dockerfile_installs_from_the_lock() -> None:
    dockerfile = (REPO / "infra" / "Dockerfile").read_text()
    assert "uv pip sync" in dockerfile and "requirements.lock" in dockerfile
    for source in re.findall(r"^COPY (?:--chown=\S+ )?(.+) \S+$", dockerfile, flags=re.M):
        for path in source.split():
            assert (REPO / path).exists(), path
    base = re.search(r"^FROM (\S+)", dockerfile, flags=re.M)[1]
    assert ":" in base and not base.endswith(":latest")


def test_kafka_is_kraft_with_the_settings_topics_and_the_platform_points_at_it(services: dict[str, Any]) -> None:
    """One KRaft node (no ZooKeeper), the topics the settings name created by kafka-init with the settings'
    partition count, and every platform container's bootstrap address is the broker's internal listener."""
    from wattflow.settings import KafkaSettings

    kafka = services["kafka"]
    env = {k: str(v) for k, v in kafka["environment"].items()}
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller" and "ZOOKEEPER" not in " ".join(env)
    assert kafka["image"].startswith("apache/kafka:4.")
    defaults = KafkaSettings()
    platform = services["airflow-worker"]["environment"]
    assert platform["WATTFLOW_KAFKA__BOOTSTRAP_SERVERS"] == "kafka:9092"
    assert "INTERNAL://kafka:9092" in env["KAFKA_ADVERTISED_LISTENERS"]
    topics = (platform["WATTFLOW_KAFKA__TOPIC"], platform["WATTFLOW_KAFKA__FORECASTS_TOPIC"])
    assert topics == (defaults.topic, defaults.forecasts_topic)
    script = kafka["image"] == services["kafka-init"]["image"] and " ".join(services["kafka-init"]["command"])
    for topic in topics:
        assert f"--if-not-exists --topic {topic} --partitions {defaults.partitions}" in script
    assert services["kafka-init"]["depends_on"] == {"kafka": {"condition": "service_healthy"}}
