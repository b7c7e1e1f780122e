"""The management service's pure core: the live cluster view and the replica and node policies, driven through
time by passing ``now`` (no sockets, no clock)."""

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloudburst.errors import ConfigError
from cloudburst.management.policy import (
    AddNodesInstruction,
    DereplicateFunctionInstruction,
    DrainNodeInstruction,
    FunctionWindow,
    LatencyHistory,
    ManagementPolicyConfig,
    ReplicateFunctionInstruction,
)
from cloudburst.management.state import (
    DagLoad,
    DrainCancelledEvent,
    DrainRefusedInstruction,
    DrainRequestEvent,
    ExecutorStatisticsEvent,
    ManagementState,
    ManagementTickEvent,
    NodeJoinedEvent,
    ReleaseNodeInstruction,
    SchedulerStatisticsEvent,
    ThreadStatusEvent,
)
from cloudburst.protocol.runtime_messages import (
    DagStatistics,
    ExecutorStatistics,
    ExecutorType,
    FunctionStatistics,
    ThreadStatus,
)

#: Nothing in these tests is idle or busy enough for a node change unless a test says so.
QUIET = 0.3


def status(ip, tid=0, functions=(), utilization=QUIET, running=True, kind=ExecutorType.CPU):
    return ThreadStatusEvent(ThreadStatus(ip, tid, tuple(functions), utilization, running, kind))


def departed(ip, tid=0):
    """An executor's last status: its departure has drained and it exits."""
    return ThreadStatusEvent(ThreadStatus(ip, tid, running=False, departed=True))


def runtimes(function, seconds, count):
    """An executor's report: ``count`` executions of ``function`` taking ``seconds`` each."""
    return ExecutorStatisticsEvent(
        ExecutorStatistics(functions=(FunctionStatistics(function, count, (seconds,) * count),), reporter="e:0")
    )


def calls(function, count, host="s1"):
    """A scheduler's report: ``count`` DAG calls placed on ``function``."""
    return SchedulerStatisticsEvent(host, ExecutorStatistics(functions=(FunctionStatistics(function, count),)))


class Cluster:
    """A :class:`ManagementState` and the time, which only moves when a test moves it."""

    def __init__(self, autoscale=True, **config):
        config.setdefault("min_nodes", 1)
        config.setdefault("max_nodes", 10)
        self.state = ManagementState(ManagementPolicyConfig(**config), autoscale=autoscale)
        self.now = 0.0
        #: The statuses re-sent by :meth:`report`: ip -> tid -> ThreadStatusEvent.
        self.layout = {}

    def feed(self, *events):
        out = []
        for event in events:
            out.extend(self.state.handle(event, self.now))
        return out

    def place(self, ip, tid=0, functions=(), utilization=QUIET, **kwargs):
        """Adds a thread to the layout and reports it."""
        self.layout.setdefault(ip, {})[tid] = status(ip, tid, functions, utilization, **kwargs)
        return self.feed(self.layout[ip][tid])

    def report(self):
        """Every thread in the layout reports again, as executors do each period."""
        return self.feed(*(event for threads in self.layout.values() for event in threads.values()))

    def tick(self, seconds=5.0, *, report=True):
        """Advances time, has every thread report (unless told not to), then ticks."""
        self.now += seconds
        if report:
            self.report()
        return self.feed(ManagementTickEvent())


def only(out, kind):
    return [instruction for instruction in out if isinstance(instruction, kind)]


def spread(cluster, nodes=2, threads=3, **kwargs):
    """A layout of ``nodes`` CPU nodes with ``threads`` idle-ish threads each: 10.0.0.1, 10.0.0.2, ..."""
    for n in range(1, nodes + 1):
        for tid in range(threads):
            cluster.place(f"10.0.0.{n}", tid, **kwargs)


# -- the live view ---------------------------------------------------------------------------------------------


def test_statuses_build_the_live_view():
    cluster = Cluster()
    cluster.place("10.0.0.2", 1, ["f"], 0.5)
    cluster.place("10.0.0.2", 0, ["f", "g"], 0.1)
    cluster.place("10.0.0.1", 0, [], 0.3)

    nodes = cluster.state.nodes()
    assert list(nodes) == ["10.0.0.1", "10.0.0.2"]
    assert [t.tid for t in cluster.state.threads("10.0.0.2")] == [0, 1]
    assert cluster.state.threads("10.0.0.2")[0].functions == ("f", "g")
    assert cluster.state.threads("unknown") == ()
    assert cluster.state.average_utilization() == pytest.approx(0.3)
    assert cluster.state.pinned_ratio() == pytest.approx(1.0)
    assert not any(node.draining for node in nodes.values())


