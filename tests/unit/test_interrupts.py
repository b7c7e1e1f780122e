"""Stopping user code from another thread: cancellations and deadlines that bind."""

import signal
import threading
import time

import pytest

from cloudburst.clock import SystemClock
from cloudburst.errors import Cancelled, DeadlineExceeded
from cloudburst.executor.interrupts import WAKE_SIGNAL, Interrupter


@pytest.fixture
def interrupter():
    previous = signal.getsignal(WAKE_SIGNAL)
    interrupter = Interrupter(SystemClock())
    interrupter.attach()  # the test's thread is the one running "user code"
    yield interrupter
    signal.signal(WAKE_SIGNAL, previous)


def later(seconds, action):
    timer = threading.Timer(seconds, action)
    timer.start()
    return timer


def spin():
    while True:
        pass


def test_a_cancellation_stops_a_busy_loop(interrupter):
    later(0.2, lambda: interrupter.cancel("r1", time.monotonic()))
    started = time.monotonic()
    with pytest.raises(Cancelled, match="r1"):
        interrupter.call(("r1", "out-key"), 0, spin)
    assert time.monotonic() - started < 2
    assert interrupter.busy_since() is None
    assert interrupter.stuck_since() is None


def test_a_cancellation_wakes_a_blocking_call_in_the_main_thread(interrupter):
    assert threading.current_thread() is threading.main_thread()
    later(0.2, lambda: interrupter.cancel("r1", time.monotonic()))
    started = time.monotonic()
    with pytest.raises(Cancelled):
        interrupter.call(("r1",), 0, time.sleep, 30)
    assert time.monotonic() - started < 2


def test_a_deadline_stops_the_invocation(interrupter):
    deadline = time.time() + 0.2
    watcher = threading.Thread(target=lambda: watch(interrupter, deadline + 5))
    watcher.start()
    with pytest.raises(DeadlineExceeded, match="past its deadline"):
        interrupter.call(("r1",), deadline, spin)
    watcher.join()


def watch(interrupter, until):
    while time.time() < until and not interrupter.expire(time.time(), time.monotonic()):
        time.sleep(0.01)


def test_other_requests_and_finished_invocations_are_left_alone(interrupter):
    assert interrupter.call(("r1",), 0, lambda: interrupter.cancel("r2", time.monotonic())) is False
    assert not interrupter.cancel("r1", time.monotonic())  # nothing runs: remembered only
    time.sleep(0.05)  # no exception may land after the invocation ended


def test_work_for_a_cancelled_or_expired_request_is_refused_before_it_starts(interrupter):
    interrupter.cancel("r1", time.monotonic())
    assert isinstance(interrupter.refusal(["x", "r1"], 0, time.time()), Cancelled)
    assert isinstance(interrupter.refusal(["r2"], time.time() - 1, time.time()), DeadlineExceeded)
    assert interrupter.refusal(["r2"], time.time() + 60, time.time()) is None


def test_user_code_catching_exception_does_not_swallow_the_interruption(interrupter):
    later(0.2, lambda: interrupter.cancel("r1", time.monotonic()))

    def stubborn():
        while True:
            try:
                spin()
            except Exception:
                continue

    with pytest.raises(Cancelled):
        interrupter.call(("r1",), 0, stubborn)
