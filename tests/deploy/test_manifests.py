"""The deployment files in deploy/ parse and agree with each other, with the service packages, their
settings classes and pyproject's pins. No container engine runs here: these checks read the files.

The per-service tests run over the six service names; a service whose package or settings module has
not landed yet fails them, on purpose.
"""

from __future__ import annotations

import dataclasses
import importlib
import re
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.common.settings import ServiceSettings, env_name

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"
COMPOSE_FILE = DEPLOY / "compose.yaml"
DOCKERFILE = DEPLOY / "Dockerfile"
SERVICES = ("ingest", "aggregator", "policy_server", "executor", "evaluator", "trainer")
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "Job")
GPU_RESOURCE = "nvidia.com/gpu"
POLICY_SERVICE = "eat.v1.PolicyService"
GRPC_PORT = 50051
METRICS_PORT = 9100
TLS_ENV = ("EAT_GRPC_TLS_CERT", "EAT_GRPC_TLS_KEY", "EAT_POLICY_TOKEN_FILE")
CALLER_TLS_ENV = ("EAT_POLICY_CA", "EAT_POLICY_TOKEN_FILE")


def grpc_healthcheck(ca: str) -> list[str]:
    """The policy server's health check: gRPC health over TLS (kubelet's gRPC probes cannot do TLS)."""
    return ["eat-healthcheck", "grpc", "--ca", ca, f"127.0.0.1:{GRPC_PORT}", POLICY_SERVICE]


BASE_ENV = frozenset(env_name(f.name) for f in dataclasses.fields(ServiceSettings))

Manifest = dict[str, Any]


# --- loading -------------------------------------------------------------------------------------------
def load_documents(path: Path) -> list[Any]:
    with path.open(encoding="utf-8") as stream:
        return [doc for doc in yaml.safe_load_all(stream) if doc is not None]


def yaml_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix in (".yaml", ".yml"))


@pytest.fixture(scope="module")
def compose() -> Manifest:
    (document,) = load_documents(COMPOSE_FILE)
    return document


@pytest.fixture(scope="module")
def k8s_objects() -> list[Manifest]:
    return [
        doc for path in yaml_files(K8S) if path.name != "kustomization.yaml" for doc in load_documents(path)
    ]


def objects_of_kind(objects: list[Manifest], kind: str) -> dict[str, Manifest]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


# --- what runs where -----------------------------------------------------------------------------------
def service_package(command: Any) -> str | None:
    """`x` for a command ["python", "-m", "services.x"], else None."""
    if not isinstance(command, list) or len(command) != 3 or command[:2] != ["python", "-m"]:
        return None
    match = re.fullmatch(r"services\.(\w+)", command[2])
    return match.group(1) if match else None


def compose_services_running(compose: Manifest, package: str) -> dict[str, Manifest]:
    return {
        name: spec
        for name, spec in compose["services"].items()
        if service_package(spec.get("command")) == package
    }


def k8s_workloads(objects: list[Manifest]) -> Iterator[tuple[Manifest, Manifest]]:
    """(workload, container) for every container of every workload."""
    for workload in objects:
        if workload["kind"] in WORKLOAD_KINDS:
            for container in workload["spec"]["template"]["spec"]["containers"]:
                yield workload, container


def k8s_containers_running(objects: list[Manifest], package: str) -> list[tuple[Manifest, Manifest]]:
    return [(w, c) for w, c in k8s_workloads(objects) if service_package(c.get("command")) == package]


def is_our_image(compose_service: Manifest) -> bool:
    return "build" in compose_service


# --- environment ---------------------------------------------------------------------------------------
def compose_env(service: Manifest) -> dict[str, str]:
    environment = service.get("environment") or {}
    if isinstance(environment, list):  # the KEY=VALUE list form
        return dict(entry.split("=", 1) for entry in environment)
    return {key: str(value) for key, value in environment.items()}


def k8s_env_names(container: Manifest, config_maps: dict[str, Manifest]) -> set[str]:
    """Every variable a container gets: its env entries and the keys of the ConfigMaps it loads whole."""
    names = {entry["name"] for entry in container.get("env", [])}
    for source in container.get("envFrom", []):
        assert "configMapRef" in source, f"{container['name']}: envFrom only from ConfigMaps, got {source}"
        config_map = config_maps[source["configMapRef"]["name"]]
        names |= {source.get("prefix", "") + key for key in config_map["data"]}
    return names