def test_reported_utilization_is_clamped_and_repeated_functions_counted_once():
    cluster = Cluster()
    cluster.place("a", 0, ["f", "f"], 7.0)
    cluster.place("a", 1, [], float("nan"))
    assert [t.utilization for t in cluster.state.threads("a")] == [1.0, 0.0]
    assert cluster.state.threads("a")[0].functions == ("f",)


def test_threads_silent_longer_than_the_timeout_are_forgotten():
    """The original never aged statuses out, so dead executors skewed every average."""
    cluster = Cluster(thread_timeout=15.0)
    for tid in range(3):
        cluster.place("a", tid, utilization=0.9 if tid else 0.0)
    cluster.now = 10.0
    cluster.place("a", 0, utilization=0.0)

    cluster.now = 15.0
    cluster.feed(ManagementTickEvent())
    assert len(cluster.state.threads("a")) == 3, "silent for exactly the timeout: still known"

    cluster.now = 15.5
    cluster.feed(ManagementTickEvent())
    assert [t.tid for t in cluster.state.threads("a")] == [0]
    assert cluster.state.average_utilization() == 0.0

    cluster.now = 25.5
    cluster.feed(ManagementTickEvent())
    assert cluster.state.nodes() == {}
    assert cluster.state.average_utilization() is None


def test_a_joined_node_is_known_before_its_threads_report_and_forgotten_if_they_never_do():
    cluster = Cluster(thread_timeout=15.0)
    cluster.feed(NodeJoinedEvent("n"))
    assert cluster.state.nodes()["n"].threads == ()
    cluster.now = 16.0
    cluster.feed(ManagementTickEvent())
    assert "n" not in cluster.state.nodes()


def test_a_clock_stepping_back_counts_as_the_latest_time_seen():
    cluster = Cluster(thread_timeout=15.0)
    cluster.now = 100.0
    cluster.place("a")
    cluster.now = 50.0
    cluster.place("b")
    cluster.now = 114.0
    cluster.feed(ManagementTickEvent())
    assert list(cluster.state.nodes()) == ["a", "b"], "b was seen at 100, not at 50"


def test_policies_run_once_per_report_period():
    cluster = Cluster()
    spread(cluster, nodes=1, utilization=0.95, functions=["f"])
    for _ in range(4):
        assert cluster.tick(1.0) == []
    assert cluster.tick(1.0) != []
    assert cluster.tick(1.0) == []


# -- replica policy: load ---------------------------------------------------------------------------------------


def test_calls_above_70_percent_of_capacity_add_replicas():
    cluster = Cluster()
    spread(cluster, nodes=2)
    cluster.place("10.0.0.1", 0, ["f"])
    cluster.place("10.0.0.2", 2, ["g"], 0.2)
    # One replica at 1 s per call absorbs 5 calls per 5 s window; 10 calls exceed 70 % of that.
    cluster.feed(runtimes("f", 1.0, 5), calls("f", 6, "s1"), calls("f", 4, "s2"))

    out = cluster.tick()

    assert len(out) == 1
    change = out[0]
    assert isinstance(change, ReplicateFunctionInstruction)
    assert change.function == "f"
    assert change.count == 3  # ceil(10 / 3.5) x 1 - 1 + 1
    # Free threads first, then the least busy, then by address.
    assert change.candidates == (
        ("10.0.0.1", 1),
        ("10.0.0.1", 2),
        ("10.0.0.2", 0),
        ("10.0.0.2", 1),
        ("10.0.0.2", 2),
    )
    assert "10 calls" in change.reason
    assert "exceed 70%" in change.reason


def test_capacity_is_measured_over_the_windows_real_length():
    cluster = Cluster()
    spread(cluster, nodes=2)
    cluster.place("10.0.0.1", 0, ["f"])
    cluster.now = 5.0
    cluster.feed(ManagementTickEvent())  # an empty window
    cluster.feed(runtimes("f", 1.0, 10), calls("f", 10))

    # The next tick comes late: the window is 10 s, in which one replica absorbs 10 calls, not 5.
    (change,) = cluster.tick(10.0)

    assert change.count == 2  # ceil(10 / 7) x 1 - 1 + 1


