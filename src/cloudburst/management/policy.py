"""The management service's scaling rules, as pure functions of a snapshot of the cluster.

Both policies are the original's (``DefaultHydroPolicy`` in hydro-project/cluster) and run once per report period:

* :class:`ReplicaPolicy` sizes each function's replica set. It compares the DAG calls the schedulers counted in the
  window with the calls the current replicas can absorb at the latency the executors measured. Above
  ``scale_up_load`` of that it adds replicas; below ``scale_down_load`` it removes some; in between it adds replicas
  if the latency drifted above ``max_latency_deviation`` times its history. Threads that are nearly always busy get
  more replicas of everything they host.
* :class:`NodePolicy` sizes the executor pool. It adds nodes when threads are busy or nearly all of them hold a
  pinned function, drains a node when the cluster is idle (the one hosting the fewest functions, then the least
  busy), and then waits ``grace_period`` before the next change, because new nodes take minutes to start and report.

The policies keep nothing between runs: the caller passes the snapshot, the latency history and the time of the
last node change, and carries out (and remembers) what they return. There is no randomness; wherever the original
picked at random, these pick by load and break ties by address, so the same inputs always give the same decisions.

Where the original was broken, these implement what it meant to do:

* the hot-thread rule replicates (the original's call lacked an argument and crashed the server);
* scale-down is a deliberate rule with a floor of ``min_replicas`` (the original ran it despite a ``pass`` that
  suggested it was disabled, and its scaler silently ignored targets below 2);
* a function with statistics but no live replica is skipped (the original raised ``KeyError``);
* a drain names the node's actual threads, as reported, and nodes are counted by address (the original assumed 3
  threads per node, so a GPU node's drain never completed).

Beyond that: at most one node change per run, with adding preferred to draining (the original could add four nodes
and drain one in the same run); a per-function cooldown, so that a replication is not repeated before the new
replicas show up in status reports; and a ``max_nodes`` bound.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

from cloudburst.errors import ConfigError
from cloudburst.protocol.runtime_messages import ExecutorType

#: An executor thread: ``(node address, tid)``.
ThreadKey = tuple[str, int]

#: The original's policy period (``REPORT_PERIOD``), in seconds; statistics are summed over one such window.
REPORT_PERIOD = 5.0


@dataclass(frozen=True, slots=True)
class ManagementPolicyConfig:
    """Thresholds of the management policies; the defaults are the original's constants where it had them.

    Attributes:
        report_period: Seconds between policy runs; statistics are summed over this window.
        thread_timeout: Seconds without a status report after which a thread is forgotten (three report periods).
            Schedulers are forgotten after the same silence.
        scale_up_load: Add replicas when a function's calls exceed this share of what its replicas can absorb.
        scale_down_load: Remove replicas when its calls fall below this share.
        max_latency_deviation: Add replicas when a function's mean latency exceeds this multiple of its history.
        min_replicas: Scale-down never leaves fewer replicas than this.
        replica_cooldown: Seconds after a replica change of a function before the next one. New replicas appear
            only in later status reports; acting sooner would count the same shortfall twice. Not in the original.
        hot_thread_utilization: Threads busier than this get more replicas of each function they host.
        hot_thread_replicas: Replicas added per function per hot thread; 0 turns the rule off.
        max_utilization: Add nodes when the mean thread utilization exceeds this.
        min_utilization: Drain a node when the mean thread utilization falls below this.
        max_pinned_ratio: Add nodes when the mean number of pinned functions per thread exceeds this, that is when
            few threads are left to take new pins.
        scale_increase: Nodes added at once.
        grace_period: Seconds after any node change (addition or drain) before the next.
        min_nodes: A drain never leaves fewer nodes than this; the original drained only above 5.
        max_nodes: Additions never take the nodes, counting those requested but not yet joined, above this. Not in
            the original, which grew without bound.
        node_join_timeout: Seconds a requested node counts as on its way; after that it is assumed lost, so it stops
            counting towards ``max_nodes``.

    Raises:
        ConfigError: A value is out of range, or two thresholds contradict each other.
    """

    report_period: float = REPORT_PERIOD
    thread_timeout: float = 3 * REPORT_PERIOD
    scale_up_load: float = 0.7
    scale_down_load: float = 0.1
    max_latency_deviation: float = 1.25
    min_replicas: int = 1
    replica_cooldown: float = 2 * REPORT_PERIOD
    hot_thread_utilization: float = 0.9
    hot_thread_replicas: int = 2
    max_utilization: float = 0.6
    min_utilization: float = 0.1
    max_pinned_ratio: float = 0.8
    scale_increase: int = 4
    grace_period: float = 120.0
    min_nodes: int = 5
    max_nodes: int = 64
    node_join_timeout: float = 600.0

    def __post_init__(self) -> None:
        if not (self.report_period > 0 and self.thread_timeout > 0 and self.node_join_timeout > 0):
            raise ConfigError("report_period, thread_timeout and node_join_timeout must be positive")
        if not (self.replica_cooldown >= 0 and self.grace_period >= 0):
            raise ConfigError("replica_cooldown and grace_period must not be negative")
        if not 0 <= self.scale_down_load < self.scale_up_load:
            raise ConfigError(
                f"need 0 <= scale_down_load < scale_up_load, not {self.scale_down_load} and {self.scale_up_load}"
            )
        if not 0 <= self.min_utilization < self.max_utilization:
            raise ConfigError(
                f"need 0 <= min_utilization < max_utilization, not {self.min_utilization} and {self.max_utilization}"
            )
        if not self.max_latency_deviation >= 1:
            raise ConfigError(f"max_latency_deviation must be at least 1, not {self.max_latency_deviation}")
        if not self.max_pinned_ratio > 0:
            raise ConfigError(f"max_pinned_ratio must be positive, not {self.max_pinned_ratio}")
        if not 0 <= self.hot_thread_utilization <= 1:
            raise ConfigError(f"hot_thread_utilization must be in [0, 1], not {self.hot_thread_utilization}")
        if self.min_replicas < 1 or self.hot_thread_replicas < 0 or self.scale_increase < 1:
            raise ConfigError("min_replicas and scale_increase must be at least 1, hot_thread_replicas at least 0")
        if not 0 <= self.min_nodes <= self.max_nodes or self.max_nodes < 1:
            raise ConfigError(
                f"need 0 <= min_nodes <= max_nodes and max_nodes >= 1, not {self.min_nodes}, {self.max_nodes}"
            )


# -- what the policies read ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ThreadView:
    """The latest status report of one executor thread.

    Attributes:
        ip: The node the thread runs on.
        tid: The thread's id on its node.
        functions: The functions pinned there.
        utilization: The share of its last report period it spent running requests, in ``[0, 1]``.
        type: CPU or GPU.
        running: ``False`` once the thread has started to depart.
        last_seen: When its latest report arrived (monotonic seconds).
        departed: Its departure has drained and it is exiting (its last report).
    """

    ip: str
    tid: int
    functions: tuple[str, ...] = ()
    utilization: float = 0.0
    type: ExecutorType = ExecutorType.CPU
    running: bool = True
    last_seen: float = 0.0
    departed: bool = False

    @property
    def key(self) -> ThreadKey:
        """``(ip, tid)``."""
        return (self.ip, self.tid)


@dataclass(frozen=True, slots=True)
class NodeView:
    """One node (an address) and its reporting threads.

    Attributes:
        node: The node's address.
        threads: Its threads that reported recently, by tid.
        draining: A drain was ordered; the node takes no part in averages or placement any more.
    """

    node: str
    threads: tuple[ThreadView, ...] = ()
    draining: bool = False


@dataclass(frozen=True, slots=True)
class FunctionWindow:
    """What one report period says about one function.

    Attributes:
        name: The function.
        calls: DAG calls the schedulers placed on it. One-shot calls are not counted, as in the original.
        executions: Executions the executors reported.
        runtime_total: The sum of the sampled execution times, in seconds.
        runtime_samples: How many execution times were sampled. Executors cap their samples per report, so this
            can be below ``executions``; the mean latency is taken over the samples.
    """

    name: str
    calls: int = 0
    executions: int = 0
    runtime_total: float = 0.0
    runtime_samples: int = 0

    @property
    def mean_latency(self) -> float | None:
        """Mean seconds per execution, or ``None`` without (positive) samples."""
        if self.runtime_samples <= 0 or self.runtime_total <= 0:
            return None
        return self.runtime_total / self.runtime_samples


@dataclass(frozen=True, slots=True)
class LatencyHistory:
    """A function's mean latency over every window so far, weighted by executions.

    Attributes:
        mean: Mean seconds per execution.
        executions: Executions the mean covers.
    """

    mean: float = 0.0
    executions: int = 0

    def updated(self, window: FunctionWindow) -> LatencyHistory:
        """The history with ``window``'s executions folded in (unchanged if the window has no samples)."""
        latency = window.mean_latency
        weight = max(window.executions, window.runtime_samples)
        if latency is None:
            return self
        total = self.executions + weight
        return LatencyHistory((self.mean * self.executions + latency * weight) / total, total)


