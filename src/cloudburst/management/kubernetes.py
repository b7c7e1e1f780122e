"""The Kubernetes provisioner of the management service: executor nodes as the pods of one Deployment.

A node (a node cache and its executors) is one pod of a Deployment, and its address is the pod's IP. Adding nodes
raises the Deployment's replica count through its scale subresource and waits for the new pods to be Running and
Ready. Draining a node gives its pod the lowest ``controller.kubernetes.io/pod-deletion-cost``; releasing it lowers
the replica count by one, and the ReplicaSet deletes the pod with the lowest cost: the drained one.

Why a Deployment and pod-deletion-cost rather than a StatefulSet: a StatefulSet always shrinks from its highest
ordinal, so the node the management service chose to drain (the least loaded one) could not be the one released;
it could only ever drain whichever pod happens to be last. Nodes need no stable names or volumes either (the node
cache is a cache), which is all a StatefulSet would add.

The deletion cost is not the ReplicaSet's first criterion. It deletes unscheduled pods first, then Pending ones,
then pods that are not Ready, and compares costs only among pods alike in those. Pods in that state do occur here:
:meth:`KubernetesProvisioner.add_nodes` stops waiting at a deadline and leaves slow pods starting. When some
other pod would go before the drained one (or alongside it, as a second drained pod would),
:meth:`~KubernetesProvisioner.release` deletes the drained pod by name before lowering the count, so that the
released node goes and no other (the ReplicaSet may start a replacement in between, which the lowered count removes
again before it is up). During a rollout the Deployment splits a scale-down between its old and new ReplicaSets,
which no pod annotation controls; scaling the executor pool while its pod template changes is best avoided.

What :meth:`~KubernetesProvisioner.drain` cannot do from outside: the kubelet restarts any container of a
Deployment's pod that exits, whatever its exit code. The node's image must therefore run its executors under a
supervisor that leaves an executor that exited with code 0 (a departure) down: ``cloudburst node``
(:class:`~cloudburst.cluster.node.NodeServer`), as ``deploy/kubernetes/node.yaml`` does.

The provisioner needs these permissions in its namespace: ``get`` and ``patch`` on ``deployments/scale``, and
``list``, ``patch`` and ``delete`` on ``pods``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

import urllib3
from kubernetes import client as kube_client
from kubernetes import config as kube_config
from kubernetes.client import V1Pod, V1PodList, V1Scale
from kubernetes.client.exceptions import ApiException

from cloudburst.clock import Clock, SystemClock
from cloudburst.errors import ConfigError, ProvisioningError

logger = logging.getLogger(__name__)

#: The pod annotation a ReplicaSet consults when it shrinks: among pods otherwise alike, the lowest cost goes first.
POD_DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"
#: The cost given to a drained node's pod: the lowest the annotation accepts (it is an int32).
DRAINED_DELETION_COST = -(2**31)
#: Attempts at one replica change when the Deployment changed between reading its scale and patching it.
SCALE_ATTEMPTS = 5

#: Pod phases in the order the ReplicaSet deletes them (an unknown phase ranks with Pending, as it does there).
_PHASE_ORDER = {"Pending": 0, "Unknown": 1, "Running": 2}
#: Pods in these phases are over: the ReplicaSet neither counts nor deletes them.
_FINISHED_PHASES = frozenset({"Succeeded", "Failed"})

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class KubernetesProvisionerConfig:
    """Which Deployment holds the executor nodes, and how long to wait for new ones.

    Attributes:
        namespace: The Deployment's namespace.
        deployment: The Deployment whose pods are the executor nodes (one pod per node).
        label_selector: Selects the Deployment's pods and nothing else, as ``key=value`` terms joined by commas
            (usually its ``spec.selector.matchLabels``). Other pods at a node's address are never touched.
        ready_timeout: Seconds :meth:`KubernetesProvisioner.add_nodes` waits for new pods to be Running and Ready.
            The management loop waits with it, so it is kept short: pods that come up later still join, since
            their executors report to the management service on their own.
        poll_interval: Seconds between listings of the pods while waiting.
        request_timeout: Seconds one API request may take, so that an unresponsive API server cannot stall the
            management loop.

    Raises:
        ConfigError: A name is empty or a duration is out of range.
    """

    namespace: str
    deployment: str
    label_selector: str
    ready_timeout: float = 120.0
    poll_interval: float = 2.0
    request_timeout: float = 30.0

    def __post_init__(self) -> None:
        for setting in ("namespace", "deployment", "label_selector"):
            if not getattr(self, setting).strip():
                raise ConfigError(f"the Kubernetes provisioner's {setting} must not be empty")
        if self.ready_timeout < 0:
            raise ConfigError(f"ready_timeout must not be negative, not {self.ready_timeout}")
        if not (self.poll_interval > 0 and self.request_timeout > 0):
            raise ConfigError(
                f"poll_interval and request_timeout must be positive, not {self.poll_interval} and "
                f"{self.request_timeout}"
            )


class DeploymentScaleApi(Protocol):
    """The calls of :class:`kubernetes.client.AppsV1Api` the provisioner makes."""

    def read_namespaced_deployment_scale(self, name: str, namespace: str, *, _request_timeout: float) -> V1Scale:
        """The Deployment's scale subresource."""
        ...

    def patch_namespaced_deployment_scale(
        self, name: str, namespace: str, body: dict[str, object], *, _request_timeout: float
    ) -> V1Scale:
        """Patches the Deployment's scale subresource."""
        ...


