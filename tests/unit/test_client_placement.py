"""Where a client sends the calls it places itself (leases): where the fewest calls wait, counting its own."""

import random
from collections import Counter

from cloudburst.client.connection import _CallsInFlight, _Lease

E1, E2, E3 = "tcp://10.0.1.1:4000", "tcp://10.0.1.2:4000", "tcp://10.0.1.3:4000"


def lease(queued=(0, 0, 0), pinned=(False, False, False)):
    return _Lease(1, (E1, E2, E3), expires=10.0, queued=queued, pinned=pinned)


def test_calls_in_flight_take_an_executor_each_until_all_are_busy():
    rng, in_flight, granted = random.Random(1), _CallsInFlight(), lease()
    picks = []
    for key in range(6):
        picks.append(granted.pick(rng, in_flight.counts))
        in_flight.sent(str(key), picks[-1])
    assert sorted(picks[:3]) == [E1, E2, E3]
    assert sorted(picks[3:]) == [E1, E2, E3]
    in_flight.done("1")
    assert granted.pick(rng, in_flight.counts) == picks[1]


def test_the_leases_own_figures_and_pins_count_too():
    rng, in_flight = random.Random(2), _CallsInFlight()
    assert granted_picks(lease(queued=(2, 0, 1)), rng, in_flight) == {E2}
    assert granted_picks(lease(pinned=(True, False, True)), rng, in_flight) == {E2}
    # Busy unpinned executors lose to an idle pinned one.
    assert granted_picks(lease(queued=(1, 1, 0), pinned=(False, False, True)), rng, in_flight) == {E3}


def test_ties_are_broken_at_random():
    rng, in_flight = random.Random(3), _CallsInFlight()
    counts = Counter(lease().pick(rng, in_flight.counts) for _ in range(3000))
    assert min(counts.values()) > 800


def test_results_that_never_come_do_not_grow_the_count_forever(monkeypatch):
    monkeypatch.setattr("cloudburst.client.connection._MAX_IN_FLIGHT", 10)
    in_flight = _CallsInFlight()
    for key in range(25):
        in_flight.sent(str(key), E1)
    assert in_flight.counts[E1] <= 10
    in_flight.done("unknown")  # a result for a call counted before a reset
    assert sum(in_flight.counts.values()) <= 10


def granted_picks(granted, rng, in_flight):
    return {granted.pick(rng, in_flight.counts) for _ in range(100)}
