"""infra/k8s/airflow-values.yaml checked offline against what the official Airflow Helm chart accepts.

The chart validates values against its values.schema.json at `helm install`, and rejects keys it does not
know. That schema ships only inside the chart archive (Apache's own Helm repository); no PyPI or npm
package vendors it, so it cannot be installed here. The checks instead, each from a package or a
documented source:

- every key the file sets is one of the chart's documented parameters (parameters reference of chart
  1.22, the version the file targets), with the documented type: a typo or a key the chart dropped fails
  here, not in the cluster;
- the values the chart hands to Kubernetes verbatim (init containers, volumes, mounts, env, envFrom,
  resources) validate strictly against the Kubernetes API schemas of kubernetes-validate, which is what the
  chart's schema does for them (it `$ref`s the Kubernetes definitions);
- every `config:` option is one of Airflow's own, from the installed apache-airflow's config.yml.
"""

from __future__ import annotations

import copy
import importlib.util
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
VALUES = REPO / "infra" / "k8s" / "airflow-values.yaml"
KUBERNETES_VERSION = "1.31.0"

Check = Callable[[Any], str | None]  # None when the value is valid, else why not


def _of_type(*types: type) -> Check:
    def check(value: Any) -> str | None:
        # bool is an int in Python; the chart's schema tells "integer" and "boolean" apart.
        if isinstance(value, bool) and bool not in types:
            return f"expected {'/'.join(t.__name__ for t in types)}, got bool {value!r}"
        return None if isinstance(value, types) else f"expected {'/'.join(t.__name__ for t in types)}, got {value!r}"

    return check


def _one_of(*allowed: str) -> Check:
    return lambda value: None if value in allowed else f"expected one of {allowed}, got {value!r}"


def _list_of_dicts(value: Any) -> str | None:
    # The items' own fields are validated against the Kubernetes schema below.
    if isinstance(value, list) and all(isinstance(item, dict) for item in value):
        return None
    return f"expected a list of objects, got {value!r}"


def _templated_list(value: Any) -> str | None:
    # extraEnv / extraEnvFrom are strings the chart renders with `tpl` and inserts as YAML list items.
    if not isinstance(value, str):
        return f"expected a templated string, got {value!r}"
    return _list_of_dicts(yaml.safe_load(value))


def _env_list(value: Any) -> str | None:
    # The chart's `env` items take a name and a plain value only (secrets go through extraEnv).
    problem = _list_of_dicts(value)
    if problem:
        return problem
    odd = [item for item in value if set(item) != {"name", "value"} or not all(isinstance(v, str) for v in item.values())]
    return f"env items take name and value strings only: {odd}" if odd else None


STRING, BOOLEAN, INTEGER, OBJECT = _of_type(str), _of_type(bool), _of_type(int), _of_type(dict)
# The chart's parameters this file sets, with their documented types (chart 1.22 parameters reference;
# defaultUser moved from webserver to createUserJob in 1.19). Add a key here only after checking the
# chart documents it.
CHART_PARAMETERS: dict[str, Check] = {
    "airflowVersion": STRING,
    "defaultAirflowRepository": STRING,
    "defaultAirflowTag": STRING,
    "images.airflow.repository": STRING,
    "images.airflow.tag": STRING,
    "images.airflow.pullPolicy": _one_of("Always", "IfNotPresent", "Never"),
    "executor": _one_of("LocalExecutor", "LocalKubernetesExecutor", "CeleryExecutor", "KubernetesExecutor",
                        "CeleryKubernetesExecutor"),
    "postgresql.enabled": BOOLEAN,
    "data.metadataSecretName": STRING,
    "data.resultBackendSecretName": STRING,
    "data.brokerUrlSecretName": STRING,
    "redis.enabled": BOOLEAN,
    "redis.passwordSecretName": STRING,
    "pgbouncer.enabled": BOOLEAN,
    "fernetKeySecretName": STRING,
    "apiSecretKeySecretName": STRING,
    "jwtSecretName": STRING,
    "createUserJob.defaultUser.enabled": BOOLEAN,
    "migrateDatabaseJob.enabled": BOOLEAN,
    "config": OBJECT,  # airflow.cfg sections: checked against Airflow's own options below
    "dags.persistence.enabled": BOOLEAN,
    "dags.gitSync.enabled": BOOLEAN,
    "env": _env_list,
    "extraEnv": _templated_list,
    "extraEnvFrom": _templated_list,
    "apiServer.replicas": INTEGER,
    "apiServer.extraInitContainers": _list_of_dicts,
    "apiServer.extraVolumes": _list_of_dicts,
    "apiServer.extraVolumeMounts": _list_of_dicts,
    "scheduler.replicas": INTEGER,
    "dagProcessor.enabled": BOOLEAN,
    "dagProcessor.replicas": INTEGER,
    "triggerer.enabled": BOOLEAN,
    "triggerer.replicas": INTEGER,
    "workers.replicas": INTEGER,
    "workers.serviceAccount.create": BOOLEAN,
    "workers.serviceAccount.name": STRING,
    "workers.resources": OBJECT,
    "workers.extraVolumes": _list_of_dicts,
    "workers.extraVolumeMounts": _list_of_dicts,
}


def _values() -> dict[str, Any]:
    return yaml.safe_load(VALUES.read_text())


