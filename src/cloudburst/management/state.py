"""The management service's state: a live view of the cluster, events in, scaling instructions out.

:class:`ManagementState` keeps what the original management server (hydro-project/cluster) kept in its loop, minus
the sockets, the Kubernetes calls and the clock. The server feeds it executors' status reports, executors' and
schedulers' statistics, node membership changes and ticks, each with the current monotonic time, and carries out
the instructions it returns. The decisions themselves come from :mod:`cloudburst.management.policy`.

The view.

* *Threads* are known from their own ``ThreadStatus`` reports and forgotten after ``thread_timeout`` without one.
  The original kept them forever, so dead executors skewed every average.
* A *node* is an address. It is known while it has threads, or for ``thread_timeout`` after it joined or last
  reported. Its thread count is whatever its executors report, not an assumed 3.
* *Statistics* are summed over a window of one report period: DAG call counts from schedulers, execution counts and
  times from executors. When a tick finds the window complete, the policies run on it and a new window starts. The
  load comparison uses the window's measured length, so a late tick does not look like a load spike.
* *Node changes in flight*. An added node counts as pending until a node joins (by an event, or by a first status
  from a new address) or ``node_join_timeout`` passes.
* *Node lifecycle*. A node is *active* from its join or first status. A drain, decided by the node policy or asked
  for by an operator (:class:`DrainRequestEvent`), marks it *draining*: it stays in the view, left out of every
  average and placement, while its executors finish their work. Each executor ends its departure with a status
  marked ``departed``. Once every thread of the node has departed or fallen silent (``thread_timeout`` without a
  report), the state issues a :class:`ReleaseNodeInstruction` and forgets the node; its statuses are then ignored
  for ``thread_timeout``, since its executors' last reports may still be in flight. A drain the provisioner could
  not start is cancelled (:class:`DrainCancelledEvent`) and the node is active again.
* *Operator drains* are refused, with the reason, for a node that is unknown or already draining, and when the
  active nodes would fall below ``min_nodes`` (below one node when the state only watches). They ignore the grace
  period (someone asked), but start one: the policy makes no node change for ``grace_period`` after them.
* *Schedulers* are known from their periodic statistics and forgotten like threads; those configured at start are
  always known. The server answers scheduler-list queries from this set, so that executors find schedulers that
  started after them (the original gave each executor a fixed list at start).

Every instruction carries a ``reason`` for people; the most recent ones are kept, with their times, in
:meth:`ManagementState.decisions`.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import assert_never

from cloudburst.management.policy import (
    AddNodesInstruction,
    DereplicateFunctionInstruction,
    DrainNodeInstruction,
    FunctionScalingInstruction,
    FunctionWindow,
    LatencyHistory,
    ManagementPolicyConfig,
    NodePolicy,
    NodeView,
    ReplicaPolicy,
    ReplicateFunctionInstruction,
    ThreadView,
    average_utilization,
    pinned_ratio,
)
from cloudburst.protocol.runtime_messages import ExecutorStatistics, ThreadStatus

#: Decisions kept for :meth:`ManagementState.decisions`.
DECISION_HISTORY = 256
#: Nodes known at once; statuses from further addresses are ignored.
MAX_NODES = 16_384
#: Threads known at once; statuses from further threads are ignored.
MAX_THREADS = 65_536
#: Function names tracked at once (in a window, in the latency history); statistics of further names are ignored.
MAX_FUNCTIONS = 65_536
#: DAG names tracked in a window.
MAX_DAGS = 65_536
#: Schedulers known at once.
MAX_SCHEDULERS = 1_024


# -- events ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ThreadStatusEvent:
    """An executor thread reported its status."""

    status: ThreadStatus


@dataclass(frozen=True, slots=True)
class ExecutorStatisticsEvent:
    """An executor's statistics for one of its report periods: execution counts and times per function, and the
    end-to-end times of DAG requests that finished there."""

    statistics: ExecutorStatistics


@dataclass(frozen=True, slots=True)
class SchedulerStatisticsEvent:
    """A scheduler's statistics for one of its report periods: DAG call counts per function, and calls and
    inter-arrival times per DAG.

    Attributes:
        host: The scheduler's host, as executors and peers reach it.
        statistics: The report (its function entries carry counts only, no runtimes).
    """

    host: str
    statistics: ExecutorStatistics


@dataclass(frozen=True, slots=True)
class NodeJoinedEvent:
    """A node is up; its executors will report. Resolves one pending addition if the node is new."""

    node: str


@dataclass(frozen=True, slots=True)
class DrainRequestEvent:
    """An operator asks for ``node`` to be drained; answered with a drain or a :class:`DrainRefusedInstruction`."""

    node: str


@dataclass(frozen=True, slots=True)
class DrainCancelledEvent:
    """The drain of ``node`` could not be started (the provisioner refused it): the node is active again.

    The grace period still runs from the drain's decision, so the policy does not retry at once.
    """

    node: str


@dataclass(frozen=True, slots=True)
class ManagementTickEvent:
    """Time passed: threads are aged out on every tick, and the policies run once per report period."""


ManagementEvent = (
    ThreadStatusEvent
    | ExecutorStatisticsEvent
    | SchedulerStatisticsEvent
    | NodeJoinedEvent
    | DrainRequestEvent
    | DrainCancelledEvent
    | ManagementTickEvent
)


# -- instructions (besides the policies') ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReleaseNodeInstruction:
    """``node`` has drained (each of its threads departed or fell silent): release its machine.

    The state has forgotten the node by then; late reports from it are ignored.
    """

    node: str
    reason: str


@dataclass(frozen=True, slots=True)
class DrainRefusedInstruction:
    """An operator's drain of ``node`` was refused: nothing to carry out, only ``reason`` to tell."""

    node: str
    reason: str


