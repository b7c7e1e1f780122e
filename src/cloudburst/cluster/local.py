"""A whole deployment on one machine: KVS, scheduler, node cache and executor processes, supervised.

Every role runs in its own process (executors must: the GIL), bound to one address. Binding a distinct loopback
address per cluster (127.x.y.z) lets several clusters, or a test's cluster beside a developer's, use the standard
ports side by side.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import random
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import zmq

from cloudburst.client.connection import Connection
from cloudburst.cluster.child import ChildProcess
from cloudburst.cluster.node import NodeGroup, RestartBudget
from cloudburst.config import DEFAULT_DATA_DIR, NodeConfig, RuntimePorts, check_executor_counts
from cloudburst.errors import ConfigError, DeadlineExceeded, InvalidRequest
from cloudburst.kvs.server import KvsAddresses
from cloudburst.management.client import request_drain
from cloudburst.management.policy import ManagementPolicyConfig
from cloudburst.management.provisioner_link import ProvisionerLinkServer
from cloudburst.management.server import send_self_depart
from cloudburst.transport.zmq import PushSocketCache

logger = logging.getLogger(__name__)

#: Told of each role as a cluster starts it: ``progress(step, done)``, with ``done`` False just before the step
#: starts and True once it listens; ``step`` names it, e.g. ``"the scheduler on 127.0.0.1"``.
StartProgress = Callable[[str, bool], None]


def _unwatched(step: str, done: bool) -> None:
    """The :data:`StartProgress` used when nobody watches."""


def random_loopback_host(*avoid: str) -> str:
    """A random address in 127.0.0.0/8 (other than 127.0.0.1 and ``avoid``), where the standard ports are almost
    surely free."""
    while True:
        # The last octet leaves room for the following addresses of a multi-node cluster.
        host = f"127.{random.randint(1, 254)}.{random.randint(1, 254)}.{random.randint(2, 200)}"
        if host not in avoid:
            return host


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    """What a local cluster runs.

    Attributes:
        host: The first node's address; the KVS and the scheduler bind it too.
        executors: Executor processes per node.
        nodes: Nodes, each a cache and its executors on its own address: ``host``, then the next addresses
            (127.0.0.2, 127.0.0.3, ... for a host of 127.0.0.2), which is how multi-node behaviour runs on one machine.
        data_dir: State directory (the KVS data lives under it); ``None`` keeps data in memory.
        kvs_engine: A Redis engine URL the KVS stores in instead (``cloudburst kvs --engine``).
        report_period: Executors' and the scheduler's report period, in seconds.
        max_restarts: Restarts of one executor allowed within ``restart_window`` seconds before the supervisor
            gives up on it (a crash loop should be seen, not hidden).
        restart_window: See ``max_restarts``.
        gpu_executors: GPU executors per node besides ``executors`` (the flag only: they take GPU functions, pinned
            nowhere else), with the tids after the CPU executors'.
        schedulers: Schedulers, on ``host`` and the next addresses, gossiping with one another; executors report
            to all of them and clients may use any.
        autoscale: Let the management service (which always runs, on ``host``, and serves the dashboard) add and
            drain nodes (and replicas) as load asks, within ``scaling``'s bounds; without, it only watches.
        scaling: The management service's policy thresholds and node bounds.
    """

    host: str = "127.0.0.1"
    executors: int = 3
    nodes: int = 1
    data_dir: Path | None = DEFAULT_DATA_DIR
    kvs_engine: str | None = None
    report_period: float = 5.0
    max_restarts: int = 5
    restart_window: float = 60.0
    gpu_executors: int = 0
    schedulers: int = 1
    autoscale: bool = False
    scaling: ManagementPolicyConfig = field(default_factory=ManagementPolicyConfig)

    def __post_init__(self) -> None:
        check_executor_counts(self.executors, self.gpu_executors)
        if self.nodes < 1 or self.schedulers < 1:
            raise ConfigError(f"nodes and schedulers must be at least 1, not {self.nodes} and {self.schedulers}")
        if max(self.nodes, self.schedulers) > 1:
            try:
                address = ipaddress.IPv4Address(self.host)
            except ValueError:
                raise ConfigError(f"several nodes or schedulers need an IPv4 host, not {self.host!r}") from None
            if int(address) % 256 + max(self.nodes, self.schedulers) - 1 > 254:
                raise ConfigError(f"{self.nodes} nodes from {self.host} would run past the end of its /24")

    def node_hosts(self) -> list[str]:
        """Each node's address, the first being ``host``."""
        return self._consecutive(self.nodes)

    def scheduler_hosts(self) -> list[str]:
        """Each scheduler's address, the first being ``host``."""
        return self._consecutive(self.schedulers)

    def _consecutive(self, count: int) -> list[str]:
        if count == 1:
            return [self.host]
        first = ipaddress.IPv4Address(self.host)
        return [str(first + offset) for offset in range(count)]


