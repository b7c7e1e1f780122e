"""The Kubernetes provisioner against an in-memory API server that simulates a Deployment's ReplicaSet."""

import copy
import json
import logging
import pickle
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from http import HTTPStatus

import pytest
import urllib3
from kubernetes import client, config
from kubernetes.client import (
    V1Container,
    V1ObjectMeta,
    V1Pod,
    V1PodCondition,
    V1PodList,
    V1PodSpec,
    V1PodStatus,
    V1Scale,
    V1ScaleSpec,
    V1ScaleStatus,
)
from kubernetes.client.exceptions import ApiException

from cloudburst.errors import CloudburstError, ConfigError, ProvisioningError
from cloudburst.management.kubernetes import SCALE_ATTEMPTS, KubernetesProvisioner, KubernetesProvisionerConfig
from cloudburst.testing import FakeClock

NAMESPACE = "cloudburst"
DEPLOYMENT = "executors"
LABELS = {"app": "cloudburst", "role": "executor"}
SELECTOR = "app=cloudburst,role=executor"
# Spelled out rather than imported: the fake plays Kubernetes, which knows the annotation by this name.
COST = "controller.kubernetes.io/pod-deletion-cost"
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
#: Kubernetes' order of phases when a ReplicaSet picks pods to delete.
PHASE_ORDER = {"Pending": 0, "Unknown": 1, "Running": 2}
#: A pod outside the Deployment (it does not match the selector) at an address of its own.
FOREIGN_IP = "10.0.9.1"


def status_error(status, reason, message):
    return ApiException(status=status, reason=reason, body=json.dumps({"kind": "Status", "message": message}))


