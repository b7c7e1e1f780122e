"""Cloudburst: low-latency, stateful functions-as-a-service on a lattice key-value store.

>>> import cloudburst
>>> with cloudburst.local() as cb:                      # a throwaway cluster on this machine
...     square = cb.register(lambda lib, x: x * x, "square")
...     square(4).result(timeout=10)
16
"""

from __future__ import annotations

from pathlib import Path

from cloudburst.client import Connection, FunctionHandle, Future
from cloudburst.cluster.local import LocalSession
from cloudburst.errors import (
    Cancelled,
    CausalConflict,
    ClientError,
    CloudburstError,
    ConfigError,
    DagAlreadyExists,
    DagNotFound,
    DeadlineExceeded,
    DecodeError,
    EncodeError,
    ExecutorLost,
    FunctionNotFound,
    InvalidDag,
    InvalidRequest,
    KvsError,
    LatticeTypeMismatch,
    NoResources,
    NoServers,
    NotPinned,
    RemoteExecutionError,
    SchedulingError,
    TransportError,
    VersionMismatch,
)
from cloudburst.protocol.messages import ConsistencyType
from cloudburst.transport.security import SecurityConfig

__version__ = "0.1.0"

NORMAL = ConsistencyType.NORMAL
SINGLE = ConsistencyType.SINGLE
MULTI = ConsistencyType.MULTI


def connect(
    scheduler: str = "127.0.0.1",
    *,
    host: str = "127.0.0.1",
    timeout: float = 30.0,
    security: SecurityConfig | None = None,
    check_versions: bool = True,
) -> Connection:
    """Connects to a running deployment through one of its schedulers.

    Args:
        scheduler: The scheduler's host.
        host: This machine's address as the executors can reach it (results are pushed there).
        timeout: Default deadline, in seconds, of every call and of waiting for results.
        security: CURVE keys for a deployment that requires them: ``SecurityConfig.for_client(cluster_public_file,
            client_secret_file)`` (see ``docs/security.md``).
        check_versions: Refuse a cluster whose Python or cloudpickle major.minor version differs from this
            client's (functions travel as cloudpickle bytecode, which needs them to match).

    Raises:
        DeadlineExceeded: The scheduler did not answer in time (is the cluster running? is the key authorized?).
        ConfigError: ``security`` was built from missing or malformed key files.
        VersionMismatch: The cluster runs other Python or cloudpickle versions (see ``check_versions``).
    """
    return Connection(scheduler, host=host, timeout=timeout, security=security, check_versions=check_versions)


def local(
    executors: int = 3, data_dir: Path | None = None, host: str | None = None, nodes: int = 1, kvs: str | None = None
) -> LocalSession:
    """A throwaway cluster on this machine, as a context manager yielding a :class:`Connection`.

    Args:
        executors: Executor processes per node.
        data_dir: Keep the data here; by default it is thrown away with the cluster.
        host: The loopback address to bind; a random one by default, so it never clashes with other clusters.
        nodes: Nodes (each a cache and its executors) on consecutive loopback addresses from ``host``.
        kvs: A Redis engine URL (``redis://…`` or ``redis+cluster://…``) the KVS stores in instead of locally.
    """
    return LocalSession(executors=executors, data_dir=data_dir, host=host, nodes=nodes, kvs=kvs)


__all__ = [
    "MULTI",
    "NORMAL",
    "SINGLE",
    "Cancelled",
    "CausalConflict",
    "ClientError",
    "CloudburstError",
    "ConfigError",
    "Connection",
    "ConsistencyType",
    "DagAlreadyExists",
    "DagNotFound",
    "DeadlineExceeded",
    "DecodeError",
    "EncodeError",
    "ExecutorLost",
    "FunctionHandle",
    "FunctionNotFound",
    "Future",
    "InvalidDag",
    "InvalidRequest",
    "KvsError",
    "LatticeTypeMismatch",
    "NoResources",
    "NoServers",
    "NotPinned",
    "RemoteExecutionError",
    "SchedulingError",
    "SecurityConfig",
    "TransportError",
    "VersionMismatch",
    "__version__",
    "connect",
    "local",
]