class LocalCluster:
    """Starts, supervises and stops a deployment's processes; the local provisioner of the management service.

    As a provisioner it adds nodes on the next loopback addresses; a node being drained keeps its processes but
    none is restarted any more, and a released node's remaining processes (its cache, executors that did not exit)
    are stopped.

    Args:
        config: What to run.
    """

    def __init__(self, config: ClusterConfig) -> None:
        self.config = config
        self._scratch = tempfile.TemporaryDirectory(prefix="cloudburst-cluster-")
        self.workdir = Path(self._scratch.name)
        self.kvs_routing = ""
        self._kvs: ChildProcess | None = None
        self._schedulers: list[ChildProcess] = []
        self._scheduler_budgets: list[RestartBudget] = []
        #: Running nodes by address, in the order they were added.
        self._nodes: dict[str, NodeGroup] = {}
        #: Each node's cache request endpoint, by node address.
        self.cache_addresses: dict[str, str] = {}
        # Nodes are added and drained from the provisioner link's thread while the supervisor loop runs.
        self._lock = threading.RLock()
        self.config_ports = RuntimePorts()
        #: The management service (a process, like every role) and the link through which it adds, drains and
        #: releases this cluster's nodes.
        self._management: ChildProcess | None = None
        self._management_budget = RestartBudget(config.max_restarts, config.restart_window)
        self._kvs_budget = RestartBudget(config.max_restarts, config.restart_window)
        self._link: ProvisionerLinkServer | None = None
        #: Runs :meth:`supervise` for clusters with no supervising loop of their own (``cloudburst.local()``).
        self._supervisor: threading.Thread | None = None
        self._stopping = threading.Event()
        #: The management service's dashboard (its JSON API and ``/metrics`` are under it), once started.
        self.dashboard_url: str | None = None

    @property
    def scheduler(self) -> str:
        """The scheduler's host, what clients connect to."""
        return self.config.host

    def __enter__(self) -> LocalCluster:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self, progress: StartProgress | None = None) -> None:
        """Starts the KVS, the scheduler and the executors, each once it can be reached.

        Args:
            progress: Told of the KVS, each scheduler and each node as it starts.

        Raises:
            DeadlineExceeded: A role did not start (for example its port is taken); its log is in the message.
        """
        host = self.config.host
        tell = progress or _unwatched
        try:
            # Without a data directory the data is thrown away with the cluster, but kept on disk meanwhile, so a
            # KVS restarted after a crash has everything it acknowledged.
            data_dir = self.config.data_dir or self.workdir / "kvs-data"
            storage = ["--data-dir", str(data_dir)]
            storage = ["--engine", self.config.kvs_engine] if self.config.kvs_engine else storage
            tell(f"the KVS on {host}", False)
            self._kvs = ChildProcess(["kvs", "--host", host, *storage], self.workdir, "kvs")
            self.kvs_routing = KvsAddresses.from_json(self._kvs.start()).routing
            tell(f"the KVS on {host}", True)
            hosts = self.config.scheduler_hosts()
            for index, scheduler_host in enumerate(hosts):
                peers = [arg for peer in hosts if peer != scheduler_host for arg in ("--peer", peer)]
                scheduler = ChildProcess(
                    [
                        "scheduler",
                        "--host",
                        scheduler_host,
                        "--kvs",
                        self.kvs_routing,
                        "--report-period",
                        str(self.config.report_period),
                        *peers,
                        "--management",
                        host,
                    ],
                    self.workdir,
                    "scheduler" if index == 0 else f"scheduler@{scheduler_host}",
                )
                self._schedulers.append(scheduler)
                self._scheduler_budgets.append(RestartBudget(self.config.max_restarts, self.config.restart_window))
                tell(f"the scheduler on {scheduler_host}", False)
                scheduler.start()
                tell(f"the scheduler on {scheduler_host}", True)
            for node in self.config.node_hosts():
                self.add_node(node, progress)
            self._link = ProvisionerLinkServer(self, host)
            self._link.start()
            tell(f"the management service on {host}", False)
            self._management = ChildProcess(self._management_arguments(self._link.endpoint), self.workdir, "management")
            self.dashboard_url = json.loads(self._management.start())["dashboard"]
            tell(f"the management service on {host}", True)
            self._wait_until_schedulers_know_the_executors()
        except BaseException:
            self.stop()
            raise
        logger.info(
            "cluster up: %d node(s) from %s, %d executors each, KVS %s",
            self.config.nodes,
            host,
            self.config.executors,
            self.kvs_routing,
        )

    def _wait_until_schedulers_know_the_executors(self, timeout: float = 60.0) -> None:
        """Returns once every scheduler has heard from every executor, so that a first call finds them.

        An executor is ready once it listens, but a scheduler learns of it from its first status report, a moment
        later; a call in between would be refused with ``NoResources``.

        Raises:
            DeadlineExceeded: Some scheduler did not hear from every executor within ``timeout`` seconds.
        """
        expected = len(self.executor_pids())
        give_up = time.monotonic() + timeout
        for scheduler in self.config.scheduler_hosts():
            with Connection(scheduler, host=self.config.host, timeout=timeout, check_versions=False) as connection:
                while (known := sum(e.running for e in connection.status().executors)) < expected:
                    if time.monotonic() > give_up:
                        raise DeadlineExceeded(
                            f"the scheduler on {scheduler} knows {known} of {expected} executors after {timeout:g} s"
                        )
                    time.sleep(0.01)

    def add_node(self, node: str | None = None, progress: StartProgress | None = None) -> str:
        """Starts a node: its cache, then its executors, on ``node`` or else the address after the last node's.

        Args:
            node: The node's address; by default the one after the last node's.
            progress: Told when the node (its cache and executors, as one step) starts and once it is up.

        Returns:
            The node's address.

        Raises:
            DeadlineExceeded: A process of the node did not start (nothing of the node is left running).
        """
        with self._lock:
            node = node or self._next_node_address()
            config = self._node_config(node)
            gpus = f" (+{config.gpu_executors} GPU)" if config.gpu_executors else ""
            step = f"node {node}: a cache and {config.executors} executors{gpus}"
            tell = progress or _unwatched
            tell(step, False)
            group = NodeGroup(config, self.workdir)
            group.start()
            tell(step, True)
            self._nodes[node] = group
            self.cache_addresses[node] = group.cache_endpoints["requests"]
            return node

    def add_nodes(self, count: int) -> list[str]:
        """Starts ``count`` nodes on the next free addresses (the management service's provisioner call)."""
        return [self.add_node() for _ in range(count)]

    def drain(self, node: str) -> None:
        """``node`` is being drained (the provisioner call): its executors are not restarted any more.

        The executors are told to depart by whoever drains (the management service, or :meth:`drain_node`).
        """
        with self._lock:
            group = self._nodes.get(node)
            if group is not None and not group.draining:
                group.draining = True
                logger.info("draining node %s", node)

    def release(self, node: str) -> None:
        """``node`` has drained (the provisioner call): stops what is left of it and forgets it."""
        with self._lock:
            group = self._nodes.get(node)
            if group is None:
                return
            group.stop()
            del self._nodes[node]
            self.cache_addresses.pop(node, None)
            logger.info("node %s drained and stopped", node)

    def drain_node(self, node: str, timeout: float = 60.0) -> None:
        """Drains ``node`` and waits until it is released: its executors finish what they hold and exit, then the
        rest of the node is stopped.

        When the management service autoscales, the drain goes through it (so it is refused below ``min_nodes``);
        otherwise the executors are told to depart from here.

        Raises:
            InvalidRequest: The node is unknown or already draining, or the management service refused the drain.
            DeadlineExceeded: The node was not released within ``timeout`` seconds.
        """
        with self._lock:
            group = self._nodes.get(node)
            if group is None or group.draining:
                reason = "it is being drained already" if group else "it is not one of this cluster's nodes"
                raise InvalidRequest(f"cannot drain {node}: {reason}")
            tids = group.config.tids
        deadline = time.monotonic() + timeout
        if self.config.autoscale:
            # Not under our lock: the management service calls back (through the link) into drain and release.
            request_drain(self.config_ports.management_drains_endpoint(self.config.host), node, timeout=timeout)
        else:
            self.drain(node)
            context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
            push = PushSocketCache(context)
            try:
                send_self_depart(push, self.config_ports, node, tids)
            finally:
                push.close()
                context.term()
            while not group.departed():
                if time.monotonic() > deadline:
                    raise DeadlineExceeded(f"the executors of {node} did not depart within {timeout} s")
                time.sleep(0.05)
            self.release(node)
        while node in self.nodes():
            if time.monotonic() > deadline:
                raise DeadlineExceeded(f"{node} was not released within {timeout} s")
            time.sleep(0.05)

    def node_pids(self, node: str) -> list[int]:
        """The running processes of ``node`` (its cache and executors); empty for an unknown node."""
        with self._lock:
            group = self._nodes.get(node)
            return group.pids() if group is not None else []

    def nodes(self) -> list[str]:
        """The running nodes' addresses, draining ones included."""
        with self._lock:
            return list(self._nodes)

    def _next_node_address(self) -> str:
        if not self._nodes:
            return self.config.host
        last = max(ipaddress.IPv4Address(node) for node in self._nodes)
        candidate = last + 1
        if int(candidate) % 256 > 254:
            raise ConfigError(f"no loopback address left after {last} for another node")
        return str(candidate)

    def _node_config(self, node: str) -> NodeConfig:
        config = self.config
        return NodeConfig(
            host=node,
            kvs_routing=self.kvs_routing,
            schedulers=tuple(config.scheduler_hosts()),
            management=config.host,
            executors=config.executors,
            gpu_executors=config.gpu_executors,
            report_period=config.report_period,
            max_restarts=config.max_restarts,
            restart_window=config.restart_window,
        )

    def _management_arguments(self, link: str) -> list[str]:
        """The management service's command line: this cluster's schedulers, the link, the policy."""
        policy = self.config.scaling
        options = {
            "--report-period": policy.report_period,
            "--thread-timeout": policy.thread_timeout,
            "--scale-up-load": policy.scale_up_load,
            "--scale-down-load": policy.scale_down_load,
            "--max-latency-deviation": policy.max_latency_deviation,
            "--min-replicas": policy.min_replicas,
            "--replica-cooldown": policy.replica_cooldown,
            "--hot-thread-utilization": policy.hot_thread_utilization,
            "--hot-thread-replicas": policy.hot_thread_replicas,
            "--max-utilization": policy.max_utilization,
            "--min-utilization": policy.min_utilization,
            "--max-pinned-ratio": policy.max_pinned_ratio,
            "--scale-increase": policy.scale_increase,
            "--grace-period": policy.grace_period,
            "--min-nodes": policy.min_nodes,
            "--max-nodes": policy.max_nodes,
            "--node-join-timeout": policy.node_join_timeout,
        }
        return [
            "management",
            "--host",
            self.config.host,
            *(arg for host in self.config.scheduler_hosts() for arg in ("--scheduler", host)),
            "--provisioner",
            "local",
            "--provisioner-endpoint",
            link,
            *(arg for option, value in options.items() for arg in (option, repr(value))),
            *([] if self.config.autoscale else ["--watch-only"]),
        ]

    def supervise(self, now: float | None = None) -> list[int]:
        """Restarts the KVS, schedulers, the management service, node caches and executors that exited; call it
        periodically (:meth:`supervise_in_background` does).

        The KVS comes back on its ports and its data directory, so it has everything it acknowledged; its clients
        retry what was in flight until their deadlines. A restarted scheduler recovers functions and DAGs from the
        KVS and learns executors from their reports.

        Returns:
            The indexes (as in :meth:`executor_pids`) of the executors restarted now.
        """
        now = time.monotonic() if now is None else now
        restarted: list[int] = []
        with self._lock:
            kvs = self._kvs
            code = kvs.exit_code() if kvs is not None else None
            if kvs is not None and code not in (None, 0) and self._kvs_budget.allow(now):
                logger.warning("the KVS exited with code %s; restarting it on its data", code)
                kvs.stop()
                try:
                    self.kvs_routing = KvsAddresses.from_json(kvs.start()).routing
                except DeadlineExceeded as error:
                    logger.error("the KVS did not come back: %s", error)  # tried again next time, within budget
            for scheduler, budget in zip(self._schedulers, self._scheduler_budgets, strict=True):
                code = scheduler.exit_code()
                # Exit code 0 is a stop that was asked for (SIGTERM), not a crash.
                if code not in (None, 0) and budget.allow(now):
                    logger.warning("%s exited with code %s; restarting it", scheduler.name, code)
                    scheduler.stop()
                    scheduler.start()
            management = self._management
            code = management.exit_code() if management is not None else None
            if management is not None and code not in (None, 0) and self._management_budget.allow(now):
                logger.warning("the management service exited with code %s; restarting it", code)
                management.stop()
                management.start()
            first = 0
            for group in self._nodes.values():
                restarted += [first + tid for tid in group.supervise(now)]
                first += len(group.executors)
        return restarted

    def supervise_in_background(self, period: float = 0.2) -> None:
        """Supervises from a thread of this process until :meth:`stop`, for clusters embedded in a program."""

        def loop() -> None:
            while not self._stopping.wait(period):
                try:
                    self.supervise()
                except Exception:  # a failed restart is retried next round; the loop must survive it
                    logger.exception("supervising the cluster failed")

        self._supervisor = threading.Thread(target=loop, name="cloudburst-supervisor", daemon=True)
        self._supervisor.start()

    def kvs_pid(self) -> int:
        """The KVS process id.

        Raises:
            RuntimeError: The KVS is not running.
        """
        with self._lock:
            if self._kvs is None:
                raise RuntimeError("the KVS is not running")
            return self._kvs.pid

    def scheduler_pids(self) -> list[int]:
        """The schedulers' process ids, in the order of :meth:`ClusterConfig.scheduler_hosts`."""
        with self._lock:
            return [scheduler.pid for scheduler in self._schedulers]

    def executor_pids(self) -> list[int]:
        """The executors' process ids, node by node, then by tid."""
        with self._lock:
            return [pid for group in self._nodes.values() for pid in group.executor_pids()]

    def stop(self) -> None:
        """Stops the management service, the nodes, then the scheduler, then the KVS; nothing is left running."""
        self._stopping.set()
        if self._supervisor is not None:
            self._supervisor.join()
            self._supervisor = None
        if self._management is not None:
            self._management.stop()
            self._management = None
        if self._link is not None:
            self._link.close()
            self._link = None
        with self._lock:
            for group in self._nodes.values():
                group.terminate_executors()
            for group in self._nodes.values():
                group.stop()
            self._nodes.clear()
        for scheduler in self._schedulers:
            scheduler.stop()
        if self._kvs is not None:
            self._kvs.stop()
        self._scratch.cleanup()

    def connect(self, timeout: float = 30.0) -> Connection:
        """A client connection to this cluster."""
        return Connection(self.scheduler, host=self.config.host, timeout=timeout)

    def describe(self) -> dict[str, object]:
        """What ``cloudburst up`` records for ``down`` and ``status``."""
        return {
            "host": self.config.host,
            "scheduler": self.scheduler,
            "kvs": self.kvs_routing,
            "executors": self.config.executors,
            "nodes": self.nodes(),
            "dashboard": self.dashboard_url,
            "data_dir": str(self.config.data_dir) if self.config.data_dir else None,
        }