def average_utilization(threads: Iterable[ThreadView]) -> float | None:
    """The mean utilization of ``threads``, or ``None`` if there are none."""
    values = [thread.utilization for thread in threads]
    return sum(values) / len(values) if values else None


def pinned_ratio(threads: Iterable[ThreadView]) -> float | None:
    """The mean number of functions pinned per thread, or ``None`` if there are no threads."""
    counts = [len(thread.functions) for thread in threads]
    return sum(counts) / len(counts) if counts else None


# -- what the policies decide ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AddNodesInstruction:
    """Start ``count`` more executor nodes.

    The state counts them as pending until they join (or ``node_join_timeout`` passes).
    """

    count: int
    reason: str


@dataclass(frozen=True, slots=True)
class DrainNodeInstruction:
    """Drain ``node``: tell the provisioner (no replacements for its processes; it goes first), then send a
    self-depart to each of its ``threads``. The state issues a ``ReleaseNodeInstruction`` once they have departed.

    ``threads`` are the tids that reported from the node, so a GPU node's single thread is drained as completely
    as a CPU node's three (the original assumed three threads on every node).
    """

    node: str
    reason: str
    threads: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class ReplicateFunctionInstruction:
    """Pin ``function`` on ``count`` more threads.

    ``candidates`` are the threads that can take it, best first: the right executor type, not hosting it yet, least
    loaded. Try them in order until ``count`` pins were accepted or the candidates run out; a refusal just moves on.
    """

    function: str
    count: int
    reason: str
    candidates: tuple[ThreadKey, ...] = ()