def _set_keys(node: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted path, value) for every parameter the file sets: documented paths, or leaves that are not."""
    for key, value in node.items():
        path = f"{prefix}{key}"
        if path in CHART_PARAMETERS or not isinstance(value, dict) or not value:
            yield path, value
        else:
            yield from _set_keys(value, path + ".")


def chart_problems(values: dict[str, Any]) -> list[str]:
    problems = []
    for path, value in _set_keys(values):
        check = CHART_PARAMETERS.get(path)
        if check is None:
            problems.append(f"{path}: not a parameter of the Airflow chart")
        elif (why := check(value)) is not None:
            problems.append(f"{path}: {why}")
    return problems


def _airflow_options() -> dict[str, dict[str, Any]]:
    # Located, not imported: importing airflow costs seconds and initialises its configuration.
    spec = importlib.util.find_spec("airflow")
    assert spec is not None and spec.submodule_search_locations, "apache-airflow is not installed"
    package = Path(next(iter(spec.submodule_search_locations)))
    config = yaml.safe_load((package / "config_templates" / "config.yml").read_text())
    return {section: body.get("options", {}) for section, body in config.items()}


def config_problems(config: dict[str, dict[str, Any]]) -> list[str]:
    known = _airflow_options()
    problems = []
    for section, options in config.items():
        for option, value in options.items():
            spec = known.get(section, {}).get(option)
            if spec is None:
                problems.append(f"config.{section}.{option}: not an Airflow option")
            elif spec.get("type") == "boolean" and str(value) not in ("True", "False"):
                problems.append(f"config.{section}.{option}: boolean option set to {value!r}")
    return problems


def _pod(containers: list[dict[str, Any]], init_containers: list[dict[str, Any]], volumes: list[dict[str, Any]]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "airflow-values", "namespace": "wattflow"},
            "spec": {"containers": containers, "initContainers": init_containers, "volumes": volumes}}


def chart_pods(values: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The parts of each pod the values fill in, placed as the chart places them."""
    image = f"{values['images']['airflow']['repository']}:{values['images']['airflow']['tag']}"
    env = values["env"] + yaml.safe_load(values["extraEnv"])
    env_from = yaml.safe_load(values["extraEnvFrom"])
    api, workers = values["apiServer"], values["workers"]
    api_server = {"name": "api-server", "image": image, "env": env, "envFrom": env_from,
                  "volumeMounts": api["extraVolumeMounts"]}
    worker = {"name": "worker", "image": image, "env": env, "envFrom": env_from, "resources": workers["resources"],
              "volumeMounts": workers["extraVolumeMounts"]}
    return {
        "api-server": _pod([api_server], api["extraInitContainers"], api["extraVolumes"]),
        "worker": _pod([worker], [], workers["extraVolumes"]),
    }


def test_every_key_is_a_documented_chart_parameter() -> None:
    values = _values()
    assert chart_problems(values) == []
    # The file sets what the deployment needs: nothing above is vacuous.
    assert {path for path, _ in _set_keys(values)} == set(CHART_PARAMETERS)


@pytest.mark.parametrize(
    "mutate, problem",
    [
        (lambda v: v["createUserJob"].update(enabled=False), "createUserJob.enabled: not a parameter"),
        (lambda v: v["workers"].update(replica=2), "workers.replica: not a parameter"),
        (lambda v: v["scheduler"].update(replicas="2"), "scheduler.replicas: expected int"),
        (lambda v: v["pgbouncer"].update(enabled="true"), "pgbouncer.enabled: expected bool"),
        (lambda v: v.update(executor="CeleryExecuter"), "executor: expected one of"),
        (lambda v: v["env"].append({"name": "X", "valueFrom": {}}), "env: env items take name and value"),
    ],
)
def test_a_wrong_key_or_type_is_reported(mutate: Callable[[dict[str, Any]], None], problem: str) -> None:
    values = copy.deepcopy(_values())
    mutate(values)
    problems = chart_problems(values)
    assert len(problems) == 1 and problems[0].startswith(problem), problems


def test_airflow_config_options_exist_in_the_installed_airflow() -> None:
    config = _values()["config"]
    assert config_problems(config) == []
    assert config_problems({"core": {"dag_folder": "/x"}, "scheduler": {"enable_health_check": "yes"}}) == [
        "config.core.dag_folder: not an Airflow option",
        "config.scheduler.enable_health_check: boolean option set to 'yes'",
    ]


@pytest.mark.parametrize("component", ["api-server", "worker"])
def test_kubernetes_parts_validate_against_the_kubernetes_schema(component: str) -> None:
    pod = chart_pods(_values())[component]
    # strict: unknown fields (a `mountpath:` typo) are errors, as in the chart's own schema.
    kubernetes_validate.validate(pod, KUBERNETES_VERSION, strict=True)
    spec = pod["spec"]
    volumes = {v["name"] for v in spec["volumes"]}
    for container in spec["containers"] + spec["initContainers"]:
        for mount in container.get("volumeMounts", []):
            assert mount["name"] in volumes, f"{component}/{container['name']}: mount {mount['name']} has no volume"


def test_strict_kubernetes_validation_rejects_a_typo_in_an_init_container() -> None:
    values = copy.deepcopy(_values())
    mount = values["apiServer"]["extraInitContainers"][0]["volumeMounts"][0]
    mount["mountpath"] = mount.pop("mountPath")
    with pytest.raises(kubernetes_validate.ValidationError, match="mountpath|mountPath"):
        kubernetes_validate.validate(chart_pods(values)["api-server"], KUBERNETES_VERSION, strict=True)