class PodApi(Protocol):
    """The calls of :class:`kubernetes.client.CoreV1Api` the provisioner makes."""

    def list_namespaced_pod(self, namespace: str, *, label_selector: str, _request_timeout: float) -> V1PodList:
        """The namespace's pods matching ``label_selector``."""
        ...

    def patch_namespaced_pod(
        self, name: str, namespace: str, body: dict[str, object], *, _request_timeout: float
    ) -> V1Pod:
        """Patches a pod."""
        ...

    def delete_namespaced_pod(self, name: str, namespace: str, *, _request_timeout: float) -> object:
        """Deletes a pod (gracefully: it terminates as its spec says)."""
        ...


@dataclass(frozen=True, slots=True)
class _Pod:
    """What the provisioner reads of a pod."""

    name: str
    uid: str
    ip: str
    phase: str
    scheduled: bool
    ready: bool
    terminating: bool
    deletion_cost: int
    created: float

    @classmethod
    def of(cls, pod: V1Pod) -> _Pod:
        meta, spec, status = pod.metadata, pod.spec, pod.status
        name = (meta.name if meta else None) or ""
        annotations = (meta.annotations if meta else None) or {}
        try:
            cost = int(annotations.get(POD_DELETION_COST, "0"))
        except ValueError:
            # The ReplicaSet treats a malformed cost as the default.
            cost = 0
        conditions = (status.conditions if status else None) or []
        created = meta.creation_timestamp if meta else None
        return cls(
            name=name,
            # Names are unique only at one time; a uid also tells apart a new pod that reuses a name.
            uid=(meta.uid if meta else None) or name,
            ip=(status.pod_ip if status else None) or "",
            phase=(status.phase if status else None) or "",
            scheduled=bool(spec and spec.node_name),
            ready=any(c.type == "Ready" and c.status == "True" for c in conditions),
            terminating=bool(meta and meta.deletion_timestamp),
            deletion_cost=cost,
            created=created.timestamp() if created else 0.0,
        )

    @property
    def active(self) -> bool:
        """Whether the ReplicaSet counts the pod toward its replicas (and may delete it when it shrinks)."""
        return not self.terminating and self.phase not in _FINISHED_PHASES

    @property
    def serving(self) -> bool:
        """Whether the pod is up as a node: Running, Ready and addressable."""
        return self.active and self.phase == "Running" and self.ready and bool(self.ip)

    def deletion_rank(self) -> tuple[int, int, int, int]:
        """The ReplicaSet's first criteria for which pod to delete, lowest first (later ones break ties)."""
        return (int(self.scheduled), _PHASE_ORDER.get(self.phase, 0), int(self.ready), self.deletion_cost)