def k8s_env_literals(container: Manifest, config_maps: dict[str, Manifest]) -> dict[str, str]:
    """The variables whose values the manifests fix: literals, configMapKeyRef and envFrom ConfigMaps
    (not fieldRef or secretKeyRef, known only at run time)."""
    values: dict[str, str] = {}
    for source in container.get("envFrom", []):
        values.update({k: str(v) for k, v in config_maps[source["configMapRef"]["name"]]["data"].items()})
    for entry in container.get("env", []):  # env wins over envFrom, as in Kubernetes
        if "value" in entry:
            values[entry["name"]] = str(entry["value"])
        elif "configMapKeyRef" in entry["valueFrom"]:
            ref = entry["valueFrom"]["configMapKeyRef"]
            values[entry["name"]] = str(config_maps[ref["name"]]["data"][ref["key"]])
    return values


def k8s_env_value(container: Manifest, name: str, config_maps: dict[str, Manifest]) -> str:
    values = k8s_env_literals(container, config_maps)
    assert name in values, f"{container['name']} does not set {name}"
    return values[name]


def check_cluster_shape(envs: dict[str, tuple[str, dict[str, str]]], executors: int) -> None:
    """Services that describe the cluster agree: one model list, EAT_NODES = the executors, the policy's
    models per server = what executors keep resident, no task wider than the cluster.
    `envs` maps a workload name to (service package, its variables)."""
    model_lists = {env["EAT_MODELS"] for _, env in envs.values() if "EAT_MODELS" in env}
    assert len(model_lists) == 1, f"services disagree on EAT_MODELS: {model_lists}"
    resident = {env["EAT_MAX_RESIDENT_MODELS"] for pkg, env in envs.values() if pkg == "executor"}
    assert len(resident) == 1, f"executors disagree on EAT_MAX_RESIDENT_MODELS: {resident}"
    for where, (_, env) in envs.items():
        if "EAT_NODES" in env:
            assert int(env["EAT_NODES"]) == executors, f"{where}: EAT_NODES {env['EAT_NODES']} != {executors}"
        if "EAT_MODELS_PER_SERVER" in env:
            assert {env["EAT_MODELS_PER_SERVER"]} == resident, f"{where}: EAT_MODELS_PER_SERVER"
        if "EAT_MAX_PATCHES" in env:
            assert 1 <= int(env["EAT_MAX_PATCHES"]) <= executors, f"{where}: EAT_MAX_PATCHES"


def settings_class(package: str) -> type[ServiceSettings]:
    """The one ServiceSettings subclass defined in services/<package>/settings.py."""
    module_name = f"services.{package}.settings"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        pytest.fail(f"{module_name} is missing ({err})")
    classes = [
        obj
        for obj in vars(module).values()
        if isinstance(obj, type)
        and issubclass(obj, ServiceSettings)
        and obj is not ServiceSettings
        and obj.__module__ == module_name
    ]
    assert len(classes) == 1, f"{module_name} should define one ServiceSettings subclass, found {classes}"
    return classes[0]


# --- volumes -------------------------------------------------------------------------------------------
def compose_mounts(service: Manifest) -> dict[str, tuple[str, bool]]:
    """Container path -> (source, read_only) for the short `src:dst[:mode]` and the long syntax."""
    mounts = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            # The source may be a ${VAR:-default} interpolation, which holds a colon of its own.
            match = re.fullmatch(r"(\$\{[^}]*\}|[^:]+):([^:]+)(?::(\w+))?", volume)
            assert match, f"unreadable volume {volume!r}"
            source, target, mode = match.groups()
            mounts[target] = (source, mode == "ro")
        else:
            mounts[volume["target"]] = (volume["source"], bool(volume.get("read_only", False)))
    return mounts


