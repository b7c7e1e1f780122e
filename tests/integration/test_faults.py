"""Faults under load: every call ends with its result (run again elsewhere if its executor died); none hangs."""

import os
import signal
import threading
import time
from collections import Counter

import pytest

from cloudburst.cluster.local import ClusterConfig, LocalCluster, random_loopback_host
from cloudburst.errors import CloudburstError, NoResources

pytestmark = pytest.mark.integration

CALLS = 600
DEADLINE = 10.0


def call_until_refused(connection, name, limit):
    for i in range(limit):
        connection.call(name, i)


def outcome_of(future, submitted=None):
    """How a call ended, waiting at most until its deadline counted from its submission (or from now)."""
    wait = DEADLINE if submitted is None else max(0.0, submitted + DEADLINE - time.monotonic())
    try:
        future.result(timeout=wait + 1.0)
    except CloudburstError as error:
        return type(error).__name__
    return "succeeded"


@pytest.mark.timeout(180)
def test_an_executor_killed_under_load_leaves_no_call_hanging():
    config = ClusterConfig(host=random_loopback_host(), executors=2, nodes=2, data_dir=None, report_period=0.5)
    with LocalCluster(config) as cluster:
        connection = cluster.connect(timeout=DEADLINE)
        try:
            connection.register(lambda lib, x: (__import__("time").sleep(0.005), x)[1], "work")
            connection.register(lambda lib, x: x + 1, "then")
            connection.register_dag("pipeline", ["work", "then"], [("work", "then")])
            victim = cluster.executor_pids()[0]
            stop = threading.Event()

            def supervise():
                while not stop.is_set():
                    cluster.supervise()
                    time.sleep(0.1)

            supervisor = threading.Thread(target=supervise)
            supervisor.start()
            started = time.monotonic()
            futures, outcomes = [], Counter()
            try:
                for i in range(CALLS):
                    # Half one-shot calls, half two-stage DAG requests, so the kill lands in the middle of DAGs too.
                    try:
                        if i % 2:
                            future = connection.call_dag(connection.build_dag_call("pipeline", {"work": i}))
                        else:
                            future = connection.call("work", i)
                        futures.append((future, time.monotonic()))
                    except CloudburstError as refused:  # counted, and so failing the test: none is expected
                        outcomes[f"refused: {type(refused).__name__}"] += 1
                    if i == CALLS // 3:
                        os.kill(victim, signal.SIGKILL)
                    time.sleep(0.002)
                outcomes.update(outcome_of(future, submitted) for future, submitted in futures)
                took = time.monotonic() - started
            finally:
                stop.set()
                supervisor.join()
        finally:
            connection.close()
    print(f"\n{CALLS} calls, an executor killed after {CALLS // 3}: {dict(outcomes)} in {took:.1f} s")
    # The calls and DAG requests the dead executor held ran again elsewhere; none hung.
    assert outcomes == {"succeeded": CALLS}
    assert took < CALLS * 0.01 + DEADLINE + 15


@pytest.mark.timeout(180)
def test_a_killed_node_cache_loses_no_acknowledged_write_and_comes_back():
    config = ClusterConfig(host=random_loopback_host(), executors=2, nodes=1, data_dir=None, report_period=0.5)
    with LocalCluster(config) as cluster:
        connection = cluster.connect(timeout=DEADLINE)
        try:
            connection.register(lambda lib, key, value: lib.put(key, value), "write")
            cache = cluster.node_pids(config.host)[0]
            acknowledged, failed = [], Counter()
            for i in range(300):
                if i == 100:
                    os.kill(cache, signal.SIGKILL)
                try:
                    connection.call("write", f"k{i}", i).result(timeout=DEADLINE)
                    acknowledged.append(i)
                except CloudburstError as error:
                    failed[type(error).__name__] += 1
                if i >= 100:
                    cluster.supervise()
            print(f"\ncache killed after 100 of 300 writes: {len(acknowledged)} acknowledged, failed {dict(failed)}")
            # Every acknowledged write is in the KVS, whatever happened to the cache it went through.
            assert all(connection.get_object(f"k{i}") == i for i in acknowledged)
            assert cluster.node_pids(config.host)[0] != cache  # the cache was restarted
            assert len(acknowledged) >= 150  # and writes went through it again
        finally:
            connection.close()


@pytest.mark.timeout(120)
def test_an_overloaded_executor_refuses_further_calls_at_once_with_a_typed_error():
    config = ClusterConfig(host=random_loopback_host(), executors=1, nodes=1, data_dir=None, report_period=0.5)
    with LocalCluster(config) as cluster:
        connection = cluster.connect(timeout=DEADLINE)
        try:
            connection.register(lambda lib, x: __import__("time").sleep(0.05), "slow")
            connection.call("slow", 0).result()
            started = time.monotonic()
            with pytest.raises(NoResources, match="queue is full") as refused:
                call_until_refused(connection, "slow", 1_000_000)
            # Bounded queues: the refusal comes after a bounded number of calls, and fast.
            print(f"\nrefused after {time.monotonic() - started:.2f} s: {refused.value}")
            assert time.monotonic() - started < 30
        finally:
            connection.close()


@pytest.mark.timeout(180)
def test_a_killed_scheduler_is_restarted_and_recovers_while_direct_calls_go_on():
    config = ClusterConfig(host=random_loopback_host(), executors=2, nodes=1, data_dir=None, report_period=0.5)
    with LocalCluster(config) as cluster:
        connection = cluster.connect(timeout=DEADLINE)
        try:
            connection.register(lambda lib, x: x * 2, "double")
            connection.register_dag("only_double", ["double"], [])
            assert connection.call("double", 1).result() == 2
            os.kill(cluster.scheduler_pids()[0], signal.SIGKILL)
            # Leased calls need no scheduler while their lease lasts.
            assert connection.call("double", 2).result() == 4
            give_up = time.monotonic() + 60
            while True:
                cluster.supervise()
                try:
                    call = connection.build_dag_call("only_double", {"double": 21})
                    assert connection.call_dag(call).result(timeout=5) == 42  # recovered from the KVS
                    break
                except CloudburstError:
                    assert time.monotonic() < give_up, "the scheduler never came back"
                    time.sleep(0.2)
            outcomes = Counter(outcome_of(connection.call("double", i)) for i in range(CALLS))
            print(f"\nafter the scheduler's restart: {dict(outcomes)}")
            assert outcomes == {"succeeded": CALLS}
        finally:
            connection.close()
