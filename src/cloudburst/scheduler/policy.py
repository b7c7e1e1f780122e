"""Placement decisions as pure functions of their inputs: which executor runs a call or pins a function.

The original policy object owned sockets, the KVS client and a global random generator, which made it untestable
without a cluster, and its ``random``/``round-robin`` options skipped back-off and load shedding while sampling
from sets (which Python 3.11 refuses) and rotating the shared location lists in place. Here the caller describes
each candidate (:class:`ExecutorCandidate`) and what the caches hold, the policy filters and picks with an injected
random source, and every option goes through the same filters.

The default option is the original's *locality* policy: a call goes to the node whose cache already holds most of
the keys its arguments reference, so the executor reads them from its local cache instead of the KVS; a fixed share
of calls (``random_threshold``) ignores locality, which keeps load spread and lets caches of other nodes warm up.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, TypeVar

#: An executor thread: ``(node ip, tid)``.
ExecutorId = tuple[str, int]
#: How a call's executor is chosen once the filters have run.
PolicyMode = Literal["locality", "random", "round-robin"]
#: Where each KVS key is cached: key -> node ips whose cache reported holding it.
KeyLocations = Mapping[str, Collection[str]]

#: Round-robin positions remembered at once (one per function); beyond that they start over.
MAX_ROTATIONS = 65_536

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


def key_locations_from_key_sets(key_sets: Mapping[str, Iterable[str]]) -> dict[str, tuple[str, ...]]:
    """Inverts per-node key sets into key -> caching node ips (sorted, so later choices do not depend on order).

    Args:
        key_sets: For each node ip, the keys its cache reported.
    """
    located: dict[str, set[str]] = {}
    for ip, cached in key_sets.items():
        for key in cached:
            located.setdefault(key, set()).add(ip)
    return {key: tuple(sorted(ips)) for key, ips in located.items()}


@dataclass(frozen=True, slots=True)
class PolicyOptions:
    """Tunables of :class:`PlacementPolicy`; the defaults are the original system's constants.

    Attributes:
        mode: ``"locality"`` (the original's default) prefers the node caching most referenced keys; ``"random"``
            picks uniformly; ``"round-robin"`` rotates through the candidates. All three apply back-off and load
            shedding first (the original's ``random`` and ``round-robin`` did not).
        random_threshold: The probability that a locality pick ignores locality (exploration), and that an
            overloaded candidate survives load shedding (the original tied both to one constant).
        shed_limit: Assignments within ``load_window`` above which a candidate counts as overloaded.
        load_window: Seconds an assignment counts towards an executor's load.
        backoff_utilization: Reported utilization above which an executor is backed off (if it is not the only
            replica of anything it hosts).
        backoff_period: Seconds a back-off lasts.
        back_off: Whether high utilization backs executors off at all; the original did so in cluster mode only,
            since a local deployment has nowhere else to send the work.
    """

    mode: PolicyMode = "locality"
    random_threshold: float = 0.2
    shed_limit: int = 1000
    load_window: float = 5.0
    backoff_utilization: float = 0.7
    backoff_period: float = 5.0
    back_off: bool = True


@dataclass(frozen=True, slots=True)
class ExecutorCandidate:
    """What the policy knows about one executor that could take the work.

    Attributes:
        executor: The executor.
        pinned: Functions pinned there, or being pinned there right now.
        recent_assignments: Work this scheduler sent there within the current load window.
        backed_off: It reported high utilization recently; avoid it while others can take the work.
        queued: Calls waiting or running there now (an executor runs one at a time).
    """

    executor: ExecutorId
    pinned: int = 0
    recent_assignments: int = 0
    backed_off: bool = False
    queued: int = 0

    @property
    def node(self) -> str:
        """The node (IP) the executor runs on."""
        return self.executor[0]


class PlacementPolicy:
    """Picks executors; every random choice comes from ``rng``.

    Candidates are sorted before any random choice, so a seeded ``rng`` gives the same decisions regardless of the
    iteration order of the caller's sets (string hashing is salted per process). The only state kept is the
    round-robin position of each function, which is the policy's own (the original rotated the shared location
    lists, racing with the code that maintained them).

    Args:
        rng: The random source (a seeded :class:`random.Random` in tests).
        options: Mode and thresholds.
    """

    def __init__(self, rng: RandomSource, options: PolicyOptions | None = None) -> None:
        self.rng = rng
        self.options = options or PolicyOptions()
        self._last_pick: dict[str, ExecutorId] = {}

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
        self,
        candidates: Iterable[ExecutorCandidate],
        preferred_nodes: Collection[str] = (),
        references: Iterable[str] = (),
        key_locations: KeyLocations | None = None,
        rotation: str = "",
        idle_first: bool = False,
    ) -> ExecutorId | None:
        """Where to run one call (a one-shot call or one function of a DAG call).

        Colocation comes first: if any candidate is on a preferred node, only those are considered (data passed
        between colocated functions stays on the node). With ``idle_first`` (one-shot calls), only the candidates
        with the fewest calls queued are considered, those without pinned functions first: functions that wait
        for one another (``send``/``recv``) must all run at once, and an executor runs one call at a time, so a
        call is queued behind another only when every executor is busy. Then backed-off executors are dropped,
        and each overloaded one is shed with probability ``1 - random_threshold``; neither filter ever empties
        the pool. The mode picks among what remains (see :class:`PolicyOptions`), so locality decides among
        equally idle executors.

        Args:
            candidates: The executors that could run the call.
            preferred_nodes: Node ips of colocated functions already placed.
            references: The KVS keys the call's arguments reference (locality mode).
            key_locations: Which node caches hold which keys (locality mode).
            rotation: What the round-robin position belongs to (the function name).
            idle_first: Consider only the least busy candidates (see above).

        Returns:
            The chosen executor, or ``None`` when there are no candidates.
        """
        pool = sorted(candidates, key=lambda c: c.executor)
        if not pool:
            return None
        near = [c for c in pool if c.node in preferred_nodes]
        if near:
            pool = near
        if idle_first:
            least = min((c.queued, c.pinned > 0) for c in pool)
            pool = [c for c in pool if (c.queued, c.pinned > 0) == least]
        rested = [c for c in pool if not c.backed_off]
        if rested:
            pool = rested
        pool = self._shed(pool)
        mode = self.options.mode
        if mode == "random":
            return self.choose(pool).executor
        if mode == "round-robin":
            return self._rotate(pool, rotation)
        return self._by_locality(pool, references, key_locations or {})

    def _shed(self, pool: list[ExecutorCandidate]) -> list[ExecutorCandidate]:
        """Drops overloaded candidates, most loaded first, each with probability ``1 - random_threshold``.

        The least loaded candidate is considered last and never dropped when it is all that is left, so overload
        never turns into an outage.
        """
        limit = self.options.shed_limit
        overloaded = sorted((c for c in pool if c.recent_assignments > limit), key=lambda c: -c.recent_assignments)
        kept = list(pool)
        for candidate in overloaded:
            if len(kept) == 1:
                break
            if self.rng.random() >= self.options.random_threshold:
                kept.remove(candidate)
        return kept

    def _rotate(self, pool: list[ExecutorCandidate], rotation: str) -> ExecutorId:
        """The candidate after the one picked last for ``rotation``, in executor order, wrapping around.

        Remembering the last pick rather than an index keeps the rotation fair when candidates come and go.
        """
        last = self._last_pick.get(rotation)
        chosen = pool[0].executor
        if last is not None:
            chosen = next((c.executor for c in pool if c.executor > last), chosen)
        if len(self._last_pick) >= MAX_ROTATIONS and rotation not in self._last_pick:
            self._last_pick.clear()
        self._last_pick[rotation] = chosen
        return chosen

    def _by_locality(
        self, pool: list[ExecutorCandidate], references: Iterable[str], key_locations: KeyLocations
    ) -> ExecutorId:
        """A candidate on the node whose cache holds most referenced keys, or (exploring) any candidate.

        Each distinct referenced key scores one point for every caching node that hosts a candidate. Ties between
        the best nodes are broken at random so that equally good nodes share the load.
        """
        nodes = {c.node for c in pool}
        scores: Counter[str] = Counter()
        for key in dict.fromkeys(references):
            scores.update(ip for ip in set(key_locations.get(key, ())) if ip in nodes)
        explore = self.rng.random() < self.options.random_threshold
        if not scores or explore:
            return self.choose(pool).executor
        best = max(scores.values())
        node = self.choose(sorted(ip for ip, score in scores.items() if score == best))
        return self.choose([c for c in pool if c.node == node]).executor

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
        if not self.options.back_off:
            return False
        return utilization > self.options.backoff_utilization and all(count > 1 for count in replica_counts)
