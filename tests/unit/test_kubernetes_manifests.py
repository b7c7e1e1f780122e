"""The Kubernetes manifests of deploy/kubernetes: valid against the API schemas of a fixed Kubernetes version
(offline and strict: an unknown field is an error), and consistent with the code they deploy: ports, the roles'
arguments, the node Deployment the management service scales and the RBAC its provisioner needs."""

import copy
import re
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from cloudburst.cache.server import (
    DEFAULT_CAUSAL_PORT,
    DEFAULT_INVALIDATION_PORT,
    DEFAULT_REQUEST_PORT,
    DEFAULT_SESSION_PORT,
    DEFAULT_UPDATE_PORT,
)
from cloudburst.cli.main import parse_arguments
from cloudburst.config import KvsConfig, RuntimePorts
from cloudburst.kvs.redis_connection import RedisSettings
from cloudburst.management.kubernetes import DeploymentScaleApi, PodApi
from cloudburst.transport.endpoints import parse_endpoint

#: The Kubernetes version whose schemas (bundled with kubernetes-validate) the manifests must satisfy.
KUBERNETES_VERSION = "1.33.0"
ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy" / "kubernetes"
PORTS = RuntimePorts()
KVS = KvsConfig()
WORKLOADS = ("Deployment", "StatefulSet", "Job")
#: Every port a scheduler binds (``RuntimePorts`` attributes): the public request ports, the internal one, status.
SCHEDULER_PORTS = (
    "connect",
    "function_create",
    "function_call",
    "list",
    "dag_create",
    "dag_call",
    "dag_delete",
    "scheduler_internal",
    "status_query",
    "function_lease",
    "info",
    "cancel",
    "in_flight",
    "dag_lease",
    "metrics_scheduler",
)
#: A Redis Cluster node's bus port is its client port plus this.
REDIS_BUS_OFFSET = 10000