def k8s_mounts(workload: Manifest, container: Manifest) -> dict[str, tuple[str, bool]]:
    """Container path -> (claim name, read_only) for every PersistentVolumeClaim the container mounts."""
    claims = {
        volume["name"]: volume["persistentVolumeClaim"]
        for volume in workload["spec"]["template"]["spec"].get("volumes", [])
        if "persistentVolumeClaim" in volume
    }
    mounts = {}
    for mount in container.get("volumeMounts", []):
        if mount["name"] in claims:
            claim = claims[mount["name"]]
            read_only = bool(mount.get("readOnly")) or bool(claim.get("readOnly"))
            mounts[mount["mountPath"]] = (claim["claimName"], read_only)
    return mounts


# --- the files parse -----------------------------------------------------------------------------------
def test_every_yaml_file_parses() -> None:
    files = yaml_files(DEPLOY)
    assert COMPOSE_FILE in files and K8S / "kustomization.yaml" in files
    for path in files:
        assert load_documents(path), f"{path} holds no document"


def test_every_k8s_object_is_named_and_typed(k8s_objects: list[Manifest]) -> None:
    assert k8s_objects
    for obj in k8s_objects:
        assert obj.get("apiVersion") and obj.get("kind") and obj.get("metadata", {}).get("name"), obj
    names = [(o["kind"], o["metadata"]["name"]) for o in k8s_objects]
    assert len(names) == len(set(names)), "two objects share a kind and name"


def test_kustomization_lists_exactly_the_files_in_k8s() -> None:
    (kustomization,) = load_documents(K8S / "kustomization.yaml")
    listed = kustomization["resources"]
    on_disk = sorted(p.name for p in yaml_files(K8S) if p.name != "kustomization.yaml")
    assert len(listed) == len(set(listed)), "a resource is listed twice"
    assert sorted(listed) == on_disk


def test_kustomization_namespace_is_the_namespace_created(k8s_objects: list[Manifest]) -> None:
    (kustomization,) = load_documents(K8S / "kustomization.yaml")
    assert kustomization["namespace"] in objects_of_kind(k8s_objects, "Namespace")


def test_kustomization_images_are_the_images_used(k8s_objects: list[Manifest]) -> None:
    (kustomization,) = load_documents(K8S / "kustomization.yaml")
    used = {container["image"] for _, container in k8s_workloads(k8s_objects)}
    assert used == {image["name"] for image in kustomization["images"]}


# --- every service is deployed, and only services run --------------------------------------------------
@pytest.mark.parametrize("package", SERVICES)
def test_service_package_has_a_compose_service_and_a_k8s_workload(
    package: str, compose: Manifest, k8s_objects: list[Manifest]
) -> None:
    assert (REPO / "services" / package / "__main__.py").is_file(), f"services/{package}/__main__.py missing"
    assert compose_services_running(compose, package), f"no compose service runs services.{package}"
    assert k8s_containers_running(k8s_objects, package), f"no k8s workload runs services.{package}"


def test_every_compose_service_runs_a_known_service(compose: Manifest) -> None:
    for name, spec in compose["services"].items():
        if is_our_image(spec):
            assert service_package(spec.get("command")) in SERVICES, f"{name}: {spec.get('command')}"


def test_every_k8s_container_runs_a_known_service(k8s_objects: list[Manifest]) -> None:
    for workload, container in k8s_workloads(k8s_objects):
        package = service_package(container.get("command"))
        assert package in SERVICES, f"{workload['metadata']['name']}: {container.get('command')}"


# --- environment: only EAT_* variables the service's settings class reads -----------------------------
@pytest.mark.parametrize("package", SERVICES)
def test_eat_variables_name_fields_of_the_service_settings(
    package: str, compose: Manifest, k8s_objects: list[Manifest]
) -> None:
    config_maps = objects_of_kind(k8s_objects, "ConfigMap")
    fields = {env_name(f.name) for f in dataclasses.fields(settings_class(package))}
    used: dict[str, set[str]] = {}
    for name, spec in compose_services_running(compose, package).items():
        used[f"compose {name}"] = {v for v in compose_env(spec) if v.startswith("EAT_")}
    for workload, container in k8s_containers_running(k8s_objects, package):
        names = k8s_env_names(container, config_maps)
        used[f"k8s {workload['metadata']['name']}"] = {v for v in names if v.startswith("EAT_")}
    assert used, f"nothing deploys services.{package}"
    unknown = {where: sorted(names - fields) for where, names in used.items() if names - fields}
    assert not unknown, f"variables no field of {package}'s settings reads: {unknown}"


