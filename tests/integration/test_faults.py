"""Faults under load: every call ends (a result, or a typed error within its deadline); none hangs."""

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


def outcome_of(future):
    try:
        future.result(timeout=DEADLINE)
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
            victim = cluster.executor_pids()[0]
            stop = threading.Event()

            def supervise():
                while not stop.is_set():
                    cluster.supervise()
                    time.sleep(0.1)

            supervisor = threading.Thread(target=supervise)
            supervisor.start()
            started = time.monotonic()
            futures = []
            for i in range(CALLS):
                futures.append(connection.call("work", i))
                if i == CALLS // 3:
                    os.kill(victim, signal.SIGKILL)
                time.sleep(0.002)
            outcomes = Counter(outcome_of(future) for future in futures)
            took = time.monotonic() - started
            stop.set()
            supervisor.join()
        finally:
            connection.close()
    print(f"\n{CALLS} calls, an executor killed after {CALLS // 3}: {dict(outcomes)} in {took:.1f} s")
    assert sum(outcomes.values()) == CALLS
    assert outcomes["succeeded"] >= CALLS * 0.8
    # Every call that did not succeed ended with a typed error, and all of them within the deadline.
    assert set(outcomes) <= {"succeeded", "DeadlineExceeded", "NoResources"}
    assert took < CALLS * 0.002 + 2 * DEADLINE + 30


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
                for i in range(1_000_000):
                    connection.call("slow", i)
            # Bounded queues: the refusal comes after a bounded number of calls, and fast.
            print(f"\nrefused after {time.monotonic() - started:.2f} s: {refused.value}")
            assert time.monotonic() - started < 30
        finally:
            connection.close()