class FakeApiServer:
    """One Deployment's scale and pods, with its ReplicaSet controller and the kubelets simulated.

    Serves as both ``AppsV1Api`` and ``CoreV1Api`` and holds the client's real models. Before each call the
    controller catches up, unless ``paused``: pods that were terminating are gone, then pods are created or deleted
    until the active ones match the replica count. It deletes as Kubernetes ranks pods: unscheduled first, then by
    phase, not Ready before Ready, lowest deletion cost, newest. Each listing moves each starting pod one step: the
    first step schedules it, makes it Running and gives it the lowest free IP; ``steps_to_ready`` steps make it Ready.

    Args:
        ready: Pods that are up from the start (the replica count).
        steps_to_ready: Listings a new pod takes to become Ready.
    """

    def __init__(self, ready=0, *, steps_to_ready=3):
        self.replicas = ready
        self.resource_version = 1
        self.steps_to_ready = steps_to_ready
        #: The next this many pods created never get a machine; they stay Pending.
        self.unschedulable = 0
        self.paused = False
        #: Method name -> what its next calls do, in order: an exception to raise, or None to answer.
        self.failures: dict[str, list[BaseException | None]] = {}
        #: Called once inside the next scale patch, before it applies: a change made concurrently by someone else.
        self.before_scale_patch: Callable[[], None] | None = None
        self.calls: list[str] = []
        self.request_timeouts: set[object] = set()
        self.scale_patches: list[int] = []
        self.pods: dict[str, V1Pod] = {}
        self._steps: dict[str, int | None] = {}
        self._serial = 0
        self._add_foreign_pod()
        self._reconcile()
        for name in list(self._steps):
            while name in self._steps:
                self._step(name)

    # -- AppsV1Api ---------------------------------------------------------------------------------------------

    def read_namespaced_deployment_scale(self, name, namespace, **options):
        self._enter("read_namespaced_deployment_scale", options)
        self._check_deployment(name, namespace)
        return self._scale()

    def patch_namespaced_deployment_scale(self, name, namespace, body, **options):
        self._enter("patch_namespaced_deployment_scale", options)
        self._check_deployment(name, namespace)
        if self.before_scale_patch is not None:
            hook, self.before_scale_patch = self.before_scale_patch, None
            hook()
        version = body.get("metadata", {}).get("resourceVersion")
        if version is not None and version != str(self.resource_version):
            raise status_error(409, "Conflict", "the object has been modified; please apply your changes again")
        replicas = body["spec"]["replicas"]
        if replicas < 0:
            raise status_error(422, "Unprocessable Entity", "spec.replicas: must be greater than or equal to 0")
        self.set_replicas(replicas)
        self.scale_patches.append(replicas)
        return self._scale()

    # -- CoreV1Api ---------------------------------------------------------------------------------------------

    def list_namespaced_pod(self, namespace, *, label_selector=None, **options):
        self._enter("list_namespaced_pod", options)
        for name in list(self._steps):
            self._step(name)
        wanted = dict(term.split("=", 1) for term in label_selector.split(",")) if label_selector else {}
        items = [
            copy.deepcopy(pod)
            for pod in self.pods.values()
            if pod.metadata.namespace == namespace and wanted.items() <= pod.metadata.labels.items()
        ]
        return V1PodList(items=items)

    def patch_namespaced_pod(self, name, namespace, body, **options):
        self._enter("patch_namespaced_pod", options)
        pod = self._pod(name, namespace)
        annotations = dict(pod.metadata.annotations or {})
        for key, value in body["metadata"]["annotations"].items():
            if value is None:
                annotations.pop(key, None)
                continue
            if key == COST and not (isinstance(value, str) and -(2**31) <= int(value) < 2**31):
                raise status_error(422, "Unprocessable Entity", f"{COST} must be an int32 in a string")
            annotations[key] = value
        pod.metadata.annotations = annotations
        return copy.deepcopy(pod)

    def delete_namespaced_pod(self, name, namespace, **options):
        self._enter("delete_namespaced_pod", options)
        pod = self._pod(name, namespace)
        pod.metadata.deletion_timestamp = EPOCH
        return copy.deepcopy(pod)

    # -- what tests look at and do -----------------------------------------------------------------------------

    def set_replicas(self, replicas):
        self.replicas = replicas
        self.resource_version += 1

    def settle(self, rounds=10):
        """Lets the controller and the kubelets run until nothing changes."""
        for _ in range(rounds):
            self._reconcile()
            for name in list(self._steps):
                self._step(name)

    def reconcile(self):
        self._reconcile()

    def crash(self, ip):
        """The pod at ``ip`` is gone at once (evicted, say); the ReplicaSet replaces it at its next run."""
        name = self.pod_at(ip).metadata.name
        del self.pods[name]
        self._steps.pop(name, None)

    def owned(self):
        return [pod for pod in self.pods.values() if pod.metadata.labels == LABELS]

    def serving_ips(self):
        return {
            pod.status.pod_ip
            for pod in self.owned()
            if not pod.metadata.deletion_timestamp and pod.status.phase == "Running" and _ready(pod)
        }

    def pending(self):
        return [pod.metadata.name for pod in self.owned() if pod.status.phase == "Pending"]

    def pod_at(self, ip):
        return next((pod for pod in self.owned() if pod.status.pod_ip == ip), None)

    def oldest_ip(self):
        return min(self.owned(), key=lambda pod: pod.metadata.creation_timestamp).status.pod_ip

    # -- the simulation ----------------------------------------------------------------------------------------

    def _enter(self, method, options):
        self.calls.append(method)
        self.request_timeouts.add(options.get("_request_timeout"))
        queue = self.failures.get(method)
        if queue:
            error = queue.pop(0)
            if error is not None:
                raise error
        self._reconcile()

    def _check_deployment(self, name, namespace):
        if (name, namespace) != (DEPLOYMENT, NAMESPACE):
            raise status_error(404, "Not Found", f'deployments.apps "{name}" not found')

    def _pod(self, name, namespace):
        pod = self.pods.get(name)
        if pod is None or pod.metadata.namespace != namespace:
            raise status_error(404, "Not Found", f'pods "{name}" not found')
        return pod

    def _scale(self):
        return V1Scale(
            metadata=V1ObjectMeta(name=DEPLOYMENT, namespace=NAMESPACE, resource_version=str(self.resource_version)),
            spec=V1ScaleSpec(replicas=self.replicas),
            status=V1ScaleStatus(replicas=len(self._active()), selector=SELECTOR),
        )

    def _active(self):
        return [pod for pod in self.owned() if not pod.metadata.deletion_timestamp]

    def _reconcile(self):
        if self.paused:
            return
        for name in [name for name, pod in self.pods.items() if pod.metadata.deletion_timestamp]:
            del self.pods[name]
            self._steps.pop(name, None)
        active = self._active()
        for _ in range(self.replicas - len(active)):
            self._create()
        excess = len(active) - self.replicas
        for pod in sorted(active, key=_deletion_order)[: max(excess, 0)]:
            pod.metadata.deletion_timestamp = EPOCH

    def _create(self):
        self._serial += 1
        name = f"{DEPLOYMENT}-{self._serial:04d}"
        self.pods[name] = V1Pod(
            metadata=V1ObjectMeta(
                name=name,
                namespace=NAMESPACE,
                uid=f"uid-{self._serial}",
                labels=dict(LABELS),
                creation_timestamp=EPOCH + timedelta(seconds=self._serial),
            ),
            spec=V1PodSpec(containers=[V1Container(name="node", image="cloudburst")]),
            status=V1PodStatus(phase="Pending", conditions=[V1PodCondition(type="PodScheduled", status="False")]),
        )
        if self.unschedulable > 0:
            self.unschedulable -= 1
            self._steps[name] = None
        else:
            self._steps[name] = self.steps_to_ready

    def _step(self, name):
        left = self._steps[name]
        pod = self.pods[name]
        if left is None or pod.metadata.deletion_timestamp:
            return
        if not pod.spec.node_name:
            pod.spec.node_name = "machine-1"
            pod.status.phase = "Running"
            pod.status.pod_ip = self._free_ip()
            pod.status.conditions = [V1PodCondition(type="Ready", status="False")]
        if left <= 1:
            pod.status.conditions = [V1PodCondition(type="Ready", status="True")]
            del self._steps[name]
        else:
            self._steps[name] = left - 1

    def _free_ip(self):
        # The lowest free address, so that a new pod can take a departed pod's address, as Kubernetes allows.
        taken = {pod.status.pod_ip for pod in self.pods.values()}
        return next(f"10.0.0.{n}" for n in range(2, 255) if f"10.0.0.{n}" not in taken)

    def _add_foreign_pod(self):
        self.pods["scheduler-0"] = V1Pod(
            metadata=V1ObjectMeta(
                name="scheduler-0",
                namespace=NAMESPACE,
                uid="uid-scheduler",
                labels={"app": "cloudburst", "role": "scheduler"},
                creation_timestamp=EPOCH,
            ),
            spec=V1PodSpec(containers=[V1Container(name="scheduler", image="cloudburst")], node_name="machine-0"),
            status=V1PodStatus(
                phase="Running", pod_ip=FOREIGN_IP, conditions=[V1PodCondition(type="Ready", status="True")]
            ),
        )