def test_shared_configmap_holds_only_settings_every_service_reads(k8s_objects: list[Manifest]) -> None:
    config_maps = objects_of_kind(k8s_objects, "ConfigMap")
    for _, container in k8s_workloads(k8s_objects):
        for source in container.get("envFrom", []):
            keys = set(config_maps[source["configMapRef"]["name"]]["data"])
            assert keys <= BASE_ENV, f"{sorted(keys - BASE_ENV)} are not ServiceSettings fields"


def test_deployments_log_json_at_real_time(compose: Manifest, k8s_objects: list[Manifest]) -> None:
    config_maps = objects_of_kind(k8s_objects, "ConfigMap")
    expected = {"EAT_LOG_FORMAT": "json", "EAT_METRICS_PORT": str(METRICS_PORT), "EAT_TIME_SCALE": "1"}
    for name, spec in compose["services"].items():
        if is_our_image(spec):
            env = compose_env(spec)
            assert {k: env.get(k) for k in expected} == expected, name
    for workload, container in k8s_workloads(k8s_objects):
        got = {k: k8s_env_value(container, k, config_maps) for k in expected}
        assert got == expected, workload["metadata"]["name"]


def test_k8s_references_resolve(k8s_objects: list[Manifest]) -> None:
    config_maps = objects_of_kind(k8s_objects, "ConfigMap")
    claims = objects_of_kind(k8s_objects, "PersistentVolumeClaim")
    (rabbitmq,) = objects_of_kind(k8s_objects, "RabbitmqCluster")
    operator_secret = f"{rabbitmq}-default-user"  # created by the RabbitMQ Cluster Operator
    for workload, container in k8s_workloads(k8s_objects):
        where = workload["metadata"]["name"]
        for entry in container.get("env", []):
            ref = entry.get("valueFrom", {})
            if "configMapKeyRef" in ref:
                key_ref = ref["configMapKeyRef"]
                assert key_ref["key"] in config_maps[key_ref["name"]]["data"], f"{where}: {entry}"
            if "secretKeyRef" in ref:
                assert ref["secretKeyRef"]["name"] == operator_secret, f"{where}: {entry}"
                assert ref["secretKeyRef"]["key"] in ("username", "password"), f"{where}: {entry}"
        for claim, _ in k8s_mounts(workload, container).values():
            assert claim in claims, f"{where} mounts missing claim {claim}"


def test_every_service_reaches_the_broker(compose: Manifest, k8s_objects: list[Manifest]) -> None:
    config_maps = objects_of_kind(k8s_objects, "ConfigMap")
    (rabbitmq,) = objects_of_kind(k8s_objects, "RabbitmqCluster")
    for name, spec in compose["services"].items():
        if is_our_image(spec):
            assert "@rabbitmq:5672/" in compose_env(spec)["EAT_AMQP_URL"], name
    for workload, container in k8s_workloads(k8s_objects):
        url = k8s_env_value(container, "EAT_AMQP_URL", config_maps)
        assert f"@{rabbitmq}:5672/" in url, workload["metadata"]["name"]
        # $(VAR) expansion only sees variables defined earlier in the list.
        names = [entry["name"] for entry in container["env"]]
        earlier = names[: names.index("EAT_AMQP_URL")]
        for variable in re.findall(r"\$\((\w+)\)", url):
            assert variable in earlier, f"{workload['metadata']['name']}: $({variable}) not defined before"


# --- compose -------------------------------------------------------------------------------------------
def test_compose_services_wait_for_a_healthy_broker(compose: Manifest) -> None:
    assert compose["services"]["rabbitmq"]["image"].startswith("rabbitmq:4")
    assert "management" in compose["services"]["rabbitmq"]["image"]
    assert compose["services"]["rabbitmq"]["healthcheck"]["test"]
    for name, spec in compose["services"].items():
        if name != "rabbitmq":
            assert spec["depends_on"]["rabbitmq"]["condition"] == "service_healthy", name


