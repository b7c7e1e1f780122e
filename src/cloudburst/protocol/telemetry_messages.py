"""Typed telemetry messages (``TelemetryReport`` in ``internal.proto``): what roles tell the management service so
that people can see requests and caches.

Schedulers and executors record one :class:`TraceHop` per step of a request and send them in batches; node caches
send a :class:`CacheReport` every report period. Nothing here is needed to run requests: a lost report loses
visibility, never work.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import UTC, datetime

from cloudburst.clock import split_timestamp
from cloudburst.lattices import Lattice, LwwLattice, MultiKeyCausalLattice, SetLattice, SingleKeyCausalLattice

#: Roles whose hops place a request (``detail`` lists where each function went, ``stages`` how many): a scheduler,
#: or the client that sent a DAG request straight to its executors under a lease (its first source reports the hop).
PLACING_ROLES = frozenset({"scheduler", "client"})


@dataclass(frozen=True, slots=True)
class ReadRecord:
    """One key a traced step read.

    Attributes:
        key: The key.
        source: ``"executor"`` (the executor's own read tier), ``"cache"`` (the node cache) or ``"kvs"``.
        hit: Served from memory at that source without asking further.
        version: The version read, for people (``"lww 1764000000123456:42"``, a vector clock, ...); empty when
            the key did not exist.
    """

    key: str
    source: str
    hit: bool
    version: str


@dataclass(frozen=True, slots=True)
class TraceHop:
    """One step of a request at one role.

    Attributes:
        request_id: The request: a DAG call's schedule id, or a one-shot call's response key.
        role: ``"scheduler"``, ``"client"`` (a client placed it, see :data:`PLACING_ROLES`) or ``"executor"``.
        node: Where it ran: a scheduler's or client's host, or ``ip:tid`` of an executor.
        start: Wall-clock seconds since the epoch when the step started.
        duration: Seconds the step took.
        function: The function run (executor hops).
        dag: The DAG, for DAG requests.
        queue: Seconds the request waited at the executor before this step ran.
        end_to_end: For a DAG's sink, seconds from the scheduler's placement to the result; for a one-shot call,
            its run; otherwise 0.
        error: The error's class name when the step failed; empty when it succeeded.
        message: The error's message.
        traceback: The remote traceback of an error raised by user code.
        detail: What else people should know (a placing hop lists where each function was placed).
        reads: The keys the step read.
        stages: For a placing hop, how many functions it placed.
    """

    request_id: str
    role: str
    node: str
    start: float
    duration: float
    function: str = ""
    dag: str = ""
    queue: float = 0.0
    end_to_end: float = 0.0
    error: str = ""
    message: str = ""
    traceback: str = ""
    detail: str = ""
    reads: tuple[ReadRecord, ...] = ()
    stages: int = 0

    @property
    def ok(self) -> bool:
        """Whether the step succeeded."""
        return not self.error


@dataclass(frozen=True, slots=True)
class CacheReport:
    """A node cache's counters since it started (hits, misses) and what it holds now (keys, bytes)."""

    node: str
    hits: int = 0
    misses: int = 0
    negative_hits: int = 0
    keys: int = 0
    bytes: int = 0


@dataclass(frozen=True, slots=True)
class TelemetryReport:
    """A batch of trace hops and, from a node cache, its figures."""

    reporter: str
    hops: tuple[TraceHop, ...] = ()
    cache: CacheReport | None = None


def describe_version(lattice: Lattice | None) -> str:
    """The version of a value as :class:`ReadRecord` shows it; empty for a key that does not exist."""
    if lattice is None:
        return ""
    if isinstance(lattice, LwwLattice):
        return _describe_lww(lattice.timestamp)
    if isinstance(lattice, SingleKeyCausalLattice | MultiKeyCausalLattice):
        clock = ", ".join(f"{node}: {counter}" for node, counter in lattice.vector_clock.entries)
        return f"causal {{{clock}}} ({len(lattice.versions)} version(s))"
    if isinstance(lattice, SetLattice):
        return f"set of {len(lattice.reveal())}"
    return type(lattice).__name__


@functools.lru_cache(maxsize=1024)
def _describe_lww(timestamp: int) -> str:
    """An LWW version for people; cached, since a value read again and again keeps its version (and formatting a
    date costs more than the read from the executor's own copy)."""
    micros, writer = split_timestamp(timestamp)
    written = datetime.fromtimestamp(micros / 1e6, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    return f"lww {written} UTC by writer {writer}"