def _ready(pod):
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


def _deletion_order(pod):
    cost = int((pod.metadata.annotations or {}).get(COST, "0"))
    newest_first = -pod.metadata.creation_timestamp.timestamp()
    return (bool(pod.spec.node_name), PHASE_ORDER.get(pod.status.phase, 0), _ready(pod), cost, newest_first)


CONFIG = KubernetesProvisionerConfig(NAMESPACE, DEPLOYMENT, SELECTOR)


def make(fake, **settings):
    clock = FakeClock()
    provisioner_config = KubernetesProvisionerConfig(
        NAMESPACE, DEPLOYMENT, SELECTOR, **({"ready_timeout": 30.0, "poll_interval": 2.0} | settings)
    )
    return KubernetesProvisioner(fake, fake, provisioner_config, clock=clock, sleep=clock.advance), clock


# -- adding nodes ------------------------------------------------------------------------------------------------


def test_add_nodes_returns_the_new_pods_once_running_and_ready():
    fake = FakeApiServer(ready=2)
    before = fake.serving_ips()
    provisioner, clock = make(fake)

    added = provisioner.add_nodes(2)

    assert len(added) == 2
    assert not set(added) & before
    # Ready when returned, not merely Running with an address (which the fake's pods are a step earlier).
    assert fake.serving_ips() == before | set(added)
    assert fake.replicas == 4
    assert 0 < clock.now() < 30.0
    assert fake.request_timeouts == {30.0}


def test_add_nodes_does_not_report_a_pod_that_was_starting_before():
    fake = FakeApiServer(ready=1)
    fake.set_replicas(2)
    fake.reconcile()
    (earlier,) = fake.pending()
    provisioner, _ = make(fake)

    (added,) = provisioner.add_nodes(1)

    # The earlier pod was ahead and became Ready first; it is not the node asked for.
    assert fake.pods[earlier].status.pod_ip in fake.serving_ips()
    assert added != fake.pods[earlier].status.pod_ip
    assert added in fake.serving_ips()
    assert fake.replicas == 3


