"""infra/k8s validated offline against the Kubernetes API schemas (kubernetes-validate), plus wiring."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from wattflow.settings import Settings

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "infra" / "k8s"
KUBERNETES_VERSION = "1.31.0"
NOT_MANIFESTS = {"kustomization.yaml", "airflow-values.yaml"}


def _manifest_files() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p.name not in NOT_MANIFESTS)


def _documents() -> list[tuple[str, dict[str, Any]]]:
    return [(p.name, doc) for p in _manifest_files() for doc in yaml.safe_load_all(p.read_text()) if doc]


def _by_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for _, doc in _documents() if doc["kind"] == kind}


def _spark_conf(name: str) -> dict[str, str]:
    conf = {}
    for line in (REPO / "infra" / "spark" / name).read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, value = line.split(None, 1)
            conf[key] = value.strip()
    return conf


@pytest.mark.parametrize("name, doc", _documents(), ids=lambda v: v if isinstance(v, str) else v["kind"])
def test_manifest_validates_against_the_kubernetes_schema(name: str, doc: dict[str, Any]) -> None:
    # strict: unknown fields (typos such as `replica:`) are errors too.
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    assert doc["metadata"].get("namespace", "wattflow") == "wattflow"


def test_strict_validation_rejects_a_typo() -> None:
    deployment = copy.deepcopy(_by_kind("Deployment")["tf-serving"])
    deployment["spec"]["replica"] = deployment["spec"].pop("replicas")
    with pytest.raises(kubernetes_validate.ValidationError, match="replica"):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == [p.name for p in _manifest_files()]


def test_the_platform_covers_serving_mlflow_dashboard_and_spark() -> None:
    kinds = {(doc["kind"], doc["metadata"]["name"]) for _, doc in _documents()}
    assert {
        ("Deployment", "tf-serving"), ("Service", "tf-serving"), ("HorizontalPodAutoscaler", "tf-serving"),
        ("ConfigMap", "tf-serving-config"), ("PersistentVolumeClaim", "wattflow-home"),
        ("Deployment", "mlflow"), ("Service", "mlflow"), ("Deployment", "dashboard"), ("Service", "dashboard"),
        ("ServiceAccount", "spark"), ("Role", "spark-driver"), ("RoleBinding", "spark-driver"),
    } <= kinds  # fmt: skip


def _containers(deployment: dict[str, Any]) -> list[dict[str, Any]]:
    spec = deployment["spec"]["template"]["spec"]
    return spec.get("initContainers", []) + spec["containers"]


def test_selectors_services_and_autoscaler_point_at_real_pods() -> None:
    deployments = {**_by_kind("Deployment"), **_by_kind("StatefulSet")}
    for name, deployment in deployments.items():
        selector = deployment["spec"]["selector"]["matchLabels"]
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= labels.items(), name
    for name, service in _by_kind("Service").items():
        targets = [d for d in deployments.values() if service["spec"]["selector"].items() <= d["spec"]["template"]["metadata"]["labels"].items()]
        assert len(targets) == 1, name
        port_names = {p["name"] for c in targets[0]["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in port_names, f"{name}: {port}"
    hpa = _by_kind("HorizontalPodAutoscaler")["tf-serving"]
    assert hpa["spec"]["scaleTargetRef"]["kind"] == "Deployment"
    assert hpa["spec"]["scaleTargetRef"]["name"] in deployments
    assert hpa["spec"]["minReplicas"] >= 2 and hpa["spec"]["maxReplicas"] > hpa["spec"]["minReplicas"]


def test_volumes_and_config_references_exist() -> None:
    config_maps, claims = _by_kind("ConfigMap"), _by_kind("PersistentVolumeClaim")
    for name, deployment in _by_kind("Deployment").items():
        volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"].get("volumes", [])}
        for volume in volumes.values():
            if "configMap" in volume:
                assert volume["configMap"]["name"] in config_maps, name
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims, name
        for container in _containers(deployment):
            for mount in container.get("volumeMounts", []):
                assert mount["name"] in volumes, f"{name}/{container['name']}: {mount['name']}"
            for source in container.get("envFrom", []):
                assert source["configMapRef"]["name"] in config_maps
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("configMapKeyRef")
                if ref:
                    assert ref["key"] in config_maps[ref["name"]]["data"], env["name"]


def test_every_secret_reference_is_documented() -> None:
    documented = (REPO / "docs" / "production.md").read_text()
    names: set[str] = set()
    for _, doc in _documents():
        text = yaml.safe_dump(doc)
        names |= set(re.findall(r"secretKeyRef:\n\s+key: \S+\n\s+name: (\S+)", text))
        names |= set(re.findall(r"secretName: (\S+)", text))
    values = (K8S / "airflow-values.yaml").read_text()
    names |= set(re.findall(r"SecretName: (\S+)", values)) | set(re.findall(r"name: (\S+), key:", values))
    assert names, "no secret references found"
    for name in names:
        assert f"`{name}`" in documented, f"secret {name} is not in docs/production.md"
    # No Secret objects with data are committed.
    assert _by_kind("Secret") == {}


def test_serving_readiness_is_the_model_status_and_configs_match_compose() -> None:
    deployment = _by_kind("Deployment")["tf-serving"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    probe = " ".join(container["readinessProbe"]["exec"]["command"])
    model_name = Settings().model.model_name
    assert f"GET /v1/models/{model_name} " in probe and '"state": "AVAILABLE"' in probe
    image = container["image"]
    assert image.startswith("tensorflow/serving:") and not image.endswith(":latest")
    compose = yaml.safe_load((REPO / "docker-compose.yaml").read_text())
    assert compose["services"]["tf-serving"]["image"] == image, "compose and Kubernetes serve the same build"
    config = _by_kind("ConfigMap")["tf-serving-config"]["data"]

    def normalised(text: str) -> list[str]:
        return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]

    for name in ("models.config", "batching.config", "monitoring.config"):
        assert normalised(config[name]) == normalised((REPO / "infra" / "serving" / name).read_text()), name
    args = dict(a.removeprefix("--").split("=", 1) for a in container["args"])
    assert args["model_config_file"] == "/wattflow/models/models.config"
    assert args["enable_batching"] == "true"


def test_every_image_is_pinned() -> None:
    for name, deployment in _by_kind("Deployment").items():
        for container in _containers(deployment):
            repository, _, tag = container["image"].rpartition(":")
            assert repository and tag and tag != "latest", f"{name}: {container['image']}"


def test_airflow_helm_values() -> None:
    values = yaml.safe_load((K8S / "airflow-values.yaml").read_text())
    assert values["executor"] == "CeleryExecutor"
    assert values["airflowVersion"] == "3.3.2"
    assert values["images"]["airflow"] == {"repository": "wattflow/platform", "tag": "0.1.0", "pullPolicy": "IfNotPresent"}
    assert values["postgresql"]["enabled"] is False and values["data"]["metadataSecretName"]
    for key in ("fernetKeySecretName", "apiSecretKeySecretName", "jwtSecretName"):
        assert values[key], key
    core = values["config"]["core"]
    assert core["auth_manager"].endswith("SimpleAuthManager")
    dockerfile = (REPO / "infra" / "Dockerfile").read_text()
    assert "WORKDIR /opt/wattflow" in dockerfile and "COPY --chown=50000:0 dags ./dags" in dockerfile
    assert core["dags_folder"] == "/opt/wattflow/dags" and core["plugins_folder"] == "/opt/wattflow/plugins"
    mount = values["apiServer"]["extraVolumeMounts"][0]["mountPath"]
    assert core["simple_auth_manager_passwords_file"].startswith(mount + "/")
    assert values["workers"]["serviceAccount"]["name"] in {
        s["name"] for s in _by_kind("RoleBinding")["spark-driver"]["subjects"]
    }


def test_spark_configs_match_settings_and_rbac() -> None:
    settings = Settings()
    k8s_conf, defaults = _spark_conf("spark-k8s.conf"), _spark_conf("spark-defaults.conf")
    for conf in (k8s_conf, defaults):
        packages = conf["spark.jars.packages"].split(",")
        assert settings.lakehouse.delta_spark_package in packages
        hadoop = next(p for p in packages if p.startswith("org.apache.hadoop:hadoop-aws:"))
        bundled = sorted((Path(__import__("pyspark").__file__).parent / "jars").glob("hadoop-client-api-*.jar"))
        assert bundled and hadoop.rsplit(":", 1)[1] == bundled[0].stem.rsplit("-", 1)[1], "hadoop-aws must match pyspark's Hadoop"
    assert k8s_conf["spark.master"].startswith("k8s://")
    assert k8s_conf["spark.kubernetes.authenticate.driver.serviceAccountName"] in _by_kind("ServiceAccount")
    assert k8s_conf["spark.kubernetes.container.image"] == _by_kind("Deployment")["mlflow"]["spec"]["template"]["spec"]["containers"][0]["image"]
    assert k8s_conf["spark.kubernetes.namespace"] == "wattflow"


def _pod_labels(deployment: dict[str, Any]) -> dict[str, str]:
    return deployment["spec"]["template"]["metadata"]["labels"]


def _matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.get("matchLabels", {}).items())


@pytest.mark.parametrize("deployment_name", ["tf-serving", "mlflow"])
def test_network_policies_admit_only_platform_pods_to_serving_and_mlflow(deployment_name: str) -> None:
    deployments, policies = _by_kind("Deployment"), _by_kind("NetworkPolicy")
    deployment = deployments[deployment_name]
    selecting = [p for p in policies.values() if _matches(p["spec"]["podSelector"], _pod_labels(deployment))]
    assert len(selecting) == 1, f"exactly one NetworkPolicy selects {deployment_name}'s pods"
    spec = selecting[0]["spec"]
    assert spec["policyTypes"] == ["Ingress"]
    container_ports = {p["name"] for c in deployment["spec"]["template"]["spec"]["containers"] for p in c["ports"]}
    covered: set[str] = set()
    for rule in spec["ingress"]:
        assert rule.get("from"), "a rule without `from` would admit every pod and namespace"
        for peer in rule["from"]:
            assert "ipBlock" not in peer
            if "namespaceSelector" in peer:  # only the monitoring namespace, and only for the REST (metrics) port
                assert peer["namespaceSelector"] == {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}
                assert [p["port"] for p in rule["ports"]] == ["http"] and deployment_name == "tf-serving"
            else:
                assert peer["podSelector"]["matchLabels"] in ({"app.kubernetes.io/part-of": "wattflow"},
                                                              {"tier": "airflow"})
        ports = {p["port"] for p in rule["ports"]}
        assert ports <= container_ports, f"policy names ports the container does not have: {ports - container_ports}"
        covered |= ports
    assert covered == container_ports, "every port the pod serves is governed by an explicit rule"
    # The platform's own pods carry the label the policy admits; an outsider's pod does not.
    dashboard = _pod_labels(deployments["dashboard"])
    platform_rule = next(r for r in spec["ingress"] if "podSelector" in r["from"][0])
    assert any(_matches(peer["podSelector"], dashboard) for peer in platform_rule["from"])
    assert not any(_matches(peer["podSelector"], {"app": "somebody-else"}) for peer in platform_rule["from"])


def test_serving_xla_flag_follows_the_setting_in_compose_and_kubernetes() -> None:
    container = _by_kind("Deployment")["tf-serving"]["spec"]["template"]["spec"]["containers"][0]
    assert "--xla_cpu_compilation_enabled=$(WATTFLOW_SERVING__XLA)" in container["args"]
    env = {e["name"]: e for e in container["env"]}
    assert env["WATTFLOW_SERVING__XLA"]["valueFrom"]["configMapKeyRef"] == {
        "name": "wattflow-platform", "key": "WATTFLOW_SERVING__XLA"}
    platform = _by_kind("ConfigMap")["wattflow-platform"]["data"]
    assert platform["WATTFLOW_SERVING__XLA"] == str(Settings().serving.xla).lower()
    compose = yaml.safe_load((REPO / "docker-compose.yaml").read_text())
    assert "--xla_cpu_compilation_enabled=${WATTFLOW_SERVING__XLA:-false}" in compose["services"]["tf-serving"]["command"]
    # XLA compiles once per batch shape: the batcher pads to the sizes the export's warmup compiles.
    from serving.server.config import parse_batching_parameters

    params = parse_batching_parameters((REPO / "infra" / "serving" / "batching.config").read_text())
    assert params.allowed_batch_sizes == tuple(Settings().serving.xla_batch_sizes)


def test_kafka_is_kraft_with_the_settings_topics_and_platform_pods_reach_it() -> None:
    """The broker runs KRaft (no ZooKeeper), its Service's address is what the platform's settings name,
    the topics Job creates the settings' topics, and only platform pods are admitted to its client port."""
    kafka = _by_kind("StatefulSet")["kafka"]
    container = kafka["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller" and container["image"].startswith("apache/kafka:4.")
    platform = _by_kind("ConfigMap")["wattflow-platform"]["data"]
    assert platform["WATTFLOW_KAFKA__BOOTSTRAP_SERVERS"] == "kafka.wattflow.svc.cluster.local:9092"
    assert f"PLAINTEXT://{platform['WATTFLOW_KAFKA__BOOTSTRAP_SERVERS']}" == env["KAFKA_ADVERTISED_LISTENERS"]
    assert kafka["spec"]["serviceName"] in _by_kind("Service")
    defaults = Settings().kafka
    script = " ".join(_by_kind("Job")["kafka-topics"]["spec"]["template"]["spec"]["containers"][0]["command"])
    for topic in (defaults.topic, defaults.forecasts_topic):
        assert f"--if-not-exists --topic {topic} --partitions {defaults.partitions}" in script
    policy = _by_kind("NetworkPolicy")["kafka-ingress"]["spec"]
    assert _matches(policy["podSelector"], kafka["spec"]["template"]["metadata"]["labels"])
    assert [p["port"] for rule in policy["ingress"] for p in rule["ports"]] == ["client"]
    assert all("podSelector" in peer for rule in policy["ingress"] for peer in rule["from"])
