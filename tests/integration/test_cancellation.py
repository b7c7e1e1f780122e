"""Cancellation and deadlines that bind, on a real cluster: stopped work frees its executor."""

import re
import subprocess
import sys
import time
import uuid

import pytest

import cloudburst
from cloudburst.errors import Cancelled, DeadlineExceeded

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cb():
    with cloudburst.local(executors=2) as connection:
        yield connection


def spin(_):
    while True:
        pass


def catastrophic(_):
    """Stuck in C: the regular expression engine neither checks signals nor lets go of the interpreter."""
    return re.match(r"(a+)+$", "a" * 34 + "b") is not None


def nap(_, seconds):
    time.sleep(seconds)
    return seconds


def wait_for(predicate, seconds=10.0):
    give_up = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < give_up
        time.sleep(0.05)


def test_cancelling_a_busy_loop_frees_its_executor(cb):
    cb.register(spin, "cx_spin")
    cb.register(lambda _, x: x * 2, "cx_double")
    future = cb.call("cx_spin")
    time.sleep(0.5)  # running by now
    started = time.monotonic()
    assert future.cancel()
    with pytest.raises(Cancelled):
        future.result(timeout=5)
    # Both executors serve again at once (the busy one included): more calls than executors, all answered.
    assert [cb.call("cx_double", i).result(timeout=10) for i in range(6)] == [0, 2, 4, 6, 8, 10]
    assert time.monotonic() - started < 5


def test_a_deadline_stops_the_call_that_outlives_it(cb):
    cb.register(nap, "cx_nap")
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        cb.call("cx_nap", 30, timeout=1).result(timeout=10)
    assert time.monotonic() - started < 5
    assert cb.call("cx_nap", 0).result(timeout=10) == 0


def test_code_stuck_in_c_past_the_grace_period_restarts_its_executor(cb):
    cb.register(catastrophic, "cx_stuck")
    before = {(e.ip, e.tid): e.incarnation for e in cb.status().executors}
    future = cb.call("cx_stuck", timeout=1, retries=0)
    with pytest.raises(cloudburst.CloudburstError):
        future.result(timeout=30)

    def restarted():
        now = {(e.ip, e.tid): e.incarnation for e in cb.status().executors if e.running}
        return len(now) == 2 and now != before

    wait_for(restarted, 30)
    cb.register(lambda _, x: x + 1, "cx_incr")
    assert cb.call("cx_incr", 1).result(timeout=10) == 2


def first_stage(lib, marker):
    lib.put(f"{marker}/first", True)
    time.sleep(5)
    return marker


def second_stage(lib, marker):
    lib.put(f"{marker}/second", True)
    return marker


def test_a_dag_request_cancelled_after_its_first_stage_never_runs_its_second(cb):
    cb.register(first_stage, "cx_first")
    cb.register(second_stage, "cx_second")
    cb.register_dag("cx_pipeline", ["cx_first", "cx_second"], [("cx_first", "cx_second")])
    marker = f"cx/{uuid.uuid4().hex}"
    future = cb.call_dag(cb.build_dag_call("cx_pipeline", {"cx_first": [marker], "cx_second": [marker]}))
    wait_for(lambda: cb.get_object(f"{marker}/first"))
    assert future.cancel()
    with pytest.raises(Cancelled):
        future.result(timeout=5)
    time.sleep(6)  # longer than the first stage would have run
    assert cb.get_object(f"{marker}/second") is None


def test_an_operator_cancels_another_clients_running_call_from_the_shell(cb):
    cb.register(spin, "cx_spin_cli")
    future = cb.call("cx_spin_cli")  # sent straight to an executor: the scheduler never saw it
    time.sleep(0.5)
    command = [sys.executable, "-m", "cloudburst", "cancel", future.obj_id, "--scheduler", cb.scheduler]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"Cancelled {future.obj_id}" in done.stdout
    with pytest.raises(Cancelled):
        future.result(timeout=10)