def test_compose_executors_each_reserve_their_own_gpu(compose: Manifest) -> None:
    executors = compose_services_running(compose, "executor")
    gpus = []
    for name, spec in executors.items():
        (device,) = spec["deploy"]["resources"]["reservations"]["devices"]
        assert device["driver"] == "nvidia" and "gpu" in device["capabilities"], name
        if "count" in device:
            assert device["count"] == 1, name
        else:
            assert len(device["device_ids"]) == 1, name
            gpus.append(device["device_ids"][0])
    # With explicit ids, no two executors may share a GPU.
    assert len(gpus) == len(set(gpus))


def test_compose_executor_ids_are_unique(compose: Manifest) -> None:
    executors = compose_services_running(compose, "executor")
    ids = [compose_env(spec)["EAT_EXECUTOR_ID"] for spec in executors.values()]
    assert len(ids) == len(set(ids)), f"duplicate executor ids: {ids}"


def test_compose_services_agree_on_the_cluster_shape(compose: Manifest) -> None:
    envs = {
        name: (service_package(spec["command"]), compose_env(spec))
        for name, spec in compose["services"].items()
        if is_our_image(spec)
    }
    check_cluster_shape(envs, executors=len(compose_services_running(compose, "executor")))


def test_compose_volumes_are_shared_as_designed(compose: Manifest) -> None:
    services = compose["services"]
    policy_server = compose_mounts(services["policy-server"])
    trainer = compose_mounts(services["trainer"])
    assert policy_server["/policies"] == ("policies", True)
    assert trainer["/policies"] == ("policies", False)
    assert trainer["/var/lib/eat/state"] == ("trainer-state", False)
    assert compose_mounts(services["aggregator"])["/var/lib/eat/state"] == ("aggregator-state", False)
    result_users = {"executor", "evaluator", "aggregator"}
    for package in result_users:
        for name, spec in compose_services_running(compose, package).items():
            assert compose_mounts(spec)["/var/lib/eat/results"][0] == "results", name
    for name, spec in compose_services_running(compose, "executor").items():
        assert compose_mounts(spec)["/var/lib/eat/results"] == ("results", False), name
        assert compose_mounts(spec)["/models"][1], f"{name} must mount the models read-only"
    named = {source for spec in services.values() for source, _ in compose_mounts(spec).values()}
    declared = set(compose["volumes"])
    assert {"results", "policies"} <= declared
    assert {s for s in named if "/" not in s and not s.startswith("$")} <= declared


def test_compose_policy_server_health_is_grpc_on_50051(compose: Manifest) -> None:
    spec = compose["services"]["policy-server"]
    assert spec["healthcheck"]["test"] == ["CMD", *grpc_healthcheck("/run/secrets/policy-ca")]
    assert compose_env(spec)["EAT_GRPC_PORT"] == str(GRPC_PORT)
    assert compose_env(compose["services"]["aggregator"])["EAT_POLICY_TARGET"] == f"policy-server:{GRPC_PORT}"


def test_compose_policy_server_and_aggregator_read_tls_from_secrets(compose: Manifest) -> None:
    declared = compose["secrets"]
    for name, variables in (("policy-server", TLS_ENV), ("aggregator", CALLER_TLS_ENV)):
        spec = compose["services"][name]
        env = compose_env(spec)
        for variable in variables:
            secret = env[variable].removeprefix("/run/secrets/")
            assert secret in spec["secrets"] and secret in declared, f"{name} {variable}"
    assert compose_env(compose["services"]["policy-server"])["EAT_GRPC_HOST"] == "0.0.0.0"


def test_deployments_open_metrics_to_the_scraper(compose: Manifest, k8s_objects: list[Manifest]) -> None:
    config_maps = objects_of_kind(k8s_objects, "ConfigMap")
    for name, spec in compose["services"].items():
        if is_our_image(spec):
            assert compose_env(spec).get("EAT_METRICS_HOST") == "0.0.0.0", name
    for workload, container in k8s_workloads(k8s_objects):
        assert k8s_env_value(container, "EAT_METRICS_HOST", config_maps) == "0.0.0.0", workload["metadata"][
            "name"
        ]