#: What the server must carry out.
ManagementInstruction = (
    AddNodesInstruction
    | DrainNodeInstruction
    | ReleaseNodeInstruction
    | DrainRefusedInstruction
    | ReplicateFunctionInstruction
    | DereplicateFunctionInstruction
)


# -- views -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ManagementDecision:
    """An instruction the state issued, and when.

    Attributes:
        at: The time of the tick that decided it.
        instruction: What was decided; its ``reason`` says why.
    """

    at: float
    instruction: ManagementInstruction

    @property
    def reason(self) -> str:
        """Why the decision was made."""
        return self.instruction.reason


@dataclass(frozen=True, slots=True)
class DagLoad:
    """One report period's figures for a DAG. Shown, not acted on: no policy uses them, as in the original.

    Attributes:
        name: The DAG.
        calls: Calls the schedulers counted.
        mean_interarrival: Mean seconds between calls, or ``None`` without inter-arrival samples.
        completions: Requests that finished, as the executors running its sink reported.
        mean_runtime: Mean end-to-end seconds of those requests, or ``None`` without samples.
    """

    name: str
    calls: int = 0
    mean_interarrival: float | None = None
    completions: int = 0
    mean_runtime: float | None = None


# -- internal records ------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Node:
    threads: dict[int, ThreadView] = field(default_factory=dict)
    last_seen: float = 0.0
    draining: bool = False
    #: Threads of a draining node forgotten for their silence.
    silent: int = 0


@dataclass(slots=True)
class _RuntimeTally:
    executions: int = 0
    total: float = 0.0
    samples: int = 0


@dataclass(slots=True)
class _DagFigures:
    calls: int = 0
    interarrival_total: float = 0.0
    interarrivals: int = 0
    completions: int = 0
    runtime_total: float = 0.0
    runtimes: int = 0


