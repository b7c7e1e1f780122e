"""Functions that wait for one another (``send``/``recv``, as in the original's summa and dist_avg programs).

Each function of such a program runs until it has heard from its peers, so all of them must run at once, and an
executor runs one call at a time: a call placed behind another on a busy executor would wait forever. One-shot
calls go to idle executors first, through the scheduler (original clients) and through leases (our clients).
"""

import time
import uuid

import pytest
from original_client import OriginalClient

import cloudburst

pytestmark = pytest.mark.integration

#: How long a function waits for its peers before failing (instead of the test hanging).
PATIENCE = 60.0


def exchange(lib, uid, index, count):
    """Publishes its executor id, sends one message to each of the next two functions, and waits for the two
    messages of the previous two; returns who it heard from."""
    give_up = time.monotonic() + PATIENCE
    lib.put(f"{uid}/{index}", lib.getid())
    peers = [(index + 1) % count, (index + 2) % count]
    addresses = {}
    while len(addresses) < len(peers):
        for peer in peers:
            if peer not in addresses and (found := lib.get(f"{uid}/{peer}")) is not None:
                addresses[peer] = tuple(found)
        if time.monotonic() > give_up:
            raise TimeoutError(f"function {index} never saw peers {sorted(set(peers) - set(addresses))}")
        time.sleep(0.01)
    for peer in peers:
        lib.send(addresses[peer], str(index).encode())
    heard = []
    while len(heard) < 2:
        heard += [int(payload) for _, payload in lib.recv()]
        if time.monotonic() > give_up:
            raise TimeoutError(f"function {index} heard only from {heard}")
        time.sleep(0.01)
    return sorted(heard)


def pause(lib, seconds):
    time.sleep(seconds)
    return seconds


def expected(count):
    return [sorted([(i - 1) % count, (i - 2) % count]) for i in range(count)]


def run_with_our_client(cb, count):
    uid = uuid.uuid4().hex
    futures = [cb.call("exchange", uid, index, count) for index in range(count)]
    return [future.result(timeout=PATIENCE + 30) for future in futures]


def run_with_the_original_client(original, count):
    uid = uuid.uuid4().hex
    futures = [original.exec_func("exchange", [uid, index, count]) for index in range(count)]
    return [future.get(timeout=PATIENCE + 30) for future in futures]


def test_nine_functions_that_wait_for_each_other_on_nine_executors():
    with cloudburst.local(executors=3, nodes=3) as cb:
        cb.register(exchange, "exchange")
        assert run_with_our_client(cb, 9) == expected(9)
        original = OriginalClient(cb.scheduler)
        try:
            assert run_with_the_original_client(original, 9) == expected(9)
        finally:
            original.close()


def test_waiting_functions_queued_behind_busy_executors_all_run_once_they_free_up():
    with cloudburst.local(executors=5, nodes=2) as cb:
        cb.register(exchange, "exchange")
        cb.register(pause, "pause")
        original = OriginalClient(cb.scheduler)
        try:
            # Every executor busy for a moment with other work from one client, then the waiting functions from
            # the other: each queues behind a different busy executor and none behind another waiting function.
            busy = [original.exec_func("pause", [2.0]) for _ in range(10)]
            assert run_with_our_client(cb, 9) == expected(9)
            assert [future.get() for future in busy] == [2.0] * 10
            busy = [cb.call("pause", 2.0) for _ in range(10)]
            assert run_with_the_original_client(original, 9) == expected(9)
            assert [future.result(timeout=30) for future in busy] == [2.0] * 10
        finally:
            original.close()
