"""Re-execution on a real cluster: calls and DAG requests whose executor dies run again, or fail naming the loss."""

import os
import signal
import time

import pytest

from cloudburst.cluster.local import ClusterConfig, LocalCluster, random_loopback_host
from cloudburst.errors import ExecutorLost, RemoteExecutionError

pytestmark = pytest.mark.integration

PERIOD = 0.5


@pytest.fixture(scope="module")
def cluster():
    config = ClusterConfig(host=random_loopback_host(), executors=3, nodes=1, data_dir=None, report_period=PERIOD)
    with LocalCluster(config) as running:
        running.supervise_in_background(0.05)
        yield running


@pytest.fixture
def connection(cluster):
    with cluster.connect(timeout=30) as connected:
        yield connected


def announce_then_nap(lib, marker, seconds, value):
    """Says which process runs it, then takes its time (long enough to be killed)."""
    lib.put(marker, os.getpid())
    time.sleep(seconds)
    return value


def write_announce_then_nap(lib, key, marker, seconds):
    lib.put(key, "written by the call")
    return announce_then_nap(lib, marker, seconds, os.getpid())


def kill_the_runner(connection, marker, seconds=20.0):
    """Kills the process that announced itself under ``marker``; returns its pid."""
    give_up = time.monotonic() + seconds
    while (pid := connection.get_object(marker)) is None:
        assert time.monotonic() < give_up, "the function never started"
        time.sleep(0.02)
    os.kill(pid, signal.SIGKILL)
    return pid


def test_a_call_whose_executor_dies_runs_again_and_its_retried_write_does_not_overwrite_a_newer_one(connection):
    connection.register(write_announce_then_nap, "rx_writer")
    future = connection.call("rx_writer", "rx/key", "rx/marker", 2.0)
    first = kill_the_runner(connection, "rx/marker")
    # Written by someone else after the call's write and before its retry's: the newer value must stay.
    connection.put_object("rx/key", "newer")
    assert future.result(timeout=30) != first  # run again, by another process
    # The retry's writes are the lost run's writes again (same timestamps): they cannot overwrite newer ones.
    assert connection.get_object("rx/key") == "newer"


def test_a_dag_request_whose_middle_stage_dies_runs_again_with_the_right_result(connection):
    connection.register(lambda lib, x: x + 1, "rx_incr")
    connection.register(announce_then_nap, "rx_nap")
    connection.register(lambda lib, x: x * 10, "rx_times10")
    connection.register_dag(
        "rx_pipeline", ["rx_incr", "rx_nap", "rx_times10"], [("rx_incr", "rx_nap"), ("rx_nap", "rx_times10")]
    )
    # The middle stage gets (marker, seconds) fixed and the first stage's result as its value.
    call = connection.build_dag_call("rx_pipeline", {"rx_incr": 4, "rx_nap": ["rx/dag-marker", 1.5]})
    future = connection.call_dag(call)
    kill_the_runner(connection, "rx/dag-marker")
    assert future.result(timeout=30) == 50


def test_a_call_that_must_not_run_twice_fails_with_executor_lost_soon_after_its_executor_dies(connection):
    connection.register(announce_then_nap, "rx_once")
    future = connection.call("rx_once", "rx/once-marker", 30.0, "never", retries=0)
    pid = kill_the_runner(connection, "rx/once-marker")
    killed = time.monotonic()
    with pytest.raises(ExecutorLost) as lost:
        future.result(timeout=30)
    waited = time.monotonic() - killed
    print(f"\nExecutorLost {waited:.2f} s after the kill (report period {PERIOD} s): {lost.value}")
    assert lost.value.function == "rx_once"
    assert lost.value.request_id == future.obj_id
    [(_, why)] = lost.value.losses
    assert "gone" in why
    # The executor came back (a new process) and took the call's loss to be noticed; far from the 30 s deadline.
    assert waited < 10
    assert connection.get_object("rx/once-marker") == pid  # it did not run again


def test_a_dag_request_that_must_not_run_twice_fails_with_executor_lost(connection):
    connection.register(announce_then_nap, "rx_dag_once")
    connection.register(lambda lib, x: x, "rx_dag_sink")
    connection.register_dag("rx_once_pipeline", ["rx_dag_once", "rx_dag_sink"], [("rx_dag_once", "rx_dag_sink")])
    call = connection.build_dag_call("rx_once_pipeline", {"rx_dag_once": ["rx/dag-once", 30.0, 1]}, retries=0)
    future = connection.call_dag(call)
    kill_the_runner(connection, "rx/dag-once")
    killed = time.monotonic()
    with pytest.raises(ExecutorLost) as lost:
        future.result(timeout=30)
    print(f"\nDAG ExecutorLost {time.monotonic() - killed:.2f} s after the kill: {lost.value}")
    assert lost.value.dag == "rx_once_pipeline"
    assert time.monotonic() - killed < 10


class FlakyError(ConnectionError):
    pass


def fail_twice(lib, counter, kind):
    """Raises ``kind`` on its first two runs (counted in the KVS), then succeeds."""
    runs = (lib.get(counter) or 0) + 1
    lib.put(counter, runs)
    if runs <= 2:
        raise {"flaky": FlakyError, "value": ValueError}[kind](f"run {runs} failed")
    return runs


def test_program_errors_run_again_only_when_asked(connection):
    connection.register(fail_twice, "rx_flaky")
    # Not asked: the first error reaches the caller.
    with pytest.raises(RemoteExecutionError, match="run 1 failed"):
        connection.call("rx_flaky", "rx/count-a", "flaky").result(timeout=30)
    # Asked for a base class of what it raises: the third run's result.
    flaky = connection.register(fail_twice, "rx_flaky_retried", retry_exceptions=[ConnectionError])
    assert flaky("rx/count-b", "flaky").result(timeout=30) == 3
    # Asked for other exceptions: not retried.
    with pytest.raises(RemoteExecutionError, match="run 1 failed"):
        flaky("rx/count-c", "value").result(timeout=30)
    # Within the retry budget only: one retry is not enough.
    with pytest.raises(RemoteExecutionError, match="run 2 failed"):
        connection.call("rx_flaky", "rx/count-d", "value", retries=1, retry_exceptions=True).result(timeout=30)


def test_a_dag_function_raising_an_exception_its_caller_retries_runs_again_alone(connection):
    connection.register(fail_twice, "rx_dag_flaky")
    connection.register(lambda lib, runs: runs * 100, "rx_dag_after")
    connection.register_dag("rx_flaky_pipeline", ["rx_dag_flaky", "rx_dag_after"], [("rx_dag_flaky", "rx_dag_after")])
    call = connection.build_dag_call(
        "rx_flaky_pipeline", {"rx_dag_flaky": ["rx/count-dag", "flaky"]}, retry_exceptions=True
    )
    assert connection.call_dag(call).result(timeout=30) == 300