def test_additions_are_capped_by_the_threads_that_can_take_a_replica():
    cluster = Cluster()
    cluster.place("a", 0, ["f"])
    cluster.place("a", 1, ["f"])
    cluster.place("a", 2, [])
    cluster.feed(runtimes("f", 1.0, 10), calls("f", 100))

    (change,) = cluster.tick()

    assert change.count == 1
    assert change.candidates == (("a", 2),)
    assert "only 1 thread can take one" in change.reason


def test_no_replication_when_no_thread_can_take_one():
    cluster = Cluster()
    cluster.place("a", 0, ["f"])
    cluster.feed(runtimes("f", 1.0, 10), calls("f", 100))
    assert only(cluster.tick(), ReplicateFunctionInstruction) == []


def test_calls_far_below_capacity_remove_replicas():
    """Scale-down is a deliberate rule here (the original ran it despite a ``pass``)."""
    cluster = Cluster()
    for tid in range(5):
        cluster.place("a", tid, ["f"] + (["g"] if tid == 3 else []), 0.2 + tid / 100)
    # Five replicas at 0.1 s absorb 250 calls per window; 10 are under 10 % of that.
    cluster.feed(runtimes("f", 0.1, 10), calls("f", 10))

    # Every thread is pinned, so the node policy adds nodes too; only the replica change matters here.
    (change,) = only(cluster.tick(), DereplicateFunctionInstruction)

    assert change.count == 3  # down to ceil(10 x 0.1 / 5) + 1 = 2
    # The most crowded replica goes first, then the busiest.
    assert change.threads == (("a", 3), ("a", 4), ("a", 2))
    assert "2 replicas suffice" in change.reason


def test_scale_down_never_goes_below_min_replicas():
    """The floor is explicit, instead of the original scaler silently ignoring targets below 2."""
    cluster = Cluster(min_replicas=4)
    for tid in range(5):
        cluster.place("a", tid, ["f"])
    cluster.feed(runtimes("f", 0.1, 10), calls("f", 10))

    (change,) = only(cluster.tick(), DereplicateFunctionInstruction)

    assert change.count == 1


def test_no_change_between_the_load_thresholds_without_drift():
    cluster = Cluster()
    spread(cluster, nodes=1)
    cluster.place("10.0.0.1", 0, ["f"])
    # One replica at 0.5 s absorbs 10 calls per window; 5 is between 10 % and 70 %.
    cluster.feed(runtimes("f", 0.5, 5), calls("f", 5))
    assert cluster.tick() == []


def test_a_function_with_statistics_but_no_live_replica_is_skipped():
    """The original raised KeyError here and took the management server down."""
    cluster = Cluster()
    spread(cluster, nodes=1)
    cluster.feed(runtimes("ghost", 1.0, 10), calls("ghost", 100))

    assert cluster.tick() == []
    assert cluster.state.function_windows() == (FunctionWindow("ghost", 100, 10, 10.0, 10),)


def test_functions_without_scheduler_counted_calls_are_left_alone():
    cluster = Cluster()
    spread(cluster, nodes=1)
    cluster.place("10.0.0.1", 0, ["f"])
    cluster.feed(runtimes("f", 10.0, 10))  # one-shot calls only: schedulers do not count them
    assert cluster.tick() == []


# -- replica policy: latency drift ------------------------------------------------------------------------------


def test_latency_drifting_above_its_history_adds_replicas():
    cluster = Cluster()
    spread(cluster, nodes=2)
    cluster.place("10.0.0.1", 0, ["f"])
    cluster.place("10.0.0.2", 0, ["f"])
    # Two replicas at 0.1 s absorb 100 calls per window; 20 is in the band.
    cluster.feed(runtimes("f", 0.1, 20), calls("f", 20))
    assert cluster.tick() == []
    assert cluster.state.latency_history()["f"] == LatencyHistory(pytest.approx(0.1), 20)

    # Twice as slow: 50 calls of capacity, 20 still in the band, but 2x the history.
    cluster.feed(runtimes("f", 0.2, 20), calls("f", 20))
    (change,) = cluster.tick()

    assert isinstance(change, ReplicateFunctionInstruction)
    assert change.count == 3  # ceil(2.0 x 2) - 2 + 1
    assert "2.00x its history" in change.reason
    assert cluster.state.latency_history()["f"] == LatencyHistory(pytest.approx(0.15), 40)