def load_documents():
    documents = []
    for path in sorted(DEPLOY.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            documents += [(path.name, document) for document in yaml.safe_load_all(path.read_text()) if document]
    return documents


DOCUMENTS = load_documents()


def named(kind, name):
    (document,) = [d for _, d in DOCUMENTS if d["kind"] == kind and d["metadata"]["name"] == name]
    return document


def workloads():
    return [document for _, document in DOCUMENTS if document["kind"] in WORKLOADS]


def containers(workload):
    spec = workload["spec"]["template"]["spec"]
    return spec.get("initContainers", []) + spec["containers"]


def container_ports(workload):
    return {port["containerPort"] for container in containers(workload) for port in container.get("ports", [])}


def port_names(workload):
    return {
        port["name"]: port["containerPort"] for container in containers(workload) for port in container.get("ports", [])
    }


def selected_by(selector, kinds=WORKLOADS):
    """The workloads whose pods carry every label of ``selector``."""
    return [
        workload
        for workload in workloads()
        if workload["kind"] in kinds
        and selector.items() <= workload["spec"]["template"]["metadata"].get("labels", {}).items()
    ]


def config_file_text():
    return named("ConfigMap", "cloudburst-config")["data"]["cloudburst.toml"]


def role_arguments(deployment, tmp_path):
    """The options the Deployment's (single) container runs with, parsed by the real command line, its config file
    being the ConfigMap's and its ``$(VAR)`` references expanded as the kubelet expands them."""
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    values = {"status.podIP": "10.1.2.3", "metadata.namespace": deployment["metadata"]["namespace"]}
    env = {variable["name"]: values[variable["valueFrom"]["fieldRef"]["fieldPath"]] for variable in container["env"]}
    args = []
    for arg in container["args"]:
        for reference in re.findall(r"\$\((\w+)\)", arg):
            assert reference in env, f"{arg} refers to {reference}, which the container does not define"
            arg = arg.replace(f"$({reference})", env[reference])
        args.append(arg)
    config = Path(args[args.index("--config") + 1])
    mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
    volumes = {volume["name"]: volume for volume in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes[mounts[str(config.parent)]]["configMap"]["name"] == "cloudburst-config"
    local = tmp_path / config.name
    local.write_text(config_file_text())
    args[args.index("--config") + 1] = str(local)
    return parse_arguments(args)


def service_for(endpoint_host, port):
    """The Service named ``endpoint_host`` exposing ``port``, and the workload it routes to."""
    service = named("Service", endpoint_host)
    assert port in {p["port"] for p in service["spec"]["ports"]}, f"{endpoint_host} does not expose {port}"
    (workload,) = selected_by(service["spec"]["selector"])
    return service, workload


def test_the_kustomization_lists_every_manifest_and_sets_their_namespace():
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    manifests = {path.name for path in DEPLOY.glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(kustomization["resources"]) == sorted(manifests)
    namespace = kustomization["namespace"]
    assert named("Namespace", namespace)
    for _, document in DOCUMENTS:
        if document["kind"] != "Namespace":
            assert document["metadata"]["namespace"] == namespace, document["metadata"]["name"]


@pytest.mark.parametrize(
    "document", [d for _, d in DOCUMENTS], ids=[f"{f}:{d['kind']}/{d['metadata']['name']}" for f, d in DOCUMENTS]
)
def test_every_document_is_valid_against_the_kubernetes_schema(document):
    try:
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as error:
        pytest.fail(f"{'.'.join(map(str, error.path))}: {error.message}")


def test_the_validation_is_strict_about_unknown_fields():
    deployment = copy.deepcopy(named("Deployment", "cloudburst-scheduler"))
    deployment["spec"]["template"]["spec"]["containers"][0]["readynessProbe"] = {"tcpSocket": {"port": 5000}}
    with pytest.raises(kubernetes_validate.ValidationError, match="readynessProbe"):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def test_every_long_running_container_has_probes_on_ports_it_exposes():
    for workload in workloads():
        # A Job runs to completion: it is never a backend to be ready, and its retries stand in for liveness.
        if workload["kind"] == "Job":
            continue
        names = port_names(workload)
        for container in containers(workload):
            for probe in ("readinessProbe", "livenessProbe"):
                assert probe in container, f"{workload['metadata']['name']}/{container['name']} has no {probe}"
                port = container[probe].get("tcpSocket", {}).get("port")
                assert port is None or port in names or port in names.values(), f"{probe} on unknown port {port}"


def test_every_container_has_resource_requests_and_limits():
    for workload in workloads():
        for container in containers(workload):
            resources = container.get("resources", {})
            where = f"{workload['metadata']['name']}/{container['name']}"
            assert {"cpu", "memory"} <= set(resources.get("requests", {})), f"{where} requests"
            assert {"cpu", "memory"} <= set(resources.get("limits", {})), f"{where} limits"


def test_the_cloudburst_image_is_the_one_the_dockerfile_builds():
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim$", dockerfile, re.MULTILINE)
    assert ".[redis,kubernetes]" in dockerfile
    assert 'ENTRYPOINT ["cloudburst"]' in dockerfile
    images = {container["image"] for workload in workloads() for container in containers(workload)}
    assert {image for image in images if image.startswith("cloudburst")} == {"cloudburst:latest"}


def scrape_port(deployment):
    """The port Prometheus is told to scrape (the ``prometheus.io/port`` annotation), which the pod must expose."""
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == "/metrics"
    port = int(annotations["prometheus.io/port"])
    assert port in container_ports(deployment)
    return port


def test_kvs_ports_are_the_kvs_defaults(tmp_path):
    deployment = named("Deployment", "cloudburst-kvs")
    args = role_arguments(deployment, tmp_path)
    assert (args.routing_port, args.storage_port, args.trigger_port) == (
        KVS.routing_port,
        KVS.storage_port,
        KVS.trigger_port,
    )
    storage = {KVS.storage_port + thread for thread in range(args.threads)}
    assert container_ports(deployment) == {KVS.routing_port, KVS.trigger_port, KVS.metrics_port, *storage}
    assert scrape_port(deployment) == KVS.metrics_port


def test_scheduler_ports_are_the_runtime_ports_and_its_service_exposes_them_all(tmp_path):
    deployment = named("Deployment", "cloudburst-scheduler")
    expected = {getattr(PORTS, port) for port in SCHEDULER_PORTS}
    assert container_ports(deployment) == expected
    service = named("Service", "cloudburst-scheduler")
    assert {port["port"] for port in service["spec"]["ports"]} == expected
    assert scrape_port(deployment) == PORTS.metrics_scheduler
    assert deployment["spec"]["replicas"] == 2


def test_node_ports_are_the_cache_and_executor_ports_of_its_executors(tmp_path):
    deployment = named("Deployment", "cloudburst-node")
    args = role_arguments(deployment, tmp_path)
    tids = range(args.executors + args.gpu_executors)
    cache = {DEFAULT_REQUEST_PORT, DEFAULT_UPDATE_PORT, DEFAULT_INVALIDATION_PORT, DEFAULT_CAUSAL_PORT}
    executors = {
        port
        for tid in tids
        for port in (
            PORTS.executor_control + tid,
            PORTS.executor_cancel + tid,
            PORTS.executor_inbox + tid,
            PORTS.metrics_executor + tid,
        )
    }
    assert container_ports(deployment) == {*cache, DEFAULT_SESSION_PORT, PORTS.metrics_cache, *executors}
    assert scrape_port(deployment) == PORTS.metrics_cache
    assert KVS.cache_update_port == DEFAULT_UPDATE_PORT, "the KVS pushes to the port the caches listen on"


def test_management_ports_are_the_runtime_ports(tmp_path):
    deployment = named("Deployment", "cloudburst-management")
    expected = {
        PORTS.management,
        PORTS.management_executors,
        PORTS.management_schedulers,
        PORTS.management_drains,
        PORTS.dashboard,
    }
    assert container_ports(deployment) == expected
    assert {port["port"] for port in named("Service", "cloudburst-management")["spec"]["ports"]} == expected
    assert scrape_port(deployment) == PORTS.dashboard


def test_services_route_to_ports_their_pods_expose():
    for _, service in DOCUMENTS:
        if service["kind"] != "Service":
            continue
        (workload,) = selected_by(service["spec"]["selector"])
        names = port_names(workload)
        for port in service["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            assert target in names or target in names.values(), f"{service['metadata']['name']}: {target}"


def test_roles_reach_the_kvs_and_the_management_service_through_their_services(tmp_path):
    for name in ("cloudburst-scheduler", "cloudburst-node"):
        args = role_arguments(named("Deployment", name), tmp_path)
        kvs = parse_endpoint(args.kvs)
        _, workload = service_for(kvs.host, kvs.port)
        assert workload["metadata"]["name"] == "cloudburst-kvs"
        assert kvs.port == KVS.routing_port
        _, management = service_for(args.management, PORTS.management)
        assert management["metadata"]["name"] == "cloudburst-management"
        assert args.host == "10.1.2.3", "each pod binds and advertises its own IP"


def test_the_kvs_stores_in_the_redis_cluster_of_the_statefulset(tmp_path):
    args = role_arguments(named("Deployment", "cloudburst-kvs"), tmp_path)
    settings = RedisSettings.from_url(args.engine)
    redis = named("StatefulSet", "redis")
    service = named("Service", redis["spec"]["serviceName"])
    assert service["spec"]["clusterIP"] == "None", "pods get stable names only from a headless Service"
    replicas = redis["spec"]["replicas"]
    assert settings.cluster
    assert sorted(settings.nodes) == [(f"redis-{i}.{service['metadata']['name']}", 6379) for i in range(replicas)]
    (container,) = containers(redis)
    args = container["args"]
    assert args[args.index("--cluster-enabled") + 1] == "yes"
    assert args[args.index("--appendonly") + 1] == "yes"
    assert container_ports(redis) == {6379, 6379 + REDIS_BUS_OFFSET}
    assert [claim["metadata"]["name"] for claim in redis["spec"]["volumeClaimTemplates"]] == ["data"]
    (create,) = containers(named("Job", "redis-cluster-create"))
    script = create["args"][0]
    assert "redis-cli --cluster create" in script
    assert "--cluster-yes" in script
    assert re.search(r"for i in ([\d ]+);", script)[1].split() == [str(i) for i in range(replicas)]


def test_the_management_service_scales_the_node_deployment_and_nothing_else(tmp_path):
    management = named("Deployment", "cloudburst-management")
    args = role_arguments(management, tmp_path)
    node = named("Deployment", args.k8s_deployment)
    assert args.provisioner == "kubernetes"
    assert args.k8s_namespace == node["metadata"]["namespace"]
    selector = dict(term.split("=", 1) for term in args.k8s_selector.split(","))
    assert node["spec"]["selector"]["matchLabels"] == selector
    assert selected_by(selector) == [node], "the selector must match the node pods and no other pods"
    assert "replicas" not in node["spec"], "the management service owns the node count; apply must not reset it"
    assert node["spec"]["selector"]["matchLabels"]["app"] == "cloudburst-node"


def rbac_needed():
    """What the provisioner's API calls need, derived from the calls it makes (its API protocols' methods)."""
    verbs = {"read": "get", "list": "list", "patch": "patch", "delete": "delete", "create": "create"}
    resources = {"deployment_scale": ("apps", "deployments/scale"), "pod": ("", "pods")}
    needed = set()
    for api in (DeploymentScaleApi, PodApi):
        for method in (name for name in vars(api) if not name.startswith("_")):
            match = re.fullmatch(r"(read|list|patch|delete|create)_namespaced_(\w+)", method)
            assert match, f"no RBAC rule known for {api.__name__}.{method}"
            needed.add((*resources[match[2]], verbs[match[1]]))
    return needed


def test_the_management_role_grants_exactly_what_the_provisioner_calls(tmp_path):
    args = role_arguments(named("Deployment", "cloudburst-management"), tmp_path)
    role = named("Role", "cloudburst-management")
    granted = set()
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                granted |= {(group, resource, verb) for verb in rule["verbs"]}
                if "resourceNames" in rule:
                    assert rule["resourceNames"] == [args.k8s_deployment]
    assert granted == rbac_needed()


def test_only_the_management_pods_run_with_the_role():
    binding = named("RoleBinding", "cloudburst-management")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "cloudburst-management",
    }
    (subject,) = binding["subjects"]
    assert subject["kind"] == "ServiceAccount"
    for workload in workloads():
        spec = workload["spec"]["template"]["spec"]
        if workload["metadata"]["name"] == "cloudburst-management":
            assert spec["serviceAccountName"] == subject["name"]
        else:
            assert spec.get("automountServiceAccountToken") is False, workload["metadata"]["name"]