class LocalSession:
    """``cloudburst.local()``: a throwaway cluster on its own loopback address, yielding a connection.

    Args:
        executors: Executor processes per node.
        data_dir: Keep state here; by default the data is thrown away with the cluster.
        host: The address to bind; a random loopback address by default, so it never clashes.
        report_period: Report period of the roles, in seconds.
        nodes: Nodes, each with its own cache and executors, on consecutive loopback addresses.
        kvs: A Redis engine URL (``redis://…`` or ``redis+cluster://…``) the KVS stores in instead of locally.
    """

    def __init__(
        self,
        executors: int = 3,
        data_dir: Path | None = None,
        host: str | None = None,
        report_period: float = 1.0,
        nodes: int = 1,
        kvs: str | None = None,
    ) -> None:
        self.cluster = LocalCluster(
            ClusterConfig(
                host=host or random_loopback_host(),
                executors=executors,
                nodes=nodes,
                data_dir=data_dir,
                report_period=report_period,
                kvs_engine=kvs,
            )
        )
        self._connection: Connection | None = None

    def __enter__(self) -> Connection:
        self.cluster.start()
        # Crashed processes come back as under `cloudburst up` (within the same restart budgets).
        self.cluster.supervise_in_background()
        try:
            self._connection = self.cluster.connect()
        except BaseException:
            self.cluster.stop()
            raise
        return self._connection

    def __exit__(self, *exc_info: object) -> None:
        if self._connection is not None:
            self._connection.close()
        self.cluster.stop()


def write_state(path: Path, cluster: LocalCluster, supervisor_pid: int) -> None:
    """Records a running cluster for ``cloudburst down`` and ``status``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps({**cluster.describe(), "pid": supervisor_pid}))
    partial.replace(path)