# --- kubernetes ----------------------------------------------------------------------------------------
def k8s_secret_mounts(workload: Manifest, container: Manifest) -> dict[str, tuple[str, set[str]]]:
    """Mount path -> (Secret name, the files it holds) for every Secret volume the container mounts."""
    secrets = {
        v["name"]: v["secret"]
        for v in workload["spec"]["template"]["spec"].get("volumes", [])
        if "secret" in v
    }
    return {
        m["mountPath"]: (secrets[m["name"]]["secretName"], {i["path"] for i in secrets[m["name"]]["items"]})
        for m in container.get("volumeMounts", [])
        if m["name"] in secrets
    }


@pytest.mark.parametrize(
    ("package", "variables"), [("policy_server", TLS_ENV), ("aggregator", CALLER_TLS_ENV)]
)
def test_k8s_tls_files_come_from_the_policy_tls_secret(
    k8s_objects: list[Manifest], package: str, variables: tuple[str, ...]
) -> None:
    config_maps = objects_of_kind(k8s_objects, "ConfigMap")
    ((workload, container),) = k8s_containers_running(k8s_objects, package)
    mounts = k8s_secret_mounts(workload, container)
    for variable in variables:
        path = Path(k8s_env_value(container, variable, config_maps))
        secret, files = mounts[str(path.parent)]
        assert secret == "eat-policy-tls" and path.name in files, variable