def test_drift_within_the_allowed_deviation_changes_nothing():
    cluster = Cluster()
    spread(cluster, nodes=1)
    cluster.place("10.0.0.1", 0, ["f"])
    cluster.feed(runtimes("f", 0.1, 10), calls("f", 10))
    cluster.tick()
    cluster.feed(runtimes("f", 0.12, 10), calls("f", 10))
    assert cluster.tick() == []


# -- replica policy: hot threads and cooldown -------------------------------------------------------------------


def test_a_hot_thread_gets_two_more_replicas_of_each_of_its_functions():
    """The original's call for this rule lacked an argument and crashed the management server."""
    cluster = Cluster()
    spread(cluster, nodes=2)
    cluster.place("10.0.0.1", 0, ["f", "g"], 0.95)

    out = cluster.tick()

    assert [(c.function, c.count) for c in out] == [("f", 2), ("g", 2)]
    assert all(isinstance(c, ReplicateFunctionInstruction) for c in out)
    assert out[0].reason.startswith("thread 10.0.0.1:0 (95%) is over 90% busy")
    assert ("10.0.0.1", 0) not in out[0].candidates


def test_two_hot_threads_of_one_function_ask_for_two_replicas_each():
    cluster = Cluster()
    spread(cluster, nodes=2)
    cluster.place("10.0.0.1", 0, ["f"], 0.95)
    cluster.place("10.0.0.2", 0, ["f"], 0.91)

    (change,) = cluster.tick()

    assert change.count == 4
    assert "threads 10.0.0.1:0 (95%), 10.0.0.2:0 (91%) are over 90% busy" in change.reason


def test_a_function_changed_for_load_is_not_changed_again_for_a_hot_thread():
    cluster = Cluster()
    spread(cluster, nodes=2)
    cluster.place("10.0.0.1", 0, ["f"], 0.95)
    cluster.feed(runtimes("f", 1.0, 10), calls("f", 10))

    (change,) = cluster.tick()

    assert change.count == 3
    assert "exceed 70%" in change.reason


def test_gpu_functions_replicate_only_onto_free_gpu_threads():
    cluster = Cluster()
    spread(cluster, nodes=1)
    cluster.place("gpu1", 0, ["model"], 0.95, kind=ExecutorType.GPU)
    cluster.place("gpu2", 0, ["other"], kind=ExecutorType.GPU)
    cluster.place("gpu3", 0, [], kind=ExecutorType.GPU)

    (change,) = cluster.tick()

    assert change.candidates == (("gpu3", 0),)
    assert change.count == 1


def test_a_replica_change_waits_out_the_cooldown_before_the_next():
    cluster = Cluster(replica_cooldown=10.0)
    spread(cluster, nodes=3)
    cluster.place("10.0.0.1", 0, ["f"])

    def overloaded():
        cluster.feed(runtimes("f", 1.0, 10), calls("f", 10))
        return cluster.tick()

    assert len(overloaded()) == 1  # t = 5
    assert overloaded() == [], "t = 10: the new replicas may not have reported yet"
    assert len(overloaded()) == 1  # t = 15


# -- node policy --------------------------------------------------------------------------------------------------


def test_busy_threads_add_nodes():
    cluster = Cluster()
    spread(cluster, nodes=2, utilization=0.7)

    (change,) = cluster.tick()

    assert change == AddNodesInstruction(4, change.reason)
    assert change.reason == "mean utilization 70% is above 60% over 6 threads; 2 -> 6 nodes"
    assert cluster.state.pending_nodes() == 4
    assert cluster.state.last_node_change() == 5.0


def test_threads_mostly_pinned_add_nodes_rather_than_drain_them():
    cluster = Cluster()
    spread(cluster, nodes=3, utilization=0.0, functions=["f"])

    (change,) = cluster.tick()

    assert isinstance(change, AddNodesInstruction), "idle but out of free threads: growing wins"
    assert "1.00 pinned functions per thread is above 0.8" in change.reason


def test_an_idle_cluster_drains_its_least_loaded_node():
    cluster = Cluster()
    spread(cluster, nodes=3, utilization=0.05)
    cluster.place("10.0.0.2", 1, utilization=0.0)
    cluster.place("10.0.0.3", 1, utilization=0.0)
    cluster.place("10.0.0.3", 2, ["f"], utilization=0.0)

    (change,) = cluster.tick()

    assert change == DrainNodeInstruction("10.0.0.2", change.reason, (0, 1, 2))
    assert "10.0.0.2 hosts the fewest functions" in change.reason
    assert cluster.state.nodes()["10.0.0.2"].draining
    # A draining node takes no part in the figures or in placement.
    assert cluster.state.average_utilization() == pytest.approx((0.05 * 3 + 0.05) / 6)


