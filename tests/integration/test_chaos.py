"""Chaos: requests from four client threads while executors are killed every 300 ms, and a node cache and the
scheduler once. Every request must end with its correct result, before its deadline, delivered once; with
functions that may not run twice, every lost call must end in ``ExecutorLost`` soon after its executor died."""

import urllib.request
from collections import Counter

import pytest

from cloudburst.cluster.local import ClusterConfig, LocalCluster, random_loopback_host
from cloudburst.config import RuntimePorts
from cloudburst.testing.chaos import LoadOutcome, ProcessKiller, register_workload, run_load

pytestmark = pytest.mark.integration

THREADS = 4
DEADLINE = 60.0
PERIOD = 1.0


def run_chaos(requests: int, retries: int | None, once: dict[str, float]) -> tuple[LoadOutcome, ProcessKiller, dict]:
    """``requests`` requests (half DAG, half one-shot) under a killer; prints what happened."""
    config = ClusterConfig(
        host=random_loopback_host(), executors=6, data_dir=None, report_period=PERIOD, max_restarts=100_000
    )
    with LocalCluster(config) as cluster:
        cluster.supervise_in_background(0.05)
        with cluster.connect(timeout=DEADLINE) as connection:
            register_workload(connection, retries, work=0.01)
            tally = LoadOutcome()
            killer = ProcessKiller(cluster, 0.3, lambda: tally.ended, requests, once)
            killer.start()
            try:
                run_load(connection, THREADS, requests // THREADS, deadline=DEADLINE, retries=retries, tally=tally)
            finally:
                killer.stop()
            client = connection.retry_counts()
            scheduler = scheduler_reexecution(config.host)
    kinds = Counter(what.split()[0] for _, what in killer.kills)
    print(
        f"\n{requests} requests (half 3-stage DAG, half one-shot), {dict(kinds)} killed: {dict(tally.outcomes)}; "
        f"retries by the client {client}, by the scheduler since its last start {scheduler}"
    )
    return tally, killer, client


def scheduler_reexecution(host: str) -> dict[str, int]:
    """The scheduler's re-execution counters, from its metrics endpoint."""
    url = f"http://{host}:{RuntimePorts().metrics_scheduler}/metrics"
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    found = {}
    for line in text.splitlines():
        if line.startswith("cloudburst_scheduler_reexecution_total{"):
            outcome = line.split('outcome="')[1].split('"')[0]
            found[outcome] = int(float(line.rsplit(" ", 1)[1]))
    return found


@pytest.mark.timeout(600)
def test_every_request_ends_correctly_while_executors_a_cache_and_the_scheduler_are_killed():
    # The load's progress counts ended requests; the killer counts against the total it was given.
    tally, killer, client = run_chaos(4000, None, {"cache": 1 / 3, "scheduler": 2 / 3})
    assert {what for _, what in killer.kills} >= {"cache", "scheduler"}
    assert len(killer.kills) >= 15
    assert tally.outcomes == {"correct": 4000}, (tally.outcomes, tally.wrong)
    assert tally.late == []
    # Direct calls lost with their executor were placed again by the client (the scheduler's re-runs are printed).
    assert client.get("placed_again_executor_lost", 0) > 0


@pytest.mark.timeout(600)
def test_calls_that_may_not_run_twice_end_in_executor_lost_soon_after_their_executor_dies():
    tally, killer, _ = run_chaos(1200, 0, {})
    assert tally.late == []
    assert set(tally.outcomes) <= {"correct", "ExecutorLost"}, tally.outcomes
    assert tally.outcomes["ExecutorLost"] > 0
    # Each loss is told within two report periods of the kill of the executor it names.
    delays = []
    for error, raised in tally.lost:
        where = error.losses[-1][0]
        delays.append(raised - max(t for t, what in killer.kills if what == f"executor {where}" and t <= raised))
    delays.sort()
    print(f"ExecutorLost after the kill: median {delays[len(delays) // 2]:.2f} s, max {delays[-1]:.2f} s")
    assert delays[-1] <= 2 * PERIOD