def test_add_nodes_returns_fewer_at_the_deadline_and_leaves_the_rest_starting(caplog):
    fake = FakeApiServer(ready=1)
    fake.unschedulable = 1
    provisioner, clock = make(fake, ready_timeout=30.0, poll_interval=4.0)

    with caplog.at_level(logging.WARNING, logger="cloudburst.management.kubernetes"):
        added = provisioner.add_nodes(3)

    assert len(added) == 2
    assert set(added) <= fake.serving_ips()
    # It waited to the deadline and not a poll interval past it.
    assert clock.now() == 30.0
    # The slow pod is left to start: it joins by reporting if it ever comes up.
    assert fake.replicas == 4
    (slow,) = fake.pending()
    assert slow in caplog.text
    assert all(ip in caplog.text for ip in added)


def test_add_nodes_with_nothing_ready_by_the_deadline_returns_none():
    fake = FakeApiServer(ready=1, steps_to_ready=100)
    provisioner, clock = make(fake, ready_timeout=10.0)

    assert provisioner.add_nodes(2) == []
    assert clock.now() == 10.0
    assert fake.replicas == 3


def test_a_failed_listing_while_waiting_is_retried():
    fake = FakeApiServer(ready=0)
    fake.failures["list_namespaced_pod"] = [None, status_error(503, "Service Unavailable", "etcd leader changed")]
    provisioner, _ = make(fake)

    added = provisioner.add_nodes(1)

    assert len(added) == 1
    assert set(added) == fake.serving_ips()


def test_adding_no_nodes_calls_nothing_and_a_negative_count_is_refused():
    fake = FakeApiServer(ready=1)
    provisioner, _ = make(fake)

    assert provisioner.add_nodes(0) == []
    assert fake.calls == []
    with pytest.raises(ValueError, match="-1"):
        provisioner.add_nodes(-1)


def test_a_concurrent_scale_change_is_not_overwritten():
    fake = FakeApiServer(ready=2)
    fake.before_scale_patch = lambda: fake.set_replicas(fake.replicas + 1)
    provisioner, _ = make(fake)

    provisioner.add_nodes(1)

    assert fake.replicas == 4


@pytest.mark.parametrize(("conflicts", "succeeds"), [(SCALE_ATTEMPTS - 1, True), (SCALE_ATTEMPTS, False)])
def test_scaling_retries_conflicts_a_bounded_number_of_times(conflicts, succeeds):
    fake = FakeApiServer(ready=2)
    fake.failures["patch_namespaced_deployment_scale"] = [
        status_error(409, "Conflict", "the object has been modified") for _ in range(conflicts)
    ]
    provisioner, _ = make(fake)

    if succeeds:
        assert len(provisioner.add_nodes(1)) == 1
        assert fake.replicas == 3
    else:
        with pytest.raises(ProvisioningError, match="409 Conflict"):
            provisioner.add_nodes(1)
        assert fake.replicas == 2


# -- draining and releasing --------------------------------------------------------------------------------------


def test_drain_then_release_removes_exactly_the_drained_pod():
    fake = FakeApiServer(ready=4)
    # Left to itself the ReplicaSet would delete the newest pod; the oldest must go instead.
    drained = fake.oldest_ip()
    others = fake.serving_ips() - {drained}
    provisioner, _ = make(fake)

    provisioner.drain(drained)
    assert fake.pod_at(drained).metadata.annotations[COST] == str(-(2**31))
    assert fake.serving_ips() == others | {drained}
    provisioner.release(drained)
    fake.settle()

    assert fake.replicas == 3
    assert fake.serving_ips() == others
    assert fake.pod_at(drained) is None
    # Lowering the count was enough: the cost made the ReplicaSet pick the drained pod.
    assert "delete_namespaced_pod" not in fake.calls


def test_release_removes_the_drained_pod_even_when_a_starting_pod_would_go_first():
    fake = FakeApiServer(ready=3)
    fake.unschedulable = 1
    provisioner, _ = make(fake, ready_timeout=10.0)
    assert provisioner.add_nodes(1) == []
    drained = fake.oldest_ip()
    others = fake.serving_ips() - {drained}

    provisioner.drain(drained)
    provisioner.release(drained)
    fake.settle()

    # The ReplicaSet deletes a Pending pod before any Running one, whatever the costs; the drained pod still went.
    assert fake.pod_at(drained) is None
    assert fake.serving_ips() == others
    assert len(fake.pending()) == 1
    assert fake.replicas == 3


