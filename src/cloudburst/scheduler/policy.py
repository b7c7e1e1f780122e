"""Placement decisions as pure functions of their inputs: which executor runs a call or pins a function.

The original policy object owned sockets, the KVS client and a global random generator, which made it untestable
without a cluster, and its ``random``/``round-robin`` options skipped back-off and load shedding (B7) while sampling
from sets (B3). Here the caller describes each candidate (:class:`ExecutorCandidate`), the policy filters and picks
with an injected random source, and every option goes through the same filters.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

#: An executor thread: ``(node ip, tid)``.
ExecutorId = tuple[str, int]

_T = TypeVar("_T")


class RandomSource(Protocol):
    """The part of :class:`random.Random` the scheduler uses; a seeded instance makes every decision reproducible."""

    def random(self) -> float:
        """A float in ``[0, 1)``."""
        ...

    def getrandbits(self, k: int, /) -> int:
        """An integer with ``k`` random bits."""
        ...


def location_string(executor: ExecutorId) -> str:
    """The ``"ip:tid"`` form that ``DagSchedule.locations`` carries."""
    return f"{executor[0]}:{executor[1]}"


@dataclass(frozen=True, slots=True)
class PolicyOptions:
    """Tunables of :class:`PlacementPolicy`; the defaults are the original system's constants.

    Attributes:
        random_threshold: The probability that an overloaded candidate survives load shedding.
        shed_limit: Assignments within one report period above which a candidate counts as overloaded.
        backoff_utilization: Reported utilization above which an executor is backed off (if it is not the only
            replica of anything it hosts).
    """

    random_threshold: float = 0.2
    shed_limit: int = 1000
    backoff_utilization: float = 0.7


@dataclass(frozen=True, slots=True)
class ExecutorCandidate:
    """What the policy knows about one executor that could take the work.

    Attributes:
        executor: The executor.
        pinned: Functions pinned there, or being pinned there right now.
        recent_assignments: Work this scheduler sent there within the current load window.
        backed_off: It reported high utilization recently; avoid it while others can take the work.
    """

    executor: ExecutorId
    pinned: int = 0
    recent_assignments: int = 0
    backed_off: bool = False

    @property
    def node(self) -> str:
        """The node (IP) the executor runs on."""
        return self.executor[0]


class PlacementPolicy:
    """Picks executors; every random choice comes from ``rng``.

    Candidates are sorted before any random choice, so a seeded ``rng`` gives the same decisions regardless of the
    iteration order of the caller's sets (string hashing is salted per process).

    Args:
        rng: The random source (a seeded :class:`random.Random` in tests).
        options: Thresholds.
    """

    def __init__(self, rng: RandomSource, options: PolicyOptions | None = None) -> None:
        self.rng = rng
        self.options = options or PolicyOptions()

    def choose(self, items: Sequence[_T]) -> _T:
        """A uniformly random element of ``items``.

        Raises:
            ValueError: ``items`` is empty.
        """
        if not items:
            raise ValueError("cannot choose from an empty sequence")
        return items[min(int(self.rng.random() * len(items)), len(items) - 1)]

    def new_uuid(self) -> str:
        """A random (version 4) UUID string drawn from ``rng``."""
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def pick_for_call(
        self, candidates: Iterable[ExecutorCandidate], preferred_nodes: Collection[str] = ()
    ) -> ExecutorId | None:
        """Where to run one call (a one-shot call or one function of a DAG call).

        Colocation comes first: if any candidate is on a preferred node, only those are considered (data passed
        between colocated functions stays on the node). Then backed-off executors are dropped, and each overloaded
        one survives only with probability ``random_threshold``; neither filter ever empties the pool. The pick is
        uniform among what remains.

        Returns:
            The chosen executor, or ``None`` when there are no candidates.
        """
        pool = sorted(candidates, key=lambda c: c.executor)
        if not pool:
            return None
        near = [c for c in pool if c.node in preferred_nodes]
        if near:
            pool = near
        rested = [c for c in pool if not c.backed_off]
        if rested:
            pool = rested
        limit = self.options.shed_limit
        kept = [c for c in pool if c.recent_assignments <= limit or self.rng.random() < self.options.random_threshold]
        # Shedding everyone would turn overload into an outage: keep the least loaded one instead.
        pool = kept or [min(pool, key=lambda c: c.recent_assignments)]
        return self.choose(pool).executor

    def pick_for_pin(
        self, candidates: Iterable[ExecutorCandidate], preferred_nodes: Collection[str] = ()
    ) -> ExecutorId | None:
        """Where to pin a function: on a preferred node if possible, then on an executor with the fewest pins.

        Spreading pins keeps each executor's loaded functions (and their memory) small and leaves room for
        replication; ties are broken at random so that concurrent schedulers do not all pick the same executor.

        Returns:
            The chosen executor, or ``None`` when there are no candidates.
        """
        pool = sorted(candidates, key=lambda c: c.executor)
        if not pool:
            return None
        near = [c for c in pool if c.node in preferred_nodes]
        if near:
            pool = near
        fewest = min(c.pinned for c in pool)
        return self.choose([c for c in pool if c.pinned == fewest]).executor

    def should_back_off(self, utilization: float, replica_counts: Iterable[int]) -> bool:
        """Whether an executor reporting ``utilization`` should get no new work for a while.

        Args:
            utilization: The executor's reported busy fraction.
            replica_counts: For each function pinned there, how many executors host it. An executor that is the
                only replica of some function is never backed off, or that function's calls would have nowhere
                else to go.
        """
        return utilization > self.options.backoff_utilization and all(count > 1 for count in replica_counts)