def test_a_drain_names_the_threads_the_node_actually_has():
    """The original assumed 3 threads per node, so a GPU node's drain never completed."""
    cluster = Cluster()
    spread(cluster, nodes=2, utilization=0.05)
    cluster.place("gpu", 0, utilization=0.0, kind=ExecutorType.GPU)

    (change,) = cluster.tick()

    assert change == DrainNodeInstruction("gpu", change.reason, (0,))


def test_no_drain_at_the_minimum_node_count():
    cluster = Cluster(min_nodes=2)
    spread(cluster, nodes=2, utilization=0.0)
    assert cluster.tick() == []


def test_a_node_whose_threads_have_not_reported_is_not_drained():
    cluster = Cluster()
    spread(cluster, nodes=1, utilization=0.0)
    cluster.feed(NodeJoinedEvent("fresh"))

    (change,) = cluster.tick()

    assert change.node == "10.0.0.1"


def test_no_node_change_within_the_grace_period_of_the_last():
    cluster = Cluster(grace_period=120.0, max_nodes=20)
    spread(cluster, nodes=2, utilization=0.7)
    assert len(cluster.tick()) == 1  # t = 5

    for _ in range(23):  # t = 10 .. 120
        assert cluster.tick() == []
    (change,) = cluster.tick()  # t = 125
    assert isinstance(change, AddNodesInstruction)
    assert cluster.state.pending_nodes() == 8


def test_the_grace_period_also_holds_back_a_drain_after_an_addition():
    cluster = Cluster(grace_period=60.0)
    spread(cluster, nodes=2, utilization=0.7)
    cluster.tick()  # an addition at t = 5
    spread(cluster, nodes=2, utilization=0.0)
    assert all(cluster.tick() == [] for _ in range(11))  # t = 10 .. 60
    assert isinstance(cluster.tick()[0], DrainNodeInstruction)  # t = 65


def test_additions_stop_at_max_nodes_counting_pending_ones():
    cluster = Cluster(max_nodes=5, grace_period=0.0)
    spread(cluster, nodes=2, utilization=0.7)

    (change,) = cluster.tick()
    assert change.count == 3
    assert "capped by max_nodes=5" in change.reason
    assert cluster.tick() == [], "2 nodes and 3 on their way: no room"


def test_requested_nodes_that_never_join_stop_counting():
    cluster = Cluster(max_nodes=6, grace_period=0.0, node_join_timeout=30.0)
    spread(cluster, nodes=2, utilization=0.7)
    assert cluster.tick()[0].count == 4
    for _ in range(5):  # t = 10 .. 30
        assert cluster.tick() == []
    (change,) = cluster.tick()  # t = 35: the four are given up on
    assert change.count == 4


def test_joining_nodes_resolve_pending_additions():
    cluster = Cluster()
    spread(cluster, nodes=2, utilization=0.7)
    cluster.tick()
    assert cluster.state.pending_nodes() == 4

    cluster.feed(NodeJoinedEvent("new1"))
    cluster.feed(NodeJoinedEvent("new1"))  # the same node again
    assert cluster.state.pending_nodes() == 3
    cluster.place("new2")  # a first status from a new address is a join too
    assert cluster.state.pending_nodes() == 2


def test_a_drained_node_is_released_once_every_thread_departed_and_its_late_statuses_are_ignored():
    cluster = Cluster(thread_timeout=15.0)
    spread(cluster, nodes=2, utilization=0.0)
    (drain,) = cluster.tick()
    del cluster.layout[drain.node]

    assert cluster.feed(departed(drain.node, 0), departed(drain.node, 2)) == []
    assert cluster.state.nodes()[drain.node].draining, "thread 1 has not departed yet"
    (release,) = cluster.feed(departed(drain.node, 1))
    assert release == ReleaseNodeInstruction(drain.node, f"every thread of {drain.node} departed (3)")
    assert cluster.state.decisions()[-1].instruction == release
    assert drain.node not in cluster.state.nodes()
    cluster.feed(status(drain.node, 0, running=False))
    cluster.feed(status(drain.node, 1))
    assert drain.node not in cluster.state.nodes()

    # Later, the address may come back as a new node.
    cluster.tick(16.0)
    cluster.feed(status(drain.node, 0))
    assert drain.node in cluster.state.nodes()