class ManagementState:
    """The management service's view of the cluster and its scaling decisions; see the module docstring.

    Time comes only from the ``now`` passed to :meth:`handle`; an earlier time than one already seen is taken as
    the latest seen, so decisions never depend on a clock stepping back.

    Args:
        config: Policy thresholds and timeouts.
        schedulers: Scheduler hosts configured at start: always listed by :meth:`schedulers`.
        decision_history: How many recent decisions :meth:`decisions` keeps.
        autoscale: Run the replica and node policies; without, the state only watches (and still releases nodes an
            operator drained).
    """

    def __init__(
        self,
        config: ManagementPolicyConfig | None = None,
        *,
        schedulers: Iterable[str] = (),
        decision_history: int = DECISION_HISTORY,
        autoscale: bool = True,
    ) -> None:
        self.config = config or ManagementPolicyConfig()
        self.autoscale = autoscale
        self._configured_schedulers = frozenset(host for host in schedulers if host)
        self.replica_policy = ReplicaPolicy(self.config)
        self.node_policy = NodePolicy(self.config)
        #: Known nodes by address, each with its threads by tid.
        self._nodes: dict[str, _Node] = {}
        self._thread_count = 0
        #: Released nodes -> when; their late statuses are ignored until ``thread_timeout`` has passed.
        self._drained: dict[str, float] = {}
        #: Scheduler host -> when its last statistics arrived.
        self._schedulers: dict[str, float] = {}
        #: Deadlines of requested nodes that have not joined yet, earliest first.
        self._pending: deque[float] = deque()
        self._last_node_change: float | None = None
        #: Function -> when its replica set was last changed.
        self._replica_changes: dict[str, float] = {}
        self._window_start: float | None = None
        self._calls: Counter[str] = Counter()
        self._runtimes: dict[str, _RuntimeTally] = {}
        self._dag_tallies: dict[str, _DagFigures] = {}
        self._history: dict[str, LatencyHistory] = {}
        self._last_windows: tuple[FunctionWindow, ...] = ()
        self._last_dags: tuple[DagLoad, ...] = ()
        self._decisions: deque[ManagementDecision] = deque(maxlen=decision_history)
        self._now = -math.inf

    # -- public API --------------------------------------------------------------------------------------------

    def handle(self, event: ManagementEvent, now: float) -> list[ManagementInstruction]:
        """Applies ``event`` at time ``now`` and returns what the server must do, in order.

        Ticks produce the policies' decisions and the releases of nodes whose threads fell silent; a status marked
        ``departed`` may complete a drain (a release); a drain request produces a drain or a refusal. Every other
        event just updates the view.

        Args:
            event: What happened.
            now: Monotonic seconds.
        """
        now = max(now, self._now)
        self._now = now
        if self._window_start is None:
            self._window_start = now
        if isinstance(event, ThreadStatusEvent):
            return self._handle_status(event.status, now)
        elif isinstance(event, ExecutorStatisticsEvent):
            self._handle_executor_statistics(event.statistics)
        elif isinstance(event, SchedulerStatisticsEvent):
            self._handle_scheduler_statistics(event.host, event.statistics, now)
        elif isinstance(event, NodeJoinedEvent):
            self._handle_joined(event.node, now)
        elif isinstance(event, DrainRequestEvent):
            return self._handle_drain_request(event.node, now)
        elif isinstance(event, DrainCancelledEvent):
            self._handle_drain_cancelled(event.node)
        elif isinstance(event, ManagementTickEvent):
            return self._handle_tick(now)
        else:
            assert_never(event)
        return []

    def nodes(self) -> Mapping[str, NodeView]:
        """Every known node by address, draining ones included, sorted by address."""
        return {ip: self._view(ip, node) for ip, node in sorted(self._nodes.items())}

    def threads(self, node: str) -> tuple[ThreadView, ...]:
        """The threads of ``node`` that reported recently, by tid (empty for an unknown node)."""
        record = self._nodes.get(node)
        return self._view(node, record).threads if record is not None else ()

    def average_utilization(self) -> float | None:
        """The mean utilization of the running threads on nodes not being drained, or ``None`` if there are none."""
        return average_utilization(self._placeable_threads())

    def pinned_ratio(self) -> float | None:
        """The mean number of pinned functions per running thread on nodes not being drained, or ``None``."""
        return pinned_ratio(self._placeable_threads())

    def pending_nodes(self) -> int:
        """Nodes requested and not joined yet (nor given up on)."""
        return len(self._pending)

    def last_node_change(self) -> float | None:
        """When the last addition or drain was ordered, or ``None`` if never."""
        return self._last_node_change

    def schedulers(self) -> tuple[str, ...]:
        """The hosts of the schedulers configured at start or that reported recently, sorted."""
        return tuple(sorted(self._configured_schedulers | self._schedulers.keys()))

    def decisions(self) -> tuple[ManagementDecision, ...]:
        """The most recent decisions, oldest first."""
        return tuple(self._decisions)

    def function_windows(self) -> tuple[FunctionWindow, ...]:
        """Every function's statistics in the last complete window, by name."""
        return self._last_windows

    def dag_loads(self) -> tuple[DagLoad, ...]:
        """Every DAG's figures in the last complete window, by name."""
        return self._last_dags

    def latency_history(self) -> Mapping[str, LatencyHistory]:
        """Each function's latency history, as the drift rule compares against."""
        return dict(self._history)

    # -- inputs ------------------------------------------------------------------------------------------------

    def _handle_status(self, status: ThreadStatus, now: float) -> list[ManagementInstruction]:
        if not status.ip or status.ip in self._drained:
            return []
        node = self._nodes.get(status.ip)
        if node is None:
            # A departing executor of a node no longer tracked must not bring the node back.
            if not status.running or status.departed or len(self._nodes) >= MAX_NODES:
                return []
            node = self._nodes[status.ip] = _Node(last_seen=now)
            self._node_arrived()
        if status.tid not in node.threads:
            if self._thread_count >= MAX_THREADS:
                return []
            self._thread_count += 1
        utilization = status.utilization if math.isfinite(status.utilization) else 0.0
        node.threads[status.tid] = ThreadView(
            ip=status.ip,
            tid=status.tid,
            functions=tuple(dict.fromkeys(status.functions)),
            utilization=min(1.0, max(0.0, utilization)),
            type=status.type,
            running=status.running and not status.departed,
            last_seen=now,
            departed=status.departed,
        )
        node.last_seen = now
        return self._release_if_drained(status.ip, node, now) if status.departed else []

    def _handle_executor_statistics(self, statistics: ExecutorStatistics) -> None:
        for entry in statistics.functions:
            samples = [r for r in entry.runtimes if math.isfinite(r) and r >= 0]
            if not entry.name or not samples:
                continue
            tally = self._runtimes.get(entry.name)
            if tally is None:
                if len(self._runtimes) >= MAX_FUNCTIONS:
                    continue
                tally = self._runtimes[entry.name] = _RuntimeTally()
            tally.executions += max(entry.call_count, len(samples))
            tally.total += sum(samples)
            tally.samples += len(samples)
        for dag in statistics.dags:
            runtimes = [r for r in dag.runtimes if math.isfinite(r) and r >= 0]
            dag_tally = self._dag_tally(dag.name)
            if dag_tally is not None and runtimes:
                dag_tally.completions += max(dag.call_count, len(runtimes))
                dag_tally.runtime_total += sum(runtimes)
                dag_tally.runtimes += len(runtimes)

    def _handle_scheduler_statistics(self, host: str, statistics: ExecutorStatistics, now: float) -> None:
        if host and (host in self._schedulers or len(self._schedulers) < MAX_SCHEDULERS):
            self._schedulers[host] = now
        for entry in statistics.functions:
            if entry.name and entry.call_count > 0 and (entry.name in self._calls or len(self._calls) < MAX_FUNCTIONS):
                self._calls[entry.name] += entry.call_count
        for dag in statistics.dags:
            interarrivals = [t for t in dag.interarrivals if math.isfinite(t) and t >= 0]
            dag_tally = self._dag_tally(dag.name)
            if dag_tally is not None:
                dag_tally.calls += max(dag.call_count, 0)
                dag_tally.interarrival_total += sum(interarrivals)
                dag_tally.interarrivals += len(interarrivals)

    def _handle_joined(self, ip: str, now: float) -> None:
        if not ip:
            return
        # A join after a release is a new node at a reused address.
        self._drained.pop(ip, None)
        node = self._nodes.get(ip)
        if node is not None:
            node.last_seen = now
        elif len(self._nodes) < MAX_NODES:
            self._nodes[ip] = _Node(last_seen=now)
            self._node_arrived()

    def _handle_drain_request(self, ip: str, now: float) -> list[ManagementInstruction]:
        node = self._nodes.get(ip)
        refusal = None
        if node is None:
            refusal = f"{ip!r} is not a known node (known: {', '.join(sorted(self._nodes)) or 'none'})"
        elif node.draining:
            refusal = f"{ip} is being drained already"
        else:
            active = sum(1 for other in self._nodes.values() if not other.draining)
            # Without autoscaling nothing adds nodes back, so the bound is the operator's to choose; one node must
            # stay to run anything at all.
            if not self.autoscale and active <= 1:
                refusal = f"draining {ip} would leave no active node"
            elif self.autoscale and active - 1 < self.config.min_nodes:
                refusal = (
                    f"draining {ip} would leave {_count(active - 1, 'active node')}, "
                    f"fewer than min_nodes={self.config.min_nodes}"
                )
        if refusal is not None:
            return [DrainRefusedInstruction(ip, refusal)]
        assert node is not None
        node.draining = True
        self._last_node_change = now
        drain = DrainNodeInstruction(ip, "an operator asked for it", tuple(sorted(node.threads)))
        self._decisions.append(ManagementDecision(now, drain))
        # A node none of whose threads reported has nothing to wait for.
        return [drain, *self._release_if_drained(ip, node, now)]

    def _handle_drain_cancelled(self, ip: str) -> None:
        node = self._nodes.get(ip)
        if node is not None and node.draining:
            node.draining = False
            node.silent = 0

    def _node_arrived(self) -> None:
        if self._pending:
            self._pending.popleft()

    # -- periodic work -----------------------------------------------------------------------------------------

    def _handle_tick(self, now: float) -> list[ManagementInstruction]:
        self._age(now)
        releases = [
            release
            for ip, node in list(self._nodes.items())
            if node.draining
            for release in self._release_if_drained(ip, node, now)
        ]
        assert self._window_start is not None
        if now - self._window_start < self.config.report_period:
            return releases
        window_seconds = now - self._window_start
        self._window_start = now
        windows = self._take_windows()
        if not self.autoscale:
            self._update_history(windows)
            return releases
        threads = self._placeable_threads()
        out: list[ManagementInstruction] = []

        function_changes: list[FunctionScalingInstruction] = self.replica_policy.decide(
            windows, threads, window_seconds, self._history, skip=self._replica_changes.keys()
        )
        changed = self._replica_changes.keys() | {change.function for change in function_changes}
        function_changes.extend(self.replica_policy.hot_threads(threads, skip=changed))
        for change in function_changes:
            self._replica_changes[change.function] = now
        out.extend(function_changes)
        self._update_history(windows)

        node_change = self.node_policy.decide(
            tuple(self.nodes().values()), len(self._pending), self._last_node_change, now
        )
        if isinstance(node_change, AddNodesInstruction):
            self._pending.extend([now + self.config.node_join_timeout] * node_change.count)
        elif isinstance(node_change, DrainNodeInstruction):
            self._nodes[node_change.node].draining = True
        if node_change is not None:
            self._last_node_change = now
            out.append(node_change)

        self._decisions.extend(ManagementDecision(now, instruction) for instruction in out)
        return [*releases, *out]

    def _age(self, now: float) -> None:
        config = self.config
        cutoff = now - config.thread_timeout
        for ip, node in list(self._nodes.items()):
            # A departed thread of a draining node said its last word: it is gone, not silent.
            stale = [
                tid
                for tid, thread in node.threads.items()
                if thread.last_seen < cutoff and not (node.draining and thread.departed)
            ]
            for tid in stale:
                del node.threads[tid]
            self._thread_count -= len(stale)
            if node.draining:
                # Released (after this) rather than forgotten: the provisioner still holds its machine.
                node.silent += len(stale)
            elif not node.threads and node.last_seen < cutoff:
                del self._nodes[ip]
        self._drained = {ip: at for ip, at in self._drained.items() if at >= cutoff}
        self._schedulers = {host: at for host, at in self._schedulers.items() if at >= cutoff}
        while self._pending and self._pending[0] <= now:
            self._pending.popleft()
        self._replica_changes = {
            name: at for name, at in self._replica_changes.items() if now - at < config.replica_cooldown
        }

    def _take_windows(self) -> tuple[FunctionWindow, ...]:
        windows = []
        for name in sorted(self._calls.keys() | self._runtimes.keys()):
            tally = self._runtimes.get(name, _RuntimeTally())
            windows.append(FunctionWindow(name, self._calls[name], tally.executions, tally.total, tally.samples))
        self._last_windows = tuple(windows)
        self._last_dags = tuple(
            DagLoad(
                name,
                calls=tally.calls,
                mean_interarrival=tally.interarrival_total / tally.interarrivals if tally.interarrivals else None,
                completions=tally.completions,
                mean_runtime=tally.runtime_total / tally.runtimes if tally.runtimes else None,
            )
            for name, tally in sorted(self._dag_tallies.items())
        )
        self._calls = Counter()
        self._runtimes = {}
        self._dag_tallies = {}
        return self._last_windows

    def _update_history(self, windows: Iterable[FunctionWindow]) -> None:
        for window in windows:
            past = self._history.get(window.name)
            if past is None and len(self._history) >= MAX_FUNCTIONS:
                continue
            updated = (past or LatencyHistory()).updated(window)
            if updated.executions > 0:
                self._history[window.name] = updated

    # -- helpers -----------------------------------------------------------------------------------------------

    def _placeable_threads(self) -> list[ThreadView]:
        """Running threads on nodes not being drained: the ones that count as replicas and can take new ones."""
        return [
            thread
            for _, node in sorted(self._nodes.items())
            if not node.draining
            for _, thread in sorted(node.threads.items())
            if thread.running
        ]

    def _release_if_drained(self, ip: str, node: _Node, now: float) -> list[ManagementInstruction]:
        """Releases a draining node once every thread it has left has departed; forgets it."""
        if not node.draining or not all(thread.departed for thread in node.threads.values()):
            return []
        departed, silent = len(node.threads), node.silent
        if departed and silent:
            reason = f"{_count(departed, 'thread')} of {ip} departed and {silent} fell silent"
        elif departed:
            reason = f"every thread of {ip} departed ({departed})"
        elif silent:
            reason = f"every thread of {ip} fell silent ({silent})"
        else:
            reason = f"no thread of {ip} ever reported"
        del self._nodes[ip]
        self._thread_count -= departed
        if ip in self._drained or len(self._drained) < MAX_NODES:
            self._drained[ip] = now
        release = ReleaseNodeInstruction(ip, reason)
        self._decisions.append(ManagementDecision(now, release))
        return [release]

    def _dag_tally(self, name: str) -> _DagFigures | None:
        tally = self._dag_tallies.get(name)
        if tally is None and name and len(self._dag_tallies) < MAX_DAGS:
            tally = self._dag_tallies[name] = _DagFigures()
        return tally

    @staticmethod
    def _view(ip: str, node: _Node) -> NodeView:
        return NodeView(ip, tuple(thread for _, thread in sorted(node.threads.items())), node.draining)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