def test_two_drained_nodes_are_released_one_at_a_time_in_the_order_asked():
    fake = FakeApiServer(ready=4)
    first, second = sorted(fake.serving_ips(), key=lambda ip: fake.pod_at(ip).metadata.creation_timestamp)[:2]
    provisioner, _ = make(fake)
    provisioner.drain(first)
    provisioner.drain(second)

    provisioner.release(second)
    fake.settle()

    assert fake.pod_at(second) is None
    assert first in fake.serving_ips()
    assert fake.replicas == 3
    provisioner.release(first)
    fake.settle()
    assert fake.pod_at(first) is None
    assert len(fake.serving_ips()) == 2
    assert fake.replicas == 2


def test_releasing_a_node_twice_shrinks_once():
    fake = FakeApiServer(ready=3)
    drained = fake.oldest_ip()
    others = fake.serving_ips() - {drained}
    provisioner, _ = make(fake)
    provisioner.drain(drained)

    # The ReplicaSet has not acted on the first release when the second comes: the pod still looks alive.
    fake.paused = True
    provisioner.release(drained)
    provisioner.release(drained)
    assert fake.replicas == 2
    fake.paused = False
    fake.settle()
    provisioner.release(drained)

    assert fake.replicas == 2
    assert fake.scale_patches == [2]
    assert fake.serving_ips() == others


def test_a_drain_outlives_the_provisioner_that_made_it():
    fake = FakeApiServer(ready=3)
    drained = fake.oldest_ip()
    others = fake.serving_ips() - {drained}
    make(fake)[0].drain(drained)

    # A restarted management service releases the node with a new provisioner: the mark is on the pod itself.
    make(fake)[0].release(drained)
    fake.settle()

    assert fake.serving_ips() == others
    assert fake.replicas == 2
    assert "delete_namespaced_pod" not in fake.calls


def test_a_node_released_without_a_drain_still_goes_alone():
    fake = FakeApiServer(ready=3)
    node = fake.oldest_ip()
    others = fake.serving_ips() - {node}
    provisioner, _ = make(fake)

    provisioner.release(node)
    fake.settle()

    assert fake.serving_ips() == others
    assert fake.replicas == 2


def test_unknown_nodes_are_neither_drained_nor_released():
    fake = FakeApiServer(ready=2)
    before = fake.serving_ips()
    provisioner, _ = make(fake)

    # An address no pod has, and one that belongs to a pod outside the Deployment.
    for node in ("10.0.0.99", FOREIGN_IP):
        provisioner.drain(node)
        provisioner.release(node)
    fake.settle()

    assert fake.replicas == 2
    assert fake.serving_ips() == before
    assert set(fake.calls) == {"list_namespaced_pod"}
    assert fake.pods["scheduler-0"].metadata.annotations is None


def test_a_new_pod_at_a_drained_address_is_not_released():
    fake = FakeApiServer(ready=3)
    drained = fake.oldest_ip()
    provisioner, _ = make(fake)
    provisioner.drain(drained)

    fake.crash(drained)
    fake.settle()
    replacement = fake.pod_at(drained)
    assert replacement is not None
    assert replacement.metadata.annotations is None
    provisioner.release(drained)
    fake.settle()

    assert fake.replicas == 3
    assert fake.pod_at(drained).metadata.uid == replacement.metadata.uid
    assert len(fake.serving_ips()) == 3


def test_release_never_scales_below_zero():
    fake = FakeApiServer(ready=1)
    (node,) = fake.serving_ips()
    provisioner, _ = make(fake)
    provisioner.drain(node)

    # Scaled to zero by hand, and the ReplicaSet has not caught up yet.
    fake.paused = True
    fake.set_replicas(0)
    provisioner.release(node)

    assert fake.replicas == 0
    assert fake.scale_patches == []


# -- errors ------------------------------------------------------------------------------------------------------


def forbidden():
    return status_error(403, "Forbidden", 'pods is forbidden: User "system:serviceaccount:cloudburst:default"')