def test_a_node_can_rejoin_at_once_after_being_released():
    cluster = Cluster()
    cluster.place("a")
    cluster.place("b")
    cluster.feed(DrainRequestEvent("a"), departed("a", 0))
    assert "a" not in cluster.state.nodes()
    cluster.feed(NodeJoinedEvent("a"), status("a", 0))
    assert [t.tid for t in cluster.state.threads("a")] == [0]


def test_a_departing_executor_does_not_bring_back_a_forgotten_node():
    cluster = Cluster()
    cluster.feed(status("gone", 0, running=False))
    assert cluster.state.nodes() == {}


def test_a_draining_node_is_released_once_its_threads_fall_silent():
    cluster = Cluster(thread_timeout=15.0)
    spread(cluster, nodes=2, utilization=0.0)
    (drain,) = cluster.tick()
    cluster.feed(*(status(drain.node, tid, running=False, utilization=0.0) for tid in range(3)))
    del cluster.layout[drain.node]

    assert drain.node in cluster.state.nodes()
    assert cluster.tick(15.0) == []
    assert drain.node in cluster.state.nodes()
    (release,) = only(cluster.tick(1.0), ReleaseNodeInstruction)
    assert release == ReleaseNodeInstruction(drain.node, f"every thread of {drain.node} fell silent (3)")
    assert drain.node not in cluster.state.nodes()
    cluster.feed(status(drain.node, 0))
    assert drain.node not in cluster.state.nodes(), "a released node's late statuses are ignored"


def test_a_drain_completes_with_some_threads_departed_and_the_others_silent():
    cluster = Cluster(thread_timeout=15.0)
    spread(cluster, nodes=2, utilization=0.0)
    (drain,) = cluster.tick()
    del cluster.layout[drain.node]
    cluster.feed(departed(drain.node, 0))

    assert cluster.tick(15.0) == []
    (release,) = cluster.tick(1.0)
    assert release.reason == f"1 thread of {drain.node} departed and 2 fell silent"


def test_a_departed_status_of_a_node_not_being_drained_releases_nothing():
    cluster = Cluster()
    spread(cluster, nodes=2)
    assert cluster.feed(*(departed("10.0.0.1", tid) for tid in range(3))) == []
    assert all(not t.running and t.departed for t in cluster.state.threads("10.0.0.1"))
    assert not cluster.state.nodes()["10.0.0.1"].draining


# -- operator drains ----------------------------------------------------------------------------------------------


def test_an_operator_drain_names_the_nodes_threads_and_ignores_the_grace_period():
    cluster = Cluster(grace_period=120.0)
    spread(cluster, nodes=3, utilization=0.7)
    assert isinstance(cluster.tick()[0], AddNodesInstruction), "a node change: the grace period starts"

    (drain,) = cluster.feed(DrainRequestEvent("10.0.0.2"))

    assert drain == DrainNodeInstruction("10.0.0.2", "an operator asked for it", (0, 1, 2))
    assert cluster.state.nodes()["10.0.0.2"].draining
    assert cluster.state.last_node_change() == cluster.now
    assert cluster.state.decisions()[-1].instruction == drain


@pytest.mark.parametrize(
    ("node", "reason"),
    [
        ("10.9.9.9", "'10.9.9.9' is not a known node (known: 10.0.0.1, 10.0.0.2)"),
        ("10.0.0.2", "draining 10.0.0.2 would leave 1 active node, fewer than min_nodes=2"),
    ],
)
def test_an_operator_drain_of_an_unknown_node_or_below_the_minimum_is_refused(node, reason):
    cluster = Cluster(min_nodes=2)
    spread(cluster, nodes=2)
    assert cluster.feed(DrainRequestEvent(node)) == [DrainRefusedInstruction(node, reason)]
    assert not any(view.draining for view in cluster.state.nodes().values())
    assert cluster.state.last_node_change() is None
    assert cluster.state.decisions() == ()