class KubernetesProvisioner:
    """Starts and releases executor nodes as the pods of one Deployment (see the module's documentation).

    Not thread-safe: the management server makes its calls one at a time (from its loop, or under its lock).

    Args:
        apps: A :class:`kubernetes.client.AppsV1Api`, or anything with its scale calls.
        core: A :class:`kubernetes.client.CoreV1Api`, or anything with its pod calls.
        config: The Deployment and the waiting limits.
        clock: Time source of the readiness deadline.
        sleep: Waits between listings of the pods.
    """

    def __init__(
        self,
        apps: DeploymentScaleApi,
        core: PodApi,
        config: KubernetesProvisionerConfig,
        *,
        clock: Clock | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.config = config
        self._apps = apps
        self._core = core
        self._clock = clock or SystemClock()
        self._sleep = sleep
        #: Drained nodes -> the uid of the pod drained, so that a new pod reusing the address is never released.
        self._draining: dict[str, str] = {}
        #: Uids of pods released whose deletion may not show yet, so that a second release does not shrink again.
        self._released: set[str] = set()

    @classmethod
    def from_environment(cls, config: KubernetesProvisionerConfig) -> KubernetesProvisioner:
        """A provisioner for the cluster this process runs in or, outside one, the kube config file's cluster.

        Inside a pod it uses the pod's service account; elsewhere (an operator's machine) the current context of
        ``$KUBECONFIG`` or ``~/.kube/config``. The credentials go into a configuration of the provisioner's own, not
        the client library's process-wide default.

        Args:
            config: The Deployment and the waiting limits.

        Raises:
            ProvisioningError: Neither in-cluster credentials nor a usable kube config file were found.
        """
        configuration = kube_client.Configuration()
        # The client leaves its config loaders unannotated, hence the ignores.
        try:
            kube_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
            source = "the pod's service account"
        except kube_config.ConfigException as in_cluster:
            try:
                kube_config.load_kube_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
            except (kube_config.ConfigException, OSError) as error:
                raise ProvisioningError(
                    "loading Kubernetes credentials",
                    f"not running in a cluster ({in_cluster}) and no usable kube config file ({error})",
                ) from error
            source = "the kube config file"
        api = kube_client.ApiClient(configuration)
        logger.info(
            "Kubernetes provisioner for deployment %s/%s, credentials from %s",
            config.namespace,
            config.deployment,
            source,
        )
        return cls(kube_client.AppsV1Api(api), kube_client.CoreV1Api(api), config)

    def add_nodes(self, count: int) -> list[str]:
        """Adds ``count`` pods to the Deployment; returns the addresses of those Running and Ready by the deadline.

        Only pods that did not exist before the call count, so a pod that was already starting (left over from an
        earlier call's deadline) is not reported twice. Pods still starting at the deadline are left to start: they
        join through their executors' own reports.

        Args:
            count: Nodes to add.

        Returns:
            The new pods' IPs, oldest pod first; fewer than ``count`` if not all were ready by the deadline.

        Raises:
            ValueError: ``count`` is negative.
            ProvisioningError: The pods could not be listed, or the Deployment could not be scaled.
        """
        if count < 0:
            raise ValueError(f"cannot add {count} nodes")
        if count == 0:
            return []
        known = {pod.uid for pod in self._list_pods("listing pods before adding nodes")}
        self._resize(count, f"adding {count} node(s)")
        deadline = self._clock.now() + self.config.ready_timeout
        new: list[_Pod] = []
        while True:
            try:
                new = [pod for pod in self._list_pods("listing new pods") if pod.uid not in known]
            except ProvisioningError as error:
                # The pods are requested already and join on their own once up; giving up on a failed listing
                # would only lose the addresses of those that are up, so it is retried until the deadline.
                logger.warning("%s; listing again", error)
            ready = sorted((pod for pod in new if pod.serving), key=lambda pod: (pod.created, pod.name))
            if len(ready) >= count:
                addresses = [pod.ip for pod in ready[:count]]
                logger.info("%d node(s) up: %s", count, ", ".join(addresses))
                return addresses
            now = self._clock.now()
            if now >= deadline:
                starting = [f"{pod.name} ({pod.phase or 'no phase'})" for pod in new if not pod.serving]
                logger.warning(
                    "%d of %d new node(s) up after %.0f s: %s; still starting (they join when they report): %s",
                    len(ready),
                    count,
                    self.config.ready_timeout,
                    ", ".join(pod.ip for pod in ready) or "none",
                    ", ".join(starting) or "no pod created yet",
                )
                return [pod.ip for pod in ready]
            self._sleep(min(self.config.poll_interval, deadline - now))

    def drain(self, node: str) -> None:
        """Makes ``node``'s pod the first the ReplicaSet deletes when the Deployment shrinks.

        The management server asks the node's executors to depart itself, and keeping departed executors down is
        the node image's part (see the module's documentation). A node no pod of the Deployment has (any more) is
        logged and left alone: it may have gone already.

        Args:
            node: The node's address (its pod's IP).

        Raises:
            ProvisioningError: The pods could not be listed or the pod could not be annotated.
        """
        pod = self._pod_at(node, f"listing pods to drain node {node}")
        if pod is None:
            logger.info("drain of node %s: no pod of the deployment has that address (gone already?)", node)
            return
        if pod.deletion_cost != DRAINED_DELETION_COST:
            body: dict[str, object] = {"metadata": {"annotations": {POD_DELETION_COST: str(DRAINED_DELETION_COST)}}}
            operation = f"marking pod {pod.name} of node {node} to go first"
            try:
                self._core.patch_namespaced_pod(
                    pod.name, self.config.namespace, body, _request_timeout=self.config.request_timeout
                )
            except ApiException as error:
                if error.status == 404:
                    logger.info("drain of node %s: its pod %s is gone already", node, pod.name)
                    return
                raise self._failure(operation, error, node) from error
            except urllib3.exceptions.HTTPError as error:
                raise self._failure(operation, error, node) from error
        self._draining[node] = pod.uid
        logger.info("node %s (pod %s) draining: it goes first when the deployment shrinks", node, pod.name)

    def release(self, node: str) -> None:
        """Removes ``node``'s pod and lowers the Deployment's replica count by one (never below zero).

        Releasing a node again, or a node no pod has any more, changes nothing. Nor does releasing a drained node
        whose address now belongs to another pod (the drained pod died and a replacement got its IP): that pod is a
        new node.

        Args:
            node: The node's address (its pod's IP).

        Raises:
            ProvisioningError: The pods could not be listed, the pod could not be deleted, or the Deployment could
                not be scaled. If the pod was deleted but the count not lowered, the ReplicaSet replaces the pod and
                the replacement joins as a new node.
        """
        pods = [pod for pod in self._list_pods(f"listing pods to release node {node}") if pod.active]
        pod = next((pod for pod in pods if pod.ip == node), None)
        drained = self._draining.get(node)
        if pod is None:
            self._draining.pop(node, None)
            logger.info("release of node %s: no pod of the deployment has that address (gone already)", node)
            return
        if pod.uid in self._released:
            logger.info("release of node %s: pod %s is released already", node, pod.name)
            return
        if drained is not None and drained != pod.uid:
            self._draining.pop(node)
            logger.warning(
                "release of node %s: the drained pod is gone and pod %s now has the address; leaving it", node, pod.name
            )
            return
        rank = pod.deletion_rank()
        ahead = [other.name for other in pods if other.uid != pod.uid and other.deletion_rank() <= rank]
        if ahead:
            # Lowering the count alone could delete one of these instead, leaving the released node running.
            logger.info("release of node %s: deleting pod %s itself, since %s rank as early", node, pod.name, ahead)
            self._delete_pod(pod, node)
        self._resize(-1, f"releasing node {node} (pod {pod.name})", node)
        self._released.add(pod.uid)
        self._draining.pop(node, None)

    def _list_pods(self, operation: str) -> list[_Pod]:
        listing = self._call(
            f"{operation} matching {self.config.label_selector!r}",
            lambda: self._core.list_namespaced_pod(
                self.config.namespace,
                label_selector=self.config.label_selector,
                _request_timeout=self.config.request_timeout,
            ),
        )
        pods = [_Pod.of(item) for item in listing.items or []]
        # A pod that is gone cannot be released twice. Drained pods are not forgotten this way: that a drained pod is
        # gone is exactly what tells a new pod at its address from it.
        self._released &= {pod.uid for pod in pods}
        return pods

    def _pod_at(self, node: str, operation: str) -> _Pod | None:
        return next((pod for pod in self._list_pods(operation) if pod.active and pod.ip == node), None)

    def _delete_pod(self, pod: _Pod, node: str) -> None:
        operation = f"deleting pod {pod.name} of node {node}"
        try:
            self._core.delete_namespaced_pod(
                pod.name, self.config.namespace, _request_timeout=self.config.request_timeout
            )
        except ApiException as error:
            if error.status != 404:
                raise self._failure(operation, error, node) from error
            # Already gone; the ReplicaSet is replacing it, and lowering the count stops that.
        except urllib3.exceptions.HTTPError as error:
            raise self._failure(operation, error, node) from error

    def _resize(self, delta: int, why: str, node: str | None = None) -> None:
        name, namespace, timeout = self.config.deployment, self.config.namespace, self.config.request_timeout
        attempt = 1
        while True:
            scale = self._call(
                "reading the scale",
                lambda: self._apps.read_namespaced_deployment_scale(name, namespace, _request_timeout=timeout),
                node,
            )
            current = (scale.spec.replicas if scale.spec else None) or 0
            target = max(current + delta, 0)
            if target == current:
                logger.warning("%s: the deployment has %d replicas already; not scaling", why, current)
                return
            body: dict[str, object] = {"spec": {"replicas": target}}
            version = scale.metadata.resource_version if scale.metadata else None
            if version:
                # The version makes the patch conditional: a change made since the read (by a person or another
                # controller) fails it with 409 Conflict rather than being overwritten.
                body["metadata"] = {"resourceVersion": version}
            try:
                self._apps.patch_namespaced_deployment_scale(name, namespace, body, _request_timeout=timeout)
            except ApiException as error:
                if error.status == 409 and attempt < SCALE_ATTEMPTS:
                    attempt += 1
                    logger.info("%s: the deployment changed while scaling it; reading it again", why)
                    continue
                raise self._failure(f"scaling from {current} to {target} replicas", error, node) from error
            except urllib3.exceptions.HTTPError as error:
                raise self._failure(f"scaling from {current} to {target} replicas", error, node) from error
            logger.info("%s: deployment %s/%s scaled from %d to %d replicas", why, namespace, name, current, target)
            return

    def _call(self, operation: str, call: Callable[[], _T], node: str | None = None) -> _T:
        try:
            return call()
        except (ApiException, urllib3.exceptions.HTTPError) as error:
            raise self._failure(operation, error, node) from error

    def _failure(self, operation: str, error: Exception, node: str | None) -> ProvisioningError:
        where = f"{operation} (deployment {self.config.namespace}/{self.config.deployment})"
        if isinstance(error, ApiException):
            return ProvisioningError(where, _api_reason(error), node=node)
        return ProvisioningError(where, f"the API server could not be reached: {error}", node=node)


def _api_reason(error: ApiException) -> str:
    """The API server's answer in one line: status, reason and the message of the ``Status`` it sent, if any."""
    # A status of 0 means the client failed without an HTTP exchange (a TLS error, say); the reason says what.
    reason = " ".join(part for part in (f"HTTP {error.status}" if error.status else "", error.reason or "") if part)
    reason = reason or "no answer"
    try:
        message = json.loads(error.body).get("message", "") if error.body else ""
    except (ValueError, TypeError, AttributeError):
        # Not a Status object (a proxy's page, say): the status line alone says enough.
        message = ""
    return f"{reason}: {message}" if message else reason
