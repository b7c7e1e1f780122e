"""Typed configuration for every role, built once at the command-line edge and passed down explicitly."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from cloudburst.errors import ConfigError
from cloudburst.kvs.sqlite import Durability
from cloudburst.kvs.subscriptions import DEFAULT_CACHE_UPDATE_PORT, DEFAULT_MAX_CACHES, DEFAULT_MAX_KEYS_PER_CACHE
from cloudburst.management.policy import ManagementPolicyConfig
from cloudburst.transport.security import SecurityConfig

#: Where state lives unless ``--data-dir`` says otherwise, so what was stored survives restarts.
DEFAULT_DATA_DIR = Path.home() / ".cloudburst"


@dataclass(frozen=True, slots=True)
class KvsConfig:
    """Configuration of a KVS node.

    Attributes:
        host: The address to bind; ``127.0.0.1`` keeps the node private to this machine.
        advertise_host: The address clients are told to reach storage threads at; defaults to ``host``.
        routing_port: The address-lookup port (Anna's 6450); 0 picks a free port.
        routing_ports: How many consecutive ports from ``routing_port`` answer address lookups. Anna's routing
            tier runs one thread per port, and its Python client outside local mode asks a random one of
            6450-6453, so the default of 4 serves those clients too (a free ``routing_port`` gets one port).
        storage_port: Thread ``tid`` listens on ``storage_port + tid`` (Anna's 6200); 0 picks free ports.
        threads: Storage threads; keys are spread over them by consistent hashing.
        data_dir: Where the embedded engine keeps its database; ``None`` keeps data in memory only.
        durability: ``NORMAL`` survives a killed process, ``FULL`` also power loss (slower).
        engine_url: Store in Redis instead (``redis://host:port[/db]`` or ``redis+cluster://host:port,...``, see
            ``docs/storage.md``); ``data_dir`` and ``durability`` are then unused.
        max_message_bytes: Larger incoming messages are refused by the transport.
        cache_update_port: The port node caches listen on for pushed updates of the keys they hold (the
            original's 7150); the node pushes to ``tcp://<cache ip>:<cache_update_port>``.
        max_subscribed_caches: The most node caches whose key sets the node tracks (and pushes to) at once.
        max_keys_per_cache: The most keys tracked per cache; a larger key-set report is truncated.
        trigger_port: Where executors acknowledge the runs of storage triggers; 0 picks a free port.
        metrics_port: The Prometheus endpoint (HTTP ``/metrics``); 0 picks a free port.
        security: CURVE keys (see ``docs/security.md``); ``None``: plaintext, for loopback-only deployments.
    """

    host: str = "127.0.0.1"
    advertise_host: str | None = None
    routing_port: int = 6450
    routing_ports: int = 4
    storage_port: int = 6200
    threads: int = 1
    data_dir: Path | None = DEFAULT_DATA_DIR / "kvs"
    durability: Durability = "NORMAL"
    engine_url: str | None = None
    max_message_bytes: int = 256 * 1024 * 1024
    cache_update_port: int = DEFAULT_CACHE_UPDATE_PORT
    max_subscribed_caches: int = DEFAULT_MAX_CACHES
    max_keys_per_cache: int = DEFAULT_MAX_KEYS_PER_CACHE
    trigger_port: int = 6960
    metrics_port: int = 9500
    security: SecurityConfig | None = None

    def __post_init__(self) -> None:
        if self.threads < 1:
            raise ConfigError(f"threads must be at least 1, not {self.threads}")
        if not 1 <= self.routing_ports <= 64:
            raise ConfigError(f"routing_ports must be in 1..64, not {self.routing_ports}")
        if not 0 < self.cache_update_port < 65536:
            raise ConfigError(f"cache_update_port must be in 1..65535, not {self.cache_update_port}")
        if self.max_subscribed_caches < 1 or self.max_keys_per_cache < 1:
            raise ConfigError("max_subscribed_caches and max_keys_per_cache must be at least 1")
        if self.advertise_host is None and self.host in ("0.0.0.0", "*", "::"):
            raise ConfigError(f"binding {self.host} needs an advertise_host that clients can reach")


#: The most executors one node (one IP) can run with the default port layout.
MAX_EXECUTORS_PER_NODE = 500


def check_executor_counts(executors: int, gpu_executors: int) -> None:
    """Checks a node's executor counts: at least one CPU executor, and all of them within the port layout.

    Raises:
        ConfigError: Either count is out of range.
    """
    if not 1 <= executors <= MAX_EXECUTORS_PER_NODE - gpu_executors or gpu_executors < 0:
        raise ConfigError(
            f"executors ({executors}) plus GPU executors ({gpu_executors}) must be in 1..{MAX_EXECUTORS_PER_NODE}"
        )


@dataclass(frozen=True, slots=True)
class RuntimePorts:
    """The port layout every role of a deployment agrees on; the defaults are the original system's.

    Executor ``tid`` listens on ``executor_control + tid`` (every scheduler-to-executor message) and
    ``executor_inbox + tid`` (user-library messages between running functions). The management service takes
    reports on ``management`` and answers queries for the executor nodes (``management_executors``: the request
    is a reply address, the list is pushed there) and for the schedulers (``management_schedulers``: request and
    reply) it knows.
    """

    connect: int = 5000
    function_create: int = 5001
    function_call: int = 5002
    list: int = 5003
    dag_create: int = 5004
    dag_call: int = 5005
    dag_delete: int = 5006
    scheduler_internal: int = 5007
    status_query: int = 5012
    function_lease: int = 5013
    #: The scheduler answers any request here with its versions (:mod:`cloudburst.protocol.versions`).
    info: int = 5014
    #: The scheduler takes cancellations here (``CancelRequest``, answered with a ``GenericResponse``).
    cancel: int = 5015
    #: The scheduler answers which of the request keys sent here it still holds (a ``StringSet`` both ways): a
    #: client whose result never came places again a request its scheduler no longer holds.
    in_flight: int = 5016
    #: The scheduler answers a DAG's name here with a ``DagLease``: where its requests may go straight to.
    dag_lease: int = 5017
    executor_control: int = 4000
    #: Executor ``tid`` takes cancellations on ``executor_cancel + tid``, even while user code runs.
    executor_cancel: int = 4500
    executor_inbox: int = 5500
    management: int = 7003
    management_executors: int = 7002
    management_schedulers: int = 7004
    #: Operators ask the management service to drain a node here (request: the node's address; reply: JSON).
    management_drains: int = 7005
    #: The management service's web dashboard, its JSON API (traces among it) and its ``/metrics`` (HTTP).
    dashboard: int = 7080
    #: Prometheus endpoints (HTTP) of schedulers, node caches, and executor ``tid`` at ``+ tid`` (the KVS node's
    #: is in its own configuration).
    metrics_scheduler: int = 9501
    metrics_cache: int = 9502
    metrics_executor: int = 9510

    def scheduler_internal_endpoint(self, host: str) -> str:
        """Where executors and peer schedulers reach the scheduler on ``host``."""
        return f"tcp://{host}:{self.scheduler_internal}"

    def info_endpoint(self, host: str) -> str:
        """Where the scheduler on ``host`` tells its versions, for clients to check theirs against."""
        return f"tcp://{host}:{self.info}"

    def management_endpoint(self, host: str) -> str:
        """Where executors send the management service on ``host`` their status and statistics reports."""
        return f"tcp://{host}:{self.management}"

    def management_executors_endpoint(self, host: str) -> str:
        """Where the management service on ``host`` takes reply addresses to push the executor node list to."""
        return f"tcp://{host}:{self.management_executors}"

    def management_schedulers_endpoint(self, host: str) -> str:
        """Where the management service on ``host`` answers requests for the scheduler list."""
        return f"tcp://{host}:{self.management_schedulers}"

    def management_drains_endpoint(self, host: str) -> str:
        """Where the management service on ``host`` takes operators' drain requests."""
        return f"tcp://{host}:{self.management_drains}"

    def executor_control_endpoint(self, host: str, tid: int) -> str:
        """Where schedulers and upstream executors reach executor ``tid`` on ``host``."""
        return f"tcp://{host}:{self.executor_control + tid}"

    def executor_cancel_endpoint(self, host: str, tid: int) -> str:
        """Where cancellations reach executor ``tid`` on ``host`` (its sentinel, which listens while user code runs)."""
        return f"tcp://{host}:{self.executor_cancel + tid}"

    def executor_inbox_endpoint(self, host: str, tid: int) -> str:
        """Where user code on other executors sends messages to executor ``tid`` on ``host``."""
        return f"tcp://{host}:{self.executor_inbox + tid}"


@dataclass(frozen=True, slots=True)
class SchedulerConfig:
    """Configuration of a scheduler.

    Attributes:
        host: The address to bind and to advertise.
        kvs_routing: The KVS routing endpoint.
        peers: Hosts of the other schedulers (gossip targets).
        ports: The deployment's port layout.
        report_period: Seconds between gossip, statistics and policy updates.
        pin_timeout: Seconds an executor has to answer a pin before another executor is tried.
        seed: Seeds the placement policy's randomness (``None``: from the OS).
        policy: How calls are placed among eligible executors: ``locality`` (near the cached data the call
            references, exploring 20 % of the time), ``random`` or ``round-robin``.
        management: The management service's host. Each report period the scheduler sends it its call
            statistics and asks it for the scheduler list, whose members it gossips with besides ``peers``.
        security: CURVE keys (see ``docs/security.md``); ``None``: plaintext, for loopback-only deployments.
    """

    host: str = "127.0.0.1"
    kvs_routing: str = "tcp://127.0.0.1:6450"
    peers: tuple[str, ...] = ()
    ports: RuntimePorts = RuntimePorts()
    report_period: float = 5.0
    pin_timeout: float = 10.0
    seed: int | None = None
    policy: Literal["locality", "random", "round-robin"] = "locality"
    management: str | None = None
    security: SecurityConfig | None = None

    def __post_init__(self) -> None:
        if self.policy not in ("locality", "random", "round-robin"):
            raise ConfigError(f"policy must be locality, random or round-robin, not {self.policy!r}")


@dataclass(frozen=True, slots=True)
class ExecutorConfig:
    """Configuration of an executor process.

    Attributes:
        host: The node address to bind and to advertise.
        tid: The executor's id on its node; selects its ports.
        schedulers: Hosts of the schedulers it reports to (besides those the management service lists).
        kvs_routing: The KVS routing endpoint.
        ports: The deployment's port layout.
        gpu: Whether this is a GPU executor (takes only GPU functions).
        report_period: Seconds between status and statistics reports.
        max_pinned_functions: How many functions it pins at once (``None``: no limit, as locally).
        request_ttl: Seconds a DAG request may wait for its schedule or triggers before it is dropped.
        dedup_ttl: Seconds a finished request is remembered so that repeated triggers are dropped.
        kvs_timeout: Default deadline of the user library's KVS calls.
        cache_address: The node cache's request endpoint; user data is read and written through it. ``None``:
            straight to the KVS.
        cache_invalidations: The node cache's invalidation endpoint; with it, the executor keeps its own copies
            of what it reads (a repeated read is a dictionary lookup).
        cache_causal: The node cache's causal-read endpoint; without it SINGLE and MULTI requests fail.
        management: The management service's host, which gets the status and statistics reports too. Each
            report period the executor asks it for the scheduler list and reports to those schedulers as well, so
            schedulers started after it find it.
        security: CURVE keys (see ``docs/security.md``); ``None``: plaintext, for loopback-only deployments.
        stop_grace: Seconds user code has to stop once cancelled or past its deadline; code that does not (stuck
            in C) ends the process, which its node restarts.
    """

    host: str = "127.0.0.1"
    tid: int = 0
    schedulers: tuple[str, ...] = ("127.0.0.1",)
    kvs_routing: str = "tcp://127.0.0.1:6450"
    ports: RuntimePorts = RuntimePorts()
    gpu: bool = False
    report_period: float = 5.0
    max_pinned_functions: int | None = None
    request_ttl: float = 600.0
    dedup_ttl: float = 10.0
    kvs_timeout: float = 10.0
    cache_address: str | None = None
    cache_invalidations: str | None = None
    cache_causal: str | None = None
    management: str | None = None
    security: SecurityConfig | None = None
    stop_grace: float = 3.0

    def __post_init__(self) -> None:
        if not 0 <= self.tid < MAX_EXECUTORS_PER_NODE:
            raise ConfigError(f"executor tid must be in 0..{MAX_EXECUTORS_PER_NODE - 1}, not {self.tid}")
        if not self.schedulers and not self.management:
            raise ConfigError("an executor needs at least one scheduler, or a management service that lists them")


@dataclass(frozen=True, slots=True)
class ManagementConfig:
    """Configuration of the management service.

    Attributes:
        host: The address to bind (reports, and the executor and scheduler list queries).
        schedulers: Hosts of schedulers known from the start: always listed, besides those that report.
        ports: The deployment's port layout.
        policy: The scaling policies' thresholds, periods and node bounds.
        autoscale: Add and drain nodes and replicas as the policies decide; without, the service only watches (the
            dashboard, traces and operator drains still work).
        security: CURVE keys (see ``docs/security.md``); ``None``: plaintext, for loopback-only deployments.
    """

    host: str = "127.0.0.1"
    schedulers: tuple[str, ...] = ()
    ports: RuntimePorts = RuntimePorts()
    policy: ManagementPolicyConfig = field(default_factory=ManagementPolicyConfig)
    autoscale: bool = True
    security: SecurityConfig | None = None


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """Configuration of an executor node: a node cache and its executors, each a child process of one supervisor.

    Attributes:
        host: The node's address: the cache and every executor bind it, and schedulers and the management service
            know the node by it.
        kvs_routing: The KVS routing endpoint.
        schedulers: Hosts of the schedulers the executors report to (besides those the management service lists).
        management: The management service's host, which the executors report to and learn schedulers from.
        executors: CPU executors (tids ``0 .. executors - 1``).
        gpu_executors: GPU executors besides, with the tids after the CPU executors' (they take GPU functions only).
        report_period: The executors' report period, in seconds.
        max_restarts: Restarts of one executor allowed within ``restart_window`` seconds before the supervisor
            gives up on it (a crash loop should be seen, not hidden).
        restart_window: See ``max_restarts``.
        security: CURVE keys (see ``docs/security.md``); ``None``: plaintext, for loopback-only deployments.

    Raises:
        ConfigError: The executor counts are out of range, or the executors would know no scheduler and no
            management service.
    """

    host: str = "127.0.0.1"
    kvs_routing: str = "tcp://127.0.0.1:6450"
    schedulers: tuple[str, ...] = ("127.0.0.1",)
    management: str | None = None
    executors: int = 3
    gpu_executors: int = 0
    report_period: float = 5.0
    max_restarts: int = 5
    restart_window: float = 60.0
    security: SecurityConfig | None = None

    def __post_init__(self) -> None:
        check_executor_counts(self.executors, self.gpu_executors)
        if not self.schedulers and not self.management:
            raise ConfigError("a node needs at least one scheduler, or a management service that lists them")

    @property
    def tids(self) -> range:
        """The executors' ids: the CPU executors', then the GPU executors'."""
        return range(self.executors + self.gpu_executors)

    def is_gpu(self, tid: int) -> bool:
        """Whether executor ``tid`` is a GPU executor."""
        return tid >= self.executors
