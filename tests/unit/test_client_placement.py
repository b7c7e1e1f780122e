"""Where a client sends the calls it places itself (leases): where the fewest calls wait, counting its own; and
what it remembers of its requests in flight, to place them again when the process that took one is lost."""

import random
from collections import Counter

from cloudburst.client.connection import _Lease
from cloudburst.client.in_flight import RequestsInFlight, SentRequest
from cloudburst.protocol.runtime_messages import DagCall, FunctionCall

E1, E2, E3 = "tcp://10.0.1.1:4000", "tcp://10.0.1.2:4000", "tcp://10.0.1.3:4000"


def lease(queued=(0, 0, 0), pinned=(False, False, False)):
    return _Lease(1, (E1, E2, E3), expires=10.0, queued=queued, pinned=pinned, incarnations=("i1", "i2", "i3"))


def call(key):
    return FunctionCall("f", response_key=str(key))


def sent(key, executor, incarnation, now):
    return SentRequest(str(key), call(key), executor, incarnation, now)


def test_calls_in_flight_take_an_executor_each_until_all_are_busy():
    rng, in_flight, granted = random.Random(1), RequestsInFlight(), lease()
    picks = []
    for key in range(6):
        executor, incarnation = granted.pick(rng, in_flight.counts)
        assert incarnation == {E1: "i1", E2: "i2", E3: "i3"}[executor]
        picks.append(executor)
        in_flight.sent(sent(key, executor, incarnation, now=0.0))
    assert sorted(picks[:3]) == [E1, E2, E3]
    assert sorted(picks[3:]) == [E1, E2, E3]
    assert in_flight.done("1").executor == picks[1]
    assert granted.pick(rng, in_flight.counts)[0] == picks[1]


def test_the_leases_own_figures_and_pins_count_too():
    rng, in_flight = random.Random(2), RequestsInFlight()
    assert granted_picks(lease(queued=(2, 0, 1)), rng, in_flight) == {E2}
    assert granted_picks(lease(pinned=(True, False, True)), rng, in_flight) == {E2}
    # Busy unpinned executors lose to an idle pinned one.
    assert granted_picks(lease(queued=(1, 1, 0), pinned=(False, False, True)), rng, in_flight) == {E3}


def test_ties_are_broken_at_random():
    rng, in_flight = random.Random(3), RequestsInFlight()
    counts = Counter(lease().pick(rng, in_flight.counts)[0] for _ in range(3000))
    assert min(counts.values()) > 800


def test_calls_in_flight_remember_where_they_went_and_which_process_took_them():
    in_flight = RequestsInFlight()
    in_flight.sent(sent("a", E1, "i1", now=1.0))
    in_flight.sent(sent("b", E2, "i2", now=5.0))
    assert in_flight.where("a") == E1
    assert [(d.call.response_key, d.incarnation) for d in in_flight.older_than(2.0)] == [("a", "i1")]
    assert in_flight.done("a") is not None
    assert in_flight.done("a") is None  # answered once
    assert in_flight.where("a") is None


def test_results_that_never_come_do_not_grow_the_count_forever(monkeypatch):
    monkeypatch.setattr("cloudburst.client.in_flight.MAX_IN_FLIGHT", 10)
    in_flight = RequestsInFlight()
    for key in range(25):
        in_flight.sent(sent(key, E1, "i1", now=0.0))
    assert in_flight.counts[E1] <= 10
    in_flight.done("unknown")  # a result for a call counted before a reset
    assert sum(in_flight.counts.values()) <= 10


def test_requests_the_scheduler_placed_are_remembered_but_not_counted_at_any_executor():
    in_flight = RequestsInFlight()
    in_flight.sent(SentRequest("d", DagCall("pipeline", output_key="d"), "", "scheduler-1", 1.0))
    in_flight.sent(sent("c", E1, "i1", now=1.0))
    assert in_flight.counts == {E1: 1}
    assert in_flight.where("d") is None  # cancelled through the scheduler, which knows where it runs
    assert {(r.key, r.direct) for r in in_flight.older_than(2.0)} == {("d", False), ("c", True)}
    # Placed again (through the scheduler): the same key, no longer counted at the executor.
    in_flight.sent(SentRequest("c", call("c"), "", "scheduler-1", 3.0))
    assert in_flight.counts == {}
    assert len(in_flight) == 2


def granted_picks(granted, rng, in_flight):
    return {granted.pick(rng, in_flight.counts)[0] for _ in range(100)}