def unreachable():
    return urllib3.exceptions.MaxRetryError(None, "https://10.96.0.1/api", urllib3.exceptions.ProtocolError("reset"))


@pytest.mark.parametrize("failure", [forbidden, unreachable])
@pytest.mark.parametrize(
    ("method", "action"),
    [
        ("list_namespaced_pod", lambda provisioner, node: provisioner.add_nodes(1)),
        ("read_namespaced_deployment_scale", lambda provisioner, node: provisioner.add_nodes(1)),
        ("patch_namespaced_deployment_scale", lambda provisioner, node: provisioner.add_nodes(1)),
        ("list_namespaced_pod", lambda provisioner, node: provisioner.drain(node)),
        ("patch_namespaced_pod", lambda provisioner, node: provisioner.drain(node)),
        ("list_namespaced_pod", lambda provisioner, node: provisioner.release(node)),
        ("patch_namespaced_deployment_scale", lambda provisioner, node: provisioner.release(node)),
        # Not drained, so the pod is deleted by name.
        ("delete_namespaced_pod", lambda provisioner, node: provisioner.release(node)),
    ],
)
def test_api_errors_become_provisioning_errors(method, action, failure):
    fake = FakeApiServer(ready=2)
    node = fake.oldest_ip()
    provisioner, _ = make(fake)
    error = failure()
    fake.failures[method] = [error]

    with pytest.raises(ProvisioningError) as caught:
        action(provisioner, node)

    assert caught.value.__cause__ is error
    assert isinstance(caught.value, CloudburstError)
    assert f"deployment {NAMESPACE}/{DEPLOYMENT}" in str(caught.value)
    if isinstance(error, ApiException):
        assert "HTTP 403 Forbidden: pods is forbidden" in caught.value.reason
    else:
        assert "could not be reached" in caught.value.reason
    assert fake.replicas == 2


def test_a_pod_gone_before_it_is_marked_is_not_an_error():
    fake = FakeApiServer(ready=2)
    node = fake.oldest_ip()
    provisioner, _ = make(fake)
    fake.failures["patch_namespaced_pod"] = [status_error(404, "Not Found", 'pods "executors-0001" not found')]

    provisioner.drain(node)


def test_provisioning_errors_survive_pickling():
    error = ProvisioningError("scaling (deployment a/b)", "HTTP 403 Forbidden", node="10.0.0.2")

    restored = pickle.loads(pickle.dumps(error))

    assert type(restored) is ProvisioningError
    assert (restored.operation, restored.reason, restored.node) == (error.operation, error.reason, "10.0.0.2")
    assert str(restored) == str(error) == "scaling (deployment a/b) failed: HTTP 403 Forbidden (node=10.0.0.2)"


# -- the real client ---------------------------------------------------------------------------------------------


class RecordingPool:
    """Stands in for the client's urllib3 pool: records each request and answers from a table of canned bodies."""

    def __init__(self, answers):
        self.answers = answers
        self.requests = []

    def request(self, method, url, **options):
        path, _, query = url.removeprefix("https://k8s.test").partition("?")
        self.requests.append((method, path, query, options["headers"].get("Content-Type"), options.get("body")))
        status, body = self.answers[(method, path)]
        return urllib3.HTTPResponse(
            body=json.dumps(body).encode(),
            status=status,
            reason=HTTPStatus(status).phrase,
            headers={"Content-Type": "application/json"},
            preload_content=False,
        )


