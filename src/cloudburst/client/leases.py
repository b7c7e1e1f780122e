"""Where a client sends requests itself, under the leases its scheduler grants: pure (the connection asks for the
leases and sends what these choose).

A function lease names the executors that take one-shot calls of a function; a DAG lease names, per function of a
registered DAG, the executors it is pinned at. A client sends each call where the fewest calls wait (the lease's
figure plus its own calls in flight), and a DAG request's schedules the same way, one executor per function.
"""

from __future__ import annotations

import random
import time
from collections.abc import Mapping
from dataclasses import dataclass

from cloudburst.config import RuntimePorts
from cloudburst.protocol.runtime_messages import Dag, DagCall, DagSchedule, FunctionLease, schedule_of_call
from cloudburst.transport.endpoints import parse_endpoint


@dataclass(slots=True)
class Lease:
    """Executors a function's calls may go to directly, until ``expires`` (monotonic seconds), with the calls
    queued at each when the lease was granted and whether each hosts DAG functions."""

    version: int
    executors: tuple[str, ...]
    expires: float
    queued: tuple[int, ...]
    pinned: tuple[bool, ...]
    incarnations: tuple[str, ...]

    @classmethod
    def granted(cls, lease: FunctionLease, now: float) -> Lease:
        """The lease a scheduler granted at monotonic time ``now``."""
        return cls(
            lease.function_version, lease.executors, now + lease.ttl, lease.queued, lease.pinned, lease.incarnations
        )

    def pick(
        self, rng: random.Random, in_flight: Mapping[str, int], preferred_hosts: frozenset[str] = frozenset()
    ) -> tuple[str, str]:
        """The executor where the fewest calls wait (the lease's figure plus this connection's calls in flight),
        unpinned first, at random among equals; and its incarnation (empty if the scheduler named none).

        An executor runs one call at a time, so calls that wait for one another (``send``/``recv``) each need
        their own; and random ties keep two functions' calls from being placed in lockstep.

        Args:
            rng: Breaks ties.
            in_flight: This connection's requests in flight per executor endpoint.
            preferred_hosts: Executors on these hosts go first, however busy (functions colocated with ones
                already placed there).
        """
        best: tuple[bool, int, bool] | None = None
        chosen: list[int] = []
        for index, executor in enumerate(self.executors):
            away = bool(preferred_hosts) and parse_endpoint(executor).host not in preferred_hosts
            key = (away, self.queued[index] + in_flight.get(executor, 0), self.pinned[index])
            if best is None or key < best:
                best, chosen = key, [index]
            elif key == best:
                chosen.append(index)
        index = chosen[0] if len(chosen) == 1 else rng.choice(chosen)
        return self.executors[index], self.incarnations[index]


@dataclass(frozen=True, slots=True)
class DagPlacement:
    """One request of a DAG, placed under a lease.

    Attributes:
        schedules: The sources' schedules and the executor control endpoint each goes to (every other function
            gets its schedule with its first trigger).
        executors: Every executor the request uses, with the incarnation the lease named (to tell when one is lost).
    """

    schedules: tuple[tuple[str, DagSchedule], ...]
    executors: tuple[tuple[str, str], ...]


@dataclass(slots=True)
class DagLeaseView:
    """Where a registered DAG's requests may go directly, until ``expires`` (monotonic seconds)."""

    dag: Dag
    functions: tuple[Lease, ...]
    expires: float

    def place(
        self,
        call: DagCall,
        schedule_id: str,
        rng: random.Random,
        in_flight: Mapping[str, int],
        ports: RuntimePorts,
    ) -> DagPlacement:
        """Picks an executor per function (colocated functions on one host where the lease allows it) and builds
        the sources' schedules for request ``schedule_id`` of ``call``."""
        chosen: dict[str, tuple[str, str]] = {}
        for reference, lease in zip(self.dag.functions, self.functions, strict=True):
            preferred: frozenset[str] = frozenset()
            if reference.name in self.dag.colocated and not reference.gpu:
                preferred = frozenset(
                    parse_endpoint(chosen[name][0]).host for name in self.dag.colocated if name in chosen
                )
            chosen[reference.name] = lease.pick(rng, in_flight, preferred)
        locations = {name: location_of(endpoint, ports) for name, (endpoint, _) in chosen.items()}
        start_time = time.time()
        schedules = tuple(
            (
                chosen[source][0],
                schedule_of_call(call, schedule_id, self.dag, source, locations, start_time),
            )
            for source in self.dag.sources()
        )
        return DagPlacement(schedules, tuple(dict.fromkeys(chosen.values())))


def executor_of(endpoint: str, ports: RuntimePorts) -> tuple[str, int]:
    """The ``(ip, tid)`` of the executor whose control endpoint is ``endpoint``."""
    parsed = parse_endpoint(endpoint)
    return parsed.host, parsed.port - ports.executor_control


def location_of(endpoint: str, ports: RuntimePorts) -> str:
    """The ``"ip:tid"`` location of the executor whose control endpoint is ``endpoint``."""
    host, tid = executor_of(endpoint, ports)
    return f"{host}:{tid}"
