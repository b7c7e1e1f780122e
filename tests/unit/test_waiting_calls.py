"""Calls held back until the futures among their arguments resolve (client/waiting.py), without sockets."""

import threading

from cloudburst.client.future import Future, ResultSlot
from cloudburst.client.waiting import FIRST_CHECK, INLINE_LIMIT, WaitingCall, WaitingCalls, inline_value
from cloudburst.errors import RemoteExecutionError
from cloudburst.protocol.values import encode, encode_error


def future(key="k", stored=None):
    return Future(key, ResultSlot(), lambda: stored, 5.0, lambda: None)


def test_a_call_is_sent_once_when_its_last_dependency_resolves():
    first, second, sent = future("a"), future("b"), []
    calls = WaitingCalls()
    calls.wait(WaitingCall("c", (first, second), since=0.0), lambda: sent.append("c"))
    assert len(calls) == 1
    first._slot.fill(encode(1))
    assert sent == []
    second._slot.fill(encode(2))
    second._slot.fill(encode(3))  # a duplicate answer counts nothing
    assert sent == ["c"]
    assert len(calls) == 0


def test_a_dependency_resolved_before_it_is_awaited_counts_at_once():
    done, sent = future(), []
    done._slot.fill(encode(1))
    WaitingCalls().wait(WaitingCall("c", (done,), since=0.0), lambda: sent.append("c"))
    assert sent == ["c"]


def test_racing_fills_send_exactly_once():
    dependencies = tuple(future(str(i)) for i in range(50))
    sent = []
    WaitingCalls().wait(WaitingCall("c", dependencies, since=0.0), lambda: sent.append("c"))
    threads = [threading.Thread(target=d._slot.fill, args=(encode(i),)) for i, d in enumerate(dependencies)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sent == ["c"]


def test_slot_callbacks_run_once_in_the_filling_thread_or_at_once():
    slot, seen = ResultSlot(), []
    slot.when_filled(lambda: seen.append("early"))
    assert slot.fill(encode(1))
    assert not slot.fill(encode(2))
    slot.when_filled(lambda: seen.append("late"))
    assert seen == ["early", "late"]


def test_small_results_go_inline_errors_and_big_ones_by_reference():
    small, big, failed, pending = future(), future(), future(), future()
    small._slot.fill(encode(41))
    big._slot.fill(encode(b"x" * (INLINE_LIMIT + 1)))
    failed._slot.fill(encode_error(RemoteExecutionError("boom", function="f")))
    assert inline_value(small) == encode(41)
    assert inline_value(big) is None
    assert inline_value(failed) is None
    assert inline_value(pending) is None


def test_late_dependencies_are_looked_for_in_the_kvs_at_doubling_intervals():
    stored = encode(7)
    late = future("late", stored=stored)
    calls, sent = WaitingCalls(), []
    calls.wait(WaitingCall("c", (late,), since=100.0), lambda: sent.append("c"))
    assert calls.due(100.0 + FIRST_CHECK / 2) == []
    due_at = [t for t in (101.0, 101.5, 102.0, 103.0, 104.0, 108.0) if calls.due(t)]
    assert due_at == [101.0, 102.0, 104.0, 108.0]
    (waiting,) = calls.due(116.0)
    assert waiting.late() == [late]
    assert late.check_stored()
    assert sent == ["c"]
    assert calls.due(1000.0) == []


def test_calls_still_waiting_at_their_deadline_are_taken_and_never_sent():
    late, sent = future("late"), []
    calls = WaitingCalls()
    calls.wait(WaitingCall("c", (late,), since=0.0, deadline=50.0), lambda: sent.append("c"))
    calls.wait(WaitingCall("d", (future("other"),), since=0.0), lambda: sent.append("d"))
    assert calls.expired(49.0) == []
    (expired,) = calls.expired(50.0)
    assert expired.key == "c"
    assert calls.expired(1e12) == []  # a call without a deadline waits for as long as its futures take
    assert len(calls) == 1