def test_k8s_executors_are_a_statefulset_with_one_gpu_each(k8s_objects: list[Manifest]) -> None:
    ((workload, container),) = k8s_containers_running(k8s_objects, "executor")
    assert workload["kind"] == "StatefulSet"
    assert container["resources"]["limits"][GPU_RESOURCE] == 1
    executor_id = next(e for e in container["env"] if e["name"] == "EAT_EXECUTOR_ID")
    assert executor_id["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    host = next(e for e in container["env"] if e["name"] == "EAT_HOST")
    assert host["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    governing = objects_of_kind(k8s_objects, "Service")[workload["spec"]["serviceName"]]
    assert governing["spec"]["clusterIP"] == "None", "the StatefulSet's Service must be headless"


def test_k8s_services_agree_on_the_cluster_shape(k8s_objects: list[Manifest]) -> None:
    config_maps = objects_of_kind(k8s_objects, "ConfigMap")
    ((executors, _),) = k8s_containers_running(k8s_objects, "executor")
    envs = {
        workload["metadata"]["name"]: (service_package(c["command"]), k8s_env_literals(c, config_maps))
        for workload, c in k8s_workloads(k8s_objects)
    }
    check_cluster_shape(envs, executors=executors["spec"]["replicas"])


def test_k8s_only_executors_take_gpus(k8s_objects: list[Manifest]) -> None:
    for workload, container in k8s_workloads(k8s_objects):
        if service_package(container["command"]) != "executor":
            assert GPU_RESOURCE not in container["resources"]["limits"], workload["metadata"]["name"]


def test_k8s_policy_server_has_a_grpc_readiness_probe_on_50051(k8s_objects: list[Manifest]) -> None:
    config_maps = objects_of_kind(k8s_objects, "ConfigMap")
    ((workload, container),) = k8s_containers_running(k8s_objects, "policy_server")
    probe = container["readinessProbe"]["exec"]
    assert probe == {"command": grpc_healthcheck("/etc/eat/policy-tls/ca.crt")}
    assert k8s_env_value(container, "EAT_GRPC_PORT", config_maps) == str(GRPC_PORT)
    services = objects_of_kind(k8s_objects, "Service")
    (service,) = [
        s
        for s in services.values()
        if s["spec"].get("selector", {}).items() <= workload["spec"]["template"]["metadata"]["labels"].items()
        and any(p["port"] == GRPC_PORT for p in s["spec"]["ports"])
    ]
    ((_, aggregator),) = k8s_containers_running(k8s_objects, "aggregator")
    target = k8s_env_value(aggregator, "EAT_POLICY_TARGET", config_maps)
    assert target == f"{service['metadata']['name']}:{GRPC_PORT}"


def test_k8s_containers_have_probes_and_resources(k8s_objects: list[Manifest]) -> None:
    for workload, container in k8s_workloads(k8s_objects):
        where = workload["metadata"]["name"]
        ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
        for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
            probe = container[kind]
            if "httpGet" in probe:
                assert probe["httpGet"]["path"] == "/metrics", f"{where} {kind}"
                assert ports.get(probe["httpGet"]["port"], probe["httpGet"]["port"]) == METRICS_PORT
            else:
                assert probe["exec"]["command"][:2] == ["eat-healthcheck", "grpc"], f"{where} {kind}"
                assert f"127.0.0.1:{GRPC_PORT}" in probe["exec"]["command"], f"{where} {kind}"
        for bound in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(container["resources"][bound]), f"{where} {bound}"


def test_k8s_volumes_are_shared_as_designed(k8s_objects: list[Manifest]) -> None:
    claims = objects_of_kind(k8s_objects, "PersistentVolumeClaim")
    assert "ReadWriteMany" in claims["results"]["spec"]["accessModes"]
    assert "ReadWriteMany" in claims["policies"]["spec"]["accessModes"]

    def mounts(package: str) -> dict[str, tuple[str, bool]]:
        ((workload, container),) = k8s_containers_running(k8s_objects, package)
        return k8s_mounts(workload, container)

    assert mounts("policy_server")["/policies"] == ("policies", True)
    assert mounts("trainer")["/policies"] == ("policies", False)
    assert mounts("trainer")["/var/lib/eat/state"] == ("trainer-state", False)
    assert mounts("aggregator")["/var/lib/eat/state"] == ("aggregator-state", False)
    assert mounts("executor")["/var/lib/eat/results"] == ("results", False)
    assert mounts("executor")["/models"] == ("models", True)
    assert mounts("evaluator")["/var/lib/eat/results"][0] == "results"


def test_k8s_rabbitmq_is_a_4x_cluster_with_management(k8s_objects: list[Manifest]) -> None:
    (cluster,) = (o for o in k8s_objects if o["kind"] == "RabbitmqCluster")
    assert cluster["apiVersion"] == "rabbitmq.com/v1beta1"
    assert cluster["spec"]["image"].startswith("rabbitmq:4") and "management" in cluster["spec"]["image"]


# --- the image -----------------------------------------------------------------------------------------
def pyproject_pins() -> dict[str, str]:
    with (REPO / "pyproject.toml").open("rb") as stream:
        dependencies = tomllib.load(stream)["project"]["dependencies"]
    return dict(dep.split("==", 1) for dep in dependencies if "==" in dep)


def test_dockerfile_pins_torch_as_pyproject_does_and_installs_the_project() -> None:
    dockerfile = DOCKERFILE.read_text(encoding="utf-8")
    pins = pyproject_pins()
    assert pins["torch"] == "2.14.1"
    for package in ("torch", "torchvision"):
        assert f"{package}=={pins[package]}" in dockerfile, f"{package} pin differs from pyproject.toml"
    assert re.search(r"^RUN pip install \.", dockerfile, re.MULTILINE), "the project is not installed"
    assert "FROM python:3.11-slim" in dockerfile
    assert re.search(r"^FROM nvidia/cuda:\S+ AS base-cuda", dockerfile, re.MULTILINE)


def test_dockerfile_copies_only_what_exists_and_the_context_allows() -> None:
    dockerfile = DOCKERFILE.read_text(encoding="utf-8")
    allowed = [
        line[1:].rstrip("/")
        for line in (DEPLOY / "Dockerfile.dockerignore").read_text(encoding="utf-8").splitlines()
        if line.startswith("!")
    ]
    for line in dockerfile.splitlines():
        if line.startswith("COPY") and "--from" not in line:
            sources = [word for word in line.split()[1:-1] if not word.startswith("--")]
            for source in sources:
                assert (REPO / source).exists(), f"COPY {source}: no such path"
                assert source.rstrip("/") in allowed, f"COPY {source}: excluded by Dockerfile.dockerignore"


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kustomize_builds_every_object_into_the_namespace(k8s_objects: list[Manifest]) -> None:
    rendered = subprocess.run(
        ["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, timeout=60, check=False
    )
    assert rendered.returncode == 0, rendered.stderr
    built = [doc for doc in yaml.safe_load_all(rendered.stdout) if doc is not None]
    assert sorted((o["kind"], o["metadata"]["name"]) for o in built) == sorted(
        (o["kind"], o["metadata"]["name"]) for o in k8s_objects
    )
    for obj in built:
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == "eat", obj["metadata"]["name"]