@dataclass(frozen=True, slots=True)
class DereplicateFunctionInstruction:
    """Unpin ``function`` from ``threads`` (``count`` of its current replicas)."""

    function: str
    count: int
    reason: str
    threads: tuple[ThreadKey, ...] = ()


#: A change to one function's replica set.
FunctionScalingInstruction = ReplicateFunctionInstruction | DereplicateFunctionInstruction
#: A change to the executor pool.
NodeScalingInstruction = AddNodesInstruction | DrainNodeInstruction


# -- policies --------------------------------------------------------------------------------------------------


class ReplicaPolicy:
    """Sizes each function's replica set (the original's ``replica_policy``, plus the hot-thread rule of its
    ``executor_policy``).

    Args:
        config: Thresholds.
    """

    def __init__(self, config: ManagementPolicyConfig) -> None:
        self.config = config

    def decide(
        self,
        windows: Iterable[FunctionWindow],
        threads: Sequence[ThreadView],
        window_seconds: float,
        history: Mapping[str, LatencyHistory],
        skip: Collection[str] = (),
    ) -> list[FunctionScalingInstruction]:
        """Replica changes for the functions called in the window, by load and latency drift.

        A function is left alone if the schedulers counted no call of it, if no executor timed it, or if it has no
        live replica, say because its executors departed or fell silent (the original raised ``KeyError`` here).

        Args:
            windows: Each function's statistics for the window.
            threads: The threads that count as replicas and can take new ones: live, running, and not on a node
                being drained.
            window_seconds: The window's length.
            history: Each function's latency before this window.
            skip: Functions not to change now (cooling down after an earlier change).

        Returns:
            At most one instruction per function, in function-name order.
        """
        if window_seconds <= 0:
            return []
        hosts = _hosts(threads)
        out: list[FunctionScalingInstruction] = []
        for window in sorted(windows, key=lambda w: w.name):
            latency = window.mean_latency
            replicas = hosts.get(window.name, ())
            if window.name in skip or window.calls <= 0 or latency is None or not replicas:
                continue
            change = self._size(window, latency, replicas, threads, window_seconds, history.get(window.name))
            if change is not None:
                out.append(change)
        return out

    def hot_threads(
        self, threads: Sequence[ThreadView], skip: Collection[str] = ()
    ) -> list[ReplicateFunctionInstruction]:
        """More replicas of every function on a thread busier than ``hot_thread_utilization``.

        The original's version of this rule crashed the management server.

        Args:
            threads: As for :meth:`decide`.
            skip: Functions not to change now (changed this run already, or cooling down).

        Returns:
            One instruction per function, in function-name order: ``hot_thread_replicas`` more replicas for each hot
            thread hosting it.
        """
        if self.config.hot_thread_replicas <= 0:
            return []
        hot: dict[str, list[ThreadView]] = {}
        for thread in sorted(threads, key=lambda t: t.key):
            if thread.utilization > self.config.hot_thread_utilization:
                for function in thread.functions:
                    if function not in skip:
                        hot.setdefault(function, []).append(thread)
        hosts = _hosts(threads)
        out: list[ReplicateFunctionInstruction] = []
        for function, busy in sorted(hot.items()):
            listed = ", ".join(f"{t.ip}:{t.tid} ({t.utilization:.0%})" for t in busy)
            verb = "is" if len(busy) == 1 else "are"
            noun = "thread" if len(busy) == 1 else "threads"
            reason = f"{noun} {listed} {verb} over {self.config.hot_thread_utilization:.0%} busy"
            change = _replicate(function, self.config.hot_thread_replicas * len(busy), reason, hosts[function], threads)
            if change is not None:
                out.append(change)
        return out

    def _size(
        self,
        window: FunctionWindow,
        latency: float,
        replicas: Sequence[ThreadView],
        threads: Sequence[ThreadView],
        window_seconds: float,
        past: LatencyHistory | None,
    ) -> FunctionScalingInstruction | None:
        config = self.config
        n = len(replicas)
        # Calls the current replicas can absorb in the window, each taking ``latency`` seconds.
        capacity = n * window_seconds / latency
        load = (
            f"{window.calls} calls in {window_seconds:.3g} s against a capacity of {capacity:.3g} "
            f"({_count(n, 'replica')} at {latency * 1000:.3g} ms)"
        )
        if window.calls > config.scale_up_load * capacity:
            wanted = math.ceil(window.calls / (config.scale_up_load * capacity)) * n - n + 1
            return _replicate(window.name, wanted, f"{load} exceed {config.scale_up_load:.0%} of it", replicas, threads)
        if window.calls < config.scale_down_load * capacity:
            # Replicas needed at full load, plus one of headroom (the original's target).
            target = max(config.min_replicas, math.ceil(window.calls * latency / window_seconds) + 1)
            if n <= target:
                return None
            # Unpin where it relieves most: on the threads hosting the most functions, then the busiest.
            victims = sorted(replicas, key=lambda t: (-len(t.functions), -t.utilization, t.ip, t.tid))[: n - target]
            reason = f"{load} are under {config.scale_down_load:.0%} of it; {_count(target, 'replica')} suffice"
            return DereplicateFunctionInstruction(window.name, n - target, reason, tuple(t.key for t in victims))
        if past is not None and past.executions > 0 and past.mean > 0:
            ratio = latency / past.mean
            if ratio > config.max_latency_deviation:
                wanted = math.ceil(ratio * n) - n + 1
                reason = (
                    f"mean latency {latency * 1000:.3g} ms is {ratio:.2f}x its history of {past.mean * 1000:.3g} ms "
                    f"(limit {config.max_latency_deviation:g}x)"
                )
                return _replicate(window.name, wanted, reason, replicas, threads)
        return None