def test_the_real_client_sends_the_requests_kubernetes_expects():
    pods_path = f"/api/v1/namespaces/{NAMESPACE}/pods"
    scale_path = f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/{DEPLOYMENT}/scale"
    pod = {
        "metadata": {"name": "executors-1", "uid": "u1", "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"containers": [{"name": "node"}], "nodeName": "machine-1"},
        "status": {"phase": "Running", "podIP": "10.0.0.2", "conditions": [{"type": "Ready", "status": "True"}]},
    }
    scale = {"kind": "Scale", "metadata": {"name": DEPLOYMENT, "resourceVersion": "41"}, "spec": {"replicas": 2}}
    pool = RecordingPool(
        {
            ("GET", pods_path): (200, {"kind": "PodList", "items": [pod]}),
            ("PATCH", f"{pods_path}/executors-1"): (200, {"kind": "Pod", "metadata": {"name": "executors-1"}}),
            ("GET", scale_path): (200, scale),
            ("PATCH", scale_path): (403, {"kind": "Status", "message": "cannot patch deployments/scale"}),
        }
    )
    api = client.ApiClient(client.Configuration(host="https://k8s.test"))
    api.rest_client.pool_manager = pool
    provisioner = KubernetesProvisioner(client.AppsV1Api(api), client.CoreV1Api(api), CONFIG)

    provisioner.drain("10.0.0.2")
    with pytest.raises(ProvisioningError, match="HTTP 403 Forbidden: cannot patch deployments/scale"):
        provisioner.release("10.0.0.2")

    merge_patch = "application/strategic-merge-patch+json"
    selector = "labelSelector=app%3Dcloudburst%2Crole%3Dexecutor"
    assert [request[:4] for request in pool.requests] == [
        ("GET", pods_path, selector, None),
        ("PATCH", f"{pods_path}/executors-1", "", merge_patch),
        ("GET", pods_path, selector, None),
        ("GET", scale_path, "", None),
        ("PATCH", scale_path, "", merge_patch),
    ]
    assert json.loads(pool.requests[1][4]) == {"metadata": {"annotations": {COST: "-2147483648"}}}
    assert json.loads(pool.requests[4][4]) == {"spec": {"replicas": 1}, "metadata": {"resourceVersion": "41"}}


# -- construction ------------------------------------------------------------------------------------------------


@pytest.fixture
def loaders(monkeypatch):
    """Replaces the client's credential loaders; each entry says what the loader does: a host to set, or an error."""
    calls = []
    behaviour = {}

    def loader(name):
        def load(client_configuration=None, **_):
            calls.append(name)
            outcome = behaviour[name]
            if isinstance(outcome, Exception):
                raise outcome
            client_configuration.host = outcome

        return load

    monkeypatch.setattr(config, "load_incluster_config", loader("in-cluster"))
    monkeypatch.setattr(config, "load_kube_config", loader("kube-config"))
    built = {}
    monkeypatch.setattr(client, "AppsV1Api", lambda api: built.setdefault("apps", api))
    monkeypatch.setattr(client, "CoreV1Api", lambda api: built.setdefault("core", api))
    return calls, behaviour, built


def test_from_environment_uses_in_cluster_credentials_first(loaders):
    calls, behaviour, built = loaders
    behaviour["in-cluster"] = "https://10.96.0.1:443"

    provisioner = KubernetesProvisioner.from_environment(CONFIG)

    assert calls == ["in-cluster"]
    assert provisioner.config is CONFIG
    assert built["apps"] is built["core"]
    assert built["apps"].configuration.host == "https://10.96.0.1:443"
    # The credentials stay the provisioner's: the process-wide default configuration is untouched.
    assert client.Configuration.get_default_copy().host != "https://10.96.0.1:443"


def test_from_environment_falls_back_to_the_kube_config_file(loaders):
    calls, behaviour, built = loaders
    behaviour["in-cluster"] = config.ConfigException("Service host/port is not set.")
    behaviour["kube-config"] = "https://k8s.example:6443"

    KubernetesProvisioner.from_environment(CONFIG)

    assert calls == ["in-cluster", "kube-config"]
    assert built["apps"].configuration.host == "https://k8s.example:6443"


def test_from_environment_without_credentials_raises(loaders):
    _, behaviour, built = loaders
    behaviour["in-cluster"] = config.ConfigException("Service host/port is not set.")
    behaviour["kube-config"] = config.ConfigException("Invalid kube-config file. No configuration found.")

    with pytest.raises(ProvisioningError, match=r"Service host/port is not set.*No configuration found"):
        KubernetesProvisioner.from_environment(CONFIG)
    assert built == {}


@pytest.mark.parametrize(
    "change",
    [
        {"namespace": ""},
        {"deployment": " "},
        {"label_selector": ""},
        {"ready_timeout": -1.0},
        {"poll_interval": 0.0},
        {"request_timeout": 0.0},
    ],
)
def test_config_rejects_bad_settings(change):
    settings = {"namespace": NAMESPACE, "deployment": DEPLOYMENT, "label_selector": SELECTOR} | change

    with pytest.raises(ConfigError, match=next(iter(change))):
        KubernetesProvisionerConfig(**settings)