def test_a_watching_state_decides_nothing_but_lets_an_operator_drain_down_to_one_node():
    cluster = Cluster(autoscale=False, min_nodes=3, grace_period=0.0)
    spread(cluster, nodes=3, utilization=0.99)  # load that would add nodes
    for _ in range(3):
        cluster.now += 10.0
        cluster.report()
        assert cluster.tick() == []
    assert cluster.state.decisions() == ()
    assert isinstance(cluster.feed(DrainRequestEvent("10.0.0.1"))[0], DrainNodeInstruction)
    assert isinstance(cluster.feed(DrainRequestEvent("10.0.0.2"))[0], DrainNodeInstruction)
    assert cluster.feed(DrainRequestEvent("10.0.0.3")) == [
        DrainRefusedInstruction("10.0.0.3", "draining 10.0.0.3 would leave no active node")
    ]


def test_an_operator_drain_of_a_draining_node_is_refused():
    cluster = Cluster()
    spread(cluster, nodes=3)
    cluster.feed(DrainRequestEvent("10.0.0.1"))
    assert cluster.feed(DrainRequestEvent("10.0.0.1")) == [
        DrainRefusedInstruction("10.0.0.1", "10.0.0.1 is being drained already")
    ]


def test_draining_nodes_do_not_count_towards_the_minimum():
    cluster = Cluster(min_nodes=1)
    spread(cluster, nodes=2)
    cluster.feed(DrainRequestEvent("10.0.0.1"))
    (refusal,) = cluster.feed(DrainRequestEvent("10.0.0.2"))
    assert isinstance(refusal, DrainRefusedInstruction)
    assert "would leave 0 active nodes" in refusal.reason


def test_an_operator_drain_of_a_node_whose_threads_never_reported_releases_it_at_once():
    cluster = Cluster()
    spread(cluster, nodes=1)
    cluster.feed(NodeJoinedEvent("fresh"))
    drain, release = cluster.feed(DrainRequestEvent("fresh"))
    assert drain == DrainNodeInstruction("fresh", "an operator asked for it", ())
    assert release == ReleaseNodeInstruction("fresh", "no thread of fresh ever reported")
    assert "fresh" not in cluster.state.nodes()


def test_a_cancelled_drain_makes_the_node_active_again_within_the_grace_period():
    cluster = Cluster(grace_period=30.0)
    spread(cluster, nodes=2, utilization=0.0)
    (drain,) = cluster.tick()
    cluster.feed(DrainCancelledEvent(drain.node))
    assert not cluster.state.nodes()[drain.node].draining
    assert cluster.state.average_utilization() == 0.0
    assert cluster.tick() == [], "the grace period runs from the cancelled decision"


# -- other views --------------------------------------------------------------------------------------------------


def test_schedulers_are_known_from_their_reports_and_forgotten_when_silent():
    """The server answers scheduler-list queries from this set, so executors find later schedulers (the original
    fixed their list at start)."""
    cluster = Cluster(thread_timeout=15.0)
    cluster.feed(calls("f", 1, "s2"), calls("f", 1, "s1"))
    assert cluster.state.schedulers() == ("s1", "s2")
    cluster.now = 10.0
    cluster.feed(calls("f", 1, "s1"))
    cluster.now = 16.0
    cluster.feed(ManagementTickEvent())
    assert cluster.state.schedulers() == ("s1",)


def test_configured_schedulers_are_always_listed_and_an_empty_report_counts_as_one():
    state = ManagementState(ManagementPolicyConfig(thread_timeout=15.0), schedulers=("s0", ""))
    assert state.schedulers() == ("s0",)
    state.handle(SchedulerStatisticsEvent("s3", ExecutorStatistics()), 0.0)
    assert state.schedulers() == ("s0", "s3")
    state.handle(ManagementTickEvent(), 100.0)
    assert state.schedulers() == ("s0",)


def test_decisions_are_kept_with_their_time_and_reason_up_to_a_bound():
    cluster = Cluster()
    cluster.state = ManagementState(cluster.state.config, decision_history=2)
    spread(cluster, nodes=2)
    cluster.place("10.0.0.1", 0, ["f", "g", "h"], 0.95)

    out = cluster.tick()

    assert len(out) == 3
    decisions = cluster.state.decisions()
    assert [d.instruction for d in decisions] == out[1:]
    assert all(d.at == 5.0 and d.reason for d in decisions)


def test_dag_figures_are_summarised_per_window():
    cluster = Cluster()
    cluster.feed(
        SchedulerStatisticsEvent(
            "s1", ExecutorStatistics(dags=(DagStatistics("d", interarrivals=(1.0, 3.0), call_count=3),))
        ),
        ExecutorStatisticsEvent(ExecutorStatistics(dags=(DagStatistics("d", runtimes=(0.5, 1.5), call_count=2),))),
    )
    cluster.tick()
    assert cluster.state.dag_loads() == (DagLoad("d", calls=3, mean_interarrival=2.0, completions=2, mean_runtime=1.0),)
    cluster.tick()
    assert cluster.state.dag_loads() == ()