class NodePolicy:
    """Sizes the executor pool (the node rules of the original's ``executor_policy``).

    Args:
        config: Thresholds.
    """

    def __init__(self, config: ManagementPolicyConfig) -> None:
        self.config = config

    def decide(
        self, nodes: Sequence[NodeView], pending: int, last_change: float | None, now: float
    ) -> NodeScalingInstruction | None:
        """At most one node change: an addition when threads are busy or mostly pinned, else a drain when idle.

        Args:
            nodes: Every known node, draining ones included (they are left out of the figures).
            pending: Nodes requested but not joined yet; they count towards ``max_nodes``.
            last_change: When the last addition or drain was ordered, or ``None`` if never.
            now: The current time.

        Returns:
            The change, or ``None``: within the grace period, with no running thread, or when the figures call for
            nothing (or for an addition at ``max_nodes``, or a drain at ``min_nodes``).
        """
        config = self.config
        if last_change is not None and now - last_change < config.grace_period:
            return None
        active = [node for node in nodes if not node.draining]
        threads = [thread for node in active for thread in node.threads if thread.running]
        utilization = average_utilization(threads)
        pinned = pinned_ratio(threads)
        if utilization is None or pinned is None:
            return None
        causes = []
        if utilization > config.max_utilization:
            causes.append(f"mean utilization {utilization:.0%} is above {config.max_utilization:.0%}")
        if pinned > config.max_pinned_ratio:
            causes.append(f"{pinned:.2f} pinned functions per thread is above {config.max_pinned_ratio:g}")
        if causes:
            # Growing wins over draining: a pool short of free threads is not idle, however low its utilization.
            current = len(active) + pending
            count = min(config.scale_increase, config.max_nodes - current)
            if count <= 0:
                return None
            capped = f", capped by max_nodes={config.max_nodes}" if count < config.scale_increase else ""
            reason = (
                f"{' and '.join(causes)} over {_count(len(threads), 'thread')}; "
                f"{current} -> {current + count} nodes{capped}"
            )
            return AddNodesInstruction(count, reason)
        if utilization < config.min_utilization and len(active) > config.min_nodes:
            # A node none of whose threads reported yet is probably still starting: never drain it.
            reporting = [node for node in active if any(t.running for t in node.threads)]
            if not reporting:
                return None
            victim = min(reporting, key=_drain_order)
            reason = (
                f"mean utilization {utilization:.0%} is below {config.min_utilization:.0%} with {len(active)} nodes "
                f"(minimum {config.min_nodes}); {victim.node} hosts the fewest functions and is the least busy"
            )
            return DrainNodeInstruction(victim.node, reason, tuple(sorted(t.tid for t in victim.threads)))
        return None