def test_latency_is_averaged_over_sampled_runtimes_and_weighted_by_executions():
    window = FunctionWindow("f", calls=1, executions=100, runtime_total=2.0, runtime_samples=10)
    assert window.mean_latency == pytest.approx(0.2)
    assert LatencyHistory(0.1, 100).updated(window) == LatencyHistory(pytest.approx(0.15), 200)
    assert LatencyHistory(0.1, 100).updated(replace(window, runtime_samples=0)) == LatencyHistory(0.1, 100)


@pytest.mark.parametrize(
    "overrides",
    [
        {"report_period": 0},
        {"scale_down_load": 0.8},
        {"min_utilization": 0.7},
        {"max_latency_deviation": 0.9},
        {"min_replicas": 0},
        {"scale_increase": 0},
        {"min_nodes": 11, "max_nodes": 10},
        {"grace_period": -1},
        {"hot_thread_utilization": 1.5},
    ],
)
def test_contradictory_or_out_of_range_settings_are_refused(overrides):
    with pytest.raises(ConfigError):
        ManagementPolicyConfig(**overrides)


# -- properties ---------------------------------------------------------------------------------------------------

LOADS = st.sampled_from([0.0, 0.05, 0.3, 0.7, 0.95])
STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("tick"), st.floats(min_value=0.5, max_value=40.0)),
        st.tuples(st.just("load"), LOADS),
        st.tuples(st.just("pins"), st.integers(min_value=0, max_value=2)),
        st.tuples(st.just("join"), st.none()),
        st.tuples(st.just("drained"), st.none()),
    ),
    min_size=5,
    max_size=80,
)


def run_scenario(initial, load, steps, config):
    """Drives a state through ``steps``, with the server's part played faithfully; returns every instruction."""
    state = ManagementState(config)
    now = 0.0
    live = [f"10.0.0.{i}" for i in range(initial)]
    draining = []
    joined = 0
    utilization, pins = load, 0
    last_change = None
    issued = []
    for ip in live:
        for tid in range(3):
            state.handle(status(ip, tid, (), utilization), now)
    for kind, arg in steps:
        if kind == "load":
            utilization = arg
        elif kind == "pins":
            pins = arg
        elif kind == "join" and state.pending_nodes():
            joined += 1
            live.append(f"10.1.0.{joined}")
            state.handle(NodeJoinedEvent(live[-1]), now)
        elif kind == "drained" and draining:
            node = draining.pop(0)
            out = [i for tid in range(3) for i in state.handle(departed(node, tid), now)]
            assert out == [ReleaseNodeInstruction(node, f"every thread of {node} departed (3)")]
        elif kind == "tick":
            now += arg
            functions = tuple(f"f{k}" for k in range(pins))
            for ip in live + draining:
                for tid in range(3):
                    state.handle(status(ip, tid, functions, utilization, running=ip in live), now)
            out = state.handle(ManagementTickEvent(), now)
            issued.extend(out)
            for instruction in out:
                if isinstance(instruction, AddNodesInstruction | DrainNodeInstruction):
                    assert last_change is None or now - last_change >= config.grace_period, "within the grace period"
                    last_change = now
                if isinstance(instruction, DrainNodeInstruction):
                    assert instruction.node in live
                    assert instruction.threads == (0, 1, 2)
                    live.remove(instruction.node)
                    draining.append(instruction.node)
        active = [view for view in state.nodes().values() if not view.draining]
        assert config.min_nodes <= len(active) + state.pending_nodes() <= config.max_nodes
        assert len(active) >= config.min_nodes
    return issued


@settings(max_examples=150, deadline=None)
@given(initial=st.integers(min_value=2, max_value=6), load=LOADS, steps=STEPS)
def test_node_count_stays_within_bounds_and_changes_respect_the_grace_period(initial, load, steps):
    config = ManagementPolicyConfig(min_nodes=2, max_nodes=8, grace_period=30.0, node_join_timeout=100.0)
    first = run_scenario(initial, load, steps, config)
    assert run_scenario(initial, load, steps, config) == first, "the same inputs must give the same decisions"