# -- helpers ---------------------------------------------------------------------------------------------------


def _hosts(threads: Iterable[ThreadView]) -> dict[str, list[ThreadView]]:
    hosts: dict[str, list[ThreadView]] = {}
    for thread in threads:
        for function in thread.functions:
            hosts.setdefault(function, []).append(thread)
    return hosts


def _candidates(function: str, replicas: Sequence[ThreadView], threads: Iterable[ThreadView]) -> list[ThreadView]:
    """Threads that can take a new replica of ``function``, least loaded first.

    A function counts as a GPU function when all its replicas run on GPU threads; GPU threads take one function
    each (the original told them apart by a ``gpu`` in the function's name).
    """
    gpu = bool(replicas) and all(t.type is ExecutorType.GPU for t in replicas)
    kind = ExecutorType.GPU if gpu else ExecutorType.CPU
    eligible = [t for t in threads if t.type is kind and function not in t.functions and not (gpu and t.functions)]
    return sorted(eligible, key=lambda t: (len(t.functions), t.utilization, t.ip, t.tid))


def _replicate(
    function: str, wanted: int, reason: str, replicas: Sequence[ThreadView], threads: Iterable[ThreadView]
) -> ReplicateFunctionInstruction | None:
    candidates = _candidates(function, replicas, threads)
    if wanted <= 0 or not candidates:
        return None
    count = min(wanted, len(candidates))
    if count < wanted:
        reason = f"{reason}; wanted {wanted} more replicas but only {_count(len(candidates), 'thread')} can take one"
    else:
        reason = f"{reason}; adding {_count(count, 'replica')} to {len(replicas)}"
    return ReplicateFunctionInstruction(function, count, reason, tuple(t.key for t in candidates))


def _drain_order(node: NodeView) -> tuple[int, float, str]:
    # Fewest pinned functions first: each one drained away is a replica the schedulers lose and may have to re-pin,
    # while utilization hardly differs between nodes of a cluster idle enough to drain one.
    running = [t for t in node.threads if t.running]
    utilization = average_utilization(running) or 0.0
    return (sum(len(t.functions) for t in running), utilization, node.node)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
